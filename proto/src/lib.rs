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
pub mod limits;
pub mod master;
pub mod raft;
pub mod types;

pub use error::FsError;
pub use ids::*;
pub use limits::Validate;
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
    GetAttrs = 14,
    ReadDirPlus = 15,
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
    KeepAlive = 59,
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
    /// Every method, each once.
    pub const ALL: [Method; 57] = [
        Method::ClusterInfo,
        Method::Lookup,
        Method::ResolvePath,
        Method::GetAttr,
        Method::Mkdir,
        Method::Create,
        Method::ReadDir,
        Method::Rename,
        Method::Unlink,
        Method::Rmdir,
        Method::SetAttr,
        Method::CommitSize,
        Method::StatFs,
        Method::GetAttrs,
        Method::ReadDirPlus,
        Method::GetChunks,
        Method::PrepareWrite,
        Method::ReportBadChunk,
        Method::ReportFailedReplica,
        Method::Heartbeat,
        Method::ClusterStatus,
        Method::Symlink,
        Method::ReadLink,
        Method::Mknod,
        Method::Link,
        Method::SetXattr,
        Method::GetXattr,
        Method::ListXattr,
        Method::RemoveXattr,
        Method::HoldOpen,
        Method::KeepAlive,
        Method::PushData,
        Method::CommitMutation,
        Method::ApplyMutation,
        Method::ReadChunk,
        Method::BumpVersion,
        Method::ChunkserverPing,
        Method::GetAppendMemo,
        Method::SubmitJob,
        Method::GetJob,
        Method::ListJobs,
        Method::WorkerPoll,
        Method::ReportTask,
        Method::FetchPartition,
        Method::ListTrash,
        Method::RestoreTrash,
        Method::PurgeTrash,
        Method::SetGoal,
        Method::GetGoal,
        Method::CloneChunk,
        Method::Fsck,
        Method::FileInfo,
        Method::RaftAppend,
        Method::RaftVote,
        Method::RaftSnapshot,
        Method::MasterInfo,
        Method::ChangeMasters,
    ];

    pub fn from_u16(v: u16) -> Option<Method> {
        Method::ALL.into_iter().find(|m| *m as u16 == v)
    }
}

/// One RPC: the request type names its method, its response type and the roles allowed to call it.
/// On the wire a response is `Result<Self::Response, FsError>`; bulk file bytes never travel inside
/// either struct but as the frame's body.
///
/// [`Validate`] checks the limits a decoded request must respect; [`decode_request`] runs it.
pub trait Rpc: Serialize + DeserializeOwned + Validate + Send + Sync + 'static {
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

/// Decode a request and check its limits ([`limits`]): what the router does with every request
/// payload before a handler sees it. An over-limit request is an error (`NameTooLong`,
/// `InvalidArgument`, ...), never a panic.
pub fn decode_request<R: Rpc>(bytes: &[u8]) -> Result<R, FsError> {
    let request: R = decode(bytes)?;
    request.validate()?;
    Ok(request)
}

/// Something done with the request type of a method, chosen at run time by
/// [`with_request_type`].
pub trait RequestVisitor {
    type Output;
    fn visit<R: Rpc + PartialEq + std::fmt::Debug>(self) -> Self::Output;
}

