//! Disks filling up and servers joining, on loopback clusters: a chunkserver whose data
//! directory is a small tmpfs fills up (writes succeed elsewhere and the master stops placing
//! chunks there), every chunkserver full (`ENOSPC`, nothing hangs, nothing acknowledged is
//! lost, deleting frees space again), and a new chunkserver receiving replicas until every
//! server holds its share.
//!
//! Mounting tmpfs needs root; without it these tests are skipped, except under CI
//! (`CI=true`), where that is a failure.

use bytes::Bytes;
use quarry_proto::{FsError, InodeId, NodeId};
use quarry_tests::fuse::under_ci;
use quarry_tests::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A tmpfs mounted over a directory for the test's duration.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, bytes: u64) -> Tmpfs {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount tmpfs on {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// Whether this process may mount tmpfs (root); a failure under CI.
fn can_mount() -> bool {
    let root = unsafe_free_euid() == 0;
    if !root {
        assert!(!under_ci(), "these tests need root to mount tmpfs under CI");
        eprintln!("skipped: mounting tmpfs needs root");
    }
    root
}

fn unsafe_free_euid() -> u32 {
    // `id -u` rather than libc, to keep this crate free of unsafe code.
    let out = Command::new("id").arg("-u").output().expect("run id");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(u32::MAX)
}

/// Move chunkserver `i`'s data directory onto a fresh tmpfs of `bytes` (keeping its node id).
async fn onto_tmpfs(cluster: &mut Cluster, i: usize, bytes: u64) -> Tmpfs {
    cluster.stop_chunkserver(i).await;
    let dir = cluster.chunkserver_dir(i);
    let id = std::fs::read(dir.join("node_id")).unwrap();
    let fs = Tmpfs::mount(&dir, bytes);
    std::fs::write(dir.join("node_id"), id).unwrap();
    cluster.restart_chunkserver(i).await;
    fs
}

async fn write_file(
    client: &quarry_client::Client,
    name: &str,
    data: &[u8],
) -> Result<InodeId, FsError> {
    let attr = client
        .create(InodeId::ROOT, name, 0o644, 0, 0, true)
        .await?;
    let res = tokio::time::timeout(
        Duration::from_secs(90),
        client.write(attr.inode, 0, Bytes::copy_from_slice(data)),
    )
    .await
    .unwrap_or_else(|_| panic!("writing {name} hung"));
    res.map(|_| attr.inode)
}

async fn servers_of(client: &quarry_client::Client, inode: InodeId) -> Vec<NodeId> {
    client
        .chunks(inode)
        .await
        .unwrap()
        .iter()
        .flat_map(|c| c.replicas.iter().map(|r| r.id))
        .collect()
}

