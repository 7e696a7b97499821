//! Prometheus metrics (names are a contract: DESIGN.md §4) and the
//! `metrics_listen` HTTP server for `/metrics` and `/healthz`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics::{Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

use crate::config::TargetKind;
use crate::probe::Report;
use crate::verdict::{Outcome, Verdict};

/// Duration of each probe, by target and kind (histogram).
pub const PROBE_DURATION: &str = "faxi_probe_duration_seconds";
/// 1 when the target's last probe succeeded, else 0.
pub const PROBE_UP: &str = "faxi_probe_up";
/// Probe results by target, kind and result (`success`, `failure`, `timeout`, `stale`).
pub const PROBES_TOTAL: &str = "faxi_probes_total";
/// This node's verdict per target, one-hot over `verdict`.
pub const LOCAL_VERDICT: &str = "faxi_local_verdict";
/// Age of the newest backup object per backup target (+Inf when there is none).
pub const BACKUP_AGE: &str = "faxi_backup_age_seconds";
/// Number of configured targets.
pub const TARGETS: &str = "faxi_targets";
/// The agreed (replicated) state per target, one-hot over `state`.
pub const TARGET_STATE: &str = "faxi_target_state";
/// This node's current Raft term.
pub const RAFT_TERM: &str = "faxi_raft_term";
/// 1 on the leader, else 0.
pub const RAFT_IS_LEADER: &str = "faxi_raft_is_leader";
/// The commit index this node knows.
pub const RAFT_COMMIT: &str = "faxi_raft_commit_index";
/// The index this node has applied.
pub const RAFT_APPLIED: &str = "faxi_raft_applied_index";
/// Known leader id (0 for none).
pub const RAFT_LEADER: &str = "faxi_raft_leader_id";
/// Raft messages dropped because a peer's queue was full.
pub const RAFT_DROPPED: &str = "faxi_raft_messages_dropped_total";
/// Peer batches refused before raft saw them, by reason (another
/// cluster, not a member, a replaced data dir, malformed).
pub const RAFT_REFUSED: &str = "faxi_raft_messages_refused_total";
/// gRPC connections closed on arrival: the node held as many as it takes.
pub const CONNECTIONS_REFUSED: &str = "faxi_grpc_connections_refused_total";
/// gRPC connections closed because no authenticated request came on them
/// within `api::FIRST_REQUEST` (nodes that take tokens).
pub const CONNECTIONS_UNPROVEN: &str = "faxi_grpc_connections_unauthenticated_total";
/// API requests refused because the caller's role does not allow them.
pub const API_DENIED: &str = "faxi_api_requests_denied_total";
/// 1 when this node's last message to the peer got through.
pub const RAFT_PEER_REACHABLE: &str = "faxi_raft_peer_reachable";
/// Bytes of log entries applied (as stored), all entries counted.
pub const RAFT_APPLIED_BYTES: &str = "faxi_raft_applied_bytes_total";
/// Bytes of log entries applied since the last snapshot: what compaction
/// will drop (`cluster.snapshot_bytes` bounds it).
pub const RAFT_LOG_BYTES: &str = "faxi_raft_log_bytes";
/// Snapshots this node took (each compacts its log).
pub const RAFT_SNAPSHOTS: &str = "faxi_raft_snapshots_total";
/// Size of the latest snapshot's data (the whole replicated state).
pub const RAFT_SNAPSHOT_BYTES: &str = "faxi_raft_snapshot_bytes";
/// A backup target's recovery point objective (its configured `rpo`).
pub const BACKUP_RPO: &str = "faxi_backup_rpo_seconds";
/// A target's recovery time objective (its configured `rto`), for targets
/// that have one.
pub const TARGET_RTO: &str = "faxi_target_rto_seconds";
/// 1, labelled with this node's id and zone: joins a node's series to its
/// zone (`* on(instance) group_left(zone) faxi_node_info`).
pub const NODE_INFO: &str = "faxi_node_info";
// The SLO counters (`faxi_slo_*`) are rendered by `crate::slo`.

