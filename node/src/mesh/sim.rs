//! A deterministic simulation of the mesh: each node is the real driver core
//! (raft-rs's `RawNode`, the sled log, the state machine), stepped by hand
//! on a simulated clock; the network is a seeded queue that delays,
//! reorders, loses and partitions messages (both ways or one way); nodes
//! crash and restart from their log. Every run is replayable from its seed:
//! `FAXI_SIM_SEED=1234 cargo test -p faxi-watchdog sim::` reruns one.
//!
//! Checked after every step: at most one leader per term; a committed entry
//! never changes (same term and bytes on every node, before and after
//! restarts); DOWN only when DOWN zones reach the zone quorum. Checked at the
//! end, after healing: every node converges to the same commit, the same
//! leader and byte-identical state.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use raft::eraftpb::Message;
use raft::{StateRole, Storage as _};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::driver::{Core, DriverConfig, Input, Outbox, cfg_jitter};
use super::state::{Command, Member, NodeId, Seen, State};
use super::storage::SledStorage;

#[derive(Debug, Default)]
struct SimOutbox {
    out: Vec<Message>,
}

impl Outbox for SimOutbox {
    fn send(&mut self, msgs: Vec<Message>) {
        self.out.extend(msgs);
    }
    fn set_peers(&mut self, _book: BTreeMap<NodeId, String>) {}
    fn reachable(&self) -> BTreeMap<NodeId, bool> {
        BTreeMap::new()
    }
}

struct SimNode {
    id: NodeId,
    cfg: DriverConfig,
    storage: SledStorage,
    core: Option<Core<SimOutbox>>,
    /// What this node's probes say about the target.
    verdict: State,
    next_tick_ms: u64,
    restart_at_ms: u64,
    /// Highest index whose entry this node's log was checked against.
    checked: u64,
}

/// How rough the network and the nodes are in one run.
#[derive(Debug, Clone, Copy)]
struct Faults {
    loss: f64,
    max_delay_ms: u64,
    partition_rate: f64,
    crash_rate: f64,
}

struct Sim {
    seed: u64,
    rng: StdRng,
    now_ms: u64,
    nodes: Vec<SimNode>,
    /// (deliver at, sequence, message): the sequence keeps ties in send order.
    in_flight: BTreeMap<(u64, u64), Message>,
    seq: u64,
    /// Directed links that drop everything.
    cut: BTreeSet<(NodeId, NodeId)>,
    faults: Faults,
    leaders: BTreeMap<u64, NodeId>,
    committed: BTreeMap<u64, (u64, Vec<u8>)>,
    zones: usize,
}

