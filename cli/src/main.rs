//! `faxictl`: the command line for a faxi-watchdog mesh.
//!
//! Exit codes: 0 done; 1 the mesh answered with an error (a bad request, no
//! leader, a change that did not commit, no node able to answer fresh); 2
//! bad usage; 3 no endpoint answered.

mod client_config;
mod output;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use faxi_proto::v1 as pb;
use faxi_proto::v1::watchdog_client::WatchdogClient;
use tokio::time::Instant;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use faxi_proto::client::ANY_NODE;

/// faxictl's default endpoints: the nodes of `faxi-watchdog dev`.
const DEFAULT_ENDPOINTS: &str = "127.0.0.1:7401,127.0.0.1:7402,127.0.0.1:7403";

const EXIT_ERROR: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_UNREACHABLE: u8 = 3;

/// Longest `--timeout` that makes sense for one command.
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
/// Longest `--name` pattern.
const MAX_PATTERN: usize = 256;
/// No target is named this (names are letters, digits, '-', '_' and '.'):
/// a status filtered by it carries the cluster and no target.
const NO_TARGET: &str = "/";

/// The command line for a faxi-watchdog mesh.
///
/// Exit codes: 0 done, 1 the mesh answered with an error (or no node could
/// answer fresh), 2 bad usage, 3 no endpoint answered.
#[derive(Debug, Parser)]
#[command(name = "faxictl", version, about, long_about = None)]
struct Cli {
    /// Nodes to ask (host:port, https://host:port or http://host:port,
    /// comma-separated); the first that answers (fresh, for reads) is used.
    /// Default: the client config's, else 127.0.0.1:7401-7403. host:port
    /// means TLS when a CA, certificate and key are known.
    #[arg(long, global = true, env = "FAXI_ENDPOINTS", value_delimiter = ',')]
    endpoints: Vec<String>,
    /// The client config file (endpoints, CA, certificate, key). Default:
    /// $XDG_CONFIG_HOME/faxictl/config.toml (~/.config/faxictl/config.toml)
    /// when it exists.
    #[arg(long, global = true, env = "FAXICTL_CONFIG", value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// The cluster CA certificate (PEM), overriding the client config's.
    #[arg(long, global = true, value_name = "FILE")]
    ca: Option<std::path::PathBuf>,
    /// This client's certificate (PEM), overriding the client config's.
    #[arg(long, global = true, value_name = "FILE")]
    cert: Option<std::path::PathBuf>,
    /// This client's private key (PEM), overriding the client config's.
    #[arg(long, global = true, value_name = "FILE")]
    key: Option<std::path::PathBuf>,
    /// A file holding an automation token (made by `faxi-watchdog
    /// token`), sent instead of a client certificate; needs --ca.
    #[arg(long, global = true, value_name = "FILE")]
    token_file: Option<std::path::PathBuf>,
    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value = "table")]
    output: Output,
    /// Time the whole command may take; each endpoint gets its share of
    /// what is left (a silent one cannot use it all).
    #[arg(long, global = true, default_value = "3s", value_parser = parse_timeout)]
    timeout: Duration,
    /// Reads: show a node's answer even when it could not confirm it with
    /// the leader (marked stale, with its age), instead of moving on to a
    /// node that can.
    #[arg(long, global = true)]
    allow_stale: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// A human table.
    Table,
    /// JSON (one document; `watch` prints one per line).
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StateArg {
    #[value(name = "UP")]
    Up,
    #[value(name = "DOWN")]
    Down,
    #[value(name = "SUSPECT")]
    Suspect,
    #[value(name = "UNKNOWN")]
    Unknown,
    #[value(name = "STALE")]
    Stale,
}

impl StateArg {
    fn as_str(self) -> &'static str {
        match self {
            StateArg::Up => "UP",
            StateArg::Down => "DOWN",
            StateArg::Suspect => "SUSPECT",
            StateArg::Unknown => "UNKNOWN",
            StateArg::Stale => "STALE",
        }
    }
}

