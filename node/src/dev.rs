//! `faxi-watchdog dev`: a whole 3-zone mesh on loopback for a first look.
//!
//! It starts a small demo app in this process (HTTP, answering `/health`), writes one config per node and runs three
//! node processes of this same binary (`run --config`), with gRPC on
//! 127.0.0.1:7401–7403 and metrics on 127.0.0.1:9401–9403: faxictl's
//! defaults (`--base-port` and `--metrics-base-port` move them, [`Ports`]).
//! Each node serves the status page at `/status` on its metrics port.
//! The demo targets show every agreed state:
//! - `app` (http) and `app-port` (tcp): UP everywhere;
//! - `cache` (tcp): zone-c's node is pointed at a closed port, as if that
//!   zone had lost its route to it: SUSPECT, "zone-c cannot reach cache";
//! - `legacy-db` (tcp): a closed port everywhere: DOWN, an incident with
//!   no recovery plan (a person's).
//!
//! Recovery: the demo app listens on 127.0.0.1:7400 when that port is free
//! (another free port otherwise). `curl -X POST 127.0.0.1:7400/break` makes
//! its `/health` answer 503: the zones agree `app` is DOWN, an incident
//! opens, and the leader runs the `app` plan: an `http` step that asks the
//! app to restart (`POST /restart`, carrying the fencing token), then
//! `wait_healthy`. `faxictl incidents`, `incident show` and `rto` show it.
//!
//! The nodes stop when this process stops (they watch their stdin). When
//! one node stops on its own, the others are stopped and the error names
//! the node, its exit status and its log.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::process::{Child, Command};

const ZONES: [&str; 3] = ["zone-a", "zone-b", "zone-c"];

/// Where the mesh listens on 127.0.0.1: the demo app on `base` (when that
/// port is free, another otherwise), node N's gRPC on `base + N` and its
/// metrics and status page on `metrics_base + N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    /// The demo app's port; the nodes' gRPC ports follow it.
    pub base: u16,
    /// The nodes' metrics ports are the three after it.
    pub metrics_base: u16,
}

impl Default for Ports {
    /// 7400 (gRPC 7401-7403) and 9400 (metrics 9401-9403): faxictl's
    /// default endpoints.
    fn default() -> Self {
        Self {
            base: 7400,
            metrics_base: 9400,
        }
    }
}

impl Ports {
    /// Checked: each base leaves room for its three ports, and the two
    /// ranges do not overlap.
    pub fn new(base: u16, metrics_base: u16) -> Result<Self, String> {
        let n = ZONES.len() as u16;
        for (what, b) in [("--base-port", base), ("--metrics-base-port", metrics_base)] {
            if b == 0 || b > u16::MAX - n {
                return Err(format!("{what} {b}: must be 1 to {}", u16::MAX - n));
            }
        }
        if base.abs_diff(metrics_base) <= n {
            return Err(format!(
                "--base-port {base} and --metrics-base-port {metrics_base}: their ports overlap \
                 (each base takes the {n} ports after it)"
            ));
        }
        Ok(Self { base, metrics_base })
    }

    fn grpc(self, id: usize) -> u16 {
        self.base + id as u16
    }

    fn metrics(self, id: usize) -> u16 {
        self.metrics_base + id as u16
    }
}

/// Where the mesh keeps its logs and data.
pub fn default_dir() -> PathBuf {
    std::env::temp_dir().join("faxi-watchdog-dev")
}

