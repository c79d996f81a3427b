//! Durability and recovery of the operation log.

use quarry_master::engine::{Command, Engine};
use quarry_master::oplog::OpLog;
use quarry_proto::{InodeId, OpId, Timestamp};
use std::fs;
use std::path::{Path, PathBuf};

const CS: u64 = 4096;

fn t(secs: i64) -> Timestamp {
    Timestamp { secs, nanos: 0 }
}

fn mkdir(i: u64) -> Command {
    Command::Mkdir {
        op: OpId::default(),
        parent: InodeId::ROOT,
        name: format!("d{i}"),
        mode: 0o755,
        uid: 0,
        gid: 0,
        time: t(i as i64 + 10),
    }
}

fn open(dir: &Path) -> anyhow::Result<(OpLog, Engine, u64)> {
    OpLog::open(dir, CS, t(1))
}

/// Append commands one batch at a time, applying each to `engine`.
fn append_apply(log: &mut OpLog, engine: &mut Engine, cmds: &[Command]) -> u64 {
    for c in cmds {
        engine.apply(c).unwrap();
    }
    log.append(cmds).unwrap()
}

/// The engine after applying `n` mkdirs (from `from`) on a fresh engine.
fn expected(n: u64) -> Engine {
    let mut e = Engine::new(CS, t(1));
    for i in 1..=n {
        e.apply(&mkdir(i)).unwrap();
    }
    e
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(ext))
        .collect();
    v.sort();
    v
}

fn last_segment(dir: &Path) -> PathBuf {
    files(dir, ".qlog").pop().unwrap()
}

#[test]
fn fresh_open_creates_checkpoint_zero_and_first_segment() {
    let d = tempfile::tempdir().unwrap();
    let (log, e, last) = open(d.path()).unwrap();
    assert_eq!(last, 0);
    assert_eq!(e, Engine::new(CS, t(1)));
    assert_eq!(log.records_since_checkpoint(), 0);
    let names: Vec<String> = fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(
        names,
        [
            "checkpoint-00000000000000000000.qckp",
            "log-00000000000000000001.qlog"
        ]
    );
    // Reopening later with another `now` does not change the root's times.
    drop(log);
    let (_, e2, _) = OpLog::open(d.path(), CS, t(999)).unwrap();
    assert_eq!(e2, e);
}

#[test]
fn append_then_reopen_replays_exactly() {
    let d = tempfile::tempdir().unwrap();
    let (mut log, mut e, _) = open(d.path()).unwrap();
    assert_eq!(append_apply(&mut log, &mut e, &[mkdir(1)]), 1);
    assert_eq!(
        append_apply(&mut log, &mut e, &[mkdir(2), mkdir(3), mkdir(4)]),
        4
    );
    assert_eq!(log.append(&[]).unwrap(), 4);
    assert_eq!(log.records_since_checkpoint(), 4);
    drop(log);
    let (mut log, e2, last) = open(d.path()).unwrap();
    assert_eq!(last, 4);
    assert_eq!(e2, e);
    assert_eq!(e2, expected(4));
    // Appending continues with contiguous indices.
    let mut e2 = e2;
    assert_eq!(append_apply(&mut log, &mut e2, &[mkdir(5)]), 5);
    drop(log);
    let (_, e3, last) = open(d.path()).unwrap();
    assert_eq!((last, e3), (5, expected(5)));
}

#[test]
fn replay_tolerates_failing_command() {
    let d = tempfile::tempdir().unwrap();
    let (mut log, mut e, _) = open(d.path()).unwrap();
    append_apply(&mut log, &mut e, &[mkdir(1)]);
    // Logged although it fails (mkdir of an existing name).
    log.append(&[mkdir(1), mkdir(2)]).unwrap();
    e.apply(&mkdir(2)).unwrap();
    drop(log);
    let (_, e2, last) = open(d.path()).unwrap();
    assert_eq!(last, 3);
    assert_eq!(e2, e);
}

