//! The one place where Quarry errors become errnos. Every FUSE reply that fails goes through
//! [`errno`]; nothing else in this crate picks an errno for an `FsError`.

use fuser::Errno;
use quarry_proto::FsError;

/// The errno a POSIX caller sees for `e`.
pub fn errno(e: &FsError) -> Errno {
    #[allow(unreachable_patterns)]
    match e {
        FsError::NotFound => Errno::ENOENT,
        FsError::AlreadyExists => Errno::EEXIST,
        FsError::NotADirectory => Errno::ENOTDIR,
        FsError::IsADirectory => Errno::EISDIR,
        FsError::DirectoryNotEmpty => Errno::ENOTEMPTY,
        FsError::InvalidArgument(_) => Errno::EINVAL,
        FsError::NameTooLong => Errno::ENAMETOOLONG,
        FsError::PermissionDenied(_) => Errno::EACCES,
        FsError::NotPermitted(_) => Errno::EPERM,
        FsError::NoData => Errno::from_i32(libc::ENODATA),
        FsError::OutOfRange(_) => Errno::ERANGE,
        FsError::TooBig(_) => Errno::E2BIG,
        FsError::TooManyLinks => Errno::EMLINK,
        FsError::NoSpace => Errno::ENOSPC,
        // Not enough chunkservers to place a new chunk: to a writer that is "no space".
        FsError::NotEnoughServers { .. } => Errno::ENOSPC,
        FsError::FileTooLarge => Errno::EFBIG,
        // Bad bytes are never served; the client already retried other replicas.
        FsError::ChecksumMismatch { .. } => Errno::EIO,
        // Retryable conditions the client gave up on within its deadline.
        FsError::StaleVersion { .. }
        | FsError::NoLease(_)
        | FsError::ChunkNotFound(_)
        | FsError::DataNotFound(_)
        | FsError::ChunkFull
        | FsError::NotLeader { .. }
        | FsError::Unavailable(_)
        | FsError::Timeout(_)
        | FsError::Protocol(_)
        | FsError::Io(_) => Errno::EIO,
        // Variants added later (symlinks, links, xattrs, holds) map to EIO until listed here.
        _ => Errno::EIO,
    }
}

/// An operation's failure as the kernel will see it. Built from an [`FsError`] by [`errno`],
/// or directly for conditions that are not Quarry errors (a bad handle, an unsupported flag).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpError(pub Errno);

impl From<FsError> for OpError {
    fn from(e: FsError) -> Self {
        OpError(errno(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_errors_map_to_their_posix_errno() {
        let cases = [
            (FsError::NotFound, libc::ENOENT),
            (FsError::AlreadyExists, libc::EEXIST),
            (FsError::NotADirectory, libc::ENOTDIR),
            (FsError::IsADirectory, libc::EISDIR),
            (FsError::DirectoryNotEmpty, libc::ENOTEMPTY),
            (FsError::InvalidArgument("x".into()), libc::EINVAL),
            (FsError::NameTooLong, libc::ENAMETOOLONG),
            (FsError::PermissionDenied("x".into()), libc::EACCES),
            (FsError::NotPermitted("x".into()), libc::EPERM),
            (FsError::NoData, libc::ENODATA),
            (FsError::OutOfRange("x".into()), libc::ERANGE),
            (FsError::TooBig("x".into()), libc::E2BIG),
            (FsError::TooManyLinks, libc::EMLINK),
            (FsError::NoSpace, libc::ENOSPC),
            (FsError::FileTooLarge, libc::EFBIG),
            (
                FsError::ChecksumMismatch {
                    handle: 1,
                    block: 2,
                },
                libc::EIO,
            ),
            (FsError::Unavailable("x".into()), libc::EIO),
            (FsError::Timeout("x".into()), libc::EIO),
            (FsError::NotLeader { hint: None }, libc::EIO),
            (FsError::Protocol("x".into()), libc::EIO),
            (FsError::Io("x".into()), libc::EIO),
        ];
        for (e, want) in cases {
            assert_eq!(i32::from(errno(&e)), want, "{e:?}");
        }
    }
}
