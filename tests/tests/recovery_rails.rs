//! Recovery's safety rails on real node processes (three zones, mutual TLS,
//! default cluster settings), each seen through faxictl and through the
//! side effects themselves (an `exec` step appending to a file, webhooks
//! received by a real HTTP server):
//!
//! - a step marked `approval` waits (AWAITING_APPROVAL) until an operator
//!   approves it;
//! - an approval expires after the leader's `approval_ttl`: the step asks
//!   again instead of running on a stale approval;
//! - maintenance pauses recovery (no attempt begins, no next step starts),
//!   not detection;
//! - `cooldown` spaces attempts, `max_attempts` per `attempt_window` ends
//!   in an escalation (one webhook) and no more attempts;
//! - `dry_run` records what would run and runs nothing;
//! - a `notify` step posts its JSON with the fencing token;
//! - `max_concurrent = 1`: two targets down at once are recovered one
//!   after the other, never overlapping.
//!
//! To prove that something did NOT happen, a test waits for a positive
//! sign that the executor had every chance to do it: the leader committed
//! more entries (every applied entry wakes every node's executor, which
//! then decides again, besides its own look every 500 ms).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use faxi_tests::cluster::{Cluster, Ctx, Spec};
use faxi_tests::http::{AppStub, Recorded};
use faxi_tests::wait_for;
use serde_json::Value;
use tempfile::TempDir;

const LONG: Duration = Duration::from_secs(30);

/// A three-zone cluster at default cluster settings probing `app` (the
/// HTTP stub), the file its steps append to, and its endpoints.
struct Rig {
    c: Cluster,
    app: AppStub,
    eps: String,
    effects: PathBuf,
    _dir: TempDir,
}

/// `app`, probed at the stub's `/health` by every node, recovered by plan
/// `app`.
fn app_target(_id: u64, _zone: &str, ctx: &Ctx) -> String {
    format!(
        "[[targets]]\nname = \"app\"\nkind = \"http\"\nurl = \"http://{}/health\"\nrto = \"15m\"\n\
         recovery = \"app\"\n",
        ctx.service.unwrap()
    )
}

impl Rig {
    /// Starts the stub (answering 200) and the cluster; `extra(effects)`
    /// is the recovery config, `env` the nodes' extra environment.
    /// Returns once every target is UP on every node.
    async fn start(
        targets: fn(u64, &str, &Ctx) -> String,
        extra: impl FnOnce(&Path) -> String,
        env: Vec<(String, String)>,
    ) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let effects = dir.path().join("effects");
        let app = AppStub::start().await;
        let mut spec = Spec::zones(3);
        // Default raft timing (100 ms ticks, 10 election ticks) and refresh.
        spec.cluster = String::new();
        spec.probe_defaults =
            "interval = \"200ms\"\ntimeout = \"150ms\"\nfall = 2\nrise = 1\n".into();
        spec.targets = targets;
        spec.extra = extra(&effects);
        spec.env = env;
        let ctx = Ctx {
            service: Some(app.addr),
            closed: None,
        };
        let c = Cluster::start(&spec, &ctx).await;
        let eps = c.endpoints(&[0, 1, 2]);
        c.wait_leader(&[0, 1, 2], LONG).await;
        let rig = Rig {
            c,
            app,
            eps,
            effects,
            _dir: dir,
        };
        for t in targets_of(targets) {
            rig.c.wait_state(&[0, 1, 2], &t, "UP", LONG).await;
        }
        rig
    }

    /// The lines the steps wrote, split on blanks.
    fn effects(&self) -> Vec<Vec<String>> {
        effects(&self.effects)
    }

    /// `faxictl ARGS --output json` as `who`, which must succeed.
    async fn json(&self, who: &str, args: &[&str]) -> Value {
        json(who, &self.eps, args).await
    }

    /// `faxictl incident show ID --output json`.
    async fn incident(&self, id: u64) -> Value {
        self.json("reader", &["incident", "show", &id.to_string()])
            .await
    }

    /// Waits until `target` has an open incident; returns its id.
    async fn incident_of(&self, target: &str) -> u64 {
        wait_for(&format!("an incident for {target}"), LONG, || async {
            let v = self.json("reader", &["incidents"]).await;
            v["incidents"]
                .as_array()
                .unwrap()
                .iter()
                .find(|i| i["target"] == target)
                .and_then(|i| i["id"].as_u64())
                .ok_or(format!("{v}"))
        })
        .await
    }

    /// Waits until incident `id` satisfies `check`; returns its JSON.
    async fn wait_incident(&self, what: &str, id: u64, check: impl Fn(&Value) -> bool) -> Value {
        wait_for(&format!("incident {id}: {what}"), LONG, || async {
            let i = self.incident(id).await;
            if check(&i) {
                Ok(i)
            } else {
                Err(format!("{i}"))
            }
        })
        .await
    }

    /// The highest commit index any node reports.
    async fn commit_index(&self) -> u64 {
        let mut best = 0;
        for i in 0..3 {
            if let Ok(s) = self.c.status(i).await {
                best = best.max(s.cluster.unwrap_or_default().commit_index);
            }
        }
        best
    }

    /// Waits until the cluster has committed `n` entries more than now.
    /// Every entry applied wakes the leader's executor, which decides
    /// again (and it looks every 500 ms besides): a move it would make, it
    /// has made by then. With the default refresh (each node confirms its
    /// verdicts every 5 s), three entries take about 5 s.
    async fn executor_looked(&self, n: u64) {
        let from = self.commit_index().await;
        wait_for(&format!("{n} more entries committed"), LONG, || async {
            let now = self.commit_index().await;
            if now >= from + n {
                Ok(())
            } else {
                Err(format!("commit index {now}, from {from}"))
            }
        })
        .await;
    }
}

