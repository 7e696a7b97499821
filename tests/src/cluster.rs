//! A mesh of real node processes: on loopback, or each in its own network
//! namespace behind a bridge so that links can be cut with iptables.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use faxi_proto::v1 as pb;
use faxi_proto::v1::watchdog_client::WatchdogClient;
use tempfile::TempDir;
use tokio::process::{Child, Command};

use crate::{free_port, wait_for, wait_listening, workspace_bin};

/// One node of a [`Cluster`].
#[derive(Debug)]
pub struct Member {
    /// Raft id (1-based).
    pub id: u64,
    /// Its zone.
    pub zone: String,
    /// gRPC address, as the test process reaches it.
    pub grpc: SocketAddr,
    /// `/metrics` address.
    pub metrics: SocketAddr,
    /// Config file.
    pub config: PathBuf,
    /// Log file (JSON lines, appended across restarts).
    pub log: PathBuf,
    /// Network namespace, when the cluster has one per node.
    pub ns: Option<String>,
    /// One gRPC channel, reused by every call (it reconnects by itself
    /// when the node restarts).
    channel: tonic::transport::Channel,
    child: Option<Child>,
}

/// Several node processes forming one mesh; all killed on drop.
#[derive(Debug)]
pub struct Cluster {
    /// The nodes, index `i` holding id `i + 1`.
    pub nodes: Vec<Member>,
    /// The namespaces and bridge, for partitions.
    pub net: Option<Net>,
    /// Where configs, logs and data live.
    pub dir: TempDir,
    /// Extra environment of every node process ([`Spec::env`]).
    env: Vec<(String, String)>,
}

/// What a cluster is made of.
#[derive(Debug, Clone)]
pub struct Spec {
    /// One zone per node.
    pub zones: Vec<String>,
    /// Extra `[cluster]` keys (TOML lines).
    pub cluster: String,
    /// `[probe_defaults]` body.
    pub probe_defaults: String,
    /// Each node's targets: `(id, zone) -> [[targets]] TOML`.
    pub targets: fn(u64, &str, &Ctx) -> String,
    /// Extra `[tls]` keys (TOML lines), after the certificate files.
    pub tls: String,
    /// More TOML at the end of every node's config (recovery plans).
    pub extra: String,
    /// Extra environment of every node process, on every (re)start: what
    /// a node reads from its environment when a step runs (a webhook's
    /// URL for `notify_url_env` or a step's `url_env`).
    pub env: Vec<(String, String)>,
}

/// What target configs may refer to.
#[derive(Debug, Clone, Default)]
pub struct Ctx {
    /// Address of a TCP service the test runs (reachable from every node).
    pub service: Option<SocketAddr>,
    /// An address where nothing listens.
    pub closed: Option<SocketAddr>,
}

impl Spec {
    /// `n` nodes in zones zone-a, zone-b, ...; fast raft timing.
    pub fn zones(n: usize) -> Spec {
        Spec {
            zones: (0..n)
                .map(|i| format!("zone-{}", (b'a' + i as u8) as char))
                .collect(),
            cluster:
                "tick = \"50ms\"\nelection_ticks = 10\nheartbeat_ticks = 1\nrefresh = \"1s\"\n"
                    .into(),
            probe_defaults: "interval = \"200ms\"\ntimeout = \"150ms\"\nfall = 2\nrise = 1\n"
                .into(),
            targets: |_, _, _| String::new(),
            tls: String::new(),
            extra: String::new(),
            env: Vec::new(),
        }
    }
}

impl Cluster {
    /// Writes every config and starts every node; returns once each node's
    /// gRPC port answers.
    pub async fn start(spec: &Spec, ctx: &Ctx) -> Cluster {
        Self::start_some(spec, ctx, spec.zones.len(), &[], None).await
    }

    /// As [`Cluster::start`], each node in its own namespace of `net`.
    pub async fn start_in(net: Net, spec: &Spec, ctx: &Ctx) -> Cluster {
        Self::start_some(spec, ctx, spec.zones.len(), &[], Some(net)).await
    }

