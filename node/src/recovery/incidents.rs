//! Incidents in the replicated state: opened by a committed DOWN, run
//! through a plan by the leader's executor, resolved by a committed UP.
//!
//! Architecture invariant: this module is pure, like the state machine it
//! belongs to (no I/O, no clock, no randomness): every node that applies
//! the same entries holds the same incidents. Detection and resolution are
//! stamped in log time; recovery events with the clock of the leader that
//! proposed them.
//!
//! The rules:
//! - an incident opens when a target's agreed state becomes DOWN (never
//!   SUSPECT); a target one of whose `depends_on` (transitively) has an
//!   open incident joins that incident instead and gets no recovery of its
//!   own; so does an open incident whose recovery has not started when its
//!   dependency's opens;
//! - it is resolved when the target is UP again; an attempt under way then
//!   skips its remaining steps and runs its `finally` steps; a joined
//!   incident whose cause is over (resolved, and its attempt ended) while
//!   its target is still DOWN gets its own recovery;
//! - an attempt runs its plan (copied into the attempt when it begins, so a
//!   later leader resumes the same plan) one step at a time: the step's
//!   intent is recorded with its fencing token, the term and index of the
//!   entry that recorded it; an outcome is taken only in an entry of the
//!   same term (a leader that lost its term cannot record one); a later
//!   leader settles an intent left without outcome (done, not done, or
//!   outcome unknown: a person decides);
//! - a failed step skips to `finally`; `wait_healthy` with `then = finish`
//!   too; after the last step the attempt ends (cooldown starts);
//! - escalation stops recovery of the incident; maintenance stops new steps.
//!
//! Limits: however an entry was crafted, the state stays bounded: at most
//! [`MAX_OPEN`] open incidents, [`MAX_EVENTS`] events each, [`MAX_HISTORY`]
//! finished ones, texts cut to [`MAX_TEXT`] bytes, plans of at most
//! [`MAX_STEPS`] steps.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use super::plan::Plan;
use crate::mesh::state::{NodeId, State, Transition, clip_error};

/// Most incidents open at once (an incident past it is not opened).
pub const MAX_OPEN: usize = 1024;
/// Most events in one incident's timeline (later ones replace the last).
pub const MAX_EVENTS: usize = 256;
/// Finished incidents kept with their timelines; older ones live on only
/// in the per-target statistics.
pub const MAX_HISTORY: usize = 100;
/// Longest text (an output, an error, a reason) kept, in bytes.
pub const MAX_TEXT: usize = 1024;
/// Most steps (with `finally`) in a plan.
pub const MAX_STEPS: usize = 64;
/// Recovery times kept per target and kind for the RTO table's p95.
pub const MAX_SAMPLES: usize = 100;
/// Attempt start times kept per target (for `max_attempts`).
pub const MAX_ATTEMPT_TIMES: usize = 64;

/// What the replicated state knows of a target beyond its probes: from the
/// leader's config ([`RecoveryCmd::Catalog`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetInfo {
    /// The target.
    pub name: String,
    /// Targets it needs.
    pub depends_on: Vec<String>,
    /// Its recovery time objective, ms (0: none).
    pub rto_ms: u64,
    /// The plan its `recovery` names.
    pub plan: Option<Plan>,
}

/// Where an incident stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Opened; no attempt running.
    Open,
    /// An attempt is running.
    Recovering,
    /// A step waits for an operator's approval.
    AwaitingApproval,
    /// A step may or may not have run (its leader died): a person decides.
    OutcomeUnknown,
    /// Recovery gave up (max attempts, or a reason): a person takes over.
    Escalated,
    /// Part of another incident (its dependency is down).
    Joined,
    /// The target is UP again.
    Resolved,
}

impl Phase {
    /// Upper-case, as faxictl and scripts show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Open => "OPEN",
            Phase::Recovering => "RECOVERING",
            Phase::AwaitingApproval => "AWAITING_APPROVAL",
            Phase::OutcomeUnknown => "OUTCOME_UNKNOWN",
            Phase::Escalated => "ESCALATED",
            Phase::Joined => "JOINED",
            Phase::Resolved => "RESOLVED",
        }
    }
}

/// One line of an incident's timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When: log time for detection and resolution, the proposing
    /// leader's clock for recovery events (Unix ms).
    pub at_ms: u64,
    /// `detected`, `joined`, `attempt`, `intent`, `started`, `done`,
    /// `failed`, `finish`, `unknown`, `skipped`, `awaiting_approval`,
    /// `approved`, `escalated`, `resolved`, `own_recovery`, `dry_run`.
    pub kind: String,
    /// The step (1-based over steps then `finally`), if about one.
    pub step: Option<u32>,
    /// What happened, in words.
    pub text: String,
}

/// A step's recorded intent: its fencing token and who recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    /// The step (0-based index over steps then `finally`).
    pub step: u32,
    /// Fencing token: term of the recording entry.
    pub term: u64,
    /// Fencing token: index of the recording entry.
    pub index: u64,
    /// The leader that recorded it.
    pub by: NodeId,
    /// Its clock when it did.
    pub at_ms: u64,
}

/// One run of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// The plan as it was when the attempt began.
    pub plan: Plan,
    /// When it began (leader clock).
    pub started_ms: u64,
    /// The next step to run (0-based over steps then `finally`).
    pub next: u32,
    /// A step failed (the attempt ends failed after `finally`).
    pub failed: bool,
    /// The intent whose outcome is not recorded yet.
    pub pending: Option<Intent>,
    /// The step an operator approved, and until when (leader clock).
    pub approved: Option<(u32, u64)>,
}

impl Attempt {
    fn len(&self) -> u32 {
        u32::try_from(self.plan.steps.len() + self.plan.finally.len()).unwrap_or(u32::MAX)
    }

    fn finally_start(&self) -> u32 {
        u32::try_from(self.plan.steps.len()).unwrap_or(u32::MAX)
    }

    /// Steps in the plan, `finally` included.
    pub fn total(&self) -> u32 {
        self.len()
    }

    /// The step the attempt is at: the one whose intent awaits its
    /// outcome, else the next (0-based over steps then `finally`).
    pub fn at(&self) -> u32 {
        self.pending.as_ref().map_or(self.next, |p| p.step)
    }

    /// Whether step `i` is one of the plan's `finally` steps.
    pub fn in_finally(&self, i: u32) -> bool {
        i >= self.finally_start()
    }

    /// The step at `i` (0-based over steps then `finally`).
    pub fn step(&self, i: u32) -> Option<&super::plan::Step> {
        let i = usize::try_from(i).ok()?;
        self.plan
            .steps
            .get(i)
            .or_else(|| self.plan.finally.get(i.checked_sub(self.plan.steps.len())?))
    }
}

