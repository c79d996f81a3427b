//! RPCs served by the master: namespace operations, chunk metadata, leases, heartbeats, status.
//!
//! Mutating namespace requests carry an [`OpId`] so that a retry is applied once.

use crate::ids::*;
use crate::rpc;
use crate::types::*;
use serde::{Deserialize, Serialize};

/// Cluster-wide constants a client needs before its first data operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfoReply {
    pub chunk_size: u64,
    pub replication: u32,
    pub lease_duration_ms: u64,
    /// How long a deleted file stays in the trash (0: no trash). Mounts defer the open holds of
    /// short read-only opens only while this is long: a hold that lands after an unlink takes
    /// the file back from the trash.
    pub trash_retention_ms: u64,
}
rpc!(ClusterInfo => ClusterInfoReply, ClusterInfo, [Client, Chunkserver, Master]);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lookup {
    pub parent: InodeId,
    pub name: String,
}
rpc!(Lookup => Attr, Lookup, [Client, Master]);

/// Resolve an absolute path (symlinks are not followed) to its attributes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvePath {
    pub path: String,
}
rpc!(ResolvePath => Attr, ResolvePath, [Client, Master]);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetAttr {
    pub inode: InodeId,
}
rpc!(GetAttr => Attr, GetAttr, [Client, Master]);

/// The attributes of several inodes in one request (a mount's `readdirplus` page): one answer
/// per inode, in order, `None` for an inode that no longer exists. At most
/// [`crate::limits::MAX_ATTRS_PER_CALL`] inodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetAttrs {
    pub inodes: Vec<InodeId>,
}
rpc!(GetAttrs => Vec<Option<Attr>>, GetAttrs, [Client, Master]);

/// The reply of a change to a directory's entries ([`Mkdir`], [`Create`], [`Rename`],
/// [`Unlink`], [`Rmdir`], [`Symlink`], [`Mknod`], [`Link`]): its result, and the attributes of
/// the directories whose entries it changed (the parent; a rename's two) as the leader has them
/// once the change is applied. The kernel drops its cached attributes of a directory a change
/// went through; a mount answers its next stat of that directory from these, within its
/// attribute TTL, instead of asking again. A directory removed meanwhile is left out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changed<T> {
    pub value: T,
    pub dirs: Vec<Attr>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mkdir {
    pub op: OpId,
    pub parent: InodeId,
    pub name: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}
rpc!(Mkdir => Changed<Attr>, Mkdir, [Client, Master]);

/// Create a regular file. With `exclusive` an existing name is `AlreadyExists`; without, an
/// existing regular file is returned as it is. With `hold`, the same request also records the
/// caller's open hold on the file (as [`HoldOpen`] for `op.client` would): a mount's create(2)
/// is one request and one log record instead of two.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Create {
    pub op: OpId,
    pub parent: InodeId,
    pub name: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub exclusive: bool,
    pub hold: bool,
}
rpc!(Create => Changed<Attr>, Create, [Client, Master]);

/// One page of a directory, in name order, starting after `after`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadDir {
    pub inode: InodeId,
    pub after: Option<String>,
    pub limit: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadDirReply {
    pub entries: Vec<DirEntry>,
    /// More entries follow the last one returned.
    pub more: bool,
}
rpc!(ReadDir => ReadDirReply, ReadDir, [Client, Master]);

/// A page of a directory as [`ReadDir`] (at most [`crate::limits::MAX_ATTRS_PER_CALL`]
/// entries), with the directory's own attributes and each entry's, all read at one point: a
/// mount's `opendir` and its first `readdirplus` page in one request instead of three.
/// `NotADirectory` for another kind of inode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadDirPlus {
    pub inode: InodeId,
    pub after: Option<String>,
    pub limit: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadDirPlusReply {
    pub dir: Attr,
    pub entries: Vec<(DirEntry, Attr)>,
    /// More entries follow the last one returned.
    pub more: bool,
}
rpc!(ReadDirPlus => ReadDirPlusReply, ReadDirPlus, [Client, Master]);

