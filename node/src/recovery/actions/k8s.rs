//! `k8s.delete_pods`, `k8s.scale` and `k8s.rollout_restart`: writes to the
//! Kubernetes API server, each carrying the fencing token.
//!
//! Every write is a read, then a JSON merge patch that sets the token as
//! annotations on the object (`watchdog.faxi.io/fence-term`,
//! `watchdog.faxi.io/fence-index`, `watchdog.faxi.io/incident`) with the
//! `resourceVersion` it read as a precondition: if anyone changed the
//! object in between, the API server answers 409 Conflict and the step
//! fails, saying so; it is never retried blindly. A pod is deleted only on
//! the precondition that it is still the version the step marked. An
//! object that already carries a newer token (a later leader acted on it)
//! is left alone.
//!
//! What they ask of the API server is one table, [`API_CALLS`], so that the
//! RBAC Role in deploy/k8s grants exactly that (tests/tests/k8s_manifests.rs
//! compares them) and cannot drift from the code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use super::{ActionFuture, Fence, Outcome, Recheck, StepAction, StepRun};
use crate::probe::error_chain;
use crate::recovery::plan::K8sOp;

/// One kind of request a k8s step makes: the action, the API group (`""`
/// for the core group), the resource and the RBAC verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiCall {
    /// The step's action, as the config names it.
    pub action: &'static str,
    /// The API group: `""` (core) or `apps`.
    pub group: &'static str,
    /// The resource, plural.
    pub resource: &'static str,
    /// The RBAC verb of the request.
    pub verb: &'static str,
}

const fn call(
    action: &'static str,
    group: &'static str,
    resource: &'static str,
    verb: &'static str,
) -> ApiCall {
    ApiCall {
        action,
        group,
        resource,
        verb,
    }
}

/// Every request the k8s steps make, by action.
///
/// - `k8s.delete_pods`: lists the pods of a selector, patches each with the
///   fencing annotations (its resourceVersion as the precondition), then
///   deletes it with the patched resourceVersion as a precondition;
/// - `k8s.scale` and `k8s.rollout_restart`: read the deployment, then
///   patch it (replicas, or the pod template's restart annotation) with the
///   fencing annotations and the resourceVersion they read.
pub const API_CALLS: &[ApiCall] = &[
    call("k8s.delete_pods", "", "pods", "list"),
    call("k8s.delete_pods", "", "pods", "patch"),
    call("k8s.delete_pods", "", "pods", "delete"),
    call("k8s.scale", "apps", "deployments", "get"),
    call("k8s.scale", "apps", "deployments", "patch"),
    call("k8s.rollout_restart", "apps", "deployments", "get"),
    call("k8s.rollout_restart", "apps", "deployments", "patch"),
];

/// The annotation keys of the fencing token on every object a k8s step
/// writes: the term and intent index of the step, and its incident.
pub const FENCE_TERM_ANNOTATION: &str = "watchdog.faxi.io/fence-term";
/// See [`FENCE_TERM_ANNOTATION`].
pub const FENCE_INDEX_ANNOTATION: &str = "watchdog.faxi.io/fence-index";
/// See [`FENCE_TERM_ANNOTATION`].
pub const INCIDENT_ANNOTATION: &str = "watchdog.faxi.io/incident";
/// What `kubectl rollout restart` sets on the pod template.
pub const RESTARTED_AT_ANNOTATION: &str = "kubectl.kubernetes.io/restartedAt";

/// A handle on the Kubernetes API server, shared by every k8s step of a
/// node.
///
/// It connects on first use, not when made: to the kubeconfig it was given
/// ([`KubeApi::with_kubeconfig`], `[kubernetes] kubeconfig` in the node
/// config), else what kube infers (`KUBECONFIG` or `~/.kube/config`, then
/// the pod's service account: the in-cluster case). A failed connection is
/// not kept: the next step tries again.
#[derive(Clone, Default)]
pub struct KubeApi {
    kubeconfig: Option<Arc<Path>>,
    client: Arc<OnceCell<Connected>>,
}

/// A client made from the configuration, its default namespace and the API
/// server's URL (for messages).
struct Connected {
    client: Client,
    namespace: String,
    url: String,
}

