//! Per-target probe series, kept in a few atomics per target and written
//! out at scrape time, in the same Prometheus text the `metrics` exporter
//! writes for the node's other series.
//!
//! Why not the exporter's registry: every series there is a key with its
//! labels, a handle and a hash entry, about 300 bytes each, and a target
//! has 21 (a histogram of 9 buckets, 4 result counters, 4 verdicts, `up`,
//! the agreed state's 5): at 10,000 targets that was about 70 MB of a
//! node's memory. Here a target costs its name and about 200 bytes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};

use crate::config::TargetKind;
use crate::probe::Report;
use crate::verdict::{Outcome, Verdict};

use crate::slo::escape_label;

use super::{BACKUP_AGE, DURATION_BUCKETS, LOCAL_VERDICT, PROBE_DURATION, PROBE_UP, PROBES_TOTAL};

/// The verdicts `faxi_local_verdict` exports, in order.
const VERDICTS: [Verdict; 4] = [Verdict::Unknown, Verdict::Up, Verdict::Down, Verdict::Stale];

/// Probe results `faxi_probes_total` counts, in order (`stale` for backups only).
const RESULTS: [&str; 4] = ["success", "failure", "timeout", "stale"];

const N_BUCKETS: usize = DURATION_BUCKETS.len();

/// One target's numbers.
#[derive(Debug)]
pub(super) struct Cells {
    target: String,
    kind: TargetKind,
    /// Probes that took at most `DURATION_BUCKETS[i]` (and more than the
    /// bucket before); those over the last bound count only in `count`.
    buckets: [AtomicU64; N_BUCKETS],
    /// Seconds, as f64 bits.
    sum: AtomicU64,
    count: AtomicU64,
    up: AtomicU8,
    results: [AtomicU64; 4],
    /// Index into `VERDICTS`.
    verdict: AtomicU8,
    /// Seconds, as f64 bits (backups only).
    backup_age: AtomicU64,
}

impl Cells {
    fn new(target: &str, kind: TargetKind) -> Self {
        Self {
            target: target.to_owned(),
            kind,
            buckets: Default::default(),
            sum: AtomicU64::new(0f64.to_bits()),
            count: AtomicU64::new(0),
            up: AtomicU8::new(0),
            results: Default::default(),
            verdict: AtomicU8::new(0),
            backup_age: AtomicU64::new(0f64.to_bits()),
        }
    }

    pub(super) fn record(&self, r: &Report) {
        let secs = r.latency.as_secs_f64();
        if let Some(i) = DURATION_BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        let _ = self.sum.fetch_update(Relaxed, Relaxed, |bits| {
            Some((f64::from_bits(bits) + secs).to_bits())
        });
        self.count.fetch_add(1, Relaxed);
        let result = match r.outcome {
            Outcome::Success => Some(0),
            Outcome::Stale => (self.kind == TargetKind::Backup).then_some(3),
            Outcome::Failure if r.timed_out => Some(2),
            Outcome::Failure => Some(1),
        };
        if let Some(i) = result {
            self.results[i].fetch_add(1, Relaxed);
        }
        self.up
            .store(u8::from(r.outcome != Outcome::Failure), Relaxed);
        if self.kind == TargetKind::Backup {
            match (r.outcome, r.backup_age) {
                (_, Some(age)) => self.backup_age.store(age.as_secs_f64().to_bits(), Relaxed),
                (Outcome::Stale, None) => self.backup_age.store(f64::INFINITY.to_bits(), Relaxed),
                _ => {}
            }
        }
    }

    pub(super) fn set_verdict(&self, v: Verdict) {
        let i = VERDICTS.iter().position(|each| *each == v).unwrap_or(0);
        self.verdict.store(i as u8, Relaxed);
    }
}

/// Every target's cells, by name, once [`enable`]d (by `metrics::install`);
/// unit tests of other parts leave it off, so their probes export nothing.
static REGISTRY: OnceLock<Mutex<BTreeMap<String, Arc<Cells>>>> = OnceLock::new();

pub(super) fn enable() {
    let _ = REGISTRY.set(Mutex::new(BTreeMap::new()));
}

