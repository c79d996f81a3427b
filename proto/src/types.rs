//! Plain data shared by several RPCs: attributes, directory entries, chunk locations.

use crate::ids::*;
use serde::{Deserialize, Serialize};

/// Longest file name component, as on Linux.
pub const MAX_NAME_BYTES: usize = 255;
/// Longest path, as on Linux.
pub const MAX_PATH_BYTES: usize = 4096;
/// Default chunk size: 64 MiB.
pub const DEFAULT_CHUNK_SIZE: u64 = 64 << 20;
/// Checksum block: a CRC32C covers each 64 KiB of a chunk.
pub const CHECKSUM_BLOCK_BYTES: u64 = 64 << 10;

/// Nanoseconds since the Unix epoch, split like `struct timespec`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Timestamp {
    pub secs: i64,
    pub nanos: u32,
}

impl Timestamp {
    pub fn from_unix_nanos(ns: i128) -> Timestamp {
        Timestamp {
            secs: ns.div_euclid(1_000_000_000) as i64,
            nanos: ns.rem_euclid(1_000_000_000) as u32,
        }
    }

    pub fn as_unix_nanos(self) -> i128 {
        self.secs as i128 * 1_000_000_000 + self.nanos as i128
    }

    /// The wall clock. Only runtimes call this; state machines get time from their commands.
    pub fn now() -> Timestamp {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp {
            secs: d.as_secs() as i64,
            nanos: d.subsec_nanos(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FileKind {
    File,
    Directory,
    Symlink,
    /// A named pipe (`mknod S_IFIFO`). Metadata only.
    Fifo,
    /// A character device; `Attr::rdev` names it. Metadata only.
    CharDevice,
    /// A block device; `Attr::rdev` names it. Metadata only.
    BlockDevice,
    /// A Unix socket (`mknod S_IFSOCK`, `bind`). Metadata only.
    Socket,
}

impl FileKind {
    /// Fifos, devices and sockets: inodes that carry only metadata.
    pub fn is_special(self) -> bool {
        matches!(
            self,
            FileKind::Fifo | FileKind::CharDevice | FileKind::BlockDevice | FileKind::Socket
        )
    }
}

/// Longest symlink target in bytes (`PATH_MAX` - 1).
pub const MAX_SYMLINK_BYTES: usize = 4095;
/// Longest extended attribute name in bytes (`XATTR_NAME_MAX`).
pub const MAX_XATTR_NAME_BYTES: usize = 255;
/// Largest extended attribute value in bytes (`XATTR_SIZE_MAX`).
pub const MAX_XATTR_VALUE_BYTES: usize = 64 << 10;
/// Most bytes of extended attributes (names plus values) one inode may hold.
pub const MAX_XATTR_TOTAL_BYTES: usize = 1 << 20;
/// Most hard links to one non-directory inode (as ext4).
pub const MAX_LINKS: u32 = 65_000;

/// `renameat2` flags (Linux values).
pub const RENAME_NOREPLACE: u32 = 1;
pub const RENAME_EXCHANGE: u32 = 2;

/// How `SetXattr` treats an existing attribute (`setxattr` flags).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum XattrFlags {
    /// Create or replace (flags 0).
    #[default]
    Either,
    /// `XATTR_CREATE`: `AlreadyExists` if the attribute exists.
    CreateOnly,
    /// `XATTR_REPLACE`: `NoData` if the attribute does not exist.
    ReplaceOnly,
}

/// What `stat` shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attr {
    pub inode: InodeId,
    pub kind: FileKind,
    /// Permission bits (and setuid/setgid/sticky), without the file type.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Regular files: bytes. Symlinks: the target's length. Directories and special files: 0.
    pub size: u64,
    /// Directory entries naming this inode (directories: 2 + subdirectories). 0 for a file that
    /// was unlinked while open (an orphan, reachable by inode only until its last hold goes).
    pub nlink: u32,
    /// Device number of a character or block device (0 for every other kind).
    pub rdev: u32,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub crtime: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    pub name: String,
    pub inode: InodeId,
    pub kind: FileKind,
}

/// A chunkserver as clients and peers see it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServerRef {
    pub id: NodeId,
    /// `host:port` of its QUIC endpoint.
    pub addr: String,
}

/// Where one chunk of a file lives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkLocation {
    /// Index of the chunk within the file (`offset / chunk_size`).
    pub index: u64,
    pub handle: ChunkHandle,
    pub version: ChunkVersion,
    /// Live replicas at the current version.
    pub replicas: Vec<ServerRef>,
}

/// Validate one path component: not empty, not `.`/`..`, no `/` or NUL, at most 255 bytes.
pub fn validate_name(name: &str) -> Result<(), crate::FsError> {
    if name.len() > MAX_NAME_BYTES {
        return Err(crate::FsError::NameTooLong);
    }
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(crate::FsError::InvalidArgument(format!(
            "invalid file name {name:?}"
        )));
    }
    Ok(())
}

/// Split an absolute path into validated components (`//`, `.` removed; `..` resolved lexically
/// and not allowed to climb above the root).
pub fn split_path(path: &str) -> Result<Vec<&str>, crate::FsError> {
    if path.len() > MAX_PATH_BYTES {
        return Err(crate::FsError::NameTooLong);
    }
    if !path.starts_with('/') {
        return Err(crate::FsError::InvalidArgument(format!(
            "path {path:?} is not absolute"
        )));
    }
    let mut out: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            name => {
                validate_name(name)?;
                out.push(name);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(split_path("/").unwrap(), Vec::<&str>::new());
        assert_eq!(split_path("//a/./b/").unwrap(), vec!["a", "b"]);
        assert_eq!(split_path("/a/../b").unwrap(), vec!["b"]);
        assert_eq!(split_path("/../..").unwrap(), Vec::<&str>::new());
        assert!(split_path("a/b").is_err());
        assert!(split_path(&format!("/{}", "x".repeat(256))).is_err());
        assert!(split_path(&"/x".repeat(3000)).is_err());
        assert!(split_path("/a\0b").is_err());
    }

    #[test]
    fn timestamps() {
        for ns in [-1_500_000_000i128, 0, 1, 1_700_000_000_123_456_789] {
            assert_eq!(Timestamp::from_unix_nanos(ns).as_unix_nanos(), ns);
        }
        assert_eq!(
            Timestamp::from_unix_nanos(-1),
            Timestamp {
                secs: -1,
                nanos: 999_999_999
            }
        );
    }
}
