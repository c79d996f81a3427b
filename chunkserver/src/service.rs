//! The chunkserver's runtime: serves data pushes (forwarding down the replica chain while
//! receiving), ordered mutations as primary or secondary, verified reads and version bumps, and
//! sends heartbeats with chunk reports to the master.
//!
//! Chunk bytes live behind [`ChunkStore`]; its calls block, so they run on the blocking pool.

use crate::store::ChunkStore;
use bytes::{Bytes, BytesMut};
use quarry_proto::chunk::*;
use quarry_proto::master::{Heartbeat, ReportBadChunk};
use quarry_proto::{ChunkHandle, ChunkVersion, DataId, FsError, NodeId};
use quarry_transport::{Reply, Request, Router, RpcClient};
use std::collections::HashMap;
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
        }
    }
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
            }),
        }
    }

    pub fn node_id(&self) -> NodeId {
        self.inner.node
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
    }

    /// Start heartbeating; `addr` is how peers reach this server. Runs until the returned handle
    /// is aborted.
    pub fn start(&self, rpc: RpcClient, addr: String) -> tokio::task::JoinHandle<()> {
        *self.inner.rpc.lock().unwrap() = Some(rpc);
        *self.inner.addr.lock().unwrap() = addr;
        let inner = self.inner.clone();
        tokio::spawn(async move { inner.heartbeat_loop().await })
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

    /// Apply one resolved mutation to the local store (durable on return).
    async fn apply_local(
        &self,
        handle: ChunkHandle,
        version: ChunkVersion,
        mutation: &Mutation,
    ) -> Result<u64, FsError> {
        let store = self.store.clone();
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
        // Resolve appends to a plain write at the chunk's end (or padding when it does not fit).
        let (resolved, chunk_full) = match m.mutation {
            Mutation::Append {
                data_id,
                len,
                chunk_size,
            } => {
                let store = self.store.clone();
                let version = m.version;
                let end = blocking(move || store.len(handle, version)).await?;
                if end + len > chunk_size {
                    // Discard the record's data here; the client retries on the next chunk.
                    let _ = self.take_buffer(data_id, len);
                    (Mutation::Truncate { len: chunk_size }, true)
                } else {
                    (
                        Mutation::Write {
                            offset: end,
                            data_id,
                            len,
                        },
                        false,
                    )
                }
            }
            other => (other, false),
        };
        let offset = match resolved {
            Mutation::Write { offset, .. } => offset,
            Mutation::Truncate { len } => len,
            Mutation::Append { .. } => unreachable!("resolved above"),
        };
        // The secondaries apply while this replica does (each fsyncs before answering); the
        // chunk lock stays held until all are done, so every replica sees the same order.
        let rpc = self.rpc()?;
        let apply = ApplyMutation {
            handle,
            version: m.version,
            serial,
            mutation: resolved.clone(),
        };
        let mut set = tokio::task::JoinSet::new();
        for s in secondaries {
            let rpc = rpc.clone();
            let apply = apply.clone();
            set.spawn(async move {
                rpc.call(&s.addr, &apply)
                    .await
                    .map_err(|e| (s.addr.clone(), e))
            });
        }
        let local = self.apply_local(handle, m.version, &resolved).await;
        let mut failure = None;
        while let Some(res) = set.join_next().await {
            match res {
                Ok(Ok(())) => {}
                Ok(Err((addr, e))) => {
                    tracing::warn!(%handle, secondary = %addr, "mutation failed on secondary: {e}");
                    failure.get_or_insert(match e {
                        FsError::NoSpace => FsError::NoSpace,
                        e if e.is_retryable() => {
                            FsError::Unavailable(format!("secondary {addr}: {e}"))
                        }
                        e => e,
                    });
                }
                Err(e) => {
                    failure.get_or_insert(FsError::Io(format!("secondary task failed: {e}")));
                }
            }
        }
        let chunk_len = local?;
        if let Some(e) = failure {
            return Err(e);
        }
        if chunk_full {
            return Err(FsError::ChunkFull);
        }
        Ok(CommitReply { offset, chunk_len })
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
        let masters = self.config.masters.clone();
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
            let masters = &self.config.masters;
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
            match rpc.call(master, &hb).await {
                Ok(reply) => {
                    if send_full {
                        last_full = Some(Instant::now());
                    }
                    want_report = reply.want_report;
                    if !reply.delete.is_empty() {
                        self.delete_chunks(reply.delete).await;
                    }
                }
                Err(e) => {
                    tracing::debug!(%master, "heartbeat failed: {e}");
                    master_idx += 1;
                    want_report = true;
                }
            }
            tokio::time::sleep(interval).await;
        }
    }

    async fn delete_chunks(&self, handles: Vec<(ChunkHandle, ChunkVersion)>) {
        for (handle, at_most) in handles {
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
        }
    }
}
