//! Rules of the namespace / chunk-table state machine, one test per rule, plus property tests.

use proptest::prelude::*;
use quarry_master::engine::{ChunkInfo, Command, Counts, Engine, Output};
use quarry_proto::{
    Attr, ChunkHandle, ChunkVersion, ClientId, FileKind, FsError, InodeId, OpId, Timestamp,
    XattrFlags, RENAME_EXCHANGE, RENAME_NOREPLACE,
};
use std::collections::BTreeMap;

const CS: u64 = 1024;
const ROOT: InodeId = InodeId::ROOT;

fn t(secs: i64) -> Timestamp {
    Timestamp { secs, nanos: 0 }
}

/// Internal (exempt) op id.
fn op0() -> OpId {
    OpId::default()
}

fn op(client: u64, seq: u64) -> OpId {
    OpId {
        client: ClientId(client),
        seq,
    }
}

fn new() -> Engine {
    Engine::new(CS, t(1))
}

/// Apply and check the invariants; on failure also check nothing changed.
fn apply(e: &mut Engine, cmd: Command) -> Result<Output, FsError> {
    let before = e.clone();
    let r = e.apply(&cmd);
    if r.is_err() {
        assert_eq!(*e, before, "failed command {cmd:?} changed the engine");
    }
    e.check_invariants().unwrap();
    r
}

fn attr(r: Result<Output, FsError>) -> Attr {
    match r {
        Ok(Output::Attr(a)) => a,
        other => panic!("expected Attr, got {other:?}"),
    }
}

fn mkdir_at(e: &mut Engine, parent: InodeId, name: &str, time: i64) -> Result<Output, FsError> {
    apply(
        e,
        Command::Mkdir {
            op: op0(),
            parent,
            name: name.into(),
            mode: 0o755,
            uid: 1,
            gid: 2,
            time: t(time),
        },
    )
}

fn mkdir(e: &mut Engine, parent: InodeId, name: &str) -> InodeId {
    attr(mkdir_at(e, parent, name, 10)).inode
}

fn create_at(
    e: &mut Engine,
    parent: InodeId,
    name: &str,
    exclusive: bool,
    time: i64,
) -> Result<Output, FsError> {
    apply(
        e,
        Command::Create {
            op: op0(),
            parent,
            name: name.into(),
            mode: 0o644,
            uid: 1,
            gid: 2,
            exclusive,
            time: t(time),
        },
    )
}

fn create(e: &mut Engine, parent: InodeId, name: &str) -> InodeId {
    attr(create_at(e, parent, name, true, 10)).inode
}

fn rename(
    e: &mut Engine,
    sp: InodeId,
    sn: &str,
    dp: InodeId,
    dn: &str,
    time: i64,
) -> Result<Output, FsError> {
    apply(
        e,
        Command::Rename {
            op: op0(),
            src_parent: sp,
            src_name: sn.into(),
            dst_parent: dp,
            dst_name: dn.into(),
            flags: 0,
            time: t(time),
        },
    )
}

fn unlink(e: &mut Engine, parent: InodeId, name: &str, time: i64) -> Result<Output, FsError> {
    apply(
        e,
        Command::Unlink {
            op: op0(),
            parent,
            name: name.into(),
            time: t(time),
        },
    )
}

fn rmdir(e: &mut Engine, parent: InodeId, name: &str, time: i64) -> Result<Output, FsError> {
    apply(
        e,
        Command::Rmdir {
            op: op0(),
            parent,
            name: name.into(),
            time: t(time),
        },
    )
}

fn setattr(
    e: &mut Engine,
    inode: InodeId,
    f: impl FnOnce(&mut Command),
) -> Result<Output, FsError> {
    let mut cmd = Command::SetAttr {
        op: op0(),
        inode,
        mode: None,
        uid: None,
        gid: None,
        size: None,
        atime: None,
        mtime: None,
        clear_suid: false,
        time: t(50),
    };
    f(&mut cmd);
    apply(e, cmd)
}

fn alloc(e: &mut Engine, inode: InodeId, index: u64) -> Result<Output, FsError> {
    apply(
        e,
        Command::AllocateChunk {
            inode,
            index,
            time: t(5),
        },
    )
}

fn handle(r: Result<Output, FsError>) -> ChunkHandle {
    match r {
        Ok(Output::Chunk { handle, .. }) => handle,
        other => panic!("expected Chunk, got {other:?}"),
    }
}

fn commit(e: &mut Engine, inode: InodeId, end: u64) -> Result<Output, FsError> {
    apply(
        e,
        Command::CommitSize {
            op: op0(),
            inode,
            end,
            mtime: t(40),
            time: t(41),
        },
    )
}

fn invalid(r: Result<Output, FsError>) -> bool {
    matches!(r, Err(FsError::InvalidArgument(_)))
}

// ---------------------------------------------------------------- new / queries

#[test]
fn new_engine_has_root() {
    let e = new();
    let root = e.getattr(ROOT).unwrap();
    assert_eq!(
        root,
        Attr {
            inode: ROOT,
            kind: FileKind::Directory,
            mode: 0o755,
            uid: 0,
            gid: 0,
            size: 0,
            nlink: 2,
            rdev: 0,
            atime: t(1),
            mtime: t(1),
            ctime: t(1),
            crtime: t(1),
        }
    );
    assert_eq!(e.chunk_size(), CS);
    assert_eq!(
        e.counts(),
        Counts {
            directories: 1,
            ..Counts::default()
        }
    );
    assert_eq!(e.resolve("/").unwrap(), root);
    e.check_invariants().unwrap();
}

#[test]
fn names_are_validated() {
    let mut e = new();
    for bad in ["", ".", "..", "a/b", "a\0b"] {
        assert!(invalid(mkdir_at(&mut e, ROOT, bad, 2)), "{bad:?}");
        assert!(invalid(create_at(&mut e, ROOT, bad, true, 2)), "{bad:?}");
        assert!(invalid(e.lookup(ROOT, bad).map(Output::Attr)));
    }
    let long = "x".repeat(256);
    assert_eq!(mkdir_at(&mut e, ROOT, &long, 2), Err(FsError::NameTooLong));
    assert!(mkdir_at(&mut e, ROOT, &"x".repeat(255), 2).is_ok());
}

#[test]
fn parent_must_exist_and_be_a_directory() {
    let mut e = new();
    let f = create(&mut e, ROOT, "f");
    assert_eq!(
        mkdir_at(&mut e, InodeId(99), "a", 2),
        Err(FsError::NotFound)
    );
    assert_eq!(mkdir_at(&mut e, f, "a", 2), Err(FsError::NotADirectory));
    assert_eq!(
        create_at(&mut e, InodeId(99), "a", true, 2),
        Err(FsError::NotFound)
    );
    assert_eq!(
        create_at(&mut e, f, "a", true, 2),
        Err(FsError::NotADirectory)
    );
    assert_eq!(unlink(&mut e, f, "a", 2), Err(FsError::NotADirectory));
    assert_eq!(rmdir(&mut e, InodeId(99), "a", 2), Err(FsError::NotFound));
    assert_eq!(e.lookup(f, "a"), Err(FsError::NotADirectory));
    assert_eq!(e.readdir(f, None, 10), Err(FsError::NotADirectory));
    assert_eq!(e.readdir(InodeId(99), None, 10), Err(FsError::NotFound));
}

#[test]
fn lookup_and_getattr() {
    let mut e = new();
    let d = mkdir(&mut e, ROOT, "d");
    assert_eq!(e.lookup(ROOT, "d").unwrap().inode, d);
    assert_eq!(e.lookup(ROOT, "nope"), Err(FsError::NotFound));
    assert_eq!(e.getattr(InodeId(77)), Err(FsError::NotFound));
}

#[test]
fn resolve_paths() {
    let mut e = new();
    let a = mkdir(&mut e, ROOT, "a");
    let b = mkdir(&mut e, a, "b");
    let f = create(&mut e, b, "f");
    assert_eq!(e.resolve("/a/b/f").unwrap().inode, f);
    assert_eq!(e.resolve("//a/./b/../b/").unwrap().inode, b);
    assert_eq!(e.resolve("/a/x"), Err(FsError::NotFound));
    assert_eq!(e.resolve("/a/b/f/g"), Err(FsError::NotADirectory));
    assert_eq!(e.resolve("/a/x/g"), Err(FsError::NotFound));
    assert!(invalid(e.resolve("a/b").map(Output::Attr)));
}

#[test]
fn readdir_pages_in_name_order() {
    let mut e = new();
    for n in ["c", "a", "e", "b", "d"] {
        create(&mut e, ROOT, n);
    }
    mkdir(&mut e, ROOT, "ab");
    let names = |v: &[quarry_proto::DirEntry]| v.iter().map(|d| d.name.clone()).collect::<Vec<_>>();
    let (p1, more) = e.readdir(ROOT, None, 2).unwrap();
    assert_eq!(names(&p1), ["a", "ab"]);
    assert!(more);
    assert_eq!(p1[1].kind, FileKind::Directory);
    assert_eq!(p1[0].kind, FileKind::File);
    let (p2, more) = e.readdir(ROOT, Some("ab"), 3).unwrap();
    assert_eq!(names(&p2), ["b", "c", "d"]);
    assert!(more);
    let (p3, more) = e.readdir(ROOT, Some("d"), 3).unwrap();
    assert_eq!(names(&p3), ["e"]);
    assert!(!more);
    let (p4, more) = e.readdir(ROOT, Some("bb"), 1).unwrap();
    assert_eq!(names(&p4), ["c"]);
    assert!(more);
    let (p5, more) = e.readdir(ROOT, Some("e"), 10).unwrap();
    assert!(p5.is_empty() && !more);
    let (p6, more) = e.readdir(ROOT, None, 0).unwrap();
    assert!(p6.is_empty() && more);
    let (all, more) = e.readdir(ROOT, None, 6).unwrap();
    assert_eq!(all.len(), 6);
    assert!(!more);
}

// ---------------------------------------------------------------- mkdir / create

#[test]
fn mkdir_sets_attrs_times_and_nlink() {
    let mut e = new();
    let a = attr(apply(
        &mut e,
        Command::Mkdir {
            op: op0(),
            parent: ROOT,
            name: "d".into(),
            mode: 0o40755 | 0o1000,
            uid: 7,
            gid: 8,
            time: t(5),
        },
    ));
    assert_eq!(
        a,
        Attr {
            inode: InodeId(2),
            kind: FileKind::Directory,
            mode: 0o1755,
            uid: 7,
            gid: 8,
            size: 0,
            nlink: 2,
            rdev: 0,
            atime: t(5),
            mtime: t(5),
            ctime: t(5),
            crtime: t(5),
        }
    );
    let root = e.getattr(ROOT).unwrap();
    assert_eq!(root.nlink, 3);
    assert_eq!((root.mtime, root.ctime, root.atime), (t(5), t(5), t(1)));
    mkdir(&mut e, a.inode, "sub");
    assert_eq!(e.getattr(a.inode).unwrap().nlink, 3);
    assert_eq!(e.getattr(ROOT).unwrap().nlink, 3);
}

#[test]
fn mkdir_existing_name_fails() {
    let mut e = new();
    mkdir(&mut e, ROOT, "d");
    create(&mut e, ROOT, "f");
    assert_eq!(mkdir_at(&mut e, ROOT, "d", 9), Err(FsError::AlreadyExists));
    assert_eq!(mkdir_at(&mut e, ROOT, "f", 9), Err(FsError::AlreadyExists));
}

#[test]
fn create_sets_attrs_and_parent_times() {
    let mut e = new();
    let d = mkdir(&mut e, ROOT, "d");
    let a = attr(apply(
        &mut e,
        Command::Create {
            op: op0(),
            parent: d,
            name: "f".into(),
            mode: 0o100644,
            uid: 3,
            gid: 4,
            exclusive: true,
            time: t(20),
        },
    ));
    assert_eq!(
        a,
        Attr {
            inode: InodeId(3),
            kind: FileKind::File,
            mode: 0o644,
            uid: 3,
            gid: 4,
            size: 0,
            nlink: 1,
            rdev: 0,
            atime: t(20),
            mtime: t(20),
            ctime: t(20),
            crtime: t(20),
        }
    );
    let p = e.getattr(d).unwrap();
    assert_eq!((p.mtime, p.ctime, p.nlink), (t(20), t(20), 2));
    assert_eq!(e.counts().files, 1);
}

#[test]
fn create_exclusive_and_nonexclusive() {
    let mut e = new();
    let f = attr(create_at(&mut e, ROOT, "f", true, 3));
    mkdir(&mut e, ROOT, "d");
    assert_eq!(
        create_at(&mut e, ROOT, "f", true, 4),
        Err(FsError::AlreadyExists)
    );
    assert_eq!(
        create_at(&mut e, ROOT, "d", true, 4),
        Err(FsError::AlreadyExists)
    );
    // Non-exclusive returns the existing file unchanged, without touching the parent.
    let root_before = e.getattr(ROOT).unwrap();
    assert_eq!(attr(create_at(&mut e, ROOT, "f", false, 4)), f);
    assert_eq!(e.getattr(ROOT).unwrap(), root_before);
    assert_eq!(
        create_at(&mut e, ROOT, "d", false, 4),
        Err(FsError::IsADirectory)
    );
}

#[test]
fn inode_numbers_increase_and_are_never_reused() {
    let mut e = new();
    let a = create(&mut e, ROOT, "a");
    let b = mkdir(&mut e, ROOT, "b");
    assert_eq!((a, b), (InodeId(2), InodeId(3)));
    unlink(&mut e, ROOT, "a", 4).unwrap();
    rmdir(&mut e, ROOT, "b", 4).unwrap();
    assert_eq!(create(&mut e, ROOT, "a"), InodeId(4));
    // A failed command allocates nothing.
    assert!(mkdir_at(&mut e, ROOT, "a", 5).is_err());
    assert_eq!(mkdir(&mut e, ROOT, "c"), InodeId(5));
}

// ---------------------------------------------------------------- rename

#[test]
fn rename_missing_source_is_not_found() {
    let mut e = new();
    let d = mkdir(&mut e, ROOT, "d");
    assert_eq!(rename(&mut e, ROOT, "x", d, "y", 5), Err(FsError::NotFound));
    assert_eq!(
        rename(&mut e, InodeId(42), "x", d, "y", 5),
        Err(FsError::NotFound)
    );
    let f = create(&mut e, ROOT, "f");
    assert_eq!(
        rename(&mut e, ROOT, "d", f, "y", 5),
        Err(FsError::NotADirectory)
    );
}

#[test]
fn rename_onto_itself_is_a_noop() {
    let mut e = new();
    let d = mkdir(&mut e, ROOT, "d");
    create(&mut e, d, "f");
    let before = e.clone();
    assert_eq!(rename(&mut e, d, "f", d, "f", 99), Ok(Output::Unit));
    assert_eq!(rename(&mut e, ROOT, "d", ROOT, "d", 99), Ok(Output::Unit));
    assert_eq!(e, before);
}

#[test]
fn rename_file_within_directory_updates_times() {
    let mut e = new();
    let d = mkdir(&mut e, ROOT, "d");
    let f = create(&mut e, d, "f");
    rename(&mut e, d, "f", d, "g", 30).unwrap();
    assert_eq!(e.lookup(d, "f"), Err(FsError::NotFound));
    let g = e.lookup(d, "g").unwrap();
    assert_eq!((g.inode, g.ctime, g.mtime), (f, t(30), t(10)));
    let p = e.getattr(d).unwrap();
    assert_eq!((p.mtime, p.ctime), (t(30), t(30)));
}

#[test]
fn rename_directory_between_parents_moves_nlink() {
    let mut e = new();
    let a = mkdir(&mut e, ROOT, "a");
    let b = mkdir(&mut e, ROOT, "b");
    let c = mkdir(&mut e, a, "c");
    create(&mut e, c, "inner");
    assert_eq!(e.getattr(a).unwrap().nlink, 3);
    assert_eq!(e.getattr(b).unwrap().nlink, 2);
    rename(&mut e, a, "c", b, "c2", 31).unwrap();
    let (pa, pb) = (e.getattr(a).unwrap(), e.getattr(b).unwrap());
    assert_eq!((pa.nlink, pa.mtime, pa.ctime), (2, t(31), t(31)));
    assert_eq!((pb.nlink, pb.mtime, pb.ctime), (3, t(31), t(31)));
    assert_eq!(e.getattr(c).unwrap().ctime, t(31));
    assert_eq!(e.resolve("/b/c2/inner").unwrap().kind, FileKind::File);
    assert_eq!(e.getattr(ROOT).unwrap().nlink, 4);
}

