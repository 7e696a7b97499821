//! The SLO clock: how long each target spent in good and in bad agreed
//! states, as this node applied them, exported as counters from which
//! Prometheus computes availability over any window (deploy/prometheus).
//!
//! What counts (the SLI, README "Prometheus and Grafana"):
//! - good: agreed UP or SUSPECT (a quorum of zones still reaches it);
//! - bad: agreed DOWN or STALE;
//! - UNKNOWN is not counted at all (neither good nor valid);
//! - nothing is counted while this node knows no leader: its applied state
//!   may be behind (a node cut off from the quorum, an election), so it
//!   says nothing rather than repeat an old state.
//!
//! Time is attributed exactly at the moment each change is applied here
//! ([`SloClock::set`] is called from the driver's apply step), and every
//! scrape adds the time since up to the moment of the scrape. Every node
//! applies the same log, so every node's counters grow alike; Prometheus
//! divides good by valid summed over the nodes (the node count cancels), or
//! takes one node's series (`and on(instance) faxi_raft_is_leader == 1`).
//!
//! Two series per target, whatever its state: the counters are rendered
//! here with exact seconds (the `metrics` crate's counters are integers).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};

use tokio::time::Instant;

use crate::mesh::state::State;

/// Seconds a target spent agreed UP or SUSPECT (counter).
pub const GOOD: &str = "faxi_slo_good_seconds_total";
/// Seconds a target spent agreed UP, SUSPECT, DOWN or STALE (counter).
pub const VALID: &str = "faxi_slo_valid_seconds_total";
/// 1 while this node counts SLO time (it knows a leader), else 0.
pub const COUNTING: &str = "faxi_slo_counting";

/// Whether time in `state` is valid, and if so whether it is good.
pub fn counts(state: State) -> Option<bool> {
    match state {
        State::Up | State::Suspect => Some(true),
        State::Down | State::Stale => Some(false),
        State::Unknown => None,
    }
}

#[derive(Debug, Clone, Copy)]
struct Tracked {
    state: State,
    /// Counted up to here.
    since: Instant,
    good: f64,
    valid: f64,
}

impl Tracked {
    /// Adds the time from `since` to `now` to the current state's counters
    /// (when `counting`), and moves `since` to `now`.
    fn accrue(&mut self, now: Instant, counting: bool) {
        if now <= self.since {
            return;
        }
        if counting {
            let dt = now.duration_since(self.since).as_secs_f64();
            match counts(self.state) {
                Some(true) => {
                    self.good += dt;
                    self.valid += dt;
                }
                Some(false) => self.valid += dt,
                None => {}
            }
        }
        self.since = now;
    }
}

/// Per target: the agreed state applied here, and the seconds counted so
/// far. Pure: every method takes the time it happens at.
#[derive(Debug, Default)]
pub struct SloClock {
    targets: BTreeMap<String, Tracked>,
    counting: bool,
}

/// One target's counters: (target, good seconds, valid seconds).
pub type Totals = (String, f64, f64);

impl SloClock {
    /// `target` is in `state` from `now` on (a change applied, or its state
    /// when the node starts or installs a snapshot).
    pub fn set(&mut self, target: &str, state: State, now: Instant) {
        let counting = self.counting;
        match self.targets.get_mut(target) {
            Some(t) => {
                t.accrue(now, counting);
                t.state = state;
            }
            None => {
                self.targets.insert(
                    target.to_owned(),
                    Tracked {
                        state,
                        since: now,
                        good: 0.0,
                        valid: 0.0,
                    },
                );
            }
        }
    }

    /// From `now` on, time counts (a leader is known) or not.
    pub fn set_counting(&mut self, counting: bool, now: Instant) {
        if counting == self.counting {
            return;
        }
        self.accrue_all(now);
        self.counting = counting;
    }

    /// Whether time counts now.
    pub fn counting(&self) -> bool {
        self.counting
    }

    /// Counts every target up to `now` and returns the totals, by target
    /// name.
    pub fn totals(&mut self, now: Instant) -> Vec<Totals> {
        self.accrue_all(now);
        self.targets
            .iter()
            .map(|(name, t)| (name.clone(), t.good, t.valid))
            .collect()
    }

    fn accrue_all(&mut self, now: Instant) {
        let counting = self.counting;
        for t in self.targets.values_mut() {
            t.accrue(now, counting);
        }
    }
}