/// Runs the dev mesh until `shutdown` resolves.
pub async fn run(
    dir: &Path,
    ports: Ports,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let app = match TcpListener::bind(("127.0.0.1", ports.base)).await {
        Ok(l) => l,
        Err(_) => TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("cannot start the demo app: {e}"))?,
    };
    let app_addr = app
        .local_addr()
        .map_err(|e| format!("cannot start the demo app: {e}"))?;
    tokio::spawn(serve_demo_app(app));
    let closed = closed_port().await?;

    let tls_dir = dir.join("tls");
    make_tls(&tls_dir)?;
    let client = write_client_config(dir, &tls_dir, ports)?;

    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let mut children: Vec<Child> = Vec::new();
    for (i, zone) in ZONES.iter().enumerate() {
        let id = i + 1;
        let config = node_config(id, zone, dir, ports, app_addr, closed, &tls_dir);
        let path = dir.join(format!("node{id}.toml"));
        tokio::fs::write(&path, config)
            .await
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        if id == 1 {
            // The one bootstrap step, done for the user: node 1 creates the
            // cluster (once; a later run finds it there), nodes 2 and 3 are
            // its learners and become voters when caught up.
            let cfg = crate::config::Config::load(&path).map_err(|e| e.to_string())?;
            crate::node::init(&cfg).await?;
        }
        let log_path = dir.join(format!("node{id}.log"));
        let log = std::fs::File::create(&log_path)
            .map_err(|e| format!("cannot write {}: {e}", log_path.display()))?;
        let err = log
            .try_clone()
            .map_err(|e| format!("cannot write {}: {e}", log_path.display()))?;
        let child = Command::new(&exe)
            .arg("run")
            .arg("--config")
            .arg(&path)
            .arg("--stop-on-stdin-eof")
            .stdin(std::process::Stdio::piped())
            .stdout(log)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start node {id}: {e}"))?;
        children.push(child);
    }
    eprintln!(
        "faxi-watchdog dev: 3 nodes (zone-a, zone-b, zone-c)\n  \
         gRPC    127.0.0.1:{} 127.0.0.1:{} 127.0.0.1:{}\n  \
         metrics http://127.0.0.1:{}/metrics ({}, {})\n  \
         status  http://127.0.0.1:{}/status (a page for a browser)\n  \
         logs, configs and raft logs in {}\n  \
         demo app at http://{app_addr}/health\n  \
         break it: curl -X POST {app_addr}/break   (the leader restarts it)\n  \
         mutual TLS: CA and certificates in {}\n  \
         faxictl's client config: {client}\n\
         try: faxictl status    (Ctrl-C here stops the mesh)",
        ports.grpc(1),
        ports.grpc(2),
        ports.grpc(3),
        ports.metrics(1),
        ports.metrics(2),
        ports.metrics(3),
        ports.metrics(1),
        dir.display(),
        tls_dir.display()
    );
    let mut exited = Box::pin(first_exit(&mut children));
    let stopped = tokio::select! {
        () = shutdown => None,
        (id, status) = &mut exited => Some((id, status)),
    };
    drop(exited);
    // Closing their stdin stops the nodes cleanly; then wait for them.
    stop_all(&mut children).await;
    match stopped {
        None => Ok(()),
        Some((id, status)) => {
            let log = dir.join(format!("node{id}.log"));
            let said = last_line(&log)
                .map(|l| format!("\n  the last line of its log: {l}"))
                .unwrap_or_default();
            Err(format!(
                "node {id} stopped ({status}); the other nodes were stopped too.\n  \
                 its log: {}{said}",
                log.display()
            ))
        }
    }
}

/// How long the nodes may take to stop once told to (a node's own
/// shutdown takes at most 10 s); then they are killed.
const STOP_DEADLINE: Duration = Duration::from_secs(12);

/// Stops every node still running: closes their stdin, waits for them
/// all until [`STOP_DEADLINE`], then kills the ones left.
async fn stop_all(children: &mut [Child]) {
    for c in children.iter_mut() {
        drop(c.stdin.take());
    }
    let deadline = tokio::time::Instant::now() + STOP_DEADLINE;
    for c in children.iter_mut() {
        if tokio::time::timeout_at(deadline, c.wait()).await.is_err() {
            let _ = c.kill().await;
        }
    }
}

/// The last non-empty line of a node's log, if it can be read.
fn last_line(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(str::to_owned)
}

