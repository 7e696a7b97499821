//! faxictl against real node processes on loopback and against endpoints
//! that misbehave (a server that accepts and never answers, an HTTP/1
//! server): status at scale (counts, what is not UP, filters), endpoint
//! fail-over within each endpoint's share of the time, usage errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use faxi_proto::v1 as pb;
use faxi_tests::cluster::{Cluster, Ctx, Spec};
use faxi_tests::http::AppStub;
use faxi_tests::{Silent, wait_for};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(30);

/// `app` is up for everyone; zone-c's route to `cache` is broken; `gone` is
/// down for everyone.
fn targets(_id: u64, zone: &str, ctx: &Ctx) -> String {
    let service = ctx.service.unwrap();
    let closed = ctx.closed.unwrap();
    let cache = if zone == "zone-c" { closed } else { service };
    format!(
        "[[targets]]\nname = \"app\"\nkind = \"http\"\nurl = \"http://{service}/health\"\n\n\
         [[targets]]\nname = \"cache\"\nkind = \"tcp\"\naddr = \"{cache}\"\n\n\
         [[targets]]\nname = \"gone\"\nkind = \"tcp\"\naddr = \"{closed}\"\n"
    )
}

fn closed_addr() -> String {
    format!("127.0.0.1:{}", faxi_tests::free_port())
}

async fn three(app: &AppStub) -> Cluster {
    let mut spec = Spec::zones(3);
    spec.targets = targets;
    let ctx = Ctx {
        service: Some(app.addr),
        closed: Some(closed_addr().parse().unwrap()),
    };
    Cluster::start(&spec, &ctx).await
}

