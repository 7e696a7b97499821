//! Logging: structured tracing events, text by default, JSON on request.

use tracing_subscriber::EnvFilter;

/// The environment variable holding the log filter (`info` by default),
/// in tracing's syntax: `debug`, `faxi_watchdog=debug,info`, ...
pub const LOG_ENV: &str = "FAXI_LOG";

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// Installs the global subscriber, writing to stderr.
pub fn init(format: LogFormat) -> Result<(), String> {
    let filter = match std::env::var(LOG_ENV) {
        Ok(s) => EnvFilter::try_new(&s).map_err(|e| format!("{LOG_ENV}=\"{s}\": {e}"))?,
        Err(_) => EnvFilter::new("info"),
    };
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| format!("logging: {e}"))
}
