//! `bayspace run`: the daemon. The connector builds the node
//! ([`Node::open`] checks everything that can be wrong in a node directory
//! before anything listens); this serves it: the gRPC API and the web
//! console, metrics, SIGHUP reloads, until SIGINT or SIGTERM, or until the
//! store fails for good, and shuts down in the reverse order.

mod metrics;
pub mod reload;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use anyhow::Context;
use bayspace_connector::config::{CONFIG_FILE, resolve};
use bayspace_connector::node::{Node, NodeDir};
use time::Date;
use tokio::sync::oneshot;

use crate::grpc;

/// What the gRPC services and the console share: the node, and what only
/// serving needs.
pub struct NodeContext {
    pub node: Arc<Node>,
    pub started: Instant,
    /// `filing-holidays`, replaced on SIGHUP.
    pub holidays: Holidays,
}

impl NodeContext {
    pub fn holidays(&self) -> Arc<BTreeSet<Date>> {
        self.holidays.get()
    }
}

/// The filing holidays in force; a reload swaps the whole set.
#[derive(Clone, Default)]
pub struct Holidays(Arc<RwLock<Arc<BTreeSet<Date>>>>);

impl Holidays {
    pub fn new(days: BTreeSet<Date>) -> Self {
        Holidays(Arc::new(RwLock::new(Arc::new(days))))
    }

    pub fn get(&self) -> Arc<BTreeSet<Date>> {
        match self.0.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn set(&self, days: BTreeSet<Date>) {
        let days = Arc::new(days);
        match self.0.write() {
            Ok(mut g) => *g = days,
            Err(poisoned) => *poisoned.into_inner() = days,
        }
    }
}

pub async fn run(dir: &Path) -> anyhow::Result<()> {
    let loaded = NodeDir::load(dir)?;
    let config_path = dir.join(CONFIG_FILE);
    let admin_hash =
        blake3::Hash::from_hex(loaded.config.admin_token_blake3.trim()).with_context(|| {
            format!(
                "{}: `admin-token-blake3` is not a BLAKE3 hash in hex",
                config_path.display()
            )
        })?;
    // Checked before anything is opened: a node whose API cannot serve
    // must not join the network.
    let api_tls = if loaded.config.grpc_tls {
        Some(grpc::ApiIdentity::load(
            &resolve(dir, &loaded.config.api_cert),
            &resolve(dir, &loaded.config.api_key),
        )?)
    } else {
        None
    };
    let node = Node::start(loaded).await?;
    let ctx = Arc::new(NodeContext {
        holidays: Holidays::new(node.config.filing_holidays.clone()),
        node: node.clone(),
        started: Instant::now(),
    });

    let (stop_grpc, grpc_stopped) = oneshot::channel::<()>();
    let grpc_task = grpc::serve(ctx.clone(), admin_hash, api_tls, async {
        let _ = grpc_stopped.await;
    })
    .await?;
    let hup = reload::watch()?;
    let reload_task = tokio::spawn(reload::run(hup, ctx.clone(), dir.to_owned()));
    let metrics_task = match node.config.metrics {
        Some(addr) => Some(metrics::serve(addr, ctx.clone(), node.data_dir.clone()).await?),
        None => None,
    };
    // systemd's Type=notify: ready once the API (and metrics) serve. A
    // no-op when not started by systemd.
    if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        tracing::warn!("cannot tell systemd the node is ready: {e}");
    }
    tracing::info!(peer_id = %node.peer_id, institution = %node.config.institution, "node running");

    let failure = tokio::select! {
        signal = shutdown_signal() => { signal?; None }
        reason = node.failed() => Some(reason),
    };
    tracing::info!("shutting down");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    let _ = stop_grpc.send(());
    match grpc_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!("gRPC server: {e}"),
        Err(e) => tracing::error!("gRPC server task: {e}"),
    }
    reload_task.abort();
    if let Some(t) = metrics_task {
        t.abort();
    }
    let stopped = node.shutdown().await;
    if let Some(reason) = failure {
        // Exiting with an error lets the service manager start the node
        // again, which reopens the store: everything acknowledged was
        // flushed before it was acknowledged.
        anyhow::bail!(
            "the store in {} failed and cannot be written until it is opened again ({reason}); \
             the node stops so that it is restarted",
            node.data_dir.display()
        );
    }
    stopped?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    Ok(())
}
