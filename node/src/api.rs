//! The gRPC edge: the client API `faxictl` uses and the peer service raft
//! traffic arrives on. Protobuf types live here and nowhere deeper: requests
//! are checked and converted to domain types, answers built from them.
//!
//! Reads are answered by any node from what it has applied. By default the
//! node first confirms with the leader that it is current (raft read index);
//! when it cannot (no leader, cut off), or when the caller allows a stale
//! read, the answer says so (`stale`, with the time since the node last
//! heard a leader). A status can be asked for a subset of targets (by state,
//! by name pattern, without per-node views); counts per state always cover
//! every target. Membership
//! changes are raft proposals, which followers forward to the leader; a
//! leadership transfer is carried to the leader over gRPC.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use faxi_proto::v1 as pb;
use faxi_proto::v1::peer_server::{Peer, PeerServer};
use faxi_proto::v1::watchdog_client::WatchdogClient;
use faxi_proto::v1::watchdog_server::{Watchdog, WatchdogServer};
use protobuf::Message as _;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::mesh::driver::{Input, MemberChange, Mesh, MeshError, Shared};
use crate::mesh::guard::{self, Envelope, Refusal};
use crate::mesh::state::{AuditRecord, Command, Member, NodeId, State};
use crate::mesh::transport::MAX_MESSAGE_BYTES;
use crate::tls::{Caller, Role, Tls, caller_of};

mod incidents;
mod incoming;
pub use incidents::{APPROVAL_TTL, MAX_MAINTENANCE, MAX_REASON, MIN_MAINTENANCE};
pub use incoming::{Conn, FIRST_REQUEST, MAX_CONNECTIONS, Proven, incoming};

/// Deadline for a membership change to commit.
const WRITE_DEADLINE: Duration = Duration::from_secs(10);
/// Longest a write waits for a leader to be known (an election's length).
const LEADER_WAIT: Duration = Duration::from_secs(3);
/// Deadline for a leadership transfer to take effect.
const TRANSFER_DEADLINE: Duration = Duration::from_secs(5);
/// Fewest milliseconds between two messages of a watch stream.
const WATCH_MIN_GAP: Duration = Duration::from_millis(100);
/// A watch re-checks its freshness this often even when nothing changes.
const WATCH_RECHECK: Duration = Duration::from_secs(1);
/// Longest a read waits for the leader's confirmation (and at most half the
/// call's own deadline, so that a stale answer still reaches the caller).
pub const READ_CONFIRM: Duration = Duration::from_secs(1);
/// Most names or states a status filter may list, and the longest pattern.
const MAX_FILTERS: usize = 1000;
const MAX_PATTERN: usize = 256;
/// Most name patterns per request (each costs a match against every
/// target's name).
const MAX_NAME_PATTERNS: usize = 32;

/// Serves both services.
#[derive(Debug, Clone)]
pub struct Api {
    mesh: Mesh,
    me: NodeId,
    zone: String,
    /// Target kinds from this node's config (the log carries names only).
    kinds: BTreeMap<String, &'static str>,
    /// Mutual TLS (None: `insecure = true`, nobody is authenticated).
    tls: Option<Arc<Tls>>,
    /// Connections still to authenticate a request (nodes that take
    /// tokens: a TLS handshake without a certificate proves nothing).
    proven: Proven,
    /// How long an operator's approval holds once this node, as the
    /// leader, records it (`[recovery_defaults] approval_ttl`).
    approval_ttl: Duration,
}

impl Api {
    /// The API of node `me`.
    pub fn new(
        mesh: Mesh,
        me: NodeId,
        zone: String,
        kinds: BTreeMap<String, &'static str>,
        tls: Option<Arc<Tls>>,
    ) -> Self {
        Self {
            mesh,
            me,
            zone,
            kinds,
            tls,
            proven: Proven::default(),
            approval_ttl: APPROVAL_TTL,
        }
    }

    /// The same API, with approvals holding `ttl` (from the node's
    /// `[recovery_defaults] approval_ttl`; [`APPROVAL_TTL`] otherwise).
    #[must_use]
    pub fn with_approval_ttl(mut self, ttl: Duration) -> Self {
        self.approval_ttl = ttl;
        self
    }

    /// What [`incoming`] needs to close connections that never
    /// authenticate a request: `Some` where clients may connect without a
    /// certificate (a node that takes tokens).
    pub fn first_request(&self) -> Option<Proven> {
        self.tls
            .as_ref()
            .filter(|t| t.takes_tokens())
            .map(|_| self.proven.clone())
    }

