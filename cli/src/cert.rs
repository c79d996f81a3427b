//! `quarry cert`: the cluster CA and node certificates for a deployment on several machines.
//!
//! `quarry up` makes its own CA and certificates in its data directory. A multi-host cluster
//! keeps the CA key on one (offline) machine instead: `cert ca` creates it, `cert issue` writes
//! into a directory exactly the files one node loads with `--certs DIR` (never the CA key), and
//! `cert show` says what a certificate is and whether it verifies. The file names are the ones
//! [`crate::cluster::load_or_issue`] looks for: a master or chunkserver `NAME` loads
//! `NAME.pem`/`NAME.key`, a chunkserver's MapReduce worker `NAME-worker.pem`/`.key` (a client
//! certificate), and clients and mounts `client.pem`/`client.key`; every node also `ca.pem`.

use crate::cluster::worker_stem;
use anyhow::{bail, Context};
use quarry_proto::Role;
use quarry_transport::certs::{self, ClusterCa};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

#[derive(clap::Subcommand)]
pub enum CertCommand {
    /// Create the cluster CA: DIR/ca.pem (give it to every node) and DIR/ca.key (mode 0600;
    /// keep it on this machine). Refuses to overwrite an existing CA.
    Ca {
        #[arg(long)]
        dir: PathBuf,
        /// Cluster name, written into the CA's subject.
        #[arg(long, default_value = "quarry")]
        name: String,
    },
    /// Issue the certificates of one node into DIR (ca.pem and the node's certificate and
    /// key; never the CA key). A chunkserver also gets its MapReduce worker's client
    /// certificate. Copy DIR to the node and start it with `--certs DIR`.
    Issue {
        /// Directory of the CA (ca.pem and ca.key).
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        /// master, chunkserver or client.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// The node's name: what it passes as `--name` (masters and chunkservers); for a
        /// client only the certificate's subject (its files are always client.pem/.key).
        #[arg(long)]
        name: String,
        /// An IP address of the node, added to the certificate (repeatable). Peers identify
        /// nodes by the CA's signature, not by address, so this is informational.
        #[arg(long = "ip", value_name = "IP")]
        ips: Vec<IpAddr>,
        /// Where to write the files (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Show a certificate, or every certificate in a directory: subject, role, SANs, validity,
    /// whether its key matches and whether it verifies against ca.pem next to it. Exits
    /// non-zero if anything does not check out.
    Show {
        #[arg(value_name = "DIR|FILE")]
        path: PathBuf,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s)
        .ok_or_else(|| format!("unknown role {s:?}: expected master, chunkserver or client"))
}

pub fn run(cmd: CertCommand) -> anyhow::Result<()> {
    match cmd {
        CertCommand::Ca { dir, name } => {
            create_ca(&dir, &name)?;
            println!(
                "created the cluster CA: {} and {} (keep the key here; copy only ca.pem)",
                dir.join("ca.pem").display(),
                dir.join("ca.key").display()
            );
            Ok(())
        }
        CertCommand::Issue {
            ca,
            role,
            name,
            ips,
            out,
        } => {
            for path in issue(&ca, role, &name, &ips, &out)? {
                println!("wrote {}", path.display());
            }
            Ok(())
        }
        CertCommand::Show { path } => {
            let (text, problems) = show(&path)?;
            print!("{text}");
            if problems > 0 {
                bail!("{problems} problem(s) in {}", path.display());
            }
            Ok(())
        }
    }
}

/// `cert ca`: a new CA in `dir` (created with mode 0700 if missing).
pub fn create_ca(dir: &Path, name: &str) -> anyhow::Result<ClusterCa> {
    if !dir.exists() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    ClusterCa::create(dir, name)
}

/// The certificates (file stem, role, subject name) a node of `role` named `name` loads.
pub fn node_files(role: Role, name: &str) -> Vec<(String, Role, String)> {
    match role {
        Role::Master => vec![(name.to_string(), Role::Master, name.to_string())],
        Role::Chunkserver => {
            let worker = worker_stem(name);
            vec![
                (name.to_string(), Role::Chunkserver, name.to_string()),
                (worker.clone(), Role::Client, worker),
            ]
        }
        Role::Client => vec![("client".to_string(), Role::Client, name.to_string())],
    }
}

/// A node name is used as a file name: letters, digits, `.`, `-` and `_`, not starting with
/// a dot, at most 64 characters.
fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if !ok {
        bail!(
            "node name {name:?}: use 1 to 64 letters, digits, '.', '-' or '_' (not starting \
             with '.'); it names the certificate files"
        );
    }
    Ok(())
}

