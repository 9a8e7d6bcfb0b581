//! `bayspace researcher …`: who may use the node's API.

use std::process::ExitCode;

use serde_json::json;

use crate::client::{self, ClientArgs};
use crate::proto::researcher_service_client::ResearcherServiceClient;
use crate::proto::{AddResearcherRequest, ListResearchersRequest, RemoveResearcherRequest};

#[derive(Debug, clap::Args)]
pub struct ResearcherArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: ResearcherCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ResearcherCommand {
    /// Add a researcher; prints their token, which is shown only once.
    Add {
        name: String,
        #[arg(long)]
        orcid: Option<String>,
    },
    /// List the researchers.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a researcher by id; their token stops working at once.
    Remove { id: String },
}

pub fn run(args: ResearcherArgs) -> anyhow::Result<ExitCode> {
    client::block_on(async {
        let mut c = ResearcherServiceClient::new(client::connect(&args.client).await?);
        match args.command {
            ResearcherCommand::Add { name, orcid } => {
                let r = c
                    .add(AddResearcherRequest {
                        name,
                        orcid: orcid.unwrap_or_default(),
                    })
                    .await
                    .map_err(client::refused)?
                    .into_inner();
                println!("id: {}", r.id);
                println!("token: {}", r.token);
                eprintln!("the token is shown only once; the node keeps only its hash");
            }
            ResearcherCommand::List { json } => {
                let list = c
                    .list(ListResearchersRequest {})
                    .await
                    .map_err(client::refused)?
                    .into_inner()
                    .researchers;
                if json {
                    let items: Vec<_> = list
                        .iter()
                        .map(|r| json!({"id": r.id, "name": r.name, "orcid": r.orcid, "added_at": r.added_at}))
                        .collect();
                    println!("{}", serde_json::Value::Array(items));
                } else {
                    for r in &list {
                        println!("{}  {}  {}  {}", r.id, r.name, r.orcid, r.added_at);
                    }
                }
            }
            ResearcherCommand::Remove { id } => {
                c.remove(RemoveResearcherRequest { id: id.clone() })
                    .await
                    .map_err(client::refused)?;
                println!("removed {id}");
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
