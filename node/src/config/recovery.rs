//! `[recovery_defaults]` and `[recovery.<name>]`: the plans targets name
//! with `recovery = "<name>"` (DESIGN.md §8), parsed into the types the
//! replicated log records ([`crate::recovery::plan`]).
//!
//! Only names are read here: `notify_url_env` and `url_env` name an
//! environment variable that the node running the step reads then, never
//! at load.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use toml::{Table, Value};

use super::reader::Section;
use super::{Problem, check_http_url, check_name};
use crate::recovery::plan::{Action, ContainerRef, DockerOp, K8sOp, Plan, RecoveryDefaults, Step};

/// Every action a step may name, as written in the config.
pub const ACTIONS: [&str; 10] = [
    "docker.restart",
    "docker.stop",
    "docker.start",
    "k8s.delete_pods",
    "k8s.scale",
    "k8s.rollout_restart",
    "wait_healthy",
    "exec",
    "http",
    "notify",
];

/// The methods an `http` step may use.
pub const HTTP_METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// Default wait after a finished attempt.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(10 * 60);
/// Default attempts per window.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Default window over which attempts are counted.
pub const DEFAULT_ATTEMPT_WINDOW: Duration = Duration::from_secs(60 * 60);
/// Shortest and longest `approval_ttl`.
pub const APPROVAL_TTL_RANGE: (Duration, Duration) =
    (Duration::from_secs(60), Duration::from_secs(24 * 60 * 60));
/// Default time the Docker engine gets for one operation.
pub const DEFAULT_DOCKER_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time an `exec` step's program gets before it is killed.
pub const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(60);
/// Default time an `http` or `notify` request gets.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time the Kubernetes API server gets for a whole `k8s.*` step.
pub const DEFAULT_K8S_TIMEOUT: Duration = Duration::from_secs(30);
/// The most replicas a `k8s.scale` step may set.
pub const MAX_REPLICAS: i64 = 10_000;

/// The environment variables an `exec` step's program gets from the
/// executor (the fencing token and what it acts for) start with this; the
/// config may not set any.
pub const EXECUTOR_ENV_PREFIX: &str = "FAXI_";

/// Every action-specific key of any action.
const ACTION_KEYS: &[&str] = &[
    "container",
    "label",
    "timeout",
    "target",
    "then",
    "argv",
    "env",
    "url",
    "method",
    "expect_status",
    "body",
    "message",
    "url_env",
    "namespace",
    "selector",
    "deployment",
    "replicas",
];

/// `[recovery_defaults]` and every `[recovery.<name>]` plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryConfig {
    /// What every plan shares.
    pub defaults: RecoveryDefaults,
    /// The plans by name.
    pub plans: BTreeMap<String, Plan>,
}

impl RecoveryConfig {
    /// The plan named `name`, if the config has one.
    pub fn plan(&self, name: &str) -> Option<&Plan> {
        self.plans.get(name)
    }
}

/// The names of the `[recovery.<name>]` tables, including those with
/// problems of their own, so that a target naming a broken plan is not
/// also told that the plan does not exist.
pub(crate) fn plan_names(plans: Option<&Table>) -> BTreeSet<String> {
    plans
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default()
}

/// The path of a plan's table: `recovery.<name>`, the name quoted as TOML
/// would need it when it is not a bare key.
fn plan_path(name: &str) -> String {
    format!("recovery.{}", toml_key(name))
}

fn toml_key(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
    if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    }
}

