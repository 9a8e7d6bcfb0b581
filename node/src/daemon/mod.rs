//! `bayspace run`: the daemon. Start-up loads and checks everything that can
//! be wrong in a node directory before anything listens, so a
//! misconfiguration is one clear error, not a node that runs but cannot
//! join. Then the p2p swarm, the event loop ([`events`]), the negotiator's
//! retry loop and the gRPC server run until SIGINT or SIGTERM, and shut down
//! in the reverse order.

mod bootstrap;
pub(crate) mod events;
mod metrics;
pub mod reload;
mod witness;

use std::collections::BTreeSet;
use std::num::NonZeroU64;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use anyhow::{Context, bail};
use bayspace_connector::admission::MembershipAdmission;
use bayspace_connector::audit::{AuditLog, PeerCheckpoints};
use bayspace_connector::catalog::Catalog;
use bayspace_connector::config::{CONFIG_FILE, NodeConfig};
use bayspace_connector::identity::{
    Anchor, Checks, MembershipCredential, NodeKey, PeerId, VerifyError,
};
use bayspace_connector::ledger::LedgerStore;
use bayspace_connector::negotiator::{Deps, Negotiator, Settings};
use bayspace_connector::p2p::{self, P2pConfig};
use bayspace_connector::store::{Reserved, SledStore, Store};
use bayspace_connector::transfers::Transfers;
use bayspace_connector::vault::Vault;
use bayspace_contracts::descriptor::{Institution, PublicKey};
use bayspace_ipv6::listen::ListenAddr;
use libp2p::Multiaddr;
use time::{Date, OffsetDateTime};
use tokio::sync::oneshot;

use crate::grpc;
use crate::researchers::Researchers;

/// Entries between two signed audit checkpoints.
pub const CHECKPOINT_EVERY: NonZeroU64 = NonZeroU64::MIN.saturating_add(63);

/// What the gRPC services and the event loop share.
pub struct NodeContext {
    pub config: NodeConfig,
    pub peer_id: PeerId,
    pub client: p2p::Client,
    pub audit: Arc<AuditLog>,
    pub admission: Arc<MembershipAdmission>,
    pub researchers: Researchers,
    pub started: Instant,
    pub catalog: Arc<Catalog>,
    pub key: Arc<NodeKey>,
    pub negotiator: Arc<Negotiator>,
    pub transfers: Arc<Transfers>,
    /// Other members' audit checkpoints, kept as witnesses.
    pub witness: Arc<PeerCheckpoints>,
    /// Where an administrator's exports go on this host (resolved).
    pub export_dir: PathBuf,
    /// `filing-holidays`, replaced on SIGHUP.
    pub holidays: Holidays,
    pub store: Arc<dyn Store>,
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

/// Everything loaded from the node directory before the node starts.
struct Loaded {
    config: NodeConfig,
    key: NodeKey,
    credential: MembershipCredential,
    anchors: Vec<ed25519_dalek::VerifyingKey>,
    listen: Vec<Multiaddr>,
    bootstrap: Vec<Multiaddr>,
    /// The API's certificate and key (PEM); `None` for a plaintext API on
    /// a loopback address.
    api_tls: Option<grpc::ApiIdentity>,
}

pub fn resolve(dir: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_owned()
    } else {
        dir.join(p)
    }
}

fn load(dir: &Path) -> anyhow::Result<Loaded> {
    let config_path = dir.join(CONFIG_FILE);
    if !config_path.exists() {
        bail!(
            "no {} in {}: create the node directory with `bayspace init --dir {}`",
            CONFIG_FILE,
            dir.display(),
            dir.display()
        );
    }
    let config = NodeConfig::load(&config_path)?;
    config
        .check_api()
        .with_context(|| format!("{}", config_path.display()))?;
    let api_tls = if config.grpc_tls {
        Some(grpc::ApiIdentity::load(
            &resolve(dir, &config.api_cert),
            &resolve(dir, &config.api_key),
        )?)
    } else {
        None
    };
    let key = NodeKey::load(&resolve(dir, &config.node_key))?;
    let peer_id = key.peer_id();

    let mut anchors = Vec::new();
    for a in &config.anchors {
        let path = resolve(dir, a);
        if !path.exists() {
            bail!(
                "no trust anchor at {}: put the data space operator's public key (authority.pub) there",
                path.display()
            );
        }
        anchors.push(Anchor::load(&path)?.key);
    }
    if anchors.is_empty() {
        bail!(
            "{}: `anchors` is empty; list the data space operator's public key file",
            config_path.display()
        );
    }

    let cred_path = resolve(dir, &config.credential);
    if !cred_path.exists() {
        bail!(
            "no membership credential at {}: send your PeerId {peer_id} and your IPv6 prefixes to the data space operator and put the credential they return there",
            cred_path.display()
        );
    }
    let credential = MembershipCredential::read(&cred_path)?;

    let mut listen = Vec::new();
    for l in &config.listen {
        ListenAddr::parse_multiaddr(l, false)
            .with_context(|| format!("{}: listen address `{l}`", config_path.display()))?;
        listen.push(
            l.parse::<Multiaddr>()
                .with_context(|| format!("{}: listen address `{l}`", config_path.display()))?,
        );
    }
    let mut bootstrap = Vec::new();
    for b in &config.bootstrap {
        let addr: Multiaddr = b
            .parse()
            .with_context(|| format!("{}: bootstrap address `{b}`", config_path.display()))?;
        if !matches!(
            addr.iter().last(),
            Some(libp2p::multiaddr::Protocol::P2p(_))
        ) {
            bail!(
                "{}: bootstrap address `{b}` must end in /p2p/<PeerId>",
                config_path.display()
            );
        }
        bootstrap.push(addr);
    }
    Ok(Loaded {
        config,
        key,
        credential,
        anchors,
        listen,
        bootstrap,
        api_tls,
    })
}

