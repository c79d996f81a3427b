//! Records in input bytes: words (maximal runs of Unicode letters) and lines, and where the
//! records of a split begin and end.
//!
//! A *word* is a maximal run of code points whose General Category is L* (Lu, Ll, Lt, Lm, Lo),
//! exactly Go's `unicode.IsLetter` as used by the MIT 6.824 lab-1 `wc.go` (NOT Rust's
//! `char::is_alphabetic`, which adds Nl and Other_Alphabetic marks). Bytes are decoded the way Go
//! decodes them: a byte that does not start a valid UTF-8 sequence is one U+FFFD of width 1 and
//! decoding resumes at the next byte, so invalid bytes separate words. A *line* is a run of bytes
//! ended by `\n` (not included), or by the end of the input if non-empty.
//!
//! Splits: a record belongs to the split that contains its first byte. A position `q` of a file
//! is a *safe cut* if `q == 0`, `q == len`, or (Words) `q` is a boundary of the sequential
//! decode and not both the character before `q` and the one at `q` are letters, or (Lines)
//! byte `q - 1` is `\n`. The records starting in `[s, e)` are exactly the records of the
//! standalone tokenization of `file[cut(s)..cut(e)]`, where `cut(p)` is the first safe cut
//! `>= p` ([`next_cut`]).
//!
//! Pure functions over byte slices: no IO, no threads, nothing from the rest of the crate.

use unicode_general_category::{get_general_category, GeneralCategory};

/// Which records an app reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// Maximal runs of letters (General Category L*).
    Words,
    /// `\n`-terminated lines (the last one may lack its `\n`); the `\n` is not part of the line.
    Lines,
}

/// General Category L* (Lu, Ll, Lt, Lm, Lo): Go's `unicode.IsLetter`.
#[inline]
pub fn is_letter(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphabetic();
    }
    matches!(
        get_general_category(c),
        GeneralCategory::UppercaseLetter
            | GeneralCategory::LowercaseLetter
            | GeneralCategory::TitlecaseLetter
            | GeneralCategory::ModifierLetter
            | GeneralCategory::OtherLetter
    )
}

/// Byte classes for the ASCII fast path.
const SEP: u8 = 0;
const LETTER: u8 = 1;
const HIGH: u8 = 2;

static CLASS: [u8; 256] = {
    let mut t = [SEP; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = if b >= 0x80 {
            HIGH
        } else if b.is_ascii_alphabetic() {
            LETTER
        } else {
            SEP
        };
        i += 1;
    }
    t
};

/// An ASCII byte that is not a letter: a cut just before it is always safe.
#[inline]
pub fn is_ascii_separator(b: u8) -> bool {
    CLASS[b as usize] == SEP
}

#[inline]
fn is_continuation(b: u8) -> bool {
    b & 0xC0 == 0x80
}

/// Random access to bytes, so the cut search can run over a slice or over the concatenation of
/// a split's `before`, `data` and `after` without copying them.
pub(crate) trait ByteSrc {
    fn len(&self) -> usize;
    fn at(&self, i: usize) -> u8;
}

impl ByteSrc for [u8] {
    #[inline]
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }
    #[inline]
    fn at(&self, i: usize) -> u8 {
        self[i]
    }
}

/// Three slices read as one.
pub(crate) struct Concat3<'a>(pub [&'a [u8]; 3]);

impl ByteSrc for Concat3<'_> {
    #[inline]
    fn len(&self) -> usize {
        self.0[0].len() + self.0[1].len() + self.0[2].len()
    }
    #[inline]
    fn at(&self, mut i: usize) -> u8 {
        for s in self.0 {
            if i < s.len() {
                return s[i];
            }
            i -= s.len();
        }
        panic!("Concat3 index out of range")
    }
}

/// One step of Go-style decoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dec {
    /// A valid character of this width.
    Char(char, usize),
    /// An invalid byte: U+FFFD of width 1.
    Invalid,
    /// The bytes end inside what is so far a valid sequence (only when not at the end).
    Short,
}

