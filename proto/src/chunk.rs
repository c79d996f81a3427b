//! RPCs served by chunkservers: the data pipeline, ordered mutations, reads, version bumps.
//!
//! Write protocol (see `docs/write-protocol.md`): the client pushes the bytes along the replica
//! chain with [`PushData`] (each server forwards while it receives), then sends
//! [`CommitMutation`] to the primary, which orders it, applies it locally (fsync), and sends
//! [`ApplyMutation`] with the same serial to every secondary.

use crate::ids::*;
use crate::rpc;
use crate::types::ServerRef;
use serde::{Deserialize, Serialize};

/// Push bytes (the frame body) into the receivers' buffers under `data_id`; the receiver forwards
/// them to `forward[0]` with the rest of the list while it receives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushData {
    pub data_id: DataId,
    pub forward: Vec<ServerRef>,
    /// CRC32C of the whole body, checked by every receiver.
    pub crc32c: u32,
}
rpc!(PushData => (), PushData, [Client, Chunkserver]);

/// A change to one chunk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mutation {
    /// Write pushed data at `offset` (holes below it read as zeros).
    Write {
        offset: u64,
        data_id: DataId,
        len: u64,
    },
    /// Cut the chunk to `len` bytes (or extend it with zeros).
    Truncate { len: u64 },
    /// Record append: the primary picks the offset (the chunk's end); if the record does not fit,
    /// the chunk is padded to `chunk_size` and the answer is `ChunkFull`. `op` names the record
    /// for exactly-once placement: every replica remembers where record `op` landed, and a
    /// retry of the same `op` (after a lost reply, a failed replica or a new primary) rewrites
    /// it at that same offset instead of appending it again.
    Append {
        data_id: DataId,
        len: u64,
        chunk_size: u64,
        op: OpId,
        /// The file's end within this chunk as the client last saw it: the record lands at
        /// least there, even where the replica is shorter (a sparse file's hole), so that an
        /// append never lands inside the file.
        min_offset: u64,
    },
}

/// Sent to the primary. The answer comes once every replica applied the mutation durably.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitMutation {
    pub handle: ChunkHandle,
    pub version: ChunkVersion,
    pub mutation: Mutation,
    /// The secondaries the client pushed to (informational: the primary applies the mutation on
    /// the replica list the master gave it with the lease).
    pub secondaries: Vec<ServerRef>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitReply {
    /// Where the bytes landed (for appends, the offset the primary chose).
    pub offset: u64,
    /// The chunk's length on the primary after the mutation.
    pub chunk_len: u64,
}
rpc!(CommitMutation => CommitReply, CommitMutation, [Client]);

/// Primary → secondary: apply this mutation, the `serial`-th of this lease, in serial order.
/// Appends arrive already resolved to a `Write` (or a `Truncate` for padding); `record` then
/// names the appended record, which the secondary remembers with its offset, so that it can
/// answer a retry of the same record exactly once should it become the primary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyMutation {
    pub handle: ChunkHandle,
    pub version: ChunkVersion,
    pub serial: u64,
    pub mutation: Mutation,
    pub record: Option<OpId>,
}
rpc!(ApplyMutation => (), ApplyMutation, [Chunkserver]);

/// Read `len` bytes at `offset`. The reply's body carries the bytes, verified against their
/// checksums; past the chunk's end the reply is short.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadChunk {
    pub handle: ChunkHandle,
    pub version: ChunkVersion,
    pub offset: u64,
    pub len: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadReply {
    /// The chunk's length on this replica.
    pub chunk_len: u64,
}
rpc!(ReadChunk => ReadReply, ReadChunk, [Client, Chunkserver, Master]);

/// Master → replica: the chunk's version is now `version` (creating an empty chunk if this replica
/// has none and `create` is set). To the primary it also grants a lease of `lease_ms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BumpVersion {
    pub handle: ChunkHandle,
    pub version: ChunkVersion,
    pub create: bool,
    pub lease_ms: Option<u64>,
    /// The other replicas, for the primary's information.
    pub replicas: Vec<ServerRef>,
}
rpc!(BumpVersion => (), BumpVersion, [Master]);

/// Liveness and identity check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkserverPing {}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PingReply {
    pub node: NodeId,
}
rpc!(ChunkserverPing => PingReply, ChunkserverPing, [Client, Chunkserver, Master]);

/// Chunkserver → chunkserver (a clone's target → its source): where the records appended to
/// `handle` that the source remembers landed, so that the new copy answers retries of them
/// exactly once too (record append, `docs/write-protocol.md` §6).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetAppendMemo {
    pub handle: ChunkHandle,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendMemoReply {
    /// `(record, offset, len)`.
    pub records: Vec<(OpId, u64, u64)>,
}
rpc!(GetAppendMemo => AppendMemoReply, GetAppendMemo, [Chunkserver]);

/// Master → chunkserver (the clone's target): copy chunk `handle` at exactly `version` from
/// `source` with verified [`ReadChunk`]s, in pieces, and install it here at `version`, replacing
/// any older copy this server holds. The copy is built at version 0 ([`ChunkVersion::INCOMPLETE`]:
/// never current, so never served or made a location) and moved to `version` only once every
/// byte is durable, so a crash mid-clone leaves nothing the master would count. Refused with
/// `StaleVersion` if this server holds the chunk at a newer version. Answered once the copy is
/// durable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloneChunk {
    pub handle: ChunkHandle,
    pub version: ChunkVersion,
    pub source: ServerRef,
    /// The length the master expects (from the file's size; an estimate). The target copies the
    /// source's whole chunk, to the `chunk_len` of the source's reply, so replicas stay identical
    /// even past the file's size.
    pub len: u64,
    /// Pace of the copy in bytes per second (0: as fast as it goes), so client traffic keeps
    /// flowing while chunks are re-replicated.
    pub bytes_per_sec: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloneReply {
    /// Bytes copied: the chunk's length.
    pub len: u64,
}
rpc!(CloneChunk => CloneReply, CloneChunk, [Master]);
