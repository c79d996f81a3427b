//! The config layer of the `quarry` binary: every setting of every role, where its value comes
//! from, and how it becomes the library crates' plain config structs.
//!
//! One table, [`KEYS`], lists every key once: its section, kind (unit), default, the commands
//! that take it as a flag, and its documentation. Everything else is derived from it: the flags
//! (`--chunk-size`), the environment variables (`QUARRY_CHUNK_SIZE`), the accepted keys of a
//! config file (`[master] chunk_size`), `quarry config default`, and the reference tables in
//! `docs/config.md` (a test keeps those complete). A value is taken from, in order of precedence:
//! a flag given on the command line, the environment, the config file (`--config FILE` or
//! `QUARRY_CONFIG`), the default in [`KEYS`]. Defaults that the library crates already define
//! are read from their config structs, so no number is written twice.
//!
//! Identity settings (data directory, certificates, addresses, name) have no environment
//! variable: one environment is often shared by several nodes, so only flags and the file set
//! them. Library crates never see any of this; they get [`Config`]'s conversions.

use anyhow::{bail, Context};
use quarry_chunkserver::ChunkserverConfig;
use quarry_client::ClientConfig;
use quarry_mapred::coordinator::CoordinatorConfig;
use quarry_mapred::job::SchedulerConfig;
use quarry_mapred::worker::WorkerConfig;
use quarry_master::raft::RaftConfig;
use quarry_master::{MasterConfig, RaftSettings};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The commands that take flags from the table (a bit mask per key).
pub const UP: u8 = 1;
pub const MASTER: u8 = 2;
pub const CHUNKSERVER: u8 = 4;
pub const MOUNT: u8 = 8;
/// Settings of server nodes: `quarry up` runs every role, and `quarry master` and `quarry
/// chunkserver` accept each other's settings too, so one flag list starts either role.
const SERVERS: u8 = UP | MASTER | CHUNKSERVER;
/// Settings of the client side (the mount and the client library it uses).
const CLIENTS: u8 = UP | MOUNT;

/// Largest chunk a chunkserver accepts (chunk sizes are configurable up to this).
pub const MAX_CHUNK_SIZE: u64 = 1 << 30;

/// The sections of a config file, in the order `quarry config default` prints them.
pub const SECTIONS: &[(&str, &str)] = &[
    (
        "up",
        "`quarry up`: the embedded loopback cluster on one machine.",
    ),
    (
        "master",
        "A master (`quarry master`): its identity, and the namespace and chunk policies it applies.",
    ),
    (
        "raft",
        "Masters in a Raft group (`quarry master --peers`, `quarry up` with several masters). Keep these equal on every master.",
    ),
    (
        "cluster",
        "Read by masters and chunkservers alike; keep them equal on every server node.",
    ),
    (
        "chunkserver",
        "A chunkserver (`quarry chunkserver`): its identity, data pipeline and scrubbing.",
    ),
    (
        "mapreduce",
        "MapReduce: the job coordinator on the masters and the workers on the chunkservers.",
    ),
    (
        "client",
        "The client side: `quarry mount` (and `quarry up --mount`): caches, readahead, write buffering.",
    ),
    ("mount", "`quarry mount`: where, and its HTTP endpoint."),
];

/// What a key holds; decides how flags, environment and file values are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A whole number up to `u32::MAX`.
    U32,
    /// A whole number.
    U64,
    /// Bytes: an integer, or a string with a binary suffix (`"64MiB"`).
    Bytes,
    /// Milliseconds: an integer, or a string with a unit (`"10s"`).
    Millis,
    Bool,
    Text,
    Path,
    /// A socket address, `IP:PORT`.
    Addr,
}

impl Kind {
    fn value_name(self) -> &'static str {
        match self {
            Kind::U32 | Kind::U64 => "N",
            Kind::Bytes => "BYTES",
            Kind::Millis => "MS",
            Kind::Bool => "BOOL",
            Kind::Text => "TEXT",
            Kind::Path => "PATH",
            Kind::Addr => "IP:PORT",
        }
    }

    /// The unit column of the documentation.
    pub fn unit(self) -> &'static str {
        match self {
            Kind::U32 | Kind::U64 => "count",
            Kind::Bytes => "bytes (`\"64MiB\"` also accepted)",
            Kind::Millis => "milliseconds (`\"10s\"` also accepted)",
            Kind::Bool => "true/false",
            Kind::Text => "string",
            Kind::Path => "path",
            Kind::Addr => "`IP:PORT`",
        }
    }
}

/// A key's built-in default.
#[derive(Clone, Debug, PartialEq)]
pub enum Dflt {
    /// No default: the key is required where it is used, or off when absent (see `unset`).
    None,
    Int(u64),
    Bool(bool),
    Text(&'static str),
}

/// One setting.
#[derive(Debug)]
pub struct Key {
    pub section: &'static str,
    /// The key in its section; the flag is `--name-with-dashes` and, for keys with `env`, the
    /// environment variable `QUARRY_NAME`.
    pub name: &'static str,
    pub kind: Kind,
    /// Commands that take it as a flag (bit mask of [`UP`], [`MASTER`], ...; 0: none).
    pub flag_on: u8,
    /// Read from `QUARRY_<NAME>` (identity settings are not).
    pub env: bool,
    pub default: fn() -> Dflt,
    /// For keys without a default: what absence means, and an example value for the template.
    pub unset: &'static str,
    pub example: &'static str,
    /// Another flag name accepted for it (kept from earlier versions).
    pub alias: &'static str,
    pub doc: &'static str,
}

impl Key {
    pub fn flag(&self) -> String {
        format!("--{}", self.name.replace('_', "-"))
    }

