//! A private Prometheus server (the real `prometheus` binary) scraping node
//! processes and evaluating deploy/prometheus's rules, and `promtool`.
//! Both must be installed (tests/run installs Debian's `prometheus`): a
//! test that needs them fails without them, it never skips.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tempfile::TempDir;
use tokio::process::{Child, Command};

use crate::{free_port, wait_for};

/// The repository's deploy/ directory.
pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// The rule files Prometheus loads (deploy/prometheus/*.yml).
pub fn rule_files() -> Vec<PathBuf> {
    let dir = deploy_dir().join("prometheus");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no rule files in {}", dir.display());
    files
}

/// A tool every test here needs: its path, or a failure saying how to get it.
pub fn require(tool: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("`{tool}` is not installed: tests/run installs it (Debian package `prometheus`)")
        })
}

/// A running Prometheus; killed on drop.
#[derive(Debug)]
pub struct Prometheus {
    /// Its HTTP API.
    pub addr: SocketAddr,
    child: Option<Child>,
    log: PathBuf,
    _dir: TempDir,
}

impl Prometheus {
    /// Starts one scraping `targets` every second, evaluating `rules` every
    /// second, with its storage in a temp dir; returns once it is ready.
    pub async fn start(targets: &[SocketAddr], rules: &[PathBuf]) -> Prometheus {
        let bin = require("prometheus");
        let dir = tempfile::Builder::new()
            .prefix("faxi-prometheus-")
            .tempdir()
            .unwrap();
        let list = |items: Vec<String>| format!("[{}]", items.join(", "));
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n\
             rule_files: {}\n\
             scrape_configs:\n  - job_name: faxi-watchdog\n    static_configs:\n      - targets: {}\n",
            list(rules.iter().map(|r| format!("'{}'", r.display())).collect()),
            list(targets.iter().map(|t| format!("'{t}'")).collect()),
        );
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config).unwrap();
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let log = dir.path().join("prometheus.log");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("cannot run prometheus");
        let p = Prometheus {
            addr,
            child: Some(child),
            log,
            _dir: dir,
        };
        wait_for("prometheus ready", Duration::from_secs(60), || async {
            get(p.addr, "/-/ready").await.map(drop)
        })
        .await;
        p
    }

    /// GET `path` (with its query string) from the HTTP API, as JSON; an
    /// answer whose status is not `success` is an error with its text.
    pub async fn api(&self, path: &str) -> Result<serde_json::Value, String> {
        let body = get(self.addr, path).await?;
        let v: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("{path}: {e}: {body}"))?;
        if v["status"] != "success" {
            return Err(format!("{path}: {body}"));
        }
        Ok(v["data"].clone())
    }

    /// An instant query at the current time: its result vector (or scalar).
    pub async fn query(&self, promql: &str) -> Result<serde_json::Value, String> {
        let d = self
            .api(&format!("/api/v1/query?query={}", encode(promql)))
            .await
            .map_err(|e| format!("query {promql}: {e}"))?;
        Ok(d["result"].clone())
    }

    /// What Prometheus wrote to its log, for a failure message.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let text = self.log_text();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(30);
            eprintln!("--- prometheus log, last lines:");
            for l in &lines[from..] {
                eprintln!("{l}");
            }
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
        }
    }
}

/// Percent-encodes a query-string value.
pub fn encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len() * 3);
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One HTTP/1.1 GET: the body on 200, else the status and body.
async fn get(addr: SocketAddr, path: &str) -> Result<String, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let conn = tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let fetch = async {
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let text = String::from_utf8_lossy(&body).into_owned();
        if status.is_success() {
            Ok(text)
        } else {
            Err(format!("{status}: {text}"))
        }
    };
    let r = tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .map_err(|_| format!("GET {path}: no answer in 10s"))?;
    conn.abort();
    r
}

/// The metric names (`faxi_...`) and recorded names (`faxi:...`) a PromQL
/// expression refers to, each with the label matchers written after it
/// (`faxi_target_state{state="SUSPECT"}`), in order of appearance.
pub fn selectors(expr: &str) -> Vec<(String, String)> {
    let b = expr.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let mut out = Vec::new();
    let mut i = 0;
    let mut quote: Option<u8> = None;
    while i < b.len() {
        let c = b[i];
        if let Some(q) = quote {
            if c == b'\\' {
                i += 1;
            } else if c == q {
                quote = None;
            }
            i += 1;
            continue;
        }
        if c == b'"' || c == b'\'' || c == b'`' {
            quote = Some(c);
            i += 1;
            continue;
        }
        if ident(c) && !c.is_ascii_digit() && (i == 0 || !ident(b[i - 1])) {
            let start = i;
            while i < b.len() && ident(b[i]) {
                i += 1;
            }
            let name = &expr[start..i];
            if name.starts_with("faxi_") || name.starts_with("faxi:") {
                let mut matchers = String::new();
                if b.get(i) == Some(&b'{') {
                    let end = expr[i..].find('}').map_or(b.len(), |e| i + e + 1);
                    matchers = expr[i..end].to_owned();
                    i = end;
                }
                out.push((name.to_owned(), matchers));
            }
            continue;
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_are_found_with_their_matchers_and_strings_skipped() {
        let s = selectors(
            "max by (target) (faxi_target_state{state=\"SUSPECT\"}) == 1 and on(instance) faxi:slo_x:rate5m / rate(faxi_slo_good_seconds_total{target=\"faxi_not_a_name\"}[5m]) unless vector(0)",
        );
        assert_eq!(
            s,
            vec![
                ("faxi_target_state".into(), "{state=\"SUSPECT\"}".into()),
                ("faxi:slo_x:rate5m".into(), String::new()),
                (
                    "faxi_slo_good_seconds_total".into(),
                    "{target=\"faxi_not_a_name\"}".into()
                ),
            ]
        );
        assert_eq!(encode("a b{c=\"d\"}"), "a%20b%7Bc%3D%22d%22%7D");
    }
}
