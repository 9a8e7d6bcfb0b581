//! `bayspace dataset publish|withdraw`: the data steward's side of the
//! catalog.

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::json;

use crate::client::{self, ClientArgs};
use crate::proto::dataset_service_client::DatasetServiceClient;
use crate::proto::{PublishRequest, WithdrawRequest};

#[derive(Debug, clap::Subcommand)]
pub enum DatasetCommand {
    /// Hash, describe, sign and announce a dataset file on the node's host.
    Publish(Box<PublishArgs>),
    /// Withdraw a published dataset: a new version that says so.
    Withdraw {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// The data file, as the node sees it (resolved to an absolute path).
    path: PathBuf,
    #[arg(long)]
    title: String,
    #[arg(long, default_value = "")]
    description: String,
    #[arg(long = "keyword")]
    keywords: Vec<String>,
    /// general, important or core (GB/T 43697-2024).
    #[arg(long)]
    level: String,
    /// Individuals with non-sensitive personal information in the data.
    #[arg(long)]
    personal: u64,
    /// Individuals with sensitive personal information in the data.
    #[arg(long)]
    sensitive: u64,
    /// Sector tags: genomic, health, vehicle, remote-sensing, or any other.
    #[arg(long = "category")]
    categories: Vec<String>,
    /// Purposes the offer allows, e.g. academic-research.
    #[arg(long = "purpose", required = true)]
    purposes: Vec<String>,
    /// Regions recipients may be in; `gba` for the whole Bay Area (the default).
    #[arg(long = "recipient-region")]
    recipient_regions: Vec<String>,
    /// Whether an administrator approves each request, or the node does when
    /// nothing blocks it.
    #[arg(long, default_value = "manual", value_parser = ["manual", "auto"])]
    approval: String,
    /// How long the offer stands; open-ended when left out.
    #[arg(long)]
    valid_days: Option<u32>,
    /// The moment the offer ends, RFC 3339 (e.g. 2026-12-31T18:00:00+08:00),
    /// instead of --valid-days.
    #[arg(long, conflicts_with = "valid_days")]
    valid_until: Option<String>,
    /// At most N releases under one agreement.
    #[arg(long)]
    use_limit: Option<u64>,
    /// Retention end, YYYY-MM-DD: recipients delete the data by the end of
    /// that day (GBA time).
    #[arg(long)]
    delete_by: Option<String>,
    /// The data was collected outside the Mainland (COMPLIANCE.md M5).
    #[arg(long)]
    collected_abroad: bool,
    /// Publish as the next version of this dataset id.
    #[arg(long)]
    replaces: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
    /// Print `{"id": …}`.
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: DatasetCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DatasetCommand::Publish(a) => publish(*a),
        DatasetCommand::Withdraw { id, client, json } => {
            let r = client::block_on(async {
                let mut c = DatasetServiceClient::new(client::connect(&client).await?);
                Ok(c.withdraw(WithdrawRequest { id })
                    .await
                    .map_err(client::refused)?
                    .into_inner())
            })?;
            if json {
                println!("{}", json!({ "id": r.id, "version": r.version }));
            } else {
                println!("withdrawn: {} (version {})", r.id, r.version);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn publish(a: PublishArgs) -> anyhow::Result<ExitCode> {
    // The node reads the file itself; an absolute path means the same file
    // to both when the CLI runs on the node's host.
    let path = std::path::absolute(&a.path).unwrap_or(a.path);
    let req = PublishRequest {
        path: path.to_string_lossy().into_owned(),
        title: a.title,
        description: a.description,
        keywords: a.keywords,
        level: a.level,
        personal_individuals: a.personal,
        sensitive_individuals: a.sensitive,
        categories: a.categories,
        purposes: a.purposes,
        recipient_regions: a.recipient_regions,
        approval: a.approval,
        valid_days: a.valid_days.unwrap_or(0),
        collected_abroad: a.collected_abroad,
        replaces: a.replaces.unwrap_or_default(),
        use_limit: a.use_limit,
        valid_until: a.valid_until.unwrap_or_default(),
        delete_by: a.delete_by.unwrap_or_default(),
    };
    let r = client::block_on(async {
        let mut c = DatasetServiceClient::new(client::connect(&a.client).await?);
        Ok(c.publish(req).await.map_err(client::refused)?.into_inner())
    })?;
    if a.json {
        println!(
            "{}",
            json!({ "id": r.id, "version": r.version, "content_hash": r.content_hash })
        );
    } else {
        println!(
            "published: {} (version {}, blake3 {})",
            r.id, r.version, r.content_hash
        );
    }
    Ok(ExitCode::SUCCESS)
}
