//! The server side of RPC: a [`Router`] maps methods to typed handlers and serves request streams.
//!
//! `serve_stream` reads one request frame, checks the caller's role against [`Rpc::CALLERS`],
//! decodes the payload and checks its limits (`quarry_proto::decode_request`), runs the handler (catching panics) with the streamed [`Body`], and writes
//! the reply. Malformed input gets an `FsError::Protocol` reply where the stream still allows it;
//! nothing here panics on input. It works on any byte stream and must not depend on QUIC or on the
//! in-memory network.

use crate::{metrics, wire};
use crate::{BoxFuture, Identity, RecvHalf};
use bytes::{BufMut, Bytes, BytesMut};
use quarry_proto::frame::{FrameHeader, FrameKind};
use quarry_proto::{FsError, Method, Rpc};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWrite};

/// How long a peer may take to send a request's header and payload (not its body).
pub(crate) const REQUEST_HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest piece [`Body::next_chunk`] returns.
const PIECE: usize = 1 << 20;
/// Below this much free room in the read buffer, a fresh buffer is allocated.
const MIN_PIECE: usize = 64 << 10;

type ErasedHandler =
    dyn Fn(Identity, Bytes, Body) -> BoxFuture<'static, (Vec<u8>, Bytes)> + Send + Sync;

/// Maps each RPC method to its handler. Cheap to clone.
#[derive(Clone, Default)]
pub struct Router {
    handlers: HashMap<Method, Arc<ErasedHandler>>,
    /// Per method, the server-side metrics (made by [`Router::bind_metrics`]).
    stats: HashMap<Method, Arc<MethodStats>>,
}

/// The server-side metrics of one method on one node, kept so serving a request takes no lock.
struct MethodStats {
    latency: Arc<metrics::Histogram>,
    errors: Arc<metrics::Counter>,
    bytes_in: Arc<metrics::Counter>,
    bytes_out: Arc<metrics::Counter>,
}

