//! Frame reading and writing shared by the router (server side) and the RPC client.
//!
//! Pure framing over `AsyncRead`/`AsyncWrite`; it must not know about QUIC or the in-memory
//! network.

use bytes::{BufMut, Bytes, BytesMut};
use quarry_proto::frame::{FrameHeader, HEADER_LEN, MAX_BODY_BYTES, MAX_PAYLOAD_BYTES};
use quarry_proto::FsError;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// First allocation of [`read_exact_bytes`]; the buffer then doubles as bytes arrive.
const FIRST_READ_BYTES: usize = 64 << 10;

/// Read exactly `len` bytes into one buffer; `Ok(Err(n))` if the stream ended first after `n`
/// bytes. `len` comes from a peer's frame header (up to 1 GiB for a body), so room is reserved as
/// bytes arrive, never more than twice what arrived (and at least [`FIRST_READ_BYTES`]): a header
/// that claims a large body and sends nothing costs nothing.
pub(crate) async fn read_exact_bytes<R: AsyncRead + Unpin + ?Sized>(
    r: &mut R,
    len: usize,
) -> std::io::Result<Result<Bytes, usize>> {
    let mut buf = BytesMut::with_capacity(len.min(FIRST_READ_BYTES));
    while buf.len() < len {
        if buf.len() == buf.capacity() {
            // Double, up to `len`: the copies add up to less than `len`.
            let more = buf.len().min(len - buf.len());
            buf.reserve(more);
        }
        let want = (len - buf.len()).min(buf.capacity() - buf.len());
        let n = r.read_buf(&mut (&mut buf).limit(want)).await?;
        if n == 0 {
            return Ok(Err(buf.len()));
        }
    }
    Ok(Ok(buf.freeze()))
}

/// Read a frame header: `Ok(None)` on a clean end of stream before the first byte.
pub(crate) async fn read_header<R: AsyncRead + Unpin + ?Sized>(
    r: &mut R,
) -> Result<Option<[u8; HEADER_LEN]>, FsError> {
    let mut h = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        let n = r
            .read(&mut h[got..])
            .await
            .map_err(|e| FsError::Unavailable(format!("reading frame header: {e}")))?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(FsError::Protocol(format!(
                "stream ended inside the frame header ({got} of {HEADER_LEN} bytes)"
            )));
        }
        got += n;
    }
    Ok(Some(h))
}

/// Postcard of a `Result<T, FsError>`, falling back to an encodable error if `T` does not fit.
pub(crate) fn encode_result<T: Serialize>(result: &Result<T, FsError>) -> Vec<u8> {
    let fallback = |e: FsError| {
        quarry_proto::encode(&Err::<(), FsError>(e)).expect("an FsError always encodes")
    };
    match quarry_proto::encode(result) {
        Ok(v) if v.len() <= MAX_PAYLOAD_BYTES as usize => v,
        Ok(v) => fallback(FsError::Protocol(format!(
            "reply payload of {} bytes exceeds the cap of {MAX_PAYLOAD_BYTES}",
            v.len()
        ))),
        Err(e) => fallback(e),
    }
}

/// Write a response frame and finish the stream.
pub(crate) async fn write_response<W: AsyncWrite + Unpin + ?Sized>(
    w: &mut W,
    payload: &[u8],
    body: &[u8],
) -> std::io::Result<()> {
    let header = FrameHeader::response(payload.len() as u32, body.len() as u64).encode();
    w.write_all(&header).await?;
    w.write_all(payload).await?;
    if !body.is_empty() {
        w.write_all(body).await?;
    }
    w.shutdown().await
}

/// An error reply with no body; used where the request could not be handled at all.
pub(crate) async fn write_error<W: AsyncWrite + Unpin + ?Sized>(w: &mut W, e: FsError) {
    let payload = encode_result::<()>(&Err(e));
    let _ = write_response(w, &payload, &[]).await;
}

/// Check a body length before sending it.
pub(crate) fn check_body_len(len: u64) -> Result<(), FsError> {
    if len > MAX_BODY_BYTES {
        return Err(FsError::InvalidArgument(format!(
            "body of {len} bytes exceeds the cap of {MAX_BODY_BYTES}"
        )));
    }
    Ok(())
}