/// Probe duration buckets: from a loopback answer to a timeout. Few on
/// purpose: each bucket is one more series per target, and at thousands of
/// targets a scrape's size (and the memory to render it) is mostly buckets.
const DURATION_BUCKETS: &[f64] = &[0.001, 0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// How often histograms are folded and idle series swept.
const UPKEEP: Duration = Duration::from_secs(5);

/// Installs the process-wide Prometheus recorder.
pub fn install() -> Result<PrometheusHandle, String> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(PROBE_DURATION.into()), DURATION_BUCKETS)
        .map_err(|e| format!("metrics: {e}"))?
        .set_buckets_for_metric(
            Matcher::Full(crate::recovery::metrics::TIME_TO_DETECT.into()),
            crate::recovery::metrics::TIME_BUCKETS,
        )
        .map_err(|e| format!("metrics: {e}"))?
        .set_buckets_for_metric(
            Matcher::Full(crate::recovery::metrics::TIME_TO_RECOVER.into()),
            crate::recovery::metrics::TIME_BUCKETS,
        )
        .map_err(|e| format!("metrics: {e}"))?
        .install_recorder()
        .map_err(|e| format!("metrics: {e}"))?;
    describe();
    crate::slo::enable();
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut t = tokio::time::interval(UPKEEP);
        loop {
            t.tick().await;
            // Folding thousands of histograms is CPU work: off the probe workers.
            let h = upkeep.clone();
            let _ = tokio::task::spawn_blocking(move || h.run_upkeep()).await;
        }
    });
    Ok(handle)
}

fn describe() {
    crate::recovery::metrics::describe();
    metrics::describe_histogram!(
        PROBE_DURATION,
        metrics::Unit::Seconds,
        "Duration of each probe."
    );
    metrics::describe_gauge!(
        PROBE_UP,
        "1 when the target's last probe succeeded, else 0."
    );
    metrics::describe_counter!(PROBES_TOTAL, "Probe results by result.");
    metrics::describe_gauge!(
        LOCAL_VERDICT,
        "This node's verdict on the target, one-hot over verdict."
    );
    metrics::describe_gauge!(
        BACKUP_AGE,
        metrics::Unit::Seconds,
        "Age of the newest backup object."
    );
    metrics::describe_gauge!(TARGETS, "Number of configured targets.");
    metrics::describe_gauge!(
        TARGET_STATE,
        "The agreed state of the target (zone quorum), one-hot over state."
    );
    metrics::describe_gauge!(RAFT_TERM, "Current Raft term.");
    metrics::describe_gauge!(RAFT_IS_LEADER, "1 on the Raft leader, else 0.");
    metrics::describe_gauge!(RAFT_COMMIT, "Raft commit index known here.");
    metrics::describe_gauge!(RAFT_APPLIED, "Raft index applied here.");
    metrics::describe_gauge!(RAFT_LEADER, "Id of the known leader, 0 for none.");
    metrics::describe_counter!(
        RAFT_APPLIED_BYTES,
        "Bytes of Raft log entries applied here, as stored."
    );
    metrics::describe_gauge!(
        RAFT_LOG_BYTES,
        "Bytes of Raft log entries applied since the last snapshot."
    );
    metrics::describe_counter!(
        RAFT_SNAPSHOTS,
        "Snapshots taken here (each compacts the log)."
    );
    metrics::describe_counter!(
        RAFT_DROPPED,
        "Raft messages dropped because a peer's queue was full."
    );
    metrics::describe_counter!(
        RAFT_REFUSED,
        "Peer raft batches refused before raft saw them, by reason."
    );
    metrics::describe_counter!(
        CONNECTIONS_UNPROVEN,
        "gRPC connections closed because no authenticated request came on them in time."
    );
    metrics::describe_counter!(
        CONNECTIONS_REFUSED,
        "gRPC connections closed on arrival because the node held as many as it takes."
    );
    metrics::describe_counter!(
        API_DENIED,
        "API requests refused because the caller's certificate lacks the role, by role needed."
    );
    metrics::describe_gauge!(
        RAFT_PEER_REACHABLE,
        "1 when this node's last message to the peer got through."
    );
    metrics::describe_gauge!(
        BACKUP_RPO,
        metrics::Unit::Seconds,
        "The backup target's recovery point objective (rpo)."
    );
    metrics::describe_gauge!(
        TARGET_RTO,
        metrics::Unit::Seconds,
        "The target's recovery time objective (rto)."
    );
    metrics::describe_gauge!(NODE_INFO, "1, labelled with this node's id and zone.");
}

