//! The namespace RPCs through the master service's routes (in-memory network, real log).

use quarry_master::service::{Master, MasterConfig};
use quarry_proto::master::*;
use quarry_proto::{
    ClientId, FileKind, FsError, InodeId, OpId, Role, XattrFlags, RENAME_EXCHANGE, RENAME_NOREPLACE,
};
use quarry_transport::mem::MemNetwork;
use quarry_transport::{Identity, Router, RpcClient};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const ROOT: InodeId = InodeId::ROOT;
const M: &str = "m:1";
static SEQ: AtomicU64 = AtomicU64::new(0);

fn op() -> OpId {
    OpId {
        client: ClientId(77),
        seq: SEQ.fetch_add(1, Ordering::Relaxed) + 1,
    }
}

fn start(dir: &std::path::Path) -> (Master, RpcClient) {
    start_with(dir, |_| {})
}

fn start_with(dir: &std::path::Path, tune: impl FnOnce(&mut MasterConfig)) -> (Master, RpcClient) {
    let net = MemNetwork::new(3);
    let mut config = MasterConfig::new(dir.to_path_buf());
    config.chunk_size = 1024;
    tune(&mut config);
    let master = Master::open(config).unwrap();
    let mut router = Router::new();
    master.routes(&mut router);
    net.serve(M, Identity::new(Role::Master, M), router);
    let c = RpcClient::new(net.client("c", Identity::new(Role::Client, "c")))
        .with_timeout(Duration::from_secs(5));
    (master, c)
}