/// Which targets `status` shows.
#[derive(Debug, Args)]
struct Select {
    /// Every target (the table shows only those not UP by default; JSON
    /// always has every target unless filtered).
    #[arg(long, conflicts_with = "state")]
    all: bool,
    /// Only targets in these states (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', ignore_case = true)]
    state: Vec<StateArg>,
    /// Only targets whose name matches: an exact name or a pattern with `*`
    /// and `?` (comma-separated or repeated).
    #[arg(long, value_delimiter = ',', value_parser = parse_pattern)]
    name: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The cluster, counts per state, and the targets that are not UP
    /// (`--all` for every one).
    Status(Select),
    /// Status, then every change as it happens (Ctrl-C to stop).
    Watch,
    /// List members, or add or remove one.
    Members {
        #[command(subcommand)]
        change: Option<MemberCommand>,
    },
    /// Hand leadership to another member.
    TransferLeader {
        /// The member to lead.
        id: u64,
    },
    /// The latest operator requests: who asked for what, and when, as the
    /// leader recorded them before acting (newest first).
    Audit {
        /// At most this many records.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=256))]
        limit: u32,
    },
    /// Open incidents: phase, detection and recovery times against the
    /// target's RTO, the step running (`--all`: the finished ones the
    /// nodes keep too).
    Incidents {
        /// Also the finished incidents (the nodes keep the latest 100).
        #[arg(long)]
        all: bool,
    },
    /// One incident.
    Incident {
        #[command(subcommand)]
        command: IncidentCommand,
    },
    /// Recovery time tracking: each target's RTO against its actual
    /// recovery times (last, p95, count), drills apart.
    Rto,
    /// Approve the step an incident waits on (or re-run a step whose
    /// outcome is unknown).
    Approve {
        /// The incident.
        id: u64,
        /// Skip the step instead of running it.
        #[arg(long)]
        skip: bool,
    },
    /// Show cluster-wide maintenance, or turn it on or off (recovery
    /// pauses, detection goes on).
    Maintenance {
        #[command(subcommand)]
        change: Option<MaintenanceCommand>,
    },
    /// Run a target's recovery plan now, for real, as a drill (its time is
    /// counted apart from real incidents').
    Drill {
        /// The target.
        target: String,
    },
}

#[derive(Debug, Subcommand)]
enum IncidentCommand {
    /// The incident and its timeline.
    Show {
        /// Its id (`faxictl incidents`).
        id: u64,
    },
}

#[derive(Debug, Subcommand)]
enum MaintenanceCommand {
    /// Show it (the default).
    Show,
    /// Turn it on, for a while.
    On {
        /// Why (1 to 256 bytes, shown to everyone).
        #[arg(long, value_parser = parse_reason)]
        reason: String,
        /// For how long: 1m to 7d (`2h`, `90m`).
        #[arg(long = "for", value_name = "DURATION", value_parser = parse_maintenance)]
        duration: Duration,
    },
    /// Turn it off.
    Off,
}

#[derive(Debug, Subcommand)]
enum MemberCommand {
    /// List members (the default).
    List,
    /// Add a node (or change the zone and address of an existing one).
    Add {
        /// Its Raft id (node.id in its config).
        id: u64,
        /// Its zone.
        zone: String,
        /// host:port of its gRPC listener.
        addr: String,
    },
    /// Remove a node.
    Remove {
        /// Its Raft id.
        id: u64,
        /// Remove it even if the voters left could not form a reachable
        /// quorum (the cluster then waits until enough of them are back).
        #[arg(long)]
        force: bool,
    },
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < Duration::from_millis(1) {
        return Err("must be at least 1ms".into());
    }
    if d > MAX_TIMEOUT {
        return Err(format!(
            "must be at most {}",
            humantime::format_duration(MAX_TIMEOUT)
        ));
    }
    Ok(d)
}

/// Shortest and longest maintenance (the nodes say the same).
const MIN_MAINTENANCE: Duration = Duration::from_secs(60);
const MAX_MAINTENANCE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Longest maintenance reason, in bytes.
const MAX_REASON: usize = 256;

fn parse_maintenance(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if !(MIN_MAINTENANCE..=MAX_MAINTENANCE).contains(&d) {
        return Err("must be from 1m to 7d".into());
    }
    Ok(d)
}

fn parse_reason(s: &str) -> Result<String, String> {
    if s.trim().is_empty() || s.len() > MAX_REASON || s.chars().any(char::is_control) {
        return Err(format!(
            "must be 1 to {MAX_REASON} bytes without control characters"
        ));
    }
    Ok(s.to_owned())
}

fn parse_pattern(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= MAX_PATTERN
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '*' | '?'));
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "\"{s}\" is not a name pattern: use 1 to {MAX_PATTERN} letters, digits, '-', '_', '.', '*' or '?'"
        ))
    }
}

