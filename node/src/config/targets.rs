//! `[[targets]]`: what to probe, per kind, with its timing and recovery.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use redis::IntoConnectionInfo;
use toml::Table;

use super::reader::Section;
use super::secret::{Secret, SecretSource};
use super::{
    ProbeDefaults, Problem, check_host_port, check_http_url, check_name, check_timing,
    url_has_userinfo,
};

/// What kind of thing a target is; decides its probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TargetKind {
    /// Connect and run a query.
    Postgres,
    /// PING and read the role.
    Redis,
    /// Bucket reachable, optionally a canary round trip.
    S3,
    /// An HTTP status code.
    Http,
    /// A TCP connect.
    Tcp,
    /// The age of the newest object under a prefix.
    Backup,
}

impl TargetKind {
    /// Every kind, as written in the config.
    pub const ALL: [TargetKind; 6] = [
        TargetKind::Postgres,
        TargetKind::Redis,
        TargetKind::S3,
        TargetKind::Http,
        TargetKind::Tcp,
        TargetKind::Backup,
    ];

    /// The name used in the config, in labels and in status output.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Postgres => "postgres",
            TargetKind::Redis => "redis",
            TargetKind::S3 => "s3",
            TargetKind::Http => "http",
            TargetKind::Tcp => "tcp",
            TargetKind::Backup => "backup",
        }
    }

    /// The kind-specific keys it accepts (beyond the common ones).
    fn keys(self) -> &'static [&'static str] {
        const S3: &[&str] = &[
            "bucket",
            "endpoint",
            "region",
            "path_style",
            "canary",
            "access_key_env",
            "access_key_file",
            "secret_key_env",
            "secret_key_file",
        ];
        const BACKUP: &[&str] = &[
            "bucket",
            "endpoint",
            "region",
            "path_style",
            "access_key_env",
            "access_key_file",
            "secret_key_env",
            "secret_key_file",
            "prefix",
            "rpo",
        ];
        match self {
            TargetKind::Postgres => &["dsn", "query", "password_env", "password_file"],
            TargetKind::Redis => &["url", "username", "password_env", "password_file"],
            TargetKind::Http => &["url", "expect_status"],
            TargetKind::Tcp => &["addr"],
            TargetKind::S3 => S3,
            TargetKind::Backup => BACKUP,
        }
    }
}

/// Every kind-specific key of any kind.
const KIND_KEYS: &[&str] = &[
    "dsn",
    "query",
    "password_env",
    "password_file",
    "username",
    "url",
    "expect_status",
    "addr",
    "bucket",
    "endpoint",
    "region",
    "path_style",
    "canary",
    "access_key_env",
    "access_key_file",
    "secret_key_env",
    "secret_key_file",
    "prefix",
    "rpo",
];

impl std::fmt::Display for TargetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TargetKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        TargetKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let all: Vec<&str> = TargetKind::ALL.iter().map(|k| k.as_str()).collect();
                format!("unknown kind \"{s}\" (one of: {})", all.join(", "))
            })
    }
}

/// One validated target.
#[derive(Debug, Clone)]
pub struct TargetSpec {
    /// Unique name, used in labels, logs and faxictl.
    pub name: String,
    /// Time between probe starts.
    pub interval: Duration,
    /// Hard deadline of one probe.
    pub timeout: Duration,
    /// Consecutive failures before DOWN (and stale results before STALE).
    pub fall: u32,
    /// Consecutive successes before UP.
    pub rise: u32,
    /// Targets this one needs; an incident of theirs absorbs this one's.
    pub depends_on: Vec<String>,
    /// Recovery time objective, compared with time-to-recover.
    pub rto: Option<Duration>,
    /// The recovery plan to run when the target is DOWN: a key of
    /// [`super::RecoveryConfig::plans`].
    pub recovery: Option<String>,
    /// How to probe it.
    pub check: Check,
}

impl TargetSpec {
    /// The secrets this target was configured with (passwords, S3 keys).
    pub fn secrets(&self) -> Vec<&Secret> {
        match &self.check {
            Check::Postgres(c) => c.password.iter().collect(),
            Check::Redis(c) => c.password.iter().collect(),
            Check::S3(c) => vec![&c.access_key, &c.secret_key],
            Check::Backup(c) => vec![&c.s3.access_key, &c.s3.secret_key],
            Check::Http(_) | Check::Tcp(_) => Vec::new(),
        }
    }

