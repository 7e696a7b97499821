//! The node's configuration (DESIGN.md §4): TOML, typed, unknown keys
//! refused, secrets only through `*_env` / `*_file` keys.
//!
//! [`Config::load`] reads a file and returns either a complete, validated
//! config or a [`ConfigError`] listing *every* problem found, each with the
//! file, the key's full path and the reason.

mod reader;
mod recovery;
mod secret;
mod targets;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use reader::parse_duration;
pub use recovery::{
    ACTIONS, APPROVAL_TTL_RANGE, DEFAULT_ATTEMPT_WINDOW, DEFAULT_COOLDOWN, DEFAULT_DOCKER_TIMEOUT,
    DEFAULT_EXEC_TIMEOUT, DEFAULT_MAX_ATTEMPTS, DEFAULT_REQUEST_TIMEOUT, EXECUTOR_ENV_PREFIX,
    HTTP_METHODS, RecoveryConfig,
};
pub use secret::{Redactor, Secret, SecretSource};
pub use targets::{
    BackupCheck, Check, HttpCheck, PostgresCheck, RedisCheck, S3Check, TargetKind, TargetSpec,
    TcpCheck,
};

use reader::Section;

/// Default gRPC listen address (peers and faxictl).
pub const DEFAULT_LISTEN: &str = "0.0.0.0:7400";
/// Default `/metrics` and `/healthz` listen address.
pub const DEFAULT_METRICS_LISTEN: &str = "0.0.0.0:9400";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/faxi-watchdog";
/// Default Raft tick.
pub const DEFAULT_TICK: Duration = Duration::from_millis(100);
/// Default election timeout, in ticks.
pub const DEFAULT_ELECTION_TICKS: u32 = 10;
/// Default heartbeat interval, in ticks.
pub const DEFAULT_HEARTBEAT_TICKS: u32 = 1;
/// Default observation refresh.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(5);
/// Longest observation refresh: observations stay fresh for three
/// refreshes, and the state machine refuses a validity over an hour.
pub const MAX_REFRESH: Duration = Duration::from_millis(crate::mesh::state::MAX_VALID_FOR_MS / 3);
/// Most targets one node probes: a refresh carries them all in one
/// observation, which the state machine refuses past this.
pub const MAX_TARGETS: usize = crate::mesh::state::MAX_SEEN_PER_OBSERVE;
/// Default applied entries between snapshots (a snapshot of 10,000
/// targets is about 0.5 MB; a quiet mesh writes 0.6 entries a second).
pub const DEFAULT_SNAPSHOT_ENTRIES: u64 = 1_000;
/// Log bytes after which a snapshot is taken, whatever the entry count.
pub const DEFAULT_SNAPSHOT_BYTES: u64 = 16 << 20;
/// Smallest and largest `cluster.snapshot_bytes`.
pub const SNAPSHOT_BYTES_RANGE: (u64, u64) = (64 << 10, 16 << 30);
/// Default probe interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// Default probe timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(800);
/// Default consecutive failures before DOWN.
pub const DEFAULT_FALL: u32 = 3;
/// Default consecutive successes before UP.
pub const DEFAULT_RISE: u32 = 2;
/// The shortest probe interval accepted: below it a probe is a load test.
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key's full path, like `targets[2].timeout`.
    pub key: String,
    /// Why the value is refused, in words an operator can act on.
    pub reason: String,
}

impl Problem {
    pub(crate) fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// Every problem found in one config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file as it was named.
    pub file: PathBuf,
    /// At least one problem.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {}: {}", self.file.display(), p.key, p.reason)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// A complete, validated node config.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node.
    pub node: NodeConfig,
    /// The mesh this node belongs to.
    pub cluster: ClusterConfig,
    /// What to probe.
    pub targets: Vec<TargetSpec>,
    /// `[recovery_defaults]` and the `[recovery.<name>]` plans targets name.
    pub recovery: RecoveryConfig,
    /// How gRPC connections are secured.
    pub tls: TlsConfig,
    /// `[kubernetes]`: the API server of the `k8s.*` recovery steps.
    pub kubernetes: KubernetesConfig,
}

/// `[kubernetes]`: where the `k8s.*` recovery steps reach the API server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KubernetesConfig {
    /// A kubeconfig file (its current context); relative paths are read
    /// from the config file's directory. `None` (the default): the pod's
    /// service account when the node runs in Kubernetes, else
    /// `KUBECONFIG` or `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
}

