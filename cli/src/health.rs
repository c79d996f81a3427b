//! `quarry fsck` and `quarry fileinfo`: chunk health as the master sees it.

use anyhow::{bail, Context};
use quarry_client::Client;
use quarry_proto::master::{ChunkReplicas, FileInfo, Fsck, FsckReply};
use quarry_proto::FileKind;

/// Problem chunks listed by `fsck` (the counts always cover every chunk).
const MAX_PROBLEMS: u32 = 1000;

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        "0.0 %".into()
    } else {
        format!("{:.1} %", part as f64 * 100.0 / whole as f64)
    }
}

/// Print the report; an error (non-zero exit) unless the filesystem below `path` is healthy.
pub async fn fsck(client: &Client, path: &str, json: bool) -> anyhow::Result<()> {
    let r: FsckReply = client
        .rpc_master(&Fsck {
            path: path.to_string(),
            max_problems: MAX_PROBLEMS,
        })
        .await
        .with_context(|| path.to_string())?;
    let status = r.status();
    if json {
        #[derive(serde::Serialize)]
        struct Out<'a> {
            status: &'a str,
            #[serde(flatten)]
            report: &'a FsckReply,
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&Out { status, report: &r })?
        );
    } else {
        for p in &r.problems {
            let what = match p.live {
                0 if p.corrupt > 0 => "MISSING (every known replica corrupt)".to_string(),
                0 => "MISSING (no live replica)".to_string(),
                l if l < p.goal => format!("under-replicated, {l} of {} live replicas", p.goal),
                l if l > p.goal => format!("over-replicated, {l} live replicas for {}", p.goal),
                l => format!("{l} live replicas"),
            };
            let corrupt = match p.corrupt {
                0 => String::new(),
                n => format!(", {n} corrupt"),
            };
            println!(
                "{} chunk #{} (handle {} v{}): {what}{corrupt}",
                p.path,
                p.index,
                p.handle.hex(),
                p.version
            );
        }
        if r.problems_truncated {
            println!("(more problem chunks not listed)");
        }
        if !r.problems.is_empty() {
            println!();
        }
        println!("Status: {status}");
        println!(" Total size:\t{} B", r.bytes);
        println!(" Total dirs:\t{}", r.directories);
        println!(" Total files:\t{}", r.files);
        println!(" Total chunks:\t{}", r.chunks);
        println!(" Healthy chunks:\t\t{}", r.healthy);
        println!(
            " Under-replicated chunks:\t{} ({})",
            r.under_replicated,
            percent(r.under_replicated, r.chunks)
        );
        println!(
            " Over-replicated chunks:\t{} ({})",
            r.over_replicated,
            percent(r.over_replicated, r.chunks)
        );
        println!(" Corrupt replicas:\t\t{}", r.corrupt_replicas);
        println!(
            " Missing chunks:\t\t{} ({})",
            r.missing,
            percent(r.missing, r.chunks)
        );
        println!();
        println!("The filesystem under path '{path}' is {status}");
    }
    if status != "HEALTHY" {
        bail!("the filesystem under path '{path}' is {status}");
    }
    Ok(())
}

fn human_ms(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

pub async fn fileinfo(client: &Client, path: &str, json: bool) -> anyhow::Result<()> {
    let attr = client.stat(path).await.with_context(|| path.to_string())?;
    if attr.kind != FileKind::File {
        bail!("{path}: not a regular file");
    }
    let mut chunks: Vec<ChunkReplicas> = Vec::new();
    let mut first = 0;
    let size = loop {
        let r = client
            .rpc_master(&FileInfo {
                inode: attr.inode,
                first_index: first,
                count: 1024,
            })
            .await?;
        first = r.chunks.last().map_or(first, |c| c.index + 1);
        chunks.extend(r.chunks);
        if !r.more {
            break r.size;
        }
    };
    if json {
        #[derive(serde::Serialize)]
        struct Out<'a> {
            path: &'a str,
            inode: u64,
            size: u64,
            chunk_size: u64,
            chunks: &'a [ChunkReplicas],
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&Out {
                path,
                inode: attr.inode.0,
                size,
                chunk_size: client.chunk_size(),
                chunks: &chunks,
            })?
        );
        return Ok(());
    }
    println!(
        "{path}: inode {}, {size} bytes, {} chunks of {} bytes",
        attr.inode,
        chunks.len(),
        client.chunk_size()
    );
    for c in &chunks {
        let live = c
            .replicas
            .iter()
            .filter(|r| r.state == quarry_proto::master::ReplicaState::Live)
            .count();
        println!(
            "#{:<5} handle {}  v{}  len {}  {live}/{} live",
            c.index,
            c.handle.hex(),
            c.version,
            c.len,
            c.goal
        );
        for r in &c.replicas {
            let mut line = format!(
                "    {:<22} node {:<20} {}",
                r.server.addr,
                r.server.id,
                r.state.as_str()
            );
            if let Some(v) = r.reported_version {
                line.push_str(&format!(" (v{v})"));
            }
            if r.primary {
                line.push_str("  primary");
                if let Some(ms) = r.lease_remaining_ms {
                    line.push_str(&format!(" (lease {} left)", human_ms(ms)));
                }
            }
            println!("{line}");
        }
    }
    Ok(())
}
