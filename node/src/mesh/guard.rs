//! Who may talk to this node's raft: the envelope every peer batch carries
//! (cluster id, sender and receiver with their data-dir instances) checked
//! against the replicated membership before raft sees any message.
//!
//! Architecture invariant: pure (no I/O); the gRPC edge and the simulator
//! call the same checks, so what the simulator proves holds for the node.

use raft::eraftpb::{Message, MessageType};

use super::state::{NodeId, StateMachine};

/// The envelope of a batch of raft messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The sender's cluster (empty from a node that has none yet).
    pub cluster_id: String,
    /// The sender.
    pub from: NodeId,
    /// The sender's data dir.
    pub from_instance: u64,
    /// The receiver.
    pub to: NodeId,
    /// The receiver's data dir as the sender knows it (0: not bound yet).
    pub to_instance: u64,
    /// The sender's applied index when its own member record names
    /// `from_instance` (0 otherwise).
    pub from_bound_at: u64,
}

/// Why a batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Addressed to another node id.
    #[error("this is node {me}, not node {to}: check the peer addresses")]
    WrongNode {
        /// This node.
        me: NodeId,
        /// The addressee.
        to: NodeId,
    },
    /// From another cluster.
    #[error("message from cluster {theirs:?}, which is not this node's cluster")]
    OtherCluster {
        /// This node's cluster.
        ours: String,
        /// The sender's.
        theirs: String,
    },
    /// The sender knows node `me` by another data dir: this node lost its
    /// state (a wiped or replaced disk) and must not act as the old one.
    #[error(
        "the cluster knows node {me} by another data dir (instance {expected:x}, this one is {mine:x}): \
         this node lost its state; run `faxictl members remove {me}`, then `faxictl members add {me} ZONE ADDR` \
         (or add it under a new id), and it catches up by snapshot"
    )]
    ReplacedHere {
        /// This node.
        me: NodeId,
        /// The instance the sender expected.
        expected: u64,
        /// This data dir's instance.
        mine: u64,
    },
    /// The sender is not a member of this cluster.
    #[error("node {0} is not a member of this cluster")]
    NotAMember(NodeId),
    /// The sender runs from another data dir than the member that joined.
    #[error(
        "node {from} speaks from another data dir (instance {got:x}, member has {want:x}): \
         it lost its state; remove and re-add it"
    )]
    ReplacedThere {
        /// The sender.
        from: NodeId,
        /// Its instance now.
        got: u64,
        /// The member's bound instance.
        want: u64,
    },
    /// A message inside the batch does not match the envelope.
    #[error("message from {from} to {to} inside a batch from {env_from} to {env_to}")]
    Mismatch {
        /// The message's sender.
        from: NodeId,
        /// The message's receiver.
        to: NodeId,
        /// The envelope's sender.
        env_from: NodeId,
        /// The envelope's receiver.
        env_to: NodeId,
    },
    /// A message type no peer sends.
    #[error("a peer may not send {0:?}")]
    Forbidden(MessageType),
    /// A term where raft-rs expects none, or none where it expects one.
    #[error("a {0:?} with an impossible term")]
    BadTerm(MessageType),
    /// The batch claims a sender its TLS certificate does not name.
    #[error("a batch from node {claimed} over a connection authenticated as {certificate}")]
    NotThisIdentity {
        /// The sender the batch names.
        claimed: NodeId,
        /// Who the certificate names.
        certificate: String,
    },
}

impl Refusal {
    /// A short label for the refused-messages metric.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::WrongNode { .. } => "wrong_node",
            Refusal::OtherCluster { .. } => "other_cluster",
            Refusal::ReplacedHere { .. } => "replaced_here",
            Refusal::NotAMember(_) => "not_a_member",
            Refusal::ReplacedThere { .. } => "replaced_there",
            Refusal::Mismatch { .. } => "mismatch",
            Refusal::Forbidden(_) => "forbidden",
            Refusal::BadTerm(_) => "bad_term",
            Refusal::NotThisIdentity { .. } => "wrong_identity",
        }
    }
}

