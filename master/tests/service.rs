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
    let net = MemNetwork::new(3);
    let mut config = MasterConfig::new(dir.to_path_buf());
    config.chunk_size = 1024;
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
            },
        )
        .await
        .unwrap();
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
        .unwrap();
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
        .unwrap();
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
        .unwrap();
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
            },
        )
        .await
        .unwrap();
    c.call(
        M,
        &HoldOpen {
            op: op(),
            inode: g.inode,
            client: ClientId(5),
            hold: true,
        },
    )
    .await
    .unwrap();
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
    master.drop_client_holds(ClientId(5)).await.unwrap();
    assert_eq!(
        c.call(M, &GetAttr { inode: g.inode }).await,
        Err(FsError::NotFound)
    );
    master.shutdown().await;
}
