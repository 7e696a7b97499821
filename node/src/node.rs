//! One node: the Raft driver, the probe scheduler, the proposer that feeds
//! local verdicts to the log, the gRPC server and the metrics server; runs
//! until told to stop.

use std::future::Future;
use std::sync::mpsc::sync_channel;

use crate::config::Config;
use crate::mesh::driver::{self, DriverConfig};
use crate::mesh::proposer::{self, Cadence};
use crate::mesh::state::Member;
use crate::mesh::storage::SledStorage;
use crate::mesh::transport::Transport;
use crate::probe::ProbeContext;
use crate::scheduler::Scheduler;

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

/// Runs a node until `shutdown` resolves. Errors are fatal problems (a port
/// in use, an unreadable data dir, a probe that cannot be built, a raft log
/// write that failed), worded for the operator.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), String> {
    let handle = crate::metrics::install()?;
    let metrics_listener = crate::metrics::bind(config.node.metrics_listen).await?;
    let grpc_listener = tokio::net::TcpListener::bind(config.node.listen)
        .await
        .map_err(|e| format!("cannot listen on node.listen {}: {e}", config.node.listen))?;

    let storage = open_storage(&config).await?;
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
        nonce: rand::random(),
    };
    let (tx, rx) = sync_channel(driver::INBOX);
    let transport = Transport::new(
        config.node.id,
        tokio::runtime::Handle::current(),
        tx.clone(),
    );
    // Opening replays the log from sled: off the async workers.
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
    );
    let (watchdog_svc, peer_svc) = api.services();
    let grpc = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(watchdog_svc)
            .add_service(peer_svc)
            .serve_with_incoming(crate::api::incoming(grpc_listener)),
    );
    tracing::info!(
        node = config.node.id,
        zone = %config.node.zone,
        peers = config.cluster.peers.len(),
        targets = config.targets.len(),
        listen = %config.node.listen,
        metrics = %config.node.metrics_listen,
        "node started"
    );
    let server = tokio::spawn(crate::metrics::serve(metrics_listener, handle));

    // A raft thread that stops on its own has hit a log it cannot write.
    let mut raft_done = tokio::task::spawn_blocking(move || {
        raft_thread
            .join()
            .unwrap_or_else(|_| Err("the raft thread panicked".into()))
    });
    let outcome = tokio::select! {
        () = shutdown => None,
        r = &mut raft_done => Some(r.unwrap_or(Ok(()))),
    };
    tracing::info!("shutting down");
    proposer.abort();
    grpc.abort();
    server.abort();
    scheduler.shutdown().await;
    mesh.stop();
    let result = match outcome {
        Some(r) => r,
        None => raft_done.await.unwrap_or(Ok(())),
    };
    tracing::info!("stopped");
    result
}
