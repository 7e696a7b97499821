//! The status page in a real browser: `faxi-watchdog dev` on free ports
//! (`--base-port`, `--metrics-base-port`), then headless Chromium loads
//! node 1's `/status` and the page's text must say what faxictl says: the
//! leader and term, who answered and how fresh, `cache` SUSPECT because
//! zone-c cannot reach it, `legacy-db` DOWN with its incident and
//! timeline, the members; `?all=1` lists the UP targets too. A screenshot
//! is saved under the test's output dir (its path is printed).
//!
//! Chromium is part of the suite's machine (tests/run installs it): when it
//! is missing the test fails, saying so.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use faxi_tests::{free_port, http_get, wait_for, workspace_bin};

const DEADLINE: Duration = Duration::from_secs(60);
/// How long one Chromium run may take.
const BROWSER_DEADLINE: Duration = Duration::from_secs(90);

/// A port whose three successors were free a moment ago too.
fn free_base() -> u16 {
    for _ in 0..1000 {
        let p = free_port();
        let next_free = (1..=3u16).all(|i| {
            p.checked_add(i)
                .is_some_and(|q| std::net::TcpListener::bind(("127.0.0.1", q)).is_ok())
        });
        if next_free {
            return p;
        }
    }
    panic!("no four free ports in a row");
}

/// `faxi-watchdog dev`, stopped when dropped, also when the test fails:
/// SIGTERM (it stops its nodes, then exits), and SIGKILL if it has not
/// exited in time; then any node still running is killed by the pid its
/// log gave.
struct DevMesh {
    child: Option<Child>,
    dir: tempfile::TempDir,
    metrics: SocketAddr,
}

impl DevMesh {
    fn start(base: u16, metrics_base: u16) -> DevMesh {
        let dir = tempfile::tempdir().unwrap();
        let stderr = std::fs::File::create(dir.path().join("dev.stderr")).unwrap();
        let child = Command::new(workspace_bin("faxi-watchdog"))
            .args(["dev", "--dir"])
            .arg(dir.path().join("mesh"))
            .args(["--base-port", &base.to_string()])
            .args(["--metrics-base-port", &metrics_base.to_string()])
            // faxictl's client config goes here, not to the user's.
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        DevMesh {
            child: Some(child),
            metrics: ([127, 0, 0, 1], metrics_base + 1).into(),
            dir,
        }
    }

