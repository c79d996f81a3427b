//! Rules of the namespace / chunk-table state machine, one test per rule, plus property tests.

use proptest::prelude::*;
use quarry_master::engine::{ChunkInfo, Command, Counts, Engine, Output};
use quarry_proto::{
    Attr, ChunkHandle, ChunkVersion, ClientId, FileKind, FsError, InodeId, OpId, Timestamp,
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
            bytes: 123
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

// ---------------------------------------------------------------- property tests

/// Small name space so that collisions happen.
const NAMES: [&str; 4] = ["a", "b", "c", "d"];

#[derive(Clone, Debug)]
enum PathOp {
    Mkdir(Vec<usize>),
    Create(Vec<usize>, bool),
    Rename(Vec<usize>, Vec<usize>),
    Unlink(Vec<usize>),
    Rmdir(Vec<usize>),
    SetSize(Vec<usize>, u64),
    Commit(Vec<usize>, u64),
    Alloc(Vec<usize>, u64),
    Bump(u64),
    ClientRetry(u64, u64),
}

fn path_strategy() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0..NAMES.len(), 1..4)
}

fn op_strategy() -> impl Strategy<Value = PathOp> {
    prop_oneof![
        3 => path_strategy().prop_map(PathOp::Mkdir),
        3 => (path_strategy(), any::<bool>()).prop_map(|(p, x)| PathOp::Create(p, x)),
        3 => (path_strategy(), path_strategy()).prop_map(|(a, b)| PathOp::Rename(a, b)),
        2 => path_strategy().prop_map(PathOp::Unlink),
        2 => path_strategy().prop_map(PathOp::Rmdir),
        1 => (path_strategy(), 0..5 * CS).prop_map(|(p, s)| PathOp::SetSize(p, s)),
        1 => (path_strategy(), 0..5 * CS).prop_map(|(p, s)| PathOp::Commit(p, s)),
        2 => (path_strategy(), 0..5u64).prop_map(|(p, i)| PathOp::Alloc(p, i)),
        1 => (1..20u64).prop_map(PathOp::Bump),
        1 => (1..4u64, 1..6u64).prop_map(|(c, s)| PathOp::ClientRetry(c, s)),
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
        PathOp::Rename(a, b) => Command::Rename {
            op: o0,
            src_parent: parent(a),
            src_name: name(a),
            dst_parent: parent(b),
            dst_name: name(b),
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
        PathOp::SetSize(p, s) => Command::SetAttr {
            op: o0,
            inode: target(p),
            mode: None,
            uid: None,
            gid: None,
            size: Some(*s),
            atime: None,
            mtime: None,
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
    }
}

/// One node of a snapshot: kind, size, chunks.
type Node = (FileKind, u64, Vec<(u64, ChunkHandle, ChunkVersion)>);

/// The whole tree as path -> (kind, size, chunks), walked through the public API.
fn snapshot(e: &Engine) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(String::new(), ROOT)];
    let mut seen = std::collections::BTreeSet::new();
    while let Some((path, dir)) = stack.pop() {
        let (entries, more) = e.readdir(dir, None, u32::MAX).unwrap();
        assert!(!more);
        for ent in entries {
            assert!(seen.insert(ent.inode), "inode reachable twice");
            let p = format!("{path}/{}", ent.name);
            let a = e.getattr(ent.inode).unwrap();
            assert_eq!(a.kind, ent.kind);
            assert_eq!(e.lookup(dir, &ent.name).unwrap(), a);
            assert_eq!(e.resolve(&p).unwrap(), a);
            let chunks = if a.kind == FileKind::File {
                e.chunks(a.inode, 0, u32::MAX).unwrap()
            } else {
                stack.push((p.clone(), ent.inode));
                vec![]
            };
            out.insert(p, (a.kind, a.size, chunks));
        }
    }
    let c = e.counts();
    assert_eq!(
        c.files + c.directories + c.symlinks,
        out.len() as u64 + 1,
        "every inode reachable"
    );
    out
}

/// Reference model of the namespace: path -> is_dir.
#[derive(Default)]
struct Model {
    nodes: BTreeMap<String, bool>,
}

impl Model {
    fn is_dir(&self, p: &str) -> Option<bool> {
        if p == "/" || p.is_empty() {
            Some(true)
        } else {
            self.nodes.get(p).copied()
        }
    }

    fn parent_ok(&self, p: &[usize]) -> bool {
        self.is_dir(&parent_str(p)) == Some(true)
    }

