//! Path normalization and name validation (`proto/src/types.rs`) and the request limit checks
//! on names and paths (`proto/src/limits.rs`). For any UTF-8 input:
//!
//! - `split_path` either fails (`NameTooLong` past 4096 bytes or for a long component,
//!   `InvalidArgument` otherwise) or gives valid components, none of them empty, `.` or `..`,
//!   and is idempotent: splitting the joined components gives them back;
//! - `validate_name` accepts exactly the non-empty names of at most 255 bytes other than `.` and
//!   `..` without `/` or NUL;
//! - the request checks agree with both on lengths.

#![no_main]

use libfuzzer_sys::fuzz_target;
use quarry_proto::limits::{check_name, check_path};
use quarry_proto::{split_path, validate_name, FsError, MAX_NAME_BYTES, MAX_PATH_BYTES};

#[global_allocator]
static ALLOC: quarry_fuzz::CappedAlloc = quarry_fuzz::CappedAlloc;

fn name(s: &str) {
    let expected = !s.is_empty()
        && s.len() <= MAX_NAME_BYTES
        && s != "."
        && s != ".."
        && !s.contains('/')
        && !s.contains('\0');
    let got = validate_name(s);
    assert_eq!(got.is_ok(), expected, "{s:?}: {got:?}");
    if s.len() > MAX_NAME_BYTES {
        assert_eq!(got, Err(FsError::NameTooLong));
        assert_eq!(check_name(s), Err(FsError::NameTooLong));
    } else {
        assert_eq!(check_name(s), Ok(()));
    }
}

fn path(s: &str) {
    assert_eq!(check_path(s).is_ok(), s.len() <= MAX_PATH_BYTES);
    match split_path(s) {
        Ok(parts) => {
            assert!(s.len() <= MAX_PATH_BYTES && s.starts_with('/'));
            for p in &parts {
                assert_eq!(validate_name(p), Ok(()), "component {p:?} of {s:?}");
            }
            let joined = format!("/{}", parts.join("/"));
            assert!(joined.len() <= s.len().max(1));
            assert_eq!(split_path(&joined).expect("normalized path"), parts);
        }
        Err(FsError::NameTooLong) => {}
        Err(FsError::InvalidArgument(_)) => {}
        Err(e) => panic!("unexpected error {e:?} for {s:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    name(s);
    path(s);
    // Long inputs: the same text repeated past the limits.
    if !s.is_empty() && s.len() < 64 {
        let long = s.repeat(MAX_PATH_BYTES / s.len() + 1);
        name(&long);
        path(&long);
    }
});