    pub fn env_var(&self) -> Option<String> {
        self.env
            .then(|| format!("QUARRY_{}", self.name.to_ascii_uppercase()))
    }
}

/// A tunable: a flag on `flag_on`, an environment variable, a default.
const fn tun(
    section: &'static str,
    name: &'static str,
    kind: Kind,
    flag_on: u8,
    default: fn() -> Dflt,
    doc: &'static str,
) -> Key {
    Key {
        section,
        name,
        kind,
        flag_on,
        env: true,
        default,
        unset: "",
        example: "",
        alias: "",
        doc,
    }
}

/// An identity setting: a flag on `flag_on` and a file key, no environment variable.
const fn ident(
    section: &'static str,
    name: &'static str,
    kind: Kind,
    flag_on: u8,
    default: fn() -> Dflt,
    doc: &'static str,
) -> Key {
    Key {
        section,
        name,
        kind,
        flag_on,
        env: false,
        default,
        unset: "",
        example: "",
        alias: "",
        doc,
    }
}

/// An identity setting without a default: `unset` says what absence means.
const fn ident_unset(
    section: &'static str,
    name: &'static str,
    kind: Kind,
    flag_on: u8,
    unset: &'static str,
    example: &'static str,
    doc: &'static str,
) -> Key {
    Key {
        section,
        name,
        kind,
        flag_on,
        env: false,
        default: || Dflt::None,
        unset,
        example,
        alias: "",
        doc,
    }
}

// The library crates' own defaults, read where the binary keeps them.
fn lib_master() -> MasterConfig {
    MasterConfig::new(PathBuf::new())
}
fn lib_chunkserver() -> ChunkserverConfig {
    ChunkserverConfig::new(PathBuf::new(), Vec::new())
}
fn lib_worker() -> WorkerConfig {
    WorkerConfig::new(PathBuf::new(), Vec::new())
}
fn lib_client() -> ClientConfig {
    ClientConfig::new(Vec::new())
}
fn ms(d: Duration) -> Dflt {
    Dflt::Int(d.as_millis() as u64)
}

/// Every setting. Names of keys with an environment variable are unique across sections, and
/// within one command no two flags share a name (tests check both).
pub static KEYS: &[Key] = &[
    // [up]
    ident(
        "up",
        "data",
        Kind::Path,
        UP,
        || Dflt::Text(crate::cluster::DEFAULT_DATA_DIR),
        "Data directory; every node gets its own directory under it, and the cluster file is written there.",
    ),
    ident(
        "up",
        "masters",
        Kind::U32,
        UP,
        || Dflt::Int(3),
        "Masters: 1 runs a single master with its own operation log; more run a Raft group with automatic failover (fixed when the data directory is created). At most 8.",
    ),
    ident("up", "chunkservers", Kind::U32, UP, || Dflt::Int(3), "Chunkservers to run."),
    ident(
        "up",
        "processes",
        Kind::Bool,
        UP,
        || Dflt::Bool(false),
        "Run each node as a child process, restarted about 2 s after it exits.",
    ),
    ident_unset(
        "up",
        "mount",
        Kind::Path,
        UP,
        "not mounted",
        "\"/mnt/quarry\"",
        "Also mount the filesystem at this directory (unmounted before the cluster stops).",
    ),
    // [master]
    ident_unset(
        "master",
        "data",
        Kind::Path,
        MASTER,
        "required",
        "\"/var/lib/quarry/master\"",
        "This master's state directory (operation log or Raft log, checkpoints).",
    ),
    ident_unset(
        "master",
        "certs",
        Kind::Path,
        MASTER,
        "required",
        "\"/etc/quarry/certs\"",
        "Directory with ca.pem and this node's certificate (issued there if the CA key is present).",
    ),
    ident_unset(
        "master",
        "listen",
        Kind::Addr,
        MASTER,
        "required",
        "\"10.0.0.1:7100\"",
        "Address the master serves RPCs on (QUIC, UDP).",
    ),
    ident(
        "master",
        "name",
        Kind::Text,
        MASTER,
        || Dflt::Text("master-0"),
        "Node name: the stem of its certificate files.",
    ),
    ident(
        "master",
        "id",
        Kind::U64,
        MASTER,
        || Dflt::Int(1),
        "Raft: this master's id in its group (with `peers`).",
    ),
    ident_unset(
        "master",
        "peers",
        Kind::Text,
        MASTER,
        "no Raft: a single master on its own operation log",
        "\"1=10.0.0.1:7100,2=10.0.0.2:7100,3=10.0.0.3:7100\"",
        "Raft: the voting masters of a new group, `ID=HOST:PORT,...`, this one included at its `listen` address.",
    ),
    ident(
        "master",
        "join",
        Kind::Bool,
        MASTER,
        || Dflt::Bool(false),
        "Raft: join an existing group (added with `quarry masters add`) instead of forming one; otherwise the lowest id of `peers` forms the group on first boot.",
    ),
    ident_unset(
        "master",
        "http",
        Kind::Addr,
        MASTER,
        "no HTTP endpoint",
        "\"0.0.0.0:7180\"",
        "Serve /metrics, the status page and /api/status over HTTP here (port 0: any free port; the bound address is printed).",
    ),
    tun(
        "master",
        "chunk_size",
        Kind::Bytes,
        SERVERS,
        || Dflt::Int(lib_master().chunk_size),
        "Chunk size (fixed when the namespace is created): a multiple of 64 KiB, at most 1 GiB.",
    ),
    tun(
        "master",
        "replication",
        Kind::U32,
        SERVERS,
        || Dflt::Int(lib_master().replication.into()),
        "Replication goal of the root directory, inherited by new files and directories (1 to 255).",
    ),
    tun(
        "master",
        "lease_ms",
        Kind::Millis,
        SERVERS,
        || Dflt::Int(lib_master().lease_duration_ms),
        "Lease duration of a chunk's primary.",
    ),
    tun(
        "master",
        "trash_retention_ms",
        Kind::Millis,
        SERVERS,
        // One day; the library's default is no trash.
        || Dflt::Int(86_400_000),
        "How long deleted files stay in the trash before their chunks are reclaimed (0: no trash).",
    ),
    tun(
        "master",
        "client_session_timeout_ms",
        Kind::Millis,
        SERVERS,
        || Dflt::Int(lib_master().client_session_timeout_ms),
        "Drop the open-file holds of a client (a mount) not heard from for this long (0: never).",
    ),
    tun(
        "master",
        "checkpoint_every_records",
        Kind::U64,
        SERVERS,
        || Dflt::Int(lib_master().checkpoint_every_records),
        "A single master writes a checkpoint of its state after this many operation-log records.",
    ),
    tun(
        "master",
        "repair_interval_ms",
        Kind::Millis,
        SERVERS,
        || Dflt::Int(lib_master().repair_interval_ms),
        "How often the master looks for under- and over-replicated chunks.",
    ),
    tun(
        "master",
        "max_concurrent_clones",
        Kind::U32,
        SERVERS,
        || Dflt::Int(lib_master().max_concurrent_clones.into()),
        "Re-replication throttle: clones in flight at once, cluster-wide.",
    ),
    tun(
        "master",
        "clones_per_server",
        Kind::U32,
        SERVERS,
        || Dflt::Int(lib_master().clones_per_server.into()),
        "Re-replication throttle: clones in flight at once from one source server, and into one target server.",
    ),
    tun(
        "master",
        "clone_bandwidth",
        Kind::Bytes,
        SERVERS,
        || Dflt::Int(lib_master().clone_bandwidth_bytes_per_sec),
        "Re-replication throttle: pace of each clone, per second (0: unlimited).",
    ),
    tun(
        "master",
        "balance_slack_chunks",
        Kind::U64,
        SERVERS,
        || Dflt::Int(lib_master().balance_slack_chunks),
        "Rebalancing: replicas move to servers below their capacity-proportional share while a server holds more than its share by more than this many chunks (0: off).",
    ),
    // [raft]
    tun(
        "raft",
        "raft_heartbeat_ms",
        Kind::Millis,
        SERVERS,
        || Dflt::Int(RaftConfig::default().heartbeat_interval_ms),
        "The leader's heartbeat period (also the timeout of one append call).",
    ),
    tun(
        "raft",
        "election_timeout_ms",
        Kind::Millis,
        SERVERS,
        || Dflt::Int(RaftConfig::default().election_timeout_base_ms),
        "Election timeout of master id 1: a follower that hears no leader this long stands for election. Master id n waits (n - 1) * election_slot_ms longer, so two survivors never time out together.",
    ),
    tun(
        "raft",
        "election_slot_ms",
        Kind::Millis,
        SERVERS,
        || Dflt::Int(RaftConfig::default().election_slot_ms),
        "Distance between the election timeouts of consecutive master ids; minus election_jitter_ms it must be at least 2.5 raft_heartbeat_ms.",
    ),
    tun(
        "raft",
        "election_jitter_ms",
        Kind::Millis,
        SERVERS,
        || Dflt::Int(RaftConfig::default().election_jitter_ms),
        "Width of each master's random election timeout range.",
    ),
    tun(
        "raft",
        "snapshot_every_entries",
        Kind::U64,
        SERVERS,
        || Dflt::Int(RaftConfig::default().snapshot_logs_since_last),
        "A snapshot is built once this many log entries were applied since the last one.",
    ),
    tun(
        "raft",
        "snapshot_keep_entries",
        Kind::U64,
        SERVERS,
        || Dflt::Int(RaftConfig::default().max_in_snapshot_log_to_keep),
        "Log entries kept behind a snapshot, for followers slightly behind.",
    ),
    tun(
        "raft",
        "install_snapshot_timeout_ms",
        Kind::Millis,
        SERVERS,
        || Dflt::Int(RaftConfig::default().install_snapshot_timeout_ms),
        "Timeout of each call sending a snapshot chunk to a follower.",
    ),
    tun(
        "raft",
        "raft_request_timeout_ms",
        Kind::Millis,
        SERVERS,
        || Dflt::Int(RaftConfig::default().request_timeout_ms),
        "Bound on one replicated write, linearizable read or membership change.",
    ),
    tun(
        "raft",
        "read_lease_ms",
        Kind::Millis,
        SERVERS,
        || Dflt::Int(RaftConfig::default().read_lease_ms),
        "How long after the leader confirmed its leadership with a quorum it serves metadata reads without confirming again (a leader lease; 0: confirm every read). At most half of election_timeout_ms.",
    ),
    // [cluster]
    tun(
        "cluster",
        "rpc_timeout_ms",
        Kind::Millis,
        SERVERS,
        || Dflt::Int(lib_master().rpc_timeout_ms),
        "Timeout of calls between nodes (master to chunkserver, chunkserver to chunkserver and master).",
    ),
    tun(
        "cluster",
        "heartbeat_ms",
        Kind::Millis,
        SERVERS,
        || Dflt::Int(lib_chunkserver().heartbeat_interval_ms),
        "Heartbeat interval of chunkservers.",
    ),
    tun(
        "cluster",
        "heartbeat_timeout_ms",
        Kind::Millis,
        SERVERS,
        || Dflt::Int(lib_master().heartbeat_timeout_ms),
        "A chunkserver silent this long is considered dead (more than heartbeat_ms).",
    ),
    // [chunkserver]
    ident_unset(
        "chunkserver",
        "data",
        Kind::Path,
        CHUNKSERVER,
        "required",
        "\"/var/lib/quarry/chunks\"",
        "This chunkserver's chunk store directory.",
    ),
    ident_unset(
        "chunkserver",
        "certs",
        Kind::Path,
        CHUNKSERVER,
        "required",
        "\"/etc/quarry/certs\"",
        "Directory with ca.pem and this node's certificate (issued there if the CA key is present).",
    ),
    ident_unset(
        "chunkserver",
        "listen",
        Kind::Addr,
        CHUNKSERVER,
        "required",
        "\"10.0.0.11:7200\"",
        "Address the chunkserver serves on (QUIC, UDP); the master lists it under this address.",
    ),
    Key {
        alias: "master",
        ..ident_unset(
            "chunkserver",
            "masters",
            Kind::Text,
            CHUNKSERVER,
            "required",
            "\"10.0.0.1:7100,10.0.0.2:7100,10.0.0.3:7100\"",
            "Master addresses, `HOST:PORT` separated by commas (flag --masters or --master).",
        )
    },
    ident_unset(
        "chunkserver",
        "name",
        Kind::Text,
        CHUNKSERVER,
        "required",
        "\"chunkserver-0\"",
        "Node name: the stem of its certificate files.",
    ),
    ident_unset(
        "chunkserver",
        "http",
        Kind::Addr,
        CHUNKSERVER,
        "no HTTP endpoint",
        "\"0.0.0.0:7280\"",
        "Serve /metrics over HTTP here (port 0: any free port; printed).",
    ),
    tun(
        "chunkserver",
        "full_report_interval_ms",
        Kind::Millis,
        SERVERS,
        || Dflt::Int(lib_chunkserver().full_report_interval_ms),
        "Send the master a full chunk report at least this often (garbage collection relies on it).",
    ),
    tun(
        "chunkserver",
        "push_buffer_bytes",
        Kind::Bytes,
        SERVERS,
        || Dflt::Int(lib_chunkserver().push_buffer_bytes),
        "Bound on pushed data waiting for its mutation (memory).",
    ),
    tun(
        "chunkserver",
        "push_buffer_ttl_ms",
        Kind::Millis,
        SERVERS,
        || Dflt::Int(lib_chunkserver().push_buffer_ttl_ms),
        "Pushed data not consumed within this time is dropped.",
    ),
    tun(
        "chunkserver",
        "scrub_bytes_per_sec",
        Kind::Bytes,
        SERVERS,
        || Dflt::Int(lib_chunkserver().scrub_bytes_per_sec),
        "Scrubbing throttle: verify idle chunks' checksums at this many bytes per second (0: off).",
    ),
    tun(
        "chunkserver",
        "scrub_idle_ms",
        Kind::Millis,
        SERVERS,
        || Dflt::Int(lib_chunkserver().scrub_idle_ms),
        "Scrubbing leaves chunks written less than this long ago alone.",
    ),
    // [mapreduce]
    tun(
        "mapreduce",
        "mr_worker_timeout_ms",
        Kind::Millis,
        SERVERS,
        || Dflt::Int(SchedulerConfig::default().worker_timeout_ms),
        "A worker silent this long is lost and its tasks run again.",
    ),
    tun(
        "mapreduce",
        "mr_locality_wait_ms",
        Kind::Millis,
        SERVERS,
        || Dflt::Int(SchedulerConfig::default().locality_wait_ms),
        "A map task waits this long for a worker holding a replica of its input before any worker may take it (0: never wait).",
    ),
    tun(
        "mapreduce",
        "mr_task_timeout_ms",
        Kind::Millis,
        SERVERS,
        || Dflt::Int(SchedulerConfig::default().task_timeout_ms),
        "An attempt running longer than this is failed.",
    ),
    tun(
        "mapreduce",
        "mr_max_task_failures",
        Kind::U32,
        SERVERS,
        || Dflt::Int(SchedulerConfig::default().max_task_failures.into()),
        "A task failing more often than this fails its job.",
    ),
    tun(
        "mapreduce",
        "mr_backup_factor",
        Kind::U32,
        SERVERS,
        || Dflt::Int(SchedulerConfig::default().backup_factor.into()),
        "Backup tasks: an attempt running this many times the median duration of its phase gets a backup.",
    ),
    tun(
        "mapreduce",
        "mr_backup_min_ms",
        Kind::Millis,
        SERVERS,
        || Dflt::Int(SchedulerConfig::default().backup_min_ms),
        "Backup tasks: an attempt younger than this never gets a backup.",
    ),
    tun(
        "mapreduce",
        "mr_max_reducers",
        Kind::U32,
        SERVERS,
        || Dflt::Int(CoordinatorConfig::default().max_reducers.into()),
        "Largest reducer count a job may ask for.",
    ),
    tun(
        "mapreduce",
        "mr_slots",
        Kind::U32,
        SERVERS,
        || Dflt::Int(lib_worker().slots.into()),
        "Tasks each chunkserver's worker runs at once.",
    ),
    tun(
        "mapreduce",
        "mr_fetch_parallelism",
        Kind::U32,
        SERVERS,
        || Dflt::Int(lib_worker().fetch_parallelism as u64),
        "Map-output fetches in flight per reduce attempt.",
    ),
    tun(
        "mapreduce",
        "mr_task_delay_ms",
        Kind::Millis,
        SERVERS,
        || ms(lib_worker().task_delay),
        "Test hook: each attempt first sleeps this long (0 in production).",
    ),
    // [client]
    tun(
        "client",
        "client_rpc_timeout_ms",
        Kind::Millis,
        CLIENTS,
        || ms(lib_client().rpc_timeout),
        "Timeout of one call from the client to a master or chunkserver.",
    ),
    tun(
        "client",
        "retry_deadline_ms",
        Kind::Millis,
        CLIENTS,
        // Long enough to wait out a dead primary's lease (60 s by default) after it is declared
        // dead; the library's default is 120 s.
        || Dflt::Int(180_000),
        "How long one operation keeps retrying (a dead primary's lease, a master failover) before it fails.",
    ),
    tun(
        "client",
        "location_cache_entries",
        Kind::U64,
        CLIENTS,
        || Dflt::Int(lib_client().location_cache_entries as u64),
        "Chunk locations the client caches.",
    ),
    tun(
        "client",
        "readahead_bytes",
        Kind::Bytes,
        CLIENTS,
        || Dflt::Int(quarry_fs::MountOptions::default().readahead_bytes),
        "Bytes of one readahead window (one read of the replicas) for a sequential reader.",
    ),
    tun(
        "client",
        "readahead_windows",
        Kind::U32,
        CLIENTS,
        || Dflt::Int(quarry_fs::MountOptions::default().readahead_windows as u64),
        "Readahead windows fetched at once ahead of a sequential reader.",
    ),
    tun(
        "client",
        "write_buffer_bytes",
        Kind::Bytes,
        CLIENTS,
        || Dflt::Int(quarry_fs::MountOptions::default().flush_bytes as u64),
        "Write coalescing: a file's writes are buffered and pushed to the replicas at this size.",
    ),
    tun(
        "client",
        "write_pushes_in_flight",
        Kind::U32,
        CLIENTS,
        || Dflt::Int(quarry_fs::MountOptions::default().pushes_in_flight as u64),
        "Write-buffer pushes of one file in flight at once: a writer fills the next buffer while earlier ones reach the replicas.",
    ),
    tun(
        "client",
        "dirty_limit_bytes",
        Kind::Bytes,
        CLIENTS,
        || Dflt::Int(quarry_fs::MountOptions::default().buffer_budget_bytes as u64),
        "Dirty-data limit: write-buffer memory (buffered and in flight) across all open files of the mount; beyond it writes go straight to the replicas.",
    ),
    tun(
        "client",
        "attr_ttl_ms",
        Kind::Millis,
        CLIENTS,
        || ms(quarry_fs::MountOptions::default().ttl),
        "How long the kernel caches entries and attributes.",
    ),
    tun(
        "client",
        "max_write_bytes",
        Kind::Bytes,
        CLIENTS,
        || Dflt::Int(quarry_fs::MountOptions::default().max_write_bytes.into()),
        "Largest write request the kernel sends (at most 16 MiB).",
    ),
    tun(
        "client",
        "fuse_threads",
        Kind::U32,
        CLIENTS,
        || Dflt::Int(quarry_fs::MountOptions::default().session_threads as u64),
        "Threads reading requests from /dev/fuse (the work runs on the async runtime).",
    ),
    Key {
        unset: "yes when run as root",
        example: "true",
        ..tun(
            "client",
            "allow_other",
            Kind::Bool,
            CLIENTS,
            || Dflt::None,
            "Let users other than the mounting one in (needs root or user_allow_other in /etc/fuse.conf).",
        )
    },
    // [mount]
    ident_unset(
        "mount",
        "dir",
        Kind::Path,
        0,
        "required: the DIR argument",
        "\"/mnt/quarry\"",
        "Where to mount (the DIR argument of `quarry mount`).",
    ),
    ident_unset(
        "mount",
        "http",
        Kind::Addr,
        MOUNT,
        "no HTTP endpoint",
        "\"127.0.0.1:7380\"",
        "Serve /metrics (the FUSE and client side of this process) over HTTP here.",
    ),
];

pub fn find_key(section: &str, name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.section == section && k.name == name)
}

