//! Unit tests of the agreed-state rules, and a seeded randomized check of
//! them against an oracle that restates the rules from the commands alone
//! (its own members, clocks, reports and log time; every target recomputed
//! after every command), comparing log time, every agreed record in full
//! and the transitions; with rejection, determinism and snapshot checks.

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
        whole: false,
    })
    .unwrap()
}

fn state(sm: &StateMachine, target: &str) -> State {
    sm.agreed().get(target).map_or(State::Unknown, |a| a.state)
}

fn seen(target: &str) -> Seen {
    Seen {
        target: target.into(),
        verdict: State::Up,
        latency_us: 100,
        error: None,
    }
}

fn observation(node: NodeId, at_ms: u64, valid_for_ms: u64, seen: Vec<Seen>) -> Command {
    Command::Observe {
        node,
        at_ms,
        valid_for_ms,
        seen,
        whole: false,
    }
}

/// Asserts that `cmd` is refused with a reason that says `why`, as `check`
/// says beforehand, and that the state is unchanged, byte for byte.
fn refused(sm: &mut StateMachine, cmd: &Command, why: &str) -> Rejected {
    let before = sm.snapshot().unwrap();
    let checked = sm.check(cmd);
    let err = sm.apply(cmd).unwrap_err();
    assert_eq!(checked, Err(err.clone()));
    let text = err.to_string();
    assert!(text.contains(why), "{text:?} does not say {why:?}");
    assert!(text.len() < 300, "a long message: {text:?}");
    assert!(
        sm.snapshot().unwrap() == before,
        "{text}: the state changed"
    );
    err
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
    assert_eq!(sm.log_now_ms(), 1_000);
}

#[test]
fn an_older_report_never_overwrites_a_newer_one_and_log_time_never_goes_back() {
    let mut sm = three_zones();
    observe(&mut sm, 2, 3_000, "pg", State::Down);
    observe(&mut sm, 1, 5_000, "pg", State::Down);
    assert_eq!(
        sm.log_now_ms(),
        3_000,
        "the second-latest of 5_000 and 3_000"
    );
    // A report of node 1's that was taken before its last one (a proposal
    // that waited behind a newer one) does not replace its view.
    observe(&mut sm, 1, 4_000, "pg", State::Up);
    let v = &sm.views("pg").unwrap()[&1];
    assert_eq!((v.verdict, v.at_ms), (State::Down, 5_000));
    assert_eq!(state(&sm, "pg"), State::Down);
    // But node 1's clock is now its latest report's, 4_000, not the largest
    // it ever sent: once node 2 passes it, log time is 4_000.
    observe(&mut sm, 2, 6_000, "pg", State::Down);
    assert_eq!(sm.log_now_ms(), 4_000);
    // Two members join: log time would be the third-latest of the three
    // clocks (3_000 of 6_000, 4_000, 3_000) if it could go back. It cannot.
    observe(&mut sm, 3, 3_000, "pg", State::Down);
    for id in [4, 5] {
        sm.apply(&Command::SetMember {
            id,
            member: Member {
                zone: "zone-d".into(),
                addr: format!("wd-{id}:7400"),
                instance: 0,
            },
        })
        .unwrap();
    }
    observe(&mut sm, 3, 3_001, "pg", State::Down);
    assert_eq!(sm.log_now_ms(), 4_000);
}

#[test]
fn a_first_reporter_an_hour_ahead_does_not_freeze_expiry() {
    const HOUR: u64 = 3_600_000;
    let t = 1_000_000;
    let mut sm = three_zones();
    // Node 1's clock is an hour ahead, and it reports first: log time follows
    // it, provisionally.
    observe(&mut sm, 1, t + HOUR, "pg", State::Up);
    assert_eq!(sm.log_now_ms(), t + HOUR);
    // A second clock settles log time: the lower of the two. Node 1's view
    // moves with it and keeps its 3 s.
    observe(&mut sm, 2, t, "pg", State::Up);
    observe(&mut sm, 3, t, "pg", State::Down);
    assert_eq!(sm.log_now_ms(), t);
    assert_eq!(sm.views("pg").unwrap()[&1].expires_at_ms, t + 3_000);
    assert_eq!(state(&sm, "pg"), State::Suspect);
    assert_eq!(sm.agreed()["pg"].since_ms, t);
    // Node 3 falls silent; nodes 1 and 2 go on reporting. Its DOWN expires
    // 3 s later, as it would have with every clock right.
    for dt in (500..=3_000).step_by(500) {
        observe(&mut sm, 1, t + HOUR + dt, "pg", State::Up);
        observe(&mut sm, 2, t + dt, "pg", State::Up);
    }
    assert_eq!(sm.log_now_ms(), t + 3_000);
    assert_eq!(sm.agreed()["pg"].zones["zone-c"], State::Down);
    let out = observe(&mut sm, 2, t + 3_001, "pg", State::Up);
    assert_eq!(sm.agreed()["pg"].zones["zone-c"], State::Unknown);
    assert_eq!(state(&sm, "pg"), State::Up);
    assert_eq!(out[0].at_ms, t + 3_001);
    assert_eq!(sm.agreed()["pg"].since_ms, t + 3_001);
}

#[test]
fn a_lone_reporter_keeps_log_time_moving() {
    // Nodes 2 and 3 have no targets, so never report: node 1's clock alone
    // drives log time, and its own observations expire on it.
    let mut sm = three_zones();
    observe(&mut sm, 1, 1_000, "pg", State::Down);
    observe(&mut sm, 1, 5_000, "redis", State::Up);
    assert_eq!(sm.log_now_ms(), 5_000);
    assert_eq!(sm.agreed()["pg"].zones["zone-a"], State::Unknown);
    assert_eq!(state(&sm, "pg"), State::Unknown);
}

#[test]
fn a_node_whose_clock_steps_back_counts_again_from_its_second_report() {
    const HOUR: u64 = 3_600_000;
    let t = 10 * HOUR;
    let mut sm = three_zones();
    for n in 1..=3 {
        observe(&mut sm, n, t, "pg", State::Up);
    }
    // Node 3's clock steps back an hour. Its first report could be a
    // proposal that waited behind its newer ones: not taken.
    observe(&mut sm, 3, t - HOUR + 500, "pg", State::Down);
    assert_eq!(sm.views("pg").unwrap()[&3].verdict, State::Up);
    // Its second report, later than the first, is: the node's clock went
    // back. Before, it was ignored until its clock caught up, an hour on.
    observe(&mut sm, 3, t - HOUR + 1_000, "pg", State::Down);
    let v = &sm.views("pg").unwrap()[&3];
    assert_eq!((v.verdict, v.at_ms), (State::Down, t - HOUR + 1_000));
    assert_eq!(sm.agreed()["pg"].zones["zone-c"], State::Down);
    assert_eq!(state(&sm, "pg"), State::Suspect);
    // It stays counted, and neither holds log time back nor drags it.
    for dt in (1_000..=10_000).step_by(1_000) {
        observe(&mut sm, 1, t + dt, "pg", State::Up);
        observe(&mut sm, 2, t + dt, "pg", State::Down);
        observe(&mut sm, 3, t - HOUR + 1_000 + dt, "pg", State::Down);
    }
    assert_eq!(sm.log_now_ms(), t + 10_000);
    assert_eq!(state(&sm, "pg"), State::Down);
    assert_eq!(sm.agreed()["pg"].down_zones, ["zone-b", "zone-c"]);
}

