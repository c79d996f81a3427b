//! `quarry stats [--watch] [ENDPOINT...]`: per-second rates from the nodes' `/metrics`.
//!
//! Every endpoint is read, and the series of all of them are merged (a series seen at two
//! endpoints — one process serving several nodes — counts once). Two samples a second apart
//! give the rates: RPCs per method (calls/s, p50 and p99 latency from the histogram buckets
//! that moved, bytes in and out per second), chunkserver read and write bytes/s per node,
//! and FUSE operations/s and bytes/s.

use quarry_cli::http::{get, human_bytes};
use quarry_transport::metrics::{parse, Sample};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

type Series = BTreeMap<(String, Vec<(String, String)>), f64>;

/// `host:port` or a URL → the `/metrics` URL.
fn metrics_url(endpoint: &str) -> String {
    let e = endpoint.trim();
    if e.starts_with("http://") {
        if e.ends_with("/metrics") {
            e.to_string()
        } else {
            format!("{}/metrics", e.trim_end_matches('/'))
        }
    } else {
        format!("http://{}/metrics", e.trim_end_matches('/'))
    }
}

/// One reading of every endpoint; endpoints that fail are reported and left out.
async fn sample(urls: &[String]) -> (Instant, Series, Vec<String>) {
    let mut series = Series::new();
    let mut failed = Vec::new();
    let at = Instant::now();
    let reads: Vec<_> = urls
        .iter()
        .cloned()
        .map(|u| {
            tokio::spawn(async move {
                let r = get(&u, Duration::from_secs(3)).await;
                (u, r)
            })
        })
        .collect();
    for read in reads {
        let Ok((url, r)) = read.await else { continue };
        let text = match r {
            Ok((200, text)) => text,
            Ok((code, _)) => {
                failed.push(format!("{url}: HTTP {code}"));
                continue;
            }
            Err(e) => {
                failed.push(format!("{e:#}"));
                continue;
            }
        };
        match parse(&text) {
            Ok(exp) => {
                for Sample {
                    name,
                    mut labels,
                    value,
                } in exp.samples
                {
                    labels.sort();
                    series.entry((name, labels)).or_insert(value);
                }
            }
            Err(e) => failed.push(format!("{url}: not a metrics exposition: {e}")),
        }
    }
    (at, series, failed)
}

fn label<'a>(labels: &'a [(String, String)], name: &str) -> &'a str {
    labels
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

/// Per value of `by`, the increase of the series named `name` between two samples (summed
/// over the other labels). A series that went down (a restart) counts from zero.
fn deltas(a: &Series, b: &Series, name: &str, by: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for ((n, labels), v) in b {
        if n != name {
            continue;
        }
        let before = a.get(&(n.clone(), labels.clone())).copied().unwrap_or(0.0);
        let d = if *v >= before { v - before } else { *v };
        *out.entry(label(labels, by).to_string()).or_insert(0.0) += d;
    }
    out
}

/// The `q` quantile of the observations between two samples of histogram `name`, per value
/// of `by`: linear within the bucket holding it (the bucket's upper bound for `+Inf`).
fn quantiles(a: &Series, b: &Series, name: &str, by: &str, q: f64) -> BTreeMap<String, f64> {
    let bucket = format!("{name}_bucket");
    // by value → le → increase
    let mut hist: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let mut per: BTreeMap<(String, String), f64> = BTreeMap::new();
    for ((n, labels), v) in b {
        if *n != bucket {
            continue;
        }
        let le = label(labels, "le");
        let before = a.get(&(n.clone(), labels.clone())).copied().unwrap_or(0.0);
        let d = if *v >= before { v - before } else { *v };
        *per.entry((label(labels, by).to_string(), le.to_string()))
            .or_insert(0.0) += d;
    }
    for ((key, le), d) in per {
        let bound = if le == "+Inf" {
            f64::INFINITY
        } else {
            match le.parse::<f64>() {
                Ok(v) => v,
                Err(_) => continue,
            }
        };
        hist.entry(key).or_default().push((bound, d));
    }
    let mut out = BTreeMap::new();
    for (key, mut buckets) in hist {
        buckets.sort_by(|x, y| x.0.total_cmp(&y.0));
        let total = buckets.last().map(|b| b.1).unwrap_or(0.0);
        if total <= 0.0 {
            continue;
        }
        let rank = q * total;
        let mut prev_bound = 0.0;
        let mut prev_count = 0.0;
        for (bound, count) in buckets {
            if count >= rank {
                let v = if bound.is_infinite() {
                    prev_bound
                } else if count > prev_count {
                    prev_bound + (bound - prev_bound) * (rank - prev_count) / (count - prev_count)
                } else {
                    bound
                };
                out.insert(key.clone(), v);
                break;
            }
            prev_bound = bound;
            prev_count = count;
        }
    }
    out
}

