//! `quarry-chunkserver`: chunks as checksummed files behind a narrow trait ([`store`]), and the
//! runtime that serves pushes, ordered mutations, verified reads and version bumps, and
//! heartbeats to the master ([`service`], [`node`]).
//!
//! Depends on `quarry-proto` and `quarry-transport` only; never on another server crate.

pub mod node;
pub mod service;
pub mod store;

pub use node::ChunkserverNode;
pub use service::{Chunkserver, ChunkserverConfig, ScrubStats};
