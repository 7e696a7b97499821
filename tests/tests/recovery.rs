//! Recovery on real node processes (three zones, mutual TLS, default
//! cluster settings): a target a zone quorum agrees is DOWN opens an
//! incident on every node, the leader alone runs the plan's `exec` step
//! (once, with the incident and its fencing token in its environment), the
//! target comes back, the incident resolves with its times measured; when
//! only a minority of zones sees the target down, nothing opens and nothing
//! runs; a drill runs the plan of an UP target once, counted apart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use faxi_tests::cluster::{Cluster, Ctx, Spec};
use faxi_tests::{http::AppStub, http_get, metric, wait_for};

const LONG: Duration = Duration::from_secs(30);

/// A plan whose one step appends the incident, the fencing token and the
/// node's pid to `effects` (the side effect the test counts).
fn plan(effects: &Path) -> String {
    format!(
        "[recovery.app]\ncooldown = \"1h\"\nsteps = [\n  {{ action = \"exec\", argv = [\"/bin/sh\", \"-c\", \
         \"echo $FAXI_INCIDENT $FAXI_FENCE_TERM $FAXI_FENCE_INDEX $PPID >> {}\"] }},\n]\n",
        effects.display()
    )
}

fn spec(effects: &Path) -> Spec {
    let mut spec = Spec::zones(3);
    spec.cluster = String::new();
    spec.probe_defaults = "interval = \"200ms\"\ntimeout = \"150ms\"\nfall = 2\nrise = 1\n".into();
    spec.targets = |_, _, ctx| {
        format!(
            "[[targets]]\nname = \"app\"\nkind = \"http\"\nurl = \"http://{}/health\"\nrto = \"1m\"\nrecovery = \"app\"\n",
            ctx.service.unwrap()
        )
    };
    spec.extra = plan(effects);
    spec
}

fn ctx(app: &AppStub) -> Ctx {
    Ctx {
        service: Some(app.addr),
        closed: None,
    }
}

/// The lines the plan's step wrote.
fn effects(path: &PathBuf) -> Vec<Vec<String>> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

