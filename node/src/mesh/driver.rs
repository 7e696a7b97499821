//! The Raft driver: one thread owns raft-rs's `RawNode`, the raft log and
//! the replicated state machine, and runs raft-rs's documented loop:
//! tick or step → ready → send what may go out at once → install a snapshot
//! → apply committed entries → persist entries and hard state (flushed) →
//! send what needed the persist → advance → apply and send what the light
//! ready brings.
//!
//! Architecture invariants:
//! - only this thread touches the `RawNode`, the storage and (for writes) the
//!   state machine; async code talks to it through a bounded channel;
//! - the raft log is reached from this thread only, never from an async worker;
//! - a node acknowledges (votes, append responses) only what is flushed: the
//!   "persisted messages" leave after the write returns;
//! - the state machine sees committed entries only, in log order.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeType, ConfState, Entry, EntryType, Message, MessageType, Snapshot,
};
use raft::{RawNode, StateRole, Storage as _};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::state::{Command, Member, NodeId, StateMachine, Transition};
use super::storage::SledStorage;
use super::transport::Transport;

#[cfg(test)]
mod compaction_tests;
#[cfg(test)]
mod read_tests;
mod reads;

use reads::Reads;

/// How many inputs the driver's channel holds before senders are refused.
pub const INBOX: usize = 4096;

/// What the driver needs to know.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// This node's id.
    pub id: NodeId,
    /// Bootstrap members (id, zone, addr).
    pub peers: Vec<(NodeId, Member)>,
    /// Raft tick.
    pub tick: Duration,
    /// Ticks without a leader before an election.
    pub election_ticks: usize,
    /// Ticks between leader heartbeats.
    pub heartbeat_ticks: usize,
    /// Applied entries between snapshots (the log is compacted at each).
    pub snapshot_entries: u64,
    /// Bytes of applied entries (as stored) after which a snapshot is
    /// taken, however few entries that is: the log's size is bounded
    /// whatever the entries weigh.
    pub snapshot_bytes: u64,
    /// Distinguishes this run's proposals from an earlier run's (random in a
    /// node, from the seed in the simulator): a proposal is answered by its
    /// own entry only.
    pub nonce: u64,
}

/// Why a write did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MeshError {
    /// No leader is known (an election is running, or this node is cut off).
    #[error("no leader: an election is in progress or this node cannot reach a quorum")]
    NoLeader,
    /// Raft refused the proposal (leadership transfer, a pending conf change).
    #[error("proposal dropped: {0}")]
    Dropped(String),
    /// The driver's queue is full.
    #[error("node is overloaded: its raft queue is full")]
    Busy,
    /// The driver has stopped.
    #[error("raft driver stopped")]
    Stopped,
    /// Not committed before the deadline (it may still commit).
    #[error("not committed within {0:?}")]
    Timeout(Duration),
    /// Only the leader can do this.
    #[error("node {me} is not the leader (leader: {leader})")]
    NotLeader {
        /// This node.
        me: NodeId,
        /// The leader it knows, 0 for none.
        leader: NodeId,
    },
    /// A request that cannot be right.
    #[error("{0}")]
    Invalid(String),
    /// Committed, but the state machine refused it (the same on every node).
    #[error("committed but not applied: {0}")]
    Rejected(String),
}

/// A conf change to propose.
#[derive(Debug, Clone)]
pub enum MemberChange {
    /// Add the node, or replace its zone and address.
    Set(NodeId, Member),
    /// Remove the node; `force`: even if the voters left could not form a
    /// reachable quorum.
    Remove(NodeId, bool),
    /// Only check that removing the node (this leader included) would be
    /// accepted; nothing is proposed. The API asks this before it hands
    /// leadership over to remove the leader.
    CheckRemove(NodeId, bool),
}

/// Inputs to the driver thread.
#[derive(Debug)]
pub enum Input {
    /// A message from a peer.
    Raft(Box<Message>),
    /// Propose a command; answered with its log index once applied here.
    Propose(Command, oneshot::Sender<Result<u64, MeshError>>),
    /// Propose a membership change; answered once applied here.
    Member(MemberChange, oneshot::Sender<Result<u64, MeshError>>),
    /// Hand leadership to a voter (leader only).
    TransferLeader(NodeId, oneshot::Sender<Result<(), MeshError>>),
    /// The transport could not reach a peer.
    Unreachable(NodeId),
    /// A member refused this node's messages as from a non-member: its
    /// applied state predates this node's joining.
    RefusedAsStranger(NodeId),
    /// A snapshot was (or was not) delivered.
    SnapshotDone(NodeId, bool),
    /// A peer's data-dir instance, as its envelope says (sent by the gRPC
    /// edge for members not yet bound: learners waiting to be promoted).
    PeerInstance(NodeId, u64),
    /// Confirm with the leader that this node's state is current (a raft
    /// read-index round); answered with the read index once this node has
    /// applied up to it.
    ReadIndex(oneshot::Sender<Result<u64, MeshError>>),
}

/// The Raft side of status, as this node sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RaftInfo {
    /// This node.
    pub id: NodeId,
    /// Known leader, 0 for none.
    pub leader: NodeId,
    /// Current term.
    pub term: u64,
    /// Commit index.
    pub commit: u64,
    /// Applied index.
    pub applied: u64,
    /// This node's role.
    pub role: &'static str,
    /// Voters.
    pub voters: Vec<NodeId>,
    /// Learners.
    pub learners: Vec<NodeId>,
    /// Whether the transport's last send to each peer succeeded.
    pub reachable: BTreeMap<NodeId, bool>,
    /// The cluster id (empty while this node waits for its first state).
    pub cluster_id: String,
    /// This node's data-dir instance.
    pub instance: u64,
}

impl RaftInfo {
    /// A member's role as this node sees it (what `faxictl members` and
    /// the status page show): this node's own role, `leader`, `learner`,
    /// `follower`, or `unknown` for a member raft does not list.
    pub fn role_of(&self, id: NodeId) -> &'static str {
        if id == self.id {
            self.role
        } else if id == self.leader {
            "leader"
        } else if self.learners.contains(&id) {
            "learner"
        } else if self.voters.contains(&id) {
            "follower"
        } else {
            "unknown"
        }
    }

    /// Whether this node's last message to `id` got through (this node
    /// always reaches itself).
    pub fn reaches(&self, id: NodeId) -> bool {
        id == self.id || self.reachable.get(&id).copied().unwrap_or(false)
    }

    /// Voters and learners from a conf state, sorted.
    fn set_conf(&mut self, cs: &ConfState) {
        self.voters = cs.voters.clone();
        self.voters.sort_unstable();
        self.learners = cs.learners.clone();
        self.learners.sort_unstable();
    }
}

/// State readers share: the applied state machine and raft status.
#[derive(Debug, Default)]
pub struct Shared {
    /// The replicated state, as applied here.
    pub sm: StateMachine,
    /// Raft status.
    pub info: RaftInfo,
    /// When a message from a leader last arrived (followers), or when this
    /// node last ticked as the leader. Kept when the leader is lost.
    pub leader_heard: Option<Instant>,
}

impl Shared {
    /// Tests: node 1 leading `term` over `sm`.
    #[cfg(test)]
    pub(crate) fn leading(sm: StateMachine, term: u64) -> Shared {
        Shared {
            sm,
            info: RaftInfo {
                id: 1,
                leader: 1,
                term,
                role: "leader",
                ..RaftInfo::default()
            },
            leader_heard: None,
        }
    }

    /// Time since a leader was last heard: zero on the leader; once a
    /// leader was heard, it keeps growing after the leader is lost (an
    /// election, a cut); `None` only when no leader was ever heard.
    pub fn leader_contact(&self) -> Option<Duration> {
        if self.info.leader != raft::INVALID_ID && self.info.leader == self.info.id {
            Some(Duration::ZERO)
        } else {
            self.leader_heard.map(|t| t.elapsed())
        }
    }
}

