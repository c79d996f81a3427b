//! The MapReduce coordinator, hosted by the master process.
//!
//! It owns a [`Scheduler`] (the pure state machine in `job.rs`) and does its IO: it resolves a
//! submitted job's inputs into splits (one per chunk, with the replicas' locations), answers
//! worker polls (holding an idle poll for up to a second so new work starts at once), applies
//! reports, commits reduce output by renaming the chosen attempt's file, and keeps every job's
//! state in the master's replicated state ([`JobStore`]) so a restarted (or, with Raft, a new
//! leader) master resumes the jobs where they were.
//!
//! Must not depend on the master crate: the host provides the [`JobStore`] and a [`Client`].
//!
//! In a Raft group only the leader's coordinator runs: the host calls [`Coordinator::start`]
//! when its master becomes leader and [`Coordinator::stop`] when it loses leadership (and may
//! start it again later). A stopped coordinator answers every call with the error of its
//! [gate](Coordinator::set_gate) (`NotLeader` with the leader's address), so clients and
//! workers move to the leader; it keeps no job state between runs (the records are the truth).

use crate::job::{Action, Job, Scheduler, SchedulerConfig};
use quarry_client::Client;
use quarry_proto::job::*;
use quarry_proto::{FileKind, FsError, OpId, Timestamp};
use quarry_transport::{metrics, Reply, Request, Router};
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Where job state is kept: the master's replicated service records.
pub trait JobStore: Send + Sync + 'static {
    /// Every record whose key starts with `prefix`.
    fn load(&self, prefix: &str) -> Vec<(String, Vec<u8>)>;
    /// Set or delete one record, durably.
    fn save(
        &self,
        key: String,
        value: Option<Vec<u8>>,
    ) -> Pin<Box<dyn Future<Output = Result<(), FsError>> + Send + '_>>;
}

const RECORD_PREFIX: &str = "mapred/job/";

/// Submission ids remembered for deduplication of retries.
const MAX_REMEMBERED_SUBMISSIONS: usize = 10_000;

fn record_key(job: JobId) -> String {
    format!("{RECORD_PREFIX}{:020}", job.0)
}

#[derive(Clone, Debug)]
pub struct CoordinatorConfig {
    pub scheduler: SchedulerConfig,
    /// How long an idle worker's poll is held waiting for work.
    pub poll_hold: Duration,
    /// How often time-based rules (lost workers, timeouts) are evaluated.
    pub tick: Duration,
    /// Job state is saved at most this often while only map progress changes.
    pub persist_interval: Duration,
    /// Largest reducer count a job may ask for.
    pub max_reducers: u32,
    /// Finished jobs remembered (the oldest are forgotten beyond this).
    pub max_finished_jobs: usize,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            scheduler: SchedulerConfig::default(),
            poll_hold: Duration::from_millis(1000),
            tick: Duration::from_millis(200),
            persist_interval: Duration::from_millis(500),
            max_reducers: 1024,
            max_finished_jobs: 100,
        }
    }
}

#[derive(Clone)]
pub struct Coordinator {
    inner: Arc<Inner>,
}

struct Inner {
    config: CoordinatorConfig,
    sched: Mutex<Scheduler>,
    client: OnceLock<Client>,
    store: OnceLock<Arc<dyn JobStore>>,
    /// Wakes held polls when work may have appeared.
    changed: Notify,
    /// Wakes the persister.
    dirty_notify: Notify,
    dirty: Mutex<BTreeSet<JobId>>,
    epoch: Instant,
    /// Submissions already accepted, by request id (a retried submit returns the same job).
    submitted: Mutex<HashMap<OpId, JobId>>,
    /// Serializes submissions (input resolution happens outside the scheduler lock).
    submit_lock: tokio::sync::Mutex<()>,
    /// Jobs that ended but are still being cleaned up: reported as running until then, so
    /// nobody sees "succeeded" before the output directory is final.
    finishing: Mutex<BTreeSet<JobId>>,
    /// Between `start` (once the jobs are loaded) and `stop`.
    active: AtomicBool,
    /// Why calls are refused while stopped (the host's leadership check).
    gate: OnceLock<Gate>,
}

type Gate = Box<dyn Fn() -> Result<(), FsError> + Send + Sync>;