/// Checks a batch's envelope against this node (`me`, running from data dir
/// `instance`) and its state, applied up to `applied`.
pub fn check_envelope(
    env: &Envelope,
    me: NodeId,
    instance: u64,
    applied: u64,
    sm: &StateMachine,
) -> Result<(), Refusal> {
    if env.to != me {
        return Err(Refusal::WrongNode { me, to: env.to });
    }
    // A sender whose view predates this node's re-adding addresses the data
    // dir it replaced; this node takes it once its own applied record names
    // this data dir (otherwise the lagging sender could never learn of the
    // change). A node that lost its state has no such record: refused.
    let bound_here = sm
        .members()
        .get(&me)
        .is_some_and(|m| m.instance == instance);
    if env.to_instance != 0 && env.to_instance != instance && !bound_here {
        return Err(Refusal::ReplacedHere {
            me,
            expected: env.to_instance,
            mine: instance,
        });
    }
    let ours = sm.cluster_id();
    if ours.is_empty() {
        // A node with no state yet waits to be sent one; it never votes
        // (the driver drops vote requests to a non-voter).
        return Ok(());
    }
    let Some(member) = sm.members().get(&env.from) else {
        // Only members speak raft to a node that has state: a node of
        // another cluster, one never added, or one removed (whatever
        // certificate it holds) could otherwise lead it with a higher term
        // and write its log. A node added after this node's applied index
        // reaches it once the entries that added it arrive from a member.
        if env.cluster_id == ours || env.cluster_id.is_empty() {
            return Err(Refusal::NotAMember(env.from));
        }
        return Err(Refusal::OtherCluster {
            ours: ours.to_owned(),
            theirs: env.cluster_id.clone(),
        });
    };
    // A member not yet bound to a data dir (a learner still waiting for
    // its first state) has no cluster id to send yet.
    let waiting = env.cluster_id.is_empty() && member.instance == 0;
    if env.cluster_id != ours && !waiting {
        return Err(Refusal::OtherCluster {
            ours: ours.to_owned(),
            theirs: env.cluster_id.clone(),
        });
    }
    // A sender whose own applied state binds it to its data dir at an index
    // this node has not applied yet was re-added after this node's view:
    // refusing it would leave a lagging node unable ever to learn of it
    // (found by the simulator campaign, seed 1632). A data dir that was
    // replaced and never re-added has no such record, so it stays refused.
    let rebound_since = env.from_bound_at > applied;
    if member.instance != 0 && member.instance != env.from_instance && !rebound_since {
        return Err(Refusal::ReplacedThere {
            from: env.from,
            got: env.from_instance,
            want: member.instance,
        });
    }
    Ok(())
}

/// Checks one message of a batch against its envelope.
pub fn check_message(env: &Envelope, m: &Message) -> Result<(), Refusal> {
    if m.from != env.from || m.to != env.to {
        return Err(Refusal::Mismatch {
            from: m.from,
            to: m.to,
            env_from: env.from,
            env_to: env.to,
        });
    }
    match m.get_msg_type() {
        // Local messages raft-rs makes for itself, and leadership transfer
        // (the API carries it to the leader, which transfers): never from
        // the network.
        MessageType::MsgHup
        | MessageType::MsgBeat
        | MessageType::MsgUnreachable
        | MessageType::MsgSnapStatus
        | MessageType::MsgCheckQuorum
        | MessageType::MsgTransferLeader => Err(Refusal::Forbidden(m.get_msg_type())),
        // Forwarded to the leader as local messages: no term (raft-rs would
        // panic forwarding one that has a term).
        MessageType::MsgPropose | MessageType::MsgReadIndex if m.term != 0 => {
            Err(Refusal::BadTerm(m.get_msg_type()))
        }
        MessageType::MsgPropose | MessageType::MsgReadIndex => Ok(()),
        // Everything else carries its sender's term (raft-rs would take
        // one without as its own local message).
        _ if m.term == 0 => Err(Refusal::BadTerm(m.get_msg_type())),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::state::Member;

    fn member(instance: u64) -> Member {
        Member {
            zone: "zone-a".into(),
            addr: "127.0.0.1:1".into(),
            instance,
        }
    }

    /// Node 3 bound to data dir `i3` in this view; nodes 1 and 2 to 11, 12.
    fn view(i3: u64) -> StateMachine {
        StateMachine::bootstrap(
            "c1".into(),
            [(1, member(11)), (2, member(12)), (3, member(i3))],
        )
    }

    fn env(from: NodeId, from_instance: u64, to: NodeId, to_instance: u64) -> Envelope {
        Envelope {
            cluster_id: "c1".into(),
            from,
            from_instance,
            to,
            to_instance,
            from_bound_at: 0,
        }
    }

    #[test]
    fn a_replaced_data_dir_is_refused_both_ways_until_it_is_re_added() {
        // Node 3 lost its disk (33 → 34) and was not re-added.
        let sm = view(33);
        assert_eq!(
            check_envelope(&env(3, 34, 1, 11), 1, 11, 100, &sm)
                .unwrap_err()
                .label(),
            "replaced_there"
        );
        // Its own state (none, or the old record) does not name 34.
        let empty = StateMachine::default();
        assert_eq!(
            check_envelope(&env(1, 11, 3, 33), 3, 34, 0, &empty)
                .unwrap_err()
                .label(),
            "replaced_here"
        );
        assert_eq!(
            check_envelope(&env(1, 11, 3, 33), 3, 34, 100, &sm)
                .unwrap_err()
                .label(),
            "replaced_here"
        );
        // A claim of a binding this node has already applied past is no excuse.
        let mut e = env(3, 34, 1, 11);
        e.from_bound_at = 90;
        assert!(check_envelope(&e, 1, 11, 100, &sm).is_err());
    }

    #[test]
    fn a_lagging_node_and_a_re_added_node_still_hear_each_other() {
        // Node 3 was re-added with data dir 34 at index 200; node 1 has
        // applied only up to 100 and still names 33 (simulator seed 1632).
        let stale = view(33);
        let current = view(34);
        let mut from_readded = env(3, 34, 1, 11);
        from_readded.from_bound_at = 200;
        assert_eq!(check_envelope(&from_readded, 1, 11, 100, &stale), Ok(()));
        // And node 3 takes the lagging node's messages, addressed to 33.
        assert_eq!(
            check_envelope(&env(1, 11, 3, 33), 3, 34, 200, &current),
            Ok(())
        );
    }
}
