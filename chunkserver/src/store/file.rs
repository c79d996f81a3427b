//! [`FileStore`]: chunks as files in a local directory, one file per chunk.
//!
//! Layout and crash-safety argument in `docs/chunk-format.md`. Per-chunk reader/writer locks (so
//! different chunks, and reads of one chunk, proceed in parallel), a bounded cache of open file
//! handles, positional IO. Blocking std IO only; must not depend on tokio or the service.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;
use quarry_proto::{ChunkHandle, ChunkVersion, FsError};

use super::format::{decode_table, encode_table, file_name, parse_file_name, Header, HEADER_BYTES};
use super::{block_range, check_bound, check_version, verify_blocks, ChunkStore, Plan, BLOCK};

/// Open file handles kept by a [`FileStore`].
pub const FD_CACHE_CAPACITY: usize = 256;
/// Blocks read at a time by [`ChunkStore::verify`].
const SCRUB_BLOCKS: u64 = 16;

/// A chunk's mutable state, under its lock.
#[derive(Debug)]
struct State {
    header: Header,
    /// Set once the chunk is deleted (or its creation failed); every later operation then sees
    /// `ChunkNotFound`.
    gone: bool,
    /// The file may be longer than `data_offset + len` (a failed extending write); cut it before
    /// the next extension so no stale bytes reappear as "zeros".
    needs_trim: bool,
}

#[derive(Debug)]
struct Chunk {
    /// Mirror of `state.header.version` readable without the chunk lock (list, version).
    version: AtomicU64,
    state: RwLock<State>,
}

