//! Generated protobuf messages and gRPC stubs for faxi-watchdog.
//!
//! Architecture invariant: only the gRPC edge of the node and the CLI use
//! these types; the node's domain converts to and from them at that edge.

#![allow(missing_docs, clippy::all, missing_debug_implementations)]

/// Version 1 of the API.
pub mod v1 {
    tonic::include_proto!("faxi.v1");
}
