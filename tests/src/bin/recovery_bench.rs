//! Recovery benchmark (BENCHMARKS.md, "Recovery").
//!
//! - `effect`: three real node processes on loopback (mutual TLS, default
//!   cluster timing) probing an HTTP stub; a plan of one `exec` step that
//!   writes the incident, a microsecond timestamp (`$EPOCHREALTIME`) and
//!   its node's pid. The stub fails at a random point of the probe cycle;
//!   the time is DOWN applied on the leader (its `agreed state changed`
//!   log line, microseconds) → the step's timestamp: DOWN committed → first
//!   side effect. Broken down from the leader's log and the incident's
//!   timeline: → the attempt begun (the `Begin` proposal, leader clock,
//!   ms), → the step's intent proposed, → `recovery step starts` (intent
//!   committed and leadership confirmed), → the process ran.
//! - `rto`: the same cluster shape probing a busybox httpd container
//!   at its published port, the plan `docker.restart` then
//!   `wait_healthy`. The probe is `http` (a file the httpd serves), not
//!   `tcp`: the engine's port proxy accepts connections as soon as the
//!   container's network is up, before the process inside listens, so a
//!   TCP connect can say UP before the server is. The container is killed (`docker kill`) at a random
//!   point of the probe cycle; the recovery time is broken into detect
//!   (kill → first node's DOWN verdict), agree (→ DOWN applied on the
//!   leader), act (→ the container started again, the engine's
//!   `StartedAt`) and healthy (→ UP applied on the leader); the restart
//!   call's own return and the incident's recovery time are shown too.
//!
//! Run it with `tests/bench-recovery` (release build). It prints Markdown.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use faxi_proto::v1 as pb;
use faxi_tests::cluster::{Cluster, Ctx, Spec};
use faxi_tests::docker::{TestContainer, docker_or_skip};
use faxi_tests::http::AppStub;
use faxi_tests::{free_port, wait_for};
use rand::Rng;

const LONG: Duration = Duration::from_secs(60);

/// The effect plan's cooldown: the fault stays on until the first side
/// effect is seen, so a second attempt of the same incident must not begin
/// meanwhile.
const COOLDOWN_MS: u64 = 2000;

