//! `quarry-client`: the client library. Metadata calls go to the master; file bytes go straight
//! to chunkservers: reads from any current replica (verified there), writes pushed along the
//! replica chain and committed through the chunk's primary (see `docs/write-protocol.md`).
//!
//! It keeps a bounded cache of chunk locations and write grants, retries across stale leases,
//! version changes and dead servers within a deadline, and never holds more than the caller's
//! buffers in memory. It knows nothing of FUSE, config files or the command line.

mod cache;

use bytes::{Bytes, BytesMut};
use cache::LocationCache;
use quarry_proto::chunk::{CommitMutation, CommitReply, Mutation, PushData, ReadChunk};
use quarry_proto::master::*;
use quarry_proto::{
    Attr, ChunkLocation, ClientId, DataId, DirEntry, FileKind, FsError, InodeId, OpId, ServerRef,
    Timestamp, XattrFlags,
};
use quarry_transport::{RpcClient, Transport};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub masters: Vec<String>,
    /// Timeout of one RPC.
    pub rpc_timeout: Duration,
    /// How long one operation may keep retrying (waiting out a dead primary's lease, a master
    /// restart) before it fails.
    pub retry_deadline: Duration,
    /// Chunk locations kept (bounded memory).
    pub location_cache_entries: usize,
}

impl ClientConfig {
    pub fn new(masters: Vec<String>) -> ClientConfig {
        ClientConfig {
            masters,
            rpc_timeout: Duration::from_secs(30),
            retry_deadline: Duration::from_secs(120),
            location_cache_entries: 65_536,
        }
    }
}

/// Bytes read from chunkservers per request.
pub const READ_PIECE_BYTES: u64 = 8 << 20;

/// How long a new client asks every master at once who leads (see [`Client::connect`]).
const FIND_LEADER_WAIT: Duration = Duration::from_secs(2);

/// After the first master that says it leads, how long to wait for the others' answers (two may
/// say so while an old leader is cut off; the higher term wins).
const FIND_LEADER_GRACE: Duration = Duration::from_millis(100);

#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    rpc: RpcClient,
    client_id: ClientId,
    seq: AtomicU64,
    info: ClusterInfoReply,
    /// The trash retention as of the last [`Client::refresh_cluster_info`] (it is state on the
    /// masters, logged by a new leader when its configuration differs, so it can change).
    trash_retention_ms: AtomicU64,
    /// (masters known: the configured ones plus any a `NotLeader` hint named, which index to
    /// try next).
    master_hint: Mutex<(Vec<String>, usize)>,
    locations: Mutex<LocationCache>,
    grants: Mutex<std::collections::HashMap<(InodeId, u64), (WriteGrant, Instant)>>,
    /// Rotates replica choice so reads spread over servers.
    read_turn: AtomicU64,
    /// The attributes of directories as the replies of this client's changes to their entries
    /// last reported them, and when they arrived (see [`Client::recent_dir_attr`]).
    dir_attrs: Mutex<DirAttrs>,
}

/// See [`Inner::dir_attrs`].
#[derive(Default)]
struct DirAttrs {
    map: std::collections::HashMap<InodeId, (Attr, Instant)>,
    /// Raised by every forget: a reply to a request sent before a forget may hold attributes
    /// from before the change that caused it, and is not kept.
    generation: u64,
}

impl DirAttrs {
    fn forget(&mut self, inode: Option<InodeId>) {
        match inode {
            Some(i) => {
                self.map.remove(&i);
            }
            None => self.map.clear(),
        }
        self.generation += 1;
    }
}

/// A directory listing from [`Client::readdir_plus`].
#[derive(Clone, Debug)]
pub struct DirSnapshot {
    /// The directory's own attributes.
    pub dir: Attr,
    /// Every entry, in name order.
    pub entries: Vec<DirEntry>,
    /// The attributes of the first `attrs.len()` entries, read with the listing.
    pub attrs: Vec<Attr>,
}

/// Directories whose attributes from change replies are kept at most (the map is cleared past
/// this; entries are only useful for a second or so).
const DIR_ATTRS_MAX: usize = 4096;

/// Backoff for attempt `n` (0-based): 20 ms doubling, at most 1 s.
fn backoff(n: u32) -> Duration {
    Duration::from_millis((20u64 << n.min(6)).min(1000))
}

impl Client {
    /// Connect to the cluster: fetch its constants from a master.
    pub async fn connect(
        transport: Arc<dyn Transport>,
        config: ClientConfig,
    ) -> Result<Client, FsError> {
        if config.masters.is_empty() {
            return Err(FsError::InvalidArgument("no master address given".into()));
        }
        let rpc = RpcClient::new(transport).with_timeout(config.rpc_timeout);
        let known = config.masters.clone();
        let mut inner = Inner {
            locations: Mutex::new(LocationCache::new(config.location_cache_entries)),
            config,
            rpc,
            client_id: ClientId(rand::random::<u64>() | 1),
            seq: AtomicU64::new(0),
            info: ClusterInfoReply {
                chunk_size: 0,
                replication: 0,
                lease_duration_ms: 0,
                trash_retention_ms: 0,
            },
            master_hint: Mutex::new((known, 0)),
            grants: Mutex::new(Default::default()),
            read_turn: AtomicU64::new(rand::random()),
            trash_retention_ms: AtomicU64::new(0),
            dir_attrs: Mutex::new(Default::default()),
        };
        inner.find_leader().await;
        inner.info = inner.master(&ClusterInfo {}).await?;
        if inner.info.chunk_size == 0 {
            return Err(FsError::Protocol("master reported chunk size 0".into()));
        }
        inner
            .trash_retention_ms
            .store(inner.info.trash_retention_ms, Ordering::Relaxed);
        Ok(Client {
            inner: Arc::new(inner),
        })
    }