#[test]
fn single_zone_needs_a_majority_of_nodes() {
    let mut sm = members(&[(1, "dc"), (2, "dc"), (3, "dc")]);
    observe(&mut sm, 1, 1, "app", State::Down);
    assert_eq!(state(&sm, "app"), State::Suspect);
    observe(&mut sm, 2, 1, "app", State::Down);
    assert_eq!(state(&sm, "app"), State::Down);
    assert_eq!(sm.agreed()["app"].down_zones, ["dc"]);
}

#[test]
fn single_zone_suspect_names_the_zone_though_its_majority_says_up() {
    let mut sm = members(&[(1, "dc"), (2, "dc"), (3, "dc")]);
    for n in 1..=3 {
        observe(&mut sm, n, 1_000, "app", State::Up);
    }
    let t = observe(&mut sm, 3, 1_100, "app", State::Down);
    let a = &sm.agreed()["app"];
    assert_eq!(a.state, State::Suspect);
    assert_eq!(a.zones["dc"], State::Up, "two of three still see it UP");
    assert_eq!(a.down_zones, ["dc"]);
    assert_eq!(t.len(), 1);
    assert_eq!((t[0].from, t[0].to), (State::Up, State::Suspect));
    assert_eq!(t[0].down_zones, ["dc"]);
    // Back UP: nobody sees it DOWN, nobody is named.
    observe(&mut sm, 3, 1_200, "app", State::Up);
    assert_eq!(state(&sm, "app"), State::Up);
    assert!(sm.agreed()["app"].down_zones.is_empty());
}

#[test]
fn stale_backups_need_a_quorum() {
    let mut sm = three_zones();
    observe(&mut sm, 1, 1, "pg-backups", State::Stale);
    assert_eq!(state(&sm, "pg-backups"), State::Unknown);
    observe(&mut sm, 2, 1, "pg-backups", State::Stale);
    assert_eq!(state(&sm, "pg-backups"), State::Stale);
}

#[test]
fn rejected_commands_leave_the_state_unchanged() {
    let mut sm = three_zones();
    observe(&mut sm, 1, 1_000, "pg", State::Down);
    observe(&mut sm, 2, 1_000, "pg", State::Up);
    let before = sm.clone();
    // An observation from a non-member: no clock, no view, no log time.
    let err = sm
        .apply(&Command::Observe {
            node: 9,
            at_ms: 9_000_000,
            valid_for_ms: 3_000,
            seen: vec![Seen {
                target: "pg".into(),
                verdict: State::Down,
                latency_us: 1,
                error: None,
            }],
            whole: false,
        })
        .unwrap_err();
    assert_eq!(err, Rejected::NotAMember(9));
    assert_eq!(sm, before);
    assert_eq!(
        sm.apply(&Command::RemoveMember { id: 9 }),
        Err(Rejected::UnknownMember(9))
    );
    assert_eq!(sm, before);
    assert_eq!(sm.snapshot().unwrap(), before.snapshot().unwrap());
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
    assert!(!sm.views("app").unwrap().contains_key(&2), "{sm:#?}");
    let a = &sm.agreed()["app"];
    assert_eq!(a.zones.keys().collect::<Vec<_>>(), ["zone-a", "zone-c"]);
    assert_eq!(a.down_zones, ["zone-a"]);
    assert!(!sm.members().contains_key(&2));
    // Added back, it starts afresh: its old DOWN does not count again.
    sm.apply(&Command::SetMember {
        id: 2,
        member: Member {
            zone: "zone-b".into(),
            addr: "wd-2:7400".into(),
            instance: 0,
        },
    })
    .unwrap();
    assert_eq!(state(&sm, "app"), State::Suspect);
    assert_eq!(sm.agreed()["app"].zones["zone-b"], State::Unknown);
}

#[test]
fn a_target_name_is_1_to_128_bytes_of_printable_ascii() {
    let mut sm = three_zones();
    observe(&mut sm, 1, 1_000, "pg", State::Up);
    let long = "n".repeat(MAX_NAME_BYTES + 1);
    for (name, why) in [
        ("", "target name \"\": is empty"),
        (long.as_str(), "is 129 bytes long: at most 128"),
        ("p g", "printable ASCII only"),
        ("pg\n", "printable ASCII only"),
        ("\u{1b}[2Jpg", "printable ASCII only"),
        ("pg\u{7f}", "printable ASCII only"),
        ("café", "printable ASCII only"),
    ] {
        let err = refused(
            &mut sm,
            &observation(1, 2_000, 3_000, vec![seen(name)]),
            why,
        );
        assert!(matches!(err, Rejected::TargetName(..)), "{err:?}");
        // One bad name refuses the whole batch: the good one is not taken.
        let batch = vec![seen("redis"), seen(name)];
        refused(&mut sm, &observation(1, 2_000, 3_000, batch), why);
    }
    // The long name is shown cut short, with its length.
    let err = sm
        .apply(&observation(
            1,
            2_000,
            3_000,
            vec![seen(&"n".repeat(100_000))],
        ))
        .unwrap_err();
    assert!(err.to_string().contains("… (100000 bytes)"), "{err}");
    // At the limit, and with punctuation: taken.
    let at_limit = "n".repeat(MAX_NAME_BYTES);
    let batch = vec![seen(&at_limit), seen("pg-primary_1.eu:5432/x")];
    sm.apply(&observation(1, 2_000, 3_000, batch)).unwrap();
    assert!(sm.views(&at_limit).is_some());
}

#[test]
fn an_observation_carries_at_most_10_000_verdicts() {
    let mut sm = three_zones();
    let batch = |n: usize| (0..n).map(|i| seen(&format!("t{i}"))).collect::<Vec<_>>();
    let err = refused(
        &mut sm,
        &observation(1, 1_000, 3_000, batch(MAX_SEEN_PER_OBSERVE + 1)),
        "10001 verdicts in one observation: at most 10000",
    );
    assert_eq!(err, Rejected::TooManySeen(10_001));
    sm.apply(&observation(1, 1_000, 3_000, batch(MAX_SEEN_PER_OBSERVE)))
        .unwrap();
    assert_eq!(sm.agreed().len(), 10_000);
}

#[test]
fn the_state_holds_at_most_20_000_targets() {
    let mut sm = three_zones();
    let names = |from: usize, to: usize| (from..to).map(|i| seen(&format!("t{i}"))).collect();
    sm.apply(&observation(1, 1_000, 3_000, names(0, 10_000)))
        .unwrap();
    // Up to the limit, known targets included.
    sm.apply(&observation(2, 1_000, 3_000, names(5_000, 15_000)))
        .unwrap();
    sm.apply(&observation(3, 1_000, 3_000, names(10_000, MAX_TARGETS)))
        .unwrap();
    assert_eq!(sm.agreed().len(), MAX_TARGETS);
    // One more is refused, alone or with known ones.
    let err = refused(
        &mut sm,
        &observation(1, 2_000, 3_000, vec![seen("one-more")]),
        "1 new target(s) on top of 20000: at most 20000 targets",
    );
    assert_eq!(
        err,
        Rejected::TooManyTargets {
            new: 1,
            known: 20_000
        }
    );
    refused(
        &mut sm,
        &observation(2, 2_000, 3_000, vec![seen("t7"), seen("one-more")]),
        "at most 20000 targets",
    );
    // Known targets are still taken.
    let mut down = seen("t7");
    down.verdict = State::Down;
    sm.apply(&observation(2, 2_000, 3_000, vec![down])).unwrap();
    assert_eq!(sm.views("t7").unwrap()[&2].verdict, State::Down);
}

