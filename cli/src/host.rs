//! How a process hosts its roles: a master process runs the MapReduce coordinator next to the
//! master service (on the same endpoint, keeping job state in the master's replicated records);
//! a chunkserver process runs a MapReduce worker next to the chunk service (on the same endpoint,
//! reading local chunk files through the store). Used by `quarry up`, `quarry master`,
//! `quarry chunkserver` and the test harness, so all of them compose the roles the same way.

use crate::http::{self, HttpServer};
use quarry_chunkserver::store::ChunkStore;
use quarry_chunkserver::{ChunkserverConfig, ChunkserverNode};
use quarry_client::{Client, ClientConfig};
use quarry_mapred::coordinator::{Coordinator, CoordinatorConfig, JobStore};
use quarry_mapred::worker::{LocalChunk, LocalChunks, Worker, WorkerConfig};
use quarry_master::{Master, MasterConfig, MasterNode};
use quarry_proto::FsError;
use quarry_transport::certs::NodeCert;
use quarry_transport::quic::QuicNode;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// Job records kept in the master's replicated state.
struct MasterRecords(Master);

impl JobStore for MasterRecords {
    fn load(&self, prefix: &str) -> Vec<(String, Vec<u8>)> {
        self.0.records(prefix)
    }

    fn save(
        &self,
        key: String,
        value: Option<Vec<u8>>,
    ) -> Pin<Box<dyn Future<Output = Result<(), FsError>> + Send + '_>> {
        Box::pin(self.0.put_record(key, value))
    }
}

/// A master with the job coordinator.
pub struct MasterHost {
    pub node: MasterNode,
    pub coordinator: Coordinator,
    coordinator_task: tokio::task::JoinHandle<()>,
}

impl MasterHost {
    pub async fn start(
        config: MasterConfig,
        coordinator: CoordinatorConfig,
        cert: &NodeCert,
        bind: SocketAddr,
    ) -> anyhow::Result<MasterHost> {
        let rpc_timeout = Duration::from_millis(config.rpc_timeout_ms);
        let coordinator = Coordinator::new(coordinator);
        let node = MasterNode::start_with(config, cert, bind, |r| coordinator.routes(r)).await?;
        coordinator.export_metrics(&cert.identity().name);
        // The coordinator is a client of its own master (with the master's identity).
        let mut client_config = ClientConfig::new(vec![node.addr().to_string()]);
        client_config.rpc_timeout = rpc_timeout;
        let client = Client::connect(node.rpc().transport().clone(), client_config).await?;
        let store = Arc::new(MasterRecords(node.master().clone()));
        let coordinator_task = match node.master().raft() {
            None => coordinator.start(client, store),
            Some(_) => {
                // In a Raft group the coordinator runs on the leader only: it starts (loading
                // the jobs from the replicated records) whenever this master becomes leader and
                // stops when it loses leadership. Stopped, its routes answer as the master
                // does (`NotLeader` with the leader's address), so callers go to the leader.
                let master = node.master().clone();
                let gate_master = master.clone();
                coordinator.set_gate(move || gate_master.check_leader());
                let c = coordinator.clone();
                tokio::spawn(async move {
                    loop {
                        while !master.is_leader() {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        tracing::info!("leader: starting the job coordinator");
                        let task = c.start(client.clone(), store.clone());
                        while master.is_leader() {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        tracing::warn!("lost leadership: stopping the job coordinator");
                        c.stop();
                        task.abort();
                    }
                })
            }
        };
        Ok(MasterHost {
            node,
            coordinator,
            coordinator_task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.node.addr()
    }

    /// Serve `/metrics`, the status page and `/api/status` on `bind` (port 0 allowed).
    pub async fn serve_http(&self, bind: SocketAddr) -> anyhow::Result<HttpServer> {
        http::serve_master(
            bind,
            self.node.master().clone(),
            self.coordinator.clone(),
            self.node.rpc(),
        )
        .await
    }

    pub async fn shutdown(self) {
        self.coordinator_task.abort();
        self.node.shutdown().await;
    }

    pub async fn crash(self) {
        self.coordinator_task.abort();
        self.node.crash().await;
    }
}

/// A chunkserver with a MapReduce worker.
pub struct ChunkserverHost {
    pub node: ChunkserverNode,
    pub worker: Option<Worker>,
    worker_task: Option<tokio::task::JoinHandle<()>>,
}

/// The verified local replica of a chunk at exactly `version`, for map tasks.
fn local_chunks(store: Arc<dyn ChunkStore>) -> LocalChunks {
    Arc::new(move |handle, version| {
        if store.version(handle) != Some(version) {
            return Ok(None);
        }
        let len = store.len(handle, version)?;
        store.verify(handle)?;
        Ok(store
            .data_file(handle)
            .map(|(path, data_offset)| LocalChunk {
                path,
                data_offset,
                len,
            }))
    })
}

impl ChunkserverHost {
    /// `worker_cert` (a client certificate) lets the worker read inputs and write outputs;
    /// without one the chunkserver runs no worker.
    pub async fn start(
        config: ChunkserverConfig,
        worker: WorkerConfig,
        max_chunk_size: u64,
        cert: &NodeCert,
        worker_cert: Option<&NodeCert>,
        bind: SocketAddr,
    ) -> anyhow::Result<ChunkserverHost> {
        let masters = config.masters.clone();
        let rpc_timeout = Duration::from_millis(config.rpc_timeout_ms);
        let mut hosted = None;
        let node =
            ChunkserverNode::start_with(config, max_chunk_size, cert, bind, |r, store, id| {
                if worker_cert.is_some() {
                    let w = Worker::new(worker.clone(), id, local_chunks(store.clone()));
                    w.routes(r);
                    w.export_metrics(&cert.identity().name);
                    hosted = Some(w);
                }
            })
            .await?;
        let mut worker_task = None;
        if let (Some(w), Some(cert)) = (hosted.clone(), worker_cert) {
            let endpoint = QuicNode::client(cert)?;
            let rpc = node.rpc().with_timeout(rpc_timeout);
            let addr = node.addr().to_string();
            worker_task = Some(tokio::spawn(async move {
                // The master may still be starting: connect patiently, then serve forever.
                let mut client_config = ClientConfig::new(masters);
                client_config.rpc_timeout = rpc_timeout;
                client_config.retry_deadline = Duration::from_secs(3600);
                match Client::connect(endpoint.transport(), client_config).await {
                    Ok(client) => w.run(rpc, addr, client).await,
                    Err(e) => tracing::error!("MapReduce worker could not connect: {e}"),
                }
                drop(endpoint);
            }));
        }
        Ok(ChunkserverHost {
            node,
            worker: hosted,
            worker_task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.node.addr()
    }

    pub async fn shutdown(self) {
        if let Some(t) = self.worker_task {
            t.abort();
        }
        if let Some(w) = &self.worker {
            w.stop();
        }
        self.node.shutdown().await;
    }
}
