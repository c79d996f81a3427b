//! The `fuser::Filesystem` implementation. FUSE callbacks run on fuser's session threads and
//! never wait on the network: each one spawns a task on the tokio runtime that makes the client
//! calls and replies from there (fuser's `Reply*` objects are `Send`).
//!
//! Operations Quarry cannot do yet each go through one function in [`seams`], where the work of
//! the symlink / hard link / mknod / xattr / open-file-hold increment plugs in.

use crate::attr::{self, file_attr, file_type, inode, timestamp};
use crate::errno::OpError;
use crate::file::{FileConfig, OpenInode};
use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr,
    Request, TimeOrNow, WriteFlags,
};
use quarry_client::Client;
use quarry_proto::master::SetAttr;
use quarry_proto::{Attr, FileKind, InodeId, Timestamp};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
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
}

/// The FUSE filesystem of one mount.
pub struct QuarryFs {
    runtime: Handle,
    shared: Arc<Shared>,
}

impl QuarryFs {
    pub fn new(client: Client, runtime: Handle, config: FsConfig) -> QuarryFs {
        QuarryFs {
            runtime,
            shared: Arc::new(Shared {
                client,
                budget: Arc::new(Semaphore::new(config.buffer_budget_bytes)),
                config,
                next_handle: AtomicU64::new(1),
                handles: Mutex::new(Handles::default()),
            }),
        }
    }

    /// Run `op` on the runtime and hand its result to `done` there.
    fn spawn<T, F, Fut, D>(&self, op: F, done: D)
    where
        F: FnOnce(Arc<Shared>) -> Fut,
        Fut: Future<Output = OpResult<T>> + Send + 'static,
        D: FnOnce(Result<T, Errno>) + Send + 'static,
        T: Send + 'static,
    {
        let fut = op(Arc::clone(&self.shared));
        self.runtime
            .spawn(async move { done(fut.await.map_err(|e| e.0)) });
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
        file_attr(attr, size)
    }

    async fn getattr(&self, ino: InodeId) -> OpResult<FileAttr> {
        let attr = self.client.getattr(ino).await?;
        Ok(self.view(&attr))
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
                ..Default::default()
            };
            attr = Some(self.client.setattr(req).await?);
        }
        let attr = match attr {
            Some(a) => a,
            None => self.client.getattr(ino).await?,
        };
        Ok(self.view(&attr))
    }

    /// Register an open handle of `attr`'s inode; the size is the master's at open unless this
    /// mount holds dirty data for it.
    async fn open_handle(&self, attr: &Attr, append: bool) -> u64 {
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        let open = {
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
            let open = Arc::clone(&entry.0);
            h.files.insert(
                fh,
                OpenFile {
                    inode: Arc::clone(&open),
                    append,
                },
            );
            open
        };
        open.refresh(attr.size).await;
        // SEAM(hold): tell the master this inode is open here, so an unlink keeps its data
        // until the last close (open-file holds).
        fh
    }

    async fn open(&self, ino: InodeId, flags: OpenFlags) -> OpResult<u64> {
        let attr = self.client.getattr(ino).await?;
        if attr.kind == FileKind::Directory {
            return Err(OpError(Errno::EISDIR));
        }
        Ok(self.open_handle(&attr, flags.0 & libc::O_APPEND != 0).await)
    }

    #[allow(clippy::too_many_arguments)]
    async fn create(
        &self,
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
            .create(parent, &name, mode & 0o7777 & !umask, uid, gid, exclusive)
            .await?;
        let fh = self.open_handle(&attr, flags & libc::O_APPEND != 0).await;
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
        {
            let mut h = self.handles.lock().unwrap();
            h.files.remove(&fh.0);
            if let Some(entry) = h.inodes.get_mut(&open.inode) {
                entry.1 -= 1;
                if entry.1 == 0 {
                    h.inodes.remove(&open.inode);
                }
            }
        }
        // SEAM(hold): release this mount's hold on the inode.
        Ok(res?)
    }

    async fn opendir(&self, ino: InodeId) -> OpResult<u64> {
        let dir = self.client.getattr(ino).await?;
        if dir.kind != FileKind::Directory {
            return Err(OpError(Errno::ENOTDIR));
        }
        let listing = self.client.readdir(ino).await?;
        let mut entries = Vec::with_capacity(listing.len() + 2);
        // The parent is not known from the inode alone; the kernel fills in `..` for lookups,
        // and readdir's `..` inode number is informational.
        entries.push((ino, FileType::Directory, ".".to_string()));
        entries.push((ino, FileType::Directory, "..".to_string()));
        entries.extend(
            listing
                .into_iter()
                .map(|e| (e.inode, file_type(e.kind), e.name)),
        );
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        self.handles
            .lock()
            .unwrap()
            .dirs
            .insert(fh, Arc::new(DirListing { entries }));
        Ok(fh)
    }
}