    pub fn chunk_size(&self) -> u64 {
        self.inner.info.chunk_size
    }

    /// The attributes of directory `inode` as the reply of the latest change to its entries
    /// through this client reported them (after the change, read on the leader), and when that
    /// reply arrived; `None` once a change of the directory's own attributes through this client
    /// (mode, owner, times, extended attributes), or any rename or rmdir through it, made them
    /// unreliable. How long they may stand for the directory is the caller's choice (a mount:
    /// its attribute TTL, as the kernel would have cached them).
    pub fn recent_dir_attr(&self, inode: InodeId) -> Option<(Attr, Instant)> {
        self.inner
            .dir_attrs
            .lock()
            .unwrap()
            .map
            .get(&inode)
            .cloned()
    }

    /// Forget what [`Client::recent_dir_attr`] knows of `inode` (`None`: of every directory).
    fn forget_dir_attrs(&self, inode: Option<InodeId>) {
        self.inner.dir_attrs.lock().unwrap().forget(inode);
    }

    /// The generation of the directory attributes before a change is sent.
    fn dir_generation(&self) -> u64 {
        self.inner.dir_attrs.lock().unwrap().generation
    }

    /// Send a change to a directory's entries and keep the directory attributes of its reply
    /// (see [`Client::note_changed`]). `moves`: it may move or remove a directory (rename,
    /// rmdir); one that failed may still have done so (a retry's answer lost), so everything
    /// known is forgotten then too.
    async fn change<R, T>(&self, req: &R, moves: bool) -> Result<T, FsError>
    where
        R: quarry_proto::Rpc<Response = Changed<T>> + Clone,
    {
        let sent = self.dir_generation();
        match self.inner.master(req).await {
            Ok(reply) => Ok(self.note_changed(reply, sent, moves)),
            Err(e) => {
                if moves {
                    self.forget_dir_attrs(None);
                }
                Err(e)
            }
        }
    }

    /// Keep the directory attributes of a change's reply, unless something was forgotten since
    /// the change was sent (`sent`: [`Client::dir_generation`] then). `moved`: the change may have
    /// moved or removed a directory (rename, rmdir), whose own cached attributes (ctime, the
    /// `..` link count of a parent) are then stale — everything known is forgotten first.
    fn note_changed<T>(&self, reply: Changed<T>, sent: u64, moved: bool) -> T {
        let now = Instant::now();
        let mut attrs = self.inner.dir_attrs.lock().unwrap();
        let current = attrs.generation == sent;
        if moved || attrs.map.len() >= DIR_ATTRS_MAX {
            attrs.forget(None);
        }
        if current {
            for a in reply.dirs {
                // Replies of concurrent changes may arrive out of order: keep the newest state.
                match attrs.map.get(&a.inode) {
                    Some((old, _)) if old.ctime > a.ctime => {}
                    _ => {
                        attrs.map.insert(a.inode, (a, now));
                    }
                }
            }
        }
        reply.value
    }

    /// The cluster's trash retention (zero: no trash) as of the connection or the last
    /// [`Client::refresh_cluster_info`].
    pub fn trash_retention(&self) -> Duration {
        Duration::from_millis(self.inner.trash_retention_ms.load(Ordering::Relaxed))
    }

    /// Ask the masters again for what may change in [`ClusterInfoReply`] (the trash retention).
    pub async fn refresh_cluster_info(&self) -> Result<(), FsError> {
        let info: ClusterInfoReply = self.inner.master(&ClusterInfo {}).await?;
        self.inner
            .trash_retention_ms
            .store(info.trash_retention_ms, Ordering::Relaxed);
        Ok(())
    }

    pub fn client_id(&self) -> ClientId {
        self.inner.client_id
    }

    pub fn rpc(&self) -> &RpcClient {
        &self.inner.rpc
    }

    /// Any request to the master (or a service it hosts, such as the job coordinator), with the
    /// same leader-finding and retries as the namespace calls.
    pub async fn rpc_master<R: quarry_proto::Rpc + Clone>(
        &self,
        req: &R,
    ) -> Result<R::Response, FsError> {
        self.inner.master(req).await
    }

    fn op(&self) -> OpId {
        OpId {
            client: self.inner.client_id,
            seq: self.inner.seq.fetch_add(1, Ordering::Relaxed) + 1,
        }
    }

    // ---- namespace -------------------------------------------------------------------------

    pub async fn lookup(&self, parent: InodeId, name: &str) -> Result<Attr, FsError> {
        self.inner
            .master(&Lookup {
                parent,
                name: name.to_string(),
            })
            .await
    }

    pub async fn getattr(&self, inode: InodeId) -> Result<Attr, FsError> {
        self.inner.master(&GetAttr { inode }).await
    }

