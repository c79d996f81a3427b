//! The error every RPC can answer with. The FUSE adapter maps it to an errno in one place.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("file exists")]
    AlreadyExists,
    #[error("not a directory")]
    NotADirectory,
    #[error("is a directory")]
    IsADirectory,
    #[error("directory not empty")]
    DirectoryNotEmpty,
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("file name too long")]
    NameTooLong,
    /// EACCES.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// EPERM: the operation is not allowed on this object whoever asks (e.g. a hard link to a
    /// directory).
    #[error("operation not permitted: {0}")]
    NotPermitted(String),
    /// ENODATA: no such extended attribute.
    #[error("no such attribute")]
    NoData,
    /// ERANGE: an extended attribute name is empty or longer than 255 bytes.
    #[error("result out of range: {0}")]
    OutOfRange(String),
    /// E2BIG: an extended attribute value is larger than 64 KiB.
    #[error("argument too big: {0}")]
    TooBig(String),
    /// EMLINK: the inode already has the most hard links allowed.
    #[error("too many links")]
    TooManyLinks,
    #[error("no space left on device")]
    NoSpace,
    #[error("file too large")]
    FileTooLarge,
    /// The replica or request carries another version than the chunk's current one.
    #[error("stale chunk version: have {have}, request has {request}")]
    StaleVersion { have: u64, request: u64 },
    /// The chunkserver holds no valid lease for the chunk (expired or never granted).
    #[error("no valid lease for chunk {0}")]
    NoLease(u64),
    /// A stored block failed its checksum; the bytes were not served.
    #[error("checksum mismatch in chunk {handle} at block {block}")]
    ChecksumMismatch { handle: u64, block: u64 },
    #[error("chunk {0} not found on this server")]
    ChunkNotFound(u64),
    /// Pushed data expired or never arrived.
    #[error("pushed data {0} not found")]
    DataNotFound(u64),
    /// Record append: the record does not fit in the chunk; the chunk was padded, retry on the next.
    #[error("chunk full, retry on the next chunk")]
    ChunkFull,
    /// Not enough live chunkservers to place a chunk.
    #[error("not enough chunkservers: need {need}, have {have}")]
    NotEnoughServers { need: u32, have: u32 },
    #[error("not the leader (leader hint: {hint:?})")]
    NotLeader { hint: Option<String> },
    #[error("peer unavailable: {0}")]
    Unavailable(String),
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("I/O error: {0}")]
    Io(String),
}

impl FsError {
    /// Whether retrying the same request (perhaps after refreshing metadata) may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            FsError::StaleVersion { .. }
                | FsError::NoLease(_)
                | FsError::ChunkNotFound(_)
                | FsError::DataNotFound(_)
                | FsError::Unavailable(_)
                | FsError::Timeout(_)
                | FsError::NotLeader { .. }
                | FsError::ChecksumMismatch { .. }
        )
    }
}

impl From<std::io::Error> for FsError {
    fn from(e: std::io::Error) -> Self {
        match e.raw_os_error() {
            Some(28) => FsError::NoSpace,  // ENOSPC
            Some(122) => FsError::NoSpace, // EDQUOT
            _ => match e.kind() {
                std::io::ErrorKind::NotFound => FsError::NotFound,
                std::io::ErrorKind::TimedOut => FsError::Timeout(e.to_string()),
                _ => FsError::Io(e.to_string()),
            },
        }
    }
}
