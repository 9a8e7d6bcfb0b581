//! `bayspace offers list|approve|reject`: the administrator's decisions on
//! requests for this node's datasets.

use std::process::ExitCode;

use serde_json::{Value, json};

use crate::cli::contract::route;
use crate::client::{self, ClientArgs};
use crate::proto::offer_service_client::OfferServiceClient;
use crate::proto::{ApproveRequest, ListPendingRequest, Negotiation, RejectRequest};

#[derive(Debug, clap::Args)]
pub struct OffersArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: OffersCommand,
}

#[derive(Debug, clap::Subcommand)]
enum OffersCommand {
    /// Requests waiting for a decision, oldest first.
    List {
        /// Print a JSON array (`[]` when none wait).
        #[arg(long)]
        json: bool,
    },
    /// Approve a request: refused, naming them, while blockers remain.
    Approve {
        id: String,
        /// Kept with the negotiation and in the audit log.
        #[arg(long)]
        note: Option<String>,
    },
    /// Reject a request; the researcher is told the reason.
    Reject {
        id: String,
        #[arg(long)]
        reason: String,
    },
}

fn pending_json(n: &Negotiation) -> Value {
    json!({
        "id": n.id,
        "dataset": n.dataset_id,
        "dataset_title": n.dataset_title,
        "institution": n.counterparty_institution,
        "peer_id": n.counterparty_peer_id,
        "researcher": n.researcher_name,
        "researcher_id": n.researcher_id,
        "purpose": n.purpose,
        "route": n.route,
        "variant": (!n.variant.is_empty()).then_some(&n.variant),
        "certificate": certificate_json(n),
        "blockers": n.blockers,
        "obligations": n.obligations,
        "requested_at": n.requested_at,
    })
}

/// The certificate a `certification` route relies on, or null.
pub fn certificate_json(n: &Negotiation) -> Value {
    if n.certification_reference.is_empty() {
        Value::Null
    } else {
        json!({
            "reference": n.certification_reference,
            "valid_until": n.certification_valid_until,
        })
    }
}

fn print_pending(n: &Negotiation) {
    println!("{}  requested {}", n.id, n.requested_at);
    println!(
        "    {} for {} ({}, {}): {} ({})",
        n.purpose,
        n.researcher_name,
        n.counterparty_institution,
        n.counterparty_region,
        n.dataset_title,
        n.dataset_id
    );
    let blockers = if n.blockers.is_empty() {
        "none".into()
    } else {
        n.blockers.join(", ")
    };
    println!("    route {}; blockers: {blockers}", route(n));
}

pub fn run(args: OffersArgs) -> anyhow::Result<ExitCode> {
    client::block_on(async {
        let mut c = OfferServiceClient::new(client::connect(&args.client).await?);
        match args.command {
            OffersCommand::List { json } => {
                let list = c
                    .list(ListPendingRequest {})
                    .await
                    .map_err(client::refused)?
                    .into_inner()
                    .negotiations;
                if json {
                    println!("{}", Value::Array(list.iter().map(pending_json).collect()));
                } else if list.is_empty() {
                    println!("no pending requests");
                } else {
                    list.iter().for_each(print_pending);
                }
            }
            OffersCommand::Approve { id, note } => {
                let n = c
                    .approve(ApproveRequest {
                        id,
                        note: note.unwrap_or_default(),
                    })
                    .await
                    .map_err(client::refused)?
                    .into_inner();
                println!("approved: {} ({})", n.id, n.state);
                if !n.agreement_id.is_empty() {
                    println!("agreement: {}", n.agreement_id);
                }
            }
            OffersCommand::Reject { id, reason } => {
                let n = c
                    .reject(RejectRequest { id, reason })
                    .await
                    .map_err(client::refused)?
                    .into_inner();
                println!("rejected: {} ({})", n.id, n.state);
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