/// A handle on the driver: cheap to clone.
#[derive(Debug, Clone)]
pub struct Mesh {
    tx: SyncSender<Input>,
    stopping: Arc<std::sync::atomic::AtomicBool>,
    shared: Arc<RwLock<Shared>>,
    version: watch::Receiver<u64>,
}

impl Mesh {
    /// Read access to the applied state and raft status.
    pub fn read(&self) -> RwLockReadGuard<'_, Shared> {
        // The driver writes plain data; a poisoned lock still holds a whole state.
        self.shared.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes whenever applied state or raft status changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.clone()
    }

    /// A handle on no driver, for tests of what calls one: readers see
    /// `shared` (also returned, for a test's own driver to write), and what
    /// is sent arrives in the returned inbox of `size`.
    #[cfg(test)]
    pub(crate) fn detached(
        shared: Shared,
        size: usize,
    ) -> (Mesh, Arc<RwLock<Shared>>, Receiver<Input>) {
        let (tx, rx) = std::sync::mpsc::sync_channel(size);
        let (_version, version) = watch::channel(0);
        let shared = Arc::new(RwLock::new(shared));
        let mesh = Mesh {
            tx,
            stopping: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            shared: shared.clone(),
            version,
        };
        (mesh, shared, rx)
    }

    /// The state readers share, for a test that stands in for the driver.
    #[cfg(test)]
    pub(crate) fn shared_for_tests(&self) -> &Arc<RwLock<Shared>> {
        &self.shared
    }

    /// Hands an input to the driver without blocking.
    pub fn send(&self, input: Input) -> Result<(), MeshError> {
        self.tx.try_send(input).map_err(|e| match e {
            TrySendError::Full(_) => MeshError::Busy,
            TrySendError::Disconnected(_) => MeshError::Stopped,
        })
    }

    /// Proposes a command and waits until it is applied on this node.
    pub async fn propose(&self, cmd: Command, deadline: Duration) -> Result<u64, MeshError> {
        let (tx, rx) = oneshot::channel();
        self.send(Input::Propose(cmd, tx))?;
        wait(rx, deadline).await
    }

    /// Proposes a membership change and waits until it is applied here.
    pub async fn change_member(
        &self,
        change: MemberChange,
        deadline: Duration,
    ) -> Result<u64, MeshError> {
        let (tx, rx) = oneshot::channel();
        self.send(Input::Member(change, tx))?;
        wait(rx, deadline).await
    }

    /// Confirms with the leader that this node's state is current (raft's
    /// read index; on a follower the leader is asked): the read index, once
    /// this node has applied up to it. `NoLeader` when no leader is known or
    /// leadership changes meanwhile; `Timeout` when the leader cannot be
    /// heard within `deadline` (a node cut off from it cannot confirm).
    pub async fn read_index(&self, deadline: Duration) -> Result<u64, MeshError> {
        let (tx, rx) = oneshot::channel();
        self.send(Input::ReadIndex(tx))?;
        wait(rx, deadline).await
    }

    /// Asks this node (which must lead) to transfer leadership.
    pub async fn transfer_leader(&self, to: NodeId) -> Result<(), MeshError> {
        let (tx, rx) = oneshot::channel();
        self.send(Input::TransferLeader(to, tx))?;
        rx.await.map_err(|_| MeshError::Stopped)?
    }

    /// Stops the driver thread (within one tick, however full its queue).
    pub fn stop(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

async fn wait<T>(
    rx: oneshot::Receiver<Result<T, MeshError>>,
    deadline: Duration,
) -> Result<T, MeshError> {
    match tokio::time::timeout(deadline, rx).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err(MeshError::Stopped),
        Err(_) => Err(MeshError::Timeout(deadline)),
    }
}

/// Why the driver could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The log could not be read or initialised.
    #[error("raft log: {0}")]
    Storage(String),
    /// Raft rejected the configuration.
    #[error("raft: {0}")]
    Raft(String),
}

/// A peer as the transport needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddr {
    /// host:port of its gRPC listener.
    pub addr: String,
    /// Its data-dir instance as the membership records it (0: not bound).
    pub instance: u64,
}

/// Who this node is on the wire: written on every batch it sends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// The cluster (empty until this node has state).
    pub cluster_id: String,
    /// This node.
    pub id: NodeId,
    /// Its data dir.
    pub instance: u64,
    /// The applied index at which this node's own member record named
    /// `instance` (0 while it does not): lets a receiver with an older view
    /// tell a re-added member from the data dir it replaced.
    pub bound_at: u64,
}

/// Where the driver's outgoing raft messages go: the tonic transport in a
/// node, an in-memory network in the simulator.
pub trait Outbox {
    /// Queues messages; never blocks. Returns the peers whose snapshot
    /// could not even be queued (raft must hear that it failed).
    fn send(&mut self, msgs: Vec<Message>) -> Vec<NodeId>;
    /// Sets who this node is and every peer's address. Returns the peers
    /// whose link closed with a snapshot still undelivered.
    fn set_peers(&mut self, me: &Identity, book: BTreeMap<NodeId, PeerAddr>) -> Vec<NodeId>;
    /// Whether the last message to each peer got through.
    fn reachable(&self) -> BTreeMap<NodeId, bool>;
}

impl Outbox for Transport {
    fn send(&mut self, msgs: Vec<Message>) -> Vec<NodeId> {
        Transport::send(self, msgs)
    }
    fn set_peers(&mut self, me: &Identity, book: BTreeMap<NodeId, PeerAddr>) -> Vec<NodeId> {
        Transport::set_peers(self, me, book)
    }
    fn reachable(&self) -> BTreeMap<NodeId, bool> {
        Transport::reachable(self)
    }
}

/// What `init` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Init {
    /// A new cluster with this id; this node is its first voter, the other
    /// configured peers its learners (promoted once caught up).
    Created(String),
    /// The data dir already holds this cluster's state: nothing changed.
    Already(String),
}

/// Creates a new cluster in an empty data dir: the one explicit bootstrap
/// step (`faxi-watchdog init`). The state at index 1 names every configured
/// peer as a member; this node is the only voter, so it leads at once, and
/// the others are learners that catch up by snapshot and are promoted. A
/// data dir that already holds state is left alone.
pub fn init(
    storage: &SledStorage,
    me: NodeId,
    peers: &[(NodeId, Member)],
    cluster_id: String,
) -> Result<Init, StartError> {
    let serr = |e: raft::Error| StartError::Storage(e.to_string());
    let existing = storage.last_snapshot().map_err(serr)?;
    if existing.get_metadata().index > 0 || storage.last_index().map_err(serr)? > 0 {
        let sm = StateMachine::restore(&existing.data).map_err(StartError::Storage)?;
        return Ok(Init::Already(sm.cluster_id().to_owned()));
    }
    if !peers.iter().any(|(id, _)| *id == me) {
        return Err(StartError::Raft(format!(
            "cluster.peers must list this node ({me}) to create a cluster"
        )));
    }
    let members: Vec<(NodeId, Member)> = peers
        .iter()
        .map(|(id, m)| {
            let mut m = m.clone();
            m.instance = if *id == me { storage.instance() } else { 0 };
            (*id, m)
        })
        .collect();
    let sm = StateMachine::bootstrap(cluster_id.clone(), members);
    let mut snap = Snapshot::default();
    let meta = snap.mut_metadata();
    meta.index = 1;
    meta.term = 1;
    meta.mut_conf_state().voters = vec![me];
    meta.mut_conf_state().learners = peers
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| *id != me)
        .collect();
    snap.data = sm.snapshot().map_err(StartError::Storage)?.into();
    storage.apply_snapshot(&snap).map_err(serr)?;
    storage.sync().map_err(serr)?;
    Ok(Init::Created(cluster_id))
}

