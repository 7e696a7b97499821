//! Scale benchmark (BENCHMARKS.md, "Scale").
//!
//! - `run`: for each target count N, three real node processes on loopback
//!   at default cluster settings (tick 100 ms, refresh 5 s, snapshots by
//!   count and by size at their defaults), each with N `tcp` targets that
//!   all point at one listener in this process (interval 5 s, the other
//!   probe settings at their defaults). Once every node counts N targets
//!   agreed UP, it samples every `--sample-seconds` for `--minutes`: each
//!   data dir's size (bytes allocated on disk, as `du` counts them), each
//!   node's applied log bytes (`faxi_raft_applied_bytes_total`), the
//!   logical state it holds (latest snapshot + log since, from
//!   `faxi_raft_snapshot_bytes` and `faxi_raft_log_bytes`), CPU time and
//!   RSS (`/proc`), and `faxictl status` (default view: counts and the
//!   targets not UP) as a whole process against the leader.
//! - `sled` (a historical name: the store no longer uses sled): whether
//!   the space compaction frees is given back. One driver in this process
//!   on a real data dir, a one-node cluster with a small
//!   `snapshot_bytes`, proposing whole sets of 10,000 verdicts (each a
//!   change: the verdicts alternate) back to back; the data dir's size is
//!   read as the log is snapshotted and compacted over and over.
//! - `steady`: hours of a quiet mesh in seconds. Per target count N, one
//!   driver on a real sled data dir (a one-node cluster, default snapshot
//!   settings, every write fsynced) takes one whole set of N verdicts, then
//!   `--steady-entries` refreshes back to back (at 0.6 a second, what three
//!   nodes propose, 25,000 are 11.6 hours); every 1,000 entries it reads
//!   the data dir's size against the logical state (snapshot + log since).
//! - `sizes`: what one entry weighs, JSON (the old form) against the
//!   binary form, for a whole set of 10,000 verdicts and for a refresh.
//!
//! Run it with `tests/bench-scale` (release build). It prints Markdown.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::sync_channel;
use std::time::Duration;

use clap::Parser;
use faxi_proto::v1 as pb;
use faxi_tests::cluster::{Cluster, Ctx, Spec};
use faxi_tests::{http_get, metric, wait_for};
use faxi_watchdog::mesh::codec;
use faxi_watchdog::mesh::driver::{self, DriverConfig};
use faxi_watchdog::mesh::state::{Command, Member, Seen, State};
use faxi_watchdog::mesh::storage::{SledStorage, disk_bytes};
use faxi_watchdog::mesh::transport::Transport;
use tokio::time::Instant;

#[derive(Debug, Parser)]
#[command(about = "Measure log growth, disk, CPU, memory and status at 1,000 and 10,000 targets")]
struct Args {
    /// Which parts to run, comma-separated: run, sled, steady, sizes.
    #[arg(long, value_delimiter = ',', default_value = "sizes,sled,steady,run")]
    parts: Vec<String>,
    /// Target counts of the run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    targets: Vec<usize>,
    /// Minutes sampled per target count, once every target is UP.
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Seconds between samples.
    #[arg(long, default_value_t = 30)]
    sample_seconds: u64,
    /// `faxictl status` runs per sample.
    #[arg(long, default_value_t = 5)]
    status_runs: usize,
    /// Whole sets of 10,000 verdicts proposed in the sled part.
    #[arg(long, default_value_t = 1000)]
    sled_rounds: usize,
    /// `snapshot_bytes` of the sled part.
    #[arg(long, default_value_t = 4 << 20)]
    sled_snapshot_bytes: u64,
    /// Refreshes proposed per target count in the steady part.
    #[arg(long, default_value_t = 25_000)]
    steady_entries: usize,
    /// `snapshot_entries` of the sled and steady parts (the node's default
    /// unless given).
    #[arg(long, default_value_t = faxi_watchdog::config::DEFAULT_SNAPSHOT_ENTRIES)]
    snapshot_entries: u64,
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v
}

const MB: f64 = 1024.0 * 1024.0;

/// Bytes a directory takes on disk (allocated blocks, as `du` counts).
/// A process's CPU seconds (user + system) and RSS in bytes.
fn proc_usage(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12
    // after the command name; clock ticks of 1/100 s.
    let cpu = (ticks(11) + ticks(12)) / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    (cpu, rss_kb * 1024)
}