#[derive(Debug, Parser)]
#[command(about = "Measure DOWN committed → first recovery side effect, and a container's RTO")]
struct Args {
    /// Which parts to run, comma-separated: effect, rto.
    #[arg(long, value_delimiter = ',', default_value = "effect,rto")]
    parts: Vec<String>,
    /// Faults timed in the effect run.
    #[arg(long, default_value_t = 50)]
    faults: usize,
    /// Container kills timed in the rto run.
    #[arg(long, default_value_t = 12)]
    kills: usize,
    /// Print every sample.
    #[arg(long)]
    verbose: bool,
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn summary(mut v: Vec<f64>) -> String {
    v.sort_by(f64::total_cmp);
    format!(
        "p50 {:.1}, p90 {:.1}, p99 {:.1}, max {:.1} (n={})",
        pct(&v, 0.5),
        pct(&v, 0.9),
        pct(&v, 0.99),
        v.last().copied().unwrap_or(f64::NAN),
        v.len(),
    )
}

/// Unix µs.
fn us(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_micros() as i64
}

/// A log line's time, Unix µs.
fn line_us(l: &serde_json::Value) -> Option<i64> {
    l["timestamp"]
        .as_str()
        .and_then(|t| humantime::parse_rfc3339(t).ok())
        .map(us)
}

/// The first line of node `i`'s log at or after `since` (µs) that `pick`
/// takes: its time, µs.
fn first_line(
    c: &Cluster,
    i: usize,
    since: i64,
    pick: impl Fn(&serde_json::Value) -> bool,
) -> Option<i64> {
    c.log_lines(i)
        .iter()
        .filter(|l| pick(l))
        .filter_map(line_us)
        .find(|t| *t >= since)
}

/// `target`'s agreed state changing to `to`.
fn agreed(target: &'static str, to: &'static str) -> impl Fn(&serde_json::Value) -> bool {
    move |l| l["message"] == "agreed state changed" && l["target_name"] == target && l["to"] == to
}

/// A node's own DOWN verdict on `target`.
fn verdict_down(target: &'static str) -> impl Fn(&serde_json::Value) -> bool {
    move |l| l["message"] == "verdict changed" && l["target_name"] == target && l["to"] == "DOWN"
}

/// An executor line `message` about incident `id`.
fn executor(message: &'static str, id: u64) -> impl Fn(&serde_json::Value) -> bool {
    move |l| l["message"] == message && l["incident"] == id
}

/// Incident `id` as node `i` has it (its own view).
async fn incident(c: &Cluster, i: usize, id: u64) -> Result<pb::Incident, String> {
    let mut client = c.client(i);
    let r = client
        .incident(pb::IncidentRequest {
            id,
            allow_stale: true,
        })
        .await
        .map_err(|e| e.to_string())?;
    r.into_inner().incident.ok_or_else(|| "no incident".into())
}

/// Waits until incident `id` is finished on node `i`; returns it.
async fn wait_finished(c: &Cluster, i: usize, id: u64) -> pb::Incident {
    wait_for(&format!("incident {id} finished"), LONG, || async {
        let inc = incident(c, i, id).await?;
        if inc.finished {
            Ok(inc)
        } else {
            Err(format!("phase {}", inc.phase))
        }
    })
    .await
}

/// Waits until node `i` counts no open incident.
async fn wait_none_open(c: &Cluster, i: usize) {
    wait_for("no open incident", LONG, || async {
        let mut client = c.client(i);
        let r = client
            .incidents(pb::IncidentsRequest {
                allow_stale: true,
                include_finished: false,
                finished_limit: 0,
            })
            .await
            .map_err(|e| e.to_string())?
            .into_inner();
        if r.incidents.is_empty() {
            Ok(())
        } else {
            Err(format!("{} open", r.incidents.len()))
        }
    })
    .await;
}

/// The first timeline event of `kind` (for `step`, 1-based, when not 0).
fn event_ms(i: &pb::Incident, kind: &str, step: u32) -> Option<i64> {
    i.timeline
        .iter()
        .find(|e| e.kind == kind && (step == 0 || e.step == step))
        .map(|e| e.at_ms as i64)
}

/// Default cluster timing (tick 100 ms, election 10 ticks, refresh 5 s).
fn spec(probe_defaults: &str, extra: String) -> Spec {
    let mut spec = Spec::zones(3);
    spec.cluster =
        "tick = \"100ms\"\nelection_ticks = 10\nheartbeat_ticks = 1\nrefresh = \"5s\"\n".into();
    spec.probe_defaults = probe_defaults.into();
    spec.extra = extra;
    spec
}

fn http_targets(_: u64, _: &str, ctx: &Ctx) -> String {
    format!(
        "[[targets]]\nname = \"app\"\nkind = \"http\"\nurl = \"http://{}/health\"\nrecovery = \"app\"\n",
        ctx.service.unwrap()
    )
}

/// The lines the effect step wrote: (incident, Unix µs, node pid).
fn effects(path: &Path) -> Vec<(u64, i64, u32)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (s, frac) = f.get(1)?.split_once('.')?;
            let at = s.parse::<i64>().ok()? * 1_000_000 + frac.parse::<i64>().ok()?;
            Some((f[0].parse().ok()?, at, f.get(2)?.parse().ok()?))
        })
        .collect()
}

