//! The `fuser::Filesystem` implementation. FUSE callbacks run on fuser's session threads and
//! never wait on the network: each one spawns a task on the tokio runtime that makes the client
//! calls and replies from there (fuser's `Reply*` objects are `Send`).
//!
//! Symlinks, hard links, special files and extended attributes go through [`seams`]; open-file
//! holds are taken at an inode's first open in this mount (by the create request itself for a
//! file this mount creates; for a read-only open, only once it has been open [`HOLD_DEFER`]
//! while the cluster keeps a trash, else in the background, not waited for) and dropped
//! [`HOLD_LINGER`] after its last release, in the background (an unlink or rename here takes
//! the deferred holds, waits for the holds in flight and drops the lingering ones first).

use crate::attr::{self, file_attr, file_type, inode, timestamp};
use crate::errno::OpError;
use crate::file::{FileConfig, OpenInode};
use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use quarry_client::Client;
use quarry_proto::master::SetAttr;
use quarry_proto::{Attr, FileKind, FsError, InodeId, Timestamp};
use quarry_transport::metrics;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};
use tokio::runtime::Handle;
use tokio::sync::Semaphore;

type OpResult<T> = Result<T, OpError>;

/// Settings of one mount's filesystem (the FUSE mount options live in `crate::mount`).
#[derive(Clone, Debug)]
pub struct FsConfig {
    /// How long the kernel may cache entries and attributes.
    pub ttl: Duration,
    pub max_write_bytes: u32,
    pub file: FileConfig,
    /// Bytes of write buffers across all open files of this mount.
    pub buffer_budget_bytes: usize,
}

struct OpenFile {
    inode: Arc<OpenInode>,
    append: bool,
}

/// Directory listings are taken once per `opendir`, so `readdir` offsets (index + 1) stay valid
/// for the life of the handle however the directory changes meanwhile (`rm -rf` relies on it).
struct DirListing {
    entries: Vec<(InodeId, FileType, String)>,
    /// The attributes of the first `attrs.len()` entries (`.` and `..` included), read with the
    /// listing at `taken`: the first `readdirplus` pages within the TTL need no request.
    attrs: Vec<Attr>,
    taken: Instant,
}

#[derive(Default)]
struct Handles {
    files: HashMap<u64, OpenFile>,
    dirs: HashMap<u64, Arc<DirListing>>,
    /// Open inodes and how many handles hold each.
    inodes: HashMap<InodeId, (Arc<OpenInode>, usize)>,
}

struct Shared {
    client: Client,
    config: FsConfig,
    budget: Arc<Semaphore>,
    next_handle: AtomicU64,
    handles: Mutex<Handles>,
    /// Per-inode locks held across a handle's open or release bookkeeping and the hold request
    /// it sends, so this mount's holds and unholds of an inode reach the master in order (an
    /// unhold overtaking the next open's hold would let an unlink drop an open file).
    hold_locks: Mutex<HashMap<InodeId, Arc<tokio::sync::Mutex<()>>>>,
    /// Inodes no longer open here whose hold on the master is kept until a time (their last
    /// release plus [`HOLD_LINGER`]). Changed only under the inode's hold lock.
    lingering: Mutex<HashMap<InodeId, Instant>>,
    /// A read-only open does not wait for its hold (a Raft commit): the open returns and the
    /// hold goes out in the background, holding a share of this lock (and the inode's hold
    /// lock) until it landed. An unlink or rename through this mount first takes the lock
    /// whole, so it reaches the master after every such hold; an unlink elsewhere that gets
    /// there first moves the file to the trash, and the late hold takes it back as an open
    /// orphan (with the trash off, the file is gone and reads fail with ENOENT).
    pending_holds: Arc<tokio::sync::RwLock<()>>,
    /// Inodes open here read-only with no hold on the master yet, and when the hold is due (their
    /// first open plus [`HOLD_DEFER`]). A file whose handles are all closed by then never costs a
    /// hold and its drop (two Raft commits per file that `grep -r` or `cat` reads). One unlinked
    /// elsewhere meanwhile is in the trash, from where the hold takes it back: when it is due,
    /// at once when a read or stat finds the file gone, and before any unlink or rename through
    /// this mount. Changed only under the inode's hold lock.
    deferred: Mutex<HashMap<InodeId, Instant>>,
    /// (size, mtime) of each file as of its last open here: a file opened again unchanged keeps
    /// the kernel's page cache (a warm read stays local); any change, from this mount or
    /// another, moves the mtime and drops it (close-to-open).
    cache_stamps: Mutex<HashMap<InodeId, (u64, Timestamp)>>,
    /// Files known to have no `security.capability`, and since when: the kernel asks for it
    /// before every write(2) to learn whether the write must drop capabilities, a master
    /// request each time. Answered here for [`FsConfig::ttl`] after the master last said so or
    /// this mount created the file, as attributes are; a change of the file's extended
    /// attributes through this mount forgets it, one through another mount is seen within the
    /// TTL.
    no_caps: Mutex<HashMap<InodeId, Instant>>,
    /// (size, mtime) of the attributes last handed to the kernel for each inode (every reply
    /// with attributes goes through [`Shared::view`]). An open that finds the file changed
    /// since tells the kernel to drop its cached attributes, so a read sees the new size even
    /// within the attribute TTL (close-to-open between mounts).
    told: Mutex<HashMap<InodeId, (u64, Timestamp)>>,
    /// The session's notifier, set once the mount is up.
    notifier: Arc<OnceLock<fuser::Notifier>>,
}

/// Most entries of one `readdirplus` page whose attributes are fetched (one master request);
/// what does not fit in the kernel's buffer is fetched again for the next page.
const READDIRPLUS_PAGE: usize = 128;

/// The extended attribute the kernel asks for before each write.
const CAPABILITY_XATTR: &str = "security.capability";

/// Files whose cache stamps are kept (the map is cleared past this).
const CACHE_STAMPS_MAX: usize = 65_536;

/// How long a file's open hold outlives its last close in this mount. A close does not wait for
/// the hold's drop (a Raft commit on the masters): the drops of recent closes go out together in
/// the background, and an open again within this time needs no new hold. An unlink or rename
/// through this mount first drops every lingering hold, so a file removed here after its close
/// goes (or moves to the trash) at once; one removed elsewhere goes up to this much later.
pub const HOLD_LINGER: Duration = Duration::from_secs(1);

/// How long a read-only open goes without a hold on the master (see [`Shared::deferred`]).
pub const HOLD_DEFER: Duration = Duration::from_secs(1);

/// Shortest trash retention with which read-only opens defer their holds: a hold must land
/// while the file an unlink elsewhere moved to the trash is still there, so the retention has to
/// dwarf [`HOLD_DEFER`] (the default is a day).
pub const MIN_TRASH_FOR_DEFER: Duration = Duration::from_secs(60);

/// How often the mount asks the masters for the trash retention again while it defers holds,
/// and while it does not (a new cluster's leader logs its configured retention shortly after
/// the mount may have connected).
const INFO_REFRESH: Duration = Duration::from_secs(10);
const INFO_REFRESH_NOT_DEFERRING: Duration = Duration::from_secs(1);

