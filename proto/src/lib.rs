//! Generated protobuf messages and gRPC stubs for faxi-watchdog.
//!
//! Architecture invariant: only the gRPC edge of the node and the CLI use
//! these types; the node's domain converts to and from them at that edge.

#![allow(missing_docs, clippy::all, missing_debug_implementations)]

/// Version 1 of the API.
pub mod v1 {
    tonic::include_proto!("faxi.v1");
}

/// What the node and faxictl must agree on outside the messages: the name
/// every node certificate holds, and where faxictl's client config lives
/// (`faxi-watchdog dev` writes it there).
pub mod client {
    use std::path::PathBuf;

    /// The DNS name every node certificate holds: what a client that does
    /// not know which node it reaches checks.
    pub const ANY_NODE: &str = "faxi-watchdog";

    /// faxictl's default client config:
    /// `$XDG_CONFIG_HOME/faxictl/config.toml`, else
    /// `$HOME/.config/faxictl/config.toml`; `None` without either.
    pub fn default_config_path() -> Option<PathBuf> {
        let base = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|v| !v.is_empty())
                    .map(|h| PathBuf::from(h).join(".config"))
            })?;
        Some(base.join("faxictl").join("config.toml"))
    }
}