async fn effect(args: &Args) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("effects");
    let app = AppStub::start().await;
    // bash's $EPOCHREALTIME: the time, µs, with no second process.
    let extra = format!(
        "[recovery.app]\ncooldown = \"{COOLDOWN_MS}ms\"\nmax_attempts = 1000\nsteps = [\n  {{ action = \"exec\", \
         argv = [\"/bin/bash\", \"-c\", \"echo $FAXI_INCIDENT $EPOCHREALTIME $PPID >> {}\"] }},\n]\n",
        file.display()
    );
    let mut s = spec(
        "interval = \"200ms\"\ntimeout = \"150ms\"\nfall = 2\nrise = 1\n",
        extra,
    );
    s.targets = http_targets;
    let ctx = Ctx {
        service: Some(app.addr),
        closed: None,
    };
    let c = Cluster::start(&s, &ctx).await;
    let (mut total, mut begin, mut intent, mut confirm, mut spawn) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut slow = Vec::new();
    let mut last: Option<(u64, i64)> = None;
    for _ in 0..args.faults {
        c.wait_state(&[0, 1, 2], "app", "UP", LONG).await;
        wait_none_open(&c, 0).await;
        // The cooldown after the previous attempt is over (else it, not
        // the executor, would set when the next attempt begins), then a
        // random point of the probe cycle.
        let mut pause = rand::rng().random_range(0..200);
        if let Some((_, at)) = last {
            let since_ms = (us(SystemTime::now()) - at) / 1000;
            pause += u64::try_from(COOLDOWN_MS as i64 + 500 - since_ms).unwrap_or(0);
        }
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let fault = us(SystemTime::now());
        app.set_status(503);
        let last_id = last.map_or(0, |(id, _)| id);
        // The first side effect of the incident this fault opens.
        let (id, at, pid) = wait_for("the step's side effect", LONG, || async {
            effects(&file)
                .into_iter()
                .find(|(id, _, _)| *id > last_id)
                .ok_or_else(|| "not yet".to_owned())
        })
        .await;
        app.set_status(200);
        last = Some((id, at));
        let node = (0..3)
            .find(|i| c.pid(*i) == Some(pid))
            .expect("the step ran on no node of the cluster");
        let inc = wait_finished(&c, node, id).await;
        let down = first_line(&c, node, fault, agreed("app", "DOWN")).unwrap();
        let starts = first_line(&c, node, fault, executor("recovery step starts", id)).unwrap();
        let ms = |a: i64, b: i64| (b - a) as f64 / 1e3;
        let attempt = event_ms(&inc, "attempt", 0).unwrap() * 1000;
        let intent_at = event_ms(&inc, "intent", 1).unwrap() * 1000;
        total.push(ms(down, at));
        begin.push(ms(down, attempt));
        intent.push(ms(attempt, intent_at));
        confirm.push(ms(intent_at, starts));
        spawn.push(ms(starts, at));
        if args.verbose || ms(down, at) > 50.0 {
            slow.push(format!(
                "incident {id}: {:.1} ms (→ attempt {:.0}, → intent {:.0}, → starts {:.1}, → effect {:.1})",
                ms(down, at),
                ms(down, attempt),
                ms(attempt, intent_at),
                ms(intent_at, starts),
                ms(starts, at)
            ));
        }
    }
    let mut out = format!(
        "| DOWN applied on the leader → the step's side effect (ms) | {} |\n\
         | of which: → the attempt begun (Begin proposed; ms clock) | {} |\n\
         | of which: → the step's intent proposed (Begin committed; ms clock) | {} |\n\
         | of which: → `recovery step starts` (intent committed, read index) | {} |\n\
         | of which: → the process wrote its timestamp (spawn of bash) | {} |\n",
        summary(total),
        summary(begin),
        summary(intent),
        summary(confirm),
        summary(spawn),
    );
    if !slow.is_empty() {
        out.push_str("\nSamples over 50 ms (or all, with --verbose):\n\n");
        for s in slow {
            out.push_str(&format!("- {s}\n"));
        }
    }
    out
}

