//! The cluster's certificate authority and node certificates.
//!
//! Every node holds a certificate signed by the cluster CA. It names the node in its subject CN and
//! its role in a SAN DNS name `<role>.role.quarry`; every node certificate also carries the SAN DNS
//! name `node.quarry`, which every dialer uses as TLS server name (so peers are authenticated by
//! the CA, not by their address), plus any IP SANs asked for. [`identity_of`] reads role and name
//! back from a DER certificate; the QUIC transport calls it on every peer after the handshake.
//!
//! This module only generates, stores and parses certificates (rcgen, x509-parser); it must not
//! depend on the network code or on any runtime.

use crate::{Identity, Role};
use anyhow::{anyhow, bail, Context};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::net::IpAddr;
use std::path::Path;

/// The SAN DNS name every node certificate carries; dialers use it as TLS server name.
pub const SERVER_NAME: &str = "node.quarry";
/// Suffix of the SAN DNS name that carries a node's role: `<role>.role.quarry`.
pub const ROLE_SUFFIX: &str = ".role.quarry";

/// The cluster CA (rcgen). Node certs carry the node's role in a SAN DNS name
/// "<role>.role.quarry" (role = master|chunkserver|client), the node name as CN, plus the
/// SAN DNS name "node.quarry" that every client uses as TLS server name, plus IP SANs given.
pub struct ClusterCa {
    cert_pem: String,
    key: KeyPair,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa").finish_non_exhaustive()
    }
}

impl ClusterCa {
    /// A new CA with a fresh key, named after the cluster.
    pub fn generate(cluster_name: &str) -> anyhow::Result<ClusterCa> {
        let key = KeyPair::generate().context("generating the CA key")?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("Quarry CA {cluster_name}"));
        dn.push(DnType::OrganizationName, "Quarry");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).context("self-signing the CA")?;
        Ok(ClusterCa {
            cert_pem: cert.pem(),
            key,
        })
    }

    /// dir/ca.pem and dir/ca.key (key file mode 0600); created on first call.
    pub fn load_or_create(dir: &Path) -> anyhow::Result<ClusterCa> {
        if dir.join("ca.pem").exists() || dir.join("ca.key").exists() {
            return ClusterCa::load(dir);
        }
        ClusterCa::create(dir, "quarry")
    }

    /// A new CA written to dir/ca.pem and dir/ca.key (mode 0600); an error if either exists
    /// (a CA is never overwritten: every certificate it signed would stop verifying).
    pub fn create(dir: &Path, cluster_name: &str) -> anyhow::Result<ClusterCa> {
        for f in ["ca.pem", "ca.key"] {
            if dir.join(f).exists() {
                bail!(
                    "{} already exists: refusing to overwrite a CA",
                    dir.join(f).display()
                );
            }
        }
        let ca = ClusterCa::generate(cluster_name)?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        write_file(
            &dir.join("ca.key"),
            ca.key.serialize_pem().as_bytes(),
            0o600,
        )?;
        write_file(&dir.join("ca.pem"), ca.cert_pem.as_bytes(), 0o644)?;
        Ok(ca)
    }

    /// Read dir/ca.pem and dir/ca.key; the key must belong to the certificate.
    pub fn load(dir: &Path) -> anyhow::Result<ClusterCa> {
        let cert_pem = read_string(&dir.join("ca.pem"))?;
        let key_pem = read_string(&dir.join("ca.key"))?;
        let key = KeyPair::from_pem(&key_pem)
            .with_context(|| format!("parsing {}", dir.join("ca.key").display()))?;
        let der = first_cert_der(&cert_pem)?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| anyhow!("parsing the CA certificate: {e}"))?;
        if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            bail!(
                "{} does not belong to {}",
                dir.join("ca.key").display(),
                dir.join("ca.pem").display()
            );
        }
        Ok(ClusterCa { cert_pem, key })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A certificate for node `name` playing `role`.
    pub fn issue(&self, role: Role, name: &str) -> anyhow::Result<NodeCert> {
        self.issue_with_ips(role, name, &[])
    }

    /// Like [`ClusterCa::issue`], with extra IP SANs.
    pub fn issue_with_ips(
        &self,
        role: Role,
        name: &str,
        ips: &[IpAddr],
    ) -> anyhow::Result<NodeCert> {
        if name.is_empty() {
            bail!("node name must not be empty");
        }
        let key = KeyPair::generate().context("generating the node key")?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        dn.push(DnType::OrganizationName, "Quarry");
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let mut sans = vec![
            SanType::DnsName(format!("{}{ROLE_SUFFIX}", role.as_str()).try_into()?),
            SanType::DnsName(SERVER_NAME.try_into()?),
        ];
        sans.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params.subject_alt_names = sans;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, &self.key)
            .context("reading the CA certificate")?;
        let cert = params
            .signed_by(&key, &issuer)
            .context("signing the node certificate")?;
        Ok(NodeCert {
            role,
            name: name.to_string(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            ca_pem: self.cert_pem.clone(),
        })
    }
}

