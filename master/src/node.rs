//! A master process: the service behind a QUIC endpoint. Used by `quarry master`, `quarry up`
//! and the test harness alike.

use crate::service::{Master, MasterConfig};
use quarry_transport::certs::NodeCert;
use quarry_transport::quic::QuicNode;
use quarry_transport::{Router, RpcClient};
use std::net::SocketAddr;
use std::time::Duration;

pub struct MasterNode {
    master: Master,
    quic: QuicNode,
}

impl MasterNode {
    pub async fn start(
        config: MasterConfig,
        cert: &NodeCert,
        bind: SocketAddr,
    ) -> anyhow::Result<MasterNode> {
        Self::start_with(config, cert, bind, |_| {}).await
    }

    /// Like [`MasterNode::start`], with more routes on the same endpoint (services hosted by the
    /// master process, such as the MapReduce coordinator).
    pub async fn start_with(
        config: MasterConfig,
        cert: &NodeCert,
        bind: SocketAddr,
        extra_routes: impl FnOnce(&mut Router),
    ) -> anyhow::Result<MasterNode> {
        let rpc_timeout = Duration::from_millis(config.rpc_timeout_ms);
        let master = Master::open(config)?;
        let mut router = Router::new();
        master.routes(&mut router);
        extra_routes(&mut router);
        let quic = QuicNode::serve(bind, cert, router).await?;
        master.set_rpc(
            RpcClient::new(quic.transport()).with_timeout(rpc_timeout),
            quic.local_addr().to_string(),
        );
        Ok(MasterNode { master, quic })
    }

    pub fn addr(&self) -> SocketAddr {
        self.quic.local_addr()
    }

    pub fn master(&self) -> &Master {
        &self.master
    }

    /// An RPC client on this node's endpoint (calls carry the master's identity).
    pub fn rpc(&self) -> RpcClient {
        RpcClient::new(self.quic.transport())
    }

    /// Clean shutdown: checkpoint, then close the endpoint.
    pub async fn shutdown(self) {
        self.master.shutdown().await;
        self.quic.shutdown().await;
    }

    /// Stop serving without a checkpoint (what a crash leaves, as far as one process can tell).
    pub async fn crash(self) {
        self.quic.shutdown().await;
    }
}