/// Parses `[recovery_defaults]` and `[recovery]`; `targets` are the names
/// of the configured targets (for `wait_healthy`). Problems are collected;
/// a plan with problems is left out.
pub(crate) fn parse_recovery(
    defaults: Option<&Table>,
    plans: Option<&Table>,
    targets: &BTreeSet<String>,
    p: &mut Vec<Problem>,
) -> RecoveryConfig {
    let defaults = defaults.map_or_else(RecoveryDefaults::default, |t| parse_defaults(t, p));
    let mut out = BTreeMap::new();
    for (name, v) in plans.into_iter().flatten() {
        let path = plan_path(name);
        check_name(&path, name, p);
        let Value::Table(t) = v else {
            p.push(Problem::new(
                path.clone(),
                format!(
                    "expected a table ([{path}] with steps = [...]), found {}",
                    v.type_str()
                ),
            ));
            continue;
        };
        let context = Context {
            targets,
            defaults: &defaults,
        };
        if let Some(plan) = parse_plan(name, &path, t, &context, p) {
            out.insert(name.clone(), plan);
        }
    }
    RecoveryConfig {
        defaults,
        plans: out,
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn parse_defaults(t: &Table, p: &mut Vec<Problem>) -> RecoveryDefaults {
    let mut s = Section::new(t, "recovery_defaults");
    let base = RecoveryDefaults::default();
    let max_concurrent = s
        .int("max_concurrent", 1, 1000, p)
        .map_or(base.max_concurrent, |v| v as u32);
    // Kept even when it is not a valid name: that is reported once, here,
    // not again on every notify step that relies on it.
    let notify_url_env = s.string("notify_url_env", p);
    if let Some(n) = &notify_url_env {
        check_env_name(&s.key("notify_url_env"), n, p);
    }
    let dry_run = s.boolean("dry_run", p).unwrap_or(base.dry_run);
    let approval_ttl = s.duration("approval_ttl", p);
    let (lo, hi) = APPROVAL_TTL_RANGE;
    if let Some(d) = approval_ttl
        && !(lo..=hi).contains(&d)
    {
        p.push(Problem::new(
            s.key("approval_ttl"),
            format!(
                "{} is out of range: must be between {} and {}",
                humantime::format_duration(d),
                humantime::format_duration(lo),
                humantime::format_duration(hi)
            ),
        ));
    }
    s.finish(p);
    RecoveryDefaults {
        max_concurrent,
        notify_url_env,
        dry_run,
        approval_ttl_ms: approval_ttl.map_or(base.approval_ttl_ms, ms),
    }
}

/// What a step is checked against.
struct Context<'a> {
    targets: &'a BTreeSet<String>,
    defaults: &'a RecoveryDefaults,
}

fn parse_plan(
    name: &str,
    path: &str,
    t: &Table,
    context: &Context<'_>,
    p: &mut Vec<Problem>,
) -> Option<Plan> {
    let before = p.len();
    let mut s = Section::new(t, path);
    let step_tables = s.tables("steps", p);
    match &step_tables {
        None if !s.has("steps") => p.push(Problem::new(
            s.key("steps"),
            "missing: at least one step, like \
             steps = [{ action = \"docker.restart\", container = \"faxi-postgres\" }]",
        )),
        Some(list) if list.is_empty() => p.push(Problem::new(
            s.key("steps"),
            "is empty: a plan needs at least one step",
        )),
        _ => {}
    }
    let finally_tables = s.tables("finally", p).unwrap_or_default();
    let cooldown = s.duration("cooldown", p).unwrap_or(DEFAULT_COOLDOWN);
    let max_attempts = s
        .int("max_attempts", 1, 1000, p)
        .map_or(DEFAULT_MAX_ATTEMPTS, |v| v as u32);
    let attempt_window = s
        .duration("attempt_window", p)
        .unwrap_or(DEFAULT_ATTEMPT_WINDOW);
    let dry_run = s.boolean("dry_run", p).unwrap_or(context.defaults.dry_run);
    s.finish(p);

    let steps = parse_steps(
        &step_tables.unwrap_or_default(),
        &format!("{path}.steps"),
        false,
        context,
        p,
    );
    let finally = parse_steps(
        &finally_tables,
        &format!("{path}.finally"),
        true,
        context,
        p,
    );
    if p.len() > before {
        return None;
    }
    Some(Plan {
        name: name.to_owned(),
        steps,
        finally,
        cooldown_ms: ms(cooldown),
        max_attempts,
        attempt_window_ms: ms(attempt_window),
        dry_run,
    })
}

fn parse_steps(
    tables: &[Option<&Table>],
    path: &str,
    finally: bool,
    context: &Context<'_>,
    p: &mut Vec<Problem>,
) -> Vec<Step> {
    tables
        .iter()
        .enumerate()
        .filter_map(|(i, t)| parse_step((*t)?, &format!("{path}[{i}]"), finally, context, p))
        .collect()
}

/// Which `k8s.*` action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum K8sKind {
    DeletePods,
    Scale,
    RolloutRestart,
}

