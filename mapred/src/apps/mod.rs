//! The apps (word count, grep, inverted index) and type-erased dispatch over
//! [`quarry_proto::job::AppSpec`], so the runtime only handles bytes: encoded map output
//! partitions in, output text out. Also the sequential oracle ([`run_sequential`]).
//!
//! Depends only on [`crate::app`], [`crate::text`] and the proto job types: no IO.

pub mod grep;
pub mod index;
pub mod wordcount;

use crate::app::{self, App, NeedLookahead, SplitInput};
use crate::text::RecordKind;
use quarry_proto::job::AppSpec;

/// A map task's output with each partition encoded by [`app::encode_partition`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErasedMapOutput {
    /// `partitions[r]`: the encoded partition for reducer `r`.
    pub partitions: Vec<Vec<u8>>,
    pub input_records: u64,
    pub output_records: u64,
}

/// The records an app reads.
pub fn record_kind(spec: &AppSpec) -> RecordKind {
    match spec {
        AppSpec::WordCount | AppSpec::InvertedIndex => RecordKind::Words,
        AppSpec::Grep { .. } => RecordKind::Lines,
    }
}

/// Map one split with the app of `spec` (see [`app::map_split`]) and encode the partitions.
pub fn run_map(
    spec: &AppSpec,
    input: &SplitInput<'_>,
    reducers: u32,
) -> Result<ErasedMapOutput, NeedLookahead> {
    let (partitions, input_records, output_records) = match spec {
        AppSpec::WordCount => app::map_split_encoded(&wordcount::WordCount, input, reducers)?,
        AppSpec::Grep { pattern } => {
            app::map_split_encoded(&grep::Grep::new(pattern.as_bytes()), input, reducers)?
        }
        AppSpec::InvertedIndex => app::map_split_encoded(&index::InvertedIndex, input, reducers)?,
    };
    Ok(ErasedMapOutput {
        partitions,
        input_records,
        output_records,
    })
}

fn reduce_with<A: App>(a: &A, partitions: &[&[u8]]) -> Result<(Vec<u8>, u64), String> {
    app::reduce_encoded(a, partitions)
}

/// Reduce one partition: decode the encoded partitions from every map task, merge, and return
/// the output text (lines sorted by key) and its number of lines.
pub fn run_reduce(spec: &AppSpec, partitions: &[&[u8]]) -> Result<(Vec<u8>, u64), String> {
    match spec {
        AppSpec::WordCount => reduce_with(&wordcount::WordCount, partitions),
        AppSpec::Grep { pattern } => reduce_with(&grep::Grep::new(pattern.as_bytes()), partitions),
        AppSpec::InvertedIndex => reduce_with(&index::InvertedIndex, partitions),
    }
}