impl Filesystem for QuarryFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        if let Err(nearest) = config.set_max_write(self.shared.config.max_write_bytes) {
            let _ = config.set_max_write(nearest);
        }
        if let Err(nearest) = config.set_max_readahead(self.shared.config.max_write_bytes) {
            let _ = config.set_max_readahead(nearest);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = match name_of(name) {
            Ok(n) => n,
            Err(_) => return reply.error(Errno::ENOENT),
        };
        self.spawn(
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
        let ttl = self.shared.config.ttl;
        self.spawn(
            |s| async move { s.getattr(inode(ino)).await },
            move |r| match r {
                Ok(a) => reply.attr(&ttl, &a),
                Err(e) => reply.error(e),
            },
        );
    }

    fn setattr(
        &self,
        _req: &Request,
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
        self.spawn(
            |s| async move {
                s.setattr(inode(ino), mode, uid, gid, size, atime, mtime)
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
            |s| async move {
                let attr = if mode & libc::S_IFMT == libc::S_IFREG {
                    s.client
                        .create(inode(parent), &name, mode & 0o7777 & !umask, uid, gid, true)
                        .await?
                } else {
                    seams::mknod_special(&s.client, inode(parent), &name, mode, umask, rdev).await?
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

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = match name_of(name) {
            Ok(n) => n,
            Err(_) => return reply.error(Errno::ENOENT),
        };
        // SEAM(hold): with open-file holds, an unlinked file open here stays readable until
        // its last close; today the master drops its name (and later its data) at once.
        self.spawn(
            |s| async move { Ok(s.client.unlink(inode(parent), &name).await?) },
            |r| match r {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            },
        );
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = match name_of(name) {
            Ok(n) => n,
            Err(_) => return reply.error(Errno::ENOENT),
        };
        self.spawn(
            |s| async move { Ok(s.client.rmdir(inode(parent), &name).await?) },
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
        _req: &Request,
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
        self.spawn(
            |s| async move {
                if !flags.is_empty() {
                    // SEAM(rename2): RENAME_NOREPLACE / RENAME_EXCHANGE need master support.
                    // EINVAL makes glibc/coreutils fall back to a plain rename.
                    return Err(OpError(Errno::EINVAL));
                }
                Ok(s.client
                    .rename(inode(parent), &name, inode(newparent), &newname)
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
        self.spawn(
            |s| async move { s.open(inode(ino), flags).await },
            |r| match r {
                Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
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
        self.spawn(
            |s| async move {
                let (open, _) = s.file(fh)?;
                Ok(open.read(offset, size).await?)
            },
            |r| match r {
                Ok(b) => reply.data(&b),
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
        self.spawn(
            |s| async move {
                let (open, append) = s.file(fh)?;
                Ok(open.write(offset, &data, append).await?)
            },
            |r| match r {
                Ok(n) => reply.written(n),
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
            |s| async move {
                seams::setxattr(&s.client, inode(ino), &name, &value, flags, position).await
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
            |s| async move { seams::getxattr(&s.client, inode(ino), &name).await },
            move |r| match r {
                Ok(v) => xattr_reply(reply, size, &v),
                Err(e) => reply.error(e),
            },
        );
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.spawn(
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
            |s| async move { seams::removexattr(&s.client, inode(ino), &name).await },
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
            |s| async move {
                s.create(inode(parent), name, mode, umask, flags, uid, gid)
                    .await
            },
            move |r| match r {
                Ok((a, fh)) => {
                    reply.created(&ttl, &a, Generation(0), FileHandle(fh), FopenFlags::empty())
                }
                Err(e) => reply.error(e),
            },
        );
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

/// Operations waiting on master support. Each is the one place its feature plugs in; until
/// then they fail the way a filesystem without the feature does.
mod seams {
    use super::{OpError, OpResult};
    use fuser::Errno;
    use quarry_client::Client;
    use quarry_proto::{Attr, InodeId};
    use std::ffi::OsStr;

    fn unsupported() -> OpError {
        OpError(Errno::from_i32(libc::EOPNOTSUPP))
    }

    /// SEAM(symlink): `Client::symlink(parent, name, target, uid, gid)`.
    pub async fn symlink(
        _client: &Client,
        _parent: InodeId,
        _name: &str,
        _target: &OsStr,
        _uid: u32,
        _gid: u32,
    ) -> OpResult<Attr> {
        Err(OpError(Errno::EPERM))
    }

    /// SEAM(symlink): `Client::readlink(inode)`.
    pub async fn readlink(_client: &Client, _inode: InodeId) -> OpResult<Vec<u8>> {
        Err(OpError(Errno::EINVAL))
    }

    /// SEAM(link): `Client::link(inode, new_parent, new_name)`.
    pub async fn link(
        _client: &Client,
        _inode: InodeId,
        _new_parent: InodeId,
        _new_name: &str,
    ) -> OpResult<Attr> {
        Err(OpError(Errno::EPERM))
    }

    /// SEAM(mknod): FIFOs, sockets and device nodes (regular files are created directly).
    pub async fn mknod_special(
        _client: &Client,
        _parent: InodeId,
        _name: &str,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
    ) -> OpResult<Attr> {
        Err(OpError(Errno::EPERM))
    }

    /// SEAM(xattr): `Client::setxattr`.
    pub async fn setxattr(
        _client: &Client,
        _inode: InodeId,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
    ) -> OpResult<()> {
        Err(unsupported())
    }

    /// SEAM(xattr): `Client::getxattr`.
    pub async fn getxattr(_client: &Client, _inode: InodeId, _name: &OsStr) -> OpResult<Vec<u8>> {
        Err(unsupported())
    }

    /// SEAM(xattr): `Client::listxattr` (names, each NUL-terminated).
    pub async fn listxattr(_client: &Client, _inode: InodeId) -> OpResult<Vec<u8>> {
        Err(unsupported())
    }

    /// SEAM(xattr): `Client::removexattr`.
    pub async fn removexattr(_client: &Client, _inode: InodeId, _name: &OsStr) -> OpResult<()> {
        Err(unsupported())
    }
}