/// How often lingering holds are looked at.
const LINGER_TICK: Duration = Duration::from_millis(250);

/// Longest wait at unmount for the lingering holds' drops. Any not dropped by then stay on the
/// masters until the session timeout drops them (see [`keep_session`]).
const UNMOUNT_DROP_WAIT: Duration = Duration::from_secs(3);

/// The FUSE operations counted in the metrics (those served on the runtime).
const OPS: &[&str] = &[
    "create",
    "fallocate",
    "flush",
    "fsync",
    "getattr",
    "getxattr",
    "link",
    "listxattr",
    "lookup",
    "mkdir",
    "mknod",
    "open",
    "opendir",
    "read",
    "readdirplus",
    "readlink",
    "release",
    "removexattr",
    "rename",
    "rmdir",
    "setattr",
    "setxattr",
    "statfs",
    "symlink",
    "unlink",
    "write",
];

/// The metrics of one FUSE operation (in the process's registry, shared by its mounts).
struct OpStats {
    calls: Arc<metrics::Counter>,
    errors: Arc<metrics::Counter>,
    latency: Arc<metrics::Histogram>,
}

impl OpStats {
    fn new(op: &str) -> Arc<OpStats> {
        let m = metrics::global();
        let l = [("op", op)];
        Arc::new(OpStats {
            calls: m.counter("quarry_fuse_ops_total", "FUSE operations answered.", &l),
            errors: m.counter(
                "quarry_fuse_errors_total",
                "FUSE operations answered with an error.",
                &l,
            ),
            latency: m.histogram(
                "quarry_fuse_op_seconds",
                "Time from a FUSE request to its reply.",
                metrics::LATENCY_BUCKETS,
                &l,
            ),
        })
    }
}

/// The FUSE filesystem of one mount.
pub struct QuarryFs {
    runtime: Handle,
    shared: Arc<Shared>,
    /// Per operation in [`OPS`], its metrics (read-only once made: no lock per request).
    ops: HashMap<&'static str, Arc<OpStats>>,
    read_bytes: Arc<metrics::Counter>,
    written_bytes: Arc<metrics::Counter>,
}

impl QuarryFs {
    /// Where the mount puts the session's notifier once it is up.
    pub(crate) fn notifier_slot(&self) -> Arc<OnceLock<fuser::Notifier>> {
        Arc::clone(&self.shared.notifier)
    }

    pub fn new(client: Client, runtime: Handle, config: FsConfig) -> QuarryFs {
        let m = metrics::global();
        QuarryFs {
            ops: OPS.iter().map(|op| (*op, OpStats::new(op))).collect(),
            read_bytes: m.counter(
                "quarry_fuse_read_bytes_total",
                "Bytes returned by FUSE reads.",
                &[],
            ),
            written_bytes: m.counter(
                "quarry_fuse_written_bytes_total",
                "Bytes accepted by FUSE writes.",
                &[],
            ),
            shared: {
                let shared = Arc::new(Shared {
                    client,
                    budget: Arc::new(Semaphore::new(config.buffer_budget_bytes)),
                    config,
                    next_handle: AtomicU64::new(1),
                    handles: Mutex::new(Handles::default()),
                    hold_locks: Mutex::new(HashMap::new()),
                    lingering: Mutex::new(HashMap::new()),
                    pending_holds: Arc::new(tokio::sync::RwLock::new(())),
                    deferred: Mutex::new(HashMap::new()),
                    cache_stamps: Mutex::new(HashMap::new()),
                    no_caps: Mutex::new(HashMap::new()),
                    told: Mutex::new(HashMap::new()),
                    notifier: Arc::new(OnceLock::new()),
                });
                runtime.spawn(drop_expired_holds(Arc::downgrade(&shared)));
                runtime.spawn(refresh_trash_retention(Arc::downgrade(&shared)));
                runtime.spawn(keep_session(Arc::downgrade(&shared)));
                shared
            },
            runtime,
        }
    }

    /// Count operation `name`, answered on the FUSE thread since `started`, as [`Self::spawn`]
    /// counts those it runs.
    fn answered_here(&self, name: &'static str, started: std::time::Instant) {
        if let Some(stats) = self.ops.get(name) {
            stats.calls.inc();
            stats.latency.observe_since(started);
        }
    }

    /// Run `op` on the runtime and hand its result to `done` there; count it as operation
    /// `name` (calls, errors, latency until the reply).
    fn spawn<T, F, Fut, D>(&self, name: &'static str, op: F, done: D)
    where
        F: FnOnce(Arc<Shared>) -> Fut,
        Fut: Future<Output = OpResult<T>> + Send + 'static,
        D: FnOnce(Result<T, Errno>) + Send + 'static,
        T: Send + 'static,
    {
        let stats = self
            .ops
            .get(name)
            .cloned()
            .unwrap_or_else(|| OpStats::new(name));
        let started = std::time::Instant::now();
        let fut = op(Arc::clone(&self.shared));
        self.runtime.spawn(async move {
            let result = fut.await.map_err(|e| e.0);
            stats.calls.inc();
            if result.is_err() {
                stats.errors.inc();
            }
            done(result);
            stats.latency.observe_since(started);
        });
    }
}

/// Every [`LINGER_TICK`] until the mount is gone: take the deferred holds that are due and drop
/// the holds whose linger time is over.
async fn drop_expired_holds(shared: std::sync::Weak<Shared>) {
    let mut tick = tokio::time::interval(LINGER_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(s) = shared.upgrade() else { return };
        let now = Instant::now();
        tokio::join!(s.take_deferred(Some(now)), s.drop_lingering(Some(now)));
    }
}

/// How often the mount tells the masters it is there while it holds files: a quarter of their
/// session timeout, between 100 ms and 60 s (60 s when holds never expire).
fn keep_alive_interval(session_timeout_ms: u64) -> Duration {
    match session_timeout_ms {
        0 => Duration::from_secs(60),
        ms => Duration::from_millis((ms / 4).clamp(100, 60_000)),
    }
}

/// Until the mount is gone: while it holds files on the masters, tell them it is there (a
/// `KeepAlive`) often enough that they do not drop its holds as those of a client that went
/// away. When the reply counts fewer holds than the mount has (it was cut off for longer than
/// the timeout, and they were dropped), take them again: a file unlinked meanwhile comes back
/// from the trash as an open orphan.
async fn keep_session(shared: std::sync::Weak<Shared>) {
    // Until the first answer (sent with or without holds) gives the masters' timeout, ask
    // again after 100 ms, doubling up to 5 s while it fails (masters still electing, or too old
    // to know the request).
    let mut interval = None;
    let mut retry = Duration::from_millis(50);
    loop {
        retry = (retry * 2).min(Duration::from_secs(5));
        tokio::time::sleep(interval.unwrap_or(retry)).await;
        let Some(s) = shared.upgrade() else { return };
        let held = s.held_inodes();
        if held.is_empty() && interval.is_some() {
            continue;
        }
        match s.client.keep_alive().await {
            Ok(reply) => {
                interval = Some(keep_alive_interval(reply.session_timeout_ms));
                if (reply.holds as usize) < held.len() {
                    tracing::warn!(
                        masters = reply.holds,
                        here = held.len(),
                        "the masters hold fewer files for this mount than it has open; \
                         taking the holds again"
                    );
                    s.hold_again(held).await;
                }
            }
            Err(e) => tracing::debug!(error = %e, "keep-alive"),
        }
    }
}

/// Until the mount is gone, ask the masters for the trash retention every [`INFO_REFRESH`]
/// (or [`INFO_REFRESH_NOT_DEFERRING`]): a new leader logs its configured one, and read-only
/// opens defer their holds only while it is long.
async fn refresh_trash_retention(shared: std::sync::Weak<Shared>) {
    let mut deferring = None;
    loop {
        let Some(s) = shared.upgrade() else { return };
        let defer = s.client.trash_retention() >= MIN_TRASH_FOR_DEFER;
        if deferring != Some(defer) {
            deferring = Some(defer);
            tracing::info!(
                trash_retention_ms = s.client.trash_retention().as_millis() as u64,
                "read-only opens {} their holds",
                if defer { "defer" } else { "do not defer" }
            );
        }
        drop(s);
        tokio::time::sleep(if defer {
            INFO_REFRESH
        } else {
            INFO_REFRESH_NOT_DEFERRING
        })
        .await;
        let Some(s) = shared.upgrade() else { return };
        if let Err(e) = s.client.refresh_cluster_info().await {
            tracing::debug!(error = %e, "cluster info");
        }
    }
}

fn name_of(name: &OsStr) -> Result<String, Errno> {
    // Quarry names are UTF-8; a name that is not cannot exist or be created.
    name.to_str().map(str::to_string).ok_or(Errno::EINVAL)
}

fn time(t: TimeOrNow) -> Timestamp {
    match t {
        TimeOrNow::SpecificTime(t) => timestamp(t),
        TimeOrNow::Now => Timestamp::now(),
    }
}

impl Shared {
    fn ttl(&self) -> &Duration {
        &self.config.ttl
    }