/// `[tls]`: mutual TLS on every gRPC connection (peers and faxictl), or
/// plaintext by an explicit `insecure = true`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsConfig {
    /// The cluster CA, this node's certificate (naming its id) and key;
    /// relative paths are read from the config file's directory.
    Files {
        /// The cluster CA certificate (PEM).
        ca: PathBuf,
        /// This node's certificate (PEM).
        cert: PathBuf,
        /// Its private key (PEM).
        key: PathBuf,
        /// Automation tokens (`[[token]]` entries with a name, a role and
        /// the token's SHA-256), for clients without a certificate.
        tokens_file: Option<PathBuf>,
    },
    /// No TLS, no authentication: anyone who reaches the port can steer
    /// the cluster. For a laptop or a lab only; logged loudly.
    Insecure,
}

/// `[node]`: who this node is and where it listens.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Raft id, unique in the cluster, never 0.
    pub id: u64,
    /// The failure domain this node observes from.
    pub zone: String,
    /// Where the node keeps its log and snapshots.
    pub data_dir: PathBuf,
    /// gRPC: peers and faxictl.
    pub listen: SocketAddr,
    /// `/metrics` and `/healthz`.
    pub metrics_listen: SocketAddr,
}

/// `[cluster]`: the bootstrap membership and Raft timing.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Bootstrap members, this node among them.
    pub peers: Vec<Peer>,
    /// One Raft tick.
    pub tick: Duration,
    /// Election timeout in ticks.
    pub election_ticks: u32,
    /// Heartbeat interval in ticks.
    pub heartbeat_ticks: u32,
    /// How often every verdict is re-proposed; observations stay fresh for
    /// three refreshes.
    pub refresh: Duration,
    /// Applied entries between snapshots (each compacts the log).
    pub snapshot_entries: u64,
    /// Log bytes (entries as stored) after which a snapshot is taken,
    /// however few entries they are.
    pub snapshot_bytes: u64,
    /// Start with an empty log and wait to be added (`faxictl members add`),
    /// instead of bootstrapping from `peers`.
    pub join: bool,
}

/// One member of the bootstrap cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Raft id.
    pub id: u64,
    /// Its zone.
    pub zone: String,
    /// `host:port` of its gRPC listener.
    pub addr: String,
}

/// `[probe_defaults]`: what a target gets when it does not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeDefaults {
    /// Time between probe starts.
    pub interval: Duration,
    /// Hard deadline of one probe.
    pub timeout: Duration,
    /// Consecutive failures before DOWN.
    pub fall: u32,
    /// Consecutive successes before UP.
    pub rise: u32,
}

impl Default for ProbeDefaults {
    fn default() -> Self {
        Self {
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            fall: DEFAULT_FALL,
            rise: DEFAULT_RISE,
        }
    }
}

impl Config {
    /// Hides every secret of this config (each target's passwords and S3
    /// keys) in a text: for log lines and probe errors.
    pub fn redactor(&self) -> Redactor {
        // Webhook URLs (they often carry a token in their path), from the
        // variables `notify` steps and escalations read.
        let hooks: Vec<Secret> = self
            .webhook_envs()
            .filter_map(|name| std::env::var(name).ok())
            .filter(|v| !v.is_empty())
            .map(Secret::new)
            .collect();
        Redactor::new(
            self.targets
                .iter()
                .flat_map(TargetSpec::secrets)
                .chain(hooks.iter()),
        )
    }

