//! Partitions between real node processes, each in its own network
//! namespace: an isolated leader, a one-way link, a zone cut off from a
//! target. Needs root (as CI runs): without it each test fails, saying why,
//! unless `FAXI_SKIP_NETNS=1` is set, which skips them on purpose (and says
//! so). A green run without that variable means they ran.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use faxi_proto::v1 as pb;
use faxi_tests::cluster::{Cluster, Ctx, Net, Spec};
use faxi_tests::{is_root, wait_for};
use tokio::net::TcpListener;

const LONG: Duration = Duration::from_secs(30);

/// A TCP service on the bridge, reachable from every namespace.
async fn service(net: &Net) -> SocketAddr {
    let l = TcpListener::bind((net.host_ip(), 0)).await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            drop(s);
        }
    });
    addr
}

/// Whether these tests are to run: yes as root; without root, a failure
/// that says why, unless the skip was asked for.
fn may_run() -> bool {
    if std::env::var_os("FAXI_SKIP_NETNS").is_some_and(|v| v == "1") {
        eprintln!(
            "SKIPPED: FAXI_SKIP_NETNS=1: the partition tests (network namespaces, iptables) did not run"
        );
        return false;
    }
    assert!(
        is_root(),
        "the partition tests need root (network namespaces and iptables): run them as root, \
         as CI does, or set FAXI_SKIP_NETNS=1 to skip them knowingly"
    );
    true
}

async fn mesh() -> Option<(Cluster, SocketAddr)> {
    if !may_run() {
        return None;
    }
    let net = Net::create(3);
    let svc = service(&net).await;
    let mut spec = Spec::zones(3);
    spec.targets = |_, _, ctx| {
        format!(
            "[[targets]]\nname = \"svc\"\nkind = \"tcp\"\naddr = \"{}\"\n",
            ctx.service.unwrap()
        )
    };
    let ctx = Ctx {
        service: Some(svc),
        closed: None,
    };
    Some((Cluster::start_in(net, &spec, &ctx).await, svc))
}

/// Polls every node and records which node claims leadership in which term.
struct LeaderLog {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<BTreeMap<u64, Vec<u64>>>,
}