/// A node's certificate and key (PEM), with the CA certificate it trusts.
#[derive(Clone, Debug)]
pub struct NodeCert {
    pub role: Role,
    pub name: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub ca_pem: String,
}

impl NodeCert {
    /// dir/<stem>.pem, dir/<stem>.key (0600), dir/ca.pem
    pub fn save(&self, dir: &Path, stem: &str) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        write_file(
            &dir.join(format!("{stem}.key")),
            self.key_pem.as_bytes(),
            0o600,
        )?;
        write_file(
            &dir.join(format!("{stem}.pem")),
            self.cert_pem.as_bytes(),
            0o644,
        )?;
        write_file(&dir.join("ca.pem"), self.ca_pem.as_bytes(), 0o644)?;
        Ok(())
    }

    /// Read what [`NodeCert::save`] wrote; role and name are read back from the certificate.
    pub fn load(dir: &Path, stem: &str) -> anyhow::Result<NodeCert> {
        let cert_pem = read_string(&dir.join(format!("{stem}.pem")))?;
        let key_pem = read_string(&dir.join(format!("{stem}.key")))?;
        let ca_pem = read_string(&dir.join("ca.pem"))?;
        let id = identity_of(&first_cert_der(&cert_pem)?)
            .with_context(|| format!("reading {}", dir.join(format!("{stem}.pem")).display()))?;
        KeyPair::from_pem(&key_pem)
            .with_context(|| format!("parsing {}", dir.join(format!("{stem}.key")).display()))?;
        Ok(NodeCert {
            role: id.role,
            name: id.name,
            cert_pem,
            key_pem,
            ca_pem,
        })
    }

    /// Check that the key belongs to the certificate and that the CA signed it (what the
    /// peers will check during the TLS handshake, found out before the node starts).
    pub fn check(&self) -> anyhow::Result<()> {
        key_matches(&self.cert_pem, &self.key_pem)?;
        verify_signed_by(&self.cert_pem, &self.ca_pem)
    }

    /// Role and name of this certificate.
    pub fn identity(&self) -> Identity {
        Identity {
            role: self.role,
            name: self.name.clone(),
        }
    }
}

/// Role and name from a DER certificate (x509-parser). Error if no role SAN.
pub fn identity_of(cert_der: &[u8]) -> anyhow::Result<Identity> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| anyhow!("parsing certificate: {e}"))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| anyhow!("reading the SAN extension: {e}"))?
        .ok_or_else(|| anyhow!("certificate has no subject alternative names"))?;
    let mut role = None;
    for gn in &san.value.general_names {
        if let GeneralName::DNSName(dns) = gn {
            if let Some(prefix) = dns.strip_suffix(ROLE_SUFFIX) {
                let r = Role::parse(prefix).ok_or_else(|| anyhow!("unknown role {prefix:?}"))?;
                if role.is_some_and(|old| old != r) {
                    bail!("certificate names more than one role");
                }
                role = Some(r);
            }
        }
    }
    let role = role.ok_or_else(|| anyhow!("certificate has no role SAN (*{ROLE_SUFFIX})"))?;
    let name = cert
        .subject()
        .iter_common_name()
        .next()
        .ok_or_else(|| anyhow!("certificate has no common name"))?
        .as_str()
        .map_err(|e| anyhow!("reading the common name: {e}"))?
        .to_string();
    Ok(Identity { role, name })
}