/// The fix for a node credential that does not verify.
fn credential_hint(e: &VerifyError, peer_id: &PeerId) -> String {
    match e {
        VerifyError::UnknownIssuer { .. } | VerifyError::BadSignature { .. } => {
            "check that `anchors` lists the public key of the operator who issued it".into()
        }
        VerifyError::Expired { .. } | VerifyError::NotYetValid { .. } => {
            format!("ask the data space operator for a credential for PeerId {peer_id} valid now")
        }
        VerifyError::Revoked { .. } => {
            "this node's membership was revoked; contact the data space operator".into()
        }
        VerifyError::PeerIdMismatch { .. } => format!(
            "it was issued for another node key; send this node's PeerId {peer_id} to the operator"
        ),
        _ => "contact the data space operator".into(),
    }
}

pub async fn run(dir: &Path) -> anyhow::Result<()> {
    let Loaded {
        config,
        key,
        credential,
        anchors,
        listen,
        bootstrap,
        api_tls,
    } = load(dir)?;
    let peer_id = key.peer_id();
    let admin_hash =
        blake3::Hash::from_hex(config.admin_token_blake3.trim()).with_context(|| {
            format!(
                "{}: `admin-token-blake3` is not a BLAKE3 hash in hex",
                dir.join(CONFIG_FILE).display()
            )
        })?;

    let data_dir = resolve(dir, &config.data_dir);
    let store: Arc<dyn Store> = Arc::new(Reserved::new(
        SledStore::open(&data_dir)?,
        &data_dir,
        config.disk_reserve_bytes(),
    ));
    upgrade_store(dir, &config, &key, &store)
        .with_context(|| format!("the store in {}", data_dir.display()))?;
    let admission = Arc::new(MembershipAdmission::open(
        &credential,
        anchors.clone(),
        store.clone(),
    )?);
    let revocations = admission.revocations()?;
    let checks = Checks {
        peer_id: Some(peer_id),
        revocations: revocations.as_ref(),
        ..Checks::default()
    };
    if let Err(e) = credential.verify(&anchors, OffsetDateTime::now_utc(), &checks) {
        bail!(
            "the membership credential at {} is not valid: {e}; {}",
            resolve(dir, &config.credential).display(),
            credential_hint(&e, &peer_id)
        );
    }
    // Agreements name the institution as its credential does, and the
    // catalog as the config does: they must be the same.
    let body = credential.body();
    if body.institution != config.institution || body.region != config.region {
        bail!(
            "{} names `{}` in {} but the membership credential at {} names `{}` in {}: make `institution` and `region` match the credential",
            dir.join(CONFIG_FILE).display(),
            config.institution,
            config.region,
            resolve(dir, &config.credential).display(),
            body.institution,
            body.region
        );
    }
    let audit = Arc::new(AuditLog::open(
        store.clone(),
        key.signing_key().clone(),
        CHECKPOINT_EVERY,
    )?);
    let witness = Arc::new(PeerCheckpoints::open(store.clone(), audit.clone())?);
    let researchers = Researchers::open(store.clone())?;
    let catalog = Arc::new(Catalog::open(store.clone())?);
    let ledger = Arc::new(LedgerStore::open(store.clone())?);
    let key = Arc::new(key);

    let (client, events, swarm_task) = p2p::spawn(
        key.libp2p_keypair(),
        admission.clone(),
        P2pConfig {
            tcp_security: config.p2p_security,
            ..P2pConfig::default()
        },
    )?;
    let negotiator = Negotiator::open(Deps {
        store: store.clone(),
        audit: audit.clone(),
        catalog: catalog.clone(),
        admission: admission.clone(),
        ledger,
        key: key.clone(),
        me: Institution {
            name: credential.body().institution.clone(),
            region: credential.body().region,
            peer_id: peer_id.to_string(),
            key: PublicKey::from(&key.verifying_key()),
        },
        client: client.clone(),
        settings: Settings::default(),
    })?;
    let storage_key = {
        let seed = zeroize::Zeroizing::new(key.signing_key().to_bytes());
        zeroize::Zeroizing::new(bayspace_connector::crypto::storage_key_from_seed(&seed))
    };
    let vault = Vault::open(
        resolve(dir, &config.sealed_dir),
        *storage_key,
        store.clone(),
        audit.clone(),
    )?;
    let transfers = Transfers::new(
        negotiator.clone(),
        catalog.clone(),
        admission.clone(),
        client.clone(),
        vault.clone(),
        store.clone(),
    );
    transfers.set_disk_reserve(config.disk_reserve_bytes());
    for addr in listen {
        let bound = client.listen_on(addr).await?;
        tracing::info!("listening on {bound}");
    }
    for addr in &bootstrap {
        match client.dial(addr.clone()).await {
            Ok(peer) => tracing::info!(%peer, "dialed bootstrap peer {addr}"),
            Err(e) => tracing::warn!("cannot reach bootstrap peer {addr}: {e}"),
        }
    }

    let ctx = Arc::new(NodeContext {
        peer_id,
        client: client.clone(),
        audit: audit.clone(),
        admission,
        researchers,
        started: Instant::now(),
        catalog,
        key,
        negotiator: negotiator.clone(),
        transfers: transfers.clone(),
        witness,
        export_dir: resolve(dir, &config.export_dir),
        holidays: Holidays::new(config.filing_holidays.clone()),
        store: store.clone(),
        config,
    });
    let event_task = tokio::spawn(events::run(ctx.clone(), events));
    let negotiator_task = tokio::spawn(negotiator.run());
    let resume_task = tokio::spawn(transfers.clone().resume_interrupted());
    let transfer_task = tokio::spawn(transfers.serve());
    let retention_task = tokio::spawn(vault.run());
    let redial_task = tokio::spawn(bootstrap::keep_connected(client.clone(), bootstrap));
    let witness_task = tokio::spawn(witness::announce(client.clone(), audit.clone(), peer_id));

    let (stop_grpc, grpc_stopped) = oneshot::channel::<()>();
    let grpc_task = grpc::serve(ctx.clone(), admin_hash, api_tls, async {
        let _ = grpc_stopped.await;
    })
    .await?;
    let hup = reload::watch()?;
    let reload_task = tokio::spawn(reload::run(hup, ctx.clone(), dir.to_owned()));
    let metrics_task = match ctx.config.metrics {
        Some(addr) => Some(metrics::serve(addr, ctx.clone(), data_dir.clone()).await?),
        None => None,
    };
    // systemd's Type=notify: ready once the API (and metrics) serve. A
    // no-op when not started by systemd.
    if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        tracing::warn!("cannot tell systemd the node is ready: {e}");
    }
    tracing::info!(%peer_id, institution = %ctx.config.institution, "node running");

    shutdown_signal().await?;
    tracing::info!("shutting down");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    let _ = stop_grpc.send(());
    match grpc_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!("gRPC server: {e}"),
        Err(e) => tracing::error!("gRPC server task: {e}"),
    }
    redial_task.abort();
    witness_task.abort();
    reload_task.abort();
    if let Some(t) = metrics_task {
        t.abort();
    }
    if let Err(e) = client.shutdown().await {
        tracing::warn!("p2p shutdown: {e}");
    }
    let _ = swarm_task.await;
    // The swarm is gone, so the event channel closes and the loop ends.
    let _ = event_task.await;
    // Every transition is flushed as it happens; what is cut short here is
    // only a retry, which resumes from the store at the next start.
    negotiator_task.abort();
    transfer_task.abort();
    retention_task.abort();
    resume_task.abort();
    let _ = negotiator_task.await;
    audit.checkpoint(OffsetDateTime::now_utc())?;
    store.flush()?;
    tracing::info!("stopped");
    Ok(())
}

