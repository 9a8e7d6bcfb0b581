//! `bayspace`: the Bayspace node, its operator tools and its clients.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;
mod proto;

#[derive(Debug, Parser)]
#[command(
    name = "bayspace",
    version,
    about = "A peer node of the Greater Bay Area research data space"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a node directory: config, node key, administrator token.
    Init(cli::init::InitArgs),
    /// Data space operator: the trust anchor, credentials, revocations.
    Authority(cli::authority::AuthorityArgs),
    /// Inspect and verify credentials.
    Credential(cli::credential::CredentialArgs),
    /// Decide the cross-border route for one transfer scenario (JSON).
    Assess(cli::assess::AssessArgs),
    /// Check the data space's IPv6 address plan; render firewall rules.
    #[command(subcommand)]
    Ipv6(cli::ipv6::Ipv6Command),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Init(args) => cli::init::run(args),
        Command::Authority(args) => cli::authority::run(args),
        Command::Credential(args) => cli::credential::run(args),
        Command::Assess(args) => cli::assess::run(&args),
        Command::Ipv6(cmd) => cli::ipv6::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("bayspace: {err:#}");
            ExitCode::FAILURE
        }
    }
}
