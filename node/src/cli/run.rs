//! `bayspace run`: start the daemon with its logging.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The node directory made by `bayspace init`.
    #[arg(long)]
    dir: PathBuf,
    /// Log lines for people or for a log collector (one JSON object a line).
    /// The level is set with RUST_LOG (default `info`).
    #[arg(long, value_enum, default_value = "human")]
    log_format: LogFormat,
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    }
    .map_err(|e| anyhow::anyhow!("cannot start logging: {e}"))?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(crate::daemon::run(&args.dir))?;
    Ok(ExitCode::SUCCESS)
}
