//! The master's durable operation log with checkpoints (see `docs/master-log.md`).
//!
//! Every mutating [`Command`] is appended here (group commit: one write and one `fdatasync` per
//! batch) before its result is released. A checkpoint is the postcard-serialized [`Engine`] at some
//! log index; recovery loads the newest valid checkpoint and replays the records after it.
//!
//! This module does blocking file IO (call it from a blocking thread) and nothing else: it reads no
//! clock (the caller passes `now` for a fresh engine), knows nothing about the network or leases,
//! and interprets commands only by handing them to [`Engine::apply`].
//!
//! Layout of `dir`:
//! - `log-<first index, 20 digits>.qlog`: records `[u32 len LE][u32 crc32c(payload) LE][u64 index LE][payload]`,
//!   payload = postcard([`Command`]);
//! - `checkpoint-<index, 20 digits>.qckp`: a 32-byte header then postcard([`Engine`]);
//! - `*.tmp`: a checkpoint being written; ignored and removed at open.

use crate::engine::{Command, Engine};
use anyhow::{anyhow, bail, Context};
use quarry_proto::Timestamp;
use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Bytes before a record's payload.
pub const RECORD_HEADER_BYTES: usize = 16;
/// Longest record payload accepted; a longer length field is corruption.
pub const MAX_RECORD_BYTES: u32 = 16 << 20;
/// Checkpoint file magic.
pub const CHECKPOINT_MAGIC: [u8; 8] = *b"QRYCKPT\0";
/// Checkpoint format version.
pub const CHECKPOINT_VERSION: u32 = 3;
/// Bytes before a checkpoint's payload.
pub const CHECKPOINT_HEADER_BYTES: usize = 32;

const LOG_PREFIX: &str = "log-";
const LOG_SUFFIX: &str = ".qlog";
const CKPT_PREFIX: &str = "checkpoint-";
const CKPT_SUFFIX: &str = ".qckp";
const TMP_SUFFIX: &str = ".tmp";

fn segment_name(first: u64) -> String {
    format!("{LOG_PREFIX}{first:020}{LOG_SUFFIX}")
}

fn checkpoint_name(index: u64) -> String {
    format!("{CKPT_PREFIX}{index:020}{CKPT_SUFFIX}")
}

fn parse_name(name: &str, prefix: &str, suffix: &str) -> Option<u64> {
    let digits = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Encode one record.
pub fn encode_record(index: u64, cmd: &Command, out: &mut Vec<u8>) -> anyhow::Result<()> {
    let payload = postcard::to_stdvec(cmd).context("encode command")?;
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|l| *l <= MAX_RECORD_BYTES)
        .ok_or_else(|| anyhow!("record of {} bytes too large", payload.len()))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(())
}

/// Decode the record at the start of `buf` if it is intact and carries index `want`
/// (`None` for any index). Returns the command, its index and the record's length in bytes.
fn decode_record(buf: &[u8], want: Option<u64>) -> Option<(Command, u64, usize)> {
    let header = buf.get(..RECORD_HEADER_BYTES)?;
    let len = u32::from_le_bytes(header[0..4].try_into().ok()?);
    let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    let index = u64::from_le_bytes(header[8..16].try_into().ok()?);
    if len == 0 || len > MAX_RECORD_BYTES || want.is_some_and(|w| w != index) {
        return None;
    }
    let payload = buf.get(RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + len as usize)?;
    if crc32c::crc32c(payload) != crc {
        return None;
    }
    let cmd: Command = quarry_proto::decode(payload).ok()?;
    Some((cmd, index, RECORD_HEADER_BYTES + len as usize))
}

/// Parse a segment: the intact records from the start, and the offset where they end.
/// `first` is the index the segment's name promises for its first record.
fn parse_segment(buf: &[u8], first: u64) -> (Vec<(u64, Command)>, usize) {
    let mut records = Vec::new();
    let mut off = 0;
    let mut next = first;
    while off < buf.len() {
        match decode_record(&buf[off..], Some(next)) {
            Some((cmd, index, n)) => {
                records.push((index, cmd));
                off += n;
                next += 1;
            }
            None => break,
        }
    }
    (records, off)
}

/// After a bad record at `bad_off`, is there any intact record with an index at least `min_index`
/// later in the buffer? (If so the damage is in the middle of the log, not a torn tail.)
fn intact_record_after(buf: &[u8], bad_off: usize, min_index: u64) -> Option<(usize, u64)> {
    let mut p = bad_off + 1;
    while p + RECORD_HEADER_BYTES <= buf.len() {
        let index = u64::from_le_bytes(buf[p + 8..p + 16].try_into().expect("8 bytes"));
        if index >= min_index {
            if let Some((_, index, _)) = decode_record(&buf[p..], None) {
                return Some((p, index));
            }
        }
        p += 1;
    }
    None
}