/// Decode the character at `i` (`i < w.len()`). `at_end` says the bytes end where `w` ends (a
/// truncated sequence is then invalid); otherwise a truncated valid prefix is [`Dec::Short`].
#[inline]
fn decode<B: ByteSrc + ?Sized>(w: &B, i: usize, at_end: bool) -> Dec {
    let b0 = w.at(i);
    if b0 < 0x80 {
        return Dec::Char(b0 as char, 1);
    }
    let (len, lo, hi) = match b0 {
        0xC2..=0xDF => (2, 0x80, 0xBF),
        0xE0 => (3, 0xA0, 0xBF),
        0xE1..=0xEC | 0xEE..=0xEF => (3, 0x80, 0xBF),
        0xED => (3, 0x80, 0x9F),
        0xF0 => (4, 0x90, 0xBF),
        0xF1..=0xF3 => (4, 0x80, 0xBF),
        0xF4 => (4, 0x80, 0x8F),
        _ => return Dec::Invalid,
    };
    let mut cp = u32::from(b0) & (0x7F >> len);
    for k in 1..len {
        if i + k >= w.len() {
            return if at_end { Dec::Invalid } else { Dec::Short };
        }
        let b = w.at(i + k);
        let ok = if k == 1 {
            (lo..=hi).contains(&b)
        } else {
            is_continuation(b)
        };
        if !ok {
            return Dec::Invalid;
        }
        cp = (cp << 6) | u32::from(b & 0x3F);
    }
    match char::from_u32(cp) {
        Some(c) => Dec::Char(c, len),
        None => Dec::Invalid,
    }
}

/// Letter-ness and width of the character at `i` of a complete slice.
#[inline]
fn letter_at(s: &[u8], i: usize) -> (bool, usize) {
    match decode(s, i, true) {
        Dec::Char(c, n) => (is_letter(c), n),
        _ => (false, 1),
    }
}

/// Standalone tokenization: call `f` for each word of `bytes`, in order.
#[inline]
pub fn for_each_word<'a>(bytes: &'a [u8], mut f: impl FnMut(&'a [u8])) {
    let n = bytes.len();
    let mut i = 0;
    'outer: while i < n {
        // Skip ASCII separators.
        let mut c = CLASS[bytes[i] as usize];
        while c == SEP {
            i += 1;
            if i == n {
                break 'outer;
            }
            c = CLASS[bytes[i] as usize];
        }
        let start = i;
        if c == LETTER {
            i += 1;
            while i < n && CLASS[bytes[i] as usize] == LETTER {
                i += 1;
            }
            if i == n || bytes[i] < 0x80 {
                f(&bytes[start..i]);
                continue;
            }
        }
        // A run touching non-ASCII bytes: decode until the next ASCII separator.
        let mut word: Option<usize> = (c == LETTER).then_some(start);
        while i < n {
            let b = bytes[i];
            if b < 0x80 {
                if CLASS[b as usize] == LETTER {
                    word.get_or_insert(i);
                    i += 1;
                    continue;
                }
                break;
            }
            let (letter, width) = letter_at(bytes, i);
            if letter {
                word.get_or_insert(i);
            } else if let Some(s) = word.take() {
                f(&bytes[s..i]);
            }
            i += width;
        }
        if let Some(s) = word {
            f(&bytes[s..i]);
        }
    }
}

/// Standalone tokenization into lines: call `f(start, line)` for each line of `bytes` (without
/// its `\n`), where `start` is the line's position in `bytes`.
#[inline]
pub fn for_each_line(bytes: &[u8], mut f: impl FnMut(usize, &[u8])) {
    let mut s = 0;
    for nl in memchr::memchr_iter(b'\n', bytes) {
        f(s, &bytes[s..nl]);
        s = nl + 1;
    }
    if s < bytes.len() {
        f(s, &bytes[s..]);
    }
}

/// The outcome of a bounded cut search.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scan {
    /// The first safe cut at or after the start position.
    Found(usize),
    /// No safe cut in `[pos, stop]`.
    Beyond,
    /// The window ends before the search could be decided.
    NeedMore,
}