    fn has_children(&self, p: &str) -> bool {
        let prefix = format!("{p}/");
        self.nodes.keys().any(|k| k.starts_with(&prefix))
    }

    /// Apply; returns whether the operation succeeds.
    fn apply(&mut self, o: &PathOp) -> bool {
        match o {
            PathOp::Mkdir(p) => {
                let s = path_str(p);
                if !self.parent_ok(p) || self.nodes.contains_key(&s) {
                    return false;
                }
                self.nodes.insert(s, true);
                true
            }
            PathOp::Create(p, excl) => {
                let s = path_str(p);
                if !self.parent_ok(p) {
                    return false;
                }
                match self.nodes.get(&s) {
                    Some(_) if *excl => false,
                    Some(is_dir) => !is_dir,
                    None => {
                        self.nodes.insert(s, false);
                        true
                    }
                }
            }
            PathOp::Unlink(p) => {
                let s = path_str(p);
                if self.parent_ok(p) && self.nodes.get(&s) == Some(&false) {
                    self.nodes.remove(&s);
                    true
                } else {
                    false
                }
            }
            PathOp::Rmdir(p) => {
                let s = path_str(p);
                if self.parent_ok(p) && self.nodes.get(&s) == Some(&true) && !self.has_children(&s)
                {
                    self.nodes.remove(&s);
                    true
                } else {
                    false
                }
            }
            PathOp::Rename(a, b) => {
                let (sa, sb) = (path_str(a), path_str(b));
                if !self.parent_ok(a) || !self.parent_ok(b) {
                    return false;
                }
                let Some(src_dir) = self.nodes.get(&sa).copied() else {
                    return false;
                };
                if sa == sb {
                    return true;
                }
                if src_dir && sb.starts_with(&format!("{sa}/")) {
                    return false;
                }
                if let Some(dst_dir) = self.nodes.get(&sb).copied() {
                    match (src_dir, dst_dir) {
                        (true, true) if self.has_children(&sb) => return false,
                        (true, false) | (false, true) => return false,
                        _ => {}
                    }
                    self.nodes.remove(&sb);
                }
                let prefix = format!("{sa}/");
                let moved: Vec<(String, bool)> = self
                    .nodes
                    .iter()
                    .filter(|(k, _)| **k == sa || k.starts_with(&prefix))
                    .map(|(k, v)| (k.clone(), *v))
                    .collect();
                for (k, v) in moved {
                    self.nodes.remove(&k);
                    self.nodes.insert(format!("{sb}{}", &k[sa.len()..]), v);
                }
                true
            }
            _ => unreachable!("not a namespace op"),
        }
    }
}

fn ns_op_strategy() -> impl Strategy<Value = PathOp> {
    prop_oneof![
        3 => path_strategy().prop_map(PathOp::Mkdir),
        3 => (path_strategy(), any::<bool>()).prop_map(|(p, x)| PathOp::Create(p, x)),
        4 => (path_strategy(), path_strategy()).prop_map(|(a, b)| PathOp::Rename(a, b)),
        2 => path_strategy().prop_map(PathOp::Unlink),
        2 => path_strategy().prop_map(PathOp::Rmdir),
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
    ) {
        let cut = cut % ops.len();
        let mut a = new();
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
        prop_assert_eq!(postcard::to_stdvec(&a).unwrap(), postcard::to_stdvec(&b).unwrap());
        // Replaying the whole log on a fresh engine gives the same state.
        let mut c = new();
        for cmd in &log {
            let _ = c.apply(cmd);
        }
        prop_assert_eq!(&a, &c);
        snapshot(&a);
    }

    /// The engine agrees with a path-map model on success/failure and on the resulting tree.
    #[test]
    fn prop_matches_model(ops in prop::collection::vec(ns_op_strategy(), 1..100)) {
        let mut e = new();
        let mut m = Model::default();
        for (i, o) in ops.iter().enumerate() {
            let cmd = to_command(&e, o, i as i64);
            let r = e.apply(&cmd);
            let ok = m.apply(o);
            prop_assert_eq!(r.is_ok(), ok, "op {:?} -> {:?}", o, r);
            e.check_invariants().map_err(TestCaseError::fail)?;
            let tree: BTreeMap<String, bool> = snapshot(&e)
                .into_iter()
                .map(|(p, (k, _, _))| (p, k == FileKind::Directory))
                .collect();
            prop_assert_eq!(&tree, &m.nodes);
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
