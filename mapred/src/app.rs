//! The [`App`] trait and the map/reduce framework around it: mapping one split (finding where
//! its records begin and end, mapping in parallel pieces, combining, partitioning), the encoding
//! of a map output partition, and the reduce (merge, sort by key, format).
//!
//! Pure computation over byte slices: no IO, no networking, no job state. Parallelism is rayon's
//! current pool (the caller picks the thread count with `ThreadPool::install`). Depends only on
//! [`crate::text`].

use crate::text::{self, ByteSrc, Concat3, RecordKind, Scan};
use foldhash::fast::FixedState;
use rayon::prelude::*;
use serde::{de::DeserializeOwned, Serialize};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

/// Size of the pieces a split's bytes are cut into for parallel mapping.
pub const PIECE_TARGET: usize = 8 << 20;

/// Lookahead asked for by [`NeedLookahead`] at the least.
pub const MIN_LOOKAHEAD: usize = 64 << 10;

/// A MapReduce application: how to read records, map them, combine values and format output.
pub trait App: Send + Sync + 'static {
    type Value: Clone + Send + Sync + Serialize + DeserializeOwned + 'static;
    fn record_kind(&self) -> RecordKind;
    /// Map whole records `piece` of file `path`, where `piece[0]` is at byte `offset` of the
    /// file; emit into `out`. Must be pure and deterministic. Add to `out.input_records` the
    /// number of records read.
    fn map(&self, path: &str, offset: u64, piece: &[u8], out: &mut Combiner<Self::Value>);
    /// Associative, commutative merge of two values of one key.
    fn combine(&self, into: &mut Self::Value, from: Self::Value);
    /// Append one output line for `key` (without the final newline) to `out`.
    fn format(&self, key: &[u8], value: &Self::Value, out: &mut Vec<u8>);
}

/// Keys of at most this many bytes are stored inline (see [`short_key`]).
const SHORT_MAX: usize = 15;

/// A key of at most [`SHORT_MAX`] bytes as a `u128`: the bytes, zero padded, with the length
/// in the last byte (unambiguous for any bytes).
#[inline]
fn short_key(k: &[u8]) -> u128 {
    debug_assert!(k.len() <= SHORT_MAX);
    let mut b = [0u8; 16];
    b[..k.len()].copy_from_slice(k);
    b[15] = k.len() as u8;
    u128::from_le_bytes(b)
}

/// The bytes of a [`short_key`]: a buffer and the key's length.
#[inline]
fn short_bytes(k: u128) -> ([u8; 16], usize) {
    let b = k.to_le_bytes();
    (b, b[15] as usize)
}

/// Map output being combined: key bytes -> value (foldhash), combining equal keys on insert.
///
/// Keys of at most 15 bytes are kept inline as a `u128` (no allocation, no pointer chasing),
/// longer ones as `Vec<u8>`.
pub struct Combiner<V> {
    /// Records read by the map calls that filled this combiner.
    pub input_records: u64,
    short: HashMap<u128, V, FixedState>,
    long: HashMap<Vec<u8>, V, FixedState>,
}

impl<V> Default for Combiner<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> Combiner<V> {
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    /// A combiner with room for about `keys` distinct keys.
    pub fn with_capacity(keys: usize) -> Self {
        Combiner {
            input_records: 0,
            short: HashMap::with_capacity_and_hasher(keys, FixedState::default()),
            long: HashMap::with_hasher(FixedState::default()),
        }
    }

    /// Number of distinct keys.
    pub fn len(&self) -> usize {
        self.short.len() + self.long.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, key: &[u8]) -> Option<&V> {
        if key.len() <= SHORT_MAX {
            self.short.get(&short_key(key))
        } else {
            self.long.get(key)
        }
    }

    /// Insert `value` under `key`, merging with `combine` into the value already there.
    #[inline]
    pub fn insert_with(&mut self, key: &[u8], value: V, combine: impl FnOnce(&mut V, V)) {
        if key.len() <= SHORT_MAX {
            Self::put(&mut self.short, short_key(key), value, combine);
        } else if let Some(v) = self.long.get_mut(key) {
            combine(v, value);
        } else {
            self.long.insert(key.to_vec(), value);
        }
    }