/// An incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    /// Its id, counted from 1 across the cluster's life.
    pub id: u64,
    /// The target that is down.
    pub target: String,
    /// Opened by `faxictl drill`: the plan runs for real, counted apart.
    pub drill: bool,
    /// Log time it opened (the agreed DOWN).
    pub opened_ms: u64,
    /// From the first node's DOWN verdict to the verdict that made the
    /// quorum (by those nodes' clocks), ms: the mesh's share of detection
    /// (the probes' `fall × interval` comes before it).
    pub detect_ms: u64,
    /// The zones that saw it down.
    pub zones: Vec<String>,
    /// The nodes that saw it down.
    pub nodes: Vec<NodeId>,
    /// The incident this one is part of (its dependency's).
    pub cause: Option<u64>,
    /// Targets whose incidents joined this one.
    pub joined: Vec<String>,
    /// Where it stands.
    pub phase: Phase,
    /// Log time it resolved.
    pub resolved_ms: Option<u64>,
    /// Attempts begun.
    pub attempts: u32,
    /// The attempt under way.
    pub attempt: Option<Attempt>,
    /// What happened, in order.
    pub timeline: Vec<Event>,
}

impl Incident {
    /// A new incident, open, with nothing happened yet.
    fn new(id: u64, target: &str, drill: bool, opened_ms: u64) -> Self {
        Self {
            id,
            target: target.to_owned(),
            drill,
            opened_ms,
            detect_ms: 0,
            zones: Vec::new(),
            nodes: Vec::new(),
            cause: None,
            joined: Vec::new(),
            phase: Phase::Open,
            resolved_ms: None,
            attempts: 0,
            attempt: None,
            timeline: Vec::new(),
        }
    }

    /// Time to recover, ms, once resolved.
    pub fn recover_ms(&self) -> Option<u64> {
        self.resolved_ms.map(|r| r.saturating_sub(self.opened_ms))
    }

    fn event(&mut self, at_ms: u64, kind: &str, step: Option<u32>, text: impl Into<String>) {
        let e = Event {
            at_ms,
            kind: kind.to_owned(),
            step: step.map(|s| s + 1),
            text: clip(&text.into()),
        };
        if self.timeline.len() >= MAX_EVENTS {
            self.timeline.pop();
        }
        // In the order they were applied, which is the order they
        // happened: their times come from different clocks (log time for
        // detection and resolution, the proposing leader's for the rest),
        // and a leader's clock behind the log time would otherwise put its
        // recovery before the detection. One exception: a step's `started`
        // is recorded with its outcome, so it goes back, by time, among the
        // events since its step's intent (the target's recovery, say).
        let at = if kind == "started" {
            let intent = self
                .timeline
                .iter()
                .rposition(|x| x.kind == "intent" && x.step == e.step)
                .map_or(0, |p| p + 1);
            self.timeline[intent..]
                .iter()
                .position(|x| x.at_ms > e.at_ms)
                .map_or(self.timeline.len(), |p| intent + p)
        } else {
            self.timeline.len()
        };
        self.timeline.insert(at, e);
    }

    /// Whether recovery has been tried (an attempt begun).
    fn started(&self) -> bool {
        self.attempts > 0
    }
}

/// The step an incident's attempt is at, as `faxictl incidents` and the
/// status page show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepNow {
    /// The step, 1-based over steps then `finally`.
    pub index: u32,
    /// Steps in the plan, `finally` included.
    pub of: u32,
    /// What it does, in words.
    pub description: String,
    /// It waits for an operator's approval before it runs.
    pub needs_approval: bool,
    /// Until when an approval of it holds (0: not approved).
    pub approved_until_ms: u64,
    /// It is one of the plan's `finally` steps.
    pub is_finally: bool,
    /// The plan's name.
    pub plan: String,
}

impl Incident {
    /// The step its attempt is at; `None` without an attempt.
    pub fn step_now(&self) -> Option<StepNow> {
        let a = self.attempt.as_ref()?;
        let at = a.at();
        let s = a.step(at);
        Some(StepNow {
            index: at.saturating_add(1),
            of: a.total(),
            description: s.map(|s| s.action.describe()).unwrap_or_default(),
            needs_approval: s.is_some_and(|s| s.approval),
            approved_until_ms: a
                .approved
                .filter(|(step, _)| *step == at)
                .map_or(0, |(_, until)| until),
            is_finally: a.in_finally(at),
            plan: a.plan.name.clone(),
        })
    }
}

/// One row of the RTO table (Recovery Time Tracking), as `faxictl rto` and
/// the status page show it. Times in ms; 0 where nothing was measured
/// (`count` or `drill_count` is then 0) or no RTO is known.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RtoRow {
    /// The target.
    pub target: String,
    /// Its RTO (0: none).
    pub rto_ms: u64,
    /// The last real incident's time to recover.
    pub last_ms: u64,
    /// The 95th percentile of the latest real ones.
    pub p95_ms: u64,
    /// Real incidents resolved.
    pub count: u64,
    /// The last drill's time to recover.
    pub drill_last_ms: u64,
    /// The 95th percentile of the latest drills.
    pub drill_p95_ms: u64,
    /// Drills resolved.
    pub drill_count: u64,
    /// Its open incident's id (0: none).
    pub open_incident: u64,
}

impl RtoRow {
    /// Real recoveries took longer than the RTO (their p95 did).
    pub fn over_rto(&self) -> bool {
        self.rto_ms != 0 && self.count != 0 && self.p95_ms > self.rto_ms
    }
}

/// Per target, per kind (real or drill): the recovery times seen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RtoStats {
    /// Incidents resolved.
    pub count: u64,
    /// The last one's time to recover, ms.
    pub last_ms: u64,
    /// The latest [`MAX_SAMPLES`] times to recover, ms.
    pub samples: VecDeque<u64>,
}

impl RtoStats {
    fn add(&mut self, ms: u64) {
        self.count += 1;
        self.last_ms = ms;
        if self.samples.len() >= MAX_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(ms);
    }

    /// The 95th percentile of the kept samples (nearest rank).
    pub fn p95_ms(&self) -> Option<u64> {
        let mut s: Vec<u64> = self.samples.iter().copied().collect();
        if s.is_empty() {
            return None;
        }
        s.sort_unstable();
        let rank = (s.len() * 95).div_ceil(100).max(1);
        s.get(rank - 1).copied()
    }
}

/// Cluster-wide maintenance: recovery paused, detection goes on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Maintenance {
    /// Until when (leader clock, Unix ms).
    pub until_ms: u64,
    /// Why.
    pub reason: String,
    /// Who.
    pub by: String,
}

/// A step's result as the executor reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepResult {
    /// It did what it says.
    Done(String),
    /// It did not.
    Failed(String),
    /// `wait_healthy` with `then = finish`: the plan ends here.
    Finish(String),
    /// Dry run: what would have run.
    DryRun(String),
    /// It was not started (the leader could not confirm its leadership,
    /// or the intent reached the log in a term its proposer did not lead):
    /// the step may be tried again.
    NotRun(String),
}

/// How a later leader settles an intent left without an outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Settle {
    /// The world shows it ran: done.
    Done(String),
    /// It did not run, or it is idempotent: it may run again.
    Retry(String),
    /// Nothing tells and it is not idempotent: a person decides.
    Unknown(String),
}

