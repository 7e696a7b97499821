//! deploy/k8s read as Kubernetes reads it: every manifest parsed into the
//! API types (k8s-openapi; the ServiceMonitor and the kustomization
//! generically), every field of the YAML a field of its type, and the set
//! checked as a whole: an odd number of voters whose node configs name each
//! other by the headless Service's names, a PodDisruptionBudget that keeps
//! a quorum, one voter per zone, RBAC that grants exactly what the k8s
//! recovery steps call (the table in the node crate), node configs that
//! pass `faxi-watchdog check-config`, the Secrets they need documented, and
//! non-root, read-only, capability-free containers.
//!
//! The checks are one function returning every problem; the second test
//! breaks a copy of the manifests in known ways and expects each break to
//! be reported, so the checks can fail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use faxi_tests::workspace_bin;
use faxi_watchdog::recovery::actions::k8s::API_CALLS;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, PodSpec, PodTemplateSpec, Service, ServiceAccount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize as _;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The environment a node config's `*_env` keys name, as the Secret
/// faxi-watchdog-env gives it (fake values: check-config only needs them
/// set).
const NODE_ENV: &[&str] = &[
    "FAXI_PG_PASSWORD",
    "FAXI_REDIS_PASSWORD",
    "FAXI_S3_ACCESS_KEY",
    "FAXI_S3_SECRET_KEY",
    "FAXI_WEBHOOK_URL",
];

/// The peers of a node config, or the pods that should be them: node id →
/// (zone, address).
type Peers = BTreeMap<u64, (String, String)>;

fn k8s_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/k8s")
}

/// Every manifest of deploy/k8s, by kind.
#[derive(Debug, Clone, Default)]
struct Manifests {
    /// `file: Kind/name` of every object, for messages and the
    /// kustomization's list.
    objects: Vec<(String, String, String)>,
    stateful_sets: Vec<StatefulSet>,
    services: Vec<Service>,
    config_maps: Vec<ConfigMap>,
    pdbs: Vec<PodDisruptionBudget>,
    roles: Vec<Role>,
    role_bindings: Vec<RoleBinding>,
    service_accounts: Vec<ServiceAccount>,
    jobs: Vec<Job>,
    service_monitors: Vec<Value>,
    kustomization: Value,
    /// The kustomization's text (its comments document the Secrets).
    kustomization_text: String,
    /// README.md's "Deploy on Kubernetes" section (how to create them).
    docs: String,
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

/// Parses `v` as `T` and checks that writing it back gives the same JSON:
/// a key the type does not have (a typo, a field at the wrong level) is
/// dropped by the parse and shows here.
fn typed<T: DeserializeOwned + serde::Serialize>(
    where_: &str,
    v: &Value,
    problems: &mut Vec<String>,
) -> Option<T> {
    match serde_json::from_value::<T>(v.clone()) {
        Ok(t) => {
            let back = serde_json::to_value(&t).unwrap();
            let mut lost = Vec::new();
            diff("", v, &back, &mut lost);
            for path in lost {
                problems.push(format!("{where_}: {path} is not a field of its type"));
            }
            Some(t)
        }
        Err(e) => {
            problems.push(format!("{where_}: {e}"));
            None
        }
    }
}

/// Paths in `a` that `b` lacks or holds otherwise.
fn diff(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, va) in a {
                let p = format!("{path}.{k}");
                match b.get(k) {
                    Some(vb) => diff(&p, va, vb, out),
                    None if va.is_null() => {}
                    None => out.push(p),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (va, vb)) in a.iter().zip(b).enumerate() {
                diff(&format!("{path}[{i}]"), va, vb, out);
            }
        }
        (a, b) if a == b => {}
        _ => out.push(format!("{path} ({a} read back as {b})")),
    }
}

