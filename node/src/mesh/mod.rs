//! The mesh: agreement on failure state across zones.
//!
//! - `state`: the pure replicated state machine (observations in, agreed
//!   state out);
//! - `storage`: the Raft log on sled;
//! - `driver`: the thread that owns raft-rs's `RawNode`, the log and the
//!   state machine;
//! - `transport`: raft messages to peers over tonic;
//! - `proposer`: local verdicts to batched observations.

pub mod driver;
pub mod guard;
pub mod proposer;
mod raftlog;
#[cfg(test)]
mod sim;
pub mod state;
pub mod storage;
pub mod transport;