#[test]
fn an_observation_is_valid_for_at_most_an_hour() {
    let mut sm = three_zones();
    observe(&mut sm, 1, 1_000, "pg", State::Up);
    for valid_for_ms in [MAX_VALID_FOR_MS + 1, u64::MAX] {
        let err = refused(
            &mut sm,
            &observation(2, 1_000, valid_for_ms, vec![seen("pg")]),
            &format!("valid_for_ms {valid_for_ms} is longer than the maximum, 3600000 ms"),
        );
        assert_eq!(err, Rejected::ValidTooLong(valid_for_ms));
    }
    sm.apply(&observation(2, 1_000, MAX_VALID_FOR_MS, vec![seen("pg")]))
        .unwrap();
    assert_eq!(
        sm.views("pg").unwrap()[&2].expires_at_ms,
        sm.log_now_ms() + 3_600_000
    );
}

#[test]
fn a_stamp_past_the_year_9999_is_refused() {
    let mut sm = three_zones();
    observe(&mut sm, 1, 1_000, "pg", State::Up);
    observe(&mut sm, 2, 1_000, "pg", State::Up);
    for at_ms in [MAX_STAMP_MS + 1, u64::MAX] {
        let err = refused(
            &mut sm,
            &observation(3, at_ms, 3_000, vec![seen("pg")]),
            &format!("at_ms {at_ms} is past the end of the year 9999"),
        );
        assert_eq!(err, Rejected::StampTooLate(at_ms));
    }
    // 9999-12-31T23:59:59.999Z itself is taken (a wrong clock, not a
    // forged one, for all the state can tell); one clock there does not
    // move log time.
    assert_eq!(MAX_STAMP_MS, 253_402_300_800_000 - 1);
    observe(&mut sm, 3, MAX_STAMP_MS, "pg", State::Up);
    assert_eq!(sm.log_now_ms(), 1_000);
}

#[test]
fn reports_after_a_long_pause_are_taken() {
    // No bound relative to log time: log time waits for reports, so the
    // first ones after a pause are far ahead of it, and must count.
    const DAY: u64 = 24 * 3_600_000;
    let t = 1_700_000_000_000;
    // The whole cluster was stopped for three days.
    let mut sm = three_zones();
    for n in 1..=3 {
        observe(&mut sm, n, t, "pg", State::Up);
    }
    for n in 1..=3 {
        observe(&mut sm, n, t + 3 * DAY, "pg", State::Down);
    }
    assert_eq!(sm.log_now_ms(), t + 3 * DAY);
    assert_eq!(state(&sm, "pg"), State::Down);
    // A one-member cluster, down for a month.
    let mut one = members(&[(1, "dc")]);
    observe(&mut one, 1, t, "pg", State::Up);
    observe(&mut one, 1, t + 30 * DAY, "pg", State::Down);
    assert_eq!(one.log_now_ms(), t + 30 * DAY);
    assert_eq!(state(&one, "pg"), State::Down);
    // The only member with targets, back after a day.
    let mut lone = three_zones();
    observe(&mut lone, 1, t, "pg", State::Up);
    observe(&mut lone, 1, t + DAY, "pg", State::Down);
    assert_eq!(lone.log_now_ms(), t + DAY);
}

#[test]
fn a_long_probe_error_is_cut_at_a_character_boundary() {
    let mut sm = three_zones();
    let stored = |sm: &mut StateMachine, error: String| {
        let mut s = seen("pg");
        s.error = Some(error);
        sm.apply(&observation(1, 1_000, 3_000, vec![s])).unwrap();
        sm.views("pg").unwrap()[&1].error.clone().unwrap()
    };
    // Up to the limit, whole.
    let whole = "e".repeat(MAX_ERROR_BYTES);
    assert_eq!(stored(&mut sm, whole.clone()), whole);
    // Longer: cut, marked, at most the limit.
    let cut = stored(&mut sm, "e".repeat(MAX_ERROR_BYTES + 1));
    assert_eq!(cut, format!("{}…", "e".repeat(MAX_ERROR_BYTES - 3)));
    assert_eq!(cut.len(), MAX_ERROR_BYTES);
    // Never inside a character: 600 two-byte characters keep 510.
    let cut = stored(&mut sm, "é".repeat(600));
    assert_eq!(cut, format!("{}…", "é".repeat(510)));
    let cut = stored(&mut sm, "x".repeat(10_000_000));
    assert_eq!(cut.len(), MAX_ERROR_BYTES);
}

fn set_member(id: NodeId, zone: &str, addr: &str) -> Command {
    Command::SetMember {
        id,
        member: Member {
            zone: zone.into(),
            addr: addr.into(),
            instance: 0,
        },
    }
}

#[test]
fn a_member_zone_is_1_to_128_bytes_of_printable_ascii() {
    let mut sm = three_zones();
    let long = "z".repeat(MAX_NAME_BYTES + 1);
    for (zone, why) in [
        ("", "zone \"\": is empty"),
        (long.as_str(), "is 129 bytes long: at most 128"),
        ("zone a", "printable ASCII only"),
        ("zone-a\r", "printable ASCII only"),
        ("zône", "printable ASCII only"),
    ] {
        let err = refused(&mut sm, &set_member(4, zone, "wd-4:7400"), why);
        assert!(matches!(err, Rejected::Zone(..)), "{err:?}");
    }
    let at_limit = "z".repeat(MAX_NAME_BYTES);
    sm.apply(&set_member(4, &at_limit, "wd-4:7400")).unwrap();
    assert_eq!(sm.members()[&4].zone, at_limit);
}

#[test]
fn a_member_address_is_host_port_in_at_most_255_printable_bytes() {
    let mut sm = three_zones();
    let host = |n: usize| "h".repeat(n);
    let too_long = format!("{}:7400", host(MAX_ADDR_BYTES - 4));
    for (addr, why) in [
        ("wd-4", "is not host:port"),
        (":7400", "has no host"),
        ("wd-4:", "no valid port"),
        ("wd-4:0", "no valid port (a number from 1 to 65535)"),
        ("wd-4:65536", "no valid port"),
        ("wd-4:+7400", "no valid port"),
        ("wd-4:http", "no valid port"),
        ("wd 4:7400", "printable ASCII only"),
        ("wd-4:7400\n", "printable ASCII only"),
        ("\u{1b}]8;;wd-4:7400", "printable ASCII only"),
        ("wd-ä:7400", "printable ASCII only"),
        (too_long.as_str(), "is 256 bytes long: at most 255"),
    ] {
        let err = refused(&mut sm, &set_member(4, "zone-d", addr), why);
        assert!(matches!(err, Rejected::Addr(..)), "{err:?}");
    }
    // At the limits: taken. IPv6 in brackets too.
    let at_limit = format!("{}:65535", host(MAX_ADDR_BYTES - 6));
    sm.apply(&set_member(4, "zone-d", &at_limit)).unwrap();
    sm.apply(&set_member(5, "zone-d", "[::1]:1")).unwrap();
    assert_eq!(sm.members()[&4].addr, at_limit);
    assert_eq!(sm.members()[&4].addr.len(), 255);
}