#[test]
fn rename_file_over_file_replaces_and_drops_chunks() {
    let mut e = new();
    let a = create(&mut e, ROOT, "a");
    let b = create(&mut e, ROOT, "b");
    commit(&mut e, b, 3000).unwrap();
    let h = handle(alloc(&mut e, b, 0));
    alloc(&mut e, b, 2).unwrap();
    rename(&mut e, ROOT, "a", ROOT, "b", 32).unwrap();
    assert_eq!(e.lookup(ROOT, "b").unwrap().inode, a);
    assert_eq!(e.getattr(b), Err(FsError::NotFound));
    assert_eq!(e.chunk(h), None);
    assert_eq!(e.all_chunks().count(), 0);
    assert_eq!(
        e.counts(),
        Counts {
            files: 1,
            directories: 1,
            ..Counts::default()
        }
    );
}

#[test]
fn rename_dir_over_empty_dir_replaces() {
    let mut e = new();
    let a = mkdir(&mut e, ROOT, "a");
    let x = mkdir(&mut e, ROOT, "x");
    let b = mkdir(&mut e, x, "b");
    assert_eq!(e.getattr(ROOT).unwrap().nlink, 4);
    rename(&mut e, ROOT, "a", x, "b", 33).unwrap();
    assert_eq!(e.getattr(b), Err(FsError::NotFound));
    assert_eq!(e.lookup(x, "b").unwrap().inode, a);
    assert_eq!(e.getattr(ROOT).unwrap().nlink, 3);
    assert_eq!(e.getattr(x).unwrap().nlink, 3);
    assert_eq!(e.counts().directories, 3);
    // Same parent: replacing an empty sibling directory.
    mkdir(&mut e, ROOT, "e");
    rename(&mut e, ROOT, "x", ROOT, "e", 34).unwrap();
    assert_eq!(e.getattr(ROOT).unwrap().nlink, 3);
    assert_eq!(e.lookup(ROOT, "e").unwrap().inode, x);
}

#[test]
fn rename_dir_over_nonempty_dir_fails() {
    let mut e = new();
    mkdir(&mut e, ROOT, "a");
    let b = mkdir(&mut e, ROOT, "b");
    create(&mut e, b, "f");
    assert_eq!(
        rename(&mut e, ROOT, "a", ROOT, "b", 5),
        Err(FsError::DirectoryNotEmpty)
    );
}

#[test]
fn rename_dir_over_file_fails() {
    let mut e = new();
    mkdir(&mut e, ROOT, "a");
    create(&mut e, ROOT, "f");
    assert_eq!(
        rename(&mut e, ROOT, "a", ROOT, "f", 5),
        Err(FsError::NotADirectory)
    );
}

#[test]
fn rename_file_over_dir_fails() {
    let mut e = new();
    mkdir(&mut e, ROOT, "a");
    create(&mut e, ROOT, "f");
    assert_eq!(
        rename(&mut e, ROOT, "f", ROOT, "a", 5),
        Err(FsError::IsADirectory)
    );
}

#[test]
fn rename_dir_into_itself_or_descendant_fails() {
    let mut e = new();
    let a = mkdir(&mut e, ROOT, "a");
    let b = mkdir(&mut e, a, "b");
    let c = mkdir(&mut e, b, "c");
    assert!(invalid(rename(&mut e, ROOT, "a", a, "x", 5)));
    assert!(invalid(rename(&mut e, ROOT, "a", c, "x", 5)));
    assert!(invalid(rename(&mut e, a, "b", c, "b", 5)));
    // Moving a directory up is fine; a file may go anywhere.
    rename(&mut e, b, "c", ROOT, "c", 6).unwrap();
    create(&mut e, ROOT, "f");
    rename(&mut e, ROOT, "f", b, "f", 7).unwrap();
}

#[test]
fn rename_validates_names() {
    let mut e = new();
    create(&mut e, ROOT, "f");
    assert!(invalid(rename(&mut e, ROOT, "f", ROOT, "..", 5)));
    assert!(invalid(rename(&mut e, ROOT, ".", ROOT, "g", 5)));
}

// ---------------------------------------------------------------- unlink / rmdir

#[test]
fn unlink_removes_file_and_chunks() {
    let mut e = new();
    let d = mkdir(&mut e, ROOT, "d");
    let f = create(&mut e, d, "f");
    commit(&mut e, f, 2 * CS).unwrap();
    let h0 = handle(alloc(&mut e, f, 0));
    let h1 = handle(alloc(&mut e, f, 1));
    assert_eq!(e.counts().chunks, 2);
    unlink(&mut e, d, "f", 60).unwrap();
    assert_eq!(e.getattr(f), Err(FsError::NotFound));
    assert_eq!((e.chunk(h0), e.chunk(h1)), (None, None));
    let p = e.getattr(d).unwrap();
    assert_eq!((p.mtime, p.ctime), (t(60), t(60)));
    assert_eq!(
        e.counts(),
        Counts {
            directories: 2,
            ..Counts::default()
        }
    );
    assert_eq!(unlink(&mut e, d, "f", 61), Err(FsError::NotFound));
}

#[test]
fn unlink_directory_fails() {
    let mut e = new();
    mkdir(&mut e, ROOT, "d");
    assert_eq!(unlink(&mut e, ROOT, "d", 5), Err(FsError::IsADirectory));
}

#[test]
fn rmdir_removes_empty_directory() {
    let mut e = new();
    let a = mkdir(&mut e, ROOT, "a");
    let b = mkdir(&mut e, a, "b");
    rmdir(&mut e, a, "b", 70).unwrap();
    assert_eq!(e.getattr(b), Err(FsError::NotFound));
    let p = e.getattr(a).unwrap();
    assert_eq!((p.nlink, p.mtime, p.ctime), (2, t(70), t(70)));
    assert_eq!(rmdir(&mut e, a, "b", 71), Err(FsError::NotFound));
}

#[test]
fn rmdir_file_fails() {
    let mut e = new();
    create(&mut e, ROOT, "f");
    assert_eq!(rmdir(&mut e, ROOT, "f", 5), Err(FsError::NotADirectory));
}

#[test]
fn rmdir_nonempty_fails() {
    let mut e = new();
    let a = mkdir(&mut e, ROOT, "a");
    mkdir(&mut e, a, "b");
    assert_eq!(rmdir(&mut e, ROOT, "a", 5), Err(FsError::DirectoryNotEmpty));
}

#[test]
fn rmdir_root_is_impossible() {
    // The root is nobody's entry: "." and ".." are not names, so it can never be removed.
    let mut e = new();
    assert!(invalid(rmdir(&mut e, ROOT, ".", 5)));
    assert!(invalid(rmdir(&mut e, ROOT, "..", 5)));
    assert!(e.getattr(ROOT).is_ok());
}

// ---------------------------------------------------------------- setattr / commit size

#[test]
fn setattr_mode_uid_gid_change_ctime() {
    let mut e = new();
    let f = create(&mut e, ROOT, "f");
    let a = attr(setattr(&mut e, f, |c| {
        if let Command::SetAttr { mode, uid, gid, .. } = c {
            *mode = Some(0o104700);
            *uid = Some(11);
            *gid = Some(12);
        }
    }));
    assert_eq!((a.mode, a.uid, a.gid), (0o4700, 11, 12));
    assert_eq!((a.ctime, a.mtime, a.atime), (t(50), t(10), t(10)));
    assert_eq!(e.getattr(f).unwrap(), a);
}

#[test]
fn setattr_times_set_as_given() {
    let mut e = new();
    let d = mkdir(&mut e, ROOT, "d");
    let a = attr(setattr(&mut e, d, |c| {
        if let Command::SetAttr { atime, mtime, .. } = c {
            *atime = Some(t(-5));
            *mtime = Some(t(1234));
        }
    }));
    assert_eq!((a.atime, a.mtime, a.ctime), (t(-5), t(1234), t(50)));
    // An empty SetAttr changes nothing.
    let before = e.getattr(d).unwrap();
    assert_eq!(attr(setattr(&mut e, d, |_| {})), before);
}

#[test]
fn setattr_truncate_drops_chunks_past_end() {
    let mut e = new();
    let f = create(&mut e, ROOT, "f");
    commit(&mut e, f, 4 * CS).unwrap();
    let hs: Vec<_> = (0..4).map(|i| handle(alloc(&mut e, f, i))).collect();
    // Size CS + 1: chunks 0 and 1 stay (1 holds the last byte), 2 and 3 go.
    let a = attr(setattr(&mut e, f, |c| {
        if let Command::SetAttr { size, .. } = c {
            *size = Some(CS + 1);
        }
    }));
    assert_eq!((a.size, a.mtime, a.ctime), (CS + 1, t(50), t(50)));
    assert!(e.chunk(hs[1]).is_some());
    assert_eq!((e.chunk(hs[2]), e.chunk(hs[3])), (None, None));
    // Exactly on a boundary: chunk 1 starts at the end and goes.
    setattr(&mut e, f, |c| {
        if let Command::SetAttr { size, .. } = c {
            *size = Some(CS);
        }
    })
    .unwrap();
    assert_eq!(e.chunk(hs[1]), None);
    assert_eq!(e.chunks(f, 0, 10).unwrap().len(), 1);
    // Size 0: everything goes.
    setattr(&mut e, f, |c| {
        if let Command::SetAttr { size, .. } = c {
            *size = Some(0);
        }
    })
    .unwrap();
    assert_eq!(e.all_chunks().count(), 0);
    assert_eq!(e.counts().bytes, 0);
}

#[test]
fn setattr_extend_keeps_chunks() {
    let mut e = new();
    let f = create(&mut e, ROOT, "f");
    let h = handle(alloc(&mut e, f, 0));
    let a = attr(setattr(&mut e, f, |c| {
        if let Command::SetAttr { size, .. } = c {
            *size = Some(10 * CS);
        }
    }));
    assert_eq!(a.size, 10 * CS);
    assert!(e.chunk(h).is_some());
    assert_eq!(e.counts().bytes, 10 * CS);
}

#[test]
fn setattr_size_on_directory_fails() {
    let mut e = new();
    let d = mkdir(&mut e, ROOT, "d");
    let r = setattr(&mut e, d, |c| {
        if let Command::SetAttr { size, mode, .. } = c {
            *size = Some(0);
            *mode = Some(0o700);
        }
    });
    assert_eq!(r, Err(FsError::IsADirectory));
    assert_eq!(setattr(&mut e, InodeId(99), |_| {}), Err(FsError::NotFound));
}

#[test]
fn commit_size_takes_max_and_sets_times() {
    let mut e = new();
    let f = create(&mut e, ROOT, "f");
    let a = attr(commit(&mut e, f, 500));
    assert_eq!((a.size, a.mtime, a.ctime), (500, t(40), t(41)));
    let a = attr(commit(&mut e, f, 100));
    assert_eq!(a.size, 500);
    assert_eq!(e.counts().bytes, 500);
    let d = mkdir(&mut e, ROOT, "d");
    assert_eq!(commit(&mut e, d, 1), Err(FsError::IsADirectory));
    assert_eq!(commit(&mut e, InodeId(99), 1), Err(FsError::NotFound));
}

// ---------------------------------------------------------------- chunk table

#[test]
fn allocate_chunk_gives_increasing_handles_at_version_1() {
    let mut e = new();
    let f = create(&mut e, ROOT, "f");
    let g = create(&mut e, ROOT, "g");
    assert_eq!(
        alloc(&mut e, f, 3),
        Ok(Output::Chunk {
            handle: ChunkHandle(1),
            version: ChunkVersion(1)
        })
    );
    assert_eq!(handle(alloc(&mut e, g, 0)), ChunkHandle(2));
    assert_eq!(alloc(&mut e, f, 3), Err(FsError::AlreadyExists));
    assert_eq!(
        e.chunk(ChunkHandle(1)),
        Some(ChunkInfo {
            inode: f,
            index: 3,
            version: ChunkVersion(1)
        })
    );
    assert_eq!(e.chunk_at(f, 3), Some((ChunkHandle(1), ChunkVersion(1))));
    assert_eq!(e.chunk_at(f, 0), None);
    unlink(&mut e, ROOT, "g", 5).unwrap();
    let g2 = create(&mut e, ROOT, "g");
    assert_eq!(handle(alloc(&mut e, g2, 0)), ChunkHandle(3), "never reused");
}

#[test]
fn replace_chunk_gives_a_never_granted_chunk_a_new_handle() {
    let mut e = new();
    let f = create(&mut e, ROOT, "f");
    let old = handle(alloc(&mut e, f, 2));
    let other = handle(alloc(&mut e, f, 0));
    let before = e.counts().chunks;
    let replace = |e: &mut Engine, index: u64, handle: ChunkHandle| {
        apply(
            e,
            Command::ReplaceChunk {
                inode: f,
                index,
                handle,
            },
        )
    };
    let new = handle(replace(&mut e, 2, old));
    assert!(new > other, "a handle never used before");
    assert_eq!(e.chunk_at(f, 2), Some((new, ChunkVersion(1))));
    assert_eq!(e.chunk(old), None, "the old handle leaves the table");
    assert_eq!(e.counts().chunks, before);
    // Only the chunk that is still there, at version 1.
    assert!(matches!(
        replace(&mut e, 2, old),
        Err(FsError::Unavailable(_))
    ));
    assert!(matches!(
        replace(&mut e, 1, old),
        Err(FsError::Unavailable(_))
    ));
    apply(
        &mut e,
        Command::SetVersion {
            handle: new,
            version: ChunkVersion(2),
        },
    )
    .unwrap();
    assert!(matches!(
        replace(&mut e, 2, new),
        Err(FsError::Unavailable(_))
    ));
    assert_eq!(e.chunk_at(f, 2), Some((new, ChunkVersion(2))));
    let d = mkdir(&mut e, ROOT, "d");
    assert_eq!(
        apply(
            &mut e,
            Command::ReplaceChunk {
                inode: d,
                index: 0,
                handle: other,
            },
        ),
        Err(FsError::IsADirectory)
    );
    e.check_invariants().unwrap();
}

#[test]
fn allocate_chunk_requires_regular_file() {
    let mut e = new();
    let d = mkdir(&mut e, ROOT, "d");
    assert_eq!(alloc(&mut e, d, 0), Err(FsError::IsADirectory));
    assert_eq!(alloc(&mut e, InodeId(50), 0), Err(FsError::NotFound));
    let f = create(&mut e, ROOT, "f");
    assert_eq!(alloc(&mut e, f, u64::MAX), Err(FsError::FileTooLarge));
}

#[test]
fn bump_version_increments() {
    let mut e = new();
    let f = create(&mut e, ROOT, "f");
    let h = handle(alloc(&mut e, f, 0));
    for v in 2..5 {
        assert_eq!(
            apply(&mut e, Command::BumpVersion { handle: h }),
            Ok(Output::Chunk {
                handle: h,
                version: ChunkVersion(v)
            })
        );
    }
    assert_eq!(e.chunk_at(f, 0), Some((h, ChunkVersion(4))));
    assert_eq!(
        apply(
            &mut e,
            Command::BumpVersion {
                handle: ChunkHandle(77)
            }
        ),
        Err(FsError::ChunkNotFound(77))
    );
}

#[test]
fn chunks_query_ranges_and_holes() {
    let mut e = new();
    let f = create(&mut e, ROOT, "f");
    for i in [0, 2, 5] {
        alloc(&mut e, f, i).unwrap();
    }
    apply(
        &mut e,
        Command::BumpVersion {
            handle: ChunkHandle(2),
        },
    )
    .unwrap();
    assert_eq!(
        e.chunks(f, 1, 4).unwrap(),
        vec![(2, ChunkHandle(2), ChunkVersion(2))]
    );
    assert_eq!(e.chunks(f, 0, 100).unwrap().len(), 3);
    assert_eq!(e.chunks(f, u64::MAX, u32::MAX).unwrap(), vec![]);
    let d = mkdir(&mut e, ROOT, "d");
    assert_eq!(e.chunks(d, 0, 1), Err(FsError::IsADirectory));
    assert_eq!(e.chunks(InodeId(99), 0, 1), Err(FsError::NotFound));
    assert_eq!(
        e.all_chunks().collect::<Vec<_>>(),
        vec![
            (ChunkHandle(1), ChunkVersion(1)),
            (ChunkHandle(2), ChunkVersion(2)),
            (ChunkHandle(3), ChunkVersion(1))
        ]
    );
}

