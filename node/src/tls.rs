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
pub use faxi_proto::client::ANY_NODE;
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

/// A node's or a client's TLS material, read from its files, and the
/// node's automation tokens.
#[derive(Clone)]
pub struct Tls {
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Vec<u8>,
    /// Automation tokens (by their SHA-256): a client holding one needs no
    /// certificate. Empty: every client presents a certificate.
    tokens: Vec<Token>,
}

/// An automation token as a node knows it: never the token itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    /// Who holds it (audit records name them).
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// SHA-256 of the token.
    pub sha256: [u8; 32],
}

/// Bytes of a token `faxi-watchdog token` makes (then hex).
const TOKEN_BYTES: usize = 32;

/// SHA-256 of `token`.
pub fn token_hash(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// A new random token, and the entry a node's tokens file needs for it.
pub fn new_token(name: &str, role: Role) -> Result<(String, String), String> {
    check_operator_name(name)?;
    let mut bytes = [0u8; TOKEN_BYTES];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| "no randomness available".to_owned())?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let hash: String = token_hash(&token)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let entry = format!(
        "[[token]]\nname = \"{name}\"\nrole = \"{}\"\nsha256 = \"{hash}\"\n",
        role.as_str()
    );
    Ok((token, entry))
}

fn check_operator_name(name: &str) -> Result<(), String> {
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
    Ok(())
}