/// A target's objectives, from its config: `rto` (any kind) and `rpo`
/// (backups).
pub fn set_objectives(target: &str, rto: Option<Duration>, rpo: Option<Duration>) {
    if let Some(rto) = rto {
        metrics::gauge!(TARGET_RTO, "target" => target.to_owned()).set(rto.as_secs_f64());
    }
    if let Some(rpo) = rpo {
        metrics::gauge!(BACKUP_RPO, "target" => target.to_owned()).set(rpo.as_secs_f64());
    }
}

/// This node's id and zone (set once at start).
pub fn set_node_info(id: u64, zone: &str) {
    metrics::gauge!(NODE_INFO, "node" => id.to_string(), "zone" => zone.to_owned()).set(1.0);
}

/// Every agreed state, in the order `faxi_target_state` exports them.
const AGREED_STATES: [crate::mesh::state::State; 5] = {
    use crate::mesh::state::State;
    [
        State::Unknown,
        State::Up,
        State::Down,
        State::Suspect,
        State::Stale,
    ]
};

/// Sets a target's agreed state (one-hot), and starts counting its SLO
/// time in that state.
pub fn set_target_state(target: &str, to: crate::mesh::state::State) {
    crate::slo::set_state(target, to);
    for s in AGREED_STATES {
        metrics::gauge!(TARGET_STATE, "target" => target.to_owned(), "state" => s.as_str())
            .set(if s == to { 1.0 } else { 0.0 });
    }
}

/// Entries of `bytes` were applied; `since_snapshot` are in the log now.
pub fn applied_bytes(bytes: u64, since_snapshot: u64) {
    metrics::counter!(RAFT_APPLIED_BYTES).increment(bytes);
    set_log_bytes(since_snapshot);
}

/// The log holds `bytes` of entries since the last snapshot.
pub fn set_log_bytes(bytes: u64) {
    metrics::gauge!(RAFT_LOG_BYTES).set(bytes as f64);
}

/// The latest snapshot holds `bytes` of state.
pub fn set_snapshot_bytes(bytes: usize) {
    metrics::gauge!(RAFT_SNAPSHOT_BYTES).set(bytes as f64);
}

/// A snapshot was taken and the log compacted.
pub fn snapshot_taken() {
    metrics::counter!(RAFT_SNAPSHOTS).increment(1);
    set_log_bytes(0);
}

/// Exports raft status.
pub fn set_raft(info: &crate::mesh::driver::RaftInfo) {
    metrics::gauge!(RAFT_TERM).set(info.term as f64);
    metrics::gauge!(RAFT_IS_LEADER).set(if info.leader == info.id && info.id != 0 {
        1.0
    } else {
        0.0
    });
    metrics::gauge!(RAFT_COMMIT).set(info.commit as f64);
    metrics::gauge!(RAFT_APPLIED).set(info.applied as f64);
    metrics::gauge!(RAFT_LEADER).set(info.leader as f64);
    crate::slo::set_leader_known(info.leader != raft::INVALID_ID);
    for (peer, ok) in &info.reachable {
        metrics::gauge!(RAFT_PEER_REACHABLE, "peer" => peer.to_string()).set(if *ok {
            1.0
        } else {
            0.0
        });
    }
}

