//! `notify`: a JSON webhook to the URL held in an environment variable.

use super::{ActionFuture, Outcome, StepAction, StepRun};
use crate::probe::HttpClient;

pub(super) struct Notify {
    client: HttpClient,
    url_env: String,
    message: String,
    timeout_ms: u64,
}

impl Notify {
    pub(super) fn new(
        client: HttpClient,
        url_env: String,
        message: String,
        timeout_ms: u64,
    ) -> Self {
        Self {
            client,
            url_env,
            message,
            timeout_ms,
        }
    }
}

impl StepAction for Notify {
    fn run<'a>(&'a self, _step: &'a StepRun) -> ActionFuture<'a, Outcome> {
        let _ = (&self.client, &self.url_env, &self.message, self.timeout_ms);
        Box::pin(async { Outcome::Failed("notify: not available yet".into()) })
    }
}
