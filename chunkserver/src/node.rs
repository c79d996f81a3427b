//! A chunkserver process: a [`FileStore`] under the service, behind a QUIC endpoint, heartbeating
//! to the master. Used by `quarry chunkserver`, `quarry up` and the test harness alike.

use crate::service::{load_or_create_node_id, Chunkserver, ChunkserverConfig};
use crate::store::{ChunkStore, FileStore};
use quarry_proto::NodeId;
use quarry_transport::certs::NodeCert;
use quarry_transport::quic::QuicNode;
use quarry_transport::{Router, RpcClient};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub struct ChunkserverNode {
    server: Chunkserver,
    quic: QuicNode,
    heartbeats: tokio::task::JoinHandle<()>,
}

impl ChunkserverNode {
    pub async fn start(
        config: ChunkserverConfig,
        max_chunk_size: u64,
        cert: &NodeCert,
        bind: SocketAddr,
    ) -> anyhow::Result<ChunkserverNode> {
        Self::start_with(config, max_chunk_size, cert, bind, |_, _, _| {}).await
    }

    /// Like [`ChunkserverNode::start`], with more routes on the same endpoint (services hosted
    /// by the chunkserver process, such as a MapReduce worker, which reads the store directly).
    pub async fn start_with(
        config: ChunkserverConfig,
        max_chunk_size: u64,
        cert: &NodeCert,
        bind: SocketAddr,
        extra_routes: impl FnOnce(&mut Router, &Arc<dyn ChunkStore>, NodeId),
    ) -> anyhow::Result<ChunkserverNode> {
        std::fs::create_dir_all(&config.data_dir)?;
        let node = load_or_create_node_id(&config.data_dir)?;
        let store: Arc<dyn ChunkStore> = Arc::new(
            FileStore::open(&config.data_dir, max_chunk_size)
                .map_err(|e| anyhow::anyhow!("opening chunk store: {e}"))?,
        );
        let rpc_timeout = Duration::from_millis(config.rpc_timeout_ms);
        let server = Chunkserver::new(config, node, store);
        server.export_metrics(&cert.identity().name);
        let mut router = Router::new();
        server.routes(&mut router);
        extra_routes(&mut router, server.store(), node);
        let quic = QuicNode::serve(bind, cert, router).await?;
        let rpc = RpcClient::new(quic.transport()).with_timeout(rpc_timeout);
        let heartbeats = server.start(rpc, quic.local_addr().to_string());
        Ok(ChunkserverNode {
            server,
            quic,
            heartbeats,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.quic.local_addr()
    }

    pub fn node_id(&self) -> NodeId {
        self.server.node_id()
    }

    pub fn store(&self) -> &Arc<dyn ChunkStore> {
        self.server.store()
    }

    /// Commits answered as lost by fault injection (see `ChunkserverConfig`).
    pub fn lost_replies(&self) -> u64 {
        self.server.lost_replies()
    }

    pub fn scrub_stats(&self) -> crate::ScrubStats {
        self.server.scrub_stats()
    }

    /// An RPC client on this node's endpoint (calls carry the chunkserver's identity).
    pub fn rpc(&self) -> RpcClient {
        RpcClient::new(self.quic.transport())
    }

    /// Stop heartbeating and close the endpoint. Every acknowledged write is already on disk.
    pub async fn shutdown(self) {
        self.heartbeats.abort();
        self.quic.shutdown().await;
    }
}
