//! In-memory network tests: the same round trips as over QUIC, and every fault filter.

mod common;

use bytes::Bytes;
use common::*;
use quarry_proto::chunk::{BumpVersion, PushData, ReadChunk};
use quarry_proto::{ChunkHandle, ChunkVersion, DataId, FsError, NodeId, Role, ServerRef};
use quarry_transport::mem::MemNetwork;
use quarry_transport::{Identity, RpcClient};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn read_req(offset: u64, len: u64) -> ReadChunk {
    ReadChunk {
        handle: ChunkHandle(1),
        version: ChunkVersion(1),
        offset,
        len,
    }
}

fn serve(net: &MemNetwork, addr: &str, node: u64) -> Arc<Seen> {
    let seen = Arc::new(Seen::default());
    let t = net.serve(
        addr,
        Identity::new(Role::Chunkserver, addr),
        test_router(node, seen.clone()),
    );
    let _ = seen.client.set(RpcClient::new(t));
    seen
}

fn client(net: &MemNetwork, addr: &str, role: Role) -> RpcClient {
    RpcClient::new(net.client(addr, Identity::new(role, addr))).with_timeout(Duration::from_secs(5))
}

#[tokio::test]
async fn mem_round_trips() {
    let net = MemNetwork::new(1);
    let a = serve(&net, "a:1", 1);
    let b = serve(&net, "b:1", 2);
    let c = client(&net, "c", Role::Client);

    assert_eq!(c.call("a:1", &ping()).await.unwrap().node, NodeId(1));
    assert_eq!(
        a.peers.lock().unwrap().as_slice(),
        &[Identity::new(Role::Client, "c")]
    );
    let (reply, body) = c.call_read("a:1", &read_req(5, 70_000)).await.unwrap();
    assert_eq!(reply.chunk_len, 70_005);
    assert!(body == pattern(5, 70_000));

    // Role check.
    let bump = BumpVersion {
        handle: ChunkHandle(1),
        version: ChunkVersion(1),
        create: false,
        lease_ms: None,
        replicas: vec![],
    };
    assert!(matches!(
        c.call("a:1", &bump).await,
        Err(FsError::PermissionDenied(_))
    ));
    client(&net, "m", Role::Master)
        .call("a:1", &bump)
        .await
        .unwrap();

    // A streamed push along a two-hop chain.
    let data = pattern(1, (3 << 20) + 7);
    let req = PushData {
        data_id: DataId(9),
        forward: vec![ServerRef {
            id: NodeId(2),
            addr: "b:1".into(),
        }],
        crc32c: checksum(&data),
    };
    let mut call = c.start("a:1", &req, data.len() as u64).await.unwrap();
    for piece in data.chunks(300_001) {
        call.send(piece).await.unwrap();
    }
    call.finish().await.unwrap();
    for s in [&a, &b] {
        assert!(s.pushes.lock().unwrap()[0].1 == data);
    }
    // And in one go.
    let direct = PushData {
        forward: vec![],
        ..req.clone()
    };
    c.call_with_body("b:1", &direct, Bytes::from(data.clone()))
        .await
        .unwrap();
    assert_eq!(b.pushes.lock().unwrap().len(), 2);

    // Timeout and panic.
    let quick = c.clone().with_timeout(Duration::from_millis(100));
    assert!(matches!(
        quick.call("a:1", &read_req(SLEEP_OFFSET, 1000)).await,
        Err(FsError::Timeout(_))
    ));
    assert!(matches!(
        c.call("a:1", &read_req(PANIC_OFFSET, 0)).await,
        Err(FsError::Io(_))
    ));
    c.call("a:1", &ping()).await.unwrap();
}