fn registry() -> Option<std::sync::MutexGuard<'static, BTreeMap<String, Arc<Cells>>>> {
    // Plain numbers: a poisoned lock still holds whole cells.
    REGISTRY
        .get()
        .map(|m| m.lock().unwrap_or_else(|p| p.into_inner()))
}

/// The cells of `target`: the registered ones when the target was
/// registered before with the same kind (its counters go on, as the
/// exporter's would), else new ones, registered when exporting is on.
pub(super) fn cells(target: &str, kind: TargetKind) -> Arc<Cells> {
    let Some(mut reg) = registry() else {
        return Arc::new(Cells::new(target, kind));
    };
    match reg.get(target) {
        Some(c) if c.kind == kind => c.clone(),
        _ => {
            let c = Arc::new(Cells::new(target, kind));
            reg.insert(target.to_owned(), c.clone());
            c
        }
    }
}

/// Appends every target's probe series to a Prometheus text page.
pub(super) fn render_into(page: &mut String) {
    let cells: Vec<Arc<Cells>> = match registry() {
        Some(reg) => reg.values().cloned().collect(),
        None => return,
    };
    render(page, &cells);
}

fn render(page: &mut String, cells: &[Arc<Cells>]) {
    if cells.is_empty() {
        return;
    }
    if !page.is_empty() && !page.ends_with("\n\n") {
        page.push('\n');
    }
    let labels: Vec<String> = cells
        .iter()
        .map(|c| {
            format!(
                "target=\"{}\",kind=\"{}\"",
                escape_label(&c.target),
                c.kind.as_str()
            )
        })
        .collect();

    let _ = writeln!(
        page,
        "# HELP {PROBE_DURATION} Duration of each probe.\n# TYPE {PROBE_DURATION} histogram"
    );
    for (c, l) in cells.iter().zip(&labels) {
        let mut cumulative = 0;
        for (b, n) in DURATION_BUCKETS.iter().zip(&c.buckets) {
            cumulative += n.load(Relaxed);
            let _ = writeln!(
                page,
                "{PROBE_DURATION}_bucket{{{l},le=\"{b}\"}} {cumulative}"
            );
        }
        let count = c.count.load(Relaxed);
        let sum = f64::from_bits(c.sum.load(Relaxed));
        let _ = writeln!(
            page,
            "{PROBE_DURATION}_bucket{{{l},le=\"+Inf\"}} {count}\n\
             {PROBE_DURATION}_sum{{{l}}} {sum}\n\
             {PROBE_DURATION}_count{{{l}}} {count}"
        );
    }
    page.push('\n');

    let _ = writeln!(
        page,
        "# HELP {PROBE_UP} 1 when the target's last probe succeeded, else 0.\n# TYPE {PROBE_UP} gauge"
    );
    for (c, l) in cells.iter().zip(&labels) {
        let _ = writeln!(page, "{PROBE_UP}{{{l}}} {}", c.up.load(Relaxed));
    }
    page.push('\n');

    let _ = writeln!(
        page,
        "# HELP {PROBES_TOTAL} Probe results by result.\n# TYPE {PROBES_TOTAL} counter"
    );
    for (c, l) in cells.iter().zip(&labels) {
        let results = if c.kind == TargetKind::Backup { 4 } else { 3 };
        for (name, n) in RESULTS.iter().zip(&c.results).take(results) {
            let _ = writeln!(
                page,
                "{PROBES_TOTAL}{{{l},result=\"{name}\"}} {}",
                n.load(Relaxed)
            );
        }
    }
    page.push('\n');

    let _ = writeln!(
        page,
        "# HELP {LOCAL_VERDICT} This node's verdict on the target, one-hot over verdict.\n# TYPE {LOCAL_VERDICT} gauge"
    );
    for (c, l) in cells.iter().zip(&labels) {
        let now = usize::from(c.verdict.load(Relaxed));
        for (i, v) in VERDICTS.iter().enumerate() {
            let _ = writeln!(
                page,
                "{LOCAL_VERDICT}{{{l},verdict=\"{}\"}} {}",
                v.as_str(),
                u8::from(i == now)
            );
        }
    }
    page.push('\n');

    if cells.iter().any(|c| c.kind == TargetKind::Backup) {
        let _ = writeln!(
            page,
            "# HELP {BACKUP_AGE} Age of the newest backup object.\n# TYPE {BACKUP_AGE} gauge"
        );
        for c in cells.iter().filter(|c| c.kind == TargetKind::Backup) {
            let age = f64::from_bits(c.backup_age.load(Relaxed));
            let _ = writeln!(
                page,
                "{BACKUP_AGE}{{target=\"{}\"}} {}",
                escape_label(&c.target),
                prom_f64(age)
            );
        }
        page.push('\n');
    }
}

