//! Secrets never leave a node: a node probing a real PostgreSQL, Redis and
//! S3 server with passwords and keys from `*_env` and `*_file` keys (some of
//! them wrong, so that errors flow), logging at `FAXI_LOG=trace` in both
//! log formats, shows none of them, nor the S3 access key id, in any log
//! line, on `/metrics` or in `faxictl status`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use faxi_tests::node::{init, node_section};
use faxi_tests::postgres::{self, Postgres};
use faxi_tests::redis::{self, Redis};
use faxi_tests::s3::S3Server;
use faxi_tests::{metric, secret_file, wait_for, workspace_bin};
use tokio::process::{Child, Command};

const DEADLINE: Duration = Duration::from_secs(60);

/// The S3 credentials this test configures (the server accepts any).
const ACCESS_KEY_ID: &str = "AKIAFAXILOGTEST4711";
const SECRET_ACCESS_KEY: &str = "faxi-s3-secret-for-the-log-test";
/// Wrong passwords, which the servers refuse (so probes fail with errors).
const WRONG_PG: &str = "wrong-pg-password-0815";
const WRONG_REDIS: &str = "wrong-redis-password-0815";

struct Node {
    child: Child,
    log: PathBuf,
    metrics: SocketAddr,
    grpc: SocketAddr,
    _dir: tempfile::TempDir,
}

/// Starts a node at FAXI_LOG=trace in `format` with `targets` (and the
/// secrets' environment).
async fn start(format: &str, targets: &str, env: &[(&str, &str)]) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let (head, metrics, grpc) = node_section(1, "zone-a", dir.path());
    let path = dir.path().join("node.toml");
    std::fs::write(
        &path,
        format!("{head}[cluster]\nrefresh = \"500ms\"\n\n{targets}"),
    )
    .unwrap();
    init(&path, env).await;
    let log = dir.path().join("node.log");
    let child = Command::new(workspace_bin("faxi-watchdog"))
        .args(["run", "--log-format", format, "--config"])
        .arg(&path)
        .envs(env.iter().copied())
        .env("FAXI_LOG", "trace")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    Node {
        child,
        log,
        metrics,
        grpc,
        _dir: dir,
    }
}

