//! The Raft log store and state machine against openraft's own storage conformance suite
//! (`openraft::testing::Suite`), plus durability checks of our own: what the log store and the
//! snapshot file keep across a reopen of the data directory (torn and damaged log records,
//! segment roll-over, purge and truncate, conversion of an earlier version's `raft.redb`), and
//! refusal of damaged snapshots.

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{blank_ent, log_id, StoreBuilder, Suite};
use openraft::{RaftLogReader, RaftSnapshotBuilder, Vote};
use quarry_master::engine::{Command, Engine};
use quarry_master::raft::log_store::{encode_entry, LOG_DIR};
use quarry_master::raft::state_machine::{decode_snapshot_file, encode_snapshot_file};
use quarry_master::raft::{LogId, LogStore, StateMachine, StorageError, TypeConfig};
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

/// `save_committed` writes nothing by itself: the id rides along with the next meta write (vote,
/// purge), or is written by `flush_committed`; a crash before either leaves the older id, which
/// is safe.
#[tokio::test]
async fn committed_id_is_written_with_the_next_meta_write_or_at_flush() {
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

/// The segment files of a log store in `dir`, oldest first.
fn segments(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut segs: Vec<_> = std::fs::read_dir(dir.join(LOG_DIR))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("seg-"))
        .collect();
    segs.sort();
    segs
}

fn newest_segment(dir: &std::path::Path) -> std::path::PathBuf {
    segments(dir).pop().expect("a segment")
}

fn segment_count(dir: &std::path::Path) -> usize {
    segments(dir).len()
}

async fn indexes(log: &mut LogStore) -> Vec<u64> {
    let got = log.try_get_log_entries(0..).await.unwrap();
    got.iter().map(|e| e.log_id.index).collect()
}

/// A crash during an append leaves a torn last record (never reported durable): the next open
/// drops it, and it cannot come back after shorter records are written over it.
#[tokio::test]
async fn a_torn_last_record_is_dropped_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let torn_at;
    {
        let mut log = LogStore::open(dir.path()).unwrap();
        log.blocking_append((1..=5).map(|i| normal(1, i, i)))
            .await
            .unwrap();
        let seg = newest_segment(dir.path());
        let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
        // Where record 6 would go: after the five records (16-byte header each).
        torn_at = (1..=5)
            .map(|i| 16 + encode_entry(&normal(1, i, i)).unwrap().len() as u64)
            .sum();
        // Record 6's header and half its payload, as a crash mid-write leaves it.
        let mut hdr = Vec::new();
        hdr.extend_from_slice(&200u32.to_le_bytes());
        hdr.extend_from_slice(&0xdead_beefu32.to_le_bytes());
        hdr.extend_from_slice(&6u64.to_le_bytes());
        hdr.extend_from_slice(&[0x55; 100]);
        use std::os::unix::fs::FileExt;
        f.write_all_at(&hdr, torn_at).unwrap();
    }
    let mut log = LogStore::open(dir.path()).unwrap();
    assert_eq!(indexes(&mut log).await, (1..=5).collect::<Vec<_>>());
    let bytes = std::fs::read(newest_segment(dir.path())).unwrap();
    assert!(
        bytes[torn_at as usize..].iter().all(|b| *b == 0),
        "the torn record is zeroed"
    );
    log.blocking_append([blank_ent::<TypeConfig>(2, 1, 6)])
        .await
        .unwrap();
    drop(log);
    let mut log = LogStore::open(dir.path()).unwrap();
    assert_eq!(indexes(&mut log).await, (1..=6).collect::<Vec<_>>());
    assert_eq!(
        log.get_log_state().await.unwrap().last_log_id,
        Some(log_id(2, 1, 6))
    );
}

/// A log that starts at index 0 (a new cluster's membership entry) keeps it across a reopen; a
/// purge past the end of the log (a follower that installed a leader's snapshot) makes the next
/// entries start a new segment, and a reopen sees them after the snapshot's index.
#[tokio::test]
async fn index_zero_and_a_purge_past_the_end_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = LogStore::open(dir.path()).unwrap();
        log.blocking_append((0..=2).map(|i| blank_ent::<TypeConfig>(1, 1, i)))
            .await
            .unwrap();
    }
    {
        let mut log = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&mut log).await, vec![0, 1, 2]);
        log.purge(log_id(2, 1, 80)).await.unwrap();
        assert_eq!(
            log.get_log_state().await.unwrap().last_log_id,
            Some(log_id(2, 1, 80))
        );
        log.blocking_append((81..=83).map(|i| normal(2, i, i)))
            .await
            .unwrap();
    }
    assert_eq!(segment_count(dir.path()), 1, "the purged segment is gone");
    let mut log = LogStore::open(dir.path()).unwrap();
    assert_eq!(indexes(&mut log).await, vec![81, 82, 83]);
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(2, 1, 80)));
    assert_eq!(state.last_log_id, Some(log_id(2, 1, 83)));
}