/// What `quarry cert show` prints about a certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertSummary {
    /// The subject distinguished name, e.g. `CN=master-1, O=Quarry`.
    pub subject: String,
    pub issuer: String,
    /// Whether this is a CA certificate (basic constraints CA:true).
    pub is_ca: bool,
    /// The role SAN's role (None for a CA or a foreign certificate).
    pub role: Option<Role>,
    /// The SAN DNS names and IP addresses, as written in the certificate.
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
    /// Validity, as seconds since the Unix epoch and as text.
    pub not_before_unix: i64,
    pub not_after_unix: i64,
    pub not_before: String,
    pub not_after: String,
}

/// Parse the first certificate of a PEM string for display.
pub fn summarize(cert_pem: &str) -> anyhow::Result<CertSummary> {
    use x509_parser::extensions::GeneralName;
    let der = first_cert_der(cert_pem)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| anyhow!("parsing certificate: {e}"))?;
    let mut dns_names = Vec::new();
    let mut ips = Vec::new();
    if let Some(san) = cert
        .subject_alternative_name()
        .map_err(|e| anyhow!("reading the SAN extension: {e}"))?
    {
        for gn in &san.value.general_names {
            match gn {
                GeneralName::DNSName(d) => dns_names.push(d.to_string()),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => ips.push(IpAddr::from(<[u8; 4]>::try_from(*b).expect("4 bytes"))),
                    16 => ips.push(IpAddr::from(<[u8; 16]>::try_from(*b).expect("16 bytes"))),
                    n => bail!("an IP SAN of {n} bytes"),
                },
                _ => {}
            }
        }
    }
    let is_ca = cert
        .basic_constraints()
        .map_err(|e| anyhow!("reading basic constraints: {e}"))?
        .is_some_and(|bc| bc.value.ca);
    let role = if is_ca {
        None
    } else {
        identity_of(&der).ok().map(|id| id.role)
    };
    Ok(CertSummary {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        is_ca,
        role,
        dns_names,
        ips,
        not_before_unix: cert.validity().not_before.timestamp(),
        not_after_unix: cert.validity().not_after.timestamp(),
        not_before: cert.validity().not_before.to_string(),
        not_after: cert.validity().not_after.to_string(),
    })
}

/// Check that `key_pem` is the private key of the first certificate in `cert_pem`.
pub fn key_matches(cert_pem: &str, key_pem: &str) -> anyhow::Result<()> {
    let key = KeyPair::from_pem(key_pem).context("parsing the private key")?;
    let der = first_cert_der(cert_pem)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| anyhow!("parsing certificate: {e}"))?;
    if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        bail!("the private key does not belong to the certificate");
    }
    Ok(())
}

/// Verify that the first certificate in `cert_pem` is a node certificate signed by the CA in
/// `ca_pem` and valid now, the way every peer verifies it during the handshake (webpki, as
/// a TLS client certificate; node certificates serve as both ends).
pub fn verify_signed_by(cert_pem: &str, ca_pem: &str) -> anyhow::Result<()> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in certs_der(ca_pem)? {
        roots
            .add(ca)
            .map_err(|e| anyhow!("the CA certificate is not usable: {e}"))?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
            .build()
            .map_err(|e| anyhow!("building the verifier: {e}"))?;
    let mut chain = certs_der(cert_pem)?;
    let end_entity = chain.remove(0);
    verifier
        .verify_client_cert(&end_entity, &chain, rustls::pki_types::UnixTime::now())
        .map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// All certificates in a PEM string, as DER.
pub(crate) fn certs_der(
    pem: &str,
) -> anyhow::Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("parsing PEM certificates: {e}"))?;
    if certs.is_empty() {
        bail!("no certificate in PEM");
    }
    Ok(certs)
}

