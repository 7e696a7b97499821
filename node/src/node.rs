//! One node: the Raft driver, the probe scheduler, the proposer that feeds
//! local verdicts to the log, the gRPC server and the metrics server; runs
//! until told to stop.

use std::future::Future;
use std::sync::Arc;
use std::sync::mpsc::sync_channel;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{Config, TlsConfig};
use crate::mesh::driver::{self, DriverConfig};
use crate::mesh::proposer::{self, Cadence};
use crate::mesh::state::Member;
use crate::mesh::storage::SledStorage;
use crate::mesh::transport::Transport;
use crate::metrics::Health;
use crate::probe::ProbeContext;
use crate::scheduler::Scheduler;
use crate::tls::Tls;

/// The configured peers as the driver takes them.
fn peers(config: &Config) -> Vec<(crate::mesh::state::NodeId, Member)> {
    config
        .cluster
        .peers
        .iter()
        .map(|p| {
            (
                p.id,
                Member {
                    zone: p.zone.clone(),
                    addr: p.addr.clone(),
                    instance: 0,
                },
            )
        })
        .collect()
}

/// Opens (creating if needed) the node's data dir, off the async workers.
async fn open_storage(config: &Config) -> Result<SledStorage, String> {
    let data_dir = config.node.data_dir.clone();
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&data_dir)
            .map_err(|e| format!("cannot create node.data_dir {}: {e}", data_dir.display()))?;
        SledStorage::open(&data_dir).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| format!("opening the raft log: {e}"))?
}