/// Aborts a task when dropped (so aborting the coordinator's task also ends its ticker).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn unavailable() -> FsError {
    FsError::Unavailable("the job coordinator is starting".into())
}

impl Coordinator {
    pub fn new(config: CoordinatorConfig) -> Coordinator {
        let sched = Scheduler::new(config.scheduler.clone());
        Coordinator {
            inner: Arc::new(Inner {
                config,
                sched: Mutex::new(sched),
                client: OnceLock::new(),
                store: OnceLock::new(),
                changed: Notify::new(),
                dirty_notify: Notify::new(),
                dirty: Mutex::new(BTreeSet::new()),
                epoch: Instant::now(),
                submitted: Mutex::new(HashMap::new()),
                submit_lock: tokio::sync::Mutex::new(()),
                finishing: Mutex::new(BTreeSet::new()),
                active: AtomicBool::new(false),
                gate: OnceLock::new(),
            }),
        }
    }

    /// What a stopped coordinator answers: the gate's error (e.g. `NotLeader { hint }`), or
    /// "starting" when the gate passes (this master leads but the jobs are not loaded yet).
    pub fn set_gate(&self, gate: impl Fn() -> Result<(), FsError> + Send + Sync + 'static) {
        let _ = self.inner.gate.set(Box::new(gate));
    }

    /// Stop serving (leadership lost). The caller aborts the task `start` returned; calls are
    /// refused from now on, held polls return, and the next `start` loads the jobs afresh.
    pub fn stop(&self) {
        self.inner.active.store(false, Ordering::SeqCst);
        self.inner.changed.notify_waiters();
    }

    /// Whether the coordinator is serving (started and not stopped).
    pub fn is_active(&self) -> bool {
        self.inner.active.load(Ordering::SeqCst)
    }

    pub fn routes(&self, router: &mut Router) {
        macro_rules! route {
            ($rpc:ty, $method:ident) => {{
                let inner = self.inner.clone();
                router.route(move |req: Request<$rpc>| {
                    let inner = inner.clone();
                    async move { Reply::from(inner.$method(req.msg).await) }
                });
            }};
        }
        route!(SubmitJob, submit);
        route!(GetJob, get_job);
        route!(ListJobs, list_jobs);
        route!(WorkerPoll, worker_poll);
        route!(ReportTask, report_task);
    }

