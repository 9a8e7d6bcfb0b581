//! `bayspace credential …`: inspect and verify identity records offline.
//!
//! `verify` exits 0 when the credential is valid, 1 when it is not (with the
//! reason), and 2 when an input cannot be read or parsed.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bayspace_connector::identity::{
    Anchor, Checks, FileError, MEMBERSHIP_FORMAT, MembershipCredential, PeerId, RESEARCHER_FORMAT,
    REVOCATION_FORMAT, ResearcherChecks, ResearcherCredential, RevocationList, files, timestamp,
};
use bayspace_contracts::signing::b64;
use serde_json::{Value, json};
use time::OffsetDateTime;

const INVALID: u8 = 1;
const UNREADABLE: u8 = 2;

#[derive(Debug, clap::Args)]
pub struct CredentialArgs {
    #[command(subcommand)]
    pub command: CredentialCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum CredentialCommand {
    /// Verify a membership credential (or a researcher credential, with
    /// --membership) against trust anchors, now.
    Verify {
        file: PathBuf,
        /// A trust anchor's public key file (repeat for several).
        #[arg(long = "anchor", required = true)]
        anchors: Vec<PathBuf>,
        /// Require the credential to be for this PeerId.
        #[arg(long)]
        peer_id: Option<PeerId>,
        /// Require this address to be inside the credential's prefixes.
        #[arg(long)]
        addr: Option<IpAddr>,
        /// Refuse serials revoked by this revocation list.
        #[arg(long)]
        revocations: Option<PathBuf>,
        /// The issuing institution's membership credential (researcher
        /// credentials only).
        #[arg(long)]
        membership: Option<PathBuf>,
    },
    /// Print a credential's or revocation list's fields (not verified).
    Show {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(args: CredentialArgs) -> anyhow::Result<ExitCode> {
    let result = match args.command {
        CredentialCommand::Verify {
            file,
            anchors,
            peer_id,
            addr,
            revocations,
            membership,
        } => verify(
            &file,
            &anchors,
            &Wanted {
                peer_id,
                addr,
                revocations,
                membership,
            },
        ),
        CredentialCommand::Show { file, json } => show(&file, json),
    };
    match result {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(UNREADABLE))
        }
    }
}

struct Wanted {
    peer_id: Option<PeerId>,
    addr: Option<IpAddr>,
    revocations: Option<PathBuf>,
    membership: Option<PathBuf>,
}

enum Record {
    Membership(MembershipCredential),
    Researcher(ResearcherCredential),
    Revocations(RevocationList),
}

/// Read any identity record, choosing the parser by its `format`.
fn read_record(path: &Path) -> Result<Record, FileError> {
    let text = files::read_text(path)?;
    let format = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v.get("format").and_then(Value::as_str).map(str::to_owned));
    Ok(match format.as_deref() {
        Some(RESEARCHER_FORMAT) => {
            Record::Researcher(ResearcherCredential::from_json(&text, path)?)
        }
        Some(REVOCATION_FORMAT) => Record::Revocations(RevocationList::from_json(&text, path)?),
        // Membership is the default so that its parser reports what is wrong.
        _ => Record::Membership(MembershipCredential::from_json(&text, path)?),
    })
}

fn invalid(reason: impl std::fmt::Display) -> ExitCode {
    println!("invalid: {reason}");
    ExitCode::from(INVALID)
}

fn verify(file: &Path, anchor_files: &[PathBuf], w: &Wanted) -> anyhow::Result<ExitCode> {
    let anchors = anchor_files
        .iter()
        .map(|p| Anchor::load(p).map(|a| a.key))
        .collect::<Result<Vec<_>, _>>()?;
    let revocations = w
        .revocations
        .as_deref()
        .map(RevocationList::read)
        .transpose()?;
    let now = OffsetDateTime::now_utc();
    match read_record(file)? {
        Record::Membership(cred) => {
            if w.membership.is_some() {
                anyhow::bail!("--membership applies to researcher credentials only");
            }
            let checks = Checks {
                peer_id: w.peer_id,
                addr: w.addr,
                revocations: revocations.as_ref(),
                role: None,
            };
            Ok(match cred.verify(&anchors, now, &checks) {
                Ok(b) => {
                    println!(
                        "valid: membership serial {} for {} ({}, {}) until {}",
                        b.serial,
                        b.institution,
                        b.region,
                        b.peer_id,
                        timestamp::display(&b.not_after)
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => invalid(e),
            })
        }
        Record::Researcher(cred) => {
            if w.peer_id.is_some() || w.addr.is_some() {
                anyhow::bail!("--peer-id and --addr apply to membership credentials only");
            }
            let Some(m) = w.membership.as_deref() else {
                anyhow::bail!(
                    "{} is a researcher credential: pass the institution's membership credential with --membership",
                    file.display()
                );
            };
            let membership = MembershipCredential::read(m)?;
            let checks = ResearcherChecks {
                revocations: revocations.as_ref(),
                role: None,
            };
            Ok(match cred.verify(&membership, &anchors, now, &checks) {
                Ok(b) => {
                    println!(
                        "valid: researcher {} ({}) of {} until {}",
                        b.id,
                        b.name,
                        membership.body().institution,
                        timestamp::display(&b.not_after)
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => invalid(e),
            })
        }
        Record::Revocations(_) => {
            anyhow::bail!("{} is a revocation list, not a credential", file.display())
        }
    }
}

fn show(file: &Path, as_json: bool) -> anyhow::Result<ExitCode> {
    let (format, signer, body) = match read_record(file)? {
        Record::Membership(c) => (
            MEMBERSHIP_FORMAT,
            *c.signer(),
            serde_json::to_value(c.body())?,
        ),
        Record::Researcher(c) => (
            RESEARCHER_FORMAT,
            *c.signer(),
            serde_json::to_value(c.body())?,
        ),
        Record::Revocations(l) => (
            REVOCATION_FORMAT,
            *l.signer(),
            serde_json::to_value(l.body())?,
        ),
    };
    let mut fields = json!({ "format": format, "signer": b64::encode(signer.as_bytes()) });
    if let (Some(out), Value::Object(body)) = (fields.as_object_mut(), body) {
        out.extend(body);
    }
    if as_json {
        println!("{}", serde_json::to_string_pretty(&fields)?);
    } else if let Value::Object(map) = fields {
        for (k, v) in map {
            match v {
                Value::String(s) => println!("{k}: {s}"),
                other => println!("{k}: {other}"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