    /// The environment variables that hold webhook URLs.
    fn webhook_envs(&self) -> impl Iterator<Item = &str> {
        let steps = self
            .recovery
            .plans
            .values()
            .flat_map(|p| p.steps.iter().chain(p.finally.iter()))
            .filter_map(|s| match &s.action {
                crate::recovery::Action::Notify { url_env, .. } => Some(url_env.as_str()),
                _ => None,
            });
        self.recovery
            .defaults
            .notify_url_env
            .as_deref()
            .into_iter()
            .chain(steps)
    }

    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let fail = |reason: String| ConfigError {
            file: path.to_owned(),
            problems: vec![Problem::new("(file)", reason)],
        };
        let text = std::fs::read(path).map_err(|e| fail(format!("cannot read: {e}")))?;
        let text = String::from_utf8(text).map_err(|_| fail("is not valid UTF-8".into()))?;
        let mut config = Self::parse(&text).map_err(|problems| ConfigError {
            file: path.to_owned(),
            problems,
        })?;
        if let (
            TlsConfig::Files {
                ca,
                cert,
                key,
                tokens_file,
            },
            Some(dir),
        ) = (&mut config.tls, path.parent())
        {
            for f in [ca, cert, key].into_iter().chain(tokens_file.as_mut()) {
                if f.is_relative() {
                    *f = dir.join(&*f);
                }
            }
        }
        if let (Some(f), Some(dir)) = (&mut config.kubernetes.kubeconfig, path.parent())
            && f.is_relative()
        {
            *f = dir.join(&*f);
        }
        Ok(config)
    }

    /// Parses and validates TOML text; every problem found is returned.
    pub fn parse(text: &str) -> Result<Config, Vec<Problem>> {
        let root: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let msg = e.to_string();
            vec![Problem::new(
                "(syntax)",
                msg.trim_end().replace('\n', "\n    "),
            )]
        })?;
        let mut p = Vec::new();
        let mut top = Section::new(&root, "");

        let node = match top.table("node", &mut p) {
            Some(t) => parse_node(t, &mut p),
            None => {
                if !top.has("node") {
                    p.push(Problem::new("node", "missing section [node]"));
                }
                None
            }
        };
        let defaults = match top.table("probe_defaults", &mut p) {
            Some(t) => parse_defaults(t, &mut p),
            None => ProbeDefaults::default(),
        };
        let cluster_table = top.table("cluster", &mut p);
        let tls_table = top.table("tls", &mut p);
        let tls_present = top.has("tls");
        let target_tables = top.tables("targets", &mut p).unwrap_or_default();
        let recovery_defaults = top.table("recovery_defaults", &mut p);
        let plan_tables = top.table("recovery", &mut p);
        let kubernetes = top
            .table("kubernetes", &mut p)
            .map(|t| parse_kubernetes(t, &mut p))
            .unwrap_or_default();
        top.finish(&mut p);

        let cluster = parse_cluster(cluster_table, node.as_ref(), &mut p);
        let tls = parse_tls(tls_table, tls_present, &mut p);
        let plan_names = recovery::plan_names(plan_tables);
        let targets = targets::parse_targets(&target_tables, &defaults, &plan_names, &mut p);
        let recovery = recovery::parse_recovery(
            recovery_defaults,
            plan_tables,
            &targets::target_names(&target_tables),
            &mut p,
        );
        if target_tables.len() > MAX_TARGETS {
            p.push(Problem::new(
                "targets",
                format!(
                    "{} targets: at most {MAX_TARGETS} (a node's whole set goes in one observation)",
                    target_tables.len()
                ),
            ));
        }

        match node {
            Some(node) if p.is_empty() => Ok(Config {
                node,
                cluster,
                targets,
                recovery,
                tls: tls.unwrap_or(TlsConfig::Insecure),
                kubernetes,
            }),
            _ => Err(p),
        }
    }
}

fn parse_kubernetes(t: &toml::Table, p: &mut Vec<Problem>) -> KubernetesConfig {
    let mut s = Section::new(t, "kubernetes");
    let kubeconfig = s.string("kubeconfig", p);
    if kubeconfig.as_deref().is_some_and(|k| k.trim().is_empty()) {
        p.push(Problem::new(
            "kubernetes.kubeconfig",
            "must not be empty: leave it out to use the pod's service account",
        ));
    }
    s.finish(p);
    KubernetesConfig {
        kubeconfig: kubeconfig
            .filter(|k| !k.trim().is_empty())
            .map(PathBuf::from),
    }
}

fn parse_node(t: &toml::Table, p: &mut Vec<Problem>) -> Option<NodeConfig> {
    let mut s = Section::new(t, "node");
    let id = s.int("id", 1, i64::MAX, p);
    if !s.has("id") {
        p.push(Problem::new(
            "node.id",
            "missing: every node needs a unique id (1 or more)",
        ));
    }
    let zone = s.string("zone", p);
    if !s.has("zone") {
        p.push(Problem::new(
            "node.zone",
            "missing: the zone this node observes from",
        ));
    }
    if let Some(z) = &zone {
        check_name(&s.key("zone"), z, p);
    }
    let data_dir = s
        .string("data_dir", p)
        .unwrap_or_else(|| DEFAULT_DATA_DIR.into());
    if data_dir.is_empty() {
        p.push(Problem::new("node.data_dir", "must not be empty"));
    }
    let listen = socket_addr(&mut s, "listen", DEFAULT_LISTEN, p);
    let metrics_listen = socket_addr(&mut s, "metrics_listen", DEFAULT_METRICS_LISTEN, p);
    if let (Some(a), Some(b)) = (listen, metrics_listen)
        && a == b
    {
        p.push(Problem::new(
            "node.metrics_listen",
            format!("{b} is also node.listen"),
        ));
    }
    s.finish(p);
    Some(NodeConfig {
        id: id? as u64,
        zone: zone?,
        data_dir: PathBuf::from(data_dir),
        listen: listen?,
        metrics_listen: metrics_listen?,
    })
}