/// `faxi-watchdog init`: creates a new cluster in this node's empty data
/// dir, with this node as its first voter and the other configured peers as
/// learners. A data dir that already holds a cluster is left alone.
pub async fn init(config: &Config) -> Result<driver::Init, String> {
    let storage = open_storage(config).await?;
    let me = config.node.id;
    let peers = peers(config);
    tokio::task::spawn_blocking(move || {
        driver::init(&storage, me, &peers, driver::new_cluster_id()).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| format!("initialising the raft log: {e}"))?
}

/// How long shutting down may take, all steps together; then the process
/// exits with whatever has not stopped (a write stuck in the kernel).
pub const SHUTDOWN_BUDGET: Duration = Duration::from_secs(10);

/// How often the raft loop is asked whether it still answers.
const PING_EVERY: Duration = Duration::from_secs(1);

/// Unanswered this long, the raft loop makes `/healthz` unhealthy.
const STALL_UNHEALTHY: Duration = Duration::from_secs(10);

/// Unanswered this long, the node stops: a log write is stuck for good.
const STALL_FATAL: Duration = Duration::from_secs(60);

/// Runs a node until `shutdown` resolves. Errors are fatal problems (a port
/// in use, unreadable TLS files, an unreadable data dir, a probe that cannot be built, a raft log
/// write that failed), worded for the operator.
///
/// Fail-stop: when the raft thread ends on its own (a log write failed, or
/// raft-rs stopped on a log it could not read) or stops answering for
/// [`STALL_FATAL`], the node stops with that error. `/healthz` turns 503
/// the moment it is known, and while the raft loop does not answer.
/// Shutting down never waits more than [`SHUTDOWN_BUDGET`].
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), String> {
    let tls = load_tls(&config)?;
    let handle = crate::metrics::install()?;
    crate::metrics::set_node_info(config.node.id, &config.node.zone);
    let metrics_listener = crate::metrics::bind(config.node.metrics_listen).await?;
    let grpc_listener = tokio::net::TcpListener::bind(config.node.listen)
        .await
        .map_err(|e| format!("cannot listen on node.listen {}: {e}", config.node.listen))?;

    let storage = open_storage(&config).await?;
    // The raft thread's end must never wait on closing the log: this
    // handle is dropped last, under the shutdown deadline.
    let kept = storage.clone();
    let data_dir = config.node.data_dir.display().to_string();
    let c = &config.cluster;
    if c.join {
        tracing::info!(
            "cluster.join is no longer needed: a node with an empty data dir always waits to be sent its state"
        );
    }
    let dcfg = DriverConfig {
        id: config.node.id,
        peers: peers(&config),
        tick: c.tick,
        election_ticks: c.election_ticks as usize,
        heartbeat_ticks: c.heartbeat_ticks as usize,
        snapshot_entries: c.snapshot_entries,
        snapshot_bytes: c.snapshot_bytes,
        nonce: rand::random(),
    };
    let (tx, rx) = sync_channel(driver::INBOX);
    let transport = Transport::new(
        config.node.id,
        tokio::runtime::Handle::current(),
        tx.clone(),
        tls.clone(),
    );
    // Opening replays the log: off the async workers.
    let (mesh, raft_thread) =
        tokio::task::spawn_blocking(move || driver::start(dcfg, storage, transport, (tx, rx)))
            .await
            .map_err(|e| format!("starting raft: {e}"))?
            .map_err(|e| e.to_string())?;

    let ctx = ProbeContext::new(config.node.id);
    let scheduler = Scheduler::start(&config.targets, &ctx)?;
    let proposer = tokio::spawn(proposer::run(
        config.node.id,
        mesh.clone(),
        scheduler.view(),
        Cadence::from_refresh(c.refresh),
    ));

    let kinds = config
        .targets
        .iter()
        .map(|t| (t.name.clone(), t.kind().as_str()))
        .collect();
    let api = crate::api::Api::new(
        mesh.clone(),
        config.node.id,
        config.node.zone.clone(),
        kinds,
        tls.clone(),
    )
    .with_approval_ttl(Duration::from_millis(
        config.recovery.defaults.approval_ttl_ms,
    ));
    let first_request = api.first_request();
    let (watchdog_svc, peer_svc) = api.services();
    // HTTP/2 pings find a connection whose other end vanished; streams per
    // connection are bounded (connections are, in `api::incoming`).
    let mut builder = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .max_concurrent_streams(Some(256));
    if let Some(tls) = &tls {
        builder = builder
            .tls_config(tls.server())
            .map_err(|e| format!("TLS: {e}"))?;
    }
    let grpc = tokio::spawn(
        builder
            .add_service(watchdog_svc)
            .add_service(peer_svc)
            .serve_with_incoming(crate::api::incoming(grpc_listener, first_request)),
    );
    tracing::info!(
        node = config.node.id,
        zone = %config.node.zone,
        peers = config.cluster.peers.len(),
        targets = config.targets.len(),
        listen = %config.node.listen,
        metrics = %config.node.metrics_listen,
        pid = std::process::id(),
        "node started"
    );
    let health = Health::default();
    let page = crate::statuspage::StatusPage::new(
        mesh.clone(),
        crate::statuspage::Node::from_config(&config),
        scheduler.view(),
        config.redactor(),
    );
    let server = tokio::spawn(crate::metrics::serve_with_status(
        metrics_listener,
        handle,
        health.clone(),
        Some(page),
    ));
    // Recovery: acts only while this node leads, from committed incidents.
    let executor = tokio::spawn(
        crate::recovery::executor::Executor::new(
            mesh.clone(),
            config.node.id,
            crate::recovery::executor::Settings::from_config(&config),
        )
        .run(),
    );
    let mut raft_done = tokio::task::spawn_blocking(move || raft_thread.join());
    let mut stalled = tokio::spawn(watch_raft_loop(mesh.clone(), health.clone()));

    // Until told to stop, or until raft cannot go on (the thread ended:
    // it only does on an error; or it stopped answering).
    let failed = tokio::select! {
        () = shutdown => None,
        r = &mut raft_done => Some(match r {
            Ok(Ok(Err(e))) => e,
            Ok(Ok(Ok(()))) => "the raft thread stopped".to_owned(),
            Ok(Err(panic)) => format!("the raft thread stopped: {}", panic_message(&*panic)),
            Err(e) => format!("the raft thread stopped: {e}"),
        }),
        r = &mut stalled => Some(r.unwrap_or_else(|e| format!("the raft loop watch stopped: {e}"))),
    };
    let outcome = failed.map(|e| {
        let e = format!("the raft log in {data_dir} failed: {e}; the node stopped");
        // Unhealthy at once: the endpoint answers until the process exits.
        health.fail(e.clone());
        tracing::error!(error = %e, "raft stopped: shutting down");
        Err(e)
    });
    if outcome.is_none() {
        health.fail("shutting down");
        tracing::info!("shutting down");
    }
    let deadline = Instant::now() + SHUTDOWN_BUDGET;
    executor.abort();
    proposer.abort();
    grpc.abort();
    stalled.abort();
    if tokio::time::timeout_at(deadline, scheduler.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("probes did not stop in time; exiting without them");
    }
    mesh.stop();
    let result = match outcome {
        Some(r) => r,
        None => match tokio::time::timeout_at(deadline, raft_done).await {
            Ok(Ok(Ok(r))) => r.map_err(|e| format!("the raft log in {data_dir} failed: {e}")),
            Ok(Ok(Err(panic))) => Err(format!(
                "the raft thread stopped: {}",
                panic_message(&*panic)
            )),
            Ok(Err(e)) => Err(format!("the raft thread stopped: {e}")),
            Err(_) => Err(format!(
                "the raft thread did not stop within {}: a write to the raft log in {data_dir} may be stuck",
                humantime::format_duration(SHUTDOWN_BUDGET)
            )),
        },
    };
    if result.is_ok() {
        // The last handle on the log: dropping it flushes, unless that hangs.
        let flushed = tokio::task::spawn_blocking(move || drop(kept));
        if tokio::time::timeout_at(deadline, flushed).await.is_err() {
            tracing::warn!(
                data_dir,
                "the raft log did not close in time; exiting without it"
            );
        }
    } else {
        // A failed log is not flushed again (that may never return); what
        // it holds unflushed was never acknowledged, so losing it is safe.
        std::mem::forget(kept);
    }
    server.abort();
    match &result {
        Ok(()) => tracing::info!("stopped"),
        Err(e) => tracing::error!(error = %e, "stopped"),
    }
    result
}