#[tokio::test]
async fn partition_heal_stop() {
    let net = MemNetwork::new(2);
    serve(&net, "a", 1);
    serve(&net, "b", 2);
    let c = client(&net, "c", Role::Client);
    net.partition(&["c"], &["a"]);
    let started = Instant::now();
    assert!(matches!(
        c.call("a", &ping()).await,
        Err(FsError::Unavailable(_))
    ));
    assert!(started.elapsed() < Duration::from_millis(100), "fails fast");
    assert_eq!(c.call("b", &ping()).await.unwrap().node, NodeId(2));
    net.heal();
    assert_eq!(c.call("a", &ping()).await.unwrap().node, NodeId(1));

    // A stopped server: opens fail, in-flight calls die.
    let slow = tokio::spawn({
        let c = c.clone();
        async move { c.call("a", &read_req(SLEEP_OFFSET, 3000)).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    net.stop("a");
    assert!(!net.is_serving("a"));
    assert!(matches!(
        c.call("a", &ping()).await,
        Err(FsError::Unavailable(_))
    ));
    assert!(matches!(slow.await.unwrap(), Err(FsError::Unavailable(_))));
    // Restart at the same address.
    serve(&net, "a", 3);
    assert_eq!(c.call("a", &ping()).await.unwrap().node, NodeId(3));
}

#[tokio::test]
async fn drops_and_delay() {
    let net = MemNetwork::new(3);
    let a = serve(&net, "a", 1);
    let c = client(&net, "c", Role::Client).with_timeout(Duration::from_secs(2));

    net.set_request_drop(1.0);
    for _ in 0..10 {
        assert!(matches!(
            c.call("a", &ping()).await,
            Err(FsError::Unavailable(_))
        ));
    }
    assert!(
        a.peers.lock().unwrap().is_empty(),
        "nothing reached the server"
    );
    net.set_request_drop(0.0);

    net.set_reply_drop(1.0);
    for _ in 0..5 {
        assert!(matches!(
            c.call("a", &ping()).await,
            Err(FsError::Unavailable(_)) | Err(FsError::Timeout(_))
        ));
    }
    assert_eq!(a.peers.lock().unwrap().len(), 5, "the server handled them");
    net.set_reply_drop(0.0);

    net.set_delay(Duration::from_millis(50), Duration::from_millis(80));
    let started = Instant::now();
    c.call("a", &ping()).await.unwrap();
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(50), "{took:?}");
    net.set_delay(Duration::ZERO, Duration::ZERO);

    // Half the requests dropped, deterministically for a seed.
    let outcomes = |seed| async move {
        let net = MemNetwork::new(seed);
        serve(&net, "a", 1);
        let c = client(&net, "c", Role::Client);
        net.set_request_drop(0.5);
        let mut v = Vec::new();
        for _ in 0..40 {
            v.push(c.call("a", &ping()).await.is_ok());
        }
        v
    };
    let first = outcomes(7).await;
    assert_eq!(first, outcomes(7).await);
    let ok = first.iter().filter(|x| **x).count();
    assert!((5..35).contains(&ok), "{ok} of 40");
}

#[tokio::test]
async fn long_reordering_delivers_a_request_after_later_ones() {
    let net = MemNetwork::new(4);
    let a = serve(&net, "a", 1);
    let c = client(&net, "c", Role::Client);
    // Every request is held 300 ms; the caller gives up after 100 ms.
    net.set_long_reordering(1.0, Duration::from_millis(300), Duration::from_millis(300));
    let quick = c.clone().with_timeout(Duration::from_millis(100));
    let started = Instant::now();
    assert!(matches!(
        quick.call("a", &ping()).await,
        Err(FsError::Timeout(_))
    ));
    assert!(a.peers.lock().unwrap().is_empty(), "not delivered yet");
    // A later request overtakes it.
    net.set_long_reordering(0.0, Duration::ZERO, Duration::ZERO);
    let from_b = client(&net, "b", Role::Master);
    from_b.call("a", &ping()).await.unwrap();
    assert_eq!(
        a.peers.lock().unwrap().as_slice(),
        &[Identity::new(Role::Master, "b")]
    );
    // The held one still arrives, after its caller moved on.
    let deadline = Instant::now() + Duration::from_secs(5);
    while a.peers.lock().unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "the held request never arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(a.peers.lock().unwrap()[1], Identity::new(Role::Client, "c"));
}
