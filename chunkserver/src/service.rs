//! The chunkserver's runtime: serves data pushes (forwarding down the replica chain while
//! receiving), ordered mutations as primary or secondary, verified reads and version bumps, and
//! sends heartbeats with chunk reports to the master. It clones chunks from peers when the master
//! re-replicates ([`CloneChunk`]) and scrubs idle chunks in the background, reporting checksum
//! mismatches to the master.
//!
//! Chunk bytes live behind [`ChunkStore`]; its calls block, so they run on the blocking pool.

use crate::store::ChunkStore;
use bytes::{Bytes, BytesMut};
use quarry_proto::chunk::*;
use quarry_proto::master::{Heartbeat, ReportBadChunk, ReportFailedReplica};
use quarry_proto::{ChunkHandle, ChunkVersion, DataId, FsError, NodeId, OpId};
use quarry_transport::{metrics, Reply, Request, Router, RpcClient};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct ChunkserverConfig {
    pub data_dir: PathBuf,
    pub masters: Vec<String>,
    pub heartbeat_interval_ms: u64,
    /// Send a full chunk report at least this often (garbage collection relies on it).
    pub full_report_interval_ms: u64,
    /// Bound on pushed data waiting for its mutation.
    pub push_buffer_bytes: u64,
    /// Pushed data not consumed within this time is dropped.
    pub push_buffer_ttl_ms: u64,
    /// Timeout of calls to peers and the master (forwarding, applying at secondaries).
    pub rpc_timeout_ms: u64,
    /// Scrubbing: verify the checksums of idle chunks at this many bytes per second (0: off).
    /// After a full pass over the chunks, the next pass starts.
    pub scrub_bytes_per_sec: u64,
    /// Scrubbing skips chunks written (or created) less than this long ago.
    pub scrub_idle_ms: u64,
    /// Fault injection for tests (0 in production): as primary, answer this many per mille of
    /// the mutations that succeeded on every replica with an error instead, as if the reply
    /// had been lost, so that the client retries a mutation that is already applied.
    pub fault_lose_commit_replies_per_mille: u32,
}

impl ChunkserverConfig {
    pub fn new(data_dir: PathBuf, masters: Vec<String>) -> ChunkserverConfig {
        ChunkserverConfig {
            data_dir,
            masters,
            heartbeat_interval_ms: 1_000,
            full_report_interval_ms: 30_000,
            push_buffer_bytes: 1 << 30,
            push_buffer_ttl_ms: 120_000,
            rpc_timeout_ms: 10_000,
            scrub_bytes_per_sec: 16 << 20,
            scrub_idle_ms: 60_000,
            fault_lose_commit_replies_per_mille: 0,
        }
    }
}

/// How many appended records every replica remembers (oldest forgotten first) for exactly-once
/// record append: a retry of a record must arrive before this many later appends did.
const APPEND_MEMO_RECORDS: usize = 1 << 18;

/// Where appended records landed: `(chunk, record) → (offset, len)`, bounded, oldest first out.
/// Kept by every replica (secondaries learn it from [`ApplyMutation::record`]), so a new primary
/// knows too.
#[derive(Default)]
struct AppendMemo {
    placed: HashMap<(ChunkHandle, OpId), (u64, u64)>,
    order: VecDeque<(ChunkHandle, OpId)>,
}

impl AppendMemo {
    fn get(&self, handle: ChunkHandle, op: OpId) -> Option<(u64, u64)> {
        self.placed.get(&(handle, op)).copied()
    }

    /// Every record remembered for `handle` (a linear scan: only clones ask).
    fn of_chunk(&self, handle: ChunkHandle) -> Vec<(OpId, u64, u64)> {
        self.order
            .iter()
            .filter(|(h, _)| *h == handle)
            .filter_map(|&(h, op)| self.placed.get(&(h, op)).map(|&(o, l)| (op, o, l)))
            .collect()
    }

    fn insert(&mut self, handle: ChunkHandle, op: OpId, offset: u64, len: u64) {
        if self.placed.insert((handle, op), (offset, len)).is_none() {
            self.order.push_back((handle, op));
        }
        while self.order.len() > APPEND_MEMO_RECORDS {
            if let Some(old) = self.order.pop_front() {
                self.placed.remove(&old);
            }
        }
    }
}

/// Bytes per `ReadChunk` of a clone, and per verified read of the scrubber.
const CLONE_PIECE_BYTES: u64 = 4 << 20;
const SCRUB_PIECE_BYTES: u64 = 1 << 20;
/// The scrubber reports a corrupt chunk again after this long if it is still there.
const SCRUB_REREPORT: Duration = Duration::from_secs(300);

/// What the scrubber has done since the chunkserver started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScrubStats {
    /// Full passes over the chunks that were idle.
    pub passes: u64,
    pub bytes: u64,
    /// Chunks found corrupt (each reported to the master).
    pub mismatches: u64,
}

/// Read or create the persistent node id in `dir/node_id`.
pub fn load_or_create_node_id(dir: &std::path::Path) -> anyhow::Result<NodeId> {
    let path = dir.join("node_id");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let id: u64 = text
            .trim()
            .parse()
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        return Ok(NodeId(id));
    }
    std::fs::create_dir_all(dir)?;
    let id = loop {
        let v: u64 = rand_u64() >> 1;
        if v != 0 {
            break v;
        }
    };
    let tmp = dir.join("node_id.tmp");
    std::fs::write(&tmp, format!("{id}\n"))?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(NodeId(id))
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.write_u32(std::process::id());
    h.finish()
}

