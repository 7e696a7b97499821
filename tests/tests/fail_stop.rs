//! Fail-stop on real processes: a node whose data dir fills up stops with
//! the error and exit code 1 (never a hang, never a panic), and a node
//! always finishes shutting down when told to.
//!
//! The disk-full test mounts a small tmpfs, so it needs root (as CI runs);
//! without root it fails unless FAXI_SKIP_NETNS=1, the opt-out the other
//! root-only tests use, says to skip it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use faxi_tests::node::{init, node_section};
use faxi_tests::{is_root, wait_for, workspace_bin};
use tokio::process::Command;

const DEADLINE: Duration = Duration::from_secs(60);

/// Whether a root-only test may run here: yes as root; a skip when
/// FAXI_SKIP_NETNS=1 says so; else the test fails, so that a run without
/// root cannot pass it silently.
fn root_or_skip(what: &str) -> bool {
    if is_root() {
        return true;
    }
    if std::env::var("FAXI_SKIP_NETNS").as_deref() == Ok("1") {
        eprintln!("skipped (FAXI_SKIP_NETNS=1): {what} needs root");
        return false;
    }
    panic!("{what} needs root; run as root, or set FAXI_SKIP_NETNS=1 to skip it");
}

/// A tmpfs of `size` mounted at `path`; unmounted on drop, however the
/// test ends.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount tmpfs on {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs {
            path: path.to_owned(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = std::process::Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Something still holds it open: detach it now, freed once unused.
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.path)
                .status();
        }
    }
}

/// 2 MB: the flush after an append is the first write to fail.
#[tokio::test]
async fn a_full_data_dir_stops_the_node_with_the_error() {
    full_data_dir("2m").await;
}

/// 4 MB: sled fails in the background first, and raft-rs, which unwraps
/// every read of the log, panics on the next one; the node used to hang
/// there for good (sled's flush on drop waited for a write that had failed).
/// raft-rs's own panic is the one allowed.
#[tokio::test]
async fn a_full_data_dir_stops_the_node_even_when_raft_fails_on_a_read() {
    full_data_dir("4m").await;
}

/// Runs a node whose data dir is a tmpfs of `size` until the raft log
/// fills it: exit code 1 within the deadline, the error and the data dir
/// named on the last line, and no panic but raft-rs's on the storage error.
async fn full_data_dir(size: &str) {
    if !root_or_skip("mounting a small tmpfs as the data dir") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Declared before the node, so dropped after it: unmounts last.
    let fs = Tmpfs::mount(&dir.path().join("fs"), size);
    let (head, _, _) = node_section(1, "zone-a", &fs.path);
    let data_dir = fs.path.join("data");
    // A refresh every 100 ms and a snapshot of the 300 targets (long
    // names, errors) every 20 entries: once the file system is full, the
    // next snapshot's write fails within seconds.
    let mut config = format!(
        "{head}[cluster]\nrefresh = \"100ms\"\nsnapshot_entries = 20\n\n\
         [probe_defaults]\ninterval = \"1s\"\ntimeout = \"500ms\"\nfall = 1\nrise = 1\n\n"
    );
    for i in 0..300 {
        let _ = write!(
            config,
            "[[targets]]\nname = \"target-{i:04}-{}\"\nkind = \"tcp\"\naddr = \"127.0.0.1:9\"\n\n",
            "x".repeat(48)
        );
    }
    let path = dir.path().join("node.toml");
    std::fs::write(&path, config).unwrap();
    init(&path, &[]).await;

    let log = dir.path().join("node.log");
    let mut child = Command::new(workspace_bin("faxi-watchdog"))
        .args(["run", "--log-format", "json", "--config"])
        .arg(&path)
        .env("FAXI_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Refreshes are small now (a digest, not every target): once the node
    // runs, something else fills the file system, as another process on
    // the same disk would; the node's next write fails.
    faxi_tests::wait_for("the node running", DEADLINE, || async {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("agreed state changed") {
            Ok(())
        } else {
            Err("not yet".to_owned())
        }
    })
    .await;
    fill(&fs.path.join("filler"));
    let status = match tokio::time::timeout(DEADLINE, child.wait()).await {
        Ok(s) => s.unwrap(),
        Err(_) => {
            let _ = child.kill().await;
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            panic!(
                "the node did not stop within {DEADLINE:?} with its data dir full:\n{}",
                tail(&text)
            );
        }
    };
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(1), "{status}:\n{}", tail(&text));
    let last = text.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("faxi-watchdog: ")
            && last.contains(&data_dir.display().to_string())
            && last.contains("No space left on device"),
        "the last line should name the data dir and the error: {last:?}\n{}",
        tail(&text)
    );
    // A panic is a "panicked at" line, then its message.
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if line.contains("panicked") {
            let message = lines.get(i + 1).copied().unwrap_or_default();
            assert!(
                line.starts_with("thread 'raft'")
                    && line.contains("/raft-0.7")
                    && message.contains("No space left on device"),
                "a panic other than raft-rs's on the storage error:\n{line}\n{message}"
            );
        }
    }
    drop(child);
    drop(fs);
}

