//! Recovery plans: what config gives (`[recovery.<name>]`,
//! `[recovery_defaults]`) and what an attempt records in the log, so that a
//! later leader resumes the very plan its predecessor started, whatever its
//! own config says.
//!
//! These types are encoded in the replicated log ([`crate::mesh::codec`]):
//! a field is never removed, renamed in meaning or reordered; a new enum
//! variant goes last.

use serde::{Deserialize, Serialize};

/// `[recovery_defaults]`: what every plan shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryDefaults {
    /// Recoveries running at once, cluster-wide (default 1).
    pub max_concurrent: u32,
    /// The environment variable holding the webhook URL for `notify` steps
    /// and escalations (read on the node that runs them, never logged).
    pub notify_url_env: Option<String>,
    /// Record what would run, run nothing (default false; a plan may say
    /// otherwise).
    pub dry_run: bool,
    /// How long an operator's approval holds (default 15 minutes).
    pub approval_ttl_ms: u64,
}

impl Default for RecoveryDefaults {
    fn default() -> Self {
        Self {
            max_concurrent: 1,
            notify_url_env: None,
            dry_run: false,
            approval_ttl_ms: 15 * 60 * 1000,
        }
    }
}

/// `[recovery.<name>]`: a plan a target names with `recovery = "<name>"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Its name (the table's key).
    pub name: String,
    /// Run in order; a failed step fails the attempt.
    pub steps: Vec<Step>,
    /// Run after the steps, whether they succeeded, failed or were cut
    /// short (the target came back): e.g. start the app again.
    pub finally: Vec<Step>,
    /// After a finished attempt, how long before another may start
    /// (default 10 minutes).
    pub cooldown_ms: u64,
    /// Attempts per `attempt_window_ms`, then escalate and stop trying
    /// (default 3 per hour).
    pub max_attempts: u32,
    /// See `max_attempts`.
    pub attempt_window_ms: u64,
    /// Record what would run, run nothing.
    pub dry_run: bool,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// What it does.
    pub action: Action,
    /// It waits for an operator's `faxictl approve` before it runs.
    pub approval: bool,
    /// Running it twice does no harm. A step that may have run (a leader
    /// died between its intent and its outcome) is re-run by the next
    /// leader only if it is idempotent and its action cannot tell whether it
    /// ran; otherwise it waits for a person. Docker actions, `k8s.scale`
    /// and `wait_healthy` are idempotent; `exec`, `http`, `notify`,
    /// `k8s.delete_pods` and `k8s.rollout_restart` only when the config
    /// says `idempotent = true`.
    pub idempotent: bool,
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// `docker.restart|stop|start`: a container by name or by label.
    Docker {
        /// Which operation.
        op: DockerOp,
        /// Which container(s).
        container: ContainerRef,
        /// How long the Docker engine gets (default 30 s).
        timeout_ms: u64,
    },
    /// `wait_healthy`: until the target's agreed state is UP, at most
    /// `timeout_ms`; with `then = "finish"` the plan ends (its `finally`
    /// steps still run) once the target is healthy, and a timeout is not a
    /// failure but the next step.
    WaitHealthy {
        /// The target.
        target: String,
        /// How long to wait.
        timeout_ms: u64,
        /// `then = "finish"`.
        finish: bool,
    },
    /// `exec`: a program (no shell) with arguments and environment; it also
    /// gets `FAXI_INCIDENT`, `FAXI_FENCE_TERM` and `FAXI_FENCE_INDEX`.
    Exec {
        /// Program and arguments.
        argv: Vec<String>,
        /// Extra environment (names and values from config: no secrets;
        /// a secret goes in through the node's own environment).
        env: Vec<(String, String)>,
        /// Killed past this (default 60 s).
        timeout_ms: u64,
    },
    /// `http`: one request, e.g. to scale the app; the fencing token goes
    /// in `X-Faxi-Fence-Term`, `X-Faxi-Fence-Index` and `X-Faxi-Incident`.
    Http {
        /// `GET`, `POST`, `PUT`, `PATCH` or `DELETE`.
        method: String,
        /// `http://` or `https://`, no credentials in it.
        url: String,
        /// The status that counts as done (default 200).
        expect_status: u16,
        /// A body to send, if any (sent as `application/json`).
        body: Option<String>,
        /// Default 10 s.
        timeout_ms: u64,
    },
    /// `notify`: a JSON webhook (incident, target, step, fencing token,
    /// message) to the URL in the environment variable `url_env`.
    Notify {
        /// The environment variable holding the URL (the step's
        /// `url_env`, or `[recovery_defaults] notify_url_env`).
        url_env: String,
        /// What to say.
        message: String,
        /// Default 10 s.
        timeout_ms: u64,
    },
    /// `k8s.delete_pods|scale|rollout_restart`: a write to the Kubernetes
    /// API carrying the fencing token as annotations, guarded by the
    /// resourceVersion it read.
    K8s {
        /// Which operation, on what.
        op: K8sOp,
        /// The namespace; `None`: the client's own (the pod's service
        /// account's, or the kubeconfig context's).
        namespace: Option<String>,
        /// How long the API server gets for the whole step (default 30 s).
        timeout_ms: u64,
    },
}