/// A new random cluster id.
pub fn new_cluster_id() -> String {
    format!(
        "{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    )
}

/// Opens the state from `storage` (bootstrapping a fresh one) and starts the
/// driver thread. The transport carries outgoing messages.
pub fn start(
    cfg: DriverConfig,
    storage: SledStorage,
    transport: Transport,
    inbox: (SyncSender<Input>, Receiver<Input>),
) -> Result<(Mesh, std::thread::JoinHandle<Result<(), String>>), StartError> {
    let core = Core::open(cfg, storage, transport, cfg_jitter::RANDOM)?;
    let shared = core.shared.clone();
    let version = core.version.subscribe();
    let stopping = core.stopping.clone();
    let (tx, rx) = inbox;
    let thread = std::thread::Builder::new()
        .name("raft".into())
        .spawn(move || core.run(rx))
        .map_err(|e| StartError::Raft(format!("cannot start the raft thread: {e}")))?;
    Ok((
        Mesh {
            tx,
            stopping,
            shared,
            version,
        },
        thread,
    ))
}

/// Election timeout randomisation.
pub mod cfg_jitter {
    /// Uniform in [election, 1.4 × election) ticks, from raft-rs's RNG.
    pub const RANDOM: bool = true;
    /// None: always `election` ticks (raft-rs draws from its own RNG, which
    /// a seeded simulation cannot replay; the simulator jitters ticks instead).
    pub const FIXED: bool = false;
}

type Reply = oneshot::Sender<Result<u64, MeshError>>;

/// No honest term comes near this (raft-rs overflows past u64::MAX).
const MAX_TERM: u64 = 1 << 48;
/// No honest log index (or term) comes near this.
const MAX_INDEX: u64 = 1 << 56;
/// How far past this node's term a peer's message may be: elections are
/// rare and pre-vote keeps a cut-off node's term from rising.
const MAX_TERM_LEAP: u64 = 1 << 20;

/// How long a peer may stay in raft's snapshot state before the driver
/// calls the snapshot failed (a lost report must not stall the peer
/// forever): longer than the transport's deadline for a snapshot call.
pub(crate) const SNAPSHOT_STUCK: Duration = Duration::from_secs(40);

/// The driver's state: the raft node, its log, the state machine and our
/// pending proposals. The thread runs it; the simulator steps it by hand.
pub struct Core<O: Outbox> {
    cfg: DriverConfig,
    /// raft-rs's node (public for the simulator's checks).
    pub raw: RawNode<SledStorage>,
    transport: O,
    shared: Arc<RwLock<Shared>>,
    version: watch::Sender<u64>,
    /// Our proposals not yet applied, by sequence number.
    pending: HashMap<u64, Reply>,
    seq: u64,
    last_snapshot: u64,
    /// Bytes of the entries applied since `last_snapshot`, as stored.
    log_bytes: u64,
    last_info: RaftInfo,
    stopping: Arc<std::sync::atomic::AtomicBool>,
    /// This node's data dir.
    instance: u64,
    /// Instances peers' envelopes showed (for promoting learners).
    seen_instances: BTreeMap<NodeId, u64>,
    /// Ticks so far (a clock for the stuck-snapshot bound).
    ticks: u64,
    /// Since which tick each peer has been in raft's snapshot state.
    snapshot_since: BTreeMap<NodeId, u64>,
    /// The last config/membership disagreement reported.
    last_mismatch: Vec<String>,
    /// Members that refused this node as a stranger since the last check.
    refused_by: BTreeSet<NodeId>,
    /// Tick of the last hand-off to a member a stranger-refuser knows.
    last_handoff: u64,
    /// The applied index at which this node first saw its own member record
    /// name its data dir (0 while it does not); kept stable so peer links
    /// are not rebuilt at every membership change.
    bound_at: u64,
    /// Test-only switches that plant known bugs, to show the checks catch them.
    #[cfg(test)]
    pub bugs: Bugs,
    /// Test-only: every entry applied (index, term, data), for the
    /// simulator's checks, which must see entries a compaction drops.
    #[cfg(test)]
    pub applied_tap: Vec<(u64, u64, Vec<u8>)>,
    /// Read-index requests in flight.
    reads: Reads,
}

/// Bugs the simulator plants on purpose to prove its checks can fail.
#[cfg(test)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Bugs {
    /// Send votes and append acks before the write is flushed.
    pub ack_before_persist: bool,
    /// Vote even when this node holds no state (a wiped disk).
    pub vote_without_state: bool,
}

/// The context that marks an entry as ours: proposer id, this run's nonce
/// and sequence.
fn proposal_ctx(id: NodeId, nonce: u64, seq: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(24);
    v.extend_from_slice(&id.to_be_bytes());
    v.extend_from_slice(&nonce.to_be_bytes());
    v.extend_from_slice(&seq.to_be_bytes());
    v
}

fn parse_ctx(ctx: &[u8]) -> Option<(NodeId, u64, u64)> {
    if ctx.len() != 24 {
        return None;
    }
    let id: [u8; 8] = ctx.get(..8)?.try_into().ok()?;
    let nonce: [u8; 8] = ctx.get(8..16)?.try_into().ok()?;
    let seq: [u8; 8] = ctx.get(16..24)?.try_into().ok()?;
    Some((
        u64::from_be_bytes(id),
        u64::from_be_bytes(nonce),
        u64::from_be_bytes(seq),
    ))
}

/// Encodes a command as an entry's data.
pub fn encode(cmd: &Command) -> Result<Vec<u8>, MeshError> {
    super::codec::encode(cmd).map_err(MeshError::Invalid)
}

/// Decodes an entry's data (the simulator's oracle reads the log too).
pub fn decode_command(data: &[u8]) -> Result<Command, String> {
    decode(data)
}

fn decode(data: &[u8]) -> Result<Command, String> {
    super::codec::decode(data)
}

fn role_str(r: StateRole) -> &'static str {
    match r {
        StateRole::Leader => "leader",
        StateRole::Follower => "follower",
        StateRole::Candidate => "candidate",
        StateRole::PreCandidate => "candidate",
    }
}

impl<O: Outbox> std::fmt::Debug for Core<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core").field("id", &self.cfg.id).finish()
    }
}