/// Rename, replacing a destination of a compatible kind (an empty directory for a directory).
/// Renaming a name onto another link of the same inode succeeds and changes nothing.
/// `flags`: 0, [`RENAME_NOREPLACE`] (`AlreadyExists` if the destination exists) or
/// [`RENAME_EXCHANGE`] (swap two existing entries of any kinds); anything else is
/// `InvalidArgument`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rename {
    pub op: OpId,
    pub src_parent: InodeId,
    pub src_name: String,
    pub dst_parent: InodeId,
    pub dst_name: String,
    pub flags: u32,
}
rpc!(Rename => Changed<()>, Rename, [Client, Master]);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unlink {
    pub op: OpId,
    pub parent: InodeId,
    pub name: String,
}
rpc!(Unlink => Changed<()>, Unlink, [Client, Master]);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rmdir {
    pub op: OpId,
    pub parent: InodeId,
    pub name: String,
}
rpc!(Rmdir => Changed<()>, Rmdir, [Client, Master]);

/// Change attributes. `size` truncates or extends: chunks wholly past the new size are dropped
/// (the client has already cut the chunk that holds the new end, through its primary).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetAttr {
    pub op: OpId,
    pub inode: InodeId,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<Timestamp>,
    pub mtime: Option<Timestamp>,
    /// Clear S_ISUID, and S_ISGID if S_IXGRP is set, on a non-directory (after `mode` is
    /// applied), as Linux does on chown by an unprivileged caller. The caller decides.
    pub clear_suid: bool,
}
rpc!(SetAttr => Attr, SetAttr, [Client, Master]);

/// After a write is acknowledged by every replica: the file is at least `end` bytes long and was
/// modified at `mtime`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitSize {
    pub op: OpId,
    pub inode: InodeId,
    pub end: u64,
    pub mtime: Timestamp,
}
rpc!(CommitSize => Attr, CommitSize, [Client, Master]);

/// Create a symbolic link (mode 0o777) whose target is 1..=4095 bytes without NUL (empty:
/// `NotFound`, as Linux; too long: `NameTooLong`). Its size is the target's length.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Symlink {
    pub op: OpId,
    pub parent: InodeId,
    pub name: String,
    pub target: String,
    pub uid: u32,
    pub gid: u32,
}
rpc!(Symlink => Changed<Attr>, Symlink, [Client, Master]);

/// The target of a symlink (`InvalidArgument` for any other kind).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadLink {
    pub inode: InodeId,
}
rpc!(ReadLink => String, ReadLink, [Client, Master]);

/// Create a fifo, a device, a socket or an empty regular file (`kind`); metadata only. `rdev` is
/// kept for devices and ignored otherwise. A directory or symlink kind is `InvalidArgument`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mknod {
    pub op: OpId,
    pub parent: InodeId,
    pub name: String,
    pub kind: FileKind,
    pub mode: u32,
    pub rdev: u32,
    pub uid: u32,
    pub gid: u32,
}
rpc!(Mknod => Changed<Attr>, Mknod, [Client, Master]);

/// Add a hard link `new_parent/new_name` to a non-directory (`NotPermitted` for a directory,
/// `NotFound` for an orphan, `TooManyLinks` past [`MAX_LINKS`]). Returns the inode's attributes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub op: OpId,
    pub inode: InodeId,
    pub new_parent: InodeId,
    pub new_name: String,
}
rpc!(Link => Changed<Attr>, Link, [Client, Master]);

/// Set an extended attribute. Names are 1..=255 bytes without NUL (`OutOfRange` otherwise),
/// values at most 64 KiB (`TooBig`), names plus values at most 1 MiB per inode (`NoSpace`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetXattr {
    pub op: OpId,
    pub inode: InodeId,
    pub name: String,
    pub value: Vec<u8>,
    pub flags: XattrFlags,
}
rpc!(SetXattr => (), SetXattr, [Client, Master]);

/// The value of an extended attribute (`NoData` if it has none by that name).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetXattr {
    pub inode: InodeId,
    pub name: String,
}
rpc!(GetXattr => Vec<u8>, GetXattr, [Client, Master]);

/// The names of an inode's extended attributes, in byte order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListXattr {
    pub inode: InodeId,
}
rpc!(ListXattr => Vec<String>, ListXattr, [Client, Master]);

/// Remove an extended attribute (`NoData` if it has none by that name).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveXattr {
    pub op: OpId,
    pub inode: InodeId,
    pub name: String,
}
rpc!(RemoveXattr => (), RemoveXattr, [Client, Master]);