/// `cert issue`: write the node's files into `out`; returns the paths written.
pub fn issue(
    ca_dir: &Path,
    role: Role,
    name: &str,
    ips: &[IpAddr],
    out: &Path,
) -> anyhow::Result<Vec<PathBuf>> {
    check_name(name)?;
    if !ca_dir.join("ca.key").exists() {
        bail!(
            "{} not found: --ca must name the directory made by `quarry cert ca`",
            ca_dir.join("ca.key").display()
        );
    }
    let ca = ClusterCa::load(ca_dir)?;
    let files = node_files(role, name);
    // Check everything before writing anything.
    let ca_pem_path = out.join("ca.pem");
    if ca_pem_path.exists() {
        let existing = std::fs::read_to_string(&ca_pem_path)
            .with_context(|| format!("reading {}", ca_pem_path.display()))?;
        if existing != ca.cert_pem() {
            bail!(
                "{} belongs to another CA: use an empty --out directory",
                ca_pem_path.display()
            );
        }
    }
    for (stem, _, _) in &files {
        for ext in ["pem", "key"] {
            let p = out.join(format!("{stem}.{ext}"));
            if p.exists() {
                bail!(
                    "{} already exists: refusing to overwrite it (remove it to re-issue)",
                    p.display()
                );
            }
        }
    }
    let mut written = vec![ca_pem_path];
    for (stem, role, subject) in files {
        let cert = ca.issue_with_ips(role, &subject, ips)?;
        cert.save(out, &stem)?;
        written.push(out.join(format!("{stem}.pem")));
        written.push(out.join(format!("{stem}.key")));
    }
    Ok(written)
}

/// `cert show`: the report, and how many problems it found (a key that does not match, a
/// certificate that does not verify against ca.pem, a missing ca.pem).
pub fn show(path: &Path) -> anyhow::Result<(String, usize)> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    let (dir, files) = if meta.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("listing {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "pem"))
            .collect();
        // ca.pem first, then the rest by name.
        files.sort_by_key(|p| (p.file_name().is_none_or(|n| n != "ca.pem"), p.clone()));
        if files.is_empty() {
            bail!("no .pem files in {}", path.display());
        }
        (path.to_path_buf(), files)
    } else {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        (dir, vec![path.to_path_buf()])
    };
    let ca_path = dir.join("ca.pem");
    let ca_pem = std::fs::read_to_string(&ca_path).ok();
    let mut out = String::new();
    let mut problems = 0;
    for file in files {
        let pem = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        let s = certs::summarize(&pem).with_context(|| format!("{}", file.display()))?;
        out += &format!("{}\n", file.display());
        out += &format!("  subject   {}\n", s.subject);
        out += &format!("  issuer    {}\n", s.issuer);
        let role = match (s.is_ca, s.role) {
            (true, _) => "CA".to_string(),
            (false, Some(r)) => r.to_string(),
            (false, None) => "none (not a Quarry node certificate)".to_string(),
        };
        out += &format!("  role      {role}\n");
        let sans: Vec<String> = s
            .dns_names
            .iter()
            .map(|d| format!("DNS:{d}"))
            .chain(s.ips.iter().map(|ip| format!("IP:{ip}")))
            .collect();
        if !sans.is_empty() {
            out += &format!("  SANs      {}\n", sans.join(", "));
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let left = if s.not_after_unix < now {
            problems += 1;
            "EXPIRED".to_string()
        } else {
            format!("{} days left", (s.not_after_unix - now) / 86_400)
        };
        out += &format!("  valid     {} to {} ({left})\n", s.not_before, s.not_after);
        let key = file.with_extension("key");
        if key.exists() {
            let key_pem = std::fs::read_to_string(&key)
                .with_context(|| format!("reading {}", key.display()))?;
            let name = key.file_name().unwrap_or_default().to_string_lossy();
            match certs::key_matches(&pem, &key_pem) {
                Ok(()) => out += &format!("  key       {name} matches\n"),
                Err(e) => {
                    problems += 1;
                    out += &format!("  key       {name} DOES NOT MATCH: {e:#}\n");
                }
            }
        } else if !s.is_ca {
            out += "  key       none next to it\n";
        }
        if s.is_ca {
            if file == ca_path && dir.join("ca.key").exists() {
                out += "  note      the CA key is in this directory: keep it off the nodes\n";
            }
        } else {
            match &ca_pem {
                None => {
                    problems += 1;
                    out += &format!("  verifies  NO: {} is missing\n", ca_path.display());
                }
                Some(ca) => match certs::verify_signed_by(&pem, ca) {
                    Ok(()) => out += "  verifies  yes, against ca.pem\n",
                    Err(e) => {
                        problems += 1;
                        out += &format!("  verifies  NO, against ca.pem: {e:#}\n");
                    }
                },
            }
        }
    }
    Ok((out, problems))
}

