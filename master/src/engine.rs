//! The master's namespace and chunk table as a deterministic state machine (sans-IO).
//!
//! [`Engine`] holds every inode (directories, files), the chunk table (which chunk handle holds
//! which chunk of which file, at which version) and the exactly-once session table. It changes
//! only through [`Engine::apply`] of a logged [`Command`]; everything else is a read-only query.
//!
//! This module must stay pure: it does no IO, reads no clock, draws no random numbers and keeps no
//! hash-ordered state. The result of `apply` depends only on the engine and the command (time is a
//! field of the command), so replaying the operation log on a checkpoint reproduces the state
//! exactly. All maps are `BTreeMap`s, so the serialized engine (the checkpoint) is deterministic too.
//!
//! A command either succeeds or changes nothing: every operation validates first and mutates
//! after. Only successful results are recorded in the session table.

use quarry_proto::{
    split_path, validate_name, Attr, ChunkHandle, ChunkVersion, ClientId, DirEntry, FileKind,
    FsError, InodeId, OpId, Timestamp,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Default bound of the exactly-once session table (clients remembered).
pub const DEFAULT_SESSION_LIMIT: usize = 10_000;

/// Permission bits (and setuid/setgid/sticky) kept in `Attr::mode`.
pub const MODE_MASK: u32 = 0o7777;

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
    Rename {
        op: OpId,
        src_parent: InodeId,
        src_name: String,
        dst_parent: InodeId,
        dst_name: String,
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
        time: Timestamp,
    },
    CommitSize {
        op: OpId,
        inode: InodeId,
        end: u64,
        mtime: Timestamp,
        time: Timestamp,
    },
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
}

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
            | Command::CommitSize { op, .. } => Some(*op),
            Command::AllocateChunk { .. }
            | Command::BumpVersion { .. }
            | Command::SetVersion { .. } => None,
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
}

/// One row of the chunk table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkInfo {
    pub inode: InodeId,
    pub index: u64,
    pub version: ChunkVersion,
}

