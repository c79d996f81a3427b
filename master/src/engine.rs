//! The master's namespace and chunk table as a deterministic state machine (sans-IO).
//!
//! [`Engine`] holds every inode (directories, regular files, symlinks, fifos, devices, sockets),
//! their extended attributes, the open holds of clients, the chunk table (which chunk handle
//! holds which chunk of which file, at which version) and the exactly-once session table. It
//! changes only through [`Engine::apply`] of a logged [`Command`]; everything else is a read-only
//! query.
//!
//! This module must stay pure: it does no IO, reads no clock, draws no random numbers and keeps no
//! hash-ordered state. The result of `apply` depends only on the engine and the command (time is a
//! field of the command), so replaying the operation log on a checkpoint reproduces the state
//! exactly. All maps are `BTreeMap`s, so the serialized engine (the checkpoint) is deterministic too.
//!
//! A command either succeeds or changes nothing: every operation validates first and mutates
//! after. Only successful results are recorded in the session table.
//!
//! Links: a directory has exactly one entry naming it (and its `parent`); any other inode may be
//! named by several entries (hard links), counted by `attr.nlink`. When the last entry goes the
//! inode is dropped with its chunks, unless a client holds it open ([`Command::HoldOpen`]): then
//! it stays as an *orphan* (nlink 0, reachable by inode only) until its last hold is dropped.
//!
//! Trash: while the trash retention is set ([`Command::SetTrashRetention`]), a regular file is
//! not dropped when its last name and last hold are gone but moved to the trash, with the path
//! of its last name and the time it went: out of the namespace (no query finds it by inode), its
//! chunks still in the chunk table, until [`Command::RestoreTrash`] names it again or
//! [`Command::PurgeTrash`] drops it. Other kinds are dropped as before.
//!
//! Replication goals: every inode has one (1..=255); a new inode inherits its parent's, the root
//! starts at [`Engine::with_root_goal`], [`Command::SetGoal`] changes an inode or a subtree.

use quarry_proto::master::TrashEntry;
use quarry_proto::{
    split_path, validate_name, Attr, ChunkHandle, ChunkVersion, ClientId, DirEntry, FileKind,
    FsError, InodeId, OpId, Timestamp, XattrFlags, MAX_LINKS, MAX_SYMLINK_BYTES,
    MAX_XATTR_NAME_BYTES, MAX_XATTR_TOTAL_BYTES, MAX_XATTR_VALUE_BYTES, RENAME_EXCHANGE,
    RENAME_NOREPLACE,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Default bound of the exactly-once session table (clients remembered).
pub const DEFAULT_SESSION_LIMIT: usize = 10_000;

/// Permission bits (and setuid/setgid/sticky) kept in `Attr::mode`.
pub const MODE_MASK: u32 = 0o7777;
const S_ISUID: u32 = 0o4000;
const S_ISGID: u32 = 0o2000;
const S_IXGRP: u32 = 0o0010;

/// One logged, deterministic mutation of the [`Engine`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Mkdir {
        op: OpId,
        parent: InodeId,
        name: String,
        mode: u32,
        uid: u32,
        gid: u32,
        time: Timestamp,
    },
    Create {
        op: OpId,
        parent: InodeId,
        name: String,
        mode: u32,
        uid: u32,
        gid: u32,
        exclusive: bool,
        time: Timestamp,
    },
    /// `flags`: 0, `RENAME_NOREPLACE` or `RENAME_EXCHANGE`.
    Rename {
        op: OpId,
        src_parent: InodeId,
        src_name: String,
        dst_parent: InodeId,
        dst_name: String,
        flags: u32,
        time: Timestamp,
    },
    Unlink {
        op: OpId,
        parent: InodeId,
        name: String,
        time: Timestamp,
    },
    Rmdir {
        op: OpId,
        parent: InodeId,
        name: String,
        time: Timestamp,
    },
    SetAttr {
        op: OpId,
        inode: InodeId,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<Timestamp>,
        mtime: Option<Timestamp>,
        /// Clear S_ISUID (and S_ISGID when S_IXGRP is set) on a non-directory, after `mode`.
        clear_suid: bool,
        time: Timestamp,
    },
    CommitSize {
        op: OpId,
        inode: InodeId,
        end: u64,
        mtime: Timestamp,
        time: Timestamp,
    },
    Symlink {
        op: OpId,
        parent: InodeId,
        name: String,
        target: String,
        uid: u32,
        gid: u32,
        time: Timestamp,
    },
    /// A fifo, device, socket or empty regular file.
    Mknod {
        op: OpId,
        parent: InodeId,
        name: String,
        kind: FileKind,
        mode: u32,
        rdev: u32,
        uid: u32,
        gid: u32,
        time: Timestamp,
    },
    Link {
        op: OpId,
        inode: InodeId,
        new_parent: InodeId,
        new_name: String,
        time: Timestamp,
    },
    SetXattr {
        op: OpId,
        inode: InodeId,
        name: String,
        value: Vec<u8>,
        flags: XattrFlags,
        time: Timestamp,
    },
    RemoveXattr {
        op: OpId,
        inode: InodeId,
        name: String,
        time: Timestamp,
    },
    /// Add (`hold`) or remove the hold of `client` on `inode`. Dropping the last hold of an
    /// orphan drops it and its chunks.
    HoldOpen {
        op: OpId,
        inode: InodeId,
        client: ClientId,
        hold: bool,
    },
    /// Drop every hold of a client that went away (orphans it held last are dropped).
    DropClientHolds { client: ClientId },
    /// Give chunk `index` of the file a new handle at version 1 (error AlreadyExists if it has one).
    AllocateChunk {
        inode: InodeId,
        index: u64,
        time: Timestamp,
    },
    /// version += 1 (before a lease grant).
    BumpVersion { handle: ChunkHandle },
    /// Raise the version to `version` if it is lower (the replicas took a bump first; a no-op
    /// when it is already there). Unknown handles are `ChunkNotFound`.
    SetVersion {
        handle: ChunkHandle,
        version: ChunkVersion,
    },
    /// Set (`Some`) or delete (`None`) a service record: state that services hosted by the
    /// master (the MapReduce coordinator) keep in the replicated state machine, opaque to it.
    PutRecord { key: String, value: Option<Vec<u8>> },
    // Commands added with checkpoint format 3 (trash and replication goals). New variants go
    // at the end so that older log records still decode.
    /// Keep regular files whose last name went in the trash (`ms > 0`) or drop them at once
    /// (`ms == 0`). Logged by the master at startup when its configuration differs from the
    /// state, so replay never depends on the configuration of a later start.
    SetTrashRetention { ms: u64 },
    /// Put a trashed file back under `path` (its original path if `None`): `NotFound` if it is
    /// not in the trash or the parent directory is gone, `AlreadyExists` if the name is taken.
    RestoreTrash {
        op: OpId,
        inode: InodeId,
        path: Option<String>,
        time: Timestamp,
    },
    /// Drop the trashed files deleted before `before` (all of them if `None`) with their
    /// chunks. Output: the number dropped.
    PurgeTrash { op: OpId, before: Option<Timestamp> },
    /// Set the replication goal (1..=255) of an inode; with `recursive`, of every inode in a
    /// directory's subtree too. Output: the number of inodes whose goal changed.
    SetGoal {
        op: OpId,
        inode: InodeId,
        goal: u32,
        recursive: bool,
    },
    /// Several commands in one log entry, applied in order as if logged one after another
    /// (each with its own `OpId` and session check). Raft masters group concurrent requests
    /// this way so that one log write and one replication round commit them all. Output:
    /// [`Output::Batch`], one result per command. A batch inside a batch is refused.
    Batch(Vec<Command>),
    /// [`Command::Create`], then the hold of `op.client` on the file it returns (as
    /// [`Command::HoldOpen`]): a mount's create(2) in one record. Nothing is held when the
    /// create fails.
    CreateHeld {
        op: OpId,
        parent: InodeId,
        name: String,
        mode: u32,
        uid: u32,
        gid: u32,
        exclusive: bool,
        time: Timestamp,
    },
    /// [`Command::HoldOpen`] with `hold: true`, except that a regular file in the trash is
    /// taken back as an open orphan first (its last name went, elsewhere, between an open and
    /// the open's hold, which a mount does not wait for on a read-only open); it returns to the
    /// trash with its path and deletion time when its last hold goes. `NotFound` for an inode
    /// neither live nor in the trash.
    HoldOpenFromTrash {
        op: OpId,
        inode: InodeId,
        client: ClientId,
    },
    /// Give chunk `index` of `inode`, still `handle` at version 1, a new handle at version 1,
    /// and drop `handle` from the table. Version 1 was never granted (a grant creates the
    /// replicas at 2, then logs 2, then hands out a lease), so the chunk holds no data; a grant
    /// that must place it again does so under a new handle. Replicas an earlier attempt created
    /// at 2 without logging it (a master crash, a lost reply) are then of a handle the table no
    /// longer has, and their servers delete them at their next report, instead of reporting
    /// version 2 later and becoming locations without the data. `Unavailable` if the chunk at
    /// `index` is no longer `handle` at version 1 (the caller looks again).
    ReplaceChunk {
        inode: InodeId,
        index: u64,
        handle: ChunkHandle,
    },
}