#[test]
fn checkpoint_then_appends_then_reopen() {
    let d = tempfile::tempdir().unwrap();
    let (mut log, mut e, _) = open(d.path()).unwrap();
    let cmds: Vec<_> = (1..=5).map(mkdir).collect();
    append_apply(&mut log, &mut e, &cmds);
    log.checkpoint(&e, 5).unwrap();
    assert_eq!(log.records_since_checkpoint(), 0);
    assert_eq!(log.checkpoint_index(), 5);
    let cmds: Vec<_> = (6..=8).map(mkdir).collect();
    append_apply(&mut log, &mut e, &cmds);
    assert_eq!(log.records_since_checkpoint(), 3);
    // A new segment started at 6.
    assert!(d.path().join("log-00000000000000000006.qlog").exists());
    drop(log);
    let (log, e2, last) = open(d.path()).unwrap();
    assert_eq!(last, 8);
    assert_eq!(e2, expected(8));
    assert_eq!(log.records_since_checkpoint(), 3);
}

#[test]
fn checkpoints_keep_one_previous_generation() {
    let d = tempfile::tempdir().unwrap();
    let (mut log, mut e, _) = open(d.path()).unwrap();
    for round in 0..4u64 {
        let cmds: Vec<_> = (round * 3 + 1..=round * 3 + 3).map(mkdir).collect();
        let last = append_apply(&mut log, &mut e, &cmds);
        log.checkpoint(&e, last).unwrap();
    }
    // Checkpoints 9 and 12; segments from 10 (log since checkpoint 9) and the empty 13.
    let ck: Vec<_> = files(d.path(), ".qckp")
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        ck,
        [
            "checkpoint-00000000000000000009.qckp",
            "checkpoint-00000000000000000012.qckp"
        ]
    );
    let segs: Vec<_> = files(d.path(), ".qlog")
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        segs,
        [
            "log-00000000000000000010.qlog",
            "log-00000000000000000013.qlog"
        ]
    );
    drop(log);
    let (_, e2, last) = open(d.path()).unwrap();
    assert_eq!((last, e2), (12, expected(12)));
}

#[test]
fn checkpoint_behind_last_record_keeps_segment() {
    let d = tempfile::tempdir().unwrap();
    let (mut log, mut e, _) = open(d.path()).unwrap();
    append_apply(&mut log, &mut e, &[mkdir(1), mkdir(2)]);
    let at2 = e.clone();
    append_apply(&mut log, &mut e, &[mkdir(3)]);
    log.checkpoint(&at2, 2).unwrap();
    assert_eq!(log.records_since_checkpoint(), 1);
    assert!(log.checkpoint(&e, 9).is_err(), "beyond the last record");
    drop(log);
    let (_, e2, last) = open(d.path()).unwrap();
    assert_eq!((last, e2), (3, expected(3)));
}

/// Write `n` records in separate batches; returns the directory and the byte length of the last
/// segment before the last record was appended.
fn log_with_records(n: u64) -> (tempfile::TempDir, u64) {
    let d = tempfile::tempdir().unwrap();
    let (mut log, mut e, _) = open(d.path()).unwrap();
    for i in 1..n {
        append_apply(&mut log, &mut e, &[mkdir(i)]);
    }
    let before = fs::metadata(last_segment(d.path())).unwrap().len();
    append_apply(&mut log, &mut e, &[mkdir(n)]);
    (d, before)
}

fn copy_dir(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    for p in files(from, "") {
        fs::copy(&p, to.path().join(p.file_name().unwrap())).unwrap();
    }
    to
}

