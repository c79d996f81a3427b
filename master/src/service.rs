//! The master's runtime: serves the master RPCs, runs mutations through the operation log with
//! group commit, grants leases (bumping chunk versions first), tracks chunkservers, and repairs
//! chunks in the background (re-replication, deletes of extra and corrupt replicas).
//!
//! The replicated state lives in [`Engine`]; everything here is IO around it. A mutation is
//! logged (fsynced) before it is applied, so nothing a client saw acknowledged is lost on a crash
//! and readers never see a change that is not yet durable.
//!
//! Two ways to log: a single master writes its own operation log ([`crate::oplog`], no
//! `MasterConfig::raft`); a master of a Raft group ([`crate::raft`]) submits each command
//! through [`RaftNode::write`] (committed on a majority, then applied by the state machine that
//! owns the shared engine). In a Raft group only the leader serves: followers answer
//! `NotLeader { hint }`, reads confirm leadership first (`read_linearizable`), and the volatile
//! state (registry, repair) is rebuilt from heartbeats each time this master becomes leader,
//! with no lease granted on an existing chunk until any lease the old leader gave has expired.

use crate::engine::{Command, Engine, Output, MAX_GOAL};
use crate::oplog::OpLog;
use crate::raft::{RaftConfig, RaftNode, RaftRole};
use crate::registry::{Lease, MarkKind, Registry};
use crate::repair::{CloneOrder, Finished, Repair, RepairLimits};
use quarry_proto::chunk::{BumpVersion, CloneChunk};
use quarry_proto::limits::{
    MAX_ATTRS_PER_CALL, MAX_CHUNKS_PER_CALL, MAX_FSCK_PROBLEMS, MAX_PAGE_ENTRIES,
};
use quarry_proto::master::*;
use quarry_proto::{
    Attr, ChunkHandle, ChunkLocation, ChunkVersion, ClientId, FileKind, FsError, InodeId, OpId,
    ServerRef, Timestamp,
};
use quarry_transport::{metrics, Reply, Request, Router, RpcClient};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

#[derive(Clone, Debug)]
pub struct MasterConfig {
    pub data_dir: PathBuf,
    pub chunk_size: u64,
    pub replication: u32,
    pub lease_duration_ms: u64,
    /// A chunkserver silent this long is dead.
    pub heartbeat_timeout_ms: u64,
    /// Write a checkpoint after this many log records.
    pub checkpoint_every_records: u64,
    /// Timeout of the master's own calls to chunkservers.
    pub rpc_timeout_ms: u64,
    /// How long a deleted regular file stays in the trash before its chunks are reclaimed
    /// (0: no trash, a file is dropped with its chunks when its last name and hold go).
    pub trash_retention_ms: u64,
    /// A client that holds files open and has not been heard from (a `KeepAlive` or a hold
    /// request) for this long has gone away: its holds are dropped, and files it held after
    /// their last name went are reclaimed (or go to the trash). 0: holds never expire.
    pub client_session_timeout_ms: u64,
    /// How often the repair loop looks for under- and over-replicated chunks.
    pub repair_interval_ms: u64,
    /// Clones in flight at once, cluster-wide.
    pub max_concurrent_clones: u32,
    /// Clones in flight at once from one source server, and into one target server.
    pub clones_per_server: u32,
    /// Pace of each clone, in bytes per second (0: unlimited).
    pub clone_bandwidth_bytes_per_sec: u64,
    /// Rebalancing: replicas move while a server holds more than its capacity-proportional
    /// share of them by more than this many chunks (and another fewer by as much); 0: off.
    pub balance_slack_chunks: u64,
    /// Replicate the state with Raft among several masters (None: a single master with its own
    /// operation log).
    pub raft: Option<RaftSettings>,
}

/// How a master takes part in its Raft group.
#[derive(Clone, Debug)]
pub struct RaftSettings {
    /// This master's id (unique in the group, never reused).
    pub id: u64,
    /// Every voting master of a fresh group, this one included: id → the address clients,
    /// chunkservers and the other masters reach it at (also the `NotLeader` hint).
    pub peers: BTreeMap<u64, String>,
    /// Make `peers` the voters if this master's Raft state is empty (first boot; do it on one
    /// master only; a master that joins an existing group with `add` must not).
    pub initialize: bool,
    /// Timing and compaction (its `chunk_size` and `root_goal` are taken from this config).
    pub timing: RaftConfig,
}

impl MasterConfig {
    pub fn new(data_dir: PathBuf) -> MasterConfig {
        MasterConfig {
            data_dir,
            chunk_size: quarry_proto::DEFAULT_CHUNK_SIZE,
            replication: 3,
            lease_duration_ms: 60_000,
            heartbeat_timeout_ms: 10_000,
            checkpoint_every_records: 100_000,
            rpc_timeout_ms: 10_000,
            trash_retention_ms: 0,
            client_session_timeout_ms: 600_000,
            repair_interval_ms: 1_000,
            max_concurrent_clones: 8,
            clones_per_server: 2,
            clone_bandwidth_bytes_per_sec: 64 << 20,
            balance_slack_chunks: 2,
            raft: None,
        }
    }

    /// How long the master waits for a clone of one chunk: the copy at the configured pace (or
    /// at an assumed floor of 8 MiB/s when unpaced), twice over, plus the RPC timeout.
    pub fn clone_timeout(&self, chunk_size: u64) -> Duration {
        let rate = match self.clone_bandwidth_bytes_per_sec {
            0 => 8 << 20,
            r => r,
        };
        Duration::from_millis(self.rpc_timeout_ms)
            + Duration::from_secs_f64(2.0 * chunk_size as f64 / rate as f64)
    }
}

/// Chunk health counts from one pass over the chunk table.
#[derive(Default)]
struct Health {
    under: u64,
    missing: u64,
    over: u64,
    queue: u64,
    corrupt_chunks: u64,
}

/// Most commands waiting for one group commit.
const MAX_BATCH: usize = 1024;
/// Bound of the queue of commands waiting to be logged.
const QUEUE_DEPTH: usize = 4096;

type Pending = (LogRequest, oneshot::Sender<Result<Output, FsError>>);

/// What the log writer is asked to do.
enum LogRequest {
    Apply(Command),
    Checkpoint,
}

#[derive(Clone)]
pub struct Master {
    inner: Arc<Inner>,
}

struct Inner {
    config: MasterConfig,
    /// Shared with the Raft state machine (the only writer) in a Raft group.
    engine: Arc<RwLock<Engine>>,
    registry: Mutex<Registry>,
    /// The operation log writer (single master), or the Raft node (a group).
    log_tx: Option<mpsc::Sender<Pending>>,
    raft: Option<Arc<RaftNode>>,
    /// Raft: the term in which this master became leader and reset its volatile state; 0 while
    /// it is not the leader. Only a leader whose reset is done serves.
    leader_term: AtomicU64,
    /// When the registry was last started over (at open, or on becoming leader).
    volatile_since: Mutex<Instant>,
    /// When each client that holds files was last heard from (a `KeepAlive` or a hold request)
    /// since `volatile_since`; a client not listed counts from then. Volatile: a new leader
    /// gives every client a full timeout.
    sessions: Mutex<HashMap<ClientId, Instant>>,
    log_index: Mutex<u64>,
    /// Serializes chunk allocation and lease grants (each involves calls to chunkservers).
    grant_lock: tokio::sync::Mutex<()>,
    rpc: Mutex<Option<RpcClient>>,
    addr: Mutex<String>,
    started: Instant,
    /// Re-replication state. Lock order: engine, then registry, then repair.
    repair: Mutex<Repair>,
    /// Wakes the repair loop before its interval ends (a clone succeeded: its slot is free).
    repair_wake: Arc<tokio::sync::Notify>,
}

/// Marks a lease grant in progress for the repair loop (see [`Repair::grant_started`]).
struct GrantGuard<'a> {
    inner: &'a Inner,
    handle: ChunkHandle,
}

impl Drop for GrantGuard<'_> {
    fn drop(&mut self) {
        self.inner.repair.lock().unwrap().grant_ended(self.handle);
    }
}

impl Master {
    /// Open (or create) the master's state in `config.data_dir` and start its log writer.
    pub fn open(config: MasterConfig) -> anyhow::Result<Master> {
        std::fs::create_dir_all(&config.data_dir)?;
        let log_dir = config.data_dir.join("oplog");
        let root_goal = config.replication.clamp(1, MAX_GOAL);
        let created = Timestamp::now();
        let (mut oplog, mut engine, mut index) = OpLog::open_with(&log_dir, || {
            Engine::new(config.chunk_size, created).with_root_goal(root_goal)
        })?;
        if engine.trash_retention_ms() != config.trash_retention_ms {
            // The retention decides what deletes do, so it is state: log it before serving.
            let cmd = Command::SetTrashRetention {
                ms: config.trash_retention_ms,
            };
            index = oplog.append(std::slice::from_ref(&cmd))?;
            engine
                .apply(&cmd)
                .map_err(|e| anyhow::anyhow!("setting the trash retention: {e}"))?;
        }
        let (log_tx, log_rx) = mpsc::channel(QUEUE_DEPTH);
        let inner = Self::build(
            config,
            Arc::new(RwLock::new(engine)),
            Some(log_tx),
            None,
            index,
        );
        tokio::spawn(log_writer(Arc::downgrade(&inner), oplog, log_rx));
        Ok(Self::start_loops(inner))
    }

