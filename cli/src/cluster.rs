//! `cluster.toml` (how every command finds the cluster) and the certificates on disk.

use anyhow::{bail, Context};
use quarry_proto::Role;
use quarry_transport::certs::{ClusterCa, NodeCert};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const DEFAULT_DATA_DIR: &str = "quarry-data";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterFile {
    /// Master addresses (`host:port`).
    pub masters: Vec<String>,
    /// Directory with `ca.pem` and the client certificate (`client.pem`, `client.key`).
    pub certs: PathBuf,
    /// The data directory `quarry up` runs in (absent for hand-made cluster files).
    #[serde(default)]
    pub data: Option<PathBuf>,
    /// Ports chosen on first start, kept so that restarts come back at the same addresses.
    #[serde(default)]
    pub chunkserver_ports: Vec<u16>,
    /// Chunk size of the namespace (informational; the master holds the real value).
    #[serde(default)]
    pub chunk_size: Option<u64>,
    /// HTTP endpoints (`/metrics`; on masters also the status page), by node name
    /// (`master-1`, `chunkserver-0`, ...): `host:port`, kept across restarts like the ports
    /// above. In one process (`quarry up` without `--processes`) only the masters listen, and
    /// each one's `/metrics` covers the whole process.
    #[serde(default)]
    pub http: BTreeMap<String, String>,
}

impl ClusterFile {
    /// The status page URLs of the masters, in the order of `masters`.
    pub fn master_urls(&self) -> Vec<String> {
        let mut out: Vec<(String, String)> = self
            .http
            .iter()
            .filter(|(name, _)| name.starts_with("master-"))
            .map(|(name, addr)| (name.clone(), format!("http://{addr}/")))
            .collect();
        out.sort_by_key(|(name, _)| {
            name.trim_start_matches("master-")
                .parse::<u64>()
                .unwrap_or(u64::MAX)
        });
        out.into_iter().map(|(_, url)| url).collect()
    }
}

impl ClusterFile {
    pub fn load(path: &Path) -> anyhow::Result<ClusterFile> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "reading {} (start a cluster with `quarry up`, or pass --cluster FILE / set QUARRY_CLUSTER)",
                path.display()
            )
        })?;
        let file: ClusterFile =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        if file.masters.is_empty() {
            bail!("{}: no masters listed", path.display());
        }
        Ok(file)
    }

    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let text = format!(
            "# Written by `quarry up`; other commands find the cluster here.\n{}",
            toml::to_string_pretty(self)?
        );
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }
}

/// Which cluster file a command uses: `--cluster`, then `QUARRY_CLUSTER`, then the default.
pub fn cluster_path(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os("QUARRY_CLUSTER").map(PathBuf::from))
        .unwrap_or_else(|| Path::new(DEFAULT_DATA_DIR).join("cluster.toml"))
}

/// The file stem of the client certificate the MapReduce worker of chunkserver `name` uses
/// (`<name>-worker.pem`, `<name>-worker.key`).
pub fn worker_stem(name: &str) -> String {
    format!("{name}-worker")
}

/// The `quarry cert issue` command that makes certificate `stem` (of `role`).
fn issue_hint(stem: &str, role: Role) -> String {
    let (role, name) = match stem.strip_suffix("-worker") {
        Some(cs) if role == Role::Client => (Role::Chunkserver, cs),
        _ => (role, stem),
    };
    format!("quarry cert issue --ca CA_DIR --role {role} --name {name} --out DIR")
}

/// Load the certificate `stem` from `dir`, checked against `dir/ca.pem` (the key must belong
/// to it, the CA must have signed it, the role must be `role`). Without one, issue it with the
/// CA key in `dir` (how `quarry up` works); without a CA key either, the error says which
/// `quarry cert issue` command makes it.
pub fn load_or_issue(dir: &Path, stem: &str, role: Role, name: &str) -> anyhow::Result<NodeCert> {
    let pem = dir.join(format!("{stem}.pem"));
    if pem.exists() {
        let cert = NodeCert::load(dir, stem)?;
        if cert.role != role {
            bail!(
                "{} is a {} certificate, not a {role} one",
                pem.display(),
                cert.role
            );
        }
        cert.check().with_context(|| {
            format!(
                "{} with {} and {}",
                pem.display(),
                dir.join(format!("{stem}.key")).display(),
                dir.join("ca.pem").display()
            )
        })?;
        return Ok(cert);
    }
    if !dir.join("ca.key").exists() {
        bail!(
            "no certificate {} (and no CA key in {} to issue one): on the machine that holds \
             the CA, run `{}` and copy DIR's files into {}",
            pem.display(),
            dir.display(),
            issue_hint(stem, role),
            dir.display()
        );
    }
    let ca = ClusterCa::load(dir)?;
    let cert = ca.issue(role, name)?;
    cert.save(dir, stem)?;
    Ok(cert)
}

/// Create the CA (first start) and the client certificate in `dir`.
pub fn init_certs(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    ClusterCa::load_or_create(dir)?;
    load_or_issue(dir, "client", Role::Client, "client")?;
    Ok(())
}
