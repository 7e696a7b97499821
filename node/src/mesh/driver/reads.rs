//! Confirmed reads: raft's read index. A caller asks; this node asks the
//! leader (raft-rs forwards `MsgReadIndex` from a follower) which confirms
//! its leadership with a quorum's heartbeat acks and answers with its commit
//! index; the caller is answered once this node has applied up to that
//! index. A node that cannot hear the leader gets no answer (the caller's
//! deadline says so); one that knows no leader, or sees leadership change
//! while it waits, is told `NoLeader` at once.

use std::collections::HashMap;

use raft::ReadState;
use raft::StateRole;
use tokio::time::Instant;

use super::{Core, MeshError, NodeId, Outbox, Reply};

/// A read waiting for the leader's answer.
#[derive(Debug)]
struct Asked {
    reply: Reply,
    /// The leader and term when asked: the leader's answer only counts in
    /// that term (a new leader has forgotten the request).
    leader: NodeId,
    term: u64,
}

/// Read-index requests in flight on one node.
#[derive(Debug)]
pub(super) struct Reads {
    /// Drawn once per run, so that contexts never repeat across restarts
    /// (the leader drops a request whose context it already holds).
    nonce: u64,
    seq: u64,
    /// Asked of the leader, by context.
    asked: HashMap<Vec<u8>, Asked>,
    /// Confirmed at an index this node has not applied yet.
    confirmed: Vec<(u64, Reply)>,
}

impl Default for Reads {
    fn default() -> Self {
        Self {
            nonce: rand::random(),
            seq: 0,
            asked: HashMap::new(),
            confirmed: Vec::new(),
        }
    }
}

impl Reads {
    /// A context no other read of any run shares: nonce and sequence.
    fn next_ctx(&mut self) -> Vec<u8> {
        self.seq += 1;
        let mut v = Vec::with_capacity(16);
        v.extend_from_slice(&self.nonce.to_be_bytes());
        v.extend_from_slice(&self.seq.to_be_bytes());
        v
    }

    /// The read states a ready brought: those reads are confirmed at their
    /// index (contexts that are not ours, or whose caller left, are dropped).
    pub(super) fn confirmed(&mut self, states: Vec<ReadState>) {
        for rs in states {
            if let Some(a) = self.asked.remove(&rs.request_ctx) {
                self.confirmed.push((rs.index, a.reply));
            }
        }
    }

    /// Fails every read in flight.
    pub(super) fn fail_all(&mut self, e: &MeshError) {
        for (_, a) in self.asked.drain() {
            let _ = a.reply.send(Err(e.clone()));
        }
        for (_, r) in self.confirmed.drain(..) {
            let _ = r.send(Err(e.clone()));
        }
    }

    /// How many reads wait (for tests).
    #[cfg(test)]
    pub(super) fn waiting(&self) -> usize {
        self.asked.len() + self.confirmed.len()
    }
}

impl<O: Outbox> Core<O> {
    /// Starts a read-index round, or refuses at once when no leader is known.
    pub(super) fn start_read(&mut self, reply: Reply) {
        let (leader, term) = (self.raw.raft.leader_id, self.raw.raft.term);
        if leader == raft::INVALID_ID {
            let _ = reply.send(Err(MeshError::NoLeader));
            return;
        }
        let ctx = self.reads.next_ctx();
        self.raw.read_index(ctx.clone());
        self.reads.asked.insert(
            ctx,
            Asked {
                reply,
                leader,
                term,
            },
        );
    }

    /// After a ready: answers the confirmed reads this node has now applied
    /// up to; fails those still waiting for a leader that is gone.
    pub(super) fn answer_reads(&mut self) {
        let applied = self.raw.raft.raft_log.applied;
        let (leader, term) = (self.raw.raft.leader_id, self.raw.raft.term);
        let reads = &mut self.reads;
        let mut waiting = Vec::with_capacity(reads.confirmed.len());
        for (index, reply) in reads.confirmed.drain(..) {
            if index <= applied {
                let _ = reply.send(Ok(index));
            } else if !reply.is_closed() {
                waiting.push((index, reply));
            }
        }
        reads.confirmed = waiting;
        if reads.asked.is_empty() {
            return;
        }
        let lost: Vec<Vec<u8>> = reads
            .asked
            .iter()
            .filter(|(_, a)| a.leader != leader || a.term != term || leader == raft::INVALID_ID)
            .map(|(ctx, _)| ctx.clone())
            .collect();
        for ctx in lost {
            if let Some(a) = reads.asked.remove(&ctx) {
                let _ = a.reply.send(Err(MeshError::NoLeader));
            }
        }
    }

    /// Every tick: reads whose caller gave up are forgotten; a leader notes
    /// that it is one, so that once deposed it can say how long ago that was.
    pub(super) fn tick_reads(&mut self) {
        self.reads.asked.retain(|_, a| !a.reply.is_closed());
        self.reads.confirmed.retain(|(_, r)| !r.is_closed());
        if self.raw.raft.state == StateRole::Leader {
            self.shared
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .leader_heard = Some(Instant::now());
        }
    }
}
