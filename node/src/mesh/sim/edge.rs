//! Bytes from the network, as the gRPC edge receives them, through the
//! same checks and a real driver core: no panic, and a refused message
//! changes nothing. Inputs: `FAXI_FUZZ_INPUTS` (CI: 3,000); kept corpus:
//! `node/fuzz/raft_batch.hex`.

use super::*;

/// What a node holds that refused input must leave alone: hard state, log
/// bounds, applied index and the applied state's bytes.
fn fingerprint(sim: &Sim, i: usize) -> Option<(u64, u64, u64, u64, u64, Vec<u8>)> {
    let core = sim.nodes[i].core.as_ref()?;
    let r = &core.raw.raft;
    let state = core.shared().sm.snapshot().ok()?;
    Some((
        r.term,
        r.vote,
        r.raft_log.committed,
        r.raft_log.last_index(),
        r.raft_log.applied,
        state,
    ))
}

/// A batch as the transport encodes it.
fn encode_batch(env: &Envelope, msgs: &[Message]) -> Vec<u8> {
    use prost::Message as _;
    use protobuf::Message as _;
    faxi_proto::v1::RaftBatch {
        from: env.from,
        to: env.to,
        messages: msgs
            .iter()
            .filter_map(|m| m.write_to_bytes().ok())
            .collect(),
        cluster_id: env.cluster_id.clone(),
        from_instance: env.from_instance,
        to_instance: env.to_instance,
        from_bound_at: env.from_bound_at,
    }
    .encode_to_vec()
}

/// Delivers a decoded batch to node `to` as the gRPC edge does (envelope,
/// then every message parsed and matched to it, else the whole batch is
/// refused), one message at a time; a message the core refuses must change
/// nothing. Returns (refused, taken).
fn deliver_batch(
    sim: &mut Sim,
    to: usize,
    batch: &faxi_proto::v1::RaftBatch,
) -> Result<(usize, usize), String> {
    use protobuf::Message as _;
    let env = Envelope {
        cluster_id: batch.cluster_id.clone(),
        from: batch.from,
        from_instance: batch.from_instance,
        to: batch.to,
        to_instance: batch.to_instance,
        from_bound_at: batch.from_bound_at,
    };
    let Some(core) = sim.nodes[to].core.as_ref() else {
        return Ok((0, 0));
    };
    {
        let s = core.shared();
        if guard::check_envelope(
            &env,
            sim.nodes[to].id,
            s.info.instance,
            s.info.applied,
            &s.sm,
        )
        .is_err()
        {
            return Ok((1, 0));
        }
    }
    let mut msgs = Vec::new();
    for bytes in &batch.messages {
        match Message::parse_from_bytes(bytes) {
            Ok(m) if guard::check_message(&env, &m).is_ok() => msgs.push(m),
            _ => return Ok((1, 0)),
        }
    }
    let (mut refused, mut taken) = (0, 0);
    for m in msgs {
        // Whatever was pending runs first, so that only this message acts.
        sim.run_core(to, Vec::new(), false);
        let before = fingerprint(sim, to);
        let refuses = sim.nodes[to]
            .core
            .as_ref()
            .is_none_or(|c| c.refusal(&m).is_some());
        let what = format!("{m:?}");
        sim.run_core(to, vec![Input::Raft(Box::new(m))], false);
        if refuses {
            refused += 1;
            if fingerprint(sim, to) != before {
                return Err(format!("a refused message changed node state: {what}"));
            }
        } else {
            taken += 1;
        }
    }
    Ok((refused, taken))
}

