//! The HTTP endpoints on real clusters: `/metrics` read back with the strict exposition parser
//! (`quarry_transport::metrics::parse`: every line a comment, blank or `name{labels} value`,
//! histogram buckets ascending and monotone, `+Inf` equal to `_count`), its numbers checked
//! against what the test did; `/api/status` against the cluster's own `ClusterStatus`; and the
//! status page rendered by headless Chromium (a screenshot and the DOM), which must show the
//! real cluster's numbers. Under `CI=true` a missing `/usr/bin/chromium` fails the test.

use bytes::Bytes;
use quarry_cli::http::{get, StatusJson};
use quarry_client::Client;
use quarry_mapred::worker::write_file;
use quarry_proto::job::{AppSpec, GetJob, JobSpec, JobState, SubmitJob};
use quarry_proto::OpId;
use quarry_tests::{pattern, read_whole, run_cli, wait_for, Cluster, Options, ProcCluster};
use quarry_transport::metrics::{parse, Exposition, Kind};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

const CHUNK: u64 = 64 << 10;

/// Write files of these sizes under /data; returns the number of chunks they take.
async fn write_files(client: &Client, sizes: &[usize]) -> u64 {
    client.mkdir_p("/data", 0o755).await.unwrap();
    let mut chunks = 0;
    for (i, size) in sizes.iter().enumerate() {
        let text: Vec<u8> = pattern(i as u64, *size)
            .into_iter()
            .map(|b| if b % 7 == 0 { b' ' } else { b'a' + b % 26 })
            .collect();
        write_file(client, &format!("/data/f{i}"), Bytes::from(text))
            .await
            .unwrap();
        chunks += (*size as u64).div_ceil(CHUNK);
    }
    chunks
}

