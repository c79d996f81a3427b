//! The frame header that opens every request and every response on a QUIC stream.
//!
//! Byte layout (little endian), 20 bytes:
//!
//! | offset | size | field                                                  |
//! |--------|------|--------------------------------------------------------|
//! | 0      | 2    | magic `b"QY"`                                          |
//! | 2      | 1    | protocol version ([`PROTOCOL_VERSION`])                |
//! | 3      | 1    | kind: 0 = request, 1 = response                        |
//! | 4      | 2    | method number ([`crate::Method`]); 0 in responses      |
//! | 6      | 2    | reserved, must be 0                                    |
//! | 8      | 4    | payload length (postcard), at most [`MAX_PAYLOAD_BYTES`] |
//! | 12     | 8    | body length (raw bytes after the payload), at most [`MAX_BODY_BYTES`] |
//!
//! The payload follows the header; the body, if any, follows the payload and is streamed. Both
//! lengths are checked here, before anything is allocated.

use crate::{FsError, Method};

pub const MAGIC: [u8; 2] = *b"QY";
pub const PROTOCOL_VERSION: u8 = 1;
pub const HEADER_LEN: usize = 20;
/// Serialized messages are small; directory listings are paged to stay far below this.
pub const MAX_PAYLOAD_BYTES: u32 = 4 << 20;
/// A body is at most one chunk (the largest configurable chunk size).
pub const MAX_BODY_BYTES: u64 = 1 << 30;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    Request,
    Response,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub kind: FrameKind,
    /// `Some` for requests, `None` for responses.
    pub method: Option<Method>,
    pub payload_len: u32,
    pub body_len: u64,
}

impl FrameHeader {
    pub fn request(method: Method, payload_len: u32, body_len: u64) -> Self {
        FrameHeader {
            kind: FrameKind::Request,
            method: Some(method),
            payload_len,
            body_len,
        }
    }

    pub fn response(payload_len: u32, body_len: u64) -> Self {
        FrameHeader {
            kind: FrameKind::Response,
            method: None,
            payload_len,
            body_len,
        }
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..2].copy_from_slice(&MAGIC);
        out[2] = PROTOCOL_VERSION;
        out[3] = match self.kind {
            FrameKind::Request => 0,
            FrameKind::Response => 1,
        };
        let method = self.method.map(|m| m as u16).unwrap_or(0);
        out[4..6].copy_from_slice(&method.to_le_bytes());
        out[8..12].copy_from_slice(&self.payload_len.to_le_bytes());
        out[12..20].copy_from_slice(&self.body_len.to_le_bytes());
        out
    }

    /// Parse and validate a header. Every field is checked; an unknown method is an error.
    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Result<FrameHeader, FsError> {
        if bytes[0..2] != MAGIC {
            return Err(FsError::Protocol("bad frame magic".into()));
        }
        if bytes[2] != PROTOCOL_VERSION {
            return Err(FsError::Protocol(format!(
                "unsupported protocol version {} (this build speaks {PROTOCOL_VERSION})",
                bytes[2]
            )));
        }
        let kind = match bytes[3] {
            0 => FrameKind::Request,
            1 => FrameKind::Response,
            k => return Err(FsError::Protocol(format!("bad frame kind {k}"))),
        };
        let method_raw = u16::from_le_bytes([bytes[4], bytes[5]]);
        if bytes[6] != 0 || bytes[7] != 0 {
            return Err(FsError::Protocol("reserved header bytes set".into()));
        }
        let payload_len = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        let body_len = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
        if payload_len > MAX_PAYLOAD_BYTES {
            return Err(FsError::Protocol(format!(
                "payload of {payload_len} bytes exceeds the cap of {MAX_PAYLOAD_BYTES}"
            )));
        }
        if body_len > MAX_BODY_BYTES {
            return Err(FsError::Protocol(format!(
                "body of {body_len} bytes exceeds the cap of {MAX_BODY_BYTES}"
            )));
        }
        let method = match kind {
            FrameKind::Request => Some(
                Method::from_u16(method_raw)
                    .ok_or_else(|| FsError::Protocol(format!("unknown method {method_raw}")))?,
            ),
            FrameKind::Response => {
                if method_raw != 0 {
                    return Err(FsError::Protocol("method set in a response".into()));
                }
                None
            }
        };
        Ok(FrameHeader {
            kind,
            method,
            payload_len,
            body_len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let h = FrameHeader::request(Method::PushData, 17, 1 << 20);
        assert_eq!(FrameHeader::decode(&h.encode()).unwrap(), h);
        let r = FrameHeader::response(3, 0);
        assert_eq!(FrameHeader::decode(&r.encode()).unwrap(), r);
    }

    #[test]
    fn rejects_oversized_and_malformed() {
        let mut h = FrameHeader::request(Method::Lookup, MAX_PAYLOAD_BYTES + 1, 0).encode();
        assert!(FrameHeader::decode(&h).is_err());
        h = FrameHeader::request(Method::Lookup, 1, MAX_BODY_BYTES + 1).encode();
        assert!(FrameHeader::decode(&h).is_err());
        h = FrameHeader::request(Method::Lookup, 1, 0).encode();
        h[0] = b'X';
        assert!(FrameHeader::decode(&h).is_err());
        h = FrameHeader::request(Method::Lookup, 1, 0).encode();
        h[4] = 0xee;
        assert!(FrameHeader::decode(&h).is_err());
        h = FrameHeader::request(Method::Lookup, 1, 0).encode();
        h[2] = 9;
        assert!(FrameHeader::decode(&h).is_err());
        h = FrameHeader::request(Method::Lookup, 1, 0).encode();
        h[7] = 1;
        assert!(FrameHeader::decode(&h).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut state = 0x1234_5678_9abc_def0u64;
        for _ in 0..100_000 {
            let mut b = [0u8; HEADER_LEN];
            for x in b.iter_mut() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *x = state as u8;
            }
            if state.is_multiple_of(3) {
                b[0..3].copy_from_slice(&[b'Q', b'Y', 1]);
            }
            let _ = FrameHeader::decode(&b);
        }
    }
}
