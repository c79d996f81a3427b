//! `quarry-master`: the namespace and chunk table as a deterministic state machine
//! ([`engine`]), made durable by an operation log with checkpoints ([`oplog`]), plus the volatile
//! cluster view rebuilt from heartbeats ([`registry`]: live chunkservers, chunk locations,
//! leases, placement), the re-replication decisions ([`repair`]), and the runtime serving the
//! master RPCs ([`service`], [`node`]). [`raft`] replicates the engine with openraft between
//! masters; the service does not use it yet.
//!
//! Depends on `quarry-proto` and `quarry-transport` only; never on another server crate.

pub mod engine;
pub mod node;
pub mod oplog;
pub mod raft;
pub mod registry;
pub mod repair;
pub mod service;

pub use node::MasterNode;
pub use service::{Master, MasterConfig};