#[test]
fn counts_track_namespace() {
    let mut e = new();
    let d = mkdir(&mut e, ROOT, "d");
    let f = create(&mut e, d, "f");
    let g = create(&mut e, ROOT, "g");
    commit(&mut e, f, 100).unwrap();
    commit(&mut e, g, 23).unwrap();
    alloc(&mut e, f, 0).unwrap();
    assert_eq!(
        e.counts(),
        Counts {
            files: 2,
            directories: 2,
            symlinks: 0,
            chunks: 1,
            bytes: 123,
            ..Counts::default()
        }
    );
}

// ---------------------------------------------------------------- exactly-once

fn client_mkdir(client: u64, seq: u64, name: &str) -> Command {
    Command::Mkdir {
        op: op(client, seq),
        parent: ROOT,
        name: name.into(),
        mode: 0o755,
        uid: 0,
        gid: 0,
        time: t(3),
    }
}

#[test]
fn duplicate_request_returns_cached_result() {
    let mut e = new();
    let first = apply(&mut e, client_mkdir(9, 1, "a")).unwrap();
    let after = e.clone();
    // Same op id again (even with a different body): the cached result, nothing applied.
    assert_eq!(apply(&mut e, client_mkdir(9, 1, "a")), Ok(first.clone()));
    assert_eq!(apply(&mut e, client_mkdir(9, 1, "zzz")), Ok(first));
    assert_eq!(e.lookup(ROOT, "zzz"), Err(FsError::NotFound));
    assert_eq!(e.counts(), after.counts());
    // The next seq applies.
    assert!(apply(&mut e, client_mkdir(9, 2, "b")).is_ok());
    // Another client is independent.
    assert!(apply(&mut e, client_mkdir(10, 1, "c")).is_ok());
}

#[test]
fn out_of_order_requests_apply_once_and_forgotten_ones_are_stale() {
    let mut e = new();
    apply(&mut e, client_mkdir(9, 5, "a")).unwrap();
    // A request sent earlier but arriving later (several in flight) still applies, once.
    let b = apply(&mut e, client_mkdir(9, 4, "b")).unwrap();
    assert_eq!(apply(&mut e, client_mkdir(9, 4, "b")), Ok(b));
    // Gaps are allowed.
    assert!(apply(&mut e, client_mkdir(9, 9, "c")).is_ok());
    // Once a window of newer results pushed seq 4 out, it is stale rather than applied twice.
    for seq in 10..10 + quarry_master::engine::SESSION_WINDOW as u64 {
        apply(&mut e, client_mkdir(9, seq, &format!("d{seq}"))).unwrap();
    }
    assert_eq!(
        apply(&mut e, client_mkdir(9, 4, "b")),
        Err(FsError::InvalidArgument("stale request".into()))
    );
}

#[test]
fn failed_request_is_not_cached() {
    let mut e = new();
    mkdir(&mut e, ROOT, "a");
    assert_eq!(
        apply(&mut e, client_mkdir(9, 1, "a")),
        Err(FsError::AlreadyExists)
    );
    rmdir(&mut e, ROOT, "a", 4).unwrap();
    // The retry is applied for real now.
    assert!(apply(&mut e, client_mkdir(9, 1, "a")).is_ok());
}

#[test]
fn client_zero_is_exempt() {
    let mut e = new();
    apply(&mut e, client_mkdir(0, 7, "a")).unwrap();
    apply(&mut e, client_mkdir(0, 7, "b")).unwrap();
    apply(&mut e, client_mkdir(0, 1, "c")).unwrap();
    assert_eq!(e.getattr(ROOT).unwrap().nlink, 5);
}

#[test]
fn session_table_evicts_least_recently_used() {
    let mut e = Engine::new(CS, t(1)).with_session_limit(2);
    apply(&mut e, client_mkdir(1, 1, "a")).unwrap();
    apply(&mut e, client_mkdir(2, 1, "b")).unwrap();
    // Client 1 applies again and becomes the most recently used.
    apply(&mut e, client_mkdir(1, 2, "c")).unwrap();
    apply(&mut e, client_mkdir(3, 1, "d")).unwrap(); // evicts client 2
                                                     // Client 2's old request is forgotten: it applies again (and fails: b exists).
    assert_eq!(
        apply(&mut e, client_mkdir(2, 1, "b")),
        Err(FsError::AlreadyExists)
    );
    // Client 1 and 3 are remembered.
    assert!(matches!(
        apply(&mut e, client_mkdir(1, 2, "c")),
        Ok(Output::Attr(_))
    ));
    assert!(matches!(
        apply(&mut e, client_mkdir(3, 1, "d")),
        Ok(Output::Attr(_))
    ));
    // Client 1's first request is still in its window: the cached result, not a new "x".
    assert!(matches!(
        apply(&mut e, client_mkdir(1, 1, "x")),
        Ok(Output::Attr(a)) if a.inode == e.lookup(ROOT, "a").unwrap().inode
    ));
}

#[test]
fn sessions_survive_checkpoint() {
    let mut e = new();
    let out = apply(&mut e, client_mkdir(4, 1, "a")).unwrap();
    let bytes = postcard::to_stdvec(&e).unwrap();
    let mut r: Engine = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(r, e);
    assert_eq!(r.apply(&client_mkdir(4, 1, "a")), Ok(out));
    assert!(invalid(r.apply(&client_mkdir(4, 0, "a"))));
}

// ---------------------------------------------------------------- symlinks, mknod, links, xattrs, holds

fn symlink_at(
    e: &mut Engine,
    parent: InodeId,
    name: &str,
    target: &str,
) -> Result<Output, FsError> {
    apply(
        e,
        Command::Symlink {
            op: op0(),
            parent,
            name: name.into(),
            target: target.into(),
            uid: 5,
            gid: 6,
            time: t(80),
        },
    )
}

fn mknod_at(
    e: &mut Engine,
    parent: InodeId,
    name: &str,
    kind: FileKind,
    rdev: u32,
) -> Result<Output, FsError> {
    apply(
        e,
        Command::Mknod {
            op: op0(),
            parent,
            name: name.into(),
            kind,
            mode: 0o10640,
            rdev,
            uid: 7,
            gid: 8,
            time: t(81),
        },
    )
}

fn link(
    e: &mut Engine,
    inode: InodeId,
    parent: InodeId,
    name: &str,
    time: i64,
) -> Result<Output, FsError> {
    apply(
        e,
        Command::Link {
            op: op0(),
            inode,
            new_parent: parent,
            new_name: name.into(),
            time: t(time),
        },
    )
}

fn rename_flags(
    e: &mut Engine,
    sp: InodeId,
    sn: &str,
    dp: InodeId,
    dn: &str,
    flags: u32,
    time: i64,
) -> Result<Output, FsError> {
    apply(
        e,
        Command::Rename {
            op: op0(),
            src_parent: sp,
            src_name: sn.into(),
            dst_parent: dp,
            dst_name: dn.into(),
            flags,
            time: t(time),
        },
    )
}

fn setx(
    e: &mut Engine,
    inode: InodeId,
    name: &str,
    value: &[u8],
    flags: XattrFlags,
    time: i64,
) -> Result<Output, FsError> {
    apply(
        e,
        Command::SetXattr {
            op: op0(),
            inode,
            name: name.into(),
            value: value.to_vec(),
            flags,
            time: t(time),
        },
    )
}

fn rmx(e: &mut Engine, inode: InodeId, name: &str, time: i64) -> Result<Output, FsError> {
    apply(
        e,
        Command::RemoveXattr {
            op: op0(),
            inode,
            name: name.into(),
            time: t(time),
        },
    )
}

fn hold(e: &mut Engine, inode: InodeId, client: u64, on: bool) -> Result<Output, FsError> {
    apply(
        e,
        Command::HoldOpen {
            op: op0(),
            inode,
            client: ClientId(client),
            hold: on,
        },
    )
}

#[test]
fn symlink_has_target_length_as_size_and_mode_777() {
    let mut e = new();
    let d = mkdir(&mut e, ROOT, "d");
    let a = attr(symlink_at(&mut e, d, "l", "../some/target"));
    assert_eq!(
        a,
        Attr {
            inode: InodeId(3),
            kind: FileKind::Symlink,
            mode: 0o777,
            uid: 5,
            gid: 6,
            size: 14,
            nlink: 1,
            rdev: 0,
            atime: t(80),
            mtime: t(80),
            ctime: t(80),
            crtime: t(80),
        }
    );
    assert_eq!(e.readlink(a.inode).unwrap(), "../some/target");
    assert_eq!(e.lookup(d, "l").unwrap(), a);
    let p = e.getattr(d).unwrap();
    assert_eq!((p.mtime, p.ctime, p.nlink), (t(80), t(80), 2));
    assert_eq!(e.counts().symlinks, 1);
    assert_eq!(e.counts().bytes, 0, "symlink sizes are not file bytes");
    // Paths do not go through symlinks.
    assert_eq!(e.resolve("/d/l/x"), Err(FsError::NotADirectory));
    assert_eq!(
        e.chunks(a.inode, 0, 1).map(|_| ()),
        Err(FsError::InvalidArgument("not a regular file".into()))
    );
    unlink(&mut e, d, "l", 90).unwrap();
    assert_eq!(e.counts().symlinks, 0);
    assert_eq!(e.readlink(a.inode), Err(FsError::NotFound));
}

#[test]
fn symlink_target_is_validated() {
    let mut e = new();
    assert_eq!(symlink_at(&mut e, ROOT, "l", ""), Err(FsError::NotFound));
    assert_eq!(
        symlink_at(&mut e, ROOT, "l", &"x".repeat(4096)),
        Err(FsError::NameTooLong)
    );
    assert!(invalid(symlink_at(&mut e, ROOT, "l", "a\0b")));
    let a = attr(symlink_at(&mut e, ROOT, "l", &"x".repeat(4095)));
    assert_eq!(a.size, 4095);
    assert_eq!(
        symlink_at(&mut e, ROOT, "l", "y"),
        Err(FsError::AlreadyExists)
    );
    assert!(invalid(symlink_at(&mut e, ROOT, "..", "y")));
    let f = create(&mut e, ROOT, "f");
    assert_eq!(symlink_at(&mut e, f, "l", "y"), Err(FsError::NotADirectory));
}

#[test]
fn readlink_needs_a_symlink() {
    let mut e = new();
    let f = create(&mut e, ROOT, "f");
    assert!(matches!(e.readlink(f), Err(FsError::InvalidArgument(_))));
    assert!(matches!(e.readlink(ROOT), Err(FsError::InvalidArgument(_))));
    assert_eq!(e.readlink(InodeId(99)), Err(FsError::NotFound));
}

#[test]
fn mknod_makes_special_files_with_rdev_only_for_devices() {
    let mut e = new();
    let fifo = attr(mknod_at(&mut e, ROOT, "p", FileKind::Fifo, 99));
    assert_eq!(
        fifo,
        Attr {
            inode: InodeId(2),
            kind: FileKind::Fifo,
            mode: 0o640,
            uid: 7,
            gid: 8,
            size: 0,
            nlink: 1,
            rdev: 0,
            atime: t(81),
            mtime: t(81),
            ctime: t(81),
            crtime: t(81),
        }
    );
    let c = attr(mknod_at(&mut e, ROOT, "c", FileKind::CharDevice, 0x0103));
    let b = attr(mknod_at(&mut e, ROOT, "b", FileKind::BlockDevice, 0x0801));
    let s = attr(mknod_at(&mut e, ROOT, "s", FileKind::Socket, 5));
    assert_eq!((c.kind, c.rdev), (FileKind::CharDevice, 0x0103));
    assert_eq!((b.kind, b.rdev), (FileKind::BlockDevice, 0x0801));
    assert_eq!((s.kind, s.rdev), (FileKind::Socket, 0));
    assert_eq!(e.counts().files, 4);
    let r = e.getattr(ROOT).unwrap();
    assert_eq!((r.mtime, r.nlink), (t(81), 2));
    // Metadata only: no chunks, no size.
    assert!(invalid(alloc(&mut e, fifo.inode, 0)));
    assert!(invalid(commit(&mut e, c.inode, 10)));
    unlink(&mut e, ROOT, "c", 90).unwrap();
    assert_eq!(e.counts().files, 3);
}

#[test]
fn mknod_regular_file_is_a_normal_file() {
    let mut e = new();
    let f = attr(mknod_at(&mut e, ROOT, "f", FileKind::File, 3));
    assert_eq!(
        (f.kind, f.rdev, f.mode, f.nlink),
        (FileKind::File, 0, 0o640, 1)
    );
    let h = handle(alloc(&mut e, f.inode, 0));
    assert_eq!(e.chunk_at(f.inode, 0), Some((h, ChunkVersion(1))));
    assert_eq!(e.counts().files, 1);
}

#[test]
fn mknod_rejects_directories_symlinks_and_taken_names() {
    let mut e = new();
    assert!(invalid(mknod_at(&mut e, ROOT, "d", FileKind::Directory, 0)));
    assert!(invalid(mknod_at(&mut e, ROOT, "l", FileKind::Symlink, 0)));
    mkdir(&mut e, ROOT, "x");
    assert_eq!(
        mknod_at(&mut e, ROOT, "x", FileKind::Fifo, 0),
        Err(FsError::AlreadyExists)
    );
    assert_eq!(
        mknod_at(&mut e, InodeId(99), "y", FileKind::Fifo, 0),
        Err(FsError::NotFound)
    );
}

#[test]
fn readdir_reports_every_kind() {
    let mut e = new();
    create(&mut e, ROOT, "a");
    mkdir(&mut e, ROOT, "b");
    symlink_at(&mut e, ROOT, "c", "a").unwrap();
    mknod_at(&mut e, ROOT, "d", FileKind::Fifo, 0).unwrap();
    mknod_at(&mut e, ROOT, "e", FileKind::CharDevice, 1).unwrap();
    mknod_at(&mut e, ROOT, "f", FileKind::BlockDevice, 2).unwrap();
    mknod_at(&mut e, ROOT, "g", FileKind::Socket, 0).unwrap();
    let (ents, more) = e.readdir(ROOT, None, 100).unwrap();
    assert!(!more);
    let kinds: Vec<FileKind> = ents.iter().map(|d| d.kind).collect();
    assert_eq!(
        kinds,
        [
            FileKind::File,
            FileKind::Directory,
            FileKind::Symlink,
            FileKind::Fifo,
            FileKind::CharDevice,
            FileKind::BlockDevice,
            FileKind::Socket
        ]
    );
}

#[test]
fn link_adds_a_name_and_updates_nlink_and_times() {
    let mut e = new();
    let d = mkdir(&mut e, ROOT, "d");
    let f = create(&mut e, ROOT, "f");
    let a = attr(link(&mut e, f, d, "g", 33));
    assert_eq!((a.inode, a.nlink, a.ctime, a.mtime), (f, 2, t(33), t(10)));
    assert_eq!(e.lookup(d, "g").unwrap(), a);
    assert_eq!(e.lookup(ROOT, "f").unwrap(), a);
    let p = e.getattr(d).unwrap();
    assert_eq!((p.mtime, p.ctime, p.nlink), (t(33), t(33), 2));
    // The source directory is untouched.
    assert_eq!(e.getattr(ROOT).unwrap().mtime, t(10));
    assert_eq!(e.counts().files, 1);
    let a = attr(link(&mut e, f, ROOT, "h", 34));
    assert_eq!(a.nlink, 3);
}

#[test]
fn link_to_a_directory_is_not_permitted() {
    let mut e = new();
    let d = mkdir(&mut e, ROOT, "d");
    assert!(matches!(
        link(&mut e, d, ROOT, "e", 5),
        Err(FsError::NotPermitted(_))
    ));
    assert!(matches!(
        link(&mut e, ROOT, d, "r", 5),
        Err(FsError::NotPermitted(_))
    ));
}

#[test]
fn link_errors() {
    let mut e = new();
    let f = create(&mut e, ROOT, "f");
    create(&mut e, ROOT, "g");
    assert_eq!(link(&mut e, f, ROOT, "g", 5), Err(FsError::AlreadyExists));
    assert_eq!(link(&mut e, f, ROOT, "f", 5), Err(FsError::AlreadyExists));
    assert_eq!(
        link(&mut e, InodeId(99), ROOT, "x", 5),
        Err(FsError::NotFound)
    );
    assert_eq!(link(&mut e, f, f, "x", 5), Err(FsError::NotADirectory));
    assert_eq!(link(&mut e, f, InodeId(99), "x", 5), Err(FsError::NotFound));
    assert!(invalid(link(&mut e, f, ROOT, "a/b", 5)));
}

