//! Nodes started as `quarry` processes from TOML config files (`--config` and
//! `QUARRY_CONFIG`): the file's settings take effect, an environment variable overrides the
//! file, and a flag overrides both. Observed through the client library: the cluster's chunk
//! size, the root's replication goal and the replicas of a written file's chunks.

use bytes::Bytes;
use quarry_proto::master::FileInfo;
use quarry_proto::InodeId;
use quarry_tests::{
    connect_client_to, free_port, free_tcp_addr, pattern, quarry_bin, wait_for, Certs,
};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Child processes, killed when the test ends (pass or fail).
#[derive(Default)]
struct Nodes(Vec<Child>);

impl Nodes {
    fn spawn(&mut self, args: &[String], env: &[(&str, String)]) {
        let mut cmd = Command::new(quarry_bin());
        cmd.args(args)
            .env_remove("QUARRY_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.0.push(cmd.spawn().unwrap());
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for c in self.0.iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn write(path: &Path, text: &str) -> String {
    std::fs::write(path, text).unwrap();
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_start_from_config_files_and_flags_and_env_override_them() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::create(&dir.path().join("certs"));
    let master: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let http = free_tcp_addr();
    // Everything the master needs is in its file; replication = 3 there is overridden by the
    // environment (1), which the flag overrides in turn (2).
    let master_toml = write(
        &dir.path().join("master.toml"),
        &format!(
            "[master]\n\
             data = \"{}\"\n\
             certs = \"{}\"\n\
             listen = \"{master}\"\n\
             http = \"{http}\"\n\
             chunk_size = \"1MiB\"\n\
             replication = 3\n\
             lease_ms = \"4s\"\n\
             [cluster]\n\
             heartbeat_ms = \"200ms\"\n\
             heartbeat_timeout_ms = \"2s\"\n",
            dir.path().join("master-0").display(),
            certs.dir.display(),
        ),
    );
    // The chunkservers share one file (found through QUARRY_CONFIG); their identity comes
    // from flags.
    let chunkserver_toml = write(
        &dir.path().join("chunkserver.toml"),
        &format!(
            "[chunkserver]\n\
             certs = \"{}\"\n\
             masters = \"{master}\"\n\
             [cluster]\n\
             heartbeat_ms = 200\n\
             heartbeat_timeout_ms = 2000\n",
            certs.dir.display(),
        ),
    );

    // `quarry config check` accepts both files and names a misspelt key and its file.
    for file in [&master_toml, &chunkserver_toml] {
        let out = Command::new(quarry_bin())
            .args(["config", "check", file])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let bad = write(&dir.path().join("bad.toml"), "[master]\nreplicaton = 2\n");
    let out = Command::new(quarry_bin())
        .args(["master", "--config", &bad])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("unknown key `replicaton` in [master]") && stderr.contains("bad.toml"),
        "{stderr}"
    );

    let mut nodes = Nodes::default();
    nodes.spawn(
        &[
            "master".into(),
            "--config".into(),
            master_toml.clone(),
            "--replication=2".into(),
        ],
        &[("QUARRY_REPLICATION", "1".into())],
    );
    for i in 0..3 {
        let name = format!("chunkserver-{i}");
        nodes.spawn(
            &[
                "chunkserver".into(),
                format!("--data={}", dir.path().join(&name).display()),
                format!("--listen=127.0.0.1:{}", free_port()),
                format!("--name={name}"),
            ],
            &[("QUARRY_CONFIG", chunkserver_toml.clone())],
        );
    }

    let client = connect_client_to(&certs, &[master], Duration::from_secs(60)).await;
    wait_for("3 live chunkservers", Duration::from_secs(60), || async {
        let s = client.cluster_status().await.ok()?;
        (s.chunkservers.iter().filter(|c| c.alive).count() == 3).then_some(())
    })
    .await;

    // From the file: 1 MiB chunks. From the flag (over env and file): replication 2.
    assert_eq!(client.chunk_size(), 1 << 20);
    assert_eq!(client.get_goal(InodeId::ROOT).await.unwrap(), 2);
    let data = pattern(7, (5 << 20) / 2);
    let attr = client
        .create(InodeId::ROOT, "f", 0o644, 0, 0, true)
        .await
        .unwrap();
    client
        .write(attr.inode, 0, Bytes::from(data.clone()))
        .await
        .unwrap();
    let info = client
        .rpc_master(&FileInfo {
            inode: attr.inode,
            first_index: 0,
            count: 16,
        })
        .await
        .unwrap();
    assert_eq!(info.chunks.len(), 3, "2.5 MiB in 1 MiB chunks");
    for chunk in &info.chunks {
        assert_eq!(chunk.goal, 2);
        assert_eq!(
            chunk.replicas.len(),
            2,
            "chunk {}: {:?}",
            chunk.index,
            chunk.replicas
        );
    }
    assert_eq!(quarry_tests::read_whole(&client, "/f").await, data);

    // The master's HTTP endpoint came from its file too.
    let body = http_get(http, "/metrics");
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
}

/// A plain HTTP/1.1 GET (no client library needed for one request).
fn http_get(addr: SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}
