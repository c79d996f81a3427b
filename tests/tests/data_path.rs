//! The data path end to end on a loopback cluster over real QUIC: large files through the CLI,
//! concurrent writers and appenders, corruption, and security at the front door.

use bytes::Bytes;
use quarry_proto::{FileKind, FsError, InodeId};
use quarry_tests::*;
use std::collections::BTreeSet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_200_mib_with_the_cli_spans_chunks_on_three_distinct_replicas() {
    init_tracing();
    let cluster = Cluster::start(Options::default()).await;
    let local = cluster.dir.path().join("big.bin");
    let data = pattern(200, 200 << 20);
    std::fs::write(&local, &data).unwrap();
    let want = sha256(&data);
    drop(data);

    let file = cluster.cluster_file.clone();
    let src = local.display().to_string();
    let (ok, _, err) =
        tokio::task::spawn_blocking(move || run_cli(&file, &["put", &src, "/big.bin"]))
            .await
            .unwrap();
    assert!(ok, "quarry put failed: {err}");

    let client = cluster.client().await;
    let attr = client.stat("/big.bin").await.unwrap();
    assert_eq!(attr.size, 200 << 20);
    let chunks = client.chunks(attr.inode).await.unwrap();
    assert!(
        chunks.len() >= 4,
        "200 MiB in 64 MiB chunks: {} chunks",
        chunks.len()
    );
    for c in &chunks {
        let distinct: BTreeSet<_> = c.replicas.iter().map(|r| r.id).collect();
        assert_eq!(
            distinct.len(),
            3,
            "chunk {} replicas {:?}",
            c.index,
            c.replicas
        );
    }

    let out = cluster.dir.path().join("back.bin");
    let file = cluster.cluster_file.clone();
    let dst = out.display().to_string();
    let (ok, _, err) =
        tokio::task::spawn_blocking(move || run_cli(&file, &["get", "/big.bin", &dst]))
            .await
            .unwrap();
    assert!(ok, "quarry get failed: {err}");
    assert_eq!(sha256(&std::fs::read(&out).unwrap()), want);
    cluster.shutdown().await;
}

/// `GetAttrs` (a mount's readdirplus page): one answer per inode, in order, `None` for one that
/// is gone; more than one request's worth is split by the client library.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attributes_of_many_inodes_in_one_request() {
    let cluster = Cluster::start(Options::default()).await;
    let client = cluster.client().await;
    let root = InodeId::ROOT;
    let dir = client.mkdir(root, "d", 0o750, 7, 8).await.unwrap();
    let a = client
        .create(dir.inode, "a", 0o640, 7, 8, true)
        .await
        .unwrap();
    let b = client
        .create(dir.inode, "b", 0o600, 9, 9, true)
        .await
        .unwrap();
    client.unlink(dir.inode, "b").await.unwrap();
    let got = client
        .getattrs(&[a.inode, b.inode, dir.inode])
        .await
        .unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].as_ref().map(|x| (x.mode, x.uid)), Some((0o640, 7)));
    assert!(got[1].is_none(), "an unlinked file has no attributes");
    assert_eq!(got[2].as_ref().map(|x| x.kind), Some(FileKind::Directory));
    let many = vec![a.inode; quarry_proto::limits::MAX_ATTRS_PER_CALL * 2 + 3];
    let got = client.getattrs(&many).await.unwrap();
    assert_eq!(got.len(), many.len());
    assert!(got
        .iter()
        .all(|x| x.as_ref().is_some_and(|x| x.inode == a.inode)));
    cluster.shutdown().await;
}