#[test]
fn torn_tail_at_every_offset_is_truncated() {
    let (d, before) = log_with_records(4);
    let seg = last_segment(d.path());
    let full = fs::metadata(&seg).unwrap().len();
    for cut in before..full {
        let c = copy_dir(d.path());
        let seg = last_segment(c.path());
        fs::OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(cut)
            .unwrap();
        let (mut log, mut e, last) = open(c.path()).unwrap();
        assert_eq!(last, 3, "cut at {cut}");
        assert_eq!(e, expected(3));
        assert_eq!(fs::metadata(&seg).unwrap().len(), before, "tail truncated");
        // The log is usable: the next record gets index 4 and survives a reopen.
        assert_eq!(append_apply(&mut log, &mut e, &[mkdir(4)]), 4);
        drop(log);
        let (_, e2, last) = open(c.path()).unwrap();
        assert_eq!((last, e2), (4, expected(4)));
    }
}

#[test]
fn torn_tail_with_garbage_or_zeros_is_truncated() {
    for fill in [0u8, 0xff, 0x5a] {
        let (d, _) = log_with_records(3);
        let seg = last_segment(d.path());
        let mut bytes = fs::read(&seg).unwrap();
        bytes.extend(std::iter::repeat_n(fill, 100));
        fs::write(&seg, &bytes).unwrap();
        let (_, e, last) = open(d.path()).unwrap();
        assert_eq!((last, e), (3, expected(3)));
    }
}

#[test]
fn bit_flip_in_last_record_is_torn() {
    let (d, before) = log_with_records(4);
    let seg = last_segment(d.path());
    let full = fs::metadata(&seg).unwrap().len();
    for pos in before..full {
        for bit in [0u8, 3, 7] {
            let c = copy_dir(d.path());
            let seg = last_segment(c.path());
            let mut bytes = fs::read(&seg).unwrap();
            bytes[pos as usize] ^= 1 << bit;
            fs::write(&seg, &bytes).unwrap();
            let (_, e, last) = open(c.path()).unwrap();
            assert_eq!(last, 3, "flip at {pos}.{bit}");
            assert_eq!(e, expected(3));
        }
    }
}