/// The node's clock, once [`enable`]d (by `metrics::install`); unit tests
/// of other parts leave it off, so their drivers count nothing.
static CLOCK: OnceLock<Mutex<SloClock>> = OnceLock::new();

/// Turns the process's clock on.
pub fn enable() {
    let _ = CLOCK.set(Mutex::new(SloClock::default()));
}

fn with_clock<R>(f: impl FnOnce(&mut SloClock) -> R) -> Option<R> {
    let m = CLOCK.get()?;
    // Plain numbers: a poisoned lock still holds a whole clock.
    let mut c = m.lock().unwrap_or_else(|p| p.into_inner());
    Some(f(&mut c))
}

/// The agreed state of `target` applied here is now `state`.
pub fn set_state(target: &str, state: State) {
    // The time is read under the lock, so the clock never goes back.
    with_clock(|c| c.set(target, state, Instant::now()));
}

/// Whether this node knows a leader now.
pub fn set_leader_known(known: bool) {
    with_clock(|c| c.set_counting(known, Instant::now()));
}

/// Appends the SLO counters, up to now, to a Prometheus text page.
pub fn render_into(page: &mut String) {
    let Some((counting, totals)) = with_clock(|c| (c.counting(), c.totals(Instant::now()))) else {
        return;
    };
    render(page, counting, &totals);
}

fn render(page: &mut String, counting: bool, totals: &[Totals]) {
    if !page.is_empty() && !page.ends_with("\n\n") {
        page.push('\n');
    }
    let _ = writeln!(
        page,
        "# HELP {COUNTING} 1 while this node counts SLO time (it knows a leader), else 0.\n\
         # TYPE {COUNTING} gauge\n{COUNTING} {}\n",
        u8::from(counting)
    );
    for (name, help, good) in [
        (
            GOOD,
            "Seconds the target was agreed UP or SUSPECT, as applied on this node while it knew a leader.",
            true,
        ),
        (
            VALID,
            "Seconds the target was agreed UP, SUSPECT, DOWN or STALE (UNKNOWN is not counted), as applied on this node while it knew a leader.",
            false,
        ),
    ] {
        let _ = writeln!(page, "# HELP {name} {help}\n# TYPE {name} counter");
        for (target, g, v) in totals {
            let value = if good { *g } else { *v };
            let _ = writeln!(
                page,
                "{name}{{target=\"{}\"}} {value}",
                escape_label(target)
            );
        }
        page.push('\n');
    }
}

