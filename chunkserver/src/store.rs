//! The chunk store: checksummed, versioned chunk replicas on local storage.
//!
//! [`ChunkStore`] is the narrow synchronous interface the chunkserver service calls (from
//! `tokio::task::spawn_blocking`). [`FileStore`] keeps one file per chunk (format in
//! `docs/chunk-format.md`); [`MemStore`] is an in-memory test double with the same semantics.
//! Every block of [`CHECKSUM_BLOCK_BYTES`] carries a CRC32C that is verified before any byte is
//! served. This module does blocking IO only: it must not depend on tokio, the network, the
//! lease/mutation logic, or anything else of the service around it.

mod file;
pub mod format;
mod mem;

pub use file::{FileStore, FD_CACHE_CAPACITY};
pub use format::{DATA_ALIGN, FORMAT_VERSION, HEADER_BYTES, MAGIC};
pub use mem::MemStore;

use quarry_proto::{ChunkHandle, ChunkVersion, FsError, CHECKSUM_BLOCK_BYTES};

/// The store interface of a chunkserver. Every method is blocking and may do disk IO.
pub trait ChunkStore: Send + Sync + 'static {
    /// Create an empty chunk at `version`. AlreadyExists if the handle exists (any version).
    fn create(&self, handle: ChunkHandle, version: ChunkVersion) -> Result<(), FsError>;
    /// Move the chunk to `version` (must be > current, else StaleVersion); durable before return.
    fn set_version(&self, handle: ChunkHandle, version: ChunkVersion) -> Result<(), FsError>;
    fn version(&self, handle: ChunkHandle) -> Option<ChunkVersion>;
    /// Current length in bytes (ChunkNotFound / StaleVersion if version differs).
    fn len(&self, handle: ChunkHandle, version: ChunkVersion) -> Result<u64, FsError>;
    /// Write `data` at `offset`, zero-filling any gap past the current end; updates checksums of
    /// every touched block; durable (data + checksums + length fsynced) before it returns.
    /// offset + len must not exceed max_chunk_size (InvalidArgument). An empty `data` changes
    /// nothing (like `pwrite` of zero bytes).
    fn write(
        &self,
        handle: ChunkHandle,
        version: ChunkVersion,
        offset: u64,
        data: &[u8],
    ) -> Result<(), FsError>;
    /// Set the length (cut or zero-extend), durable before return.
    fn truncate(&self, handle: ChunkHandle, version: ChunkVersion, len: u64)
        -> Result<(), FsError>;
    /// Read up to `len` bytes at `offset` (short at the chunk end, empty past it). Every block the
    /// range touches is verified against its CRC32C before any byte is returned:
    /// FsError::ChecksumMismatch { handle, block } on mismatch — never wrong bytes.
    fn read(
        &self,
        handle: ChunkHandle,
        version: ChunkVersion,
        offset: u64,
        len: u64,
    ) -> Result<bytes::Bytes, FsError>;
    /// Verify every block of the chunk (scrubbing). Ok(()) or ChecksumMismatch.
    fn verify(&self, handle: ChunkHandle) -> Result<(), FsError>;
    fn delete(&self, handle: ChunkHandle) -> Result<(), FsError>;
    /// Every chunk with its version (for the report to the master).
    fn list(&self) -> Vec<(ChunkHandle, ChunkVersion)>;
    /// (capacity_bytes, used_bytes) of the backing storage.
    fn usage(&self) -> (u64, u64);
    /// Path of the chunk file and the offset where its data starts (for local memory-mapped reads
    /// by map tasks later); None for stores without files.
    fn data_file(&self, handle: ChunkHandle) -> Option<(std::path::PathBuf, u64)>;
}

/// Bytes per checksum block (a power of two).
pub const BLOCK: u64 = CHECKSUM_BLOCK_BYTES;
const _: () = assert!(BLOCK.is_power_of_two());
static ZEROS: [u8; BLOCK as usize] = [0; BLOCK as usize];

/// Number of blocks that cover `len` bytes.
pub fn blocks_for(len: u64) -> u64 {
    len.div_ceil(BLOCK)
}

/// Byte range `[start, end)` of block `b` in a chunk of `len` bytes.
pub fn block_range(b: u64, len: u64) -> (u64, u64) {
    (b * BLOCK, ((b + 1) * BLOCK).min(len))
}

/// CRC32C of a block's bytes.
pub fn crc(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

/// The checks every versioned operation makes.
pub(crate) fn check_version(have: ChunkVersion, request: ChunkVersion) -> Result<(), FsError> {
    if have != request {
        return Err(FsError::StaleVersion {
            have: have.0,
            request: request.0,
        });
    }
    Ok(())
}

pub(crate) fn check_bound(offset: u64, len: u64, max: u64) -> Result<u64, FsError> {
    match offset.checked_add(len) {
        Some(end) if end <= max => Ok(end),
        _ => Err(FsError::InvalidArgument(format!(
            "range {offset}+{len} exceeds the maximum chunk size {max}"
        ))),
    }
}

/// One mutation of a chunk's content, planned before any byte is written: afterwards the chunk
/// is `new_len` bytes long, bytes `[offset, offset + data.len())` are `data`, bytes below
/// `old_len` outside that range keep their value, and every other byte is zero.
#[derive(Debug)]
pub struct Plan<'a> {
    pub old_len: u64,
    pub new_len: u64,
    pub offset: u64,
    pub data: &'a [u8],
    /// First and last (inclusive) block whose checksum changes.
    pub touched: Option<(u64, u64)>,
}

