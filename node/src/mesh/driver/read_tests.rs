//! Read index on three real driver cores (in-memory stores), stepped by hand
//! over a network the test controls: which links are cut, which message
//! types are held back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use raft::eraftpb::{Message, MessageType};
use tokio::sync::oneshot;

use super::{Core, DriverConfig, Input, MeshError, Outbox, cfg_jitter};
use crate::mesh::state::{Command, Member, NodeId, Seen, State};
use crate::mesh::storage::SledStorage;

#[derive(Debug, Default)]
struct Out(Vec<Message>);

impl Outbox for Out {
    fn send(&mut self, msgs: Vec<Message>) -> Vec<NodeId> {
        self.0.extend(msgs);
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

type Reply = oneshot::Receiver<Result<u64, MeshError>>;

struct Net {
    cores: Vec<Core<Out>>,
    /// Directed links that drop everything.
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Message types held back (dropped) on their way to a node.
    held: Vec<(NodeId, MessageType)>,
}

impl Net {
    fn new() -> Net {
        let peers: Vec<(NodeId, Member)> = (1..=3)
            .map(|i| {
                (
                    i,
                    Member {
                        zone: format!("zone-{i}"),
                        addr: format!("n{i}:1"),
                        instance: 0,
                    },
                )
            })
            .collect();
        let cores = peers
            .iter()
            .map(|(id, _)| {
                let cfg = DriverConfig {
                    id: *id,
                    peers: peers.clone(),
                    tick: Duration::from_millis(100),
                    election_ticks: 10,
                    heartbeat_ticks: 1,
                    snapshot_entries: 1000,
                    snapshot_bytes: 16 << 20,
                    nonce: *id,
                };
                let storage = SledStorage::simulated(*id).unwrap();
                if *id == 1 {
                    super::init(&storage, 1, &peers, "reads".into()).unwrap();
                }
                Core::open(cfg, storage, Out::default(), cfg_jitter::FIXED).unwrap()
            })
            .collect();
        Net {
            cores,
            cut: BTreeSet::new(),
            held: Vec::new(),
        }
    }

    fn core(&mut self, id: NodeId) -> &mut Core<Out> {
        &mut self.cores[(id - 1) as usize]
    }

    /// Delivers every message sent so far (and what answering them sends),
    /// until the network is quiet.
    fn deliver(&mut self) {
        for _ in 0..100 {
            let mut msgs = Vec::new();
            for c in &mut self.cores {
                msgs.append(&mut c.outbox().0);
            }
            if msgs.is_empty() {
                return;
            }
            let mut inbox: BTreeMap<NodeId, Vec<Input>> = BTreeMap::new();
            for m in msgs {
                if self.cut.contains(&(m.from, m.to))
                    || self.held.contains(&(m.to, m.get_msg_type()))
                {
                    continue;
                }
                inbox
                    .entry(m.to)
                    .or_default()
                    .push(Input::Raft(Box::new(m)));
            }
            for (to, inputs) in inbox {
                self.core(to).step(inputs, false).unwrap();
            }
        }
        panic!("the network never went quiet");
    }

    /// One tick on every node (but `skip`), then delivery.
    fn tick(&mut self, skip: &[NodeId]) {
        for c in &mut self.cores {
            if !skip.contains(&c.cfg.id) {
                c.step(Vec::new(), true).unwrap();
            }
        }
        self.deliver();
    }

    fn leader(&self, id: NodeId) -> NodeId {
        self.cores[(id - 1) as usize].raw.raft.leader_id
    }

    /// Ticks node 1 (the cluster's first voter) until it leads, as every
    /// node agrees, and its learners are promoted.
    fn elect(&mut self) -> NodeId {
        for id in [2, 3] {
            self.core(1)
                .step(vec![Input::PeerInstance(id, id)], false)
                .unwrap();
        }
        for _ in 0..200 {
            self.tick(&[2, 3]);
            let l = self.leader(1);
            if l != 0 && (1..=3).all(|i| self.leader(i) == l) {
                break;
            }
        }
        for _ in 0..200 {
            self.tick(&[]);
            let l = self.leader(1);
            let voters = self.cores[0].raw.raft.prs().conf().voters().ids().len();
            if l != 0 && voters == 3 && (1..=3).all(|i| self.leader(i) == l) {
                return l;
            }
        }
        panic!("no leader with three voters");
    }

    fn read(&mut self, id: NodeId) -> Reply {
        let (tx, rx) = oneshot::channel();
        self.core(id)
            .step(vec![Input::ReadIndex(tx)], false)
            .unwrap();
        rx
    }

    fn propose(&mut self, id: NodeId, n: u64) {
        let cmd = Command::Observe {
            node: id,
            at_ms: 1_000 + n,
            valid_for_ms: 10_000,
            seen: vec![Seen {
                target: format!("t{n}"),
                verdict: State::Up,
                latency_us: 1,
                error: None,
            }],
            whole: false,
        };
        let (tx, _rx) = oneshot::channel();
        self.core(id)
            .step(vec![Input::Propose(cmd, tx)], false)
            .unwrap();
        self.deliver();
    }

    fn applied(&self, id: NodeId) -> u64 {
        self.cores[(id - 1) as usize].raw.raft.raft_log.applied
    }

    fn commit(&self, id: NodeId) -> u64 {
        self.cores[(id - 1) as usize].raw.raft.raft_log.committed
    }

    fn isolate(&mut self, id: NodeId) {
        for j in 1..=3 {
            if j != id {
                self.cut.insert((id, j));
                self.cut.insert((j, id));
            }
        }
    }
}

fn answer(rx: &mut Reply) -> Option<Result<u64, MeshError>> {
    match rx.try_recv() {
        Ok(r) => Some(r),
        Err(oneshot::error::TryRecvError::Empty) => None,
        Err(oneshot::error::TryRecvError::Closed) => panic!("read dropped unanswered"),
    }
}

#[test]
fn a_read_on_the_leader_or_a_follower_is_confirmed_at_the_leaders_commit() {
    let mut net = Net::new();
    let l = net.elect();
    net.propose(l, 1);
    let f = (1..=3).find(|i| *i != l).unwrap();
    for id in [l, f] {
        let commit = net.commit(l);
        let mut rx = net.read(id);
        net.deliver();
        let got = answer(&mut rx).expect("a read in a healthy mesh is answered");
        let index = got.unwrap();
        assert!(
            index >= commit,
            "read index {index} < leader commit {commit}"
        );
        assert!(net.applied(id) >= index, "answered before applying {index}");
    }
    assert_eq!(
        net.cores.iter().map(|c| c.reads.waiting()).sum::<usize>(),
        0
    );
}

#[test]
fn a_follower_answers_only_once_it_has_applied_up_to_the_read_index() {
    let mut net = Net::new();
    let l = net.elect();
    let f = (1..=3).find(|i| *i != l).unwrap();
    // The follower stops receiving entries (heartbeats still arrive) while
    // the leader commits more with the third node.
    net.held.push((f, MessageType::MsgAppend));
    for n in 0..5 {
        net.propose(l, n);
    }
    let commit = net.commit(l);
    assert!(net.applied(f) < commit);
    let mut rx = net.read(f);
    net.deliver();
    assert!(
        answer(&mut rx).is_none(),
        "answered at applied {} while the read index is {commit}",
        net.applied(f)
    );
    // Entries flow again: the read is answered once they are applied.
    net.held.clear();
    for _ in 0..5 {
        net.tick(&[]);
        if let Some(r) = answer(&mut rx) {
            let index = r.unwrap();
            assert!(index >= commit);
            assert!(net.applied(f) >= index);
            return;
        }
    }
    panic!("never answered");
}

#[test]
fn a_node_cut_off_from_the_leader_cannot_confirm() {
    let mut net = Net::new();
    let l = net.elect();
    let f = (1..=3).find(|i| *i != l).unwrap();
    net.isolate(f);
    // It still believes in the leader: its request goes nowhere.
    let mut rx = net.read(f);
    net.deliver();
    assert!(answer(&mut rx).is_none());
    // Once it gives up on the leader (pre-vote), the waiting read fails and
    // new ones are refused at once.
    for _ in 0..30 {
        net.tick(&[]);
        if net.leader(f) == 0 {
            break;
        }
    }
    assert_eq!(net.leader(f), 0, "the cut-off node still names a leader");
    assert_eq!(answer(&mut rx), Some(Err(MeshError::NoLeader)));
    let mut rx = net.read(f);
    assert_eq!(answer(&mut rx), Some(Err(MeshError::NoLeader)));
    // The others still confirm.
    let mut rx = net.read(l);
    net.deliver();
    assert!(matches!(answer(&mut rx), Some(Ok(_))));
    // It heard a leader once: its contact age is kept, not lost.
    assert!(net.core(f).shared().leader_contact().is_some());
}

#[test]
fn a_deposed_leader_fails_its_waiting_reads() {
    let mut net = Net::new();
    let l = net.elect();
    net.isolate(l);
    let mut rx = net.read(l);
    net.deliver();
    assert!(answer(&mut rx).is_none(), "confirmed without a quorum");
    // check_quorum: it steps down within an election timeout.
    for _ in 0..30 {
        net.tick(&[]);
        if net.leader(l) != l {
            break;
        }
    }
    assert_ne!(net.leader(l), l);
    assert_eq!(answer(&mut rx), Some(Err(MeshError::NoLeader)));
    // As a former leader it still says when it last was one.
    assert!(net.core(l).shared().leader_contact().is_some());
}
