//! The calling side of RPC: [`RpcClient`] sends typed requests over any [`Transport`] and decodes
//! the replies; [`OutgoingCall`] streams a request body while it is still being produced.
//!
//! Every call opens one stream and is bounded as a whole by the client's timeout. The remote's
//! `FsError` is returned as is; failures of the stream itself become `FsError::Unavailable`. This
//! module must not depend on QUIC or on the in-memory network, only on the [`Transport`] trait.

use crate::{wire, RecvHalf, SendHalf, Transport};
use bytes::Bytes;
use quarry_proto::frame::{FrameHeader, FrameKind, MAX_PAYLOAD_BYTES};
use quarry_proto::{FsError, Rpc};
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Makes RPC calls through a [`Transport`]. Cheap to clone.
#[derive(Clone)]
pub struct RpcClient {
    transport: Arc<dyn Transport>,
    timeout: Duration,
}

impl std::fmt::Debug for RpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcClient")
            .field("identity", self.transport.identity())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Whether the reply's body is wanted.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ReplyBody {
    Discard,
    Read,
}

impl RpcClient {
    /// A client with the default timeout of 30 s.
    pub fn new(transport: Arc<dyn Transport>) -> Self {
        RpcClient {
            transport,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.transport
    }

    /// Every call is bounded by the timeout as a whole (FsError::Timeout). The remote's FsError is
    /// returned as is; transport failures become FsError::Unavailable.
    pub async fn call<R: Rpc>(&self, addr: &str, req: &R) -> Result<R::Response, FsError> {
        self.exchange(addr, req, Bytes::new(), ReplyBody::Discard)
            .await
            .map(|(r, _)| r)
    }

    /// A call whose request carries `body`.
    pub async fn call_with_body<R: Rpc>(
        &self,
        addr: &str,
        req: &R,
        body: Bytes,
    ) -> Result<R::Response, FsError> {
        self.exchange(addr, req, body, ReplyBody::Discard)
            .await
            .map(|(r, _)| r)
    }

    /// Returns the reply's body too (for reads).
    pub async fn call_read<R: Rpc>(
        &self,
        addr: &str,
        req: &R,
    ) -> Result<(R::Response, Bytes), FsError> {
        self.exchange(addr, req, Bytes::new(), ReplyBody::Read)
            .await
    }

    /// Streamed request body of exactly body_len bytes: used by chunkservers to forward pushed
    /// data down a replica chain while it is still arriving. The whole call, from `start` to
    /// [`OutgoingCall::finish`], is bounded by the timeout.
    pub async fn start<R: Rpc>(
        &self,
        addr: &str,
        req: &R,
        body_len: u64,
    ) -> Result<OutgoingCall<R>, FsError> {
        wire::check_body_len(body_len)?;
        let payload = encode_request(req)?;
        let deadline = Instant::now() + self.timeout;
        let opened = tokio::time::timeout_at(deadline, async {
            let (mut send, recv) = self.transport.open(addr).await?;
            let header = FrameHeader::request(R::METHOD, payload.len() as u32, body_len).encode();
            let written = async {
                send.write_all(&header).await?;
                send.write_all(&payload).await
            }
            .await;
            Ok::<_, FsError>((send, recv, written))
        })
        .await
        .map_err(|_| self.timeout_error::<R>(addr))??;
        let (send, recv, written) = opened;
        let mut call = OutgoingCall {
            addr: addr.to_string(),
            send: Some(send),
            recv: Some(recv),
            remaining: body_len,
            body_len,
            deadline,
            timeout: self.timeout,
            failed: None,
            _rpc: PhantomData,
        };
        if let Err(e) = written {
            return Err(call.fail_after_write_error(e).await);
        }
        Ok(call)
    }

    async fn exchange<R: Rpc>(
        &self,
        addr: &str,
        req: &R,
        body: Bytes,
        want: ReplyBody,
    ) -> Result<(R::Response, Bytes), FsError> {
        wire::check_body_len(body.len() as u64)?;
        let payload = encode_request(req)?;
        let fut = async {
            let (mut send, mut recv) = self.transport.open(addr).await?;
            let header =
                FrameHeader::request(R::METHOD, payload.len() as u32, body.len() as u64).encode();
            let written = async {
                send.write_all(&header).await?;
                send.write_all(&payload).await?;
                if !body.is_empty() {
                    send.write_all(&body).await?;
                }
                send.shutdown().await
            }
            .await;
            match read_response::<R::Response>(&mut recv, addr, want).await {
                Ok((result, body)) => result.map(|r| (r, body)),
                // The remote may have closed its side early; the write error says why.
                Err(e) => Err(match written {
                    Err(w) => FsError::Unavailable(format!("{addr}: sending request: {w}")),
                    Ok(()) => e,
                }),
            }
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| self.timeout_error::<R>(addr))?
    }

    fn timeout_error<R: Rpc>(&self, addr: &str) -> FsError {
        self.transport.forget(addr);
        timeout_error::<R>(addr, self.timeout)
    }
}

fn timeout_error<R: Rpc>(addr: &str, timeout: Duration) -> FsError {
    FsError::Timeout(format!(
        "{addr}: {:?} got no reply within {} ms",
        R::METHOD,
        timeout.as_millis()
    ))
}

fn encode_request<R: Rpc>(req: &R) -> Result<Vec<u8>, FsError> {
    let payload = quarry_proto::encode(req)?;
    if payload.len() > MAX_PAYLOAD_BYTES as usize {
        return Err(FsError::InvalidArgument(format!(
            "request payload of {} bytes exceeds the cap of {MAX_PAYLOAD_BYTES}",
            payload.len()
        )));
    }
    Ok(payload)
}

/// Read a response frame. The outer error is a failure of the stream or of the framing; the inner
/// result is what the remote answered.
async fn read_response<T: serde::de::DeserializeOwned>(
    recv: &mut RecvHalf,
    addr: &str,
    want: ReplyBody,
) -> Result<(Result<T, FsError>, Bytes), FsError> {
    let unavailable = |what: &str| FsError::Unavailable(format!("{addr}: {what}"));
    let raw = match wire::read_header(recv).await {
        Ok(Some(raw)) => raw,
        Ok(None) => return Err(unavailable("stream closed before the reply")),
        Err(FsError::Unavailable(e)) => return Err(unavailable(&e)),
        Err(e) => return Err(unavailable(&e.to_string())),
    };
    let header = FrameHeader::decode(&raw)
        .map_err(|e| FsError::Protocol(format!("{addr}: bad reply header: {e}")))?;
    if header.kind != FrameKind::Response {
        return Err(FsError::Protocol(format!(
            "{addr}: expected a response frame"
        )));
    }
    let payload = match wire::read_exact_bytes(recv, header.payload_len as usize).await {
        Ok(Ok(p)) => p,
        Ok(Err(_)) => return Err(unavailable("stream ended inside the reply payload")),
        Err(e) => return Err(unavailable(&format!("reading reply: {e}"))),
    };
    let result: Result<T, FsError> = quarry_proto::decode(&payload)
        .map_err(|e| FsError::Protocol(format!("{addr}: bad reply payload: {e}")))?;
    let body = if want == ReplyBody::Read && result.is_ok() && header.body_len > 0 {
        match wire::read_exact_bytes(recv, header.body_len as usize).await {
            Ok(Ok(b)) => b,
            Ok(Err(got)) => {
                return Err(unavailable(&format!(
                    "reply body ended after {got} of {} bytes",
                    header.body_len
                )))
            }
            Err(e) => return Err(unavailable(&format!("reading reply body: {e}"))),
        }
    } else {
        Bytes::new()
    };
    Ok((result, body))
}

/// A call whose request body is being streamed. Send exactly the announced number of bytes, then
/// [`OutgoingCall::finish`] for the reply. Dropping it abandons the call.
pub struct OutgoingCall<R: Rpc> {
    addr: String,
    send: Option<SendHalf>,
    recv: Option<RecvHalf>,
    remaining: u64,
    body_len: u64,
    deadline: Instant,
    timeout: Duration,
    failed: Option<FsError>,
    _rpc: PhantomData<fn() -> R>,
}

impl<R: Rpc> OutgoingCall<R> {
    /// Send the next part of the body. Error if more than body_len bytes in total.
    pub async fn send(&mut self, data: &[u8]) -> Result<(), FsError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if data.len() as u64 > self.remaining {
            return Err(FsError::InvalidArgument(format!(
                "{}: {:?} body overflow: {} more bytes with {} of {} left",
                self.addr,
                R::METHOD,
                data.len(),
                self.remaining,
                self.body_len
            )));
        }
        let Some(send) = self.send.as_mut() else {
            return Err(FsError::Protocol("call already finished".into()));
        };
        match tokio::time::timeout_at(self.deadline, send.write_all(data)).await {
            Err(_) => {
                let e = timeout_error::<R>(&self.addr, self.timeout);
                self.failed = Some(e.clone());
                Err(e)
            }
            Ok(Err(w)) => Err(self.fail_after_write_error(w).await),
            Ok(Ok(())) => {
                self.remaining -= data.len() as u64;
                Ok(())
            }
        }
    }

