//! Contract negotiation between member nodes: the consumer's request, the
//! provider's checks and its administrator's decision, the agreement signed
//! by both, and its revocation.
//!
//! The pure state machine is `bayspace_contracts::negotiation`; this module
//! drives it with messages ([`wire`]), persistence and retries:
//! - every state change is written after its audit entry, and both are flushed
//!   before the message announcing it leaves the node or the message that
//!   caused it is answered;
//! - a message that must reach the peer waits in the outbox until the peer
//!   answers it, and is retried with back-off while the peer is unreachable,
//!   also after a restart;
//! - every message is idempotent: a duplicate is answered with the last
//!   message this side sent, a conflicting one is refused.
//!
//! See `docs/NEGOTIATION.md` for the message flow.

mod engine;
mod model;
mod outbox;
pub mod wire;

#[cfg(test)]
pub(crate) mod tests;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bayspace_contracts::agreement::{AgreementId, NegotiationId};
use bayspace_contracts::compliance::{Assessment, Blocker};
use bayspace_contracts::descriptor::{DatasetId, Institution, OfferId};
use bayspace_contracts::filing::FilingError;
use bayspace_contracts::negotiation::{Role, State};
use bayspace_contracts::policy::Purpose;
use serde_json::json;
use time::OffsetDateTime;
use tokio::sync::{Notify, Semaphore, broadcast};

use crate::admission::MembershipAdmission;
use crate::audit::{Actor, AuditError, AuditEvent, AuditLog};
use crate::catalog::{Catalog, CatalogError};
use crate::identity::NodeKey;
use crate::ledger::{LedgerError, LedgerStore};
use crate::limits::AuditBudget;
use crate::p2p;
use crate::store::{Store, StoreError, TreeName, TypedTree};

pub use model::{
    AgreementRecord, Counterparty, DatasetRecords, NegotiationRecord, OpenRelease, RecordsUpdate,
    ReleaseId, ReleaseStart, Requester, Revocation, Step, Viewer,
};
pub use wire::{ContractRequest, Message, WireError};

use outbox::Outgoing;

pub const NEGOTIATIONS_TREE: TreeName = TreeName::new("negotiations");
pub const AGREEMENTS_TREE: TreeName = TreeName::new("agreements");
pub const RECORDS_TREE: TreeName = TreeName::new("dataset-records");
pub const OUTBOX_TREE: TreeName = TreeName::new("negotiation-outbox");
/// Agreements whose filing package the administrator has exported, with
/// when: the metrics stop counting their filing as due from then on.
pub const FILINGS_EXPORTED_TREE: TreeName = TreeName::new("filings-exported");

/// How often one release may be resumed before a resume counts as a new
/// use: enough for a transfer that survives many restarts of either side,
/// few enough that "resuming" is no way around the use limit.
pub const MAX_RESUMES: u32 = 64;
/// How often one release, all of whose data had left, may be served again
/// from segment 0 under the same use and the same release id: a consumer
/// killed before it kept any of it asks once per restart. The bytes are
/// those it was sent under that use already, so a consumer lying about a
/// crash gains only copies of what it has; the bound keeps it from making
/// the provider send them without end.
pub const MAX_REDELIVERIES: u32 = 8;
/// Which agreement each release id was first used under (hex id →
/// agreement id), so that a release id cannot be carried over to another.
pub const RELEASE_IDS_TREE: TreeName = TreeName::new("release-ids");