/// An action as the config names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ActionKind {
    Docker(DockerOp),
    K8s(K8sKind),
    WaitHealthy,
    Exec,
    Http,
    Notify,
}

impl ActionKind {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "docker.restart" => ActionKind::Docker(DockerOp::Restart),
            "docker.stop" => ActionKind::Docker(DockerOp::Stop),
            "docker.start" => ActionKind::Docker(DockerOp::Start),
            "k8s.delete_pods" => ActionKind::K8s(K8sKind::DeletePods),
            "k8s.scale" => ActionKind::K8s(K8sKind::Scale),
            "k8s.rollout_restart" => ActionKind::K8s(K8sKind::RolloutRestart),
            "wait_healthy" => ActionKind::WaitHealthy,
            "exec" => ActionKind::Exec,
            "http" => ActionKind::Http,
            "notify" => ActionKind::Notify,
            _ => return None,
        })
    }
}

fn parse_step(
    t: &Table,
    path: &str,
    finally: bool,
    context: &Context<'_>,
    p: &mut Vec<Problem>,
) -> Option<Step> {
    let before = p.len();
    let mut s = Section::new(t, path);
    let kind = match s.string("action", p) {
        Some(a) => {
            let kind = ActionKind::parse(&a);
            if kind.is_none() {
                p.push(Problem::new(
                    s.key("action"),
                    format!("unknown action \"{a}\" (one of: {})", ACTIONS.join(", ")),
                ));
            }
            kind
        }
        None => {
            if !s.has("action") {
                p.push(Problem::new(
                    s.key("action"),
                    format!("missing: one of {}", ACTIONS.join(", ")),
                ));
            }
            None
        }
    };
    let approval = s.boolean("approval", p).unwrap_or(false);
    let idempotent = s.boolean("idempotent", p);
    let action = match kind {
        Some(kind) => parse_action(kind, &mut s, finally, context, p),
        None => {
            // Which keys belong is not known: report only those no action
            // takes.
            for key in ACTION_KEYS {
                s.has(key);
            }
            None
        }
    };
    s.finish(p);
    if p.len() > before {
        return None;
    }
    let action = action?;
    Some(Step {
        idempotent: idempotent.unwrap_or_else(|| action.idempotent_by_default()),
        action,
        approval,
    })
}

/// A string key that must be there and not be blank.
fn required(
    s: &mut Section<'_>,
    key: &'static str,
    why: &str,
    p: &mut Vec<Problem>,
) -> Option<String> {
    let v = s.string(key, p);
    if v.is_none() && !s.has(key) {
        p.push(Problem::new(s.key(key), format!("missing: {why}")));
    }
    match v {
        Some(v) if v.trim().is_empty() => {
            p.push(Problem::new(s.key(key), "must not be empty"));
            None
        }
        v => v,
    }
}

