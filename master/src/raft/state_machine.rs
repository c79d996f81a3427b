//! The Raft state machine: the master's [`Engine`], the last applied log id and the last
//! membership, with snapshots that are the existing checkpoint encoding of the engine
//! (`oplog::encode_checkpoint`, `docs/master-log.md`) plus the Raft metadata.
//!
//! `apply` is deterministic: entries are applied in log order, a normal entry through
//! [`Engine::apply`], a membership entry recorded. The engine itself is not written to disk on
//! every apply; the newest snapshot is, to `<data_dir>/snapshot.qsnap` (written to a `.tmp`,
//! fsynced, renamed, directory fsynced) before openraft hears of it, so a restart loads it and
//! replays only the committed log after it (see `docs/raft.md`).
//!
//! Must not depend on the log store, the network or the service; it does blocking file IO only
//! for snapshots.

use super::{LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig};
use crate::engine::{Engine, Output};
use crate::oplog::{decode_checkpoint, encode_checkpoint, sync_dir};
use anyhow::{bail, Context};
use openraft::storage::RaftStateMachine;
use openraft::{Entry, EntryPayload, RaftSnapshotBuilder, Snapshot, StorageIOError};
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// File name of the persisted snapshot inside the data directory.
pub const SNAPSHOT_FILE: &str = "snapshot.qsnap";
const SNAPSHOT_MAGIC: [u8; 8] = *b"QRYSNAP\0";
const SNAPSHOT_VERSION: u32 = 1;
/// magic (8) + version (4) + crc (4) + meta length (8) + data length (8).
const SNAPSHOT_HEADER_BYTES: usize = 32;

/// Snapshot activity, for metrics and tests.
#[derive(Debug, Default)]
pub struct SnapshotCounters {
    /// Snapshots this node built from its own state.
    pub built: AtomicU64,
    /// Snapshots received from a leader and installed.
    pub installed: AtomicU64,
}

/// The newest snapshot: its metadata and its data (a checkpoint).
#[derive(Clone, Debug)]
struct Current {
    meta: SnapshotMeta,
    data: Arc<Vec<u8>>,
}

