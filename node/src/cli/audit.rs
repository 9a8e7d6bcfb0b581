//! `bayspace audit export|verify|checkpoints`: take the audit log off a
//! node, check an export offline against the node's PeerId (and against the
//! checkpoints of it that another member holds), and take those checkpoints
//! off the member that holds them.

use std::io::{BufReader, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use bayspace_connector::audit::{read_held, verify_export_against};
use bayspace_connector::durable::{AtomicFile, Overwrite};
use bayspace_connector::identity::{PeerId, key_of_peer_id};
use time::format_description::well_known::Rfc3339;

use crate::client::{self, ClientArgs};
use crate::proto::audit_service_client::AuditServiceClient;
use crate::proto::{ExportAuditRequest, PeerCheckpointsRequest};

#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Write the node's audit log as JSON lines (administrator).
    Export {
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Verify an export offline: chain, digests and checkpoint signatures;
    /// with --against, also that no entry a peer's checkpoint covers was cut
    /// off or changed.
    Verify {
        file: PathBuf,
        /// The node's PeerId; it carries the node's ed25519 public key.
        #[arg(long)]
        peer_id: String,
        /// Checkpoints of this node's log held by another member, as
        /// `bayspace audit checkpoints --peer PEER_ID` on that member prints.
        #[arg(long, value_name = "PEER_CHECKPOINTS")]
        against: Option<PathBuf>,
    },
    /// Print the checkpoints of another member's log that this node holds,
    /// as a PEER_CHECKPOINTS file for `audit verify --against` (administrator).
    Checkpoints {
        /// The member whose log the checkpoints are of.
        #[arg(long)]
        peer: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub fn run(cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCommand::Export { out, client } => export(&out, &client),
        AuditCommand::Verify {
            file,
            peer_id,
            against,
        } => Ok(verify(&file, &peer_id, against.as_deref())),
        AuditCommand::Checkpoints { peer, client } => checkpoints(&peer, &client),
    }
}

fn checkpoints(peer: &str, args: &ClientArgs) -> anyhow::Result<ExitCode> {
    let peer_id: PeerId = peer
        .parse()
        .with_context(|| format!("--peer `{peer}` is not a PeerId"))?;
    let data = client::block_on(async {
        let mut c = AuditServiceClient::new(client::connect(args).await?);
        let reply = c
            .peer_checkpoints(PeerCheckpointsRequest {
                peer_id: peer_id.to_string(),
            })
            .await
            .map_err(client::refused)?
            .into_inner();
        Ok(reply.data)
    })?;
    if data.is_empty() {
        eprintln!("no checkpoints of {peer_id} are held on this node");
    }
    std::io::stdout()
        .write_all(&data)
        .context("cannot write to stdout")?;
    Ok(ExitCode::SUCCESS)
}

fn export(out: &std::path::Path, args: &ClientArgs) -> anyhow::Result<ExitCode> {
    // A failed or interrupted export leaves no file that looks whole.
    let mut file = AtomicFile::create(out, 0o644)
        .with_context(|| format!("cannot create a file beside {}", out.display()))?;
    let bytes = client::block_on(async {
        let mut c = AuditServiceClient::new(client::connect(args).await?);
        let mut stream = c
            .export(ExportAuditRequest {})
            .await
            .map_err(client::refused)?
            .into_inner();
        let mut n = 0u64;
        while let Some(chunk) = stream.message().await.map_err(client::refused)? {
            file.write_all(&chunk.data)
                .with_context(|| format!("cannot write {}", out.display()))?;
            n += chunk.data.len() as u64;
        }
        Ok(n)
    })?;
    file.commit(Overwrite::Replace)
        .with_context(|| format!("cannot write {}", out.display()))?;
    println!("wrote {} ({bytes} bytes)", out.display());
    Ok(ExitCode::SUCCESS)
}

fn verify(file: &std::path::Path, peer_id: &str, against: Option<&std::path::Path>) -> ExitCode {
    let (peer, key) = match peer_id
        .parse::<PeerId>()
        .map_err(|e| e.to_string())
        .and_then(|p| {
            key_of_peer_id(&p)
                .map(|k| (p, k))
                .map_err(|e| e.to_string())
        }) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: --peer-id `{peer_id}`: {e}");
            return ExitCode::from(2);
        }
    };
    let held = match against {
        None => Vec::new(),
        Some(path) => {
            let read = std::fs::File::open(path)
                .map_err(|e| e.to_string())
                .and_then(|f| {
                    read_held(BufReader::new(f), &peer.to_string()).map_err(|e| e.to_string())
                });
            match read {
                Ok(held) => held,
                Err(e) => {
                    eprintln!("error: --against {}: {e}", path.display());
                    return ExitCode::from(2);
                }
            }
        }
    };
    let reader = match std::fs::File::open(file) {
        Ok(f) => BufReader::new(f),
        Err(e) => {
            eprintln!("error: cannot open {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    match verify_export_against(reader, &key, &held) {
        Ok(report) => {
            let signed = report
                .signed_through
                .map_or("none".to_owned(), |s| s.to_string());
            println!(
                "ok: {} entries, {} checkpoints, signed through seq {signed}",
                report.entries, report.checkpoints
            );
            match report.last_checkpoint {
                Some(c) => println!(
                    "last checkpoint: number {} for seq {}, signed {}",
                    c.number,
                    c.seq,
                    c.time
                        .format(&Rfc3339)
                        .unwrap_or_else(|_| c.time.to_string())
                ),
                None => println!("last checkpoint: none"),
            }
            if let Some(path) = against {
                match report.witnessed_through {
                    Some(seq) => println!(
                        "against {}: {} peer checkpoints agree with the log, the latest for seq {seq}",
                        path.display(),
                        held.len()
                    ),
                    None => println!(
                        "warning: {} holds no checkpoints; a log cut short is not detected",
                        path.display()
                    ),
                }
            } else {
                println!(
                    "note: entries cut off the end, checkpoints included, are only detected with --against"
                );
            }
            if !report.fully_signed() {
                println!(
                    "warning: entries after seq {signed} are not covered by a signed checkpoint"
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("broken: {}: {e}", file.display());
            ExitCode::FAILURE
        }
    }
}
