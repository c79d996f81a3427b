//! The library half of the `quarry` binary: how a process hosts its roles ([`host`]), shared
//! with the test harness so tests compose nodes exactly as the binary does.

pub mod host;
pub mod http;
