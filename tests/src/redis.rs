//! A private Redis: `redis-server` on a free port, no persistence, a password.

use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::{free_port, wait_listening};

/// The password `requirepass` is set to.
pub const PASSWORD: &str = "faxi-redis-test-pw";

/// A running redis-server; killed on drop.
#[derive(Debug)]
pub struct Redis {
    /// Where it listens.
    pub port: u16,
    /// The address it binds.
    pub ip: IpAddr,
    /// Whether it requires [`PASSWORD`].
    password: bool,
    child: Option<Child>,
}

impl Redis {
    /// Starts it on loopback with [`PASSWORD`] and waits until it accepts
    /// connections.
    pub async fn start() -> Redis {
        let mut r = Redis {
            port: free_port(),
            ip: IpAddr::from([127, 0, 0, 1]),
            password: true,
            child: None,
        };
        r.start_again().await;
        r
    }

    /// Starts it on `ip` (a bridge address that network namespaces reach),
    /// without a password (nodes in a cluster harness get no secrets).
    pub async fn start_open_on(ip: IpAddr) -> Redis {
        // A port that was free on that address a moment ago.
        let port = std::net::TcpListener::bind((ip, 0))
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut r = Redis {
            port,
            ip,
            password: false,
            child: None,
        };
        r.start_again().await;
        r
    }

    /// Starts a killed instance again on the same port.
    pub async fn start_again(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &self.port.to_string(),
            "--bind",
            &self.ip.to_string(),
        ])
        .args(["--save", "", "--appendonly", "no"]);
        if self.password {
            cmd.args(["--requirepass", PASSWORD]);
        } else {
            // Without a password Redis refuses clients from other hosts.
            cmd.args(["--protected-mode", "no"]);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("cannot run redis-server: install it (the test script does)");
        self.child = Some(child);
        wait_listening(
            "redis",
            SocketAddr::new(self.ip, self.port),
            Duration::from_secs(20),
        )
        .await;
    }

    /// Kills it (SIGKILL) and waits for it to be gone.
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    /// `redis://IP:PORT`, without the password.
    pub fn url(&self) -> String {
        format!("redis://{}", SocketAddr::new(self.ip, self.port))
    }
}