#[test]
fn link_works_for_symlinks_and_special_files() {
    let mut e = new();
    let l = attr(symlink_at(&mut e, ROOT, "l", "t")).inode;
    let p = attr(mknod_at(&mut e, ROOT, "p", FileKind::Fifo, 0)).inode;
    assert_eq!(attr(link(&mut e, l, ROOT, "l2", 5)).nlink, 2);
    assert_eq!(attr(link(&mut e, p, ROOT, "p2", 5)).nlink, 2);
    assert_eq!(e.lookup(ROOT, "l2").unwrap().kind, FileKind::Symlink);
    assert_eq!(e.counts().symlinks, 1);
    assert_eq!(e.counts().files, 1);
}

#[test]
fn too_many_links() {
    let mut e = new();
    let f = create(&mut e, ROOT, "f");
    for i in 1..quarry_proto::MAX_LINKS {
        e.apply(&Command::Link {
            op: op0(),
            inode: f,
            new_parent: ROOT,
            new_name: format!("l{i}"),
            time: t(5),
        })
        .unwrap();
    }
    assert_eq!(e.getattr(f).unwrap().nlink, quarry_proto::MAX_LINKS);
    assert_eq!(
        link(&mut e, f, ROOT, "one-more", 6),
        Err(FsError::TooManyLinks)
    );
}

#[test]
fn unlink_of_one_link_keeps_the_inode_and_its_chunks() {
    let mut e = new();
    let f = create(&mut e, ROOT, "f");
    commit(&mut e, f, 100).unwrap();
    let h = handle(alloc(&mut e, f, 0));
    link(&mut e, f, ROOT, "g", 20).unwrap();
    unlink(&mut e, ROOT, "f", 21).unwrap();
    let a = e.getattr(f).unwrap();
    assert_eq!((a.nlink, a.ctime, a.size), (1, t(21), 100));
    assert_eq!(e.lookup(ROOT, "g").unwrap().inode, f);
    assert_eq!(e.lookup(ROOT, "f"), Err(FsError::NotFound));
    assert!(e.chunk(h).is_some());
    assert_eq!(e.counts().bytes, 100);
    unlink(&mut e, ROOT, "g", 22).unwrap();
    assert_eq!(e.getattr(f), Err(FsError::NotFound));
    assert_eq!(e.chunk(h), None);
    assert_eq!(
        e.counts(),
        Counts {
            directories: 1,
            ..Counts::default()
        }
    );
}

#[test]
fn rename_onto_another_link_of_the_same_inode_is_a_noop() {
    let mut e = new();
    let d = mkdir(&mut e, ROOT, "d");
    let f = create(&mut e, ROOT, "f");
    link(&mut e, f, d, "g", 20).unwrap();
    let before = e.clone();
    assert_eq!(rename(&mut e, ROOT, "f", d, "g", 30), Ok(Output::Unit));
    assert_eq!(e, before, "both names stay, nothing is touched");
    assert_eq!(
        rename_flags(&mut e, ROOT, "f", d, "g", RENAME_EXCHANGE, 30),
        Ok(Output::Unit)
    );
    assert_eq!(e, before);
    assert_eq!(
        rename_flags(&mut e, ROOT, "f", d, "g", RENAME_NOREPLACE, 30),
        Err(FsError::AlreadyExists)
    );
}

#[test]
fn rename_over_a_hard_linked_file_only_drops_one_link() {
    let mut e = new();
    let a = create(&mut e, ROOT, "a");
    let b = create(&mut e, ROOT, "b");
    let h = handle(alloc(&mut e, b, 0));
    link(&mut e, b, ROOT, "b2", 20).unwrap();
    rename(&mut e, ROOT, "a", ROOT, "b", 30).unwrap();
    assert_eq!(e.lookup(ROOT, "b").unwrap().inode, a);
    let bb = e.getattr(b).unwrap();
    assert_eq!((bb.nlink, bb.ctime), (1, t(30)));
    assert_eq!(e.lookup(ROOT, "b2").unwrap().inode, b);
    assert!(e.chunk(h).is_some());
}

#[test]
fn held_file_survives_unlink_as_an_orphan_until_released() {
    let mut e = new();
    let f = create(&mut e, ROOT, "f");
    let h = handle(alloc(&mut e, f, 0));
    commit(&mut e, f, 10).unwrap();
    hold(&mut e, f, 7, true).unwrap();
    assert_eq!(e.holders(f), vec![ClientId(7)]);
    assert_eq!(e.held_by(ClientId(7)), vec![f]);
    unlink(&mut e, ROOT, "f", 60).unwrap();
    assert_eq!(e.lookup(ROOT, "f"), Err(FsError::NotFound));
    let a = e.getattr(f).unwrap();
    assert_eq!((a.nlink, a.ctime, a.size), (0, t(60), 10));
    assert_eq!(e.orphans(), vec![f]);
    // Still usable by inode.
    assert_eq!(attr(commit(&mut e, f, 2 * CS)).size, 2 * CS);
    let h1 = handle(alloc(&mut e, f, 1));
    assert_eq!(e.chunks(f, 0, 10).unwrap().len(), 2);
    setx(&mut e, f, "user.k", b"v", XattrFlags::Either, 61).unwrap();
    assert_eq!(e.counts().files, 1);
    assert_eq!(e.counts().chunks, 2);
    // Not by name again.
    assert_eq!(link(&mut e, f, ROOT, "back", 62), Err(FsError::NotFound));
    // The last release drops it with its chunks.
    hold(&mut e, f, 7, false).unwrap();
    assert_eq!(e.getattr(f), Err(FsError::NotFound));
    assert_eq!((e.chunk(h), e.chunk(h1)), (None, None));
    assert_eq!(e.orphans(), Vec::<InodeId>::new());
    assert_eq!(
        e.counts(),
        Counts {
            directories: 1,
            ..Counts::default()
        }
    );
}

#[test]
fn holds_are_a_set_per_client_and_inode() {
    let mut e = new();
    let f = create(&mut e, ROOT, "f");
    let d = mkdir(&mut e, ROOT, "d");
    hold(&mut e, f, 1, true).unwrap();
    hold(&mut e, f, 1, true).unwrap();
    hold(&mut e, f, 2, true).unwrap();
    assert_eq!(e.holders(f), vec![ClientId(1), ClientId(2)]);
    // Releasing what is not held is fine (retries, races with DropClientHolds).
    hold(&mut e, f, 3, false).unwrap();
    hold(&mut e, InodeId(99), 3, false).unwrap();
    assert_eq!(hold(&mut e, InodeId(99), 3, true), Err(FsError::NotFound));
    // Directories are not held.
    hold(&mut e, d, 1, true).unwrap();
    assert_eq!(e.holders(d), vec![]);
    unlink(&mut e, ROOT, "f", 5).unwrap();
    hold(&mut e, f, 1, false).unwrap();
    assert_eq!(e.getattr(f).unwrap().nlink, 0, "client 2 still holds it");
    hold(&mut e, f, 2, false).unwrap();
    assert_eq!(e.getattr(f), Err(FsError::NotFound));
    // A held file that still has a name stays when released.
    let g = create(&mut e, ROOT, "g");
    hold(&mut e, g, 1, true).unwrap();
    hold(&mut e, g, 1, false).unwrap();
    assert_eq!(e.getattr(g).unwrap().nlink, 1);
}

#[test]
fn drop_client_holds_releases_everything_of_that_client() {
    let mut e = new();
    let f = create(&mut e, ROOT, "f");
    let g = create(&mut e, ROOT, "g");
    let k = create(&mut e, ROOT, "k");
    let h = handle(alloc(&mut e, f, 0));
    hold(&mut e, f, 1, true).unwrap();
    hold(&mut e, g, 1, true).unwrap();
    hold(&mut e, g, 2, true).unwrap();
    hold(&mut e, k, 1, true).unwrap();
    for n in ["f", "g"] {
        unlink(&mut e, ROOT, n, 5).unwrap();
    }
    apply(
        &mut e,
        Command::DropClientHolds {
            client: ClientId(1),
        },
    )
    .unwrap();
    assert_eq!(e.getattr(f), Err(FsError::NotFound));
    assert_eq!(e.chunk(h), None);
    assert_eq!(e.getattr(g).unwrap().nlink, 0, "client 2 holds g");
    assert_eq!(e.getattr(k).unwrap().nlink, 1);
    assert_eq!(e.held_by(ClientId(1)), vec![]);
    assert_eq!(e.held_by(ClientId(2)), vec![g]);
    // Unknown clients: nothing to do.
    apply(
        &mut e,
        Command::DropClientHolds {
            client: ClientId(9),
        },
    )
    .unwrap();
}

#[test]
fn create_held_creates_and_holds_in_one_command_once() {
    let mut e = new();
    let held = |name: &str, exclusive: bool, seq: u64| Command::CreateHeld {
        op: op(7, seq),
        parent: ROOT,
        name: name.into(),
        mode: 0o644,
        uid: 1,
        gid: 2,
        exclusive,
        time: t(50),
    };
    let f = attr(apply(&mut e, held("f", true, 1))).inode;
    assert_eq!(e.held_by(ClientId(7)), vec![f]);
    // A retry of the same request is answered from the session table: same inode, one hold.
    assert_eq!(attr(apply(&mut e, held("f", true, 1))).inode, f);
    assert_eq!(e.held_by(ClientId(7)), vec![f]);
    // The hold keeps the file after its last name goes; dropping it drops the file.
    unlink(&mut e, ROOT, "f", 60).unwrap();
    assert_eq!(e.getattr(f).unwrap().nlink, 0);
    hold(&mut e, f, 7, false).unwrap();
    assert_eq!(e.getattr(f), Err(FsError::NotFound));
    // A failed create holds nothing; a non-exclusive create of an existing file holds it.
    let g = create(&mut e, ROOT, "g");
    assert_eq!(
        apply(&mut e, held("g", true, 2)),
        Err(FsError::AlreadyExists)
    );
    assert_eq!(e.held_by(ClientId(7)), vec![]);
    assert_eq!(attr(apply(&mut e, held("g", false, 3))).inode, g);
    assert_eq!(e.held_by(ClientId(7)), vec![g]);
    mkdir(&mut e, ROOT, "d");
    assert!(apply(&mut e, held("d", false, 4)).is_err());
    assert_eq!(e.held_by(ClientId(7)), vec![g]);
}

#[test]
fn rename_over_a_held_file_leaves_an_orphan() {
    let mut e = new();
    create(&mut e, ROOT, "a");
    let b = create(&mut e, ROOT, "b");
    hold(&mut e, b, 4, true).unwrap();
    rename(&mut e, ROOT, "a", ROOT, "b", 30).unwrap();
    let bb = e.getattr(b).unwrap();
    assert_eq!((bb.nlink, bb.ctime), (0, t(30)));
    assert_eq!(e.orphans(), vec![b]);
}

#[test]
fn orphans_holds_and_xattrs_survive_checkpoint() {
    let mut e = new();
    let f = create(&mut e, ROOT, "f");
    let h = handle(alloc(&mut e, f, 0));
    setx(&mut e, f, "user.a", b"1", XattrFlags::Either, 5).unwrap();
    hold(&mut e, f, 3, true).unwrap();
    unlink(&mut e, ROOT, "f", 6).unwrap();
    let bytes = postcard::to_stdvec(&e).unwrap();
    let mut r: Engine = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(r, e);
    r.check_invariants().unwrap();
    assert_eq!(r.orphans(), vec![f]);
    assert_eq!(r.get_xattr(f, "user.a").unwrap(), b"1");
    r.apply(&Command::HoldOpen {
        op: op0(),
        inode: f,
        client: ClientId(3),
        hold: false,
    })
    .unwrap();
    r.check_invariants().unwrap();
    assert_eq!(r.chunk(h), None);
}

#[test]
fn xattrs_set_get_list_remove_and_ctime() {
    let mut e = new();
    let f = create(&mut e, ROOT, "f");
    assert_eq!(
        setx(&mut e, f, "user.b", b"two", XattrFlags::Either, 20),
        Ok(Output::Unit)
    );
    setx(&mut e, f, "user.a", b"", XattrFlags::Either, 21).unwrap();
    let a = e.getattr(f).unwrap();
    assert_eq!((a.ctime, a.mtime), (t(21), t(10)));
    assert_eq!(e.get_xattr(f, "user.b").unwrap(), b"two");
    assert_eq!(e.get_xattr(f, "user.a").unwrap(), b"");
    assert_eq!(e.list_xattr(f).unwrap(), ["user.a", "user.b"]);
    setx(&mut e, f, "user.b", b"2", XattrFlags::Either, 22).unwrap();
    assert_eq!(e.get_xattr(f, "user.b").unwrap(), b"2");
    assert_eq!(rmx(&mut e, f, "user.b", 23), Ok(Output::Unit));
    assert_eq!(e.getattr(f).unwrap().ctime, t(23));
    assert_eq!(e.list_xattr(f).unwrap(), ["user.a"]);
    // Every kind carries xattrs.
    let d = mkdir(&mut e, ROOT, "d");
    let l = attr(symlink_at(&mut e, ROOT, "l", "x")).inode;
    setx(&mut e, d, "trusted.x", b"d", XattrFlags::Either, 24).unwrap();
    setx(&mut e, l, "trusted.x", b"l", XattrFlags::Either, 24).unwrap();
    assert_eq!(e.get_xattr(d, "trusted.x").unwrap(), b"d");
    assert_eq!(e.get_xattr(l, "trusted.x").unwrap(), b"l");
    // Hard links share them.
    link(&mut e, f, d, "g", 25).unwrap();
    assert_eq!(
        e.list_xattr(e.lookup(d, "g").unwrap().inode).unwrap(),
        ["user.a"]
    );
}

#[test]
fn xattr_create_and_replace_flags() {
    let mut e = new();
    let f = create(&mut e, ROOT, "f");
    assert_eq!(
        setx(&mut e, f, "user.k", b"1", XattrFlags::ReplaceOnly, 5),
        Err(FsError::NoData)
    );
    setx(&mut e, f, "user.k", b"1", XattrFlags::CreateOnly, 5).unwrap();
    assert_eq!(
        setx(&mut e, f, "user.k", b"2", XattrFlags::CreateOnly, 6),
        Err(FsError::AlreadyExists)
    );
    setx(&mut e, f, "user.k", b"3", XattrFlags::ReplaceOnly, 7).unwrap();
    assert_eq!(e.get_xattr(f, "user.k").unwrap(), b"3");
    assert_eq!(e.getattr(f).unwrap().ctime, t(7));
}

#[test]
fn xattr_missing_and_errors() {
    let mut e = new();
    let f = create(&mut e, ROOT, "f");
    assert_eq!(e.get_xattr(f, "user.none"), Err(FsError::NoData));
    assert_eq!(rmx(&mut e, f, "user.none", 5), Err(FsError::NoData));
    assert_eq!(e.list_xattr(f).unwrap(), Vec::<String>::new());
    assert_eq!(e.get_xattr(InodeId(99), "user.a"), Err(FsError::NotFound));
    assert_eq!(e.list_xattr(InodeId(99)), Err(FsError::NotFound));
    assert_eq!(
        setx(&mut e, InodeId(99), "user.a", b"", XattrFlags::Either, 5),
        Err(FsError::NotFound)
    );
    assert_eq!(
        rmx(&mut e, InodeId(99), "user.a", 5),
        Err(FsError::NotFound)
    );
    assert!(invalid(setx(
        &mut e,
        f,
        "user.\0",
        b"",
        XattrFlags::Either,
        5
    )));
}