fn parse_action(
    kind: ActionKind,
    s: &mut Section<'_>,
    finally: bool,
    context: &Context<'_>,
    p: &mut Vec<Problem>,
) -> Option<Action> {
    match kind {
        ActionKind::Docker(op) => {
            let name = s.string("container", p);
            let label = s.string("label", p);
            let timeout = s.duration("timeout", p).unwrap_or(DEFAULT_DOCKER_TIMEOUT);
            let container = match (name, label) {
                (Some(_), Some(_)) => {
                    p.push(Problem::new(
                        s.key("label"),
                        "set only one of container and label",
                    ));
                    None
                }
                (Some(n), None) => check_container_name(&s.key("container"), &n, p)
                    .then_some(ContainerRef::Name(n)),
                (None, Some(l)) => {
                    check_label(&s.key("label"), &l, p).then_some(ContainerRef::Label(l))
                }
                (None, None) => {
                    if !s.has("container") && !s.has("label") {
                        p.push(Problem::new(
                            s.key("container"),
                            "missing: set container (a container's name) or label \
                             (key=value, every container carrying it)",
                        ));
                    }
                    None
                }
            };
            Some(Action::Docker {
                op,
                container: container?,
                timeout_ms: ms(timeout),
            })
        }
        ActionKind::K8s(kind) => parse_k8s(kind, s, p),
        ActionKind::WaitHealthy => {
            let target = required(s, "target", "the target to wait for", p);
            if let Some(t) = &target
                && !t.trim().is_empty()
                && !context.targets.contains(t)
            {
                p.push(Problem::new(
                    s.key("target"),
                    format!("no target is named \"{t}\""),
                ));
            }
            let timeout = s.duration("timeout", p);
            if timeout.is_none() && !s.has("timeout") {
                p.push(Problem::new(
                    s.key("timeout"),
                    "missing: how long to wait, like \"2m\"",
                ));
            }
            let finish = match s.string("then", p).as_deref() {
                None => false,
                Some("finish") if finally => {
                    p.push(Problem::new(
                        s.key("then"),
                        "\"finish\" ends the plan's steps, so it has no place in finally",
                    ));
                    false
                }
                Some("finish") => true,
                Some(other) => {
                    p.push(Problem::new(
                        s.key("then"),
                        format!(
                            "\"{other}\" is not allowed: the only value is \"finish\" \
                             (end the plan once the target is healthy)"
                        ),
                    ));
                    false
                }
            };
            Some(Action::WaitHealthy {
                target: target?,
                timeout_ms: ms(timeout?),
                finish,
            })
        }
        ActionKind::Exec => {
            let before = p.len();
            let argv = s.strings("argv", p);
            match &argv {
                None if !s.has("argv") => p.push(Problem::new(
                    s.key("argv"),
                    "missing: the program and its arguments, like [\"/usr/local/bin/restore\", \"--latest\"]",
                )),
                // An array of wrong types was reported item by item.
                Some(a) if a.is_empty() && p.len() == before => p.push(Problem::new(
                    s.key("argv"),
                    "is empty: give the program and its arguments",
                )),
                Some(a) if a.first().is_some_and(|a| a.trim().is_empty()) => p.push(
                    Problem::new(format!("{}[0]", s.key("argv")), "the program must not be empty"),
                ),
                _ => {}
            }
            for (i, a) in argv.iter().flatten().enumerate() {
                if a.contains('\0') {
                    p.push(Problem::new(
                        format!("{}[{i}]", s.key("argv")),
                        "contains a NUL character",
                    ));
                }
            }
            let env = s.table("env", p).map(|t| parse_env(t, &s.key("env"), p));
            let timeout = s.duration("timeout", p).unwrap_or(DEFAULT_EXEC_TIMEOUT);
            Some(Action::Exec {
                argv: argv.filter(|a| !a.is_empty())?,
                env: env.unwrap_or_default(),
                timeout_ms: ms(timeout),
            })
        }
        ActionKind::Http => {
            let url = required(s, "url", "like \"http://orchestrator:8080/scale\"", p);
            if let Some(u) = &url
                && !u.trim().is_empty()
            {
                check_http_url(&s.key("url"), u, p);
            }
            let method = s.string("method", p).unwrap_or_else(|| "POST".into());
            if !HTTP_METHODS.contains(&method.as_str()) {
                p.push(Problem::new(
                    s.key("method"),
                    format!(
                        "\"{method}\" is not a method here (one of: {})",
                        HTTP_METHODS.join(", ")
                    ),
                ));
            }
            let expect_status = s
                .int("expect_status", 100, 599, p)
                .map_or(200, |v| v as u16);
            let body = s.string("body", p);
            let timeout = s.duration("timeout", p).unwrap_or(DEFAULT_REQUEST_TIMEOUT);
            Some(Action::Http {
                method,
                url: url?,
                expect_status,
                body,
                timeout_ms: ms(timeout),
            })
        }
        ActionKind::Notify => {
            let message = required(s, "message", "what to say", p);
            let url_env = s.string("url_env", p);
            if let Some(n) = &url_env {
                check_env_name(&s.key("url_env"), n, p);
            }
            let url_env = match url_env {
                Some(n) => Some(n),
                None if s.has("url_env") => None,
                None => match &context.defaults.notify_url_env {
                    Some(n) => Some(n.clone()),
                    None => {
                        p.push(Problem::new(
                            s.key("url_env"),
                            "missing: name the environment variable holding the webhook URL \
                             here, or set notify_url_env in [recovery_defaults]",
                        ));
                        None
                    }
                },
            };
            let timeout = s.duration("timeout", p).unwrap_or(DEFAULT_REQUEST_TIMEOUT);
            Some(Action::Notify {
                url_env: url_env?,
                message: message?,
                timeout_ms: ms(timeout),
            })
        }
    }
}