async fn faxictl(node: &Node, args: &[&str]) -> String {
    let out = Command::new(workspace_bin("faxictl"))
        // The node runs with insecure = true: plaintext, and no client
        // config from this machine's user.
        .args(["--config", "/dev/null"])
        .args(["--endpoints", &format!("http://{}", node.grpc)])
        .args(args)
        .output()
        .await
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_or_access_key_id_in_logs_metrics_or_status_even_at_trace() {
    let (pg, redis, s3) = tokio::join!(Postgres::start(), Redis::start(), S3Server::start());
    s3.create_bucket("faxi-images").await;
    s3.create_bucket("faxi-backups").await;
    s3.put_aged("faxi-backups", "pg/dump.sql.gz", Duration::from_secs(60))
        .await;
    let pg_pw = secret_file(postgres::PASSWORD);
    let access_key = secret_file(ACCESS_KEY_ID);
    let targets = format!(
        "[probe_defaults]\ninterval = \"1s\"\ntimeout = \"900ms\"\nfall = 1\nrise = 1\n\n\
         [[targets]]\nname = \"pg\"\nkind = \"postgres\"\ndsn = \"{dsn}\"\npassword_file = \"{pg_pw}\"\n\n\
         [[targets]]\nname = \"pg-wrong\"\nkind = \"postgres\"\ndsn = \"{dsn}\"\npassword_env = \"T_WRONG_PG\"\n\n\
         [[targets]]\nname = \"redis\"\nkind = \"redis\"\nurl = \"{redis_url}\"\npassword_env = \"T_REDIS\"\n\n\
         [[targets]]\nname = \"redis-wrong\"\nkind = \"redis\"\nurl = \"{redis_url}\"\npassword_env = \"T_WRONG_REDIS\"\n\n\
         [[targets]]\nname = \"images\"\nkind = \"s3\"\nendpoint = \"{s3}\"\nbucket = \"faxi-images\"\npath_style = true\ncanary = true\n\
         access_key_file = \"{ak}\"\nsecret_key_env = \"T_S3_SECRET\"\n\n\
         [[targets]]\nname = \"backups\"\nkind = \"backup\"\nendpoint = \"{s3}\"\nbucket = \"faxi-backups\"\npath_style = true\n\
         prefix = \"pg/\"\nrpo = \"1h\"\naccess_key_file = \"{ak}\"\nsecret_key_env = \"T_S3_SECRET\"\n\n\
         [[targets]]\nname = \"missing-bucket\"\nkind = \"s3\"\nendpoint = \"{s3}\"\nbucket = \"faxi-nope\"\npath_style = true\n\
         access_key_file = \"{ak}\"\nsecret_key_env = \"T_S3_SECRET\"\n",
        dsn = pg.dsn(),
        pg_pw = pg_pw.path().display(),
        redis_url = redis.url(),
        s3 = s3.endpoint(),
        ak = access_key.path().display(),
    );
    let env = [
        ("T_WRONG_PG", WRONG_PG),
        ("T_REDIS", redis::PASSWORD),
        ("T_WRONG_REDIS", WRONG_REDIS),
        ("T_S3_SECRET", SECRET_ACCESS_KEY),
    ];
    let mut nodes = Vec::new();
    for format in ["json", "text"] {
        nodes.push(start(format, &targets, &env).await);
    }
    let want = [
        ("pg", "UP"),
        ("pg-wrong", "DOWN"),
        ("redis", "UP"),
        ("redis-wrong", "DOWN"),
        ("images", "UP"),
        ("backups", "UP"),
        ("missing-bucket", "DOWN"),
    ];
    for node in &nodes {
        // Every verdict as expected, then a few more rounds of every probe.
        wait_for("every verdict, then 5 probes of each", DEADLINE, || async {
            let text = faxi_tests::http_get(node.metrics, "/metrics").await?;
            for (target, verdict) in want {
                let v = metric(
                    &text,
                    "faxi_local_verdict",
                    &[("target", target), ("verdict", verdict)],
                );
                if v != Some(1.0) {
                    return Err(format!("{target} is not {verdict} yet"));
                }
                let runs: f64 = ["success", "failure", "timeout"]
                    .iter()
                    .filter_map(|r| {
                        metric(
                            &text,
                            "faxi_probes_total",
                            &[("target", target), ("result", r)],
                        )
                    })
                    .sum();
                if runs < 5.0 {
                    return Err(format!("{target}: {runs} probes so far"));
                }
            }
            Ok(())
        })
        .await;
        // The errors reached the agreed state that faxictl shows.
        wait_for("the probe errors in faxictl status", DEADLINE, || async {
            let out = faxictl(node, &["status", "--output", "json"]).await;
            if out.contains("password authentication failed") && out.contains("HeadBucket failed") {
                Ok(())
            } else {
                Err(out)
            }
        })
        .await;
    }

    let secrets = [
        postgres::PASSWORD,
        redis::PASSWORD,
        WRONG_PG,
        WRONG_REDIS,
        ACCESS_KEY_ID,
        SECRET_ACCESS_KEY,
    ];
    for node in &mut nodes {
        let mut shown = vec![
            (
                "/metrics",
                faxi_tests::http_get(node.metrics, "/metrics")
                    .await
                    .unwrap(),
            ),
            (
                "faxictl status -o json",
                faxictl(node, &["status", "--output", "json"]).await,
            ),
            ("faxictl status", faxictl(node, &["status"]).await),
        ];
        // SIGTERM, so that shutdown's lines are in the log too.
        let pid = node.child.id().unwrap().to_string();
        assert!(
            std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let status = tokio::time::timeout(DEADLINE, node.child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "{status}");
        let log = std::fs::read_to_string(&node.log).unwrap();
        // The log really is at trace, S3 requests and all.
        assert!(
            log.contains("TRACE") && log.contains("hyper_util"),
            "not a trace log:\n{}",
            &log[..log.len().min(2000)]
        );
        assert!(log.lines().count() > 100, "{log}");
        shown.push(("the log", log));
        for (what, text) in &shown {
            for secret in secrets {
                let lines: Vec<&str> = text.lines().filter(|l| l.contains(secret)).collect();
                assert!(
                    lines.is_empty(),
                    "{secret:?} in {what}: {} line(s), first: {}",
                    lines.len(),
                    lines[0]
                );
            }
        }
    }
    drop(pg);
}
