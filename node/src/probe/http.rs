//! `kind = "http"`: GET the URL, compare the status code.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::{Healthy, Probe, ProbeError, ProbeFuture};
use crate::config::HttpCheck;

/// Idle keep-alive connections kept per host. Enough for the probes in
/// flight at once even with thousands of targets on one host; without a cap
/// the pool grows by one connection per connect-vs-reuse race, to thousands.
const MAX_IDLE_PER_HOST: usize = 64;

/// How much of a response body is read (and thrown away) so the connection
/// can be reused; a bigger body closes the connection instead.
const MAX_BODY: usize = 64 * 1024;

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// One pooled HTTP(S) client shared by every http target of a node, so a
/// probe reuses a kept-alive connection instead of a handshake each time.
///
/// Its request body type is `B`: the probes send none ([`Empty`], the
/// default); the recovery actions that send JSON use
/// `HttpClient<http_body_util::Full<Bytes>>`, a pool of their own built the
/// same way.
pub struct HttpClient<B = Empty<Bytes>>(Client<Connector, B>);

impl<B> Clone for HttpClient<B> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<B> std::fmt::Debug for HttpClient<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient").finish_non_exhaustive()
    }
}

impl<B> HttpClient<B>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// A client trusting the system's root certificates (none if it has none:
    /// https requests then fail with a certificate error, http ones work).
    pub fn new() -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let tls = match builder.with_native_roots() {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "no system root certificates: https requests will fail");
                let cfg = rustls::ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth();
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(cfg)
            }
        };
        let connector = tls.https_or_http().enable_http1().wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(std::time::Duration::from_secs(30))
            .pool_max_idle_per_host(MAX_IDLE_PER_HOST)
            .build(connector);
        Self(client)
    }

    /// Sends one request over the pool (no retry, no redirect).
    pub fn request(&self, req: hyper::Request<B>) -> hyper_util::client::legacy::ResponseFuture {
        self.0.request(req)
    }
}

impl<B> Default for HttpClient<B>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn default() -> Self {
        Self::new()
    }
}

/// Reads and throws away at most `max` bytes of a response body, so its
/// connection can go back to the pool (a bigger body closes it instead).
pub async fn drain_body(body: &mut hyper::body::Incoming, max: usize) -> Result<(), hyper::Error> {
    let mut read = 0usize;
    while read <= max {
        match body.frame().await {
            Some(Ok(f)) => read += f.data_ref().map_or(0, |d| d.len()),
            Some(Err(e)) => return Err(e),
            None => break,
        }
    }
    Ok(())
}

/// Probes one URL.
pub(super) struct HttpProbe {
    uri: Uri,
    expect: u16,
    client: HttpClient,
}

impl HttpProbe {
    pub(super) fn new(c: &HttpCheck, client: HttpClient) -> Result<Self, String> {
        let uri = c
            .url
            .parse::<Uri>()
            .map_err(|e| format!("invalid url: {e}"))?;
        Ok(Self {
            uri,
            expect: c.expect_status,
            client,
        })
    }
}

impl Probe for HttpProbe {
    fn check(&self) -> ProbeFuture<'_> {
        Box::pin(async move {
            let req = hyper::Request::get(self.uri.clone())
                .header(
                    hyper::header::USER_AGENT,
                    concat!("faxi-watchdog/", env!("CARGO_PKG_VERSION")),
                )
                .body(Empty::new())
                .map_err(|e| ProbeError::new(format!("bad request: {e}")))?;
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| ProbeError::from_error("request failed", &e))?;
            let status = resp.status().as_u16();
            // Drain a bounded body so the connection returns to the pool.
            let mut body = resp.into_body();
            drain_body(&mut body, MAX_BODY)
                .await
                .map_err(|e| ProbeError::from_error("reading body failed", &e))?;
            if status == self.expect {
                Ok(Healthy {
                    detail: format!("HTTP {status}"),
                    ..Healthy::default()
                })
            } else {
                Err(ProbeError::new(format!(
                    "HTTP {status}, expected {}",
                    self.expect
                )))
            }
        })
    }
}
