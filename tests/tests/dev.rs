//! `faxi-watchdog dev` tried as a new user would: start it, then run
//! `faxictl status` with no flags and see a leader, three zones and the demo
//! targets' agreed states; `faxictl watch` streams; Ctrl-C stops everything.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::time::Duration;

use faxi_tests::{wait_for, workspace_bin};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const DEADLINE: Duration = Duration::from_secs(30);

async fn faxictl(args: &[&str]) -> std::process::Output {
    Command::new(workspace_bin("faxictl"))
        .args(args)
        .env_remove("FAXI_ENDPOINTS")
        .output()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mesh_answers_faxictl_with_no_flags() {
    let dir = tempfile::tempdir().unwrap();
    let mut dev = Command::new(workspace_bin("faxi-watchdog"))
        .args(["dev", "--dir"])
        .arg(dir.path())
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

    // watch: one JSON document per line, the first at once.
    let mut watch = Command::new(workspace_bin("faxictl"))
        .args(["watch", "--output", "json"])
        .env_remove("FAXI_ENDPOINTS")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(DEADLINE, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert!(doc["targets"].as_array().unwrap().len() == 4);
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
    wait_for("the dev nodes to stop", DEADLINE, || async {
        match tokio::net::TcpStream::connect("127.0.0.1:7401").await {
            Ok(_) => Err("7401 still answers".to_owned()),
            Err(_) => Ok(()),
        }
    })
    .await;
    let out = faxictl(&["status"]).await;
    assert_eq!(out.status.code(), Some(3));
}
