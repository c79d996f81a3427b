//! `FileStore`-only behaviour: the on-disk format, recovery on open, the file handle cache,
//! parallel use. The shared semantics are in `store_conformance.rs`.

use quarry_chunkserver::store::{ChunkStore, FileStore, DATA_ALIGN, FD_CACHE_CAPACITY, MAGIC};
use quarry_proto::{ChunkHandle, ChunkVersion, FsError, CHECKSUM_BLOCK_BYTES};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

const BLOCK: u64 = CHECKSUM_BLOCK_BYTES;
const MAX: u64 = 256 << 10;

fn pattern(seed: u8, n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u32).wrapping_mul(131).wrapping_add(seed as u32) as u8)
        .collect()
}

fn chunk_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("chunks"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn file_layout_is_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStore::open(dir.path(), 64 << 20).unwrap();
    let h = ChunkHandle(0xab);
    s.create(h, ChunkVersion(3)).unwrap();
    let data = pattern(1, 100_000);
    s.write(h, ChunkVersion(3), 0, &data).unwrap();
    let (path, off) = s.data_file(h).unwrap();
    assert_eq!(path, dir.path().join("chunks/00000000000000ab.3.chunk"));
    assert_eq!(off, DATA_ALIGN);
    let raw = std::fs::read(&path).unwrap();
    assert_eq!(raw.len() as u64, off + data.len() as u64);
    assert_eq!(raw[..8], MAGIC);
    assert_eq!(u64::from_le_bytes(raw[16..24].try_into().unwrap()), 0xab);
    assert_eq!(u64::from_le_bytes(raw[24..32].try_into().unwrap()), 3);
    assert_eq!(u64::from_le_bytes(raw[32..40].try_into().unwrap()), 100_000);
    let crc0 = u32::from_le_bytes(raw[64..68].try_into().unwrap());
    let crc1 = u32::from_le_bytes(raw[68..72].try_into().unwrap());
    assert_eq!(crc0, crc32c::crc32c(&data[..BLOCK as usize]));
    assert_eq!(crc1, crc32c::crc32c(&data[BLOCK as usize..]));
    assert_eq!(raw[off as usize..], data[..]);
    assert_eq!(s.usage().1, 100_000);
}

#[test]
fn reopen_keeps_data_versions_and_checksums() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (ChunkHandle(1), ChunkHandle(2));
    let da = pattern(2, 3 * BLOCK as usize + 5);
    {
        let s = FileStore::open(dir.path(), MAX).unwrap();
        s.create(a, ChunkVersion(1)).unwrap();
        s.write(a, ChunkVersion(1), 0, &da).unwrap();
        s.set_version(a, ChunkVersion(4)).unwrap();
        s.create(b, ChunkVersion(9)).unwrap();
        s.write(b, ChunkVersion(9), 10, b"bee").unwrap();
        s.truncate(b, ChunkVersion(9), 5).unwrap();
        s.create(ChunkHandle(3), ChunkVersion(1)).unwrap();
        s.delete(ChunkHandle(3)).unwrap();
    }
    let s = FileStore::open(dir.path(), MAX).unwrap();
    assert_eq!(s.list(), vec![(a, ChunkVersion(4)), (b, ChunkVersion(9))]);
    assert_eq!(s.read(a, ChunkVersion(4), 0, u64::MAX).unwrap(), da);
    assert_eq!(
        s.read(b, ChunkVersion(9), 0, u64::MAX).unwrap(),
        vec![0u8; 5]
    );
    assert_eq!(s.usage().1, da.len() as u64 + 5);
    s.verify(a).unwrap();
    s.verify(b).unwrap();
    // Checksums survived too: a flipped byte is still caught after another reopen.
    let (path, off) = s.data_file(a).unwrap();
    drop(s);
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&[0x5a], off + 2 * BLOCK + 3).unwrap();
    let s = FileStore::open(dir.path(), MAX).unwrap();
    assert_eq!(
        s.verify(a),
        Err(FsError::ChecksumMismatch {
            handle: 1,
            block: 2
        })
    );
    assert_eq!(
        s.read(a, ChunkVersion(4), 0, BLOCK).unwrap(),
        da[..BLOCK as usize]
    );
}

#[test]
fn torn_version_change_keeps_the_higher_version() {
    let dir = tempfile::tempdir().unwrap();
    let h = ChunkHandle(0x77);
    let v1_name = "0000000000000077.1.chunk";
    let saved = {
        let s = FileStore::open(dir.path(), MAX).unwrap();
        s.create(h, ChunkVersion(1)).unwrap();
        s.write(h, ChunkVersion(1), 0, b"old").unwrap();
        let saved = std::fs::read(dir.path().join("chunks").join(v1_name)).unwrap();
        s.set_version(h, ChunkVersion(2)).unwrap();
        s.write(h, ChunkVersion(2), 0, b"new").unwrap();
        saved
    };
    // A crash left the older version's file behind next to the newer one.
    std::fs::write(dir.path().join("chunks").join(v1_name), saved).unwrap();
    assert_eq!(chunk_files(dir.path()).len(), 2);
    let s = FileStore::open(dir.path(), MAX).unwrap();
    assert_eq!(s.list(), vec![(h, ChunkVersion(2))]);
    assert_eq!(s.read(h, ChunkVersion(2), 0, 10).unwrap(), &b"new"[..]);
    assert_eq!(chunk_files(dir.path()), vec!["0000000000000077.2.chunk"]);
}