/// Refuses a store of a newer format; migrates an older one after writing a
/// backup of it to `backups/` in the node directory.
fn upgrade_store(
    dir: &Path,
    config: &NodeConfig,
    key: &NodeKey,
    store: &Arc<dyn Store>,
) -> anyhow::Result<()> {
    use bayspace_connector::store::version::{self, Found};
    let from = match version::check(&**store)? {
        Found::Current | Found::New => return Ok(()),
        Found::Older(v) => v,
    };
    let backups = dir.join("backups");
    std::fs::create_dir_all(&backups)
        .with_context(|| format!("cannot create {}", backups.display()))?;
    std::fs::set_permissions(&backups, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot set the mode of {}", backups.display()))?;
    let now = OffsetDateTime::now_utc();
    let out = backups.join(format!(
        "pre-migration-v{from}-{}.bsbackup",
        now.unix_timestamp()
    ));
    let snap = {
        let audit = AuditLog::open(store.clone(), key.signing_key().clone(), CHECKPOINT_EVERY)?;
        bayspace_connector::backup::Snapshotted::take(&audit, &**store, now)?
    };
    crate::cli::backup::write_backup(dir, config, key, snap, None, &out)
        .context("cannot write the backup to take before migrating the store")?;
    version::migrate(&**store, from)?;
    tracing::info!(
        "store migrated from format version {from} to {}; the store as it was is backed up in {}",
        version::CURRENT,
        out.display()
    );
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