/// Record (`hold`) or drop this client's open hold on an inode. Holds are a set per
/// (client, inode): holding twice is one hold, dropping an absent hold succeeds. A file whose
/// last link goes while held stays, by inode only (nlink 0), until its last hold is dropped.
/// Directories are not held (a no-op success).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldOpen {
    pub op: OpId,
    pub inode: InodeId,
    pub client: ClientId,
    pub hold: bool,
}
rpc!(HoldOpen => (), HoldOpen, [Client, Master]);

/// A client with open holds says it is still there. The master drops every hold of a client it
/// has not heard from (this, or a hold request) for its session timeout, so files unlinked
/// while a client that died held them open do not stay forever. The reply: how many inodes the
/// master holds for the client (fewer than the client thinks after its holds were dropped
/// while it was cut off: it takes them again), and the timeout, so the client can call often
/// enough (0: holds never expire).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeepAlive {
    pub client: ClientId,
}
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeepAliveReply {
    pub holds: u64,
    pub session_timeout_ms: u64,
}
rpc!(KeepAlive => KeepAliveReply, KeepAlive, [Client, Master]);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatFs {}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatFsReply {
    pub capacity_bytes: u64,
    pub used_bytes: u64,
    pub available_bytes: u64,
    pub files: u64,
    /// Files in the trash and the sum of their sizes (not counted in `files`).
    pub trash_files: u64,
    pub trash_bytes: u64,
}
rpc!(StatFs => StatFsReply, StatFs, [Client, Master]);

/// Locations of chunks `first_index .. first_index + count` of a file; holes are omitted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetChunks {
    pub inode: InodeId,
    pub first_index: u64,
    pub count: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetChunksReply {
    pub chunks: Vec<ChunkLocation>,
    pub file_size: u64,
}
rpc!(GetChunks => GetChunksReply, GetChunks, [Client, Master]);

/// Ask for the right to mutate chunk `index` of a file: the master allocates the chunk if the file
/// has none there, and returns the primary holding a valid lease (granting one, with a version
/// bump, if none is valid).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrepareWrite {
    pub op: OpId,
    pub inode: InodeId,
    pub index: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteGrant {
    pub handle: ChunkHandle,
    pub version: ChunkVersion,
    pub primary: ServerRef,
    pub secondaries: Vec<ServerRef>,
    /// How long the lease is still valid, as seen by the master when it answered.
    pub lease_remaining_ms: u64,
}
rpc!(PrepareWrite => WriteGrant, PrepareWrite, [Client, Master]);

/// A replica failed its checksum (reported by a reader or by the chunkserver itself).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportBadChunk {
    pub handle: ChunkHandle,
    pub server: NodeId,
}
rpc!(ReportBadChunk => (), ReportBadChunk, [Client, Chunkserver, Master]);

/// Primary → master: a mutation of `handle` at `version` was applied on some replicas but
/// failed on `failed` (a full disk, a dead or unreachable secondary, or the primary's own
/// disk). Those replicas may now differ from the others, so they are withdrawn: never read
/// again, deleted, and replaced by re-replication; the next grant bumps the version without
/// them. When the primary itself failed it has dropped its lease first (`lease_released`), so
/// the master may grant a new one at once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportFailedReplica {
    pub handle: ChunkHandle,
    pub version: ChunkVersion,
    pub failed: Vec<NodeId>,
    pub lease_released: bool,
}
rpc!(ReportFailedReplica => (), ReportFailedReplica, [Chunkserver]);