    /// Who sent `request`: read from the client certificate the TLS layer
    /// verified against the cluster CA.
    fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let caller = self.who(request)?;
        self.proven
            .mark(request.local_addr(), request.remote_addr());
        Ok(caller)
    }

    fn who<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let Some(tls) = &self.tls else {
            return Ok(Caller::Insecure);
        };
        let certs = request.peer_certs().filter(|c| !c.is_empty());
        let Some(certs) = certs else {
            // No certificate: a token, when this node takes them.
            let bearer = request
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            return match bearer {
                Some(token) if tls.takes_tokens() => {
                    tls.token_caller(token.trim()).ok_or_else(|| {
                        Status::unauthenticated("the token is not one of this cluster's tokens")
                    })
                }
                _ => Err(Status::unauthenticated(
                    "no client certificate: connect with one from the cluster CA (or a token where the nodes take them)",
                )),
            };
        };
        caller_of(&certs).ok_or_else(|| {
            Status::unauthenticated(
                "the client certificate names no faxi-watchdog node or operator \
                 (make one with `faxi-watchdog certs --operator NAME:ROLE`)",
            )
        })
    }

    /// The caller, when it holds `role`; else a refusal that says what
    /// was missing. Nothing has happened yet when this refuses.
    fn authorize<T>(&self, request: &Request<T>, role: Role, what: &str) -> Result<Caller, Status> {
        let caller = self.caller(request)?;
        // A node's certificate carries requests only while that node is a
        // member (one never added, or removed, is nobody).
        if let Caller::Node(id) = caller
            && !self.mesh.read().sm.members().contains_key(&id)
        {
            metrics::counter!(crate::metrics::API_DENIED, "role" => role.as_str()).increment(1);
            return Err(Status::permission_denied(format!(
                "node {id} is not a member of this cluster: its certificate carries no request"
            )));
        }
        if caller.may(role) {
            Ok(caller)
        } else {
            metrics::counter!(crate::metrics::API_DENIED, "role" => role.as_str()).increment(1);
            tracing::warn!(caller = %caller.describe(), what, needs = role.as_str(), "request refused: role");
            Err(Status::permission_denied(format!(
                "{} may not {what}: that needs the {} role",
                caller.describe(),
                role.as_str()
            )))
        }
    }

    /// On the leader, before acting: records who asked for what in the
    /// replicated log. A request that cannot be recorded is not acted on.
    async fn record(&self, audit: &Audit) -> Result<(), Status> {
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0));
        let cmd = Command::Audit(AuditRecord {
            at_ms,
            by: audit.by.clone(),
            action: audit.action.clone(),
            recorded_by: self.me,
        });
        self.mesh
            .propose(cmd, WRITE_DEADLINE)
            .await
            .map(|_| ())
            .map_err(|e| {
                let s = to_status(e);
                Status::new(
                    s.code(),
                    format!(
                        "not done: the request could not be recorded in the audit log: {}",
                        s.message()
                    ),
                )
            })
    }

    /// The tonic services, ready for a `Server`. With TLS, the peer
    /// service turns away any caller but a node before it reads a byte of
    /// the request's body (a batch may be large: snapshots).
    pub fn services(
        self,
    ) -> (
        WatchdogServer<Api>,
        tonic::service::interceptor::InterceptedService<PeerServer<Api>, PeerGate>,
    ) {
        let gate = PeerGate {
            tls: self.tls.is_some(),
            proven: self.proven.clone(),
        };
        (
            WatchdogServer::new(self.clone()),
            tonic::service::interceptor::InterceptedService::new(
                PeerServer::new(self)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES),
                gate,
            ),
        )
    }

    /// Every member, with its role and reachability as this node sees them.
    fn members(s: &Shared) -> Vec<pb::Member> {
        let info = &s.info;
        s.sm.members()
            .iter()
            .map(|(id, m)| pb::Member {
                id: *id,
                zone: m.zone.clone(),
                addr: m.addr.clone(),
                role: info.role_of(*id).to_owned(),
                reachable: info.reaches(*id),
            })
            .collect()
    }

    /// Proposes a membership change and answers with the members after it.
    async fn change_member(
        &self,
        change: MemberChange,
    ) -> Result<Response<pb::MemberChangeResponse>, Status> {
        let index = self
            .mesh
            .change_member(change, WRITE_DEADLINE)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::MemberChangeResponse {
            index,
            members: Self::members(&self.mesh.read()),
        }))
    }

    /// Confirms this node's state with the leader, unless the caller allows
    /// a stale read.
    async fn confirm(&self, allow_stale: bool, call_deadline: Option<Duration>) -> Freshness {
        if allow_stale {
            return Freshness::stale(
                "allow_stale: this node's own view, not confirmed with the leader".into(),
            );
        }
        let wait = call_deadline.map_or(READ_CONFIRM, |d| (d / 2).min(READ_CONFIRM));
        match confirm_read(&self.mesh, wait).await {
            Ok(index) => Freshness {
                stale: false,
                reason: String::new(),
                read_index: index,
            },
            Err(reason) => Freshness::stale(reason),
        }
    }

    /// The status answer: the cluster, the targets `filter` asks for, counts
    /// per state over every target, and the answer's freshness.
    /// The targets whose names the filter's patterns match, or `None`
    /// without patterns. Matched on a blocking thread from a copy of the
    /// names: never under the lock the raft loop writes through, never on
    /// an async worker (patterns against many names cost).
    async fn matching_names(&self, filter: &Filter) -> Option<std::collections::BTreeSet<String>> {
        if filter.names.is_empty() {
            return None;
        }
        let names: Vec<String> = self.mesh.read().sm.agreed().keys().cloned().collect();
        let patterns = filter.names.clone();
        let matched = tokio::task::spawn_blocking(move || {
            names
                .into_iter()
                .filter(|n| patterns.iter().any(|p| glob(p, n)))
                .collect()
        })
        .await;
        // A match that did not finish matches nothing (never everything).
        Some(matched.unwrap_or_default())
    }

    fn status_now(
        &self,
        filter: &Filter,
        fresh: &Freshness,
        named: Option<&std::collections::BTreeSet<String>>,
    ) -> pb::StatusResponse {
        let s = self.mesh.read();
        let info = &s.info;
        let members = Self::members(&s);
        let now = s.sm.log_now_ms();
        let mut counts: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
        let mut targets = Vec::new();
        for (name, a) in s.sm.agreed() {
            let state = a.state.as_str();
            match counts.get_mut(state) {
                Some(n) => *n += 1,
                None => {
                    counts.insert(state.to_owned(), 1);
                }
            }
            let by_name = named.is_none_or(|set| set.contains(name));
            if !by_name || !filter.matches_state(state) {
                continue;
            }
            let nodes = match s.sm.views(name) {
                Some(views) if filter.nodes => views
                    .iter()
                    .map(|(id, v)| pb::NodeVerdict {
                        id: *id,
                        zone: s
                            .sm
                            .members()
                            .get(id)
                            .map(|m| m.zone.clone())
                            .unwrap_or_default(),
                        verdict: v.verdict.as_str().to_owned(),
                        latency_ms: v.latency_us as f64 / 1000.0,
                        error: v.error.clone().unwrap_or_default(),
                        fresh: v.expires_at_ms >= now,
                        at_unix_ms: i64::try_from(v.at_ms).unwrap_or(i64::MAX),
                        measured_at_unix_ms: i64::try_from(v.measured_at_ms).unwrap_or(i64::MAX),
                    })
                    .collect(),
                _ => Vec::new(),
            };
            targets.push(pb::TargetStatus {
                name: name.clone(),
                kind: self.kinds.get(name).copied().unwrap_or("").to_owned(),
                state: state.to_owned(),
                since_unix_ms: i64::try_from(a.since_ms).unwrap_or(i64::MAX),
                zones: a
                    .zones
                    .iter()
                    .map(|(z, v)| (z.clone(), v.as_str().to_owned()))
                    .collect(),
                down_zones: a.down_zones.clone(),
                nodes,
            });
        }
        let contact_ms = incidents::contact_ms(&s);
        let rec = s.sm.recovery();
        let incidents = incidents::open_incidents(rec, |t| named.is_none_or(|set| set.contains(t)));
        let maintenance =
            incidents::maintenance_pb(rec.maintenance(), crate::recovery::executor::now_ms());
        pb::StatusResponse {
            cluster: Some(pb::ClusterStatus {
                leader: info.leader,
                term: info.term,
                commit_index: info.commit,
                node_id: self.me,
                node_zone: self.zone.clone(),
                applied_index: info.applied,
                leader_contact_ms: contact_ms,
                members,
                cluster_id: s.sm.cluster_id().to_owned(),
            }),
            targets,
            incidents,
            counts: counts.into_iter().collect(),
            stale: fresh.stale,
            staleness_ms: contact_ms,
            stale_reason: fresh.reason.clone(),
            read_index: fresh.read_index,
            maintenance: Some(maintenance),
        }
    }
}

