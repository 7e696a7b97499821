//! Recovery's metrics. Every node exports the same incident figures (they
//! come from the replicated state, as each node applies it); the step
//! counters count the side effects this node ran as leader.

use std::collections::BTreeMap;

use crate::mesh::state::StateMachine;

/// Incidents finished, by target and outcome (`resolved`, `drill`).
pub const INCIDENTS: &str = "faxi_incidents_total";
/// Incidents open now.
pub const OPEN: &str = "faxi_incidents_open";
/// Recovery steps run by this node, by plan, action and result.
pub const STEPS: &str = "faxi_recovery_steps_total";
/// From the first node's DOWN verdict to the one that made the quorum.
pub const TIME_TO_DETECT: &str = "faxi_time_to_detect_seconds";
/// From the agreed DOWN to the agreed UP.
pub const TIME_TO_RECOVER: &str = "faxi_time_to_recover_seconds";
/// Incidents waiting for an operator (approval, or an outcome unknown).
pub const APPROVALS_PENDING: &str = "faxi_recovery_approvals_pending";
/// Approvals asked by this node as leader.
pub const APPROVALS_ASKED: &str = "faxi_recovery_approvals_asked_total";
/// 1 while maintenance pauses recovery.
pub const MAINTENANCE: &str = "faxi_recovery_maintenance";
/// Incidents escalated by this node as leader.
pub const ESCALATIONS: &str = "faxi_recovery_escalations_total";
/// Incidents open past their target's RTO.
pub const PAST_RTO: &str = "faxi_incidents_past_rto";

/// Buckets for detection and recovery times, seconds: from a fast failover
/// to past the runbook's RTO of an hour.
pub const TIME_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
];

/// Describes them.
pub fn describe() {
    metrics::describe_counter!(INCIDENTS, "Incidents finished, by target and outcome.");
    metrics::describe_gauge!(OPEN, "Incidents open now (agreed state).");
    metrics::describe_counter!(
        STEPS,
        "Recovery steps this node ran as leader, by plan, action and result."
    );
    metrics::describe_histogram!(
        TIME_TO_DETECT,
        "From the first node's DOWN verdict to the one that made the zone quorum, seconds."
    );
    metrics::describe_histogram!(
        TIME_TO_RECOVER,
        "From the agreed DOWN to the agreed UP, seconds."
    );
    metrics::describe_gauge!(APPROVALS_PENDING, "Incidents waiting for an operator.");
    metrics::describe_counter!(APPROVALS_ASKED, "Approvals this node asked for as leader.");
    metrics::describe_gauge!(MAINTENANCE, "1 while maintenance pauses recovery.");
    metrics::describe_counter!(ESCALATIONS, "Incidents this node escalated as leader.");
    metrics::describe_gauge!(PAST_RTO, "Open incidents older than their target's RTO.");
    // Present from the start at 0, so that `increase()` sees the first
    // escalation (a counter born at 1 shows no increase).
    metrics::counter!(ESCALATIONS).increment(0);
}

/// Turns changes of the replicated incidents into metrics: what it has not
/// seen yet is counted once (what was there when the node started is not).
#[derive(Debug, Default)]
pub struct Observer {
    started: bool,
    /// Incident id -> whether its detection and its finish were counted.
    seen: BTreeMap<u64, (bool, bool)>,
}

impl Observer {
    /// Looks at the state once.
    pub fn observe(&mut self, sm: &StateMachine) {
        let rec = sm.recovery();
        let now = crate::recovery::executor::now_ms();
        let first = !self.started;
        self.started = true;
        let mut alive = BTreeMap::new();
        for i in rec.open().values().chain(rec.history().iter()) {
            let (mut detected, mut finished) =
                self.seen.get(&i.id).copied().unwrap_or((first, first));
            if !detected && !i.drill {
                metrics::histogram!(TIME_TO_DETECT, "target" => i.target.clone())
                    .record(i.detect_ms as f64 / 1000.0);
                detected = true;
            }
            let done = i.resolved_ms.is_some() && i.attempt.is_none();
            if done && !finished {
                let outcome = if i.drill { "drill" } else { "resolved" };
                metrics::counter!(INCIDENTS, "target" => i.target.clone(), "outcome" => outcome)
                    .increment(1);
                if let Some(ms) = i.recover_ms() {
                    metrics::histogram!(TIME_TO_RECOVER, "target" => i.target.clone(), "kind" => outcome)
                        .record(ms as f64 / 1000.0);
                }
                finished = true;
            }
            alive.insert(i.id, (detected, finished));
        }
        self.seen = alive;
        let open: Vec<_> = rec
            .open()
            .values()
            .filter(|i| i.resolved_ms.is_none())
            .collect();
        metrics::gauge!(OPEN).set(open.len() as f64);
        let waiting = open
            .iter()
            .filter(|i| {
                matches!(
                    i.phase,
                    super::incidents::Phase::AwaitingApproval
                        | super::incidents::Phase::OutcomeUnknown
                )
            })
            .count();
        metrics::gauge!(APPROVALS_PENDING).set(waiting as f64);
        let past = open
            .iter()
            .filter(|i| {
                !i.drill
                    && rec.catalog().get(&i.target).is_some_and(|t| {
                        t.rto_ms > 0 && sm.log_now_ms().saturating_sub(i.opened_ms) > t.rto_ms
                    })
            })
            .count();
        metrics::gauge!(PAST_RTO).set(past as f64);
        let on = rec.maintenance().is_some_and(|m| m.until_ms > now);
        metrics::gauge!(MAINTENANCE).set(if on { 1.0 } else { 0.0 });
    }
}