    fn open_inode(&self, inode: InodeId) -> Option<Arc<OpenInode>> {
        let h = self.handles.lock().unwrap();
        h.inodes.get(&inode).map(|(o, _)| Arc::clone(o))
    }

    /// Attributes as this mount sees them: the master's, with the size of local dirty data.
    fn view(&self, attr: &Attr) -> FileAttr {
        let size = self
            .open_inode(attr.inode)
            .and_then(|o| o.dirty_size())
            .unwrap_or(attr.size);
        {
            let mut told = self.told.lock().unwrap();
            if told.len() >= CACHE_STAMPS_MAX {
                told.clear();
            }
            told.insert(attr.inode, (size, attr.mtime));
        }
        file_attr(attr, size)
    }

    /// Make the kernel drop its cached attributes of `ino` (they are asked again when next
    /// needed). Best effort: an inode the kernel does not hold is no error.
    fn invalidate_attrs(&self, ino: InodeId) {
        if let Some(n) = self.notifier.get() {
            if let Err(e) = n.inval_inode(attr::ino(ino), -1, 0) {
                tracing::debug!(inode = %ino, error = %e, "attribute invalidation");
            }
        }
    }

    /// The attributes of directory `ino` from the reply of a change to its entries through this
    /// mount less than the TTL ago, and what is left of the TTL. The kernel drops a directory's
    /// attributes after each create, unlink or rename in it and asks again at its next
    /// permission check: without these, one master round trip per file in a loop that creates,
    /// renames or removes files.
    fn recent_dir_attr(&self, ino: InodeId) -> Option<(FileAttr, Duration)> {
        let (attr, at) = self.client.recent_dir_attr(ino)?;
        let rest = self.config.ttl.checked_sub(at.elapsed())?;
        (!rest.is_zero()).then(|| (self.view(&attr), rest))
    }

    async fn getattr(&self, ino: InodeId) -> OpResult<FileAttr> {
        let attr = match self.client.getattr(ino).await {
            // Open here with its hold deferred and unlinked elsewhere: take it back.
            Err(FsError::NotFound) if self.take_deferred_hold(ino).await => {
                self.client.getattr(ino).await?
            }
            r => r?,
        };
        let v = self.view(&attr);
        tracing::debug!(inode = %ino, master = attr.size, seen = v.size, "getattr");
        Ok(v)
    }

    async fn lookup(&self, parent: InodeId, name: String) -> OpResult<FileAttr> {
        let attr = self.client.lookup(parent, &name).await?;
        Ok(self.view(&attr))
    }

    #[allow(clippy::too_many_arguments)]
    async fn setattr(
        &self,
        ino: InodeId,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        caller: u32,
    ) -> OpResult<FileAttr> {
        let mut attr = None;
        if let Some(size) = size {
            attr = Some(match self.open_inode(ino) {
                Some(open) => open.truncate(size).await?,
                None => self.client.truncate(ino, size).await?,
            });
        }
        if mode.is_some() || uid.is_some() || gid.is_some() || atime.is_some() || mtime.is_some() {
            let req = SetAttr {
                inode: ino,
                mode: mode.map(|m| m & 0o7777),
                uid,
                gid,
                atime: atime.map(time),
                mtime: mtime.map(time),
                // chown by an unprivileged caller drops setuid/setgid, as Linux does.
                clear_suid: caller != 0 && (uid.is_some() || gid.is_some()),
                ..Default::default()
            };
            attr = Some(match self.open_inode(ino) {
                Some(open) => open.setattr(req).await?,
                None => self.client.setattr(req).await?,
            });
        }
        let attr = match attr {
            Some(a) => a,
            None => self.client.getattr(ino).await?,
        };
        Ok(self.view(&attr))
    }

    /// A new handle on `attr`'s file; the size is the master's at open unless this mount holds
    /// dirty data for it. `held`: the master already has this mount's hold on it (the create
    /// request took it). `read_only`: the hold, if one is needed, is deferred (see
    /// [`Shared::deferred`]) or goes out in the background (see [`Shared::pending_holds`]); a
    /// handle that may write waits for it.
    async fn open_handle(
        self: &Arc<Self>,
        attr: &Attr,
        append: bool,
        held: bool,
        read_only: bool,
    ) -> u64 {
        let lock = self.hold_lock(attr.inode);
        let guard = Arc::clone(&lock).lock_owned().await;
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        let (open, first) = {
            let mut h = self.handles.lock().unwrap();
            let entry = h.inodes.entry(attr.inode).or_insert_with(|| {
                let open = OpenInode::new(
                    self.client.clone(),
                    attr.inode,
                    attr.size,
                    self.config.file.clone(),
                    Arc::clone(&self.budget),
                );
                (Arc::new(open), 0)
            });
            entry.1 += 1;
            let first = entry.1 == 1;
            let open = Arc::clone(&entry.0);
            h.files.insert(
                fh,
                OpenFile {
                    inode: Arc::clone(&open),
                    append,
                },
            );
            (open, first)
        };
        open.refresh(attr.size).await;
        if first {
            // The first handle of the inode in this mount: hold it open on the master, so an
            // unlink keeps its data until the last close here — unless the hold is there
            // already (taken by the create, or lingering after a recent close).
            let lingered = self.lingering.lock().unwrap().remove(&attr.inode).is_some();
            let defer = read_only && self.client.trash_retention() >= MIN_TRASH_FOR_DEFER;
            if !held && !lingered && defer {
                self.deferred
                    .lock()
                    .unwrap()
                    .insert(attr.inode, Instant::now() + HOLD_DEFER);
            } else if !held && !lingered {
                if read_only {
                    // The inode's hold lock and a share of `pending_holds` go with the request:
                    // this handle's release, a later open of the inode, and an unlink or
                    // rename through this mount wait for it to land.
                    let pending = Arc::clone(&self.pending_holds).read_owned().await;
                    let s = Arc::clone(self);
                    let inode = attr.inode;
                    tokio::spawn(async move {
                        s.hold(inode, true).await;
                        drop(pending);
                        drop(guard);
                        s.drop_hold_lock(inode, lock);
                    });
                    return fh;
                }
                self.hold(attr.inode, true).await;
            }
        } else if !read_only && self.deferred.lock().unwrap().remove(&attr.inode).is_some() {
            // Open read-only here, now for writing too: a handle that may write waits for it.
            self.hold(attr.inode, true).await;
        }
        drop(guard);
        self.drop_hold_lock(attr.inode, lock);
        fh
    }