/// The names of the targets a `targets` function configures.
fn targets_of(targets: fn(u64, &str, &Ctx) -> String) -> Vec<String> {
    let ctx = Ctx {
        service: Some(([127, 0, 0, 1], 1).into()),
        closed: None,
    };
    targets(1, "zone-a", &ctx)
        .lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .map(|n| n.trim_end_matches('"').to_owned())
        .collect()
}

/// The lines of `path`, split on blanks (none while it does not exist).
fn effects(path: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

/// An `exec` step appending `word`, the incident and its fencing token
/// (term, index) to `file`; `more` adds keys (`approval = true, `).
fn record(file: &Path, word: &str, more: &str) -> String {
    format!(
        "{{ {more}action = \"exec\", argv = [\"/bin/sh\", \"-c\", \
         \"echo {word} $FAXI_INCIDENT $FAXI_FENCE_TERM $FAXI_FENCE_INDEX >> {}\"] }}",
        file.display()
    )
}

/// faxictl as `who` with `--output json`, which must succeed and parse.
async fn json(who: &str, endpoints: &str, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.extend(["--output", "json"]);
    let out = Cluster::faxictl_as(who, endpoints, &args).await;
    assert!(
        out.status.success(),
        "faxictl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "faxictl {args:?}: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// faxictl as `who` in its table form, which must succeed: its stdout.
async fn table(who: &str, endpoints: &str, args: &[&str]) -> String {
    let out = Cluster::faxictl_as(who, endpoints, args).await;
    assert!(
        out.status.success(),
        "faxictl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// An incident's timeline as (kind, step) pairs (step 0: none).
fn kinds(i: &Value) -> Vec<(String, u64)> {
    i["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_owned(),
                e["step"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// The timeline's events of `kind`.
fn events<'a>(i: &'a Value, kind: &str) -> Vec<&'a Value> {
    i["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == kind)
        .collect()
}

/// (kind, step) pairs from literals.
fn pairs(want: &[(&str, u64)]) -> Vec<(String, u64)> {
    want.iter().map(|(k, s)| ((*k).to_owned(), *s)).collect()
}

/// The fencing token an `intent` event names: "... (fence TERM:INDEX)".
fn fence_of(intent: &Value) -> (u64, u64) {
    let text = intent["text"].as_str().unwrap();
    let token = text
        .rsplit_once("(fence ")
        .and_then(|(_, t)| t.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no fence in {text:?}"));
    let (term, index) = token.split_once(':').unwrap();
    (term.parse().unwrap(), index.parse().unwrap())
}

/// This machine's clock, Unix ms (the nodes run on it too).
fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// An RFC 3339 time of faxictl's JSON as Unix ms.
fn unix_ms(v: &Value) -> u64 {
    let t =
        humantime::parse_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}"))).unwrap();
    u64::try_from(t.duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

/// The POSTs a stub received.
fn posts(hook: &AppStub) -> Vec<Recorded> {
    hook.requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_that_needs_approval_waits_for_it_then_runs() {
    let rig = Rig::start(
        app_target,
        |f| {
            format!(
                "[recovery.app]\ncooldown = \"1h\"\nsteps = [\n  {},\n  {},\n]\n",
                record(f, "first", ""),
                record(f, "restore", "approval = true, "),
            )
        },
        Vec::new(),
    )
    .await;
    rig.app.set_status(503);
    let id = rig.incident_of("app").await;
    // Step 1 runs; step 2 waits for an operator.
    let waiting = rig
        .wait_incident("awaiting approval", id, |i| {
            i["phase"] == "AWAITING_APPROVAL"
        })
        .await;
    assert_eq!(waiting["step"]["index"], 2, "{waiting}");
    assert_eq!(waiting["step"]["needs_approval"], true, "{waiting}");
    assert_eq!(waiting["step"]["approved_until"], Value::Null, "{waiting}");
    let asked = events(&waiting, "awaiting_approval");
    assert_eq!(asked.len(), 1, "{waiting}");
    assert!(
        asked[0]["text"]
            .as_str()
            .unwrap()
            .contains(&format!("needs approval: faxictl approve {id}")),
        "{waiting}"
    );
    // faxictl incidents shows it waiting.
    let list = rig.json("reader", &["incidents"]).await;
    assert_eq!(list["incidents"][0]["phase"], "AWAITING_APPROVAL", "{list}");
    let shown = table("reader", &rig.eps, &["incidents"]).await;
    assert!(shown.contains("AWAITING_APPROVAL"), "{shown}");
    // However long it waits, the step does not run: the executor looked
    // again on every entry committed since.
    rig.executor_looked(3).await;
    let lines = rig.effects();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0][0], "first", "{lines:?}");
    let still = rig.incident(id).await;
    assert_eq!(still["phase"], "AWAITING_APPROVAL", "{still}");

    // An operator approves: the step runs, once.
    let approved = json("operator", &rig.eps, &["approve", &id.to_string()]).await;
    assert_eq!(approved["skipped"], false, "{approved}");
    assert!(approved["until"].is_string(), "{approved}");
    let done = rig
        .wait_incident("the attempt ended", id, |i| {
            events(i, "attempt_done").len() == 1
        })
        .await;
    let lines = rig.effects();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[1][0], "restore", "{lines:?}");
    assert_eq!(lines[1][1], id.to_string(), "{lines:?}");
    assert_eq!(
        kinds(&done),
        pairs(&[
            ("detected", 0),
            ("attempt", 0),
            ("intent", 1),
            ("started", 1),
            ("done", 1),
            ("awaiting_approval", 2),
            ("approved", 2),
            ("intent", 2),
            ("started", 2),
            ("done", 2),
            ("attempt_done", 0),
        ]),
        "{done}"
    );
    // The approval names the operator; the step ran under the token of
    // its intent.
    let by = events(&done, "approved")[0]["text"].as_str().unwrap();
    assert!(by.starts_with("approved by operator (operate)"), "{by}");
    let (term, index) = fence_of(events(&done, "intent")[1]);
    assert_eq!(lines[1][2..], [term.to_string(), index.to_string()]);
    assert_eq!(done["phase"], "OPEN", "{done}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_that_expired_before_its_step_could_start_is_asked_again() {
    let rig = Rig::start(
        app_target,
        |f| {
            format!(
                "[recovery_defaults]\napproval_ttl = \"1m\"\n\n[recovery.app]\ncooldown = \"1h\"\n\
                 steps = [\n  {},\n]\n",
                record(f, "restore", "approval = true, "),
            )
        },
        Vec::new(),
    )
    .await;
    rig.app.set_status(503);
    let id = rig.incident_of("app").await;
    let ids = id.to_string();
    rig.wait_incident("awaiting approval", id, |i| {
        i["phase"] == "AWAITING_APPROVAL"
    })
    .await;
    // Maintenance first, so that the approved step cannot start.
    table(
        "operator",
        &rig.eps,
        &["maintenance", "on", "--reason", "db upgrade", "--for", "1h"],
    )
    .await;
    let approved = json("operator", &rig.eps, &["approve", &ids]).await;
    let until = unix_ms(&approved["until"]);
    // It holds for the leader's approval_ttl (1m), not the default 15m.
    let i = rig.incident(id).await;
    let at = events(&i, "approved")[0]["at_ms"].as_u64().unwrap();
    assert_eq!(until - at, 60_000, "{approved} {i}");
    assert_eq!(unix_ms(&i["step"]["approved_until"]), until, "{i}");
    assert_eq!(i["phase"], "RECOVERING", "{i}");

    // Past its end, with maintenance still on: nothing ran, and the
    // executor has looked since (entries committed after the expiry).
    wait_for(
        "the approval to expire",
        Duration::from_secs(90),
        || async {
            let now = now_ms();
            if now > until {
                Ok(())
            } else {
                Err(format!("{} ms left", until - now))
            }
        },
    )
    .await;
    // The executor looked every 500 ms meanwhile; one entry committed
    // after the expiry shows it looked once more since.
    rig.executor_looked(1).await;
    assert!(rig.effects().is_empty(), "{:?}", rig.effects());

    // Maintenance off: the expired approval does not let the step run;
    // the incident asks again.
    table("operator", &rig.eps, &["maintenance", "off"]).await;
    let again = rig
        .wait_incident("asking again", id, |i| {
            i["phase"] == "AWAITING_APPROVAL" && events(i, "awaiting_approval").len() == 2
        })
        .await;
    let asked = events(&again, "awaiting_approval");
    assert_eq!(asked[1]["text"], "the approval expired", "{again}");
    assert_eq!(asked[1]["step"], 1, "{again}");
    assert_eq!(again["step"]["approved_until"], Value::Null, "{again}");
    // Asking again is what the executor decided instead of running the
    // step (an approval is cleared only by asking or by the step's
    // outcome): it did not run.
    assert!(rig.effects().is_empty(), "{:?}", rig.effects());

    // A fresh approval runs it.
    json("operator", &rig.eps, &["approve", &ids]).await;
    let done = rig
        .wait_incident("the attempt ended", id, |i| {
            events(i, "attempt_done").len() == 1
        })
        .await;
    assert_eq!(rig.effects().len(), 1, "{:?}", rig.effects());
    assert_eq!(
        kinds(&done),
        pairs(&[
            ("detected", 0),
            ("attempt", 0),
            ("awaiting_approval", 1),
            ("approved", 1),
            ("awaiting_approval", 1),
            ("approved", 1),
            ("intent", 1),
            ("started", 1),
            ("done", 1),
            ("attempt_done", 0),
        ]),
        "{done}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_pauses_recovery_but_not_detection() {
    let rig = Rig::start(
        app_target,
        |f| {
            // Step 1 says it started, then holds until the file `go` exists.
            let go = f.with_file_name("go");
            format!(
                "[recovery.app]\ncooldown = \"1h\"\nsteps = [\n  {{ action = \"exec\", argv = \
                 [\"/bin/sh\", \"-c\", \"echo stop $FAXI_INCIDENT >> {}; \
                 while [ ! -e {} ]; do sleep 0.05; done\"] }},\n  {},\n]\n",
                f.display(),
                go.display(),
                record(f, "restart", "")
            )
        },
        Vec::new(),
    )
    .await;
    let on = table(
        "operator",
        &rig.eps,
        &["maintenance", "on", "--reason", "db upgrade", "--for", "1h"],
    )
    .await;
    assert!(on.starts_with("MAINTENANCE ON until"), "{on}");
    rig.app.set_status(503);
    // Detection goes on: the app is DOWN everywhere and its incident opens.
    rig.c.wait_state(&[0, 1, 2], "app", "DOWN", LONG).await;
    let id = rig.incident_of("app").await;
    // No attempt begins, no step runs, however often the executor looks.
    rig.executor_looked(3).await;
    let i = rig.incident(id).await;
    assert_eq!(i["phase"], "OPEN", "{i}");
    assert_eq!(i["attempts"], 0, "{i}");
    assert_eq!(i["step"], Value::Null, "{i}");
    assert_eq!(kinds(&i), pairs(&[("detected", 0)]), "{i}");
    assert!(rig.effects().is_empty(), "{:?}", rig.effects());
    let list = rig.json("reader", &["incidents"]).await;
    assert_eq!(list["maintenance"]["on"], true, "{list}");
    assert_eq!(list["maintenance"]["reason"], "db upgrade", "{list}");

    // Maintenance off: the plan runs.
    let off_at = now_ms();
    table("operator", &rig.eps, &["maintenance", "off"]).await;
    wait_for("step 1 started", LONG, || async {
        match rig.effects().as_slice() {
            [] => Err("not yet".to_owned()),
            lines => Ok(lines.to_vec()),
        }
    })
    .await;
    let i = rig.incident(id).await;
    let began = events(&i, "attempt")[0]["at_ms"].as_u64().unwrap();
    assert!(
        began >= off_at,
        "attempt at {began}, maintenance off at {off_at}"
    );

    // On again while step 1 runs: step 1 finishes, step 2 does not start.
    table(
        "operator",
        &rig.eps,
        &["maintenance", "on", "--reason", "db upgrade", "--for", "1h"],
    )
    .await;
    std::fs::write(rig.effects.with_file_name("go"), "").unwrap();
    rig.wait_incident("step 1 done", id, |i| {
        kinds(i).contains(&("done".to_owned(), 1))
    })
    .await;
    rig.executor_looked(3).await;
    let i = rig.incident(id).await;
    assert_eq!(i["phase"], "RECOVERING", "{i}");
    assert_eq!(i["step"]["index"], 2, "{i}");
    assert_eq!(i["pending"], Value::Null, "{i}");
    assert_eq!(events(&i, "intent").len(), 1, "{i}");
    let lines = rig.effects();
    assert_eq!(lines, [["stop".to_owned(), id.to_string()]], "{lines:?}");

    // Off: the attempt goes on.
    table("operator", &rig.eps, &["maintenance", "off"]).await;
    let done = rig
        .wait_incident("the attempt ended", id, |i| {
            events(i, "attempt_done").len() == 1
        })
        .await;
    let lines = rig.effects();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[1][..2], ["restart".to_owned(), id.to_string()]);
    assert_eq!(done["attempts"], 1, "{done}");
    assert_eq!(
        kinds(&done),
        pairs(&[
            ("detected", 0),
            ("attempt", 0),
            ("intent", 1),
            ("started", 1),
            ("done", 1),
            ("intent", 2),
            ("started", 2),
            ("done", 2),
            ("attempt_done", 0),
        ]),
        "{done}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_are_spaced_by_the_cooldown_then_escalated_once_with_a_webhook() {
    let hook = AppStub::start().await;
    let cooldown_ms = 3_000;
    let rig = Rig::start(
        app_target,
        |f| {
            format!(
                "[recovery_defaults]\nnotify_url_env = \"FAXI_TEST_WEBHOOK\"\n\n[recovery.app]\n\
                 cooldown = \"{cooldown_ms}ms\"\nmax_attempts = 2\nattempt_window = \"1h\"\n\
                 steps = [\n  {},\n]\n",
                record(f, "restart", "")
            )
        },
        vec![(
            "FAXI_TEST_WEBHOOK".to_owned(),
            hook.url_for("/hooks/escalations?token=t0ps3cret"),
        )],
    )
    .await;
    // The step "restarts" the app, which stays down.
    rig.app.set_status(503);
    let id = rig.incident_of("app").await;
    let escalated = wait_for("the incident escalated", LONG, || async {
        let i = rig.incident(id).await;
        if i["phase"] == "ESCALATED" {
            Ok(i)
        } else {
            Err(format!("{i}"))
        }
    })
    .await;
    assert_eq!(escalated["attempts"], 2, "{escalated}");
    assert_eq!(
        kinds(&escalated),
        pairs(&[
            ("detected", 0),
            ("attempt", 0),
            ("intent", 1),
            ("started", 1),
            ("done", 1),
            ("attempt_done", 0),
            ("attempt", 0),
            ("intent", 1),
            ("started", 1),
            ("done", 1),
            ("attempt_done", 0),
            ("escalated", 0),
        ]),
        "{escalated}"
    );
    // The cooldown visibly spaces the attempts (and the escalation, which
    // is decided when a third attempt could start).
    let at = |kind: &str, k: usize| events(&escalated, kind)[k]["at_ms"].as_u64().unwrap();
    assert!(
        at("attempt", 1) >= at("attempt_done", 0) + cooldown_ms,
        "{escalated}"
    );
    assert!(
        at("escalated", 0) >= at("attempt_done", 1) + cooldown_ms,
        "{escalated}"
    );
    let reason = events(&escalated, "escalated")[0]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(reason.starts_with("2 attempts of plan app"), "{reason}");

    // One webhook, with the incident, its target, the fencing token and
    // what happened.
    let posted = wait_for("the escalation webhook", LONG, || async {
        match posts(&hook).as_slice() {
            [] => Err("nothing posted yet".to_owned()),
            p => Ok(p.to_vec()),
        }
    })
    .await;
    assert_eq!(posted.len(), 1, "{posted:?}");
    let post = &posted[0];
    assert_eq!(post.path, "/hooks/escalations?token=t0ps3cret");
    let body = post.json();
    assert_eq!(body["incident"], id, "{body}");
    assert_eq!(body["target"], "app", "{body}");
    assert_eq!(body["message"], format!("escalated: {reason}"), "{body}");
    let (term, index) = (
        body["fence"]["term"].as_u64().unwrap(),
        body["fence"]["index"].as_u64().unwrap(),
    );
    let (_, leader_term) = rig.c.wait_leader(&[0, 1, 2], LONG).await;
    assert_eq!(term, leader_term, "{body}");
    // The escalation's own entry, after the last step's intent.
    let (_, last_intent) = fence_of(events(&escalated, "intent")[1]);
    assert!(index > last_intent, "{body}");
    assert_eq!(post.header("x-faxi-fence-term"), Some(&*term.to_string()));
    assert_eq!(post.header("x-faxi-fence-index"), Some(&*index.to_string()));
    assert_eq!(post.header("x-faxi-incident"), Some(&*id.to_string()));

    // No third attempt, and no second webhook, well past another cooldown
    // with the executor looking on every entry.
    let quiet_until = now_ms() + cooldown_ms;
    rig.executor_looked(3).await;
    wait_for("another cooldown to pass", LONG, || async {
        if now_ms() > quiet_until {
            Ok(())
        } else {
            Err("not yet".to_owned())
        }
    })
    .await;
    rig.executor_looked(1).await;
    let lines = rig.effects();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(posts(&hook).len(), 1, "{:?}", posts(&hook));
    let after = rig.incident(id).await;
    assert_eq!(after["phase"], "ESCALATED", "{after}");
    assert_eq!(after["attempts"], 2, "{after}");
    assert_eq!(kinds(&after), kinds(&escalated), "{after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_records_what_would_run_and_runs_nothing() {
    let rig = Rig::start(
        app_target,
        |f| {
            format!(
                "[recovery.app]\ncooldown = \"1h\"\ndry_run = true\nsteps = [\n  {},\n  {},\n]\n\
                 finally = [\n  {},\n]\n",
                record(f, "restart", ""),
                // A dry run asks no approval: nothing would be run anyway.
                record(f, "restore", "approval = true, "),
                record(f, "start", ""),
            )
        },
        Vec::new(),
    )
    .await;
    rig.app.set_status(503);
    let id = rig.incident_of("app").await;
    let done = rig
        .wait_incident("the attempt ended", id, |i| {
            events(i, "attempt_done").len() == 1
        })
        .await;
    assert_eq!(
        kinds(&done),
        pairs(&[
            ("detected", 0),
            ("attempt", 0),
            ("intent", 1),
            ("started", 1),
            ("dry_run", 1),
            ("intent", 2),
            ("started", 2),
            ("dry_run", 2),
            ("intent", 3),
            ("started", 3),
            ("dry_run", 3),
            ("attempt_done", 0),
        ]),
        "{done}"
    );
    assert!(
        events(&done, "attempt")[0]["text"]
            .as_str()
            .unwrap()
            .ends_with("(dry run)"),
        "{done}"
    );
    for (e, word) in events(&done, "dry_run")
        .iter()
        .zip(["restart", "restore", "start"])
    {
        let text = e["text"].as_str().unwrap();
        assert!(
            text.starts_with("would run: exec /bin/sh -c echo ") && text.contains(word),
            "{text}"
        );
    }
    assert_eq!(done["phase"], "OPEN", "{done}");
    assert_eq!(done["step"], Value::Null, "{done}");
    // Nothing ran, then or since.
    rig.executor_looked(3).await;
    assert!(rig.effects().is_empty(), "{:?}", rig.effects());
    let steps = faxi_tests::metric(
        &faxi_tests::http_get(rig.c.nodes[0].metrics, "/metrics")
            .await
            .unwrap(),
        "faxi_recovery_steps_total",
        &[("plan", "app"), ("result", "done")],
    );
    assert_eq!(steps, None, "a step counted as done on node 1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notify_step_posts_its_json_with_the_fencing_token() {
    let hook = AppStub::start().await;
    let rig = Rig::start(
        app_target,
        |_| {
            "[recovery.app]\ncooldown = \"1h\"\nsteps = [\n  { action = \"notify\", \
             url_env = \"FAXI_TEST_PAGER\", message = \"app is down: paging on-call\" },\n]\n"
                .to_owned()
        },
        vec![("FAXI_TEST_PAGER".to_owned(), hook.url_for("/page"))],
    )
    .await;
    rig.app.set_status(503);
    let id = rig.incident_of("app").await;
    let done = rig
        .wait_incident("the attempt ended", id, |i| {
            events(i, "attempt_done").len() == 1
        })
        .await;
    assert_eq!(
        kinds(&done),
        pairs(&[
            ("detected", 0),
            ("attempt", 0),
            ("intent", 1),
            ("started", 1),
            ("done", 1),
            ("attempt_done", 0),
        ]),
        "{done}"
    );
    let posted = posts(&hook);
    assert_eq!(posted.len(), 1, "{posted:?}");
    let post = &posted[0];
    assert_eq!(post.path, "/page");
    assert_eq!(post.header("content-type"), Some("application/json"));
    let (term, index) = fence_of(events(&done, "intent")[0]);
    let body = post.json();
    assert_eq!(
        body,
        serde_json::json!({
            "incident": id,
            "target": "app",
            "plan": "app",
            "step": 1,
            "fence": { "term": term, "index": index },
            "message": "app is down: paging on-call",
        })
    );
    assert_eq!(post.header("x-faxi-fence-term"), Some(&*term.to_string()));
    assert_eq!(post.header("x-faxi-fence-index"), Some(&*index.to_string()));
    // The step's outcome names the variable, never the URL.
    let outcome = events(&done, "done")[0]["text"].as_str().unwrap();
    assert!(outcome.contains("$FAXI_TEST_PAGER"), "{outcome}");
    assert!(!outcome.contains("/page"), "{outcome}");
}

/// `app1` and `app2`, both on the stub (so both fail at once), both
/// recovered by plan `slow`.
fn two_targets(_id: u64, _zone: &str, ctx: &Ctx) -> String {
    let svc = ctx.service.unwrap();
    format!(
        "[[targets]]\nname = \"app1\"\nkind = \"http\"\nurl = \"http://{svc}/one\"\n\
         recovery = \"slow\"\n\n[[targets]]\nname = \"app2\"\nkind = \"http\"\n\
         url = \"http://{svc}/two\"\nrecovery = \"slow\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_max_concurrent_1_two_targets_down_at_once_are_recovered_one_after_the_other() {
    let rig = Rig::start(
        two_targets,
        |f| {
            // The step writes when it starts and when it ends (ns), 2 s apart.
            let f = f.display();
            format!(
                "[recovery_defaults]\nmax_concurrent = 1\n\n[recovery.slow]\ncooldown = \"1h\"\n\
                 steps = [\n  {{ action = \"exec\", argv = [\"/bin/sh\", \"-c\", \
                 \"echo start $FAXI_INCIDENT $(date +%s%N) >> {f}; sleep 2; \
                 echo end $FAXI_INCIDENT $(date +%s%N) >> {f}\"] }},\n]\n"
            )
        },
        Vec::new(),
    )
    .await;
    rig.app.set_status(503);
    let one = rig.incident_of("app1").await;
    let two = rig.incident_of("app2").await;
    assert_ne!(one, two);
    for id in [one, two] {
        rig.wait_incident("its attempt ended", id, |i| {
            events(i, "attempt_done").len() == 1
        })
        .await;
    }
    // Each incident's run as (start, end), in start order: the second
    // starts after the first ended.
    let lines = rig.effects();
    assert_eq!(lines.len(), 4, "{lines:?}");
    let when = |word: &str, id: u64| -> u128 {
        lines
            .iter()
            .find(|l| l[0] == word && l[1] == id.to_string())
            .unwrap_or_else(|| panic!("no {word} of {id}: {lines:?}"))[2]
            .parse()
            .unwrap()
    };
    let mut runs = [
        (when("start", one), when("end", one)),
        (when("start", two), when("end", two)),
    ];
    runs.sort_unstable();
    assert!(
        runs[0].1 <= runs[1].0,
        "the attempts overlapped: {runs:?} ({lines:?})"
    );
    for (start, end) in runs {
        assert!(end - start >= 2_000_000_000, "{lines:?}");
    }
}
