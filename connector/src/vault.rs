//! Received data kept sealed at rest (`bayspace transfer fetch
//! --keep-sealed`), opened on demand (`bayspace data open`), and
//! crypto-shredded when the agreement's retention ends.
//!
//! Each sealed copy has its own data key. The key is stored wrapped under
//! the node's storage key ([`crypto::storage_key_from_seed`]) in a small file
//! of its own, next to the sealed data, and never in the database: sled is
//! log-structured and would keep old copies of a deleted value on disk,
//! whereas a key file can be overwritten in place, synced and unlinked.
//! Destroying that file is the crypto-shredding: the sealed data stays
//! unreadable even if a copy of it survives somewhere.
//!
//! Every shredding is audited before the key is destroyed, and the record of
//! a shredded copy stays, so opening it later says when and why it went.
//! The retention watcher ([`Vault::run`]) also shreds, at startup, whatever
//! came due while the node was down.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bayspace_contracts::agreement::{Agreement, AgreementId};
use bayspace_contracts::descriptor::{DatasetId, Digest};
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use tokio::sync::Notify;
use zeroize::Zeroizing;

use crate::audit::{Actor, AuditError, AuditEvent, AuditLog};
use crate::crypto::{
    self, CryptoError, DataKey, KEY_SIZE, SegmentCipher, SegmentWriter, UnsealReader, WrappedKey,
};
use crate::store::{Store, StoreError, TreeName, TypedTree};

pub const SEALED_TREE: TreeName = TreeName::new("sealed-data");

/// Longest the retention watcher sleeps between checks, so that a change of
/// the system clock, or a deadline it was not told about, is noticed soon.
const MAX_NAP: Duration = Duration::from_secs(60);

/// Where a sealed copy is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SealedState {
    /// Segments are arriving; an interrupted fetch resumes from here.
    Receiving,
    /// Complete and verified; it can be opened.
    Sealed,
    /// The key is destroyed.
    Shredded,
}

impl std::fmt::Display for SealedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SealedState::Receiving => "receiving",
            SealedState::Sealed => "sealed",
            SealedState::Shredded => "shredded",
        })
    }
}

/// One sealed copy of the data of an agreement this node holds as consumer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedRecord {
    pub agreement: AgreementId,
    pub dataset: DatasetId,
    pub dataset_version: u64,
    /// The researcher the agreement names; only they (or an administrator)
    /// may open it.
    pub researcher: String,
    pub state: SealedState,
    /// Plaintext size and BLAKE3, known once the copy is complete.
    pub size: Option<u64>,
    pub content_hash: Option<Digest>,
    /// When the key must be gone: the agreement's retention end.
    #[serde(with = "time::serde::rfc3339::option")]
    pub retention_deadline: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub shredded_at: Option<OffsetDateTime>,
    pub shred_reason: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error(
        "no data of agreement {0} is kept sealed on this node; fetch it with `bayspace transfer fetch {0} --keep-sealed`"
    )]
    NotFound(AgreementId),
    #[error(
        "the sealed copy of agreement {0} is incomplete; run `bayspace transfer fetch {0} --keep-sealed` again to resume it"
    )]
    Incomplete(AgreementId),
    #[error(
        "the data of agreement {agreement} was crypto-shredded at {at} ({reason}); its key is destroyed and it can no longer be opened"
    )]
    Shredded {
        agreement: AgreementId,
        at: OffsetDateTime,
        reason: String,
    },
    #[error(
        "the data of agreement {0} is already kept sealed on this node; open it with `bayspace data open {0} --out PATH`"
    )]
    AlreadySealed(AgreementId),
    #[error(
        "agreement {agreement} requires its data deleted by {deadline}; it cannot be kept sealed any more"
    )]
    RetentionPassed {
        agreement: AgreementId,
        deadline: OffsetDateTime,
    },
    #[error(
        "the retention of agreement {agreement} ended at {deadline}; its data can no longer be opened and is crypto-shredded"
    )]
    RetentionEnded {
        agreement: AgreementId,
        deadline: OffsetDateTime,
    },
    #[error("agreement {id} is for researcher {expected}, not {caller}")]
    WrongResearcher {
        id: AgreementId,
        expected: String,
        caller: String,
    },
    #[error(
        "offset {offset} is past the end of the data of agreement {agreement} ({size} bytes); delete the partial file and download again"
    )]
    OffsetPastEnd {
        agreement: AgreementId,
        offset: u64,
        size: u64,
    },
    #[error("key file {path}: {reason}")]
    KeyFile { path: PathBuf, reason: String },
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("audit log: {0} (nothing was done)")]
    Audit(#[from] AuditError),
    #[error("the sealed store is unusable after an earlier panic")]
    Poisoned,
}

