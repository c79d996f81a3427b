//! The trash and replication goals on a loopback cluster: a deleted file keeps its chunks on the
//! chunkservers' disks while it is in the trash, comes back byte-identical, and its chunk files
//! leave every disk once the retention has passed; `quarry setrep` changes goals and where new
//! chunks go; `rm` in a FUSE mount goes to the trash and `quarry trash restore` undoes it.

use bytes::Bytes;
use quarry_client::Client;
use quarry_proto::{ChunkHandle, InodeId};
use quarry_tests::fuse::{fuse_available, runtime, wait_until, MountGuard};
use quarry_tests::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// 1 MiB chunks, so that a small file has several.
const CHUNK: u64 = 1 << 20;

/// Chunk files of `handle` (`<16 hex>.<version>.chunk`) under the chunkservers' directories.
fn chunk_files(dirs: &[PathBuf], handle: ChunkHandle) -> Vec<PathBuf> {
    fn walk(dir: &Path, prefix: &str, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, prefix, out);
            } else if e
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with(".chunk"))
            {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    for d in dirs {
        walk(d, &format!("{}.", handle.hex()), &mut out);
    }
    out
}

fn server_dirs(cluster: &Cluster) -> Vec<PathBuf> {
    (0..cluster.opts.chunkservers)
        .map(|i| cluster.chunkserver_dir(i))
        .collect()
}

async fn write_file(client: &Client, path: &str, data: &[u8]) -> InodeId {
    let (parent, name) = client.parent_of(path).await.unwrap();
    let a = client
        .create(parent.inode, &name, 0o644, 0, 0, true)
        .await
        .unwrap();
    client
        .write(a.inode, 0, Bytes::copy_from_slice(data))
        .await
        .unwrap();
    a.inode
}

async fn handles(client: &Client, inode: InodeId) -> Vec<ChunkHandle> {
    client
        .chunks(inode)
        .await
        .unwrap()
        .iter()
        .map(|c| c.handle)
        .collect()
}

/// Wait until every chunkserver has sent two heartbeats since `since`: any delete order the
/// master queued before `since` has then been carried out.
async fn two_heartbeats_since(client: &Client, since: Instant, heartbeat_ms: u64) {
    wait_for("two heartbeats", Duration::from_secs(30), || async {
        let s = client.cluster_status().await.ok()?;
        let elapsed = since.elapsed().as_millis() as u64;
        s.chunkservers
            .iter()
            .all(|c| c.alive && c.last_heartbeat_ms_ago + 2 * heartbeat_ms < elapsed)
            .then_some(())
    })
    .await;
}

/// Run the `quarry` CLI (from a thread outside the runtime); its stdout, or a panic.
fn cli_sync(cluster_file: &Path, args: &[&str]) -> String {
    let (ok, out, err) = run_cli(cluster_file, args);
    assert!(ok, "quarry {args:?} failed: {err}");
    String::from_utf8(out).unwrap()
}