/// Writes `path` until its file system has no space left.
fn fill(path: &std::path::Path) {
    use std::io::Write as _;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    loop {
        match f.write(&chunk) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    let _ = f.sync_all();
}

/// The last lines of a log, for a failure message.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// SIGTERM ends a node whatever else it waits on: here a supervisor's
/// stdin that never closes (`--stop-on-stdin-eof`, as `faxi-watchdog dev`
/// runs its nodes), whose pending read once kept the process alive after
/// "stopped".
#[tokio::test]
async fn sigterm_stops_a_node_whose_stdin_stays_open() {
    let dir = tempfile::tempdir().unwrap();
    let (head, metrics, _) = node_section(1, "zone-a", dir.path());
    let path = dir.path().join("node.toml");
    std::fs::write(&path, head).unwrap();
    init(&path, &[]).await;
    let log = dir.path().join("node.log");
    let mut child = Command::new(workspace_bin("faxi-watchdog"))
        .args(["run", "--stop-on-stdin-eof", "--config"])
        .arg(&path)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Held open until the end of the test.
    let _stdin = child.stdin.take().unwrap();
    wait_for("the node's /healthz", Duration::from_secs(20), || {
        faxi_tests::http_get(metrics, "/healthz")
    })
    .await;
    let pid = child.id().unwrap().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let status = status
        .unwrap_or_else(|_| panic!("no exit within 20s of SIGTERM:\n{}", tail(&text)))
        .unwrap();
    assert!(status.success(), "{status}:\n{}", tail(&text));
    assert!(text.contains("stopped"), "{text}");
}

/// A small ext4 file system in an image file, loop-mounted at `path`, that
/// can be frozen (every write to it then blocks in the kernel, as on a hung
/// disk). Thawed and unmounted on drop, however the test ends.
struct Frozen {
    path: PathBuf,
}

impl Frozen {
    fn mount(image: &Path, path: &Path) -> Frozen {
        let run = |cmd: &mut std::process::Command| {
            let out = cmd.output().unwrap();
            assert!(
                out.status.success(),
                "{cmd:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        std::fs::create_dir_all(path).unwrap();
        let f = std::fs::File::create(image).unwrap();
        f.set_len(64 << 20).unwrap();
        drop(f);
        run(std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(image));
        run(std::process::Command::new("mount")
            .args(["-o", "loop"])
            .arg(image)
            .arg(path));
        Frozen {
            path: path.to_owned(),
        }
    }

    fn fsfreeze(&self, how: &str) -> bool {
        std::process::Command::new("fsfreeze")
            .arg(how)
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        self.fsfreeze("-u");
        let ok = std::process::Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.path)
                .status();
        }
    }
}

/// A raft log write that blocks (the data dir's file system frozen): the
/// raft loop stops answering, `/healthz` turns 503 with the reason, and
/// SIGTERM still takes the node down: it gives up on the stuck thread
/// after its shutdown budget, and the process is gone as soon as the
/// kernel lets that thread go.
#[tokio::test]
async fn a_stuck_log_write_is_unhealthy_and_sigterm_still_stops_the_node() {
    if !root_or_skip("freezing a loop-mounted file system") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fs = Frozen::mount(&dir.path().join("image"), &dir.path().join("fs"));
    let (head, metrics, _) = node_section(1, "zone-a", &fs.path);
    // Every refresh writes to the log.
    let config = format!(
        "{head}[cluster]\nrefresh = \"100ms\"\n\n\
         [[targets]]\nname = \"closed\"\nkind = \"tcp\"\naddr = \"127.0.0.1:9\"\ninterval = \"100ms\"\ntimeout = \"90ms\"\n"
    );
    let path = dir.path().join("node.toml");
    std::fs::write(&path, config).unwrap();
    init(&path, &[]).await;
    let log = dir.path().join("node.log");
    let mut child = Command::new(workspace_bin("faxi-watchdog"))
        .args(["run", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let healthz = || faxi_tests::http_get(metrics, "/healthz");
    wait_for("the node's /healthz", Duration::from_secs(20), healthz).await;

    assert!(fs.fsfreeze("-f"), "fsfreeze -f {}", fs.path.display());
    let why = wait_for(
        "/healthz to say unhealthy",
        Duration::from_secs(30),
        || async {
            match healthz().await {
                Ok(body) => Err(format!("still 200: {body}")),
                Err(e) if e.contains("503") => Ok(e),
                Err(e) => Err(e),
            }
        },
    )
    .await;
    // http_get gives the status line of a non-200; the reason is the body.
    assert!(why.starts_with("HTTP/1.1 503"), "{why}");
    let body = raw_get(metrics, "/healthz").await;
    assert!(
        body.contains("unhealthy: the raft loop has not answered for"),
        "{body}"
    );

    let pid = child.id().unwrap().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    wait_for(
        "the node to give up on its stuck raft thread",
        Duration::from_secs(30),
        || async {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("the raft thread did not stop within") {
                Ok(())
            } else {
                Err(tail(&text))
            }
        },
    )
    .await;
    // The write blocked in the kernel holds the process until it returns.
    assert!(fs.fsfreeze("-u"));
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("exit once the file system thaws")
        .unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(1), "{status}:\n{}", tail(&text));
    let last = text.lines().last().unwrap_or_default();
    assert!(
        last.contains("the raft thread did not stop within 10s")
            && last.contains(&fs.path.join("data").display().to_string()),
        "{last}"
    );
    drop(child);
    drop(fs);
}

/// The body of a GET, whatever its status.
async fn raw_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}
