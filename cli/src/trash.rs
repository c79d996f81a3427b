//! `quarry trash list|restore|purge` (deleted files kept for the master's retention) and
//! `quarry setrep` / `quarry getrep` (replication goals of files and directories).

use crate::files::format_time;
use anyhow::Context;
use quarry_client::Client;
use quarry_proto::master::PurgeWhich;
use quarry_proto::{FileKind, InodeId, Timestamp};
use std::io::Write;

#[derive(clap::Subcommand)]
pub enum TrashCommand {
    /// Files in the trash: id (inode), deletion time (UTC), size, original path.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Give a trashed file a name again: its original path, or PATH.
    Restore { id: u64, path: Option<String> },
    /// Drop trashed files and reclaim their chunks now: those past the retention, or every one
    /// with --all, or those deleted more than --older-than-secs ago.
    Purge {
        #[arg(long, conflicts_with = "older_than_secs")]
        all: bool,
        #[arg(long, value_name = "SECS")]
        older_than_secs: Option<u64>,
    },
}

pub async fn run(client: &Client, cmd: TrashCommand) -> anyhow::Result<()> {
    match cmd {
        TrashCommand::List { json } => list(client, json).await,
        TrashCommand::Restore { id, path } => {
            let a = client
                .trash_restore(InodeId(id), path.as_deref())
                .await
                .with_context(|| format!("restoring trash entry {id}"))?;
            if let Some(p) = path {
                println!("restored {id} to {p} ({} bytes)", a.size);
            } else {
                println!("restored {id} ({} bytes)", a.size);
            }
            Ok(())
        }
        TrashCommand::Purge {
            all,
            older_than_secs,
        } => {
            let which = match (all, older_than_secs) {
                (true, _) => PurgeWhich::All,
                (false, Some(secs)) => {
                    let now = Timestamp::now().as_unix_nanos();
                    PurgeWhich::DeletedBefore(Timestamp::from_unix_nanos(
                        now - i128::from(secs) * 1_000_000_000,
                    ))
                }
                (false, None) => PurgeWhich::Expired,
            };
            let n = client.trash_purge(which).await?;
            println!("purged {n} file{}", if n == 1 { "" } else { "s" });
            Ok(())
        }
    }
}

async fn list(client: &Client, json: bool) -> anyhow::Result<()> {
    let (entries, retention_ms) = client.trash_list().await?;
    let mut out = std::io::stdout().lock();
    if json {
        let rows: Vec<serde_json::Value> = entries
            .iter()
            .map(|e| {
                serde_json::json!({
                    "id": e.inode.0,
                    "path": e.path,
                    "deleted_unix_nanos": e.deleted.as_unix_nanos().to_string(),
                    "deleted": format_time(e.deleted),
                    "size": e.size,
                    "chunks": e.chunks,
                })
            })
            .collect();
        let doc = serde_json::json!({ "retention_ms": retention_ms, "entries": rows });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        return Ok(());
    }
    if entries.is_empty() {
        writeln!(out, "the trash is empty (retention {retention_ms} ms)")?;
        return Ok(());
    }
    writeln!(
        out,
        "{:>10}  {:<19}  {:>12}  PATH",
        "ID", "DELETED (UTC)", "SIZE"
    )?;
    for e in entries {
        writeln!(
            out,
            "{:>10}  {}  {:>12}  {}",
            e.inode.0,
            &format_time(e.deleted)[..19],
            e.size,
            e.path
        )?;
    }
    Ok(())
}

/// `quarry setrep [-r] N PATH`.
pub async fn setrep(client: &Client, goal: u32, path: &str, recursive: bool) -> anyhow::Result<()> {
    let a = client.stat(path).await.with_context(|| path.to_string())?;
    let changed = client
        .set_goal(a.inode, goal, recursive)
        .await
        .with_context(|| path.to_string())?;
    if recursive && a.kind == FileKind::Directory {
        println!("{path}: replication goal {goal} ({changed} inodes changed)");
    } else {
        println!("{path}: replication goal {goal}");
    }
    Ok(())
}

/// `quarry getrep PATH`.
pub async fn getrep(client: &Client, path: &str) -> anyhow::Result<()> {
    let a = client.stat(path).await.with_context(|| path.to_string())?;
    let goal = client
        .get_goal(a.inode)
        .await
        .with_context(|| path.to_string())?;
    println!("{path}: {goal}");
    Ok(())
}