/// [`cli_sync`] from inside the runtime (on a blocking thread, so the cluster keeps serving).
async fn cli(cluster: &Cluster, args: &[&str]) -> String {
    let file = cluster.cluster_file.clone();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli_sync(&file, &args)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trashed_chunks_stay_until_the_retention_then_leave_every_disk() {
    init_tracing();
    let retention = Duration::from_secs(3);
    let cluster = Cluster::start(
        Options::default()
            .chunk_size(CHUNK)
            .trash_retention_ms(retention.as_millis() as u64),
    )
    .await;
    let dirs = server_dirs(&cluster);
    let client = cluster.client().await;
    client.mkdir(InodeId::ROOT, "d", 0o755, 0, 0).await.unwrap();
    let data = pattern(7, (2 * CHUNK + 12_345) as usize);
    let inode = write_file(&client, "/d/f", &data).await;
    let hs = handles(&client, inode).await;
    assert_eq!(hs.len(), 3);
    for h in &hs {
        assert_eq!(chunk_files(&dirs, *h).len(), 3, "chunk {h} on 3 disks");
    }

    // Deleted: the name is gone at once, the file is in the trash, its chunks stay on disk.
    let (parent, _) = client.parent_of("/d/f").await.unwrap();
    client.unlink(parent.inode, "f").await.unwrap();
    let deleted_at = Instant::now();
    assert!(client.stat("/d/f").await.is_err());
    let (trash, retention_ms) = client.trash_list().await.unwrap();
    assert_eq!(retention_ms, 3000);
    assert_eq!(trash.len(), 1);
    assert_eq!(
        (trash[0].inode, trash[0].path.as_str(), trash[0].size),
        (inode, "/d/f", data.len() as u64)
    );
    let fs = client.statfs().await.unwrap();
    assert_eq!((fs.trash_files, fs.trash_bytes), (1, data.len() as u64));
    let status = client.cluster_status().await.unwrap();
    assert_eq!(status.masters[0].trash_files, 1);
    two_heartbeats_since(&client, deleted_at, cluster.opts.heartbeat_ms).await;
    for h in &hs {
        assert_eq!(
            chunk_files(&dirs, *h).len(),
            3,
            "chunk {h} kept while trashed"
        );
    }

    // Restored (before the retention ran out): byte-identical, same chunks.
    let out = cli(&cluster, &["trash", "restore", &inode.0.to_string()]).await;
    assert!(out.contains("restored"), "{out}");
    assert!(
        deleted_at.elapsed() < retention,
        "the test machine was too slow to restore within the retention"
    );
    assert_eq!(read_whole(&client, "/d/f").await, data);
    assert_eq!(handles(&client, inode).await, hs);
    assert!(client.trash_list().await.unwrap().0.is_empty());

    // Deleted again and left alone: after the retention the master purges it, and its chunk
    // files leave every chunkserver's disk.
    client.unlink(parent.inode, "f").await.unwrap();
    let deleted_at = Instant::now();
    wait_for(
        "the trashed chunk files to leave every disk",
        Duration::from_secs(60),
        || async {
            hs.iter()
                .all(|h| chunk_files(&dirs, *h).is_empty())
                .then_some(())
        },
    )
    .await;
    assert!(
        deleted_at.elapsed() >= retention,
        "chunks went after {:?}, before the retention",
        deleted_at.elapsed()
    );
    assert!(client.trash_list().await.unwrap().0.is_empty());
    let fs = client.statfs().await.unwrap();
    assert_eq!((fs.trash_files, fs.trash_bytes), (0, 0));
    assert!(client.trash_restore(inode, None).await.is_err());

    // `quarry trash purge --all` reclaims at once.
    let inode = write_file(&client, "/d/g", &data[..1000]).await;
    let hs = handles(&client, inode).await;
    client.unlink(parent.inode, "g").await.unwrap();
    let listed = cli(&cluster, &["trash", "list"]).await;
    assert!(listed.contains("/d/g"), "{listed}");
    assert_eq!(
        cli(&cluster, &["trash", "purge", "--all"]).await.trim(),
        "purged 1 file"
    );
    wait_for(
        "purged chunk files to leave every disk",
        Duration::from_secs(30),
        || async { chunk_files(&dirs, hs[0]).is_empty().then_some(()) },
    )
    .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setrep_changes_goals_and_where_new_chunks_go() {
    init_tracing();
    let cluster = Cluster::start(Options::default().chunk_size(CHUNK).chunkservers(4)).await;
    let dirs = server_dirs(&cluster);
    let client = cluster.client().await;
    client.mkdir_p("/d/sub", 0o755).await.unwrap();
    client.mkdir_p("/e", 0o755).await.unwrap();
    let data = pattern(3, (CHUNK + 100) as usize);
    write_file(&client, "/d/old", &data).await;
    write_file(&client, "/d/sub/old", &data).await;
    assert_eq!(
        cli(&cluster, &["getrep", "/d/old"]).await.trim(),
        "/d/old: 3"
    );

    // -r: the whole subtree.
    cli(&cluster, &["setrep", "-r", "2", "/d"]).await;
    for p in ["/d", "/d/sub", "/d/old", "/d/sub/old"] {
        assert_eq!(
            cli(&cluster, &["getrep", p]).await.trim(),
            format!("{p}: 2")
        );
    }
    assert_eq!(cli(&cluster, &["getrep", "/e"]).await.trim(), "/e: 3");
    // New files inherit the goal, and their chunks get that many replicas.
    let inode = write_file(&client, "/d/sub/new", &data).await;
    let chunks = client.chunks(inode).await.unwrap();
    assert_eq!(chunks.len(), 2);
    for c in &chunks {
        assert_eq!(
            c.replicas.len(),
            2,
            "chunk {} replicas {:?}",
            c.index,
            c.replicas
        );
        assert_eq!(chunk_files(&dirs, c.handle).len(), 2);
    }
    assert_eq!(read_whole(&client, "/d/sub/new").await, data);

    // Without -r on a directory: its own goal only (what new children inherit).
    write_file(&client, "/e/before", &data[..10]).await;
    cli(&cluster, &["setrep", "1", "/e"]).await;
    assert_eq!(
        cli(&cluster, &["getrep", "/e/before"]).await.trim(),
        "/e/before: 3"
    );
    let inode = write_file(&client, "/e/after", &data[..10]).await;
    assert_eq!(
        cli(&cluster, &["getrep", "/e/after"]).await.trim(),
        "/e/after: 1"
    );
    let chunks = client.chunks(inode).await.unwrap();
    assert_eq!(chunks[0].replicas.len(), 1);
    // Outside: the cluster's default.
    let inode = write_file(&client, "/top", &data[..10]).await;
    assert_eq!(client.chunks(inode).await.unwrap()[0].replicas.len(), 3);
    // Status judges replication by each chunk's goal.
    let s = client.cluster_status().await.unwrap();
    assert_eq!((s.under_replicated_chunks, s.missing_chunks), (0, 0));
    // Out of range.
    let file = cluster.cluster_file.clone();
    let (ok, _, _) = tokio::task::spawn_blocking(move || run_cli(&file, &["setrep", "0", "/d"]))
        .await
        .unwrap();
    assert!(!ok);
    cluster.shutdown().await;
}

#[test]
fn rm_in_a_mount_goes_to_the_trash_and_restore_brings_it_back() {
    if !fuse_available() {
        return;
    }
    let rt = runtime();
    let cluster = rt.block_on(Cluster::start(
        Options::default().trash_retention_ms(3_600_000),
    ));
    let m = MountGuard::new(&rt, &cluster);
    let data = pattern(11, 300_000);
    std::fs::create_dir(m.path("docs")).unwrap();
    std::fs::write(m.path("docs/report.bin"), &data).unwrap();
    m.sh("rm docs/report.bin");
    assert!(!m.path("docs/report.bin").exists());

    let listed = cli_sync(&cluster.cluster_file, &["trash", "list", "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let entries = doc["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{listed}");
    assert_eq!(entries[0]["path"], "/docs/report.bin");
    assert_eq!(entries[0]["size"], data.len() as u64);
    let id = entries[0]["id"].as_u64().unwrap().to_string();

    cli_sync(&cluster.cluster_file, &["trash", "restore", &id]);
    wait_until(
        "the restored file in the mount",
        Duration::from_secs(10),
        || m.path("docs/report.bin").exists(),
    );
    assert_eq!(std::fs::read(m.path("docs/report.bin")).unwrap(), data);
    // Restoring to another name works the same way.
    m.sh("rm docs/report.bin");
    cli_sync(
        &cluster.cluster_file,
        &["trash", "restore", &id, "/docs/again.bin"],
    );
    wait_until(
        "the file restored under a new name",
        Duration::from_secs(10),
        || m.path("docs/again.bin").exists(),
    );
    assert_eq!(std::fs::read(m.path("docs/again.bin")).unwrap(), data);
    drop(m);
    rt.block_on(cluster.shutdown());
}
