//! Consensus benchmark (BENCHMARKS.md).
//!
//! - `commit` and `throughput`: three raft drivers in this process, each
//!   with its own sled log in a temp dir (every write fsynced) and the real
//!   tonic transport over loopback. `commit` proposes one observation at a
//!   time on the leader and times propose → applied; `throughput` keeps
//!   several batched proposals in flight, each carrying verdict changes of
//!   many targets, and counts committed verdict changes (transitions) per
//!   second.
//! - `failover` and `detection`: three real node processes on loopback.
//!   `failover` kills the leader (kill -9) and times until both survivors
//!   name the same new leader. `detection` makes an HTTP target fail at a
//!   random moment and times until every node's agreed state is DOWN,
//!   against the probe-side floor `fall × interval`.
//! - `status`: three real node processes on loopback, each with N tcp
//!   targets (one local listener, interval 5 s), all agreed UP; times the
//!   `Status` RPC over one kept-open gRPC channel: confirmed (the default,
//!   a read-index round) and `allow_stale`, in full, and filtered as
//!   `faxictl status` asks by default (targets not UP); then `faxictl
//!   status` as a whole process.
//!
//! Run it with `tests/bench-mesh` (release build). It prints Markdown.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::sync_channel;
use std::time::Duration;

use clap::Parser;
use faxi_proto::v1 as pb;
use faxi_tests::cluster::{Cluster, Ctx, Spec};
use faxi_tests::http::AppStub;
use faxi_tests::wait_for;
use faxi_watchdog::api::Api;
use faxi_watchdog::mesh::driver::{self, DriverConfig, Mesh};
use faxi_watchdog::mesh::state::{Command, Member, Seen, State};
use faxi_watchdog::mesh::storage::SledStorage;
use faxi_watchdog::mesh::transport::Transport;
use rand::Rng;
use tokio::time::Instant;

#[derive(Debug, Parser)]
#[command(about = "Measure commit latency, transitions/s, failover and detection")]
struct Args {
    /// Which parts to run, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "commit,throughput,failover,detection,status"
    )]
    parts: Vec<String>,
    /// Target counts of the status run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "100,10000")]
    status_targets: Vec<usize>,
    /// Status calls timed per case (full answers at 10,000 targets: a tenth).
    #[arg(long, default_value_t = 1000)]
    status_calls: usize,
    /// Single proposals timed.
    #[arg(long, default_value_t = 2000)]
    commits: usize,
    /// Seconds of the throughput run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Verdict changes per proposal in the throughput run.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Proposals in flight in the throughput run.
    #[arg(long, default_value_t = 8)]
    inflight: usize,
    /// Leader kills timed.
    #[arg(long, default_value_t = 20)]
    failovers: usize,
    /// Faults timed in the detection run.
    #[arg(long, default_value_t = 20)]
    detections: usize,
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
        "n={} p50={:.2} p90={:.2} p99={:.2} max={:.2}",
        v.len(),
        pct(&v, 0.5),
        pct(&v, 0.9),
        pct(&v, 0.99),
        v.last().copied().unwrap_or(f64::NAN)
    )
}

