//! `notify`: a JSON webhook to the URL held in an environment variable.
//!
//! The URL is read when the step runs (so a rotated webhook needs no
//! restart) and is treated as a secret: it may carry a token in its path
//! or query. It is never logged, and never part of an outcome: errors name
//! the variable, and any text from the connection is stripped of the URL
//! and its parts.

use std::time::Duration;

use bytes::Bytes;
use hyper::{Method, Uri};

use super::http::{SendError, send};
use super::{ActionFuture, ActionHttpClient, Outcome, StepAction, StepRun};
use crate::config::{Redactor, Secret};

pub(super) struct Notify {
    client: ActionHttpClient,
    url_env: String,
    message: String,
    timeout: Duration,
}

impl Notify {
    pub(super) fn new(
        client: ActionHttpClient,
        url_env: String,
        message: String,
        timeout_ms: u64,
    ) -> Self {
        Self {
            client,
            url_env,
            message,
            timeout: Duration::from_millis(timeout_ms),
        }
    }
}

/// The webhook's body: what happened, where, and under which token.
pub(super) fn body(step: &StepRun, message: &str) -> serde_json::Value {
    serde_json::json!({
        "incident": step.incident,
        "target": step.target,
        "plan": step.plan,
        "step": step.step,
        "fence": { "term": step.fence.term, "index": step.fence.index },
        "message": message,
    })
}

/// A redactor for the URL: whole, and its parts that could hold a token
/// (user info, path, query), so no error text can quote them.
fn url_redactor(url: &str, uri: Option<&Uri>) -> Redactor {
    let mut parts = vec![Secret::new(url)];
    if let Some(u) = uri {
        if let Some(pq) = u.path_and_query() {
            if pq.as_str() != "/" {
                parts.push(Secret::new(pq.as_str()));
                parts.push(Secret::new(pq.path()));
            }
            if let Some(q) = pq.query() {
                parts.push(Secret::new(q));
            }
        }
        if let Some(a) = u.authority()
            && let Some((userinfo, _)) = a.as_str().rsplit_once('@')
        {
            parts.push(Secret::new(userinfo));
        }
    }
    parts.retain(|s| s.expose().len() > 1);
    Redactor::new(parts.iter())
}

impl StepAction for Notify {
    fn run<'a>(&'a self, step: &'a StepRun) -> ActionFuture<'a, Outcome> {
        Box::pin(async move {
            let var = &self.url_env;
            let url = match std::env::var(var) {
                Ok(u) if !u.trim().is_empty() => u.trim().to_owned(),
                Ok(_) => {
                    return Outcome::Failed(format!(
                        "notify: the environment variable {var} is empty"
                    ));
                }
                Err(std::env::VarError::NotPresent) => {
                    return Outcome::Failed(format!(
                        "notify: the environment variable {var} is not set"
                    ));
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Outcome::Failed(format!(
                        "notify: the environment variable {var} is not valid UTF-8"
                    ));
                }
            };
            let uri = url.parse::<Uri>().ok();
            let redact = url_redactor(&url, uri.as_ref());
            let Some(uri) = uri.filter(|u| {
                matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some()
            }) else {
                return Outcome::Failed(format!(
                    "notify: ${var} does not hold an http:// or https:// URL"
                ));
            };
            // Credentials in the authority would be logged by the HTTP
            // client's connection pool (at trace), and are refused, as
            // config refuses them in every URL.
            if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
                return Outcome::Failed(format!(
                    "notify: ${var} holds a URL with credentials (user@), which is refused: \
                     give the webhook its token in the path or query"
                ));
            }
            let body = match serde_json::to_vec(&body(step, &self.message)) {
                Ok(b) => Bytes::from(b),
                Err(e) => return Outcome::Failed(format!("notify: cannot encode the body: {e}")),
            };
            let failed = |what: String| {
                Outcome::Failed(
                    redact
                        .redact(&format!("notify ${var}: {what}"))
                        .into_owned(),
                )
            };
            match send(
                &self.client,
                Method::POST,
                uri,
                Some(body),
                step,
                self.timeout,
            )
            .await
            {
                Ok(s) if s.is_success() => Outcome::Done(format!("notified ${var}: HTTP {s}")),
                Ok(s) => failed(format!("HTTP {s}")),
                Err(SendError::Build(e)) => failed(format!("bad request: {e}")),
                Err(SendError::Timeout(t)) => failed(format!("no answer within {t:?}")),
                Err(SendError::Failed(e)) => failed(format!("request failed: {e}")),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recovery::actions::Fence;

    #[test]
    fn the_body_carries_the_incident_and_the_fencing_token() {
        let step = StepRun {
            incident: 7,
            target: "redis".into(),
            plan: "redis".into(),
            step: 2,
            fence: Fence { term: 3, index: 41 },
            intent_at_ms: 0,
        };
        assert_eq!(
            body(&step, "restarting redis"),
            serde_json::json!({
                "incident": 7, "target": "redis", "plan": "redis", "step": 2,
                "fence": {"term": 3, "index": 41}, "message": "restarting redis",
            })
        );
    }

    #[test]
    fn no_part_of_the_url_that_could_hold_a_token_survives_redaction() {
        let url = "https://user:pw@hooks.example/services/T0/B0/sekrit?token=abc";
        let uri = url.parse::<Uri>().ok();
        let r = url_redactor(url, uri.as_ref());
        for text in [
            url,
            "/services/T0/B0/sekrit?token=abc",
            "/services/T0/B0/sekrit",
            "token=abc",
            "user:pw",
        ] {
            let out = r.redact(&format!("error: {text}: end")).into_owned();
            assert_eq!(out, "error: ***: end", "{text}");
        }
    }
}
