//! QUIC transport tests: mTLS round trips, refused strangers, role checks, malformed frames,
//! streamed bodies along a two-hop chain, timeouts, panicking handlers.

mod common;

use bytes::Bytes;
use common::*;
use quarry_proto::chunk::{BumpVersion, PushData, ReadChunk};
use quarry_proto::frame::{FrameHeader, MAX_PAYLOAD_BYTES};
use quarry_proto::{ChunkHandle, ChunkVersion, DataId, FsError, Method, NodeId, Role, ServerRef};
use quarry_transport::certs::{ClusterCa, NodeCert};
use quarry_transport::quic::QuicNode;
use quarry_transport::{Identity, RpcClient, Transport};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LOCAL: &str = "127.0.0.1:0";

struct Server {
    node: QuicNode,
    seen: Arc<Seen>,
    addr: String,
}

async fn server(ca: &ClusterCa, name: &str, node_id: u64) -> Server {
    let cert = ca.issue(Role::Chunkserver, name).unwrap();
    let seen = Arc::new(Seen::default());
    let bind: SocketAddr = LOCAL.parse().unwrap();
    let node = QuicNode::serve(bind, &cert, test_router(node_id, seen.clone()))
        .await
        .unwrap();
    let _ = seen.client.set(RpcClient::new(node.transport()));
    let addr = node.local_addr().to_string();
    Server { node, seen, addr }
}

fn client(cert: &NodeCert) -> (QuicNode, RpcClient) {
    let node = QuicNode::client(cert).unwrap();
    let rpc = RpcClient::new(node.transport()).with_timeout(Duration::from_secs(10));
    (node, rpc)
}

fn read_req(offset: u64, len: u64) -> ReadChunk {
    ReadChunk {
        handle: ChunkHandle(1),
        version: ChunkVersion(1),
        offset,
        len,
    }
}

fn bump() -> BumpVersion {
    BumpVersion {
        handle: ChunkHandle(1),
        version: ChunkVersion(2),
        create: true,
        lease_ms: None,
        replicas: vec![],
    }
}

