//! `quarry mount DIR`, `quarry umount DIR` and the mount of `quarry up --mount DIR`.

use crate::cluster::ClusterFile;
use crate::config::Config;
use crate::connect::{connect, Connection};
use anyhow::Context;
use std::path::{Path, PathBuf};

/// A live mount and the connection it serves from. Unmounts on drop.
pub struct Mounted {
    mount: Option<quarry_fs::Mount>,
    _conn: Connection,
}

impl Mounted {
    pub fn dir(&self) -> &Path {
        self.mount.as_ref().expect("mounted").mountpoint()
    }

    /// Unmount (lazily if busy) without blocking a runtime thread.
    pub async fn unmount(mut self) -> anyhow::Result<()> {
        let mount = self.mount.take().expect("mounted");
        let dir = mount.mountpoint().to_path_buf();
        tokio::task::spawn_blocking(move || mount.unmount())
            .await?
            .with_context(|| format!("unmounting {}", dir.display()))
    }
}

/// Connect to the cluster of `file` and mount it at `dir` (created if missing), with the client
/// settings of `cfg`.
pub async fn mount(file: &ClusterFile, dir: &Path, cfg: &Config) -> anyhow::Result<Mounted> {
    anyhow::ensure!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: load the fuse module or run scripts/setup.sh"
    );
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let conn = connect(file, cfg).await?;
    let options = cfg.mount_options();
    let client = conn.client.clone();
    let runtime = tokio::runtime::Handle::current();
    let target: PathBuf = dir.to_path_buf();
    let mount =
        tokio::task::spawn_blocking(move || quarry_fs::mount(client, runtime, &target, &options))
            .await?
            .with_context(|| format!("mounting at {}", dir.display()))?;
    Ok(Mounted {
        mount: Some(mount),
        _conn: conn,
    })
}

/// `quarry mount DIR [--http ADDR]`: serve until Ctrl-C or SIGTERM, then unmount. With
/// `http`, `/metrics` (the FUSE and client side of this process) is served there.
pub async fn run_mount(
    file: &ClusterFile,
    dir: &Path,
    http: Option<std::net::SocketAddr>,
    cfg: &Config,
) -> anyhow::Result<()> {
    let mounted = mount(file, dir, cfg).await?;
    println!(
        "Quarry ({}) is mounted at {}. Ctrl-C unmounts.",
        file.masters.join(", "),
        mounted.dir().display()
    );
    let _server = match http {
        Some(bind) => {
            let s = quarry_cli::http::serve_metrics(bind).await?;
            println!("metrics: {}metrics", quarry_cli::http::url_of(s.addr()));
            Some(s)
        }
        None => None,
    };
    let stop = crate::up::shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep(std::time::Duration::from_millis(250)) => {
                if mounted.mount.as_ref().is_none_or(|m| m.is_finished()) {
                    println!("Unmounted from outside (quarry umount / fusermount3 -u).");
                    return Ok(());
                }
            }
        }
    }
    mounted.unmount().await?;
    println!("Unmounted.");
    Ok(())
}

/// `quarry umount DIR`: `fusermount3 -u DIR`.
pub fn run_umount(dir: &Path) -> anyhow::Result<()> {
    quarry_fs::unmount_path(dir)?;
    Ok(())
}