/// A label value as the text format wants it.
fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn of(totals: &[Totals], target: &str) -> (f64, f64) {
        totals
            .iter()
            .find(|t| t.0 == target)
            .map(|t| (t.1, t.2))
            .unwrap()
    }

    #[test]
    fn up_and_suspect_are_good_down_and_stale_bad_unknown_not_counted() {
        let t0 = Instant::now();
        let mut c = SloClock::default();
        c.set_counting(true, t0);
        c.set("db", State::Unknown, t0);
        c.set("db", State::Up, t0 + secs(5.0)); // 5 s UNKNOWN: nothing
        c.set("db", State::Suspect, t0 + secs(65.0)); // 60 s UP
        c.set("db", State::Down, t0 + secs(95.0)); // 30 s SUSPECT
        c.set("db", State::Stale, t0 + secs(105.5)); // 10.5 s DOWN
        c.set("db", State::Unknown, t0 + secs(110.0)); // 4.5 s STALE
        let totals = c.totals(t0 + secs(200.0)); // 90 s UNKNOWN
        let (good, valid) = of(&totals, "db");
        assert!((good - 90.0).abs() < 1e-9, "good {good}");
        assert!((valid - 105.0).abs() < 1e-9, "valid {valid}");
    }

    #[test]
    fn a_scrape_counts_up_to_its_own_moment_and_changes_nothing_else() {
        let t0 = Instant::now();
        let mut c = SloClock::default();
        c.set_counting(true, t0);
        c.set("a", State::Up, t0);
        c.set("b", State::Down, t0);
        assert_eq!(of(&c.totals(t0 + secs(1.5)), "a"), (1.5, 1.5));
        assert_eq!(of(&c.totals(t0 + secs(1.5)), "b"), (0.0, 1.5));
        // A second scrape at the same moment adds nothing; a later one adds
        // the time between.
        assert_eq!(of(&c.totals(t0 + secs(1.5)), "a"), (1.5, 1.5));
        assert_eq!(of(&c.totals(t0 + secs(4.0)), "b"), (0.0, 4.0));
        // A change after a scrape counts the old state only since the scrape.
        c.set("b", State::Up, t0 + secs(5.0));
        assert_eq!(of(&c.totals(t0 + secs(7.0)), "b"), (2.0, 7.0));
    }

    #[test]
    fn nothing_counts_while_no_leader_is_known() {
        let t0 = Instant::now();
        let mut c = SloClock::default();
        c.set("a", State::Down, t0);
        // Not counting until a leader is known.
        c.set_counting(true, t0 + secs(10.0));
        c.set_counting(false, t0 + secs(20.0));
        // A change while not counting switches the state, counts nothing.
        c.set("a", State::Up, t0 + secs(25.0));
        assert_eq!(of(&c.totals(t0 + secs(30.0)), "a"), (0.0, 10.0));
        c.set_counting(true, t0 + secs(40.0));
        assert_eq!(of(&c.totals(t0 + secs(43.0)), "a"), (3.0, 13.0));
        // Setting the same gate again changes nothing.
        c.set_counting(true, t0 + secs(44.0));
        assert_eq!(of(&c.totals(t0 + secs(45.0)), "a"), (5.0, 15.0));
    }

    #[test]
    fn a_time_before_the_last_one_counts_nothing_and_never_goes_back() {
        let t0 = Instant::now();
        let mut c = SloClock::default();
        c.set_counting(true, t0);
        c.set("a", State::Up, t0);
        assert_eq!(of(&c.totals(t0 + secs(10.0)), "a"), (10.0, 10.0));
        c.set("a", State::Down, t0 + secs(5.0));
        assert_eq!(of(&c.totals(t0 + secs(10.0)), "a"), (10.0, 10.0));
        assert_eq!(of(&c.totals(t0 + secs(11.0)), "a"), (10.0, 11.0));
    }

    #[tokio::test(start_paused = true)]
    async fn the_clock_follows_tokio_time() {
        // As the node uses it: each change and each scrape reads tokio's
        // clock (paused here, so only `advance` moves it).
        let mut c = SloClock::default();
        c.set_counting(true, Instant::now());
        c.set("db", State::Up, Instant::now());
        tokio::time::advance(Duration::from_secs(30)).await;
        c.set("db", State::Down, Instant::now());
        tokio::time::advance(Duration::from_secs(12)).await;
        let mut page = String::new();
        render(&mut page, c.counting(), &c.totals(Instant::now()));
        assert!(
            page.contains("faxi_slo_good_seconds_total{target=\"db\"} 30\n"),
            "{page}"
        );
        assert!(
            page.contains("faxi_slo_valid_seconds_total{target=\"db\"} 42\n"),
            "{page}"
        );
        assert!(page.contains("\nfaxi_slo_counting 1\n"), "{page}");
    }

    #[test]
    fn the_page_is_prometheus_text_with_escaped_labels() {
        let mut page = String::from("# TYPE x gauge\nx 1\n");
        render(
            &mut page,
            false,
            &[("a\"b\\c".into(), 1.25, 2.5), ("redis".into(), 0.0, 0.0)],
        );
        assert_eq!(
            page,
            "# TYPE x gauge\nx 1\n\n\
             # HELP faxi_slo_counting 1 while this node counts SLO time (it knows a leader), else 0.\n\
             # TYPE faxi_slo_counting gauge\nfaxi_slo_counting 0\n\n\
             # HELP faxi_slo_good_seconds_total Seconds the target was agreed UP or SUSPECT, as applied on this node while it knew a leader.\n\
             # TYPE faxi_slo_good_seconds_total counter\n\
             faxi_slo_good_seconds_total{target=\"a\\\"b\\\\c\"} 1.25\n\
             faxi_slo_good_seconds_total{target=\"redis\"} 0\n\n\
             # HELP faxi_slo_valid_seconds_total Seconds the target was agreed UP, SUSPECT, DOWN or STALE (UNKNOWN is not counted), as applied on this node while it knew a leader.\n\
             # TYPE faxi_slo_valid_seconds_total counter\n\
             faxi_slo_valid_seconds_total{target=\"a\\\"b\\\\c\"} 2.5\n\
             faxi_slo_valid_seconds_total{target=\"redis\"} 0\n\n"
        );
    }
}