/// An endpoint as given, checked: where to connect. host:port is TLS when
/// `tls` (a CA, certificate and key are known), plaintext otherwise.
fn endpoint_uri(e: &str, tls: bool) -> Result<String, String> {
    let (scheme, rest) = match e.split_once("://") {
        None if tls => ("https", e),
        None => ("http", e),
        Some(("http", rest)) => ("http", rest),
        Some(("https", rest)) if tls => ("https", rest),
        Some(("https", _)) => {
            return Err(format!(
                "{e}: https:// needs the cluster CA and a client certificate and key \
                 (--ca, --cert and --key, or a client config: FAXICTL_CONFIG)"
            ));
        }
        Some((scheme, _)) => {
            return Err(format!(
                "{e}: unknown scheme {scheme}:// (use host:port, https://host:port or http://host:port)"
            ));
        }
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let bad = || format!("{e}: not host:port");
    let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    let host_ok = !host.is_empty()
        && !host.contains(['/', '?', '#', '@'])
        && !host.chars().any(char::is_whitespace);
    match port.parse::<u16>() {
        Ok(p) if p > 0 && host_ok => {}
        _ => return Err(bad()),
    }
    let uri = format!("{scheme}://{rest}");
    tonic::transport::Endpoint::from_shared(uri.clone()).map_err(|_| bad())?;
    Ok(uri)
}

/// A failure, and the exit code it gives.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn usage(message: String) -> Self {
        Self {
            code: EXIT_USAGE,
            message,
        }
    }
}

fn describe(s: &tonic::Status) -> String {
    let code = match s.code() {
        tonic::Code::InvalidArgument => "bad request",
        tonic::Code::NotFound => "not found",
        tonic::Code::Unavailable => "unavailable",
        tonic::Code::DeadlineExceeded => "timed out",
        tonic::Code::FailedPrecondition => "refused",
        tonic::Code::ResourceExhausted => "overloaded",
        tonic::Code::Unimplemented => "not supported by this node",
        _ => "error",
    };
    let msg = s.message();
    if msg.is_empty() {
        code.to_owned()
    } else {
        format!("{code}: {msg}")
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("faxictl: cannot start: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("faxictl: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

/// The client config in effect: the one named, else the default one when
/// it exists, else none.
fn client_config(cli: &Cli) -> Result<client_config::ClientConfig, Failure> {
    let path = match &cli.config {
        Some(p) => p.clone(),
        None => match client_config::default_path() {
            Some(p) if p.exists() => p,
            _ => return Ok(client_config::ClientConfig::default()),
        },
    };
    client_config::load(&path).map_err(Failure::usage)
}

/// TLS to the cluster, from the flags or the client config; `None` when
/// none of CA, certificate and key is known.
fn client_tls(
    cli: &Cli,
    cfg: &client_config::ClientConfig,
) -> Result<(Option<ClientTlsConfig>, Auth), Failure> {
    let ca = cli.ca.clone().or_else(|| cfg.ca.clone());
    let cert = cli.cert.clone().or_else(|| cfg.cert.clone());
    let key = cli.key.clone().or_else(|| cfg.key.clone());
    let read = |what: &str, p: &std::path::Path| {
        std::fs::read(p).map_err(|e| Failure::usage(format!("{what} {}: {e}", p.display())))
    };
    // A token stands in for the certificate and key; flags win over the
    // client config, and one way of proving who you are is given, not two.
    let cli_cert = cli.cert.is_some() || cli.key.is_some();
    if cli.token_file.is_some() && cli_cert {
        return Err(Failure::usage(
            "give --token-file or --cert and --key, not both".into(),
        ));
    }
    let token_file = match (&cli.token_file, cli_cert) {
        (Some(t), _) => Some(t.clone()),
        (None, true) => None,
        (None, false) => {
            if cfg.token_file.is_some() && (cfg.cert.is_some() || cfg.key.is_some()) {
                return Err(Failure::usage(
                    "the client config gives both token_file and cert/key: keep one".into(),
                ));
            }
            cfg.token_file.clone()
        }
    };
    if let Some(token_file) = token_file {
        let token = String::from_utf8(read("token file", &token_file)?).map_err(|_| {
            Failure::usage(format!("token file {}: not text", token_file.display()))
        })?;
        let token = token.trim();
        if token.is_empty() || token.chars().any(|c| !c.is_ascii_alphanumeric()) {
            return Err(Failure::usage(format!(
                "token file {}: not a token (one line of letters and digits)",
                token_file.display()
            )));
        }
        let value =
            tonic::metadata::MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| {
                Failure::usage(format!(
                    "token file {}: not a token (one line of letters and digits)",
                    token_file.display()
                ))
            })?;
        let Some(ca) = ca else {
            return Err(Failure::usage(
                "a token is sent only over TLS: give the cluster CA too (--ca or the client config)"
                    .into(),
            ));
        };
        let ca = read("CA", &ca)?;
        return Ok((
            Some(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(ca))
                    .domain_name(ANY_NODE)
                    .timeout(Duration::from_secs(5)),
            ),
            Auth(Some(value)),
        ));
    }
    let (ca, cert, key) = match (ca, cert, key) {
        (None, None, None) => return Ok((None, Auth(None))),
        (Some(ca), Some(cert), Some(key)) => (ca, cert, key),
        (ca, cert, key) => {
            let missing: Vec<&str> = [
                ("--ca", ca.is_none()),
                ("--cert", cert.is_none()),
                ("--key", key.is_none()),
            ]
            .iter()
            .filter(|(_, m)| *m)
            .map(|(f, _)| *f)
            .collect();
            return Err(Failure::usage(format!(
                "TLS needs the CA, a client certificate and its key; missing {}",
                missing.join(", ")
            )));
        }
    };
    let ca = read("CA", &ca)?;
    let cert = read("certificate", &cert)?;
    let key = read("key", &key)?;
    Ok((
        Some(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca))
                .identity(Identity::from_pem(cert, key))
                .domain_name(ANY_NODE)
                .timeout(Duration::from_secs(5)),
        ),
        Auth(None),
    ))
}