    /// Record (`absent`) or forget that `inode` has no `security.capability`.
    fn set_no_caps(&self, inode: InodeId, absent: bool) {
        let mut known = self.no_caps.lock().unwrap();
        if absent {
            if known.len() >= CACHE_STAMPS_MAX {
                known.clear();
            }
            known.insert(inode, Instant::now());
        } else {
            known.remove(&inode);
        }
    }

    /// `getxattr`, with `security.capability` answered here while it is known absent.
    async fn getxattr(&self, ino: InodeId, name: &OsStr) -> OpResult<Vec<u8>> {
        let capability = name == CAPABILITY_XATTR;
        if capability {
            let fresh = self
                .no_caps
                .lock()
                .unwrap()
                .get(&ino)
                .is_some_and(|since| since.elapsed() < self.config.ttl);
            if fresh {
                return Err(OpError(Errno::from_i32(libc::ENODATA)));
            }
        }
        let result = seams::getxattr(&self.client, ino, name).await;
        if capability {
            let absent = matches!(&result, Err(e) if e.0 == Errno::from_i32(libc::ENODATA));
            self.set_no_caps(ino, absent);
        }
        result
    }

    /// Wait until every hold sent in the background by this mount has landed.
    async fn wait_pending_holds(&self) {
        drop(self.pending_holds.write().await);
    }

    fn hold_lock(&self, inode: InodeId) -> Arc<tokio::sync::Mutex<()>> {
        Arc::clone(self.hold_locks.lock().unwrap().entry(inode).or_default())
    }

    /// Forget `inode`'s hold lock once nobody else has it (clones are only taken under the map's
    /// mutex, so a later user makes a new one).
    fn drop_hold_lock(&self, inode: InodeId, lock: Arc<tokio::sync::Mutex<()>>) {
        let mut locks = self.hold_locks.lock().unwrap();
        if Arc::strong_count(&lock) == 2 {
            locks.remove(&inode);
        }
    }

    /// Open a file; the flag says whether the kernel may keep its cached pages (the file is
    /// unchanged since it was last opened here).
    async fn open(self: &Arc<Self>, ino: InodeId, flags: OpenFlags) -> OpResult<(u64, bool)> {
        let attr = self.client.getattr(ino).await?;
        if attr.kind == FileKind::Directory {
            return Err(OpError(Errno::EISDIR));
        }
        let stamp = (attr.size, attr.mtime);
        let told = self.told.lock().unwrap().insert(ino, stamp);
        if told != Some(stamp) {
            // The kernel may hold older attributes (from a lookup or a listing within the TTL):
            // a read must not stop at an old size.
            self.invalidate_attrs(ino);
        }
        let keep = {
            let mut stamps = self.cache_stamps.lock().unwrap();
            if stamps.len() >= CACHE_STAMPS_MAX {
                stamps.clear();
            }
            stamps.insert(ino, stamp) == Some(stamp)
        };
        Ok((
            self.open_handle(
                &attr,
                flags.0 & libc::O_APPEND != 0,
                false,
                flags.0 & libc::O_ACCMODE == libc::O_RDONLY,
            )
            .await,
            keep,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    async fn create(
        self: &Arc<Self>,
        parent: InodeId,
        name: String,
        mode: u32,
        umask: u32,
        flags: i32,
        uid: u32,
        gid: u32,
    ) -> OpResult<(FileAttr, u64)> {
        let exclusive = flags & libc::O_EXCL != 0;
        let attr = self
            .client
            .create_held(parent, &name, mode & 0o7777 & !umask, uid, gid, exclusive)
            .await?;
        self.set_no_caps(attr.inode, true);
        let fh = self
            .open_handle(&attr, flags & libc::O_APPEND != 0, true, false)
            .await;
        Ok((self.view(&attr), fh))
    }

    fn file(&self, fh: FileHandle) -> OpResult<(Arc<OpenInode>, bool)> {
        let h = self.handles.lock().unwrap();
        let f = h.files.get(&fh.0).ok_or(OpError(Errno::EBADF))?;
        Ok((Arc::clone(&f.inode), f.append))
    }

    async fn release(&self, fh: FileHandle) -> OpResult<()> {
        let (open, _) = self.file(fh)?;
        let res = open.flush().await;
        let lock = self.hold_lock(open.inode);
        let guard = lock.lock().await;
        let last = {
            let mut h = self.handles.lock().unwrap();
            h.files.remove(&fh.0);
            match h.inodes.get_mut(&open.inode) {
                Some(entry) => {
                    entry.1 -= 1;
                    let last = entry.1 == 0;
                    if last {
                        h.inodes.remove(&open.inode);
                    }
                    last
                }
                None => false,
            }
        };
        // A deferred hold that was never taken has nothing to drop; any other is dropped by
        // `drop_lingering` later, unless the file is opened here again first.
        if last && self.deferred.lock().unwrap().remove(&open.inode).is_none() {
            self.lingering
                .lock()
                .unwrap()
                .insert(open.inode, Instant::now() + HOLD_LINGER);
        }
        drop(guard);
        self.drop_hold_lock(open.inode, lock);
        Ok(res?)
    }

    /// Drop the lingering holds due by `due` (all of them if `None`), concurrently (the masters
    /// commit concurrent requests together). Each is dropped under its inode's hold lock, and
    /// only if no open took it back meanwhile.
    async fn drop_lingering(self: &Arc<Self>, due: Option<Instant>) {
        let inodes: Vec<InodeId> = self
            .lingering
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, until)| due.is_none_or(|d| **until <= d))
            .map(|(i, _)| *i)
            .collect();
        self.hold_each_if(inodes, false, |s, inode| {
            s.lingering.lock().unwrap().remove(&inode).is_some()
        })
        .await;
    }

    /// For each of `inodes`, concurrently, under its hold lock: if `still` (which may update
    /// the state it checks) says so, take (`hold`) or drop this mount's hold on it.
    async fn hold_each_if(
        self: &Arc<Self>,
        inodes: Vec<InodeId>,
        hold: bool,
        still: fn(&Shared, InodeId) -> bool,
    ) {
        let mut calls = tokio::task::JoinSet::new();
        for inode in inodes {
            let s = Arc::clone(self);
            calls.spawn(async move {
                let lock = s.hold_lock(inode);
                let guard = lock.lock().await;
                if still(&s, inode) {
                    s.hold(inode, hold).await;
                }
                drop(guard);
                s.drop_hold_lock(inode, lock);
            });
        }
        while calls.join_next().await.is_some() {}
    }

    /// Take the deferred holds due by `due` (all of them if `None`), concurrently, each under
    /// its inode's hold lock and only if it is still deferred (not closed or taken meanwhile).
    async fn take_deferred(self: &Arc<Self>, due: Option<Instant>) {
        let inodes: Vec<InodeId> = self
            .deferred
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, at)| due.is_none_or(|d| **at <= d))
            .map(|(i, _)| *i)
            .collect();
        let mut holds = tokio::task::JoinSet::new();
        for inode in inodes {
            let s = Arc::clone(self);
            holds.spawn(async move { s.take_deferred_hold(inode).await });
        }
        while holds.join_next().await.is_some() {}
    }