    /// [`Combiner::insert_with`] with an owned key (no copy when the key is new).
    #[inline]
    pub fn insert_owned_with(&mut self, key: Vec<u8>, value: V, combine: impl FnOnce(&mut V, V)) {
        if key.len() <= SHORT_MAX {
            Self::put(&mut self.short, short_key(&key), value, combine);
        } else {
            Self::put(&mut self.long, key, value, combine);
        }
    }

    #[inline]
    fn put<K: std::hash::Hash + Eq>(
        map: &mut HashMap<K, V, FixedState>,
        key: K,
        value: V,
        combine: impl FnOnce(&mut V, V),
    ) {
        use std::collections::hash_map::Entry;
        match map.entry(key) {
            Entry::Occupied(mut e) => combine(e.get_mut(), value),
            Entry::Vacant(e) => {
                e.insert(value);
            }
        }
    }

    /// [`Combiner::insert_with`] using the app's `combine`.
    #[inline]
    pub fn emit<A: App<Value = V>>(&mut self, app: &A, key: &[u8], value: V) {
        self.insert_with(key, value, |into, from| app.combine(into, from));
    }

    /// The value under `key`, inserting `default()` first if there is none.
    #[inline]
    pub fn get_or_insert_with(&mut self, key: &[u8], default: impl FnOnce() -> V) -> &mut V {
        if key.len() <= SHORT_MAX {
            return self.short.entry(short_key(key)).or_insert_with(default);
        }
        if !self.long.contains_key(key) {
            self.long.insert(key.to_vec(), default());
        }
        self.long.get_mut(key).expect("just inserted")
    }

    /// Move every entry of `other` into `self` (and add its record count).
    pub fn merge_with(&mut self, mut other: Combiner<V>, mut combine: impl FnMut(&mut V, V)) {
        if other.len() > self.len() {
            std::mem::swap(self, &mut other);
        }
        self.input_records += other.input_records;
        self.short.reserve(other.short.len());
        for (k, v) in other.short {
            Self::put(&mut self.short, k, v, &mut combine);
        }
        for (k, v) in other.long {
            Self::put(&mut self.long, k, v, &mut combine);
        }
    }

    /// Call `f` for every entry, in no particular order.
    pub fn for_each_entry(&self, mut f: impl FnMut(&[u8], &V)) {
        for (&k, v) in &self.short {
            let (b, n) = short_bytes(k);
            f(&b[..n], v);
        }
        for (k, v) in &self.long {
            f(k, v);
        }
    }

    /// The entries, in no particular order.
    pub fn into_entries(self) -> impl Iterator<Item = (Vec<u8>, V)> {
        let short = self.short.into_iter().map(|(k, v)| {
            let (b, n) = short_bytes(k);
            (b[..n].to_vec(), v)
        });
        short.chain(self.long)
    }

    /// The entries, sorted by key.
    pub fn into_sorted(self) -> Vec<(Vec<u8>, V)> {
        let Combiner { short, long, .. } = self;
        sorted_entries(vec![Bucket {
            short: short.into_iter().collect(),
            long: long.into_iter().collect(),
        }])
    }

    /// The entries bucketed by reducer ([`partition_of`]), unsorted.
    fn into_buckets(self, reducers: u32) -> Buckets<V> {
        let r = reducers as usize;
        let mut by_reducer: Vec<Bucket<V>> = (0..r)
            .map(|_| Bucket {
                short: Vec::with_capacity(self.short.len() / r + 1),
                long: Vec::new(),
            })
            .collect();
        for (k, v) in self.short {
            let (b, n) = short_bytes(k);
            by_reducer[partition_of(&b[..n], reducers) as usize]
                .short
                .push((k, v));
        }
        for (k, v) in self.long {
            by_reducer[partition_of(&k, reducers) as usize]
                .long
                .push((k, v));
        }
        Buckets {
            input_records: self.input_records,
            by_reducer,
        }
    }
}

/// Entries with distinct keys, short keys kept as [`short_key`]s.
struct Bucket<V> {
    short: Vec<(u128, V)>,
    long: Vec<(Vec<u8>, V)>,
}

