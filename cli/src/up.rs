//! `quarry up` (an embedded loopback cluster, in one process or as supervised child processes)
//! and the single-role commands `quarry master` and `quarry chunkserver`.

use crate::cluster::{init_certs, load_or_issue, ClusterFile};
use anyhow::Context;
use quarry_chunkserver::ChunkserverConfig;
use quarry_cli::host::{ChunkserverHost, MasterHost};
use quarry_cli::http::{serve_metrics, url_of, HttpServer};
use quarry_mapred::coordinator::CoordinatorConfig;
use quarry_mapred::worker::WorkerConfig;
use quarry_master::raft::RaftConfig;
use quarry_master::{MasterConfig, RaftSettings};
use quarry_proto::Role;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Clone, Debug, clap::Args)]
pub struct Tunables {
    /// Chunk size in bytes (fixed when the namespace is created).
    #[arg(long, default_value_t = quarry_proto::DEFAULT_CHUNK_SIZE)]
    pub chunk_size: u64,
    /// Replicas per chunk.
    #[arg(long, default_value_t = 3)]
    pub replication: u32,
    /// Lease duration of a chunk's primary, in milliseconds.
    #[arg(long, default_value_t = 60_000)]
    pub lease_ms: u64,
    /// A chunkserver silent this long is considered dead, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub heartbeat_timeout_ms: u64,
    /// Heartbeat interval of chunkservers, in milliseconds.
    #[arg(long, default_value_t = 1_000)]
    pub heartbeat_ms: u64,
    /// Timeout of calls between nodes, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub rpc_timeout_ms: u64,
    /// Master: how long deleted files stay in the trash before their chunks are reclaimed, in
    /// milliseconds (0: no trash).
    #[arg(long, default_value_t = 86_400_000)]
    pub trash_retention_ms: u64,
    /// MapReduce: a worker silent this long is lost and its tasks run again, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub mr_worker_timeout_ms: u64,
    /// MapReduce: tasks each chunkserver's worker runs at once.
    #[arg(long, default_value_t = 2)]
    pub mr_slots: u32,
    /// Test hook: each MapReduce attempt first sleeps this long, in milliseconds.
    #[arg(long, default_value_t = 0, hide = true)]
    pub mr_task_delay_ms: u64,
    /// How often the master looks for chunks to re-replicate, in milliseconds.
    #[arg(long, default_value_t = 1_000)]
    pub repair_interval_ms: u64,
    /// Re-replication clones in flight at once, cluster-wide.
    #[arg(long, default_value_t = 8)]
    pub max_concurrent_clones: u32,
    /// Pace of each re-replication clone in bytes per second (0: unlimited).
    #[arg(long, default_value_t = 64 << 20)]
    pub clone_bandwidth: u64,
    /// Rebalancing: replicas move to servers below their capacity-proportional share while a
    /// server holds more than its share by more than this many chunks (0: off).
    #[arg(long, default_value_t = 2)]
    pub balance_slack_chunks: u64,
    /// Chunkservers verify idle chunks' checksums at this many bytes per second (0: off).
    #[arg(long, default_value_t = 16 << 20)]
    pub scrub_bytes_per_sec: u64,
    /// Scrubbing leaves chunks written less than this long ago alone, in milliseconds.
    #[arg(long, default_value_t = 60_000)]
    pub scrub_idle_ms: u64,
}

/// Masters `quarry up` runs unless `--masters` says otherwise.
pub const DEFAULT_MASTERS: usize = 3;

/// `ID=ADDR,ID=ADDR,...` → id → address.
pub fn parse_peers(text: &str) -> anyhow::Result<BTreeMap<u64, String>> {
    let mut peers = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .with_context(|| format!("peer {part:?}: expected ID=HOST:PORT"))?;
        let id: u64 = id
            .trim()
            .parse()
            .with_context(|| format!("peer id {id:?}"))?;
        anyhow::ensure!(id > 0, "master ids start at 1");
        anyhow::ensure!(
            peers.insert(id, addr.trim().to_string()).is_none(),
            "master id {id} listed twice"
        );
    }
    anyhow::ensure!(!peers.is_empty(), "no peers given");
    Ok(peers)
}