const TICK_MS: u64 = 100;
const STEP_MS: u64 = 10;
const VALID_FOR_MS: u64 = 3_000;

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = StdRng::seed_from_u64(seed);
        let n = if rng.random_bool(0.5) { 3 } else { 5 };
        let zone_names = ["zone-a", "zone-b", "zone-c"];
        let peers: Vec<(NodeId, Member)> = (0..n)
            .map(|i| {
                (
                    i as u64 + 1,
                    Member {
                        zone: zone_names[i % 3].to_owned(),
                        addr: format!("sim:{}", i + 1),
                    },
                )
            })
            .collect();
        let faults = Faults {
            loss: rng.random_range(0.0..0.2),
            max_delay_ms: rng.random_range(2..150),
            partition_rate: rng.random_range(0.0..0.01),
            crash_rate: rng.random_range(0.0..0.003),
        };
        let snapshot_entries = rng.random_range(20..200);
        let nodes = peers
            .iter()
            .map(|(id, _)| {
                let cfg = DriverConfig {
                    id: *id,
                    peers: peers.clone(),
                    tick: std::time::Duration::from_millis(TICK_MS),
                    election_ticks: 10,
                    heartbeat_ticks: 1,
                    snapshot_entries,
                    join: false,
                };
                let storage = SledStorage::simulated(*id).unwrap();
                let core = Core::open(
                    cfg.clone(),
                    storage.clone(),
                    SimOutbox::default(),
                    cfg_jitter::FIXED,
                )
                .unwrap();
                SimNode {
                    id: *id,
                    cfg,
                    storage,
                    core: Some(core),
                    verdict: State::Up,
                    next_tick_ms: rng.random_range(0..TICK_MS),
                    restart_at_ms: 0,
                    checked: 1,
                }
            })
            .collect();
        Sim {
            seed,
            rng,
            now_ms: 1_000_000,
            nodes,
            in_flight: BTreeMap::new(),
            seq: 0,
            cut: BTreeSet::new(),
            faults,
            leaders: BTreeMap::new(),
            committed: BTreeMap::new(),
            zones: 3,
        }
    }

    fn fail(&self, what: String) -> ! {
        panic!(
            "seed {}: {what} (rerun: FAXI_SIM_SEED={} cargo test -p faxi-watchdog sim::)",
            self.seed, self.seed
        );
    }

    fn index(&self, id: NodeId) -> usize {
        (id - 1) as usize
    }

    /// Node `id`'s commit index (it must be up).
    fn commit(&self, id: NodeId) -> u64 {
        self.nodes[self.index(id)]
            .core
            .as_ref()
            .map_or(0, |c| c.raw.raft.raft_log.committed)
    }

    /// Moves what a node sent into the network.
    fn collect(&mut self, i: usize) {
        let Some(core) = self.nodes[i].core.as_mut() else {
            return;
        };
        let mut out = std::mem::take(&mut core.outbox().out);
        // raft-rs walks its peers in hash order: sort for a replayable run.
        out.sort_by_key(|m| m.to);
        for m in out {
            let delay = self.rng.random_range(1..=self.faults.max_delay_ms);
            self.seq += 1;
            self.in_flight.insert((self.now_ms + delay, self.seq), m);
        }
    }

    fn run_core(&mut self, i: usize, inputs: Vec<Input>, tick: bool) {
        let Some(core) = self.nodes[i].core.as_mut() else {
            return;
        };
        if let Err(e) = core.step(inputs, tick) {
            self.fail(format!("node {}: {e}", i + 1));
        }
        self.collect(i);
    }

    fn step(&mut self, faults_on: bool) {
        self.now_ms += STEP_MS;
        // Deliver what is due.
        let due: Vec<(u64, u64)> = self
            .in_flight
            .range(..(self.now_ms + 1, 0))
            .map(|(k, _)| *k)
            .collect();
        let mut inbox: BTreeMap<usize, Vec<Input>> = BTreeMap::new();
        for k in due {
            let m = self.in_flight.remove(&k).unwrap();
            let to = self.index(m.to);
            let delivered = !self.rng.random_bool(self.faults.loss)
                && !self.cut.contains(&(m.from, m.to))
                && to < self.nodes.len()
                && self.nodes[to].core.is_some();
            // As the transport does: the sender hears whether a snapshot
            // got through (a gRPC call either returns or fails).
            if m.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot {
                let from = self.index(m.from);
                inbox
                    .entry(from)
                    .or_default()
                    .push(Input::SnapshotDone(m.to, delivered));
            }
            if delivered {
                inbox.entry(to).or_default().push(Input::Raft(Box::new(m)));
            }
        }
        for i in 0..self.nodes.len() {
            let inputs = inbox.remove(&i).unwrap_or_default();
            let tick = self.now_ms >= self.nodes[i].next_tick_ms;
            if tick {
                // A tick every 100 ms, give or take: nodes' clocks drift apart.
                let jitter = self.rng.random_range(0..=30);
                self.nodes[i].next_tick_ms = self.now_ms + TICK_MS - 15 + jitter;
            }
            if !inputs.is_empty() || tick {
                self.run_core(i, inputs, tick);
            }
        }
        // The world: a zone or a node changes its mind about the target.
        if self.rng.random_bool(0.01) {
            let zone = self.rng.random_range(0..self.zones);
            let v = if self.rng.random_bool(0.5) {
                State::Down
            } else {
                State::Up
            };
            for (i, n) in self.nodes.iter_mut().enumerate() {
                if i % 3 == zone {
                    n.verdict = v;
                }
            }
        }
        if self.rng.random_bool(0.005) {
            let i = self.rng.random_range(0..self.nodes.len());
            self.nodes[i].verdict = if self.nodes[i].verdict == State::Down {
                State::Up
            } else {
                State::Down
            };
        }
        // Observations: on change and as a refresh, as the proposer does.
        for i in 0..self.nodes.len() {
            if self.nodes[i].core.is_none() || !self.rng.random_bool(0.03) {
                continue;
            }
            let cmd = Command::Observe {
                node: self.nodes[i].id,
                at_ms: self.now_ms,
                valid_for_ms: VALID_FOR_MS,
                seen: vec![Seen {
                    target: "t".into(),
                    verdict: self.nodes[i].verdict,
                    latency_us: 1000,
                    error: None,
                }],
            };
            let (tx, _rx) = tokio::sync::oneshot::channel();
            self.run_core(i, vec![Input::Propose(cmd, tx)], false);
        }
        if faults_on {
            self.faults_step();
        }
        // Restarts.
        for i in 0..self.nodes.len() {
            if self.nodes[i].core.is_none() && self.now_ms >= self.nodes[i].restart_at_ms {
                self.restart(i);
            }
        }
        self.check();
    }

    fn restart(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        match Core::open(
            n.cfg.clone(),
            n.storage.clone(),
            SimOutbox::default(),
            cfg_jitter::FIXED,
        ) {
            Ok(c) => n.core = Some(c),
            Err(e) => self.fail(format!("node {} cannot restart: {e}", i + 1)),
        }
    }

    fn faults_step(&mut self) {
        let n = self.nodes.len() as u64;
        if self.rng.random_bool(self.faults.partition_rate) {
            match self.rng.random_range(0..4) {
                // Isolate a node both ways.
                0 => {
                    let a = self.rng.random_range(1..=n);
                    for b in 1..=n {
                        if a != b {
                            self.cut.insert((a, b));
                            self.cut.insert((b, a));
                        }
                    }
                }
                // A one-way link.
                1 => {
                    let a = self.rng.random_range(1..=n);
                    let b = self.rng.random_range(1..=n);
                    if a != b {
                        self.cut.insert((a, b));
                    }
                }
                // Cut a zone off from the rest.
                2 => {
                    let z = self.rng.random_range(0..self.zones as u64);
                    for a in 1..=n {
                        for b in 1..=n {
                            if ((a - 1) % 3 == z) != ((b - 1) % 3 == z) {
                                self.cut.insert((a, b));
                            }
                        }
                    }
                }
                _ => self.cut.clear(),
            }
        }
        if self.rng.random_bool(self.faults.crash_rate) {
            let i = self.rng.random_range(0..self.nodes.len());
            if self.nodes[i].core.is_some() {
                // kill -9: the core and everything in memory go; the log stays.
                self.nodes[i].core = None;
                let keep = self
                    .rng
                    .random_range(0..=self.nodes[i].storage.pending_writes());
                self.nodes[i].storage = self.nodes[i].storage.crash(keep).unwrap();
                self.nodes[i].restart_at_ms = self.now_ms + self.rng.random_range(200..3_000);
            }
        }
    }

    fn check(&mut self) {
        let quorum = self.zones / 2 + 1;
        for i in 0..self.nodes.len() {
            let Some(core) = self.nodes[i].core.as_ref() else {
                continue;
            };
            let r = &core.raw.raft;
            let (leading, term, id, commit) = (
                r.state == StateRole::Leader,
                r.term,
                r.id,
                r.raft_log.committed,
            );
            if leading {
                let prev = *self.leaders.entry(term).or_insert(id);
                if prev != id {
                    self.fail(format!("two leaders in term {term}: {prev} and {id}"));
                }
            }
            // Committed entries: the same everywhere, forever.
            let first = self.nodes[i].storage.first_index().unwrap_or(1);
            let from = (self.nodes[i].checked + 1).max(first);
            for idx in from..=commit {
                let Ok(es) = self.nodes[i].storage.entries(
                    idx,
                    idx + 1,
                    None,
                    raft::GetEntriesContext::empty(false),
                ) else {
                    continue;
                };
                let Some(e) = es.first() else { continue };
                let got = (e.term, e.data.to_vec());
                match self.committed.get(&idx) {
                    Some(want) if *want != got => self.fail(format!(
                        "node {}: committed entry {idx} changed (term {} vs {})",
                        i + 1,
                        got.0,
                        want.0
                    )),
                    Some(_) => {}
                    None => {
                        self.committed.insert(idx, got);
                    }
                }
            }
            self.nodes[i].checked = self.nodes[i].checked.max(commit);
            // DOWN only with a zone quorum seeing DOWN.
            let Some(core) = self.nodes[i].core.as_ref() else {
                continue;
            };
            let s = core.shared();
            if let Some(a) = s.sm.agreed().get("t")
                && a.state == State::Down
            {
                let down = a.zones.values().filter(|z| **z == State::Down).count();
                if down < quorum {
                    self.fail(format!(
                        "node {}: DOWN with {down} DOWN zone(s) of {}",
                        i + 1,
                        self.zones
                    ));
                }
            }
        }
    }

    /// Heals everything and runs until every node agrees, or fails.
    fn converge(&mut self) {
        self.cut.clear();
        self.faults.loss = 0.0;
        for i in 0..self.nodes.len() {
            if self.nodes[i].core.is_none() {
                self.restart(i);
            }
        }
        for _ in 0..3_000 {
            self.step(false);
            if self.converged().is_ok() {
                return;
            }
        }
        let why = self.converged().err().unwrap_or_default();
        self.fail(format!("no convergence 30 s after healing: {why}"));
    }

    fn converged(&self) -> Result<(), String> {
        let mut seen = Vec::new();
        for n in &self.nodes {
            let core = n.core.as_ref().ok_or("a node is down")?;
            let r = &core.raw.raft;
            let s = core.shared();
            seen.push((
                r.leader_id,
                r.term,
                r.raft_log.committed,
                r.raft_log.applied,
                s.sm.snapshot().map_err(|e| e.clone())?,
            ));
        }
        let first = &seen[0];
        if first.0 == 0 {
            return Err("no leader".into());
        }
        for (i, s) in seen.iter().enumerate() {
            if (s.0, s.1, s.2, s.3) != (first.0, first.1, first.2, first.2) {
                return Err(format!(
                    "node {}: leader {} term {} commit {} applied {} vs node 1: leader {} term {} commit {}",
                    i + 1,
                    s.0,
                    s.1,
                    s.2,
                    s.3,
                    first.0,
                    first.1,
                    first.2
                ));
            }
            if s.4 != first.4 {
                return Err(format!("node {}: state differs from node 1's", i + 1));
            }
        }
        Ok(())
    }
}