/// A combiner's entries bucketed by reducer: `by_reducer[r]` for reducer `r`.
struct Buckets<V> {
    input_records: u64,
    by_reducer: Vec<Bucket<V>>,
}

/// Sort key of a [`short_key`] that orders like its bytes: the padded bytes big-endian, then
/// the length (a shorter key is a prefix of a longer one with the same padded bytes).
#[inline]
fn short_order(k: u128) -> u128 {
    u128::from_be_bytes(k.to_le_bytes())
}

/// The entries of buckets whose keys are all distinct, materialized and sorted by key.
fn sorted_entries<V>(buckets: Vec<Bucket<V>>) -> Vec<(Vec<u8>, V)> {
    let mut s: Vec<(u128, V)> = Vec::new();
    let mut l: Vec<(Vec<u8>, V)> = Vec::new();
    for b in buckets {
        s.extend(b.short);
        l.extend(b.long);
    }
    s.sort_unstable_by_key(|e| short_order(e.0));
    l.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::with_capacity(s.len() + l.len());
    let mut l = l.into_iter().peekable();
    for (k, v) in s {
        let (b, n) = short_bytes(k);
        let key = &b[..n];
        while let Some(e) = l.next_if(|e| e.0.as_slice() < key) {
            out.push(e);
        }
        out.push((key.to_vec(), v));
    }
    out.extend(l);
    out
}

/// Merge bucketed combiners (one per piece) into sorted partitions, one reducer per rayon task.
fn merge_buckets<V: Send>(
    buckets: Vec<Buckets<V>>,
    reducers: u32,
    combine: impl Fn(&mut V, V) + Sync,
) -> MapOutput<V> {
    let input_records = buckets.iter().map(|b| b.input_records).sum();
    let mut per: Vec<Vec<Bucket<V>>> = (0..reducers).map(|_| Vec::new()).collect();
    for b in buckets {
        for (i, bucket) in b.by_reducer.into_iter().enumerate() {
            per[i].push(bucket);
        }
    }
    let partitions: Vec<Vec<(Vec<u8>, V)>> = per
        .into_par_iter()
        .map(|sources| {
            if sources.len() <= 1 {
                // One source: its keys are already distinct.
                return sorted_entries(sources);
            }
            let n = sources.iter().map(|b| b.short.len()).max().unwrap_or(0);
            let mut c = Combiner::with_capacity(n + n / 2);
            for b in sources {
                for (k, v) in b.short {
                    Combiner::put(&mut c.short, k, v, &combine);
                }
                for (k, v) in b.long {
                    Combiner::put(&mut c.long, k, v, &combine);
                }
            }
            c.into_sorted()
        })
        .collect();
    let output_records = partitions.iter().map(|p| p.len() as u64).sum();
    MapOutput {
        partitions,
        input_records,
        output_records,
    }
}

/// Input of one map task.
pub struct SplitInput<'a> {
    pub path: &'a str,
    /// File offset of `data[0]`.
    pub offset: u64,
    /// The split's bytes: the records that start here are this task's.
    pub data: &'a [u8],
    /// Up to 4 bytes immediately before `offset` (empty iff `offset == 0`; fewer than 4 only if
    /// `offset < 4`).
    pub before: &'a [u8],
    /// Bytes immediately after the split (lookahead for the last record).
    pub after: &'a [u8],
    /// `after` ends at the end of the file.
    pub after_reaches_eof: bool,
}

/// The split's last record (or the cut at its start) runs past `after`: retry with at least
/// `at_least` bytes of `after` (or up to the end of the file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeedLookahead {
    pub at_least: usize,
}

impl std::fmt::Display for NeedLookahead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "need at least {} bytes of lookahead after the split",
            self.at_least
        )
    }
}

impl std::error::Error for NeedLookahead {}

/// One map task's output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapOutput<V> {
    /// `partitions[r]`: the combined (key, value) pairs for reducer `r`, sorted by key.
    pub partitions: Vec<Vec<(Vec<u8>, V)>>,
    /// Records read (words or lines starting in the split).
    pub input_records: u64,
    /// (key, value) pairs emitted after combining, over all partitions.
    pub output_records: u64,
}