/// A checkpoint file's bytes: header (magic, version, CRC, index, length) and postcard(engine).
pub fn encode_checkpoint(engine: &Engine, index: u64) -> anyhow::Result<Vec<u8>> {
    let payload = postcard::to_stdvec(engine).context("encode engine")?;
    let mut out = Vec::with_capacity(CHECKPOINT_HEADER_BYTES + payload.len());
    out.extend_from_slice(&CHECKPOINT_MAGIC);
    out.extend_from_slice(&CHECKPOINT_VERSION.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// The engine in a checkpoint's bytes ([`encode_checkpoint`]), which must name log `index`; any
/// damage is an error.
pub fn decode_checkpoint(buf: &[u8], index: u64) -> anyhow::Result<Engine> {
    if buf.len() < CHECKPOINT_HEADER_BYTES {
        bail!("short checkpoint ({} bytes)", buf.len());
    }
    if buf[0..8] != CHECKPOINT_MAGIC {
        bail!("bad checkpoint magic");
    }
    let version = u32::from_le_bytes(buf[8..12].try_into()?);
    if version != CHECKPOINT_VERSION {
        bail!("unknown checkpoint format version {version}");
    }
    let crc = u32::from_le_bytes(buf[12..16].try_into()?);
    let hdr_index = u64::from_le_bytes(buf[16..24].try_into()?);
    let len = u64::from_le_bytes(buf[24..32].try_into()?);
    if hdr_index != index {
        bail!("checkpoint header index {hdr_index} != file name index {index}");
    }
    let payload = &buf[CHECKPOINT_HEADER_BYTES..];
    if payload.len() as u64 != len {
        bail!("checkpoint length {len} != {} bytes present", payload.len());
    }
    if crc32c::crc32c(payload) != crc {
        bail!("checkpoint crc mismatch");
    }
    quarry_proto::decode(payload).map_err(|e| anyhow!("decode checkpoint: {e}"))
}

pub(crate) fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("fsync directory {}", dir.display()))
}

struct Listing {
    /// Sorted by first index.
    segments: Vec<u64>,
    /// Sorted by index.
    checkpoints: Vec<u64>,
    temps: Vec<PathBuf>,
}

fn list(dir: &Path) -> anyhow::Result<Listing> {
    let mut l = Listing {
        segments: Vec::new(),
        checkpoints: Vec::new(),
        temps: Vec::new(),
    };
    for entry in fs::read_dir(dir).with_context(|| format!("list {}", dir.display()))? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if let Some(i) = parse_name(&name, LOG_PREFIX, LOG_SUFFIX) {
            l.segments.push(i);
        } else if let Some(i) = parse_name(&name, CKPT_PREFIX, CKPT_SUFFIX) {
            l.checkpoints.push(i);
        } else if name.starts_with(CKPT_PREFIX) && name.ends_with(TMP_SUFFIX) {
            l.temps.push(entry.path());
        }
    }
    l.segments.sort_unstable();
    l.checkpoints.sort_unstable();
    Ok(l)
}

/// The durable operation log of one master. See the module docs.
pub struct OpLog {
    dir: PathBuf,
    /// The segment appends go to.
    file: File,
    seg_first: u64,
    /// Bytes of intact records in `file`.
    seg_len: u64,
    /// Index the next appended record gets.
    next_index: u64,
    /// Newest durable checkpoint.
    ckpt_index: u64,
    /// The previous checkpoint, kept (with the log since it) as a fallback.
    retain_from: u64,
    /// A failed append could not be rolled back: refuse further appends.
    poisoned: bool,
}

impl OpLog {
    /// Open (creating) the log in `dir`: load the newest valid checkpoint (or
    /// `Engine::new(chunk_size, now)` if there is none), replay every record after it, truncate a
    /// torn tail. Returns the engine and the index of the last applied record (the checkpoint's
    /// index if no record follows it; 0 for a fresh log).
    pub fn open(
        dir: &Path,
        chunk_size: u64,
        now: Timestamp,
    ) -> anyhow::Result<(OpLog, Engine, u64)> {
        Self::open_with(dir, || Engine::new(chunk_size, now))
    }

