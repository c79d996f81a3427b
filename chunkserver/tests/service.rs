//! The chunkserver service over the in-memory network with in-memory stores: the write pipeline
//! (push along a chain, commit at the primary, apply at secondaries), leases and versions, the
//! push-buffer bound, corruption reports, clones from a peer and the scrubber — each checked
//! through the RPCs alone.

use bytes::Bytes;
use quarry_chunkserver::store::{ChunkStore, MemStore};
use quarry_chunkserver::{Chunkserver, ChunkserverConfig};
use quarry_proto::chunk::*;
use quarry_proto::master::{Heartbeat, HeartbeatReply, ReportBadChunk, ReportFailedReplica};
use quarry_proto::{ChunkHandle, ChunkVersion, ClientId, DataId, FsError, OpId, Role, ServerRef};
use quarry_transport::mem::MemNetwork;
use quarry_transport::{Identity, Reply, Request, Router, RpcClient};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const H: ChunkHandle = ChunkHandle(7);

struct Net {
    net: MemNetwork,
    stores: Vec<Arc<MemStore>>,
    servers: Vec<ServerRef>,
    master: RpcClient,
    client: RpcClient,
    reports: Arc<Mutex<Vec<ReportBadChunk>>>,
    failed_reports: Arc<Mutex<Vec<ReportFailedReplica>>>,
    nodes: Vec<Chunkserver>,
}

fn setup(n: usize, push_buffer_bytes: u64) -> Net {
    setup_with(n, |c| c.push_buffer_bytes = push_buffer_bytes)
}

fn setup_with(n: usize, configure: impl Fn(&mut ChunkserverConfig)) -> Net {
    setup_full(&vec![64 << 20; n], configure)
}

/// One chunkserver per entry of `capacities` (bytes its store holds before `NoSpace`).
fn setup_full(capacities: &[u64], configure: impl Fn(&mut ChunkserverConfig)) -> Net {
    let net = MemNetwork::new(1);
    // A stand-in master that answers heartbeats and records corruption reports.
    let reports = Arc::new(Mutex::new(Vec::new()));
    let mut router = Router::new();
    router.route::<Heartbeat, _, _>(|_req: Request<Heartbeat>| async {
        Reply::ok(HeartbeatReply::default())
    });
    let seen = reports.clone();
    router.route::<ReportBadChunk, _, _>(move |req: Request<ReportBadChunk>| {
        seen.lock().unwrap().push(req.msg);
        async { Reply::ok(()) }
    });
    let failed_reports = Arc::new(Mutex::new(Vec::new()));
    let seen = failed_reports.clone();
    router.route::<ReportFailedReplica, _, _>(move |req: Request<ReportFailedReplica>| {
        seen.lock().unwrap().push(req.msg);
        async { Reply::ok(()) }
    });
    let master_t = net.serve("master", Identity::new(Role::Master, "master"), router);
    let mut stores = Vec::new();
    let mut servers = Vec::new();
    let mut nodes = Vec::new();
    for (i, &capacity) in capacities.iter().enumerate() {
        let addr = format!("cs{i}");
        let store = Arc::new(MemStore::new(1 << 20, capacity));
        let mut config = ChunkserverConfig::new(std::env::temp_dir(), vec!["master".into()]);
        config.heartbeat_interval_ms = 50;
        configure(&mut config);
        let node = quarry_proto::NodeId(100 + i as u64);
        let server = Chunkserver::new(config, node, store.clone() as Arc<dyn ChunkStore>);
        let mut router = Router::new();
        server.routes(&mut router);
        let t = net.serve(&addr, Identity::new(Role::Chunkserver, &addr), router);
        server.start(RpcClient::new(t), addr.clone());
        stores.push(store);
        servers.push(ServerRef { id: node, addr });
        nodes.push(server);
    }
    let client = RpcClient::new(net.client("client", Identity::new(Role::Client, "client")))
        .with_timeout(Duration::from_secs(5));
    Net {
        net,
        stores,
        servers,
        master: RpcClient::new(master_t).with_timeout(Duration::from_secs(5)),
        client,
        reports,
        failed_reports,
        nodes,
    }
}