/// faxictl's exit code, stdout and stderr.
async fn run(endpoints: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Cluster::faxictl(endpoints, args).await;
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn json(endpoints: &str, args: &[&str]) -> Value {
    let (code, out, err) = run(endpoints, args).await;
    assert_eq!(code, Some(0), "faxictl {args:?}: {err}");
    serde_json::from_str(&out).unwrap()
}

fn names(v: &Value) -> Vec<String> {
    v["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_counts_and_what_is_not_up_and_filters_on_request() {
    let app = AppStub::start().await;
    let c = three(&app).await;
    c.wait_leader(&[0, 1, 2], LONG).await;
    c.wait_state(&[0, 1, 2], "app", "UP", LONG).await;
    c.wait_state(&[0, 1, 2], "gone", "DOWN", LONG).await;
    c.wait_state(&[0, 1, 2], "cache", "SUSPECT", LONG).await;
    // The states above hold with two zones' views; wait for all three.
    wait_for(
        "every node's view of every target everywhere",
        LONG,
        || async {
            for i in 0..3 {
                let s = c.status(i).await?;
                for t in &s.targets {
                    if t.nodes.len() != 3 {
                        return Err(format!(
                            "node {}: {} has {} views",
                            i + 1,
                            t.name,
                            t.nodes.len()
                        ));
                    }
                }
            }
            Ok(())
        },
    )
    .await;
    let eps = c.endpoints(&[0, 1, 2]);

    // The table: counts over every target, rows for those not UP.
    let (code, out, err) = run(&eps, &["status"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("Targets: 3 (UP 1, DOWN 1, SUSPECT 1)"),
        "{out}"
    );
    assert!(out.contains("| cache ") && out.contains("| gone "), "{out}");
    assert!(
        !out.contains("| app "),
        "an UP target in the default table:\n{out}"
    );
    assert!(out.contains("--all"), "{out}");
    assert!(out.contains("confirmed with the leader"), "{out}");
    let (_, out, _) = run(&eps, &["status", "--all"]).await;
    assert!(out.contains("| app ") && out.contains("| gone "), "{out}");
    // A name selects in every state.
    let (_, out, _) = run(&eps, &["status", "--name", "app"]).await;
    assert!(out.contains("| app ") && !out.contains("| gone "), "{out}");

    // JSON without a filter: every target with every node's view, as
    // scripts expect; counts; a confirmed answer.
    let v = json(&eps, &["status", "-o", "json"]).await;
    assert_eq!(names(&v), ["app", "cache", "gone"]);
    for t in v["targets"].as_array().unwrap() {
        assert_eq!(t["nodes"].as_array().unwrap().len(), 3, "{t}");
    }
    assert_eq!(
        v["counts"],
        serde_json::json!({"DOWN": 1, "SUSPECT": 1, "UP": 1})
    );
    assert_eq!(v["stale"], false);
    assert!(v["staleness_ms"].is_i64());
    // Filters: by state (any case), by name (exact or pattern); counts
    // still cover every target.
    let v = json(&eps, &["status", "-o", "json", "--state", "DOWN,suspect"]).await;
    assert_eq!(names(&v), ["cache", "gone"]);
    assert_eq!(v["counts"]["UP"], 1);
    let v = json(&eps, &["status", "-o", "json", "--name", "ca*"]).await;
    assert_eq!(names(&v), ["cache"]);
    let v = json(
        &eps,
        &["status", "-o", "json", "--name", "app", "--name", "g?ne"],
    )
    .await;
    assert_eq!(names(&v), ["app", "gone"]);
    let v = json(
        &eps,
        &["status", "-o", "json", "--state", "UP", "--name", "gone"],
    )
    .await;
    assert_eq!(names(&v), Vec::<String>::new());
    let (_, out, _) = run(&eps, &["status", "--state", "STALE"]).await;
    assert!(out.contains("No target matches."), "{out}");

    // The RPC builds only what is asked: no per-node views when told so.
    let s = c
        .status_with(
            1,
            pb::StatusRequest {
                states: vec!["DOWN".into()],
                include_nodes: Some(false),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(s.targets.len(), 1);
    assert!(s.targets[0].nodes.is_empty());
    assert_eq!(s.counts.values().sum::<u64>(), 3);
    let e = c
        .status_with(
            1,
            pb::StatusRequest {
                states: vec!["SIDEWAYS".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(e.contains("not a state"), "{e}");

    // members lists the cluster alone.
    let (code, out, err) = run(&eps, &["members"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("zone-c"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_that_hang_or_do_not_speak_grpc_are_skipped() {
    let silent = Silent::start().await;
    let http1 = AppStub::start().await;
    let app = AppStub::start().await;
    let c = three(&app).await;
    let (leader, _) = c.wait_leader(&[0, 1, 2], LONG).await;
    let bad = format!("{},{}", silent.addr, http1.addr);
    let eps = format!("{bad},{}", c.endpoints(&[1]));

    // A read: the silent endpoint gets its share of --timeout (1 s of 3 s),
    // the HTTP/1 server is no gRPC server; node 2 answers.
    let v = json(&eps, &["status", "-o", "json"]).await;
    assert_eq!(v["cluster"]["answered_by"]["id"], 2);
    let (code, out, err) = run(&eps, &["members"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("zone-b"), "{out}");
    // A watch too.
    let (mut watch, mut lines) = Cluster::faxictl_watch(&eps);
    let line = tokio::time::timeout(LONG, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["cluster"]["answered_by"]["id"], 2, "{line}");
    // Its stream outlives the deadline its first message had (1 s): a
    // message after that still arrives (the cluster changes constantly:
    // commit index, contact).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let next = tokio::time::timeout(LONG, lines.next_line())
        .await
        .unwrap()
        .unwrap();
    assert!(next.is_some(), "the watch stream ended");
    watch.kill().await.unwrap();

    // A write is sent only to an endpoint that answered a status first.
    let (code, out, err) = run(&eps, &["transfer-leader", &leader.to_string()]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains(&format!("leader is now node {leader}")),
        "{out}"
    );

    // Nothing usable: exit 3, each endpoint named with what went wrong.
    let (code, _, err) = run(&bad, &["status"]).await;
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains(&silent.addr.to_string()), "{err}");
    assert!(err.contains(&http1.addr.to_string()), "{err}");
    // Over TLS the silent one never finishes the handshake; the HTTP/1
    // one answers in plaintext.
    assert!(err.contains("no connection within"), "{err}");
    assert!(err.contains("no gRPC answer over TLS"), "{err}");
    let (code, _, err) = run(&bad, &["members", "remove", "3"]).await;
    assert_eq!(code, Some(3), "{err}");
    // The members are untouched.
    wait_for("three members", LONG, || async {
        let n = c.status(0).await?.cluster.unwrap_or_default().members.len();
        if n == 3 { Ok(()) } else { Err(format!("{n}")) }
    })
    .await;
}

#[tokio::test]
async fn nonsensical_flags_are_usage_errors() {
    // A closed port: a usage error must be found before any connection
    // (exit 2, not 3).
    let ep = closed_addr();
    for (args, says) in [
        (vec!["--timeout", "0s", "status"], "at least"),
        (vec!["--timeout", "2h", "status"], "at most"),
        (vec!["--timeout", "soon", "status"], "timeout"),
        // https:// with no CA and certificate known (an empty client config).
        (
            vec![
                "--config",
                "/dev/null",
                "--endpoints",
                "https://127.0.0.1:7401",
                "status",
            ],
            "https:// needs the cluster CA",
        ),
        (
            vec![
                "--config",
                "/dev/null",
                "--ca",
                "/nonexistent/ca.pem",
                "status",
            ],
            "missing --cert, --key",
        ),
        (
            vec!["--ca", "/nonexistent/ca.pem", "status"],
            "CA /nonexistent/ca.pem",
        ),
        (
            vec!["--config", "/nonexistent/faxictl.toml", "status"],
            "client config /nonexistent",
        ),
        (
            vec!["--endpoints", "ftp://127.0.0.1:7401", "status"],
            "scheme",
        ),
        (vec!["--endpoints", "localhost", "status"], "host:port"),
        (vec!["--endpoints", "h:0", "status"], "host:port"),
        (vec!["--endpoints", "h:99999", "status"], "host:port"),
        (
            vec!["--endpoints", "http://h:1/path", "status"],
            "host:port",
        ),
        (vec!["--endpoints", ",", "status"], "no endpoints"),
        (vec!["status", "--state", "BOGUS"], "BOGUS"),
        (vec!["status", "--name", ""], "name"),
        (vec!["status", "--name", "a b"], "name pattern"),
        (vec!["status", "--all", "--state", "DOWN"], "--all"),
        (vec!["members", "add", "x"], ""),
        (vec!["--output", "yaml", "status"], "yaml"),
    ] {
        let (code, out, err) = run(&ep, &args).await;
        assert_eq!(code, Some(2), "faxictl {args:?}: {out}{err}");
        assert!(err.contains(says), "faxictl {args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // http:// is plaintext, said explicitly: accepted (and nothing listens).
    let (code, _, err) = run(&format!("http://{ep}"), &["status"]).await;
    assert_eq!(code, Some(3), "{err}");
}
