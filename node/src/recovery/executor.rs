//! The executor: the only place a recovery side effect happens, and only
//! on the leader.
//!
//! Every node runs it; it acts only while its node leads. It reads the
//! committed incidents and moves each one step at a time, one task per
//! incident:
//!
//! 1. the step's **intent** is proposed and committed (the entry's term and
//!    index are the step's fencing token);
//! 2. the leader checks that it still leads in that term and confirms it
//!    with raft's **read index** (a quorum heard it) immediately before the
//!    side effect; otherwise it starts nothing;
//! 3. the action runs, carrying the fencing token;
//! 4. the **outcome** is proposed; the state machine takes it only in the
//!    intent's term, so an outcome from a leader that lost its term is
//!    refused.
//!
//! A later leader finds an intent of an earlier term without an outcome and
//! **settles** it: the action re-checks the world (a container started after
//! the intent counts as done); a step nothing can tell about is run again
//! only if it is idempotent, else it is marked outcome unknown and waits for
//! a person (`faxictl approve ID` to re-run, `--skip` to skip).
//!
//! Recovery starts only from a committed DOWN (an incident in the state);
//! never from this node's own verdicts.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::task::{self, JoinError, JoinHandle, JoinSet};

use super::actions::{self, ActionFuture, AgreedStates, Fence, Outcome, Recheck, StepRun, World};
use super::incidents::{Incident, Phase, RecoveryCmd, Settle, StepResult, TargetInfo};
use super::plan::RecoveryDefaults;
use crate::mesh::driver::{Mesh, MeshError};
use crate::mesh::state::{Command, NodeId, State};

/// How long a recovery proposal may take to commit.
const PROPOSE_DEADLINE: Duration = Duration::from_secs(5);
/// How long the leader waits for its read-index confirmation.
const CONFIRM_DEADLINE: Duration = Duration::from_secs(1);
/// The executor looks again at least this often (cooldowns, approvals and
/// maintenance end with time, not with an entry).
const RECHECK: Duration = Duration::from_millis(500);

/// The leader's clock, Unix ms.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The agreed state as the actions read it.
struct MeshStates(Mesh);

impl AgreedStates for MeshStates {
    fn state(&self, target: &str) -> Option<State> {
        self.0.read().sm.agreed().get(target).map(|a| a.state)
    }

    fn changed(&self) -> ActionFuture<'_, ()> {
        let mut rx = self.0.subscribe();
        // A new receiver has seen nothing: without this it would wake at
        // once, every time.
        rx.borrow_and_update();
        Box::pin(async move {
            // A stopped driver: wait a little rather than spin.
            if rx.changed().await.is_err() {
                tokio::time::sleep(RECHECK).await;
            }
        })
    }
}

/// What the executor needs from this node's config.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// The targets' dependencies, RTOs and plans.
    pub catalog: Vec<TargetInfo>,
    /// `[recovery_defaults]`.
    pub defaults: RecoveryDefaults,
    /// `[kubernetes] kubeconfig`: the API server of `k8s.*` steps; `None`:
    /// the pod's service account (or `KUBECONFIG`).
    pub kubeconfig: Option<std::path::PathBuf>,
}

impl Settings {
    /// The catalog (every target's dependencies, RTO and plan) and the
    /// recovery defaults from a node's config.
    pub fn from_config(config: &crate::config::Config) -> Self {
        let catalog = config
            .targets
            .iter()
            .map(|t| TargetInfo {
                name: t.name.clone(),
                depends_on: t.depends_on.clone(),
                rto_ms: t
                    .rto
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                plan: t
                    .recovery
                    .as_ref()
                    .and_then(|name| config.recovery.plans.get(name).cloned()),
            })
            .collect();
        Self {
            catalog,
            defaults: config.recovery.defaults.clone(),
            kubeconfig: config.kubernetes.kubeconfig.clone(),
        }
    }
}

