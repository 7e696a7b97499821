//! The proposer: turns this node's local verdicts into commands. It sends
//! its whole verdict set once (an `Observe` with `whole`), then only what
//! changes (a verdict, or the error of a DOWN verdict), and every `refresh`
//! a `Refresh` that carries no verdicts, only a digest of those it believes
//! the log holds for it: the log grows with events, never with probes, and
//! a refresh costs the same at 10 or 10,000 targets. When the state machine
//! refuses a refresh (its record differs from what the proposer believes:
//! an earlier proposal timed out but committed, the node was removed and
//! added back, a target left the config), the whole set goes again. A node
//! that goes silent sees its observations expire in log time.
//!
//! The latency and error a refresh confirms are those of the report that
//! last carried the target (`NodeView::measured_at_ms` says when): a latency
//! change alone is not an event.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use super::driver::{Mesh, MeshError};
use super::state::{Command, NodeId, Seen, State, clip_error, digest};
use crate::scheduler::{LocalView, TargetView};

/// How long to wait for a proposal to commit before trying again.
const PROPOSE_DEADLINE: Duration = Duration::from_secs(2);
/// Pause after a failed proposal (no leader, minority side).
const RETRY: Duration = Duration::from_millis(200);

/// Refresh cadence and validity of observations.
#[derive(Debug, Clone, Copy)]
pub struct Cadence {
    /// Every verdict is confirmed this often.
    pub refresh: Duration,
    /// An observation stays fresh this long without a refresh.
    pub valid_for: Duration,
}