/// `k8s.delete_pods` (`selector`), `k8s.scale` (`deployment`, `replicas`)
/// and `k8s.rollout_restart` (`deployment`); each with an optional
/// `namespace` and `timeout`.
fn parse_k8s(kind: K8sKind, s: &mut Section<'_>, p: &mut Vec<Problem>) -> Option<Action> {
    let namespace = s.string("namespace", p);
    let namespace_ok = match &namespace {
        Some(n) => check_dns_label(&s.key("namespace"), n, p),
        None => true,
    };
    let timeout = s.duration("timeout", p).unwrap_or(DEFAULT_K8S_TIMEOUT);
    let op = match kind {
        K8sKind::DeletePods => {
            let selector = required(
                s,
                "selector",
                "the label selector of the pods to delete, like \"app.kubernetes.io/name=faxi-postgres\"",
                p,
            );
            match selector {
                Some(sel) if !sel.trim().is_empty() => check_selector(&s.key("selector"), &sel, p)
                    .then_some(K8sOp::DeletePods { selector: sel }),
                _ => None,
            }
        }
        K8sKind::Scale | K8sKind::RolloutRestart => {
            let deployment = required(
                s,
                "deployment",
                "the deployment's name, like \"faxi-app\"",
                p,
            );
            let deployment = deployment.filter(|d| {
                !d.trim().is_empty() && check_dns_subdomain(&s.key("deployment"), d, p)
            });
            if kind == K8sKind::Scale {
                let replicas = s.int("replicas", 0, MAX_REPLICAS, p);
                if replicas.is_none() && !s.has("replicas") {
                    p.push(Problem::new(
                        s.key("replicas"),
                        "missing: the replicas to set, like 0 (stop the app) or 2",
                    ));
                }
                Some(K8sOp::Scale {
                    deployment: deployment?,
                    replicas: u32::try_from(replicas?).ok()?,
                })
            } else {
                deployment.map(|deployment| K8sOp::RolloutRestart { deployment })
            }
        }
    };
    Some(Action::K8s {
        op: op?,
        namespace: namespace.filter(|_| namespace_ok),
        timeout_ms: ms(timeout),
    })
}

/// A Kubernetes namespace: a DNS label (RFC 1123): lower-case letters,
/// digits and '-', starting and ending with a letter or digit, at most 63.
fn check_dns_label(key: &str, name: &str, p: &mut Vec<Problem>) -> bool {
    let ok = is_dns_label(name);
    if !ok {
        p.push(Problem::new(
            key,
            format!(
                "\"{name}\" is not a namespace name: lower-case letters, digits and '-', \
                 starting and ending with a letter or digit, at most 63 characters"
            ),
        ));
    }
    ok
}

fn is_dns_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A deployment's name: a DNS subdomain (RFC 1123): DNS labels joined by
/// '.', at most 253 characters.
fn check_dns_subdomain(key: &str, name: &str, p: &mut Vec<Problem>) -> bool {
    let ok = name.len() <= 253 && name.split('.').all(is_dns_label);
    if !ok {
        p.push(Problem::new(
            key,
            format!(
                "\"{name}\" is not a deployment name: lower-case letters, digits, '-' and '.', \
                 each part starting and ending with a letter or digit, at most 253 characters"
            ),
        ));
    }
    ok
}