    /// Attributes of several inodes at once (`None` for one that no longer exists), in requests
    /// of at most [`quarry_proto::limits::MAX_ATTRS_PER_CALL`].
    pub async fn getattrs(&self, inodes: &[InodeId]) -> Result<Vec<Option<Attr>>, FsError> {
        let mut out = Vec::with_capacity(inodes.len());
        for part in inodes.chunks(quarry_proto::limits::MAX_ATTRS_PER_CALL) {
            let got = self
                .inner
                .master(&GetAttrs {
                    inodes: part.to_vec(),
                })
                .await?;
            if got.len() != part.len() {
                return Err(FsError::Protocol(format!(
                    "GetAttrs: {} answers for {} inodes",
                    got.len(),
                    part.len()
                )));
            }
            out.extend(got);
        }
        Ok(out)
    }

    /// Attributes of an absolute path (symlinks not followed).
    pub async fn stat(&self, path: &str) -> Result<Attr, FsError> {
        self.inner
            .master(&ResolvePath {
                path: path.to_string(),
            })
            .await
    }

    /// The parent directory's attributes and the last component of `path`.
    pub async fn parent_of(&self, path: &str) -> Result<(Attr, String), FsError> {
        let parts = quarry_proto::split_path(path)?;
        let Some((name, dirs)) = parts.split_last() else {
            return Err(FsError::InvalidArgument("the root has no parent".into()));
        };
        let parent = format!("/{}", dirs.join("/"));
        let attr = self.stat(&parent).await?;
        if attr.kind != FileKind::Directory {
            return Err(FsError::NotADirectory);
        }
        Ok((attr, name.to_string()))
    }