#[test]
fn xattr_limits() {
    let mut e = new();
    let f = create(&mut e, ROOT, "f");
    let long = "u".repeat(255);
    setx(&mut e, f, &long, b"x", XattrFlags::Either, 5).unwrap();
    assert!(matches!(
        setx(&mut e, f, &"u".repeat(256), b"x", XattrFlags::Either, 5),
        Err(FsError::OutOfRange(_))
    ));
    assert!(matches!(
        setx(&mut e, f, "", b"x", XattrFlags::Either, 5),
        Err(FsError::OutOfRange(_))
    ));
    assert!(matches!(
        e.get_xattr(f, &"u".repeat(256)),
        Err(FsError::OutOfRange(_))
    ));
    let max = vec![7u8; 64 << 10];
    setx(&mut e, f, "user.big", &max, XattrFlags::Either, 5).unwrap();
    assert!(matches!(
        setx(
            &mut e,
            f,
            "user.big2",
            &vec![7u8; (64 << 10) + 1],
            XattrFlags::Either,
            5
        ),
        Err(FsError::TooBig(_))
    ));
    // Names plus values at most 1 MiB per inode.
    let g = create(&mut e, ROOT, "g");
    let v = vec![1u8; 64 << 10];
    let mut used = 0usize;
    let mut i = 0;
    loop {
        let name = format!("user.{i:02}");
        if used + name.len() + v.len() > 1 << 20 {
            assert_eq!(
                setx(&mut e, g, &name, &v, XattrFlags::Either, 6),
                Err(FsError::NoSpace)
            );
            break;
        }
        setx(&mut e, g, &name, &v, XattrFlags::Either, 6).unwrap();
        used += name.len() + v.len();
        i += 1;
    }
    assert_eq!(i, 15);
    // Replacing an attribute counts only the new value: shrinking always fits, and the room it
    // frees is usable.
    setx(&mut e, g, "user.00", b"", XattrFlags::ReplaceOnly, 7).unwrap();
    setx(&mut e, g, "user.15", &v, XattrFlags::Either, 7).unwrap();
    // Exactly 1 MiB fits.
    let h = create(&mut e, ROOT, "h");
    let names_len = "user.a".len();
    setx(
        &mut e,
        h,
        "user.a",
        &vec![0; 64 << 10],
        XattrFlags::Either,
        8,
    )
    .unwrap();
    let mut left = (1usize << 20) - names_len - (64 << 10);
    let mut k = 0;
    while left > 0 {
        let name = format!("user.r{k:03}");
        let len = (left - name.len()).min(64 << 10);
        setx(&mut e, h, &name, &vec![0; len], XattrFlags::Either, 8).unwrap();
        left -= name.len() + len;
        k += 1;
    }
    assert_eq!(
        setx(&mut e, h, "user.z", b"", XattrFlags::Either, 8),
        Err(FsError::NoSpace)
    );
}

#[test]
fn setattr_mode_on_every_kind() {
    let mut e = new();
    let d = mkdir(&mut e, ROOT, "d");
    let l = attr(symlink_at(&mut e, ROOT, "l", "x")).inode;
    let p = attr(mknod_at(&mut e, ROOT, "p", FileKind::Fifo, 0)).inode;
    for i in [d, l, p] {
        let a = attr(setattr(&mut e, i, |c| {
            if let Command::SetAttr { mode, .. } = c {
                *mode = Some(0o1701);
            }
        }));
        assert_eq!((a.mode, a.ctime), (0o1701, t(50)));
    }
    for i in [l, p] {
        let r = setattr(&mut e, i, |c| {
            if let Command::SetAttr { size, .. } = c {
                *size = Some(0);
            }
        });
        assert!(invalid(r));
    }
}

fn chown_clear(e: &mut Engine, inode: InodeId, clear: bool) -> Attr {
    attr(setattr(e, inode, |c| {
        if let Command::SetAttr {
            uid,
            gid,
            clear_suid,
            ..
        } = c
        {
            *uid = Some(65534);
            *gid = Some(65533);
            *clear_suid = clear;
        }
    }))
}

fn chmod(e: &mut Engine, inode: InodeId, m: u32) {
    setattr(e, inode, |c| {
        if let Command::SetAttr { mode, .. } = c {
            *mode = Some(m);
        }
    })
    .unwrap();
}

#[test]
fn setattr_clear_suid_follows_linux() {
    let mut e = new();
    let f = create(&mut e, ROOT, "f");
    chmod(&mut e, f, 0o6555);
    let a = chown_clear(&mut e, f, true);
    assert_eq!(
        (a.mode, a.uid, a.gid, a.ctime),
        (0o555, 65534, 65533, t(50))
    );
    // Without S_IXGRP the setgid bit is a locking marker and stays.
    chmod(&mut e, f, 0o6644);
    assert_eq!(chown_clear(&mut e, f, true).mode, 0o2644);
    // Not asked: kept.
    chmod(&mut e, f, 0o6755);
    assert_eq!(chown_clear(&mut e, f, false).mode, 0o6755);
    // Directories keep theirs.
    let d = mkdir(&mut e, ROOT, "d");
    chmod(&mut e, d, 0o6755);
    assert_eq!(chown_clear(&mut e, d, true).mode, 0o6755);
    // Applied after an explicit mode in the same call.
    let a = attr(setattr(&mut e, f, |c| {
        if let Command::SetAttr {
            mode, clear_suid, ..
        } = c
        {
            *mode = Some(0o4711);
            *clear_suid = true;
        }
    }));
    assert_eq!(a.mode, 0o711);
    // Alone, it changes ctime only when it changes the mode.
    let mut cmd = Command::SetAttr {
        op: op0(),
        inode: f,
        mode: None,
        uid: None,
        gid: None,
        size: None,
        atime: None,
        mtime: None,
        clear_suid: true,
        time: t(77),
    };
    assert_eq!(attr(apply(&mut e, cmd.clone())).ctime, t(50));
    chmod(&mut e, f, 0o4700);
    if let Command::SetAttr { time, .. } = &mut cmd {
        *time = t(78);
    }
    let a = attr(apply(&mut e, cmd));
    assert_eq!((a.mode, a.ctime), (0o700, t(78)));
}

#[test]
fn rename_noreplace() {
    let mut e = new();
    let d = mkdir(&mut e, ROOT, "d");
    let f = create(&mut e, ROOT, "f");
    create(&mut e, d, "g");
    assert_eq!(
        rename_flags(&mut e, ROOT, "f", d, "g", RENAME_NOREPLACE, 5),
        Err(FsError::AlreadyExists)
    );
    assert_eq!(
        rename_flags(&mut e, ROOT, "f", ROOT, "f", RENAME_NOREPLACE, 5),
        Err(FsError::AlreadyExists)
    );
    assert_eq!(
        rename_flags(&mut e, ROOT, "x", d, "y", RENAME_NOREPLACE, 5),
        Err(FsError::NotFound)
    );
    rename_flags(&mut e, ROOT, "f", d, "h", RENAME_NOREPLACE, 6).unwrap();
    assert_eq!(e.lookup(d, "h").unwrap().inode, f);
    assert_eq!(e.getattr(d).unwrap().mtime, t(6));
}

#[test]
fn rename_exchange_swaps_entries() {
    let mut e = new();
    let a = mkdir(&mut e, ROOT, "a");
    let b = mkdir(&mut e, ROOT, "b");
    let sub = mkdir(&mut e, a, "sub");
    create(&mut e, sub, "inner");
    let f = create(&mut e, b, "f");
    assert_eq!(
        (e.getattr(a).unwrap().nlink, e.getattr(b).unwrap().nlink),
        (3, 2)
    );
    rename_flags(&mut e, a, "sub", b, "f", RENAME_EXCHANGE, 40).unwrap();
    assert_eq!(e.lookup(a, "sub").unwrap().inode, f);
    assert_eq!(e.lookup(b, "f").unwrap().inode, sub);
    assert_eq!(e.resolve("/b/f/inner").unwrap().kind, FileKind::File);
    let (pa, pb) = (e.getattr(a).unwrap(), e.getattr(b).unwrap());
    assert_eq!((pa.nlink, pa.mtime, pa.ctime), (2, t(40), t(40)));
    assert_eq!((pb.nlink, pb.mtime, pb.ctime), (3, t(40), t(40)));
    assert_eq!(e.getattr(sub).unwrap().ctime, t(40));
    assert_eq!(e.getattr(f).unwrap().ctime, t(40));
    // The moved directory's parent pointer follows: it cannot be moved under itself now.
    assert!(invalid(rename(&mut e, ROOT, "b", sub, "x", 41)));
    // Two directories in one parent; two files.
    let c = mkdir(&mut e, ROOT, "c");
    rename_flags(&mut e, ROOT, "a", ROOT, "c", RENAME_EXCHANGE, 42).unwrap();
    assert_eq!(
        (
            e.lookup(ROOT, "a").unwrap().inode,
            e.lookup(ROOT, "c").unwrap().inode
        ),
        (c, a)
    );
    assert_eq!(e.getattr(ROOT).unwrap().nlink, 5);
    // The same entry: nothing happens.
    let before = e.clone();
    rename_flags(&mut e, ROOT, "a", ROOT, "a", RENAME_EXCHANGE, 43).unwrap();
    assert_eq!(e, before);
}

#[test]
fn rename_exchange_errors() {
    let mut e = new();
    let a = mkdir(&mut e, ROOT, "a");
    let b = mkdir(&mut e, a, "b");
    create(&mut e, ROOT, "f");
    assert_eq!(
        rename_flags(&mut e, ROOT, "f", ROOT, "nope", RENAME_EXCHANGE, 5),
        Err(FsError::NotFound)
    );
    assert_eq!(
        rename_flags(&mut e, ROOT, "nope", ROOT, "f", RENAME_EXCHANGE, 5),
        Err(FsError::NotFound)
    );
    // A directory and its own descendant, either way round.
    assert!(invalid(rename_flags(
        &mut e,
        ROOT,
        "a",
        a,
        "b",
        RENAME_EXCHANGE,
        5
    )));
    assert!(invalid(rename_flags(
        &mut e,
        a,
        "b",
        ROOT,
        "a",
        RENAME_EXCHANGE,
        5
    )));
    create(&mut e, b, "deep");
    assert!(invalid(rename_flags(
        &mut e,
        ROOT,
        "a",
        b,
        "deep",
        RENAME_EXCHANGE,
        5
    )));
    // A non-empty directory may be exchanged with a file (nothing is replaced).
    rename_flags(&mut e, ROOT, "a", ROOT, "f", RENAME_EXCHANGE, 6).unwrap();
    assert_eq!(e.lookup(ROOT, "f").unwrap().inode, a);
}

#[test]
fn rename_rejects_unknown_flags() {
    let mut e = new();
    create(&mut e, ROOT, "f");
    for flags in [3, 4, 1 << 31] {
        assert!(
            invalid(rename_flags(&mut e, ROOT, "f", ROOT, "g", flags, 5)),
            "{flags}"
        );
    }
}

#[test]
fn counts_with_links_and_orphans() {
    let mut e = new();
    let f = create(&mut e, ROOT, "f");
    commit(&mut e, f, 100).unwrap();
    link(&mut e, f, ROOT, "g", 5).unwrap();
    symlink_at(&mut e, ROOT, "l", "abc").unwrap();
    mknod_at(&mut e, ROOT, "s", FileKind::Socket, 0).unwrap();
    assert_eq!(
        e.counts(),
        Counts {
            files: 2,
            directories: 1,
            symlinks: 1,
            chunks: 0,
            bytes: 100,
            ..Counts::default()
        }
    );
    hold(&mut e, f, 1, true).unwrap();
    unlink(&mut e, ROOT, "f", 6).unwrap();
    unlink(&mut e, ROOT, "g", 6).unwrap();
    assert_eq!(
        e.counts(),
        Counts {
            files: 2,
            directories: 1,
            symlinks: 1,
            chunks: 0,
            bytes: 100,
            ..Counts::default()
        }
    );
    hold(&mut e, f, 1, false).unwrap();
    assert_eq!(
        e.counts(),
        Counts {
            files: 1,
            directories: 1,
            symlinks: 1,
            chunks: 0,
            bytes: 0,
            ..Counts::default()
        }
    );
}

#[test]
fn new_mutations_are_exactly_once() {
    let mut e = new();
    let f = create(&mut e, ROOT, "f");
    let cmd = Command::Link {
        op: op(9, 1),
        inode: f,
        new_parent: ROOT,
        new_name: "g".into(),
        time: t(5),
    };
    let first = apply(&mut e, cmd.clone()).unwrap();
    assert_eq!(apply(&mut e, cmd), Ok(first));
    assert_eq!(e.getattr(f).unwrap().nlink, 2);
    let sx = Command::SetXattr {
        op: op(9, 2),
        inode: f,
        name: "user.k".into(),
        value: vec![1],
        flags: XattrFlags::CreateOnly,
        time: t(6),
    };
    apply(&mut e, sx.clone()).unwrap();
    assert_eq!(
        apply(&mut e, sx),
        Ok(Output::Unit),
        "a retried create-only set is not EEXIST"
    );
    let rx = Command::RemoveXattr {
        op: op(9, 3),
        inode: f,
        name: "user.k".into(),
        time: t(7),
    };
    apply(&mut e, rx.clone()).unwrap();
    assert_eq!(apply(&mut e, rx), Ok(Output::Unit));
    let sl = Command::Symlink {
        op: op(9, 4),
        parent: ROOT,
        name: "l".into(),
        target: "x".into(),
        uid: 0,
        gid: 0,
        time: t(8),
    };
    let a = apply(&mut e, sl.clone()).unwrap();
    assert_eq!(apply(&mut e, sl), Ok(a));
}

// ---------------------------------------------------------------- trash

const DAY_MS: u64 = 86_400_000;

fn with_trash() -> Engine {
    let mut e = new();
    apply(&mut e, Command::SetTrashRetention { ms: DAY_MS }).unwrap();
    e
}

fn restore(
    e: &mut Engine,
    inode: InodeId,
    path: Option<&str>,
    time: i64,
) -> Result<Output, FsError> {
    apply(
        e,
        Command::RestoreTrash {
            op: op0(),
            inode,
            path: path.map(str::to_string),
            time: t(time),
        },
    )
}

fn purge(e: &mut Engine, before: Option<i64>) -> u64 {
    match apply(
        e,
        Command::PurgeTrash {
            op: op0(),
            before: before.map(t),
        },
    ) {
        Ok(Output::Count(n)) => n,
        other => panic!("expected Count, got {other:?}"),
    }
}

/// (inode, path, deleted secs, size) of every trash entry.
fn trash_rows(e: &Engine) -> Vec<(InodeId, String, i64, u64)> {
    let (entries, more) = e.trash(None, u32::MAX);
    assert!(!more);
    entries
        .into_iter()
        .map(|x| (x.inode, x.path, x.deleted.secs, x.size))
        .collect()
}

/// A file at `parent/name` with two chunks and `size` bytes.
fn file_with_chunks(
    e: &mut Engine,
    parent: InodeId,
    name: &str,
    size: u64,
) -> (InodeId, Vec<ChunkHandle>) {
    let f = create(e, parent, name);
    let hs = vec![handle(alloc(e, f, 0)), handle(alloc(e, f, 1))];
    commit(e, f, size).unwrap();
    (f, hs)
}

#[test]
fn without_retention_nothing_is_trashed() {
    let mut e = new();
    assert_eq!(e.trash_retention_ms(), 0);
    let (f, hs) = file_with_chunks(&mut e, ROOT, "f", 2 * CS);
    unlink(&mut e, ROOT, "f", 20).unwrap();
    assert!(trash_rows(&e).is_empty());
    assert_eq!(e.chunk(hs[0]), None);
    assert_eq!(e.goal_of_chunk(hs[0]), None);
    assert_eq!(restore(&mut e, f, None, 21), Err(FsError::NotFound));
}

/// A mount sends a read-only open's hold without waiting for it, so another client's unlink
/// can move the file to the trash first: the hold then makes it an open orphan again (its
/// chunks kept, readable by inode), and its last release puts it back in the trash with its
/// first path and deletion time.
#[test]
fn a_hold_that_arrives_after_the_unlink_takes_the_file_back_from_the_trash() {
    let mut e = with_trash();
    let d = mkdir(&mut e, ROOT, "d");
    let (f, hs) = file_with_chunks(&mut e, d, "f", CS + 5);
    let before = e.counts();
    unlink(&mut e, d, "f", 50).unwrap();
    assert_eq!(trash_rows(&e), vec![(f, "/d/f".to_string(), 50, CS + 5)]);
    // The old command still finds nothing there (logs written before the new one replay as
    // they did).
    assert_eq!(hold(&mut e, f, 7, true), Err(FsError::NotFound));
    let hold_late = |e: &mut Engine, inode, client| {
        apply(
            e,
            Command::HoldOpenFromTrash {
                op: op0(),
                inode,
                client: ClientId(client),
            },
        )
    };
    hold_late(&mut e, f, 7).unwrap();
    e.check_invariants().unwrap();
    assert!(trash_rows(&e).is_empty());
    assert_eq!(e.orphans(), vec![f]);
    let a = e.getattr(f).unwrap();
    assert_eq!((a.nlink, a.size), (0, CS + 5));
    assert_eq!(e.chunks(f, 0, 10).unwrap().len(), 2);
    let open = e.counts();
    assert_eq!((open.files, open.trash_files), (before.files, 0));
    // A second client's hold, then both releases: back in the trash as it was.
    hold_late(&mut e, f, 8).unwrap();
    hold(&mut e, f, 7, false).unwrap();
    assert!(trash_rows(&e).is_empty());
    hold(&mut e, f, 8, false).unwrap();
    e.check_invariants().unwrap();
    assert_eq!(trash_rows(&e), vec![(f, "/d/f".to_string(), 50, CS + 5)]);
    assert!(e.chunk(hs[0]).is_some() && e.chunk(hs[1]).is_some());
    assert_eq!(e.counts().trash_files, 1);
    // Without the trash the file is gone at the unlink, and a late hold finds nothing.
    apply(&mut e, Command::SetTrashRetention { ms: 0 }).unwrap();
    let (g, _) = file_with_chunks(&mut e, d, "g", 10);
    unlink(&mut e, d, "g", 60).unwrap();
    assert_eq!(hold_late(&mut e, g, 7), Err(FsError::NotFound));
    e.check_invariants().unwrap();
}