/// The bearer token every request carries, if any.
#[derive(Clone, Debug)]
struct Auth(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            r.metadata_mut().insert("authorization", v.clone());
        }
        Ok(r)
    }
}

/// A client of one node.
type Client = WatchdogClient<tonic::service::interceptor::InterceptedService<Channel, Auth>>;

async fn run(cli: Cli) -> Result<(), Failure> {
    let cfg = client_config(&cli)?;
    let (tls, auth) = client_tls(&cli, &cfg)?;
    let given: Vec<String> = if !cli.endpoints.is_empty() {
        cli.endpoints.clone()
    } else if !cfg.endpoints.is_empty() {
        cfg.endpoints.clone()
    } else {
        DEFAULT_ENDPOINTS.split(',').map(str::to_owned).collect()
    };
    let mut endpoints = Vec::new();
    for e in given.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
        let uri = endpoint_uri(e, tls.is_some()).map_err(Failure::usage)?;
        endpoints.push((e.to_owned(), uri));
    }
    if endpoints.is_empty() {
        return Err(Failure::usage(
            "no endpoints given (--endpoints, FAXI_ENDPOINTS or the client config)".into(),
        ));
    }
    let conn = Conn {
        endpoints,
        timeout: cli.timeout,
        allow_stale: cli.allow_stale,
        tls,
        auth,
    };
    match cli.command {
        Command::Status(sel) => {
            let filtered = !sel.state.is_empty() || !sel.name.is_empty();
            let mut states: Vec<String> = sel.state.iter().map(|s| s.as_str().to_owned()).collect();
            // The table shows what needs attention unless asked otherwise;
            // JSON keeps every target (scripts rely on it) unless filtered.
            let not_up_only = cli.output == Output::Table && !sel.all && !filtered;
            if not_up_only {
                states = [
                    StateArg::Down,
                    StateArg::Suspect,
                    StateArg::Unknown,
                    StateArg::Stale,
                ]
                .iter()
                .map(|s| s.as_str().to_owned())
                .collect();
            }
            let req = pb::StatusRequest {
                allow_stale: false,
                states,
                names: sel.name.clone(),
                include_nodes: None,
            };
            let (_, s) = conn.status(req).await?;
            print(&match cli.output {
                Output::Table => output::status_table(
                    &s,
                    if not_up_only {
                        output::Shown::NotUp
                    } else if filtered {
                        output::Shown::Filtered
                    } else {
                        output::Shown::All
                    },
                ),
                Output::Json => output::status_json(&s),
            });
            Ok(())
        }
        Command::Watch => watch(&conn, cli.output).await,
        Command::Members { change } => match change {
            None | Some(MemberCommand::List) => {
                let (_, s) = conn.status(cluster_only()).await?;
                let members = s.cluster.map(|c| c.members).unwrap_or_default();
                print(&match cli.output {
                    Output::Table => output::members_table(&members),
                    Output::Json => output::members_json(&members),
                });
                Ok(())
            }
            Some(MemberCommand::Add { id, zone, addr }) => {
                let req = pb::AddMemberRequest { id, zone, addr };
                let (_, r) = conn
                    .write("`faxictl members`", |mut c, t| {
                        let mut req = tonic::Request::new(req.clone());
                        req.set_timeout(t);
                        async move { c.add_member(req).await }
                    })
                    .await?;
                print(&output::member_change(
                    cli.output == Output::Json,
                    id,
                    "added",
                    &r,
                ));
                Ok(())
            }
            Some(MemberCommand::Remove { id, force }) => {
                let (_, r) = conn
                    .write("`faxictl members`", |mut c, t| {
                        let mut req = tonic::Request::new(pb::RemoveMemberRequest { id, force });
                        req.set_timeout(t);
                        async move { c.remove_member(req).await }
                    })
                    .await?;
                print(&output::member_change(
                    cli.output == Output::Json,
                    id,
                    "removed",
                    &r,
                ));
                Ok(())
            }
        },
        Command::Audit { limit } => {
            let (_, r) = conn
                .each(Instant::now() + conn.timeout, |mut c, t| {
                    let mut req = tonic::Request::new(pb::AuditRequest { limit });
                    req.set_timeout(t);
                    async move {
                        match tokio::time::timeout(t, c.audit(req)).await {
                            Ok(Ok(r)) => Attempt::Answer(r.into_inner()),
                            Ok(Err(s)) => read_error(&s, t),
                            Err(_) => no_answer(t),
                        }
                    }
                })
                .await?;
            print(&match cli.output {
                Output::Table => output::audit_table(&r.records),
                Output::Json => output::audit_json(&r.records),
            });
            Ok(())
        }
        Command::Incidents { all } => {
            let allow_stale = conn.allow_stale;
            let (_, r) = conn
                .read(|mut c, t| {
                    let mut req = tonic::Request::new(pb::IncidentsRequest {
                        allow_stale,
                        include_finished: all,
                        finished_limit: 0,
                    });
                    req.set_timeout(t);
                    async move { c.incidents(req).await }
                })
                .await?;
            print(&match cli.output {
                Output::Table => output::incidents_table(&r, all),
                Output::Json => output::incidents_json(&r),
            });
            Ok(())
        }
        Command::Incident {
            command: IncidentCommand::Show { id },
        } => {
            let allow_stale = conn.allow_stale;
            let (_, r) = conn
                .read(|mut c, t| {
                    let mut req = tonic::Request::new(pb::IncidentRequest { id, allow_stale });
                    req.set_timeout(t);
                    async move { c.incident(req).await }
                })
                .await?;
            print(&match cli.output {
                Output::Table => output::incident_show(&r),
                Output::Json => output::incident_json(&r),
            });
            Ok(())
        }
        Command::Rto => {
            let allow_stale = conn.allow_stale;
            let (_, r) = conn
                .read(|mut c, t| {
                    let mut req = tonic::Request::new(pb::RtoRequest { allow_stale });
                    req.set_timeout(t);
                    async move { c.rto(req).await }
                })
                .await?;
            print(&match cli.output {
                Output::Table => output::rto_table(&r),
                Output::Json => output::rto_json(&r),
            });
            Ok(())
        }
        Command::Approve { id, skip } => {
            let (_, r) = conn
                .write("`faxictl incident show ID`", |mut c, t| {
                    let mut req = tonic::Request::new(pb::ApproveRequest { id, skip });
                    req.set_timeout(t);
                    async move { c.approve(req).await }
                })
                .await?;
            print(&output::approved(cli.output == Output::Json, id, skip, &r));
            Ok(())
        }
        Command::Maintenance { change } => {
            let req = match change {
                None | Some(MaintenanceCommand::Show) => {
                    let allow_stale = conn.allow_stale;
                    let (_, r) = conn
                        .read(|mut c, t| {
                            let mut req = tonic::Request::new(pb::IncidentsRequest {
                                allow_stale,
                                include_finished: false,
                                finished_limit: 0,
                            });
                            req.set_timeout(t);
                            async move { c.incidents(req).await }
                        })
                        .await?;
                    let m = r.maintenance.unwrap_or_default();
                    print(&output::maintenance(cli.output == Output::Json, &m));
                    return Ok(());
                }
                Some(MaintenanceCommand::On { reason, duration }) => pb::MaintenanceRequest {
                    on: true,
                    reason,
                    duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
                },
                Some(MaintenanceCommand::Off) => pb::MaintenanceRequest {
                    on: false,
                    reason: String::new(),
                    duration_ms: 0,
                },
            };
            let (_, r) = conn
                .write("`faxictl maintenance`", |mut c, t| {
                    let mut req = tonic::Request::new(req.clone());
                    req.set_timeout(t);
                    async move { c.maintenance(req).await }
                })
                .await?;
            let m = r.maintenance.unwrap_or_default();
            print(&output::maintenance(cli.output == Output::Json, &m));
            Ok(())
        }
        Command::Drill { target } => {
            let req = pb::DrillRequest { target };
            let (_, r) = conn
                .write("`faxictl incidents`", |mut c, t| {
                    let mut req = tonic::Request::new(req.clone());
                    req.set_timeout(t);
                    async move { c.drill(req).await }
                })
                .await?;
            print(&output::drilled(cli.output == Output::Json, &r));
            Ok(())
        }
        Command::TransferLeader { id } => {
            let (_, r) = conn
                .write("`faxictl members`", |mut c, t| {
                    let mut req = tonic::Request::new(pb::TransferLeaderRequest { to: id });
                    req.set_timeout(t);
                    async move { c.transfer_leader(req).await }
                })
                .await?;
            print(&match cli.output {
                Output::Table => format!("leader is now node {} (term {})\n", r.leader, r.term),
                Output::Json => format!(
                    "{}\n",
                    serde_json::json!({"leader": r.leader, "term": r.term})
                ),
            });
            Ok(())
        }
    }
}

