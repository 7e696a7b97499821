//! Recovery with the real Docker engine, on real node processes (three
//! zones on loopback, mutual TLS, default cluster settings). Each target
//! is a busybox httpd container, probed over TCP at its published port:
//!
//! - a container killed (`docker kill`) is agreed DOWN, the leader alone
//!   restarts it (`docker.restart`, then `wait_healthy`), exactly once, and
//!   the incident resolves with its timeline and its recovery time in the
//!   RTO table;
//! - dependencies: `app` depends on `db`; `db` is killed, then `app` while
//!   db's plan is still running: app's incident joins db's, db's plan
//!   alone runs, and once db is back app gets its own recovery, its
//!   container restarted after db's (with two recoveries allowed at once,
//!   so that the budget is not what orders them).
//!
//! What the engine did is read back through the `docker` CLI (its
//! `start` events, `StartedAt`, `RestartCount`), independently of the
//! node's Docker client. Needs the Docker engine: the tests fail when it
//! does not answer, unless `FAXI_SKIP_DOCKER=1` skips them knowingly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use faxi_tests::cluster::{Cluster, Ctx, Spec};
use faxi_tests::docker::{TestContainer, docker_or_skip};
use faxi_tests::{free_port, http_get, metric, wait_for};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(60);

/// A `tcp` target on `127.0.0.1:port` with a plan of its own name.
fn target(name: &str, port: u16, depends_on: &[&str]) -> String {
    let deps = if depends_on.is_empty() {
        String::new()
    } else {
        let d: Vec<String> = depends_on.iter().map(|d| format!("\"{d}\"")).collect();
        format!("depends_on = [{}]\n", d.join(", "))
    };
    format!(
        "[[targets]]\nname = \"{name}\"\nkind = \"tcp\"\naddr = \"127.0.0.1:{port}\"\nrto = \"1m\"\n\
         recovery = \"{name}\"\n{deps}\n"
    )
}

/// The plan `[recovery.<target>]`: the steps in `first` (TOML lines), then
/// `docker.restart` of `container`, then `wait_healthy` of `target`.
fn plan(target: &str, container: &str, first: &str) -> String {
    format!(
        "[recovery.{target}]\ncooldown = \"1h\"\nsteps = [\n{first}  {{ action = \"docker.restart\", \
         container = \"{container}\" }},\n  {{ action = \"wait_healthy\", target = \"{target}\", \
         timeout = \"30s\" }},\n]\n\n"
    )
}

/// Three zones at the default cluster settings; targets and plans in
/// `extra`.
fn spec(extra: String) -> Spec {
    let mut spec = Spec::zones(3);
    spec.cluster = String::new();
    spec.extra = extra;
    spec
}

/// Every incident, open and finished (`faxictl incidents --all`).
async fn incidents(eps: &str) -> Result<Vec<Value>, String> {
    let v = Cluster::faxictl_json(eps, &["incidents", "--all"]).await?;
    Ok(v["incidents"].as_array().cloned().unwrap_or_default())
}

/// Waits until `target`'s latest incident satisfies `ready`; returns it.
async fn wait_incident(eps: &str, target: &str, what: &str, ready: fn(&Value) -> bool) -> Value {
    wait_for(&format!("{target}'s incident {what}"), LONG, || async {
        let all = incidents(eps).await?;
        let i = all
            .iter()
            .filter(|i| i["target"] == target)
            .max_by_key(|i| i["id"].as_u64())
            .ok_or("no incident yet")?;
        if ready(i) {
            Ok(i.clone())
        } else {
            Err(format!(
                "phase {} pending {} resolved {}",
                i["phase"], i["pending"], i["resolved"]
            ))
        }
    })
    .await
}

fn finished(i: &Value) -> bool {
    i["finished"] == true && i["phase"] == "RESOLVED"
}

/// `faxictl incident show ID --output json`: the incident and its timeline.
async fn show(eps: &str, id: u64) -> Value {
    Cluster::faxictl_json(eps, &["incident", "show", &id.to_string()])
        .await
        .unwrap()
}

/// The timeline's (kind, step) pairs.
fn events(incident: &Value) -> Vec<(String, Option<u64>)> {
    incident["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["kind"].as_str().unwrap().to_owned(), e["step"].as_u64()))
        .collect()
}

/// The first event of `kind` (for step `step`, when given).
fn event<'a>(incident: &'a Value, kind: &str, step: Option<u64>) -> &'a Value {
    incident["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == kind && (step.is_none() || e["step"].as_u64() == step))
        .unwrap_or_else(|| panic!("no {kind} event (step {step:?}): {incident:#}"))
}

