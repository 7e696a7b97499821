//! Mutual TLS: the certificates of a cluster (one CA; a certificate per
//! node naming its id; a certificate per operator naming who and which
//! role), the rustls configs tonic is given, and who is at the other end of
//! a connection.
//!
//! Names in certificates (subject alternative names):
//! - every node: DNS `faxi-watchdog` (what a client that does not know the
//!   node's id checks) and `node-<id>.faxi-watchdog` (what a peer checks),
//!   and URI `urn:faxi-watchdog:node:<id>` (what the server reads);
//! - an operator: URI `urn:faxi-watchdog:operator:<name>:<role>`.
//!
//! A certificate is only read here after rustls has verified it against the
//! cluster CA, so a name in it is the CA's word.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::mesh::state::NodeId;

/// The DNS name every node certificate holds.
pub const ANY_NODE: &str = "faxi-watchdog";
const URI_PREFIX: &str = "urn:faxi-watchdog:";
const CA_NAME: &str = "faxi-watchdog cluster CA";
/// How long a node or operator certificate made by `certs` is valid.
pub const LEAF_VALIDITY: Duration = Duration::from_secs(825 * 24 * 3600);
/// How long the CA made by `certs` is valid.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The DNS name only node `id`'s certificate holds.
pub fn node_dns(id: NodeId) -> String {
    format!("node-{id}.{ANY_NODE}")
}

/// What an operator may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Status, watch, incidents.
    Read,
    /// Also approve, maintenance, drill, transfer-leader.
    Operate,
    /// Also members.
    Admin,
}

impl Role {
    /// The role's name in certificates and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Operate => "operate",
            Role::Admin => "admin",
        }
    }

    /// Parses `read`, `operate` or `admin`.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "read" => Some(Role::Read),
            "operate" => Some(Role::Operate),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// Who is at the other end of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A node of this cluster.
    Node(NodeId),
    /// An operator, by name and role.
    Operator {
        /// The name in the certificate.
        name: String,
        /// What it may do.
        role: Role,
    },
    /// Nobody verified: the node runs with `insecure = true`.
    Insecure,
}

impl Caller {
    /// Whether this caller may do what needs `role` (a node may do what
    /// any operator may: it forwards operators' requests).
    pub fn may(&self, role: Role) -> bool {
        match self {
            Caller::Node(_) | Caller::Insecure => true,
            Caller::Operator { role: have, .. } => *have >= role,
        }
    }

    /// How audit records and errors name this caller.
    pub fn describe(&self) -> String {
        match self {
            Caller::Node(id) => format!("node {id}"),
            Caller::Operator { name, role } => format!("{name} ({})", role.as_str()),
            Caller::Insecure => "anyone (insecure = true)".into(),
        }
    }
}