#[test]
fn unlink_moves_a_file_to_the_trash_with_its_chunks() {
    let mut e = with_trash();
    let d = mkdir(&mut e, ROOT, "d");
    let sub = mkdir(&mut e, d, "sub");
    let (f, hs) = file_with_chunks(&mut e, sub, "f", CS + 5);
    unlink(&mut e, sub, "f", 50).unwrap();
    // The name is free at once; the inode is gone from the namespace.
    assert_eq!(e.lookup(sub, "f"), Err(FsError::NotFound));
    assert_eq!(e.getattr(f), Err(FsError::NotFound));
    assert_eq!(e.chunks(f, 0, 10), Err(FsError::NotFound));
    assert_eq!(e.getattr(sub).unwrap().mtime, t(50));
    assert_eq!(trash_rows(&e), vec![(f, "/d/sub/f".into(), 50, CS + 5)]);
    assert_eq!(e.trash(None, 10).0[0].chunks, 2);
    // Its chunks stay in the table (so the chunkservers keep them) with their goal.
    for h in &hs {
        assert_eq!(e.chunk(*h).map(|c| c.inode), Some(f));
        assert_eq!(e.goal_of_chunk(*h), Some(3));
    }
    assert_eq!(
        e.counts(),
        Counts {
            directories: 3,
            chunks: 2,
            trash_files: 1,
            trash_bytes: CS + 5,
            ..Counts::default()
        }
    );
    // A trashed inode cannot be held, linked, written or resized (only HoldOpenFromTrash takes
    // it back: a_hold_that_arrives_after_the_unlink_takes_the_file_back_from_the_trash).
    assert_eq!(hold(&mut e, f, 1, true), Err(FsError::NotFound));
    assert_eq!(link(&mut e, f, ROOT, "x", 51), Err(FsError::NotFound));
    assert_eq!(alloc(&mut e, f, 2), Err(FsError::NotFound));
    assert_eq!(commit(&mut e, f, 1), Err(FsError::NotFound));
    assert_eq!(e.oldest_trash(), Some(t(50)));
}

#[test]
fn only_the_last_link_of_a_regular_file_goes_to_the_trash() {
    let mut e = with_trash();
    let (f, _) = file_with_chunks(&mut e, ROOT, "f", 3);
    link(&mut e, f, ROOT, "g", 5).unwrap();
    unlink(&mut e, ROOT, "f", 6).unwrap();
    assert!(trash_rows(&e).is_empty());
    unlink(&mut e, ROOT, "g", 7).unwrap();
    assert_eq!(trash_rows(&e), vec![(f, "/g".into(), 7, 3)]);
    // Symlinks and special files are dropped as before.
    symlink_at(&mut e, ROOT, "l", "target").unwrap();
    mknod_at(&mut e, ROOT, "p", FileKind::Fifo, 0).unwrap();
    unlink(&mut e, ROOT, "l", 8).unwrap();
    unlink(&mut e, ROOT, "p", 8).unwrap();
    assert_eq!(trash_rows(&e).len(), 1);
    assert_eq!(e.counts().files, 0);
    assert_eq!(e.counts().symlinks, 0);
}

#[test]
fn replacing_rename_trashes_the_replaced_file() {
    let mut e = with_trash();
    let d = mkdir(&mut e, ROOT, "d");
    let (old, hs) = file_with_chunks(&mut e, d, "out", 10);
    let new_file = create(&mut e, ROOT, "tmp");
    rename(&mut e, ROOT, "tmp", d, "out", 30).unwrap();
    assert_eq!(e.lookup(d, "out").unwrap().inode, new_file);
    assert_eq!(trash_rows(&e), vec![(old, "/d/out".into(), 30, 10)]);
    assert!(e.chunk(hs[1]).is_some());
    // The original path is taken now: restoring there fails, elsewhere works.
    assert_eq!(restore(&mut e, old, None, 31), Err(FsError::AlreadyExists));
    let a = attr(restore(&mut e, old, Some("/d/out.old"), 32));
    assert_eq!((a.inode, a.nlink, a.size, a.ctime), (old, 1, 10, t(32)));
    assert_eq!(e.resolve("/d/out.old").unwrap().inode, old);
}

#[test]
fn paths_follow_renamed_and_exchanged_directories() {
    let mut e = with_trash();
    let a = mkdir(&mut e, ROOT, "a");
    let b = mkdir(&mut e, ROOT, "b");
    create(&mut e, a, "f");
    create(&mut e, b, "g");
    rename(&mut e, ROOT, "a", b, "moved", 5).unwrap();
    unlink(&mut e, a, "f", 6).unwrap();
    rename_flags(&mut e, ROOT, "b", ROOT, "c", RENAME_NOREPLACE, 7).unwrap();
    let x = mkdir(&mut e, ROOT, "x");
    rename_flags(&mut e, ROOT, "c", ROOT, "x", RENAME_EXCHANGE, 8).unwrap();
    assert_eq!(e.lookup(ROOT, "c").unwrap().inode, x);
    unlink(&mut e, b, "g", 9).unwrap();
    let paths: Vec<String> = trash_rows(&e).into_iter().map(|r| r.1).collect();
    assert_eq!(paths, vec!["/b/moved/f".to_string(), "/x/g".to_string()]);
}

#[test]
fn an_orphan_goes_to_the_trash_when_its_last_hold_goes() {
    let mut e = with_trash();
    let (f, hs) = file_with_chunks(&mut e, ROOT, "f", 7);
    let (g, _) = file_with_chunks(&mut e, ROOT, "g", 8);
    hold(&mut e, f, 1, true).unwrap();
    hold(&mut e, f, 2, true).unwrap();
    hold(&mut e, g, 2, true).unwrap();
    unlink(&mut e, ROOT, "f", 20).unwrap();
    create(&mut e, ROOT, "h");
    rename(&mut e, ROOT, "h", ROOT, "g", 21).unwrap();
    // Orphans are not in the trash while held, and still count as files.
    assert!(trash_rows(&e).is_empty());
    assert_eq!(e.orphans(), vec![f, g]);
    assert_eq!(e.counts().files, 3);
    hold(&mut e, f, 1, false).unwrap();
    assert!(trash_rows(&e).is_empty());
    // The last hold: into the trash, with the path and time of the unlink.
    hold(&mut e, f, 2, false).unwrap();
    assert_eq!(trash_rows(&e), vec![(f, "/f".into(), 20, 7)]);
    assert_eq!(e.getattr(f), Err(FsError::NotFound));
    assert!(e.chunk(hs[0]).is_some());
    // A client going away does the same.
    apply(
        &mut e,
        Command::DropClientHolds {
            client: ClientId(2),
        },
    )
    .unwrap();
    assert_eq!(
        trash_rows(&e),
        vec![(f, "/f".into(), 20, 7), (g, "/g".into(), 21, 8)]
    );
    assert_eq!(e.orphans(), Vec::<InodeId>::new());
    assert_eq!(e.counts().files, 1);
    assert_eq!(e.counts().trash_files, 2);
}

#[test]
fn an_orphan_is_dropped_if_the_trash_was_turned_off_before_its_release() {
    let mut e = with_trash();
    let (f, hs) = file_with_chunks(&mut e, ROOT, "f", 7);
    hold(&mut e, f, 1, true).unwrap();
    unlink(&mut e, ROOT, "f", 20).unwrap();
    apply(&mut e, Command::SetTrashRetention { ms: 0 }).unwrap();
    hold(&mut e, f, 1, false).unwrap();
    assert!(trash_rows(&e).is_empty());
    assert_eq!(e.chunk(hs[0]), None);
    assert_eq!(e.counts().chunks, 0);
}

#[test]
fn restore_puts_a_file_back_where_it_was() {
    let mut e = with_trash();
    let d = mkdir(&mut e, ROOT, "d");
    let (f, hs) = file_with_chunks(&mut e, d, "f", 2 * CS);
    setx(&mut e, f, "user.k", b"v", XattrFlags::Either, 11).unwrap();
    link(&mut e, f, d, "g", 12).unwrap();
    let before = e.getattr(f).unwrap();
    unlink(&mut e, d, "g", 13).unwrap();
    unlink(&mut e, d, "f", 14).unwrap();
    let a = attr(restore(&mut e, f, None, 15));
    assert_eq!(a.inode, f);
    assert_eq!((a.nlink, a.size, a.ctime), (1, 2 * CS, t(15)));
    assert_eq!(
        (a.mtime, a.mode, a.uid),
        (before.mtime, before.mode, before.uid)
    );
    assert_eq!(e.resolve("/d/f").unwrap(), a);
    assert_eq!(e.lookup(d, "g"), Err(FsError::NotFound));
    assert_eq!(e.getattr(d).unwrap().mtime, t(15));
    assert_eq!(
        e.chunks(f, 0, 10)
            .unwrap()
            .iter()
            .map(|c| c.1)
            .collect::<Vec<_>>(),
        hs
    );
    assert_eq!(e.get_xattr(f, "user.k").unwrap(), b"v");
    assert!(trash_rows(&e).is_empty());
    assert_eq!(
        e.counts(),
        Counts {
            files: 1,
            directories: 2,
            chunks: 2,
            bytes: 2 * CS,
            ..Counts::default()
        }
    );
    // A restored file is an ordinary file: writable, and trashed again by unlink.
    handle(alloc(&mut e, f, 2));
    unlink(&mut e, d, "f", 16).unwrap();
    assert_eq!(trash_rows(&e), vec![(f, "/d/f".into(), 16, 2 * CS)]);
}

#[test]
fn restore_errors() {
    let mut e = with_trash();
    let d = mkdir(&mut e, ROOT, "d");
    let f = create(&mut e, d, "f");
    assert_eq!(
        restore(&mut e, f, None, 5),
        Err(FsError::NotFound),
        "not trashed"
    );
    unlink(&mut e, d, "f", 6).unwrap();
    rmdir(&mut e, ROOT, "d", 7).unwrap();
    // The parent is gone.
    assert_eq!(restore(&mut e, f, None, 8), Err(FsError::NotFound));
    assert_eq!(
        restore(&mut e, f, Some("/nope/f"), 8),
        Err(FsError::NotFound)
    );
    assert_eq!(
        restore(&mut e, InodeId(999), None, 8),
        Err(FsError::NotFound)
    );
    // A path through a file, a taken name, the root, a bad path.
    create(&mut e, ROOT, "file");
    assert_eq!(
        restore(&mut e, f, Some("/file/f"), 8),
        Err(FsError::NotADirectory)
    );
    assert_eq!(
        restore(&mut e, f, Some("/file"), 8),
        Err(FsError::AlreadyExists)
    );
    assert!(restore(&mut e, f, Some("/"), 8).is_err());
    assert!(restore(&mut e, f, Some("relative"), 8).is_err());
    // Still in the trash after all that; a new parent works.
    assert_eq!(trash_rows(&e).len(), 1);
    mkdir(&mut e, ROOT, "d");
    assert_eq!(attr(restore(&mut e, f, None, 9)).inode, f);
}

#[test]
fn purge_drops_entries_deleted_before_a_time() {
    let mut e = with_trash();
    let mut handles = Vec::new();
    for (i, time) in [(0, 30), (1, 10), (2, 20)] {
        let (_, hs) = file_with_chunks(&mut e, ROOT, &format!("f{i}"), 100 + i);
        unlink(&mut e, ROOT, &format!("f{i}"), time).unwrap();
        handles.push(hs);
    }
    assert_eq!(e.oldest_trash(), Some(t(10)));
    assert_eq!(e.trash_chunks(Some(t(20))), handles[1]);
    // Strictly before: the entry deleted at 20 stays.
    assert_eq!(purge(&mut e, Some(20)), 1);
    assert_eq!(e.chunk(handles[1][0]), None);
    assert!(e.chunk(handles[2][0]).is_some());
    let left: Vec<i64> = trash_rows(&e).iter().map(|r| r.2).collect();
    assert_eq!(left, vec![30, 20]);
    assert_eq!(purge(&mut e, Some(20)), 0);
    assert_eq!(purge(&mut e, Some(21)), 1);
    assert_eq!(
        e.counts(),
        Counts {
            directories: 1,
            chunks: 2,
            trash_files: 1,
            trash_bytes: 100,
            ..Counts::default()
        }
    );
    // All.
    assert_eq!(purge(&mut e, None), 1);
    assert!(trash_rows(&e).is_empty());
    assert_eq!(e.oldest_trash(), None);
    assert_eq!(e.counts().chunks, 0);
    for hs in &handles {
        for h in hs {
            assert_eq!(e.chunk(*h), None);
            assert_eq!(e.goal_of_chunk(*h), None);
        }
    }
}

#[test]
fn trash_listing_pages_in_inode_order() {
    let mut e = with_trash();
    let ids: Vec<InodeId> = (0..5)
        .map(|i| create(&mut e, ROOT, &format!("f{i}")))
        .collect();
    for i in (0..5).rev() {
        unlink(&mut e, ROOT, &format!("f{i}"), 10 + i).unwrap();
    }
    let (page, more) = e.trash(None, 2);
    assert!(more);
    assert_eq!(page.iter().map(|x| x.inode).collect::<Vec<_>>(), ids[..2]);
    let (page, more) = e.trash(Some(ids[1]), 3);
    assert!(!more);
    assert_eq!(page.iter().map(|x| x.inode).collect::<Vec<_>>(), ids[2..]);
}

#[test]
fn trash_commands_are_exactly_once() {
    let mut e = with_trash();
    let f = create(&mut e, ROOT, "f");
    unlink(&mut e, ROOT, "f", 5).unwrap();
    let r = Command::RestoreTrash {
        op: op(4, 1),
        inode: f,
        path: None,
        time: t(6),
    };
    let first = apply(&mut e, r.clone()).unwrap();
    assert_eq!(
        apply(&mut e, r),
        Ok(first),
        "a retried restore is not NotFound"
    );
    unlink(&mut e, ROOT, "f", 7).unwrap();
    let p = Command::PurgeTrash {
        op: op(4, 2),
        before: None,
    };
    assert_eq!(apply(&mut e, p.clone()), Ok(Output::Count(1)));
    assert_eq!(apply(&mut e, p), Ok(Output::Count(1)));
    let g = Command::SetGoal {
        op: op(4, 3),
        inode: ROOT,
        goal: 2,
        recursive: false,
    };
    assert_eq!(apply(&mut e, g.clone()), Ok(Output::Count(1)));
    assert_eq!(apply(&mut e, g), Ok(Output::Count(1)));
}

#[test]
fn trash_survives_checkpoint_and_replay() {
    let mut log = vec![Command::SetTrashRetention { ms: DAY_MS }];
    let mk = |name: &str, time: i64| Command::Create {
        op: op0(),
        parent: ROOT,
        name: name.into(),
        mode: 0o644,
        uid: 0,
        gid: 0,
        exclusive: true,
        time: t(time),
    };
    log.push(mk("a", 1));
    log.push(mk("b", 2));
    log.push(mk("c", 3));
    for (i, n) in ["a", "b", "c"].iter().enumerate() {
        log.push(Command::AllocateChunk {
            inode: InodeId(2 + i as u64),
            index: 0,
            time: t(4),
        });
        log.push(Command::HoldOpen {
            op: op0(),
            inode: InodeId(2 + i as u64),
            client: ClientId(1),
            hold: i == 2,
        });
        log.push(Command::Unlink {
            op: op0(),
            parent: ROOT,
            name: n.to_string(),
            time: t(10 + i as i64),
        });
    }
    log.push(Command::SetGoal {
        op: op0(),
        inode: ROOT,
        goal: 1,
        recursive: true,
    });
    log.push(Command::RestoreTrash {
        op: op0(),
        inode: InodeId(2),
        path: Some("/back".into()),
        time: t(20),
    });
    log.push(Command::PurgeTrash {
        op: op0(),
        before: Some(t(12)),
    });
    let mut a = new();
    for cmd in &log {
        apply(&mut a, cmd.clone()).unwrap();
    }
    // a restored at /back; b purged; c an orphan still held.
    assert!(trash_rows(&a).is_empty());
    assert_eq!(a.orphans(), vec![InodeId(4)]);
    let bytes = postcard::to_stdvec(&a).unwrap();
    let mut b: Engine = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(b, a);
    let mut c = new();
    for cmd in &log {
        c.apply(cmd).unwrap();
    }
    assert_eq!(c, a);
    assert_eq!(postcard::to_stdvec(&c).unwrap(), bytes);
    // The orphan's trash record was kept through the checkpoint.
    let release = Command::DropClientHolds {
        client: ClientId(1),
    };
    apply(&mut b, release.clone()).unwrap();
    apply(&mut c, release).unwrap();
    assert_eq!(trash_rows(&b), vec![(InodeId(4), "/c".into(), 12, 0)]);
    assert_eq!(b, c);
}