/// Longest record key, and largest record value, in bytes.
pub const MAX_RECORD_KEY_BYTES: usize = 255;
pub const MAX_RECORD_VALUE_BYTES: usize = 8 << 20;

impl Command {
    /// The request id of a client-originated command (`None` for chunk-table maintenance).
    pub fn op(&self) -> Option<OpId> {
        match self {
            Command::Mkdir { op, .. }
            | Command::Create { op, .. }
            | Command::Rename { op, .. }
            | Command::Unlink { op, .. }
            | Command::Rmdir { op, .. }
            | Command::SetAttr { op, .. }
            | Command::CommitSize { op, .. }
            | Command::Symlink { op, .. }
            | Command::Mknod { op, .. }
            | Command::Link { op, .. }
            | Command::SetXattr { op, .. }
            | Command::RemoveXattr { op, .. }
            | Command::HoldOpen { op, .. }
            | Command::RestoreTrash { op, .. }
            | Command::PurgeTrash { op, .. }
            | Command::SetGoal { op, .. }
            | Command::CreateHeld { op, .. }
            | Command::HoldOpenFromTrash { op, .. } => Some(*op),
            Command::DropClientHolds { .. }
            | Command::AllocateChunk { .. }
            | Command::ReplaceChunk { .. }
            | Command::BumpVersion { .. }
            | Command::SetVersion { .. }
            | Command::PutRecord { .. }
            | Command::SetTrashRetention { .. }
            | Command::Batch(_) => None,
        }
    }
}

/// What a successful [`Engine::apply`] returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Output {
    Attr(Attr),
    Unit,
    Chunk {
        handle: ChunkHandle,
        version: ChunkVersion,
    },
    /// How many items a command affected (files purged, goals changed).
    Count(u64),
    /// The result of each command of a [`Command::Batch`], in order.
    Batch(Vec<Result<Output, FsError>>),
}

/// One row of the chunk table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkInfo {
    pub inode: InodeId,
    pub index: u64,
    pub version: ChunkVersion,
}

/// Namespace totals (for StatFs and status pages). Orphans count until they are dropped;
/// trashed files count only in `trash_files` and `trash_bytes`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Regular files and special files (fifos, devices, sockets); each inode once, however many
    /// links it has.
    pub files: u64,
    pub directories: u64,
    pub symlinks: u64,
    /// Every row of the chunk table, the chunks of trashed files included.
    pub chunks: u64,
    /// Sum of the sizes of regular files.
    pub bytes: u64,
    /// Files in the trash, and the sum of their sizes.
    pub trash_files: u64,
    pub trash_bytes: u64,
}

/// Replication goal of the root of a fresh namespace unless set otherwise
/// ([`Engine::with_root_goal`]).
pub const DEFAULT_GOAL: u32 = 3;
/// Largest replication goal.
pub const MAX_GOAL: u32 = 255;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Data {
    /// `parent`: the directory holding its only entry, `name`: that entry's name (the root is
    /// its own parent, with an empty name).
    Dir {
        parent: InodeId,
        name: String,
        entries: BTreeMap<String, InodeId>,
    },
    File {
        chunks: BTreeMap<u64, ChunkHandle>,
    },
    Symlink {
        target: String,
    },
    /// Fifo, device or socket: `attr` says which.
    Special,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Inode {
    /// `attr.nlink` is the link count of a non-directory (its number of entries).
    attr: Attr,
    xattrs: BTreeMap<String, Vec<u8>>,
    data: Data,
    /// Replication goal, 1..=[`MAX_GOAL`]: new chunks of a file get this many replicas; a new
    /// inode inherits its parent directory's.
    goal: u32,
}

/// A regular file in the trash: out of `inodes`, named by no entry, its chunks still in the
/// chunk table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Trashed {
    path: String,
    deleted: Timestamp,
    inode: Inode,
}

impl Inode {
    fn is_dir(&self) -> bool {
        matches!(self.data, Data::Dir { .. })
    }

    fn xattr_bytes(&self) -> usize {
        self.xattrs.iter().map(|(k, v)| k.len() + v.len()).sum()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Session {
    /// Results of this client's most recent successful requests, by sequence number. A client
    /// may have several requests in flight, so they can arrive out of order.
    results: BTreeMap<u64, Output>,
    /// Every sequence number at or below this was applied and forgotten (or is too old).
    floor: u64,
    /// Position in `Sessions::lru`.
    tick: u64,
}

/// Exactly-once table: the recent results of each client, least recently used clients evicted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Sessions {
    limit: usize,
    tick: u64,
    by_client: BTreeMap<ClientId, Session>,
    lru: BTreeMap<u64, ClientId>,
}

/// Results remembered per client: a client keeps fewer requests than this in flight.
pub const SESSION_WINDOW: usize = 256;

enum Seen {
    Done(Output),
    Stale,
    New,
}

impl Sessions {
    fn seen(&self, client: ClientId, seq: u64) -> Seen {
        match self.by_client.get(&client) {
            None => Seen::New,
            Some(s) => match s.results.get(&seq) {
                Some(out) => Seen::Done(out.clone()),
                None if seq <= s.floor => Seen::Stale,
                None => Seen::New,
            },
        }
    }

    fn record(&mut self, client: ClientId, seq: u64, result: Output) {
        self.tick += 1;
        let tick = self.tick;
        let session = self.by_client.entry(client).or_insert_with(|| Session {
            results: BTreeMap::new(),
            floor: 0,
            tick,
        });
        self.lru.remove(&session.tick);
        session.tick = tick;
        session.results.insert(seq, result);
        while session.results.len() > SESSION_WINDOW {
            if let Some((old, _)) = session.results.pop_first() {
                session.floor = session.floor.max(old);
            }
        }
        self.lru.insert(tick, client);
        while self.by_client.len() > self.limit {
            let Some((_, victim)) = self.lru.pop_first() else {
                break;
            };
            self.by_client.remove(&victim);
        }
    }
}

/// The namespace and chunk table. `Serialize` is the checkpoint format.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Engine {
    chunk_size: u64,
    next_inode: u64,
    next_handle: u64,
    inodes: BTreeMap<InodeId, Inode>,
    chunks: BTreeMap<ChunkHandle, ChunkInfo>,
    counts: Counts,
    sessions: Sessions,
    /// Open holds by inode, and the same pairs by client (for [`Command::DropClientHolds`]).
    holds: BTreeMap<InodeId, BTreeSet<ClientId>>,
    holds_by_client: BTreeSet<(ClientId, InodeId)>,
    /// Service records ([`Command::PutRecord`]).
    records: BTreeMap<String, Vec<u8>>,
    /// Trash retention ([`Command::SetTrashRetention`]); 0 = no trash.
    trash_retention_ms: u64,
    /// Trashed regular files by inode, and the same by deletion time.
    trash: BTreeMap<InodeId, Trashed>,
    trash_by_time: BTreeSet<(Timestamp, InodeId)>,
    /// Where and when the last name of each orphaned regular file went (its trash record once
    /// its last hold goes).
    orphaned: BTreeMap<InodeId, (String, Timestamp)>,
}

fn stale() -> FsError {
    FsError::InvalidArgument("stale request".into())
}

fn validate_xattr_name(name: &str) -> Result<(), FsError> {
    if name.is_empty() || name.len() > MAX_XATTR_NAME_BYTES {
        return Err(FsError::OutOfRange(format!(
            "attribute name of {} bytes",
            name.len()
        )));
    }
    if name.contains('\0') {
        return Err(FsError::InvalidArgument("NUL in attribute name".into()));
    }
    Ok(())
}

impl Engine {
    /// An empty namespace: the root directory (inode 1, mode 0o755, owned by 0:0) created at `time`.
    pub fn new(chunk_size: u64, time: Timestamp) -> Engine {
        assert!(chunk_size > 0, "chunk size must be positive");
        let root = Inode {
            attr: Self::new_attr(InodeId::ROOT, FileKind::Directory, 0o755, 0, 0, time),
            xattrs: BTreeMap::new(),
            data: Data::Dir {
                parent: InodeId::ROOT,
                name: String::new(),
                entries: BTreeMap::new(),
            },
            goal: DEFAULT_GOAL,
        };
        Engine {
            chunk_size,
            next_inode: InodeId::ROOT.0 + 1,
            next_handle: 1,
            inodes: BTreeMap::from([(InodeId::ROOT, root)]),
            chunks: BTreeMap::new(),
            counts: Counts {
                directories: 1,
                ..Counts::default()
            },
            sessions: Sessions {
                limit: DEFAULT_SESSION_LIMIT,
                tick: 0,
                by_client: BTreeMap::new(),
                lru: BTreeMap::new(),
            },
            holds: BTreeMap::new(),
            holds_by_client: BTreeSet::new(),
            records: BTreeMap::new(),
            trash_retention_ms: 0,
            trash: BTreeMap::new(),
            trash_by_time: BTreeSet::new(),
            orphaned: BTreeMap::new(),
        }
    }

