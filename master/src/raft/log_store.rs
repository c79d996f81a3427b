//! The Raft log and vote, in `<data_dir>/raft-log/`: append-only segment files of checksummed
//! records (one `fdatasync` per append) and a small `meta` file (vote, committed id, last purged
//! id) replaced atomically. Byte layout and crash points: `docs/raft.md`, "The log store".
//!
//! openraft hears of a write only once it is durable: `save_vote` returns, and `append` signals
//! its `LogFlushed` callback, after the `fsync`. `save_committed` writes nothing by itself: the
//! newest committed id rides along with the next `meta` write (vote, purge) and with
//! `flush_committed` at shutdown. openraft awaits each storage call before the next, so writes
//! reach the disk in the order it issued them; they run on the blocking pool under one lock.
//!
//! Entries after the last purged id are also kept in memory (the log holds at most the snapshot
//! policy's entries since the last snapshot plus those kept behind it), so replication reads
//! never touch the disk.
//!
//! A data directory from before this format (`raft.redb`, redb 4) is converted at open and the
//! old file kept as `raft.redb.migrated`.
//!
//! Must not depend on the engine, the state machine or the network: it stores opaque entries.

use super::{LogId, StorageError, TypeConfig};
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{Entry, LogState, RaftLogReader, StorageIOError, Vote};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::ops::RangeBounds;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// The log store's directory inside the data directory.
pub const LOG_DIR: &str = "raft-log";
/// The store of earlier versions (redb), converted at open.
pub const LEGACY_FILE: &str = "raft.redb";
const LEGACY_MIGRATED: &str = "raft.redb.migrated";
const META_FILE: &str = "meta";
/// Held locked (`flock`) while a store is open: one process at a time.
const LOCK_FILE: &str = "lock";
const META_TMP: &str = "meta.tmp";
const META_MAGIC: &[u8; 8] = b"QRYRMETA";
const FORMAT_VERSION: u32 = 1;
const META_HEADER: usize = 20;
const SEGMENT_PREFIX: &str = "seg-";
/// Record header: payload length (u32), crc32c (u32) of index and payload, log index (u64).
const RECORD_HEADER: u64 = 16;
/// Size a segment file is created with (sparse; blocks are allocated as records land). A
/// record that does not fit in what is left of the newest segment starts a new one.
pub const SEGMENT_BYTES: u64 = 64 << 20;

/// What the `meta` file holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Meta {
    vote: Option<Vote<u64>>,
    committed: Option<LogId>,
    last_purged: Option<LogId>,
}

/// One segment file: records of consecutive indexes, the first named in the file name.
struct Segment {
    file: File,
    /// Allocated length of the file.
    size: u64,
    /// Where the next record goes (the end of the last valid record).
    end: u64,
    /// The index the next record in it must have.
    next: u64,
}

/// File state, changed only under its lock on the blocking pool.
struct Io {
    dir: PathBuf,
    /// By the index of their first record.
    segments: BTreeMap<u64, Segment>,
    /// Offset of each stored record (purged ones included, while their segment exists), by
    /// index, with the first index of its segment.
    positions: BTreeMap<u64, (u64, u64)>,
    segment_bytes: u64,
}

/// What openraft reads, kept in memory.
struct Mem {
    entries: BTreeMap<u64, Entry<TypeConfig>>,
    last_log_id: Option<LogId>,
    /// As last written to the `meta` file.
    meta: Meta,
    /// The newest committed id handed to `save_committed` and not written yet.
    committed_unwritten: Option<Option<LogId>>,
}

struct Shared {
    /// The exclusive lock on the directory, released when the last handle goes.
    _lock: File,
    io: Mutex<Io>,
    mem: RwLock<Mem>,
    /// The last committed index saved (for metrics).
    committed: AtomicU64,
}

/// The durable Raft log store. Cheap to clone (the clones share the files and the memory); a
/// clone is also the log reader handed to replication tasks.
#[derive(Clone)]
pub struct LogStore {
    shared: Arc<Shared>,
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

fn record_crc(index: u64, payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&index.to_le_bytes()), payload)
}

/// A record as written: header then payload.
fn encode_record(index: u64, payload: &[u8]) -> Vec<u8> {
    let mut rec = Vec::with_capacity(RECORD_HEADER as usize + payload.len());
    rec.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    rec.extend_from_slice(&record_crc(index, payload).to_le_bytes());
    rec.extend_from_slice(&index.to_le_bytes());
    rec.extend_from_slice(payload);
    rec
}