/// Reads who a verified certificate chain names; `None` when its first
/// certificate names neither a node nor an operator.
pub fn caller_of(chain: &[CertificateDer<'_>]) -> Option<Caller> {
    let leaf = chain.first()?;
    let cert = webpki::EndEntityCert::try_from(leaf).ok()?;
    let mut found = None;
    for uri in cert.valid_uri_names() {
        let Some(rest) = uri.strip_prefix(URI_PREFIX) else {
            continue;
        };
        let parsed = if let Some(id) = rest.strip_prefix("node:") {
            id.parse::<NodeId>()
                .ok()
                .filter(|id| *id != 0)
                .map(Caller::Node)
        } else if let Some(op) = rest.strip_prefix("operator:") {
            op.rsplit_once(':').and_then(|(name, role)| {
                Some(Caller::Operator {
                    name: name.to_owned(),
                    role: Role::parse(role)?,
                })
            })
        } else {
            None
        };
        match (parsed, &found) {
            (Some(c), None) => found = Some(c),
            // Two identities in one certificate: trust neither.
            (Some(_), Some(_)) => return None,
            (None, _) => {}
        }
    }
    found
}

/// A node's or a client's TLS material, read from its files.
#[derive(Clone)]
pub struct Tls {
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

fn read_pem(what: &str, path: &Path) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{what} {}: {e}", path.display()))?;
    if !bytes.starts_with(b"-----BEGIN") {
        return Err(format!(
            "{what} {}: not a PEM file (expected -----BEGIN ...)",
            path.display()
        ));
    }
    Ok(bytes)
}

impl Tls {
    /// Reads the CA, certificate and key files. A node checks that its
    /// certificate names it with [`Tls::check_node`].
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<Arc<Tls>, String> {
        let tls = Tls {
            ca: read_pem("tls.ca", ca)?,
            cert: read_pem("tls.cert", cert)?,
            key: read_pem("tls.key", key)?,
        };
        // The key must parse (a wrong file is named now, not at the first
        // connection).
        let key_text = String::from_utf8(tls.key.clone())
            .map_err(|_| format!("tls.key {}: not UTF-8 PEM", key.display()))?;
        KeyPair::from_pem(&key_text)
            .map_err(|e| format!("tls.key {}: not a private key: {e}", key.display()))?;
        Ok(Arc::new(tls))
    }

    /// The identity the certificate names.
    pub fn caller(&self) -> Option<Caller> {
        let der = pem_certs(&self.cert).ok()?;
        caller_of(&der)
    }

    /// Checks that the certificate is node `id`'s.
    pub fn check_node(&self, id: NodeId, cert: &Path) -> Result<(), String> {
        match self.caller() {
            Some(Caller::Node(n)) if n == id => Ok(()),
            Some(other) => Err(format!(
                "tls.cert {}: names {}, not node {id} (make one with `faxi-watchdog certs --nodes {id}`)",
                cert.display(),
                other.describe()
            )),
            None => Err(format!(
                "tls.cert {}: not a faxi-watchdog node certificate (make one with `faxi-watchdog certs --nodes {id}`)",
                cert.display()
            )),
        }
    }

    /// The server side: this certificate, and every client must present
    /// one from the CA.
    pub fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert, &self.key))
            .client_ca_root(Certificate::from_pem(&self.ca))
            .timeout(HANDSHAKE_TIMEOUT)
    }

    /// The client side, checking that the server's certificate holds
    /// `server_name` ([`node_dns`] for a known peer, [`ANY_NODE`] for any
    /// node of the cluster).
    pub fn client(&self, server_name: &str) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca))
            .identity(Identity::from_pem(&self.cert, &self.key))
            .domain_name(server_name)
            .timeout(HANDSHAKE_TIMEOUT)
    }
}

fn pem_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let out: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("not a PEM certificate: {e}"))?;
    if out.is_empty() {
        return Err("no CERTIFICATE block".into());
    }
    Ok(out)
}

/// What `faxi-watchdog certs` writes.
#[derive(Debug, Default)]
pub struct CertRequest {
    /// The directory (the CA is made there unless it exists).
    pub dir: PathBuf,
    /// Node ids to make certificates for.
    pub nodes: Vec<NodeId>,
    /// Operators: name and role.
    pub operators: Vec<(String, Role)>,
    /// Replace certificates that exist (rotation); the CA is never replaced.
    pub replace: bool,
}

fn ca_params(now: SystemTime) -> Result<CertificateParams, String> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    p.distinguished_name.push(DnType::CommonName, CA_NAME);
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = at(now - Duration::from_secs(3600));
    p.not_after = at(now + CA_VALIDITY);
    Ok(p)
}