/// Recovery entries: from the leader's executor, or an operator's request
/// the leader carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecoveryCmd {
    /// The targets' dependencies, RTOs and plans, from the leader's config.
    Catalog(Vec<TargetInfo>),
    /// Begin an attempt of the target's plan on an open incident.
    Begin {
        /// The incident.
        incident: u64,
        /// Leader clock.
        at_ms: u64,
    },
    /// Record the intent of the attempt's next step (fencing token: this
    /// entry's term and index).
    Intent {
        /// The incident.
        incident: u64,
        /// The step (must be the attempt's next).
        step: u32,
        /// The leader.
        by: NodeId,
        /// Leader clock.
        at_ms: u64,
    },
    /// A step's outcome, taken only in the term of its intent.
    Outcome {
        /// The incident.
        incident: u64,
        /// The intent's index (its fencing token's).
        intent: u64,
        /// When the side effect started (leader clock).
        started_ms: u64,
        /// When it ended (leader clock).
        at_ms: u64,
        /// How it went.
        result: StepResult,
    },
    /// A later leader settles an intent left by an earlier term.
    Settle {
        /// The incident.
        incident: u64,
        /// The intent's index.
        intent: u64,
        /// Leader clock.
        at_ms: u64,
        /// What it found.
        how: Settle,
    },
    /// The next step needs an operator's approval.
    AwaitApproval {
        /// The incident.
        incident: u64,
        /// The step.
        step: u32,
        /// Leader clock.
        at_ms: u64,
        /// Why (e.g. an earlier approval expired).
        reason: String,
    },
    /// An operator approves the step waiting (or, with `skip`, skips it;
    /// for an outcome unknown: re-run it, or skip it).
    Approve {
        /// The incident.
        incident: u64,
        /// Who.
        by: String,
        /// Skip the step instead of running it.
        skip: bool,
        /// Leader clock.
        at_ms: u64,
        /// Until when the approval holds (leader clock).
        until_ms: u64,
    },
    /// Stop trying: a person takes over.
    Escalate {
        /// The incident.
        incident: u64,
        /// Leader clock.
        at_ms: u64,
        /// Why.
        reason: String,
    },
    /// Maintenance on (until a time) or off (`None`).
    Maintenance(Option<Maintenance>),
    /// `faxictl drill TARGET`: run the target's plan now, for real, as a
    /// drill.
    Drill {
        /// The target.
        target: String,
        /// Who asked.
        by: String,
        /// Leader clock.
        at_ms: u64,
    },
}

/// The recovery part of the replicated state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recovery {
    /// The targets' dependencies, RTOs and plans.
    catalog: BTreeMap<String, TargetInfo>,
    /// The last incident id given.
    last_id: u64,
    /// Incidents not finished (an incident resolved while its attempt runs
    /// `finally` stays here until the attempt ends).
    open: BTreeMap<u64, Incident>,
    /// Finished incidents, oldest first.
    history: VecDeque<Incident>,
    /// target -> (real, drill) recovery times.
    stats: BTreeMap<String, (RtoStats, RtoStats)>,
    /// target -> start times of its latest attempts (leader clock).
    attempt_times: BTreeMap<String, VecDeque<u64>>,
    /// target -> when its last attempt ended (leader clock).
    last_end: BTreeMap<String, u64>,
    /// Maintenance, if on.
    maintenance: Option<Maintenance>,
    /// Counts the changes applied here: readers (the executor, metrics)
    /// look again only when it moved.
    changes: u64,
}

/// Where in the log an entry is: its fencing token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EntryAt {
    /// Raft term of the entry.
    pub term: u64,
    /// Its log index.
    pub index: u64,
}

fn clip(text: &str) -> String {
    if text.len() <= MAX_TEXT {
        return text.to_owned();
    }
    clip_error(text)
}

impl Recovery {
    /// How many changes were applied: a reader that saw this count has
    /// seen everything.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// The catalog.
    pub fn catalog(&self) -> &BTreeMap<String, TargetInfo> {
        &self.catalog
    }

    /// Incidents not finished, by id.
    pub fn open(&self) -> &BTreeMap<u64, Incident> {
        &self.open
    }

    /// Finished incidents, oldest first.
    pub fn history(&self) -> &VecDeque<Incident> {
        &self.history
    }

    /// An incident by id, open or in the history.
    pub fn incident(&self, id: u64) -> Option<&Incident> {
        self.open
            .get(&id)
            .or_else(|| self.history.iter().find(|i| i.id == id))
    }

    /// Per target: (real incidents, drills).
    pub fn stats(&self) -> &BTreeMap<String, (RtoStats, RtoStats)> {
        &self.stats
    }

    /// Maintenance, if on (it may have expired: compare `until_ms`).
    pub fn maintenance(&self) -> Option<&Maintenance> {
        self.maintenance.as_ref()
    }

