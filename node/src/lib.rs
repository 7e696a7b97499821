//! faxi-watchdog: a health-watchdog node for Faxi's PostgreSQL, Redis, S3,
//! backups and app. See ARCHITECTURE.md for the code map and its invariants.

// The gRPC edge: protobuf types are converted to and from the domain's here
// (node/clippy.toml bans them everywhere else).
#[allow(clippy::disallowed_types, clippy::disallowed_methods)]
pub mod api;
pub mod config;
pub mod dev;
#[cfg(test)]
mod fuzz;
pub mod mesh;
pub mod metrics;
pub mod node;
pub mod probe;
pub mod recovery;
pub mod scheduler;
pub mod slo;
pub mod telemetry;
pub mod tls;
pub mod verdict;