    /// Like [`OpLog::open`], with `fresh` making the engine of a fresh log (and the one replayed
    /// on when no checkpoint is valid); its chunk size is the configured one.
    pub fn open_with(
        dir: &Path,
        fresh: impl Fn() -> Engine,
    ) -> anyhow::Result<(OpLog, Engine, u64)> {
        let chunk_size = fresh().chunk_size();
        fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let listing = list(dir)?;
        for tmp in &listing.temps {
            tracing::info!(path = %tmp.display(), "removing unfinished checkpoint");
            fs::remove_file(tmp).with_context(|| format!("remove {}", tmp.display()))?;
        }

        if listing.segments.is_empty() && listing.checkpoints.is_empty() {
            // A fresh log. Checkpoint 0 pins the root's creation time and the chunk size, so that
            // replays never depend on the `now` of a later open.
            let engine = fresh();
            let bytes = encode_checkpoint(&engine, 0)?;
            write_checkpoint_file(dir, 0, &bytes)?;
            let file = create_segment(dir, 1)?;
            let log = OpLog {
                dir: dir.to_owned(),
                file,
                seg_first: 1,
                seg_len: 0,
                next_index: 1,
                ckpt_index: 0,
                retain_from: 0,
                poisoned: false,
            };
            return Ok((log, engine, 0));
        }

        // Newest valid checkpoint.
        let mut base: Option<(u64, Engine)> = None;
        let mut older = None;
        for &idx in listing.checkpoints.iter().rev() {
            if base.is_some() {
                older = Some(idx);
                break;
            }
            let path = dir.join(checkpoint_name(idx));
            match fs::read(&path)
                .map_err(anyhow::Error::from)
                .and_then(|b| decode_checkpoint(&b, idx))
            {
                Ok(engine) => base = Some((idx, engine)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "ignoring bad checkpoint")
                }
            }
        }
        let (ckpt_index, mut engine) = match base {
            Some(b) => b,
            None => {
                tracing::warn!("no valid checkpoint; replaying the log on an empty namespace");
                (0, fresh())
            }
        };
        if engine.chunk_size() != chunk_size {
            bail!(
                "checkpoint {ckpt_index} has chunk size {}, configured {chunk_size}",
                engine.chunk_size()
            );
        }

        // Segments holding records after the checkpoint: from the last one starting at or before
        // ckpt_index + 1.
        let segs = &listing.segments;
        let start = segs.iter().rposition(|&f| f <= ckpt_index + 1);
        let start = match start {
            Some(s) => s,
            None if segs.is_empty() => 0,
            None => bail!(
                "log gap: checkpoint {ckpt_index} but the oldest segment starts at {}",
                segs[0]
            ),
        };
        let mut next = ckpt_index + 1;
        let mut expected_first: Option<u64> = None;
        let mut last_seg: Option<(u64, u64)> = None; // (first, intact length)
        for (k, &first) in segs.iter().enumerate().skip(start) {
            let is_last = k + 1 == segs.len();
            if let Some(exp) = expected_first {
                if first != exp {
                    bail!("log gap: segment {first} follows records up to {}", exp - 1);
                }
            }
            let path = dir.join(segment_name(first));
            let buf = fs::read(&path).with_context(|| format!("read {}", path.display()))?;
            let (records, intact) = parse_segment(&buf, first);
            if intact < buf.len() {
                let bad_index = first + records.len() as u64;
                if let Some((off, index)) = intact_record_after(&buf, intact, bad_index) {
                    bail!(
                        "log corruption in {}: bad record {bad_index} at offset {intact}, \
                         but intact record {index} at offset {off} follows",
                        path.display()
                    );
                }
                if !is_last {
                    bail!(
                        "log corruption in {}: bad record {bad_index} at offset {intact} \
                         in a sealed segment",
                        path.display()
                    );
                }
                tracing::warn!(
                    path = %path.display(),
                    offset = intact,
                    dropped_bytes = buf.len() - intact,
                    "truncating torn log tail"
                );
                let f = OpenOptions::new().write(true).open(&path)?;
                f.set_len(intact as u64)?;
                f.sync_all()?;
            }
            for (index, cmd) in &records {
                if *index < next {
                    continue; // covered by the checkpoint
                }
                if *index != next {
                    bail!("log gap: record {index} where {next} was expected");
                }
                // Commands are logged before they are applied; one that failed then fails the
                // same way now, changing nothing.
                let _ = engine.apply(cmd);
                next += 1;
            }
            expected_first = Some(first + records.len() as u64);
            last_seg = Some((first, intact as u64));
        }

