//! `bayspace transfer fetch`: the data of an agreement onto the machine
//! that runs the command. The home node fetches it sealed from the provider
//! (if it does not hold it yet), then it is downloaded from the home node,
//! decrypted as it streams, into PATH. Progress is a bar on a terminal and
//! plain lines otherwise.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use bayspace_connector::download::Receiving;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::client::{self, AuthChannel, ClientArgs};
use crate::proto::data_service_client::DataServiceClient;
use crate::proto::transfer_service_client::TransferServiceClient;
use crate::proto::{DataListRequest, DownloadRequest, FetchProgress, FetchRequest};

#[derive(Debug, clap::Args)]
pub struct TransferArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: TransferCommand,
}

#[derive(Debug, clap::Subcommand)]
enum TransferCommand {
    /// Fetch the data of an agreement into PATH on this machine (the home
    /// node keeps it sealed on the way), or only into the node's sealed
    /// store. An interrupted fetch or download resumes when run again;
    /// PATH appears only once the whole file has verified.
    Fetch {
        agreement_id: String,
        #[arg(long, required_unless_present = "keep_sealed")]
        out: Option<PathBuf>,
        /// Only keep the data encrypted in the node's store; download it
        /// later with `bayspace data open`. It is crypto-shredded at the
        /// agreement's retention end.
        #[arg(long, conflicts_with = "out")]
        keep_sealed: bool,
        /// Print a final JSON summary: bytes, seconds, blake3, agreement,
        /// resumed_bytes (what came from PATH.part of an earlier run).
        #[arg(long)]
        json: bool,
    },
}

/// How often plain progress lines are printed when not on a terminal.
const LINE_EVERY: Duration = Duration::from_secs(1);

/// Shows progress: a bar on a terminal, a line a second otherwise, nothing
/// with `--json`.
pub struct Progress {
    bar: Option<ProgressBar>,
    quiet: bool,
    last_line: Instant,
}

impl Progress {
    pub fn new(json: bool) -> Self {
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
        Progress {
            bar,
            quiet: json,
            last_line: Instant::now(),
        }
    }

    fn show(&mut self, done: u64, total: u64) {
        match &self.bar {
            Some(b) => {
                b.set_length(total);
                b.set_position(done);
            }
            None if !self.quiet && self.last_line.elapsed() >= LINE_EVERY => {
                eprintln!("{done} / {total} bytes");
                self.last_line = Instant::now();
            }
            None => {}
        }
    }