impl<O: Outbox> Core<O> {
    /// Opens the state from `storage`. A data dir with no state never
    /// bootstraps here: the node waits (it neither campaigns nor votes) until
    /// a leader sends it a snapshot, which happens once it is a member
    /// (`faxi-watchdog init` on one node creates the cluster; the others are
    /// its learners, or are added with `faxictl members add`).
    pub fn open(
        cfg: DriverConfig,
        storage: SledStorage,
        transport: O,
        random_election: bool,
    ) -> Result<Self, StartError> {
        let serr = |e: raft::Error| StartError::Storage(e.to_string());
        let instance = storage.instance();
        let snap = storage.last_snapshot().map_err(serr)?;
        let applied = snap.get_metadata().index;
        let hs = storage.initial_state().map_err(serr)?.hard_state;
        tracing::info!(
            snapshot_index = applied,
            last_index = storage.last_index().map_err(serr)?,
            commit = hs.commit,
            term = hs.term,
            "raft log opened"
        );
        let sm = if applied == 0 {
            StateMachine::default()
        } else {
            StateMachine::restore(&snap.data).map_err(StartError::Storage)?
        };
        if applied > 0 {
            // The committed entries after the snapshot are applied again,
            // conf changes included: raft must start from the snapshot's
            // configuration, not the latest one, or each would be applied
            // twice (and a re-added node would read its old removal).
            storage
                .set_conf_state(snap.get_metadata().get_conf_state())
                .and_then(|()| storage.sync())
                .map_err(serr)?;
        }
        let raft_cfg = raft::Config {
            id: cfg.id,
            election_tick: cfg.election_ticks,
            heartbeat_tick: cfg.heartbeat_ticks,
            // Election timeouts are drawn from [election, 1.2 × election)
            // ticks rather than raft-rs's default [election, 2 × election):
            // with 100 ms × 10 a follower campaigns 1.0 or 1.1 s after the
            // leader's last heartbeat, leaving room for pre-vote, vote and
            // the first append within the 1.2 s failover bar. Two
            // followers drawing the same count still campaign apart: their
            // ticks are not in phase (BENCHMARKS.md: every failover of 160
            // won at the first election).
            min_election_tick: cfg.election_ticks,
            max_election_tick: if random_election {
                cfg.election_ticks + (cfg.election_ticks / 5).max(1)
            } else {
                cfg.election_ticks + 1
            },
            applied,
            pre_vote: true,
            check_quorum: true,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            max_uncommitted_size: 64 * 1024 * 1024,
            ..raft::Config::default()
        };
        raft_cfg
            .validate()
            .map_err(|e| StartError::Raft(e.to_string()))?;
        let logger = super::raftlog::logger();
        let raw = RawNode::new(&raft_cfg, storage, &logger)
            .map_err(|e| StartError::Raft(e.to_string()))?;
        let (version, _) = watch::channel(0);
        let id = cfg.id;
        let mut core = Core {
            cfg,
            raw,
            transport,
            shared: Arc::new(RwLock::new(Shared {
                info: RaftInfo {
                    id,
                    cluster_id: sm.cluster_id().to_owned(),
                    instance,
                    role: "follower",
                    ..RaftInfo::default()
                },
                sm,
                ..Shared::default()
            })),
            version,
            pending: HashMap::new(),
            seq: 0,
            last_snapshot: applied,
            log_bytes: 0,
            last_info: RaftInfo::default(),
            stopping: Arc::default(),
            instance,
            seen_instances: BTreeMap::new(),
            ticks: 0,
            snapshot_since: BTreeMap::new(),
            last_mismatch: Vec::new(),
            refused_by: BTreeSet::new(),
            last_handoff: 0,
            bound_at: 0,
            #[cfg(test)]
            bugs: Bugs::default(),
            #[cfg(test)]
            applied_tap: Vec::new(),
            reads: Reads::default(),
        };
        if applied == 0 {
            tracing::warn!(
                node = core.cfg.id,
                "this data dir holds no cluster state: waiting to be sent one by a leader. \
                 A node of an existing cluster is added with `faxictl members add` (if it was a \
                 member and lost its disk: `faxictl members remove` it, then add it). Only for a \
                 brand-new cluster, run `faxi-watchdog init` on exactly one node, never on a \
                 node of a cluster that exists"
            );
        }
        crate::metrics::set_snapshot_bytes(snap.data.len());
        core.refresh_peers();
        core.export_all_targets();
        Ok(core)
    }

    /// The outbox (the simulator drains it).
    pub fn outbox(&mut self) -> &mut O {
        &mut self.transport
    }

