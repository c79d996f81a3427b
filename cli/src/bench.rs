//! `quarry bench`: a built-in throughput and metadata benchmark, through the client library
//! (the default) or through a mounted directory (`--mount DIR`).
//!
//! Phases, each timed from the moment every client is ready until the last one finishes:
//! `write` (each client writes its own big file; acknowledged = on every replica),
//! `read` (reads it back and checks every byte), then over `--files` empty files per client:
//! `create`, `stat`, `rename`, `unlink`. Throughput counts every client's operations over the
//! phase's wall time; latencies are per operation (p50 and p99 over all clients).

use anyhow::{bail, Context};
use bytes::Bytes;
use quarry_client::{Client, ClientConfig};
use quarry_proto::{FileKind, InodeId};
use quarry_transport::certs::NodeCert;
use quarry_transport::quic::QuicNode;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cluster::ClusterFile;

#[derive(clap::Args, Clone, Debug)]
pub struct BenchArgs {
    /// Benchmark the filesystem mounted at DIR (plain file I/O, one thread per client)
    /// instead of the client library.
    #[arg(long, value_name = "DIR")]
    pub mount: Option<PathBuf>,
    /// Concurrent clients: separate connections and sessions with the client library,
    /// threads with --mount.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub clients: u32,
    /// Empty files each client creates, stats, renames and unlinks.
    #[arg(long, default_value_t = 1000)]
    pub files: u32,
    /// Size of each client's big file in MiB (0 skips the write and read phases).
    #[arg(long, default_value_t = 256)]
    pub big_mib: u64,
    /// Only these phases (comma-separated: write,read,create,stat,rename,unlink).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<Phase>,
    /// One JSON object per phase instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Write,
    Read,
    Create,
    Stat,
    Rename,
    Unlink,
}

impl Phase {
    const ALL: [Phase; 6] = [
        Phase::Write,
        Phase::Read,
        Phase::Create,
        Phase::Stat,
        Phase::Rename,
        Phase::Unlink,
    ];

    fn name(self) -> &'static str {
        match self {
            Phase::Write => "write",
            Phase::Read => "read",
            Phase::Create => "create",
            Phase::Stat => "stat",
            Phase::Rename => "rename",
            Phase::Unlink => "unlink",
        }
    }

    fn is_data(self) -> bool {
        matches!(self, Phase::Write | Phase::Read)
    }
}

/// Bytes per request (client library) or per `write(2)`/`read(2)` (mount).
const CLIENT_PIECE: usize = 8 << 20;
const MOUNT_BLOCK: usize = 1 << 20;
/// Pieces in flight per client (client library), as `quarry put` does.
const IN_FLIGHT: usize = 4;

enum Target<'a> {
    Mount(PathBuf),
    Client(&'a ClusterFile),
}

/// One phase's result.
#[derive(Debug)]
struct Outcome {
    phase: Phase,
    elapsed: Duration,
    ops: u64,
    bytes: u64,
    lat: Vec<Duration>,
    note: &'static str,
}

impl Outcome {
    fn rate(&self) -> f64 {
        let s = self.elapsed.as_secs_f64().max(1e-9);
        if self.phase.is_data() {
            self.bytes as f64 / (1u64 << 20) as f64 / s
        } else {
            self.ops as f64 / s
        }
    }

    fn unit(&self) -> &'static str {
        if self.phase.is_data() {
            "MiB/s"
        } else {
            "ops/s"
        }
    }

    fn percentile(&mut self, p: f64) -> Duration {
        if self.lat.is_empty() {
            return Duration::ZERO;
        }
        self.lat.sort_unstable();
        let i = ((self.lat.len() as f64 - 1.0) * p).round() as usize;
        self.lat[i.min(self.lat.len() - 1)]
    }
}