/// Tunables, with production defaults.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Longest validity of an agreement; the offer's own end date, when
    /// earlier, wins.
    pub agreement_days: u32,
    /// Validity of the researcher credentials this node issues with its
    /// requests.
    pub credential_days: u32,
    /// First retry delay for an undelivered message; it doubles per attempt.
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// Messages being delivered at once.
    pub max_deliveries: usize,
    /// Messages being delivered to one peer at once by the retry loop:
    /// below the swarm's requests in flight per peer and protocol, so a
    /// backlog for one peer is sent as fast as it answers instead of
    /// running into that bound and being pushed back.
    pub max_deliveries_per_peer: usize,
    /// Requests from one member that may wait for this node's administrator
    /// at once; past it, new requests are refused until some are decided.
    /// Automatic offers are decided at once and never wait.
    pub max_pending_per_peer: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            agreement_days: 365,
            credential_days: 365,
            retry_initial: Duration::from_millis(250),
            retry_max: Duration::from_secs(30),
            max_deliveries: 32,
            max_deliveries_per_peer: 8,
            max_pending_per_peer: 1000,
        }
    }
}

/// What the negotiator works with; the node builds these at start-up.
pub struct Deps {
    pub store: Arc<dyn Store>,
    pub audit: Arc<AuditLog>,
    pub catalog: Arc<Catalog>,
    pub admission: Arc<MembershipAdmission>,
    pub ledger: Arc<LedgerStore>,
    pub key: Arc<NodeKey>,
    /// This institution as agreements name it.
    pub me: Institution,
    pub client: p2p::Client,
    pub settings: Settings,
}

/// A researcher's request, as the home node's API received it.
#[derive(Debug, Clone)]
pub struct NewRequest {
    pub dataset: DatasetId,
    /// Required when the dataset has more than one offer.
    pub offer: Option<OfferId>,
    pub purpose: Purpose,
    pub requester: Requester,
    /// An administrator acting as a researcher.
    pub as_admin: bool,
}