    pub async fn mkdir(
        &self,
        parent: InodeId,
        name: &str,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<Attr, FsError> {
        self.change(
            &Mkdir {
                op: self.op(),
                parent,
                name: name.to_string(),
                mode,
                uid,
                gid,
            },
            false,
        )
        .await
    }

    /// `mkdir -p`: create every missing directory of `path`; an existing directory is fine.
    pub async fn mkdir_p(&self, path: &str, mode: u32) -> Result<Attr, FsError> {
        let parts = quarry_proto::split_path(path)?;
        let mut dir = self.getattr(InodeId::ROOT).await?;
        for name in parts {
            dir = match self.lookup(dir.inode, name).await {
                Ok(a) if a.kind == FileKind::Directory => a,
                Ok(_) => return Err(FsError::NotADirectory),
                Err(FsError::NotFound) => match self.mkdir(dir.inode, name, mode, 0, 0).await {
                    Ok(a) => a,
                    // Someone else made it meanwhile.
                    Err(FsError::AlreadyExists) => self.lookup(dir.inode, name).await?,
                    Err(e) => return Err(e),
                },
                Err(e) => return Err(e),
            };
        }
        Ok(dir)
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn create(
        &self,
        parent: InodeId,
        name: &str,
        mode: u32,
        uid: u32,
        gid: u32,
        exclusive: bool,
    ) -> Result<Attr, FsError> {
        self.create_inner(parent, name, mode, uid, gid, exclusive, false)
            .await
    }

    /// [`Client::create`] that also takes this client's open hold on the file (see
    /// [`Client::hold_open`]), in the same request.
    pub async fn create_held(
        &self,
        parent: InodeId,
        name: &str,
        mode: u32,
        uid: u32,
        gid: u32,
        exclusive: bool,
    ) -> Result<Attr, FsError> {
        self.create_inner(parent, name, mode, uid, gid, exclusive, true)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn create_inner(
        &self,
        parent: InodeId,
        name: &str,
        mode: u32,
        uid: u32,
        gid: u32,
        exclusive: bool,
        hold: bool,
    ) -> Result<Attr, FsError> {
        self.change(
            &Create {
                op: self.op(),
                parent,
                name: name.to_string(),
                mode,
                uid,
                gid,
                exclusive,
                hold,
            },
            false,
        )
        .await
    }

    /// Every entry of a directory, in name order, with the directory's attributes and those of
    /// its first entries (up to [`quarry_proto::limits::MAX_ATTRS_PER_CALL`]): one request for
    /// a directory that small, then pages of names only. `NotADirectory` for another kind.
    pub async fn readdir_plus(&self, inode: InodeId) -> Result<DirSnapshot, FsError> {
        let page = self
            .inner
            .master(&ReadDirPlus {
                inode,
                after: None,
                limit: quarry_proto::limits::MAX_ATTRS_PER_CALL as u32,
            })
            .await?;
        let (mut entries, attrs): (Vec<DirEntry>, Vec<Attr>) = page.entries.into_iter().unzip();
        if page.more {
            if let Some(last) = entries.last().map(|e| e.name.clone()) {
                entries.extend(self.readdir_after(inode, Some(last)).await?);
            }
        }
        Ok(DirSnapshot {
            dir: page.dir,
            entries,
            attrs,
        })
    }

    /// Every entry of a directory, in name order (paged from the master).
    pub async fn readdir(&self, inode: InodeId) -> Result<Vec<DirEntry>, FsError> {
        self.readdir_after(inode, None).await
    }

    /// The entries of a directory after `after`, in name order.
    async fn readdir_after(
        &self,
        inode: InodeId,
        mut after: Option<String>,
    ) -> Result<Vec<DirEntry>, FsError> {
        let mut out = Vec::new();
        loop {
            let page = self
                .inner
                .master(&ReadDir {
                    inode,
                    after: after.clone(),
                    limit: 4096,
                })
                .await?;
            after = page.entries.last().map(|e| e.name.clone());
            out.extend(page.entries);
            if !page.more || after.is_none() {
                return Ok(out);
            }
        }
    }

    pub async fn rename(
        &self,
        src_parent: InodeId,
        src_name: &str,
        dst_parent: InodeId,
        dst_name: &str,
    ) -> Result<(), FsError> {
        self.rename_flags(src_parent, src_name, dst_parent, dst_name, 0)
            .await
    }

    /// `renameat2`: `flags` is 0, [`quarry_proto::RENAME_NOREPLACE`] or
    /// [`quarry_proto::RENAME_EXCHANGE`].
    pub async fn rename_flags(
        &self,
        src_parent: InodeId,
        src_name: &str,
        dst_parent: InodeId,
        dst_name: &str,
        flags: u32,
    ) -> Result<(), FsError> {
        self.change(
            &Rename {
                op: self.op(),
                src_parent,
                src_name: src_name.to_string(),
                dst_parent,
                dst_name: dst_name.to_string(),
                flags,
            },
            true,
        )
        .await
    }

    /// Create a symlink `parent/name` pointing at `target` (mode 0o777).
    pub async fn symlink(
        &self,
        parent: InodeId,
        name: &str,
        target: &str,
        uid: u32,
        gid: u32,
    ) -> Result<Attr, FsError> {
        self.change(
            &Symlink {
                op: self.op(),
                parent,
                name: name.to_string(),
                target: target.to_string(),
                uid,
                gid,
            },
            false,
        )
        .await
    }

    /// The target of a symlink.
    pub async fn readlink(&self, inode: InodeId) -> Result<String, FsError> {
        self.inner.master(&ReadLink { inode }).await
    }

    /// Create a fifo, device, socket or empty regular file (metadata only).
    #[allow(clippy::too_many_arguments)]
    pub async fn mknod(
        &self,
        parent: InodeId,
        name: &str,
        kind: FileKind,
        mode: u32,
        rdev: u32,
        uid: u32,
        gid: u32,
    ) -> Result<Attr, FsError> {
        self.change(
            &Mknod {
                op: self.op(),
                parent,
                name: name.to_string(),
                kind,
                mode,
                rdev,
                uid,
                gid,
            },
            false,
        )
        .await
    }

    /// Hard link: `new_parent/new_name` names `inode` too. Returns its attributes (nlink raised).
    pub async fn link(
        &self,
        inode: InodeId,
        new_parent: InodeId,
        new_name: &str,
    ) -> Result<Attr, FsError> {
        self.change(
            &Link {
                op: self.op(),
                inode,
                new_parent,
                new_name: new_name.to_string(),
            },
            false,
        )
        .await
    }

    pub async fn setxattr(
        &self,
        inode: InodeId,
        name: &str,
        value: &[u8],
        flags: XattrFlags,
    ) -> Result<(), FsError> {
        self.forget_dir_attrs(Some(inode));
        self.inner
            .master(&SetXattr {
                op: self.op(),
                inode,
                name: name.to_string(),
                value: value.to_vec(),
                flags,
            })
            .await
    }

    pub async fn getxattr(&self, inode: InodeId, name: &str) -> Result<Vec<u8>, FsError> {
        self.inner
            .master(&GetXattr {
                inode,
                name: name.to_string(),
            })
            .await
    }

    pub async fn listxattr(&self, inode: InodeId) -> Result<Vec<String>, FsError> {
        self.inner.master(&ListXattr { inode }).await
    }

    pub async fn removexattr(&self, inode: InodeId, name: &str) -> Result<(), FsError> {
        self.forget_dir_attrs(Some(inode));
        self.inner
            .master(&RemoveXattr {
                op: self.op(),
                inode,
                name: name.to_string(),
            })
            .await
    }

    /// Record (`hold` = true) or drop this client's open hold on `inode`. A held file whose last
    /// name is unlinked stays readable and writable by inode until the hold is dropped. Holds
    /// are a set: call once at the first open and once after the last release.
    pub async fn hold_open(&self, inode: InodeId, hold: bool) -> Result<(), FsError> {
        self.inner
            .master(&HoldOpen {
                op: self.op(),
                inode,
                client: self.inner.client_id,
                hold,
            })
            .await
    }

    /// Tell the master this client is still there (see [`KeepAlive`]): a client holding files
    /// open calls this well within the session timeout the reply gives, and takes its holds
    /// again if the reply counts fewer than it has.
    pub async fn keep_alive(&self) -> Result<KeepAliveReply, FsError> {
        self.inner
            .master(&KeepAlive {
                client: self.inner.client_id,
            })
            .await
    }

    pub async fn unlink(&self, parent: InodeId, name: &str) -> Result<(), FsError> {
        self.change(
            &Unlink {
                op: self.op(),
                parent,
                name: name.to_string(),
            },
            false,
        )
        .await
    }

    pub async fn rmdir(&self, parent: InodeId, name: &str) -> Result<(), FsError> {
        self.change(
            &Rmdir {
                op: self.op(),
                parent,
                name: name.to_string(),
            },
            true,
        )
        .await
    }

    /// Change mode, owner or times (not the size: use [`Client::truncate`]).
    pub async fn setattr(&self, mut req: SetAttr) -> Result<Attr, FsError> {
        if req.size.is_some() {
            return Err(FsError::InvalidArgument(
                "use truncate to change the size".into(),
            ));
        }
        req.op = self.op();
        self.forget_dir_attrs(Some(req.inode));
        let r = self.inner.master(&req).await;
        // A concurrent change's reply may have brought back attributes from before this one.
        self.forget_dir_attrs(Some(req.inode));
        r
    }

    // ---- trash and replication goals --------------------------------------------------------

    /// Every file in the trash, in inode order, and the master's retention.
    pub async fn trash_list(&self) -> Result<(Vec<TrashEntry>, u64), FsError> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page = self.inner.master(&ListTrash { after, limit: 1000 }).await?;
            after = page.entries.last().map(|e| e.inode);
            out.extend(page.entries);
            if !page.more || after.is_none() {
                return Ok((out, page.retention_ms));
            }
        }
    }

    /// Name a trashed file again, at `path` or where it was (`None`).
    pub async fn trash_restore(&self, inode: InodeId, path: Option<&str>) -> Result<Attr, FsError> {
        self.inner
            .master(&RestoreTrash {
                op: self.op(),
                inode,
                path: path.map(str::to_string),
            })
            .await
    }

    /// Drop trashed files now; returns how many.
    pub async fn trash_purge(&self, which: PurgeWhich) -> Result<u64, FsError> {
        self.inner
            .master(&PurgeTrash {
                op: self.op(),
                which,
            })
            .await
    }

    /// Set an inode's replication goal (a directory's whole subtree with `recursive`); returns
    /// how many inodes changed.
    pub async fn set_goal(
        &self,
        inode: InodeId,
        goal: u32,
        recursive: bool,
    ) -> Result<u64, FsError> {
        self.inner
            .master(&SetGoal {
                op: self.op(),
                inode,
                goal,
                recursive,
            })
            .await
    }

    pub async fn get_goal(&self, inode: InodeId) -> Result<u32, FsError> {
        self.inner.master(&GetGoal { inode }).await
    }

    pub async fn statfs(&self) -> Result<StatFsReply, FsError> {
        self.inner.master(&StatFs {}).await
    }

    pub async fn cluster_status(&self) -> Result<ClusterStatusReply, FsError> {
        self.inner.master(&ClusterStatus {}).await
    }

    /// What the master at `addr` (leader or not) reports about itself, asked once (within a
    /// second: a timeout also drops a cached connection to a master that restarted).
    pub async fn master_info(&self, addr: &str) -> Result<MasterStatus, FsError> {
        let rpc = self.inner.rpc.clone().with_timeout(Duration::from_secs(1));
        rpc.call(addr, &MasterInfo {}).await
    }

    /// Add master `id` at `addr` to the Raft group (it must be running, started to join).
    pub async fn add_master(&self, id: u64, addr: String) -> Result<(), FsError> {
        self.inner
            .master(&ChangeMasters {
                add: Some((id, addr)),
                remove: None,
            })
            .await
    }

    /// Remove master `id` from the Raft group.
    pub async fn remove_master(&self, id: u64) -> Result<(), FsError> {
        self.inner
            .master(&ChangeMasters {
                add: None,
                remove: Some(id),
            })
            .await
    }

    /// Where a file's chunks live.
    pub async fn chunks(&self, inode: InodeId) -> Result<Vec<ChunkLocation>, FsError> {
        let mut out = Vec::new();
        let mut first = 0u64;
        loop {
            let reply = self
                .inner
                .master(&GetChunks {
                    inode,
                    first_index: first,
                    count: 1024,
                })
                .await?;
            let last_index = reply.file_size.div_ceil(self.chunk_size());
            out.extend(reply.chunks);
            first += 1024;
            if first >= last_index {
                return Ok(out);
            }
        }
    }

    // ---- data ------------------------------------------------------------------------------

    /// Read up to `len` bytes at `offset` of a file whose size is `file_size` (from a recent
    /// stat or open). Holes read as zeros. Short only at the end of the file.
    pub async fn read(
        &self,
        inode: InodeId,
        offset: u64,
        len: u64,
        file_size: u64,
    ) -> Result<Bytes, FsError> {
        if offset >= file_size || len == 0 {
            return Ok(Bytes::new());
        }
        let end = file_size.min(offset.saturating_add(len));
        let cs = self.chunk_size();
        if offset / cs == (end - 1) / cs {
            // Within one chunk (the common case): hand back the reply's buffer, no copy.
            let n = end - offset;
            let piece = self
                .inner
                .read_chunk_range(inode, offset / cs, offset % cs, n)
                .await?;
            if piece.len() as u64 == n {
                return Ok(piece);
            }
            let mut out = BytesMut::with_capacity(n as usize);
            out.extend_from_slice(&piece);
            out.resize(n as usize, 0); // past the replica's end, inside the file: a hole
            return Ok(out.freeze());
        }
        let mut out = BytesMut::with_capacity((end - offset) as usize);
        let mut pos = offset;
        while pos < end {
            let index = pos / cs;
            let in_chunk = pos % cs;
            let n = (cs - in_chunk).min(end - pos);
            let piece = self
                .inner
                .read_chunk_range(inode, index, in_chunk, n)
                .await?;
            out.extend_from_slice(&piece);
            // Bytes past a replica's end (but inside the file) are a hole: zeros.
            out.resize(out.len() + (n as usize - piece.len()), 0);
            pos += n;
        }
        Ok(out.freeze())
    }

    /// Write `data` at `offset` on every replica, then record the new size on the master.
    pub async fn write(&self, inode: InodeId, offset: u64, data: Bytes) -> Result<Attr, FsError> {
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or(FsError::FileTooLarge)?;
        self.write_data(inode, offset, data).await?;
        self.commit_size(inode, end).await
    }

    /// Write `data` at `offset` on every replica without telling the master the new size
    /// (callers writing many pieces concurrently call [`Client::commit_size`] once at the end).
    pub async fn write_data(
        &self,
        inode: InodeId,
        offset: u64,
        data: Bytes,
    ) -> Result<(), FsError> {
        let cs = self.chunk_size();
        let mut pos = 0usize;
        while pos < data.len() {
            let abs = offset + pos as u64;
            let index = abs / cs;
            let in_chunk = abs % cs;
            let n = ((cs - in_chunk) as usize).min(data.len() - pos);
            let piece = data.slice(pos..pos + n);
            self.inner
                .mutate(
                    inode,
                    index,
                    |data_id, _| Mutation::Write {
                        offset: in_chunk,
                        data_id,
                        len: n as u64,
                    },
                    Some(piece),
                )
                .await?;
            pos += n;
        }
        Ok(())
    }

    /// The file is at least `end` bytes long now (after acknowledged writes).
    pub async fn commit_size(&self, inode: InodeId, end: u64) -> Result<Attr, FsError> {
        self.inner
            .master(&CommitSize {
                op: self.op(),
                inode,
                end,
                mtime: Timestamp::now(),
            })
            .await
    }

    /// Atomically append one record; returns the offset where it landed. The record never
    /// straddles a chunk: if it does not fit, the chunk is padded and the record goes to the next.
    pub async fn append(&self, inode: InodeId, record: Bytes) -> Result<u64, FsError> {
        let cs = self.chunk_size();
        let len = record.len() as u64;
        if len > cs {
            return Err(FsError::InvalidArgument(format!(
                "record of {len} bytes exceeds the chunk size {cs}"
            )));
        }
        if len == 0 {
            return Ok(self.getattr(inode).await?.size);
        }
        let mut size = self.getattr(inode).await?.size;
        let deadline = Instant::now() + self.inner.config.retry_deadline;
        loop {
            let index = size / cs;
            let res = self
                .inner
                .mutate(
                    inode,
                    index,
                    |data_id, op| Mutation::Append {
                        data_id,
                        len,
                        chunk_size: cs,
                        op,
                        min_offset: size.saturating_sub(index * cs).min(cs),
                    },
                    Some(record.clone()),
                )
                .await;
            match res {
                Ok(reply) => {
                    let at = index * cs + reply.offset;
                    self.commit_size(inode, at + len).await?;
                    return Ok(at);
                }
                Err(FsError::ChunkFull) => {
                    // The chunk was padded to its full size; the record goes to the next one.
                    size = self.commit_size(inode, (index + 1) * cs).await?.size;
                }
                Err(e) => return Err(e),
            }
            if Instant::now() > deadline {
                return Err(FsError::Timeout("append kept finding full chunks".into()));
            }
        }
    }

    /// Set the file's size. Bytes past a shrunk end are cut on every replica first, so a later
    /// extension reads zeros, never old data.
    pub async fn truncate(&self, inode: InodeId, size: u64) -> Result<Attr, FsError> {
        let attr = self.getattr(inode).await?;
        if attr.kind == FileKind::Directory {
            return Err(FsError::IsADirectory);
        }
        let cs = self.chunk_size();
        // The chunk holding the lower of the two ends keeps bytes only up to it.
        let cut = size.min(attr.size);
        let index = cut / cs;
        if cut % cs != 0 || size > attr.size {
            let exists = self
                .inner
                .master(&GetChunks {
                    inode,
                    first_index: index,
                    count: 1,
                })
                .await?
                .chunks
                .iter()
                .any(|c| c.index == index);
            if exists {
                self.inner
                    .mutate(
                        inode,
                        index,
                        |_, _| Mutation::Truncate { len: cut % cs },
                        None,
                    )
                    .await?;
            }
        }
        self.inner.locations.lock().unwrap().forget_inode(inode);
        // Chunks past the new end are dropped: their leases must not be used again.
        self.inner
            .grants
            .lock()
            .unwrap()
            .retain(|(i, _), _| *i != inode);
        self.inner
            .master(&SetAttr {
                op: self.op(),
                inode,
                size: Some(size),
                mtime: Some(Timestamp::now()),
                ..Default::default()
            })
            .await
    }

    /// Writes are durable on every replica when they return; nothing is buffered here.
    pub async fn fsync(&self, _inode: InodeId) -> Result<(), FsError> {
        Ok(())
    }
}

impl Inner {
    /// With several masters, ask them all at once who leads and start with that one, rather
    /// than trying them in the configured order (a first master that is down or cut off would
    /// cost a whole connect or RPC timeout before the next is tried). Bounded by
    /// [`FIND_LEADER_WAIT`]; without an answer naming a leader, the first master that answered
    /// at all is tried first, and without any answer the configured order stands.
    async fn find_leader(&self) {
        let masters = self.master_hint.lock().unwrap().0.clone();
        if masters.len() < 2 {
            return;
        }
        let rpc = self.rpc.clone().with_timeout(FIND_LEADER_WAIT);
        let mut asks = tokio::task::JoinSet::new();
        for (i, addr) in masters.into_iter().enumerate() {
            let rpc = rpc.clone();
            asks.spawn(async move { (i, rpc.call(&addr, &MasterInfo {}).await) });
        }
        let started = Instant::now();
        let mut deadline = started + FIND_LEADER_WAIT;
        // (term, index) of the best leader so far, and the first master that answered.
        let mut leader: Option<(u64, usize)> = None;
        let mut first_answer = None;
        loop {
            let next = tokio::time::timeout_at(deadline.into(), asks.join_next()).await;
            let Ok(Some(Ok((i, answer)))) = next else {
                break; // all answered, or out of time
            };
            let Ok(status) = answer else { continue };
            first_answer.get_or_insert(i);
            if status.role == "leader" && leader.is_none_or(|(term, _)| status.term > term) {
                if leader.is_none() {
                    deadline = deadline.min(Instant::now() + FIND_LEADER_GRACE);
                }
                leader = Some((status.term, i));
            }
        }
        asks.abort_all();
        if let Some(i) = leader.map(|(_, i)| i).or(first_answer) {
            self.master_hint.lock().unwrap().1 = i;
        }
        tracing::debug!(
            leader = ?leader,
            first_answer = ?first_answer,
            elapsed = ?started.elapsed(),
            "asked the masters who leads"
        );
    }