    /// The target's kind.
    pub fn kind(&self) -> TargetKind {
        match &self.check {
            Check::Postgres(_) => TargetKind::Postgres,
            Check::Redis(_) => TargetKind::Redis,
            Check::S3(_) => TargetKind::S3,
            Check::Http(_) => TargetKind::Http,
            Check::Tcp(_) => TargetKind::Tcp,
            Check::Backup(_) => TargetKind::Backup,
        }
    }
}

/// The kind-specific part of a target.
#[derive(Debug, Clone)]
pub enum Check {
    /// `kind = "postgres"`.
    Postgres(PostgresCheck),
    /// `kind = "redis"`.
    Redis(RedisCheck),
    /// `kind = "s3"`.
    S3(S3Check),
    /// `kind = "http"`.
    Http(HttpCheck),
    /// `kind = "tcp"`.
    Tcp(TcpCheck),
    /// `kind = "backup"`.
    Backup(BackupCheck),
}

/// Connect and run `query`.
#[derive(Debug, Clone)]
pub struct PostgresCheck {
    /// libpq-style DSN (`host=db user=faxi dbname=faxi` or a `postgres://` URL), without a password.
    pub dsn: String,
    /// The query to run; `SELECT 1` unless told.
    pub query: String,
    /// From `password_env` / `password_file`.
    pub password: Option<Secret>,
}

/// PING, then the role from `INFO replication`.
#[derive(Debug, Clone)]
pub struct RedisCheck {
    /// `redis://host:port/db`, without a password.
    pub url: String,
    /// ACL user, if any.
    pub username: Option<String>,
    /// From `password_env` / `password_file`.
    pub password: Option<Secret>,
}

/// The status code of a GET.
#[derive(Debug, Clone)]
pub struct HttpCheck {
    /// `http://` or `https://` URL, without credentials.
    pub url: String,
    /// The status code that means healthy.
    pub expect_status: u16,
}

/// A TCP connect.
#[derive(Debug, Clone)]
pub struct TcpCheck {
    /// `host:port`.
    pub addr: String,
}

/// An S3 bucket (any S3-compatible endpoint).
#[derive(Debug, Clone)]
pub struct S3Check {
    /// The bucket.
    pub bucket: String,
    /// A custom endpoint URL (MinIO, Ceph, ...); AWS's when absent.
    pub endpoint: Option<String>,
    /// The signing region.
    pub region: String,
    /// Path-style addressing (`endpoint/bucket/key`), as most non-AWS servers need.
    pub path_style: bool,
    /// Put, get and delete a small object on every probe.
    pub canary: bool,
    /// Access key id.
    pub access_key: Secret,
    /// Secret access key.
    pub secret_key: Secret,
}

/// The age of the newest backup object under a prefix.
#[derive(Debug, Clone)]
pub struct BackupCheck {
    /// Where the backups live.
    pub s3: S3Check,
    /// The key prefix, like `backups/postgres/`.
    pub prefix: String,
    /// Recovery point objective: the newest backup must be younger.
    pub rpo: Duration,
}

/// The names the `[[targets]]` tables give, including targets with problems
/// of their own (so that naming one is not also a problem).
pub(crate) fn target_names(tables: &[Option<&Table>]) -> BTreeSet<String> {
    tables
        .iter()
        .filter_map(|t| match (*t)?.get("name")? {
            toml::Value::String(name) => Some(name.clone()),
            _ => None,
        })
        .collect()
}

