//! `exec`: a program with arguments (no shell), its environment carrying
//! the incident and the fencing token; killed at its timeout.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt as _;

use super::{ActionFuture, Outcome, StepAction, StepRun};

/// Most output kept from the program (stdout then stderr), in bytes.
const MAX_OUTPUT: usize = 2048;

pub(super) struct Exec {
    argv: Vec<String>,
    env: Vec<(String, String)>,
    timeout: Duration,
}

impl Exec {
    pub(super) fn new(argv: Vec<String>, env: Vec<(String, String)>, timeout_ms: u64) -> Self {
        Self {
            argv,
            env,
            timeout: Duration::from_millis(timeout_ms),
        }
    }
}

impl StepAction for Exec {
    fn run<'a>(&'a self, step: &'a StepRun) -> ActionFuture<'a, Outcome> {
        Box::pin(async move {
            let Some((program, args)) = self.argv.split_first() else {
                return Outcome::Failed("exec: empty argv".into());
            };
            let mut cmd = tokio::process::Command::new(program);
            cmd.args(args)
                .envs(self.env.iter().map(|(k, v)| (k, v)))
                .env("FAXI_INCIDENT", step.incident.to_string())
                .env("FAXI_TARGET", &step.target)
                .env("FAXI_FENCE_TERM", step.fence.term.to_string())
                .env("FAXI_FENCE_INDEX", step.fence.index.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true);
            let mut child = match cmd.spawn() {
                Ok(c) => c,
                Err(e) => return Outcome::Failed(format!("exec {program}: cannot start: {e}")),
            };
            let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
            let run = async {
                let mut o = Vec::new();
                let mut e = Vec::new();
                let read_out = async {
                    if let Some(s) = out.as_mut() {
                        let _ = s.take(MAX_OUTPUT as u64 * 4).read_to_end(&mut o).await;
                    }
                };
                let read_err = async {
                    if let Some(s) = err.as_mut() {
                        let _ = s.take(MAX_OUTPUT as u64 * 4).read_to_end(&mut e).await;
                    }
                };
                let ((), ()) = tokio::join!(read_out, read_err);
                let status = child.wait().await;
                (status, o, e)
            };
            match tokio::time::timeout(self.timeout, run).await {
                Err(_) => Outcome::Failed(format!(
                    "exec {program}: killed after its timeout {:?}",
                    self.timeout
                )),
                Ok((Err(e), _, _)) => Outcome::Failed(format!("exec {program}: {e}")),
                Ok((Ok(status), o, e)) => {
                    let mut text = String::from_utf8_lossy(&o).trim().to_owned();
                    let e = String::from_utf8_lossy(&e).trim().to_owned();
                    if !e.is_empty() {
                        if !text.is_empty() {
                            text.push('\n');
                        }
                        text.push_str(&e);
                    }
                    let text = crate::mesh::state::clip_error(&text);
                    let text: String = text.chars().take(MAX_OUTPUT).collect();
                    if status.success() {
                        Outcome::Done(text)
                    } else {
                        Outcome::Failed(format!("exec {program}: {status}: {text}"))
                    }
                }
            }
        })
    }
}
