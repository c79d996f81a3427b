//! FUSE helpers shared by the mount tests: whether a mount is possible, a mount of a harness
//! cluster that is always unmounted (a guard), and waits on `/proc/mounts`.

use crate::{Cluster, TestClient};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Whether this run is CI (`CI=true`), where nothing may be skipped.
pub fn under_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Whether `cmd` is on the PATH.
pub fn have_command(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether FUSE mounts are possible here; under CI a missing `/dev/fuse` is a failure.
pub fn fuse_available() -> bool {
    if Path::new("/dev/fuse").exists() {
        return true;
    }
    assert!(
        !under_ci(),
        "/dev/fuse is missing under CI: run scripts/setup.sh on a machine with FUSE"
    );
    eprintln!("skipping: /dev/fuse is missing (run scripts/setup.sh)");
    false
}

/// Whether `dir` is a mount point (per `/proc/mounts`).
pub fn is_mounted(dir: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let dir = dir.to_string_lossy();
    mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(dir.as_ref()))
}

/// Poll `check` every 20 ms until it holds, or panic after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A mount of the cluster; unmounts (and checks it is gone) when dropped.
pub struct MountGuard {
    pub dir: PathBuf,
    mount: Option<quarry_fs::Mount>,
    _client: TestClient,
    _tmp: tempfile::TempDir,
}

impl MountGuard {
    pub fn new(rt: &tokio::runtime::Runtime, cluster: &Cluster) -> MountGuard {
        let tmp = tempfile::tempdir().unwrap();
        let dir = std::fs::canonicalize(tmp.path()).unwrap().join("mnt");
        std::fs::create_dir(&dir).unwrap();
        let client = rt.block_on(cluster.client());
        let mount = quarry_fs::mount(
            client.client.clone(),
            rt.handle().clone(),
            &dir,
            &quarry_fs::MountOptions::default(),
        )
        .expect("mount");
        wait_until("the mount in /proc/mounts", Duration::from_secs(10), || {
            is_mounted(&dir)
        });
        MountGuard {
            dir,
            mount: Some(mount),
            _client: client,
            _tmp: tmp,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// Run `script` with `sh -c` in the mount; panics with its output if it fails.
    pub fn sh(&self, script: &str) -> String {
        let out = Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(&self.dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "`{script}` failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if let Some(m) = self.mount.take() {
            if let Err(e) = m.unmount() {
                eprintln!("unmount {}: {e}", self.dir.display());
            }
        }
        if !std::thread::panicking() {
            wait_until("the mount to go away", Duration::from_secs(10), || {
                !is_mounted(&self.dir)
            });
        }
    }
}

/// A runtime for a test that serves the cluster and the FUSE requests while the test body
/// blocks in system calls on its own thread.
pub fn runtime() -> tokio::runtime::Runtime {
    crate::init_tracing();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}