/// Three chunkservers, replication 3, one of them on a 12 MiB tmpfs: every chunk goes to it
/// until it is full. Heartbeats are slow (1.5 s), so the master keeps placing chunks on it for a
/// while after it filled: those writes fail there with `ENOSPC` and succeed on the other two
/// (the full replica is withdrawn). Then the master stops placing chunks on it; the chunks it
/// could not take are under-replicated until a fourth server joins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_chunkserver_makes_writes_go_elsewhere_and_gets_no_new_chunks() {
    if !can_mount() {
        return;
    }
    init_tracing();
    let mut opts = Options::default().chunk_size(1 << 20);
    opts.heartbeat_ms = 1_500;
    opts.heartbeat_timeout_ms = 6_000;
    let mut cluster = Cluster::start(opts).await;
    let _tmpfs = onto_tmpfs(&mut cluster, 2, 12 << 20).await;
    cluster.wait_alive(3).await;
    let full_node = cluster.chunkserver(2).node_id();
    let client = cluster.client().await;
    let mut files = Vec::new();
    for i in 0..20u64 {
        let data = pattern(i, 2 << 20);
        let inode = write_file(&client, &format!("f{i}"), &data)
            .await
            .unwrap_or_else(|e| panic!("file {i}: {e} (two servers have room)"));
        files.push((format!("/f{i}"), inode, data));
    }
    // The small disk could not take every chunk (its copies that hit ENOSPC were withdrawn and
    // deleted, which frees room again, so how full it is at this instant depends on timing);
    // the chunks it lacks are under-replicated, checked below.
    let status = client.cluster_status().await.unwrap();
    let s = status
        .chunkservers
        .iter()
        .find(|c| c.id == full_node)
        .unwrap();
    assert!(s.used_bytes <= s.capacity_bytes, "{s:?}");
    let mut on_full = 0;
    for (_, inode, _) in &files {
        on_full += servers_of(&client, *inode)
            .await
            .iter()
            .filter(|n| **n == full_node)
            .count();
    }
    assert!(
        on_full < 2 * files.len(),
        "the 12 MiB disk holds {on_full} of 40 chunks"
    );
    // Every file reads back whole; no chunk is missing or corrupt.
    for (path, _, data) in &files {
        assert!(read_whole(&client, path).await == *data, "{path}");
    }
    let r = fsck(&client, "/").await.unwrap();
    assert_eq!((r.missing, r.corrupt_replicas), (0, 0), "{r:?}");
    assert!(
        r.under_replicated > 0,
        "some chunks did not fit on the small disk: {r:?}"
    );
    // A fourth server with room: every chunk gets its three replicas.
    cluster.add_chunkserver().await;
    wait_for("every chunk healthy", Duration::from_secs(90), || async {
        let r = fsck(&client, "/").await.ok()?;
        (r.status() == "HEALTHY" && r.healthy == r.chunks).then_some(())
    })
    .await;
    drop(client);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_disk_full_is_enospc_without_losing_or_hanging_and_deleting_frees_space() {
    if !can_mount() {
        return;
    }
    init_tracing();
    let mut cluster = Cluster::start(Options::default().chunk_size(1 << 20)).await;
    let mut disks = Vec::new();
    for i in 0..3 {
        disks.push(onto_tmpfs(&mut cluster, i, 8 << 20).await);
    }
    cluster.wait_alive(3).await;
    let client = cluster.client().await;
    let started = std::time::Instant::now();
    let mut written = Vec::new();
    let mut refused = None;
    for i in 0..20u64 {
        let data = pattern(100 + i, 1 << 20);
        match write_file(&client, &format!("g{i}"), &data).await {
            Ok(_) => written.push((format!("/g{i}"), data)),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let err = refused.expect("8 MiB disks cannot take 20 MiB");
    assert!(
        matches!(err, FsError::NoSpace | FsError::NotEnoughServers { .. }),
        "{err:?}"
    );
    assert!(!written.is_empty());
    eprintln!(
        "{} files written before: {err} ({:?})",
        written.len(),
        started.elapsed()
    );
    // Nothing acknowledged is lost; a second try fails the same way, promptly.
    for (path, data) in &written {
        assert!(read_whole(&client, path).await == *data, "{path}");
    }
    let t = std::time::Instant::now();
    let again = write_file(&client, "again", &pattern(7, 1 << 20)).await;
    eprintln!("second refusal after {:?}", t.elapsed());
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "a full cluster refuses promptly, it does not retry for the client's whole deadline"
    );
    assert!(
        matches!(
            again,
            Err(FsError::NoSpace | FsError::NotEnoughServers { .. })
        ),
        "{again:?}"
    );
    // Deleting files frees space (their chunks leave the disks), and writes work again.
    for (path, _) in written.iter().take(3) {
        client.unlink(InodeId::ROOT, &path[1..]).await.unwrap();
    }
    client.unlink(InodeId::ROOT, "again").await.unwrap();
    let data = pattern(8, 1 << 20);
    let t = std::time::Instant::now();
    wait_for(
        "a write after deleting",
        Duration::from_secs(60),
        || async {
            let name = format!("after-{}", rand_suffix());
            match write_file(&client, &name, &data).await {
                Ok(_) => Some(()),
                Err(_) => {
                    let _ = client.unlink(InodeId::ROOT, &name).await;
                    None
                }
            }
        },
    )
    .await;
    eprintln!("a write succeeded {:?} after deleting", t.elapsed());
    drop(client);
    cluster.shutdown().await;
    drop(disks);
}

fn rand_suffix() -> u64 {
    rand::random::<u64>() % 1_000_000
}

/// Each server's share is proportional to the capacity it reports (free space plus its own
/// chunks). Servers sharing one filesystem report its free space, which moves with whatever
/// else writes to that disk (on a CI machine: builds, other tests) and skews their shares; so
/// each server here has its own tmpfs of one size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_chunkserver_receives_replicas_until_each_holds_its_share() {
    if !can_mount() {
        return;
    }
    init_tracing();
    const DISK: u64 = 256 << 20;
    let mut opts = Options::default().chunk_size(1 << 20);
    opts.balance_slack_chunks = 1;
    let mut cluster = Cluster::start(opts).await;
    let mut disks = Vec::new();
    for i in 0..3 {
        disks.push(onto_tmpfs(&mut cluster, i, DISK).await);
    }
    cluster.wait_alive(3).await;
    let client = cluster.client().await;
    let mut files = Vec::new();
    for i in 0..30u64 {
        let data = pattern(200 + i, 2 << 20);
        write_file(&client, &format!("b{i}"), &data).await.unwrap();
        files.push((format!("/b{i}"), data));
    }
    // 60 chunks × 3 replicas on 3 servers; a fourth joins: 45 each is the even share.
    let next = cluster.chunkserver_dir(3);
    std::fs::create_dir_all(&next).unwrap();
    disks.push(Tmpfs::mount(&next, DISK));
    let new = cluster.add_chunkserver().await;
    cluster.wait_alive(4).await;
    let dirs: Vec<PathBuf> = (0..4).map(|i| cluster.chunkserver_dir(i)).collect();
    let counts = wait_for(
        "every server within 2 of 45 replicas",
        Duration::from_secs(120),
        || {
            let dirs = dirs.clone();
            async move {
                let counts: Vec<usize> = dirs.iter().map(|d| chunk_files(d).len()).collect();
                counts
                    .iter()
                    .all(|&n| (43..=47).contains(&n))
                    .then_some(counts)
            }
        },
    )
    .await;
    eprintln!("replicas per server after rebalancing: {counts:?} (new server: {new})");
    wait_for("every chunk healthy", Duration::from_secs(60), || async {
        let r = fsck(&client, "/").await.ok()?;
        (r.status() == "HEALTHY" && r.healthy == r.chunks && r.over_replicated == 0).then_some(())
    })
    .await;
    for (path, data) in &files {
        assert!(read_whole(&client, path).await == *data, "{path}");
    }
    drop(client);
    cluster.shutdown().await;
    drop(disks);
}
