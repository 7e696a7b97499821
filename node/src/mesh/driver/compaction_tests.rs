//! Compaction by size: a snapshot once the log since the last one holds
//! `snapshot_bytes`, however few entries that is; by count otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use raft::Storage as _;
use raft::eraftpb::Message;
use tokio::sync::oneshot;

use super::{Core, DriverConfig, Input, Outbox, cfg_jitter};
use crate::mesh::state::{Command, Member, NodeId, Seen, State};
use crate::mesh::storage::SledStorage;

#[derive(Debug, Default)]
struct Nowhere;

impl Outbox for Nowhere {
    fn send(&mut self, _: Vec<Message>) -> Vec<NodeId> {
        Vec::new()
    }
    fn set_peers(
        &mut self,
        _: &super::Identity,
        _: BTreeMap<NodeId, super::PeerAddr>,
    ) -> Vec<NodeId> {
        Vec::new()
    }
    fn reachable(&self) -> BTreeMap<NodeId, bool> {
        BTreeMap::new()
    }
}

/// A one-node cluster that leads, with the given compaction settings.
fn leader(snapshot_entries: u64, snapshot_bytes: u64) -> (Core<Nowhere>, SledStorage) {
    let peers = vec![(
        1,
        Member {
            zone: "zone-a".into(),
            addr: "n1:1".into(),
            instance: 0,
        },
    )];
    let cfg = DriverConfig {
        id: 1,
        peers: peers.clone(),
        tick: Duration::from_millis(100),
        election_ticks: 10,
        heartbeat_ticks: 1,
        snapshot_entries,
        snapshot_bytes,
        nonce: 7,
    };
    let storage = SledStorage::simulated(1).unwrap();
    super::init(&storage, 1, &peers, "compaction".into()).unwrap();
    let mut core = Core::open(cfg, storage.clone(), Nowhere, cfg_jitter::FIXED).unwrap();
    for _ in 0..100 {
        if core.raw.raft.leader_id == 1 {
            return (core, storage);
        }
        core.step(Vec::new(), true).unwrap();
    }
    panic!("a one-node cluster did not elect itself");
}

/// An observation of `targets` targets with long names: about 130 bytes
/// per target as stored.
fn big(at_ms: u64, targets: usize) -> Command {
    Command::Observe {
        node: 1,
        at_ms,
        valid_for_ms: 15_000,
        seen: (0..targets)
            .map(|i| Seen {
                target: format!("{i:0>100}"),
                verdict: State::Up,
                latency_us: 1_000,
                error: None,
            })
            .collect(),
        whole: false,
    }
}

fn propose(core: &mut Core<Nowhere>, cmd: Command) {
    let (tx, mut rx) = oneshot::channel();
    core.step(vec![Input::Propose(cmd, tx)], false).unwrap();
    assert!(matches!(rx.try_recv(), Ok(Ok(_))), "not applied at once");
}

fn snapshot_index(storage: &SledStorage) -> u64 {
    storage.last_snapshot().unwrap().get_metadata().index
}

#[test]
fn a_snapshot_is_taken_once_the_log_holds_snapshot_bytes_whatever_the_count() {
    // 100 targets of 100-byte names: about 13 KB per entry. With 64 KiB,
    // the fifth or sixth entry since the last snapshot triggers one, long
    // before 10,000 entries would.
    let (mut core, storage) = leader(10_000, 64 << 10);
    let start = snapshot_index(&storage);
    let mut taken = Vec::new();
    for i in 0..30 {
        propose(&mut core, big(1_000 + i, 100));
        let at = snapshot_index(&storage);
        if at != *taken.last().unwrap_or(&start) {
            taken.push(at);
        }
    }
    assert!(
        (4..=7).contains(&taken.len()),
        "snapshots at {taken:?} after 30 entries of ~13 KB"
    );
    // Each one compacted the log (up to the snapshot's own entry): what
    // is left is less than the bound.
    let first = storage.first_index().unwrap();
    let last = storage.last_index().unwrap();
    assert_eq!(first, *taken.last().unwrap());
    let left: u64 = storage
        .entries(first, last + 1, None, raft::GetEntriesContext::empty(false))
        .unwrap()
        .iter()
        .map(|e| u64::from(protobuf::Message::compute_size(e)))
        .sum();
    assert!(left < 64 << 10, "{left} bytes left in the log");
    // The snapshot restores to the state this node applied.
    let snap = storage.last_snapshot().unwrap();
    let sm = crate::mesh::state::StateMachine::restore(&snap.data).unwrap();
    assert_eq!(sm.agreed().len(), 100);
}

#[test]
fn small_entries_are_compacted_by_count_and_big_ones_are_not_held_to_it() {
    // The same entries with a bound far above them: no snapshot before the
    // count, 10, is reached.
    let (mut core, storage) = leader(10, 16 << 20);
    let start = snapshot_index(&storage);
    for i in 0..8 {
        propose(&mut core, big(1_000 + i, 100));
    }
    assert_eq!(
        snapshot_index(&storage),
        start,
        "no snapshot before 10 entries"
    );
    for i in 8..12 {
        propose(&mut core, big(1_000 + i, 1));
    }
    assert!(snapshot_index(&storage) > start, "a snapshot by count");
}

#[test]
fn an_append_from_below_the_compacted_log_reaches_raft_and_a_rewrite_of_a_held_entry_does_not() {
    // A follower that compacted past where the leader probes it must let
    // the append through (raft-rs answers it with its commit index, and
    // the leader learns its match); refusing it for terms it no longer
    // holds (raft-rs reads them as 0) stalled replication for good.
    let (mut core, storage) = leader(5, 16 << 20);
    let first = storage.first_index().unwrap();
    let last = storage.last_index().unwrap();
    let early = storage
        .entries(first, last + 1, None, raft::GetEntriesContext::empty(false))
        .unwrap();
    let prev = (first - 1, storage.term(first - 1).unwrap());
    for i in 0..12 {
        propose(&mut core, big(1_000 + i, 1));
    }
    assert!(
        storage.first_index().unwrap() > last,
        "the log was not compacted"
    );
    let term = core.raw.raft.term;
    let mut m = Message::default();
    m.set_msg_type(raft::eraftpb::MessageType::MsgAppend);
    m.from = 2;
    m.to = 1;
    m.term = term + 1;
    m.index = prev.0;
    m.log_term = prev.1;
    m.commit = prev.0;
    m.set_entries(early.into());
    assert_eq!(core.refusal(&m), None);

    // The same check still refuses another term for an entry it holds.
    let held = storage.last_index().unwrap();
    let e = raft::eraftpb::Entry {
        index: held,
        term: term + 1,
        ..Default::default()
    };
    m.index = held - 1;
    m.log_term = storage.term(held - 1).unwrap();
    m.set_entries(vec![e].into());
    assert_eq!(core.refusal(&m), Some("rewrites_committed"));
}