    /// Load the jobs kept in `store` and start serving. `client` talks to the filesystem.
    /// Starting again after [`Coordinator::stop`] forgets the previous run's state and loads
    /// the records as they are now (written by whichever coordinator ran meanwhile).
    pub fn start(&self, client: Client, store: Arc<dyn JobStore>) -> tokio::task::JoinHandle<()> {
        let inner = self.inner.clone();
        let _ = inner.client.set(client);
        let _ = inner.store.set(store.clone());
        let now = inner.now_ms();
        let mut actions = Vec::new();
        {
            let mut sched = inner.sched.lock().unwrap();
            *sched = Scheduler::new(inner.config.scheduler.clone());
            inner.finishing.lock().unwrap().clear();
            inner.dirty.lock().unwrap().clear();
            inner.submitted.lock().unwrap().clear();
            for (key, bytes) in store.load(RECORD_PREFIX) {
                match postcard::from_bytes::<Job>(&bytes) {
                    Ok(job) => {
                        let more = sched.restore(job, now);
                        inner.note_finishing(&more);
                        actions.extend(more);
                    }
                    Err(e) => tracing::error!("job record {key} unreadable: {e}"),
                }
            }
        }
        inner.active.store(true, Ordering::SeqCst);
        tokio::spawn(async move {
            inner.handle(actions).await;
            let _ticker = {
                let inner = inner.clone();
                AbortOnDrop(tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(inner.config.tick).await;
                        let actions = {
                            let mut sched = inner.sched.lock().unwrap();
                            let actions = sched.tick(inner.now_ms(), Timestamp::now());
                            inner.note_finishing(&actions);
                            actions
                        };
                        if !actions.is_empty() {
                            inner.changed.notify_waiters();
                        }
                        inner.handle(actions).await;
                    }
                }))
            };
            inner.persist_loop().await;
        })
    }

    /// The status of every job (for the host's status page).
    pub fn jobs(&self) -> Vec<JobStatus> {
        let all = self.inner.sched.lock().unwrap().list();
        all.into_iter().map(|s| self.inner.as_seen(s)).collect()
    }

    /// Export the remembered jobs by state and the tasks of running jobs by phase and state
    /// in the process's metrics registry under `node`, refreshed at each scrape while the
    /// coordinator exists.
    pub fn export_metrics(&self, node: &str) {
        let weak = Arc::downgrade(&self.inner);
        let node = node.to_string();
        metrics::global().add_collector(move |reg| {
            let Some(inner) = weak.upgrade() else {
                return false;
            };
            let jobs: Vec<JobStatus> = {
                let all = inner.sched.lock().unwrap().list();
                all.into_iter().map(|s| inner.as_seen(s)).collect()
            };
            let mut by_state = [0i64; 3];
            let mut tasks = [[0i64; 3]; 2];
            let mut failed_attempts = 0u64;
            let mut input_bytes = 0u64;
            for j in &jobs {
                failed_attempts += j.counters.failed_attempts;
                input_bytes += j.counters.input_bytes;
                let i = match j.state {
                    JobState::Running => 0,
                    JobState::Succeeded => 1,
                    JobState::Failed(_) => 2,
                };
                by_state[i] += 1;
                if i == 0 {
                    for (phase, p) in [&j.maps, &j.reduces].into_iter().enumerate() {
                        tasks[phase][0] += p.done as i64;
                        tasks[phase][1] += p.running as i64;
                        tasks[phase][2] +=
                            p.total.saturating_sub(p.done).saturating_sub(p.running) as i64;
                    }
                }
            }
            for (i, state) in ["running", "succeeded", "failed"].into_iter().enumerate() {
                reg.gauge(
                    "quarry_mapred_jobs",
                    "MapReduce jobs the coordinator remembers, by state.",
                    &[("node", node.as_str()), ("state", state)],
                )
                .set(by_state[i]);
            }
            for (p, phase) in ["map", "reduce"].into_iter().enumerate() {
                for (i, state) in ["done", "running", "pending"].into_iter().enumerate() {
                    reg.gauge(
                        "quarry_mapred_tasks",
                        "Tasks of running MapReduce jobs, by phase and state.",
                        &[("node", node.as_str()), ("phase", phase), ("state", state)],
                    )
                    .set(tasks[p][i]);
                }
            }
            reg.gauge(
                "quarry_mapred_failed_attempts",
                "Failed task attempts, summed over the jobs the coordinator remembers.",
                &[("node", node.as_str())],
            )
            .set(failed_attempts as i64);
            reg.gauge(
                "quarry_mapred_input_bytes",
                "Input bytes of committed map tasks, summed over the jobs the coordinator remembers.",
                &[("node", node.as_str())],
            )
            .set(input_bytes as i64);
            true
        });
    }
}

impl Inner {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn client(&self) -> Result<&Client, FsError> {
        self.client.get().ok_or_else(unavailable)
    }

    /// Ok while started and not stopped; else the gate's refusal.
    fn serving(&self) -> Result<&Client, FsError> {
        if !self.active.load(Ordering::SeqCst) {
            if let Some(gate) = self.gate.get() {
                gate()?;
            }
            return Err(unavailable());
        }
        self.client()
    }

    async fn submit(self: &Arc<Self>, req: SubmitJob) -> Result<JobId, FsError> {
        let client = self.serving()?.clone();
        let _guard = self.submit_lock.lock().await;
        if let Some(id) = self.submitted.lock().unwrap().get(&req.op) {
            return Ok(*id);
        }
        let spec = normalize(req.spec, self.config.max_reducers)?;
        let splits = plan(&client, &spec).await?;
        prepare_output(&client, &spec.output).await?;
        let (id, actions) = {
            let mut sched = self.sched.lock().unwrap();
            let (id, actions) = sched.submit(spec, splits, Timestamp::now(), self.now_ms());
            self.note_finishing(&actions);
            (id, actions)
        };
        {
            // Remember recent submissions only (a retry comes within seconds).
            let mut submitted = self.submitted.lock().unwrap();
            if submitted.len() >= MAX_REMEMBERED_SUBMISSIONS {
                submitted.clear();
            }
            submitted.insert(req.op, id);
        }
        // The job exists once its record is durable; if saving fails now the persister keeps
        // trying, and a retried submission gets this job.
        if let Err(e) = self.save(id).await {
            self.mark_dirty(id);
            return Err(e);
        }
        self.handle(actions).await;
        self.changed.notify_waiters();
        self.forget_old_jobs().await;
        Ok(id)
    }