/// The attacks of the trust issue, as the batches that carried them: the
/// kept corpus's first lines (`node/fuzz/raft_batch.hex`).
fn attack_batches() -> Vec<Vec<u8>> {
    use raft::eraftpb::{Entry, Snapshot};
    let env = |from: NodeId, to: NodeId| Envelope {
        cluster_id: "sim-cluster".into(),
        from,
        from_instance: 0,
        to,
        to_instance: 0,
        from_bound_at: 0,
    };
    let msg = |t: MessageType, from: NodeId, to: NodeId, term: u64| {
        let mut m = Message::default();
        m.set_msg_type(t);
        m.from = from;
        m.to = to;
        m.term = term;
        m
    };
    let mut out = Vec::new();
    // A heartbeat from a non-member with term u64::MAX.
    out.push(encode_batch(
        &env(9, 1),
        &[msg(MessageType::MsgHeartbeat, 9, 1, u64::MAX)],
    ));
    // An empty proposal to a follower.
    out.push(encode_batch(
        &env(2, 1),
        &[msg(MessageType::MsgPropose, 2, 1, 0)],
    ));
    // A heartbeat whose commit is past the receiver's log.
    let mut hb = msg(MessageType::MsgHeartbeat, 2, 1, 2);
    hb.commit = 1 << 40;
    out.push(encode_batch(&env(2, 1), &[hb]));
    // A snapshot with garbage data.
    let mut snap = msg(MessageType::MsgSnapshot, 2, 1, 2);
    let mut s = Snapshot {
        data: b"\x00garbage\xff".to_vec().into(),
        ..Default::default()
    };
    s.mut_metadata().index = 50;
    s.mut_metadata().term = 2;
    snap.set_snapshot(s);
    out.push(encode_batch(&env(2, 1), &[snap]));
    // TimeoutNow from an unknown id, repeated.
    let tn = msg(MessageType::MsgTimeoutNow, 9, 1, 3);
    out.push(encode_batch(&env(9, 1), &[tn.clone(), tn.clone(), tn]));
    // A proposal carrying another node's observation.
    let mut p = msg(MessageType::MsgPropose, 2, 1, 0);
    let e = Entry {
        data: crate::mesh::driver::encode(&Command::Observe {
            node: 3,
            at_ms: u64::MAX / 2,
            valid_for_ms: u64::MAX,
            seen: Vec::new(),
            whole: false,
        })
        .unwrap_or_default()
        .into(),
        ..Default::default()
    };
    p.set_entries(vec![e].into());
    out.push(encode_batch(&env(2, 1), &[p]));
    out
}

#[test]
#[ignore = "prints the attack batches as corpus lines (run once to seed node/fuzz/raft_batch.hex)"]
fn print_the_attack_corpus() {
    for b in attack_batches() {
        println!("{}", crate::fuzz::hex(&b));
    }
}

#[test]
fn bytes_from_the_network_never_panic_a_node_and_refused_bytes_change_nothing() {
    use prost::Message as _;
    let mut sim = Sim::settled(11);
    // The seeds: the kept corpus, and what the nodes really send each other.
    let mut seeds = crate::fuzz::corpus("raft_batch");
    for _ in 0..400 {
        sim.step(false);
        for (env, m) in sim.in_flight.values().take(2) {
            if seeds.len() < 400 {
                seeds.push(encode_batch(env, std::slice::from_ref(m)));
            }
        }
    }
    sim.byzantine = true;
    let mut rng = StdRng::seed_from_u64(0xF0221);
    let (mut decoded, mut refused, mut taken) = (0usize, 0usize, 0usize);
    let inputs = crate::fuzz::inputs();
    for n in 0..inputs {
        let bytes = if n < seeds.len() {
            seeds[n].clone()
        } else {
            let pick = rng.random_range(0..seeds.len());
            crate::fuzz::mutate(&mut rng, &seeds[pick])
        };
        let Ok(batch) = faxi_proto::v1::RaftBatch::decode(bytes.as_slice()) else {
            continue;
        };
        decoded += 1;
        let to = sim.index(batch.to).unwrap_or(0);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            deliver_batch(&mut sim, to, &batch)
        }));
        match outcome {
            Ok(Ok((r, t))) => {
                refused += r;
                taken += t;
            }
            Ok(Err(why)) => panic!(
                "input {n}: {why}\nadd it to node/fuzz/raft_batch.hex: {}",
                crate::fuzz::hex(&bytes)
            ),
            Err(_) => panic!(
                "input {n} panicked node {}\nadd it to node/fuzz/raft_batch.hex: {}",
                sim.nodes[to].id,
                crate::fuzz::hex(&bytes)
            ),
        }
        if n % 20 == 0 {
            sim.step(false);
        }
    }
    // The mutations reach past the decoder and both ways of the checks.
    assert!(decoded * 10 > inputs, "only {decoded} of {inputs} decoded");
    assert!(refused > 0 && taken > 0, "refused {refused}, taken {taken}");
    // The cluster goes on once the bytes stop.
    assert!(
        sim.majority_progresses(),
        "no progress after the fuzzed bytes: {}",
        sim.describe()
    );
}
