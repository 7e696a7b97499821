//! Unit tests of the agreed-state rules, and a seeded randomized check of
//! them against a brute-force oracle, with determinism and snapshot checks.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

fn members(spec: &[(NodeId, &str)]) -> StateMachine {
    StateMachine::new(spec.iter().map(|(id, z)| {
        (
            *id,
            Member {
                zone: z.to_string(),
                addr: format!("wd-{id}:7400"),
                instance: 0,
            },
        )
    }))
}

fn three_zones() -> StateMachine {
    members(&[(1, "zone-a"), (2, "zone-b"), (3, "zone-c")])
}

fn observe(
    sm: &mut StateMachine,
    node: NodeId,
    at_ms: u64,
    target: &str,
    verdict: State,
) -> Vec<Transition> {
    sm.apply(&Command::Observe {
        node,
        at_ms,
        valid_for_ms: 3_000,
        seen: vec![Seen {
            target: target.into(),
            verdict,
            latency_us: 100,
            error: None,
        }],
    })
    .unwrap()
}

fn state(sm: &StateMachine, target: &str) -> State {
    sm.agreed().get(target).map_or(State::Unknown, |a| a.state)
}

#[test]
fn one_zone_seeing_down_is_suspect_and_names_the_zone() {
    let mut sm = three_zones();
    for n in 1..=3 {
        observe(&mut sm, n, 1_000, "redis", State::Up);
    }
    assert_eq!(state(&sm, "redis"), State::Up);
    let t = observe(&mut sm, 2, 1_100, "redis", State::Down);
    assert_eq!(state(&sm, "redis"), State::Suspect);
    assert_eq!(sm.agreed()["redis"].down_zones, vec!["zone-b".to_string()]);
    assert_eq!(t[0].from, State::Up);
    assert_eq!(t[0].to, State::Suspect);
}

#[test]
fn a_quorum_of_zones_makes_down() {
    let mut sm = three_zones();
    observe(&mut sm, 1, 1_000, "pg", State::Down);
    assert_eq!(state(&sm, "pg"), State::Suspect);
    let t = observe(&mut sm, 3, 1_050, "pg", State::Down);
    assert_eq!(state(&sm, "pg"), State::Down);
    // Log time is the second-latest of the two clocks heard so far.
    assert_eq!(
        t,
        vec![Transition {
            target: "pg".into(),
            from: State::Suspect,
            to: State::Down,
            at_ms: 1_000,
            down_zones: vec!["zone-a".into(), "zone-c".into()],
        }]
    );
    assert_eq!(sm.agreed()["pg"].since_ms, 1_000);
}

#[test]
fn zone_verdict_is_the_majority_of_its_fresh_observations() {
    // zone-a has three nodes; two of them seeing DOWN make zone-a DOWN.
    let mut sm = members(&[
        (1, "zone-a"),
        (2, "zone-a"),
        (3, "zone-a"),
        (4, "zone-b"),
        (5, "zone-c"),
    ]);
    observe(&mut sm, 1, 10, "app", State::Down);
    observe(&mut sm, 2, 10, "app", State::Up);
    assert_eq!(
        sm.agreed()["app"].zones["zone-a"],
        State::Unknown,
        "1-1 is no majority"
    );
    observe(&mut sm, 3, 10, "app", State::Down);
    assert_eq!(sm.agreed()["app"].zones["zone-a"], State::Down);
    assert_eq!(state(&sm, "app"), State::Suspect);
    observe(&mut sm, 4, 10, "app", State::Down);
    assert_eq!(state(&sm, "app"), State::Down);
}

#[test]
fn observations_expire_in_log_time() {
    let mut sm = three_zones();
    observe(&mut sm, 1, 1_000, "pg", State::Down);
    observe(&mut sm, 2, 1_000, "pg", State::Down);
    assert_eq!(state(&sm, "pg"), State::Down);
    // Node 1 falls silent; nodes 2 and 3 keep reporting. Node 1's view,
    // applied at log time 1_000, holds until 4_000, then stops counting.
    observe(&mut sm, 2, 4_000, "pg", State::Down);
    observe(&mut sm, 3, 4_000, "pg", State::Up);
    assert_eq!(sm.log_now_ms(), 4_000);
    assert_eq!(state(&sm, "pg"), State::Down);
    observe(&mut sm, 3, 4_001, "pg", State::Up);
    let t = observe(&mut sm, 2, 4_001, "pg", State::Down);
    assert_eq!(state(&sm, "pg"), State::Suspect);
    assert_eq!(t[0].to, State::Suspect);
    assert_eq!(sm.agreed()["pg"].zones["zone-a"], State::Unknown);
}