fn ms(v: Option<&f64>) -> String {
    match v {
        Some(s) => format!("{:.2} ms", s * 1000.0),
        None => "–".into(),
    }
}

/// The rates between two samples as printable lines.
fn report(a: &Series, b: &Series, dt: f64) -> Vec<String> {
    let mut lines = Vec::new();
    let per_sec = |v: f64| v / dt;
    let calls = deltas(a, b, "quarry_rpc_server_seconds_count", "method");
    let p50 = quantiles(a, b, "quarry_rpc_server_seconds", "method", 0.5);
    let p99 = quantiles(a, b, "quarry_rpc_server_seconds", "method", 0.99);
    let rin = deltas(a, b, "quarry_rpc_server_received_bytes_total", "method");
    let rout = deltas(a, b, "quarry_rpc_server_sent_bytes_total", "method");
    let busy: Vec<_> = calls.iter().filter(|(_, v)| **v > 0.0).collect();
    lines.push(format!(
        "{:<22} {:>10} {:>11} {:>11} {:>12} {:>12}",
        "RPC (server side)", "calls/s", "p50", "p99", "in/s", "out/s"
    ));
    if busy.is_empty() {
        lines.push("  (no RPCs served in this interval)".into());
    }
    for (method, n) in busy {
        lines.push(format!(
            "{:<22} {:>10.1} {:>11} {:>11} {:>12} {:>12}",
            method,
            per_sec(*n),
            ms(p50.get(method)),
            ms(p99.get(method)),
            human_bytes(per_sec(rin.get(method).copied().unwrap_or(0.0)) as u64) + "/s",
            human_bytes(per_sec(rout.get(method).copied().unwrap_or(0.0)) as u64) + "/s",
        ));
    }
    let read = deltas(a, b, "quarry_chunkserver_read_bytes_total", "node");
    let written = deltas(a, b, "quarry_chunkserver_written_bytes_total", "node");
    if !read.is_empty() || !written.is_empty() {
        lines.push(String::new());
        lines.push(format!(
            "{:<22} {:>14} {:>14}",
            "CHUNKSERVER", "read/s", "written/s"
        ));
        let nodes: std::collections::BTreeSet<&String> =
            read.keys().chain(written.keys()).collect();
        for node in nodes {
            lines.push(format!(
                "{:<22} {:>14} {:>14}",
                node,
                human_bytes(per_sec(read.get(node).copied().unwrap_or(0.0)) as u64) + "/s",
                human_bytes(per_sec(written.get(node).copied().unwrap_or(0.0)) as u64) + "/s",
            ));
        }
    }
    let fuse = deltas(a, b, "quarry_fuse_ops_total", "op");
    if !fuse.is_empty() {
        let fr = deltas(a, b, "quarry_fuse_read_bytes_total", "");
        let fw = deltas(a, b, "quarry_fuse_written_bytes_total", "");
        let f50 = quantiles(a, b, "quarry_fuse_op_seconds", "op", 0.5);
        let f99 = quantiles(a, b, "quarry_fuse_op_seconds", "op", 0.99);
        lines.push(String::new());
        lines.push(format!(
            "FUSE: read {}/s, written {}/s",
            human_bytes(per_sec(fr.values().sum()) as u64),
            human_bytes(per_sec(fw.values().sum()) as u64)
        ));
        let busy: Vec<_> = fuse.iter().filter(|(_, v)| **v > 0.0).collect();
        if !busy.is_empty() {
            lines.push(format!(
                "{:<22} {:>10} {:>11} {:>11}",
                "FUSE op", "ops/s", "p50", "p99"
            ));
        }
        for (op, n) in busy {
            lines.push(format!(
                "{:<22} {:>10.1} {:>11} {:>11}",
                op,
                per_sec(*n),
                ms(f50.get(op)),
                ms(f99.get(op))
            ));
        }
    }
    lines
}

