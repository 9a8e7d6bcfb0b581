//! The node, built by the library. [`Node::open`] reads and checks a node
//! directory ([`NodeDir`]), opens the store, the audit log, the admission
//! state, the catalog, the negotiator, the vault and the transfers, starts
//! the swarm and the background tasks, and returns the handle the API
//! serves. [`Node::shutdown`] stops them in the reverse order.
//!
//! What happens on the network is decided here too: the event loop
//! ([`events`]) admits, ingests and relays; [`Node::publish`] is the one
//! sequence that puts a dataset in the catalog (onward-transfer rule,
//! store, audit, gossip).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use bayspace_connector::node::Node;
//!
//! let node = Node::open(std::path::Path::new("/var/lib/bayspace")).await?;
//! println!("{} is up as {}", node.config.institution, node.peer_id);
//! // ... serve `node` until asked to stop, or until the store fails:
//! tokio::select! {
//!     _ = tokio::signal::ctrl_c() => {}
//!     reason = node.failed() => eprintln!("{reason}"),
//! }
//! node.shutdown().await?;
//! # Ok(())
//! # }
//! ```

mod bootstrap;
pub mod events;
mod load;
mod witness;

use std::collections::BTreeSet;
use std::num::NonZeroU64;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bayspace_contracts::descriptor::{DatasetId, Institution, PublicKey, SignedDescriptor};
use bayspace_contracts::policy::{Policy, PolicyError};
use serde_json::json;
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use zeroize::Zeroizing;

use crate::admission::RevocationOutcome;
use crate::admission::{AdmissionError, MembershipAdmission};
use crate::audit::{Actor, AuditError, AuditEvent, AuditLog, PeerCheckpoints, WitnessError};
use crate::backup::{BackupError, Snapshotted};
use crate::catalog::{self, Catalog, CatalogError, NewDataset};
use crate::config::{ConfigError, NodeConfig};
use crate::identity::{FileError, KeyError, NodeKey, PeerId, RevocationBody, VerifyError};
use crate::ledger::{LedgerError, LedgerStore};
use crate::negotiator::{Deps, Negotiator, NegotiatorError, OnwardError, Settings};
use crate::p2p::{self, P2pConfig, P2pError, Topic};
use crate::random::RandomError;
use crate::researchers::{ResearcherError, Researchers};
use crate::store::version::{self, Found, VersionError};
use crate::store::{Reserved, SledStore, Store, StoreError};
use crate::transfers::Transfers;
use crate::vault::{Vault, VaultError};

pub use load::NodeDir;

/// Entries between two signed audit checkpoints.
pub const CHECKPOINT_EVERY: NonZeroU64 = NonZeroU64::MIN.saturating_add(63);

/// How often the store is asked whether it failed for good.
const HEALTH_TICK: Duration = Duration::from_secs(1);

/// Why a node directory cannot be opened. Each says what is wrong, where,
/// and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(
        "no config.toml in {}: create the node directory with `bayspace init --dir {}`",
        .dir.display(), .dir.display()
    )]
    NoConfig { dir: PathBuf },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{}: {source}", .config.display())]
    Api {
        config: PathBuf,
        #[source]
        source: ConfigError,
    },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(
        "no trust anchor at {}: put the data space operator's public key (authority.pub) there",
        .path.display()
    )]
    NoAnchor { path: PathBuf },
    #[error("{}: `anchors` is empty; list the data space operator's public key file", .config.display())]
    NoAnchors { config: PathBuf },
    #[error(
        "no membership credential at {}: send your PeerId {peer_id} and your IPv6 prefixes to \
         the data space operator and put the credential they return there",
        .path.display()
    )]
    NoCredential { path: PathBuf, peer_id: PeerId },
    #[error(transparent)]
    File(#[from] FileError),
    #[error("the membership credential at {} is not valid: {source}; {hint}", .path.display())]
    Credential {
        path: PathBuf,
        #[source]
        source: VerifyError,
        hint: String,
    },
    #[error(
        "{} names {config_names} but the membership credential at {} names {credential_names}: \
         make `institution` and `region` match the credential",
        .config.display(), .credential.display()
    )]
    Mismatch {
        config: PathBuf,
        config_names: String,
        credential: PathBuf,
        credential_names: String,
    },
    #[error("{}: {key} address `{addr}`: {reason}", .config.display())]
    Address {
        config: PathBuf,
        key: &'static str,
        addr: String,
        reason: String,
    },
    #[error("the store in {}: {source}", .path.display())]
    Store {
        path: PathBuf,
        #[source]
        source: StoreError,
    },
    #[error("the store in {}: {source}", .path.display())]
    Version {
        path: PathBuf,
        #[source]
        source: VersionError,
    },
    #[error("cannot write the backup to take before migrating the store: {0}")]
    Backup(#[source] BackupError),
    #[error("cannot create {}: {source}", .path.display())]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Admission(#[from] AdmissionError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    Witness(#[from] WitnessError),
    #[error(transparent)]
    Researchers(#[from] ResearcherError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Negotiator(#[from] NegotiatorError),
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// Boxed: the p2p error is large, and this one is rare.
    #[error(transparent)]
    P2p(Box<P2pError>),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: libp2p::Multiaddr,
        #[source]
        source: Box<P2pError>,
    },
}