/// The Raft settings of master `id` among `peers`: the lowest id forms the group on first
/// boot (unless this master joins an existing group).
pub fn raft_settings(
    id: u64,
    peers: &BTreeMap<u64, String>,
    may_form: bool,
) -> anyhow::Result<RaftSettings> {
    anyhow::ensure!(
        peers.contains_key(&id) || !may_form,
        "--peers does not list this master's id {id}"
    );
    Ok(RaftSettings {
        id,
        peers: peers.clone(),
        initialize: may_form && peers.keys().next() == Some(&id),
        timing: RaftConfig::default(),
    })
}

/// The names (certificate and data directory) and ids of `n` masters: `master-0` alone (id 0,
/// no Raft), else `master-1`..`master-n`.
fn master_names(n: usize) -> Vec<(u64, String)> {
    if n <= 1 {
        vec![(0, "master-0".into())]
    } else {
        (1..=n as u64)
            .map(|id| (id, format!("master-{id}")))
            .collect()
    }
}

impl Tunables {
    fn master_config(&self, data: PathBuf, raft: Option<RaftSettings>) -> MasterConfig {
        let mut c = MasterConfig::new(data);
        c.raft = raft;
        c.chunk_size = self.chunk_size;
        c.replication = self.replication;
        c.lease_duration_ms = self.lease_ms;
        c.heartbeat_timeout_ms = self.heartbeat_timeout_ms;
        c.rpc_timeout_ms = self.rpc_timeout_ms;
        c.trash_retention_ms = self.trash_retention_ms;
        c.repair_interval_ms = self.repair_interval_ms;
        c.max_concurrent_clones = self.max_concurrent_clones;
        c.clone_bandwidth_bytes_per_sec = self.clone_bandwidth;
        c.balance_slack_chunks = self.balance_slack_chunks;
        c
    }

    fn chunkserver_config(&self, data: PathBuf, masters: &str) -> ChunkserverConfig {
        let masters = masters
            .split(',')
            .map(|m| m.trim().to_string())
            .filter(|m| !m.is_empty())
            .collect();
        let mut c = ChunkserverConfig::new(data, masters);
        c.heartbeat_interval_ms = self.heartbeat_ms;
        c.rpc_timeout_ms = self.rpc_timeout_ms;
        c.scrub_bytes_per_sec = self.scrub_bytes_per_sec;
        c.scrub_idle_ms = self.scrub_idle_ms;
        c
    }

    fn coordinator_config(&self) -> CoordinatorConfig {
        let mut c = CoordinatorConfig::default();
        c.scheduler.worker_timeout_ms = self.mr_worker_timeout_ms;
        c
    }

    fn worker_config(&self, c: &ChunkserverConfig) -> WorkerConfig {
        let mut w = WorkerConfig::new(c.data_dir.clone(), c.masters.clone());
        w.slots = self.mr_slots.max(1);
        w.task_delay = Duration::from_millis(self.mr_task_delay_ms);
        w
    }

    fn to_args(&self) -> Vec<String> {
        vec![
            format!("--chunk-size={}", self.chunk_size),
            format!("--replication={}", self.replication),
            format!("--lease-ms={}", self.lease_ms),
            format!("--heartbeat-timeout-ms={}", self.heartbeat_timeout_ms),
            format!("--heartbeat-ms={}", self.heartbeat_ms),
            format!("--rpc-timeout-ms={}", self.rpc_timeout_ms),
            format!("--trash-retention-ms={}", self.trash_retention_ms),
            format!("--mr-worker-timeout-ms={}", self.mr_worker_timeout_ms),
            format!("--mr-slots={}", self.mr_slots),
            format!("--mr-task-delay-ms={}", self.mr_task_delay_ms),
            format!("--repair-interval-ms={}", self.repair_interval_ms),
            format!("--max-concurrent-clones={}", self.max_concurrent_clones),
            format!("--clone-bandwidth={}", self.clone_bandwidth),
            format!("--balance-slack-chunks={}", self.balance_slack_chunks),
            format!("--scrub-bytes-per-sec={}", self.scrub_bytes_per_sec),
            format!("--scrub-idle-ms={}", self.scrub_idle_ms),
        ]
    }
}