/// A status request for the cluster alone (members, leader), no target.
fn cluster_only() -> pb::StatusRequest {
    pb::StatusRequest {
        allow_stale: false,
        states: Vec::new(),
        names: vec![NO_TARGET.to_owned()],
        include_nodes: Some(false),
    }
}

#[allow(clippy::print_stdout)]
fn print(s: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    // A closed pipe (`faxictl status | head`) is not an error worth a panic.
    let _ = out.write_all(s.as_bytes());
    let _ = out.flush();
}

/// A read answer that says whether the leader confirmed it.
trait Confirmed {
    fn freshness(&self) -> Option<&pb::Freshness>;
}

impl Confirmed for pb::IncidentsResponse {
    fn freshness(&self) -> Option<&pb::Freshness> {
        self.freshness.as_ref()
    }
}

impl Confirmed for pb::IncidentResponse {
    fn freshness(&self) -> Option<&pb::Freshness> {
        self.freshness.as_ref()
    }
}

impl Confirmed for pb::RtoResponse {
    fn freshness(&self) -> Option<&pb::Freshness> {
        self.freshness.as_ref()
    }
}

/// What one endpoint did with a call.
enum Attempt<T> {
    /// A usable answer.
    Answer(T),
    /// Move on; `answered` when the node did answer (unavailable, stale).
    Skip { why: String, answered: bool },
    /// Final: an error answer.
    Fail(Failure),
}