#[test]
fn two_members_never_share_an_address() {
    let mut sm = three_zones();
    // Node 2 is at wd-2:7400: the same host in any case, the same port
    // however written, is refused to anyone else.
    for addr in ["wd-2:7400", "WD-2:7400", "Wd-2:007400"] {
        for id in [1, 4] {
            let err = refused(
                &mut sm,
                &set_member(id, "zone-d", addr),
                &format!("addr \"{addr}\" is already node 2's address"),
            );
            assert!(matches!(err, Rejected::DuplicateAddr { other: 2, .. }));
        }
    }
    // A member keeps its own address (a zone change), or takes a new one;
    // another port of the same host is another address.
    sm.apply(&set_member(2, "zone-d", "WD-2:7400")).unwrap();
    sm.apply(&set_member(4, "zone-d", "wd-2:7401")).unwrap();
    // Once node 2 is removed, its address is free.
    sm.apply(&Command::RemoveMember { id: 2 }).unwrap();
    sm.apply(&set_member(5, "zone-b", "wd-2:7400")).unwrap();
}

/// The rules restated from scratch, for the randomized check. It is fed the
/// same commands as the state machine and keeps its own members, clocks,
/// reports and log time; after every command it recomputes every target
/// from those alone (no shortcut, nothing read from the state machine), and
/// says which transitions the command must have produced. Log times noted
/// before log time settled are kept as noted and translated when read.
#[derive(Debug, Clone)]
struct Oracle {
    zone_of: BTreeMap<NodeId, String>,
    addr_of: BTreeMap<NodeId, String>,
    /// Each member's clock: the stamp of its latest report, in log order.
    stamp: BTreeMap<NodeId, u64>,
    now: u64,
    /// `None` until log time settles; then how far it moved in doing so.
    settled: Option<i64>,
    reports: BTreeMap<(String, NodeId), Report>,
    records: BTreeMap<String, Record>,
}

#[derive(Debug, Clone)]
struct Report {
    verdict: State,
    latency_us: u64,
    error: Option<String>,
    at: u64,
    /// The stamp of the observation that carried verdict, latency, error.
    measured_at: u64,
    /// Log time until which it counts, as noted (see `provisional`).
    until: u64,
    /// Noted before log time settled.
    provisional: bool,
}

#[derive(Debug, Clone)]
struct Record {
    state: State,
    since: u64,
    provisional: bool,
    zones: BTreeMap<String, State>,
    down_zones: Vec<String>,
}

impl Oracle {
    fn new(spec: &[(NodeId, &str)]) -> Self {
        Oracle {
            zone_of: spec.iter().map(|(id, z)| (*id, z.to_string())).collect(),
            addr_of: spec
                .iter()
                .map(|(id, _)| (*id, format!("wd-{id}:7400")))
                .collect(),
            stamp: BTreeMap::new(),
            now: 0,
            settled: None,
            reports: BTreeMap::new(),
            records: BTreeMap::new(),
        }
    }

    /// A noted log time, read on today's log time.
    fn read(&self, t: u64, provisional: bool) -> u64 {
        match (provisional, self.settled) {
            (true, Some(moved)) => {
                (i128::from(t) + i128::from(moved)).clamp(0, i128::from(u64::MAX)) as u64
            }
            _ => t,
        }
    }

    fn agreed(&self) -> BTreeMap<String, Agreed> {
        self.records
            .iter()
            .map(|(t, r)| {
                let a = Agreed {
                    state: r.state,
                    since_ms: self.read(r.since, r.provisional),
                    zones: r.zones.iter().map(|(z, v)| (z.clone(), *v)).collect(),
                    down_zones: r.down_zones.clone(),
                };
                (t.clone(), a)
            })
            .collect()
    }

    /// The transitions `cmd` must produce, or `Err` if it must be rejected.
    fn apply(&mut self, cmd: &Command) -> Result<Vec<Transition>, ()> {
        match cmd {
            Command::Observe {
                node,
                at_ms,
                valid_for_ms,
                seen,
                whole,
            } => {
                if !self.zone_of.contains_key(node) {
                    return Err(());
                }
                // The limits, restated: a batch of 10 000 at most, an hour's
                // validity, a stamp before the year 10000, names of 1 to 128
                // printable ASCII bytes, 20 000 targets.
                let bad_name = |t: &str| {
                    t.is_empty() || t.len() > 128 || t.chars().any(|c| !c.is_ascii_graphic())
                };
                let new: BTreeSet<&String> = seen
                    .iter()
                    .map(|x| &x.target)
                    .filter(|t| !self.records.contains_key(*t))
                    .collect();
                if seen.len() > 10_000
                    || *valid_for_ms > 3_600_000
                    || *at_ms >= 253_402_300_800_000
                    || seen.iter().any(|x| bad_name(&x.target))
                    || self.records.len() + new.len() > 20_000
                {
                    return Err(());
                }
                let prev = self.stamp.insert(*node, *at_ms);
                self.move_log_time();
                let provisional = self.settled.is_none();
                for x in seen {
                    let key = (x.target.clone(), *node);
                    if Self::replaces(self.reports.get(&key), *at_ms, prev) {
                        let r = Report {
                            verdict: x.verdict,
                            latency_us: x.latency_us,
                            error: x.error.clone(),
                            at: *at_ms,
                            measured_at: *at_ms,
                            until: self.now.saturating_add(*valid_for_ms),
                            provisional,
                        };
                        self.reports.insert(key, r);
                    }
                    let now = self.now;
                    self.records.entry(x.target.clone()).or_insert(Record {
                        state: State::Unknown,
                        since: now,
                        provisional,
                        zones: BTreeMap::new(),
                        down_zones: Vec::new(),
                    });
                }
                if *whole {
                    // The node's other reports go, as a replacement would.
                    let named: BTreeSet<&String> = seen.iter().map(|x| &x.target).collect();
                    let gone: Vec<(String, NodeId)> = self
                        .reports
                        .iter()
                        .filter(|((t, n), r)| {
                            n == node && !named.contains(t) && Self::replaces(Some(r), *at_ms, prev)
                        })
                        .map(|(k, _)| k.clone())
                        .collect();
                    for k in gone {
                        self.reports.remove(&k);
                    }
                }
            }
            Command::Refresh {
                node,
                at_ms,
                valid_for_ms,
                digest,
            } => {
                if !self.zone_of.contains_key(node)
                    || *valid_for_ms > 3_600_000
                    || *at_ms >= 253_402_300_800_000
                    || *digest != self.digest(*node)
                {
                    return Err(());
                }
                let prev = self.stamp.insert(*node, *at_ms);
                self.move_log_time();
                let (now, provisional) = (self.now, self.settled.is_none());
                for ((_, n), r) in self.reports.iter_mut() {
                    if n == node && Self::replaces(Some(r), *at_ms, prev) {
                        r.at = *at_ms;
                        r.until = now.saturating_add(*valid_for_ms);
                        r.provisional = provisional;
                    }
                }
            }
            Command::SetMember { id, member } => {
                // Zone as a name; address host:port of at most 255
                // printable ASCII bytes, port 1 to 65535, and no other
                // member's (host in any case, port as a number).
                let z = &member.zone;
                if z.is_empty() || z.len() > 128 || z.chars().any(|c| !c.is_ascii_graphic()) {
                    return Err(());
                }
                let key = |a: &str| -> Option<(String, u16)> {
                    let (host, port) = a.rsplit_once(':')?;
                    let ok = a.len() <= 255
                        && a.chars().all(|c| c.is_ascii_graphic())
                        && !host.is_empty()
                        && !port.is_empty()
                        && port.chars().all(|c| c.is_ascii_digit());
                    let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
                    ok.then(|| (host.to_lowercase(), port))
                };
                let Some(mine) = key(&member.addr) else {
                    return Err(());
                };
                if self
                    .addr_of
                    .iter()
                    .any(|(other, a)| other != id && key(a).as_ref() == Some(&mine))
                {
                    return Err(());
                }
                self.zone_of.insert(*id, member.zone.clone());
                self.addr_of.insert(*id, member.addr.clone());
            }
            Command::RemoveMember { id } => {
                if self.zone_of.remove(id).is_none() {
                    return Err(());
                }
                self.addr_of.remove(id);
                self.stamp.remove(id);
                self.reports.retain(|(_, n), _| n != id);
            }
            // Operator requests: no target changes (the oracle does not
            // generate them).
            // Recovery entries move no agreed state (their own tests are in
            // recovery::incidents).
            Command::Audit(_) | Command::Recovery(_) => return Ok(Vec::new()),
        }
        let mut out = Vec::new();
        let targets: Vec<String> = self.records.keys().cloned().collect();
        for t in targets {
            let (state, zones, down_zones) = self.judge(&t);
            let (now, provisional) = (self.now, self.settled.is_none());
            let rec = self.records.get_mut(&t).unwrap();
            if rec.state != state {
                out.push(Transition {
                    target: t.clone(),
                    from: rec.state,
                    to: state,
                    at_ms: now,
                    down_zones: down_zones.clone(),
                });
                rec.state = state;
                rec.since = now;
                rec.provisional = provisional;
            }
            rec.zones = zones;
            rec.down_zones = down_zones;
        }
        Ok(out)
    }