impl Chunk {
    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// A bounded LRU of open chunk files, keyed by handle. A file stays valid across the renames of
/// a version change; users hold an `Arc`, so eviction never closes a file in use.
#[derive(Debug, Default)]
struct FdCache {
    tick: u64,
    files: HashMap<ChunkHandle, (Arc<File>, u64)>,
}

/// A chunk store keeping each chunk in its own file under `dir/chunks/`.
#[derive(Debug)]
pub struct FileStore {
    dir: PathBuf,
    chunks_dir: PathBuf,
    max_chunk_size: u64,
    chunks: Mutex<HashMap<ChunkHandle, Arc<Chunk>>>,
    fds: Mutex<FdCache>,
    /// Sum of the data lengths of all chunks.
    used: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Free bytes available to unprivileged users on the filesystem holding `dir`.
#[allow(unsafe_code)]
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `path` is a NUL-terminated string that outlives the call and `st` points to
    // writable memory of the right type; statvfs writes only into it and we read it only when it
    // reports success.
    let st = unsafe {
        if libc::statvfs(path.as_ptr(), st.as_mut_ptr()) != 0 {
            return None;
        }
        st.assume_init()
    };
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// One chunk file found when opening the store.
struct Found {
    path: PathBuf,
    name_version: ChunkVersion,
    header: Header,
}

impl FileStore {
    /// Open (or initialise) the store in `dir`: scan `dir/chunks/`, delete leftover temp files,
    /// resolve chunks left with two versions by a crash (the higher wins), move files with a bad
    /// header to `dir/corrupt/`, and cut or extend each file to its header's data length.
    pub fn open(dir: &Path, max_chunk_size: u64) -> Result<FileStore, FsError> {
        if max_chunk_size == 0 {
            return Err(FsError::InvalidArgument("max_chunk_size is 0".into()));
        }
        let chunks_dir = dir.join("chunks");
        fs::create_dir_all(&chunks_dir)?;
        let mut found: HashMap<ChunkHandle, Vec<Found>> = HashMap::new();
        for entry in fs::read_dir(&chunks_dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let path = entry.path();
            if name.ends_with(".tmp") {
                tracing::info!(?path, "removing leftover temp file");
                fs::remove_file(&path)?;
                continue;
            }
            let Some((handle, name_version)) = parse_file_name(name) else {
                tracing::warn!(?path, "ignoring unknown file in the chunk directory");
                continue;
            };
            let mut buf = [0u8; HEADER_BYTES as usize];
            let header = File::open(&path)
                .and_then(|f| f.read_exact_at(&mut buf, 0))
                .map_err(|e| e.to_string())
                .and_then(|()| Header::decode(&buf))
                .and_then(|h| match h.handle == handle {
                    true => Ok(h),
                    false => Err(format!("header names chunk {}", h.handle.hex())),
                });
            match header {
                Ok(header) => found.entry(handle).or_default().push(Found {
                    path,
                    name_version,
                    header,
                }),
                Err(why) => {
                    let corrupt = dir.join("corrupt");
                    fs::create_dir_all(&corrupt)?;
                    tracing::warn!(?path, %why, "bad chunk header; moving the file to corrupt/");
                    fs::rename(&path, corrupt.join(name))?;
                }
            }
        }
        let store = FileStore {
            dir: dir.to_path_buf(),
            chunks_dir,
            max_chunk_size,
            chunks: Mutex::new(HashMap::new()),
            fds: Mutex::new(FdCache::default()),
            used: AtomicU64::new(0),
        };
        let mut map = HashMap::new();
        for (handle, mut files) in found {
            // The header is authoritative; a name can lag behind it after a crash mid version
            // change, and a second file can exist for the older version.
            files.sort_by_key(|f| (f.header.version, f.name_version));
            let keep = files.pop().expect("at least one file");
            for stale in files {
                if stale.path != keep.path {
                    tracing::warn!(path = ?stale.path, "removing older version of chunk");
                    fs::remove_file(&stale.path)?;
                }
            }
            let path = store.path(handle, keep.header.version);
            if keep.path != path {
                fs::rename(&keep.path, &path)?;
            }
            let file = OpenOptions::new().read(true).write(true).open(&path)?;
            let want = keep.header.data_offset + keep.header.len;
            if file.metadata()?.len() != want {
                // Longer: a crashed extension. Shorter: a crashed cut; the missing blocks read as
                // zeros and fail their checksums.
                file.set_len(want)?;
                file.sync_all()?;
            }
            store.used.fetch_add(keep.header.len, Ordering::Relaxed);
            map.insert(
                handle,
                Arc::new(Chunk {
                    version: AtomicU64::new(keep.header.version.0),
                    state: RwLock::new(State {
                        header: keep.header,
                        gone: false,
                        needs_trim: false,
                    }),
                }),
            );
        }
        sync_dir(&store.chunks_dir)?;
        *lock(&store.chunks) = map;
        Ok(store)
    }

    /// The directory the store was opened in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of a chunk file.
    pub fn path(&self, handle: ChunkHandle, version: ChunkVersion) -> PathBuf {
        self.chunks_dir.join(file_name(handle, version))
    }

    fn chunk(&self, handle: ChunkHandle) -> Result<Arc<Chunk>, FsError> {
        lock(&self.chunks)
            .get(&handle)
            .cloned()
            .ok_or(FsError::ChunkNotFound(handle.0))
    }

    /// The open file of a chunk (caller holds the chunk's lock).
    fn file(&self, st: &State) -> Result<Arc<File>, FsError> {
        let handle = st.header.handle;
        {
            let mut fds = lock(&self.fds);
            fds.tick += 1;
            let tick = fds.tick;
            if let Some((file, used)) = fds.files.get_mut(&handle) {
                *used = tick;
                return Ok(file.clone());
            }
        }
        let file = Arc::new(
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(self.path(handle, st.header.version))?,
        );
        self.cache_file(handle, file.clone());
        Ok(file)
    }

    fn cache_file(&self, handle: ChunkHandle, file: Arc<File>) {
        let mut fds = lock(&self.fds);
        if fds.files.len() >= FD_CACHE_CAPACITY && !fds.files.contains_key(&handle) {
            let oldest = fds
                .files
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(h, _)| *h);
            if let Some(oldest) = oldest {
                fds.files.remove(&oldest);
            }
        }
        fds.tick += 1;
        let tick = fds.tick;
        fds.files.insert(handle, (file, tick));
    }

