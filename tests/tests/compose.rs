//! The Docker Compose deployment (deploy/compose), end to end on the real
//! Docker engine, through its one command:
//!
//! - `deploy/compose/up` builds the images with the binaries this test
//!   command built (`FAXI_BIN_DIR`, so no release build), and brings the
//!   stack up under a project name of its own with host ports Docker
//!   chooses (read back with `docker compose port`);
//! - `faxictl` through a node's published port, over mutual TLS with the
//!   operator certificate `up` made, shows a leader and every target UP;
//! - zone-b's network segment cut off from postgres (`docker network
//!   disconnect`): postgres is SUSPECT, seen down by zone-b alone, and no
//!   incident opens; connected again, it is UP;
//! - `docker kill` of the postgres container: the zones agree it DOWN, an
//!   incident opens, the leader restarts the container (`docker.restart`
//!   of the postgres plan), the incident resolves, and every target,
//!   the app its plan stopped included, is UP again;
//! - Prometheus, through its published port, has loaded
//!   deploy/prometheus's rules and shows postgres's SLO moving: its valid
//!   seconds grew more than its good ones, and its 5-minute availability
//!   is below 1.
//!
//! Everything the test started is removed when it ends, also on failure
//! (`docker compose down --volumes`, by project name); on failure the
//! stack's logs are printed first. Without a Docker engine the test fails,
//! unless `FAXI_SKIP_DOCKER=1` skips it knowingly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use faxi_tests::docker::{docker, docker_or_skip};
use faxi_tests::{wait_for, workspace_bin};
use serde_json::Value;
use tokio::process::Command;
use tokio::time::Instant;

/// How long each phase may take. Generous: the test runs debug binaries on
/// machines that build other things at the same time.
const LONG: Duration = Duration::from_secs(180);

/// The targets of deploy/compose's node configs.
const TARGETS: [&str; 5] = ["postgres", "redis", "app", "fax-images", "postgres-backups"];