impl<'a> Plan<'a> {
    /// A write of non-empty `data` at `offset`.
    pub fn write(old_len: u64, offset: u64, data: &'a [u8]) -> Plan<'a> {
        debug_assert!(!data.is_empty());
        let end = offset + data.len() as u64;
        Plan {
            old_len,
            new_len: old_len.max(end),
            offset,
            data,
            touched: Some((offset.min(old_len) / BLOCK, (end - 1) / BLOCK)),
        }
    }

    /// Cut or zero-extend to `new_len`.
    pub fn truncate(old_len: u64, new_len: u64) -> Plan<'static> {
        let touched = if new_len > old_len {
            Some((old_len / BLOCK, (new_len - 1) / BLOCK))
        } else if new_len < old_len && new_len & (BLOCK - 1) != 0 {
            // The new last block shrinks: its checksum now covers fewer bytes.
            Some((new_len / BLOCK, new_len / BLOCK))
        } else {
            None
        };
        Plan {
            old_len,
            new_len,
            offset: new_len,
            data: &[],
            touched,
        }
    }

    /// Whether computing block `b`'s new checksum needs its old bytes.
    pub fn needs_old(&self, b: u64) -> bool {
        let (bs, be) = block_range(b, self.new_len);
        let old_end = be.min(self.old_len);
        let (ds, de) = (self.offset, self.offset + self.data.len() as u64);
        bs < old_end && !(ds <= bs && de >= old_end)
    }

    /// The new checksums of the touched blocks, in order. `old_block(b)` returns block `b`'s
    /// current bytes (`[b * BLOCK, min((b + 1) * BLOCK, old_len))`), verified against its current
    /// checksum; it is called only for the (at most two) partially overwritten blocks.
    pub fn crcs(
        &self,
        mut old_block: impl FnMut(u64) -> Result<Vec<u8>, FsError>,
    ) -> Result<Vec<u32>, FsError> {
        let Some((first, last)) = self.touched else {
            return Ok(Vec::new());
        };
        let (ds, de) = (self.offset, self.offset + self.data.len() as u64);
        let mut out = Vec::with_capacity((last - first + 1) as usize);
        for b in first..=last {
            let (bs, be) = block_range(b, self.new_len);
            let needs_old = self.needs_old(b);
            let c = if !needs_old && ds <= bs && de >= be {
                crc(&self.data[(bs - ds) as usize..(be - ds) as usize])
            } else if !needs_old && (de <= bs || ds >= be) {
                crc(&ZEROS[..(be - bs) as usize])
            } else {
                let mut buf = vec![0u8; (be - bs) as usize];
                if needs_old {
                    let old = old_block(b)?;
                    let keep = (be.min(self.old_len) - bs) as usize;
                    buf[..keep].copy_from_slice(&old[..keep]);
                }
                let (s, e) = (ds.max(bs), de.min(be));
                if s < e {
                    buf[(s - bs) as usize..(e - bs) as usize]
                        .copy_from_slice(&self.data[(s - ds) as usize..(e - ds) as usize]);
                }
                crc(&buf)
            };
            out.push(c);
        }
        Ok(out)
    }
}

/// Verify `buf`, the bytes of blocks `first..` (the last one possibly partial), against `crcs`.
pub fn verify_blocks(
    handle: ChunkHandle,
    first: u64,
    buf: &[u8],
    crcs: &[u32],
) -> Result<(), FsError> {
    for (i, block) in buf.chunks(BLOCK as usize).enumerate() {
        if crcs.get(i) != Some(&crc(block)) {
            return Err(FsError::ChecksumMismatch {
                handle: handle.0,
                block: first + i as u64,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plan's checksums equal the checksums of the model after applying the mutation.
    fn check(old: &[u8], plan: &Plan) {
        let mut model = old.to_vec();
        model.resize(plan.new_len as usize, 0);
        let (o, e) = (plan.offset as usize, plan.offset as usize + plan.data.len());
        model[o..e].copy_from_slice(plan.data);
        let got = plan
            .crcs(|b| {
                let (s, e) = block_range(b, old.len() as u64);
                Ok(old[s as usize..e as usize].to_vec())
            })
            .unwrap();
        let Some((first, last)) = plan.touched else {
            assert!(got.is_empty());
            return;
        };
        for (i, b) in (first..=last).enumerate() {
            let (s, e) = block_range(b, plan.new_len);
            assert_eq!(got[i], crc(&model[s as usize..e as usize]), "block {b}");
        }
        // Blocks outside the touched range keep their content.
        for b in 0..blocks_for(plan.new_len) {
            if b < first || b > last {
                let (s, e) = block_range(b, plan.new_len);
                let (os, oe) = block_range(b, old.len() as u64);
                assert_eq!((s, e), (os, oe));
                assert_eq!(model[s as usize..e as usize], old[s as usize..e as usize]);
            }
        }
    }

    #[test]
    fn plans_compute_the_checksums_of_the_result() {
        let old: Vec<u8> = (0..150_000u32).map(|i| (i * 7) as u8).collect();
        let data: Vec<u8> = (0..70_000u32).map(|i| (i * 13 + 1) as u8).collect();
        for offset in [
            0u64, 1, 65_535, 65_536, 100_000, 149_999, 150_000, 170_000, 300_000,
        ] {
            for n in [1usize, 100, 65_536, 70_000] {
                check(&old, &Plan::write(old.len() as u64, offset, &data[..n]));
            }
        }
        for len in [
            0u64, 1, 65_536, 65_537, 149_999, 150_000, 150_001, 196_608, 400_000,
        ] {
            check(&old, &Plan::truncate(old.len() as u64, len));
        }
    }
}
