//! Metrics: counters, gauges and fixed-bucket histograms with labels, and the Prometheus text
//! exposition format (version 0.0.4) to publish them and to read them back.
//!
//! A [`Registry`] holds metric *families* (one name, one help text, one type) and, in each, one
//! *series* per label set. Looking a series up takes a lock once; the handle it returns
//! ([`Counter`], [`Gauge`], [`Histogram`]) is an `Arc` of atomics, so the hot paths (an RPC
//! served, a chunk read) touch no lock: keep the handle. Every process has one registry,
//! [`global`]; metrics of a node carry a `node` label where one process hosts several nodes
//! (`quarry up` runs them all in one).
//!
//! Values that are cheaper to read at scrape time than to keep up to date (the Raft state, the
//! repair queue) come from *collectors*: callbacks that [`Registry::encode`] runs first, which
//! set gauges. A collector that returns `false` is dropped (its owner is gone).
//!
//! [`parse`] is a strict reader of the same format, used by `quarry stats` and by the tests.
//! This module does no IO and knows nothing of HTTP.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

/// Latency buckets in seconds: 100 µs to 30 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// The process's registry.
pub fn global() -> &'static Registry {
    static GLOBAL: OnceLock<Registry> = OnceLock::new();
    GLOBAL.get_or_init(Registry::new)
}

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Raise the count to `total` (never lowers it): for a counter that mirrors a monotonic
    /// count kept elsewhere, set by a collector.
    pub fn mirror(&self, total: u64) {
        self.0.fetch_max(total, Ordering::Relaxed);
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }

    pub fn add(&self, n: i64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Observations counted in fixed buckets (upper bounds, ascending), with their sum and count.
#[derive(Debug)]
pub struct Histogram {
    bounds: Vec<f64>,
    /// Per bucket, not cumulative; one more than `bounds` for +Inf.
    buckets: Vec<AtomicU64>,
    /// The sum, as `f64` bits (updated with a compare-and-swap loop).
    sum: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &[f64]) -> Histogram {
        let mut bounds: Vec<f64> = bounds.iter().copied().filter(|b| b.is_finite()).collect();
        bounds.sort_by(f64::total_cmp);
        bounds.dedup();
        Histogram {
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            bounds,
            sum: AtomicU64::new(0f64.to_bits()),
            count: AtomicU64::new(0),
        }
    }

    /// Record one value (NaN is ignored).
    pub fn observe(&self, v: f64) {
        if v.is_nan() {
            return;
        }
        let i = self.bounds.partition_point(|b| *b < v);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let mut cur = self.sum.load(Ordering::Relaxed);
        loop {
            let next = (f64::from_bits(cur) + v).to_bits();
            match self
                .sum
                .compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(actual) => cur = actual,
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Record the seconds elapsed since `start`.
    pub fn observe_since(&self, start: std::time::Instant) {
        self.observe(start.elapsed().as_secs_f64());
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn sum(&self) -> f64 {
        f64::from_bits(self.sum.load(Ordering::Relaxed))
    }

    /// (upper bound, cumulative count) per bucket, +Inf last. Read bucket by bucket while
    /// others observe, so the +Inf count is taken as the total (never below a bucket before it).
    fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut out = Vec::with_capacity(self.buckets.len());
        let mut acc = 0u64;
        for (i, b) in self.buckets.iter().enumerate() {
            acc += b.load(Ordering::Relaxed);
            let le = self.bounds.get(i).copied().unwrap_or(f64::INFINITY);
            out.push((le, acc));
        }
        out
    }
}

/// The type of a family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

#[derive(Clone)]
enum Series {
    Counter(Arc<Counter>),
    Gauge(Arc<Gauge>),
    Histogram(Arc<Histogram>),
}

type Labels = Vec<(String, String)>;

struct Family {
    help: String,
    kind: Kind,
    buckets: Vec<f64>,
    series: BTreeMap<Labels, Series>,
}

type Collector = Box<dyn Fn(&Registry) -> bool + Send + Sync>;

/// A set of metric families. See the module comment.
#[derive(Default)]
pub struct Registry {
    families: RwLock<BTreeMap<String, Family>>,
    collectors: Mutex<Vec<Collector>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self
            .families
            .read()
            .map(|f| f.keys().cloned().collect())
            .unwrap_or_default();
        f.debug_struct("Registry")
            .field("families", &names)
            .finish()
    }
}

/// Whether `name` is a valid metric name (or, with `label`, a valid label name).
fn valid_name(name: &str, label: bool) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    let ok_first = first.is_ascii_alphabetic() || first == '_' || (!label && first == ':');
    ok_first && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (!label && c == ':'))
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// The series `name{labels}`, created with `make` if missing. A name or label that is not
    /// valid, or a name already registered with another type, gets a detached series (counted
    /// nowhere) and a warning: metrics never take a node down.
    fn series(
        &self,
        name: &str,
        help: &str,
        kind: Kind,
        buckets: &[f64],
        labels: &[(&str, &str)],
    ) -> Series {
        let make = |buckets: &[f64]| match kind {
            Kind::Counter => Series::Counter(Arc::default()),
            Kind::Gauge => Series::Gauge(Arc::default()),
            Kind::Histogram => Series::Histogram(Arc::new(Histogram::new(buckets))),
        };
        let mut key: Labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        key.sort();
        let bad_label = key.iter().any(|(k, _)| !valid_name(k, true) || k == "le")
            || key.windows(2).any(|w| w[0].0 == w[1].0);
        if !valid_name(name, false) || bad_label {
            tracing::warn!(name, ?labels, "invalid metric name or labels; not exported");
            return make(buckets);
        }
        if let Some(s) = self
            .families
            .read()
            .ok()
            .and_then(|f| f.get(name).and_then(|fam| fam.series.get(&key).cloned()))
        {
            return s;
        }
        let Ok(mut families) = self.families.write() else {
            return make(buckets);
        };
        let fam = families.entry(name.to_string()).or_insert_with(|| Family {
            help: help.to_string(),
            kind,
            buckets: Histogram::new(buckets).bounds,
            series: BTreeMap::new(),
        });
        if fam.kind != kind {
            tracing::warn!(name, "metric registered twice with different types");
            return make(buckets);
        }
        let fam_buckets = fam.buckets.clone();
        fam.series
            .entry(key)
            .or_insert_with(|| make(&fam_buckets))
            .clone()
    }

    pub fn counter(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> Arc<Counter> {
        match self.series(name, help, Kind::Counter, &[], labels) {
            Series::Counter(c) => c,
            _ => Arc::default(),
        }
    }

    pub fn gauge(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> Arc<Gauge> {
        match self.series(name, help, Kind::Gauge, &[], labels) {
            Series::Gauge(g) => g,
            _ => Arc::default(),
        }
    }

    /// A histogram; the family's buckets are those given when its first series was made.
    pub fn histogram(
        &self,
        name: &str,
        help: &str,
        buckets: &[f64],
        labels: &[(&str, &str)],
    ) -> Arc<Histogram> {
        match self.series(name, help, Kind::Histogram, buckets, labels) {
            Series::Histogram(h) => h,
            _ => Arc::new(Histogram::new(buckets)),
        }
    }

    /// Remove every series of `name` whose labels include `label` (a node that stopped).
    pub fn remove_matching(&self, name: &str, label: (&str, &str)) {
        if let Ok(mut families) = self.families.write() {
            if let Some(fam) = families.get_mut(name) {
                fam.series
                    .retain(|k, _| !k.iter().any(|(n, v)| n == label.0 && v == label.1));
            }
        }
    }

    /// Run `f` before each [`Registry::encode`], until it returns `false`.
    pub fn add_collector(&self, f: impl Fn(&Registry) -> bool + Send + Sync + 'static) {
        if let Ok(mut c) = self.collectors.lock() {
            c.push(Box::new(f));
        }
    }

    /// Run the collectors, then write every family in the text exposition format, families in
    /// name order and series in label order.
    pub fn encode(&self) -> String {
        // Collectors run without the collectors lock held, so one may register metrics (or
        // even collectors) itself.
        let collectors = self
            .collectors
            .lock()
            .map(|mut c| std::mem::take(&mut *c))
            .unwrap_or_default();
        let kept: Vec<Collector> = collectors.into_iter().filter(|f| f(self)).collect();
        if let Ok(mut c) = self.collectors.lock() {
            let added = std::mem::take(&mut *c);
            *c = kept;
            c.extend(added);
        }
        let mut out = String::new();
        let Ok(families) = self.families.read() else {
            return out;
        };
        for (name, fam) in families.iter() {
            if fam.series.is_empty() {
                continue;
            }
            let _ = writeln!(out, "# HELP {name} {}", escape_help(&fam.help));
            let _ = writeln!(out, "# TYPE {name} {}", fam.kind.as_str());
            for (labels, series) in &fam.series {
                match series {
                    Series::Counter(c) => {
                        let _ = writeln!(out, "{name}{} {}", label_text(labels, None), c.get());
                    }
                    Series::Gauge(g) => {
                        let _ = writeln!(out, "{name}{} {}", label_text(labels, None), g.get());
                    }
                    Series::Histogram(h) => {
                        let buckets = h.cumulative();
                        let total = buckets.last().map(|b| b.1).unwrap_or(0);
                        for (le, n) in &buckets {
                            let le = format_float(*le);
                            let _ =
                                writeln!(out, "{name}_bucket{} {n}", label_text(labels, Some(&le)));
                        }
                        let l = label_text(labels, None);
                        let _ = writeln!(out, "{name}_sum{l} {}", format_float(h.sum()));
                        let _ = writeln!(out, "{name}_count{l} {total}");
                    }
                }
            }
        }
        out
    }
}

/// `{a="x",b="y"}` (with `le` last if given), or nothing without labels.
fn label_text(labels: &Labels, le: Option<&str>) -> String {
    if labels.is_empty() && le.is_none() {
        return String::new();
    }
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    format!("{{{}}}", parts.join(","))
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A float as the format writes it: `+Inf`, `-Inf`, `NaN`, else the shortest round-trip form.
pub fn format_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// One sample line of an exposition: `name{labels} value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    /// In the order written.
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A parsed exposition: each family's type and help, and every sample in order.
#[derive(Clone, Debug, Default)]
pub struct Exposition {
    pub types: BTreeMap<String, Kind>,
    pub help: BTreeMap<String, String>,
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// The samples named exactly `name`.
    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }
}

/// The family a sample belongs to: its name less a histogram suffix, if that family is a
/// histogram.
fn family_of<'a>(name: &'a str, types: &BTreeMap<String, Kind>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if types.get(base) == Some(&Kind::Histogram) {
                return base;
            }
        }
    }
    name
}

