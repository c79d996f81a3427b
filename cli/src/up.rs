//! `quarry up` (an embedded loopback cluster, in one process or as supervised child processes)
//! and the single-role commands `quarry master` and `quarry chunkserver`.

use crate::cluster::{init_certs, load_or_issue, ClusterFile};
use crate::config::{Config, MAX_CHUNK_SIZE};
use anyhow::Context;
use quarry_cli::host::{ChunkserverHost, MasterHost};
use quarry_cli::http::{serve_metrics, url_of, HttpServer};
use quarry_master::raft::RaftConfig;
use quarry_master::RaftSettings;
use quarry_proto::Role;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    timing: RaftConfig,
) -> anyhow::Result<RaftSettings> {
    anyhow::ensure!(
        peers.contains_key(&id) || !may_form,
        "--peers does not list this master's id {id}"
    );
    Ok(RaftSettings {
        id,
        peers: peers.clone(),
        initialize: may_form && peers.keys().next() == Some(&id),
        timing,
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
    cfg: &Config,
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
            chunk_size: Some(cfg.master.chunk_size),
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
fn group(
    file: &ClusterFile,
    timing: &RaftConfig,
) -> anyhow::Result<Vec<(String, Option<RaftSettings>)>> {
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
                Some(raft_settings(id, &peers, true, timing.clone())?)
            } else {
                None
            };
            Ok((name, raft))
        })
        .collect()
}

/// `quarry up`, with the settings of [up] and every role's.
pub async fn up(cfg: &Config) -> anyhow::Result<()> {
    let masters = cfg.up.masters as usize;
    let chunkservers = cfg.up.chunkservers as usize;
    let mount_dir = cfg.up.mount.as_deref();
    let mut file = prepare(&cfg.up.data, masters, chunkservers, cfg.up.processes, cfg)?;
    let data = file.data.clone().expect("prepare sets data");
    if cfg.up.processes {
        return supervise(&file, &data, chunkservers, mount_dir, cfg).await;
    }
    let certs = &file.certs.clone();
    let mut master_hosts = Vec::new();
    let mut http_servers = Vec::new();
    let masters_list = file.masters.clone();
    for ((name, raft), addr) in group(&file, &cfg.raft_config())?
        .into_iter()
        .zip(&masters_list)
    {
        let master_cert = load_or_issue(certs, &name, Role::Master, &name)?;
        let master_addr: SocketAddr = addr.parse()?;
        let master = MasterHost::start(
            cfg.master_config(data.join(&name), raft),
            cfg.coordinator_config(),
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
        let config = cfg.chunkserver_config(data.join(&name), &master_list);
        let worker = cfg.worker_config(&config);
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
        Some(dir) => Some(crate::mount::mount(&file, dir, cfg).await?),
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
    cfg: &Config,
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
            args: [args, cfg.server_args()].concat(),
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
            args: [args, cfg.server_args()].concat(),
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
                // Every setting is in the flags: a config file named in the environment must
                // not add identity settings (peers, http) this supervisor did not choose.
                match tokio::process::Command::new(&exe)
                    .args(&c.args)
                    .env_remove("QUARRY_CONFIG")
                    .spawn()
                {
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
                    match crate::mount::mount(file, dir, cfg).await {
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

/// `quarry master`: the settings of [master], [raft], [cluster] and [mapreduce].
pub async fn run_master(cfg: &Config, raft: Option<RaftSettings>) -> anyhow::Result<()> {
    let m = &cfg.master;
    let data = cfg.require(&m.data, "master", "data")?;
    let certs = cfg.require(&m.certs, "master", "certs")?;
    let listen = *cfg.require(&m.listen, "master", "listen")?;
    let name = &m.name;
    let cert = load_or_issue(certs, name, Role::Master, name)?;
    let node = MasterHost::start(
        cfg.master_config(data.to_path_buf(), raft),
        cfg.coordinator_config(),
        &cert,
        listen,
    )
    .await?;
    tracing::info!(addr = %node.addr(), "master serving");
    let server = match m.http {
        Some(bind) => announce_http(name, node.serve_http(bind).await),
        None => None,
    };
    shutdown_signal().await;
    drop(server);
    node.shutdown().await;
    Ok(())
}

/// `quarry chunkserver`: the settings of [chunkserver], [cluster] and [mapreduce].
pub async fn run_chunkserver(cfg: &Config) -> anyhow::Result<()> {
    let c = &cfg.chunkserver;
    let data = cfg.require(&c.data, "chunkserver", "data")?;
    let certs = cfg.require(&c.certs, "chunkserver", "certs")?;
    let listen = *cfg.require(&c.listen, "chunkserver", "listen")?;
    let masters = cfg.require(&c.masters, "chunkserver", "masters")?;
    let name = cfg.require(&c.name, "chunkserver", "name")?;
    let cert = load_or_issue(certs, name, Role::Chunkserver, name)?;
    // The MapReduce worker acts as a client of the filesystem, with its own certificate.
    let worker_cert = match worker_cert(certs, name) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!("no MapReduce worker on this chunkserver: {e:#}");
            None
        }
    };
    let config = cfg.chunkserver_config(data.to_path_buf(), masters);
    let worker = cfg.worker_config(&config);
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
    let server = match c.http {
        Some(bind) => announce_http(name, serve_metrics(bind).await),
        None => None,
    };
    shutdown_signal().await;
    drop(server);
    node.shutdown().await;
    Ok(())
}
