//! Logging: structured tracing events, text by default, JSON on request.
//!
//! Secrets never reach the log, at any level: dependencies that print
//! credentials at debug or trace are held at info whatever `FAXI_LOG` asks
//! ([`QUIET_TARGETS`]), and every line is written through the config's
//! [`Redactor`] as a last line of defence.

use std::io::Write;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::Redactor;

/// The environment variable holding the log filter (`info` by default),
/// in tracing's syntax: `debug`, `faxi_watchdog=debug,info`, ...
pub const LOG_ENV: &str = "FAXI_LOG";

/// Log targets (prefixes) never shown below info, whatever `FAXI_LOG`
/// says, because they print credentials there: the AWS SDK's crates
/// (`aws_sigv4`, `aws_smithy_runtime`, `aws_sdk_s3`, `aws_config`, ...)
/// log the resolved identity, access key id included, when they sign and
/// route each request (debug and trace).
pub const QUIET_TARGETS: &[&str] = &["aws_"];

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// Installs the global subscriber, writing to stderr with every secret
/// `redact` knows replaced by `***`.
pub fn init(format: LogFormat, redact: Redactor) -> Result<(), String> {
    let filter = match std::env::var(LOG_ENV) {
        Ok(s) => EnvFilter::try_new(&s).map_err(|e| format!("{LOG_ENV}=\"{s}\": {e}"))?,
        Err(_) => EnvFilter::new("info"),
    };
    let quiet = quiet_targets();
    use std::io::IsTerminal;
    let writer = Redacting(redact);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    let result = match format {
        LogFormat::Text => builder.finish().with(quiet).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .finish()
            .with(quiet)
            .try_init(),
    };
    result.map_err(|e| format!("logging: {e}"))
}

/// Everything at every level, except [`QUIET_TARGETS`] above info.
fn quiet_targets() -> Targets {
    QUIET_TARGETS
        .iter()
        .fold(Targets::new().with_default(LevelFilter::TRACE), |t, q| {
            t.with_target(*q, LevelFilter::INFO)
        })
}

/// Stderr, through a [`Redactor`].
#[derive(Debug, Clone)]
struct Redacting(Redactor);

impl<'a> MakeWriter<'a> for Redacting {
    type Writer = RedactingWriter<'a, std::io::Stderr>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter {
            redact: &self.0,
            out: std::io::stderr(),
        }
    }
}

/// Writes each buffer (one whole log line: tracing formats an event, then
/// writes it at once) with the secrets replaced.
#[derive(Debug)]
struct RedactingWriter<'a, W> {
    redact: &'a Redactor,
    out: W,
}

impl<W: Write> Write for RedactingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.redact.is_empty() {
            return self.out.write(buf);
        }
        let text = String::from_utf8_lossy(buf);
        self.out.write_all(self.redact.redact(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_aws_sdk_stays_at_info_whatever_the_filter() {
        use tracing::Level;
        let q = quiet_targets();
        for t in [
            "aws_sigv4::http_request::sign",
            "aws_smithy_runtime::client::orchestrator::auth",
            "aws_sdk_s3::operation::head_bucket",
            "aws_config",
        ] {
            assert!(!q.would_enable(t, &Level::DEBUG), "{t}");
            assert!(!q.would_enable(t, &Level::TRACE), "{t}");
            assert!(q.would_enable(t, &Level::INFO), "{t}");
        }
        assert!(q.would_enable("faxi_watchdog::scheduler", &Level::TRACE));
        assert!(q.would_enable("hyper_util::client", &Level::TRACE));
    }

    #[test]
    fn log_lines_are_written_without_the_secrets() {
        let key = crate::config::Secret::new("AKIAEXAMPLE0815");
        let redact = Redactor::new([&key]);
        let mut w = RedactingWriter {
            redact: &redact,
            out: Vec::new(),
        };
        let line = b"DEBUG signing access_key_id: \"AKIAEXAMPLE0815\"\n";
        assert_eq!(w.write(line).unwrap(), line.len());
        assert_eq!(w.out, b"DEBUG signing access_key_id: \"***\"\n");
    }
}