/// A chunkserver's periodic report. `chunks` is a full report (first heartbeat, and periodically);
/// `None` keeps the last one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub node: NodeId,
    pub addr: String,
    pub capacity_bytes: u64,
    pub used_bytes: u64,
    pub chunks: Option<Vec<(ChunkHandle, ChunkVersion)>>,
    /// Requests in flight (load).
    pub active_requests: u32,
    pub bytes_read: u64,
    pub bytes_written: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatReply {
    /// Replicas this server must delete (unknown to the master, or stale): delete the chunk if
    /// its local version is at most the given one, so a bump that raced the report is kept.
    pub delete: Vec<(ChunkHandle, ChunkVersion)>,
    /// The master wants a full chunk report with the next heartbeat.
    pub want_report: bool,
}
rpc!(Heartbeat => HeartbeatReply, Heartbeat, [Chunkserver]);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterStatus {
    pub addr: String,
    /// "leader", "follower", "candidate", "learner", "shutdown", or "unreachable" (a master the
    /// leader could not ask).
    pub role: String,
    /// The applied log index (the operation log's index for a single master without Raft).
    pub log_index: u64,
    /// Raft: this master's id (0 without Raft), term and commit index.
    pub id: u64,
    pub term: u64,
    pub commit_index: u64,
    pub files: u64,
    pub directories: u64,
    /// Every chunk in the chunk table, those of trashed files included.
    pub chunks: u64,
    /// Files in the trash (not counted in `files`) and the sum of their sizes.
    pub trash_files: u64,
    pub trash_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkserverStatus {
    pub id: NodeId,
    pub addr: String,
    pub alive: bool,
    pub capacity_bytes: u64,
    pub used_bytes: u64,
    pub chunks: u64,
    pub last_heartbeat_ms_ago: u64,
    pub active_requests: u32,
    pub bytes_read: u64,
    pub bytes_written: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatusReply {
    pub masters: Vec<MasterStatus>,
    pub chunkservers: Vec<ChunkserverStatus>,
    pub chunk_size: u64,
    pub replication: u32,
    /// Chunks with fewer live current replicas than their goal (but at least one).
    pub under_replicated_chunks: u64,
    /// Chunks with no live current replica.
    pub missing_chunks: u64,
    /// Replicas reported corrupt (failed checksums) since the master started.
    pub corrupt_reports: u64,
    /// Chunks with more live current replicas than their goal (extras are being deleted).
    pub over_replicated_chunks: u64,
    /// The re-replication queue: under-replicated chunks still short of their goal once the
    /// clones in flight are counted.
    pub repair_queue: u64,
    /// Clones (`CloneChunk`) in flight now.
    pub clones_in_flight: u64,
    /// Clones that completed and added a replica, and the bytes they copied, since the master
    /// started.
    pub clones_done: u64,
    pub cloned_bytes: u64,
    /// Clones that failed or were discarded (the chunk changed meanwhile).
    pub clones_failed: u64,
}
rpc!(ClusterStatus => ClusterStatusReply, ClusterStatus, [Client, Master, Chunkserver]);

/// One master's own view of itself (answered by any master, leader or not): what `quarry
/// status` shows per master.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterInfo {}
rpc!(MasterInfo => MasterStatus, MasterInfo, [Client, Master, Chunkserver]);

/// Add a master (`add = Some((id, addr))`) to the Raft group or remove one (`remove =
/// Some(id)`). Answered by the leader (followers answer `NotLeader`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeMasters {
    pub add: Option<(u64, String)>,
    pub remove: Option<u64>,
}
rpc!(ChangeMasters => (), ChangeMasters, [Client]);

/// One file in the trash: a regular file whose last name went while the master keeps a trash
/// (its storage is reclaimed when the entry is purged).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrashEntry {
    /// Its inode number, kept while it is in the trash; the id `RestoreTrash` takes.
    pub inode: InodeId,
    /// The path of its last name when that went.
    pub path: String,
    /// When its last name went (the unlink or replacing rename).
    pub deleted: Timestamp,
    pub size: u64,
    pub chunks: u64,
}

/// One page of the trash in inode order, starting after `after`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListTrash {
    pub after: Option<InodeId>,
    pub limit: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListTrashReply {
    pub entries: Vec<TrashEntry>,
    /// More entries follow the last one returned.
    pub more: bool,
    /// The master's trash retention (0: deleted files are not kept).
    pub retention_ms: u64,
}
rpc!(ListTrash => ListTrashReply, ListTrash, [Client, Master]);

/// Give a trashed file a name again: `path`, or the path it had if `None`. `NotFound` if it is
/// not in the trash or the parent directory does not exist, `AlreadyExists` if the name is
/// taken. Returns its attributes (nlink 1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreTrash {
    pub op: OpId,
    pub inode: InodeId,
    pub path: Option<String>,
}
rpc!(RestoreTrash => Attr, RestoreTrash, [Client, Master]);

/// Which trashed files a [`PurgeTrash`] drops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PurgeWhich {
    /// Every one.
    All,
    /// Those deleted longer ago than the master's retention (what its purge loop drops).
    Expired,
    /// Those deleted before this time.
    DeletedBefore(Timestamp),
}

/// Drop trashed files now, with their chunks (deleted from the chunkservers through their
/// heartbeats). Returns how many were dropped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeTrash {
    pub op: OpId,
    pub which: PurgeWhich,
}
rpc!(PurgeTrash => u64, PurgeTrash, [Client, Master]);