impl LeaderLog {
    fn start(c: &Arc<Cluster>) -> LeaderLog {
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (c.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut claims: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
            while !s.load(Ordering::Relaxed) {
                for i in 0..c.nodes.len() {
                    if let Ok(st) = c.status(i).await {
                        let cl = st.cluster.unwrap_or_default();
                        if cl.leader == cl.node_id && cl.leader != 0 {
                            let e = claims.entry(cl.term).or_default();
                            if !e.contains(&cl.leader) {
                                e.push(cl.leader);
                            }
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            claims
        });
        LeaderLog { stop, task }
    }

    async fn finish(self) -> BTreeMap<u64, Vec<u64>> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

async fn commit(c: &Cluster, i: usize) -> Result<u64, String> {
    Ok(c.status(i).await?.cluster.unwrap_or_default().commit_index)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_leader_steps_down_its_side_commits_nothing_and_healing_converges() {
    let Some((c, _)) = mesh().await else { return };
    let c = Arc::new(c);
    let net = c.net.as_ref().unwrap();
    let leaders = LeaderLog::start(&c);
    let (old, old_term) = c.wait_leader(&[0, 1, 2], LONG).await;
    c.wait_state(&[0, 1, 2], "svc", "UP", LONG).await;
    let li = c.index(old);
    let rest: Vec<usize> = (0..3).filter(|i| *i != li).collect();

    net.isolate(li);
    // The baseline: what the isolated leader has committed once the
    // messages already on their way when the cut came are in (a few ms on
    // these links), taken while it still believes it leads (check_quorum
    // needs a whole election timeout, 1 s at the defaults, to notice).
    // From here on it keeps proposing its observations, and must commit
    // none of them.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let cut = c.status(li).await.unwrap().cluster.unwrap_or_default();
    assert_eq!(
        (cut.leader, cut.term),
        (old, old_term),
        "the isolated leader stepped down before the baseline was taken"
    );
    let isolated_commit = cut.commit_index;
    // Something for it to try to commit: a request it records in its log
    // (the audit record every mutation gets) before acting. It must fail.
    let mut to_isolated = c.client(li);
    let to = c.nodes[rest[0]].id;
    let attempt = tokio::spawn(async move {
        to_isolated
            .transfer_leader(faxi_proto::v1::TransferLeaderRequest { to })
            .await
    });
    let (new, new_term) = c.wait_leader(&rest, LONG).await;
    assert_ne!(new, old);
    assert!(new_term > old_term);
    // check_quorum: the old leader notices it lost its quorum and steps down.
    wait_for("the isolated leader steps down", LONG, || async {
        let cl = c.status(li).await?.cluster.unwrap_or_default();
        if cl.leader != old {
            Ok(())
        } else {
            Err(format!("still leader in term {}", cl.term))
        }
    })
    .await;
    assert_eq!(
        commit(&c, li).await.unwrap(),
        isolated_commit,
        "the isolated leader committed while it still led"
    );
    // The majority goes on committing observations; the minority commits nothing.
    wait_for("the majority commits", LONG, || async {
        let ci = commit(&c, rest[0]).await?;
        if ci > isolated_commit + 10 {
            Ok(())
        } else {
            Err(format!("commit {ci}"))
        }
    })
    .await;
    assert_eq!(
        commit(&c, li).await.unwrap(),
        isolated_commit,
        "the minority committed"
    );
    let answer = tokio::time::timeout(LONG, attempt).await.unwrap().unwrap();
    assert!(
        answer.is_err(),
        "a request to the isolated leader was carried out: {answer:?}"
    );
    // Its zone's observations expire; the two others still decide.
    wait_for("the isolated zone's view expires", LONG, || async {
        let s = c.status(rest[0]).await?;
        let t = s.targets.iter().find(|t| t.name == "svc").ok_or("no svc")?;
        let z = t.zones.get(&c.nodes[li].zone).cloned().unwrap_or_default();
        if z == "UNKNOWN" && t.state == "UP" {
            Ok(())
        } else {
            Err(format!("{z} / {}", t.state))
        }
    })
    .await;

    net.heal_all();
    let (after, _) = c.wait_leader(&[0, 1, 2], LONG).await;
    assert_eq!(after, new, "the healed node disrupted the leader");
    let majority = commit(&c, rest[0]).await.unwrap();
    wait_for("the healed node catches up", LONG, || async {
        let cl = c.status(li).await?.cluster.unwrap_or_default();
        if cl.applied_index >= majority {
            Ok(())
        } else {
            Err(format!("applied {}", cl.applied_index))
        }
    })
    .await;
    wait_for("the healed zone counts again", LONG, || async {
        let s = c.status(li).await?;
        let t = s.targets.iter().find(|t| t.name == "svc").ok_or("no svc")?;
        let z = t.zones.get(&c.nodes[li].zone).cloned().unwrap_or_default();
        if z == "UP" { Ok(()) } else { Err(z) }
    })
    .await;

    let claims = leaders.finish().await;
    for (term, ids) in &claims {
        assert_eq!(ids.len(), 1, "term {term} had leaders {ids:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_way_link_does_not_disrupt_the_leader_or_its_term() {
    let Some((c, _)) = mesh().await else { return };
    let net = c.net.as_ref().unwrap();
    let (leader, term) = c.wait_leader(&[0, 1, 2], LONG).await;
    let li = c.index(leader);
    let fi = (0..3).find(|i| *i != li).unwrap();
    let other = (0..3).find(|i| *i != li && *i != fi).unwrap();

    // The leader's messages no longer reach the follower; the follower's
    // still reach the leader. The follower's pre-votes must not move the term.
    net.block_port(li, fi, 7400);
    let fi_start = commit(&c, fi).await.unwrap();
    let start = commit(&c, other).await.unwrap();
    wait_for("commits go on without the follower", LONG, || async {
        let ci = commit(&c, other).await?;
        if ci > start + 15 {
            Ok(())
        } else {
            Err(format!("commit {ci}"))
        }
    })
    .await;
    // The link really is cut that way: the follower heard nothing new (but
    // what was already in flight when the rule went in).
    let fi_now = commit(&c, fi).await.unwrap();
    assert!(
        fi_now <= fi_start + 2,
        "the follower still follows: commit {fi_start} -> {fi_now}"
    );
    for i in [li, other] {
        let cl = c.status(i).await.unwrap().cluster.unwrap();
        assert_eq!((cl.leader, cl.term), (leader, term), "node {}", i + 1);
    }

    net.heal_all();
    let (after, after_term) = c.wait_leader(&[0, 1, 2], LONG).await;
    assert_eq!(
        (after, after_term),
        (leader, term),
        "healing moved the leader or term"
    );
    let majority = commit(&c, other).await.unwrap();
    wait_for("the follower catches up", LONG, || async {
        let cl = c.status(fi).await?.cluster.unwrap_or_default();
        if cl.applied_index >= majority {
            Ok(())
        } else {
            Err(format!("applied {}", cl.applied_index))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zone_that_loses_its_route_to_a_target_makes_it_suspect_not_down() {
    let Some((c, svc)) = mesh().await else { return };
    let net = c.net.as_ref().unwrap();
    c.wait_leader(&[0, 1, 2], LONG).await;
    c.wait_state(&[0, 1, 2], "svc", "UP", LONG).await;
    net.cut_service(2, svc);
    c.wait_state(&[0, 1, 2], "svc", "SUSPECT", LONG).await;
    for i in 0..3 {
        let s = c.status(i).await.unwrap();
        let t = s.targets.iter().find(|t| t.name == "svc").unwrap();
        assert_eq!(t.down_zones, vec!["zone-c".to_owned()]);
    }
    // A second zone losing it makes a quorum: DOWN.
    net.cut_service(1, svc);
    c.wait_state(&[0, 1, 2], "svc", "DOWN", LONG).await;
    net.heal_all();
    c.wait_state(&[0, 1, 2], "svc", "UP", LONG).await;
}

/// Runs faxictl with `args`, endpoints given in order.
async fn faxictl(endpoints: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Cluster::faxictl(endpoints, args).await;
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_node_answers_stale_and_faxictl_moves_on_to_a_fresh_one() {
    if !is_root() {
        eprintln!("skipped: network namespaces need root");
        return;
    }
    let net = Net::create(3);
    let mut redis = faxi_tests::redis::Redis::start_open_on(net.host_ip().into()).await;
    let ctx = Ctx {
        service: Some(SocketAddr::new(net.host_ip().into(), redis.port)),
        closed: None,
    };
    let mut spec = Spec::zones(3);
    spec.targets = |_, _, ctx| {
        format!(
            "[[targets]]\nname = \"redis\"\nkind = \"redis\"\nurl = \"redis://{}\"\n",
            ctx.service.unwrap()
        )
    };
    let c = Cluster::start_in(net, &spec, &ctx).await;
    let net = c.net.as_ref().unwrap();
    c.wait_leader(&[0, 1, 2], LONG).await;
    c.wait_state(&[0, 1, 2], "redis", "UP", LONG).await;
    let (zone_c, majority) = (2, [0usize, 1]);
    assert_eq!(c.nodes[zone_c].zone, "zone-c");

    // A healthy node confirms its reads.
    let s = c
        .status_with(0, pb::StatusRequest::default())
        .await
        .unwrap();
    assert!(
        !s.stale,
        "a healthy node's read was not confirmed: {}",
        s.stale_reason
    );
    assert!(s.read_index > 1);

    // A watch on zone-c's node, started while it is fresh.
    let eps = c.endpoints(&[zone_c, 0, 1]);
    let (mut early_watch, mut early) = Cluster::faxictl_watch(&eps);
    let next_doc = |line: Option<String>| -> serde_json::Value {
        serde_json::from_str(&line.expect("the watch ended")).unwrap()
    };
    let v = next_doc(
        tokio::time::timeout(LONG, early.next_line())
            .await
            .unwrap()
            .unwrap(),
    );
    assert_eq!(v["cluster"]["answered_by"]["id"], 3);
    assert_eq!(v["stale"], false);

    // zone-c's node is cut off from its two peers; then redis dies.
    net.isolate(zone_c);
    c.wait_leader(&majority, LONG).await;
    redis.kill().await;
    c.wait_state(&majority, "redis", "DOWN", LONG).await;

    // zone-c's node still holds redis UP, but says its answer is stale,
    // and how stale, growing.
    let confirmed = |i| c.status_with(i, pb::StatusRequest::default());
    let first = confirmed(zone_c).await.unwrap();
    assert!(first.stale, "the cut-off node confirmed its read");
    assert!(!first.stale_reason.is_empty());
    assert_eq!(first.read_index, 0);
    let redis_state = |s: &pb::StatusResponse| {
        s.targets
            .iter()
            .find(|t| t.name == "redis")
            .map(|t| t.state.clone())
    };
    assert_eq!(redis_state(&first).as_deref(), Some("UP"));
    assert!(first.staleness_ms > 0, "staleness {}", first.staleness_ms);
    let contact = first.cluster.as_ref().unwrap().leader_contact_ms;
    assert!(contact >= 0, "leader contact turned null: {contact}");
    wait_for("zone-c's staleness grows", LONG, || async {
        let s = confirmed(zone_c).await?;
        if s.stale && s.staleness_ms >= first.staleness_ms + 1000 {
            Ok(())
        } else {
            Err(format!("stale {} staleness {}", s.stale, s.staleness_ms))
        }
    })
    .await;
    // The majority confirms, and says DOWN.
    let s = confirmed(0).await.unwrap();
    assert!(!s.stale, "{}", s.stale_reason);
    assert_eq!(redis_state(&s).as_deref(), Some("DOWN"));
    // A watch on zone-c's node marks its first message stale.
    let mut w = c
        .client(zone_c)
        .watch(pb::StatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    let m = tokio::time::timeout(LONG, w.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(m.stale);
    drop(w);

    // The watch that was on zone-c's node says when it turned stale, then
    // goes on from a fresh node, which sees redis DOWN.
    let mut saw_stale = false;
    loop {
        let v = next_doc(
            tokio::time::timeout(LONG, early.next_line())
                .await
                .expect("the watch went quiet")
                .unwrap(),
        );
        if v["cluster"]["answered_by"]["id"] == 3 {
            saw_stale |= v["stale"] == true;
            continue;
        }
        assert_eq!(v["stale"], false, "{v}");
        assert!(saw_stale, "moved on without marking the stale message");
        let redis_down = v["targets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "redis" && t["state"] == "DOWN");
        if redis_down {
            break;
        }
        // The fresh node may not have every zone's verdict yet (a loaded
        // machine): the watch goes on until it does.
    }
    early_watch.kill().await.unwrap();

    // faxictl given zone-c's endpoint first moves on to a fresh node.
    let (code, out, err) = faxictl(&eps, &["status", "--output", "json"]).await;
    assert_eq!(code, Some(0), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["stale"], false);
    assert_ne!(v["cluster"]["answered_by"]["id"], 3, "{out}");
    let t = v["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "redis")
        .unwrap();
    assert_eq!(t["state"], "DOWN");
    let (code, out, err) = faxictl(&eps, &["status"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("DOWN") && !out.contains("STALE ANSWER"),
        "{out}"
    );
    // The same for a watch: its first message comes from a fresh node.
    let (mut watch, mut lines) = Cluster::faxictl_watch(&eps);
    let line = tokio::time::timeout(LONG, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["stale"], false);
    assert_ne!(v["cluster"]["answered_by"]["id"], 3, "{line}");
    watch.kill().await.unwrap();

    // With --allow-stale it shows zone-c's own view, marked, with its age.
    let (code, out, err) = faxictl(&eps, &["--allow-stale", "status"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("STALE ANSWER: node 3 (zone-c)"), "{out}");
    assert!(out.contains("last heard from a leader"), "{out}");
    let (code, out, err) = faxictl(&eps, &["--allow-stale", "status", "-o", "json"]).await;
    assert_eq!(code, Some(0), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["stale"], true);
    assert_eq!(v["cluster"]["answered_by"]["id"], 3);
    assert!(v["staleness_ms"].as_i64().unwrap() > 1000, "{out}");
    assert!(v["stale_reason"].is_string());

    // Only zone-c to ask: no fresh answer anywhere, exit 1, and why.
    let only = c.endpoints(&[zone_c]);
    let (code, _, err) = faxictl(&only, &["status"]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&only) && err.contains("stale"), "{err}");
    assert!(err.contains("last heard from a leader"), "{err}");
    assert!(err.contains("--allow-stale"), "{err}");
}