/// Search for the first safe cut `q >= pos` with `q <= stop` in `w`. `at_start` and `at_end`
/// are as for [`next_cut`]; unless `at_start`, `w` must hold 4 bytes before `pos` (with fewer,
/// the bytes before `w` are treated as absent, as at a file start).
pub(crate) fn scan_cut<B: ByteSrc + ?Sized>(
    kind: RecordKind,
    w: &B,
    pos: usize,
    at_start: bool,
    at_end: bool,
    stop: usize,
) -> Scan {
    let n = w.len();
    assert!(pos <= n, "cut position {pos} beyond window of {n} bytes");
    if pos > stop {
        return Scan::Beyond;
    }
    if pos == 0 && at_start {
        return Scan::Found(0);
    }
    match kind {
        RecordKind::Lines => {
            if pos > 0 && w.at(pos - 1) == b'\n' {
                return Scan::Found(pos);
            }
            // Candidates q in (pos, stop] are safe iff byte q-1 is '\n' (or q is the end).
            let lim = n.min(stop);
            for i in pos..lim {
                if w.at(i) == b'\n' {
                    return Scan::Found(i + 1);
                }
            }
            if stop < n {
                Scan::Beyond
            } else if at_end {
                Scan::Found(n)
            } else {
                Scan::NeedMore
            }
        }
        RecordKind::Words => {
            // The first decode boundary >= pos, and whether the character ending there is a
            // letter. Non-continuation bytes are always boundaries; a continuation byte at pos
            // is inside a character only if a valid sequence from a lead byte at pos-3..pos-1
            // covers it.
            let mut q = pos;
            let mut prev_letter = false;
            for j in (pos.saturating_sub(4)..pos).rev() {
                let b = w.at(j);
                if is_continuation(b) {
                    continue;
                }
                match decode(w, j, at_end) {
                    Dec::Short => return Scan::NeedMore,
                    Dec::Char(c, width) if j + width >= pos => {
                        q = j + width;
                        prev_letter = is_letter(c);
                    }
                    // Invalid, or a valid char followed by stray continuation bytes: the
                    // character before pos is U+FFFD.
                    _ => {}
                }
                break;
            }
            loop {
                if q > stop {
                    return Scan::Beyond;
                }
                if q >= n {
                    return if at_end {
                        Scan::Found(n)
                    } else {
                        Scan::NeedMore
                    };
                }
                let (letter, width) = match decode(w, q, at_end) {
                    Dec::Short => return Scan::NeedMore,
                    Dec::Char(c, width) => (is_letter(c), width),
                    Dec::Invalid => (false, 1),
                };
                if !(prev_letter && letter) {
                    return Scan::Found(q);
                }
                prev_letter = letter;
                q += width;
            }
        }
    }
}

/// The first safe cut at or after `pos`. `window` is a slice of the file; `window_at_file_start`
/// says `window[0]` is file offset 0; `window_at_file_end` says the window ends at the file's
/// end. If the window starts mid-file, the caller guarantees at least `min(4, pos)` lookback
/// bytes exist, i.e. it passes `pos >= 4` unless `window_at_file_start` (with less, the bytes
/// before the window are treated as if absent). Returns `None` when the window ends before the
/// cut can be decided (the caller then retries with more lookahead).
///
/// # Panics
/// If `pos > window.len()`.
pub fn next_cut(
    kind: RecordKind,
    window: &[u8],
    pos: usize,
    window_at_file_start: bool,
    window_at_file_end: bool,
) -> Option<usize> {
    match scan_cut(
        kind,
        window,
        pos,
        window_at_file_start,
        window_at_file_end,
        usize::MAX,
    ) {
        Scan::Found(q) => Some(q),
        Scan::Beyond | Scan::NeedMore => None,
    }
}

/// A position where a piece may end and the next begin with no context: for Words just
/// before an ASCII non-letter byte, for Lines just after `\n`.
#[inline]
pub fn is_trivial_cut(kind: RecordKind, bytes: &[u8], q: usize) -> bool {
    match kind {
        RecordKind::Words => q < bytes.len() && is_ascii_separator(bytes[q]),
        RecordKind::Lines => q > 0 && bytes[q - 1] == b'\n',
    }
}

/// The last trivially safe cut `q` (see [`is_trivial_cut`]) with `from <= q < bytes.len()`, if
/// any (for Lines `q` may also equal `bytes.len()`).
pub fn last_trivial_cut(kind: RecordKind, bytes: &[u8], from: usize) -> Option<usize> {
    match kind {
        RecordKind::Words => (from..bytes.len())
            .rev()
            .find(|&i| is_ascii_separator(bytes[i])),
        RecordKind::Lines => {
            let q = memchr::memrchr(b'\n', bytes.get(from.saturating_sub(1)..)?)?
                + from.saturating_sub(1)
                + 1;
            (q >= from && q > 0).then_some(q)
        }
    }
}

