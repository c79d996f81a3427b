//! Inverted index: key = word (see [`crate::text`]), value = the sorted, deduplicated paths of
//! the files it occurs in; output `word N path1,path2,...` (N = number of paths). Depends only
//! on [`crate::app`] and [`crate::text`].

use crate::app::{App, Combiner};
use crate::text::{self, RecordKind};
use foldhash::fast::FixedState;
use std::collections::HashSet;

/// The inverted index app.
#[derive(Clone, Copy, Debug, Default)]
pub struct InvertedIndex;

/// Merge two sorted, deduplicated lists into `into`.
fn merge_sorted(into: &mut Vec<String>, from: Vec<String>) {
    if from.is_empty() {
        return;
    }
    if into.is_empty() {
        *into = from;
        return;
    }
    if into.last() < from.first() {
        into.extend(from);
        return;
    }
    let a = std::mem::take(into);
    let mut out = Vec::with_capacity(a.len() + from.len());
    let (mut a, mut b) = (a.into_iter().peekable(), from.into_iter().peekable());
    loop {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => match x.cmp(y) {
                std::cmp::Ordering::Less => a.next(),
                std::cmp::Ordering::Greater => b.next(),
                std::cmp::Ordering::Equal => {
                    b.next();
                    a.next()
                }
            },
            (Some(_), None) => a.next(),
            (None, Some(_)) => b.next(),
            (None, None) => break,
        };
        out.extend(next);
    }
    *into = out;
}

impl App for InvertedIndex {
    type Value = Vec<String>;

    fn record_kind(&self) -> RecordKind {
        RecordKind::Words
    }

    fn map(&self, path: &str, _offset: u64, piece: &[u8], out: &mut Combiner<Vec<String>>) {
        let mut seen: HashSet<&[u8], FixedState> = HashSet::with_hasher(FixedState::default());
        let mut words = 0u64;
        text::for_each_word(piece, |w| {
            words += 1;
            seen.insert(w);
        });
        out.input_records += words;
        for w in seen {
            out.insert_with(w, vec![path.to_string()], merge_sorted);
        }
    }

    fn combine(&self, into: &mut Vec<String>, from: Vec<String>) {
        merge_sorted(into, from);
    }

    fn format(&self, key: &[u8], value: &Vec<String>, out: &mut Vec<u8>) {
        out.extend_from_slice(key);
        out.push(b' ');
        super::wordcount::push_u64(out, value.len() as u64);
        out.push(b' ');
        for (i, p) in value.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(p.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::run_sequential_app;

    #[test]
    fn known_answers() {
        let files = vec![
            ("/b".to_string(), b"the cat, the hat".to_vec()),
            ("/a".to_string(), b"The cat".to_vec()),
            ("/c".to_string(), b"hat 9".to_vec()),
        ];
        let out = String::from_utf8(run_sequential_app(&InvertedIndex, &files)).unwrap();
        assert_eq!(out, "The 1 /a\ncat 2 /a,/b\nhat 2 /b,/c\nthe 1 /b\n");
    }

    #[test]
    fn merge() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        for (a, b, want) in [
            (
                s(&["a", "c"]),
                s(&["b", "c", "d"]),
                s(&["a", "b", "c", "d"]),
            ),
            (s(&[]), s(&["b"]), s(&["b"])),
            (s(&["b"]), s(&[]), s(&["b"])),
            (s(&["a"]), s(&["b"]), s(&["a", "b"])),
            (s(&["b"]), s(&["a"]), s(&["a", "b"])),
            (s(&["a"]), s(&["a"]), s(&["a"])),
        ] {
            let mut x = a.clone();
            merge_sorted(&mut x, b.clone());
            assert_eq!(x, want);
            let mut y = b;
            merge_sorted(&mut y, a);
            assert_eq!(y, want);
        }
    }
}
