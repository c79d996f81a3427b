//! The Raft core over the production transport: three masters on QUIC with mutual TLS
//! (certificates from one cluster CA) elect a leader, replicate, fail over, and refuse Raft RPCs
//! from a caller whose certificate is not a master's.

use quarry_master::engine::Command;
use quarry_master::raft::{RaftConfig, RaftInbox, RaftNode, RaftRole};
use quarry_proto::raft::RaftVote;
use quarry_proto::{ClientId, FsError, InodeId, OpId, Role, Timestamp};
use quarry_transport::certs::ClusterCa;
use quarry_transport::quic::QuicNode;
use quarry_transport::{Router, RpcClient};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn mkdir(seq: u64) -> Command {
    Command::Mkdir {
        op: OpId {
            client: ClientId(3),
            seq,
        },
        parent: InodeId::ROOT,
        name: format!("q{seq}"),
        mode: 0o755,
        uid: 0,
        gid: 0,
        time: Timestamp::default(),
    }
}

async fn leader_among(nodes: &BTreeMap<u64, RaftNode>, within: Duration) -> u64 {
    let deadline = Instant::now() + within;
    loop {
        let ms: Vec<_> = nodes.values().map(|n| n.metrics()).collect();
        if let Some(l) = ms.iter().find(|m| m.role == RaftRole::Leader) {
            if ms
                .iter()
                .all(|m| m.leader_id == Some(l.id) && m.term == l.term)
            {
                return l.id;
            }
        }
        assert!(Instant::now() < deadline, "no leader: {ms:#?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_masters_over_quic_with_mtls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ClusterCa::generate("raft-quic-test").unwrap();
    let config = RaftConfig {
        chunk_size: 1 << 20,
        ..RaftConfig::default()
    };
    // Endpoints first (their ports are the masters' addresses), then the Raft nodes.
    let mut quic = BTreeMap::new();
    let mut inboxes = BTreeMap::new();
    for id in 1..=3u64 {
        let cert = ca.issue(Role::Master, &format!("master-{id}")).unwrap();
        let inbox = RaftInbox::new();
        let mut router = Router::new();
        inbox.route(&mut router);
        let node = QuicNode::serve("127.0.0.1:0".parse().unwrap(), &cert, router)
            .await
            .unwrap();
        quic.insert(id, node);
        inboxes.insert(id, inbox);
    }
    let peers: BTreeMap<u64, String> = quic
        .iter()
        .map(|(&id, q)| (id, q.local_addr().to_string()))
        .collect();
    let mut nodes = BTreeMap::new();
    for id in 1..=3u64 {
        let client = RpcClient::new(quic[&id].transport()).with_timeout(Duration::from_secs(2));
        let node = RaftNode::start(
            id,
            &dir.path().join(format!("m{id}")),
            peers.clone(),
            client,
            &inboxes[&id],
            config.clone(),
        )
        .await
        .unwrap();
        nodes.insert(id, node);
    }
    nodes[&1].initialize().await.unwrap();
    let leader = leader_among(&nodes, Duration::from_secs(10)).await;
    for seq in 1..=20 {
        nodes[&leader].write(mkdir(seq)).await.unwrap();
    }

    // Only masters may speak Raft: a client certificate is refused by the router.
    let client_cert = ca.issue(Role::Client, "intruder").unwrap();
    let intruder = QuicNode::client(&client_cert).unwrap();
    let r = RpcClient::new(intruder.transport())
        .with_timeout(Duration::from_secs(2))
        .call(&peers[&leader], &RaftVote { data: vec![] })
        .await;
    assert!(matches!(r, Err(FsError::PermissionDenied(_))), "{r:?}");

    // Kill the leader's endpoint and Raft: the other two take over and keep every write.
    let old = nodes.remove(&leader).unwrap();
    quic.remove(&leader).unwrap().shutdown().await;
    old.shutdown().await.unwrap();
    let new = leader_among(&nodes, Duration::from_secs(10)).await;
    assert_ne!(new, leader);
    nodes[&new].write(mkdir(21)).await.unwrap();
    let read = nodes[&new]
        .read_linearizable(|e| (1..=21).all(|s| e.lookup(InodeId::ROOT, &format!("q{s}")).is_ok()))
        .await;
    assert_eq!(read, Ok(true));
    for (_, n) in nodes {
        n.shutdown().await.unwrap();
    }
    for (_, q) in quic {
        q.shutdown().await;
    }
    intruder.shutdown().await;
}
