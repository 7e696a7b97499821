//! The mesh: agreement on failure state across zones.
//!
//! - `state`: the pure replicated state machine (observations in, agreed
//!   state out);
//! - `codec`: how commands and snapshots are written (versioned binary;
//!   older JSON still read);
//! - `storage`: the Raft log (in memory, every write logged by `wal`);
//! - `driver`: the thread that owns raft-rs's `RawNode`, the log and the
//!   state machine;
//! - `transport`: raft messages to peers over tonic;
//! - `proposer`: local verdicts to batched observations;
//! - `wal`: an append-only log of checksummed records, the Raft log's files.

// node/clippy.toml bans sled and protobuf outside the modules that own
// them; these allowances are the whole list (ARCHITECTURE.md, invariants).
// The driver decodes raft-rs's conf changes (protobuf) from the log.
pub mod codec;
#[allow(clippy::disallowed_types, clippy::disallowed_methods)]
pub mod driver;
pub mod guard;
pub mod proposer;
mod raftlog;
#[cfg(test)]
mod sim;
pub mod state;
// The one module that touches sled (to copy a data dir of an earlier
// version); it stores raft-rs's protobuf messages.
#[allow(clippy::disallowed_types, clippy::disallowed_methods)]
pub mod storage;
// Peer traffic: raft-rs's messages as protobuf bytes inside our gRPC batch.
#[allow(clippy::disallowed_types, clippy::disallowed_methods)]
pub mod transport;
pub mod vecmap;
pub mod wal;
