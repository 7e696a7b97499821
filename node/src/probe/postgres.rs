//! `kind = "postgres"`: connect, authenticate and run the configured query.

use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::NoTls;

use super::{Healthy, Probe, ProbeError, ProbeFuture};
use crate::config::PostgresCheck;

/// How long a finished probe waits for the server to take its goodbye, so the
/// server logs a clean disconnect rather than an aborted one.
const GOODBYE: Duration = Duration::from_millis(100);

/// A fresh connection per probe: a health check must prove that a new client
/// can get in (auth, `max_connections`), not that an old socket still works.
pub(super) struct PostgresProbe {
    config: tokio_postgres::Config,
    query: String,
}

impl PostgresProbe {
    pub(super) fn new(c: &PostgresCheck) -> Result<Self, String> {
        // Validated at config load; the driver's message never echoes the DSN.
        let mut config =
            tokio_postgres::Config::from_str(&c.dsn).map_err(|e| format!("invalid dsn: {e}"))?;
        if let Some(pw) = &c.password {
            config.password(pw.expose());
        }
        config.application_name("faxi-watchdog");
        Ok(Self {
            config,
            query: c.query.clone(),
        })
    }
}

impl Probe for PostgresProbe {
    fn check(&self) -> ProbeFuture<'_> {
        Box::pin(async move {
            let (client, conn) = self
                .config
                .connect(NoTls)
                .await
                .map_err(|e| ProbeError::from_error("connect failed", &e))?;
            // The connection is driven here, not spawned, so dropping this
            // future at the deadline drops the socket too.
            let mut conn = std::pin::pin!(conn);
            let rows = tokio::select! {
                r = client.simple_query(&self.query) => {
                    r.map_err(|e| ProbeError::from_error("query failed", &e))?
                }
                r = &mut conn => {
                    let reason = match r {
                        Ok(()) => "connection closed by the server".to_owned(),
                        Err(e) => super::error_chain(&e),
                    };
                    return Err(ProbeError::new(format!("query failed: {reason}")));
                }
            };
            let n = rows
                .iter()
                .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
                .count();
            drop(client);
            let _ = tokio::time::timeout(GOODBYE, conn).await;
            Ok(Healthy {
                detail: format!("query ok, {n} row(s)"),
                ..Healthy::default()
            })
        })
    }
}
