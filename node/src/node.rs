//! One node: wires the probe scheduler and the metrics server together and
//! runs until told to stop.

use std::future::Future;

use crate::config::Config;
use crate::probe::ProbeContext;
use crate::scheduler::Scheduler;

/// Runs a node until `shutdown` resolves. Errors are fatal start-up problems
/// (a port in use, a probe that cannot be built), worded for the operator.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), String> {
    let handle = crate::metrics::install()?;
    let listener = crate::metrics::bind(config.node.metrics_listen).await?;
    let ctx = ProbeContext::new(config.node.id);
    let scheduler = Scheduler::start(&config.targets, &ctx)?;
    tracing::info!(
        node = config.node.id,
        zone = %config.node.zone,
        targets = config.targets.len(),
        metrics = %config.node.metrics_listen,
        "node started"
    );
    let server = tokio::spawn(crate::metrics::serve(listener, handle));
    shutdown.await;
    tracing::info!("shutting down");
    server.abort();
    scheduler.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}
