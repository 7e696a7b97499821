//! The replicated state machine: observations in, agreed failure state out.
//!
//! Architecture invariant: this module is pure. No I/O, no clock, no
//! randomness, no hash-ordered iteration: every node that applies the same
//! committed commands in the same order holds the same state, byte for byte.
//! Time is *log time*, never the applier's wall clock. Each member's clock is
//! the proposer timestamp of its latest observation in log order (not the
//! largest it ever sent: a node whose clock stepped back counts with its new
//! clock at once). Log time is the (f+1)-th largest of the members' clocks
//! (f = ⌊(members − 1) / 2⌋, the median with three members); while fewer
//! than f+1 members have a clock (a node without targets never reports),
//! the lower median of those that do. It never goes back, with one
//! exception below. So one node whose clock jumps ahead cannot expire
//! everyone else's observations or freeze expiry, and one whose clock lags
//! cannot hold them fresh; a silent node's observations still expire while
//! a majority keeps reporting. An observation is valid for `valid_for_ms`
//! from the log time at which it is applied.
//!
//! A new cluster agrees at once, on the clock of the first member to report;
//! that log time is provisional, as nothing tells whether that one clock is
//! right. When a second member's clock arrives (or at once, in a one-member
//! cluster) log time *settles* on the rule above, and every log time recorded
//! so far (expiries, `since`) moves by the same amount, so each observation
//! keeps exactly its validity. Without this, a first reporter an hour ahead
//! would set log time an hour ahead for good, and nothing would expire for
//! an hour.
//!
//! Reports of one node are taken in log order, except that a report stamped
//! before the view it would replace is a proposal that waited behind a newer
//! one and is ignored; unless the node's previous report was already stamped
//! before that view and this one is not older than it: then the node's clock
//! stepped back, and its reports count again from its second one after the
//! step. (Two delayed proposals committed in stamp order after a newer one
//! would pass as such a step, for one refresh.)
//!
//! A refresh ([`Command::Refresh`]) is a report of the node's recorded
//! views, as they are, stamped anew: taken only when its digest is that of
//! those views ([`digest`]), under the same rules as any report (log time,
//! delayed proposals, validity, limits); it sends no verdict, so it weighs
//! the same at any number of targets. A whole set (`Observe` with `whole`)
//! also drops the node's views of the targets it does not name, as a report
//! would replace them.
//!
//! The rules (DESIGN.md §3):
//! - zone verdict = what a strict majority of that zone's fresh observations
//!   say (no fresh observation, or no majority: UNKNOWN);
//! - the quorum is a majority of the zones that have members, or, with a
//!   single zone, a majority of its nodes;
//! - DOWN when DOWN zones (nodes, with one zone) reach the quorum;
//! - SUSPECT when some zone sees DOWN but not a quorum, naming those zones
//!   (with a single zone: some node sees DOWN, but not a majority of nodes;
//!   the zone is named, and the nodes' own views say which ones);
//! - STALE when STALE zones reach the quorum, then UP when UP zones do;
//! - UNKNOWN otherwise.
//!
//! Limits. However an entry was crafted (by a compromised member, or a
//! forged proposal), it cannot make the state grow without bound, overflow
//! its arithmetic or keep a verdict fresh for long: an entry past a limit
//! is rejected ([`Rejected`], the same on every node) and changes nothing.
//! - target names and member zones: 1 to [`MAX_NAME_BYTES`] bytes of
//!   printable ASCII (no space, no control character);
//! - at most [`MAX_SEEN_PER_OBSERVE`] verdicts per observation, and at most
//!   [`MAX_TARGETS`] distinct targets in the state (an observation that
//!   would add targets past it is refused; known targets are still taken);
//! - `valid_for_ms` at most [`MAX_VALID_FOR_MS`], so no entry (an
//!   observation or a refresh) keeps a verdict fresh for long;
//! - `at_ms` at most [`MAX_STAMP_MS`], the end of the year 9999: nothing
//!   real is stamped later, and log time, expiries and `since` stay far
//!   from overflow and within what readers can print. There is no bound
//!   relative to log time: log time stands still while no member reports,
//!   so after a pause of the whole cluster (or of a one-member cluster, or
//!   of the only member with targets) every honest report is far ahead of
//!   it, and such a bound would refuse them all, for good. With three
//!   members or more, one clock far ahead cannot move log time anyway (the
//!   (f+1)-th largest clock); with one or two, log time follows the
//!   latest clock by design.
//! - member addresses: `host:port`, at most [`MAX_ADDR_BYTES`] bytes of
//!   printable ASCII, the port a number from 1 to 65535, and no two members
//!   at the same address (host compared case-insensitively, port as a
//!   number). The driver asks before it applies a conf change to raft, and
//!   skips one the state machine refuses, so raft's members and these stay
//!   the same; the leader asks before it proposes one.
//!
//! A probe error longer than [`MAX_ERROR_BYTES`] is not refused (a genuine
//! error can be long) but cut at a character boundary and marked with `…`.
//! The limits are part of the replicated rules: every node must apply the
//! same ones, or a crafted entry could be taken by some nodes and refused by
//! others.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::vecmap::VecMap;
use crate::recovery::incidents::{EntryAt, Recovery, RecoveryCmd};

