//! [`MemStore`]: an in-memory [`ChunkStore`] with the semantics of the file store, for tests.
//!
//! It keeps per-block CRC32Cs exactly like the file store, so tests can corrupt a byte with
//! [`MemStore::corrupt`] and watch it being detected. No IO; depends only on the store's shared
//! helpers.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use quarry_proto::{ChunkHandle, ChunkVersion, FsError};

use super::{block_range, blocks_for, check_bound, check_version, verify_blocks, Plan};
use super::{ChunkStore, BLOCK};

#[derive(Debug)]
struct MemChunk {
    version: ChunkVersion,
    data: Vec<u8>,
    crcs: Vec<u32>,
}

impl MemChunk {
    fn verified_block(&self, handle: ChunkHandle, b: u64) -> Result<Vec<u8>, FsError> {
        let (s, e) = block_range(b, self.data.len() as u64);
        let bytes = &self.data[s as usize..e as usize];
        verify_blocks(handle, b, bytes, &self.crcs[b as usize..=b as usize])?;
        Ok(bytes.to_vec())
    }

    fn apply(&mut self, handle: ChunkHandle, plan: &Plan) -> Result<(), FsError> {
        let crcs = plan.crcs(|b| self.verified_block(handle, b))?;
        self.data.resize(plan.new_len as usize, 0);
        let o = plan.offset as usize;
        self.data[o..o + plan.data.len()].copy_from_slice(plan.data);
        self.crcs.resize(blocks_for(plan.new_len) as usize, 0);
        if let Some((first, _)) = plan.touched {
            for (i, c) in crcs.into_iter().enumerate() {
                self.crcs[first as usize + i] = c;
            }
        }
        Ok(())
    }
}

/// An in-memory chunk store (test double).
#[derive(Debug)]
pub struct MemStore {
    max_chunk_size: u64,
    capacity_bytes: u64,
    chunks: Mutex<HashMap<ChunkHandle, MemChunk>>,
}

impl MemStore {
    /// A store whose chunks hold at most `max_chunk_size` bytes and whose chunks together hold at
    /// most `capacity_bytes` (more gives `NoSpace`).
    pub fn new(max_chunk_size: u64, capacity_bytes: u64) -> MemStore {
        MemStore {
            max_chunk_size,
            capacity_bytes,
            chunks: Mutex::new(HashMap::new()),
        }
    }

    /// Flip all bits of the byte at `offset` of the chunk's data without updating its checksum.
    ///
    /// # Panics
    /// If the chunk does not exist or `offset` is not below its length.
    pub fn corrupt(&self, handle: ChunkHandle, offset: u64) {
        let mut chunks = self.lock();
        let chunk = chunks.get_mut(&handle).expect("corrupt: no such chunk");
        let byte = chunk
            .data
            .get_mut(offset as usize)
            .expect("corrupt: offset past the chunk's end");
        *byte ^= 0xff;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ChunkHandle, MemChunk>> {
        self.chunks.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn used(chunks: &HashMap<ChunkHandle, MemChunk>) -> u64 {
        chunks.values().map(|c| c.data.len() as u64).sum()
    }

    /// Apply `plan` to the chunk after the version and capacity checks.
    fn mutate<'d>(
        &self,
        handle: ChunkHandle,
        version: ChunkVersion,
        plan: impl FnOnce(u64) -> Plan<'d>,
    ) -> Result<(), FsError> {
        let mut chunks = self.lock();
        let used = Self::used(&chunks);
        let chunk = chunks
            .get_mut(&handle)
            .ok_or(FsError::ChunkNotFound(handle.0))?;
        check_version(chunk.version, version)?;
        let plan = plan(chunk.data.len() as u64);
        if plan.new_len > plan.old_len && used + (plan.new_len - plan.old_len) > self.capacity_bytes
        {
            return Err(FsError::NoSpace);
        }
        chunk.apply(handle, &plan)
    }
}

impl ChunkStore for MemStore {
    fn create(&self, handle: ChunkHandle, version: ChunkVersion) -> Result<(), FsError> {
        let mut chunks = self.lock();
        if chunks.contains_key(&handle) {
            return Err(FsError::AlreadyExists);
        }
        chunks.insert(
            handle,
            MemChunk {
                version,
                data: Vec::new(),
                crcs: Vec::new(),
            },
        );
        Ok(())
    }