pub async fn run(file: Option<&ClusterFile>, args: BenchArgs) -> anyhow::Result<()> {
    let phases: Vec<Phase> = Phase::ALL
        .into_iter()
        .filter(|p| args.only.is_empty() || args.only.contains(p))
        .filter(|p| !(p.is_data() && args.big_mib == 0))
        .collect();
    if phases.contains(&Phase::Read) && !phases.contains(&Phase::Write) {
        bail!("the read phase reads what the write phase wrote: add write to --only");
    }
    let meta = [Phase::Stat, Phase::Rename, Phase::Unlink];
    if meta.iter().any(|p| phases.contains(p)) && !phases.contains(&Phase::Create) {
        bail!(
            "stat, rename and unlink work on the files the create phase made: add create to --only"
        );
    }
    let target = match (&args.mount, file) {
        (Some(dir), _) => Target::Mount(dir.clone()),
        (None, Some(f)) => Target::Client(f),
        (None, None) => bail!("no cluster file to benchmark the client library against"),
    };
    let tag = format!(
        ".quarry-bench-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    );
    if !args.json {
        println!(
            "quarry bench: {}; {} client(s), {} MiB big file and {} files each",
            match &target {
                Target::Mount(dir) => format!("mount {}", dir.display()),
                Target::Client(f) => format!("client library, masters {}", f.masters.join(",")),
            },
            args.clients,
            args.big_mib,
            args.files
        );
    }
    let outcomes = match target {
        Target::Mount(dir) => {
            if !dir.is_dir() {
                bail!("{}: not a directory", dir.display());
            }
            let root = dir.join(&tag);
            let args2 = args.clone();
            let phases2 = phases.clone();
            tokio::task::spawn_blocking(move || mount_bench(&root, &args2, &phases2)).await??
        }
        Target::Client(file) => client_bench(file, &args, &phases, &format!("/{tag}")).await?,
    };
    for mut o in outcomes {
        let (p50, p99) = (o.percentile(0.5), o.percentile(0.99));
        if args.json {
            println!(
                "{{\"phase\":\"{}\",\"target\":\"{}\",\"clients\":{},\"rate\":{:.3},\"unit\":\"{}\",\"ops\":{},\"bytes\":{},\"seconds\":{:.6},\"p50_us\":{},\"p99_us\":{},\"note\":\"{}\"}}",
                o.phase.name(),
                if args.mount.is_some() { "mount" } else { "client" },
                args.clients,
                o.rate(),
                o.unit(),
                o.ops,
                o.bytes,
                o.elapsed.as_secs_f64(),
                p50.as_micros(),
                p99.as_micros(),
                o.note,
            );
        } else {
            println!(
                "  {:<7} {:>10.1} {:<6} ({} ops in {:.2} s; per op p50 {:.2} ms, p99 {:.2} ms){}{}",
                o.phase.name(),
                o.rate(),
                o.unit(),
                o.ops,
                o.elapsed.as_secs_f64(),
                p50.as_secs_f64() * 1e3,
                p99.as_secs_f64() * 1e3,
                if o.note.is_empty() { "" } else { "; " },
                o.note,
            );
        }
    }
    Ok(())
}

/// Deterministic incompressible bytes for client `i` (xorshift; checked on read).
fn pattern(i: u32, len: usize) -> Bytes {
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ ((i as u64 + 1) << 32);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

// ---- through the client library -------------------------------------------------------------

struct BenchClient {
    client: Client,
    _node: QuicNode,
    dir: InodeId,
    big: Option<InodeId>,
}

async fn client_bench(
    file: &ClusterFile,
    args: &BenchArgs,
    phases: &[Phase],
    root: &str,
) -> anyhow::Result<Vec<Outcome>> {
    let cert = NodeCert::load(&file.certs, "client").with_context(|| {
        format!(
            "loading the client certificate from {}",
            file.certs.display()
        )
    })?;
    // Every client gets its own QUIC endpoint (its own connections) and session.
    let mut clients = Vec::new();
    for _ in 0..args.clients {
        let node = QuicNode::client(&cert)?;
        let mut config = ClientConfig::new(file.masters.clone());
        config.retry_deadline = Duration::from_secs(60);
        let client = Client::connect(node.transport(), config)
            .await
            .with_context(|| format!("connecting to {}", file.masters.join(", ")))?;
        clients.push(BenchClient {
            client,
            _node: node,
            dir: InodeId::ROOT,
            big: None,
        });
    }
    let c0 = clients[0].client.clone();
    let root_attr = c0.mkdir_p(root, 0o755).await?;
    for (i, bc) in clients.iter_mut().enumerate() {
        bc.dir = bc
            .client
            .mkdir(root_attr.inode, &format!("c{i}"), 0o755, 0, 0)
            .await?
            .inode;
    }
    let clients: Vec<Arc<tokio::sync::Mutex<BenchClient>>> = clients
        .into_iter()
        .map(|c| Arc::new(tokio::sync::Mutex::new(c)))
        .collect();
    let result = client_phases(&clients, args, phases).await;
    // Clean up whatever the phases left (also after an error).
    let cleanup = async {
        for (i, bc) in clients.iter().enumerate() {
            let bc = bc.lock().await;
            for e in bc.client.readdir(bc.dir).await? {
                bc.client.unlink(bc.dir, &e.name).await?;
            }
            bc.client.rmdir(root_attr.inode, &format!("c{i}")).await?;
        }
        let (parent, name) = c0.parent_of(root).await?;
        c0.rmdir(parent.inode, &name).await?;
        anyhow::Ok(())
    };
    let cleaned = cleanup.await;
    let out = result?;
    cleaned.context("removing the benchmark's files")?;
    Ok(out)
}

async fn client_phases(
    clients: &[Arc<tokio::sync::Mutex<BenchClient>>],
    args: &BenchArgs,
    phases: &[Phase],
) -> anyhow::Result<Vec<Outcome>> {
    let mut out = Vec::new();
    for &phase in phases {
        let start = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for (i, bc) in clients.iter().enumerate() {
            let bc = bc.clone();
            let (files, big) = (args.files, args.big_mib << 20);
            set.spawn(async move {
                let mut bc = bc.lock().await;
                client_phase(&mut bc, i as u32, phase, files, big).await
            });
        }
        let (mut ops, mut bytes, mut lat) = (0, 0, Vec::new());
        while let Some(r) = set.join_next().await {
            let (o, b, l) = r??;
            ops += o;
            bytes += b;
            lat.extend(l);
        }
        out.push(Outcome {
            phase,
            elapsed: start.elapsed(),
            ops,
            bytes,
            lat,
            note: "",
        });
    }
    Ok(out)
}

fn name(i: u32) -> String {
    format!("f{i:07}")
}

async fn client_phase(
    bc: &mut BenchClient,
    who: u32,
    phase: Phase,
    files: u32,
    big: u64,
) -> anyhow::Result<(u64, u64, Vec<Duration>)> {
    let c = bc.client.clone();
    let dir = bc.dir;
    let mut lat = Vec::with_capacity(files as usize);
    match phase {
        Phase::Write => {
            let attr = c.create(dir, "big", 0o644, 0, 0, false).await?;
            bc.big = Some(attr.inode);
            let data = pattern(who, CLIENT_PIECE);
            let mut set = tokio::task::JoinSet::new();
            let mut at = 0u64;
            while at < big {
                while set.len() >= IN_FLIGHT {
                    set.join_next().await.expect("non-empty")??;
                }
                let n = (big - at).min(CLIENT_PIECE as u64) as usize;
                let (c2, piece) = (c.clone(), data.slice(..n));
                let t = Instant::now();
                set.spawn(async move {
                    c2.write_data(attr.inode, at, piece).await?;
                    Ok::<Duration, anyhow::Error>(t.elapsed())
                });
                at += n as u64;
            }
            while let Some(r) = set.join_next().await {
                lat.push(r??);
            }
            c.commit_size(attr.inode, big).await?;
            let pieces = big.div_ceil(CLIENT_PIECE as u64);
            Ok((pieces, big, lat))
        }
        Phase::Read => {
            let inode = bc.big.context("no big file written")?;
            let expect = pattern(who, CLIENT_PIECE);
            let mut pending = std::collections::VecDeque::new();
            let mut next = 0u64;
            let mut done = 0u64;
            loop {
                while pending.len() < IN_FLIGHT && next < big {
                    let c2 = c.clone();
                    let at = next;
                    let t = Instant::now();
                    pending.push_back(tokio::spawn(async move {
                        let d = c2.read(inode, at, CLIENT_PIECE as u64, big).await;
                        d.map(|d| (d, t.elapsed()))
                    }));
                    next += CLIENT_PIECE as u64;
                }
                let Some(h) = pending.pop_front() else { break };
                let (data, l) = h.await??;
                lat.push(l);
                if data[..] != expect[..data.len()] {
                    bail!("client {who}: the big file read back differs at offset {done}");
                }
                done += data.len() as u64;
            }
            if done != big {
                bail!("client {who}: read {done} bytes of {big}");
            }
            Ok((lat.len() as u64, done, lat))
        }
        Phase::Create => {
            for i in 0..files {
                let t = Instant::now();
                c.create(dir, &name(i), 0o644, 0, 0, true).await?;
                lat.push(t.elapsed());
            }
            Ok((files as u64, 0, lat))
        }
        Phase::Stat => {
            for i in 0..files {
                let t = Instant::now();
                let a = c.lookup(dir, &name(i)).await?;
                lat.push(t.elapsed());
                if a.kind != FileKind::File {
                    bail!("{}: not a regular file", name(i));
                }
            }
            Ok((files as u64, 0, lat))
        }
        Phase::Rename => {
            for i in 0..files {
                let t = Instant::now();
                c.rename(dir, &name(i), dir, &format!("{}.r", name(i)))
                    .await?;
                lat.push(t.elapsed());
            }
            Ok((files as u64, 0, lat))
        }
        Phase::Unlink => {
            for i in 0..files {
                let t = Instant::now();
                c.unlink(dir, &format!("{}.r", name(i))).await?;
                lat.push(t.elapsed());
            }
            Ok((files as u64, 0, lat))
        }
    }
}

// ---- through a mount ------------------------------------------------------------------------

fn mount_bench(root: &Path, args: &BenchArgs, phases: &[Phase]) -> anyhow::Result<Vec<Outcome>> {
    std::fs::create_dir(root).with_context(|| format!("creating {}", root.display()))?;
    let dirs: Vec<PathBuf> = (0..args.clients)
        .map(|i| root.join(format!("c{i}")))
        .collect();
    for d in &dirs {
        std::fs::create_dir(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let result = mount_phases(&dirs, args, phases);
    let cleaned = std::fs::remove_dir_all(root);
    let out = result?;
    cleaned.with_context(|| format!("removing {}", root.display()))?;
    Ok(out)
}

/// Pause after [`drop_caches`] before a phase starts, as the shared harness's `drop_caches`
/// does (`sync; echo 3 > drop_caches; sleep 0.5`): what the previous phase left behind (the
/// writeback that `sync` started, lingering open holds dropped 1 s after a close) settles
/// before the clock starts, rather than landing on the first seconds of the phase.
const SETTLE: Duration = Duration::from_millis(500);

/// Write back and empty the page cache, dentries and inodes so that reads and stats go to the
/// filesystem, as bench/fsbench.sh does before its cold phases and before each of its writes
/// (root only); then [`SETTLE`].
fn drop_caches() -> bool {
    // sync(1) rather than the libc call keeps the crate free of unsafe code.
    let _ = std::process::Command::new("sync").status();
    let dropped = std::fs::write("/proc/sys/vm/drop_caches", "3\n").is_ok();
    std::thread::sleep(SETTLE);
    dropped
}

fn mount_phases(
    dirs: &[PathBuf],
    args: &BenchArgs,
    phases: &[Phase],
) -> anyhow::Result<Vec<Outcome>> {
    let mut out = Vec::new();
    for &phase in phases {
        let mut note = "";
        // Each phase starts as the harness's counterpart does: its writes and its cold read
        // and stat after `drop_caches`, its create, rename and unlink straight after the
        // previous phase.
        if matches!(phase, Phase::Write | Phase::Read | Phase::Stat) {
            let dropped = drop_caches();
            if !dropped && phase != Phase::Write {
                note = "caches not dropped (needs root): warm";
            }
        }
        let start = Instant::now();
        let results: Vec<anyhow::Result<(u64, u64, Vec<Duration>)>> = std::thread::scope(|s| {
            let handles: Vec<_> = dirs
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    s.spawn(move || mount_phase(d, i as u32, phase, args.files, args.big_mib << 20))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("a benchmark thread panicked")))
                })
                .collect()
        });
        let elapsed = start.elapsed();
        let (mut ops, mut bytes, mut lat) = (0, 0, Vec::new());
        for r in results {
            let (o, b, l) = r?;
            ops += o;
            bytes += b;
            lat.extend(l);
        }
        out.push(Outcome {
            phase,
            elapsed,
            ops,
            bytes,
            lat,
            note,
        });
    }
    Ok(out)
}

