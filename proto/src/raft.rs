//! RPCs between masters for Raft replication of the master's state (`master/src/raft/`).
//!
//! The messages carry openraft's request and response types as opaque postcard bytes: this crate
//! does not depend on openraft (nor on anything that does IO); only the masters' raft module
//! encodes and decodes them. Only masters may call these methods.

use crate::rpc;
use serde::{Deserialize, Serialize};

/// openraft `AppendEntriesRequest` (postcard); the reply is the postcard of
/// `Result<AppendEntriesResponse, RaftError>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftAppend {
    pub data: Vec<u8>,
}

/// openraft `VoteRequest` (postcard); the reply is the postcard of
/// `Result<VoteResponse, RaftError>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftVote {
    pub data: Vec<u8>,
}

/// openraft `InstallSnapshotRequest` (one chunk of a snapshot, postcard); the reply is the
/// postcard of `Result<InstallSnapshotResponse, RaftError<InstallSnapshotError>>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftSnapshot {
    pub data: Vec<u8>,
}

/// The opaque answer to any of the Raft RPCs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftReply {
    pub data: Vec<u8>,
}

rpc!(RaftAppend => RaftReply, RaftAppend, [Master]);
rpc!(RaftVote => RaftReply, RaftVote, [Master]);
rpc!(RaftSnapshot => RaftReply, RaftSnapshot, [Master]);
