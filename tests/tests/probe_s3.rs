//! The s3 and backup probes against a real S3-protocol server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use faxi_tests::s3::{ACCESS_KEY, S3Server, SECRET_KEY};
use faxi_tests::{Silent, probe_once, secret_file, target};
use faxi_watchdog::verdict::Outcome;

const HOUR: Duration = Duration::from_secs(3600);

fn spec(
    kind: &str,
    endpoint: &str,
    bucket: &str,
    extra: &str,
) -> faxi_watchdog::config::TargetSpec {
    let ak = secret_file(ACCESS_KEY);
    let sk = secret_file(SECRET_KEY);
    target(&format!(
        "name = \"{kind}\"\nkind = \"{kind}\"\nendpoint = \"{endpoint}\"\nbucket = \"{bucket}\"\npath_style = true\n\
         access_key_file = \"{}\"\nsecret_key_file = \"{}\"\ntimeout = \"2s\"\ninterval = \"2s\"\n{extra}",
        ak.path().display(),
        sk.path().display()
    ))
}

#[tokio::test]
async fn s3_bucket_up_canary_round_trip_and_missing_bucket_down() {
    let s3 = S3Server::start().await;
    s3.create_bucket("faxi-images").await;

    let r = probe_once(&spec("s3", &s3.endpoint(), "faxi-images", "")).await;
    assert_eq!(r.outcome, Outcome::Success, "{r:?}");
    assert_eq!(r.detail, "bucket reachable");

    let r = probe_once(&spec("s3", &s3.endpoint(), "faxi-images", "canary = true")).await;
    assert_eq!(r.outcome, Outcome::Success, "{r:?}");
    assert_eq!(r.detail, "canary put/get/delete ok");
    // The canary cleans up after itself.
    assert_eq!(
        s3.keys("faxi-images", ".faxi-watchdog/").await,
        Vec::<String>::new()
    );

    let r = probe_once(&spec("s3", &s3.endpoint(), "no-such-bucket", "")).await;
    assert_eq!(r.outcome, Outcome::Failure);
    let err = r.error.unwrap();
    assert!(err.contains("HeadBucket failed"), "{err}");
    assert!(!err.contains(SECRET_KEY), "the secret key leaked: {err}");
}

#[tokio::test]
async fn s3_down_when_the_server_is_killed_and_timeout_when_silent() {
    let mut s3 = S3Server::start().await;
    s3.create_bucket("faxi-images").await;
    let s = spec("s3", &s3.endpoint(), "faxi-images", "canary = true");
    assert_eq!(probe_once(&s).await.outcome, Outcome::Success);
    s3.kill().await;
    let r = probe_once(&s).await;
    assert_eq!(r.outcome, Outcome::Failure);
    assert!(r.error.unwrap().contains("HeadBucket failed"));

    let silent = Silent::start().await;
    let s = spec("s3", &format!("http://{}", silent.addr), "faxi-images", "");
    let r = probe_once(&s).await;
    assert_eq!(r.outcome, Outcome::Failure);
    assert!(r.timed_out, "{r:?}");
    assert!(
        r.latency < s.timeout + Duration::from_secs(2),
        "{:?}",
        r.latency
    );
}

#[tokio::test]
async fn backup_fresh_stale_and_empty() {
    let s3 = S3Server::start().await;
    s3.create_bucket("faxi-backups").await;
    let s = spec(
        "backup",
        &s3.endpoint(),
        "faxi-backups",
        "prefix = \"postgres/\"\nrpo = \"2h\"",
    );

    // Nothing under the prefix: no recovery point at all.
    let r = probe_once(&s).await;
    assert_eq!(r.outcome, Outcome::Stale, "{r:?}");
    assert!(r.detail.contains("no backup"), "{r:?}");

    // Newest is 3 h old against a 2 h RPO; an object outside the prefix does not count.
    s3.put_aged("faxi-backups", "postgres/faxi-0100.sql.gz", 5 * HOUR)
        .await;
    s3.put_aged("faxi-backups", "postgres/faxi-0300.sql.gz", 3 * HOUR)
        .await;
    s3.put_aged("faxi-backups", "redis/dump.rdb", Duration::ZERO)
        .await;
    let r = probe_once(&s).await;
    assert_eq!(r.outcome, Outcome::Stale, "{r:?}");
    let age = r.backup_age.unwrap();
    assert!(
        age >= 3 * HOUR && age < 3 * HOUR + Duration::from_secs(120),
        "{age:?}"
    );
    assert!(
        r.detail.contains("postgres/faxi-0300.sql.gz"),
        "{}",
        r.detail
    );

    // A backup 30 minutes old is fresh.
    s3.put_aged("faxi-backups", "postgres/faxi-0530.sql.gz", HOUR / 2)
        .await;
    let r = probe_once(&s).await;
    assert_eq!(r.outcome, Outcome::Success, "{r:?}");
    let age = r.backup_age.unwrap();
    assert!(
        age >= HOUR / 2 && age < HOUR / 2 + Duration::from_secs(120),
        "{age:?}"
    );
}

#[tokio::test]
async fn backup_missing_bucket_is_down() {
    let s3 = S3Server::start().await;
    let s = spec(
        "backup",
        &s3.endpoint(),
        "nope",
        "prefix = \"postgres/\"\nrpo = \"2h\"",
    );
    let r = probe_once(&s).await;
    assert_eq!(r.outcome, Outcome::Failure);
    assert!(r.error.unwrap().contains("ListObjectsV2 failed"));
}