impl MethodStats {
    fn new(node: &str, method: Method) -> MethodStats {
        let m = metrics::global();
        let method = format!("{method:?}");
        let labels = [("node", node), ("method", method.as_str())];
        MethodStats {
            latency: m.histogram(
                "quarry_rpc_server_seconds",
                "Time to serve an RPC, from its request header read to its reply written.",
                metrics::LATENCY_BUCKETS,
                &labels,
            ),
            errors: m.counter(
                "quarry_rpc_server_errors_total",
                "RPCs served whose reply was an error.",
                &labels,
            ),
            bytes_in: m.counter(
                "quarry_rpc_server_received_bytes_total",
                "Request bytes received (frame header, payload and body).",
                &labels,
            ),
            bytes_out: m.counter(
                "quarry_rpc_server_sent_bytes_total",
                "Reply bytes sent (frame header, payload and body).",
                &labels,
            ),
        }
    }
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("methods", &self.handlers.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// One decoded request, as a handler sees it.
pub struct Request<R> {
    /// The caller, from its certificate.
    pub peer: Identity,
    pub msg: R,
    pub body: Body,
}

/// A handler's answer: the result, and raw bytes sent as the reply's body (for reads).
pub struct Reply<T> {
    pub result: Result<T, FsError>,
    pub body: Bytes,
}

impl<T> Reply<T> {
    pub fn ok(v: T) -> Self {
        Reply {
            result: Ok(v),
            body: Bytes::new(),
        }
    }

    pub fn err(e: FsError) -> Self {
        Reply {
            result: Err(e),
            body: Bytes::new(),
        }
    }

    pub fn with_body(v: T, body: Bytes) -> Self {
        Reply {
            result: Ok(v),
            body,
        }
    }
}

impl<T> From<Result<T, FsError>> for Reply<T> {
    fn from(result: Result<T, FsError>) -> Self {
        Reply {
            result,
            body: Bytes::new(),
        }
    }
}

impl Router {
    pub fn new() -> Router {
        Router::default()
    }

    /// Register the handler for one RPC type. The router checks that the caller's role is in
    /// R::CALLERS (else replies FsError::PermissionDenied), decodes the payload and checks its
    /// limits (`quarry_proto::decode_request`; a failure is the error reply), runs the handler,
    /// and writes the reply. A handler panicking must not take the server down (reply Io error).
    /// Registering a second handler for the same method replaces the first.
    pub fn route<R, F, Fut>(&mut self, handler: F) -> &mut Self
    where
        R: Rpc,
        F: Fn(Request<R>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Reply<R::Response>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let erased = move |peer: Identity,
                           payload: Bytes,
                           body: Body|
              -> BoxFuture<'static, (Vec<u8>, Bytes)> {
            let handler = handler.clone();
            Box::pin(async move {
                let reply: Reply<R::Response> = if !R::CALLERS.contains(&peer.role) {
                    Reply::err(FsError::PermissionDenied(format!(
                        "{peer} may not call {:?}",
                        R::METHOD
                    )))
                } else {
                    match quarry_proto::decode_request::<R>(&payload) {
                        Err(e) => Reply::err(e),
                        Ok(msg) => {
                            let fut = async move { handler(Request { peer, msg, body }).await };
                            match CatchUnwind(Box::pin(fut)).await {
                                Ok(reply) => reply,
                                Err(panic) => Reply::err(FsError::Io(format!(
                                    "handler for {:?} panicked: {panic}",
                                    R::METHOD
                                ))),
                            }
                        }
                    }
                };
                let Reply { result, body } = reply;
                if let Err(e) = wire::check_body_len(body.len() as u64) {
                    return (wire::encode_result::<()>(&Err(e)), Bytes::new());
                }
                let body = if result.is_ok() { body } else { Bytes::new() };
                (wire::encode_result(&result), body)
            })
        };
        self.handlers.insert(R::METHOD, Arc::new(erased));
        self
    }

    /// Export per-method metrics (latency, errors, bytes) under the label `node` (this node's
    /// name) for every method routed so far. Servers call this once their routes are set.
    pub fn bind_metrics(&mut self, node: &str) {
        self.stats = self
            .handlers
            .keys()
            .map(|m| (*m, Arc::new(MethodStats::new(node, *m))))
            .collect();
    }

    /// Whether a handler is registered for `method`.
    pub fn serves(&self, method: Method) -> bool {
        self.handlers.contains_key(&method)
    }
}

/// Serve one request stream: read the request, run its handler, write the reply, finish.
pub(crate) async fn serve_stream<W>(
    router: Arc<Router>,
    peer: Identity,
    mut send: W,
    mut recv: RecvHalf,
) where
    W: AsyncWrite + Unpin + Send,
{
    let head =
        tokio::time::timeout(REQUEST_HEAD_TIMEOUT, read_request_head(&router, &mut recv)).await;
    let (method, handler, payload, body_len) = match head {
        Ok(Ok(Some(head))) => head,
        Ok(Ok(None)) => return, // the peer opened a stream and closed it without a request
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "bad request frame");
            drop(recv);
            wire::write_error(&mut send, e).await;
            return;
        }
        Err(_) => {
            drop(recv);
            wire::write_error(
                &mut send,
                FsError::Timeout("request header and payload not received in time".into()),
            )
            .await;
            return;
        }
    };
    let started = std::time::Instant::now();
    let stats = router.stats.get(&method).cloned();
    let bytes_in = quarry_proto::frame::HEADER_LEN as u64 + payload.len() as u64 + body_len;
    let body = Body::new(recv, body_len);
    let (payload, body) = handler(peer, payload, body).await;
    let is_err = payload.first() != Some(&0);
    if let Err(e) = wire::write_response(&mut send, &payload, &body).await {
        tracing::debug!(error = %e, "reply not delivered");
    }
    if let Some(s) = stats {
        s.latency.observe_since(started);
        s.bytes_in.add(bytes_in);
        s.bytes_out
            .add(quarry_proto::frame::HEADER_LEN as u64 + payload.len() as u64 + body.len() as u64);
        if is_err {
            s.errors.inc();
        }
    }
}

type Head = (Method, Arc<ErasedHandler>, Bytes, u64);