    /// A master of a Raft group: the engine is the state machine's; every mutation goes
    /// through `raft`. The caller serves [`Master::routes`] and the Raft inbox on one endpoint.
    pub fn open_raft(config: MasterConfig, raft: RaftNode) -> Master {
        let engine = raft.engine();
        let index = raft.metrics().applied_index;
        let raft = Arc::new(raft);
        let mut watch = raft.raft().metrics();
        let inner = Self::build(config, engine, None, Some(raft), index);
        let weak = Arc::downgrade(&inner);
        tokio::spawn(async move {
            loop {
                let (leader, term) = {
                    let m = watch.borrow_and_update();
                    (
                        m.state == openraft::ServerState::Leader && m.running_state.is_ok(),
                        m.current_term,
                    )
                };
                let Some(inner) = weak.upgrade() else { return };
                if leader && inner.leader_term.load(Ordering::SeqCst) != term {
                    inner.become_leader(term);
                } else if !leader && inner.leader_term.swap(0, Ordering::SeqCst) != 0 {
                    tracing::warn!("this master is no longer the leader");
                }
                drop(inner);
                if watch.changed().await.is_err() {
                    return;
                }
            }
        });
        Self::start_loops(inner)
    }

    fn build(
        config: MasterConfig,
        engine: Arc<RwLock<Engine>>,
        log_tx: Option<mpsc::Sender<Pending>>,
        raft: Option<Arc<RaftNode>>,
        index: u64,
    ) -> Arc<Inner> {
        let now = Instant::now();
        let (registry, repair) = Inner::fresh_volatile(&config, &engine.read().unwrap(), now);
        Arc::new(Inner {
            repair: Mutex::new(repair),
            repair_wake: Arc::new(tokio::sync::Notify::new()),
            config,
            engine,
            registry: Mutex::new(registry),
            log_tx,
            raft,
            leader_term: AtomicU64::new(0),
            volatile_since: Mutex::new(now),
            sessions: Mutex::new(HashMap::new()),
            log_index: Mutex::new(index),
            grant_lock: tokio::sync::Mutex::new(()),
            rpc: Mutex::new(None),
            addr: Mutex::new(String::new()),
            started: now,
        })
    }

    fn start_loops(inner: Arc<Inner>) -> Master {
        tokio::spawn(purge_loop(Arc::downgrade(&inner)));
        tokio::spawn(session_loop(Arc::downgrade(&inner)));
        tokio::spawn(repair_loop(
            Arc::downgrade(&inner),
            inner.repair_wake.clone(),
        ));
        Master { inner }
    }

    /// The Raft node of this master (None for a single master).
    pub fn raft(&self) -> Option<&Arc<RaftNode>> {
        self.inner.raft.as_ref()
    }

    /// Whether this master serves: a single master always, a Raft master while it is the
    /// leader (and has reset its volatile state for its term).
    pub fn is_leader(&self) -> bool {
        self.inner.leader_ready().is_ok()
    }

    /// Ok on a master that serves requests now; `NotLeader` (with the leader's address when
    /// known) on a Raft follower, `Unavailable` on a leader still starting its term.
    pub fn check_leader(&self) -> Result<(), FsError> {
        self.inner.leader_ready()
    }

    /// The client the master uses to call chunkservers (set once its endpoint exists).
    pub fn set_rpc(&self, rpc: RpcClient, addr: String) {
        *self.inner.rpc.lock().unwrap() = Some(rpc);
        *self.inner.addr.lock().unwrap() = addr;
    }

    pub fn chunk_size(&self) -> u64 {
        self.inner.engine.read().unwrap().chunk_size()
    }

    /// Register every master RPC on `router`.
    pub fn routes(&self, router: &mut Router) {
        macro_rules! route {
            ($rpc:ty, $method:ident) => {{
                let inner = self.inner.clone();
                router.route::<$rpc, _, _>(move |req: Request<$rpc>| {
                    let inner = inner.clone();
                    async move { Reply::from(inner.$method(req).await) }
                });
            }};
        }
        route!(ClusterInfo, cluster_info);
        route!(KeepAlive, keep_alive);
        route!(Lookup, lookup);
        route!(ResolvePath, resolve_path);
        route!(GetAttr, get_attr);
        route!(GetAttrs, get_attrs);
        route!(Mkdir, mkdir);
        route!(Create, create);
        route!(ReadDir, read_dir);
        route!(ReadDirPlus, read_dir_plus);
        route!(Rename, rename);
        route!(Unlink, unlink);
        route!(Rmdir, rmdir);
        route!(SetAttr, set_attr);
        route!(CommitSize, commit_size);
        route!(StatFs, stat_fs);
        route!(GetChunks, get_chunks);
        route!(PrepareWrite, prepare_write);
        route!(ReportBadChunk, report_bad_chunk);
        route!(ReportFailedReplica, report_failed_replica);
        route!(Heartbeat, heartbeat);
        route!(ClusterStatus, cluster_status);
        route!(Symlink, symlink);
        route!(ReadLink, read_link);
        route!(Mknod, mknod);
        route!(Link, link);
        route!(SetXattr, set_xattr);
        route!(GetXattr, get_xattr);
        route!(ListXattr, list_xattr);
        route!(RemoveXattr, remove_xattr);
        route!(HoldOpen, hold_open);
        route!(ListTrash, list_trash);
        route!(RestoreTrash, restore_trash);
        route!(PurgeTrash, purge_trash);
        route!(SetGoal, set_goal);
        route!(GetGoal, get_goal);
        route!(Fsck, fsck);
        route!(FileInfo, file_info);
        route!(MasterInfo, master_info);
        route!(ChangeMasters, change_masters);
    }

    /// Export this master's gauges (namespace counts, Raft state, chunk health, repair) in the
    /// process's metrics registry under `node`, refreshed at each scrape while the master runs.
    pub fn export_metrics(&self, node: &str) {
        let weak = Arc::downgrade(&self.inner);
        let node = node.to_string();
        metrics::global().add_collector(move |reg| match weak.upgrade() {
            Some(inner) => {
                inner.collect_metrics(reg, &node);
                true
            }
            None => false,
        });
    }

    /// The cluster's status as `ClusterStatus` answers it (on the leader; `NotLeader` on a
    /// follower).
    pub async fn cluster_status(&self) -> Result<ClusterStatusReply, FsError> {
        self.inner
            .cluster_status(Request {
                peer: quarry_transport::Identity::new(quarry_proto::Role::Master, "local"),
                msg: ClusterStatus {},
                body: quarry_transport::Body::empty(),
            })
            .await
    }

    /// The chunkservers as this master knows them (empty on a follower, which hears no
    /// heartbeats): cheap, no RPC.
    pub fn chunkservers_status(&self) -> Vec<ChunkserverStatus> {
        if self.inner.leader_ready().is_err() {
            return vec![];
        }
        self.inner.registry.lock().unwrap().status(Instant::now())
    }

    /// This master's own status (what `MasterInfo` answers).
    pub fn self_status(&self) -> MasterStatus {
        self.inner.self_status()
    }

    /// The clients holding `inode` open.
    pub fn holders(&self, inode: InodeId) -> Vec<ClientId> {
        self.inner.engine.read().unwrap().holders(inode)
    }

    /// Drop every open hold of a client that went away; orphans it held last are dropped with
    /// their chunks (or moved to the trash, if the master keeps one).
    pub async fn drop_client_holds(&self, client: ClientId) -> Result<(), FsError> {
        self.inner.drop_client_holds(client).await
    }

    /// Set or delete a service record (logged and applied like any mutation).
    pub async fn put_record(&self, key: String, value: Option<Vec<u8>>) -> Result<(), FsError> {
        self.inner
            .submit(Command::PutRecord { key, value })
            .await
            .map(|_| ())
    }

    /// The service records whose key starts with `prefix`.
    pub fn records(&self, prefix: &str) -> Vec<(String, Vec<u8>)> {
        self.inner.engine.read().unwrap().records(prefix)
    }

    /// Write a checkpoint and stop accepting mutations (clean shutdown). A Raft master stops
    /// its Raft (its log and snapshot are already durable).
    pub async fn shutdown(&self) {
        if let Some(tx) = &self.inner.log_tx {
            let (done_tx, rx) = oneshot::channel();
            let _ = tx.send((LogRequest::Checkpoint, done_tx)).await;
            let _ = tokio::time::timeout(Duration::from_secs(30), rx).await;
        }
        self.halt().await;
    }

    /// Stop this master's Raft without anything else (what a crash leaves of it in-process).
    pub async fn halt(&self) {
        if let Some(raft) = &self.inner.raft {
            if let Err(e) = raft.raft().shutdown().await {
                tracing::debug!("raft shutdown: {e}");
            }
        }
    }
}

