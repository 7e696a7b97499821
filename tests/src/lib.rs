//! The integration suite's harness: private instances of the real servers a
//! node probes, and real node processes.
//!
//! Every server binds a free loopback port in its own temp dir and is
//! stopped when its handle drops. Nothing here sleeps and hopes: waits poll
//! a condition until a deadline and fail with what they waited for.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

pub mod cluster;
pub mod docker;
pub mod http;
pub mod node;
pub mod postgres;
pub mod prometheus;
pub mod proxy;
pub mod redis;
pub mod s3;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::Instant;

/// A loopback port that was free a moment ago: below Linux's ephemeral
/// range (32768-60999 by default), so that no outgoing connection takes the
/// port between now and its listener's bind, and never the same port twice
/// in one test process. `FAXI_TEST_PORTS=18000-18999` picks from that range
/// instead, for a machine where processes must keep to one.
pub fn free_port() -> u16 {
    let (from, to) = std::env::var("FAXI_TEST_PORTS")
        .ok()
        .and_then(|r| {
            let (lo, hi) = r.split_once('-')?;
            let (lo, hi) = (
                lo.trim().parse::<u16>().ok()?,
                hi.trim().parse::<u16>().ok()?,
            );
            (lo <= hi).then_some((lo, hi.saturating_add(1)))
        })
        .unwrap_or((20_000, 32_000));
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    for _ in 0..10_000 {
        let port = rand::random_range(from..to);
        if given.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
    panic!("no free port in {from}-{to}");
}

/// Polls `check` every 20 ms until it returns `Some`, or panics after
/// `deadline` naming `what` and the last state seen.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let end = Instant::now() + deadline;
    loop {
        let last = match check().await {
            Ok(v) => return v,
            Err(e) => e,
        };
        if Instant::now() >= end {
            panic!("timed out after {deadline:?} waiting for {what}; last: {last}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until something accepts TCP connections on `addr`.
pub async fn wait_listening(what: &str, addr: SocketAddr, deadline: Duration) {
    wait_for(what, deadline, || async move {
        TcpStream::connect(addr)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    })
    .await;
}

/// A plain HTTP/1.1 GET over a fresh connection: the body on 200, else the
/// status line. For the node's `/metrics` and `/healthz`, which answer with a
/// content-length body (never chunked).
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out)
        .await
        .map_err(|e| e.to_string())?;
    let (head, body) = out.split_once("\r\n\r\n").ok_or("no header end")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(head.lines().next().unwrap_or_default().to_owned());
    }
    Ok(body.to_owned())
}

/// The lines of a node's log that are not JSON: what the node wrote outside
/// its logger (a panic's text, a start-up error).
pub fn stray_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| serde_json::from_str::<serde_json::Value>(l).is_err())
        .collect()
}

/// A node's JSON log, one object per line. A line that is not JSON is
/// never dropped: it fails the caller, with its text (most likely a panic).
pub fn parse_log(name: &str, text: &str) -> Vec<serde_json::Value> {
    let stray = stray_lines(text);
    assert!(
        stray.is_empty(),
        "{name} wrote lines that are not JSON (a panic?):\n{}",
        stray.join("\n")
    );
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// For a node's handle being dropped at the end of a test. While the test
/// fails anyway, what the node wrote outside its JSON log is printed with
/// the failure; a node that panicked fails a test that would pass, with
/// the panic's text.
pub fn check_node_log(name: &str, path: &std::path::Path) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let stray = stray_lines(&text);
    if stray.is_empty() {
        return;
    }
    if std::thread::panicking() {
        eprintln!(
            "{name} wrote, outside its JSON log ({}):\n{}",
            path.display(),
            stray.join("\n")
        );
    } else if stray.iter().any(|l| l.contains("panicked at")) {
        panic!(
            "{name} panicked ({}):\n{}",
            path.display(),
            stray.join("\n")
        );
    }
}

/// A binary of this workspace, built next to the test executable.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // A test runs from target/<profile>/deps/, a bench binary from target/<profile>/.
    let mut dir = exe.parent().expect("exe dir");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("target dir");
    }
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} is not built; run `cargo build --workspace --bins` first (the test script does)",
        bin.display()
    );
    bin
}

/// Whether this process runs as root (PostgreSQL then runs as `postgres`).
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// An address whose SYNs go unanswered: a listener with a full accept queue
/// that never accepts. Connecting to it hangs as a firewalled host would,
/// all on loopback.
#[derive(Debug)]
pub struct Blackhole {
    /// The address that hangs.
    pub addr: SocketAddr,
    _listener: TcpListener,
    _fillers: Vec<TcpStream>,
}

impl Blackhole {
    /// Binds, listens with a backlog of 0 and fills the queue.
    pub async fn start() -> Blackhole {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(0).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut fillers = Vec::new();
        // Fill the accept queue until a connect no longer completes at once.
        for _ in 0..8 {
            match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
                Ok(Ok(s)) => fillers.push(s),
                _ => break,
            }
        }
        Blackhole {
            addr,
            _listener: listener,
            _fillers: fillers,
        }
    }
}

/// A TCP server that accepts every connection and never says a word: the
/// half-alive server a probe must give up on.
#[derive(Debug)]
pub struct Silent {
    /// Where it listens.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Silent {
    /// Starts it.
    pub async fn start() -> Silent {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        Silent { addr, task }
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Parses one sample out of Prometheus text: the value of the series whose
/// name is `name` and whose labels include every `labels` pair.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (n, rest) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if n != name {
                return None;
            }
            let all = labels
                .iter()
                .all(|(k, v)| rest.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
            if !all {
                return None;
            }
            value.parse().ok()
        })
}

/// A validated target from the body of one `[[targets]]` table, through the
/// same parser `faxi-watchdog run` uses.
pub fn target(body: &str) -> faxi_watchdog::config::TargetSpec {
    let text = format!(
        "[node]\nid = 1\nzone = \"zone-a\"\n\n[tls]\ninsecure = true\n\n[[targets]]\n{body}"
    );
    match faxi_watchdog::config::Config::parse(&text) {
        Ok(mut c) => c.targets.remove(0),
        Err(problems) => panic!("test target does not parse: {problems:?}"),
    }
}

/// Builds the target's probe and runs it once under its timeout.
pub async fn probe_once(spec: &faxi_watchdog::config::TargetSpec) -> faxi_watchdog::probe::Report {
    let ctx = faxi_watchdog::probe::ProbeContext::new(1);
    let probe = faxi_watchdog::probe::build(spec, &ctx).unwrap();
    faxi_watchdog::probe::run(probe.as_ref(), spec.timeout).await
}

/// A file holding `value`, for `*_file` secret keys; keep it alive while the
/// config is parsed.
pub fn secret_file(value: &str) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), value).unwrap();
    f
}