/// Targets per node in the run (`Spec::targets` is a plain fn).
static TARGETS: AtomicUsize = AtomicUsize::new(0);

fn tcp_targets(_: u64, _: &str, ctx: &Ctx) -> String {
    let addr = ctx.service.unwrap();
    let mut out = String::new();
    for i in 0..TARGETS.load(Ordering::Relaxed) {
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

/// One node at one moment.
#[derive(Debug, Clone, Copy, Default)]
struct NodeSample {
    disk: u64,
    applied_bytes: f64,
    logical: f64,
    snapshots: f64,
    cpu_s: f64,
    rss: u64,
}

async fn node_sample(c: &Cluster, i: usize) -> NodeSample {
    let text = http_get(c.nodes[i].metrics, "/metrics")
        .await
        .unwrap_or_default();
    let m = |name: &str| metric(&text, name, &[]).unwrap_or(0.0);
    let (cpu_s, rss) = c.pid(i).map_or((0.0, 0), proc_usage);
    NodeSample {
        disk: disk_bytes(&c.data_dir(i)),
        applied_bytes: m("faxi_raft_applied_bytes_total"),
        logical: m("faxi_raft_snapshot_bytes") + m("faxi_raft_log_bytes"),
        snapshots: m("faxi_raft_snapshots_total"),
        cpu_s,
        rss,
    }
}

/// `faxictl status` (default view) against `endpoint`: wall time in ms.
async fn faxictl_status(endpoint: &str) -> f64 {
    let t = Instant::now();
    let o = Cluster::faxictl(endpoint, &["status"]).await;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    ms
}

/// What one run at N targets measured, for the summary across runs.
struct RunResult {
    n: usize,
    rss_max: u64,
}

async fn run_one(n: usize, args: &Args, out: &mut String) -> RunResult {
    TARGETS.store(n, Ordering::Relaxed);
    let sink = tcp_sink().await;
    let mut spec = Spec::zones(3);
    // Default cluster settings; targets every 5 s as in issue 11.
    spec.cluster = String::new();
    spec.probe_defaults = "interval = \"5s\"\n".into();
    spec.targets = tcp_targets;
    let ctx = Ctx {
        service: Some(sink),
        closed: None,
    };
    let started = Instant::now();
    let c = Cluster::start(&spec, &ctx).await;
    let counts_only = pb::StatusRequest {
        allow_stale: true,
        names: vec!["/".into()],
        include_nodes: Some(false),
        ..Default::default()
    };
    wait_for(
        "every target UP everywhere",
        Duration::from_secs(600),
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
    let all_up = started.elapsed().as_secs_f64();
    let (leader, _) = c.wait_leader(&[0, 1, 2], Duration::from_secs(60)).await;
    let ep = c.endpoints(&[c.index(leader)]);
    eprintln!("{n} targets: all UP on every node {all_up:.1} s after start");

    let window = Duration::from_secs_f64(args.minutes * 60.0);
    let t0 = Instant::now();
    let mut first: Vec<NodeSample> = Vec::new();
    for i in 0..3 {
        first.push(node_sample(&c, i).await);
    }
    let mut prev = (t0, first.clone());
    let mut rows = String::new();
    let mut status_all: Vec<f64> = Vec::new();
    let mut last;
    let mut series: Vec<(f64, Vec<NodeSample>)> = vec![(0.0, first.clone())];
    loop {
        let next = prev.0 + Duration::from_secs(args.sample_seconds);
        tokio::time::sleep_until(next.min(t0 + window)).await;
        let now = Instant::now();
        let mut lat = Vec::new();
        for _ in 0..args.status_runs {
            lat.push(faxictl_status(&ep).await);
        }
        let mut s = Vec::new();
        for i in 0..3 {
            s.push(node_sample(&c, i).await);
        }
        let dt = now.duration_since(prev.0).as_secs_f64();
        let t_min = now.duration_since(t0).as_secs_f64() / 60.0;
        let lat = sorted(lat);
        let per_node = |f: &dyn Fn(usize) -> String| (0..3).map(f).collect::<Vec<_>>().join(" / ");
        rows.push_str(&format!(
            "| {t_min:.1} | {} | {} | {} | {} | {} | {:.1} |\n",
            per_node(&|i| format!("{:.2}", s[i].disk as f64 / MB)),
            per_node(&|i| format!("{:.0}", (s[i].applied_bytes - prev.1[i].applied_bytes) / dt)),
            per_node(&|i| format!("{:.2}", s[i].logical / MB)),
            per_node(&|i| format!("{:.0}", 100.0 * (s[i].cpu_s - prev.1[i].cpu_s) / dt)),
            per_node(&|i| format!("{:.0}", s[i].rss as f64 / MB)),
            pct(&lat, 0.5),
        ));
        eprint!(
            "{}",
            rows.lines().last().unwrap_or_default().to_owned() + "\n"
        );
        status_all.extend(lat);
        series.push((t_min, s.clone()));
        last = s.clone();
        prev = (now, s);
        if now >= t0 + window {
            break;
        }
    }
    let hours = t0.elapsed().as_secs_f64() / 3600.0;
    // Growth per hour: the whole window, and its second half (steady state).
    let half = series
        .iter()
        .find(|(t, _)| *t >= args.minutes / 2.0)
        .cloned()
        .unwrap_or_else(|| series[0].clone());
    let half_hours = (series.last().map_or(0.0, |s| s.0) - half.0) / 60.0;
    let growth = |i: usize, from: &NodeSample, h: f64| {
        (last[i].disk as f64 - from.disk as f64) / MB / h.max(1e-9)
    };
    let per_node = |f: &dyn Fn(usize) -> String| (0..3).map(f).collect::<Vec<_>>().join(" / ");
    let status_all = sorted(status_all);
    out.push_str(&format!(
        "\n### {n} targets per node, {:.1} min after all UP ({all_up:.0} s after start)\n\n\
         Per node (1 / 2 / 3; node {leader} led).\n\n\
         | minute | data dir (MB) | applied log bytes/s | logical state (MB) | CPU (% of a core) | RSS (MB) | `faxictl status` p50 (ms) |\n\
         |---|---|---|---|---|---|---|\n{rows}\n\
         | measure | result |\n|---|---|\n\
         | data dir growth over the window (MB/h) | {} |\n\
         | data dir growth over its second half (MB/h) | {} |\n\
         | data dir at the end / logical state | {} |\n\
         | applied log bytes/s over the window | {} |\n\
         | snapshots taken in the window | {} |\n\
         | CPU over the window (% of a core) | {} |\n\
         | RSS at the end (MB) | {} |\n\
         | `faxictl status` (default view), whole process (ms) | p50 {:.1}, p90 {:.1}, max {:.1} (n={}) |\n",
        args.minutes,
        per_node(&|i| format!("{:.2}", growth(i, &first[i], hours))),
        per_node(&|i| format!("{:.2}", growth(i, &half.1[i], half_hours))),
        per_node(&|i| format!("{:.2}", last[i].disk as f64 / last[i].logical.max(1.0))),
        per_node(&|i| format!(
            "{:.0}",
            (last[i].applied_bytes - first[i].applied_bytes) / (hours * 3600.0)
        )),
        per_node(&|i| format!("{:.0}", last[i].snapshots - first[i].snapshots)),
        per_node(&|i| format!(
            "{:.1}",
            100.0 * (last[i].cpu_s - first[i].cpu_s) / (hours * 3600.0)
        )),
        per_node(&|i| format!("{:.1}", last[i].rss as f64 / MB)),
        pct(&status_all, 0.5),
        pct(&status_all, 0.9),
        status_all.last().copied().unwrap_or(f64::NAN),
        status_all.len(),
    ));
    RunResult {
        n,
        rss_max: last.iter().map(|s| s.rss).max().unwrap_or(0),
    }
}

async fn run(args: &Args) -> String {
    let mut out = String::from("\n## Run\n");
    let mut results = Vec::new();
    for &n in &args.targets {
        results.push(run_one(n, args, &mut out).await);
    }
    if let (Some(a), Some(b)) = (results.first(), results.last())
        && b.n > a.n
    {
        out.push_str(&format!(
            "\nRSS per extra target (largest node RSS, {} → {} targets): {:.1} KB\n",
            a.n,
            b.n,
            (b.rss_max as f64 - a.rss_max as f64) / 1024.0 / (b.n - a.n) as f64
        ));
    }
    out
}

/// A whole set of `n` verdicts, all `verdict`.
fn whole_set(n: usize, at_ms: u64, verdict: State) -> Command {
    Command::Observe {
        node: 1,
        at_ms,
        valid_for_ms: 15_000,
        seen: (0..n)
            .map(|i| Seen {
                target: format!("t{i}"),
                verdict,
                latency_us: 1_234,
                error: None,
            })
            .collect(),
        whole: true,
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn sled(args: &Args) -> String {
    let dir = tempfile::Builder::new()
        .prefix("faxi-scale-sled-")
        .tempdir()
        .unwrap();
    let data = dir.path().join("data");
    let (mesh, _storage) = one_node(&data, args.snapshot_entries, args.sled_snapshot_bytes).await;
    let entry = codec::encode(&whole_set(10_000, now_ms(), State::Up))
        .unwrap()
        .len();
    let mut out = format!(
        "\n## Does sled give back what compaction frees?\n\n\
         One node, snapshot_bytes {:.0} MiB, whole sets of 10,000 verdicts ({:.0} KB each \
         as stored) proposed back to back; the data dir (allocated bytes) as the log is \
         snapshotted and compacted again and again.\n\n\
         | entries | written (MB) | data dir (MB) | snapshot (KB) |\n|---|---|---|---|\n",
        args.sled_snapshot_bytes as f64 / MB,
        entry as f64 / 1024.0,
    );
    let started = Instant::now();
    let every = (args.sled_rounds / 20).max(1);
    let mut sizes = Vec::new();
    for k in 1..=args.sled_rounds {
        let v = if k % 2 == 0 { State::Up } else { State::Down };
        mesh.propose(whole_set(10_000, now_ms(), v), Duration::from_secs(30))
            .await
            .unwrap();
        if k % every == 0 || k == args.sled_rounds {
            let snap = mesh.read().sm.snapshot().unwrap().len();
            let disk = disk_bytes(&data);
            sizes.push(disk);
            out.push_str(&format!(
                "| {k} | {:.0} | {:.1} | {:.0} |\n",
                (k * entry) as f64 / MB,
                disk as f64 / MB,
                snap as f64 / 1024.0
            ));
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let max = sizes.iter().copied().max().unwrap_or(0);
    let end = sizes.last().copied().unwrap_or(0);
    out.push_str(&format!(
        "\n{} entries ({:.0} MB) in {secs:.0} s; the data dir peaked at {:.1} MB and ended at {:.1} MB.\n",
        args.sled_rounds,
        (args.sled_rounds * entry) as f64 / MB,
        max as f64 / MB,
        end as f64 / MB
    ));
    mesh.stop();
    out
}

/// A one-node cluster on a real sled data dir at `data`, with default
/// snapshot settings unless `snapshot_bytes` says otherwise.
async fn one_node(
    data: &Path,
    snapshot_entries: u64,
    snapshot_bytes: u64,
) -> (driver::Mesh, SledStorage) {
    let peers = vec![(
        1,
        Member {
            zone: "zone-a".into(),
            addr: "127.0.0.1:1".into(),
            instance: 0,
        },
    )];
    let storage = SledStorage::open(data).unwrap();
    driver::init(&storage, 1, &peers, driver::new_cluster_id()).unwrap();
    let (tx, rx) = sync_channel(driver::INBOX);
    let transport = Transport::new(1, tokio::runtime::Handle::current(), tx.clone(), None);
    let cfg = DriverConfig {
        id: 1,
        peers,
        tick: Duration::from_millis(100),
        election_ticks: 10,
        heartbeat_ticks: 1,
        snapshot_entries,
        snapshot_bytes,
        nonce: rand::random(),
    };
    let (mesh, _thread) = driver::start(cfg, storage.clone(), transport, (tx, rx)).unwrap();
    wait_for("a leader", Duration::from_secs(20), || async {
        (mesh.read().info.leader == 1)
            .then_some(())
            .ok_or_else(|| "no leader".to_owned())
    })
    .await;
    (mesh, storage)
}

/// What the store must hold: its snapshot's data and the log since, as stored.
fn logical_bytes(s: &SledStorage) -> u64 {
    use raft::Storage as _;
    let snap = s.last_snapshot().unwrap().get_data().len() as u64;
    let (first, last) = (s.first_index().unwrap(), s.last_index().unwrap());
    let log: u64 = s
        .entries(first, last + 1, None, raft::GetEntriesContext::empty(false))
        .unwrap()
        .iter()
        .map(|e| u64::from(protobuf::Message::compute_size(e)))
        .sum();
    snap + log
}

async fn steady(args: &Args) -> String {
    let mut out = format!(
        "\n## A quiet mesh over hours: the data dir against the logical state\n\n\
         One node, a snapshot every {} entries or 16 MiB; \
         one whole set of N verdicts, then {} refreshes back to back (at 0.6 a second: {:.1} h).\n",
        args.snapshot_entries,
        args.steady_entries,
        args.steady_entries as f64 / 0.6 / 3600.0,
    );
    for &n in &args.targets {
        let dir = tempfile::Builder::new()
            .prefix("faxi-scale-steady-")
            .tempdir()
            .unwrap();
        let data = dir.path().join("data");
        let (mesh, storage) = one_node(&data, args.snapshot_entries, 16 << 20).await;
        mesh.propose(whole_set(n, now_ms(), State::Up), Duration::from_secs(30))
            .await
            .unwrap();
        out.push_str(&format!(
            "\n**{n} targets**\n\n| entries | hours at 0.6/s | data dir (MB) | logical (MB) | ratio |\n|---|---|---|---|---|\n"
        ));
        let digest = mesh.read().sm.digest_of(1).0;
        let started = Instant::now();
        let (mut worst, mut sum, mut count, mut max_disk) = (0f64, 0f64, 0u32, 0f64);
        for k in 1..=args.steady_entries {
            let refresh = Command::Refresh {
                node: 1,
                at_ms: now_ms(),
                valid_for_ms: 15_000,
                digest,
            };
            mesh.propose(refresh, Duration::from_secs(30))
                .await
                .unwrap();
            // Sampled every 100 entries (between compactions too), a row
            // every 1,000.
            if k % 100 == 0 || k == args.steady_entries {
                let disk = disk_bytes(&data) as f64;
                let logical = logical_bytes(&storage) as f64;
                let ratio = disk / logical;
                worst = worst.max(ratio);
                sum += ratio;
                count += 1;
                max_disk = max_disk.max(disk);
                if k % 1_000 == 0 || k == args.steady_entries {
                    out.push_str(&format!(
                        "| {k} | {:.1} | {:.2} | {:.2} | {ratio:.2} |\n",
                        k as f64 / 0.6 / 3600.0,
                        disk / MB,
                        logical / MB
                    ));
                }
            }
        }
        out.push_str(&format!(
            "\ndata dir / logical state, sampled every 100 entries: worst {worst:.2}, mean {:.2}; \
             data dir at most {:.2} MB; {:.0} s\n",
            sum / f64::from(count.max(1)),
            max_disk / MB,
            started.elapsed().as_secs_f64()
        ));
        mesh.stop();
    }
    out
}

fn sizes() -> String {
    let whole = whole_set(10_000, now_ms(), State::Up);
    let refresh = Command::Refresh {
        node: 1,
        at_ms: now_ms(),
        valid_for_ms: 15_000,
        digest: 0x0123_4567_89ab_cdef,
    };
    let json = |c: &Command| serde_json::to_vec(c).unwrap().len();
    let bin = |c: &Command| codec::encode(c).unwrap().len();
    format!(
        "\n## Entry sizes\n\n| entry | JSON (before) | binary (now) |\n|---|---|---|\n\
         | whole set of 10,000 verdicts (names t0…t9999, no error) | {} bytes | {} bytes |\n\
         | refresh (any number of targets) | {} bytes | {} bytes |\n",
        json(&whole),
        bin(&whole),
        json(&refresh),
        bin(&refresh),
    )
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args = Args::parse();
    let mut out = String::new();
    for part in &args.parts {
        let text = match part.as_str() {
            "sizes" => sizes(),
            "sled" => sled(&args).await,
            "steady" => steady(&args).await,
            "run" => run(&args).await,
            other => {
                eprintln!("unknown part {other}");
                std::process::exit(2);
            }
        };
        eprint!("{text}");
        out.push_str(&text);
    }
    println!("{out}");
}
