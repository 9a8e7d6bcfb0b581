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

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bayspace_contracts::agreement::AgreementId;
use futures::StreamExt;
use libp2p::PeerId;
use serde_json::json;
use time::OffsetDateTime;
use tokio::sync::{Semaphore, mpsc};

use crate::admission::MembershipAdmission;
use crate::audit::{Actor, AuditEvent};
use crate::catalog::Catalog;
use crate::crypto::{self, DataKey, SealedReader, SegmentBuf, SegmentCipher, SegmentWriter};
use crate::negotiator::{AgreementRecord, Negotiator, NegotiatorError};
use crate::p2p::{self, protocol::DATA_PROTOCOL};
use crate::store::Store;
use crate::vault::{SealedSink, Vault, VaultError};
pub use release::ReleaseRefusal;
use wire::{Frame, FrameError, TransferRequest, TransferStart, read_frame, write_frame};

/// Transfers served at once; more wait for a slot.
const MAX_CONCURRENT: usize = 8;
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
    /// Agreements being fetched now: a second fetch of one would write the
    /// same partial file.
    fetching: Mutex<HashSet<AgreementId>>,
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
            fetching: Mutex::new(HashSet::new()),
        })
    }

    pub fn vault(&self) -> &Arc<Vault> {
        &self.vault
    }

    // ----- provider -----

    /// Accept transfer streams until the swarm stops. Spawn once.
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
                let Ok(_slot) = this.slots.acquire().await else {
                    return;
                };
                if let Err(e) = this.serve_one(peer, stream).await {
                    tracing::warn!(%peer, "transfer ended: {e}");
                }
            });
        }
    }

    async fn serve_one(
        &self,
        peer: PeerId,
        mut stream: libp2p::Stream,
    ) -> Result<(), TransferError> {
        let req = match read_frame(&mut stream).await? {
            Frame::Request(r) => r,
            other => {
                let reason = format!("expected a TransferRequestMessage, got {}", other.kind());
                write_frame(
                    &mut stream,
                    &Frame::terminate("unexpected-message", &reason),
                )
                .await?;
                return Err(TransferError::Refused(reason));
            }
        };
        let now = OffsetDateTime::now_utc();
        let audit = self.negotiator.audit_log().clone();
        let release = match self.check_release(&peer, &req, now).await {
            Ok(r) => r,
            Err(refusal) => {
                let reason = refusal.to_string();
                audit.append(
                    Actor::Peer(peer.to_string()),
                    AuditEvent::TransferRefused,
                    vec![req.agreement.to_string()],
                    json!({
                        "code": refusal.code(),
                        "reason": reason,
                        "researcher": req.researcher,
                    }),
                    now,
                )?;
                write_frame(&mut stream, &Frame::terminate(refusal.code(), &reason)).await?;
                return Err(TransferError::Refused(reason));
            }
        };
        let ag = &release.agreement.signed.agreement;
        let key = DataKey::generate()?;
        let segments = crypto::segment_count(release.size)?;
        if req.from_segment > segments {
            let reason = format!(
                "segment {} asked for; the dataset has {segments}",
                req.from_segment
            );
            write_frame(&mut stream, &Frame::terminate("no-such-segment", &reason)).await?;
            return Err(TransferError::Refused(reason));
        }
        // No audit, no key.
        audit.append(
            Actor::Node,
            AuditEvent::KeyReleased,
            vec![ag.id.to_string(), ag.dataset.to_string()],
            json!({
                "consumer": peer.to_string(),
                "researcher": req.researcher,
                "from_segment": req.from_segment,
                "segments": segments,
            }),
            now,
        )?;
        write_frame(
            &mut stream,
            &Frame::Start(TransferStart {
                key: key.as_bytes().to_vec(),
                dataset_version: ag.dataset_version,
                size: release.size,
                segments,
                content_hash: release.content_hash,
                from_segment: req.from_segment,
            }),
        )
        .await?;
        // A fresh key for every attempt, resumes included: the nonces are
        // fixed by the agreement and version, so a key is never reused.
        let cipher = SegmentCipher::new(&key, ag.id.as_str(), ag.dataset_version);
        // A blocking worker reads and seals up to `AHEAD` segments ahead of
        // the network, so sealing overlaps with sending. Its buffers come
        // back once sent, so a release allocates them once.
        let mut reader = SealedReader::open(&release.path, cipher, req.from_segment)?;
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
        while let Some(item) = full.recv().await {
            let (index, last, buf) = item?;
            wire::write_segment(&mut stream, index, last, buf.as_ref()).await?;
            // Room for it: there are only `AHEAD` buffers.
            let _ = free_tx.try_send(buf);
        }
        match read_frame(&mut stream).await? {
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
        let counted = self.negotiator.count_release(
            &ag.id,
            Actor::Peer(peer.to_string()),
            json!({
                "role": "provider",
                "bytes": release.size,
                "from_segment": req.from_segment,
                "personal": release.personal,
                "sensitive": release.sensitive,
            }),
            Some((
                release.assessment.clone(),
                release.personal,
                release.sensitive,
            )),
            OffsetDateTime::now_utc(),
        )?;
        tracing::info!(agreement = %ag.id, %peer, uses = counted.uses, "release completed");
        write_frame(&mut stream, &Frame::Done).await?;
        Ok(())
    }

    /// Every check of a release, at `now`; the first failure refuses.
    async fn check_release(
        &self,
        peer: &PeerId,
        req: &TransferRequest,
        now: OffsetDateTime,
    ) -> Result<Release, ReleaseRefusal> {
        let facts = self.release_facts(peer, req, now).await?;
        release::judge(facts, peer, req, self.admission.anchors(), now)
    }
}
