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

/// The largest `contract list` answer read: some 20 000 negotiations.
const LIST_MAX_BYTES: usize = 64 << 20;

pub fn run(args: ContractArgs) -> anyhow::Result<ExitCode> {
    client::block_on(async {
        // `ListNegotiations` answers with every negotiation at once: about
        // 3 KiB each, so tonic's 4 MiB default stopped `contract list` at
        // some 1 400 of them (found by the kill -9 soak). The node is the
        // caller's own, so a larger answer is trusted.
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
            ContractCommand::List { json } => {
                let list = c
                    .list(ListNegotiationsRequest {})
                    .await
                    .map_err(client::refused)?
                    .into_inner()
                    .negotiations;
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
