//! One conformance suite for every `ChunkStore`: each check is a generic function over a
//! [`Harness`], instantiated for `FileStore` and `MemStore` by the `conformance!` macro.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use quarry_chunkserver::store::{ChunkStore, FileStore, MemStore};
use quarry_proto::{ChunkHandle, ChunkVersion, FsError, CHECKSUM_BLOCK_BYTES};
use std::os::unix::fs::FileExt;

const BLOCK: u64 = CHECKSUM_BLOCK_BYTES;
const MAX: u64 = 256 << 10;
const H: ChunkHandle = ChunkHandle(0x1234_5678_9abc_def0);
const V1: ChunkVersion = ChunkVersion(1);

/// A store under test plus what it needs to stay alive, and a way to corrupt a stored byte.
trait Harness {
    type S: ChunkStore;
    fn new(max_chunk_size: u64) -> Self;
    fn store(&self) -> &Self::S;
    /// Flip the byte at `offset` of the chunk's stored data behind the store's back.
    fn corrupt(&self, handle: ChunkHandle, offset: u64);
}

struct FileHarness {
    store: FileStore,
    _dir: tempfile::TempDir,
}

impl Harness for FileHarness {
    type S = FileStore;
    fn new(max: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        FileHarness {
            store: FileStore::open(dir.path(), max).unwrap(),
            _dir: dir,
        }
    }
    fn store(&self) -> &FileStore {
        &self.store
    }
    fn corrupt(&self, handle: ChunkHandle, offset: u64) {
        let (path, data_offset) = self.store.data_file(handle).unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let mut b = [0u8];
        f.read_exact_at(&mut b, data_offset + offset).unwrap();
        b[0] ^= 0xff;
        f.write_all_at(&b, data_offset + offset).unwrap();
    }
}

struct MemHarness(MemStore);

impl Harness for MemHarness {
    type S = MemStore;
    fn new(max: u64) -> Self {
        MemHarness(MemStore::new(max, u64::MAX))
    }
    fn store(&self) -> &MemStore {
        &self.0
    }
    fn corrupt(&self, handle: ChunkHandle, offset: u64) {
        self.0.corrupt(handle, offset)
    }
}

fn pattern(seed: u8, n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| {
            (i as u32)
                .wrapping_mul(31)
                .wrapping_add(seed as u32 * 7 + 1) as u8
        })
        .collect()
}

fn fresh<T: Harness>() -> T {
    let h = T::new(MAX);
    h.store().create(H, V1).unwrap();
    h
}

fn read_all<S: ChunkStore>(s: &S, v: ChunkVersion) -> Vec<u8> {
    s.read(H, v, 0, u64::MAX).unwrap().to_vec()
}

fn create_len_read_empty<T: Harness>() {
    let t = fresh::<T>();
    let s = t.store();
    assert_eq!(s.len(H, V1), Ok(0));
    assert_eq!(s.version(H), Some(V1));
    assert!(s.read(H, V1, 0, 100).unwrap().is_empty());
    assert!(s.read(H, V1, 1000, 100).unwrap().is_empty());
    assert_eq!(s.create(H, V1), Err(FsError::AlreadyExists));
    assert_eq!(s.create(H, ChunkVersion(9)), Err(FsError::AlreadyExists));
    s.verify(H).unwrap();
    let other = ChunkHandle(7);
    assert_eq!(s.len(other, V1), Err(FsError::ChunkNotFound(7)));
    assert_eq!(s.read(other, V1, 0, 1), Err(FsError::ChunkNotFound(7)));
    assert_eq!(s.write(other, V1, 0, b"x"), Err(FsError::ChunkNotFound(7)));
    assert_eq!(s.version(other), None);
}

fn round_trip_across_blocks<T: Harness>() {
    let t = fresh::<T>();
    let s = t.store();
    let data = pattern(1, 3 * BLOCK as usize + 123);
    s.write(H, V1, 0, &data).unwrap();
    assert_eq!(s.len(H, V1), Ok(data.len() as u64));
    assert_eq!(read_all(s, V1), data);
    for (off, n) in [
        (0u64, 1u64),
        (BLOCK - 1, 2),
        (BLOCK, BLOCK),
        (BLOCK - 10, 2 * BLOCK + 20),
        (3 * BLOCK, 123),
        (3 * BLOCK + 100, 1000), // short at the end
        (data.len() as u64, 10), // empty at the end
        (data.len() as u64 + 5, 10),
    ] {
        let got = s.read(H, V1, off, n).unwrap();
        let lo = (off as usize).min(data.len());
        let hi = ((off + n) as usize).min(data.len());
        assert_eq!(got, data[lo..hi], "read {off}+{n}");
    }
    // Unaligned write spanning block boundaries in the middle.
    let patch = pattern(2, 2 * BLOCK as usize);
    let off = BLOCK as usize / 2;
    s.write(H, V1, off as u64, &patch).unwrap();
    let mut model = data.clone();
    model[off..off + patch.len()].copy_from_slice(&patch);
    assert_eq!(read_all(s, V1), model);
    s.verify(H).unwrap();
    // Empty write changes nothing, even past the end; past the maximum it is refused.
    s.write(H, V1, 3 * BLOCK + 1000, &[]).unwrap();
    assert!(matches!(
        s.write(H, V1, 10 * BLOCK, &[]),
        Err(FsError::InvalidArgument(_))
    ));
    assert_eq!(s.len(H, V1), Ok(model.len() as u64));
}

