//! Recovery across a partition, on real node processes each in its own
//! network namespace: a leader isolated while a plan's first step runs
//! executes nothing after losing its quorum (its step, already started,
//! ends, but its outcome is never taken and the second step never runs
//! there); the majority's new leader settles the first step (outcome
//! unknown: `exec` is not idempotent, so it is not run again); after
//! healing every node holds the same incident, and the step after it runs
//! once, under the new leader, when a person skips the unknown one.
//!
//! Every step appends a line to a file on the host's file system, which
//! every namespace shares: which step, the incident, the fencing token and
//! the node's pid (`$PPID` of the step's shell). Needs root, as the
//! partition tests do: without it the test fails, saying why, unless
//! `FAXI_SKIP_NETNS=1` skips it knowingly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use faxi_tests::cluster::{Cluster, Ctx, Net, Spec};
use faxi_tests::{is_root, wait_for};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const LONG: Duration = Duration::from_secs(30);

/// Whether the test is to run: yes as root; without root, a failure that
/// says why, unless the skip was asked for.
fn may_run() -> bool {
    if std::env::var_os("FAXI_SKIP_NETNS").is_some_and(|v| v == "1") {
        eprintln!("SKIPPED: FAXI_SKIP_NETNS=1: the recovery partition test did not run");
        return false;
    }
    assert!(
        is_root(),
        "the recovery partition test needs root (network namespaces and iptables): run it as \
         root, as CI does, or set FAXI_SKIP_NETNS=1 to skip it knowingly"
    );
    true
}

/// A TCP service on the bridge that the test takes down (connections
/// refused) and brings back on the same address.
struct Service {
    addr: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl Service {
    async fn start(net: &Net) -> Service {
        let l = TcpListener::bind((net.host_ip(), 0)).await.unwrap();
        let addr = l.local_addr().unwrap();
        Service {
            addr,
            task: Some(Self::serve(l)),
        }
    }

    fn serve(l: TcpListener) -> JoinHandle<()> {
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                drop(s);
            }
        })
    }

    /// Closes the listener; returns once a connection is refused.
    async fn down(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
        let addr = self.addr;
        wait_for("the service refuses connections", LONG, || async move {
            match TcpStream::connect(addr).await {
                Ok(_) => Err("still accepts".to_owned()),
                Err(_) => Ok(()),
            }
        })
        .await;
    }

    /// Listens again on the same address.
    async fn up(&mut self) {
        let l = TcpListener::bind(self.addr).await.unwrap();
        self.task = Some(Self::serve(l));
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// Step 1 writes its line, sleeps 3 s (the window in which its leader is
/// cut off) and writes that it ended; step 2 writes its line.
fn plan(effects: &Path) -> String {
    let line = |what: &str| {
        format!(
            "echo {what} $FAXI_INCIDENT $FAXI_FENCE_TERM $FAXI_FENCE_INDEX $PPID >> {}",
            effects.display()
        )
    };
    format!(
        "[recovery.svc]\ncooldown = \"1h\"\nsteps = [\n  {{ action = \"exec\", argv = [\"/bin/sh\", \"-c\", \
         \"{}; sleep 3; {}\"] }},\n  {{ action = \"exec\", argv = [\"/bin/sh\", \"-c\", \"{}\"] }},\n]\n",
        line("step1"),
        line("step1-ended"),
        line("step2"),
    )
}

/// A line the steps wrote: what, incident, fence term and index, node pid.
#[derive(Debug, Clone, PartialEq)]
struct Line {
    what: String,
    incident: u64,
    term: u64,
    index: u64,
    pid: u32,
}

fn lines(path: &PathBuf) -> Vec<Line> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 5, "a torn line: {l:?}");
            Line {
                what: f[0].to_owned(),
                incident: f[1].parse().unwrap(),
                term: f[2].parse().unwrap(),
                index: f[3].parse().unwrap(),
                pid: f[4].parse().unwrap(),
            }
        })
        .collect()
}

/// Node `i`'s own view of incident `id` (`--allow-stale`: an isolated
/// node answers too).
async fn own_view(c: &Cluster, i: usize, id: u64) -> Result<Value, String> {
    let v = Cluster::faxictl_json(
        &c.endpoints(&[i]),
        &["--allow-stale", "incident", "show", &id.to_string()],
    )
    .await?;
    Ok(v)
}

/// What must be identical on every node once they converged.
fn essence(i: &Value) -> Value {
    serde_json::json!({
        "phase": i["phase"],
        "pending": i["pending"],
        "attempts": i["attempts"],
        "resolved_ms": i["resolved_ms"],
        "timeline": i["timeline"],
    })
}