    async fn get_job(&self, req: GetJob) -> Result<JobStatus, FsError> {
        self.serving()?;
        let s = self.sched.lock().unwrap().status(req.job);
        s.map(|s| self.as_seen(s)).ok_or(FsError::NotFound)
    }

    async fn list_jobs(&self, _req: ListJobs) -> Result<Vec<JobStatus>, FsError> {
        self.serving()?;
        let all = self.sched.lock().unwrap().list();
        Ok(all.into_iter().map(|s| self.as_seen(s)).collect())
    }

    /// A job still being cleaned up is reported as running, without outputs.
    fn as_seen(&self, mut s: JobStatus) -> JobStatus {
        if self.finishing.lock().unwrap().contains(&s.id) {
            s.state = JobState::Running;
            s.finished = None;
            s.outputs.clear();
        }
        s
    }

    /// Called under the scheduler lock with the actions it just returned.
    fn note_finishing(&self, actions: &[Action]) {
        for a in actions {
            if let Action::Finished { job } = a {
                self.finishing.lock().unwrap().insert(*job);
            }
        }
    }

    async fn worker_poll(self: &Arc<Self>, req: WorkerPoll) -> Result<WorkerPollReply, FsError> {
        self.serving()?;
        let deadline = tokio::time::Instant::now() + self.config.poll_hold;
        loop {
            let notified = self.changed.notified();
            self.serving()?;
            let (reply, actions, waiting) = {
                let mut sched = self.sched.lock().unwrap();
                let now = self.now_ms();
                // An idle worker with nothing to do yet is held (alive in the scheduler's eyes,
                // nothing assigned) until work appears or the hold ends.
                let waiting = req.free_slots > 0
                    && !sched.has_work_for(req.worker, now)
                    && tokio::time::Instant::now() < deadline;
                let slots = if waiting { 0 } else { req.free_slots };
                let (reply, actions) = sched.poll(
                    req.worker,
                    &req.addr,
                    &req.running,
                    slots,
                    &req.holding,
                    now,
                );
                self.note_finishing(&actions);
                (reply, actions, waiting)
            };
            self.spawn_handle(actions);
            if !waiting || !reply.cancel.is_empty() || !reply.forget_jobs.is_empty() {
                return Ok(reply);
            }
            let _ = tokio::time::timeout_at(deadline, notified).await;
        }
    }

    async fn report_task(self: &Arc<Self>, req: ReportTask) -> Result<(), FsError> {
        self.serving()?;
        let actions = {
            let mut sched = self.sched.lock().unwrap();
            let actions = sched.report(req.worker, req.task, req.outcome, self.now_ms());
            self.note_finishing(&actions);
            actions
        };
        self.changed.notify_waiters();
        self.handle(actions).await;
        Ok(())
    }

    fn spawn_handle(self: &Arc<Self>, actions: Vec<Action>) {
        if actions.is_empty() {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move { me.handle(actions).await });
    }

    fn mark_dirty(&self, job: JobId) {
        self.dirty.lock().unwrap().insert(job);
        self.dirty_notify.notify_one();
    }

