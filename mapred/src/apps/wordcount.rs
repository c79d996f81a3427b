//! Word count (MIT 6.824 lab 1 `wc` semantics): key = word, value = number of occurrences,
//! output `word count`. See [`crate::text`] for what a word is.
//!
//! The hot path: each piece is counted straight into its [`Combiner`], whose table keys words of
//! at most 15 bytes inline as a `u128` (the fast local map: one probe, no allocation per word). Depends only on [`crate::app`] and [`crate::text`].

use crate::app::{App, Combiner};
use crate::text::{self, RecordKind};

/// The word count app.
#[derive(Clone, Copy, Debug, Default)]
pub struct WordCount;

/// Append the decimal form of `n`.
pub(crate) fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

impl App for WordCount {
    type Value = u64;

    fn record_kind(&self) -> RecordKind {
        RecordKind::Words
    }

    fn map(&self, _path: &str, _offset: u64, piece: &[u8], out: &mut Combiner<u64>) {
        let mut words = 0u64;
        text::for_each_word(piece, |w| {
            words += 1;
            *out.get_or_insert_with(w, || 0) += 1;
        });
        out.input_records += words;
    }

    fn combine(&self, into: &mut u64, from: u64) {
        *into += from;
    }

    fn format(&self, key: &[u8], value: &u64, out: &mut Vec<u8>) {
        out.extend_from_slice(key);
        out.push(b' ');
        push_u64(out, *value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::run_sequential_app;

    fn wc(s: &[u8]) -> String {
        String::from_utf8(run_sequential_app(&WordCount, &[("f".into(), s.to_vec())])).unwrap()
    }

    #[test]
    fn known_answers() {
        assert_eq!(wc(b"Hello, world! hello"), "Hello 1\nhello 1\nworld 1\n");
        // Precomposed é is a letter; decomposed e + U+0301 ends the word at the mark.
        assert_eq!(
            wc("naïve café cafe\u{301}".as_bytes()),
            "cafe 1\ncafé 1\nnaïve 1\n"
        );
        assert_eq!(
            wc(b"don't x_y a1b 42 don"),
            "a 1\nb 1\ndon 2\nt 1\nx 1\ny 1\n"
        );
        assert_eq!(wc(b"wo\xFFrd word"), "rd 1\nwo 1\nword 1\n");
        assert_eq!(wc("aʰb a\u{301}b".as_bytes()), "a 1\naʰb 1\nb 1\n");
        assert_eq!(wc("ªx".as_bytes()), "ªx 1\n");
        assert_eq!(wc(b""), "");
        let long = "abcdefghijklmnopqrstuvwxyz";
        assert_eq!(
            wc(format!("{long} {long}-abcdefghijklmnop").as_bytes()),
            format!("abcdefghijklmnop 1\n{long} 2\n")
        );
    }

    #[test]
    fn counts_records() {
        let mut c = Combiner::new();
        WordCount.map("f", 0, b"a b a c", &mut c);
        assert_eq!(c.input_records, 4);
        assert_eq!(c.len(), 3);
        assert_eq!(c.get(b"a"), Some(&2));
    }

    #[test]
    fn decimal() {
        for n in [0, 7, 10, 99, 12345, u64::MAX] {
            let mut v = Vec::new();
            push_u64(&mut v, n);
            assert_eq!(v, n.to_string().as_bytes());
        }
    }
}