#[tokio::test]
async fn quic_round_trip_with_mtls() {
    let ca = ClusterCa::generate("t").unwrap();
    let s = server(&ca, "cs-1", 11).await;
    let (c, rpc) = client(&ca.issue(Role::Client, "alice").unwrap());
    assert_eq!(
        rpc.transport().identity(),
        &Identity::new(Role::Client, "alice")
    );

    let reply = rpc.call(&s.addr, &ping()).await.unwrap();
    assert_eq!(reply.node, NodeId(11));
    assert_eq!(
        s.seen.peers.lock().unwrap().as_slice(),
        &[Identity::new(Role::Client, "alice")]
    );

    // 10 MiB request body, checked by the handler.
    let data = pattern(3, 10 << 20);
    let push = PushData {
        data_id: DataId(5),
        forward: vec![],
        crc32c: checksum(&data),
    };
    rpc.call_with_body(&s.addr, &push, Bytes::from(data.clone()))
        .await
        .unwrap();
    {
        let pushes = s.seen.pushes.lock().unwrap();
        assert_eq!(pushes.len(), 1);
        assert_eq!(pushes[0].0, DataId(5));
        assert!(pushes[0].1 == data);
    }
    // A wrong checksum is the handler's error, returned as is.
    let bad = PushData {
        crc32c: push.crc32c ^ 1,
        ..push.clone()
    };
    assert_eq!(
        rpc.call_with_body(&s.addr, &bad, Bytes::from(data)).await,
        Err(FsError::ChecksumMismatch {
            handle: 5,
            block: 0
        })
    );

    // A reply body.
    let (reply, body) = rpc
        .call_read(&s.addr, &read_req(100, 3 << 20))
        .await
        .unwrap();
    assert_eq!(reply.chunk_len, 100 + (3 << 20));
    assert!(body == pattern(100, 3 << 20));

    // Many concurrent calls share the cached connection.
    let mut tasks = Vec::new();
    for i in 0..64u64 {
        let rpc = rpc.clone();
        let addr = s.addr.clone();
        tasks.push(tokio::spawn(async move {
            rpc.call_read(&addr, &read_req(i, 1000 + i)).await
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let (_, body) = t.await.unwrap().unwrap();
        assert!(body == pattern(i as u64, 1000 + i));
    }
    c.shutdown().await;
    s.node.shutdown().await;
}

#[tokio::test]
async fn stranger_is_refused_and_server_keeps_serving() {
    let ca = ClusterCa::generate("good").unwrap();
    let other = ClusterCa::generate("evil").unwrap();
    let s = server(&ca, "cs-1", 1).await;

    // A cert from another CA, trusting only that CA: the client refuses the server.
    let (c1, rpc1) = client(&other.issue(Role::Client, "mallory").unwrap());
    let rpc1 = rpc1.with_timeout(Duration::from_secs(5));
    match rpc1.call(&s.addr, &ping()).await {
        Err(FsError::Unavailable(msg)) => assert!(msg.contains(&s.addr), "{msg}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    // A cert from another CA, trusting the cluster CA: the server refuses the client.
    let mut forged = other.issue(Role::Master, "mallory").unwrap();
    forged.ca_pem = ca.cert_pem().to_string();
    let (c2, rpc2) = client(&forged);
    let rpc2 = rpc2.with_timeout(Duration::from_secs(5));
    for _ in 0..2 {
        match rpc2.call(&s.addr, &bump()).await {
            Err(FsError::Unavailable(_)) => {}
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }
    assert!(s.seen.peers.lock().unwrap().is_empty());

    let (c3, rpc3) = client(&ca.issue(Role::Client, "bob").unwrap());
    assert_eq!(rpc3.call(&s.addr, &ping()).await.unwrap().node, NodeId(1));
    for c in [c1, c2, c3] {
        c.shutdown().await;
    }
    s.node.shutdown().await;
}

#[tokio::test]
async fn role_check() {
    let ca = ClusterCa::generate("t").unwrap();
    let s = server(&ca, "cs-1", 1).await;
    let (c, rpc) = client(&ca.issue(Role::Client, "alice").unwrap());
    match rpc.call(&s.addr, &bump()).await {
        Err(FsError::PermissionDenied(msg)) => assert!(msg.contains("alice"), "{msg}"),
        other => panic!("expected PermissionDenied, got {other:?}"),
    }
    // Also when the request carries a body the server never reads.
    let push_as_master = PushData {
        data_id: DataId(1),
        forward: vec![],
        crc32c: 0,
    };
    let (m, master) = client(&ca.issue(Role::Master, "m").unwrap());
    master.call(&s.addr, &bump()).await.unwrap();
    let r = master
        .call_with_body(&s.addr, &push_as_master, Bytes::from(vec![0u8; 4 << 20]))
        .await;
    assert!(matches!(r, Err(FsError::PermissionDenied(_))), "{r:?}");
    c.shutdown().await;
    m.shutdown().await;
    s.node.shutdown().await;
}

/// Write raw bytes on a fresh stream, finish it (or not), and read whatever comes back.
async fn raw(transport: &Arc<dyn Transport>, addr: &str, bytes: &[u8], finish: bool) -> Vec<u8> {
    let (mut send, mut recv) = transport.open(addr).await.unwrap();
    let _ = send.write_all(bytes).await;
    if finish {
        let _ = send.shutdown().await;
    }
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), recv.read_to_end(&mut out))
        .await
        .expect("the server must answer or close, not hang")
        .ok();
    out
}

/// The error in a raw reply, if it is one.
fn reply_error(bytes: &[u8]) -> Option<FsError> {
    if bytes.len() < 20 {
        return None;
    }
    let h = FrameHeader::decode(bytes[..20].try_into().unwrap()).ok()?;
    let payload = &bytes[20..20 + h.payload_len as usize];
    quarry_proto::decode::<Result<(), FsError>>(payload)
        .ok()?
        .err()
}

fn is_protocol(bytes: &[u8]) -> bool {
    matches!(reply_error(bytes), Some(FsError::Protocol(_)))
}

#[tokio::test]
async fn malformed_frames_get_errors_not_hangs() {
    let ca = ClusterCa::generate("t").unwrap();
    let s = server(&ca, "cs-1", 1).await;
    let (c, rpc) = client(&ca.issue(Role::Client, "alice").unwrap());
    let t = c.transport();
    let addr = s.addr.as_str();

    // Garbage header.
    assert!(is_protocol(&raw(&t, addr, &[0xab; 20], true).await));
    // Oversized payload_len.
    let h = FrameHeader::request(Method::ChunkserverPing, MAX_PAYLOAD_BYTES + 1, 0).encode();
    assert!(is_protocol(&raw(&t, addr, &h, false).await));
    // Unknown method.
    let mut h = FrameHeader::request(Method::ChunkserverPing, 0, 0).encode();
    h[4..6].copy_from_slice(&999u16.to_le_bytes());
    assert!(is_protocol(&raw(&t, addr, &h, true).await));
    // A method this server does not serve.
    let h = FrameHeader::request(Method::Lookup, 0, 0).encode();
    assert!(is_protocol(&raw(&t, addr, &h, true).await));
    // Truncated payload.
    let mut msg = FrameHeader::request(Method::PushData, 100, 0)
        .encode()
        .to_vec();
    msg.extend_from_slice(&[1; 10]);
    assert!(is_protocol(&raw(&t, addr, &msg, true).await));
    // Undecodable payload.
    let mut msg = FrameHeader::request(Method::ReadChunk, 3, 0)
        .encode()
        .to_vec();
    msg.extend_from_slice(&[0xff; 3]);
    assert!(is_protocol(&raw(&t, addr, &msg, true).await));
    // Body shorter than declared.
    let push = quarry_proto::encode(&PushData {
        data_id: DataId(1),
        forward: vec![],
        crc32c: 0,
    })
    .unwrap();
    let mut msg = FrameHeader::request(Method::PushData, push.len() as u32, 1000)
        .encode()
        .to_vec();
    msg.extend_from_slice(&push);
    msg.extend_from_slice(&[7; 10]);
    assert!(is_protocol(&raw(&t, addr, &msg, true).await));
    // A response frame where a request belongs.
    let h = FrameHeader::response(0, 0).encode();
    assert!(is_protocol(&raw(&t, addr, &h, true).await));
    // A short header, then the end of the stream: an error or a closed stream.
    let out = raw(&t, addr, &[b'Q', b'Y', 1], true).await;
    assert!(out.is_empty() || reply_error(&out).is_some());
    // An empty stream.
    assert!(raw(&t, addr, &[], true).await.is_empty());

    // The connection and the server still work.
    assert_eq!(rpc.call(addr, &ping()).await.unwrap().node, NodeId(1));
    c.shutdown().await;
    s.node.shutdown().await;
}

#[tokio::test]
async fn streamed_push_along_a_two_hop_chain() {
    let ca = ClusterCa::generate("t").unwrap();
    let a = server(&ca, "cs-a", 1).await;
    let b = server(&ca, "cs-b", 2).await;
    let (c, rpc) = client(&ca.issue(Role::Client, "alice").unwrap());

    let data = pattern(9, (5 << 20) + 12345);
    let req = PushData {
        data_id: DataId(42),
        forward: vec![ServerRef {
            id: NodeId(2),
            addr: b.addr.clone(),
        }],
        crc32c: checksum(&data),
    };
    let mut call = rpc.start(&a.addr, &req, data.len() as u64).await.unwrap();
    let mut sent = 0;
    for size in [1, 1000, 65536, 3 << 20].into_iter().cycle() {
        let end = (sent + size).min(data.len());
        call.send(&data[sent..end]).await.unwrap();
        sent = end;
        if sent == data.len() {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(call.remaining(), 0);
    call.finish().await.unwrap();
    for s in [&a, &b] {
        let pushes = s.seen.pushes.lock().unwrap();
        assert_eq!(pushes.len(), 1);
        assert_eq!(pushes[0].0, DataId(42));
        assert!(pushes[0].1 == data, "bytes arrive whole");
    }
    // B saw A (a chunkserver) as the caller of the forwarded push.
    b.seen.peers.lock().unwrap().clear();
    a.seen
        .client
        .get()
        .unwrap()
        .call(&b.addr, &ping())
        .await
        .unwrap();
    assert_eq!(
        b.seen.peers.lock().unwrap().as_slice(),
        &[Identity::new(Role::Chunkserver, "cs-a")]
    );

    // Overflow and underflow are refused.
    let mut call = rpc.start(&b.addr, &req, 10).await.unwrap();
    assert!(call.send(&[0; 11]).await.is_err());
    call.send(&[0; 5]).await.unwrap();
    assert!(call.finish().await.is_err());
    // The server is fine afterwards.
    rpc.call(&b.addr, &ping()).await.unwrap();
    c.shutdown().await;
    a.node.shutdown().await;
    b.node.shutdown().await;
}

#[tokio::test]
async fn timeout_and_panicking_handler() {
    let ca = ClusterCa::generate("t").unwrap();
    let s = server(&ca, "cs-1", 1).await;
    let (c, rpc) = client(&ca.issue(Role::Client, "alice").unwrap());
    let quick = rpc.clone().with_timeout(Duration::from_millis(300));
    assert_eq!(quick.timeout(), Duration::from_millis(300));
    let started = std::time::Instant::now();
    match quick.call(&s.addr, &read_req(SLEEP_OFFSET, 2000)).await {
        Err(FsError::Timeout(_)) => {}
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_millis(1500));

    match rpc.call(&s.addr, &read_req(PANIC_OFFSET, 1)).await {
        Err(FsError::Io(msg)) => assert!(msg.contains("panicked"), "{msg}"),
        other => panic!("expected Io, got {other:?}"),
    }
    assert_eq!(rpc.call(&s.addr, &ping()).await.unwrap().node, NodeId(1));
    c.shutdown().await;
    s.node.shutdown().await;
}

#[tokio::test]
async fn reconnects_after_the_server_restarts() {
    let ca = ClusterCa::generate("t").unwrap();
    let s = server(&ca, "cs-1", 1).await;
    let (c, rpc) = client(&ca.issue(Role::Client, "alice").unwrap());
    rpc.call(&s.addr, &ping()).await.unwrap();
    let bind = s.node.local_addr();
    s.node.shutdown().await;
    drop(s);
    // Nobody there: fails (Unavailable or, at worst, Timeout) quickly.
    let short = rpc.clone().with_timeout(Duration::from_secs(1));
    let r = short.call(&bind.to_string(), &ping()).await;
    assert!(
        matches!(r, Err(FsError::Unavailable(_)) | Err(FsError::Timeout(_))),
        "{r:?}"
    );
    // A new server on the same port: the cached connection is replaced.
    let cert = ca.issue(Role::Chunkserver, "cs-1b").unwrap();
    let node = QuicNode::serve(bind, &cert, test_router(2, Arc::new(Seen::default())))
        .await
        .unwrap();
    let r = rpc.call(&bind.to_string(), &ping()).await;
    assert_eq!(r.unwrap().node, NodeId(2));
    node.shutdown().await;
    c.shutdown().await;
}

/// 256 MiB through one stream on loopback. Run with
/// `cargo test -p quarry-transport --release --test quic -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn throughput_256_mib() {
    let ca = ClusterCa::generate("t").unwrap();
    let mut router = quarry_transport::Router::new();
    router.route::<PushData, _, _>(|req: quarry_transport::Request<PushData>| async move {
        let mut body = req.body;
        let mut n = 0u64;
        loop {
            match body.next_chunk().await {
                Ok(Some(piece)) => n += piece.len() as u64,
                Ok(None) => break,
                Err(e) => return quarry_transport::Reply::err(e),
            }
        }
        assert_eq!(n, body.len());
        quarry_transport::Reply::ok(())
    });
    let cert = ca.issue(Role::Chunkserver, "sink").unwrap();
    let node = QuicNode::serve(LOCAL.parse().unwrap(), &cert, router)
        .await
        .unwrap();
    let addr = node.local_addr().to_string();
    let (c, rpc) = client(&ca.issue(Role::Client, "alice").unwrap());
    let rpc = rpc.with_timeout(Duration::from_secs(120));
    let req = PushData {
        data_id: DataId(1),
        forward: vec![],
        crc32c: 0,
    };
    rpc.call_with_body(&addr, &req, Bytes::from(vec![1u8; 8 << 20]))
        .await
        .unwrap(); // warm up
    let total: u64 = 256 << 20;
    let piece = vec![7u8; 1 << 20];
    let started = std::time::Instant::now();
    let mut call = rpc.start(&addr, &req, total).await.unwrap();
    for _ in 0..(total >> 20) {
        call.send(&piece).await.unwrap();
    }
    call.finish().await.unwrap();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "256 MiB through one QUIC stream in {:.2} s: {:.0} MiB/s",
        secs,
        256.0 / secs
    );
    c.shutdown().await;
    node.shutdown().await;
}

/// Large requests and replies over loopback keep their 64 KiB datagrams: quinn batches up to
/// ten datagrams per segmentation-offload send, ten 64 KiB ones exceed what one UDP send may
/// carry, and the kernel's EMSGSIZE made quinn count the batch lost, conclude a black hole and
/// drop to 1200-byte packets (with 30 to 110 ms stalls while it recovered). The sender's end
/// sees it: the client's for pushes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_transfers_keep_the_loopback_mtu_without_losses() {
    let ca = ClusterCa::generate("t").unwrap();
    let s = server(&ca, "cs", 1).await;
    let (c, rpc) = client(&ca.issue(Role::Client, "alice").unwrap());
    for round in 0..8u64 {
        let mut calls = tokio::task::JoinSet::new();
        for i in 0..4u64 {
            let (rpc, addr) = (rpc.clone(), s.addr.clone());
            let data = pattern(round * 4 + i, 1 << 20);
            let req = PushData {
                data_id: DataId(round * 4 + i),
                forward: vec![],
                crc32c: checksum(&data),
            };
            calls.spawn(async move {
                rpc.call_with_body(&addr, &req, Bytes::from(data)).await?;
                let (_, body) = rpc.call_read(&addr, &read_req(round, 1 << 20)).await?;
                assert_eq!(body.len(), 1 << 20);
                Ok::<_, FsError>(())
            });
        }
        while let Some(r) = calls.join_next().await {
            r.unwrap().unwrap();
        }
    }
    let path = c.path_report(&s.addr).expect("a cached connection");
    assert_eq!(path.black_holes, 0, "{path:?}");
    assert_eq!(path.mtu, 65_000, "{path:?}");
    assert_eq!(path.lost_packets, 0, "{path:?}");
    c.shutdown().await;
    s.node.shutdown().await;
}
