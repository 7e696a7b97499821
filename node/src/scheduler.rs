//! The probe scheduler: one task per target, each on its own interval with a
//! random phase, so thousands of targets spread over time and a target that
//! hangs delays nobody but itself.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use rand::Rng;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use crate::config::{TargetKind, TargetSpec};
use crate::metrics::TargetMetrics;
use crate::probe::{self, Probe, ProbeContext};
use crate::verdict::{Hysteresis, Verdict};

/// This node's current view of one target.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetView {
    /// The target's name.
    pub name: String,
    /// Its kind.
    pub kind: TargetKind,
    /// The local verdict after hysteresis.
    pub verdict: Verdict,
    /// When `verdict` last changed (start-up for UNKNOWN).
    pub since: SystemTime,
    /// Latency of the last probe.
    pub latency: Option<Duration>,
    /// The last probe's error, `None` when it succeeded.
    pub error: Option<String>,
    /// The last probe's detail when it succeeded.
    pub detail: String,
    /// For backups: the newest object's age at the last probe.
    pub backup_age: Option<Duration>,
    /// Probes run so far.
    pub probes: u64,
}

/// The local view of every target, shared with readers (metrics, API).
///
/// Each slot has its own std mutex, held only to copy a few fields in or out
/// and never across an `.await`.
#[derive(Debug)]
pub struct LocalView {
    slots: Vec<Mutex<TargetView>>,
    /// Notified whenever a verdict changes (a permit is kept when nobody waits).
    changed: tokio::sync::Notify,
}

impl LocalView {
    fn lock(&self, i: usize) -> MutexGuard<'_, TargetView> {
        // A panic while holding the lock cannot leave a half-written view
        // (plain field stores), so a poisoned lock is still good to read.
        self.slots[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of every target's view, in config order.
    pub fn snapshot(&self) -> Vec<TargetView> {
        (0..self.slots.len())
            .map(|i| self.lock(i).clone())
            .collect()
    }

    /// Resolves when some verdict changed since the last call returned.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// A copy of one target's view.
    pub fn get(&self, name: &str) -> Option<TargetView> {
        (0..self.slots.len())
            .map(|i| self.lock(i))
            .find(|v| v.name == name)
            .map(|v| v.clone())
    }
}

/// Running probe loops; dropping it (or [`Scheduler::shutdown`]) stops them.
#[derive(Debug)]
pub struct Scheduler {
    view: Arc<LocalView>,
    tasks: JoinSet<()>,
}

impl Scheduler {
    /// Builds every target's probe and starts its loop. Fails (starting
    /// nothing) if a probe cannot be built.
    pub fn start(targets: &[TargetSpec], ctx: &ProbeContext) -> Result<Self, String> {
        let mut probes = Vec::with_capacity(targets.len());
        for t in targets {
            probes.push(probe::build(t, ctx).map_err(|e| format!("target {}: {e}", t.name))?);
        }
        let now = SystemTime::now();
        let view = Arc::new(LocalView {
            slots: targets
                .iter()
                .map(|t| {
                    Mutex::new(TargetView {
                        name: t.name.clone(),
                        kind: t.kind(),
                        verdict: Verdict::Unknown,
                        since: now,
                        latency: None,
                        error: None,
                        detail: String::new(),
                        backup_age: None,
                        probes: 0,
                    })
                })
                .collect(),
            changed: tokio::sync::Notify::new(),
        });
        metrics::gauge!(crate::metrics::TARGETS).set(targets.len() as f64);
        let mut tasks = JoinSet::new();
        for (i, (spec, probe)) in targets.iter().zip(probes).enumerate() {
            let metrics = TargetMetrics::new(&spec.name, spec.kind());
            let rpo = match &spec.check {
                crate::config::Check::Backup(b) => Some(b.rpo),
                _ => None,
            };
            crate::metrics::set_objectives(&spec.name, spec.rto, rpo);
            tasks.spawn(target_loop(i, spec.clone(), probe, metrics, view.clone()));
        }
        Ok(Self { view, tasks })
    }

    /// The shared view.
    pub fn view(&self) -> Arc<LocalView> {
        self.view.clone()
    }

    /// Stops every loop; in-flight probes are dropped (probes are cancel-safe).
    pub async fn shutdown(mut self) {
        self.tasks.shutdown().await;
    }
}

async fn target_loop(
    slot: usize,
    spec: TargetSpec,
    probe: Arc<dyn Probe>,
    metrics: TargetMetrics,
    view: Arc<LocalView>,
) {
    // A random phase spreads targets over the interval; after it the period
    // is exact, so detection takes `fall × interval`, not more.
    let phase = rand::rng().random_range(Duration::ZERO..spec.interval);
    let mut ticker = tokio::time::interval_at(Instant::now() + phase, spec.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut hysteresis = Hysteresis::new(spec.rise, spec.fall);
    let kind = spec.kind().as_str();
    loop {
        ticker.tick().await;
        let report = probe::run(probe.as_ref(), spec.timeout).await;
        metrics.record(&report);
        let changed = hysteresis.observe(report.outcome);
        let previous = {
            let mut v = view.lock(slot);
            let previous = v.verdict;
            v.latency = Some(report.latency);
            v.error.clone_from(&report.error);
            v.detail.clone_from(&report.detail);
            v.backup_age = report.backup_age;
            v.probes += 1;
            if let Some(next) = changed {
                v.verdict = next;
                v.since = SystemTime::now();
            }
            previous
        };
        if let Some(next) = changed {
            view.changed.notify_one();
            metrics.set_verdict(next);
            let latency_ms = (report.latency.as_secs_f64() * 1e6).round() / 1e3;
            match next {
                Verdict::Up | Verdict::Unknown => tracing::info!(
                    target_name = %spec.name, kind, from = %previous, to = %next,
                    latency_ms, detail = %report.detail, "verdict changed"
                ),
                Verdict::Down | Verdict::Stale => tracing::warn!(
                    target_name = %spec.name, kind, from = %previous, to = %next,
                    latency_ms, error = report.error.as_deref().unwrap_or(""),
                    "verdict changed"
                ),
            }
        }
    }
}