    /// Call the master, retrying on unavailability within the retry deadline. Mutating requests
    /// carry their OpId, so a retry is applied once.
    async fn master<R: quarry_proto::Rpc + Clone>(&self, req: &R) -> Result<R::Response, FsError> {
        let deadline = Instant::now() + self.config.retry_deadline;
        let mut attempt = 0u32;
        loop {
            let (idx, addr) = {
                let h = self.master_hint.lock().unwrap();
                let idx = h.1 % h.0.len();
                (idx, h.0[idx].clone())
            };
            match self.rpc.call(&addr, req).await {
                Err(FsError::NotLeader { hint }) => {
                    let mut h = self.master_hint.lock().unwrap();
                    h.1 = match hint {
                        Some(a) => match h.0.iter().position(|m| *m == a) {
                            Some(i) => i,
                            None => {
                                // A master added to the group after this client started.
                                h.0.push(a);
                                h.0.len() - 1
                            }
                        },
                        None => idx + 1,
                    };
                }
                Err(FsError::Unavailable(_)) | Err(FsError::Timeout(_))
                    if Instant::now() < deadline =>
                {
                    self.master_hint.lock().unwrap().1 = idx + 1;
                }
                other => return other,
            }
            if Instant::now() >= deadline {
                return Err(FsError::Unavailable("no master answered in time".into()));
            }
            tokio::time::sleep(backoff(attempt)).await;
            attempt += 1;
        }
    }