/// The private key in a PEM string, as DER.
pub(crate) fn key_der(pem: &str) -> anyhow::Result<rustls::pki_types::PrivateKeyDer<'static>> {
    use rustls::pki_types::{pem::PemObject, PrivateKeyDer};
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| anyhow!("parsing PEM key: {e}"))
}

fn first_cert_der(pem: &str) -> anyhow::Result<Vec<u8>> {
    Ok(certs_der(pem)?.swap_remove(0).to_vec())
}

fn read_string(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Write a file atomically (temporary file and rename) with the given mode.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(contents)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_round_trip() {
        let ca = ClusterCa::generate("test").unwrap();
        for role in Role::ALL {
            let cert = ca.issue(role, "node-7").unwrap();
            let der = first_cert_der(&cert.cert_pem).unwrap();
            assert_eq!(identity_of(&der).unwrap(), Identity::new(role, "node-7"));
        }
        // The CA itself has no role.
        assert!(identity_of(&first_cert_der(ca.cert_pem()).unwrap()).is_err());
        assert!(identity_of(b"garbage").is_err());
    }

    #[test]
    fn save_load_round_trip() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let ca = ClusterCa::load_or_create(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join("ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = ClusterCa::load_or_create(dir.path()).unwrap();
        assert_eq!(again.cert_pem(), ca.cert_pem());

        let cert = ca
            .issue_with_ips(Role::Chunkserver, "cs-1", &["127.0.0.1".parse().unwrap()])
            .unwrap();
        let node_dir = dir.path().join("node");
        cert.save(&node_dir, "chunkserver").unwrap();
        let mode = std::fs::metadata(node_dir.join("chunkserver.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let loaded = NodeCert::load(&node_dir, "chunkserver").unwrap();
        assert_eq!(loaded.role, Role::Chunkserver);
        assert_eq!(loaded.name, "cs-1");
        assert_eq!(loaded.cert_pem, cert.cert_pem);
        assert_eq!(loaded.key_pem, cert.key_pem);
        assert_eq!(loaded.ca_pem, ca.cert_pem());

        // A CA key that does not match its certificate is refused.
        let other = ClusterCa::generate("other").unwrap();
        std::fs::write(dir.path().join("ca.pem"), other.cert_pem()).unwrap();
        assert!(ClusterCa::load(dir.path()).is_err());
    }

    #[test]
    fn summary_verification_and_key_match() {
        let ca = ClusterCa::generate("test").unwrap();
        let ip: IpAddr = "10.0.0.7".parse().unwrap();
        let cert = ca.issue_with_ips(Role::Master, "master-1", &[ip]).unwrap();
        let s = summarize(&cert.cert_pem).unwrap();
        assert!(s.subject.contains("CN=master-1"), "{}", s.subject);
        assert!(!s.is_ca);
        assert_eq!(s.role, Some(Role::Master));
        assert_eq!(s.ips, vec![ip]);
        assert!(s.dns_names.contains(&SERVER_NAME.to_string()));
        assert!(s.not_after_unix > s.not_before_unix);
        let ca_summary = summarize(ca.cert_pem()).unwrap();
        assert!(ca_summary.is_ca);
        assert_eq!(ca_summary.role, None);

        cert.check().unwrap();
        let other_ca = ClusterCa::generate("other").unwrap();
        assert!(verify_signed_by(&cert.cert_pem, other_ca.cert_pem()).is_err());
        let other = ca.issue(Role::Master, "master-2").unwrap();
        assert!(key_matches(&cert.cert_pem, &other.key_pem).is_err());
        let mixed = NodeCert {
            key_pem: other.key_pem.clone(),
            ..cert.clone()
        };
        assert!(mixed.check().is_err());
    }
}