    /// Carry out the scheduler's actions, in order, feeding back commit results.
    async fn handle(&self, actions: Vec<Action>) {
        {
            let mut queue: std::collections::VecDeque<Action> = actions.into();
            while let Some(a) = queue.pop_front() {
                match a {
                    Action::Persist { job } => self.mark_dirty(job),
                    Action::Commit {
                        job,
                        reduce,
                        attempt,
                        temp_path,
                        final_path,
                    } => {
                        let result = match self.client() {
                            Ok(c) => rename_path(c, &temp_path, &final_path).await,
                            Err(e) => Err(e),
                        };
                        let more = {
                            let mut sched = self.sched.lock().unwrap();
                            let more = match result {
                                Ok(()) => sched.committed(
                                    job,
                                    reduce,
                                    attempt,
                                    self.now_ms(),
                                    Timestamp::now(),
                                ),
                                Err(e) => {
                                    tracing::warn!("committing {temp_path}: {e}");
                                    sched.commit_failed(
                                        job,
                                        reduce,
                                        attempt,
                                        &e.to_string(),
                                        self.now_ms(),
                                    )
                                }
                            };
                            self.note_finishing(&more);
                            more
                        };
                        self.changed.notify_waiters();
                        queue.extend(more);
                    }
                    Action::Discard { path } => {
                        if let Ok(c) = self.client() {
                            let _ = remove_path(c, &path).await;
                        }
                    }
                    Action::Finished { job } => {
                        // The outputs are final; the job's record says so before anything else
                        // is cleaned up.
                        if let Err(e) = self.save(job).await {
                            tracing::warn!("saving finished job {job}: {e}");
                        }
                        let output = self
                            .sched
                            .lock()
                            .unwrap()
                            .job(job)
                            .map(|j| j.spec().output.clone());
                        // A failed job's partial output stays for inspection, minus temporaries.
                        if let (Some(output), Ok(c)) = (output, self.client()) {
                            let tmp = format!("{}/_temporary", output.trim_end_matches('/'));
                            if let Err(e) = remove_tree(c, &tmp).await {
                                tracing::debug!("removing {tmp}: {e}");
                            }
                        }
                        self.finishing.lock().unwrap().remove(&job);
                        self.changed.notify_waiters();
                    }
                }
            }
        }
    }

    async fn save(&self, job: JobId) -> Result<(), FsError> {
        let store = self.store.get().ok_or_else(unavailable)?;
        let bytes = {
            let sched = self.sched.lock().unwrap();
            match sched.job(job) {
                Some(j) => Some(postcard::to_stdvec(j).map_err(|e| FsError::Io(e.to_string()))?),
                None => None,
            }
        };
        self.dirty.lock().unwrap().remove(&job);
        store.save(record_key(job), bytes).await
    }

    async fn persist_loop(&self) {
        loop {
            self.dirty_notify.notified().await;
            tokio::time::sleep(self.config.persist_interval).await;
            let jobs: Vec<JobId> = self.dirty.lock().unwrap().iter().copied().collect();
            for job in jobs {
                if let Err(e) = self.save(job).await {
                    tracing::warn!("saving job {job}: {e}");
                    self.mark_dirty(job);
                }
            }
        }
    }

    /// Keep the newest `max_finished_jobs` finished jobs; forget the rest (records too).
    async fn forget_old_jobs(&self) {
        let old: Vec<JobId> = {
            let sched = self.sched.lock().unwrap();
            let finished: Vec<JobId> = sched
                .list()
                .into_iter()
                .filter(|s| s.state != JobState::Running)
                .map(|s| s.id)
                .collect();
            let n = finished.len().saturating_sub(self.config.max_finished_jobs);
            finished.into_iter().take(n).collect()
        };
        for job in old {
            self.sched.lock().unwrap().forget(job);
            if let Some(store) = self.store.get() {
                let _ = store.save(record_key(job), None).await;
            }
        }
    }
}

/// Check a submitted spec and put its paths in canonical form.
fn normalize(mut spec: JobSpec, max_reducers: u32) -> Result<JobSpec, FsError> {
    if spec.inputs.is_empty() {
        return Err(FsError::InvalidArgument("no input given".into()));
    }
    if spec.reducers == 0 || spec.reducers > max_reducers {
        return Err(FsError::InvalidArgument(format!(
            "reducers must be 1..={max_reducers}, not {}",
            spec.reducers
        )));
    }
    let canon = |p: &str| -> Result<String, FsError> {
        let parts = quarry_proto::split_path(p)?;
        Ok(format!("/{}", parts.join("/")))
    };
    spec.output = canon(&spec.output)?;
    if spec.output == "/" {
        return Err(FsError::InvalidArgument("the output cannot be /".into()));
    }
    for i in spec.inputs.iter_mut() {
        if !i.starts_with('/') {
            return Err(FsError::InvalidArgument(format!(
                "input {i:?} is not an absolute path"
            )));
        }
        // Globs are kept as given (validated when expanded).
        if !has_glob(i) {
            *i = canon(i)?;
        }
    }
    if let AppSpec::Grep { pattern } = &spec.app {
        if pattern.len() > 4096 {
            return Err(FsError::InvalidArgument(
                "grep pattern over 4096 bytes".into(),
            ));
        }
    }
    for i in &spec.inputs {
        let i = i.trim_end_matches('/');
        if i == spec.output || i.starts_with(&format!("{}/", spec.output)) {
            return Err(FsError::InvalidArgument(format!(
                "input {i} is inside the output directory {}",
                spec.output
            )));
        }
    }
    Ok(spec)
}