/// Where the records of `input` lie, in `data` coordinates: `Some((start, end))` with
/// `start < data.len() <= end` (bytes past `data.len()` are in `after`), or `None` when no
/// record starts in the split.
fn record_bounds(
    kind: RecordKind,
    input: &SplitInput<'_>,
) -> Result<Option<(usize, usize)>, NeedLookahead> {
    let len = input.data.len();
    if len == 0 {
        return Ok(None);
    }
    let b = input.before.len();
    debug_assert!(
        (input.offset == 0) == (b == 0) && (b == 4 || input.offset == b as u64),
        "`before` must hold min(4, offset) bytes"
    );
    let v = Concat3([input.before, input.data, input.after]);
    let at_start = input.offset == b as u64;
    let at_end = input.after_reaches_eof;
    let need = NeedLookahead {
        at_least: (2 * input.after.len()).max(MIN_LOOKAHEAD),
    };
    let start = if input.offset == 0 {
        0
    } else {
        match text::scan_cut(kind, &v, b, at_start, at_end, b + len - 1) {
            Scan::Found(q) => q - b,
            Scan::Beyond => return Ok(None),
            Scan::NeedMore => return Err(need),
        }
    };
    let end = if at_end && input.after.is_empty() {
        len
    } else {
        match text::scan_cut(kind, &v, b + len, at_start, at_end, usize::MAX) {
            Scan::Found(q) => q - b,
            Scan::Beyond | Scan::NeedMore => return Err(need),
        }
    };
    debug_assert!(start < len && len <= end && end <= v.len());
    Ok(Some((start, end)))
}

/// Map a split: find `cut(offset)` and `cut(offset + len)` using `before`/`data`/`after`, map
/// the records between with rayon (in parallel over [`text::pieces`] of [`PIECE_TARGET`] bytes,
/// each into its own [`Combiner`], whose entries are then bucketed by [`partition_of`]), and
/// merge each reducer's buckets (one rayon task per reducer) into a partition sorted by key.
/// Returns [`NeedLookahead`] when `after` ends before the split's last record (or its first
/// cut) can be decided and `after_reaches_eof` is false.
///
/// `data` is not copied: `data[start..c]`, where `c` is the last trivially safe cut in the
/// split, is mapped in place, and only the tail `data[c..]` plus the needed part of `after` is
/// copied into a temporary buffer.
pub fn map_split<A: App>(
    app: &A,
    input: &SplitInput<'_>,
    reducers: u32,
) -> Result<MapOutput<A::Value>, NeedLookahead> {
    let reducers = reducers.max(1);
    let buckets = map_buckets(app, input, reducers)?;
    Ok(merge_buckets(buckets, reducers, |into, from| {
        app.combine(into, from)
    }))
}

/// [`map_split`], with each partition encoded as [`encode_partition`] does but in no particular
/// key order (reducers do not need one): what a map task ships. Returns the encoded partitions,
/// the input records and the output records.
pub fn map_split_encoded<A: App>(
    app: &A,
    input: &SplitInput<'_>,
    reducers: u32,
) -> Result<(Vec<Vec<u8>>, u64, u64), NeedLookahead> {
    let reducers = reducers.max(1);
    let buckets = map_buckets(app, input, reducers)?;
    let input_records = buckets.iter().map(|b| b.input_records).sum();
    let mut per: Vec<Vec<Bucket<A::Value>>> = (0..reducers).map(|_| Vec::new()).collect();
    for b in buckets {
        for (i, bucket) in b.by_reducer.into_iter().enumerate() {
            per[i].push(bucket);
        }
    }
    let encoded: Vec<(Vec<u8>, u64)> = per
        .into_par_iter()
        .map(|mut sources| {
            if sources.len() == 1 {
                // One source: its keys are already distinct.
                let b = sources.pop().expect("one source");
                let n = b.short.len() + b.long.len();
                let mut out = Vec::with_capacity(n * 12 + 8);
                put_varint(&mut out, n as u64);
                for (k, v) in &b.short {
                    let (kb, kn) = short_bytes(*k);
                    out = encode_entry(out, &kb[..kn], v);
                }
                for (k, v) in &b.long {
                    out = encode_entry(out, k, v);
                }
                return (out, n as u64);
            }
            let n = sources.iter().map(|b| b.short.len()).max().unwrap_or(0);
            let mut c = Combiner::with_capacity(n + n / 2);
            for b in sources {
                for (k, v) in b.short {
                    Combiner::put(&mut c.short, k, v, |into, from| app.combine(into, from));
                }
                for (k, v) in b.long {
                    Combiner::put(&mut c.long, k, v, |into, from| app.combine(into, from));
                }
            }
            let mut out = Vec::with_capacity(c.len() * 12 + 8);
            put_varint(&mut out, c.len() as u64);
            c.for_each_entry(|k, v| {
                out = encode_entry(std::mem::take(&mut out), k, v);
            });
            (out, c.len() as u64)
        })
        .collect();
    let output_records = encoded.iter().map(|e| e.1).sum();
    Ok((
        encoded.into_iter().map(|e| e.0).collect(),
        input_records,
        output_records,
    ))
}