/// Namespace totals (for StatFs and status pages).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub files: u64,
    pub directories: u64,
    pub symlinks: u64,
    pub chunks: u64,
    /// Sum of the sizes of regular files.
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Data {
    Dir { entries: BTreeMap<String, InodeId> },
    File { chunks: BTreeMap<u64, ChunkHandle> },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Inode {
    attr: Attr,
    /// The directory holding this inode's only link (the root is its own parent).
    parent: InodeId,
    data: Data,
}

impl Inode {
    fn is_dir(&self) -> bool {
        matches!(self.data, Data::Dir { .. })
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
}

fn stale() -> FsError {
    FsError::InvalidArgument("stale request".into())
}

impl Engine {
    /// An empty namespace: the root directory (inode 1, mode 0o755, owned by 0:0) created at `time`.
    pub fn new(chunk_size: u64, time: Timestamp) -> Engine {
        assert!(chunk_size > 0, "chunk size must be positive");
        let root = Inode {
            attr: Attr {
                inode: InodeId::ROOT,
                kind: FileKind::Directory,
                mode: 0o755,
                uid: 0,
                gid: 0,
                size: 0,
                nlink: 2,
                atime: time,
                mtime: time,
                ctime: time,
                crtime: time,
            },
            parent: InodeId::ROOT,
            data: Data::Dir {
                entries: BTreeMap::new(),
            },
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
        }
    }

    /// Change the bound of the exactly-once session table (default [`DEFAULT_SESSION_LIMIT`]).
    /// Part of the state: set it identically wherever the same log is replayed.
    pub fn with_session_limit(mut self, limit: usize) -> Engine {
        self.sessions.limit = limit.max(1);
        self
    }

    pub fn chunk_size(&self) -> u64 {
        self.chunk_size
    }

    /// Apply one logged command. Deterministic: depends only on `self` and `cmd`.
    /// A failed command changes nothing and returns the error.
    pub fn apply(&mut self, cmd: &Command) -> Result<Output, FsError> {
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
            Command::Rename {
                src_parent,
                src_name,
                dst_parent,
                dst_name,
                time,
                ..
            } => self.rename(*src_parent, src_name, *dst_parent, dst_name, *time),
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
                time,
                ..
            } => self.setattr(*inode, *mode, *uid, *gid, *size, *atime, *mtime, *time),
            Command::CommitSize {
                inode,
                end,
                mtime,
                time,
                ..
            } => self.commit_size(*inode, *end, *mtime, *time),
            Command::AllocateChunk { inode, index, .. } => self.allocate_chunk(*inode, *index),
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
            Data::Dir { entries } => Ok(entries),
            Data::File { .. } => Err(FsError::NotADirectory),
        }
    }

    fn entries_mut(&mut self, dir: InodeId) -> &mut BTreeMap<String, InodeId> {
        match &mut self.inode_mut(dir).data {
            Data::Dir { entries } => entries,
            Data::File { .. } => panic!("directory validated before mutation"),
        }
    }

    /// Validated name and parent directory, then the entry's inode if the name exists.
    fn child(&self, parent: InodeId, name: &str) -> Result<Option<InodeId>, FsError> {
        validate_name(name)?;
        Ok(self.entries(parent)?.get(name).copied())
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
            atime: time,
            mtime: time,
            ctime: time,
            crtime: time,
        }
    }

    /// Drop a non-directory inode whose last link went away, with its chunks.
    fn drop_file(&mut self, id: InodeId) {
        let ino = self.inodes.remove(&id).expect("inode exists");
        if let Data::File { chunks } = ino.data {
            for handle in chunks.values() {
                self.chunks.remove(handle);
            }
            self.counts.chunks -= chunks.len() as u64;
        }
        match ino.attr.kind {
            FileKind::File => self.counts.files -= 1,
            FileKind::Symlink => self.counts.symlinks -= 1,
            FileKind::Directory => unreachable!("drop_file on a directory"),
        }
        self.counts.bytes -= ino.attr.size;
    }

    fn drop_empty_dir(&mut self, id: InodeId) {
        let ino = self.inodes.remove(&id).expect("inode exists");
        debug_assert!(matches!(&ino.data, Data::Dir { entries } if entries.is_empty()));
        self.counts.directories -= 1;
    }

    fn regular_file(&self, id: InodeId) -> Result<&Inode, FsError> {
        let ino = self.inode(id)?;
        match ino.attr.kind {
            FileKind::File => Ok(ino),
            FileKind::Directory => Err(FsError::IsADirectory),
            FileKind::Symlink => Err(FsError::InvalidArgument("not a regular file".into())),
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
        if self.child(parent, name)?.is_some() {
            return Err(FsError::AlreadyExists);
        }
        let id = self.alloc_inode();
        let attr = Self::new_attr(id, FileKind::Directory, mode, uid, gid, time);
        self.inodes.insert(
            id,
            Inode {
                attr: attr.clone(),
                parent,
                data: Data::Dir {
                    entries: BTreeMap::new(),
                },
            },
        );
        self.entries_mut(parent).insert(name.to_owned(), id);
        self.touch_dir(parent, time);
        self.inode_mut(parent).attr.nlink += 1;
        self.counts.directories += 1;
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
        self.inodes.insert(
            id,
            Inode {
                attr: attr.clone(),
                parent,
                data: Data::File {
                    chunks: BTreeMap::new(),
                },
            },
        );
        self.entries_mut(parent).insert(name.to_owned(), id);
        self.touch_dir(parent, time);
        self.counts.files += 1;
        Ok(Output::Attr(attr))
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
            match self.inodes.get(&dir) {
                Some(ino) => dir = ino.parent,
                None => return false,
            }
        }
    }

    fn rename(
        &mut self,
        src_parent: InodeId,
        src_name: &str,
        dst_parent: InodeId,
        dst_name: &str,
        time: Timestamp,
    ) -> Result<Output, FsError> {
        let src = self.child(src_parent, src_name)?;
        let dst = self.child(dst_parent, dst_name)?;
        let src = src.ok_or(FsError::NotFound)?;
        if src_parent == dst_parent && src_name == dst_name {
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
                (true, Data::Dir { entries }) if !entries.is_empty() => {
                    return Err(FsError::DirectoryNotEmpty)
                }
                (true, Data::Dir { .. }) => {}
                (true, Data::File { .. }) => return Err(FsError::NotADirectory),
                (false, Data::Dir { .. }) => return Err(FsError::IsADirectory),
                (false, Data::File { .. }) => {}
            }
        }
        // Validated; mutate.
        if let Some(dst) = dst {
            self.entries_mut(dst_parent).remove(dst_name);
            if src_is_dir {
                self.drop_empty_dir(dst);
                self.inode_mut(dst_parent).attr.nlink -= 1;
            } else {
                self.drop_file(dst);
            }
        }
        self.entries_mut(src_parent).remove(src_name);
        self.entries_mut(dst_parent)
            .insert(dst_name.to_owned(), src);
        if src_is_dir && src_parent != dst_parent {
            self.inode_mut(src_parent).attr.nlink -= 1;
            self.inode_mut(dst_parent).attr.nlink += 1;
        }
        let moved = self.inode_mut(src);
        moved.parent = dst_parent;
        moved.attr.ctime = time;
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
        // No hard links yet: nlink 1 -> 0 removes the inode.
        self.drop_file(id);
        self.touch_dir(parent, time);
        Ok(Output::Unit)
    }

    fn rmdir(&mut self, parent: InodeId, name: &str, time: Timestamp) -> Result<Output, FsError> {
        let id = self.child(parent, name)?.ok_or(FsError::NotFound)?;
        if id == InodeId::ROOT {
            return Err(FsError::InvalidArgument("cannot remove the root".into()));
        }
        match &self.inode(id)?.data {
            Data::File { .. } => return Err(FsError::NotADirectory),
            Data::Dir { entries } if !entries.is_empty() => return Err(FsError::DirectoryNotEmpty),
            Data::Dir { .. } => {}
        }
        self.entries_mut(parent).remove(name);
        self.drop_empty_dir(id);
        let p = self.inode_mut(parent);
        p.attr.nlink -= 1;
        self.touch_dir(parent, time);
        Ok(Output::Unit)
    }

    #[allow(clippy::too_many_arguments)]
    fn setattr(
        &mut self,
        inode: InodeId,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<Timestamp>,
        mtime: Option<Timestamp>,
        time: Timestamp,
    ) -> Result<Output, FsError> {
        let ino = self.inode(inode)?;
        if size.is_some() {
            match ino.attr.kind {
                FileKind::File => {}
                FileKind::Directory => return Err(FsError::IsADirectory),
                FileKind::Symlink => {
                    return Err(FsError::InvalidArgument("not a regular file".into()))
                }
            }
        }
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
        if let Some(mode) = mode {
            a.mode = mode & MODE_MASK;
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
        if mode.is_some() || uid.is_some() || gid.is_some() || atime.is_some() || mtime.is_some() {
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
        self.counts.chunks += 1;
        Ok(Output::Chunk { handle, version })
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

    // ---- queries ----

    pub fn lookup(&self, parent: InodeId, name: &str) -> Result<Attr, FsError> {
        let id = self.child(parent, name)?.ok_or(FsError::NotFound)?;
        self.getattr(id)
    }

    pub fn getattr(&self, inode: InodeId) -> Result<Attr, FsError> {
        Ok(self.inode(inode)?.attr.clone())
    }

    /// Resolve an absolute path (see [`split_path`]); `NotADirectory` if a middle component is not
    /// a directory.
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
            Data::Dir { .. } => None,
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
    /// every inode reachable from the root exactly once through consistent parent pointers,
    /// link counts, chunk table ⇔ file chunk maps, counters, id allocators ahead of every id.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut seen = BTreeMap::new();
        let mut stack = vec![InodeId::ROOT];
        let mut counts = Counts::default();
        let root = self.inodes.get(&InodeId::ROOT).ok_or("no root")?;
        if root.parent != InodeId::ROOT || !root.is_dir() {
            return Err("bad root".into());
        }
        seen.insert(InodeId::ROOT, ());
        while let Some(id) = stack.pop() {
            let ino = self.inodes.get(&id).ok_or(format!("dangling inode {id}"))?;
            if ino.attr.inode != id {
                return Err(format!("inode {id} has attr.inode {}", ino.attr.inode));
            }
            if id.0 >= self.next_inode {
                return Err(format!("inode {id} not below next_inode"));
            }
            if ino.attr.mode & !MODE_MASK != 0 {
                return Err(format!("inode {id} mode has type bits"));
            }
            match &ino.data {
                Data::Dir { entries } => {
                    if ino.attr.kind != FileKind::Directory {
                        return Err(format!("inode {id}: kind mismatch"));
                    }
                    counts.directories += 1;
                    let mut subdirs = 0u32;
                    for (name, child) in entries {
                        validate_name(name).map_err(|e| format!("bad name {name:?}: {e}"))?;
                        if seen.insert(*child, ()).is_some() {
                            return Err(format!("inode {child} reachable twice"));
                        }
                        let c = self
                            .inodes
                            .get(child)
                            .ok_or(format!("entry {name:?} -> missing inode {child}"))?;
                        if c.parent != id {
                            return Err(format!("inode {child} parent pointer wrong"));
                        }
                        if c.is_dir() {
                            subdirs += 1;
                        }
                        stack.push(*child);
                    }
                    if ino.attr.nlink != 2 + subdirs {
                        return Err(format!(
                            "dir {id} nlink {} != 2 + {subdirs}",
                            ino.attr.nlink
                        ));
                    }
                }
                Data::File { chunks } => {
                    match ino.attr.kind {
                        FileKind::File => counts.files += 1,
                        FileKind::Symlink => counts.symlinks += 1,
                        FileKind::Directory => return Err(format!("inode {id}: kind mismatch")),
                    }
                    counts.bytes += ino.attr.size;
                    if ino.attr.nlink != 1 {
                        return Err(format!("file {id} nlink {}", ino.attr.nlink));
                    }
                    for (&index, handle) in chunks {
                        let info = self
                            .chunks
                            .get(handle)
                            .ok_or(format!("file {id} chunk {handle} not in table"))?;
                        if info.inode != id || info.index != index {
                            return Err(format!("chunk {handle} table row mismatch"));
                        }
                        counts.chunks += 1;
                    }
                }
            }
        }
        if seen.len() != self.inodes.len() {
            return Err(format!(
                "{} inodes unreachable",
                self.inodes.len() - seen.len()
            ));
        }
        for (handle, info) in &self.chunks {
            if handle.0 >= self.next_handle || handle.0 == 0 {
                return Err(format!("chunk {handle} not below next_handle"));
            }
            if info.version.0 == 0 {
                return Err(format!("chunk {handle} at version 0"));
            }
            if self.chunk_at(info.inode, info.index).map(|c| c.0) != Some(*handle) {
                return Err(format!("chunk {handle} not in its file"));
            }
        }
        if counts.chunks != self.chunks.len() as u64 {
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