    async fn locate(
        &self,
        inode: InodeId,
        index: u64,
        refresh: bool,
    ) -> Result<Option<ChunkLocation>, FsError> {
        if !refresh {
            if let Some(hit) = self.locations.lock().unwrap().get(inode, index) {
                return Ok(Some(hit));
            }
        }
        // Fetch a run of chunks at once: sequential readers need the next ones soon.
        let reply = self
            .master(&GetChunks {
                inode,
                first_index: index,
                count: 16,
            })
            .await?;
        let mut cache = self.locations.lock().unwrap();
        for i in index..index + 16 {
            cache.forget(inode, i);
        }
        let mut found = None;
        for loc in reply.chunks {
            if loc.index == index {
                found = Some(loc.clone());
            }
            cache.put(inode, loc);
        }
        Ok(found)
    }

    async fn read_chunk_range(
        &self,
        inode: InodeId,
        index: u64,
        offset: u64,
        len: u64,
    ) -> Result<Bytes, FsError> {
        if len <= READ_PIECE_BYTES {
            return self.read_piece(inode, index, offset, len).await;
        }
        let mut out = BytesMut::with_capacity(len as usize);
        let mut pos = offset;
        let end = offset + len;
        while pos < end {
            let n = READ_PIECE_BYTES.min(end - pos);
            let piece = self.read_piece(inode, index, pos, n).await?;
            let short = (piece.len() as u64) < n;
            out.extend_from_slice(&piece);
            if short {
                break; // the replica ends here: the rest is a hole
            }
            pos += n;
        }
        Ok(out.freeze())
    }