/// Largest chunk a chunkserver accepts (chunk sizes are configurable up to this).
const MAX_CHUNK_SIZE: u64 = 1 << 30;

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn absolute(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    Ok(std::fs::canonicalize(dir)?)
}

/// The cluster file of a data directory: kept from an earlier start (same ports), else new.
fn prepare(
    data: &Path,
    masters: usize,
    chunkservers: usize,
    processes: bool,
    t: &Tunables,
) -> anyhow::Result<ClusterFile> {
    let data = absolute(data)?;
    let certs = data.join("certs");
    init_certs(&certs)?;
    let path = data.join("cluster.toml");
    let mut file = match ClusterFile::load(&path) {
        Ok(f) => {
            anyhow::ensure!(
                f.masters.len() == masters,
                "{} was created with {} master(s); start it with --masters {}",
                data.display(),
                f.masters.len(),
                f.masters.len()
            );
            f
        }
        Err(_) => ClusterFile {
            masters: (0..masters)
                .map(|_| Ok(format!("127.0.0.1:{}", free_port()?)))
                .collect::<anyhow::Result<_>>()?,
            certs: certs.clone(),
            data: Some(data.clone()),
            chunkserver_ports: vec![],
            chunk_size: Some(t.chunk_size),
            http: BTreeMap::new(),
        },
    };
    file.certs = certs;
    file.data = Some(data.clone());
    while file.chunkserver_ports.len() < chunkservers {
        file.chunkserver_ports.push(free_port()?);
    }
    // HTTP: every master; chunkservers too when they are processes of their own (in one
    // process, the masters' /metrics already covers them).
    let mut names: Vec<String> = master_names(masters).into_iter().map(|(_, n)| n).collect();
    if processes {
        names.extend((0..chunkservers).map(|i| format!("chunkserver-{i}")));
    } else {
        file.http.retain(|name, _| name.starts_with("master-"));
    }
    for name in names {
        if let std::collections::btree_map::Entry::Vacant(e) = file.http.entry(name) {
            e.insert(format!("127.0.0.1:{}", free_tcp_port()?));
        }
    }
    file.save(&path)?;
    Ok(file)
}

fn free_tcp_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Start a master's HTTP endpoints at its address in the cluster file, or, if that port is
/// taken now, at a new one (saved in the cluster file).
async fn master_http(
    master: &MasterHost,
    name: &str,
    file: &mut ClusterFile,
    data: &Path,
) -> anyhow::Result<HttpServer> {
    let kept: Option<SocketAddr> = file.http.get(name).and_then(|a| a.parse().ok());
    if let Some(addr) = kept {
        match master.serve_http(addr).await {
            Ok(s) => return Ok(s),
            Err(e) => eprintln!("{name}: {e:#}; choosing another port"),
        }
    }
    let server = master.serve_http("127.0.0.1:0".parse()?).await?;
    file.http
        .insert(name.to_string(), server.addr().to_string());
    file.save(&data.join("cluster.toml"))?;
    Ok(server)
}

