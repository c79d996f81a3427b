//! The QUIC transport: one quinn endpoint per node, mutual TLS against the cluster CA, LAN-tuned
//! flow control and MTU.
//!
//! A [`QuicNode`] serves a [`Router`] (every accepted bidirectional stream is one request, handled
//! on its own task, at most [`QuicSettings::max_streams_per_connection`] at once per connection)
//! and dials peers with the same certificate. Peers are authenticated by the CA: the server name
//! is always [`certs::SERVER_NAME`], and the caller's [`Identity`] is read from its certificate.
//! Dialed connections are cached per address and redialed once if found dead.
//!
//! This module must not know any RPC beyond the [`Router`]/[`Transport`] interfaces.

use crate::router::serve_stream;
use crate::{certs, BoxFuture, FsError, Identity, RecvHalf, Router, SendHalf, Transport};
use anyhow::{anyhow, Context};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Connection, Endpoint, MtuDiscoveryConfig, TransportConfig, VarInt};
use rustls::pki_types::CertificateDer;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// ALPN protocol name.
pub const ALPN: &[u8] = b"quarry/1";

/// Datagrams quinn puts in one segmentation-offload (GSO) send at most (quinn 0.11's
/// `MAX_TRANSMIT_SEGMENTS`).
pub const GSO_SEGMENTS: usize = 10;

/// Bytes one GSO send may carry: a UDP datagram's 64 KiB less headers (65,507 over IPv4),
/// rounded down.
pub const GSO_MAX_BYTES: usize = 65_000;

/// What a connection's path looks like from this end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathReport {
    /// Largest UDP payload currently sent.
    pub mtu: u16,
    /// Packets quinn declared lost (resent after loss detection).
    pub lost_packets: u64,
    /// Times quinn concluded large packets vanish and fell back to the minimum MTU.
    pub black_holes: u64,
}

/// LAN-tuned QUIC settings. Default::default() gives them.
#[derive(Clone, Debug)]
pub struct QuicSettings {
    /// Per-stream receive window (bytes).
    pub stream_receive_window: u64,
    /// Per-connection receive window (bytes).
    pub receive_window: u64,
    /// Per-connection send window (bytes).
    pub send_window: u64,
    /// Concurrent bidirectional streams a peer may open.
    pub max_concurrent_bidi_streams: u32,
    /// Requests handled at once per connection; further streams wait.
    pub max_streams_per_connection: usize,
    pub keep_alive: Duration,
    pub idle_timeout: Duration,
    /// RTT assumed before the first sample (quinn's default, 333 ms, suits the internet; lost
    /// handshake packets are resent after about three times this).
    pub initial_rtt: Duration,
    /// How long dialing (handshake included) may take.
    pub connect_timeout: Duration,
    /// Initial maximum UDP payload before MTU discovery, for non-loopback peers.
    pub initial_mtu: u16,
    /// Initial maximum UDP payload towards loopback peers (loopback's MTU is 64 KiB).
    pub loopback_initial_mtu: u16,
    /// UDP payload every path is assumed to carry.
    pub min_mtu: u16,
    /// Upper bound of MTU discovery towards non-loopback peers. Kept at or below
    /// [`GSO_MAX_BYTES`] / [`GSO_SEGMENTS`] so that one segmentation-offload send of quinn's
    /// batch fits the kernel's 64 KiB limit (a larger one fails with `EMSGSIZE`, which quinn
    /// takes for a lost MTU probe: the batch is lost and the path falls back to 1200 bytes).
    pub mtu_discovery_upper_bound: u16,
    /// Largest UDP payload this endpoint accepts.
    pub max_udp_payload_size: u16,
    /// Dial-only endpoints ([`QuicNode::client`]) bind 127.0.0.1:0 instead of 0.0.0.0:0.
    pub loopback: bool,
    /// Receive and send buffer asked of the kernel for each endpoint's UDP socket. The default
    /// (`net.core.rmem_default`, 208 KiB on Linux) holds three 64 KiB loopback datagrams: one
    /// 256 KiB read reply overflowed it, and every lost datagram stalled its request until loss
    /// recovery resent it (30 to 110 ms seen). Root gets it whole (`SO_RCVBUFFORCE`), others up
    /// to `net.core.rmem_max` / `wmem_max`.
    pub socket_buffer_bytes: usize,
}

