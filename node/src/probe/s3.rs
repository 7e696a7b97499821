//! `kind = "s3"` (bucket reachable, optional canary round trip) and
//! `kind = "backup"` (age of the newest object under a prefix, against the RPO).

use std::time::{Duration, SystemTime};

use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, SharedHttpClient};
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;

use super::{Healthy, Probe, ProbeContext, ProbeError, ProbeFuture};
use crate::config::{BackupCheck, S3Check};

/// A listing stops after this many pages (100,000 keys): a backup prefix
/// holding more is misconfigured, and a probe must stay cheap.
const MAX_PAGES: usize = 100;

/// The HTTP client every S3 target of a node shares (rustls with ring),
/// trusting the system's CA certificates.
pub fn http_client() -> SharedHttpClient {
    use aws_smithy_http_client::tls;
    let store = if system_roots() > 0 {
        tls::TrustStore::default()
    } else {
        // A machine without CA certificates (a minimal container): the
        // SDK would assert on an empty trust store. Trusting none instead,
        // an S3 endpoint over https fails its probe with a certificate
        // error, and one over plain http (a local S3 server) still works.
        tracing::warn!(
            "no CA certificates found on this machine (install ca-certificates, or set SSL_CERT_FILE): S3 endpoints over https will fail their certificate check"
        );
        tls::TrustStore::empty()
    };
    let mut b = aws_smithy_http_client::Builder::new().tls_provider(tls::Provider::Rustls(
        tls::rustls_provider::CryptoMode::Ring,
    ));
    if let Ok(ctx) = tls::TlsContext::builder().with_trust_store(store).build() {
        b = b.tls_context(ctx);
    }
    b.build_https()
}

/// How many of the system's CA certificates parse as trust anchors.
fn system_roots() -> usize {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(found.certs).0
}

fn client(c: &S3Check, ctx: &ProbeContext) -> aws_sdk_s3::Client {
    let creds = Credentials::new(
        c.access_key.expose(),
        c.secret_key.expose(),
        None,
        None,
        "faxi-watchdog-config",
    );
    let mut b = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(c.region.clone()))
        .credentials_provider(creds)
        .force_path_style(c.path_style)
        .http_client(ctx.s3_http())
        // No SDK retries: rise/fall is the retry, and a retry would hide
        // exactly the flakiness a health check exists to see.
        // No SDK timeouts either: the probe's deadline (probe::run) is the only one.
        .retry_config(RetryConfig::disabled());
    if let Some(e) = &c.endpoint {
        b = b.endpoint_url(e);
    }
    aws_sdk_s3::Client::from_conf(b.build())
}

fn s3_error<E: std::error::Error>(op: &str, e: E) -> ProbeError {
    ProbeError::new(format!("{op} failed: {}", DisplayErrorContext(e)))
}

/// Bucket reachable; with `canary`, a put/get/delete of a small object.
pub(super) struct S3Probe {
    client: aws_sdk_s3::Client,
    bucket: String,
    /// `Some(key)` when the canary round trip is on.
    canary_key: Option<String>,
}

impl S3Probe {
    pub(super) fn new(c: &S3Check, target: &str, ctx: &ProbeContext) -> Self {
        let canary_key = c
            .canary
            .then(|| format!(".faxi-watchdog/canary/node-{}/{target}", ctx.node_id));
        Self {
            client: client(c, ctx),
            bucket: c.bucket.clone(),
            canary_key,
        }
    }
}

impl Probe for S3Probe {
    fn check(&self) -> ProbeFuture<'_> {
        Box::pin(async move {
            self.client
                .head_bucket()
                .bucket(&self.bucket)
                .send()
                .await
                .map_err(|e| s3_error("HeadBucket", e))?;
            let Some(key) = &self.canary_key else {
                return Ok(Healthy {
                    detail: "bucket reachable".into(),
                    ..Healthy::default()
                });
            };
            let nanos = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos();
            let body = format!("faxi-watchdog canary {nanos}");
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .body(ByteStream::from(body.clone().into_bytes()))
                .send()
                .await
                .map_err(|e| s3_error("canary PutObject", e))?;
            let got = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| s3_error("canary GetObject", e))?
                .body
                .collect()
                .await
                .map_err(|e| s3_error("canary GetObject body", e))?
                .into_bytes();
            if got.as_ref() != body.as_bytes() {
                return Err(ProbeError::new(
                    "canary GetObject returned other content than was put",
                ));
            }
            self.client
                .delete_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| s3_error("canary DeleteObject", e))?;
            Ok(Healthy {
                detail: "canary put/get/delete ok".into(),
                ..Healthy::default()
            })
        })
    }
}

/// The newest object under `prefix`, against the RPO.
pub(super) struct BackupProbe {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    rpo: Duration,
}

impl BackupProbe {
    pub(super) fn new(c: &BackupCheck, ctx: &ProbeContext) -> Self {
        Self {
            client: client(&c.s3, ctx),
            bucket: c.s3.bucket.clone(),
            prefix: c.prefix.clone(),
            rpo: c.rpo,
        }
    }
}

impl Probe for BackupProbe {
    fn check(&self) -> ProbeFuture<'_> {
        Box::pin(async move {
            let mut newest: Option<(SystemTime, String)> = None;
            let mut token: Option<String> = None;
            for _ in 0..MAX_PAGES {
                let page = self
                    .client
                    .list_objects_v2()
                    .bucket(&self.bucket)
                    .prefix(&self.prefix)
                    .set_continuation_token(token.take())
                    .send()
                    .await
                    .map_err(|e| s3_error("ListObjectsV2", e))?;
                for o in page.contents() {
                    let Some(t) = o
                        .last_modified()
                        .and_then(|t| SystemTime::try_from(*t).ok())
                    else {
                        continue;
                    };
                    if newest.as_ref().is_none_or(|(n, _)| t > *n) {
                        newest = Some((t, o.key().unwrap_or_default().to_owned()));
                    }
                }
                match page.next_continuation_token() {
                    Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_owned()),
                    _ => break,
                }
            }
            let Some((t, key)) = newest else {
                // Reachable but empty: no recovery point at all, so stale.
                return Ok(Healthy {
                    detail: format!("no backup under \"{}\"", self.prefix),
                    backup_age: None,
                    stale: true,
                });
            };
            // A clock ahead of the server's reads as age zero, never negative.
            let age = SystemTime::now().duration_since(t).unwrap_or_default();
            let age_s = Duration::from_secs(age.as_secs());
            Ok(Healthy {
                detail: format!(
                    "newest {key} is {} old (rpo {})",
                    humantime::format_duration(age_s),
                    humantime::format_duration(self.rpo)
                ),
                backup_age: Some(age),
                stale: age > self.rpo,
            })
        })
    }
}