fn has_glob(p: &str) -> bool {
    p.contains(['*', '?', '['])
}

/// `*` matches any run of bytes, `?` one character, `[abc]`/`[a-z]`/`[!a]` a class.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).any(|i| go(&p[1..], &n[i..])),
            Some('?') => !n.is_empty() && go(&p[1..], &n[1..]),
            Some('[') => {
                let Some(close) = p.iter().skip(2).position(|&c| c == ']').map(|i| i + 2) else {
                    return n.first() == Some(&'[') && go(&p[1..], &n[1..]);
                };
                let Some(&c) = n.first() else { return false };
                let (negate, class) = match p[1] {
                    '!' | '^' => (true, &p[2..close]),
                    _ => (false, &p[1..close]),
                };
                let mut hit = false;
                let mut i = 0;
                while i < class.len() {
                    if i + 2 < class.len() && class[i + 1] == '-' {
                        hit |= class[i] <= c && c <= class[i + 2];
                        i += 3;
                    } else {
                        hit |= class[i] == c;
                        i += 1;
                    }
                }
                hit != negate && go(&p[close + 1..], &n[1..])
            }
            Some(&c) => n.first() == Some(&c) && go(&p[1..], &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}

/// Input files, in order: each input's files (a directory's regular files recursively in name
/// order; a glob's matches in name order), each file once.
async fn expand_inputs(
    client: &Client,
    inputs: &[String],
) -> Result<Vec<(String, quarry_proto::Attr)>, FsError> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for input in inputs {
        let mut found = Vec::new();
        if has_glob(input) {
            let (dir, pat) = input.rsplit_once('/').unwrap_or(("", input));
            if has_glob(dir) {
                return Err(FsError::InvalidArgument(format!(
                    "{input}: wildcards only in the last path component"
                )));
            }
            let dir = if dir.is_empty() { "/" } else { dir };
            let attr = client.stat(dir).await?;
            let mut entries = client.readdir(attr.inode).await?;
            entries.sort_by(|a, b| a.name.cmp(&b.name));
            for e in entries {
                if glob_match(pat, &e.name) {
                    let path = format!("{}/{}", dir.trim_end_matches('/'), e.name);
                    walk(client, &path, &mut found).await?;
                }
            }
            if found.is_empty() {
                return Err(FsError::InvalidArgument(format!("{input}: no match")));
            }
        } else {
            walk(client, input, &mut found).await?;
        }
        for (p, a) in found {
            if seen.insert(a.inode) {
                out.push((p, a));
            }
        }
    }
    Ok(out)
}