fn at(t: SystemTime) -> time::OffsetDateTime {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

fn write_file(path: &Path, text: &str, secret: bool) -> Result<(), String> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut f = opts
        .open(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Makes (or reuses) the CA in `req.dir` and the certificates asked for;
/// returns the files written.
pub fn make_certs(req: &CertRequest) -> Result<Vec<PathBuf>, String> {
    let now = SystemTime::now();
    std::fs::create_dir_all(&req.dir)
        .map_err(|e| format!("cannot create {}: {e}", req.dir.display()))?;
    let ca_cert = req.dir.join("ca.pem");
    let ca_key = req.dir.join("ca.key");
    let mut written = Vec::new();
    let params = ca_params(now)?;
    let key = match (ca_cert.exists(), ca_key.exists()) {
        (true, true) => {
            let text = std::fs::read_to_string(&ca_key)
                .map_err(|e| format!("cannot read {}: {e}", ca_key.display()))?;
            KeyPair::from_pem(&text)
                .map_err(|e| format!("{}: not a private key: {e}", ca_key.display()))?
        }
        (false, false) => {
            let key = KeyPair::generate().map_err(|e| e.to_string())?;
            let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
            write_file(&ca_key, &key.serialize_pem(), true)?;
            write_file(&ca_cert, &cert.pem(), false)?;
            written.push(ca_cert.clone());
            written.push(ca_key.clone());
            key
        }
        _ => {
            return Err(format!(
                "{} holds only one of ca.pem and ca.key: restore the other, or use another directory",
                req.dir.display()
            ));
        }
    };
    let issuer = Issuer::from_params(&params, &key);
    let mut leaves: Vec<(String, Vec<SanType>, DnTypeName)> = Vec::new();
    for id in &req.nodes {
        if *id == 0 {
            return Err("node ids start at 1".into());
        }
        let sans = vec![
            SanType::DnsName(ANY_NODE.try_into().map_err(|e| format!("{e}"))?),
            SanType::DnsName(node_dns(*id).try_into().map_err(|e| format!("{e}"))?),
            SanType::URI(
                format!("{URI_PREFIX}node:{id}")
                    .try_into()
                    .map_err(|e| format!("{e}"))?,
            ),
        ];
        leaves.push((format!("node-{id}"), sans, DnTypeName(format!("node {id}"))));
    }
    for (name, role) in &req.operators {
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
        {
            return Err(format!(
                "operator name {name:?}: 1–64 letters, digits, '-', '_', '.' or '@'"
            ));
        }
        let sans = vec![SanType::URI(
            format!("{URI_PREFIX}operator:{name}:{}", role.as_str())
                .try_into()
                .map_err(|e| format!("{e}"))?,
        )];
        leaves.push((
            format!("client-{name}"),
            sans,
            DnTypeName(format!("{name} ({})", role.as_str())),
        ));
    }
    for (file, _, _) in &leaves {
        let pem = req.dir.join(format!("{file}.pem"));
        if pem.exists() && !req.replace {
            return Err(format!(
                "{} exists: pass --replace to make a new one (rotation; the CA is kept)",
                pem.display()
            ));
        }
    }
    for (file, sans, cn) in leaves {
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
        p.subject_alt_names = sans;
        p.distinguished_name.push(DnType::CommonName, cn.0);
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.use_authority_key_identifier_extension = true;
        p.not_before = at(now - Duration::from_secs(3600));
        p.not_after = at(now + LEAF_VALIDITY);
        let leaf_key = KeyPair::generate().map_err(|e| e.to_string())?;
        let cert = p.signed_by(&leaf_key, &issuer).map_err(|e| e.to_string())?;
        let pem = req.dir.join(format!("{file}.pem"));
        let key_path = req.dir.join(format!("{file}.key"));
        write_file(&key_path, &leaf_key.serialize_pem(), true)?;
        write_file(&pem, &cert.pem(), false)?;
        written.push(pem);
        written.push(key_path);
    }
    Ok(written)
}

struct DnTypeName(String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_name_their_node_or_operator_and_the_ca_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let req = CertRequest {
            dir: dir.path().to_owned(),
            nodes: vec![1, 2],
            operators: vec![("alice".into(), Role::Admin), ("bob".into(), Role::Read)],
            replace: false,
        };
        make_certs(&req).unwrap();
        let load = |f: &str| {
            Tls::load(
                &dir.path().join("ca.pem"),
                &dir.path().join(format!("{f}.pem")),
                &dir.path().join(format!("{f}.key")),
            )
            .unwrap()
        };
        assert_eq!(load("node-2").caller(), Some(Caller::Node(2)));
        let n2 = dir.path().join("node-2.pem");
        assert!(load("node-2").check_node(2, &n2).is_ok());
        assert!(load("node-2").check_node(3, &n2).is_err());
        assert_eq!(
            load("client-bob").caller(),
            Some(Caller::Operator {
                name: "bob".into(),
                role: Role::Read
            })
        );
        // Rotation keeps the CA and needs --replace.
        let ca = std::fs::read(dir.path().join("ca.pem")).unwrap();
        let again = CertRequest {
            nodes: vec![2],
            operators: vec![],
            ..req
        };
        assert!(make_certs(&again).unwrap_err().contains("--replace"));
        make_certs(&CertRequest {
            replace: true,
            ..again
        })
        .unwrap();
        assert_eq!(std::fs::read(dir.path().join("ca.pem")).unwrap(), ca);
    }

    #[test]
    fn roles_order_what_a_caller_may_do() {
        let bob = Caller::Operator {
            name: "bob".into(),
            role: Role::Read,
        };
        assert!(bob.may(Role::Read) && !bob.may(Role::Operate) && !bob.may(Role::Admin));
        assert!(Caller::Node(1).may(Role::Admin));
    }

    #[test]
    fn a_chain_naming_nobody_or_garbage_is_no_caller() {
        assert_eq!(caller_of(&[]), None);
        assert_eq!(
            caller_of(&[CertificateDer::from(vec![0x30, 0x03, 1, 2, 3])]),
            None
        );
    }
}