    async fn read_piece(
        &self,
        inode: InodeId,
        index: u64,
        offset: u64,
        len: u64,
    ) -> Result<Bytes, FsError> {
        let deadline = Instant::now() + self.config.retry_deadline;
        let mut refresh = false;
        let mut attempt = 0u32;
        let mut checksum_error = None;
        loop {
            let Some(loc) = self.locate(inode, index, refresh).await? else {
                return Ok(Bytes::new()); // a hole
            };
            let n = loc.replicas.len();
            let mut last_err = None;
            let turn = self.read_turn.fetch_add(1, Ordering::Relaxed) as usize;
            for k in 0..n {
                let r = &loc.replicas[(turn + k) % n];
                let req = ReadChunk {
                    handle: loc.handle,
                    version: loc.version,
                    offset,
                    len,
                };
                match self.rpc.call_read(&r.addr, &req).await {
                    Ok((_, data)) => return Ok(data),
                    Err(e) => {
                        tracing::debug!(server = %r.addr, handle = %loc.handle, "read failed: {e}");
                        if matches!(e, FsError::ChecksumMismatch { .. }) {
                            checksum_error = Some(e.clone());
                        }
                        last_err = Some(e);
                    }
                }
            }
            // Every replica failed (or there were none): the locations may be old.
            self.locations.lock().unwrap().forget(inode, index);
            refresh = true;
            attempt += 1;
            // With no replica known (a master that just restarted is still collecting chunk
            // reports) wait until the deadline; with replicas that all failed, retry a few times.
            // Replicas that failed their checksums are withdrawn by the master: with none left
            // the data is lost (EIO), not late.
            let give_up = Instant::now() >= deadline
                || match &last_err {
                    Some(FsError::ChecksumMismatch { .. }) => attempt >= 2,
                    Some(_) => attempt >= 8,
                    None => checksum_error.is_some(),
                };
            if give_up && last_err.is_none() {
                last_err = checksum_error.take();
            }
            if give_up {
                return Err(match last_err {
                    Some(FsError::ChecksumMismatch { handle, block }) => {
                        FsError::ChecksumMismatch { handle, block }
                    }
                    Some(e) => FsError::Unavailable(format!(
                        "chunk {} of inode {inode}: no replica could be read: {e}",
                        loc.handle
                    )),
                    None => FsError::Unavailable(format!(
                        "chunk {} of inode {inode} has no live replica",
                        loc.handle
                    )),
                });
            }
            tokio::time::sleep(backoff(attempt)).await;
        }
    }