/// A Raft node id.
pub type NodeId = u64;

/// Longest target name or member zone, in bytes (config allows 63).
pub const MAX_NAME_BYTES: usize = 128;
/// Longest member address (`host:port`), in bytes: a DNS name's length.
pub const MAX_ADDR_BYTES: usize = 255;
/// Longest probe error kept, in bytes; a longer one is cut (module doc).
pub const MAX_ERROR_BYTES: usize = 1024;
/// Most verdicts in one observation (a node's whole refresh).
pub const MAX_SEEN_PER_OBSERVE: usize = 10_000;
/// Most distinct targets the state holds.
pub const MAX_TARGETS: usize = 20_000;
/// Longest validity of an observation: an hour (the proposer asks for three
/// refreshes, 15 s by default; config caps the refresh at a third of this).
pub const MAX_VALID_FOR_MS: u64 = 60 * 60 * 1000;
/// Latest stamp an observation may carry: 9999-12-31T23:59:59.999Z, in
/// Unix milliseconds.
pub const MAX_STAMP_MS: u64 = 253_402_300_799_999;

/// A node's verdict or a target's agreed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum State {
    /// Not enough fresh evidence.
    Unknown,
    /// Healthy.
    Up,
    /// Failed, as seen by a quorum (agreed) or by this node (verdict).
    Down,
    /// Some zone sees it down, but not a quorum: no recovery.
    Suspect,
    /// A backup older than its RPO.
    Stale,
}

impl State {
    /// The byte that stands for it in a [`digest`]: fixed for good.
    pub fn code(self) -> u8 {
        match self {
            State::Unknown => 0,
            State::Up => 1,
            State::Down => 2,
            State::Suspect => 3,
            State::Stale => 4,
        }
    }

    /// Upper-case, as status output and scripts expect.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Unknown => "UNKNOWN",
            State::Up => "UP",
            State::Down => "DOWN",
            State::Suspect => "SUSPECT",
            State::Stale => "STALE",
        }
    }
}

impl From<crate::verdict::Verdict> for State {
    fn from(v: crate::verdict::Verdict) -> Self {
        use crate::verdict::Verdict;
        match v {
            Verdict::Unknown => State::Unknown,
            Verdict::Up => State::Up,
            Verdict::Down => State::Down,
            Verdict::Stale => State::Stale,
        }
    }
}

/// A member of the mesh, as the state machine knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its zone.
    pub zone: String,
    /// Its gRPC address.
    pub addr: String,
    /// The data dir it runs from (`SledStorage::instance`), bound when it
    /// becomes a voter; 0 until then. A node whose disk was wiped comes back
    /// with another instance and is refused instead of voting again.
    #[serde(default)]
    pub instance: u64,
}

/// One node's view of one target, as proposed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    /// The target.
    pub target: String,
    /// The node's local verdict.
    pub verdict: State,
    /// Last probe latency, in microseconds.
    pub latency_us: u64,
    /// Last probe error, if it failed.
    pub error: Option<String>,
}

/// A committed command. Proposals carry changes and refreshes only, batched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Node `node` reports its verdicts, taken at `at_ms` on its own clock;
    /// they hold until `at_ms + valid_for_ms` in log time unless refreshed.
    Observe {
        /// The proposer.
        node: NodeId,
        /// Proposer clock, Unix milliseconds.
        at_ms: u64,
        /// How long these verdicts stay fresh without a refresh.
        valid_for_ms: u64,
        /// Changed or refreshed verdicts.
        seen: Vec<Seen>,
        /// `seen` is the node's whole verdict set: its views of targets
        /// not in it are dropped (the proposer sends one at start and when
        /// a [`Command::Refresh`] was refused). Absent in entries from
        /// before it: false.
        #[serde(default)]
        whole: bool,
    },
    /// Adds or replaces a member (its zone and address).
    SetMember {
        /// The member's id.
        id: NodeId,
        /// Zone and address.
        member: Member,
    },
    /// Removes a member and forgets its observations.
    RemoveMember {
        /// The member's id.
        id: NodeId,
    },
    /// Records an operator's request (who, what, when) before the leader
    /// acts on it; the oldest records go past [`MAX_AUDIT`].
    Audit(AuditRecord),
    /// Node `node` confirms, at `at_ms` on its own clock, every verdict it
    /// has on record, without sending them again: taken as an `Observe` of
    /// exactly the node's recorded views (verdict, latency and error as
    /// recorded) stamped `at_ms`, if `digest` is the [`digest`] of those
    /// views; otherwise refused ([`Rejected::StaleDigest`]), and the
    /// proposer sends its whole set instead. Its size does not grow with
    /// the number of targets.
    Refresh {
        /// The proposer.
        node: NodeId,
        /// Proposer clock, Unix milliseconds.
        at_ms: u64,
        /// How long the confirmed verdicts stay fresh.
        valid_for_ms: u64,
        /// [`digest`] of the verdicts the proposer believes are recorded.
        digest: u64,
    },
    /// Incidents and recovery ([`crate::recovery::incidents`]).
    Recovery(RecoveryCmd),
}

