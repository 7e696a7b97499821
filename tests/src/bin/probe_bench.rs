//! Probe benchmark: a real `faxi-watchdog run` process probing N targets on
//! a local HTTP server, measured from outside.
//!
//! For each (kind, N) it starts the server (in this process) and a node (a
//! child process) whose N targets all point at it, waits until every target
//! has been probed, then over a measuring window reads from the node's
//! `/metrics` the probes run and the timeouts, and from `/proc` the node's CPU
//! time and RSS. It prints a Markdown table for BENCHMARKS.md.
//!
//! Run it with `tests/bench-probes` (it builds the release binaries first).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use faxi_tests::{http_get, wait_for, workspace_bin};
use http_body_util::Full;
use hyper::Response;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::time::Instant;

#[derive(Debug, Parser)]
#[command(about = "Measure probes/s per core, RSS and spurious timeouts of one node")]
struct Args {
    /// Target counts to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    targets: Vec<usize>,
    /// Target kinds to run, comma-separated (http, tcp).
    #[arg(long, value_delimiter = ',', default_value = "http,tcp")]
    kinds: Vec<String>,
    /// Probe interval of every target.
    #[arg(long, default_value = "1s")]
    interval: String,
    /// Length of the measuring window, in seconds.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
}

#[derive(Debug)]
struct Row {
    kind: String,
    targets: usize,
    probes_per_s: f64,
    cpu_s: f64,
    probes_per_cpu_s: f64,
    rss_mb: f64,
    hwm_mb: f64,
    timeouts: f64,
    failures: f64,
    probes: f64,
    listen_overflows: f64,
}

/// The app stand-in: answers every request 200 with a small body.
async fn serve(listener: TcpListener) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(|_req| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                    b"{\"status\":\"ok\"}",
                ))))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn proc_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the ")" of the command name: utime is 14th, stime 15th overall.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0 // CLK_TCK is 100 on Linux
}

fn proc_mem_mb(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The kernel's count of connections dropped because a listen queue was
/// full: a timeout that coincides with these is the server's, not the node's.
fn listen_overflows() -> f64 {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return f64::NAN;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "ListenOverflows")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(f64::NAN)
}

fn sum(text: &str, name: &str, result: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(&format!("result=\"{result}\"")))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

async fn scrape(addr: SocketAddr) -> Result<String, String> {
    http_get(addr, "/metrics").await
}

async fn run_one(kind: &str, n: usize, args: &Args, server: SocketAddr) -> Row {
    let dir = tempfile::tempdir().unwrap();
    let metrics: SocketAddr = ([127, 0, 0, 1], faxi_tests::free_port()).into();
    let mut cfg = format!(
        "[node]\nid = 1\nzone = \"bench\"\ndata_dir = \"{}\"\nlisten = \"127.0.0.1:{}\"\nmetrics_listen = \"{metrics}\"\n\n[tls]\ninsecure = true\n\n\
         [probe_defaults]\ninterval = \"{}\"\n\n",
        dir.path().display(),
        faxi_tests::free_port(),
        args.interval
    );
    for i in 0..n {
        match kind {
            "http" => writeln!(cfg, "[[targets]]\nname = \"app-{i}\"\nkind = \"http\"\nurl = \"http://{server}/health\"\n"),
            _ => writeln!(cfg, "[[targets]]\nname = \"port-{i}\"\nkind = \"tcp\"\naddr = \"{server}\"\n"),
        }
        .unwrap();
    }
    let path = dir.path().join("bench.toml");
    std::fs::write(&path, cfg).unwrap();
    let mut child = tokio::process::Command::new(workspace_bin("faxi-watchdog"))
        .args(["run", "--config"])
        .arg(&path)
        .env("FAXI_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();

    // Warm-up: every target probed at least twice.
    wait_for(
        "every target probed twice",
        Duration::from_secs(120),
        || async move {
            let t = scrape(metrics).await?;
            let done = sum(&t, "faxi_probes_total", "success")
                + sum(&t, "faxi_probes_total", "failure")
                + sum(&t, "faxi_probes_total", "timeout");
            if done >= 2.0 * n as f64 {
                Ok(())
            } else {
                Err(format!("{done} probes"))
            }
        },
    )
    .await;

    let t0 = scrape(metrics).await.unwrap();
    let (cpu0, at0, ovf0) = (proc_cpu_seconds(pid), Instant::now(), listen_overflows());
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let t1 = scrape(metrics).await.unwrap();
    let (cpu1, at1, ovf1) = (proc_cpu_seconds(pid), Instant::now(), listen_overflows());
    let rss_mb = proc_mem_mb(pid, "VmRSS:");
    let hwm_mb = proc_mem_mb(pid, "VmHWM:");
    let _ = child.kill().await;

    let d = |name: &str| sum(&t1, "faxi_probes_total", name) - sum(&t0, "faxi_probes_total", name);
    let (ok, failures, timeouts) = (d("success"), d("failure"), d("timeout"));
    let probes = ok + failures + timeouts;
    let secs = (at1 - at0).as_secs_f64();
    let cpu_s = cpu1 - cpu0;
    Row {
        kind: kind.to_owned(),
        targets: n,
        probes_per_s: probes / secs,
        cpu_s,
        probes_per_cpu_s: if cpu_s > 0.0 {
            probes / cpu_s
        } else {
            f64::NAN
        },
        rss_mb,
        hwm_mb,
        timeouts,
        failures,
        probes,
        listen_overflows: ovf1 - ovf0,
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    // A deep accept queue, so the stand-in server is not what times out.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(65535).unwrap();
    let server = listener.local_addr().unwrap();
    tokio::spawn(serve(listener));

    let mut rows = Vec::new();
    for kind in &args.kinds {
        for &n in &args.targets {
            eprintln!("probe-bench: {kind} x {n} ...");
            let row = run_one(kind, n, &args, server).await;
            eprintln!("{row:?}");
            rows.push(row);
        }
    }
    println!(
        "| kind | targets | probes/s | node CPU s in {} s | probes per CPU-second | RSS MB | peak RSS MB | timeouts | failures | listen overflows |",
        args.seconds
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.0} | {:.1} | {:.1} | {} of {} ({:.3} %) | {} | {} |",
            r.kind,
            r.targets,
            r.probes_per_s,
            r.cpu_s,
            r.probes_per_cpu_s,
            r.rss_mb,
            r.hwm_mb,
            r.timeouts,
            r.probes,
            if r.probes > 0.0 {
                100.0 * r.timeouts / r.probes
            } else {
                0.0
            },
            r.failures,
            r.listen_overflows
        );
    }
}
