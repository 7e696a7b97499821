//! The executor in the simulator: each node, while it leads, moves the
//! incidents of its applied state as `recovery::executor` does (intent,
//! leadership confirmed by read index, side effect, outcome; settling an
//! earlier term's intent; not-run for its own term's) against a side-effect
//! counter, through the real state machine and driver.
//!
//! Checked at every side effect:
//! - no step twice: a (incident, attempt, step) runs at most once (every
//!   step here is `exec`, not idempotent: a new leader never re-runs one,
//!   it marks it outcome unknown, and the simulated operator skips it);
//! - no step without a committed DOWN: the incident is open in the node's
//!   applied state, was opened by a DOWN (its `detected` event), and is no
//!   drill;
//! - no step by a node that was not leader when its read index was
//!   confirmed: the node leads in the intent's term, and is that term's
//!   only leader the simulator ever saw.

use std::collections::{BTreeMap, BTreeSet};

use raft::StateRole;
use rand::Rng as _;
use tokio::sync::oneshot;

use super::{Answer, Sim};
use crate::mesh::driver::{Input, MeshError};
use crate::mesh::state::{Command, NodeId};
use crate::recovery::incidents::{Phase, RecoveryCmd, Settle, StepResult, TargetInfo};
use crate::recovery::plan::{Action, Plan, Step};

/// Where one node's executor is.
#[derive(Debug, Default)]
pub(super) enum Exec {
    /// Deciding its next move.
    #[default]
    Idle,
    /// Its intent proposed.
    Intent {
        rx: Answer,
        incident: u64,
        term: u64,
    },
    /// Its read index asked, for the intent at `index`.
    Confirm {
        rx: Answer,
        incident: u64,
        index: u64,
        term: u64,
    },
    /// Any other proposal; idle once answered.
    Other(Answer),
}

/// What the executors did, and the side effects.
#[derive(Debug, Default)]
pub(super) struct Effects {
    /// (incident, attempt, step) -> (node, term, intent index).
    pub(super) done: BTreeMap<(u64, u32, u32), (NodeId, u64, u64)>,
    /// Per node: intents of its own term it gave up before the effect.
    pub(super) unrun: BTreeMap<NodeId, BTreeSet<u64>>,
    /// Plant the bug "a new leader re-runs a step that may have run".
    pub(super) plant_blind_rerun: bool,
}

fn plan() -> Plan {
    let step = |n: u32| Step {
        action: Action::Exec {
            argv: vec![format!("step-{n}")],
            env: Vec::new(),
            timeout_ms: 1_000,
        },
        approval: false,
        idempotent: false,
    };
    Plan {
        name: "t".into(),
        steps: vec![step(1), step(2)],
        finally: vec![step(3)],
        cooldown_ms: 0,
        max_attempts: 1_000,
        attempt_window_ms: 3_600_000,
        dry_run: false,
    }
}

impl Sim {
    /// One executor step on every node.
    pub(super) fn exec_step(&mut self) {
        for i in 0..self.nodes.len() {
            let Some(core) = self.nodes[i].core.as_ref() else {
                continue;
            };
            let id = self.nodes[i].id;
            let r = &core.raw.raft;
            let (leads, term) = (r.state == StateRole::Leader, r.term);
            let phase = self.exec.remove(&id).unwrap_or_default();
            let next = match phase {
                Exec::Idle if leads && self.rng.random_bool(0.1) => self.decide(i, term),
                Exec::Idle => Exec::Idle,
                Exec::Intent {
                    mut rx,
                    incident,
                    term,
                } => match rx.try_recv() {
                    Err(oneshot::error::TryRecvError::Empty) => Exec::Intent { rx, incident, term },
                    Ok(Ok(index)) => self.confirm(i, incident, index, term),
                    _ => Exec::Idle,
                },
                Exec::Confirm {
                    mut rx,
                    incident,
                    index,
                    term,
                } => match rx.try_recv() {
                    Err(oneshot::error::TryRecvError::Empty) => Exec::Confirm {
                        rx,
                        incident,
                        index,
                        term,
                    },
                    Ok(Ok(_)) => self.effect(i, incident, index, term),
                    _ => {
                        self.effects.unrun.entry(id).or_default().insert(index);
                        Exec::Idle
                    }
                },
                Exec::Other(mut rx) => match rx.try_recv() {
                    Err(oneshot::error::TryRecvError::Empty) => Exec::Other(rx),
                    _ => Exec::Idle,
                },
            };
            self.exec.insert(id, next);
        }
    }

    fn propose_on(&mut self, i: usize, cmd: RecoveryCmd) -> Answer {
        let (tx, rx) = oneshot::channel();
        self.run_core(i, vec![Input::Propose(Command::Recovery(cmd), tx)], false);
        rx
    }