        let (file, seg_first, seg_len) = match last_seg {
            Some((first, len)) if expected_first == Some(next) => {
                let path = dir.join(segment_name(first));
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .with_context(|| format!("open {}", path.display()))?;
                (file, first, len)
            }
            _ => (create_segment(dir, next)?, next, 0),
        };
        let log = OpLog {
            dir: dir.to_owned(),
            file,
            seg_first,
            seg_len,
            next_index: next,
            ckpt_index,
            retain_from: older.unwrap_or(ckpt_index),
            poisoned: false,
        };
        Ok((log, engine, next - 1))
    }

    /// Index of the last record (or of the checkpoint, if no record follows it).
    pub fn last_index(&self) -> u64 {
        self.next_index - 1
    }

    /// Index of the newest durable checkpoint.
    pub fn checkpoint_index(&self) -> u64 {
        self.ckpt_index
    }

    /// Append records durably: one write and one fdatasync for the whole batch (group commit).
    /// Returns the index of the last record once they are on disk.
    pub fn append(&mut self, cmds: &[Command]) -> anyhow::Result<u64> {
        if self.poisoned {
            bail!("operation log unusable after a failed append");
        }
        if cmds.is_empty() {
            return Ok(self.last_index());
        }
        let mut buf = Vec::new();
        for (i, cmd) in cmds.iter().enumerate() {
            encode_record(self.next_index + i as u64, cmd, &mut buf)?;
        }
        let res = (|| -> std::io::Result<()> {
            self.file.seek(SeekFrom::Start(self.seg_len))?;
            self.file.write_all(&buf)?;
            self.file.sync_data()
        })();
        if let Err(e) = res {
            // Roll back so that a later append does not follow a partial batch.
            let rollback = self
                .file
                .set_len(self.seg_len)
                .and_then(|_| self.file.sync_data());
            if rollback.is_err() {
                self.poisoned = true;
            }
            return Err(anyhow::Error::from(e).context("append to operation log"));
        }
        self.seg_len += buf.len() as u64;
        self.next_index += cmds.len() as u64;
        Ok(self.last_index())
    }

    /// Write a checkpoint of `engine`, which reflects every record up to `index`: temp file, fsync,
    /// rename, fsync the directory. Then, if `index` is the last record, start a new segment; and
    /// delete what is no longer needed. The previous checkpoint and the log since it are kept as a
    /// fallback should the new checkpoint later read back bad.
    pub fn checkpoint(&mut self, engine: &Engine, index: u64) -> anyhow::Result<()> {
        if index > self.last_index() {
            bail!(
                "checkpoint at {index} beyond the last record {}",
                self.last_index()
            );
        }
        if index < self.ckpt_index {
            bail!(
                "checkpoint at {index} older than checkpoint {}",
                self.ckpt_index
            );
        }
        let bytes = encode_checkpoint(engine, index)?;
        write_checkpoint_file(&self.dir, index, &bytes)?;
        if index > self.ckpt_index {
            self.retain_from = self.ckpt_index;
            self.ckpt_index = index;
        }
        if index == self.last_index() && self.seg_len > 0 {
            let file = create_segment(&self.dir, index + 1)?;
            self.file = file;
            self.seg_first = index + 1;
            self.seg_len = 0;
        }
        self.cleanup()
    }

    /// Delete checkpoints other than the newest two generations, and segments whose records are
    /// all at or below the older kept checkpoint.
    fn cleanup(&self) -> anyhow::Result<()> {
        let l = list(&self.dir)?;
        for &c in &l.checkpoints {
            if c != self.ckpt_index && c != self.retain_from && c < self.ckpt_index {
                remove(&self.dir.join(checkpoint_name(c)))?;
            }
        }
        for w in l.segments.windows(2) {
            let (first, next_first) = (w[0], w[1]);
            if first == self.seg_first {
                break;
            }
            if next_first - 1 <= self.retain_from {
                remove(&self.dir.join(segment_name(first)))?;
            }
        }
        Ok(())
    }

    /// Records appended after the newest checkpoint.
    pub fn records_since_checkpoint(&self) -> u64 {
        self.last_index() - self.ckpt_index
    }
}

fn remove(path: &Path) -> anyhow::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(anyhow::Error::from(e).context(format!("remove {}", path.display()))),
    }
}

fn write_checkpoint_file(dir: &Path, index: u64, bytes: &[u8]) -> anyhow::Result<()> {
    let name = checkpoint_name(index);
    let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
    let mut f = File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, dir.join(&name)).with_context(|| format!("rename to {name}"))?;
    sync_dir(dir)
}

fn create_segment(dir: &Path, first: u64) -> anyhow::Result<File> {
    let path = dir.join(segment_name(first));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .with_context(|| format!("create {}", path.display()))?;
    file.sync_all()?;
    sync_dir(dir)?;
    Ok(file)
}
