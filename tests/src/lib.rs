//! `quarry-tests`: the one loopback-cluster harness every integration test uses.
//!
//! [`Cluster`] runs a master and N chunkservers in this process over real QUIC with mutual TLS
//! (ports chosen by the OS, data in a temporary directory). [`ProcCluster`] runs the same nodes as
//! `quarry` child processes, so a test can `kill -9` one and restart it. Both wait on observable
//! state (the master's status), never on fixed sleeps, and clean up what they started.

pub mod fuse;
pub mod linearizability;

use bytes::Bytes;
use quarry_chunkserver::{ChunkserverConfig, ChunkserverNode};
use quarry_cli::host::{ChunkserverHost, MasterHost};
use quarry_cli::http::HttpServer;
use quarry_client::{Client, ClientConfig};
use quarry_mapred::coordinator::{Coordinator, CoordinatorConfig};
use quarry_mapred::worker::{Worker, WorkerConfig};
use quarry_master::MasterConfig;
use quarry_proto::chunk::ReadChunk;
use quarry_proto::master::{ClusterStatusReply, Fsck, FsckReply};
use quarry_proto::{ChunkHandle, ChunkVersion, FsError, Role};
use quarry_transport::certs::{ClusterCa, NodeCert};
use quarry_transport::quic::QuicNode;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Largest chunk the harness's chunkservers accept.
pub const MAX_CHUNK_SIZE: u64 = 1 << 30;

#[derive(Clone, Debug)]
pub struct Options {
    /// Masters of a [`ProcCluster`]: 1 (the default) runs a single master on its own
    /// operation log; more run a Raft group (ids 1..=n). [`Cluster`] always runs one.
    pub masters: usize,
    pub chunkservers: usize,
    pub chunk_size: u64,
    pub replication: u32,
    pub lease_ms: u64,
    pub heartbeat_ms: u64,
    /// Chunkservers send a full chunk report at least this often (the library's 30 s by default).
    pub full_report_ms: u64,
    pub heartbeat_timeout_ms: u64,
    pub rpc_timeout_ms: u64,
    /// MapReduce: a worker silent this long is lost.
    pub worker_timeout_ms: u64,
    /// MapReduce: attempts each worker runs at once.
    pub worker_slots: u32,
    /// MapReduce test hook: each attempt first sleeps this long.
    pub task_delay_ms: u64,
    /// How long deleted files stay in the master's trash (0, the library default: no trash).
    pub trash_retention_ms: u64,
    /// The master drops the holds of a client silent this long (the library's default).
    pub client_session_timeout_ms: u64,
    /// Re-replication: how often the master looks, clones in flight, pace of each clone.
    pub repair_interval_ms: u64,
    pub max_concurrent_clones: u32,
    pub clone_bandwidth: u64,
    /// Scrubbing: bytes per second (0: off), and how long a chunk must be idle first.
    pub scrub_bytes_per_sec: u64,
    pub scrub_idle_ms: u64,
    /// Rebalancing slack in chunks (0: off).
    pub balance_slack_chunks: u64,
    /// Fault injection: per mille of fully applied commits answered as if the reply was lost.
    pub lose_commit_replies_per_mille: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            masters: 1,
            chunkservers: 3,
            chunk_size: quarry_proto::DEFAULT_CHUNK_SIZE,
            replication: 3,
            lease_ms: 4_000,
            heartbeat_ms: 200,
            full_report_ms: quarry_chunkserver::ChunkserverConfig::new(PathBuf::new(), vec![])
                .full_report_interval_ms,
            heartbeat_timeout_ms: 2_000,
            rpc_timeout_ms: 5_000,
            worker_timeout_ms: 3_000,
            worker_slots: 2,
            task_delay_ms: 0,
            trash_retention_ms: 0,
            client_session_timeout_ms: MasterConfig::new(PathBuf::new()).client_session_timeout_ms,
            repair_interval_ms: 200,
            max_concurrent_clones: 8,
            clone_bandwidth: 64 << 20,
            scrub_bytes_per_sec: 16 << 20,
            scrub_idle_ms: 60_000,
            balance_slack_chunks: 0,
            lose_commit_replies_per_mille: 0,
        }
    }
}

impl Options {
    pub fn chunk_size(mut self, bytes: u64) -> Self {
        self.chunk_size = bytes;
        self
    }

