//! The chunk lifecycle on loopback clusters: re-replication after a `kill -9`, deletion of extra
//! replicas when the dead server comes back, stale replicas that are never served and are
//! deleted, bit rot found by a read or by the scrubber and repaired, and what `fsck` and
//! `fileinfo` report. Everything waits on observable state (status, fsck, files on disk).

use bytes::Bytes;
use quarry_client::Client;
use quarry_proto::master::{FileInfo, FsckReply, ReplicaState};
use quarry_proto::{FsError, InodeId, NodeId};
use quarry_tests::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// Every chunk of every file has exactly its goal of live replicas, and none is corrupt.
fn all_healthy(r: &FsckReply) -> bool {
    r.status() == "HEALTHY"
        && r.healthy == r.chunks
        && r.over_replicated == 0
        && r.corrupt_replicas == 0
        && r.chunks > 0
}

/// Every listed replica of every chunk of the file serves exactly `data`'s bytes for it, and
/// each chunk is on `want` distinct servers.
async fn check_every_replica(client: &Client, path: &str, data: &[u8], want: usize) {
    let attr = client.stat(path).await.unwrap();
    assert_eq!(attr.size, data.len() as u64, "{path}");
    let cs = client.chunk_size();
    let chunks = client.chunks(attr.inode).await.unwrap();
    assert_eq!(chunks.len() as u64, attr.size.div_ceil(cs), "{path}");
    for c in chunks {
        let start = (c.index * cs) as usize;
        let end = (start + cs as usize).min(data.len());
        let mut ids: Vec<NodeId> = c.replicas.iter().map(|r| r.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(
            ids.len(),
            want,
            "{path} chunk {}: {:?}",
            c.index,
            c.replicas
        );
        for r in &c.replicas {
            let got = read_replica(client, &r.addr, c.handle, c.version, cs)
                .await
                .unwrap_or_else(|e| panic!("{path} chunk {} on {}: {e}", c.index, r.addr));
            assert!(
                got[..] == data[start..end],
                "{path} chunk {} differs on {}",
                c.index,
                r.addr
            );
        }
    }
}

async fn run_cli_async(cluster_file: &Path, args: &[&str]) -> (bool, String, String) {
    let file = cluster_file.to_path_buf();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, out, err) = run_cli(&file, &args);
        (ok, String::from_utf8_lossy(&out).into_owned(), err)
    })
    .await
    .unwrap()
}

