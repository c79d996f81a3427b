//! Connecting a command to the cluster named by a cluster file.

use crate::cluster::ClusterFile;
use crate::config::Config;
use anyhow::Context;
use quarry_client::Client;
use quarry_transport::certs::NodeCert;
use quarry_transport::quic::QuicNode;

pub struct Connection {
    pub client: Client,
    _node: QuicNode,
}

/// Connect with the client settings of `cfg` ([client]).
pub async fn connect(file: &ClusterFile, cfg: &Config) -> anyhow::Result<Connection> {
    let cert = NodeCert::load(&file.certs, "client").with_context(|| {
        format!(
            "loading the client certificate from {}",
            file.certs.display()
        )
    })?;
    let node = QuicNode::client(&cert)?;
    let config = cfg.client_config(file.masters.clone());
    let client = Client::connect(node.transport(), config)
        .await
        .with_context(|| format!("connecting to the master at {}", file.masters.join(", ")))?;
    Ok(Connection {
        client,
        _node: node,
    })
}