/// Why a negotiation operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum NegotiatorError {
    #[error("dataset {0} is not in this node's catalog; search for it first")]
    UnknownDataset(DatasetId),
    #[error("dataset {0} has been withdrawn by its publisher")]
    Withdrawn(DatasetId),
    #[error("dataset {0} is this node's own; request datasets of other members")]
    OwnDataset(DatasetId),
    #[error("dataset {0} is not published by this node")]
    NotOurDataset(DatasetId),
    #[error("dataset {dataset} has no offer {offer}; its offers: {offers}")]
    UnknownOffer {
        dataset: DatasetId,
        offer: OfferId,
        offers: String,
    },
    #[error("dataset {dataset} has several offers; choose one with --offer: {offers}")]
    OfferNeeded { dataset: DatasetId, offers: String },
    #[error("no negotiation {0}")]
    UnknownNegotiation(NegotiationId),
    #[error("no agreement {0}")]
    UnknownAgreement(AgreementId),
    #[error("negotiation {id} is the {role} side here; only the {needed} may {action}")]
    WrongRole {
        id: String,
        role: Role,
        needed: Role,
        action: &'static str,
    },
    #[error("negotiation {id} is {state}; only a REQUESTED one may be {action}")]
    NotPending {
        id: NegotiationId,
        state: State,
        action: &'static str,
    },
    #[error(
        "negotiation {id} cannot be approved while blockers remain: {}",
        list(blockers)
    )]
    Blocked {
        id: NegotiationId,
        blockers: Vec<Blocker>,
    },
    #[error("negotiation {id} cannot be approved: the usage policy refuses it now: {}", reasons.join("; "))]
    PolicyRefuses {
        id: NegotiationId,
        reasons: Vec<String>,
    },
    #[error("agreement {0} is already revoked")]
    AlreadyRevoked(AgreementId),
    #[error("agreement {id} allows {limit} release(s); all are used")]
    UsesExhausted { id: AgreementId, limit: u64 },
    #[error("release {release} was asked for under another agreement, not {id}")]
    ForeignRelease { id: AgreementId, release: ReleaseId },
    #[error("{field}: {reason}")]
    BadInput { field: &'static str, reason: String },
    #[error("filing: {0}")]
    Filing(#[from] FilingError),
    #[error("cannot issue the researcher credential: {0}")]
    Credential(String),
    #[error("cannot sign the agreement: {0}")]
    Sign(String),
    #[error(transparent)]
    Random(#[from] crate::random::RandomError),
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("audit log: {0} (nothing was done)")]
    Audit(#[from] AuditError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("catalog: {0}")]
    Catalog(#[from] CatalogError),
    #[error("ledger: {0}")]
    Ledger(#[from] LedgerError),
    #[error("an internal lock is poisoned")]
    Poisoned,
    #[error("a storage task failed: {0}")]
    Task(String),
}

fn list<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The negotiation engine of one node. Cheap to share: hold it in an `Arc`.
pub struct Negotiator {
    store: Arc<dyn Store>,
    negotiations: TypedTree<String, NegotiationRecord>,
    agreements: TypedTree<String, AgreementRecord>,
    records: TypedTree<String, DatasetRecords>,
    outbox: TypedTree<String, Outgoing>,
    release_ids: TypedTree<String, AgreementId>,
    audit: Arc<AuditLog>,
    catalog: Arc<Catalog>,
    admission: Arc<MembershipAdmission>,
    ledger: Arc<LedgerStore>,
    key: Arc<NodeKey>,
    me: Institution,
    client: p2p::Client,
    settings: Settings,
    /// Serialises read-modify-write of the records, so two messages of one
    /// negotiation never interleave. Held only around store work, never
    /// across a network round trip.
    write: Mutex<()>,
    changes: broadcast::Sender<NegotiationRecord>,
    wake: Notify,
    /// Outbox keys being delivered right now.
    delivering: Mutex<HashSet<String>>,
    /// Requests on the wire right now, by peer.
    in_flight: Mutex<HashMap<String, usize>>,
    /// Bounds the store work running on the blocking pool at once.
    blocking: Semaphore,
    /// Requests to this node waiting for its administrator, by requesting
    /// peer: what [`Settings::max_pending_per_peer`] is checked against.
    pending_by_peer: Mutex<HashMap<String, HashSet<String>>>,
    /// How many more quota refusals each peer may cause to be audited.
    refusal_budget: Mutex<AuditBudget>,
}

/// Message handlers running their store work (and its fsync) at once; the
/// write lock serialises them anyway, so more would only queue threads.
pub const MAX_BLOCKING: usize = 8;

impl Negotiator {
    pub fn open(deps: Deps) -> Result<Arc<Negotiator>, NegotiatorError> {
        let store = deps.store;
        let (changes, _) = broadcast::channel(256);
        let negotiations: TypedTree<String, NegotiationRecord> =
            TypedTree::open(&*store, NEGOTIATIONS_TREE)?;
        let mut pending_by_peer: HashMap<String, HashSet<String>> = HashMap::new();
        for r in negotiations.values(&[])? {
            if r.is_pending_approval() {
                pending_by_peer
                    .entry(r.counterparty.peer_id.clone())
                    .or_default()
                    .insert(r.id.to_string());
            }
        }
        Ok(Arc::new(Negotiator {
            negotiations,
            agreements: TypedTree::open(&*store, AGREEMENTS_TREE)?,
            records: TypedTree::open(&*store, RECORDS_TREE)?,
            outbox: TypedTree::open(&*store, OUTBOX_TREE)?,
            release_ids: TypedTree::open(&*store, RELEASE_IDS_TREE)?,
            store,
            audit: deps.audit,
            catalog: deps.catalog,
            admission: deps.admission,
            ledger: deps.ledger,
            key: deps.key,
            me: deps.me,
            client: deps.client,
            settings: deps.settings,
            write: Mutex::new(()),
            changes,
            wake: Notify::new(),
            delivering: Mutex::new(Default::default()),
            in_flight: Mutex::new(Default::default()),
            blocking: Semaphore::new(MAX_BLOCKING),
            pending_by_peer: Mutex::new(pending_by_peer),
            refusal_budget: Mutex::new(AuditBudget::new(
                crate::transfers::REFUSAL_BURST,
                crate::transfers::REFUSAL_REFILL,
            )),
        }))
    }

    /// Every stored negotiation change, as it happens. A slow receiver
    /// misses changes (and is told so) rather than holding the node up.
    pub fn subscribe(&self) -> broadcast::Receiver<NegotiationRecord> {
        self.changes.subscribe()
    }

    pub fn get(&self, id: &NegotiationId) -> Result<Option<NegotiationRecord>, NegotiatorError> {
        Ok(self.negotiations.get(&id.to_string())?)
    }

    /// The negotiations `viewer` may see, newest first.
    pub fn list(&self, viewer: &Viewer) -> Result<Vec<NegotiationRecord>, NegotiatorError> {
        let mut out: Vec<NegotiationRecord> = self
            .negotiations
            .values(&[])?
            .into_iter()
            .filter(|r| viewer.may_see(r))
            .collect();
        out.sort_by_key(|r| std::cmp::Reverse(r.requested_at));
        Ok(out)
    }

    /// Requests to this node waiting for an administrator, oldest first.
    pub fn pending(&self) -> Result<Vec<NegotiationRecord>, NegotiatorError> {
        let mut out: Vec<NegotiationRecord> = self
            .negotiations
            .values(&[])?
            .into_iter()
            .filter(NegotiationRecord::is_pending_approval)
            .collect();
        out.sort_by_key(|r| r.requested_at);
        Ok(out)
    }

    pub fn agreement(&self, id: &AgreementId) -> Result<Option<AgreementRecord>, NegotiatorError> {
        Ok(self.agreements.get(&id.to_string())?)
    }

    /// Notes that the filing package of `id` was exported (the node cannot
    /// see the filing itself; the export is the administrator's step toward
    /// it).
    pub fn note_filing_exported(
        &self,
        id: &AgreementId,
        at: OffsetDateTime,
    ) -> Result<(), NegotiatorError> {
        let tree: TypedTree<String, String> = TypedTree::open(&*self.store, FILINGS_EXPORTED_TREE)?;
        let when = at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        tree.insert(&id.to_string(), &when)?;
        Ok(())
    }

    pub fn filing_exported(&self, id: &AgreementId) -> Result<bool, NegotiatorError> {
        let tree: TypedTree<String, String> = TypedTree::open(&*self.store, FILINGS_EXPORTED_TREE)?;
        Ok(tree.get(&id.to_string())?.is_some())
    }

    pub fn agreements(&self) -> Result<Vec<AgreementRecord>, NegotiatorError> {
        let mut out = self.agreements.values(&[])?;
        out.sort_by_key(|a| std::cmp::Reverse(a.signed.agreement.created));
        Ok(out)
    }

    /// The records on file for one of this node's datasets.
    pub fn records(&self, dataset: &DatasetId) -> Result<DatasetRecords, NegotiatorError> {
        self.own_dataset(dataset)?;
        Ok(self.records.get(&dataset.to_string())?.unwrap_or_default())
    }

    /// This institution as agreements name it.
    pub fn institution(&self) -> &Institution {
        &self.me
    }

    /// Runs `f`, store work that flushes (an fsync) under the write lock,
    /// on the blocking pool, at most [`MAX_BLOCKING`] at once: a slow disk
    /// then stalls the messages waiting for it, not the runtime's worker
    /// threads and with them every peer.
    pub(crate) async fn off_runtime<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Arc<Self>) -> T + Send + 'static,
    ) -> Result<T, NegotiatorError> {
        let _permit = self
            .blocking
            .acquire()
            .await
            .map_err(|_| NegotiatorError::Poisoned)?;
        let this = self.clone();
        tokio::task::spawn_blocking(move || f(&this))
            .await
            .map_err(|e| NegotiatorError::Task(e.to_string()))
    }

    fn announce(&self, r: &NegotiationRecord) {
        // No receivers is the normal case.
        let _ = self.changes.send(r.clone());
    }
}

/// What the release path needs from the negotiator: the agreement, the
/// negotiation behind it, and the accounting of a completed release.
impl Negotiator {
    /// The agreement and, when this node keeps it, its negotiation.
    pub fn release_context(
        &self,
        id: &AgreementId,
    ) -> Result<Option<(AgreementRecord, Option<NegotiationRecord>)>, NegotiatorError> {
        let Some(a) = self.agreement(id)? else {
            return Ok(None);
        };
        let n = self.get(&a.signed.agreement.negotiation)?;
        Ok(Some((a, n)))
    }

    /// The agreement release id `release` was first used under, if any.
    pub fn release_owner(
        &self,
        release: &ReleaseId,
    ) -> Result<Option<AgreementId>, NegotiatorError> {
        Ok(self.release_ids.get(&release.to_string())?)
    }

    /// Takes one use of agreement `id` for a release whose key is about to
    /// leave the provider, and records it before the key does: the audit
    /// entry (`key-released`), the use and, for a new use, the individuals
    /// in the cross-border ledger, all flushed. A request that continues
    /// the release still open ([`OpenRelease::continued_by`]: a resume, a
    /// restart, the same `release` again) continues its use; anything else
    /// needs a use left under the limit. A `release` id first used under
    /// another agreement is refused.
    ///
    /// The check and the count are one step under the write lock, so
    /// requests racing each other cannot all pass the limit, and what the
    /// consumer later confirms or not changes nothing.
    #[allow(clippy::too_many_arguments)]
    pub fn reserve_release(
        &self,
        id: &AgreementId,
        actor: Actor,
        mut details: serde_json::Value,
        ledger: (Assessment, u64, u64),
        start: ReleaseStart,
        release: Option<&ReleaseId>,
        now: OffsetDateTime,
    ) -> Result<AgreementRecord, NegotiatorError> {
        self.change_agreement(id, actor, AuditEvent::KeyReleased, now, |a| {
            if let Some(r) = release {
                if let Some(owner) = self.release_ids.get(&r.to_string())?
                    && owner != *id
                {
                    return Err(NegotiatorError::ForeignRelease {
                        id: id.clone(),
                        release: *r,
                    });
                }
                details["release"] = r.to_string().into();
            }
            let mut redelivery = false;
            let continues = match &mut a.open_release {
                Some(open) if open.continued_by(start, release) => {
                    open.resumes += 1;
                    if start == ReleaseStart::Restart && open.delivered {
                        open.redeliveries += 1;
                        redelivery = true;
                    }
                    true
                }
                _ => false,
            };
            if !continues {
                if let Some(limit) = a.signed.agreement.constraints.use_limit()
                    && a.uses >= limit
                {
                    return Err(NegotiatorError::UsesExhausted {
                        id: id.clone(),
                        limit,
                    });
                }
                a.uses = a.uses.saturating_add(1);
                a.open_release = Some(OpenRelease {
                    reserved_at: now,
                    resumes: 0,
                    delivered: false,
                    release: release.copied(),
                    redeliveries: 0,
                });
                // Flushed with the use.
                if let Some(r) = release {
                    self.release_ids.insert(&r.to_string(), id)?;
                }
            }
            details["uses"] = a.uses.into();
            details["resumed"] = continues.into();
            if redelivery {
                details["redelivery"] = true.into();
            }
            Ok((details, (!continues).then_some(ledger)))
        })
    }

    /// Gives back the use [`reserve_release`](Self::reserve_release) took,
    /// when the provider failed before any data left. The cross-border
    /// ledger keeps its count: over-counting there errs on the side of the
    /// stricter route.
    pub fn give_back_release(
        &self,
        id: &AgreementId,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<AgreementRecord, NegotiatorError> {
        self.change_agreement(id, Actor::Node, AuditEvent::TransferRefused, now, |a| {
            a.uses = a.uses.saturating_sub(1);
            a.open_release = None;
            let details = json!({
                "code": "provider-error",
                "reason": reason,
                "use_returned": true,
                "uses": a.uses,
            });
            Ok((details, None))
        })
    }

    /// Every segment of the open release of `id` has left this node: from
    /// now on a request from segment 0 continues it only under its own
    /// release id, and at most [`MAX_REDELIVERIES`] times (see
    /// [`OpenRelease::continued_by`]). `release` is the id the attempt was
    /// served under: a release opened since under another id is not
    /// touched. Flushed, so a restart does not forget it.
    pub fn release_delivered(
        &self,
        id: &AgreementId,
        release: Option<&ReleaseId>,
    ) -> Result<(), NegotiatorError> {
        let _w = self.lock()?;
        let key = id.to_string();
        if let Some(mut a) = self.agreements.get(&key)?
            && let Some(open) = a.open_release.as_mut()
            && !open.delivered
            && (release.is_none() || open.release.as_ref() == release)
        {
            open.delivered = true;
            self.agreements.insert(&key, &a)?;
            self.store.flush()?;
        }
        Ok(())
    }

    /// The consumer confirmed the data of the open release: audited, and
    /// the release closed. Its use was counted when the key left.
    pub fn complete_release(
        &self,
        id: &AgreementId,
        actor: Actor,
        details: serde_json::Value,
        now: OffsetDateTime,
    ) -> Result<AgreementRecord, NegotiatorError> {
        self.change_agreement(id, actor, AuditEvent::TransferCompleted, now, |a| {
            a.open_release = None;
            Ok((details, None))
        })
    }

    /// The consumer's account of data received under agreement `id`, once
    /// it has verified and before it is handed over: audited, and one more
    /// use on this side.
    pub fn count_received(
        &self,
        id: &AgreementId,
        details: serde_json::Value,
        now: OffsetDateTime,
    ) -> Result<AgreementRecord, NegotiatorError> {
        self.change_agreement(id, Actor::Node, AuditEvent::TransferCompleted, now, |a| {
            a.uses = a.uses.saturating_add(1);
            Ok((details, None))
        })
    }

    /// One change of an agreement's accounting under the write lock: the
    /// audit entry first, then the record and any ledger line, all flushed
    /// before this returns. `change` gives the entry's details, and the
    /// (assessment, personal, sensitive) to add to the ledger, if any.
    fn change_agreement(
        &self,
        id: &AgreementId,
        actor: Actor,
        event: AuditEvent,
        now: OffsetDateTime,
        change: impl FnOnce(
            &mut AgreementRecord,
        ) -> Result<
            (serde_json::Value, Option<(Assessment, u64, u64)>),
            NegotiatorError,
        >,
    ) -> Result<AgreementRecord, NegotiatorError> {
        let _w = self.lock()?;
        let mut a = self
            .agreements
            .get(&id.to_string())?
            .ok_or_else(|| NegotiatorError::UnknownAgreement(id.clone()))?;
        let (details, ledger) = change(&mut a)?;
        self.audit.append_unflushed(
            actor,
            event,
            vec![id.to_string(), a.signed.agreement.dataset.to_string()],
            details,
            now,
        )?;
        self.agreements.insert(&id.to_string(), &a)?;
        if let Some((assessment, personal, sensitive)) = ledger {
            self.ledger.record(
                now,
                assessment.route,
                assessment.exemption,
                personal,
                sensitive,
            )?;
        }
        self.store.flush()?;
        Ok(a)
    }

    /// The assessment of a release of `d` to `recipient` now, with today's
    /// records and ledger.
    pub fn assess_release(
        &self,
        d: &bayspace_contracts::descriptor::DatasetDescriptor,
        recipient: bayspace_contracts::region::Region,
        now: time::OffsetDateTime,
    ) -> Result<bayspace_contracts::compliance::Assessment, NegotiatorError> {
        self.assess_for(d, recipient, now).map(|a| a.assessment)
    }

    pub fn audit_log(&self) -> &Arc<AuditLog> {
        &self.audit
    }
}

/// Why data may not be published as offered.
#[derive(Debug, thiserror::Error)]
pub enum OnwardError {
    #[error(
        "{} is the data of dataset {dataset} received under agreement {agreement}, whose rule \
         no-onward-transfer-outside-gba forbids offering it to recipients outside the Greater \
         Bay Area; restrict --recipient-region to GBA regions (e.g. `gba`)",
        .path.display()
    )]
    Forbidden {
        path: std::path::PathBuf,
        dataset: DatasetId,
        agreement: AgreementId,
    },
    #[error("{}: {source}", .path.display())]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Negotiator(#[from] NegotiatorError),
}

pub const RECEIVED_TREE: TreeName = TreeName::new("received-data");

/// Data this node received under an agreement, by content hash: what
/// decides whether it may be offered onward.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceivedData {
    pub agreement: AgreementId,
    pub dataset: DatasetId,
    /// The agreement forbids onward transfer outside the GBA (its
    /// obligation or its policy).
    pub no_onward_outside_gba: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub at: time::OffsetDateTime,
}

