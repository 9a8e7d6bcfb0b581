//! The consumer's side: fetch the data of an agreement, verify it, and
//! keep trying while only the link fails.
//!
//! A fetch is recorded as an intent in the store before its first attempt
//! and removed when it ends for good, so a node that stops in the middle of
//! one resumes it by itself at the next start
//! ([`Transfers::resume_interrupted`]). Within one run, an attempt cut short
//! by the network (the provider restarting, a dropped connection) is retried
//! with back-off from the last verified segment, and the researcher's
//! progress stream simply continues.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bayspace_contracts::agreement::AgreementId;
use bayspace_contracts::descriptor::Digest;
use bayspace_contracts::negotiation::Role;
use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use tokio::sync::mpsc;

use super::wire::{
    Frame, FrameError, Incoming, ReleaseId, TransferRequest, read_frame, read_incoming, write_frame,
};
use super::{
    Destination, FRAME_TIMEOUT, FetchReport, FetchSlot, Progress, Sink, TransferError, Transfers,
    deadline,
};
use crate::crypto::{self, DataKey, SegmentBuf, SegmentCipher, SegmentWriter, Verified};
use crate::negotiator::AgreementRecord;
use crate::p2p::protocol::DATA_PROTOCOL;
use crate::store::{Store, TreeName, TypedTree};
use crate::vault::SealedState;

pub const FETCHES_TREE: TreeName = TreeName::new("fetches");

/// Attempts of one fetch before it waits for the next start of the node.
const MAX_ATTEMPTS: u32 = 8;
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);
/// How long an attempt waits for the provider to be admitted (after a
/// restart of either side) before it counts as unreachable.
const ADMISSION_WAIT: Duration = Duration::from_secs(10);
/// Segment buffers of one fetch (a MiB each): the network reads into those
/// the worker is not opening and writing, so the two overlap within
/// bounded memory.
const AHEAD: usize = 4;

/// Sends the TransferCompletionMessage and reads the provider's answer.
async fn confirm(stream: &mut libp2p::Stream, hash: Digest) -> Result<(), TransferError> {
    deadline(
        FRAME_TIMEOUT,
        "sending the TransferCompletionMessage",
        write_frame(stream, &Frame::Completion { hash }),
    )
    .await?;
    match deadline(FRAME_TIMEOUT, "the acknowledgement", read_frame(stream)).await? {
        Frame::Done => Ok(()),
        Frame::Termination { reason, .. } => Err(TransferError::Refused(reason)),
        other => Err(TransferError::Unexpected {
            expected: "done".into(),
            got: other.kind().into(),
        }),
    }
}

/// Hands verified data over (renames it into place) only once `record`
/// has put its delivery on record: no audit, no action. Data kept sealed
/// (`None`) is already where it belongs.
fn deliver(
    verified: Option<Verified>,
    record: impl FnOnce() -> Result<(), TransferError>,
) -> Result<(), TransferError> {
    record()?;
    if let Some(v) = verified {
        v.commit()?;
    }
    Ok(())
}

/// A fetch that has not ended yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchIntent {
    pub agreement: AgreementId,
    /// The plaintext destination; `None` when kept sealed.
    pub out: Option<PathBuf>,
    /// Who asked (`None`: an administrator).
    pub researcher: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    /// The id of the release this fetch asks for, sent with every request
    /// of it; on record before the first one, so that a fetch asking
    /// again after this node was killed continues the same use on the
    /// provider. `None` only in intents of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<ReleaseId>,
}

/// Puts `intent` on record, flushed, before the fetch's first request. It
/// takes over the release id of an earlier fetch of the agreement that
/// never ended (`unfinished`: the node stopped in it), so that the fetch
/// continues that release and its use; otherwise it gets a new id.
fn record_intent(
    store: &dyn Store,
    intents: &TypedTree<String, FetchIntent>,
    mut intent: FetchIntent,
    unfinished: impl FnOnce(&FetchIntent) -> bool,
) -> Result<FetchIntent, TransferError> {
    let key = intent.agreement.to_string();
    intent.release = match intents.get(&key)? {
        Some(earlier) if earlier.release.is_some() && unfinished(&earlier) => earlier.release,
        _ => Some(ReleaseId::generate().map_err(crypto::CryptoError::from)?),
    };
    intents.insert(&key, &intent)?;
    store.flush()?;
    Ok(intent)
}