/// The `meta` file's bytes: magic, version, crc32c of the body, body length, postcard body.
fn encode_meta(meta: &Meta) -> Result<Vec<u8>, std::io::Error> {
    let body = encode(meta)?;
    let mut out = Vec::with_capacity(META_HEADER + body.len());
    out.extend_from_slice(META_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

fn decode_meta(bytes: &[u8]) -> Result<Meta, std::io::Error> {
    let bad =
        |what: &str| std::io::Error::new(ErrorKind::InvalidData, format!("raft meta: {what}"));
    if bytes.len() < META_HEADER || &bytes[..8] != META_MAGIC {
        return Err(bad("not a Quarry raft meta file"));
    }
    let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    if word(8) != FORMAT_VERSION {
        return Err(bad(&format!("format version {} unknown", word(8))));
    }
    let body = &bytes[META_HEADER..];
    if word(16) as usize != body.len() || crc32c::crc32c(body) != word(12) {
        return Err(bad("checksum or length mismatch"));
    }
    decode(body)
}

fn segment_name(first: u64) -> String {
    format!("{SEGMENT_PREFIX}{first:020}")
}

fn sync_dir(dir: &Path) -> Result<(), std::io::Error> {
    File::open(dir)?.sync_all()
}

fn io_err(what: String) -> std::io::Error {
    std::io::Error::new(ErrorKind::InvalidData, what)
}

/// Write `meta` to `dir/meta` atomically (tmp file, fsync, rename, directory fsync).
fn write_meta(dir: &Path, meta: &Meta) -> Result<(), std::io::Error> {
    let bytes = encode_meta(meta)?;
    let tmp = dir.join(META_TMP);
    {
        let f = File::create(&tmp)?;
        f.write_all_at(&bytes, 0)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(META_FILE))?;
    sync_dir(dir)
}

/// What a scan of one segment found.
struct Scanned {
    records: Vec<(u64, u64, Vec<u8>)>,
    /// End of the last valid record.
    end: u64,
    /// Where the scan stopped on something other than the zeros after the last record.
    torn: Option<u64>,
}

/// Read the records of one segment, from offset 0 until zeros (the end), a damaged record, or
/// the end of the file. `expect` is the index the first record must have.
fn scan_segment(file: &File, size: u64, expect: u64) -> Result<Scanned, std::io::Error> {
    let mut records = Vec::new();
    let mut off = 0u64;
    let mut next = expect;
    let mut torn = None;
    while off + RECORD_HEADER <= size {
        let mut hdr = [0u8; RECORD_HEADER as usize];
        file.read_exact_at(&mut hdr, off)?;
        let len = u32::from_le_bytes(hdr[0..4].try_into().expect("4")) as u64;
        let crc = u32::from_le_bytes(hdr[4..8].try_into().expect("4"));
        let index = u64::from_le_bytes(hdr[8..16].try_into().expect("8"));
        if len == 0 && crc == 0 && index == 0 {
            break;
        }
        if len == 0 || off + RECORD_HEADER + len > size {
            torn = Some(off);
            break;
        }
        let mut payload = vec![0u8; len as usize];
        file.read_exact_at(&mut payload, off + RECORD_HEADER)?;
        if index != next || record_crc(index, &payload) != crc {
            torn = Some(off);
            break;
        }
        records.push((index, off, payload));
        off += RECORD_HEADER + len;
        next += 1;
    }
    Ok(Scanned {
        records,
        end: off,
        torn,
    })
}

/// Zero the non-zero bytes of `file` in `[from, size)`, if any, and `fdatasync`.
fn zero_tail(file: &File, from: u64, size: u64) -> Result<(), std::io::Error> {
    const STEP: u64 = 1 << 20;
    let mut buf = vec![0u8; STEP as usize];
    let mut last_dirty = None;
    let mut at = from;
    while at < size {
        let n = STEP.min(size - at) as usize;
        file.read_exact_at(&mut buf[..n], at)?;
        if let Some(p) = buf[..n].iter().rposition(|b| *b != 0) {
            last_dirty = Some(at + p as u64 + 1);
        }
        at += n as u64;
    }
    if let Some(end) = last_dirty {
        let zeros = vec![0u8; STEP as usize];
        let mut at = from;
        while at < end {
            let n = STEP.min(end - at) as usize;
            file.write_all_at(&zeros[..n], at)?;
            at += n as u64;
        }
        file.sync_data()?;
    }
    Ok(())
}

impl Io {
    /// The segment the next record goes to, with room for `need` bytes: the newest one, or a
    /// new one starting at `index` (created, sized, and made durable with its directory entry
    /// before any record is written to it).
    fn segment_for(&mut self, index: u64, need: u64) -> Result<u64, std::io::Error> {
        if let Some((&first, seg)) = self.segments.iter().next_back() {
            if seg.next == index && seg.end + need <= seg.size {
                return Ok(first);
            }
            if seg.end == 0 {
                // Empty (all truncated) and unusable for this record: replaced by a new one
                // (possibly of the same name).
                self.segments.remove(&first);
                std::fs::remove_file(self.dir.join(segment_name(first)))?;
            }
            // Otherwise the old segment is complete (full, or the log jumped past it after a
            // snapshot was installed): what it holds is already durable.
        }
        let size = self.segment_bytes.max(need);
        let path = self.dir.join(segment_name(index));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        file.set_len(size)?;
        file.sync_all()?;
        sync_dir(&self.dir)?;
        self.segments.insert(
            index,
            Segment {
                file,
                size,
                end: 0,
                next: index,
            },
        );
        Ok(index)
    }

    /// Append records (consecutive indexes) and make them durable with one `fdatasync` per
    /// segment written.
    fn append(&mut self, records: &[(u64, Vec<u8>)]) -> Result<(), std::io::Error> {
        let mut touched: Vec<u64> = Vec::new();
        for (index, payload) in records {
            let rec = encode_record(*index, payload);
            let first = self.segment_for(*index, rec.len() as u64)?;
            let seg = self.segments.get_mut(&first).expect("segment just chosen");
            seg.file.write_all_at(&rec, seg.end)?;
            self.positions.insert(*index, (first, seg.end));
            seg.end += rec.len() as u64;
            seg.next = index + 1;
            if touched.last() != Some(&first) {
                touched.push(first);
            }
        }
        for first in touched {
            self.segments[&first].file.sync_data()?;
        }
        Ok(())
    }

    /// Remove the records from index `from` on: delete the segments after the one `from` is
    /// in (newest first, so a crash leaves a prefix of the log), then zero its records from
    /// `from` on (so no scan finds them again, even where shorter records are written later).
    fn truncate(&mut self, from: u64) -> Result<(), std::io::Error> {
        let Some(&(first, off)) = self.positions.get(&from) else {
            return Ok(());
        };
        let later: Vec<u64> = self.segments.range(first + 1..).map(|(f, _)| *f).collect();
        for f in later.iter().rev() {
            self.segments.remove(f);
            std::fs::remove_file(self.dir.join(segment_name(*f)))?;
            sync_dir(&self.dir)?;
        }
        let seg = self
            .segments
            .get_mut(&first)
            .expect("position in a known segment");
        let zeros = vec![0u8; (seg.end - off) as usize];
        seg.file.write_all_at(&zeros, off)?;
        seg.file.sync_data()?;
        seg.end = off;
        seg.next = from;
        self.positions.split_off(&from);
        Ok(())
    }

    /// Delete the segments whose every record is at or below `upto` (the newest one too: the
    /// next record then starts a new segment).
    fn purge(&mut self, upto: u64) -> Result<(), std::io::Error> {
        let gone: Vec<u64> = self
            .segments
            .iter()
            .filter(|(_, seg)| seg.next <= upto + 1)
            .map(|(first, _)| *first)
            .collect();
        for first in &gone {
            self.segments.remove(first);
            std::fs::remove_file(self.dir.join(segment_name(*first)))?;
        }
        if !gone.is_empty() {
            sync_dir(&self.dir)?;
        }
        self.positions = self.positions.split_off(&(upto + 1));
        Ok(())
    }
}

impl LogStore {
    /// Open (creating, or converting a `raft.redb` of an earlier version) the log store in
    /// `data_dir`. Damage anywhere but in the last record written is an error: the node must
    /// not start with a log that silently lost entries.
    pub fn open(data_dir: &Path) -> anyhow::Result<LogStore> {
        Self::open_with(data_dir, SEGMENT_BYTES)
    }

    /// [`Self::open`] with segments of `segment_bytes` (tests use small ones).
    pub fn open_with(data_dir: &Path, segment_bytes: u64) -> anyhow::Result<LogStore> {
        std::fs::create_dir_all(data_dir)?;
        let dir = data_dir.join(LOG_DIR);
        if !dir.exists() {
            let legacy = data_dir.join(LEGACY_FILE);
            if legacy.exists() {
                migrate_legacy(data_dir, segment_bytes)?;
            } else {
                std::fs::create_dir(&dir)?;
                sync_dir(data_dir)?;
            }
        }
        let lock = File::create(dir.join(LOCK_FILE))?;
        if let Err(e) = lock.try_lock() {
            anyhow::bail!(
                "raft log {} is in use by another master ({e})",
                dir.display()
            );
        }
        let _ = std::fs::remove_file(dir.join(META_TMP));
        let meta = match std::fs::read(dir.join(META_FILE)) {
            Ok(bytes) => decode_meta(&bytes)?,
            Err(e) if e.kind() == ErrorKind::NotFound => Meta::default(),
            Err(e) => return Err(e.into()),
        };
        let mut firsts = Vec::new();
        for item in std::fs::read_dir(&dir)? {
            let name = item?.file_name();
            let name = name.to_string_lossy();
            if let Some(n) = name.strip_prefix(SEGMENT_PREFIX) {
                let first: u64 = n
                    .parse()
                    .map_err(|_| anyhow::anyhow!("raft log: unexpected file {name}"))?;
                firsts.push(first);
            }
        }
        firsts.sort_unstable();
        let purged = meta.last_purged.map(|p| p.index);
        let mut io = Io {
            dir: dir.clone(),
            segments: BTreeMap::new(),
            positions: BTreeMap::new(),
            segment_bytes,
        };
        let mut entries = BTreeMap::new();
        let mut last_log_id = meta.last_purged;
        let count = firsts.len();
        for (i, first) in firsts.iter().copied().enumerate() {
            let path = dir.join(segment_name(first));
            let file = OpenOptions::new().read(true).write(true).open(&path)?;
            let size = file.metadata()?.len();
            if let Some(prev) = last_log_id {
                if i > 0 && first != prev.index + 1 {
                    anyhow::bail!(
                        "raft log: {} does not follow index {} (a segment is missing)",
                        path.display(),
                        prev.index
                    );
                }
            }
            let scanned = scan_segment(&file, size, first)?;
            if let Some(off) = scanned.torn {
                if i + 1 != count {
                    anyhow::bail!(
                        "raft log: damaged record at offset {off} of {} (not the newest segment)",
                        path.display()
                    );
                }
                // The last record written when the node stopped: never reported durable.
                tracing::warn!(path = %path.display(), off, "raft log: dropping a torn last record");
            }
            if i + 1 == count {
                // Whatever follows the last record (a torn one, or what a truncate had not
                // zeroed yet) is zeroed, so a record written there later cannot be followed
                // by a stale one.
                zero_tail(&file, scanned.end, size)?;
            }
            let records_in = scanned.records.len() as u64;
            for (index, off, payload) in scanned.records {
                let entry = decode_entry(&payload)
                    .map_err(|e| anyhow::anyhow!("raft log: entry {index}: {e}"))?;
                last_log_id = Some(entry.log_id).max(last_log_id);
                io.positions.insert(index, (first, off));
                if purged.is_none_or(|p| index > p) {
                    entries.insert(index, entry);
                }
            }
            io.segments.insert(
                first,
                Segment {
                    file,
                    size,
                    end: scanned.end,
                    next: first + records_in,
                },
            );
        }
        if let (Some(&first), Some(purged)) = (entries.keys().next(), purged) {
            if first != purged + 1 {
                anyhow::bail!("raft log: entries start at {first} but {purged} is the last purged");
            }
        }
        let committed = meta.committed.map(|c| c.index).unwrap_or(0);
        Ok(LogStore {
            shared: Arc::new(Shared {
                _lock: lock,
                io: Mutex::new(io),
                mem: RwLock::new(Mem {
                    entries,
                    last_log_id,
                    meta,
                    committed_unwritten: None,
                }),
                committed: AtomicU64::new(committed),
            }),
        })
    }

    /// How many handles share the store (this one included). openraft's replication tasks
    /// hold log readers and end shortly after the Raft core.
    pub fn handles(&self) -> usize {
        Arc::strong_count(&self.shared)
    }

    /// The vote as last saved (durable), without asking openraft.
    pub fn vote(&self) -> Option<Vote<u64>> {
        self.shared.mem.read().expect("poisoned").meta.vote
    }

    /// The last committed index saved by openraft (0 if none).
    pub fn committed_index(&self) -> u64 {
        self.shared.committed.load(Ordering::Relaxed)
    }

    /// Write `meta` changed by `change` (with the newest committed id not yet written) on the
    /// blocking pool, then make it the one in memory.
    async fn update_meta(
        &self,
        change: impl FnOnce(&mut Meta) + Send + 'static,
        then: impl FnOnce(&mut Io) -> Result<(), std::io::Error> + Send + 'static,
    ) -> Result<(), std::io::Error> {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || {
            let mut io = shared.io.lock().expect("poisoned");
            let mut meta = {
                let mut mem = shared.mem.write().expect("poisoned");
                let mut meta = mem.meta.clone();
                if let Some(c) = mem.committed_unwritten.take() {
                    meta.committed = c;
                }
                change(&mut meta);
                meta
            };
            write_meta(&io.dir, &meta)?;
            std::mem::swap(&mut shared.mem.write().expect("poisoned").meta, &mut meta);
            then(&mut io)
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?
    }

    /// Write the newest committed id handed to `save_committed`, if it is not written yet
    /// (at shutdown: a restart then re-applies everything known committed at once).
    pub fn flush_committed(&self) -> Result<(), std::io::Error> {
        let io = self.shared.io.lock().expect("poisoned");
        let meta = {
            let mut mem = self.shared.mem.write().expect("poisoned");
            let Some(c) = mem.committed_unwritten.take() else {
                return Ok(());
            };
            mem.meta.committed = c;
            mem.meta.clone()
        };
        write_meta(&io.dir, &meta)
    }

    /// The entries in `range`, in order (what is present of it).
    pub fn entries<RB: RangeBounds<u64>>(
        &self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, std::io::Error> {
        let mem = self.shared.mem.read().expect("poisoned");
        Ok(mem
            .entries
            .range((range.start_bound().cloned(), range.end_bound().cloned()))
            .map(|(_, e)| e.clone())
            .collect())
    }
}

/// Convert `data_dir/raft.redb` (the log store of earlier versions: tables `raft_log`, index →
/// postcard entry, and `raft_meta`, `vote`/`committed`/`last_purged` → postcard) into a new
/// `raft-log` directory, built aside and renamed into place; the old file is kept as
/// `raft.redb.migrated`.
fn migrate_legacy(data_dir: &Path, segment_bytes: u64) -> anyhow::Result<()> {
    use redb::{ReadableDatabase, ReadableTable, TableDefinition};
    const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
    const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
    let legacy = data_dir.join(LEGACY_FILE);
    let (meta, records) = {
        let db = redb::Database::open(&legacy)?;
        let txn = db.begin_read()?;
        let m = txn.open_table(META)?;
        let get = |key: &str| -> anyhow::Result<Option<LogId>> {
            Ok(match m.get(key)? {
                Some(v) => decode::<Option<LogId>>(v.value())?,
                None => None,
            })
        };
        let vote = match m.get("vote")? {
            Some(v) => Some(decode::<Vote<u64>>(v.value())?),
            None => None,
        };
        let meta = Meta {
            vote,
            committed: get("committed")?,
            last_purged: get("last_purged")?,
        };
        let mut records = Vec::new();
        for item in txn.open_table(LOG)?.iter()? {
            let (k, v) = item?;
            decode_entry(v.value())?;
            records.push((k.value(), v.value().to_vec()));
        }
        (meta, records)
    };
    let tmp = data_dir.join(format!("{LOG_DIR}.tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir(&tmp)?;
    let mut io = Io {
        dir: tmp.clone(),
        segments: BTreeMap::new(),
        positions: BTreeMap::new(),
        segment_bytes,
    };
    io.append(&records)?;
    write_meta(&tmp, &meta)?;
    sync_dir(&tmp)?;
    drop(io);
    std::fs::rename(&tmp, data_dir.join(LOG_DIR))?;
    std::fs::rename(&legacy, data_dir.join(LEGACY_MIGRATED))?;
    sync_dir(data_dir)?;
    tracing::info!(
        entries = records.len(),
        "raft log converted from {LEGACY_FILE} (kept as {LEGACY_MIGRATED})"
    );
    Ok(())
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
        let mem = self.shared.mem.read().expect("poisoned");
        Ok(LogState {
            last_purged_log_id: mem.meta.last_purged,
            last_log_id: mem.last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        let vote = *vote;
        self.update_meta(move |m| m.vote = Some(vote), |_| Ok(()))
            .await
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        Ok(self.shared.mem.read().expect("poisoned").meta.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // openraft awaits this before applying each commit, so any write here would sit on
        // every write's critical path (after the leader's and a follower's log appends). The
        // committed id is only a hint for startup (re-apply what is known committed at once);
        // an older one is safe, so it is kept here and written with the next meta write (vote,
        // purge) or at shutdown.
        self.shared
            .mem
            .write()
            .expect("poisoned")
            .committed_unwritten = Some(committed);
        if let Some(c) = committed {
            self.shared.committed.fetch_max(c.index, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let mem = self.shared.mem.read().expect("poisoned");
        Ok(match mem.committed_unwritten {
            Some(c) => c,
            None => mem.meta.committed,
        })
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
        // Entries at or below the last purged index are covered by a snapshot already (openraft
        // does not send them; its storage suite does): nothing to store.
        let purged = self.shared.mem.read().expect("poisoned").meta.last_purged;
        let entries: Vec<Entry<TypeConfig>> = entries
            .into_iter()
            .filter(|e| purged.is_none_or(|p| e.log_id.index > p.index))
            .collect();
        let Some(start) = entries.first().map(|e| e.log_id.index) else {
            callback.log_io_completed(Ok(()));
            return Ok(());
        };
        let result = (|| {
            let mut records = Vec::with_capacity(entries.len());
            let mem = self.shared.mem.read().expect("poisoned");
            // Appends follow the last entry, or replace entries from `start` on (openraft
            // truncates conflicting entries first; an overwrite is taken as that truncation).
            // A gap would lose entries at the next open: refused.
            let follows = |last: Option<u64>| last.is_none_or(|l| start <= l + 1);
            if !follows(mem.last_log_id.map(|l| l.index)) {
                return Err(io_err(format!(
                    "append from index {start}: the log ends at {:?}",
                    mem.last_log_id.map(|l| l.index)
                )));
            }
            drop(mem);
            for (i, e) in entries.iter().enumerate() {
                if e.log_id.index != start + i as u64 {
                    return Err(io_err(format!(
                        "append: index {} where {} was expected",
                        e.log_id.index,
                        start + i as u64
                    )));
                }
                records.push((e.log_id.index, encode_entry(e)?));
            }
            Ok(records)
        })();
        let result = match result {
            Ok(records) => {
                let shared = Arc::clone(&self.shared);
                tokio::task::spawn_blocking(move || {
                    let mut io = shared.io.lock().expect("poisoned");
                    io.truncate(start)?;
                    io.append(&records)
                })
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))
                .and_then(|r| r)
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                let mut mem = self.shared.mem.write().expect("poisoned");
                mem.entries.split_off(&start);
                for e in entries {
                    mem.last_log_id = Some(e.log_id);
                    mem.entries.insert(e.log_id.index, e);
                }
                drop(mem);
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
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || shared.io.lock().expect("poisoned").truncate(from))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|r| r)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        let mut mem = self.shared.mem.write().expect("poisoned");
        mem.entries.split_off(&from);
        mem.last_log_id = match mem.entries.values().next_back() {
            Some(e) => Some(e.log_id),
            None => mem.meta.last_purged,
        };
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let upto = log_id.index;
        // The new last purged id is durable before any segment goes: a crash in between leaves
        // records at or below it, which the next open skips.
        self.update_meta(
            move |m| m.last_purged = Some(log_id),
            move |io| io.purge(upto),
        )
        .await
        .map_err(|e| StorageIOError::write_logs(&e))?;
        let mut mem = self.shared.mem.write().expect("poisoned");
        let rest = mem.entries.split_off(&(upto + 1));
        mem.entries = rest;
        if mem.last_log_id < Some(log_id) {
            mem.last_log_id = Some(log_id);
        }
        Ok(())
    }
}