impl Net {
    /// Create the chunk at `version` everywhere and give server 0 the lease.
    async fn grant(&self, version: u64, create: bool) {
        for s in &self.servers {
            self.master
                .call(
                    &s.addr,
                    &BumpVersion {
                        handle: H,
                        version: ChunkVersion(version),
                        create,
                        lease_ms: None,
                        replicas: self.servers.clone(),
                    },
                )
                .await
                .unwrap();
        }
        self.master
            .call(
                &self.servers[0].addr,
                &BumpVersion {
                    handle: H,
                    version: ChunkVersion(version),
                    create: false,
                    lease_ms: Some(10_000),
                    replicas: self.servers.clone(),
                },
            )
            .await
            .unwrap();
    }

    async fn push(&self, id: u64, data: &[u8]) -> Result<(), FsError> {
        let push = PushData {
            data_id: DataId(id),
            forward: self.servers[1..].to_vec(),
            crc32c: crc32c::crc32c(data),
        };
        self.client
            .call_with_body(&self.servers[0].addr, &push, Bytes::copy_from_slice(data))
            .await
    }

    async fn commit(&self, version: u64, mutation: Mutation) -> Result<CommitReply, FsError> {
        self.commit_at(0, version, mutation).await
    }

    /// Push `data` along the chain starting at server `first`, then the other servers.
    async fn push_from(&self, first: usize, id: u64, data: &[u8]) -> Result<(), FsError> {
        let forward: Vec<ServerRef> = (0..self.servers.len())
            .filter(|&i| i != first)
            .map(|i| self.servers[i].clone())
            .collect();
        let push = PushData {
            data_id: DataId(id),
            forward,
            crc32c: crc32c::crc32c(data),
        };
        self.client
            .call_with_body(
                &self.servers[first].addr,
                &push,
                Bytes::copy_from_slice(data),
            )
            .await
    }

    async fn commit_at(
        &self,
        primary: usize,
        version: u64,
        mutation: Mutation,
    ) -> Result<CommitReply, FsError> {
        self.client
            .call(
                &self.servers[primary].addr,
                &CommitMutation {
                    handle: H,
                    version: ChunkVersion(version),
                    mutation,
                    secondaries: vec![],
                },
            )
            .await
    }
}

#[tokio::test]
async fn a_write_lands_on_every_replica_in_the_same_order() {
    let n = setup(3, 64 << 20);
    n.grant(2, true).await;
    for i in 0..20u64 {
        let data = vec![i as u8; 1000 + i as usize * 37];
        n.push(i, &data).await.unwrap();
        let reply = n
            .commit(
                2,
                Mutation::Write {
                    offset: i * 500,
                    data_id: DataId(i),
                    len: data.len() as u64,
                },
            )
            .await
            .unwrap();
        assert_eq!(reply.offset, i * 500);
    }
    let v = ChunkVersion(2);
    let first = n.stores[0].read(H, v, 0, 1 << 20).unwrap();
    assert!(!first.is_empty());
    for s in &n.stores[1..] {
        assert_eq!(s.read(H, v, 0, 1 << 20).unwrap(), first);
    }
}

#[tokio::test]
async fn appends_are_placed_by_the_primary_and_pad_a_full_chunk() {
    let n = setup(2, 64 << 20);
    n.grant(2, true).await;
    let rec = vec![9u8; 300_000];
    let mut offsets = Vec::new();
    for i in 0..4u64 {
        n.push(i, &rec).await.unwrap();
        let res = n
            .commit(
                2,
                Mutation::Append {
                    data_id: DataId(i),
                    len: rec.len() as u64,
                    chunk_size: 1 << 20,
                    op: OpId {
                        client: ClientId(7),
                        seq: i + 1,
                    },
                    min_offset: 0,
                },
            )
            .await;
        match res {
            Ok(r) => offsets.push(r.offset),
            Err(e) => {
                assert_eq!(e, FsError::ChunkFull, "the 4th record does not fit");
                assert_eq!(i, 3);
            }
        }
    }
    assert_eq!(offsets, vec![0, 300_000, 600_000]);
    for s in &n.stores {
        assert_eq!(
            s.len(H, ChunkVersion(2)).unwrap(),
            1 << 20,
            "padded to the chunk size"
        );
    }
}

