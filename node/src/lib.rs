//! faxi-watchdog: a health-watchdog node for Faxi's PostgreSQL, Redis, S3,
//! backups and app. See ARCHITECTURE.md for the code map and its invariants.

pub mod api;
pub mod config;
pub mod dev;
pub mod mesh;
pub mod metrics;
pub mod node;
pub mod probe;
pub mod scheduler;
pub mod telemetry;
pub mod verdict;
