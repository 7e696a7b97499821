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
//!   incident whose cause resolved while its target is still DOWN gets its
//!   own recovery;
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
    /// From the first node's DOWN verdict to the agreed DOWN, ms.
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
        self.timeline.push(e);
    }

    /// Whether recovery has been tried (an attempt begun).
    fn started(&self) -> bool {
        self.attempts > 0
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
    /// the earliest time one of them measured it.
    pub fn on_transitions(
        &mut self,
        transitions: &[Transition],
        down_nodes: impl Fn(&str) -> (Vec<NodeId>, Option<u64>),
    ) {
        for t in transitions {
            if t.to == State::Down {
                if self.open_for(&t.target).is_some() {
                    continue;
                }
                let (nodes, first) = down_nodes(&t.target);
                self.open_incident(t, nodes, first);
            } else if t.to == State::Up {
                self.resolve(&t.target, t.at_ms);
            }
        }
    }

    fn open_incident(&mut self, t: &Transition, nodes: Vec<NodeId>, first_ms: Option<u64>) {
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
            id,
            target: t.target.clone(),
            drill: false,
            opened_ms: t.at_ms,
            detect_ms: first_ms.map_or(0, |f| t.at_ms.saturating_sub(f)),
            zones: t.down_zones.clone(),
            nodes,
            cause: None,
            joined: Vec::new(),
            phase: Phase::Open,
            resolved_ms: None,
            attempts: 0,
            attempt: None,
            timeline: Vec::new(),
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
            // Incidents joined to this one whose targets are still down get
            // their own recovery.
            for other in self.open.values_mut() {
                if other.cause == Some(id) && other.resolved_ms.is_none() {
                    other.cause = None;
                    other.phase = Phase::Open;
                    other.event(
                        at_ms,
                        "own_recovery",
                        None,
                        format!("{target} is UP, {} still is not", other.target),
                    );
                }
            }
            self.finish_if_done(id);
        }
    }

    /// Moves an incident to the history once resolved with no attempt.
    fn finish_if_done(&mut self, id: u64) {
        let done = self
            .open
            .get(&id)
            .is_some_and(|i| i.resolved_ms.is_some() && i.attempt.is_none());
        if done && let Some(inc) = self.open.remove(&id) {
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
    pub fn apply(&mut self, cmd: &RecoveryCmd, at: EntryAt, log_now_ms: u64) -> Result<(), String> {
        self.check(cmd, at)?;
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
                let times = self.attempt_times.entry(i.target.clone()).or_default();
                if times.len() >= MAX_ATTEMPT_TIMES {
                    times.pop_front();
                }
                times.push_back(*at_ms);
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
                let mut inc = Incident {
                    id,
                    target: target.clone(),
                    drill: true,
                    opened_ms: *at_ms,
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
                };
                inc.event(*at_ms, "drill", None, format!("drill asked by {by}"));
                self.open.insert(id, inc);
            }
        }
        let _ = log_now_ms;
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
        self.last_end.insert(i.target.clone(), at_ms);
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
        self.finish_if_done(id);
    }
}