#[tokio::test]
async fn no_lease_or_an_old_version_is_refused() {
    let n = setup(2, 64 << 20);
    n.grant(2, true).await;
    n.push(1, b"hello").await.unwrap();
    let w = Mutation::Write {
        offset: 0,
        data_id: DataId(1),
        len: 5,
    };
    assert_eq!(
        n.commit(1, w.clone()).await.unwrap_err(),
        FsError::NoLease(H.0)
    );
    // A new version on every replica, no lease yet: the old lease is gone.
    for s in &n.servers {
        n.master
            .call(
                &s.addr,
                &BumpVersion {
                    handle: H,
                    version: ChunkVersion(3),
                    create: false,
                    lease_ms: None,
                    replicas: n.servers.clone(),
                },
            )
            .await
            .unwrap();
    }
    assert_eq!(
        n.commit(2, w.clone()).await.unwrap_err(),
        FsError::NoLease(H.0)
    );
    // A secondary refuses a mutation at another version than its own.
    let err = n
        .master
        .call(
            &n.servers[1].addr,
            &ApplyMutation {
                handle: H,
                version: ChunkVersion(2),
                serial: 1,
                mutation: Mutation::Truncate { len: 0 },
                record: None,
            },
        )
        .await
        .unwrap_err();
    // The master's identity may not call ApplyMutation at all; a chunkserver's may.
    assert!(matches!(err, FsError::PermissionDenied(_)), "{err:?}");
    let peer = RpcClient::new(
        n.net
            .client("cs-x", Identity::new(Role::Chunkserver, "cs-x")),
    );
    let err = peer
        .call(
            &n.servers[1].addr,
            &ApplyMutation {
                handle: H,
                version: ChunkVersion(2),
                serial: 1,
                mutation: Mutation::Truncate { len: 0 },
                record: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        err,
        FsError::StaleVersion {
            have: 3,
            request: 2
        }
    );
    // Lowering a version is refused.
    let err = n
        .master
        .call(
            &n.servers[0].addr,
            &BumpVersion {
                handle: H,
                version: ChunkVersion(2),
                create: false,
                lease_ms: None,
                replicas: vec![],
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        err,
        FsError::StaleVersion {
            have: 3,
            request: 2
        }
    );
}

#[tokio::test]
async fn pushes_beyond_the_buffer_bound_are_refused_until_consumed() {
    let n = setup(1, 100_000);
    n.grant(2, true).await;
    n.push(1, &[1u8; 60_000]).await.unwrap();
    let err = n.push(2, &[2u8; 60_000]).await.unwrap_err();
    assert!(matches!(err, FsError::Unavailable(_)), "{err:?}");
    n.commit(
        2,
        Mutation::Write {
            offset: 0,
            data_id: DataId(1),
            len: 60_000,
        },
    )
    .await
    .unwrap();
    n.push(2, &[2u8; 60_000]).await.unwrap();
    // A push whose bytes do not match its checksum is refused and not kept.
    let bad = PushData {
        data_id: DataId(3),
        forward: vec![],
        crc32c: 0,
    };
    let err = n
        .client
        .call_with_body(&n.servers[0].addr, &bad, Bytes::from_static(b"xyz"))
        .await
        .unwrap_err();
    assert!(matches!(err, FsError::Protocol(_)), "{err:?}");
}

#[tokio::test]
async fn a_corrupt_read_is_an_error_and_reported_to_the_master() {
    let n = setup(1, 64 << 20);
    n.grant(2, true).await;
    n.push(1, &[5u8; 70_000]).await.unwrap();
    n.commit(
        2,
        Mutation::Write {
            offset: 0,
            data_id: DataId(1),
            len: 70_000,
        },
    )
    .await
    .unwrap();
    n.stores[0].corrupt(H, 66_000);
    let read = |offset, len| ReadChunk {
        handle: H,
        version: ChunkVersion(2),
        offset,
        len,
    };
    // The first block is fine; the second is not served.
    let (_, ok) = n
        .client
        .call_read(&n.servers[0].addr, &read(0, 1000))
        .await
        .unwrap();
    assert_eq!(&ok[..], &[5u8; 1000][..]);
    let err = n
        .client
        .call_read(&n.servers[0].addr, &read(65_000, 2000))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        FsError::ChecksumMismatch {
            handle: H.0,
            block: 1
        }
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while n.reports.lock().unwrap().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no report reached the master"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(n.reports.lock().unwrap()[0].handle, H);
}

impl Net {
    /// Write `data` at offset 0 of chunk H (version `version`, already granted) on every replica.
    async fn fill(&self, version: u64, data: &[u8]) {
        self.push(99, data).await.unwrap();
        self.commit(
            version,
            Mutation::Write {
                offset: 0,
                data_id: DataId(99),
                len: data.len() as u64,
            },
        )
        .await
        .unwrap();
    }

    async fn clone_to(
        &self,
        target: usize,
        source: usize,
        version: u64,
        bytes_per_sec: u64,
    ) -> Result<CloneReply, FsError> {
        self.master
            .call(
                &self.servers[target].addr,
                &CloneChunk {
                    handle: H,
                    version: ChunkVersion(version),
                    source: self.servers[source].clone(),
                    len: 0,
                    bytes_per_sec,
                },
            )
            .await
    }
}

#[tokio::test]
async fn a_clone_copies_the_chunk_and_replaces_an_older_copy() {
    let n = setup(3, 64 << 20);
    n.grant(2, true).await;
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + 3) as u8).collect();
    n.fill(2, &data).await;
    // Server 2 holds an old, shorter copy at version 1 (it missed the bump and the writes).
    n.stores[2].delete(H).unwrap();
    n.stores[2].create(H, ChunkVersion(1)).unwrap();
    n.stores[2]
        .write(H, ChunkVersion(1), 0, &[1u8; 5000])
        .unwrap();
    let reply = n.clone_to(2, 0, 2, 0).await.unwrap();
    assert_eq!(reply.len, data.len() as u64);
    assert_eq!(n.stores[2].version(H), Some(ChunkVersion(2)));
    assert_eq!(
        &n.stores[2].read(H, ChunkVersion(2), 0, 1 << 20).unwrap()[..],
        &data[..]
    );
    n.stores[2].verify(H).unwrap();
}