/// Node `i`'s log lines with `message`, for incident `id`.
fn logged(c: &Cluster, i: usize, message: &str, id: u64) -> Vec<Value> {
    c.log_lines(i)
        .into_iter()
        .filter(|l| l["message"] == message && l["incident"] == id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_leader_executes_nothing_after_losing_its_quorum_and_no_step_runs_twice() {
    if !may_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("effects");
    let net = Net::create(3);
    let mut svc = Service::start(&net).await;
    let mut spec = Spec::zones(3);
    spec.targets = |_, _, ctx| {
        format!(
            "[[targets]]\nname = \"svc\"\nkind = \"tcp\"\naddr = \"{}\"\nrecovery = \"svc\"\n",
            ctx.service.unwrap()
        )
    };
    spec.extra = plan(&file);
    let ctx = Ctx {
        service: Some(svc.addr),
        closed: None,
    };
    let c = Cluster::start_in(net, &spec, &ctx).await;
    let net = c.net.as_ref().unwrap();
    c.wait_state(&[0, 1, 2], "svc", "UP", LONG).await;
    let (old, old_term) = c.wait_leader(&[0, 1, 2], LONG).await;
    let li = c.index(old);
    let old_pid = c.pid(li).unwrap();
    let rest: Vec<usize> = (0..3).filter(|i| *i != li).collect();

    // The service fails; the leader's first step starts: isolate it at once.
    svc.down().await;
    let first = wait_for("the first step's line", LONG, || async {
        lines(&file)
            .first()
            .cloned()
            .ok_or_else(|| "no line".to_owned())
    })
    .await;
    net.isolate(li);
    assert_eq!(first.what, "step1");
    assert_eq!(
        (first.pid, first.term),
        (old_pid, old_term),
        "the first step ran elsewhere than on the leader: {first:?}"
    );
    let id = first.incident;

    // The majority elects a new leader, which settles the step its
    // predecessor may have run: outcome unknown, not run again.
    let (new, new_term) = c.wait_leader(&rest, LONG).await;
    assert_ne!(new, old);
    assert!(new_term > old_term);
    let majority = c.endpoints(&rest);
    let unknown = wait_for(
        "the first step settled as outcome unknown",
        LONG,
        || async {
            let i =
                Cluster::faxictl_json(&majority, &["incident", "show", &id.to_string()]).await?;
            if i["phase"] == "OUTCOME_UNKNOWN" {
                Ok(i)
            } else {
                Err(format!("phase {} pending {}", i["phase"], i["pending"]))
            }
        },
    )
    .await;
    assert_eq!(unknown["pending"]["index"], first.index, "{unknown:#}");
    assert_eq!(unknown["pending"]["term"], first.term, "{unknown:#}");
    assert_eq!(unknown["pending"]["by"], old, "{unknown:#}");
    let settled = unknown["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "unknown")
        .unwrap_or_else(|| panic!("no unknown event: {unknown:#}"));
    let text = settled["text"].as_str().unwrap();
    assert!(
        text.contains(&format!(
            "under leader {old} (fence {}:{})",
            first.term, first.index
        )),
        "{text}"
    );

    // The old leader's step, already started, ends there; its outcome is
    // never taken (it lost its term), and it starts nothing more.
    wait_for("the old leader's step ends", LONG, || async {
        match logged(&c, li, "recovery step ended", id).len() {
            1 => Ok(()),
            n => Err(format!("{n} ends logged")),
        }
    })
    .await;
    wait_for("the old leader gives its outcome up", LONG, || async {
        if logged(&c, li, "recovery entry not recorded", id).is_empty() {
            Err("still trying".to_owned())
        } else {
            Ok(())
        }
    })
    .await;
    let ended = lines(&file);
    assert_eq!(
        ended.iter().map(|l| l.what.as_str()).collect::<Vec<_>>(),
        ["step1", "step1-ended"],
        "{ended:?}"
    );
    assert_eq!(ended[1].pid, old_pid);
    let cl = c.status(li).await.unwrap().cluster.unwrap_or_default();
    assert_ne!(cl.leader, old, "the isolated node still leads");

    // Healed: the nodes converge on the new leader and one incident state.
    net.heal_all();
    let (after, after_term) = c.wait_leader(&[0, 1, 2], LONG).await;
    assert_eq!(after, new, "the healed node took leadership back");
    wait_for("every node holds the same incident", LONG, || async {
        let mut seen = Vec::new();
        for i in 0..3 {
            seen.push(essence(&own_view(&c, i, id).await?));
        }
        if seen[0]["phase"] == "OUTCOME_UNKNOWN" && seen.iter().all(|s| *s == seen[0]) {
            Ok(())
        } else {
            Err(format!("{seen:#?}"))
        }
    })
    .await;
    assert_eq!(lines(&file).len(), 2, "{:?}", lines(&file));
    for i in 0..3 {
        let starts = logged(&c, i, "recovery step starts", id);
        let want = usize::from(i == li);
        assert_eq!(starts.len(), want, "node {}: {starts:?}", i + 1);
    }

    // A person skips the unknown step: the second runs once, under the
    // new leader, with a fence of its term.
    let all = c.endpoints(&[0, 1, 2]);
    let out = Cluster::faxictl(&all, &["approve", &id.to_string(), "--skip"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let second = wait_for("the second step's line", LONG, || async {
        let l = lines(&file);
        match l.len() {
            2 => Err("not yet".to_owned()),
            3 => Ok(l[2].clone()),
            _ => Err(format!("{l:?}")),
        }
    })
    .await;
    assert_eq!(second.what, "step2");
    assert_eq!(second.incident, id);
    assert_eq!(second.pid, c.pid(c.index(after)).unwrap(), "{second:?}");
    assert_eq!(second.term, after_term, "{second:?}");
    assert!(second.index > first.index);

    // The service is back: resolved on every node, identically.
    svc.up().await;
    wait_for("resolved on every node, identically", LONG, || async {
        let mut seen = Vec::new();
        for i in 0..3 {
            seen.push(essence(&own_view(&c, i, id).await?));
        }
        if seen[0]["phase"] == "RESOLVED" && seen.iter().all(|s| *s == seen[0]) {
            Ok(())
        } else {
            Err(format!("{seen:#?}"))
        }
    })
    .await;
    // Each step ran once: step 1 by the old leader, step 2 by the new.
    let l = lines(&file);
    let whats: Vec<&str> = l.iter().map(|l| l.what.as_str()).collect();
    assert_eq!(whats, ["step1", "step1-ended", "step2"], "{l:?}");
    for i in 0..3 {
        let starts = logged(&c, i, "recovery step starts", id);
        let want = usize::from(i == li || i == c.index(after));
        assert_eq!(starts.len(), want, "node {}: {starts:?}", i + 1);
    }
}