async fn log_writer(inner: std::sync::Weak<Inner>, oplog: OpLog, mut rx: mpsc::Receiver<Pending>) {
    let oplog = Arc::new(Mutex::new(oplog));
    let mut failed: Option<String> = None;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let Some(inner) = inner.upgrade() else { break };
        let (checkpoints, batch): (Vec<Pending>, Vec<Pending>) = batch
            .into_iter()
            .partition(|(c, _)| matches!(c, LogRequest::Checkpoint));
        if let Some(reason) = &failed {
            for (_, tx) in batch {
                let _ = tx.send(Err(FsError::Io(format!(
                    "master log unavailable: {reason}"
                ))));
            }
            continue;
        }
        if !batch.is_empty() {
            let cmds: Vec<Command> = batch
                .iter()
                .filter_map(|(c, _)| match c {
                    LogRequest::Apply(cmd) => Some(cmd.clone()),
                    LogRequest::Checkpoint => None,
                })
                .collect();
            let log = oplog.clone();
            let appended =
                tokio::task::spawn_blocking(move || log.lock().unwrap().append(&cmds)).await;
            match appended {
                Ok(Ok(index)) => {
                    let mut engine = inner.engine.write().unwrap();
                    let mut results = Vec::with_capacity(batch.len());
                    for (req, tx) in batch {
                        if let LogRequest::Apply(cmd) = req {
                            results.push((engine.apply(&cmd), tx));
                        }
                    }
                    drop(engine);
                    *inner.log_index.lock().unwrap() = index;
                    for (result, tx) in results {
                        let _ = tx.send(result);
                    }
                }
                Ok(Err(e)) => {
                    // The log's state on disk is unknown: acknowledge nothing from now on.
                    tracing::error!("operation log append failed: {e:#}; refusing mutations");
                    let reason = format!("{e:#}");
                    for (_, tx) in batch {
                        let _ = tx.send(Err(FsError::Io(format!("log append failed: {reason}"))));
                    }
                    failed = Some(reason);
                    continue;
                }
                Err(e) => {
                    failed = Some(format!("log task: {e}"));
                    continue;
                }
            }
        }
        let want_checkpoint = !checkpoints.is_empty()
            || oplog.lock().unwrap().records_since_checkpoint()
                >= inner.config.checkpoint_every_records;
        if want_checkpoint {
            let log = oplog.clone();
            let engine = inner.engine.read().unwrap().clone();
            let index = *inner.log_index.lock().unwrap();
            let done =
                tokio::task::spawn_blocking(move || log.lock().unwrap().checkpoint(&engine, index))
                    .await;
            match done {
                Ok(Ok(())) => tracing::info!(index, "checkpoint written"),
                Ok(Err(e)) => tracing::error!("checkpoint failed: {e:#}"),
                Err(e) => tracing::error!("checkpoint task failed: {e}"),
            }
        }
        for (_, tx) in checkpoints {
            let _ = tx.send(Ok(Output::Unit));
        }
    }
}

/// Every `repair_interval_ms`, and as soon as a clone succeeds (its slot is free), look for
/// chunks to repair and start their clones (until the master is dropped).
async fn repair_loop(inner: std::sync::Weak<Inner>, wake: Arc<tokio::sync::Notify>) {
    loop {
        let interval = match inner.upgrade() {
            Some(i) => Duration::from_millis(i.config.repair_interval_ms.max(10)),
            None => return,
        };
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = wake.notified() => {}
        }
        let Some(inner) = inner.upgrade() else { return };
        inner.repair_tick();
    }
}

fn now_ts() -> Timestamp {
    Timestamp::now()
}

/// How often the purge loop looks for expired trash: an eighth of the retention, between
/// 100 ms and 10 s (10 s without a trash, to purge what an earlier retention left).
fn purge_tick(retention_ms: u64) -> Duration {
    match retention_ms {
        0 => Duration::from_secs(10),
        ms => Duration::from_millis((ms / 8).clamp(100, 10_000)),
    }
}

/// How often the session loop looks for clients gone silent: a tenth of the timeout, between
/// 50 ms and 10 s.
fn session_tick(timeout_ms: u64) -> Duration {
    Duration::from_millis((timeout_ms / 10).clamp(50, 10_000))
}

/// Until the master goes: on the leader, drop the holds of every client not heard from for
/// the session timeout (counting from when this master started serving, at the latest).
async fn session_loop(inner: std::sync::Weak<Inner>) {
    loop {
        let Some(i) = inner.upgrade() else { return };
        let timeout_ms = i.config.client_session_timeout_ms;
        if timeout_ms > 0 && i.leader_ready().is_ok() {
            for client in i.silent_clients(Duration::from_millis(timeout_ms), Instant::now()) {
                tracing::warn!(%client, timeout_ms, "dropping the open holds of a silent client");
                if let Err(e) = i.drop_client_holds(client).await {
                    tracing::warn!(%client, "dropping the holds of a silent client: {e}");
                }
            }
        }
        drop(i);
        tokio::time::sleep(session_tick(timeout_ms)).await;
    }
}

/// Purge the trash entries older than the retention, through the log, until the master goes.
async fn purge_loop(inner: std::sync::Weak<Inner>) {
    loop {
        let Some(i) = inner.upgrade() else { return };
        let tick = purge_tick(i.config.trash_retention_ms);
        if i.leader_ready().is_ok() {
            if let Err(e) = i.purge(PurgeWhich::Expired, OpId::default(), true).await {
                tracing::warn!("purging the trash: {e}");
            }
        }
        drop(i);
        tokio::time::sleep(tick).await;
    }
}

fn attr_of(out: Output) -> Result<Attr, FsError> {
    match out {
        Output::Attr(a) => Ok(a),
        other => Err(FsError::Io(format!("unexpected engine output {other:?}"))),
    }
}

impl Inner {
    /// `value` with the attributes of `dirs` (one, or a rename's two) as applied here now (see
    /// [`Changed`]); a directory named twice is reported once.
    fn changed<T>(&self, value: T, dirs: &[InodeId]) -> Changed<T> {
        let mut dirs = dirs.to_vec();
        dirs.dedup();
        let engine = self.engine.read().unwrap();
        let dirs = dirs
            .into_iter()
            .filter_map(|d| engine.getattr(d).ok())
            .collect();
        Changed { value, dirs }
    }

    async fn drop_client_holds(&self, client: ClientId) -> Result<(), FsError> {
        let held = self.engine.read().unwrap().held_by(client);
        let handles: Vec<ChunkHandle> = held.into_iter().flat_map(|i| self.handles_of(i)).collect();
        self.submit(Command::DropClientHolds { client }).await?;
        self.forget_dropped(handles);
        Ok(())
    }

    /// `client` was heard from now.
    fn heard_from(&self, client: ClientId) {
        self.sessions.lock().unwrap().insert(client, Instant::now());
    }

    /// The clients holding files that were last heard from `timeout` or more before `now`
    /// (counting from `volatile_since` for those not heard from since). Forgets the sessions
    /// of clients that hold nothing and are as silent.
    fn silent_clients(&self, timeout: Duration, now: Instant) -> Vec<ClientId> {
        let holders = self.engine.read().unwrap().clients_with_holds();
        let since = *self.volatile_since.lock().unwrap();
        let mut sessions = self.sessions.lock().unwrap();
        let silent = |last: Instant| now.saturating_duration_since(last) >= timeout;
        sessions.retain(|c, last| !silent(*last) || holders.contains(c));
        holders
            .into_iter()
            .filter(|c| silent(sessions.get(c).copied().unwrap_or(since).max(since)))
            .collect()
    }

    async fn submit(&self, cmd: Command) -> Result<Output, FsError> {
        let log_tx = match (&self.raft, &self.log_tx) {
            (Some(raft), _) => return raft.write(cmd).await,
            (None, Some(tx)) => tx,
            (None, None) => return Err(FsError::Unavailable("master has no log".into())),
        };
        let (tx, rx) = oneshot::channel();
        log_tx
            .send((LogRequest::Apply(cmd), tx))
            .await
            .map_err(|_| FsError::Unavailable("master is shutting down".into()))?;
        rx.await
            .map_err(|_| FsError::Unavailable("master log writer stopped".into()))?
    }

    /// The registry and repair state of a master that (re)starts serving: no chunk locations
    /// (heartbeats bring them), and no lease on an existing chunk until any lease granted
    /// before (by this master before a restart, or by an old leader) has expired.
    fn fresh_volatile(config: &MasterConfig, engine: &Engine, now: Instant) -> (Registry, Repair) {
        let newest_handle = engine
            .all_chunks()
            .map(|(h, _)| h)
            .max()
            .unwrap_or_default();
        let mut registry = Registry::new(
            Duration::from_millis(config.heartbeat_timeout_ms),
            now + Duration::from_millis(config.lease_duration_ms),
            newest_handle,
        );
        registry.set_reserve(config.chunk_size);
        let repair = Repair::new(RepairLimits {
            max_concurrent_clones: config.max_concurrent_clones.max(1) as usize,
            per_server: config.clones_per_server.max(1) as usize,
            give_up_after: config.clone_timeout(engine.chunk_size()) * 2,
            balance_slack_chunks: config.balance_slack_chunks,
        });
        (registry, repair)
    }