/// Map the records of a split, each piece into its own combiner, bucketed by reducer.
fn map_buckets<A: App>(
    app: &A,
    input: &SplitInput<'_>,
    reducers: u32,
) -> Result<Vec<Buckets<A::Value>>, NeedLookahead> {
    let kind = app.record_kind();
    let Some((start, end)) = record_bounds(kind, input)? else {
        return Ok(Vec::new());
    };
    let data = input.data;
    let c = text::last_trivial_cut(kind, data, start).unwrap_or(start);
    let body = &data[start..c];
    let ranges = text::piece_ranges(kind, body, PIECE_TARGET);
    let base = input.offset + start as u64;
    let mut buckets: Vec<Buckets<A::Value>> = ranges
        .into_par_iter()
        .map(|r| {
            let mut out = Combiner::with_capacity((r.len() / 128).min(1 << 16));
            app.map(input.path, base + r.start as u64, &body[r], &mut out);
            out.into_buckets(reducers)
        })
        .collect();
    let mut tail = Vec::with_capacity(end - c);
    tail.extend_from_slice(&data[c..]);
    tail.extend_from_slice(&input.after[..end - data.len()]);
    if !tail.is_empty() {
        let mut out = Combiner::new();
        app.map(input.path, input.offset + c as u64, &tail, &mut out);
        buckets.push(out.into_buckets(reducers));
    }
    Ok(buckets)
}

#[inline]
fn encode_entry<V: Serialize>(mut out: Vec<u8>, key: &[u8], v: &V) -> Vec<u8> {
    put_varint(&mut out, key.len() as u64);
    out.extend_from_slice(key);
    postcard::to_extend(v, out).expect("postcard encoding into a Vec cannot fail")
}

/// Split a combiner's entries into `reducers` partitions, each sorted by key.
pub fn partition<V: Send>(combined: Combiner<V>, reducers: u32) -> MapOutput<V> {
    let reducers = reducers.max(1);
    merge_buckets(vec![combined.into_buckets(reducers)], reducers, |_, _| {
        unreachable!("one combiner has distinct keys")
    })
}

/// Fixed seed of [`partition_of`]: changing it changes which reducer gets which key.
const PARTITION_SEED: u64 = 0x5155_4152_5259_4d52; // "QUARRYMR"
static PARTITION_HASH: FixedState = FixedState::with_seed(PARTITION_SEED);

/// The reducer of `key`: stable across processes and runs (fixed-seed foldhash of the bytes).
pub fn partition_of(key: &[u8], reducers: u32) -> u32 {
    let mut h = PARTITION_HASH.build_hasher();
    h.write(key);
    (h.finish() % u64::from(reducers.max(1))) as u32
}

fn put_varint(out: &mut Vec<u8>, mut x: u64) {
    while x >= 0x80 {
        out.push((x as u8) | 0x80);
        x >>= 7;
    }
    out.push(x as u8);
}

fn take_varint(bytes: &mut &[u8]) -> Result<u64, String> {
    let mut x = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = bytes
            .split_first()
            .ok_or("partition truncated in a varint")?;
        *bytes = rest;
        x |= u64::from(b & 0x7F) << shift;
        if b < 0x80 {
            return Ok(x);
        }
    }
    Err("partition varint too long".into())
}