// ---------------------------------------------------------------- replication goals

fn set_goal(e: &mut Engine, inode: InodeId, goal: u32, recursive: bool) -> Result<Output, FsError> {
    apply(
        e,
        Command::SetGoal {
            op: op0(),
            inode,
            goal,
            recursive,
        },
    )
}

#[test]
fn new_inodes_inherit_their_parents_goal() {
    let mut e = Engine::new(CS, t(1)).with_root_goal(2);
    e.check_invariants().unwrap();
    assert_eq!(e.goal(ROOT), Ok(2));
    assert_eq!(new().goal(ROOT), Ok(3));
    assert_eq!(Engine::new(CS, t(1)).with_root_goal(0).goal(ROOT), Ok(1));
    assert_eq!(
        Engine::new(CS, t(1)).with_root_goal(999).goal(ROOT),
        Ok(255)
    );
    let d = mkdir(&mut e, ROOT, "d");
    assert_eq!(e.goal(d), Ok(2));
    set_goal(&mut e, d, 5, false).unwrap();
    let f = create(&mut e, d, "f");
    let sub = mkdir(&mut e, d, "sub");
    let l = attr(symlink_at(&mut e, d, "l", "x")).inode;
    assert_eq!((e.goal(f), e.goal(sub), e.goal(l)), (Ok(5), Ok(5), Ok(5)));
    let h = handle(alloc(&mut e, f, 0));
    assert_eq!(e.goal_of_chunk(h), Some(5));
    assert_eq!(e.goal_of_chunk(ChunkHandle(12345)), None);
    // A link or a rename keeps the inode's own goal.
    link(&mut e, f, ROOT, "f2", 5).unwrap();
    rename(&mut e, d, "sub", ROOT, "sub", 6).unwrap();
    assert_eq!((e.goal(f), e.goal(sub)), (Ok(5), Ok(5)));
    assert_eq!(e.goal(InodeId(999)), Err(FsError::NotFound));
}

#[test]
fn set_goal_on_a_directory_alone_or_its_subtree() {
    let mut e = new();
    let d = mkdir(&mut e, ROOT, "d");
    let sub = mkdir(&mut e, d, "sub");
    let f = create(&mut e, d, "f");
    let g = create(&mut e, sub, "g");
    let outside = create(&mut e, ROOT, "outside");
    // Without -r: the directory only.
    assert_eq!(set_goal(&mut e, d, 2, false), Ok(Output::Count(1)));
    assert_eq!([d, sub, f, g].map(|i| e.goal(i).unwrap()), [2, 3, 3, 3]);
    // With -r: everything below, nothing outside; the count is of inodes that changed.
    assert_eq!(set_goal(&mut e, d, 2, true), Ok(Output::Count(3)));
    assert_eq!([d, sub, f, g].map(|i| e.goal(i).unwrap()), [2, 2, 2, 2]);
    assert_eq!(e.goal(outside), Ok(3));
    assert_eq!(set_goal(&mut e, d, 2, true), Ok(Output::Count(0)));
    // On a file, -r or not.
    assert_eq!(set_goal(&mut e, g, 7, true), Ok(Output::Count(1)));
    assert_eq!(e.goal(g), Ok(7));
    // A trashed file keeps its goal, and so do its chunks.
    apply(&mut e, Command::SetTrashRetention { ms: DAY_MS }).unwrap();
    let h = handle(alloc(&mut e, g, 0));
    unlink(&mut e, sub, "g", 9).unwrap();
    assert_eq!(e.goal_of_chunk(h), Some(7));
    assert_eq!(e.goal(g), Err(FsError::NotFound));
    attr(restore(&mut e, g, None, 10));
    assert_eq!(e.goal(g), Ok(7));
}

#[test]
fn set_goal_validates() {
    let mut e = new();
    assert!(invalid(set_goal(&mut e, ROOT, 0, false)));
    assert!(invalid(set_goal(&mut e, ROOT, 256, true)));
    assert_eq!(
        set_goal(&mut e, InodeId(99), 2, false),
        Err(FsError::NotFound)
    );
    assert_eq!(set_goal(&mut e, ROOT, 255, false), Ok(Output::Count(1)));
}

// ---------------------------------------------------------------- property tests

/// Small name space so that collisions happen.
const NAMES: [&str; 4] = ["a", "b", "c", "d"];
const XNAMES: [&str; 3] = ["user.x", "user.y", "trusted.z"];
const SPECIAL: [FileKind; 5] = [
    FileKind::Fifo,
    FileKind::CharDevice,
    FileKind::BlockDevice,
    FileKind::Socket,
    FileKind::File,
];

#[derive(Clone, Debug)]
enum PathOp {
    Mkdir(Vec<usize>),
    Create(Vec<usize>, bool),
    Rename(Vec<usize>, Vec<usize>),
    RenameFlags(Vec<usize>, Vec<usize>, u32),
    Unlink(Vec<usize>),
    Rmdir(Vec<usize>),
    Symlink(Vec<usize>),
    Mknod(Vec<usize>, usize),
    Link(Vec<usize>, Vec<usize>),
    SetSize(Vec<usize>, u64),
    Chmod(Vec<usize>, u32, bool),
    Commit(Vec<usize>, u64),
    Alloc(Vec<usize>, u64),
    /// Replace the chunk at an index (its current handle, whatever its version).
    Replace(Vec<usize>, u64),
    Bump(u64),
    ClientRetry(u64, u64),
    SetXattr(Vec<usize>, usize, usize, u8),
    RemoveXattr(Vec<usize>, usize),
    Hold(Vec<usize>, u64),
    /// Create (exclusive or not) and hold for a client, in one command.
    CreateHeld(Vec<usize>, bool, u64),
    /// Release by inode number (orphans have no path).
    Release(u64, u64),
    /// Hold by inode number, taking a trashed file back (a hold that arrives after the file's
    /// unlink: it may be in the trash, or gone).
    HoldId(u64, u64),
    DropClient(u64),
    /// Turn the trash on or off.
    Trash(bool),
    /// Restore the n-th trash entry (modulo their number), to its own path or a given one.
    Restore(usize, Option<Vec<usize>>),
    /// Purge entries deleted before step N (all if `None`).
    Purge(Option<i64>),
    SetGoal(Vec<usize>, u32, bool),
}

fn path_strategy() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0..NAMES.len(), 1..4)
}

fn op_strategy() -> impl Strategy<Value = PathOp> {
    prop_oneof![
        3 => path_strategy().prop_map(PathOp::Mkdir),
        3 => (path_strategy(), any::<bool>()).prop_map(|(p, x)| PathOp::Create(p, x)),
        3 => (path_strategy(), path_strategy()).prop_map(|(a, b)| PathOp::Rename(a, b)),
        2 => (path_strategy(), path_strategy(), 0..4u32).prop_map(|(a, b, f)| PathOp::RenameFlags(a, b, f)),
        2 => path_strategy().prop_map(PathOp::Unlink),
        2 => path_strategy().prop_map(PathOp::Rmdir),
        1 => path_strategy().prop_map(PathOp::Symlink),
        1 => (path_strategy(), 0..SPECIAL.len()).prop_map(|(p, k)| PathOp::Mknod(p, k)),
        3 => (path_strategy(), path_strategy()).prop_map(|(a, b)| PathOp::Link(a, b)),
        1 => (path_strategy(), 0..5 * CS).prop_map(|(p, s)| PathOp::SetSize(p, s)),
        1 => (path_strategy(), 0..0o10000u32, any::<bool>()).prop_map(|(p, m, c)| PathOp::Chmod(p, m, c)),
        1 => (path_strategy(), 0..5 * CS).prop_map(|(p, s)| PathOp::Commit(p, s)),
        2 => (path_strategy(), 0..5u64).prop_map(|(p, i)| PathOp::Alloc(p, i)),
        1 => (path_strategy(), 0..5u64).prop_map(|(p, i)| PathOp::Replace(p, i)),
        1 => (1..20u64).prop_map(PathOp::Bump),
        1 => (1..4u64, 1..6u64).prop_map(|(c, s)| PathOp::ClientRetry(c, s)),
        2 => (path_strategy(), 0..XNAMES.len(), 0..4usize, 0..3u8).prop_map(|(p, n, l, f)| PathOp::SetXattr(p, n, l, f)),
        1 => (path_strategy(), 0..XNAMES.len()).prop_map(|(p, n)| PathOp::RemoveXattr(p, n)),
        2 => (path_strategy(), 1..4u64).prop_map(|(p, c)| PathOp::Hold(p, c)),
        2 => (path_strategy(), any::<bool>(), 1..4u64).prop_map(|(p, x, c)| PathOp::CreateHeld(p, x, c)),
        2 => (2..30u64, 1..4u64).prop_map(|(i, c)| PathOp::Release(i, c)),
        1 => (2..30u64, 1..4u64).prop_map(|(i, c)| PathOp::HoldId(i, c)),
        1 => (1..4u64).prop_map(PathOp::DropClient),
        1 => any::<bool>().prop_map(PathOp::Trash),
        2 => (0..8usize, prop::option::of(path_strategy())).prop_map(|(i, p)| PathOp::Restore(i, p)),
        1 => prop::option::of(0..80i64).prop_map(PathOp::Purge),
        1 => (path_strategy(), 0..5u32, any::<bool>()).prop_map(|(p, g, r)| PathOp::SetGoal(p, g, r)),
    ]
}

fn path_str(p: &[usize]) -> String {
    p.iter().map(|&i| format!("/{}", NAMES[i])).collect()
}

fn parent_str(p: &[usize]) -> String {
    let s = path_str(&p[..p.len() - 1]);
    if s.is_empty() {
        "/".into()
    } else {
        s
    }
}

/// Turn a path op into an engine command, resolving parents with the engine (a missing parent
/// becomes an id that does not exist, so the command fails as the model expects).
fn to_command(e: &Engine, o: &PathOp, step: i64) -> Command {
    let parent = |p: &[usize]| {
        e.resolve(&parent_str(p))
            .map(|a| a.inode)
            .unwrap_or(InodeId(u64::MAX))
    };
    let target = |p: &[usize]| {
        e.resolve(&path_str(p))
            .map(|a| a.inode)
            .unwrap_or(InodeId(u64::MAX))
    };
    let name = |p: &[usize]| NAMES[*p.last().unwrap()].to_string();
    let time = t(100 + step);
    let o0 = op0();
    match o {
        PathOp::Mkdir(p) => Command::Mkdir {
            op: o0,
            parent: parent(p),
            name: name(p),
            mode: 0o755,
            uid: 0,
            gid: 0,
            time,
        },
        PathOp::Create(p, exclusive) => Command::Create {
            op: o0,
            parent: parent(p),
            name: name(p),
            mode: 0o644,
            uid: 0,
            gid: 0,
            exclusive: *exclusive,
            time,
        },
        PathOp::CreateHeld(p, exclusive, c) => Command::CreateHeld {
            // Sequence numbers above those of `ClientRetry`, increasing with the step.
            op: OpId {
                client: ClientId(*c),
                seq: 1_000 + step as u64,
            },
            parent: parent(p),
            name: name(p),
            mode: 0o644,
            uid: 0,
            gid: 0,
            exclusive: *exclusive,
            time,
        },
        PathOp::Rename(a, b) => Command::Rename {
            op: o0,
            src_parent: parent(a),
            src_name: name(a),
            dst_parent: parent(b),
            dst_name: name(b),
            flags: 0,
            time,
        },
        PathOp::RenameFlags(a, b, flags) => Command::Rename {
            op: o0,
            src_parent: parent(a),
            src_name: name(a),
            dst_parent: parent(b),
            dst_name: name(b),
            flags: *flags,
            time,
        },
        PathOp::Unlink(p) => Command::Unlink {
            op: o0,
            parent: parent(p),
            name: name(p),
            time,
        },
        PathOp::Rmdir(p) => Command::Rmdir {
            op: o0,
            parent: parent(p),
            name: name(p),
            time,
        },
        PathOp::Symlink(p) => Command::Symlink {
            op: o0,
            parent: parent(p),
            name: name(p),
            target: path_str(p),
            uid: 0,
            gid: 0,
            time,
        },
        PathOp::Mknod(p, k) => Command::Mknod {
            op: o0,
            parent: parent(p),
            name: name(p),
            kind: SPECIAL[*k],
            mode: 0o600,
            rdev: *k as u32 + 1,
            uid: 0,
            gid: 0,
            time,
        },
        PathOp::Link(a, b) => Command::Link {
            op: o0,
            inode: target(a),
            new_parent: parent(b),
            new_name: name(b),
            time,
        },
        PathOp::SetSize(p, s) => Command::SetAttr {
            op: o0,
            inode: target(p),
            mode: None,
            uid: None,
            gid: None,
            size: Some(*s),
            atime: None,
            mtime: None,
            clear_suid: false,
            time,
        },
        PathOp::Chmod(p, m, clear) => Command::SetAttr {
            op: o0,
            inode: target(p),
            mode: Some(*m),
            uid: Some(1),
            gid: None,
            size: None,
            atime: None,
            mtime: None,
            clear_suid: *clear,
            time,
        },
        PathOp::Commit(p, s) => Command::CommitSize {
            op: o0,
            inode: target(p),
            end: *s,
            mtime: time,
            time,
        },
        PathOp::Alloc(p, i) => Command::AllocateChunk {
            inode: target(p),
            index: *i,
            time,
        },
        PathOp::Replace(p, i) => Command::ReplaceChunk {
            inode: target(p),
            index: *i,
            handle: e
                .chunk_at(target(p), *i)
                .map_or(ChunkHandle(u64::MAX), |(h, _)| h),
        },
        PathOp::Bump(h) => Command::BumpVersion {
            handle: ChunkHandle(*h),
        },
        PathOp::ClientRetry(c, s) => Command::Mkdir {
            op: op(*c, *s),
            parent: ROOT,
            name: format!("c{c}s{s}"),
            mode: 0o700,
            uid: 0,
            gid: 0,
            time,
        },
        PathOp::SetXattr(p, n, len, f) => Command::SetXattr {
            op: o0,
            inode: target(p),
            name: XNAMES[*n].into(),
            value: vec![*len as u8; *len],
            flags: [
                XattrFlags::Either,
                XattrFlags::CreateOnly,
                XattrFlags::ReplaceOnly,
            ][*f as usize],
            time,
        },
        PathOp::RemoveXattr(p, n) => Command::RemoveXattr {
            op: o0,
            inode: target(p),
            name: XNAMES[*n].into(),
            time,
        },
        PathOp::Hold(p, c) => Command::HoldOpen {
            op: o0,
            inode: target(p),
            client: ClientId(*c),
            hold: true,
        },
        PathOp::Release(i, c) => Command::HoldOpen {
            op: o0,
            inode: InodeId(*i),
            client: ClientId(*c),
            hold: false,
        },
        PathOp::HoldId(i, c) => Command::HoldOpenFromTrash {
            op: o0,
            inode: InodeId(*i),
            client: ClientId(*c),
        },
        PathOp::DropClient(c) => Command::DropClientHolds {
            client: ClientId(*c),
        },
        PathOp::Trash(on) => Command::SetTrashRetention {
            ms: if *on { 1000 } else { 0 },
        },
        PathOp::Restore(i, p) => Command::RestoreTrash {
            op: o0,
            inode: {
                let (trash, _) = e.trash(None, u32::MAX);
                trash
                    .get(i % trash.len().max(1))
                    .map_or(InodeId(u64::MAX), |x| x.inode)
            },
            path: p.as_deref().map(path_str),
            time,
        },
        PathOp::Purge(before) => Command::PurgeTrash {
            op: o0,
            before: before.map(|b| t(100 + b)),
        },
        PathOp::SetGoal(p, goal, recursive) => Command::SetGoal {
            op: o0,
            inode: target(p),
            goal: *goal,
            recursive: *recursive,
        },
    }
}

