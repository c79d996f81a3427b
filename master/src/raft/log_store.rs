//! The Raft log and vote, stored in one redb database (`<data_dir>/raft.redb`).
//!
//! Tables (see `docs/raft.md`): `raft_log` maps a log index to postcard(openraft `Entry`);
//! `raft_meta` holds postcard values under the keys `vote`, `committed` and `last_purged`. Every
//! write is one redb transaction committed with `Durability::Immediate` (fsynced) before
//! openraft hears of it: `save_vote` returns, and `append` signals its `LogFlushed` callback,
//! only after the commit. `save_committed` writes nothing by itself: the newest committed id
//! rides along with the next of those transactions (and with `flush_committed` at shutdown).
//! Writes run on the blocking pool, one at a time (openraft awaits each), so vote and
//! log writes stay in order.
//!
//! Must not depend on the engine, the state machine or the network: it stores opaque entries.

use super::{LogId, StorageError, TypeConfig};
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{Entry, LogState, RaftLogReader, StorageIOError, Vote};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");

const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_LAST_PURGED: &str = "last_purged";

/// File name of the database inside the data directory.
pub const LOG_FILE: &str = "raft.redb";

/// The durable Raft log store. Cheap to clone (the clones share the database); a clone is also
/// the log reader handed to replication tasks.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    /// The last committed index saved (for metrics).
    committed: Arc<AtomicU64>,
    /// The newest committed id handed to `save_committed` and not yet written (postcard).
    committed_unwritten: Arc<Mutex<Option<Vec<u8>>>>,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").finish_non_exhaustive()
    }
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, std::io::Error> {
    postcard::to_stdvec(v).map_err(std::io::Error::other)
}

fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, std::io::Error> {
    postcard::from_bytes(b).map_err(std::io::Error::other)
}

/// The stored form of a log entry: postcard of openraft's `Entry`.
pub fn encode_entry(entry: &Entry<TypeConfig>) -> Result<Vec<u8>, std::io::Error> {
    encode(entry)
}

/// A log entry from its stored form ([`encode_entry`]); any damage is an error.
pub fn decode_entry(bytes: &[u8]) -> Result<Entry<TypeConfig>, std::io::Error> {
    decode(bytes)
}

/// Store the committed id (postcard) in `txn`.
fn put_committed(txn: &redb::WriteTransaction, bytes: &[u8]) -> Result<(), std::io::Error> {
    let mut t = txn.open_table(META).map_err(io)?;
    t.insert(KEY_COMMITTED, bytes).map_err(io)?;
    Ok(())
}