impl Negotiator {
    fn received_tree(&self) -> Result<TypedTree<String, ReceivedData>, NegotiatorError> {
        Ok(TypedTree::open(&*self.store, RECEIVED_TREE)?)
    }

    /// Remember that data with this BLAKE3 hash came under `agreement`.
    pub fn note_received(
        &self,
        hash: &bayspace_contracts::descriptor::Digest,
        agreement: &bayspace_contracts::agreement::Agreement,
        now: time::OffsetDateTime,
    ) -> Result<(), NegotiatorError> {
        let onward = agreement
            .obligations
            .contains(&bayspace_contracts::compliance::Obligation::NoOnwardTransferOutsideGba)
            || agreement.constraints.forbids_onward_outside_gba();
        self.received_tree()?.insert(
            &hash.to_string(),
            &ReceivedData {
                agreement: agreement.id.clone(),
                dataset: agreement.dataset.clone(),
                no_onward_outside_gba: onward,
                at: now,
            },
        )?;
        self.store.flush()?;
        Ok(())
    }

    /// Whether any data was received under an agreement (so publications
    /// need the onward-transfer check at all).
    pub fn has_received(&self) -> Result<bool, NegotiatorError> {
        Ok(!self.received_tree()?.is_empty())
    }

    /// The onward-transfer rule at publication: data received under an
    /// agreement that forbids onward transfer outside the GBA cannot be
    /// offered under a policy that admits recipients outside it. The file
    /// is read and hashed only when this node has received data at all and
    /// the policy reaches outside the GBA. Blocking: call it off the
    /// runtime.
    pub fn check_onward(
        &self,
        path: &std::path::Path,
        policy: &bayspace_contracts::policy::Policy,
    ) -> Result<(), OnwardError> {
        if !policy.allows_recipients_outside_gba() || !self.has_received()? {
            return Ok(());
        }
        let read = |source| OnwardError::Read {
            path: path.to_owned(),
            source,
        };
        let mut h = blake3::Hasher::new();
        h.update_reader(std::fs::File::open(path).map_err(read)?)
            .map_err(read)?;
        let digest = bayspace_contracts::descriptor::Digest(*h.finalize().as_bytes());
        match self.onward_restriction(&digest)? {
            None => Ok(()),
            Some(r) => Err(OnwardError::Forbidden {
                path: path.to_owned(),
                dataset: r.dataset,
                agreement: r.agreement,
            }),
        }
    }

    /// The agreement that forbids offering data with this hash to
    /// recipients outside the GBA, if any.
    pub fn onward_restriction(
        &self,
        hash: &bayspace_contracts::descriptor::Digest,
    ) -> Result<Option<ReceivedData>, NegotiatorError> {
        Ok(self
            .received_tree()?
            .get(&hash.to_string())?
            .filter(|r| r.no_onward_outside_gba))
    }
}
