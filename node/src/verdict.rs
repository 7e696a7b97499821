//! Local verdicts: one node's opinion of one target, from `rise`/`fall`
//! hysteresis over its own probe results (DESIGN.md §3).

use std::fmt;

/// A node's verdict on a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    /// Not enough results yet to say.
    Unknown,
    /// `rise` consecutive successes.
    Up,
    /// `fall` consecutive failures.
    Down,
    /// A backup target whose newest backup is older than its RPO, `fall` times running.
    Stale,
}

impl Verdict {
    /// Upper-case, as status output and scripts expect.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Unknown => "UNKNOWN",
            Verdict::Up => "UP",
            Verdict::Down => "DOWN",
            Verdict::Stale => "STALE",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The class of one probe result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The target answered as healthy.
    Success,
    /// The target did not answer, or answered wrong, or not in time.
    Failure,
    /// The backup exists but is older than the RPO.
    Stale,
}

impl Outcome {
    /// The verdict a long enough run of this outcome leads to.
    fn verdict(self) -> Verdict {
        match self {
            Outcome::Success => Verdict::Up,
            Outcome::Failure => Verdict::Down,
            Outcome::Stale => Verdict::Stale,
        }
    }
}

/// Rise/fall hysteresis: the verdict moves to an outcome's verdict only after
/// a run of that outcome long enough (`rise` for success, `fall` for failure
/// and staleness); a single odd result never flips it.
#[derive(Debug, Clone)]
pub struct Hysteresis {
    rise: u32,
    fall: u32,
    verdict: Verdict,
    /// The outcome of the current run of identical results.
    run_of: Option<Outcome>,
    /// Its length, saturating.
    run: u32,
}

impl Hysteresis {
    /// Starts UNKNOWN. `rise` and `fall` below 1 are taken as 1.
    pub fn new(rise: u32, fall: u32) -> Self {
        Self {
            rise: rise.max(1),
            fall: fall.max(1),
            verdict: Verdict::Unknown,
            run_of: None,
            run: 0,
        }
    }

    /// The current verdict.
    pub fn verdict(&self) -> Verdict {
        self.verdict
    }

    /// Feeds one result; returns the new verdict when it changed.
    pub fn observe(&mut self, outcome: Outcome) -> Option<Verdict> {
        if self.run_of == Some(outcome) {
            self.run = self.run.saturating_add(1);
        } else {
            self.run_of = Some(outcome);
            self.run = 1;
        }
        let needed = match outcome {
            Outcome::Success => self.rise,
            Outcome::Failure | Outcome::Stale => self.fall,
        };
        let next = outcome.verdict();
        if self.run >= needed && self.verdict != next {
            self.verdict = next;
            Some(next)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Outcome::*;
    use super::*;

    #[test]
    fn unknown_until_a_full_run() {
        let mut h = Hysteresis::new(2, 3);
        assert_eq!(h.observe(Success), None);
        assert_eq!(h.verdict(), Verdict::Unknown);
        assert_eq!(h.observe(Success), Some(Verdict::Up));
        assert_eq!(h.observe(Success), None);
    }

    #[test]
    fn fall_needs_consecutive_failures() {
        let mut h = Hysteresis::new(2, 3);
        h.observe(Success);
        h.observe(Success);
        // Two failures, a success, two failures: never three in a row.
        for o in [Failure, Failure, Success, Failure, Failure] {
            assert_eq!(h.observe(o), None);
        }
        assert_eq!(h.verdict(), Verdict::Up);
        assert_eq!(h.observe(Failure), Some(Verdict::Down));
        // Back up only after `rise` successes.
        assert_eq!(h.observe(Success), None);
        assert_eq!(h.observe(Success), Some(Verdict::Up));
    }

    #[test]
    fn stale_is_its_own_run() {
        let mut h = Hysteresis::new(1, 2);
        assert_eq!(h.observe(Success), Some(Verdict::Up));
        assert_eq!(h.observe(Stale), None);
        assert_eq!(h.observe(Failure), None);
        assert_eq!(h.observe(Stale), None);
        assert_eq!(h.observe(Stale), Some(Verdict::Stale));
        assert_eq!(h.observe(Success), Some(Verdict::Up));
    }

    #[test]
    fn rise_and_fall_of_one_follow_every_result() {
        let mut h = Hysteresis::new(1, 1);
        assert_eq!(h.observe(Failure), Some(Verdict::Down));
        assert_eq!(h.observe(Success), Some(Verdict::Up));
        assert_eq!(h.observe(Failure), Some(Verdict::Down));
    }
}
