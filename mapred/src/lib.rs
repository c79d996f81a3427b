//! `quarry-mapred`: MapReduce over Quarry.
//!
//! - `text`: records (words, lines), the letter class, and where a split's records begin and end.
//! - `app` and `apps`: the [`app::App`] trait, the map/reduce framework around it, and the apps
//!   (word count, grep, inverted index), with a sequential runner used as the test oracle.
//! - `job`: the pure job/task state machine (scheduling with locality, re-execution, backup
//!   tasks, commit of reduce output). Time comes in as a parameter.
//! - `coordinator` and `worker`: the runtimes (the coordinator is hosted by the master process,
//!   workers by chunkserver processes).
//!
//! Must not depend on the master, chunkserver, fs or CLI crates: it talks to the cluster through
//! `quarry-client` and the transport, and reads local chunk files through [`worker::LocalChunks`].

pub mod app;
pub mod apps;
pub mod coordinator;
pub mod job;
pub mod text;
pub mod worker;