fn gaps_read_zeros<T: Harness>() {
    let t = fresh::<T>();
    let s = t.store();
    s.write(H, V1, 10, b"abc").unwrap();
    s.write(H, V1, 2 * BLOCK + 5, b"xyz").unwrap();
    let all = read_all(s, V1);
    assert_eq!(all.len() as u64, 2 * BLOCK + 8);
    assert_eq!(&all[..10], &[0u8; 10]);
    assert_eq!(&all[10..13], b"abc");
    assert!(all[13..2 * BLOCK as usize + 5].iter().all(|&b| b == 0));
    assert_eq!(&all[2 * BLOCK as usize + 5..], b"xyz");
    s.verify(H).unwrap();
}

fn overwrite<T: Harness>() {
    let t = fresh::<T>();
    let s = t.store();
    s.write(H, V1, 0, &[1u8; 100_000]).unwrap();
    s.write(H, V1, 50, &[2u8; 10]).unwrap();
    s.write(H, V1, 99_990, &[3u8; 20]).unwrap();
    let all = read_all(s, V1);
    assert_eq!(all.len(), 100_010);
    assert_eq!(&all[..50], &[1u8; 50]);
    assert_eq!(&all[50..60], &[2u8; 10]);
    assert!(all[60..99_990].iter().all(|&b| b == 1));
    assert_eq!(&all[99_990..], &[3u8; 20]);
    s.verify(H).unwrap();
}

fn truncate_shrink_then_extend_reads_zeros<T: Harness>() {
    let t = fresh::<T>();
    let s = t.store();
    let data = pattern(3, 2 * BLOCK as usize + 500);
    s.write(H, V1, 0, &data).unwrap();
    s.truncate(H, V1, BLOCK + 7).unwrap();
    assert_eq!(s.len(H, V1), Ok(BLOCK + 7));
    assert_eq!(read_all(s, V1), data[..BLOCK as usize + 7]);
    s.verify(H).unwrap();
    s.truncate(H, V1, 3 * BLOCK).unwrap();
    let all = read_all(s, V1);
    assert_eq!(all[..BLOCK as usize + 7], data[..BLOCK as usize + 7]);
    assert!(
        all[BLOCK as usize + 7..].iter().all(|&b| b == 0),
        "old bytes came back"
    );
    s.verify(H).unwrap();
    // Shrink to a block boundary, then a write past the end leaves zeros in the gap.
    s.truncate(H, V1, BLOCK).unwrap();
    s.write(H, V1, BLOCK + 100, b"z").unwrap();
    let all = read_all(s, V1);
    assert_eq!(all.len() as u64, BLOCK + 101);
    assert!(all[BLOCK as usize..BLOCK as usize + 100]
        .iter()
        .all(|&b| b == 0));
    s.truncate(H, V1, 0).unwrap();
    assert_eq!(s.len(H, V1), Ok(0));
    s.truncate(H, V1, 10).unwrap();
    assert_eq!(read_all(s, V1), vec![0u8; 10]);
    s.verify(H).unwrap();
}