struct Buffered {
    data: Bytes,
    arrived: Instant,
}

#[derive(Default)]
struct PushBuffers {
    map: HashMap<DataId, Buffered>,
    /// Bytes held in `map`.
    bytes: u64,
    /// Bytes claimed by pushes still arriving.
    reserved: u64,
}

/// Room claimed in the push buffers; given back when dropped unless the data was stored.
struct Reservation<'a> {
    inner: &'a Inner,
    len: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.len > 0 {
            self.inner.buffers.lock().unwrap().reserved -= self.len;
        }
    }
}

struct LeaseState {
    version: ChunkVersion,
    expires: Instant,
    next_serial: u64,
    /// The replicas the master granted the lease with (this server among them).
    replicas: Vec<quarry_proto::ServerRef>,
}

pub struct Chunkserver {
    inner: Arc<Inner>,
}

struct Inner {
    config: ChunkserverConfig,
    node: NodeId,
    store: Arc<dyn ChunkStore>,
    buffers: Mutex<PushBuffers>,
    leases: Mutex<HashMap<ChunkHandle, LeaseState>>,
    /// Orders mutations of one chunk (primary: while it forwards to secondaries).
    chunk_locks: Mutex<HashMap<ChunkHandle, Arc<tokio::sync::Mutex<u64>>>>,
    rpc: Mutex<Option<RpcClient>>,
    addr: Mutex<String>,
    active: AtomicU32,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    /// The disk's capacity and used bytes and the chunk count, as last sent in a heartbeat
    /// (the chunk count from the last full report), for the metrics.
    capacity_bytes: AtomicU64,
    used_bytes: AtomicU64,
    chunk_count: AtomicU64,
    /// When each chunk was last written, truncated, created or cloned (since this start): the
    /// scrubber leaves recently written chunks alone.
    written: Mutex<HashMap<ChunkHandle, Instant>>,
    /// Chunks being cloned here now, and when recent clones completed. A delete order that may
    /// predate a clone (its heartbeat was sent before the clone completed) is skipped: the
    /// master judges the new copy from the next report instead.
    cloning: Mutex<HashMap<ChunkHandle, u32>>,
    cloned_at: Mutex<HashMap<ChunkHandle, Instant>>,
    /// The masters this server knows: the configured ones plus any a `NotLeader` hint named
    /// (a master added to the Raft group after this server started).
    masters: Mutex<Vec<String>>,
    scrub: Mutex<ScrubStats>,
    appends: Mutex<AppendMemo>,
    /// Counts commits for the lost-reply fault injection, and the replies it "lost".
    commits: AtomicU64,
    lost_replies: AtomicU64,
}

/// Counts a request in flight for the load figure of heartbeats.
struct ActiveGuard<'a>(&'a AtomicU32);
impl<'a> ActiveGuard<'a> {
    fn new(c: &'a AtomicU32) -> Self {
        c.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(c)
    }
}
impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, FsError> + Send + 'static,
) -> Result<T, FsError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| FsError::Io(format!("store task failed: {e}")))?
}

impl Chunkserver {
    pub fn new(config: ChunkserverConfig, node: NodeId, store: Arc<dyn ChunkStore>) -> Chunkserver {
        let masters = Mutex::new(config.masters.clone());
        Chunkserver {
            inner: Arc::new(Inner {
                config,
                node,
                store,
                buffers: Mutex::new(PushBuffers::default()),
                leases: Mutex::new(HashMap::new()),
                chunk_locks: Mutex::new(HashMap::new()),
                rpc: Mutex::new(None),
                addr: Mutex::new(String::new()),
                active: AtomicU32::new(0),
                bytes_read: AtomicU64::new(0),
                bytes_written: AtomicU64::new(0),
                capacity_bytes: AtomicU64::new(0),
                used_bytes: AtomicU64::new(0),
                chunk_count: AtomicU64::new(0),
                written: Mutex::new(HashMap::new()),
                cloning: Mutex::new(HashMap::new()),
                cloned_at: Mutex::new(HashMap::new()),
                masters,
                scrub: Mutex::new(ScrubStats::default()),
                appends: Mutex::new(AppendMemo::default()),
                commits: AtomicU64::new(0),
                lost_replies: AtomicU64::new(0),
            }),
        }
    }

    pub fn node_id(&self) -> NodeId {
        self.inner.node
    }

    /// Export this chunkserver's counters and disk figures in the process's metrics registry
    /// under `node`, refreshed at each scrape while the server runs.
    pub fn export_metrics(&self, node: &str) {
        let weak = Arc::downgrade(&self.inner);
        let node = node.to_string();
        metrics::global().add_collector(move |reg| {
            let Some(inner) = weak.upgrade() else {
                return false;
            };
            let l = [("node", node.as_str())];
            let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
            reg.counter(
                "quarry_chunkserver_read_bytes_total",
                "Chunk bytes read and served (ReadChunk), checksums verified.",
                &l,
            )
            .mirror(load(&inner.bytes_read));
            reg.counter(
                "quarry_chunkserver_written_bytes_total",
                "Chunk bytes written by applied mutations (as primary or secondary).",
                &l,
            )
            .mirror(load(&inner.bytes_written));
            let scrub = *inner.scrub.lock().unwrap();
            reg.counter(
                "quarry_chunkserver_scrubbed_bytes_total",
                "Bytes verified by the background scrubber.",
                &l,
            )
            .mirror(scrub.bytes);
            reg.counter(
                "quarry_chunkserver_scrub_mismatches_total",
                "Chunks the scrubber found corrupt.",
                &l,
            )
            .mirror(scrub.mismatches);
            let g = |name: &str, help: &str, v: u64| reg.gauge(name, help, &l).set(v as i64);
            g(
                "quarry_chunkserver_capacity_bytes",
                "Size of the data directory's file system (last heartbeat).",
                load(&inner.capacity_bytes),
            );
            g(
                "quarry_chunkserver_used_bytes",
                "Bytes used on the data directory's file system (last heartbeat).",
                load(&inner.used_bytes),
            );
            g(
                "quarry_chunkserver_chunks",
                "Chunk replicas stored here (last full report).",
                load(&inner.chunk_count),
            );
            g(
                "quarry_chunkserver_active_requests",
                "Reads and mutations being served now.",
                inner.active.load(Ordering::Relaxed) as u64,
            );
            true
        });
    }

