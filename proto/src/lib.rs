//! `quarry-proto`: the Quarry wire protocol.
//!
//! Newtype ids, one request type per RPC (each names its response type through [`Rpc`]), the wire
//! error type, and the frame header. This crate does no IO and depends on no runtime: it must stay
//! usable from fuzz targets and pure state machines.

pub mod chunk;
pub mod error;
pub mod frame;
pub mod ids;
pub mod job;
pub mod master;
pub mod raft;
pub mod types;

pub use error::FsError;
pub use ids::*;
pub use types::*;

use serde::{de::DeserializeOwned, Serialize};

/// The role a node plays in the cluster. It is written into the node's TLS certificate and checked
/// against [`Rpc::CALLERS`] on every request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Role {
    Master,
    Chunkserver,
    Client,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Master, Role::Chunkserver, Role::Client];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Chunkserver => "chunkserver",
            Role::Client => "client",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every RPC method has a stable number on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Method {
    // master: namespace
    ClusterInfo = 1,
    Lookup = 2,
    ResolvePath = 3,
    GetAttr = 4,
    Mkdir = 5,
    Create = 6,
    ReadDir = 7,
    Rename = 8,
    Unlink = 9,
    Rmdir = 10,
    SetAttr = 11,
    CommitSize = 12,
    StatFs = 13,
    // master: chunks
    GetChunks = 20,
    PrepareWrite = 21,
    ReportBadChunk = 22,
    Heartbeat = 23,
    ClusterStatus = 24,
    ReportFailedReplica = 25,
    // master: namespace, POSIX extensions
    Symlink = 50,
    ReadLink = 51,
    Mknod = 52,
    Link = 53,
    SetXattr = 54,
    GetXattr = 55,
    ListXattr = 56,
    RemoveXattr = 57,
    HoldOpen = 58,
    // chunkserver
    PushData = 40,
    CommitMutation = 41,
    ApplyMutation = 42,
    ReadChunk = 43,
    BumpVersion = 44,
    ChunkserverPing = 45,
    GetAppendMemo = 46,
    // coordinator (MapReduce, hosted by the master)
    SubmitJob = 60,
    GetJob = 61,
    ListJobs = 62,
    WorkerPoll = 63,
    ReportTask = 64,
    // MapReduce workers (hosted by chunkservers)
    FetchPartition = 65,
    // master: trash and replication goals
    ListTrash = 80,
    RestoreTrash = 81,
    PurgeTrash = 82,
    SetGoal = 83,
    GetGoal = 84,
    // chunk lifecycle: re-replication (chunkserver) and health reports (master)
    CloneChunk = 70,
    Fsck = 71,
    FileInfo = 72,
    // master ↔ master: Raft replication
    RaftAppend = 90,
    RaftVote = 91,
    RaftSnapshot = 92,
    // master: Raft status and membership (any master answers MasterInfo)
    MasterInfo = 93,
    ChangeMasters = 94,
}

impl Method {
    pub fn from_u16(v: u16) -> Option<Method> {
        use Method::*;
        const ALL: [Method; 54] = [
            ClusterInfo,
            Lookup,
            ResolvePath,
            GetAttr,
            Mkdir,
            Create,
            ReadDir,
            Rename,
            Unlink,
            Rmdir,
            SetAttr,
            CommitSize,
            StatFs,
            GetChunks,
            PrepareWrite,
            ReportBadChunk,
            ReportFailedReplica,
            Heartbeat,
            ClusterStatus,
            Symlink,
            ReadLink,
            Mknod,
            Link,
            SetXattr,
            GetXattr,
            ListXattr,
            RemoveXattr,
            HoldOpen,
            PushData,
            CommitMutation,
            ApplyMutation,
            ReadChunk,
            BumpVersion,
            ChunkserverPing,
            GetAppendMemo,
            SubmitJob,
            GetJob,
            ListJobs,
            WorkerPoll,
            ReportTask,
            FetchPartition,
            ListTrash,
            RestoreTrash,
            PurgeTrash,
            SetGoal,
            GetGoal,
            CloneChunk,
            Fsck,
            FileInfo,
            RaftAppend,
            RaftVote,
            RaftSnapshot,
            MasterInfo,
            ChangeMasters,
        ];
        ALL.into_iter().find(|m| *m as u16 == v)
    }
}

/// One RPC: the request type names its method, its response type and the roles allowed to call it.
/// On the wire a response is `Result<Self::Response, FsError>`; bulk file bytes never travel inside
/// either struct but as the frame's body.
pub trait Rpc: Serialize + DeserializeOwned + Send + Sync + 'static {
    const METHOD: Method;
    const CALLERS: &'static [Role];
    type Response: Serialize + DeserializeOwned + Send + Sync + 'static;
}

/// Encode a message with postcard.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, FsError> {
    postcard::to_stdvec(value).map_err(|e| FsError::Protocol(format!("encode: {e}")))
}

/// Decode a message with postcard; trailing bytes are an error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FsError> {
    let (value, rest) =
        postcard::take_from_bytes(bytes).map_err(|e| FsError::Protocol(format!("decode: {e}")))?;
    if !rest.is_empty() {
        return Err(FsError::Protocol(format!(
            "decode: {} trailing bytes",
            rest.len()
        )));
    }
    Ok(value)
}

macro_rules! rpc {
    ($req:ty => $resp:ty, $method:ident, [$($role:ident),+]) => {
        impl $crate::Rpc for $req {
            const METHOD: $crate::Method = $crate::Method::$method;
            const CALLERS: &'static [$crate::Role] = &[$($crate::Role::$role),+];
            type Response = $resp;
        }
    };
}
pub(crate) use rpc;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_numbers_round_trip() {
        for v in 0..=u16::MAX {
            if let Some(m) = Method::from_u16(v) {
                assert_eq!(m as u16, v);
            }
        }
        assert_eq!(Method::from_u16(41), Some(Method::CommitMutation));
        assert_eq!(Method::from_u16(0), None);
        assert_eq!(Method::from_u16(58), Some(Method::HoldOpen));
        let n = (0..=u16::MAX).filter_map(Method::from_u16).count();
        assert_eq!(n, 54, "every method is listed once");
        assert_eq!(Method::from_u16(93), Some(Method::MasterInfo));
        assert_eq!(Method::from_u16(94), Some(Method::ChangeMasters));
        assert_eq!(Method::from_u16(90), Some(Method::RaftAppend));
        assert_eq!(Method::from_u16(92), Some(Method::RaftSnapshot));
        assert_eq!(Method::from_u16(25), Some(Method::ReportFailedReplica));
        assert_eq!(Method::from_u16(46), Some(Method::GetAppendMemo));
        assert_eq!(Method::from_u16(80), Some(Method::ListTrash));
        assert_eq!(Method::from_u16(84), Some(Method::GetGoal));
        assert_eq!(Method::from_u16(70), Some(Method::CloneChunk));
    }

    #[test]
    fn decode_rejects_trailing_bytes_and_garbage() {
        let mut bytes = encode(&master::Lookup {
            parent: InodeId::ROOT,
            name: "a".into(),
        })
        .unwrap();
        assert!(decode::<master::Lookup>(&bytes).is_ok());
        bytes.push(0);
        assert!(matches!(
            decode::<master::Lookup>(&bytes),
            Err(FsError::Protocol(_))
        ));
        assert!(decode::<master::Lookup>(&[0xff; 3]).is_err());
    }

    #[test]
    fn roles_parse() {
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("root"), None);
    }
}