/// Call `visitor` with the request type of `method`: the one table from method numbers to
/// request types (the match is exhaustive, so a new method must be added here).
pub fn with_request_type<V: RequestVisitor>(method: Method, visitor: V) -> V::Output {
    use chunk::*;
    use job::*;
    use master::*;
    use raft::*;
    match method {
        Method::ClusterInfo => visitor.visit::<ClusterInfo>(),
        Method::Lookup => visitor.visit::<Lookup>(),
        Method::ResolvePath => visitor.visit::<ResolvePath>(),
        Method::GetAttr => visitor.visit::<GetAttr>(),
        Method::Mkdir => visitor.visit::<Mkdir>(),
        Method::Create => visitor.visit::<Create>(),
        Method::ReadDir => visitor.visit::<ReadDir>(),
        Method::Rename => visitor.visit::<Rename>(),
        Method::Unlink => visitor.visit::<Unlink>(),
        Method::Rmdir => visitor.visit::<Rmdir>(),
        Method::SetAttr => visitor.visit::<SetAttr>(),
        Method::CommitSize => visitor.visit::<CommitSize>(),
        Method::StatFs => visitor.visit::<StatFs>(),
        Method::GetAttrs => visitor.visit::<GetAttrs>(),
        Method::ReadDirPlus => visitor.visit::<ReadDirPlus>(),
        Method::GetChunks => visitor.visit::<GetChunks>(),
        Method::PrepareWrite => visitor.visit::<PrepareWrite>(),
        Method::ReportBadChunk => visitor.visit::<ReportBadChunk>(),
        Method::Heartbeat => visitor.visit::<Heartbeat>(),
        Method::ClusterStatus => visitor.visit::<ClusterStatus>(),
        Method::ReportFailedReplica => visitor.visit::<ReportFailedReplica>(),
        Method::Symlink => visitor.visit::<Symlink>(),
        Method::ReadLink => visitor.visit::<ReadLink>(),
        Method::Mknod => visitor.visit::<Mknod>(),
        Method::Link => visitor.visit::<Link>(),
        Method::SetXattr => visitor.visit::<SetXattr>(),
        Method::GetXattr => visitor.visit::<GetXattr>(),
        Method::ListXattr => visitor.visit::<ListXattr>(),
        Method::RemoveXattr => visitor.visit::<RemoveXattr>(),
        Method::HoldOpen => visitor.visit::<HoldOpen>(),
        Method::KeepAlive => visitor.visit::<KeepAlive>(),
        Method::PushData => visitor.visit::<PushData>(),
        Method::CommitMutation => visitor.visit::<CommitMutation>(),
        Method::ApplyMutation => visitor.visit::<ApplyMutation>(),
        Method::ReadChunk => visitor.visit::<ReadChunk>(),
        Method::BumpVersion => visitor.visit::<BumpVersion>(),
        Method::ChunkserverPing => visitor.visit::<ChunkserverPing>(),
        Method::GetAppendMemo => visitor.visit::<GetAppendMemo>(),
        Method::SubmitJob => visitor.visit::<SubmitJob>(),
        Method::GetJob => visitor.visit::<GetJob>(),
        Method::ListJobs => visitor.visit::<ListJobs>(),
        Method::WorkerPoll => visitor.visit::<WorkerPoll>(),
        Method::ReportTask => visitor.visit::<ReportTask>(),
        Method::FetchPartition => visitor.visit::<FetchPartition>(),
        Method::ListTrash => visitor.visit::<ListTrash>(),
        Method::RestoreTrash => visitor.visit::<RestoreTrash>(),
        Method::PurgeTrash => visitor.visit::<PurgeTrash>(),
        Method::SetGoal => visitor.visit::<SetGoal>(),
        Method::GetGoal => visitor.visit::<GetGoal>(),
        Method::CloneChunk => visitor.visit::<CloneChunk>(),
        Method::Fsck => visitor.visit::<Fsck>(),
        Method::FileInfo => visitor.visit::<FileInfo>(),
        Method::RaftAppend => visitor.visit::<RaftAppend>(),
        Method::RaftVote => visitor.visit::<RaftVote>(),
        Method::RaftSnapshot => visitor.visit::<RaftSnapshot>(),
        Method::MasterInfo => visitor.visit::<MasterInfo>(),
        Method::ChangeMasters => visitor.visit::<ChangeMasters>(),
    }
}

/// Decode `bytes` as the request of `method` with [`decode_request`], as the router does, and
/// drop it: for fuzzing every request decoder from one entry point.
pub fn decode_request_any(method: Method, bytes: &[u8]) -> Result<(), FsError> {
    struct Decode<'a>(&'a [u8]);
    impl RequestVisitor for Decode<'_> {
        type Output = Result<(), FsError>;
        fn visit<R: Rpc + PartialEq + std::fmt::Debug>(self) -> Self::Output {
            decode_request::<R>(self.0).map(drop)
        }
    }
    with_request_type(method, Decode(bytes))
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
        assert_eq!(n, 57, "every method is listed once");
        assert_eq!(Method::from_u16(59), Some(Method::KeepAlive));
        assert_eq!(Method::from_u16(14), Some(Method::GetAttrs));
        assert_eq!(Method::from_u16(15), Some(Method::ReadDirPlus));
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
    fn the_request_table_covers_every_method_with_its_own_type() {
        struct MethodOf;
        impl RequestVisitor for MethodOf {
            type Output = Method;
            fn visit<R: Rpc + PartialEq + std::fmt::Debug>(self) -> Method {
                R::METHOD
            }
        }
        let mut seen = std::collections::HashSet::new();
        for m in Method::ALL {
            assert!(seen.insert(m as u16), "{m:?} listed twice in Method::ALL");
            assert_eq!(with_request_type(m, MethodOf), m);
            // Empty input decodes only as a request without fields; for every other request it is
            // an error, never a panic.
            let fieldless = [
                Method::ClusterInfo,
                Method::StatFs,
                Method::ClusterStatus,
                Method::MasterInfo,
                Method::ChunkserverPing,
                Method::ListJobs,
            ];
            let empty = decode_request_any(m, &[]);
            assert_eq!(empty.is_ok(), fieldless.contains(&m), "{m:?}: {empty:?}");
        }
        assert_eq!(seen.len(), 57);
    }

    #[test]
    fn roles_parse() {
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("root"), None);
    }
}