    pub fn store(&self) -> &Arc<dyn ChunkStore> {
        &self.inner.store
    }

    pub fn routes(&self, router: &mut Router) {
        macro_rules! route {
            ($rpc:ty, $method:ident) => {{
                let inner = self.inner.clone();
                router.route::<$rpc, _, _>(move |req: Request<$rpc>| {
                    let inner = inner.clone();
                    async move { inner.$method(req).await }
                });
            }};
        }
        route!(PushData, push_data);
        route!(CommitMutation, commit_mutation);
        route!(ApplyMutation, apply_mutation);
        route!(ReadChunk, read_chunk);
        route!(BumpVersion, bump_version);
        route!(ChunkserverPing, ping);
        route!(CloneChunk, clone_chunk);
        route!(GetAppendMemo, get_append_memo);
    }

    /// Start heartbeating and scrubbing; `addr` is how peers reach this server. Runs until the
    /// returned handle is aborted.
    pub fn start(&self, rpc: RpcClient, addr: String) -> tokio::task::JoinHandle<()> {
        *self.inner.rpc.lock().unwrap() = Some(rpc);
        *self.inner.addr.lock().unwrap() = addr;
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let scrubber = tokio::spawn(inner.clone().scrub_loop());
            // Aborting this task drops the guard, which stops the scrubber too.
            struct AbortOnDrop(tokio::task::JoinHandle<()>);
            impl Drop for AbortOnDrop {
                fn drop(&mut self) {
                    self.0.abort();
                }
            }
            let _scrubber = AbortOnDrop(scrubber);
            inner.heartbeat_loop().await
        })
    }

    /// Commits answered as lost by fault injection.
    pub fn lost_replies(&self) -> u64 {
        self.inner.lost_replies.load(Ordering::Relaxed)
    }

    pub fn scrub_stats(&self) -> ScrubStats {
        *self.inner.scrub.lock().unwrap()
    }
}

/// Marks a chunk as being cloned while alive.
struct CloningGuard<'a> {
    inner: &'a Inner,
    handle: ChunkHandle,
}

impl<'a> CloningGuard<'a> {
    fn new(inner: &'a Inner, handle: ChunkHandle) -> Self {
        *inner.cloning.lock().unwrap().entry(handle).or_insert(0) += 1;
        CloningGuard { inner, handle }
    }
}

impl Drop for CloningGuard<'_> {
    fn drop(&mut self) {
        let mut cloning = self.inner.cloning.lock().unwrap();
        if let Some(n) = cloning.get_mut(&self.handle) {
            *n -= 1;
            if *n == 0 {
                cloning.remove(&self.handle);
            }
        }
    }
}

impl Inner {
    fn rpc(&self) -> Result<RpcClient, FsError> {
        self.rpc
            .lock()
            .unwrap()
            .clone()
            .ok_or_else(|| FsError::Unavailable("chunkserver not started".into()))
    }

    fn chunk_lock(&self, handle: ChunkHandle) -> Arc<tokio::sync::Mutex<u64>> {
        let mut locks = self.chunk_locks.lock().unwrap();
        if locks.len() > 4096 {
            locks.retain(|_, l| Arc::strong_count(l) > 1);
        }
        locks.entry(handle).or_default().clone()
    }

    fn take_buffer(&self, id: DataId, len: u64) -> Result<Bytes, FsError> {
        let mut b = self.buffers.lock().unwrap();
        let data = b.map.remove(&id).ok_or(FsError::DataNotFound(id.0))?.data;
        b.bytes -= data.len() as u64;
        if data.len() as u64 != len {
            return Err(FsError::InvalidArgument(format!(
                "pushed data {id} has {} bytes, mutation says {len}",
                data.len()
            )));
        }
        Ok(data)
    }

