//! MapReduce jobs: the wire types shared by the coordinator (hosted in the master process), the
//! workers (hosted in chunkserver processes) and the CLI, and the RPCs between them.
//!
//! Workers pull work: each polls the coordinator with [`WorkerPoll`] (also its liveness signal),
//! runs what it is given, and reports with [`ReportTask`]. Reducers fetch map output from the
//! worker that produced it with [`FetchPartition`] (the partition's bytes are the reply body).

use crate::ids::*;
use crate::rpc;
use crate::types::Timestamp;
use serde::{Deserialize, Serialize};

/// A job, numbered by the coordinator in submission order.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct JobId(pub u64);

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Which application a job runs, with its arguments.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppSpec {
    /// `word count` lines; a word is a maximal run of Unicode letters (General Category L*).
    WordCount,
    /// Lines containing `pattern` (a literal byte string): `path:offset:line`.
    Grep { pattern: String },
    /// `word n path,path,...`: the files each word occurs in.
    InvertedIndex,
}

impl AppSpec {
    pub fn name(&self) -> &'static str {
        match self {
            AppSpec::WordCount => "wordcount",
            AppSpec::Grep { .. } => "grep",
            AppSpec::InvertedIndex => "index",
        }
    }
}

/// What a client submits. Paths are absolute paths in the filesystem; inputs may be files,
/// directories (every regular file below, in name order) or globs (`*`, `?` in the last
/// component).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    pub app: AppSpec,
    pub inputs: Vec<String>,
    pub output: String,
    pub reducers: u32,
}

/// One map task's input: the records that start in one chunk of one file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    pub path: String,
    pub inode: InodeId,
    /// The file's size when the job was planned.
    pub file_size: u64,
    pub chunk_index: u64,
    pub handle: ChunkHandle,
    pub version: ChunkVersion,
    /// Byte range of the file: `offset = chunk_index * chunk_size`, `len` up to a chunk.
    pub offset: u64,
    pub len: u64,
    /// Chunkservers holding a current replica when the job was planned (for locality).
    pub replicas: Vec<NodeId>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TaskKind {
    Map,
    Reduce,
}

/// One attempt at one task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TaskRef {
    pub job: JobId,
    pub kind: TaskKind,
    pub index: u32,
    pub attempt: u32,
}

/// Where a finished map task's output is fetched from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapOutputRef {
    pub map_index: u32,
    pub attempt: u32,
    pub worker: NodeId,
    /// The worker's QUIC address (`host:port`).
    pub addr: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskWork {
    /// Map `split`, partition the output into `reducers` partitions.
    Map { split: Split, reducers: u32 },
    /// Fetch partition `partition` of every map output, merge, write `temp_path`.
    Reduce {
        partition: u32,
        inputs: Vec<MapOutputRef>,
        temp_path: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub task: TaskRef,
    pub app: AppSpec,
    pub work: TaskWork,
}

/// What one task attempt did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCounters {
    pub input_bytes: u64,
    pub input_records: u64,
    pub output_records: u64,
    pub output_bytes: u64,
    /// Reduce: bytes fetched from map outputs.
    pub shuffle_bytes: u64,
    /// Map: the split was read from a replica on the worker's own disk.
    pub data_local: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskOutcome {
    /// Map: `partition_bytes[r]` is the size of partition `r`. Reduce: the temp file is written.
    Done {
        counters: TaskCounters,
        partition_bytes: Vec<u64>,
    },
    /// The attempt failed. `lost_map_output` names a map task whose output could not be
    /// fetched (it must run again).
    Failed {
        error: String,
        lost_map_output: Option<u32>,
    },
}

/// A job's totals, from committed attempts (attempt counts include every attempt).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobCounters {
    pub input_bytes: u64,
    pub input_records: u64,
    pub map_output_records: u64,
    pub shuffle_bytes: u64,
    pub output_records: u64,
    pub output_bytes: u64,
    pub data_local_maps: u64,
    pub remote_maps: u64,
    pub map_attempts: u64,
    pub reduce_attempts: u64,
    pub backup_attempts: u64,
    pub failed_attempts: u64,
    pub lost_workers: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobState {
    Running,
    Succeeded,
    Failed(String),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseProgress {
    pub total: u32,
    pub done: u32,
    pub running: u32,
    /// Input bytes of the finished tasks (maps: split bytes; reduces: fetched bytes).
    pub bytes_done: u64,
    pub bytes_total: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStatus {
    pub id: JobId,
    pub spec: JobSpec,
    pub state: JobState,
    pub maps: PhaseProgress,
    pub reduces: PhaseProgress,
    pub counters: JobCounters,
    pub submitted: Timestamp,
    pub finished: Option<Timestamp>,
    /// The committed output files, once the job succeeded.
    pub outputs: Vec<String>,
}

// ---- RPCs to the coordinator -------------------------------------------------------------------

/// Start a job. Inputs are resolved and split when it is accepted; an empty input is an error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitJob {
    pub op: OpId,
    pub spec: JobSpec,
}
rpc!(SubmitJob => JobId, SubmitJob, [Client]);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetJob {
    pub job: JobId,
}
rpc!(GetJob => JobStatus, GetJob, [Client]);

/// Every job the coordinator remembers, oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListJobs {}
rpc!(ListJobs => Vec<JobStatus>, ListJobs, [Client]);

/// A worker asks for work (`free_slots` > 0) and says what it is running. The coordinator may
/// hold the call for a while when it has nothing to give. A worker silent for longer than the
/// coordinator's worker timeout is lost: its running tasks, and its finished map tasks whose
/// output is still needed, run again elsewhere.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerPoll {
    pub worker: NodeId,
    /// Where reducers fetch this worker's map output.
    pub addr: String,
    pub running: Vec<TaskRef>,
    pub free_slots: u32,
    /// Jobs whose map output this worker still keeps.
    pub holding: Vec<JobId>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerPollReply {
    pub assignments: Vec<Assignment>,
    /// Attempts the worker should stop (their task finished elsewhere or the job ended).
    pub cancel: Vec<TaskRef>,
    /// Jobs among `holding` that ended (or are unknown): their map output can be deleted.
    pub forget_jobs: Vec<JobId>,
}
rpc!(WorkerPoll => WorkerPollReply, WorkerPoll, [Chunkserver]);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportTask {
    pub worker: NodeId,
    pub task: TaskRef,
    pub outcome: TaskOutcome,
}
rpc!(ReportTask => (), ReportTask, [Chunkserver]);

// ---- RPCs between workers ----------------------------------------------------------------------

/// Fetch one partition of one map attempt's output; the bytes are the reply body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchPartition {
    pub job: JobId,
    pub map_index: u32,
    pub attempt: u32,
    pub partition: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchPartitionReply {
    pub len: u64,
    /// CRC32C of the body.
    pub crc32c: u32,
}
rpc!(FetchPartition => FetchPartitionReply, FetchPartition, [Chunkserver]);