/// The repository's root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The Compose command here: the `docker compose` plugin, else the
/// stand-alone `docker-compose`.
async fn compose_command() -> Vec<String> {
    let plugin = Command::new("docker")
        .args(["compose", "version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .map(|s| s.success())
        .unwrap_or(false);
    if plugin {
        return vec!["docker".into(), "compose".into()];
    }
    let standalone = Command::new("docker-compose")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        standalone,
        "neither `docker compose` nor docker-compose is installed (tests/run installs docker-compose)"
    );
    vec!["docker-compose".into()]
}

/// One Compose project of deploy/compose: its name, its state dir (a temp
/// dir), and the command to reach it. Dropping it takes the stack down,
/// volumes included, and prints its logs first when the test is failing.
struct Stack {
    project: String,
    state: tempfile::TempDir,
    compose: Vec<String>,
}

impl Stack {
    async fn new() -> Stack {
        let project = format!(
            "faxi-compose-test-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        );
        Stack {
            project,
            state: tempfile::tempdir().unwrap(),
            compose: compose_command().await,
        }
    }

    /// The environment deploy/compose's scripts and file read: this
    /// project, this state dir, and every host port left to Docker.
    fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("COMPOSE_PROJECT_NAME", self.project.clone()),
            (
                "FAXI_COMPOSE_STATE",
                self.state.path().display().to_string(),
            ),
        ];
        for port in [
            "FAXI_WD_A_PORT",
            "FAXI_WD_B_PORT",
            "FAXI_WD_C_PORT",
            "FAXI_WD_A_METRICS_PORT",
            "FAXI_WD_B_METRICS_PORT",
            "FAXI_WD_C_METRICS_PORT",
            "FAXI_PROMETHEUS_PORT",
        ] {
            env.push((port, String::new()));
        }
        env
    }

    fn compose_file() -> PathBuf {
        repo().join("deploy/compose/docker-compose.yml")
    }

    /// `docker compose -f deploy/compose/docker-compose.yml ARGS` for this
    /// project, as a std command (for Drop).
    fn compose_std(&self, args: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new(&self.compose[0]);
        c.args(&self.compose[1..])
            .arg("-f")
            .arg(Self::compose_file())
            .args(args)
            .envs(self.env())
            .stdin(Stdio::null());
        c
    }

    /// `deploy/compose/up`, with the binaries this test command built.
    async fn up(&self) {
        let bin_dir = workspace_bin("faxi-watchdog").parent().unwrap().to_owned();
        let out = Command::new(repo().join("deploy/compose/up"))
            .envs(self.env())
            .env("FAXI_BIN_DIR", &bin_dir)
            .env("FAXI_COMPOSE_WAIT", LONG.as_secs().to_string())
            .stdin(Stdio::null())
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "deploy/compose/up: {}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The host port Docker published for `service`'s `port`.
    async fn port(&self, service: &str, port: u16) -> u16 {
        let out = tokio::task::spawn_blocking({
            let mut c = self.compose_std(&["port", service, &port.to_string()]);
            move || c.output().unwrap()
        })
        .await
        .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let addr = text.lines().last().unwrap_or_default().trim();
        addr.rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "compose port {service} {port}: {addr:?} ({})",
                    String::from_utf8_lossy(&out.stderr).trim()
                )
            })
    }

    /// A container of this project, by its service's name.
    fn container(&self, service: &str) -> String {
        format!("{}-{service}", self.project)
    }

    /// faxictl's client config that `up` wrote.
    fn faxictl_config(&self) -> PathBuf {
        self.state.path().join("faxictl.toml")
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Ok(out) = self
                .compose_std(&["logs", "--no-color", "--tail", "40"])
                .output()
        {
            eprintln!(
                "--- logs of compose project {} ---\n{}{}",
                self.project,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let _ = self
            .compose_std(&["down", "--volumes", "--remove-orphans", "--timeout", "5"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        // Whatever Compose could not take down (it refuses a project whose
        // files are incomplete), by the label it gives everything.
        let label = format!("label=com.docker.compose.project={}", self.project);
        for (list, remove) in [
            (&["ps", "-aq", "--filter"][..], &["rm", "-f", "-v"][..]),
            (
                &["network", "ls", "-q", "--filter"][..],
                &["network", "rm"][..],
            ),
            (
                &["volume", "ls", "-q", "--filter"][..],
                &["volume", "rm", "-f"][..],
            ),
        ] {
            let Ok(out) = std::process::Command::new("docker")
                .args(list)
                .arg(&label)
                .output()
            else {
                continue;
            };
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            if !ids.is_empty() {
                let _ = std::process::Command::new("docker")
                    .args(remove)
                    .args(&ids)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

/// `faxictl --endpoints E --output json ARGS` as the stack's operator.
async fn faxictl(stack: &Stack, endpoints: &str, args: &[&str]) -> Result<Value, String> {
    let out = Command::new(workspace_bin("faxictl"))
        .env("FAXICTL_CONFIG", stack.faxictl_config())
        .args([
            "--endpoints",
            endpoints,
            "--timeout",
            "10s",
            "--output",
            "json",
        ])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "faxictl {}: {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("faxictl {}: {e}", args.join(" ")))
}

/// Every incident, open and finished.
async fn incidents(stack: &Stack, endpoints: &str) -> Result<Vec<Value>, String> {
    let v = faxictl(stack, endpoints, &["incidents", "--all"]).await?;
    Ok(v["incidents"].as_array().cloned().unwrap_or_default())
}

/// Waits until the mesh has a leader and every target is UP.
async fn wait_all_up(stack: &Stack, endpoints: &str, what: &str) {
    wait_for(what, LONG, || async {
        let s = faxictl(stack, endpoints, &["status"]).await?;
        if s["cluster"]["leader"].as_u64().unwrap_or(0) == 0 {
            return Err("no leader".into());
        }
        let states: Vec<(String, String)> = s["targets"]
            .as_array()
            .ok_or("no targets")?
            .iter()
            .map(|t| {
                (
                    t["name"].as_str().unwrap_or_default().to_owned(),
                    t["state"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        let mut names: Vec<&str> = states.iter().map(|(n, _)| n.as_str()).collect();
        names.sort_unstable();
        let mut want = TARGETS.to_vec();
        want.sort_unstable();
        if names == want && states.iter().all(|(_, s)| s == "UP") {
            Ok(())
        } else {
            Err(format!("{states:?}"))
        }
    })
    .await;
}

/// Percent-encodes a PromQL query for a URL.
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// GET `path` from Prometheus as HTTP/1.0 (so the answer is never
/// chunked): its `data` when the status is `success`.
async fn prometheus(port: u16, path: &str) -> Result<Value, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let req = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.map_err(|e| e.to_string())?;
    let out = String::from_utf8_lossy(&out);
    let (head, body) = out.split_once("\r\n\r\n").ok_or("no header end")?;
    let v: Value = serde_json::from_str(body)
        .map_err(|e| format!("{}: {e}", head.lines().next().unwrap_or_default()))?;
    if v["status"] != "success" {
        return Err(format!("{path}: {v}"));
    }
    Ok(v["data"].clone())
}

/// The single value of an instant query, if it has one.
async fn scalar(port: u16, query: &str) -> Result<f64, String> {
    let data = prometheus(port, &format!("/api/v1/query?query={}", encode(query))).await?;
    let result = data["result"].as_array().ok_or("no result")?;
    match result.as_slice() {
        [one] => one["value"][1]
            .as_str()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{query}: {one}")),
        other => Err(format!("{query}: {} series", other.len())),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_compose_stack_recovers_a_killed_postgres_and_prometheus_sees_the_slo_move() {
    if !docker_or_skip("the Docker Compose deployment test").await {
        return;
    }
    let start = Instant::now();
    let stack = Stack::new().await;
    stack.up().await;
    let up_took = start.elapsed();

    // faxictl through the published ports, with the client config `up`
    // wrote (which names the same ports).
    let mut ports = Vec::new();
    for n in ["a", "b", "c"] {
        ports.push(stack.port(&format!("wd-{n}"), 7400).await);
    }
    let written = std::fs::read_to_string(stack.faxictl_config()).unwrap();
    for p in &ports {
        assert!(
            written.contains(&format!("\"127.0.0.1:{p}\"")),
            "faxictl.toml names port {p}:\n{written}"
        );
    }
    let endpoints = ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    wait_all_up(&stack, &endpoints, "a leader and every target UP").await;
    let ready_took = start.elapsed();
    let postgres = stack.container("postgres");

    // Cut zone-b's segment off from PostgreSQL: only zone-b sees it DOWN,
    // the mesh says SUSPECT and opens no incident; connected again (under
    // its service name), it is UP.
    let zone_b = format!("{}_zone-b", stack.project);
    docker(&["network", "disconnect", &zone_b, &postgres])
        .await
        .unwrap();
    wait_for(
        "postgres SUSPECT, seen down by zone-b alone",
        LONG,
        || async {
            let s = faxictl(&stack, &endpoints, &["status"]).await?;
            let t = s["targets"]
                .as_array()
                .and_then(|t| t.iter().find(|t| t["name"] == "postgres"))
                .ok_or("no postgres")?;
            if t["state"] == "SUSPECT" && t["down_zones"] == serde_json::json!(["zone-b"]) {
                Ok(())
            } else {
                Err(format!("{} {}", t["state"], t["zones"]))
            }
        },
    )
    .await;
    let all = incidents(&stack, &endpoints).await.unwrap();
    assert!(
        all.iter().all(|i| i["target"] != "postgres"),
        "a zone cut off from postgres opens no incident: {all:?}"
    );
    docker(&[
        "network", "connect", "--alias", "postgres", &zone_b, &postgres,
    ])
    .await
    .unwrap();
    wait_all_up(&stack, &endpoints, "every target UP once zone-b is back").await;
    let cut_took = start.elapsed();

    // Kill PostgreSQL.
    let before = incidents(&stack, &endpoints)
        .await
        .unwrap()
        .iter()
        .filter(|i| i["target"] == "postgres")
        .filter_map(|i| i["id"].as_u64())
        .max()
        .unwrap_or(0);
    let killed_at = SystemTime::now();
    docker(&["kill", &postgres]).await.unwrap();
    let killed = Instant::now();

    // Agreed DOWN: an incident opens (incidents open on DOWN only).
    let id = wait_for("an incident for the killed postgres", LONG, || async {
        incidents(&stack, &endpoints)
            .await?
            .iter()
            .filter(|i| i["target"] == "postgres")
            .filter_map(|i| i["id"].as_u64())
            .find(|&id| id > before)
            .ok_or_else(|| "none yet".to_owned())
    })
    .await;
    let detected_took = killed.elapsed();
    let opened = incidents(&stack, &endpoints)
        .await
        .unwrap()
        .into_iter()
        .find(|i| i["id"].as_u64() == Some(id))
        .unwrap();
    assert!(
        opened["zones"].as_array().is_some_and(|z| z.len() >= 2),
        "a quorum of the three zones saw postgres DOWN: {opened}"
    );

    // The leader restarts the container and the incident resolves.
    let resolved = wait_for("postgres's incident to resolve", LONG, || async {
        let all = incidents(&stack, &endpoints).await?;
        let i = all
            .iter()
            .find(|i| i["id"].as_u64() == Some(id))
            .ok_or("the incident is gone")?;
        if i["finished"] == true && i["phase"] == "RESOLVED" {
            Ok(i.clone())
        } else {
            Err(format!("phase {} step {}", i["phase"], i["step"]))
        }
    })
    .await;
    let recovered_took = killed.elapsed();
    let running = docker(&["inspect", "--format", "{{.State.Running}}", &postgres])
        .await
        .unwrap();
    assert_eq!(running, "true", "{postgres} runs again");
    let started = docker(&["inspect", "--format", "{{.State.StartedAt}}", &postgres])
        .await
        .unwrap();
    let started = humantime::parse_rfc3339(&started).unwrap();
    assert!(
        started > killed_at,
        "{postgres} started again after the kill ({started:?} vs {killed_at:?})"
    );
    let show = faxictl(&stack, &endpoints, &["incident", "show", &id.to_string()])
        .await
        .unwrap();
    let timeline = show["timeline"].as_array().unwrap();
    let restart_step = timeline
        .iter()
        .find(|e| {
            e["kind"] == "intent"
                && e["text"]
                    .as_str()
                    .is_some_and(|t| t.starts_with(&format!("docker.restart {postgres} ")))
        })
        .and_then(|e| e["step"].as_u64())
        .unwrap_or_else(|| panic!("no docker.restart of {postgres} in {show:#}"));
    assert!(
        timeline
            .iter()
            .any(|e| e["kind"] == "done" && e["step"].as_u64() == Some(restart_step)),
        "the restart step is done: {show:#}"
    );
    assert!(
        resolved["recover_ms"].as_f64().is_some(),
        "a recovery time: {resolved:#}"
    );

    // The postgres plan stopped the app and its `finally` started it:
    // everything is UP again.
    wait_all_up(&stack, &endpoints, "every target UP after the recovery").await;

    // Prometheus: the rules loaded, and postgres's SLO moved.
    let prom = stack.port("prometheus", 9090).await;
    let rules = prometheus(prom, "/api/v1/rules").await.unwrap();
    let groups: Vec<&str> = rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|g| g["name"].as_str())
        .collect();
    assert!(
        groups.contains(&"faxi-slo-sli"),
        "Prometheus loaded deploy/prometheus's rules: {groups:?}"
    );
    let lost = r#"sum(increase(faxi_slo_valid_seconds_total{target="postgres"}[10m]))
        - sum(increase(faxi_slo_good_seconds_total{target="postgres"}[10m]))"#;
    let ratio = r#"faxi:slo_availability:ratio_rate5m{target="postgres"}"#;
    let (lost, ratio) = wait_for("Prometheus to see postgres's SLO move", LONG, || async {
        let lost = scalar(prom, lost).await?;
        let ratio = scalar(prom, ratio).await?;
        if lost > 0.0 && ratio < 1.0 {
            Ok((lost, ratio))
        } else {
            Err(format!(
                "valid - good = {lost}, availability (5m) = {ratio}"
            ))
        }
    })
    .await;
    eprintln!(
        "compose: up {:.1?}, ready {:.1?}, zone-b cut and healed {:.1?}; postgres killed: \
         incident in {:.1?}, resolved in {:.1?}; Prometheus: {lost:.1} bad seconds, \
         availability {ratio:.4}; total {:.1?}",
        up_took,
        ready_took,
        cut_took,
        detected_took,
        recovered_took,
        start.elapsed()
    );
}

/// The three node configs of deploy/compose parse as `faxi-watchdog run`
/// reads them, and differ only in their `[node]` id and zone (and their
/// first comment lines); every container a plan acts on is one of the
/// compose file's, named `faxi-<service>` as `up` expects when it renames
/// them for the project. No Docker needed.
#[test]
fn the_compose_node_configs_parse_and_differ_only_in_their_node_section() {
    let dir = repo().join("deploy/compose");
    let secrets = tempfile::tempdir().unwrap();
    for s in [
        "pg_password",
        "redis_password",
        "s3_access_key",
        "s3_secret_key",
    ] {
        std::fs::write(secrets.path().join(s), "not-a-secret\n").unwrap();
    }
    let compose = std::fs::read_to_string(dir.join("docker-compose.yml")).unwrap();
    let mut rests = Vec::new();
    for (i, zone) in ["zone-a", "zone-b", "zone-c"].iter().enumerate() {
        let text = std::fs::read_to_string(dir.join(format!("{zone}.toml"))).unwrap();
        let here = text.replace(
            "\"/run/secrets/",
            &format!("\"{}/", secrets.path().display()),
        );
        let config = faxi_watchdog::config::Config::parse(&here)
            .unwrap_or_else(|p| panic!("deploy/compose/{zone}.toml: {p:?}"));
        assert_eq!(config.node.id, i as u64 + 1, "{zone}.toml's node id");
        assert_eq!(config.node.zone, *zone, "{zone}.toml's zone");
        assert_eq!(config.targets.len(), TARGETS.len(), "{zone}.toml's targets");
        for line in text.lines() {
            if let Some((_, rest)) = line.split_once("container = \"") {
                let name = rest.split('"').next().unwrap();
                let service = name
                    .strip_prefix("faxi-")
                    .unwrap_or_else(|| panic!("{zone}.toml: container {name:?} is not faxi-*"));
                assert!(
                    compose.contains(&format!(
                        "container_name: ${{COMPOSE_PROJECT_NAME:-faxi}}-{service}\n"
                    )),
                    "{zone}.toml: container {name:?} is no service of docker-compose.yml"
                );
            }
        }
        let rest: Vec<String> = text
            .lines()
            .skip(2)
            .filter(|l| !l.starts_with("id = ") && !l.starts_with("zone = "))
            .map(str::to_owned)
            .collect();
        rests.push(rest);
    }
    assert_eq!(rests[0], rests[1], "zone-a.toml and zone-b.toml differ");
    assert_eq!(rests[0], rests[2], "zone-a.toml and zone-c.toml differ");
}