    pub fn masters(mut self, n: usize) -> Self {
        self.masters = n;
        self
    }

    pub fn chunkservers(mut self, n: usize) -> Self {
        self.chunkservers = n;
        self
    }

    pub fn trash_retention_ms(mut self, ms: u64) -> Self {
        self.trash_retention_ms = ms;
        self
    }

    pub fn client_session_timeout_ms(mut self, ms: u64) -> Self {
        self.client_session_timeout_ms = ms;
        self
    }

    pub fn full_report_ms(mut self, ms: u64) -> Self {
        self.full_report_ms = ms;
        self
    }

    /// Scrub at `bytes_per_sec` (0: off) chunks idle for `idle_ms`.
    pub fn scrub(mut self, bytes_per_sec: u64, idle_ms: u64) -> Self {
        self.scrub_bytes_per_sec = bytes_per_sec;
        self.scrub_idle_ms = idle_ms;
        self
    }

    fn master_config(&self, dir: PathBuf) -> MasterConfig {
        let mut c = MasterConfig::new(dir);
        c.chunk_size = self.chunk_size;
        c.replication = self.replication;
        c.lease_duration_ms = self.lease_ms;
        c.heartbeat_timeout_ms = self.heartbeat_timeout_ms;
        c.rpc_timeout_ms = self.rpc_timeout_ms;
        c.trash_retention_ms = self.trash_retention_ms;
        c.client_session_timeout_ms = self.client_session_timeout_ms;
        c.repair_interval_ms = self.repair_interval_ms;
        c.max_concurrent_clones = self.max_concurrent_clones;
        c.clone_bandwidth_bytes_per_sec = self.clone_bandwidth;
        c.balance_slack_chunks = self.balance_slack_chunks;
        c
    }

    fn coordinator_config(&self) -> CoordinatorConfig {
        let mut c = CoordinatorConfig::default();
        c.scheduler.worker_timeout_ms = self.worker_timeout_ms;
        c
    }

    fn worker_config(&self, dir: PathBuf, master: SocketAddr) -> WorkerConfig {
        let mut c = WorkerConfig::new(dir, vec![master.to_string()]);
        c.slots = self.worker_slots;
        c.task_delay = Duration::from_millis(self.task_delay_ms);
        c
    }

    fn chunkserver_config(&self, dir: PathBuf, master: SocketAddr) -> ChunkserverConfig {
        let mut c = ChunkserverConfig::new(dir, vec![master.to_string()]);
        c.heartbeat_interval_ms = self.heartbeat_ms;
        c.full_report_interval_ms = self.full_report_ms;
        c.rpc_timeout_ms = self.rpc_timeout_ms;
        c.scrub_bytes_per_sec = self.scrub_bytes_per_sec;
        c.scrub_idle_ms = self.scrub_idle_ms;
        c.fault_lose_commit_replies_per_mille = self.lose_commit_replies_per_mille;
        c
    }

    fn flags(&self) -> Vec<String> {
        vec![
            format!("--chunk-size={}", self.chunk_size),
            format!("--replication={}", self.replication),
            format!("--lease-ms={}", self.lease_ms),
            format!("--heartbeat-timeout-ms={}", self.heartbeat_timeout_ms),
            format!("--heartbeat-ms={}", self.heartbeat_ms),
            format!("--full-report-interval-ms={}", self.full_report_ms),
            format!("--rpc-timeout-ms={}", self.rpc_timeout_ms),
            format!("--trash-retention-ms={}", self.trash_retention_ms),
            format!(
                "--client-session-timeout-ms={}",
                self.client_session_timeout_ms
            ),
            format!("--mr-worker-timeout-ms={}", self.worker_timeout_ms),
            format!("--mr-slots={}", self.worker_slots),
            format!("--mr-task-delay-ms={}", self.task_delay_ms),
            format!("--repair-interval-ms={}", self.repair_interval_ms),
            format!("--max-concurrent-clones={}", self.max_concurrent_clones),
            format!("--clone-bandwidth={}", self.clone_bandwidth),
            format!("--scrub-bytes-per-sec={}", self.scrub_bytes_per_sec),
            format!("--scrub-idle-ms={}", self.scrub_idle_ms),
            format!("--balance-slack-chunks={}", self.balance_slack_chunks),
        ]
    }
}

