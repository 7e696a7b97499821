//! A real `faxi-watchdog run` process: rise/fall transitions logged as
//! structured events, metrics and health endpoints, isolation of hanging
//! targets, secrets kept out of logs and metrics, clean SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use faxi_tests::http::AppStub;
use faxi_tests::node::NodeProcess;
use faxi_tests::redis::Redis;
use faxi_tests::s3::{ACCESS_KEY, S3Server, SECRET_KEY};
use faxi_tests::{Blackhole, Silent, metric, secret_file, wait_for, workspace_bin};

const DEADLINE: Duration = Duration::from_secs(30);

fn verdict_events(node: &NodeProcess, target: &str) -> Vec<(String, String)> {
    node.log_lines()
        .into_iter()
        .filter(|l| l["message"] == "verdict changed" && l["target_name"] == target)
        .map(|l| {
            (
                l["from"].as_str().unwrap_or("").to_owned(),
                l["to"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn rise_and_fall_transitions_are_logged_and_exported() {
    let app = AppStub::start().await;
    let mut node = NodeProcess::start(&format!(
        "[[targets]]\nname = \"app\"\nkind = \"http\"\nurl = \"{}\"\ninterval = \"100ms\"\ntimeout = \"80ms\"\nfall = 3\nrise = 2\n",
        app.url()
    ))
    .await;
    node.wait_verdict("app", "UP", DEADLINE).await;

    app.set_status(500);
    node.wait_verdict("app", "DOWN", DEADLINE).await;
    let text = node.metrics_text().await;
    let failures = metric(
        &text,
        "faxi_probes_total",
        &[("target", "app"), ("result", "failure")],
    )
    .unwrap();
    assert!(
        failures >= 3.0,
        "DOWN after only {failures} failures (fall = 3)"
    );
    assert_eq!(
        metric(&text, "faxi_probe_up", &[("target", "app")]),
        Some(0.0)
    );

    app.set_status(200);
    node.wait_verdict("app", "UP", DEADLINE).await;

    let events = verdict_events(&node, "app");
    let want: Vec<(String, String)> = [("UNKNOWN", "UP"), ("UP", "DOWN"), ("DOWN", "UP")]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(events, want, "log:\n{}", node.log_text());
    let down = node
        .log_lines()
        .into_iter()
        .find(|l| l["message"] == "verdict changed" && l["to"] == "DOWN")
        .unwrap();
    assert_eq!(down["error"], "HTTP 500, expected 200");
    assert_eq!(down["level"], "WARN");

    let status = node.terminate().await;
    assert!(status.success(), "exit after SIGTERM: {status:?}");
    assert!(
        node.log_text().contains("\"stopped\""),
        "{}",
        node.log_text()
    );
}

#[tokio::test]
async fn hanging_targets_do_not_delay_the_others() {
    let app = AppStub::start().await;
    let hole = Blackhole::start().await;
    let silent = Silent::start().await;
    let node = NodeProcess::start(&format!(
        "[probe_defaults]\ninterval = \"500ms\"\ntimeout = \"400ms\"\nfall = 2\nrise = 1\n\n\
         [[targets]]\nname = \"blackholed\"\nkind = \"tcp\"\naddr = \"{}\"\n\n\
         [[targets]]\nname = \"silent\"\nkind = \"http\"\nurl = \"http://{}/health\"\n\n\
         [[targets]]\nname = \"app\"\nkind = \"http\"\nurl = \"{}\"\ninterval = \"50ms\"\ntimeout = \"45ms\"\nfall = 5\n",
        hole.addr,
        silent.addr,
        app.url()
    ))
    .await;
    node.wait_verdict("blackholed", "DOWN", DEADLINE).await;
    node.wait_verdict("silent", "DOWN", DEADLINE).await;
    // While the two hanging targets time out again and again, the app keeps
    // being probed on its own schedule and never goes DOWN.
    wait_for(
        "3 more timeouts of each hanging target",
        DEADLINE,
        || async {
            let t = node.get("/metrics").await?;
            let a = metric(
                &t,
                "faxi_probes_total",
                &[("target", "blackholed"), ("result", "timeout")],
            )
            .unwrap_or(0.0);
            let b = metric(
                &t,
                "faxi_probes_total",
                &[("target", "silent"), ("result", "timeout")],
            )
            .unwrap_or(0.0);
            if a >= 5.0 && b >= 5.0 {
                Ok(())
            } else {
                Err(format!("{a} and {b} timeouts"))
            }
        },
    )
    .await;
    let t = node.metrics_text().await;
    let ok = metric(
        &t,
        "faxi_probes_total",
        &[("target", "app"), ("result", "success")],
    )
    .unwrap();
    let bad = metric(
        &t,
        "faxi_probes_total",
        &[("target", "app"), ("result", "failure")],
    )
    .unwrap()
        + metric(
            &t,
            "faxi_probes_total",
            &[("target", "app"), ("result", "timeout")],
        )
        .unwrap();
    assert_eq!(bad, 0.0, "the app's probes failed while others hung");
    // 5 timeouts at a 500 ms interval is >= 2 s: the 50 ms app must have run
    // far more than 20 probes unless something held it back.
    assert!(
        ok >= 20.0,
        "only {ok} app probes while the hanging targets timed out"
    );
    assert!(app.hits() as f64 >= ok);
}

#[tokio::test]
async fn secrets_stay_out_of_logs_and_metrics() {
    let redis = Redis::start().await;
    let wrong = "wrong-redis-password-4711";
    let pw = secret_file(wrong);
    let node = NodeProcess::start_with_env(
        &format!(
            "[[targets]]\nname = \"redis\"\nkind = \"redis\"\nurl = \"{}\"\npassword_env = \"FAXI_TEST_REDIS_PW\"\ninterval = \"100ms\"\ntimeout = \"90ms\"\nfall = 1\n\n\
             [[targets]]\nname = \"redis-file\"\nkind = \"redis\"\nurl = \"{}\"\npassword_file = \"{}\"\ninterval = \"100ms\"\ntimeout = \"90ms\"\nfall = 1\n",
            redis.url(),
            redis.url(),
            pw.path().display()
        ),
        &[("FAXI_TEST_REDIS_PW", wrong)],
    )
    .await;
    node.wait_verdict("redis", "DOWN", DEADLINE).await;
    node.wait_verdict("redis-file", "DOWN", DEADLINE).await;
    let log = node.log_text();
    assert!(log.contains("verdict changed"), "{log}");
    assert!(!log.contains(wrong), "a password reached the log:\n{log}");
    assert!(!node.metrics_text().await.contains(wrong));
    // Nor the status that faxictl shows, once the errors are in the log.
    let out = wait_for("redis DOWN in faxictl status", DEADLINE, || async {
        let out = tokio::process::Command::new(workspace_bin("faxictl"))
            .args([
                "--endpoints",
                &node.grpc.to_string(),
                "status",
                "--output",
                "json",
            ])
            .output()
            .await
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("\"DOWN\"") && text.contains("\"error\": \"") {
            Ok(text)
        } else {
            Err(text)
        }
    })
    .await;
    assert!(
        !out.contains(wrong),
        "a password reached the status:\n{out}"
    );
}

/// Starts a node whose data dir is `data_dir` and expects it to refuse.
async fn refused_data_dir(data_dir: &std::path::Path) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nid = 1\nzone = \"zone-a\"\ndata_dir = \"{}\"\nlisten = \"127.0.0.1:{}\"\nmetrics_listen = \"127.0.0.1:{}\"\n[tls]\ninsecure = true\n",
            data_dir.display(),
            faxi_tests::free_port(),
            faxi_tests::free_port()
        ),
    )
    .unwrap();
    let out = tokio::time::timeout(
        DEADLINE,
        tokio::process::Command::new(workspace_bin("faxi-watchdog"))
            .args(["run", "--config"])
            .arg(&config)
            .output(),
    )
    .await
    .expect("the node should exit")
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn a_bad_data_dir_is_refused_with_its_path() {
    // A file where the data dir should be.
    let f = tempfile::NamedTempFile::new().unwrap();
    let err = refused_data_dir(f.path()).await;
    assert!(err.contains(&f.path().display().to_string()), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    // A directory holding something that is not our raft log.
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("conf"), b"not sled at all \x00\xff").unwrap();
    std::fs::write(d.path().join("db"), vec![0xAB; 4096]).unwrap();
    let err = refused_data_dir(d.path()).await;
    assert!(err.contains(&d.path().display().to_string()), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[tokio::test]
async fn a_port_in_use_is_named_and_the_node_exits_1() {
    for key in ["listen", "metrics_listen"] {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (grpc, metrics) = if key == "listen" {
            (addr.port(), faxi_tests::free_port())
        } else {
            (faxi_tests::free_port(), addr.port())
        };
        let config = dir.path().join("node.toml");
        std::fs::write(
            &config,
            format!(
                "[node]\nid = 1\nzone = \"zone-a\"\ndata_dir = \"{}\"\nlisten = \"127.0.0.1:{grpc}\"\nmetrics_listen = \"127.0.0.1:{metrics}\"\n[tls]\ninsecure = true\n",
                dir.path().join("data").display(),
            ),
        )
        .unwrap();
        let out = tokio::time::timeout(
            DEADLINE,
            tokio::process::Command::new(workspace_bin("faxi-watchdog"))
                .args(["run", "--config"])
                .arg(&config)
                .output(),
        )
        .await
        .expect("the node should exit")
        .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{key}: {err}");
        assert!(
            err.contains(&format!("cannot listen on node.{key} {addr}"))
                || err.contains(&format!("cannot listen on {key} {addr}")),
            "{key}: {err}"
        );
        assert!(err.contains("Address already in use"), "{key}: {err}");
        assert!(!err.contains("panicked"), "{key}: {err}");
    }
}

#[tokio::test]
async fn bad_peer_messages_are_refused_and_the_node_goes_on() {
    use faxi_proto::v1::watchdog_client::WatchdogClient;
    use faxi_proto::v1::{RaftBatch, StatusRequest, peer_client::PeerClient};
    // Node 2 is a configured peer that never starts: a learner, not yet
    // bound to a data dir, whose messages pass the envelope check.
    let node = NodeProcess::start(
        "[cluster]\npeers = [\n  { id = 1, zone = \"zone-a\", addr = \"{grpc}\" },\n  \
         { id = 2, zone = \"zone-b\", addr = \"127.0.0.1:9\" },\n]\n",
    )
    .await;
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", node.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let cluster_id = WatchdogClient::new(ch.clone())
        .status(StatusRequest::default())
        .await
        .unwrap()
        .into_inner()
        .cluster
        .unwrap()
        .cluster_id;
    assert_eq!(cluster_id.len(), 32, "{cluster_id:?}");
    let mut peer = PeerClient::new(ch);
    let batch = |from: u64, to: u64, cluster: &str, messages: Vec<Vec<u8>>| RaftBatch {
        from,
        to,
        messages,
        cluster_id: cluster.to_owned(),
        from_instance: 0,
        to_instance: 0,
        from_bound_at: 0,
    };
    // Another cluster's message is refused before anything reads it.
    let e = peer
        .step(batch(
            1,
            1,
            "0123456789abcdef0123456789abcdef",
            vec![b"x".to_vec()],
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(e.message().contains("cluster"), "{}", e.message());
    // So is a message from a node that is not a member and has no state.
    let e = peer
        .step(batch(3, 1, "", vec![b"x".to_vec()]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(e.message().contains("not a member"), "{}", e.message());
    // And node 1's own id from another data dir.
    let e = peer
        .step(batch(1, 1, &cluster_id, vec![b"x".to_vec()]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(e.message().contains("another data dir"), "{}", e.message());
    // Garbage from a member is not a raft message.
    let e = peer
        .step(batch(2, 1, &cluster_id, vec![b"\xff\xff garbage".to_vec()]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().contains("not a raft message"),
        "{}",
        e.message()
    );
    let e = peer
        .step(batch(2, 7, &cluster_id, vec![]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(e.message().contains("not node 7"), "{}", e.message());
    // Still a healthy single-node cluster that leads itself, and the
    // refusals were counted by reason.
    wait_for("the node leads itself", DEADLINE, || async {
        let m = node.metrics_text().await;
        match metric(&m, "faxi_raft_is_leader", &[]) {
            Some(1.0) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let m = node.metrics_text().await;
    for reason in [
        "other_cluster",
        "not_a_member",
        "replaced_there",
        "malformed",
        "wrong_node",
    ] {
        assert_eq!(
            metric(
                &m,
                "faxi_raft_messages_refused_total",
                &[("reason", reason)]
            ),
            Some(1.0),
            "{reason}"
        );
    }
}

#[tokio::test]
async fn backup_age_and_stale_verdict_are_exported() {
    let s3 = S3Server::start().await;
    s3.create_bucket("faxi-backups").await;
    s3.put_aged(
        "faxi-backups",
        "postgres/faxi.sql.gz",
        Duration::from_secs(3 * 3600),
    )
    .await;
    let node = NodeProcess::start_with_env(
        &format!(
            "[[targets]]\nname = \"pg-backups\"\nkind = \"backup\"\nendpoint = \"{}\"\nbucket = \"faxi-backups\"\npath_style = true\n\
             prefix = \"postgres/\"\nrpo = \"2h\"\naccess_key_env = \"AK\"\nsecret_key_env = \"SK\"\ninterval = \"200ms\"\ntimeout = \"190ms\"\nfall = 1\nrise = 1\n",
            s3.endpoint()
        ),
        &[("AK", ACCESS_KEY), ("SK", SECRET_KEY)],
    )
    .await;
    node.wait_verdict("pg-backups", "STALE", DEADLINE).await;
    let age = metric(
        &node.metrics_text().await,
        "faxi_backup_age_seconds",
        &[("target", "pg-backups")],
    )
    .unwrap();
    assert!(
        (3.0 * 3600.0..3.0 * 3600.0 + 120.0).contains(&age),
        "age {age}"
    );

    s3.put_aged(
        "faxi-backups",
        "postgres/faxi-new.sql.gz",
        Duration::from_secs(60),
    )
    .await;
    node.wait_verdict("pg-backups", "UP", DEADLINE).await;
    let age = metric(
        &node.metrics_text().await,
        "faxi_backup_age_seconds",
        &[("target", "pg-backups")],
    )
    .unwrap();
    assert!((60.0..180.0).contains(&age), "age {age}");
    assert!(!node.log_text().contains(SECRET_KEY));
}

#[tokio::test]
async fn a_machine_without_ca_certificates_still_probes_s3_over_http_and_says_why_https_would_fail()
{
    // As in a minimal container: the system's CA bundle is empty (the
    // variable that names it points at an empty file). The S3 client used
    // to assert on an empty trust store and the node died at its first S3
    // probe; now it trusts none and says so.
    let s3 = S3Server::start().await;
    s3.create_bucket("faxi-files").await;
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("no-cas.pem");
    std::fs::write(&empty, "").unwrap();
    let node = NodeProcess::start_with_env(
        &format!(
            "[[targets]]\nname = \"files\"\nkind = \"s3\"\nendpoint = \"{}\"\nbucket = \"faxi-files\"\npath_style = true\n\
             access_key_env = \"AK\"\nsecret_key_env = \"SK\"\ninterval = \"1s\"\ntimeout = \"900ms\"\nfall = 1\nrise = 1\n",
            s3.endpoint()
        ),
        &[
            ("AK", ACCESS_KEY),
            ("SK", SECRET_KEY),
            ("SSL_CERT_FILE", empty.to_str().unwrap()),
            ("SSL_CERT_DIR", dir.path().to_str().unwrap()),
        ],
    )
    .await;
    node.wait_verdict("files", "UP", DEADLINE).await;
    assert!(
        node.log_text()
            .contains("no CA certificates found on this machine"),
        "{}",
        node.log_text()
    );
    assert!(!node.log_text().contains("panicked"), "{}", node.log_text());
}

#[tokio::test]
async fn health_and_unknown_paths_and_ctrl_c() {
    let mut node = NodeProcess::start("").await;
    assert_eq!(node.get("/healthz").await.unwrap(), "ok\n");
    let err = node.get("/nope").await.unwrap_err();
    assert!(err.contains("404"), "{err}");
    let text = node.metrics_text().await;
    assert_eq!(metric(&text, "faxi_targets", &[]), Some(0.0));
    // Ctrl-C (SIGINT) stops it as cleanly as SIGTERM.
    let status = node.signal("-INT").await;
    assert!(status.success(), "exit after SIGINT: {status:?}");
    assert!(node.log_text().contains("stopped"), "{}", node.log_text());
}

#[tokio::test]
async fn a_node_refuses_to_start_with_a_certificate_its_peers_would_refuse() {
    let certs = |nodes: &str| {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(workspace_bin("faxi-watchdog"))
            .args(["certs", "--nodes", nodes, "--dir"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    };
    let (ours, theirs) = (certs("1,2"), certs("1"));
    let f = |d: &tempfile::TempDir, name: &str| d.path().join(name).display().to_string();
    for (cert, key, expect) in [
        // Node 1's certificate, from another cluster's CA.
        (
            f(&theirs, "node-1.pem"),
            f(&theirs, "node-1.key"),
            "not valid under the cluster CA (tls.ca)",
        ),
        // Node 2's certificate, in node 1's config.
        (f(&ours, "node-2.pem"), f(&ours, "node-2.key"), "not node 1"),
        // Node 1's certificate with node 2's key.
        (
            f(&ours, "node-1.pem"),
            f(&ours, "node-2.key"),
            "tls.key is not this certificate's key",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("node.toml");
        std::fs::write(
            &config,
            format!(
                "[node]\nid = 1\nzone = \"zone-a\"\ndata_dir = \"{}\"\nlisten = \"127.0.0.1:{}\"\nmetrics_listen = \"127.0.0.1:{}\"\n[tls]\nca = {:?}\ncert = {cert:?}\nkey = {key:?}\n",
                dir.path().join("data").display(),
                faxi_tests::free_port(),
                faxi_tests::free_port(),
                f(&ours, "ca.pem"),
            ),
        )
        .unwrap();
        let out = tokio::time::timeout(
            DEADLINE,
            tokio::process::Command::new(workspace_bin("faxi-watchdog"))
                .args(["run", "--config"])
                .arg(&config)
                .output(),
        )
        .await
        .expect("the node should exit")
        .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{expect}: {err}");
        assert!(err.contains(expect), "{expect}: {err}");
        assert!(err.contains("tls."), "{expect}: {err}");
        assert!(!err.contains("panicked"), "{expect}: {err}");
    }
}
