//! `kind = "tcp"`: a TCP connect, nothing more.

use tokio::net::TcpStream;

use super::{Healthy, Probe, ProbeError, ProbeFuture};
use crate::config::TcpCheck;

/// Connects to `host:port` (resolved on every probe, so DNS changes count).
pub(super) struct TcpProbe {
    addr: String,
}

impl TcpProbe {
    pub(super) fn new(c: &TcpCheck) -> Self {
        Self {
            addr: c.addr.clone(),
        }
    }
}

impl Probe for TcpProbe {
    fn check(&self) -> ProbeFuture<'_> {
        Box::pin(async move {
            let stream = TcpStream::connect(&self.addr)
                .await
                .map_err(|e| ProbeError::from_error("connect failed", &e))?;
            let peer = stream
                .peer_addr()
                .map(|a| a.to_string())
                .unwrap_or_default();
            Ok(Healthy {
                detail: format!("connected to {peer}"),
                ..Healthy::default()
            })
        })
    }
}