/// Load node certificate `stem` from `dir` without any CA key (what a node does at start).
#[cfg(test)]
fn load_as_node(
    dir: &Path,
    stem: &str,
    role: Role,
) -> anyhow::Result<quarry_transport::certs::NodeCert> {
    crate::cluster::load_or_issue(dir, stem, role, stem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use quarry_transport::certs::NodeCert;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn ca_is_created_once() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ca");
        create_ca(&dir, "test").unwrap();
        assert_eq!(mode(&dir.join("ca.key")), 0o600);
        assert_eq!(mode(&dir), 0o700);
        let before = std::fs::read_to_string(dir.join("ca.pem")).unwrap();
        let err = create_ca(&dir, "test").unwrap_err().to_string();
        assert!(err.contains("refusing to overwrite"), "{err}");
        assert_eq!(std::fs::read_to_string(dir.join("ca.pem")).unwrap(), before);
    }

    #[test]
    fn issued_files_are_what_each_node_loads_without_the_ca_key() {
        let tmp = tempfile::tempdir().unwrap();
        let ca = tmp.path().join("ca");
        create_ca(&ca, "test").unwrap();
        let ip: IpAddr = "10.1.2.3".parse().unwrap();

        let m = tmp.path().join("m1");
        issue(&ca, Role::Master, "master-1", &[ip], &m).unwrap();
        let cs = tmp.path().join("cs1");
        issue(&ca, Role::Chunkserver, "cs-1", &[], &cs).unwrap();
        let cl = tmp.path().join("client");
        issue(&ca, Role::Client, "alice", &[], &cl).unwrap();

        let names = |d: &Path| {
            let mut v: Vec<String> = std::fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(names(&m), ["ca.pem", "master-1.key", "master-1.pem"]);
        assert_eq!(
            names(&cs),
            [
                "ca.pem",
                "cs-1-worker.key",
                "cs-1-worker.pem",
                "cs-1.key",
                "cs-1.pem"
            ]
        );
        assert_eq!(names(&cl), ["ca.pem", "client.key", "client.pem"]);
        for key in [
            m.join("master-1.key"),
            cs.join("cs-1.key"),
            cs.join("cs-1-worker.key"),
            cl.join("client.key"),
        ] {
            assert_eq!(mode(&key), 0o600, "{}", key.display());
        }

        // Exactly what the node startup code loads, with no CA key around.
        let c = load_as_node(&m, "master-1", Role::Master).unwrap();
        assert_eq!(c.name, "master-1");
        let c = load_as_node(&cs, "cs-1", Role::Chunkserver).unwrap();
        assert_eq!(c.name, "cs-1");
        let w = load_as_node(&cs, &worker_stem("cs-1"), Role::Client).unwrap();
        assert_eq!(w.name, "cs-1-worker");
        let c = NodeCert::load(&cl, "client").unwrap();
        assert_eq!((c.role, c.name.as_str()), (Role::Client, "alice"));

        // The wrong role is refused by name.
        let err = format!(
            "{:#}",
            load_as_node(&m, "master-1", Role::Chunkserver).unwrap_err()
        );
        assert!(err.contains("is a master certificate"), "{err}");

        // No certificate and no CA key: the error names the command that makes one.
        let err = format!(
            "{:#}",
            load_as_node(&m, "master-2", Role::Master).unwrap_err()
        );
        assert!(
            err.contains("quarry cert issue --ca CA_DIR --role master --name master-2"),
            "{err}"
        );
        let err = format!(
            "{:#}",
            load_as_node(&m, &worker_stem("cs-9"), Role::Client).unwrap_err()
        );
        assert!(err.contains("--role chunkserver --name cs-9"), "{err}");

        // Re-issuing over existing files is refused; so is an --out of another CA.
        let err = issue(&ca, Role::Master, "master-1", &[], &m)
            .unwrap_err()
            .to_string();
        assert!(err.contains("already exists"), "{err}");
        let other = tmp.path().join("other-ca");
        create_ca(&other, "other").unwrap();
        let err = issue(&other, Role::Master, "master-2", &[], &m)
            .unwrap_err()
            .to_string();
        assert!(err.contains("belongs to another CA"), "{err}");
        // A directory without the CA key is not a CA.
        let err = issue(&m, Role::Master, "master-2", &[], &tmp.path().join("x"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--ca must name"), "{err}");
        // Names become file names.
        for bad in ["", "../x", ".hidden", "a/b", "a b"] {
            assert!(issue(&ca, Role::Master, bad, &[], &tmp.path().join("y")).is_err());
        }
    }

    #[test]
    fn mismatched_key_and_foreign_ca_are_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let ca = tmp.path().join("ca");
        create_ca(&ca, "test").unwrap();
        let a = tmp.path().join("a");
        let b = tmp.path().join("b");
        issue(&ca, Role::Master, "master-1", &[], &a).unwrap();
        issue(&ca, Role::Master, "master-1", &[], &b).unwrap();
        let (text, problems) = show(&a).unwrap();
        assert_eq!(problems, 0, "{text}");
        assert!(text.contains("role      master"), "{text}");
        assert!(text.contains("role      CA"), "{text}");
        assert!(text.contains("verifies  yes"), "{text}");
        assert!(text.contains("master-1.key matches"), "{text}");

        // A key from another issue of the same name.
        std::fs::copy(b.join("master-1.key"), a.join("master-1.key")).unwrap();
        let (text, problems) = show(&a.join("master-1.pem")).unwrap();
        assert_eq!(problems, 1, "{text}");
        assert!(text.contains("DOES NOT MATCH"), "{text}");
        let err = format!(
            "{:#}",
            load_as_node(&a, "master-1", Role::Master).unwrap_err()
        );
        assert!(err.contains("does not belong"), "{err}");

        // A ca.pem of another CA: nothing verifies, and the node refuses to start.
        let c = tmp.path().join("c");
        issue(&ca, Role::Chunkserver, "cs-1", &[], &c).unwrap();
        let other = tmp.path().join("other");
        create_ca(&other, "other").unwrap();
        std::fs::copy(other.join("ca.pem"), c.join("ca.pem")).unwrap();
        let (text, problems) = show(&c).unwrap();
        assert_eq!(problems, 2, "{text}");
        assert!(text.contains("verifies  NO"), "{text}");
        assert!(load_as_node(&c, "cs-1", Role::Chunkserver).is_err());

        // Missing files.
        std::fs::remove_file(c.join("ca.pem")).unwrap();
        let (text, problems) = show(&c).unwrap();
        assert_eq!(problems, 2, "{text}");
        assert!(text.contains("is missing"), "{text}");
        assert!(show(&tmp.path().join("nothing-here")).is_err());
        let empty = tmp.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        assert!(show(&empty).is_err());
    }
}
