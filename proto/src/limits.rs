//! Limits every request must respect, checked right after it is decoded.
//!
//! Decoding itself is bounded by the frame caps ([`crate::frame`]): a payload is at most
//! [`crate::frame::MAX_PAYLOAD_BYTES`], and postcard never reserves more room for a sequence than
//! the bytes left in the payload could fill (a huge length prefix fails with "unexpected end"
//! before anything large is allocated), so a decoded request is at most a small multiple of 4 MiB.
//! [`Validate`] then checks what the types alone do not bound: name, path and address lengths,
//! the number of servers in a list, declared data lengths. [`crate::decode_request`] runs both
//! steps; the router answers a failed check with the error, so an over-limit request gets an error
//! reply and never reaches its handler.
//!
//! The errors are the ones the master's engine gives for the same limit (`NameTooLong` for names,
//! paths and symlink targets, `OutOfRange` for xattr names, `TooBig` for xattr values) and
//! `InvalidArgument` for everything else.

use crate::chunk::*;
use crate::frame::MAX_BODY_BYTES;
use crate::job::*;
use crate::master::*;
use crate::raft::*;
use crate::types::*;
use crate::FsError;

/// Longest `host:port` address of a server (a 253-byte DNS name and a port fit).
pub const MAX_ADDR_BYTES: usize = 512;
/// Most servers named in one request (a replica chain, a lease's replicas, failed replicas): the
/// largest replication goal.
pub const MAX_SERVERS_PER_REQUEST: usize = 255;
/// Most entries in one `ReadDir` or `ListTrash` page; larger `limit`s are clamped to it.
pub const MAX_PAGE_ENTRIES: u32 = 10_000;
/// Most inodes in one `GetAttrs` request.
pub const MAX_ATTRS_PER_CALL: usize = 1024;
/// Most chunks in one `GetChunks` or `FileInfo` reply; larger `count`s are clamped to it.
pub const MAX_CHUNKS_PER_CALL: u32 = 1024;
/// Most problem chunks one `Fsck` reply lists; larger `max_problems` are clamped to it.
pub const MAX_FSCK_PROBLEMS: u32 = 10_000;
/// Most input paths of one MapReduce job.
pub const MAX_JOB_INPUTS: usize = 10_000;
/// Most tasks, jobs or partitions listed in one worker request (`WorkerPoll`, `ReportTask`).
pub const MAX_TASK_LIST: usize = 1 << 16;
/// Longest free-form string in a request (a grep pattern, a task's error message).
pub const MAX_TEXT_BYTES: usize = 64 << 10;

/// A check of the limits a decoded request must respect. Every [`crate::Rpc`] implements it.
pub trait Validate {
    fn validate(&self) -> Result<(), FsError>;
}

/// A file name component: at most [`MAX_NAME_BYTES`] (`NameTooLong`). Its content (`/`, NUL,
/// `.`) is the engine's to judge, as before.
pub fn check_name(name: &str) -> Result<(), FsError> {
    if name.len() > MAX_NAME_BYTES {
        return Err(FsError::NameTooLong);
    }
    Ok(())
}

/// A path: at most [`MAX_PATH_BYTES`] (`NameTooLong`).
pub fn check_path(path: &str) -> Result<(), FsError> {
    if path.len() > MAX_PATH_BYTES {
        return Err(FsError::NameTooLong);
    }
    Ok(())
}

/// A server address: at most [`MAX_ADDR_BYTES`] (`InvalidArgument`).
pub fn check_addr(addr: &str) -> Result<(), FsError> {
    check_max("address bytes", addr.len(), MAX_ADDR_BYTES)
}

/// `what` is `n`, which must be at most `max` (`InvalidArgument`).
pub fn check_max(what: &str, n: usize, max: usize) -> Result<(), FsError> {
    if n > max {
        return Err(FsError::InvalidArgument(format!(
            "{n} {what} exceed the limit of {max}"
        )));
    }
    Ok(())
}

/// A list of servers: at most [`MAX_SERVERS_PER_REQUEST`], each address bounded.
fn check_servers(servers: &[ServerRef]) -> Result<(), FsError> {
    check_max("servers", servers.len(), MAX_SERVERS_PER_REQUEST)?;
    servers.iter().try_for_each(|s| check_addr(&s.addr))
}

/// A data length declared in a request: at most one body ([`MAX_BODY_BYTES`]).
fn check_data_len(len: u64) -> Result<(), FsError> {
    if len > MAX_BODY_BYTES {
        return Err(FsError::InvalidArgument(format!(
            "length {len} exceeds the limit of {MAX_BODY_BYTES}"
        )));
    }
    Ok(())
}