impl Default for QuicSettings {
    fn default() -> Self {
        QuicSettings {
            stream_receive_window: 16 << 20,
            receive_window: 64 << 20,
            send_window: 64 << 20,
            max_concurrent_bidi_streams: 1024,
            max_streams_per_connection: 256,
            keep_alive: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            initial_rtt: Duration::from_millis(50),
            // Ethernet's 1500-byte MTU minus IPv6 and UDP headers.
            initial_mtu: 1452,
            loopback_initial_mtu: 65_000,
            min_mtu: 1200,
            mtu_discovery_upper_bound: (GSO_MAX_BYTES / GSO_SEGMENTS) as u16,
            max_udp_payload_size: 65_527,
            loopback: false,
            socket_buffer_bytes: 8 << 20,
        }
    }
}

impl QuicSettings {
    fn transport_config(&self, loopback: bool) -> anyhow::Result<TransportConfig> {
        let mut t = TransportConfig::default();
        let initial_mtu = if loopback {
            self.loopback_initial_mtu
        } else {
            self.initial_mtu
        };
        let varint = |v: u64, what: &str| {
            VarInt::from_u64(v).map_err(|_| anyhow!("{what} of {v} is too large"))
        };
        t.stream_receive_window(varint(self.stream_receive_window, "stream receive window")?)
            .receive_window(varint(self.receive_window, "receive window")?)
            .send_window(self.send_window)
            .max_concurrent_bidi_streams(VarInt::from_u32(self.max_concurrent_bidi_streams))
            .max_concurrent_uni_streams(VarInt::from_u32(0))
            .keep_alive_interval(Some(self.keep_alive))
            .max_idle_timeout(Some(
                self.idle_timeout
                    .try_into()
                    .context("idle timeout out of range")?,
            ))
            .initial_rtt(self.initial_rtt)
            .min_mtu(self.min_mtu)
            .initial_mtu(initial_mtu);
        // The initial congestion window must hold several full-size packets, or nothing is sent
        // until the first loss (quinn's default is ten 1200-byte packets).
        let mut cubic = quinn::congestion::CubicConfig::default();
        cubic.initial_window((10 * initial_mtu as u64).max(14_720));
        t.congestion_controller_factory(Arc::new(cubic));
        let upper_bound = self.mtu_discovery_upper_bound.max(initial_mtu);
        let mut mtu = MtuDiscoveryConfig::default();
        mtu.upper_bound(upper_bound);
        t.mtu_discovery_config(Some(mtu));
        // Loopback's 64 KiB datagrams go one per send (a GSO batch of them would exceed the
        // kernel's limit and be dropped whole, see `mtu_discovery_upper_bound`); LAN-sized ones
        // go in batches.
        t.enable_segmentation_offload(GSO_SEGMENTS * upper_bound as usize <= GSO_MAX_BYTES);
        Ok(t)
    }
}

/// A QUIC endpoint bound at `bind` that serves `router` and also dials peers (with the same cert
/// as client certificate). Both directions require a cert signed by cert.ca_pem.
///
/// Dropping the node stops serving (accepting and in-flight requests); transports obtained from
/// [`QuicNode::transport`] can still dial until [`QuicNode::shutdown`] closes the endpoint.
pub struct QuicNode {
    endpoint: Endpoint,
    transport: Arc<QuicTransport>,
    server: Option<tokio::task::JoinHandle<()>>,
    local_addr: SocketAddr,
}

impl std::fmt::Debug for QuicNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicNode")
            .field("identity", &self.transport.identity)
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

impl QuicNode {
    pub async fn serve(
        bind: SocketAddr,
        cert: &certs::NodeCert,
        router: Router,
    ) -> anyhow::Result<QuicNode> {
        QuicNode::serve_with(bind, cert, router, QuicSettings::default()).await
    }