/// Confirms with the leader (a raft read index, waiting at most `wait`)
/// that what this node has applied is current: the read index, or why
/// not, in the words faxictl shows for a stale answer. Shared by every
/// read of the API and the status page.
pub async fn confirm_read(mesh: &Mesh, wait: Duration) -> Result<u64, String> {
    match mesh.read_index(wait).await {
        Ok(index) => Ok(index),
        Err(MeshError::Timeout(_)) => Err(format!(
            "the leader did not confirm this node's view within {wait:?} (cut off from it?)"
        )),
        Err(MeshError::NoLeader) => {
            Err("no leader: an election is in progress or this node cannot reach a quorum".into())
        }
        Err(e) => Err(format!("not confirmed with the leader: {e}")),
    }
}

/// Whether an answer was confirmed with the leader.
#[derive(Debug, Clone)]
struct Freshness {
    stale: bool,
    reason: String,
    read_index: u64,
}

impl Freshness {
    fn stale(reason: String) -> Self {
        Self {
            stale: true,
            reason,
            read_index: 0,
        }
    }
}

/// Which targets a status answer carries.
#[derive(Debug, Clone)]
struct Filter {
    /// Upper-case states; empty for all.
    states: Vec<&'static str>,
    /// Name patterns; empty for all.
    names: Vec<String>,
    /// Whether targets carry per-node views.
    nodes: bool,
}

impl Filter {
    /// Checks and converts a request's filters.
    fn from_request(r: &pb::StatusRequest) -> Result<Filter, Status> {
        if r.states.len() > MAX_FILTERS || r.names.len() > MAX_FILTERS {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_FILTERS} states and {MAX_FILTERS} names per request"
            )));
        }
        let mut states = Vec::new();
        for st in &r.states {
            let up = st.trim().to_ascii_uppercase();
            let known = [
                State::Up,
                State::Down,
                State::Suspect,
                State::Unknown,
                State::Stale,
            ]
            .into_iter()
            .map(State::as_str)
            .find(|s| *s == up);
            match known {
                Some(s) => states.push(s),
                None => {
                    return Err(Status::invalid_argument(format!(
                        "states: {} is not a state (UP, DOWN, SUSPECT, UNKNOWN, STALE)",
                        crate::mesh::state::Shown::new(st)
                    )));
                }
            }
        }
        if r.names.len() > MAX_NAME_PATTERNS {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_NAME_PATTERNS} name patterns per request"
            )));
        }
        for n in &r.names {
            if n.is_empty() || n.len() > MAX_PATTERN {
                return Err(Status::invalid_argument(format!(
                    "names: a pattern must be 1 to {MAX_PATTERN} bytes long"
                )));
            }
        }
        Ok(Filter {
            states,
            names: r.names.clone(),
            nodes: r.include_nodes.unwrap_or(true),
        })
    }

    fn matches_state(&self, state: &str) -> bool {
        self.states.is_empty() || self.states.contains(&state)
    }

    #[cfg(test)]
    fn matches(&self, name: &str, state: &str) -> bool {
        (self.states.is_empty() || self.states.contains(&state))
            && (self.names.is_empty() || self.names.iter().any(|p| glob(p, name)))
    }
}

/// The member an add request describes, checked as config is.
fn new_member(r: &pb::AddMemberRequest) -> Result<Member, Status> {
    if r.id == 0 {
        return Err(Status::invalid_argument("id: must be 1 or more"));
    }
    let mut p = Vec::new();
    crate::config::check_name("zone", &r.zone, &mut p);
    if let Some(problem) = p.first() {
        return Err(Status::invalid_argument(format!(
            "zone: {}",
            problem.reason
        )));
    }
    if let Err(reason) = crate::config::check_host_port(&r.addr) {
        return Err(Status::invalid_argument(format!("addr: {reason}")));
    }
    Ok(Member {
        zone: r.zone.clone(),
        addr: r.addr.clone(),
        instance: 0,
    })
}

/// Whether `text` matches `pattern`, where `*` matches any run of
/// characters and `?` any one; every other character stands for itself.
/// Linear in the text whatever the pattern: the pattern's positions
/// reached so far are one bit set (a pattern is at most [`MAX_PATTERN`]
/// bytes), advanced a character at a time, so no pattern can make a match
/// backtrack.
fn glob(pattern: &str, text: &str) -> bool {
    // `**` is `*`: after this no two stars are neighbours, so one step
    // past each star closes the set over "a star matches nothing".
    let mut p: Vec<char> = Vec::with_capacity(pattern.len());
    for c in pattern.chars() {
        if !(c == '*' && p.last() == Some(&'*')) {
            p.push(c);
        }
    }
    let words = (p.len() + 1).div_ceil(64);
    let bit = |set: &mut [u64], i: usize| set[i / 64] |= 1 << (i % 64);
    // Per pattern position: a star there, a `?`, or the character itself.
    let (mut stars, mut any) = (vec![0u64; words], vec![0u64; words]);
    let mut chars: std::collections::HashMap<char, Vec<u64>> = Default::default();
    for (i, c) in p.iter().enumerate() {
        match c {
            '*' => bit(&mut stars, i),
            '?' => bit(&mut any, i),
            c => bit(chars.entry(*c).or_insert_with(|| vec![0u64; words]), i),
        }
    }
    let none = vec![0u64; words];
    // `set | (set & mask) << 1`, across words.
    let step = |set: &mut [u64], mask: &[u64]| {
        let mut carry = 0;
        for (w, m) in set.iter_mut().zip(mask) {
            let moved = *w & m;
            let out = moved >> 63;
            *w |= (moved << 1) | carry;
            carry = out;
        }
    };
    // Position i reached: the first i pattern characters matched; a star
    // also matches nothing.
    let mut at = vec![0u64; words];
    bit(&mut at, 0);
    step(&mut at, &stars);
    let mut next = vec![0u64; words];
    for t in text.chars() {
        let here = chars.get(&t).unwrap_or(&none);
        // Past a matching character or `?`; staying on a star.
        let mut carry = 0;
        let mut live = 0;
        for w in 0..words {
            let moved = at[w] & !stars[w] & (here[w] | any[w]);
            next[w] = (moved << 1) | carry | (at[w] & stars[w]);
            carry = moved >> 63;
            live |= next[w];
        }
        if live == 0 {
            return false;
        }
        step(&mut next, &stars);
        std::mem::swap(&mut at, &mut next);
    }
    at[p.len() / 64] & (1 << (p.len() % 64)) != 0
}

