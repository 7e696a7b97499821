//! `faxi-watchdog dev` tried as a new user would: start it, then run
//! `faxictl status` with no flags and see a leader, three zones and the demo
//! targets' agreed states; every node answers on its gRPC and metrics
//! ports; `faxictl watch` streams a line per change; Ctrl-C stops
//! everything and all six ports close. A node that dies is reported
//! (which, how, where its log is) and the others are stopped.
//!
//! The mesh listens on fixed ports, so these tests take turns.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use faxi_tests::{http_get, wait_for, workspace_bin};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const DEADLINE: Duration = Duration::from_secs(30);

/// One dev mesh at a time: they all want ports 7401-7403 and 9401-9403.
static FIXED_PORTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Waits until nothing answers on the dev mesh's ports.
async fn ports_closed() {
    wait_for("the dev nodes' ports to close", DEADLINE, || async {
        for port in [7401, 7402, 7403, 9401, 9402, 9403] {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Err(format!("{port} still answers"));
            }
        }
        Ok(())
    })
    .await;
}

/// A config home of this test process's own, where `dev` writes faxictl's
/// default client config and faxictl finds it (as in a user's home).
fn config_home() -> &'static std::path::Path {
    static HOME: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    HOME.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

async fn faxictl(args: &[&str]) -> std::process::Output {
    Command::new(workspace_bin("faxictl"))
        .args(args)
        .env_remove("FAXI_ENDPOINTS")
        .env_remove("FAXICTL_CONFIG")
        .env("XDG_CONFIG_HOME", config_home())
        .output()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mesh_answers_faxictl_with_no_flags() {
    let _turn = FIXED_PORTS.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut dev = Command::new(workspace_bin("faxi-watchdog"))
        .args(["dev", "--dir"])
        .arg(dir.path())
        .env("XDG_CONFIG_HOME", config_home())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let v: serde_json::Value = wait_for("the dev mesh's agreed states", DEADLINE, || async {
        let out = faxictl(&["status", "--output", "json"]).await;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .map_err(|_| String::from_utf8_lossy(&out.stderr).into_owned())?;
        let state = |name: &str| {
            v["targets"]
                .as_array()
                .and_then(|ts| ts.iter().find(|t| t["name"] == name))
                .map(|t| t["state"].as_str().unwrap_or("").to_owned())
                .unwrap_or_default()
        };
        let ok = v["cluster"]["leader"].is_u64()
            && state("app") == "UP"
            && state("app-port") == "UP"
            && state("cache") == "SUSPECT"
            && state("legacy-db") == "DOWN";
        if ok { Ok(v) } else { Err(v.to_string()) }
    })
    .await;
    let zones: Vec<&str> = v["cluster"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["zone"].as_str().unwrap())
        .collect();
    assert_eq!(zones, ["zone-a", "zone-b", "zone-c"]);

    // The human table says why cache is SUSPECT.
    let out = faxictl(&["status"]).await;
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("zone-c cannot reach cache"), "{table}");
    // It speaks mutual TLS only: without the certificate dev wrote into
    // faxictl's config, no node answers.
    let out = faxictl(&["--config", "/dev/null", "status"]).await;
    assert_eq!(out.status.code(), Some(3), "{:?}", out);

    // Every node answers on its own ports: gRPC 7401-7403 (each answers as
    // itself), metrics 9401-9403.
    for id in 1..=3u64 {
        let ep = format!("127.0.0.1:{}", 7400 + id);
        let out = faxictl(&["--endpoints", &ep, "status", "--output", "json"]).await;
        assert!(
            out.status.success(),
            "{ep}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["cluster"]["answered_by"]["id"], id, "{ep}: {v}");
        let metrics: SocketAddr = ([127, 0, 0, 1], 9400 + id as u16).into();
        http_get(metrics, "/healthz")
            .await
            .unwrap_or_else(|e| panic!("{metrics}/healthz: {e}"));
        let text = http_get(metrics, "/metrics")
            .await
            .unwrap_or_else(|e| panic!("{metrics}/metrics: {e}"));
        assert!(text.contains("faxi_raft_is_leader"), "{metrics}: {text}");
    }

    // watch: one JSON document per line, the first at once, then one per
    // change (the log commits every refresh, so changes keep coming).
    let mut watch = Command::new(workspace_bin("faxictl"))
        .args(["watch", "--output", "json"])
        .env_remove("FAXI_ENDPOINTS")
        .env_remove("FAXICTL_CONFIG")
        .env("XDG_CONFIG_HOME", config_home())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut docs: Vec<serde_json::Value> = Vec::new();
    while docs.len() < 3 {
        let line = tokio::time::timeout(DEADLINE, lines.next_line())
            .await
            .expect("a watch line in time")
            .unwrap()
            .expect("the watch went on");
        let doc: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(doc["targets"].as_array().unwrap().len(), 4, "{doc}");
        if let Some(prev) = docs.last() {
            assert_ne!(&doc, prev, "a line that is no change");
            let commit = |d: &serde_json::Value| d["cluster"]["commit_index"].as_u64().unwrap();
            assert!(commit(&doc) >= commit(prev), "{prev} then {doc}");
        }
        docs.push(doc);
    }
    watch.kill().await.unwrap();

    // SIGINT stops the mesh: the nodes go too and the ports close.
    Command::new("kill")
        .args(["-INT", &dev.id().unwrap().to_string()])
        .status()
        .await
        .unwrap();
    let status = tokio::time::timeout(DEADLINE, dev.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    ports_closed().await;
    let out = faxictl(&["status"]).await;
    assert_eq!(out.status.code(), Some(3));
}

/// A dev node killed from outside: `dev` notices, says which node, how it
/// ended and where its log is, stops the other two (cleanly: they log
/// "stopped") and exits 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dev_node_that_dies_is_reported_and_the_others_stopped() {
    let _turn = FIXED_PORTS.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let stderr = dir.path().join("dev.stderr");
    let mut dev = Command::new(workspace_bin("faxi-watchdog"))
        .args(["dev", "--dir"])
        .arg(dir.path())
        .env("XDG_CONFIG_HOME", config_home())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Node 2's pid, from its log ("node started ... pid=N").
    let log2 = dir.path().join("node2.log");
    let pid: u32 = wait_for("node 2 to start", DEADLINE, || async {
        let text = std::fs::read_to_string(&log2).unwrap_or_default();
        text.lines()
            .find(|l| l.contains("node started"))
            .and_then(|l| {
                l.split_once(" pid=")?
                    .1
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .ok_or(text)
    })
    .await;
    // Every node up, so that the others have something to stop.
    wait_for("the dev mesh's leader", DEADLINE, || async {
        let out = faxictl(&["status", "--output", "json"]).await;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .map_err(|_| String::from_utf8_lossy(&out.stderr).into_owned())?;
        if v["cluster"]["leader"].as_u64().is_some_and(|l| l > 0) {
            Ok(())
        } else {
            Err(v.to_string())
        }
    })
    .await;

    let killed = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(DEADLINE, dev.wait())
        .await
        .expect("dev exits once a node died")
        .unwrap();
    let said = std::fs::read_to_string(&stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{status}: {said}");
    assert!(
        said.contains("faxi-watchdog dev: node 2 stopped (signal: 9 (SIGKILL))"),
        "{said}"
    );
    assert!(said.contains(&log2.display().to_string()), "{said}");
    assert!(!said.contains("panicked"), "{said}");
    for other in ["node1.log", "node3.log"] {
        let text = std::fs::read_to_string(dir.path().join(other)).unwrap();
        let last = text.lines().last().unwrap_or_default();
        assert!(last.contains("stopped"), "{other}: {last}");
    }
    ports_closed().await;
}
