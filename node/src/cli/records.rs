//! `bayspace records set|show`: the records an administrator has on file
//! for one of this node's datasets (PIPIA, consent, approvals, filings, the
//! PI export certificate), which the compliance assessment reads.

use std::process::ExitCode;

use anyhow::bail;
use serde_json::{Value, json};

use crate::client::{self, ClientArgs};
use crate::proto::record_service_client::RecordServiceClient;
use crate::proto::{DatasetRecords, SetRecordsRequest, ShowRecordsRequest};

#[derive(Debug, clap::Args)]
pub struct RecordsArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: RecordsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum RecordsCommand {
    /// Record facts about a dataset; pending requests for it are re-assessed.
    Set(Box<SetArgs>),
    /// Show the records on file for a dataset.
    Show {
        dataset_id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
struct SetArgs {
    dataset_id: String,
    /// A personal information protection impact assessment was made.
    #[arg(long, conflicts_with = "no_pipia")]
    pipia: bool,
    /// Withdraw the PIPIA record.
    #[arg(long)]
    no_pipia: bool,
    /// The PIPIA report's identifier, cited in filings.
    #[arg(long = "pipia-ref")]
    pipia_ref: Option<String>,
    /// Notice given and separate consent obtained.
    #[arg(long, conflicts_with = "no_consent")]
    consent: bool,
    /// Withdraw the consent record.
    #[arg(long)]
    no_consent: bool,
    /// Last day the CAC security assessment approval is valid (YYYY-MM-DD),
    /// or `none` to clear it.
    #[arg(long)]
    security_assessment_until: Option<String>,
    /// The human genetic resources filing was made.
    #[arg(long)]
    hgr_filing: bool,
    /// The human genetic resources security review was passed.
    #[arg(long)]
    hgr_security_review: bool,
    /// Macao's authorisation for the transfer was obtained.
    #[arg(long)]
    macao_authorisation: bool,
    /// The number of the exporter's personal information export certificate
    /// whose scope covers this dataset; needs --certification-valid-until
    /// unless one is on file.
    #[arg(long = "certification-ref")]
    certification_ref: Option<String>,
    /// Last day the certificate is valid (YYYY-MM-DD), or `none` to clear
    /// the certificate.
    #[arg(long)]
    certification_valid_until: Option<String>,
    /// Print the records and the re-assessed requests as JSON.
    #[arg(long)]
    json: bool,
}

fn flag(on: bool, off: bool) -> Option<bool> {
    if on {
        Some(true)
    } else if off {
        Some(false)
    } else {
        None
    }
}

fn set_request(a: &SetArgs) -> anyhow::Result<SetRecordsRequest> {
    let r = SetRecordsRequest {
        dataset_id: a.dataset_id.clone(),
        pipia: flag(a.pipia, a.no_pipia),
        pipia_reference: a.pipia_ref.clone(),
        consent: flag(a.consent, a.no_consent),
        security_assessment_until: a.security_assessment_until.clone(),
        hgr_filing: a.hgr_filing.then_some(true),
        hgr_security_review: a.hgr_security_review.then_some(true),
        macao_authorisation: a.macao_authorisation.then_some(true),
        certification_reference: a.certification_ref.clone(),
        certification_valid_until: a.certification_valid_until.clone(),
    };
    let nothing = r.pipia.is_none()
        && r.pipia_reference.is_none()
        && r.consent.is_none()
        && r.security_assessment_until.is_none()
        && r.hgr_filing.is_none()
        && r.hgr_security_review.is_none()
        && r.macao_authorisation.is_none()
        && r.certification_reference.is_none()
        && r.certification_valid_until.is_none();
    if nothing {
        bail!(
            "nothing to set: pass at least one of --pipia, --pipia-ref, --consent, --security-assessment-until, --hgr-filing, --hgr-security-review, --macao-authorisation, --certification-ref, --certification-valid-until"
        );
    }
    Ok(r)
}

fn records_json(r: &DatasetRecords) -> Value {
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    json!({
        "dataset": r.dataset_id,
        "pipia": r.pipia,
        "pipia_reference": opt(&r.pipia_reference),
        "consent": r.consent,
        "security_assessment_until": opt(&r.security_assessment_until),
        "hgr_filing": r.hgr_filing,
        "hgr_security_review": r.hgr_security_review,
        "macao_authorisation": r.macao_authorisation,
        "certification_reference": opt(&r.certification_reference),
        "certification_valid_until": opt(&r.certification_valid_until),
        "updated_at": opt(&r.updated_at),
    })
}

fn print_records(r: &DatasetRecords) {
    let yes = |b: bool| if b { "yes" } else { "no" };
    let or = |s: &str, d: &'static str| {
        if s.is_empty() {
            d.to_owned()
        } else {
            s.to_owned()
        }
    };
    println!("records for {}", r.dataset_id);
    println!(
        "  pipia:                      {}{}",
        yes(r.pipia),
        if r.pipia_reference.is_empty() {
            String::new()
        } else {
            format!(" (reference {})", r.pipia_reference)
        }
    );
    println!("  consent:                    {}", yes(r.consent));
    println!(
        "  security assessment until:  {}",
        or(&r.security_assessment_until, "none")
    );
    println!("  hgr filing:                 {}", yes(r.hgr_filing));
    println!(
        "  hgr security review:        {}",
        yes(r.hgr_security_review)
    );
    println!(
        "  macao authorisation:        {}",
        yes(r.macao_authorisation)
    );
    if r.certification_reference.is_empty() {
        println!("  pi export certificate:      none");
    } else {
        println!(
            "  pi export certificate:      {} (valid until {})",
            r.certification_reference,
            or(&r.certification_valid_until, "unknown")
        );
    }
    println!(
        "  updated:                    {}",
        or(&r.updated_at, "never")
    );
}

pub fn run(args: RecordsArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        RecordsCommand::Set(a) => set(&args.client, &a),
        RecordsCommand::Show { dataset_id, json } => {
            let r = client::block_on(async {
                let mut c = RecordServiceClient::new(client::connect(&args.client).await?);
                Ok(c.show(ShowRecordsRequest { dataset_id })
                    .await
                    .map_err(client::refused)?
                    .into_inner())
            })?;
            if json {
                println!("{}", records_json(&r));
            } else {
                print_records(&r);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn set(args: &ClientArgs, a: &SetArgs) -> anyhow::Result<ExitCode> {
    let req = set_request(a)?;
    let r = client::block_on(async {
        let mut c = RecordServiceClient::new(client::connect(args).await?);
        Ok(c.set(req).await.map_err(client::refused)?.into_inner())
    })?;
    let records = r.records.unwrap_or_default();
    if a.json {
        let again: Vec<Value> = r
            .reevaluated
            .iter()
            .map(|n| json!({ "id": n.id, "state": n.state, "blockers": n.blockers }))
            .collect();
        println!(
            "{}",
            json!({ "records": records_json(&records), "reevaluated": again })
        );
        return Ok(ExitCode::SUCCESS);
    }
    print_records(&records);
    for n in &r.reevaluated {
        let blockers = if n.blockers.is_empty() {
            "no blockers".to_owned()
        } else {
            format!("blockers: {}", n.blockers.join(", "))
        };
        println!("re-assessed {} ({}): {blockers}", n.id, n.state);
    }
    Ok(ExitCode::SUCCESS)
}
