//! `quarry-transport`: typed RPC and bulk-data streams between Quarry nodes.
//!
//! One RPC is one bidirectional byte stream: a request frame ([`quarry_proto::frame::FrameHeader`],
//! postcard payload, streamed body) answered by a response frame of the same shape. The
//! [`Transport`] trait opens such streams; it is implemented over QUIC with mutual TLS
//! ([`quic::QuicNode`]) and by an in-memory network with fault injection for tests
//! ([`mem::MemNetwork`]). [`Router`] serves streams, [`RpcClient`] makes calls; both work the same
//! over either transport.
//!
//! This crate knows the wire protocol (`quarry-proto`) and nothing of masters, chunkservers or
//! clients: it must never depend on the crates that use it.

pub mod certs;
mod client;
pub mod mem;
pub mod metrics;
pub mod quic;
mod router;
mod wire;

pub use client::{OutgoingCall, RpcClient};
pub use quarry_proto::{FsError, Role};
pub use router::{Body, Reply, Request, Router};

/// A boxed, sendable future (what [`Transport::open`] returns).
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
/// The sending half of a stream.
pub type SendHalf = Box<dyn tokio::io::AsyncWrite + Send + Unpin>;
/// The receiving half of a stream.
pub type RecvHalf = Box<dyn tokio::io::AsyncRead + Send + Unpin>;

/// Who a peer is: the role and name written in its certificate.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    pub role: Role,
    pub name: String,
}

impl Identity {
    pub fn new(role: Role, name: impl Into<String>) -> Identity {
        Identity {
            role,
            name: name.into(),
        }
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.role, self.name)
    }
}

/// Opens bidirectional byte streams to peers. Implemented by QUIC and by the in-memory network.
pub trait Transport: Send + Sync + 'static {
    /// Open a new bidirectional stream to `addr` ("host:port" for QUIC), reusing a cached connection
    /// (reconnecting transparently if it died). Errors are FsError::Unavailable("addr: reason").
    fn open(&self, addr: &str) -> BoxFuture<'_, Result<(SendHalf, RecvHalf), FsError>>;
    /// This node's identity (role and name from its certificate).
    fn identity(&self) -> &Identity;
    /// A call to `addr` timed out: stop reusing the cached connection (the peer may have died
    /// and come back at the same address, which QUIC cannot tell until its idle timeout). Calls
    /// in flight on it go on; the next `open` dials afresh.
    fn forget(&self, _addr: &str) {}
}
