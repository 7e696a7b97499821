//! The real Docker engine, for the tests of what acts on containers.
//!
//! No registry can be reached, so the one image the tests run is built
//! here: a root file system holding Debian's static busybox and its applets
//! as symlinks, `docker import`ed as [`BUSYBOX_IMAGE`] (kept and reused
//! once built). Containers are started through the `docker` CLI, named
//! with a prefix (`FAXI_TEST_CONTAINER_PREFIX`, `faxi-test-` by default)
//! and removed when their handle drops; the tests read them back through
//! the CLI too, a path independent of the code under test.
//!
//! A test that needs Docker fails when the engine does not answer, so
//! that a green run means it ran; `FAXI_SKIP_DOCKER=1` skips it knowingly
//! ([`docker_or_skip`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::process::Command;

/// The image the tests run: busybox on an empty root.
pub const BUSYBOX_IMAGE: &str = "faxi-test-busybox:latest";

/// A container command that sleeps for an hour and exits at once, with
/// status 0, on SIGTERM (as PID 1 a bare `sleep` would ignore it, and every
/// stop would wait for the engine's kill).
pub const SLEEPER: &[&str] = &["/bin/sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"];

/// A container command serving HTTP on port 8080 (busybox's httpd, in the
/// foreground, over the root): a TCP service that dies with its container.
pub const HTTPD: &[&str] = &["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/"];

/// Where the static busybox may be (Debian's `busybox-static` puts it in
/// /bin).
const BUSYBOX_PATHS: &[&str] = &["/bin/busybox", "/usr/bin/busybox"];

/// Runs `docker ARGS`: its trimmed stdout, or an error with its stderr.
pub async fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| format!("docker {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!(
            "docker {}: {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Whether a test that needs the Docker engine runs: true when it answers;
/// false, saying so, when `FAXI_SKIP_DOCKER=1`; otherwise the test fails
/// with the engine's error.
pub async fn docker_or_skip(what: &str) -> bool {
    let answer = docker(&["version", "--format", "{{.Server.Version}}"]).await;
    match answer {
        Ok(_) => true,
        Err(_) if std::env::var("FAXI_SKIP_DOCKER").as_deref() == Ok("1") => {
            eprintln!(
                "SKIPPED: FAXI_SKIP_DOCKER=1: {what} needs the Docker engine and did not run"
            );
            false
        }
        Err(e) => panic!(
            "{what} needs the Docker engine, which does not answer ({e}); \
             start it, or set FAXI_SKIP_DOCKER=1 to skip this test knowingly"
        ),
    }
}

/// Whether `path` is an ELF executable with no program interpreter, i.e.
/// statically linked (it then runs on an empty root).
fn is_static_elf(path: &Path) -> bool {
    let Ok(b) = std::fs::read(path) else {
        return false;
    };
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 || b[5] != 1 {
        return false; // only 64-bit little-endian ELF is read here
    }
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let u64_at = |o: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[o..o + 8]);
        u64::from_le_bytes(a) as usize
    };
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    (0..phnum).all(|i| {
        let o = phoff + i * phentsize;
        // PT_INTERP = 3: the dynamic loader a dynamic executable names.
        o + 4 <= b.len() && u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]) != 3
    })
}

/// The static busybox on this machine (tests/run installs Debian's
/// `busybox-static`).
pub fn static_busybox() -> PathBuf {
    BUSYBOX_PATHS
        .iter()
        .map(PathBuf::from)
        .find(|p| is_static_elf(p))
        .unwrap_or_else(|| {
            panic!(
                "no statically linked busybox in {BUSYBOX_PATHS:?}: install Debian's \
                 busybox-static (tests/run does)"
            )
        })
}

/// Makes sure [`BUSYBOX_IMAGE`] exists, building it when missing, and
/// returns its name. Safe to call from every test at once.
pub async fn busybox_image() -> &'static str {
    static BUILT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    BUILT
        .get_or_init(|| async {
            if docker(&["image", "inspect", "--format", "{{.Id}}", BUSYBOX_IMAGE])
                .await
                .is_ok()
            {
                return;
            }
            build_busybox_image().await;
        })
        .await;
    BUSYBOX_IMAGE
}