/// Most audit records the state keeps (the oldest go first).
pub const MAX_AUDIT: usize = 256;
/// Longest `by`, `action` in an audit record, in bytes.
pub const MAX_AUDIT_TEXT: usize = 512;

/// One operator request, as the leader recorded it before acting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// The leader's clock when it was recorded, Unix milliseconds.
    pub at_ms: u64,
    /// Who asked: the operator (and the node that carried it).
    pub by: String,
    /// What was asked, as a faxictl command line.
    pub action: String,
    /// The node that recorded it (the leader).
    pub recorded_by: NodeId,
}

/// One node's fresh-or-not observation of one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    /// The verdict.
    pub verdict: State,
    /// Latency of the last probe, in microseconds.
    pub latency_us: u64,
    /// The last error.
    pub error: Option<String>,
    /// When it was taken (proposer clock).
    pub at_ms: u64,
    /// When it stops counting (log time).
    pub expires_at_ms: u64,
    /// When the report that carried `latency_us` and `error` was taken
    /// (proposer clock): a [`Command::Refresh`] moves `at_ms`, not this.
    #[serde(default)]
    pub measured_at_ms: u64,
}

/// A target's agreed state and the evidence behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agreed {
    /// The agreed state.
    pub state: State,
    /// Log time of the last change of `state`.
    pub since_ms: u64,
    /// Each zone's verdict (zones with members only).
    pub zones: VecMap<String, State>,
    /// The zones that see the target DOWN: with several zones, those whose
    /// verdict is DOWN; with a single zone, that zone when any of its fresh
    /// observations is DOWN (its verdict may still be UP: one node of three
    /// seeing DOWN makes the target SUSPECT). Non-empty exactly when the
    /// state is DOWN or SUSPECT.
    pub down_zones: Vec<String>,
}

/// A change of a target's agreed state, produced by [`StateMachine::apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The target.
    pub target: String,
    /// State before.
    pub from: State,
    /// State after.
    pub to: State,
    /// Log time of the change.
    pub at_ms: u64,
    /// Zones seeing it DOWN at that moment (as [`Agreed::down_zones`]).
    pub down_zones: Vec<String>,
}

/// Why a command was not applied. Never fatal: a bad entry is skipped on
/// every node alike, so state stays identical. The text it names is shown
/// cut short ([`Shown`]), so a huge refused entry makes no huge message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// An observation from a node that is not a member.
    #[error("observation from node {0}, which is not a member")]
    NotAMember(NodeId),
    /// Removing a node that is not a member.
    #[error("node {0} is not a member")]
    UnknownMember(NodeId),
    /// A target name that is empty, too long or not printable ASCII.
    #[error("target name {0}: {1}")]
    TargetName(Shown, String),
    /// More verdicts in one observation than [`MAX_SEEN_PER_OBSERVE`].
    #[error("{0} verdicts in one observation: at most {MAX_SEEN_PER_OBSERVE}")]
    TooManySeen(usize),
    /// An observation that would take the state past [`MAX_TARGETS`].
    #[error("{new} new target(s) on top of {known}: at most {MAX_TARGETS} targets")]
    TooManyTargets {
        /// Targets this observation would add.
        new: usize,
        /// Targets the state holds.
        known: usize,
    },
    /// A validity longer than [`MAX_VALID_FOR_MS`].
    #[error("valid_for_ms {0} is longer than the maximum, {MAX_VALID_FOR_MS} ms")]
    ValidTooLong(u64),
    /// A stamp past [`MAX_STAMP_MS`].
    #[error("at_ms {0} is past the end of the year 9999 ({MAX_STAMP_MS})")]
    StampTooLate(u64),
    /// A member zone that is empty, too long or not printable ASCII.
    #[error("zone {0}: {1}")]
    Zone(Shown, String),
    /// A member address that is not a valid `host:port`.
    #[error("addr {0}: {1}")]
    Addr(Shown, String),
    /// An audit record's text that is empty, too long or holds control
    /// characters.
    #[error("audit {0} {1}: 1 to {MAX_AUDIT_TEXT} bytes without control characters")]
    AuditText(&'static str, Shown),
    /// A refresh whose digest is not that of the node's recorded views:
    /// the proposer's idea of them is out of date.
    #[error(
        "refresh from node {node}: digest {got:016x} is not that of its {views} recorded view(s) ({want:016x})"
    )]
    StaleDigest {
        /// The proposer.
        node: NodeId,
        /// The digest it sent.
        got: u64,
        /// The digest of what is recorded.
        want: u64,
        /// How many views are recorded for it.
        views: usize,
    },
    /// A recovery entry that does not fit the incident it names (a step
    /// not next, an outcome from a term that lost leadership, ...).
    #[error("recovery: {0}")]
    Recovery(String),
    /// A member address that another member has.
    #[error("addr {addr} is already node {other}'s address")]
    DuplicateAddr {
        /// The address asked for.
        addr: Shown,
        /// The member that has it.
        other: NodeId,
    },
}

