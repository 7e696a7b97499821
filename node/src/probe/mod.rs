//! The probe engine's checks: one module per target kind behind [`Probe`].
//!
//! A probe answers one question ("is this target healthy right now?") and
//! nothing else: no retries (rise/fall hysteresis is the retry), no sleeping,
//! no state beyond reusable clients. The hard deadline is applied by
//! [`run`], outside the probe, so no target can outlive its `timeout`
//! whatever it does.

mod http;
mod postgres;
mod redis;
mod s3;
mod tcp;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{Check, Redactor, TargetSpec};
use crate::verdict::Outcome;

pub use http::{HttpClient, drain_body};
pub use s3::http_client as s3_http_client;

/// What a probe's future resolves to.
pub type ProbeFuture<'a> = Pin<Box<dyn Future<Output = Result<Healthy, ProbeError>> + Send + 'a>>;

/// One kind of health check, bound to one target.
pub trait Probe: Send + Sync {
    /// Checks the target once. Must be cancel-safe: [`run`] drops the future
    /// at the deadline, and nothing may outlive it but pooled connections.
    fn check(&self) -> ProbeFuture<'_>;
}

/// A probe's answer when the target responded as it should.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Healthy {
    /// A short fact worth showing, like `role=master` or `HTTP 200`.
    pub detail: String,
    /// For backups: the age of the newest object.
    pub backup_age: Option<Duration>,
    /// For backups: the newest object is older than the RPO.
    pub stale: bool,
}

/// Why a probe failed, in words safe to log and show (never a secret).
/// Running out of time is not a probe error: [`run`] alone decides that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeError {
    /// The reason.
    pub message: String,
}

impl ProbeError {
    /// A failure with a reason.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// A failure described by an error and all its sources.
    pub fn from_error(context: &str, e: &(dyn std::error::Error + 'static)) -> Self {
        Self::new(format!("{context}: {}", error_chain(e)))
    }
}

impl std::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// `outer: inner: innermost`, skipping a source that repeats its parent.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut last = out.clone();
    let mut cur = e.source();
    while let Some(s) = cur {
        let msg = s.to_string();
        if !msg.is_empty() && !last.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        last = msg;
        cur = s.source();
    }
    out
}

/// The result of one probe run, deadline included.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// How the result counts for the verdict.
    pub outcome: Outcome,
    /// Time from start to answer (or to the deadline).
    pub latency: Duration,
    /// What the target said.
    pub detail: String,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// The run hit the deadline.
    pub timed_out: bool,
    /// For backups: the age of the newest object.
    pub backup_age: Option<Duration>,
}

/// Runs one probe under a hard deadline.
pub async fn run(probe: &dyn Probe, timeout: Duration) -> Report {
    let start = Instant::now();
    let result = tokio::time::timeout(timeout, probe.check()).await;
    let latency = start.elapsed();
    match result {
        Ok(Ok(h)) => Report {
            outcome: if h.stale {
                Outcome::Stale
            } else {
                Outcome::Success
            },
            latency,
            detail: h.detail,
            error: None,
            timed_out: false,
            backup_age: h.backup_age,
        },
        Ok(Err(e)) => Report {
            outcome: Outcome::Failure,
            latency,
            detail: String::new(),
            error: Some(e.message),
            timed_out: false,
            backup_age: None,
        },
        Err(_) => Report {
            outcome: Outcome::Failure,
            latency,
            detail: String::new(),
            error: Some(format!(
                "timed out after {}",
                humantime::format_duration(timeout)
            )),
            timed_out: true,
            backup_age: None,
        },
    }
}

/// What probes share across targets: connection pools, and who is asking.
#[derive(Debug, Clone)]
pub struct ProbeContext {
    /// Used in the S3 canary's key, so nodes never touch each other's canary.
    pub node_id: u64,
    http: Arc<OnceLock<HttpClient>>,
    s3_http: Arc<OnceLock<aws_sdk_s3::config::SharedHttpClient>>,
}