impl Action {
    /// The action's config name: `docker.restart`, `exec`, ...
    pub fn name(&self) -> &'static str {
        match self {
            Action::Docker { op, .. } => match op {
                DockerOp::Restart => "docker.restart",
                DockerOp::Stop => "docker.stop",
                DockerOp::Start => "docker.start",
            },
            Action::WaitHealthy { .. } => "wait_healthy",
            Action::Exec { .. } => "exec",
            Action::Http { .. } => "http",
            Action::Notify { .. } => "notify",
            Action::K8s { op, .. } => op.name(),
        }
    }

    /// One line for timelines and logs: the action and what it acts on
    /// (never an environment value).
    pub fn describe(&self) -> String {
        match self {
            Action::Docker { container, .. } => format!("{} {container}", self.name()),
            Action::WaitHealthy {
                target,
                timeout_ms,
                finish,
            } => format!(
                "wait_healthy {target} (up to {}s{})",
                timeout_ms / 1000,
                if *finish { ", then finish" } else { "" }
            ),
            Action::Exec { argv, .. } => format!("exec {}", argv.join(" ")),
            Action::Http { method, url, .. } => format!("http {method} {url}"),
            Action::Notify { url_env, .. } => format!("notify ${url_env}"),
            Action::K8s { op, namespace, .. } => match namespace {
                Some(ns) => format!("{op} in {ns}"),
                None => op.to_string(),
            },
        }
    }

    /// Whether running it twice does no harm, unless config says so.
    /// `k8s.scale` sets a number: twice is once. `k8s.delete_pods` and
    /// `k8s.rollout_restart` would restart again, so they are not; their
    /// re-check tells whether they ran (the token they leave, the pods'
    /// creation times).
    pub fn idempotent_by_default(&self) -> bool {
        matches!(
            self,
            Action::Docker { .. }
                | Action::WaitHealthy { .. }
                | Action::K8s {
                    op: K8sOp::Scale { .. },
                    ..
                }
        )
    }
}

/// A Docker operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DockerOp {
    /// `docker restart`.
    Restart,
    /// `docker stop`.
    Stop,
    /// `docker start`.
    Start,
}

/// Which container(s) a Docker step acts on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerRef {
    /// By name (`container = "faxi-postgres"`).
    Name(String),
    /// Every container with this label (`label = "faxi.role=worker"`).
    Label(String),
}

impl std::fmt::Display for ContainerRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ContainerRef::Name(n) => write!(f, "{n}"),
            ContainerRef::Label(l) => write!(f, "label {l}"),
        }
    }
}

/// A Kubernetes operation of a `k8s.*` step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum K8sOp {
    /// `k8s.delete_pods`: every pod a label selector matches (their
    /// controller makes new ones).
    DeletePods {
        /// An equality-based label selector, like `app=faxi-postgres`.
        selector: String,
    },
    /// `k8s.scale`: a deployment's replicas.
    Scale {
        /// The deployment's name.
        deployment: String,
        /// The replicas to set.
        replicas: u32,
    },
    /// `k8s.rollout_restart`: what `kubectl rollout restart` does (a new
    /// restartedAt annotation on the pod template).
    RolloutRestart {
        /// The deployment's name.
        deployment: String,
    },
}

impl K8sOp {
    /// The action's config name.
    pub fn name(&self) -> &'static str {
        match self {
            K8sOp::DeletePods { .. } => "k8s.delete_pods",
            K8sOp::Scale { .. } => "k8s.scale",
            K8sOp::RolloutRestart { .. } => "k8s.rollout_restart",
        }
    }
}

impl std::fmt::Display for K8sOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            K8sOp::DeletePods { selector } => write!(f, "k8s.delete_pods {selector}"),
            K8sOp::Scale {
                deployment,
                replicas,
            } => write!(f, "k8s.scale {deployment} to {replicas}"),
            K8sOp::RolloutRestart { deployment } => write!(f, "k8s.rollout_restart {deployment}"),
        }
    }
}