    /// [`QuicNode::serve`] with explicit settings.
    pub async fn serve_with(
        bind: SocketAddr,
        cert: &certs::NodeCert,
        router: Router,
        settings: QuicSettings,
    ) -> anyhow::Result<QuicNode> {
        let tls = Tls::new(cert)?;
        let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(tls.server_config()?));
        server_config.transport_config(Arc::new(
            settings.transport_config(bind.ip().is_loopback())?,
        ));
        let endpoint = make_endpoint(bind, Some(server_config), &settings)?;
        let mut node = QuicNode::with_endpoint(endpoint, cert, &tls, settings.clone())?;
        let endpoint = node.endpoint.clone();
        let mut router = router;
        router.bind_metrics(&cert.identity().name);
        let router = Arc::new(router);
        node.server = Some(tokio::spawn(accept_loop(
            endpoint,
            router,
            settings.max_streams_per_connection,
        )));
        Ok(node)
    }

    /// Dial-only endpoint on 0.0.0.0:0 (or 127.0.0.1:0 if `loopback`), for clients.
    pub fn client(cert: &certs::NodeCert) -> anyhow::Result<QuicNode> {
        QuicNode::client_with(cert, QuicSettings::default())
    }

    /// [`QuicNode::client`] with explicit settings.
    pub fn client_with(cert: &certs::NodeCert, settings: QuicSettings) -> anyhow::Result<QuicNode> {
        let ip = if settings.loopback {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        };
        let tls = Tls::new(cert)?;
        let endpoint = make_endpoint(SocketAddr::new(ip, 0), None, &settings)?;
        QuicNode::with_endpoint(endpoint, cert, &tls, settings)
    }

    fn with_endpoint(
        endpoint: Endpoint,
        cert: &certs::NodeCert,
        tls: &Tls,
        settings: QuicSettings,
    ) -> anyhow::Result<QuicNode> {
        let client_crypto = Arc::new(tls.client_config()?);
        let mut lan = quinn::ClientConfig::new(client_crypto.clone());
        lan.transport_config(Arc::new(settings.transport_config(false)?));
        let mut loopback = quinn::ClientConfig::new(client_crypto);
        loopback.transport_config(Arc::new(settings.transport_config(true)?));
        let local_addr = endpoint.local_addr().context("reading the local address")?;
        let transport = Arc::new(QuicTransport {
            endpoint: endpoint.clone(),
            identity: cert.identity(),
            lan,
            loopback,
            connect_timeout: settings.connect_timeout,
            conns: Mutex::new(HashMap::new()),
        });
        Ok(QuicNode {
            endpoint,
            transport,
            server: None,
            local_addr,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn transport(&self) -> Arc<dyn Transport> {
        self.transport.clone()
    }

    /// The state of the path of this node's cached connection to `addr`, if it has one.
    pub fn path_report(&self, addr: &str) -> Option<PathReport> {
        let slot = self
            .transport
            .conns
            .lock()
            .expect("poisoned")
            .get(addr)?
            .clone();
        let cached = slot.try_lock().ok()?;
        let stats = cached.as_ref()?.stats().path;
        Some(PathReport {
            mtu: stats.current_mtu,
            lost_packets: stats.lost_packets,
            black_holes: stats.black_holes_detected,
        })
    }

    /// This node's identity.
    pub fn identity(&self) -> &Identity {
        &self.transport.identity
    }

    /// Stop accepting, close connections, wait for the endpoint to go idle (bounded, 2 s).
    pub async fn shutdown(&self) {
        if let Some(server) = &self.server {
            server.abort();
        }
        self.endpoint.set_server_config(None);
        self.endpoint
            .close(VarInt::from_u32(0), b"node shutting down");
        self.transport.conns.lock().expect("poisoned").clear();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }
}

impl Drop for QuicNode {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
            self.endpoint.set_server_config(None);
        }
    }
}

fn make_endpoint(
    bind: SocketAddr,
    server_config: Option<quinn::ServerConfig>,
    settings: &QuicSettings,
) -> anyhow::Result<Endpoint> {
    let runtime = quinn::default_runtime()
        .ok_or_else(|| anyhow!("QUIC endpoints must be created inside a tokio runtime"))?;
    let socket =
        std::net::UdpSocket::bind(bind).with_context(|| format!("binding UDP socket {bind}"))?;
    size_socket_buffers(&socket, settings.socket_buffer_bytes);
    let mut config = quinn::EndpointConfig::default();
    config
        .max_udp_payload_size(settings.max_udp_payload_size)
        .map_err(|e| anyhow!("max_udp_payload_size: {e}"))?;
    Endpoint::new(config, server_config, socket, runtime).context("creating the QUIC endpoint")
}