    /// Whether a report stamped `at` replaces `old`: it is newer, or the
    /// node's clock went back before its previous report (`prev`) and this
    /// one follows that one.
    fn replaces(old: Option<&Report>, at: u64, prev: Option<u64>) -> bool {
        old.is_none_or(|old| at >= old.at || prev.is_some_and(|p| p < old.at && at >= p))
    }

    /// The digest of a node's reports, restated: FNV-1a (64 bits) over
    /// each report in target order: name length and name, verdict code,
    /// latency, error (0; or 1, length and bytes); integers as 8 bytes,
    /// little-endian.
    fn digest(&self, node: NodeId) -> u64 {
        let mut bytes: Vec<u8> = Vec::new();
        for ((t, _), r) in self.reports.iter().filter(|((_, n), _)| *n == node) {
            bytes.extend((t.len() as u64).to_le_bytes());
            bytes.extend(t.as_bytes());
            let codes = [
                State::Unknown,
                State::Up,
                State::Down,
                State::Suspect,
                State::Stale,
            ];
            bytes.push(codes.iter().position(|s| *s == r.verdict).unwrap() as u8);
            bytes.extend(r.latency_us.to_le_bytes());
            match &r.error {
                None => bytes.push(0),
                Some(e) => {
                    bytes.push(1);
                    bytes.extend((e.len() as u64).to_le_bytes());
                    bytes.extend(e.as_bytes());
                }
            }
        }
        bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
        })
    }

    /// Every report as the state machine's views must hold it.
    fn views(&self) -> BTreeMap<(String, NodeId), NodeView> {
        self.reports
            .iter()
            .map(|(k, r)| {
                let v = NodeView {
                    verdict: r.verdict,
                    latency_us: r.latency_us,
                    error: r.error.clone(),
                    at_ms: r.at,
                    expires_at_ms: self.read(r.until, r.provisional),
                    measured_at_ms: r.measured_at,
                };
                (k.clone(), v)
            })
            .collect()
    }

    /// Log time: with r member clocks in ascending order, the (f+1)-th
    /// largest when r > f, else the lower median; only forward, except when
    /// it settles (two clocks, or the one member's).
    fn move_log_time(&mut self) {
        let mut asc: Vec<u64> = self.stamp.values().copied().collect();
        asc.sort_unstable();
        let (n, r) = (self.zone_of.len(), asc.len());
        let f = (n - 1) / 2;
        let clock = if r > f {
            asc[r - 1 - f]
        } else {
            asc[(r - 1) / 2]
        };
        if self.settled.is_none() && (r >= 2 || n == 1) {
            let moved = i128::from(clock) - i128::from(self.now);
            self.settled = Some(moved.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64);
            self.now = clock;
        } else {
            self.now = self.now.max(clock);
        }
    }

    fn fresh(&self, target: &str, node: NodeId) -> Option<State> {
        self.reports
            .get(&(target.to_owned(), node))
            .filter(|r| self.read(r.until, r.provisional) >= self.now)
            .map(|r| r.verdict)
    }

    fn judge(&self, target: &str) -> (State, BTreeMap<String, State>, Vec<String>) {
        let zone_names: BTreeSet<&String> = self.zone_of.values().collect();
        let mut zones = BTreeMap::new();
        for z in &zone_names {
            let vs: Vec<State> = self
                .zone_of
                .iter()
                .filter(|(_, zz)| zz == z)
                .filter_map(|(id, _)| self.fresh(target, *id))
                .collect();
            let v = [State::Up, State::Down, State::Stale, State::Unknown]
                .into_iter()
                .find(|s| vs.iter().filter(|v| *v == s).count() * 2 > vs.len())
                .unwrap_or(State::Unknown);
            zones.insert((*z).clone(), v);
        }
        let votes: Vec<State> = if zone_names.len() == 1 {
            self.zone_of
                .keys()
                .map(|id| self.fresh(target, *id).unwrap_or(State::Unknown))
                .collect()
        } else {
            zones.values().copied().collect()
        };
        let n = |s| votes.iter().filter(|v| **v == s).count();
        let q = votes.len() / 2 + 1;
        let state = if n(State::Down) >= q {
            State::Down
        } else if n(State::Down) > 0 {
            State::Suspect
        } else if n(State::Stale) >= q {
            State::Stale
        } else if n(State::Up) >= q {
            State::Up
        } else {
            State::Unknown
        };
        // With one zone, the zone is named when any fresh node sees DOWN.
        let down_zones = zones
            .iter()
            .filter(|(z, v)| {
                if zones.len() == 1 {
                    self.zone_of.keys().any(|id| {
                        self.zone_of[id] == **z && self.fresh(target, *id) == Some(State::Down)
                    })
                } else {
                    **v == State::Down
                }
            })
            .map(|(z, _)| z.clone())
            .collect();
        (state, zones, down_zones)
    }
}

/// Node clocks for a random run: each node is off by its own offset, which
/// now and then jumps an hour ahead or back (a bad NTP step).
struct Clocks {
    now: u64,
    offset: BTreeMap<NodeId, i64>,
}

