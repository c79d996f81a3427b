//! The MapReduce job/task state machine, "sans-IO": every job, its map and reduce tasks and their
//! attempts, the known workers, and the scheduling rules (locality with delay scheduling,
//! re-execution after failures and lost workers, backup tasks for stragglers, commit of reduce
//! output). State goes in, [`Action`]s come out; the coordinator runtime does the IO.
//!
//! Must not depend on IO, clocks, randomness, threads or any async runtime: time comes in as
//! `now_ms` (a monotonic millisecond clock of the coordinator process; it may restart from zero
//! with the process, see [`Scheduler::restore`]) and as [`Timestamp`]s for what is shown to users.
//!
//! Rules chosen here where the design left a choice:
//! - A task fails the job when it has failed more than `max_task_failures` times. Failed reports,
//!   timeouts and failed commits count; attempts lost with their worker (silence, or a poll that
//!   no longer lists them) and reduces failing for a lost map output do not.
//! - `counters.lost_workers` counts, per job, each loss of a worker that cost the job something
//!   (a running attempt, or map output that had to be re-made).
//! - A lost worker's map output is re-made only while some reduce has not produced its output yet
//!   (not committing and not committed).
//! - A job that fails in a call without a wall-clock parameter gets its `finished` time at the
//!   next [`Scheduler::tick`].

use quarry_proto::job::{
    Assignment, JobCounters, JobId, JobSpec, JobState, JobStatus, MapOutputRef, PhaseProgress,
    Split, TaskCounters, TaskKind, TaskOutcome, TaskRef, TaskWork, WorkerPollReply,
};
use quarry_proto::{NodeId, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// After a restore, every task's attempt numbers skip ahead this far, so that an attempt handed
/// out but not yet persisted before the coordinator stopped is never numbered again (a reduce
/// attempt's number names its temporary output file).
pub const RESTORE_ATTEMPT_GAP: u32 = 1000;

/// Scheduling parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// A worker silent (no poll) for longer than this is lost.
    pub worker_timeout_ms: u64,
    /// An idle map task waits this long for a worker holding a replica of its split before any
    /// worker may take it (delay scheduling). 0: never wait.
    pub locality_wait_ms: u64,
    /// An attempt younger than this never gets a backup.
    pub backup_min_ms: u64,
    /// A running attempt gets a backup when it has run `backup_factor` times the median duration
    /// of the phase's finished tasks (and at least `backup_min_ms`). No backups in a phase before
    /// one of its tasks finished.
    pub backup_factor: u32,
    /// An attempt running longer than this is failed (a stalled worker that still polls).
    pub task_timeout_ms: u64,
    /// A task failing more often than this fails the job.
    pub max_task_failures: u32,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            worker_timeout_ms: 10_000,
            locality_wait_ms: 2_000,
            backup_min_ms: 5_000,
            backup_factor: 2,
            task_timeout_ms: 600_000,
            max_task_failures: 4,
        }
    }
}

/// What the runtime must do after a call. Within one call's list, `Persist`s come first, then
/// `Commit`s and `Discard`s, then `Finished`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// The reduce attempt's output is the chosen one: rename `temp_path` -> `final_path`
    /// (replacing), then call [`Scheduler::committed`] (or [`Scheduler::commit_failed`]).
    Commit {
        job: JobId,
        reduce: u32,
        attempt: u32,
        temp_path: String,
        final_path: String,
    },
    /// A losing attempt's temporary output (best-effort delete).
    Discard { path: String },
    /// The job's state changed: save [`Scheduler::job`].
    Persist { job: JobId },
    /// The job ended (`Succeeded` only after every `Commit` of it was confirmed; or `Failed`).
    Finished { job: JobId },
}

/// Where reduce `reduce`'s attempt `attempt` writes its output.
pub fn temp_path(output: &str, reduce: u32, attempt: u32) -> String {
    format!(
        "{}/_temporary/part-{reduce:05}.attempt-{attempt}",
        output.trim_end_matches('/')
    )
}

/// Reduce `reduce`'s committed output file.
pub fn final_path(output: &str, reduce: u32) -> String {
    format!("{}/part-{reduce:05}", output.trim_end_matches('/'))
}

// ---- persisted job state -----------------------------------------------------------------------

/// One running attempt.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
struct Attempt {
    attempt: u32,
    worker: NodeId,
    started_ms: u64,
    /// Reduce: the map attempt whose output it was given, per map.
    inputs: Vec<u32>,
}

/// What map and reduce tasks share: attempt numbering, running attempts, failures.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
struct TaskCore {
    /// The next attempt's number (attempts are numbered from 0).
    next_attempt: u32,
    running: Vec<Attempt>,
    /// Failures counting toward `max_task_failures`.
    failures: u32,
    /// When the task last had no running attempt (for delay scheduling).
    idle_since_ms: u64,
}

impl TaskCore {
    fn is_running(&self, attempt: u32, worker: NodeId) -> bool {
        self.running
            .iter()
            .any(|a| a.attempt == attempt && a.worker == worker)
    }

    /// Remove attempt `attempt` running on `worker`.
    fn take(&mut self, attempt: u32, worker: NodeId, now_ms: u64) -> Option<Attempt> {
        let i = self
            .running
            .iter()
            .position(|a| a.attempt == attempt && a.worker == worker)?;
        let a = self.running.remove(i);
        if self.running.is_empty() {
            self.idle_since_ms = now_ms;
        }
        Some(a)
    }

    /// Remove every attempt matching `drop`; returns how many.
    fn drop_where(&mut self, now_ms: u64, drop: impl Fn(&Attempt) -> bool) -> u64 {
        let before = self.running.len();
        self.running.retain(|a| !drop(a));
        let n = before - self.running.len();
        if n > 0 && self.running.is_empty() {
            self.idle_since_ms = now_ms;
        }
        n as u64
    }
}

/// A map task's accepted output.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
struct MapDone {
    attempt: u32,
    worker: NodeId,
    /// The worker's address when it reported (used until the worker polls again).
    addr: String,
    /// Size of each partition (one per reducer).
    partition_bytes: Vec<u64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
struct MapTask {
    split: Split,
    core: TaskCore,
    /// The winning attempt's output while it is usable.
    done: Option<MapDone>,
    /// The latest winning attempt's counters (kept when its output is lost, replaced when the
    /// task wins again).
    counters: Option<TaskCounters>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
enum ReduceState {
    /// No attempt has produced output yet (attempts may be running).
    Pending,
    /// Attempt `attempt` finished; its output is being renamed into place.
    Committing {
        attempt: u32,
        counters: TaskCounters,
    },
    /// Attempt `attempt`'s output is the final one.
    Committed {
        attempt: u32,
        counters: TaskCounters,
    },
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
struct ReduceTask {
    core: TaskCore,
    state: ReduceState,
}

impl ReduceTask {
    fn winner(&self) -> Option<u32> {
        match self.state {
            ReduceState::Pending => None,
            ReduceState::Committing { attempt, .. } | ReduceState::Committed { attempt, .. } => {
                Some(attempt)
            }
        }
    }
}

/// One job's whole state. The runtime persists it (postcard) after each [`Action::Persist`] and
/// hands it back to [`Scheduler::restore`] after a coordinator restart. Millisecond fields are
/// relative to the coordinator's `now_ms` clock and are rebased by `restore`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Job {
    id: JobId,
    spec: JobSpec,
    state: JobState,
    submitted: Timestamp,
    finished: Option<Timestamp>,
    /// Attempt and event counts; the data counters are summed from the tasks by
    /// [`Job::counters`].
    events: JobCounters,
    maps: Vec<MapTask>,
    reduces: Vec<ReduceTask>,
    /// Durations of the winning attempts, per phase (for backup tasks).
    map_durations: Vec<u64>,
    reduce_durations: Vec<u64>,
}

/// Collects one call's actions in the documented order.
#[derive(Default)]
struct Out {
    persist: Vec<JobId>,
    effects: Vec<Action>,
    finished: Vec<JobId>,
}

impl Out {
    fn persist(&mut self, job: JobId) {
        if !self.persist.contains(&job) {
            self.persist.push(job);
        }
    }

    fn effect(&mut self, a: Action) {
        self.effects.push(a);
    }

    fn finished(&mut self, job: JobId) {
        self.persist(job);
        if !self.finished.contains(&job) {
            self.finished.push(job);
        }
    }

    fn into_actions(self) -> Vec<Action> {
        let mut v: Vec<Action> = self
            .persist
            .into_iter()
            .map(|job| Action::Persist { job })
            .collect();
        v.extend(self.effects);
        v.extend(
            self.finished
                .into_iter()
                .map(|job| Action::Finished { job }),
        );
        v
    }
}

fn median(v: &[u64]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_unstable();
    Some(s[s.len() / 2])
}

impl Job {
    pub fn id(&self) -> JobId {
        self.id
    }

    pub fn spec(&self) -> &JobSpec {
        &self.spec
    }

    pub fn state(&self) -> &JobState {
        &self.state
    }

    pub fn is_running(&self) -> bool {
        self.state == JobState::Running
    }

    pub fn submitted(&self) -> Timestamp {
        self.submitted
    }

    pub fn finished(&self) -> Option<Timestamp> {
        self.finished
    }

    fn maps_done(&self) -> bool {
        self.maps.iter().all(|m| m.done.is_some())
    }

    fn core_mut(&mut self, kind: TaskKind, index: u32) -> Option<&mut TaskCore> {
        match kind {
            TaskKind::Map => self.maps.get_mut(index as usize).map(|m| &mut m.core),
            TaskKind::Reduce => self.reduces.get_mut(index as usize).map(|r| &mut r.core),
        }
    }

    fn core(&self, kind: TaskKind, index: u32) -> Option<&TaskCore> {
        match kind {
            TaskKind::Map => self.maps.get(index as usize).map(|m| &m.core),
            TaskKind::Reduce => self.reduces.get(index as usize).map(|r| &r.core),
        }
    }

    /// Every task's core, with its kind and index.
    fn cores_mut(&mut self) -> impl Iterator<Item = (TaskKind, u32, &mut TaskCore)> {
        let maps = self
            .maps
            .iter_mut()
            .enumerate()
            .map(|(i, m)| (TaskKind::Map, i as u32, &mut m.core));
        let reduces = self
            .reduces
            .iter_mut()
            .enumerate()
            .map(|(i, r)| (TaskKind::Reduce, i as u32, &mut r.core));
        maps.chain(reduces)
    }

    /// Totals: attempt counts plus the data counters of the winning attempts.
    pub fn counters(&self) -> JobCounters {
        let mut c = self.events;
        for t in self.maps.iter().filter_map(|m| m.counters.as_ref()) {
            c.input_bytes += t.input_bytes;
            c.input_records += t.input_records;
            c.map_output_records += t.output_records;
            if t.data_local {
                c.data_local_maps += 1;
            } else {
                c.remote_maps += 1;
            }
        }
        for r in &self.reduces {
            if let ReduceState::Committed { counters: t, .. } = &r.state {
                c.shuffle_bytes += t.shuffle_bytes;
                c.output_records += t.output_records;
                c.output_bytes += t.output_bytes;
            }
        }
        c
    }

    pub fn status(&self) -> JobStatus {
        let maps = PhaseProgress {
            total: self.maps.len() as u32,
            done: self.maps.iter().filter(|m| m.done.is_some()).count() as u32,
            running: self
                .maps
                .iter()
                .filter(|m| !m.core.running.is_empty())
                .count() as u32,
            bytes_done: self
                .maps
                .iter()
                .filter(|m| m.done.is_some())
                .map(|m| m.split.len)
                .sum(),
            bytes_total: self.maps.iter().map(|m| m.split.len).sum(),
        };
        let mut reduces = PhaseProgress {
            total: self.reduces.len() as u32,
            ..PhaseProgress::default()
        };
        for (r, t) in self.reduces.iter().enumerate() {
            match &t.state {
                ReduceState::Committed { counters, .. } => {
                    reduces.done += 1;
                    reduces.bytes_done += counters.shuffle_bytes;
                    reduces.bytes_total += counters.shuffle_bytes;
                }
                state => {
                    if !t.core.running.is_empty() || *state != ReduceState::Pending {
                        reduces.running += 1;
                    }
                    reduces.bytes_total += self
                        .maps
                        .iter()
                        .filter_map(|m| m.done.as_ref())
                        .filter_map(|d| d.partition_bytes.get(r))
                        .sum::<u64>();
                }
            }
        }
        let outputs = if self.state == JobState::Succeeded {
            (0..self.reduces.len() as u32)
                .map(|r| final_path(&self.spec.output, r))
                .collect()
        } else {
            Vec::new()
        };
        JobStatus {
            id: self.id,
            spec: self.spec.clone(),
            state: self.state.clone(),
            maps,
            reduces,
            counters: self.counters(),
            submitted: self.submitted,
            finished: self.finished,
            outputs,
        }
    }

