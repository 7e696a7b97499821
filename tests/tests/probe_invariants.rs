//! Two probe invariants (ARCHITECTURE.md), against real servers:
//! - probes do not retry: one probe of a server answering 503 is exactly one
//!   request (HTTP, S3, backup listing);
//! - probes are cancel-safe: a probe cut by its timeout leaves no connection
//!   open (PostgreSQL, Redis, HTTP), counted by a proxy in front of the
//!   server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use faxi_tests::http::AppStub;
use faxi_tests::postgres::{PASSWORD, Postgres};
use faxi_tests::proxy::Proxy;
use faxi_tests::redis::{self, Redis};
use faxi_tests::s3::{ACCESS_KEY, SECRET_KEY};
use faxi_tests::{probe_once, secret_file, target, wait_for};
use faxi_watchdog::probe::ProbeContext;
use faxi_watchdog::verdict::Outcome;

/// How long a closed connection may take to be seen closed at the proxy.
const CLOSE: Duration = Duration::from_secs(3);

fn s3_spec(kind: &str, endpoint: &str, extra: &str) -> faxi_watchdog::config::TargetSpec {
    let ak = secret_file(ACCESS_KEY);
    let sk = secret_file(SECRET_KEY);
    target(&format!(
        "name = \"{kind}\"\nkind = \"{kind}\"\nendpoint = \"{endpoint}\"\nbucket = \"faxi\"\npath_style = true\n\
         access_key_file = \"{}\"\nsecret_key_file = \"{}\"\ntimeout = \"10s\"\ninterval = \"20s\"\n{extra}",
        ak.path().display(),
        sk.path().display()
    ))
}

#[tokio::test]
async fn an_http_503_is_one_request_per_probe() {
    let app = AppStub::start().await;
    app.set_status(503);
    let s = target(&format!(
        "name = \"app\"\nkind = \"http\"\nurl = \"{}\"\ntimeout = \"5s\"\ninterval = \"10s\"",
        app.url()
    ));
    for n in 1..=3 {
        let r = probe_once(&s).await;
        assert_eq!(r.outcome, Outcome::Failure, "{r:?}");
        assert_eq!(r.error.as_deref(), Some("HTTP 503, expected 200"));
        assert_eq!(app.hits(), n, "requests after {n} probe(s)");
    }
}

#[tokio::test]
async fn an_s3_503_is_one_request_per_probe() {
    // An S3 endpoint that answers 503 to everything: a retrying SDK would
    // call it again (three attempts by default) within the 10 s timeout.
    let s3 = AppStub::start().await;
    s3.set_status(503);
    let endpoint = format!("http://{}", s3.addr);
    let mut want = 0;
    for (kind, extra, op) in [
        ("s3", "", "HeadBucket"),
        ("s3", "canary = true", "HeadBucket"),
        ("backup", "prefix = \"pg/\"\nrpo = \"2h\"", "ListObjectsV2"),
    ] {
        let r = probe_once(&s3_spec(kind, &endpoint, extra)).await;
        want += 1;
        assert_eq!(r.outcome, Outcome::Failure, "{kind}: {r:?}");
        assert!(!r.timed_out, "{kind}: {r:?}");
        let err = r.error.unwrap();
        assert!(err.contains(&format!("{op} failed")), "{kind}: {err}");
        assert_eq!(s3.hits(), want, "{kind}: requests so far");
    }
}

/// Runs a probe that must hit its timeout, then waits until the proxy has
/// seen every connection closed, while the probe and its shared pools live
/// on as in a node (dropping them could close what the probe left open).
async fn times_out_and_closes(what: &str, spec: &faxi_watchdog::config::TargetSpec, proxy: &Proxy) {
    let ctx = ProbeContext::new(1);
    let probe = faxi_watchdog::probe::build(spec, &ctx).unwrap();
    let r = faxi_watchdog::probe::run(probe.as_ref(), spec.timeout).await;
    assert!(r.timed_out, "{what}: {r:?}");
    assert!(proxy.accepted() >= 1, "{what}: the probe never connected");
    wait_for(
        &format!("{what}: no connection left open after the timeout"),
        CLOSE,
        || async {
            match proxy.open() {
                0 => Ok(()),
                n => Err(format!("{n} open of {} accepted", proxy.accepted())),
            }
        },
    )
    .await;
    drop((probe, ctx));
}

#[tokio::test]
async fn a_postgres_probe_cut_by_its_timeout_leaves_no_connection() {
    let pg = Postgres::start().await;
    let proxy = Proxy::start(([127, 0, 0, 1], pg.port).into()).await;
    let pw = secret_file(PASSWORD);
    // Connected and authenticated, then a query slower than the timeout.
    let s = target(&format!(
        "name = \"db\"\nkind = \"postgres\"\ndsn = \"host=127.0.0.1 port={} user=faxi dbname=postgres\"\n\
         password_file = \"{}\"\nquery = \"SELECT pg_sleep(60)\"\ntimeout = \"1s\"\ninterval = \"2s\"",
        proxy.addr.port(),
        pw.path().display()
    ));
    times_out_and_closes("postgres", &s, &proxy).await;
}

#[tokio::test]
async fn a_redis_probe_cut_by_its_timeout_leaves_no_connection() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(([127, 0, 0, 1], redis.port).into()).await;
    // Every client's commands wait while the server is paused (the probe's
    // AUTH and PING among them); the pause outlasts the test.
    let admin = ::redis::Client::open(format!(
        "redis://:{}@127.0.0.1:{}",
        redis::PASSWORD,
        redis.port
    ))
    .unwrap();
    let mut con = admin.get_multiplexed_async_connection().await.unwrap();
    let _: () = ::redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(60_000)
        .arg("ALL")
        .query_async(&mut con)
        .await
        .unwrap();
    let pw = secret_file(redis::PASSWORD);
    let s = target(&format!(
        "name = \"redis\"\nkind = \"redis\"\nurl = \"redis://127.0.0.1:{}\"\npassword_file = \"{}\"\ntimeout = \"1s\"",
        proxy.addr.port(),
        pw.path().display()
    ));
    times_out_and_closes("redis", &s, &proxy).await;
}

#[tokio::test]
async fn an_http_probe_cut_by_its_timeout_leaves_no_connection() {
    let app = AppStub::start().await;
    app.set_delay(Duration::from_secs(60));
    let proxy = Proxy::start(app.addr).await;
    let s = target(&format!(
        "name = \"app\"\nkind = \"http\"\nurl = \"http://{}/health\"\ntimeout = \"1s\"\ninterval = \"2s\"",
        proxy.addr
    ));
    times_out_and_closes("http", &s, &proxy).await;
}