/// Asserts that the timeline holds `want` in this order (other events may
/// come between them).
fn assert_in_order(incident: &Value, want: &[(&str, Option<u64>)]) {
    let seen = events(incident);
    let mut at = 0;
    for (kind, step) in want {
        match seen[at..]
            .iter()
            .position(|(k, s)| k == kind && (step.is_none() || s == step))
        {
            Some(p) => at += p + 1,
            None => panic!("timeline lacks {kind} (step {step:?}) in order {want:?}: {seen:?}"),
        }
    }
}

/// How many events of `kind` for `step` the timeline holds.
fn count(incident: &Value, kind: &str, step: u64) -> usize {
    events(incident)
        .iter()
        .filter(|(k, s)| k == kind && *s == Some(step))
        .count()
}

/// The node that recorded step `step`'s intent (the text says `by node N`).
fn intent_by(incident: &Value, step: u64) -> u64 {
    let text = event(incident, "intent", Some(step))["text"]
        .as_str()
        .unwrap()
        .to_owned();
    let after = text
        .split("by node ")
        .nth(1)
        .unwrap_or_else(|| panic!("intent names no node: {text}"));
    after
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("intent names no node: {text}"))
}

/// A metric on node `i` (0 when absent).
async fn node_metric(c: &Cluster, i: usize, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = http_get(c.nodes[i].metrics, "/metrics")
        .await
        .unwrap_or_default();
    metric(&text, name, labels).unwrap_or(0.0)
}

/// `faxi_recovery_steps_total` of `plan`/`action` ending `done`, per node.
async fn steps_done(c: &Cluster, plan: &str, action: &str) -> Vec<f64> {
    let mut out = Vec::new();
    for i in 0..c.nodes.len() {
        out.push(
            node_metric(
                c,
                i,
                "faxi_recovery_steps_total",
                &[("plan", plan), ("action", action), ("result", "done")],
            )
            .await,
        );
    }
    out
}

/// Unix ms of a system time.
fn unix_ms(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis()
}