async fn rto(args: &Args) -> String {
    if !docker_or_skip("the rto part").await {
        return "rto: skipped (FAXI_SKIP_DOCKER=1)\n".into();
    }
    let port = free_port();
    let app = TestContainer::httpd("bench-app", port).await;
    let extra = format!(
        "[[targets]]\nname = \"app\"\nkind = \"http\"\nurl = \"http://127.0.0.1:{port}/etc/passwd\"\n\
         recovery = \"app\"\n\n\
         [recovery.app]\ncooldown = \"1ms\"\nmax_attempts = 1000\nsteps = [\n  \
         {{ action = \"docker.restart\", container = \"{}\" }},\n  \
         {{ action = \"wait_healthy\", target = \"app\", timeout = \"30s\" }},\n]\n",
        app.name
    );
    let s = spec(
        "interval = \"500ms\"\ntimeout = \"400ms\"\nfall = 3\nrise = 2\n",
        extra,
    );
    let c = Cluster::start(&s, &Ctx::default()).await;
    let mut rows: Vec<[f64; 9]> = Vec::new();
    let mut last_id = 0;
    for _ in 0..args.kills {
        c.wait_state(&[0, 1, 2], "app", "UP", LONG).await;
        wait_none_open(&c, 0).await;
        let pause = rand::rng().random_range(500..1000);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let fault = us(SystemTime::now());
        app.kill().await;
        // The incident this kill opens.
        let id = wait_for("the incident", LONG, || async {
            let mut client = c.client(0);
            let r = client
                .incidents(pb::IncidentsRequest {
                    allow_stale: true,
                    include_finished: true,
                    finished_limit: 0,
                })
                .await
                .map_err(|e| e.to_string())?
                .into_inner();
            r.incidents
                .iter()
                .map(|i| i.id)
                .filter(|id| *id > last_id)
                .max()
                .ok_or_else(|| "none yet".to_owned())
        })
        .await;
        last_id = id;
        let inc = wait_finished(&c, 0, id).await;
        app.wait_running(true, LONG).await;
        // The node that ran the restart.
        let node = (0..3)
            .find(|i| first_line(&c, *i, fault, executor("recovery step starts", id)).is_some())
            .expect("no node ran the restart");
        let mut verdicts: Vec<i64> = (0..3)
            .filter_map(|i| first_line(&c, i, fault, verdict_down("app")))
            .collect();
        verdicts.sort_unstable();
        let detect = verdicts[0];
        // The verdict that made a quorum of zones (the second of three).
        let quorum = verdicts[1];
        let down = first_line(&c, node, fault, agreed("app", "DOWN")).unwrap();
        let starts = first_line(&c, node, fault, executor("recovery step starts", id)).unwrap();
        let ended = first_line(&c, node, fault, executor("recovery step ended", id)).unwrap();
        let started = us(app.started_at().await);
        let up = first_line(&c, node, down, agreed("app", "UP")).unwrap();
        let ms = |a: i64, b: i64| (b - a) as f64 / 1e3;
        rows.push([
            ms(fault, detect),
            ms(detect, down),
            ms(down, started),
            ms(started, up),
            ms(fault, up),
            ms(down, starts),
            ms(starts, ended),
            inc.recover_ms as f64,
            ms(quorum, down),
        ]);
    }
    let col = |k: usize| rows.iter().map(|r| r[k]).collect::<Vec<f64>>();
    let mut out = format!(
        "| detect: kill → first node's DOWN verdict (ms) | {} |\n\
         | agree: → DOWN applied on the leader | {} |\n\
         | (of agree: the verdict that made the quorum → DOWN applied) | {} |\n\
         | act: → the container started again (engine's StartedAt) | {} |\n\
         | healthy: → UP applied on the leader | {} |\n\
         | total: kill → UP applied on the leader | {} |\n\
         | (DOWN applied → `recovery step starts` on the leader) | {} |\n\
         | (the restart call, step starts → step ended) | {} |\n\
         | (the incident's own recovery time, opened → resolved, log time) | {} |\n",
        summary(col(0)),
        summary(col(1)),
        summary(col(8)),
        summary(col(2)),
        summary(col(3)),
        summary(col(4)),
        summary(col(5)),
        summary(col(6)),
        summary(col(7)),
    );
    if args.verbose {
        out.push_str("\nSamples (detect, agree, act, healthy, total, →starts, restart call, recover_ms, quorum→agreed):\n\n");
        for r in &rows {
            out.push_str(&format!("- {r:.1?}\n"));
        }
    }
    out
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    for part in &args.parts {
        println!("### {part}\n\n| measure | result |\n|---|---|");
        let text = match part.as_str() {
            "effect" => effect(&args).await,
            "rto" => rto(&args).await,
            other => panic!("unknown part {other}: effect, rto"),
        };
        println!("{text}");
    }
}