    /// Set the root's replication goal (clamped to 1..=[`MAX_GOAL`]); for a fresh namespace,
    /// before anything is logged (checkpoint 0 then pins it).
    pub fn with_root_goal(mut self, goal: u32) -> Engine {
        self.inode_mut(InodeId::ROOT).goal = goal.clamp(1, MAX_GOAL);
        self
    }

    /// Change the bound of the exactly-once session table (default [`DEFAULT_SESSION_LIMIT`]).
    /// Part of the state: set it identically wherever the same log is replayed.
    pub fn with_session_limit(mut self, limit: usize) -> Engine {
        self.sessions.limit = limit.max(1);
        self
    }

    /// The service records whose key starts with `prefix`, in key order.
    pub fn records(&self, prefix: &str) -> Vec<(String, Vec<u8>)> {
        self.records
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    pub fn chunk_size(&self) -> u64 {
        self.chunk_size
    }

    /// Apply one logged command. Deterministic: depends only on `self` and `cmd`.
    /// A failed command changes nothing and returns the error.
    pub fn apply(&mut self, cmd: &Command) -> Result<Output, FsError> {
        if let Command::Batch(cmds) = cmd {
            let results = cmds
                .iter()
                .map(|c| match c {
                    Command::Batch(_) => {
                        Err(FsError::InvalidArgument("a batch inside a batch".into()))
                    }
                    c => self.apply(c),
                })
                .collect();
            return Ok(Output::Batch(results));
        }
        let op = cmd.op().filter(|op| op.client.0 != 0);
        if let Some(op) = op {
            match self.sessions.seen(op.client, op.seq) {
                Seen::Done(out) => return Ok(out),
                Seen::Stale => return Err(stale()),
                Seen::New => {}
            }
        }
        let out = self.apply_inner(cmd)?;
        if let Some(op) = op {
            self.sessions.record(op.client, op.seq, out.clone());
        }
        Ok(out)
    }

    fn apply_inner(&mut self, cmd: &Command) -> Result<Output, FsError> {
        match cmd {
            Command::Mkdir {
                parent,
                name,
                mode,
                uid,
                gid,
                time,
                ..
            } => self.mkdir(*parent, name, *mode, *uid, *gid, *time),
            Command::Create {
                parent,
                name,
                mode,
                uid,
                gid,
                exclusive,
                time,
                ..
            } => self.create(*parent, name, *mode, *uid, *gid, *exclusive, *time),
            Command::HoldOpenFromTrash { inode, client, .. } => {
                if !self.inodes.contains_key(inode) {
                    self.untrash_as_orphan(*inode);
                }
                self.hold_open(*inode, *client, true)
            }
            Command::CreateHeld {
                op,
                parent,
                name,
                mode,
                uid,
                gid,
                exclusive,
                time,
            } => {
                let out = self.create(*parent, name, *mode, *uid, *gid, *exclusive, *time)?;
                if let Output::Attr(attr) = &out {
                    self.hold_open(attr.inode, op.client, true)?;
                }
                Ok(out)
            }
            Command::Rename {
                src_parent,
                src_name,
                dst_parent,
                dst_name,
                flags,
                time,
                ..
            } => self.rename(*src_parent, src_name, *dst_parent, dst_name, *flags, *time),
            Command::Unlink {
                parent, name, time, ..
            } => self.unlink(*parent, name, *time),
            Command::Rmdir {
                parent, name, time, ..
            } => self.rmdir(*parent, name, *time),
            Command::SetAttr {
                inode,
                mode,
                uid,
                gid,
                size,
                atime,
                mtime,
                clear_suid,
                time,
                ..
            } => self.setattr(
                *inode,
                SetAttrArgs {
                    mode: *mode,
                    uid: *uid,
                    gid: *gid,
                    size: *size,
                    atime: *atime,
                    mtime: *mtime,
                    clear_suid: *clear_suid,
                },
                *time,
            ),
            Command::CommitSize {
                inode,
                end,
                mtime,
                time,
                ..
            } => self.commit_size(*inode, *end, *mtime, *time),
            Command::Symlink {
                parent,
                name,
                target,
                uid,
                gid,
                time,
                ..
            } => self.symlink(*parent, name, target, *uid, *gid, *time),
            Command::Mknod {
                parent,
                name,
                kind,
                mode,
                rdev,
                uid,
                gid,
                time,
                ..
            } => self.mknod(*parent, name, *kind, *mode, *rdev, *uid, *gid, *time),
            Command::Link {
                inode,
                new_parent,
                new_name,
                time,
                ..
            } => self.link(*inode, *new_parent, new_name, *time),
            Command::SetXattr {
                inode,
                name,
                value,
                flags,
                time,
                ..
            } => self.set_xattr(*inode, name, value, *flags, *time),
            Command::RemoveXattr {
                inode, name, time, ..
            } => self.remove_xattr(*inode, name, *time),
            Command::HoldOpen {
                inode,
                client,
                hold,
                ..
            } => self.hold_open(*inode, *client, *hold),
            Command::DropClientHolds { client } => {
                let held: Vec<InodeId> = self
                    .holds_by_client
                    .range((*client, InodeId(0))..=(*client, InodeId(u64::MAX)))
                    .map(|(_, i)| *i)
                    .collect();
                for inode in held {
                    self.release(inode, *client);
                }
                Ok(Output::Unit)
            }
            Command::AllocateChunk { inode, index, .. } => self.allocate_chunk(*inode, *index),
            Command::ReplaceChunk {
                inode,
                index,
                handle,
            } => self.replace_chunk(*inode, *index, *handle),
            Command::BumpVersion { handle } => self.bump_version(*handle),
            Command::SetVersion { handle, version } => {
                let info = self
                    .chunks
                    .get_mut(handle)
                    .ok_or(FsError::ChunkNotFound(handle.0))?;
                info.version = info.version.max(*version);
                Ok(Output::Chunk {
                    handle: *handle,
                    version: info.version,
                })
            }
            Command::PutRecord { key, value } => {
                if key.is_empty() || key.len() > MAX_RECORD_KEY_BYTES {
                    return Err(FsError::OutOfRange(format!(
                        "record key of {} bytes",
                        key.len()
                    )));
                }
                match value {
                    Some(v) if v.len() > MAX_RECORD_VALUE_BYTES => Err(FsError::OutOfRange(
                        format!("record value of {} bytes", v.len()),
                    )),
                    Some(v) => {
                        self.records.insert(key.clone(), v.clone());
                        Ok(Output::Unit)
                    }
                    None => {
                        self.records.remove(key);
                        Ok(Output::Unit)
                    }
                }
            }
            Command::SetTrashRetention { ms } => {
                self.trash_retention_ms = *ms;
                Ok(Output::Unit)
            }
            Command::Batch(_) => Err(FsError::InvalidArgument(
                "a batch is applied by Engine::apply".into(),
            )),
            Command::RestoreTrash {
                inode, path, time, ..
            } => self.restore_trash(*inode, path.as_deref(), *time),
            Command::PurgeTrash { before, .. } => Ok(Output::Count(self.purge_trash(*before))),
            Command::SetGoal {
                inode,
                goal,
                recursive,
                ..
            } => self.set_goal(*inode, *goal, *recursive),
        }
    }

    // ---- helpers ----

    fn inode(&self, id: InodeId) -> Result<&Inode, FsError> {
        self.inodes.get(&id).ok_or(FsError::NotFound)
    }

    fn inode_mut(&mut self, id: InodeId) -> &mut Inode {
        self.inodes
            .get_mut(&id)
            .expect("inode validated before mutation")
    }

    fn entries(&self, dir: InodeId) -> Result<&BTreeMap<String, InodeId>, FsError> {
        match &self.inode(dir)?.data {
            Data::Dir { entries, .. } => Ok(entries),
            _ => Err(FsError::NotADirectory),
        }
    }

    fn entries_mut(&mut self, dir: InodeId) -> &mut BTreeMap<String, InodeId> {
        match &mut self.inode_mut(dir).data {
            Data::Dir { entries, .. } => entries,
            _ => panic!("directory validated before mutation"),
        }
    }

    /// A directory's entry moved: it is now `new_parent/new_name`.
    fn set_dir_link(&mut self, dir: InodeId, new_parent: InodeId, new_name: &str) {
        if let Data::Dir { parent, name, .. } = &mut self.inode_mut(dir).data {
            *parent = new_parent;
            new_name.clone_into(name);
        }
    }

    /// The absolute path of the entry `name` in directory `dir` (through the parent pointers).
    fn path_of(&self, dir: InodeId, name: &str) -> String {
        let mut parts = vec![name];
        let mut cur = dir;
        while cur != InodeId::ROOT {
            match self.inodes.get(&cur).map(|i| &i.data) {
                Some(Data::Dir { parent, name, .. }) => {
                    parts.push(name);
                    cur = *parent;
                }
                _ => break,
            }
        }
        let mut path = String::new();
        for p in parts.iter().rev() {
            path.push('/');
            path.push_str(p);
        }
        path
    }

    /// Validated name and parent directory, then the entry's inode if the name exists.
    fn child(&self, parent: InodeId, name: &str) -> Result<Option<InodeId>, FsError> {
        validate_name(name)?;
        Ok(self.entries(parent)?.get(name).copied())
    }

    /// Like [`Engine::child`], and the name must be free (`AlreadyExists`).
    fn free_name(&self, parent: InodeId, name: &str) -> Result<(), FsError> {
        match self.child(parent, name)? {
            Some(_) => Err(FsError::AlreadyExists),
            None => Ok(()),
        }
    }

    fn touch_dir(&mut self, dir: InodeId, time: Timestamp) {
        let a = &mut self.inode_mut(dir).attr;
        a.mtime = time;
        a.ctime = time;
    }

    fn alloc_inode(&mut self) -> InodeId {
        let id = InodeId(self.next_inode);
        self.next_inode += 1;
        id
    }

    fn new_attr(
        id: InodeId,
        kind: FileKind,
        mode: u32,
        uid: u32,
        gid: u32,
        time: Timestamp,
    ) -> Attr {
        Attr {
            inode: id,
            kind,
            mode: mode & MODE_MASK,
            uid,
            gid,
            size: 0,
            nlink: if kind == FileKind::Directory { 2 } else { 1 },
            rdev: 0,
            atime: time,
            mtime: time,
            ctime: time,
            crtime: time,
        }
    }

    /// Insert a new inode under `parent/name` (validated free) and count it. It inherits the
    /// parent's replication goal.
    fn insert_new(&mut self, parent: InodeId, name: &str, attr: Attr, data: Data, time: Timestamp) {
        let id = attr.inode;
        let goal = self.inode_mut(parent).goal;
        match attr.kind {
            FileKind::Directory => {
                self.counts.directories += 1;
                self.inode_mut(parent).attr.nlink += 1;
            }
            FileKind::Symlink => self.counts.symlinks += 1,
            _ => self.counts.files += 1,
        }
        self.inodes.insert(
            id,
            Inode {
                attr,
                xattrs: BTreeMap::new(),
                data,
                goal,
            },
        );
        self.entries_mut(parent).insert(name.to_owned(), id);
        self.touch_dir(parent, time);
    }

    fn is_held(&self, id: InodeId) -> bool {
        self.holds.contains_key(&id)
    }

    /// The entry `parent/name` naming the non-directory `id` went away (the caller removed
    /// it): nlink -= 1, ctime. At nlink 0 a held regular file becomes an orphan that remembers
    /// this path and time; an unheld one goes to the trash if it is kept, else it is dropped
    /// with its chunks (as is any other kind).
    fn drop_link(&mut self, id: InodeId, parent: InodeId, name: &str, time: Timestamp) {
        let a = &mut self.inode_mut(id).attr;
        a.nlink -= 1;
        a.ctime = time;
        if a.nlink > 0 {
            return;
        }
        let is_file = a.kind == FileKind::File;
        let held = self.is_held(id);
        if is_file && (held || self.trash_retention_ms > 0) {
            let path = self.path_of(parent, name);
            if held {
                self.orphaned.insert(id, (path, time));
            } else {
                self.move_to_trash(id, path, time);
            }
        } else if !held {
            self.drop_file(id);
        }
    }

    /// Move the unnamed, unheld regular file `id` to the trash.
    fn move_to_trash(&mut self, id: InodeId, path: String, deleted: Timestamp) {
        debug_assert!(!self.is_held(id));
        let inode = self.inodes.remove(&id).expect("inode exists");
        debug_assert_eq!(inode.attr.nlink, 0);
        self.counts.files -= 1;
        self.counts.bytes -= inode.attr.size;
        self.counts.trash_files += 1;
        self.counts.trash_bytes += inode.attr.size;
        self.trash_by_time.insert((deleted, id));
        self.trash.insert(
            id,
            Trashed {
                path,
                deleted,
                inode,
            },
        );
    }

    /// [`Command::HoldOpenFromTrash`] on a file in the trash: its last name went (elsewhere)
    /// between an open and the open's hold. The file becomes an open orphan again, and goes
    /// back to the trash with its first path and deletion time when its last hold goes
    /// ([`Engine::release`]). Returns whether `id` was in the trash.
    fn untrash_as_orphan(&mut self, id: InodeId) -> bool {
        let Some(t) = self.trash.remove(&id) else {
            return false;
        };
        self.trash_by_time.remove(&(t.deleted, id));
        let size = t.inode.attr.size;
        self.counts.trash_files -= 1;
        self.counts.trash_bytes -= size;
        self.counts.files += 1;
        self.counts.bytes += size;
        self.inodes.insert(id, t.inode);
        self.orphaned.insert(id, (t.path, t.deleted));
        true
    }

    /// Drop a non-directory inode whose last link and last hold went away, with its chunks.
    fn drop_file(&mut self, id: InodeId) {
        debug_assert!(!self.is_held(id));
        let ino = self.inodes.remove(&id).expect("inode exists");
        debug_assert_eq!(ino.attr.nlink, 0);
        if let Data::File { chunks } = ino.data {
            for handle in chunks.values() {
                self.chunks.remove(handle);
            }
            self.counts.chunks -= chunks.len() as u64;
            self.counts.bytes -= ino.attr.size;
        }
        match ino.attr.kind {
            FileKind::Symlink => self.counts.symlinks -= 1,
            FileKind::Directory => unreachable!("drop_file on a directory"),
            _ => self.counts.files -= 1,
        }
    }

    fn drop_empty_dir(&mut self, id: InodeId) {
        let ino = self.inodes.remove(&id).expect("inode exists");
        debug_assert!(matches!(&ino.data, Data::Dir { entries, .. } if entries.is_empty()));
        self.counts.directories -= 1;
    }

    /// Remove `client`'s hold on `id` (if any); drop an orphan whose last hold it was.
    fn release(&mut self, id: InodeId, client: ClientId) {
        self.holds_by_client.remove(&(client, id));
        let Some(set) = self.holds.get_mut(&id) else {
            return;
        };
        set.remove(&client);
        if set.is_empty() {
            self.holds.remove(&id);
            if self.inodes.get(&id).is_some_and(|i| i.attr.nlink == 0) {
                match self.orphaned.remove(&id) {
                    Some((path, deleted)) if self.trash_retention_ms > 0 => {
                        self.move_to_trash(id, path, deleted)
                    }
                    _ => self.drop_file(id),
                }
            }
        }
    }

    fn regular_file(&self, id: InodeId) -> Result<&Inode, FsError> {
        let ino = self.inode(id)?;
        match ino.attr.kind {
            FileKind::File => Ok(ino),
            FileKind::Directory => Err(FsError::IsADirectory),
            _ => Err(FsError::InvalidArgument("not a regular file".into())),
        }
    }

    // ---- mutations ----

    fn mkdir(
        &mut self,
        parent: InodeId,
        name: &str,
        mode: u32,
        uid: u32,
        gid: u32,
        time: Timestamp,
    ) -> Result<Output, FsError> {
        self.free_name(parent, name)?;
        let id = self.alloc_inode();
        let attr = Self::new_attr(id, FileKind::Directory, mode, uid, gid, time);
        let data = Data::Dir {
            parent,
            name: name.to_owned(),
            entries: BTreeMap::new(),
        };
        self.insert_new(parent, name, attr.clone(), data, time);
        Ok(Output::Attr(attr))
    }

    #[allow(clippy::too_many_arguments)]
    fn create(
        &mut self,
        parent: InodeId,
        name: &str,
        mode: u32,
        uid: u32,
        gid: u32,
        exclusive: bool,
        time: Timestamp,
    ) -> Result<Output, FsError> {
        if let Some(existing) = self.child(parent, name)? {
            if exclusive {
                return Err(FsError::AlreadyExists);
            }
            let ino = self.regular_file(existing)?;
            return Ok(Output::Attr(ino.attr.clone()));
        }
        let id = self.alloc_inode();
        let attr = Self::new_attr(id, FileKind::File, mode, uid, gid, time);
        let data = Data::File {
            chunks: BTreeMap::new(),
        };
        self.insert_new(parent, name, attr.clone(), data, time);
        Ok(Output::Attr(attr))
    }

    fn symlink(
        &mut self,
        parent: InodeId,
        name: &str,
        target: &str,
        uid: u32,
        gid: u32,
        time: Timestamp,
    ) -> Result<Output, FsError> {
        if target.is_empty() {
            return Err(FsError::NotFound);
        }
        if target.len() > MAX_SYMLINK_BYTES {
            return Err(FsError::NameTooLong);
        }
        if target.contains('\0') {
            return Err(FsError::InvalidArgument("NUL in symlink target".into()));
        }
        self.free_name(parent, name)?;
        let id = self.alloc_inode();
        let mut attr = Self::new_attr(id, FileKind::Symlink, 0o777, uid, gid, time);
        attr.size = target.len() as u64;
        let data = Data::Symlink {
            target: target.to_owned(),
        };
        self.insert_new(parent, name, attr.clone(), data, time);
        Ok(Output::Attr(attr))
    }

    #[allow(clippy::too_many_arguments)]
    fn mknod(
        &mut self,
        parent: InodeId,
        name: &str,
        kind: FileKind,
        mode: u32,
        rdev: u32,
        uid: u32,
        gid: u32,
        time: Timestamp,
    ) -> Result<Output, FsError> {
        let data = match kind {
            FileKind::File => Data::File {
                chunks: BTreeMap::new(),
            },
            FileKind::Fifo | FileKind::CharDevice | FileKind::BlockDevice | FileKind::Socket => {
                Data::Special
            }
            FileKind::Directory | FileKind::Symlink => {
                return Err(FsError::InvalidArgument(format!(
                    "mknod cannot make a {kind:?}"
                )))
            }
        };
        self.free_name(parent, name)?;
        let id = self.alloc_inode();
        let mut attr = Self::new_attr(id, kind, mode, uid, gid, time);
        if matches!(kind, FileKind::CharDevice | FileKind::BlockDevice) {
            attr.rdev = rdev;
        }
        self.insert_new(parent, name, attr.clone(), data, time);
        Ok(Output::Attr(attr))
    }

    fn link(
        &mut self,
        inode: InodeId,
        new_parent: InodeId,
        new_name: &str,
        time: Timestamp,
    ) -> Result<Output, FsError> {
        let ino = self.inode(inode)?;
        if ino.is_dir() {
            return Err(FsError::NotPermitted("hard link to a directory".into()));
        }
        if ino.attr.nlink == 0 {
            return Err(FsError::NotFound);
        }
        if ino.attr.nlink >= MAX_LINKS {
            return Err(FsError::TooManyLinks);
        }
        self.free_name(new_parent, new_name)?;
        self.entries_mut(new_parent)
            .insert(new_name.to_owned(), inode);
        self.touch_dir(new_parent, time);
        let a = &mut self.inode_mut(inode).attr;
        a.nlink += 1;
        a.ctime = time;
        Ok(Output::Attr(a.clone()))
    }

    /// Whether `ancestor` is `dir` or one of its ancestors.
    fn is_ancestor_or_self(&self, ancestor: InodeId, mut dir: InodeId) -> bool {
        loop {
            if dir == ancestor {
                return true;
            }
            if dir == InodeId::ROOT {
                return false;
            }
            match self.inodes.get(&dir).map(|i| &i.data) {
                Some(Data::Dir { parent, .. }) => dir = *parent,
                _ => return false,
            }
        }
    }

    fn rename(
        &mut self,
        src_parent: InodeId,
        src_name: &str,
        dst_parent: InodeId,
        dst_name: &str,
        flags: u32,
        time: Timestamp,
    ) -> Result<Output, FsError> {
        if flags & !(RENAME_NOREPLACE | RENAME_EXCHANGE) != 0
            || flags == RENAME_NOREPLACE | RENAME_EXCHANGE
        {
            return Err(FsError::InvalidArgument(format!("rename flags {flags:#x}")));
        }
        let src = self.child(src_parent, src_name)?;
        let dst = self.child(dst_parent, dst_name)?;
        let src = src.ok_or(FsError::NotFound)?;
        if flags == RENAME_EXCHANGE {
            let dst = dst.ok_or(FsError::NotFound)?;
            return self.exchange(src_parent, src_name, src, dst_parent, dst_name, dst, time);
        }
        if flags == RENAME_NOREPLACE && dst.is_some() {
            return Err(FsError::AlreadyExists);
        }
        // The same entry, or two links to one inode: POSIX says do nothing.
        if dst == Some(src) {
            return Ok(Output::Unit);
        }
        let src_is_dir = self.inode(src)?.is_dir();
        if src_is_dir && self.is_ancestor_or_self(src, dst_parent) {
            return Err(FsError::InvalidArgument(
                "cannot move a directory into itself".into(),
            ));
        }
        if let Some(dst) = dst {
            let d = self.inode(dst)?;
            match (src_is_dir, &d.data) {
                (true, Data::Dir { entries, .. }) if !entries.is_empty() => {
                    return Err(FsError::DirectoryNotEmpty)
                }
                (true, Data::Dir { .. }) => {}
                (true, _) => return Err(FsError::NotADirectory),
                (false, Data::Dir { .. }) => return Err(FsError::IsADirectory),
                (false, _) => {}
            }
        }
        // Validated; mutate.
        if let Some(dst) = dst {
            self.entries_mut(dst_parent).remove(dst_name);
            if src_is_dir {
                self.drop_empty_dir(dst);
                self.inode_mut(dst_parent).attr.nlink -= 1;
            } else {
                self.drop_link(dst, dst_parent, dst_name, time);
            }
        }
        self.entries_mut(src_parent).remove(src_name);
        self.entries_mut(dst_parent)
            .insert(dst_name.to_owned(), src);
        if src_is_dir {
            self.set_dir_link(src, dst_parent, dst_name);
            if src_parent != dst_parent {
                self.inode_mut(src_parent).attr.nlink -= 1;
                self.inode_mut(dst_parent).attr.nlink += 1;
            }
        }
        self.inode_mut(src).attr.ctime = time;
        self.touch_dir(src_parent, time);
        self.touch_dir(dst_parent, time);
        Ok(Output::Unit)
    }

    /// `RENAME_EXCHANGE`: both entries exist; swap them.
    #[allow(clippy::too_many_arguments)]
    fn exchange(
        &mut self,
        src_parent: InodeId,
        src_name: &str,
        src: InodeId,
        dst_parent: InodeId,
        dst_name: &str,
        dst: InodeId,
        time: Timestamp,
    ) -> Result<Output, FsError> {
        if src == dst {
            return Ok(Output::Unit);
        }
        let src_is_dir = self.inode(src)?.is_dir();
        let dst_is_dir = self.inode(dst)?.is_dir();
        if (src_is_dir && self.is_ancestor_or_self(src, dst_parent))
            || (dst_is_dir && self.is_ancestor_or_self(dst, src_parent))
        {
            return Err(FsError::InvalidArgument(
                "cannot move a directory into itself".into(),
            ));
        }
        self.entries_mut(src_parent)
            .insert(src_name.to_owned(), dst);
        self.entries_mut(dst_parent)
            .insert(dst_name.to_owned(), src);
        if src_is_dir {
            self.set_dir_link(src, dst_parent, dst_name);
        }
        if dst_is_dir {
            self.set_dir_link(dst, src_parent, src_name);
        }
        if src_parent != dst_parent && src_is_dir != dst_is_dir {
            let (from, to) = if src_is_dir {
                (src_parent, dst_parent)
            } else {
                (dst_parent, src_parent)
            };
            self.inode_mut(from).attr.nlink -= 1;
            self.inode_mut(to).attr.nlink += 1;
        }
        self.inode_mut(src).attr.ctime = time;
        self.inode_mut(dst).attr.ctime = time;
        self.touch_dir(src_parent, time);
        self.touch_dir(dst_parent, time);
        Ok(Output::Unit)
    }

    fn unlink(&mut self, parent: InodeId, name: &str, time: Timestamp) -> Result<Output, FsError> {
        let id = self.child(parent, name)?.ok_or(FsError::NotFound)?;
        if self.inode(id)?.is_dir() {
            return Err(FsError::IsADirectory);
        }
        self.entries_mut(parent).remove(name);
        self.drop_link(id, parent, name, time);
        self.touch_dir(parent, time);
        Ok(Output::Unit)
    }

    fn rmdir(&mut self, parent: InodeId, name: &str, time: Timestamp) -> Result<Output, FsError> {
        let id = self.child(parent, name)?.ok_or(FsError::NotFound)?;
        if id == InodeId::ROOT {
            return Err(FsError::InvalidArgument("cannot remove the root".into()));
        }
        match &self.inode(id)?.data {
            Data::Dir { entries, .. } if !entries.is_empty() => {
                return Err(FsError::DirectoryNotEmpty)
            }
            Data::Dir { .. } => {}
            _ => return Err(FsError::NotADirectory),
        }
        self.entries_mut(parent).remove(name);
        self.drop_empty_dir(id);
        let p = self.inode_mut(parent);
        p.attr.nlink -= 1;
        self.touch_dir(parent, time);
        Ok(Output::Unit)
    }

    fn setattr(
        &mut self,
        inode: InodeId,
        args: SetAttrArgs,
        time: Timestamp,
    ) -> Result<Output, FsError> {
        let SetAttrArgs {
            mode,
            uid,
            gid,
            size,
            atime,
            mtime,
            clear_suid,
        } = args;
        let ino = self.inode(inode)?;
        if size.is_some() {
            self.regular_file(inode)?;
        }
        let is_dir = ino.is_dir();
        let chunk_size = self.chunk_size;
        if let Some(new_size) = size {
            // Drop chunks wholly past the new end: index * chunk_size >= new_size.
            let first_dropped = new_size.div_ceil(chunk_size);
            let ino = self.inode_mut(inode);
            let Data::File { chunks } = &mut ino.data else {
                unreachable!("checked above")
            };
            let dropped = chunks.split_off(&first_dropped);
            let old_size = std::mem::replace(&mut ino.attr.size, new_size);
            ino.attr.mtime = time;
            ino.attr.ctime = time;
            for handle in dropped.values() {
                self.chunks.remove(handle);
            }
            self.counts.chunks -= dropped.len() as u64;
            self.counts.bytes = self.counts.bytes - old_size + new_size;
        }
        let a = &mut self.inode_mut(inode).attr;
        let before = a.clone();
        if let Some(mode) = mode {
            a.mode = mode & MODE_MASK;
        }
        if clear_suid && !is_dir {
            a.mode &= !S_ISUID;
            if a.mode & S_IXGRP != 0 {
                a.mode &= !S_ISGID;
            }
        }
        if let Some(uid) = uid {
            a.uid = uid;
        }
        if let Some(gid) = gid {
            a.gid = gid;
        }
        if let Some(atime) = atime {
            a.atime = atime;
        }
        if let Some(mtime) = mtime {
            a.mtime = mtime;
        }
        if mode.is_some()
            || uid.is_some()
            || gid.is_some()
            || atime.is_some()
            || mtime.is_some()
            || a.mode != before.mode
        {
            a.ctime = time;
        }
        Ok(Output::Attr(a.clone()))
    }

    fn commit_size(
        &mut self,
        inode: InodeId,
        end: u64,
        mtime: Timestamp,
        time: Timestamp,
    ) -> Result<Output, FsError> {
        self.regular_file(inode)?;
        let a = &mut self.inode_mut(inode).attr;
        let old = a.size;
        a.size = old.max(end);
        a.mtime = mtime;
        a.ctime = time;
        let attr = a.clone();
        self.counts.bytes = self.counts.bytes - old + attr.size;
        Ok(Output::Attr(attr))
    }

    fn set_xattr(
        &mut self,
        inode: InodeId,
        name: &str,
        value: &[u8],
        flags: XattrFlags,
        time: Timestamp,
    ) -> Result<Output, FsError> {
        validate_xattr_name(name)?;
        if value.len() > MAX_XATTR_VALUE_BYTES {
            return Err(FsError::TooBig(format!(
                "attribute value of {} bytes",
                value.len()
            )));
        }
        let ino = self.inode(inode)?;
        let old = ino.xattrs.get(name);
        match (flags, old) {
            (XattrFlags::CreateOnly, Some(_)) => return Err(FsError::AlreadyExists),
            (XattrFlags::ReplaceOnly, None) => return Err(FsError::NoData),
            _ => {}
        }
        let old_bytes = old.map_or(0, |v| name.len() + v.len());
        if ino.xattr_bytes() - old_bytes + name.len() + value.len() > MAX_XATTR_TOTAL_BYTES {
            return Err(FsError::NoSpace);
        }
        let ino = self.inode_mut(inode);
        ino.xattrs.insert(name.to_owned(), value.to_vec());
        ino.attr.ctime = time;
        Ok(Output::Unit)
    }

    fn remove_xattr(
        &mut self,
        inode: InodeId,
        name: &str,
        time: Timestamp,
    ) -> Result<Output, FsError> {
        validate_xattr_name(name)?;
        if !self.inode(inode)?.xattrs.contains_key(name) {
            return Err(FsError::NoData);
        }
        let ino = self.inode_mut(inode);
        ino.xattrs.remove(name);
        ino.attr.ctime = time;
        Ok(Output::Unit)
    }

    fn hold_open(
        &mut self,
        inode: InodeId,
        client: ClientId,
        hold: bool,
    ) -> Result<Output, FsError> {
        if !hold {
            // Idempotent: releasing a hold that is gone (or an inode that is gone) succeeds.
            self.release(inode, client);
            return Ok(Output::Unit);
        }
        if self.inode(inode)?.is_dir() {
            return Ok(Output::Unit);
        }
        self.holds.entry(inode).or_default().insert(client);
        self.holds_by_client.insert((client, inode));
        Ok(Output::Unit)
    }

    fn allocate_chunk(&mut self, inode: InodeId, index: u64) -> Result<Output, FsError> {
        let ino = self.regular_file(inode)?;
        let Data::File { chunks } = &ino.data else {
            unreachable!("regular file")
        };
        if chunks.contains_key(&index) {
            return Err(FsError::AlreadyExists);
        }
        if index.checked_mul(self.chunk_size).is_none() {
            return Err(FsError::FileTooLarge);
        }
        self.counts.chunks += 1;
        Ok(self.new_chunk_at(inode, index))
    }

    /// Put a new handle at version 1 at `index` of the regular file `inode` (replacing any).
    fn new_chunk_at(&mut self, inode: InodeId, index: u64) -> Output {
        let handle = ChunkHandle(self.next_handle);
        self.next_handle += 1;
        let version = ChunkVersion(1);
        let Data::File { chunks } = &mut self.inode_mut(inode).data else {
            unreachable!("regular file")
        };
        chunks.insert(index, handle);
        self.chunks.insert(
            handle,
            ChunkInfo {
                inode,
                index,
                version,
            },
        );
        Output::Chunk { handle, version }
    }

    fn replace_chunk(
        &mut self,
        inode: InodeId,
        index: u64,
        old: ChunkHandle,
    ) -> Result<Output, FsError> {
        let ino = self.regular_file(inode)?;
        let Data::File { chunks } = &ino.data else {
            unreachable!("regular file")
        };
        let never_granted = self
            .chunks
            .get(&old)
            .is_some_and(|c| c.version == ChunkVersion(1));
        if chunks.get(&index) != Some(&old) || !never_granted {
            return Err(FsError::Unavailable(format!(
                "chunk {index} of inode {} changed while it was being placed",
                inode.0
            )));
        }
        self.chunks.remove(&old);
        Ok(self.new_chunk_at(inode, index))
    }

    fn bump_version(&mut self, handle: ChunkHandle) -> Result<Output, FsError> {
        let info = self
            .chunks
            .get_mut(&handle)
            .ok_or(FsError::ChunkNotFound(handle.0))?;
        info.version = ChunkVersion(info.version.0 + 1);
        Ok(Output::Chunk {
            handle,
            version: info.version,
        })
    }

    fn restore_trash(
        &mut self,
        id: InodeId,
        path: Option<&str>,
        time: Timestamp,
    ) -> Result<Output, FsError> {
        let entry = self.trash.get(&id).ok_or(FsError::NotFound)?;
        let path = path.unwrap_or(&entry.path);
        let names = split_path(path)?;
        let Some((name, dirs)) = names.split_last() else {
            return Err(FsError::AlreadyExists); // the root
        };
        let mut parent = InodeId::ROOT;
        for dir in dirs {
            parent = *self.entries(parent)?.get(*dir).ok_or(FsError::NotFound)?;
        }
        let name = name.to_string();
        self.free_name(parent, &name)?;
        // Validated; mutate.
        let Trashed { deleted, inode, .. } = self.trash.remove(&id).expect("checked");
        self.trash_by_time.remove(&(deleted, id));
        let size = inode.attr.size;
        self.counts.trash_files -= 1;
        self.counts.trash_bytes -= size;
        self.counts.files += 1;
        self.counts.bytes += size;
        self.inodes.insert(id, inode);
        let a = &mut self.inode_mut(id).attr;
        a.nlink = 1;
        a.ctime = time;
        let attr = a.clone();
        self.entries_mut(parent).insert(name, id);
        self.touch_dir(parent, time);
        Ok(Output::Attr(attr))
    }

    /// Drop the trashed files deleted before `before` (all if `None`); returns how many.
    fn purge_trash(&mut self, before: Option<Timestamp>) -> u64 {
        let due: Vec<(Timestamp, InodeId)> = match before {
            None => self.trash_by_time.iter().copied().collect(),
            Some(b) => self
                .trash_by_time
                .iter()
                .take_while(|(t, _)| *t < b)
                .copied()
                .collect(),
        };
        for key in &due {
            self.trash_by_time.remove(key);
            let t = self.trash.remove(&key.1).expect("indexed");
            if let Data::File { chunks } = &t.inode.data {
                for handle in chunks.values() {
                    self.chunks.remove(handle);
                }
                self.counts.chunks -= chunks.len() as u64;
            }
            self.counts.trash_files -= 1;
            self.counts.trash_bytes -= t.inode.attr.size;
        }
        due.len() as u64
    }

    fn set_goal(&mut self, id: InodeId, goal: u32, recursive: bool) -> Result<Output, FsError> {
        if !(1..=MAX_GOAL).contains(&goal) {
            return Err(FsError::InvalidArgument(format!(
                "replication goal {goal} is not in 1..={MAX_GOAL}"
            )));
        }
        self.inode(id)?;
        let mut changed = 0u64;
        let mut stack = vec![id];
        while let Some(cur) = stack.pop() {
            let ino = self.inode_mut(cur);
            if ino.goal != goal {
                ino.goal = goal;
                changed += 1;
            }
            if let (true, Data::Dir { entries, .. }) = (recursive, &ino.data) {
                stack.extend(entries.values().copied());
            }
        }
        Ok(Output::Count(changed))
    }

    // ---- queries ----

    /// The replication goal of an inode.
    pub fn goal(&self, inode: InodeId) -> Result<u32, FsError> {
        Ok(self.inode(inode)?.goal)
    }

    /// The replication goal of the file holding a chunk (trashed files included), or `None` for
    /// a handle not in the chunk table.
    pub fn goal_of_chunk(&self, handle: ChunkHandle) -> Option<u32> {
        let inode = self.chunks.get(&handle)?.inode;
        match self.inodes.get(&inode) {
            Some(i) => Some(i.goal),
            None => self.trash.get(&inode).map(|t| t.inode.goal),
        }
    }

    /// The trash retention in force ([`Command::SetTrashRetention`]); 0 = no trash.
    pub fn trash_retention_ms(&self) -> u64 {
        self.trash_retention_ms
    }

    /// Up to `limit` trashed files with inode numbers above `after`, in inode order, and
    /// whether more follow.
    pub fn trash(&self, after: Option<InodeId>, limit: u32) -> (Vec<TrashEntry>, bool) {
        use std::ops::Bound;
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut it = self.trash.range((lower, Bound::Unbounded));
        let out = it
            .by_ref()
            .take(limit as usize)
            .map(|(id, t)| TrashEntry {
                inode: *id,
                path: t.path.clone(),
                deleted: t.deleted,
                size: t.inode.attr.size,
                chunks: match &t.inode.data {
                    Data::File { chunks } => chunks.len() as u64,
                    _ => 0,
                },
            })
            .collect();
        (out, it.next().is_some())
    }

    /// The deletion time of the oldest trashed file.
    pub fn oldest_trash(&self) -> Option<Timestamp> {
        self.trash_by_time.first().map(|(t, _)| *t)
    }

    /// The chunks of the trashed files deleted before `before` (all if `None`): what
    /// [`Command::PurgeTrash`] with the same bound drops, unless the trash changes first.
    pub fn trash_chunks(&self, before: Option<Timestamp>) -> Vec<ChunkHandle> {
        self.trash_by_time
            .iter()
            .take_while(|(t, _)| before.is_none_or(|b| *t < b))
            .filter_map(|(_, id)| match &self.trash[id].inode.data {
                Data::File { chunks } => Some(chunks.values().copied()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    pub fn lookup(&self, parent: InodeId, name: &str) -> Result<Attr, FsError> {
        let id = self.child(parent, name)?.ok_or(FsError::NotFound)?;
        self.getattr(id)
    }

    /// Attributes by inode (an orphan answers too, with nlink 0).
    pub fn getattr(&self, inode: InodeId) -> Result<Attr, FsError> {
        Ok(self.inode(inode)?.attr.clone())
    }

    /// The target of a symlink (`InvalidArgument` for any other kind).
    pub fn readlink(&self, inode: InodeId) -> Result<String, FsError> {
        match &self.inode(inode)?.data {
            Data::Symlink { target } => Ok(target.clone()),
            _ => Err(FsError::InvalidArgument("not a symlink".into())),
        }
    }

    /// The value of an extended attribute (`NoData` if absent).
    pub fn get_xattr(&self, inode: InodeId, name: &str) -> Result<Vec<u8>, FsError> {
        validate_xattr_name(name)?;
        self.inode(inode)?
            .xattrs
            .get(name)
            .cloned()
            .ok_or(FsError::NoData)
    }

    /// The names of an inode's extended attributes, in byte order.
    pub fn list_xattr(&self, inode: InodeId) -> Result<Vec<String>, FsError> {
        Ok(self.inode(inode)?.xattrs.keys().cloned().collect())
    }

    /// The clients holding `inode` open.
    pub fn holders(&self, inode: InodeId) -> Vec<ClientId> {
        self.holds
            .get(&inode)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Every client holding at least one inode.
    pub fn clients_with_holds(&self) -> BTreeSet<ClientId> {
        self.holds_by_client.iter().map(|(c, _)| *c).collect()
    }

    /// The inodes `client` holds open, in order.
    pub fn held_by(&self, client: ClientId) -> Vec<InodeId> {
        self.holds_by_client
            .range((client, InodeId(0))..=(client, InodeId(u64::MAX)))
            .map(|(_, i)| *i)
            .collect()
    }

    /// Inodes with no name left, kept because they are held open.
    pub fn orphans(&self) -> Vec<InodeId> {
        self.holds
            .keys()
            .copied()
            .filter(|i| self.inodes.get(i).is_some_and(|n| n.attr.nlink == 0))
            .collect()
    }

    /// Resolve an absolute path (see [`split_path`]); `NotADirectory` if a middle component is not
    /// a directory. Symlinks are not followed.
    pub fn resolve(&self, path: &str) -> Result<Attr, FsError> {
        let mut cur = InodeId::ROOT;
        for name in split_path(path)? {
            cur = *self.entries(cur)?.get(name).ok_or(FsError::NotFound)?;
        }
        self.getattr(cur)
    }

    /// Up to `limit` entries after `after`, in name order (no `.` and `..`), and whether more follow.
    pub fn readdir(
        &self,
        inode: InodeId,
        after: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<DirEntry>, bool), FsError> {
        use std::ops::Bound;
        let entries = self.entries(inode)?;
        let lower = match after {
            Some(a) => Bound::Excluded(a),
            None => Bound::Unbounded,
        };
        let mut it = entries.range::<str, _>((lower, Bound::Unbounded));
        let mut out = Vec::new();
        for (name, id) in it.by_ref().take(limit as usize) {
            out.push(DirEntry {
                name: name.clone(),
                inode: *id,
                kind: self.inodes[id].attr.kind,
            });
        }
        Ok((out, it.next().is_some()))
    }

    /// Chunks with index in `first_index .. first_index + count` (holes omitted), in index order.
    pub fn chunks(
        &self,
        inode: InodeId,
        first_index: u64,
        count: u32,
    ) -> Result<Vec<(u64, ChunkHandle, ChunkVersion)>, FsError> {
        let ino = self.regular_file(inode)?;
        let Data::File { chunks } = &ino.data else {
            unreachable!("regular file")
        };
        let end = first_index.saturating_add(count as u64);
        Ok(chunks
            .range(first_index..end)
            .map(|(&index, &handle)| (index, handle, self.chunks[&handle].version))
            .collect())
    }

    pub fn chunk(&self, handle: ChunkHandle) -> Option<ChunkInfo> {
        self.chunks.get(&handle).copied()
    }

    pub fn chunk_at(&self, inode: InodeId, index: u64) -> Option<(ChunkHandle, ChunkVersion)> {
        match &self.inodes.get(&inode)?.data {
            Data::File { chunks } => {
                let handle = *chunks.get(&index)?;
                Some((handle, self.chunks[&handle].version))
            }
            _ => None,
        }
    }

    /// Every chunk in handle order.
    pub fn all_chunks(&self) -> impl Iterator<Item = (ChunkHandle, ChunkVersion)> + '_ {
        self.chunks.iter().map(|(h, i)| (*h, i.version))
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Check the structural invariants (for tests and debug assertions after recovery):
    /// every directory reachable from the root exactly once through consistent parent pointers;
    /// every other inode reachable, with nlink = the number of entries naming it, or an orphan
    /// (nlink 0, held open); holds consistent both ways and only on existing non-directories;
    /// kinds match data (symlink size = target length, rdev only on devices); xattr limits;
    /// directory link counts; chunk table ⇔ file chunk maps; counters; id allocators ahead of
    /// every id. Trash: trashed files are regular files out of `inodes`, unnamed, unheld, with
    /// nlink 0, indexed by deletion time, their chunks in the table; an orphan record exists
    /// exactly for each regular file with nlink 0 still in `inodes`. Goals in 1..=255;
    /// directory names match their entries.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut dirs_seen = BTreeSet::new();
        let mut links: BTreeMap<InodeId, u32> = BTreeMap::new();
        let mut stack = vec![InodeId::ROOT];
        let root = self.inodes.get(&InodeId::ROOT).ok_or("no root")?;
        if !matches!(&root.data, Data::Dir { parent, name, .. } if *parent == InodeId::ROOT && name.is_empty())
        {
            return Err("bad root".into());
        }
        dirs_seen.insert(InodeId::ROOT);
        while let Some(id) = stack.pop() {
            let ino = self.inodes.get(&id).ok_or(format!("dangling inode {id}"))?;
            let Data::Dir { entries, .. } = &ino.data else {
                return Err(format!("inode {id} on the stack is not a directory"));
            };
            let mut subdirs = 0u32;
            for (name, child) in entries {
                validate_name(name).map_err(|e| format!("bad name {name:?}: {e}"))?;
                let c = self
                    .inodes
                    .get(child)
                    .ok_or(format!("entry {name:?} -> missing inode {child}"))?;
                match &c.data {
                    Data::Dir {
                        parent,
                        name: own_name,
                        ..
                    } => {
                        if !dirs_seen.insert(*child) {
                            return Err(format!("directory {child} reachable twice"));
                        }
                        if *parent != id {
                            return Err(format!("directory {child} parent pointer wrong"));
                        }
                        if own_name != name {
                            return Err(format!(
                                "directory {child} named {own_name:?} in {name:?}"
                            ));
                        }
                        subdirs += 1;
                        stack.push(*child);
                    }
                    _ => *links.entry(*child).or_default() += 1,
                }
            }
            if ino.attr.nlink != 2 + subdirs {
                return Err(format!(
                    "dir {id} nlink {} != 2 + {subdirs}",
                    ino.attr.nlink
                ));
            }
        }
        let mut counts = Counts::default();
        let mut chunks_seen = 0u64;
        for (&id, ino) in &self.inodes {
            if ino.attr.inode != id {
                return Err(format!("inode {id} has attr.inode {}", ino.attr.inode));
            }
            if id.0 >= self.next_inode || id.0 == 0 {
                return Err(format!("inode {id} not below next_inode"));
            }
            if ino.attr.mode & !MODE_MASK != 0 {
                return Err(format!("inode {id} mode has type bits"));
            }
            if !(1..=MAX_GOAL).contains(&ino.goal) {
                return Err(format!("inode {id} goal {}", ino.goal));
            }
            if self.trash.contains_key(&id) {
                return Err(format!("inode {id} both live and in the trash"));
            }
            let orphan_file = ino.attr.kind == FileKind::File && ino.attr.nlink == 0;
            if orphan_file != self.orphaned.contains_key(&id) {
                return Err(format!("inode {id}: orphan record mismatch"));
            }
            if ino.xattr_bytes() > MAX_XATTR_TOTAL_BYTES {
                return Err(format!("inode {id} xattrs over the limit"));
            }
            for (name, value) in &ino.xattrs {
                validate_xattr_name(name).map_err(|e| format!("inode {id} xattr: {e}"))?;
                if value.len() > MAX_XATTR_VALUE_BYTES {
                    return Err(format!("inode {id} xattr {name:?} too big"));
                }
            }
            let devices = matches!(ino.attr.kind, FileKind::CharDevice | FileKind::BlockDevice);
            if !devices && ino.attr.rdev != 0 {
                return Err(format!("inode {id}: rdev on a {:?}", ino.attr.kind));
            }
            let kind_ok = match &ino.data {
                Data::Dir { .. } => ino.attr.kind == FileKind::Directory,
                Data::File { .. } => ino.attr.kind == FileKind::File,
                Data::Symlink { target } => {
                    if ino.attr.size != target.len() as u64
                        || target.is_empty()
                        || target.len() > MAX_SYMLINK_BYTES
                    {
                        return Err(format!("symlink {id} size/target mismatch"));
                    }
                    ino.attr.kind == FileKind::Symlink
                }
                Data::Special => ino.attr.kind.is_special(),
            };
            if !kind_ok {
                return Err(format!("inode {id}: kind {:?} mismatch", ino.attr.kind));
            }
            if let Data::Dir { .. } = ino.data {
                if !dirs_seen.contains(&id) {
                    return Err(format!("directory {id} unreachable"));
                }
                if self.holds.contains_key(&id) {
                    return Err(format!("directory {id} held"));
                }
                counts.directories += 1;
                continue;
            }
            let n = links.get(&id).copied().unwrap_or(0);
            if ino.attr.nlink != n {
                return Err(format!(
                    "inode {id} nlink {} != {n} entries",
                    ino.attr.nlink
                ));
            }
            if n == 0 && !self.holds.contains_key(&id) {
                return Err(format!("inode {id} unreachable and not held"));
            }
            match &ino.data {
                Data::File { chunks } => {
                    counts.files += 1;
                    counts.bytes += ino.attr.size;
                    for (&index, handle) in chunks {
                        let info = self
                            .chunks
                            .get(handle)
                            .ok_or(format!("file {id} chunk {handle} not in table"))?;
                        if info.inode != id || info.index != index {
                            return Err(format!("chunk {handle} table row mismatch"));
                        }
                        chunks_seen += 1;
                    }
                }
                Data::Symlink { .. } => counts.symlinks += 1,
                Data::Special => {
                    counts.files += 1;
                    if ino.attr.size != 0 {
                        return Err(format!("special file {id} has a size"));
                    }
                }
                Data::Dir { .. } => unreachable!(),
            }
        }
        for id in links.keys() {
            if !self.inodes.contains_key(id) {
                return Err(format!("entry to missing inode {id}"));
            }
        }
        for (id, set) in &self.holds {
            if set.is_empty() {
                return Err(format!("empty hold set for {id}"));
            }
            if !self.inodes.contains_key(id) {
                return Err(format!("hold on missing inode {id}"));
            }
            for c in set {
                if !self.holds_by_client.contains(&(*c, *id)) {
                    return Err(format!("hold ({c}, {id}) missing by client"));
                }
            }
        }
        let pairs: usize = self.holds.values().map(|s| s.len()).sum();
        if pairs != self.holds_by_client.len() {
            return Err("hold tables differ".into());
        }
        for (handle, info) in &self.chunks {
            if handle.0 >= self.next_handle || handle.0 == 0 {
                return Err(format!("chunk {handle} not below next_handle"));
            }
            if info.version.0 == 0 {
                return Err(format!("chunk {handle} at version 0"));
            }
            let file = self
                .inodes
                .get(&info.inode)
                .or(self.trash.get(&info.inode).map(|t| &t.inode));
            let in_file = match file.map(|i| &i.data) {
                Some(Data::File { chunks }) => chunks.get(&info.index) == Some(handle),
                _ => false,
            };
            if !in_file {
                return Err(format!("chunk {handle} not in its file"));
            }
        }
        let mut by_time = BTreeSet::new();
        for (&id, t) in &self.trash {
            let ino = &t.inode;
            let Data::File { chunks } = &ino.data else {
                return Err(format!("trashed inode {id} is not a regular file"));
            };
            if ino.attr.inode != id || ino.attr.kind != FileKind::File || ino.attr.nlink != 0 {
                return Err(format!("trashed inode {id} attributes"));
            }
            if id.0 >= self.next_inode || id.0 == 0 {
                return Err(format!("trashed inode {id} not below next_inode"));
            }
            if !(1..=MAX_GOAL).contains(&ino.goal) {
                return Err(format!("trashed inode {id} goal {}", ino.goal));
            }
            if links.contains_key(&id) || self.holds.contains_key(&id) {
                return Err(format!("trashed inode {id} named or held"));
            }
            if self.orphaned.contains_key(&id) {
                return Err(format!("trashed inode {id} has an orphan record"));
            }
            if !split_path(&t.path).is_ok_and(|p| !p.is_empty()) {
                return Err(format!("trashed inode {id} path {:?}", t.path));
            }
            counts.trash_files += 1;
            counts.trash_bytes += ino.attr.size;
            for (&index, handle) in chunks {
                let info = self
                    .chunks
                    .get(handle)
                    .ok_or(format!("trashed file {id} chunk {handle} not in table"))?;
                if info.inode != id || info.index != index {
                    return Err(format!("chunk {handle} table row mismatch"));
                }
                chunks_seen += 1;
            }
            by_time.insert((t.deleted, id));
        }
        if by_time != self.trash_by_time {
            return Err("trash time index inconsistent".into());
        }
        for id in self.orphaned.keys() {
            if !self.inodes.contains_key(id) {
                return Err(format!("orphan record of missing inode {id}"));
            }
        }
        counts.chunks = chunks_seen;
        if chunks_seen != self.chunks.len() as u64 {
            return Err("chunk count mismatch".into());
        }
        if counts != self.counts {
            return Err(format!("counts {:?} != recount {counts:?}", self.counts));
        }
        if self.sessions.by_client.len() != self.sessions.lru.len()
            || self.sessions.by_client.len() > self.sessions.limit
        {
            return Err("session table inconsistent".into());
        }
        for (tick, client) in &self.sessions.lru {
            if self.sessions.by_client.get(client).map(|s| s.tick) != Some(*tick) {
                return Err("session lru inconsistent".into());
            }
        }
        Ok(())
    }
}

/// The optional changes of a SetAttr.
struct SetAttrArgs {
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
    size: Option<u64>,
    atime: Option<Timestamp>,
    mtime: Option<Timestamp>,
    clear_suid: bool,
}