#[test]
fn bit_flip_in_middle_record_is_an_error() {
    let (d, _) = log_with_records(5);
    let seg = last_segment(d.path());
    let bytes = fs::read(&seg).unwrap();
    // Record 2 spans the second record's bytes; every record here has the same length.
    let rec = bytes.len() / 5;
    for pos in rec..2 * rec {
        let c = copy_dir(d.path());
        let seg = last_segment(c.path());
        let mut b = bytes.clone();
        b[pos] ^= 0x10;
        fs::write(&seg, &b).unwrap();
        let err = match open(c.path()) {
            Ok(_) => panic!("flip at {pos} accepted"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("corruption"), "{err}");
        // Nothing was truncated.
        assert_eq!(fs::read(&seg).unwrap(), b);
    }
}

#[test]
fn corruption_in_sealed_segment_is_an_error() {
    let d = tempfile::tempdir().unwrap();
    let (mut log, mut e, _) = open(d.path()).unwrap();
    append_apply(&mut log, &mut e, &[mkdir(1), mkdir(2)]);
    // Checkpoint behind the last record: segment 1 stays, and a newer checkpoint at 2 seals it.
    log.checkpoint(&expected(1), 1).unwrap();
    log.checkpoint(&e, 2).unwrap();
    append_apply(&mut log, &mut e, &[mkdir(3)]);
    drop(log);
    // Damage the last record of the sealed first segment and make checkpoint 2 unreadable, so
    // recovery must read segment 1 from checkpoint 1.
    let seg1 = d.path().join("log-00000000000000000001.qlog");
    let mut b = fs::read(&seg1).unwrap();
    let n = b.len();
    b[n - 1] ^= 1;
    fs::write(&seg1, &b).unwrap();
    let ck2 = d.path().join("checkpoint-00000000000000000002.qckp");
    let mut c = fs::read(&ck2).unwrap();
    let n = c.len();
    c[n - 1] ^= 1;
    fs::write(&ck2, &c).unwrap();
    let err = open(d.path()).err().expect("must fail").to_string();
    assert!(err.contains("corruption"), "{err}");
}

#[test]
fn bad_newest_checkpoint_falls_back_to_previous() {
    let d = tempfile::tempdir().unwrap();
    let (mut log, mut e, _) = open(d.path()).unwrap();
    append_apply(&mut log, &mut e, &(1..=3).map(mkdir).collect::<Vec<_>>());
    log.checkpoint(&e, 3).unwrap();
    append_apply(&mut log, &mut e, &(4..=6).map(mkdir).collect::<Vec<_>>());
    log.checkpoint(&e, 6).unwrap();
    append_apply(&mut log, &mut e, &[mkdir(7)]);
    drop(log);
    let ck = d.path().join("checkpoint-00000000000000000006.qckp");
    let good = fs::read(&ck).unwrap();
    // Payload bit flip, header damage, truncation: all fall back to checkpoint 3 + log 4..=7.
    let mut variants = Vec::new();
    let mut v = good.clone();
    let n = v.len();
    v[n - 3] ^= 0x40;
    variants.push(v);
    let mut v = good.clone();
    v[0] = b'X';
    variants.push(v);
    let mut v = good.clone();
    v[16] ^= 1; // index field
    variants.push(v);
    variants.push(good[..good.len() / 2].to_vec());
    variants.push(Vec::new());
    for bad in variants {
        let c = copy_dir(d.path());
        fs::write(c.path().join("checkpoint-00000000000000000006.qckp"), &bad).unwrap();
        let (log, e2, last) = open(c.path()).unwrap();
        assert_eq!(last, 7);
        assert_eq!(e2, expected(7));
        assert_eq!(log.checkpoint_index(), 3);
    }
}

#[test]
fn leftover_checkpoint_temp_file_is_ignored() {
    let d = tempfile::tempdir().unwrap();
    let (mut log, mut e, _) = open(d.path()).unwrap();
    append_apply(&mut log, &mut e, &(1..=3).map(mkdir).collect::<Vec<_>>());
    drop(log);
    // Crash between writing the temp file and renaming it: a partial checkpoint at 3.
    let tmp = d.path().join("checkpoint-00000000000000000003.qckp.tmp");
    fs::write(&tmp, b"QRYCKPT\0partial").unwrap();
    let (_, e2, last) = open(d.path()).unwrap();
    assert_eq!((last, e2), (3, expected(3)));
    assert!(!tmp.exists(), "temp file removed at open");
}

#[test]
fn crash_after_checkpoint_rename_before_new_segment() {
    // The checkpoint at 3 is durable but the log still ends in segment 1: reopen loads the
    // checkpoint, skips records <= 3 and keeps appending to segment 1.
    let d = tempfile::tempdir().unwrap();
    let (mut log, mut e, _) = open(d.path()).unwrap();
    append_apply(&mut log, &mut e, &(1..=3).map(mkdir).collect::<Vec<_>>());
    log.checkpoint(&e, 3).unwrap();
    drop(log);
    let seg4 = d.path().join("log-00000000000000000004.qlog");
    fs::remove_file(&seg4).unwrap();
    let (mut log, mut e2, last) = open(d.path()).unwrap();
    assert_eq!((last, &e2), (3, &e));
    append_apply(&mut log, &mut e2, &[mkdir(4)]);
    drop(log);
    let (_, e3, last) = open(d.path()).unwrap();
    assert_eq!((last, e3), (4, expected(4)));
}

#[test]
fn crash_before_old_segments_deleted() {
    // Old segments and checkpoints left behind are harmless and removed by the next checkpoint.
    let d = tempfile::tempdir().unwrap();
    let (mut log, mut e, _) = open(d.path()).unwrap();
    append_apply(&mut log, &mut e, &(1..=3).map(mkdir).collect::<Vec<_>>());
    let saved = copy_dir(d.path());
    log.checkpoint(&e, 3).unwrap();
    append_apply(&mut log, &mut e, &(4..=6).map(mkdir).collect::<Vec<_>>());
    log.checkpoint(&e, 6).unwrap();
    drop(log);
    // Put back what the checkpoints deleted (checkpoint 0 and segment 1).
    for p in files(saved.path(), "") {
        let dst = d.path().join(p.file_name().unwrap());
        if !dst.exists() {
            fs::copy(&p, dst).unwrap();
        }
    }
    let (mut log, mut e2, last) = open(d.path()).unwrap();
    assert_eq!((last, &e2), (6, &expected(6)));
    append_apply(&mut log, &mut e2, &[mkdir(7)]);
    log.checkpoint(&e2, 7).unwrap();
    assert!(!d
        .path()
        .join("checkpoint-00000000000000000000.qckp")
        .exists());
    assert!(!d.path().join("log-00000000000000000001.qlog").exists());
}

#[test]
fn missing_log_after_checkpoint_is_a_gap() {
    let d = tempfile::tempdir().unwrap();
    let (mut log, mut e, _) = open(d.path()).unwrap();
    append_apply(&mut log, &mut e, &(1..=3).map(mkdir).collect::<Vec<_>>());
    log.checkpoint(&e, 3).unwrap();
    append_apply(&mut log, &mut e, &(4..=5).map(mkdir).collect::<Vec<_>>());
    log.checkpoint(&e, 5).unwrap();
    append_apply(&mut log, &mut e, &[mkdir(6)]);
    drop(log);
    // Lose checkpoint 5 and the segment starting at 4: checkpoint 3 cannot reach record 6.
    fs::remove_file(d.path().join("checkpoint-00000000000000000005.qckp")).unwrap();
    fs::remove_file(d.path().join("log-00000000000000000004.qlog")).unwrap();
    let err = open(d.path()).err().expect("must fail").to_string();
    assert!(err.contains("gap"), "{err}");
}

#[test]
fn chunk_size_mismatch_is_an_error() {
    let d = tempfile::tempdir().unwrap();
    drop(open(d.path()).unwrap());
    assert!(OpLog::open(d.path(), CS * 2, t(1)).is_err());
}

/// Log records written before the trash commands existed still decode to the same commands:
/// postcard tags a variant by its position, so new variants only ever go at the end.
#[test]
fn older_record_payloads_still_decode_and_new_variants_come_last() {
    use quarry_proto::{ClientId, OpId};
    let unlink = Command::Unlink {
        op: OpId {
            client: ClientId(7),
            seq: 9,
        },
        parent: InodeId::ROOT,
        name: "f".into(),
        time: t(5),
    };
    let old_unlink: &[u8] = &[3, 7, 9, 1, 1, b'f', 10, 0];
    assert_eq!(postcard::from_bytes::<Command>(old_unlink).unwrap(), unlink);
    let old_put: &[u8] = &[17, 1, b'k', 0];
    assert_eq!(
        postcard::from_bytes::<Command>(old_put).unwrap(),
        Command::PutRecord {
            key: "k".into(),
            value: None
        }
    );
    let tag = |c: &Command| postcard::to_stdvec(c).unwrap()[0];
    assert_eq!(tag(&Command::SetTrashRetention { ms: 1 }), 18);
    assert_eq!(
        tag(&Command::PurgeTrash {
            op: OpId::default(),
            before: None
        }),
        20
    );
    assert_eq!(
        tag(&Command::SetGoal {
            op: OpId::default(),
            inode: InodeId::ROOT,
            goal: 2,
            recursive: false
        }),
        21
    );
}

/// A fresh log takes its engine from `open_with` (the master gives the root its goal), and
/// checkpoint 0 pins it: a later open with another fresh engine changes nothing.
#[test]
fn open_with_pins_the_fresh_engine() {
    let dir = tempfile::tempdir().unwrap();
    let (_, e, _) =
        OpLog::open_with(dir.path(), || Engine::new(CS, t(1)).with_root_goal(2)).unwrap();
    assert_eq!(e.goal(InodeId::ROOT), Ok(2));
    let (_, e, _) =
        OpLog::open_with(dir.path(), || Engine::new(CS, t(1)).with_root_goal(5)).unwrap();
    assert_eq!(e.goal(InodeId::ROOT), Ok(2));
}
