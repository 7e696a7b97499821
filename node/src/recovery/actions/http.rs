//! `http`: one request to an endpoint (e.g. to scale the app), carrying
//! the fencing token in headers.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue, USER_AGENT};
use hyper::{Method, Request, StatusCode, Uri};

use super::{ActionFuture, ActionHttpClient, Outcome, StepAction, StepRun};
use crate::probe::error_chain;

/// How much of an answer's body is read (and thrown away) so the
/// connection can be reused.
const MAX_BODY: usize = 64 * 1024;

/// The headers every request of a step carries: its incident and its
/// fencing token, so the receiver can refuse a deposed leader's request.
pub(super) const INCIDENT_HEADER: &str = "x-faxi-incident";
/// See [`INCIDENT_HEADER`].
pub(super) const FENCE_TERM_HEADER: &str = "x-faxi-fence-term";
/// See [`INCIDENT_HEADER`].
pub(super) const FENCE_INDEX_HEADER: &str = "x-faxi-fence-index";

/// Why a request did not get an answer.
#[derive(Debug)]
pub(super) enum SendError {
    /// The request could not be built (bad method or URL).
    Build(String),
    /// No answer within the timeout.
    Timeout(Duration),
    /// The connection or the exchange failed.
    Failed(String),
}

/// Sends one request carrying the step's token (and `body` as JSON, if
/// any), reads a bounded answer, and returns its status: all within
/// `timeout`. Cancel-safe: dropping it drops the connection.
pub(super) async fn send(
    client: &ActionHttpClient,
    method: Method,
    uri: Uri,
    body: Option<Bytes>,
    step: &StepRun,
    timeout: Duration,
) -> Result<StatusCode, SendError> {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header(
            USER_AGENT,
            concat!("faxi-watchdog/", env!("CARGO_PKG_VERSION")),
        )
        .header(INCIDENT_HEADER, step.incident)
        .header(FENCE_TERM_HEADER, step.fence.term)
        .header(FENCE_INDEX_HEADER, step.fence.index);
    if body.is_some() {
        req = req.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    let req = req
        .body(Full::new(body.unwrap_or_default()))
        .map_err(|e| SendError::Build(e.to_string()))?;
    let exchange = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| SendError::Failed(error_chain(&e)))?;
        let status = resp.status();
        let mut body = resp.into_body();
        crate::probe::drain_body(&mut body, MAX_BODY)
            .await
            .map_err(|e| SendError::Failed(format!("reading the answer: {}", error_chain(&e))))?;
        Ok(status)
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(r) => r,
        Err(_) => Err(SendError::Timeout(timeout)),
    }
}

/// A method from config (`GET`, `POST`, `PUT`, `PATCH`, `DELETE`, in any
/// case).
pub(super) fn parse_method(m: &str) -> Result<Method, String> {
    Method::from_bytes(m.trim().to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("invalid method {m:?}"))
}

pub(super) struct HttpStep {
    client: ActionHttpClient,
    method: String,
    url: String,
    expect_status: u16,
    body: Option<String>,
    timeout: Duration,
}

impl HttpStep {
    pub(super) fn new(
        client: ActionHttpClient,
        method: String,
        url: String,
        expect_status: u16,
        body: Option<String>,
        timeout_ms: u64,
    ) -> Self {
        Self {
            client,
            method,
            url,
            expect_status,
            body,
            timeout: Duration::from_millis(timeout_ms),
        }
    }
}

impl StepAction for HttpStep {
    /// The URL comes from config and holds no credentials, but it is left
    /// out of the outcome all the same: the step's description names it.
    fn run<'a>(&'a self, step: &'a StepRun) -> ActionFuture<'a, Outcome> {
        Box::pin(async move {
            let method = match parse_method(&self.method) {
                Ok(m) => m,
                Err(e) => return Outcome::Failed(format!("http: {e}")),
            };
            let what = format!("http {method}");
            let uri = match self.url.parse::<Uri>() {
                Ok(u) => u,
                Err(e) => return Outcome::Failed(format!("{what}: invalid url: {e}")),
            };
            let body = self.body.clone().map(Bytes::from);
            match send(&self.client, method, uri, body, step, self.timeout).await {
                Ok(s) if s.as_u16() == self.expect_status => Outcome::Done(format!("HTTP {s}")),
                Ok(s) => {
                    Outcome::Failed(format!("{what}: HTTP {s}, expected {}", self.expect_status))
                }
                Err(SendError::Build(e)) => Outcome::Failed(format!("{what}: bad request: {e}")),
                Err(SendError::Timeout(t)) => {
                    Outcome::Failed(format!("{what}: no answer within {t:?}"))
                }
                Err(SendError::Failed(e)) => {
                    Outcome::Failed(format!("{what}: request failed: {e}"))
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_read_in_any_case_and_nonsense_is_refused() {
        assert_eq!(parse_method("post").ok(), Some(Method::POST));
        assert_eq!(parse_method(" DELETE ").ok(), Some(Method::DELETE));
        assert!(parse_method("GE T").is_err());
        assert!(parse_method("").is_err());
    }
}
