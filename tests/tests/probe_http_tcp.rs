//! The http and tcp probes against a real HTTP server, a closed port, a
//! silent server and a blackholed address.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use faxi_tests::http::AppStub;
use faxi_tests::{Blackhole, Silent, free_port, probe_once, target};
use faxi_watchdog::verdict::Outcome;

fn http(url: &str, extra: &str) -> faxi_watchdog::config::TargetSpec {
    target(&format!(
        "name = \"app\"\nkind = \"http\"\nurl = \"{url}\"\ntimeout = \"500ms\"\n{extra}"
    ))
}

fn tcp(addr: &str) -> faxi_watchdog::config::TargetSpec {
    target(&format!(
        "name = \"port\"\nkind = \"tcp\"\naddr = \"{addr}\"\ntimeout = \"500ms\""
    ))
}

#[tokio::test]
async fn http_status_is_compared_with_expect_status() {
    let app = AppStub::start().await;
    let r = probe_once(&http(&app.url(), "")).await;
    assert_eq!(r.outcome, Outcome::Success, "{r:?}");
    assert_eq!(r.detail, "HTTP 200");

    app.set_status(503);
    let r = probe_once(&http(&app.url(), "")).await;
    assert_eq!(r.outcome, Outcome::Failure);
    assert_eq!(r.error.as_deref(), Some("HTTP 503, expected 200"));

    let r = probe_once(&http(&app.url(), "expect_status = 503")).await;
    assert_eq!(r.outcome, Outcome::Success);
}

#[tokio::test]
async fn http_down_when_stopped_and_up_when_back() {
    let mut app = AppStub::start().await;
    let s = http(&app.url(), "");
    assert_eq!(probe_once(&s).await.outcome, Outcome::Success);
    app.stop();
    let r = probe_once(&s).await;
    assert_eq!(r.outcome, Outcome::Failure);
    assert!(r.error.unwrap().contains("request failed"));
    app.restart().await;
    assert_eq!(probe_once(&s).await.outcome, Outcome::Success);
}

#[tokio::test]
async fn http_slow_server_hits_the_timeout() {
    let app = AppStub::start().await;
    app.set_delay(Duration::from_secs(30));
    let s = http(&app.url(), "");
    let r = probe_once(&s).await;
    assert_eq!(r.outcome, Outcome::Failure);
    assert!(r.timed_out);
    assert_eq!(r.error.as_deref(), Some("timed out after 500ms"));
}

#[tokio::test]
async fn http_silent_and_blackholed_servers_hit_the_timeout() {
    let silent = Silent::start().await;
    let r = probe_once(&http(&format!("http://{}/health", silent.addr), "")).await;
    assert!(r.timed_out, "{r:?}");
    let hole = Blackhole::start().await;
    let r = probe_once(&http(&format!("http://{}/health", hole.addr), "")).await;
    assert!(r.timed_out, "{r:?}");
}

#[tokio::test]
async fn tcp_up_refused_and_blackholed() {
    let app = AppStub::start().await;
    let r = probe_once(&tcp(&app.addr.to_string())).await;
    assert_eq!(r.outcome, Outcome::Success, "{r:?}");

    let r = probe_once(&tcp(&format!("127.0.0.1:{}", free_port()))).await;
    assert_eq!(r.outcome, Outcome::Failure);
    assert!(!r.timed_out);
    assert!(r.error.unwrap().contains("refused"));

    let hole = Blackhole::start().await;
    let r = probe_once(&tcp(&hole.addr.to_string())).await;
    assert_eq!(r.outcome, Outcome::Failure);
    assert!(
        r.timed_out,
        "a blackholed connect must end at the timeout: {r:?}"
    );
}