fn banner(
    file: &ClusterFile,
    data: &Path,
    chunkservers: usize,
    mode: &str,
    mounted: Option<&Path>,
) {
    let cluster = data.join("cluster.toml");
    println!("Quarry is up ({mode}).");
    println!("  master        {}", file.masters.join(", "));
    for (i, p) in file.chunkserver_ports.iter().take(chunkservers).enumerate() {
        println!(
            "  chunkserver {i} 127.0.0.1:{p}  data {}",
            data.join(format!("chunkserver-{i}")).display()
        );
    }
    for (name, addr) in &file.http {
        let what = if name.starts_with("master-") {
            "status page and /metrics"
        } else {
            "/metrics"
        };
        println!("  web {name:<10} http://{addr}/  ({what})");
    }
    println!("  data          {}", data.display());
    println!("  cluster file  {}", cluster.display());
    if let Some(dir) = mounted {
        println!("  mounted at    {}", dir.display());
    }
    println!();
    println!("Next, in another terminal:");
    println!("  export QUARRY_CLUSTER={}", cluster.display());
    match mounted {
        Some(dir) => println!(
            "  ls -l {} && cp ./some-file {}/",
            dir.display(),
            dir.display()
        ),
        None => println!("  quarry put ./some-file /some-file && quarry ls -l /"),
    }
    println!("  quarry status");
    println!("  quarry stats --watch");
    match mounted {
        Some(dir) => println!(
            "  quarry job wordcount {0}/books {0}/counts --wait",
            dir.display()
        ),
        None => println!("  quarry job wordcount /books /counts --wait"),
    }
    println!("Ctrl-C stops the cluster; nothing acknowledged is lost.");
}

/// The Raft settings of each of `file`'s masters (None for a single master).
fn group(file: &ClusterFile) -> anyhow::Result<Vec<(String, Option<RaftSettings>)>> {
    let names = master_names(file.masters.len());
    let peers: BTreeMap<u64, String> = names
        .iter()
        .map(|(id, _)| *id)
        .zip(file.masters.iter().cloned())
        .collect();
    names
        .into_iter()
        .map(|(id, name)| {
            let raft = if file.masters.len() > 1 {
                Some(raft_settings(id, &peers, true)?)
            } else {
                None
            };
            Ok((name, raft))
        })
        .collect()
}

pub async fn up(
    data: &Path,
    masters: usize,
    chunkservers: usize,
    processes: bool,
    mount_dir: Option<&Path>,
    t: &Tunables,
) -> anyhow::Result<()> {
    anyhow::ensure!(chunkservers >= 1, "need at least one chunkserver");
    anyhow::ensure!(
        (1..=8).contains(&masters),
        "--masters must be between 1 and 8"
    );
    let mut file = prepare(data, masters, chunkservers, processes, t)?;
    let data = file.data.clone().expect("prepare sets data");
    if processes {
        return supervise(&file, &data, chunkservers, mount_dir, t).await;
    }
    let certs = &file.certs.clone();
    let mut master_hosts = Vec::new();
    let mut http_servers = Vec::new();
    let masters_list = file.masters.clone();
    for ((name, raft), addr) in group(&file)?.into_iter().zip(&masters_list) {
        let master_cert = load_or_issue(certs, &name, Role::Master, &name)?;
        let master_addr: SocketAddr = addr.parse()?;
        let master = MasterHost::start(
            t.master_config(data.join(&name), raft),
            t.coordinator_config(),
            &master_cert,
            master_addr,
        )
        .await
        .with_context(|| format!("starting {name} on {master_addr}"))?;
        http_servers.push(master_http(&master, &name, &mut file, &data).await?);
        master_hosts.push(master);
    }
    let master_list = file.masters.join(",");
    let mut nodes = Vec::new();
    for i in 0..chunkservers {
        let name = format!("chunkserver-{i}");
        let cert = load_or_issue(certs, &name, Role::Chunkserver, &name)?;
        let worker_cert = worker_cert(certs, &name)?;
        let bind: SocketAddr = format!("127.0.0.1:{}", file.chunkserver_ports[i]).parse()?;
        let config = t.chunkserver_config(data.join(&name), &master_list);
        let worker = t.worker_config(&config);
        let node = ChunkserverHost::start(
            config,
            worker,
            MAX_CHUNK_SIZE,
            &cert,
            Some(&worker_cert),
            bind,
        )
        .await
        .with_context(|| format!("starting {name} on {bind}"))?;
        nodes.push(node);
    }
    let mounted = match mount_dir {
        Some(dir) => Some(crate::mount::mount(&file, dir).await?),
        None => None,
    };
    banner(
        &file,
        &data,
        chunkservers,
        "embedded, one process",
        mounted.as_ref().map(|m| m.dir()),
    );
    shutdown_signal().await;
    println!("Shutting down...");
    if let Some(m) = mounted {
        if let Err(e) = m.unmount().await {
            eprintln!("{e:#}");
        }
    }
    drop(http_servers);
    for n in nodes {
        n.shutdown().await;
    }
    for master in master_hosts {
        master.shutdown().await;
    }
    println!("Stopped cleanly.");
    Ok(())
}