type Result<T, E = VaultError> = std::result::Result<T, E>;

/// File errors are reported as [`CryptoError::Io`], naming the action and
/// the path, like those of the segment files.
fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> VaultError {
    let inner = crypto::io_err(action, path);
    move |e| VaultError::Crypto(inner(e))
}

/// A sealed copy being received: segments go to `writer`, and
/// [`Vault::complete`] makes it openable.
#[derive(Debug)]
pub struct SealedSink {
    pub writer: SegmentWriter,
    /// The first segment still needed.
    pub next: u32,
    agreement: AgreementId,
    started_at: OffsetDateTime,
}

/// The sealed data of one node.
pub struct Vault {
    dir: PathBuf,
    storage_key: Zeroizing<[u8; KEY_SIZE]>,
    store: Arc<dyn Store>,
    records: TypedTree<String, SealedRecord>,
    audit: Arc<AuditLog>,
    /// Serialises changes of state, so a shredding and a completing fetch
    /// never interleave.
    lock: Mutex<()>,
    /// Wakes the retention watcher when a copy with a deadline begins.
    changed: Notify,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Vault {
    /// Opens the sealed store in `dir` (created, mode 0700, if missing).
    pub fn open(
        dir: PathBuf,
        storage_key: [u8; KEY_SIZE],
        store: Arc<dyn Store>,
        audit: Arc<AuditLog>,
    ) -> Result<Arc<Vault>> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io_err("create", &dir))?;
        let records = TypedTree::open(&*store, SEALED_TREE)?;
        Ok(Arc::new(Vault {
            dir,
            storage_key: Zeroizing::new(storage_key),
            store,
            records,
            audit,
            lock: Mutex::new(()),
            changed: Notify::new(),
        }))
    }

    /// The sealed directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn guard(&self) -> Result<std::sync::MutexGuard<'_, ()>> {
        self.lock.lock().map_err(|_| VaultError::Poisoned)
    }

    /// File names come from a hash of the id, so no id can reach outside
    /// the directory whatever characters it holds.
    fn base(&self, agreement: &AgreementId) -> PathBuf {
        let h = blake3::hash(agreement.as_str().as_bytes()).to_hex();
        self.dir.join(&h.as_str()[..32])
    }

    /// Where the sealed data of `agreement` is (or would be) kept.
    pub fn sealed_path(&self, agreement: &AgreementId) -> PathBuf {
        self.base(agreement).with_extension("sealed")
    }

    fn key_path(&self, agreement: &AgreementId) -> PathBuf {
        self.base(agreement).with_extension("key")
    }

    pub fn get(&self, agreement: &AgreementId) -> Result<Option<SealedRecord>> {
        Ok(self.records.get(&agreement.to_string())?)
    }

    /// Every sealed copy, or those of one researcher.
    pub fn list(&self, researcher: Option<&str>) -> Result<Vec<SealedRecord>> {
        let mut out = Vec::new();
        for entry in self.records.iter(&[]) {
            let (_, r) = entry?;
            if researcher.is_none_or(|who| r.researcher == who) {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Starts, or resumes, keeping the data of `ag` sealed. A copy that
    /// is already complete is refused; a shredded one is replaced by a new
    /// copy under a new key.
    pub fn begin(&self, ag: &Agreement, now: OffsetDateTime) -> Result<SealedSink> {
        let _g = self.guard()?;
        let id = ag.id.clone();
        let sealed = self.sealed_path(&id);
        let cipher = |key: &DataKey| SegmentCipher::new(key, id.as_str(), ag.dataset_version);
        let existing = self.get(&id)?;
        match &existing {
            Some(r) if r.state == SealedState::Sealed => return Err(VaultError::AlreadySealed(id)),
            Some(r) if r.state == SealedState::Receiving => {
                if let Some(key) = self.read_key(&id)? {
                    let (writer, next) = SegmentWriter::resume_sealed(&sealed, cipher(&key))?;
                    return Ok(SealedSink {
                        writer,
                        next,
                        agreement: id,
                        started_at: r.started_at,
                    });
                }
            }
            _ => {}
        }
        let deadline = ag.constraints.retention_deadline();
        if let Some(deadline) = deadline
            && now >= deadline
        {
            return Err(VaultError::RetentionPassed {
                agreement: id,
                deadline,
            });
        }
        let key = DataKey::generate()?;
        self.write_key(
            &id,
            &WrappedKey::wrap(&key, &self.storage_key, id.as_str())?,
        )?;
        let part = crypto::part_path(&sealed);
        if part.exists() {
            fs::remove_file(&part).map_err(io_err("remove", &part))?;
        }
        self.records.insert(
            &id.to_string(),
            &SealedRecord {
                agreement: id.clone(),
                dataset: ag.dataset.clone(),
                dataset_version: ag.dataset_version,
                researcher: ag.researcher.id.clone(),
                state: SealedState::Receiving,
                size: None,
                content_hash: None,
                retention_deadline: deadline,
                started_at: now,
                shredded_at: None,
                shred_reason: None,
            },
        )?;
        self.store.flush()?;
        self.changed.notify_one();
        let (writer, next) = SegmentWriter::resume_sealed(&sealed, cipher(&key))?;
        Ok(SealedSink {
            writer,
            next,
            agreement: id,
            started_at: now,
        })
    }

    /// Verifies the whole copy against `expected` and makes it openable.
    /// A copy shredded while it was arriving is discarded instead.
    pub fn complete(&self, sink: SealedSink, expected: &Digest, size: u64) -> Result<SealedRecord> {
        let _g = self.guard()?;
        let id = sink.agreement.clone();
        let mut record = self
            .get(&id)?
            .ok_or_else(|| VaultError::NotFound(id.clone()))?;
        if record.state != SealedState::Receiving || record.started_at != sink.started_at {
            let part = sink.writer.part_path().to_path_buf();
            drop(sink);
            remove_if_present(&part)?;
            return Err(match (record.shredded_at, record.shred_reason) {
                (Some(at), Some(reason)) => VaultError::Shredded {
                    agreement: id,
                    at,
                    reason,
                },
                _ => VaultError::AlreadySealed(id),
            });
        }
        sink.writer.finish(&blake3::Hash::from_bytes(expected.0))?;
        record.state = SealedState::Sealed;
        record.size = Some(size);
        record.content_hash = Some(*expected);
        self.records.insert(&id.to_string(), &record)?;
        self.store.flush()?;
        Ok(record)
    }

    /// Decrypts the sealed copy of `agreement` into `out` for `researcher`
    /// (`None`: an administrator). Audited before anything is decrypted.
    ///
    /// Refused at and after the retention deadline even if the retention
    /// watcher has not shredded the copy yet. The lock is held until the
    /// plaintext is written, so a shredding waits for an open in progress
    /// and no decryption runs once a shredding is audited.
    pub fn open_to(
        &self,
        agreement: &AgreementId,
        researcher: Option<&str>,
        out: &Path,
        now: OffsetDateTime,
    ) -> Result<SealedRecord> {
        let _g = self.guard()?;
        let (record, size, hash, key) = self.openable(agreement, researcher, now)?;
        self.audit.append(
            researcher.map_or(Actor::Admin, |r| Actor::Researcher(r.to_owned())),
            AuditEvent::DataOpened,
            vec![agreement.to_string(), record.dataset.to_string()],
            json!({ "out": out.display().to_string(), "bytes": size }),
            now,
        )?;
        let cipher = SegmentCipher::new(&key, agreement.as_str(), record.dataset_version);
        crypto::unseal_file(
            &self.sealed_path(agreement),
            &cipher,
            size,
            &blake3::Hash::from_bytes(hash.0),
            out,
        )?;
        Ok(record)
    }

    /// Starts decrypting the sealed copy of `agreement` for `researcher`
    /// (`None`: an administrator) from byte `offset`, for a download to the
    /// client's own machine: nothing is written on this host. The same
    /// checks as [`Vault::open_to`] apply, and the download is audited
    /// (with `client`, the address it goes to) before anything is decrypted.
    ///
    /// The lock is not held for the whole download, which may take long;
    /// [`Download::next_chunk`] takes it for each segment and checks the
    /// copy again, so a shredding or the retention end stops a download at
    /// the next segment and no segment is decrypted after it.
    pub fn download(
        self: &Arc<Self>,
        agreement: &AgreementId,
        researcher: Option<&str>,
        client: &str,
        offset: u64,
        now: OffsetDateTime,
    ) -> Result<Download> {
        let _g = self.guard()?;
        let (record, size, hash, key) = self.openable(agreement, researcher, now)?;
        if offset > size {
            return Err(VaultError::OffsetPastEnd {
                agreement: agreement.clone(),
                offset,
                size,
            });
        }
        let cipher = SegmentCipher::new(&key, agreement.as_str(), record.dataset_version);
        let segment = cipher.segment_size() as u64;
        // The last segment is still sent when the client holds every byte,
        // so even a complete resume ends with an authenticated segment.
        let start = (offset / segment).min(crypto::segment_count(size)?.saturating_sub(1) as u64);
        let start = u32::try_from(start).map_err(|_| CryptoError::TooLarge { size })?;
        let reader = UnsealReader::open(&self.sealed_path(agreement), cipher, size, start)?;
        self.audit.append(
            researcher.map_or(Actor::Admin, |r| Actor::Researcher(r.to_owned())),
            AuditEvent::DataDownloaded,
            vec![agreement.to_string(), record.dataset.to_string()],
            json!({
                "client": client,
                "offset": offset,
                "bytes": size - offset,
                "size": size,
                "blake3": hash.to_string(),
            }),
            now,
        )?;
        Ok(Download {
            vault: self.clone(),
            agreement: agreement.clone(),
            started_at: record.started_at,
            skip: usize::try_from(offset - u64::from(start) * segment).unwrap_or(usize::MAX),
            reader,
            size,
            hash,
        })
    }

    /// The checks every decryption of a copy passes, under the lock: the
    /// caller's agreement, a complete copy not shredded, the retention end
    /// not reached, and its key.
    fn openable(
        &self,
        agreement: &AgreementId,
        researcher: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<(SealedRecord, u64, Digest, DataKey)> {
        let record = self
            .get(agreement)?
            .ok_or_else(|| VaultError::NotFound(agreement.clone()))?;
        if let Some(caller) = researcher
            && caller != record.researcher
        {
            return Err(VaultError::WrongResearcher {
                id: agreement.clone(),
                expected: record.researcher,
                caller: caller.to_owned(),
            });
        }
        let (size, hash) = match (&record.state, record.size, record.content_hash) {
            (SealedState::Sealed, Some(size), Some(hash)) => (size, hash),
            (SealedState::Shredded, _, _) => {
                return Err(VaultError::Shredded {
                    agreement: agreement.clone(),
                    at: record.shredded_at.unwrap_or(now),
                    reason: record.shred_reason.unwrap_or_default(),
                });
            }
            _ => return Err(VaultError::Incomplete(agreement.clone())),
        };
        if let Some(deadline) = record.retention_deadline
            && now >= deadline
        {
            return Err(VaultError::RetentionEnded {
                agreement: agreement.clone(),
                deadline,
            });
        }
        let key = self
            .read_key(agreement)?
            .ok_or_else(|| VaultError::KeyFile {
                path: self.key_path(agreement),
                reason: "missing, though the copy is not recorded as shredded".into(),
            })?;
        Ok((record, size, hash, key))
    }

    /// Whether the copy a download began on is still there to read, under
    /// the lock: not shredded (nor replaced by a new copy since), and before
    /// its retention end.
    fn still_openable(
        &self,
        agreement: &AgreementId,
        started_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<()> {
        let record = self
            .get(agreement)?
            .ok_or_else(|| VaultError::NotFound(agreement.clone()))?;
        if let (SealedState::Shredded, Some(at)) = (record.state, record.shredded_at) {
            return Err(VaultError::Shredded {
                agreement: agreement.clone(),
                at,
                reason: record.shred_reason.unwrap_or_default(),
            });
        }
        if record.state != SealedState::Sealed || record.started_at != started_at {
            return Err(VaultError::Incomplete(agreement.clone()));
        }
        if let Some(deadline) = record.retention_deadline
            && now >= deadline
        {
            return Err(VaultError::RetentionEnded {
                agreement: agreement.clone(),
                deadline,
            });
        }
        Ok(())
    }

    /// Forgets a copy that was begun but never received a byte (the
    /// provider refused the release, say), so that no "receiving" record
    /// and key linger for it. A copy holding any data is kept: running the
    /// fetch again resumes it. Returns whether it was forgotten.
    pub fn abandon_if_empty(&self, agreement: &AgreementId) -> Result<bool> {
        let _g = self.guard()?;
        let Some(record) = self.get(agreement)? else {
            return Ok(false);
        };
        let part = crypto::part_path(&self.sealed_path(agreement));
        let empty = match fs::metadata(&part) {
            Ok(m) => m.len() == 0,
            Err(e) if e.kind() == io::ErrorKind::NotFound => true,
            Err(e) => return Err(io_err("stat", &part)(e)),
        };
        if record.state != SealedState::Receiving || !empty {
            return Ok(false);
        }
        self.destroy_key(agreement)?;
        self.records.remove(&agreement.to_string())?;
        self.store.flush()?;
        remove_if_present(&part)?;
        Ok(true)
    }

    /// Crypto-shreds the copy of `agreement`: audit first, record the copy
    /// as shredded (flushed together with the audit entry), then destroy
    /// the key and remove the sealed bytes.
    ///
    /// The record goes first so that a key whose destruction fails (an I/O
    /// error, a crash) leaves a copy that is refused to [`Vault::open_to`]
    /// all the same; [`Vault::shred_due`] destroys such a leftover key later.
    /// A shredded copy whose key is still there is finished here too.
    pub fn shred(
        &self,
        agreement: &AgreementId,
        actor: Actor,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<SealedRecord> {
        let _g = self.guard()?;
        let mut record = self
            .get(agreement)?
            .ok_or_else(|| VaultError::NotFound(agreement.clone()))?;
        if let (SealedState::Shredded, Some(at)) = (record.state, record.shredded_at) {
            self.destroy_key(agreement)?;
            return Err(VaultError::Shredded {
                agreement: agreement.clone(),
                at,
                reason: record.shred_reason.unwrap_or_default(),
            });
        }
        // One flush covers both: the store keeps writes in order, so a
        // crash can keep the entry without the new state, never the state
        // without the entry.
        self.audit.append_unflushed(
            actor,
            AuditEvent::DataShredded,
            vec![agreement.to_string(), record.dataset.to_string()],
            json!({
                "reason": reason,
                "state": record.state.to_string(),
                "retention_deadline": record.retention_deadline.map(|d| d.unix_timestamp()),
            }),
            now,
        )?;
        record.state = SealedState::Shredded;
        record.shredded_at = Some(now);
        record.shred_reason = Some(reason.to_owned());
        self.records.insert(&agreement.to_string(), &record)?;
        self.store.flush()?;
        if let Err(e) = self.destroy_key(agreement) {
            return Err(VaultError::KeyFile {
                path: self.key_path(agreement),
                reason: format!(
                    "the copy is recorded as shredded and no longer opens, but destroying its key failed ({e}); the retention watcher tries again"
                ),
            });
        }
        // The key is gone, so what follows only frees space.
        let sealed = self.sealed_path(agreement);
        for path in [crypto::part_path(&sealed), sealed] {
            if let Err(e) = remove_if_present(&path) {
                tracing::warn!(agreement = %agreement, "shredded, but the ciphertext stays: {e}");
            }
        }
        tracing::info!(agreement = %agreement, reason, "sealed data crypto-shredded");
        Ok(record)
    }

    /// Shreds every copy whose retention deadline is at or before `now`.
    /// One copy that cannot be shredded (its audit entry cannot be written,
    /// say) does not hold up the others; it is logged and tried again at
    /// the next round.
    ///
    /// Keys left behind by a shredding whose key destruction failed are
    /// destroyed here too; those copies are not returned again.
    pub fn shred_due(&self, now: OffsetDateTime) -> Result<Vec<SealedRecord>> {
        let records = self.list(None)?;
        for r in records.iter().filter(|r| r.state == SealedState::Shredded) {
            if let Err(e) = self.finish_shredded(&r.agreement) {
                tracing::error!(agreement = %r.agreement, "cannot destroy the key of a shredded copy: {e}");
            }
        }
        let due: Vec<AgreementId> = records
            .into_iter()
            .filter(|r| r.state != SealedState::Shredded)
            .filter(|r| r.retention_deadline.is_some_and(|d| d <= now))
            .map(|r| r.agreement)
            .collect();
        let mut shredded = Vec::with_capacity(due.len());
        for id in &due {
            match self.shred(id, Actor::Node, "retention end of the agreement", now) {
                Ok(r) => shredded.push(r),
                Err(e) => {
                    tracing::error!(agreement = %id, "cannot shred at the retention end: {e}")
                }
            }
        }
        Ok(shredded)
    }

    /// Destroys the key of a copy recorded as shredded, if it is still
    /// there. Under the lock, so it cannot race a fetch that replaces the
    /// shredded copy with a new one under a new key.
    fn finish_shredded(&self, agreement: &AgreementId) -> Result<()> {
        let _g = self.guard()?;
        match self.get(agreement)? {
            Some(r) if r.state == SealedState::Shredded => self.destroy_key(agreement),
            _ => Ok(()),
        }
    }

    /// The earliest deadline still ahead of a copy that is not shredded.
    pub fn next_deadline(&self) -> Result<Option<OffsetDateTime>> {
        Ok(self
            .list(None)?
            .into_iter()
            .filter(|r| r.state != SealedState::Shredded)
            .filter_map(|r| r.retention_deadline)
            .min())
    }

    /// Shreds copies as their retention ends, including any that came due
    /// while the node was down. Spawn once.
    pub async fn run(self: Arc<Self>) {
        loop {
            let this = self.clone();
            let now = OffsetDateTime::now_utc();
            let nap = match tokio::task::spawn_blocking(move || {
                this.shred_due(now)?;
                this.next_deadline()
            })
            .await
            {
                Ok(Ok(next)) => next
                    .map(|d| (d - OffsetDateTime::now_utc()).max(time::Duration::ZERO))
                    .and_then(|d| Duration::try_from(d).ok())
                    .map_or(MAX_NAP, |d| d.min(MAX_NAP)),
                Ok(Err(e)) => {
                    tracing::error!("retention watcher: {e}; retrying");
                    MAX_NAP
                }
                Err(e) => {
                    tracing::error!("retention watcher task: {e}; retrying");
                    MAX_NAP
                }
            };
            tokio::select! {
                () = tokio::time::sleep(nap) => {}
                () = self.changed.notified() => {}
            }
        }
    }

    fn write_key(&self, agreement: &AgreementId, wrapped: &WrappedKey) -> Result<()> {
        let path = self.key_path(agreement);
        let bytes = serde_json::to_vec(wrapped).map_err(|e| VaultError::KeyFile {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        crate::durable::write_atomic(&path, &bytes, 0o600, crate::durable::Overwrite::Replace)
            .map_err(io_err("write", &path))?;
        Ok(())
    }

    fn read_key(&self, agreement: &AgreementId) -> Result<Option<DataKey>> {
        let path = self.key_path(agreement);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        let wrapped: WrappedKey =
            serde_json::from_slice(&bytes).map_err(|e| VaultError::KeyFile {
                path: path.clone(),
                reason: format!("not a wrapped key: {e}"),
            })?;
        Ok(Some(wrapped.unwrap(&self.storage_key, agreement.as_str())?))
    }

    /// Overwrites the key file in place before unlinking it, so the wrapped
    /// key does not linger in the freed blocks of a file system that
    /// updates in place.
    fn destroy_key(&self, agreement: &AgreementId) -> Result<()> {
        let path = self.key_path(agreement);
        let mut f = match OpenOptions::new().write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("open", &path)(e)),
        };
        let len = f.metadata().map_err(io_err("stat", &path))?.len();
        let zeros = vec![0u8; usize::try_from(len).unwrap_or(0)];
        f.write_all(&zeros).map_err(io_err("overwrite", &path))?;
        f.sync_all().map_err(io_err("sync", &path))?;
        drop(f);
        fs::remove_file(&path).map_err(io_err("remove", &path))?;
        crypto::sync_parent(&path)?;
        Ok(())
    }
}

/// A download in progress ([`Vault::download`]): plaintext chunks of at
/// most one segment, from the offset asked for to the end.
#[derive(Debug)]
pub struct Download {
    vault: Arc<Vault>,
    agreement: AgreementId,
    started_at: OffsetDateTime,
    /// Bytes of the next segment the client already holds.
    skip: usize,
    reader: UnsealReader,
    size: u64,
    hash: Digest,
}

impl Download {
    /// The plaintext size and BLAKE3 of the whole data.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn hash(&self) -> &Digest {
        &self.hash
    }

    /// The next chunk into `buf` (replacing its contents); `false` at the
    /// end. Refused once the copy is shredded or its retention ends.
    pub fn next_chunk(&mut self, buf: &mut Vec<u8>, now: OffsetDateTime) -> Result<bool> {
        let _g = self.vault.guard()?;
        self.vault
            .still_openable(&self.agreement, self.started_at, now)?;
        match self.reader.next_into(buf) {
            None => Ok(false),
            Some(Err(e)) => Err(e.into()),
            Some(Ok(_)) => {
                let skip = std::mem::take(&mut self.skip).min(buf.len());
                buf.drain(..skip);
                Ok(true)
            }
        }
    }
}

fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", path)(e)),
    }
}

#[cfg(test)]
mod tests;