/// Encode a snapshot file: header, postcard(meta), then the checkpoint bytes.
pub fn encode_snapshot_file(meta: &SnapshotMeta, data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let meta_bytes = postcard::to_stdvec(meta).context("encode snapshot meta")?;
    let mut crc = crc32c::crc32c(&meta_bytes);
    crc = crc32c::crc32c_append(crc, data);
    let mut out = Vec::with_capacity(SNAPSHOT_HEADER_BYTES + meta_bytes.len() + data.len());
    out.extend_from_slice(&SNAPSHOT_MAGIC);
    out.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&(meta_bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(&meta_bytes);
    out.extend_from_slice(data);
    Ok(out)
}

/// Decode a snapshot file into its metadata and checkpoint bytes; any damage is an error.
pub fn decode_snapshot_file(buf: &[u8]) -> anyhow::Result<(SnapshotMeta, Vec<u8>)> {
    if buf.len() < SNAPSHOT_HEADER_BYTES {
        bail!("short snapshot file ({} bytes)", buf.len());
    }
    if buf[0..8] != SNAPSHOT_MAGIC {
        bail!("bad snapshot magic");
    }
    let version = u32::from_le_bytes(buf[8..12].try_into()?);
    if version != SNAPSHOT_VERSION {
        bail!("unknown snapshot format version {version}");
    }
    let crc = u32::from_le_bytes(buf[12..16].try_into()?);
    let meta_len = u64::from_le_bytes(buf[16..24].try_into()?) as usize;
    let data_len = u64::from_le_bytes(buf[24..32].try_into()?) as usize;
    let rest = &buf[SNAPSHOT_HEADER_BYTES..];
    if meta_len.checked_add(data_len) != Some(rest.len()) {
        bail!(
            "snapshot lengths {meta_len}+{data_len} != {} bytes present",
            rest.len()
        );
    }
    let (meta_bytes, data) = rest.split_at(meta_len);
    if crc32c::crc32c_append(crc32c::crc32c(meta_bytes), data) != crc {
        bail!("snapshot crc mismatch");
    }
    let meta = postcard::from_bytes(meta_bytes).context("decode snapshot meta")?;
    Ok((meta, data.to_vec()))
}

/// Write the snapshot file atomically and durably (tmp, fsync, rename, fsync the directory).
fn persist_snapshot(dir: &Path, meta: &SnapshotMeta, data: &[u8]) -> anyhow::Result<()> {
    let bytes = encode_snapshot_file(meta, data)?;
    let tmp = dir.join(format!("{SNAPSHOT_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(SNAPSHOT_FILE)).context("rename snapshot")?;
    sync_dir(dir)
}

fn as_io(e: anyhow::Error) -> std::io::Error {
    std::io::Error::other(format!("{e:#}"))
}

fn checkpoint_index(last: Option<&LogId>) -> u64 {
    last.map(|l| l.index).unwrap_or(0)
}

/// The state machine handed to openraft. [`StateMachine::engine`] gives the service shared read
/// access to the engine.
pub struct StateMachine {
    dir: PathBuf,
    engine: Arc<RwLock<Engine>>,
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    current: Arc<Mutex<Option<Current>>>,
    counters: Arc<SnapshotCounters>,
    /// Distinguishes snapshots built at the same log id.
    next_snapshot_seq: Arc<AtomicU64>,
}

impl StateMachine {
    /// Open the state machine in `dir`: from the persisted snapshot if there is one, else from
    /// `initial` (which must be the same on every master: it is the state before log index 1).
    pub fn open(dir: &Path, initial: Engine) -> anyhow::Result<StateMachine> {
        std::fs::create_dir_all(dir)?;
        let _ = std::fs::remove_file(dir.join(format!("{SNAPSHOT_FILE}.tmp")));
        let path = dir.join(SNAPSHOT_FILE);
        let (engine, last_applied, last_membership, current) = match std::fs::read(&path) {
            Ok(buf) => {
                let (meta, data) = decode_snapshot_file(&buf)
                    .with_context(|| format!("snapshot {}", path.display()))?;
                let engine = decode_checkpoint(&data, checkpoint_index(meta.last_log_id.as_ref()))?;
                let current = Current {
                    meta: meta.clone(),
                    data: Arc::new(data),
                };
                (
                    engine,
                    meta.last_log_id,
                    meta.last_membership,
                    Some(current),
                )
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                (initial, None, StoredMembership::default(), None)
            }
            Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
        };
        Ok(StateMachine {
            dir: dir.to_path_buf(),
            engine: Arc::new(RwLock::new(engine)),
            last_applied,
            last_membership,
            current: Arc::new(Mutex::new(current)),
            counters: Arc::new(SnapshotCounters::default()),
            next_snapshot_seq: Arc::new(AtomicU64::new(1)),
        })
    }

    /// The engine, shared: the service reads it; only this state machine writes it.
    pub fn engine(&self) -> Arc<RwLock<Engine>> {
        self.engine.clone()
    }

    /// Snapshot counters, shared.
    pub fn counters(&self) -> Arc<SnapshotCounters> {
        self.counters.clone()
    }
}

/// Builds a snapshot from a copy of the state taken when openraft asked for the builder.
pub struct SnapshotBuilder {
    dir: PathBuf,
    /// Taken by `build_snapshot` (a builder builds once).
    engine: Option<Engine>,
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    current: Arc<Mutex<Option<Current>>>,
    counters: Arc<SnapshotCounters>,
    seq: u64,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let last = self.last_applied;
        let snapshot_id = match last {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, self.seq),
            None => format!("0-0-{}", self.seq),
        };
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: self.last_membership.clone(),
            snapshot_id,
        };
        let sig = meta.signature();
        let engine = self.engine.take().ok_or_else(|| {
            StorageIOError::write_snapshot(
                Some(sig.clone()),
                &std::io::Error::other("snapshot builder used twice"),
            )
        })?;
        // Encoding and writing a large engine is blocking work: off the async threads.
        let (dir, m, index) = (
            self.dir.clone(),
            meta.clone(),
            checkpoint_index(last.as_ref()),
        );
        let data = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<u8>> {
            let data = encode_checkpoint(&engine, index)?;
            persist_snapshot(&dir, &m, &data)?;
            Ok(data)
        })
        .await
        .map_err(|e| StorageIOError::write_snapshot(Some(sig.clone()), &e))?
        .map_err(|e| StorageIOError::write_snapshot(Some(sig), &as_io(e)))?;
        *self.current.lock().expect("poisoned") = Some(Current {
            meta: meta.clone(),
            data: Arc::new(data.clone()),
        });
        self.counters.built.fetch_add(1, Ordering::Relaxed);
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.last_applied, self.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<super::Response>, StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut engine = self.engine.write().expect("poisoned");
        let mut out = Vec::new();
        for entry in entries {
            self.last_applied = Some(entry.log_id);
            let result = match entry.payload {
                EntryPayload::Blank => Ok(Output::Unit),
                EntryPayload::Normal(cmd) => engine.apply(&cmd),
                EntryPayload::Membership(m) => {
                    self.last_membership = StoredMembership::new(Some(entry.log_id), m);
                    Ok(Output::Unit)
                }
            };
            out.push(result);
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            dir: self.dir.clone(),
            engine: Some(self.engine.read().expect("poisoned").clone()),
            last_applied: self.last_applied,
            last_membership: self.last_membership.clone(),
            current: self.current.clone(),
            counters: self.counters.clone(),
            seq: self.next_snapshot_seq.fetch_add(1, Ordering::Relaxed),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let sig = meta.signature();
        // Decoded (any damage is an error and nothing changes), then durable before the state
        // changes and before openraft is told it is installed; blocking work, off the async
        // threads.
        let (dir, m, index) = (
            self.dir.clone(),
            meta.clone(),
            checkpoint_index(meta.last_log_id.as_ref()),
        );
        let (engine, data) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let engine = decode_checkpoint(&data, index)?;
            persist_snapshot(&dir, &m, &data)?;
            Ok((engine, data))
        })
        .await
        .map_err(|e| StorageIOError::write_snapshot(Some(sig.clone()), &e))?
        .map_err(|e| StorageIOError::write_snapshot(Some(sig), &as_io(e)))?;
        *self.engine.write().expect("poisoned") = engine;
        self.last_applied = meta.last_log_id;
        self.last_membership = meta.last_membership.clone();
        *self.current.lock().expect("poisoned") = Some(Current {
            meta: meta.clone(),
            data: Arc::new(data),
        });
        self.counters.installed.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let current = self.current.lock().expect("poisoned").clone();
        Ok(current.map(|c| Snapshot {
            meta: c.meta,
            snapshot: Box::new(Cursor::new(c.data.as_ref().clone())),
        }))
    }
}