/// Poll `check` every 20 ms until it returns `Some`, or fail after `limit` with `what`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The CA, the client certificate and `cluster.toml` of a test cluster.
pub struct Certs {
    pub dir: PathBuf,
    pub ca: ClusterCa,
}

impl Certs {
    pub fn create(dir: &Path) -> Certs {
        std::fs::create_dir_all(dir).unwrap();
        let ca = ClusterCa::load_or_create(dir).unwrap();
        ca.issue(Role::Client, "client")
            .unwrap()
            .save(dir, "client")
            .unwrap();
        Certs {
            dir: dir.to_path_buf(),
            ca,
        }
    }

    pub fn issue(&self, role: Role, name: &str) -> NodeCert {
        let cert = self.ca.issue(role, name).unwrap();
        cert.save(&self.dir, name).unwrap();
        cert
    }

    pub fn client_cert(&self) -> NodeCert {
        NodeCert::load(&self.dir, "client").unwrap()
    }
}

/// A client connected over QUIC; keeps its endpoint alive.
pub struct TestClient {
    pub client: Client,
    pub node: QuicNode,
}

impl std::ops::Deref for TestClient {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

async fn connect_client(certs: &Certs, master: SocketAddr, retry: Duration) -> TestClient {
    connect_client_to(certs, &[master], retry).await
}

/// A client of the masters at `masters` (it follows `NotLeader` hints among them).
pub async fn connect_client_to(
    certs: &Certs,
    masters: &[SocketAddr],
    retry: Duration,
) -> TestClient {
    connect_client_with(certs, masters, Duration::from_secs(10), retry).await
}

/// A client with its own per-call timeout (short: a call to a dead or frozen master fails
/// fast) and retry deadline (long: an operation outlives a failover).
pub async fn connect_client_with(
    certs: &Certs,
    masters: &[SocketAddr],
    rpc_timeout: Duration,
    retry: Duration,
) -> TestClient {
    let node = QuicNode::client(&certs.client_cert()).unwrap();
    let masters = masters.iter().map(|m| m.to_string()).collect();
    let mut config = ClientConfig::new(masters);
    config.rpc_timeout = rpc_timeout;
    config.retry_deadline = retry;
    let client = Client::connect(node.transport(), config).await.unwrap();
    TestClient { client, node }
}

async fn alive_count(client: &Client) -> Option<ClusterStatusReply> {
    client.cluster_status().await.ok()
}

/// Write `DIR/cluster.toml` so the `quarry` CLI can talk to the cluster.
fn write_cluster_file(dir: &Path, certs: &Path, master: SocketAddr) -> PathBuf {
    write_cluster_file_for(dir, certs, &[master], &[])
}

/// `http`: (node name, address) of each HTTP endpoint, for `quarry stats` and `quarry status`.
fn write_cluster_file_for(
    dir: &Path,
    certs: &Path,
    masters: &[SocketAddr],
    http: &[(String, SocketAddr)],
) -> PathBuf {
    let path = dir.join("cluster.toml");
    let list: Vec<String> = masters.iter().map(|m| format!("\"{m}\"")).collect();
    let mut text = format!(
        "masters = [{}]\ncerts = \"{}\"\n",
        list.join(", "),
        certs.display()
    );
    if !http.is_empty() {
        text.push_str("\n[http]\n");
        for (name, addr) in http {
            text.push_str(&format!("\"{name}\" = \"{addr}\"\n"));
        }
    }
    std::fs::write(&path, text).unwrap();
    path
}

/// Master and chunkservers in this process.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub opts: Options,
    pub certs: Certs,
    pub master_addr: SocketAddr,
    master: Option<MasterHost>,
    chunkservers: Vec<Option<ChunkserverHost>>,
    chunkserver_addrs: Vec<SocketAddr>,
    pub cluster_file: PathBuf,
}

