//! `docker.restart|stop|start`: a container by name, or every container
//! with a label, through the Docker engine's API.
//!
//! The fencing token: Docker cannot relabel a running container, and its
//! restart, stop and start take no token, so each operation is logged with
//! it (incident, term, index, container) before it is sent. What makes a
//! Docker step safe to repeat is that it is idempotent (a stop of a stopped
//! container and a start of a running one do nothing) and that a re-check
//! can tell from the container's `State` whether it ran after its intent.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::{
    InspectContainerOptions, ListContainersOptions, RestartContainerOptions, StartContainerOptions,
    StopContainerOptions,
};
use tokio::sync::OnceCell;

use super::{ActionFuture, Outcome, Recheck, StepAction, StepRun};
use crate::probe::error_chain;
use crate::recovery::plan::{ContainerRef, DockerOp};

/// The engine's address when `DOCKER_HOST` is not set.
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

/// The longest a container is given to stop on its own (SIGTERM) before the
/// engine kills it, on a stop or a restart; never more than half the step's
/// timeout.
const MAX_STOP_GRACE_S: u64 = 10;

/// A handle on the Docker engine, shared by every Docker step of a node.
///
/// It connects on first use, not when made (`DockerEngine::default()` does
/// no I/O), to [`DockerEngine::with_host`]'s address, else `DOCKER_HOST`,
/// else the default unix socket, and settles the API version with the
/// engine then (an engine older than the client's version is spoken to in
/// its own). A failed connection is not kept: the next step tries again.
#[derive(Debug, Clone, Default)]
pub struct DockerEngine {
    host: Option<Arc<str>>,
    client: Arc<OnceCell<Docker>>,
}

impl DockerEngine {
    /// An engine at `host` (`unix:///path/docker.sock`, `tcp://host:port`),
    /// whatever `DOCKER_HOST` says.
    pub fn with_host(host: impl Into<String>) -> Self {
        Self {
            host: Some(Arc::from(host.into())),
            client: Arc::default(),
        }
    }

    /// Where it connects: the host it was given, else `DOCKER_HOST` (when
    /// set and not empty), else [`DEFAULT_DOCKER_HOST`].
    pub fn host(&self) -> String {
        if let Some(h) = &self.host {
            return h.to_string();
        }
        match std::env::var("DOCKER_HOST") {
            Ok(h) if !h.trim().is_empty() => h.trim().to_owned(),
            _ => DEFAULT_DOCKER_HOST.to_owned(),
        }
    }

    /// The connected client, connecting if need be; the error says the
    /// engine is unreachable, where, and why.
    async fn client(&self) -> Result<&Docker, String> {
        self.client
            .get_or_try_init(|| async {
                let host = self.host();
                let docker =
                    Docker::connect_with_host(&host).map_err(|e| engine_error(self, &e))?;
                docker
                    .negotiate_version()
                    .await
                    .map_err(|e| engine_error(self, &e))
            })
            .await
    }
}

/// The engine's own words for an error: its message for an answer it gave,
/// the chain of causes otherwise (saying the engine was unreachable when
/// the connection failed).
fn engine_error(engine: &DockerEngine, e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError {
            status_code,
            message,
        } => format!("{message} (HTTP {status_code})"),
        DockerError::HyperLegacyError { err } if err.is_connect() => format!(
            "docker engine unreachable at {}: {}",
            engine.host(),
            error_chain(e)
        ),
        DockerError::IOError { .. }
        | DockerError::SocketNotFoundError(_)
        | DockerError::RequestTimeoutError => format!(
            "docker engine unreachable at {}: {}",
            engine.host(),
            error_chain(e)
        ),
        DockerError::UnsupportedURISchemeError { .. } => {
            format!("docker engine at {}: {}", engine.host(), error_chain(e))
        }
        _ => error_chain(e),
    }
}

/// `docker.restart`, `docker.stop` or `docker.start`.
fn op_name(op: DockerOp) -> &'static str {
    match op {
        DockerOp::Restart => "docker.restart",
        DockerOp::Stop => "docker.stop",
        DockerOp::Start => "docker.start",
    }
}

/// How long a container gets to stop on SIGTERM before it is killed, in
/// whole seconds: half the step's timeout, at most [`MAX_STOP_GRACE_S`].
fn stop_grace_s(timeout: Duration) -> i32 {
    let s = (timeout.as_secs() / 2).min(MAX_STOP_GRACE_S);
    i32::try_from(s).unwrap_or(0)
}

