//! Open files of one mount: the write-back buffer and the readahead window of an inode.
//!
//! Every open handle of an inode in this mount shares one [`OpenInode`], so two handles of the
//! same file never reorder each other's writes and a read through one handle sees what another
//! wrote. Its async mutex serializes writes, reads, flushes and truncates of that inode here.
//!
//! Writes coalesce into one contiguous buffer that is pushed to every replica
//! (`Client::write_data`) when it reaches `flush_bytes`, when a write is not contiguous with it,
//! and on flush/fsync/release; flush/fsync/release then record the size on the master
//! (`Client::commit_size`), so after `close` the data is on every replica and visible to other
//! mounts that open the file afterwards (close-to-open).
//!
//! Pushes run in the background, up to `pushes_in_flight` per inode, so a sequential writer
//! fills the next buffer while earlier ones travel and are made durable on the replicas. A push
//! never overtakes an earlier one it overlaps (it waits for it), a read waits for every push in
//! flight, and flush/fsync/release/truncate wait for all of them before committing the size.
//! Buffered and in-flight bytes are bounded across the mount by a semaphore; when it is
//! exhausted a write first waits for this inode's pushes, then goes straight through.
//! A failed push is remembered and reported by the next write, flush, fsync or close: never
//! dropped silently.

use bytes::{Bytes, BytesMut};
use quarry_client::Client;
use quarry_proto::master::SetAttr;
use quarry_proto::{FsError, InodeId};
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

/// Tunables of the per-inode state (set from [`crate::MountOptions`]).
#[derive(Clone, Debug)]
pub struct FileConfig {
    /// Push the write buffer once it holds this many bytes.
    pub flush_bytes: usize,
    /// Bytes of one readahead window (one read of the replicas).
    pub readahead_bytes: u64,
    /// Windows fetched ahead of a sequential reader at once (at least 1).
    pub readahead_windows: usize,
    /// Write-buffer pushes of one inode in flight at once (at least 1).
    pub pushes_in_flight: usize,
}

/// One inode that is open in this mount.
pub struct OpenInode {
    pub inode: InodeId,
    client: Client,
    config: FileConfig,
    budget: Arc<Semaphore>,
    state: tokio::sync::Mutex<State>,
    /// The size including data not yet committed on the master, while there is any. `getattr`
    /// reads it without waiting for a push in progress.
    dirty_size: Mutex<Option<u64>>,
}

struct State {
    /// This mount's view of the size: the master's at open (close-to-open), grown by local
    /// writes, set by local truncates.
    size: u64,
    buf_offset: u64,
    buf: BytesMut,
    /// Budget held for the bytes in `buf`.
    permit: Option<OwnedSemaphorePermit>,
    /// End of data on the replicas that the master does not know yet.
    uncommitted_end: Option<u64>,
    /// A failed push, reported by the next write/flush/fsync/close.
    error: Option<FsError>,
    readahead: Readahead,
    /// Pushes in flight, oldest first.
    pushes: Vec<Push>,
}

/// A background push of `[offset, end)`; the task holds the buffer's budget until it is done.
struct Push {
    offset: u64,
    end: u64,
    task: JoinHandle<Result<(), FsError>>,
}

#[derive(Default)]
struct Readahead {
    /// Where the next read of a sequential reader starts.
    next: u64,
    window: Option<(u64, Bytes)>,
    /// Windows being fetched, in file order, each starting where the one before ends.
    pending: std::collections::VecDeque<(u64, JoinHandle<Result<Bytes, FsError>>)>,
}

impl Readahead {
    fn clear(&mut self) {
        self.window = None;
        self.abort_pending();
    }

    fn abort_pending(&mut self) {
        for (_, h) in self.pending.drain(..) {
            h.abort();
        }
    }

    fn serve(&self, offset: u64, end: u64) -> Option<Bytes> {
        let (at, bytes) = self.window.as_ref()?;
        let window_end = at + bytes.len() as u64;
        (*at <= offset && end <= window_end)
            .then(|| bytes.slice((offset - at) as usize..(end - at) as usize))
    }
}

