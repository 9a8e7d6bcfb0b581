//! `bayspace revocations publish FILE`: hand the operator's signed list to
//! the node, which puts it in force and spreads it to the members.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::client::{self, ClientArgs};
use crate::proto::PublishRevocationsRequest;
use crate::proto::revocation_service_client::RevocationServiceClient;

#[derive(Debug, clap::Args)]
pub struct RevocationsArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: RevocationsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum RevocationsCommand {
    /// Publish a revocation list written by `bayspace authority revoke`.
    Publish { file: PathBuf },
}

pub fn run(args: RevocationsArgs) -> anyhow::Result<ExitCode> {
    let RevocationsCommand::Publish { file } = &args.command;
    let list = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let r = client::block_on(async {
        let mut c = RevocationServiceClient::new(client::connect(&args.client).await?);
        Ok(c.publish(PublishRevocationsRequest { list })
            .await
            .map_err(client::refused)?
            .into_inner())
    })?;
    let serials: Vec<String> = r.revoked_serials.iter().map(u64::to_string).collect();
    println!(
        "revocation list {} in force; revoked serials: {}",
        r.sequence,
        if serials.is_empty() {
            "none".into()
        } else {
            serials.join(", ")
        }
    );
    for peer in &r.disconnected {
        println!("disconnected {peer}");
    }
    Ok(ExitCode::SUCCESS)
}