/// When a container last started, from its `State.StartedAt` (RFC 3339,
/// UTC): `Ok(None)` for a container that never started (the engine says
/// `0001-01-01T00:00:00Z`), an error for anything else it cannot read.
fn started_at(s: &str) -> Result<Option<SystemTime>, String> {
    let s = s.trim();
    if s.is_empty() || s.starts_with("0001-01-01") {
        return Ok(None);
    }
    humantime::parse_rfc3339(s)
        .map(Some)
        .map_err(|e| format!("unreadable StartedAt {s:?}: {e}"))
}

pub(super) struct DockerStep {
    engine: DockerEngine,
    op: DockerOp,
    container: ContainerRef,
    timeout: Duration,
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
            timeout: Duration::from_millis(timeout_ms),
        }
    }

    /// `docker.restart faxi-postgres`, `docker.stop label faxi.role=worker`.
    fn what(&self) -> String {
        format!("{} {}", op_name(self.op), self.container)
    }

    /// The names of the containers the step acts on: the one it names, or
    /// every container (running or not) with its label, in name order. No
    /// container with the label is an error naming the label.
    async fn containers(&self, docker: &Docker) -> Result<Vec<String>, String> {
        let label = match &self.container {
            ContainerRef::Name(n) => return Ok(vec![n.clone()]),
            ContainerRef::Label(l) => l,
        };
        let opts = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([("label".to_owned(), vec![label.clone()])])),
            ..Default::default()
        };
        let list = docker
            .list_containers(Some(opts))
            .await
            .map_err(|e| engine_error(&self.engine, &e))?;
        let mut names: Vec<String> = list
            .into_iter()
            .filter_map(|c| {
                c.names
                    .and_then(|n| n.into_iter().next())
                    .map(|n| n.trim_start_matches('/').to_owned())
                    .or(c.id)
            })
            .collect();
        names.sort();
        names.dedup();
        if names.is_empty() {
            return Err(format!("no container has the label {label}"));
        }
        Ok(names)
    }

    /// The operation on one container. The engine answers a stop of a
    /// stopped container and a start of a running one with "not modified",
    /// which is success here: the step is idempotent.
    async fn apply(&self, docker: &Docker, name: &str) -> Result<(), DockerError> {
        let t = Some(stop_grace_s(self.timeout));
        match self.op {
            DockerOp::Restart => {
                let opts = RestartContainerOptions { t, signal: None };
                docker.restart_container(name, Some(opts)).await
            }
            DockerOp::Stop => {
                let opts = StopContainerOptions { t, signal: None };
                docker.stop_container(name, Some(opts)).await
            }
            DockerOp::Start => {
                docker
                    .start_container(name, None::<StartContainerOptions>)
                    .await
            }
        }
    }

    async fn run_all(&self, step: &StepRun) -> Outcome {
        let what = self.what();
        let docker = match self.engine.client().await {
            Ok(d) => d,
            Err(e) => return Outcome::Failed(format!("{what}: {e}")),
        };
        let names = match self.containers(docker).await {
            Ok(n) => n,
            Err(e) => return Outcome::Failed(format!("{what}: {e}")),
        };
        let (mut done, mut failed) = (Vec::new(), Vec::new());
        // One at a time, in name order: a label's containers come back one
        // by one, as a person would do it, within the one timeout.
        for name in &names {
            tracing::info!(
                incident = step.incident,
                term = step.fence.term,
                index = step.fence.index,
                container = %name,
                action = op_name(self.op),
                "docker step under its fencing token"
            );
            match self.apply(docker, name).await {
                Ok(()) => done.push(name.as_str()),
                Err(e) => failed.push(format!("{name}: {}", engine_error(&self.engine, &e))),
            }
        }
        let verb = match self.op {
            DockerOp::Restart => "restarted",
            DockerOp::Stop => "stopped",
            DockerOp::Start => "started",
        };
        if failed.is_empty() {
            Outcome::Done(format!("{verb} {}", done.join(", ")))
        } else if done.is_empty() {
            Outcome::Failed(format!("{}: {}", op_name(self.op), failed.join("; ")))
        } else {
            Outcome::Failed(format!(
                "{}: {}; {verb} {}",
                op_name(self.op),
                failed.join("; "),
                done.join(", ")
            ))
        }
    }

    async fn recheck_all(&self, step: &StepRun) -> Result<Recheck, String> {
        let docker = self.engine.client().await?;
        let names = self.containers(docker).await?;
        let intent = UNIX_EPOCH + Duration::from_millis(step.intent_at_ms);
        let mut seen = Vec::new();
        for name in &names {
            let info = docker
                .inspect_container(name, None::<InspectContainerOptions>)
                .await
                .map_err(|e| format!("{name}: {}", engine_error(&self.engine, &e)))?;
            let state = info.state.unwrap_or_default();
            match self.op {
                DockerOp::Restart | DockerOp::Start => {
                    let at = started_at(state.started_at.as_deref().unwrap_or_default())
                        .map_err(|e| format!("{name}: {e}"))?;
                    match at {
                        Some(at) if at > intent => seen.push(format!(
                            "{name} started at {} after the intent",
                            humantime::format_rfc3339_millis(at)
                        )),
                        _ => return Ok(Recheck::NotDone),
                    }
                }
                DockerOp::Stop => {
                    if state.running.unwrap_or(false) {
                        return Ok(Recheck::NotDone);
                    }
                    seen.push(format!("{name} is not running"));
                }
            }
        }
        Ok(Recheck::Done(seen.join("; ")))
    }
}