fn set_version_and_stale<T: Harness>() {
    let t = fresh::<T>();
    let s = t.store();
    s.write(H, V1, 0, b"hello").unwrap();
    let v2 = ChunkVersion(2);
    s.set_version(H, v2).unwrap();
    assert_eq!(s.version(H), Some(v2));
    let stale = FsError::StaleVersion {
        have: 2,
        request: 1,
    };
    assert_eq!(s.len(H, V1).unwrap_err(), stale);
    assert_eq!(s.read(H, V1, 0, 5).unwrap_err(), stale);
    assert_eq!(s.write(H, V1, 0, b"x").unwrap_err(), stale);
    assert_eq!(s.truncate(H, V1, 0).unwrap_err(), stale);
    assert_eq!(
        s.len(H, ChunkVersion(3)),
        Err(FsError::StaleVersion {
            have: 2,
            request: 3
        })
    );
    assert_eq!(
        s.set_version(H, v2),
        Err(FsError::StaleVersion {
            have: 2,
            request: 2
        })
    );
    assert_eq!(
        s.set_version(H, V1),
        Err(FsError::StaleVersion {
            have: 2,
            request: 1
        })
    );
    assert_eq!(read_all(s, v2), b"hello");
    s.write(H, v2, 5, b" world").unwrap();
    assert_eq!(read_all(s, v2), b"hello world");
    assert_eq!(s.list(), vec![(H, v2)]);
    assert_eq!(
        s.set_version(ChunkHandle(5), v2),
        Err(FsError::ChunkNotFound(5))
    );
}

fn delete_and_list<T: Harness>() {
    let t = T::new(MAX);
    let s = t.store();
    for i in 1..=5u64 {
        s.create(ChunkHandle(i), ChunkVersion(i * 10)).unwrap();
        s.write(
            ChunkHandle(i),
            ChunkVersion(i * 10),
            0,
            &vec![i as u8; 1000 * i as usize],
        )
        .unwrap();
    }
    let mut l = s.list();
    l.sort();
    assert_eq!(
        l,
        (1..=5u64)
            .map(|i| (ChunkHandle(i), ChunkVersion(i * 10)))
            .collect::<Vec<_>>()
    );
    assert_eq!(s.usage().1, 15_000);
    s.delete(ChunkHandle(3)).unwrap();
    assert_eq!(s.delete(ChunkHandle(3)), Err(FsError::ChunkNotFound(3)));
    assert_eq!(s.version(ChunkHandle(3)), None);
    assert_eq!(
        s.len(ChunkHandle(3), ChunkVersion(30)),
        Err(FsError::ChunkNotFound(3))
    );
    assert_eq!(s.data_file(ChunkHandle(3)), None);
    assert_eq!(s.list().len(), 4);
    assert_eq!(s.usage().1, 12_000);
    let (cap, used) = s.usage();
    assert!(cap >= used);
    // The handle can be created again after the delete.
    s.create(ChunkHandle(3), ChunkVersion(1)).unwrap();
    assert_eq!(s.len(ChunkHandle(3), ChunkVersion(1)), Ok(0));
}

fn max_size_bound<T: Harness>() {
    let t = fresh::<T>();
    let s = t.store();
    s.write(H, V1, MAX - 10, &[9u8; 10]).unwrap();
    assert_eq!(s.len(H, V1), Ok(MAX));
    assert!(matches!(
        s.write(H, V1, MAX - 10, &[9u8; 11]),
        Err(FsError::InvalidArgument(_))
    ));
    assert!(matches!(
        s.write(H, V1, MAX, &[1]),
        Err(FsError::InvalidArgument(_))
    ));
    assert!(matches!(
        s.write(H, V1, u64::MAX, &[1]),
        Err(FsError::InvalidArgument(_))
    ));
    assert!(matches!(
        s.truncate(H, V1, MAX + 1),
        Err(FsError::InvalidArgument(_))
    ));
    assert_eq!(s.len(H, V1), Ok(MAX));
    s.verify(H).unwrap();
}

fn corruption_detected<T: Harness>() {
    let t = fresh::<T>();
    let s = t.store();
    let data = pattern(4, 3 * BLOCK as usize + 1000);
    s.write(H, V1, 0, &data).unwrap();
    t.corrupt(H, BLOCK + 17);
    let bad = FsError::ChecksumMismatch {
        handle: H.0,
        block: 1,
    };
    assert_eq!(s.read(H, V1, BLOCK + 17, 1).unwrap_err(), bad);
    assert_eq!(s.read(H, V1, 0, u64::MAX).unwrap_err(), bad);
    assert_eq!(s.read(H, V1, 2 * BLOCK - 1, 2).unwrap_err(), bad);
    assert_eq!(s.verify(H).unwrap_err(), bad);
    // Other blocks still read fine.
    assert_eq!(s.read(H, V1, 0, BLOCK).unwrap(), data[..BLOCK as usize]);
    assert_eq!(
        s.read(H, V1, 2 * BLOCK, u64::MAX).unwrap(),
        data[2 * BLOCK as usize..]
    );
    // A partial write into the corrupt block must not launder the corruption.
    assert_eq!(s.write(H, V1, BLOCK + 1000, b"x").unwrap_err(), bad);
    assert_eq!(s.verify(H).unwrap_err(), bad);
    // Overwriting the whole block repairs it.
    s.write(H, V1, BLOCK, &data[BLOCK as usize..2 * BLOCK as usize])
        .unwrap();
    s.verify(H).unwrap();
    assert_eq!(read_all(s, V1), data);
    // The first block (whose checksum and data one read fetches together).
    t.corrupt(H, 5);
    let first = FsError::ChecksumMismatch {
        handle: H.0,
        block: 0,
    };
    assert_eq!(s.read(H, V1, 0, 10).unwrap_err(), first);
    assert_eq!(s.read(H, V1, 0, 2 * BLOCK).unwrap_err(), first);
    s.write(H, V1, 0, &data[..BLOCK as usize]).unwrap();
    assert_eq!(s.read(H, V1, 0, 10).unwrap(), data[..10]);
    // The last, partial block.
    t.corrupt(H, 3 * BLOCK + 999);
    assert_eq!(
        s.verify(H),
        Err(FsError::ChecksumMismatch {
            handle: H.0,
            block: 3
        })
    );
    assert_eq!(
        s.read(H, V1, 3 * BLOCK, 1).unwrap_err(),
        FsError::ChecksumMismatch {
            handle: H.0,
            block: 3
        }
    );
}

