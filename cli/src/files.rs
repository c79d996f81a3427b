//! The file commands: put, get, cat, ls, mkdir, rm, mv, stat, and status.

use anyhow::{bail, Context};
use bytes::Bytes;
use indicatif::{ProgressBar, ProgressStyle};
use quarry_cli::http::human_bytes;
use quarry_client::Client;
use quarry_proto::{Attr, FileKind, FsError, InodeId, Timestamp};
use std::collections::VecDeque;
use std::io::{IsTerminal, Read, Write};
use std::path::Path;

/// Bytes per write or read request of put and get.
const PIECE_BYTES: usize = 8 << 20;
/// Requests in flight per put or get (bounds memory to PIECE_BYTES × this).
const IN_FLIGHT: usize = 4;

fn progress(total: Option<u64>, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match total {
        Some(t) => ProgressBar::new(t),
        None => ProgressBar::new_spinner(),
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

fn basename(p: &str) -> &str {
    p.trim_end_matches('/').rsplit('/').next().unwrap_or(p)
}

/// Where `src` goes when copied to `dst`: into `dst` if it is a directory (or ends with `/`).
async fn target_path(client: &Client, src_name: &str, dst: &str) -> anyhow::Result<String> {
    if dst.ends_with('/') {
        return Ok(format!("{dst}{src_name}"));
    }
    match client.stat(dst).await {
        Ok(a) if a.kind == FileKind::Directory => {
            Ok(format!("{}/{src_name}", dst.trim_end_matches('/')))
        }
        _ => Ok(dst.to_string()),
    }
}

pub async fn put(client: &Client, local: &str, remote: &str) -> anyhow::Result<()> {
    let (mut reader, total): (Box<dyn Read + Send>, Option<u64>) = if local == "-" {
        (Box::new(std::io::stdin()), None)
    } else {
        let f = std::fs::File::open(local).with_context(|| format!("opening {local}"))?;
        let len = f.metadata()?.len();
        (Box::new(f), Some(len))
    };
    let src_name = if local == "-" {
        "stdin"
    } else {
        basename(local)
    };
    let remote = target_path(client, src_name, remote).await?;
    let (parent, name) = client.parent_of(&remote).await?;
    let attr = client
        .create(parent.inode, &name, 0o644, 0, 0, false)
        .await?;
    if attr.size > 0 {
        client.truncate(attr.inode, 0).await?;
    }
    let bar = progress(total, &format!("put {remote}"));
    let mut in_flight = tokio::task::JoinSet::new();
    let mut offset = 0u64;
    loop {
        let mut buf = vec![0u8; PIECE_BYTES];
        let mut filled = 0;
        while filled < buf.len() {
            let n = reader.read(&mut buf[filled..])?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            break;
        }
        buf.truncate(filled);
        while in_flight.len() >= IN_FLIGHT {
            in_flight.join_next().await.expect("non-empty")??;
        }
        let c = client.clone();
        let bar2 = bar.clone();
        let at = offset;
        in_flight.spawn(async move {
            let n = buf.len() as u64;
            c.write_data(attr.inode, at, Bytes::from(buf)).await?;
            bar2.inc(n);
            Ok::<(), FsError>(())
        });
        offset += filled as u64;
        if filled < PIECE_BYTES {
            break;
        }
    }
    while let Some(r) = in_flight.join_next().await {
        r??;
    }
    client.commit_size(attr.inode, offset).await?;
    bar.finish_and_clear();
    Ok(())
}

/// Stream a file's bytes to `out`, reading ahead IN_FLIGHT pieces.
async fn copy_out(
    client: &Client,
    attr: &Attr,
    out: &mut dyn Write,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    let size = attr.size;
    let mut pending = VecDeque::new();
    let mut next = 0u64;
    loop {
        while pending.len() < IN_FLIGHT && next < size {
            let c = client.clone();
            let (inode, at) = (attr.inode, next);
            pending.push_back(tokio::spawn(async move {
                c.read(inode, at, PIECE_BYTES as u64, size).await
            }));
            next += PIECE_BYTES as u64;
        }
        let Some(h) = pending.pop_front() else { break };
        let data = h.await??;
        out.write_all(&data)?;
        bar.inc(data.len() as u64);
    }
    out.flush()?;
    Ok(())
}

pub async fn get(client: &Client, remote: &str, local: &str) -> anyhow::Result<()> {
    let attr = client
        .stat(remote)
        .await
        .with_context(|| remote.to_string())?;
    if attr.kind == FileKind::Directory {
        bail!("{remote}: is a directory");
    }
    let bar = progress(Some(attr.size), &format!("get {remote}"));
    if local == "-" {
        let stdout = std::io::stdout();
        let mut lock = stdout.lock();
        copy_out(client, &attr, &mut lock, &bar).await?;
    } else {
        let path = if Path::new(local).is_dir() {
            Path::new(local).join(basename(remote))
        } else {
            Path::new(local).to_path_buf()
        };
        let tmp = path.with_extension("quarry-partial");
        let mut f = std::io::BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?,
        );
        copy_out(client, &attr, &mut f, &bar).await?;
        f.into_inner()?.sync_all()?;
        std::fs::rename(&tmp, &path)?;
    }
    bar.finish_and_clear();
    Ok(())
}

pub async fn cat(client: &Client, paths: &[String]) -> anyhow::Result<()> {
    for p in paths {
        let attr = client.stat(p).await.with_context(|| p.clone())?;
        if attr.kind == FileKind::Directory {
            bail!("{p}: is a directory");
        }
        let stdout = std::io::stdout();
        let mut lock = stdout.lock();
        copy_out(client, &attr, &mut lock, &ProgressBar::hidden()).await?;
    }
    Ok(())
}

fn mode_string(a: &Attr) -> String {
    let kind = match a.kind {
        FileKind::Directory => 'd',
        FileKind::Symlink => 'l',
        FileKind::File => '-',
        FileKind::Fifo => 'p',
        FileKind::CharDevice => 'c',
        FileKind::BlockDevice => 'b',
        FileKind::Socket => 's',
    };
    let mut s = String::with_capacity(10);
    s.push(kind);
    for shift in [6, 3, 0] {
        let bits = (a.mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

/// `YYYY-MM-DD HH:MM:SS.nnnnnnnnn` in UTC (days-from-civil inverse, Howard Hinnant's algorithm).
pub fn format_time(t: Timestamp) -> String {
    let days = t.secs.div_euclid(86_400);
    let secs_of_day = t.secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:09}",
        secs_of_day / 3600,
        secs_of_day / 60 % 60,
        secs_of_day % 60,
        t.nanos
    )
}

fn long_line(a: &Attr, name: &str) -> String {
    let time = format_time(a.mtime);
    format!(
        "{} {:>3} {:>5} {:>5} {:>12} {} {}",
        mode_string(a),
        a.nlink,
        a.uid,
        a.gid,
        a.size,
        &time[..16],
        name
    )
}

pub async fn ls(client: &Client, path: &str, long: bool) -> anyhow::Result<()> {
    let attr = client.stat(path).await.with_context(|| path.to_string())?;
    let mut out = std::io::stdout().lock();
    if attr.kind != FileKind::Directory {
        if long {
            writeln!(out, "{}", long_line(&attr, path))?;
        } else {
            writeln!(out, "{path}")?;
        }
        return Ok(());
    }
    for e in client.readdir(attr.inode).await? {
        if long {
            let a = client.getattr(e.inode).await?;
            writeln!(out, "{}", long_line(&a, &e.name))?;
        } else {
            writeln!(out, "{}", e.name)?;
        }
    }
    Ok(())
}

pub async fn mkdir(client: &Client, path: &str, parents: bool) -> anyhow::Result<()> {
    if parents {
        client.mkdir_p(path, 0o755).await?;
    } else {
        let (parent, name) = client.parent_of(path).await?;
        client.mkdir(parent.inode, &name, 0o755, 0, 0).await?;
    }
    Ok(())
}

async fn remove_tree(client: &Client, dir: InodeId) -> anyhow::Result<()> {
    for e in client.readdir(dir).await? {
        if e.kind == FileKind::Directory {
            Box::pin(remove_tree(client, e.inode)).await?;
            client.rmdir(dir, &e.name).await?;
        } else {
            client.unlink(dir, &e.name).await?;
        }
    }
    Ok(())
}

pub async fn rm(client: &Client, path: &str, recursive: bool) -> anyhow::Result<()> {
    let attr = client.stat(path).await.with_context(|| path.to_string())?;
    let (parent, name) = client.parent_of(path).await?;
    if attr.kind == FileKind::Directory {
        if !recursive {
            bail!("{path}: is a directory (use -r)");
        }
        remove_tree(client, attr.inode).await?;
        client.rmdir(parent.inode, &name).await?;
    } else {
        client.unlink(parent.inode, &name).await?;
    }
    Ok(())
}

pub async fn mv(client: &Client, src: &str, dst: &str) -> anyhow::Result<()> {
    let dst = target_path(client, basename(src), dst).await?;
    let (sp, sn) = client.parent_of(src).await?;
    let (dp, dn) = client.parent_of(&dst).await?;
    client.rename(sp.inode, &sn, dp.inode, &dn).await?;
    Ok(())
}

pub async fn stat(client: &Client, path: &str) -> anyhow::Result<()> {
    let a = client.stat(path).await.with_context(|| path.to_string())?;
    println!("  File: {path}");
    println!(
        "  Size: {:<12} Type: {:?}  Inode: {}  Links: {}",
        a.size, a.kind, a.inode, a.nlink
    );
    println!(
        "Access: ({:04o}/{})  Uid: {}  Gid: {}",
        a.mode,
        mode_string(&a),
        a.uid,
        a.gid
    );
    println!("Access: {}", format_time(a.atime));
    println!("Modify: {}", format_time(a.mtime));
    println!("Change: {}", format_time(a.ctime));
    println!(" Birth: {}", format_time(a.crtime));
    if a.kind == FileKind::File {
        let chunks = client.chunks(a.inode).await?;
        println!("Chunks: {} of {} bytes", chunks.len(), client.chunk_size());
        for c in chunks {
            let replicas: Vec<_> = c.replicas.iter().map(|r| r.addr.as_str()).collect();
            println!(
                "  #{:<5} handle {} v{}  replicas {}",
                c.index,
                c.handle.hex(),
                c.version,
                replicas.join(" ")
            );
        }
    }
    Ok(())
}

/// `quarry status`; `web` are the masters' status page URLs from the cluster file (the
/// leader's is printed first).
pub async fn status(client: &Client, json: bool, web: &[String]) -> anyhow::Result<()> {
    let s = client.cluster_status().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    // The cluster file lists masters and their pages in the same order.
    let leader = s
        .masters
        .iter()
        .find(|m| m.role == "leader")
        .map(|m| &m.addr);
    let mut pages: Vec<&String> = web.iter().collect();
    if let Some(i) = leader.and_then(|l| s.masters.iter().position(|m| &m.addr == l)) {
        if i < pages.len() {
            let url = pages.remove(i);
            pages.insert(0, url);
        }
    }
    if !pages.is_empty() {
        let list: Vec<&str> = pages.iter().map(|u| u.as_str()).collect();
        println!("status page: {}", list.join("  "));
    }
    println!(
        "chunk size {}, replication {}, under-replicated chunks {}, missing chunks {}",
        human_bytes(s.chunk_size),
        s.replication,
        s.under_replicated_chunks,
        s.missing_chunks
    );
    println!(
        "re-replication queue {}, clones in flight {}, over-replicated chunks {}, \
         corrupt reports {}",
        s.repair_queue, s.clones_in_flight, s.over_replicated_chunks, s.corrupt_reports
    );
    println!(
        "since the master started: {} clones done ({}), {} failed",
        s.clones_done,
        human_bytes(s.cloned_bytes),
        s.clones_failed
    );
    println!();
    println!(
        "MASTER                 ID  ROLE          TERM     COMMIT    APPLIED      FILES   DIRS     CHUNKS  TRASH FILES      TRASH SIZE"
    );
    for m in &s.masters {
        println!(
            "{:<22} {:>2}  {:<11} {:>6} {:>10} {:>10} {:>10} {:>6} {:>10} {:>12} {:>15}",
            m.addr,
            m.id,
            m.role,
            m.term,
            m.commit_index,
            m.log_index,
            m.files,
            m.directories,
            m.chunks,
            m.trash_files,
            human_bytes(m.trash_bytes)
        );
    }
    println!();
    println!("CHUNKSERVER            ID                   STATE  CHUNKS       USED   CAPACITY  HEARTBEAT");
    for c in &s.chunkservers {
        println!(
            "{:<22} {:<20} {:<6} {:>6} {:>10} {:>10}  {} ms ago",
            c.addr,
            c.id,
            if c.alive { "up" } else { "DOWN" },
            c.chunks,
            human_bytes(c.used_bytes),
            human_bytes(c.capacity_bytes),
            c.last_heartbeat_ms_ago
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_times() {
        assert_eq!(
            format_time(Timestamp { secs: 0, nanos: 5 }),
            "1970-01-01 00:00:00.000000005"
        );
        assert_eq!(
            format_time(Timestamp {
                secs: 1_795_305_600,
                nanos: 0
            }),
            "2026-11-22 00:00:00.000000000"
        );
        assert_eq!(
            format_time(Timestamp { secs: -1, nanos: 0 }),
            "1969-12-31 23:59:59.000000000"
        );
    }

    #[test]
    fn names() {
        assert_eq!(basename("/a/b/c"), "c");
        assert_eq!(basename("/a/b/"), "b");
        assert_eq!(basename("x"), "x");
    }
}