/// Endpoints and the time a command may take.
struct Conn {
    /// (as given, URI).
    endpoints: Vec<(String, String)>,
    timeout: Duration,
    allow_stale: bool,
    /// TLS for https:// endpoints.
    tls: Option<ClientTlsConfig>,
    /// The token requests carry, if any.
    auth: Auth,
}

impl Conn {
    async fn connect(&self, uri: &str, within: Duration) -> Result<Client, String> {
        let mut ep = tonic::transport::Endpoint::from_shared(uri.to_owned())
            .map_err(|e| format!("not a valid endpoint: {e}"))?
            .connect_timeout(within);
        if let (Some(tls), true) = (&self.tls, uri.starts_with("https://")) {
            ep = ep
                .tls_config(tls.clone())
                .map_err(|e| format!("TLS: {}", error_chain(&e)))?;
        }
        let channel = tokio::time::timeout(within, ep.connect())
            .await
            .map_err(|_| format!("no connection within {}", ms(within)))?
            .map_err(|e| error_chain(&e))?;
        Ok(WatchdogClient::with_interceptor(channel, self.auth.clone())
            .max_decoding_message_size(256 * 1024 * 1024))
    }

    /// Runs `f` on each endpoint in turn until one gives a usable answer.
    /// Endpoint `i` gets its share of the time left before `end` (what is
    /// left divided among the endpoints not tried yet) to connect and for
    /// `f`, which is handed the share left once connected and must keep to
    /// it (or say why not).
    async fn each<T, F, Fut>(&self, end: Instant, f: F) -> Result<(String, T), Failure>
    where
        F: Fn(Client, Duration) -> Fut,
        Fut: std::future::Future<Output = Attempt<T>>,
    {
        let mut tried = Vec::new();
        let mut answered = false;
        let mut stale = false;
        let n = self.endpoints.len();
        for (i, (ep, uri)) in self.endpoints.iter().enumerate() {
            let left = end.saturating_duration_since(Instant::now());
            let share = left / u32::try_from(n - i).unwrap_or(u32::MAX).max(1);
            if share.is_zero() {
                tried.push(format!("{ep}: not tried, no time left"));
                continue;
            }
            let started = Instant::now();
            let client = match self.connect(uri, share).await {
                Ok(c) => c,
                Err(e) => {
                    tried.push(format!("{ep}: {e}"));
                    continue;
                }
            };
            match f(client, share.saturating_sub(started.elapsed())).await {
                Attempt::Answer(t) => return Ok((ep.clone(), t)),
                Attempt::Skip { why, answered: a } => {
                    answered |= a;
                    stale |= why.starts_with("stale");
                    tried.push(format!("{ep}: {why}"));
                }
                Attempt::Fail(mut f) => {
                    f.message = format!("{ep}: {}", f.message);
                    return Err(f);
                }
            }
        }
        let mut message = format!("no endpoint could answer:\n  {}", tried.join("\n  "));
        if stale {
            message.push_str(
                "\n(a stale answer is a node's own view that it could not confirm with the \
                 leader; --allow-stale shows it, with its age)",
            );
        }
        Err(Failure {
            code: if answered {
                EXIT_ERROR
            } else {
                EXIT_UNREACHABLE
            },
            message,
        })
    }