    /// Claim room for `len` bytes of pushed data before receiving them, so the buffers' bound
    /// holds while pushes are still arriving (expired buffers are dropped first).
    fn reserve(&self, len: u64) -> Result<Reservation<'_>, FsError> {
        let mut b = self.buffers.lock().unwrap();
        let ttl = Duration::from_millis(self.config.push_buffer_ttl_ms);
        let now = Instant::now();
        let mut freed = 0u64;
        b.map.retain(|_, v| {
            let keep = now.duration_since(v.arrived) < ttl;
            if !keep {
                freed += v.data.len() as u64;
            }
            keep
        });
        b.bytes -= freed;
        if b.bytes + b.reserved + len > self.config.push_buffer_bytes {
            return Err(FsError::Unavailable(format!(
                "push buffers full ({} bytes waiting, {} arriving)",
                b.bytes, b.reserved
            )));
        }
        b.reserved += len;
        Ok(Reservation { inner: self, len })
    }

    /// Keep pushed data until a mutation consumes it (each replica holds its own copy).
    fn store_buffer(&self, id: DataId, data: Bytes, mut room: Reservation<'_>) {
        let mut b = self.buffers.lock().unwrap();
        b.reserved -= room.len;
        room.len = 0;
        b.bytes += data.len() as u64;
        let arrived = Instant::now();
        if let Some(old) = b.map.insert(id, Buffered { data, arrived }) {
            b.bytes -= old.data.len() as u64;
        }
    }

    async fn push_data(&self, req: Request<PushData>) -> Reply<()> {
        let _active = ActiveGuard::new(&self.active);
        Reply::from(self.push_data_inner(req).await)
    }

    async fn push_data_inner(&self, req: Request<PushData>) -> Result<(), FsError> {
        let Request { msg, mut body, .. } = req;
        let len = body.len();
        if len > self.config.push_buffer_bytes {
            return Err(FsError::InvalidArgument(format!(
                "push of {len} bytes is too large"
            )));
        }
        let room = self.reserve(len)?;
        let mut downstream = match msg.forward.split_first() {
            Some((next, rest)) => {
                let fwd = PushData {
                    data_id: msg.data_id,
                    forward: rest.to_vec(),
                    crc32c: msg.crc32c,
                };
                Some(self.rpc()?.start(&next.addr, &fwd, len).await?)
            }
            None => None,
        };
        let mut buf = BytesMut::with_capacity(len as usize);
        let mut crc = 0u32;
        while let Some(piece) = body.next_chunk().await? {
            crc = crc32c::crc32c_append(crc, &piece);
            if let Some(d) = downstream.as_mut() {
                d.send(&piece).await?;
            }
            buf.extend_from_slice(&piece);
        }
        if crc != msg.crc32c {
            return Err(FsError::Protocol(format!(
                "pushed data {} failed its checksum",
                msg.data_id
            )));
        }
        self.store_buffer(msg.data_id, buf.freeze(), room);
        if let Some(d) = downstream {
            d.finish().await?;
        }
        Ok(())
    }

    /// Remember a write for the scrubber (which prunes the map; nothing to keep without it).
    fn note_written(&self, handle: ChunkHandle) {
        if self.config.scrub_bytes_per_sec > 0 {
            self.written.lock().unwrap().insert(handle, Instant::now());
        }
    }

    /// Apply one resolved mutation to the local store (durable on return).
    async fn apply_local(
        &self,
        handle: ChunkHandle,
        version: ChunkVersion,
        mutation: &Mutation,
    ) -> Result<u64, FsError> {
        let store = self.store.clone();
        self.note_written(handle);
        match *mutation {
            Mutation::Write {
                offset,
                data_id,
                len,
            } => {
                let data = self.take_buffer(data_id, len)?;
                self.bytes_written.fetch_add(len, Ordering::Relaxed);
                blocking(move || {
                    store.write(handle, version, offset, &data)?;
                    store.len(handle, version)
                })
                .await
            }
            Mutation::Truncate { len } => {
                blocking(move || {
                    store.truncate(handle, version, len)?;
                    Ok(len)
                })
                .await
            }
            Mutation::Append { .. } => Err(FsError::Protocol(
                "an append must be resolved by the primary".into(),
            )),
        }
    }

    async fn commit_mutation(&self, req: Request<CommitMutation>) -> Reply<CommitReply> {
        let _active = ActiveGuard::new(&self.active);
        Reply::from(self.commit_inner(req.msg).await)
    }

    async fn commit_inner(&self, m: CommitMutation) -> Result<CommitReply, FsError> {
        let handle = m.handle;
        let lock = self.chunk_lock(handle);
        let _order = lock.lock().await;
        let (serial, secondaries) = {
            let mut leases = self.leases.lock().unwrap();
            let lease = leases
                .get_mut(&handle)
                .filter(|l| l.version == m.version && l.expires > Instant::now())
                .ok_or(FsError::NoLease(handle.0))?;
            lease.next_serial += 1;
            // The master's list is authoritative, not the client's.
            let secondaries: Vec<_> = lease
                .replicas
                .iter()
                .filter(|r| r.id != self.node)
                .cloned()
                .collect();
            (lease.next_serial, secondaries)
        };
        let have = self
            .store
            .version(handle)
            .ok_or(FsError::ChunkNotFound(handle.0))?;
        if have != m.version {
            return Err(FsError::StaleVersion {
                have: have.0,
                request: m.version.0,
            });
        }
        // Resolve appends to a plain write: at the offset where this record already landed if
        // it did (a retry), else at the chunk's end, or to padding when it does not fit.
        let (resolved, chunk_full, record) = match m.mutation {
            Mutation::Append {
                data_id,
                len,
                chunk_size,
                op,
                min_offset,
            } => {
                let placed = self.appends.lock().unwrap().get(handle, op);
                match placed {
                    Some((offset, placed_len)) => {
                        if placed_len != len {
                            let _ = self.take_buffer(data_id, len);
                            return Err(FsError::InvalidArgument(format!(
                                "record {}:{} retried with {len} bytes, placed with {placed_len}",
                                op.client.0, op.seq
                            )));
                        }
                        // Placed before (its reply was lost, or a replica failed): write it
                        // again at the same offset, so every current replica holds it once.
                        (
                            Mutation::Write {
                                offset,
                                data_id,
                                len,
                            },
                            false,
                            Some(op),
                        )
                    }
                    None => {
                        let store = self.store.clone();
                        let version = m.version;
                        let end = blocking(move || store.len(handle, version))
                            .await?
                            .max(min_offset);
                        if end + len > chunk_size {
                            // Discard the record's data here; the client retries on the next
                            // chunk.
                            let _ = self.take_buffer(data_id, len);
                            (Mutation::Truncate { len: chunk_size }, true, None)
                        } else {
                            (
                                Mutation::Write {
                                    offset: end,
                                    data_id,
                                    len,
                                },
                                false,
                                Some(op),
                            )
                        }
                    }
                }
            }
            other => (other, false, None),
        };
        let (offset, written_len) = match resolved {
            Mutation::Write { offset, len, .. } => (offset, len),
            Mutation::Truncate { len } => (len, 0),
            Mutation::Append { .. } => unreachable!("resolved above"),
        };
        if let Some(op) = record {
            tracing::debug!(%handle, version = %m.version, client = op.client.0, seq = op.seq, offset, len = written_len, "record placed");
        }
        // The secondaries apply while this replica does (each fsyncs before answering); the
        // chunk lock stays held until all are done, so every replica sees the same order.
        let rpc = self.rpc()?;
        let apply = ApplyMutation {
            handle,
            version: m.version,
            serial,
            mutation: resolved.clone(),
            record,
        };
        let total = secondaries.len() + 1;
        let calls: Vec<_> = secondaries
            .into_iter()
            .map(|s| {
                let rpc = rpc.clone();
                let apply = apply.clone();
                let addr = s.addr.clone();
                (
                    s,
                    tokio::spawn(async move { rpc.call(&addr, &apply).await }),
                )
            })
            .collect();
        let local = self.apply_local(handle, m.version, &resolved).await;
        if let (Ok(_), Some(op)) = (&local, record) {
            self.appends
                .lock()
                .unwrap()
                .insert(handle, op, offset, written_len);
        }
        let mut failed: Vec<(NodeId, FsError)> = Vec::new();
        for (s, call) in calls {
            let res = call
                .await
                .unwrap_or_else(|e| Err(FsError::Io(format!("secondary task failed: {e}"))));
            if let Err(e) = res {
                tracing::warn!(%handle, secondary = %s.addr, "mutation failed on secondary: {e}");
                failed.push((s.id, e));
            }
        }
        let chunk_len = match local {
            Ok(len) => len,
            Err(e) => {
                tracing::warn!(%handle, "mutation failed on the primary: {e}");
                failed.push((self.node, e));
                0
            }
        };
        if failed.is_empty() {
            let lose = self.config.fault_lose_commit_replies_per_mille;
            if lose > 0 {
                let n = self.commits.fetch_add(1, Ordering::Relaxed);
                if n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54 < u64::from(lose) * 1024 / 1000 {
                    self.lost_replies.fetch_add(1, Ordering::Relaxed);
                    return Err(FsError::Unavailable(
                        "fault injection: the commit's reply was lost".into(),
                    ));
                }
            }
            if chunk_full {
                return Err(FsError::ChunkFull);
            }
            return Ok(CommitReply { offset, chunk_len });
        }
        if failed.len() == total {
            // Applied nowhere: nothing to withdraw, the client gets the error (a full disk on
            // every replica is ENOSPC).
            return Err(if failed.iter().any(|(_, e)| *e == FsError::NoSpace) {
                FsError::NoSpace
            } else {
                let (_, e) = failed.swap_remove(0);
                if e.is_retryable() {
                    FsError::Unavailable(format!("every replica failed: {e}"))
                } else {
                    e
                }
            });
        }
        // Applied on some replicas only: the others may differ from them now. They are
        // withdrawn (the master deletes them and re-replicates), this lease stops using them,
        // and the client retries, on the remaining replicas or elsewhere.
        let nodes: Vec<NodeId> = failed.iter().map(|(n, _)| *n).collect();
        let lease_released = nodes.contains(&self.node);
        {
            let mut leases = self.leases.lock().unwrap();
            if lease_released {
                if leases.get(&handle).is_some_and(|l| l.version == m.version) {
                    leases.remove(&handle);
                }
            } else if let Some(l) = leases.get_mut(&handle) {
                l.replicas.retain(|r| !nodes.contains(&r.id));
            }
        }
        self.report_failed(handle, m.version, nodes, lease_released)
            .await;
        let (_, first) = &failed[0];
        Err(FsError::Unavailable(format!(
            "chunk {handle}: the mutation failed on {} of {total} replicas ({first}); \
             they were withdrawn, retry",
            failed.len()
        )))
    }

    /// Tell the master which replicas a mutation failed on (see [`ReportFailedReplica`]).
    async fn report_failed(
        &self,
        handle: ChunkHandle,
        version: ChunkVersion,
        failed: Vec<NodeId>,
        lease_released: bool,
    ) {
        let Ok(rpc) = self.rpc() else { return };
        let report = ReportFailedReplica {
            handle,
            version,
            failed,
            lease_released,
        };
        let masters = self.masters.lock().unwrap().clone();
        for m in &masters {
            match rpc.call(m, &report).await {
                Ok(()) => return,
                Err(e) => tracing::warn!(%handle, master = %m, "failed-replica report: {e}"),
            }
        }
    }

    async fn apply_mutation(&self, req: Request<ApplyMutation>) -> Reply<()> {
        let _active = ActiveGuard::new(&self.active);
        let m = req.msg;
        let result = async {
            let lock = self.chunk_lock(m.handle);
            let _order = lock.lock().await;
            let have = self
                .store
                .version(m.handle)
                .ok_or(FsError::ChunkNotFound(m.handle.0))?;
            if have != m.version {
                return Err(FsError::StaleVersion {
                    have: have.0,
                    request: m.version.0,
                });
            }
            self.apply_local(m.handle, m.version, &m.mutation).await?;
            if let (Some(op), Mutation::Write { offset, len, .. }) = (m.record, &m.mutation) {
                self.appends
                    .lock()
                    .unwrap()
                    .insert(m.handle, op, *offset, *len);
            }
            Ok(())
        }
        .await;
        Reply::from(result)
    }

    async fn read_chunk(&self, req: Request<ReadChunk>) -> Reply<ReadReply> {
        let _active = ActiveGuard::new(&self.active);
        let m = req.msg;
        let store = self.store.clone();
        let result = blocking(move || {
            let chunk_len = store.len(m.handle, m.version)?;
            let data = store.read(m.handle, m.version, m.offset, m.len)?;
            Ok((chunk_len, data))
        })
        .await;
        match result {
            Ok((chunk_len, data)) => {
                self.bytes_read
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                Reply::with_body(ReadReply { chunk_len }, data)
            }
            Err(e) => {
                if let FsError::ChecksumMismatch { handle, block } = e {
                    tracing::error!(handle, block, "checksum mismatch; reporting to the master");
                    self.report_bad(ChunkHandle(handle));
                }
                Reply::err(e)
            }
        }
    }

    fn report_bad(&self, handle: ChunkHandle) {
        let Ok(rpc) = self.rpc() else { return };
        let masters = self.masters.lock().unwrap().clone();
        let node = self.node;
        tokio::spawn(async move {
            for m in masters {
                if rpc
                    .call(
                        &m,
                        &ReportBadChunk {
                            handle,
                            server: node,
                        },
                    )
                    .await
                    .is_ok()
                {
                    return;
                }
            }
        });
    }

    async fn bump_version(&self, req: Request<BumpVersion>) -> Reply<()> {
        let m = req.msg;
        let result = async {
            let lock = self.chunk_lock(m.handle);
            let _order = lock.lock().await;
            let store = self.store.clone();
            let (handle, version, create) = (m.handle, m.version, m.create);
            blocking(move || match store.version(handle) {
                Some(v) if v == version => Ok(()),
                Some(v) if v < version => store.set_version(handle, version),
                Some(v) => Err(FsError::StaleVersion {
                    have: v.0,
                    request: version.0,
                }),
                None if create => store.create(handle, version),
                None => Err(FsError::ChunkNotFound(handle.0)),
            })
            .await?;
            if create {
                self.note_written(handle);
            }
            let mut leases = self.leases.lock().unwrap();
            match m.lease_ms {
                Some(ms) => {
                    let next_serial = leases
                        .get(&handle)
                        .filter(|l| l.version == version)
                        .map_or(0, |l| l.next_serial);
                    leases.insert(
                        handle,
                        LeaseState {
                            version,
                            expires: Instant::now() + Duration::from_millis(ms),
                            next_serial,
                            replicas: m.replicas.clone(),
                        },
                    );
                }
                None => {
                    // A new version ends any lease held on an older one.
                    if leases.get(&handle).is_some_and(|l| l.version != version) {
                        leases.remove(&handle);
                    }
                }
            }
            Ok(())
        }
        .await;
        Reply::from(result)
    }

    async fn get_append_memo(&self, req: Request<GetAppendMemo>) -> Reply<AppendMemoReply> {
        let records = self.appends.lock().unwrap().of_chunk(req.msg.handle);
        Reply::ok(AppendMemoReply { records })
    }

    async fn ping(&self, _req: Request<ChunkserverPing>) -> Reply<PingReply> {
        Reply::ok(PingReply { node: self.node })
    }

    async fn heartbeat_loop(self: Arc<Self>) {
        let interval = Duration::from_millis(self.config.heartbeat_interval_ms.max(10));
        let full_every = Duration::from_millis(self.config.full_report_interval_ms.max(100));
        let mut last_full: Option<Instant> = None;
        let mut want_report = true;
        let mut master_idx = 0usize;
        loop {
            let send_full = want_report || last_full.is_none_or(|t| t.elapsed() >= full_every);
            let store = self.store.clone();
            let listing = tokio::task::spawn_blocking(move || {
                let (capacity, used) = store.usage();
                let chunks = if send_full { Some(store.list()) } else { None };
                (capacity, used, chunks)
            })
            .await;
            let Ok((capacity, used, chunks)) = listing else {
                tokio::time::sleep(interval).await;
                continue;
            };
            self.capacity_bytes.store(capacity, Ordering::Relaxed);
            self.used_bytes.store(used, Ordering::Relaxed);
            if let Some(c) = &chunks {
                self.chunk_count.store(c.len() as u64, Ordering::Relaxed);
            }
            let hb = Heartbeat {
                node: self.node,
                addr: self.addr.lock().unwrap().clone(),
                capacity_bytes: capacity,
                used_bytes: used,
                chunks,
                active_requests: self.active.load(Ordering::Relaxed),
                bytes_read: self.bytes_read.load(Ordering::Relaxed),
                bytes_written: self.bytes_written.load(Ordering::Relaxed),
            };
            let masters = self.masters.lock().unwrap().clone();
            if masters.is_empty() {
                tracing::error!("no master configured");
                tokio::time::sleep(interval).await;
                continue;
            }
            let master = &masters[master_idx % masters.len()];
            let rpc = match self.rpc() {
                Ok(r) => r.with_timeout(interval.max(Duration::from_secs(2)) * 2),
                Err(_) => {
                    tokio::time::sleep(interval).await;
                    continue;
                }
            };
            let sent_at = Instant::now();
            match rpc.call(master, &hb).await {
                Ok(reply) => {
                    if send_full {
                        last_full = Some(Instant::now());
                    }
                    want_report = reply.want_report;
                    if !reply.delete.is_empty() {
                        self.delete_chunks(reply.delete, sent_at).await;
                    }
                    // Clones completed before this heartbeat left are covered by what the master
                    // now knows; only later ones still need protecting from older orders.
                    self.cloned_at
                        .lock()
                        .unwrap()
                        .retain(|_, done| *done >= sent_at);
                }
                Err(e) => {
                    tracing::debug!(%master, "heartbeat failed: {e}");
                    // Follow a follower's hint to the leader, else try the next master; a
                    // master that did not have this server's report asks for it again.
                    let hinted = match &e {
                        FsError::NotLeader { hint: Some(h) } => {
                            Some(masters.iter().position(|m| m == h).unwrap_or_else(|| {
                                // A master that joined the group after this server started.
                                let mut known = self.masters.lock().unwrap();
                                known.push(h.clone());
                                known.len() - 1
                            }))
                        }
                        _ => None,
                    };
                    want_report = true;
                    match hinted {
                        Some(i) if i != master_idx % masters.len() => {
                            master_idx = i;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                        _ => master_idx += 1,
                    }
                }
            }
            tokio::time::sleep(interval).await;
        }
    }

    /// Carry out the master's delete orders from the reply to a heartbeat sent at `sent_at`.
    async fn delete_chunks(&self, handles: Vec<(ChunkHandle, ChunkVersion)>, sent_at: Instant) {
        for (handle, at_most) in handles {
            // An order about a chunk being cloned here, or cloned after that heartbeat left, may
            // have been decided about the copy the clone replaced: skip it. If the master does
            // not want the new copy, the next report shows it and the order comes again.
            if self.cloning.lock().unwrap().contains_key(&handle)
                || self
                    .cloned_at
                    .lock()
                    .unwrap()
                    .get(&handle)
                    .is_some_and(|done| *done >= sent_at)
            {
                tracing::debug!(%handle, "skipping a delete order older than a clone");
                continue;
            }
            let lock = self.chunk_lock(handle);
            let _order = lock.lock().await;
            self.leases.lock().unwrap().remove(&handle);
            if self.store.version(handle).is_some_and(|v| v > at_most) {
                continue; // a version bump raced the report: this replica is current
            }
            let store = self.store.clone();
            match blocking(move || store.delete(handle)).await {
                Ok(()) | Err(FsError::ChunkNotFound(_)) | Err(FsError::NotFound) => {
                    tracing::info!(%handle, "deleted chunk the master no longer wants")
                }
                Err(e) => tracing::warn!(%handle, "delete failed: {e}"),
            }
            self.written.lock().unwrap().remove(&handle);
        }
    }

    async fn clone_chunk(&self, req: Request<CloneChunk>) -> Reply<CloneReply> {
        let _active = ActiveGuard::new(&self.active);
        let m = req.msg;
        let result = self.clone_inner(&m).await;
        match &result {
            Ok(r) => {
                tracing::info!(handle = %m.handle, version = %m.version, source = %m.source.addr,
                len = r.len, "cloned chunk")
            }
            Err(e) => tracing::warn!(handle = %m.handle, version = %m.version,
                source = %m.source.addr, "clone failed: {e}"),
        }
        Reply::from(result)
    }

    /// Copy a chunk from a peer (see [`CloneChunk`]): build it at version 0, durably, then move
    /// it to the requested version in one durable step.
    async fn clone_inner(&self, m: &CloneChunk) -> Result<CloneReply, FsError> {
        let handle = m.handle;
        if m.version == ChunkVersion::INCOMPLETE {
            return Err(FsError::InvalidArgument(
                "cannot clone a chunk at version 0".into(),
            ));
        }
        if m.source.id == self.node {
            return Err(FsError::InvalidArgument(
                "a clone's source is its target".into(),
            ));
        }
        let _cloning = CloningGuard::new(self, handle);
        let lock = self.chunk_lock(handle);
        let _order = lock.lock().await;
        // Replace an older copy (stale, corrupt, or an interrupted clone); never a newer one.
        match self.store.version(handle) {
            Some(v) if v > m.version => {
                return Err(FsError::StaleVersion {
                    have: v.0,
                    request: m.version.0,
                })
            }
            Some(_) => {
                self.leases.lock().unwrap().remove(&handle);
                let store = self.store.clone();
                blocking(move || store.delete(handle)).await?;
            }
            None => {}
        }
        let store = self.store.clone();
        blocking(move || store.create(handle, ChunkVersion::INCOMPLETE)).await?;
        self.note_written(handle);
        // The source's append memo first, so the copy answers retries of its records once.
        let copied = match self.copy_from(m).await {
            Ok(len) => {
                let memo = self
                    .rpc()?
                    .call(&m.source.addr, &GetAppendMemo { handle })
                    .await;
                memo.map(|r| (len, r.records))
            }
            Err(e) => Err(e),
        };
        match copied {
            Ok((len, records)) => {
                {
                    let mut appends = self.appends.lock().unwrap();
                    for (op, offset, n) in records {
                        appends.insert(handle, op, offset, n);
                    }
                }
                let (store, version) = (self.store.clone(), m.version);
                let installed = blocking(move || store.set_version(handle, version)).await;
                if let Err(e) = installed {
                    self.discard_incomplete(handle).await;
                    return Err(e);
                }
                self.cloned_at
                    .lock()
                    .unwrap()
                    .insert(handle, Instant::now());
                self.note_written(handle);
                Ok(CloneReply { len })
            }
            Err(e) => {
                self.discard_incomplete(handle).await;
                Err(e)
            }
        }
    }

    /// Delete a partial clone (still at version 0). Called with the chunk's lock held.
    async fn discard_incomplete(&self, handle: ChunkHandle) {
        if self.store.version(handle) == Some(ChunkVersion::INCOMPLETE) {
            let store = self.store.clone();
            if let Err(e) = blocking(move || store.delete(handle)).await {
                tracing::warn!(%handle, "deleting a partial clone failed: {e}");
            }
        }
    }

    /// Read the source's chunk piece by piece (verified at the source) into the local copy at
    /// version 0, paced to `bytes_per_sec`. Returns the chunk's length.
    async fn copy_from(&self, m: &CloneChunk) -> Result<u64, FsError> {
        let rpc = self.rpc()?;
        let started = tokio::time::Instant::now();
        let mut offset = 0u64;
        let mut total: Option<u64> = None;
        loop {
            if total.is_some_and(|t| offset >= t) {
                return Ok(offset);
            }
            let (reply, body) = rpc
                .call_read(
                    &m.source.addr,
                    &ReadChunk {
                        handle: m.handle,
                        version: m.version,
                        offset,
                        len: CLONE_PIECE_BYTES,
                    },
                )
                .await?;
            match total {
                None => total = Some(reply.chunk_len),
                Some(t) if t != reply.chunk_len => {
                    return Err(FsError::Protocol(format!(
                        "chunk {} changed length at the source during a clone ({t} → {})",
                        m.handle, reply.chunk_len
                    )))
                }
                Some(_) => {}
            }
            if body.is_empty() {
                if offset < reply.chunk_len {
                    return Err(FsError::Protocol(format!(
                        "short read at {offset} of {} while cloning chunk {}",
                        reply.chunk_len, m.handle
                    )));
                }
                return Ok(offset);
            }
            let n = body.len() as u64;
            let (store, handle, at) = (self.store.clone(), m.handle, offset);
            blocking(move || store.write(handle, ChunkVersion::INCOMPLETE, at, &body)).await?;
            offset += n;
            if m.bytes_per_sec > 0 {
                let due = Duration::from_secs_f64(offset as f64 / m.bytes_per_sec as f64);
                tokio::time::sleep_until(started + due).await;
            }
        }
    }

    /// Verify the checksums of chunks nobody wrote for `scrub_idle_ms`, `SCRUB_PIECE_BYTES` at a
    /// time through the store's verified read, at `scrub_bytes_per_sec`; report a mismatch to
    /// the master (which withdraws the replica and replaces it). Pass after pass, forever.
    async fn scrub_loop(self: Arc<Self>) {
        let rate = self.config.scrub_bytes_per_sec;
        if rate == 0 {
            return;
        }
        let idle = Duration::from_millis(self.config.scrub_idle_ms);
        // A pass over nothing (or only corrupt chunks) takes at least this long.
        let min_pass = idle.clamp(Duration::from_millis(100), Duration::from_secs(1));
        // Corrupt chunks already reported, and when: reported again only after a while (the
        // master may have restarted and forgotten), not at every pass.
        let mut reported: HashMap<(ChunkHandle, ChunkVersion), Instant> = HashMap::new();
        loop {
            let store = self.store.clone();
            let chunks = match tokio::task::spawn_blocking(move || store.list()).await {
                Ok(c) => c,
                Err(_) => return,
            };
            {
                let mut written = self.written.lock().unwrap();
                written.retain(|_, at| at.elapsed() < idle);
            }
            let started = tokio::time::Instant::now();
            let mut pass = ScrubStats::default();
            for (handle, version) in chunks {
                if version == ChunkVersion::INCOMPLETE
                    || self.written.lock().unwrap().contains_key(&handle)
                {
                    continue;
                }
                let mut offset = 0u64;
                loop {
                    let store = self.store.clone();
                    let read =
                        blocking(move || store.read(handle, version, offset, SCRUB_PIECE_BYTES))
                            .await;
                    match read {
                        Ok(bytes) if bytes.is_empty() => break,
                        Ok(bytes) => {
                            offset += bytes.len() as u64;
                            pass.bytes += bytes.len() as u64;
                            self.scrub.lock().unwrap().bytes += bytes.len() as u64;
                            let due = Duration::from_secs_f64(pass.bytes as f64 / rate as f64);
                            tokio::time::sleep_until(started + due).await;
                        }
                        Err(FsError::ChecksumMismatch { block, .. }) => {
                            pass.mismatches += 1;
                            self.scrub.lock().unwrap().mismatches += 1;
                            let due = reported
                                .get(&(handle, version))
                                .is_none_or(|at| at.elapsed() >= SCRUB_REREPORT);
                            if due {
                                tracing::error!(%handle, block, "scrub: checksum mismatch; reporting to the master");
                                reported.insert((handle, version), Instant::now());
                                self.report_bad(handle);
                            }
                            break;
                        }
                        // Deleted, or moved to another version (written): not idle any more.
                        Err(_) => break,
                    }
                }
            }
            self.scrub.lock().unwrap().passes += 1;
            if pass.bytes > 0 || pass.mismatches > 0 {
                tracing::debug!(
                    bytes = pass.bytes,
                    mismatches = pass.mismatches,
                    "scrub pass done"
                );
            }
            reported.retain(|_, at| at.elapsed() < SCRUB_REREPORT);
            tokio::time::sleep_until(started + min_pass).await;
        }
    }
}