/// (a) A writer records a manifest; one of four chunkservers is `kill -9`ed. Every file reads
/// back identical, every chunk has three live replicas again within 60 s of the master
/// declaring the server dead (each replica serving the right bytes), and when the server comes
/// back the extra replicas are deleted until every chunk has exactly three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_chunkserver_is_re_replicated_and_its_return_trimmed() {
    init_tracing();
    let opts = Options {
        chunkservers: 4,
        ..Options::default().chunk_size(4 << 20)
    };
    let mut cluster = ProcCluster::start(opts).await;
    let client = cluster.client().await;
    let dir = client
        .mkdir(InodeId::ROOT, "data", 0o755, 0, 0)
        .await
        .unwrap();

    // The writer: write and fsync each file, then record it.
    let mut manifest: Vec<(String, String, u64)> = Vec::new();
    for i in 0..12u64 {
        let len = (i as usize * 1_300_007) % (11 << 20) + 1 + i as usize * 100_000;
        let data = pattern(100 + i, len);
        let name = format!("f{i:02}");
        let attr = client
            .create(dir.inode, &name, 0o644, 0, 0, true)
            .await
            .unwrap();
        for (k, piece) in data.chunks(3 << 20).enumerate() {
            client
                .write(
                    attr.inode,
                    (k * (3 << 20)) as u64,
                    Bytes::copy_from_slice(piece),
                )
                .await
                .unwrap();
        }
        client.fsync(attr.inode).await.unwrap();
        manifest.push((format!("/data/{name}"), sha256(&data), i));
    }
    let before = fsck(&client, "/").await.unwrap();
    assert!(all_healthy(&before), "{before:?}");

    cluster.kill9_chunkserver(1);
    let dead_addr = cluster.chunkserver_addr(1).to_string();
    wait_for(
        "the master to declare chunkserver 1 dead",
        Duration::from_secs(30),
        || async {
            let s = client.cluster_status().await.ok()?;
            s.chunkservers
                .iter()
                .any(|c| c.addr == dead_addr && !c.alive)
                .then_some(())
        },
    )
    .await;
    let declared_dead = Instant::now();
    // Its disk is intact: each chunk on it needs one clone (some may be done already).
    let held = chunk_files(&cluster.chunkserver_dir(1)).len() as u64;
    assert!(held > 0);
    let during = fsck(&client, "/").await.unwrap();
    assert_eq!(during.missing, 0, "{during:?}");

    // Every manifest entry reads back identical.
    for (path, want, _) in &manifest {
        let attr = client.stat(path).await.unwrap();
        let back = client
            .read(attr.inode, 0, attr.size, attr.size)
            .await
            .unwrap();
        assert_eq!(&sha256(&back), want, "{path}");
    }

    let healed = wait_for(
        "every chunk to have 3 live replicas again",
        Duration::from_secs(60),
        || async {
            let r = fsck(&client, "/").await.ok()?;
            all_healthy(&r).then_some(r)
        },
    )
    .await;
    eprintln!(
        "re-replicated the {held} chunks of the dead server {:.1} s after it was declared dead",
        declared_dead.elapsed().as_secs_f64()
    );
    assert_eq!(healed.chunks, before.chunks);
    let status = client.cluster_status().await.unwrap();
    assert_eq!(status.repair_queue, 0);
    assert!(
        status.clones_done > 0 && status.clones_done <= held,
        "{status:?}"
    );
    for (path, _, seed) in &manifest {
        let attr = client.stat(path).await.unwrap();
        let data = pattern(100 + seed, attr.size as usize);
        check_every_replica(&client, path, &data, 3).await;
    }

    // The CLI agrees.
    let (ok, out, err) = run_cli_async(&cluster.cluster_file, &["fsck", "/"]).await;
    assert!(ok, "quarry fsck failed: {out}{err}");
    assert_eq!(
        out.lines().last(),
        Some("The filesystem under path '/' is HEALTHY"),
        "{out}"
    );
    let (ok, out, err) = run_cli_async(&cluster.cluster_file, &["fsck", "/data", "--json"]).await;
    assert!(ok, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["status"], "HEALTHY");
    assert_eq!(json["files"], 12);
    let (ok, out, _) = run_cli_async(&cluster.cluster_file, &["status"]).await;
    assert!(
        ok && out.contains("re-replication queue 0, clones in flight 0"),
        "{out}"
    );

    // The dead server comes back with its (current) replicas: the extras are deleted until every
    // chunk is on exactly three servers, on disk too.
    cluster.restart_chunkserver(1);
    cluster.wait_alive(4).await;
    let dirs: Vec<_> = (0..4).map(|i| cluster.chunkserver_dir(i)).collect();
    wait_for(
        "the extra replicas to be deleted",
        Duration::from_secs(60),
        || async {
            let r = fsck(&client, "/").await.ok()?;
            let on_disk: usize = dirs.iter().map(|d| chunk_files(d).len()).sum();
            (all_healthy(&r) && on_disk as u64 == 3 * r.chunks).then_some(())
        },
    )
    .await;
    for (path, want, _) in &manifest {
        let attr = client.stat(path).await.unwrap();
        let back = client
            .read(attr.inode, 0, attr.size, attr.size)
            .await
            .unwrap();
        assert_eq!(&sha256(&back), want, "{path}");
    }
}