fn socket_addr(
    s: &mut Section<'_>,
    key: &'static str,
    default: &str,
    p: &mut Vec<Problem>,
) -> Option<SocketAddr> {
    let v = s.string(key, p);
    if v.is_none() && s.has(key) {
        return None;
    }
    let v = v.unwrap_or_else(|| default.to_owned());
    if v.contains('@') {
        // Not echoed: it may hold a user and password.
        p.push(Problem::new(s.key(key), CREDENTIALS_IN_ADDRESS));
        return None;
    }
    match v.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            p.push(Problem::new(
                s.key(key),
                format!("\"{v}\" is not an IP address and port like \"0.0.0.0:7400\""),
            ));
            None
        }
    }
}

fn parse_tls(t: Option<&toml::Table>, present: bool, p: &mut Vec<Problem>) -> Option<TlsConfig> {
    let Some(t) = t else {
        if !present {
            p.push(Problem::new(
                "tls",
                "missing section [tls]: give ca, cert and key (`faxi-watchdog certs` makes them), \
                 or insecure = true to run without TLS (then anyone who reaches the port can steer the cluster)",
            ));
        }
        return None;
    };
    let mut s = Section::new(t, "tls");
    let insecure = s.boolean("insecure", p).unwrap_or(false);
    let tokens_file = s.string("tokens_file", p);
    if tokens_file.as_deref() == Some("") {
        p.push(Problem::new("tls.tokens_file", "must not be empty"));
    }
    let mut files = Vec::new();
    for key in ["ca", "cert", "key"] {
        let v = s.string(key, p);
        if let Some(v) = &v
            && v.is_empty()
        {
            p.push(Problem::new(s.key(key), "must not be empty"));
        }
        files.push((key, v.filter(|v| !v.is_empty())));
    }
    s.finish(p);
    if insecure {
        let given: Vec<&str> = files
            .iter()
            .filter(|(_, v)| v.is_some())
            .map(|(k, _)| *k)
            .collect();
        if tokens_file.is_some() {
            p.push(Problem::new(
                "tls.tokens_file",
                "tokens need TLS: insecure = true cannot go with tokens_file",
            ));
            return None;
        }
        if !given.is_empty() {
            p.push(Problem::new(
                "tls.insecure",
                format!(
                    "insecure = true turns TLS off, yet {} {} given: remove one or the other",
                    given.join(", "),
                    if given.len() == 1 { "is" } else { "are" }
                ),
            ));
            return None;
        }
        return Some(TlsConfig::Insecure);
    }
    let mut missing = false;
    for (key, v) in &files {
        if v.is_none() {
            missing = true;
            p.push(Problem::new(
                format!("tls.{key}"),
                match *key {
                    "ca" => "missing: the cluster CA certificate (PEM)",
                    "cert" => "missing: this node's certificate (PEM), naming its id",
                    _ => "missing: this node's private key (PEM)",
                },
            ));
        }
    }
    if missing {
        return None;
    }
    let mut it = files
        .into_iter()
        .map(|(_, v)| PathBuf::from(v.unwrap_or_default()));
    Some(TlsConfig::Files {
        ca: it.next()?,
        cert: it.next()?,
        key: it.next()?,
        tokens_file: tokens_file.filter(|f| !f.is_empty()).map(PathBuf::from),
    })
}

fn parse_defaults(t: &toml::Table, p: &mut Vec<Problem>) -> ProbeDefaults {
    let mut s = Section::new(t, "probe_defaults");
    let base = ProbeDefaults::default();
    let d = ProbeDefaults {
        interval: s.duration("interval", p).unwrap_or(base.interval),
        timeout: s.duration("timeout", p).unwrap_or(base.timeout),
        fall: s.int("fall", 1, 1000, p).map_or(base.fall, |v| v as u32),
        rise: s.int("rise", 1, 1000, p).map_or(base.rise, |v| v as u32),
    };
    check_timing("probe_defaults", d.interval, d.timeout, p);
    s.finish(p);
    d
}

