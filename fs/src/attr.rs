//! Quarry attributes as the kernel sees them: `Attr` → `fuser::FileAttr`, times, and the
//! cache lifetimes handed to the kernel.

use fuser::{FileAttr, FileType, INodeNo};
use quarry_proto::{Attr, FileKind, InodeId, Timestamp};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `st_blksize`: the preferred I/O size. Large, so `cp` and `cat` move 1 MiB per call.
pub const BLOCK_SIZE_BYTES: u32 = 1 << 20;

/// Quarry inode numbers are FUSE inode numbers (the root is 1 in both).
pub fn ino(inode: InodeId) -> INodeNo {
    INodeNo(inode.0)
}

pub fn inode(ino: INodeNo) -> InodeId {
    InodeId(ino.0)
}

pub fn file_type(kind: FileKind) -> FileType {
    match kind {
        FileKind::File => FileType::RegularFile,
        FileKind::Directory => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::CharDevice => FileType::CharDevice,
        FileKind::BlockDevice => FileType::BlockDevice,
        FileKind::Socket => FileType::Socket,
        // Kinds added later show as regular files until listed here.
        #[allow(unreachable_patterns)]
        _ => FileType::RegularFile,
    }
}

pub fn system_time(t: Timestamp) -> SystemTime {
    if t.secs >= 0 {
        UNIX_EPOCH + Duration::new(t.secs as u64, t.nanos)
    } else {
        // Before 1970: subtract whole seconds, then add the nanoseconds back.
        UNIX_EPOCH - Duration::from_secs(t.secs.unsigned_abs())
            + Duration::from_nanos(t.nanos as u64)
    }
}

pub fn timestamp(t: SystemTime) -> Timestamp {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Timestamp::from_unix_nanos(d.as_nanos() as i128),
        Err(e) => Timestamp::from_unix_nanos(-(e.duration().as_nanos() as i128)),
    }
}

/// `st_blocks`: 512-byte units, rounded up.
pub fn blocks(size: u64) -> u64 {
    size.div_ceil(512)
}

/// The kernel's view of `attr`, with `size` overriding the master's size (data buffered in
/// this mount and not yet committed).
pub fn file_attr(attr: &Attr, size: u64) -> FileAttr {
    FileAttr {
        ino: ino(attr.inode),
        size,
        blocks: blocks(size),
        atime: system_time(attr.atime),
        mtime: system_time(attr.mtime),
        ctime: system_time(attr.ctime),
        crtime: system_time(attr.crtime),
        kind: file_type(attr.kind),
        perm: (attr.mode & 0o7777) as u16,
        nlink: attr.nlink,
        uid: attr.uid,
        gid: attr.gid,
        rdev: attr.rdev,
        blksize: BLOCK_SIZE_BYTES,
        flags: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_with_nanoseconds() {
        for ns in [-1_500_000_001i128, 0, 1, 1_700_000_000_123_456_789] {
            let t = Timestamp::from_unix_nanos(ns);
            assert_eq!(timestamp(system_time(t)), t);
        }
    }

    #[test]
    fn blocks_are_512_byte_units_rounded_up() {
        assert_eq!(blocks(0), 0);
        assert_eq!(blocks(1), 1);
        assert_eq!(blocks(512), 1);
        assert_eq!(blocks(513), 2);
    }
}