/// Refused text as a message shows it: quoted and escaped, and cut after
/// 64 characters (with its length in bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown(String);

impl Shown {
    /// Quotes `text`, cut short.
    pub fn new(text: &str) -> Self {
        const CHARS: usize = 64;
        Shown(match text.char_indices().nth(CHARS) {
            None => format!("{text:?}"),
            Some((cut, _)) => format!("{:?}… ({} bytes)", &text[..cut], text.len()),
        })
    }
}

impl std::fmt::Display for Shown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why `name` is not a valid target name or zone, if it is not.
fn bad_name(name: &str) -> Option<String> {
    if name.is_empty() {
        Some("is empty".into())
    } else if name.len() > MAX_NAME_BYTES {
        Some(format!(
            "is {} bytes long: at most {MAX_NAME_BYTES}",
            name.len()
        ))
    } else if !name.bytes().all(|b| b.is_ascii_graphic()) {
        Some("holds a space, a control or a non-ASCII character: printable ASCII only".into())
    } else {
        None
    }
}

/// A member address in the form two addresses are compared in: the host in
/// lower case, the port as a number (`WD-A:07400` is `wd-a:7400`); or why
/// the address is not valid (module doc).
pub fn normalized_addr(addr: &str) -> Result<String, String> {
    if addr.len() > MAX_ADDR_BYTES {
        return Err(format!(
            "is {} bytes long: at most {MAX_ADDR_BYTES}",
            addr.len()
        ));
    }
    if !addr.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(
            "holds a space, a control or a non-ASCII character: printable ASCII only".into(),
        );
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err("is not host:port".into());
    };
    if host.is_empty() {
        return Err("has no host".into());
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 && port.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(format!("{}:{p}", host.to_ascii_lowercase()))
        }
        _ => Err("has no valid port (a number from 1 to 65535)".into()),
    }
}

/// A probe error as the state keeps it: whole up to [`MAX_ERROR_BYTES`];
/// longer, cut at the last character boundary that leaves room for a
/// closing `…`, so the result is at most [`MAX_ERROR_BYTES`] bytes.
pub fn clip_error(error: &str) -> String {
    if error.len() <= MAX_ERROR_BYTES {
        return error.to_owned();
    }
    let mut cut = MAX_ERROR_BYTES - '…'.len_utf8();
    while !error.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &error[..cut])
}

/// The digest of one node's verdict set, as [`Command::Refresh`] carries
/// it: 64-bit FNV-1a over each view, in ascending byte order of the target
/// names: the name's length (8 bytes, little-endian) and bytes, the
/// verdict's [`State::code`], the latency in microseconds (8 bytes,
/// little-endian), then the error: a 0 byte for none, or a 1 byte, its
/// length (8 bytes, little-endian) and bytes. The definition is part of the
/// replicated rules: every node, of any version, must compute the same
/// digest. Any one changed verdict, latency or error changes it.
pub fn digest<'a>(views: impl IntoIterator<Item = (&'a str, State, u64, Option<&'a str>)>) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(PRIME);
        }
    };
    for (target, verdict, latency_us, error) in views {
        eat(&(target.len() as u64).to_le_bytes());
        eat(target.as_bytes());
        eat(&[verdict.code()]);
        eat(&latency_us.to_le_bytes());
        match error {
            None => eat(&[0]),
            Some(e) => {
                eat(&[1]);
                eat(&(e.len() as u64).to_le_bytes());
                eat(e.as_bytes());
            }
        }
    }
    h
}

/// Whether a report stamped `at_ms` is a proposal that waited behind the
/// newer one that made a view stamped `old_at_ms`, and must not replace
/// it; `prev` is the stamp of the node's report before this one (module
/// doc: a clock that visibly stepped back counts again).
fn delayed(old_at_ms: u64, at_ms: u64, prev: Option<u64>) -> bool {
    old_at_ms > at_ms && !prev.is_some_and(|p| p < old_at_ms && p <= at_ms)
}

/// The whole replicated state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateMachine {
    /// The cluster this state belongs to, drawn once by `faxi-watchdog
    /// init`; every peer message carries it. Empty on a node that has not
    /// yet received any state.
    #[serde(default)]
    cluster_id: String,
    /// Log time: the clock of expiry and `since` (see the module doc).
    log_now_ms: u64,
    /// Log time rests on the rule, not (provisionally) on a single clock.
    /// Snapshots from before this field had settled long ago.
    #[serde(default = "settled")]
    log_settled: bool,
    /// Each member's clock: the stamp of its latest observation in log order.
    #[serde(default)]
    clocks: BTreeMap<NodeId, u64>,
    members: BTreeMap<NodeId, Member>,
    /// target -> node -> view.
    views: BTreeMap<String, VecMap<NodeId, NodeView>>,
    /// target -> agreed state.
    agreed: BTreeMap<String, Agreed>,
    /// The earliest expiry among fresh views (`u64::MAX` for none). Until log
    /// time passes it, no view expires, so a command can change only the
    /// targets it names: `apply` recomputes just those. Derived, but kept in
    /// the state so every node takes the same path and snapshots stay equal.
    #[serde(default)]
    next_expiry_ms: u64,
    /// The latest operator requests, oldest first (at most [`MAX_AUDIT`]).
    #[serde(default)]
    audit: std::collections::VecDeque<AuditRecord>,
    /// Incidents and recovery. Absent from snapshots written before it.
    #[serde(default)]
    recovery: Recovery,
    /// Where the entry being applied sits in the log (its fencing token):
    /// set by [`StateMachine::apply_at`] for the one entry, never stored.
    #[serde(skip)]
    entry_at: EntryAt,
}