impl TransferError {
    /// Whether the link failed rather than the release: worth another
    /// attempt from the last verified segment.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            TransferError::Unreachable { .. }
                | TransferError::Frame(FrameError::Io(_) | FrameError::TimedOut { .. })
        )
    }
}

impl Transfers {
    fn intents(&self) -> Result<TypedTree<String, FetchIntent>, TransferError> {
        Ok(TypedTree::open(&*self.store, FETCHES_TREE)?)
    }

    /// Fetches that have not ended, oldest first.
    pub fn pending_fetches(&self) -> Result<Vec<FetchIntent>, TransferError> {
        let mut all = self.intents()?.values(&[])?;
        all.sort_by_key(|i| i.since);
        Ok(all)
    }

    fn forget_intent(&self, agreement: &AgreementId) -> Result<(), TransferError> {
        if self.intents()?.remove(&agreement.to_string())? {
            self.store.flush()?;
        }
        Ok(())
    }

    /// Fetch the data of an agreement this node holds as consumer to
    /// `dest`, for `researcher` (`None`: an administrator). Resumes from the
    /// partial file when an earlier fetch was interrupted, and retries by
    /// itself while only the network fails.
    pub async fn fetch(
        &self,
        agreement: &AgreementId,
        researcher: Option<&str>,
        dest: Destination<'_>,
        mut progress: impl FnMut(Progress),
    ) -> Result<FetchReport, TransferError> {
        let started = Instant::now();
        let _slot = {
            let mut set = self.fetching.lock().map_err(|_| TransferError::Poisoned)?;
            if !set.insert(agreement.clone()) {
                return Err(TransferError::InProgress(agreement.clone()));
            }
            FetchSlot {
                set: &self.fetching,
                id: agreement.clone(),
            }
        };
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
        // Room for the whole dataset beside the reserve, before a byte of
        // it is written: a fetch the disk cannot hold is refused now, not
        // when the disk fills half-way.
        let size = self
            .catalog
            .get(&ag.dataset)?
            .filter(|s| s.descriptor.version == ag.dataset_version)
            .map_or(0, |s| s.descriptor.size);
        let dir = match dest {
            Destination::File(p) => p
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .map_or_else(|| PathBuf::from("."), PathBuf::from),
            Destination::Sealed => self.vault.dir().to_path_buf(),
        };
        crate::store::check_space(&dir, size, self.disk_reserve.load(Ordering::Relaxed))
            .map_err(TransferError::DiskFull)?;
        let release = {
            let (intents, store) = (self.intents()?, self.store.clone());
            let intent = FetchIntent {
                agreement: agreement.clone(),
                out: match dest {
                    Destination::File(p) => Some(p.to_path_buf()),
                    Destination::Sealed => None,
                },
                researcher: researcher.map(str::to_owned),
                since: OffsetDateTime::now_utc(),
                release: None,
            };
            // An intent still on record is a fetch this node was stopped
            // in, unless its data is in place (stopped after the end).
            let done = self
                .intents()?
                .get(&agreement.to_string())?
                .is_some_and(|earlier| self.already_done(&earlier));
            super::blocking(move || record_intent(&*store, &intents, intent, |_| !done))
                .await?
                .release
        };
        let mut delay = FIRST_RETRY;
        let mut attempt = 1;
        loop {
            match self
                .attempt(&record, release, dest, started, &mut progress)
                .await
            {
                Err(e) if e.is_transient() && attempt < MAX_ATTEMPTS => {
                    tracing::warn!(
                        agreement = %agreement,
                        attempt,
                        "fetch interrupted ({e}); resuming in {} s",
                        delay.as_secs()
                    );
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_RETRY);
                    attempt += 1;
                }
                // Still only the link: keep the intent for the next start.
                Err(e) if e.is_transient() => return Err(e),
                result => {
                    self.forget_intent(agreement)?;
                    if result.is_err() && matches!(dest, Destination::Sealed) {
                        self.vault.abandon_if_empty(agreement)?;
                    }
                    return result;
                }
            }
        }
    }

    /// Resumes, in the background, the fetches a previous run of the node
    /// did not finish. Spawn once at start.
    pub async fn resume_interrupted(self: Arc<Self>) {
        let pending = match self.pending_fetches() {
            Ok(p) => p,
            Err(e) => {
                tracing::error!("cannot read the interrupted fetches: {e}");
                return;
            }
        };
        for intent in pending {
            if self.already_done(&intent) {
                if let Err(e) = self.forget_intent(&intent.agreement) {
                    tracing::warn!(agreement = %intent.agreement, "{e}");
                }
                continue;
            }
            let this = self.clone();
            tokio::spawn(async move {
                // Only an administrator's export (checked against the
                // export directory when asked for) goes to a file; a path a
                // researcher named, from before researchers lost that
                // power, is resumed sealed instead of written.
                let dest = match (intent.out.as_deref(), &intent.researcher) {
                    (Some(out), None) => Destination::File(out),
                    (Some(out), Some(r)) => {
                        tracing::warn!(
                            agreement = %intent.agreement,
                            "not writing {} named by researcher {r}; keeping the data sealed",
                            out.display()
                        );
                        Destination::Sealed
                    }
                    (None, _) => Destination::Sealed,
                };
                tracing::info!(agreement = %intent.agreement, "resuming an interrupted fetch");
                match this
                    .fetch(
                        &intent.agreement,
                        intent.researcher.as_deref(),
                        dest,
                        |_| {},
                    )
                    .await
                {
                    Ok(r) => tracing::info!(
                        agreement = %r.agreement,
                        path = %r.path.display(),
                        bytes = r.bytes,
                        "interrupted fetch completed"
                    ),
                    Err(TransferError::InProgress(_)) => {}
                    Err(e) => {
                        tracing::warn!(agreement = %intent.agreement, "interrupted fetch ended: {e}")
                    }
                }
            });
        }
    }

    /// A fetch that completed just before the node stopped, so that it is
    /// not repeated (which would count another use).
    fn already_done(&self, intent: &FetchIntent) -> bool {
        match &intent.out {
            Some(out) => out.exists() && !crypto::part_path(out).exists(),
            None => matches!(
                self.vault.get(&intent.agreement),
                Ok(Some(r)) if r.state == SealedState::Sealed
            ),
        }
    }

    /// Waits until the provider is admitted on this side, so an attempt
    /// right after a restart does not race the admission exchange.
    async fn wait_admitted(&self, peer: PeerId) -> Result<(), TransferError> {
        let deadline = Instant::now() + ADMISSION_WAIT;
        loop {
            let admitted =
                self.client
                    .admitted_from(peer)
                    .await
                    .map_err(|e| TransferError::Unreachable {
                        peer: peer.to_string(),
                        reason: e.to_string(),
                    })?;
            if admitted.is_some() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(TransferError::Unreachable {
                    peer: peer.to_string(),
                    reason: format!(
                        "not connected and admitted within {} s",
                        ADMISSION_WAIT.as_secs()
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// One attempt, from the last verified segment.
    async fn attempt(
        &self,
        record: &AgreementRecord,
        release: Option<ReleaseId>,
        dest: Destination<'_>,
        started: Instant,
        progress: &mut impl FnMut(Progress),
    ) -> Result<FetchReport, TransferError> {
        let ag = &record.signed.agreement;
        let agreement = &ag.id;
        let ag_id = ag.id.clone();
        let sealed = matches!(dest, Destination::Sealed);
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
        let mut sink = match dest {
            Destination::File(out) => Sink::Plain(SegmentWriter::resume(out)?.0),
            Destination::Sealed => {
                let vault = self.vault.clone();
                let ag = ag.clone();
                let now = OffsetDateTime::now_utc();
                Sink::Sealed(
                    tokio::task::spawn_blocking(move || vault.begin(&ag, now))
                        .await
                        .map_err(|e| TransferError::Task(e.to_string()))??,
                )
            }
        };
        let from_segment = sink.writer().next_index();
        // Every segment before the last is full, so this is what `.part` holds.
        let resumed_bytes = u64::from(from_segment) * crypto::SEGMENT_SIZE as u64;
        self.wait_admitted(peer).await?;
        let mut control = self.client.stream_control();
        let mut stream = control
            .open_stream(peer, DATA_PROTOCOL)
            .await
            .map_err(|e| TransferError::Unreachable {
                peer: peer.to_string(),
                reason: e.to_string(),
            })?;
        deadline(
            FRAME_TIMEOUT,
            "sending the TransferRequestMessage",
            write_frame(
                &mut stream,
                &Frame::Request(TransferRequest {
                    agreement: agreement.clone(),
                    researcher: ag.researcher.id.clone(),
                    from_segment,
                    release,
                }),
            ),
        )
        .await?;
        let start = match deadline(
            FRAME_TIMEOUT,
            "TransferStartMessage",
            read_frame(&mut stream),
        )
        .await?
        {
            Frame::Start(s) => s,
            Frame::Termination { code, reason } => {
                let details = json!({ "code": code, "reason": reason });
                self.audit_refused(peer, vec![agreement.to_string()], details)
                    .await?;
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
        // The network side reads and orders frames while a blocking worker
        // opens, writes and hashes them, so neither waits for the other;
        // at most `AHEAD` segments are in between.
        let written = Arc::new(AtomicU64::new(resumed_bytes));
        let (full_tx, mut full) = mpsc::channel::<(u32, bool, SegmentBuf)>(AHEAD);
        let (free_tx, mut free) = super::buffer_pool(AHEAD);
        let worker = {
            let written = written.clone();
            tokio::task::spawn_blocking(move || -> Result<Sink, TransferError> {
                while let Some((index, last, mut buf)) = full.blocking_recv() {
                    cipher.open_in_place(index, last, &mut buf)?;
                    sink.writer().write_segment(index, last, buf.as_ref())?;
                    written.fetch_add(buf.as_ref().len() as u64, Ordering::Relaxed);
                    // Room for it: there are only `AHEAD` buffers.
                    let _ = free_tx.try_send(buf);
                }
                Ok(sink)
            })
        };
        let mut next = from_segment;
        let received = async {
            while next < start.segments {
                // No free buffer means the worker stopped; its error says why.
                let Some(mut buf) = free.recv().await else {
                    return Ok(());
                };
                match deadline(
                    FRAME_TIMEOUT,
                    "a segment",
                    read_incoming(&mut stream, Some(&mut buf)),
                )
                .await?
                {
                    Incoming::Segment { index, last } => {
                        if index != next {
                            return Err(TransferError::Crypto(crypto::CryptoError::OutOfOrder {
                                index,
                                expected: next,
                            }));
                        }
                        if full_tx.send((index, last, buf)).await.is_err() {
                            return Ok(());
                        }
                        next += 1;
                        progress(Progress {
                            done: written.load(Ordering::Relaxed),
                            total,
                        });
                    }
                    Incoming::Message(Frame::Termination { reason, .. }) => {
                        return Err(TransferError::Refused(reason));
                    }
                    Incoming::Message(other) => {
                        return Err(TransferError::Unexpected {
                            expected: "segment".into(),
                            got: other.kind().into(),
                        });
                    }
                }
            }
            Ok(())
        }
        .await;
        drop(full_tx);
        let sink = worker
            .await
            .map_err(|e| TransferError::Task(e.to_string()))?;
        received?;
        let sink = sink?;
        let bytes = written.load(Ordering::Relaxed);
        progress(Progress { done: bytes, total });
        // Verified and synced, but not yet where the researcher will find
        // it: no audit, no action.
        let vault = self.vault.clone();
        let (hash, size) = (start.content_hash, start.size);
        let verified = super::blocking(move || match sink {
            Sink::Plain(w) => Ok(Some(w.verify(&blake3::Hash::from_bytes(hash.0))?)),
            Sink::Sealed(s) => {
                vault.complete(s, &hash, size)?;
                Ok(None)
            }
        })
        .await?;
        let path = match &verified {
            Some(v) => v.out().to_path_buf(),
            None => self.vault.sealed_path(&ag_id),
        };
        {
            let negotiator = self.negotiator.clone();
            let (ag, id) = (ag.clone(), ag_id.clone());
            let details = json!({
                "role": "consumer",
                "bytes": bytes,
                "resumed_bytes": resumed_bytes,
                "path": path,
                "sealed": sealed,
            });
            super::blocking(move || {
                deliver(verified, || {
                    let now = OffsetDateTime::now_utc();
                    negotiator.note_received(&hash, &ag, now)?;
                    negotiator.count_received(&id, details, now)?;
                    Ok(())
                })
            })
            .await?;
        }
        // The provider counted the use when it released the key; this
        // confirmation only closes its release, so a lost one is no loss
        // of data here.
        if let Err(e) = confirm(&mut stream, start.content_hash).await {
            tracing::warn!(agreement = %agreement, "the data is in place, but the provider did not take the confirmation: {e}");
        }
        crate::metrics::global().transfer_done(Role::Consumer, bytes, started.elapsed());
        Ok(FetchReport {
            agreement: agreement.clone(),
            path,
            sealed,
            bytes,
            resumed_bytes,
            seconds: started.elapsed().as_secs_f64(),
            hash: start.content_hash.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verified(dir: &std::path::Path) -> Verified {
        let out = dir.join("cohort.csv");
        let mut w = SegmentWriter::create(&out).unwrap();
        w.write_segment(0, true, b"id,age\n1,34\n").unwrap();
        w.verify(&blake3::hash(b"id,age\n1,34\n")).unwrap()
    }

    fn intent(agreement: &AgreementId) -> FetchIntent {
        FetchIntent {
            agreement: agreement.clone(),
            out: None,
            researcher: None,
            since: OffsetDateTime::now_utc(),
            release: None,
        }
    }

    #[test]
    fn a_release_id_is_on_disk_before_the_first_request_and_kept_across_a_kill() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let ag = AgreementId::from_random([3; 16]);
        let other = AgreementId::from_random([4; 16]);
        let first = {
            let store = crate::store::SledStore::open(&path).unwrap();
            let intents = TypedTree::open(&store, FETCHES_TREE).unwrap();
            let a = record_intent(&store, &intents, intent(&ag), |_| true).unwrap();
            let b = record_intent(&store, &intents, intent(&other), |_| true).unwrap();
            assert_ne!(
                a.release, b.release,
                "each agreement's release has its own id"
            );
            // The node is killed: nothing else is written or flushed.
            a.release.unwrap()
        };
        let store = crate::store::SledStore::open(&path).unwrap();
        let intents = TypedTree::open(&store, FETCHES_TREE).unwrap();
        let earlier: FetchIntent = intents.get(&ag.to_string()).unwrap().unwrap();
        assert_eq!(earlier.release, Some(first));
        // Asked again after the restart: the same release.
        let again = record_intent(&store, &intents, intent(&ag), |_| true).unwrap();
        assert_eq!(again.release, Some(first));
        // An earlier fetch whose data is in place ended: a new release.
        let next = record_intent(&store, &intents, intent(&ag), |_| false).unwrap();
        assert_ne!(next.release, Some(first));
        assert!(next.release.is_some());
        // Forgotten once it ended: the next fetch is another release.
        intents.remove(&ag.to_string()).unwrap();
        let fresh = record_intent(&store, &intents, intent(&ag), |_| true).unwrap();
        assert!(fresh.release.is_some() && fresh.release != next.release);
    }

    #[test]
    fn an_intent_of_an_older_version_reads_and_gets_a_release_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::SledStore::open(&dir.path().join("store")).unwrap();
        let ag = AgreementId::from_random([5; 16]);
        let old = json!({
            "agreement": ag.to_string(),
            "out": null,
            "researcher": null,
            "since": "2026-11-30T10:00:00Z",
        });
        let read: FetchIntent = serde_json::from_value(old).unwrap();
        assert_eq!(read.release, None);
        let intents = TypedTree::open(&store, FETCHES_TREE).unwrap();
        intents.insert(&ag.to_string(), &read).unwrap();
        let now = record_intent(&store, &intents, intent(&ag), |_| true).unwrap();
        assert!(now.release.is_some());
    }

    #[test]
    fn data_whose_delivery_cannot_be_recorded_is_not_handed_over() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("cohort.csv");
        let failed = deliver(Some(verified(dir.path())), || {
            Err(TransferError::Task(
                "the audit log refused the entry".into(),
            ))
        });
        assert!(failed.is_err());
        assert!(!out.exists(), "the file appeared without its audit entry");
        assert!(crypto::part_path(&out).exists(), "kept to resume from");

        let mut recorded = false;
        deliver(Some(verified(dir.path())), || {
            assert!(!out.exists(), "renamed before the record");
            recorded = true;
            Ok(())
        })
        .unwrap();
        assert!(recorded);
        assert_eq!(std::fs::read(&out).unwrap(), b"id,age\n1,34\n");
    }
}