fn check_mutation(m: &Mutation) -> Result<(), FsError> {
    match m {
        Mutation::Write { len, .. } => check_data_len(*len),
        Mutation::Truncate { len } => check_data_len(*len),
        Mutation::Append {
            len, chunk_size, ..
        } => {
            check_data_len(*len)?;
            check_data_len(*chunk_size)
        }
    }
}

/// Requests with nothing to bound beyond their fixed-size fields.
macro_rules! fixed_size {
    ($($t:ty),+ $(,)?) => {
        $(impl Validate for $t {
            fn validate(&self) -> Result<(), FsError> {
                Ok(())
            }
        })+
    };
}

fixed_size!(
    ClusterInfo,
    GetAttr,
    SetAttr,
    CommitSize,
    StatFs,
    ReadLink,
    ListXattr,
    HoldOpen,
    KeepAlive,
    GetChunks,
    PrepareWrite,
    ReportBadChunk,
    ClusterStatus,
    MasterInfo,
    ListTrash,
    PurgeTrash,
    SetGoal,
    GetGoal,
    FileInfo,
    ChunkserverPing,
    GetAppendMemo,
    GetJob,
    ListJobs,
    FetchPartition,
    // Opaque openraft messages, bounded by the payload cap and decoded by the master's raft
    // module.
    RaftAppend,
    RaftVote,
    RaftSnapshot,
);

impl Validate for GetAttrs {
    fn validate(&self) -> Result<(), FsError> {
        if self.inodes.len() > MAX_ATTRS_PER_CALL {
            return Err(FsError::InvalidArgument(format!(
                "{} inodes in one GetAttrs (at most {MAX_ATTRS_PER_CALL})",
                self.inodes.len()
            )));
        }
        Ok(())
    }
}

impl Validate for Lookup {
    fn validate(&self) -> Result<(), FsError> {
        check_name(&self.name)
    }
}

impl Validate for ResolvePath {
    fn validate(&self) -> Result<(), FsError> {
        check_path(&self.path)
    }
}

impl Validate for Mkdir {
    fn validate(&self) -> Result<(), FsError> {
        check_name(&self.name)
    }
}

impl Validate for Create {
    fn validate(&self) -> Result<(), FsError> {
        check_name(&self.name)
    }
}

impl Validate for ReadDir {
    fn validate(&self) -> Result<(), FsError> {
        self.after.as_deref().map_or(Ok(()), check_name)
    }
}

impl Validate for ReadDirPlus {
    fn validate(&self) -> Result<(), FsError> {
        self.after.as_deref().map_or(Ok(()), check_name)
    }
}

impl Validate for Rename {
    fn validate(&self) -> Result<(), FsError> {
        check_name(&self.src_name)?;
        check_name(&self.dst_name)
    }
}

impl Validate for Unlink {
    fn validate(&self) -> Result<(), FsError> {
        check_name(&self.name)
    }
}

impl Validate for Rmdir {
    fn validate(&self) -> Result<(), FsError> {
        check_name(&self.name)
    }
}

impl Validate for Symlink {
    fn validate(&self) -> Result<(), FsError> {
        check_name(&self.name)?;
        if self.target.len() > MAX_SYMLINK_BYTES {
            return Err(FsError::NameTooLong);
        }
        Ok(())
    }
}

impl Validate for Mknod {
    fn validate(&self) -> Result<(), FsError> {
        check_name(&self.name)
    }
}

impl Validate for Link {
    fn validate(&self) -> Result<(), FsError> {
        check_name(&self.new_name)
    }
}

fn check_xattr_name(name: &str) -> Result<(), FsError> {
    if name.len() > MAX_XATTR_NAME_BYTES {
        return Err(FsError::OutOfRange(format!(
            "attribute name of {} bytes",
            name.len()
        )));
    }
    Ok(())
}

impl Validate for SetXattr {
    fn validate(&self) -> Result<(), FsError> {
        check_xattr_name(&self.name)?;
        if self.value.len() > MAX_XATTR_VALUE_BYTES {
            return Err(FsError::TooBig(format!(
                "attribute value of {} bytes",
                self.value.len()
            )));
        }
        Ok(())
    }
}

impl Validate for GetXattr {
    fn validate(&self) -> Result<(), FsError> {
        check_xattr_name(&self.name)
    }
}