/// Regular files at or below `path`, depth first in name order. Other kinds are skipped.
async fn walk(
    client: &Client,
    path: &str,
    out: &mut Vec<(String, quarry_proto::Attr)>,
) -> Result<(), FsError> {
    let attr = client.stat(path).await.map_err(|e| match e {
        FsError::NotFound => FsError::InvalidArgument(format!("input {path} does not exist")),
        e => e,
    })?;
    let mut stack = vec![(path.trim_end_matches('/').to_string(), attr)];
    while let Some((p, a)) = stack.pop() {
        match a.kind {
            FileKind::File => out.push((p, a)),
            FileKind::Directory => {
                let mut entries = client.readdir(a.inode).await?;
                // Reverse order onto the stack, so names come off it in order.
                entries.sort_by(|x, y| y.name.cmp(&x.name));
                for e in entries {
                    if e.kind == FileKind::Directory || e.kind == FileKind::File {
                        let child = format!("{p}/{}", e.name);
                        let attr = client.getattr(e.inode).await?;
                        stack.push((child, attr));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// One split per chunk of each input file, with its replicas' locations.
async fn plan(client: &Client, spec: &JobSpec) -> Result<Vec<Split>, FsError> {
    let files = expand_inputs(client, &spec.inputs).await?;
    if files.is_empty() {
        return Err(FsError::InvalidArgument(
            "the inputs hold no regular file".into(),
        ));
    }
    let cs = client.chunk_size();
    let mut splits = Vec::new();
    for (path, attr) in files {
        if attr.size == 0 {
            continue;
        }
        let chunks = client.chunks(attr.inode).await?;
        let n = attr.size.div_ceil(cs);
        for index in 0..n {
            let loc = chunks.iter().find(|c| c.index == index);
            let offset = index * cs;
            splits.push(Split {
                path: path.clone(),
                inode: attr.inode,
                file_size: attr.size,
                chunk_index: index,
                handle: loc.map(|l| l.handle).unwrap_or_default(),
                version: loc.map(|l| l.version).unwrap_or_default(),
                offset,
                len: cs.min(attr.size - offset),
                replicas: loc
                    .map(|l| l.replicas.iter().map(|r| r.id).collect())
                    .unwrap_or_default(),
            });
        }
    }
    Ok(splits)
}

/// Create the output directory (it must not exist, or be empty) and its `_temporary`.
async fn prepare_output(client: &Client, output: &str) -> Result<(), FsError> {
    match client.stat(output).await {
        Ok(a) if a.kind == FileKind::Directory => {
            let entries = client.readdir(a.inode).await?;
            if entries.iter().any(|e| e.name != "_temporary") {
                return Err(FsError::AlreadyExists);
            }
        }
        Ok(_) => return Err(FsError::AlreadyExists),
        Err(FsError::NotFound) => {}
        Err(e) => return Err(e),
    }
    client
        .mkdir_p(&format!("{output}/_temporary"), 0o755)
        .await
        .map(|_| ())
}

async fn rename_path(client: &Client, from: &str, to: &str) -> Result<(), FsError> {
    let (src, src_name) = client.parent_of(from).await?;
    let (dst, dst_name) = client.parent_of(to).await?;
    client
        .rename(src.inode, &src_name, dst.inode, &dst_name)
        .await
}

async fn remove_path(client: &Client, path: &str) -> Result<(), FsError> {
    let (parent, name) = client.parent_of(path).await?;
    client.unlink(parent.inode, &name).await
}

/// `rm -r` of a directory of files (one level of files, as `_temporary` is).
async fn remove_tree(client: &Client, path: &str) -> Result<(), FsError> {
    let attr = client.stat(path).await?;
    for e in client.readdir(attr.inode).await? {
        if e.kind == FileKind::Directory {
            Box::pin(remove_tree(client, &format!("{path}/{}", e.name))).await?;
        } else {
            client.unlink(attr.inode, &e.name).await?;
        }
    }
    let (parent, name) = client.parent_of(path).await?;
    client.rmdir(parent.inode, &name).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*.txt", "a.txt"));
        assert!(!glob_match("*.txt", "a.txt.gz"));
        assert!(glob_match("part-?", "part-1"));
        assert!(glob_match("[ab]*", "beta"));
        assert!(!glob_match("[!ab]*", "beta"));
        assert!(glob_match("k[0-9]", "k7"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("?", ""));
        assert!(glob_match("é*", "éa"));
    }

    #[test]
    fn specs_are_checked() {
        let spec = |inputs: &[&str], output: &str, reducers| JobSpec {
            app: AppSpec::WordCount,
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            output: output.into(),
            reducers,
        };
        assert!(normalize(spec(&["/in"], "/out", 3), 8).is_ok());
        assert_eq!(
            normalize(spec(&["/in/"], "/out/", 3), 8).unwrap(),
            spec(&["/in"], "/out", 3)
        );
        assert!(normalize(spec(&[], "/out", 3), 8).is_err());
        assert!(normalize(spec(&["/in"], "/out", 0), 8).is_err());
        assert!(normalize(spec(&["/in"], "/out", 9), 8).is_err());
        assert!(normalize(spec(&["in"], "/out", 1), 8).is_err());
        assert!(normalize(spec(&["/in"], "/", 1), 8).is_err());
        assert!(normalize(spec(&["/out/x"], "/out", 1), 8).is_err());
        assert!(normalize(spec(&["/in/*.txt"], "/out", 1), 8).is_ok());
    }
}