/// Interval and timeout rules shared by the defaults and every target.
pub(crate) fn check_timing(
    path: &str,
    interval: Duration,
    timeout: Duration,
    p: &mut Vec<Problem>,
) {
    if interval < MIN_INTERVAL {
        p.push(Problem::new(
            format!("{path}.interval"),
            format!("{interval:?} is too short: the minimum is {MIN_INTERVAL:?}"),
        ));
    }
    if timeout > interval {
        p.push(Problem::new(
            format!("{path}.timeout"),
            format!(
                "{} exceeds the interval ({}): probes of one target never overlap, so the timeout must fit in the interval",
                humantime::format_duration(timeout),
                humantime::format_duration(interval)
            ),
        ));
    }
}

fn parse_cluster(
    t: Option<&toml::Table>,
    node: Option<&NodeConfig>,
    p: &mut Vec<Problem>,
) -> ClusterConfig {
    let empty = toml::Table::new();
    let mut s = Section::new(t.unwrap_or(&empty), "cluster");
    let tick = s.duration("tick", p).unwrap_or(DEFAULT_TICK);
    let election_ticks = s
        .int("election_ticks", 2, 10_000, p)
        .map_or(DEFAULT_ELECTION_TICKS, |v| v as u32);
    let heartbeat_ticks = s
        .int("heartbeat_ticks", 1, 10_000, p)
        .map_or(DEFAULT_HEARTBEAT_TICKS, |v| v as u32);
    if election_ticks <= heartbeat_ticks {
        p.push(Problem::new(
            "cluster.election_ticks",
            format!("must be greater than heartbeat_ticks ({election_ticks} <= {heartbeat_ticks})"),
        ));
    }
    let refresh = s.duration("refresh", p).unwrap_or(DEFAULT_REFRESH);
    if refresh < Duration::from_millis(100) {
        p.push(Problem::new(
            "cluster.refresh",
            format!("{refresh:?} is too short: the minimum is 100ms"),
        ));
    }
    if refresh > MAX_REFRESH {
        p.push(Problem::new(
            "cluster.refresh",
            format!(
                "{refresh:?} is too long: the maximum is 20m (observations stay fresh for three \
                 refreshes, at most an hour)"
            ),
        ));
    }
    let snapshot_entries = s
        .int("snapshot_entries", 10, 100_000_000, p)
        .map_or(DEFAULT_SNAPSHOT_ENTRIES, |v| v as u64);
    let (lo, hi) = SNAPSHOT_BYTES_RANGE;
    let snapshot_bytes = s
        .size("snapshot_bytes", lo, hi, p)
        .unwrap_or(DEFAULT_SNAPSHOT_BYTES);
    let join = s.boolean("join", p).unwrap_or(false);
    let peer_tables = s.tables("peers", p);
    s.finish(p);

    let mut peers = Vec::new();
    let peers_given = peer_tables.is_some();
    match peer_tables {
        // No [cluster] peers: a single-node cluster of this node alone.
        None => {
            if let Some(n) = node {
                peers.push(Peer {
                    id: n.id,
                    zone: n.zone.clone(),
                    addr: n.listen.to_string(),
                });
            }
        }
        Some(list) => {
            if list.is_empty() {
                p.push(Problem::new(
                    "cluster.peers",
                    "is empty: list every bootstrap member, this node included",
                ));
            }
            for (i, t) in list.iter().enumerate() {
                let Some(t) = t else { continue };
                if let Some(peer) = parse_peer(t, i, p) {
                    peers.push(peer);
                }
            }
        }
    }
    let mut seen = std::collections::BTreeMap::new();
    for (i, peer) in peers.iter().enumerate() {
        if let Some(j) = seen.insert(peer.id, i) {
            p.push(Problem::new(
                format!("cluster.peers[{i}].id"),
                format!("id {} is also cluster.peers[{j}].id", peer.id),
            ));
        }
    }
    // Two members at one address, as the state machine compares them (an
    // address with credentials is never compared, so never echoed).
    let mut seen = std::collections::BTreeMap::new();
    for (i, peer) in peers.iter().enumerate() {
        let Ok(addr) = check_host_port(&peer.addr)
            .and_then(|()| crate::mesh::state::normalized_addr(&peer.addr))
        else {
            continue;
        };
        if let Some(j) = seen.insert(addr, i) {
            p.push(Problem::new(
                format!("cluster.peers[{i}].addr"),
                format!("\"{}\" is also cluster.peers[{j}].addr", peer.addr),
            ));
        }
    }
    if let Some(n) = node
        && peers_given
    {
        match peers.iter().find(|x| x.id == n.id) {
            None => p.push(Problem::new(
                "cluster.peers",
                format!("node.id {} is not among the peers", n.id),
            )),
            Some(me) if me.zone != n.zone => p.push(Problem::new(
                "cluster.peers",
                format!(
                    "peer {} is in zone \"{}\" but node.zone is \"{}\"",
                    n.id, me.zone, n.zone
                ),
            )),
            Some(_) => {}
        }
    }
    ClusterConfig {
        peers,
        tick,
        election_ticks,
        heartbeat_ticks,
        refresh,
        snapshot_entries,
        snapshot_bytes,
        join,
    }
}

