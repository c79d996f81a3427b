//! The HTTP endpoints of a node (axum, plain HTTP/1.1 meant for a trusted network or loopback):
//! `/metrics` on every node (the process's metrics registry in the Prometheus text format),
//! and on masters the status page `/` (server-rendered HTML, refreshed by the browser every
//! 5 s, no JavaScript) and `/api/status` (the same facts as JSON, [`StatusJson`]).
//!
//! A follower master's page shows the cluster as the leader reports it (asked over RPC with
//! `ClusterStatus`), its own Raft line, and no jobs (the coordinator runs on the leader).
//! Also here: [`get`], a minimal HTTP/1.1 GET client, for `quarry stats` and the tests.

use anyhow::Context;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get as route_get;
use quarry_mapred::coordinator::Coordinator;
use quarry_master::Master;
use quarry_proto::job::{JobState, JobStatus};
use quarry_proto::master::{ChunkserverStatus, ClusterStatus, ClusterStatusReply, MasterStatus};
use quarry_proto::{FsError, NodeId, Timestamp};
use quarry_transport::{metrics, RpcClient};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The content type of the Prometheus text format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A running HTTP listener; stops when dropped or stopped.
pub struct HttpServer {
    addr: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl HttpServer {
    /// The bound address (the real port when bound to port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    pub fn stop(self) {}
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn listen(bind: SocketAddr, app: axum::Router) -> anyhow::Result<HttpServer> {
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("binding the HTTP listener on {bind}"))?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("HTTP server on {addr} stopped: {e}");
        }
    });
    Ok(HttpServer {
        addr,
        tasks: vec![task],
    })
}

async fn metrics_handler() -> Response {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        metrics::global().encode(),
    )
        .into_response()
}

/// Serve `/metrics` only (chunkservers and mounts).
pub async fn serve_metrics(bind: SocketAddr) -> anyhow::Result<HttpServer> {
    let app = axum::Router::new().route("/metrics", route_get(metrics_handler));
    listen(bind, app).await
}

/// Per chunkserver: the last sample of its byte counters and the rates between the last two.
#[derive(Clone, Copy)]
struct Rate {
    at: Instant,
    read: u64,
    written: u64,
    read_per_sec: Option<f64>,
    written_per_sec: Option<f64>,
}

struct MasterState {
    master: Master,
    coordinator: Coordinator,
    rpc: RpcClient,
    rates: Mutex<HashMap<NodeId, Rate>>,
}

/// Serve `/metrics`, the status page `/` and `/api/status` for a master (with the job
/// coordinator it hosts). `rpc` asks the leader when this master is a follower.
pub async fn serve_master(
    bind: SocketAddr,
    master: Master,
    coordinator: Coordinator,
    rpc: RpcClient,
) -> anyhow::Result<HttpServer> {
    let state = Arc::new(MasterState {
        master,
        coordinator,
        rpc: rpc.with_timeout(Duration::from_secs(2)),
        rates: Mutex::new(HashMap::new()),
    });
    let app = axum::Router::new()
        .route("/metrics", route_get(metrics_handler))
        .route("/", route_get(page_handler))
        .route("/api/status", route_get(api_handler))
        .with_state(state.clone());
    let mut server = listen(bind, app).await?;
    // Sample the chunkservers' byte counters every second for the throughput columns.
    let weak = Arc::downgrade(&state);
    drop(state);
    server.tasks.push(tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let Some(state) = weak.upgrade() else { return };
            state.sample(&state.master.chunkservers_status());
        }
    }));
    Ok(server)
}