/// (b) A chunkserver stopped while its chunk is overwritten comes back at the older version: its
/// copy is never listed to readers, never serves the new version, is deleted from its disk, and
/// the server later receives a fresh copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_replica_is_never_served_and_is_deleted() {
    init_tracing();
    let cs = 1u64 << 20;
    let mut cluster = Cluster::start(Options::default().chunk_size(cs)).await;
    let client = cluster.client().await;
    let attr = client
        .create(InodeId::ROOT, "f", 0o644, 0, 0, true)
        .await
        .unwrap();
    let old = pattern(1, cs as usize);
    client
        .write(attr.inode, 0, Bytes::from(old.clone()))
        .await
        .unwrap();
    let first = client.chunks(attr.inode).await.unwrap()[0].clone();
    let (handle, old_version) = (first.handle, first.version);
    let dir0 = cluster.chunkserver_dir(0);
    let node0 = cluster.chunkserver(0).node_id();
    let addr0 = cluster.chunkserver(0).addr().to_string();
    assert!(chunk_files(&dir0).contains(&(handle, old_version)));

    cluster.stop_chunkserver(0).await;
    let new = pattern(2, cs as usize);
    client
        .write(attr.inode, 0, Bytes::from(new.clone()))
        .await
        .unwrap();
    let now = client.chunks(attr.inode).await.unwrap()[0].clone();
    assert!(now.version > old_version);
    assert!(now.replicas.iter().all(|r| r.id != node0));
    assert!(chunk_files(&dir0).contains(&(handle, old_version)));

    cluster.restart_chunkserver(0).await;
    // Until the old copy is gone from its disk, the master never lists it and the file reads
    // the new bytes; the server never answers a read at the new version with old bytes.
    wait_for(
        "the stale copy to leave the disk",
        Duration::from_secs(30),
        || async {
            let stale_on_disk = chunk_files(&dir0).contains(&(handle, old_version));
            let listed = client.chunks(attr.inode).await.ok()?[0]
                .replicas
                .iter()
                .any(|r| r.id == node0);
            let still_on_disk = chunk_files(&dir0).contains(&(handle, old_version));
            assert!(
                !(listed && stale_on_disk && still_on_disk),
                "the stale replica was listed"
            );
            let back = client.read(attr.inode, 0, cs, cs).await.ok()?;
            assert!(back == new, "stale bytes served");
            if let Ok(direct) = read_replica(&client, &addr0, handle, now.version, cs).await {
                assert!(direct == new, "the stale server served old bytes");
            }
            (!still_on_disk).then_some(())
        },
    )
    .await;

    // With three servers the only place for the third replica is the one that was stale.
    wait_for(
        "three live replicas again",
        Duration::from_secs(60),
        || async {
            let r = fsck(&client, "/").await.ok()?;
            all_healthy(&r).then_some(())
        },
    )
    .await;
    check_every_replica(&client, "/f", &new, 3).await;
    let files = chunk_files(&dir0);
    let version = client.chunks(attr.inode).await.unwrap()[0].version;
    assert!(files.contains(&(handle, version)), "{files:?}");
    assert!(!files.contains(&(handle, old_version)));
    cluster.shutdown().await;
}

/// A new chunk's first grant created a replica and then failed before the version was logged
/// (a master crash or a lost reply: the table still says version 1). The chunk is placed anew
/// while that server is away; when it comes back, its empty copy must not become a location
/// of the written chunk (readers sent there would read zeros). The crash point is made by hand:
/// every server stops so the grant fails after the chunk is allocated, and the copy the failed
/// attempt may have left is written into server 0's store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphan_of_a_new_chunk_never_becomes_a_location() {
    use quarry_chunkserver::store::{ChunkStore, FileStore};
    use quarry_proto::ChunkVersion;
    init_tracing();
    let cs = 1u64 << 20;
    let mut cluster = Cluster::start(Options::default().chunk_size(cs)).await;
    let client = cluster.client().await;
    client.set_goal(InodeId::ROOT, 1, false).await.unwrap();
    let attr = client
        .create(InodeId::ROOT, "f", 0o644, 0, 0, true)
        .await
        .unwrap();
    let node0 = cluster.chunkserver(0).node_id();
    let dir0 = cluster.chunkserver_dir(0);
    for i in 0..3 {
        cluster.stop_chunkserver(i).await;
    }
    // The master still counts the servers alive for a while: the chunk is allocated, and its
    // grant fails. The client keeps retrying; it is given up on.
    let attempt = client.write(attr.inode, 0, Bytes::from(pattern(9, cs as usize)));
    let outcome = tokio::time::timeout(Duration::from_secs(8), attempt).await;
    assert!(
        !matches!(outcome, Ok(Ok(_))),
        "a write with every server down"
    );
    let chunk = client.chunks(attr.inode).await.unwrap()[0].clone();
    assert_eq!(chunk.version, ChunkVersion(1), "{chunk:?}");
    let orphan = chunk.handle;
    {
        let store = FileStore::open(&dir0, cs).unwrap();
        store.create(orphan, ChunkVersion(2)).unwrap();
    }
    cluster.restart_chunkserver(1).await;
    cluster.restart_chunkserver(2).await;
    wait_for(
        "server 0 to be seen dead",
        Duration::from_secs(30),
        || async {
            let s = client.cluster_status().await.ok()?;
            let alive: Vec<NodeId> = s
                .chunkservers
                .iter()
                .filter(|c| c.alive)
                .map(|c| c.id)
                .collect();
            (alive.len() == 2 && !alive.contains(&node0)).then_some(())
        },
    )
    .await;
    let data = pattern(10, cs as usize);
    client
        .write(attr.inode, 0, Bytes::from(data.clone()))
        .await
        .unwrap();
    let written = client.chunks(attr.inode).await.unwrap()[0].clone();
    assert!(written.replicas.iter().all(|r| r.id != node0));

    cluster.restart_chunkserver(0).await;
    wait_for(
        "the orphan to leave server 0's disk",
        Duration::from_secs(30),
        || async {
            let on_disk = chunk_files(&dir0).contains(&(orphan, ChunkVersion(2)));
            let now = client.chunks(attr.inode).await.ok()?[0].clone();
            assert!(
                now.replicas.iter().all(|r| r.id != node0),
                "the orphan became a location: {now:?}"
            );
            for r in &now.replicas {
                let got = read_replica(&client, &r.addr, now.handle, now.version, cs)
                    .await
                    .ok()?;
                assert!(got == data, "replica on {} differs", r.addr);
            }
            (!on_disk).then_some(())
        },
    )
    .await;
    assert!(client.read(attr.inode, 0, cs, cs).await.unwrap() == data);
    cluster.shutdown().await;
}

