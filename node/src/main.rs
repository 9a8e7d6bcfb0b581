//! `bayspace`: the Bayspace node, its operator tools and its clients.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;
mod client;
mod console;
mod daemon;
mod grpc;
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
    /// Run the node: p2p swarm and gRPC API, until SIGINT or SIGTERM.
    Run(cli::run::RunArgs),
    /// Ask a running node how it is.
    Status(cli::status::StatusArgs),
    /// Manage the researchers who may use a node's API.
    Researcher(cli::researcher::ResearcherArgs),
    /// Hand a signed revocation list to a node.
    Revocations(cli::revocations::RevocationsArgs),
    /// Publish or withdraw this node's datasets (administrator).
    #[command(subcommand)]
    Dataset(cli::dataset::DatasetCommand),
    /// Export a node's audit log; verify an export offline.
    #[command(subcommand)]
    Audit(cli::audit::AuditCommand),
    /// Search or export the federated catalog.
    #[command(subcommand)]
    Catalog(cli::catalog::CatalogCommand),
    /// Three institutions on [::1]: a request, an approval, an encrypted
    /// release, a refusal. Cleans up after itself.
    Demo(cli::demo::DemoArgs),
    /// Fetch the data of an agreement (encrypted, verified, resumable).
    Transfer(cli::transfer::TransferArgs),
    /// Data kept sealed on this node: list, open, shred.
    Data(cli::data::DataArgs),
    /// Request datasets from other members; follow negotiations.
    Contract(cli::contract::ContractArgs),
    /// Decide requests for this node's datasets (administrator).
    Offers(cli::offers::OffersArgs),
    /// The records on file per dataset that the assessment reads (administrator).
    Records(cli::records::RecordsArgs),
    /// Show, list or revoke concluded agreements.
    Agreement(cli::agreement::AgreementArgs),
    /// Export a regulator filing package for an agreement (administrator).
    #[command(subcommand)]
    Filing(cli::filing::FilingCommand),
    /// Write a signed backup of a node directory, while the node runs.
    Backup(cli::backup::BackupArgs),
    /// Rebuild a node directory from a backup.
    Restore(cli::backup::RestoreArgs),
}

fn main() -> ExitCode {
    // rustls is built with two crypto providers (libp2p's QUIC brings
    // aws-lc-rs), so it cannot pick one itself; the API uses ring. This is
    // the first thing the process does, so none can be installed yet and
    // the error case cannot happen.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Init(args) => cli::init::run(args),
        Command::Authority(args) => cli::authority::run(args),
        Command::Credential(args) => cli::credential::run(args),
        Command::Assess(args) => cli::assess::run(&args),
        Command::Ipv6(cmd) => cli::ipv6::run(cmd),
        Command::Run(args) => cli::run::run(args),
        Command::Status(args) => cli::status::run(args),
        Command::Researcher(args) => cli::researcher::run(args),
        Command::Revocations(args) => cli::revocations::run(args),
        Command::Dataset(cmd) => cli::dataset::run(cmd),
        Command::Catalog(cmd) => cli::catalog::run(cmd),
        Command::Audit(cmd) => cli::audit::run(cmd),
        Command::Transfer(args) => cli::transfer::run(args),
        Command::Data(args) => cli::data::run(args),
        Command::Demo(args) => cli::demo::run(args),
        Command::Contract(args) => cli::contract::run(args),
        Command::Offers(args) => cli::offers::run(args),
        Command::Records(args) => cli::records::run(args),
        Command::Agreement(args) => cli::agreement::run(args),
        Command::Filing(cmd) => cli::filing::run(cmd),
        Command::Backup(args) => cli::backup::backup(args),
        Command::Restore(args) => cli::backup::restore(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("bayspace: {err:#}");
            ExitCode::FAILURE
        }
    }
}
