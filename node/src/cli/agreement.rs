//! `bayspace agreement show|list|revoke`: concluded agreements, readable or
//! as the DSP ContractAgreementMessage.

use std::process::ExitCode;

use anyhow::Context;
use bayspace_connector::negotiator::AgreementRecord;
use bayspace_contracts::filing::CertificationRenewal;
use serde_json::Value;

use crate::client::{self, ClientArgs};
use crate::proto::agreement_service_client::AgreementServiceClient;
use crate::proto::{
    AgreementDocument, ListAgreementsRequest, RevokeAgreementRequest, ShowAgreementRequest,
};

#[derive(Debug, clap::Args)]
pub struct AgreementArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: AgreementCommand,
}

#[derive(Debug, clap::Subcommand)]
enum AgreementCommand {
    /// Show an agreement: a summary, the stored record (json) or the DSP
    /// ContractAgreementMessage (dsp).
    Show {
        id: String,
        #[arg(long, value_parser = ["json", "dsp"])]
        format: Option<String>,
    },
    /// List agreements, newest first.
    List {
        /// Print a JSON array of the stored records (`[]` when none).
        #[arg(long)]
        json: bool,
    },
    /// Retire an agreement this node provided; later releases are refused.
    Revoke {
        id: String,
        #[arg(long)]
        reason: String,
    },
}

fn parse(doc: &AgreementDocument) -> anyhow::Result<AgreementRecord> {
    serde_json::from_str(&doc.json).with_context(|| {
        format!(
            "the node sent agreement {} in a form this CLI cannot read",
            doc.id
        )
    })
}

fn status(r: &AgreementRecord) -> String {
    match (&r.revoked, r.signed.is_countersigned()) {
        (Some(rev), _) => format!("revoked at {}: {}", rev.at, rev.reason),
        (None, true) => "in force (signed by both)".into(),
        (None, false) => "awaiting the consumer's countersignature".into(),
    }
}

fn print_summary(r: &AgreementRecord) {
    let a = &r.signed.agreement;
    let route = match (a.variant, &a.certificate) {
        (Some(v), _) => format!("{} ({v})", a.route),
        (None, Some(c)) => format!(
            "{} (certificate {}, valid until {})",
            a.route, c.reference, c.valid_until
        ),
        (None, None) => a.route.to_string(),
    };
    let obligations: Vec<String> = a.obligations.iter().map(ToString::to_string).collect();
    println!("agreement {} ({} side)", a.id, r.role);
    println!("  status:      {}", status(r));
    println!("  negotiation: {}", a.negotiation);
    println!(
        "  dataset:     {} v{}, offer {}",
        a.dataset, a.dataset_version, a.offer
    );
    println!(
        "  provider:    {} ({}), {}",
        a.provider.name, a.provider.region, a.provider.peer_id
    );
    println!(
        "  consumer:    {} ({}), {}",
        a.consumer.name, a.consumer.region, a.consumer.peer_id
    );
    println!("  researcher:  {} ({})", a.researcher.name, a.researcher.id);
    println!("  purpose:     {}", a.purpose);
    println!("  valid:       {} to {}", a.not_before, a.not_after);
    println!("  route:       {route}");
    if obligations.is_empty() {
        println!("  obligations: none");
    } else {
        println!("  obligations: {}", obligations.join(", "));
    }
    // The renewal date is the certification route's counterpart of a
    // filing deadline, so it is shown wherever the agreement is.
    if let Ok(renewal) = CertificationRenewal::for_agreement(a) {
        println!(
            "  {}: re-apply by {}",
            bayspace_contracts::compliance::Obligation::CertificationRenewal,
            renewal.reapply_by
        );
    }
    println!("  releases:    {}", r.uses);
}

pub fn run(args: AgreementArgs) -> anyhow::Result<ExitCode> {
    client::block_on(async {
        let mut c = AgreementServiceClient::new(client::connect(&args.client).await?);
        match args.command {
            AgreementCommand::Show { id, format } => {
                let doc = c
                    .show(ShowAgreementRequest {
                        id,
                        format: format.clone().unwrap_or_default(),
                    })
                    .await
                    .map_err(client::refused)?
                    .into_inner();
                match format.as_deref() {
                    None => print_summary(&parse(&doc)?),
                    Some(_) => {
                        let v: Value = serde_json::from_str(&doc.json)
                            .context("the node sent an agreement that is not JSON")?;
                        println!("{}", serde_json::to_string_pretty(&v)?);
                    }
                }
            }
            AgreementCommand::List { json } => {
                let docs = c
                    .list(ListAgreementsRequest {})
                    .await
                    .map_err(client::refused)?
                    .into_inner()
                    .agreements;
                let records = docs.iter().map(parse).collect::<anyhow::Result<Vec<_>>>()?;
                if json {
                    println!("{}", serde_json::to_string(&records)?);
                } else if records.is_empty() {
                    println!("no agreements");
                } else {
                    for r in &records {
                        let a = &r.signed.agreement;
                        println!(
                            "{}  {}  {} -> {}  {}  until {}{}",
                            a.id,
                            r.role,
                            a.provider.name,
                            a.consumer.name,
                            a.dataset,
                            a.not_after,
                            if r.revoked.is_some() { "  REVOKED" } else { "" }
                        );
                    }
                }
            }
            AgreementCommand::Revoke { id, reason } => {
                let doc = c
                    .revoke(RevokeAgreementRequest { id, reason })
                    .await
                    .map_err(client::refused)?
                    .into_inner();
                println!("revoked: {}", doc.id);
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
