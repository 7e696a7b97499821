//! The mesh: agreement on failure state across zones. So far its pure
//! replicated state machine; the Raft node, storage and transport that feed
//! it committed commands come next.

pub mod state;
pub mod storage;
