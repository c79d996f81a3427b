//! `kill -9` of real node processes: a chunkserver during a large write, the master under a
//! namespace workload. Nothing acknowledged may be lost.

use bytes::Bytes;
use quarry_proto::{FsError, InodeId};
use quarry_tests::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_chunkserver_during_a_large_write() {
    init_tracing();
    let mut cluster = ProcCluster::start(Options::default().chunk_size(16 << 20)).await;
    let client = cluster.client().await;
    let attr = client
        .create(InodeId::ROOT, "big", 0o644, 0, 0, true)
        .await
        .unwrap();
    let piece = 2 << 20;
    let total = 96 << 20;
    let mut killed = false;
    let mut offset = 0;
    while offset < total {
        if offset >= 24 << 20 && !killed {
            cluster.kill9_chunkserver(1);
            killed = true;
        }
        let data = pattern(offset as u64, piece);
        // Retried inside the client across the dead server; the write completes or fails with
        // a clear error that a retry then fixes.
        let mut tries = 0;
        loop {
            match client
                .write_data(attr.inode, offset as u64, Bytes::from(data.clone()))
                .await
            {
                Ok(()) => break,
                Err(e) => {
                    tries += 1;
                    assert!(tries < 3, "write at {offset} kept failing: {e}");
                    eprintln!("write at {offset} failed ({e}); retrying");
                }
            }
        }
        offset += piece;
    }
    client.commit_size(attr.inode, total as u64).await.unwrap();
    let back = client
        .read(attr.inode, 0, total as u64, total as u64)
        .await
        .unwrap();
    for (i, chunk) in back.chunks(piece).enumerate() {
        assert!(
            chunk == pattern((i * piece) as u64, piece).as_slice(),
            "piece {i} differs"
        );
    }
    // Chunks written after the kill live on the two survivors.
    let status = client.cluster_status().await.unwrap();
    assert_eq!(status.chunkservers.iter().filter(|c| c.alive).count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_master_loses_nothing_acknowledged() {
    init_tracing();
    let mut cluster = ProcCluster::start(Options::default().chunk_size(1 << 20)).await;
    let client = cluster.client().await;
    let dir = client
        .mkdir(InodeId::ROOT, "work", 0o755, 0, 0)
        .await
        .unwrap();

    // A workload of creates, writes, renames and unlinks; every acknowledged step is recorded.
    let worker = {
        let client = cluster.client().await;
        tokio::spawn(async move {
            let mut acked: Vec<(String, u64)> = Vec::new();
            for i in 0..60u64 {
                let name = format!("f{i}");
                let attr = client
                    .create(dir.inode, &name, 0o644, 0, 0, true)
                    .await
                    .unwrap();
                let data = pattern(i, 10_000 + i as usize * 1000);
                client
                    .write(attr.inode, 0, Bytes::from(data))
                    .await
                    .unwrap();
                if i % 5 == 0 {
                    let new = format!("renamed{i}");
                    client
                        .rename(dir.inode, &name, dir.inode, &new)
                        .await
                        .unwrap();
                    acked.push((new, i));
                } else if i % 7 == 0 {
                    client.unlink(dir.inode, &name).await.unwrap();
                } else {
                    acked.push((name, i));
                }
            }
            acked
        })
    };
    // Kill the master while the workload runs, then bring it back.
    wait_for("some progress", Duration::from_secs(60), || async {
        let n = client.readdir(dir.inode).await.ok()?.len();
        (n >= 10).then_some(())
    })
    .await;
    cluster.kill9_master();
    tokio::time::sleep(Duration::from_millis(300)).await; // the workload now sees a dead master
    cluster.restart_master();
    let acked = worker.await.unwrap();

    // Kill it once more at rest, restart, and check everything.
    cluster.kill9_master();
    cluster.restart_master();
    cluster.wait_alive(3).await;
    let names: Vec<String> = client
        .readdir(dir.inode)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    let want: Vec<String> = {
        let mut v: Vec<String> = acked.iter().map(|(n, _)| n.clone()).collect();
        v.sort();
        v
    };
    assert_eq!(names, want, "the namespace after restarts");
    for (name, i) in &acked {
        let attr = client.lookup(dir.inode, name).await.unwrap();
        let data = pattern(*i, 10_000 + *i as usize * 1000);
        assert_eq!(attr.size, data.len() as u64, "{name}");
        let back = client
            .read(attr.inode, 0, attr.size, attr.size)
            .await
            .unwrap();
        assert!(back == data, "{name} differs");
    }
    assert!(matches!(
        client.lookup(dir.inode, "f7").await,
        Err(FsError::NotFound)
    ));
}
