//! The frame decoder and the server's whole request path: the input is what a peer writes on a
//! request stream (frame header, payload, body), sent over the in-memory network to a `Router`
//! with real handlers. The reply must be a well-formed response frame whose payload decodes as a
//! `Result`: every malformed or over-limit request gets an error reply, never a panic, a hang or
//! a huge allocation. A header that decodes must encode back to the same bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use quarry_proto::frame::{FrameHeader, FrameKind, HEADER_LEN, MAX_BODY_BYTES};
use quarry_proto::{chunk, master, FsError, Method, Role};
use quarry_transport::mem::MemNetwork;
use quarry_transport::{Identity, Reply, Request, Router, Transport};
use std::sync::{Arc, OnceLock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[global_allocator]
static ALLOC: quarry_fuzz::CappedAlloc = quarry_fuzz::CappedAlloc;

struct World {
    rt: tokio::runtime::Runtime,
    _net: MemNetwork,
    /// One dialer per role, so role checks pass or fail depending on the input.
    clients: Vec<Arc<dyn Transport>>,
}

/// Handlers answering `()`, so that every reply payload is a `Result<(), FsError>`. `PushData`
/// reads its whole body, as the chunkserver's does.
fn router() -> Router {
    let mut r = Router::new();
    r.route(|req: Request<master::Unlink>| async move {
        Reply::from(quarry_proto::validate_name(&req.msg.name))
    });
    r.route(|req: Request<master::Rename>| async move {
        Reply::from(
            quarry_proto::validate_name(&req.msg.src_name)
                .and_then(|()| quarry_proto::validate_name(&req.msg.dst_name)),
        )
    });
    r.route(|req: Request<master::SetXattr>| async move {
        Reply::from(if req.msg.value.is_empty() {
            Err(FsError::NoData)
        } else {
            Ok(())
        })
    });
    r.route(|req: Request<chunk::PushData>| async move {
        let want = req.msg.crc32c;
        Reply::from(req.body.read_all().await.and_then(|b| {
            if b.len() as u32 == want {
                Ok(())
            } else {
                Err(FsError::InvalidArgument("length".into()))
            }
        }))
    });
    r.route(|req: Request<chunk::ApplyMutation>| async move {
        let mut body = req.body;
        let mut n = 0u64;
        loop {
            match body.next_chunk().await {
                Ok(Some(piece)) => n += piece.len() as u64,
                Ok(None) => break,
                Err(e) => return Reply::err(e),
            }
        }
        Reply::from(if n == req.msg.serial {
            Ok(())
        } else {
            Err(FsError::NoData)
        })
    });
    r.route(|_: Request<chunk::BumpVersion>| async move { Reply::ok(()) });
    r.route(|_: Request<master::ReportFailedReplica>| async move { Reply::ok(()) });
    r
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let net = MemNetwork::new(1);
        let clients = rt.block_on(async {
            net.serve(
                "server",
                Identity::new(Role::Chunkserver, "server"),
                router(),
            );
            Role::ALL
                .iter()
                .map(|&role| net.client(&format!("{role}"), Identity::new(role, "fuzz")))
                .collect()
        });
        World {
            rt,
            _net: net,
            clients,
        }
    })
}

/// A request stream from `data`: byte 0 picks the method, byte 1 the payload length (as a
/// difference from the bytes given, so payloads run short or long), bytes 2..6 the body length
/// (small, or close to the 1 GiB cap), byte 6 where the payload ends; the remaining bytes are the
/// payload and then the body.
fn structured(data: &[u8]) -> Option<Vec<u8>> {
    if data.len() < 7 {
        return None;
    }
    let method = Method::ALL[data[0] as usize % Method::ALL.len()];
    let bytes = &data[7..];
    let split = (data[6] as usize).min(bytes.len());
    let (payload, body) = bytes.split_at(split);
    let payload_len = (payload.len() as i64 + i64::from(data[1] as i8 % 4)).max(0) as u32;
    let claim = u32::from_le_bytes(data[2..6].try_into().unwrap());
    let body_len = if claim & 0x8000_0000 != 0 {
        MAX_BODY_BYTES - u64::from(claim & 0xffff)
    } else {
        u64::from(claim & 0xfff)
    };
    let mut out = FrameHeader::request(method, payload_len, body_len)
        .encode()
        .to_vec();
    out.extend_from_slice(payload);
    out.extend_from_slice(body);
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    // The header decoder alone: a header that decodes is exactly the bytes it encodes to.
    if data.len() >= HEADER_LEN {
        let raw: [u8; HEADER_LEN] = data[..HEADER_LEN].try_into().unwrap();
        if let Ok(h) = FrameHeader::decode(&raw) {
            assert_eq!(h.encode(), raw);
        }
    }

    // The whole request path. The first byte picks the caller's role (low bits) and how the rest
    // becomes the stream (top bit): as it is, or behind a valid request header built from its
    // first bytes (so that the payload decoders and body readers are reached without guessing the
    // magic).
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let built;
    let stream = if control & 0x80 == 0 {
        rest
    } else {
        let Some(s) = structured(rest) else {
            return;
        };
        built = s;
        &built[..]
    };
    let role = control & 0x7f;
    let w = world();
    let client = &w.clients[role as usize % w.clients.len()];
    let reply = w.rt.block_on(async {
        let (mut send, mut recv) = client.open("server").await.expect("open");
        // The server may answer (and stop reading) before it has taken every byte.
        let _ = send.write_all(stream).await;
        let _ = send.shutdown().await;
        let mut reply = Vec::new();
        recv.read_to_end(&mut reply).await.expect("read reply");
        reply
    });
    if stream.is_empty() {
        // A stream closed without a request gets no reply.
        assert!(reply.is_empty());
        return;
    }
    assert!(reply.len() >= HEADER_LEN, "no reply to {stream:?}");
    let header =
        FrameHeader::decode(&reply[..HEADER_LEN].try_into().unwrap()).expect("reply header");
    assert_eq!(header.kind, FrameKind::Response);
    let payload_end = HEADER_LEN + header.payload_len as usize;
    assert_eq!(reply.len() as u64, payload_end as u64 + header.body_len);
    let result: Result<(), FsError> =
        quarry_proto::decode(&reply[HEADER_LEN..payload_end]).expect("reply payload");
    if result.is_err() {
        assert_eq!(header.body_len, 0, "an error reply carries no body");
    }
});