#[derive(Clone, Debug)]
enum Op {
    Write(u64, Vec<u8>),
    Truncate(u64),
    Read(u64, u64),
}

fn op() -> impl Strategy<Value = Op> {
    let pos = prop_oneof![
        0..MAX,
        (0..5u64, -3i64..3).prop_map(|(b, d)| (b * BLOCK).saturating_add_signed(d).min(MAX)),
    ];
    prop_oneof![
        4 => (pos.clone(), 1usize..(BLOCK as usize * 2), any::<u8>()).prop_map(|(o, n, seed)| {
            let n = n.min((MAX - o) as usize);
            Op::Write(o, pattern(seed, n))
        }),
        1 => pos.clone().prop_map(Op::Truncate),
        3 => (pos, 0..3 * BLOCK).prop_map(|(o, n)| Op::Read(o, n)),
    ]
}

fn model_check<T: Harness>() {
    let mut runner = TestRunner::new(Config {
        cases: 48,
        ..Config::default()
    });
    runner
        .run(&proptest::collection::vec(op(), 1..24), |ops| {
            let t = fresh::<T>();
            let s = t.store();
            let mut model: Vec<u8> = Vec::new();
            for op in ops {
                match op {
                    Op::Write(o, d) => {
                        if d.is_empty() {
                            continue;
                        }
                        s.write(H, V1, o, &d).unwrap();
                        let end = o as usize + d.len();
                        if model.len() < end {
                            model.resize(end, 0);
                        }
                        model[o as usize..end].copy_from_slice(&d);
                    }
                    Op::Truncate(n) => {
                        s.truncate(H, V1, n).unwrap();
                        model.resize(n as usize, 0);
                    }
                    Op::Read(o, n) => {
                        let got = s.read(H, V1, o, n).unwrap();
                        let lo = (o as usize).min(model.len());
                        let hi = ((o + n) as usize).min(model.len());
                        prop_assert_eq!(&got[..], &model[lo..hi]);
                    }
                }
                prop_assert_eq!(s.len(H, V1).unwrap(), model.len() as u64);
            }
            prop_assert_eq!(read_all(s, V1), model);
            prop_assert_eq!(s.verify(H), Ok(()));
            Ok(())
        })
        .unwrap();
}

macro_rules! conformance {
    ($module:ident, $harness:ty) => {
        mod $module {
            use super::*;
            #[test]
            fn create_len_read_empty() {
                super::create_len_read_empty::<$harness>();
            }
            #[test]
            fn round_trip_across_blocks() {
                super::round_trip_across_blocks::<$harness>();
            }
            #[test]
            fn gaps_read_zeros() {
                super::gaps_read_zeros::<$harness>();
            }
            #[test]
            fn overwrite() {
                super::overwrite::<$harness>();
            }
            #[test]
            fn truncate_shrink_then_extend_reads_zeros() {
                super::truncate_shrink_then_extend_reads_zeros::<$harness>();
            }
            #[test]
            fn set_version_and_stale() {
                super::set_version_and_stale::<$harness>();
            }
            #[test]
            fn delete_and_list() {
                super::delete_and_list::<$harness>();
            }
            #[test]
            fn max_size_bound() {
                super::max_size_bound::<$harness>();
            }
            #[test]
            fn corruption_detected() {
                super::corruption_detected::<$harness>();
            }
            #[test]
            fn model_check() {
                super::model_check::<$harness>();
            }
        }
    };
}

conformance!(file_store, FileHarness);
conformance!(mem_store, MemHarness);