/// The first node to exit, by id (1-based), with its exit status.
async fn first_exit(children: &mut [Child]) -> (usize, String) {
    loop {
        for (i, c) in children.iter_mut().enumerate() {
            if let Ok(Some(status)) = c.try_wait() {
                return (i + 1, status.to_string());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A port nothing listens on: bound, then released.
async fn closed_port() -> Result<SocketAddr, String> {
    let l = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("cannot find a free port: {e}"))?;
    l.local_addr()
        .map_err(|e| format!("cannot find a free port: {e}"))
}

/// The operator certificate `dev` makes for faxictl.
const DEV_OPERATOR: &str = "dev";
/// The first line of a faxictl config that `dev` wrote (and may rewrite).
const DEV_MARK: &str = "# Written by `faxi-watchdog dev`";

/// The cluster CA (kept across runs), a certificate per node and one for
/// faxictl (admin), in `tls`.
fn make_tls(tls: &Path) -> Result<(), String> {
    let have = |f: &str| tls.join(f).exists();
    let complete = have("ca.pem")
        && have("ca.key")
        && (1..=ZONES.len()).all(|id| have(&format!("node-{id}.pem")))
        && have(&format!("client-{DEV_OPERATOR}.pem"));
    if complete {
        return Ok(());
    }
    crate::tls::make_certs(&crate::tls::CertRequest {
        dir: tls.to_owned(),
        nodes: (1..=ZONES.len() as u64).collect(),
        operators: vec![(DEV_OPERATOR.to_owned(), crate::tls::Role::Admin)],
        replace: true,
    })
    .map(|_| ())
}

/// Writes faxictl's client config for this mesh in `dir`, and at faxictl's
/// default path too unless a config that `dev` did not write is there.
/// Returns where faxictl will find it.
fn write_client_config(dir: &Path, tls: &Path, ports: Ports) -> Result<String, String> {
    let mut c = String::new();
    let _ = writeln!(c, "{DEV_MARK}: the nodes of the dev mesh, over mutual TLS.");
    let _ = writeln!(
        c,
        "endpoints = [\"127.0.0.1:{}\", \"127.0.0.1:{}\", \"127.0.0.1:{}\"]",
        ports.grpc(1),
        ports.grpc(2),
        ports.grpc(3)
    );
    let _ = writeln!(c, "ca = {:?}", tls.join("ca.pem").display().to_string());
    let _ = writeln!(
        c,
        "cert = {:?}\nkey = {:?}",
        tls.join(format!("client-{DEV_OPERATOR}.pem"))
            .display()
            .to_string(),
        tls.join(format!("client-{DEV_OPERATOR}.key"))
            .display()
            .to_string()
    );
    let here = dir.join("faxictl.toml");
    std::fs::write(&here, &c).map_err(|e| format!("cannot write {}: {e}", here.display()))?;
    let Some(default) = faxi_proto::client::default_config_path() else {
        return Ok(format!("{} (set FAXICTL_CONFIG to it)", here.display()));
    };
    let ours = match std::fs::read_to_string(&default) {
        Ok(text) => text.starts_with(DEV_MARK),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(_) => false,
    };
    if !ours {
        return Ok(format!(
            "{} ({} is another config, left alone: set FAXICTL_CONFIG={})",
            here.display(),
            default.display(),
            here.display()
        ));
    }
    if let Some(parent) = default.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    match std::fs::write(&default, &c) {
        Ok(()) => Ok(default.display().to_string()),
        Err(_) => Ok(format!(
            "{} (cannot write {}: set FAXICTL_CONFIG={})",
            here.display(),
            default.display(),
            here.display()
        )),
    }
}

fn node_config(
    id: usize,
    zone: &str,
    dir: &Path,
    ports: Ports,
    app: SocketAddr,
    closed: SocketAddr,
    tls: &Path,
) -> String {
    let mut c = String::new();
    let _ = writeln!(c, "# Written by `faxi-watchdog dev`.");
    let _ = writeln!(c, "[node]\nid = {id}\nzone = \"{zone}\"");
    let _ = writeln!(
        c,
        "data_dir = {:?}",
        dir.join(format!("node{id}")).display().to_string()
    );
    let _ = writeln!(
        c,
        "listen = \"127.0.0.1:{}\"\nmetrics_listen = \"127.0.0.1:{}\"\n",
        ports.grpc(id),
        ports.metrics(id)
    );
    let _ = writeln!(
        c,
        "[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
        tls.join("ca.pem").display().to_string(),
        tls.join(format!("node-{id}.pem")).display().to_string(),
        tls.join(format!("node-{id}.key")).display().to_string()
    );
    let _ = writeln!(c, "[cluster]\nrefresh = \"2s\"\npeers = [");
    for (i, z) in ZONES.iter().enumerate() {
        let _ = writeln!(
            c,
            "  {{ id = {}, zone = \"{z}\", addr = \"127.0.0.1:{}\" }},",
            i + 1,
            ports.grpc(i + 1)
        );
    }
    let _ = writeln!(c, "]\n");
    let _ = writeln!(
        c,
        "[probe_defaults]\ninterval = \"1s\"\ntimeout = \"500ms\"\nfall = 2\nrise = 1\n"
    );
    let target = |c: &mut String, name: &str, kind: &str, key: &str, value: String| {
        let _ = writeln!(
            c,
            "[[targets]]\nname = \"{name}\"\nkind = \"{kind}\"\n{key} = \"{value}\"\n"
        );
    };
    target(&mut c, "app", "http", "url", format!("http://{app}/health"));
    let _ = writeln!(c, "rto = \"5m\"\nrecovery = \"app\"\n");
    target(&mut c, "app-port", "tcp", "addr", app.to_string());
    let cache = if zone == "zone-c" { closed } else { app };
    target(&mut c, "cache", "tcp", "addr", cache.to_string());
    target(&mut c, "legacy-db", "tcp", "addr", closed.to_string());
    // The app's recovery: ask it to restart (as a scaler's API would be
    // asked), then wait for the mesh to agree it is UP.
    let _ = writeln!(
        c,
        "[recovery.app]\ncooldown = \"30s\"\nsteps = [\n  \
         {{ action = \"http\", method = \"POST\", url = \"http://{app}/restart\" }},\n  \
         {{ action = \"wait_healthy\", target = \"app\", timeout = \"30s\" }},\n]"
    );
    c
}

/// The demo app: `/health` is 200 until `POST /break`, then 503 until
/// `POST /restart` (which the leader's recovery step sends).
async fn serve_demo_app(listener: TcpListener) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::{Method, Response, StatusCode};
    let broken = Arc::new(AtomicBool::new(false));
    crate::metrics::serve_http(listener, "demo app", move |req| {
        let broken = broken.clone();
        async move {
            let (status, body) = match (req.method(), req.uri().path()) {
                (_, "/health") if broken.load(Ordering::Relaxed) => {
                    (StatusCode::SERVICE_UNAVAILABLE, "broken\n")
                }
                (_, "/health") => (StatusCode::OK, "ok\n"),
                (&Method::POST, "/break") => {
                    broken.store(true, Ordering::Relaxed);
                    eprintln!("faxi-watchdog dev: the demo app is broken (its /health says 503)");
                    (StatusCode::OK, "broken: /health now answers 503\n")
                }
                (&Method::POST, "/restart") => {
                    broken.store(false, Ordering::Relaxed);
                    let h = |k: &str| {
                        req.headers()
                            .get(k)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-")
                            .to_owned()
                    };
                    eprintln!(
                        "faxi-watchdog dev: the demo app was restarted by recovery (incident {}, fence {}:{})",
                        h("x-faxi-incident"),
                        h("x-faxi-fence-term"),
                        h("x-faxi-fence-index")
                    );
                    (StatusCode::OK, "restarted\n")
                }
                _ => (StatusCode::NOT_FOUND, "not found\n"),
            };
            let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
            *resp.status_mut() = status;
            Ok::<_, std::convert::Infallible>(resp)
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_default_to_faxictls_endpoints_and_are_checked() {
        let p = Ports::default();
        assert_eq!(
            (p.grpc(1), p.grpc(3), p.metrics(1), p.metrics(3)),
            (7401, 7403, 9401, 9403)
        );
        assert_eq!(Ports::new(7400, 9400), Ok(p));
        let p = Ports::new(7760, 7780).unwrap();
        assert_eq!((p.grpc(2), p.metrics(2)), (7762, 7782));
        assert!(Ports::new(0, 9400).unwrap_err().contains("--base-port 0"));
        assert!(
            Ports::new(7400, 65533)
                .unwrap_err()
                .contains("--metrics-base-port 65533")
        );
        assert!(Ports::new(7400, 65532).is_ok());
        for (a, b) in [(7400, 7403), (7403, 7400), (7400, 7400)] {
            assert!(Ports::new(a, b).unwrap_err().contains("overlap"), "{a} {b}");
        }
        assert!(Ports::new(7400, 7404).is_ok());
        // The configs and faxictl's follow them.
        let dir = Path::new("/tmp/x");
        let app: SocketAddr = ([127, 0, 0, 1], 7760).into();
        let c = node_config(2, "zone-b", dir, p, app, app, dir);
        assert!(
            c.contains("listen = \"127.0.0.1:7762\"\nmetrics_listen = \"127.0.0.1:7782\""),
            "{c}"
        );
        assert!(c.contains("addr = \"127.0.0.1:7763\""), "{c}");
    }
}
