//! Encrypted data release under an agreement, on `/bayspace/data/1`
//! (libp2p-stream, so no message ever holds the data whole).
//!
//! The provider checks everything again at the moment of release
//! ([`Transfers::check_release`]); only then does a fresh data key leave
//! the node, in the `TransferStartMessage`, over the admitted and
//! Noise-authenticated connection. The data follows as XChaCha20-Poly1305
//! STREAM segments ([`crate::crypto`]). The consumer verifies every segment
//! and the dataset's BLAKE3 hash from the signed descriptor, and only then
//! renames the file into place; a re-run resumes from the last verified
//! segment. See `docs/TRANSFER.md`.

mod fetch;
mod release;
pub mod wire;

pub use fetch::{FETCHES_TREE, FetchIntent};

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bayspace_contracts::agreement::AgreementId;
use bayspace_contracts::negotiation::Role;
use futures::StreamExt;
use libp2p::PeerId;
use serde_json::json;
use time::OffsetDateTime;
use tokio::sync::{Semaphore, mpsc};
use zeroize::Zeroizing;

use crate::admission::MembershipAdmission;
use crate::audit::{Actor, AuditEvent};
use crate::catalog::Catalog;
use crate::crypto::{self, DataKey, SealedReader, SegmentBuf, SegmentCipher, SegmentWriter};
use crate::limits::AuditBudget;
use crate::metrics::ReleaseOutcome;
use crate::negotiator::{AgreementRecord, Negotiator, NegotiatorError};
use crate::p2p::{self, protocol::DATA_PROTOCOL};
use crate::store::Store;
use crate::vault::{SealedSink, Vault, VaultError};
pub use release::ReleaseRefusal;
use wire::{Frame, FrameError, TransferRequest, TransferStart, read_frame, write_frame};

/// Transfers served at once; more wait for a slot.
pub const MAX_CONCURRENT: usize = 8;
/// Transfers served to one peer at once; more are refused as `busy`, so
/// one member cannot hold every slot.
pub const MAX_PER_PEER: usize = 4;
/// How long a peer has, once its stream is open, to send its request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one frame may take to be written or read while data flows: a
/// MiB segment at 17 KiB/s. A peer that drips slower is cut off.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the consumer has after the last segment to verify and sync the
/// whole file and confirm it.
pub const COMPLETION_TIMEOUT: Duration = Duration::from_secs(300);
/// Refusal entries one peer can cause in the audit log at once, and how
/// often it earns another: past that, refusals are counted into the next
/// entry instead of each being written.
pub const REFUSAL_BURST: u32 = 10;
pub const REFUSAL_REFILL: Duration = Duration::from_secs(6);
/// Segment buffers of one release (a MiB each): the worker seals into
/// those the network is not sending.
const AHEAD: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("no agreement {0} on this node")]
    UnknownAgreement(AgreementId),
    #[error("agreement {0} was made by this node as provider; fetch it on the consumer's node")]
    NotConsumer(AgreementId),
    #[error("agreement {id} was revoked by the provider: {reason}")]
    Revoked { id: AgreementId, reason: String },
    #[error("agreement {id} is for researcher {expected}, not {caller}")]
    WrongResearcher {
        id: AgreementId,
        expected: String,
        caller: String,
    },
    #[error("the provider refused the release: {0}")]
    Refused(String),
    #[error("the provider's start message does not match the signed descriptor: {0}")]
    BadStart(String),
    #[error("the provider sent {got} where {expected} was expected")]
    Unexpected { expected: String, got: String },
    #[error("cannot reach the provider {peer}: {reason}")]
    Unreachable { peer: String, reason: String },
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("agreement {0} is being fetched already; wait for that fetch to end")]
    InProgress(AgreementId),
    #[error(transparent)]
    Crypto(#[from] crypto::CryptoError),
    #[error("sealed storage: {0}")]
    Vault(#[from] VaultError),
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    /// Refused before a byte was written: the data would not fit.
    #[error("{0}")]
    DiskFull(#[source] crate::store::DiskFull),
    #[error("a transfer task failed: {0}")]
    Task(String),
    #[error("the transfer service is unusable after an earlier panic")]
    Poisoned,
    #[error(transparent)]
    Negotiator(#[from] NegotiatorError),
    #[error("catalog: {0}")]
    Catalog(#[from] crate::catalog::CatalogError),
    #[error("audit log: {0} (nothing was released)")]
    Audit(#[from] crate::audit::AuditError),
}

/// Runs `f`, which does store or file I/O (an fsync, say), on the blocking
/// pool, so that a slow disk holds up this transfer and not every task
/// on the runtime's worker threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, TransferError> + Send + 'static,
) -> Result<T, TransferError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| TransferError::Task(e.to_string()))?
}

/// `io` within `limit`, or [`FrameError::TimedOut`] naming `what`.
async fn deadline<T>(
    limit: Duration,
    what: &'static str,
    io: impl std::future::Future<Output = Result<T, FrameError>>,
) -> Result<T, FrameError> {
    tokio::time::timeout(limit, io)
        .await
        .map_err(|_| FrameError::TimedOut { what, after: limit })?
}

/// One of a peer's [`MAX_PER_PEER`] transfers, given back when dropped.
struct PeerSlot<'a> {
    counts: &'a Mutex<HashMap<PeerId, usize>>,
    peer: PeerId,
}

impl<'a> PeerSlot<'a> {
    fn take(counts: &'a Mutex<HashMap<PeerId, usize>>, peer: PeerId) -> Option<Self> {
        let mut map = counts.lock().ok()?;
        let n = map.entry(peer).or_default();
        if *n >= MAX_PER_PEER {
            return None;
        }
        *n += 1;
        Some(PeerSlot { counts, peer })
    }
}

impl Drop for PeerSlot<'_> {
    fn drop(&mut self) {
        if let Ok(mut map) = self.counts.lock()
            && let Some(n) = map.get_mut(&self.peer)
        {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.peer);
            }
        }
    }
}