/// The executor of one node.
pub struct Executor {
    mesh: Mesh,
    me: NodeId,
    world: World,
    settings: Settings,
    /// Intents of this node that it gave up before their side effect.
    unrun: std::sync::Mutex<std::collections::BTreeSet<u64>>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

/// One move for one incident, decided from the committed state.
#[derive(Debug)]
enum Move {
    Begin,
    Escalate(String),
    AwaitApproval(u32, String),
    Run(u32),
    Settle,
    /// An intent of this term that no task of this node is running: it
    /// never started (another node's proposal that reached the log in this
    /// term, or one this node gave up before the side effect).
    NotRun(u64),
}

impl Executor {
    /// The executor of node `me`.
    pub fn new(mesh: Mesh, me: NodeId, settings: Settings) -> Self {
        let world = World {
            docker: actions::DockerEngine::default(),
            agreed: Arc::new(MeshStates(mesh.clone())),
            http: crate::probe::HttpClient::new(),
            kube: settings
                .kubeconfig
                .clone()
                .map_or_else(actions::KubeApi::default, actions::KubeApi::with_kubeconfig),
        };
        Self {
            mesh,
            me,
            world,
            settings,
            unrun: std::sync::Mutex::default(),
        }
    }

    /// Runs until the task is dropped. It looks again when the recovery
    /// state or this node's leadership changed, when one of its tasks
    /// ended, and every [`RECHECK`] (cooldowns, approvals and maintenance
    /// end with time); not on every applied entry, which at thousands of
    /// targets come by the hundred a second.
    pub async fn run(self) {
        let this = Arc::new(self);
        let mut version = this.mesh.subscribe();
        version.borrow_and_update();
        // One task per incident that is moving: its id in `running`. The
        // loop looks again when a task has ended (`join_next`), not when
        // the task says it is about to: a task still finishing when the
        // loop looks would keep its incident from moving until the next
        // change or the periodic look.
        let mut running = Moves(JoinSet::new());
        let mut tasks: BTreeMap<u64, task::Id> = BTreeMap::new();
        let mut catalog_task: Option<JoinHandle<()>> = None;
        // The term in which the log's catalog was found to be this config's.
        let mut catalog_verified: Option<u64> = None;
        let mut metrics = super::metrics::Observer::default();
        let mut seen = None;
        let mut timer = true;
        loop {
            while let Some(ended) = running.0.try_join_next_with_id() {
                forget(&mut tasks, &ended);
            }
            let (leads, term, changes) = {
                let s = this.mesh.read();
                (
                    s.info.leader == this.me && s.info.role == "leader",
                    s.info.term,
                    s.sm.recovery().changes(),
                )
            };
            let now = (changes, leads, term, tasks.len());
            if timer || seen != Some(now) {
                seen = Some(now);
                metrics.observe(&this.mesh.read().sm);
                if leads && catalog_verified != Some(term) {
                    if this.catalog_is_current() {
                        catalog_verified = Some(term);
                    } else if catalog_task.as_ref().is_none_or(JoinHandle::is_finished) {
                        let e = this.clone();
                        catalog_task = Some(tokio::spawn(async move {
                            let cmd = RecoveryCmd::Catalog(e.settings.catalog.clone());
                            if let Err(err) = e.propose(cmd).await {
                                tracing::warn!(error = %err, "could not record the recovery catalog");
                            }
                        }));
                    }
                }
                if leads && catalog_verified == Some(term) {
                    for (id, m) in this.decide(term, &tasks) {
                        let e = this.clone();
                        let h = running.0.spawn(async move { e.act(id, m, term).await });
                        tasks.insert(id, h.id());
                    }
                }
            }
            timer = false;
            tokio::select! {
                r = version.changed() => if r.is_err() { return },
                Some(ended) = running.0.join_next_with_id() => forget(&mut tasks, &ended),
                () = tokio::time::sleep(RECHECK) => timer = true,
            }
        }
    }

    /// Whether the log's catalog is this node's config's.
    fn catalog_is_current(&self) -> bool {
        let s = self.mesh.read();
        let have = s.sm.recovery().catalog();
        have.len() == self.settings.catalog.len()
            && self
                .settings
                .catalog
                .iter()
                .all(|t| have.get(&t.name) == Some(t))
    }