// ---------------------------------------------------------------------------------------------
// Values

/// Parse bytes: an integer, or a number with a binary suffix (`B`, `KiB`, `MiB`, `GiB`, `TiB`;
/// `K`, `M`, `G`, `T` mean the same).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '_'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        "t" | "tib" => 40,
        _ => u32::MAX,
    };
    let n: Option<u64> = num.replace('_', "").parse().ok();
    match (n, shift) {
        (Some(n), s) if s != u32::MAX => n
            .checked_mul(1u64 << s)
            .ok_or_else(|| format!("{text:?} is too large")),
        _ => Err(format!(
            "expected bytes: an integer or a string like \"64MiB\" (suffixes B, KiB, MiB, GiB, TiB), got {text:?}"
        )),
    }
}

/// Parse a duration in milliseconds: an integer, or a number with a unit (`ms`, `s`, `m`/`min`,
/// `h`, `d`).
pub fn parse_millis(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '_'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let factor = match unit.trim() {
        "" | "ms" => Some(1),
        "s" => Some(1_000),
        "m" | "min" => Some(60_000),
        "h" => Some(3_600_000),
        "d" => Some(86_400_000),
        _ => None,
    };
    let n: Option<u64> = num.replace('_', "").parse().ok();
    match (n, factor) {
        (Some(n), Some(f)) => n
            .checked_mul(f)
            .ok_or_else(|| format!("{text:?} is too large")),
        _ => Err(format!(
            "expected a duration: milliseconds, or a string like \"10s\" (units ms, s, m, h, d), got {text:?}"
        )),
    }
}

