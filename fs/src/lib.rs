//! `quarry-fs`: the FUSE adapter. It mounts a Quarry filesystem with fuser over a
//! `quarry_client::Client` and maps every Quarry error to an errno in one place (`errno.rs`).
//!
//! It depends on `quarry-client` and `quarry-proto` only; it reads no config, flags or
//! environment (the CLI does) and never blocks a tokio worker: FUSE callbacks spawn tasks on the
//! runtime handle given to [`mount`].
//!
//! Consistency: the kernel caches entries and attributes for [`MountOptions::ttl`] (1 s by
//! default); each open re-reads the file's size and mtime from the master and keeps the kernel's
//! cached pages only if both are unchanged since the file was last opened in this mount (else
//! they are dropped), and close/fsync commit buffered writes (moving the mtime), which gives
//! close-to-open consistency between mounts.

mod attr;
mod errno;
mod file;
mod fs;

pub use errno::{errno, OpError};
pub use file::FileConfig;
pub use fs::{FsConfig, QuarryFs, HOLD_LINGER};

use fuser::{BackgroundSession, MountOption, SessionACL};
use quarry_client::Client;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How to mount.
#[derive(Clone, Debug)]
pub struct MountOptions {
    /// Shown as the source in `/proc/mounts` and `df`.
    pub fsname: String,
    /// Let users other than the mounting one in (`allow_other`; needs root or
    /// `user_allow_other` in `/etc/fuse.conf`).
    pub allow_other: bool,
    /// Threads reading requests from `/dev/fuse` (the work itself runs on the tokio runtime).
    pub session_threads: usize,
    /// Entry and attribute cache lifetime in the kernel.
    pub ttl: Duration,
    /// Largest write request the kernel sends.
    pub max_write_bytes: u32,
    /// A file's write buffer is pushed to the replicas at this size.
    pub flush_bytes: usize,
    /// Write-buffer memory across all open files of the mount.
    pub buffer_budget_bytes: usize,
    /// Bytes of one readahead window (one read of the replicas).
    pub readahead_bytes: u64,
    /// Readahead windows fetched ahead of a sequential reader at once.
    pub readahead_windows: usize,
    /// Write-buffer pushes of one file in flight at once: a sequential writer fills the next
    /// buffer while earlier ones are written to the replicas.
    pub pushes_in_flight: usize,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            fsname: "quarry".into(),
            allow_other: running_as_root(),
            session_threads: 2,
            ttl: Duration::from_secs(1),
            max_write_bytes: 1 << 20,
            flush_bytes: 8 << 20,
            buffer_budget_bytes: 256 << 20,
            readahead_bytes: 4 << 20,
            readahead_windows: 4,
            pushes_in_flight: 4,
        }
    }
}

fn running_as_root() -> bool {
    // SAFETY-free: read the effective uid from procfs rather than calling libc.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// A mounted filesystem. Dropping it unmounts (see [`Mount::unmount`]).
pub struct Mount {
    mountpoint: PathBuf,
    session: Option<BackgroundSession>,
}

/// Mount Quarry at `mountpoint`. Blocking (mount and FUSE handshake): call it from a plain
/// thread or `spawn_blocking`, never from inside an async task. Requests are served on
/// `runtime`.
pub fn mount(
    client: Client,
    runtime: tokio::runtime::Handle,
    mountpoint: &Path,
    options: &MountOptions,
) -> io::Result<Mount> {
    let fs = QuarryFs::new(
        client,
        runtime,
        FsConfig {
            ttl: options.ttl,
            max_write_bytes: options.max_write_bytes,
            file: FileConfig {
                flush_bytes: options.flush_bytes.max(options.max_write_bytes as usize),
                readahead_bytes: options.readahead_bytes,
                readahead_windows: options.readahead_windows.max(1),
                pushes_in_flight: options.pushes_in_flight.max(1),
            },
            buffer_budget_bytes: options.buffer_budget_bytes,
        },
    );
    let mut config = fuser::Config::default();
    // No AutoUnmount: with fuser 0.18 it can hang an in-process unmount; we unmount
    // explicitly (Drop, Ctrl-C, `quarry umount`).
    config.mount_options = vec![
        MountOption::FSName(options.fsname.clone()),
        MountOption::Subtype("quarry".into()),
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    config.acl = if options.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(options.session_threads.max(1));
    let mountpoint = std::fs::canonicalize(mountpoint)?;
    let notifier = fs.notifier_slot();
    let session = fuser::spawn_mount(fs, &mountpoint, &config)?;
    let _ = notifier.set(session.notifier());
    tracing::info!(mountpoint = %mountpoint.display(), "mounted");
    Ok(Mount {
        mountpoint,
        session: Some(session),
    })
}

impl Mount {
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Whether the session has ended (e.g. someone ran `fusermount3 -u` on the mountpoint).
    pub fn is_finished(&self) -> bool {
        self.session.as_ref().is_none_or(|s| s.guard.is_finished())
    }

    /// Unmount and wait for the session threads. If the mount is busy (files open, a shell
    /// inside), it is detached lazily instead and disappears when the last user leaves.
    pub fn unmount(mut self) -> io::Result<()> {
        self.unmount_now()
    }

    fn unmount_now(&mut self) -> io::Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        if session.guard.is_finished() {
            // Unmounted from outside already: nothing left to detach.
            return session.join();
        }
        match session.umount_and_join() {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::warn!(mountpoint = %self.mountpoint.display(), error = %e,
                    "unmount failed; detaching lazily");
                lazy_unmount(&self.mountpoint)
            }
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Err(e) = self.unmount_now() {
            tracing::warn!(mountpoint = %self.mountpoint.display(), error = %e, "unmount");
        }
    }
}

/// The fusermount3 binary (it is setuid root, so it also works for unprivileged users).
pub fn fusermount_bin() -> &'static str {
    ["/usr/bin/fusermount3", "/bin/fusermount3"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("fusermount3")
}

/// `fusermount3 -u DIR`: unmount a Quarry mount, e.g. one left by a `quarry mount` that died.
pub fn unmount_path(dir: &Path) -> io::Result<()> {
    run_fusermount(&["-u"], dir)
}

fn lazy_unmount(dir: &Path) -> io::Result<()> {
    run_fusermount(&["-u", "-z"], dir)
}

fn run_fusermount(flags: &[&str], dir: &Path) -> io::Result<()> {
    let out = std::process::Command::new(fusermount_bin())
        .args(flags)
        .arg("--")
        .arg(dir)
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{} {} {}: {}",
            fusermount_bin(),
            flags.join(" "),
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}