impl std::fmt::Debug for KubeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeApi")
            .field("kubeconfig", &self.kubeconfig)
            .finish_non_exhaustive()
    }
}

impl KubeApi {
    /// The API server and credentials of the kubeconfig at `path`, its
    /// current context.
    pub fn with_kubeconfig(path: impl Into<PathBuf>) -> Self {
        Self {
            kubeconfig: Some(Arc::from(path.into())),
            client: Arc::default(),
        }
    }

    /// Where the configuration comes from, for messages.
    pub fn source(&self) -> String {
        match &self.kubeconfig {
            Some(p) => format!("kubeconfig {}", p.display()),
            None => "the pod's service account (or KUBECONFIG)".to_owned(),
        }
    }

    /// The client and its default namespace, connecting if need be.
    async fn client(&self) -> Result<&Connected, String> {
        self.client
            .get_or_try_init(|| async {
                let config = match &self.kubeconfig {
                    Some(path) => {
                        let kc = Kubeconfig::read_from(path.as_ref())
                            .map_err(|e| format!("{}: {}", self.source(), error_chain(&e)))?;
                        kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                            .await
                            .map_err(|e| format!("{}: {}", self.source(), error_chain(&e)))?
                    }
                    None => kube::Config::infer().await.map_err(|e| {
                        format!("no Kubernetes API configuration: {}", error_chain(&e))
                    })?,
                };
                let namespace = config.default_namespace.clone();
                let url = config.cluster_url.to_string();
                let client = Client::try_from(config)
                    .map_err(|e| format!("kubernetes API at {url}: {}", error_chain(&e)))?;
                Ok(Connected {
                    client,
                    namespace,
                    url,
                })
            })
            .await
    }
}

/// The API server's own words for an error: its status and message for an
/// answer it gave, and what a 409 means here; the chain of causes for a
/// connection that failed, saying where.
fn api_error(url: &str, e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if s.code == 409 => format!(
            "conflict: {} (HTTP 409): the object changed after it was read; not retried",
            s.message
        ),
        kube::Error::Api(s) if s.code == 403 => format!(
            "forbidden: {} (HTTP 403): the Role in deploy/k8s/rbac.yaml grants what the k8s steps need",
            s.message
        ),
        kube::Error::Api(s) => format!("{} (HTTP {})", s.message, s.code),
        kube::Error::HyperError(_) | kube::Error::Service(_) => {
            format!("kubernetes API unreachable at {url}: {}", error_chain(e))
        }
        other => format!("kubernetes API at {url}: {}", error_chain(other)),
    }
}

/// The fencing token an object carries, if it carries one.
fn fence_of(annotations: Option<&BTreeMap<String, String>>) -> Option<Fence> {
    let a = annotations?;
    Some(Fence {
        term: a.get(FENCE_TERM_ANNOTATION)?.parse().ok()?,
        index: a.get(FENCE_INDEX_ANNOTATION)?.parse().ok()?,
    })
}

fn fence_annotations(step: &StepRun) -> Value {
    json!({
        FENCE_TERM_ANNOTATION: step.fence.term.to_string(),
        FENCE_INDEX_ANNOTATION: step.fence.index.to_string(),
        INCIDENT_ANNOTATION: step.incident.to_string(),
    })
}

/// A step's refusal to act on an object that already carries a newer
/// token: a later leader has acted on it.
fn newer_fence(what: &str, seen: Option<Fence>, step: &StepRun) -> Option<String> {
    match seen {
        Some(f) if f > step.fence => Some(format!(
            "{what} carries a newer fencing token ({}:{}) than this step's ({}:{}): not acting",
            f.term, f.index, step.fence.term, step.fence.index
        )),
        _ => None,
    }
}

pub(super) struct K8sStep {
    api: KubeApi,
    op: K8sOp,
    namespace: Option<String>,
    timeout: Duration,
}

impl K8sStep {
    pub(super) fn new(api: KubeApi, op: K8sOp, namespace: Option<String>, timeout_ms: u64) -> Self {
        Self {
            api,
            op,
            namespace,
            timeout: Duration::from_millis(timeout_ms),
        }
    }