fn load() -> (Manifests, Vec<String>) {
    let dir = k8s_dir();
    let mut files = Vec::new();
    yaml_files(&dir, &mut files);
    files.sort();
    assert!(!files.is_empty(), "no manifests in {}", dir.display());
    let mut m = Manifests::default();
    let mut problems = Vec::new();
    for path in &files {
        let rel = path
            .strip_prefix(&dir)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(path).unwrap();
        for (i, doc) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
            let v = match Value::deserialize(doc) {
                Ok(Value::Null) => continue,
                Ok(v) => v,
                Err(e) => {
                    problems.push(format!("{rel}: document {i}: not YAML: {e}"));
                    continue;
                }
            };
            let kind = v["kind"].as_str().unwrap_or_default().to_owned();
            let name = v["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let at = format!("{rel}: {kind}/{name}");
            match kind.as_str() {
                "StatefulSet" => m.stateful_sets.extend(typed(&at, &v, &mut problems)),
                "Service" => m.services.extend(typed(&at, &v, &mut problems)),
                "ConfigMap" => m.config_maps.extend(typed(&at, &v, &mut problems)),
                "PodDisruptionBudget" => m.pdbs.extend(typed(&at, &v, &mut problems)),
                "Role" => m.roles.extend(typed(&at, &v, &mut problems)),
                "RoleBinding" => m.role_bindings.extend(typed(&at, &v, &mut problems)),
                "ServiceAccount" => m.service_accounts.extend(typed(&at, &v, &mut problems)),
                "Job" => m.jobs.extend(typed(&at, &v, &mut problems)),
                "ServiceMonitor" => {
                    if v["apiVersion"] != "monitoring.coreos.com/v1" {
                        problems.push(format!(
                            "{at}: apiVersion {} (monitoring.coreos.com/v1 expected)",
                            v["apiVersion"]
                        ));
                    }
                    m.service_monitors.push(v.clone());
                }
                "Kustomization" => {
                    m.kustomization = v.clone();
                    m.kustomization_text = text.clone();
                }
                other => problems.push(format!("{at}: unexpected kind {other:?}")),
            }
            m.objects.push((rel.clone(), kind, name));
        }
    }
    let readme = std::fs::read_to_string(dir.join("../../README.md")).unwrap();
    m.docs = readme
        .split_once("## Deploy on Kubernetes")
        .map(|(_, rest)| rest.split("\n## ").next().unwrap_or_default().to_owned())
        .unwrap_or_default();
    if m.docs.is_empty() {
        problems.push("README.md: no section \"## Deploy on Kubernetes\"".into());
    }
    (m, problems)
}

// ------------------------------------------------------------ helpers

fn name_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or_default()
}

/// Whether `selector` (matchLabels only; matchExpressions are not used
/// here and count as a mismatch) selects `labels`.
fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    selector
        .match_expressions
        .as_ref()
        .is_none_or(Vec::is_empty)
        && selector
            .match_labels
            .iter()
            .flatten()
            .all(|(k, v)| labels.get(k) == Some(v))
        && selector
            .match_labels
            .as_ref()
            .is_some_and(|l| !l.is_empty())
}

fn selects_map(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn pod_labels(t: &PodTemplateSpec) -> BTreeMap<String, String> {
    t.metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default()
}

fn container_port(c: &Container, name: &str) -> Option<i32> {
    c.ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some(name))
        .map(|p| p.container_port)
}

fn resolve_port(c: &Container, port: &IntOrString) -> Option<i32> {
    match port {
        IntOrString::Int(p) => Some(*p),
        IntOrString::String(name) => container_port(c, name),
    }
}

fn port_of(addr: &str) -> Option<i32> {
    addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok())
}

/// The ConfigMap key a pod mounts at `path` (a `configMap` volume with
/// `items`), and the map's name.
fn config_key_at(spec: &PodSpec, c: &Container, file: &str) -> Option<(String, String)> {
    let (dir, base) = file.rsplit_once('/')?;
    let mount = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path.trim_end_matches('/') == dir)?;
    let vol = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)?;
    let cm = vol.config_map.as_ref()?;
    let item = cm.items.iter().flatten().find(|i| i.path == base)?;
    Some((cm.name.clone(), item.key.clone()))
}

/// The Secret key a pod mounts at `path`, and the Secret's name.
fn secret_key_at(spec: &PodSpec, c: &Container, file: &str) -> Option<(String, String)> {
    let (dir, base) = file.rsplit_once('/')?;
    let mount = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path.trim_end_matches('/') == dir)?;
    let vol = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)?;
    let s = vol.secret.as_ref()?;
    let item = s.items.iter().flatten().find(|i| i.path == base)?;
    Some((s.secret_name.clone()?, item.key.clone()))
}

/// `--config FILE` of the container's arguments.
fn config_arg(c: &Container) -> Option<String> {
    let args: Vec<&String> = c
        .command
        .iter()
        .flatten()
        .chain(c.args.iter().flatten())
        .collect();
    args.iter()
        .position(|a| *a == "--config" || *a == "-c")
        .and_then(|i| args.get(i + 1))
        .map(|s| (*s).clone())
}