pub async fn run(endpoints: &[String], watch: bool) -> anyhow::Result<()> {
    let urls: Vec<String> = endpoints.iter().map(|e| metrics_url(e)).collect();
    let (mut at, mut prev, failed) = sample(&urls).await;
    for f in &failed {
        eprintln!("quarry stats: {f}");
    }
    anyhow::ensure!(
        failed.len() < urls.len(),
        "no endpoint answered ({} tried)",
        urls.len()
    );
    let stop = crate::up::shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return Ok(()),
            _ = tokio::time::sleep_until((at + Duration::from_secs(1)).into()) => {}
        }
        let (now, next, failed) = sample(&urls).await;
        for f in &failed {
            eprintln!("quarry stats: {f}");
        }
        let dt = now.duration_since(at).as_secs_f64().max(1e-3);
        if watch {
            println!(
                "--- {} endpoint(s), over {:.2} s ---",
                urls.len() - failed.len(),
                dt
            );
        }
        for line in report(&prev, &next, dt) {
            println!("{line}");
        }
        if !watch {
            return Ok(());
        }
        println!();
        at = now;
        prev = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(text: &str) -> Series {
        parse(text)
            .unwrap()
            .samples
            .into_iter()
            .map(|mut s| {
                s.labels.sort();
                ((s.name, s.labels), s.value)
            })
            .collect()
    }

    #[test]
    fn urls() {
        assert_eq!(metrics_url("127.0.0.1:9"), "http://127.0.0.1:9/metrics");
        assert_eq!(metrics_url("http://h:1/"), "http://h:1/metrics");
        assert_eq!(metrics_url("http://h:1/metrics"), "http://h:1/metrics");
    }

    #[test]
    fn rates_and_quantiles_come_from_the_increase_between_samples() {
        let a = series(
            "# TYPE quarry_rpc_server_seconds histogram
quarry_rpc_server_seconds_bucket{method=\"Lookup\",node=\"m\",le=\"0.001\"} 100
quarry_rpc_server_seconds_bucket{method=\"Lookup\",node=\"m\",le=\"0.01\"} 100
quarry_rpc_server_seconds_bucket{method=\"Lookup\",node=\"m\",le=\"+Inf\"} 100
quarry_rpc_server_seconds_sum{method=\"Lookup\",node=\"m\"} 0.05
quarry_rpc_server_seconds_count{method=\"Lookup\",node=\"m\"} 100
",
        );
        // 100 more calls: 50 at ≤ 1 ms, 49 in (1, 10] ms, 1 above 10 ms.
        let b = series(
            "# TYPE quarry_rpc_server_seconds histogram
quarry_rpc_server_seconds_bucket{method=\"Lookup\",node=\"m\",le=\"0.001\"} 150
quarry_rpc_server_seconds_bucket{method=\"Lookup\",node=\"m\",le=\"0.01\"} 199
quarry_rpc_server_seconds_bucket{method=\"Lookup\",node=\"m\",le=\"+Inf\"} 200
quarry_rpc_server_seconds_sum{method=\"Lookup\",node=\"m\"} 1
quarry_rpc_server_seconds_count{method=\"Lookup\",node=\"m\"} 200
",
        );
        let calls = deltas(&a, &b, "quarry_rpc_server_seconds_count", "method");
        assert_eq!(calls["Lookup"], 100.0);
        let p50 = quantiles(&a, &b, "quarry_rpc_server_seconds", "method", 0.5);
        assert!((p50["Lookup"] - 0.001).abs() < 1e-9, "{p50:?}");
        let p99 = quantiles(&a, &b, "quarry_rpc_server_seconds", "method", 0.99);
        assert!((p99["Lookup"] - 0.01).abs() < 1e-9, "{p99:?}");
        let lines = report(&a, &b, 2.0);
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("Lookup") && l.contains("50.0")),
            "{lines:?}"
        );
        // No movement: no quantile at all, and the report says so.
        assert!(quantiles(&b, &b, "quarry_rpc_server_seconds", "method", 0.5).is_empty());
        assert!(report(&b, &b, 1.0).iter().any(|l| l.contains("no RPCs")));
    }
}