    async fn propose(&self, cmd: RecoveryCmd) -> Result<u64, MeshError> {
        self.mesh
            .propose(Command::Recovery(cmd), PROPOSE_DEADLINE)
            .await
    }

    fn leads_in(&self, term: u64) -> bool {
        let s = self.mesh.read();
        s.info.leader == self.me && s.info.role == "leader" && s.info.term == term
    }

    /// The moves to make now, one per incident without a task.
    fn decide(&self, term: u64, tasks: &BTreeMap<u64, task::Id>) -> Vec<(u64, Move)> {
        let s = self.mesh.read();
        let rec = s.sm.recovery();
        if rec.open().is_empty() {
            return Vec::new();
        }
        let now = now_ms();
        let maintenance = rec.maintenance().is_some_and(|m| m.until_ms > now);
        // An incident with a task but no attempt yet is beginning one (its
        // Begin proposed, not applied): it counts, or every entry applied
        // meanwhile would let another attempt begin past the budget. (Once
        // escalated, its task only sends the webhook.)
        let running = rec
            .open()
            .values()
            .filter(|i| {
                i.attempt.is_some() || (tasks.contains_key(&i.id) && i.phase != Phase::Escalated)
            })
            .count();
        let mut budget = usize::try_from(self.settings.defaults.max_concurrent)
            .unwrap_or(usize::MAX)
            .saturating_sub(running);
        // Dependencies first, then the order of the catalog (config order).
        let order: BTreeMap<&str, usize> = self
            .settings
            .catalog
            .iter()
            .enumerate()
            .map(|(k, t)| (t.name.as_str(), k))
            .collect();
        let mut incidents: Vec<&Incident> = rec.open().values().collect();
        incidents.sort_by_key(|i| {
            (
                depth(rec.catalog(), &i.target),
                order.get(i.target.as_str()).copied().unwrap_or(usize::MAX),
                i.id,
            )
        });
        let mut moves = Vec::new();
        for i in incidents {
            if tasks.contains_key(&i.id) || matches!(i.phase, Phase::Joined | Phase::Escalated) {
                continue;
            }
            match &i.attempt {
                None => {
                    if i.resolved_ms.is_some() || maintenance || budget == 0 {
                        continue;
                    }
                    let Some(plan) = rec.catalog().get(&i.target).and_then(|t| t.plan.as_ref())
                    else {
                        continue;
                    };
                    if !i.drill {
                        if rec
                            .last_end(&i.target)
                            .is_some_and(|end| end.saturating_add(plan.cooldown_ms) > now)
                        {
                            continue;
                        }
                        let window_start = now.saturating_sub(plan.attempt_window_ms);
                        let recent = rec
                            .attempt_times(&i.target)
                            .filter(|t| *t >= window_start)
                            .count();
                        if recent >= usize::try_from(plan.max_attempts).unwrap_or(usize::MAX) {
                            moves.push((
                                i.id,
                                Move::Escalate(format!(
                                    "{recent} attempts of plan {} within {} s and {} still down: \
                                     recovery stops, a person takes over",
                                    plan.name,
                                    plan.attempt_window_ms / 1000,
                                    i.target
                                )),
                            ));
                            continue;
                        }
                    }
                    budget -= 1;
                    moves.push((i.id, Move::Begin));
                }
                Some(a) => {
                    if let Some(p) = &a.pending {
                        if p.term < term && i.phase != Phase::OutcomeUnknown {
                            moves.push((i.id, Move::Settle));
                        } else if p.term == term
                            && (p.by != self.me
                                || self.unrun.lock().is_ok_and(|u| u.contains(&p.index)))
                        {
                            moves.push((i.id, Move::NotRun(p.index)));
                        }
                        continue;
                    }
                    if i.phase == Phase::AwaitingApproval || maintenance {
                        continue;
                    }
                    let Some(step) = a.step(a.next) else {
                        continue;
                    };
                    if step.approval && !a.plan.dry_run {
                        match a.approved {
                            Some((s, until)) if s == a.next && until > now => {}
                            Some((s, _)) if s == a.next => {
                                moves.push((
                                    i.id,
                                    Move::AwaitApproval(a.next, "the approval expired".into()),
                                ));
                                continue;
                            }
                            _ => {
                                moves.push((
                                    i.id,
                                    Move::AwaitApproval(
                                        a.next,
                                        format!(
                                            "{} needs approval: faxictl approve {}",
                                            step.action.describe(),
                                            i.id
                                        ),
                                    ),
                                ));
                                continue;
                            }
                        }
                    }
                    moves.push((i.id, Move::Run(a.next)));
                }
            }
        }
        moves
    }