    fn clear(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// Has the home node fetch the data sealed; returns the last message.
async fn fetch_sealed(
    chan: AuthChannel,
    agreement_id: &str,
    progress: &mut Progress,
) -> anyhow::Result<FetchProgress> {
    let mut stream = TransferServiceClient::new(chan)
        .fetch(FetchRequest {
            agreement_id: agreement_id.to_owned(),
            out: String::new(),
            keep_sealed: true,
        })
        .await
        .map_err(client::refused)?
        .into_inner();
    while let Some(p) = stream.message().await.map_err(client::refused)? {
        if p.done {
            progress.clear();
            return Ok(p);
        }
        progress.show(p.bytes_done, p.bytes_total);
    }
    anyhow::bail!("the node ended the transfer without a result")
}

/// What a download to this machine did.
pub struct Downloaded {
    pub path: PathBuf,
    pub bytes: u64,
    pub resumed_bytes: u64,
    pub blake3: String,
    pub seconds: f64,
}

/// Downloads the sealed data of `agreement_id` from the home node into
/// `out` on this machine, resuming from `<out>.part`; `out` appears only
/// once the size and BLAKE3 the node announced match.
pub async fn download(
    args: &ClientArgs,
    agreement_id: &str,
    out: &Path,
    progress: &mut Progress,
) -> anyhow::Result<Downloaded> {
    let started = Instant::now();
    let chan = client::connect_streaming(args).await?;
    let mut part = Receiving::resume(out)?;
    let resumed_bytes = part.resumed();
    let mut stream = match DataServiceClient::new(chan)
        .download(DownloadRequest {
            agreement_id: agreement_id.to_owned(),
            offset: part.offset(),
        })
        .await
    {
        Ok(r) => r.into_inner(),
        Err(s) => {
            forget_if_useless(&part, &s)?;
            return Err(client::refused(s));
        }
    };
    loop {
        let msg = match stream.message().await {
            Ok(Some(m)) => m,
            Ok(None) => anyhow::bail!(
                "the node ended the download early; run the command again to resume from {}",
                part.part_path().display()
            ),
            Err(s) => {
                forget_if_useless(&part, &s)?;
                return Err(client::refused(s));
            }
        };
        if msg.done {
            progress.clear();
            let blake3 = part.finish(msg.size, &msg.blake3)?;
            return Ok(Downloaded {
                path: out.to_path_buf(),
                bytes: msg.size,
                resumed_bytes,
                blake3,
                seconds: started.elapsed().as_secs_f64(),
            });
        }
        part.write(&msg.data)?;
        progress.show(part.offset(), msg.size);
    }
}

/// A refusal that means the bytes held cannot lead to the data (the node's
/// copy is damaged, or the offset is past its end) removes them, as does
/// one before any byte arrived, so a refusal leaves no empty file behind;
/// anything else keeps them for a resume.
fn forget_if_useless(part: &Receiving, s: &tonic::Status) -> anyhow::Result<()> {
    if part.offset() == 0 || matches!(s.code(), tonic::Code::DataLoss | tonic::Code::OutOfRange) {
        part.discard()?;
    }
    Ok(())
}

/// Whether the home node already holds the data sealed (or held it and
/// shredded it: fetching again is then not this command's call to make).
async fn held(chan: AuthChannel, agreement_id: &str) -> anyhow::Result<bool> {
    let items = DataServiceClient::new(chan)
        .list(DataListRequest {})
        .await
        .map_err(client::refused)?
        .into_inner()
        .items;
    Ok(items.iter().any(|d| {
        d.agreement_id == agreement_id && matches!(d.state.as_str(), "sealed" | "shredded")
    }))
}

pub fn print_downloaded(d: &Downloaded, agreement_id: &str, json: bool) {
    if json {
        println!(
            "{}",
            json!({
                "agreement": agreement_id,
                "path": d.path.display().to_string(),
                "bytes": d.bytes,
                "resumed_bytes": d.resumed_bytes,
                "seconds": d.seconds,
                "blake3": d.blake3,
                "sealed": false,
            })
        );
    } else {
        println!(
            "fetched {} bytes in {:.2} s into {} (blake3 {})",
            d.bytes,
            d.seconds,
            d.path.display(),
            d.blake3
        );
    }
}

pub fn run(args: TransferArgs) -> anyhow::Result<ExitCode> {
    let TransferCommand::Fetch {
        agreement_id,
        out,
        // Without --out the data is kept sealed; clap requires one of them.
        keep_sealed: _,
        json,
    } = args.command;
    let out = match out {
        Some(out) => Some(
            std::path::absolute(&out)
                .with_context(|| format!("cannot resolve --out {}", out.display()))?,
        ),
        None => None,
    };
    client::block_on(async {
        let mut progress = Progress::new(json);
        let chan = client::connect(&args.client).await?;
        let Some(out) = out else {
            let p = fetch_sealed(chan, &agreement_id, &mut progress).await?;
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
                        "sealed": true,
                    })
                );
            } else {
                println!(
                    "fetched {} bytes in {:.2} s, kept sealed in the node's store (blake3 {}); \
                     download it with `bayspace data open {} --out PATH`",
                    p.bytes_done, p.seconds, p.blake3, p.agreement_id
                );
            }
            return Ok(ExitCode::SUCCESS);
        };
        if !held(chan.clone(), &agreement_id).await? {
            fetch_sealed(chan, &agreement_id, &mut progress).await?;
            progress = Progress::new(json);
        }
        let d = download(&args.client, &agreement_id, &out, &mut progress).await?;
        print_downloaded(&d, &agreement_id, json);
        Ok(ExitCode::SUCCESS)
    })
}