#[tokio::test]
async fn a_clone_never_goes_backwards_or_leaves_a_partial_copy() {
    let n = setup(3, 64 << 20);
    n.grant(2, true).await;
    n.fill(2, &[4u8; 100_000]).await;
    // A newer local copy is kept.
    n.stores[2].set_version(H, ChunkVersion(3)).unwrap();
    let err = n.clone_to(2, 0, 2, 0).await.unwrap_err();
    assert!(matches!(err, FsError::StaleVersion { .. }), "{err:?}");
    assert_eq!(n.stores[2].version(H), Some(ChunkVersion(3)));
    // The source does not have the requested version: nothing is left on the target.
    n.stores[1].delete(H).unwrap();
    let err = n.clone_to(1, 0, 5, 0).await.unwrap_err();
    assert!(matches!(err, FsError::StaleVersion { .. }), "{err:?}");
    assert_eq!(n.stores[1].version(H), None);
    // A corrupt source is refused (and reports itself); again nothing is left.
    n.stores[0].corrupt(H, 70_000);
    let err = n.clone_to(1, 0, 2, 0).await.unwrap_err();
    assert!(matches!(err, FsError::ChecksumMismatch { .. }), "{err:?}");
    assert_eq!(n.stores[1].version(H), None);
    // Only the master orders clones.
    let err = n
        .client
        .call(
            &n.servers[1].addr,
            &CloneChunk {
                handle: H,
                version: ChunkVersion(2),
                source: n.servers[2].clone(),
                len: 0,
                bytes_per_sec: 0,
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, FsError::PermissionDenied(_)), "{err:?}");
}

#[tokio::test]
async fn a_clone_is_paced() {
    let n = setup(2, 64 << 20);
    n.grant(2, true).await;
    n.fill(2, &vec![6u8; 1 << 20]).await;
    n.stores[1].delete(H).unwrap();
    let started = std::time::Instant::now();
    // 1 MiB at 2 MiB/s: at least half a second.
    n.clone_to(1, 0, 2, 2 << 20).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert_eq!(n.stores[1].len(H, ChunkVersion(2)).unwrap(), 1 << 20);
}

#[tokio::test]
async fn the_scrubber_reports_a_corrupt_idle_chunk_without_any_read() {
    let n = setup_with(1, |c| {
        c.scrub_bytes_per_sec = 64 << 20;
        c.scrub_idle_ms = 0;
    });
    n.grant(2, true).await;
    n.fill(2, &[5u8; 200_000]).await;
    n.stores[0].corrupt(H, 150_000);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while n.reports.lock().unwrap().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the scrubber reported nothing"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(n.reports.lock().unwrap()[0].handle, H);
    assert_eq!(n.nodes[0].scrub_stats().mismatches, 1);
}