/// One target's metric handles, made once so a probe records without lookups.
#[derive(Debug)]
pub struct TargetMetrics {
    duration: Histogram,
    up: Gauge,
    success: Counter,
    failure: Counter,
    timeout: Counter,
    /// Only for backups: other kinds are never stale.
    stale: Option<Counter>,
    /// UNKNOWN, UP, DOWN, STALE.
    verdict: [(Verdict, Gauge); 4],
    backup_age: Option<Gauge>,
}

impl TargetMetrics {
    /// Registers the series of one target.
    pub fn new(target: &str, kind: TargetKind) -> Self {
        let t = target.to_owned();
        let k = kind.as_str();
        let count = |result: &'static str| metrics::counter!(PROBES_TOTAL, "target" => t.clone(), "kind" => k, "result" => result);
        let verdict = [Verdict::Unknown, Verdict::Up, Verdict::Down, Verdict::Stale].map(|v| {
            (v, metrics::gauge!(LOCAL_VERDICT, "target" => t.clone(), "kind" => k, "verdict" => v.as_str()))
        });
        let m = Self {
            duration: metrics::histogram!(PROBE_DURATION, "target" => t.clone(), "kind" => k),
            up: metrics::gauge!(PROBE_UP, "target" => t.clone(), "kind" => k),
            success: count("success"),
            failure: count("failure"),
            timeout: count("timeout"),
            stale: (kind == TargetKind::Backup).then(|| count("stale")),
            verdict,
            backup_age: (kind == TargetKind::Backup)
                .then(|| metrics::gauge!(BACKUP_AGE, "target" => t.clone())),
        };
        m.set_verdict(Verdict::Unknown);
        m
    }

    /// Records one probe run.
    pub fn record(&self, r: &Report) {
        self.duration.record(r.latency.as_secs_f64());
        match r.outcome {
            Outcome::Success => self.success.increment(1),
            Outcome::Stale => {
                if let Some(c) = &self.stale {
                    c.increment(1);
                }
            }
            Outcome::Failure if r.timed_out => self.timeout.increment(1),
            Outcome::Failure => self.failure.increment(1),
        }
        self.up.set(if r.outcome == Outcome::Failure {
            0.0
        } else {
            1.0
        });
        if let Some(g) = &self.backup_age {
            match (r.outcome, r.backup_age) {
                (_, Some(age)) => g.set(age.as_secs_f64()),
                (Outcome::Stale, None) => g.set(f64::INFINITY),
                _ => {}
            }
        }
    }

    /// Shows the current verdict.
    pub fn set_verdict(&self, v: Verdict) {
        for (each, g) in &self.verdict {
            g.set(if *each == v { 1.0 } else { 0.0 });
        }
    }
}

/// What `/healthz` answers, shared by the node's parts: healthy until
/// [`Health::fail`] (the raft thread stopped, the node is shutting down)
/// or while [`Health::stall`] holds (the raft loop stopped answering).
#[derive(Debug, Clone, Default)]
pub struct Health(Arc<Mutex<HealthState>>);

#[derive(Debug, Default)]
struct HealthState {
    /// Why the node is going down; never cleared.
    failed: Option<String>,
    /// Why the node cannot work right now; cleared when that passes.
    stalled: Option<String>,
}

impl Health {
    fn state(&self) -> std::sync::MutexGuard<'_, HealthState> {
        // Plain data: a poisoned lock still holds a whole state.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks the node unhealthy for good. The first reason stays.
    pub fn fail(&self, reason: impl Into<String>) {
        let mut s = self.state();
        if s.failed.is_none() {
            s.failed = Some(reason.into());
        }
    }