/// Asserts that every node applied `target` going DOWN and then UP (from
/// their logs): the agreed state, not one node's verdict.
fn assert_agreed_down_then_up(c: &Cluster, target: &str) {
    for i in 0..c.nodes.len() {
        let to: Vec<String> = c
            .log_lines(i)
            .iter()
            .filter(|l| l["message"] == "agreed state changed" && l["target_name"] == target)
            .map(|l| l["to"].as_str().unwrap_or_default().to_owned())
            .collect();
        let down = to.iter().position(|s| s == "DOWN");
        let up = to.iter().rposition(|s| s == "UP");
        assert!(
            matches!((down, up), (Some(d), Some(u)) if d < u),
            "node {}: {target} went {to:?}",
            i + 1
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_container_is_restarted_once_by_the_leader_and_its_incident_resolves() {
    if !docker_or_skip("recovery by docker.restart").await {
        return;
    }
    let port = free_port();
    let app = TestContainer::httpd("app", port).await;
    let extra = target("app", port, &[]) + &plan("app", &app.name, "");
    let c = Cluster::start(&spec(extra), &Ctx::default()).await;
    let eps = c.endpoints(&[0, 1, 2]);
    c.wait_state(&[0, 1, 2], "app", "UP", LONG).await;
    c.wait_leader(&[0, 1, 2], LONG).await;
    let first_start = app.started_at().await;

    let killed = SystemTime::now();
    app.kill().await;
    let i = wait_incident(&eps, "app", "resolved", finished).await;
    let id = i["id"].as_u64().unwrap();
    app.wait_running(true, LONG).await;
    c.wait_state(&[0, 1, 2], "app", "UP", LONG).await;
    assert_agreed_down_then_up(&c, "app");

    // The timeline: detected (by a quorum of zones), the intent, the step
    // started and done; resolved after the intent (the probes may see the
    // container back before its outcome is recorded).
    let shown = show(&eps, id).await;
    assert_in_order(
        &shown,
        &[
            ("detected", None),
            ("attempt", None),
            ("intent", Some(1)),
            ("started", Some(1)),
            ("done", Some(1)),
        ],
    );
    assert_in_order(&shown, &[("intent", Some(1)), ("resolved", None)]);
    let zones = shown["zones"].as_array().unwrap();
    assert!(zones.len() >= 2, "DOWN in fewer than 2 zones: {shown:#}");
    let detected = event(&shown, "detected", None)["text"].as_str().unwrap();
    for z in zones {
        assert!(
            detected.contains(z.as_str().unwrap()),
            "{detected:?} names no zone {z}"
        );
    }
    assert_eq!(count(&shown, "intent", 1), 1, "{shown:#}");
    assert_eq!(shown["attempts"], 1, "{shown:#}");
    let restart = event(&shown, "intent", Some(1))["text"].as_str().unwrap();
    assert!(
        restart.contains(&format!("docker.restart {}", app.name)),
        "{restart:?}"
    );
    let recover_ms = shown["recover_ms"].as_u64().unwrap();
    assert!(recover_ms > 0, "{shown:#}");

    // The RTO table has its recovery time.
    let rto = Cluster::faxictl_json(&eps, &["rto"]).await.unwrap();
    let row = rto["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == "app")
        .unwrap_or_else(|| panic!("no app in {rto:#}"))
        .clone();
    assert_eq!(row["count"], 1, "{row:#}");
    assert_eq!(row["last_ms"].as_u64(), Some(recover_ms), "{row:#}");
    assert_eq!(row["rto_ms"], 60_000, "{row:#}");
    assert_eq!(row["open_incident"], Value::Null, "{row:#}");

    // The engine started it exactly once since the kill, not by its
    // restart policy, and after the intent.
    let starts = app.starts_since(killed).await;
    assert_eq!(starts.len(), 1, "started {starts:?} since the kill");
    assert_eq!(app.restart_count().await, 0);
    let started = app.started_at().await;
    assert!(started > first_start && started > killed);
    let intent_ms = u128::from(event(&shown, "intent", Some(1))["at_ms"].as_u64().unwrap());
    assert!(
        unix_ms(started) >= intent_ms,
        "started at {} ms, before its intent at {intent_ms} ms",
        unix_ms(started)
    );

    // Run by the node that recorded the intent, and by no other: its
    // metric, and its log line carrying the fencing token.
    let by = intent_by(&shown, 1);
    let done = steps_done(&c, "app", "docker.restart").await;
    let mut want = vec![0.0; 3];
    want[c.index(by)] = 1.0;
    assert_eq!(
        done, want,
        "docker.restart done per node (intent by node {by})"
    );
    for n in 0..3 {
        let fenced: Vec<serde_json::Value> = c
            .log_lines(n)
            .into_iter()
            .filter(|l| l["message"] == "docker step under its fencing token")
            .collect();
        if n == c.index(by) {
            assert_eq!(fenced.len(), 1, "{fenced:?}");
            assert_eq!(fenced[0]["container"], app.name.as_str());
            assert_eq!(fenced[0]["incident"], id);
        } else {
            assert!(fenced.is_empty(), "node {} acted: {fenced:?}", n + 1);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependents_incident_joins_its_dependencys_and_is_recovered_after_it() {
    if !docker_or_skip("recovery of dependent containers").await {
        return;
    }
    let (db_port, app_port) = (free_port(), free_port());
    let db = TestContainer::httpd("db", db_port).await;
    let app = TestContainer::httpd("app", app_port).await;
    // db's plan first sleeps 3 s: the window in which app goes down too.
    let sleep = "  { action = \"exec\", argv = [\"/bin/sleep\", \"3\"] },\n";
    let extra = target("db", db_port, &[])
        + &target("app", app_port, &["db"])
        + "[recovery_defaults]\nmax_concurrent = 2\n\n"
        + &plan("db", &db.name, sleep)
        + &plan("app", &app.name, "");
    let c = Cluster::start(&spec(extra), &Ctx::default()).await;
    let eps = c.endpoints(&[0, 1, 2]);
    c.wait_state(&[0, 1, 2], "db", "UP", LONG).await;
    c.wait_state(&[0, 1, 2], "app", "UP", LONG).await;

    let killed = SystemTime::now();
    db.kill().await;
    // db's plan is under way: its first step (the sleep) has its intent.
    let db_open = wait_incident(&eps, "db", "at its first step", |i| {
        i["pending"]["step"] == 1 && i["resolved"].is_null()
    })
    .await;
    let db_id = db_open["id"].as_u64().unwrap();
    app.kill().await;
    let app_open = wait_incident(&eps, "app", "joined", |i| i["phase"] == "JOINED").await;
    let app_id = app_open["id"].as_u64().unwrap();
    assert_eq!(app_open["cause"], db_id, "{app_open:#}");
    assert_eq!(app_open["attempts"], 0, "{app_open:#}");
    // It joined while db's plan still ran (else the window was too short
    // and this test proves nothing).
    let now = incidents(&eps).await.unwrap();
    let db_now = now.iter().find(|i| i["id"] == db_id).unwrap();
    assert!(
        db_now["resolved"].is_null(),
        "db was back before app joined: {db_now:#}"
    );
    assert!(!app.running().await.unwrap(), "app restarted while joined");
    // faxictl says why app is down.
    let out = Cluster::faxictl(&eps, &["incident", "show", &app_id.to_string()]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("app is down because db is down"),
        "incident show {app_id}:\n{text}"
    );

    // Both come back and resolve.
    let db_done = wait_incident(&eps, "db", "resolved", finished).await;
    let app_done = wait_incident(&eps, "app", "resolved", finished).await;
    assert_eq!(db_done["id"], db_id);
    assert_eq!(app_done["id"], app_id);
    db.wait_running(true, LONG).await;
    app.wait_running(true, LONG).await;
    c.wait_state(&[0, 1, 2], "db", "UP", LONG).await;
    c.wait_state(&[0, 1, 2], "app", "UP", LONG).await;
    assert_agreed_down_then_up(&c, "db");
    assert_agreed_down_then_up(&c, "app");

    let db_shown = show(&eps, db_id).await;
    let app_shown = show(&eps, app_id).await;
    assert_in_order(
        &db_shown,
        &[
            ("detected", None),
            ("attempt", None),
            ("intent", Some(1)),
            ("joined", None),
            ("done", Some(1)),
            ("intent", Some(2)),
            ("done", Some(2)),
        ],
    );
    assert_in_order(&db_shown, &[("intent", Some(2)), ("resolved", None)]);
    assert_eq!(
        db_shown["joined"],
        serde_json::json!(["app"]),
        "{db_shown:#}"
    );
    // app: joined, then its own recovery once db resolved, then restarted.
    assert_in_order(
        &app_shown,
        &[
            ("detected", None),
            ("joined", None),
            ("own_recovery", None),
            ("attempt", None),
            ("intent", Some(1)),
            ("started", Some(1)),
            ("done", Some(1)),
        ],
    );
    assert_in_order(&app_shown, &[("intent", Some(1)), ("resolved", None)]);
    assert_eq!(app_shown["attempts"], 1, "{app_shown:#}");
    assert_eq!(app_shown["cause"], Value::Null, "{app_shown:#}");
    assert_eq!(count(&app_shown, "intent", 1), 1, "{app_shown:#}");
    assert_eq!(count(&db_shown, "intent", 2), 1, "{db_shown:#}");
    let db_resolved = db_shown["resolved_ms"].as_u64().unwrap();
    let app_attempt = event(&app_shown, "attempt", None)["at_ms"]
        .as_u64()
        .unwrap();
    assert!(
        app_attempt >= db_resolved,
        "app's attempt at {app_attempt} ms, before db resolved at {db_resolved} ms"
    );

    // The engine: each started exactly once since the kills, app after
    // db, and after db was agreed back.
    let db_starts = db.starts_since(killed).await;
    let app_starts = app.starts_since(killed).await;
    assert_eq!(db_starts.len(), 1, "db started {db_starts:?}");
    assert_eq!(app_starts.len(), 1, "app started {app_starts:?}");
    assert!(
        app_starts[0] > db_starts[0],
        "app started at {} ns, db at {} ns",
        app_starts[0],
        db_starts[0]
    );
    assert!(
        app_starts[0] / 1_000_000 >= u128::from(db_resolved),
        "app started at {} ms, before db resolved at {db_resolved} ms",
        app_starts[0] / 1_000_000
    );
    assert_eq!(db.restart_count().await, 0);
    assert_eq!(app.restart_count().await, 0);

    // Each step ran once, on the node that recorded its intent.
    for (plan, action, shown, step) in [
        ("db", "exec", &db_shown, 1),
        ("db", "docker.restart", &db_shown, 2),
        ("app", "docker.restart", &app_shown, 1),
    ] {
        let by = intent_by(shown, step);
        let mut want = vec![0.0; 3];
        want[c.index(by)] = 1.0;
        assert_eq!(
            steps_done(&c, plan, action).await,
            want,
            "{plan} {action} done per node (intent by node {by})"
        );
    }
}
