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
        /// Stop when standard input closes (for a supervising parent).
        #[arg(long, hide = true)]
        stop_on_stdin_eof: bool,
    },
    /// Create a new cluster, once, in this node's empty data dir: this node
    /// becomes its first voter and the other `cluster.peers` its learners,
    /// promoted to voters once they have caught up. Then start every node
    /// with `run`. Nodes never create a cluster on their own.
    Init {
        /// The node's config file (TOML).
        #[arg(long, short = 'c', value_name = "FILE")]
        config: PathBuf,
    },
    /// Run a complete 3-zone mesh on loopback with demo targets: gRPC on
    /// 127.0.0.1:7401-7403, metrics and the status page (/status) on
    /// 127.0.0.1:9401-9403. Then try `faxictl status`.
    Dev {
        /// Where configs, logs and raft logs go.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// The demo app's port (when free); the nodes' gRPC ports are the
        /// three after it.
        #[arg(long, value_name = "PORT", default_value_t = 7400)]
        base_port: u16,
        /// The nodes' metrics and status page ports are the three after it.
        #[arg(long, value_name = "PORT", default_value_t = 9400)]
        metrics_base_port: u16,
    },
    /// Make the cluster's TLS files in DIR: a CA (made once, then reused),
    /// a certificate and key per node (`node-<id>.pem`, naming its id) and
    /// per operator (`client-<name>.pem`, naming who and which role). Keys
    /// are written readable by their owner only.
    Certs {
        /// Where the files go.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Node ids, like `1,2,3`.
        #[arg(long, value_delimiter = ',', value_name = "IDS")]
        nodes: Vec<u64>,
        /// An operator as NAME:ROLE, ROLE one of read, operate, admin;
        /// repeat for more.
        #[arg(long = "operator", value_name = "NAME:ROLE")]
        operators: Vec<String>,
        /// Replace node or operator certificates that exist (rotation:
        /// the CA is kept, so the others still trust the new ones).
        #[arg(long)]
        replace: bool,
    },
    /// Make an automation token for NAME with ROLE: prints the token (give
    /// it to the client, e.g. faxictl --token-file) and, on stderr, the
    /// entry to add to every node's `tls.tokens_file` (it holds only the
    /// token's SHA-256). Nodes read the file at start.
    Token {
        /// Who holds it (audit records name them).
        #[arg(long)]
        name: String,
        /// read, operate or admin.
        #[arg(long)]
        role: String,
    },
    /// Validate a config file: exit 0 when it is good, else print every
    /// problem (file, key, reason) and exit 1.
    CheckConfig {
        /// The config file (TOML).
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

/// Exit code for a bad config, a failed start, or a node that stopped on
/// an error (a raft log write that failed).
const EXIT_FAILURE: u8 = 1;

/// How long tasks still running when the work is done may take to finish:
/// a blocking read of stdin never does, so the runtime is not left to wait.
const LEFTOVERS: std::time::Duration = std::time::Duration::from_secs(1);

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => check_config(&file),
        Command::Run {
            config,
            log_format,
            stop_on_stdin_eof,
        } => run(&config, log_format, stop_on_stdin_eof),
        Command::Dev {
            dir,
            base_port,
            metrics_base_port,
        } => match faxi_watchdog::dev::Ports::new(base_port, metrics_base_port) {
            Ok(ports) => dev(dir, ports),
            Err(e) => {
                eprintln!("faxi-watchdog dev: {e}");
                ExitCode::from(2)
            }
        },
        Command::Init { config } => init(&config),
        Command::Certs {
            dir,
            nodes,
            operators,
            replace,
        } => certs(dir, nodes, &operators, replace),
        Command::Token { name, role } => token(&name, &role),
    }
}