/// An equality-based label selector: comma-separated `key=value`,
/// `key==value` or `key!=value` terms, at least one of them `=`, so that it
/// can never match every pod of the namespace. Keys are `[prefix/]name`,
/// values at most 63 letters, digits, '-', '_' or '.'.
fn check_selector(key: &str, selector: &str, p: &mut Vec<Problem>) -> bool {
    let name_ok = |n: &str| {
        (1..=63).contains(&n.len())
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && n.starts_with(|c: char| c.is_ascii_alphanumeric())
            && n.ends_with(|c: char| c.is_ascii_alphanumeric())
    };
    let key_ok = |k: &str| match k.split_once('/') {
        Some((prefix, name)) => {
            prefix.len() <= 253 && prefix.split('.').all(is_dns_label) && name_ok(name)
        }
        None => name_ok(k),
    };
    let value_ok = |v: &str| v.is_empty() || name_ok(v);
    let mut equal = false;
    let mut bad = None;
    for term in selector.split(',') {
        let term = term.trim();
        let parsed = if let Some((k, v)) = term.split_once("!=") {
            Some((k, v))
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            equal |= !v.trim().is_empty();
            Some((k, v))
        } else {
            None
        };
        match parsed {
            Some((k, v)) if key_ok(k.trim()) && value_ok(v.trim()) => {}
            _ => {
                bad = Some(term.to_owned());
                break;
            }
        }
    }
    match bad {
        Some(term) => {
            p.push(Problem::new(
                key,
                format!(
                    "\"{term}\" is not a selector term: write key=value (or key!=value), \
                     comma-separated, like \"app.kubernetes.io/name=faxi-postgres\""
                ),
            ));
            false
        }
        None if !equal => {
            p.push(Problem::new(
                key,
                format!(
                    "\"{selector}\" has no key=value term: it could match every pod of the \
                     namespace; name the pods, like \"app.kubernetes.io/name=faxi-postgres\""
                ),
            ));
            false
        }
        None => true,
    }
}

/// `env = { NAME = "value", ... }` of an `exec` step.
fn parse_env(t: &Table, path: &str, p: &mut Vec<Problem>) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(t.len());
    for (name, v) in t {
        let key = format!("{path}.{}", toml_key(name));
        if !check_env_name(&key, name, p) {
            continue;
        }
        if name.starts_with(EXECUTOR_ENV_PREFIX) {
            p.push(Problem::new(
                key,
                format!(
                    "names starting with {EXECUTOR_ENV_PREFIX} are the executor's \
                     (FAXI_INCIDENT, FAXI_TARGET, FAXI_FENCE_TERM, FAXI_FENCE_INDEX): use another name"
                ),
            ));
            continue;
        }
        match v {
            Value::String(s) if s.contains('\0') => {
                p.push(Problem::new(key, "contains a NUL character"));
            }
            Value::String(s) => out.push((name.clone(), s.clone())),
            other => p.push(Problem::new(
                key,
                format!("expected a string, found {}", other.type_str()),
            )),
        }
    }
    out
}

/// An environment variable's name: letters, digits and `_`, not starting
/// with a digit (what a shell can set).
fn check_env_name(key: &str, name: &str, p: &mut Vec<Problem>) -> bool {
    let ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        p.push(Problem::new(
            key,
            format!(
                "\"{name}\" is not an environment variable name: use letters, digits and '_', \
                 not starting with a digit (like FAXI_WEBHOOK_URL)"
            ),
        ));
    }
    ok
}

/// A Docker container's name: a letter or digit, then letters, digits,
/// `_`, `.` or `-`; at most 128 characters.
fn check_container_name(key: &str, name: &str, p: &mut Vec<Problem>) -> bool {
    let ok = name.len() <= 128
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok {
        p.push(Problem::new(
            key,
            format!(
                "\"{name}\" is not a container name: a letter or digit, then letters, digits, \
                 '_', '.' or '-', at most 128 characters"
            ),
        ));
    }
    ok
}

/// A Docker label as `key=value`: neither part empty, no spaces or control
/// characters.
fn check_label(key: &str, label: &str, p: &mut Vec<Problem>) -> bool {
    let ok = label.len() <= 255
        && label.chars().all(|c| !c.is_whitespace() && !c.is_control())
        && label
            .split_once('=')
            .is_some_and(|(k, v)| !k.is_empty() && !v.is_empty());
    if !ok {
        p.push(Problem::new(
            key,
            format!(
                "\"{label}\" is not a label: write key=value, like \"faxi.role=worker\" \
                 (no spaces, at most 255 bytes)"
            ),
        ));
    }
    ok
}