async fn read_request_head(router: &Router, recv: &mut RecvHalf) -> Result<Option<Head>, FsError> {
    let Some(raw) = wire::read_header(recv).await? else {
        return Ok(None);
    };
    let header = FrameHeader::decode(&raw)?;
    let method = match (header.kind, header.method) {
        (FrameKind::Request, Some(m)) => m,
        _ => return Err(FsError::Protocol("expected a request frame".into())),
    };
    let handler = router
        .handlers
        .get(&method)
        .cloned()
        .ok_or_else(|| FsError::Protocol(format!("method {method:?} is not served here")))?;
    let payload = match wire::read_exact_bytes(recv, header.payload_len as usize)
        .await
        .map_err(|e| FsError::Unavailable(format!("reading request payload: {e}")))?
    {
        Ok(p) => p,
        Err(got) => {
            return Err(FsError::Protocol(format!(
                "stream ended inside the payload ({got} of {} bytes)",
                header.payload_len
            )))
        }
    };
    Ok(Some((method, handler, payload, header.body_len)))
}

/// The request's streamed body (raw bytes after the payload; body_len from the frame header).
pub struct Body {
    len: u64,
    remaining: u64,
    reader: Option<RecvHalf>,
    buf: BytesMut,
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Body")
            .field("len", &self.len)
            .field("remaining", &self.remaining)
            .finish()
    }
}

impl Body {
    pub(crate) fn new(reader: RecvHalf, len: u64) -> Body {
        Body {
            len,
            remaining: len,
            reader: Some(reader),
            buf: BytesMut::new(),
        }
    }

    /// An empty body (for calling handlers directly in tests).
    pub fn empty() -> Body {
        Body {
            len: 0,
            remaining: 0,
            reader: None,
            buf: BytesMut::new(),
        }
    }

    /// A body that yields `bytes` (for calling handlers directly in tests).
    pub fn from_bytes(bytes: Bytes) -> Body {
        let len = bytes.len() as u64;
        Body::new(Box::new(std::io::Cursor::new(bytes)), len)
    }

    /// Declared length.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Next piece as it arrives (pieces of any size up to ~1 MiB); None after exactly len bytes;
    /// error if the stream ends early.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, FsError> {
        if self.remaining == 0 {
            return Ok(None);
        }
        let reader = self
            .reader
            .as_mut()
            .ok_or_else(|| FsError::Protocol("request body already failed".into()))?;
        let want = self.remaining.min(PIECE as u64) as usize;
        if self.buf.capacity() < want.min(MIN_PIECE) {
            self.buf = BytesMut::with_capacity(want.max(MIN_PIECE.min(self.remaining as usize)));
        }
        let limit = want.min(self.buf.capacity());
        let n = match reader.read_buf(&mut (&mut self.buf).limit(limit)).await {
            Ok(n) => n,
            Err(e) => {
                self.reader = None;
                return Err(FsError::Unavailable(format!("reading request body: {e}")));
            }
        };
        if n == 0 {
            self.reader = None;
            return Err(self.early_end());
        }
        self.remaining -= n as u64;
        Ok(Some(self.buf.split().freeze()))
    }

    /// Whole body in one buffer, grown as the bytes arrive (never reserved from `len` alone).
    /// After some [`Body::next_chunk`] calls, the rest of it.
    pub async fn read_all(mut self) -> Result<Bytes, FsError> {
        if self.remaining == 0 {
            return Ok(Bytes::new());
        }
        let Some(mut reader) = self.reader.take() else {
            return Err(FsError::Protocol("request body already failed".into()));
        };
        let want = self.remaining as usize;
        match wire::read_exact_bytes(&mut reader, want).await {
            Ok(Ok(b)) => Ok(b),
            Ok(Err(got)) => {
                self.remaining -= got as u64;
                Err(self.early_end())
            }
            Err(e) => Err(FsError::Unavailable(format!("reading request body: {e}"))),
        }
    }

    fn early_end(&self) -> FsError {
        FsError::Protocol(format!(
            "request body ended after {} of {} bytes",
            self.len - self.remaining,
            self.len
        ))
    }
}

/// Turns a panic while polling the inner future into an error.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.get_mut().0;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.as_mut().poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(panic) => {
                let msg = if let Some(s) = panic.downcast_ref::<&str>() {
                    (*s).to_string()
                } else if let Some(s) = panic.downcast_ref::<String>() {
                    s.clone()
                } else {
                    "unknown panic".to_string()
                };
                Poll::Ready(Err(msg))
            }
        }
    }
}