fn token(name: &str, role: &str) -> ExitCode {
    use faxi_watchdog::tls::{Role, new_token};
    let Some(role) = Role::parse(role) else {
        eprintln!("faxi-watchdog token: --role {role:?}: one of read, operate, admin");
        return ExitCode::from(2);
    };
    match new_token(name, role) {
        Ok((token, entry)) => {
            #[allow(clippy::print_stdout)]
            {
                println!("{token}");
            }
            eprintln!(
                "# add to every node's tls.tokens_file, then restart them one at a time:\n{entry}"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("faxi-watchdog token: {e}");
            ExitCode::from(2)
        }
    }
}

fn certs(dir: PathBuf, nodes: Vec<u64>, operators: &[String], replace: bool) -> ExitCode {
    use faxi_watchdog::tls::{CertRequest, Role, make_certs};
    let mut ops = Vec::new();
    for o in operators {
        match o
            .rsplit_once(':')
            .and_then(|(n, r)| Some((n, Role::parse(r)?)))
        {
            Some((name, role)) => ops.push((name.to_owned(), role)),
            None => {
                eprintln!(
                    "faxi-watchdog certs: --operator {o:?}: write NAME:ROLE, ROLE one of read, operate, admin"
                );
                return ExitCode::from(2);
            }
        }
    }
    let req = CertRequest {
        dir,
        nodes,
        operators: ops,
        replace,
    };
    match make_certs(&req) {
        Ok(files) => {
            #[allow(clippy::print_stdout)]
            for f in files {
                println!("{}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("faxi-watchdog certs: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn init(file: &std::path::Path) -> ExitCode {
    let config = match Config::load(file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            eprintln!("{}: {} problem(s) found", file.display(), e.problems.len());
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let Some(runtime) = runtime(Some(1)) else {
        return ExitCode::from(EXIT_FAILURE);
    };
    let result = runtime.block_on(faxi_watchdog::node::init(&config));
    runtime.shutdown_timeout(LEFTOVERS);
    match result {
        Ok(faxi_watchdog::mesh::driver::Init::Created(id)) => {
            let others: Vec<String> = config
                .cluster
                .peers
                .iter()
                .filter(|p| p.id != config.node.id)
                .map(|p| p.id.to_string())
                .collect();
            eprintln!(
                "faxi-watchdog init: created cluster {id} in {}: node {} is its first voter{}. \
                 Now start every node with `faxi-watchdog run`.",
                config.node.data_dir.display(),
                config.node.id,
                if others.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; nodes {} join as learners and become voters once caught up",
                        others.join(", ")
                    )
                }
            );
            ExitCode::SUCCESS
        }
        Ok(faxi_watchdog::mesh::driver::Init::Already(id)) => {
            eprintln!(
                "faxi-watchdog init: {} already holds cluster {id}; nothing changed",
                config.node.data_dir.display()
            );
            ExitCode::from(EXIT_FAILURE)
        }
        Err(e) => {
            eprintln!("faxi-watchdog init: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
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
                    "{}: ok: node {} in zone {}, {} peer(s), {} target(s){}{}",
                    file.display(),
                    c.node.id,
                    c.node.zone,
                    c.cluster.peers.len(),
                    c.targets.len(),
                    if kinds.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", kinds.join(", "))
                    },
                    if c.recovery.plans.is_empty() {
                        String::new()
                    } else {
                        format!(", {} recovery plan(s)", c.recovery.plans.len())
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

/// The tokio runtime (`workers` threads, else one per core); says why not.
fn runtime(workers: Option<usize>) -> Option<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers {
        b.worker_threads(n);
    }
    match b.enable_all().build() {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("faxi-watchdog: cannot start the runtime: {e}");
            None
        }
    }
}

fn dev(dir: Option<PathBuf>, ports: faxi_watchdog::dev::Ports) -> ExitCode {
    let dir = dir.unwrap_or_else(faxi_watchdog::dev::default_dir);
    let Some(runtime) = runtime(Some(1)) else {
        return ExitCode::from(EXIT_FAILURE);
    };
    let stop = {
        let _in = runtime.enter();
        shutdown_signal()
    };
    let result = runtime.block_on(faxi_watchdog::dev::run(&dir, ports, stop));
    runtime.shutdown_timeout(LEFTOVERS);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("faxi-watchdog dev: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn run(file: &std::path::Path, log_format: LogFormat, stop_on_stdin_eof: bool) -> ExitCode {
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
    if let Err(e) = telemetry::init(log_format, config.redactor()) {
        eprintln!("faxi-watchdog: {e}");
        return ExitCode::from(EXIT_FAILURE);
    }
    let Some(runtime) = runtime(None) else {
        return ExitCode::from(EXIT_FAILURE);
    };
    // Listening for the stop signals starts now, before the node: one that
    // comes while it starts still stops it cleanly.
    let stop = {
        let _in = runtime.enter();
        shutdown_signal()
    };
    let shutdown = async move {
        if stop_on_stdin_eof {
            tokio::select! {
                () = stop => {}
                () = stdin_closed() => {}
            }
        } else {
            stop.await;
        }
    };
    let result = runtime.block_on(faxi_watchdog::node::run(config, shutdown));
    // Whatever still runs (a read of stdin, a write stuck in the kernel) is
    // left behind: the process exits now.
    runtime.shutdown_timeout(LEFTOVERS);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "node failed");
            eprintln!("faxi-watchdog: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Resolves when standard input reaches its end or fails.
async fn stdin_closed() {
    use tokio::io::AsyncReadExt;
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    while let Ok(n) = stdin.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM: both are listened for from
/// this call on (inside a runtime), not from the first poll.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{Signal, SignalKind, signal};
    let int = signal(SignalKind::interrupt()).ok();
    let term = signal(SignalKind::terminate()).ok();
    let recv = |s: Option<Signal>| async move {
        match s {
            Some(mut s) => {
                s.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    async move {
        tokio::select! {
            () = recv(int) => {}
            () = recv(term) => {}
        }
    }
}