    /// Number of cached open files (for tests).
    pub fn open_files(&self) -> usize {
        lock(&self.fds).files.len()
    }

    fn read_crcs(file: &File, first: u64, last: u64) -> io::Result<Vec<u32>> {
        let mut raw = vec![0u8; ((last - first + 1) * 4) as usize];
        file.read_exact_at(&mut raw, Header::table_offset(first))?;
        Ok(decode_table(&raw))
    }

    /// Read blocks `first..=last` (clipped to the chunk's length) and verify them.
    fn read_verified(
        &self,
        file: &File,
        st: &State,
        first: u64,
        last: u64,
    ) -> Result<Vec<u8>, FsError> {
        let h = &st.header;
        let (start, end) = (first * BLOCK, block_range(last, h.len).1);
        let mut buf = vec![0u8; (end - start) as usize];
        let handle = h.handle;
        file.read_exact_at(&mut buf, h.data_offset + start)
            .map_err(|e| match e.kind() {
                // The file lost its tail (see `open`): treat it as damage, not as an IO failure.
                io::ErrorKind::UnexpectedEof => FsError::ChecksumMismatch {
                    handle: handle.0,
                    block: first,
                },
                _ => e.into(),
            })?;
        let crcs = Self::read_crcs(file, first, last)?;
        verify_blocks(handle, first, &buf, &crcs)?;
        Ok(buf)
    }

    /// Apply a planned mutation: data, then checksums and header, then one fdatasync.
    fn apply(&self, st: &mut State, plan: &Plan) -> Result<(), FsError> {
        let file = self.file(st)?;
        let crcs = plan.crcs(|b| self.read_verified(&file, st, b, b))?;
        let h = st.header;
        if st.needs_trim && plan.new_len > h.len {
            file.set_len(h.data_offset + h.len)?;
            st.needs_trim = false;
        }
        let extends = plan.new_len > h.len;
        let step1 = if !plan.data.is_empty() {
            file.write_all_at(plan.data, h.data_offset + plan.offset)
        } else if plan.new_len > h.len {
            file.set_len(h.data_offset + plan.new_len)
        } else {
            Ok(())
        };
        if let Err(e) = step1 {
            // Nothing but data bytes past the old end (or bytes of blocks we overwrote, which now
            // fail their checksums) changed: the header still has the old length.
            if extends {
                st.needs_trim = file.set_len(h.data_offset + h.len).is_err();
            }
            return Err(e.into());
        }
        let res = (|| -> io::Result<()> {
            if let Some((first, _)) = plan.touched {
                let raw = encode_table(&crcs);
                file.write_all_at(&raw, Header::table_offset(first))?;
            }
            if plan.new_len != h.len {
                let mut nh = h;
                nh.len = plan.new_len;
                file.write_all_at(&nh.encode(), 0)?;
            }
            if plan.new_len < h.len {
                // Cut only after the header records the shorter length.
                file.set_len(h.data_offset + plan.new_len)?;
            }
            file.sync_data()
        })();
        if let Err(e) = res {
            st.needs_trim |= extends;
            return Err(e.into());
        }
        if plan.new_len > h.len {
            self.used.fetch_add(plan.new_len - h.len, Ordering::Relaxed);
        } else {
            self.used.fetch_sub(h.len - plan.new_len, Ordering::Relaxed);
        }
        st.header.len = plan.new_len;
        Ok(())
    }

    fn live_read(
        chunk: &Chunk,
        handle: ChunkHandle,
    ) -> Result<RwLockReadGuard<'_, State>, FsError> {
        let st = chunk.read();
        if st.gone {
            return Err(FsError::ChunkNotFound(handle.0));
        }
        Ok(st)
    }

