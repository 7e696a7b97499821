//! A private Redis: `redis-server` on a free port, no persistence, a password.

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
    child: Option<Child>,
}

impl Redis {
    /// Starts it and waits until it accepts connections.
    pub async fn start() -> Redis {
        let mut r = Redis {
            port: free_port(),
            child: None,
        };
        r.start_again().await;
        r
    }

    /// Starts a killed instance again on the same port.
    pub async fn start_again(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--requirepass",
                PASSWORD,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("cannot run redis-server: install it (the test script does)");
        self.child = Some(child);
        wait_listening(
            "redis",
            ([127, 0, 0, 1], self.port).into(),
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

    /// `redis://127.0.0.1:PORT`, without the password.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}