fn mount_phase(
    dir: &Path,
    who: u32,
    phase: Phase,
    files: u32,
    big: u64,
) -> anyhow::Result<(u64, u64, Vec<Duration>)> {
    let mut lat = Vec::with_capacity(files as usize);
    let big_path = dir.join("big");
    let ctx = |p: &Path| format!("{}", p.display());
    match phase {
        Phase::Write => {
            let data = pattern(who, MOUNT_BLOCK);
            let mut f = std::fs::File::create(&big_path).with_context(|| ctx(&big_path))?;
            let mut at = 0u64;
            while at < big {
                let n = (big - at).min(MOUNT_BLOCK as u64) as usize;
                let t = Instant::now();
                f.write_all(&data[..n]).with_context(|| ctx(&big_path))?;
                lat.push(t.elapsed());
                at += n as u64;
            }
            // Durable before the phase ends, as `dd conv=fsync` in bench/fsbench.sh.
            f.sync_all().with_context(|| ctx(&big_path))?;
            Ok((lat.len() as u64, big, lat))
        }
        Phase::Read => {
            let expect = pattern(who, MOUNT_BLOCK);
            let mut f = std::fs::File::open(&big_path).with_context(|| ctx(&big_path))?;
            let mut buf = vec![0u8; MOUNT_BLOCK];
            let mut done = 0u64;
            loop {
                let t = Instant::now();
                let mut filled = 0;
                while filled < buf.len() {
                    let n = f.read(&mut buf[filled..]).with_context(|| ctx(&big_path))?;
                    if n == 0 {
                        break;
                    }
                    filled += n;
                }
                if filled == 0 {
                    break;
                }
                lat.push(t.elapsed());
                if buf[..filled] != expect[..filled] {
                    bail!(
                        "{}: differs from what was written at offset {done}",
                        big_path.display()
                    );
                }
                done += filled as u64;
            }
            if done != big {
                bail!("{}: read {done} bytes of {big}", big_path.display());
            }
            std::fs::remove_file(&big_path).with_context(|| ctx(&big_path))?;
            Ok((lat.len() as u64, done, lat))
        }
        Phase::Create => {
            for i in 0..files {
                let p = dir.join(name(i));
                let t = Instant::now();
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&p)
                    .with_context(|| ctx(&p))?;
                lat.push(t.elapsed());
            }
            Ok((files as u64, 0, lat))
        }
        Phase::Stat => {
            for i in 0..files {
                let p = dir.join(name(i));
                let t = Instant::now();
                let m = std::fs::symlink_metadata(&p).with_context(|| ctx(&p))?;
                lat.push(t.elapsed());
                if !m.is_file() {
                    bail!("{}: not a regular file", p.display());
                }
            }
            Ok((files as u64, 0, lat))
        }
        Phase::Rename => {
            for i in 0..files {
                let (a, b) = (dir.join(name(i)), dir.join(format!("{}.r", name(i))));
                let t = Instant::now();
                std::fs::rename(&a, &b).with_context(|| ctx(&a))?;
                lat.push(t.elapsed());
            }
            Ok((files as u64, 0, lat))
        }
        Phase::Unlink => {
            for i in 0..files {
                let p = dir.join(format!("{}.r", name(i)));
                let t = Instant::now();
                std::fs::remove_file(&p).with_context(|| ctx(&p))?;
                lat.push(t.elapsed());
            }
            Ok((files as u64, 0, lat))
        }
    }
}
