//! Newtype ids. Plain `u64`s on the wire; distinct types in code.

use serde::{Deserialize, Serialize};

macro_rules! id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name(pub u64);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

id!(
    /// A chunk's cluster-wide identity, allocated by the master, never reused.
    ChunkHandle
);
id!(
    /// A chunk's version, bumped by the master before each lease grant. Older replicas are stale.
    ChunkVersion
);
id!(
    /// A file, directory or symlink in the namespace. Never reused.
    InodeId
);
id!(
    /// A chunkserver's persistent identity (chosen at its first start, kept in its data directory).
    NodeId
);
id!(
    /// A client session; with a sequence number it makes mutating requests idempotent.
    ClientId
);
id!(
    /// Names a buffer of pushed data on chunkservers until a mutation consumes it.
    DataId
);

impl InodeId {
    pub const ROOT: InodeId = InodeId(1);
}

impl ChunkVersion {
    /// A replica still being cloned (see `chunk::CloneChunk`). Chunks start at version 1 and the
    /// first grant moves them to 2, so version 0 is never current: such a replica is never served
    /// and never becomes a location.
    pub const INCOMPLETE: ChunkVersion = ChunkVersion(0);
}

impl ChunkHandle {
    /// Chunk file names print handles as 16 hex digits.
    pub fn hex(self) -> String {
        format!("{:016x}", self.0)
    }
}

/// Identifies one mutating request for exactly-once application: `(client, seq)`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct OpId {
    pub client: ClientId,
    pub seq: u64,
}