    /// Raft: this master just became leader in `term`. Its registry may be from an older term
    /// (or empty): start over, waiting out the old leader's leases, and log the configured
    /// trash retention if the state has another.
    fn become_leader(self: &Arc<Self>, term: u64) {
        {
            let engine = self.engine.read().unwrap();
            let (registry, repair) = Self::fresh_volatile(&self.config, &engine, Instant::now());
            *self.registry.lock().unwrap() = registry;
            *self.repair.lock().unwrap() = repair;
            *self.volatile_since.lock().unwrap() = Instant::now();
            self.sessions.lock().unwrap().clear();
        }
        self.leader_term.store(term, Ordering::SeqCst);
        tracing::info!(term, "this master is the leader");
        let inner = self.clone();
        tokio::spawn(async move {
            let want = inner.config.trash_retention_ms;
            // The first commands of a term may wait for the blank entry to commit.
            for _ in 0..50 {
                if inner.engine.read().unwrap().trash_retention_ms() == want
                    || inner.leader_term.load(Ordering::SeqCst) != term
                {
                    return;
                }
                match inner.submit(Command::SetTrashRetention { ms: want }).await {
                    Ok(_) => return,
                    Err(e) => tracing::debug!("logging the trash retention: {e}"),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }

    /// Ok on a master that serves; `NotLeader` (with the leader's address when known) on a
    /// Raft follower, `Unavailable` on a leader still resetting for its term.
    fn leader_ready(&self) -> Result<(), FsError> {
        let Some(raft) = &self.raft else {
            return Ok(());
        };
        let m = raft.metrics();
        if m.role != RaftRole::Leader {
            return Err(FsError::NotLeader {
                hint: m.leader_addr,
            });
        }
        if self.leader_term.load(Ordering::SeqCst) != m.term {
            return Err(FsError::Unavailable("the new leader is starting".into()));
        }
        Ok(())
    }

    /// Before a read that must be linearizable: on a Raft master, confirm with a quorum that
    /// this master is still the leader and that it has applied everything committed before
    /// now. A leader cut off in a minority answers nothing.
    async fn read_barrier(&self) -> Result<(), FsError> {
        self.leader_ready()?;
        match &self.raft {
            Some(raft) => raft.read_linearizable(|_| ()).await,
            None => Ok(()),
        }
    }

    /// What this master reports about itself (`MasterInfo`, and its own line of the status).
    fn self_status(&self) -> MasterStatus {
        let counts = self.engine.read().unwrap().counts();
        let index = *self.log_index.lock().unwrap();
        let mut st = MasterStatus {
            addr: self.addr.lock().unwrap().clone(),
            role: "leader".into(),
            log_index: index,
            id: 0,
            term: 0,
            commit_index: index,
            files: counts.files,
            directories: counts.directories,
            chunks: counts.chunks,
            trash_files: counts.trash_files,
            trash_bytes: counts.trash_bytes,
        };
        if let Some(raft) = &self.raft {
            let m = raft.metrics();
            st.role = match m.role {
                RaftRole::Leader => "leader",
                RaftRole::Candidate => "candidate",
                RaftRole::Follower => "follower",
                RaftRole::Learner => "learner",
                RaftRole::Shutdown => "shutdown",
            }
            .into();
            st.id = m.id;
            st.term = m.term;
            st.commit_index = m.commit_index;
            st.log_index = m.applied_index;
            if let Some(addr) = m.voters.get(&m.id) {
                st.addr = addr.clone();
            }
        }
        st
    }

    async fn master_info(&self, _req: Request<MasterInfo>) -> Result<MasterStatus, FsError> {
        Ok(self.self_status())
    }

    async fn change_masters(&self, req: Request<ChangeMasters>) -> Result<(), FsError> {
        let Some(raft) = &self.raft else {
            return Err(FsError::InvalidArgument(
                "this master runs without Raft (a single master)".into(),
            ));
        };
        if let Some((id, addr)) = req.msg.add {
            raft.add_master(id, addr).await?;
        }
        if let Some(id) = req.msg.remove {
            raft.remove_master(id).await?;
        }
        Ok(())
    }

    /// Every master's own status: this one's, and the other voters' asked over RPC (shown
    /// "unreachable" when they do not answer within a second).
    async fn masters_status(&self) -> Vec<MasterStatus> {
        let me = self.self_status();
        let Some(raft) = &self.raft else {
            return vec![me];
        };
        let Ok(rpc) = self.rpc() else {
            return vec![me];
        };
        let voters = raft.metrics().voters;
        let rpc = rpc.with_timeout(Duration::from_secs(1));
        let calls = voters.into_iter().map(|(id, addr)| {
            let rpc = rpc.clone();
            let me = me.clone();
            async move {
                if id == me.id {
                    return me;
                }
                match rpc.call(&addr, &MasterInfo {}).await {
                    Ok(st) => st,
                    Err(_) => MasterStatus {
                        addr,
                        role: "unreachable".into(),
                        log_index: 0,
                        id,
                        term: 0,
                        commit_index: 0,
                        files: 0,
                        directories: 0,
                        chunks: 0,
                        trash_files: 0,
                        trash_bytes: 0,
                    },
                }
            }
        });
        let mut out = futures_join_all(calls).await;
        out.sort_by_key(|m| m.id);
        out
    }

    fn rpc(&self) -> Result<RpcClient, FsError> {
        self.rpc
            .lock()
            .unwrap()
            .clone()
            .ok_or_else(|| FsError::Unavailable("master endpoint not ready".into()))
    }

    /// The chunk handles of `inode` (empty if it is not a regular file).
    fn handles_of(&self, inode: InodeId) -> Vec<ChunkHandle> {
        self.engine
            .read()
            .unwrap()
            .chunks(inode, 0, u32::MAX)
            .map(|c| c.into_iter().map(|(_, h, _)| h).collect())
            .unwrap_or_default()
    }

    /// The chunks of the file at `parent/name`, if that is a file.
    fn handles_at(&self, parent: InodeId, name: &str) -> Vec<ChunkHandle> {
        let inode = self
            .engine
            .read()
            .unwrap()
            .lookup(parent, name)
            .map(|a| a.inode);
        inode.map(|i| self.handles_of(i)).unwrap_or_default()
    }

    /// The replication goal of a chunk: how many live current replicas the master keeps of it.
    /// Every user of the goal asks here (placement of new chunks, repair, status, fsck,
    /// fileinfo): its file's goal (`setrep`), else the cluster's `replication`.
    fn goal_of(&self, engine: &Engine, handle: ChunkHandle) -> u32 {
        engine
            .goal_of_chunk(handle)
            .unwrap_or(self.config.replication)
    }

    /// One pass of the repair loop: decide (sans-IO, in [`Repair::scan`]) under the locks, then
    /// start the clones outside them.
    fn repair_tick(self: &Arc<Self>) {
        if self.leader_ready().is_err() {
            return;
        }
        let Ok(rpc) = self.rpc() else { return };
        let now = Instant::now();
        let orders: Vec<(CloneOrder, u64)> = {
            let engine = self.engine.read().unwrap();
            let mut registry = self.registry.lock().unwrap();
            let mut repair = self.repair.lock().unwrap();
            let chunks = engine
                .all_chunks()
                .map(|(h, v)| (h, v, self.goal_of(&engine, h)));
            let scan = repair.scan(&mut registry, chunks, now);
            if !scan.clones.is_empty() || !scan.deletes.is_empty() {
                tracing::info!(
                    clones = scan.clones.len(),
                    moves = scan.moves,
                    deletes = scan.deletes.len(),
                    queued = scan.queued,
                    in_flight = repair.in_flight(),
                    "repair"
                );
            }
            scan.clones
                .into_iter()
                .map(|o| {
                    let len = self.expected_len(&engine, o.handle);
                    (o, len)
                })
                .collect()
        };
        let timeout = self
            .config
            .clone_timeout(self.engine.read().unwrap().chunk_size());
        for (order, len) in orders {
            let inner = self.clone();
            let rpc = rpc.clone().with_timeout(timeout);
            tokio::spawn(async move {
                let result = rpc
                    .call(
                        &order.target.addr,
                        &CloneChunk {
                            handle: order.handle,
                            version: order.version,
                            source: order.source.clone(),
                            len,
                            bytes_per_sec: inner.config.clone_bandwidth_bytes_per_sec,
                        },
                    )
                    .await
                    .map(|r| r.len);
                let engine = inner.engine.read().unwrap();
                let current = engine.chunk(order.handle).map(|c| c.version);
                let mut registry = inner.registry.lock().unwrap();
                let mut repair = inner.repair.lock().unwrap();
                let done = repair.finish(&mut registry, &order, current, result, Instant::now());
                if done == Finished::Added {
                    tracing::info!(handle = %order.handle, target = %order.target.addr,
                        source = %order.source.addr, "re-replicated chunk");
                    // Its slot is free: start the next clone now. (A failure waits for the next
                    // interval, so a target that keeps refusing is not retried in a loop.)
                    inner.repair_wake.notify_one();
                }
            });
        }
    }

    /// The bytes of its file a chunk holds, from the file's size.
    fn expected_len(&self, engine: &Engine, handle: ChunkHandle) -> u64 {
        let cs = engine.chunk_size();
        engine
            .chunk(handle)
            .and_then(|c| {
                let size = engine.getattr(c.inode).ok()?.size;
                Some(size.saturating_sub(c.index.saturating_mul(cs)).min(cs))
            })
            .unwrap_or(cs)
    }

    /// Chunks a namespace change dropped: end their leases and have their holders delete them
    /// (through the next heartbeat replies), so no write can land in them any more.
    fn forget_dropped(&self, handles: Vec<ChunkHandle>) {
        if handles.is_empty() {
            return;
        }
        let engine = self.engine.read().unwrap();
        let mut registry = self.registry.lock().unwrap();
        for h in handles {
            if engine.chunk(h).is_none() {
                registry.forget_chunk(h);
            }
        }
    }

    /// Drop trashed files (see [`PurgeWhich`]) and have their chunks deleted. With
    /// `only_if_due`, log nothing when no entry is old enough (the purge loop).
    async fn purge(&self, which: PurgeWhich, op: OpId, only_if_due: bool) -> Result<u64, FsError> {
        let before = match which {
            PurgeWhich::All => None,
            PurgeWhich::Expired => {
                let ns = i128::from(self.config.trash_retention_ms) * 1_000_000;
                Some(Timestamp::from_unix_nanos(now_ts().as_unix_nanos() - ns))
            }
            PurgeWhich::DeletedBefore(t) => Some(t),
        };
        let handles = {
            let engine = self.engine.read().unwrap();
            let due = engine
                .oldest_trash()
                .is_some_and(|t| before.is_none_or(|b| t < b));
            if only_if_due && !due {
                return Ok(0);
            }
            engine.trash_chunks(before)
        };
        let out = self.submit(Command::PurgeTrash { op, before }).await?;
        self.forget_dropped(handles);
        match out {
            Output::Count(n) => {
                if n > 0 {
                    tracing::info!(files = n, "purged from the trash");
                }
                Ok(n)
            }
            other => Err(FsError::Io(format!("unexpected engine output {other:?}"))),
        }
    }

    async fn list_trash(&self, req: Request<ListTrash>) -> Result<ListTrashReply, FsError> {
        self.read_barrier().await?;
        let limit = req.msg.limit.clamp(1, MAX_PAGE_ENTRIES);
        let engine = self.engine.read().unwrap();
        let (entries, more) = engine.trash(req.msg.after, limit);
        Ok(ListTrashReply {
            entries,
            more,
            retention_ms: engine.trash_retention_ms(),
        })
    }

    async fn restore_trash(&self, req: Request<RestoreTrash>) -> Result<Attr, FsError> {
        let m = req.msg;
        attr_of(
            self.submit(Command::RestoreTrash {
                op: m.op,
                inode: m.inode,
                path: m.path,
                time: now_ts(),
            })
            .await?,
        )
    }

    async fn purge_trash(&self, req: Request<PurgeTrash>) -> Result<u64, FsError> {
        self.purge(req.msg.which, req.msg.op, false).await
    }

    async fn set_goal(&self, req: Request<SetGoal>) -> Result<u64, FsError> {
        let m = req.msg;
        match self
            .submit(Command::SetGoal {
                op: m.op,
                inode: m.inode,
                goal: m.goal,
                recursive: m.recursive,
            })
            .await?
        {
            Output::Count(n) => Ok(n),
            other => Err(FsError::Io(format!("unexpected engine output {other:?}"))),
        }
    }

    async fn get_goal(&self, req: Request<GetGoal>) -> Result<u32, FsError> {
        self.read_barrier().await?;
        self.engine.read().unwrap().goal(req.msg.inode)
    }

    async fn cluster_info(&self, _req: Request<ClusterInfo>) -> Result<ClusterInfoReply, FsError> {
        let engine = self.engine.read().unwrap();
        Ok(ClusterInfoReply {
            chunk_size: engine.chunk_size(),
            trash_retention_ms: engine.trash_retention_ms(),
            replication: self.config.replication,
            lease_duration_ms: self.config.lease_duration_ms,
        })
    }

    async fn lookup(&self, req: Request<Lookup>) -> Result<Attr, FsError> {
        self.read_barrier().await?;
        self.engine
            .read()
            .unwrap()
            .lookup(req.msg.parent, &req.msg.name)
    }

    async fn resolve_path(&self, req: Request<ResolvePath>) -> Result<Attr, FsError> {
        self.read_barrier().await?;
        self.engine.read().unwrap().resolve(&req.msg.path)
    }

    async fn get_attr(&self, req: Request<GetAttr>) -> Result<Attr, FsError> {
        self.read_barrier().await?;
        self.engine.read().unwrap().getattr(req.msg.inode)
    }

    async fn get_attrs(&self, req: Request<GetAttrs>) -> Result<Vec<Option<Attr>>, FsError> {
        self.read_barrier().await?;
        let engine = self.engine.read().unwrap();
        Ok(req
            .msg
            .inodes
            .iter()
            .map(|i| engine.getattr(*i).ok())
            .collect())
    }

    async fn mkdir(&self, req: Request<Mkdir>) -> Result<Changed<Attr>, FsError> {
        let m = req.msg;
        let parent = m.parent;
        let attr = attr_of(
            self.submit(Command::Mkdir {
                op: m.op,
                parent: m.parent,
                name: m.name,
                mode: m.mode,
                uid: m.uid,
                gid: m.gid,
                time: now_ts(),
            })
            .await?,
        )?;
        Ok(self.changed(attr, &[parent]))
    }

    async fn create(&self, req: Request<Create>) -> Result<Changed<Attr>, FsError> {
        let m = req.msg;
        let parent = m.parent;
        let cmd = if m.hold {
            self.heard_from(m.op.client);
            Command::CreateHeld {
                op: m.op,
                parent: m.parent,
                name: m.name,
                mode: m.mode,
                uid: m.uid,
                gid: m.gid,
                exclusive: m.exclusive,
                time: now_ts(),
            }
        } else {
            Command::Create {
                op: m.op,
                parent: m.parent,
                name: m.name,
                mode: m.mode,
                uid: m.uid,
                gid: m.gid,
                exclusive: m.exclusive,
                time: now_ts(),
            }
        };
        let attr = attr_of(self.submit(cmd).await?)?;
        Ok(self.changed(attr, &[parent]))
    }

    async fn read_dir(&self, req: Request<ReadDir>) -> Result<ReadDirReply, FsError> {
        self.read_barrier().await?;
        let limit = req.msg.limit.clamp(1, MAX_PAGE_ENTRIES);
        let (entries, more) =
            self.engine
                .read()
                .unwrap()
                .readdir(req.msg.inode, req.msg.after.as_deref(), limit)?;
        Ok(ReadDirReply { entries, more })
    }

    async fn read_dir_plus(&self, req: Request<ReadDirPlus>) -> Result<ReadDirPlusReply, FsError> {
        self.read_barrier().await?;
        let m = req.msg;
        let limit = m.limit.clamp(1, MAX_ATTRS_PER_CALL as u32);
        let engine = self.engine.read().unwrap();
        let dir = engine.getattr(m.inode)?;
        if dir.kind != FileKind::Directory {
            return Err(FsError::NotADirectory);
        }
        let (entries, more) = engine.readdir(m.inode, m.after.as_deref(), limit)?;
        let entries = entries
            .into_iter()
            .filter_map(|e| {
                // Under the same lock as the listing: every entry's inode exists.
                let attr = engine.getattr(e.inode).ok()?;
                Some((e, attr))
            })
            .collect();
        Ok(ReadDirPlusReply { dir, entries, more })
    }

    async fn rename(&self, req: Request<Rename>) -> Result<Changed<()>, FsError> {
        let m = req.msg;
        let dirs = [m.src_parent, m.dst_parent];
        let replaced = self.handles_at(m.dst_parent, &m.dst_name);
        self.submit(Command::Rename {
            op: m.op,
            src_parent: m.src_parent,
            src_name: m.src_name,
            dst_parent: m.dst_parent,
            dst_name: m.dst_name,
            flags: m.flags,
            time: now_ts(),
        })
        .await?;
        self.forget_dropped(replaced);
        Ok(self.changed((), &dirs))
    }

    async fn unlink(&self, req: Request<Unlink>) -> Result<Changed<()>, FsError> {
        let m = req.msg;
        let parent = m.parent;
        let dropped = self.handles_at(m.parent, &m.name);
        self.submit(Command::Unlink {
            op: m.op,
            parent: m.parent,
            name: m.name,
            time: now_ts(),
        })
        .await?;
        self.forget_dropped(dropped);
        Ok(self.changed((), &[parent]))
    }

    async fn rmdir(&self, req: Request<Rmdir>) -> Result<Changed<()>, FsError> {
        let m = req.msg;
        let parent = m.parent;
        self.submit(Command::Rmdir {
            op: m.op,
            parent: m.parent,
            name: m.name,
            time: now_ts(),
        })
        .await?;
        Ok(self.changed((), &[parent]))
    }

    async fn set_attr(&self, req: Request<SetAttr>) -> Result<Attr, FsError> {
        let m = req.msg;
        let before = if m.size.is_some() {
            self.handles_of(m.inode)
        } else {
            Vec::new()
        };
        let attr = attr_of(
            self.submit(Command::SetAttr {
                op: m.op,
                inode: m.inode,
                mode: m.mode,
                uid: m.uid,
                gid: m.gid,
                size: m.size,
                atime: m.atime,
                mtime: m.mtime,
                clear_suid: m.clear_suid,
                time: now_ts(),
            })
            .await?,
        )?;
        self.forget_dropped(before);
        Ok(attr)
    }

    async fn commit_size(&self, req: Request<CommitSize>) -> Result<Attr, FsError> {
        let m = req.msg;
        attr_of(
            self.submit(Command::CommitSize {
                op: m.op,
                inode: m.inode,
                end: m.end,
                mtime: m.mtime,
                time: now_ts(),
            })
            .await?,
        )
    }

    async fn symlink(&self, req: Request<Symlink>) -> Result<Changed<Attr>, FsError> {
        let m = req.msg;
        let parent = m.parent;
        let attr = attr_of(
            self.submit(Command::Symlink {
                op: m.op,
                parent: m.parent,
                name: m.name,
                target: m.target,
                uid: m.uid,
                gid: m.gid,
                time: now_ts(),
            })
            .await?,
        )?;
        Ok(self.changed(attr, &[parent]))
    }

    async fn read_link(&self, req: Request<ReadLink>) -> Result<String, FsError> {
        self.read_barrier().await?;
        self.engine.read().unwrap().readlink(req.msg.inode)
    }

    async fn mknod(&self, req: Request<Mknod>) -> Result<Changed<Attr>, FsError> {
        let m = req.msg;
        let parent = m.parent;
        let attr = attr_of(
            self.submit(Command::Mknod {
                op: m.op,
                parent: m.parent,
                name: m.name,
                kind: m.kind,
                mode: m.mode,
                rdev: m.rdev,
                uid: m.uid,
                gid: m.gid,
                time: now_ts(),
            })
            .await?,
        )?;
        Ok(self.changed(attr, &[parent]))
    }

    async fn link(&self, req: Request<Link>) -> Result<Changed<Attr>, FsError> {
        let m = req.msg;
        let parent = m.new_parent;
        let attr = attr_of(
            self.submit(Command::Link {
                op: m.op,
                inode: m.inode,
                new_parent: m.new_parent,
                new_name: m.new_name,
                time: now_ts(),
            })
            .await?,
        )?;
        Ok(self.changed(attr, &[parent]))
    }

    async fn set_xattr(&self, req: Request<SetXattr>) -> Result<(), FsError> {
        let m = req.msg;
        self.submit(Command::SetXattr {
            op: m.op,
            inode: m.inode,
            name: m.name,
            value: m.value,
            flags: m.flags,
            time: now_ts(),
        })
        .await?;
        Ok(())
    }

    async fn get_xattr(&self, req: Request<GetXattr>) -> Result<Vec<u8>, FsError> {
        self.read_barrier().await?;
        self.engine
            .read()
            .unwrap()
            .get_xattr(req.msg.inode, &req.msg.name)
    }

    async fn list_xattr(&self, req: Request<ListXattr>) -> Result<Vec<String>, FsError> {
        self.read_barrier().await?;
        self.engine.read().unwrap().list_xattr(req.msg.inode)
    }

    async fn remove_xattr(&self, req: Request<RemoveXattr>) -> Result<(), FsError> {
        let m = req.msg;
        self.submit(Command::RemoveXattr {
            op: m.op,
            inode: m.inode,
            name: m.name,
            time: now_ts(),
        })
        .await?;
        Ok(())
    }

    /// Releasing the last hold of an orphan drops it (its chunks are forgotten here) or moves it
    /// to the trash (its chunks stay).
    async fn hold_open(&self, req: Request<HoldOpen>) -> Result<(), FsError> {
        let m = req.msg;
        self.heard_from(m.client);
        let dropped = if m.hold {
            Vec::new()
        } else {
            self.handles_of(m.inode)
        };
        // A hold may arrive after an unlink elsewhere moved the file to the trash (a mount does
        // not wait for a read-only open's hold): it takes the file back as an open orphan.
        self.submit(if m.hold {
            Command::HoldOpenFromTrash {
                op: m.op,
                inode: m.inode,
                client: m.client,
            }
        } else {
            Command::HoldOpen {
                op: m.op,
                inode: m.inode,
                client: m.client,
                hold: false,
            }
        })
        .await?;
        self.forget_dropped(dropped);
        Ok(())
    }

    async fn keep_alive(&self, req: Request<KeepAlive>) -> Result<KeepAliveReply, FsError> {
        self.read_barrier().await?;
        let client = req.msg.client;
        self.heard_from(client);
        Ok(KeepAliveReply {
            holds: self.engine.read().unwrap().held_by(client).len() as u64,
            session_timeout_ms: self.config.client_session_timeout_ms,
        })
    }

    async fn stat_fs(&self, _req: Request<StatFs>) -> Result<StatFsReply, FsError> {
        self.read_barrier().await?;
        let (capacity, used) = self.registry.lock().unwrap().space(Instant::now());
        let counts = self.engine.read().unwrap().counts();
        let replication = self.config.replication.max(1) as u64;
        Ok(StatFsReply {
            capacity_bytes: capacity / replication,
            used_bytes: used / replication,
            available_bytes: capacity.saturating_sub(used) / replication,
            files: counts.files + counts.directories + counts.symlinks,
            trash_files: counts.trash_files,
            trash_bytes: counts.trash_bytes,
        })
    }

    async fn get_chunks(&self, req: Request<GetChunks>) -> Result<GetChunksReply, FsError> {
        self.read_barrier().await?;
        let m = req.msg;
        let count = m.count.clamp(1, MAX_CHUNKS_PER_CALL);
        let (chunks, size) = {
            let engine = self.engine.read().unwrap();
            let size = engine.getattr(m.inode)?.size;
            (engine.chunks(m.inode, m.first_index, count)?, size)
        };
        let now = Instant::now();
        let registry = self.registry.lock().unwrap();
        Ok(GetChunksReply {
            chunks: chunks
                .into_iter()
                .map(|(index, handle, version)| ChunkLocation {
                    index,
                    handle,
                    version,
                    replicas: registry.live_replicas(handle, now),
                })
                .collect(),
            file_size: size,
        })
    }

    async fn prepare_write(&self, req: Request<PrepareWrite>) -> Result<WriteGrant, FsError> {
        self.read_barrier().await?;
        let m = req.msg;
        if let Some(grant) = self.valid_grant(m.inode, m.index) {
            return Ok(grant);
        }
        let _guard = self.grant_lock.lock().await;
        if let Some(grant) = self.valid_grant(m.inode, m.index) {
            return Ok(grant);
        }
        let existing = self.engine.read().unwrap().chunk_at(m.inode, m.index);
        let (handle, fresh) = match existing {
            // Version 1 was never granted a lease: no replica holds data yet. An earlier grant
            // may have created replicas at 2 without logging it, so place it anew under a new
            // handle (see `Command::ReplaceChunk`).
            Some((handle, ChunkVersion(1))) => {
                match self
                    .submit(Command::ReplaceChunk {
                        inode: m.inode,
                        index: m.index,
                        handle,
                    })
                    .await?
                {
                    Output::Chunk { handle, .. } => (handle, true),
                    other => return Err(FsError::Io(format!("unexpected output {other:?}"))),
                }
            }
            Some((handle, _)) => (handle, false),
            None => {
                // Check placement is possible before logging an allocation.
                if self.registry.lock().unwrap().live_count(Instant::now()) == 0 {
                    let young = self.volatile_since.lock().unwrap().elapsed()
                        < Duration::from_millis(self.config.heartbeat_timeout_ms);
                    if self.raft.is_some() && young {
                        // A new leader has not heard from the chunkservers yet.
                        return Err(FsError::Unavailable(
                            "the new leader is waiting for chunkserver heartbeats".into(),
                        ));
                    }
                    let goal = self.engine.read().unwrap().goal(m.inode)?;
                    return Err(FsError::NotEnoughServers {
                        need: goal,
                        have: 0,
                    });
                }
                match self
                    .submit(Command::AllocateChunk {
                        inode: m.inode,
                        index: m.index,
                        time: now_ts(),
                    })
                    .await?
                {
                    Output::Chunk { handle, .. } => (handle, true),
                    other => return Err(FsError::Io(format!("unexpected output {other:?}"))),
                }
            }
        };
        self.grant(handle, fresh).await
    }

    /// A lease that is valid for a while longer, whose replicas are all alive.
    fn valid_grant(&self, inode: InodeId, index: u64) -> Option<WriteGrant> {
        let (handle, version) = self.engine.read().unwrap().chunk_at(inode, index)?;
        let now = Instant::now();
        let registry = self.registry.lock().unwrap();
        let lease = registry.lease(handle)?;
        let remaining = lease.expires.checked_duration_since(now)?;
        if lease.version != version
            || !registry.lease_intact(handle)
            || remaining < Duration::from_millis(self.config.lease_duration_ms / 2)
            || !lease.replicas.iter().all(|n| registry.is_alive(*n, now))
        {
            return None;
        }
        let mut refs = lease
            .replicas
            .iter()
            .filter_map(|n| registry.server_ref(*n));
        let primary = refs.next()?;
        Some(WriteGrant {
            handle,
            version,
            primary,
            secondaries: refs.collect(),
            lease_remaining_ms: remaining.as_millis() as u64,
        })
    }

    /// Grant a lease on `handle`. The replicas move to version v+1 first, then the master logs
    /// v+1 (so a crash in between leaves replicas ahead of the table, which the master adopts
    /// from their reports — never behind it with every copy stale), then the primary gets its
    /// lease. Never while another lease may still be valid, except that the current primary may
    /// be re-granted (the version bump ends its old lease and drops dead secondaries).
    async fn grant(&self, handle: ChunkHandle, fresh: bool) -> Result<WriteGrant, FsError> {
        // No clone of this chunk starts, or counts, while the grant may change it.
        self.repair.lock().unwrap().grant_started(handle);
        let _granting = GrantGuard {
            inner: self,
            handle,
        };
        let now = Instant::now();
        let (current, goal) = {
            let engine = self.engine.read().unwrap();
            let current = engine
                .chunk(handle)
                .ok_or(FsError::ChunkNotFound(handle.0))?
                .version;
            (current, self.goal_of(&engine, handle))
        };
        let (replicas, current_primary) = {
            let registry = self.registry.lock().unwrap();
            let mut replicas = if fresh {
                registry.place(goal as usize, now, handle.0)
            } else {
                registry.live_replicas(handle, now)
            };
            if fresh && replicas.is_empty() && registry.live_count(now) > 0 {
                // Servers are up but none has room for a new chunk: the disks are full.
                return Err(FsError::NoSpace);
            }
            let current_primary = match registry.lease_may_be_valid(handle, now) {
                None => None,
                Some(wait) => match registry.lease(handle) {
                    Some(l) if registry.is_alive(l.primary, now) => Some(l.primary),
                    _ => {
                        return Err(FsError::Unavailable(format!(
                            "chunk {handle}: a lease may still be valid for {} ms",
                            wait.as_millis()
                        )))
                    }
                },
            };
            if let Some(p) = current_primary {
                // Keep the live primary first so its lease is renewed rather than moved.
                let Some(pos) = replicas.iter().position(|r| r.id == p) else {
                    return Err(FsError::Unavailable(format!(
                        "chunk {handle}: the lease holder is not a current replica"
                    )));
                };
                let r = replicas.remove(pos);
                replicas.insert(0, r);
            }
            (replicas, current_primary)
        };
        if replicas.is_empty() {
            return Err(if fresh {
                FsError::NotEnoughServers {
                    need: goal,
                    have: 0,
                }
            } else {
                FsError::Unavailable(format!("chunk {handle}: no live replica"))
            });
        }
        let version = ChunkVersion(current.0 + 1);
        let rpc = self.rpc()?;
        // Phase 1: every replica moves to the new version (or is created at it).
        let bump = |r: ServerRef| {
            let rpc = rpc.clone();
            let replicas = replicas.clone();
            async move {
                let res = rpc
                    .call(
                        &r.addr,
                        &BumpVersion {
                            handle,
                            version,
                            create: fresh,
                            lease_ms: None,
                            replicas,
                        },
                    )
                    .await;
                (r, res)
            }
        };
        // Re-granting to a primary whose lease may still be in use: bump it alone first. Its
        // bump waits for the chunk lock, which a mutation holds until every secondary answered,
        // so once it returns no mutation at the old version is in flight and none can start.
        // Bumping all at once let a secondary reach the new version while the primary was still
        // forwarding an old-version mutation: the primary kept the record, the secondary refused
        // it as stale, and the two stayed replicas with different bytes (append.rs, CI).
        let mut results = Vec::new();
        let mut rest = replicas.clone();
        if current_primary.is_some() {
            results.push(bump(rest.remove(0)).await);
        }
        results.extend(futures_join_all(rest.into_iter().map(bump)).await);
        let mut ok: Vec<ServerRef> = Vec::new();
        let mut failed: Vec<ServerRef> = Vec::new();
        for (r, res) in results {
            match res {
                Ok(()) => ok.push(r),
                Err(e) => {
                    tracing::warn!(%handle, server = %r.addr, "version bump failed: {e}");
                    failed.push(r);
                }
            }
        }
        if ok.is_empty() {
            // The table keeps the old version. A new chunk may still have been created on a
            // server whose answer was lost: that empty copy must never become a location.
            if fresh {
                let mut registry = self.registry.lock().unwrap();
                for r in &failed {
                    registry.mark_stale(handle, r.id, version);
                }
            }
            return Err(FsError::Unavailable(format!(
                "chunk {handle}: no replica accepted version {version}"
            )));
        }
        // Completion order is arbitrary: keep the chosen order (the current primary first).
        ok.sort_by_key(|r| replicas.iter().position(|x| x.id == r.id));
        match self.submit(Command::SetVersion { handle, version }).await? {
            Output::Chunk { version: v, .. } if v == version => {}
            other => {
                return Err(FsError::Unavailable(format!(
                    "chunk {handle}: version moved concurrently ({other:?})"
                )))
            }
        }
        {
            let mut registry = self.registry.lock().unwrap();
            registry.set_locations(handle, ok.iter().map(|r| r.id), Instant::now());
            for r in &failed {
                // It may or may not have taken the bump; either way it misses what follows.
                registry.mark_stale(handle, r.id, version);
            }
        }
        if let Some(p) = current_primary {
            if ok[0].id != p {
                return Err(FsError::Unavailable(format!(
                    "chunk {handle}: the lease holder did not take the new version; retry"
                )));
            }
        }
        // Phase 2: the lease. The master counts it from before the grant is sent, plus the
        // longest the grant can travel, so its view never ends before the primary's.
        let lease_ms = self.config.lease_duration_ms;
        let sent_at = Instant::now();
        rpc.call(
            &ok[0].addr,
            &BumpVersion {
                handle,
                version,
                create: false,
                lease_ms: Some(lease_ms),
                replicas: ok.clone(),
            },
        )
        .await?;
        self.registry.lock().unwrap().set_lease(
            handle,
            Lease {
                primary: ok[0].id,
                version,
                replicas: ok.iter().map(|r| r.id).collect(),
                expires: sent_at
                    + Duration::from_millis(lease_ms)
                    + Duration::from_millis(self.config.rpc_timeout_ms),
            },
        );
        let primary = ok.remove(0);
        Ok(WriteGrant {
            handle,
            version,
            primary,
            secondaries: ok,
            lease_remaining_ms: lease_ms,
        })
    }

    async fn report_bad_chunk(&self, req: Request<ReportBadChunk>) -> Result<(), FsError> {
        self.leader_ready()?;
        tracing::warn!(handle = %req.msg.handle, server = %req.msg.server, reporter = %req.peer.name, "corrupt replica reported");
        self.registry
            .lock()
            .unwrap()
            .report_corrupt(req.msg.handle, req.msg.server);
        Ok(())
    }

    async fn report_failed_replica(
        &self,
        req: Request<ReportFailedReplica>,
    ) -> Result<(), FsError> {
        self.leader_ready()?;
        let m = req.msg;
        tracing::warn!(handle = %m.handle, version = %m.version, failed = ?m.failed,
            lease_released = m.lease_released, reporter = %req.peer.name,
            "a mutation failed on some replicas: withdrawing them");
        let current = self
            .engine
            .read()
            .unwrap()
            .chunk(m.handle)
            .map(|c| c.version);
        if current != Some(m.version) {
            // The chunk moved on (a newer grant) or is gone: the report is about the past.
            return Ok(());
        }
        self.registry
            .lock()
            .unwrap()
            .withdraw(m.handle, m.version, &m.failed, m.lease_released);
        Ok(())
    }

    async fn heartbeat(&self, req: Request<Heartbeat>) -> Result<HeartbeatReply, FsError> {
        self.leader_ready()?;
        let report = {
            let engine = self.engine.read().unwrap();
            let table =
                |h: ChunkHandle| -> Option<ChunkVersion> { engine.chunk(h).map(|c| c.version) };
            self.registry
                .lock()
                .unwrap()
                .heartbeat(&req.msg, &table, Instant::now())
        };
        for (handle, version) in report.adopt {
            tracing::warn!(%handle, %version, "adopting a version the replicas took before the log");
            self.submit(Command::SetVersion { handle, version }).await?;
        }
        Ok(report.reply)
    }

    async fn cluster_status(
        &self,
        _req: Request<ClusterStatus>,
    ) -> Result<ClusterStatusReply, FsError> {
        self.leader_ready()?;
        let masters = self.masters_status().await;
        let now = Instant::now();
        let h = self.health(now);
        let engine = self.engine.read().unwrap();
        let registry = self.registry.lock().unwrap();
        let repair = self.repair.lock().unwrap();
        let stats = repair.stats();
        Ok(ClusterStatusReply {
            masters,
            chunkservers: registry.status(now),
            chunk_size: engine.chunk_size(),
            replication: self.config.replication,
            under_replicated_chunks: h.under,
            missing_chunks: h.missing,
            corrupt_reports: registry.corrupt_reports(),
            over_replicated_chunks: h.over,
            repair_queue: h.queue,
            clones_in_flight: repair.in_flight() as u64,
            clones_done: stats.done,
            cloned_bytes: stats.bytes,
            clones_failed: stats.failed,
        })
    }

    /// Every chunk judged against its goal (one pass over the chunk table, under the locks).
    fn health(&self, now: Instant) -> Health {
        let engine = self.engine.read().unwrap();
        let registry = self.registry.lock().unwrap();
        let repair = self.repair.lock().unwrap();
        let mut h = Health::default();
        for (handle, _) in engine.all_chunks() {
            let goal = self.goal_of(&engine, handle) as usize;
            let live = registry.live_locations(handle, now).len();
            if live == 0 {
                h.missing += 1;
            } else if live < goal {
                h.under += 1;
                if live + repair.in_flight_for(handle) < goal {
                    h.queue += 1;
                }
            } else if live > goal {
                h.over += 1;
            }
        }
        h.corrupt_chunks = registry.corrupt_counts().len() as u64;
        h
    }

    /// Set this master's gauges in `reg` (run at each scrape, see [`Master::export_metrics`]).
    fn collect_metrics(&self, reg: &metrics::Registry, node: &str) {
        let l = [("node", node)];
        let st = self.self_status();
        let g = |name: &str, help: &str, v: u64| reg.gauge(name, help, &l).set(v as i64);
        g(
            "quarry_master_files",
            "Regular files in the namespace (trash apart).",
            st.files,
        );
        g(
            "quarry_master_directories",
            "Directories in the namespace.",
            st.directories,
        );
        g(
            "quarry_master_chunks",
            "Chunks in the chunk table (trash included).",
            st.chunks,
        );
        g(
            "quarry_master_trash_files",
            "Files in the trash.",
            st.trash_files,
        );
        g(
            "quarry_master_applied_index",
            "The last log index applied to the namespace.",
            st.log_index,
        );
        if let Some(raft) = &self.raft {
            let m = raft.metrics();
            g(
                "quarry_master_raft_term",
                "This master's current Raft term.",
                m.term,
            );
            g(
                "quarry_master_raft_commit_index",
                "The highest Raft index known committed.",
                m.commit_index,
            );
            g(
                "quarry_master_raft_last_log_index",
                "The last index in this master's Raft log.",
                m.last_log_index,
            );
            g(
                "quarry_master_raft_voters",
                "Voting members of the Raft group.",
                m.voters.len() as u64,
            );
            g(
                "quarry_master_raft_lease_reads",
                "Metadata reads served under the leader's read lease, without a quorum round.",
                m.lease_reads,
            );
            g(
                "quarry_master_raft_confirmed_reads",
                "Metadata reads that confirmed leadership with a quorum first.",
                m.confirmed_reads,
            );
            for role in ["leader", "candidate", "follower", "learner", "shutdown"] {
                reg.gauge(
                    "quarry_master_raft_role",
                    "1 for this master's Raft role, 0 for the others.",
                    &[("node", node), ("role", role)],
                )
                .set((st.role == role) as i64);
            }
        }
        // The volatile state (chunk locations, repair) is only meaningful on a serving master.
        const SERVING: &[(&str, &str)] = &[
            ("quarry_master_under_replicated_chunks", "Chunks with fewer live replicas than their goal (at least one)."),
            ("quarry_master_missing_chunks", "Chunks with no live current replica."),
            ("quarry_master_over_replicated_chunks", "Chunks with more live replicas than their goal."),
            ("quarry_master_corrupt_chunks", "Chunks with a replica marked corrupt."),
            ("quarry_master_repair_queue", "Under-replicated chunks still short of their goal once clones in flight are counted."),
            ("quarry_master_clones_in_flight", "Re-replication clones running now."),
            ("quarry_master_chunkservers_live", "Chunkservers heard from within the heartbeat timeout."),
            ("quarry_master_corrupt_reports", "Replicas reported corrupt since this master started serving."),
            ("quarry_master_clones_done", "Clones that added a replica since this master started serving."),
            ("quarry_master_clones_failed", "Clones that failed or were discarded since this master started serving."),
            ("quarry_master_cloned_bytes", "Bytes copied by completed clones since this master started serving."),
        ];
        if self.leader_ready().is_err() {
            for (name, _) in SERVING {
                reg.remove_matching(name, ("node", node));
            }
            return;
        }
        let now = Instant::now();
        let h = self.health(now);
        let (live, corrupt_reports) = {
            let r = self.registry.lock().unwrap();
            (r.live_count(now) as u64, r.corrupt_reports())
        };
        let (in_flight, stats) = {
            let r = self.repair.lock().unwrap();
            (r.in_flight() as u64, r.stats())
        };
        let values = [
            h.under,
            h.missing,
            h.over,
            h.corrupt_chunks,
            h.queue,
            in_flight,
            live,
            corrupt_reports,
            stats.done,
            stats.failed,
            stats.bytes,
        ];
        for ((name, help), v) in SERVING.iter().zip(values) {
            g(name, help, v);
        }
    }

    /// Walk the namespace below `path` (directory by directory, taking the locks for one
    /// directory or file at a time) and judge every chunk of every regular file.
    async fn fsck(&self, req: Request<Fsck>) -> Result<FsckReply, FsError> {
        self.read_barrier().await?;
        let m = req.msg;
        let max_problems = m.max_problems.min(MAX_FSCK_PROBLEMS) as usize;
        let root = self.engine.read().unwrap().resolve(&m.path)?;
        let mut out = FsckReply {
            path: m.path.clone(),
            ..FsckReply::default()
        };
        let base = if m.path == "/" {
            String::new()
        } else {
            m.path.trim_end_matches('/').to_string()
        };
        let mut seen = std::collections::HashSet::new();
        let mut dirs: Vec<(InodeId, String)> = Vec::new();
        let mut files: Vec<(InodeId, String)> = Vec::new();
        match root.kind {
            FileKind::Directory => dirs.push((root.inode, base)),
            FileKind::File => files.push((root.inode, m.path.clone())),
            _ => {}
        }
        loop {
            // Files first, so at most one directory's listing is held at a time.
            if let Some((inode, path)) = files.pop() {
                if seen.insert(inode) {
                    self.fsck_file(inode, &path, max_problems, &mut out);
                }
                continue;
            }
            let Some((dir, path)) = dirs.pop() else { break };
            out.directories += 1;
            let mut after: Option<String> = None;
            loop {
                let (entries, more) =
                    self.engine
                        .read()
                        .unwrap()
                        .readdir(dir, after.as_deref(), 10_000)?;
                after = entries.last().map(|e| e.name.clone());
                for e in entries {
                    let child = format!("{path}/{}", e.name);
                    match e.kind {
                        FileKind::Directory => dirs.push((e.inode, child)),
                        FileKind::File => files.push((e.inode, child)),
                        _ => {}
                    }
                }
                if !more {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn fsck_file(&self, inode: InodeId, path: &str, max_problems: usize, out: &mut FsckReply) {
        let now = Instant::now();
        let engine = self.engine.read().unwrap();
        let Ok(attr) = engine.getattr(inode) else {
            return; // gone since it was listed
        };
        let Ok(chunks) = engine.chunks(inode, 0, u32::MAX) else {
            return;
        };
        out.files += 1;
        out.bytes += attr.size;
        let registry = self.registry.lock().unwrap();
        for (index, handle, version) in chunks {
            let goal = self.goal_of(&engine, handle);
            let live = registry.live_locations(handle, now).len() as u32;
            let corrupt = registry
                .marks_of(handle)
                .filter(|(_, m)| m.kind == MarkKind::Corrupt)
                .count() as u32;
            out.chunks += 1;
            out.corrupt_replicas += corrupt as u64;
            match live {
                0 => out.missing += 1,
                l if l < goal => out.under_replicated += 1,
                l if l > goal => out.over_replicated += 1,
                _ => out.healthy += 1,
            }
            if live != goal || corrupt > 0 {
                if out.problems.len() < max_problems {
                    out.problems.push(FsckProblem {
                        path: path.to_string(),
                        index,
                        handle,
                        version,
                        live,
                        goal,
                        corrupt,
                    });
                } else {
                    out.problems_truncated = true;
                }
            }
        }
    }

    /// Every replica the master knows of, for a range of a file's chunks.
    async fn file_info(&self, req: Request<FileInfo>) -> Result<FileInfoReply, FsError> {
        self.read_barrier().await?;
        let m = req.msg;
        let count = m.count.clamp(1, MAX_CHUNKS_PER_CALL);
        let now = Instant::now();
        let engine = self.engine.read().unwrap();
        let size = engine.getattr(m.inode)?.size;
        let cs = engine.chunk_size();
        let mut chunks = engine.chunks(m.inode, m.first_index, count.saturating_add(1))?;
        let more = chunks.len() > count as usize;
        chunks.truncate(count as usize);
        let registry = self.registry.lock().unwrap();
        let out = chunks
            .into_iter()
            .map(|(index, handle, version)| {
                let lease = registry
                    .lease(handle)
                    .filter(|l| l.version == version && l.expires > now);
                let mut replicas: Vec<ReplicaInfo> = Vec::new();
                let mut add = |id, state, reported: Option<ChunkVersion>| {
                    let Some(server) = registry.server_ref(id) else {
                        return;
                    };
                    if replicas.iter().any(|r| r.server.id == id) {
                        return;
                    }
                    let primary =
                        state == ReplicaState::Live && lease.is_some_and(|l| l.primary == id);
                    replicas.push(ReplicaInfo {
                        server,
                        state,
                        reported_version: reported.filter(|v| *v != version),
                        primary,
                        lease_remaining_ms: lease
                            .filter(|_| primary)
                            .map(|l| (l.expires - now).as_millis() as u64),
                    });
                };
                for id in registry.locations(handle) {
                    let state = if registry.is_alive(id, now) {
                        ReplicaState::Live
                    } else {
                        ReplicaState::Dead
                    };
                    add(id, state, None);
                }
                for (id, mark) in registry.marks_of(handle) {
                    match mark.kind {
                        MarkKind::Corrupt => add(id, ReplicaState::Corrupt, None),
                        MarkKind::Stale(v) => add(id, ReplicaState::Stale, Some(v)),
                    }
                }
                for (id, v) in registry.reported_stale(handle) {
                    add(id, ReplicaState::Stale, Some(v));
                }
                ChunkReplicas {
                    index,
                    handle,
                    version,
                    len: size.saturating_sub(index.saturating_mul(cs)).min(cs),
                    goal: self.goal_of(&engine, handle),
                    replicas,
                }
            })
            .collect();
        Ok(FileInfoReply {
            size,
            chunks: out,
            more,
        })
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        tracing::debug!(
            uptime_s = self.started.elapsed().as_secs(),
            "master state dropped"
        );
    }
}

/// Run the futures concurrently and collect their outputs (a task that panicked is logged and
/// left out).
async fn futures_join_all<F, T>(futs: impl IntoIterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    for f in futs {
        set.spawn(f);
    }
    let mut out = Vec::new();
    while let Some(res) = set.join_next().await {
        match res {
            Ok(v) => out.push(v),
            Err(e) => tracing::error!("task failed: {e}"),
        }
    }
    out
}