impl Clocks {
    fn read(&self, node: NodeId) -> u64 {
        let off = self.offset.get(&node).copied().unwrap_or(0);
        u64::try_from(i64::try_from(self.now).unwrap() + off).unwrap_or(0)
    }
}

fn random_command(rng: &mut StdRng, clocks: &mut Clocks, zones: usize) -> Command {
    clocks.now += rng.random_range(0..1_500);
    let targets = ["pg", "redis", "app", "s3"];
    let verdicts = [State::Up, State::Down, State::Stale, State::Unknown];
    let node = rng.random_range(1..=7);
    let some_seen = |rng: &mut StdRng| -> Vec<Seen> {
        (0..rng.random_range(0..4))
            .map(|_| Seen {
                target: targets[rng.random_range(0..targets.len())].into(),
                verdict: verdicts[rng.random_range(0..verdicts.len())],
                latency_us: rng.random_range(0..10_000),
                error: [None, None, Some("refused"), Some("timed out")][rng.random_range(0..4)]
                    .map(String::from),
            })
            .collect()
    };
    match rng.random_range(0..52) {
        // A refresh: its digest is filled in by the caller (right, mostly).
        43..=47 => Command::Refresh {
            node,
            at_ms: if rng.random_ratio(1, 8) {
                clocks.read(node).saturating_sub(rng.random_range(0..5_000))
            } else {
                clocks.read(node)
            },
            valid_for_ms: [3_000, 1_000, 3_600_001][rng.random_range(0..3)],
            digest: 0,
        },
        // A node's whole set: what it no longer names goes.
        48..=51 => Command::Observe {
            node,
            at_ms: clocks.read(node),
            valid_for_ms: 3_000,
            seen: some_seen(rng),
            whole: true,
        },
        0 | 1 => Command::RemoveMember {
            id: rng.random_range(1..=7),
        },
        2 | 3 => {
            // Mostly its own address; now and then another's (as written,
            // or in other case and with a padded port), or a bad one; now
            // and then a bad zone.
            let id = rng.random_range(1..=7);
            let other = rng.random_range(1..=7);
            let addr = match rng.random_range(0..12) {
                0 => format!("wd-{other}:7400"),
                1 => format!("WD-{other}:07400"),
                2 => [
                    "wd", "wd:0", "wd:65536", "wd:+1", ":7400", "w d:1", "wd:1\n",
                ][rng.random_range(0..7)]
                .to_owned(),
                3 => format!("{}:{id}", "h".repeat(rng.random_range(252..256))),
                _ => format!("wd-{id}:7400"),
            };
            let zone = if rng.random_ratio(1, 12) {
                ["", "zone a", "zone-é"][rng.random_range(0..3)].to_owned()
            } else {
                format!("zone-{}", rng.random_range(0..zones))
            };
            Command::SetMember {
                id,
                member: Member {
                    zone,
                    addr,
                    instance: 0,
                },
            }
        }
        4 => {
            // A bad clock step: an hour ahead, or back to where it was.
            let hour = if rng.random_bool(0.5) {
                3_600_000
            } else {
                -3_600_000
            };
            clocks.offset.insert(node, hour);
            Command::Observe {
                node,
                at_ms: clocks.read(node),
                valid_for_ms: 3_000,
                seen: vec![],
                whole: false,
            }
        }
        // Crafted entries, at and past the limits.
        40 => Command::Observe {
            node,
            at_ms: [MAX_STAMP_MS + 1, u64::MAX][rng.random_range(0..2)],
            valid_for_ms: 3_000,
            seen: some_seen(rng),
            whole: false,
        },
        41 => Command::Observe {
            node,
            at_ms: clocks.read(node),
            valid_for_ms: [3_600_000, 3_600_001, u64::MAX][rng.random_range(0..3)],
            seen: some_seen(rng),
            whole: false,
        },
        42 => {
            let names = ["", "p g", "pg\n", "é", &"n".repeat(128), &"n".repeat(129)];
            let mut seen = some_seen(rng);
            seen.push(Seen {
                target: names[rng.random_range(0..names.len())].to_owned(),
                verdict: State::Down,
                latency_us: 0,
                error: None,
            });
            Command::Observe {
                node,
                at_ms: clocks.read(node),
                valid_for_ms: 3_000,
                seen,
                whole: false,
            }
        }
        n => Command::Observe {
            node,
            // A proposal that waited behind newer ones is up to 5 s old;
            // others disagree with the wall clock by their offset.
            at_ms: if n == 5 {
                clocks.read(node).saturating_sub(rng.random_range(0..5_000))
            } else {
                clocks.read(node)
            },
            valid_for_ms: if n == 6 { 1_000 } else { 3_000 },
            seen: some_seen(rng),
            whole: false,
        },
    }
}

/// Starting memberships: three zones, one zone, two zones (even counts).
const LAYOUTS: [&[(NodeId, &str)]; 3] = [
    &[
        (1, "zone-0"),
        (2, "zone-1"),
        (3, "zone-2"),
        (4, "zone-0"),
        (5, "zone-1"),
    ],
    &[(1, "zone-0"), (2, "zone-0"), (3, "zone-0")],
    &[(1, "zone-0"), (2, "zone-1"), (3, "zone-0"), (4, "zone-1")],
];

