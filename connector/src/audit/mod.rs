//! The audit log: append-only, hash-chained, with node-signed checkpoints,
//! exportable as JSON lines and verifiable offline.
//!
//! The rule for callers is "no audit, no action": an action that must be
//! audited is performed only after [`AuditLog::append`] has returned `Ok`,
//! which happens only once the entry is on disk. The format is described
//! in `docs/AUDIT.md`.

mod record;
mod verify;
mod witness;

use std::io::Write;
use std::num::NonZeroU64;
use std::sync::{Arc, Mutex};

use bayspace_contracts::signing::{
    CanonicalError, SigningContext, canonical_bytes, sign, verify as verify_signature,
};
use ed25519_dalek::{SigningKey, VerifyingKey};
use serde_json::Value;
use time::{OffsetDateTime, UtcOffset};
use tokio::sync::watch;

use crate::store::{Store, StoreError, TreeName, TypedTree, WriteSet};

pub use record::{
    Actor, ActorError, AuditEntry, AuditEvent, AuditRecord, Checkpoint, Digest, DigestError,
};
pub use verify::{
    Broken, CheckpointSummary, VerifyError, VerifyReport, verify_export, verify_export_against,
};
pub use witness::{
    Announcement, HeldCheckpoint, KEEP_PER_PEER, MAX_PEERS, Offered, PEER_CHECKPOINTS_TREE,
    PeerCheckpoints, WitnessError, read_held,
};

/// The tree holding the log, keyed by record position (from 1): entries and
/// checkpoints interleaved in the order they were written.
pub const AUDIT_TREE: TreeName = TreeName::new("audit-log");

