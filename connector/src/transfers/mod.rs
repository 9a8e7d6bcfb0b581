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

mod release;
pub mod wire;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bayspace_contracts::agreement::AgreementId;
use bayspace_contracts::negotiation::Role;
use futures::StreamExt;
use libp2p::PeerId;
use serde_json::json;
use time::OffsetDateTime;
use tokio::sync::Semaphore;

use crate::admission::MembershipAdmission;
use crate::audit::{Actor, AuditEvent};
use crate::catalog::Catalog;
use crate::crypto::{self, DataKey, PlainWriter, SealedReader, SegmentCipher};
use crate::negotiator::{AgreementRecord, Negotiator, NegotiatorError};
use crate::p2p::{self, protocol::DATA_PROTOCOL};
pub use release::ReleaseRefusal;
use wire::{Frame, FrameError, TransferRequest, TransferStart, read_frame, write_frame};

/// Transfers served at once; more wait for a slot.
const MAX_CONCURRENT: usize = 8;

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
    #[error(transparent)]
    Crypto(#[from] crypto::CryptoError),
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
    pub path: PathBuf,
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
    slots: Semaphore,
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
    ) -> Arc<Transfers> {
        Arc::new(Transfers {
            negotiator,
            catalog,
            admission,
            client,
            slots: Semaphore::new(MAX_CONCURRENT),
        })
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
                    &Frame::Termination {
                        reason: reason.clone(),
                    },
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
                write_frame(
                    &mut stream,
                    &Frame::Termination {
                        reason: reason.clone(),
                    },
                )
                .await?;
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
            write_frame(
                &mut stream,
                &Frame::Termination {
                    reason: reason.clone(),
                },
            )
            .await?;
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
        for seg in SealedReader::open(&release.path, cipher, req.from_segment)? {
            let seg = seg?;
            write_frame(
                &mut stream,
                &Frame::Segment {
                    index: seg.index,
                    last: seg.last,
                    data: seg.ciphertext,
                },
            )
            .await?;
        }
        match read_frame(&mut stream).await? {
            Frame::Completion { hash } if hash == release.content_hash => {}
            Frame::Completion { hash } => {
                let reason = format!(
                    "the consumer computed {hash}, the dataset is {}",
                    release.content_hash
                );
                write_frame(
                    &mut stream,
                    &Frame::Termination {
                        reason: reason.clone(),
                    },
                )
                .await?;
                return Err(TransferError::Refused(reason));
            }
            Frame::Termination { reason } => return Err(TransferError::Refused(reason)),
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

    // ----- consumer -----

    /// Fetch the data of an agreement this node holds as consumer into
    /// `out`, for `researcher` (`None`: an administrator). Resumes from
    /// `<out>.part` when an earlier fetch was interrupted.
    pub async fn fetch(
        &self,
        agreement: &AgreementId,
        researcher: Option<&str>,
        out: &Path,
        mut progress: impl FnMut(Progress),
    ) -> Result<FetchReport, TransferError> {
        let started = Instant::now();
        let (record, _) = self
            .negotiator
            .release_context(agreement)?
            .ok_or_else(|| TransferError::UnknownAgreement(agreement.clone()))?;
        let ag = &record.signed.agreement;
        if record.role != Role::Consumer {
            return Err(TransferError::NotConsumer(agreement.clone()));
        }
        if let Some(r) = &record.revoked {
            return Err(TransferError::Revoked {
                id: agreement.clone(),
                reason: r.reason.clone(),
            });
        }
        if let Some(caller) = researcher
            && caller != ag.researcher.id
        {
            return Err(TransferError::WrongResearcher {
                id: agreement.clone(),
                expected: ag.researcher.id.clone(),
                caller: caller.to_owned(),
            });
        }
        // The hash to trust is the one in the publisher's signed descriptor.
        let expected_hash = match self.catalog.get(&ag.dataset)? {
            Some(s) if s.descriptor.version == ag.dataset_version => {
                Some(s.descriptor.content_hash)
            }
            _ => None,
        };
        let peer: PeerId = ag
            .provider
            .peer_id
            .parse()
            .map_err(|_| TransferError::Unreachable {
                peer: ag.provider.peer_id.clone(),
                reason: "not a PeerId".into(),
            })?;
        let (mut writer, from_segment) = PlainWriter::resume(out)?;
        // Every segment before the last is full, so this is what `.part` holds.
        let resumed_bytes = u64::from(from_segment) * crypto::SEGMENT_SIZE as u64;
        let mut done = resumed_bytes;
        let mut control = self.client.stream_control();
        let mut stream = control
            .open_stream(peer, DATA_PROTOCOL)
            .await
            .map_err(|e| TransferError::Unreachable {
                peer: peer.to_string(),
                reason: e.to_string(),
            })?;
        write_frame(
            &mut stream,
            &Frame::Request(TransferRequest {
                agreement: agreement.clone(),
                researcher: ag.researcher.id.clone(),
                from_segment,
            }),
        )
        .await?;
        let start = match read_frame(&mut stream).await? {
            Frame::Start(s) => s,
            Frame::Termination { reason } => {
                self.negotiator.audit_log().append(
                    Actor::Peer(peer.to_string()),
                    AuditEvent::TransferRefused,
                    vec![agreement.to_string()],
                    json!({ "reason": reason }),
                    OffsetDateTime::now_utc(),
                )?;
                return Err(TransferError::Refused(reason));
            }
            other => {
                return Err(TransferError::Unexpected {
                    expected: "TransferStartMessage".into(),
                    got: other.kind().into(),
                });
            }
        };
        if start.dataset_version != ag.dataset_version {
            return Err(TransferError::BadStart(format!(
                "version {} instead of {}",
                start.dataset_version, ag.dataset_version
            )));
        }
        if let Some(h) = expected_hash
            && h != start.content_hash
        {
            return Err(TransferError::BadStart(format!(
                "content hash {} instead of {h}",
                start.content_hash
            )));
        }
        if start.from_segment != from_segment {
            return Err(TransferError::BadStart(format!(
                "starts at segment {} instead of {from_segment}",
                start.from_segment
            )));
        }
        let key_bytes: [u8; crypto::KEY_SIZE] = start
            .key
            .as_slice()
            .try_into()
            .map_err(|_| TransferError::BadStart(format!("a {}-byte key", start.key.len())))?;
        let key = DataKey::from_bytes(key_bytes);
        let cipher = SegmentCipher::new(&key, ag.id.as_str(), ag.dataset_version);
        let total = start.size;
        progress(Progress {
            done: resumed_bytes,
            total,
        });
        let mut next = from_segment;
        while next < start.segments {
            match read_frame(&mut stream).await? {
                Frame::Segment { index, last, data } => {
                    if index != next {
                        return Err(TransferError::Crypto(crypto::CryptoError::OutOfOrder {
                            index,
                            expected: next,
                        }));
                    }
                    let plain = cipher.open(index, last, &data)?;
                    writer.write_segment(index, last, &plain)?;
                    done += plain.len() as u64;
                    next += 1;
                    progress(Progress { done, total });
                }
                Frame::Termination { reason } => return Err(TransferError::Refused(reason)),
                other => {
                    return Err(TransferError::Unexpected {
                        expected: "segment".into(),
                        got: other.kind().into(),
                    });
                }
            }
        }
        let bytes = done;
        let path = writer.finish(&blake3::Hash::from_bytes(start.content_hash.0))?;
        write_frame(
            &mut stream,
            &Frame::Completion {
                hash: start.content_hash,
            },
        )
        .await?;
        match read_frame(&mut stream).await? {
            Frame::Done => {}
            Frame::Termination { reason } => return Err(TransferError::Refused(reason)),
            other => {
                return Err(TransferError::Unexpected {
                    expected: "done".into(),
                    got: other.kind().into(),
                });
            }
        }
        self.negotiator
            .note_received(&start.content_hash, ag, OffsetDateTime::now_utc())?;
        self.negotiator.count_release(
            agreement,
            Actor::Node,
            json!({ "role": "consumer", "bytes": bytes, "resumed_bytes": resumed_bytes, "path": path }),
            None,
            OffsetDateTime::now_utc(),
        )?;
        Ok(FetchReport {
            agreement: agreement.clone(),
            path,
            bytes,
            resumed_bytes,
            seconds: started.elapsed().as_secs_f64(),
            hash: start.content_hash.to_string(),
        })
    }
}