impl Drop for Readahead {
    fn drop(&mut self) {
        self.clear();
    }
}

impl OpenInode {
    pub fn new(
        client: Client,
        inode: InodeId,
        size: u64,
        config: FileConfig,
        budget: Arc<Semaphore>,
    ) -> OpenInode {
        OpenInode {
            inode,
            client,
            config,
            budget,
            state: tokio::sync::Mutex::new(State {
                size,
                buf_offset: 0,
                buf: BytesMut::new(),
                permit: None,
                uncommitted_end: None,
                error: None,
                readahead: Readahead::default(),
                pushes: Vec::new(),
            }),
            dirty_size: Mutex::new(None),
        }
    }

    /// The size to report while this mount holds data the master has not recorded.
    pub fn dirty_size(&self) -> Option<u64> {
        *self.dirty_size.lock().unwrap()
    }

    /// Close-to-open: at each open, take the master's size unless this mount has dirty data,
    /// and drop readahead that may predate another mount's writes.
    pub async fn refresh(&self, master_size: u64) {
        let mut st = self.state.lock().await;
        if st.buf.is_empty() && st.pushes.is_empty() && st.uncommitted_end.is_none() {
            st.size = master_size;
        }
        st.readahead.clear();
    }

    /// Buffer `data` at `offset`; with `append` (`O_APPEND`), append it as one atomic record
    /// instead (see [`OpenInode::append`]). Returns bytes accepted.
    pub async fn write(&self, offset: u64, data: &[u8], append: bool) -> Result<u32, FsError> {
        let mut st = self.state.lock().await;
        if let Some(e) = &st.error {
            return Err(e.clone());
        }
        if append {
            return self.append(&mut st, data).await;
        }
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or(FsError::FileTooLarge)?;
        st.readahead.clear();
        let buf_end = st.buf_offset + st.buf.len() as u64;
        let coalesces = !st.buf.is_empty()
            && offset >= st.buf_offset
            && offset <= buf_end
            && end - st.buf_offset <= self.config.flush_bytes as u64;
        if !coalesces {
            self.push(&mut st).await?;
            st.buf_offset = offset;
        }
        let start = (offset - st.buf_offset) as usize;
        let grow = ((end - st.buf_offset) as usize).saturating_sub(st.buf.len());
        match Arc::clone(&self.budget).try_acquire_many_owned(grow as u32) {
            Ok(p) => {
                match st.permit.as_mut() {
                    Some(held) => held.merge(p),
                    None => st.permit = Some(p),
                }
                let overlap = (st.buf.len() - start).min(data.len());
                st.buf[start..start + overlap].copy_from_slice(&data[..overlap]);
                st.buf.extend_from_slice(&data[overlap..]);
            }
            Err(_) => {
                // The mount's buffer budget is spent: wait for this inode's pushes (their
                // budget returns), then write this one through.
                self.push(&mut st).await?;
                self.wait_pushes(&mut st, 0, u64::MAX).await?;
                let res = self
                    .client
                    .write_data(self.inode, offset, Bytes::copy_from_slice(data))
                    .await;
                if let Err(e) = res {
                    st.error = Some(e.clone());
                    return Err(e);
                }
                st.uncommitted_end = Some(st.uncommitted_end.unwrap_or(0).max(end));
            }
        }
        st.size = st.size.max(end);
        *self.dirty_size.lock().unwrap() = Some(st.size);
        if st.buf.len() >= self.config.flush_bytes {
            self.push(&mut st).await?;
        }
        Ok(data.len() as u32)
    }