    fn live_write(
        chunk: &Chunk,
        handle: ChunkHandle,
    ) -> Result<RwLockWriteGuard<'_, State>, FsError> {
        let st = chunk.write();
        if st.gone {
            return Err(FsError::ChunkNotFound(handle.0));
        }
        Ok(st)
    }

    fn mutate<'d>(
        &self,
        handle: ChunkHandle,
        version: ChunkVersion,
        plan: impl FnOnce(&Header) -> Result<Option<Plan<'d>>, FsError>,
    ) -> Result<(), FsError> {
        let chunk = self.chunk(handle)?;
        let mut st = Self::live_write(&chunk, handle)?;
        check_version(st.header.version, version)?;
        match plan(&st.header)? {
            Some(plan) => self.apply(&mut st, &plan),
            None => Ok(()),
        }
    }

    fn create_file(&self, header: &Header) -> Result<Arc<File>, FsError> {
        let path = self.path(header.handle, header.version);
        let tmp = path.with_extension("chunk.tmp");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        // Header and the whole checksum table are written (not left sparse), so later checksum
        // updates overwrite allocated blocks.
        let mut head = vec![0u8; (HEADER_BYTES + 4 * header.table_entries) as usize];
        head[..HEADER_BYTES as usize].copy_from_slice(&header.encode());
        let res = file
            .write_all_at(&head, 0)
            .and_then(|()| file.set_len(header.data_offset))
            .and_then(|()| file.sync_all())
            .and_then(|()| fs::rename(&tmp, &path))
            .and_then(|()| sync_dir(&self.chunks_dir));
        if let Err(e) = res {
            let _ = fs::remove_file(&tmp);
            return Err(e.into());
        }
        Ok(Arc::new(file))
    }
}

impl ChunkStore for FileStore {
    fn create(&self, handle: ChunkHandle, version: ChunkVersion) -> Result<(), FsError> {
        let header = Header::new(handle, version, self.max_chunk_size);
        let chunk = Arc::new(Chunk {
            version: AtomicU64::new(version.0),
            state: RwLock::new(State {
                header,
                gone: false,
                needs_trim: false,
            }),
        });
        // Lock the new chunk before publishing it: concurrent users wait for the file.
        let mut st = chunk.write();
        {
            let mut map = lock(&self.chunks);
            if map.contains_key(&handle) {
                return Err(FsError::AlreadyExists);
            }
            map.insert(handle, chunk.clone());
        }
        match self.create_file(&header) {
            Ok(file) => {
                self.cache_file(handle, file);
                Ok(())
            }
            Err(e) => {
                st.gone = true;
                lock(&self.chunks).remove(&handle);
                Err(e)
            }
        }
    }

    fn set_version(&self, handle: ChunkHandle, version: ChunkVersion) -> Result<(), FsError> {
        let chunk = self.chunk(handle)?;
        let mut st = Self::live_write(&chunk, handle)?;
        let old = st.header;
        if version <= old.version {
            return Err(FsError::StaleVersion {
                have: old.version.0,
                request: version.0,
            });
        }
        let file = self.file(&st)?;
        let mut nh = old;
        nh.version = version;
        // Header first (authoritative on open), then the name.
        file.write_all_at(&nh.encode(), 0)?;
        file.sync_data()?;
        let renamed = fs::rename(self.path(handle, old.version), self.path(handle, version))
            .and_then(|()| sync_dir(&self.chunks_dir));
        if let Err(e) = renamed {
            let _ = file
                .write_all_at(&old.encode(), 0)
                .and_then(|()| file.sync_data());
            return Err(e.into());
        }
        st.header = nh;
        chunk.version.store(version.0, Ordering::Release);
        Ok(())
    }

    fn version(&self, handle: ChunkHandle) -> Option<ChunkVersion> {
        let chunk = self.chunk(handle).ok()?;
        Some(ChunkVersion(chunk.version.load(Ordering::Acquire)))
    }

    fn len(&self, handle: ChunkHandle, version: ChunkVersion) -> Result<u64, FsError> {
        let chunk = self.chunk(handle)?;
        let st = Self::live_read(&chunk, handle)?;
        check_version(st.header.version, version)?;
        Ok(st.header.len)
    }