impl StepAction for DockerStep {
    fn run<'a>(&'a self, step: &'a StepRun) -> ActionFuture<'a, Outcome> {
        Box::pin(async move {
            match tokio::time::timeout(self.timeout, self.run_all(step)).await {
                Ok(o) => o,
                Err(_) => Outcome::Failed(format!(
                    "{}: the docker engine did not finish within {:?}",
                    self.what(),
                    self.timeout
                )),
            }
        })
    }

    /// For a restart or a start: done when every container it names
    /// started after the step's intent (the engine's clock against the
    /// leader's: the same host's, or NTP's); for a stop: done when none of
    /// them runs. Cannot tell when the engine or a container cannot be read.
    fn recheck<'a>(&'a self, step: &'a StepRun) -> ActionFuture<'a, Recheck> {
        Box::pin(super::bounded_recheck(
            self.what(),
            self.timeout,
            step,
            self.recheck_all(step),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recovery::actions::Fence;

    fn step() -> StepRun {
        StepRun {
            incident: 1,
            target: "postgres".into(),
            plan: "postgres".into(),
            step: 1,
            fence: Fence { term: 2, index: 9 },
            intent_at_ms: 0,
        }
    }

    #[test]
    fn started_at_reads_the_engines_stamps_and_never_started() {
        let t = started_at("2024-05-01T10:11:12.123456789Z").ok().flatten();
        let ms = t.and_then(|t| t.duration_since(UNIX_EPOCH).ok());
        assert_eq!(ms.map(|d| d.as_millis()), Some(1_714_558_272_123));
        assert_eq!(started_at("0001-01-01T00:00:00Z"), Ok(None));
        assert_eq!(started_at(""), Ok(None));
        assert!(started_at("yesterday").is_err());
    }

    #[test]
    fn the_stop_grace_is_half_the_timeout_at_most_ten_seconds() {
        assert_eq!(stop_grace_s(Duration::from_secs(30)), 10);
        assert_eq!(stop_grace_s(Duration::from_secs(6)), 3);
        assert_eq!(stop_grace_s(Duration::from_millis(1500)), 0);
    }

    #[tokio::test]
    async fn an_unreachable_engine_fails_the_step_and_leaves_the_recheck_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let host = format!("unix://{}/docker.sock", dir.path().display());
        // Made without I/O: nothing listens there, and nothing is tried yet.
        let engine = DockerEngine::with_host(host.clone());
        assert_eq!(engine.host(), host);
        let s = DockerStep::new(
            engine,
            DockerOp::Restart,
            ContainerRef::Name("faxi-postgres".into()),
            5_000,
        );
        match s.run(&step()).await {
            Outcome::Failed(e) => {
                assert!(e.starts_with("docker.restart faxi-postgres: "), "{e}");
                assert!(e.contains(&format!("unreachable at {host}")), "{e}");
            }
            o => panic!("expected a failure, got {o:?}"),
        }
        assert_eq!(s.recheck(&step()).await, Recheck::CannotTell);

        // A socket nobody listens on any more: refused.
        let path = dir.path().join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let host = format!("unix://{}", path.display());
        let s = DockerStep::new(
            DockerEngine::with_host(host.clone()),
            DockerOp::Stop,
            ContainerRef::Label("faxi.role=worker".into()),
            5_000,
        );
        match s.run(&step()).await {
            Outcome::Failed(e) => {
                assert!(e.starts_with("docker.stop label faxi.role=worker: "), "{e}");
                assert!(e.contains(&format!("unreachable at {host}")), "{e}");
            }
            o => panic!("expected a failure, got {o:?}"),
        }
    }

    #[test]
    fn a_default_engine_is_made_without_a_runtime_or_a_connection() {
        let e = DockerEngine::default();
        assert!(e.client.get().is_none());
        assert!(!e.host().is_empty());
    }
}
