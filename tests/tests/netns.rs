//! A multi-host deployment on one machine: every node in its own network namespace, joined by
//! a bridge, with certificates made by `quarry cert ca` and `quarry cert issue` and started
//! with the commands of `docs/deploy.md`. nftables cuts one node off and heals it:
//!
//! 1. a chunkserver holding replicas of a file being written is cut off mid-write: the write
//!    completes, the file reads back identical, and every chunk regains its goal on the others;
//!    healed, the cluster converges (every chunk at exactly its goal);
//! 2. the Raft leader is cut off: the other two elect a new leader and writes go on, while the
//!    old leader commits nothing; healed, it follows again at the same commit index;
//! 3. a master is replaced (`quarry masters add` a new one, `quarry masters remove` an old one).
//!
//! Needs root, `ip` (iproute2) and `nft` (nftables): without them it fails under `CI=true` and
//! is skipped elsewhere. Everything it creates (namespaces with their veths and bridge, child
//! processes, the temporary directory) is removed by a guard, also on panic.

use quarry_tests::fuse::{fuse_available, have_command, is_mounted, under_ci, wait_until};
use quarry_tests::{pattern, quarry_bin, sha256};
use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Ports every node uses on its own address (as in docs/deploy.md).
const MASTER_PORT: u16 = 7400;
const MASTER_HTTP_PORT: u16 = 7401;
const CHUNKSERVER_PORT: u16 = 7500;
const CHUNKSERVER_HTTP_PORT: u16 = 7501;
const CHUNK_SIZE: usize = 1 << 20;
const FILE_BYTES: usize = 24 << 20;

/// Short timeouts so that a node cut off is noticed in seconds (the flags of `up::Tunables`).
const TUNABLES: &[&str] = &[
    "--chunk-size=1048576",
    "--lease-ms=4000",
    "--heartbeat-ms=200",
    "--heartbeat-timeout-ms=2000",
    "--rpc-timeout-ms=2000",
    "--repair-interval-ms=200",
    "--trash-retention-ms=0",
];

/// Why this test cannot run here, if it cannot.
fn missing_prerequisite() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?");
    if uid != "0" {
        return Some(format!(
            "network namespaces need root (effective uid {uid})"
        ));
    }
    for (cmd, package) in [("ip", "iproute2"), ("nft", "nftables")] {
        if !have_command(cmd) {
            return Some(format!(
                "`{cmd}` is missing (install {package}; scripts/setup.sh does)"
            ));
        }
    }
    None
}

/// Run a command to completion within `limit`; None if it had to be killed.
fn run_bounded(mut cmd: Command, limit: Duration) -> Option<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_thread = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_thread = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out_thread.join().unwrap();
    let stderr = err_thread.join().unwrap();
    status.map(|status| Output {
        status,
        stdout,
        stderr,
    })
}

