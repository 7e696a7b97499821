//! A private PostgreSQL: `initdb` + `pg_ctl` on a free port in a temp dir,
//! password authentication (scram-sha-256) on TCP.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tempfile::TempDir;

use crate::{free_port, is_root, wait_listening};

/// The superuser the instance is created with.
pub const USER: &str = "faxi";
/// Its password.
pub const PASSWORD: &str = "faxi-test-pw";

/// A running PostgreSQL; stopped (immediate) on drop.
#[derive(Debug)]
pub struct Postgres {
    /// Where it listens.
    pub port: u16,
    dir: TempDir,
    bin: PathBuf,
    /// Started and not stopped since: what drop must stop.
    running: AtomicBool,
}

fn pg_bin() -> PathBuf {
    if let Ok(p) = std::env::var("PG_BIN") {
        return PathBuf::from(p);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions.pop().unwrap_or_default()
}

/// Runs a PostgreSQL tool, as `postgres` when we are root (initdb refuses root).
fn pg(bin: &Path, tool: &str, args: &[&str]) -> std::process::Output {
    let exe = bin.join(tool);
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&exe);
        c
    } else {
        Command::new(&exe)
    };
    cmd.args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()))
}

impl Postgres {
    /// initdb, then start on a free port; returns once it accepts connections.
    pub async fn start() -> Postgres {
        let bin = pg_bin();
        let dir = tempfile::Builder::new()
            .prefix("faxi-pg-")
            .tempdir()
            .unwrap();
        if is_root() {
            let status = Command::new("chown")
                .args(["postgres:"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success(), "chown postgres {}", dir.path().display());
        }
        let data = dir.path().join("data");
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, PASSWORD).unwrap();
        if is_root() {
            let status = Command::new("chown")
                .args(["postgres:"])
                .arg(&pwfile)
                .status()
                .unwrap();
            assert!(status.success(), "chown postgres {}", pwfile.display());
        }
        let out = pg(
            &bin,
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                USER,
                &format!("--pwfile={}", pwfile.display()),
                "-A",
                "scram-sha-256",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pg = Postgres {
            port: free_port(),
            dir,
            bin,
            running: AtomicBool::new(false),
        };
        pg.start_again().await;
        pg
    }

    /// Starts the (stopped) instance again on the same port and data.
    pub async fn start_again(&self) {
        let data = self.dir.path().join("data");
        let log = self.dir.path().join("log");
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=50",
            self.port,
            self.dir.path().display()
        );
        let out = pg(
            &self.bin,
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &opts,
                "-w",
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        self.running.store(true, Ordering::SeqCst);
        wait_listening(
            "postgres",
            ([127, 0, 0, 1], self.port).into(),
            Duration::from_secs(30),
        )
        .await;
    }

    /// Kills it as a crash would (`pg_ctl stop -m immediate`); fails the
    /// test if pg_ctl cannot (a server left running would outlive it).
    pub fn kill(&self) {
        if let Err(e) = self.stop() {
            panic!("{e}");
        }
    }

    /// `pg_ctl stop -m immediate` if it runs; what went wrong otherwise.
    fn stop(&self) -> Result<(), String> {
        if !self.running.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        let data = self.dir.path().join("data");
        let out = pg(
            &self.bin,
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "pg_ctl stop failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// A DSN without the password, as the config wants it.
    pub fn dsn(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user={USER} dbname=postgres",
            self.port
        )
    }

    /// A connected client with the right password.
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(
            &format!("{} password={PASSWORD}", self.dsn()),
            tokio_postgres::NoTls,
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        client
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            // A second panic while unwinding would abort the test binary.
            if std::thread::panicking() {
                eprintln!("{e}");
            } else {
                panic!("{e}");
            }
        }
    }
}