    /// End the job: no attempt of it runs any more.
    fn end(&mut self, state: JobState, now: Option<Timestamp>, out: &mut Out) {
        self.state = state;
        self.finished = now;
        for m in &mut self.maps {
            m.core.running.clear();
        }
        for r in &mut self.reduces {
            r.core.running.clear();
        }
        out.finished(self.id);
    }

    /// A failure of task (`kind`, `index`) that counts toward `max_task_failures`.
    fn count_failure(&mut self, kind: TaskKind, index: u32, error: &str, max: u32, out: &mut Out) {
        let Some(core) = self.core_mut(kind, index) else {
            return;
        };
        core.failures += 1;
        let n = core.failures;
        if n > max {
            let what = match kind {
                TaskKind::Map => "map",
                TaskKind::Reduce => "reduce",
            };
            let reason = format!("{what} task {index} failed {n} times; last error: {error}");
            self.end(JobState::Failed(reason), None, out);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn map_done(
        &mut self,
        worker: NodeId,
        addr: &str,
        index: u32,
        attempt: u32,
        counters: TaskCounters,
        mut partition_bytes: Vec<u64>,
        now_ms: u64,
        out: &mut Out,
    ) {
        let reducers = self.reduces.len();
        let Some(m) = self.maps.get_mut(index as usize) else {
            return;
        };
        if m.done.is_some() {
            return;
        }
        let Some(a) = m.core.take(attempt, worker, now_ms) else {
            return;
        };
        // The other attempts lost: they are cancelled at their workers' next polls.
        m.core.running.clear();
        partition_bytes.resize(reducers, 0);
        m.done = Some(MapDone {
            attempt,
            worker,
            addr: addr.to_string(),
            partition_bytes,
        });
        m.counters = Some(counters);
        self.map_durations.push(now_ms.saturating_sub(a.started_ms));
        out.persist(self.id);
    }

    fn reduce_done(
        &mut self,
        worker: NodeId,
        index: u32,
        attempt: u32,
        counters: TaskCounters,
        now_ms: u64,
        out: &mut Out,
    ) {
        let id = self.id;
        let running = self.is_running();
        let Some(r) = self.reduces.get_mut(index as usize) else {
            return;
        };
        if attempt >= r.core.next_attempt || r.winner() == Some(attempt) {
            // Never issued, or a duplicate report of the winner.
            return;
        }
        let discard = Action::Discard {
            path: temp_path(&self.spec.output, index, attempt),
        };
        if !running || r.state != ReduceState::Pending {
            out.effect(discard);
            return;
        }
        let Some(a) = r.core.take(attempt, worker, now_ms) else {
            if !r.core.running.iter().any(|a| a.attempt == attempt) {
                // A stale attempt (its worker was lost, or it lost to another): its output is
                // garbage. (An attempt running on another worker is not this worker's to report.)
                out.effect(discard);
            }
            return;
        };
        r.core.running.clear();
        r.state = ReduceState::Committing { attempt, counters };
        self.reduce_durations
            .push(now_ms.saturating_sub(a.started_ms));
        out.persist(id);
        out.effect(Action::Commit {
            job: id,
            reduce: index,
            attempt,
            temp_path: temp_path(&self.spec.output, index, attempt),
            final_path: final_path(&self.spec.output, index),
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn attempt_failed(
        &mut self,
        worker: NodeId,
        task: TaskRef,
        error: &str,
        lost_map_output: Option<u32>,
        max: u32,
        now_ms: u64,
        out: &mut Out,
    ) {
        if !self.is_running() {
            return;
        }
        let Some(core) = self.core_mut(task.kind, task.index) else {
            return;
        };
        let Some(a) = core.take(task.attempt, worker, now_ms) else {
            return;
        };
        self.events.failed_attempts += 1;
        out.persist(self.id);
        if task.kind == TaskKind::Reduce {
            if let Some(m) = lost_map_output {
                if let Some(map) = self.maps.get_mut(m as usize) {
                    // Re-make the output only if the reduce was given the current one.
                    let given = a.inputs.get(m as usize).copied();
                    if given.is_some() && map.done.as_ref().map(|d| d.attempt) == given {
                        map.done = None;
                        map.core.idle_since_ms = now_ms;
                    }
                    return;
                }
            }
        }
        self.count_failure(task.kind, task.index, error, max, out);
    }

    /// `worker` is lost: its attempts end, and its map output is re-made if still needed.
    fn worker_lost(&mut self, worker: NodeId, now_ms: u64, out: &mut Out) {
        if !self.is_running() {
            return;
        }
        let mut ended = 0;
        for (_, _, core) in self.cores_mut() {
            ended += core.drop_where(now_ms, |a| a.worker == worker);
        }
        let needed = self.reduces.iter().any(|r| r.state == ReduceState::Pending);
        let mut reset = 0;
        if needed {
            for m in &mut self.maps {
                if m.done.as_ref().is_some_and(|d| d.worker == worker) {
                    m.done = None;
                    m.core.idle_since_ms = now_ms;
                    reset += 1;
                }
            }
        }
        if ended + reset > 0 {
            self.events.failed_attempts += ended;
            self.events.lost_workers += 1;
            out.persist(self.id);
        }
    }

    /// Fail attempts that ran longer than `timeout_ms`.
    fn timeouts(&mut self, now_ms: u64, timeout_ms: u64, max: u32, out: &mut Out) {
        let mut late = Vec::new();
        for (kind, index, core) in self.cores_mut() {
            for a in &core.running {
                if now_ms.saturating_sub(a.started_ms) > timeout_ms {
                    late.push((kind, index, a.attempt, a.worker));
                }
            }
        }
        for (kind, index, attempt, worker) in late {
            if !self.is_running() {
                return;
            }
            let Some(core) = self.core_mut(kind, index) else {
                continue;
            };
            if core.take(attempt, worker, now_ms).is_none() {
                continue;
            }
            self.events.failed_attempts += 1;
            out.persist(self.id);
            let error = format!("attempt {attempt} timed out after {timeout_ms} ms");
            self.count_failure(kind, index, &error, max, out);
        }
    }
}

// ---- the scheduler -----------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Worker {
    addr: String,
    last_seen_ms: u64,
    /// False once `tick` found it silent for too long (until it polls again).
    alive: bool,
}

/// A task a worker could be given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pick {
    job: JobId,
    kind: TaskKind,
    index: u32,
    backup: bool,
}

/// Every job and every known worker.
pub struct Scheduler {
    config: SchedulerConfig,
    jobs: BTreeMap<JobId, Job>,
    workers: BTreeMap<NodeId, Worker>,
    next_id: u64,
}

impl Scheduler {
    pub fn new(config: SchedulerConfig) -> Scheduler {
        Scheduler {
            config,
            jobs: BTreeMap::new(),
            workers: BTreeMap::new(),
            next_id: 1,
        }
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// A new job whose inputs the runtime already resolved into splits (one per chunk, in input
    /// order; may be empty: then the job has no maps and goes straight to reduce, producing
    /// `reducers` empty outputs). Ids are 1, 2, 3... and never reused while the scheduler lives;
    /// after a restore the next id is the largest restored one plus one. A spec with no reducers
    /// makes a job that fails at once.
    pub fn submit(
        &mut self,
        spec: JobSpec,
        splits: Vec<Split>,
        submitted: Timestamp,
        now_ms: u64,
    ) -> (JobId, Vec<Action>) {
        let id = JobId(self.next_id);
        self.next_id += 1;
        let core = TaskCore {
            idle_since_ms: now_ms,
            ..TaskCore::default()
        };
        let reducers = spec.reducers;
        let mut job = Job {
            id,
            spec,
            state: JobState::Running,
            submitted,
            finished: None,
            events: JobCounters::default(),
            maps: splits
                .into_iter()
                .map(|split| MapTask {
                    split,
                    core: core.clone(),
                    done: None,
                    counters: None,
                })
                .collect(),
            reduces: (0..reducers)
                .map(|_| ReduceTask {
                    core: core.clone(),
                    state: ReduceState::Pending,
                })
                .collect(),
            map_durations: Vec::new(),
            reduce_durations: Vec::new(),
        };
        let mut out = Out::default();
        out.persist(id);
        if reducers == 0 {
            job.end(
                JobState::Failed("a job needs at least one reducer".into()),
                Some(submitted),
                &mut out,
            );
        }
        self.jobs.insert(id, job);
        (id, out.into_actions())
    }

    fn is_live(&self, worker: NodeId, now_ms: u64) -> bool {
        self.workers.get(&worker).is_some_and(|w| {
            w.alive && now_ms.saturating_sub(w.last_seen_ms) <= self.config.worker_timeout_ms
        })
    }

    /// A fresh (non-backup) task of `job` for `worker`.
    fn pick_fresh(&self, job: &Job, worker: NodeId, now_ms: u64) -> Option<Pick> {
        let pick = |kind, index: usize| Pick {
            job: job.id,
            kind,
            index: index as u32,
            backup: false,
        };
        if !job.maps_done() {
            let idle = |m: &MapTask| m.done.is_none() && m.core.running.is_empty();
            if let Some(i) = job
                .maps
                .iter()
                .position(|m| idle(m) && m.split.replicas.contains(&worker))
            {
                return Some(pick(TaskKind::Map, i));
            }
            return job
                .maps
                .iter()
                .position(|m| {
                    idle(m)
                        && (now_ms.saturating_sub(m.core.idle_since_ms)
                            >= self.config.locality_wait_ms
                            || !m.split.replicas.iter().any(|r| self.is_live(*r, now_ms)))
                })
                .map(|i| pick(TaskKind::Map, i));
        }
        job.reduces
            .iter()
            .position(|r| r.state == ReduceState::Pending && r.core.running.is_empty())
            .map(|i| pick(TaskKind::Reduce, i))
    }

    /// A backup attempt of a straggling task of `job` for `worker`.
    fn pick_backup(&self, job: &Job, worker: NodeId, now_ms: u64) -> Option<Pick> {
        let maps_done = job.maps_done();
        let (kind, durations) = if maps_done {
            (TaskKind::Reduce, &job.reduce_durations)
        } else {
            (TaskKind::Map, &job.map_durations)
        };
        let threshold = median(durations)?
            .saturating_mul(u64::from(self.config.backup_factor))
            .max(self.config.backup_min_ms);
        let candidates: Vec<(usize, &TaskCore)> = if maps_done {
            job.reduces
                .iter()
                .enumerate()
                .filter(|(_, r)| r.state == ReduceState::Pending)
                .map(|(i, r)| (i, &r.core))
                .collect()
        } else {
            job.maps
                .iter()
                .enumerate()
                .filter(|(_, m)| m.done.is_none())
                .map(|(i, m)| (i, &m.core))
                .collect()
        };
        let mut best: Option<(u64, usize)> = None;
        for (i, core) in candidates {
            let [a] = core.running.as_slice() else {
                continue;
            };
            let elapsed = now_ms.saturating_sub(a.started_ms);
            if a.worker != worker && elapsed >= threshold && best.is_none_or(|(e, _)| elapsed > e) {
                best = Some((elapsed, i));
            }
        }
        best.map(|(_, i)| Pick {
            job: job.id,
            kind,
            index: i as u32,
            backup: true,
        })
    }

    /// What `worker` would be given next: fresh work of the oldest job that has some for it,
    /// else a backup attempt (oldest job first).
    fn find_work(&self, worker: NodeId, now_ms: u64) -> Option<Pick> {
        let running = || self.jobs.values().filter(|j| j.is_running());
        running()
            .find_map(|j| self.pick_fresh(j, worker, now_ms))
            .or_else(|| running().find_map(|j| self.pick_backup(j, worker, now_ms)))
    }

    /// Start an attempt of `pick` on `worker`.
    fn assign(&mut self, pick: Pick, worker: NodeId, now_ms: u64) -> Option<Assignment> {
        let workers = &self.workers;
        let job = self.jobs.get_mut(&pick.job)?;
        let attempt = job.core(pick.kind, pick.index)?.next_attempt;
        let (work, inputs) = match pick.kind {
            TaskKind::Map => {
                let m = job.maps.get(pick.index as usize)?;
                let work = TaskWork::Map {
                    split: m.split.clone(),
                    reducers: job.spec.reducers,
                };
                (work, Vec::new())
            }
            TaskKind::Reduce => {
                let mut refs = Vec::with_capacity(job.maps.len());
                for (i, m) in job.maps.iter().enumerate() {
                    let d = m.done.as_ref()?;
                    refs.push(MapOutputRef {
                        map_index: i as u32,
                        attempt: d.attempt,
                        worker: d.worker,
                        addr: workers
                            .get(&d.worker)
                            .map_or_else(|| d.addr.clone(), |w| w.addr.clone()),
                    });
                }
                let inputs = refs.iter().map(|r| r.attempt).collect();
                let work = TaskWork::Reduce {
                    partition: pick.index,
                    inputs: refs,
                    temp_path: temp_path(&job.spec.output, pick.index, attempt),
                };
                (work, inputs)
            }
        };
        let app = job.spec.app.clone();
        let core = job.core_mut(pick.kind, pick.index)?;
        core.next_attempt += 1;
        core.running.push(Attempt {
            attempt,
            worker,
            started_ms: now_ms,
            inputs,
        });
        match pick.kind {
            TaskKind::Map => job.events.map_attempts += 1,
            TaskKind::Reduce => job.events.reduce_attempts += 1,
        }
        if pick.backup {
            job.events.backup_attempts += 1;
        }
        Some(Assignment {
            task: TaskRef {
                job: pick.job,
                kind: pick.kind,
                index: pick.index,
                attempt,
            },
            app,
            work,
        })
    }

    /// A worker's poll (also its liveness signal). Attempts the scheduler thinks run on the
    /// worker but `running` omits have failed (the worker restarted or never got them); attempts
    /// `running` lists that are finished, unknown or of an ended job are cancelled. Returns up to
    /// `free_slots` assignments, and the jobs among `holding` whose map output can go.
    pub fn poll(
        &mut self,
        worker: NodeId,
        addr: &str,
        running: &[TaskRef],
        free_slots: u32,
        holding: &[JobId],
        now_ms: u64,
    ) -> (WorkerPollReply, Vec<Action>) {
        let mut out = Out::default();
        let mut reply = WorkerPollReply::default();
        let w = self.workers.entry(worker).or_insert_with(|| Worker {
            addr: String::new(),
            last_seen_ms: now_ms,
            alive: true,
        });
        addr.clone_into(&mut w.addr);
        w.last_seen_ms = w.last_seen_ms.max(now_ms);
        w.alive = true;

        let listed: BTreeSet<TaskRef> = running.iter().copied().collect();
        for job in self.jobs.values_mut().filter(|j| j.is_running()) {
            let id = job.id;
            let mut gone = 0;
            for (kind, index, core) in job.cores_mut() {
                gone += core.drop_where(now_ms, |a| {
                    a.worker == worker
                        && !listed.contains(&TaskRef {
                            job: id,
                            kind,
                            index,
                            attempt: a.attempt,
                        })
                });
            }
            if gone > 0 {
                job.events.failed_attempts += gone;
                out.persist(id);
            }
        }
        for t in running {
            let live = self
                .jobs
                .get(&t.job)
                .filter(|j| j.is_running())
                .and_then(|j| j.core(t.kind, t.index))
                .is_some_and(|c| c.is_running(t.attempt, worker));
            if !live && !reply.cancel.contains(t) {
                reply.cancel.push(*t);
            }
        }
        for j in holding {
            let keep = self.jobs.get(j).is_some_and(|j| j.is_running());
            if !keep && !reply.forget_jobs.contains(j) {
                reply.forget_jobs.push(*j);
            }
        }
        for _ in 0..free_slots {
            let Some(pick) = self.find_work(worker, now_ms) else {
                break;
            };
            let Some(a) = self.assign(pick, worker, now_ms) else {
                break;
            };
            out.persist(pick.job);
            reply.assignments.push(a);
        }
        (reply, out.into_actions())
    }

    /// A worker reports an attempt's outcome. Reports of unknown workers, jobs, tasks or
    /// attempts, and duplicates, are ignored (a finished reduce attempt whose output is not
    /// wanted gets an [`Action::Discard`]).
    pub fn report(
        &mut self,
        worker: NodeId,
        task: TaskRef,
        outcome: TaskOutcome,
        now_ms: u64,
    ) -> Vec<Action> {
        let mut out = Out::default();
        let Some(addr) = self.workers.get(&worker).map(|w| w.addr.clone()) else {
            return Vec::new();
        };
        let max = self.config.max_task_failures;
        let Some(job) = self.jobs.get_mut(&task.job) else {
            return Vec::new();
        };
        match (task.kind, outcome) {
            (
                TaskKind::Map,
                TaskOutcome::Done {
                    counters,
                    partition_bytes,
                },
            ) => {
                if job.is_running() {
                    job.map_done(
                        worker,
                        &addr,
                        task.index,
                        task.attempt,
                        counters,
                        partition_bytes,
                        now_ms,
                        &mut out,
                    );
                }
            }
            (TaskKind::Reduce, TaskOutcome::Done { counters, .. }) => {
                job.reduce_done(worker, task.index, task.attempt, counters, now_ms, &mut out);
            }
            (
                _,
                TaskOutcome::Failed {
                    error,
                    lost_map_output,
                },
            ) => {
                job.attempt_failed(worker, task, &error, lost_map_output, max, now_ms, &mut out);
            }
        }
        out.into_actions()
    }

    /// The runtime renamed reduce `reduce`'s attempt `attempt` into place.
    pub fn committed(
        &mut self,
        job: JobId,
        reduce: u32,
        attempt: u32,
        now_ms: u64,
        now: Timestamp,
    ) -> Vec<Action> {
        let _ = now_ms;
        let mut out = Out::default();
        let Some(j) = self.jobs.get_mut(&job).filter(|j| j.is_running()) else {
            return Vec::new();
        };
        let Some(r) = j.reduces.get_mut(reduce as usize) else {
            return Vec::new();
        };
        match r.state {
            ReduceState::Committing {
                attempt: a,
                counters,
            } if a == attempt => {
                r.state = ReduceState::Committed { attempt, counters };
            }
            _ => return Vec::new(),
        }
        out.persist(job);
        if j.reduces
            .iter()
            .all(|r| matches!(r.state, ReduceState::Committed { .. }))
        {
            j.end(JobState::Succeeded, Some(now), &mut out);
        }
        out.into_actions()
    }

    /// The rename of reduce `reduce`'s attempt `attempt` failed: the task runs again (this counts
    /// as one of its failures).
    pub fn commit_failed(
        &mut self,
        job: JobId,
        reduce: u32,
        attempt: u32,
        error: &str,
        now_ms: u64,
    ) -> Vec<Action> {
        let mut out = Out::default();
        let max = self.config.max_task_failures;
        let Some(j) = self.jobs.get_mut(&job).filter(|j| j.is_running()) else {
            return Vec::new();
        };
        let Some(r) = j.reduces.get_mut(reduce as usize) else {
            return Vec::new();
        };
        if !matches!(r.state, ReduceState::Committing { attempt: a, .. } if a == attempt) {
            return Vec::new();
        }
        r.state = ReduceState::Pending;
        r.core.idle_since_ms = now_ms;
        j.events.failed_attempts += 1;
        out.persist(job);
        out.effect(Action::Discard {
            path: temp_path(&j.spec.output, reduce, attempt),
        });
        let error = format!("committing attempt {attempt}: {error}");
        j.count_failure(TaskKind::Reduce, reduce, &error, max, &mut out);
        out.into_actions()
    }

    /// Time passes: workers silent for longer than `worker_timeout_ms` are lost, attempts
    /// running longer than `task_timeout_ms` fail, and ended jobs get their `finished` time.
    pub fn tick(&mut self, now_ms: u64, now: Timestamp) -> Vec<Action> {
        let mut out = Out::default();
        let timeout = self.config.worker_timeout_ms;
        let lost: Vec<NodeId> = self
            .workers
            .iter()
            .filter(|(_, w)| w.alive && now_ms.saturating_sub(w.last_seen_ms) > timeout)
            .map(|(id, _)| *id)
            .collect();
        for w in lost {
            if let Some(w) = self.workers.get_mut(&w) {
                w.alive = false;
            }
            for job in self.jobs.values_mut() {
                job.worker_lost(w, now_ms, &mut out);
            }
        }
        let (task_timeout, max) = (self.config.task_timeout_ms, self.config.max_task_failures);
        for job in self.jobs.values_mut().filter(|j| j.is_running()) {
            job.timeouts(now_ms, task_timeout, max, &mut out);
        }
        for job in self.jobs.values_mut() {
            if !job.is_running() && job.finished.is_none() {
                job.finished = Some(now);
                out.persist(job.id);
            }
        }
        out.into_actions()
    }

    pub fn status(&self, job: JobId) -> Option<JobStatus> {
        self.jobs.get(&job).map(Job::status)
    }

    /// Every job, oldest first.
    pub fn list(&self) -> Vec<JobStatus> {
        self.jobs.values().map(Job::status).collect()
    }

    pub fn job(&self, job: JobId) -> Option<&Job> {
        self.jobs.get(&job)
    }

    /// Drop an ended job (its id is not reused while this scheduler lives). Returns whether it
    /// was dropped; a running or unknown job is not.
    pub fn forget(&mut self, job: JobId) -> bool {
        if self.jobs.get(&job).is_some_and(|j| !j.is_running()) {
            self.jobs.remove(&job);
            true
        } else {
            false
        }
    }

    /// After a coordinator restart: re-add a persisted job (a job whose id is already known is
    /// ignored). Running attempts are dropped (their tasks become idle) and attempt numbers
    /// skip ahead by [`RESTORE_ATTEMPT_GAP`]; finished map tasks keep their output refs (their
    /// workers count as alive from now, so a worker that never returns is lost after
    /// `worker_timeout_ms`; a reducer that cannot fetch reports `lost_map_output`); a reduce
    /// whose commit was not confirmed gets its [`Action::Commit`] again.
    pub fn restore(&mut self, mut job: Job, now_ms: u64) -> Vec<Action> {
        let mut out = Out::default();
        if self.jobs.contains_key(&job.id) {
            return Vec::new();
        }
        self.next_id = self.next_id.max(job.id.0.saturating_add(1));
        let id = job.id;
        let running = job.is_running();
        if running {
            out.persist(id);
            for (_, _, core) in job.cores_mut() {
                core.running.clear();
                core.idle_since_ms = now_ms;
                core.next_attempt = core.next_attempt.saturating_add(RESTORE_ATTEMPT_GAP);
            }
            for m in &job.maps {
                if let Some(d) = &m.done {
                    self.workers.entry(d.worker).or_insert_with(|| Worker {
                        addr: d.addr.clone(),
                        last_seen_ms: now_ms,
                        alive: true,
                    });
                }
            }
            for (i, r) in job.reduces.iter().enumerate() {
                if let ReduceState::Committing { attempt, .. } = r.state {
                    out.effect(Action::Commit {
                        job: id,
                        reduce: i as u32,
                        attempt,
                        temp_path: temp_path(&job.spec.output, i as u32, attempt),
                        final_path: final_path(&job.spec.output, i as u32),
                    });
                }
            }
        }
        self.jobs.insert(id, job);
        out.into_actions()
    }

    /// Would a poll by `worker` now get an assignment (given a free slot)? Lets the runtime hold
    /// a poll until there is work. Time alone can make work appear (delay scheduling, backups),
    /// so a held poll should look again now and then.
    pub fn has_work_for(&self, worker: NodeId, now_ms: u64) -> bool {
        self.find_work(worker, now_ms).is_some()
    }

    /// Check the state's consistency; panics with a description if it is broken. For tests.
    pub fn check_invariants(&self) {
        for (id, job) in &self.jobs {
            assert_eq!(*id, job.id, "job filed under the wrong id");
            assert!(job.id.0 < self.next_id, "job {id}: id not below next_id");
            assert_eq!(
                job.reduces.len(),
                job.spec.reducers as usize,
                "job {id}: reduce count"
            );
            let max = self.config.max_task_failures;
            let ended = !job.is_running();
            let mut cores: Vec<(TaskKind, usize, &TaskCore)> = Vec::new();
            for (i, m) in job.maps.iter().enumerate() {
                cores.push((TaskKind::Map, i, &m.core));
                if let Some(d) = &m.done {
                    assert!(
                        m.core.running.is_empty(),
                        "job {id}: map {i} done and running"
                    );
                    assert!(d.attempt < m.core.next_attempt, "job {id}: map {i} winner");
                    assert_eq!(d.partition_bytes.len(), job.reduces.len());
                    assert!(
                        m.counters.is_some(),
                        "job {id}: map {i} done without counters"
                    );
                }
            }
            for (i, r) in job.reduces.iter().enumerate() {
                cores.push((TaskKind::Reduce, i, &r.core));
                if let Some(w) = r.winner() {
                    assert!(
                        r.core.running.is_empty(),
                        "job {id}: reduce {i} has output and runs"
                    );
                    assert!(w < r.core.next_attempt, "job {id}: reduce {i} winner");
                }
            }
            for (kind, i, core) in cores {
                let mut seen = BTreeSet::new();
                for a in &core.running {
                    assert!(
                        seen.insert(a.attempt),
                        "job {id}: {kind:?} {i}: attempt twice"
                    );
                    assert!(a.attempt < core.next_attempt, "job {id}: {kind:?} {i}");
                    if kind == TaskKind::Reduce {
                        assert_eq!(
                            a.inputs.len(),
                            job.maps.len(),
                            "job {id}: reduce {i} inputs"
                        );
                    }
                }
                assert!(
                    !ended || core.running.is_empty(),
                    "job {id}: ended with {kind:?} {i} running"
                );
                if !ended {
                    assert!(
                        core.failures <= max,
                        "job {id}: {kind:?} {i} failed too often"
                    );
                }
            }
            let c = job.events;
            assert!(c.backup_attempts <= c.map_attempts + c.reduce_attempts);
            assert!(c.failed_attempts <= c.map_attempts + c.reduce_attempts);
            match &job.state {
                JobState::Running => assert!(job.finished.is_none()),
                JobState::Succeeded => {
                    assert!(job.finished.is_some(), "job {id}: succeeded without a time");
                    assert!(
                        job.reduces
                            .iter()
                            .all(|r| matches!(r.state, ReduceState::Committed { .. })),
                        "job {id}: succeeded with a reduce not committed"
                    );
                }
                JobState::Failed(_) => {}
            }
            let s = job.status();
            assert!(s.maps.done <= s.maps.total && s.reduces.done <= s.reduces.total);
            assert!(s.maps.bytes_done <= s.maps.bytes_total);
            assert!(s.reduces.bytes_done <= s.reduces.bytes_total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use quarry_proto::job::AppSpec;
    use quarry_proto::{ChunkHandle, ChunkVersion, InodeId};
    use std::collections::VecDeque;

    const OUT: &str = "/out";

    fn node(w: u64) -> NodeId {
        NodeId(w)
    }

    fn addr(w: u64) -> String {
        format!("10.0.0.{w}:7000")
    }

    fn ts(ms: u64) -> Timestamp {
        Timestamp::from_unix_nanos(i128::from(ms) * 1_000_000 + 1_700_000_000_000_000_000)
    }

    fn spec(reducers: u32) -> JobSpec {
        JobSpec {
            app: AppSpec::WordCount,
            inputs: vec!["/in".into()],
            output: OUT.into(),
            reducers,
        }
    }

    fn split(i: u64, replicas: &[u64]) -> Split {
        Split {
            path: "/in/a".into(),
            inode: InodeId(7),
            file_size: 1 << 20,
            chunk_index: i,
            handle: ChunkHandle(100 + i),
            version: ChunkVersion(1),
            offset: i * 100,
            len: 100,
            replicas: replicas.iter().map(|r| NodeId(*r)).collect(),
        }
    }

    fn map_done(reducers: usize, local: bool) -> TaskOutcome {
        TaskOutcome::Done {
            counters: TaskCounters {
                input_bytes: 100,
                input_records: 10,
                output_records: 20,
                output_bytes: 200,
                shuffle_bytes: 0,
                data_local: local,
            },
            partition_bytes: vec![10; reducers],
        }
    }

    fn reduce_done() -> TaskOutcome {
        TaskOutcome::Done {
            counters: TaskCounters {
                input_bytes: 0,
                input_records: 0,
                output_records: 5,
                output_bytes: 50,
                shuffle_bytes: 30,
                data_local: false,
            },
            partition_bytes: Vec::new(),
        }
    }

    fn failed(error: &str) -> TaskOutcome {
        TaskOutcome::Failed {
            error: error.into(),
            lost_map_output: None,
        }
    }

    fn lost(m: u32) -> TaskOutcome {
        TaskOutcome::Failed {
            error: "fetch failed".into(),
            lost_map_output: Some(m),
        }
    }

    fn tr(job: JobId, kind: TaskKind, index: u32, attempt: u32) -> TaskRef {
        TaskRef {
            job,
            kind,
            index,
            attempt,
        }
    }

    fn persist(job: JobId) -> Action {
        Action::Persist { job }
    }

    fn commit(job: JobId, reduce: u32, attempt: u32) -> Action {
        Action::Commit {
            job,
            reduce,
            attempt,
            temp_path: temp_path(OUT, reduce, attempt),
            final_path: final_path(OUT, reduce),
        }
    }

    fn discard(reduce: u32, attempt: u32) -> Action {
        Action::Discard {
            path: temp_path(OUT, reduce, attempt),
        }
    }

    /// A scheduler, a clock, and what each worker runs (kept like a real worker would).
    struct T {
        s: Scheduler,
        now: u64,
        running: BTreeMap<u64, Vec<TaskRef>>,
    }

    impl T {
        fn new() -> T {
            T::with(SchedulerConfig::default())
        }

        fn with(config: SchedulerConfig) -> T {
            T {
                s: Scheduler::new(config),
                now: 1_000,
                running: BTreeMap::new(),
            }
        }

        fn submit(&mut self, splits: Vec<Split>, reducers: u32) -> JobId {
            let (id, actions) = self
                .s
                .submit(spec(reducers), splits, ts(self.now), self.now);
            assert_eq!(actions, vec![persist(id)]);
            self.s.check_invariants();
            id
        }

        fn poll_full(&mut self, w: u64, slots: u32) -> (WorkerPollReply, Vec<Action>) {
            let running = self.running.get(&w).cloned().unwrap_or_default();
            let (reply, actions) = self
                .s
                .poll(node(w), &addr(w), &running, slots, &[], self.now);
            let mine = self.running.entry(w).or_default();
            mine.retain(|t| !reply.cancel.contains(t));
            mine.extend(reply.assignments.iter().map(|a| a.task));
            self.s.check_invariants();
            (reply, actions)
        }

        /// Poll with `slots` free slots; the assignments.
        fn poll(&mut self, w: u64, slots: u32) -> Vec<Assignment> {
            self.poll_full(w, slots).0.assignments
        }

        fn poll_tasks(&mut self, w: u64, slots: u32) -> Vec<TaskRef> {
            self.poll(w, slots).into_iter().map(|a| a.task).collect()
        }

        fn report(&mut self, w: u64, task: TaskRef, outcome: TaskOutcome) -> Vec<Action> {
            if let Some(v) = self.running.get_mut(&w) {
                v.retain(|t| *t != task);
            }
            let actions = self.s.report(node(w), task, outcome, self.now);
            self.s.check_invariants();
            actions
        }

        fn committed(&mut self, job: JobId, r: u32, a: u32) -> Vec<Action> {
            let actions = self.s.committed(job, r, a, self.now, ts(self.now));
            self.s.check_invariants();
            actions
        }

        fn tick(&mut self) -> Vec<Action> {
            let actions = self.s.tick(self.now, ts(self.now));
            self.s.check_invariants();
            actions
        }

        fn job(&self, id: JobId) -> &Job {
            self.s.job(id).unwrap()
        }

        fn state(&self, id: JobId) -> JobState {
            self.job(id).state.clone()
        }
    }

    fn map_ref(job: JobId, index: u32, attempt: u32) -> TaskRef {
        tr(job, TaskKind::Map, index, attempt)
    }

    fn red_ref(job: JobId, index: u32, attempt: u32) -> TaskRef {
        tr(job, TaskKind::Reduce, index, attempt)
    }

    #[test]
    fn paths_are_formatted() {
        assert_eq!(
            temp_path("/out", 3, 2),
            "/out/_temporary/part-00003.attempt-2"
        );
        assert_eq!(
            temp_path("/out/", 12, 0),
            "/out/_temporary/part-00012.attempt-0"
        );
        assert_eq!(final_path("/out", 3), "/out/part-00003");
        assert_eq!(final_path("/a/b/", 100_000), "/a/b/part-100000");
    }

    #[test]
    fn default_config() {
        let c = SchedulerConfig::default();
        assert_eq!(c.worker_timeout_ms, 10_000);
        assert_eq!(c.locality_wait_ms, 2_000);
        assert_eq!(c.backup_min_ms, 5_000);
        assert_eq!(c.backup_factor, 2);
        assert_eq!(c.task_timeout_ms, 600_000);
        assert_eq!(c.max_task_failures, 4);
    }

    #[test]
    fn submit_numbers_jobs_from_one() {
        let mut t = T::new();
        assert_eq!(t.submit(vec![split(0, &[1])], 1), JobId(1));
        assert_eq!(t.submit(vec![], 1), JobId(2));
        let ids: Vec<JobId> = t.s.list().iter().map(|s| s.id).collect();
        assert_eq!(ids, vec![JobId(1), JobId(2)]);
        let st = t.s.status(JobId(1)).unwrap();
        assert_eq!(st.state, JobState::Running);
        assert_eq!(st.maps.total, 1);
        assert_eq!(st.maps.bytes_total, 100);
        assert_eq!(st.reduces.total, 1);
        assert_eq!(st.submitted, ts(1_000));
        assert!(t.s.status(JobId(3)).is_none());
    }

    #[test]
    fn zero_reducers_fail_at_once() {
        let mut t = T::new();
        let (id, actions) = t.s.submit(spec(0), vec![split(0, &[1])], ts(5), 5);
        assert_eq!(actions, vec![persist(id), Action::Finished { job: id }]);
        assert!(matches!(t.state(id), JobState::Failed(_)));
        assert_eq!(t.job(id).finished(), Some(ts(5)));
        assert!(t.poll(1, 4).is_empty());
        t.s.check_invariants();
    }

    #[test]
    fn happy_path_three_workers_mostly_local() {
        let mut t = T::new();
        // 12 splits, each on two of the three workers.
        let splits: Vec<Split> = (0..12)
            .map(|i| split(i, &[i % 3 + 1, (i + 1) % 3 + 1]))
            .collect();
        let job = t.submit(splits.clone(), 3);
        let mut finished = 0;
        let mut commits = 0;
        for _round in 0..50 {
            for w in 1..=3 {
                for a in t.poll(w, 2) {
                    let local = match &a.work {
                        TaskWork::Map { split, reducers } => {
                            assert_eq!(*reducers, 3);
                            split.replicas.contains(&node(w))
                        }
                        TaskWork::Reduce { inputs, .. } => {
                            assert_eq!(inputs.len(), 12);
                            false
                        }
                    };
                    let outcome = match a.task.kind {
                        TaskKind::Map => map_done(3, local),
                        TaskKind::Reduce => reduce_done(),
                    };
                    for act in t.report(w, a.task, outcome) {
                        match act {
                            Action::Commit {
                                job: j,
                                reduce,
                                attempt,
                                ..
                            } => {
                                commits += 1;
                                for act in t.committed(j, reduce, attempt) {
                                    if let Action::Finished { .. } = act {
                                        finished += 1;
                                    }
                                }
                            }
                            Action::Persist { .. } => {}
                            other => panic!("unexpected {other:?}"),
                        }
                    }
                }
            }
            t.now += 100;
        }
        assert_eq!(t.state(job), JobState::Succeeded);
        assert_eq!((commits, finished), (3, 1));
        let st = t.s.status(job).unwrap();
        let c = st.counters;
        assert!(c.data_local_maps * 10 >= 12 * 9, "{c:?}");
        assert_eq!(c.data_local_maps + c.remote_maps, 12);
        assert_eq!((c.map_attempts, c.reduce_attempts), (12, 3));
        assert_eq!(
            (c.backup_attempts, c.failed_attempts, c.lost_workers),
            (0, 0, 0)
        );
        assert_eq!(c.input_bytes, 1200);
        assert_eq!(c.input_records, 120);
        assert_eq!(c.map_output_records, 240);
        assert_eq!(c.shuffle_bytes, 90);
        assert_eq!(c.output_records, 15);
        assert_eq!(c.output_bytes, 150);
        assert_eq!(
            st.maps,
            PhaseProgress {
                total: 12,
                done: 12,
                running: 0,
                bytes_done: 1200,
                bytes_total: 1200
            }
        );
        assert_eq!(
            (st.reduces.total, st.reduces.done, st.reduces.running),
            (3, 3, 0)
        );
        assert_eq!(
            st.outputs,
            vec!["/out/part-00000", "/out/part-00001", "/out/part-00002"]
        );
        assert!(st.finished.is_some());
    }

    #[test]
    fn local_map_goes_first() {
        let mut t = T::new();
        let job = t.submit(vec![split(0, &[1]), split(1, &[2]), split(2, &[2])], 1);
        t.poll(1, 0);
        assert_eq!(t.poll_tasks(2, 1), vec![map_ref(job, 1, 0)]);
        assert_eq!(t.poll_tasks(2, 1), vec![map_ref(job, 2, 0)]);
        // Map 0 waits for worker 1 (live, holds it) for the locality wait.
        assert!(t.poll_tasks(2, 1).is_empty());
        assert!(!t.s.has_work_for(node(2), t.now));
        assert!(t.s.has_work_for(node(1), t.now));
        t.now += 1_999;
        assert!(t.poll_tasks(2, 1).is_empty());
        t.now += 1;
        assert!(t.s.has_work_for(node(2), t.now));
        assert_eq!(t.poll_tasks(2, 1), vec![map_ref(job, 0, 0)]);
    }

    #[test]
    fn non_local_map_goes_at_once_without_a_live_replica_holder() {
        let mut t = T::new();
        let job = t.submit(vec![split(0, &[9]), split(1, &[1])], 1);
        // Worker 9 never polled; worker 1 never polled either.
        assert_eq!(
            t.poll_tasks(2, 2),
            vec![map_ref(job, 0, 0), map_ref(job, 1, 0)]
        );
    }

    #[test]
    fn locality_wait_zero_never_waits() {
        let mut t = T::with(SchedulerConfig {
            locality_wait_ms: 0,
            ..SchedulerConfig::default()
        });
        let job = t.submit(vec![split(0, &[1])], 1);
        t.poll(1, 0);
        assert_eq!(t.poll_tasks(2, 1), vec![map_ref(job, 0, 0)]);
    }

    #[test]
    fn reduces_wait_for_every_map_and_carry_current_refs() {
        let mut t = T::new();
        let job = t.submit(vec![split(0, &[1]), split(1, &[2])], 2);
        assert_eq!(t.poll_tasks(1, 1), vec![map_ref(job, 0, 0)]);
        assert_eq!(t.poll_tasks(2, 1), vec![map_ref(job, 1, 0)]);
        assert_eq!(
            t.report(1, map_ref(job, 0, 0), map_done(2, true)),
            vec![persist(job)]
        );
        // Map 1 still runs: no reduce yet.
        assert!(t.poll(3, 2).is_empty());
        assert!(!t.s.has_work_for(node(3), t.now));
        assert_eq!(
            t.report(2, map_ref(job, 1, 0), map_done(2, true)),
            vec![persist(job)]
        );
        let st = t.s.status(job).unwrap();
        assert_eq!(st.reduces.bytes_total, 40);
        // Worker 1 moved.
        let (_, _) = t.s.poll(node(1), "10.9.9.9:1", &[], 0, &[], t.now);
        let a = t.poll(3, 1);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].task, red_ref(job, 0, 0));
        assert_eq!(a[0].app, AppSpec::WordCount);
        assert_eq!(
            a[0].work,
            TaskWork::Reduce {
                partition: 0,
                inputs: vec![
                    MapOutputRef {
                        map_index: 0,
                        attempt: 0,
                        worker: node(1),
                        addr: "10.9.9.9:1".into()
                    },
                    MapOutputRef {
                        map_index: 1,
                        attempt: 0,
                        worker: node(2),
                        addr: addr(2)
                    },
                ],
                temp_path: "/out/_temporary/part-00000.attempt-0".into(),
            }
        );
    }

    #[test]
    fn worker_lost_mid_map() {
        let mut t = T::new();
        let job = t.submit(vec![split(0, &[1]), split(1, &[1]), split(2, &[2])], 1);
        assert_eq!(t.poll_tasks(1, 1), vec![map_ref(job, 0, 0)]);
        assert_eq!(
            t.report(1, map_ref(job, 0, 0), map_done(1, true)),
            vec![persist(job)]
        );
        assert_eq!(t.poll_tasks(1, 1), vec![map_ref(job, 1, 0)]);
        assert_eq!(t.poll_tasks(2, 1), vec![map_ref(job, 2, 0)]);
        assert_eq!(
            t.report(2, map_ref(job, 2, 0), map_done(1, true)),
            vec![persist(job)]
        );
        // Worker 1 falls silent; worker 2 keeps polling (busy: no slots).
        t.now += 10_000;
        t.poll(2, 0);
        assert!(t.tick().is_empty(), "exactly the timeout is not yet lost");
        t.now += 1;
        assert_eq!(t.tick(), vec![persist(job)]);
        let c = t.job(job).counters();
        assert_eq!((c.lost_workers, c.failed_attempts), (1, 1));
        let st = t.s.status(job).unwrap();
        assert_eq!((st.maps.done, st.maps.running), (1, 0));
        // Both of worker 1's maps run again, on worker 2 at once (no live replica holder).
        assert_eq!(
            t.poll_tasks(2, 2),
            vec![map_ref(job, 0, 1), map_ref(job, 1, 1)]
        );
        assert!(
            t.poll(3, 1).is_empty(),
            "no reduce before the maps are done again"
        );
        // Worker 1 comes back listing its old attempt: cancelled; it is alive again.
        let (reply, actions) =
            t.s.poll(node(1), &addr(1), &[map_ref(job, 1, 0)], 0, &[job], t.now);
        assert_eq!(reply.cancel, vec![map_ref(job, 1, 0)]);
        assert!(reply.forget_jobs.is_empty());
        assert!(actions.is_empty());
        assert!(t.s.is_live(node(1), t.now));
        // A late report of the lost attempt changes nothing.
        assert!(t
            .report(1, map_ref(job, 1, 0), map_done(1, true))
            .is_empty());
        assert_eq!(
            t.report(2, map_ref(job, 0, 1), map_done(1, false)),
            vec![persist(job)]
        );
        assert_eq!(
            t.report(2, map_ref(job, 1, 1), map_done(1, false)),
            vec![persist(job)]
        );
        let a = t.poll(3, 1);
        let TaskWork::Reduce { inputs, .. } = &a[0].work else {
            panic!("{a:?}")
        };
        let used: Vec<(u32, NodeId)> = inputs.iter().map(|r| (r.attempt, r.worker)).collect();
        assert_eq!(used, vec![(1, node(2)), (1, node(2)), (0, node(2))]);
        assert_eq!(t.job(job).counters().remote_maps, 2);
    }

    #[test]
    fn worker_lost_during_reduce() {
        let mut t = T::new();
        let job = t.submit(vec![split(0, &[1]), split(1, &[2])], 2);
        assert_eq!(t.poll_tasks(1, 1), vec![map_ref(job, 0, 0)]);
        assert_eq!(t.poll_tasks(2, 1), vec![map_ref(job, 1, 0)]);
        t.report(1, map_ref(job, 0, 0), map_done(2, true));
        t.report(2, map_ref(job, 1, 0), map_done(2, true));
        assert_eq!(t.poll_tasks(1, 1), vec![red_ref(job, 0, 0)]);
        assert_eq!(t.poll_tasks(2, 1), vec![red_ref(job, 1, 0)]);
        t.now += 10_001;
        t.poll(2, 0);
        assert_eq!(t.tick(), vec![persist(job)]);
        // Reduce 0 is idle again, and map 0 (on worker 1) must run again first.
        let st = t.s.status(job).unwrap();
        assert_eq!((st.maps.done, st.reduces.running), (1, 1));
        assert_eq!(t.poll_tasks(3, 2), vec![map_ref(job, 0, 1)]);
        assert_eq!(
            t.report(3, map_ref(job, 0, 1), map_done(2, false)),
            vec![persist(job)]
        );
        assert_eq!(t.poll_tasks(3, 1), vec![red_ref(job, 0, 1)]);
        assert_eq!(
            t.report(3, red_ref(job, 0, 1), reduce_done()),
            vec![persist(job), commit(job, 0, 1)]
        );
        assert_eq!(
            t.report(2, red_ref(job, 1, 0), reduce_done()),
            vec![persist(job), commit(job, 1, 0)]
        );
        assert_eq!(t.committed(job, 0, 1), vec![persist(job)]);
        assert_eq!(
            t.committed(job, 1, 0),
            vec![persist(job), Action::Finished { job }]
        );
        let c = t.job(job).counters();
        assert_eq!(
            (
                c.lost_workers,
                c.failed_attempts,
                c.map_attempts,
                c.reduce_attempts
            ),
            (1, 1, 3, 3)
        );
    }

    #[test]
    fn lost_worker_output_kept_once_every_reduce_has_output() {
        let mut t = T::new();
        let job = t.submit(vec![split(0, &[1])], 1);
        t.poll(1, 1);
        t.report(1, map_ref(job, 0, 0), map_done(1, true));
        assert_eq!(t.poll_tasks(2, 1), vec![red_ref(job, 0, 0)]);
        assert_eq!(
            t.report(2, red_ref(job, 0, 0), reduce_done()),
            vec![persist(job), commit(job, 0, 0)]
        );
        t.now += 10_001;
        t.poll(2, 0);
        assert!(t.tick().is_empty());
        assert_eq!(t.s.status(job).unwrap().maps.done, 1);
        assert_eq!(t.job(job).counters().lost_workers, 0);
    }

    #[test]
    fn late_reduce_done_of_a_lost_attempt_is_discarded() {
        let mut t = T::new();
        let job = reduce_phase(&mut t);
        t.now += 10_001;
        t.poll(2, 0);
        assert_eq!(t.tick(), vec![persist(job)]);
        // Worker 1 was lost with reduce 0's attempt 0; it comes back and reports it done.
        assert_eq!(
            t.report(1, red_ref(job, 0, 0), reduce_done()),
            vec![discard(0, 0)]
        );
        assert_eq!(t.s.status(job).unwrap().reduces.done, 0);
        // Map 0 (on worker 1) runs again before reduce 0 runs again.
        assert_eq!(t.poll_tasks(1, 2), vec![map_ref(job, 0, 1)]);
    }

    #[test]
    fn stale_and_duplicate_reports_are_ignored() {
        let mut t = T::new();
        let job = t.submit(vec![split(0, &[1]), split(1, &[1])], 1);
        assert_eq!(
            t.poll_tasks(1, 2),
            vec![map_ref(job, 0, 0), map_ref(job, 1, 0)]
        );
        t.poll(2, 0);
        let before = t.job(job).clone();
        // Unknown worker, wrong worker, unknown job, index, attempt, kind.
        assert!(t
            .s
            .report(node(77), map_ref(job, 0, 0), map_done(1, true), t.now)
            .is_empty());
        assert!(t
            .report(2, map_ref(job, 0, 0), map_done(1, true))
            .is_empty());
        assert!(t
            .report(1, map_ref(JobId(9), 0, 0), map_done(1, true))
            .is_empty());
        assert!(t
            .report(1, map_ref(job, 5, 0), map_done(1, true))
            .is_empty());
        assert!(t
            .report(1, map_ref(job, 0, 3), map_done(1, true))
            .is_empty());
        assert!(t.report(1, red_ref(job, 0, 0), reduce_done()).is_empty());
        assert!(t.report(1, red_ref(job, 4, 0), failed("x")).is_empty());
        assert_eq!(*t.job(job), before);
        // The real report, then duplicates of it and a late failure.
        assert_eq!(
            t.report(1, map_ref(job, 0, 0), map_done(1, true)),
            vec![persist(job)]
        );
        assert!(t
            .report(1, map_ref(job, 0, 0), map_done(1, true))
            .is_empty());
        assert!(t.report(1, map_ref(job, 0, 0), failed("late")).is_empty());
        assert_eq!(
            t.report(1, map_ref(job, 1, 0), map_done(1, true)),
            vec![persist(job)]
        );
        assert_eq!(t.poll_tasks(1, 1), vec![red_ref(job, 0, 0)]);
        assert_eq!(
            t.report(1, red_ref(job, 0, 0), reduce_done()),
            vec![persist(job), commit(job, 0, 0)]
        );
        // A duplicate Done of the committing attempt: nothing (above all, no Discard).
        assert!(t.report(1, red_ref(job, 0, 0), reduce_done()).is_empty());
        assert!(t.report(1, red_ref(job, 0, 0), failed("late")).is_empty());
        assert!(t.s.commit_failed(job, 0, 7, "no", t.now).is_empty());
        assert!(t.committed(job, 0, 7).is_empty());
        assert!(t.committed(JobId(9), 0, 0).is_empty());
        assert!(t.committed(job, 3, 0).is_empty());
        assert_eq!(
            t.committed(job, 0, 0),
            vec![persist(job), Action::Finished { job }]
        );
        assert!(t.committed(job, 0, 0).is_empty());
        assert!(t.report(1, red_ref(job, 0, 0), reduce_done()).is_empty());
        assert_eq!(t.job(job).counters().map_attempts, 2);
    }

    #[test]
    fn poll_omitting_an_attempt_fails_it_without_counting() {
        let mut t = T::new();
        let job = t.submit(vec![split(0, &[1])], 1);
        assert_eq!(t.poll_tasks(1, 1), vec![map_ref(job, 0, 0)]);
        // The worker restarted: its poll lists nothing.
        let (reply, actions) = t.s.poll(node(1), &addr(1), &[], 0, &[], t.now);
        assert_eq!(reply, WorkerPollReply::default());
        assert_eq!(actions, vec![persist(job)]);
        assert_eq!(t.job(job).maps[0].core.failures, 0);
        assert_eq!(t.job(job).counters().failed_attempts, 1);
        let (reply, actions) = t.s.poll(node(1), &addr(1), &[], 1, &[], t.now);
        assert_eq!(reply.assignments[0].task, map_ref(job, 0, 1));
        assert_eq!(actions, vec![persist(job)]);
        t.s.check_invariants();
    }

    #[test]
    fn poll_cancels_and_forgets() {
        let mut t = T::new();
        let done = t.submit(vec![], 1);
        let job = t.submit(vec![split(0, &[1]), split(1, &[1])], 1);
        assert_eq!(t.poll_tasks(2, 1), vec![red_ref(done, 0, 0)]);
        t.report(2, red_ref(done, 0, 0), reduce_done());
        t.committed(done, 0, 0);
        assert_eq!(t.state(done), JobState::Succeeded);
        assert_eq!(
            t.poll_tasks(1, 2),
            vec![map_ref(job, 0, 0), map_ref(job, 1, 0)]
        );
        t.report(1, map_ref(job, 0, 0), map_done(1, true));
        let listed = [
            map_ref(job, 0, 0),       // finished
            map_ref(job, 1, 0),       // runs on worker 1, not 2
            map_ref(JobId(42), 0, 0), // unknown job
            red_ref(done, 0, 0),      // ended job
        ];
        let (reply, actions) = t.s.poll(
            node(2),
            &addr(2),
            &listed,
            0,
            &[job, done, JobId(42), done],
            t.now,
        );
        assert_eq!(reply.cancel, listed.to_vec());
        assert_eq!(reply.forget_jobs, vec![done, JobId(42)]);
        assert!(reply.assignments.is_empty());
        assert!(actions.is_empty());
        // Worker 1 lists its running attempt: kept.
        let (reply, actions) =
            t.s.poll(node(1), &addr(1), &[map_ref(job, 1, 0)], 0, &[job], t.now);
        assert_eq!(reply, WorkerPollReply::default());
        assert!(actions.is_empty());
    }

    /// Maps done (2 maps), two reduces running: reduce 0 on worker 1, reduce 1 on worker 2.
    fn reduce_phase(t: &mut T) -> JobId {
        let job = t.submit(vec![split(0, &[1]), split(1, &[2])], 2);
        t.poll(1, 1);
        t.poll(2, 1);
        t.report(1, map_ref(job, 0, 0), map_done(2, true));
        t.report(2, map_ref(job, 1, 0), map_done(2, true));
        t.now += 100;
        assert_eq!(t.poll_tasks(1, 1), vec![red_ref(job, 0, 0)]);
        assert_eq!(t.poll_tasks(2, 1), vec![red_ref(job, 1, 0)]);
        job
    }

    #[test]
    fn backup_for_straggler_and_loser_discarded() {
        let mut t = T::new();
        let job = reduce_phase(&mut t);
        let start = t.now;
        t.now += 1_000;
        assert_eq!(
            t.report(1, red_ref(job, 0, 0), reduce_done()),
            vec![persist(job), commit(job, 0, 0)]
        );
        assert_eq!(t.committed(job, 0, 0), vec![persist(job)]);
        // Median 1 s, x2 = 2 s, but at least backup_min_ms = 5 s.
        t.now = start + 4_999;
        t.poll(1, 0);
        t.poll(2, 0);
        assert!(t.poll(3, 1).is_empty());
        assert!(!t.s.has_work_for(node(3), t.now));
        assert!(
            !t.s.has_work_for(node(2), t.now + 1),
            "never a backup on the same worker"
        );
        t.now += 1;
        assert!(t.s.has_work_for(node(3), t.now));
        let a = t.poll(3, 2);
        assert_eq!(a.len(), 1, "one backup per task");
        assert_eq!(a[0].task, red_ref(job, 1, 1));
        assert!(
            matches!(&a[0].work, TaskWork::Reduce { temp_path: p, .. } if *p == temp_path(OUT, 1, 1))
        );
        assert_eq!(t.job(job).counters().backup_attempts, 1);
        assert_eq!(t.s.status(job).unwrap().reduces.running, 1);
        assert!(t.poll(4, 1).is_empty(), "two attempts run: no third");
        // The backup wins; the straggler's output is discarded when it finishes.
        assert_eq!(
            t.report(3, red_ref(job, 1, 1), reduce_done()),
            vec![persist(job), commit(job, 1, 1)]
        );
        let (reply, _) = t.poll_full(2, 0);
        assert_eq!(reply.cancel, vec![red_ref(job, 1, 0)]);
        assert_eq!(
            t.report(2, red_ref(job, 1, 0), reduce_done()),
            vec![discard(1, 0)]
        );
        assert_eq!(
            t.committed(job, 1, 1),
            vec![persist(job), Action::Finished { job }]
        );
        assert_eq!(
            t.report(2, red_ref(job, 1, 0), reduce_done()),
            vec![discard(1, 0)]
        );
        let c = t.job(job).counters();
        assert_eq!(
            (c.reduce_attempts, c.backup_attempts, c.shuffle_bytes),
            (3, 1, 60)
        );
    }

    #[test]
    fn map_backup_first_done_wins() {
        let mut t = T::with(SchedulerConfig {
            backup_min_ms: 0,
            ..SchedulerConfig::default()
        });
        let job = t.submit(vec![split(0, &[1]), split(1, &[2])], 1);
        assert!(t.poll(3, 0).is_empty());
        assert_eq!(t.poll_tasks(1, 1), vec![map_ref(job, 0, 0)]);
        assert_eq!(t.poll_tasks(2, 1), vec![map_ref(job, 1, 0)]);
        // No backup before a map finished.
        t.now += 10;
        assert!(t.poll(3, 1).is_empty());
        t.report(1, map_ref(job, 0, 0), map_done(1, true));
        // Median 10 ms x 2 = 20 ms; map 1 has run 10 ms.
        t.now += 9;
        assert!(t.poll(3, 1).is_empty());
        t.now += 1;
        assert_eq!(t.poll_tasks(3, 1), vec![map_ref(job, 1, 1)]);
        assert_eq!(
            t.report(3, map_ref(job, 1, 1), map_done(1, false)),
            vec![persist(job)]
        );
        assert!(t
            .report(2, map_ref(job, 1, 0), map_done(1, true))
            .is_empty());
        let a = t.poll(4, 1);
        let TaskWork::Reduce { inputs, .. } = &a[0].work else {
            panic!()
        };
        assert_eq!((inputs[1].attempt, inputs[1].worker), (1, node(3)));
        let c = t.job(job).counters();
        assert_eq!(
            (
                c.data_local_maps,
                c.remote_maps,
                c.map_attempts,
                c.backup_attempts
            ),
            (1, 1, 3, 1)
        );
    }

    #[test]
    fn exactly_one_commit_per_reduce() {
        let mut t = T::with(SchedulerConfig {
            backup_min_ms: 0,
            ..SchedulerConfig::default()
        });
        let job = reduce_phase(&mut t);
        t.now += 10;
        t.report(1, red_ref(job, 0, 0), reduce_done());
        t.now += 100;
        assert_eq!(t.poll_tasks(3, 1), vec![red_ref(job, 1, 1)]);
        let mut commits = Vec::new();
        for (w, a) in [(2, 0), (3, 1), (2, 0), (3, 1)] {
            for act in t.report(w, red_ref(job, 1, a), reduce_done()) {
                if let Action::Commit { .. } = act {
                    commits.push(act);
                }
            }
        }
        assert_eq!(commits, vec![commit(job, 1, 0)]);
    }

    #[test]
    fn job_not_finished_until_all_commits_confirmed() {
        let mut t = T::new();
        let job = reduce_phase(&mut t);
        assert_eq!(
            t.report(1, red_ref(job, 0, 0), reduce_done()),
            vec![persist(job), commit(job, 0, 0)]
        );
        assert_eq!(
            t.report(2, red_ref(job, 1, 0), reduce_done()),
            vec![persist(job), commit(job, 1, 0)]
        );
        let st = t.s.status(job).unwrap();
        assert_eq!(
            (st.state, st.reduces.done, st.reduces.running),
            (JobState::Running, 0, 2)
        );
        assert!(st.outputs.is_empty());
        assert!(t.poll(3, 4).is_empty());
        assert_eq!(t.tick(), vec![]);
        assert_eq!(t.committed(job, 1, 0), vec![persist(job)]);
        assert_eq!(t.state(job), JobState::Running);
        t.now += 5;
        assert_eq!(
            t.committed(job, 0, 0),
            vec![persist(job), Action::Finished { job }]
        );
        let st = t.s.status(job).unwrap();
        assert_eq!(st.state, JobState::Succeeded);
        assert_eq!(st.finished, Some(ts(t.now)));
        assert_eq!(st.outputs, vec![final_path(OUT, 0), final_path(OUT, 1)]);
        assert_eq!(st.reduces.bytes_done, 60);
        assert!(t.tick().is_empty());
    }

    #[test]
    fn commit_failed_reruns_the_reduce() {
        let mut t = T::new();
        let job = reduce_phase(&mut t);
        assert_eq!(
            t.report(1, red_ref(job, 0, 0), reduce_done()),
            vec![persist(job), commit(job, 0, 0)]
        );
        assert_eq!(
            t.s.commit_failed(job, 0, 0, "rename: no such file", t.now),
            vec![persist(job), discard(0, 0)]
        );
        t.s.check_invariants();
        assert_eq!(t.job(job).reduces[0].core.failures, 1);
        assert_eq!(t.job(job).counters().failed_attempts, 1);
        assert_eq!(t.poll_tasks(3, 1), vec![red_ref(job, 0, 1)]);
        assert_eq!(
            t.report(3, red_ref(job, 0, 1), reduce_done()),
            vec![persist(job), commit(job, 0, 1)]
        );
    }

    #[test]
    fn lost_map_output_reruns_the_map_without_counting() {
        let mut t = T::new();
        let job = reduce_phase(&mut t);
        assert_eq!(t.report(1, red_ref(job, 0, 0), lost(1)), vec![persist(job)]);
        assert_eq!(t.job(job).reduces[0].core.failures, 0);
        assert_eq!(t.job(job).counters().failed_attempts, 1);
        assert!(t.job(job).maps[1].done.is_none());
        // No reduce until map 1 is done again; map 1 goes to its replica holder.
        assert!(t.poll(3, 1).is_empty());
        assert_eq!(t.poll_tasks(1, 1), vec![]);
        t.now += 2_000;
        assert_eq!(t.poll_tasks(1, 1), vec![map_ref(job, 1, 1)]);
        // Reduce 1 (given map 1's attempt 0) also fails to fetch it: nothing more to re-make.
        assert_eq!(t.report(2, red_ref(job, 1, 0), lost(1)), vec![persist(job)]);
        assert_eq!(t.job(job).maps[1].core.running.len(), 1);
        // A reduce naming a map that does not exist counts as a failure.
        t.report(1, map_ref(job, 1, 1), map_done(2, false));
        assert_eq!(t.poll_tasks(3, 1), vec![red_ref(job, 0, 1)]);
        assert_eq!(t.report(3, red_ref(job, 0, 1), lost(9)), vec![persist(job)]);
        assert_eq!(t.job(job).reduces[0].core.failures, 1);
    }

    #[test]
    fn max_failures_fail_the_job() {
        let mut t = T::new();
        let job = t.submit(vec![split(0, &[1]), split(1, &[1])], 1);
        assert_eq!(t.poll_tasks(1, 1), vec![map_ref(job, 0, 0)]);
        for a in 0..4 {
            assert_eq!(
                t.report(1, map_ref(job, 0, a), failed("boom")),
                vec![persist(job)]
            );
            assert_eq!(t.poll_tasks(1, 1), vec![map_ref(job, 0, a + 1)]);
        }
        assert_eq!(t.poll_tasks(1, 1), vec![map_ref(job, 1, 0)]);
        assert_eq!(
            t.report(1, map_ref(job, 0, 4), failed("boom")),
            vec![persist(job), Action::Finished { job }]
        );
        let JobState::Failed(reason) = t.state(job) else {
            panic!()
        };
        assert_eq!(reason, "map task 0 failed 5 times; last error: boom");
        assert_eq!(t.job(job).finished(), None);
        t.now += 3;
        assert_eq!(t.tick(), vec![persist(job)]);
        assert_eq!(t.job(job).finished(), Some(ts(t.now)));
        // Map 1's attempt is cancelled, the job's output forgotten, nothing assigned.
        let (reply, actions) =
            t.s.poll(node(1), &addr(1), &[map_ref(job, 1, 0)], 2, &[job], t.now);
        assert_eq!(reply.cancel, vec![map_ref(job, 1, 0)]);
        assert_eq!(reply.forget_jobs, vec![job]);
        assert!(reply.assignments.is_empty() && actions.is_empty());
        assert!(t
            .report(1, map_ref(job, 1, 0), map_done(1, true))
            .is_empty());
        assert_eq!(t.job(job).counters().failed_attempts, 5);
        assert!(t.s.forget(job));
        assert!(t.s.job(job).is_none());
        assert_eq!(t.submit(vec![], 1), JobId(2));
    }

    #[test]
    fn task_timeout_fails_the_attempt() {
        let mut t = T::with(SchedulerConfig {
            task_timeout_ms: 1_000,
            max_task_failures: 0,
            ..SchedulerConfig::default()
        });
        let job = t.submit(vec![split(0, &[1])], 1);
        t.poll(1, 1);
        t.now += 1_000;
        t.poll(1, 0);
        assert!(t.tick().is_empty());
        t.now += 1;
        t.poll(1, 0);
        assert_eq!(t.tick(), vec![persist(job), Action::Finished { job }]);
        let JobState::Failed(reason) = t.state(job) else {
            panic!()
        };
        assert!(reason.contains("timed out"), "{reason}");
        assert_eq!(t.job(job).finished(), Some(ts(t.now)));
    }

    #[test]
    fn commit_failures_count_toward_the_limit() {
        let mut t = T::with(SchedulerConfig {
            max_task_failures: 1,
            ..SchedulerConfig::default()
        });
        let job = t.submit(vec![], 1);
        for a in 0..2 {
            assert_eq!(t.poll_tasks(1, 1), vec![red_ref(job, 0, a)]);
            t.report(1, red_ref(job, 0, a), reduce_done());
            let actions = t.s.commit_failed(job, 0, a, "disk full", t.now);
            t.s.check_invariants();
            if a == 0 {
                assert_eq!(actions, vec![persist(job), discard(0, 0)]);
            } else {
                assert_eq!(
                    actions,
                    vec![persist(job), discard(0, 1), Action::Finished { job }]
                );
            }
        }
    }

    #[test]
    fn empty_input_goes_straight_to_reduce() {
        let mut t = T::new();
        let job = t.submit(vec![], 2);
        let a = t.poll(1, 3);
        assert_eq!(a.len(), 2);
        for (r, a) in a.iter().enumerate() {
            assert_eq!(a.task, red_ref(job, r as u32, 0));
            assert_eq!(
                a.work,
                TaskWork::Reduce {
                    partition: r as u32,
                    inputs: vec![],
                    temp_path: temp_path(OUT, r as u32, 0)
                }
            );
            t.report(1, a.task, reduce_done());
        }
        t.committed(job, 0, 0);
        assert_eq!(
            t.committed(job, 1, 0),
            vec![persist(job), Action::Finished { job }]
        );
        let st = t.s.status(job).unwrap();
        assert_eq!(st.outputs.len(), 2);
        assert_eq!(st.maps.total, 0);
    }

    #[test]
    fn two_jobs_oldest_first() {
        let mut t = T::new();
        let j1 = t.submit(vec![split(0, &[1]), split(1, &[2])], 1);
        let j2 = t.submit(vec![split(0, &[1]), split(1, &[3])], 1);
        t.poll(3, 0);
        // Worker 1: job 1's local map, then job 2's local map (job 1's other map waits for
        // worker 2... which is not live: so it goes too, before job 2's).
        assert_eq!(
            t.poll_tasks(1, 3),
            vec![map_ref(j1, 0, 0), map_ref(j1, 1, 0), map_ref(j2, 0, 0)]
        );
        // Worker 2 (now live) has nothing of job 1 left; job 2's map 1 waits for worker 3.
        assert!(t.poll(2, 1).is_empty());
        t.report(1, map_ref(j1, 0, 0), map_done(1, true));
        t.report(1, map_ref(j1, 1, 0), map_done(1, false));
        // Job 1's reduce comes before job 2's map 1 (not local to worker 2 anyway).
        assert_eq!(t.poll_tasks(2, 1), vec![red_ref(j1, 0, 0)]);
        assert_eq!(t.poll_tasks(3, 1), vec![map_ref(j2, 1, 0)]);
        t.report(1, map_ref(j2, 0, 0), map_done(1, true));
        t.report(3, map_ref(j2, 1, 0), map_done(1, true));
        assert_eq!(t.poll_tasks(3, 1), vec![red_ref(j2, 0, 0)]);
        assert_eq!(
            t.report(3, red_ref(j2, 0, 0), reduce_done()),
            vec![persist(j2), commit(j2, 0, 0)]
        );
        assert_eq!(
            t.committed(j2, 0, 0),
            vec![persist(j2), Action::Finished { job: j2 }]
        );
        assert_eq!(t.state(j1), JobState::Running);
        t.report(2, red_ref(j1, 0, 0), reduce_done());
        assert_eq!(
            t.committed(j1, 0, 0),
            vec![persist(j1), Action::Finished { job: j1 }]
        );
    }

    #[test]
    fn locality_across_jobs() {
        let mut t = T::new();
        let j1 = t.submit(vec![split(0, &[1])], 1);
        let j2 = t.submit(vec![split(0, &[2])], 1);
        t.poll(1, 0);
        // Job 1's map waits for worker 1; worker 2 takes job 2's local map meanwhile.
        assert_eq!(t.poll_tasks(2, 2), vec![map_ref(j2, 0, 0)]);
        t.now += 2_000;
        t.poll(1, 0);
        assert_eq!(t.poll_tasks(2, 1), vec![map_ref(j1, 0, 0)]);
    }

    fn roundtrip(job: &Job) -> Job {
        let bytes = postcard::to_stdvec(job).unwrap();
        postcard::from_bytes(&bytes).unwrap()
    }

    #[test]
    fn restore_mid_map() {
        let mut t = T::new();
        let job = t.submit(vec![split(0, &[1]), split(1, &[2]), split(2, &[3])], 1);
        t.poll(1, 1);
        t.poll(2, 1);
        t.report(1, map_ref(job, 0, 0), map_done(1, true));
        let saved = roundtrip(t.job(job));
        assert_eq!(saved, *t.job(job));

        // The coordinator restarts; its clock starts again from zero.
        let mut s = Scheduler::new(SchedulerConfig::default());
        assert_eq!(s.restore(saved.clone(), 0), vec![persist(job)]);
        assert!(
            s.restore(saved, 0).is_empty(),
            "a known job is not restored twice"
        );
        s.check_invariants();
        let st = s.status(job).unwrap();
        assert_eq!((st.maps.done, st.maps.running), (1, 0));
        // Worker 2 still runs its old attempt: cancelled; the map runs again, numbered anew.
        let (reply, _) = s.poll(node(2), &addr(2), &[map_ref(job, 1, 0)], 1, &[job], 5);
        assert_eq!(reply.cancel, vec![map_ref(job, 1, 0)]);
        let tasks: Vec<TaskRef> = reply.assignments.iter().map(|a| a.task).collect();
        assert_eq!(tasks, vec![map_ref(job, 1, RESTORE_ATTEMPT_GAP + 1)]);
        // Its late report is ignored.
        assert!(s
            .report(node(2), map_ref(job, 1, 0), map_done(1, true), 6)
            .is_empty());
        // Worker 1 (holding map 0's output) is known from the record.
        assert!(s.is_live(node(1), 6));
        let (id, _) = s.submit(spec(1), vec![], ts(0), 7);
        assert_eq!(id, JobId(2));
        s.check_invariants();
    }

    #[test]
    fn restore_mid_commit_reissues_the_commit() {
        let mut t = T::new();
        let job = reduce_phase(&mut t);
        assert_eq!(
            t.report(1, red_ref(job, 0, 0), reduce_done()),
            vec![persist(job), commit(job, 0, 0)]
        );
        assert_eq!(
            t.report(2, red_ref(job, 1, 0), reduce_done()),
            vec![persist(job), commit(job, 1, 0)]
        );
        assert_eq!(t.committed(job, 1, 0), vec![persist(job)]);
        let saved = roundtrip(t.job(job));

        let mut s = Scheduler::new(SchedulerConfig::default());
        assert_eq!(
            s.restore(saved.clone(), 50),
            vec![persist(job), commit(job, 0, 0)]
        );
        s.check_invariants();
        assert_eq!(
            s.committed(job, 0, 0, 60, ts(60)),
            vec![persist(job), Action::Finished { job }]
        );
        assert_eq!(s.status(job).unwrap().state, JobState::Succeeded);

        // Or the rename had already happened before the restart: the temp file is gone, the
        // commit fails and the reduce runs again.
        let mut s = Scheduler::new(SchedulerConfig::default());
        assert_eq!(s.restore(saved, 50), vec![persist(job), commit(job, 0, 0)]);
        assert_eq!(
            s.commit_failed(job, 0, 0, "no such file", 51),
            vec![persist(job), discard(0, 0)]
        );
        let (reply, _) = s.poll(node(3), &addr(3), &[], 1, &[], 52);
        assert_eq!(
            reply.assignments[0].task,
            red_ref(job, 0, RESTORE_ATTEMPT_GAP + 1)
        );
        s.check_invariants();
    }

    #[test]
    fn restore_of_an_ended_job() {
        let mut t = T::new();
        let job = t.submit(vec![], 1);
        t.poll(1, 1);
        t.report(1, red_ref(job, 0, 0), reduce_done());
        t.committed(job, 0, 0);
        let mut s = Scheduler::new(SchedulerConfig::default());
        assert!(s.restore(roundtrip(t.job(job)), 0).is_empty());
        assert_eq!(s.status(job).unwrap(), t.s.status(job).unwrap());
        let (reply, _) = s.poll(node(1), &addr(1), &[], 1, &[job], 1);
        assert_eq!(reply.forget_jobs, vec![job]);
        assert!(reply.assignments.is_empty());
    }

    // ---- random events -------------------------------------------------------------------------

    const WORKERS: u64 = 4;
    const SLOTS: usize = 2;

    #[derive(Clone, Debug)]
    enum Ev {
        Poll(u64),
        /// Worker, which of its attempts, outcome (0..7 done, 7..9 failed, 9 lost map output).
        Finish(u64, usize, u8),
        /// The worker process restarts: its attempts and its map output are gone.
        Crash(u64),
        Advance(u64),
        Sleep,
        Tick,
        /// The oldest pending commit: carried out (if its temp file exists) or failed.
        Resolve(bool),
        Restore,
        Duplicate,
        Submit(u8, u32, u8),
    }

    fn ev() -> impl Strategy<Value = Ev> {
        prop_oneof![
            6 => (1..=WORKERS).prop_map(Ev::Poll),
            6 => (1..=WORKERS, 0..SLOTS, 0..10u8).prop_map(|(w, i, o)| Ev::Finish(w, i, o)),
            1 => (1..=WORKERS).prop_map(Ev::Crash),
            3 => (0..4_000u64).prop_map(Ev::Advance),
            1 => Just(Ev::Sleep),
            2 => Just(Ev::Tick),
            3 => prop::bool::weighted(0.85).prop_map(Ev::Resolve),
            1 => Just(Ev::Restore),
            1 => Just(Ev::Duplicate),
            1 => (0..5u8, 1..4u32, any::<u8>()).prop_map(|(m, r, p)| Ev::Submit(m, r, p)),
        ]
    }

    #[derive(Default)]
    struct SimWorker {
        running: Vec<Assignment>,
        /// Map output it keeps: (job, map, attempt).
        outputs: BTreeSet<(JobId, u32, u32)>,
    }

    struct Sim {
        s: Scheduler,
        config: SchedulerConfig,
        now: u64,
        workers: BTreeMap<u64, SimWorker>,
        /// What the runtime saved for each job.
        saved: BTreeMap<JobId, Vec<u8>>,
        pending: VecDeque<Action>,
        /// Temp files in the filesystem: path -> (job, reduce, attempt).
        temps: BTreeMap<String, (JobId, u32, u32)>,
        /// Final files: path -> attempt renamed there.
        finals: BTreeMap<(JobId, u32), u32>,
        /// Confirmed commits per reduce.
        commits: BTreeMap<(JobId, u32), u32>,
        /// Every accepted winner of each map: (attempt, worker).
        winners: BTreeMap<(JobId, u32), Vec<(u32, NodeId)>>,
        /// The inputs each reduce attempt was given.
        reduce_inputs: BTreeMap<(JobId, u32, u32), Vec<MapOutputRef>>,
        /// Attempts handed out per job: (maps, reduces).
        handed_out: BTreeMap<JobId, (u64, u64)>,
        finished: BTreeMap<JobId, u32>,
        last_report: Option<(NodeId, TaskRef, TaskOutcome)>,
    }

    impl Sim {
        fn new(config: SchedulerConfig) -> Sim {
            Sim {
                s: Scheduler::new(config.clone()),
                config,
                now: 0,
                workers: (1..=WORKERS).map(|w| (w, SimWorker::default())).collect(),
                saved: BTreeMap::new(),
                pending: VecDeque::new(),
                temps: BTreeMap::new(),
                finals: BTreeMap::new(),
                commits: BTreeMap::new(),
                winners: BTreeMap::new(),
                reduce_inputs: BTreeMap::new(),
                handed_out: BTreeMap::new(),
                finished: BTreeMap::new(),
                last_report: None,
            }
        }

        fn submit(&mut self, maps: u8, reducers: u32, placement: u8) {
            // Replicas among workers 1..=6 (5 and 6 never poll).
            let splits = (0..u64::from(maps))
                .map(|i| {
                    let a = (u64::from(placement) + i) % 6 + 1;
                    let b = (u64::from(placement) / 6 + 2 * i) % 6 + 1;
                    split(i, &[a, b])
                })
                .collect();
            let spec = JobSpec {
                output: format!("/out{}", self.s.next_id),
                ..spec(reducers)
            };
            let (id, actions) = self.s.submit(spec, splits, ts(self.now), self.now);
            assert_eq!(self.s.job(id).unwrap().spec.output, format!("/out{id}"));
            self.apply(actions);
            assert!(self.saved.contains_key(&id));
        }

        fn job_of(&self, id: JobId) -> &Job {
            self.s.job(id).unwrap()
        }

        fn apply(&mut self, actions: Vec<Action>) {
            let mut seen_effect = false;
            let mut seen_finished = false;
            for a in actions {
                match a {
                    Action::Persist { job } => {
                        assert!(!seen_effect && !seen_finished, "Persist comes first");
                        let j = self.s.job(job).expect("persist of an unknown job");
                        self.saved.insert(job, postcard::to_stdvec(j).unwrap());
                    }
                    Action::Commit {
                        job,
                        reduce,
                        attempt,
                        ref temp_path,
                        ref final_path,
                    } => {
                        assert!(!seen_finished);
                        seen_effect = true;
                        let j = self.job_of(job);
                        assert!(j.is_running());
                        assert!(matches!(j.reduces[reduce as usize].state,
                            ReduceState::Committing { attempt: c, .. } if c == attempt));
                        assert_eq!(
                            *temp_path,
                            super::temp_path(&j.spec.output, reduce, attempt)
                        );
                        assert_eq!(*final_path, super::final_path(&j.spec.output, reduce));
                        assert!(
                            !self.pending.iter().any(|p| matches!(p,
                                Action::Commit { job: j2, reduce: r2, .. } if *j2 == job && *r2 == reduce)),
                            "two commits of one reduce at once"
                        );
                        self.pending.push_back(a);
                    }
                    Action::Discard { path } => {
                        assert!(!seen_finished);
                        seen_effect = true;
                        for j in self.s.jobs.values() {
                            for (r, t) in j.reduces.iter().enumerate() {
                                if let Some(w) = t.winner() {
                                    let winner = temp_path(&j.spec.output, r as u32, w);
                                    assert_ne!(path, winner, "winner discarded");
                                }
                            }
                        }
                        self.temps.remove(&path);
                    }
                    Action::Finished { job } => {
                        seen_finished = true;
                        *self.finished.entry(job).or_default() += 1;
                        let j = self.job_of(job);
                        assert!(!j.is_running());
                        if *j.state() == JobState::Succeeded {
                            assert!(!self.pending.iter().any(|p| matches!(p,
                                Action::Commit { job: j2, .. } if *j2 == job)));
                        }
                    }
                }
            }
            self.s.check_invariants();
        }

        fn poll(&mut self, w: u64) -> usize {
            let sw = &self.workers[&w];
            let running: Vec<TaskRef> = sw.running.iter().map(|a| a.task).collect();
            let holding: Vec<JobId> = sw
                .outputs
                .iter()
                .map(|o| o.0)
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let free = SLOTS - running.len();
            let had_work = self.s.has_work_for(node(w), self.now);
            let (reply, actions) =
                self.s
                    .poll(node(w), &addr(w), &running, free as u32, &holding, self.now);
            if had_work && free > 0 {
                assert!(
                    !reply.assignments.is_empty(),
                    "has_work_for but nothing given"
                );
            }
            assert!(reply.assignments.len() <= free);
            for c in &reply.cancel {
                assert!(running.contains(c));
            }
            for j in &reply.forget_jobs {
                assert!(holding.contains(j));
            }
            for a in &reply.assignments {
                let job = self.s.job(a.task.job).unwrap();
                assert!(job.is_running());
                let e = self.handed_out.entry(a.task.job).or_default();
                match &a.work {
                    TaskWork::Map { split, reducers } => {
                        e.0 += 1;
                        assert_eq!(*split, job.maps[a.task.index as usize].split);
                        assert_eq!(*reducers, job.spec.reducers);
                    }
                    TaskWork::Reduce {
                        partition,
                        inputs,
                        temp_path,
                    } => {
                        e.1 += 1;
                        assert_eq!(*partition, a.task.index);
                        assert_eq!(
                            *temp_path,
                            super::temp_path(&job.spec.output, a.task.index, a.task.attempt)
                        );
                        assert_eq!(inputs.len(), job.maps.len(), "reduce before all maps done");
                        for (m, r) in inputs.iter().enumerate() {
                            assert_eq!(r.map_index, m as u32);
                            let d = job.maps[m].done.as_ref().expect("map not done");
                            assert_eq!((r.attempt, r.worker), (d.attempt, d.worker));
                            assert!(self.winners[&(a.task.job, m as u32)]
                                .contains(&(r.attempt, r.worker)));
                        }
                        self.reduce_inputs
                            .insert((a.task.job, a.task.index, a.task.attempt), inputs.clone());
                    }
                }
            }
            let n = reply.assignments.len();
            let sw = self.workers.get_mut(&w).unwrap();
            sw.running.retain(|a| !reply.cancel.contains(&a.task));
            for j in &reply.forget_jobs {
                sw.outputs.retain(|o| o.0 != *j);
            }
            sw.running.extend(reply.assignments);
            self.apply(actions);
            n
        }

        fn finish(&mut self, w: u64, i: usize, o: u8) {
            let sw = self.workers.get_mut(&w).unwrap();
            if sw.running.is_empty() {
                return;
            }
            let a = sw.running.remove(i % sw.running.len());
            let task = a.task;
            let outcome = match &a.work {
                TaskWork::Map { split, reducers } => {
                    if o < 7 {
                        sw.outputs.insert((task.job, task.index, task.attempt));
                        let mut out =
                            map_done(*reducers as usize, split.replicas.contains(&node(w)));
                        if let TaskOutcome::Done {
                            partition_bytes, ..
                        } = &mut out
                        {
                            for (r, b) in partition_bytes.iter_mut().enumerate() {
                                *b = r as u64 + u64::from(task.index);
                            }
                        }
                        out
                    } else {
                        failed("map failed")
                    }
                }
                TaskWork::Reduce {
                    inputs, temp_path, ..
                } => {
                    let missing = inputs.iter().find(|r| {
                        !self.workers[&r.worker.0].outputs.contains(&(
                            task.job,
                            r.map_index,
                            r.attempt,
                        ))
                    });
                    match (missing, o) {
                        (_, 7 | 8) => failed("reduce failed"),
                        (Some(r), _) => lost(r.map_index),
                        (None, 9) if !inputs.is_empty() => lost(0),
                        (None, _) => {
                            self.temps
                                .insert(temp_path.clone(), (task.job, task.index, task.attempt));
                            reduce_done()
                        }
                    }
                }
            };
            self.report(node(w), task, outcome);
        }

        fn report(&mut self, w: NodeId, task: TaskRef, outcome: TaskOutcome) {
            let before = self
                .s
                .job(task.job)
                .and_then(|j| j.maps.get(task.index as usize))
                .and_then(|m| m.done.clone());
            let actions = self.s.report(w, task, outcome.clone(), self.now);
            if task.kind == TaskKind::Map {
                let after = self
                    .s
                    .job(task.job)
                    .and_then(|j| j.maps.get(task.index as usize))
                    .and_then(|m| m.done.clone());
                if before.is_none() {
                    if let Some(d) = after {
                        assert_eq!((d.attempt, d.worker), (task.attempt, w));
                        self.winners
                            .entry((task.job, task.index))
                            .or_default()
                            .push((d.attempt, d.worker));
                    }
                }
            }
            self.last_report = Some((w, task, outcome));
            self.apply(actions);
        }

        fn resolve(&mut self, ok: bool) {
            let Some(Action::Commit {
                job,
                reduce,
                attempt,
                temp_path,
                ..
            }) = self.pending.pop_front()
            else {
                return;
            };
            let actions = if ok && self.temps.remove(&temp_path).is_some() {
                self.finals.insert((job, reduce), attempt);
                let was = self.job_of(job).reduces[reduce as usize].state.clone();
                let actions = self
                    .s
                    .committed(job, reduce, attempt, self.now, ts(self.now));
                let now = &self.job_of(job).reduces[reduce as usize].state;
                if was != *now {
                    assert!(
                        matches!(now, ReduceState::Committed { attempt: a, .. } if *a == attempt)
                    );
                    *self.commits.entry((job, reduce)).or_default() += 1;
                }
                actions
            } else {
                self.s
                    .commit_failed(job, reduce, attempt, "rename failed", self.now)
            };
            self.apply(actions);
        }

        fn restore(&mut self) {
            // Every change was persisted: what was saved is the live state.
            for (id, bytes) in &self.saved {
                let live = postcard::to_stdvec(self.s.job(*id).unwrap()).unwrap();
                assert!(live == *bytes, "job {id} changed without a Persist");
            }
            let mut s = Scheduler::new(self.config.clone());
            let mut actions = Vec::new();
            for bytes in self.saved.values() {
                let job: Job = postcard::from_bytes(bytes).unwrap();
                actions.push(s.restore(job, self.now));
            }
            self.s = s;
            self.pending.clear();
            for a in actions {
                self.apply(a);
            }
        }

        fn event(&mut self, e: &Ev) {
            match *e {
                Ev::Poll(w) => {
                    self.poll(w);
                }
                Ev::Finish(w, i, o) => self.finish(w, i, o),
                Ev::Crash(w) => {
                    let sw = self.workers.get_mut(&w).unwrap();
                    sw.running.clear();
                    sw.outputs.clear();
                }
                Ev::Advance(ms) => self.now += ms,
                Ev::Sleep => self.now += self.config.worker_timeout_ms + 1,
                Ev::Tick => {
                    let actions = self.s.tick(self.now, ts(self.now));
                    self.apply(actions);
                }
                Ev::Resolve(ok) => self.resolve(ok),
                Ev::Restore => self.restore(),
                Ev::Duplicate => {
                    if let Some((w, task, outcome)) = self.last_report.clone() {
                        let actions = self.s.report(w, task, outcome, self.now);
                        assert!(
                            actions.iter().all(|a| matches!(a, Action::Discard { .. })),
                            "a duplicate report changed something: {actions:?}"
                        );
                        self.apply(actions);
                    }
                }
                Ev::Submit(m, r, p) => {
                    if self.s.jobs.len() < 3 {
                        self.submit(m, r, p);
                    }
                }
            }
        }

        /// Every worker healthy and every attempt succeeding: every job must end.
        fn drain(&mut self) {
            for _ in 0..300 {
                if self.s.jobs.values().all(|j| !j.is_running()) && self.pending.is_empty() {
                    break;
                }
                self.now += 1_000;
                let actions = self.s.tick(self.now, ts(self.now));
                self.apply(actions);
                for w in 1..=WORKERS {
                    self.poll(w);
                    while !self.workers[&w].running.is_empty() {
                        self.finish(w, 0, 0);
                    }
                }
                while !self.pending.is_empty() {
                    self.resolve(true);
                }
            }
            let actions = self.s.tick(self.now, ts(self.now));
            self.apply(actions);
        }

        fn check_end(&self) {
            for (id, job) in &self.s.jobs {
                assert!(
                    !job.is_running(),
                    "job {id} never ended: {:?}",
                    job.status()
                );
                assert_eq!(self.finished.get(id), Some(&1), "job {id}: Finished once");
                assert!(job.finished().is_some());
                let c = job.counters();
                let (m, r) = self.handed_out.get(id).copied().unwrap_or_default();
                assert_eq!((c.map_attempts, c.reduce_attempts), (m, r));
                if *job.state() != JobState::Succeeded {
                    continue;
                }
                let st = job.status();
                assert_eq!(st.outputs.len(), job.reduces.len());
                for (r, t) in job.reduces.iter().enumerate() {
                    let r = r as u32;
                    let ReduceState::Committed { attempt, .. } = t.state else {
                        panic!("job {id}: reduce {r} not committed")
                    };
                    assert_eq!(
                        self.commits.get(&(*id, r)),
                        Some(&1),
                        "job {id}: reduce {r}"
                    );
                    assert_eq!(self.finals.get(&(*id, r)), Some(&attempt));
                    let inputs = &self.reduce_inputs[&(*id, r, attempt)];
                    for (m, input) in inputs.iter().enumerate() {
                        let history = &self.winners[&(*id, m as u32)];
                        assert!(history.contains(&(input.attempt, input.worker)));
                        // A map that never had to run again: its one winner is what was used.
                        // (Its output may have been lost after the last reduce fetched it.)
                        if let (1, Some(d)) = (history.len(), &job.maps[m].done) {
                            assert_eq!((input.attempt, input.worker), (d.attempt, d.worker));
                        }
                    }
                }
            }
        }
    }

    proptest! {
        #[test]
        fn random_events_keep_invariants(
            first in (0..6u8, 1..4u32, any::<u8>()),
            events in prop::collection::vec(ev(), 0..160),
            backup_min_ms in prop::sample::select(vec![0u64, 5_000]),
            max_task_failures in prop::sample::select(vec![1u32, 4]),
        ) {
            let config = SchedulerConfig {
                task_timeout_ms: 30_000,
                backup_min_ms,
                max_task_failures,
                ..SchedulerConfig::default()
            };
            let mut sim = Sim::new(config);
            sim.submit(first.0, first.1, first.2);
            for e in &events {
                sim.event(e);
            }
            sim.drain();
            sim.check_end();
        }
    }
}
