//! `bayspace catalog search|export`: the federated catalog as researchers
//! see it.

use std::process::ExitCode;

use serde_json::{Value, json};

use crate::client::{self, ClientArgs};
use crate::proto::catalog_service_client::CatalogServiceClient;
use crate::proto::{DatasetSummary, ExportDspRequest, SearchRequest};

/// Pages fetched at most, so a misbehaving node cannot keep us looping.
const MAX_PAGES: usize = 10_000;

#[derive(Debug, clap::Subcommand)]
pub enum CatalogCommand {
    /// Search the federated catalog; every word must match.
    Search(SearchArgs),
    /// Print the catalog as a DSP 2025-1 Catalog (JSON-LD).
    Export {
        #[arg(long, value_parser = ["dsp"], default_value = "dsp")]
        format: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, clap::Args)]
pub struct SearchArgs {
    /// Words matched against title, description and keywords.
    query: Vec<String>,
    /// Institution name or PeerId.
    #[arg(long)]
    publisher: Option<String>,
    /// Where the data is held, e.g. hk or mainland:shenzhen.
    #[arg(long)]
    region: Option<String>,
    #[arg(long)]
    category: Option<String>,
    #[arg(long)]
    level: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
    /// Print a JSON array (`[]` when nothing matches).
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: CatalogCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        CatalogCommand::Search(a) => search(a),
        CatalogCommand::Export { format: _, client } => {
            let r = client::block_on(async {
                let mut c = CatalogServiceClient::new(client::connect(&client).await?);
                Ok(c.export_dsp(ExportDspRequest {})
                    .await
                    .map_err(client::refused)?
                    .into_inner())
            })?;
            println!("{}", r.json);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn search(a: SearchArgs) -> anyhow::Result<ExitCode> {
    let base = SearchRequest {
        text: a.query.join(" "),
        publisher: a.publisher.unwrap_or_default(),
        region: a.region.unwrap_or_default(),
        category: a.category.unwrap_or_default(),
        level: a.level.unwrap_or_default(),
        limit: 500,
        after: String::new(),
    };
    let found = client::block_on(async {
        let mut c = CatalogServiceClient::new(client::connect(&a.client).await?);
        let mut all: Vec<DatasetSummary> = Vec::new();
        let mut after = String::new();
        for _ in 0..MAX_PAGES {
            let page = c
                .search(SearchRequest {
                    after,
                    ..base.clone()
                })
                .await
                .map_err(client::refused)?
                .into_inner();
            all.extend(page.datasets);
            if page.next.is_empty() {
                break;
            }
            after = page.next;
        }
        Ok(all)
    })?;
    if a.json {
        let items: Vec<Value> = found.iter().map(to_json).collect();
        println!("{}", Value::Array(items));
        return Ok(ExitCode::SUCCESS);
    }
    if found.is_empty() {
        println!("no datasets match");
    }
    for d in &found {
        println!("{}  v{}  {}", d.id, d.version, d.title);
        println!(
            "    {} ({}), {} level, {} bytes",
            d.publisher, d.region, d.level, d.size
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn to_json(d: &DatasetSummary) -> Value {
    let offers: Vec<Value> = d
        .offers
        .iter()
        .map(|o| {
            json!({
                "id": o.id,
                "approval": o.approval,
                "policy": serde_json::from_str::<Value>(&o.policy_json).unwrap_or(Value::Null),
            })
        })
        .collect();
    json!({
        "id": d.id,
        "title": d.title,
        "description": d.description,
        "keywords": d.keywords,
        "publisher": d.publisher,
        "publisher_peer_id": d.publisher_peer_id,
        "region": d.region,
        "version": d.version,
        "level": d.level,
        "categories": d.categories,
        "personal_individuals": d.personal_individuals,
        "sensitive_individuals": d.sensitive_individuals,
        "size": d.size,
        "content_hash": d.content_hash,
        "published_at": d.published_at,
        "offers": offers,
    })
}
