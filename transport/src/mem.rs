//! An in-memory network for tests: the same [`Router`] and [`crate::RpcClient`] as over QUIC, with
//! streams made of `tokio::io::duplex` pairs and seeded fault injection (partitions, stopped
//! servers, dropped requests and replies, delays).
//!
//! Nodes are named by address strings; there is no TLS, the identity given to
//! [`MemNetwork::serve`]/[`MemNetwork::client`] is what the other side sees. This module must not
//! depend on QUIC or on certificates.

use crate::router::serve_stream;
use crate::{BoxFuture, FsError, Identity, RecvHalf, Router, SendHalf, Transport};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncWrite, DuplexStream};
use tokio::sync::{watch, Semaphore};

/// Buffer of each direction of an in-memory stream.
const PIPE_BYTES: usize = 1 << 20;
/// Requests one in-memory server handles at once.
const MAX_IN_FLIGHT: usize = 1024;

/// In-memory network for tests: streams are tokio::io::duplex pairs; same Router and RpcClient.
#[derive(Clone)]
pub struct MemNetwork {
    inner: Arc<Mutex<State>>,
}

impl std::fmt::Debug for MemNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.inner.lock().expect("poisoned");
        f.debug_struct("MemNetwork")
            .field("servers", &state.servers.keys().collect::<Vec<_>>())
            .field("partitions", &state.partitions.len())
            .finish()
    }
}

struct State {
    rng: StdRng,
    servers: HashMap<String, Server>,
    partitions: Vec<(HashSet<String>, HashSet<String>)>,
    request_drop: f64,
    reply_drop: f64,
    delay: (Duration, Duration),
    /// Long reordering: with this probability a request reaches its server only after a long
    /// hold drawn from the range, even if the caller gave up on it meanwhile.
    long_hold: (f64, Duration, Duration),
}

struct Server {
    router: Arc<Router>,
    permits: Arc<Semaphore>,
    /// Set to true (or dropped) when the server stops: its in-flight streams die.
    stopped: watch::Sender<bool>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stopped.send(true);
    }
}

impl State {
    fn partitioned(&self, a: &str, b: &str) -> bool {
        self.partitions
            .iter()
            .any(|(x, y)| (x.contains(a) && y.contains(b)) || (x.contains(b) && y.contains(a)))
    }

    /// Why a stream from `from` to `to` cannot be opened now, if it cannot.
    fn refuse(&self, from: &str, to: &str) -> Option<String> {
        if self.partitioned(from, to) {
            return Some(format!("{to}: network partition between {from} and {to}"));
        }
        if !self.servers.contains_key(to) {
            return Some(format!("{to}: connection refused (no server)"));
        }
        None
    }
}