#[test]
fn header_newer_than_name_wins() {
    // A crash after the header was rewritten but before the rename.
    let dir = tempfile::tempdir().unwrap();
    let h = ChunkHandle(5);
    {
        let s = FileStore::open(dir.path(), MAX).unwrap();
        s.create(h, ChunkVersion(1)).unwrap();
        s.write(h, ChunkVersion(1), 0, b"data").unwrap();
        s.set_version(h, ChunkVersion(2)).unwrap();
    }
    let chunks = dir.path().join("chunks");
    std::fs::rename(
        chunks.join("0000000000000005.2.chunk"),
        chunks.join("0000000000000005.1.chunk"),
    )
    .unwrap();
    let s = FileStore::open(dir.path(), MAX).unwrap();
    assert_eq!(s.list(), vec![(h, ChunkVersion(2))]);
    assert_eq!(chunk_files(dir.path()), vec!["0000000000000005.2.chunk"]);
    assert_eq!(s.read(h, ChunkVersion(2), 0, 10).unwrap(), &b"data"[..]);
}

#[test]
fn bad_header_moves_file_aside_and_temp_files_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (good, bad) = (ChunkHandle(1), ChunkHandle(2));
    {
        let s = FileStore::open(dir.path(), MAX).unwrap();
        for h in [good, bad] {
            s.create(h, ChunkVersion(1)).unwrap();
            s.write(h, ChunkVersion(1), 0, b"xyz").unwrap();
        }
        let (path, _) = s.data_file(bad).unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        f.write_all_at(&[0xee], 30).unwrap(); // inside the version field
    }
    let chunks = dir.path().join("chunks");
    std::fs::write(chunks.join("0000000000000009.1.chunk.tmp"), b"half-created").unwrap();
    std::fs::write(chunks.join("README"), b"not a chunk").unwrap();
    let s = FileStore::open(dir.path(), MAX).unwrap();
    assert_eq!(s.list(), vec![(good, ChunkVersion(1))]);
    assert_eq!(s.version(bad), None);
    assert!(dir.path().join("corrupt/0000000000000002.1.chunk").exists());
    assert!(!chunks.join("0000000000000009.1.chunk.tmp").exists());
    assert!(chunks.join("README").exists());
    assert_eq!(s.read(good, ChunkVersion(1), 0, 10).unwrap(), &b"xyz"[..]);
    // The master can re-create the bad chunk here.
    s.create(bad, ChunkVersion(1)).unwrap();
}

#[test]
fn crashed_extension_is_cut_back_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let h = ChunkHandle(8);
    let path = {
        let s = FileStore::open(dir.path(), MAX).unwrap();
        s.create(h, ChunkVersion(1)).unwrap();
        s.write(h, ChunkVersion(1), 0, &[1u8; 1000]).unwrap();
        s.data_file(h).unwrap().0
    };
    // Data appended but the header never recorded the new length.
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&[9u8; 5000], DATA_ALIGN + 1000).unwrap();
    drop(f);
    let s = FileStore::open(dir.path(), MAX).unwrap();
    assert_eq!(s.len(h, ChunkVersion(1)), Ok(1000));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), DATA_ALIGN + 1000);
    // Extending now shows zeros, not the stale bytes.
    s.truncate(h, ChunkVersion(1), 3000).unwrap();
    let got = s.read(h, ChunkVersion(1), 1000, 2000).unwrap();
    assert!(got.iter().all(|&b| b == 0));
}

#[test]
fn more_chunks_than_cached_files() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStore::open(dir.path(), MAX).unwrap();
    let n = FD_CACHE_CAPACITY as u64 + 50;
    for i in 0..n {
        s.create(ChunkHandle(i), ChunkVersion(1)).unwrap();
        s.write(ChunkHandle(i), ChunkVersion(1), 0, &i.to_le_bytes())
            .unwrap();
    }
    assert!(s.open_files() <= FD_CACHE_CAPACITY);
    for i in 0..n {
        let got = s.read(ChunkHandle(i), ChunkVersion(1), 0, 8).unwrap();
        assert_eq!(got, &i.to_le_bytes()[..]);
    }
    assert!(s.open_files() <= FD_CACHE_CAPACITY);
    for i in (0..n).step_by(3) {
        s.set_version(ChunkHandle(i), ChunkVersion(2)).unwrap();
        s.write(ChunkHandle(i), ChunkVersion(2), 8, b"!").unwrap();
    }
    assert_eq!(s.len(ChunkHandle(0), ChunkVersion(2)), Ok(9));
}

#[test]
fn parallel_writers_and_readers() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(FileStore::open(dir.path(), MAX).unwrap());
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                // Threads 0..4 own one chunk each; 4..8 write disjoint ranges of one shared chunk.
                let h = ChunkHandle(if t < 4 { t } else { 100 });
                if t < 4 {
                    s.create(h, ChunkVersion(1)).unwrap();
                } else {
                    let _ = s.create(h, ChunkVersion(1));
                }
                let piece = pattern(t as u8, 10_000);
                let base = if t < 4 { 0 } else { (t - 4) * 60_000 };
                for i in 0..5u64 {
                    s.write(h, ChunkVersion(1), base + i * 10_000, &piece)
                        .unwrap();
                    let got = s
                        .read(h, ChunkVersion(1), base + i * 10_000, 10_000)
                        .unwrap();
                    assert_eq!(got, piece);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for h in [0, 1, 2, 3, 100] {
        s.verify(ChunkHandle(h)).unwrap();
    }
    assert_eq!(
        s.len(ChunkHandle(100), ChunkVersion(1)),
        Ok(3 * 60_000 + 50_000)
    );
}

#[test]
fn store_dir_usage_reports_free_space() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStore::open(dir.path(), MAX).unwrap();
    let (cap, used) = s.usage();
    assert_eq!(used, 0);
    assert!(cap > 0, "statvfs gave no free space");
    assert!(FileStore::open(dir.path(), 0).is_err());
}