    /// Fails the test at once when `dev` has exited.
    fn check_running(&mut self) {
        if let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            panic!("faxi-watchdog dev exited: {status}");
        }
    }

    /// The pids the nodes logged ("node started ... pid=N").
    fn node_pids(&self) -> Vec<u32> {
        (1..=3)
            .filter_map(|id| {
                let log = self.dir.path().join(format!("mesh/node{id}.log"));
                let text = std::fs::read_to_string(log).ok()?;
                text.lines()
                    .find(|l| l.contains("node started"))?
                    .split_once(" pid=")?
                    .1
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .collect()
    }
}

fn signal(sig: &str, pid: u32) -> bool {
    Command::new("kill")
        .args([sig, &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Drop for DevMesh {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id();
        let nodes = self.node_pids();
        signal("-TERM", pid);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        // dev gives its nodes 12 s to stop, then kills them.
        if rx.recv_timeout(Duration::from_secs(20)).is_err() {
            signal("-KILL", pid);
            let _ = rx.recv_timeout(Duration::from_secs(5));
            // Orphaned nodes stop when their stdin closes; make sure.
            for n in nodes {
                if signal("-0", n) {
                    signal("-KILL", n);
                }
            }
        }
        if std::thread::panicking() {
            let said = std::fs::read_to_string(self.dir.path().join("dev.stderr"));
            eprintln!("faxi-watchdog dev said:\n{}", said.unwrap_or_default());
        }
    }
}

/// The Chromium to run: `FAXI_CHROMIUM`, else the first of the usual
/// names on the PATH. Missing is a failure, not a skip.
fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("FAXI_CHROMIUM") {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "no Chromium on the PATH (chromium, chromium-browser, google-chrome) and FAXI_CHROMIUM \
         unset: tests/run installs Debian's chromium package"
    );
}

/// Runs headless Chromium on `url` with `args`; its stdout.
async fn browse(profile: &Path, args: &[String], url: &str) -> String {
    let mut cmd = tokio::process::Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args)
    .arg(url)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let out = tokio::time::timeout(BROWSER_DEADLINE, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("chromium did not finish with {url} in {BROWSER_DEADLINE:?}"))
        .unwrap_or_else(|e| panic!("cannot run chromium: {e}"));
    assert!(
        out.status.success(),
        "chromium {args:?} {url}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The table row whose first cell is `first`.
fn row<'a>(dom: &'a str, first: &str) -> &'a str {
    let start = format!("<tr><td>{first}</td>");
    let at = dom
        .find(&start)
        .unwrap_or_else(|| panic!("no row for {first}:\n{dom}"));
    let rest = &dom[at..];
    &rest[..rest.find("</tr>").unwrap_or(rest.len())]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_the_dev_mesh_in_chromium() {
    let browser = chromium();
    let base = free_base();
    let metrics_base = loop {
        let m = free_base();
        if m.abs_diff(base) > 3 {
            break m;
        }
    };
    let mut mesh = DevMesh::start(base, metrics_base);
    let addr = mesh.metrics;

    // The mesh settled as the page shows it: a leader confirmed, cache
    // SUSPECT, legacy-db DOWN with its incident.
    wait_for(
        "node 1's status page to show the demo's states",
        DEADLINE,
        || {
            mesh.check_running();
            async move {
                let page = http_get(addr, "/status").await?;
                let ready = page.contains("Leader: <b>node ")
                    && page.contains("confirmed with the leader (read index")
                    && page.contains("zone-c cannot reach cache")
                    && page.contains(
                        "<td>legacy-db</td><td>tcp</td><td><span class=\"b down\">DOWN</span>",
                    )
                    && page.contains(": legacy-db</h3>");
                if ready { Ok(()) } else { Err(page) }
            }
        },
    )
    .await;

    let profile = tempfile::tempdir().unwrap();
    let url = format!("http://{addr}/status");
    let dom = browse(profile.path(), &["--dump-dom".into()], &url).await;
    println!(
        "chromium ({}) read {url}: {} bytes",
        browser.display(),
        dom.len()
    );

    // Who answered, how fresh, the leader and its term.
    assert!(dom.contains("Answered by <b>node 1 (zone-a)</b>"), "{dom}");
    assert!(dom.contains("behind its commit index"), "{dom}");
    assert!(
        dom.contains("confirmed with the leader (read index"),
        "{dom}"
    );
    let leader: u64 = dom
        .split_once("Leader: <b>node ")
        .and_then(|(_, r)| r.split_once("</b>"))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("no leader on the page:\n{dom}"));
    assert!((1..=3).contains(&leader), "{dom}");
    assert!(dom.contains(" · term "), "{dom}");
    let members = dom
        .split_once("id=\"members\"")
        .unwrap_or_else(|| panic!("no members:\n{dom}"))
        .1;
    let member = members
        .split(&format!("<tr><td class=\"n\">{leader}</td>"))
        .nth(1)
        .and_then(|r| r.split("</tr>").next())
        .unwrap_or_else(|| panic!("no member row for the leader:\n{dom}"));
    assert!(member.contains("<b>leader</b>"), "{member}");

    // cache: SUSPECT, naming zone-c; legacy-db: DOWN; app UP is counted,
    // not listed by default.
    let cache = row(&dom, "cache");
    assert!(
        cache.contains("<span class=\"b suspect\">SUSPECT</span>"),
        "{cache}"
    );
    assert!(cache.contains("zone-c cannot reach cache"), "{cache}");
    assert!(
        cache.contains("zone-c=<span class=\"b down\">DOWN</span>"),
        "{cache}"
    );
    let db = row(&dom, "legacy-db");
    assert!(db.contains("<span class=\"b down\">DOWN</span>"), "{db}");
    assert!(!dom.contains("<tr><td>app</td><td>http</td>"), "{dom}");
    assert!(dom.contains("UP targets not listed"), "{dom}");

    // legacy-db's incident, with its timeline.
    let (_, incident) = dom
        .split_once(": legacy-db</h3>")
        .unwrap_or_else(|| panic!("no incident of legacy-db:\n{dom}"));
    assert!(incident.contains("<td>detected</td>"), "{incident}");
    assert!(dom.contains("Recovery time tracking (RTO)"), "{dom}");
    assert!(!dom.contains("<script"), "{dom}");

    // ?all=1 lists the UP targets too.
    let all = browse(
        profile.path(),
        &["--dump-dom".into()],
        &format!("{url}?all=1"),
    )
    .await;
    let app = row(&all, "app");
    assert!(app.contains("<span class=\"b up\">UP</span>"), "{app}");

    // A screenshot, for a person to look at.
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    browse(
        profile.path(),
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1280,1600".into(),
        ],
        &url,
    )
    .await;
    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("{}: {e}", shot.display()));
    assert!(png.starts_with(b"\x89PNG"), "not a PNG: {}", shot.display());
    println!("screenshot of {url}: {}", shot.display());

    drop(mesh);
}