fn io<E: std::fmt::Display>(e: E) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl LogStore {
    /// Open (creating) the database in `dir`, and make sure both tables exist.
    pub fn open(dir: &Path) -> anyhow::Result<LogStore> {
        std::fs::create_dir_all(dir)?;
        let db = Database::create(dir.join(LOG_FILE))?;
        let txn = db.begin_write()?;
        txn.open_table(LOG)?;
        txn.open_table(META)?;
        txn.commit()?;
        let store = LogStore {
            db: Arc::new(db),
            committed: Arc::new(AtomicU64::new(0)),
            committed_unwritten: Arc::new(Mutex::new(None)),
        };
        let committed: Option<LogId> = store.read_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten();
        store
            .committed
            .store(committed.map(|c| c.index).unwrap_or(0), Ordering::Relaxed);
        Ok(store)
    }

    /// How many handles share the database (this one included). openraft's replication tasks
    /// hold log readers and end shortly after the Raft core; the database closes with the last.
    pub fn handles(&self) -> usize {
        Arc::strong_count(&self.db)
    }

    /// The last committed index saved by openraft (0 if none).
    pub fn committed_index(&self) -> u64 {
        self.committed.load(Ordering::Relaxed)
    }

    fn read_meta<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, std::io::Error> {
        let txn = self.db.begin_read().map_err(io)?;
        let table = txn.open_table(META).map_err(io)?;
        match table.get(key).map_err(io)? {
            Some(v) => Ok(Some(decode(v.value())?)),
            None => Ok(None),
        }
    }

    /// Run one write transaction on the blocking pool and commit it durably, with the newest
    /// committed id not yet written (if any) in the same transaction.
    async fn write<F>(&self, f: F) -> Result<(), std::io::Error>
    where
        F: FnOnce(&redb::WriteTransaction) -> Result<(), std::io::Error> + Send + 'static,
    {
        let db = self.db.clone();
        let committed = self.committed_unwritten.lock().expect("poisoned").take();
        tokio::task::spawn_blocking(move || {
            let mut txn = db.begin_write().map_err(io)?;
            txn.set_durability(redb::Durability::Immediate)
                .map_err(io)?;
            f(&txn)?;
            if let Some(bytes) = committed {
                put_committed(&txn, &bytes)?;
            }
            txn.commit().map_err(io)
        })
        .await
        .map_err(io)?
    }

    /// Write the newest committed id handed to `save_committed`, if it is not written yet
    /// (at shutdown: a restart then re-applies everything known committed at once).
    pub fn flush_committed(&self) -> Result<(), std::io::Error> {
        let Some(bytes) = self.committed_unwritten.lock().expect("poisoned").take() else {
            return Ok(());
        };
        let txn = self.db.begin_write().map_err(io)?;
        put_committed(&txn, &bytes)?;
        txn.commit().map_err(io)
    }

    async fn write_meta<T: Serialize>(
        &self,
        key: &'static str,
        v: &T,
    ) -> Result<(), std::io::Error> {
        let bytes = encode(v)?;
        self.write(move |txn| {
            let mut t = txn.open_table(META).map_err(io)?;
            t.insert(key, bytes.as_slice()).map_err(io)?;
            Ok(())
        })
        .await
    }

    /// The entries in `range`, in order (what is present of it).
    pub fn entries<RB: RangeBounds<u64>>(
        &self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, std::io::Error> {
        let txn = self.db.begin_read().map_err(io)?;
        let table = txn.open_table(LOG).map_err(io)?;
        let mut out = Vec::new();
        for item in table
            .range::<u64>((range.start_bound().cloned(), range.end_bound().cloned()))
            .map_err(io)?
        {
            let (_, v) = item.map_err(io)?;
            out.push(decode_entry(v.value())?);
        }
        Ok(out)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        self.entries(range)
            .map_err(|e| StorageIOError::read_logs(&e).into())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let read = || -> Result<_, std::io::Error> {
            let last_purged: Option<LogId> =
                self.read_meta::<Option<LogId>>(KEY_LAST_PURGED)?.flatten();
            let txn = self.db.begin_read().map_err(io)?;
            let table = txn.open_table(LOG).map_err(io)?;
            let last = match table.last().map_err(io)? {
                Some((_, v)) => Some(decode_entry(v.value())?.log_id),
                None => last_purged,
            };
            Ok(LogState {
                last_purged_log_id: last_purged,
                last_log_id: last,
            })
        };
        read().map_err(|e| StorageIOError::read_logs(&e).into())
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        self.write_meta(KEY_VOTE, vote)
            .await
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        self.read_meta(KEY_VOTE)
            .map_err(|e| StorageIOError::read_vote(&e).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // openraft awaits this before applying each commit, so any write here would sit on
        // every write's critical path (after the leader's and a follower's log appends). The
        // committed id is only a hint for startup (re-apply what is known committed at once);
        // an older one is safe, so it is kept here and written with the next transaction
        // (append, vote, truncate, purge) or at shutdown.
        let bytes = encode(&committed).map_err(|e| StorageIOError::write(&e))?;
        *self.committed_unwritten.lock().expect("poisoned") = Some(bytes);
        if let Some(c) = committed {
            self.committed.fetch_max(c.index, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let unwritten = self.committed_unwritten.lock().expect("poisoned").clone();
        match unwritten {
            Some(bytes) => decode(&bytes).map_err(|e| StorageIOError::read(&e).into()),
            None => Ok(self
                .read_meta::<Option<LogId>>(KEY_COMMITTED)
                .map_err(|e| StorageIOError::read(&e))?
                .flatten()),
        }
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut rows = Vec::new();
        for e in entries {
            let bytes = encode_entry(&e).map_err(|e| StorageIOError::write_logs(&e))?;
            rows.push((e.log_id.index, bytes));
        }
        let result = self
            .write(move |txn| {
                let mut t = txn.open_table(LOG).map_err(io)?;
                for (index, bytes) in &rows {
                    t.insert(*index, bytes.as_slice()).map_err(io)?;
                }
                Ok(())
            })
            .await;
        match result {
            Ok(()) => {
                // Durable: only now may openraft count these entries as persisted.
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let err = StorageIOError::write_logs(&e).into();
                callback.log_io_completed(Err(e));
                Err(err)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let from = log_id.index;
        self.write(move |txn| {
            let mut t = txn.open_table(LOG).map_err(io)?;
            t.retain_in::<u64, _>(from.., |_, _| false).map_err(io)?;
            Ok(())
        })
        .await
        .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let upto = log_id.index;
        let bytes = encode(&Some(log_id)).map_err(|e| StorageIOError::write_logs(&e))?;
        // One transaction: the new last-purged id and the removal become durable together.
        self.write(move |txn| {
            let mut m = txn.open_table(META).map_err(io)?;
            m.insert(KEY_LAST_PURGED, bytes.as_slice()).map_err(io)?;
            let mut t = txn.open_table(LOG).map_err(io)?;
            t.retain_in::<u64, _>(..=upto, |_, _| false).map_err(io)?;
            Ok(())
        })
        .await
        .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}
