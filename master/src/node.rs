//! A master process: the service behind a QUIC endpoint. Used by `quarry master`, `quarry up`
//! and the test harness alike.

use crate::engine::MAX_GOAL;
use crate::raft::{RaftInbox, RaftNode};
use crate::service::{Master, MasterConfig};
use quarry_transport::certs::NodeCert;
use quarry_transport::quic::QuicNode;
use quarry_transport::{Router, RpcClient};
use std::net::SocketAddr;
use std::time::Duration;

pub struct MasterNode {
    master: Master,
    quic: QuicNode,
    /// Raft: the client endpoint this master dials the other masters from (with its master
    /// certificate); Raft RPCs are served on `quic`.
    raft_endpoint: Option<QuicNode>,
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
        let mut router = Router::new();
        let (master, raft_endpoint, initialize) = match config.raft.clone() {
            None => (Master::open(config)?, None, None),
            Some(rs) => {
                // Raft RPCs are served on this master's endpoint (so the address in a
                // NotLeader hint is the one clients use) and sent from a client endpoint
                // with the same certificate.
                let inbox = RaftInbox::new();
                inbox.route(&mut router);
                let endpoint = QuicNode::client(cert)?;
                let mut timing = rs.timing.clone();
                timing.chunk_size = config.chunk_size;
                timing.root_goal = config.replication.clamp(1, MAX_GOAL);
                let raft = RaftNode::start(
                    rs.id,
                    &config.data_dir.join("raft"),
                    rs.peers.clone(),
                    RpcClient::new(endpoint.transport()).with_timeout(rpc_timeout),
                    &inbox,
                    timing,
                )
                .await?;
                let master = Master::open_raft(config, raft);
                (master, Some(endpoint), rs.initialize.then_some(()))
            }
        };
        master.routes(&mut router);
        master.export_metrics(&cert.identity().name);
        extra_routes(&mut router);
        let quic = QuicNode::serve(bind, cert, router).await?;
        master.set_rpc(
            RpcClient::new(quic.transport()).with_timeout(rpc_timeout),
            quic.local_addr().to_string(),
        );
        if let (Some(()), Some(raft)) = (initialize, master.raft()) {
            raft.initialize()
                .await
                .map_err(|e| anyhow::anyhow!("initializing the Raft group: {e}"))?;
        }
        Ok(MasterNode {
            master,
            quic,
            raft_endpoint,
        })
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

    /// Clean shutdown: checkpoint (or stop Raft), then close the endpoints.
    pub async fn shutdown(self) {
        self.master.shutdown().await;
        self.quic.shutdown().await;
        if let Some(e) = &self.raft_endpoint {
            e.shutdown().await;
        }
    }

    /// Stop serving without a checkpoint (what a crash leaves, as far as one process can tell).
    pub async fn crash(self) {
        self.quic.shutdown().await;
        self.master.halt().await;
        if let Some(e) = &self.raft_endpoint {
            e.shutdown().await;
        }
    }
}