impl Validate for RemoveXattr {
    fn validate(&self) -> Result<(), FsError> {
        check_xattr_name(&self.name)
    }
}

impl Validate for ReportFailedReplica {
    fn validate(&self) -> Result<(), FsError> {
        check_max(
            "failed replicas",
            self.failed.len(),
            MAX_SERVERS_PER_REQUEST,
        )
    }
}

impl Validate for Heartbeat {
    /// The chunk report is bounded by the payload cap alone (a server may hold millions of
    /// chunks); only the address is checked.
    fn validate(&self) -> Result<(), FsError> {
        check_addr(&self.addr)
    }
}

impl Validate for ChangeMasters {
    fn validate(&self) -> Result<(), FsError> {
        self.add.as_ref().map_or(Ok(()), |(_, a)| check_addr(a))
    }
}

impl Validate for RestoreTrash {
    fn validate(&self) -> Result<(), FsError> {
        self.path.as_deref().map_or(Ok(()), check_path)
    }
}

impl Validate for Fsck {
    fn validate(&self) -> Result<(), FsError> {
        check_path(&self.path)
    }
}

impl Validate for PushData {
    fn validate(&self) -> Result<(), FsError> {
        check_servers(&self.forward)
    }
}

impl Validate for CommitMutation {
    fn validate(&self) -> Result<(), FsError> {
        check_mutation(&self.mutation)?;
        check_servers(&self.secondaries)
    }
}

impl Validate for ApplyMutation {
    fn validate(&self) -> Result<(), FsError> {
        check_mutation(&self.mutation)
    }
}

impl Validate for ReadChunk {
    fn validate(&self) -> Result<(), FsError> {
        check_data_len(self.len)
    }
}

impl Validate for BumpVersion {
    fn validate(&self) -> Result<(), FsError> {
        check_servers(&self.replicas)
    }
}

impl Validate for CloneChunk {
    fn validate(&self) -> Result<(), FsError> {
        check_addr(&self.source.addr)?;
        check_data_len(self.len)
    }
}

impl Validate for SubmitJob {
    fn validate(&self) -> Result<(), FsError> {
        let spec = &self.spec;
        if let AppSpec::Grep { pattern } = &spec.app {
            check_max("pattern bytes", pattern.len(), MAX_TEXT_BYTES)?;
        }
        check_max("job inputs", spec.inputs.len(), MAX_JOB_INPUTS)?;
        spec.inputs.iter().try_for_each(|p| check_path(p))?;
        check_path(&spec.output)
    }
}

impl Validate for WorkerPoll {
    fn validate(&self) -> Result<(), FsError> {
        check_addr(&self.addr)?;
        check_max("running tasks", self.running.len(), MAX_TASK_LIST)?;
        check_max("held jobs", self.holding.len(), MAX_TASK_LIST)
    }
}