    /// A status from the first endpoint that answers fresh (or answers at
    /// all, with `--allow-stale`).
    async fn status(
        &self,
        req: pb::StatusRequest,
    ) -> Result<(String, pb::StatusResponse), Failure> {
        let allow_stale = self.allow_stale;
        self.each(Instant::now() + self.timeout, |mut c, t| {
            let mut r = tonic::Request::new(req.clone());
            // The node confirms within half of this, so that a stale answer
            // still arrives in time.
            r.set_timeout(t);
            async move {
                match tokio::time::timeout(t, c.status(r)).await {
                    Ok(Ok(r)) => fresh_or_skip(r.into_inner(), allow_stale),
                    Ok(Err(s)) => read_error(&s, t),
                    Err(_) => no_answer(t),
                }
            }
        })
        .await
    }

    /// A read other than status: from the first endpoint that answers
    /// fresh (or answers at all, with `--allow-stale`). `f` makes the
    /// call, with the request's own deadline set to the time it is given.
    async fn read<T, F, Fut>(&self, f: F) -> Result<(String, T), Failure>
    where
        T: Confirmed,
        F: Fn(Client, Duration) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let allow_stale = self.allow_stale;
        self.each(Instant::now() + self.timeout, |c, t| {
            let call = f(c, t);
            async move {
                match tokio::time::timeout(t, call).await {
                    Ok(Ok(r)) => {
                        let r = r.into_inner();
                        match r.freshness() {
                            Some(fr) if fr.stale && !allow_stale => Attempt::Skip {
                                why: format!("stale: {}", output::stale_line(fr)),
                                answered: true,
                            },
                            _ => Attempt::Answer(r),
                        }
                    }
                    Ok(Err(s)) => read_error(&s, t),
                    Err(_) => no_answer(t),
                }
            }
        })
        .await
    }

    /// A write: the endpoint is first checked with a small status within its
    /// share of the time (so a silent or non-gRPC endpoint is skipped), then
    /// the write gets all the time left; once sent, its answer is final
    /// (another node might apply it a second time), unless the node says it
    /// is unavailable (no leader: nothing was proposed).
    async fn write<T, F, Fut>(&self, check: &'static str, f: F) -> Result<(String, T), Failure>
    where
        F: Fn(Client, Duration) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let end = Instant::now() + self.timeout;
        self.each(end, |mut c, t| {
            let mut probe = tonic::Request::new(pb::StatusRequest {
                allow_stale: true,
                ..cluster_only()
            });
            probe.set_timeout(t);
            let left = end.saturating_duration_since(Instant::now());
            let write = f(c.clone(), left);
            async move {
                match tokio::time::timeout(t, c.status(probe)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(s)) => return read_error(&s, t),
                    Err(_) => return no_answer(t),
                }
                let left = end.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, write).await {
                    Ok(Ok(r)) => Attempt::Answer(r.into_inner()),
                    Ok(Err(s)) if s.code() == tonic::Code::Unavailable && is_answer(&s) => {
                        Attempt::Skip {
                            why: describe(&s),
                            answered: true,
                        }
                    }
                    // The request left, and the connection failed before
                    // an answer came (the node died, or the network): the
                    // node may have proposed it. Never sent again.
                    Ok(Err(s)) if !is_answer(&s) || s.code() == tonic::Code::Cancelled => {
                        Attempt::Fail(Failure {
                            code: EXIT_ERROR,
                            message: format!(
                                "outcome unknown: the connection failed after the request was \
                                 sent ({}); the change may or may not be applied: check with \
                                 {check} and `faxictl audit` before trying again",
                                status_chain(&s)
                            ),
                        })
                    }
                    Ok(Err(s)) => Attempt::Fail(Failure {
                        code: EXIT_ERROR,
                        message: describe(&s),
                    }),
                    Err(_) => Attempt::Fail(Failure {
                        code: EXIT_ERROR,
                        message: format!(
                            "outcome unknown: no answer within --timeout {}; the change may still be applied: check with {check} and `faxictl audit`",
                            humantime::format_duration(Duration::from_millis(
                                u64::try_from(left.as_millis()).unwrap_or(u64::MAX)
                            ))
                        ),
                    }),
                }
            }
        })
        .await
    }
}

fn no_answer<T>(within: Duration) -> Attempt<T> {
    Attempt::Skip {
        why: format!("no answer within {}", ms(within)),
        answered: false,
    }
}

/// Whether the call's own deadline (this side's) expired.
fn timed_out(s: &tonic::Status) -> bool {
    use std::error::Error as _;
    let mut src = s.source();
    while let Some(e) = src {
        if e.is::<tonic::TimeoutExpired>() {
            return true;
        }
        src = e.source();
    }
    false
}

