//! The on-disk layout of one chunk file: header, checksum table, data region offset.
//!
//! Pure encoding and decoding (no IO); see `docs/chunk-format.md`. Public so that the fuzz
//! targets (`fuzz/`) reach the decoders the store uses. Must not depend on anything
//! but `quarry-proto` ids and `crc32c`.

use quarry_proto::{ChunkHandle, ChunkVersion};

use super::BLOCK;

/// First 8 bytes of every chunk file.
pub const MAGIC: [u8; 8] = *b"QRYCHNK\0";
/// Layout version written into the header.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes of the fixed header; the checksum table follows it.
pub const HEADER_BYTES: u64 = 64;
/// The data region starts at a multiple of this (any page size up to 64 KiB, and a whole number
/// of checksum blocks), so it can be memory-mapped as one slice.
pub const DATA_ALIGN: u64 = 64 << 10;
const _: () = assert!(DATA_ALIGN.is_power_of_two());
/// Bytes of the header covered by the header CRC.
const CRC_COVERED: usize = 56;

/// The decoded fixed header of a chunk file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub handle: ChunkHandle,
    pub version: ChunkVersion,
    /// Bytes of data in the chunk.
    pub len: u64,
    /// Entries in the checksum table (the chunk can hold at most `table_entries * BLOCK` bytes).
    pub table_entries: u64,
    /// Where the data region starts.
    pub data_offset: u64,
}

impl Header {
    /// A header for a new, empty chunk able to hold `max_chunk_size` bytes.
    pub fn new(handle: ChunkHandle, version: ChunkVersion, max_chunk_size: u64) -> Header {
        let table_entries = max_chunk_size.div_ceil(BLOCK);
        Header {
            handle,
            version,
            len: 0,
            table_entries,
            data_offset: (HEADER_BYTES + 4 * table_entries).next_multiple_of(DATA_ALIGN),
        }
    }

    /// The most bytes this file can hold.
    pub fn capacity(&self) -> u64 {
        self.table_entries * BLOCK
    }

    /// File offset of block `b`'s checksum.
    pub fn table_offset(b: u64) -> u64 {
        HEADER_BYTES + 4 * b
    }

    pub fn encode(&self) -> [u8; HEADER_BYTES as usize] {
        let mut h = [0u8; HEADER_BYTES as usize];
        h[0..8].copy_from_slice(&MAGIC);
        h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        h[12..16].copy_from_slice(&(BLOCK as u32).to_le_bytes());
        h[16..24].copy_from_slice(&self.handle.0.to_le_bytes());
        h[24..32].copy_from_slice(&self.version.0.to_le_bytes());
        h[32..40].copy_from_slice(&self.len.to_le_bytes());
        h[40..48].copy_from_slice(&self.table_entries.to_le_bytes());
        h[48..56].copy_from_slice(&self.data_offset.to_le_bytes());
        let c = crc32c::crc32c(&h[..CRC_COVERED]);
        h[56..60].copy_from_slice(&c.to_le_bytes());
        h
    }

    /// Decode and validate a header; the error says what is wrong.
    pub fn decode(h: &[u8]) -> Result<Header, String> {
        if h.len() < HEADER_BYTES as usize {
            return Err(format!("short header ({} bytes)", h.len()));
        }
        let u32_at = |o: usize| u32::from_le_bytes(h[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_le_bytes(h[o..o + 8].try_into().expect("8 bytes"));
        if h[0..8] != MAGIC {
            return Err("bad magic".into());
        }
        let want = crc32c::crc32c(&h[..CRC_COVERED]);
        if u32_at(56) != want {
            return Err(format!("header CRC {:#010x} != {want:#010x}", u32_at(56)));
        }
        if u32_at(8) != FORMAT_VERSION {
            return Err(format!("unknown format version {}", u32_at(8)));
        }
        if u64::from(u32_at(12)) != BLOCK {
            return Err(format!("unsupported block size {}", u32_at(12)));
        }
        let header = Header {
            handle: ChunkHandle(u64_at(16)),
            version: ChunkVersion(u64_at(24)),
            len: u64_at(32),
            table_entries: u64_at(40),
            data_offset: u64_at(48),
        };
        let table_end = header
            .table_entries
            .checked_mul(4)
            .and_then(|t| t.checked_add(HEADER_BYTES));
        match table_end {
            Some(end)
                if end <= header.data_offset && header.data_offset & (DATA_ALIGN - 1) == 0 => {}
            _ => return Err("inconsistent table size / data offset".into()),
        }
        if header.table_entries.checked_mul(BLOCK).is_none() || header.len > header.capacity() {
            return Err(format!("length {} exceeds the table", header.len));
        }
        Ok(header)
    }
}

/// The file name of a chunk: `<16 hex digits of the handle>.<version>.chunk`.
pub fn file_name(handle: ChunkHandle, version: ChunkVersion) -> String {
    format!("{}.{}.chunk", handle.hex(), version.0)
}

/// `(handle, version)` from a chunk file name ([`file_name`]); `None` for any other name.
pub fn parse_file_name(name: &str) -> Option<(ChunkHandle, ChunkVersion)> {
    let rest = name.strip_suffix(".chunk")?;
    let (hex, ver) = rest.split_once('.')?;
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    if ver.is_empty() || !ver.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((
        ChunkHandle(u64::from_str_radix(hex, 16).ok()?),
        ChunkVersion(ver.parse().ok()?),
    ))
}

/// The checksums stored in a slice of the checksum table (4 bytes each, little endian); a
/// trailing partial entry is ignored.
pub fn decode_table(raw: &[u8]) -> Vec<u32> {
    raw.chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect()
}

/// The bytes of checksum table entries.
pub fn encode_table(crcs: &[u32]) -> Vec<u8> {
    crcs.iter().flat_map(|c| c.to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            parse_file_name("00000000000000ff.12.chunk"),
            Some((ChunkHandle(255), ChunkVersion(12)))
        );
        assert_eq!(
            parse_file_name(&file_name(ChunkHandle(255), ChunkVersion(12))),
            Some((ChunkHandle(255), ChunkVersion(12)))
        );
        for bad in [
            "ff.1.chunk",
            "00000000000000ff.chunk",
            "00000000000000ff.1.chunk.tmp",
            "x",
        ] {
            assert_eq!(parse_file_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn table_round_trip() {
        let crcs = [0, 1, 0xdead_beef, u32::MAX];
        assert_eq!(decode_table(&encode_table(&crcs)), crcs);
        assert_eq!(decode_table(&[1, 0, 0, 0, 9]), [1]);
    }

    #[test]
    fn header_round_trip_and_corruption() {
        let mut h = Header::new(ChunkHandle(0xabc), ChunkVersion(7), 64 << 20);
        assert_eq!(h.table_entries, 1024);
        assert_eq!(h.data_offset, 64 << 10);
        h.len = 12345;
        let enc = h.encode();
        assert_eq!(Header::decode(&enc), Ok(h));
        for i in 0..60 {
            let mut bad = enc;
            bad[i] ^= 0x10;
            assert!(Header::decode(&bad).is_err(), "byte {i}");
        }
        let small = Header::new(ChunkHandle(1), ChunkVersion(1), 256 << 10);
        assert_eq!((small.table_entries, small.data_offset), (4, DATA_ALIGN));
    }
}