fn config_text(m: &Manifests, map: &str, key: &str) -> Option<String> {
    m.config_maps
        .iter()
        .find(|c| name_of(&c.metadata) == map)?
        .data
        .as_ref()?
        .get(key)
        .cloned()
}

/// Runs `faxi-watchdog check-config` on `text`: `Err` with its report.
fn check_config(name: &str, text: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(name);
    std::fs::write(&file, text).unwrap();
    let mut cmd = Command::new(workspace_bin("faxi-watchdog"));
    cmd.arg("check-config").arg(&file);
    for v in NODE_ENV {
        cmd.env(v, "example-value");
    }
    let out = cmd.output().unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn zone_affinity(spec: &PodSpec) -> Vec<String> {
    spec.affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .map(|r| {
            r.node_selector_terms
                .iter()
                .flat_map(|t| t.match_expressions.iter().flatten())
                .filter(|e| e.key == "topology.kubernetes.io/zone" && e.operator == "In")
                .flat_map(|e| e.values.iter().flatten().cloned())
                .collect()
        })
        .unwrap_or_default()
}

/// Every Secret a pod spec reads, with the keys it names (empty: all).
fn secrets_used(spec: &PodSpec, out: &mut BTreeMap<String, BTreeSet<String>>) {
    for v in spec.volumes.iter().flatten() {
        if let Some(s) = &v.secret
            && let Some(n) = &s.secret_name
        {
            let keys = out.entry(n.clone()).or_default();
            keys.extend(s.items.iter().flatten().map(|i| i.key.clone()));
        }
    }
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        for e in c.env_from.iter().flatten() {
            if let Some(s) = &e.secret_ref {
                out.entry(s.name.clone()).or_default();
            }
        }
        for e in c.env.iter().flatten() {
            if let Some(r) = e
                .value_from
                .as_ref()
                .and_then(|f| f.secret_key_ref.as_ref())
            {
                out.entry(r.name.clone()).or_default().insert(r.key.clone());
            }
        }
    }
}

/// The hardening every container here has.
fn check_security(at: &str, spec: &PodSpec, p: &mut Vec<String>) {
    let pod = spec.security_context.clone().unwrap_or_default();
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        let at = format!("{at}: container {}", c.name);
        let sc = c.security_context.clone().unwrap_or_default();
        if sc.run_as_non_root.or(pod.run_as_non_root) != Some(true) {
            p.push(format!("{at}: runAsNonRoot is not true"));
        }
        if sc.run_as_user.or(pod.run_as_user) == Some(0) {
            p.push(format!("{at}: runs as uid 0"));
        }
        if sc.read_only_root_filesystem != Some(true) {
            p.push(format!("{at}: readOnlyRootFilesystem is not true"));
        }
        if sc.allow_privilege_escalation != Some(false) {
            p.push(format!("{at}: allowPrivilegeEscalation is not false"));
        }
        if sc.privileged == Some(true) {
            p.push(format!("{at}: privileged"));
        }
        let caps = sc.capabilities.clone().unwrap_or_default();
        if !caps.drop.iter().flatten().any(|d| d == "ALL") {
            p.push(format!("{at}: capabilities do not drop ALL"));
        }
        if caps.add.as_ref().is_some_and(|a| !a.is_empty()) {
            p.push(format!("{at}: capabilities add {:?}", caps.add));
        }
        let res = c.resources.clone().unwrap_or_default();
        let req = res.requests.unwrap_or_default();
        let lim = res.limits.unwrap_or_default();
        if !req.contains_key("cpu") || !req.contains_key("memory") || !lim.contains_key("memory") {
            p.push(format!(
                "{at}: resources need cpu and memory requests and a memory limit"
            ));
        }
    }
}

// ------------------------------------------------------------ the checks

