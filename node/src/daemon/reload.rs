//! SIGHUP: the node takes up a new revocation list (`revocations.json` in
//! the node directory, as the data space operator sends it) and the
//! `filing-holidays` of `config.toml`, without a restart. Other settings
//! need one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bayspace_connector::config::{CONFIG_FILE, NodeConfig};
use bayspace_connector::node::RevocationError;
use tokio::signal::unix::{Signal, SignalKind, signal};

use super::NodeContext;

/// Where an operator puts a new revocation list for the node to load on
/// SIGHUP.
pub const REVOCATIONS_FILE: &str = "revocations.json";

/// Installed before the node reports itself ready: SIGHUP's default action
/// would end the process.
pub fn watch() -> anyhow::Result<Signal> {
    Ok(signal(SignalKind::hangup())?)
}

pub async fn run(mut hup: Signal, ctx: Arc<NodeContext>, dir: PathBuf) {
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP received: reloading filing-holidays and the revocation list");
        reload(&ctx, &dir).await;
    }
}

async fn reload(ctx: &Arc<NodeContext>, dir: &Path) {
    let config_path = dir.join(CONFIG_FILE);
    match NodeConfig::load(&config_path) {
        Ok(config) => {
            let days = config.filing_holidays.len();
            ctx.holidays.set(config.filing_holidays);
            tracing::info!(
                "filing-holidays reloaded from {}: {days} days",
                config_path.display()
            );
        }
        Err(e) => tracing::warn!("filing-holidays not reloaded, the old ones stay: {e}"),
    }
    let path = dir.join(REVOCATIONS_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            tracing::warn!("cannot read {}: {e}", path.display());
            return;
        }
    };
    match ctx.node.publish_revocations(bytes).await {
        Ok(published) => tracing::info!(
            seq = published.body.seq,
            revoked = published.body.revoked.len(),
            disconnected = published.disconnected.len(),
            "revocation list loaded from {}",
            path.display()
        ),
        Err(RevocationError::NotNewer { current }) => tracing::info!(
            "{} is not newer than the list in force ({current}); nothing changed",
            path.display()
        ),
        Err(e) => tracing::warn!("{} refused: {e}", path.display()),
    }
}
