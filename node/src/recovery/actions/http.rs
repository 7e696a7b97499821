//! `http`: one request to an endpoint (e.g. to scale the app), carrying
//! the fencing token in headers.

use super::{ActionFuture, Outcome, StepAction, StepRun};
use crate::probe::HttpClient;

pub(super) struct HttpStep {
    client: HttpClient,
    method: String,
    url: String,
    expect_status: u16,
    body: Option<String>,
    timeout_ms: u64,
}

impl HttpStep {
    pub(super) fn new(
        client: HttpClient,
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
            timeout_ms,
        }
    }
}

impl StepAction for HttpStep {
    fn run<'a>(&'a self, _step: &'a StepRun) -> ActionFuture<'a, Outcome> {
        let _ = (
            &self.client,
            &self.method,
            &self.url,
            self.expect_status,
            &self.body,
            self.timeout_ms,
        );
        Box::pin(async { Outcome::Failed("http: not available yet".into()) })
    }
}