impl MasterState {
    fn sample(&self, servers: &[ChunkserverStatus]) {
        let now = Instant::now();
        let mut rates = self.rates.lock().unwrap();
        for c in servers {
            let next = match rates.get(&c.id) {
                Some(prev) if now.duration_since(prev.at) >= Duration::from_millis(500) => {
                    let dt = now.duration_since(prev.at).as_secs_f64();
                    Rate {
                        at: now,
                        read: c.bytes_read,
                        written: c.bytes_written,
                        // A restarted server starts its counters over: no rate across that.
                        read_per_sec: c.bytes_read.checked_sub(prev.read).map(|d| d as f64 / dt),
                        written_per_sec: c
                            .bytes_written
                            .checked_sub(prev.written)
                            .map(|d| d as f64 / dt),
                    }
                }
                Some(prev) => *prev,
                None => Rate {
                    at: now,
                    read: c.bytes_read,
                    written: c.bytes_written,
                    read_per_sec: None,
                    written_per_sec: None,
                },
            };
            rates.insert(c.id, next);
        }
    }

    /// The cluster status from this master if it serves, else from the leader it names.
    async fn cluster_status(&self) -> Result<ClusterStatusReply, FsError> {
        match self.master.cluster_status().await {
            Ok(s) => Ok(s),
            Err(FsError::NotLeader { hint: Some(leader) }) => {
                self.rpc.call(&leader, &ClusterStatus {}).await
            }
            Err(e) => Err(e),
        }
    }

    async fn status(&self) -> StatusJson {
        let me = self.master.self_status();
        let serving = self.master.is_leader();
        let reply = self.cluster_status().await;
        let jobs: Vec<JobJson> = if serving {
            self.coordinator
                .jobs()
                .iter()
                .rev()
                .map(JobJson::from)
                .collect()
        } else {
            vec![]
        };
        let reply = match reply {
            Ok(r) => r,
            Err(e) => {
                return StatusJson {
                    health: "UNAVAILABLE".into(),
                    problems: vec![format!("no cluster status: {e}")],
                    served_by: me.clone(),
                    leader: None,
                    masters: vec![me],
                    chunkservers: vec![],
                    chunks: ChunksJson::default(),
                    namespace: NamespaceJson::default(),
                    jobs,
                    jobs_here: serving,
                    generated: Timestamp::now().secs,
                }
            }
        };
        let rates = self.rates.lock().unwrap().clone();
        StatusJson::build(me, reply, &rates, jobs, serving)
    }
}