    /// Marks the node unhealthy until `stall(None)`.
    pub fn stall(&self, reason: Option<String>) {
        self.state().stalled = reason;
    }

    /// `None` when healthy, else why not.
    pub fn problem(&self) -> Option<String> {
        let s = self.state();
        s.failed.clone().or_else(|| s.stalled.clone())
    }
}

/// Serves `/metrics` and `/healthz` until the listener's task is dropped.
/// `/healthz` is 200 `ok` while `health` has no problem, else 503 with the
/// reason.
pub async fn serve(listener: TcpListener, handle: PrometheusHandle, health: Health) {
    serve_http(listener, "metrics", move |req| {
        route(req, handle.clone(), health.clone())
    })
    .await;
}

/// A small HTTP/1.1 server: accepts forever, one task per connection,
/// `route` answers each request. Shared by `/metrics` and the dev demo app.
pub(crate) async fn serve_http<F, Fut>(listener: TcpListener, what: &'static str, route: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send + 'static,
{
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "{what} listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let route = route.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(route);
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "{what} connection ended with an error");
            }
        });
    }
}

async fn route(
    req: Request<Incoming>,
    handle: PrometheusHandle,
    health: Health,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, ctype, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => {
            // Rendering thousands of targets takes milliseconds of CPU: keep
            // it off the async workers that run the probes.
            let render = move || {
                let mut page = handle.render();
                crate::slo::render_into(&mut page);
                page
            };
            match tokio::task::spawn_blocking(render).await {
                Ok(page) => (
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    page,
                ),
                Err(_) => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain; charset=utf-8",
                    "rendering metrics failed\n".into(),
                ),
            }
        }
        (&Method::GET, "/healthz") => match health.problem() {
            None => (StatusCode::OK, "text/plain; charset=utf-8", "ok\n".into()),
            Some(why) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain; charset=utf-8",
                format!("unhealthy: {why}\n"),
            ),
        },
        (_, "/metrics" | "/healthz") => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "use GET\n".into(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: try /metrics or /healthz\n".into(),
        ),
    };
    let resp = Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, ctype)
        .body(Full::new(Bytes::from(body)));
    // The builder only fails on invalid header values, and these are constants.
    Ok(resp.unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}

/// Binds the metrics listener, with an error naming the address.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on metrics_listen {addr}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One GET over a fresh connection: the status line and the body.
    async fn get(addr: SocketAddr, path: &str) -> (String, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        (head.lines().next().unwrap().to_owned(), body.to_owned())
    }

    #[tokio::test]
    async fn healthz_is_503_with_the_reason_while_the_node_is_unhealthy() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = PrometheusBuilder::new().build_recorder().handle();
        let health = Health::default();
        let server = tokio::spawn(serve(listener, handle, health.clone()));

        assert_eq!(
            get(addr, "/healthz").await,
            ("HTTP/1.1 200 OK".into(), "ok\n".into())
        );
        health.stall(Some("the raft loop has not answered for 12s".into()));
        assert_eq!(
            get(addr, "/healthz").await,
            (
                "HTTP/1.1 503 Service Unavailable".into(),
                "unhealthy: the raft loop has not answered for 12s\n".into()
            )
        );
        // A stall that passes is healthy again.
        health.stall(None);
        assert_eq!(get(addr, "/healthz").await.0, "HTTP/1.1 200 OK");
        // A failure stays, whatever comes after; the first reason is kept.
        health.fail("the raft log in /data failed: No space left on device");
        health.fail("shutting down");
        health.stall(None);
        assert_eq!(
            get(addr, "/healthz").await,
            (
                "HTTP/1.1 503 Service Unavailable".into(),
                "unhealthy: the raft log in /data failed: No space left on device\n".into()
            )
        );
        // /metrics still answers: the page is how to see what went wrong.
        assert_eq!(get(addr, "/metrics").await.0, "HTTP/1.1 200 OK");
        server.abort();
    }
}
