//! The MapReduce worker, hosted by a chunkserver process.
//!
//! It polls the coordinator for work ([`WorkerPoll`], one poll in flight, which is also its
//! liveness signal), runs map and reduce attempts, reports each ([`ReportTask`]) before its next
//! poll, and serves its map output to reducers ([`FetchPartition`]).
//!
//! A map attempt reads its split from the chunk file on this server's own disk when it holds a
//! current replica (memory-mapped, checksums verified first, no copy), else through the client
//! from any replica. Map output is one file per (map attempt, partition) under
//! `<data>/mapred/job-<id>/`, deleted when the coordinator says the job ended. A reduce attempt
//! fetches its partition from every map output, merges, and writes its temporary output file
//! through the client (so it is replicated); the coordinator commits it by renaming.
//!
//! Must not depend on the chunkserver crate: local chunk files are reached through
//! [`LocalChunks`], a function the host provides.

use crate::app::SplitInput;
use crate::apps::{run_map, run_reduce};
use bytes::Bytes;
use quarry_client::Client;
use quarry_proto::job::*;
use quarry_proto::{ChunkHandle, ChunkVersion, FileKind, FsError, InodeId, NodeId};
use quarry_transport::{metrics, Reply, Router, RpcClient};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// A verified local replica: the chunk file, where its data starts, and the data length.
#[derive(Clone, Debug)]
pub struct LocalChunk {
    pub path: PathBuf,
    pub data_offset: u64,
    pub len: u64,
}

/// Finds the local replica of a chunk at exactly this version, with every checksum verified;
/// `Ok(None)` when this server has no such replica. Called from a blocking thread.
pub type LocalChunks =
    Arc<dyn Fn(ChunkHandle, ChunkVersion) -> Result<Option<LocalChunk>, FsError> + Send + Sync>;

#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Map output lives under `<data_dir>/mapred/`.
    pub data_dir: PathBuf,
    /// Coordinator addresses (the masters), tried in turn.
    pub coordinators: Vec<String>,
    /// Attempts run at once.
    pub slots: u32,
    /// How long a poll may take before the worker tries again (the coordinator holds idle polls
    /// for about a second).
    pub poll_timeout: Duration,
    /// Time between polls while every slot is busy.
    pub busy_poll_interval: Duration,
    /// Map output fetches in flight per reduce attempt.
    pub fetch_parallelism: usize,
    /// Test hook: sleep this long before each attempt (makes parallelism and faults observable).
    pub task_delay: Duration,
}

impl WorkerConfig {
    pub fn new(data_dir: PathBuf, coordinators: Vec<String>) -> WorkerConfig {
        WorkerConfig {
            data_dir,
            coordinators,
            slots: 2,
            poll_timeout: Duration::from_secs(5),
            busy_poll_interval: Duration::from_millis(500),
            fetch_parallelism: 4,
            task_delay: Duration::ZERO,
        }
    }
}

/// Test hooks: slow down or fail attempts, to exercise re-execution and backup tasks.
#[derive(Clone, Debug, Default)]
pub struct FaultPlan {
    /// Sleep this long at the start of each attempt.
    pub delay: Duration,
    /// Fail every attempt with this error.
    pub fail: Option<String>,
}

#[derive(Clone)]
pub struct Worker {
    inner: Arc<Inner>,
}

struct Inner {
    config: WorkerConfig,
    node: NodeId,
    local: LocalChunks,
    running: Mutex<HashMap<TaskRef, tokio::task::AbortHandle>>,
    /// Completed attempts, for tests and status: (kind, count).
    executed: Mutex<HashMap<TaskKind, u64>>,
    changed: Notify,
    faults: Mutex<FaultPlan>,
}

impl Worker {
    pub fn new(config: WorkerConfig, node: NodeId, local: LocalChunks) -> Worker {
        Worker {
            inner: Arc::new(Inner {
                config,
                node,
                local,
                running: Mutex::new(HashMap::new()),
                executed: Mutex::new(HashMap::new()),
                changed: Notify::new(),
                faults: Mutex::new(FaultPlan::default()),
            }),
        }
    }