/// The deadline a client gave its call (`grpc-timeout`), if any.
fn call_deadline(m: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let v = m.get("grpc-timeout")?.to_str().ok()?;
    if v.is_empty() || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

fn to_status(e: MeshError) -> Status {
    match e {
        MeshError::NoLeader | MeshError::Dropped(_) | MeshError::Stopped => {
            Status::unavailable(e.to_string())
        }
        MeshError::Busy => Status::resource_exhausted(e.to_string()),
        MeshError::Timeout(_) => Status::deadline_exceeded(e.to_string()),
        MeshError::NotLeader { .. } => Status::failed_precondition(e.to_string()),
        MeshError::Invalid(_) => Status::invalid_argument(e.to_string()),
        MeshError::Rejected(_) => Status::failed_precondition(e.to_string()),
    }
}

/// A client for the leader's API, for requests only the leader may decide.
async fn leader_client(
    tls: Option<&Tls>,
    leader: NodeId,
    addr: Option<String>,
    deadline: Duration,
) -> Result<WatchdogClient<tonic::transport::Channel>, Status> {
    let addr =
        addr.ok_or_else(|| Status::unavailable(format!("leader {leader} has no known address")))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{addr}"))
        .map_err(|e| Status::internal(format!("leader address {addr}: {e}")))?
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .timeout(deadline);
    if let Some(tls) = tls {
        endpoint = endpoint
            .tls_config(tls.client(&crate::tls::node_dns(leader)))
            .map_err(|e| Status::internal(format!("TLS to leader {leader}: {e}")))?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| Status::unavailable(format!("cannot reach leader {leader} at {addr}: {e}")))?;
    Ok(WatchdogClient::new(channel))
}

/// Whether a request was already carried here from another node (it is
/// then never carried again, so two nodes that disagree on the leader
/// cannot bounce it between them).
fn forwarded<T>(r: &Request<T>) -> bool {
    r.metadata().contains_key(FORWARDED)
}

/// Marks a request as carried to the leader, on behalf of the operator
/// who asked (the leader records them).
fn mark_forwarded<T>(audit: &Audit, mut r: Request<T>) -> Request<T> {
    r.metadata_mut()
        .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
    if let Ok(v) = tonic::metadata::MetadataValue::try_from(audit.by.as_str()) {
        r.metadata_mut().insert(ON_BEHALF_OF, v);
    }
    r
}

/// Metadata key set on a request carried to the leader.
const FORWARDED: &str = "x-faxi-forwarded";
/// Metadata key naming, on a request a node carries, who asked for it.
const ON_BEHALF_OF: &str = "x-faxi-on-behalf-of";

/// Text cut to what an audit record holds, at a character boundary.
fn clip_audit(text: &str) -> String {
    let max = crate::mesh::state::MAX_AUDIT_TEXT;
    if text.len() <= max {
        return text.to_owned();
    }
    let mut cut = max - '…'.len_utf8();
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &text[..cut])
}

/// Before a peer batch's body is read: only a node's certificate may send
/// one (which node, and whether it is a member, is checked after).
#[derive(Debug, Clone)]
pub struct PeerGate {
    tls: bool,
    proven: Proven,
}

impl tonic::service::Interceptor for PeerGate {
    fn call(&mut self, r: Request<()>) -> Result<Request<()>, Status> {
        if !self.tls {
            return Ok(r);
        }
        match r.peer_certs().and_then(|c| caller_of(&c)) {
            Some(Caller::Node(_)) => {
                self.proven.mark(r.local_addr(), r.remote_addr());
                Ok(r)
            }
            _ => {
                metrics::counter!(crate::metrics::RAFT_REFUSED, "reason" => "unauthenticated")
                    .increment(1);
                Err(Status::unauthenticated(
                    "raft messages come only from a node's certificate",
                ))
            }
        }
    }
}

/// A mutation as the audit log records it: who asked and what.
#[derive(Debug)]
struct Audit {
    by: String,
    action: String,
}