/// How far a fetch has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
}

/// A completed fetch.
#[derive(Debug, Clone, PartialEq)]
pub struct FetchReport {
    pub agreement: AgreementId,
    /// The plaintext file, or the sealed copy in the node's store.
    pub path: PathBuf,
    pub sealed: bool,
    pub bytes: u64,
    /// Bytes taken over from an earlier, interrupted fetch.
    pub resumed_bytes: u64,
    pub seconds: f64,
    pub hash: String,
}

/// The release service of one node, both sides.
pub struct Transfers {
    negotiator: Arc<Negotiator>,
    catalog: Arc<Catalog>,
    admission: Arc<MembershipAdmission>,
    client: p2p::Client,
    vault: Arc<Vault>,
    store: Arc<dyn Store>,
    slots: Semaphore,
    /// Transfers being served to each peer now.
    per_peer: Mutex<HashMap<PeerId, usize>>,
    /// How many more refusals each peer may cause to be audited.
    refusal_budget: Mutex<AuditBudget>,
    /// Agreements being fetched now: a second fetch of one would write the
    /// same partial file.
    fetching: Mutex<HashSet<AgreementId>>,
    /// Free space kept on the disk a fetch writes to (bytes).
    disk_reserve: std::sync::atomic::AtomicU64,
    /// Release attempts being served now, by agreement.
    releasing: Mutex<HashMap<AgreementId, usize>>,
}

/// One release attempt being served, counted in
/// [`Transfers::releasing`] until dropped.
struct Attempt<'a> {
    set: &'a Mutex<HashMap<AgreementId, usize>>,
    id: AgreementId,
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if let Ok(mut m) = self.set.lock()
            && let Some(n) = m.get_mut(&self.id)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.id);
            }
        }
    }
}

/// Where fetched data goes.
#[derive(Debug, Clone, Copy)]
pub enum Destination<'a> {
    /// Decrypted into this file on the node's host.
    File(&'a Path),
    /// Kept sealed in the node's store ([`Vault`]), opened on demand.
    Sealed,
}

/// Removes an agreement from [`Transfers::fetching`] however the fetch ends.
struct FetchSlot<'a> {
    set: &'a Mutex<HashSet<AgreementId>>,
    id: AgreementId,
}

impl Drop for FetchSlot<'_> {
    fn drop(&mut self) {
        if let Ok(mut set) = self.set.lock() {
            set.remove(&self.id);
        }
    }
}