/// A metric on node `i` (0 when absent).
async fn node_metric(c: &Cluster, i: usize, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = http_get(c.nodes[i].metrics, "/metrics")
        .await
        .unwrap_or_default();
    metric(&text, name, labels).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_runs_the_plan_once_with_its_fencing_token_and_the_incident_resolves() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("effects");
    let app = AppStub::start().await;
    let c = Cluster::start(&spec(&file), &ctx(&app)).await;
    c.wait_state(&[0, 1, 2], "app", "UP", LONG).await;
    let (leader, _) = c.wait_leader(&[0, 1, 2], LONG).await;

    // The app fails everywhere: a zone quorum agrees it is DOWN.
    app.set_status(503);
    wait_for("the plan's step ran", LONG, || async {
        let lines = effects(&file);
        if lines.is_empty() {
            Err("no side effect yet".to_owned())
        } else {
            Ok(())
        }
    })
    .await;
    // The step "restarted" the app.
    app.set_status(200);
    c.wait_state(&[0, 1, 2], "app", "UP", LONG).await;
    // Resolved on every node, with its times measured.
    for i in 0..3 {
        wait_for("the incident resolved on every node", LONG, || async {
            let n = node_metric(
                &c,
                i,
                "faxi_incidents_total",
                &[("target", "app"), ("outcome", "resolved")],
            )
            .await;
            if n == 1.0 {
                Ok(())
            } else {
                Err(format!("node {}: {n}", i + 1))
            }
        })
        .await;
        assert_eq!(node_metric(&c, i, "faxi_incidents_open", &[]).await, 0.0);
        assert_eq!(
            node_metric(
                &c,
                i,
                "faxi_time_to_recover_seconds_count",
                &[("target", "app")]
            )
            .await,
            1.0
        );
    }
    // Once, by the leader, with incident 1 and a fencing token of the
    // leader's term.
    let lines = effects(&file);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let (_, term) = c.wait_leader(&[0, 1, 2], LONG).await;
    let line = &lines[0];
    assert_eq!(line[0], "1", "{line:?}");
    assert!(line[1].parse::<u64>().unwrap() <= term, "{line:?}");
    assert!(line[2].parse::<u64>().unwrap() > 1, "{line:?}");
    assert_eq!(
        line[3],
        c.pid(c.index(leader)).unwrap().to_string(),
        "not run by the leader: {line:?}"
    );
    let steps = node_metric(
        &c,
        c.index(leader),
        "faxi_recovery_steps_total",
        &[("plan", "app"), ("action", "exec"), ("result", "done")],
    )
    .await;
    assert_eq!(steps, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minority_of_zones_seeing_down_opens_no_incident_and_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("effects");
    let app = AppStub::start().await;
    let closed = faxi_tests::free_port();
    let mut spec = spec(&file);
    // Zones a and b must never see the app down, however loaded the
    // machine: a 1 s timeout and three failures in a row (zone c's closed
    // port refuses at once, whatever the timeout).
    spec.probe_defaults = "interval = \"1s\"\ntimeout = \"1s\"\nfall = 3\nrise = 1\n".into();
    // Zone c alone is pointed at a closed port: it sees the app down.
    spec.targets = |_, zone, ctx| {
        let addr = if zone == "zone-c" {
            ctx.closed.unwrap()
        } else {
            ctx.service.unwrap()
        };
        format!(
            "[[targets]]\nname = \"app\"\nkind = \"http\"\nurl = \"http://{addr}/health\"\nrecovery = \"app\"\n"
        )
    };
    let ctx = Ctx {
        service: Some(app.addr),
        closed: Some(([127, 0, 0, 1], closed).into()),
    };
    let c = Cluster::start(&spec, &ctx).await;
    c.wait_state(&[0, 1, 2], "app", "SUSPECT", LONG).await;
    // Long enough for every node's executor to have looked many times
    // (every 500 ms, and on every applied entry): ten refreshes committed.
    let before = c.status(0).await.unwrap().cluster.unwrap().commit_index;
    wait_for("ten more entries committed", LONG, || async {
        let now = c.status(0).await?.cluster.unwrap_or_default().commit_index;
        if now >= before + 10 {
            Ok(())
        } else {
            Err(format!("commit {now}"))
        }
    })
    .await;
    c.wait_state(&[0, 1, 2], "app", "SUSPECT", LONG).await;
    for i in 0..3 {
        assert_eq!(node_metric(&c, i, "faxi_incidents_open", &[]).await, 0.0);
        assert_eq!(
            node_metric(&c, i, "faxi_incidents_total", &[("target", "app")]).await,
            0.0
        );
    }
    assert!(
        effects(&file).is_empty(),
        "a step ran: {:?}",
        effects(&file)
    );
}

/// How many leaders the kill test kills: `FAXI_KILL_LOOPS`, 50 by default
/// (`tests/recovery-campaign` runs more).
fn kill_loops() -> usize {
    std::env::var("FAXI_KILL_LOOPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
}

/// `faxictl incidents --output json` as admin, through every node.
async fn incidents(c: &Cluster) -> Result<serde_json::Value, String> {
    let out = Cluster::faxictl(&c.endpoints(&[0, 1, 2]), &["incidents", "--output", "json"]).await;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_between_intent_and_outcome_never_gets_its_step_run_twice() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("effects");
    let app = AppStub::start().await;
    let mut spec = spec(&file);
    // The step writes its fencing token and its node's pid, then kills its
    // node (its parent) with SIGKILL: the leader dies after the side
    // effect and before its outcome is recorded, every time.
    spec.extra = format!(
        "[recovery.app]\ncooldown = \"1ms\"\nmax_attempts = 1000\nsteps = [\n  {{ action = \"exec\", argv = [\"/bin/sh\", \"-c\", \
         \"echo $FAXI_INCIDENT $FAXI_FENCE_TERM $FAXI_FENCE_INDEX $PPID >> {}; kill -9 $PPID\"] }},\n]\n",
        file.display()
    );
    let mut c = Cluster::start(&spec, &ctx(&app)).await;
    c.wait_state(&[0, 1, 2], "app", "UP", LONG).await;
    app.set_status(503);
    let eps = c.endpoints(&[0, 1, 2]);
    for round in 1..=kill_loops() {
        // The step ran once more: by the leader, which it killed.
        let line = wait_for("the step ran and killed its leader", LONG, || async {
            let lines = effects(&file);
            if lines.len() == round {
                Ok(lines[round - 1].clone())
            } else if lines.len() > round {
                Err(format!(
                    "ran {} times in round {round}: {lines:?}",
                    lines.len()
                ))
            } else {
                Err(format!("{} lines", lines.len()))
            }
        })
        .await;
        let pid: u32 = line[3].parse().unwrap();
        let dead = (0..3)
            .find(|i| c.pid(*i) == Some(pid))
            .unwrap_or_else(|| panic!("round {round}: pid {pid} is no node of this cluster"));
        c.wait_exited(dead, LONG).await;
        // A later leader finds the intent without an outcome: exec is not
        // idempotent, so it waits for a person, never runs it again.
        let (incident, fence) = (line[0].clone(), line[2].clone());
        wait_for("the step marked outcome unknown", LONG, || async {
            let v = incidents(&c).await?;
            let i = v["incidents"]
                .as_array()
                .and_then(|a| {
                    a.iter().find(|i| {
                        i["id"].as_u64().map(|n| n.to_string()).as_deref()
                            == Some(incident.as_str())
                    })
                })
                .ok_or("incident not shown")?;
            let pending = i["pending"]["index"].to_string();
            if i["phase"] == "OUTCOME_UNKNOWN" && pending == fence {
                Ok(())
            } else {
                Err(format!("{} pending {pending}", i["phase"]))
            }
        })
        .await;
        assert_eq!(effects(&file).len(), round, "round {round}: run again");
        c.restart(dead).await;
        // The person skips it; the next attempt begins, under the new
        // leader, with a new intent.
        let out = Cluster::faxictl(&eps, &["approve", &incident, "--skip"]).await;
        assert!(
            out.status.success(),
            "round {round}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Every intent ran at most once.
    let lines = effects(&file);
    let fences: std::collections::BTreeSet<&String> = lines.iter().map(|l| &l[2]).collect();
    assert_eq!(fences.len(), lines.len(), "an intent ran twice: {lines:?}");
    assert_eq!(lines.len(), kill_loops(), "{lines:?}");
    let terms: std::collections::BTreeSet<u64> =
        lines.iter().map(|l| l[1].parse().unwrap()).collect();
    eprintln!(
        "{} leaders killed between a step's intent and its outcome: {} intents (terms {} to {}), \
         each run once and left outcome unknown, none run again",
        kill_loops(),
        fences.len(),
        terms.first().unwrap_or(&0),
        terms.last().unwrap_or(&0),
    );
}

/// Steps in the pacing test's plan.
const PACED_STEPS: usize = 10;

/// Consecutive moves follow each other at the pace of the log: once a
/// move of an incident ended (its entry applied), the executor makes the
/// next one at once, not at its next periodic look (every 500 ms) or at
/// some unrelated entry. One node whose refreshes come every 20 minutes:
/// nothing else commits while the plan runs, so a move that waited for
/// the periodic look shows as a gap of about 500 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_move_follows_the_previous_one_without_waiting_for_the_periodic_look() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("effects");
    let app = AppStub::start().await;
    let mut spec = spec(&file);
    spec.zones.truncate(1);
    spec.cluster = "refresh = \"20m\"\n".into();
    let step = format!(
        "  {{ action = \"exec\", argv = [\"/bin/bash\", \"-c\", \"echo $EPOCHREALTIME >> {}\"] }},\n",
        file.display()
    );
    spec.extra = format!(
        "[recovery.app]\ncooldown = \"1h\"\nsteps = [\n{}]\n",
        step.repeat(PACED_STEPS)
    );
    let c = Cluster::start(&spec, &ctx(&app)).await;
    c.wait_state(&[0], "app", "UP", LONG).await;
    app.set_status(503);
    let times: Vec<f64> = wait_for("every step ran", LONG, || async {
        let lines = effects(&file);
        if lines.len() == PACED_STEPS {
            Ok(lines.iter().map(|l| l[0].parse().unwrap()).collect())
        } else {
            Err(format!("{} of {PACED_STEPS} steps", lines.len()))
        }
    })
    .await;
    let gaps_ms: Vec<f64> = times.windows(2).map(|w| (w[1] - w[0]) * 1e3).collect();
    // The attempt's begin to its first intent: one more move.
    let shown = Cluster::faxictl(
        &c.endpoints(&[0]),
        &["incident", "show", "1", "--output", "json"],
    )
    .await;
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    let at = |kind: &str| {
        shown["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == kind)
            .and_then(|e| e["at_ms"].as_f64())
            .unwrap_or_else(|| panic!("no {kind}: {shown:#}"))
    };
    let begin_ms = at("intent") - at("attempt");
    eprintln!("attempt → first intent {begin_ms} ms; gaps between steps (ms): {gaps_ms:.1?}");
    assert!(
        begin_ms < 250.0 && gaps_ms.iter().all(|g| *g < 250.0),
        "a move waited for the periodic look: attempt → first intent {begin_ms} ms, \
         gaps between steps {gaps_ms:.1?} ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_runs_the_plan_for_real_once_and_is_counted_apart_from_incidents() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("effects");
    let app = AppStub::start().await;
    let c = Cluster::start(&spec(&file), &ctx(&app)).await;
    c.wait_state(&[0, 1, 2], "app", "UP", LONG).await;
    let eps = c.endpoints(&[0, 1, 2]);
    // The weekly DR test: the app is UP, its plan runs anyway.
    let out = wait_for("a drill accepted (the catalog recorded)", LONG, || async {
        let out = Cluster::faxictl(&eps, &["drill", "app", "--output", "json"]).await;
        if out.status.success() {
            Ok(out)
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    })
    .await;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = v["incident"]["id"].as_u64().unwrap();
    assert_eq!(v["incident"]["drill"], true, "{v}");
    wait_for("the drill finished", LONG, || async {
        let out = Cluster::faxictl(
            &eps,
            &["incident", "show", &id.to_string(), "--output", "json"],
        )
        .await;
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        if v["phase"] == "RESOLVED" && v["finished"] == true {
            Ok(())
        } else {
            Err(format!("{} finished {}", v["phase"], v["finished"]))
        }
    })
    .await;
    // Run once, by the plan, with the drill's incident and a fence.
    let lines = effects(&file);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0][0], id.to_string(), "{lines:?}");
    // Counted as a drill, not as an incident of the app.
    let out = Cluster::faxictl(&eps, &["rto", "--output", "json"]).await;
    let rto: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = rto["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["target"] == "app")
        .unwrap()
        .clone();
    assert_eq!(
        (row["drill_count"].as_u64(), row["count"].as_u64()),
        (Some(1), Some(0)),
        "{rto}"
    );
    for i in 0..3 {
        wait_for("the drill counted on every node", LONG, || async {
            let n = node_metric(
                &c,
                i,
                "faxi_incidents_total",
                &[("target", "app"), ("outcome", "drill")],
            )
            .await;
            if n == 1.0 {
                Ok(())
            } else {
                Err(format!("node {}: {n}", i + 1))
            }
        })
        .await;
    }
    // The app never went down: no incident of its own.
    assert_eq!(
        node_metric(
            &c,
            0,
            "faxi_incidents_total",
            &[("target", "app"), ("outcome", "resolved")]
        )
        .await,
        0.0
    );
}
