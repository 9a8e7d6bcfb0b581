//! `bayspace data list|open|export|shred`: data this node keeps sealed for
//! its researchers (fetched with `transfer fetch`), downloaded to the
//! researcher's machine with `open`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::json;

use crate::cli::transfer::{Progress, download, print_downloaded};
use crate::client::{self, ClientArgs};
use crate::proto::data_service_client::DataServiceClient;
use crate::proto::{DataListRequest, DataOpenRequest, DataShredRequest, SealedData};

#[derive(Debug, clap::Args)]
pub struct DataArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: DataCommand,
}

#[derive(Debug, clap::Subcommand)]
enum DataCommand {
    /// The sealed copies: your own, or every one for an administrator.
    List {
        /// Print a JSON array (`[]` when none).
        #[arg(long)]
        json: bool,
    },
    /// Download a sealed copy, decrypted, into PATH on this machine
    /// (audited on the node). Resumes from PATH.part when run again; PATH
    /// appears only once the size and BLAKE3 verified.
    Open {
        agreement_id: String,
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Administrator: decrypt a sealed copy into a file on the node's host,
    /// inside its `export-dir` (NAME relative to it, or an absolute path in
    /// it); audited. Any other path is refused.
    Export {
        agreement_id: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Crypto-shred a sealed copy now (administrator): its key is destroyed
    /// and it can never be opened again.
    Shred {
        agreement_id: String,
        /// Why, for the audit log.
        #[arg(long, default_value = "")]
        reason: String,
        #[arg(long)]
        json: bool,
    },
}

fn to_json(d: &SealedData) -> serde_json::Value {
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    json!({
        "agreement": d.agreement_id,
        "dataset": d.dataset_id,
        "dataset_version": d.dataset_version,
        "researcher": d.researcher,
        "state": d.state,
        "size": d.size,
        "blake3": opt(&d.blake3),
        "retention_deadline": opt(&d.retention_deadline),
        "shredded_at": opt(&d.shredded_at),
        "shred_reason": opt(&d.shred_reason),
        "path": d.path,
    })
}

fn print(d: &SealedData) {
    let until = if d.retention_deadline.is_empty() {
        "no retention end".to_owned()
    } else {
        format!("to be shredded at {}", d.retention_deadline)
    };
    match d.state.as_str() {
        "shredded" => println!(
            "{}  shredded at {} ({})",
            d.agreement_id, d.shredded_at, d.shred_reason
        ),
        state => println!(
            "{}  {state}, {} bytes of {} v{} for {}; {until}",
            d.agreement_id, d.size, d.dataset_id, d.dataset_version, d.researcher
        ),
    }
}

pub fn run(args: DataArgs) -> anyhow::Result<ExitCode> {
    client::block_on(async {
        let mut c = DataServiceClient::new(client::connect(&args.client).await?);
        match args.command {
            DataCommand::List { json } => {
                let items = c
                    .list(DataListRequest {})
                    .await
                    .map_err(client::refused)?
                    .into_inner()
                    .items;
                if json {
                    let all: Vec<_> = items.iter().map(to_json).collect();
                    println!("{}", serde_json::Value::Array(all));
                } else if items.is_empty() {
                    println!("no data is kept sealed on this node");
                } else {
                    items.iter().for_each(print);
                }
            }
            DataCommand::Open {
                agreement_id,
                out,
                json,
            } => {
                let out = std::path::absolute(&out)
                    .with_context(|| format!("cannot resolve --out {}", out.display()))?;
                let mut progress = Progress::new(json);
                let d = download(&args.client, &agreement_id, &out, &mut progress).await?;
                print_downloaded(&d, &agreement_id, json);
            }
            DataCommand::Export {
                agreement_id,
                name,
                json,
            } => {
                let r = c
                    .open(DataOpenRequest {
                        agreement_id,
                        out: name,
                    })
                    .await
                    .map_err(client::refused)?
                    .into_inner();
                if json {
                    println!(
                        "{}",
                        json!({ "path": r.path, "bytes": r.bytes, "blake3": r.blake3 })
                    );
                } else {
                    println!(
                        "exported {} bytes into {} on the node's host (blake3 {})",
                        r.bytes, r.path, r.blake3
                    );
                }
            }
            DataCommand::Shred {
                agreement_id,
                reason,
                json,
            } => {
                let d = c
                    .shred(DataShredRequest {
                        agreement_id,
                        reason,
                    })
                    .await
                    .map_err(client::refused)?
                    .into_inner();
                if json {
                    println!("{}", to_json(&d));
                } else {
                    print(&d);
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