/// Set the replication goal (1..=255, else `InvalidArgument`) of an inode. On a directory
/// without `recursive` it is the directory's own goal, which its new children inherit; with
/// `recursive`, every inode in its subtree gets it. New chunks get as many replicas as their
/// file's goal; existing chunks are re-replicated by the master, not by this call. Returns how
/// many inodes changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetGoal {
    pub op: OpId,
    pub inode: InodeId,
    pub goal: u32,
    pub recursive: bool,
}
rpc!(SetGoal => u64, SetGoal, [Client, Master]);

/// The replication goal of an inode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetGoal {
    pub inode: InodeId,
}
rpc!(GetGoal => u32, GetGoal, [Client, Master]);
/// Health of the chunks of every regular file at or below `path` (`quarry fsck`). The master
/// walks the namespace directory by directory; the report is not one atomic snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fsck {
    pub path: String,
    /// Most problem chunks listed in the reply (the counts always cover every chunk).
    pub max_problems: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsckReply {
    pub path: String,
    /// Regular files (each inode once, however many links) and directories walked.
    pub files: u64,
    pub directories: u64,
    /// Bytes of those files (their sizes).
    pub bytes: u64,
    pub chunks: u64,
    /// Chunks with exactly their goal of live current replicas.
    pub healthy: u64,
    /// Chunks with at least one but fewer than their goal.
    pub under_replicated: u64,
    /// Chunks with more than their goal.
    pub over_replicated: u64,
    /// Replicas known to have failed a checksum (withdrawn; being deleted and replaced).
    pub corrupt_replicas: u64,
    /// Chunks with no live current replica: unreadable until a holder comes back.
    pub missing: u64,
    /// Chunks that are not healthy or have a corrupt replica, up to `max_problems`.
    pub problems: Vec<FsckProblem>,
    /// More problem chunks exist than are listed.
    pub problems_truncated: bool,
}

impl FsckReply {
    /// The overall verdict, worst first: MISSING, CORRUPT, UNDER-REPLICATED, HEALTHY.
    /// Over-replication alone is healthy (the extras are being deleted).
    pub fn status(&self) -> &'static str {
        if self.missing > 0 {
            "MISSING"
        } else if self.corrupt_replicas > 0 {
            "CORRUPT"
        } else if self.under_replicated > 0 {
            "UNDER-REPLICATED"
        } else {
            "HEALTHY"
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsckProblem {
    pub path: String,
    pub index: u64,
    pub handle: ChunkHandle,
    pub version: ChunkVersion,
    pub live: u32,
    pub goal: u32,
    pub corrupt: u32,
}
rpc!(Fsck => FsckReply, Fsck, [Client, Master]);

/// Every replica the master knows of, for chunks `first_index .. first_index + count` of a
/// regular file (`quarry fileinfo`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    pub inode: InodeId,
    pub first_index: u64,
    pub count: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfoReply {
    pub size: u64,
    pub chunks: Vec<ChunkReplicas>,
    /// Chunks with a higher index exist.
    pub more: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkReplicas {
    pub index: u64,
    pub handle: ChunkHandle,
    pub version: ChunkVersion,
    /// Bytes of the file in this chunk (from the file's size); a replica may hold more (bytes of
    /// writes whose size was never committed).
    pub len: u64,
    pub goal: u32,
    pub replicas: Vec<ReplicaInfo>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaInfo {
    pub server: ServerRef,
    pub state: ReplicaState,
    /// The version this server last reported, when it differs from the chunk's.
    pub reported_version: Option<ChunkVersion>,
    /// This replica holds the chunk's lease, as the master counts it.
    pub primary: bool,
    /// The lease's remaining time by the master's count (which ends no earlier than the
    /// primary's).
    pub lease_remaining_ms: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaState {
    /// A current replica on a live server: served to readers.
    Live,
    /// A current replica on a server that stopped heartbeating.
    Dead,
    /// An older version (missed mutations): never served, deleted.
    Stale,
    /// Failed a checksum: never served, deleted once a good replica exists.
    Corrupt,
}

impl ReplicaState {
    pub fn as_str(self) -> &'static str {
        match self {
            ReplicaState::Live => "live",
            ReplicaState::Dead => "dead",
            ReplicaState::Stale => "stale",
            ReplicaState::Corrupt => "corrupt",
        }
    }
}
rpc!(FileInfo => FileInfoReply, FileInfo, [Client, Master]);
