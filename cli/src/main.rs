//! `faxictl`: the command line for a faxi-watchdog mesh.
//!
//! Its commands (`status`, `watch`, `members`, `incidents`, ...) talk to a
//! node's client API, which this build's nodes do not serve yet; until then
//! it only answers `--help` and `--version`, and a node's state is read from
//! its `/metrics` endpoint.

use clap::Parser;

/// The command line for a faxi-watchdog mesh. No commands in this build yet:
/// read a node's verdicts from its /metrics endpoint (faxi_local_verdict).
#[derive(Debug, Parser)]
#[command(name = "faxictl", version, about)]
struct Cli {}

fn main() {
    let _ = Cli::parse();
    eprintln!("faxictl: no commands in this build yet; see faxictl --help");
    std::process::exit(2);
}
