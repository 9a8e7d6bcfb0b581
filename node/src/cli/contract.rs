//! `bayspace contract request|show|list|watch`: a researcher's requests for
//! other members' datasets, and every negotiation this node takes part in.

use std::process::ExitCode;

use serde_json::{Value, json};

use crate::client::{self, ClientArgs};
use crate::proto::contract_service_client::ContractServiceClient;
use crate::proto::{ContractRequest, ListNegotiationsRequest, Negotiation, ShowNegotiationRequest};

#[derive(Debug, clap::Args)]
pub struct ContractArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: ContractCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ContractCommand {
    /// Ask the publishing member for a dataset, for one purpose.
    Request {
        dataset_id: String,
        /// A purpose the offer allows, e.g. academic-research.
        #[arg(long)]
        purpose: String,
        /// The offer, when the dataset has more than one.
        #[arg(long = "offer")]
        offer_id: Option<String>,
        /// Print `{"id": …, "state": …}`.
        #[arg(long)]
        json: bool,
    },
    /// Show one negotiation: state, counterparty, reasons, agreement.
    Show {
        id: String,
        /// Print the stored record as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List negotiations, newest first.
    List {
        /// Print a JSON array of the stored records (`[]` when none).
        #[arg(long)]
        json: bool,
        /// Negotiations asked for per reply (1 to 1000); the list is read
        /// a page at a time until the end.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=1000))]
        page_size: u32,
    },
    /// Print each state change of a negotiation until it is FINALIZED or
    /// TERMINATED.
    Watch {
        id: String,
        /// One JSON record per line.
        #[arg(long)]
        json: bool,
    },
}

/// The stored record the node sent along.
pub fn record_json(n: &Negotiation) -> Value {
    serde_json::from_str(&n.json).unwrap_or(Value::Null)
}

fn or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

/// The route as people read it: `gba-standard-contract (mainland-hk)`.
/// The route as people read it: with the GBA variant, or with the
/// certificate a certification relies on.
pub fn route(n: &Negotiation) -> String {
    match (n.route.as_str(), n.variant.as_str()) {
        ("", _) => "not assessed yet".into(),
        (r, "") if !n.certification_reference.is_empty() => format!(
            "{r} (certificate {}, valid until {})",
            n.certification_reference, n.certification_valid_until
        ),
        (r, "") => r.into(),
        (r, v) => format!("{r} ({v})"),
    }
}

fn print_summary(n: &Negotiation) {
    println!("negotiation {} ({} side)", n.id, n.role);
    println!("  state:        {}", n.state);
    println!(
        "  dataset:      {} ({} v{}), offer {}",
        n.dataset_title, n.dataset_id, n.dataset_version, n.offer_id
    );
    println!("  purpose:      {}", n.purpose);
    println!(
        "  counterparty: {} ({}), {}",
        n.counterparty_institution, n.counterparty_region, n.counterparty_peer_id
    );
    println!(
        "  researcher:   {} ({})",
        n.researcher_name, n.researcher_id
    );
    println!("  route:        {}", route(n));
    println!("  blockers:     {}", or_none(&n.blockers));
    println!("  obligations:  {}", or_none(&n.obligations));
    for r in &n.reasons {
        println!("  reason:       {r}");
    }
    if !n.agreement_id.is_empty() {
        println!("  agreement:    {}", n.agreement_id);
    }
    println!("  requested:    {}", n.requested_at);
    println!("  updated:      {}", n.updated_at);
}

fn print_line(n: &Negotiation) {
    println!(
        "{}  {:<10}  {}  {} ({})  {}",
        n.id, n.state, n.role, n.dataset_title, n.counterparty_institution, n.updated_at
    );
}

/// The largest reply read: a page of `contract list` (at most 1 000
/// negotiations of about 3 KiB) with room for records far larger.
const LIST_MAX_BYTES: usize = 16 << 20;

pub fn run(args: ContractArgs) -> anyhow::Result<ExitCode> {
    client::block_on(async {
        // A negotiation is about 3 KiB, so one reply with all of them
        // passed tonic's 4 MiB default at some 1 400 (found by the kill -9
        // soak); `contract list` now reads pages, and a larger reply is
        // still accepted from the caller's own node for large records.
        let mut c = ContractServiceClient::new(client::connect(&args.client).await?)
            .max_decoding_message_size(LIST_MAX_BYTES);
        match args.command {
            ContractCommand::Request {
                dataset_id,
                purpose,
                offer_id,
                json,
            } => {
                let n = c
                    .request(ContractRequest {
                        dataset_id,
                        purpose,
                        offer_id,
                    })
                    .await
                    .map_err(client::refused)?
                    .into_inner();
                if json {
                    println!("{}", json!({ "id": n.id, "state": n.state }));
                } else {
                    println!("requested: {} ({})", n.id, n.state);
                    for r in &n.reasons {
                        println!("  reason: {r}");
                    }
                }
            }
            ContractCommand::Show { id, json } => {
                let n = c
                    .show(ShowNegotiationRequest { id })
                    .await
                    .map_err(client::refused)?
                    .into_inner();
                if json {
                    println!("{}", record_json(&n));
                } else {
                    print_summary(&n);
                }
            }
            ContractCommand::List { json, page_size } => {
                let mut list = Vec::new();
                let mut page_token = String::new();
                loop {
                    let page = c
                        .list(ListNegotiationsRequest {
                            page_size,
                            page_token,
                        })
                        .await
                        .map_err(client::refused)?
                        .into_inner();
                    list.extend(page.negotiations);
                    if page.next_page_token.is_empty() {
                        break;
                    }
                    page_token = page.next_page_token;
                }
                if json {
                    println!("{}", Value::Array(list.iter().map(record_json).collect()));
                } else if list.is_empty() {
                    println!("no negotiations");
                } else {
                    list.iter().for_each(print_line);
                }
            }
            ContractCommand::Watch { id, json } => {
                let mut stream = c
                    .watch(ShowNegotiationRequest { id })
                    .await
                    .map_err(client::refused)?
                    .into_inner();
                while let Some(n) = stream.message().await.map_err(client::refused)? {
                    if json {
                        println!("{}", record_json(&n));
                    } else {
                        let mut line = format!("{}  {}", n.updated_at, n.state);
                        if !n.agreement_id.is_empty() {
                            line.push_str(&format!("  agreement {}", n.agreement_id));
                        }
                        if !n.reasons.is_empty() {
                            line.push_str(&format!("  ({})", n.reasons.join("; ")));
                        }
                        println!("{line}");
                    }
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