fn run(seed: u64, steps: usize) -> Sim {
    let mut sim = Sim::new(seed);
    for _ in 0..steps {
        sim.step(true);
    }
    sim.converge();
    sim
}

fn seeds() -> Vec<u64> {
    if let Ok(s) = std::env::var("FAXI_SIM_SEED") {
        return s.split(',').filter_map(|x| x.trim().parse().ok()).collect();
    }
    let runs: u64 = std::env::var("FAXI_SIM_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    (1..=runs).collect()
}

#[test]
fn seeded_fault_runs_keep_raft_and_agreement_safe_and_converge() {
    let mut elections = 0;
    let mut commits = 0;
    for seed in seeds() {
        let sim = run(seed, 1_500);
        elections += sim.leaders.len();
        commits += sim.committed.len();
    }
    // The runs did something: leaders came and went, entries committed.
    assert!(elections > 0 && commits > 0);
}

#[test]
fn the_same_seed_replays_the_same_run() {
    let a = run(7, 800);
    let b = run(7, 800);
    assert_eq!(a.committed, b.committed);
    assert_eq!(a.leaders, b.leaders);
}

#[test]
fn a_zone_cut_off_from_its_peers_commits_nothing() {
    let mut sim = Sim::new(3);
    sim.faults = Faults {
        loss: 0.0,
        max_delay_ms: 5,
        partition_rate: 0.0,
        crash_rate: 0.0,
    };
    while sim.converged().is_err() {
        sim.step(false);
    }
    // Cut zone-c (nodes 3, and 6 if any) off from the others.
    let n = sim.nodes.len() as u64;
    let minority: Vec<NodeId> = (1..=n).filter(|id| (id - 1) % 3 == 2).collect();
    for a in 1..=n {
        for b in 1..=n {
            if minority.contains(&a) != minority.contains(&b) {
                sim.cut.insert((a, b));
            }
        }
    }
    let before: Vec<u64> = minority.iter().map(|id| sim.commit(*id)).collect();
    let start = sim.commit(1);
    for _ in 0..1_000 {
        sim.step(false);
    }
    let after: Vec<u64> = minority.iter().map(|id| sim.commit(*id)).collect();
    assert_eq!(before, after, "the cut-off zone committed");
    let end = sim.commit(1);
    assert!(end > start + 10, "the majority stopped committing");
    sim.converge();
}