/// (c) A flipped byte in one replica: reads stay correct, a read reports it, and the replica is
/// deleted and replaced (3 good live replicas again) within 60 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bit_rot_found_by_a_read_is_repaired() {
    init_tracing();
    let cs = 1u64 << 20;
    let cluster = Cluster::start(Options::default().chunk_size(cs).scrub(0, 0)).await;
    let client = cluster.client().await;
    let data = pattern(3, 3 * cs as usize + 100);
    let attr = client
        .create(InodeId::ROOT, "f", 0o644, 0, 0, true)
        .await
        .unwrap();
    client
        .write(attr.inode, 0, Bytes::from(data.clone()))
        .await
        .unwrap();
    let handle = client.chunks(attr.inode).await.unwrap()[1].handle;
    flip_byte(&cluster.chunkserver_dir(0), handle, 5000);

    // Reads rotate over the replicas, so these hit the corrupt one too.
    for _ in 0..6 {
        let back = client
            .read(
                attr.inode,
                0,
                attr.size.max(data.len() as u64),
                data.len() as u64,
            )
            .await
            .unwrap();
        assert!(back == data, "wrong bytes served");
    }
    wait_for("the corruption report", Duration::from_secs(10), || async {
        let s = client.cluster_status().await.ok()?;
        (s.corrupt_reports >= 1).then_some(())
    })
    .await;
    let found = Instant::now();
    wait_for(
        "3 good live replicas again",
        Duration::from_secs(60),
        || async {
            let r = fsck(&client, "/").await.ok()?;
            all_healthy(&r).then_some(())
        },
    )
    .await;
    eprintln!(
        "repaired {:.1} s after the report",
        found.elapsed().as_secs_f64()
    );
    check_every_replica(&client, "/f", &data, 3).await;
    for i in 0..3 {
        let store = cluster.chunkserver(i).store();
        for (h, _) in store.list() {
            store.verify(h).unwrap();
        }
    }
    cluster.shutdown().await;
}

/// (c) The scrubber alone (no reads at all) finds a flipped byte and the replica is repaired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scrubber_finds_bit_rot_and_the_replica_is_repaired() {
    init_tracing();
    let cs = 1u64 << 20;
    let cluster = Cluster::start(Options::default().chunk_size(cs).scrub(256 << 20, 300)).await;
    let client = cluster.client().await;
    let data = pattern(4, 2 * cs as usize);
    let attr = client
        .create(InodeId::ROOT, "f", 0o644, 0, 0, true)
        .await
        .unwrap();
    client
        .write(attr.inode, 0, Bytes::from(data.clone()))
        .await
        .unwrap();
    let handle = client.chunks(attr.inode).await.unwrap()[0].handle;
    flip_byte(&cluster.chunkserver_dir(2), handle, 70_000);

    wait_for(
        "the scrubber to report the bad replica",
        Duration::from_secs(30),
        || async {
            let s = client.cluster_status().await.ok()?;
            let others_scrubbed = [0, 1]
                .iter()
                .all(|&i| cluster.chunkserver(i).scrub_stats().bytes > 0);
            (s.corrupt_reports >= 1
                && cluster.chunkserver(2).scrub_stats().mismatches >= 1
                && others_scrubbed)
                .then_some(())
        },
    )
    .await;
    for i in [0, 1] {
        assert_eq!(cluster.chunkserver(i).scrub_stats().mismatches, 0);
    }
    wait_for(
        "3 good live replicas again",
        Duration::from_secs(60),
        || async {
            let r = fsck(&client, "/").await.ok()?;
            all_healthy(&r).then_some(())
        },
    )
    .await;
    check_every_replica(&client, "/f", &data, 3).await;
    cluster.chunkserver(2).store().verify(handle).unwrap();
    cluster.shutdown().await;
}