/// Parses every `[[targets]]` table; problems are collected, bad targets
/// dropped. `plans` are the names of the config's recovery plans.
pub(crate) fn parse_targets(
    tables: &[Option<&Table>],
    defaults: &ProbeDefaults,
    plans: &BTreeSet<String>,
    p: &mut Vec<Problem>,
) -> Vec<TargetSpec> {
    // Names first, from every table that has one, so a target with its own
    // problems still counts as existing for the others' `depends_on`.
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    for (i, t) in tables.iter().enumerate() {
        let Some(toml::Value::String(name)) = t.and_then(|t| t.get("name")) else {
            continue;
        };
        if let Some(j) = names.get(name) {
            p.push(Problem::new(
                format!("targets[{i}].name"),
                format!("\"{name}\" is also the name of targets[{j}]"),
            ));
        } else {
            names.insert(name.clone(), i);
        }
    }
    let mut out: Vec<(usize, TargetSpec)> = Vec::new();
    for (i, t) in tables.iter().enumerate() {
        let Some(t) = t else { continue };
        if let Some(spec) = parse_target(t, &format!("targets[{i}]"), defaults, plans, p) {
            out.push((i, spec));
        }
    }
    // depends_on: known names, not itself, no cycles.
    for (i, spec) in &out {
        for (k, dep) in spec.depends_on.iter().enumerate() {
            if dep == &spec.name {
                p.push(Problem::new(
                    format!("targets[{i}].depends_on[{k}]"),
                    "a target cannot depend on itself",
                ));
            } else if !names.contains_key(dep) {
                p.push(Problem::new(
                    format!("targets[{i}].depends_on[{k}]"),
                    format!("no target is named \"{dep}\""),
                ));
            }
        }
    }
    if let Some(cycle) = find_cycle(&out) {
        p.push(Problem::new(
            "targets",
            format!("depends_on forms a cycle: {}", cycle.join(" -> ")),
        ));
    }
    out.into_iter().map(|(_, s)| s).collect()
}