impl Cadence {
    /// Observations stay fresh for three refreshes: one lost refresh is not
    /// an expiry.
    pub fn from_refresh(refresh: Duration) -> Self {
        Self {
            refresh,
            valid_for: refresh * 3,
        }
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A target's view as this node reports it: cut as the state machine keeps
/// it, so what the proposer remembers is what the log holds.
fn seen_of(v: TargetView) -> Seen {
    Seen {
        target: v.name,
        verdict: State::from(v.verdict),
        latency_us: v
            .latency
            .map_or(0, |l| u64::try_from(l.as_micros()).unwrap_or(u64::MAX)),
        error: v.error.as_deref().map(clip_error),
    }
}

/// Whether `now` must be reported, given what the log holds (`sent`): a
/// new verdict, or a DOWN verdict whose error changed. A latency that
/// moves, or an error that comes and goes under hysteresis, is not news.
pub fn is_news(sent: Option<&Seen>, now: &Seen) -> bool {
    match sent {
        None => true,
        Some(s) => s.verdict != now.verdict || (now.verdict == State::Down && s.error != now.error),
    }
}

/// The digest a refresh carries for what the log holds (`sent`).
pub fn digest_of(sent: &BTreeMap<String, Seen>) -> u64 {
    digest(sent.values().map(|s| {
        (
            s.target.as_str(),
            s.verdict,
            s.latency_us,
            s.error.as_deref(),
        )
    }))
}

/// What to propose next, given what the log holds (`sent`, `None` until
/// the whole set has been committed), the local views, and whether a
/// refresh is due. `None`: nothing to say.
pub fn next_command(
    node: NodeId,
    at_ms: u64,
    valid_for_ms: u64,
    sent: Option<&BTreeMap<String, Seen>>,
    views: Vec<Seen>,
    refresh_due: bool,
) -> Option<Command> {
    if views.is_empty() {
        // A node without targets never reports.
        return None;
    }
    let Some(sent) = sent else {
        return Some(Command::Observe {
            node,
            at_ms,
            valid_for_ms,
            seen: views,
            whole: true,
        });
    };
    let changed: Vec<Seen> = views
        .into_iter()
        .filter(|v| is_news(sent.get(&v.target), v))
        .collect();
    if !changed.is_empty() {
        return Some(Command::Observe {
            node,
            at_ms,
            valid_for_ms,
            seen: changed,
            whole: false,
        });
    }
    refresh_due.then(|| Command::Refresh {
        node,
        at_ms,
        valid_for_ms,
        digest: digest_of(sent),
    })
}

/// Runs until the task is aborted.
pub async fn run(node: NodeId, mesh: Mesh, view: Arc<LocalView>, cadence: Cadence) {
    // What the log holds for this node, as far as we know; `None` until
    // the whole set is committed (again).
    let mut sent: Option<BTreeMap<String, Seen>> = None;
    let mut next_refresh = Instant::now() + cadence.refresh;
    let mut failing = false;
    let valid_for_ms = u64::try_from(cadence.valid_for.as_millis()).unwrap_or(u64::MAX);
    loop {
        let refresh_due = Instant::now() >= next_refresh;
        let views: Vec<Seen> = view.snapshot().into_iter().map(seen_of).collect();
        let cmd = next_command(
            node,
            unix_ms(SystemTime::now()),
            valid_for_ms,
            sent.as_ref(),
            views,
            refresh_due,
        );
        let Some(cmd) = cmd else {
            if refresh_due {
                next_refresh = Instant::now() + cadence.refresh;
            }
            tokio::select! {
                () = view.changed() => {}
                () = tokio::time::sleep_until(next_refresh) => {}
            }
            continue;
        };
        let (whole, refresh, reported) = match &cmd {
            Command::Observe { seen, whole, .. } => (*whole, false, seen.clone()),
            _ => (false, true, Vec::new()),
        };
        let pause = match mesh.propose(cmd, PROPOSE_DEADLINE).await {
            Ok(index) => {
                if failing {
                    tracing::info!(index, "observations committed again");
                    failing = false;
                }
                let held = sent.get_or_insert_with(BTreeMap::new);
                if whole {
                    held.clear();
                }
                held.extend(reported.into_iter().map(|s| (s.target.clone(), s)));
                if whole || refresh {
                    next_refresh = Instant::now() + cadence.refresh;
                }
                // Look again at once: more may have changed meanwhile.
                None
            }
            Err(MeshError::Rejected(why)) => {
                // The log holds something else for this node than we
                // believe: the whole set goes next, at once after a refused
                // refresh; after a refused observation (this node is no
                // longer a member, its clock is past the year 9999), not
                // before a refresh period.
                tracing::debug!(reason = %why, refresh, "report refused: sending every verdict next");
                sent = None;
                (!refresh).then_some(cadence.refresh)
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "cannot commit observations; retrying");
                    failing = true;
                }
                // It may still commit: what the log holds is unknown until
                // the next refresh says.
                Some(RETRY)
            }
        };
        if let Some(pause) = pause {
            tokio::select! {
                () = view.changed() => {}
                () = tokio::time::sleep(pause) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::mesh::state::{Member, StateMachine};

    fn view(target: &str, verdict: State, latency_us: u64, error: Option<&str>) -> Seen {
        Seen {
            target: target.into(),
            verdict,
            latency_us,
            error: error.map(String::from),
        }
    }

    /// Applies what the proposer says and updates `sent` as `run` does on
    /// success.
    fn say(
        sm: &mut StateMachine,
        sent: &mut Option<BTreeMap<String, Seen>>,
        cmd: &Command,
    ) -> Result<(), String> {
        sm.apply(cmd).map_err(|e| e.to_string())?;
        if let Command::Observe { seen, whole, .. } = cmd {
            let held = sent.get_or_insert_with(BTreeMap::new);
            if *whole {
                held.clear();
            }
            held.extend(seen.iter().map(|s| (s.target.clone(), s.clone())));
        }
        Ok(())
    }

    #[test]
    fn the_whole_set_then_changes_then_refreshes_whose_digest_the_state_takes() {
        let mut sm = StateMachine::new([(
            1,
            Member {
                zone: "zone-a".into(),
                addr: "a:1".into(),
                instance: 0,
            },
        )]);
        let mut sent = None;
        let views = || {
            vec![
                view("pg", State::Up, 900, None),
                view("redis", State::Down, 2_000, Some("connection refused")),
            ]
        };
        // Nothing committed yet: the whole set, refresh due or not.
        let cmd = next_command(1, 1_000, 15_000, sent.as_ref(), views(), false).unwrap();
        assert!(matches!(&cmd, Command::Observe { whole: true, seen, .. } if seen.len() == 2));
        say(&mut sm, &mut sent, &cmd).unwrap();
        // Nothing changed: nothing to say until a refresh is due.
        assert_eq!(
            next_command(1, 2_000, 15_000, sent.as_ref(), views(), false),
            None
        );
        // A refresh names no target, and the state machine takes its digest.
        let cmd = next_command(1, 5_000, 15_000, sent.as_ref(), views(), true).unwrap();
        assert!(matches!(cmd, Command::Refresh { at_ms: 5_000, .. }));
        say(&mut sm, &mut sent, &cmd).unwrap();
        // A latency that moves, an UP target's passing error: not news.
        let moved = vec![
            view("pg", State::Up, 1_500, Some("one timeout under hysteresis")),
            view("redis", State::Down, 2_100, Some("connection refused")),
        ];
        assert_eq!(
            next_command(1, 6_000, 15_000, sent.as_ref(), moved.clone(), false),
            None
        );
        let cmd = next_command(1, 7_000, 15_000, sent.as_ref(), moved, true).unwrap();
        say(&mut sm, &mut sent, &cmd).unwrap();
        // A verdict change, or a DOWN target's new error: only those go.
        let changed = vec![
            view("pg", State::Down, 800_000, Some("timed out after 800ms")),
            view("redis", State::Down, 2_100, Some("timed out after 800ms")),
        ];
        let cmd = next_command(1, 8_000, 15_000, sent.as_ref(), changed.clone(), false).unwrap();
        let Command::Observe { seen, whole, .. } = &cmd else {
            panic!("{cmd:?}")
        };
        assert!(!whole);
        assert_eq!(seen.len(), 2);
        say(&mut sm, &mut sent, &cmd).unwrap();
        let cmd = next_command(1, 9_000, 15_000, sent.as_ref(), changed.clone(), true).unwrap();
        assert!(matches!(cmd, Command::Refresh { .. }));
        say(&mut sm, &mut sent, &cmd).unwrap();
        // The state machine's record moved behind the proposer's back (a
        // proposal it gave up on committed after all): the refresh is
        // refused, and the whole set goes next.
        sm.apply(&Command::Observe {
            node: 1,
            at_ms: 9_500,
            valid_for_ms: 15_000,
            seen: vec![view("pg", State::Up, 1, None)],
            whole: false,
        })
        .unwrap();
        let cmd = next_command(1, 10_000, 15_000, sent.as_ref(), changed.clone(), true).unwrap();
        let err = say(&mut sm, &mut sent, &cmd).unwrap_err();
        assert!(err.contains("digest"), "{err}");
        let cmd = next_command(1, 10_000, 15_000, None, changed.clone(), true).unwrap();
        assert!(matches!(cmd, Command::Observe { whole: true, .. }));
        sent = None;
        say(&mut sm, &mut sent, &cmd).unwrap();
        let cmd = next_command(1, 11_000, 15_000, sent.as_ref(), changed, true).unwrap();
        say(&mut sm, &mut sent, &cmd).unwrap();
    }

    #[test]
    fn a_node_without_targets_says_nothing() {
        assert_eq!(next_command(1, 1, 1, None, Vec::new(), true), None);
    }
}