/// The state as snapshots held it before incidents (postcard names no
/// field: such a snapshot lacks the last one).
#[derive(Deserialize)]
struct StateMachineV1 {
    cluster_id: String,
    log_now_ms: u64,
    log_settled: bool,
    clocks: BTreeMap<NodeId, u64>,
    members: BTreeMap<NodeId, Member>,
    views: BTreeMap<String, VecMap<NodeId, NodeView>>,
    agreed: BTreeMap<String, Agreed>,
    next_expiry_ms: u64,
    audit: std::collections::VecDeque<AuditRecord>,
}

impl StateMachine {
    /// A state machine with the bootstrap members.
    pub fn new(members: impl IntoIterator<Item = (NodeId, Member)>) -> Self {
        Self {
            members: members.into_iter().collect(),
            ..Self::default()
        }
    }

    /// The first state of a new cluster.
    pub fn bootstrap(
        cluster_id: String,
        members: impl IntoIterator<Item = (NodeId, Member)>,
    ) -> Self {
        Self {
            cluster_id,
            ..Self::new(members)
        }
    }

    /// Incidents and recovery.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// Applies a committed entry's command, knowing where the entry sits
    /// in the log (recovery records it as a step's fencing token, and takes
    /// an outcome only in the term of its intent).
    pub fn apply_at(&mut self, cmd: &Command, at: EntryAt) -> Result<Vec<Transition>, Rejected> {
        self.entry_at = at;
        let r = self.apply(cmd);
        self.entry_at = EntryAt::default();
        r
    }

    /// The members that see `target` DOWN now, and the time to detect: from
    /// the first of them measuring it DOWN to the last (whose report made
    /// the quorum), by their own clocks.
    fn down_nodes(&self, target: &str) -> (Vec<NodeId>, Option<u64>) {
        let now = self.log_now_ms;
        let mut nodes = Vec::new();
        let mut span: Option<(u64, u64)> = None;
        if let Some(per_node) = self.views.get(target) {
            for (id, v) in per_node {
                if v.verdict == State::Down
                    && v.expires_at_ms >= now
                    && self.members.contains_key(id)
                {
                    nodes.push(*id);
                    let m = if v.measured_at_ms == 0 {
                        v.at_ms
                    } else {
                        v.measured_at_ms
                    };
                    span = Some(span.map_or((m, m), |(a, b)| (a.min(m), b.max(m))));
                }
            }
        }
        (nodes, span.map(|(first, last)| last - first))
    }

    /// The latest operator requests, oldest first.
    pub fn audit(&self) -> &std::collections::VecDeque<AuditRecord> {
        &self.audit
    }

    /// The cluster id (empty before this node received any state).
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// Log time.
    pub fn log_now_ms(&self) -> u64 {
        self.log_now_ms
    }

    /// Members by id.
    pub fn members(&self) -> &BTreeMap<NodeId, Member> {
        &self.members
    }

    /// Every target's agreed state.
    pub fn agreed(&self) -> &BTreeMap<String, Agreed> {
        &self.agreed
    }

    /// Each node's view of a target (expired ones included, for display).
    pub fn views(&self, target: &str) -> Option<&VecMap<NodeId, NodeView>> {
        self.views.get(target)
    }

    /// The [`digest`] of node `node`'s recorded views (expired ones
    /// included), and how many there are: what a [`Command::Refresh`] from
    /// it must carry.
    pub fn digest_of(&self, node: NodeId) -> (u64, usize) {
        let mut n = 0;
        let d = digest(self.views.iter().filter_map(|(target, per_node)| {
            per_node.get(&node).map(|v| {
                n += 1;
                (target.as_str(), v.verdict, v.latency_us, v.error.as_deref())
            })
        }));
        (d, n)
    }