    /// Makes one move for incident `id`, as the leader of `term`.
    async fn act(&self, id: u64, m: Move, term: u64) {
        let at_ms = now_ms();
        let r = match m {
            Move::Begin => {
                self.propose(RecoveryCmd::Begin {
                    incident: id,
                    at_ms,
                })
                .await
            }
            Move::Escalate(reason) => {
                let r = self
                    .propose(RecoveryCmd::Escalate {
                        incident: id,
                        at_ms,
                        reason: reason.clone(),
                    })
                    .await;
                if let Ok(index) = r {
                    self.notify_escalation(id, term, index, &reason).await;
                }
                r
            }
            Move::AwaitApproval(step, reason) => {
                let r = self
                    .propose(RecoveryCmd::AwaitApproval {
                        incident: id,
                        step,
                        at_ms,
                        reason,
                    })
                    .await;
                if r.is_ok() {
                    metrics::counter!(super::metrics::APPROVALS_ASKED).increment(1);
                }
                r
            }
            Move::Run(step) => self.run_step(id, step, term).await,
            Move::Settle => self.settle(id, term).await,
            Move::NotRun(index) => {
                let r = self
                    .record_outcome(
                        id,
                        index,
                        at_ms,
                        StepResult::NotRun("not started: it may be tried again".into()),
                        term,
                    )
                    .await;
                if r.is_ok()
                    && let Ok(mut u) = self.unrun.lock()
                {
                    u.remove(&index);
                }
                r
            }
        };
        if let Err(e) = r {
            tracing::warn!(incident = id, error = %e, "recovery entry not recorded");
        }
    }

    /// The step as it runs: its action bound to the world, and what it is
    /// told (incident, target, fencing token).
    fn bound(&self, id: u64, fence: Fence, intent_at_ms: u64, step: u32) -> Option<Bound> {
        let s = self.mesh.read();
        let i = s.sm.recovery().open().get(&id)?;
        let a = i.attempt.as_ref()?;
        let st = a.step(step)?;
        Some(Bound {
            action: actions::bind(&st.action, &self.world),
            describe: st.action.describe(),
            name: st.action.name(),
            idempotent: st.idempotent,
            dry_run: a.plan.dry_run,
            run: StepRun {
                incident: id,
                target: i.target.clone(),
                plan: a.plan.name.clone(),
                step: step + 1,
                fence,
                intent_at_ms,
            },
        })
    }