/// `ReadDirPlus` (a mount's opendir): the listing, the directory's attributes and those of its
/// first entries in one request; a bigger directory goes on in pages of names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_listing_with_attributes() {
    use quarry_proto::limits::MAX_ATTRS_PER_CALL;
    let cluster = Cluster::start(Options::default()).await;
    let client = cluster.client().await;
    let root = InodeId::ROOT;
    let dir = client.mkdir(root, "d", 0o750, 7, 8).await.unwrap();
    let n = MAX_ATTRS_PER_CALL + 100;
    for i in 0..n {
        let mode = if i % 2 == 0 { 0o600 } else { 0o640 };
        client
            .create(dir.inode, &format!("f{i:05}"), mode, 0, 0, true)
            .await
            .unwrap();
    }
    let snap = client.readdir_plus(dir.inode).await.unwrap();
    assert_eq!(snap.dir, client.getattr(dir.inode).await.unwrap());
    assert_eq!(snap.entries, client.readdir(dir.inode).await.unwrap());
    assert_eq!(snap.entries.len(), n);
    assert_eq!(snap.attrs.len(), MAX_ATTRS_PER_CALL);
    for (e, a) in snap.entries.iter().zip(&snap.attrs) {
        assert_eq!(*a, client.getattr(e.inode).await.unwrap(), "{}", e.name);
    }
    let f = client.lookup(dir.inode, "f00000").await.unwrap();
    assert_eq!(
        client.readdir_plus(f.inode).await.unwrap_err(),
        FsError::NotADirectory
    );
    let empty = client.mkdir(root, "e", 0o700, 0, 0).await.unwrap();
    let snap = client.readdir_plus(empty.inode).await.unwrap();
    assert!(snap.entries.is_empty() && snap.attrs.is_empty());
    assert_eq!(snap.dir.inode, empty.inode);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_and_appenders_all_finish_whole() {
    init_tracing();
    let chunk = 1 << 20;
    let cluster = Cluster::start(Options::default().chunk_size(chunk)).await;
    let setup = cluster.client().await;
    let root = InodeId::ROOT;
    let log = setup.create(root, "log", 0o644, 0, 0, true).await.unwrap();

    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..4u32 {
        let client = cluster.client().await;
        tasks.spawn(async move {
            // A writer of its own 3.5 MiB file, in uneven pieces across chunk boundaries.
            let attr = client
                .create(root, &format!("file-{w}"), 0o644, 0, 0, true)
                .await
                .unwrap();
            let data = pattern(1000 + w as u64, 3 * (1 << 20) + (1 << 19));
            for (i, piece) in data.chunks(700_001).enumerate() {
                client
                    .write(
                        attr.inode,
                        (i * 700_001) as u64,
                        Bytes::copy_from_slice(piece),
                    )
                    .await
                    .unwrap();
            }
            let back = client
                .read(attr.inode, 0, data.len() as u64 + 10, data.len() as u64)
                .await
                .unwrap();
            assert!(back == data, "file-{w} differs");
            client
        });
    }
    for w in 0..4u32 {
        let client = cluster.client().await;
        let inode = log.inode;
        tasks.spawn(async move {
            for seq in 0..40u32 {
                let len = (pattern((w * 100 + seq) as u64, 4)[0] as usize) * 700 + 1;
                client
                    .append(inode, Bytes::from(record(w, seq, len)))
                    .await
                    .unwrap();
            }
            client
        });
    }
    let mut clients = Vec::new();
    while let Some(r) = tasks.join_next().await {
        clients.push(r.unwrap());
    }
    let attr = setup.getattr(log.inode).await.unwrap();
    let data = setup
        .read(log.inode, 0, attr.size, attr.size)
        .await
        .unwrap();
    let seen = parse_records(&data, chunk as usize);
    for w in 0..4u32 {
        for seq in 0..40u32 {
            assert_eq!(seen.get(&(w, seq)), Some(&1), "record ({w},{seq})");
        }
    }
    assert_eq!(seen.len(), 160);
    drop(clients);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_is_never_served_and_is_reported() {
    init_tracing();
    let cluster = Cluster::start(Options::default()).await;
    let client = cluster.client().await;
    let attr = client
        .create(InodeId::ROOT, "f", 0o644, 0, 0, true)
        .await
        .unwrap();
    let data = pattern(7, 1 << 20);
    client
        .write(attr.inode, 0, Bytes::from(data.clone()))
        .await
        .unwrap();
    let handle = client.chunks(attr.inode).await.unwrap()[0].handle;

    // Flip one byte in chunkserver 0's copy, behind the store's back.
    let (path, data_offset) = cluster.chunkserver(0).store().data_file(handle).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[data_offset as usize + 1000] ^= 0x5a;
    std::fs::write(&path, bytes).unwrap();

    // Reads rotate over the replicas, so these hit the corrupt one too.
    for _ in 0..6 {
        let back = client.read(attr.inode, 0, 1 << 20, 1 << 20).await.unwrap();
        assert!(back == data, "wrong bytes served");
    }
    wait_for(
        "the corruption report",
        std::time::Duration::from_secs(10),
        || async {
            let s = client.cluster_status().await.ok()?;
            (s.corrupt_reports >= 1).then_some(())
        },
    )
    .await;
    // The corrupt replica is no longer offered to readers.
    let replicas = &client.chunks(attr.inode).await.unwrap()[0].replicas;
    assert_eq!(replicas.len(), 2);
    assert!(replicas
        .iter()
        .all(|r| r.id != cluster.chunkserver(0).node_id()));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_corrupt_is_an_error_not_wrong_bytes() {
    init_tracing();
    let cluster = Cluster::start(Options::default()).await;
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
        let (path, off) = cluster.chunkserver(i).store().data_file(handle).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[off as usize + 5] ^= 1;
        std::fs::write(&path, bytes).unwrap();
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
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_are_refused_and_bad_frames_get_errors() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    init_tracing();
    let cluster = Cluster::start(Options::default().chunkservers(1)).await;

    // A client whose certificate comes from another CA cannot talk to the master.
    let other = tempfile::tempdir().unwrap();
    let stranger_certs = Certs::create(other.path());
    let node = quarry_transport::quic::QuicNode::client(&stranger_certs.client_cert()).unwrap();
    let rpc = quarry_transport::RpcClient::new(node.transport())
        .with_timeout(std::time::Duration::from_secs(5));
    let err = rpc
        .call(
            &cluster.master_addr.to_string(),
            &quarry_proto::master::ClusterInfo {},
        )
        .await
        .unwrap_err();
    assert!(matches!(err, FsError::Unavailable(_)), "{err:?}");

    // A genuine client sends garbage, an oversized frame and a truncated payload.
    let client = cluster.client().await;
    let transport = client.node.transport();
    let addr = cluster.master_addr.to_string();
    let mut oversized =
        quarry_proto::frame::FrameHeader::request(quarry_proto::Method::Lookup, 1, 0).encode();
    oversized[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    let truncated = {
        let mut h = quarry_proto::frame::FrameHeader::request(quarry_proto::Method::Lookup, 50, 0)
            .encode()
            .to_vec();
        h.extend_from_slice(&[1, 2, 3]);
        h
    };
    for bad in [
        b"not a frame at all, just bytes".to_vec(),
        oversized.to_vec(),
        truncated,
    ] {
        let (mut send, mut recv) = transport.open(&addr).await.unwrap();
        send.write_all(&bad).await.unwrap();
        send.shutdown().await.unwrap();
        let mut reply = Vec::new();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            recv.read_to_end(&mut reply),
        )
        .await
        .expect("the server answers or closes, never hangs");
        // Either the stream was closed, or the answer is an error response frame.
        if !reply.is_empty() {
            let header: [u8; quarry_proto::frame::HEADER_LEN] =
                reply[..quarry_proto::frame::HEADER_LEN].try_into().unwrap();
            let h = quarry_proto::frame::FrameHeader::decode(&header).unwrap();
            let payload = &reply[quarry_proto::frame::HEADER_LEN..][..h.payload_len as usize];
            let answer: Result<quarry_proto::Attr, FsError> =
                quarry_proto::decode(payload).unwrap();
            assert!(matches!(answer, Err(FsError::Protocol(_))), "{answer:?}");
        }
    }
    // A client may not send chunkserver-only RPCs.
    let err = client
        .rpc()
        .call(
            &addr,
            &quarry_proto::master::Heartbeat {
                node: quarry_proto::NodeId(1),
                addr: "127.0.0.1:1".into(),
                capacity_bytes: 0,
                used_bytes: 0,
                chunks: None,
                active_requests: 0,
                bytes_read: 0,
                bytes_written: 0,
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, FsError::PermissionDenied(_)), "{err:?}");
    // The master goes on serving.
    let root = client.getattr(InodeId::ROOT).await.unwrap();
    assert_eq!(root.kind, FileKind::Directory);
    cluster.shutdown().await;
}