    fn set_version(&self, handle: ChunkHandle, version: ChunkVersion) -> Result<(), FsError> {
        let mut chunks = self.lock();
        let chunk = chunks
            .get_mut(&handle)
            .ok_or(FsError::ChunkNotFound(handle.0))?;
        if version <= chunk.version {
            return Err(FsError::StaleVersion {
                have: chunk.version.0,
                request: version.0,
            });
        }
        chunk.version = version;
        Ok(())
    }

    fn version(&self, handle: ChunkHandle) -> Option<ChunkVersion> {
        self.lock().get(&handle).map(|c| c.version)
    }

    fn len(&self, handle: ChunkHandle, version: ChunkVersion) -> Result<u64, FsError> {
        let chunks = self.lock();
        let chunk = chunks
            .get(&handle)
            .ok_or(FsError::ChunkNotFound(handle.0))?;
        check_version(chunk.version, version)?;
        Ok(chunk.data.len() as u64)
    }

    fn write(
        &self,
        handle: ChunkHandle,
        version: ChunkVersion,
        offset: u64,
        data: &[u8],
    ) -> Result<(), FsError> {
        check_bound(offset, data.len() as u64, self.max_chunk_size)?;
        if data.is_empty() {
            return self.len(handle, version).map(drop);
        }
        self.mutate(handle, version, |old| Plan::write(old, offset, data))
    }

    fn truncate(
        &self,
        handle: ChunkHandle,
        version: ChunkVersion,
        len: u64,
    ) -> Result<(), FsError> {
        check_bound(len, 0, self.max_chunk_size)?;
        self.mutate(handle, version, |old| Plan::truncate(old, len))
    }

    fn read(
        &self,
        handle: ChunkHandle,
        version: ChunkVersion,
        offset: u64,
        len: u64,
    ) -> Result<Bytes, FsError> {
        let chunks = self.lock();
        let chunk = chunks
            .get(&handle)
            .ok_or(FsError::ChunkNotFound(handle.0))?;
        check_version(chunk.version, version)?;
        let size = chunk.data.len() as u64;
        let end = offset.saturating_add(len).min(size);
        if offset >= end {
            return Ok(Bytes::new());
        }
        let (first, last) = (offset / BLOCK, (end - 1) / BLOCK);
        let (s, e) = (first * BLOCK, block_range(last, size).1);
        verify_blocks(
            handle,
            first,
            &chunk.data[s as usize..e as usize],
            &chunk.crcs[first as usize..=last as usize],
        )?;
        Ok(Bytes::copy_from_slice(
            &chunk.data[offset as usize..end as usize],
        ))
    }

    fn verify(&self, handle: ChunkHandle) -> Result<(), FsError> {
        let chunks = self.lock();
        let chunk = chunks
            .get(&handle)
            .ok_or(FsError::ChunkNotFound(handle.0))?;
        verify_blocks(handle, 0, &chunk.data, &chunk.crcs)
    }

    fn delete(&self, handle: ChunkHandle) -> Result<(), FsError> {
        self.lock()
            .remove(&handle)
            .map(drop)
            .ok_or(FsError::ChunkNotFound(handle.0))
    }

    fn list(&self) -> Vec<(ChunkHandle, ChunkVersion)> {
        let mut out: Vec<_> = self.lock().iter().map(|(h, c)| (*h, c.version)).collect();
        out.sort();
        out
    }

    fn usage(&self) -> (u64, u64) {
        (self.capacity_bytes, Self::used(&self.lock()))
    }

    fn data_file(&self, _handle: ChunkHandle) -> Option<(std::path::PathBuf, u64)> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_gives_no_space_and_keeps_content() {
        let s = MemStore::new(1 << 20, 100_000);
        let (h, v) = (ChunkHandle(1), ChunkVersion(1));
        s.create(h, v).unwrap();
        s.write(h, v, 0, &[7u8; 90_000]).unwrap();
        assert_eq!(s.write(h, v, 90_000, &[1u8; 20_000]), Err(FsError::NoSpace));
        assert_eq!(s.truncate(h, v, 200_000), Err(FsError::NoSpace));
        assert_eq!(s.read(h, v, 0, 1 << 20).unwrap(), vec![7u8; 90_000]);
        assert_eq!(s.usage(), (100_000, 90_000));
        // Overwrites within the length need no space.
        s.write(h, v, 0, &[3u8; 1000]).unwrap();
    }
}