#[tokio::test]
async fn new_namespace_rpcs_are_routed() {
    let dir = tempfile::tempdir().unwrap();
    let (master, c) = start(dir.path());
    let f = c
        .call(
            M,
            &Create {
                op: op(),
                parent: ROOT,
                name: "f".into(),
                mode: 0o644,
                uid: 1,
                gid: 1,
                exclusive: true,
                hold: false,
            },
        )
        .await
        .unwrap()
        .value;
    let l = c
        .call(
            M,
            &Symlink {
                op: op(),
                parent: ROOT,
                name: "l".into(),
                target: "f".into(),
                uid: 1,
                gid: 1,
            },
        )
        .await
        .unwrap()
        .value;
    assert_eq!((l.kind, l.size, l.mode), (FileKind::Symlink, 1, 0o777));
    assert_eq!(c.call(M, &ReadLink { inode: l.inode }).await.unwrap(), "f");
    let p = c
        .call(
            M,
            &Mknod {
                op: op(),
                parent: ROOT,
                name: "dev".into(),
                kind: FileKind::CharDevice,
                mode: 0o600,
                rdev: 0x0105,
                uid: 0,
                gid: 0,
            },
        )
        .await
        .unwrap()
        .value;
    assert_eq!((p.kind, p.rdev), (FileKind::CharDevice, 0x0105));
    let a = c
        .call(
            M,
            &Link {
                op: op(),
                inode: f.inode,
                new_parent: ROOT,
                new_name: "g".into(),
            },
        )
        .await
        .unwrap()
        .value;
    assert_eq!(a.nlink, 2);
    c.call(
        M,
        &SetXattr {
            op: op(),
            inode: f.inode,
            name: "user.k".into(),
            value: b"v".to_vec(),
            flags: XattrFlags::CreateOnly,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        c.call(
            M,
            &GetXattr {
                inode: f.inode,
                name: "user.k".into()
            }
        )
        .await
        .unwrap(),
        b"v"
    );
    assert_eq!(
        c.call(M, &ListXattr { inode: f.inode }).await.unwrap(),
        ["user.k"]
    );
    c.call(
        M,
        &RemoveXattr {
            op: op(),
            inode: f.inode,
            name: "user.k".into(),
        },
    )
    .await
    .unwrap();
    assert_eq!(
        c.call(
            M,
            &GetXattr {
                inode: f.inode,
                name: "user.k".into()
            }
        )
        .await,
        Err(FsError::NoData)
    );
    let rename = |src: &str, dst: &str, flags: u32| Rename {
        op: op(),
        src_parent: ROOT,
        src_name: src.into(),
        dst_parent: ROOT,
        dst_name: dst.into(),
        flags,
    };
    assert_eq!(
        c.call(M, &rename("l", "dev", RENAME_NOREPLACE)).await,
        Err(FsError::AlreadyExists)
    );
    c.call(M, &rename("l", "dev", RENAME_EXCHANGE))
        .await
        .unwrap();
    let dev = c
        .call(
            M,
            &Lookup {
                parent: ROOT,
                name: "dev".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(dev.inode, l.inode);
    // Held open, unlinked twice: an orphan, then gone after the release.
    c.call(
        M,
        &HoldOpen {
            op: op(),
            inode: f.inode,
            client: ClientId(77),
            hold: true,
        },
    )
    .await
    .unwrap();
    for n in ["f", "g"] {
        c.call(
            M,
            &Unlink {
                op: op(),
                parent: ROOT,
                name: n.into(),
            },
        )
        .await
        .unwrap();
    }
    assert_eq!(
        c.call(M, &GetAttr { inode: f.inode }).await.unwrap().nlink,
        0
    );
    c.call(
        M,
        &HoldOpen {
            op: op(),
            inode: f.inode,
            client: ClientId(77),
            hold: false,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        c.call(M, &GetAttr { inode: f.inode }).await,
        Err(FsError::NotFound)
    );
    // DropClientHolds through the service.
    let g = c
        .call(
            M,
            &Create {
                op: op(),
                parent: ROOT,
                name: "h".into(),
                mode: 0o644,
                uid: 1,
                gid: 1,
                exclusive: true,
                // Created and held by the caller (op's client, 77) in one request.
                hold: true,
            },
        )
        .await
        .unwrap()
        .value;
    c.call(
        M,
        &Unlink {
            op: op(),
            parent: ROOT,
            name: "h".into(),
        },
    )
    .await
    .unwrap();
    assert!(c.call(M, &GetAttr { inode: g.inode }).await.is_ok());
    master.drop_client_holds(ClientId(77)).await.unwrap();
    assert_eq!(
        c.call(M, &GetAttr { inode: g.inode }).await,
        Err(FsError::NotFound)
    );
    master.shutdown().await;
}

async fn create(c: &RpcClient, parent: InodeId, name: &str) -> quarry_proto::Attr {
    c.call(
        M,
        &Create {
            op: op(),
            parent,
            name: name.into(),
            mode: 0o644,
            uid: 0,
            gid: 0,
            exclusive: true,
            hold: false,
        },
    )
    .await
    .unwrap()
    .value
}

async fn unlink(c: &RpcClient, parent: InodeId, name: &str) {
    c.call(
        M,
        &Unlink {
            op: op(),
            parent,
            name: name.into(),
        },
    )
    .await
    .unwrap()
    .value
}

async fn trash(c: &RpcClient) -> ListTrashReply {
    c.call(
        M,
        &ListTrash {
            after: None,
            limit: 100,
        },
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn trash_and_goal_rpcs_and_the_retention_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let (master, c) = start_with(dir.path(), |cfg| {
        cfg.trash_retention_ms = 3_600_000;
        cfg.replication = 2;
    });
    // The root starts at the configured replication; children inherit.
    assert_eq!(c.call(M, &GetGoal { inode: ROOT }).await.unwrap(), 2);
    let d = c
        .call(
            M,
            &Mkdir {
                op: op(),
                parent: ROOT,
                name: "d".into(),
                mode: 0o755,
                uid: 0,
                gid: 0,
            },
        )
        .await
        .unwrap()
        .value;
    let f = create(&c, d.inode, "f").await;
    assert_eq!(c.call(M, &GetGoal { inode: f.inode }).await.unwrap(), 2);
    let set = SetGoal {
        op: op(),
        inode: d.inode,
        goal: 4,
        recursive: true,
    };
    assert_eq!(c.call(M, &set).await.unwrap(), 2);
    assert_eq!(
        c.call(M, &set).await.unwrap(),
        2,
        "a retry gets the same answer"
    );
    assert_eq!(c.call(M, &GetGoal { inode: f.inode }).await.unwrap(), 4);
    let bad = SetGoal {
        op: op(),
        inode: d.inode,
        goal: 0,
        recursive: false,
    };
    assert!(matches!(
        c.call(M, &bad).await,
        Err(FsError::InvalidArgument(_))
    ));

    // Unlink: into the trash; restore; unlink again; purge.
    unlink(&c, d.inode, "f").await;
    let t = trash(&c).await;
    assert_eq!(t.retention_ms, 3_600_000);
    assert_eq!(t.entries.len(), 1);
    assert_eq!(
        (t.entries[0].inode, t.entries[0].path.as_str()),
        (f.inode, "/d/f")
    );
    let fs = c.call(M, &StatFs {}).await.unwrap();
    assert_eq!((fs.trash_files, fs.files), (1, 2));
    let back = c
        .call(
            M,
            &RestoreTrash {
                op: op(),
                inode: f.inode,
                path: Some("/g".into()),
            },
        )
        .await
        .unwrap();
    assert_eq!((back.inode, back.nlink), (f.inode, 1));
    assert_eq!(
        c.call(
            M,
            &Lookup {
                parent: ROOT,
                name: "g".into()
            }
        )
        .await
        .unwrap()
        .inode,
        f.inode
    );
    unlink(&c, ROOT, "g").await;
    // Expired: nothing is an hour old.
    let expired = PurgeTrash {
        op: op(),
        which: PurgeWhich::Expired,
    };
    assert_eq!(c.call(M, &expired).await.unwrap(), 0);
    let all = PurgeTrash {
        op: op(),
        which: PurgeWhich::All,
    };
    assert_eq!(c.call(M, &all).await.unwrap(), 1);
    assert!(trash(&c).await.entries.is_empty());
    let missing = RestoreTrash {
        op: op(),
        inode: f.inode,
        path: None,
    };
    assert_eq!(c.call(M, &missing).await, Err(FsError::NotFound));

    // Something left in the trash, then a restart without a trash: the retention in the state
    // follows the configuration, and the purge loop empties the trash.
    create(&c, d.inode, "h").await;
    unlink(&c, d.inode, "h").await;
    master.shutdown().await;
    drop((master, c));
    let (master, c) = start_with(dir.path(), |cfg| cfg.replication = 5);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let t = trash(&c).await;
        assert_eq!(t.retention_ms, 0);
        if t.entries.is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "trash not purged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The root kept the goal it was created with; the rest kept theirs.
    assert_eq!(c.call(M, &GetGoal { inode: ROOT }).await.unwrap(), 2);
    assert_eq!(c.call(M, &GetGoal { inode: d.inode }).await.unwrap(), 4);
    // Without a trash, unlink drops at once.
    create(&c, ROOT, "x").await;
    unlink(&c, ROOT, "x").await;
    assert!(trash(&c).await.entries.is_empty());
    master.shutdown().await;
}

/// Every change to a directory's entries answers with the attributes of the directories it
/// changed, as they are once it applied: a mount answers the kernel's next stat of them from
/// these.
#[tokio::test]
async fn entry_changes_report_the_directories_they_changed() {
    let dir = tempfile::tempdir().unwrap();
    let (master, c) = start(dir.path());
    let root_now = |c: RpcClient| async move { c.call(M, &GetAttr { inode: ROOT }).await.unwrap() };
    let d = c
        .call(
            M,
            &Mkdir {
                op: op(),
                parent: ROOT,
                name: "d".into(),
                mode: 0o755,
                uid: 0,
                gid: 0,
            },
        )
        .await
        .unwrap();
    assert_eq!(d.dirs, [root_now(c.clone()).await]);
    assert_eq!(d.dirs[0].nlink, 3, "the new directory's `..`");
    assert_eq!(d.dirs[0].mtime, d.value.ctime);
    let d = d.value;
    let f = c
        .call(
            M,
            &Create {
                op: op(),
                parent: d.inode,
                name: "f".into(),
                mode: 0o644,
                uid: 0,
                gid: 0,
                exclusive: true,
                hold: false,
            },
        )
        .await
        .unwrap();
    let d_now = c.call(M, &GetAttr { inode: d.inode }).await.unwrap();
    assert_eq!(f.dirs, std::slice::from_ref(&d_now));
    assert_eq!(d_now.mtime, f.value.ctime);
    // A rename across directories reports both; one within a directory reports it once.
    let r = c
        .call(
            M,
            &Rename {
                op: op(),
                src_parent: d.inode,
                src_name: "f".into(),
                dst_parent: ROOT,
                dst_name: "g".into(),
                flags: 0,
            },
        )
        .await
        .unwrap();
    let d_now = c.call(M, &GetAttr { inode: d.inode }).await.unwrap();
    assert_eq!(r.dirs, [d_now, root_now(c.clone()).await]);
    let r = c
        .call(
            M,
            &Rename {
                op: op(),
                src_parent: ROOT,
                src_name: "g".into(),
                dst_parent: ROOT,
                dst_name: "h".into(),
                flags: 0,
            },
        )
        .await
        .unwrap();
    assert_eq!(r.dirs, [root_now(c.clone()).await]);
    let u = c
        .call(
            M,
            &Unlink {
                op: op(),
                parent: ROOT,
                name: "h".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(u.dirs, [root_now(c.clone()).await]);
    let r = c
        .call(
            M,
            &Rmdir {
                op: op(),
                parent: ROOT,
                name: "d".into(),
            },
        )
        .await
        .unwrap();
    let root = root_now(c.clone()).await;
    assert_eq!(r.dirs, std::slice::from_ref(&root));
    assert_eq!(root.nlink, 2);
    master.shutdown().await;
}

#[tokio::test]
async fn the_holds_of_a_silent_client_are_dropped_after_the_session_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let timeout = Duration::from_millis(400);
    let (master, c) = start_with(dir.path(), |config| {
        config.client_session_timeout_ms = timeout.as_millis() as u64;
    });
    let (silent, alive) = (ClientId(91), ClientId(92));
    let hold = |inode: InodeId, client: ClientId| HoldOpen {
        op: op(),
        inode,
        client,
        hold: true,
    };
    let f = create(&c, ROOT, "f").await;
    let g = create(&c, ROOT, "g").await;
    c.call(M, &hold(f.inode, silent)).await.unwrap();
    let held_at = std::time::Instant::now();
    c.call(M, &hold(g.inode, alive)).await.unwrap();
    unlink(&c, ROOT, "f").await;
    unlink(&c, ROOT, "g").await;
    let reply = c.call(M, &KeepAlive { client: alive }).await.unwrap();
    assert_eq!(
        reply,
        KeepAliveReply {
            holds: 1,
            session_timeout_ms: 400
        }
    );
    // The silent client's orphan goes once the timeout has passed; the one of the client that
    // keeps calling stays.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        assert!(std::time::Instant::now() < deadline, "f was never dropped");
        let reply = c.call(M, &KeepAlive { client: alive }).await.unwrap();
        assert_eq!(reply.holds, 1);
        assert_eq!(
            c.call(M, &GetAttr { inode: g.inode }).await.unwrap().nlink,
            0
        );
        match c.call(M, &GetAttr { inode: f.inode }).await {
            Ok(a) => assert_eq!(a.nlink, 0),
            Err(FsError::NotFound) => break,
            Err(e) => panic!("{e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(held_at.elapsed() >= timeout, "dropped before the timeout");
    let reply = c.call(M, &KeepAlive { client: silent }).await.unwrap();
    assert_eq!(
        reply.holds, 0,
        "a client that comes back learns its holds are gone"
    );
    master.shutdown().await;
}
