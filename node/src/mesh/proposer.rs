//! The proposer: turns this node's local verdicts into batched `Observe`
//! commands. It proposes when a verdict changes and refreshes every verdict
//! periodically, so the log grows with events and refreshes, never with
//! probes; a node that goes silent sees its observations expire in log time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use super::driver::Mesh;
use super::state::{Command, NodeId, Seen, State, clip_error};
use crate::scheduler::LocalView;

/// How long to wait for a proposal to commit before trying again.
const PROPOSE_DEADLINE: Duration = Duration::from_secs(2);
/// Pause after a failed proposal (no leader, minority side).
const RETRY: Duration = Duration::from_millis(200);

/// Refresh cadence and validity of observations.
#[derive(Debug, Clone, Copy)]
pub struct Cadence {
    /// Every verdict is re-proposed this often.
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

/// Runs until the task is aborted.
pub async fn run(node: NodeId, mesh: Mesh, view: Arc<LocalView>, cadence: Cadence) {
    // What the log holds for each target, as far as we know.
    let mut committed: HashMap<String, State> = HashMap::new();
    let mut next_refresh = Instant::now();
    let mut failing = false;
    loop {
        let full = Instant::now() >= next_refresh;
        let seen: Vec<Seen> = view
            .snapshot()
            .into_iter()
            .filter_map(|v| {
                let verdict = State::from(v.verdict);
                (full || committed.get(&v.name) != Some(&verdict)).then(|| Seen {
                    target: v.name,
                    verdict,
                    latency_us: v
                        .latency
                        .map_or(0, |l| u64::try_from(l.as_micros()).unwrap_or(u64::MAX)),
                    // Cut as the state machine keeps it: no bigger entry
                    // than needed.
                    error: v.error.as_deref().map(clip_error),
                })
            })
            .collect();
        let mut retry = false;
        if !seen.is_empty() {
            let verdicts: Vec<(String, State)> =
                seen.iter().map(|s| (s.target.clone(), s.verdict)).collect();
            let cmd = Command::Observe {
                node,
                at_ms: unix_ms(SystemTime::now()),
                valid_for_ms: u64::try_from(cadence.valid_for.as_millis()).unwrap_or(u64::MAX),
                seen,
            };
            match mesh.propose(cmd, PROPOSE_DEADLINE).await {
                Ok(index) => {
                    if failing {
                        tracing::info!(index, "observations committed again");
                        failing = false;
                    }
                    committed.extend(verdicts);
                    if full {
                        next_refresh = Instant::now() + cadence.refresh;
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "cannot commit observations; retrying");
                        failing = true;
                    }
                    retry = true;
                }
            }
        } else if full {
            next_refresh = Instant::now() + cadence.refresh;
        }
        let wake = if retry {
            Instant::now() + RETRY
        } else {
            next_refresh
        };
        tokio::select! {
            () = view.changed() => {}
            () = tokio::time::sleep_until(wake) => {}
        }
    }
}
