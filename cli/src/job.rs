//! `quarry job ...`: submit MapReduce jobs, follow their progress, show status and counters.
//!
//! Paths may be given as paths inside a mounted Quarry directory (`/mnt/q/books`, or relative
//! to a working directory inside one) or as paths in the filesystem (`/books`).

use anyhow::{bail, Context};
use quarry_client::Client;
use quarry_proto::job::*;
use quarry_proto::OpId;
use std::io::IsTerminal;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(clap::Subcommand)]
pub enum JobCommand {
    /// Count words: `word count` lines in OUT/part-NNNNN.
    Wordcount {
        /// Input files, directories or globs, then the output directory (must not exist).
        #[arg(required = true, num_args = 2..)]
        paths: Vec<String>,
        #[command(flatten)]
        opts: SubmitOpts,
    },
    /// Lines containing PATTERN (a literal string): `path:offset:line` in OUT/part-NNNNN.
    Grep {
        pattern: String,
        #[arg(required = true, num_args = 2..)]
        paths: Vec<String>,
        #[command(flatten)]
        opts: SubmitOpts,
    },
    /// Inverted index: `word n path,path,...` in OUT/part-NNNNN.
    Index {
        #[arg(required = true, num_args = 2..)]
        paths: Vec<String>,
        #[command(flatten)]
        opts: SubmitOpts,
    },
    /// A job's state and progress.
    Status {
        id: u64,
        #[arg(long)]
        json: bool,
    },
    /// Every job the coordinator remembers.
    List {
        #[arg(long)]
        json: bool,
    },
    /// A job's counters.
    Counters {
        id: u64,
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
pub struct SubmitOpts {
    /// Reduce tasks (output files).
    #[arg(long, short = 'r', default_value_t = 3)]
    reducers: u32,
    /// Wait for the job to finish, showing progress; exit non-zero if it fails.
    #[arg(long)]
    wait: bool,
}

pub async fn run(client: &Client, cmd: JobCommand) -> anyhow::Result<()> {
    let (app, paths, opts) = match cmd {
        JobCommand::Wordcount { paths, opts } => (AppSpec::WordCount, paths, opts),
        JobCommand::Grep {
            pattern,
            paths,
            opts,
        } => (AppSpec::Grep { pattern }, paths, opts),
        JobCommand::Index { paths, opts } => (AppSpec::InvertedIndex, paths, opts),
        JobCommand::Status { id, json } => {
            let s = get(client, JobId(id)).await?;
            if json {
                println!("{}", status_json(&s));
            } else {
                print_status(&s);
            }
            return Ok(());
        }
        JobCommand::List { json } => {
            let jobs = list(client).await?;
            if json {
                let all: Vec<String> = jobs.iter().map(status_json).collect();
                println!("[{}]", all.join(","));
            } else {
                println!(
                    "{:>4}  {:<10} {:<10} {:>9} {:>9}  OUTPUT",
                    "ID", "APP", "STATE", "MAPS", "REDUCES"
                );
                for s in jobs {
                    println!(
                        "{:>4}  {:<10} {:<10} {:>9} {:>9}  {}",
                        s.id.0,
                        s.spec.app.name(),
                        state_name(&s.state),
                        format!("{}/{}", s.maps.done, s.maps.total),
                        format!("{}/{}", s.reduces.done, s.reduces.total),
                        s.spec.output
                    );
                }
            }
            return Ok(());
        }
        JobCommand::Counters { id, json } => {
            let s = get(client, JobId(id)).await?;
            if json {
                println!("{}", counters_json(&s.counters));
            } else {
                print_counters(&s.counters);
            }
            return Ok(());
        }
    };
    let (output, inputs) = paths.split_last().expect("clap requires two paths");
    let mounts = quarry_mounts();
    let spec = JobSpec {
        app,
        inputs: inputs
            .iter()
            .map(|p| to_fs_path(p, &mounts))
            .collect::<anyhow::Result<_>>()?,
        output: to_fs_path(output, &mounts)?,
        reducers: opts.reducers,
    };
    let id = client
        .rpc_master(&SubmitJob {
            op: OpId {
                client: client.client_id(),
                seq: 1,
            },
            spec: spec.clone(),
        })
        .await
        .context("submitting the job")?;
    if !opts.wait {
        println!(
            "job {id} submitted: {} -> {}",
            spec.inputs.join(" "),
            spec.output
        );
        println!("follow it with: quarry job status {id}");
        return Ok(());
    }
    let status = follow(client, id).await?;
    match &status.state {
        JobState::Succeeded => {
            let secs = elapsed_secs(&status);
            let c = &status.counters;
            println!(
                "job {id} succeeded in {secs:.1} s: {} in, {} maps ({} data-local), {} reduces, {} output lines in {}",
                human_bytes(c.input_bytes),
                status.maps.total,
                c.data_local_maps,
                status.reduces.total,
                c.output_records,
                status.spec.output
            );
            Ok(())
        }
        JobState::Failed(why) => bail!("job {id} failed: {why}"),
        JobState::Running => unreachable!("follow returns a finished job"),
    }
}

async fn get(client: &Client, id: JobId) -> anyhow::Result<JobStatus> {
    client
        .rpc_master(&GetJob { job: id })
        .await
        .with_context(|| format!("job {id}"))
}

async fn list(client: &Client) -> anyhow::Result<Vec<JobStatus>> {
    Ok(client.rpc_master(&ListJobs {}).await?)
}

/// Poll the job until it ends, drawing progress (bars on a terminal, lines otherwise).
async fn follow(client: &Client, id: JobId) -> anyhow::Result<JobStatus> {
    let tty = std::io::stderr().is_terminal();
    let bars = indicatif::MultiProgress::new();
    let style =
        indicatif::ProgressStyle::with_template("{prefix:>7} [{bar:40}] {pos}/{len} tasks {msg}")
            .expect("valid template")
            .progress_chars("=> ");
    let map_bar = bars.add(indicatif::ProgressBar::new(0).with_style(style.clone()));
    map_bar.set_prefix("map");
    let reduce_bar = bars.add(indicatif::ProgressBar::new(0).with_style(style));
    reduce_bar.set_prefix("reduce");
    if !tty {
        bars.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let started = Instant::now();
    let mut last_line = String::new();
    let mut last_print = Instant::now() - Duration::from_secs(10);
    let mut failures = 0;
    loop {
        let s = match get(client, id).await {
            Ok(s) => {
                failures = 0;
                s
            }
            // The master may be restarting: keep following for a while.
            Err(e) if failures < 100 => {
                failures += 1;
                tracing::debug!("{e:#}");
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let secs = started.elapsed().as_secs_f64().max(0.001);
        let rate = s.maps.bytes_done as f64 / secs / 1e6;
        map_bar.set_length(s.maps.total as u64);
        map_bar.set_position(s.maps.done as u64);
        map_bar.set_message(format!("{} running, {rate:.0} MB/s", s.maps.running));
        reduce_bar.set_length(s.reduces.total as u64);
        reduce_bar.set_position(s.reduces.done as u64);
        reduce_bar.set_message(format!("{} running", s.reduces.running));
        if !tty {
            let line = format!(
                "job {id}: map {}/{} ({} running), reduce {}/{} ({} running), {rate:.0} MB/s",
                s.maps.done,
                s.maps.total,
                s.maps.running,
                s.reduces.done,
                s.reduces.total,
                s.reduces.running
            );
            if line != last_line && last_print.elapsed() >= Duration::from_secs(1)
                || s.state != JobState::Running
            {
                eprintln!("{line}");
                last_line = line;
                last_print = Instant::now();
            }
        }
        if s.state != JobState::Running {
            map_bar.finish();
            reduce_bar.finish();
            return Ok(s);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn elapsed_secs(s: &JobStatus) -> f64 {
    match s.finished {
        Some(f) => (f.as_unix_nanos() - s.submitted.as_unix_nanos()) as f64 / 1e9,
        None => 0.0,
    }
}

fn state_name(s: &JobState) -> &'static str {
    match s {
        JobState::Running => "running",
        JobState::Succeeded => "succeeded",
        JobState::Failed(_) => "failed",
    }
}

fn print_status(s: &JobStatus) {
    println!(
        "job {}  {}  {}",
        s.id,
        s.spec.app.name(),
        state_name(&s.state)
    );
    if let JobState::Failed(why) = &s.state {
        println!("  error    {why}");
    }
    println!("  input    {}", s.spec.inputs.join(" "));
    println!("  output   {}", s.spec.output);
    println!(
        "  map      {}/{} done, {} running, {} of {}",
        s.maps.done,
        s.maps.total,
        s.maps.running,
        human_bytes(s.maps.bytes_done),
        human_bytes(s.maps.bytes_total)
    );
    println!(
        "  reduce   {}/{} done, {} running",
        s.reduces.done, s.reduces.total, s.reduces.running
    );
    if s.finished.is_some() {
        println!("  took     {:.1} s", elapsed_secs(s));
    }
    for o in &s.outputs {
        println!("  {o}");
    }
}

fn counter_rows(c: &JobCounters) -> Vec<(&'static str, u64)> {
    vec![
        ("input_bytes", c.input_bytes),
        ("input_records", c.input_records),
        ("map_output_records", c.map_output_records),
        ("shuffle_bytes", c.shuffle_bytes),
        ("output_records", c.output_records),
        ("output_bytes", c.output_bytes),
        ("data_local_maps", c.data_local_maps),
        ("remote_maps", c.remote_maps),
        ("map_attempts", c.map_attempts),
        ("reduce_attempts", c.reduce_attempts),
        ("backup_attempts", c.backup_attempts),
        ("failed_attempts", c.failed_attempts),
        ("lost_workers", c.lost_workers),
    ]
}

fn print_counters(c: &JobCounters) {
    for (name, v) in counter_rows(c) {
        println!("{name:<20} {v}");
    }
}

fn counters_json(c: &JobCounters) -> String {
    let fields: Vec<String> = counter_rows(c)
        .into_iter()
        .map(|(k, v)| format!("\"{k}\":{v}"))
        .collect();
    format!("{{{}}}", fields.join(","))
}

fn status_json(s: &JobStatus) -> String {
    let (state, error) = match &s.state {
        JobState::Failed(why) => ("failed", Some(why.as_str())),
        other => (state_name(other), None),
    };
    serde_json::json!({
        "id": s.id.0,
        "app": s.spec.app.name(),
        "state": state,
        "error": error,
        "inputs": s.spec.inputs,
        "output": s.spec.output,
        "reducers": s.spec.reducers,
        "maps": {"total": s.maps.total, "done": s.maps.done, "running": s.maps.running},
        "reduces": {"total": s.reduces.total, "done": s.reduces.done, "running": s.reduces.running},
        "outputs": s.outputs,
        "seconds": elapsed_secs(s),
        "counters": serde_json::from_str::<serde_json::Value>(&counters_json(&s.counters)).unwrap_or_default(),
    })
    .to_string()
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Mount points of Quarry filesystems on this machine (from /proc/self/mountinfo).
fn quarry_mounts() -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    parse_mountinfo(&info)
}

fn parse_mountinfo(info: &str) -> Vec<PathBuf> {
    info.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let dash = fields.iter().position(|f| *f == "-")?;
            let fstype = *fields.get(dash + 1)?;
            let source = *fields.get(dash + 2)?;
            // `fuse.quarry` when the subtype is recorded, else `fuse` with source `quarry`.
            if fstype != "fuse.quarry" && !(fstype == "fuse" && source == "quarry") {
                return None;
            }
            // Mount points escape space, tab, newline and backslash as octal.
            Some(PathBuf::from(unescape_octal(fields.get(4)?)))
        })
        .collect()
}

fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `a/./b/../c` → `a/c`, without touching the disk (the path may not exist yet).
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// A path as the filesystem knows it: a path under a Quarry mount loses the mount point
/// (`/mnt/q/books` → `/books`); another absolute path is taken as a filesystem path.
fn to_fs_path(arg: &str, mounts: &[PathBuf]) -> anyhow::Result<String> {
    let p = Path::new(arg);
    let abs = if p.is_absolute() {
        lexical(p)
    } else {
        lexical(&std::env::current_dir()?.join(p))
    };
    // The longest mount point that contains the path wins (mounts may nest).
    let inside = mounts
        .iter()
        .filter(|m| abs.starts_with(m))
        .max_by_key(|m| m.as_os_str().len());
    let fs_path = match inside {
        Some(m) => {
            let rest = abs.strip_prefix(m).expect("starts_with checked");
            format!("/{}", rest.display())
        }
        None if p.is_absolute() => abs.display().to_string(),
        None => bail!(
            "{arg}: a relative path must be inside a mounted Quarry directory; give the path \
             in the filesystem (such as /books) or in a mount (such as /mnt/q/books)"
        ),
    };
    Ok(fs_path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths_map_to_filesystem_paths() {
        let mounts = vec![PathBuf::from("/mnt/q"), PathBuf::from("/tmp/a b")];
        assert_eq!(to_fs_path("/mnt/q/books", &mounts).unwrap(), "/books");
        assert_eq!(to_fs_path("/mnt/q", &mounts).unwrap(), "/");
        assert_eq!(to_fs_path("/mnt/q/x/../out", &mounts).unwrap(), "/out");
        assert_eq!(
            to_fs_path("/mnt/qq/books", &mounts).unwrap(),
            "/mnt/qq/books"
        );
        assert_eq!(to_fs_path("/books/*.txt", &mounts).unwrap(), "/books/*.txt");
        assert_eq!(to_fs_path("/tmp/a b/in", &mounts).unwrap(), "/in");
    }

    #[test]
    fn mountinfo_lines_are_parsed() {
        let info = "36 35 98:0 / /mnt1 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
                    80 24 0:50 / /tmp/q\\040dir rw,nosuid,nodev - fuse.quarry quarry rw,user_id=0\n\
                    43 27 0:40 / /tmp/wct/mnt rw,nosuid,nodev,relatime - fuse quarry rw,user_id=0\n\
                    44 27 0:41 / /tmp/other rw,nosuid,nodev,relatime - fuse sshfs rw,user_id=0\n";
        assert_eq!(
            parse_mountinfo(info),
            vec![PathBuf::from("/tmp/q dir"), PathBuf::from("/tmp/wct/mnt")]
        );
    }
}
