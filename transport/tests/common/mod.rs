//! Shared fixtures for the transport tests: a test router over a few real proto RPCs.
#![allow(dead_code)]

use bytes::Bytes;
use quarry_proto::chunk::{
    BumpVersion, ChunkserverPing, PingReply, PushData, ReadChunk, ReadReply,
};
use quarry_proto::{DataId, FsError, NodeId};
use quarry_transport::{Identity, Reply, Request, Router, RpcClient};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// FNV-1a, standing in for CRC32C in the `PushData::crc32c` field.
pub fn checksum(data: &[u8]) -> u32 {
    data.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ *b as u32).wrapping_mul(0x0100_0193)
    })
}

pub fn pattern(offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| ((offset + i) * 7 % 251) as u8)
        .collect()
}

/// What a test server saw.
#[derive(Default)]
pub struct Seen {
    pub peers: Mutex<Vec<Identity>>,
    /// (data id, bytes, number of pieces) of every push.
    pub pushes: Mutex<Vec<(DataId, Vec<u8>, usize)>>,
    /// Set once the node is up: used to forward pushes down the chain.
    pub client: OnceLock<RpcClient>,
}

/// ReadChunk with this offset sleeps for `len` milliseconds before answering.
pub const SLEEP_OFFSET: u64 = u64::MAX - 1;
/// ReadChunk with this offset panics.
pub const PANIC_OFFSET: u64 = u64::MAX;

pub fn test_router(node: u64, seen: Arc<Seen>) -> Router {
    let mut router = Router::new();
    let s = seen.clone();
    router.route::<ChunkserverPing, _, _>(move |req: Request<ChunkserverPing>| {
        s.peers.lock().unwrap().push(req.peer.clone());
        async move { Reply::ok(PingReply { node: NodeId(node) }) }
    });
    let s = seen.clone();
    router.route::<PushData, _, _>(move |req: Request<PushData>| {
        let s = s.clone();
        async move { push(s, req).await.into() }
    });
    router.route::<ReadChunk, _, _>(|req: Request<ReadChunk>| async move {
        let ReadChunk { offset, len, .. } = req.msg;
        match offset {
            PANIC_OFFSET => panic!("test handler panics on purpose"),
            SLEEP_OFFSET => {
                tokio::time::sleep(Duration::from_millis(len)).await;
                Reply::ok(ReadReply { chunk_len: 0 })
            }
            _ => Reply::with_body(
                ReadReply {
                    chunk_len: offset + len,
                },
                Bytes::from(pattern(offset, len as usize)),
            ),
        }
    });
    router.route::<BumpVersion, _, _>(|_req: Request<BumpVersion>| async { Reply::ok(()) });
    router
}

/// Receive a push piece by piece, forwarding it down the chain while it arrives.
async fn push(seen: Arc<Seen>, req: Request<PushData>) -> Result<(), FsError> {
    let Request { msg, mut body, .. } = req;
    let mut forward = match msg.forward.split_first() {
        Some((next, rest)) => {
            let client = seen.client.get().expect("client set").clone();
            let down = PushData {
                data_id: msg.data_id,
                forward: rest.to_vec(),
                crc32c: msg.crc32c,
            };
            Some(client.start(&next.addr, &down, body.len()).await?)
        }
        None => None,
    };
    let mut data = Vec::with_capacity(body.len() as usize);
    let mut pieces = 0;
    while let Some(piece) = body.next_chunk().await? {
        pieces += 1;
        if let Some(f) = forward.as_mut() {
            f.send(&piece).await?;
        }
        data.extend_from_slice(&piece);
    }
    if let Some(f) = forward {
        f.finish().await?;
    }
    if checksum(&data) != msg.crc32c {
        return Err(FsError::ChecksumMismatch {
            handle: msg.data_id.0,
            block: 0,
        });
    }
    seen.pushes
        .lock()
        .unwrap()
        .push((msg.data_id, data, pieces));
    Ok(())
}

pub fn ping() -> ChunkserverPing {
    ChunkserverPing {}
}
