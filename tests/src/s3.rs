//! A private S3-compatible server speaking the real S3 protocol (moto's
//! server, run by `s3server.py`), and the objects tests put in it.
//!
//! Object ages are controlled through the launcher's clock offset file: an
//! object put while the offset is N seconds is stamped N seconds in the past.

use std::process::Stdio;
use std::time::Duration;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use tempfile::TempDir;
use tokio::process::{Child, Command};

use crate::{free_port, wait_listening};

/// The access key tests configure (the server accepts any).
pub const ACCESS_KEY: &str = "faxi-test-access";
/// The secret key tests configure.
pub const SECRET_KEY: &str = "faxi-test-secret";

/// A running S3 server; killed on drop.
#[derive(Debug)]
pub struct S3Server {
    /// Where it listens.
    pub port: u16,
    child: Option<Child>,
    dir: TempDir,
}

impl S3Server {
    /// Starts it and waits until it answers.
    pub async fn start() -> S3Server {
        let dir = tempfile::Builder::new()
            .prefix("faxi-s3-")
            .tempdir()
            .unwrap();
        let port = free_port();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/s3server.py");
        let child = Command::new("python3")
            .arg(script)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("FAXI_S3_CLOCK_OFFSET_FILE", dir.path().join("offset"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect(
                "cannot run python3 s3server.py (needs moto[server]; the test script installs it)",
            );
        wait_listening(
            "s3 server",
            ([127, 0, 0, 1], port).into(),
            Duration::from_secs(30),
        )
        .await;
        S3Server {
            port,
            child: Some(child),
            dir,
        }
    }

    /// Kills it.
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A client for setting up fixtures.
    pub fn client(&self) -> aws_sdk_s3::Client {
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test"))
            .endpoint_url(self.endpoint())
            .force_path_style(true)
            .http_client(faxi_watchdog::probe::s3_http_client())
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    /// Creates a bucket.
    pub async fn create_bucket(&self, bucket: &str) {
        self.client()
            .create_bucket()
            .bucket(bucket)
            .send()
            .await
            .unwrap();
    }

    /// Puts an object whose LastModified is `age` in the past.
    pub async fn put_aged(&self, bucket: &str, key: &str, age: Duration) {
        let offset = self.dir.path().join("offset");
        std::fs::write(&offset, age.as_secs_f64().to_string()).unwrap();
        let r = self
            .client()
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from_static(b"-- pg_dump\n"))
            .send()
            .await;
        std::fs::write(&offset, "0").unwrap();
        r.unwrap();
    }

    /// The keys under a prefix.
    pub async fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let out = self
            .client()
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .send()
            .await
            .unwrap();
        out.contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect()
    }
}