/// Every problem of the set, in words that say where.
fn check(m: &Manifests) -> Vec<String> {
    let mut p = Vec::new();
    let nodes: Vec<&StatefulSet> = m
        .stateful_sets
        .iter()
        .filter(|s| {
            s.spec.as_ref().is_some_and(|s| {
                pod_labels(&s.template)
                    .get("app.kubernetes.io/component")
                    .map(String::as_str)
                    == Some("node")
            })
        })
        .collect();
    if nodes.is_empty() {
        p.push("no StatefulSet runs nodes (pods labelled app.kubernetes.io/component=node)".into());
        return p;
    }

    // ---- kustomization: every top-level file listed, every listed file there.
    let listed: BTreeSet<String> = m.kustomization["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    let top: BTreeSet<String> = m
        .objects
        .iter()
        .map(|(f, _, _)| f.clone())
        .filter(|f| !f.contains('/') && f != "kustomization.yaml")
        .collect();
    for f in top.difference(&listed) {
        p.push(format!("kustomization.yaml: resources do not list {f}"));
    }
    for f in listed.difference(&top) {
        p.push(format!(
            "kustomization.yaml: resources list {f}, which holds no manifest"
        ));
    }
    let namespace = m.kustomization["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if namespace.is_empty() {
        p.push("kustomization.yaml: no namespace".into());
    }

    // ---- the headless Service of the peers.
    let mut expected_peers = Peers::new();
    let mut voters = 0;
    let mut zones_pinned: Vec<String> = Vec::new();
    let mut all_node_labels = Vec::new();
    let mut secrets: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut client_endpoints: Option<BTreeSet<String>> = None;
    let mut peer_lists: Vec<(String, Peers)> = Vec::new();
    let mut service_accounts = BTreeSet::new();

    for s in &nodes {
        let sts = name_of(&s.metadata).to_owned();
        let at = format!("StatefulSet/{sts}");
        let spec = s.spec.as_ref().unwrap();
        let replicas = spec.replicas.unwrap_or(1);
        voters += replicas;
        let labels = pod_labels(&spec.template);
        all_node_labels.push(labels.clone());
        if !selects(&spec.selector, &labels) {
            p.push(format!(
                "{at}: its selector does not select its pod template"
            ));
        }
        let Some(pod) = spec.template.spec.as_ref() else {
            p.push(format!("{at}: no pod spec"));
            continue;
        };
        service_accounts.insert(
            pod.service_account_name
                .clone()
                .unwrap_or_else(|| "default".into()),
        );
        secrets_used(pod, &mut secrets);
        check_security(&at, pod, &mut p);

        let Some(c) = pod.containers.iter().find(|c| c.name == "faxi-watchdog") else {
            p.push(format!("{at}: no container named faxi-watchdog"));
            continue;
        };
        let grpc = container_port(c, "grpc");
        let metrics = container_port(c, "metrics");
        if grpc.is_none() || metrics.is_none() {
            p.push(format!(
                "{at}: container ports grpc and metrics are not both named"
            ));
        }

        // The headless Service its pods are named by.
        let svc_name = spec.service_name.clone().unwrap_or_default();
        match m.services.iter().find(|v| name_of(&v.metadata) == svc_name) {
            None => p.push(format!("{at}: serviceName {svc_name:?} is no Service here")),
            Some(svc) => {
                let ss = svc.spec.clone().unwrap_or_default();
                if ss.cluster_ip.as_deref() != Some("None") {
                    p.push(format!(
                        "Service/{svc_name}: not headless (clusterIP: None)"
                    ));
                }
                if ss.publish_not_ready_addresses != Some(true) {
                    p.push(format!(
                        "Service/{svc_name}: publishNotReadyAddresses is not true (a node waiting for its state must be reachable)"
                    ));
                }
                if !selects_map(&ss.selector.clone().unwrap_or_default(), &labels) {
                    p.push(format!(
                        "Service/{svc_name}: does not select the pods of {at}"
                    ));
                }
                let svc_port = ss
                    .ports
                    .iter()
                    .flatten()
                    .find(|sp| sp.name.as_deref() == Some("grpc"));
                match svc_port {
                    Some(sp)
                        if sp.target_port.as_ref().and_then(|t| resolve_port(c, t)) == grpc => {}
                    _ => p.push(format!(
                        "Service/{svc_name}: its grpc port does not reach {at}'s grpc port"
                    )),
                }
            }
        }

        // The node config it runs with.
        let Some(file) = config_arg(c) else {
            p.push(format!("{at}: no --config argument"));
            continue;
        };
        let Some((map, key)) = config_key_at(pod, c, &file) else {
            p.push(format!("{at}: {file} is not a ConfigMap item it mounts"));
            continue;
        };
        let Some(text) = config_text(m, &map, &key) else {
            p.push(format!("{at}: ConfigMap {map} has no key {key}"));
            continue;
        };
        if let Err(e) = check_config(&key, &text) {
            p.push(format!(
                "ConfigMap/{map} {key}: check-config refused it:\n{e}"
            ));
        }
        let cfg: toml::Table = match text.parse() {
            Ok(t) => t,
            Err(e) => {
                p.push(format!("ConfigMap/{map} {key}: {e}"));
                continue;
            }
        };
        let id = cfg["node"]["id"].as_integer().unwrap_or_default() as u64;
        let zone = cfg["node"]["zone"].as_str().unwrap_or_default().to_owned();
        let pinned = zone_affinity(pod);
        if pinned != [zone.clone()] {
            p.push(format!(
                "{at}: pinned to zones {pinned:?} by nodeAffinity, its config {key} says zone {zone:?}"
            ));
        }
        zones_pinned.extend(pinned);
        for (k, want, port) in [
            ("listen", "grpc", grpc),
            ("metrics_listen", "metrics", metrics),
        ] {
            let got = cfg["node"]
                .get(k)
                .and_then(|v| v.as_str())
                .and_then(port_of);
            if got != port {
                p.push(format!(
                    "{key}: node.{k} port {got:?} is not the container's {want} port {port:?}"
                ));
            }
        }
        let data_dir = cfg["node"]
            .get("data_dir")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        let data_mount = c
            .volume_mounts
            .iter()
            .flatten()
            .find(|v| v.mount_path == data_dir);
        let templates: Vec<String> = spec
            .volume_claim_templates
            .iter()
            .flatten()
            .map(|t| name_of(&t.metadata).to_owned())
            .collect();
        match data_mount {
            Some(v) if templates.contains(&v.name) => {}
            _ => p.push(format!(
                "{at}: data_dir {data_dir} is not a volume of its volumeClaimTemplates {templates:?}"
            )),
        }
        for k in ["ca", "cert", "key"] {
            let f = cfg
                .get("tls")
                .and_then(|t| t.get(k))
                .and_then(|v| v.as_str());
            match f.and_then(|f| secret_key_at(pod, c, f)) {
                Some(_) => {}
                None => p.push(format!(
                    "{key}: tls.{k} ({f:?}) is not an item of a Secret the pod mounts"
                )),
            }
        }
        if let Some(probe) = c.liveness_probe.as_ref().and_then(|l| l.http_get.as_ref()) {
            if probe.path.as_deref() != Some("/healthz") || resolve_port(c, &probe.port) != metrics
            {
                p.push(format!(
                    "{at}: the liveness probe is not GET /healthz on the metrics port"
                ));
            }
        } else {
            p.push(format!("{at}: no HTTP liveness probe"));
        }
        let ann = spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.clone())
            .unwrap_or_default();
        if ann.get("prometheus.io/scrape").map(String::as_str) != Some("true")
            || ann.get("prometheus.io/port").and_then(|v| v.parse().ok()) != metrics
        {
            p.push(format!(
                "{at}: prometheus.io/scrape and prometheus.io/port do not name the metrics port"
            ));
        }
        let spread = pod.topology_spread_constraints.iter().flatten().any(|t| {
            t.topology_key == "topology.kubernetes.io/zone"
                && t.max_skew == 1
                && t.when_unsatisfiable == "DoNotSchedule"
                && t.label_selector
                    .as_ref()
                    .is_some_and(|s| selects(s, &labels))
        });
        if !spread {
            p.push(format!(
                "{at}: no topology spread over topology.kubernetes.io/zone (maxSkew 1, DoNotSchedule) across the node pods"
            ));
        }
        let anti = pod
            .affinity
            .as_ref()
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .is_some_and(|terms| {
                terms.iter().any(|t| {
                    t.topology_key == "kubernetes.io/hostname"
                        && t.label_selector
                            .as_ref()
                            .is_some_and(|s| selects(s, &labels))
                })
            });
        if !anti {
            p.push(format!(
                "{at}: no pod anti-affinity on kubernetes.io/hostname"
            ));
        }

        // Its pods, as the peers should name them.
        for ordinal in 0..replicas {
            let addr = format!(
                "{sts}-{ordinal}.{svc_name}.{namespace}.svc.cluster.local:{}",
                grpc.unwrap_or_default()
            );
            if replicas == 1 {
                expected_peers.insert(id, (zone.clone(), addr));
            } else {
                p.push(format!(
                    "{at}: {replicas} replicas share one node config (one node id)"
                ));
            }
        }
        let peers: Peers = cfg
            .get("cluster")
            .and_then(|c| c.get("peers"))
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
            .map(|e| {
                (
                    e.get("id").and_then(|v| v.as_integer()).unwrap_or_default() as u64,
                    (
                        e.get("zone")
                            .and_then(|v| v.as_str())
                            .unwrap_or_default()
                            .to_owned(),
                        e.get("addr")
                            .and_then(|v| v.as_str())
                            .unwrap_or_default()
                            .to_owned(),
                    ),
                )
            })
            .collect();
        peer_lists.push((key.clone(), peers));
    }

    if voters % 2 == 0 || voters < 3 {
        p.push(format!(
            "{voters} voters: an odd number, at least 3, is needed"
        ));
    }
    for (key, peers) in &peer_lists {
        if *peers != expected_peers {
            p.push(format!(
                "{key}: cluster.peers {peers:?} are not the StatefulSets' pods {expected_peers:?}"
            ));
        }
    }
    let distinct: BTreeSet<&String> = zones_pinned.iter().collect();
    if distinct.len() != zones_pinned.len() || distinct.len() < 3 {
        p.push(format!(
            "the nodes are not one per zone in at least 3 zones: {zones_pinned:?}"
        ));
    }

    // ---- faxictl's client config.
    for cm in &m.config_maps {
        if let Some(text) = cm.data.as_ref().and_then(|d| d.get("faxictl.toml")) {
            let t: toml::Table = text.parse().unwrap_or_default();
            client_endpoints = Some(
                t.get("endpoints")
                    .and_then(|v| v.as_array())
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect(),
            );
        }
    }
    let addrs: BTreeSet<String> = expected_peers.values().map(|(_, a)| a.clone()).collect();
    match client_endpoints {
        Some(e) if e == addrs => {}
        other => p.push(format!(
            "faxictl.toml: endpoints {other:?} are not the nodes {addrs:?}"
        )),
    }

    // ---- the PodDisruptionBudget keeps a quorum.
    let quorum = voters / 2 + 1;
    let pdbs: Vec<&PodDisruptionBudget> = m
        .pdbs
        .iter()
        .filter(|b| {
            b.spec
                .as_ref()
                .and_then(|s| s.selector.as_ref())
                .is_some_and(|s| all_node_labels.iter().any(|l| selects(s, l)))
        })
        .collect();
    match pdbs.as_slice() {
        [b] => {
            let spec = b.spec.clone().unwrap_or_default();
            if spec.min_available != Some(IntOrString::Int(quorum)) {
                p.push(format!(
                    "PodDisruptionBudget/{}: minAvailable {:?}, the quorum of {voters} voters is {quorum}",
                    name_of(&b.metadata),
                    spec.min_available
                ));
            }
            if spec.max_unavailable.is_some() {
                p.push("PodDisruptionBudget: set minAvailable only".into());
            }
            let sel = spec.selector.unwrap_or_default();
            if !all_node_labels.iter().all(|l| selects(&sel, l)) {
                p.push("PodDisruptionBudget: does not select every node pod".into());
            }
            for j in &m.jobs {
                if let Some(t) = j.spec.as_ref().map(|s| pod_labels(&s.template))
                    && selects(&sel, &t)
                {
                    p.push(format!(
                        "PodDisruptionBudget: selects the pods of Job/{}",
                        name_of(&j.metadata)
                    ));
                }
            }
        }
        [] => p.push("no PodDisruptionBudget selects the node pods".into()),
        _ => p.push("more than one PodDisruptionBudget selects the node pods".into()),
    }

    // ---- the API Service, the ServiceMonitor.
    let api = m.services.iter().find(|s| {
        let spec = s.spec.clone().unwrap_or_default();
        spec.cluster_ip.as_deref() != Some("None")
            && all_node_labels
                .iter()
                .all(|l| selects_map(&spec.selector.clone().unwrap_or_default(), l))
    });
    match api {
        None => p.push(
            "no (non-headless) Service selects every node pod for the gRPC API and metrics".into(),
        ),
        Some(svc) => {
            let ports: BTreeSet<String> = svc
                .spec
                .iter()
                .flat_map(|s| s.ports.iter().flatten())
                .filter_map(|sp| sp.name.clone())
                .collect();
            for want in ["grpc", "metrics"] {
                if !ports.contains(want) {
                    p.push(format!(
                        "Service/{}: no port named {want}",
                        name_of(&svc.metadata)
                    ));
                }
            }
            let labels = svc.metadata.labels.clone().unwrap_or_default();
            match m.service_monitors.as_slice() {
                [sm] => {
                    let sel: BTreeMap<String, String> =
                        serde_json::from_value(sm["spec"]["selector"]["matchLabels"].clone())
                            .unwrap_or_default();
                    if !selects_map(&sel, &labels) {
                        p.push("ServiceMonitor: does not select the API Service".into());
                    }
                    let eps = sm["spec"]["endpoints"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                    if eps.is_empty()
                        || !eps.iter().all(|e| {
                            e["port"].as_str().is_some_and(|n| ports.contains(n))
                                && e["port"] == "metrics"
                        })
                    {
                        p.push(
                            "ServiceMonitor: its endpoints are not the Service's metrics port"
                                .into(),
                        );
                    }
                    let ns = &sm["spec"]["namespaceSelector"]["matchNames"];
                    if !ns
                        .as_array()
                        .is_some_and(|a| a.iter().any(|n| n == namespace.as_str()))
                    {
                        p.push(format!(
                            "ServiceMonitor: namespaceSelector does not name {namespace}"
                        ));
                    }
                }
                other => p.push(format!("{} ServiceMonitors (one expected)", other.len())),
            }
        }
    }

    // ---- RBAC: exactly what the k8s steps call, in the namespace.
    let want: BTreeSet<(String, String, String)> = API_CALLS
        .iter()
        .map(|c| (c.group.to_owned(), c.resource.to_owned(), c.verb.to_owned()))
        .collect();
    let mut granted = BTreeSet::new();
    for sa in &service_accounts {
        if !m
            .service_accounts
            .iter()
            .any(|s| name_of(&s.metadata) == sa.as_str())
        {
            p.push(format!(
                "the node pods run as ServiceAccount {sa}, which is not defined here"
            ));
        }
        for rb in &m.role_bindings {
            let binds = rb
                .subjects
                .iter()
                .flatten()
                .any(|s| s.kind == "ServiceAccount" && s.name == *sa);
            if !binds {
                continue;
            }
            if rb.role_ref.kind != "Role" {
                p.push(format!(
                    "RoleBinding/{}: binds a {}, not a namespaced Role",
                    name_of(&rb.metadata),
                    rb.role_ref.kind
                ));
                continue;
            }
            let Some(role) = m
                .roles
                .iter()
                .find(|r| name_of(&r.metadata) == rb.role_ref.name)
            else {
                p.push(format!(
                    "RoleBinding/{}: Role {} is not defined here",
                    name_of(&rb.metadata),
                    rb.role_ref.name
                ));
                continue;
            };
            for rule in role.rules.iter().flatten() {
                if rule.resource_names.is_some() || rule.non_resource_urls.is_some() {
                    p.push(format!(
                        "Role/{}: resourceNames or nonResourceURLs are not expected",
                        rb.role_ref.name
                    ));
                }
                for g in rule.api_groups.iter().flatten() {
                    for r in rule.resources.iter().flatten() {
                        for v in &rule.verbs {
                            granted.insert((g.clone(), r.clone(), v.clone()));
                        }
                    }
                }
            }
        }
    }
    for (g, r, v) in granted.difference(&want) {
        p.push(format!(
            "RBAC grants {v} on {r} (group {g:?}), which no k8s recovery step calls"
        ));
    }
    for (g, r, v) in want.difference(&granted) {
        p.push(format!(
            "RBAC does not grant {v} on {r} (group {g:?}), which a k8s recovery step calls"
        ));
    }

    // ---- the one-off cluster creation Job.
    for j in &m.jobs {
        let at = format!("Job/{}", name_of(&j.metadata));
        let Some(pod) = j.spec.as_ref().and_then(|s| s.template.spec.as_ref()) else {
            p.push(format!("{at}: no pod spec"));
            continue;
        };
        check_security(&at, pod, &mut p);
        secrets_used(pod, &mut secrets);
        let c = &pod.containers[0];
        let args = c.args.clone().unwrap_or_default();
        if args.first().map(String::as_str) != Some("init") {
            p.push(format!("{at}: does not run `faxi-watchdog init`"));
        }
        let first = nodes[0];
        let first_name = name_of(&first.metadata);
        let claim = pod.volumes.iter().flatten().find_map(|v| {
            v.persistent_volume_claim
                .as_ref()
                .map(|c| c.claim_name.clone())
        });
        let expected = format!("data-{first_name}-0");
        if claim.as_deref() != Some(expected.as_str()) {
            p.push(format!(
                "{at}: mounts claim {claim:?}, not {expected} (node 1's data dir)"
            ));
        }
        let node_cfg = config_arg(c).and_then(|f| config_key_at(pod, c, &f));
        let first_cfg = first
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|s| {
                let c = s.containers.first()?;
                config_key_at(s, c, &config_arg(c)?)
            });
        if node_cfg != first_cfg {
            p.push(format!(
                "{at}: runs with {node_cfg:?}, not node 1's config {first_cfg:?}"
            ));
        }
    }

    // ---- the Secrets they read are documented with their keys.
    for (name, keys) in &secrets {
        if !m.kustomization_text.contains(name.as_str()) {
            p.push(format!(
                "Secret {name}: not documented in kustomization.yaml"
            ));
        }
        for k in keys {
            if !m.kustomization_text.contains(k.as_str()) {
                p.push(format!(
                    "Secret {name}: key {k} not documented in kustomization.yaml"
                ));
            }
        }
    }
    for v in NODE_ENV {
        if !m.kustomization_text.contains(v) {
            p.push(format!(
                "the environment variable {v} is not documented in kustomization.yaml"
            ));
        }
    }
    p
}