    /// Whether [`StateMachine::apply`] would take `cmd` or refuse it, and
    /// why; changes nothing. Every refusal is decided here, before `apply`
    /// changes anything, so a refused command leaves the state as it was.
    /// The leader also asks it before proposing a membership change, and
    /// the driver before applying a conf change to raft.
    pub fn check(&self, cmd: &Command) -> Result<(), Rejected> {
        match cmd {
            Command::Observe {
                node,
                at_ms,
                valid_for_ms,
                seen,
                whole: _,
            } => {
                self.check_report(*node, *at_ms, *valid_for_ms)?;
                if seen.len() > MAX_SEEN_PER_OBSERVE {
                    return Err(Rejected::TooManySeen(seen.len()));
                }
                for s in seen {
                    if let Some(why) = bad_name(&s.target) {
                        return Err(Rejected::TargetName(Shown::new(&s.target), why));
                    }
                }
                let new: BTreeSet<&str> = seen
                    .iter()
                    .map(|s| s.target.as_str())
                    .filter(|t| !self.views.contains_key(*t))
                    .collect();
                if self.views.len() + new.len() > MAX_TARGETS {
                    return Err(Rejected::TooManyTargets {
                        new: new.len(),
                        known: self.views.len(),
                    });
                }
            }
            Command::SetMember { id, member } => {
                if let Some(why) = bad_name(&member.zone) {
                    return Err(Rejected::Zone(Shown::new(&member.zone), why));
                }
                let addr = normalized_addr(&member.addr)
                    .map_err(|why| Rejected::Addr(Shown::new(&member.addr), why))?;
                if let Some(other) = self.members.iter().find_map(|(other, m)| {
                    (other != id && normalized_addr(&m.addr).is_ok_and(|a| a == addr))
                        .then_some(*other)
                }) {
                    return Err(Rejected::DuplicateAddr {
                        addr: Shown::new(&member.addr),
                        other,
                    });
                }
            }
            Command::RemoveMember { id } => {
                if !self.members.contains_key(id) {
                    return Err(Rejected::UnknownMember(*id));
                }
            }
            Command::Refresh {
                node,
                at_ms,
                valid_for_ms,
                digest: got,
            } => {
                self.check_report(*node, *at_ms, *valid_for_ms)?;
                let (want, views) = self.digest_of(*node);
                if want != *got {
                    return Err(Rejected::StaleDigest {
                        node: *node,
                        got: *got,
                        want,
                        views,
                    });
                }
            }
            Command::Recovery(r) => {
                self.recovery
                    .check(r, self.entry_at)
                    .map_err(Rejected::Recovery)?;
            }
            Command::Audit(r) => {
                if r.at_ms > MAX_STAMP_MS {
                    return Err(Rejected::StampTooLate(r.at_ms));
                }
                for (field, text) in [("by", &r.by), ("action", &r.action)] {
                    if text.is_empty()
                        || text.len() > MAX_AUDIT_TEXT
                        || text.chars().any(char::is_control)
                    {
                        return Err(Rejected::AuditText(field, Shown::new(text)));
                    }
                }
            }
        }
        Ok(())
    }

    /// What an observation and a refresh have in common: a member, a
    /// validity of at most an hour, a stamp before the year 10000.
    fn check_report(&self, node: NodeId, at_ms: u64, valid_for_ms: u64) -> Result<(), Rejected> {
        if !self.members.contains_key(&node) {
            return Err(Rejected::NotAMember(node));
        }
        if valid_for_ms > MAX_VALID_FOR_MS {
            return Err(Rejected::ValidTooLong(valid_for_ms));
        }
        if at_ms > MAX_STAMP_MS {
            return Err(Rejected::StampTooLate(at_ms));
        }
        Ok(())
    }