/// Why a dataset was not published or withdrawn. Nothing was announced.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("the offer's policy: {0}")]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Onward(#[from] OnwardError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The catalog holds the new version, but it was neither audited nor
    /// announced.
    #[error("audit log: {0}")]
    Audit(#[from] AuditError),
    #[error(transparent)]
    Random(#[from] RandomError),
    #[error("the publishing task ended: {0}")]
    Task(String),
}

/// Why a revocation list was not put in force.
#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    #[error(
        "the node already holds revocation list {current}; publish a list with a higher sequence number"
    )]
    NotNewer { current: u64 },
    /// Not genuine or malformed ([`AdmissionError::Store`] and
    /// [`AdmissionError::Poisoned`] are the node's own failures).
    #[error(transparent)]
    Admission(#[from] AdmissionError),
    #[error("p2p engine: {0}")]
    P2p(#[from] P2pError),
}

/// What publishing a revocation list did.
#[derive(Debug)]
pub struct RevocationsPublished {
    pub body: RevocationBody,
    /// Members admitted before and not after (their PeerIds).
    pub disconnected: BTreeSet<String>,
}

/// Why the node did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ShutdownError {
    #[error("the last audit checkpoint: {0}")]
    Audit(#[from] AuditError),
    #[error("the last flush of the store: {0}")]
    Store(#[from] StoreError),
}

/// The background tasks, in the order they stop.
struct Tasks {
    redial: JoinHandle<()>,
    witness: JoinHandle<()>,
    health: JoinHandle<()>,
    swarm: JoinHandle<()>,
    events: JoinHandle<()>,
    negotiator: JoinHandle<()>,
    transfers: JoinHandle<()>,
    resume: JoinHandle<()>,
    retention: JoinHandle<()>,
}

/// A running node. Cheap to share (`Arc<Node>`); every part is usable
/// from any task.
pub struct Node {
    pub dir: PathBuf,
    pub config: NodeConfig,
    pub peer_id: PeerId,
    /// This node as agreements and descriptors name it.
    pub institution: Institution,
    pub key: Arc<NodeKey>,
    pub store: Arc<dyn Store>,
    pub audit: Arc<AuditLog>,
    pub admission: Arc<MembershipAdmission>,
    pub researchers: Researchers,
    pub catalog: Arc<Catalog>,
    pub negotiator: Arc<Negotiator>,
    pub transfers: Arc<Transfers>,
    /// Other members' audit checkpoints, kept as witnesses.
    pub witness: Arc<PeerCheckpoints>,
    pub client: p2p::Client,
    /// The store's directory (resolved).
    pub data_dir: PathBuf,
    /// Where an administrator's exports go on this host (resolved).
    pub export_dir: PathBuf,
    tasks: Mutex<Option<Tasks>>,
    failure: watch::Receiver<Option<String>>,
}

impl Node {
    /// [`NodeDir::load`], then [`Node::start`].
    pub async fn open(dir: &Path) -> Result<Arc<Node>, OpenError> {
        Node::start(NodeDir::load(dir)?).await
    }

    /// Opens what `loaded` names, listens, dials the bootstrap peers and
    /// starts the background tasks.
    pub async fn start(loaded: NodeDir) -> Result<Arc<Node>, OpenError> {
        let data_dir = loaded.path(&loaded.config.data_dir);
        let store_error = |source| OpenError::Store {
            path: data_dir.clone(),
            source,
        };
        let store: Arc<dyn Store> = Arc::new(Reserved::new(
            SledStore::open(&data_dir).map_err(store_error)?,
            &data_dir,
            loaded.config.disk_reserve_bytes(),
        ));
        upgrade_store(&loaded, &store, &data_dir)?;
        let admission = Arc::new(MembershipAdmission::open(
            &loaded.credential,
            loaded.anchors.clone(),
            store.clone(),
        )?);
        loaded.check_credential(admission.revocations()?.as_ref(), OffsetDateTime::now_utc())?;

        let NodeDir {
            dir,
            config,
            key,
            credential,
            listen,
            bootstrap,
            ..
        } = loaded;
        let peer_id = key.peer_id();
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
        let institution = Institution {
            name: credential.body().institution.clone(),
            region: credential.body().region,
            peer_id: peer_id.to_string(),
            key: PublicKey::from(&key.verifying_key()),
        };

        let (client, events, swarm) = p2p::spawn(
            key.libp2p_keypair(),
            admission.clone(),
            P2pConfig {
                tcp_security: config.p2p_security,
                ..P2pConfig::default()
            },
        )
        .map_err(|e| OpenError::P2p(Box::new(e)))?;
        let negotiator = Negotiator::open(Deps {
            store: store.clone(),
            audit: audit.clone(),
            catalog: catalog.clone(),
            admission: admission.clone(),
            ledger,
            key: key.clone(),
            me: institution.clone(),
            client: client.clone(),
            settings: Settings::default(),
        })?;
        let storage_key = {
            let seed = Zeroizing::new(key.signing_key().to_bytes());
            Zeroizing::new(crate::crypto::storage_key_from_seed(&seed))
        };
        let vault = Vault::open(
            crate::config::resolve(&dir, &config.sealed_dir),
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
            let bound =
                client
                    .listen_on(addr.clone())
                    .await
                    .map_err(|source| OpenError::Listen {
                        addr,
                        source: Box::new(source),
                    })?;
            tracing::info!("listening on {bound}");
        }
        for addr in &bootstrap {
            match client.dial(addr.clone()).await {
                Ok(peer) => tracing::info!(%peer, "dialed bootstrap peer {addr}"),
                Err(e) => tracing::warn!("cannot reach bootstrap peer {addr}: {e}"),
            }
        }

        let (failed, failure) = watch::channel(None);
        let node = Arc::new(Node {
            export_dir: crate::config::resolve(&dir, &config.export_dir),
            data_dir,
            dir,
            config,
            peer_id,
            institution,
            key,
            store: store.clone(),
            audit: audit.clone(),
            admission,
            researchers,
            catalog,
            negotiator: negotiator.clone(),
            transfers: transfers.clone(),
            witness,
            client: client.clone(),
            tasks: Mutex::new(None),
            failure,
        });
        let tasks = Tasks {
            events: tokio::spawn(events::run(node.clone(), events)),
            negotiator: tokio::spawn(negotiator.run()),
            resume: tokio::spawn(transfers.clone().resume_interrupted()),
            transfers: tokio::spawn(transfers.serve()),
            retention: tokio::spawn(vault.run()),
            redial: tokio::spawn(bootstrap::keep_connected(client.clone(), bootstrap)),
            witness: tokio::spawn(witness::announce(client, audit, peer_id)),
            health: tokio::spawn(watch_store(store, failed)),
            swarm,
        };
        *node.lock_tasks() = Some(tasks);
        Ok(node)
    }

    fn lock_tasks(&self) -> std::sync::MutexGuard<'_, Option<Tasks>> {
        // The guarded value is only ever replaced whole.
        self.tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Resolves when the store has failed in a way only reopening it can
    /// cure (sled keeps its first failed log write and refuses every later
    /// one). Nothing durable can happen any more: the caller should stop
    /// the node and let the service manager start it again, which reopens
    /// the store and resumes from what it holds.
    pub async fn failed(&self) -> String {
        let mut failure = self.failure.clone();
        loop {
            if let Some(reason) = failure.borrow_and_update().clone() {
                return reason;
            }
            if failure.changed().await.is_err() {
                // The watcher only ends when the node shuts down.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Stops the swarm and the background tasks, writes a last audit
    /// checkpoint and flushes the store. Call it once the API has stopped
    /// taking requests. A second call does nothing more than a flush.
    pub async fn shutdown(&self) -> Result<(), ShutdownError> {
        let tasks = self.lock_tasks().take();
        if let Some(t) = tasks {
            t.redial.abort();
            t.witness.abort();
            t.health.abort();
            if let Err(e) = self.client.shutdown().await {
                tracing::warn!("p2p shutdown: {e}");
            }
            let _ = t.swarm.await;
            // The swarm is gone, so the event channel closes and the loop
            // ends.
            let _ = t.events.await;
            // Every transition is flushed as it happens; what is cut short
            // here is only a retry, which resumes from the store at the
            // next start.
            t.negotiator.abort();
            t.transfers.abort();
            t.retention.abort();
            t.resume.abort();
            let _ = t.negotiator.await;
        }
        if self.store.failure().is_none() {
            self.audit.checkpoint(OffsetDateTime::now_utc())?;
        }
        self.store.flush()?;
        Ok(())
    }

    /// Puts an operator's revocation list in force: persisted, admitted
    /// peers checked again (a revoked one is disconnected), a revoked
    /// member's datasets dropped from the catalog; then gossiped to the
    /// members.
    pub async fn publish_revocations(
        &self,
        bytes: Vec<u8>,
    ) -> Result<RevocationsPublished, RevocationError> {
        let body = match self.admission.offer_revocations(&bytes)? {
            RevocationOutcome::Accepted(body) => body,
            RevocationOutcome::NotNewer { current } => {
                return Err(RevocationError::NotNewer { current });
            }
        };
        tracing::info!(
            seq = body.seq,
            revoked = body.revoked.len(),
            "revocation list published"
        );
        let before = self.admitted_ids().await?;
        if let Err(e) = self.client.publish(Topic::Revocations, bytes).await {
            // With no member connected there is nobody to tell now; members
            // receive the list from whoever publishes or relays it next.
            tracing::warn!("revocation list not gossiped: {e}");
        }
        self.client.recheck_all().await?;
        self.drop_revoked_publishers();
        let after = self.admitted_ids().await?;
        Ok(RevocationsPublished {
            body,
            disconnected: before.difference(&after).cloned().collect(),
        })
    }

    async fn admitted_ids(&self) -> Result<BTreeSet<String>, P2pError> {
        Ok(self
            .client
            .admitted_peers()
            .await?
            .into_iter()
            .map(|p| p.peer_id.to_string())
            .collect())
    }

    /// A revoked member's datasets leave the catalog with it.
    pub fn drop_revoked_publishers(&self) {
        for peer in self.admission.revoked_peers() {
            match self.catalog.remove_publisher(&peer.to_string()) {
                Ok(0) => {}
                Ok(n) => tracing::info!(%peer, "{n} dataset(s) of a revoked member removed"),
                Err(e) => tracing::error!(%peer, "cannot remove a revoked member's datasets: {e}"),
            }
        }
    }

    /// Publishes a dataset, or a new version of one: the onward-transfer
    /// rule, then the signed descriptor in the catalog, audited before any
    /// member hears of it, then gossip and the DHT.
    pub async fn publish(
        self: &Arc<Self>,
        actor: Actor,
        new: NewDataset,
    ) -> Result<SignedDescriptor, PublishError> {
        let policy = Policy::offer(new.purposes.clone())
            .recipients(new.recipient_regions.clone())
            .build()?;
        let random = crate::random::bytes::<16>()?;
        let node = Arc::clone(self);
        // Hashing a large file blocks: keep it off the async workers.
        let signed = tokio::task::spawn_blocking(move || {
            node.negotiator.check_onward(&new.path, &policy)?;
            node.catalog
                .publish(
                    new,
                    &node.key,
                    node.institution.clone(),
                    OffsetDateTime::now_utc(),
                    random,
                )
                .map_err(PublishError::from)
        })
        .await
        .map_err(|e| PublishError::Task(e.to_string()))??;
        self.audit_publication(actor, &signed, "publish")?;
        self.announce(&signed).await;
        Ok(signed)
    }

    /// Withdraws one of this node's datasets: a signed new version marked
    /// withdrawn, audited, then announced.
    pub async fn withdraw(
        &self,
        actor: Actor,
        id: &DatasetId,
    ) -> Result<SignedDescriptor, PublishError> {
        let signed = self
            .catalog
            .withdraw(id, &self.key, OffsetDateTime::now_utc())?;
        self.audit_publication(actor, &signed, "withdraw")?;
        self.announce(&signed).await;
        Ok(signed)
    }

    fn audit_publication(
        &self,
        actor: Actor,
        signed: &SignedDescriptor,
        action: &str,
    ) -> Result<(), AuditError> {
        let d = &signed.descriptor;
        self.audit
            .append(
                actor,
                AuditEvent::DatasetPublished,
                vec![d.id.to_string()],
                json!({ "action": action, "version": d.version, "title": d.title,
                        "content_hash": d.content_hash.to_string(), "withdrawn": d.withdrawn }),
                OffsetDateTime::now_utc(),
            )
            .map(|_| ())
    }

    /// Gossip the descriptor to the members and put it in the DHT. Neither
    /// is fatal: with no peers yet there is nobody to tell, and joiners
    /// sync the catalog from us when they are admitted.
    async fn announce(&self, signed: &SignedDescriptor) {
        let bytes = match catalog::encode(signed) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(dataset = %signed.descriptor.id, "cannot encode descriptor: {e}");
                return;
            }
        };
        if let Err(e) = self.client.publish(Topic::Descriptors, bytes.clone()).await {
            tracing::info!(dataset = %signed.descriptor.id, "descriptor not gossiped: {e}");
        }
        if let Err(e) = self
            .client
            .put_record(catalog::dht_key(&signed.descriptor.id), bytes)
            .await
        {
            tracing::info!(dataset = %signed.descriptor.id, "descriptor not put in the DHT: {e}");
        }
    }
}

/// Tells [`Node::failed`] once the store reports a failure it cannot
/// recover from.
async fn watch_store(store: Arc<dyn Store>, failed: watch::Sender<Option<String>>) {
    let mut tick = tokio::time::interval(HEALTH_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Some(reason) = store.failure() {
            tracing::error!("the store failed for good: {reason}");
            let _ = failed.send(Some(reason));
            return;
        }
    }
}

/// Refuses a store of a newer format; migrates an older one after writing
/// a backup of it to `backups/` in the node directory.
fn upgrade_store(
    loaded: &NodeDir,
    store: &Arc<dyn Store>,
    data_dir: &Path,
) -> Result<(), OpenError> {
    let version = |source| OpenError::Version {
        path: data_dir.to_owned(),
        source,
    };
    let from = match version::check(&**store).map_err(version)? {
        Found::Current | Found::New => return Ok(()),
        Found::Older(v) => v,
    };
    let backups = loaded.dir.join("backups");
    let dir_error = |source| OpenError::Dir {
        path: backups.clone(),
        source,
    };
    std::fs::create_dir_all(&backups).map_err(dir_error)?;
    std::fs::set_permissions(&backups, std::fs::Permissions::from_mode(0o700))
        .map_err(dir_error)?;
    let now = OffsetDateTime::now_utc();
    let out = backups.join(format!(
        "pre-migration-v{from}-{}.bsbackup",
        now.unix_timestamp()
    ));
    let snap = {
        let audit = AuditLog::open(
            store.clone(),
            loaded.key.signing_key().clone(),
            CHECKPOINT_EVERY,
        )?;
        Snapshotted::take(&audit, &**store, now).map_err(OpenError::Backup)?
    };
    crate::backup::write_node_backup(&loaded.dir, &loaded.config, &loaded.key, snap, None, &out)
        .map_err(OpenError::Backup)?;
    version::migrate(&**store, from).map_err(version)?;
    tracing::info!(
        "store migrated from format version {from} to {}; the store as it was is backed up in {}",
        version::CURRENT,
        out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use super::*;
    use crate::store::{MemStore, Tree, TreeName, WriteSet};

    /// A store that reports a failure once told to.
    struct Failing {
        inner: MemStore,
        failure: OnceLock<String>,
    }

    impl Store for Failing {
        fn tree(&self, name: TreeName) -> Result<Arc<dyn Tree>, StoreError> {
            self.inner.tree(name)
        }
        fn apply(&self, writes: &WriteSet) -> Result<(), StoreError> {
            self.inner.apply(writes)
        }
        fn flush(&self) -> Result<(), StoreError> {
            self.inner.flush()
        }
        fn snapshot(&self) -> Result<crate::store::Snapshot, StoreError> {
            self.inner.snapshot()
        }
        fn failure(&self) -> Option<String> {
            self.failure.get().cloned()
        }
    }

    #[tokio::test]
    async fn a_store_failure_is_told_to_the_node() {
        let store = Arc::new(Failing {
            inner: MemStore::new(),
            failure: OnceLock::new(),
        });
        let (failed, mut failure) = watch::channel(None);
        let task = tokio::spawn(watch_store(store.clone(), failed));
        tokio::time::sleep(HEALTH_TICK * 2).await;
        assert_eq!(*failure.borrow_and_update(), None);
        store
            .failure
            .set("flush: No space left on device".into())
            .unwrap();
        tokio::time::timeout(HEALTH_TICK * 5, failure.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            failure.borrow().as_deref(),
            Some("flush: No space left on device")
        );
        // The watcher's job is done once it has told.
        tokio::time::timeout(HEALTH_TICK * 2, task)
            .await
            .unwrap()
            .unwrap();
    }
}
