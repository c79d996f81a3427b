//! The chunk file's decoders (`chunkserver/src/store/format.rs`) and checksum table upkeep
//! (`store.rs`). Input: a mode byte, then data.
//!
//! - the 64-byte header: a header that decodes is self-consistent (length within the table,
//!   table before the aligned data offset) and re-encodes to the same bytes (the 4 reserved bytes
//!   aside); with bit 0 of the mode set, the magic, version, block size and CRC are fixed up first
//!   so the field checks are reached;
//! - chunk file names: the canonical name of what a name parses to parses back to it;
//! - checksum table slices: decode then encode gives the whole entries back;
//! - block verification: blocks verify against their own CRCs, and a flipped byte is reported as
//!   a mismatch in its block;
//! - mutation plans (`Plan`): the new CRCs equal those of the chunk after the mutation.

#![no_main]

use libfuzzer_sys::fuzz_target;
use quarry_chunkserver::store::format::{
    decode_table, encode_table, file_name, parse_file_name, Header,
};
use quarry_chunkserver::store::{
    block_range, blocks_for, crc, verify_blocks, Plan, BLOCK, DATA_ALIGN, FORMAT_VERSION,
    HEADER_BYTES, MAGIC,
};
use quarry_proto::{ChunkHandle, FsError};

#[global_allocator]
static ALLOC: quarry_fuzz::CappedAlloc = quarry_fuzz::CappedAlloc;

fn header(mode: u8, data: &[u8]) {
    if data.len() < HEADER_BYTES as usize {
        return;
    }
    let mut raw = [0u8; HEADER_BYTES as usize];
    raw.copy_from_slice(&data[..HEADER_BYTES as usize]);
    if mode & 1 == 1 {
        raw[0..8].copy_from_slice(&MAGIC);
        raw[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        raw[12..16].copy_from_slice(&(BLOCK as u32).to_le_bytes());
        let c = crc32c(&raw[..56]);
        raw[56..60].copy_from_slice(&c.to_le_bytes());
    }
    if let Ok(h) = Header::decode(&raw) {
        assert!(h.len <= h.capacity());
        assert_eq!(h.data_offset % DATA_ALIGN, 0);
        assert!(HEADER_BYTES + 4 * h.table_entries <= h.data_offset);
        let enc = h.encode();
        assert_eq!(enc[..60], raw[..60]);
        assert_eq!(Header::decode(&enc), Ok(h));
    }
}

fn crc32c(b: &[u8]) -> u32 {
    crc(b)
}

fn names(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Some((h, v)) = parse_file_name(s) {
        // The input may spell it another way (upper-case hex, leading zeros in the version; the
        // store renames such a file to its canonical name); the canonical name parses back.
        let canonical = file_name(h, v);
        assert_eq!(parse_file_name(&canonical), Some((h, v)));
        assert!(canonical.len() <= s.len());
    }
}

fn table(data: &[u8]) {
    let crcs = decode_table(data);
    assert_eq!(crcs.len(), data.len() / 4);
    assert_eq!(encode_table(&crcs), data[..crcs.len() * 4]);
}

fn verify(mode: u8, data: &[u8]) {
    let handle = ChunkHandle(7);
    // Small blocks are enough: stretch the input over a few blocks' worth of bytes.
    let len = data.len() * 97 % (3 * BLOCK as usize + 1);
    let bytes: Vec<u8> = (0..len).map(|i| data[i % data.len()] ^ (i as u8)).collect();
    let crcs: Vec<u32> = bytes.chunks(BLOCK as usize).map(crc).collect();
    assert_eq!(crcs.len() as u64, blocks_for(len as u64));
    assert_eq!(verify_blocks(handle, 0, &bytes, &crcs), Ok(()));
    if len > 0 {
        let at = (mode as usize * 7919) % len;
        let mut bad = bytes.clone();
        bad[at] ^= 0x5a;
        assert_eq!(
            verify_blocks(handle, 3, &bad, &crcs),
            Err(FsError::ChecksumMismatch {
                handle: 7,
                block: 3 + at as u64 / BLOCK
            })
        );
    }
}

fn plan(data: &[u8]) {
    if data.len() < 6 {
        return;
    }
    let n = |i: usize| u16::from_le_bytes([data[i], data[i + 1]]) as u64;
    // Lengths up to about 3 blocks, in units that hit block edges often.
    let scale = |v: u64| (v % 200) * (BLOCK / 64) + v % 3;
    let old_len = scale(n(0));
    let old: Vec<u8> = (0..old_len).map(|i| (i * 31 + 7) as u8).collect();
    let model_check = |plan: &Plan, old: &[u8]| {
        let mut model = old.to_vec();
        model.resize(plan.new_len as usize, 0);
        let (o, e) = (plan.offset as usize, plan.offset as usize + plan.data.len());
        model[o..e].copy_from_slice(plan.data);
        let got = plan
            .crcs(|b| {
                let (s, e) = block_range(b, old.len() as u64);
                Ok(old[s as usize..e as usize].to_vec())
            })
            .expect("crcs");
        match plan.touched {
            None => assert!(got.is_empty()),
            Some((first, last)) => {
                assert_eq!(got.len() as u64, last - first + 1);
                for (i, b) in (first..=last).enumerate() {
                    let (s, e) = block_range(b, plan.new_len);
                    assert_eq!(got[i], crc(&model[s as usize..e as usize]), "block {b}");
                }
            }
        }
    };
    if data[4] & 1 == 0 {
        let offset = scale(n(2));
        let len = (scale(u64::from(data[5]) * 3) as usize).max(1);
        let payload: Vec<u8> = (0..len).map(|i| (i * 13 + 1) as u8).collect();
        model_check(&Plan::write(old_len, offset, &payload), &old);
    } else {
        model_check(&Plan::truncate(old_len, scale(n(2))), &old);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode >> 5 {
        0 | 1 => header(mode, rest),
        2 => names(rest),
        3 => table(rest),
        4 | 5 => verify(mode, rest),
        _ => plan(rest),
    }
});