/// Byte ranges of [`pieces`].
pub fn piece_ranges(kind: RecordKind, bytes: &[u8], target: usize) -> Vec<std::ops::Range<usize>> {
    let target = target.max(1);
    let n = bytes.len();
    let mut out = Vec::with_capacity(n / target + 1);
    let mut s = 0;
    while n - s > target {
        let from = s + target;
        let e = match kind {
            RecordKind::Words => bytes[from..]
                .iter()
                .position(|&b| is_ascii_separator(b))
                .map_or(n, |k| from + k),
            RecordKind::Lines => memchr::memchr(b'\n', &bytes[from - 1..]).map_or(n, |k| from + k),
        };
        out.push(s..e);
        s = e;
    }
    if s < n {
        out.push(s..n);
    }
    out
}

/// Split `bytes` (whole records) into pieces of about `target` bytes for parallel mapping,
/// cutting only at positions that are trivially safe (for Words: just before an ASCII
/// non-letter byte; for Lines: just after `\n`), so each piece tokenizes standalone exactly as
/// the whole would. Empty input gives no pieces; no piece is empty.
pub fn pieces(kind: RecordKind, bytes: &[u8], target: usize) -> Vec<&[u8]> {
    piece_ranges(kind, bytes, target)
        .into_iter()
        .map(|r| &bytes[r])
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Independent oracle: Go-style decode via `std::str::from_utf8` (UTF-8 is prefix-free).
    fn naive_chars(b: &[u8]) -> Vec<(usize, Option<char>, usize)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            let mut got = None;
            for l in 1..=4 {
                if i + l <= b.len() {
                    if let Ok(s) = std::str::from_utf8(&b[i..i + l]) {
                        got = Some((s.chars().next().unwrap(), l));
                        break;
                    }
                }
            }
            match got {
                Some((c, l)) => {
                    out.push((i, Some(c), l));
                    i += l;
                }
                None => {
                    out.push((i, None, 1));
                    i += 1;
                }
            }
        }
        out
    }

    fn naive_words(b: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut cur: Option<usize> = None;
        for (i, c, _) in naive_chars(b) {
            let letter = c.is_some_and(is_letter);
            match (letter, cur) {
                (true, None) => cur = Some(i),
                (false, Some(s)) => {
                    out.push(b[s..i].to_vec());
                    cur = None;
                }
                _ => {}
            }
        }
        if let Some(s) = cur {
            out.push(b[s..].to_vec());
        }
        out
    }

    /// The safe cuts of a whole file, by definition.
    fn naive_safe(kind: RecordKind, b: &[u8]) -> Vec<bool> {
        let n = b.len();
        let mut safe = vec![false; n + 1];
        safe[0] = true;
        safe[n] = true;
        match kind {
            RecordKind::Lines => {
                for q in 1..n {
                    safe[q] = b[q - 1] == b'\n';
                }
            }
            RecordKind::Words => {
                let chars = naive_chars(b);
                for k in 1..chars.len() {
                    let (q, c, _) = chars[k];
                    let prev = chars[k - 1].1;
                    safe[q] = !(prev.is_some_and(is_letter) && c.is_some_and(is_letter));
                }
            }
        }
        safe
    }

    fn words(b: &[u8]) -> Vec<Vec<u8>> {
        let mut v = Vec::new();
        for_each_word(b, |w| v.push(w.to_vec()));
        v
    }

    fn strs(v: &[Vec<u8>]) -> Vec<&str> {
        v.iter().map(|w| std::str::from_utf8(w).unwrap()).collect()
    }

    #[test]
    fn letter_class_is_general_category_l() {
        assert!(is_letter('a') && is_letter('Z') && is_letter('é') && is_letter('ß'));
        assert!(is_letter('中') && is_letter('𐐀') && is_letter('ʰ') && is_letter('\u{AA}'));
        assert!(is_letter('ǅ')); // Lt
        assert!(!is_letter('\u{301}')); // Mn
        assert!(!is_letter('Ⅻ')); // Nl: alphabetic but not a letter
        assert!('Ⅻ'.is_alphabetic());
        assert!(!is_letter('\u{345}')); // Mn, Other_Alphabetic
        assert!(!is_letter('1') && !is_letter('_') && !is_letter('\'') && !is_letter('²'));
        assert!(!is_letter('\u{FFFD}'));
    }

    #[test]
    fn known_words() {
        assert_eq!(
            strs(&words(b"Hello, world! hello")),
            ["Hello", "world", "hello"]
        );
        assert_eq!(
            strs(&words("naïve café cafe\u{301}".as_bytes())),
            ["naïve", "café", "cafe"]
        );
        assert_eq!(
            strs(&words(b"a1b_c'd don't x2y 42")),
            ["a", "b", "c", "d", "don", "t", "x", "y"]
        );
        assert_eq!(strs(&words(b"ab\xFFcd\x80ef\xC3")), ["ab", "cd", "ef"]);
        // A truncated 3-byte sequence: the lead and the continuation are each U+FFFD.
        assert_eq!(strs(&words(b"ab\xE4\xB8cd")), ["ab", "cd"]);
        assert_eq!(strs(&words("xʰy ªb".as_bytes())), ["xʰy", "ªb"]);
        assert_eq!(strs(&words("中文 𐐀𐐁".as_bytes())), ["中文", "𐐀𐐁"]);
        assert!(words(b"").is_empty() && words(b" 12 ,.\n").is_empty());
        // Surrogate encoding and overlong forms are invalid.
        assert_eq!(strs(&words(b"a\xED\xA0\x80b\xC0\xAFc")), ["a", "b", "c"]);
    }

    #[test]
    fn known_lines() {
        let mut v = Vec::new();
        for_each_line(b"ab\n\ncd\nef", |s, l| v.push((s, l.to_vec())));
        assert_eq!(
            v,
            [
                (0, b"ab".to_vec()),
                (3, vec![]),
                (4, b"cd".to_vec()),
                (7, b"ef".to_vec())
            ]
        );
        let mut n = 0;
        for_each_line(b"x\n", |_, _| n += 1);
        for_each_line(b"", |_, _| n += 1);
        assert_eq!(n, 1);
    }

    #[test]
    fn known_cuts() {
        let s = "ab cd".as_bytes();
        assert_eq!(next_cut(RecordKind::Words, s, 1, true, true), Some(2));
        assert_eq!(next_cut(RecordKind::Words, s, 0, true, true), Some(0));
        assert_eq!(next_cut(RecordKind::Words, s, 4, true, true), Some(5));
        assert_eq!(next_cut(RecordKind::Words, s, 4, true, false), None);
        // Inside 'é' (C3 A9): the next boundary is after it, and é-b is letter-letter.
        let s = "xxxxaéb c".as_bytes();
        assert_eq!(next_cut(RecordKind::Words, s, 6, false, false), Some(8));
        // The char at the cut is straddling the window end: undecidable.
        assert_eq!(next_cut(RecordKind::Words, &s[..6], 5, false, false), None);
        let s = b"ab\ncd";
        assert_eq!(next_cut(RecordKind::Lines, s, 3, true, false), Some(3));
        assert_eq!(next_cut(RecordKind::Lines, s, 1, true, false), Some(3));
        assert_eq!(next_cut(RecordKind::Lines, s, 4, true, false), None);
        assert_eq!(next_cut(RecordKind::Lines, s, 4, true, true), Some(5));
    }

    fn fragment() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            4 => "[a-zA-Z]{1,4}".prop_map(String::into_bytes),
            2 => Just(b" ".to_vec()),
            1 => Just(b"\n".to_vec()),
            1 => "[0-9_',.]{1,2}".prop_map(String::into_bytes),
            1 => Just("é".as_bytes().to_vec()),
            1 => Just("ß".as_bytes().to_vec()),
            1 => Just("中".as_bytes().to_vec()),
            1 => Just("𐐀".as_bytes().to_vec()),
            1 => Just("\u{301}".as_bytes().to_vec()),
            1 => Just("ʰ".as_bytes().to_vec()),
            1 => Just("\u{AA}".as_bytes().to_vec()),
            1 => Just("Ⅻ".as_bytes().to_vec()),
            1 => Just(vec![0xFF]),
            1 => Just(vec![0x80]),
            1 => Just(vec![0xE4, 0xB8]),
            1 => Just(vec![0xF0, 0x90, 0x90]),
            1 => Just(vec![0xC3]),
        ]
    }

    pub(crate) fn text() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(fragment(), 0..40).prop_map(|v| v.concat())
    }

    proptest! {
        #[test]
        fn tokenizer_matches_naive(b in text()) {
            prop_assert_eq!(words(&b), naive_words(&b));
        }

        #[test]
        fn pieces_tokenize_like_whole(b in text(), target in 1usize..12) {
            for kind in [RecordKind::Words, RecordKind::Lines] {
                let ps = pieces(kind, &b, target);
                prop_assert_eq!(ps.concat(), b.clone());
                prop_assert!(ps.iter().all(|p| !p.is_empty()));
                match kind {
                    RecordKind::Words => {
                        let mut v = Vec::new();
                        for p in &ps {
                            v.extend(words(p));
                        }
                        prop_assert_eq!(v, words(&b));
                    }
                    RecordKind::Lines => {
                        let mut v = Vec::new();
                        for p in &ps {
                            for_each_line(p, |_, l| v.push(l.to_vec()));
                        }
                        let mut w = Vec::new();
                        for_each_line(&b, |_, l| w.push(l.to_vec()));
                        prop_assert_eq!(v, w);
                    }
                }
            }
        }

        #[test]
        fn next_cut_matches_definition(b in text(), look in 0usize..8) {
            for kind in [RecordKind::Words, RecordKind::Lines] {
                let safe = naive_safe(kind, &b);
                let n = b.len();
                for pos in 0..=n {
                    let truth = (pos..=n).find(|&q| safe[q]).unwrap();
                    prop_assert_eq!(next_cut(kind, &b, pos, true, true), Some(truth));
                    // A window with 4 bytes of lookback and `look` bytes of lookahead.
                    let lo = pos.saturating_sub(4);
                    let hi = (pos + look).min(n);
                    let got = next_cut(kind, &b[lo..hi], pos - lo, lo == 0, hi == n);
                    if let Some(q) = got {
                        prop_assert_eq!(q + lo, truth);
                    } else {
                        prop_assert!(hi < n);
                    }
                    // Enough lookahead always decides.
                    if truth + 4 <= n {
                        let got = next_cut(kind, &b[lo..truth + 4], pos - lo, lo == 0, false);
                        prop_assert_eq!(got.map(|q| q + lo), Some(truth));
                    }
                }
            }
        }

        #[test]
        fn cut_property(b in text(), s in 0usize..200, e in 0usize..200) {
            // The words starting in [s, e) are those of b[cut(s)..cut(e)].
            let n = b.len();
            let (s, e) = (s.min(n), e.min(n));
            let (s, e) = (s.min(e), s.max(e));
            let cs = next_cut(RecordKind::Words, &b, s, true, true).unwrap();
            let ce = next_cut(RecordKind::Words, &b, e, true, true).unwrap();
            let mut starts = Vec::new();
            let base = b.as_ptr() as usize;
            for_each_word(&b, |w| starts.push((w.as_ptr() as usize - base, w.to_vec())));
            let want: Vec<Vec<u8>> = starts
                .into_iter()
                .filter(|(p, _)| (s..e).contains(p))
                .map(|(_, w)| w)
                .collect();
            prop_assert_eq!(words(&b[cs..ce.max(cs)]), want);
        }
    }

    #[test]
    fn trivial_cuts() {
        let b = b"ab cd\nef";
        assert_eq!(last_trivial_cut(RecordKind::Words, b, 0), Some(5));
        assert_eq!(last_trivial_cut(RecordKind::Words, b, 6), None);
        assert_eq!(last_trivial_cut(RecordKind::Lines, b, 0), Some(6));
        assert_eq!(last_trivial_cut(RecordKind::Lines, b, 6), Some(6));
        assert_eq!(last_trivial_cut(RecordKind::Lines, b, 7), None);
        assert_eq!(last_trivial_cut(RecordKind::Lines, b"a\n", 2), Some(2));
        assert_eq!(last_trivial_cut(RecordKind::Lines, b"\n", 0), Some(1));
    }
}