    /// Get a write grant for chunk `index` of a file (cached while the lease has time left).
    async fn grant(
        &self,
        inode: InodeId,
        index: u64,
        fresh: bool,
        op: OpId,
    ) -> Result<WriteGrant, FsError> {
        if !fresh {
            let grants = self.grants.lock().unwrap();
            if let Some((g, got)) = grants.get(&(inode, index)) {
                let margin = Duration::from_millis(g.lease_remaining_ms / 4);
                if got.elapsed() + margin < Duration::from_millis(g.lease_remaining_ms) {
                    return Ok(g.clone());
                }
            }
        }
        let g = self.master(&PrepareWrite { op, inode, index }).await?;
        let mut grants = self.grants.lock().unwrap();
        if grants.len() > 4096 {
            grants
                .retain(|_, (g, got)| got.elapsed() < Duration::from_millis(g.lease_remaining_ms));
        }
        grants.insert((inode, index), (g.clone(), Instant::now()));
        Ok(g)
    }

    /// Push `data` (if any) along the replica chain and commit the mutation through the primary,
    /// retrying with fresh grants on stale leases, versions and dead servers.
    async fn mutate(
        &self,
        inode: InodeId,
        index: u64,
        make: impl Fn(DataId, OpId) -> Mutation,
        data: Option<Bytes>,
    ) -> Result<CommitReply, FsError> {
        let deadline = Instant::now() + self.config.retry_deadline;
        let op = OpId {
            client: self.client_id,
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
        };
        let mut fresh = false;
        let mut attempt = 0u32;
        loop {
            let result = async {
                let g = self.grant(inode, index, fresh, op).await?;
                let data_id = DataId(rand::random());
                if let Some(data) = &data {
                    let mut chain: Vec<ServerRef> = Vec::with_capacity(1 + g.secondaries.len());
                    chain.push(g.primary.clone());
                    chain.extend(g.secondaries.iter().cloned());
                    let push = PushData {
                        data_id,
                        forward: chain[1..].to_vec(),
                        crc32c: crc32c::crc32c(data),
                    };
                    self.rpc
                        .call_with_body(&chain[0].addr, &push, data.clone())
                        .await?;
                }
                let commit = CommitMutation {
                    handle: g.handle,
                    version: g.version,
                    mutation: make(data_id, op),
                    secondaries: g.secondaries.clone(),
                };
                self.rpc.call(&g.primary.addr, &commit).await
            }
            .await;
            match result {
                Ok(reply) => {
                    self.locations.lock().unwrap().forget(inode, index);
                    return Ok(reply);
                }
                Err(FsError::ChunkFull) => return Err(FsError::ChunkFull),
                Err(e) if retryable_write(&e) && Instant::now() < deadline => {
                    tracing::debug!(%inode, index, attempt, "write retry: {e}");
                    self.grants.lock().unwrap().remove(&(inode, index));
                    fresh = true;
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Errors after which a write is retried with a fresh grant. No live chunkserver yet (a master
/// that just restarted is still hearing from them) is waited out too, within the deadline.
fn retryable_write(e: &FsError) -> bool {
    e.is_retryable()
        || matches!(
            e,
            FsError::Protocol(_) | FsError::Io(_) | FsError::NotEnoughServers { .. }
        )
}