/// (c) With every replica corrupt a read is an error, never wrong bytes; fsck says MISSING (and
/// the CLI exits non-zero), and the corrupt copies are kept, not deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_corrupt_is_an_error_and_fsck_says_missing() {
    init_tracing();
    let cluster = Cluster::start(Options::default().scrub(0, 0)).await;
    let client = cluster.client().await;
    let attr = client
        .create(InodeId::ROOT, "f", 0o644, 0, 0, true)
        .await
        .unwrap();
    client
        .write(attr.inode, 0, Bytes::from(pattern(8, 200_000)))
        .await
        .unwrap();
    let handle = client.chunks(attr.inode).await.unwrap()[0].handle;
    for i in 0..3 {
        flip_byte(&cluster.chunkserver_dir(i), handle, 5);
    }
    let err = client
        .read(attr.inode, 0, 200_000, 200_000)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            FsError::ChecksumMismatch { .. } | FsError::Unavailable(_)
        ),
        "{err:?}"
    );
    let r = wait_for(
        "fsck to see every replica corrupt",
        Duration::from_secs(30),
        || async {
            let r = fsck(&client, "/").await.ok()?;
            (r.missing == 1 && r.corrupt_replicas == 3).then_some(r)
        },
    )
    .await;
    assert_eq!(r.status(), "MISSING");
    assert_eq!(r.problems.len(), 1);
    assert_eq!(r.problems[0].handle, handle);
    let (ok, out, _) = run_cli_async(&cluster.cluster_file, &["fsck"]).await;
    assert!(!ok, "fsck must fail: {out}");
    assert_eq!(
        out.lines().last(),
        Some("The filesystem under path '/' is MISSING"),
        "{out}"
    );
    // The last copies stay on disk (for an operator), however many repair rounds ran.
    let s = client.cluster_status().await.unwrap();
    assert_eq!(s.clones_in_flight, 0);
    for i in 0..3 {
        assert!(chunk_files(&cluster.chunkserver_dir(i))
            .iter()
            .any(|(h, _)| *h == handle));
    }
    cluster.shutdown().await;
}

/// `fileinfo` lists every replica with its state, and the lease holder with its remaining time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fileinfo_shows_replica_states_and_the_primary() {
    init_tracing();
    let cs = 1u64 << 20;
    let mut cluster = Cluster::start(Options::default().chunk_size(cs)).await;
    let client = cluster.client().await;
    let attr = client
        .create(InodeId::ROOT, "f", 0o644, 0, 0, true)
        .await
        .unwrap();
    client
        .write(attr.inode, 0, Bytes::from(pattern(5, cs as usize + 1000)))
        .await
        .unwrap();

    let (ok, out, err) = run_cli_async(&cluster.cluster_file, &["fileinfo", "/f", "--json"]).await;
    assert!(ok, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let chunks = json["chunks"].as_array().unwrap();
    assert_eq!(chunks.len(), 2);
    assert_eq!(chunks[0]["len"], cs);
    assert_eq!(chunks[1]["len"], 1000);
    for c in chunks {
        let replicas = c["replicas"].as_array().unwrap();
        assert_eq!(replicas.len(), 3);
        assert!(replicas.iter().all(|r| r["state"] == "Live"));
        let primaries: Vec<_> = replicas.iter().filter(|r| r["primary"] == true).collect();
        assert_eq!(primaries.len(), 1, "{c}");
        assert!(primaries[0]["lease_remaining_ms"].as_u64().unwrap() > 0);
    }
    let (ok, out, _) = run_cli_async(&cluster.cluster_file, &["fileinfo", "/f"]).await;
    assert!(
        ok && out.contains("primary (lease") && out.contains(" live"),
        "{out}"
    );

    let node2 = cluster.chunkserver(2).node_id();
    cluster.stop_chunkserver(2).await;
    wait_for(
        "chunkserver 2's replicas to show dead",
        Duration::from_secs(30),
        || async {
            let r = client
                .rpc_master(&FileInfo {
                    inode: attr.inode,
                    first_index: 0,
                    count: 10,
                })
                .await
                .ok()?;
            r.chunks
                .iter()
                .all(|c| {
                    c.replicas
                        .iter()
                        .any(|x| x.server.id == node2 && x.state == ReplicaState::Dead)
                })
                .then_some(())
        },
    )
    .await;
    let r = fsck(&client, "/").await.unwrap();
    assert_eq!(r.under_replicated, 2, "{r:?}");
    assert_eq!(r.status(), "UNDER-REPLICATED");
    cluster.shutdown().await;
}