/// Ask for `bytes` of receive and send buffer on `socket`: forced past the system maximum where
/// permitted, else as much as the maximum allows. Best effort: what the kernel granted is logged.
/// (`setsockopt` has no safe wrapper among the dependencies; socket2's lacks the forced sizes.)
#[allow(unsafe_code)]
fn size_socket_buffers(socket: &std::net::UdpSocket, bytes: usize) {
    use std::os::fd::AsRawFd;
    if bytes == 0 {
        return;
    }
    let fd = socket.as_raw_fd();
    let want = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    let set = |opt: libc::c_int| {
        // SAFETY: `fd` is an open socket owned by `socket` for the whole call, and the option
        // value is a c_int whose size is passed with it.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&want as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            ) == 0
        }
    };
    let get = |opt: libc::c_int| {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: as above; `v` and `len` outlive the call and `len` is `v`'s size.
        let ok = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            ) == 0
        };
        if ok {
            v
        } else {
            -1
        }
    };
    for (force, plain, what) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, "receive"),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, "send"),
    ] {
        if !set(force) {
            set(plain);
        }
        // Linux reports twice the size asked (the doubling covers its bookkeeping).
        tracing::debug!(asked = bytes, granted = get(plain), "UDP {what} buffer");
    }
}

/// The certificate material as rustls wants it.
struct Tls {
    chain: Vec<CertificateDer<'static>>,
    key_pem: String,
    roots: Arc<rustls::RootCertStore>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl Tls {
    fn new(cert: &certs::NodeCert) -> anyhow::Result<Tls> {
        let chain = certs::certs_der(&cert.cert_pem).context("node certificate")?;
        certs::key_der(&cert.key_pem).context("node key")?;
        let mut roots = rustls::RootCertStore::empty();
        for ca in certs::certs_der(&cert.ca_pem).context("CA certificate")? {
            roots.add(ca).context("adding the CA certificate")?;
        }
        Ok(Tls {
            chain,
            key_pem: cert.key_pem.clone(),
            roots: Arc::new(roots),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        })
    }

    fn server_config(&self) -> anyhow::Result<QuicServerConfig> {
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            self.roots.clone(),
            self.provider.clone(),
        )
        .build()
        .context("building the client certificate verifier")?;
        let mut tls = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), certs::key_der(&self.key_pem)?)
            .context("server certificate")?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        QuicServerConfig::try_from(tls).map_err(|e| anyhow!("QUIC server config: {e}"))
    }

    fn client_config(&self) -> anyhow::Result<QuicClientConfig> {
        let mut tls = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(self.roots.clone())
            .with_client_auth_cert(self.chain.clone(), certs::key_der(&self.key_pem)?)
            .context("client certificate")?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        QuicClientConfig::try_from(tls).map_err(|e| anyhow!("QUIC client config: {e}"))
    }
}

/// The peer's identity from its certificate, after the handshake.
fn peer_identity(conn: &Connection) -> anyhow::Result<Identity> {
    let any = conn
        .peer_identity()
        .ok_or_else(|| anyhow!("peer presented no certificate"))?;
    let chain = any
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| anyhow!("unexpected peer identity type"))?;
    let leaf = chain
        .first()
        .ok_or_else(|| anyhow!("empty peer certificate chain"))?;
    certs::identity_of(leaf)
}

async fn accept_loop(endpoint: Endpoint, router: Arc<Router>, per_connection: usize) {
    let mut conns = JoinSet::new();
    while let Some(incoming) = endpoint.accept().await {
        while conns.try_join_next().is_some() {}
        let router = router.clone();
        conns.spawn(async move {
            let remote = incoming.remote_address();
            let conn = match incoming.await {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::debug!(%remote, error = %e, "QUIC handshake failed");
                    return;
                }
            };
            let peer = match peer_identity(&conn) {
                Ok(peer) => peer,
                Err(e) => {
                    tracing::warn!(%remote, error = %e, "refusing peer without identity");
                    conn.close(VarInt::from_u32(1), b"no identity in certificate");
                    return;
                }
            };
            serve_connection(conn, peer, router, per_connection).await;
        });
    }
    // Let in-flight requests finish unless the node itself is dropped (which aborts this task).
    while conns.join_next().await.is_some() {}
}