async fn fetch(url: &str) -> (u16, String) {
    get(url, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
}

async fn metrics_of(addr: SocketAddr) -> Exposition {
    let (code, text) = fetch(&format!("http://{addr}/metrics")).await;
    assert_eq!(code, 200, "{text}");
    let exp = parse(&text).unwrap_or_else(|e| panic!("/metrics of {addr} is malformed: {e}"));
    // Every family has its help text, and every sample belongs to a typed family.
    for name in exp.types.keys() {
        assert!(exp.help.contains_key(name), "{name} has no HELP");
    }
    exp
}

async fn api_status(addr: SocketAddr) -> StatusJson {
    let (code, text) = fetch(&format!("http://{addr}/api/status")).await;
    assert_eq!(code, 200, "{text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The value of the one sample `name` whose labels include all of `labels`.
fn value(exp: &Exposition, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let hits: Vec<f64> = exp
        .named(name)
        .filter(|s| labels.iter().all(|(k, v)| s.label(k) == Some(*v)))
        .map(|s| s.value)
        .collect();
    assert!(hits.len() <= 1, "{name}{labels:?} is not one series");
    hits.first().copied()
}

fn sum(exp: &Exposition, name: &str) -> f64 {
    exp.named(name).map(|s| s.value).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_and_status_json_of_an_in_process_cluster() {
    // The chunk gauges count the last full report: one a second, not the default 30 s (the
    // wait below would race the second report).
    let cluster = Cluster::start(Options::default().chunk_size(CHUNK).full_report_ms(1_000)).await;
    let client = cluster.client().await;
    let sizes = [200 << 10, 100 << 10, 10 << 10];
    let chunks = write_files(&client, &sizes).await;
    assert_eq!(chunks, 4 + 2 + 1);
    let back = read_whole(&client, "/data/f0").await;
    assert_eq!(back.len(), sizes[0]);
    let http = cluster.serve_http().await;
    let addr = http.addr();

    let exp = wait_for(
        "/metrics to show the chunks and their replicas",
        Duration::from_secs(30),
        || async {
            let exp = metrics_of(addr).await;
            let table = value(&exp, "quarry_master_chunks", &[("node", "master-0")])?;
            let reports = sum(&exp, "quarry_chunkserver_chunks");
            (table == chunks as f64 && reports == 3.0 * chunks as f64).then_some(exp)
        },
    )
    .await;
    assert_eq!(exp.types["quarry_rpc_server_seconds"], Kind::Histogram);
    assert_eq!(
        exp.types["quarry_chunkserver_written_bytes_total"],
        Kind::Counter
    );
    // Every byte written landed on three replicas; the read came from one.
    let written: u64 = sizes.iter().map(|s| *s as u64).sum();
    assert!(sum(&exp, "quarry_chunkserver_written_bytes_total") >= 3.0 * written as f64);
    assert!(sum(&exp, "quarry_chunkserver_read_bytes_total") >= sizes[0] as f64);
    for i in 0..3 {
        let node = format!("chunkserver-{i}");
        let cap = value(
            &exp,
            "quarry_chunkserver_capacity_bytes",
            &[("node", &node)],
        )
        .unwrap();
        assert!(cap > 0.0, "{node} reports no disk");
    }
    // The server side of the RPCs the test caused, on the nodes that served them.
    let grants = value(
        &exp,
        "quarry_rpc_server_seconds_count",
        &[("node", "master-0"), ("method", "PrepareWrite")],
    )
    .unwrap();
    assert!(grants >= 3.0, "{grants} write grants");
    let commits: f64 = exp
        .named("quarry_rpc_server_seconds_count")
        .filter(|s| s.label("method") == Some("CommitMutation"))
        .map(|s| s.value)
        .sum();
    assert!(
        commits >= chunks as f64,
        "{commits} commits for {chunks} chunks"
    );
    let heartbeats = value(
        &exp,
        "quarry_rpc_server_received_bytes_total",
        &[("node", "master-0"), ("method", "Heartbeat")],
    )
    .unwrap();
    assert!(heartbeats > 0.0);
    assert_eq!(
        value(
            &exp,
            "quarry_master_under_replicated_chunks",
            &[("node", "master-0")]
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &exp,
            "quarry_master_chunkservers_live",
            &[("node", "master-0")]
        ),
        Some(3.0)
    );
    // A single master has no Raft gauges.
    assert_eq!(exp.named("quarry_master_raft_term").count(), 0);
    assert!(exp.types.contains_key("quarry_mapred_jobs"));

    let st = wait_for("a healthy /api/status", Duration::from_secs(30), || async {
        let st = api_status(addr).await;
        (st.health == "HEALTHY").then_some(st)
    })
    .await;
    let truth = client.cluster_status().await.unwrap();
    assert_eq!(st.chunkservers.len(), 3);
    assert_eq!(st.chunks.total, chunks);
    assert_eq!(st.chunks.total, truth.masters[0].chunks);
    assert_eq!(st.namespace.files, 3);
    assert_eq!(st.masters.len(), 1);
    assert_eq!(st.served_by.role, "leader");
    let mut ids: Vec<u64> = st.chunkservers.iter().map(|c| c.id).collect();
    let mut truth_ids: Vec<u64> = truth.chunkservers.iter().map(|c| c.id.0).collect();
    ids.sort();
    truth_ids.sort();
    assert_eq!(ids, truth_ids);
    // The throughput columns fill in once two samples a second apart exist.
    wait_for("chunkserver rates", Duration::from_secs(10), || async {
        let st = api_status(addr).await;
        st.chunkservers
            .iter()
            .all(|c| c.read_bytes_per_sec.is_some() && c.written_bytes_per_sec.is_some())
            .then_some(())
    })
    .await;

    let (code, _) = fetch(&format!("http://{addr}/no-such-page")).await;
    assert_eq!(code, 404);
    drop(http);
    cluster.shutdown().await;
}

/// Run chromium with a deadline; its exit status and stdout.
fn chromium(args: &[String]) -> (bool, Vec<u8>) {
    let mut child = std::process::Command::new("/usr/bin/chromium")
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starting /usr/bin/chromium");
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = std::io::Read::read_to_end(&mut { stdout }, &mut out);
        out
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 120 s: {args:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    (status.success(), reader.join().unwrap())
}

fn chromium_args(profile: &Path, extra: &[String], url: &str) -> Vec<String> {
    let mut args: Vec<String> = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(format!("--user-data-dir={}", profile.display()));
    args.extend_from_slice(extra);
    args.push(url.to_string());
    args
}

/// Width and height from a PNG's IHDR, if `bytes` is a PNG.
fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    if bytes.len() < 24 || &bytes[..8] != b"\x89PNG\r\n\x1a\n" || &bytes[12..16] != b"IHDR" {
        return None;
    }
    let w = u32::from_be_bytes(bytes[16..20].try_into().ok()?);
    let h = u32::from_be_bytes(bytes[20..24].try_into().ok()?);
    Some((w, h))
}

async fn submit_wordcount(client: &Client, output: &str) {
    let id = client
        .rpc_master(&SubmitJob {
            op: OpId {
                client: client.client_id(),
                seq: 5_000_000,
            },
            spec: JobSpec {
                app: AppSpec::WordCount,
                inputs: vec!["/data".into()],
                output: output.into(),
                reducers: 2,
            },
        })
        .await
        .unwrap();
    wait_for("the job to succeed", Duration::from_secs(120), || async {
        let s = client.rpc_master(&GetJob { job: id }).await.ok()?;
        match s.state {
            JobState::Succeeded => Some(()),
            JobState::Failed(e) => panic!("job failed: {e}"),
            JobState::Running => None,
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_page_of_a_raft_cluster_in_chromium() {
    let have_chromium = Path::new("/usr/bin/chromium").exists();
    if !have_chromium && std::env::var("CI").as_deref() == Ok("true") {
        panic!("/usr/bin/chromium is missing under CI=true: scripts/setup.sh installs it");
    }
    let cluster = ProcCluster::start(Options::default().masters(3).chunk_size(CHUNK)).await;
    let client = cluster.client().await;
    write_files(&client, &[300 << 10, 64 << 10, 5 << 10]).await;
    submit_wordcount(&client, "/out").await;
    let (leader, term) = wait_for("a leader", Duration::from_secs(30), || async {
        cluster.leader(&client).await
    })
    .await;
    assert!(term >= 1);
    let leader_http = cluster.master_http[leader];
    let follower = (leader + 1) % 3;

    // The leader's page agrees with ClusterStatus once every report is in.
    let (st, truth) = wait_for(
        "/api/status to agree with ClusterStatus",
        Duration::from_secs(30),
        || async {
            let truth = client.cluster_status().await.ok()?;
            let st = api_status(leader_http).await;
            let chunks = truth.masters.iter().find(|m| m.role == "leader")?.chunks;
            let replicas: u64 = st.chunkservers.iter().map(|c| c.chunks).sum();
            (st.health == "HEALTHY" && st.chunks.total == chunks && replicas == 3 * chunks)
                .then_some((st, truth))
        },
    )
    .await;
    assert_eq!(st.served_by.role, "leader");
    assert_eq!(st.served_by.term, term);
    assert_eq!(st.masters.len(), 3);
    assert_eq!(st.chunkservers.iter().filter(|c| c.alive).count(), 3);
    assert_eq!(
        st.leader.as_deref(),
        Some(cluster.master_addrs[leader].to_string().as_str())
    );
    assert!(st.jobs_here);
    assert_eq!(st.jobs.len(), 1);
    assert_eq!(st.jobs[0].state, "succeeded");
    assert_eq!(st.jobs[0].progress, 1.0);
    assert_eq!(st.jobs[0].maps_total, 5 + 1 + 1);
    let chunks = st.chunks.total;
    assert_eq!(truth.chunkservers.len(), 3);

    // A follower's page shows the same cluster, asked of the leader.
    let fst = api_status(cluster.master_http[follower]).await;
    assert_eq!(fst.served_by.role, "follower");
    assert_eq!(fst.served_by.term, term);
    assert_eq!(fst.chunks.total, chunks);
    assert_eq!(fst.leader, st.leader);
    assert!(!fst.jobs_here);

    // /metrics of every process, strictly parsed.
    let mut leaders = 0;
    for (i, addr) in cluster.master_http.iter().enumerate() {
        let exp = metrics_of(*addr).await;
        let node = format!("master-{}", i + 1);
        let is_leader = value(
            &exp,
            "quarry_master_raft_role",
            &[("node", &node), ("role", "leader")],
        );
        if is_leader == Some(1.0) {
            leaders += 1;
            assert_eq!(i, leader);
            assert_eq!(
                value(&exp, "quarry_master_raft_term", &[("node", &node)]),
                Some(term as f64)
            );
            assert_eq!(
                value(&exp, "quarry_master_chunks", &[("node", &node)]),
                Some(chunks as f64)
            );
            assert_eq!(
                value(
                    &exp,
                    "quarry_mapred_jobs",
                    &[("node", &node), ("state", "succeeded")]
                ),
                Some(1.0)
            );
        } else {
            // Followers export no chunk health (they hear no heartbeats).
            assert_eq!(exp.named("quarry_master_repair_queue").count(), 0);
        }
        let commit = value(&exp, "quarry_master_raft_commit_index", &[("node", &node)]).unwrap();
        assert!(commit >= 1.0);
    }
    assert_eq!(leaders, 1);
    for (i, addr) in cluster.chunkserver_http.iter().enumerate() {
        let exp = metrics_of(*addr).await;
        let node = format!("chunkserver-{i}");
        let written = value(
            &exp,
            "quarry_chunkserver_written_bytes_total",
            &[("node", &node)],
        )
        .unwrap();
        assert!(written > 0.0, "{node} wrote nothing");
        let maps = value(
            &exp,
            "quarry_mapred_worker_attempts_total",
            &[("node", &node), ("kind", "map")],
        );
        assert!(maps.is_some(), "{node} exports no worker attempts");
    }

    // The CLI points at the page, and reads rates from every endpoint.
    let (ok, out, err) = run_cli(&cluster.cluster_file, &["status"]);
    let out = String::from_utf8_lossy(&out).into_owned();
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("status page: http://{leader_http}/")),
        "{out}"
    );
    let (ok, out, err) = run_cli(&cluster.cluster_file, &["stats"]);
    let out = String::from_utf8_lossy(&out).into_owned();
    assert!(ok, "{err}");
    assert!(out.contains("RPC (server side)"), "{out}");
    assert!(
        out.contains("Heartbeat"),
        "heartbeats flow every 200 ms: {out}"
    );
    assert!(out.contains("chunkserver-2"), "{out}");

    if !have_chromium {
        eprintln!("SKIPPED the browser half: /usr/bin/chromium is missing (scripts/setup.sh)");
        return;
    }
    let url = format!("http://{leader_http}/");
    let tmp = tempfile::tempdir().unwrap();
    let shot = tmp.path().join("page.png");
    let (ok, _) = chromium(&chromium_args(
        &tmp.path().join("profile-1"),
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1280,2000".into(),
        ],
        &url,
    ));
    assert!(ok, "chromium --screenshot failed");
    let png = std::fs::read(&shot).expect("chromium wrote no screenshot");
    assert_eq!(png_size(&png), Some((1280, 2000)), "not a 1280x2000 PNG");
    // A blank page of that size compresses to a few KiB; tables and text do not.
    assert!(
        png.len() > 20_000,
        "screenshot of {} bytes looks blank",
        png.len()
    );
    let keep = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    std::fs::copy(&shot, &keep).unwrap();
    eprintln!("screenshot: {}", keep.display());

    let (ok, dom) = chromium(&chromium_args(
        &tmp.path().join("profile-2"),
        &["--dump-dom".into()],
        &url,
    ));
    assert!(ok, "chromium --dump-dom failed");
    let dom = String::from_utf8_lossy(&dom);
    for want in [
        "id=\"health\">HEALTHY<".to_string(),
        "id=\"chunkservers-live\">3 / 3<".to_string(),
        format!("id=\"chunks-total\">{chunks}<"),
        format!("<td class=\"up\">leader</td><td class=\"n\">{term}</td>"),
        format!("(leader, term {term})"),
        "wordcount".to_string(),
    ] {
        assert!(
            dom.contains(&want),
            "the rendered page lacks {want:?}:\n{dom}"
        );
    }
}