impl Cluster {
    pub async fn start(opts: Options) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let certs = Certs::create(&dir.path().join("certs"));
        let master_cert = certs.issue(Role::Master, "master-0");
        let master = MasterHost::start(
            opts.master_config(dir.path().join("master-0")),
            opts.coordinator_config(),
            &master_cert,
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();
        let master_addr = master.addr();
        let cluster_file = write_cluster_file(dir.path(), &certs.dir, master_addr);
        let mut c = Cluster {
            dir,
            opts,
            certs,
            master_addr,
            master: Some(master),
            chunkservers: Vec::new(),
            chunkserver_addrs: Vec::new(),
            cluster_file,
        };
        for i in 0..c.opts.chunkservers {
            let node = c.start_chunkserver(i, "127.0.0.1:0".parse().unwrap()).await;
            c.chunkserver_addrs.push(node.addr());
            c.chunkservers.push(Some(node));
        }
        c.wait_alive(c.opts.chunkservers).await;
        c
    }

    pub fn chunkserver_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("chunkserver-{i}"))
    }

    async fn start_chunkserver(&self, i: usize, bind: SocketAddr) -> ChunkserverHost {
        let name = format!("chunkserver-{i}");
        let cert = self.certs.issue(Role::Chunkserver, &name);
        let worker_cert = self.certs.issue(Role::Client, &format!("{name}-worker"));
        ChunkserverHost::start(
            self.opts
                .chunkserver_config(self.chunkserver_dir(i), self.master_addr),
            self.opts
                .worker_config(self.chunkserver_dir(i), self.master_addr),
            MAX_CHUNK_SIZE,
            &cert,
            Some(&worker_cert),
            bind,
        )
        .await
        .unwrap()
    }

    pub fn chunkserver(&self, i: usize) -> &ChunkserverNode {
        &self.chunkservers[i]
            .as_ref()
            .expect("chunkserver is running")
            .node
    }

    /// The MapReduce worker hosted by chunkserver `i`.
    pub fn worker(&self, i: usize) -> &Worker {
        self.chunkservers[i]
            .as_ref()
            .expect("chunkserver is running")
            .worker
            .as_ref()
            .expect("the harness always hosts a worker")
    }

    /// Serve the master's HTTP endpoints (`/metrics`, `/`, `/api/status`) on a free port of
    /// 127.0.0.1, as `quarry master --http` does. The process's `/metrics` covers every node
    /// of this in-process cluster.
    pub async fn serve_http(&self) -> HttpServer {
        self.master
            .as_ref()
            .expect("master is running")
            .serve_http("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap()
    }

    /// The master service.
    pub fn master(&self) -> &quarry_master::service::Master {
        self.master
            .as_ref()
            .expect("master is running")
            .node
            .master()
    }

    /// The MapReduce coordinator hosted by the master.
    pub fn coordinator(&self) -> &Coordinator {
        &self.master.as_ref().expect("master is running").coordinator
    }

    pub async fn client(&self) -> TestClient {
        connect_client(&self.certs, self.master_addr, Duration::from_secs(60)).await
    }

    /// Wait until the master sees `n` live chunkservers.
    pub async fn wait_alive(&self, n: usize) {
        let client = self.client().await;
        wait_for(
            &format!("{n} live chunkservers"),
            Duration::from_secs(30),
            || async {
                let s = alive_count(&client).await?;
                (s.chunkservers.iter().filter(|c| c.alive).count() == n).then_some(())
            },
        )
        .await;
    }

    /// Start one more chunkserver (index `chunkservers()`), e.g. a server added to a running
    /// cluster; returns its index.
    pub async fn add_chunkserver(&mut self) -> usize {
        let i = self.chunkservers.len();
        let node = self
            .start_chunkserver(i, "127.0.0.1:0".parse().unwrap())
            .await;
        self.chunkserver_addrs.push(node.addr());
        self.chunkservers.push(Some(node));
        i
    }

    pub async fn stop_chunkserver(&mut self, i: usize) {
        if let Some(node) = self.chunkservers[i].take() {
            node.shutdown().await;
        }
    }

    pub async fn restart_chunkserver(&mut self, i: usize) {
        assert!(self.chunkservers[i].is_none(), "stop it first");
        let node = self.start_chunkserver(i, self.chunkserver_addrs[i]).await;
        self.chunkservers[i] = Some(node);
    }

    pub async fn shutdown(mut self) {
        for i in 0..self.chunkservers.len() {
            self.stop_chunkserver(i).await;
        }
        if let Some(m) = self.master.take() {
            m.shutdown().await;
        }
    }
}

