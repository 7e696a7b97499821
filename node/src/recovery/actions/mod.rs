//! The actions a recovery step can take: one module per action behind
//! [`StepAction`], as the probes are behind `Probe`, so a new action (the
//! Kubernetes and restore actions) is a new file here, not edits across the
//! tree.
//!
//! An action does one thing, carrying the fencing token where the thing it
//! talks to can hold it, and says how it went. It never retries on its own
//! and never decides whether it may run: the executor has committed the
//! step's intent and confirmed its leadership before [`StepAction::run`] is
//! called. Errors are worded to be shown to operators: never a secret.

mod docker;
mod exec;
mod http;
pub mod k8s;
mod notify;
mod wait_healthy;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub use docker::DockerEngine;
pub use k8s::KubeApi;

/// The HTTP(S) client of the `http` and `notify` steps: pooled and
/// rustls-based like the probes' one, with a body.
pub type ActionHttpClient = crate::probe::HttpClient<http_body_util::Full<bytes::Bytes>>;

use super::plan::Action;
use crate::mesh::state::State;

/// What an action's future resolves to.
pub type ActionFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The fencing token a step carries: the term of the leader that committed
/// its intent, and the intent's log index. Whoever receives a side effect
/// can refuse one whose token is older than one it has seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Fence {
    /// Raft term of the intent.
    pub term: u64,
    /// Log index of the intent.
    pub index: u64,
}

/// The step being run: which incident, for which target, under which token.
#[derive(Debug, Clone)]
pub struct StepRun {
    /// The incident's id.
    pub incident: u64,
    /// The target the incident is about.
    pub target: String,
    /// The plan's name.
    pub plan: String,
    /// The step's position in its plan (1-based, `finally` steps after the
    /// steps), for messages.
    pub step: u32,
    /// The fencing token.
    pub fence: Fence,
    /// When its intent was recorded (the leader's clock, Unix ms): a
    /// re-check counts what happened after it.
    pub intent_at_ms: u64,
}

/// How a step went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It did what it says; a short note worth showing.
    Done(String),
    /// It did not; why, in words safe to show.
    Failed(String),
    /// `wait_healthy` with `then = "finish"` saw the target healthy: the
    /// plan ends here (its `finally` steps still run).
    Finish(String),
}

/// What a re-check of a step that may have run found (a leader died
/// between its intent and its outcome).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recheck {
    /// The world shows it ran after the intent (e.g. the container started
    /// after it): counted as done.
    Done(String),
    /// The world shows it did not run.
    NotDone,
    /// Nothing tells: only an idempotent step is run again.
    CannotTell,
}

/// One bound step action.
pub trait StepAction: Send + Sync {
    /// Runs the step once. Cancel-safe: the executor drops the future when
    /// it loses leadership or shuts down.
    fn run<'a>(&'a self, step: &'a StepRun) -> ActionFuture<'a, Outcome>;

    /// Whether a step whose outcome was never recorded ran after its
    /// intent. By default nothing tells.
    fn recheck<'a>(&'a self, step: &'a StepRun) -> ActionFuture<'a, Recheck> {
        let _ = step;
        Box::pin(async { Recheck::CannotTell })
    }
}

/// What `wait_healthy` reads: the agreed state, and a way to wait for it
/// to change.
pub trait AgreedStates: Send + Sync {
    /// The target's agreed state now, if the target is known.
    fn state(&self, target: &str) -> Option<State>;
    /// Resolves when the replicated state may have changed.
    fn changed(&self) -> ActionFuture<'_, ()>;
}

/// What the actions act on, shared by every step a node runs.
#[derive(Clone)]
pub struct World {
    /// The Docker engine (its socket from `DOCKER_HOST`, or the default).
    pub docker: DockerEngine,
    /// The replicated agreed state.
    pub agreed: Arc<dyn AgreedStates>,
    /// HTTP(S) for `http` and `notify` (`ActionHttpClient::new()`, or
    /// `Default`).
    pub http: ActionHttpClient,
    /// The Kubernetes API server for `k8s.*` (`[kubernetes] kubeconfig`,
    /// else the pod's service account: `KubeApi::default()`).
    pub kube: KubeApi,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World").finish_non_exhaustive()
    }
}

/// A re-check bounded by `timeout`: what `check` found, or cannot tell
/// when it failed (logged, naming the step) or did not finish in time.
pub(super) async fn bounded_recheck<E: std::fmt::Display>(
    what: String,
    timeout: std::time::Duration,
    step: &StepRun,
    check: impl Future<Output = Result<Recheck, E>>,
) -> Recheck {
    match tokio::time::timeout(timeout, check).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::warn!(
                incident = step.incident,
                step = step.step,
                error = %e,
                "{what}: cannot re-check"
            );
            Recheck::CannotTell
        }
        Err(_) => Recheck::CannotTell,
    }
}

/// The action a step names, bound to the world it acts on.
pub fn bind(action: &Action, world: &World) -> Box<dyn StepAction> {
    match action {
        Action::Docker {
            op,
            container,
            timeout_ms,
        } => Box::new(docker::DockerStep::new(
            world.docker.clone(),
            *op,
            container.clone(),
            *timeout_ms,
        )),
        Action::WaitHealthy {
            target,
            timeout_ms,
            finish,
        } => Box::new(wait_healthy::WaitHealthy::new(
            world.agreed.clone(),
            target.clone(),
            *timeout_ms,
            *finish,
        )),
        Action::Exec {
            argv,
            env,
            timeout_ms,
        } => Box::new(exec::Exec::new(argv.clone(), env.clone(), *timeout_ms)),
        Action::Http {
            method,
            url,
            expect_status,
            body,
            timeout_ms,
        } => Box::new(http::HttpStep::new(
            world.http.clone(),
            method.clone(),
            url.clone(),
            *expect_status,
            body.clone(),
            *timeout_ms,
        )),
        Action::Notify {
            url_env,
            message,
            timeout_ms,
        } => Box::new(notify::Notify::new(
            world.http.clone(),
            url_env.clone(),
            message.clone(),
            *timeout_ms,
        )),
        Action::K8s {
            op,
            namespace,
            timeout_ms,
        } => Box::new(k8s::K8sStep::new(
            world.kube.clone(),
            op.clone(),
            namespace.clone(),
            *timeout_ms,
        )),
    }
}