    /// Take `inode`'s hold now if it is deferred. Returns whether the master took it (the file
    /// is live again if an unlink elsewhere had moved it to the trash).
    async fn take_deferred_hold(&self, inode: InodeId) -> bool {
        let lock = self.hold_lock(inode);
        let guard = lock.lock().await;
        let mut taken = false;
        if self.deferred.lock().unwrap().remove(&inode).is_some() {
            taken = self.hold(inode, true).await;
        }
        drop(guard);
        self.drop_hold_lock(inode, lock);
        taken
    }

    /// Whether this mount has a hold on `inode` at the masters, or is taking one: it is open
    /// here (and its hold not deferred), or lingering after its last close.
    fn has_hold(&self, inode: InodeId) -> bool {
        let lingering = self.lingering.lock().unwrap().contains_key(&inode);
        let open = self.handles.lock().unwrap().inodes.contains_key(&inode);
        lingering || (open && !self.deferred.lock().unwrap().contains_key(&inode))
    }

    /// Every inode of which [`Shared::has_hold`] holds.
    fn held_inodes(&self) -> Vec<InodeId> {
        let mut candidates: Vec<InodeId> = self
            .handles
            .lock()
            .unwrap()
            .inodes
            .keys()
            .copied()
            .collect();
        candidates.extend(self.lingering.lock().unwrap().keys().copied());
        candidates.retain(|i| self.has_hold(*i));
        candidates
    }

    /// Take the hold on each of `inodes` again, concurrently, each under its inode's hold lock
    /// and only if this mount still has it.
    async fn hold_again(self: &Arc<Self>, inodes: Vec<InodeId>) {
        self.hold_each_if(inodes, true, Shared::has_hold).await;
    }

    /// Before an unlink or rename here: drop the holds of files closed here, so that a file
    /// whose last name this removes goes now, as it would had its close dropped the hold.
    async fn drop_all_lingering(self: &Arc<Self>) {
        if !self.lingering.lock().unwrap().is_empty() {
            self.drop_lingering(None).await;
        }
    }

    /// Take or drop this mount's open hold on `inode`. A failure only costs the unlink-while-open
    /// guarantee, so it is logged rather than failing the open or close. Returns whether it
    /// succeeded.
    async fn hold(&self, inode: InodeId, hold: bool) -> bool {
        match self.client.hold_open(inode, hold).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(%inode, hold, error = %e, "open hold");
                false
            }
        }
    }

    /// Sticky directories: only root, the directory's owner or the entry's owner may remove or
    /// rename an entry (`default_permissions` leaves this to the filesystem).
    async fn check_sticky(&self, uid: u32, parent: InodeId, name: &str) -> OpResult<()> {
        if uid == 0 {
            return Ok(());
        }
        let dir = self.client.getattr(parent).await?;
        if dir.mode & libc::S_ISVTX == 0 || dir.uid == uid {
            return Ok(());
        }
        match self.client.lookup(parent, name).await {
            Ok(entry) if entry.uid != uid => Err(OpError(Errno::EPERM)),
            // A missing entry is the operation's own error to report.
            _ => Ok(()),
        }
    }

    /// Take the directory's listing (with the attributes of its first entries: one request
    /// for a directory of up to 1024 entries).
    async fn opendir(&self, ino: InodeId) -> OpResult<u64> {
        let taken = Instant::now();
        let listing = self.client.readdir_plus(ino).await?;
        let mut entries = Vec::with_capacity(listing.entries.len() + 2);
        // The parent is not known from the inode alone; the kernel fills in `..` for lookups,
        // and readdir's `..` inode number is informational.
        entries.push((ino, FileType::Directory, ".".to_string()));
        entries.push((ino, FileType::Directory, "..".to_string()));
        entries.extend(
            listing
                .entries
                .into_iter()
                .map(|e| (e.inode, file_type(e.kind), e.name)),
        );
        let mut attrs = Vec::with_capacity(listing.attrs.len() + 2);
        attrs.push(listing.dir.clone());
        attrs.push(listing.dir);
        attrs.extend(listing.attrs);
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().unwrap().dirs.insert(
            fh,
            Arc::new(DirListing {
                entries,
                attrs,
                taken,
            }),
        );
        Ok(fh)
    }
}

