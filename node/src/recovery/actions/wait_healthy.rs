//! `wait_healthy`: until the target's agreed state is UP (the mesh's word,
//! not this node's probe), at most a timeout.

use std::sync::Arc;
use std::time::Duration;

use super::{ActionFuture, AgreedStates, Outcome, Recheck, StepAction, StepRun};
use crate::mesh::state::State;

pub(super) struct WaitHealthy {
    agreed: Arc<dyn AgreedStates>,
    target: String,
    timeout: Duration,
    finish: bool,
}

impl WaitHealthy {
    pub(super) fn new(
        agreed: Arc<dyn AgreedStates>,
        target: String,
        timeout_ms: u64,
        finish: bool,
    ) -> Self {
        Self {
            agreed,
            target,
            timeout: Duration::from_millis(timeout_ms),
            finish,
        }
    }

    fn healthy(&self) -> bool {
        self.agreed.state(&self.target) == Some(State::Up)
    }
}

impl StepAction for WaitHealthy {
    fn run<'a>(&'a self, _step: &'a StepRun) -> ActionFuture<'a, Outcome> {
        Box::pin(async move {
            let wait = async {
                while !self.healthy() {
                    self.agreed.changed().await;
                }
            };
            match tokio::time::timeout(self.timeout, wait).await {
                Ok(()) if self.finish => Outcome::Finish(format!("{} is UP", self.target)),
                Ok(()) => Outcome::Done(format!("{} is UP", self.target)),
                // With `then = "finish"` a timeout means: go on with the
                // next step (the plan's heavier remedy).
                Err(_) if self.finish => Outcome::Done(format!(
                    "{} not UP within {:?}: going on",
                    self.target, self.timeout
                )),
                Err(_) => Outcome::Failed(format!(
                    "{} not UP within {:?} (agreed {})",
                    self.target,
                    self.timeout,
                    self.agreed
                        .state(&self.target)
                        .map_or("unknown", State::as_str)
                )),
            }
        })
    }

    /// Waiting has no effect on the world: it can always be run again.
    fn recheck<'a>(&'a self, _step: &'a StepRun) -> ActionFuture<'a, Recheck> {
        Box::pin(async { Recheck::NotDone })
    }
}