/// Run `ip ...` (or any setup command) and insist on success.
fn must(program: &str, args: &[&str]) {
    let mut cmd = Command::new(program);
    cmd.args(args);
    let out = run_bounded(cmd, Duration::from_secs(20))
        .unwrap_or_else(|| panic!("{program} {args:?} hung"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Node {
    /// Short name: m1..m4, cs1..cs4, client.
    name: String,
    netns: String,
    ip: String,
    child: Option<Child>,
}

/// The namespaces, the nodes' processes and their files; torn down on drop.
struct Lab {
    hub: String,
    /// Third octet of this run's 10.77.x.0/24 subnet.
    subnet: u8,
    nodes: Vec<Node>,
    dir: tempfile::TempDir,
    /// Namespaces created so far (the hub first).
    created: Vec<String>,
    /// `quarry mount` running in the client's network namespace (and this process's mount
    /// namespace, so the test sees it), and its directory.
    mount: Option<(Child, PathBuf)>,
}

impl Lab {
    fn new() -> Lab {
        let pid = std::process::id();
        let mut lab = Lab {
            hub: format!("qn{pid}-hub"),
            subnet: (pid % 200 + 20) as u8,
            nodes: Vec::new(),
            dir: tempfile::tempdir().unwrap(),
            created: Vec::new(),
            mount: None,
        };
        let hub = lab.hub.clone();
        must("ip", &["netns", "add", &hub]);
        lab.created.push(hub.clone());
        must("ip", &["-n", &hub, "link", "add", "br0", "type", "bridge"]);
        must("ip", &["-n", &hub, "link", "set", "br0", "up"]);
        lab
    }

    /// A namespace for node `name` with host number `host`, a veth into the bridge.
    fn add_node(&mut self, name: &str, host: u8) -> usize {
        let netns = format!("qn{}-{name}", std::process::id());
        let ip = format!("10.77.{}.{host}", self.subnet);
        must("ip", &["netns", "add", &netns]);
        self.created.push(netns.clone());
        let hub = self.hub.clone();
        let port = format!("h-{name}");
        must(
            "ip",
            &[
                "-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &netns,
            ],
        );
        must("ip", &["-n", &hub, "link", "set", &port, "master", "br0"]);
        must("ip", &["-n", &hub, "link", "set", &port, "up"]);
        must(
            "ip",
            &[
                "-n",
                &netns,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                "eth0",
            ],
        );
        must("ip", &["-n", &netns, "link", "set", "eth0", "up"]);
        must("ip", &["-n", &netns, "link", "set", "lo", "up"]);
        std::fs::create_dir_all(self.node_dir(name)).unwrap();
        self.nodes.push(Node {
            name: name.to_string(),
            netns,
            ip,
            child: None,
        });
        self.nodes.len() - 1
    }

    fn node(&self, name: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    fn node_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `quarry ARGS` on the machine of node `name` (in its namespace).
    fn quarry(&self, name: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.node(name).netns])
            .arg(quarry_bin())
            .args(args);
        cmd
    }

    /// `quarry ARGS` on the offline CA machine (the root namespace: it needs no network).
    fn offline(&self, args: &[&str]) -> String {
        let mut cmd = Command::new(quarry_bin());
        cmd.args(args);
        let out = run_bounded(cmd, Duration::from_secs(20)).expect("quarry cert hung");
        assert!(
            out.status.success(),
            "quarry {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Start a long-running `quarry` role on node `name`; its output goes to `<name>.log`.
    fn start(&mut self, name: &str, args: &[String]) {
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log"))).unwrap();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cmd = self.quarry(name, &args);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let i = self.nodes.iter().position(|n| n.name == name).unwrap();
        assert!(self.nodes[i].child.is_none());
        self.nodes[i].child = Some(child);
    }

    /// Mount the cluster at `dir` on the client machine: `quarry mount` entered into the
    /// client's network namespace only (nsenter), so that the mount is visible here.
    fn mount(&mut self, cluster: &Path, dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        let log = std::fs::File::create(self.dir.path().join("mount.log")).unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.node("client").netns))
            .arg(quarry_bin())
            .arg(format!("--cluster={}", cluster.display()))
            .arg("mount")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.mount = Some((child, dir.to_path_buf()));
        wait_until("the mount", Duration::from_secs(30), || is_mounted(dir));
        eprintln!(
            "netns: mounted at {} from the client's namespace",
            dir.display()
        );
    }

    /// SIGTERM the mount (it unmounts itself), falling back to a lazy unmount and SIGKILL.
    fn unmount(&mut self) {
        let Some((mut child, dir)) = self.mount.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && child.try_wait().ok().flatten().is_none() {
            std::thread::sleep(Duration::from_millis(20));
        }
        if is_mounted(&dir) {
            let _ = Command::new("fusermount3").arg("-uz").arg(&dir).status();
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    fn stop(&mut self, name: &str) {
        let i = self.nodes.iter().position(|n| n.name == name).unwrap();
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Drop every packet in and out of node `name` except on its loopback (nftables in its
    /// namespace): the machine is cut off the network but keeps running.
    fn cut(&self, name: &str) {
        let ruleset = "table inet quarry_cut {\n\
             chain input { type filter hook input priority 0; policy drop; iif lo accept; }\n\
             chain output { type filter hook output priority 0; policy drop; oif lo accept; }\n\
             }\n";
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.node(name).netns, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(ruleset.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "nft -f for {name}");
        eprintln!("netns: cut {name} off");
    }

    fn heal(&self, name: &str) {
        must(
            "ip",
            &[
                "netns",
                "exec",
                &self.node(name).netns,
                "nft",
                "delete",
                "table",
                "inet",
                "quarry_cut",
            ],
        );
        eprintln!("netns: healed {name}");
    }

    /// `quarry --cluster FILE ARGS` on the client machine; None if it ran past `limit`.
    fn client(&self, cluster: &Path, args: &[&str], limit: Duration) -> Option<Output> {
        let cluster = format!("--cluster={}", cluster.display());
        let mut all = vec![cluster.as_str()];
        all.extend_from_slice(args);
        run_bounded(self.quarry("client", &all), limit)
    }

    /// The cluster status as the client sees it (`quarry status --json`).
    fn status(&self, cluster: &Path) -> Option<Value> {
        let out = self.client(cluster, &["status", "--json"], Duration::from_secs(10))?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// `quarry fsck / --json`: (verdict, chunks, chunks at exactly their goal).
    fn fsck(&self, cluster: &Path) -> Option<(String, u64, u64)> {
        let out = self.client(cluster, &["fsck", "/", "--json"], Duration::from_secs(10))?;
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        Some((
            v["status"].as_str()?.to_string(),
            v["chunks"].as_u64()?,
            v["healthy"].as_u64()?,
        ))
    }

    /// Which node listens on `addr` (host:port).
    fn node_at(&self, addr: &str) -> String {
        let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
        self.nodes
            .iter()
            .find(|n| n.ip == host)
            .unwrap_or_else(|| panic!("no node at {addr}"))
            .name
            .clone()
    }

    fn log_tail(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.dir.path().join(format!("{name}.log")))
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.unmount();
        for n in self.nodes.iter_mut() {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        // Deleting a namespace deletes its end of each veth, and with it the other end; the
        // hub's deletion takes the bridge.
        for ns in self.created.iter().rev() {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
        if std::thread::panicking() {
            for n in &self.nodes {
                eprintln!(
                    "---- {} log (last lines) ----\n{}",
                    n.name,
                    self.log_tail(&n.name)
                );
            }
        }
    }
}

/// Write a cluster file (as in docs/deploy.md) listing `masters` in this order.
fn write_cluster_file(path: &Path, masters: &[String], certs: &Path) {
    let list: Vec<String> = masters.iter().map(|m| format!("{m:?}")).collect();
    std::fs::write(
        path,
        format!(
            "masters = [{}]\ncerts = {:?}\n",
            list.join(", "),
            certs.display().to_string()
        ),
    )
    .unwrap();
}

fn masters_of(status: &Value) -> Vec<(String, String, u64, u64)> {
    status["masters"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .map(|m| {
                    (
                        m["addr"].as_str().unwrap_or("").to_string(),
                        m["role"].as_str().unwrap_or("").to_string(),
                        m["term"].as_u64().unwrap_or(0),
                        m["commit_index"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn alive_chunkservers(status: &Value) -> usize {
    status["chunkservers"]
        .as_array()
        .map_or(0, |c| c.iter().filter(|c| c["alive"] == true).count())
}

/// Every listed master answers, exactly one leads, and all agree on term and commit index.
fn converged(status: &Value, masters: usize) -> Option<(String, u64, u64)> {
    let ms = masters_of(status);
    if ms.len() != masters {
        return None;
    }
    let leaders: Vec<_> = ms.iter().filter(|m| m.1 == "leader").collect();
    let followers = ms.iter().filter(|m| m.1 == "follower").count();
    if leaders.len() != 1 || followers != masters - 1 {
        return None;
    }
    let (term, commit) = (leaders[0].2, leaders[0].3);
    ms.iter()
        .all(|m| m.2 == term && m.3 == commit)
        .then(|| (leaders[0].0.clone(), term, commit))
}

#[test]
fn cut_off_nodes_and_heal() {
    if let Some(why) = missing_prerequisite() {
        assert!(!under_ci(), "netns test cannot run under CI: {why}");
        eprintln!("skipping the network-namespace test: {why}");
        return;
    }
    let started = Instant::now();
    let mut lab = Lab::new();
    let masters = ["m1", "m2", "m3"];
    let chunkservers = ["cs1", "cs2", "cs3", "cs4"];
    for (i, m) in masters.iter().enumerate() {
        lab.add_node(m, 11 + i as u8);
    }
    for (i, c) in chunkservers.iter().enumerate() {
        lab.add_node(c, 21 + i as u8);
    }
    lab.add_node("client", 31);
    lab.add_node("m4", 14);

    // Certificates, made on the "offline" CA machine and copied to each node's directory.
    let ca = lab.dir.path().join("ca");
    lab.offline(&["cert", "ca", "--dir", &ca.display().to_string()]);
    let ca_flag = ca.display().to_string();
    for n in lab
        .nodes
        .iter()
        .map(|n| (n.name.clone(), n.ip.clone()))
        .collect::<Vec<_>>()
    {
        let (name, ip) = n;
        let (role, cert_name) = if let Some(id) = name.strip_prefix('m') {
            ("master", format!("master-{id}"))
        } else if let Some(i) = name.strip_prefix("cs") {
            ("chunkserver", format!("chunkserver-{i}"))
        } else {
            ("client", "client".to_string())
        };
        let out = lab.node_dir(&name).join("certs");
        lab.offline(&[
            "cert",
            "issue",
            "--ca",
            &ca_flag,
            "--role",
            role,
            "--name",
            &cert_name,
            "--ip",
            &ip,
            "--out",
            &out.display().to_string(),
        ]);
        assert!(
            !out.join("ca.key").exists(),
            "the CA key left the CA machine"
        );
    }
    let shown = lab.offline(&[
        "cert",
        "show",
        &lab.node_dir("cs1").join("certs").display().to_string(),
    ]);
    assert!(shown.contains("role      chunkserver"), "{shown}");
    assert!(shown.contains("verifies  yes"), "{shown}");

    // Three masters forming a Raft group, four chunkservers.
    let master_addr = |lab: &Lab, m: &str| format!("{}:{MASTER_PORT}", lab.node(m).ip);
    let peers: Vec<String> = masters
        .iter()
        .enumerate()
        .map(|(i, m)| format!("{}={}", i + 1, master_addr(&lab, m)))
        .collect();
    let peers = peers.join(",");
    let master_args = |lab: &Lab, m: &str, extra: &[&str]| -> Vec<String> {
        let id = &m[1..];
        let dir = lab.node_dir(m);
        let mut args: Vec<String> = vec![
            "master".into(),
            format!("--id={id}"),
            format!("--name=master-{id}"),
            format!("--data={}", dir.join("data").display()),
            format!("--certs={}", dir.join("certs").display()),
            format!("--listen={}", master_addr(lab, m)),
            format!("--http={}:{MASTER_HTTP_PORT}", lab.node(m).ip),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend(TUNABLES.iter().map(|s| s.to_string()));
        args
    };
    for m in masters {
        let args = master_args(&lab, m, &[&format!("--peers={peers}")]);
        lab.start(m, &args);
    }
    let master_list: Vec<String> = masters.iter().map(|m| master_addr(&lab, m)).collect();
    for c in chunkservers {
        let dir = lab.node_dir(c);
        let ip = lab.node(c).ip.clone();
        let mut args: Vec<String> = vec![
            "chunkserver".into(),
            format!("--name=chunkserver-{}", &c[2..]),
            format!("--data={}", dir.join("data").display()),
            format!("--certs={}", dir.join("certs").display()),
            format!("--listen={ip}:{CHUNKSERVER_PORT}"),
            format!("--master={}", master_list.join(",")),
            format!("--http={ip}:{CHUNKSERVER_HTTP_PORT}"),
        ];
        args.extend(TUNABLES.iter().map(|s| s.to_string()));
        lab.start(c, &args);
    }
    let client_certs = lab.node_dir("client").join("certs");
    let cluster = lab.node_dir("client").join("cluster.toml");
    write_cluster_file(&cluster, &master_list, &client_certs);
    wait_until(
        "a leader and 4 live chunkservers",
        Duration::from_secs(60),
        || {
            lab.status(&cluster)
                .is_some_and(|s| alive_chunkservers(&s) == 4 && converged(&s, 3).is_some())
        },
    );
    eprintln!("netns: cluster up after {:?}", started.elapsed());
    let mount_dir = lab.dir.path().join("mnt");
    let mounted = fuse_available();
    if mounted {
        lab.mount(&cluster, &mount_dir);
    }

    // 1. A chunkserver holding replicas of a file is cut off while the file is being written.
    let data = pattern(7, FILE_BYTES);
    let mut put = lab
        .quarry(
            "client",
            &[
                &format!("--cluster={}", cluster.display()),
                "put",
                "-",
                "/big",
            ],
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = put.stdin.take().unwrap();
    // The put sends 8 MiB pieces: the first goes out, the next waits for the rest.
    stdin.write_all(&data[..FILE_BYTES / 2]).unwrap();
    let victim = {
        let mut victim = None;
        wait_until(
            "the first 8 chunks of /big placed",
            Duration::from_secs(60),
            || {
                let Some(out) = lab.client(
                    &cluster,
                    &["fileinfo", "/big", "--json"],
                    Duration::from_secs(10),
                ) else {
                    return false;
                };
                let Ok(v) = serde_json::from_slice::<Value>(&out.stdout) else {
                    return false;
                };
                // The size is committed when the put ends; the chunks exist as they are written.
                let placed = v["chunks"].as_array().map_or(0, |cs| {
                    cs.iter()
                        .filter(|c| c["replicas"].as_array().is_some_and(|r| r.len() == 3))
                        .count()
                });
                if placed < 8 {
                    return false;
                }
                victim = v["chunks"][0]["replicas"][0]["server"]["addr"]
                    .as_str()
                    .map(|a| lab.node_at(a));
                victim.is_some()
            },
        );
        victim.unwrap()
    };
    lab.cut(&victim);
    let cut_at = Instant::now();
    stdin.write_all(&data[FILE_BYTES / 2..]).unwrap();
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(s) = put.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = put.kill();
            panic!("the write did not complete within 90 s of cutting {victim} off");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    put.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success(), "put with {victim} cut off: {err}");
    eprintln!(
        "netns: write completed with {victim} cut off, {:?} after the cut",
        cut_at.elapsed()
    );
    let read_back = |lab: &Lab| {
        let out = lab
            .client(&cluster, &["get", "/big", "-"], Duration::from_secs(60))
            .expect("get /big hung");
        assert!(
            out.status.success(),
            "get /big: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout.len(), FILE_BYTES);
        assert_eq!(sha256(&out.stdout), sha256(&data), "/big differs");
    };
    read_back(&lab);
    // The master declares the victim dead and re-replicates onto the other three.
    wait_until(
        "every chunk at its goal on the 3 reachable chunkservers",
        Duration::from_secs(60),
        || {
            lab.status(&cluster)
                .is_some_and(|s| alive_chunkservers(&s) == 3)
                && lab
                    .fsck(&cluster)
                    .is_some_and(|(v, chunks, healthy)| v == "HEALTHY" && healthy == chunks)
        },
    );
    eprintln!(
        "netns: every chunk at its goal without {victim}, {:?} after the cut",
        cut_at.elapsed()
    );
    lab.heal(&victim);
    let healed_at = Instant::now();
    wait_until(
        "4 live chunkservers and every chunk at exactly its goal",
        Duration::from_secs(60),
        || {
            lab.status(&cluster)
                .is_some_and(|s| alive_chunkservers(&s) == 4)
                && lab.fsck(&cluster).is_some_and(|(v, chunks, healthy)| {
                    v == "HEALTHY"
                        && healthy == chunks
                        && chunks == (FILE_BYTES / CHUNK_SIZE) as u64
                })
        },
    );
    eprintln!(
        "netns: {victim} back, every chunk at exactly its goal {:?} after healing",
        healed_at.elapsed()
    );
    read_back(&lab);
    eprintln!(
        "netns: chunkserver phase done after {:?}",
        started.elapsed()
    );

    // 2. The Raft leader is cut off.
    let status = lab.status(&cluster).expect("status");
    let (leader_addr, old_term, _) = converged(&status, 3).expect("converged before the cut");
    let old_leader = lab.node_at(&leader_addr);
    lab.cut(&old_leader);
    // A client lists every master; this one lists the reachable ones first. A new client asks
    // every master who leads, but until a new leader is elected no reachable master says it
    // does, and one listed first that cannot be reached would cost each command below its 30 s
    // RPC timeout.
    let mut reordered: Vec<String> = master_list
        .iter()
        .filter(|a| **a != leader_addr)
        .cloned()
        .collect();
    reordered.push(leader_addr.clone());
    let during = lab.node_dir("client").join("cluster-during-cut.toml");
    write_cluster_file(&during, &reordered, &client_certs);
    let new_leader = {
        let mut found = None;
        wait_until(
            "a new leader among the others",
            Duration::from_secs(30),
            || {
                let Some(s) = lab.status(&during) else {
                    return false;
                };
                found = masters_of(&s)
                    .into_iter()
                    .find(|m| m.1 == "leader" && m.0 != leader_addr && m.2 > old_term)
                    .map(|m| m.0);
                found.is_some()
            },
        );
        found.unwrap()
    };
    eprintln!("netns: {old_leader} cut off; new leader {new_leader}");
    let small = pattern(8, 300_000);
    std::fs::write(lab.dir.path().join("small"), &small).unwrap();
    let small_path = lab.dir.path().join("small").display().to_string();
    let out = lab
        .client(
            &during,
            &["put", &small_path, "/after-leader-cut"],
            Duration::from_secs(60),
        )
        .expect("put during the leader cut hung");
    assert!(
        out.status.success(),
        "a write with the old leader cut off: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The old leader, asked from its own machine, commits nothing.
    let alone = lab.node_dir(&old_leader).join("cluster-alone.toml");
    write_cluster_file(
        &alone,
        std::slice::from_ref(&leader_addr),
        &lab.node_dir("client").join("certs"),
    );
    let attempt = run_bounded(
        lab.quarry(
            &old_leader,
            &[
                &format!("--cluster={}", alone.display()),
                "mkdir",
                "/split-brain",
            ],
        ),
        Duration::from_secs(8),
    );
    assert!(
        attempt.as_ref().is_none_or(|o| !o.status.success()),
        "the cut-off old leader committed a mkdir"
    );
    lab.heal(&old_leader);
    let (leader_after, _, commit) = {
        let mut found = None;
        wait_until(
            "3 masters at one term and commit index, the old leader following",
            Duration::from_secs(30),
            || {
                found = lab.status(&cluster).and_then(|s| converged(&s, 3));
                found.is_some()
            },
        );
        found.unwrap()
    };
    assert_ne!(lab.node_at(&leader_after), old_leader);
    eprintln!(
        "netns: healed; {old_leader} follows at commit index {commit} after {:?}",
        started.elapsed()
    );
    let out = lab
        .client(&cluster, &["stat", "/split-brain"], Duration::from_secs(20))
        .unwrap();
    assert!(!out.status.success(), "/split-brain exists");
    let out = lab
        .client(
            &cluster,
            &["get", "/after-leader-cut", "-"],
            Duration::from_secs(20),
        )
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, small);
    if mounted {
        let through_mount = std::fs::read(mount_dir.join("big")).unwrap();
        assert_eq!(
            sha256(&through_mount),
            sha256(&data),
            "/big through the mount"
        );
        lab.unmount();
        assert!(!is_mounted(&mount_dir));
        eprintln!("netns: /big read back through the mount, unmounted");
    }

    // 3. Replace master 3 by master 4 (a new machine): start it with --join, add, remove.
    let mut peers4 = peers.clone();
    peers4.push_str(&format!(",4={}", master_addr(&lab, "m4")));
    let args = master_args(&lab, "m4", &[&format!("--peers={peers4}"), "--join"]);
    lab.start("m4", &args);
    let m4 = master_addr(&lab, "m4");
    let out = lab
        .client(
            &cluster,
            &["masters", "add", "4", &m4],
            Duration::from_secs(60),
        )
        .expect("masters add hung");
    assert!(
        out.status.success(),
        "masters add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = lab
        .client(
            &cluster,
            &["masters", "remove", "3"],
            Duration::from_secs(60),
        )
        .expect("masters remove hung");
    assert!(
        out.status.success(),
        "masters remove: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    lab.stop("m3");
    let final_masters: Vec<String> = ["m1", "m2", "m4"]
        .iter()
        .map(|m| master_addr(&lab, m))
        .collect();
    write_cluster_file(&cluster, &final_masters, &client_certs);
    wait_until(
        "masters 1, 2 and 4 at one term and commit index",
        Duration::from_secs(30),
        || {
            lab.status(&cluster).is_some_and(|s| {
                converged(&s, 3).is_some() && masters_of(&s).iter().any(|m| m.0 == m4)
            })
        },
    );
    wait_until("fsck HEALTHY at the end", Duration::from_secs(30), || {
        lab.fsck(&cluster)
            .is_some_and(|(v, chunks, healthy)| v == "HEALTHY" && healthy == chunks)
    });
    read_back(&lab);
    eprintln!("netns: done in {:?}", started.elapsed());
}
