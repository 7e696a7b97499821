//! `faxi-watchdog`: run a node, or check a config file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use faxi_watchdog::config::Config;
use faxi_watchdog::telemetry::{self, LogFormat};

/// A health-watchdog node for Faxi's PostgreSQL, Redis, S3, backups and app.
#[derive(Debug, Parser)]
#[command(name = "faxi-watchdog", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one node.
    Run {
        /// The node's config file (TOML).
        #[arg(long, short = 'c', value_name = "FILE")]
        config: PathBuf,
        /// Log line format (the filter comes from FAXI_LOG, default "info").
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
    },
    /// Validate a config file: exit 0 when it is good, else print every
    /// problem (file, key, reason) and exit 1.
    CheckConfig {
        /// The config file (TOML).
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

/// Exit code for a bad config or a failed start.
const EXIT_FAILURE: u8 = 1;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => check_config(&file),
        Command::Run { config, log_format } => run(&config, log_format),
    }
}

fn check_config(file: &std::path::Path) -> ExitCode {
    match Config::load(file) {
        Ok(c) => {
            let mut kinds = std::collections::BTreeMap::new();
            for t in &c.targets {
                *kinds.entry(t.kind().as_str()).or_insert(0usize) += 1;
            }
            let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
            #[allow(clippy::print_stdout)]
            {
                println!(
                    "{}: ok: node {} in zone {}, {} peer(s), {} target(s){}",
                    file.display(),
                    c.node.id,
                    c.node.zone,
                    c.cluster.peers.len(),
                    c.targets.len(),
                    if kinds.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", kinds.join(", "))
                    }
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            eprintln!("{}: {} problem(s) found", file.display(), e.problems.len());
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn run(file: &std::path::Path, log_format: LogFormat) -> ExitCode {
    // A bad config is refused before anything starts, exactly as check-config reports it.
    let config = match Config::load(file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            eprintln!(
                "{}: {} problem(s) found; not starting",
                file.display(),
                e.problems.len()
            );
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    if let Err(e) = telemetry::init(log_format) {
        eprintln!("faxi-watchdog: {e}");
        return ExitCode::from(EXIT_FAILURE);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("faxi-watchdog: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match runtime.block_on(faxi_watchdog::node::run(config, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "node failed");
            eprintln!("faxi-watchdog: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
