//! Recovery: the runbook's steps as code, run by the leader only.
//!
//! The data path is a straight line (ARCHITECTURE.md): a committed DOWN
//! opens an incident in the replicated state ([`crate::mesh::state`], pure,
//! like the agreed state); the executor on the leader ([`executor`], the
//! only place with side effects) commits each step's intent, confirms its
//! leadership, runs the step through its action ([`actions`], one module
//! per action behind one small trait, as the probes are) carrying the
//! fencing token, and commits the outcome.

pub mod actions;
pub mod executor;
pub mod incidents;
pub mod metrics;
pub mod plan;

pub use plan::{Action, ContainerRef, DockerOp, K8sOp, Plan, RecoveryDefaults, Step};