    /// As [`Cluster::start`], but only the first `bootstrap` nodes form the
    /// cluster (node 1 creates it with `faxi-watchdog init`, the others are
    /// its learners until promoted); the nodes in `joiners` are not started
    /// (add them with `faxictl members add`, then [`Cluster::restart`]).
    /// Returns once every bootstrap node is a voter.
    pub async fn start_some(
        spec: &Spec,
        ctx: &Ctx,
        bootstrap: usize,
        joiners: &[usize],
        net: Option<Net>,
    ) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("faxi-mesh-")
            .tempdir()
            .unwrap();
        let n = spec.zones.len();
        let addrs: Vec<(SocketAddr, SocketAddr)> = (0..n)
            .map(|i| match &net {
                Some(net) => (
                    SocketAddr::new(net.ip(i).into(), 7400),
                    SocketAddr::new(net.ip(i).into(), 9400),
                ),
                None => (
                    ([127, 0, 0, 1], free_port()).into(),
                    ([127, 0, 0, 1], free_port()).into(),
                ),
            })
            .collect();
        let mut nodes = Vec::new();
        for (i, zone) in spec.zones.iter().enumerate() {
            let id = i as u64 + 1;
            let joiner = joiners.contains(&i);
            let peers: Vec<String> = spec
                .zones
                .iter()
                .enumerate()
                .filter(|(j, _)| joiner || *j < bootstrap)
                .map(|(j, z)| {
                    format!(
                        "  {{ id = {}, zone = \"{z}\", addr = \"{}\" }},",
                        j + 1,
                        addrs[j].0
                    )
                })
                .collect();
            let text = format!(
                "[node]\nid = {id}\nzone = \"{zone}\"\ndata_dir = \"{}\"\nlisten = \"{}\"\nmetrics_listen = \"{}\"\n\n{}[cluster]\n{}peers = [\n{}\n]\n\n[probe_defaults]\n{}\n{}\n{}",
                dir.path().join(format!("data{id}")).display(),
                addrs[i].0,
                addrs[i].1,
                crate::tls::shared().node_section(id, &spec.tls),
                spec.cluster,
                peers.join("\n"),
                spec.probe_defaults,
                (spec.targets)(id, zone, ctx),
                spec.extra,
            );
            let config = dir.path().join(format!("node{id}.toml"));
            std::fs::write(&config, text).unwrap();
            nodes.push(Member {
                id,
                zone: zone.clone(),
                grpc: addrs[i].0,
                metrics: addrs[i].1,
                config,
                log: dir.path().join(format!("node{id}.log")),
                ns: net.as_ref().map(|n| n.ns(i)),
                channel: crate::tls::shared().channel(addrs[i].0, "admin"),
                child: None,
            });
        }
        let mut c = Cluster {
            nodes,
            net,
            dir,
            env: spec.env.clone(),
        };
        if bootstrap > 0 {
            crate::node::init(&c.nodes[0].config, &[]).await;
        }
        let started: Vec<usize> = (0..n).filter(|i| !joiners.contains(i)).collect();
        for i in &started {
            c.spawn(*i);
        }
        for i in started {
            wait_listening("node gRPC", c.nodes[i].grpc, Duration::from_secs(20)).await;
        }
        if bootstrap > 0 {
            c.wait_voters(bootstrap, Duration::from_secs(30)).await;
        }
        c
    }

    /// Waits until the leader counts `n` voters and no learner.
    pub async fn wait_voters(&self, n: usize, deadline: Duration) {
        let what = format!("{n} voters");
        wait_for(&what, deadline, || async {
            for i in 0..self.nodes.len() {
                let Ok(s) = self.status(i).await else {
                    continue;
                };
                let Some(c) = s.cluster else { continue };
                if c.leader != c.node_id {
                    continue;
                }
                let voters = c
                    .members
                    .iter()
                    .filter(|m| m.role == "leader" || m.role == "follower")
                    .count();
                let roles: Vec<String> = c
                    .members
                    .iter()
                    .map(|m| format!("{}={}", m.id, m.role))
                    .collect();
                return if voters == n && c.members.len() == n {
                    Ok(())
                } else {
                    Err(format!("leader {} sees {}", c.leader, roles.join(" ")))
                };
            }
            Err("no leader answers".to_owned())
        })
        .await;
    }

    /// Starts node `i` (again).
    pub fn spawn(&mut self, i: usize) {
        let m = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .unwrap();
        let mut cmd = match &m.ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns])
                    .arg(workspace_bin("faxi-watchdog"));
                c
            }
            None => Command::new(workspace_bin("faxi-watchdog")),
        };
        let child = cmd
            .args(["run", "--log-format", "json", "--config"])
            .arg(&m.config)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("FAXI_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        m.child = Some(child);
    }

    /// Starts node `i` again and waits for its gRPC port.
    pub async fn restart(&mut self, i: usize) {
        self.spawn(i);
        wait_listening("node gRPC", self.nodes[i].grpc, Duration::from_secs(20)).await;
    }

    /// Waits until node `i`'s process has exited (on its own, or killed
    /// by someone else), at most `deadline`; forgets it.
    pub async fn wait_exited(&mut self, i: usize, deadline: Duration) {
        if let Some(mut c) = self.nodes[i].child.take() {
            tokio::time::timeout(deadline, c.wait())
                .await
                .unwrap_or_else(|_| panic!("node {} still runs after {deadline:?}", i + 1))
                .unwrap();
        }
    }

    /// kill -9.
    pub async fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            c.kill().await.unwrap();
        }
    }

    /// Node `i`'s process id, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].child.as_ref().and_then(Child::id)
    }

    /// Node `i`'s data dir.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("data{}", self.nodes[i].id))
    }

    /// Comma-separated gRPC endpoints of the given nodes.
    pub fn endpoints(&self, which: &[usize]) -> String {
        which
            .iter()
            .map(|i| self.nodes[*i].grpc.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// One node's own view (a stale read: the node answers at once from
    /// what it has applied, without confirming it with the leader).
    pub async fn status(&self, i: usize) -> Result<pb::StatusResponse, String> {
        self.status_with(
            i,
            pb::StatusRequest {
                allow_stale: true,
                ..Default::default()
            },
        )
        .await
    }

    /// One node's answer to `req`.
    pub async fn status_with(
        &self,
        i: usize,
        req: pb::StatusRequest,
    ) -> Result<pb::StatusResponse, String> {
        let mut req = tonic::Request::new(req);
        req.set_timeout(Duration::from_secs(2));
        self.client(i)
            .status(req)
            .await
            .map(|r| r.into_inner())
            .map_err(|e| e.to_string())
    }

    /// A client on node `i` (on the node's shared channel).
    pub fn client(&self, i: usize) -> WatchdogClient<tonic::transport::Channel> {
        WatchdogClient::new(self.nodes[i].channel.clone())
    }

    /// Waits until every node in `among` names the same leader, itself in
    /// `among`; returns (leader id, term).
    pub async fn wait_leader(&self, among: &[usize], deadline: Duration) -> (u64, u64) {
        wait_for("one leader agreed by the nodes", deadline, || async {
            let mut seen = Vec::new();
            for i in among {
                let c = self.status(*i).await?.cluster.unwrap_or_default();
                seen.push((c.leader, c.term));
            }
            let (l, t) = seen[0];
            let ok = l != 0
                && seen.iter().all(|s| *s == (l, t))
                && among.iter().any(|i| self.nodes[*i].id == l);
            if ok {
                Ok((l, t))
            } else {
                Err(format!("(leader, term) per node: {seen:?}"))
            }
        })
        .await
    }

    /// Waits until every node in `among` reports `target` in `state`.
    pub async fn wait_state(&self, among: &[usize], target: &str, state: &str, deadline: Duration) {
        wait_for(
            &format!("{target} {state} on nodes {among:?}"),
            deadline,
            || async {
                let mut seen = Vec::new();
                for i in among {
                    let s = self.status(*i).await?;
                    let t = s
                        .targets
                        .iter()
                        .find(|t| t.name == target)
                        .map_or("(absent)".to_owned(), |t| t.state.clone());
                    seen.push(t);
                }
                if seen.iter().all(|s| s == state) {
                    Ok(())
                } else {
                    Err(format!("states: {seen:?}"))
                }
            },
        )
        .await
    }

    /// Index of the node with id `id`.
    pub fn index(&self, id: u64) -> usize {
        (id - 1) as usize
    }

    /// Log lines of node `i` (JSON); a line that is not JSON (a panic)
    /// fails the caller with its text.
    pub fn log_lines(&self, i: usize) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default();
        crate::parse_log(&format!("node {}", self.nodes[i].id), &text)
    }

    /// Runs faxictl against `endpoints` with `args`.
    pub async fn faxictl(endpoints: &str, args: &[&str]) -> std::process::Output {
        Self::faxictl_as("admin", endpoints, args).await
    }

    /// faxictl as admin with `--output json`: its answer, or what it said
    /// on stderr when it failed.
    pub async fn faxictl_json(endpoints: &str, args: &[&str]) -> Result<serde_json::Value, String> {
        let mut args = args.to_vec();
        args.extend(["--output", "json"]);
        let out = Self::faxictl(endpoints, &args).await;
        if !out.status.success() {
            return Err(format!(
                "faxictl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| {
            format!(
                "faxictl {}: {e}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// `faxictl watch --output json` as admin, running (killed on drop), and
    /// its output's lines.
    pub fn faxictl_watch(
        endpoints: &str,
    ) -> (
        Child,
        tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    ) {
        let mut child = Command::new(workspace_bin("faxictl"))
            .args(["watch", "--output", "json"])
            .env("FAXI_ENDPOINTS", endpoints)
            .env(
                "FAXICTL_CONFIG",
                crate::tls::shared().client_config("admin"),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        (
            child,
            tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(out)),
        )
    }

    /// faxictl as operator `who` (admin, operator or reader), over mutual
    /// TLS with that operator's certificate.
    pub async fn faxictl_as(who: &str, endpoints: &str, args: &[&str]) -> std::process::Output {
        Command::new(workspace_bin("faxictl"))
            .args(args)
            .env("FAXI_ENDPOINTS", endpoints)
            .env("FAXICTL_CONFIG", crate::tls::shared().client_config(who))
            .output()
            .await
            .unwrap()
    }
}

/// Log lines of each node shown when a test fails.
const TAIL_ON_FAILURE: usize = 40;

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &self.nodes {
            crate::check_node_log(&format!("node {}", m.id), &m.log);
        }
        // A failed test shows what the nodes said last (their temp dir is
        // gone afterwards).
        if std::thread::panicking() {
            for m in &self.nodes {
                let text = std::fs::read_to_string(&m.log).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let from = lines.len().saturating_sub(TAIL_ON_FAILURE);
                eprintln!("--- node {} log, last {} lines:", m.id, lines.len() - from);
                for l in &lines[from..] {
                    eprintln!("{l}");
                }
            }
        }
    }
}

/// Network namespaces, one per node, joined by a bridge in the test's own
/// namespace (which holds `host_ip`). Links are cut with iptables inside a
/// node's namespace. Removed on drop.
#[derive(Debug)]
pub struct Net {
    n: u8,
    size: usize,
}

fn sh(args: &[&str]) {
    let out = std::process::Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Net {
    /// Creates `size` namespaces on a fresh 10.N.0.0/24.
    pub fn create(size: usize) -> Net {
        use rand::Rng;
        let n = loop {
            let n: u8 = rand::rng().random_range(20..250);
            let exists = std::process::Command::new("ip")
                .args(["link", "show", &format!("fxb{n}")])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(true);
            if !exists {
                break n;
            }
        };
        let net = Net { n, size };
        let br = net.bridge();
        sh(&["ip", "link", "add", &br, "type", "bridge"]);
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", net.host_ip()),
            "dev",
            &br,
        ]);
        sh(&["ip", "link", "set", &br, "up"]);
        // Where bridged frames pass through iptables (br_netfilter, as Docker
        // sets up) with a FORWARD policy of DROP, let this bridge forward.
        let _ = std::process::Command::new("iptables")
            .args(["-I", "FORWARD", "-i", &br, "-o", &br, "-j", "ACCEPT"])
            .output();
        for i in 0..size {
            let ns = net.ns(i);
            let (outer, inner) = (format!("fx{n}v{i}"), format!("fx{n}p{i}"));
            sh(&["ip", "netns", "add", &ns]);
            sh(&[
                "ip", "link", "add", &outer, "type", "veth", "peer", "name", &inner,
            ]);
            sh(&["ip", "link", "set", &inner, "netns", &ns]);
            sh(&["ip", "link", "set", &outer, "master", &br, "up"]);
            sh(&[
                "ip",
                "netns",
                "exec",
                &ns,
                "ip",
                "addr",
                "add",
                &format!("{}/24", net.ip(i)),
                "dev",
                &inner,
            ]);
            sh(&[
                "ip", "netns", "exec", &ns, "ip", "link", "set", &inner, "up",
            ]);
            sh(&["ip", "netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
        }
        net
    }

    fn bridge(&self) -> String {
        format!("fxb{}", self.n)
    }

    /// Node `i`'s namespace.
    pub fn ns(&self, i: usize) -> String {
        format!("fx{}n{i}", self.n)
    }

    /// Node `i`'s address.
    pub fn ip(&self, i: usize) -> std::net::Ipv4Addr {
        std::net::Ipv4Addr::new(10, self.n, 0, 10 + i as u8)
    }

    /// The test's own address on the bridge (where test services listen).
    pub fn host_ip(&self) -> std::net::Ipv4Addr {
        std::net::Ipv4Addr::new(10, self.n, 0, 1)
    }

    fn iptables(&self, i: usize, rule: &[&str]) {
        let ns = self.ns(i);
        let mut args = vec!["ip", "netns", "exec", &ns, "iptables"];
        args.extend_from_slice(rule);
        sh(&args);
    }

    /// Cuts every packet between nodes `i` and `j`.
    pub fn cut(&self, i: usize, j: usize) {
        let peer = self.ip(j).to_string();
        self.iptables(i, &["-A", "INPUT", "-s", &peer, "-j", "DROP"]);
        self.iptables(i, &["-A", "OUTPUT", "-d", &peer, "-j", "DROP"]);
    }

    /// Cuts node `i` from every other node (not from the host's services).
    pub fn isolate(&self, i: usize) {
        for j in 0..self.size {
            if j != i {
                self.cut(i, j);
            }
        }
    }

    /// A one-way link: packets from node `from` to port `port` of node `to`
    /// are dropped. `from`'s calls to `to` fail, while `to`'s calls to `from`
    /// (from `to`'s ephemeral ports) and their answers go through.
    pub fn block_port(&self, from: usize, to: usize, port: u16) {
        let peer = self.ip(to).to_string();
        let port = port.to_string();
        self.iptables(
            from,
            &[
                "-A", "OUTPUT", "-d", &peer, "-p", "tcp", "--dport", &port, "-j", "DROP",
            ],
        );
    }

    /// Cuts node `i` from a host service at `addr`.
    pub fn cut_service(&self, i: usize, addr: SocketAddr) {
        let ip = addr.ip().to_string();
        let port = addr.port().to_string();
        self.iptables(
            i,
            &[
                "-A", "OUTPUT", "-d", &ip, "-p", "tcp", "--dport", &port, "-j", "DROP",
            ],
        );
    }

    /// Removes every rule in node `i`'s namespace.
    pub fn heal(&self, i: usize) {
        self.iptables(i, &["-F"]);
    }

    /// Removes every rule everywhere.
    pub fn heal_all(&self) {
        for i in 0..self.size {
            self.heal(i);
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for i in 0..self.size {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &self.ns(i)])
                .output();
        }
        let _ = std::process::Command::new("iptables")
            .args([
                "-D",
                "FORWARD",
                "-i",
                &self.bridge(),
                "-o",
                &self.bridge(),
                "-j",
                "ACCEPT",
            ])
            .output();
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.bridge()])
            .output();
    }
}