/// Three drivers in this process with real sled logs and the tonic transport.
async fn in_process_mesh(dir: &std::path::Path) -> Vec<Mesh> {
    let listeners: Vec<tokio::net::TcpListener> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        v
    };
    let peers: Vec<(u64, Member)> = listeners
        .iter()
        .enumerate()
        .map(|(i, l)| {
            (
                i as u64 + 1,
                Member {
                    zone: format!("zone-{}", (b'a' + i as u8) as char),
                    addr: l.local_addr().unwrap().to_string(),
                    instance: 0,
                },
            )
        })
        .collect();
    let mut meshes = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let id = i as u64 + 1;
        let storage = SledStorage::open(&dir.join(format!("n{id}"))).unwrap();
        if id == 1 {
            driver::init(&storage, 1, &peers, driver::new_cluster_id()).unwrap();
        }
        let (tx, rx) = sync_channel(driver::INBOX);
        let transport = Transport::new(id, tokio::runtime::Handle::current(), tx.clone(), None);
        let cfg = DriverConfig {
            id,
            peers: peers.clone(),
            tick: Duration::from_millis(100),
            election_ticks: 10,
            heartbeat_ticks: 1,
            snapshot_entries: faxi_watchdog::config::DEFAULT_SNAPSHOT_ENTRIES,
            snapshot_bytes: faxi_watchdog::config::DEFAULT_SNAPSHOT_BYTES,
            nonce: rand::random(),
        };
        let (mesh, _thread) = driver::start(cfg, storage, transport, (tx, rx)).unwrap();
        let api = Api::new(
            mesh.clone(),
            id,
            peers[i].1.zone.clone(),
            BTreeMap::new(),
            None,
        );
        let (_, peer_svc) = api.services();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(peer_svc)
                .serve_with_incoming(faxi_watchdog::api::incoming(listener, None)),
        );
        meshes.push(mesh);
    }
    meshes
}