/// The sequential oracle: the same app code, each file mapped whole in one thread, no splits,
/// output sorted by key.
pub fn run_sequential(spec: &AppSpec, files: &[(String, Vec<u8>)]) -> Vec<u8> {
    match spec {
        AppSpec::WordCount => app::run_sequential_app(&wordcount::WordCount, files),
        AppSpec::Grep { pattern } => {
            app::run_sequential_app(&grep::Grep::new(pattern.as_bytes()), files)
        }
        AppSpec::InvertedIndex => app::run_sequential_app(&index::InvertedIndex, files),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn specs() -> Vec<AppSpec> {
        vec![
            AppSpec::WordCount,
            AppSpec::InvertedIndex,
            AppSpec::Grep {
                pattern: "a".into(),
            },
            AppSpec::Grep {
                pattern: "é".into(),
            },
            AppSpec::Grep {
                pattern: String::new(),
            },
        ]
    }

    /// Map `file` cut at `cuts` (sorted offsets, which may repeat), with `look` bytes of
    /// lookahead at first and the rest of the file on [`NeedLookahead`]; return the encoded
    /// partitions and the total input records.
    fn map_file(
        spec: &AppSpec,
        path: &str,
        file: &[u8],
        cuts: &[usize],
        look: usize,
        reducers: u32,
    ) -> (Vec<Vec<u8>>, u64) {
        let mut bounds = vec![0];
        bounds.extend(cuts.iter().map(|&c| c.min(file.len())));
        bounds.push(file.len());
        bounds.sort_unstable();
        let mut parts = Vec::new();
        let mut records = 0;
        for w in bounds.windows(2) {
            let (s, e) = (w[0], w[1]);
            let mut look = look;
            let out = loop {
                let a = (e + look).min(file.len());
                let input = SplitInput {
                    path,
                    offset: s as u64,
                    data: &file[s..e],
                    before: &file[s.saturating_sub(4)..s],
                    after: &file[e..a],
                    after_reaches_eof: a == file.len(),
                };
                match run_map(spec, &input, reducers) {
                    Ok(o) => break o,
                    Err(n) => {
                        assert!(a < file.len(), "NeedLookahead with the whole file");
                        assert!(n.at_least > look);
                        look = n.at_least;
                    }
                }
            };
            assert_eq!(out.partitions.len(), reducers as usize);
            records += out.input_records;
            parts.extend(out.partitions);
        }
        (parts, records)
    }

    /// The distributed result: every partition reduced separately, outputs concatenated in
    /// reducer order, then the lines sorted as the sequential output is (by key).
    fn distributed(
        spec: &AppSpec,
        files: &[(String, Vec<u8>)],
        cuts: &[usize],
        look: usize,
        reducers: u32,
    ) -> Vec<u8> {
        let mut by_reducer: Vec<Vec<Vec<u8>>> = vec![Vec::new(); reducers as usize];
        for (path, file) in files {
            let (parts, _) = map_file(spec, path, file, cuts, look, reducers);
            for (i, p) in parts.into_iter().enumerate() {
                by_reducer[i % reducers as usize].push(p);
            }
        }
        // Reduce each partition, then merge the reducers' outputs: decode the lines back to
        // entries via a sort of whole outputs is app-specific, so compare line multisets
        // after a sequential-order sort done by re-reducing everything together.
        let mut lines: Vec<Vec<u8>> = Vec::new();
        let mut all: Vec<&[u8]> = Vec::new();
        for r in &by_reducer {
            let refs: Vec<&[u8]> = r.iter().map(|p| p.as_slice()).collect();
            let (text, n) = run_reduce(spec, &refs).unwrap();
            assert_eq!(n as usize, text.iter().filter(|&&b| b == b'\n').count());
            lines.extend(text.split_inclusive(|&b| b == b'\n').map(|l| l.to_vec()));
            all.extend(refs);
        }
        // One reduce over every partition must give the same lines, in key order.
        let (together, _) = run_reduce(spec, &all).unwrap();
        let mut a: Vec<&[u8]> = together.split_inclusive(|&b| b == b'\n').collect();
        let mut b: Vec<&[u8]> = lines.iter().map(|l| l.as_slice()).collect();
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(
            a, b,
            "reducers' outputs differ from one reduce of everything"
        );
        together
    }

    fn show(b: &[u8]) -> String {
        String::from_utf8_lossy(b).into_owned()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn splits_match_sequential(
            a in crate::text::tests::text(),
            b in crate::text::tests::text(),
            mut cuts in proptest::collection::vec(0usize..200, 0..6),
            look in 0usize..8,
            reducers in 1u32..4,
        ) {
            cuts.sort_unstable();
            let files = vec![("/d/a".to_string(), a), ("/d/b".to_string(), b)];
            for spec in specs() {
                let want = run_sequential(&spec, &files);
                let got = distributed(&spec, &files, &cuts, look, reducers);
                prop_assert_eq!(show(&got), show(&want), "{:?}", spec);
            }
        }

        #[test]
        fn tiny_splits_match_sequential(
            a in crate::text::tests::text(),
            size in 1usize..=8,
            look in 0usize..6,
        ) {
            let files = vec![("/a".to_string(), a.clone())];
            let cuts: Vec<usize> = (1..a.len().div_ceil(size)).map(|k| k * size).collect();
            for spec in specs() {
                let want = run_sequential(&spec, &files);
                let got = distributed(&spec, &files, &cuts, look, 2);
                prop_assert_eq!(show(&got), show(&want), "{:?}", spec);
                // Every record is read by exactly one split.
                let (_, records) = map_file(&spec, "/a", &a, &cuts, look, 2);
                let (_, whole) = map_file(&spec, "/a", &a, &[], 0, 1);
                prop_assert_eq!(records, whole);
            }
        }
    }

    #[test]
    fn known_answers_through_splits() {
        let files = vec![(
            "/f".to_string(),
            [
                "Hello, world! hello\nnaïve café cafe\u{301} x\u{2B0}y a".as_bytes(),
                b"\xFFb",
            ]
            .concat(),
        )];
        let want = "Hello 1\na 1\nb 1\ncafe 1\ncafé 1\nhello 1\nnaïve 1\nworld 1\nxʰy 1\n";
        assert_eq!(show(&run_sequential(&AppSpec::WordCount, &files)), want);
        let n = files[0].1.len();
        for size in 1..=n {
            let cuts: Vec<usize> = (1..n.div_ceil(size)).map(|k| k * size).collect();
            for look in [0, 2, 64] {
                let got = distributed(&AppSpec::WordCount, &files, &cuts, look, 3);
                assert_eq!(show(&got), want, "split size {size}, lookahead {look}");
            }
        }
    }

    #[test]
    fn long_word_spans_many_splits() {
        let mut f = b"ab ".to_vec();
        f.extend(std::iter::repeat_n(b'x', 1000));
        f.extend(" é".as_bytes());
        f.extend(std::iter::repeat_n("é".as_bytes(), 300).flatten());
        let files = vec![("/f".to_string(), f)];
        for spec in specs() {
            let want = run_sequential(&spec, &files);
            for size in [1, 7, 64, 500] {
                let n = files[0].1.len();
                let cuts: Vec<usize> = (1..n.div_ceil(size)).map(|k| k * size).collect();
                let got = distributed(&spec, &files, &cuts, 3, 2);
                assert_eq!(show(&got), show(&want), "{spec:?} split size {size}");
            }
        }
    }

    #[test]
    fn records_and_output_counts() {
        let file = b"a b a\nc a\n";
        let input = SplitInput {
            path: "/f",
            offset: 0,
            data: file,
            before: b"",
            after: b"",
            after_reaches_eof: true,
        };
        let o = run_map(&AppSpec::WordCount, &input, 2).unwrap();
        assert_eq!((o.input_records, o.output_records), (5, 3));
        let o = run_map(
            &AppSpec::Grep {
                pattern: "a".into(),
            },
            &input,
            2,
        )
        .unwrap();
        assert_eq!((o.input_records, o.output_records), (2, 2));
        let o = run_map(&AppSpec::InvertedIndex, &input, 2).unwrap();
        assert_eq!((o.input_records, o.output_records), (5, 3));
        assert!(run_reduce(&AppSpec::WordCount, &[b"\x05"]).is_err());
    }

    /// Convenience check against the corpus reference (the real integration test is elsewhere).
    #[test]
    fn corpus_small_matches_reference() {
        let dir = std::path::Path::new("/tmp/corpus/small");
        let refp = std::path::Path::new("/tmp/corpus/ref/small.txt");
        if !dir.is_dir() || !refp.is_file() {
            println!("note: /tmp/corpus/small or ref/small.txt missing; skipped");
            return;
        }
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        let files: Vec<(String, Vec<u8>)> = names
            .iter()
            .map(|p| (p.display().to_string(), std::fs::read(p).unwrap()))
            .collect();
        let got = run_sequential(&AppSpec::WordCount, &files);
        let want = std::fs::read(refp).unwrap();
        assert!(
            got == want,
            "word count of corpus/small differs from ref/small.txt"
        );
    }
}
