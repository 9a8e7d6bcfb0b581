//! `bayspace audit export|verify`: take the audit log off a node, and check
//! an export offline against the node's PeerId.

use std::io::{BufReader, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use bayspace_connector::audit::verify_export;
use bayspace_connector::identity::{PeerId, key_of_peer_id};

use crate::client::{self, ClientArgs};
use crate::proto::ExportAuditRequest;
use crate::proto::audit_service_client::AuditServiceClient;

#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Write the node's audit log as JSON lines (administrator).
    Export {
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Verify an export offline: chain, digests and checkpoint signatures.
    Verify {
        file: PathBuf,
        /// The node's PeerId; it carries the node's ed25519 public key.
        #[arg(long)]
        peer_id: String,
    },
}

pub fn run(cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCommand::Export { out, client } => export(&out, &client),
        AuditCommand::Verify { file, peer_id } => Ok(verify(&file, &peer_id)),
    }
}

fn export(out: &std::path::Path, args: &ClientArgs) -> anyhow::Result<ExitCode> {
    // Written beside the target and renamed, so a failed export never
    // leaves a truncated file that looks like a whole one.
    let tmp = out.with_extension("partial");
    let mut file =
        std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
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
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            n += chunk.data.len() as u64;
        }
        Ok(n)
    });
    let bytes = match bytes {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    file.sync_all()
        .with_context(|| format!("cannot flush {}", tmp.display()))?;
    std::fs::rename(&tmp, out).with_context(|| format!("cannot write {}", out.display()))?;
    println!("wrote {} ({bytes} bytes)", out.display());
    Ok(ExitCode::SUCCESS)
}

fn verify(file: &std::path::Path, peer_id: &str) -> ExitCode {
    let key = match peer_id
        .parse::<PeerId>()
        .map_err(|e| e.to_string())
        .and_then(|p| key_of_peer_id(&p).map_err(|e| e.to_string()))
    {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: --peer-id `{peer_id}`: {e}");
            return ExitCode::from(2);
        }
    };
    let reader = match std::fs::File::open(file) {
        Ok(f) => BufReader::new(f),
        Err(e) => {
            eprintln!("error: cannot open {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    match verify_export(reader, &key) {
        Ok(report) => {
            let signed = report
                .signed_through
                .map_or("none".to_owned(), |s| s.to_string());
            println!(
                "ok: {} entries, {} checkpoints, signed through seq {signed}",
                report.entries, report.checkpoints
            );
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