#[test]
fn one_clock_far_ahead_or_behind_moves_nothing() {
    let mut sm = three_zones();
    for n in 1..=3 {
        observe(&mut sm, n, 1_000, "pg", State::Up);
    }
    // Node 1's clock jumps an hour ahead: log time follows the other two.
    observe(&mut sm, 1, 3_601_000, "pg", State::Up);
    assert_eq!(sm.log_now_ms(), 1_000);
    observe(&mut sm, 2, 2_000, "pg", State::Up);
    observe(&mut sm, 3, 2_000, "pg", State::Up);
    assert_eq!(sm.log_now_ms(), 2_000);
    assert_eq!(state(&sm, "pg"), State::Up);
    assert_eq!(
        sm.agreed()["pg"]
            .zones
            .values()
            .filter(|z| **z == State::Up)
            .count(),
        3
    );
    // Node 3's clock is an hour behind: its reports still count, and it
    // does not hold log time back.
    let mut sm = three_zones();
    observe(&mut sm, 1, 3_600_000, "pg", State::Down);
    observe(&mut sm, 2, 3_600_000, "pg", State::Down);
    observe(&mut sm, 3, 1_000, "pg", State::Down);
    assert_eq!(sm.log_now_ms(), 3_600_000);
    assert_eq!(sm.agreed()["pg"].zones["zone-c"], State::Down);
}

#[test]
fn a_new_cluster_agrees_before_every_member_has_reported() {
    let mut sm = three_zones();
    observe(&mut sm, 1, 1_000, "pg", State::Up);
    assert_eq!(sm.log_now_ms(), 1_000);
    observe(&mut sm, 2, 1_010, "pg", State::Up);
    assert_eq!(state(&sm, "pg"), State::Up);
}

#[test]
fn an_older_report_never_overwrites_a_newer_one_and_log_time_never_goes_back() {
    let mut sm = three_zones();
    observe(&mut sm, 1, 5_000, "pg", State::Down);
    observe(&mut sm, 1, 4_000, "pg", State::Up);
    assert_eq!(sm.views("pg").unwrap()[&1].verdict, State::Down);
    assert_eq!(sm.log_now_ms(), 5_000);
}

#[test]
fn single_zone_needs_a_majority_of_nodes() {
    let mut sm = members(&[(1, "dc"), (2, "dc"), (3, "dc")]);
    observe(&mut sm, 1, 1, "app", State::Down);
    assert_eq!(state(&sm, "app"), State::Suspect);
    observe(&mut sm, 2, 1, "app", State::Down);
    assert_eq!(state(&sm, "app"), State::Down);
}

#[test]
fn stale_backups_and_unknown_members() {
    let mut sm = three_zones();
    observe(&mut sm, 1, 1, "pg-backups", State::Stale);
    assert_eq!(state(&sm, "pg-backups"), State::Unknown);
    observe(&mut sm, 2, 1, "pg-backups", State::Stale);
    assert_eq!(state(&sm, "pg-backups"), State::Stale);
    let err = sm
        .apply(&Command::Observe {
            node: 9,
            at_ms: 2,
            valid_for_ms: 1,
            seen: vec![],
        })
        .unwrap_err();
    assert_eq!(err, Rejected::NotAMember(9));
}

#[test]
fn removing_a_member_drops_its_zone_and_views() {
    let mut sm = three_zones();
    observe(&mut sm, 1, 1, "app", State::Down);
    observe(&mut sm, 2, 1, "app", State::Down);
    assert_eq!(state(&sm, "app"), State::Down);
    sm.apply(&Command::RemoveMember { id: 2 }).unwrap();
    // Two zones left, one DOWN: no longer a quorum (2 of 2 needed).
    assert_eq!(state(&sm, "app"), State::Suspect);
    assert_eq!(
        sm.apply(&Command::RemoveMember { id: 2 }),
        Err(Rejected::UnknownMember(2))
    );
}