    /// Applies one committed command; returns the agreed-state changes it
    /// caused (including expiries that log time's advance brought about).
    /// A command [`StateMachine::check`] refuses changes nothing.
    pub fn apply(&mut self, cmd: &Command) -> Result<Vec<Transition>, Rejected> {
        self.check(cmd)?;
        // The targets this command can change; `None`: every target.
        let mut touched: Option<BTreeSet<String>> = None;
        match cmd {
            Command::Observe {
                node,
                at_ms,
                valid_for_ms,
                seen,
                whole,
            } => {
                // The node's previous report, in log order.
                let prev = self.clocks.insert(*node, *at_ms);
                let settled_now = self.advance_log_time();
                let expires_at_ms = self.log_now_ms.saturating_add(*valid_for_ms);
                let mut names: BTreeSet<String> = BTreeSet::new();
                for s in seen {
                    let view = NodeView {
                        verdict: s.verdict,
                        latency_us: s.latency_us,
                        error: s.error.as_deref().map(clip_error),
                        at_ms: *at_ms,
                        expires_at_ms,
                        measured_at_ms: *at_ms,
                    };
                    let per_node = self.views.entry(s.target.clone()).or_default();
                    // An older report never overwrites a newer one, unless
                    // the node's clock visibly stepped back (module doc).
                    if !per_node
                        .get(node)
                        .is_some_and(|old| delayed(old.at_ms, *at_ms, prev))
                    {
                        per_node.insert(*node, view);
                    }
                    names.insert(s.target.clone());
                }
                if *whole {
                    // The node's views of targets it no longer reports go,
                    // under the same rule as a replacement.
                    for (target, per_node) in &mut self.views {
                        if names.contains(target) {
                            continue;
                        }
                        if per_node
                            .get(node)
                            .is_some_and(|old| !delayed(old.at_ms, *at_ms, prev))
                        {
                            per_node.remove(node);
                            names.insert(target.clone());
                        }
                    }
                }
                self.next_expiry_ms = self.next_expiry_ms.min(expires_at_ms);
                if !settled_now && self.log_now_ms <= self.next_expiry_ms {
                    touched = Some(names);
                }
            }
            Command::Refresh {
                node,
                at_ms,
                valid_for_ms,
                ..
            } => {
                let prev = self.clocks.insert(*node, *at_ms);
                let settled_now = self.advance_log_time();
                let now = self.log_now_ms;
                let expires_at_ms = now.saturating_add(*valid_for_ms);
                // Only a view that had expired can change its target's
                // agreement: the others count before and after alike (and
                // when log time passed an expiry, everything is recomputed).
                let mut revived: BTreeSet<String> = BTreeSet::new();
                for (target, per_node) in &mut self.views {
                    if let Some(v) = per_node.get_mut(node)
                        && !delayed(v.at_ms, *at_ms, prev)
                    {
                        if v.expires_at_ms < now {
                            revived.insert(target.clone());
                        }
                        v.at_ms = *at_ms;
                        v.expires_at_ms = expires_at_ms;
                    }
                }
                self.next_expiry_ms = self.next_expiry_ms.min(expires_at_ms);
                if !settled_now && self.log_now_ms <= self.next_expiry_ms {
                    touched = Some(revived);
                }
            }
            Command::SetMember { id, member } => {
                self.members.insert(*id, member.clone());
            }
            Command::RemoveMember { id } => {
                self.members.remove(id);
                self.clocks.remove(id);
                for per_node in self.views.values_mut() {
                    per_node.remove(id);
                }
            }
            Command::Audit(r) => {
                if self.audit.len() >= MAX_AUDIT {
                    self.audit.pop_front();
                }
                self.audit.push_back(r.clone());
                // No target changes.
                return Ok(Vec::new());
            }
            Command::Recovery(r) => {
                let at = self.entry_at;
                self.recovery.apply(r, at).map_err(Rejected::Recovery)?;
                return Ok(Vec::new());
            }
        }
        let transitions = self.recompute(touched);
        if !transitions.is_empty() {
            let mut recovery = std::mem::take(&mut self.recovery);
            recovery.on_transitions(&transitions, |t| self.down_nodes(t));
            self.recovery = recovery;
        }
        Ok(transitions)
    }

    /// Moves log time on after a member's clock changed (module doc).
    /// Returns whether log time settled now, moving every recorded log time:
    /// then every target needs recomputing.
    fn advance_log_time(&mut self) -> bool {
        let mut stamps: Vec<u64> = self
            .members
            .keys()
            .filter_map(|id| self.clocks.get(id).copied())
            .collect();
        stamps.sort_unstable_by(|a, b| b.cmp(a));
        let (n, r) = (self.members.len(), stamps.len());
        let f = n.saturating_sub(1) / 2;
        // The (f+1)-th largest; the lower median while fewer have a clock.
        let k = if r > f { f } else { r / 2 };
        let Some(&clock) = stamps.get(k) else {
            return false;
        };
        if self.log_settled || (r < 2 && n > 1) {
            self.log_now_ms = self.log_now_ms.max(clock);
            return false;
        }
        self.log_settled = true;
        let delta = i64::try_from(i128::from(clock) - i128::from(self.log_now_ms)).unwrap_or(
            if clock > self.log_now_ms {
                i64::MAX
            } else {
                i64::MIN
            },
        );
        let shift = |t: u64| t.saturating_add_signed(delta);
        for per_node in self.views.values_mut() {
            for v in per_node.values_mut() {
                v.expires_at_ms = shift(v.expires_at_ms);
            }
        }
        for a in self.agreed.values_mut() {
            a.since_ms = shift(a.since_ms);
        }
        self.log_now_ms = clock;
        true
    }

    /// Recomputes the agreed state of `only` those targets, or of every
    /// target (then also the next expiry), at the current log time.
    fn recompute(&mut self, only: Option<BTreeSet<String>>) -> Vec<Transition> {
        let mut out = Vec::new();
        let zones = self.zones();
        let full = only.is_none();
        let names: Vec<String> = match only {
            Some(names) => names.into_iter().collect(),
            None => self.views.keys().cloned().collect(),
        };
        for target in names {
            let Some(per_node) = self.views.get(&target) else {
                continue;
            };
            let (state, zone_states, down_zones) =
                agree(&self.members, &zones, per_node, self.log_now_ms);
            let now = self.log_now_ms;
            let entry = self.agreed.entry(target.clone()).or_insert_with(|| Agreed {
                state: State::Unknown,
                since_ms: now,
                zones: VecMap::new(),
                down_zones: Vec::new(),
            });
            if entry.state != state {
                out.push(Transition {
                    target,
                    from: entry.state,
                    to: state,
                    at_ms: now,
                    down_zones: down_zones.clone(),
                });
                entry.state = state;
                entry.since_ms = now;
            }
            entry.zones = zone_states;
            entry.down_zones = down_zones;
        }
        if full {
            let now = self.log_now_ms;
            self.next_expiry_ms = self
                .views
                .values()
                .flat_map(VecMap::values)
                .map(|v| v.expires_at_ms)
                .filter(|e| *e >= now)
                .min()
                .unwrap_or(u64::MAX);
        }
        out
    }