/// The `quarry` binary: `$QUARRY_BIN`, else next to the test executable's `deps/` directory.
pub fn quarry_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("QUARRY_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = dir.join("quarry");
    assert!(
        bin.exists(),
        "{} not found: build it first (cargo build -p quarry) or set QUARRY_BIN",
        bin.display()
    );
    bin
}

/// Run the `quarry` CLI against a cluster file; returns (success, stdout, stderr).
pub fn run_cli(cluster_file: &Path, args: &[&str]) -> (bool, Vec<u8>, String) {
    let out = std::process::Command::new(quarry_bin())
        .arg(format!("--cluster={}", cluster_file.display()))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A free UDP port on 127.0.0.1 (for a node's QUIC address).
pub fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A free TCP address on 127.0.0.1 (for a node's HTTP endpoint).
pub fn free_tcp_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// One `quarry master` or `quarry chunkserver` child process.
struct Proc {
    args: Vec<String>,
    child: Option<std::process::Child>,
}

impl Proc {
    fn spawn(&mut self) {
        assert!(self.child.is_none());
        let child = std::process::Command::new(quarry_bin())
            .args(&self.args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }
}

/// The same nodes as child processes, so tests can `kill -9` them.
pub struct ProcCluster {
    pub dir: tempfile::TempDir,
    pub opts: Options,
    pub certs: Certs,
    /// The first master's address; every master's in `master_addrs`.
    pub master_addr: SocketAddr,
    pub master_addrs: Vec<SocketAddr>,
    /// Each master's and chunkserver's HTTP endpoint (`--http`; `/metrics`, and on masters
    /// the status page).
    pub master_http: Vec<SocketAddr>,
    pub chunkserver_http: Vec<SocketAddr>,
    masters: Vec<Proc>,
    chunkservers: Vec<Proc>,
    chunkserver_addrs: Vec<SocketAddr>,
    pub cluster_file: PathBuf,
}

impl ProcCluster {
    pub async fn start(opts: Options) -> ProcCluster {
        let dir = tempfile::tempdir().unwrap();
        let certs = Certs::create(&dir.path().join("certs"));
        let n = opts.masters.max(1);
        let master_addrs: Vec<SocketAddr> = (0..n)
            .map(|_| format!("127.0.0.1:{}", free_port()).parse().unwrap())
            .collect();
        let master_addr = master_addrs[0];
        let certs_flag = format!("--certs={}", certs.dir.display());
        let peers: Vec<String> = master_addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={a}", i + 1))
            .collect();
        let mut masters = Vec::new();
        let mut http = Vec::new();
        let mut master_http = Vec::new();
        for (i, addr) in master_addrs.iter().enumerate() {
            let name = if n == 1 {
                "master-0".to_string()
            } else {
                format!("master-{}", i + 1)
            };
            let mut args = vec![
                "master".to_string(),
                format!("--data={}", dir.path().join(&name).display()),
                certs_flag.clone(),
                format!("--listen={addr}"),
                format!("--name={name}"),
            ];
            if n > 1 {
                args.push(format!("--id={}", i + 1));
                args.push(format!("--peers={}", peers.join(",")));
            }
            let web = free_tcp_addr();
            args.push(format!("--http={web}"));
            master_http.push(web);
            http.push((name.clone(), web));
            let mut master = Proc {
                args: [args, opts.flags()].concat(),
                child: None,
            };
            master.spawn();
            masters.push(master);
        }
        let master_list: Vec<String> = master_addrs.iter().map(|a| a.to_string()).collect();
        let mut chunkservers = Vec::new();
        let mut chunkserver_addrs = Vec::new();
        let mut chunkserver_http = Vec::new();
        for i in 0..opts.chunkservers {
            let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            chunkserver_addrs.push(addr);
            let web = free_tcp_addr();
            chunkserver_http.push(web);
            http.push((format!("chunkserver-{i}"), web));
            let mut p = Proc {
                args: [
                    vec![
                        "chunkserver".to_string(),
                        format!(
                            "--data={}",
                            dir.path().join(format!("chunkserver-{i}")).display()
                        ),
                        certs_flag.clone(),
                        format!("--listen={addr}"),
                        format!("--master={}", master_list.join(",")),
                        format!("--name=chunkserver-{i}"),
                        format!("--http={web}"),
                    ],
                    opts.flags(),
                ]
                .concat(),
                child: None,
            };
            p.spawn();
            chunkservers.push(p);
        }
        let cluster_file = write_cluster_file_for(dir.path(), &certs.dir, &master_addrs, &http);
        let c = ProcCluster {
            dir,
            opts,
            certs,
            master_addr,
            master_addrs,
            master_http,
            chunkserver_http,
            masters,
            chunkservers,
            chunkserver_addrs,
            cluster_file,
        };
        c.wait_alive(c.opts.chunkservers).await;
        c
    }

    pub async fn client(&self) -> TestClient {
        connect_client_to(&self.certs, &self.master_addrs, Duration::from_secs(90)).await
    }

    pub fn chunkserver_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("chunkserver-{i}"))
    }

    /// Kill -9 master `i` (0-based; its Raft id is `i + 1`).
    pub fn kill9_master_i(&mut self, i: usize) {
        self.masters[i].kill9();
    }

    pub fn restart_master_i(&mut self, i: usize) {
        self.masters[i].spawn();
    }

    pub fn master_running(&self, i: usize) -> bool {
        self.masters[i].child.is_some()
    }

    /// Start one more master with `--join` (it waits until `quarry masters add` makes it a
    /// member); the cluster file lists it from now on. Returns its index (its Raft id is
    /// index + 1).
    pub fn spawn_joining_master(&mut self) -> usize {
        assert!(self.opts.masters > 1, "a single master is not a Raft group");
        let i = self.masters.len();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        self.master_addrs.push(addr);
        let peers: Vec<String> = self
            .master_addrs
            .iter()
            .enumerate()
            .map(|(k, a)| format!("{}={a}", k + 1))
            .collect();
        let name = format!("master-{}", i + 1);
        let args = vec![
            "master".to_string(),
            format!("--data={}", self.dir.path().join(&name).display()),
            format!("--certs={}", self.certs.dir.display()),
            format!("--listen={addr}"),
            format!("--name={name}"),
            format!("--id={}", i + 1),
            format!("--peers={}", peers.join(",")),
            "--join".to_string(),
        ];
        let web = free_tcp_addr();
        let mut args = args;
        args.push(format!("--http={web}"));
        self.master_http.push(web);
        let mut master = Proc {
            args: [args, self.opts.flags()].concat(),
            child: None,
        };
        master.spawn();
        self.masters.push(master);
        let mut http: Vec<(String, SocketAddr)> = self
            .master_http
            .iter()
            .enumerate()
            .map(|(k, a)| (format!("master-{}", k + 1), *a))
            .collect();
        http.extend(
            self.chunkserver_http
                .iter()
                .enumerate()
                .map(|(k, a)| (format!("chunkserver-{k}"), *a)),
        );
        self.cluster_file =
            write_cluster_file_for(self.dir.path(), &self.certs.dir, &self.master_addrs, &http);
        i
    }

    /// Freeze (`SIGSTOP`) or thaw (`SIGCONT`) master `i`'s process.
    pub fn freeze_master(&mut self, i: usize, frozen: bool) {
        if let Some(c) = &self.masters[i].child {
            let sig = if frozen { "-STOP" } else { "-CONT" };
            let _ = std::process::Command::new("kill")
                .args([sig, &c.id().to_string()])
                .status();
        }
    }

    /// Each running master's own status (None for one that does not answer).
    pub async fn master_infos(
        &self,
        client: &Client,
    ) -> Vec<Option<quarry_proto::master::MasterStatus>> {
        let mut out = Vec::new();
        for (i, addr) in self.master_addrs.iter().enumerate() {
            // Not cancelled from outside: the call's own timeout drops a stale connection.
            out.push(if self.master_running(i) {
                client.master_info(&addr.to_string()).await.ok()
            } else {
                None
            });
        }
        out
    }

    /// The master that is leader (index, term), once the running masters agree on it.
    pub async fn leader(&self, client: &Client) -> Option<(usize, u64)> {
        let infos = self.master_infos(client).await;
        let (i, l) = infos
            .iter()
            .enumerate()
            .filter_map(|(i, m)| Some((i, m.as_ref()?)))
            .filter(|(_, m)| m.role == "leader")
            .max_by_key(|(_, m)| m.term)?;
        Some((i, l.term))
    }

    /// The address chunkserver `i` listens on (and the master lists it under).
    pub fn chunkserver_addr(&self, i: usize) -> SocketAddr {
        self.chunkserver_addrs[i]
    }

    pub async fn wait_alive(&self, n: usize) {
        let client = self.client().await;
        wait_for(
            &format!("{n} live chunkservers"),
            Duration::from_secs(60),
            || async {
                let s = alive_count(&client).await?;
                (s.chunkservers.iter().filter(|c| c.alive).count() == n).then_some(())
            },
        )
        .await;
    }

    /// Kill -9 every master.
    pub fn kill9_master(&mut self) {
        for m in self.masters.iter_mut() {
            m.kill9();
        }
    }

    /// Restart every master that is not running.
    pub fn restart_master(&mut self) {
        for m in self.masters.iter_mut() {
            if m.child.is_none() {
                m.spawn();
            }
        }
    }

    pub fn kill9_chunkserver(&mut self, i: usize) {
        self.chunkservers[i].kill9();
    }

    pub fn restart_chunkserver(&mut self, i: usize) {
        self.chunkservers[i].spawn();
    }

    /// Freeze (`SIGSTOP`) or thaw (`SIGCONT`) chunkserver `i`'s process: a stalled node.
    pub fn freeze_chunkserver(&mut self, i: usize, frozen: bool) {
        if let Some(c) = &self.chunkservers[i].child {
            let sig = if frozen { "-STOP" } else { "-CONT" };
            let _ = std::process::Command::new("kill")
                .args([sig, &c.id().to_string()])
                .status();
        }
    }
}

impl Drop for ProcCluster {
    fn drop(&mut self) {
        for i in 0..self.chunkservers.len() {
            self.freeze_chunkserver(i, false);
        }
        for p in self.chunkservers.iter_mut() {
            p.kill9();
        }
        for i in 0..self.masters.len() {
            self.freeze_master(i, false);
        }
        self.kill9_master();
    }
}

/// The master's health report of everything below `path` (what `quarry fsck` prints).
pub async fn fsck(client: &Client, path: &str) -> Result<FsckReply, quarry_proto::FsError> {
    client
        .rpc_master(&Fsck {
            path: path.to_string(),
            max_problems: 100,
        })
        .await
}

/// The chunk files in a chunkserver's data directory: (handle, version) from their names.
pub fn chunk_files(chunkserver_dir: &Path) -> Vec<(ChunkHandle, ChunkVersion)> {
    let Ok(dir) = std::fs::read_dir(chunkserver_dir.join("chunks")) else {
        return Vec::new();
    };
    let mut out: Vec<_> = dir
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let (hex, version) = name.strip_suffix(".chunk")?.split_once('.')?;
            Some((
                ChunkHandle(u64::from_str_radix(hex, 16).ok()?),
                ChunkVersion(version.parse().ok()?),
            ))
        })
        .collect();
    out.sort();
    out
}