    /// Serve this worker's map output.
    pub fn routes(&self, router: &mut Router) {
        let inner = self.inner.clone();
        router.route(move |req: quarry_transport::Request<FetchPartition>| {
            let inner = inner.clone();
            async move {
                let path = inner.output_path(
                    req.msg.job,
                    req.msg.map_index,
                    req.msg.attempt,
                    req.msg.partition,
                );
                match tokio::fs::read(&path).await {
                    Ok(bytes) => Reply::with_body(
                        FetchPartitionReply {
                            len: bytes.len() as u64,
                            crc32c: crc32c::crc32c(&bytes),
                        },
                        Bytes::from(bytes),
                    ),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        Reply::err(FsError::NotFound)
                    }
                    Err(e) => Reply::err(FsError::Io(format!("{}: {e}", path.display()))),
                }
            }
        });
    }

    /// Poll for work and run it, until the future is dropped. `rpc` carries this node's
    /// (chunkserver) identity; `addr` is where other workers reach this one; `client` reads
    /// inputs and writes outputs.
    pub async fn run(&self, rpc: RpcClient, addr: String, client: Client) {
        self.inner.clone().run(rpc, addr, client).await
    }

    /// Abort every running attempt (the coordinator runs them again elsewhere).
    pub fn stop(&self) {
        for (_, h) in self.inner.running.lock().unwrap().drain() {
            h.abort();
        }
    }

    pub fn node(&self) -> NodeId {
        self.inner.node
    }

    /// Attempts this worker finished (successfully or not), by kind.
    pub fn executed(&self, kind: TaskKind) -> u64 {
        *self.inner.executed.lock().unwrap().get(&kind).unwrap_or(&0)
    }

    /// Export this worker's finished attempts by kind and its running attempts in the
    /// process's metrics registry under `node`, refreshed at each scrape while it exists.
    pub fn export_metrics(&self, node: &str) {
        let weak = Arc::downgrade(&self.inner);
        let node = node.to_string();
        metrics::global().add_collector(move |reg| {
            let Some(inner) = weak.upgrade() else {
                return false;
            };
            let executed = inner.executed.lock().unwrap().clone();
            for (kind, name) in [(TaskKind::Map, "map"), (TaskKind::Reduce, "reduce")] {
                reg.counter(
                    "quarry_mapred_worker_attempts_total",
                    "Task attempts this worker finished (successfully or not), by kind.",
                    &[("node", node.as_str()), ("kind", name)],
                )
                .mirror(executed.get(&kind).copied().unwrap_or(0));
            }
            reg.gauge(
                "quarry_mapred_worker_running_attempts",
                "Task attempts this worker runs now.",
                &[("node", node.as_str())],
            )
            .set(inner.running.lock().unwrap().len() as i64);
            true
        });
    }

    /// Attempts running now.
    pub fn running(&self) -> Vec<TaskRef> {
        self.inner.running.lock().unwrap().keys().copied().collect()
    }

    pub fn set_faults(&self, plan: FaultPlan) {
        *self.inner.faults.lock().unwrap() = plan;
    }
}

impl Inner {
    fn job_dir(&self, job: JobId) -> PathBuf {
        self.config
            .data_dir
            .join("mapred")
            .join(format!("job-{}", job.0))
    }

    fn output_path(&self, job: JobId, map: u32, attempt: u32, partition: u32) -> PathBuf {
        self.job_dir(job)
            .join(format!("map-{map}.{attempt}.part-{partition}"))
    }

    /// Jobs with map output on disk.
    fn holding(&self) -> Vec<JobId> {
        let Ok(dir) = std::fs::read_dir(self.config.data_dir.join("mapred")) else {
            return Vec::new();
        };
        dir.filter_map(|e| {
            let name = e.ok()?.file_name();
            let id = name.to_str()?.strip_prefix("job-")?.parse().ok()?;
            Some(JobId(id))
        })
        .collect()
    }

