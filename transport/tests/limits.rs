//! Decode-time limits at the RPC layer: an over-limit or malformed request gets an error reply
//! from the router (its handler never runs), and a length claimed by a frame header is not
//! allocated before the bytes arrive.

use quarry_proto::chunk::PushData;
use quarry_proto::frame::{FrameHeader, FrameKind, HEADER_LEN, MAX_BODY_BYTES};
use quarry_proto::master::Lookup;
use quarry_proto::{DataId, FsError, InodeId, Method, NodeId, Role, ServerRef};
use quarry_transport::mem::MemNetwork;
use quarry_transport::{Identity, Reply, Request, Router, RpcClient, Transport};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The system allocator, recording the largest single allocation.
struct Largest;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

#[allow(unsafe_code)]
// SAFETY: every call is forwarded unchanged to `System`; the only addition is an atomic max.
unsafe impl GlobalAlloc for Largest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOC: Largest = Largest;

/// A router whose handlers count their calls; `PushData` reads its whole body.
fn router(calls: Arc<AtomicUsize>) -> Router {
    let mut r = Router::new();
    let c = calls.clone();
    r.route(move |_: Request<Lookup>| {
        c.fetch_add(1, Ordering::SeqCst);
        async { Reply::err(FsError::NotFound) }
    });
    r.route(move |req: Request<PushData>| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move { Reply::from(req.body.read_all().await.map(drop)) }
    });
    r
}

fn setup() -> (MemNetwork, Arc<AtomicUsize>) {
    let net = MemNetwork::new(7);
    let calls = Arc::new(AtomicUsize::new(0));
    net.serve(
        "server",
        Identity::new(Role::Chunkserver, "server"),
        router(calls.clone()),
    );
    (net, calls)
}

/// Write `bytes` on a fresh request stream, close it, and decode the reply frame's result.
async fn raw_call(client: &Arc<dyn Transport>, bytes: &[u8]) -> Result<(), FsError> {
    let (mut send, mut recv) = client.open("server").await.unwrap();
    let _ = send.write_all(bytes).await;
    let _ = send.shutdown().await;
    let mut reply = Vec::new();
    recv.read_to_end(&mut reply).await.unwrap();
    let header = FrameHeader::decode(&reply[..HEADER_LEN].try_into().unwrap()).unwrap();
    assert_eq!(header.kind, FrameKind::Response);
    assert_eq!(reply.len(), HEADER_LEN + header.payload_len as usize);
    quarry_proto::decode::<Result<(), FsError>>(&reply[HEADER_LEN..]).unwrap()
}

fn request(method: Method, payload: &[u8], body_len: u64) -> Vec<u8> {
    let mut out = FrameHeader::request(method, payload.len() as u32, body_len)
        .encode()
        .to_vec();
    out.extend_from_slice(payload);
    out
}

#[tokio::test]
async fn over_limit_requests_get_the_limit_error_and_never_reach_the_handler() {
    let (net, calls) = setup();
    let client = RpcClient::new(net.client("c", Identity::new(Role::Client, "c")));
    let long = Lookup {
        parent: InodeId::ROOT,
        name: "n".repeat(256),
    };
    assert_eq!(
        client.call("server", &long).await,
        Err(FsError::NameTooLong)
    );
    let chain = PushData {
        data_id: DataId(1),
        forward: vec![
            ServerRef {
                id: NodeId(1),
                addr: "x:1".into(),
            };
            256
        ],
        crc32c: 0,
    };
    assert!(matches!(
        client.call("server", &chain).await,
        Err(FsError::InvalidArgument(_))
    ));
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    // At the limit, the handler runs.
    let ok = Lookup {
        parent: InodeId::ROOT,
        name: "n".repeat(255),
    };
    assert_eq!(client.call("server", &ok).await, Err(FsError::NotFound));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn malformed_payloads_get_a_protocol_error_reply() {
    let (net, calls) = setup();
    let client = net.client("c", Identity::new(Role::Client, "c"));
    for payload in [&[][..], &[0xff, 0xff, 0xff][..], &[1, 0x80][..]] {
        let reply = raw_call(&client, &request(Method::Lookup, payload, 0)).await;
        assert!(matches!(reply, Err(FsError::Protocol(_))), "{reply:?}");
    }
    // A truncated header, a payload shorter than declared, an unknown method.
    let full = request(Method::Lookup, &[1, 1, b'a'], 0);
    for bytes in [&full[..7], &full[..HEADER_LEN + 1]] {
        let reply = raw_call(&client, bytes).await;
        assert!(matches!(reply, Err(FsError::Protocol(_))), "{reply:?}");
    }
    let mut unknown = full;
    unknown[4] = 0xee;
    let reply = raw_call(&client, &unknown).await;
    assert!(matches!(reply, Err(FsError::Protocol(_))), "{reply:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_claimed_body_length_is_not_allocated_before_the_bytes_arrive() {
    let (net, calls) = setup();
    let client = net.client("c", Identity::new(Role::Client, "c"));
    let push = quarry_proto::encode(&PushData {
        data_id: DataId(1),
        forward: vec![],
        crc32c: 0,
    })
    .unwrap();
    // A 1 GiB body is claimed; 10 bytes follow before the stream ends.
    let mut bytes = request(Method::PushData, &push, MAX_BODY_BYTES);
    bytes.extend_from_slice(&[7; 10]);
    LARGEST.store(0, Ordering::SeqCst);
    let reply = raw_call(&client, &bytes).await;
    assert!(matches!(reply, Err(FsError::Protocol(_))), "{reply:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let largest = LARGEST.load(Ordering::SeqCst);
    assert!(largest < 16 << 20, "largest allocation {largest} bytes");
}