#[test]
fn the_manifests_parse_into_the_api_types_and_hold_together() {
    let (m, mut problems) = load();
    problems.extend(check(&m));
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert_eq!(m.stateful_sets.len(), 3);
}

/// Breaks a copy in known ways: each break must be reported.
#[test]
fn a_broken_copy_of_the_manifests_is_reported() {
    let (m, problems) = load();
    assert!(problems.is_empty(), "{problems:?}");

    let mut b = m.clone();
    b.pdbs[0].spec.as_mut().unwrap().min_available = Some(IntOrString::Int(1));
    expect(&b, "minAvailable Some(Int(1)), the quorum of 3 voters is 2");

    let mut b = m.clone();
    b.roles[0].rules.as_mut().unwrap()[0]
        .verbs
        .push("create".into());
    expect(&b, "RBAC grants create on pods");
    let mut b = m.clone();
    b.roles[0].rules.as_mut().unwrap()[1]
        .verbs
        .retain(|v| v != "patch");
    expect(&b, "RBAC does not grant patch on deployments");

    let mut b = m.clone();
    let pod = b.stateful_sets[1]
        .spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap();
    let sc = pod.containers[0].security_context.as_mut().unwrap();
    sc.read_only_root_filesystem = Some(false);
    sc.capabilities = None;
    expect(&b, "readOnlyRootFilesystem is not true");
    expect(&b, "capabilities do not drop ALL");

    let mut b = m.clone();
    b.stateful_sets[2].spec.as_mut().unwrap().replicas = Some(2);
    expect(&b, "replicas share one node config");
    expect(&b, "4 voters");

    let mut b = m.clone();
    let pod = b.stateful_sets[0]
        .spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap();
    pod.topology_spread_constraints = None;
    expect(&b, "no topology spread over topology.kubernetes.io/zone");

    // A node config that names a peer the StatefulSets do not run, and one
    // that check-config refuses.
    let mut b = m.clone();
    let data = b.config_maps[0].data.as_mut().unwrap();
    let a = data.get_mut("zone-a.toml").unwrap();
    *a = a.replace("faxi-watchdog-c-0.", "faxi-watchdog-d-0.");
    expect(&b, "zone-a.toml: cluster.peers");
    let mut b = m.clone();
    let data = b.config_maps[0].data.as_mut().unwrap();
    let a = data.get_mut("zone-b.toml").unwrap();
    *a = a.replace("fall = 3", "fall = 0");
    expect(&b, "zone-b.toml: check-config refused it");
    expect(&b, "probe_defaults.fall");

    // A Secret the docs do not name.
    let mut b = m.clone();
    b.kustomization_text = b
        .kustomization_text
        .replace("faxi-watchdog-env", "(elsewhere)");
    expect(&b, "Secret faxi-watchdog-env: not documented");

    // A field at the wrong level is lost by the typed parse.
    let mut problems = Vec::new();
    let v = serde_json::json!({
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": { "name": "x" },
        "minAvailable": 2,
        "spec": {}
    });
    typed::<PodDisruptionBudget>("x.yaml", &v, &mut problems);
    assert_eq!(
        problems,
        [".minAvailable is not a field of its type"].map(|s| format!("x.yaml: {s}"))
    );
}

fn expect(m: &Manifests, text: &str) {
    let problems = check(m);
    assert!(
        problems.iter().any(|p| p.contains(text)),
        "expected a problem containing {text:?}, got:\n{}",
        problems.join("\n")
    );
}
