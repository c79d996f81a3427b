//! Micro-benchmark of `FileStore` (ignored by default):
//! `cargo test -p quarry-chunkserver --release --test store_bench -- --ignored --nocapture`.
//! Writes 256 MiB in 1 MiB writes (each fsynced) across 64 MiB chunks, then reads it back in
//! 1 MiB reads (checksums verified). `QUARRY_BENCH_DIR` picks the directory (default: a temp dir).

use quarry_chunkserver::store::{ChunkStore, FileStore};
use quarry_proto::{ChunkHandle, ChunkVersion, DEFAULT_CHUNK_SIZE};
use std::time::Instant;

#[test]
#[ignore = "benchmark"]
fn store_bench_256mib() {
    const MIB: u64 = 1 << 20;
    const TOTAL: u64 = 256 * MIB;
    let base = std::env::var_os("QUARRY_BENCH_DIR").map(std::path::PathBuf::from);
    let dir = match &base {
        Some(b) => tempfile::tempdir_in(b).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let s = FileStore::open(dir.path(), DEFAULT_CHUNK_SIZE).unwrap();
    let v = ChunkVersion(1);
    let chunks = TOTAL / DEFAULT_CHUNK_SIZE;
    let buf: Vec<u8> = (0..MIB).map(|i| (i * 7 + i / 4096) as u8).collect();
    for c in 0..chunks {
        s.create(ChunkHandle(c), v).unwrap();
    }
    let t = Instant::now();
    for c in 0..chunks {
        for off in (0..DEFAULT_CHUNK_SIZE).step_by(MIB as usize) {
            s.write(ChunkHandle(c), v, off, &buf).unwrap();
        }
    }
    let w = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut n = 0u64;
    for c in 0..chunks {
        for off in (0..DEFAULT_CHUNK_SIZE).step_by(MIB as usize) {
            let got = s.read(ChunkHandle(c), v, off, MIB).unwrap();
            assert_eq!(got.len() as u64, MIB);
            n += got.len() as u64;
        }
    }
    let r = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for c in 0..chunks {
        s.verify(ChunkHandle(c)).unwrap();
    }
    let scrub = t.elapsed().as_secs_f64();
    assert_eq!(n, TOTAL);
    let mib = (TOTAL / MIB) as f64;
    println!(
        "FileStore in {:?}: write {:.0} MiB/s (1 MiB fsynced writes), read {:.0} MiB/s (1 MiB \
         verified reads), verify {:.0} MiB/s",
        dir.path(),
        mib / w,
        mib / r,
        mib / scrub
    );
}
