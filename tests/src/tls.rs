//! The test clusters' TLS: one CA per test process, certificates for nodes
//! 1–9 and for operators of each role, made once; node configs, faxictl's
//! client config and the tests' own gRPC channels use them.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use faxi_watchdog::tls::{ANY_NODE, CertRequest, Role, make_certs};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Node ids that have certificates.
pub const NODES: u64 = 9;

/// Where the shared TLS files are.
#[derive(Debug)]
pub struct TestTls {
    /// The directory (kept for the process's life).
    pub dir: PathBuf,
    _keep: tempfile::TempDir,
}

/// The process's TLS files, made on first use: operators `admin` (admin),
/// `operator` (operate) and `reader` (read).
pub fn shared() -> &'static TestTls {
    static TLS: OnceLock<TestTls> = OnceLock::new();
    TLS.get_or_init(|| {
        let keep = tempfile::Builder::new()
            .prefix("faxi-tls-")
            .tempdir()
            .unwrap();
        let dir = keep.path().to_owned();
        make_certs(&CertRequest {
            dir: dir.clone(),
            nodes: (1..=NODES).collect(),
            operators: vec![
                ("admin".into(), Role::Admin),
                ("operator".into(), Role::Operate),
                ("reader".into(), Role::Read),
            ],
            replace: false,
        })
        .unwrap();
        for who in ["admin", "operator", "reader"] {
            let c = format!(
                "ca = {:?}\ncert = {:?}\nkey = {:?}\n",
                dir.join("ca.pem").display().to_string(),
                dir.join(format!("client-{who}.pem")).display().to_string(),
                dir.join(format!("client-{who}.key")).display().to_string(),
            );
            std::fs::write(dir.join(format!("faxictl-{who}.toml")), c).unwrap();
        }
        TestTls { dir, _keep: keep }
    })
}

impl TestTls {
    /// A node config's `[tls]` section for node `id`, with `extra` keys.
    pub fn node_section(&self, id: u64, extra: &str) -> String {
        assert!(id <= NODES, "test certificates exist for nodes 1-{NODES}");
        format!(
            "[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n{extra}\n",
            self.file("ca.pem"),
            self.file(&format!("node-{id}.pem")),
            self.file(&format!("node-{id}.key")),
        )
    }

    fn file(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// faxictl's client config for operator `who` (admin, operator, reader).
    pub fn client_config(&self, who: &str) -> PathBuf {
        self.dir.join(format!("faxictl-{who}.toml"))
    }

    /// TLS as operator `who`, checking the server is a node of the cluster.
    pub fn client(&self, who: &str) -> ClientTlsConfig {
        self.client_files(
            &self.dir.join(format!("client-{who}.pem")),
            &self.dir.join(format!("client-{who}.key")),
        )
    }

    /// TLS with any certificate and key (a node's, or another CA's).
    pub fn client_files(&self, cert: &Path, key: &Path) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(
                std::fs::read(self.dir.join("ca.pem")).unwrap(),
            ))
            .identity(Identity::from_pem(
                std::fs::read(cert).unwrap(),
                std::fs::read(key).unwrap(),
            ))
            .domain_name(ANY_NODE)
    }

    /// A lazy channel to `addr` as operator `who`.
    pub fn channel(&self, addr: std::net::SocketAddr, who: &str) -> Channel {
        self.channel_with(addr, self.client(who))
    }

    /// A lazy channel to `addr` holding node `id`'s certificate (as that
    /// node, or as whoever stole its key).
    pub fn node_channel(&self, addr: std::net::SocketAddr, id: u64) -> Channel {
        self.channel_with(
            addr,
            self.client_files(
                &self.dir.join(format!("node-{id}.pem")),
                &self.dir.join(format!("node-{id}.key")),
            ),
        )
    }

    /// A lazy channel to `addr` with `tls`.
    pub fn channel_with(&self, addr: std::net::SocketAddr, tls: ClientTlsConfig) -> Channel {
        Endpoint::from_shared(format!("https://{addr}"))
            .unwrap()
            .connect_timeout(std::time::Duration::from_secs(1))
            .tls_config(tls)
            .unwrap()
            .connect_lazy()
    }
}