fn parse_peer(t: &toml::Table, i: usize, p: &mut Vec<Problem>) -> Option<Peer> {
    let mut s = Section::new(t, format!("cluster.peers[{i}]"));
    let id = s.int("id", 1, i64::MAX, p);
    let zone = s.string("zone", p);
    let addr = s.string("addr", p);
    for key in ["id", "zone", "addr"] {
        if !s.has(key) {
            p.push(Problem::new(s.key(key), "missing"));
        }
    }
    if let Some(z) = &zone {
        check_name(&s.key("zone"), z, p);
    }
    if let Some(a) = &addr {
        // What the API takes, then what the state machine takes from a
        // member (its rules are stricter: length, printable ASCII, digits).
        if let Err(reason) = check_host_port(a) {
            p.push(Problem::new(s.key("addr"), reason));
        } else if let Err(reason) = crate::mesh::state::normalized_addr(a) {
            p.push(Problem::new(s.key("addr"), format!("\"{a}\" {reason}")));
        }
    }
    s.finish(p);
    Some(Peer {
        id: id? as u64,
        zone: zone?,
        addr: addr?,
    })
}

/// Names (zones, targets) are what operators type and what labels carry:
/// letters, digits, `-`, `_`, `.`, at most 63 characters.
pub(crate) fn check_name(key: &str, name: &str, p: &mut Vec<Problem>) {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        p.push(Problem::new(
            key,
            format!("\"{name}\" is not a valid name: use 1 to 63 letters, digits, '-', '_' or '.'"),
        ));
    }
}

/// The problem with an address that holds a `user:password@` part (the
/// value itself is never shown).
pub(crate) const CREDENTIALS_IN_ADDRESS: &str =
    "must not carry credentials (a user:password@ part): give host:port only";

/// Whether a URL's authority (between `scheme://` and the path) holds a
/// `user[:password]@` part. Checked on the raw text, so a URL too broken
/// to parse is caught as well, and never echoed.
pub(crate) fn url_has_userinfo(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    authority.contains('@')
}

/// An `http://` or `https://` URL with a host and no credentials (which
/// are never echoed).
pub(crate) fn check_http_url(key: &str, url: &str, p: &mut Vec<Problem>) {
    match url.parse::<hyper::Uri>() {
        _ if url_has_userinfo(url) => {
            p.push(Problem::new(key, "must not carry credentials"));
        }
        Ok(uri) => {
            if !matches!(uri.scheme_str(), Some("http" | "https")) {
                p.push(Problem::new(key, "must start with http:// or https://"));
            } else if uri.host().is_none_or(str::is_empty) {
                p.push(Problem::new(key, "names no host"));
            }
        }
        Err(e) => p.push(Problem::new(key, format!("is not a valid URL: {e}"))),
    }
}

/// `host:port`, the port a number from 1 to 65535.
pub(crate) fn check_host_port(addr: &str) -> Result<(), String> {
    if addr.contains('@') {
        return Err(CREDENTIALS_IN_ADDRESS.to_owned());
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(format!("\"{addr}\" is not host:port"));
    };
    if host.is_empty() || host.chars().any(char::is_whitespace) {
        return Err(format!("\"{addr}\" has no valid host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("\"{addr}\" has no valid port (1-65535)")),
    }
}

#[cfg(test)]
mod tests;
