//! `bayspace transfer fetch`: fetch the data of an agreement through the
//! home node, with a progress bar on a terminal and plain lines otherwise.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::client::{self, ClientArgs};
use crate::proto::FetchRequest;
use crate::proto::transfer_service_client::TransferServiceClient;

#[derive(Debug, clap::Args)]
pub struct TransferArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: TransferCommand,
}

#[derive(Debug, clap::Subcommand)]
enum TransferCommand {
    /// Fetch the data of an agreement into PATH (on the node's host), or keep
    /// it sealed in the node's store. An interrupted fetch resumes when run
    /// again; PATH appears only once the whole file has verified.
    Fetch {
        agreement_id: String,
        #[arg(long, required_unless_present = "keep_sealed")]
        out: Option<PathBuf>,
        /// Keep the data encrypted in the node's store instead; open it with
        /// `bayspace data open`. It is crypto-shredded at the agreement's
        /// retention end.
        #[arg(long, conflicts_with = "out")]
        keep_sealed: bool,
        /// Print a final JSON summary: bytes, seconds, blake3, agreement.
        #[arg(long)]
        json: bool,
    },
}

/// How often plain progress lines are printed when not on a terminal.
const LINE_EVERY: Duration = Duration::from_secs(1);

pub fn run(args: TransferArgs) -> anyhow::Result<ExitCode> {
    let TransferCommand::Fetch {
        agreement_id,
        out,
        keep_sealed,
        json,
    } = args.command;
    let out = match out {
        Some(out) => std::path::absolute(&out)
            .with_context(|| format!("cannot resolve --out {}", out.display()))?
            .display()
            .to_string(),
        None => String::new(),
    };
    client::block_on(async {
        let mut c = TransferServiceClient::new(client::connect(&args.client).await?);
        let mut stream = c
            .fetch(FetchRequest {
                agreement_id,
                out,
                keep_sealed,
            })
            .await
            .map_err(client::refused)?
            .into_inner();
        let bar = (!json && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::new(0);
            b.set_style(
                ProgressStyle::with_template(
                    "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b
        });
        let mut last_line = Instant::now();
        while let Some(p) = stream.message().await.map_err(client::refused)? {
            if p.done {
                if let Some(b) = &bar {
                    b.finish_and_clear();
                }
                if json {
                    println!(
                        "{}",
                        json!({
                            "agreement": p.agreement_id,
                            "path": p.path,
                            "bytes": p.bytes_done,
                            "resumed_bytes": p.resumed_bytes,
                            "seconds": p.seconds,
                            "blake3": p.blake3,
                            "sealed": p.sealed,
                        })
                    );
                } else if p.sealed {
                    println!(
                        "fetched {} bytes in {:.2} s, kept sealed in the node's store (blake3 {}); \
                         open it with `bayspace data open {} --out PATH`",
                        p.bytes_done, p.seconds, p.blake3, p.agreement_id
                    );
                } else {
                    println!(
                        "fetched {} bytes in {:.2} s into {} (blake3 {})",
                        p.bytes_done, p.seconds, p.path, p.blake3
                    );
                }
                return Ok(ExitCode::SUCCESS);
            }
            match &bar {
                Some(b) => {
                    b.set_length(p.bytes_total);
                    b.set_position(p.bytes_done);
                }
                None if !json && last_line.elapsed() >= LINE_EVERY => {
                    eprintln!("{} / {} bytes", p.bytes_done, p.bytes_total);
                    last_line = Instant::now();
                }
                None => {}
            }
        }
        anyhow::bail!("the node ended the transfer without a result")
    })
}
