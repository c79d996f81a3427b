//! The master's state replicated with Raft (openraft 0.9.25, storage v2): the type
//! configuration, a durable log store of segment files ([`log_store`]), the state machine over the
//! [`Engine`] with snapshots as checkpoints ([`state_machine`]), the network over Quarry's own
//! RPC transport ([`network`]) and the handle that runs one master's Raft ([`node`]).
//! See `docs/raft.md`.
//!
//! Must not depend on the master's service (`service.rs`, `node.rs`), the registry or repair:
//! the service is built on this module, never the other way round. It knows the transport only
//! through `Router` and `RpcClient`, so it runs the same over QUIC and over `MemNetwork`.

pub mod log_store;
pub mod network;
pub mod node;
pub mod state_machine;

use crate::engine::{Command, Output};
use quarry_proto::FsError;

pub use log_store::LogStore;
pub use network::{Network, RaftInbox};
pub use node::{RaftConfig, RaftMetricsView, RaftNode, RaftRole};
pub use state_machine::StateMachine;

/// The result a committed [`Command`] yields: what [`crate::engine::Engine::apply`] returned.
pub type Response = Result<Output, FsError>;

openraft::declare_raft_types!(
    /// openraft's types for the master: node ids are `u64`, a node is its RPC address, an entry
    /// carries one [`Command`], and the response is the engine's result for it.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = u64,
        Node = String,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
        Responder = openraft::impls::OneshotResponder<TypeConfig>,
);

/// A Raft node id.
pub type NodeId = u64;
/// openraft's log id for this configuration.
pub type LogId = openraft::LogId<NodeId>;
/// openraft's storage error for this configuration.
pub type StorageError = openraft::StorageError<NodeId>;
/// openraft's snapshot metadata for this configuration.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, String>;
/// openraft's recorded membership for this configuration.
pub type StoredMembership = openraft::StoredMembership<NodeId, String>;