/// The largest record, in bytes of its export line including the newline.
/// Appends refuse larger entries so that every export can be verified with
/// bounded memory.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log storage: {0}")]
    Store(#[from] StoreError),
    #[error("audit record cannot be encoded canonically: {0}")]
    Canonical(#[from] CanonicalError),
    #[error("audit entry {seq} would be {size} bytes; the limit is {MAX_LINE_BYTES}")]
    TooLarge { seq: u64, size: usize },
    #[error("the stored audit log is corrupt at position {position}: {reason}")]
    Corrupt { position: u64, reason: String },
    #[error("an earlier audit append panicked; the log refuses further appends")]
    Poisoned,
    #[error("writing the audit export failed: {0}")]
    Export(#[source] std::io::Error),
}

/// Where the chain ends, kept in memory so an append needs no read.
#[derive(Debug, Clone, Copy)]
struct Head {
    /// The store key of the next record.
    next_position: u64,
    /// The seq and digest of the last entry.
    last: Option<(u64, Digest)>,
    /// The number of the last checkpoint (0 for none).
    checkpoints: u64,
    /// Whether the last record is a checkpoint of the last entry.
    checkpointed: bool,
}

pub struct AuditLog {
    store: Arc<dyn Store>,
    records: TypedTree<u64, AuditRecord>,
    key: SigningKey,
    checkpoint_every: NonZeroU64,
    head: Mutex<Head>,
    /// The latest checkpoint, for the task that sends it to peers.
    latest: watch::Sender<Option<Checkpoint>>,
}

impl AuditLog {
    /// Open the log in `store`, resuming the chain after its last record.
    /// Every `checkpoint_every`-th entry is followed by a checkpoint signed
    /// with `signing_key`, the node key.
    pub fn open(
        store: Arc<dyn Store>,
        signing_key: SigningKey,
        checkpoint_every: NonZeroU64,
    ) -> Result<Self, AuditError> {
        let records = TypedTree::open(&*store, AUDIT_TREE)?;
        let (head, last_checkpoint) = resume(&records, &signing_key.verifying_key())?;
        Ok(AuditLog {
            store,
            records,
            key: signing_key,
            checkpoint_every,
            head: Mutex::new(head),
            latest: watch::Sender::new(last_checkpoint),
        })
    }

    /// The latest checkpoint, and a new value whenever one is signed. The
    /// value is published once the checkpoint is stored, possibly a moment
    /// before the flush that makes it durable.
    pub fn checkpoints(&self) -> watch::Receiver<Option<Checkpoint>> {
        self.latest.subscribe()
    }

    /// The key that verifies this log's checkpoints.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// The seq and digest of the last entry.
    pub fn last(&self) -> Result<Option<(u64, Digest)>, AuditError> {
        Ok(self.head.lock().map_err(|_| AuditError::Poisoned)?.last)
    }

    /// Append an entry and make it durable. When this returns `Ok` the entry
    /// (and the checkpoint it may complete) is flushed to disk. On `Err` the
    /// caller must not perform the action; if the error came from the
    /// final flush, the entry may still be in the log, recording a decision
    /// whose action did not happen.
    pub fn append(
        &self,
        actor: Actor,
        event: AuditEvent,
        subjects: Vec<String>,
        details: Value,
        now: OffsetDateTime,
    ) -> Result<AuditEntry, AuditError> {
        let entry = self.append_unflushed(actor, event, subjects, details, now)?;
        self.store.flush()?;
        Ok(entry)
    }

    /// Append an entry without waiting for the disk: for a caller that
    /// writes its state change to the same store next and flushes once for
    /// both. The store's log keeps writes in order, so a crash may keep the
    /// entry without the state change, never the change without the entry;
    /// the caller must flush before it acts.
    pub fn append_unflushed(
        &self,
        actor: Actor,
        event: AuditEvent,
        subjects: Vec<String>,
        details: Value,
        now: OffsetDateTime,
    ) -> Result<AuditEntry, AuditError> {
        let mut head = self.head.lock().map_err(|_| AuditError::Poisoned)?;
        let (seq, prev) = match head.last {
            Some((seq, digest)) => (seq + 1, digest),
            None => (1, Digest::ZERO),
        };
        let time = now.to_offset(UtcOffset::UTC);
        let mut entry = AuditEntry {
            seq,
            time,
            actor,
            event,
            subjects,
            details,
            prev,
            digest: Digest::ZERO,
        };
        entry.digest = entry.compute_digest()?;

        let mut writes = WriteSet::new();
        let mut position = head.next_position;
        let record = AuditRecord::Entry(entry.clone());
        check_size(seq, &record)?;
        self.stage(&mut writes, position, &record)?;
        position += 1;
        let mut checkpoints = head.checkpoints;
        let mut signed_now = None;
        if seq % self.checkpoint_every.get() == 0 {
            checkpoints += 1;
            let checkpoint = self.sign_checkpoint(checkpoints, seq, entry.digest, time)?;
            self.stage(
                &mut writes,
                position,
                &AuditRecord::Checkpoint(checkpoint.clone()),
            )?;
            signed_now = Some(checkpoint);
            position += 1;
        }
        self.store.apply(&writes)?;
        if signed_now.is_some() {
            self.latest.send_replace(signed_now);
        }
        let signed = checkpoints != head.checkpoints;
        *head = Head {
            next_position: position,
            last: Some((seq, entry.digest)),
            checkpoints,
            checkpointed: signed,
        };
        Ok(entry)
    }

    /// Sign the current end of the chain now, e.g. before an export or at
    /// shutdown. `None` when there is nothing new to sign: the log is empty
    /// or its last record already is a checkpoint.
    pub fn checkpoint(&self, now: OffsetDateTime) -> Result<Option<Checkpoint>, AuditError> {
        let mut head = self.head.lock().map_err(|_| AuditError::Poisoned)?;
        self.checkpoint_locked(&mut head, now)
    }

    /// Signs the end of the chain (when it is not signed already) and runs
    /// `f` before any other entry can be appended: what `f` reads of the
    /// store (a backup's snapshot) holds the log up to that checkpoint and
    /// no further. Returns the last checkpoint and `f`'s value.
    pub fn at_checkpoint<T>(
        &self,
        now: OffsetDateTime,
        f: impl FnOnce() -> T,
    ) -> Result<(Option<Checkpoint>, T), AuditError> {
        let mut head = self.head.lock().map_err(|_| AuditError::Poisoned)?;
        self.checkpoint_locked(&mut head, now)?;
        let latest = self.latest.borrow().clone();
        Ok((latest, f()))
    }

    fn checkpoint_locked(
        &self,
        head: &mut Head,
        now: OffsetDateTime,
    ) -> Result<Option<Checkpoint>, AuditError> {
        let Some((seq, digest)) = head.last else {
            return Ok(None);
        };
        if head.checkpointed {
            return Ok(None);
        }
        let number = head.checkpoints + 1;
        let checkpoint =
            self.sign_checkpoint(number, seq, digest, now.to_offset(UtcOffset::UTC))?;
        let mut writes = WriteSet::new();
        self.stage(
            &mut writes,
            head.next_position,
            &AuditRecord::Checkpoint(checkpoint.clone()),
        )?;
        self.store.apply(&writes)?;
        head.next_position += 1;
        head.checkpoints = number;
        head.checkpointed = true;
        self.store.flush()?;
        self.latest.send_replace(Some(checkpoint.clone()));
        Ok(Some(checkpoint))
    }

    /// Write the whole log as JSON lines: one record per line, each in
    /// canonical form, in log order. Appends may run concurrently; the
    /// export then holds a prefix of the log that includes at least every
    /// record appended before the call. Returns the number of lines.
    pub fn export<W: Write>(&self, mut writer: W) -> Result<u64, AuditError> {
        let mut lines = 0;
        for entry in self.records.iter(&[]) {
            let (_, record) = entry?;
            let mut line = canonical_bytes(&record)?;
            line.push(b'\n');
            writer.write_all(&line).map_err(AuditError::Export)?;
            lines += 1;
        }
        writer.flush().map_err(AuditError::Export)?;
        Ok(lines)
    }

    fn stage(
        &self,
        writes: &mut WriteSet,
        position: u64,
        record: &AuditRecord,
    ) -> Result<(), AuditError> {
        // A record is never overwritten: if the in-memory head were ever
        // behind the store, the append fails instead of replacing history.
        self.records.stage_expect(writes, &position, None)?;
        self.records.stage_insert(writes, &position, record)?;
        Ok(())
    }

    fn sign_checkpoint(
        &self,
        number: u64,
        seq: u64,
        digest: Digest,
        time: OffsetDateTime,
    ) -> Result<Checkpoint, AuditError> {
        let mut checkpoint = Checkpoint {
            number,
            seq,
            digest,
            time,
            signature: [0; 64],
        };
        let signature = sign(
            &self.key,
            SigningContext::AuditCheckpoint,
            &checkpoint.signed_bytes()?,
        );
        checkpoint.signature = signature.to_bytes();
        Ok(checkpoint)
    }
}

fn check_size(seq: u64, record: &AuditRecord) -> Result<(), AuditError> {
    let size = canonical_bytes(record)?.len() + 1;
    if size > MAX_LINE_BYTES {
        return Err(AuditError::TooLarge { seq, size });
    }
    Ok(())
}

/// Rebuild the head from the stored log. Only the last entry is rehashed and
/// only the last checkpoint's signature checked: checking a whole long log is
/// `verify_export`'s job, not every start's.
fn resume(
    records: &TypedTree<u64, AuditRecord>,
    key: &VerifyingKey,
) -> Result<(Head, Option<Checkpoint>), AuditError> {
    let Some((last_position, last_record)) = records.last()? else {
        return Ok((
            Head {
                next_position: 1,
                last: None,
                checkpoints: 0,
                checkpointed: false,
            },
            None,
        ));
    };
    let corrupt = |position: u64, reason: String| AuditError::Corrupt { position, reason };
    let mut last_entry: Option<(u64, Digest)> = None;
    let mut last_checkpoint: Option<Checkpoint> = None;
    let checkpointed = matches!(last_record, AuditRecord::Checkpoint(_));
    // Walk back to the last entry and the last checkpoint; with periodic
    // checkpoints this reads at most `checkpoint_every` records.
    let mut position = last_position;
    let mut record = Some(last_record);
    while position > 0 && (last_entry.is_none() || last_checkpoint.is_none()) {
        let current = match record.take() {
            Some(r) => r,
            None => records
                .get(&position)?
                .ok_or_else(|| corrupt(position, "the record is missing".to_owned()))?,
        };
        match current {
            AuditRecord::Entry(entry) if last_entry.is_none() => {
                if entry.compute_digest()? != entry.digest {
                    return Err(corrupt(
                        position,
                        format!("entry {} does not hash to its digest", entry.seq),
                    ));
                }
                last_entry = Some((entry.seq, entry.digest));
            }
            AuditRecord::Checkpoint(checkpoint) if last_checkpoint.is_none() => {
                let signature = ed25519_dalek::Signature::from_bytes(&checkpoint.signature);
                if verify_signature(
                    key,
                    SigningContext::AuditCheckpoint,
                    &checkpoint.signed_bytes()?,
                    &signature,
                )
                .is_err()
                {
                    return Err(corrupt(
                        position,
                        format!(
                            "checkpoint {} is not signed by this node's key",
                            checkpoint.number
                        ),
                    ));
                }
                last_checkpoint = Some(checkpoint);
            }
            _ => {}
        }
        position -= 1;
    }
    if let (true, Some(c)) = (checkpointed, &last_checkpoint)
        && Some((c.seq, c.digest)) != last_entry
    {
        return Err(corrupt(
            last_position,
            format!("checkpoint {} does not match the entry before it", c.number),
        ));
    }
    Ok((
        Head {
            next_position: last_position + 1,
            last: last_entry,
            checkpoints: last_checkpoint.as_ref().map_or(0, |c| c.number),
            checkpointed,
        },
        last_checkpoint,
    ))
}

#[cfg(test)]
mod tests;
