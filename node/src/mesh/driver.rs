//! The Raft driver: one thread owns raft-rs's `RawNode`, the sled log and
//! the replicated state machine, and runs raft-rs's documented loop:
//! tick or step → ready → send what may go out at once → install a snapshot
//! → apply committed entries → persist entries and hard state (flushed) →
//! send what needed the persist → advance → apply and send what the light
//! ready brings.
//!
//! Architecture invariants:
//! - only this thread touches the `RawNode`, the storage and (for writes) the
//!   state machine; async code talks to it through a bounded channel;
//! - sled is reached from this thread only, never from an async worker;
//! - a node acknowledges (votes, append responses) only what is flushed: the
//!   "persisted messages" leave after the write returns;
//! - the state machine sees committed entries only, in log order.

use std::collections::{BTreeMap, HashMap};
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
    /// Start with an empty log and wait for the leader (a node added at
    /// runtime), instead of bootstrapping from `peers`.
    pub join: bool,
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
}

/// A conf change to propose.
#[derive(Debug, Clone)]
pub enum MemberChange {
    /// Add the node, or replace its zone and address.
    Set(NodeId, Member),
    /// Remove the node.
    Remove(NodeId),
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
    /// A snapshot was (or was not) delivered.
    SnapshotDone(NodeId, bool),
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

/// Where the driver's outgoing raft messages go: the tonic transport in a
/// node, an in-memory network in the simulator.
pub trait Outbox {
    /// Queues messages; never blocks.
    fn send(&mut self, msgs: Vec<Message>);
    /// Sets every peer's address.
    fn set_peers(&mut self, book: BTreeMap<NodeId, String>);
    /// Whether the last message to each peer got through.
    fn reachable(&self) -> BTreeMap<NodeId, bool>;
}

impl Outbox for Transport {
    fn send(&mut self, msgs: Vec<Message>) {
        Transport::send(self, msgs);
    }
    fn set_peers(&mut self, book: BTreeMap<NodeId, String>) {
        Transport::set_peers(self, book);
    }
    fn reachable(&self) -> BTreeMap<NodeId, bool> {
        Transport::reachable(self)
    }
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
    last_info: RaftInfo,
    stopping: Arc<std::sync::atomic::AtomicBool>,
    /// Read-index requests in flight.
    reads: Reads,
}

/// The context that marks an entry as ours: proposer id and sequence.
fn proposal_ctx(id: NodeId, seq: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(16);
    v.extend_from_slice(&id.to_be_bytes());
    v.extend_from_slice(&seq.to_be_bytes());
    v
}

fn parse_ctx(ctx: &[u8]) -> Option<(NodeId, u64)> {
    let id: [u8; 8] = ctx.get(..8)?.try_into().ok()?;
    let seq: [u8; 8] = ctx.get(8..16)?.try_into().ok()?;
    Some((u64::from_be_bytes(id), u64::from_be_bytes(seq)))
}

/// Encodes a command as an entry's data.
pub fn encode(cmd: &Command) -> Result<Vec<u8>, MeshError> {
    serde_json::to_vec(cmd).map_err(|e| MeshError::Invalid(format!("cannot encode: {e}")))
}

fn decode(data: &[u8]) -> Result<Command, String> {
    serde_json::from_slice(data).map_err(|e| e.to_string())
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
    /// Opens the state from `storage`, bootstrapping a fresh log from the
    /// config's peers (unless joining).
    pub fn open(
        cfg: DriverConfig,
        storage: SledStorage,
        transport: O,
        random_election: bool,
    ) -> Result<Self, StartError> {
        let serr = |e: raft::Error| StartError::Storage(e.to_string());
        let fresh = storage
            .initial_state()
            .map_err(serr)?
            .conf_state
            .voters
            .is_empty()
            && storage.last_index().map_err(serr)? == 0;
        if fresh && !cfg.join {
            // Every bootstrap member starts from the same snapshot at index 1:
            // the members and an empty state. A node added later has no index
            // 1 and so is sent a snapshot: every node applies the same history.
            let sm = StateMachine::new(cfg.peers.clone());
            let mut snap = Snapshot::default();
            let meta = snap.mut_metadata();
            meta.index = 1;
            meta.term = 1;
            meta.mut_conf_state().voters = cfg.peers.iter().map(|(id, _)| *id).collect();
            snap.data = sm.snapshot().map_err(StartError::Storage)?.into();
            storage.apply_snapshot(&snap).map_err(serr)?;
        }
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
        let raft_cfg = raft::Config {
            id: cfg.id,
            election_tick: cfg.election_ticks,
            heartbeat_tick: cfg.heartbeat_ticks,
            // Election timeouts are drawn from [election, 1.4 × election)
            // ticks rather than raft-rs's default [election, 2 × election):
            // with 100 ms × 10 a follower campaigns at most 1.3 s after the
            // leader's last heartbeat, leaving room for pre-vote, vote and
            // the first append within the 1.5 s failover bar.
            min_election_tick: cfg.election_ticks,
            max_election_tick: if random_election {
                cfg.election_ticks + (cfg.election_ticks * 2 / 5).max(1)
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
        let mut core = Core {
            cfg,
            raw,
            transport,
            shared: Arc::new(RwLock::new(Shared {
                sm,
                ..Shared::default()
            })),
            version,
            pending: HashMap::new(),
            seq: 0,
            last_snapshot: applied,
            last_info: RaftInfo::default(),
            stopping: Arc::default(),
            reads: Reads::default(),
        };
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

    /// One raft tick; proposals whose caller gave up are forgotten.
    fn tick(&mut self) {
        self.raw.tick();
        self.pending.retain(|_, r| !r.is_closed());
        self.tick_reads();
    }

    fn fail_pending(&mut self) {
        for (_, r) in self.pending.drain() {
            let _ = r.send(Err(MeshError::Stopped));
        }
        self.reads.fail_all(&MeshError::Stopped);
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Raft(m) => {
                if m.from == self.raw.raft.leader_id
                    && matches!(
                        m.get_msg_type(),
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
                match self.raw.propose(proposal_ctx(self.cfg.id, self.seq), data) {
                    Ok(()) => {
                        self.pending.insert(self.seq, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(MeshError::Dropped(e.to_string())));
                    }
                }
            }
            Input::Member(change, reply) => {
                if self.raw.raft.leader_id == raft::INVALID_ID {
                    let _ = reply.send(Err(MeshError::NoLeader));
                    return;
                }
                let mut cc = ConfChange::default();
                match &change {
                    MemberChange::Set(id, member) => {
                        cc.set_change_type(ConfChangeType::AddNode);
                        cc.node_id = *id;
                        match serde_json::to_vec(member) {
                            Ok(b) => cc.context = b.into(),
                            Err(e) => {
                                let _ = reply.send(Err(MeshError::Invalid(e.to_string())));
                                return;
                            }
                        }
                    }
                    MemberChange::Remove(id) => {
                        cc.set_change_type(ConfChangeType::RemoveNode);
                        cc.node_id = *id;
                    }
                }
                self.seq += 1;
                match self
                    .raw
                    .propose_conf_change(proposal_ctx(self.cfg.id, self.seq), cc)
                {
                    Ok(()) => {
                        self.pending.insert(self.seq, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(MeshError::Dropped(e.to_string())));
                    }
                }
            }
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
            Input::SnapshotDone(id, ok) => self.raw.report_snapshot(
                id,
                if ok {
                    raft::SnapshotStatus::Finish
                } else {
                    raft::SnapshotStatus::Failure
                },
            ),
            Input::ReadIndex(reply) => self.start_read(reply),
        }
    }

    fn on_ready(&mut self) -> Result<(), String> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut ready = self.raw.ready();
        self.reads.confirmed(ready.take_read_states());
        // Leader messages may leave before the leader's own write.
        self.transport.send(ready.take_messages());
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
        // Votes and append acks: only now that the write is flushed.
        self.transport.send(ready.take_persisted_messages());
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            store
                .set_commit(commit)
                .map_err(|e| format!("cannot write the commit index: {e}"))?;
        }
        self.transport.send(light.take_messages());
        let committed = light.take_committed_entries();
        self.apply(committed)?;
        self.raw.advance_apply();
        self.maybe_snapshot()?;
        self.answer_reads();
        Ok(())
    }

    fn install_snapshot(&mut self, snap: &Snapshot) -> Result<(), String> {
        let sm = StateMachine::restore(&snap.data)?;
        self.raw
            .store()
            .apply_snapshot(snap)
            .map_err(|e| format!("cannot install a snapshot: {e}"))?;
        let index = snap.get_metadata().index;
        tracing::info!(index, "installed a snapshot from the leader");
        {
            let mut s = self.shared.write().unwrap_or_else(|p| p.into_inner());
            s.sm = sm;
            s.info.applied = index;
        }
        self.last_snapshot = index;
        self.refresh_peers();
        self.export_all_targets();
        Ok(())
    }

    fn apply(&mut self, entries: Vec<Entry>) -> Result<(), String> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut transitions: Vec<Transition> = Vec::new();
        let mut replies: Vec<(u64, u64)> = Vec::new();
        let mut members_changed = false;
        {
            for e in entries {
                // The lock is taken per entry, so readers never wait for a
                // whole batch of applies.
                let mut shared = self.shared.write().unwrap_or_else(|p| p.into_inner());
                shared.info.applied = e.index;
                let mine = parse_ctx(&e.context).filter(|(id, _)| *id == self.cfg.id);
                match e.get_entry_type() {
                    EntryType::EntryNormal => {
                        if e.data.is_empty() {
                            // A new leader's empty entry.
                            continue;
                        }
                        match decode(&e.data) {
                            Ok(cmd) => match shared.sm.apply(&cmd) {
                                Ok(t) => transitions.extend(t),
                                Err(r) => {
                                    tracing::debug!(index = e.index, reason = %r, "entry rejected")
                                }
                            },
                            Err(err) => tracing::error!(
                                index = e.index, error = %err,
                                "skipping an entry that does not decode"
                            ),
                        }
                    }
                    EntryType::EntryConfChange => {
                        let cc = ConfChange::parse_from_bytes(&e.data).map_err(|err| {
                            format!("entry {}: corrupt conf change: {err}", e.index)
                        })?;
                        let cs = self
                            .raw
                            .apply_conf_change(&cc)
                            .map_err(|err| format!("entry {}: conf change: {err}", e.index))?;
                        self.raw
                            .store()
                            .set_conf_state(&cs)
                            .map_err(|err| format!("cannot write the conf state: {err}"))?;
                        let cmd = match cc.get_change_type() {
                            ConfChangeType::RemoveNode => {
                                Some(Command::RemoveMember { id: cc.node_id })
                            }
                            _ => serde_json::from_slice::<Member>(&cc.context)
                                .ok()
                                .map(|member| Command::SetMember {
                                    id: cc.node_id,
                                    member,
                                }),
                        };
                        if let Some(cmd) = cmd {
                            match shared.sm.apply(&cmd) {
                                Ok(t) => transitions.extend(t),
                                Err(r) => {
                                    tracing::debug!(index = e.index, reason = %r, "conf entry rejected")
                                }
                            }
                        }
                        tracing::info!(
                            index = e.index, node = cc.node_id,
                            change = ?cc.get_change_type(), voters = ?cs.voters,
                            "membership changed"
                        );
                        members_changed = true;
                    }
                    EntryType::EntryConfChangeV2 => {
                        tracing::warn!(index = e.index, "ignoring a joint conf change (not used)");
                    }
                }
                if let Some((_, seq)) = mine {
                    replies.push((seq, e.index));
                }
            }
        }
        for (seq, index) in replies {
            if let Some(r) = self.pending.remove(&seq) {
                let _ = r.send(Ok(index));
            }
        }
        if members_changed {
            self.refresh_peers();
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

    fn maybe_snapshot(&mut self) -> Result<(), String> {
        let applied = self.raw.raft.raft_log.applied;
        if applied < self.last_snapshot + self.cfg.snapshot_entries {
            return Ok(());
        }
        let data = self.read().sm.snapshot()?;
        let conf: ConfState = self.raw.raft.prs().conf().to_conf_state();
        let store = self.raw.store().clone();
        store
            .create_snapshot(applied, &conf, data)
            .map_err(|e| format!("cannot write a snapshot: {e}"))?;
        store
            .compact(applied)
            .map_err(|e| format!("cannot compact the log: {e}"))?;
        self.last_snapshot = applied;
        tracing::debug!(index = applied, "snapshot taken, log compacted");
        Ok(())
    }

    fn read(&self) -> RwLockReadGuard<'_, Shared> {
        self.shared.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Points the transport at every member's address: the config's peers,
    /// overridden by the replicated member list.
    fn refresh_peers(&mut self) {
        let mut book: BTreeMap<NodeId, String> = self
            .cfg
            .peers
            .iter()
            .map(|(id, m)| (*id, m.addr.clone()))
            .collect();
        for (id, m) in self.read().sm.members() {
            book.insert(*id, m.addr.clone());
        }
        book.remove(&self.cfg.id);
        self.transport.set_peers(book);
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
        } else {
            "not a member"
        };
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