impl Audit {
    /// Who asked: the caller, or, for a request a node carried here, the
    /// operator it names (a node's word is taken: it authenticated them).
    fn new<T>(caller: &Caller, request: &Request<T>, action: String) -> Self {
        let on_behalf = request
            .metadata()
            .get(ON_BEHALF_OF)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 256 && !v.chars().any(char::is_control));
        let by = match (caller, on_behalf) {
            (Caller::Node(n), Some(who)) => format!("{who} via node {n}"),
            (c, _) => c.describe(),
        };
        Audit {
            by: clip_audit(&by),
            action: clip_audit(&action),
        }
    }

    /// The node's own log line: how it ended.
    fn log<R>(&self, result: &Result<R, Status>) {
        match result {
            Ok(_) => tracing::info!(audit = true, by = %self.by, action = %self.action, "done"),
            Err(e) => tracing::info!(
                audit = true, by = %self.by, action = %self.action,
                code = ?e.code(), error = e.message(), "failed"
            ),
        }
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::StatusResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Watchdog for Api {
    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        self.authorize(&request, Role::Read, "read the status")?;
        let deadline = call_deadline(request.metadata());
        let r = request.into_inner();
        let filter = Filter::from_request(&r)?;
        let fresh = self.confirm(r.allow_stale, deadline).await;
        let named = self.matching_names(&filter).await;
        Ok(Response::new(self.status_now(
            &filter,
            &fresh,
            named.as_ref(),
        )))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.authorize(&request, Role::Read, "watch the status")?;
        let deadline = call_deadline(request.metadata());
        let r = request.into_inner();
        let filter = Filter::from_request(&r)?;
        let (tx, rx) = mpsc::channel(16);
        let api = self.clone();
        let mut changes = self.mesh.subscribe();
        tokio::spawn(async move {
            let mut last: Option<pb::StatusResponse> = None;
            loop {
                // Every message says whether it was confirmed, the first
                // one included.
                let fresh = api.confirm(r.allow_stale, deadline).await;
                let named = api.matching_names(&filter).await;
                let mut now = api.status_now(&filter, &fresh, named.as_ref());
                // Contact time and read index move constantly; alone they
                // are not a change. Compared without them, sent with them.
                let kept = (
                    now.staleness_ms,
                    now.read_index,
                    now.cluster.as_ref().map(|c| c.leader_contact_ms),
                );
                now.staleness_ms = now.staleness_ms.min(0);
                now.read_index = 0;
                if let Some(c) = now.cluster.as_mut() {
                    c.leader_contact_ms = c.leader_contact_ms.min(0);
                }
                if last.as_ref() != Some(&now) {
                    let mut send = now.clone();
                    send.staleness_ms = kept.0;
                    send.read_index = kept.1;
                    if let (Some(c), Some(ms)) = (send.cluster.as_mut(), kept.2) {
                        c.leader_contact_ms = ms;
                    }
                    if tx.send(Ok(send)).await.is_err() {
                        return;
                    }
                    last = Some(now);
                }
                tokio::select! {
                    r = changes.changed() => if r.is_err() { return },
                    () = tx.closed() => return,
                    // Freshness can change while nothing else does (a cut).
                    () = tokio::time::sleep(WATCH_RECHECK) => {}
                }
                tokio::time::sleep(WATCH_MIN_GAP).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn audit(
        &self,
        request: Request<pb::AuditRequest>,
    ) -> Result<Response<pb::AuditResponse>, Status> {
        self.authorize(&request, Role::Read, "read the audit log")?;
        let deadline = call_deadline(request.metadata());
        // Confirmed with the leader when it can be, as status is.
        self.confirm(false, deadline).await;
        let limit = match request.get_ref().limit {
            0 => usize::MAX,
            n => n as usize,
        };
        let s = self.mesh.read();
        let records =
            s.sm.audit()
                .iter()
                .rev()
                .take(limit)
                .map(|r| pb::AuditRecord {
                    at_ms: r.at_ms,
                    by: r.by.clone(),
                    action: r.action.clone(),
                    recorded_by: r.recorded_by,
                })
                .collect();
        Ok(Response::new(pb::AuditResponse {
            records,
            node_id: self.me,
        }))
    }

    async fn add_member(
        &self,
        request: Request<pb::AddMemberRequest>,
    ) -> Result<Response<pb::MemberChangeResponse>, Status> {
        let caller = self.authorize(&request, Role::Admin, "change the membership")?;
        let r = request.get_ref();
        let audit = Audit::new(
            &caller,
            &request,
            format!("members add {} {} {}", r.id, r.zone, r.addr),
        );
        let result = self.add_member_inner(request, &audit).await;
        audit.log(&result);
        result
    }

    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::MemberChangeResponse>, Status> {
        let caller = self.authorize(&request, Role::Admin, "change the membership")?;
        let r = request.get_ref();
        let audit = Audit::new(
            &caller,
            &request,
            format!(
                "members remove {}{}",
                r.id,
                if r.force { " --force" } else { "" }
            ),
        );
        let result = self.remove_member_inner(request, &audit).await;
        audit.log(&result);
        result
    }

    async fn transfer_leader(
        &self,
        request: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        let caller = self.authorize(&request, Role::Operate, "move leadership")?;
        let audit = Audit::new(
            &caller,
            &request,
            format!("transfer-leader {}", request.get_ref().to),
        );
        let result = self.transfer_leader_inner(request, &audit).await;
        audit.log(&result);
        result
    }

    async fn incidents(
        &self,
        request: Request<pb::IncidentsRequest>,
    ) -> Result<Response<pb::IncidentsResponse>, Status> {
        self.authorize(&request, Role::Read, "read the incidents")?;
        self.incidents_read(request).await
    }

    async fn incident(
        &self,
        request: Request<pb::IncidentRequest>,
    ) -> Result<Response<pb::IncidentResponse>, Status> {
        self.authorize(&request, Role::Read, "read the incidents")?;
        self.incident_read(request).await
    }

    async fn rto(
        &self,
        request: Request<pb::RtoRequest>,
    ) -> Result<Response<pb::RtoResponse>, Status> {
        self.authorize(&request, Role::Read, "read the recovery times")?;
        self.rto_read(request).await
    }

    async fn approve(
        &self,
        request: Request<pb::ApproveRequest>,
    ) -> Result<Response<pb::ApproveResponse>, Status> {
        let caller = self.authorize(&request, Role::Operate, "approve a recovery step")?;
        let r = request.get_ref();
        let audit = Audit::new(
            &caller,
            &request,
            format!("approve {}{}", r.id, if r.skip { " --skip" } else { "" }),
        );
        let result = self.approve_inner(request, &audit).await;
        audit.log(&result);
        result
    }

    async fn maintenance(
        &self,
        request: Request<pb::MaintenanceRequest>,
    ) -> Result<Response<pb::MaintenanceResponse>, Status> {
        let caller = self.authorize(&request, Role::Operate, "turn maintenance on or off")?;
        let audit = Audit::new(
            &caller,
            &request,
            incidents::maintenance_action(request.get_ref()),
        );
        let result = self.maintenance_inner(request, &audit).await;
        audit.log(&result);
        result
    }

    async fn drill(
        &self,
        request: Request<pb::DrillRequest>,
    ) -> Result<Response<pb::DrillResponse>, Status> {
        let caller = self.authorize(&request, Role::Operate, "run a drill")?;
        let audit = Audit::new(
            &caller,
            &request,
            format!("drill {}", request.get_ref().target),
        );
        let result = self.drill_inner(request, &audit).await;
        audit.log(&result);
        result
    }
}

/// The mutations, once the caller is authorised.
impl Api {
    async fn add_member_inner(
        &self,
        request: Request<pb::AddMemberRequest>,
        audit: &Audit,
    ) -> Result<Response<pb::MemberChangeResponse>, Status> {
        let r = request.get_ref().clone();
        let member = new_member(&r)?;
        // Refused before anything is recorded or proposed, by the same
        // checks every node applies (address form and length, duplicates).
        self.mesh
            .read()
            .sm
            .check(&Command::SetMember {
                id: r.id,
                member: member.clone(),
            })
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if let Some((leader, addr)) = self.leader_elsewhere(&request).await? {
            return leader_client(
                self.tls.as_deref(),
                leader,
                addr,
                WRITE_DEADLINE + Duration::from_secs(1),
            )
            .await?
            .add_member(mark_forwarded(audit, Request::new(r)))
            .await;
        }
        self.record(audit).await?;
        self.change_member(MemberChange::Set(r.id, member)).await
    }

    async fn remove_member_inner(
        &self,
        request: Request<pb::RemoveMemberRequest>,
        audit: &Audit,
    ) -> Result<Response<pb::MemberChangeResponse>, Status> {
        let pb::RemoveMemberRequest { id, force } = *request.get_ref();
        if let Some((leader, addr)) = self.leader_elsewhere(&request).await? {
            return leader_client(
                self.tls.as_deref(),
                leader,
                addr,
                WRITE_DEADLINE + TRANSFER_DEADLINE,
            )
            .await?
            .remove_member(mark_forwarded(
                audit,
                Request::new(pb::RemoveMemberRequest { id, force }),
            ))
            .await;
        }
        if id != self.me {
            self.record(audit).await?;
            return self.change_member(MemberChange::Remove(id, force)).await;
        }
        // Removing the leader: check first that the removal would be
        // accepted (nothing changes if not), then hand leadership to another
        // voter and have the new leader remove this node, so the cluster
        // never runs on a leader that is no longer a member.
        self.mesh
            .change_member(MemberChange::CheckRemove(id, force), WRITE_DEADLINE)
            .await
            .map_err(to_status)?;
        let to = {
            let s = self.mesh.read();
            let others: Vec<NodeId> = s
                .info
                .voters
                .iter()
                .copied()
                .filter(|v| *v != self.me)
                .collect();
            // Prefer a reachable voter; raft picks up its progress.
            others
                .iter()
                .copied()
                .find(|v| s.info.reachable.get(v).copied().unwrap_or(false))
                .or_else(|| others.first().copied())
        };
        let Some(to) = to else {
            return Err(Status::failed_precondition(format!(
                "node {id} is the last voter; a cluster cannot remove it"
            )));
        };
        self.transfer_to(to).await?;
        let (leader, addr) = {
            let s = self.mesh.read();
            let l = s.info.leader;
            (l, s.sm.members().get(&l).map(|m| m.addr.clone()))
        };
        leader_client(
            self.tls.as_deref(),
            leader,
            addr,
            WRITE_DEADLINE + Duration::from_secs(1),
        )
        .await?
        .remove_member(mark_forwarded(
            audit,
            Request::new(pb::RemoveMemberRequest { id, force }),
        ))
        .await
    }

    async fn transfer_leader_inner(
        &self,
        request: Request<pb::TransferLeaderRequest>,
        audit: &Audit,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        let to = request.get_ref().to;
        if !self.mesh.read().sm.members().contains_key(&to) {
            return Err(Status::not_found(format!("node {to} is not a member")));
        }
        if let Some((leader, addr)) = self.leader_elsewhere(&request).await? {
            return leader_client(
                self.tls.as_deref(),
                leader,
                addr,
                TRANSFER_DEADLINE + Duration::from_secs(1),
            )
            .await?
            .transfer_leader(mark_forwarded(
                audit,
                Request::new(pb::TransferLeaderRequest { to }),
            ))
            .await;
        }
        self.record(audit).await?;
        let term = self.transfer_to(to).await?;
        Ok(Response::new(pb::TransferLeaderResponse {
            leader: to,
            term,
        }))
    }
}

impl Api {
    /// `Some(leader, its address)` when the leader is another node and the
    /// request should be carried there; `None` when this node leads. A
    /// request that was already carried once is refused rather than
    /// carried again.
    async fn leader_elsewhere<T>(
        &self,
        request: &Request<T>,
    ) -> Result<Option<(NodeId, Option<String>)>, Status> {
        let leader = self.known_leader().await?;
        let s = self.mesh.read();
        if leader == self.me {
            return Ok(None);
        }
        if forwarded(request) {
            return Err(to_status(MeshError::NotLeader {
                me: self.me,
                leader,
            }));
        }
        Ok(Some((
            leader,
            s.sm.members().get(&leader).map(|m| m.addr.clone()),
        )))
    }

    /// The leader, waiting up to [`LEADER_WAIT`] while there is none (an
    /// election, or a leadership transfer this node has not yet seen end:
    /// a request carried here by the old leader arrives that soon).
    async fn known_leader(&self) -> Result<NodeId, Status> {
        let mut changes = self.mesh.subscribe();
        let deadline = tokio::time::Instant::now() + LEADER_WAIT;
        loop {
            let leader = self.mesh.read().info.leader;
            if leader != 0 {
                return Ok(leader);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                _ => return Err(to_status(MeshError::NoLeader)),
            }
        }
    }

    /// On the leader: hands leadership to `to` and waits until it took
    /// over; answers with the new term.
    async fn transfer_to(&self, to: NodeId) -> Result<u64, Status> {
        let mut changes = self.mesh.subscribe();
        self.mesh.transfer_leader(to).await.map_err(to_status)?;
        let deadline = tokio::time::Instant::now() + TRANSFER_DEADLINE;
        loop {
            {
                let s = self.mesh.read();
                if s.info.leader == to {
                    return Ok(s.info.term);
                }
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                return Err(Status::deadline_exceeded(format!(
                    "node {to} did not take over within {TRANSFER_DEADLINE:?} (is it caught up and reachable?)"
                )));
            }
        }
    }
}

#[tonic::async_trait]
impl Peer for Api {
    async fn step(&self, request: Request<pb::RaftBatch>) -> Result<Response<pb::RaftAck>, Status> {
        // With TLS, the batch's sender is the node its certificate names,
        // nobody else: an operator's certificate, or node 2's claiming to
        // be node 3, is refused before anything is read.
        if self.tls.is_some() {
            let claimed = request.get_ref().from;
            match self.caller(&request) {
                Ok(Caller::Node(id)) if id == claimed => {}
                Ok(other) => {
                    return Err(refuse(&Refusal::NotThisIdentity {
                        claimed,
                        certificate: other.describe(),
                    }));
                }
                Err(status) => {
                    metrics::counter!(crate::metrics::RAFT_REFUSED, "reason" => "unauthenticated")
                        .increment(1);
                    return Err(status);
                }
            }
        }
        let batch = request.into_inner();
        let env = Envelope {
            cluster_id: batch.cluster_id,
            from: batch.from,
            from_instance: batch.from_instance,
            to: batch.to,
            to_instance: batch.to_instance,
            from_bound_at: batch.from_bound_at,
        };
        let unbound = {
            let s = self.mesh.read();
            guard::check_envelope(&env, self.me, s.info.instance, s.info.applied, &s.sm)
                .map_err(|r| refuse(&r))?;
            s.sm.members()
                .get(&env.from)
                .is_some_and(|m| m.instance == 0)
        };
        let mut msgs = Vec::with_capacity(batch.messages.len());
        for bytes in &batch.messages {
            let m = raft::eraftpb::Message::parse_from_bytes(bytes).map_err(|e| {
                metrics::counter!(crate::metrics::RAFT_REFUSED, "reason" => "malformed")
                    .increment(1);
                Status::invalid_argument(format!("not a raft message: {e}"))
            })?;
            guard::check_message(&env, &m).map_err(|r| refuse(&r))?;
            msgs.push(m);
        }
        if unbound {
            // A learner not yet promoted: the leader binds this data dir to
            // its membership when it promotes it.
            let _ = self
                .mesh
                .send(Input::PeerInstance(env.from, env.from_instance));
        }
        for m in msgs {
            self.mesh
                .send(Input::Raft(Box::new(m)))
                .map_err(to_status)?;
        }
        Ok(Response::new(pb::RaftAck {}))
    }
}

/// Counts and words a refused peer batch. A node told that the cluster
/// knows it by another data dir says so loudly: it lost its state.
fn refuse(r: &Refusal) -> Status {
    metrics::counter!(crate::metrics::RAFT_REFUSED, "reason" => r.label()).increment(1);
    if log_now(r.label()) {
        match r {
            Refusal::ReplacedHere { .. } => {
                tracing::error!(reason = %r, "refused a peer message");
            }
            _ => tracing::warn!(reason = %r, "refused a peer message"),
        }
    }
    Status::failed_precondition(r.to_string())
}

/// Whether a refusal of this kind may be logged now: at most one line per
/// kind every ten seconds (a leader retries many times a second).
fn log_now(kind: &'static str) -> bool {
    static LAST: std::sync::Mutex<BTreeMap<&'static str, tokio::time::Instant>> =
        std::sync::Mutex::new(BTreeMap::new());
    let now = tokio::time::Instant::now();
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    match last.get(kind) {
        Some(t) if now.duration_since(*t) < Duration::from_secs(10) => false,
        _ => {
            last.insert(kind, now);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// Random bytes as the API's requests: decoding and every check run
    /// without a panic, and a refusal's message stays short (it never
    /// echoes a whole hostile field). Inputs: `FAXI_FUZZ_INPUTS`; kept
    /// inputs in node/fuzz/api_requests.hex.
    #[test]
    fn api_requests_from_random_bytes_never_panic_and_refusals_stay_short() {
        use prost::Message as _;
        use rand::{Rng as _, SeedableRng as _};
        let mut seeds = crate::fuzz::corpus("api_requests");
        seeds.push(
            pb::StatusRequest {
                allow_stale: true,
                states: vec!["DOWN".into(), "suspect".into()],
                names: vec!["redis-*".into(), "a?c".into()],
                include_nodes: Some(false),
            }
            .encode_to_vec(),
        );
        seeds.push(
            pb::AddMemberRequest {
                id: 4,
                zone: "zone-d".into(),
                addr: "wd-d.example:7400".into(),
            }
            .encode_to_vec(),
        );
        seeds.push(pb::RemoveMemberRequest { id: 3, force: true }.encode_to_vec());
        seeds.push(pb::AuditRequest { limit: 7 }.encode_to_vec());
        seeds.push(
            pb::MaintenanceRequest {
                on: true,
                reason: "db upgrade".into(),
                duration_ms: 3_600_000,
            }
            .encode_to_vec(),
        );
        seeds.push(
            pb::DrillRequest {
                target: "redis".into(),
            }
            .encode_to_vec(),
        );
        seeds.push(pb::ApproveRequest { id: 7, skip: true }.encode_to_vec());
        let sm = crate::mesh::state::StateMachine::new([(
            1,
            Member {
                zone: "zone-a".into(),
                addr: "wd-a:7400".into(),
                instance: 0,
            },
        )]);
        let mut rng = rand::rngs::StdRng::seed_from_u64(0xA91);
        let short = |s: &Status| {
            assert!(s.message().len() < 600, "a long refusal: {}", s.message());
        };
        for n in 0..crate::fuzz::inputs() {
            let bytes = if n < seeds.len() {
                seeds[n].clone()
            } else {
                let pick = rng.random_range(0..seeds.len());
                crate::fuzz::mutate(&mut rng, &seeds[pick])
            };
            let hex = crate::fuzz::hex(&bytes);
            let outcome = std::panic::catch_unwind(|| {
                if let Ok(r) = pb::StatusRequest::decode(bytes.as_slice()) {
                    match Filter::from_request(&r) {
                        Ok(f) => {
                            for name in ["redis", "redis-a", "", "a-very-long-target-name"] {
                                let _ = f.matches(name, "DOWN");
                            }
                        }
                        Err(s) => short(&s),
                    }
                }
                if let Ok(r) = pb::AddMemberRequest::decode(bytes.as_slice()) {
                    match new_member(&r) {
                        Ok(member) => {
                            let _ = sm.check(&Command::SetMember { id: r.id, member });
                        }
                        Err(s) => short(&s),
                    }
                }
                if let Ok(r) = pb::MaintenanceRequest::decode(bytes.as_slice())
                    && let Err(s) = incidents::maintenance_ask(&r)
                {
                    short(&s);
                }
                if let Ok(r) = pb::DrillRequest::decode(bytes.as_slice())
                    && let Err(s) = incidents::drill_target(&r)
                {
                    short(&s);
                }
                let _ = pb::ApproveRequest::decode(bytes.as_slice());
                let _ = pb::RemoveMemberRequest::decode(bytes.as_slice());
                let _ = pb::AuditRequest::decode(bytes.as_slice());
            });
            assert!(
                outcome.is_ok(),
                "input {n} panicked: add it to node/fuzz/api_requests.hex: {hex}"
            );
        }
    }

    #[test]
    fn a_full_driver_inbox_is_resource_exhausted_for_the_caller() {
        // The caller hears "overloaded" (and faxictl tries elsewhere), never
        // a blocked RPC: `driver::inbox_tests` shows the inbox refuses.
        assert_eq!(
            to_status(MeshError::Busy).code(),
            tonic::Code::ResourceExhausted
        );
    }

    #[test]
    fn glob_matches_exact_names_stars_and_question_marks() {
        for (p, t) in [
            ("redis", "redis"),
            ("redis-*", "redis-a"),
            ("redis-*", "redis-"),
            ("*", ""),
            ("*", "anything"),
            ("*-db", "legacy-db"),
            ("a*b*c", "axxbyyc"),
            ("a?c", "abc"),
            ("t*9", "t10009"),
            ("é*", "école"),
        ] {
            assert!(glob(p, t), "{p} should match {t}");
        }
        for (p, t) in [
            ("redis", "redis-a"),
            ("redis", "redi"),
            ("redis-*", "redis"),
            ("*-db", "db"),
            ("a?c", "ac"),
            ("a*b*c", "axxbyy"),
            ("", "x"),
        ] {
            assert!(!glob(p, t), "{p} should not match {t}");
        }
        // A pathological pattern stays fast (no exponential backtracking).
        let long = "a".repeat(200);
        assert!(!glob(&format!("{}b", "*a".repeat(100)), &long));
        // Patterns past one 64-bit word, stars at word edges.
        let p63 = format!("{}*z", "?".repeat(63));
        assert!(glob(&p63, &format!("{}xyz", "a".repeat(63))));
        assert!(!glob(&p63, &"a".repeat(80)));
        let wide = format!("{}*{}", "a".repeat(100), "b".repeat(100));
        assert!(glob(
            &wide,
            &format!("{}cc{}", "a".repeat(100), "b".repeat(100))
        ));
        assert!(glob(
            &wide,
            &format!("{}{}", "a".repeat(100), "b".repeat(100))
        ));
        assert!(!glob(
            &wide,
            &format!("{}{}", "a".repeat(100), "b".repeat(99))
        ));
        assert!(glob("a**b", "ab") && glob("**", "") && !glob("?", ""));
    }

    /// The matcher agrees with a plain recursive definition on every
    /// pattern and text over a small alphabet.
    #[test]
    fn glob_agrees_with_the_definition() {
        fn reference(p: &[char], t: &[char]) -> bool {
            match (p.first(), t.first()) {
                (None, _) => t.is_empty(),
                (Some('*'), _) => reference(&p[1..], t) || (!t.is_empty() && reference(p, &t[1..])),
                (Some(_), None) => false,
                (Some(c), Some(x)) => (*c == '?' || c == x) && reference(&p[1..], &t[1..]),
            }
        }
        let all = |n: usize, alphabet: &[char]| {
            let mut out = vec![String::new()];
            for _ in 0..n {
                let longer: Vec<String> = out
                    .iter()
                    .filter(|s| s.chars().count() == out.last().unwrap().chars().count())
                    .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
                    .collect();
                out.extend(longer);
            }
            out
        };
        let patterns = all(4, &['a', 'b', '*', '?']);
        let texts = all(5, &['a', 'b']);
        for p in &patterns {
            let pc: Vec<char> = p.chars().collect();
            for t in &texts {
                let tc: Vec<char> = t.chars().collect();
                assert_eq!(glob(p, t), reference(&pc, &tc), "{p:?} against {t:?}");
            }
        }
    }

    #[test]
    fn filters_are_checked() {
        let req = |states: &[&str], names: &[&str]| pb::StatusRequest {
            states: states.iter().map(|s| (*s).to_owned()).collect(),
            names: names.iter().map(|s| (*s).to_owned()).collect(),
            ..Default::default()
        };
        let f = Filter::from_request(&req(&["down", " Suspect "], &["redis*"])).unwrap();
        assert_eq!(f.states, vec!["DOWN", "SUSPECT"]);
        assert!(f.nodes, "per-node views by default");
        assert!(f.matches("redis-1", "DOWN"));
        assert!(!f.matches("redis-1", "UP"));
        assert!(!f.matches("pg", "DOWN"));
        let all = Filter::from_request(&req(&[], &[])).unwrap();
        assert!(all.matches("x", "UP"));
        for bad in [req(&["BROKEN"], &[]), req(&[], &[""])] {
            let e = Filter::from_request(&bad).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
        }
        let long = "x".repeat(MAX_PATTERN + 1);
        assert!(Filter::from_request(&req(&[], &[&long])).is_err());
        let many: Vec<&str> = vec!["x"; MAX_FILTERS + 1];
        assert!(Filter::from_request(&req(&[], &many)).is_err());
        let no_nodes = pb::StatusRequest {
            include_nodes: Some(false),
            ..Default::default()
        };
        assert!(!Filter::from_request(&no_nodes).unwrap().nodes);
    }

    #[test]
    fn a_call_deadline_is_read_from_grpc_timeout() {
        let md = |v: &str| {
            let mut m = tonic::metadata::MetadataMap::new();
            m.insert("grpc-timeout", v.parse().unwrap());
            m
        };
        assert_eq!(
            call_deadline(&md("2999m")),
            Some(Duration::from_millis(2999))
        );
        assert_eq!(call_deadline(&md("3S")), Some(Duration::from_secs(3)));
        assert_eq!(call_deadline(&md("1H")), Some(Duration::from_secs(3600)));
        assert_eq!(call_deadline(&md("500u")), Some(Duration::from_micros(500)));
        for bad in ["", "m", "12", "1x", "-1S", "1234567890S"] {
            assert_eq!(call_deadline(&md(bad)), None, "{bad:?}");
        }
        assert_eq!(call_deadline(&tonic::metadata::MetadataMap::new()), None);
    }

    #[tokio::test]
    async fn accepted_grpc_connections_have_nodelay() {
        use tokio_stream::StreamExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut inc = std::pin::pin!(incoming(listener, None));
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let accepted = inc.next().await.unwrap().unwrap();
        assert!(accepted.nodelay().unwrap(), "TCP_NODELAY not set");
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_authenticates_no_request_in_time_is_closed() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        use tokio_stream::StreamExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let proven = Proven::default();
        let mut inc = std::pin::pin!(incoming(listener, Some(proven.clone())));
        // One that never authenticates: closed once FIRST_REQUEST passed
        // (the paused clock moves only when nothing else can).
        let _silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut silent = inc.next().await.unwrap().unwrap();
        let started = tokio::time::Instant::now();
        let e = silent.read(&mut [0u8; 8]).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= FIRST_REQUEST);
        // One whose request authenticated stays past the deadline.
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut ok = inc.next().await.unwrap().unwrap();
        proven.mark(client.peer_addr().ok(), client.local_addr().ok());
        tokio::time::advance(FIRST_REQUEST * 2).await;
        client.write_all(b"hi").await.unwrap();
        let mut buf = [0u8; 2];
        ok.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hi");
        // A closed connection's entry is gone.
        drop((silent, ok));
        assert!(proven.is_empty());
    }
}