fn find_cycle(targets: &[(usize, TargetSpec)]) -> Option<Vec<String>> {
    let deps: BTreeMap<&str, &[String]> = targets
        .iter()
        .map(|(_, t)| (t.name.as_str(), t.depends_on.as_slice()))
        .collect();
    // 0 = unvisited, 1 = on the stack, 2 = done.
    let mut mark: BTreeMap<&str, u8> = BTreeMap::new();
    fn visit<'a>(
        n: &'a str,
        deps: &BTreeMap<&'a str, &'a [String]>,
        mark: &mut BTreeMap<&'a str, u8>,
        stack: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match mark.get(n) {
            Some(2) => return None,
            Some(1) => {
                let start = stack.iter().position(|s| *s == n).unwrap_or(0);
                let mut c: Vec<String> = stack[start..].iter().map(|s| s.to_string()).collect();
                c.push(n.to_owned());
                return Some(c);
            }
            _ => {}
        }
        mark.insert(n, 1);
        stack.push(n);
        for d in deps.get(n).copied().unwrap_or_default() {
            if deps.contains_key(d.as_str())
                && d != n
                && let Some(c) = visit(d, deps, mark, stack)
            {
                return Some(c);
            }
        }
        stack.pop();
        mark.insert(n, 2);
        None
    }
    for n in deps.keys() {
        if let Some(c) = visit(n, &deps, &mut mark, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

fn parse_target(
    t: &Table,
    path: &str,
    defaults: &ProbeDefaults,
    plans: &BTreeSet<String>,
    p: &mut Vec<Problem>,
) -> Option<TargetSpec> {
    let before = p.len();
    let mut s = Section::new(t, path);
    let name = s.string("name", p);
    if !s.has("name") {
        p.push(Problem::new(
            s.key("name"),
            "missing: every target needs a unique name",
        ));
    }
    if let Some(n) = &name {
        check_name(&s.key("name"), n, p);
    }
    let kind = match s.string("kind", p) {
        Some(k) => match k.parse::<TargetKind>() {
            Ok(k) => Some(k),
            Err(reason) => {
                p.push(Problem::new(s.key("kind"), reason));
                None
            }
        },
        None => {
            if !s.has("kind") {
                p.push(Problem::new(
                    s.key("kind"),
                    "missing: one of postgres, redis, s3, http, tcp, backup",
                ));
            }
            None
        }
    };
    let interval = s.duration("interval", p).unwrap_or(defaults.interval);
    // A target that shortens its interval but says nothing of its timeout
    // gets the default timeout cut to fit (as Prometheus does with
    // scrape_timeout); only a timeout written longer than the interval is an error.
    let timeout = s
        .duration("timeout", p)
        .unwrap_or(defaults.timeout.min(interval));
    check_timing(path, interval, timeout, p);
    let fall = s
        .int("fall", 1, 1000, p)
        .map_or(defaults.fall, |v| v as u32);
    let rise = s
        .int("rise", 1, 1000, p)
        .map_or(defaults.rise, |v| v as u32);
    let depends_on = s.strings("depends_on", p).unwrap_or_default();
    let mut uniq = BTreeSet::new();
    for (k, d) in depends_on.iter().enumerate() {
        if !uniq.insert(d) {
            p.push(Problem::new(
                format!("{path}.depends_on[{k}]"),
                format!("\"{d}\" is listed twice"),
            ));
        }
    }
    let rto = s.duration("rto", p);
    let recovery = s.string("recovery", p);
    if let Some(r) = &recovery
        && !plans.contains(r)
    {
        p.push(Problem::new(
            s.key("recovery"),
            format!("no plan \"{r}\" ([recovery.{r}])"),
        ));
    }

    // Keys of another kind are refused by name, so a typo'd kind is obvious.
    if let Some(kind) = kind {
        for key in KIND_KEYS {
            if !kind.keys().contains(key) && s.has(key) {
                p.push(Problem::new(
                    s.key(key),
                    format!("does not apply to kind \"{kind}\""),
                ));
            }
        }
    }
    let check = kind.and_then(|k| parse_check(k, &mut s, p));
    // Read (and so mark as known) every kind key, then report truly unknown ones.
    for key in KIND_KEYS {
        s.has(key);
    }
    s.finish(p);
    if p.len() > before {
        return None;
    }
    Some(TargetSpec {
        name: name?,
        interval,
        timeout,
        fall,
        rise,
        depends_on,
        rto,
        recovery,
        check: check?,
    })
}

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

/// `<base>_env` or `<base>_file`, at most one, read now.
fn secret(
    s: &mut Section<'_>,
    env_key: &'static str,
    file_key: &'static str,
    p: &mut Vec<Problem>,
) -> Option<Option<Secret>> {
    let env = s.string(env_key, p);
    let file = s.string(file_key, p);
    let source = match (env, file) {
        (Some(_), Some(_)) => {
            p.push(Problem::new(
                s.key(file_key),
                format!("set only one of {env_key} and {file_key}"),
            ));
            return None;
        }
        (Some(e), None) => SecretSource::Env(e),
        (None, Some(f)) => SecretSource::File(PathBuf::from(f)),
        (None, None) => return Some(None),
    };
    let key = match source {
        SecretSource::Env(_) => s.key(env_key),
        SecretSource::File(_) => s.key(file_key),
    };
    match source.resolve() {
        Ok(v) => Some(Some(v)),
        Err(reason) => {
            p.push(Problem::new(key, reason));
            None
        }
    }
}

fn parse_check(kind: TargetKind, s: &mut Section<'_>, p: &mut Vec<Problem>) -> Option<Check> {
    match kind {
        TargetKind::Postgres => {
            let dsn = required(
                s,
                "dsn",
                "the connection string, like \"host=db user=faxi dbname=faxi\"",
                p,
            );
            let query = s.string("query", p).unwrap_or_else(|| "SELECT 1".into());
            if query.trim().is_empty() {
                p.push(Problem::new(s.key("query"), "must not be empty"));
            }
            let password = secret(s, "password_env", "password_file", p);
            if let Some(dsn) = &dsn {
                match tokio_postgres::Config::from_str(dsn) {
                    Ok(c) if c.get_password().is_some() => p.push(Problem::new(
                        s.key("dsn"),
                        "contains a password: move it to password_env or password_file",
                    )),
                    Ok(c) if c.get_hosts().is_empty() => {
                        p.push(Problem::new(s.key("dsn"), "names no host"))
                    }
                    Ok(_) => {}
                    // The driver's message never repeats the DSN's contents.
                    Err(e) => p.push(Problem::new(
                        s.key("dsn"),
                        format!("is not a valid DSN: {e}"),
                    )),
                }
            }
            Some(Check::Postgres(PostgresCheck {
                dsn: dsn?,
                query,
                password: password?,
            }))
        }
        TargetKind::Redis => {
            let url = required(s, "url", "like \"redis://redis:6379\"", p);
            let username = s.string("username", p);
            let password = secret(s, "password_env", "password_file", p);
            if let Some(u) = &url {
                if !u.starts_with("redis://") {
                    p.push(Problem::new(s.key("url"), "must start with redis://"));
                } else {
                    match u.as_str().into_connection_info() {
                        Ok(info) if info.redis_settings().password().is_some() => {
                            p.push(Problem::new(
                                s.key("url"),
                                "contains a password: move it to password_env or password_file",
                            ))
                        }
                        Ok(_) => {}
                        Err(_) => p.push(Problem::new(s.key("url"), "is not a valid redis:// URL")),
                    }
                }
            }
            Some(Check::Redis(RedisCheck {
                url: url?,
                username,
                password: password?,
            }))
        }
        TargetKind::Http => {
            let url = required(s, "url", "like \"http://app:4000/health\"", p);
            let expect_status = s
                .int("expect_status", 100, 599, p)
                .map_or(200, |v| v as u16);
            if let Some(u) = &url {
                check_http_url(&s.key("url"), u, p);
            }
            Some(Check::Http(HttpCheck {
                url: url?,
                expect_status,
            }))
        }
        TargetKind::Tcp => {
            let addr = required(s, "addr", "host:port", p);
            if let Some(a) = &addr
                && let Err(reason) = check_host_port(a)
            {
                p.push(Problem::new(s.key("addr"), reason));
            }
            Some(Check::Tcp(TcpCheck { addr: addr? }))
        }
        TargetKind::S3 => Some(Check::S3(parse_s3(s, true, p)?)),
        TargetKind::Backup => {
            let s3 = parse_s3(s, false, p);
            let prefix = s.string("prefix", p).unwrap_or_default();
            let rpo = s.duration("rpo", p);
            if rpo.is_none() && !s.has("rpo") {
                p.push(Problem::new(
                    s.key("rpo"),
                    "missing: the recovery point objective, like \"2h\"",
                ));
            }
            Some(Check::Backup(BackupCheck {
                s3: s3?,
                prefix,
                rpo: rpo?,
            }))
        }
    }
}

fn parse_s3(s: &mut Section<'_>, canary_allowed: bool, p: &mut Vec<Problem>) -> Option<S3Check> {
    let bucket = required(s, "bucket", "the bucket name", p);
    let endpoint = s.string("endpoint", p);
    if let Some(e) = &endpoint {
        if url_has_userinfo(e) {
            // Not echoed: it holds an access key and perhaps its secret.
            p.push(Problem::new(
                s.key("endpoint"),
                "must not carry credentials (a user:password@ part): \
                 use access_key_env or access_key_file, and secret_key_env or secret_key_file",
            ));
        } else {
            match e.parse::<hyper::Uri>() {
                Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => {
                }
                _ => p.push(Problem::new(
                    s.key("endpoint"),
                    format!("\"{e}\" is not an http(s):// URL"),
                )),
            }
        }
    }
    let region = s.string("region", p).unwrap_or_else(|| "us-east-1".into());
    let path_style = s.boolean("path_style", p).unwrap_or(false);
    let canary = if canary_allowed {
        s.boolean("canary", p).unwrap_or(false)
    } else {
        false
    };
    let access_key = secret(s, "access_key_env", "access_key_file", p);
    let secret_key = secret(s, "secret_key_env", "secret_key_file", p);
    let access_key = match access_key {
        Some(Some(k)) => Some(k),
        Some(None) => {
            p.push(Problem::new(
                s.key("access_key_env"),
                "missing: set access_key_env or access_key_file",
            ));
            None
        }
        None => None,
    };
    let secret_key = match secret_key {
        Some(Some(k)) => Some(k),
        Some(None) => {
            p.push(Problem::new(
                s.key("secret_key_env"),
                "missing: set secret_key_env or secret_key_file",
            ));
            None
        }
        None => None,
    };
    Some(S3Check {
        bucket: bucket?,
        endpoint,
        region,
        path_style,
        canary,
        access_key: access_key?,
        secret_key: secret_key?,
    })
}