/// One open store per directory: a second open fails while the first is open (two masters on
/// one data directory would corrupt the log), and succeeds once it is closed.
#[tokio::test]
async fn a_log_store_in_use_is_not_opened_twice() {
    let dir = tempfile::tempdir().unwrap();
    let log = LogStore::open(dir.path()).unwrap();
    let err = LogStore::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("in use"), "{err}");
    drop(log);
    LogStore::open(dir.path()).unwrap();
}

/// Damage before the newest record is not a torn write: the store refuses to open rather than
/// start with a log that silently lost committed entries.
#[tokio::test]
async fn damage_inside_the_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = LogStore::open_with(dir.path(), 256).unwrap();
        log.blocking_append((1..=20).map(|i| normal(1, i, i)))
            .await
            .unwrap();
    }
    assert!(segment_count(dir.path()) > 2);
    let segs = segments(dir.path());
    let mut bytes = std::fs::read(&segs[0]).unwrap();
    bytes[40] ^= 0xff;
    std::fs::write(&segs[0], &bytes).unwrap();
    let err = LogStore::open_with(dir.path(), 256)
        .unwrap_err()
        .to_string();
    assert!(err.contains("damaged record"), "{err}");
}

/// Records roll over into new segment files; purge deletes whole segments behind the purged
/// index, truncate zeroes the records it removes and deletes later segments, and a reopen sees
/// exactly what was left (nothing truncated comes back, even where shorter records replaced it).
#[tokio::test]
async fn segments_roll_over_purge_and_truncate_across_reopens() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = LogStore::open_with(dir.path(), 256).unwrap();
        log.blocking_append((1..=40).map(|i| normal(1, i, i)))
            .await
            .unwrap();
        let before = segment_count(dir.path());
        assert!(before >= 4, "{before} segments");
        log.purge(log_id(1, 1, 25)).await.unwrap();
        assert!(segment_count(dir.path()) < before);
        log.truncate(log_id(1, 1, 31)).await.unwrap();
        // Blank entries are shorter than the Mkdir records they replace.
        log.blocking_append((31..=33).map(|i| blank_ent::<TypeConfig>(2, 1, i)))
            .await
            .unwrap();
    }
    let mut log = LogStore::open_with(dir.path(), 256).unwrap();
    assert_eq!(indexes(&mut log).await, (26..=33).collect::<Vec<_>>());
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 25)));
    assert_eq!(state.last_log_id, Some(log_id(2, 1, 33)));
    let got = log.try_get_log_entries(31..).await.unwrap();
    assert!(got.iter().all(|e| e.log_id.leader_id.term == 2));
    // An append over existing entries replaces them (as openraft's truncate-then-append).
    log.blocking_append([normal(3, 32, 99)]).await.unwrap();
    drop(log);
    let mut log = LogStore::open_with(dir.path(), 256).unwrap();
    assert_eq!(indexes(&mut log).await, (26..=32).collect::<Vec<_>>());
    assert_eq!(
        log.get_log_state().await.unwrap().last_log_id,
        Some(log_id(3, 1, 32))
    );
    // A gap would lose entries: refused.
    assert!(log.blocking_append([normal(3, 40, 100)]).await.is_err());
}

/// A data directory of an earlier version (the log in `raft.redb`) is converted at open: the
/// vote, the committed and last purged ids and every entry come across; the old file stays as
/// `raft.redb.migrated`.
#[tokio::test]
async fn a_redb_log_of_an_earlier_version_is_converted() {
    use redb::TableDefinition;
    const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
    const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
    let dir = tempfile::tempdir().unwrap();
    {
        let db = redb::Database::create(dir.path().join("raft.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut log = txn.open_table(LOG).unwrap();
            for i in 4..=9 {
                let bytes = encode_entry(&normal(2, i, i)).unwrap();
                log.insert(i, bytes.as_slice()).unwrap();
            }
            let mut meta = txn.open_table(META).unwrap();
            let vote = postcard::to_stdvec(&Vote::<u64>::new(2, 1)).unwrap();
            meta.insert("vote", vote.as_slice()).unwrap();
            meta.insert(
                "committed",
                postcard::to_stdvec(&Some::<LogId>(log_id(2, 1, 8)))
                    .unwrap()
                    .as_slice(),
            )
            .unwrap();
            meta.insert(
                "last_purged",
                postcard::to_stdvec(&Some::<LogId>(log_id(1, 1, 3)))
                    .unwrap()
                    .as_slice(),
            )
            .unwrap();
        }
        txn.commit().unwrap();
    }
    let mut log = LogStore::open(dir.path()).unwrap();
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(2, 1)));
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(2, 1, 8)));
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 3)));
    assert_eq!(state.last_log_id, Some(log_id(2, 1, 9)));
    assert_eq!(indexes(&mut log).await, (4..=9).collect::<Vec<_>>());
    assert!(!dir.path().join("raft.redb").exists());
    assert!(dir.path().join("raft.redb.migrated").exists());
    drop(log);
    // Opened again: the converted store, not a second conversion.
    let mut log = LogStore::open(dir.path()).unwrap();
    assert_eq!(indexes(&mut log).await, (4..=9).collect::<Vec<_>>());
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