    /// `O_APPEND`: each `write` is a record append (`Client::append`): it lands whole, once, at
    /// the file's end as every mount and client sees it, however many append at once. Data
    /// buffered here goes out and is committed first, so it stays before the record. A record
    /// never straddles a chunk: if it does not fit in the last one, that chunk is padded with
    /// zeros and the record starts the next. A write larger than a chunk is appended in
    /// chunk-sized records (each whole, the write as a whole not atomic).
    async fn append(&self, st: &mut State, data: &[u8]) -> Result<u32, FsError> {
        self.flush_locked(st).await?;
        st.readahead.clear();
        let cs = self.client.chunk_size() as usize;
        for piece in data.chunks(cs.max(1)) {
            let at = self
                .client
                .append(self.inode, Bytes::copy_from_slice(piece))
                .await?;
            st.size = st.size.max(at + piece.len() as u64);
            tracing::debug!(inode = %self.inode, at, len = piece.len(), "appended a record");
        }
        Ok(data.len() as u32)
    }

    /// Start pushing the buffer to the replicas in the background (no size commit), after any
    /// push in flight that it overlaps and once fewer than `pushes_in_flight` are in flight.
    /// Reports a failure of an earlier push (remembered as well).
    async fn push(&self, st: &mut State) -> Result<(), FsError> {
        if st.buf.is_empty() {
            return Ok(());
        }
        let offset = st.buf_offset;
        let end = offset + st.buf.len() as u64;
        self.wait_pushes(st, offset, end).await?;
        while st.pushes.len() >= self.config.pushes_in_flight.max(1) {
            let (first_offset, first_end) = (st.pushes[0].offset, st.pushes[0].end);
            self.wait_pushes(st, first_offset, first_end).await?;
        }
        let data = std::mem::take(&mut st.buf).freeze();
        let permit = st.permit.take();
        let (client, inode) = (self.client.clone(), self.inode);
        let task = tokio::spawn(async move {
            let res = client.write_data(inode, offset, data).await;
            drop(permit);
            res
        });
        st.pushes.push(Push { offset, end, task });
        Ok(())
    }

