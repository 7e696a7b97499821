//! `k8s.delete_pods`, `k8s.scale` and `k8s.rollout_restart`: what they ask
//! of the Kubernetes API server, as one table, so that the RBAC Role in
//! deploy/k8s grants exactly this (tests/tests/k8s_manifests.rs compares
//! them) and cannot drift from the code.

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
