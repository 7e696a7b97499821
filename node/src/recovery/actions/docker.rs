//! `docker.restart|stop|start`: a container by name, or every container
//! with a label, through the Docker engine's API.

use super::{ActionFuture, Outcome, Recheck, StepAction, StepRun};
use crate::recovery::plan::{ContainerRef, DockerOp};

/// A handle on the Docker engine (connected on first use).
#[derive(Debug, Clone, Default)]
pub struct DockerEngine {}

pub(super) struct DockerStep {
    engine: DockerEngine,
    op: DockerOp,
    container: ContainerRef,
    timeout_ms: u64,
}

impl DockerStep {
    pub(super) fn new(
        engine: DockerEngine,
        op: DockerOp,
        container: ContainerRef,
        timeout_ms: u64,
    ) -> Self {
        Self {
            engine,
            op,
            container,
            timeout_ms,
        }
    }
}

impl StepAction for DockerStep {
    fn run<'a>(&'a self, _step: &'a StepRun) -> ActionFuture<'a, Outcome> {
        let _ = (&self.engine, self.op, &self.container, self.timeout_ms);
        Box::pin(async { Outcome::Failed("docker: not available yet".into()) })
    }

    fn recheck<'a>(&'a self, _step: &'a StepRun) -> ActionFuture<'a, Recheck> {
        Box::pin(async { Recheck::CannotTell })
    }
}