/// A sample value as the text format spells it.
fn prom_f64(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn report(outcome: Outcome, ms: u64, timed_out: bool) -> Report {
        Report {
            outcome,
            latency: Duration::from_millis(ms),
            detail: String::new(),
            error: None,
            timed_out,
            backup_age: None,
        }
    }

    #[test]
    fn the_page_holds_each_family_once_with_cumulative_buckets_and_escaped_labels() {
        let tcp = Arc::new(Cells::new("a\"b", TargetKind::Tcp));
        tcp.record(&report(Outcome::Success, 3, false)); // le 0.005
        tcp.record(&report(Outcome::Success, 300, false)); // le 0.5
        tcp.record(&report(Outcome::Failure, 20_000, true)); // over every bound
        tcp.set_verdict(Verdict::Down);
        let backup = Arc::new(Cells::new("pg-backups", TargetKind::Backup));
        backup.record(&report(Outcome::Stale, 1, false));
        let mut page = String::from("# TYPE x gauge\nx 1\n");
        render(&mut page, &[tcp, backup]);
        let l = "target=\"a\\\"b\",kind=\"tcp\"";
        for want in [
            format!("faxi_probe_duration_seconds_bucket{{{l},le=\"0.001\"}} 0\n"),
            format!("faxi_probe_duration_seconds_bucket{{{l},le=\"0.005\"}} 1\n"),
            format!("faxi_probe_duration_seconds_bucket{{{l},le=\"0.5\"}} 2\n"),
            format!("faxi_probe_duration_seconds_bucket{{{l},le=\"10\"}} 2\n"),
            format!("faxi_probe_duration_seconds_bucket{{{l},le=\"+Inf\"}} 3\n"),
            format!("faxi_probe_duration_seconds_sum{{{l}}} 20.303\n"),
            format!("faxi_probe_duration_seconds_count{{{l}}} 3\n"),
            format!("faxi_probe_up{{{l}}} 0\n"),
            format!("faxi_probes_total{{{l},result=\"success\"}} 2\n"),
            format!("faxi_probes_total{{{l},result=\"timeout\"}} 1\n"),
            format!("faxi_local_verdict{{{l},verdict=\"DOWN\"}} 1\n"),
            format!("faxi_local_verdict{{{l},verdict=\"UP\"}} 0\n"),
            "faxi_probes_total{target=\"pg-backups\",kind=\"backup\",result=\"stale\"} 1\n".into(),
            "faxi_backup_age_seconds{target=\"pg-backups\"} +Inf\n".into(),
        ] {
            assert!(page.contains(&want), "{want} not in\n{page}");
        }
        // No `stale` series for a kind that is never stale; each family's
        // TYPE once.
        assert!(!page.contains(&format!("{l},result=\"stale\"")));
        for family in [
            "faxi_probe_duration_seconds histogram",
            "faxi_probe_up gauge",
            "faxi_probes_total counter",
            "faxi_local_verdict gauge",
            "faxi_backup_age_seconds gauge",
        ] {
            assert_eq!(
                page.matches(&format!("# TYPE {family}\n")).count(),
                1,
                "{family}"
            );
        }
        assert!(page.starts_with("# TYPE x gauge\nx 1\n\n# HELP"), "{page}");
    }

    #[test]
    fn a_target_registered_again_keeps_its_counters() {
        enable();
        let a = cells("again", TargetKind::Tcp);
        a.record(&report(Outcome::Success, 1, false));
        let b = cells("again", TargetKind::Tcp);
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(b.count.load(Relaxed), 1);
        // Another kind under the same name is another target.
        let c = cells("again", TargetKind::Http);
        assert!(!Arc::ptr_eq(&a, &c));
    }
}