#[test]
fn seeded_runs_match_the_oracle_and_replay_identically() {
    let mut reached: BTreeSet<State> = BTreeSet::new();
    let (mut rejected, mut transitions, mut refreshed) = (0, 0, 0);
    // Which reasons the runs gave: every kind the generator aims at.
    let mut reasons: BTreeSet<String> = BTreeSet::new();
    for seed in 0..300u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let layout = LAYOUTS[seed as usize % LAYOUTS.len()];
        let zones = [3, 1, 2][seed as usize % LAYOUTS.len()];
        let mut clocks = Clocks {
            now: 1_000_000,
            // In every fourth run node 1's clock starts an hour ahead.
            offset: (1..=7)
                .map(|n| match n {
                    1 if seed % 4 == 0 => (n, 3_600_000),
                    _ => (n, rng.random_range(-1_000..1_000)),
                })
                .collect(),
        };
        let mut sm = members(layout);
        let mut oracle = Oracle::new(layout);
        let initial = sm.clone();
        let mut log = Vec::new();
        for step in 0..200 {
            let mut cmd = random_command(&mut rng, &mut clocks, zones);
            if let Command::Refresh { node, digest, .. } = &mut cmd {
                // Mostly the digest of what is recorded (the oracle's own
                // reckoning), now and then an out-of-date one.
                *digest = if rng.random_ratio(4, 5) {
                    oracle.digest(*node)
                } else {
                    rng.random()
                };
            }
            let before = sm.clone();
            let got = sm.apply(&cmd);
            let want = oracle.apply(&cmd);
            let ctx =
                || format!("seed {seed} step {step}: {cmd:?}\noracle: {oracle:#?}\nsm: {sm:#?}");
            match (&got, &want) {
                (Ok(t), Ok(w)) => {
                    assert_eq!(t, w, "transitions, {}", ctx());
                    transitions += t.len();
                    refreshed += usize::from(matches!(cmd, Command::Refresh { .. }));
                }
                (Err(e), Err(())) => {
                    rejected += 1;
                    reasons.extend(format!("{e:?}").split(['(', ' ']).next().map(String::from));
                    assert_eq!(
                        sm,
                        before,
                        "a rejected command changed the state, {}",
                        ctx()
                    );
                }
                _ => panic!("got {got:?}, want {want:?}, {}", ctx()),
            }
            assert_eq!(sm.log_now_ms(), oracle.now, "log time, {}", ctx());
            assert_eq!(sm.agreed(), &oracle.agreed(), "agreed records, {}", ctx());
            let views: BTreeMap<(String, NodeId), NodeView> = sm
                .agreed()
                .keys()
                .flat_map(|t| {
                    sm.views(t)
                        .into_iter()
                        .flatten()
                        .map(|(n, v)| ((t.clone(), *n), v.clone()))
                })
                .collect();
            assert_eq!(views, oracle.views(), "views, {}", ctx());
            // The record agrees with itself: zones named DOWN exactly when
            // DOWN or SUSPECT, and DOWN only with a quorum of DOWN zones
            // (of nodes, with one zone): the property recovery relies on.
            for (t, a) in sm.agreed() {
                reached.insert(a.state);
                let named = !a.down_zones.is_empty();
                let alarmed = matches!(a.state, State::Down | State::Suspect);
                assert_eq!(named, alarmed, "{t}: {a:?}, {}", ctx());
                if a.state == State::Down && a.zones.len() > 1 {
                    let down = a.zones.values().filter(|s| **s == State::Down).count();
                    assert!(down > a.zones.len() / 2, "{t}: {a:?}, {}", ctx());
                }
            }
            log.push(cmd);
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
    // The runs reached every state, rejected commands and changed states.
    assert_eq!(reached.len(), 5, "states reached: {reached:?}");
    let want = [
        "NotAMember",
        "UnknownMember",
        "TargetName",
        "ValidTooLong",
        "StampTooLate",
        "Zone",
        "Addr",
        "DuplicateAddr",
        "StaleDigest",
    ];
    assert!(
        want.iter().all(|w| reasons.contains(*w)),
        "reasons given: {reasons:?}"
    );
    assert!(
        rejected > 100 && transitions > 1_000 && refreshed > 1_000,
        "{rejected} rejected, {transitions} transitions, {refreshed} refreshes taken"
    );
}

#[test]
fn a_snapshot_written_before_log_time_could_settle_counts_as_settled() {
    let mut sm = three_zones();
    observe(&mut sm, 1, 9_000, "pg", State::Up);
    // A JSON snapshot, as nodes wrote before the binary form, from before
    // `log_settled` existed.
    let mut v: serde_json::Value = serde_json::to_value(&sm).unwrap();
    v.as_object_mut().unwrap().remove("log_settled").unwrap();
    let mut old = StateMachine::restore(&serde_json::to_vec(&v).unwrap()).unwrap();
    // Settled: a second, lower clock does not move log time back.
    observe(&mut old, 2, 1_000, "pg", State::Up);
    assert_eq!(old.log_now_ms(), 9_000);
    observe(&mut sm, 2, 1_000, "pg", State::Up);
    assert_eq!(sm.log_now_ms(), 1_000);
}

#[test]
fn a_corrupt_snapshot_is_an_error_not_a_panic() {
    let err = StateMachine::restore(b"{not json").unwrap_err();
    assert!(err.starts_with("corrupt state snapshot"), "{err}");
}

fn audit(at_ms: u64, by: &str, action: &str) -> Command {
    Command::Audit(AuditRecord {
        at_ms,
        by: by.into(),
        action: action.into(),
        recorded_by: 1,
    })
}

#[test]
fn the_audit_log_keeps_the_latest_requests_and_refuses_what_it_cannot_show() {
    let mut sm = three_zones();
    for i in 0..MAX_AUDIT as u64 + 10 {
        assert_eq!(
            sm.apply(&audit(i, "alice (admin)", &format!("members remove {i}"))),
            Ok(vec![])
        );
    }
    // The oldest went first; the newest are kept, in order.
    assert_eq!(sm.audit().len(), MAX_AUDIT);
    assert_eq!(sm.audit().front().map(|r| r.at_ms), Some(10));
    assert_eq!(
        sm.audit().back().map(|r| r.at_ms),
        Some(MAX_AUDIT as u64 + 9)
    );
    // Nothing else changes: no target, no log time.
    assert_eq!(sm.log_now_ms(), three_zones().log_now_ms());
    refused(&mut sm, &audit(1, "", "x"), "audit by \"\": 1 to 512 bytes");
    refused(
        &mut sm,
        &audit(1, "a", &"x".repeat(MAX_AUDIT_TEXT + 1)),
        "audit action",
    );
    refused(
        &mut sm,
        &audit(1, "a\nb", "x"),
        "without control characters",
    );
    refused(
        &mut sm,
        &audit(MAX_STAMP_MS + 1, "a", "x"),
        "past the end of the year 9999",
    );
    // Right at the limit is taken.
    assert!(
        sm.apply(&audit(MAX_STAMP_MS, "a", &"x".repeat(MAX_AUDIT_TEXT)))
            .is_ok()
    );
}

fn refresh(sm: &StateMachine, node: NodeId, at_ms: u64) -> Command {
    Command::Refresh {
        node,
        at_ms,
        valid_for_ms: 3_000,
        digest: sm.digest_of(node).0,
    }
}

#[test]
fn a_refresh_with_the_recorded_digest_keeps_every_view_fresh_as_recorded() {
    let mut sm = three_zones();
    let mut down = seen("pg");
    down.verdict = State::Down;
    down.error = Some("connection refused".into());
    down.latency_us = 800;
    for n in 1..=3 {
        let batch = vec![down.clone(), seen("redis")];
        sm.apply(&observation(n, 1_000, 3_000, batch)).unwrap();
    }
    assert_eq!(state(&sm, "pg"), State::Down);
    // Without refreshes, every view would expire at 4_000. Refreshes from
    // each node carry no verdict, only a digest, and keep them all.
    for t in [2_500, 4_000, 5_500, 7_000] {
        for n in 1..=3 {
            let cmd = refresh(&sm, n, t);
            assert_eq!(sm.apply(&cmd), Ok(vec![]), "at {t}");
        }
    }
    assert_eq!(sm.log_now_ms(), 7_000);
    assert_eq!(state(&sm, "pg"), State::Down);
    assert_eq!(state(&sm, "redis"), State::Up);
    let v = &sm.views("pg").unwrap()[&2];
    // The verdict is confirmed at 7_000; latency and error are the ones
    // measured at 1_000, and say so.
    assert_eq!((v.at_ms, v.expires_at_ms), (7_000, 10_000));
    assert_eq!(v.measured_at_ms, 1_000);
    assert_eq!(v.latency_us, 800);
    assert_eq!(v.error.as_deref(), Some("connection refused"));
    // Its size does not depend on the targets.
    let small = super::super::codec::encode(&refresh(&sm, 1, 8_000)).unwrap();
    assert!(small.len() < 32, "{} bytes", small.len());
}

#[test]
fn a_refresh_with_a_stale_digest_is_refused_and_changes_nothing() {
    let mut sm = three_zones();
    for n in 1..=3 {
        observe(&mut sm, n, 1_000, "pg", State::Up);
    }
    let stale = refresh(&sm, 1, 2_000);
    // Node 1's record changes (a proposal it thought lost did commit).
    observe(&mut sm, 1, 1_500, "pg", State::Down);
    let err = refused(&mut sm, &stale, "refresh from node 1: digest");
    assert!(
        matches!(
            err,
            Rejected::StaleDigest {
                node: 1,
                views: 1,
                ..
            }
        ),
        "{err:?}"
    );
    // A digest of the other verdict, latency or error, or of another
    // node's record, is refused the same way.
    let mut other = seen("pg");
    other.latency_us = 101;
    for wrong in [
        digest([("pg", State::Up, 100, None)]),
        digest([("pg", State::Down, 101, None)]),
        digest([("pg", State::Down, 100, Some("x"))]),
        digest([
            ("pg", State::Down, 100, None),
            ("redis", State::Up, 100, None),
        ]),
        digest([]),
        sm.digest_of(2).0,
    ] {
        let cmd = Command::Refresh {
            node: 1,
            at_ms: 2_000,
            valid_for_ms: 3_000,
            digest: wrong,
        };
        refused(&mut sm, &cmd, "is not that of its 1 recorded view(s)");
    }
    assert_eq!(digest([("pg", State::Down, 100, None)]), sm.digest_of(1).0);
    // From a non-member, past the limits: refused as an observation is.
    let mut cmd = refresh(&sm, 9, 2_000);
    refused(&mut sm, &cmd, "not a member");
    cmd = Command::Refresh {
        node: 1,
        at_ms: 2_000,
        valid_for_ms: MAX_VALID_FOR_MS + 1,
        digest: sm.digest_of(1).0,
    };
    refused(&mut sm, &cmd, "longer than the maximum");
    // The whole set goes instead, and then refreshes are taken again.
    let whole = Command::Observe {
        node: 1,
        at_ms: 2_000,
        valid_for_ms: 3_000,
        seen: vec![other],
        whole: true,
    };
    sm.apply(&whole).unwrap();
    sm.apply(&refresh(&sm, 1, 2_500)).unwrap();
    assert_eq!(sm.views("pg").unwrap()[&1].at_ms, 2_500);
}

#[test]
fn a_whole_set_drops_the_views_a_node_no_longer_reports() {
    let mut sm = three_zones();
    let batch = vec![seen("pg"), seen("redis"), seen("app")];
    sm.apply(&observation(1, 1_000, 3_000, batch)).unwrap();
    observe(&mut sm, 2, 1_000, "redis", State::Up);
    // Node 1 restarted without "redis" and "app" in its config.
    let whole = Command::Observe {
        node: 1,
        at_ms: 2_000,
        valid_for_ms: 3_000,
        seen: vec![seen("pg")],
        whole: true,
    };
    sm.apply(&whole).unwrap();
    assert!(!sm.views("redis").unwrap().contains_key(&1));
    assert!(!sm.views("app").unwrap().contains_key(&1));
    assert!(
        sm.views("redis").unwrap().contains_key(&2),
        "others' views stay"
    );
    assert_eq!(sm.digest_of(1).1, 1);
    // Its refresh now names one view, and is taken.
    sm.apply(&refresh(&sm, 1, 2_500)).unwrap();
    // A whole set that waited behind a newer report drops nothing newer.
    observe(&mut sm, 1, 3_000, "redis", State::Down);
    let late = Command::Observe {
        node: 1,
        at_ms: 2_900,
        valid_for_ms: 3_000,
        seen: vec![seen("pg")],
        whole: true,
    };
    sm.apply(&late).unwrap();
    assert_eq!(sm.views("redis").unwrap()[&1].verdict, State::Down);
}

#[test]
fn entries_and_snapshots_written_as_json_by_older_nodes_still_decode() {
    use super::super::codec;
    // An entry as nodes wrote it before the binary form (no `whole`).
    let old = br#"{"Observe":{"node":2,"at_ms":1000,"valid_for_ms":15000,"seen":[{"target":"pg","verdict":"Down","latency_us":812,"error":"connection refused"}]}}"#;
    let cmd: Command = codec::decode(old).unwrap();
    let Command::Observe { seen, whole, .. } = &cmd else {
        panic!("{cmd:?}")
    };
    assert!(!whole);
    assert_eq!(seen[0].error.as_deref(), Some("connection refused"));
    let audit = br#"{"Audit":{"at_ms":5,"by":"alice (admin)","action":"members remove 3","recorded_by":1}}"#;
    assert!(matches!(
        codec::decode::<Command>(audit),
        Ok(Command::Audit(_))
    ));
    // Applied, it is what the binary form of the same command makes.
    let mut a = three_zones();
    a.apply(&cmd).unwrap();
    let mut b = three_zones();
    let bin = codec::encode(&cmd).unwrap();
    assert_eq!(bin[0], codec::V1);
    assert!(
        bin.len() * 2 < old.len(),
        "{} vs {} bytes",
        bin.len(),
        old.len()
    );
    b.apply(&codec::decode(&bin).unwrap()).unwrap();
    assert_eq!(a, b);
    // A JSON snapshot (no `measured_at_ms` in its views) restores, and its
    // views say their latency and error were measured when taken.
    let mut v = serde_json::to_value(&a).unwrap();
    v["views"]["pg"]["2"]
        .as_object_mut()
        .unwrap()
        .remove("measured_at_ms")
        .unwrap();
    let json = serde_json::to_vec(&v).unwrap();
    let restored = StateMachine::restore(&json).unwrap();
    assert_eq!(restored, a);
    assert_eq!(restored.views("pg").unwrap()[&2].measured_at_ms, 1_000);
    // The binary snapshot restores to the same state, in far fewer bytes.
    let snap = a.snapshot().unwrap();
    assert_eq!(StateMachine::restore(&snap).unwrap(), a);
    assert!(
        snap.len() * 2 < json.len(),
        "{} vs {}",
        snap.len(),
        json.len()
    );
    // A record from a newer version, or cut short, is an error.
    assert!(
        codec::decode::<Command>(&[7, 0])
            .unwrap_err()
            .contains("unknown record version 7")
    );
    assert!(codec::decode::<Command>(&bin[..bin.len() - 1]).is_err());
    let mut long = bin.clone();
    long.push(0);
    assert!(
        codec::decode::<Command>(&long)
            .unwrap_err()
            .contains("past its end")
    );
    assert!(StateMachine::restore(&[]).is_err());
}

#[test]
fn a_binary_snapshot_from_before_incidents_restores_without_them() {
    use super::super::codec;
    let mut a = three_zones();
    for n in 1..=3 {
        observe(&mut a, n, 1000, "pg", State::Down);
    }
    assert_eq!(a.recovery().open().len(), 1, "DOWN opened no incident");
    let incidents = std::mem::take(&mut a.recovery);
    // Postcard names no field: the old snapshot is the same fields in
    // order, without the last.
    let old = codec::encode(&(
        &a.cluster_id,
        a.log_now_ms,
        a.log_settled,
        &a.clocks,
        &a.members,
        &a.views,
        &a.agreed,
        a.next_expiry_ms,
        &a.audit,
    ))
    .unwrap();
    let restored = StateMachine::restore(&old).unwrap();
    assert_eq!(restored, a);
    // Today's snapshot carries the incidents.
    a.recovery = incidents;
    assert_eq!(StateMachine::restore(&a.snapshot().unwrap()).unwrap(), a);
}
