//! Raft traffic over Quarry's RPC transport: [`Network`] sends openraft's requests as the
//! `RaftAppend`, `RaftVote` and `RaftSnapshot` RPCs (`quarry_proto::raft`, methods 90–92, callable
//! by masters only) with an [`RpcClient`]; [`RaftInbox`] serves them on a [`Router`]. Requests and
//! replies are openraft's own types in postcard, carried as opaque bytes. Every call is bounded
//! by openraft's per-RPC timeout.
//!
//! Must not depend on QUIC or on the in-memory network (only on `Router` and `RpcClient`), nor
//! on the log store, state machine or service.

use super::{NodeId, TypeConfig};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::Raft;
use quarry_proto::raft::{RaftAppend, RaftReply, RaftSnapshot, RaftVote};
use quarry_proto::{FsError, Rpc};
use quarry_transport::{Reply, Request, Router, RpcClient};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::{Arc, RwLock};
use std::time::Duration;

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, FsError> {
    postcard::to_stdvec(v).map_err(|e| FsError::Protocol(format!("raft encode: {e}")))
}

fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, FsError> {
    postcard::from_bytes(b).map_err(|e| FsError::Protocol(format!("raft decode: {e}")))
}

/// Where the Raft RPCs of one master arrive. Routes are registered on the master's [`Router`]
/// before the transport serves it; the running Raft is plugged in by
/// [`super::RaftNode::start`] (until then, and after shutdown, the RPCs answer `Unavailable`).
#[derive(Clone, Default)]
pub struct RaftInbox {
    raft: Arc<RwLock<Option<Raft<TypeConfig>>>>,
}

impl std::fmt::Debug for RaftInbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftInbox").finish_non_exhaustive()
    }
}

impl RaftInbox {
    pub fn new() -> RaftInbox {
        RaftInbox::default()
    }

    pub(crate) fn set(&self, raft: Option<Raft<TypeConfig>>) {
        *self.raft.write().expect("poisoned") = raft;
    }

    fn raft(&self) -> Result<Raft<TypeConfig>, FsError> {
        self.raft
            .read()
            .expect("poisoned")
            .clone()
            .ok_or_else(|| FsError::Unavailable("raft is not running on this master".into()))
    }

    /// Register the three Raft RPCs on `router`.
    pub fn route(&self, router: &mut Router) {
        let inbox = self.clone();
        router.route(move |req: Request<RaftAppend>| {
            let inbox = inbox.clone();
            async move {
                let r = async {
                    let raft = inbox.raft()?;
                    let rpc: AppendEntriesRequest<TypeConfig> = decode(&req.msg.data)?;
                    encode(&raft.append_entries(rpc).await)
                }
                .await;
                Reply::from(r.map(|data| RaftReply { data }))
            }
        });
        let inbox = self.clone();
        router.route(move |req: Request<RaftVote>| {
            let inbox = inbox.clone();
            async move {
                let r = async {
                    let raft = inbox.raft()?;
                    let rpc: VoteRequest<NodeId> = decode(&req.msg.data)?;
                    encode(&raft.vote(rpc).await)
                }
                .await;
                Reply::from(r.map(|data| RaftReply { data }))
            }
        });
        let inbox = self.clone();
        router.route(move |req: Request<RaftSnapshot>| {
            let inbox = inbox.clone();
            async move {
                let r = async {
                    let raft = inbox.raft()?;
                    let rpc: InstallSnapshotRequest<TypeConfig> = decode(&req.msg.data)?;
                    encode(&raft.install_snapshot(rpc).await)
                }
                .await;
                Reply::from(r.map(|data| RaftReply { data }))
            }
        });
    }
}

/// Makes one [`Peer`] per target for openraft.
#[derive(Clone, Debug)]
pub struct Network {
    client: RpcClient,
}

impl Network {
    /// `client` dials from this master (its identity must have the master role).
    pub fn new(client: RpcClient) -> Network {
        Network { client }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &String) -> Peer {
        Peer {
            client: self.client.clone(),
            target,
            addr: node.clone(),
        }
    }
}

/// The connection to one other master, as openraft sees it.
pub struct Peer {
    client: RpcClient,
    target: NodeId,
    addr: String,
}

impl Peer {
    /// One call, bounded by `ttl`; transport failures are network errors for openraft, the
    /// remote's openraft error a remote error.
    async fn call<R, Resp, E>(
        &self,
        req: R,
        ttl: Duration,
    ) -> Result<Resp, RPCError<NodeId, String, RaftError<NodeId, E>>>
    where
        R: Rpc<Response = RaftReply>,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let client = self.client.clone().with_timeout(ttl);
        let reply = client.call(&self.addr, &req).await.map_err(|e| match e {
            FsError::PermissionDenied(_) | FsError::Protocol(_) => {
                RPCError::Unreachable(Unreachable::new(&e))
            }
            _ => RPCError::Network(NetworkError::new(&e)),
        })?;
        let result: Result<Resp, RaftError<NodeId, E>> =
            decode(&reply.data).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.addr.clone(),
                e,
            ))
        })
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, String, RaftError<NodeId>>> {
        let data = encode(&rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.call(RaftAppend { data }, option.hard_ttl()).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, String, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let data = encode(&rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.call(RaftSnapshot { data }, option.hard_ttl()).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, String, RaftError<NodeId>>> {
        let data = encode(&rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.call(RaftVote { data }, option.hard_ttl()).await
    }
}