    /// Wait for the pushes in flight that overlap `[offset, end)` (and collect every one that
    /// has finished). Each stays listed until its result is taken, so a caller that gives up
    /// half-way loses no result. The first failure is remembered and returned.
    async fn wait_pushes(&self, st: &mut State, offset: u64, end: u64) -> Result<(), FsError> {
        let mut i = 0;
        while i < st.pushes.len() {
            let p = &mut st.pushes[i];
            if !(p.task.is_finished() || (p.offset < end && offset < p.end)) {
                i += 1;
                continue;
            }
            let res = match (&mut p.task).await {
                Ok(res) => res,
                Err(e) => Err(FsError::Io(format!("write-back push task: {e}"))),
            };
            let p = st.pushes.remove(i);
            match res {
                Ok(()) => st.uncommitted_end = Some(st.uncommitted_end.unwrap_or(0).max(p.end)),
                Err(e) => {
                    tracing::warn!(inode = %self.inode, offset = p.offset, error = %e,
                        "write-back push failed");
                    if st.error.is_none() {
                        st.error = Some(e);
                    }
                }
            }
        }
        match &st.error {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Push everything and record the size on the master (flush, fsync, close). Reports, and
    /// clears, an earlier failed push.
    pub async fn flush(&self) -> Result<(), FsError> {
        let mut st = self.state.lock().await;
        let res = self.flush_locked(&mut st).await;
        match (st.error.take(), res) {
            (Some(e), _) | (None, Err(e)) => Err(e),
            (None, Ok(())) => Ok(()),
        }
    }

    async fn flush_locked(&self, st: &mut State) -> Result<(), FsError> {
        self.push(st).await?;
        self.wait_pushes(st, 0, u64::MAX).await?;
        if let Some(end) = st.uncommitted_end {
            let attr = self.client.commit_size(self.inode, end).await?;
            st.uncommitted_end = None;
            st.size = attr.size;
        }
        if st.buf.is_empty() && st.uncommitted_end.is_none() {
            *self.dirty_size.lock().unwrap() = None;
        }
        Ok(())
    }

    /// Set the size: buffered data goes out and is committed first, so the cut or extension
    /// applies after it, as it would on a local disk.
    pub async fn truncate(&self, size: u64) -> Result<quarry_proto::Attr, FsError> {
        let mut st = self.state.lock().await;
        if let Some(e) = st.error.take() {
            return Err(e);
        }
        self.flush_locked(&mut st).await?;
        st.readahead.clear();
        let attr = self.client.truncate(self.inode, size).await?;
        st.size = attr.size;
        Ok(attr)
    }

    /// Set attributes with `req`. When it sets the modification time, buffered data goes out
    /// and its size is committed first: the size commit stamps the time of the write, and an
    /// explicit time set after the writes (`tar`'s and `cp -p`'s `futimens` before `close`)
    /// must win over it, as on a local disk.
    pub async fn setattr(&self, req: SetAttr) -> Result<quarry_proto::Attr, FsError> {
        let mut st = self.state.lock().await;
        if req.mtime.is_some() {
            if let Some(e) = st.error.take() {
                return Err(e);
            }
            self.flush_locked(&mut st).await?;
        }
        self.client.setattr(req).await
    }

    /// `fallocate` mode 0: make the file at least `end` bytes long (a sparse extension; chunks
    /// are placed when written). Buffered data is committed first. A file already that long is
    /// left alone.
    pub async fn extend_to(&self, end: u64) -> Result<(), FsError> {
        let mut st = self.state.lock().await;
        if let Some(e) = st.error.take() {
            return Err(e);
        }
        self.flush_locked(&mut st).await?;
        if end > st.size {
            st.readahead.clear();
            let attr = self.client.truncate(self.inode, end).await?;
            st.size = attr.size;
        }
        Ok(())
    }

    /// Read up to `len` bytes at `offset`, as this mount sees the file.
    pub async fn read(&self, offset: u64, len: u32) -> Result<Bytes, FsError> {
        let mut st = self.state.lock().await;
        // Make buffered writes readable first (pushed data reads back from the replicas).
        self.push(&mut st).await?;
        self.wait_pushes(&mut st, 0, u64::MAX).await?;
        let size = st.size;
        let end = size.min(offset.saturating_add(len as u64));
        if offset >= end {
            return Ok(Bytes::new());
        }
        let sequential = offset == st.readahead.next;
        st.readahead.next = end;
        if let Some(b) = st.readahead.serve(offset, end) {
            self.prefetch(&mut st, end);
            return Ok(b);
        }
        let front = st.readahead.pending.front().map(|(at, _)| *at);
        match front {
            Some(at) if at <= offset && offset < at + self.config.readahead_bytes => {
                let (at, h) = st.readahead.pending.pop_front().expect("front exists");
                if let Ok(Ok(bytes)) = h.await {
                    st.readahead.window = Some((at, bytes));
                    if let Some(b) = st.readahead.serve(offset, end) {
                        self.prefetch(&mut st, end);
                        return Ok(b);
                    }
                }
                st.readahead.abort_pending();
            }
            Some(_) => st.readahead.abort_pending(),
            None => {}
        }
        if !sequential {
            return self
                .client
                .read(self.inode, offset, end - offset, size)
                .await;
        }
        let want = self.config.readahead_bytes.max(end - offset);
        let bytes = self.client.read(self.inode, offset, want, size).await?;
        st.readahead.window = Some((offset, bytes));
        let out = st.readahead.serve(offset, end).unwrap_or_default();
        self.prefetch(&mut st, end);
        Ok(out)
    }

    /// Once a sequential reader is past the middle of the window, keep `readahead_windows`
    /// windows after it being fetched.
    fn prefetch(&self, st: &mut State, read_end: u64) {
        let Some((at, bytes)) = st.readahead.window.as_ref() else {
            return;
        };
        let window_end = at + bytes.len() as u64;
        if read_end < at + bytes.len() as u64 / 2 {
            return;
        }
        let len = self.config.readahead_bytes.max(1);
        let mut next = match st.readahead.pending.back() {
            Some((at, _)) => at + len,
            None => window_end,
        };
        while st.readahead.pending.len() < self.config.readahead_windows.max(1) && next < st.size {
            let client = self.client.clone();
            let (inode, size) = (self.inode, st.size);
            let h = tokio::spawn(async move { client.read(inode, next, len, size).await });
            st.readahead.pending.push_back((next, h));
            next += len;
        }
    }
}