/// Whether a status came from the node itself (a gRPC answer), rather than
/// from this side of the connection (a transport or protocol failure, as
/// when the endpoint is not a gRPC server).
fn is_answer(s: &tonic::Status) -> bool {
    use std::error::Error as _;
    s.source().is_none()
}

/// What a read's error means: an endpoint that is not a gRPC server, that
/// failed in transit, timed out or is unavailable is skipped; any other
/// answer from a node is final.
fn read_error<T>(s: &tonic::Status, within: Duration) -> Attempt<T> {
    if timed_out(s) {
        return no_answer(within);
    }
    if !is_answer(s) {
        return Attempt::Skip {
            why: format!("no gRPC answer ({})", status_chain(s)),
            answered: false,
        };
    }
    match s.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            Attempt::Skip {
                why: describe(s),
                answered: true,
            }
        }
        _ => Attempt::Fail(Failure {
            code: EXIT_ERROR,
            message: describe(s),
        }),
    }
}

fn fresh_or_skip(s: pb::StatusResponse, allow_stale: bool) -> Attempt<pb::StatusResponse> {
    if !s.stale || allow_stale {
        return Attempt::Answer(s);
    }
    Attempt::Skip {
        why: format!("stale: {}", output::staleness(&s)),
        answered: true,
    }
}

fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

fn status_chain(s: &tonic::Status) -> String {
    use std::error::Error as _;
    let mut msg = describe(s);
    let mut src = s.source();
    while let Some(e) = src {
        let t = e.to_string();
        if !msg.contains(&t) {
            msg = format!("{msg}: {t}");
        }
        src = e.source();
    }
    msg
}

fn error_chain(e: &tonic::transport::Error) -> String {
    use std::error::Error as _;
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg = format!("{msg}: {s}");
        src = s.source();
    }
    tls_hint(msg)
}

/// Says what a TLS failure means for the operator.
fn tls_hint(msg: String) -> String {
    if msg.contains("InvalidContentType") {
        format!(
            "no gRPC answer over TLS: it answered in plaintext (a node with insecure = true takes \
             http://host:port; or it is not a node) ({msg})"
        )
    } else if msg.contains("UnknownIssuer") || msg.contains("BadSignature") {
        format!("its certificate is not from this cluster's CA ({msg})")
    } else if msg.contains("NotValidForName") {
        format!("its certificate is not a faxi-watchdog node's ({msg})")
    } else {
        msg
    }
}

async fn watch(conn: &Conn, out: Output) -> Result<(), Failure> {
    let mut last: Option<pb::StatusResponse> = None;
    let allow_stale = conn.allow_stale;
    loop {
        // The first message must be fresh (unless --allow-stale), as a
        // status must.
        let (ep, (mut stream, first)) = conn
            .each(Instant::now() + conn.timeout, |mut c, t| {
                let mut req = tonic::Request::new(pb::StatusRequest::default());
                // The node confirms the first message within half of this;
                // the stream itself runs until interrupted.
                req.set_timeout(t);
                async move {
                    let first = async {
                        let mut stream = c.watch(req).await?.into_inner();
                        let first = stream.message().await?;
                        Ok::<_, tonic::Status>((stream, first))
                    };
                    match tokio::time::timeout(t, first).await {
                        Ok(Ok((stream, Some(first)))) => match fresh_or_skip(first, allow_stale) {
                            Attempt::Answer(first) => Attempt::Answer((stream, first)),
                            Attempt::Skip { why, answered } => Attempt::Skip { why, answered },
                            Attempt::Fail(f) => Attempt::Fail(f),
                        },
                        Ok(Ok((_, None))) => Attempt::Skip {
                            why: "ended the watch at once".into(),
                            answered: true,
                        },
                        Ok(Err(s)) => read_error(&s, t),
                        Err(_) => no_answer(t),
                    }
                }
            })
            .await?;
        eprintln!("faxictl: watching {ep} (Ctrl-C to stop)");
        let mut next = Some(first);
        loop {
            let s = match next.take() {
                Some(s) => s,
                None => match stream.message().await {
                    Ok(Some(s)) => s,
                    Ok(None) => {
                        eprintln!("faxictl: {ep} ended the watch; reconnecting");
                        break;
                    }
                    Err(s) => {
                        eprintln!("faxictl: {ep}: {}; reconnecting", describe(&s));
                        break;
                    }
                },
            };
            let turned_stale = s.stale && last.as_ref().is_none_or(|l| !l.stale);
            match out {
                Output::Json => print(&output::status_json_line(&s)),
                Output::Table => print(&output::changes(last.as_ref(), &s)),
            }
            last = Some(s);
            if turned_stale && !allow_stale {
                eprintln!(
                    "faxictl: {ep} can no longer confirm its view; looking for a node that can"
                );
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