fn int_value(kind: Kind, n: u64) -> Result<toml::Value, String> {
    if kind == Kind::U32 && n > u64::from(u32::MAX) {
        return Err(format!("{n} is too large (at most {})", u32::MAX));
    }
    i64::try_from(n)
        .map(toml::Value::Integer)
        .map_err(|_| format!("{n} is too large"))
}

/// A value given as text (a flag or an environment variable), normalized: numbers, bytes and
/// durations become integers.
fn from_text(kind: Kind, text: &str) -> Result<toml::Value, String> {
    match kind {
        Kind::U32 | Kind::U64 => {
            let n: u64 = text
                .trim()
                .replace('_', "")
                .parse()
                .map_err(|_| format!("expected a whole number, got {text:?}"))?;
            int_value(kind, n)
        }
        Kind::Bytes => int_value(kind, parse_bytes(text)?),
        Kind::Millis => int_value(kind, parse_millis(text)?),
        Kind::Bool => match text.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" | "on" => Ok(toml::Value::Boolean(true)),
            "false" | "no" | "0" | "off" => Ok(toml::Value::Boolean(false)),
            _ => Err(format!("expected true or false, got {text:?}")),
        },
        Kind::Text | Kind::Path => {
            if text.trim().is_empty() {
                Err("must not be empty".into())
            } else {
                Ok(toml::Value::String(text.to_string()))
            }
        }
        Kind::Addr => text
            .trim()
            .parse::<SocketAddr>()
            .map(|a| toml::Value::String(a.to_string()))
            .map_err(|_| format!("expected an address IP:PORT, got {text:?}")),
    }
}

/// A value from a config file, normalized like [`from_text`].
fn from_toml(kind: Kind, value: &toml::Value) -> Result<toml::Value, String> {
    match (kind, value) {
        (Kind::U32 | Kind::U64 | Kind::Bytes | Kind::Millis, toml::Value::Integer(n)) => {
            let n = u64::try_from(*n).map_err(|_| format!("{n} is negative"))?;
            int_value(kind, n)
        }
        (Kind::Bytes | Kind::Millis, toml::Value::String(s)) => from_text(kind, s),
        (Kind::Bool, toml::Value::Boolean(b)) => Ok(toml::Value::Boolean(*b)),
        (Kind::Text | Kind::Path | Kind::Addr, toml::Value::String(s)) => from_text(kind, s),
        (_, v) => Err(format!(
            "expected {}, got {} {v}",
            match kind {
                Kind::U32 | Kind::U64 => "a whole number",
                Kind::Bytes => "bytes (an integer or a string like \"64MiB\")",
                Kind::Millis => "milliseconds (an integer or a string like \"10s\")",
                Kind::Bool => "true or false",
                Kind::Text | Kind::Path | Kind::Addr => "a string",
            },
            v.type_str()
        )),
    }
}

fn dflt_value(d: Dflt) -> Option<toml::Value> {
    match d {
        Dflt::None => None,
        Dflt::Int(n) => Some(toml::Value::Integer(
            i64::try_from(n).expect("defaults fit in i64"),
        )),
        Dflt::Bool(b) => Some(toml::Value::Boolean(b)),
        Dflt::Text(t) => Some(toml::Value::String(t.into())),
    }
}

// ---------------------------------------------------------------------------------------------
// Resolving: default < file < environment < flag

/// Where the value of a key came from, for error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    Default,
    File(PathBuf),
    Env(String),
    Flag(String),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Default => write!(f, "the default"),
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Env(v) => write!(f, "environment variable {v}"),
            Origin::Flag(fl) => write!(f, "flag {fl}"),
        }
    }
}

/// The inputs of one resolution.
pub struct Sources<'a> {
    /// The config file, if any (`--config`, else `QUARRY_CONFIG`).
    pub file: Option<&'a Path>,
    /// Looks up an environment variable.
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// Flags given on the command line: (key, text).
    pub flags: &'a [(&'static Key, String)],
}

/// Values being merged, each with its origin.
struct Layers {
    values: BTreeMap<(&'static str, &'static str), (toml::Value, Origin)>,
}

impl Layers {
    fn set(&mut self, key: &'static Key, value: toml::Value, origin: Origin) {
        self.values.insert((key.section, key.name), (value, origin));
    }
}

/// Read and check a config file: every section and key known, every value of its key's kind.
fn file_values(path: &Path) -> anyhow::Result<Vec<(&'static Key, toml::Value)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (section, body) in &table {
        if !SECTIONS.iter().any(|(s, _)| s == section) {
            let list: Vec<&str> = SECTIONS.iter().map(|(s, _)| *s).collect();
            bail!(
                "{}: unknown section [{section}] (sections: {})",
                path.display(),
                list.join(", ")
            );
        }
        let Some(body) = body.as_table() else {
            bail!(
                "{}: `{section}` must be a section ([{section}]), not a value",
                path.display()
            );
        };
        for (name, value) in body {
            let Some(key) = find_key(section, name) else {
                let elsewhere = KEYS
                    .iter()
                    .find(|k| k.name == name)
                    .map(|k| format!(" (`{name}` belongs in [{}])", k.section))
                    .unwrap_or_default();
                bail!(
                    "{}: unknown key `{name}` in [{section}]{elsewhere}; `quarry config default` lists every key",
                    path.display()
                );
            };
            let value = from_toml(key.kind, value)
                .map_err(|e| anyhow::anyhow!("{}: [{section}] {name}: {e}", path.display()))?;
            out.push((key, value));
        }
    }
    Ok(out)
}

/// Merge defaults, the file, the environment and the flags, then check the result.
pub fn resolve(src: &Sources) -> anyhow::Result<Config> {
    let mut layers = Layers {
        values: BTreeMap::new(),
    };
    for key in KEYS {
        if let Some(v) = dflt_value((key.default)()) {
            layers.set(key, v, Origin::Default);
        }
    }
    if let Some(path) = src.file {
        for (key, value) in file_values(path)? {
            layers.set(key, value, Origin::File(path.to_path_buf()));
        }
    }
    for key in KEYS {
        let Some(var) = key.env_var() else { continue };
        if let Some(text) = (src.env)(&var) {
            let value = from_text(key.kind, &text).map_err(|e| anyhow::anyhow!("{var}: {e}"))?;
            layers.set(key, value, Origin::Env(var));
        }
    }
    for (key, text) in src.flags {
        let flag = key.flag();
        let value = from_text(key.kind, text).map_err(|e| anyhow::anyhow!("{flag}: {e}"))?;
        layers.set(key, value, Origin::Flag(flag));
    }
    let mut root = toml::Table::new();
    for (section, _) in SECTIONS {
        root.insert(section.to_string(), toml::Value::Table(toml::Table::new()));
    }
    let mut origins = BTreeMap::new();
    for ((section, name), (value, origin)) in layers.values {
        root[section]
            .as_table_mut()
            .expect("sections are tables")
            .insert(name.to_string(), value);
        origins.insert((section, name), origin);
    }
    let mut config: Config = toml::Value::Table(root.clone())
        .try_into()
        .context("the settings do not fit their types (a bug in the config table)")?;
    config.values = root;
    config.origins = origins;
    config.validate()?;
    Ok(config)
}