    fn write(
        &self,
        handle: ChunkHandle,
        version: ChunkVersion,
        offset: u64,
        data: &[u8],
    ) -> Result<(), FsError> {
        check_bound(offset, data.len() as u64, self.max_chunk_size)?;
        self.mutate(handle, version, |h| {
            check_bound(offset, data.len() as u64, h.capacity())?;
            Ok((!data.is_empty()).then(|| Plan::write(h.len, offset, data)))
        })
    }

    fn truncate(
        &self,
        handle: ChunkHandle,
        version: ChunkVersion,
        len: u64,
    ) -> Result<(), FsError> {
        check_bound(len, 0, self.max_chunk_size)?;
        self.mutate(handle, version, |h| {
            check_bound(len, 0, h.capacity())?;
            Ok((len != h.len).then(|| Plan::truncate(h.len, len)))
        })
    }

    fn read(
        &self,
        handle: ChunkHandle,
        version: ChunkVersion,
        offset: u64,
        len: u64,
    ) -> Result<Bytes, FsError> {
        let chunk = self.chunk(handle)?;
        let st = Self::live_read(&chunk, handle)?;
        check_version(st.header.version, version)?;
        let end = offset.saturating_add(len).min(st.header.len);
        if offset >= end {
            return Ok(Bytes::new());
        }
        let (first, last) = (offset / BLOCK, (end - 1) / BLOCK);
        let file = self.file(&st)?;
        let buf = self.read_verified(&file, &st, first, last)?;
        let base = first * BLOCK;
        Ok(Bytes::from(buf).slice((offset - base) as usize..(end - base) as usize))
    }

    fn verify(&self, handle: ChunkHandle) -> Result<(), FsError> {
        // The lock is taken per group of blocks, so a scrub does not hold writers off for the
        // whole chunk; each group is checked against the length and table of that moment.
        let chunk = self.chunk(handle)?;
        let mut b = 0;
        loop {
            let st = Self::live_read(&chunk, handle)?;
            let blocks = super::blocks_for(st.header.len);
            if b >= blocks {
                return Ok(());
            }
            let last = (b + SCRUB_BLOCKS).min(blocks) - 1;
            let file = self.file(&st)?;
            self.read_verified(&file, &st, b, last)?;
            b = last + 1;
        }
    }

    fn delete(&self, handle: ChunkHandle) -> Result<(), FsError> {
        let chunk = self.chunk(handle)?;
        let mut st = Self::live_write(&chunk, handle)?;
        match fs::remove_file(self.path(handle, st.header.version)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        st.gone = true;
        lock(&self.fds).files.remove(&handle);
        {
            let mut map = lock(&self.chunks);
            if map.get(&handle).is_some_and(|c| Arc::ptr_eq(c, &chunk)) {
                map.remove(&handle);
            }
        }
        self.used.fetch_sub(st.header.len, Ordering::Relaxed);
        // Not fsynced: a deleted chunk that reappears after a crash is reported to the master,
        // which tells us to delete it again.
        Ok(())
    }

    fn list(&self) -> Vec<(ChunkHandle, ChunkVersion)> {
        let mut out: Vec<_> = lock(&self.chunks)
            .iter()
            .map(|(h, c)| (*h, ChunkVersion(c.version.load(Ordering::Acquire))))
            .collect();
        out.sort();
        out
    }

    fn usage(&self) -> (u64, u64) {
        let used = self.used.load(Ordering::Relaxed);
        let free = free_bytes(&self.chunks_dir).unwrap_or(0);
        (free.saturating_add(used), used)
    }

    fn data_file(&self, handle: ChunkHandle) -> Option<(PathBuf, u64)> {
        let chunk = self.chunk(handle).ok()?;
        let st = Self::live_read(&chunk, handle).ok()?;
        Some((self.path(handle, st.header.version), st.header.data_offset))
    }
}