async fn serve_connection(conn: Connection, peer: Identity, router: Arc<Router>, limit: usize) {
    let permits = Arc::new(Semaphore::new(limit.max(1)));
    let mut streams = JoinSet::new();
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = conn.closed() => break,
        };
        let (send, recv) = match conn.accept_bi().await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "connection ended");
                break;
            }
        };
        while streams.try_join_next().is_some() {}
        let router = router.clone();
        let peer = peer.clone();
        streams.spawn(async move {
            serve_stream(router, peer, send, Box::new(recv) as RecvHalf).await;
            drop(permit);
        });
    }
    while streams.join_next().await.is_some() {}
}

/// One cached connection per address; the async mutex serializes dialing.
type Slot = Arc<tokio::sync::Mutex<Option<Connection>>>;

struct QuicTransport {
    endpoint: Endpoint,
    identity: Identity,
    lan: quinn::ClientConfig,
    loopback: quinn::ClientConfig,
    connect_timeout: Duration,
    conns: Mutex<HashMap<String, Slot>>,
}

impl QuicTransport {
    async fn open_stream(&self, addr: &str) -> Result<(SendHalf, RecvHalf), String> {
        let slot = self
            .conns
            .lock()
            .expect("poisoned")
            .entry(addr.to_string())
            .or_default()
            .clone();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (conn, fresh) = {
                let mut cached = slot.lock().await;
                match &*cached {
                    Some(c) if c.close_reason().is_none() => (c.clone(), false),
                    _ => {
                        *cached = None;
                        let c = self.dial(addr).await?;
                        *cached = Some(c.clone());
                        (c, true)
                    }
                }
            };
            match conn.open_bi().await {
                Ok((send, recv)) => return Ok((Box::new(send), Box::new(recv))),
                Err(e) => {
                    let mut cached = slot.lock().await;
                    if cached.as_ref().map(|c| c.stable_id()) == Some(conn.stable_id()) {
                        *cached = None;
                    }
                    if fresh || attempt >= 2 {
                        return Err(e.to_string());
                    }
                }
            }
        }
    }

    async fn dial(&self, addr: &str) -> Result<Connection, String> {
        let target = self.resolve(addr).await?;
        let config = if target.ip().is_loopback() {
            self.loopback.clone()
        } else {
            self.lan.clone()
        };
        let connecting = self
            .endpoint
            .connect_with(config, target, certs::SERVER_NAME)
            .map_err(|e| format!("connect: {e}"))?;
        match tokio::time::timeout(self.connect_timeout, connecting).await {
            Err(_) => Err(format!(
                "connect timed out after {} ms",
                self.connect_timeout.as_millis()
            )),
            Ok(Err(e)) => Err(format!("connect: {e}")),
            Ok(Ok(conn)) => Ok(conn),
        }
    }

    async fn resolve(&self, addr: &str) -> Result<SocketAddr, String> {
        let local_v4 = self
            .endpoint
            .local_addr()
            .map(|a| a.is_ipv4())
            .unwrap_or(true);
        if let Ok(a) = addr.parse::<SocketAddr>() {
            return Ok(a);
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(addr)
            .await
            .map_err(|e| format!("resolving: {e}"))?
            .collect();
        addrs
            .iter()
            .find(|a| a.is_ipv4() == local_v4)
            .or(addrs.first())
            .copied()
            .ok_or_else(|| "resolves to no address".to_string())
    }
}

impl Transport for QuicTransport {
    fn open(&self, addr: &str) -> BoxFuture<'_, Result<(SendHalf, RecvHalf), FsError>> {
        let addr = addr.to_string();
        Box::pin(async move {
            self.open_stream(&addr)
                .await
                .map_err(|e| FsError::Unavailable(format!("{addr}: {e}")))
        })
    }

    fn identity(&self) -> &Identity {
        &self.identity
    }

    fn forget(&self, addr: &str) {
        self.conns.lock().expect("poisoned").remove(addr);
    }
}