struct Child {
    name: String,
    args: Vec<String>,
    process: Option<tokio::process::Child>,
    restart_at: Option<tokio::time::Instant>,
}

/// Run each node as a child process; restart one that exits (after 2 s) until Ctrl-C/SIGTERM.
async fn supervise(
    file: &ClusterFile,
    data: &Path,
    chunkservers: usize,
    mount_dir: Option<&Path>,
    t: &Tunables,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let certs = file.certs.display().to_string();
    let peers: String = master_names(file.masters.len())
        .iter()
        .zip(&file.masters)
        .map(|((id, _), addr)| format!("{id}={addr}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut children = Vec::new();
    for ((id, name), addr) in master_names(file.masters.len())
        .into_iter()
        .zip(&file.masters)
    {
        let mut args = vec![
            "master".into(),
            format!("--data={}", data.join(&name).display()),
            format!("--certs={certs}"),
            format!("--listen={addr}"),
            format!("--name={name}"),
        ];
        if file.masters.len() > 1 {
            args.push(format!("--id={id}"));
            args.push(format!("--peers={peers}"));
        }
        if let Some(http) = file.http.get(&name) {
            args.push(format!("--http={http}"));
        }
        children.push(Child {
            name,
            args: [args, t.to_args()].concat(),
            process: None,
            restart_at: Some(tokio::time::Instant::now()),
        });
    }
    let master_list = file.masters.join(",");
    for i in 0..chunkservers {
        let name = format!("chunkserver-{i}");
        let mut args: Vec<String> = vec![
            "chunkserver".into(),
            format!("--data={}", data.join(&name).display()),
            format!("--certs={certs}"),
            format!("--listen=127.0.0.1:{}", file.chunkserver_ports[i]),
            format!("--master={master_list}"),
            format!("--name={name}"),
        ];
        if let Some(http) = file.http.get(&name) {
            args.push(format!("--http={http}"));
        }
        children.push(Child {
            args: [args, t.to_args()].concat(),
            name,
            process: None,
            restart_at: Some(tokio::time::Instant::now()),
        });
    }
    let pids_path = data.join("pids");
    let mut mounted = None;
    let mut announced = false;
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        let mut changed = false;
        for c in children.iter_mut() {
            if let Some(p) = c.process.as_mut() {
                if let Ok(Some(status)) = p.try_wait() {
                    eprintln!("{} exited ({status}); restarting in 2 s", c.name);
                    c.process = None;
                    c.restart_at = Some(tokio::time::Instant::now() + Duration::from_secs(2));
                    changed = true;
                }
            }
            if c.process.is_none()
                && c.restart_at
                    .is_some_and(|t| t <= tokio::time::Instant::now())
            {
                match tokio::process::Command::new(&exe).args(&c.args).spawn() {
                    Ok(p) => {
                        c.process = Some(p);
                        c.restart_at = None;
                        changed = true;
                    }
                    Err(e) => {
                        eprintln!("starting {}: {e}", c.name);
                        c.restart_at = Some(tokio::time::Instant::now() + Duration::from_secs(2));
                    }
                }
            }
        }
        if changed {
            let pids: String = children
                .iter()
                .filter_map(|c| Some(format!("{}:{}\n", c.name, c.process.as_ref()?.id()?)))
                .collect();
            let _ = std::fs::write(&pids_path, pids);
        }
        if !announced {
            // The children are starting now: mount (retrying while the master comes up), then
            // print the banner once.
            announced = true;
            if let Some(dir) = mount_dir {
                let mut tries = 0;
                mounted = loop {
                    match crate::mount::mount(file, dir).await {
                        Ok(m) => break Some(m),
                        Err(e) if tries < 100 => {
                            tracing::debug!("mount not ready yet: {e:#}");
                            tries += 1;
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Err(e) => return Err(e),
                    }
                };
            }
            banner(
                file,
                data,
                chunkservers,
                "one process per node, supervised",
                mounted.as_ref().map(|m| m.dir()),
            );
        }
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    println!("Shutting down...");
    if let Some(m) = mounted {
        if let Err(e) = m.unmount().await {
            eprintln!("{e:#}");
        }
    }
    // Chunkservers first, then the master, each asked politely with SIGTERM.
    for c in children.iter_mut().rev() {
        if let Some(p) = c.process.as_mut() {
            if let Some(pid) = p.id() {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
            }
            if tokio::time::timeout(Duration::from_secs(20), p.wait())
                .await
                .is_err()
            {
                let _ = p.kill().await;
            }
        }
    }
    let _ = std::fs::remove_file(&pids_path);
    println!("Stopped cleanly.");
    Ok(())
}

/// The client certificate of the MapReduce worker hosted by chunkserver `name`.
fn worker_cert(certs: &Path, name: &str) -> anyhow::Result<quarry_transport::certs::NodeCert> {
    let stem = crate::cluster::worker_stem(name);
    load_or_issue(certs, &stem, Role::Client, &stem)
}

/// Start the HTTP endpoints of a node started by hand (`--http`): a failure to bind is
/// reported and the node runs on without them.
fn announce_http(name: &str, server: anyhow::Result<HttpServer>) -> Option<HttpServer> {
    match server {
        Ok(s) => {
            tracing::info!(url = %s.url(), "{name}: HTTP serving");
            println!("{name}: HTTP on {}", url_of(s.addr()));
            Some(s)
        }
        Err(e) => {
            eprintln!("{name}: no HTTP endpoint: {e:#}");
            None
        }
    }
}

pub async fn run_master(
    data: &Path,
    certs: &Path,
    listen: SocketAddr,
    name: &str,
    raft: Option<RaftSettings>,
    http: Option<SocketAddr>,
    t: &Tunables,
) -> anyhow::Result<()> {
    let cert = load_or_issue(certs, name, Role::Master, name)?;
    let node = MasterHost::start(
        t.master_config(data.to_path_buf(), raft),
        t.coordinator_config(),
        &cert,
        listen,
    )
    .await?;
    tracing::info!(addr = %node.addr(), "master serving");
    let server = match http {
        Some(bind) => announce_http(name, node.serve_http(bind).await),
        None => None,
    };
    shutdown_signal().await;
    drop(server);
    node.shutdown().await;
    Ok(())
}

pub async fn run_chunkserver(
    data: &Path,
    certs: &Path,
    listen: SocketAddr,
    master: &str,
    name: &str,
    http: Option<SocketAddr>,
    t: &Tunables,
) -> anyhow::Result<()> {
    let cert = load_or_issue(certs, name, Role::Chunkserver, name)?;
    // The MapReduce worker acts as a client of the filesystem, with its own certificate.
    let worker_cert = match worker_cert(certs, name) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!("no MapReduce worker on this chunkserver: {e:#}");
            None
        }
    };
    let config = t.chunkserver_config(data.to_path_buf(), master);
    let worker = t.worker_config(&config);
    let node = ChunkserverHost::start(
        config,
        worker,
        MAX_CHUNK_SIZE,
        &cert,
        worker_cert.as_ref(),
        listen,
    )
    .await?;
    tracing::info!(addr = %node.addr(), node = %node.node.node_id(), "chunkserver serving");
    let server = match http {
        Some(bind) => announce_http(name, serve_metrics(bind).await),
        None => None,
    };
    shutdown_signal().await;
    drop(server);
    node.shutdown().await;
    Ok(())
}