    async fn run(self: Arc<Self>, rpc: RpcClient, addr: String, client: Client) {
        let rpc = rpc.with_timeout(self.config.poll_timeout);
        let mut turn = 0usize;
        let mut failures = 0u32;
        loop {
            let running: Vec<TaskRef> = self.running.lock().unwrap().keys().copied().collect();
            let free = self.config.slots.saturating_sub(running.len() as u32);
            let poll = WorkerPoll {
                worker: self.node,
                addr: addr.clone(),
                running,
                free_slots: free,
                holding: self.holding(),
            };
            let target = &self.config.coordinators[turn % self.config.coordinators.len()];
            let notified = self.changed.notified();
            match rpc.call(target, &poll).await {
                Ok(reply) => {
                    failures = 0;
                    self.apply(reply, &rpc, target, &client);
                }
                Err(e) => {
                    failures += 1;
                    turn += 1;
                    tracing::debug!("worker poll to {target}: {e}");
                    let backoff = Duration::from_millis((50u64 << failures.min(5)).min(1000));
                    tokio::time::sleep(backoff).await;
                    continue;
                }
            }
            let busy = self.running.lock().unwrap().len() as u32 >= self.config.slots;
            if busy {
                // Wake when an attempt ends, or poll anyway (the poll is the liveness signal).
                let _ = tokio::time::timeout(self.config.busy_poll_interval, notified).await;
            }
        }
    }

    fn apply(
        self: &Arc<Self>,
        reply: WorkerPollReply,
        rpc: &RpcClient,
        coordinator: &str,
        client: &Client,
    ) {
        for t in reply.cancel {
            if let Some(h) = self.running.lock().unwrap().remove(&t) {
                h.abort();
            }
        }
        for job in reply.forget_jobs {
            let _ = std::fs::remove_dir_all(self.job_dir(job));
        }
        for a in reply.assignments {
            let task = a.task;
            let me = self.clone();
            let rpc = rpc.clone();
            let coordinator = coordinator.to_string();
            let client = client.clone();
            // Registered before it can finish: the abort handle is inserted under the same lock
            // the attempt takes to remove itself.
            let mut running = self.running.lock().unwrap();
            let handle = tokio::spawn(async move {
                let outcome = me.execute(&a, &rpc, &client).await;
                let kind = a.task.kind;
                *me.executed.lock().unwrap().entry(kind).or_insert(0) += 1;
                me.report(&rpc, &coordinator, task, outcome).await;
                me.running.lock().unwrap().remove(&task);
                me.changed.notify_one();
            });
            running.insert(task, handle.abort_handle());
        }
    }

