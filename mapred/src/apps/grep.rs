//! Grep: the lines containing a literal byte string. A matching line emits key = path bytes,
//! `\0`, the line's start offset in the file as 8 big-endian bytes (so keys sort by path, then
//! offset), value = the line without its `\n`; output `path:offset:line`. The empty pattern
//! matches every line. Depends only on [`crate::app`] and [`crate::text`].

use crate::app::{App, Combiner};
use crate::text::{self, RecordKind};
use memchr::memmem::Finder;

/// The grep app for one pattern.
#[derive(Clone, Debug)]
pub struct Grep {
    finder: Finder<'static>,
    /// The pattern contains `\n`: no line can contain it.
    never: bool,
}

impl Grep {
    pub fn new(pattern: &[u8]) -> Self {
        Grep {
            finder: Finder::new(pattern).into_owned(),
            never: pattern.contains(&b'\n'),
        }
    }

    pub fn pattern(&self) -> &[u8] {
        self.finder.needle()
    }
}

/// The key of the line starting at `offset` of `path`.
pub fn key(path: &str, offset: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(path.len() + 9);
    k.extend_from_slice(path.as_bytes());
    k.push(0);
    k.extend_from_slice(&offset.to_be_bytes());
    k
}

/// The (path, offset) of a key made by [`key`].
pub fn parse_key(key: &[u8]) -> Option<(&[u8], u64)> {
    let n = key.len().checked_sub(9)?;
    if key[n] != 0 {
        return None;
    }
    let off = u64::from_be_bytes(key[n + 1..].try_into().ok()?);
    Some((&key[..n], off))
}

impl App for Grep {
    type Value = Vec<u8>;

    fn record_kind(&self) -> RecordKind {
        RecordKind::Lines
    }

    fn map(&self, path: &str, offset: u64, piece: &[u8], out: &mut Combiner<Vec<u8>>) {
        let mut lines = memchr::memchr_iter(b'\n', piece).count() as u64;
        if piece.last().is_some_and(|&b| b != b'\n') {
            lines += 1;
        }
        out.input_records += lines;
        if self.never {
            return;
        }
        let mut emit = |s: usize, line: &[u8]| {
            out.insert_owned_with(key(path, offset + s as u64), line.to_vec(), |into, from| {
                self.combine(into, from)
            });
        };
        if self.finder.needle().is_empty() {
            text::for_each_line(piece, emit);
            return;
        }
        // Search the whole piece, then widen each match to its line (a pattern without `\n`
        // cannot match across lines) and resume after that line.
        let mut at = 0;
        while let Some(i) = self.finder.find(&piece[at..]) {
            let i = at + i;
            let s = memchr::memrchr(b'\n', &piece[at..i]).map_or(at, |k| at + k + 1);
            let e = memchr::memchr(b'\n', &piece[i..]).map_or(piece.len(), |k| i + k);
            emit(s, &piece[s..e]);
            at = e + 1;
            if at >= piece.len() {
                break;
            }
        }
    }

    /// Keys are unique per line; keep the smaller value so the merge is commutative anyway.
    fn combine(&self, into: &mut Vec<u8>, from: Vec<u8>) {
        if from < *into {
            *into = from;
        }
    }

    fn format(&self, key: &[u8], value: &Vec<u8>, out: &mut Vec<u8>) {
        match parse_key(key) {
            Some((path, off)) => {
                out.extend_from_slice(path);
                out.push(b':');
                super::wordcount::push_u64(out, off);
            }
            None => out.extend_from_slice(key),
        }
        out.push(b':');
        out.extend_from_slice(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::run_sequential_app;

    fn grep(pat: &str, files: &[(&str, &[u8])]) -> String {
        let files: Vec<(String, Vec<u8>)> = files
            .iter()
            .map(|(p, b)| (p.to_string(), b.to_vec()))
            .collect();
        String::from_utf8(run_sequential_app(&Grep::new(pat.as_bytes()), &files)).unwrap()
    }

    #[test]
    fn known_answers() {
        let f: &[u8] = b"one fish\ntwo fish\n\nred\nfishfish";
        assert_eq!(
            grep("fish", &[("/b", f), ("/a", b"fish")]),
            "/a:0:fish\n/b:0:one fish\n/b:9:two fish\n/b:23:fishfish\n"
        );
        assert_eq!(grep("", &[("/a", b"x\n\ny")]), "/a:0:x\n/a:2:\n/a:3:y\n");
        assert_eq!(grep("h\nt", &[("/a", b"fish\ntwo")]), "");
        assert_eq!(grep("zz", &[("/a", f)]), "");
        // Offsets order numerically, not as text.
        let many = "x\n".repeat(12);
        let out = grep("x", &[("/a", many.as_bytes())]);
        assert!(out.starts_with("/a:0:x\n/a:2:x\n"));
        assert!(out.ends_with("/a:20:x\n/a:22:x\n"));
    }

    #[test]
    fn counts_lines() {
        let g = Grep::new(b"a");
        for (s, n) in [
            (&b""[..], 0),
            (b"a", 1),
            (b"a\n", 1),
            (b"\n\n", 2),
            (b"b\na", 2),
        ] {
            let mut c = Combiner::new();
            g.map("/p", 0, s, &mut c);
            assert_eq!(c.input_records, n, "{s:?}");
        }
    }

    #[test]
    fn keys() {
        let k = key("/x/y", 0x0102);
        assert_eq!(parse_key(&k), Some((&b"/x/y"[..], 0x0102)));
        assert!(key("/a", 9) < key("/a", 10));
        assert_eq!(parse_key(b"short"), None);
    }
}