// ---------------------------------------------------------------------------------------------
// The resolved settings

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpSection {
    pub data: PathBuf,
    pub masters: u32,
    pub chunkservers: u32,
    pub processes: bool,
    #[serde(default)]
    pub mount: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MasterSection {
    #[serde(default)]
    pub data: Option<PathBuf>,
    #[serde(default)]
    pub certs: Option<PathBuf>,
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    pub name: String,
    pub id: u64,
    #[serde(default)]
    pub peers: Option<String>,
    pub join: bool,
    #[serde(default)]
    pub http: Option<SocketAddr>,
    pub chunk_size: u64,
    pub replication: u32,
    pub lease_ms: u64,
    pub trash_retention_ms: u64,
    pub client_session_timeout_ms: u64,
    pub checkpoint_every_records: u64,
    pub repair_interval_ms: u64,
    pub max_concurrent_clones: u32,
    pub clones_per_server: u32,
    pub clone_bandwidth: u64,
    pub balance_slack_chunks: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaftSection {
    pub raft_heartbeat_ms: u64,
    pub election_timeout_ms: u64,
    pub election_slot_ms: u64,
    pub election_jitter_ms: u64,
    pub snapshot_every_entries: u64,
    pub snapshot_keep_entries: u64,
    pub install_snapshot_timeout_ms: u64,
    pub raft_request_timeout_ms: u64,
    pub read_lease_ms: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    pub rpc_timeout_ms: u64,
    pub heartbeat_ms: u64,
    pub heartbeat_timeout_ms: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkserverSection {
    #[serde(default)]
    pub data: Option<PathBuf>,
    #[serde(default)]
    pub certs: Option<PathBuf>,
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    #[serde(default)]
    pub masters: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub http: Option<SocketAddr>,
    pub full_report_interval_ms: u64,
    pub push_buffer_bytes: u64,
    pub push_buffer_ttl_ms: u64,
    pub scrub_bytes_per_sec: u64,
    pub scrub_idle_ms: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapReduceSection {
    pub mr_worker_timeout_ms: u64,
    pub mr_locality_wait_ms: u64,
    pub mr_task_timeout_ms: u64,
    pub mr_max_task_failures: u32,
    pub mr_backup_factor: u32,
    pub mr_backup_min_ms: u64,
    pub mr_max_reducers: u32,
    pub mr_slots: u32,
    pub mr_fetch_parallelism: u32,
    pub mr_task_delay_ms: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSection {
    pub client_rpc_timeout_ms: u64,
    pub retry_deadline_ms: u64,
    pub location_cache_entries: u64,
    pub readahead_bytes: u64,
    pub readahead_windows: u32,
    pub write_buffer_bytes: u64,
    pub write_pushes_in_flight: u32,
    pub dirty_limit_bytes: u64,
    pub attr_ttl_ms: u64,
    pub max_write_bytes: u64,
    pub fuse_threads: u32,
    #[serde(default)]
    pub allow_other: Option<bool>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountSection {
    #[serde(default)]
    pub dir: Option<PathBuf>,
    #[serde(default)]
    pub http: Option<SocketAddr>,
}

/// Keys whose value must not be 0.
const POSITIVE: &[(&str, &str)] = &[
    ("master", "lease_ms"),
    ("mapreduce", "mr_slots"),
    ("master", "repair_interval_ms"),
    ("master", "max_concurrent_clones"),
    ("master", "clones_per_server"),
    ("master", "checkpoint_every_records"),
    ("cluster", "rpc_timeout_ms"),
    ("cluster", "heartbeat_ms"),
    ("raft", "raft_heartbeat_ms"),
    ("raft", "snapshot_every_entries"),
    ("chunkserver", "push_buffer_bytes"),
    ("mapreduce", "mr_fetch_parallelism"),
    ("mapreduce", "mr_max_reducers"),
    ("mapreduce", "mr_worker_timeout_ms"),
    ("client", "client_rpc_timeout_ms"),
    ("client", "location_cache_entries"),
    ("client", "write_buffer_bytes"),
    ("client", "readahead_windows"),
    ("client", "write_pushes_in_flight"),
    ("client", "fuse_threads"),
];

/// Every setting, resolved.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub up: UpSection,
    pub master: MasterSection,
    pub raft: RaftSection,
    pub cluster: ClusterSection,
    pub chunkserver: ChunkserverSection,
    pub mapreduce: MapReduceSection,
    pub client: ClientSection,
    pub mount: MountSection,
    /// The merged values (for passing them on as flags).
    #[serde(skip)]
    values: toml::Table,
    #[serde(skip)]
    origins: BTreeMap<(&'static str, &'static str), Origin>,
}

impl Config {
    /// Built-in defaults and the environment, plus `QUARRY_CONFIG` if set: what commands
    /// without their own flags (`quarry ls`, ...) use for the client side.
    pub fn from_env() -> anyhow::Result<Config> {
        let file = std::env::var_os("QUARRY_CONFIG").map(PathBuf::from);
        resolve(&Sources {
            file: file.as_deref(),
            env: &|v| std::env::var(v).ok(),
            flags: &[],
        })
    }

    /// "`section.key` = value (from ORIGIN)", for messages about a value.
    fn describe(&self, section: &'static str, name: &'static str) -> String {
        let origin = self
            .origins
            .get(&(section, name))
            .cloned()
            .unwrap_or(Origin::Default);
        let value = self
            .values
            .get(section)
            .and_then(|s| s.get(name))
            .map(|v| v.to_string())
            .unwrap_or_default();
        format!("[{section}] {name} = {value} (from {origin})")
    }

    /// An identity setting a command cannot run without.
    pub fn require<'a, T>(
        &self,
        value: &'a Option<T>,
        section: &'static str,
        name: &'static str,
    ) -> anyhow::Result<&'a T> {
        let key = find_key(section, name).expect("a known key");
        let how = if key.flag_on == 0 {
            format!("give the {} argument", name.to_ascii_uppercase())
        } else {
            format!("pass {}", key.flag())
        };
        value.as_ref().with_context(|| {
            format!(
                "no {name} given: {how} or set `{name}` in [{section}] of the config file (--config FILE or QUARRY_CONFIG)"
            )
        })
    }

    fn validate(&self) -> anyhow::Result<()> {
        let check = |ok: bool,
                     section: &'static str,
                     name: &'static str,
                     why: &str|
         -> anyhow::Result<()> {
            if ok {
                Ok(())
            } else {
                bail!("{}: {why}", self.describe(section, name))
            }
        };
        for (section, name) in POSITIVE {
            let v = self.values.get(*section).and_then(|t| t.get(*name));
            check(
                v.and_then(toml::Value::as_integer) != Some(0),
                section,
                name,
                "must not be 0",
            )?;
        }
        let m = &self.master;
        check(
            (1..=255).contains(&m.replication),
            "master",
            "replication",
            "must be between 1 and 255",
        )?;
        check(
            m.chunk_size >= quarry_proto::CHECKSUM_BLOCK_BYTES
                && m.chunk_size <= MAX_CHUNK_SIZE
                && m.chunk_size
                    .is_multiple_of(quarry_proto::CHECKSUM_BLOCK_BYTES),
            "master",
            "chunk_size",
            "must be a multiple of 64 KiB between 64 KiB and 1 GiB",
        )?;
        let c = &self.cluster;
        check(
            c.heartbeat_timeout_ms > c.heartbeat_ms,
            "cluster",
            "heartbeat_timeout_ms",
            &format!("must be longer than heartbeat_ms ({})", c.heartbeat_ms),
        )?;
        let r = &self.raft;
        let timing = self.raft_config();
        let gap = r.election_slot_ms.saturating_sub(r.election_jitter_ms);
        check(
            gap >= timing.min_election_gap_ms(),
            "raft",
            "election_slot_ms",
            &format!(
                "minus election_jitter_ms ({}) must be at least 2.5 raft_heartbeat_ms ({} ms)",
                r.election_jitter_ms,
                timing.min_election_gap_ms()
            ),
        )?;
        check(
            r.election_timeout_ms > r.raft_heartbeat_ms,
            "raft",
            "election_timeout_ms",
            "must be longer than raft_heartbeat_ms",
        )?;
        check(
            r.read_lease_ms * 2 <= r.election_timeout_ms,
            "raft",
            "read_lease_ms",
            &format!(
                "must be at most half of election_timeout_ms ({} ms)",
                r.election_timeout_ms
            ),
        )?;
        let cl = &self.client;
        check(
            (4096..=16 << 20).contains(&cl.max_write_bytes),
            "client",
            "max_write_bytes",
            "must be between 4 KiB and 16 MiB",
        )?;
        check(
            cl.dirty_limit_bytes >= cl.write_buffer_bytes,
            "client",
            "dirty_limit_bytes",
            &format!(
                "must be at least write_buffer_bytes ({})",
                cl.write_buffer_bytes
            ),
        )?;
        check(
            (1..=8).contains(&self.up.masters),
            "up",
            "masters",
            "must be between 1 and 8",
        )?;
        check(
            self.up.chunkservers >= 1,
            "up",
            "chunkservers",
            "must be at least 1",
        )?;
        Ok(())
    }

    // -- the library crates' config structs --------------------------------------------------

    pub fn master_config(&self, data: PathBuf, raft: Option<RaftSettings>) -> MasterConfig {
        let m = &self.master;
        let mut c = MasterConfig::new(data);
        c.raft = raft;
        c.chunk_size = m.chunk_size;
        c.replication = m.replication;
        c.lease_duration_ms = m.lease_ms;
        c.heartbeat_timeout_ms = self.cluster.heartbeat_timeout_ms;
        c.checkpoint_every_records = m.checkpoint_every_records;
        c.rpc_timeout_ms = self.cluster.rpc_timeout_ms;
        c.trash_retention_ms = m.trash_retention_ms;
        c.client_session_timeout_ms = m.client_session_timeout_ms;
        c.repair_interval_ms = m.repair_interval_ms;
        c.max_concurrent_clones = m.max_concurrent_clones;
        c.clones_per_server = m.clones_per_server;
        c.clone_bandwidth_bytes_per_sec = m.clone_bandwidth;
        c.balance_slack_chunks = m.balance_slack_chunks;
        c
    }

    /// Raft timing (the initial chunk size and goal are taken from the master's config).
    pub fn raft_config(&self) -> RaftConfig {
        let r = &self.raft;
        RaftConfig {
            heartbeat_interval_ms: r.raft_heartbeat_ms,
            election_timeout_base_ms: r.election_timeout_ms,
            election_slot_ms: r.election_slot_ms,
            election_jitter_ms: r.election_jitter_ms,
            snapshot_logs_since_last: r.snapshot_every_entries,
            max_in_snapshot_log_to_keep: r.snapshot_keep_entries,
            install_snapshot_timeout_ms: r.install_snapshot_timeout_ms,
            request_timeout_ms: r.raft_request_timeout_ms,
            read_lease_ms: r.read_lease_ms,
            chunk_size: self.master.chunk_size,
            root_goal: self.master.replication,
            ..RaftConfig::default()
        }
    }

    pub fn chunkserver_config(&self, data: PathBuf, masters: &str) -> ChunkserverConfig {
        let masters = masters
            .split(',')
            .map(|m| m.trim().to_string())
            .filter(|m| !m.is_empty())
            .collect();
        let s = &self.chunkserver;
        let mut c = ChunkserverConfig::new(data, masters);
        c.heartbeat_interval_ms = self.cluster.heartbeat_ms;
        c.rpc_timeout_ms = self.cluster.rpc_timeout_ms;
        c.full_report_interval_ms = s.full_report_interval_ms;
        c.push_buffer_bytes = s.push_buffer_bytes;
        c.push_buffer_ttl_ms = s.push_buffer_ttl_ms;
        c.scrub_bytes_per_sec = s.scrub_bytes_per_sec;
        c.scrub_idle_ms = s.scrub_idle_ms;
        c
    }

    pub fn coordinator_config(&self) -> CoordinatorConfig {
        let mr = &self.mapreduce;
        let mut c = CoordinatorConfig::default();
        c.scheduler.worker_timeout_ms = mr.mr_worker_timeout_ms;
        c.scheduler.locality_wait_ms = mr.mr_locality_wait_ms;
        c.scheduler.task_timeout_ms = mr.mr_task_timeout_ms;
        c.scheduler.max_task_failures = mr.mr_max_task_failures;
        c.scheduler.backup_factor = mr.mr_backup_factor;
        c.scheduler.backup_min_ms = mr.mr_backup_min_ms;
        c.max_reducers = mr.mr_max_reducers;
        c
    }

    pub fn worker_config(&self, c: &ChunkserverConfig) -> WorkerConfig {
        let mr = &self.mapreduce;
        let mut w = WorkerConfig::new(c.data_dir.clone(), c.masters.clone());
        w.slots = mr.mr_slots;
        w.fetch_parallelism = mr.mr_fetch_parallelism as usize;
        w.task_delay = Duration::from_millis(mr.mr_task_delay_ms);
        w
    }

    pub fn client_config(&self, masters: Vec<String>) -> ClientConfig {
        let cl = &self.client;
        let mut c = ClientConfig::new(masters);
        c.rpc_timeout = Duration::from_millis(cl.client_rpc_timeout_ms);
        c.retry_deadline = Duration::from_millis(cl.retry_deadline_ms);
        c.location_cache_entries = cl.location_cache_entries as usize;
        c
    }

    pub fn mount_options(&self) -> quarry_fs::MountOptions {
        let cl = &self.client;
        let defaults = quarry_fs::MountOptions::default();
        quarry_fs::MountOptions {
            ttl: Duration::from_millis(cl.attr_ttl_ms),
            max_write_bytes: cl.max_write_bytes as u32,
            flush_bytes: cl.write_buffer_bytes as usize,
            buffer_budget_bytes: cl.dirty_limit_bytes as usize,
            readahead_bytes: cl.readahead_bytes,
            readahead_windows: cl.readahead_windows as usize,
            pushes_in_flight: cl.write_pushes_in_flight as usize,
            session_threads: cl.fuse_threads as usize,
            allow_other: cl.allow_other.unwrap_or(defaults.allow_other),
            ..defaults
        }
    }

    /// Every server tunable as `--flag=value`: how `quarry up --processes` hands its resolved
    /// settings to the `quarry master` and `quarry chunkserver` processes it starts.
    pub fn server_args(&self) -> Vec<String> {
        KEYS.iter()
            .filter(|k| k.env && k.flag_on & (MASTER | CHUNKSERVER) == (MASTER | CHUNKSERVER))
            .filter_map(|k| {
                let v = self.values.get(k.section)?.get(k.name)?;
                let text = match v {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                Some(format!("{}={text}", k.flag()))
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Flags: generated from the table

/// The flags of one command ([`UP`], [`MASTER`], [`CHUNKSERVER`] or [`MOUNT`]): `--config` and
/// every key whose `flag_on` includes the command. Only flags given on the command line are
/// kept; defaults come from [`KEYS`] when resolving.
#[derive(Clone, Debug, Default)]
pub struct Flags<const CMD: u8> {
    pub config: Option<PathBuf>,
    pub given: Vec<(&'static Key, String)>,
}

pub type UpFlags = Flags<UP>;
pub type MasterFlags = Flags<MASTER>;
pub type ChunkserverFlags = Flags<CHUNKSERVER>;
pub type MountFlags = Flags<MOUNT>;

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn flag_keys(cmd: u8) -> impl Iterator<Item = &'static Key> {
    KEYS.iter().filter(move |k| k.flag_on & cmd != 0)
}

/// The default as `quarry config default` and `--help` show it.
fn shown_default(key: &Key) -> String {
    match (key.default)() {
        Dflt::None => key.unset.to_string(),
        Dflt::Int(n) => match key.kind {
            Kind::Bytes => human_bytes(n),
            _ => n.to_string(),
        },
        Dflt::Bool(b) => b.to_string(),
        Dflt::Text(t) => t.to_string(),
    }
}

/// `65536` → `64KiB` when exact, else the number.
fn human_bytes(n: u64) -> String {
    for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if n >= 1 << shift && n.is_multiple_of(1 << shift) {
            return format!("{}{unit}", n >> shift);
        }
    }
    n.to_string()
}

impl<const CMD: u8> Flags<CMD> {
    /// Resolve with the process environment.
    pub fn resolve(&self) -> anyhow::Result<Config> {
        let file = self
            .config
            .clone()
            .or_else(|| std::env::var_os("QUARRY_CONFIG").map(PathBuf::from));
        resolve(&Sources {
            file: file.as_deref(),
            env: &|v| std::env::var(v).ok(),
            flags: &self.given,
        })
    }

    /// Add a value given on the command line in another form (a positional argument).
    pub fn push(&mut self, section: &str, name: &str, text: String) {
        let key = find_key(section, name).expect("a known key");
        self.given.push((key, text));
    }
}

impl<const CMD: u8> clap::FromArgMatches for Flags<CMD> {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let config = m.get_one::<PathBuf>("config").cloned();
        let given = flag_keys(CMD)
            .filter(|k| m.value_source(k.name) == Some(clap::parser::ValueSource::CommandLine))
            .filter_map(|k| Some((k, m.get_one::<String>(k.name)?.clone())))
            .collect();
        Ok(Flags { config, given })
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl<const CMD: u8> clap::Args for Flags<CMD> {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        let mut cmd = cmd.arg(
            clap::Arg::new("config")
                .long("config")
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .help("Config file (TOML; default: $QUARRY_CONFIG). Flags and QUARRY_* variables override it; see `quarry config default`"),
        );
        for key in flag_keys(CMD) {
            let mut help = key.doc.to_string();
            match (key.default)() {
                Dflt::None => help.push_str(&format!(" [{}]", key.unset)),
                _ => help.push_str(&format!(" [default: {}]", shown_default(key))),
            }
            if let Some(var) = key.env_var() {
                help.push_str(&format!(" [env: {var}]"));
            }
            let mut arg = clap::Arg::new(key.name)
                .long(leak(key.flag()[2..].to_string()))
                .value_name(key.kind.value_name())
                .help(leak(help));
            if key.kind == Kind::Bool {
                // `--join` alone means true; `--join=false` overrides a file's `true`.
                arg = arg
                    .num_args(0..=1)
                    .require_equals(true)
                    .default_missing_value("true");
            }
            if !key.alias.is_empty() {
                arg = arg.alias(key.alias);
            }
            cmd = cmd.arg(arg);
        }
        cmd
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

// ---------------------------------------------------------------------------------------------
// `quarry config default`, `quarry config check`, and the reference of docs/config.md

#[derive(clap::Subcommand)]
pub enum ConfigCommand {
    /// Print a complete config file: every key at its default, with its documentation.
    Default {
        /// Print the key reference of docs/config.md (Markdown tables) instead.
        #[arg(long, hide = true)]
        markdown: bool,
    },
    /// Check a config file: every section and key known, every value valid.
    Check { file: PathBuf },
}

pub fn run(cmd: ConfigCommand) -> anyhow::Result<()> {
    match cmd {
        ConfigCommand::Default { markdown: false } => print!("{}", default_toml()),
        ConfigCommand::Default { markdown: true } => print!("{}", markdown_reference()),
        ConfigCommand::Check { file } => {
            resolve(&Sources {
                file: Some(&file),
                env: &|_| None,
                flags: &[],
            })?;
            println!("{}: OK", file.display());
        }
    }
    Ok(())
}

/// The value of a key's default as TOML text.
fn default_toml_value(key: &Key) -> Option<String> {
    Some(match (key.default)() {
        Dflt::None => return None,
        Dflt::Int(n) if key.kind == Kind::Bytes && human_bytes(n) != n.to_string() => {
            format!("\"{}\"", human_bytes(n))
        }
        Dflt::Int(n) => n.to_string(),
        Dflt::Bool(b) => b.to_string(),
        Dflt::Text(t) => toml::Value::String(t.into()).to_string(),
    })
}

fn wrap_comment(out: &mut String, text: &str) {
    let mut line = String::from("#");
    for word in text.split_whitespace() {
        if line.len() + word.len() > 98 {
            out.push_str(&line);
            out.push('\n');
            line = String::from("#");
        }
        line.push(' ');
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
}

/// A complete config file: every key at its default (keys without one commented out, with an
/// example), each with its documentation, unit, flag and environment variable.
pub fn default_toml() -> String {
    let mut out = String::new();
    out.push_str(
        "# Quarry configuration: every key at its built-in default (`quarry config default`).\n\
         # Use it with `quarry up|master|chunkserver|mount --config FILE` (or QUARRY_CONFIG=FILE);\n\
         # each command reads the sections it needs. Precedence: a flag on the command line, then\n\
         # the environment variable QUARRY_<KEY>, then this file, then the built-in default.\n\
         # Sizes take an integer or a string like \"64MiB\"; durations (keys ending in _ms) an\n\
         # integer of milliseconds or a string like \"10s\". See docs/config.md.\n",
    );
    for (section, doc) in SECTIONS {
        out.push('\n');
        wrap_comment(&mut out, doc);
        out.push_str(&format!("[{section}]\n"));
        for key in KEYS.iter().filter(|k| k.section == *section) {
            let mut meta = format!("({}", key.kind.unit().replace('`', ""));
            if key.flag_on != 0 {
                meta.push_str(&format!("; flag {}", key.flag()));
            }
            if let Some(var) = key.env_var() {
                meta.push_str(&format!("; env {var}"));
            }
            meta.push(')');
            wrap_comment(&mut out, &format!("{} {meta}", key.doc.replace('`', "")));
            match default_toml_value(key) {
                Some(v) => out.push_str(&format!("{} = {v}\n", key.name)),
                None => out.push_str(&format!(
                    "# {} = {}    ({})\n",
                    key.name, key.example, key.unset
                )),
            }
        }
    }
    out
}

/// One Markdown table per section: key, default, unit, flag and environment, meaning.
pub fn markdown_reference() -> String {
    let mut out = String::new();
    for (section, doc) in SECTIONS {
        out.push_str(&format!("### `[{section}]`\n\n{doc}\n\n"));
        out.push_str("| Key | Default | Unit | Flag / environment | Meaning |\n");
        out.push_str("|---|---|---|---|---|\n");
        for key in KEYS.iter().filter(|k| k.section == *section) {
            let default = match default_toml_value(key) {
                Some(v) => format!("`{v}`"),
                None => format!("({})", key.unset),
            };
            let mut flag = if key.flag_on == 0 {
                "—".to_string()
            } else {
                format!("`{}`", key.flag())
            };
            if let Some(var) = key.env_var() {
                flag.push_str(&format!(", `{var}`"));
            }
            out.push_str(&format!(
                "| `{}` | {default} | {} | {flag} | {} |\n",
                key.name,
                key.kind.unit(),
                key.doc
            ));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Args, FromArgMatches};

    fn resolve_with(
        file: Option<&str>,
        env: &[(&str, &str)],
        flags: &[(&str, &str, &str)],
    ) -> anyhow::Result<Config> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("quarry.toml");
        if let Some(text) = file {
            std::fs::write(&path, text).unwrap();
        }
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |var: &str| env.iter().find(|(k, _)| k == var).map(|(_, v)| v.clone());
        let flags: Vec<(&'static Key, String)> = flags
            .iter()
            .map(|(s, k, v)| (find_key(s, k).unwrap(), v.to_string()))
            .collect();
        resolve(&Sources {
            file: file.map(|_| path.as_path()),
            env: &lookup,
            flags: &flags,
        })
    }

    /// The error `resolve_with` gives, as text.
    fn resolve_err(
        file: Option<&str>,
        env: &[(&str, &str)],
        flags: &[(&str, &str, &str)],
    ) -> String {
        resolve_with(file, env, flags).unwrap_err().to_string()
    }

    #[test]
    fn defaults_alone_resolve() {
        let c = resolve_with(None, &[], &[]).unwrap();
        assert_eq!(c.master.chunk_size, quarry_proto::DEFAULT_CHUNK_SIZE);
        assert_eq!(c.master.replication, 3);
        assert_eq!(c.master.trash_retention_ms, 86_400_000);
        assert_eq!(c.master.name, "master-0");
        assert_eq!(c.master.data, None);
        assert_eq!(c.client.allow_other, None);
        assert_eq!(c.up.masters, 3);
        // The conversions keep the libraries' defaults where the table reads them.
        let lib = RaftConfig::default();
        let raft = c.raft_config();
        assert_eq!(raft.heartbeat_interval_ms, lib.heartbeat_interval_ms);
        assert_eq!(raft.election_slot_ms, lib.election_slot_ms);
        assert_eq!(raft.snapshot_chunk_bytes, lib.snapshot_chunk_bytes);
    }

    #[test]
    fn flag_beats_env_beats_file_beats_default() {
        let file = "[master]\nchunk_size = \"1MiB\"\nreplication = 2\nlease_ms = \"30s\"\n\
                    [cluster]\nheartbeat_ms = 500\n";
        let env = [("QUARRY_REPLICATION", "4"), ("QUARRY_LEASE_MS", "20000")];
        let flags = [("master", "lease_ms", "5s")];
        let c = resolve_with(Some(file), &env, &flags).unwrap();
        assert_eq!(c.master.chunk_size, 1 << 20, "file beats default");
        assert_eq!(c.master.replication, 4, "env beats file");
        assert_eq!(c.master.lease_ms, 5_000, "flag beats env and file");
        assert_eq!(c.cluster.heartbeat_ms, 500, "file");
        assert_eq!(c.cluster.heartbeat_timeout_ms, 10_000, "default");
        let m = c.master_config(PathBuf::from("/d"), None);
        assert_eq!(
            (m.chunk_size, m.replication, m.lease_duration_ms),
            (1 << 20, 4, 5_000)
        );
        assert_eq!(
            c.chunkserver_config(PathBuf::new(), "a:1")
                .heartbeat_interval_ms,
            500
        );
    }

    #[test]
    fn identity_has_no_environment_variable() {
        let c = resolve_with(
            Some("[master]\ndata = \"/from/file\"\nname = \"m1\"\n"),
            &[("QUARRY_DATA", "/from/env"), ("QUARRY_NAME", "env")],
            &[("master", "name", "m2")],
        )
        .unwrap();
        assert_eq!(c.master.data, Some(PathBuf::from("/from/file")));
        assert_eq!(c.master.name, "m2");
        let missing = c.require(&c.master.listen, "master", "listen").unwrap_err();
        assert!(missing.to_string().contains("--listen"), "{missing}");
    }

    #[test]
    fn unknown_key_names_key_and_file() {
        let e = resolve_err(Some("[master]\nchunk_sise = 1048576\n"), &[], &[]);
        assert!(e.contains("unknown key `chunk_sise` in [master]"), "{e}");
        assert!(e.contains("quarry.toml"), "{e}");
        let e = resolve_err(Some("[chunkserver]\nreplication = 2\n"), &[], &[]);
        assert!(e.contains("`replication` belongs in [master]"), "{e}");
        let e = resolve_err(Some("[masters]\n"), &[], &[]);
        assert!(e.contains("unknown section [masters]"), "{e}");
        let e = resolve_err(Some("replication = 2\n"), &[], &[]);
        assert!(e.contains("unknown section [replication]"), "{e}");
    }

    #[test]
    fn bad_values_are_clear_errors() {
        let e = resolve_err(Some("[master]\nreplication = 0\n"), &[], &[]);
        assert!(e.contains("[master] replication = 0"), "{e}");
        assert!(e.contains("quarry.toml"), "{e}");
        assert!(e.contains("between 1 and 255"), "{e}");
        let e = resolve_err(Some("[master]\nlease_ms = \"ten seconds\"\n"), &[], &[]);
        assert!(e.contains("[master] lease_ms: expected a duration"), "{e}");
        let e = resolve_err(Some("[master]\nreplication = \"two\"\n"), &[], &[]);
        assert!(e.contains("expected a whole number, got string"), "{e}");
        let e = resolve_err(None, &[("QUARRY_CHUNK_SIZE", "1 MB")], &[]);
        assert!(e.contains("QUARRY_CHUNK_SIZE: expected bytes"), "{e}");
        let e = resolve_err(None, &[], &[("master", "chunk_size", "100000")]);
        assert!(e.contains("flag --chunk-size"), "{e}");
        assert!(e.contains("multiple of 64 KiB"), "{e}");
        let e = resolve_err(Some("[cluster]\nheartbeat_timeout_ms = 500\n"), &[], &[]);
        assert!(e.contains("longer than heartbeat_ms"), "{e}");
        let e = resolve_err(Some("[master]\nlisten = \"nowhere\"\n"), &[], &[]);
        assert!(e.contains("expected an address"), "{e}");
        let e = resolve_err(Some("[master\n"), &[], &[]);
        assert!(e.contains("quarry.toml"), "{e}");
        let e = resolve_err(Some("[raft]\nelection_slot_ms = 100\n"), &[], &[]);
        assert!(e.contains("election_slot_ms"), "{e}");
    }

    #[test]
    fn zero_is_refused_where_it_makes_no_sense() {
        for (section, name) in POSITIVE {
            let key = find_key(section, name).expect("POSITIVE names a key");
            let e = resolve_err(None, &[], &[(section, name, "0")]);
            assert!(e.contains(&format!("{} = 0 (from flag", key.name)), "{e}");
            assert!(e.contains("must not be 0"), "{e}");
        }
    }

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("1 GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("512k"), Ok(512 << 10));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("1_048_576"), Ok(1 << 20));
        assert!(parse_bytes("1.5GiB").is_err());
        assert!(parse_bytes("MiB").is_err());
        assert!(parse_bytes("99999999999TiB").is_err());
        assert_eq!(parse_millis("250ms"), Ok(250));
        assert_eq!(parse_millis("10s"), Ok(10_000));
        assert_eq!(parse_millis("2m"), Ok(120_000));
        assert_eq!(parse_millis("1d"), Ok(86_400_000));
        assert_eq!(parse_millis("75"), Ok(75));
        assert!(parse_millis("soon").is_err());
        assert!(parse_millis("10 parsecs").is_err());
    }

    #[test]
    fn default_template_is_complete_and_valid() {
        let text = default_toml();
        for key in KEYS {
            assert!(
                text.contains(&format!("\n{} = ", key.name))
                    || text.contains(&format!("\n# {} = ", key.name)),
                "{}.{} missing from `quarry config default`",
                key.section,
                key.name
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("default.toml");
        std::fs::write(&path, &text).unwrap();
        let from_file = resolve(&Sources {
            file: Some(&path),
            env: &|_| None,
            flags: &[],
        })
        .unwrap();
        let defaults = resolve_with(None, &[], &[]).unwrap();
        assert_eq!(from_file.values, defaults.values);
        // Every key with a default is set in the template, so each came from the file.
        for key in KEYS {
            if (key.default)() != Dflt::None {
                assert_eq!(
                    from_file.origins[&(key.section, key.name)],
                    Origin::File(path.clone())
                );
            }
        }
    }

    #[test]
    fn docs_list_every_key() {
        let docs = include_str!("../../docs/config.md");
        for (section, _) in SECTIONS {
            let heading = format!("### `[{section}]`");
            let start = docs
                .find(&heading)
                .unwrap_or_else(|| panic!("docs/config.md has no heading {heading}"));
            let rest = &docs[start + heading.len()..];
            let body = &rest[..rest.find("\n### ").unwrap_or(rest.len())];
            for key in KEYS.iter().filter(|k| k.section == *section) {
                assert!(
                    body.contains(&format!("| `{}` |", key.name)),
                    "docs/config.md does not document [{section}] {} (regenerate the tables with `quarry config default --markdown`)",
                    key.name
                );
            }
        }
        // And nothing the schema no longer has.
        assert!(
            docs.contains(&markdown_reference()),
            "docs/config.md's key tables are stale: paste `quarry config default --markdown`"
        );
    }

    #[test]
    fn examples_in_docs_are_valid() {
        let docs = include_str!("../../docs/config.md");
        let mut n = 0;
        for block in docs.split("```toml\n").skip(1) {
            let text = &block[..block.find("```").expect("closed block")];
            resolve_with(Some(text), &[], &[]).unwrap_or_else(|e| panic!("{e:#}\n{text}"));
            n += 1;
        }
        assert!(n >= 2, "docs/config.md has its examples");
    }

    #[test]
    fn names_are_unambiguous() {
        // Environment variables are unique, and none is one Quarry uses for something else.
        let mut vars: Vec<String> = KEYS.iter().filter_map(Key::env_var).collect();
        vars.sort();
        let n = vars.len();
        vars.dedup();
        assert_eq!(vars.len(), n, "two keys share an environment variable");
        for taken in [
            "QUARRY_CONFIG",
            "QUARRY_CLUSTER",
            "QUARRY_LOG",
            "QUARRY_BIN",
        ] {
            assert!(!vars.iter().any(|v| v == taken), "{taken}");
        }
        // Within each command, flags are unique (clap would panic otherwise).
        for cmd in [UP, MASTER, CHUNKSERVER, MOUNT] {
            let mut flags: Vec<String> = flag_keys(cmd).map(Key::flag).collect();
            flags.push("--config".into());
            flags.sort();
            let n = flags.len();
            flags.dedup();
            assert_eq!(flags.len(), n, "command {cmd}: a flag is listed twice");
        }
        for (section, _) in SECTIONS {
            assert!(KEYS.iter().any(|k| k.section == *section), "{section}");
        }
    }

    #[test]
    fn only_flags_given_count() {
        let cmd = MasterFlags::augment_args(clap::Command::new("master"));
        cmd.clone().debug_assert();
        let m = cmd
            .clone()
            .try_get_matches_from([
                "master",
                "--config=/etc/q.toml",
                "--chunk-size=1MiB",
                "--join",
                "--allow-other=false",
            ])
            .unwrap_err();
        // `--allow-other` is a client setting: not a flag of `quarry master`.
        assert_eq!(m.kind(), clap::error::ErrorKind::UnknownArgument);
        let m = cmd
            .try_get_matches_from([
                "master",
                "--config=/etc/q.toml",
                "--chunk-size=1MiB",
                "--join",
            ])
            .unwrap();
        let f = MasterFlags::from_arg_matches(&m).unwrap();
        assert_eq!(f.config, Some(PathBuf::from("/etc/q.toml")));
        let given: Vec<(&str, &str)> = f.given.iter().map(|(k, v)| (k.name, v.as_str())).collect();
        assert_eq!(given, [("join", "true"), ("chunk_size", "1MiB")]);
        let c = resolve_with(
            Some("[master]\njoin = true\n"),
            &[],
            &[("master", "join", "false")],
        )
        .unwrap();
        assert!(!c.master.join);
        // The chunkserver's old flag name still works.
        let cmd = ChunkserverFlags::augment_args(clap::Command::new("chunkserver"));
        let m = cmd
            .try_get_matches_from(["chunkserver", "--master=a:1,b:2"])
            .unwrap();
        let f = ChunkserverFlags::from_arg_matches(&m).unwrap();
        assert_eq!(f.given[0].0.name, "masters");
    }

    #[test]
    fn server_args_round_trip() {
        let c = resolve_with(Some("[master]\nchunk_size = \"1MiB\"\n"), &[], &[]).unwrap();
        let args = c.server_args();
        assert!(
            args.contains(&"--chunk-size=1048576".to_string()),
            "{args:?}"
        );
        let cmd = ChunkserverFlags::augment_args(clap::Command::new("chunkserver"));
        let m = cmd
            .try_get_matches_from(std::iter::once("chunkserver".to_string()).chain(args))
            .unwrap();
        let f = ChunkserverFlags::from_arg_matches(&m).unwrap();
        let again = resolve(&Sources {
            file: None,
            env: &|_| None,
            flags: &f.given,
        })
        .unwrap();
        for section in ["master", "raft", "cluster", "chunkserver", "mapreduce"] {
            assert_eq!(again.values[section], c.values[section], "{section}");
        }
    }
}