    /// Report an outcome; retried for a while (the coordinator may be restarting). An attempt
    /// whose report never arrives is re-run by the coordinator.
    async fn report(
        &self,
        rpc: &RpcClient,
        coordinator: &str,
        task: TaskRef,
        outcome: TaskOutcome,
    ) {
        let msg = ReportTask {
            worker: self.node,
            task,
            outcome,
        };
        let mut targets: Vec<&String> = self.config.coordinators.iter().collect();
        targets.sort_by_key(|a| a.as_str() != coordinator);
        for i in 0..40u32 {
            let target = targets[i as usize % targets.len()];
            match rpc.call(target, &msg).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::debug!("reporting {task:?} to {target}: {e}");
                    tokio::time::sleep(Duration::from_millis((100u64 << i.min(4)).min(1500))).await;
                }
            }
        }
        tracing::warn!("could not report {task:?}; the coordinator will run it again");
    }

    async fn execute(
        self: &Arc<Self>,
        a: &Assignment,
        rpc: &RpcClient,
        client: &Client,
    ) -> TaskOutcome {
        let faults = self.faults.lock().unwrap().clone();
        let delay = faults.delay + self.config.task_delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if let Some(error) = faults.fail {
            return TaskOutcome::Failed {
                error,
                lost_map_output: None,
            };
        }
        let result = match &a.work {
            TaskWork::Map { split, reducers } => {
                self.map(a.task, &a.app, split, *reducers, client).await
            }
            TaskWork::Reduce {
                partition,
                inputs,
                temp_path,
            } => {
                self.reduce(a.task, &a.app, *partition, inputs, temp_path, rpc, client)
                    .await
            }
        };
        match result {
            Ok((counters, partition_bytes)) => TaskOutcome::Done {
                counters,
                partition_bytes,
            },
            Err(TaskError::LostMapOutput(m, e)) => TaskOutcome::Failed {
                error: e,
                lost_map_output: Some(m),
            },
            Err(TaskError::Other(error)) => TaskOutcome::Failed {
                error,
                lost_map_output: None,
            },
        }
    }

    async fn map(
        self: &Arc<Self>,
        task: TaskRef,
        app: &AppSpec,
        split: &Split,
        reducers: u32,
        client: &Client,
    ) -> Result<(TaskCounters, Vec<u64>), TaskError> {
        let file_end = split.file_size;
        let split_end = split.offset + split.len;
        // The few bytes before the split decide whether it starts inside a record.
        let before = if split.offset == 0 {
            Bytes::new()
        } else {
            let from = split.offset.saturating_sub(4);
            client
                .read(split.inode, from, split.offset - from, file_end)
                .await
                .map_err(|e| TaskError::Other(format!("reading before the split: {e}")))?
        };
        // Local replica first.
        let local = if split.handle.0 != 0 {
            let f = self.local.clone();
            let (h, v) = (split.handle, split.version);
            tokio::task::spawn_blocking(move || f(h, v))
                .await
                .map_err(|e| TaskError::Other(format!("local read: {e}")))?
                .unwrap_or_else(|e| {
                    tracing::warn!("local replica of {h:?} unusable: {e}");
                    None
                })
                .filter(|c| c.len >= split.len)
        } else {
            None
        };
        let data_local = local.is_some();
        let data = match local {
            Some(c) => Data::Mapped(map_file(&c).map_err(TaskError::Other)?),
            None => Data::Owned(
                client
                    .read(split.inode, split.offset, split.len, file_end)
                    .await
                    .map_err(|e| TaskError::Other(format!("reading the split: {e}")))?,
            ),
        };
        let mut want_after = 64u64 << 10;
        loop {
            let after = if split_end >= file_end {
                Bytes::new()
            } else {
                client
                    .read(split.inode, split_end, want_after, file_end)
                    .await
                    .map_err(|e| TaskError::Other(format!("reading after the split: {e}")))?
            };
            let after_reaches_eof = split_end + after.len() as u64 >= file_end;
            let app2 = app.clone();
            let data2 = data.clone();
            let before2 = before.clone();
            let path = split.path.clone();
            let offset = split.offset;
            let len = split.len as usize;
            let result = tokio::task::spawn_blocking(move || {
                let input = SplitInput {
                    path: &path,
                    offset,
                    data: &data2.bytes()[..len],
                    before: &before2,
                    after: &after,
                    after_reaches_eof,
                };
                run_map(&app2, &input, reducers)
            })
            .await
            .map_err(|e| TaskError::Other(format!("map panicked: {e}")))?;
            match result {
                Ok(out) => {
                    let dir = self.job_dir(task.job);
                    let paths: Vec<PathBuf> = (0..reducers)
                        .map(|r| self.output_path(task.job, task.index, task.attempt, r))
                        .collect();
                    let sizes: Vec<u64> = out.partitions.iter().map(|p| p.len() as u64).collect();
                    let written = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                        std::fs::create_dir_all(&dir)?;
                        for (p, bytes) in paths.iter().zip(out.partitions) {
                            write_atomically(p, &bytes)?;
                        }
                        Ok(())
                    })
                    .await
                    .map_err(|e| TaskError::Other(format!("writing map output: {e}")))?;
                    written.map_err(|e| TaskError::Other(format!("writing map output: {e}")))?;
                    let counters = TaskCounters {
                        input_bytes: split.len,
                        input_records: out.input_records,
                        output_records: out.output_records,
                        output_bytes: sizes.iter().sum(),
                        shuffle_bytes: 0,
                        data_local,
                    };
                    return Ok((counters, sizes));
                }
                Err(need) => {
                    if after_reaches_eof {
                        return Err(TaskError::Other(
                            "the app asked for lookahead past the end of the file".into(),
                        ));
                    }
                    want_after = (need.at_least as u64).max(want_after * 2);
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn reduce(
        self: &Arc<Self>,
        task: TaskRef,
        app: &AppSpec,
        partition: u32,
        inputs: &[MapOutputRef],
        temp_path: &str,
        rpc: &RpcClient,
        client: &Client,
    ) -> Result<(TaskCounters, Vec<u64>), TaskError> {
        use futures_lite::fetch_all;
        let parts = fetch_all(
            inputs,
            self.config.fetch_parallelism,
            |input: MapOutputRef| {
                let me = self.clone();
                let rpc = rpc.clone();
                async move { me.fetch(task.job, &input, partition, &rpc).await }
            },
        )
        .await?;
        let shuffle_bytes: u64 = parts.iter().map(|p| p.len() as u64).sum();
        let app = app.clone();
        let (text, records) = tokio::task::spawn_blocking(move || {
            let slices: Vec<&[u8]> = parts.iter().map(|p| &p[..]).collect();
            run_reduce(&app, &slices)
        })
        .await
        .map_err(|e| TaskError::Other(format!("reduce panicked: {e}")))?
        .map_err(|e| TaskError::Other(format!("bad map output: {e}")))?;
        let output_bytes = text.len() as u64;
        write_file(client, temp_path, Bytes::from(text))
            .await
            .map_err(|e| TaskError::Other(format!("writing {temp_path}: {e}")))?;
        Ok((
            TaskCounters {
                input_bytes: shuffle_bytes,
                input_records: 0,
                output_records: records,
                output_bytes,
                shuffle_bytes,
                data_local: true,
            },
            Vec::new(),
        ))
    }

    /// One partition of one map output: from disk when it is ours, else over QUIC (a few tries).
    async fn fetch(
        &self,
        job: JobId,
        input: &MapOutputRef,
        partition: u32,
        rpc: &RpcClient,
    ) -> Result<Bytes, TaskError> {
        if input.worker == self.node {
            let path = self.output_path(job, input.map_index, input.attempt, partition);
            return match tokio::fs::read(&path).await {
                Ok(b) => Ok(Bytes::from(b)),
                Err(e) => Err(TaskError::LostMapOutput(
                    input.map_index,
                    format!("{}: {e}", path.display()),
                )),
            };
        }
        let req = FetchPartition {
            job,
            map_index: input.map_index,
            attempt: input.attempt,
            partition,
        };
        let mut last = String::new();
        for i in 0..3u32 {
            match rpc.call_read(&input.addr, &req).await {
                Ok((reply, body)) => {
                    if body.len() as u64 == reply.len && crc32c::crc32c(&body) == reply.crc32c {
                        return Ok(body);
                    }
                    last = "checksum mismatch".into();
                }
                Err(FsError::NotFound) => {
                    last = "map output not found".into();
                    break;
                }
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100 << i)).await;
        }
        Err(TaskError::LostMapOutput(
            input.map_index,
            format!(
                "fetching map {} from {}: {last}",
                input.map_index, input.addr
            ),
        ))
    }
}