    /// Bytes of the body still to send.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Finish the body and wait for the reply. Error if fewer than body_len bytes were sent.
    pub async fn finish(mut self) -> Result<R::Response, FsError> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        if self.remaining > 0 {
            return Err(FsError::InvalidArgument(format!(
                "{}: {:?} finished after {} of {} body bytes",
                self.addr,
                R::METHOD,
                self.body_len - self.remaining,
                self.body_len
            )));
        }
        let (Some(mut send), Some(mut recv)) = (self.send.take(), self.recv.take()) else {
            return Err(FsError::Protocol("call already finished".into()));
        };
        let addr = self.addr.clone();
        let fut = async move {
            let written = send.shutdown().await;
            match read_response::<R::Response>(&mut recv, &addr, ReplyBody::Discard).await {
                Ok((result, _)) => result,
                Err(e) => Err(match written {
                    Err(w) => FsError::Unavailable(format!("{addr}: finishing request: {w}")),
                    Ok(()) => e,
                }),
            }
        };
        tokio::time::timeout_at(self.deadline, fut)
            .await
            .map_err(|_| timeout_error::<R>(&self.addr, self.timeout))?
    }

    /// A write failed: the remote may have answered early (an error) and closed its side; return
    /// its answer if there is one, else the write error. The call is dead afterwards.
    async fn fail_after_write_error(&mut self, w: std::io::Error) -> FsError {
        self.send = None;
        let e = match self.recv.take() {
            Some(mut recv) => {
                match tokio::time::timeout_at(
                    self.deadline,
                    read_response::<R::Response>(&mut recv, &self.addr, ReplyBody::Discard),
                )
                .await
                {
                    Ok(Ok((Err(remote), _))) => remote,
                    _ => FsError::Unavailable(format!("{}: sending request: {w}", self.addr)),
                }
            }
            None => FsError::Unavailable(format!("{}: sending request: {w}", self.addr)),
        };
        self.failed = Some(e.clone());
        e
    }
}
