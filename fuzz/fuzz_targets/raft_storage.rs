//! The master's Raft storage decoders: log entries as stored in `raft.redb`
//! (`raft::log_store::decode_entry`), snapshot files (`raft::state_machine::decode_snapshot_file`:
//! header, CRC, postcard of the Raft meta, then the checkpoint) and the checkpoint inside
//! (`oplog::decode_checkpoint`: header, CRC, postcard of the `Engine`). Input: a mode byte, then
//! data. Modes 2 and 3 wrap the data in valid headers and CRCs so that the postcard decoders
//! behind the checks are reached. Nothing may panic; whatever decodes must re-encode to bytes
//! that decode to the same value.

#![no_main]

use libfuzzer_sys::fuzz_target;
use quarry_master::oplog::{
    decode_checkpoint, encode_checkpoint, CHECKPOINT_HEADER_BYTES, CHECKPOINT_MAGIC,
    CHECKPOINT_VERSION,
};
use quarry_master::raft::log_store::{decode_entry, encode_entry};
use quarry_master::raft::state_machine::{decode_snapshot_file, encode_snapshot_file};
use quarry_master::raft::SnapshotMeta;

#[global_allocator]
static ALLOC: quarry_fuzz::CappedAlloc = quarry_fuzz::CappedAlloc;

fn entry(data: &[u8]) {
    if let Ok(e) = decode_entry(data) {
        let bytes = encode_entry(&e).expect("encode entry");
        let again = decode_entry(&bytes).expect("re-decode entry");
        assert_eq!(encode_entry(&again).expect("encode entry"), bytes);
        assert_eq!(again.log_id, e.log_id);
    }
}

/// A checkpoint's bytes around `payload`, with a valid header for log `index`.
fn wrap_checkpoint(payload: &[u8], index: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(CHECKPOINT_HEADER_BYTES + payload.len());
    out.extend_from_slice(&CHECKPOINT_MAGIC);
    out.extend_from_slice(&CHECKPOINT_VERSION.to_le_bytes());
    out.extend_from_slice(&crc32c(payload).to_le_bytes());
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn crc32c(b: &[u8]) -> u32 {
    quarry_chunkserver::store::crc(b)
}

fn checkpoint(bytes: &[u8], index: u64) {
    if let Ok(engine) = decode_checkpoint(bytes, index) {
        let enc = encode_checkpoint(&engine, index).expect("encode checkpoint");
        assert_eq!(decode_checkpoint(&enc, index).expect("re-decode"), engine);
    }
}

fn snapshot(file: &[u8]) {
    if let Ok((meta, data)) = decode_snapshot_file(file) {
        let enc = encode_snapshot_file(&meta, &data).expect("encode snapshot");
        let (meta2, data2) = decode_snapshot_file(&enc).expect("re-decode snapshot");
        assert_eq!((&meta2, &data2), (&meta, &data));
        let index = meta.last_log_id.map(|l| l.index).unwrap_or(0);
        checkpoint(&data, index);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => entry(rest),
        1 => snapshot(rest),
        // The data is the engine's postcard, in a valid checkpoint.
        2 => checkpoint(&wrap_checkpoint(rest, 9), 9),
        // The data is the meta's postcard followed by an engine's, in a valid snapshot file
        // (split at the second byte's value).
        _ => {
            let Some((&split, body)) = rest.split_first() else {
                return;
            };
            let split = (split as usize).min(body.len());
            let (meta_bytes, payload) = body.split_at(split);
            let mut file = encode_snapshot_file(&SnapshotMeta::default(), &[]).expect("encode");
            // Replace the default meta with the fuzzed bytes, fixing lengths and CRC.
            let ckpt = wrap_checkpoint(payload, 0);
            let c = crc32c(&[meta_bytes, &ckpt[..]].concat());
            file.truncate(32);
            file[12..16].copy_from_slice(&c.to_le_bytes());
            file[16..24].copy_from_slice(&(meta_bytes.len() as u64).to_le_bytes());
            file[24..32].copy_from_slice(&(ckpt.len() as u64).to_le_bytes());
            file.extend_from_slice(meta_bytes);
            file.extend_from_slice(&ckpt);
            snapshot(&file);
        }
    }
});
