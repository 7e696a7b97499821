//! Real `faxi-watchdog` processes, with their config in a temp dir, their
//! logs captured and their metrics scraped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tempfile::TempDir;
use tokio::process::{Child, Command};

use crate::{check_node_log, free_port, http_get, metric, wait_for, workspace_bin};

/// A running node process; killed on drop.
#[derive(Debug)]
pub struct NodeProcess {
    /// Its `/metrics` address.
    pub metrics: SocketAddr,
    /// Its gRPC address.
    pub grpc: SocketAddr,
    /// Its stderr (JSON log lines).
    pub log: PathBuf,
    child: Option<Child>,
    _dir: TempDir,
}

/// The `[node]` section for a node listening on free loopback ports; the
/// caller appends `[probe_defaults]` and `[[targets]]`.
pub fn node_section(
    id: u64,
    zone: &str,
    dir: &std::path::Path,
) -> (String, SocketAddr, SocketAddr) {
    let metrics: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let grpc: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let text = format!(
        "[node]\nid = {id}\nzone = \"{zone}\"\ndata_dir = \"{}\"\nlisten = \"{grpc}\"\nmetrics_listen = \"{metrics}\"\n\n[tls]\ninsecure = true\n\n",
        dir.join("data").display(),
    );
    (text, metrics, grpc)
}

/// `faxi-watchdog init --config FILE`: creates the cluster in that node's
/// data dir (the one explicit bootstrap step); panics with its output if it
/// fails.
pub async fn init(config: &std::path::Path, env: &[(&str, &str)]) {
    let out = Command::new(workspace_bin("faxi-watchdog"))
        .args(["init", "--config"])
        .arg(config)
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "faxi-watchdog init failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl NodeProcess {
    /// Starts `faxi-watchdog run` with `[node]` generated and `rest` appended
    /// (targets, defaults); returns once `/healthz` answers.
    pub async fn start(rest: &str) -> NodeProcess {
        Self::start_with_env(rest, &[]).await
    }

    /// As [`NodeProcess::start`], with extra environment variables (secrets).
    pub async fn start_with_env(rest: &str, env: &[(&str, &str)]) -> NodeProcess {
        let dir = tempfile::Builder::new()
            .prefix("faxi-node-")
            .tempdir()
            .unwrap();
        let (head, metrics, grpc) = node_section(1, "zone-a", dir.path());
        let config = dir.path().join("node.toml");
        // `{grpc}` in `rest` stands for this node's own gRPC address.
        let rest = rest.replace("{grpc}", &grpc.to_string());
        std::fs::write(&config, format!("{head}{rest}")).unwrap();
        let log = dir.path().join("node.log");
        init(&config, env).await;
        let child = Command::new(workspace_bin("faxi-watchdog"))
            .args(["run", "--log-format", "json", "--config"])
            .arg(&config)
            .envs(env.iter().copied())
            .env("FAXI_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let node = NodeProcess {
            metrics,
            grpc,
            log,
            child: Some(child),
            _dir: dir,
        };
        wait_for("the node's /healthz", Duration::from_secs(20), || {
            node.get("/healthz")
        })
        .await;
        node
    }

    /// GETs a path of the metrics listener; the body on 200.
    pub async fn get(&self, path: &str) -> Result<String, String> {
        http_get(self.metrics, path).await
    }

    /// The node's current `/metrics` text.
    pub async fn metrics_text(&self) -> String {
        self.get("/metrics").await.unwrap()
    }

    /// Waits until the node's verdict on `target` is `verdict`.
    pub async fn wait_verdict(&self, target: &str, verdict: &str, deadline: Duration) {
        let what = format!("{target} to be {verdict}");
        wait_for(&what, deadline, || async {
            let text = self.get("/metrics").await?;
            match metric(
                &text,
                "faxi_local_verdict",
                &[("target", target), ("verdict", verdict)],
            ) {
                Some(1.0) => Ok(()),
                _ => {
                    let now = ["UNKNOWN", "UP", "DOWN", "STALE"].into_iter().find(|v| {
                        metric(
                            &text,
                            "faxi_local_verdict",
                            &[("target", target), ("verdict", v)],
                        ) == Some(1.0)
                    });
                    Err(format!("verdict is {now:?}"))
                }
            }
        })
        .await
    }

    /// The log so far, one JSON object per line; a line that is not JSON
    /// (a panic) fails the caller with its text.
    pub fn log_lines(&self) -> Vec<serde_json::Value> {
        crate::parse_log("the node", &self.log_text())
    }

    /// The raw log text.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal("-TERM").await
    }

    /// Sends a signal (`-TERM`, `-INT`, ...) and waits for the exit status.
    pub async fn signal(&mut self, sig: &str) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = child.id().expect("pid");
        let status = std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        tokio::time::timeout(Duration::from_secs(20), child.wait())
            .await
            .expect("exit after the signal")
            .unwrap()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        check_node_log("the node", &self.log);
    }
}
