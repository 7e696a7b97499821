//! The postgres probe against a real PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use faxi_tests::postgres::{PASSWORD, Postgres};
use faxi_tests::{Silent, probe_once, secret_file, target};
use faxi_watchdog::verdict::Outcome;

fn spec(dsn: &str, password: &str, extra: &str) -> faxi_watchdog::config::TargetSpec {
    let pw = secret_file(password);
    target(&format!(
        "name = \"db\"\nkind = \"postgres\"\ndsn = \"{dsn}\"\npassword_file = \"{}\"\ninterval = \"2s\"\ntimeout = \"1s\"\n{extra}",
        pw.path().display()
    ))
}

#[tokio::test]
async fn postgres_up_then_down_when_killed_then_up_again() {
    let pg = Postgres::start().await;
    pg.client()
        .await
        .batch_execute("CREATE TABLE fax_jobs (id int, created_at timestamptz)")
        .await
        .unwrap();
    let s = spec(
        &pg.dsn(),
        PASSWORD,
        "query = \"SELECT count(*) FROM fax_jobs\"",
    );

    let r = probe_once(&s).await;
    assert_eq!(r.outcome, Outcome::Success, "{r:?}");
    assert_eq!(r.detail, "query ok, 1 row(s)");

    pg.kill();
    let r = probe_once(&s).await;
    assert_eq!(r.outcome, Outcome::Failure);
    let err = r.error.unwrap();
    assert!(err.contains("connect failed"), "{err}");
    assert!(!err.contains(PASSWORD), "the password leaked: {err}");

    pg.start_again().await;
    let r = probe_once(&s).await;
    assert_eq!(r.outcome, Outcome::Success, "{r:?}");
}

#[tokio::test]
async fn postgres_wrong_password_is_down_and_says_why() {
    let pg = Postgres::start().await;
    let r = probe_once(&spec(&pg.dsn(), "not-the-password", "")).await;
    assert_eq!(r.outcome, Outcome::Failure);
    let err = r.error.unwrap();
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(
        !err.contains("not-the-password"),
        "the password leaked: {err}"
    );
}

#[tokio::test]
async fn postgres_bad_query_is_down() {
    let pg = Postgres::start().await;
    let r = probe_once(&spec(
        &pg.dsn(),
        PASSWORD,
        "query = \"SELECT * FROM no_such_table\"",
    ))
    .await;
    assert_eq!(r.outcome, Outcome::Failure);
    assert!(r.error.unwrap().contains("no_such_table"));
}

#[tokio::test]
async fn postgres_silent_server_hits_the_timeout() {
    let silent = Silent::start().await;
    let dsn = format!(
        "host=127.0.0.1 port={} user=faxi dbname=postgres",
        silent.addr.port()
    );
    let s = spec(&dsn, PASSWORD, "");
    let r = probe_once(&s).await;
    assert_eq!(r.outcome, Outcome::Failure);
    assert!(r.timed_out, "{r:?}");
    // Never (much) longer than the timeout, whatever the server does.
    assert!(
        r.latency < s.timeout + Duration::from_secs(2),
        "{:?}",
        r.latency
    );
}