async fn leader_of(meshes: &[Mesh]) -> usize {
    wait_for("a leader", Duration::from_secs(20), || async {
        let l = meshes[0].read().info.leader;
        let agreed = meshes.iter().all(|m| m.read().info.leader == l);
        // Every node a voter: the learners of the bootstrap were promoted.
        let voters = meshes
            .iter()
            .all(|m| m.read().info.voters.len() == meshes.len());
        if l != 0 && agreed && voters {
            Ok((l - 1) as usize)
        } else {
            Err("no leader yet".to_owned())
        }
    })
    .await
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

async fn commit_latency(args: &Args) -> String {
    let dir = tempfile::tempdir().unwrap();
    let meshes = in_process_mesh(dir.path()).await;
    let l = leader_of(&meshes).await;
    let node = l as u64 + 1;
    let mut lat = Vec::new();
    for i in 0..args.commits {
        let cmd = Command::Observe {
            node,
            at_ms: now_ms(),
            valid_for_ms: 15_000,
            seen: vec![Seen {
                target: "t".into(),
                verdict: if i.is_multiple_of(2) {
                    State::Down
                } else {
                    State::Up
                },
                latency_us: 100,
                error: None,
            }],
            whole: false,
        };
        let t = Instant::now();
        meshes[l]
            .propose(cmd, Duration::from_secs(5))
            .await
            .unwrap();
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    format!(
        "| single proposal commit (ms), leader, 3 nodes, fsync | {} |\n",
        summary(lat)
    )
}

async fn throughput(args: &Args) -> String {
    let dir = tempfile::tempdir().unwrap();
    let meshes = in_process_mesh(dir.path()).await;
    let l = leader_of(&meshes).await;
    let node = l as u64 + 1;
    let targets = 10_000usize;
    let end = Instant::now() + Duration::from_secs(args.seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..args.inflight {
        let mesh = meshes[l].clone();
        let batch = args.batch;
        tasks.spawn(async move {
            let mut done = 0usize;
            let mut round = 0usize;
            while Instant::now() < end {
                // Each proposal flips `batch` targets' verdicts: every Seen is a change.
                let down = round.is_multiple_of(2);
                let seen = (0..batch)
                    .map(|k| Seen {
                        target: format!("t{}", (w * batch + k) % targets),
                        verdict: if down { State::Down } else { State::Up },
                        latency_us: 100,
                        error: None,
                    })
                    .collect();
                let cmd = Command::Observe {
                    node,
                    at_ms: now_ms(),
                    valid_for_ms: 15_000,
                    seen,
                    whole: false,
                };
                if mesh.propose(cmd, Duration::from_secs(10)).await.is_ok() {
                    done += batch;
                }
                round += 1;
            }
            done
        });
    }
    let start = Instant::now();
    let mut total = 0;
    while let Some(r) = tasks.join_next().await {
        total += r.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    // Every follower applied the same: wait for them to catch up.
    let commit = meshes[l].read().info.commit;
    wait_for("followers apply", Duration::from_secs(60), || async {
        if meshes.iter().all(|m| m.read().info.applied >= commit) {
            Ok(())
        } else {
            Err("behind".into())
        }
    })
    .await;
    format!(
        "| committed verdict changes/s ({} per proposal, {} in flight, {} targets) | {:.0} over {:.1} s |\n",
        args.batch,
        args.inflight,
        targets,
        total as f64 / secs,
        secs
    )
}

fn http_targets(_: u64, _: &str, ctx: &Ctx) -> String {
    format!(
        "[[targets]]\nname = \"app\"\nkind = \"http\"\nurl = \"http://{}/health\"\n",
        ctx.service.unwrap()
    )
}

async fn failover(args: &Args) -> String {
    let app = AppStub::start().await;
    let mut spec = Spec::zones(3);
    spec.cluster =
        "tick = \"100ms\"\nelection_ticks = 10\nheartbeat_ticks = 1\nrefresh = \"1s\"\n".into();
    spec.targets = http_targets;
    let ctx = Ctx {
        service: Some(app.addr),
        closed: None,
    };
    let mut c = Cluster::start(&spec, &ctx).await;
    let mut times = Vec::new();
    // Terms per failover: 1 when the first election wins (no split vote,
    // no failed pre-vote round that moved the term).
    let mut elections: Vec<u64> = Vec::new();
    for _ in 0..args.failovers {
        let (old, old_term) = c.wait_leader(&[0, 1, 2], Duration::from_secs(30)).await;
        let li = c.index(old);
        let rest: Vec<usize> = (0..3).filter(|i| *i != li).collect();
        c.kill(li).await;
        let t = Instant::now();
        loop {
            let mut ls = Vec::new();
            for i in &rest {
                ls.push(
                    c.status(*i)
                        .await
                        .ok()
                        .and_then(|s| s.cluster)
                        .map(|c| (c.leader, c.term)),
                );
            }
            if let [Some((a, ta)), Some((b, _))] = ls[..]
                && a == b
                && a != 0
                && a != old
            {
                elections.push(ta.saturating_sub(old_term));
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        times.push(t.elapsed().as_secs_f64() * 1e3);
        c.restart(li).await;
    }
    let first = elections.iter().filter(|e| **e == 1).count();
    format!(
        "| leader failover (ms), kill -9 → both survivors name the new leader; 100 ms tick, 10 election ticks | {} |\n\
         | elections per failover (terms the new leader's is past the old) | {first} of {} won at the first election; most {} |\n",
        summary(times),
        elections.len(),
        elections.iter().max().copied().unwrap_or(0)
    )
}

/// Log event times (Unix ms) on node `i` after `since`: local verdict
/// changes of `target` to DOWN, and agreed-state changes to DOWN.
fn down_events(c: &Cluster, i: usize, target: &str, since: u64) -> (Option<u64>, Option<u64>) {
    let mut local = None;
    let mut agreed = None;
    for l in c.log_lines(i) {
        let Some(ts) = l["timestamp"]
            .as_str()
            .and_then(|t| humantime::parse_rfc3339(t).ok())
        else {
            continue;
        };
        let ms = ts
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        if ms < since || l["target_name"] != target || l["to"] != "DOWN" {
            continue;
        }
        match l["message"].as_str() {
            Some("verdict changed") => local = local.or(Some(ms)),
            Some("agreed state changed") => agreed = agreed.or(Some(ms)),
            _ => {}
        }
    }
    (local, agreed)
}

async fn detection(args: &Args) -> String {
    let app = AppStub::start().await;
    let mut spec = Spec::zones(3);
    spec.cluster =
        "tick = \"100ms\"\nelection_ticks = 10\nheartbeat_ticks = 1\nrefresh = \"5s\"\n".into();
    spec.probe_defaults = "interval = \"500ms\"\ntimeout = \"400ms\"\nfall = 3\nrise = 2\n".into();
    spec.targets = http_targets;
    let ctx = Ctx {
        service: Some(app.addr),
        closed: None,
    };
    let c = Cluster::start(&spec, &ctx).await;
    let floor_ms = 1500.0;
    let mut total = Vec::new();
    let mut over = Vec::new();
    let mut consensus = Vec::new();
    for _ in 0..args.detections {
        c.wait_state(&[0, 1, 2], "app", "UP", Duration::from_secs(30))
            .await;
        // Fail at a random point of the probe cycle.
        let pause = rand::rng().random_range(0..500);
        tokio::time::sleep(Duration::from_millis(500 + pause)).await;
        let fault_ms = now_ms();
        app.set_status(500);
        let t = Instant::now();
        loop {
            let mut all = true;
            // Each node's status over its one kept-open channel: polling
            // must not load the nodes.
            for i in 0..3 {
                all &= c.status(i).await.is_ok_and(|s| {
                    s.targets
                        .iter()
                        .any(|t| t.name == "app" && t.state == "DOWN")
                });
            }
            if all {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let ms = t.elapsed().as_secs_f64() * 1e3;
        total.push(ms);
        over.push(ms - floor_ms);
        // From the nodes' own logs: the second local DOWN (what makes a
        // quorum of zones) to the last node applying the agreed DOWN.
        let mut locals = Vec::new();
        let mut agreed = Vec::new();
        for i in 0..3 {
            let (l, a) = down_events(&c, i, "app", fault_ms);
            locals.extend(l);
            agreed.extend(a);
        }
        locals.sort_unstable();
        if let (Some(second), Some(last)) = (locals.get(1), agreed.iter().max())
            && agreed.len() == 3
        {
            consensus.push(last.saturating_sub(*second) as f64);
        }
        app.set_status(200);
    }
    format!(
        "| detection (ms), fault → DOWN applied on all 3 nodes; interval 500 ms, fall 3 | {} |\n\
         | detection minus the floor fall × interval = 1500 ms (ms) | {} |\n\
         | consensus part (ms): second node's local DOWN → agreed DOWN logged on the last node | {} |\n",
        summary(total),
        summary(over),
        summary(consensus)
    )
}

/// Targets per node in the status run (`Spec::targets` is a plain fn).
static STATUS_TARGETS: AtomicUsize = AtomicUsize::new(0);

fn tcp_targets(_: u64, _: &str, ctx: &Ctx) -> String {
    let addr = ctx.service.unwrap();
    let mut out = String::new();
    for i in 0..STATUS_TARGETS.load(Ordering::Relaxed) {
        out.push_str(&format!(
            "[[targets]]\nname = \"t{i}\"\nkind = \"tcp\"\naddr = \"{addr}\"\n\n"
        ));
    }
    out
}

/// A listener that accepts and closes, with a deep accept queue (N targets
/// × 3 nodes connect every interval).
async fn tcp_sink() -> std::net::SocketAddr {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(65535).unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            drop(s);
        }
    });
    addr
}

/// Times `calls` Status RPCs of `req` on node `i`: milliseconds, and how
/// many confirmed reads came back stale (not confirmed in time).
async fn time_status(
    c: &Cluster,
    i: usize,
    req: &pb::StatusRequest,
    calls: usize,
) -> (Vec<f64>, usize) {
    let mut client = c.client(i).max_decoding_message_size(256 * 1024 * 1024);
    // Warm the connection and the node.
    for _ in 0..3 {
        client.status(req.clone()).await.unwrap();
    }
    let mut lat = Vec::with_capacity(calls);
    let mut stale = 0;
    for _ in 0..calls {
        let mut r = tonic::Request::new(req.clone());
        r.set_timeout(Duration::from_secs(10));
        let t = Instant::now();
        let s = client.status(r).await.unwrap().into_inner();
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        if s.stale && !req.allow_stale {
            stale += 1;
        }
    }
    (lat, stale)
}

async fn status_latency(args: &Args) -> String {
    let sink = tcp_sink().await;
    let mut out = String::new();
    for &n in &args.status_targets {
        STATUS_TARGETS.store(n, Ordering::Relaxed);
        let mut spec = Spec::zones(3);
        spec.cluster =
            "tick = \"100ms\"\nelection_ticks = 10\nheartbeat_ticks = 1\nrefresh = \"5s\"\n".into();
        spec.probe_defaults = "interval = \"5s\"\ntimeout = \"2s\"\nfall = 3\nrise = 1\n".into();
        spec.targets = tcp_targets;
        let ctx = Ctx {
            service: Some(sink),
            closed: None,
        };
        let c = Cluster::start(&spec, &ctx).await;
        let (leader, _) = c.wait_leader(&[0, 1, 2], Duration::from_secs(60)).await;
        let li = c.index(leader);
        let fi = (0..3).find(|i| *i != li).unwrap();
        // Every target agreed UP on every node (asked cheaply: counts only).
        let counts_only = pb::StatusRequest {
            allow_stale: true,
            names: vec!["/".into()],
            include_nodes: Some(false),
            ..Default::default()
        };
        wait_for(
            "every target UP everywhere",
            Duration::from_secs(120),
            || async {
                for i in 0..3 {
                    let s = c.status_with(i, counts_only.clone()).await?;
                    let up = s.counts.get("UP").copied().unwrap_or(0);
                    if up != n as u64 {
                        return Err(format!("node {}: {up} of {n} UP", i + 1));
                    }
                }
                Ok(())
            },
        )
        .await;
        let full = pb::StatusRequest::default();
        let stale = pb::StatusRequest {
            allow_stale: true,
            ..Default::default()
        };
        // What `faxictl status` asks by default: the targets not UP.
        let not_up = pb::StatusRequest {
            states: ["DOWN", "SUSPECT", "UNKNOWN", "STALE"]
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            ..Default::default()
        };
        let big = if n > 1000 {
            (args.status_calls / 10).max(10)
        } else {
            args.status_calls
        };
        let cases: [(&str, usize, &pb::StatusRequest, usize); 6] = [
            ("full, confirmed, on the leader", li, &full, big),
            ("full, confirmed, on a follower", fi, &full, big),
            ("full, allow_stale, on a follower", fi, &stale, big),
            (
                "not UP only (faxictl's default), confirmed, on the leader",
                li,
                &not_up,
                args.status_calls,
            ),
            (
                "not UP only, confirmed, on a follower",
                fi,
                &not_up,
                args.status_calls,
            ),
            (
                "not UP only, allow_stale, on a follower",
                fi,
                &not_up_stale(&not_up),
                args.status_calls,
            ),
        ];
        for (what, i, req, calls) in cases {
            let (lat, stale) = time_status(&c, i, req, calls).await;
            let unconfirmed = if req.allow_stale {
                String::new()
            } else {
                format!(", {stale} not confirmed in time")
            };
            let row = format!(
                "| Status RPC (ms), {n} targets, {what} | {}{unconfirmed} |\n",
                summary(lat)
            );
            eprint!("{row}");
            out.push_str(&row);
        }
        // faxictl status as a user runs it: a process, a connection, a call.
        let ep = c.endpoints(&[li]);
        let mut lat = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            // Over mutual TLS, with the test CA's operator certificate.
            let o = Cluster::faxictl(&ep, &["status"]).await;
            lat.push(t.elapsed().as_secs_f64() * 1e3);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
        let row = format!(
            "| `faxictl status` (default view) process wall time (ms), {n} targets | {} |\n",
            summary(lat)
        );
        eprint!("{row}");
        out.push_str(&row);
    }
    out
}

fn not_up_stale(r: &pb::StatusRequest) -> pb::StatusRequest {
    pb::StatusRequest {
        allow_stale: true,
        ..r.clone()
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args = Args::parse();
    let mut out = String::from("| measure | result |\n|---|---|\n");
    for part in &args.parts {
        let row = match part.as_str() {
            "commit" => commit_latency(&args).await,
            "throughput" => throughput(&args).await,
            "failover" => failover(&args).await,
            "detection" => detection(&args).await,
            "status" => status_latency(&args).await,
            other => {
                eprintln!("unknown part {other}");
                std::process::exit(2);
            }
        };
        eprint!("{row}");
        out.push_str(&row);
    }
    println!("{out}");
}