impl ProbeContext {
    /// A context for node `node_id`; pools are made on first use.
    pub fn new(node_id: u64) -> Self {
        Self {
            node_id,
            http: Arc::default(),
            s3_http: Arc::default(),
        }
    }

    fn http(&self) -> HttpClient {
        self.http.get_or_init(HttpClient::new).clone()
    }

    fn s3_http(&self) -> aws_sdk_s3::config::SharedHttpClient {
        self.s3_http.get_or_init(s3::http_client).clone()
    }
}

/// Builds the probe for a validated target. A target with secrets gets its
/// answers (error and detail) stripped of them, whatever its driver says.
pub fn build(spec: &TargetSpec, ctx: &ProbeContext) -> Result<Arc<dyn Probe>, String> {
    let probe: Arc<dyn Probe> = match &spec.check {
        Check::Postgres(c) => Arc::new(postgres::PostgresProbe::new(c)?),
        Check::Redis(c) => Arc::new(redis::RedisProbe::new(c)?),
        Check::Http(c) => Arc::new(http::HttpProbe::new(c, ctx.http())?),
        Check::Tcp(c) => Arc::new(tcp::TcpProbe::new(c)),
        Check::S3(c) => Arc::new(s3::S3Probe::new(c, &spec.name, ctx)),
        Check::Backup(c) => Arc::new(s3::BackupProbe::new(c, ctx)),
    };
    let redactor = Redactor::new(spec.secrets());
    Ok(if redactor.is_empty() {
        probe
    } else {
        Arc::new(Redacted {
            inner: probe,
            redactor,
        })
    })
}

/// A probe whose answers never quote its target's secrets: its error and
/// detail go to logs, `faxictl status` and the replicated log.
struct Redacted {
    inner: Arc<dyn Probe>,
    redactor: Redactor,
}

impl Probe for Redacted {
    fn check(&self) -> ProbeFuture<'_> {
        Box::pin(async move {
            match self.inner.check().await {
                Ok(mut h) => {
                    h.detail = self.redactor.redact(&h.detail).into_owned();
                    Ok(h)
                }
                Err(e) => Err(ProbeError::new(self.redactor.redact(&e.message))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Hang;
    impl Probe for Hang {
        fn check(&self) -> ProbeFuture<'_> {
            Box::pin(std::future::pending())
        }
    }

    struct Fails;
    impl Probe for Fails {
        fn check(&self) -> ProbeFuture<'_> {
            Box::pin(async { Err(ProbeError::new("connection refused")) })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_cuts_a_probe_that_never_answers() {
        let r = run(&Hang, Duration::from_millis(800)).await;
        assert_eq!(r.outcome, Outcome::Failure);
        assert!(r.timed_out);
        assert_eq!(r.latency, Duration::from_millis(800));
        assert_eq!(r.error.as_deref(), Some("timed out after 800ms"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_keeps_its_reason() {
        let r = run(&Fails, Duration::from_secs(1)).await;
        assert_eq!(r.outcome, Outcome::Failure);
        assert!(!r.timed_out);
        assert_eq!(r.error.as_deref(), Some("connection refused"));
    }

    /// A driver that quotes the password it was given.
    struct Quotes;
    impl Probe for Quotes {
        fn check(&self) -> ProbeFuture<'_> {
            Box::pin(async { Err(ProbeError::new("auth failed for password \"s3cr3t-pw\"")) })
        }
    }

    #[tokio::test]
    async fn a_probe_with_secrets_never_answers_with_them() {
        let secret = crate::config::Secret::new("s3cr3t-pw");
        let probe = Redacted {
            inner: Arc::new(Quotes),
            redactor: Redactor::new([&secret]),
        };
        let r = run(&probe, Duration::from_secs(1)).await;
        assert_eq!(r.error.as_deref(), Some("auth failed for password \"***\""));
    }

    #[test]
    fn error_chain_skips_repeats() {
        let inner = std::io::Error::other("refused");
        let outer = std::io::Error::other(inner);
        // io::Error's Display of a wrapped error repeats the inner message.
        assert_eq!(error_chain(&outer), "refused");
    }
}