impl Filesystem for QuarryFs {
    /// At unmount: drop the lingering holds now (waiting at most [`UNMOUNT_DROP_WAIT`]; this
    /// may run on any thread, so it waits on a channel rather than entering the runtime).
    fn destroy(&mut self) {
        if self.shared.lingering.lock().unwrap().is_empty() {
            return;
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let s = Arc::clone(&self.shared);
        self.runtime.spawn(async move {
            s.drop_lingering(None).await;
            let _ = tx.send(());
        });
        if rx.recv_timeout(UNMOUNT_DROP_WAIT).is_err() {
            tracing::warn!("unmount: open holds of recently closed files not all dropped");
        }
    }

    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        if let Err(nearest) = config.set_max_write(self.shared.config.max_write_bytes) {
            let _ = config.set_max_write(nearest);
        }
        if let Err(nearest) = config.set_max_readahead(self.shared.config.max_write_bytes) {
            let _ = config.set_max_readahead(nearest);
        }
        // Directory pages with each entry's attributes (`readdirplus`, one master request per
        // page) where the kernel expects the entries to be looked up (`ls -l`, `du`, `find`,
        // `rm -rf`, `grep -r`): a `LOOKUP` per entry otherwise.
        let plus = fuser::InitFlags::FUSE_DO_READDIRPLUS | fuser::InitFlags::FUSE_READDIRPLUS_AUTO;
        if let Err(missing) = config.add_capabilities(plus) {
            tracing::info!(?missing, "the kernel offers no readdirplus: plain readdir");
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = match name_of(name) {
            Ok(n) => n,
            Err(_) => return reply.error(Errno::ENOENT),
        };
        self.spawn(
            "lookup",
            |s| async move {
                let a = s.lookup(inode(parent), name).await?;
                Ok((a, *s.ttl()))
            },
            |r| match r {
                Ok((a, ttl)) => reply.entry(&ttl, &a, Generation(0)),
                Err(e) => reply.error(e),
            },
        );
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        // Known here: answered on this thread (a map lookup), no task.
        if let Some((a, ttl)) = self.shared.recent_dir_attr(inode(ino)) {
            let started = std::time::Instant::now();
            reply.attr(&ttl, &a);
            self.answered_here("getattr", started);
            return;
        }
        let ttl = self.shared.config.ttl;
        self.spawn(
            "getattr",
            |s| async move { s.getattr(inode(ino)).await },
            move |r| match r {
                Ok(a) => reply.attr(&ttl, &a),
                Err(e) => reply.error(e),
            },
        );
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        // ctime is the master's to set (it changes with every attribute change).
        let ttl = self.shared.config.ttl;
        let caller = req.uid();
        self.spawn(
            "setattr",
            |s| async move {
                s.setattr(inode(ino), mode, uid, gid, size, atime, mtime, caller)
                    .await
            },
            move |r| match r {
                Ok(a) => reply.attr(&ttl, &a),
                Err(e) => reply.error(e),
            },
        );
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.spawn(
            "readlink",
            |s| async move { seams::readlink(&s.client, inode(ino)).await },
            |r| match r {
                Ok(target) => reply.data(&target),
                Err(e) => reply.error(e),
            },
        );
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let name = match name_of(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let (uid, gid) = (req.uid(), req.gid());
        let ttl = self.shared.config.ttl;
        self.spawn(
            "mknod",
            |s| async move {
                let attr = if mode & libc::S_IFMT == libc::S_IFREG {
                    s.client
                        .create(inode(parent), &name, mode & 0o7777 & !umask, uid, gid, true)
                        .await?
                } else {
                    seams::mknod_special(
                        &s.client,
                        inode(parent),
                        &name,
                        mode,
                        umask,
                        rdev,
                        uid,
                        gid,
                    )
                    .await?
                };
                Ok(s.view(&attr))
            },
            move |r| match r {
                Ok(a) => reply.entry(&ttl, &a, Generation(0)),
                Err(e) => reply.error(e),
            },
        );
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let name = match name_of(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let (uid, gid) = (req.uid(), req.gid());
        let ttl = self.shared.config.ttl;
        self.spawn(
            "mkdir",
            |s| async move {
                let attr = s
                    .client
                    .mkdir(inode(parent), &name, mode & 0o7777 & !umask, uid, gid)
                    .await?;
                Ok(s.view(&attr))
            },
            move |r| match r {
                Ok(a) => reply.entry(&ttl, &a, Generation(0)),
                Err(e) => reply.error(e),
            },
        );
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = match name_of(name) {
            Ok(n) => n,
            Err(_) => return reply.error(Errno::ENOENT),
        };
        // A file open in any mount keeps its data after its last name goes (open-file holds),
        // until its last close.
        let uid = req.uid();
        self.spawn(
            "unlink",
            |s| async move {
                s.check_sticky(uid, inode(parent), &name).await?;
                s.take_deferred(None).await;
                s.wait_pending_holds().await;
                s.drop_all_lingering().await;
                Ok(s.client.unlink(inode(parent), &name).await?)
            },
            |r| match r {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            },
        );
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = match name_of(name) {
            Ok(n) => n,
            Err(_) => return reply.error(Errno::ENOENT),
        };
        let uid = req.uid();
        self.spawn(
            "rmdir",
            |s| async move {
                s.check_sticky(uid, inode(parent), &name).await?;
                Ok(s.client.rmdir(inode(parent), &name).await?)
            },
            |r| match r {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            },
        );
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let name = match name_of(link_name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let target = target.as_os_str().to_os_string();
        let (uid, gid) = (req.uid(), req.gid());
        let ttl = self.shared.config.ttl;
        self.spawn(
            "symlink",
            |s| async move {
                let attr =
                    seams::symlink(&s.client, inode(parent), &name, &target, uid, gid).await?;
                Ok(s.view(&attr))
            },
            move |r| match r {
                Ok(a) => reply.entry(&ttl, &a, Generation(0)),
                Err(e) => reply.error(e),
            },
        );
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (name, newname) = match (name_of(name), name_of(newname)) {
            (Ok(a), Ok(b)) => (a, b),
            _ => return reply.error(Errno::EINVAL),
        };
        let uid = req.uid();
        self.spawn(
            "rename",
            |s| async move {
                let flags = rename_flags(flags)?;
                s.check_sticky(uid, inode(parent), &name).await?;
                s.check_sticky(uid, inode(newparent), &newname).await?;
                s.take_deferred(None).await;
                s.wait_pending_holds().await;
                s.drop_all_lingering().await;
                Ok(s.client
                    .rename_flags(inode(parent), &name, inode(newparent), &newname, flags)
                    .await?)
            },
            |r| match r {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            },
        );
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let name = match name_of(newname) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let ttl = self.shared.config.ttl;
        self.spawn(
            "link",
            |s| async move {
                let attr = seams::link(&s.client, inode(ino), inode(newparent), &name).await?;
                Ok(s.view(&attr))
            },
            move |r| match r {
                Ok(a) => reply.entry(&ttl, &a, Generation(0)),
                Err(e) => reply.error(e),
            },
        );
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let append = flags.0 & libc::O_APPEND != 0;
        self.spawn(
            "open",
            |s| async move { s.open(inode(ino), flags).await },
            move |r| match r {
                Ok((fh, keep)) => reply.opened(
                    FileHandle(fh),
                    if append {
                        append_open_flags()
                    } else if keep {
                        FopenFlags::FOPEN_KEEP_CACHE
                    } else {
                        FopenFlags::empty()
                    },
                ),
                Err(e) => reply.error(e),
            },
        );
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let read_bytes = self.read_bytes.clone();
        self.spawn(
            "read",
            |s| async move {
                let (open, _) = s.file(fh)?;
                match open.read(offset, size).await {
                    // Its hold deferred and the file unlinked elsewhere: take it back and retry.
                    Err(FsError::NotFound) if s.take_deferred_hold(open.inode).await => {
                        Ok(open.read(offset, size).await?)
                    }
                    r => Ok(r?),
                }
            },
            move |r| match r {
                Ok(b) => {
                    read_bytes.add(b.len() as u64);
                    reply.data(&b)
                }
                Err(e) => reply.error(e),
            },
        );
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let data = data.to_vec();
        let written_bytes = self.written_bytes.clone();
        self.spawn(
            "write",
            |s| async move {
                let (open, append) = s.file(fh)?;
                Ok(open.write(offset, &data, append).await?)
            },
            move |r| match r {
                Ok(n) => {
                    written_bytes.add(n as u64);
                    reply.written(n)
                }
                Err(e) => reply.error(e),
            },
        );
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.spawn(
            "flush",
            |s| async move {
                let (open, _) = s.file(fh)?;
                Ok(open.flush().await?)
            },
            |r| match r {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            },
        );
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.spawn(
            "release",
            |s| async move { s.release(fh).await },
            |r| match r {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            },
        );
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Pushed data is on every replica when acknowledged; flush also commits the size.
        self.spawn(
            "fsync",
            |s| async move {
                let (open, _) = s.file(fh)?;
                Ok(open.flush().await?)
            },
            |r| match r {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            },
        );
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.spawn(
            "opendir",
            |s| async move { s.opendir(inode(ino)).await },
            |r| match r {
                Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
                Err(e) => reply.error(e),
            },
        );
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        // Served from the listing taken at opendir: no network, so no task.
        let listing = self.shared.handles.lock().unwrap().dirs.get(&fh.0).cloned();
        let Some(listing) = listing else {
            return reply.error(Errno::EBADF);
        };
        for (i, (ino, kind, name)) in listing.entries.iter().enumerate().skip(offset as usize) {
            if reply.add(attr::ino(*ino), i as u64 + 1, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        // The names come from the listing taken at opendir (stable offsets, as `readdir`). The
        // attributes: those read with the listing while it is younger than the TTL (the
        // kernel may cache them until the TTL after they were read, no longer), else those of
        // the page's entries asked of the master now, in one request (an entry removed since
        // opendir is then left out of the page).
        let listing = self.shared.handles.lock().unwrap().dirs.get(&fh.0).cloned();
        let Some(listing) = listing else {
            return reply.error(Errno::EBADF);
        };
        // A page whose attributes came with the listing, within the TTL: answered here.
        let start = (offset as usize).min(listing.entries.len());
        let end = (start + READDIRPLUS_PAGE).min(listing.entries.len());
        let rest = self.shared.config.ttl.checked_sub(listing.taken.elapsed());
        if let Some(ttl) = rest.filter(|t| !t.is_zero() && end <= listing.attrs.len()) {
            let started = std::time::Instant::now();
            for (k, (_, _, name)) in listing.entries[start..end].iter().enumerate() {
                let attr = self.shared.view(&listing.attrs[start + k]);
                let next = (start + k) as u64 + 1;
                if reply.add(attr.ino, next, name, &ttl, &attr, Generation(0)) {
                    break;
                }
            }
            reply.ok();
            self.answered_here("readdirplus", started);
            return;
        }
        self.spawn(
            "readdirplus",
            move |s| async move {
                let start = (offset as usize).min(listing.entries.len());
                let end = (start + READDIRPLUS_PAGE).min(listing.entries.len());
                let page = &listing.entries[start..end];
                let inodes: Vec<InodeId> = page.iter().map(|(i, _, _)| *i).collect();
                let attrs = s.client.getattrs(&inodes).await?;
                let rows: Vec<(u64, String, FileAttr)> = page
                    .iter()
                    .zip(attrs)
                    .enumerate()
                    .filter_map(|(k, ((_, _, name), attr))| {
                        attr.map(|a| ((start + k) as u64 + 1, name.clone(), s.view(&a)))
                    })
                    .collect();
                Ok((rows, *s.ttl()))
            },
            move |r| match r {
                Ok((rows, ttl)) => {
                    for (next, name, attr) in rows {
                        if reply.add(attr.ino, next, &name, &ttl, &attr, Generation(0)) {
                            break;
                        }
                    }
                    reply.ok();
                }
                Err(e) => reply.error(e),
            },
        );
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.shared.handles.lock().unwrap().dirs.remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Namespace changes are committed through Raft before they are acknowledged.
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        const BLOCK: u64 = 4096;
        self.spawn(
            "statfs",
            |s| async move { Ok(s.client.statfs().await?) },
            |r| match r {
                Ok(st) => reply.statfs(
                    st.capacity_bytes / BLOCK,
                    st.available_bytes / BLOCK,
                    st.available_bytes / BLOCK,
                    st.files,
                    u32::MAX as u64,
                    BLOCK as u32,
                    quarry_proto::MAX_NAME_BYTES as u32,
                    BLOCK as u32,
                ),
                Err(e) => reply.error(e),
            },
        );
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        position: u32,
        reply: ReplyEmpty,
    ) {
        let (name, value) = (name.to_os_string(), value.to_vec());
        self.spawn(
            "setxattr",
            |s| async move {
                s.set_no_caps(inode(ino), false);
                let r =
                    seams::setxattr(&s.client, inode(ino), &name, &value, flags, position).await;
                s.set_no_caps(inode(ino), false);
                r
            },
            |r| match r {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            },
        );
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let name = name.to_os_string();
        self.spawn(
            "getxattr",
            |s| async move { s.getxattr(inode(ino), &name).await },
            move |r| match r {
                Ok(v) => xattr_reply(reply, size, &v),
                Err(e) => reply.error(e),
            },
        );
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.spawn(
            "listxattr",
            |s| async move { seams::listxattr(&s.client, inode(ino)).await },
            move |r| match r {
                Ok(v) => xattr_reply(reply, size, &v),
                Err(e) => reply.error(e),
            },
        );
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.to_os_string();
        self.spawn(
            "removexattr",
            |s| async move {
                s.set_no_caps(inode(ino), false);
                let r = seams::removexattr(&s.client, inode(ino), &name).await;
                s.set_no_caps(inode(ino), false);
                r
            },
            |r| match r {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            },
        );
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // Mounted with default_permissions: the kernel checks mode/uid/gid itself.
        reply.ok();
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        // Only plain allocation (mode 0), as a sparse extension: chunks are placed on first
        // write. Keep-size, punch-hole and the rest are not supported.
        if mode != 0 {
            return reply.error(Errno::from_i32(libc::EOPNOTSUPP));
        }
        self.spawn(
            "fallocate",
            |s| async move {
                let end = offset
                    .checked_add(length)
                    .ok_or(OpError(Errno::from_i32(libc::EFBIG)))?;
                let (open, _) = s.file(fh)?;
                Ok(open.extend_to(end).await?)
            },
            |r| match r {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            },
        );
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let name = match name_of(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let (uid, gid) = (req.uid(), req.gid());
        let ttl = self.shared.config.ttl;
        self.spawn(
            "create",
            |s| async move {
                s.create(inode(parent), name, mode, umask, flags, uid, gid)
                    .await
            },
            move |r| match r {
                Ok((a, fh)) => {
                    let open_flags = if flags & libc::O_APPEND != 0 {
                        append_open_flags()
                    } else {
                        FopenFlags::empty()
                    };
                    reply.created(&ttl, &a, Generation(0), FileHandle(fh), open_flags)
                }
                Err(e) => reply.error(e),
            },
        );
    }
}

/// RENAME_NOREPLACE / RENAME_EXCHANGE as the master's rename flags; others are EINVAL.
fn rename_flags(flags: RenameFlags) -> OpResult<u32> {
    if flags.is_empty() {
        Ok(0)
    } else if flags == RenameFlags::RENAME_NOREPLACE {
        Ok(quarry_proto::RENAME_NOREPLACE)
    } else if flags == RenameFlags::RENAME_EXCHANGE {
        Ok(quarry_proto::RENAME_EXCHANGE)
    } else {
        Err(OpError(Errno::EINVAL))
    }
}

/// `getxattr`/`listxattr` protocol: size 0 asks for the length; too small a buffer is ERANGE.
fn xattr_reply(reply: ReplyXattr, size: u32, value: &[u8]) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(value);
    }
}

/// The operations added with symlinks, hard links, special files and extended attributes: each
/// is the one place its feature meets the client.
mod seams {
    use super::{OpError, OpResult};
    use fuser::Errno;
    use quarry_client::Client;
    use quarry_proto::{Attr, FileKind, InodeId, XattrFlags};
    use std::ffi::OsStr;

    /// Quarry names, targets and attribute names are UTF-8; anything else cannot be stored.
    fn utf8(s: &OsStr) -> OpResult<&str> {
        s.to_str().ok_or(OpError(Errno::EINVAL))
    }

    pub async fn symlink(
        client: &Client,
        parent: InodeId,
        name: &str,
        target: &OsStr,
        uid: u32,
        gid: u32,
    ) -> OpResult<Attr> {
        Ok(client
            .symlink(parent, name, utf8(target)?, uid, gid)
            .await?)
    }

    pub async fn readlink(client: &Client, inode: InodeId) -> OpResult<Vec<u8>> {
        Ok(client.readlink(inode).await?.into_bytes())
    }

    pub async fn link(
        client: &Client,
        inode: InodeId,
        new_parent: InodeId,
        new_name: &str,
    ) -> OpResult<Attr> {
        Ok(client.link(inode, new_parent, new_name).await?)
    }

    /// FIFOs, sockets and device nodes (regular files are created directly).
    #[allow(clippy::too_many_arguments)]
    pub async fn mknod_special(
        client: &Client,
        parent: InodeId,
        name: &str,
        mode: u32,
        umask: u32,
        rdev: u32,
        uid: u32,
        gid: u32,
    ) -> OpResult<Attr> {
        let kind = match mode & libc::S_IFMT {
            libc::S_IFIFO => FileKind::Fifo,
            libc::S_IFCHR => FileKind::CharDevice,
            libc::S_IFBLK => FileKind::BlockDevice,
            libc::S_IFSOCK => FileKind::Socket,
            _ => return Err(OpError(Errno::EINVAL)),
        };
        let perm = mode & 0o7777 & !umask;
        Ok(client
            .mknod(parent, name, kind, perm, rdev, uid, gid)
            .await?)
    }

    /// `setxattr(2)` flags: `XATTR_CREATE` / `XATTR_REPLACE` (both at once is EINVAL, as is a
    /// non-zero `position`, which only macOS resource forks use).
    pub fn xattr_flags(flags: i32, position: u32) -> OpResult<XattrFlags> {
        if position != 0 {
            return Err(OpError(Errno::EINVAL));
        }
        match flags {
            0 => Ok(XattrFlags::Either),
            libc::XATTR_CREATE => Ok(XattrFlags::CreateOnly),
            libc::XATTR_REPLACE => Ok(XattrFlags::ReplaceOnly),
            _ => Err(OpError(Errno::EINVAL)),
        }
    }

    pub async fn setxattr(
        client: &Client,
        inode: InodeId,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        position: u32,
    ) -> OpResult<()> {
        let flags = xattr_flags(flags, position)?;
        // `system.*` (POSIX ACLs above all) means something to the kernel, not an opaque value:
        // storing `system.posix_acl_access` without applying it would lose the mode that
        // `sed -i`, `rsync -a` and `cp -p` set through it. Refuse, as a filesystem without ACLs
        // does; those tools then fall back to chmod. SELinux labels likewise (see
        // [`unsupported`]).
        if unsupported(name) {
            return Err(OpError(Errno::from_i32(libc::EOPNOTSUPP)));
        }
        Ok(client.setxattr(inode, utf8(name)?, value, flags).await?)
    }

    /// Names the mount does not support, answered here with `EOPNOTSUPP` (a filesystem without
    /// ACLs or SELinux labels): the `system.` namespace (see [`setxattr`]) and
    /// `security.selinux`, which `ls -l` asks of every file it lists — after this answer it
    /// stops asking for the whole mount, where "no such attribute" cost a master request per
    /// file.
    fn unsupported(name: &OsStr) -> bool {
        let name = name.as_encoded_bytes();
        name.starts_with(b"system.") || name == b"security.selinux"
    }

    /// `getxattr` (names the mount does not support: `EOPNOTSUPP` at once).
    pub async fn getxattr(client: &Client, inode: InodeId, name: &OsStr) -> OpResult<Vec<u8>> {
        if unsupported(name) {
            return Err(OpError(Errno::from_i32(libc::EOPNOTSUPP)));
        }
        let name = name
            .to_str()
            .ok_or(OpError(Errno::from_i32(libc::ENODATA)))?;
        Ok(client.getxattr(inode, name).await?)
    }

    /// `listxattr`: the names, each NUL-terminated (without those the mount does not support,
    /// which only the client library could have set).
    pub async fn listxattr(client: &Client, inode: InodeId) -> OpResult<Vec<u8>> {
        let mut names = client.listxattr(inode).await?;
        names.retain(|n| !unsupported(OsStr::new(n)));
        Ok(nul_terminated(names))
    }

    pub fn nul_terminated(names: Vec<String>) -> Vec<u8> {
        let mut out = Vec::new();
        for n in names {
            out.extend_from_slice(n.as_bytes());
            out.push(0);
        }
        out
    }

    pub async fn removexattr(client: &Client, inode: InodeId, name: &OsStr) -> OpResult<()> {
        if unsupported(name) {
            return Err(OpError(Errno::from_i32(libc::EOPNOTSUPP)));
        }
        let name = name
            .to_str()
            .ok_or(OpError(Errno::from_i32(libc::ENODATA)))?;
        Ok(client.removexattr(inode, name).await?)
    }
}

/// Open flags for an `O_APPEND` handle: direct IO, so that each `write(2)` (up to `max_write`)
/// reaches us as one request and becomes one atomic record append. Through the page cache the
/// kernel splits a write that crosses a page boundary into two requests whenever the first page
/// is not cached whole, and another writer's record could land between the halves.
fn append_open_flags() -> FopenFlags {
    FopenFlags::FOPEN_DIRECT_IO
}

#[cfg(test)]
mod tests {
    use super::*;
    use quarry_proto::XattrFlags;

    #[test]
    fn xattr_flags_map_to_the_create_replace_modes() {
        assert_eq!(seams::xattr_flags(0, 0), Ok(XattrFlags::Either));
        assert_eq!(
            seams::xattr_flags(libc::XATTR_CREATE, 0),
            Ok(XattrFlags::CreateOnly)
        );
        assert_eq!(
            seams::xattr_flags(libc::XATTR_REPLACE, 0),
            Ok(XattrFlags::ReplaceOnly)
        );
        assert!(seams::xattr_flags(libc::XATTR_CREATE | libc::XATTR_REPLACE, 0).is_err());
        assert!(seams::xattr_flags(0, 1).is_err());
    }

    #[test]
    fn xattr_names_are_listed_nul_terminated() {
        assert_eq!(
            seams::nul_terminated(vec!["user.a".into(), "user.bc".into()]),
            b"user.a\0user.bc\0".to_vec()
        );
        assert!(seams::nul_terminated(vec![]).is_empty());
    }
}
