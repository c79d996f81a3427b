//! `quarry`: one binary for every role and every command. This is the only crate that reads
//! flags, environment variables and config files; the library crates take plain config structs.

mod bench;
mod cert;
mod cluster;
mod config;
mod connect;
mod files;
mod health;
mod job;
mod mount;
mod stats;
mod trash;
mod up;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "quarry",
    version,
    about = "Quarry: a GFS-style distributed filesystem"
)]
struct Cli {
    /// The cluster file (default: $QUARRY_CLUSTER, else ./quarry-data/cluster.toml).
    #[arg(long, global = true)]
    cluster: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a loopback cluster (masters and chunkservers) and run until Ctrl-C.
    Up {
        #[command(flatten)]
        flags: config::UpFlags,
    },
    /// Run a master.
    Master {
        #[command(flatten)]
        flags: config::MasterFlags,
    },
    /// Raft group membership: add or remove a master.
    #[command(subcommand)]
    Masters(MastersCommand),
    /// Run a chunkserver.
    Chunkserver {
        #[command(flatten)]
        flags: config::ChunkserverFlags,
    },
    /// Mount the filesystem at DIR (FUSE) and serve until Ctrl-C or SIGTERM, then unmount.
    Mount {
        /// Where to mount (default: `dir` in [mount] of the config file).
        dir: Option<PathBuf>,
        #[command(flatten)]
        flags: config::MountFlags,
    },
    /// Config files: print one with every key at its default, or check one.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Per-second rates from the nodes' /metrics: RPCs (ops/s, p50/p99 latency, bytes/s),
    /// chunkserver and FUSE bytes/s and FUSE ops/s. Two samples a second apart, or with
    /// --watch one line set per second until Ctrl-C.
    Stats {
        /// Refresh every second until Ctrl-C.
        #[arg(long)]
        watch: bool,
        /// Endpoints to read (`host:port` or `http://host:port/metrics`); default: every
        /// HTTP endpoint in the cluster file.
        endpoints: Vec<String>,
    },
    /// Unmount a Quarry mount (`fusermount3 -u DIR`).
    Umount { dir: PathBuf },
    /// Copy a local file (`-` for stdin) into the filesystem.
    Put { local: String, remote: String },
    /// Copy a file out of the filesystem (`-` for stdout).
    Get { remote: String, local: String },
    /// Print files.
    Cat {
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// List a directory.
    Ls {
        #[arg(short = 'l')]
        long: bool,
        #[arg(default_value = "/")]
        path: String,
    },
    /// Make a directory.
    Mkdir {
        #[arg(short = 'p')]
        parents: bool,
        path: String,
    },
    /// Remove a file, or a directory tree with -r.
    Rm {
        #[arg(short = 'r')]
        recursive: bool,
        path: String,
    },
    /// Rename or move.
    Mv { src: String, dst: String },
    /// Show a file's attributes and chunks.
    Stat { path: String },
    /// Show masters and chunkservers.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Check the replicas of every chunk of the files below PATH: healthy, under- and
    /// over-replicated, corrupt, missing. Exits non-zero unless the result is HEALTHY.
    Fsck {
        #[arg(default_value = "/")]
        path: String,
        #[arg(long)]
        json: bool,
    },
    /// Show each chunk of a file with its replicas: server, state (live, dead, stale, corrupt)
    /// and which one holds the lease.
    Fileinfo {
        path: String,
        #[arg(long)]
        json: bool,
    },
    /// MapReduce jobs over files in the filesystem: wordcount, grep, index; status, list, counters.
    #[command(subcommand)]
    Job(job::JobCommand),
    /// Deleted files kept by the master: list, restore, purge.
    #[command(subcommand)]
    Trash(trash::TrashCommand),
    /// Set the replication goal of a file, or of a directory (its future children); with -r,
    /// of everything under the directory.
    Setrep {
        #[arg(short = 'r')]
        recursive: bool,
        #[arg(value_parser = clap::value_parser!(u32).range(1..=255))]
        replicas: u32,
        path: String,
    },
    /// Show the replication goal of a file or directory.
    Getrep { path: String },
    /// Measure throughput (big-file write and read) and metadata rates (create, stat, rename,
    /// unlink) through the client library or a mount, with one or more concurrent clients.
    Bench(bench::BenchArgs),
    /// Certificates for a cluster on several machines: create the CA, issue a node's
    /// certificates, show and check them.
    #[command(subcommand)]
    Cert(cert::CertCommand),
}

#[derive(Subcommand)]
enum MastersCommand {
    /// Add a running master (started with `quarry master --join`) to the group.
    Add { id: u64, addr: String },
    /// Remove a master from the group.
    Remove { id: u64 },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("QUARRY_LOG")
                // openraft logs every missed heartbeat and stale vote as a warning; those are
                // routine in a Raft group (its errors still show).
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,openraft=error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("quarry: starting the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quarry: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Up { flags } => up::up(&flags.resolve()?).await,
        Command::Config(cmd) => config::run(cmd),
        Command::Umount { dir } => mount::run_umount(&dir),
        Command::Cert(cmd) => cert::run(cmd),
        Command::Mount { dir, mut flags } => {
            if let Some(dir) = dir {
                flags.push("mount", "dir", dir.to_string_lossy().into_owned());
            }
            let cfg = flags.resolve()?;
            let dir = cfg.require(&cfg.mount.dir, "mount", "dir")?;
            let file = cluster::ClusterFile::load(&cluster::cluster_path(cli.cluster))?;
            mount::run_mount(&file, dir, cfg.mount.http, &cfg).await
        }
        Command::Stats { watch, endpoints } => {
            let endpoints = if endpoints.is_empty() {
                let file = cluster::ClusterFile::load(&cluster::cluster_path(cli.cluster))?;
                anyhow::ensure!(
                    !file.http.is_empty(),
                    "the cluster file lists no HTTP endpoints; name them: quarry stats HOST:PORT..."
                );
                file.http.values().cloned().collect()
            } else {
                endpoints
            };
            stats::run(&endpoints, watch).await
        }
        Command::Master { flags } => {
            let cfg = flags.resolve()?;
            let m = &cfg.master;
            let raft = match &m.peers {
                Some(p) => Some(up::raft_settings(
                    m.id,
                    &up::parse_peers(p)?,
                    !m.join,
                    cfg.raft_config(),
                )?),
                None => None,
            };
            up::run_master(&cfg, raft).await
        }
        Command::Chunkserver { flags } => up::run_chunkserver(&flags.resolve()?).await,
        Command::Bench(args) => {
            // Through a mount the cluster file is not needed.
            let file = match args.mount {
                Some(_) => None,
                None => Some(cluster::ClusterFile::load(&cluster::cluster_path(
                    cli.cluster,
                ))?),
            };
            bench::run(file.as_ref(), args).await
        }
        command => {
            let file = cluster::ClusterFile::load(&cluster::cluster_path(cli.cluster))?;
            let cfg = config::Config::from_env()?;
            let conn = connect::connect(&file, &cfg).await?;
            let c = &conn.client;
            match command {
                Command::Put { local, remote } => files::put(c, &local, &remote).await,
                Command::Get { remote, local } => files::get(c, &remote, &local).await,
                Command::Cat { paths } => files::cat(c, &paths).await,
                Command::Ls { long, path } => files::ls(c, &path, long).await,
                Command::Mkdir { parents, path } => files::mkdir(c, &path, parents).await,
                Command::Rm { recursive, path } => files::rm(c, &path, recursive).await,
                Command::Mv { src, dst } => files::mv(c, &src, &dst).await,
                Command::Stat { path } => files::stat(c, &path).await,
                Command::Status { json } => files::status(c, json, &file.master_urls()).await,
                Command::Fsck { path, json } => health::fsck(c, &path, json).await,
                Command::Fileinfo { path, json } => health::fileinfo(c, &path, json).await,
                Command::Job(cmd) => job::run(c, cmd).await,
                Command::Trash(cmd) => trash::run(c, cmd).await,
                Command::Setrep {
                    recursive,
                    replicas,
                    path,
                } => trash::setrep(c, replicas, &path, recursive).await,
                Command::Getrep { path } => trash::getrep(c, &path).await,
                Command::Masters(MastersCommand::Add { id, addr }) => {
                    c.add_master(id, addr).await?;
                    println!("master {id} added");
                    Ok(())
                }
                Command::Masters(MastersCommand::Remove { id }) => {
                    c.remove_master(id).await?;
                    println!("master {id} removed");
                    Ok(())
                }
                Command::Up { .. }
                | Command::Master { .. }
                | Command::Chunkserver { .. }
                | Command::Mount { .. }
                | Command::Config(_)
                | Command::Bench(_)
                | Command::Stats { .. }
                | Command::Umount { .. }
                | Command::Cert(_) => {
                    unreachable!("handled above")
                }
            }
        }
    }
}
