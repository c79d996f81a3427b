//! The Raft log store and state machine against openraft's own storage conformance suite
//! (`openraft::testing::Suite`), plus durability checks of our own: what the log store and the
//! snapshot file keep across a reopen of the data directory, and refusal of damaged snapshots.

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{blank_ent, log_id, StoreBuilder, Suite};
use openraft::{RaftLogReader, RaftSnapshotBuilder, Vote};
use quarry_master::engine::{Command, Engine};
use quarry_master::raft::state_machine::{decode_snapshot_file, encode_snapshot_file};
use quarry_master::raft::{LogStore, StateMachine, StorageError, TypeConfig};
use quarry_proto::{ClientId, InodeId, OpId, Timestamp};

fn initial() -> Engine {
    Engine::new(1 << 20, Timestamp::default())
}

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().unwrap();
        let log = LogStore::open(dir.path()).unwrap();
        let sm = StateMachine::open(dir.path(), initial()).unwrap();
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder).unwrap();
}

fn normal(term: u64, index: u64, seq: u64) -> openraft::Entry<TypeConfig> {
    openraft::Entry {
        log_id: log_id(term, 1, index),
        payload: openraft::EntryPayload::Normal(Command::Mkdir {
            op: OpId {
                client: ClientId(1),
                seq,
            },
            parent: InodeId::ROOT,
            name: format!("d{seq}"),
            mode: 0o755,
            uid: 0,
            gid: 0,
            time: Timestamp::default(),
        }),
    }
}

#[tokio::test]
async fn log_store_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = LogStore::open(dir.path()).unwrap();
        log.save_vote(&Vote::new(3, 2)).await.unwrap();
        let entries = vec![blank_ent::<TypeConfig>(1, 1, 1)]
            .into_iter()
            .chain((2..=10).map(|i| normal(1, i, i)));
        log.blocking_append(entries).await.unwrap();
        log.save_committed(Some(log_id(1, 1, 7))).await.unwrap();
        log.truncate(log_id(1, 1, 9)).await.unwrap();
        log.purge(log_id(1, 1, 3)).await.unwrap();
    }
    let mut log = LogStore::open(dir.path()).unwrap();
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(3, 2)));
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1, 1, 7)));
    assert_eq!(log.committed_index(), 7);
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 3)));
    assert_eq!(state.last_log_id, Some(log_id(1, 1, 8)));
    let got = log.try_get_log_entries(0..100).await.unwrap();
    let indexes: Vec<u64> = got.iter().map(|e| e.log_id.index).collect();
    assert_eq!(indexes, (4..=8).collect::<Vec<_>>());
    // Everything purged: the state still knows the last log id.
    log.purge(log_id(1, 1, 8)).await.unwrap();
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(log_id(1, 1, 8)));
    assert!(log.try_get_log_entries(0..100).await.unwrap().is_empty());
}

/// `save_committed` writes nothing by itself: the id rides along with the next transaction, or
/// is written by `flush_committed`; a crash before either leaves the older id, which is safe.
#[tokio::test]
async fn committed_id_is_written_with_the_next_transaction_or_at_flush() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = LogStore::open(dir.path()).unwrap();
        let entries = (1..=10).map(|i| normal(1, i, i));
        log.blocking_append(entries).await.unwrap();
        log.save_committed(Some(log_id(1, 1, 4))).await.unwrap();
        log.save_vote(&Vote::new(1, 1)).await.unwrap();
        log.save_committed(Some(log_id(1, 1, 6))).await.unwrap();
        // Read back at once, before any write.
        assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1, 1, 6)));
        assert_eq!(log.committed_index(), 6);
        // Dropped without a write or a flush: a crash.
    }
    {
        let mut log = LogStore::open(dir.path()).unwrap();
        assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1, 1, 4)));
        log.save_committed(Some(log_id(1, 1, 8))).await.unwrap();
        log.flush_committed().unwrap();
        log.flush_committed().unwrap(); // nothing left to write
    }
    let mut log = LogStore::open(dir.path()).unwrap();
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1, 1, 8)));
    assert_eq!(log.committed_index(), 8);
}

#[tokio::test]
async fn snapshot_is_persisted_and_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let built = {
        let mut sm = StateMachine::open(dir.path(), initial()).unwrap();
        let out = sm.apply((1..=5).map(|i| normal(1, i, i))).await.unwrap();
        assert_eq!(out.len(), 5);
        assert!(out.iter().all(|r| r.is_ok()));
        let snap = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(snap.meta.last_log_id, Some(log_id(1, 1, 5)));
        let engine = sm.engine().read().unwrap().clone();
        // Applied after the snapshot: not in it, and lost by a reopen (the log replays it).
        sm.apply([normal(1, 6, 6)]).await.unwrap();
        engine
    };
    let mut sm = StateMachine::open(dir.path(), initial()).unwrap();
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(1, 1, 5)));
    assert!(*sm.engine().read().unwrap() == built);
    let current = sm.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta.last_log_id, Some(log_id(1, 1, 5)));

    // A snapshot from elsewhere replaces the engine, durably.
    let other_dir = tempfile::tempdir().unwrap();
    let mut other = StateMachine::open(other_dir.path(), initial()).unwrap();
    other
        .apply((1..=9).map(|i| normal(2, i, i + 100)))
        .await
        .unwrap();
    let snap = other
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let want = other.engine().read().unwrap().clone();
    sm.install_snapshot(&snap.meta, snap.snapshot)
        .await
        .unwrap();
    assert!(*sm.engine().read().unwrap() == want);
    drop(sm);
    let sm = StateMachine::open(dir.path(), initial()).unwrap();
    assert!(*sm.engine().read().unwrap() == want);
}

#[tokio::test]
async fn damaged_snapshot_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = StateMachine::open(dir.path(), initial()).unwrap();
    sm.apply((1..=3).map(|i| normal(1, i, i))).await.unwrap();
    let snap = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let data = snap.snapshot.into_inner();
    let file = encode_snapshot_file(&snap.meta, &data).unwrap();
    let (meta, back) = decode_snapshot_file(&file).unwrap();
    assert_eq!((meta, back), (snap.meta.clone(), data));
    for cut in [0, 10, 31, file.len() - 1] {
        assert!(decode_snapshot_file(&file[..cut]).is_err(), "cut at {cut}");
    }
    for flip in [0, 9, 40, file.len() - 1] {
        let mut bad = file.clone();
        bad[flip] ^= 0x10;
        assert!(decode_snapshot_file(&bad).is_err(), "flip at {flip}");
    }
    // A damaged file on disk stops the open instead of silently starting empty.
    drop(sm);
    let path = dir
        .path()
        .join(quarry_master::raft::state_machine::SNAPSHOT_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    assert!(StateMachine::open(dir.path(), initial()).is_err());
}