/// Read an exposition strictly: every line is blank, a `# HELP`/`# TYPE` line or another
/// comment, or `name{labels} value` with valid names, quoted and escaped label values and a
/// float value (no timestamps). Each family's `# TYPE` comes before its samples and at most
/// once, a sample's family has a `# TYPE`, no series repeats, and every histogram series has
/// `le` buckets with ascending bounds and non-decreasing counts, ending in `+Inf` equal to its
/// `_count`, and a `_sum`.
pub fn parse(text: &str) -> Result<Exposition, String> {
    let mut out = Exposition::default();
    let mut seen = std::collections::HashSet::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let err = |m: &str| Err(format!("line {n}: {m}: {line:?}"));
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let rest = rest.strip_prefix(' ').unwrap_or(rest);
            let mut parts = rest.splitn(3, ' ');
            let keyword = parts.next().unwrap_or("");
            if keyword != "HELP" && keyword != "TYPE" {
                continue; // a plain comment
            }
            let Some(name) = parts.next().filter(|n| valid_name(n, false)) else {
                return err("bad metric name in a HELP/TYPE line");
            };
            let arg = parts.next().unwrap_or("");
            if keyword == "TYPE" {
                let kind = match arg {
                    "counter" => Kind::Counter,
                    "gauge" => Kind::Gauge,
                    "histogram" => Kind::Histogram,
                    _ => return err("unknown or unsupported type"),
                };
                if out.types.insert(name.to_string(), kind).is_some() {
                    return err("second TYPE line for a family");
                }
                if out
                    .samples
                    .iter()
                    .any(|s| family_of(&s.name, &out.types) == name)
                {
                    return err("TYPE line after the family's samples");
                }
            } else if out.help.insert(name.to_string(), arg.to_string()).is_some() {
                return err("second HELP line for a family");
            }
            continue;
        }
        let sample = match parse_sample(line) {
            Ok(s) => s,
            Err(e) => return err(&e),
        };
        let family = family_of(&sample.name, &out.types);
        if !out.types.contains_key(family) {
            return err("sample without a TYPE line for its family");
        }
        let mut key_labels = sample.labels.clone();
        key_labels.sort();
        if !seen.insert((sample.name.clone(), key_labels)) {
            return err("series repeated");
        }
        out.samples.push(sample);
    }
    check_histograms(&out)?;
    Ok(out)
}