/// One node of a snapshot: kind, size, chunks, inode.
type Node = (
    FileKind,
    u64,
    Vec<(u64, ChunkHandle, ChunkVersion)>,
    InodeId,
);

/// The whole tree as path -> (kind, size, chunks, inode), walked through the public API, checking
/// that directories are reachable once, that nlink counts the names of every other inode, and
/// that every inode is either reachable or an orphan.
fn snapshot(e: &Engine) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(String::new(), ROOT)];
    let mut dirs = std::collections::BTreeSet::new();
    let mut names: BTreeMap<InodeId, u32> = BTreeMap::new();
    while let Some((path, dir)) = stack.pop() {
        let (entries, more) = e.readdir(dir, None, u32::MAX).unwrap();
        assert!(!more);
        for ent in entries {
            let p = format!("{path}/{}", ent.name);
            let a = e.getattr(ent.inode).unwrap();
            assert_eq!(a.kind, ent.kind);
            assert_eq!(e.lookup(dir, &ent.name).unwrap(), a);
            assert_eq!(e.resolve(&p).unwrap(), a);
            let chunks = match a.kind {
                FileKind::File => e.chunks(a.inode, 0, u32::MAX).unwrap(),
                FileKind::Directory => {
                    assert!(dirs.insert(ent.inode), "directory reachable twice");
                    stack.push((p.clone(), ent.inode));
                    vec![]
                }
                FileKind::Symlink => {
                    assert_eq!(e.readlink(a.inode).unwrap().len() as u64, a.size);
                    vec![]
                }
                _ => vec![],
            };
            if a.kind != FileKind::Directory {
                *names.entry(a.inode).or_default() += 1;
            }
            out.insert(p, (a.kind, a.size, chunks, a.inode));
        }
    }
    for (inode, n) in &names {
        assert_eq!(e.getattr(*inode).unwrap().nlink, *n, "nlink of {inode}");
    }
    for o in e.orphans() {
        let a = e.getattr(o).unwrap();
        assert_eq!(a.nlink, 0);
        assert!(!e.holders(o).is_empty());
        assert!(!names.contains_key(&o));
    }
    let c = e.counts();
    assert_eq!(
        c.files + c.directories + c.symlinks,
        (dirs.len() + names.len() + e.orphans().len()) as u64 + 1,
        "every inode reachable or an orphan"
    );
    // Trashed files are out of the namespace.
    let (trash, more) = e.trash(None, u32::MAX);
    assert!(!more);
    for x in &trash {
        assert_eq!(e.getattr(x.inode), Err(FsError::NotFound));
        assert!(!names.contains_key(&x.inode));
    }
    assert_eq!(trash.len() as u64, c.trash_files);
    assert_eq!(trash.iter().map(|x| x.size).sum::<u64>(), c.trash_bytes);
    out
}

/// What the model knows of a node: a directory, or a non-directory with a model identity (hard
/// links share it) and a kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MNode {
    Dir,
    Other(u64, FileKind),
}

/// Reference model of the namespace: path -> node.
#[derive(Default)]
struct Model {
    nodes: BTreeMap<String, MNode>,
    next: u64,
}

impl Model {
    fn get(&self, p: &str) -> Option<MNode> {
        if p == "/" || p.is_empty() {
            Some(MNode::Dir)
        } else {
            self.nodes.get(p).copied()
        }
    }

    fn parent_ok(&self, p: &[usize]) -> bool {
        self.get(&parent_str(p)) == Some(MNode::Dir)
    }

    fn has_children(&self, p: &str) -> bool {
        let prefix = format!("{p}/");
        self.nodes.keys().any(|k| k.starts_with(&prefix))
    }

    fn add(&mut self, p: &[usize], kind: FileKind) -> bool {
        let s = path_str(p);
        if !self.parent_ok(p) || self.nodes.contains_key(&s) {
            return false;
        }
        let node = if kind == FileKind::Directory {
            MNode::Dir
        } else {
            self.next += 1;
            MNode::Other(self.next, kind)
        };
        self.nodes.insert(s, node);
        true
    }

    /// Remove the subtree at `p` and return it with paths relative to `p`.
    fn take(&mut self, p: &str) -> Vec<(String, MNode)> {
        let prefix = format!("{p}/");
        let keys: Vec<String> = self
            .nodes
            .keys()
            .filter(|k| **k == p || k.starts_with(&prefix))
            .cloned()
            .collect();
        keys.into_iter()
            .map(|k| {
                let v = self.nodes.remove(&k).unwrap();
                (k[p.len()..].to_string(), v)
            })
            .collect()
    }

    fn put(&mut self, p: &str, sub: Vec<(String, MNode)>) {
        for (rel, v) in sub {
            self.nodes.insert(format!("{p}{rel}"), v);
        }
    }

    /// Apply; returns whether the operation succeeds.
    fn apply(&mut self, o: &PathOp) -> bool {
        match o {
            PathOp::Mkdir(p) => self.add(p, FileKind::Directory),
            PathOp::Symlink(p) => self.add(p, FileKind::Symlink),
            PathOp::Mknod(p, k) => self.add(p, SPECIAL[*k]),
            PathOp::Create(p, excl) => {
                if !self.parent_ok(p) {
                    return false;
                }
                match self.nodes.get(&path_str(p)) {
                    Some(_) if *excl => false,
                    Some(n) => matches!(n, MNode::Other(_, FileKind::File)),
                    None => self.add(p, FileKind::File),
                }
            }
            PathOp::Link(a, b) => {
                let sa = path_str(a);
                let sb = path_str(b);
                match self.nodes.get(&sa).copied() {
                    Some(n @ MNode::Other(..))
                        if self.parent_ok(b) && !self.nodes.contains_key(&sb) =>
                    {
                        self.nodes.insert(sb, n);
                        true
                    }
                    _ => false,
                }
            }
            PathOp::Unlink(p) => {
                let s = path_str(p);
                if self.parent_ok(p) && matches!(self.nodes.get(&s), Some(MNode::Other(..))) {
                    self.nodes.remove(&s);
                    true
                } else {
                    false
                }
            }
            PathOp::Rmdir(p) => {
                let s = path_str(p);
                if self.parent_ok(p)
                    && self.nodes.get(&s) == Some(&MNode::Dir)
                    && !self.has_children(&s)
                {
                    self.nodes.remove(&s);
                    true
                } else {
                    false
                }
            }
            PathOp::Rename(a, b) => self.rename(a, b, 0),
            PathOp::RenameFlags(a, b, f) => self.rename(a, b, *f),
            _ => unreachable!("not a namespace op"),
        }
    }

    fn rename(&mut self, a: &[usize], b: &[usize], flags: u32) -> bool {
        let (sa, sb) = (path_str(a), path_str(b));
        if flags == 3 || !self.parent_ok(a) || !self.parent_ok(b) {
            return false;
        }
        let Some(src) = self.nodes.get(&sa).copied() else {
            return false;
        };
        let dst = self.nodes.get(&sb).copied();
        if flags == RENAME_EXCHANGE {
            let Some(dst) = dst else { return false };
            if sa == sb || src == dst && src != MNode::Dir {
                return true;
            }
            if (src == MNode::Dir && sb.starts_with(&format!("{sa}/")))
                || (dst == MNode::Dir && sa.starts_with(&format!("{sb}/")))
            {
                return false;
            }
            let ta = self.take(&sa);
            let tb = self.take(&sb);
            self.put(&sb, ta);
            self.put(&sa, tb);
            return true;
        }
        if flags == RENAME_NOREPLACE && dst.is_some() {
            return false;
        }
        if sa == sb || (dst == Some(src) && src != MNode::Dir) {
            return true;
        }
        let src_dir = src == MNode::Dir;
        if src_dir && sb.starts_with(&format!("{sa}/")) {
            return false;
        }
        if let Some(dst) = dst {
            match (src_dir, dst == MNode::Dir) {
                (true, true) if self.has_children(&sb) => return false,
                (true, false) | (false, true) => return false,
                _ => {}
            }
            self.nodes.remove(&sb);
        }
        let moved = self.take(&sa);
        self.put(&sb, moved);
        true
    }
}

fn ns_op_strategy() -> impl Strategy<Value = PathOp> {
    prop_oneof![
        3 => path_strategy().prop_map(PathOp::Mkdir),
        3 => (path_strategy(), any::<bool>()).prop_map(|(p, x)| PathOp::Create(p, x)),
        4 => (path_strategy(), path_strategy()).prop_map(|(a, b)| PathOp::Rename(a, b)),
        2 => (path_strategy(), path_strategy(), 0..4u32).prop_map(|(a, b, f)| PathOp::RenameFlags(a, b, f)),
        2 => path_strategy().prop_map(PathOp::Unlink),
        2 => path_strategy().prop_map(PathOp::Rmdir),
        1 => path_strategy().prop_map(PathOp::Symlink),
        1 => (path_strategy(), 0..SPECIAL.len()).prop_map(|(p, k)| PathOp::Mknod(p, k)),
        3 => (path_strategy(), path_strategy()).prop_map(|(a, b)| PathOp::Link(a, b)),
    ]
}

/// Apply `ops` (the trash on if `trash`) checking the invariants after each; restore a postcard
/// checkpoint at `cut` and apply the rest to it too; replay everything on a fresh engine: all
/// three must agree, byte for byte. Then every client goes away: no orphan is left.
fn replay_check(ops: &[PathOp], cut: usize, trash: bool) -> Result<(), TestCaseError> {
    let cut = cut % ops.len();
    let start = |e: &mut Engine| {
        if trash {
            e.apply(&Command::SetTrashRetention { ms: 1000 }).unwrap();
        }
    };
    let mut a = new();
    start(&mut a);
    let mut log = Vec::new();
    let mut b: Option<Engine> = None;
    for (i, o) in ops.iter().enumerate() {
        if i == cut {
            let bytes = postcard::to_stdvec(&a).unwrap();
            let restored: Engine = postcard::from_bytes(&bytes).unwrap();
            prop_assert_eq!(&restored, &a);
            b = Some(restored);
        }
        let cmd = to_command(&a, o, i as i64);
        let before = a.clone();
        let ra = a.apply(&cmd);
        if ra.is_err() {
            prop_assert_eq!(&a, &before, "failed command changed state");
        }
        a.check_invariants().map_err(TestCaseError::fail)?;
        if let Some(b) = b.as_mut() {
            prop_assert_eq!(b.apply(&cmd), ra.clone());
        }
        log.push(cmd);
    }
    let b = b.unwrap();
    prop_assert_eq!(&a, &b);
    prop_assert_eq!(
        postcard::to_stdvec(&a).unwrap(),
        postcard::to_stdvec(&b).unwrap()
    );
    // Replaying the whole log on a fresh engine gives the same state.
    let mut c = new();
    start(&mut c);
    for cmd in &log {
        let _ = c.apply(cmd);
    }
    prop_assert_eq!(&a, &c);
    snapshot(&a);
    // Every client going away leaves no orphan behind.
    for client in 1..4 {
        a.apply(&Command::DropClientHolds {
            client: ClientId(client),
        })
        .unwrap();
    }
    a.check_invariants().map_err(TestCaseError::fail)?;
    prop_assert_eq!(a.orphans(), Vec::<InodeId>::new());
    snapshot(&a);
    Ok(())
}

/// One name in the root.
fn flat() -> impl Strategy<Value = Vec<usize>> {
    (0..NAMES.len()).prop_map(|i| vec![i])
}

fn trash_op_strategy() -> impl Strategy<Value = PathOp> {
    prop_oneof![
        3 => (flat(), any::<bool>()).prop_map(|(p, x)| PathOp::Create(p, x)),
        3 => flat().prop_map(PathOp::Unlink),
        2 => (flat(), flat()).prop_map(|(a, b)| PathOp::Rename(a, b)),
        1 => (flat(), flat()).prop_map(|(a, b)| PathOp::Link(a, b)),
        1 => flat().prop_map(PathOp::Symlink),
        2 => (flat(), 0..3u64).prop_map(|(p, i)| PathOp::Alloc(p, i)),
        1 => (flat(), 0..3u64).prop_map(|(p, i)| PathOp::Replace(p, i)),
        1 => (flat(), 0..3 * CS).prop_map(|(p, s)| PathOp::Commit(p, s)),
        1 => (flat(), 0..3 * CS).prop_map(|(p, s)| PathOp::SetSize(p, s)),
        1 => (1..20u64).prop_map(PathOp::Bump),
        2 => (flat(), 1..3u64).prop_map(|(p, c)| PathOp::Hold(p, c)),
        2 => (2..40u64, 1..3u64).prop_map(|(i, c)| PathOp::Release(i, c)),
        2 => (2..40u64, 1..3u64).prop_map(|(i, c)| PathOp::HoldId(i, c)),
        1 => (1..3u64).prop_map(PathOp::DropClient),
        3 => (0..8usize, prop::option::of(flat())).prop_map(|(i, p)| PathOp::Restore(i, p)),
        1 => prop::option::of(0..80i64).prop_map(PathOp::Purge),
        1 => (flat(), 0..4u32, any::<bool>()).prop_map(|(p, g, r)| PathOp::SetGoal(p, g, r)),
        1 => any::<bool>().prop_map(PathOp::Trash),
        1 => (1..3u64, 1..6u64).prop_map(|(c, s)| PathOp::ClientRetry(c, s)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Two engines, one applying everything directly, the other restored from a postcard
    /// checkpoint midway, end up identical (and identical to a fresh replay).
    #[test]
    fn prop_deterministic_and_checkpoint_round_trip(
        ops in prop::collection::vec(op_strategy(), 1..80),
        cut in 0usize..80,
        trash in any::<bool>(),
    ) {
        replay_check(&ops, cut, trash)?;
    }

    /// The same with a flat namespace where files come and go, are held, trashed, restored
    /// and purged often.
    #[test]
    fn prop_trash_deterministic_and_checkpoint_round_trip(
        ops in prop::collection::vec(trash_op_strategy(), 1..80),
        cut in 0usize..80,
    ) {
        replay_check(&ops, cut, true)?;
    }

    /// The engine agrees with a path-map model on success/failure, on the resulting tree and on
    /// which paths are hard links of one inode.
    #[test]
    fn prop_matches_model(
        ops in prop::collection::vec(ns_op_strategy(), 1..100),
        trash in any::<bool>(),
    ) {
        // The trash changes nothing the namespace shows.
        let mut e = new();
        if trash {
            e.apply(&Command::SetTrashRetention { ms: 1000 }).unwrap();
        }
        let mut m = Model::default();
        for (i, o) in ops.iter().enumerate() {
            let cmd = to_command(&e, o, i as i64);
            let r = e.apply(&cmd);
            let ok = m.apply(o);
            prop_assert_eq!(r.is_ok(), ok, "op {:?} -> {:?}", o, r);
            e.check_invariants().map_err(TestCaseError::fail)?;
            let snap = snapshot(&e);
            let tree: BTreeMap<String, FileKind> =
                snap.iter().map(|(p, n)| (p.clone(), n.0)).collect();
            let model: BTreeMap<String, FileKind> = m
                .nodes
                .iter()
                .map(|(p, n)| (p.clone(), match n {
                    MNode::Dir => FileKind::Directory,
                    MNode::Other(_, k) => *k,
                }))
                .collect();
            prop_assert_eq!(&tree, &model);
            // Model identities and engine inodes correspond one to one.
            let mut fwd: BTreeMap<u64, InodeId> = BTreeMap::new();
            let mut back: BTreeMap<InodeId, u64> = BTreeMap::new();
            for (p, n) in &m.nodes {
                if let MNode::Other(id, _) = n {
                    let ino = snap[p].3;
                    prop_assert_eq!(*fwd.entry(*id).or_insert(ino), ino);
                    prop_assert_eq!(*back.entry(ino).or_insert(*id), *id);
                }
            }
        }
    }

    /// Chunks never lie wholly past a file's end after a truncation.
    #[test]
    fn prop_truncate_leaves_no_chunk_past_end(
        idx in prop::collection::btree_set(0..20u64, 0..10),
        size in 0..25 * CS,
    ) {
        let mut e = new();
        let f = create(&mut e, ROOT, "f");
        for i in &idx {
            alloc(&mut e, f, *i).unwrap();
        }
        setattr(&mut e, f, |c| if let Command::SetAttr { size: s, .. } = c { *s = Some(size) }).unwrap();
        for (index, _, _) in e.chunks(f, 0, u32::MAX).unwrap() {
            prop_assert!(index < size.div_ceil(CS));
        }
        let kept = idx.iter().filter(|i| **i * CS < size).count();
        prop_assert_eq!(e.counts().chunks as usize, kept);
    }
}