    async fn run_step(&self, id: u64, step: u32, term: u64) -> Result<u64, MeshError> {
        let index = self
            .propose(RecoveryCmd::Intent {
                incident: id,
                step,
                by: self.me,
                at_ms: now_ms(),
            })
            .await?;
        // The fencing token, as the state recorded it.
        let pending = self.pending(id);
        let Some(p) = pending.filter(|p| p.index == index) else {
            return Ok(index);
        };
        let fence = Fence {
            term: p.term,
            index: p.index,
        };
        // Never start a side effect without being the leader of the
        // intent's term, confirmed by a quorum just now.
        let confirmed = p.term == term
            && self.leads_in(p.term)
            && self.mesh.read_index(CONFIRM_DEADLINE).await.is_ok()
            && self.leads_in(p.term);
        let bound = if confirmed {
            self.bound(id, fence, p.at_ms, step)
        } else {
            None
        };
        let Some(b) = bound else {
            tracing::warn!(
                incident = id,
                fence.term,
                fence.index,
                "leadership of the intent's term not confirmed: the step does not start"
            );
            if let Ok(mut u) = self.unrun.lock() {
                u.insert(index);
            }
            return Ok(index);
        };
        let started_ms = now_ms();
        tracing::info!(
            incident = id, target = %b.run.target, plan = %b.run.plan, step = step + 1,
            action = %b.describe, fence.term, fence.index, dry_run = b.dry_run,
            "recovery step starts"
        );
        let result = if b.dry_run {
            StepResult::DryRun(format!("would run: {}", b.describe))
        } else {
            match b.action.run(&b.run).await {
                Outcome::Done(t) => StepResult::Done(t),
                Outcome::Failed(t) => StepResult::Failed(t),
                Outcome::Finish(t) => StepResult::Finish(t),
            }
        };
        let label = match &result {
            StepResult::Done(_) => "done",
            StepResult::Failed(_) => "failed",
            StepResult::Finish(_) => "finish",
            StepResult::DryRun(_) => "dry_run",
            StepResult::NotRun(_) => "not_run",
        };
        metrics::counter!(super::metrics::STEPS, "plan" => b.run.plan.clone(), "action" => b.name, "result" => label)
            .increment(1);
        tracing::info!(
            incident = id,
            step = step + 1,
            result = label,
            fence.term,
            fence.index,
            "recovery step ended"
        );
        self.record_outcome(id, index, started_ms, result, term)
            .await
    }