/// The two ways segments are stored as they arrive.
enum Sink {
    Plain(SegmentWriter),
    Sealed(SealedSink),
}

impl Sink {
    fn writer(&mut self) -> &mut SegmentWriter {
        match self {
            Sink::Plain(w) => w,
            Sink::Sealed(s) => &mut s.writer,
        }
    }
}

/// `n` segment buffers, waiting in a channel for whichever side of a
/// transfer pipeline fills them next; the side that empties one sends it
/// back. With only `n` buffers, sending one back never waits.
fn buffer_pool(n: usize) -> (mpsc::Sender<SegmentBuf>, mpsc::Receiver<SegmentBuf>) {
    let (tx, rx) = mpsc::channel(n);
    for _ in 0..n {
        // Cannot fail: the channel has room for every buffer and its
        // receiver is alive.
        let _ = tx.try_send(SegmentBuf::new());
    }
    (tx, rx)
}

/// What the checks established about a release that may go ahead.
struct Release {
    agreement: AgreementRecord,
    /// How the request starts, for the use count.
    start: crate::negotiator::ReleaseStart,
    path: PathBuf,
    size: u64,
    content_hash: bayspace_contracts::descriptor::Digest,
    assessment: bayspace_contracts::compliance::Assessment,
    personal: u64,
    sensitive: u64,
}

impl Transfers {
    pub fn new(
        negotiator: Arc<Negotiator>,
        catalog: Arc<Catalog>,
        admission: Arc<MembershipAdmission>,
        client: p2p::Client,
        vault: Arc<Vault>,
        store: Arc<dyn Store>,
    ) -> Arc<Transfers> {
        Arc::new(Transfers {
            negotiator,
            catalog,
            admission,
            client,
            vault,
            store,
            slots: Semaphore::new(MAX_CONCURRENT),
            per_peer: Mutex::new(HashMap::new()),
            refusal_budget: Mutex::new(AuditBudget::new(REFUSAL_BURST, REFUSAL_REFILL)),
            fetching: Mutex::new(HashSet::new()),
            disk_reserve: std::sync::atomic::AtomicU64::new(crate::store::DEFAULT_RESERVE_BYTES),
            releasing: Mutex::new(HashMap::new()),
        })
    }