impl MemNetwork {
    /// A network with no faults; `seed` drives every random drop and delay decision.
    pub fn new(seed: u64) -> MemNetwork {
        MemNetwork {
            inner: Arc::new(Mutex::new(State {
                rng: StdRng::seed_from_u64(seed),
                servers: HashMap::new(),
                partitions: Vec::new(),
                request_drop: 0.0,
                reply_drop: 0.0,
                delay: (Duration::ZERO, Duration::ZERO),
                long_hold: (0.0, Duration::ZERO, Duration::ZERO),
            })),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.lock().expect("poisoned")
    }

    /// Serve `router` at `addr` (replacing any server there); the returned transport dials from
    /// `addr` with `identity`.
    pub fn serve(&self, addr: &str, identity: Identity, router: Router) -> Arc<dyn Transport> {
        let server = Server {
            router: Arc::new(router),
            permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            stopped: watch::channel(false).0,
        };
        self.state().servers.insert(addr.to_string(), server);
        self.client(addr, identity)
    }

    /// A dial-only transport at `addr` (the name partitions refer to).
    pub fn client(&self, addr: &str, identity: Identity) -> Arc<dyn Transport> {
        Arc::new(MemTransport {
            net: self.clone(),
            addr: addr.to_string(),
            identity,
        })
    }

    /// The server at addr is gone: opens fail, and its in-flight requests die.
    pub fn stop(&self, addr: &str) {
        let removed = self.state().servers.remove(addr);
        drop(removed);
    }

    /// Whether a server is registered at `addr`.
    pub fn is_serving(&self, addr: &str) -> bool {
        self.state().servers.contains_key(addr)
    }

    /// No stream between the groups, either way.
    pub fn partition(&self, a: &[&str], b: &[&str]) {
        let set = |g: &[&str]| g.iter().map(|s| s.to_string()).collect::<HashSet<_>>();
        self.state().partitions.push((set(a), set(b)));
    }

    /// Remove partitions.
    pub fn heal(&self) {
        self.state().partitions.clear();
    }

    /// open() fails / stream dies before reaching the server.
    pub fn set_request_drop(&self, probability: f64) {
        self.state().request_drop = probability.clamp(0.0, 1.0);
    }

    /// Server handles it but the reply is lost (caller times out or gets Unavailable).
    pub fn set_reply_drop(&self, probability: f64) {
        self.state().reply_drop = probability.clamp(0.0, 1.0);
    }

    /// Delay added to each open, uniformly drawn from [min, max].
    pub fn set_delay(&self, min: Duration, max: Duration) {
        self.state().delay = (min.min(max), min.max(max));
    }

    /// Long reordering (the classic lab's "long reordering"): with `probability`, a request is
    /// held for a time drawn uniformly from [min, max] before its server sees it, so it arrives
    /// after requests sent later, and possibly after its caller has timed out and moved on.
    pub fn set_long_reordering(&self, probability: f64, min: Duration, max: Duration) {
        self.state().long_hold = (probability.clamp(0.0, 1.0), min.min(max), min.max(max));
    }

    async fn open(
        &self,
        from: &str,
        identity: &Identity,
        to: &str,
    ) -> Result<(SendHalf, RecvHalf), FsError> {
        let (delay, drop_request, die_in_flight, drop_reply, hold) = {
            let mut s = self.state();
            if let Some(why) = s.refuse(from, to) {
                return Err(FsError::Unavailable(why));
            }
            let (min, max) = s.delay;
            let delay = if max > min {
                let nanos = s
                    .rng
                    .random_range(min.as_nanos() as u64..=max.as_nanos() as u64);
                Duration::from_nanos(nanos)
            } else {
                min
            };
            let (p_request, p_reply) = (s.request_drop, s.reply_drop);
            let drop_request = p_request > 0.0 && s.rng.random_bool(p_request);
            let die_in_flight = s.rng.random_bool(0.5);
            let drop_reply = p_reply > 0.0 && s.rng.random_bool(p_reply);
            let (p_hold, hold_min, hold_max) = s.long_hold;
            let hold = if p_hold > 0.0 && s.rng.random_bool(p_hold) {
                let nanos = s
                    .rng
                    .random_range(hold_min.as_nanos() as u64..=hold_max.as_nanos() as u64);
                Duration::from_nanos(nanos)
            } else {
                Duration::ZERO
            };
            (delay, drop_request, die_in_flight, drop_reply, hold)
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if drop_request && !die_in_flight {
            return Err(FsError::Unavailable(format!("{to}: request dropped")));
        }
        let (router, permits, mut stopped) = {
            let s = self.state();
            if let Some(why) = s.refuse(from, to) {
                return Err(FsError::Unavailable(why));
            }
            let server = &s.servers[to];
            (
                server.router.clone(),
                server.permits.clone(),
                server.stopped.subscribe(),
            )
        };
        let (client_send, server_recv) = tokio::io::duplex(PIPE_BYTES);
        let (server_send, client_recv) = tokio::io::duplex(PIPE_BYTES);
        if drop_request {
            // The stream dies before reaching the server.
            drop((server_recv, server_send));
        } else {
            let send: SendHalf = if drop_reply {
                Box::new(LostReply(Some(server_send)))
            } else {
                Box::new(server_send)
            };
            let peer = identity.clone();
            tokio::spawn(async move {
                let Ok(_permit) = permits.acquire_owned().await else {
                    return;
                };
                let serve = async {
                    if !hold.is_zero() {
                        tokio::time::sleep(hold).await;
                    }
                    serve_stream(router, peer, send, Box::new(server_recv)).await
                };
                tokio::select! {
                    _ = serve => {}
                    _ = stopped.wait_for(|s| *s) => {}
                }
            });
        }
        Ok((Box::new(client_send), Box::new(client_recv)))
    }
}

/// Swallows the reply; the stream ends (the caller reads end of stream) when the server finishes.
struct LostReply(Option<DuplexStream>);

impl AsyncWrite for LostReply {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.get_mut().0 = None;
        Poll::Ready(Ok(()))
    }
}

struct MemTransport {
    net: MemNetwork,
    addr: String,
    identity: Identity,
}

impl Transport for MemTransport {
    fn open(&self, addr: &str) -> BoxFuture<'_, Result<(SendHalf, RecvHalf), FsError>> {
        let addr = addr.to_string();
        Box::pin(async move { self.net.open(&self.addr, &self.identity, &addr).await })
    }

    fn identity(&self) -> &Identity {
        &self.identity
    }
}