    /// Records a step's outcome; tried again while this node still leads
    /// in `term` (once the side effect happened, only its outcome is
    /// missing: it is never run again for want of it).
    async fn record_outcome(
        &self,
        id: u64,
        intent: u64,
        started_ms: u64,
        result: StepResult,
        term: u64,
    ) -> Result<u64, MeshError> {
        loop {
            let r = self
                .propose(RecoveryCmd::Outcome {
                    incident: id,
                    intent,
                    started_ms,
                    at_ms: now_ms(),
                    result: result.clone(),
                })
                .await;
            match r {
                Err(MeshError::Rejected(_)) | Ok(_) => return r,
                Err(e) if !self.leads_in(term) => return Err(e),
                Err(e) => {
                    tracing::warn!(incident = id, error = %e, "outcome not recorded yet: trying again");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// The incident's intent without an outcome, as the state records it.
    fn pending(&self, id: u64) -> Option<super::incidents::Intent> {
        let s = self.mesh.read();
        s.sm.recovery()
            .open()
            .get(&id)
            .and_then(|i| i.attempt.as_ref())
            .and_then(|a| a.pending.clone())
    }

    /// Settles an intent an earlier leader left without an outcome.
    async fn settle(&self, id: u64, term: u64) -> Result<u64, MeshError> {
        let pending = self.pending(id);
        let Some(p) = pending else { return Ok(0) };
        let Some(b) = self.bound(
            id,
            Fence {
                term: p.term,
                index: p.index,
            },
            p.at_ms,
            p.step,
        ) else {
            return Ok(0);
        };
        let how = if b.dry_run {
            Settle::Retry("dry run: nothing ran".into())
        } else {
            match b.action.recheck(&b.run).await {
                Recheck::Done(t) => Settle::Done(t),
                Recheck::NotDone => Settle::Retry(format!(
                    "{} did not run under the earlier leader: running it again",
                    b.describe
                )),
                Recheck::CannotTell if b.idempotent => Settle::Retry(format!(
                    "{} may have run under the earlier leader; it is idempotent: running it again",
                    b.describe
                )),
                Recheck::CannotTell => Settle::Unknown(format!(
                    "{} may have run under leader {} (fence {}:{}) and is not idempotent: \
                     faxictl approve {id} to run it again, or --skip",
                    b.describe, p.by, p.term, p.index
                )),
            }
        };
        if !self.leads_in(term) {
            return Ok(0);
        }
        self.propose(RecoveryCmd::Settle {
            incident: id,
            intent: p.index,
            at_ms: now_ms(),
            how,
        })
        .await
    }

    /// Tells people an incident escalated (the webhook of
    /// `[recovery_defaults] notify_url_env`, if set).
    async fn notify_escalation(&self, id: u64, term: u64, index: u64, reason: &str) {
        metrics::counter!(super::metrics::ESCALATIONS).increment(1);
        let Some(env) = self.settings.defaults.notify_url_env.clone() else {
            return;
        };
        let target = self
            .mesh
            .read()
            .sm
            .recovery()
            .incident(id)
            .map(|i| i.target.clone())
            .unwrap_or_default();
        let action = super::plan::Action::Notify {
            url_env: env,
            message: format!("escalated: {reason}"),
            timeout_ms: 10_000,
        };
        let run = StepRun {
            incident: id,
            target,
            plan: String::new(),
            step: 0,
            fence: Fence { term, index },
            intent_at_ms: now_ms(),
        };
        if let Outcome::Failed(e) = actions::bind(&action, &self.world).run(&run).await {
            tracing::warn!(incident = id, error = %e, "escalation not notified");
        }
    }
}

struct Bound {
    action: Box<dyn actions::StepAction>,
    describe: String,
    name: &'static str,
    idempotent: bool,
    dry_run: bool,
    run: StepRun,
}

/// The moves under way. When the executor stops (its task aborted as the
/// node shuts down), they are left to finish on their own, as detached
/// tasks: a step that started is not cut short by the executor's end.
struct Moves(JoinSet<()>);

impl Drop for Moves {
    fn drop(&mut self) {
        self.0.detach_all();
    }
}

/// Forgets the incident whose move ended (or panicked): it may move again.
fn forget(tasks: &mut BTreeMap<u64, task::Id>, ended: &Result<(task::Id, ()), JoinError>) {
    let id = match ended {
        Ok((id, ())) => *id,
        Err(e) => e.id(),
    };
    tasks.retain(|_, t| *t != id);
}

/// How deep a target sits in the dependency graph (0: depends on nothing).
fn depth(catalog: &BTreeMap<String, TargetInfo>, target: &str) -> usize {
    let mut d = 0;
    let mut level: Vec<&str> = vec![target];
    while d < 64 {
        let next: Vec<&str> = level
            .iter()
            .filter_map(|t| catalog.get(*t))
            .flat_map(|t| t.depends_on.iter().map(String::as_str))
            .collect();
        if next.is_empty() {
            break;
        }
        d += 1;
        level = next;
    }
    d
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::mesh::driver::Shared;
    use crate::mesh::state::{Member, StateMachine};
    use crate::recovery::incidents::EntryAt;
    use crate::recovery::plan::{Action, Plan, Step};

    /// The executor of node 1, leader of term 1 of a one-node cluster with
    /// no raft under it, `max_concurrent = 1`, and two independent targets
    /// with a plan each, both drilled: incidents 1 and 2, open, no attempt.
    fn two_incidents() -> Executor {
        incidents(&[("db", &[]), ("cache", &[])], &["db", "cache"])
    }

    /// A leader whose catalog is `catalog` (target, dependencies), in
    /// that order, with a drill open for each of `drills`, in that order.
    fn incidents(catalog: &[(&str, &[&str])], drills: &[&str]) -> Executor {
        let sm = StateMachine::new([(
            1,
            Member {
                zone: "zone-a".into(),
                addr: "127.0.0.1:7401".into(),
                instance: 0,
            },
        )]);
        let shared = Shared::leading(sm, 1);
        let (mesh, _, _) = Mesh::detached(shared, 64);
        let info = |name: &str, deps: &[&str]| TargetInfo {
            name: name.into(),
            depends_on: deps.iter().map(|d| (*d).to_owned()).collect(),
            rto_ms: 0,
            plan: Some(Plan {
                name: name.into(),
                steps: vec![Step {
                    action: Action::Exec {
                        argv: vec!["restart".into()],
                        env: Vec::new(),
                        timeout_ms: 1000,
                    },
                    approval: false,
                    idempotent: false,
                }],
                finally: Vec::new(),
                cooldown_ms: 0,
                max_attempts: 3,
                attempt_window_ms: 3_600_000,
                dry_run: false,
            }),
        };
        let settings = Settings {
            catalog: catalog.iter().map(|(t, d)| info(t, d)).collect(),
            defaults: RecoveryDefaults::default(),
            kubeconfig: None,
        };
        let mut index = 0;
        let mut commit = |cmd: RecoveryCmd| {
            index += 1;
            let mut s = mesh.shared_for_tests().write().unwrap();
            s.sm.apply_at(&Command::Recovery(cmd), EntryAt { term: 1, index })
                .unwrap();
        };
        commit(RecoveryCmd::Catalog(settings.catalog.clone()));
        for target in drills {
            commit(RecoveryCmd::Drill {
                target: (*target).into(),
                by: "alice".into(),
                at_ms: now_ms(),
            });
        }
        Executor::new(mesh.clone(), 1, settings)
    }

    /// With one recovery at a time, dependencies go first, then the
    /// config's order, whatever order the incidents opened in (a complete
    /// failure: postgres, then redis, then the app).
    #[tokio::test]
    async fn one_at_a_time_dependencies_go_first_then_the_configs_order() {
        let catalog: &[(&str, &[&str])] = &[
            ("app", &["postgres", "redis"]),
            ("postgres", &[]),
            ("redis", &[]),
        ];
        let e = incidents(catalog, &["app", "redis", "postgres"]);
        let moves = e.decide(1, &BTreeMap::new());
        // Incident 3 is postgres's.
        assert!(matches!(moves.as_slice(), [(3, Move::Begin)]), "{moves:?}");
    }

    #[tokio::test]
    async fn an_attempt_whose_begin_is_on_its_way_counts_against_max_concurrent() {
        let e = two_incidents();
        let none = BTreeMap::new();
        let moves = e.decide(1, &none);
        assert!(matches!(moves.as_slice(), [(1, Move::Begin)]), "{moves:?}");
        // Incident 1's task proposes its Begin; before that entry is
        // applied, another one wakes the executor: incident 2 must wait.
        let begin = tokio::spawn(std::future::pending::<()>());
        let tasks = BTreeMap::from([(1, begin.id())]);
        let moves = e.decide(1, &tasks);
        assert!(moves.is_empty(), "a second attempt began: {moves:?}");
        begin.abort();
        // Applied, the attempt counts on its own.
        e.mesh
            .shared_for_tests()
            .write()
            .unwrap()
            .sm
            .apply_at(
                &Command::Recovery(RecoveryCmd::Begin {
                    incident: 1,
                    at_ms: now_ms(),
                }),
                EntryAt { term: 1, index: 10 },
            )
            .unwrap();
        let moves = e.decide(1, &none);
        assert!(matches!(moves.as_slice(), [(1, Move::Run(0))]), "{moves:?}");
    }

    #[tokio::test]
    async fn an_escalated_incident_sending_its_webhook_holds_no_budget() {
        let e = two_incidents();
        e.mesh
            .shared_for_tests()
            .write()
            .unwrap()
            .sm
            .apply_at(
                &Command::Recovery(RecoveryCmd::Escalate {
                    incident: 1,
                    at_ms: now_ms(),
                    reason: "a person takes over".into(),
                }),
                EntryAt { term: 1, index: 10 },
            )
            .unwrap();
        // Its task still sends the escalation's webhook (up to 10 s).
        let webhook = tokio::spawn(std::future::pending::<()>());
        let tasks = BTreeMap::from([(1, webhook.id())]);
        let moves = e.decide(1, &tasks);
        assert!(matches!(moves.as_slice(), [(2, Move::Begin)]), "{moves:?}");
        webhook.abort();
    }
}