    /// Start times of the target's latest attempts.
    pub fn attempt_times(&self, target: &str) -> impl Iterator<Item = u64> + '_ {
        self.attempt_times
            .get(target)
            .into_iter()
            .flat_map(|t| t.iter().copied())
    }

    /// When the target's last attempt ended.
    pub fn last_end(&self, target: &str) -> Option<u64> {
        self.last_end.get(target).copied()
    }

    /// The open incident of a target, if any.
    pub fn open_for(&self, target: &str) -> Option<&Incident> {
        self.open
            .values()
            .find(|i| i.target == target && i.resolved_ms.is_none() && !i.drill)
    }

    /// The RTO table: a row per target of the catalog, per target with
    /// recovery times, and per target of `observed`, in name order.
    pub fn rto_table<'a>(&'a self, observed: impl IntoIterator<Item = &'a String>) -> Vec<RtoRow> {
        let names: BTreeSet<&str> = self
            .catalog
            .keys()
            .chain(self.stats.keys())
            .chain(observed)
            .map(String::as_str)
            .collect();
        names.into_iter().map(|n| self.rto_row(n)).collect()
    }

    /// One target's row of the RTO table.
    pub fn rto_row(&self, target: &str) -> RtoRow {
        let (real, drill) = self.stats.get(target).cloned().unwrap_or_default();
        RtoRow {
            target: target.to_owned(),
            rto_ms: self.catalog.get(target).map_or(0, |t| t.rto_ms),
            last_ms: real.last_ms,
            p95_ms: real.p95_ms().unwrap_or(0),
            count: real.count,
            drill_last_ms: drill.last_ms,
            drill_p95_ms: drill.p95_ms().unwrap_or(0),
            drill_count: drill.count,
            open_incident: self.open_for(target).map_or(0, |i| i.id),
        }
    }

    /// Whether `target` depends on `on`, directly or through others.
    fn depends(&self, target: &str, on: &str) -> bool {
        let mut seen = BTreeSet::new();
        let mut todo = vec![target];
        while let Some(t) = todo.pop() {
            if !seen.insert(t) {
                continue;
            }
            if let Some(info) = self.catalog.get(t) {
                for d in &info.depends_on {
                    if d == on {
                        return true;
                    }
                    todo.push(d);
                }
            }
        }
        false
    }

    /// Opens and resolves incidents for the agreed-state changes an entry
    /// caused. `down_nodes(target)` names the members that see it DOWN and
    /// the time to detect (from the first of them measuring it DOWN to the
    /// last).
    pub fn on_transitions(
        &mut self,
        transitions: &[Transition],
        down_nodes: impl Fn(&str) -> (Vec<NodeId>, Option<u64>),
    ) {
        for t in transitions {
            if matches!(t.to, State::Down | State::Up) {
                self.changes += 1;
            }
            if t.to == State::Down {
                if self.open_for(&t.target).is_some() {
                    continue;
                }
                let (nodes, detect) = down_nodes(&t.target);
                self.open_incident(t, nodes, detect);
            } else if t.to == State::Up {
                self.resolve(&t.target, t.at_ms);
            }
        }
    }

    fn open_incident(&mut self, t: &Transition, nodes: Vec<NodeId>, detect_ms: Option<u64>) {
        if self.open.len() >= MAX_OPEN {
            return;
        }
        self.last_id += 1;
        let id = self.last_id;
        // The open incident of a target this one depends on: its cause.
        let cause = self
            .open
            .values()
            .filter(|i| i.resolved_ms.is_none() && !i.drill && i.cause.is_none())
            .find(|i| self.depends(&t.target, &i.target))
            .map(|i| (i.id, i.target.clone()));
        let mut inc = Incident {
            detect_ms: detect_ms.unwrap_or(0),
            zones: t.down_zones.clone(),
            nodes,
            ..Incident::new(id, &t.target, false, t.at_ms)
        };
        let seen_by = format!(
            "DOWN in {} (nodes {})",
            inc.zones.join(", "),
            inc.nodes
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        inc.event(t.at_ms, "detected", None, seen_by);
        if let Some((cause_id, cause_target)) = cause {
            inc.cause = Some(cause_id);
            inc.phase = Phase::Joined;
            inc.event(
                t.at_ms,
                "joined",
                None,
                format!(
                    "{} is down because {cause_target} is down (incident {cause_id})",
                    t.target
                ),
            );
            if let Some(c) = self.open.get_mut(&cause_id) {
                c.joined.push(t.target.clone());
                c.event(t.at_ms, "joined", None, format!("{} joined", t.target));
            }
        } else {
            // Incidents of targets that depend on this one, not yet being
            // recovered, join it.
            let dependents: Vec<u64> = self
                .open
                .values()
                .filter(|i| {
                    i.resolved_ms.is_none()
                        && !i.drill
                        && i.cause.is_none()
                        && !i.started()
                        && self.depends(&i.target, &t.target)
                })
                .map(|i| i.id)
                .collect();
            for d in dependents {
                if let Some(i) = self.open.get_mut(&d) {
                    i.cause = Some(id);
                    i.phase = Phase::Joined;
                    i.event(
                        t.at_ms,
                        "joined",
                        None,
                        format!(
                            "{} is down because {} is down (incident {id})",
                            i.target, t.target
                        ),
                    );
                    inc.joined.push(i.target.clone());
                }
            }
        }
        self.open.insert(id, inc);
    }

    fn resolve(&mut self, target: &str, at_ms: u64) {
        let ids: Vec<u64> = self
            .open
            .values()
            .filter(|i| i.target == target && i.resolved_ms.is_none() && !i.drill)
            .map(|i| i.id)
            .collect();
        for id in ids {
            let Some(inc) = self.open.get_mut(&id) else {
                continue;
            };
            inc.resolved_ms = Some(at_ms);
            inc.event(at_ms, "resolved", None, format!("{target} is UP"));
            // An attempt under way skips to `finally` (a step waiting for
            // approval is not needed any more); without one it is over.
            match &mut inc.attempt {
                Some(a) => {
                    if a.pending.is_none() && a.next < a.finally_start() {
                        a.next = a.finally_start();
                        a.approved = None;
                        if inc.phase == Phase::AwaitingApproval {
                            inc.phase = Phase::Recovering;
                        }
                    }
                }
                None => inc.phase = Phase::Resolved,
            }
            let stats = &mut self.stats.entry(target.to_owned()).or_default().0;
            stats.add(at_ms.saturating_sub(inc.opened_ms));
            // An attempt with no step left (the target came back after its
            // last step but `finally`'s) ends now.
            self.end_attempt_if_done(id, at_ms);
            self.finish_if_done(id, at_ms);
        }
    }

    /// Moves an incident to the history once resolved with no attempt.
    /// Incidents joined to it whose targets are still down then get their
    /// own recovery: only then, not at its resolution, because the rest
    /// of its attempt (its remaining steps and `finally`) may bring them
    /// back, as when a database's plan stops the app and starts it again.
    fn finish_if_done(&mut self, id: u64, at_ms: u64) {
        let done = self
            .open
            .get(&id)
            .is_some_and(|i| i.resolved_ms.is_some() && i.attempt.is_none());
        if done && let Some(inc) = self.open.remove(&id) {
            for other in self.open.values_mut() {
                if other.cause == Some(id) && other.resolved_ms.is_none() {
                    other.cause = None;
                    other.phase = Phase::Open;
                    other.event(
                        at_ms,
                        "own_recovery",
                        None,
                        format!("{} is UP, {} still is not", inc.target, other.target),
                    );
                }
            }
            if self.history.len() >= MAX_HISTORY {
                self.history.pop_front();
            }
            self.history.push_back(inc);
        }
    }

    /// Whether `cmd` would be taken at `at`; changes nothing.
    pub fn check(&self, cmd: &RecoveryCmd, at: EntryAt) -> Result<(), String> {
        let open = |id: u64| {
            self.open
                .get(&id)
                .ok_or_else(|| format!("incident {id} is not open"))
        };
        let attempt = |id: u64| {
            open(id)?
                .attempt
                .as_ref()
                .ok_or_else(|| format!("incident {id} has no attempt running"))
        };
        match cmd {
            RecoveryCmd::Catalog(targets) => {
                if targets.len() > crate::mesh::state::MAX_TARGETS {
                    return Err(format!("{} targets in a catalog", targets.len()));
                }
                for t in targets {
                    if let Some(p) = &t.plan
                        && p.steps.len() + p.finally.len() > MAX_STEPS
                    {
                        return Err(format!("plan {}: more than {MAX_STEPS} steps", p.name));
                    }
                    if t.depends_on.len() > 64 {
                        return Err(format!("{}: too many dependencies", t.name));
                    }
                }
            }
            RecoveryCmd::Begin { incident, .. } => {
                let i = open(*incident)?;
                if i.attempt.is_some() {
                    return Err(format!("incident {incident} already has an attempt"));
                }
                if i.resolved_ms.is_some() && !i.drill {
                    return Err(format!("incident {incident} is resolved"));
                }
                if matches!(i.phase, Phase::Escalated | Phase::Joined) {
                    return Err(format!("incident {incident} is {}", i.phase.as_str()));
                }
                let plan = self.catalog.get(&i.target).and_then(|t| t.plan.as_ref());
                if plan.is_none() {
                    return Err(format!("{} has no recovery plan", i.target));
                }
            }
            RecoveryCmd::Intent { incident, step, .. } => {
                let a = attempt(*incident)?;
                if a.pending.is_some() {
                    return Err(format!("incident {incident}: a step is already pending"));
                }
                if *step != a.next || *step >= a.len() {
                    return Err(format!(
                        "incident {incident}: step {} is not next ({})",
                        step + 1,
                        a.next + 1
                    ));
                }
                let i = open(*incident)?;
                if matches!(
                    i.phase,
                    Phase::AwaitingApproval | Phase::OutcomeUnknown | Phase::Escalated
                ) {
                    return Err(format!("incident {incident} is {}", i.phase.as_str()));
                }
            }
            RecoveryCmd::Outcome {
                incident, intent, ..
            } => {
                let a = attempt(*incident)?;
                match &a.pending {
                    Some(p) if p.index == *intent && p.term == at.term => {}
                    Some(p) if p.index == *intent => {
                        return Err(format!(
                            "incident {incident}: the intent at {intent} is of term {}, not {}: \
                             its leader lost leadership",
                            p.term, at.term
                        ));
                    }
                    _ => return Err(format!("incident {incident}: no intent at {intent}")),
                }
            }
            RecoveryCmd::Settle {
                incident, intent, ..
            } => {
                let a = attempt(*incident)?;
                match &a.pending {
                    Some(p) if p.index == *intent && p.term < at.term => {}
                    Some(p) if p.index == *intent => {
                        return Err(format!(
                            "incident {incident}: the intent at {intent} is of this term: \
                             its leader settles it"
                        ));
                    }
                    _ => return Err(format!("incident {incident}: no intent at {intent}")),
                }
            }
            RecoveryCmd::AwaitApproval { incident, step, .. } => {
                let a = attempt(*incident)?;
                if a.pending.is_some() || *step != a.next {
                    return Err(format!(
                        "incident {incident}: step {} is not next",
                        step + 1
                    ));
                }
            }
            RecoveryCmd::Approve { incident, .. } => {
                let i = open(*incident)?;
                if !matches!(i.phase, Phase::AwaitingApproval | Phase::OutcomeUnknown) {
                    return Err(format!(
                        "incident {incident} waits for no approval (it is {})",
                        i.phase.as_str()
                    ));
                }
            }
            RecoveryCmd::Escalate { incident, .. } => {
                let i = open(*incident)?;
                if i.phase == Phase::Escalated {
                    return Err(format!("incident {incident} is already escalated"));
                }
            }
            RecoveryCmd::Maintenance(m) => {
                if let Some(m) = m
                    && (m.reason.len() > MAX_TEXT || m.by.len() > MAX_TEXT)
                {
                    return Err("maintenance: reason too long".into());
                }
            }
            RecoveryCmd::Drill { target, .. } => {
                let plan = self.catalog.get(target).and_then(|t| t.plan.as_ref());
                if plan.is_none() {
                    return Err(format!("{target} has no recovery plan to drill"));
                }
                if self.open.values().any(|i| i.target == *target) {
                    return Err(format!("{target} has an incident open"));
                }
                if self.open.len() >= MAX_OPEN {
                    return Err("too many incidents open".into());
                }
            }
        }
        Ok(())
    }

    /// Applies a command [`Recovery::check`] takes.
    pub fn apply(&mut self, cmd: &RecoveryCmd, at: EntryAt) -> Result<(), String> {
        self.check(cmd, at)?;
        self.changes += 1;
        match cmd {
            RecoveryCmd::Catalog(targets) => {
                self.catalog = targets
                    .iter()
                    .map(|t| (t.name.clone(), t.clone()))
                    .collect();
            }
            RecoveryCmd::Begin { incident, at_ms } => {
                let plan = self
                    .open
                    .get(incident)
                    .and_then(|i| self.catalog.get(&i.target))
                    .and_then(|t| t.plan.clone());
                let Some(plan) = plan else {
                    return Err("no plan".into());
                };
                let Some(i) = self.open.get_mut(incident) else {
                    return Err("not open".into());
                };
                i.attempts += 1;
                i.phase = Phase::Recovering;
                // A drill is no attempt at a failure: it counts toward
                // neither `max_attempts` nor the cooldown.
                if !i.drill {
                    let times = self.attempt_times.entry(i.target.clone()).or_default();
                    if times.len() >= MAX_ATTEMPT_TIMES {
                        times.pop_front();
                    }
                    times.push_back(*at_ms);
                }
                i.event(
                    *at_ms,
                    "attempt",
                    None,
                    format!(
                        "attempt {} of plan {}{}",
                        i.attempts,
                        plan.name,
                        if plan.dry_run { " (dry run)" } else { "" }
                    ),
                );
                i.attempt = Some(Attempt {
                    plan,
                    started_ms: *at_ms,
                    next: 0,
                    failed: false,
                    pending: None,
                    approved: None,
                });
            }
            RecoveryCmd::Intent {
                incident,
                step,
                by,
                at_ms,
            } => {
                let Some(i) = self.open.get_mut(incident) else {
                    return Err("not open".into());
                };
                let Some(a) = &mut i.attempt else {
                    return Err("no attempt".into());
                };
                let what = a
                    .step(*step)
                    .map(|s| s.action.describe())
                    .unwrap_or_default();
                a.pending = Some(Intent {
                    step: *step,
                    term: at.term,
                    index: at.index,
                    by: *by,
                    at_ms: *at_ms,
                });
                i.phase = Phase::Recovering;
                i.event(
                    *at_ms,
                    "intent",
                    Some(*step),
                    format!("{what} by node {by} (fence {}:{})", at.term, at.index),
                );
            }
            RecoveryCmd::Outcome {
                incident,
                started_ms,
                at_ms,
                result,
                ..
            } => {
                let Some(i) = self.open.get_mut(incident) else {
                    return Err("not open".into());
                };
                let step = i
                    .attempt
                    .as_ref()
                    .and_then(|a| a.pending.as_ref())
                    .map(|p| p.step);
                if !matches!(result, StepResult::NotRun(_)) {
                    i.event(*started_ms, "started", step, "");
                }
                Self::record_result(i, result, *at_ms);
                self.end_attempt_if_done(*incident, *at_ms);
            }
            RecoveryCmd::Settle {
                incident,
                at_ms,
                how,
                ..
            } => {
                let Some(i) = self.open.get_mut(incident) else {
                    return Err("not open".into());
                };
                match how {
                    Settle::Done(text) => {
                        Self::record_result(
                            i,
                            &StepResult::Done(format!("re-checked: {text}")),
                            *at_ms,
                        );
                    }
                    Settle::Retry(text) => {
                        let step = i
                            .attempt
                            .as_mut()
                            .and_then(|a| a.pending.take())
                            .map(|p| p.step);
                        i.event(*at_ms, "retry", step, text.clone());
                    }
                    Settle::Unknown(text) => {
                        let step = i
                            .attempt
                            .as_ref()
                            .and_then(|a| a.pending.as_ref())
                            .map(|p| p.step);
                        i.phase = Phase::OutcomeUnknown;
                        i.event(*at_ms, "unknown", step, format!("outcome unknown: {text}"));
                    }
                }
                self.end_attempt_if_done(*incident, *at_ms);
            }
            RecoveryCmd::AwaitApproval {
                incident,
                step,
                at_ms,
                reason,
            } => {
                let Some(i) = self.open.get_mut(incident) else {
                    return Err("not open".into());
                };
                if let Some(a) = &mut i.attempt {
                    a.approved = None;
                }
                i.phase = Phase::AwaitingApproval;
                i.event(*at_ms, "awaiting_approval", Some(*step), reason.clone());
            }
            RecoveryCmd::Approve {
                incident,
                by,
                skip,
                at_ms,
                until_ms,
            } => {
                let Some(i) = self.open.get_mut(incident) else {
                    return Err("not open".into());
                };
                let unknown = i.phase == Phase::OutcomeUnknown;
                i.phase = Phase::Recovering;
                let Some(a) = &mut i.attempt else {
                    return Err("no attempt".into());
                };
                let step = a.pending.as_ref().map_or(a.next, |p| p.step);
                if *skip {
                    a.pending = None;
                    a.approved = None;
                    a.next = step + 1;
                    i.event(*at_ms, "skipped", Some(step), format!("skipped by {by}"));
                } else {
                    if unknown {
                        a.pending = None;
                    }
                    a.approved = Some((step, *until_ms));
                    i.event(
                        *at_ms,
                        "approved",
                        Some(step),
                        if unknown {
                            format!("re-run approved by {by}")
                        } else {
                            format!("approved by {by}")
                        },
                    );
                }
                self.end_attempt_if_done(*incident, *at_ms);
            }
            RecoveryCmd::Escalate {
                incident,
                at_ms,
                reason,
            } => {
                let Some(i) = self.open.get_mut(incident) else {
                    return Err("not open".into());
                };
                i.phase = Phase::Escalated;
                i.event(*at_ms, "escalated", None, reason.clone());
            }
            RecoveryCmd::Maintenance(m) => {
                self.maintenance = m.clone();
            }
            RecoveryCmd::Drill { target, by, at_ms } => {
                if self.open.len() >= MAX_OPEN {
                    return Err("too many incidents".into());
                }
                self.last_id += 1;
                let id = self.last_id;
                let mut inc = Incident::new(id, target, true, *at_ms);
                inc.event(*at_ms, "drill", None, format!("drill asked by {by}"));
                self.open.insert(id, inc);
            }
        }
        Ok(())
    }

    fn record_result(i: &mut Incident, result: &StepResult, at_ms: u64) {
        let Some(a) = &mut i.attempt else { return };
        let Some(p) = a.pending.take() else { return };
        a.approved = None;
        let fin = a.finally_start();
        let (kind, text) = match result {
            StepResult::Done(t) => {
                a.next = p.step + 1;
                ("done", t)
            }
            StepResult::DryRun(t) => {
                a.next = p.step + 1;
                ("dry_run", t)
            }
            StepResult::Finish(t) => {
                a.next = if p.step < fin { fin } else { p.step + 1 };
                ("finish", t)
            }
            StepResult::Failed(t) => {
                a.failed = true;
                a.next = if p.step < fin { fin } else { p.step + 1 };
                ("failed", t)
            }
            StepResult::NotRun(t) => ("not_run", t),
        };
        // The target came back meanwhile: the rest of the steps are skipped.
        if i.resolved_ms.is_some() && a.next < fin {
            a.next = fin;
        }
        i.phase = Phase::Recovering;
        i.event(at_ms, kind, Some(p.step), text.clone());
    }

    /// Ends the attempt once its last step is done: cooldown starts; a
    /// drill resolves; a resolved incident moves to the history.
    fn end_attempt_if_done(&mut self, id: u64, at_ms: u64) {
        let Some(i) = self.open.get_mut(&id) else {
            return;
        };
        let Some(a) = &i.attempt else { return };
        if a.pending.is_some() || a.next < a.len() {
            return;
        }
        let failed = a.failed;
        let started = a.started_ms;
        i.attempt = None;
        if !i.drill {
            self.last_end.insert(i.target.clone(), at_ms);
        }
        i.event(
            at_ms,
            if failed {
                "attempt_failed"
            } else {
                "attempt_done"
            },
            None,
            format!(
                "attempt {} {} after {} ms",
                i.attempts,
                if failed { "failed" } else { "finished" },
                at_ms.saturating_sub(started)
            ),
        );
        if i.drill {
            i.resolved_ms = Some(at_ms);
            i.phase = Phase::Resolved;
            let ms = at_ms.saturating_sub(i.opened_ms);
            self.stats.entry(i.target.clone()).or_default().1.add(ms);
        } else if i.resolved_ms.is_some() {
            i.phase = Phase::Resolved;
        } else if i.phase != Phase::Escalated {
            i.phase = Phase::Open;
        }
        self.finish_if_done(id, at_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recovery::plan::{Action, Step};

    fn plan(steps: usize, finally: usize) -> Plan {
        let step = |n: usize| Step {
            action: Action::Exec {
                argv: vec![format!("step-{n}")],
                env: vec![],
                timeout_ms: 1000,
            },
            approval: false,
            idempotent: false,
        };
        Plan {
            name: "p".into(),
            steps: (0..steps).map(step).collect(),
            finally: (steps..steps + finally).map(step).collect(),
            cooldown_ms: 0,
            max_attempts: 3,
            attempt_window_ms: 3_600_000,
            dry_run: false,
        }
    }

    fn info(name: &str, deps: &[&str], plan: Option<Plan>) -> TargetInfo {
        TargetInfo {
            name: name.into(),
            depends_on: deps.iter().map(|d| (*d).to_owned()).collect(),
            rto_ms: 60_000,
            plan,
        }
    }

    fn to(target: &str, state: State, at_ms: u64) -> Transition {
        Transition {
            target: target.into(),
            from: State::Up,
            to: state,
            at_ms,
            down_zones: vec!["zone-a".into(), "zone-b".into()],
        }
    }

    fn with_catalog(targets: Vec<TargetInfo>) -> Recovery {
        let mut r = Recovery::default();
        r.apply(&RecoveryCmd::Catalog(targets), EntryAt::default())
            .unwrap();
        r
    }

    fn nodes(_: &str) -> (Vec<NodeId>, Option<u64>) {
        (vec![1, 2], Some(100))
    }

    #[test]
    fn an_incident_opens_on_down_only_and_resolves_on_up_into_the_history() {
        let mut r = with_catalog(vec![info("db", &[], None)]);
        r.on_transitions(&[to("db", State::Suspect, 500)], nodes);
        assert!(r.open().is_empty(), "SUSPECT opened an incident");
        r.on_transitions(&[to("db", State::Down, 1000)], nodes);
        let i = r.open_for("db").unwrap().clone();
        assert_eq!((i.id, i.detect_ms, i.nodes.clone()), (1, 100, vec![1, 2]));
        assert_eq!(i.timeline[0].kind, "detected");
        assert!(
            i.timeline[0].text.contains("zone-a, zone-b"),
            "{:?}",
            i.timeline
        );
        // A second DOWN (after UNKNOWN, say) opens nothing new.
        r.on_transitions(&[to("db", State::Down, 1100)], nodes);
        assert_eq!(r.open().len(), 1);
        r.on_transitions(&[to("db", State::Up, 61_000)], nodes);
        assert!(r.open().is_empty());
        let done = r.incident(1).unwrap();
        assert_eq!(
            (done.phase, done.recover_ms()),
            (Phase::Resolved, Some(60_000))
        );
        assert_eq!(r.stats()["db"].0.last_ms, 60_000);
    }

    #[test]
    fn a_timeline_keeps_detection_first_whatever_the_leaders_clock_and_a_start_goes_back_by_time() {
        let mut r = with_catalog(vec![info("db", &[], Some(plan(2, 0)))]);
        // Log time says 5000; the leader's clock is 1 s behind it.
        r.on_transitions(&[to("db", State::Down, 5000)], nodes);
        let at = |index| EntryAt { term: 2, index };
        let cmds = [
            RecoveryCmd::Begin {
                incident: 1,
                at_ms: 4000,
            },
            RecoveryCmd::Intent {
                incident: 1,
                step: 0,
                by: 1,
                at_ms: 4001,
            },
        ];
        for (k, c) in cmds.iter().enumerate() {
            r.apply(c, at(10 + k as u64)).unwrap();
        }
        // The target comes back (log time) while the step runs; the step
        // started before that and its outcome comes after.
        r.on_transitions(&[to("db", State::Up, 4010)], nodes);
        r.apply(
            &RecoveryCmd::Outcome {
                incident: 1,
                intent: 11,
                started_ms: 4002,
                at_ms: 4020,
                result: StepResult::Done("ok".into()),
            },
            at(12),
        )
        .unwrap();
        let i = r.incident(1).unwrap();
        let kinds: Vec<&str> = i.timeline.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "detected",
                "attempt",
                "intent",
                "started",
                "resolved",
                "done",
                "attempt_done"
            ],
            "{:?}",
            i.timeline
        );
    }

    #[test]
    fn a_dependent_joins_its_dependency_incident_and_recovers_on_its_own_once_that_resolves() {
        let mut r = with_catalog(vec![
            info("db", &[], Some(plan(1, 0))),
            info("app", &["db"], Some(plan(1, 0))),
        ]);
        // The app is seen down first, then the database.
        r.on_transitions(&[to("app", State::Down, 1000)], nodes);
        r.on_transitions(&[to("db", State::Down, 1200)], nodes);
        let app = r.open_for("app").unwrap();
        assert_eq!((app.phase, app.cause), (Phase::Joined, Some(2)));
        assert_eq!(r.open_for("db").unwrap().joined, vec!["app".to_owned()]);
        // A joined incident gets no attempt.
        let begin = RecoveryCmd::Begin {
            incident: 1,
            at_ms: 1300,
        };
        assert!(r.check(&begin, EntryAt::default()).is_err());
        // The database comes back, the app does not: its own recovery.
        r.on_transitions(&[to("db", State::Up, 5000)], nodes);
        let app = r.open_for("app").unwrap();
        assert_eq!((app.phase, app.cause), (Phase::Open, None));
        assert!(r.check(&begin, EntryAt::default()).is_ok());
    }

    /// Runs incident `id`'s pending step `step` to done, intent at `index`.
    fn run_step(r: &mut Recovery, id: u64, step: u32, index: u64, at_ms: u64) {
        let at = |index| EntryAt { term: 2, index };
        r.apply(
            &RecoveryCmd::Intent {
                incident: id,
                step,
                by: 1,
                at_ms,
            },
            at(index),
        )
        .unwrap();
        r.apply(
            &RecoveryCmd::Outcome {
                incident: id,
                intent: index,
                started_ms: at_ms,
                at_ms: at_ms + 1,
                result: StepResult::Done("ok".into()),
            },
            at(index + 1),
        )
        .unwrap();
    }

    #[test]
    fn a_dependent_gets_its_own_recovery_only_once_its_dependencys_attempt_is_over() {
        // The database's plan stops the app, restarts the database, and
        // starts the app again in `finally` (the runbook's order): the app
        // is DOWN because of the plan itself, joined to the database's
        // incident. The database comes back before `finally` has run.
        for app_back_in_time in [true, false] {
            let mut r = with_catalog(vec![
                info("db", &[], Some(plan(2, 1))),
                info("app", &["db"], Some(plan(1, 0))),
            ]);
            r.on_transitions(&[to("db", State::Down, 1000)], nodes);
            r.apply(
                &RecoveryCmd::Begin {
                    incident: 1,
                    at_ms: 1001,
                },
                EntryAt { term: 2, index: 10 },
            )
            .unwrap();
            run_step(&mut r, 1, 0, 11, 1002); // the app stopped
            r.on_transitions(&[to("app", State::Down, 1100)], nodes);
            assert_eq!(r.open_for("app").unwrap().phase, Phase::Joined);
            run_step(&mut r, 1, 1, 13, 1200); // the database restarted
            r.on_transitions(&[to("db", State::Up, 1300)], nodes);
            // `finally` is still to run: the app waits, joined.
            let app = r.open_for("app").unwrap();
            assert_eq!((app.phase, app.cause), (Phase::Joined, Some(1)));
            run_step(&mut r, 1, 2, 15, 1400); // `finally`: the app started
            if app_back_in_time {
                r.on_transitions(&[to("app", State::Up, 1400)], nodes);
            }
            // The attempt is over now; the database's incident is history.
            assert!(r.open_for("db").is_none());
            match r.open_for("app") {
                None => assert!(app_back_in_time, "the app's incident closed while down"),
                Some(app) => {
                    assert!(!app_back_in_time, "the app came back, still open: {app:?}");
                    assert_eq!((app.phase, app.cause), (Phase::Open, None));
                }
            }
        }
    }

    #[test]
    fn an_outcome_is_taken_only_in_its_intents_term_and_a_later_leader_settles_it() {
        let mut r = with_catalog(vec![info("db", &[], Some(plan(2, 1)))]);
        r.on_transitions(&[to("db", State::Down, 1000)], nodes);
        let at = |term, index| EntryAt { term, index };
        r.apply(
            &RecoveryCmd::Begin {
                incident: 1,
                at_ms: 1001,
            },
            at(2, 10),
        )
        .unwrap();
        // Each step's intent 5 ms after the one before, from 1002.
        let intent = |step: u32| RecoveryCmd::Intent {
            incident: 1,
            step,
            by: 1,
            at_ms: 1002 + 5 * u64::from(step),
        };
        // Not the next step: refused, nothing changes.
        let before = r.clone();
        assert!(r.apply(&intent(1), at(2, 11)).is_err());
        assert_eq!(r, before);
        r.apply(&intent(0), at(2, 11)).unwrap();
        // A second intent while one is pending: refused.
        assert!(r.apply(&intent(0), at(2, 12)).is_err());
        // The step's side effect right after its intent.
        let outcome = |intent: u64| RecoveryCmd::Outcome {
            incident: 1,
            intent,
            started_ms: if intent == 11 { 1003 } else { 1013 },
            at_ms: if intent == 11 { 1004 } else { 1014 },
            result: StepResult::Done("ok".into()),
        };
        // The same outcome in a later term (its leader lost the term): refused.
        let before = r.clone();
        let e = r.apply(&outcome(11), at(3, 13)).unwrap_err();
        assert!(e.contains("lost leadership"), "{e}");
        assert_eq!(r, before);
        // The later leader settles it instead; its own term's settle of
        // its own intent is refused.
        let settle = |how| RecoveryCmd::Settle {
            incident: 1,
            intent: 11,
            at_ms: 1005,
            how,
        };
        assert!(
            r.check(&settle(Settle::Retry("x".into())), at(2, 13))
                .is_err()
        );
        r.apply(
            &settle(Settle::Unknown("exec may have run".into())),
            at(3, 13),
        )
        .unwrap();
        assert_eq!(r.open_for("db").unwrap().phase, Phase::OutcomeUnknown);
        // No intent while a person decides.
        assert!(r.check(&intent(0), at(3, 14)).is_err());
        let approve = RecoveryCmd::Approve {
            incident: 1,
            by: "alice (operate)".into(),
            skip: true,
            at_ms: 1006,
            until_ms: 100,
        };
        r.apply(&approve, at(3, 14)).unwrap();
        let a = r.open_for("db").unwrap().attempt.clone().unwrap();
        assert_eq!((a.next, a.pending), (1, None));
        // Step 2 fails: the attempt goes on with `finally`, then ends.
        r.apply(&intent(1), at(3, 15)).unwrap();
        let failed = RecoveryCmd::Outcome {
            incident: 1,
            intent: 15,
            started_ms: 1008,
            at_ms: 1009,
            result: StepResult::Failed("exit 1".into()),
        };
        r.apply(&failed, at(3, 16)).unwrap();
        assert_eq!(r.open_for("db").unwrap().attempt.as_ref().unwrap().next, 2);
        r.apply(&intent(2), at(3, 17)).unwrap();
        r.apply(&outcome(17), at(3, 18)).unwrap();
        let i = r.open_for("db").unwrap();
        assert!(i.attempt.is_none());
        assert_eq!(i.phase, Phase::Open);
        assert_eq!(r.last_end("db"), Some(1014));
        let kinds: Vec<&str> = i.timeline.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "detected",
                "attempt",
                "intent",
                "unknown",
                "skipped",
                "intent",
                "started",
                "failed",
                "intent",
                "started",
                "done",
                "attempt_failed"
            ]
        );
    }

    #[test]
    fn the_target_coming_back_skips_to_finally_and_a_drill_resolves_when_its_attempt_ends() {
        let mut r = with_catalog(vec![info("db", &[], Some(plan(3, 1)))]);
        r.on_transitions(&[to("db", State::Down, 1000)], nodes);
        let at = |index| EntryAt { term: 1, index };
        r.apply(
            &RecoveryCmd::Begin {
                incident: 1,
                at_ms: 1,
            },
            at(1),
        )
        .unwrap();
        r.on_transitions(&[to("db", State::Up, 2000)], nodes);
        let i = r.open().get(&1).unwrap();
        assert_eq!(
            i.attempt.as_ref().unwrap().next,
            3,
            "did not skip to finally"
        );
        r.apply(
            &RecoveryCmd::Intent {
                incident: 1,
                step: 3,
                by: 1,
                at_ms: 2,
            },
            at(2),
        )
        .unwrap();
        r.apply(
            &RecoveryCmd::Outcome {
                incident: 1,
                intent: 2,
                started_ms: 3,
                at_ms: 4,
                result: StepResult::Done(String::new()),
            },
            at(3),
        )
        .unwrap();
        assert!(r.open().is_empty());
        assert_eq!(r.incident(1).unwrap().phase, Phase::Resolved);
        // A drill of an UP target: its plan runs, it resolves at the end,
        // counted apart.
        let drill = RecoveryCmd::Drill {
            target: "db".into(),
            by: "alice".into(),
            at_ms: 10_000,
        };
        r.apply(&drill, at(4)).unwrap();
        assert!(r.check(&drill, at(5)).is_err(), "two drills at once");
        r.apply(
            &RecoveryCmd::Begin {
                incident: 2,
                at_ms: 10_001,
            },
            at(5),
        )
        .unwrap();
        for (k, step) in (0..4u32).enumerate() {
            let i = 6 + 2 * k as u64;
            r.apply(
                &RecoveryCmd::Intent {
                    incident: 2,
                    step,
                    by: 1,
                    at_ms: 10_002,
                },
                at(i),
            )
            .unwrap();
            r.apply(
                &RecoveryCmd::Outcome {
                    incident: 2,
                    intent: i,
                    started_ms: 10_003,
                    at_ms: 10_500,
                    result: StepResult::Done(String::new()),
                },
                at(i + 1),
            )
            .unwrap();
        }
        assert!(r.open().is_empty());
        // The drill moved neither the cooldown nor the attempts window.
        assert_eq!(r.last_end("db"), Some(4));
        assert_eq!(r.attempt_times("db").collect::<Vec<_>>(), [1]);
        let (real, drills) = &r.stats()["db"];
        assert_eq!((real.count, drills.count, drills.last_ms), (1, 1, 500));
    }

    #[test]
    fn the_target_coming_back_after_the_last_step_ends_the_attempt_and_the_incident() {
        // Two steps, no `finally`: the first ran, the target is back before
        // the second: nothing is left to run, the incident is over.
        let mut r = with_catalog(vec![info("db", &[], Some(plan(2, 0)))]);
        r.on_transitions(&[to("db", State::Down, 1000)], nodes);
        let at = |index| EntryAt { term: 1, index };
        r.apply(
            &RecoveryCmd::Begin {
                incident: 1,
                at_ms: 1001,
            },
            at(1),
        )
        .unwrap();
        let intent = RecoveryCmd::Intent {
            incident: 1,
            step: 0,
            by: 1,
            at_ms: 1002,
        };
        r.apply(&intent, at(2)).unwrap();
        let done = RecoveryCmd::Outcome {
            incident: 1,
            intent: 2,
            started_ms: 1003,
            at_ms: 1004,
            result: StepResult::Done(String::new()),
        };
        r.apply(&done, at(3)).unwrap();
        r.on_transitions(&[to("db", State::Up, 2000)], nodes);
        assert!(r.open().is_empty(), "{:?}", r.open());
        let i = r.incident(1).unwrap();
        assert_eq!((i.phase, i.attempt.is_none()), (Phase::Resolved, true));
        // The second step's intent, decided before the UP was applied, is
        // refused: nothing runs after the incident ended.
        let late = RecoveryCmd::Intent {
            incident: 1,
            step: 1,
            by: 1,
            at_ms: 2001,
        };
        assert!(r.check(&late, at(4)).is_err());
    }

    #[test]
    fn crafted_entries_cannot_grow_the_state_past_its_bounds() {
        let mut big = plan(MAX_STEPS, 1);
        big.name = "big".into();
        let r = Recovery::default();
        assert!(
            r.check(
                &RecoveryCmd::Catalog(vec![info("x", &[], Some(big))]),
                EntryAt::default()
            )
            .is_err()
        );
        let mut r = with_catalog(vec![]);
        for k in 0..(MAX_OPEN as u64 + 10) {
            r.on_transitions(&[to(&format!("t{k}"), State::Down, k)], nodes);
        }
        assert_eq!(r.open().len(), MAX_OPEN);
        let mut i = r.open().get(&1).unwrap().clone();
        for k in 0..(MAX_EVENTS * 2) {
            i.event(k as u64, "x", None, "y".repeat(MAX_TEXT * 2));
        }
        assert_eq!(i.timeline.len(), MAX_EVENTS);
        assert!(i.timeline.iter().all(|e| e.text.len() <= MAX_TEXT + 4));
    }
}
