//! Connecting a command to the cluster named by a cluster file.

use crate::cluster::ClusterFile;
use anyhow::Context;
use quarry_client::{Client, ClientConfig};
use quarry_transport::certs::NodeCert;
use quarry_transport::quic::QuicNode;

pub struct Connection {
    pub client: Client,
    _node: QuicNode,
}

pub async fn connect(file: &ClusterFile) -> anyhow::Result<Connection> {
    let cert = NodeCert::load(&file.certs, "client").with_context(|| {
        format!(
            "loading the client certificate from {}",
            file.certs.display()
        )
    })?;
    let node = QuicNode::client(&cert)?;
    let mut config = ClientConfig::new(file.masters.clone());
    // Long enough to wait out a dead primary's lease (60 s by default) after it is declared dead.
    config.retry_deadline = std::time::Duration::from_secs(180);
    let client = Client::connect(node.transport(), config)
        .await
        .with_context(|| format!("connecting to the master at {}", file.masters.join(", ")))?;
    Ok(Connection {
        client,
        _node: node,
    })
}