    /// The applied state and raft status.
    pub fn shared(&self) -> RwLockReadGuard<'_, Shared> {
        self.read()
    }

    /// One step of the loop without a clock: handle inputs, optionally tick,
    /// then process ready and publish.
    pub fn step(&mut self, inputs: Vec<Input>, tick: bool) -> Result<(), String> {
        for i in inputs {
            self.handle(i);
        }
        if tick {
            self.tick();
        }
        self.on_ready()?;
        self.publish();
        Ok(())
    }

    fn run(mut self, rx: Receiver<Input>) -> Result<(), String> {
        let tick = self.cfg.tick;
        let mut next_tick = Instant::now() + tick;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            let first = match rx.recv_timeout(wait) {
                Ok(i) => Some(i),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            };
            let mut inputs: Vec<Input> = first.into_iter().collect();
            while inputs.len() < 1024 {
                match rx.try_recv() {
                    Ok(i) => inputs.push(i),
                    Err(_) => break,
                }
            }
            if self.stopping.load(std::sync::atomic::Ordering::Relaxed) {
                self.fail_pending();
                return Ok(());
            }
            for input in inputs {
                self.handle(input);
            }
            if Instant::now() >= next_tick {
                self.tick();
                next_tick += tick;
                // After a long stall, do not fire a burst of ticks.
                if next_tick < Instant::now() {
                    next_tick = Instant::now() + tick;
                }
            }
            self.on_ready()?;
            self.publish();
        }
    }

    /// One raft tick; proposals whose caller gave up are forgotten; the
    /// leader promotes caught-up learners and un-sticks snapshot sends.
    fn tick(&mut self) {
        self.raw.tick();
        self.ticks += 1;
        self.pending.retain(|_, r| !r.is_closed());
        if self.raw.raft.state == StateRole::Leader {
            self.unstick_snapshots();
            self.maybe_promote();
            self.hand_off_if_a_member_refuses_me();
        } else {
            self.snapshot_since.clear();
        }
        self.tick_reads();
    }

    fn fail_pending(&mut self) {
        for (_, r) in self.pending.drain() {
            let _ = r.send(Err(MeshError::Stopped));
        }
        self.reads.fail_all(&MeshError::Stopped);
    }

    /// Whether this node holds any state. One that does not (a new or
    /// wiped data dir) never votes: it may have voted before its disk was
    /// lost, in a term it no longer knows. Once a leader has sent it the
    /// cluster's state, its votes are on disk again and it may vote (a
    /// learner whose promotion it has not yet applied must, or a cluster
    /// that needs its vote would wait forever).
    fn has_state(&self) -> bool {
        self.raw.raft.raft_log.last_index() > 0
    }

    /// Why a peer's message must not reach raft-rs: it would make it panic
    /// (a commit past the log, an append rewriting committed entries, an
    /// empty proposal, a snapshot that does not restore), or it carries
    /// what no honest peer sends (a term from nowhere, a proposal for
    /// another node, a conf change forwarded past the leader's checks).
    pub(super) fn refusal(&self, m: &Message) -> Option<&'static str> {
        let r = &self.raw.raft;
        let log = &r.raft_log;
        if m.term > MAX_TERM {
            return Some("term");
        }
        if self.has_state() && m.term > r.term.saturating_add(MAX_TERM_LEAP) {
            return Some("term");
        }
        let snap_index = m.get_snapshot().get_metadata().index;
        let indexes = [m.index, m.commit, m.reject_hint, m.log_term, snap_index];
        if indexes.iter().any(|i| *i > MAX_INDEX)
            || m.get_entries()
                .iter()
                .any(|e| e.index > MAX_INDEX || e.term > MAX_TERM)
        {
            return Some("index");
        }
        let replicates = matches!(
            m.get_msg_type(),
            MessageType::MsgAppend | MessageType::MsgHeartbeat | MessageType::MsgSnapshot
        );
        // In this node's term, only the leader it knows replicates.
        if replicates
            && m.term == r.term
            && r.leader_id != raft::INVALID_ID
            && m.from != r.leader_id
        {
            return Some("not_the_leader");
        }
        match m.get_msg_type() {
            MessageType::MsgPropose => {
                if m.entries.is_empty() {
                    return Some("empty_proposal");
                }
                for e in m.get_entries() {
                    if e.get_entry_type() != EntryType::EntryNormal {
                        return Some("forwarded_conf_change");
                    }
                    match decode(&e.data) {
                        // A follower forwards its own reports only.
                        Ok(Command::Observe { node, .. } | Command::Refresh { node, .. })
                            if node == m.from => {}
                        _ => return Some("foreign_proposal"),
                    }
                }
            }
            // A read carries exactly its request context.
            MessageType::MsgReadIndex | MessageType::MsgReadIndexResp if m.entries.len() != 1 => {
                return Some("malformed_read_index");
            }
            MessageType::MsgHeartbeat if m.commit > log.last_index() => {
                return Some("commit_past_log");
            }
            MessageType::MsgAppend => {
                // raft-rs reads a term past its log as 0: a "previous
                // entry" of term 0 would match an entry it does not have.
                if m.index > 0 && m.log_term == 0 {
                    return Some("malformed_append");
                }
                let mut prev = (m.index, m.log_term);
                for e in m.get_entries() {
                    if Some(e.index) != prev.0.checked_add(1)
                        || e.term == 0
                        || e.term < prev.1
                        || e.term > m.term
                    {
                        return Some("malformed_append");
                    }
                    // raft-rs reads a term outside its log (compacted, or
                    // past its end) as 0: only a term it holds can
                    // contradict the entry. Entries it compacted are below
                    // its commit, and raft-rs answers such an append with
                    // its commit index (simulator seed 6479: a follower
                    // that compacted past the leader's probe refused every
                    // append, and the leader never learnt its match).
                    if e.index <= log.committed
                        && log.term(e.index).is_ok_and(|t| t != 0 && t != e.term)
                    {
                        return Some("rewrites_committed");
                    }
                    prev = (e.index, e.term);
                }
            }
            MessageType::MsgAppendResponse if !m.reject && m.index > log.last_index() => {
                return Some("ack_past_log");
            }
            MessageType::MsgTimeoutNow if m.from != r.leader_id || m.term != r.term => {
                return Some("timeout_not_from_leader");
            }
            MessageType::MsgSnapshot => return self.snapshot_refusal(m),
            _ => {}
        }
        None
    }

    fn snapshot_refusal(&self, m: &Message) -> Option<&'static str> {
        let snap = m.get_snapshot();
        let meta = snap.get_metadata();
        let cs = meta.get_conf_state();
        let me = self.cfg.id;
        let overlap = cs.voters.iter().any(|v| cs.learners.contains(v));
        if meta.index == 0
            || meta.term == 0
            || meta.term > m.term
            || cs.voters.is_empty()
            || overlap
            || !(cs.voters.contains(&me) || cs.learners.contains(&me))
            || !cs.voters_outgoing.is_empty()
        {
            return Some("bad_snapshot");
        }
        match StateMachine::restore(&snap.data) {
            Err(_) => Some("bad_snapshot"),
            Ok(sm) => {
                let ours = self.read().sm.cluster_id().to_owned();
                if !ours.is_empty() && sm.cluster_id() != ours {
                    Some("other_cluster")
                } else {
                    None
                }
            }
        }
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Raft(m) => {
                if let Some(reason) = self.refusal(&m) {
                    metrics::counter!(crate::metrics::RAFT_REFUSED, "reason" => reason)
                        .increment(1);
                    tracing::debug!(from = m.from, kind = ?m.get_msg_type(), reason, "peer message refused");
                    return;
                }
                let t = m.get_msg_type();
                if matches!(
                    t,
                    MessageType::MsgRequestVote
                        | MessageType::MsgRequestPreVote
                        | MessageType::MsgTimeoutNow
                ) && !self.has_state()
                    && !self.vote_without_state_bug()
                {
                    tracing::debug!(from = m.from, kind = ?t, "no state here: vote request ignored");
                    return;
                }
                if m.from == self.raw.raft.leader_id
                    && matches!(
                        t,
                        MessageType::MsgAppend
                            | MessageType::MsgHeartbeat
                            | MessageType::MsgSnapshot
                    )
                {
                    self.shared
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .leader_heard = Some(Instant::now());
                }
                if let Err(e) = self.raw.step(*m) {
                    tracing::debug!(error = %e, "raft message ignored");
                }
            }
            Input::Propose(cmd, reply) => {
                let data = match encode(&cmd) {
                    Ok(d) => d,
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        return;
                    }
                };
                if self.raw.raft.leader_id == raft::INVALID_ID {
                    let _ = reply.send(Err(MeshError::NoLeader));
                    return;
                }
                self.seq += 1;
                let ctx = proposal_ctx(self.cfg.id, self.cfg.nonce, self.seq);
                match self.raw.propose(ctx, data) {
                    Ok(()) => {
                        self.pending.insert(self.seq, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(MeshError::Dropped(e.to_string())));
                    }
                }
            }
            Input::Member(MemberChange::CheckRemove(id, force), reply) => {
                let r = self
                    .member_change(&MemberChange::CheckRemove(id, force))
                    .map(|_| 0);
                let _ = reply.send(r);
            }
            Input::Member(change, reply) => match self.member_change(&change) {
                Ok(cc) => {
                    self.seq += 1;
                    let ctx = proposal_ctx(self.cfg.id, self.cfg.nonce, self.seq);
                    match self.raw.propose_conf_change(ctx, cc) {
                        Ok(()) => {
                            self.pending.insert(self.seq, reply);
                        }
                        Err(e) => {
                            let _ = reply.send(Err(MeshError::Dropped(e.to_string())));
                        }
                    }
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Input::TransferLeader(to, reply) => {
                let r = if self.raw.raft.state != StateRole::Leader {
                    Err(MeshError::NotLeader {
                        me: self.cfg.id,
                        leader: self.raw.raft.leader_id,
                    })
                } else if !self.raw.raft.prs().conf().voters().contains(to) {
                    Err(MeshError::Invalid(format!("node {to} is not a voter")))
                } else {
                    self.raw.transfer_leader(to);
                    Ok(())
                };
                let _ = reply.send(r);
            }
            Input::Unreachable(id) => self.raw.report_unreachable(id),
            Input::RefusedAsStranger(id) => {
                self.refused_by.insert(id);
            }
            Input::SnapshotDone(id, ok) => self.report_snapshot(id, ok),
            Input::ReadIndex(reply) => self.start_read(reply),
            Input::PeerInstance(id, instance) => {
                if instance != 0 {
                    self.seen_instances.insert(id, instance);
                }
            }
        }
    }

    #[cfg(test)]
    fn vote_without_state_bug(&self) -> bool {
        self.bugs.vote_without_state
    }

    #[cfg(not(test))]
    fn vote_without_state_bug(&self) -> bool {
        false
    }

    fn report_snapshot(&mut self, id: NodeId, ok: bool) {
        self.snapshot_since.remove(&id);
        self.raw.report_snapshot(
            id,
            if ok {
                raft::SnapshotStatus::Finish
            } else {
                raft::SnapshotStatus::Failure
            },
        );
    }

    /// Validates a membership change against this leader's applied
    /// (committed) state and builds the conf change. Only the leader
    /// accepts one (the gRPC edge carries requests to it), and only one at
    /// a time.
    fn member_change(&self, change: &MemberChange) -> Result<ConfChange, MeshError> {
        let r = &self.raw.raft;
        if r.state != StateRole::Leader {
            return Err(MeshError::NotLeader {
                me: self.cfg.id,
                leader: r.leader_id,
            });
        }
        if r.has_pending_conf() {
            return Err(MeshError::Invalid(
                "another membership change is still being applied; retry in a moment".into(),
            ));
        }
        let conf = r.prs().conf();
        let voters = conf.voters().ids();
        let s = self.read();
        let members = s.sm.members();
        let mut cc = ConfChange::default();
        match change {
            MemberChange::Set(id, member) => {
                if *id == 0 {
                    return Err(MeshError::Invalid("id: must be 1 or more".into()));
                }
                // The state machine's own rules (zone, address, an address
                // no other member has), refused here before any proposal.
                s.sm.check(&Command::SetMember {
                    id: *id,
                    member: member.clone(),
                })
                .map_err(|e| MeshError::Invalid(e.to_string()))?;
                let moved = members.get(id).is_some_and(|m| m.addr != member.addr);
                if moved && *id == self.cfg.id {
                    return Err(MeshError::Invalid(format!(
                        "node {id} is the leader: hand leadership to another voter before changing its address"
                    )));
                }
                if moved && voters.contains(*id) {
                    // The node may not answer at its new address: the
                    // others must be able to commit without it.
                    self.quorum_without(*id, &voters.iter().collect::<Vec<_>>())
                        .map_err(|e| {
                            MeshError::Invalid(format!(
                                "{e} (moving node {id} to {} could lose it)",
                                member.addr
                            ))
                        })?;
                }
                let mut member = member.clone();
                // Zone and address may change; the bound data dir may not.
                member.instance = members.get(id).map_or(0, |m| m.instance);
                cc.set_change_type(if voters.contains(*id) {
                    ConfChangeType::AddNode
                } else {
                    // New members start as learners: they vote only once
                    // caught up (`maybe_promote`), so adding nodes that never
                    // come up cannot take the quorum away.
                    ConfChangeType::AddLearnerNode
                });
                cc.node_id = *id;
                cc.context = super::codec::encode(&member)
                    .map_err(MeshError::Invalid)?
                    .into();
            }
            MemberChange::Remove(id, force) | MemberChange::CheckRemove(id, force) => {
                let check_only = matches!(change, MemberChange::CheckRemove(..));
                if !members.contains_key(id) && !conf.learners().contains(id) {
                    return Err(MeshError::Invalid(format!("node {id} is not a member")));
                }
                if *id == self.cfg.id && !check_only {
                    return Err(MeshError::Invalid(format!(
                        "node {id} is the leader: hand leadership to another voter first"
                    )));
                }
                if voters.contains(*id) && voters.len() == 1 {
                    return Err(MeshError::Invalid(format!(
                        "node {id} is the last voter; a cluster cannot remove it"
                    )));
                }
                if voters.contains(*id) && !force {
                    self.quorum_without(*id, &voters.iter().collect::<Vec<_>>()).map_err(|e| {
                        MeshError::Invalid(format!(
                            "removing node {id} {e}; bring them back first, or remove with --force"
                        ))
                    })?;
                }
                cc.set_change_type(ConfChangeType::RemoveNode);
                cc.node_id = *id;
            }
        }
        Ok(cc)
    }

    /// Whether the voters other than `id` form a quorum that this leader's
    /// last messages reached (the leader counts itself); the error says
    /// how many answer.
    fn quorum_without(&self, id: NodeId, voters: &[NodeId]) -> Result<(), String> {
        let left: Vec<NodeId> = voters.iter().copied().filter(|v| *v != id).collect();
        let reachable = self.transport.reachable();
        let live = left
            .iter()
            .filter(|v| **v == self.cfg.id || reachable.get(*v).copied().unwrap_or(false))
            .count();
        if live < left.len() / 2 + 1 {
            return Err(format!(
                "would leave {} voter(s) of which only {live} answer: no quorum",
                left.len()
            ));
        }
        Ok(())
    }

    /// Leader: promotes one caught-up learner whose data dir we know to a
    /// voter, binding that data dir to its membership.
    fn maybe_promote(&mut self) {
        let r = &self.raw.raft;
        if r.has_pending_conf() || r.lead_transferee.is_some() {
            return;
        }
        let committed = r.raft_log.committed;
        let mut learners: Vec<NodeId> = r.prs().conf().learners().iter().copied().collect();
        learners.sort_unstable();
        let candidate = learners.into_iter().find(|id| {
            r.prs()
                .get(*id)
                .is_some_and(|pr| pr.matched >= committed && pr.recent_active)
                && self.seen_instances.contains_key(id)
        });
        let Some(id) = candidate else { return };
        let Some(mut member) = self.read().sm.members().get(&id).cloned() else {
            return;
        };
        member.instance = self.seen_instances.get(&id).copied().unwrap_or(0);
        let mut cc = ConfChange::default();
        cc.set_change_type(ConfChangeType::AddNode);
        cc.node_id = id;
        match super::codec::encode(&member) {
            Ok(b) => cc.context = b.into(),
            Err(_) => return,
        }
        tracing::info!(node = id, instance = %format!("{:x}", member.instance), "learner caught up: promoting it to voter");
        if let Err(e) = self.raw.propose_conf_change(Vec::new(), cc) {
            tracing::debug!(error = %e, "promotion not proposed");
        }
    }

    /// Leader: a peer left in raft's snapshot state longer than a bound
    /// (a report lost on a full queue or inbox) is reported failed, so raft
    /// sends again instead of waiting forever.
    /// Leader: a member whose applied state predates this node's joining
    /// refuses its messages (only members may speak raft), so it could
    /// never catch up from this leader. Hand leadership on to the next
    /// voter (in id order, round the circle), at most once per few election
    /// timeouts, until a leader the lagging member knows leads: ids say
    /// nothing of age (a removed node comes back under its old id).
    fn hand_off_if_a_member_refuses_me(&mut self) {
        let refusers = std::mem::take(&mut self.refused_by);
        let r = &self.raw.raft;
        let conf = r.prs().conf();
        let refusers: Vec<NodeId> = refusers
            .into_iter()
            .filter(|id| conf.voters().contains(*id) || conf.learners().contains(id))
            .collect();
        let cooldown = 5 * u64::try_from(self.cfg.election_ticks).unwrap_or(10);
        if refusers.is_empty()
            || r.lead_transferee.is_some()
            || self.ticks.saturating_sub(self.last_handoff) < cooldown
        {
            return;
        }
        // The next voter after this one in id order, round the circle,
        // that did not refuse it: successive hand-offs visit every voter,
        // so leadership reaches one the refusing member knows, whatever
        // the ids (a re-added node 1 is the newest member, not the oldest).
        let mut voters: Vec<NodeId> = conf.voters().ids().iter().collect();
        voters.sort_unstable();
        let me = self.cfg.id;
        let after = voters.iter().copied().filter(|v| *v > me);
        let before = voters.iter().copied().filter(|v| *v < me);
        let Some(to) = after.chain(before).find(|v| !refusers.contains(v)) else {
            return;
        };
        self.last_handoff = self.ticks;
        tracing::warn!(
            refused_by = ?refusers, to,
            "members that joined before this node do not know it yet: handing leadership to node {to}"
        );
        self.raw.transfer_leader(to);
    }

    fn unstick_snapshots(&mut self) {
        let stuck: Vec<NodeId> = {
            let prs = self.raw.raft.prs();
            let now = self.ticks;
            let in_snapshot: BTreeMap<NodeId, u64> = prs
                .iter()
                .filter(|(_, pr)| pr.state == raft::ProgressState::Snapshot)
                .map(|(id, _)| (*id, self.snapshot_since.get(id).copied().unwrap_or(now)))
                .collect();
            let stuck = in_snapshot
                .iter()
                .filter(|(_, since)| now - **since >= self.snapshot_stuck_ticks())
                .map(|(id, _)| *id)
                .collect();
            self.snapshot_since = in_snapshot;
            stuck
        };
        for id in stuck {
            tracing::warn!(
                peer = id,
                "no word on a snapshot sent long ago: sending again"
            );
            self.report_snapshot(id, false);
        }
    }

    fn snapshot_stuck_ticks(&self) -> u64 {
        let tick = self.cfg.tick.as_millis().max(1);
        u64::try_from(SNAPSHOT_STUCK.as_millis() / tick).unwrap_or(u64::MAX)
    }

    fn send(&mut self, msgs: Vec<Message>) {
        if msgs.is_empty() {
            return;
        }
        for id in self.transport.send(msgs) {
            self.report_snapshot(id, false);
        }
    }

    fn on_ready(&mut self) -> Result<(), String> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut ready = self.raw.ready();
        self.reads.confirmed(ready.take_read_states());
        // Leader messages may leave before the leader's own write.
        self.send(ready.take_messages());
        #[cfg(test)]
        if self.bugs.ack_before_persist {
            self.send(ready.take_persisted_messages());
        }
        if !ready.snapshot().is_empty() {
            let snap = ready.snapshot().clone();
            self.install_snapshot(&snap)?;
        }
        let committed = ready.take_committed_entries();
        self.apply(committed)?;
        let store = self.raw.store().clone();
        if !ready.entries().is_empty() {
            store
                .append(ready.entries())
                .map_err(|e| format!("cannot append to the raft log: {e}"))?;
        }
        if let Some(hs) = ready.hs() {
            store
                .set_hard_state(hs)
                .map_err(|e| format!("cannot write the hard state: {e}"))?;
        }
        // One fsync per ready: the snapshot, entries and hard state above.
        store
            .sync()
            .map_err(|e| format!("cannot flush the raft log: {e}"))?;
        // Votes and append acks: only now that the write is flushed.
        self.send(ready.take_persisted_messages());
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            // Not flushed here: a commit index is learned again from the
            // leader after a crash; the next ready's sync covers it.
            store
                .set_commit(commit)
                .map_err(|e| format!("cannot write the commit index: {e}"))?;
        }
        self.send(light.take_messages());
        let committed = light.take_committed_entries();
        self.apply(committed)?;
        self.raw.advance_apply();
        self.maybe_snapshot()?;
        self.answer_reads();
        Ok(())
    }

    fn install_snapshot(&mut self, snap: &Snapshot) -> Result<(), String> {
        let sm = StateMachine::restore(&snap.data)?;
        crate::metrics::set_snapshot_bytes(snap.data.len());
        self.raw
            .store()
            .apply_snapshot(snap)
            .map_err(|e| format!("cannot install a snapshot: {e}"))?;
        let index = snap.get_metadata().index;
        tracing::info!(
            index,
            cluster = sm.cluster_id(),
            "installed a snapshot from the leader"
        );
        {
            let mut s = self.shared.write().unwrap_or_else(|p| p.into_inner());
            s.sm = sm;
            s.info.applied = index;
            s.info.set_conf(snap.get_metadata().get_conf_state());
        }
        self.last_snapshot = index;
        self.log_bytes = 0;
        crate::metrics::set_log_bytes(0);
        self.refresh_peers();
        self.export_all_targets();
        Ok(())
    }

    /// Applies a committed conf change to raft and the state machine. One
    /// that raft refuses is skipped (identically on every node, as the
    /// conf state is replicated), never a reason to stop: a node that
    /// stopped on it would stop again at every restart.
    fn apply_conf_change(
        &mut self,
        e: &Entry,
        shared: &mut Shared,
        transitions: &mut Vec<Transition>,
    ) -> Result<Result<(), String>, String> {
        let cc = match ConfChange::parse_from_bytes(&e.data) {
            Ok(cc) => cc,
            Err(err) => {
                tracing::error!(index = e.index, error = %err, "skipping a conf change that does not decode");
                return Ok(Err(format!("corrupt conf change: {err}")));
            }
        };
        let member = match cc.get_change_type() {
            ConfChangeType::RemoveNode => None,
            _ => match super::codec::decode::<Member>(&cc.context) {
                Ok(m) => Some(m),
                Err(err) => {
                    tracing::error!(index = e.index, error = %err, "skipping a conf change without a member");
                    return Ok(Err(format!("conf change without a member: {err}")));
                }
            },
        };
        if let Some(member) = &member {
            // A member the state machine refuses (a bad zone or address, an
            // address another member has) is refused by raft too: the two
            // keep the same members.
            let cmd = Command::SetMember {
                id: cc.node_id,
                member: member.clone(),
            };
            if let Err(r) = shared.sm.check(&cmd) {
                tracing::error!(index = e.index, node = cc.node_id, reason = %r, "skipping a conf change the state machine refuses");
                return Ok(Err(r.to_string()));
            }
        }
        if cc.get_change_type() == ConfChangeType::RemoveNode
            && cc.node_id == self.cfg.id
            && self.raw.raft.state == StateRole::Leader
        {
            // Leadership moved back to this node after its removal was
            // proposed. raft-rs would keep a leader without its own progress
            // and panic on its next append: step down first (always safe);
            // the voters left elect a leader among themselves.
            tracing::warn!("this leader's own removal was committed: stepping down");
            let term = self.raw.raft.term;
            self.raw.raft.become_follower(term, raft::INVALID_ID);
        }
        let cs = match self.raw.apply_conf_change(&cc) {
            Ok(cs) => cs,
            Err(err) => {
                tracing::error!(index = e.index, node = cc.node_id, error = %err, "skipping a conf change raft refuses");
                return Ok(Err(format!("raft refused it: {err}")));
            }
        };
        self.raw
            .store()
            .set_conf_state(&cs)
            .map_err(|err| format!("cannot write the conf state: {err}"))?;
        let cmd = match member {
            None => Command::RemoveMember { id: cc.node_id },
            Some(member) => Command::SetMember {
                id: cc.node_id,
                member,
            },
        };
        let result = match shared.sm.apply(&cmd) {
            Ok(t) => {
                transitions.extend(t);
                Ok(())
            }
            Err(r) => Err(r.to_string()),
        };
        // Readers see the members and their roles change together.
        shared.info.set_conf(&cs);
        tracing::info!(
            index = e.index, node = cc.node_id,
            change = ?cc.get_change_type(), voters = ?cs.voters, learners = ?cs.learners,
            "membership changed"
        );
        Ok(result)
    }

    fn apply(&mut self, entries: Vec<Entry>) -> Result<(), String> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut transitions: Vec<Transition> = Vec::new();
        let mut replies: Vec<(u64, Result<u64, MeshError>)> = Vec::new();
        let mut members_changed = false;
        let me = self.cfg.id;
        let nonce = self.cfg.nonce;
        let shared_arc = self.shared.clone();
        let mut bytes = 0u64;
        for e in entries {
            bytes += u64::from(e.compute_size());
            // The lock is taken per entry, so readers never wait for a
            // whole batch of applies.
            let mut shared = shared_arc.write().unwrap_or_else(|p| p.into_inner());
            shared.info.applied = e.index;
            #[cfg(test)]
            self.applied_tap.push((e.index, e.term, e.data.to_vec()));
            let mine = parse_ctx(&e.context)
                .filter(|(id, n, _)| *id == me && *n == nonce)
                .map(|(_, _, seq)| seq);
            let result: Result<(), String> = match e.get_entry_type() {
                EntryType::EntryNormal if e.data.is_empty() => {
                    // A new leader's empty entry.
                    Ok(())
                }
                EntryType::EntryNormal => match decode(&e.data) {
                    Ok(cmd) => match shared.sm.apply_at(
                        &cmd,
                        crate::recovery::incidents::EntryAt {
                            term: e.term,
                            index: e.index,
                        },
                    ) {
                        Ok(t) => {
                            transitions.extend(t);
                            Ok(())
                        }
                        Err(r) => {
                            tracing::debug!(index = e.index, reason = %r, "entry rejected");
                            Err(r.to_string())
                        }
                    },
                    Err(err) => {
                        tracing::error!(
                            index = e.index, error = %err,
                            "skipping an entry that does not decode"
                        );
                        Err(format!("does not decode: {err}"))
                    }
                },
                EntryType::EntryConfChange => {
                    members_changed = true;
                    self.apply_conf_change(&e, &mut shared, &mut transitions)?
                }
                EntryType::EntryConfChangeV2 => {
                    tracing::warn!(index = e.index, "ignoring a joint conf change (not used)");
                    Err("joint conf changes are not used".into())
                }
            };
            if let Some(seq) = mine {
                replies.push((seq, result.map(|()| e.index).map_err(MeshError::Rejected)));
            }
        }
        self.log_bytes += bytes;
        crate::metrics::applied_bytes(bytes, self.log_bytes);
        for (seq, r) in replies {
            if let Some(reply) = self.pending.remove(&seq) {
                let _ = reply.send(r);
            }
        }
        if members_changed {
            self.refresh_peers();
            self.step_down_if_removed();
            let conf = self.raw.raft.prs().conf();
            let member =
                conf.voters().contains(self.cfg.id) || conf.learners().contains(&self.cfg.id);
            if !member && self.raw.raft.raft_log.applied >= self.raw.raft.raft_log.committed {
                tracing::warn!(
                    "this node was removed from the cluster: it no longer votes or leads; stop it \
                     (to bring it back, clear its data dir and `faxictl members add` it)"
                );
            }
        }
        for t in &transitions {
            crate::metrics::set_target_state(&t.target, t.to);
            if t.down_zones.is_empty() {
                tracing::info!(target_name = %t.target, from = t.from.as_str(), to = t.to.as_str(), "agreed state changed");
            } else {
                tracing::warn!(
                    target_name = %t.target, from = t.from.as_str(), to = t.to.as_str(),
                    down_zones = %t.down_zones.join(","), "agreed state changed"
                );
            }
        }
        Ok(())
    }

    /// A leader whose own removal was committed hands leadership to the
    /// most caught-up voter at once (raft-rs would otherwise keep it in
    /// charge, dropping every proposal).
    fn step_down_if_removed(&mut self) {
        let r = &self.raw.raft;
        if r.state != StateRole::Leader || r.prs().conf().voters().contains(self.cfg.id) {
            return;
        }
        let best = r
            .prs()
            .conf()
            .voters()
            .ids()
            .iter()
            .filter(|id| *id != self.cfg.id)
            .max_by_key(|id| (r.prs().get(*id).map_or(0, |pr| pr.matched), *id));
        if let Some(to) = best {
            tracing::warn!(to, "this leader was removed: handing leadership over");
            self.raw.transfer_leader(to);
        }
    }

    // No sync here. The snapshot taken here and the compaction after it
    // acknowledge nothing to a peer, and are made of applied entries,
    // which raft-rs hands out only once flushed. The log recovers writes in
    // order, so a crash that loses them leaves the log they were made from
    // (re-applied at restart), and the next ready's sync makes them
    // durable. The same holds for the light ready's commit index: a lost
    // one is learned again from the leader. (A snapshot installed from the
    // leader is written before its ready's sync, so it is flushed before
    // the ack goes out.)
    fn maybe_snapshot(&mut self) -> Result<(), String> {
        let applied = self.raw.raft.raft_log.applied;
        let requested = self.raw.store().take_snapshot_request();
        let due = applied >= self.last_snapshot.saturating_add(self.cfg.snapshot_entries)
            || self.log_bytes >= self.cfg.snapshot_bytes;
        if applied <= self.last_snapshot || !(requested || due) {
            return Ok(());
        }
        let data = self.read().sm.snapshot()?;
        crate::metrics::set_snapshot_bytes(data.len());
        let conf: ConfState = self.raw.raft.prs().conf().to_conf_state();
        let store = self.raw.store().clone();
        // Neither needs its own fsync: a snapshot or a compaction lost in a
        // crash is made again; both are atomic, and the log they describe
        // is already durable.
        store
            .create_snapshot(applied, &conf, data)
            .map_err(|e| format!("cannot write a snapshot: {e}"))?;
        store
            .compact(applied)
            .map_err(|e| format!("cannot compact the log: {e}"))?;
        tracing::debug!(
            index = applied,
            requested,
            entries = applied - self.last_snapshot,
            log_bytes = self.log_bytes,
            "snapshot taken, log compacted"
        );
        self.last_snapshot = applied;
        self.log_bytes = 0;
        crate::metrics::snapshot_taken();
        Ok(())
    }

    fn read(&self) -> RwLockReadGuard<'_, Shared> {
        self.shared.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Points the transport at every member: the replicated member list
    /// once this node has state; before that (it waits to be sent one),
    /// the config's peers. A config that disagrees with the replicated
    /// membership is reported, never used over it.
    fn refresh_peers(&mut self) {
        let (me, book, mismatch) = {
            let s = self.read();
            let cluster_id = s.sm.cluster_id().to_owned();
            let book: BTreeMap<NodeId, PeerAddr> = if cluster_id.is_empty() {
                self.cfg
                    .peers
                    .iter()
                    .map(|(id, m)| {
                        (
                            *id,
                            PeerAddr {
                                addr: m.addr.clone(),
                                instance: 0,
                            },
                        )
                    })
                    .collect()
            } else {
                s.sm.members()
                    .iter()
                    .map(|(id, m)| {
                        (
                            *id,
                            PeerAddr {
                                addr: m.addr.clone(),
                                instance: m.instance,
                            },
                        )
                    })
                    .collect()
            };
            let mismatch = if cluster_id.is_empty() {
                Vec::new()
            } else {
                config_mismatch(&self.cfg.peers, s.sm.members())
            };
            (
                Identity {
                    cluster_id,
                    id: self.cfg.id,
                    instance: self.instance,
                    bound_at: match s.sm.members().get(&self.cfg.id) {
                        Some(m) if m.instance == self.instance && self.bound_at > 0 => {
                            self.bound_at
                        }
                        Some(m) if m.instance == self.instance => s.info.applied.max(1),
                        _ => 0,
                    },
                },
                book,
                mismatch,
            )
        };
        if mismatch != self.last_mismatch {
            for m in &mismatch {
                tracing::warn!(problem = %m, "cluster.peers in this node's config disagrees with the cluster's membership (the membership is used; `faxictl members` changes it)");
            }
            self.last_mismatch = mismatch;
        }
        self.bound_at = me.bound_at;
        let mut book = book;
        book.remove(&self.cfg.id);
        for id in self.transport.set_peers(&me, book) {
            self.report_snapshot(id, false);
        }
    }

    fn export_all_targets(&self) {
        let s = self.read();
        for (name, a) in s.sm.agreed() {
            crate::metrics::set_target_state(name, a.state);
        }
    }

    /// Publishes raft status and wakes watchers when anything changed.
    fn publish(&mut self) {
        let r = &self.raw.raft;
        let conf = r.prs().conf();
        let mut voters: Vec<NodeId> = conf.voters().ids().iter().collect();
        voters.sort_unstable();
        let mut learners: Vec<NodeId> = conf.learners().iter().copied().collect();
        learners.sort_unstable();
        let role = if voters.contains(&self.cfg.id) {
            role_str(r.state)
        } else if learners.contains(&self.cfg.id) {
            "learner"
        } else if r.raft_log.applied == 0 {
            "waiting"
        } else {
            "not a member"
        };
        let cluster_id = self.read().sm.cluster_id().to_owned();
        let info = RaftInfo {
            id: self.cfg.id,
            leader: r.leader_id,
            term: r.term,
            commit: r.raft_log.committed,
            applied: r.raft_log.applied,
            role,
            voters,
            learners,
            reachable: self.transport.reachable(),
            cluster_id,
            instance: self.instance,
        };
        if info == self.last_info {
            return;
        }
        if info.leader != self.last_info.leader || info.term != self.last_info.term {
            if info.leader != raft::INVALID_ID {
                tracing::info!(
                    term = info.term,
                    leader = info.leader,
                    role = info.role,
                    "leader known"
                );
            } else {
                tracing::info!(term = info.term, "no leader");
            }
        }
        crate::metrics::set_raft(&info);
        self.last_info = info.clone();
        self.shared.write().unwrap_or_else(|p| p.into_inner()).info = info;
        self.version.send_modify(|v| *v += 1);
    }
}