/// `name{labels} value` → a sample.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    if !valid_name(name, false) {
        return Err("bad metric name".into());
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let mut s = after;
        loop {
            if let Some(r) = s.strip_prefix('}') {
                s = r;
                break;
            }
            let eq = s.find('=').ok_or("label without '='")?;
            let lname = &s[..eq];
            if !valid_name(lname, true) {
                return Err(format!("bad label name {lname:?}"));
            }
            s = s[eq + 1..]
                .strip_prefix('"')
                .ok_or("label value not quoted")?;
            let mut value = String::new();
            let mut chars = s.char_indices();
            let end = loop {
                match chars.next() {
                    None => return Err("unterminated label value".into()),
                    Some((j, '"')) => break j,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, 'n')) => value.push('\n'),
                        _ => return Err("bad escape in a label value".into()),
                    },
                    Some((_, c)) => value.push(c),
                }
            };
            if labels.iter().any(|(k, _): &(String, String)| k == lname) {
                return Err(format!("label {lname:?} twice"));
            }
            labels.push((lname.to_string(), value));
            s = &s[end + 1..];
            if let Some(r) = s.strip_prefix(',') {
                s = r;
            } else if !s.starts_with('}') {
                return Err("expected ',' or '}' after a label".into());
            }
        }
        rest = s;
    }
    let value_text = rest
        .strip_prefix(' ')
        .ok_or("expected one space before the value")?;
    if value_text.is_empty() || value_text.contains(' ') {
        return Err("expected exactly one value and no timestamp".into());
    }
    let value = match value_text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        t => {
            // Rust accepts "inf"/"infinity"/"nan" spellings the format does not.
            if t.chars()
                .any(|c| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
            {
                return Err(format!("bad value {t:?}"));
            }
            t.parse::<f64>().map_err(|_| format!("bad value {t:?}"))?
        }
    };
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Per histogram series: buckets ascending and monotone, +Inf present and equal to _count,
/// _sum present.
fn check_histograms(e: &Exposition) -> Result<(), String> {
    type Key = Vec<(String, String)>;
    struct H {
        buckets: Vec<(f64, f64)>,
        sum: bool,
        count: Option<f64>,
    }
    let mut hs: BTreeMap<(String, Key), H> = BTreeMap::new();
    for s in &e.samples {
        let family = family_of(&s.name, &e.types);
        if e.types.get(family) != Some(&Kind::Histogram) {
            if e.types.get(family) == Some(&Kind::Counter) && (s.value.is_nan() || s.value < 0.0) {
                return Err(format!("counter {} is negative or NaN", s.name));
            }
            continue;
        }
        let mut key: Key = s
            .labels
            .iter()
            .filter(|(k, _)| k != "le")
            .cloned()
            .collect();
        key.sort();
        let h = hs.entry((family.to_string(), key)).or_insert(H {
            buckets: vec![],
            sum: false,
            count: None,
        });
        match &s.name[family.len()..] {
            "_bucket" => {
                let le = s.label("le").ok_or(format!("{} without le", s.name))?;
                let bound = match le {
                    "+Inf" => f64::INFINITY,
                    t => t
                        .parse::<f64>()
                        .ok()
                        .filter(|v| v.is_finite())
                        .ok_or(format!("bad le {le:?}"))?,
                };
                h.buckets.push((bound, s.value));
            }
            "_sum" => h.sum = true,
            "_count" => h.count = Some(s.value),
            _ => return Err(format!("{} is not a histogram sample", s.name)),
        }
    }
    for ((name, labels), h) in hs {
        let what = format!("histogram {name}{labels:?}");
        if h.buckets.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(format!("{what}: bucket bounds not ascending"));
        }
        if h.buckets
            .windows(2)
            .any(|w| w[0].1 > w[1].1 || w[1].1.is_nan())
        {
            return Err(format!("{what}: bucket counts decrease"));
        }
        let Some(&(last, inf)) = h.buckets.last() else {
            return Err(format!("{what}: no buckets"));
        };
        if last != f64::INFINITY {
            return Err(format!("{what}: no +Inf bucket"));
        }
        if h.count != Some(inf) {
            return Err(format!("{what}: +Inf bucket {inf} != _count {:?}", h.count));
        }
        if !h.sum {
            return Err(format!("{what}: no _sum"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_counters_gauges_and_histograms_exactly() {
        let r = Registry::new();
        r.counter("quarry_x_total", "Things.", &[("method", "Lookup")])
            .add(3);
        r.counter("quarry_x_total", "Things.", &[("method", "Create")])
            .inc();
        r.gauge("quarry_g", "A gauge\nwith \\ two lines.", &[])
            .set(-7);
        let h = r.histogram(
            "quarry_h_seconds",
            "Latency.",
            &[0.5, 0.1, 1.0],
            &[("op", "a\"b")],
        );
        h.observe(0.1);
        h.observe(0.7);
        h.observe(3.0);
        h.observe(f64::NAN);
        let text = r.encode();
        let want = "\
# HELP quarry_g A gauge\\nwith \\\\ two lines.
# TYPE quarry_g gauge
quarry_g -7
# HELP quarry_h_seconds Latency.
# TYPE quarry_h_seconds histogram
quarry_h_seconds_bucket{op=\"a\\\"b\",le=\"0.1\"} 1
quarry_h_seconds_bucket{op=\"a\\\"b\",le=\"0.5\"} 1
quarry_h_seconds_bucket{op=\"a\\\"b\",le=\"1\"} 2
quarry_h_seconds_bucket{op=\"a\\\"b\",le=\"+Inf\"} 3
quarry_h_seconds_sum{op=\"a\\\"b\"} 3.8
quarry_h_seconds_count{op=\"a\\\"b\"} 3
# HELP quarry_x_total Things.
# TYPE quarry_x_total counter
quarry_x_total{method=\"Create\"} 1
quarry_x_total{method=\"Lookup\"} 3
";
        assert_eq!(text, want);
        let parsed = parse(&text).unwrap();
        assert_eq!(parsed.types["quarry_h_seconds"], Kind::Histogram);
        let s: Vec<_> = parsed.named("quarry_h_seconds_bucket").collect();
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].label("op"), Some("a\"b"));
        assert_eq!(s[3].label("le"), Some("+Inf"));
        assert_eq!(s[3].value, 3.0);
    }

    #[test]
    fn same_series_is_the_same_handle_and_labels_are_order_free() {
        let r = Registry::new();
        let a = r.counter("c_total", "c", &[("a", "1"), ("b", "2")]);
        let b = r.counter("c_total", "c", &[("b", "2"), ("a", "1")]);
        a.inc();
        b.inc();
        assert_eq!(a.get(), 2);
        assert_eq!(r.encode().matches("c_total{a=\"1\",b=\"2\"} 2").count(), 1);
    }

    #[test]
    fn bad_names_and_type_clashes_are_detached_not_panics() {
        let r = Registry::new();
        r.counter("1bad", "x", &[]).inc();
        r.counter("ok_total", "x", &[("bad-label", "v")]).inc();
        r.counter("ok_total", "x", &[("le", "v")]).inc();
        r.counter("ok_total", "x", &[("a", "1"), ("a", "2")]).inc();
        r.counter("clash", "x", &[]).inc();
        r.gauge("clash", "x", &[]).set(5);
        r.histogram("clash", "x", LATENCY_BUCKETS, &[]).observe(1.0);
        let text = r.encode();
        assert_eq!(text, "# HELP clash x\n# TYPE clash counter\nclash 1\n");
        parse(&text).unwrap();
    }

    #[test]
    fn collectors_run_before_encoding_until_they_return_false() {
        let r = Registry::new();
        let runs = Arc::new(AtomicU64::new(0));
        let r2 = runs.clone();
        r.add_collector(move |reg| {
            let n = r2.fetch_add(1, Ordering::SeqCst) + 1;
            reg.gauge("collected", "c", &[]).set(n as i64);
            n < 2
        });
        assert!(r.encode().contains("collected 1\n"));
        assert!(r.encode().contains("collected 2\n"));
        assert!(r.encode().contains("collected 2\n"));
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn remove_matching_drops_a_nodes_series() {
        let r = Registry::new();
        r.gauge("g", "g", &[("node", "a")]).set(1);
        r.gauge("g", "g", &[("node", "b")]).set(2);
        r.remove_matching("g", ("node", "a"));
        assert_eq!(r.encode(), "# HELP g g\n# TYPE g gauge\ng{node=\"b\"} 2\n");
    }

    #[test]
    fn histogram_edges() {
        let r = Registry::new();
        let h = r.histogram("h", "h", &[1.0, f64::INFINITY, 1.0, 2.0], &[]);
        h.observe(1.0); // le is inclusive
        h.observe(-5.0);
        h.observe(f64::INFINITY);
        let text = r.encode();
        assert!(text.contains("h_bucket{le=\"1\"} 2\n"), "{text}");
        assert!(text.contains("h_bucket{le=\"2\"} 2\n"), "{text}");
        assert!(text.contains("h_bucket{le=\"+Inf\"} 3\n"), "{text}");
        assert!(text.contains("h_sum +Inf\n"), "{text}");
        parse(&text).unwrap();
    }

    #[test]
    fn parser_rejects_malformed_expositions() {
        let ok = "# TYPE a counter\na 1\n";
        parse(ok).unwrap();
        for bad in [
            "a 1\n",                                          // no TYPE
            "# TYPE a counter\na\n",                          // no value
            "# TYPE a counter\na 1 1700000000\n",             // timestamp
            "# TYPE a counter\na  1\n",                       // two spaces
            "# TYPE a counter\na{x=1} 1\n",                   // unquoted
            "# TYPE a counter\na{x=\"1} 1\n",                 // unterminated
            "# TYPE a counter\na{x=\"\\t\"} 1\n",             // bad escape
            "# TYPE a counter\na{x=\"1\",x=\"2\"} 1\n",       // label twice
            "# TYPE a counter\na{x=\"1\"y=\"2\"} 1\n",        // no comma
            "# TYPE a counter\na one\n",                      // not a number
            "# TYPE a counter\na inf\n",                      // Rust spelling
            "# TYPE a counter\na -1\n",                       // negative counter
            "# TYPE a counter\na 1\na 2\n",                   // repeated
            "# TYPE a counter\n# TYPE a gauge\na 1\n",        // TYPE twice
            "# TYPE a summary\na 1\n",                        // unsupported
            "# TYPE 9a counter\n",                            // bad name
            "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 0\nh_count 1\n",
            "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 0\nh_count 1\n", // no +Inf
            "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 0\nh_count 1\n", // != count
            "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n", // no sum
            "# TYPE h histogram\nh_bucket{le=\"2\"} 0\nh_bucket{le=\"1\"} 0\nh_bucket{le=\"+Inf\"} 0\nh_sum 0\nh_count 0\n",
            "# TYPE h histogram\nh_bucket 1\nh_sum 0\nh_count 1\n", // no le
        ] {
            assert!(parse(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn parser_survives_arbitrary_bytes() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let alphabet = b"# {}=\",\\\nabcHELPTYPE_le+Inf0.1-";
        for _ in 0..2000 {
            let mut s = String::new();
            for _ in 0..(seed % 64) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                s.push(alphabet[(seed % alphabet.len() as u64) as usize] as char);
            }
            let _ = parse(&s);
        }
    }
}