    /// The leader's next move, as `recovery::executor` decides it.
    fn decide(&mut self, i: usize, term: u64) -> Exec {
        let id = self.nodes[i].id;
        let Some(core) = self.nodes[i].core.as_ref() else {
            return Exec::Idle;
        };
        let s = core.shared();
        let rec = s.sm.recovery();
        if rec.catalog().is_empty() {
            drop(s);
            let catalog = vec![TargetInfo {
                name: "t".into(),
                depends_on: Vec::new(),
                rto_ms: 60_000,
                plan: Some(plan()),
            }];
            return Exec::Other(self.propose_on(i, RecoveryCmd::Catalog(catalog)));
        }
        let unrun = self.effects.unrun.get(&id).cloned().unwrap_or_default();
        let mut cmd = None;
        let mut intent_for = None;
        for inc in rec.open().values() {
            if matches!(inc.phase, Phase::Joined | Phase::Escalated) {
                continue;
            }
            let at_ms = self.now_ms;
            match &inc.attempt {
                None if inc.resolved_ms.is_none() => {
                    cmd = Some(RecoveryCmd::Begin {
                        incident: inc.id,
                        at_ms,
                    });
                }
                None => continue,
                Some(a) => match &a.pending {
                    Some(p) if inc.phase == Phase::OutcomeUnknown => {
                        // The operator, now and then: skip it.
                        let _ = p;
                        if self.rng.random_bool(0.02) {
                            cmd = Some(RecoveryCmd::Approve {
                                incident: inc.id,
                                by: "sim operator".into(),
                                skip: true,
                                at_ms,
                                until_ms: at_ms + 60_000,
                            });
                        }
                    }
                    Some(p) if p.term < term => {
                        cmd = Some(RecoveryCmd::Settle {
                            incident: inc.id,
                            intent: p.index,
                            at_ms,
                            how: if self.effects.plant_blind_rerun {
                                Settle::Retry("planted: run it again".into())
                            } else {
                                Settle::Unknown("exec may have run".into())
                            },
                        });
                    }
                    Some(p) if p.by != id || unrun.contains(&p.index) => {
                        cmd = Some(RecoveryCmd::Outcome {
                            incident: inc.id,
                            intent: p.index,
                            started_ms: at_ms,
                            at_ms,
                            result: StepResult::NotRun("not started".into()),
                        });
                    }
                    Some(_) => continue,
                    None => {
                        cmd = Some(RecoveryCmd::Intent {
                            incident: inc.id,
                            step: a.next,
                            by: id,
                            at_ms,
                        });
                        intent_for = Some(inc.id);
                    }
                },
            }
            if cmd.is_some() {
                break;
            }
        }
        drop(s);
        match (cmd, intent_for) {
            (Some(c), Some(incident)) => Exec::Intent {
                rx: self.propose_on(i, c),
                incident,
                term,
            },
            (Some(c), None) => Exec::Other(self.propose_on(i, c)),
            (None, _) => Exec::Idle,
        }
    }

    /// The intent at `index` is committed: confirm leadership first.
    fn confirm(&mut self, i: usize, incident: u64, index: u64, term: u64) -> Exec {
        let Some(core) = self.nodes[i].core.as_ref() else {
            return Exec::Idle;
        };
        let r = &core.raw.raft;
        if r.state != StateRole::Leader || r.term != term {
            self.effects
                .unrun
                .entry(self.nodes[i].id)
                .or_default()
                .insert(index);
            return Exec::Idle;
        }
        let (tx, rx) = oneshot::channel::<Result<u64, MeshError>>();
        self.run_core(i, vec![Input::ReadIndex(tx)], false);
        Exec::Confirm {
            rx,
            incident,
            index,
            term,
        }
    }

    /// The side effect, checked, then its outcome proposed.
    fn effect(&mut self, i: usize, incident: u64, index: u64, term: u64) -> Exec {
        let id = self.nodes[i].id;
        let Some(core) = self.nodes[i].core.as_ref() else {
            return Exec::Idle;
        };
        let r = &core.raw.raft;
        if r.state != StateRole::Leader || r.term != term {
            self.effects.unrun.entry(id).or_default().insert(index);
            return Exec::Idle;
        }
        let s = core.shared();
        let inc = s.sm.recovery().open().get(&incident).cloned();
        drop(s);
        let Some(inc) = inc else {
            return Exec::Idle;
        };
        let pending = inc.attempt.as_ref().and_then(|a| a.pending.clone());
        let Some(p) = pending.filter(|p| p.index == index && p.term == term) else {
            self.effects.unrun.entry(id).or_default().insert(index);
            return Exec::Idle;
        };
        if inc.drill || inc.timeline.first().is_none_or(|e| e.kind != "detected") {
            self.fail(format!(
                "node {id}: step of incident {incident} without a committed DOWN"
            ));
        }
        if self.leaders.get(&term) != Some(&id) {
            self.fail(format!(
                "node {id}: step of incident {incident} in term {term}, whose leader was {:?}",
                self.leaders.get(&term)
            ));
        }
        let key = (incident, inc.attempts, p.step);
        if let Some(before) = self.effects.done.insert(key, (id, term, index)) {
            self.fail(format!(
                "incident {incident} attempt {} step {} ran twice: by node {} (term {}, intent {}) and node {id} (term {term}, intent {index})",
                inc.attempts,
                p.step + 1,
                before.0,
                before.1,
                before.2
            ));
        }
        self.tally.steps_run += 1;
        let at_ms = self.now_ms;
        Exec::Other(self.propose_on(
            i,
            RecoveryCmd::Outcome {
                incident,
                intent: index,
                started_ms: at_ms,
                at_ms,
                result: StepResult::Done(String::new()),
            },
        ))
    }

    /// Outcomes-unknown and incidents the run went through (for the tally).
    pub(super) fn count_incidents(&mut self) {
        let Some(l) = self.leader() else { return };
        let Some(core) = self.nodes[l].core.as_ref() else {
            return;
        };
        let s = core.shared();
        let rec = s.sm.recovery();
        let unknown = rec
            .open()
            .values()
            .chain(rec.history().iter())
            .flat_map(|i| i.timeline.iter())
            .filter(|e| e.kind == "unknown")
            .count();
        let incidents = rec.open().len() + rec.history().len();
        drop(s);
        self.tally.unknowns = self.tally.unknowns.max(unknown);
        self.tally.incidents = self.tally.incidents.max(incidents);
    }
}

#[test]
#[should_panic(expected = "ran twice")]
fn the_side_effect_check_catches_a_step_run_again_blindly() {
    for seed in 1..=100 {
        super::run_with(seed, 1_500, |sim| sim.effects.plant_blind_rerun = true);
    }
}