/// How a node's configured peers differ from the replicated membership.
fn config_mismatch(peers: &[(NodeId, Member)], members: &BTreeMap<NodeId, Member>) -> Vec<String> {
    let mut out = Vec::new();
    for (id, p) in peers {
        match members.get(id) {
            None => out.push(format!("node {id} is in cluster.peers but not a member")),
            Some(m) if m.zone != p.zone || m.addr != p.addr => out.push(format!(
                "node {id}: cluster.peers says {} at {}, the cluster says {} at {}",
                p.zone, p.addr, m.zone, m.addr
            )),
            Some(_) => {}
        }
    }
    for id in members.keys() {
        if !peers.iter().any(|(p, _)| p == id) {
            out.push(format!("node {id} is a member but not in cluster.peers"));
        }
    }
    out
}

#[cfg(test)]
mod inbox_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_full_inbox_refuses_at_once_with_busy_and_nothing_blocks() {
        // The inbox's size is the only thing that differs from a node's
        // (INBOX); nothing drains it, as when the raft thread is stalled.
        let size = 8;
        let (tx, _rx) = std::sync::mpsc::sync_channel(size);
        let (_v, version) = watch::channel(0);
        let mesh = Mesh {
            tx,
            stopping: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            shared: Arc::new(RwLock::new(Shared::default())),
            version,
        };
        for _ in 0..size {
            mesh.send(Input::Unreachable(2)).unwrap();
        }
        assert_eq!(mesh.send(Input::Unreachable(2)), Err(MeshError::Busy));
    }
}