/// Flip one byte of a chunk's data on disk, behind the store's back (bit rot). The file is
/// `chunks/<handle>.<version>.chunk`; its data starts at the header's `data_offset` (a u64 at
/// byte 48; `docs/chunk-format.md`).
pub fn flip_byte(chunkserver_dir: &Path, handle: ChunkHandle, data_byte: u64) {
    use std::os::unix::fs::FileExt;
    let (_, version) = chunk_files(chunkserver_dir)
        .into_iter()
        .find(|(h, _)| *h == handle)
        .expect("the chunkserver holds the chunk");
    let path = chunkserver_dir
        .join("chunks")
        .join(format!("{}.{}.chunk", handle.hex(), version));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut offset = [0u8; 8];
    file.read_exact_at(&mut offset, 48).unwrap();
    let at = u64::from_le_bytes(offset) + data_byte;
    let mut b = [0u8];
    file.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 0x5a;
    file.write_all_at(&b, at).unwrap();
    file.sync_all().unwrap();
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        out.extend_from_slice(&s.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(data);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("QUARRY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// The word-count corpus of `../shared/bench/make-corpus.sh` (`small/`, `large/`, `ref/`), built
/// once into `$QUARRY_CORPUS` (default `/tmp/quarry-corpus`) when missing. `None` (with a note)
/// when neither the corpus nor the script is here; under CI that is a failure.
pub fn corpus() -> Option<PathBuf> {
    static BUILT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _once = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::var_os("QUARRY_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/quarry-corpus"));
    let ready = |d: &Path| {
        d.join("ref/small.txt").exists()
            && std::fs::read_dir(d.join("small")).is_ok_and(|r| r.count() == 8)
    };
    if ready(&dir) {
        return Some(dir);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let script = [
        std::env::var_os("QUARRY_BENCH_DIR").map(PathBuf::from),
        Some(root.join("../shared/bench")),
        Some(PathBuf::from("/work/shared/bench")),
    ]
    .into_iter()
    .flatten()
    .map(|d| d.join("make-corpus.sh"))
    .find(|p| p.exists());
    let Some(script) = script else {
        assert!(
            !fuse::under_ci(),
            "the word-count corpus is missing under CI and make-corpus.sh was not found \
             (set QUARRY_CORPUS or QUARRY_BENCH_DIR)"
        );
        eprintln!("skipped: no word-count corpus and no make-corpus.sh");
        return None;
    };
    let status = std::process::Command::new("bash")
        .arg(&script)
        .arg(&dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{} failed", script.display());
    assert!(
        ready(&dir),
        "{} did not build {}",
        script.display(),
        dir.display()
    );
    Some(dir)
}

/// `LC_ALL=C sort` of `text` (the comparison the word-count gates use).
pub fn c_sort(text: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = std::process::Command::new("sort")
        .env("LC_ALL", "C")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = text.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success());
    out.stdout
}

/// The whole file at `path`, read through the client.
pub async fn read_whole(client: &Client, path: &str) -> Vec<u8> {
    let a = client.stat(path).await.unwrap();
    client
        .read(a.inode, 0, a.size, a.size)
        .await
        .unwrap()
        .to_vec()
}

/// Read `[offset, offset + len)` of a chunk from one replica (verified by that replica).
pub async fn read_replica(
    client: &Client,
    addr: &str,
    handle: ChunkHandle,
    version: ChunkVersion,
    len: u64,
) -> Result<Bytes, FsError> {
    let mut out = Vec::with_capacity(len as usize);
    while (out.len() as u64) < len {
        let (_, body) = client
            .rpc()
            .call_read(
                addr,
                &ReadChunk {
                    handle,
                    version,
                    offset: out.len() as u64,
                    len: (len - out.len() as u64).min(4 << 20),
                },
            )
            .await?;
        if body.is_empty() {
            break;
        }
        out.extend_from_slice(&body);
    }
    Ok(Bytes::from(out))
}

/// An appended record: `QREC`, writer, seq, payload length, CRC32C of the payload, payload.
pub fn record(writer: u32, seq: u32, len: usize) -> Vec<u8> {
    let payload = pattern(((writer as u64) << 32) | seq as u64, len);
    let mut r = Vec::with_capacity(20 + len);
    r.extend_from_slice(b"QREC");
    r.extend_from_slice(&writer.to_le_bytes());
    r.extend_from_slice(&seq.to_le_bytes());
    r.extend_from_slice(&(len as u32).to_le_bytes());
    r.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    r.extend_from_slice(&payload);
    r
}

/// Parse an append-only file: records, with zero padding up to chunk ends between them.
pub fn parse_records(data: &[u8], chunk_size: usize) -> HashMap<(u32, u32), usize> {
    let mut seen = HashMap::new();
    let mut pos = 0;
    while pos < data.len() {
        if data[pos..].starts_with(b"QREC") {
            let h = &data[pos..pos + 20];
            let writer = u32::from_le_bytes(h[4..8].try_into().unwrap());
            let seq = u32::from_le_bytes(h[8..12].try_into().unwrap());
            let len = u32::from_le_bytes(h[12..16].try_into().unwrap()) as usize;
            let crc = u32::from_le_bytes(h[16..20].try_into().unwrap());
            let payload = &data[pos + 20..pos + 20 + len];
            assert_eq!(
                crc32c::crc32c(payload),
                crc,
                "record ({writer},{seq}) is torn"
            );
            *seen.entry((writer, seq)).or_insert(0) += 1;
            pos += 20 + len;
        } else {
            assert!(
                data[pos..((pos / chunk_size + 1) * chunk_size).min(data.len())]
                    .iter()
                    .all(|&b| b == 0),
                "garbage at offset {pos}"
            );
            pos = (pos / chunk_size + 1) * chunk_size;
        }
    }
    seen
}