/// Encode one partition. Format: LEB128 varint entry count, then per entry a LEB128 varint key
/// length, the key bytes, and the value in postcard (self-delimiting).
pub fn encode_partition<V: Serialize>(p: &[(Vec<u8>, V)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(p.len() * 12 + 8);
    put_varint(&mut out, p.len() as u64);
    for (k, v) in p {
        out = encode_entry(out, k, v);
    }
    out
}

/// Decode a partition made by [`encode_partition`].
pub fn decode_partition<V: DeserializeOwned>(bytes: &[u8]) -> Result<Vec<(Vec<u8>, V)>, String> {
    let mut out = Vec::new();
    decode_partition_with(bytes, |k, v| out.push((k.to_vec(), v)))?;
    Ok(out)
}

/// Decode a partition made by [`encode_partition`] (or [`map_split_encoded`]), calling `f`
/// for each entry, without materializing the keys.
pub fn decode_partition_with<V: DeserializeOwned>(
    bytes: &[u8],
    mut f: impl FnMut(&[u8], V),
) -> Result<(), String> {
    let mut rest = bytes;
    let n = take_varint(&mut rest)?;
    for i in 0..n {
        let klen = take_varint(&mut rest)?;
        if klen > rest.len() as u64 {
            return Err(format!("partition entry {i}: key runs past the end"));
        }
        let (k, r) = rest.split_at(klen as usize);
        let (v, r) =
            postcard::take_from_bytes::<V>(r).map_err(|e| format!("partition entry {i}: {e}"))?;
        f(k, v);
        rest = r;
    }
    if !rest.is_empty() {
        return Err(format!(
            "{} trailing bytes after {n} partition entries",
            rest.len()
        ));
    }
    Ok(())
}

/// [`reduce`] straight from encoded partitions: each entry is merged as it is decoded.
pub fn reduce_encoded<A: App>(app: &A, partitions: &[&[u8]]) -> Result<(Vec<u8>, u64), String> {
    let mut merged = Combiner::new();
    for p in partitions {
        decode_partition_with::<A::Value>(p, |k, v| {
            merged.insert_with(k, v, |into, from| app.combine(into, from))
        })?;
    }
    Ok(format_sorted(app, merged.into_sorted()))
}

/// Merge the partitions from every map task (combining equal keys) and return the output text,
/// one line per key sorted by key bytes, and the number of lines.
pub fn reduce<A: App>(app: &A, inputs: Vec<Vec<(Vec<u8>, A::Value)>>) -> (Vec<u8>, u64) {
    let mut merged = Combiner::new();
    for part in inputs {
        for (k, v) in part {
            merged.insert_owned_with(k, v, |into, from| app.combine(into, from));
        }
    }
    format_sorted(app, merged.into_sorted())
}

/// Format sorted entries, one line each.
pub fn format_sorted<A: App>(app: &A, entries: Vec<(Vec<u8>, A::Value)>) -> (Vec<u8>, u64) {
    let mut out = Vec::with_capacity(entries.len() * 16);
    for (k, v) in &entries {
        app.format(k, v, &mut out);
        out.push(b'\n');
    }
    (out, entries.len() as u64)
}

/// The sequential oracle for one app: each file mapped whole in one thread, no splits, output
/// sorted by key.
pub fn run_sequential_app<A: App>(app: &A, files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut c = Combiner::new();
    for (path, bytes) in files {
        app.map(path, 0, bytes, &mut c);
    }
    format_sorted(app, c.into_sorted()).0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts lines; key = the line, to exercise Lines bounds with a simple app.
    struct LineCount;
    impl App for LineCount {
        type Value = u64;
        fn record_kind(&self) -> RecordKind {
            RecordKind::Lines
        }
        fn map(&self, _: &str, _: u64, piece: &[u8], out: &mut Combiner<u64>) {
            text::for_each_line(piece, |_, l| {
                out.input_records += 1;
                out.emit(self, l, 1);
            });
        }
        fn combine(&self, into: &mut u64, from: u64) {
            *into += from;
        }
        fn format(&self, key: &[u8], value: &u64, out: &mut Vec<u8>) {
            out.extend_from_slice(key);
            out.extend_from_slice(format!(" {value}").as_bytes());
        }
    }

    #[test]
    fn partition_round_trip() {
        let p: Vec<(Vec<u8>, u64)> =
            vec![(b"a".to_vec(), 1), (vec![], 0), (vec![0xFF; 300], u64::MAX)];
        let bytes = encode_partition(&p);
        assert_eq!(decode_partition::<u64>(&bytes).unwrap(), p);
        let p2: Vec<(Vec<u8>, Vec<String>)> = vec![(b"w".to_vec(), vec!["/a".into(), "/b".into()])];
        assert_eq!(
            decode_partition::<Vec<String>>(&encode_partition(&p2)).unwrap(),
            p2
        );
        assert!(decode_partition::<u64>(&bytes[..bytes.len() - 1]).is_err());
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(decode_partition::<u64>(&extra).is_err());
        assert!(decode_partition::<u64>(&[]).is_err());
        assert_eq!(
            decode_partition::<u64>(&encode_partition::<u64>(&[])).unwrap(),
            vec![]
        );
        // A huge claimed count does not allocate.
        assert!(decode_partition::<u64>(&[0xFF, 0xFF, 0xFF, 0xFF, 0x0F]).is_err());
    }

    #[test]
    fn partition_is_stable_and_in_range() {
        // Pinned values: a change here means map outputs from different builds disagree.
        let got: Vec<u32> = ["", "a", "hello", "world"]
            .iter()
            .map(|k| partition_of(k.as_bytes(), 1000))
            .collect();
        assert_eq!(got, [397, 306, 250, 334]);
        for k in 0..1000u32 {
            assert!(partition_of(&k.to_le_bytes(), 7) < 7);
            assert_eq!(partition_of(&k.to_le_bytes(), 0), 0);
            assert_eq!(partition_of(&k.to_le_bytes(), 1), 0);
        }
    }

    fn map_all(app: &LineCount, file: &[u8], split: usize, look: usize) -> Vec<u8> {
        let mut parts = Vec::new();
        let mut off = 0;
        while off < file.len() {
            let e = (off + split).min(file.len());
            let mut look = look;
            let out = loop {
                let a = (e + look).min(file.len());
                let input = SplitInput {
                    path: "f",
                    offset: off as u64,
                    data: &file[off..e],
                    before: &file[off.saturating_sub(4)..off],
                    after: &file[e..a],
                    after_reaches_eof: a == file.len(),
                };
                match map_split(app, &input, 3) {
                    Ok(o) => break o,
                    Err(n) => look = n.at_least,
                }
            };
            parts.extend(out.partitions);
            off = e;
        }
        reduce(app, parts).0
    }

    #[test]
    fn lines_split_anywhere() {
        let file = b"ab\n\ncd\nab\nlong line here\n\nx";
        let want = run_sequential_app(&LineCount, &[("f".into(), file.to_vec())]);
        for split in 1..=file.len() {
            for look in [0, 1, 3, 100] {
                assert_eq!(
                    map_all(&LineCount, file, split, look),
                    want,
                    "{split} {look}"
                );
            }
        }
    }

    #[test]
    fn empty_and_tiny_splits() {
        let out = map_split(
            &LineCount,
            &SplitInput {
                path: "f",
                offset: 0,
                data: b"",
                before: b"",
                after: b"",
                after_reaches_eof: true,
            },
            2,
        )
        .unwrap();
        assert_eq!(out.partitions.len(), 2);
        assert_eq!((out.input_records, out.output_records), (0, 0));
        // A split inside a line that runs past the lookahead owns no records.
        let out = map_split(
            &LineCount,
            &SplitInput {
                path: "f",
                offset: 4,
                data: b"cd",
                before: b"abab",
                after: b"",
                after_reaches_eof: false,
            },
            1,
        )
        .unwrap();
        assert_eq!(out.input_records, 0);
        // A split whose last line runs past the lookahead asks for more.
        let err = map_split(
            &LineCount,
            &SplitInput {
                path: "f",
                offset: 0,
                data: b"cd",
                before: b"",
                after: b"ef",
                after_reaches_eof: false,
            },
            1,
        )
        .unwrap_err();
        assert!(err.at_least >= MIN_LOOKAHEAD);
    }

    fn key() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        prop_oneof![
            proptest::collection::vec(
                prop_oneof![Just(0u8), Just(1), Just(b'a'), Just(0xFF)],
                0..18
            ),
            proptest::collection::vec(any::<u8>(), 0..40),
        ]
    }

    proptest::proptest! {
        #[test]
        fn combiner_matches_model(
            a in proptest::collection::vec((key(), 0u64..5), 0..60),
            b in proptest::collection::vec((key(), 0u64..5), 0..60),
            reducers in 1u32..5,
        ) {
            use std::collections::BTreeMap;
            let mut model: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
            let (mut x, mut y) = (Combiner::new(), Combiner::new());
            for (k, v) in &a {
                *model.entry(k.clone()).or_default() += v;
                x.insert_with(k, *v, |i, f| *i += f);
            }
            for (i, (k, v)) in b.iter().enumerate() {
                *model.entry(k.clone()).or_default() += v;
                if i % 2 == 0 {
                    y.insert_owned_with(k.clone(), *v, |i, f| *i += f);
                } else {
                    *y.get_or_insert_with(k, || 0) += v;
                }
            }
            for (k, v) in &model {
                let got = x.get(k).copied().unwrap_or(0) + y.get(k).copied().unwrap_or(0);
                proptest::prop_assert_eq!(got, *v);
            }
            let (x2, y2) = (Combiner::new(), Combiner::new());
            let mut z = Combiner::new();
            z.merge_with(x2, |i, f| *i += f);
            z.merge_with(y2, |i, f| *i += f);
            prop_assert_eq_model(&z, &BTreeMap::new())?;
            x.merge_with(y, |i, f| *i += f);
            prop_assert_eq_model(&x, &model)?;
            let want: Vec<(Vec<u8>, u64)> = model.into_iter().collect();
            // Bucketed merging (as map_split does) gives sorted partitions by partition_of.
            let mut c1 = Combiner::new();
            let mut c2 = Combiner::new();
            for (i, (k, v)) in want.iter().enumerate() {
                c1.insert_with(k, *v, |i, f| *i += f);
                if i % 3 == 0 {
                    c2.insert_with(k, 0, |i, f| *i += f);
                }
            }
            let out = merge_buckets(
                vec![c1.into_buckets(reducers), c2.into_buckets(reducers)],
                reducers,
                |i, f| *i += f,
            );
            let mut all = Vec::new();
            for (r, p) in out.partitions.iter().enumerate() {
                proptest::prop_assert!(p.windows(2).all(|w| w[0].0 < w[1].0));
                proptest::prop_assert!(p.iter().all(|e| partition_of(&e.0, reducers) == r as u32));
                all.extend(p.iter().cloned());
            }
            all.sort();
            proptest::prop_assert_eq!(out.output_records as usize, want.len());
            proptest::prop_assert_eq!(&all, &want);
            proptest::prop_assert_eq!(x.into_sorted(), want);
        }
    }

    fn prop_assert_eq_model(
        c: &Combiner<u64>,
        model: &std::collections::BTreeMap<Vec<u8>, u64>,
    ) -> Result<(), proptest::test_runner::TestCaseError> {
        let mut seen = std::collections::BTreeMap::new();
        c.for_each_entry(|k, v| {
            seen.insert(k.to_vec(), *v);
        });
        proptest::prop_assert_eq!(&seen, model);
        proptest::prop_assert_eq!(c.len(), model.len());
        Ok(())
    }

    #[test]
    fn reduce_merges_and_sorts() {
        let a = vec![(b"b".to_vec(), 2u64), (b"a".to_vec(), 1)];
        let b = vec![(b"b".to_vec(), 3u64), (b"c".to_vec(), 1)];
        let (text, n) = reduce(&LineCount, vec![a, b]);
        assert_eq!(text, b"a 1\nb 5\nc 1\n");
        assert_eq!(n, 3);
    }
}