enum TaskError {
    LostMapOutput(u32, String),
    Other(String),
}

/// Split bytes: a shared mapping of a local chunk file, or bytes read over the network.
#[derive(Clone)]
enum Data {
    Mapped(Arc<memmap2::Mmap>),
    Owned(Bytes),
}

impl Data {
    fn bytes(&self) -> &[u8] {
        match self {
            Data::Mapped(m) => m,
            Data::Owned(b) => b,
        }
    }
}

/// Map the data region of a verified local chunk file, read-only.
#[allow(unsafe_code)]
fn map_file(c: &LocalChunk) -> Result<Arc<memmap2::Mmap>, String> {
    let file = std::fs::File::open(&c.path).map_err(|e| format!("{}: {e}", c.path.display()))?;
    // SAFETY: chunk files are only changed by the chunkserver's store, which writes data under
    // the chunk's lock and never shrinks a file that a job reads (input files are not mutated
    // while a job runs; a truncate during a job is a user error that can make this map's
    // result wrong, not unsafe in the sense of memory: the mapping stays valid and SIGBUS is
    // the worst case, as for any mmap reader).
    let map = unsafe {
        memmap2::MmapOptions::new()
            .offset(c.data_offset)
            .len(c.len as usize)
            .map(&file)
    }
    .map_err(|e| format!("mapping {}: {e}", c.path.display()))?;
    let _ = map.advise(memmap2::Advice::Sequential);
    Ok(Arc::new(map))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Create (or replace) the file at `path` in the filesystem with `data`.
pub async fn write_file(client: &Client, path: &str, data: Bytes) -> Result<(), FsError> {
    let (parent, name) = client.parent_of(path).await?;
    let attr = match client.lookup(parent.inode, &name).await {
        Ok(a) if a.kind == FileKind::File => {
            if a.size > 0 {
                client.truncate(a.inode, 0).await?;
            }
            a
        }
        Ok(_) => return Err(FsError::AlreadyExists),
        Err(FsError::NotFound) => {
            client
                .create(parent.inode, &name, 0o644, 0, 0, false)
                .await?
        }
        Err(e) => return Err(e),
    };
    write_all(client, attr.inode, data).await
}

async fn write_all(client: &Client, inode: InodeId, data: Bytes) -> Result<(), FsError> {
    const PIECE: usize = 8 << 20;
    let len = data.len();
    let mut off = 0;
    while off < len {
        let n = PIECE.min(len - off);
        client
            .write_data(inode, off as u64, data.slice(off..off + n))
            .await?;
        off += n;
    }
    if len > 0 {
        client.commit_size(inode, len as u64).await?;
    }
    Ok(())
}

/// Small async helpers (no extra dependency).
mod futures_lite {
    use super::TaskError;
    use quarry_proto::job::MapOutputRef;
    use std::future::Future;

    /// Run `f` over `inputs` with at most `parallelism` in flight; results in input order; the
    /// first error wins.
    pub async fn fetch_all<F, Fut, T>(
        inputs: &[MapOutputRef],
        parallelism: usize,
        f: F,
    ) -> Result<Vec<T>, TaskError>
    where
        F: Fn(MapOutputRef) -> Fut,
        Fut: Future<Output = Result<T, TaskError>> + Send + 'static,
        T: Send + 'static,
    {
        let mut out: Vec<Option<T>> = (0..inputs.len()).map(|_| None).collect();
        let mut set = tokio::task::JoinSet::new();
        let mut next = 0;
        while next < inputs.len() || !set.is_empty() {
            while next < inputs.len() && set.len() < parallelism.max(1) {
                let i = next;
                let fut = f(inputs[i].clone());
                set.spawn(async move { (i, fut.await) });
                next += 1;
            }
            match set.join_next().await {
                Some(Ok((i, Ok(v)))) => out[i] = Some(v),
                Some(Ok((_, Err(e)))) => return Err(e),
                Some(Err(e)) => return Err(TaskError::Other(format!("fetch task: {e}"))),
                None => break,
            }
        }
        Ok(out
            .into_iter()
            .map(|v| v.expect("every input fetched"))
            .collect())
    }
}