fn append(data_id: u64, len: usize, seq: u64) -> Mutation {
    Mutation::Append {
        data_id: DataId(data_id),
        len: len as u64,
        chunk_size: 1 << 20,
        op: OpId {
            client: ClientId(42),
            seq,
        },
        min_offset: 0,
    }
}

/// Move every replica to `version` and give server `primary` the lease.
async fn regrant(n: &Net, version: u64, primary: usize) {
    lease_to(n, version, primary, &n.servers, false).await;
}

/// Move every server to `version` (creating the chunk if `create`), then give server `primary`
/// a lease whose replicas are `replicas`.
async fn lease_to(n: &Net, version: u64, primary: usize, replicas: &[ServerRef], create: bool) {
    for s in &n.servers {
        n.master
            .call(
                &s.addr,
                &BumpVersion {
                    handle: H,
                    version: ChunkVersion(version),
                    create,
                    lease_ms: None,
                    replicas: replicas.to_vec(),
                },
            )
            .await
            .unwrap();
    }
    n.master
        .call(
            &n.servers[primary].addr,
            &BumpVersion {
                handle: H,
                version: ChunkVersion(version),
                create: false,
                lease_ms: Some(10_000),
                replicas: replicas.to_vec(),
            },
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_retried_record_lands_once_even_through_a_new_primary() {
    let n = setup(3, 64 << 20);
    n.grant(2, true).await;
    let a = vec![1u8; 1000];
    let b = vec![2u8; 3000];
    n.push(1, &a).await.unwrap();
    assert_eq!(n.commit(2, append(1, a.len(), 1)).await.unwrap().offset, 0);
    n.push(2, &b).await.unwrap();
    assert_eq!(
        n.commit(2, append(2, b.len(), 2)).await.unwrap().offset,
        1000
    );
    // The reply of record 1 was "lost": its retry (new data id) lands where it did.
    n.push(3, &a).await.unwrap();
    assert_eq!(n.commit(2, append(3, a.len(), 1)).await.unwrap().offset, 0);
    // A retry with another length is refused, not appended.
    n.push(4, &b).await.unwrap();
    let err = n.commit(2, append(4, b.len(), 1)).await.unwrap_err();
    assert!(matches!(err, FsError::InvalidArgument(_)), "{err:?}");
    // The lease moves to a former secondary, which learned the records' places when it applied
    // them: a retry of record 2 through it lands once, at the same offset.
    regrant(&n, 3, 1).await;
    n.push_from(1, 5, &b).await.unwrap();
    assert_eq!(
        n.commit_at(1, 3, append(5, b.len(), 2))
            .await
            .unwrap()
            .offset,
        1000
    );
    let c = vec![3u8; 500];
    n.push_from(1, 6, &c).await.unwrap();
    assert_eq!(
        n.commit_at(1, 3, append(6, c.len(), 3))
            .await
            .unwrap()
            .offset,
        4000
    );
    let v = ChunkVersion(3);
    let mut want = a.clone();
    want.extend_from_slice(&b);
    want.extend_from_slice(&c);
    for s in &n.stores {
        assert_eq!(s.read(H, v, 0, 1 << 20).unwrap(), want);
    }
}

#[tokio::test]
async fn a_replica_that_fails_a_mutation_is_withdrawn_and_the_rest_go_on() {
    // Server 2 holds 64 KiB, the others 64 MiB.
    let n = setup_full(&[64 << 20, 64 << 20, 64 << 10], |_| {});
    n.grant(2, true).await;
    let small = vec![5u8; 10_000];
    n.push(1, &small).await.unwrap();
    assert_eq!(
        n.commit(2, append(1, small.len(), 1)).await.unwrap().offset,
        0
    );
    let big = vec![6u8; 100_000];
    n.push(2, &big).await.unwrap();
    let err = n.commit(2, append(2, big.len(), 2)).await.unwrap_err();
    assert!(matches!(err, FsError::Unavailable(_)), "{err:?}");
    let reports = n.failed_reports.lock().unwrap().clone();
    assert_eq!(
        reports,
        vec![ReportFailedReplica {
            handle: H,
            version: ChunkVersion(2),
            failed: vec![n.servers[2].id],
            lease_released: false,
        }]
    );
    // The retry lands once, at the same offset, on the two replicas that remain in the lease.
    n.push(3, &big).await.unwrap();
    assert_eq!(
        n.commit(2, append(3, big.len(), 2)).await.unwrap().offset,
        10_000
    );
    let v = ChunkVersion(2);
    for s in &n.stores[..2] {
        assert_eq!(s.len(H, v).unwrap(), 110_000);
    }
    assert_eq!(n.stores[2].len(H, v).unwrap(), 10_000);
    assert_eq!(n.failed_reports.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_full_disk_on_every_replica_is_no_space_and_withdraws_nothing() {
    let n = setup_full(&[64 << 10, 64 << 10], |_| {});
    n.grant(2, true).await;
    let big = vec![6u8; 100_000];
    n.push(1, &big).await.unwrap();
    let err = n
        .commit(
            2,
            Mutation::Write {
                offset: 0,
                data_id: DataId(1),
                len: big.len() as u64,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err, FsError::NoSpace);
    assert!(n.failed_reports.lock().unwrap().is_empty());
    for s in &n.stores {
        assert_eq!(s.len(H, ChunkVersion(2)).unwrap(), 0);
    }
}

#[tokio::test]
async fn a_primary_whose_own_write_fails_releases_its_lease() {
    let n = setup_full(&[64 << 10, 64 << 20], |_| {});
    n.grant(2, true).await;
    let big = vec![6u8; 100_000];
    n.push(1, &big).await.unwrap();
    let w = |id| Mutation::Write {
        offset: 0,
        data_id: DataId(id),
        len: big.len() as u64,
    };
    let err = n.commit(2, w(1)).await.unwrap_err();
    assert!(matches!(err, FsError::Unavailable(_)), "{err:?}");
    let reports = n.failed_reports.lock().unwrap().clone();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].failed, vec![n.servers[0].id]);
    assert!(reports[0].lease_released);
    // The lease is gone: the next commit is refused until the master grants a new one.
    n.push(2, &big).await.unwrap();
    assert_eq!(n.commit(2, w(2)).await.unwrap_err(), FsError::NoLease(H.0));
}

#[tokio::test]
async fn an_append_lands_at_the_file_end_even_past_a_shorter_replica() {
    let n = setup(2, 64 << 20);
    n.grant(2, true).await;
    let rec = vec![4u8; 100];
    n.push(1, &rec).await.unwrap();
    let m = Mutation::Append {
        data_id: DataId(1),
        len: 100,
        chunk_size: 1 << 20,
        op: OpId {
            client: ClientId(9),
            seq: 1,
        },
        // The file is 5,000 bytes into this chunk (a hole: the replica has nothing yet).
        min_offset: 5_000,
    };
    assert_eq!(n.commit(2, m).await.unwrap().offset, 5_000);
    for s in &n.stores {
        let data = s.read(H, ChunkVersion(2), 0, 1 << 20).unwrap();
        assert_eq!(data.len(), 5_100);
        assert!(data[..5_000].iter().all(|&b| b == 0));
        assert_eq!(&data[5_000..], &rec[..]);
    }
}

#[tokio::test]
async fn a_clone_takes_the_append_memo_so_a_retry_through_it_lands_once() {
    let n = setup(3, 64 << 20);
    // Servers 0 and 1 hold the lease's replicas; server 2 only has an empty copy.
    lease_to(&n, 2, 0, &n.servers[..2], true).await;
    let rec = vec![8u8; 700];
    let push = PushData {
        data_id: DataId(1),
        forward: vec![n.servers[1].clone()],
        crc32c: crc32c::crc32c(&rec),
    };
    n.client
        .call_with_body(&n.servers[0].addr, &push, Bytes::copy_from_slice(&rec))
        .await
        .unwrap();
    assert_eq!(
        n.commit(2, append(1, rec.len(), 1)).await.unwrap().offset,
        0
    );
    // Server 2 becomes a replica by cloning from server 0, then the primary.
    n.clone_to(2, 0, 2, 0).await.unwrap();
    regrant(&n, 3, 2).await;
    n.push_from(2, 2, &rec).await.unwrap();
    assert_eq!(
        n.commit_at(2, 3, append(2, rec.len(), 1))
            .await
            .unwrap()
            .offset,
        0,
        "the retry is recognized by the clone"
    );
    for s in &n.stores {
        assert_eq!(s.len(H, ChunkVersion(3)).unwrap(), 700);
    }
}