/// Asks the raft loop every [`PING_EVERY`] for an answer (a leadership
/// transfer to node 0, which it refuses at once and which changes
/// nothing). Unanswered for [`STALL_UNHEALTHY`], `/healthz` says so;
/// for [`STALL_FATAL`], this returns why, and the node stops.
async fn watch_raft_loop(mesh: crate::mesh::driver::Mesh, health: Health) -> String {
    use crate::mesh::driver::MeshError;
    let mut last_answer = Instant::now();
    let mut every = tokio::time::interval(PING_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let answered = match tokio::time::timeout(PING_EVERY, mesh.transfer_leader(0)).await {
            // Any answer from the loop itself, refusal included, is an answer.
            Ok(Ok(())) => true,
            Ok(Err(e)) => !matches!(e, MeshError::Busy | MeshError::Stopped),
            Err(_) => false,
        };
        if answered {
            if last_answer.elapsed() >= STALL_UNHEALTHY {
                tracing::info!("the raft loop answers again");
            }
            last_answer = Instant::now();
            health.stall(None);
            continue;
        }
        let quiet = last_answer.elapsed();
        let why = format!(
            "the raft loop has not answered for {}s: a raft log write may be stuck",
            quiet.as_secs()
        );
        if quiet >= STALL_FATAL {
            return why;
        }
        if quiet >= STALL_UNHEALTHY {
            if health.problem().is_none() {
                tracing::error!(reason = %why, "unhealthy");
            }
            health.stall(Some(why));
        }
    }
}

/// The text of a panic's payload (a `&str` or a `String`, as `panic!` makes).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

/// Reads this node's TLS files and checks that its certificate names it;
/// `None` with `insecure = true`, said loudly.
fn load_tls(config: &Config) -> Result<Option<Arc<Tls>>, String> {
    match &config.tls {
        TlsConfig::Files {
            ca,
            cert,
            key,
            tokens_file,
        } => {
            let tls = Tls::load(ca, cert, key)?;
            tls.check_node(config.node.id, cert)?;
            match tokens_file {
                Some(f) => {
                    let tokens = crate::tls::load_tokens(f)?;
                    tracing::info!(tokens = tokens.len(), "automation tokens accepted");
                    Ok(Some(tls.with_tokens(tokens)))
                }
                None => Ok(Some(tls)),
            }
        }
        TlsConfig::Insecure => {
            tracing::warn!(
                listen = %config.node.listen,
                "tls.insecure = true: gRPC runs WITHOUT TLS or authentication; anyone who reaches \
                 this port can read the state, send raft messages and change the membership. \
                 For a laptop or a lab only"
            );
            Ok(None)
        }
    }
}
