//! The redis probe against a real redis-server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use faxi_tests::redis::{PASSWORD, Redis};
use faxi_tests::{Silent, probe_once, secret_file, target};
use faxi_watchdog::verdict::Outcome;

fn spec(url: &str, password: Option<&str>) -> faxi_watchdog::config::TargetSpec {
    let pw = password.map(secret_file);
    let pw_line = pw
        .as_ref()
        .map(|f| format!("password_file = \"{}\"\n", f.path().display()));
    target(&format!(
        "name = \"redis\"\nkind = \"redis\"\nurl = \"{url}\"\ntimeout = \"1s\"\n{}",
        pw_line.unwrap_or_default()
    ))
}

#[tokio::test]
async fn redis_up_with_role_then_down_when_killed_then_up_again() {
    let mut redis = Redis::start().await;
    let s = spec(&redis.url(), Some(PASSWORD));
    let r = probe_once(&s).await;
    assert_eq!(r.outcome, Outcome::Success, "{r:?}");
    assert_eq!(r.detail, "role=master");

    redis.kill().await;
    let r = probe_once(&s).await;
    assert_eq!(r.outcome, Outcome::Failure);
    assert!(
        r.error.as_deref().unwrap().contains("connect failed"),
        "{r:?}"
    );

    redis.start_again().await;
    assert_eq!(probe_once(&s).await.outcome, Outcome::Success);
}

#[tokio::test]
async fn redis_wrong_or_missing_password_is_down() {
    let redis = Redis::start().await;
    let r = probe_once(&spec(&redis.url(), Some("wrong-pass"))).await;
    assert_eq!(r.outcome, Outcome::Failure);
    let err = r.error.unwrap();
    assert!(!err.contains("wrong-pass"), "the password leaked: {err}");
    assert!(
        err.to_lowercase().contains("auth") || err.contains("WRONGPASS"),
        "{err}"
    );

    let r = probe_once(&spec(&redis.url(), None)).await;
    assert_eq!(r.outcome, Outcome::Failure);
    assert!(r.error.unwrap().contains("NOAUTH"));
}

#[tokio::test]
async fn redis_silent_server_hits_the_timeout() {
    let silent = Silent::start().await;
    let s = spec(&format!("redis://{}", silent.addr), None);
    let r = probe_once(&s).await;
    assert_eq!(r.outcome, Outcome::Failure);
    assert!(r.timed_out, "{r:?}");
}