impl Validate for ReportTask {
    fn validate(&self) -> Result<(), FsError> {
        match &self.outcome {
            TaskOutcome::Done {
                partition_bytes, ..
            } => check_max("partitions", partition_bytes.len(), MAX_TASK_LIST),
            TaskOutcome::Failed { error, .. } => {
                check_max("error bytes", error.len(), MAX_TEXT_BYTES)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::*;
    use crate::{decode_request, encode};

    fn op() -> OpId {
        OpId {
            client: ClientId(1),
            seq: 1,
        }
    }

    #[test]
    fn names_and_paths_at_and_past_the_limit() {
        let lookup = |n: usize| Lookup {
            parent: InodeId::ROOT,
            name: "n".repeat(n),
        };
        assert_eq!(lookup(MAX_NAME_BYTES).validate(), Ok(()));
        assert_eq!(
            lookup(MAX_NAME_BYTES + 1).validate(),
            Err(FsError::NameTooLong)
        );
        let resolve = |n: usize| ResolvePath {
            path: format!("/{}", "p".repeat(n - 1)),
        };
        assert_eq!(resolve(MAX_PATH_BYTES).validate(), Ok(()));
        assert_eq!(
            resolve(MAX_PATH_BYTES + 1).validate(),
            Err(FsError::NameTooLong)
        );
        let rename = Rename {
            op: op(),
            src_parent: InodeId::ROOT,
            src_name: "a".into(),
            dst_parent: InodeId::ROOT,
            dst_name: "b".repeat(256),
            flags: 0,
        };
        assert_eq!(rename.validate(), Err(FsError::NameTooLong));
        let symlink = Symlink {
            op: op(),
            parent: InodeId::ROOT,
            name: "l".into(),
            target: "t".repeat(MAX_SYMLINK_BYTES + 1),
            uid: 0,
            gid: 0,
        };
        assert_eq!(symlink.validate(), Err(FsError::NameTooLong));
    }

    #[test]
    fn xattrs_get_the_engines_errors() {
        let set = |n: usize, v: usize| SetXattr {
            op: op(),
            inode: InodeId::ROOT,
            name: "x".repeat(n),
            value: vec![0; v],
            flags: XattrFlags::Either,
        };
        assert_eq!(set(255, MAX_XATTR_VALUE_BYTES).validate(), Ok(()));
        assert!(matches!(
            set(256, 0).validate(),
            Err(FsError::OutOfRange(_))
        ));
        assert!(matches!(
            set(1, MAX_XATTR_VALUE_BYTES + 1).validate(),
            Err(FsError::TooBig(_))
        ));
    }

    #[test]
    fn server_lists_and_lengths_are_bounded() {
        let server = |addr: String| ServerRef {
            id: NodeId(1),
            addr,
        };
        let push = |n: usize, addr_len: usize| PushData {
            data_id: DataId(1),
            forward: vec![server("a".repeat(addr_len)); n],
            crc32c: 0,
        };
        assert_eq!(push(MAX_SERVERS_PER_REQUEST, 10).validate(), Ok(()));
        assert!(matches!(
            push(MAX_SERVERS_PER_REQUEST + 1, 10).validate(),
            Err(FsError::InvalidArgument(_))
        ));
        assert!(matches!(
            push(1, MAX_ADDR_BYTES + 1).validate(),
            Err(FsError::InvalidArgument(_))
        ));
        let read = |len| ReadChunk {
            handle: ChunkHandle(1),
            version: ChunkVersion(1),
            offset: 0,
            len,
        };
        assert_eq!(read(MAX_BODY_BYTES).validate(), Ok(()));
        assert!(read(MAX_BODY_BYTES + 1).validate().is_err());
        let commit = CommitMutation {
            handle: ChunkHandle(1),
            version: ChunkVersion(1),
            mutation: Mutation::Truncate { len: u64::MAX },
            secondaries: vec![],
        };
        assert!(commit.validate().is_err());
    }

    #[test]
    fn getattrs_is_bounded() {
        let ask = |n: usize| GetAttrs {
            inodes: vec![InodeId::ROOT; n],
        };
        assert_eq!(ask(MAX_ATTRS_PER_CALL).validate(), Ok(()));
        assert!(matches!(
            ask(MAX_ATTRS_PER_CALL + 1).validate(),
            Err(FsError::InvalidArgument(_))
        ));
    }

    #[test]
    fn decode_request_checks_limits_after_decoding() {
        let long = Lookup {
            parent: InodeId::ROOT,
            name: "n".repeat(300),
        };
        let bytes = encode(&long).unwrap();
        // It decodes as a value; the request check refuses it.
        assert!(crate::decode::<Lookup>(&bytes).is_ok());
        assert_eq!(decode_request::<Lookup>(&bytes), Err(FsError::NameTooLong));
    }

    #[test]
    fn huge_length_prefixes_fail_without_allocating() {
        // A Lookup whose name claims u64::MAX bytes, a Heartbeat whose chunk report claims 2^62
        // entries, an xattr value of 2^40 bytes: each fails at once with a decode error (the
        // input ends), without reserving room for the claimed length.
        let varint = |mut v: u64| {
            let mut out = Vec::new();
            while v >= 0x80 {
                out.push(v as u8 | 0x80);
                v >>= 7;
            }
            out.push(v as u8);
            out
        };
        let mut lookup = vec![1]; // parent: InodeId(1)
        lookup.extend(varint(u64::MAX));
        assert!(matches!(
            decode_request::<Lookup>(&lookup),
            Err(FsError::Protocol(_))
        ));
        let mut hb = vec![1, 0]; // node 1, empty addr
        hb.extend([0, 0, 1]); // capacity, used, Some(
        hb.extend(varint(1 << 62)); // the report's length
        hb.extend([1, 1]);
        assert!(matches!(
            decode_request::<Heartbeat>(&hb),
            Err(FsError::Protocol(_))
        ));
        let mut set = vec![1, 1, 1, 1, b'x']; // op (client 1, seq 1), inode 1, name "x"
        set.extend(varint(1 << 40));
        set.extend([0u8; 64]);
        assert!(matches!(
            decode_request::<SetXattr>(&set),
            Err(FsError::Protocol(_))
        ));
    }
}