/// What `/api/status` answers (and the page shows).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusJson {
    /// HEALTHY, DEGRADED (under-replicated or corrupt chunks, a chunkserver or master down),
    /// CRITICAL (chunks with no live replica, or no live chunkserver) or UNAVAILABLE (no status).
    pub health: String,
    /// Why the health is not HEALTHY, one line each.
    pub problems: Vec<String>,
    /// The master that rendered this page.
    pub served_by: MasterStatus,
    /// The leader's address (the master the status came from).
    pub leader: Option<String>,
    pub masters: Vec<MasterStatus>,
    pub chunkservers: Vec<ChunkserverJson>,
    pub chunks: ChunksJson,
    pub namespace: NamespaceJson,
    /// Jobs, newest first (only on the master running the coordinator: see `jobs_here`).
    pub jobs: Vec<JobJson>,
    pub jobs_here: bool,
    /// Seconds since the Unix epoch.
    pub generated: i64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ChunkserverJson {
    pub id: u64,
    pub addr: String,
    pub alive: bool,
    pub capacity_bytes: u64,
    pub used_bytes: u64,
    pub chunks: u64,
    pub last_heartbeat_ms_ago: u64,
    pub active_requests: u32,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Over the last second or so (None until two samples exist).
    pub read_bytes_per_sec: Option<f64>,
    pub written_bytes_per_sec: Option<f64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ChunksJson {
    pub total: u64,
    pub chunk_size: u64,
    pub replication: u32,
    pub under_replicated: u64,
    pub missing: u64,
    pub over_replicated: u64,
    pub corrupt_reports: u64,
    pub repair_queue: u64,
    pub clones_in_flight: u64,
    pub clones_done: u64,
    pub clones_failed: u64,
    pub cloned_bytes: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NamespaceJson {
    pub files: u64,
    pub directories: u64,
    pub trash_files: u64,
    pub trash_bytes: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobJson {
    pub id: u64,
    pub app: String,
    pub inputs: Vec<String>,
    pub output: String,
    /// running, succeeded or failed.
    pub state: String,
    pub error: Option<String>,
    pub maps_done: u32,
    pub maps_running: u32,
    pub maps_total: u32,
    pub reduces_done: u32,
    pub reduces_running: u32,
    pub reduces_total: u32,
    /// Finished tasks over all tasks, 0 to 1.
    pub progress: f64,
    pub input_bytes: u64,
    pub output_bytes: u64,
    pub failed_attempts: u64,
    pub submitted: i64,
    pub finished: Option<i64>,
}

impl From<&JobStatus> for JobJson {
    fn from(j: &JobStatus) -> JobJson {
        let (state, error) = match &j.state {
            JobState::Running => ("running", None),
            JobState::Succeeded => ("succeeded", None),
            JobState::Failed(e) => ("failed", Some(e.clone())),
        };
        let total = j.maps.total as u64 + j.reduces.total as u64;
        let done = j.maps.done as u64 + j.reduces.done as u64;
        JobJson {
            id: j.id.0,
            app: j.spec.app.name().into(),
            inputs: j.spec.inputs.clone(),
            output: j.spec.output.clone(),
            state: state.into(),
            error,
            maps_done: j.maps.done,
            maps_running: j.maps.running,
            maps_total: j.maps.total,
            reduces_done: j.reduces.done,
            reduces_running: j.reduces.running,
            reduces_total: j.reduces.total,
            progress: if total == 0 {
                1.0
            } else {
                done as f64 / total as f64
            },
            input_bytes: j.counters.input_bytes,
            output_bytes: j.counters.output_bytes,
            failed_attempts: j.counters.failed_attempts,
            submitted: j.submitted.secs,
            finished: j.finished.map(|t| t.secs),
        }
    }
}

impl StatusJson {
    fn build(
        me: MasterStatus,
        s: ClusterStatusReply,
        rates: &HashMap<NodeId, Rate>,
        jobs: Vec<JobJson>,
        jobs_here: bool,
    ) -> StatusJson {
        let leader = s.masters.iter().find(|m| m.role == "leader").cloned();
        let mut problems = Vec::new();
        let live = s.chunkservers.iter().filter(|c| c.alive).count();
        let mut critical = false;
        if s.missing_chunks > 0 {
            critical = true;
            problems.push(format!("{} chunks have no live replica", s.missing_chunks));
        }
        if live == 0 {
            critical = true;
            problems.push("no live chunkserver".into());
        }
        if s.under_replicated_chunks > 0 {
            problems.push(format!(
                "{} chunks are under-replicated ({} waiting for a clone)",
                s.under_replicated_chunks, s.repair_queue
            ));
        }
        let down = s.chunkservers.len() - live;
        if down > 0 && live > 0 {
            problems.push(format!("{down} chunkserver(s) down"));
        }
        for m in s.masters.iter().filter(|m| m.role == "unreachable") {
            problems.push(format!("master {} is unreachable", m.addr));
        }
        let health = if critical {
            "CRITICAL"
        } else if problems.is_empty() {
            "HEALTHY"
        } else {
            "DEGRADED"
        };
        let counts = leader.clone().unwrap_or_else(|| me.clone());
        let chunkservers = s
            .chunkservers
            .iter()
            .map(|c| {
                let r = rates.get(&c.id);
                ChunkserverJson {
                    id: c.id.0,
                    addr: c.addr.clone(),
                    alive: c.alive,
                    capacity_bytes: c.capacity_bytes,
                    used_bytes: c.used_bytes,
                    chunks: c.chunks,
                    last_heartbeat_ms_ago: c.last_heartbeat_ms_ago,
                    active_requests: c.active_requests,
                    bytes_read: c.bytes_read,
                    bytes_written: c.bytes_written,
                    read_bytes_per_sec: r.and_then(|r| r.read_per_sec),
                    written_bytes_per_sec: r.and_then(|r| r.written_per_sec),
                }
            })
            .collect();
        StatusJson {
            health: health.into(),
            problems,
            served_by: me,
            leader: leader.map(|l| l.addr),
            chunks: ChunksJson {
                total: counts.chunks,
                chunk_size: s.chunk_size,
                replication: s.replication,
                under_replicated: s.under_replicated_chunks,
                missing: s.missing_chunks,
                over_replicated: s.over_replicated_chunks,
                corrupt_reports: s.corrupt_reports,
                repair_queue: s.repair_queue,
                clones_in_flight: s.clones_in_flight,
                clones_done: s.clones_done,
                clones_failed: s.clones_failed,
                cloned_bytes: s.cloned_bytes,
            },
            namespace: NamespaceJson {
                files: counts.files,
                directories: counts.directories,
                trash_files: counts.trash_files,
                trash_bytes: counts.trash_bytes,
            },
            masters: s.masters,
            chunkservers,
            jobs,
            jobs_here,
            generated: Timestamp::now().secs,
        }
    }
}

async fn api_handler(State(state): State<Arc<MasterState>>) -> Response {
    let s = state.status().await;
    let code = if s.health == "UNAVAILABLE" {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, axum::Json(s)).into_response()
}

async fn page_handler(State(state): State<Arc<MasterState>>) -> Html<String> {
    Html(render_page(&state.status().await))
}

/// `1.5 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn rate_text(r: Option<f64>) -> String {
    match r {
        Some(v) => format!("{}/s", human_bytes(v.max(0.0) as u64)),
        None => "–".into(),
    }
}

/// Text safe inside HTML elements and attribute values.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn ago(secs: i64, now: i64) -> String {
    let d = (now - secs).max(0);
    match d {
        0..=59 => format!("{d} s ago"),
        60..=3599 => format!("{} min ago", d / 60),
        3600..=86_399 => format!("{} h ago", d / 3600),
        _ => format!("{} d ago", d / 86_400),
    }
}

const STYLE: &str = "
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;background:#f4f6f8;color:#1d2733}
header{background:#1f3b57;color:#fff;padding:18px 32px;display:flex;align-items:center;gap:24px}
header h1{margin:0;font-size:24px;letter-spacing:.5px}
header .sub{opacity:.8;font-size:14px}
main{padding:20px 32px;max-width:1240px}
.badge{display:inline-block;padding:6px 14px;border-radius:16px;font-weight:700;font-size:15px}
.HEALTHY{background:#2e9d5b;color:#fff}.DEGRADED{background:#e0a31b;color:#1d2733}
.CRITICAL,.UNAVAILABLE{background:#c8382c;color:#fff}
.cards{display:grid;grid-template-columns:repeat(6,1fr);gap:12px;margin:16px 0}
.card{background:#fff;border-radius:8px;padding:12px 14px;box-shadow:0 1px 3px rgba(0,0,0,.08)}
.card .v{font-size:22px;font-weight:700;white-space:nowrap}.card .k{font-size:12px;color:#5b6b7b;text-transform:uppercase;letter-spacing:.4px}
.card.warn .v{color:#b7791f}.card.bad .v{color:#c8382c}
section{background:#fff;border-radius:8px;padding:14px 18px;margin:14px 0;box-shadow:0 1px 3px rgba(0,0,0,.08)}
h2{font-size:17px;margin:0 0 10px}
table{border-collapse:collapse;width:100%;font-size:14px}
th{text-align:left;color:#5b6b7b;font-weight:600;border-bottom:2px solid #e3e8ee;padding:6px 8px}
td{border-bottom:1px solid #eef1f4;padding:6px 8px;font-variant-numeric:tabular-nums}
td.n,th.n{text-align:right}
.up{color:#2e9d5b;font-weight:600}.down{color:#c8382c;font-weight:700}
.bar{background:#e3e8ee;border-radius:4px;height:10px;width:140px;display:inline-block;vertical-align:middle}
.bar>span{display:block;height:10px;border-radius:4px;background:#3b7dd8}
.problems{margin:6px 0 0;padding-left:20px;color:#8a4b08}
.muted{color:#7a8896;font-size:13px}
footer{padding:8px 32px 24px;color:#7a8896;font-size:12px}
";

fn bar(fraction: f64) -> String {
    let pct = (fraction.clamp(0.0, 1.0) * 100.0).round();
    format!("<span class=\"bar\"><span style=\"width:{pct}%\"></span></span> {pct}%")
}

/// The status page as HTML (everything escaped; no scripts).
pub fn render_page(s: &StatusJson) -> String {
    let e = escape_html;
    let mut h = String::with_capacity(16 << 10);
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"5\">\
         <title>Quarry — {health}</title><style>{STYLE}</style></head><body>\
         <header><h1>Quarry</h1><span class=\"badge {health}\" id=\"health\">{health}</span>\
         <span class=\"sub\">served by {me} ({role}, term {term}) · leader {leader}</span></header><main>",
        health = e(&s.health),
        me = e(&s.served_by.addr),
        role = e(&s.served_by.role),
        term = s.served_by.term,
        leader = e(s.leader.as_deref().unwrap_or("unknown")),
    );
    if !s.problems.is_empty() {
        h.push_str("<section><h2>Problems</h2><ul class=\"problems\">");
        for p in &s.problems {
            let _ = write!(h, "<li>{}</li>", e(p));
        }
        h.push_str("</ul></section>");
    }
    let live = s.chunkservers.iter().filter(|c| c.alive).count();
    let cap: u64 = s
        .chunkservers
        .iter()
        .filter(|c| c.alive)
        .map(|c| c.capacity_bytes)
        .sum();
    let used: u64 = s
        .chunkservers
        .iter()
        .filter(|c| c.alive)
        .map(|c| c.used_bytes)
        .sum();
    let card = |h: &mut String, id: &str, k: &str, v: String, class: &str| {
        let _ = write!(
            h,
            "<div class=\"card {class}\"><div class=\"v\" id=\"{id}\">{}</div><div class=\"k\">{}</div></div>",
            e(&v),
            e(k)
        );
    };
    h.push_str("<div class=\"cards\">");
    card(
        &mut h,
        "chunkservers-live",
        "chunkservers up",
        format!("{live} / {}", s.chunkservers.len()),
        if live < s.chunkservers.len() {
            "warn"
        } else {
            ""
        },
    );
    card(
        &mut h,
        "chunks-total",
        "chunks",
        s.chunks.total.to_string(),
        "",
    );
    card(&mut h, "files", "files", s.namespace.files.to_string(), "");
    card(
        &mut h,
        "under-replicated",
        "under-replicated",
        s.chunks.under_replicated.to_string(),
        if s.chunks.under_replicated > 0 {
            "warn"
        } else {
            ""
        },
    );
    card(
        &mut h,
        "corrupt",
        "corrupt reports",
        s.chunks.corrupt_reports.to_string(),
        if s.chunks.corrupt_reports > 0 {
            "warn"
        } else {
            ""
        },
    );
    card(
        &mut h,
        "space",
        "space used",
        format!("{} / {}", human_bytes(used), human_bytes(cap)),
        "",
    );
    h.push_str("</div>");

    h.push_str(
        "<section><h2>Masters</h2><table><tr><th>Address</th><th class=\"n\">Id</th><th>Role</th>\
         <th class=\"n\">Term</th><th class=\"n\">Commit index</th><th class=\"n\">Applied index</th>\
         <th class=\"n\">Files</th><th class=\"n\">Directories</th><th class=\"n\">Chunks</th></tr>",
    );
    for m in &s.masters {
        let class = match m.role.as_str() {
            "leader" | "follower" => "up",
            "unreachable" | "shutdown" => "down",
            _ => "",
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"{class}\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td></tr>",
            e(&m.addr),
            m.id,
            e(&m.role),
            m.term,
            m.commit_index,
            m.log_index,
            m.files,
            m.directories,
            m.chunks
        );
    }
    h.push_str("</table></section>");

    h.push_str(
        "<section><h2>Chunkservers</h2><table><tr><th>Address</th><th class=\"n\">Id</th><th>State</th>\
         <th class=\"n\">Chunks</th><th>Disk</th><th class=\"n\">Used</th><th class=\"n\">Capacity</th>\
         <th class=\"n\">Heartbeat</th><th class=\"n\">Read</th><th class=\"n\">Write</th>\
         <th class=\"n\">Active</th></tr>",
    );
    for c in &s.chunkservers {
        let frac = if c.capacity_bytes == 0 {
            0.0
        } else {
            c.used_bytes as f64 / c.capacity_bytes as f64
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"{}\">{}</td><td class=\"n\">{}</td>\
             <td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{} ms ago</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            e(&c.addr),
            c.id,
            if c.alive { "up" } else { "down" },
            if c.alive { "up" } else { "DOWN" },
            c.chunks,
            bar(frac),
            human_bytes(c.used_bytes),
            human_bytes(c.capacity_bytes),
            c.last_heartbeat_ms_ago,
            rate_text(c.read_bytes_per_sec),
            rate_text(c.written_bytes_per_sec),
            c.active_requests
        );
    }
    h.push_str("</table></section>");

    let ch = &s.chunks;
    let _ = write!(
        h,
        "<section><h2>Replication</h2><table>\
         <tr><th>Chunk size</th><th>Default goal</th><th class=\"n\">Under-replicated</th>\
         <th class=\"n\">Missing</th><th class=\"n\">Over-replicated</th><th class=\"n\">Corrupt reports</th>\
         <th class=\"n\">Repair queue</th><th class=\"n\">Clones running</th><th class=\"n\">Clones done</th>\
         <th class=\"n\">Clones failed</th><th class=\"n\">Bytes cloned</th></tr>\
         <tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
         <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
         <td class=\"n\">{}</td><td class=\"n\">{}</td></tr></table>\
         <p class=\"muted\">Namespace: {} files, {} directories; trash: {} files ({}).</p></section>",
        human_bytes(ch.chunk_size),
        ch.replication,
        ch.under_replicated,
        ch.missing,
        ch.over_replicated,
        ch.corrupt_reports,
        ch.repair_queue,
        ch.clones_in_flight,
        ch.clones_done,
        ch.clones_failed,
        human_bytes(ch.cloned_bytes),
        s.namespace.files,
        s.namespace.directories,
        s.namespace.trash_files,
        human_bytes(s.namespace.trash_bytes),
    );

    h.push_str("<section><h2>MapReduce jobs</h2>");
    if !s.jobs_here {
        h.push_str("<p class=\"muted\">Jobs run on the leader; see its page.</p>");
    } else if s.jobs.is_empty() {
        h.push_str("<p class=\"muted\">No jobs yet.</p>");
    } else {
        h.push_str(
            "<table><tr><th class=\"n\">Job</th><th>App</th><th>Input → output</th><th>State</th>\
             <th>Progress</th><th class=\"n\">Maps</th><th class=\"n\">Reduces</th>\
             <th class=\"n\">Input</th><th class=\"n\">Failed attempts</th><th>Submitted</th></tr>",
        );
        for j in &s.jobs {
            let state = match &j.error {
                Some(err) => format!("failed: {err}"),
                None => j.state.clone(),
            };
            let _ = write!(
                h,
                "<tr><td class=\"n\">{}</td><td>{}</td><td>{} → {}</td><td>{}</td><td>{}</td>\
                 <td class=\"n\">{}/{} ({} running)</td><td class=\"n\">{}/{} ({} running)</td>\
                 <td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
                j.id,
                e(&j.app),
                e(&j.inputs.join(", ")),
                e(&j.output),
                e(&state),
                bar(j.progress),
                j.maps_done,
                j.maps_total,
                j.maps_running,
                j.reduces_done,
                j.reduces_total,
                j.reduces_running,
                human_bytes(j.input_bytes),
                j.failed_attempts,
                ago(j.submitted, s.generated)
            );
        }
        h.push_str("</table>");
    }
    h.push_str("</section></main>");
    h.push_str(
        "<footer>Refreshes every 5 s · <a href=\"/api/status\">/api/status</a> · \
         <a href=\"/metrics\">/metrics</a></footer></body></html>",
    );
    h
}

/// GET `url` (`http://host:port/path`) with HTTP/1.1 and `Connection: close`: the status code
/// and the body. Handles `Content-Length` and chunked bodies; at most 64 MiB.
pub async fn get(url: &str, timeout: Duration) -> anyhow::Result<(u16, String)> {
    tokio::time::timeout(timeout, get_inner(url))
        .await
        .with_context(|| format!("GET {url}: no answer within {timeout:?}"))?
}

async fn get_inner(url: &str) -> anyhow::Result<(u16, String)> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url}: only http:// URLs are supported"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    anyhow::ensure!(!host.is_empty(), "{url}: no host");
    let mut stream = tokio::net::TcpStream::connect(host)
        .await
        .with_context(|| format!("connecting to {host}"))?;
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nAccept: */*\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    (&mut stream)
        .take(64 << 20)
        .read_to_end(&mut raw)
        .await
        .with_context(|| format!("reading the answer of {host}"))?;
    parse_response(&raw).with_context(|| format!("GET {url}"))
}

/// An HTTP/1.1 response → (status, body).
fn parse_response(raw: &[u8]) -> anyhow::Result<(u16, String)> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of the response head")?;
    let head = std::str::from_utf8(&raw[..end]).context("response head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let code: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let mut chunked = false;
    let mut length: Option<usize> = None;
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
            chunked = true;
        } else if k == "content-length" {
            length = Some(v.parse().context("bad Content-Length")?);
        }
    }
    let mut body = &raw[end + 4..];
    let bytes = if chunked {
        let mut out = Vec::new();
        loop {
            let line_end = body
                .windows(2)
                .position(|w| w == b"\r\n")
                .context("chunk size line not terminated")?;
            let size_text = std::str::from_utf8(&body[..line_end])?;
            let size_text = size_text.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16)
                .with_context(|| format!("bad chunk size {size_text:?}"))?;
            body = &body[line_end + 2..];
            if size == 0 {
                break;
            }
            anyhow::ensure!(body.len() >= size + 2, "chunk cut short");
            out.extend_from_slice(&body[..size]);
            body = &body[size + 2..];
        }
        out
    } else {
        match length {
            Some(n) => {
                anyhow::ensure!(body.len() >= n, "body cut short ({} of {n})", body.len());
                body[..n].to_vec()
            }
            None => body.to_vec(),
        }
    };
    Ok((code, String::from_utf8(bytes).context("body is not UTF-8")?))
}

/// The URL of an HTTP listen address as a browser reaches it (`0.0.0.0` → `127.0.0.1`).
pub fn url_of(addr: SocketAddr) -> String {
    let ip = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        addr.ip().to_string()
    };
    match addr {
        SocketAddr::V6(_) if !addr.ip().is_unspecified() => {
            format!("http://[{ip}]:{}/", addr.port())
        }
        _ => format!("http://{ip}:{}/", addr.port()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_parse_with_length_or_chunks_and_bad_ones_are_errors() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(parse_response(r).unwrap(), (200, "hello".into()));
        let r = b"HTTP/1.1 503 No\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(r).unwrap(), (503, "abcde".into()));
        for bad in [
            &b"HTTP/1.1 200 OK\r\n"[..],
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc",
        ] {
            assert!(
                parse_response(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            escape_html("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
    }

    #[test]
    fn urls_of_listen_addresses() {
        assert_eq!(
            url_of("0.0.0.0:80".parse().unwrap()),
            "http://127.0.0.1:80/"
        );
        assert_eq!(url_of("[::1]:8080".parse().unwrap()), "http://[::1]:8080/");
        assert_eq!(url_of("10.0.0.1:9".parse().unwrap()), "http://10.0.0.1:9/");
    }
}