/// Reads a tokens file: `[[token]]` tables with `name`, `role` and
/// `sha256` (what `faxi-watchdog token` prints); every problem names the
/// file and the entry.
pub fn load_tokens(path: &Path) -> Result<Vec<Token>, String> {
    let fail = |e: String| format!("tls.tokens_file {}: {e}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| fail(e.to_string().trim_end().replace('\n', " ")))?;
    let mut out: Vec<Token> = Vec::new();
    for (key, value) in &table {
        let (toml::Value::Array(items), "token") = (value, key.as_str()) else {
            return Err(fail(format!(
                "{key}: unknown key (a tokens file holds [[token]] tables)"
            )));
        };
        for (i, item) in items.iter().enumerate() {
            let at = format!("token[{i}]");
            let toml::Value::Table(t) = item else {
                return Err(fail(format!("{at}: expected a table")));
            };
            if let Some(k) = t
                .keys()
                .find(|k| !["name", "role", "sha256"].contains(&k.as_str()))
            {
                return Err(fail(format!(
                    "{at}.{k}: unknown key (known: name, role, sha256)"
                )));
            }
            let get = |k: &str| t.get(k).and_then(toml::Value::as_str);
            let name = get("name").ok_or_else(|| fail(format!("{at}.name: missing")))?;
            check_operator_name(name).map_err(|e| fail(format!("{at}.name: {e}")))?;
            let role = get("role")
                .and_then(Role::parse)
                .ok_or_else(|| fail(format!("{at}.role: one of read, operate, admin")))?;
            let hex = get("sha256").unwrap_or("");
            let bytes: Option<Vec<u8>> = (hex.len() == 64)
                .then(|| {
                    (0..64)
                        .step_by(2)
                        .map(|j| u8::from_str_radix(hex.get(j..j + 2)?, 16).ok())
                        .collect::<Option<Vec<u8>>>()
                })
                .flatten();
            let Some(bytes) = bytes else {
                return Err(fail(format!(
                    "{at}.sha256: 64 hex digits (the token's SHA-256, as `faxi-watchdog token` prints it)"
                )));
            };
            let mut sha256 = [0u8; 32];
            sha256.copy_from_slice(&bytes);
            if out.iter().any(|o| o.sha256 == sha256) {
                return Err(fail(format!("{at}: the same token as an earlier entry")));
            }
            out.push(Token {
                name: name.to_owned(),
                role,
                sha256,
            });
        }
    }
    Ok(out)
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
            tokens: Vec::new(),
        };
        // The key must parse (a wrong file is named now, not at the first
        // connection).
        let key_text = String::from_utf8(tls.key.clone())
            .map_err(|_| format!("tls.key {}: not UTF-8 PEM", key.display()))?;
        KeyPair::from_pem(&key_text)
            .map_err(|e| format!("tls.key {}: not a private key: {e}", key.display()))?;
        Ok(Arc::new(tls))
    }

    /// These TLS files with automation tokens accepted too.
    pub fn with_tokens(mut self: Arc<Self>, tokens: Vec<Token>) -> Arc<Self> {
        Arc::make_mut(&mut self).tokens = tokens;
        self
    }

    /// The operator a bearer token names, if it is one of this node's.
    pub fn token_caller(&self, token: &str) -> Option<Caller> {
        let h = token_hash(token);
        self.tokens
            .iter()
            .find(|t| ring_eq(&t.sha256, &h))
            .map(|t| Caller::Operator {
                name: t.name.clone(),
                role: t.role,
            })
    }

    /// Whether clients may connect without a certificate (with a token).
    pub fn takes_tokens(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// The identity the certificate names.
    pub fn caller(&self) -> Option<Caller> {
        let der = pem_certs(&self.cert).ok()?;
        caller_of(&der)
    }

    /// Checks that the certificate is node `id`'s, that the cluster CA
    /// (`tls.ca`) signed it, that it is valid now for both ends of a
    /// connection, and that the key is its key: a node that peers would
    /// refuse, or that could not prove its certificate, does not start.
    pub fn check_node(&self, id: NodeId, cert: &Path) -> Result<(), String> {
        self.check_name(id, cert)?;
        self.check_chain(id)
            .map_err(|e| format!("tls.cert {}: {e}", cert.display()))
    }

    fn check_chain(&self, id: NodeId) -> Result<(), String> {
        use rustls::client::danger::ServerCertVerifier as _;
        use rustls::pki_types::{PrivateKeyDer, ServerName, UnixTime};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for ca in pem_certs(&self.ca).map_err(|e| format!("tls.ca: {e}"))? {
            roots
                .add(ca)
                .map_err(|e| format!("tls.ca: not a usable CA certificate: {e}"))?;
        }
        let roots = Arc::new(roots);
        let chain = pem_certs(&self.cert)?;
        let (leaf, intermediates) = chain.split_first().ok_or("no CERTIFICATE block")?;
        let now = UnixTime::now();
        let not_from_ca = |e: rustls::Error| {
            format!(
                "not valid under the cluster CA (tls.ca): {e}; make one with `faxi-watchdog certs --nodes {id}` from that CA"
            )
        };
        let name = ServerName::try_from(node_dns(id)).map_err(|e| e.to_string())?;
        rustls::client::WebPkiServerVerifier::builder_with_provider(
            roots.clone(),
            provider.clone(),
        )
        .build()
        .map_err(|e| format!("tls.ca: {e}"))?
        .verify_server_cert(leaf, intermediates, &name, &[], now)
        .map_err(not_from_ca)?;
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| format!("tls.ca: {e}"))?
            .verify_client_cert(leaf, intermediates, now)
            .map_err(not_from_ca)?;
        let key = PrivateKeyDer::from_pem_slice(&self.key)
            .map_err(|e| format!("tls.key: not a private key: {e}"))?;
        let signing = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| format!("tls.key: {e}"))?;
        match rustls::sign::CertifiedKey::new(chain, signing).keys_match() {
            Ok(()) => Ok(()),
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
                Err("tls.key is not this certificate's key".into())
            }
            Err(_) => Ok(()),
        }
    }

    fn check_name(&self, id: NodeId, cert: &Path) -> Result<(), String> {
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
            // With tokens, a client may come without a certificate; it is
            // then nobody until its request shows a token (and peers
            // always need their certificate).
            .client_auth_optional(self.takes_tokens())
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

/// Compares two digests without an early exit.
fn ring_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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
    let mut leaves: Vec<(String, Vec<SanType>, String)> = Vec::new();
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
        leaves.push((format!("node-{id}"), sans, format!("node {id}")));
    }
    for (name, role) in &req.operators {
        check_operator_name(name)?;
        let sans = vec![SanType::URI(
            format!("{URI_PREFIX}operator:{name}:{}", role.as_str())
                .try_into()
                .map_err(|e| format!("{e}"))?,
        )];
        leaves.push((
            format!("client-{name}"),
            sans,
            format!("{name} ({})", role.as_str()),
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
        p.distinguished_name.push(DnType::CommonName, cn);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_refuses_a_certificate_another_ca_signed_or_a_key_not_its_own() {
        let make = |nodes: Vec<NodeId>| {
            let dir = tempfile::tempdir().unwrap();
            make_certs(&CertRequest {
                dir: dir.path().to_owned(),
                nodes,
                ..CertRequest::default()
            })
            .unwrap();
            dir
        };
        let (ours, theirs) = (make(vec![1, 2]), make(vec![1]));
        let f = |d: &tempfile::TempDir, name: &str| d.path().join(name);
        let ok = Tls::load(
            &f(&ours, "ca.pem"),
            &f(&ours, "node-1.pem"),
            &f(&ours, "node-1.key"),
        )
        .unwrap();
        assert_eq!(ok.check_node(1, &f(&ours, "node-1.pem")), Ok(()));
        // The same node id, signed by another cluster's CA.
        let foreign = Tls::load(
            &f(&ours, "ca.pem"),
            &f(&theirs, "node-1.pem"),
            &f(&theirs, "node-1.key"),
        )
        .unwrap();
        let e = foreign
            .check_node(1, &f(&theirs, "node-1.pem"))
            .unwrap_err();
        assert!(e.contains("not valid under the cluster CA (tls.ca)"), "{e}");
        assert!(e.contains("node-1.pem"), "{e}");
        // Our certificate with another node's key.
        let wrong_key = Tls::load(
            &f(&ours, "ca.pem"),
            &f(&ours, "node-1.pem"),
            &f(&ours, "node-2.key"),
        )
        .unwrap();
        let e = wrong_key
            .check_node(1, &f(&ours, "node-1.pem"))
            .unwrap_err();
        assert!(e.contains("tls.key is not this certificate's key"), "{e}");
    }

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
    fn tokens_match_by_their_hash_and_a_bad_tokens_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (token, entry) = new_token("ci-bot", Role::Operate).unwrap();
        assert_eq!(token.len(), 64);
        assert!(!entry.contains(&token), "the entry holds the token itself");
        let f = dir.path().join("tokens.toml");
        std::fs::write(&f, &entry).unwrap();
        let tokens = load_tokens(&f).unwrap();
        let tls = Tls {
            ca: Vec::new(),
            cert: Vec::new(),
            key: Vec::new(),
            tokens,
        };
        assert_eq!(
            tls.token_caller(&token),
            Some(Caller::Operator {
                name: "ci-bot".into(),
                role: Role::Operate
            })
        );
        assert_eq!(tls.token_caller("not-it"), None);
        for (text, says) in [
            (
                "[[token]]\nname = \"a\"\nrole = \"root\"\nsha256 = \"00\"\n",
                "token[0].role",
            ),
            (
                "[[token]]\nname = \"a\"\nrole = \"read\"\nsha256 = \"00\"\n",
                "token[0].sha256: 64 hex",
            ),
            (
                "[[token]]\nname = \"a b\"\nrole = \"read\"\n",
                "token[0].name",
            ),
            (
                "[[token]]\nname = \"a\"\nrole = \"read\"\nsecret = \"x\"\n",
                "token[0].secret: unknown key",
            ),
            ("[tokens]\n", "tokens: unknown key"),
            (
                &format!("{entry}{entry}"),
                "the same token as an earlier entry",
            ),
        ] {
            std::fs::write(&f, text).unwrap();
            let e = load_tokens(&f).unwrap_err();
            assert!(e.contains(says) && e.contains("tokens.toml"), "{e}");
        }
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
