//! `faxictl`: the command line for a faxi-watchdog mesh.
//!
//! Exit codes: 0 done; 1 the mesh answered with an error (a bad request, no
//! leader, a change that did not commit); 2 bad usage; 3 no endpoint
//! answered.

mod output;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use faxi_proto::v1 as pb;
use faxi_proto::v1::watchdog_client::WatchdogClient;
use tonic::transport::Channel;

/// faxictl's default endpoints: the nodes of `faxi-watchdog dev`.
const DEFAULT_ENDPOINTS: &str = "127.0.0.1:7401,127.0.0.1:7402,127.0.0.1:7403";

const EXIT_ERROR: u8 = 1;
const EXIT_UNREACHABLE: u8 = 3;

/// The command line for a faxi-watchdog mesh.
///
/// Exit codes: 0 done, 1 the mesh answered with an error, 2 bad usage,
/// 3 no endpoint answered.
#[derive(Debug, Parser)]
#[command(name = "faxictl", version, about, long_about = None)]
struct Cli {
    /// Nodes to ask (host:port, comma-separated); the first that answers is used.
    #[arg(
        long,
        global = true,
        env = "FAXI_ENDPOINTS",
        default_value = DEFAULT_ENDPOINTS,
        value_delimiter = ','
    )]
    endpoints: Vec<String>,
    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value = "table")]
    output: Output,
    /// Deadline of each request.
    #[arg(long, global = true, default_value = "3s", value_parser = humantime::parse_duration)]
    timeout: Duration,
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

#[derive(Debug, Subcommand)]
enum Command {
    /// The cluster (leader, term, members) and every target's agreed state.
    Status,
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
    },
}

/// A failure, and the exit code it gives.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn mesh(endpoint: &str, s: &tonic::Status) -> Self {
        Self {
            code: EXIT_ERROR,
            message: format!("{endpoint}: {}", describe(s)),
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

async fn run(cli: Cli) -> Result<(), Failure> {
    let endpoints: Vec<String> = cli
        .endpoints
        .iter()
        .map(|e| e.trim().to_owned())
        .filter(|e| !e.is_empty())
        .collect();
    if endpoints.is_empty() {
        return Err(Failure {
            code: 2,
            message: "no endpoints given (--endpoints or FAXI_ENDPOINTS)".into(),
        });
    }
    let conn = Conn {
        endpoints,
        timeout: cli.timeout,
    };
    match cli.command {
        Command::Status => {
            let (_, s) = conn
                .call(|mut c| async move { c.status(pb::StatusRequest::default()).await })
                .await?;
            print(&match cli.output {
                Output::Table => output::status_table(&s),
                Output::Json => output::status_json(&s),
            });
            Ok(())
        }
        Command::Watch => watch(&conn, cli.output).await,
        Command::Members { change } => match change {
            None | Some(MemberCommand::List) => {
                let (_, s) = conn
                    .call(|mut c| async move { c.status(pb::StatusRequest::default()).await })
                    .await?;
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
                    .call(|mut c| {
                        let req = req.clone();
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
            Some(MemberCommand::Remove { id }) => {
                let (_, r) =
                    conn.call(|mut c| async move {
                        c.remove_member(pb::RemoveMemberRequest { id }).await
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
        Command::TransferLeader { id } => {
            let (_, r) = conn
                .call(|mut c| async move {
                    c.transfer_leader(pb::TransferLeaderRequest { to: id })
                        .await
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

#[allow(clippy::print_stdout)]
fn print(s: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    // A closed pipe (`faxictl status | head`) is not an error worth a panic.
    let _ = out.write_all(s.as_bytes());
    let _ = out.flush();
}

/// Endpoints and the deadline of each call.
struct Conn {
    endpoints: Vec<String>,
    timeout: Duration,
}

impl Conn {
    async fn connect(&self, endpoint: &str) -> Result<WatchdogClient<Channel>, String> {
        let uri = if endpoint.contains("://") {
            endpoint.to_owned()
        } else {
            format!("http://{endpoint}")
        };
        let ep = tonic::transport::Endpoint::from_shared(uri)
            .map_err(|e| format!("not a valid endpoint: {e}"))?
            .connect_timeout(self.timeout)
            .timeout(self.timeout);
        let channel = tokio::time::timeout(self.timeout, ep.connect())
            .await
            .map_err(|_| format!("no answer within {:?}", self.timeout))?
            .map_err(|e| connect_error(&e))?;
        Ok(WatchdogClient::new(channel).max_decoding_message_size(256 * 1024 * 1024))
    }

    /// Calls `f` on each endpoint in turn until one answers. An endpoint
    /// that cannot be reached, or that is unavailable (no leader where one
    /// is needed), is skipped; any other answer, error or not, is final.
    async fn call<T, F, Fut>(&self, f: F) -> Result<(String, T), Failure>
    where
        F: Fn(WatchdogClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut tried = Vec::new();
        // An endpoint we connected to that said "unavailable" (no leader)
        // answered: that is exit 1, not "nothing answered".
        let mut answered = false;
        for ep in &self.endpoints {
            let client = match self.connect(ep).await {
                Ok(c) => c,
                Err(e) => {
                    tried.push(format!("{ep}: {e}"));
                    continue;
                }
            };
            match f(client).await {
                Ok(r) => return Ok((ep.clone(), r.into_inner())),
                Err(s) if s.code() == tonic::Code::Unavailable => {
                    answered = true;
                    tried.push(format!("{ep}: {}", describe(&s)));
                }
                Err(s) => return Err(Failure::mesh(ep, &s)),
            }
        }
        Err(Failure {
            code: if answered {
                EXIT_ERROR
            } else {
                EXIT_UNREACHABLE
            },
            message: format!("no endpoint could answer:\n  {}", tried.join("\n  ")),
        })
    }
}

fn connect_error(e: &tonic::transport::Error) -> String {
    use std::error::Error as _;
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg = format!("{msg}: {s}");
        src = s.source();
    }
    msg
}

async fn watch(conn: &Conn, out: Output) -> Result<(), Failure> {
    let mut last: Option<pb::StatusResponse> = None;
    loop {
        let (ep, mut stream) = conn
            .call(|mut c| async move {
                let mut req = tonic::Request::new(pb::StatusRequest::default());
                // A watch has no deadline: it runs until interrupted.
                req.set_timeout(Duration::from_secs(365 * 24 * 3600));
                c.watch(req).await
            })
            .await?;
        eprintln!("faxictl: watching {ep} (Ctrl-C to stop)");
        loop {
            match stream.message().await {
                Ok(Some(s)) => {
                    match out {
                        Output::Json => print(&output::status_json_line(&s)),
                        Output::Table => print(&output::changes(last.as_ref(), &s)),
                    }
                    last = Some(s);
                }
                Ok(None) => {
                    eprintln!("faxictl: {ep} ended the watch; reconnecting");
                    break;
                }
                Err(s) => {
                    eprintln!("faxictl: {ep}: {}; reconnecting", describe(&s));
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