    /// The free space a fetch leaves on its disk besides the data itself
    /// (`disk-reserve-mib` of the config).
    pub fn set_disk_reserve(&self, bytes: u64) {
        self.disk_reserve
            .store(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// Starts a download of the data this node keeps sealed for
    /// `agreement` to the client at `client` ([`Vault::download`]), from
    /// byte `offset`. An agreement the provider revoked releases nothing
    /// more, also not from the copy held here.
    pub fn download(
        &self,
        agreement: &AgreementId,
        researcher: Option<&str>,
        client: &str,
        offset: u64,
        now: OffsetDateTime,
    ) -> Result<crate::vault::Download, TransferError> {
        let (record, _) = self
            .negotiator
            .release_context(agreement)?
            .ok_or_else(|| TransferError::UnknownAgreement(agreement.clone()))?;
        if let Some(r) = &record.revoked {
            return Err(TransferError::Revoked {
                id: agreement.clone(),
                reason: r.reason.clone(),
            });
        }
        Ok(self
            .vault
            .download(agreement, researcher, client, offset, now)?)
    }

    pub fn vault(&self) -> &Arc<Vault> {
        &self.vault
    }

    // ----- provider -----

    /// Accept transfer streams until the swarm stops. Spawn once.
    ///
    /// Streams reach this point only on connections admission has opened
    /// (see `p2p::gate`); the admission check here is the second lock on
    /// the same door, made before anything is read.
    pub async fn serve(self: Arc<Self>) {
        let mut control = self.client.stream_control();
        let mut incoming = match control.accept(DATA_PROTOCOL) {
            Ok(i) => i,
            Err(e) => {
                tracing::error!("cannot accept transfer streams: {e}");
                return;
            }
        };
        while let Some((peer, stream)) = incoming.next().await {
            let this = self.clone();
            tokio::spawn(async move {
                if !matches!(this.client.admitted_from(peer).await, Ok(Some(_))) {
                    tracing::warn!(%peer, "transfer stream from a peer that is not admitted dropped unread");
                    return;
                }
                let Some(_mine) = PeerSlot::take(&this.per_peer, peer) else {
                    let reason = format!(
                        "{peer} has {MAX_PER_PEER} transfers in progress here; try again when one ends"
                    );
                    let _ = this.refuse(peer, stream, None, "busy", reason, None).await;
                    return;
                };
                let Ok(_slot) = this.slots.acquire().await else {
                    return;
                };
                match this.serve_one(peer, stream).await {
                    // Counted, with its reason, where it was refused.
                    Err(TransferError::Refused(reason)) => {
                        tracing::warn!(%peer, "transfer ended: {reason}");
                    }
                    Err(e) => {
                        crate::metrics::global().release(ReleaseOutcome::Failed, "error");
                        tracing::warn!(%peer, "transfer ended: {e}");
                    }
                    Ok(()) => {}
                }
            });
        }
    }

    async fn serve_one(
        &self,
        peer: PeerId,
        mut stream: libp2p::Stream,
    ) -> Result<(), TransferError> {
        let req = match deadline(
            REQUEST_TIMEOUT,
            "the TransferRequestMessage",
            read_frame(&mut stream),
        )
        .await
        {
            Ok(Frame::Request(r)) => r,
            Ok(other) => {
                let reason = format!("expected a TransferRequestMessage, got {}", other.kind());
                return self
                    .refuse(peer, stream, None, "unexpected-message", reason, None)
                    .await;
            }
            Err(e @ FrameError::TimedOut { .. }) => {
                return self
                    .refuse(peer, stream, None, "timed-out", e.to_string(), None)
                    .await;
            }
            Err(e) => {
                return self
                    .refuse(peer, stream, None, "malformed-request", e.to_string(), None)
                    .await;
            }
        };
        let now = OffsetDateTime::now_utc();
        let started = std::time::Instant::now();
        // Counted before anything is judged, so that of two requests from
        // segment 0 at once only one may continue a cut release.
        let (_attempt, restart_allowed) = {
            let mut m = self.releasing.lock().map_err(|_| TransferError::Poisoned)?;
            let n = m.entry(req.agreement.clone()).or_default();
            *n += 1;
            (
                Attempt {
                    set: &self.releasing,
                    id: req.agreement.clone(),
                },
                *n == 1,
            )
        };
        let release = match self.check_release(&peer, &req, restart_allowed, now).await {
            Ok(r) => r,
            Err(refusal) => {
                let (code, reason) = (refusal.code(), refusal.to_string());
                return self
                    .refuse(
                        peer,
                        stream,
                        Some(&req.agreement),
                        code,
                        reason,
                        Some(&req.researcher),
                    )
                    .await;
            }
        };
        let ag = release.agreement.signed.agreement.clone();
        let segments = crypto::segment_count(release.size)?;
        if req.from_segment > segments {
            let reason = format!(
                "segment {} asked for; the dataset has {segments}",
                req.from_segment
            );
            return self
                .refuse(
                    peer,
                    stream,
                    Some(&ag.id),
                    "no-such-segment",
                    reason,
                    Some(&req.researcher),
                )
                .await;
        }
        // A fresh key for every attempt, resumes included: the nonces are
        // fixed by the agreement and version, so a key is never reused.
        let key = DataKey::generate()?;
        let cipher = SegmentCipher::new(&key, ag.id.as_str(), ag.dataset_version);
        // Opened before the use is taken, so that a file this node cannot
        // read costs the consumer nothing.
        let mut reader = match SealedReader::open(&release.path, cipher, req.from_segment) {
            Ok(r) => r,
            Err(e) => {
                let reason = format!("the provider cannot read the data: {e}");
                return self
                    .refuse(
                        peer,
                        stream,
                        Some(&ag.id),
                        "provider-error",
                        reason,
                        Some(&req.researcher),
                    )
                    .await;
            }
        };
        // No audit, no key: the use is taken, audited and flushed first.
        let reserved = {
            let negotiator = self.negotiator.clone();
            let id = ag.id.clone();
            let details = json!({
                "consumer": peer.to_string(),
                "researcher": req.researcher,
                "from_segment": req.from_segment,
                "segments": segments,
                "personal": release.personal,
                "sensitive": release.sensitive,
            });
            let ledger = (
                release.assessment.clone(),
                release.personal,
                release.sensitive,
            );
            let (start, release_id) = (release.start, req.release);
            blocking(move || {
                Ok(negotiator.reserve_release(
                    &id,
                    Actor::Peer(peer.to_string()),
                    details,
                    ledger,
                    start,
                    release_id.as_ref(),
                    now,
                )?)
            })
            .await
        };
        match reserved {
            Ok(_) => {}
            Err(TransferError::Negotiator(e @ NegotiatorError::UsesExhausted { .. }))
            | Err(TransferError::Negotiator(e @ NegotiatorError::ForeignRelease { .. })) => {
                let refusal = match e {
                    NegotiatorError::UsesExhausted { id, limit } => {
                        ReleaseRefusal::UsesExhausted { id, limit }
                    }
                    NegotiatorError::ForeignRelease { id, release } => {
                        ReleaseRefusal::ForeignRelease { id, release }
                    }
                    other => return Err(other.into()),
                };
                let (code, reason) = (refusal.code(), refusal.to_string());
                return self
                    .refuse(
                        peer,
                        stream,
                        Some(&ag.id),
                        code,
                        reason,
                        Some(&req.researcher),
                    )
                    .await;
            }
            Err(e) => return Err(e),
        }
        let start = Frame::Start(TransferStart {
            key: Zeroizing::new(key.as_bytes().to_vec()),
            dataset_version: ag.dataset_version,
            size: release.size,
            segments,
            content_hash: release.content_hash,
            from_segment: req.from_segment,
        });
        deadline(
            FRAME_TIMEOUT,
            "the TransferStartMessage",
            write_frame(&mut stream, &start),
        )
        .await?;
        drop(start);
        // A blocking worker reads and seals up to `AHEAD` segments ahead of
        // the network, so sealing overlaps with sending. Its buffers come
        // back once sent, so a release allocates them once.
        let (full_tx, mut full) =
            mpsc::channel::<Result<(u32, bool, SegmentBuf), TransferError>>(AHEAD);
        let (free_tx, mut free) = buffer_pool(AHEAD);
        tokio::task::spawn_blocking(move || {
            // Ends when the sending side gives up (both channels close).
            while let Some(mut buf) = free.blocking_recv() {
                let Some(item) = reader.next_into(&mut buf) else {
                    break;
                };
                let failed = item.is_err();
                let item = item
                    .map(|(index, last)| (index, last, buf))
                    .map_err(Into::into);
                if full_tx.blocking_send(item).is_err() || failed {
                    break;
                }
            }
        });
        let mut sent = 0u32;
        let mut sent_bytes = 0u64;
        while let Some(item) = full.recv().await {
            let (index, last, buf) =
                match item {
                    Ok(segment) => segment,
                    // The provider failed before any data left: the use goes back.
                    Err(e) if sent == 0 => {
                        let negotiator = self.negotiator.clone();
                        let (id, reason) = (ag.id.clone(), e.to_string());
                        blocking(move || {
                            Ok(negotiator.give_back_release(
                                &id,
                                &reason,
                                OffsetDateTime::now_utc(),
                            )?)
                        })
                        .await?;
                        let _ = write_frame(
                            &mut stream,
                            &Frame::terminate("provider-error", e.to_string()),
                        )
                        .await;
                        return Err(e);
                    }
                    Err(e) => return Err(e),
                };
            deadline(
                FRAME_TIMEOUT,
                "a segment",
                wire::write_segment(&mut stream, index, last, buf.as_ref()),
            )
            .await?;
            sent += 1;
            sent_bytes += buf.as_ref().len() as u64;
            // Room for it: there are only `AHEAD` buffers.
            let _ = free_tx.try_send(buf);
        }
        // All of it has left: from now on only the same release id (a
        // bounded number of times) continues it from segment 0.
        {
            let negotiator = self.negotiator.clone();
            let (id, release_id) = (ag.id.clone(), req.release);
            blocking(move || Ok(negotiator.release_delivered(&id, release_id.as_ref())?)).await?;
        }
        let confirmed = deadline(
            COMPLETION_TIMEOUT,
            "the TransferCompletionMessage",
            read_frame(&mut stream),
        )
        .await?;
        match confirmed {
            Frame::Completion { hash } if hash == release.content_hash => {}
            Frame::Completion { hash } => {
                let reason = format!(
                    "the consumer computed {hash}, the dataset is {}",
                    release.content_hash
                );
                write_frame(&mut stream, &Frame::terminate("hash-mismatch", &reason)).await?;
                return Err(TransferError::Refused(reason));
            }
            Frame::Termination { reason, .. } => return Err(TransferError::Refused(reason)),
            other => {
                return Err(TransferError::Unexpected {
                    expected: "TransferCompletionMessage".into(),
                    got: other.kind().into(),
                });
            }
        }
        let completed = {
            let negotiator = self.negotiator.clone();
            let id = ag.id.clone();
            let details = json!({
                "role": "provider",
                "bytes": release.size,
                "from_segment": req.from_segment,
            });
            blocking(move || {
                Ok(negotiator.complete_release(
                    &id,
                    Actor::Peer(peer.to_string()),
                    details,
                    OffsetDateTime::now_utc(),
                )?)
            })
            .await?
        };
        tracing::info!(agreement = %ag.id, %peer, uses = completed.uses, "release completed");
        let metrics = crate::metrics::global();
        metrics.release(ReleaseOutcome::Completed, "none");
        metrics.transfer_done(Role::Provider, sent_bytes, started.elapsed());
        deadline(
            FRAME_TIMEOUT,
            "the acknowledgement",
            write_frame(&mut stream, &Frame::Done),
        )
        .await?;
        Ok(())
    }

    /// A `transfer-refused` entry, actor `peer`, written off the runtime.
    async fn audit_refused(
        &self,
        peer: PeerId,
        subjects: Vec<String>,
        details: serde_json::Value,
    ) -> Result<(), TransferError> {
        let audit = self.negotiator.audit_log().clone();
        blocking(move || {
            audit.append(
                Actor::Peer(peer.to_string()),
                AuditEvent::TransferRefused,
                subjects,
                details,
                OffsetDateTime::now_utc(),
            )?;
            Ok(())
        })
        .await
    }

    /// Refuses a request on `stream`: audited (within the peer's budget of
    /// refusal entries; the rest are counted into the next entry), then
    /// the termination with `code` is sent.
    async fn refuse(
        &self,
        peer: PeerId,
        mut stream: libp2p::Stream,
        agreement: Option<&AgreementId>,
        code: &'static str,
        reason: String,
        researcher: Option<&str>,
    ) -> Result<(), TransferError> {
        crate::metrics::global().release(ReleaseOutcome::Refused, code);
        let budget = self
            .refusal_budget
            .lock()
            .map_err(|_| TransferError::Poisoned)?
            .take(&peer, std::time::Instant::now());
        if let Some(suppressed) = budget {
            let subjects = agreement.map(|a| vec![a.to_string()]).unwrap_or_default();
            let mut details = json!({ "code": code, "reason": reason });
            if let Some(r) = researcher {
                details["researcher"] = r.into();
            }
            if suppressed > 0 {
                details["suppressed_before"] = suppressed.into();
            }
            self.audit_refused(peer, subjects, details).await?;
        } else {
            tracing::warn!(%peer, code, "transfer refused; over the peer's audit budget, counted only");
        }
        deadline(
            FRAME_TIMEOUT,
            "the termination",
            write_frame(&mut stream, &Frame::terminate(code, &reason)),
        )
        .await?;
        Err(TransferError::Refused(reason))
    }

    /// Every check of a release, at `now`; the first failure refuses.
    async fn check_release(
        &self,
        peer: &PeerId,
        req: &TransferRequest,
        restart_allowed: bool,
        now: OffsetDateTime,
    ) -> Result<Release, ReleaseRefusal> {
        let mut facts = self.release_facts(peer, req, now).await?;
        facts.restart_allowed = restart_allowed;
        release::judge(facts, peer, req, self.admission.anchors(), now)
    }
}