    fn what(&self) -> String {
        let ns = self
            .namespace
            .as_deref()
            .map(|n| format!(" in {n}"))
            .unwrap_or_default();
        format!("{}{ns}", self.op)
    }

    fn log(&self, step: &StepRun, namespace: &str, object: &str) {
        tracing::info!(
            incident = step.incident,
            term = step.fence.term,
            index = step.fence.index,
            namespace,
            object,
            action = self.op.name(),
            "k8s step under its fencing token"
        );
    }

    async fn run_all(&self, step: &StepRun) -> Result<String, String> {
        let Connected {
            client,
            namespace: default_ns,
            url,
        } = self.api.client().await?;
        let ns = self.namespace.clone().unwrap_or_else(|| default_ns.clone());
        let api_error = |e: kube::Error| api_error(url, &e);
        match &self.op {
            K8sOp::Scale {
                deployment,
                replicas,
            } => {
                let api: Api<Deployment> = Api::namespaced(client.clone(), &ns);
                let d = api.get(deployment).await.map_err(api_error)?;
                let what = format!("deployment {ns}/{deployment}");
                if let Some(e) = newer_fence(&what, fence_of(d.metadata.annotations.as_ref()), step)
                {
                    return Err(e);
                }
                let rv = d.metadata.resource_version.clone().unwrap_or_default();
                let from = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                let patch = json!({
                    "metadata": { "resourceVersion": rv, "annotations": fence_annotations(step) },
                    "spec": { "replicas": replicas },
                });
                self.log(step, &ns, deployment);
                api.patch(deployment, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(api_error)?;
                Ok(format!("scaled {what} from {from} to {replicas} replicas"))
            }
            K8sOp::RolloutRestart { deployment } => {
                let api: Api<Deployment> = Api::namespaced(client.clone(), &ns);
                let d = api.get(deployment).await.map_err(api_error)?;
                let what = format!("deployment {ns}/{deployment}");
                if let Some(e) = newer_fence(&what, fence_of(d.metadata.annotations.as_ref()), step)
                {
                    return Err(e);
                }
                let rv = d.metadata.resource_version.clone().unwrap_or_default();
                let at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
                let patch = json!({
                    "metadata": { "resourceVersion": rv, "annotations": fence_annotations(step) },
                    "spec": { "template": { "metadata": { "annotations": {
                        RESTARTED_AT_ANNOTATION: at,
                        FENCE_TERM_ANNOTATION: step.fence.term.to_string(),
                        FENCE_INDEX_ANNOTATION: step.fence.index.to_string(),
                    } } } },
                });
                self.log(step, &ns, deployment);
                api.patch(deployment, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(api_error)?;
                Ok(format!("restarted {what} (rollout at {at})"))
            }
            K8sOp::DeletePods { selector } => {
                let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
                let list = api
                    .list(&ListParams::default().labels(selector))
                    .await
                    .map_err(api_error)?;
                let mut pods = list.items;
                pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
                if pods.is_empty() {
                    return Err(format!("no pod in {ns} matches {selector}"));
                }
                let (mut done, mut failed) = (Vec::new(), Vec::new());
                for pod in &pods {
                    let name = pod.metadata.name.clone().unwrap_or_default();
                    match self.delete_pod(&api, url, pod, step).await {
                        Ok(()) => done.push(name),
                        Err(e) => failed.push(format!("{name}: {e}")),
                    }
                }
                if failed.is_empty() {
                    Ok(format!("deleted pods {} in {ns}", done.join(", ")))
                } else if done.is_empty() {
                    Err(failed.join("; "))
                } else {
                    Err(format!(
                        "{}; deleted {}",
                        failed.join("; "),
                        done.join(", ")
                    ))
                }
            }
        }
    }

    /// Marks the pod with the token (guarded by the resourceVersion it was
    /// listed with), then deletes it on the condition that it is still
    /// that marked version.
    async fn delete_pod(
        &self,
        api: &Api<Pod>,
        url: &str,
        pod: &Pod,
        step: &StepRun,
    ) -> Result<(), String> {
        let api_error = |e: kube::Error| api_error(url, &e);
        let name = pod.metadata.name.clone().unwrap_or_default();
        let what = format!("pod {name}");
        if let Some(e) = newer_fence(&what, fence_of(pod.metadata.annotations.as_ref()), step) {
            return Err(e);
        }
        let rv = pod.metadata.resource_version.clone().unwrap_or_default();
        let patch = json!({
            "metadata": { "resourceVersion": rv, "annotations": fence_annotations(step) },
        });
        self.log(step, api_namespace(pod), &name);
        let marked = api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(api_error)?;
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: marked.metadata.resource_version.clone(),
                uid: marked.metadata.uid.clone(),
            }),
            ..DeleteParams::default()
        };
        api.delete(&name, &dp).await.map_err(api_error)?;
        Ok(())
    }

    async fn recheck_all(&self, step: &StepRun) -> Result<Recheck, String> {
        let Connected {
            client,
            namespace: default_ns,
            url,
        } = self.api.client().await?;
        let ns = self.namespace.clone().unwrap_or_else(|| default_ns.clone());
        let api_error = |e: kube::Error| api_error(url, &e);
        match &self.op {
            K8sOp::Scale { deployment, .. } | K8sOp::RolloutRestart { deployment } => {
                let api: Api<Deployment> = Api::namespaced(client.clone(), &ns);
                let d = api.get(deployment).await.map_err(api_error)?;
                let seen = fence_of(d.metadata.annotations.as_ref());
                Ok(match seen {
                    Some(f) if f == step.fence => Recheck::Done(format!(
                        "deployment {ns}/{deployment} carries this step's fencing token ({}:{})",
                        f.term, f.index
                    )),
                    _ => Recheck::NotDone,
                })
            }
            K8sOp::DeletePods { selector } => {
                let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
                let pods = api
                    .list(&ListParams::default().labels(selector))
                    .await
                    .map_err(api_error)?
                    .items;
                if pods.is_empty() {
                    return Ok(Recheck::CannotTell);
                }
                let intent = i64::try_from(step.intent_at_ms).unwrap_or(i64::MAX);
                let mut seen = Vec::new();
                for pod in &pods {
                    let name = pod.metadata.name.clone().unwrap_or_default();
                    // Marked with this token but still there: the delete
                    // never came.
                    if fence_of(pod.metadata.annotations.as_ref()) == Some(step.fence) {
                        return Ok(Recheck::NotDone);
                    }
                    let created = pod.metadata.creation_timestamp.as_ref().map(|t| t.0);
                    match created {
                        Some(c) if c.as_millisecond() > intent => {
                            seen.push(format!("{name} created at {c} after the intent"));
                        }
                        // Creation times are whole seconds: one in the
                        // intent's second may be before or after it.
                        Some(c) if c.as_millisecond() + 1000 > intent => {
                            return Ok(Recheck::CannotTell);
                        }
                        Some(_) => return Ok(Recheck::NotDone),
                        None => return Ok(Recheck::CannotTell),
                    }
                }
                Ok(Recheck::Done(seen.join("; ")))
            }
        }
    }
}

fn api_namespace(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or_default()
}

impl StepAction for K8sStep {
    fn run<'a>(&'a self, step: &'a StepRun) -> ActionFuture<'a, Outcome> {
        Box::pin(async move {
            match tokio::time::timeout(self.timeout, self.run_all(step)).await {
                Ok(Ok(text)) => Outcome::Done(text),
                Ok(Err(e)) => Outcome::Failed(format!("{}: {e}", self.what())),
                Err(_) => Outcome::Failed(format!(
                    "{}: the kubernetes API did not finish within {:?}",
                    self.what(),
                    self.timeout
                )),
            }
        })
    }

    /// `k8s.scale` and `k8s.rollout_restart`: done when the deployment
    /// carries this step's token (the patch that set it is the step),
    /// not done otherwise. `k8s.delete_pods`: not done while a pod it
    /// selects was made before the intent or carries the token (marked but
    /// not deleted); done when every one was made after it. Cannot tell
    /// when the API cannot be read or no pod matches.
    fn recheck<'a>(&'a self, step: &'a StepRun) -> ActionFuture<'a, Recheck> {
        Box::pin(super::bounded_recheck(
            self.what(),
            self.timeout,
            step,
            self.recheck_all(step),
        ))
    }
}