/// The rules restated as plainly as possible, for the randomized check.
fn oracle(sm: &StateMachine, target: &str) -> State {
    let now = sm.log_now_ms();
    let fresh_verdict = |id: &NodeId| {
        sm.views(target)
            .and_then(|v| v.get(id))
            .filter(|v| v.expires_at_ms >= now)
            .map(|v| v.verdict)
    };
    let zones: BTreeSet<&str> = sm.members().values().map(|m| m.zone.as_str()).collect();
    let votes: Vec<State> = if zones.len() == 1 {
        sm.members()
            .keys()
            .map(|id| fresh_verdict(id).unwrap_or(State::Unknown))
            .collect()
    } else {
        zones
            .iter()
            .map(|z| {
                let vs: Vec<State> = sm
                    .members()
                    .iter()
                    .filter(|(_, m)| m.zone == *z)
                    .filter_map(|(id, _)| fresh_verdict(id))
                    .collect();
                [State::Up, State::Down, State::Stale, State::Unknown]
                    .into_iter()
                    .find(|s| vs.iter().filter(|v| *v == s).count() * 2 > vs.len())
                    .unwrap_or(State::Unknown)
            })
            .collect()
    };
    let n = |s| votes.iter().filter(|v| **v == s).count();
    let q = votes.len() / 2 + 1;
    if n(State::Down) >= q {
        State::Down
    } else if n(State::Down) > 0 {
        State::Suspect
    } else if n(State::Stale) >= q {
        State::Stale
    } else if n(State::Up) >= q {
        State::Up
    } else {
        State::Unknown
    }
}

fn random_command(rng: &mut StdRng, clock: &mut u64) -> Command {
    *clock += rng.random_range(0..1_500);
    let targets = ["pg", "redis", "app", "s3"];
    let verdicts = [State::Up, State::Down, State::Stale, State::Unknown];
    match rng.random_range(0..20) {
        0 => Command::RemoveMember {
            id: rng.random_range(1..=7),
        },
        1 => Command::SetMember {
            id: rng.random_range(1..=7),
            member: Member {
                zone: format!("zone-{}", rng.random_range(0..3)),
                addr: "x:1".into(),
                instance: 0,
            },
        },
        _ => Command::Observe {
            node: rng.random_range(1..=7),
            // Proposer clocks disagree by up to a second either way.
            at_ms: clock.saturating_sub(rng.random_range(0..1_000)),
            valid_for_ms: 3_000,
            seen: (0..rng.random_range(1..4))
                .map(|_| Seen {
                    target: targets[rng.random_range(0..targets.len())].into(),
                    verdict: verdicts[rng.random_range(0..verdicts.len())],
                    latency_us: rng.random_range(0..10_000),
                    error: None,
                })
                .collect(),
        },
    }
}

#[test]
fn seeded_runs_match_the_oracle_and_replay_identically() {
    for seed in 0..300u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut clock = 0;
        let mut sm = members(&[
            (1, "zone-0"),
            (2, "zone-1"),
            (3, "zone-2"),
            (4, "zone-0"),
            (5, "zone-1"),
        ]);
        let initial = sm.clone();
        let mut log = Vec::new();
        for step in 0..200 {
            let cmd = random_command(&mut rng, &mut clock);
            let _ = sm.apply(&cmd);
            log.push(cmd);
            for (target, agreed) in sm.agreed() {
                assert_eq!(
                    agreed.state,
                    oracle(&sm, target),
                    "seed {seed} step {step} target {target}: {sm:#?}"
                );
            }
            // DOWN only with a zone quorum of DOWN (the safety property recovery relies on).
            for a in sm.agreed().values().filter(|a| a.state == State::Down) {
                let zones = a.zones.len();
                let down = a.zones.values().filter(|s| **s == State::Down).count();
                if zones > 1 {
                    assert!(
                        down > zones / 2,
                        "seed {seed} step {step}: DOWN with {down} of {zones} zones"
                    );
                }
            }
        }
        // Replaying the same log gives the same state; so does a snapshot
        // taken half-way, restored, and fed the second half.
        let mut replay = initial.clone();
        for c in &log {
            let _ = replay.apply(c);
        }
        assert_eq!(replay, sm, "seed {seed}: replay differs");
        let mut half = initial;
        for c in &log[..100] {
            let _ = half.apply(c);
        }
        let mut restored = StateMachine::restore(&half.snapshot().unwrap()).unwrap();
        for c in &log[100..] {
            let _ = restored.apply(c);
        }
        assert_eq!(restored, sm, "seed {seed}: snapshot + rest differs");
        assert_eq!(
            restored.snapshot().unwrap(),
            sm.snapshot().unwrap(),
            "seed {seed}: snapshots differ in bytes"
        );
    }
}

#[test]
fn a_corrupt_snapshot_is_an_error_not_a_panic() {
    let err = StateMachine::restore(b"{not json").unwrap_err();
    assert!(err.starts_with("corrupt state snapshot"), "{err}");
}