/// Builds [`BUSYBOX_IMAGE`]: a root with /bin/busybox, a symlink per
/// applet (`busybox --list-full`), the usual empty directories, imported
/// from a tarball.
async fn build_busybox_image() {
    let busybox = static_busybox();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rootfs");
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "tmp", "etc", "proc", "sys", "dev",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy(&busybox, root.join("bin/busybox")).unwrap();
    let list = Command::new(&busybox)
        .arg("--list-full")
        .output()
        .await
        .unwrap();
    assert!(
        list.status.success(),
        "busybox --list-full: {}",
        list.status
    );
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim().trim_start_matches('/');
        if applet.is_empty() || applet == "bin/busybox" {
            continue;
        }
        let link = root.join(applet);
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        let _ = std::os::unix::fs::symlink("/bin/busybox", link);
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
    let tar = dir.path().join("rootfs.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .await
        .unwrap();
    assert!(status.success(), "tar of the busybox root: {status}");
    let tar = tar.to_string_lossy().into_owned();
    docker(&[
        "import",
        "--change",
        r#"CMD ["/bin/sh"]"#,
        &tar,
        BUSYBOX_IMAGE,
    ])
    .await
    .unwrap_or_else(|e| panic!("building {BUSYBOX_IMAGE}: {e}"));
}

/// A unique container name: the prefix, what it is for, and randomness.
pub fn container_name(what: &str) -> String {
    let prefix =
        std::env::var("FAXI_TEST_CONTAINER_PREFIX").unwrap_or_else(|_| "faxi-test-".to_owned());
    format!(
        "{prefix}{what}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// A container started by a test (detached, on [`BUSYBOX_IMAGE`]);
/// removed, with force, when dropped.
#[derive(Debug)]
pub struct TestContainer {
    /// Its name.
    pub name: String,
}

impl TestContainer {
    /// `docker run -d --name <unique> --label K=V... IMAGE CMD...`, then
    /// waits until it runs.
    pub async fn run(what: &str, labels: &[(&str, &str)], cmd: &[&str]) -> TestContainer {
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut args = Vec::new();
        for l in &labels {
            args.extend(["--label", l.as_str()]);
        }
        Self::run_with(what, &args, cmd).await
    }

    /// [`BUSYBOX_IMAGE`] running [`HTTPD`], its port 8080 published on
    /// `127.0.0.1:port` (the engine's proxy keeps that address across
    /// restarts, where the container's bridge address may change).
    pub async fn httpd(what: &str, port: u16) -> TestContainer {
        let publish = format!("127.0.0.1:{port}:8080");
        Self::run_with(what, &["-p", &publish], HTTPD).await
    }

    /// `docker run -d --name <unique> ARGS... IMAGE CMD...`, then waits
    /// until it runs.
    pub async fn run_with(what: &str, args: &[&str], cmd: &[&str]) -> TestContainer {
        let image = busybox_image().await;
        // The handle exists before the engine answers: a failed run still
        // removes whatever it created.
        let c = TestContainer {
            name: container_name(what),
        };
        let mut all = vec!["run", "-d", "--name", c.name.as_str()];
        all.extend(args);
        all.push(image);
        all.extend(cmd);
        docker(&all).await.unwrap();
        c.wait_running(true, Duration::from_secs(20)).await;
        c
    }

    /// Whether it runs now (`State.Running`).
    pub async fn running(&self) -> Result<bool, String> {
        docker(&["inspect", "--format", "{{.State.Running}}", &self.name])
            .await
            .map(|s| s == "true")
    }

    /// When it last started (`State.StartedAt`).
    pub async fn started_at(&self) -> SystemTime {
        let s = docker(&["inspect", "--format", "{{.State.StartedAt}}", &self.name])
            .await
            .unwrap();
        humantime::parse_rfc3339(&s).unwrap_or_else(|e| panic!("StartedAt {s:?}: {e}"))
    }

    /// How many times the engine restarted it by its restart policy
    /// (`RestartCount`; a restart asked through the API does not count).
    pub async fn restart_count(&self) -> u64 {
        let s = docker(&["inspect", "--format", "{{.RestartCount}}", &self.name])
            .await
            .unwrap();
        s.parse()
            .unwrap_or_else(|e| panic!("RestartCount {s:?}: {e}"))
    }

    /// `docker kill`: SIGKILL to its process, which the engine records as
    /// a death, not a stop asked for.
    pub async fn kill(&self) {
        docker(&["kill", &self.name]).await.unwrap();
    }

    /// The times (Unix ns) of the engine's `start` events for it between
    /// `since` and now, oldest first: every start, whoever asked.
    pub async fn starts_since(&self, since: SystemTime) -> Vec<u128> {
        let from = since
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let until = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let out = docker(&[
            "events",
            "--since",
            &format!("{from:.3}"),
            "--until",
            &format!("{until:.3}"),
            "--filter",
            &format!("container={}", self.name),
            "--filter",
            "event=start",
            "--format",
            "{{.TimeNano}}",
        ])
        .await
        .unwrap();
        out.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.trim().parse().unwrap())
            .collect()
    }

    /// Waits until it runs (or stops), at most `deadline`.
    pub async fn wait_running(&self, running: bool, deadline: Duration) {
        let what = format!(
            "{} to be {}",
            self.name,
            if running { "running" } else { "stopped" }
        );
        crate::wait_for(&what, deadline, || async move {
            match self.running().await? {
                r if r == running => Ok(()),
                r => Err(format!("running: {r}")),
            }
        })
        .await;
    }
}

impl Drop for TestContainer {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", "-v", &self.name])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}