    /// Zones that have members, with their member ids.
    fn zones(&self) -> BTreeMap<String, BTreeSet<NodeId>> {
        let mut z: BTreeMap<String, BTreeSet<NodeId>> = BTreeMap::new();
        for (id, m) in &self.members {
            z.entry(m.zone.clone()).or_default().insert(*id);
        }
        z
    }

    /// Serialises the whole state (a Raft snapshot's data). An error here
    /// must stop the snapshot, never produce an empty one.
    pub fn snapshot(&self) -> Result<Vec<u8>, String> {
        super::codec::encode(self).map_err(|e| format!("cannot serialise the state: {e}"))
    }

    /// Restores from [`StateMachine::snapshot`] output, or from a snapshot
    /// written before it (JSON, [`super::codec`]). In those, a view's
    /// latency and error were always taken with it: `measured_at_ms` is
    /// its `at_ms`, as applying the same entries now would make it.
    pub fn restore(data: &[u8]) -> Result<Self, String> {
        let mut sm: Self = match super::codec::decode(data) {
            Ok(sm) => sm,
            // A snapshot from before incidents: the same, without them.
            Err(e) => match super::codec::decode::<StateMachineV1>(data) {
                Ok(v1) => Self {
                    cluster_id: v1.cluster_id,
                    log_now_ms: v1.log_now_ms,
                    log_settled: v1.log_settled,
                    clocks: v1.clocks,
                    members: v1.members,
                    views: v1.views,
                    agreed: v1.agreed,
                    next_expiry_ms: v1.next_expiry_ms,
                    audit: v1.audit,
                    ..Self::default()
                },
                Err(_) => return Err(format!("corrupt state snapshot: {e}")),
            },
        };
        if super::codec::is_legacy_json(data) {
            for v in sm.views.values_mut().flat_map(VecMap::values_mut) {
                v.measured_at_ms = v.at_ms;
            }
        }
        Ok(sm)
    }
}

fn settled() -> bool {
    true
}

/// The agreed state of one target from the fresh views of members.
fn agree(
    members: &BTreeMap<NodeId, Member>,
    zones: &BTreeMap<String, BTreeSet<NodeId>>,
    per_node: &VecMap<NodeId, NodeView>,
    now_ms: u64,
) -> (State, VecMap<String, State>, Vec<String>) {
    let fresh = |id: &NodeId| {
        per_node
            .get(id)
            .filter(|v| v.expires_at_ms >= now_ms && members.contains_key(id))
    };
    let mut zone_states = VecMap::new();
    for (zone, ids) in zones {
        let verdicts: Vec<State> = ids.iter().filter_map(fresh).map(|v| v.verdict).collect();
        zone_states.insert(zone.clone(), majority(&verdicts));
    }
    // With one zone, the quorum counts nodes; with several, zones.
    let votes: Vec<State> = if zones.len() == 1 {
        let ids = zones.values().next().cloned().unwrap_or_default();
        ids.iter()
            .map(|id| fresh(id).map_or(State::Unknown, |v| v.verdict))
            .collect()
    } else {
        zone_states.values().copied().collect()
    };
    let quorum = votes.len() / 2 + 1;
    #[cfg(test)]
    let quorum = if PLANT_MINORITY_QUORUM.with(std::cell::Cell::get) {
        votes.len() / 2
    } else {
        quorum
    };
    let count = |s: State| votes.iter().filter(|v| **v == s).count();
    let down_zones: Vec<String> = if zones.len() == 1 {
        // The single zone sees DOWN when any of its nodes does: a minority
        // of nodes makes SUSPECT, and SUSPECT must name who sees it.
        let seen_down = votes.contains(&State::Down);
        zones.keys().filter(|_| seen_down).cloned().collect()
    } else {
        zone_states
            .iter()
            .filter(|(_, s)| **s == State::Down)
            .map(|(z, _)| z.clone())
            .collect()
    };
    let state = if votes.is_empty() {
        State::Unknown
    } else if count(State::Down) >= quorum {
        State::Down
    } else if count(State::Down) > 0 {
        State::Suspect
    } else if count(State::Stale) >= quorum {
        State::Stale
    } else if count(State::Up) >= quorum {
        State::Up
    } else {
        State::Unknown
    };
    (state, zone_states, down_zones)
}

/// The verdict held by a strict majority, else UNKNOWN.
fn majority(verdicts: &[State]) -> State {
    let mut counts: BTreeMap<State, usize> = BTreeMap::new();
    for v in verdicts {
        *counts.entry(*v).or_default() += 1;
    }
    counts
        .into_iter()
        .find(|(_, n)| *n * 2 > verdicts.len())
        .map_or(State::Unknown, |(s, _)| s)
}

#[cfg(test)]
thread_local! {
    /// Planted bug (tests only, this thread only): a minority counts as a
    /// quorum. The simulator's DOWN oracle must catch it.
    pub static PLANT_MINORITY_QUORUM: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[cfg(test)]
mod tests;
