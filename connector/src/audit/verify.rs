//! Offline verification of an exported audit log.

use std::collections::BTreeMap;
use std::io::{self, BufRead, Read as _};

use bayspace_contracts::signing::{SigningContext, canonical_bytes, verify};
use ed25519_dalek::{Signature, VerifyingKey};
use time::OffsetDateTime;

use super::{AuditRecord, Checkpoint, Digest, MAX_LINE_BYTES};

/// Where the last checkpoint of an export stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointSummary {
    pub number: u64,
    pub seq: u64,
    /// When the node signed it.
    pub time: OffsetDateTime,
}

/// What a successful verification established.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub entries: u64,
    pub checkpoints: u64,
    /// The seq and digest of the last entry.
    pub last: Option<(u64, Digest)>,
    /// The last seq covered by a checkpoint. Entries after it are chained
    /// but not yet signed: anyone could have written them, and dropping them
    /// from the end of the file would not be detected.
    pub signed_through: Option<u64>,
    /// The last checkpoint in the export. Cutting lines off the end of an
    /// export moves it back, which only a checkpoint held elsewhere shows.
    pub last_checkpoint: Option<CheckpointSummary>,
    /// The highest seq confirmed by a checkpoint held by a peer
    /// ([`verify_export_against`]); `None` without such checkpoints.
    pub witnessed_through: Option<u64>,
}

impl VerifyReport {
    /// Whether every entry is covered by a checkpoint.
    pub fn fully_signed(&self) -> bool {
        self.signed_through == self.last.map(|(seq, _)| seq)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(
        "the log was cut short: it ends {}, but a peer holds checkpoint {number} for seq {seq}, signed at {time}; entries up to seq {seq} were removed from the end",
        last.map_or("before its first entry".to_owned(), |l| format!("at seq {l}"))
    )]
    Truncated {
        /// The last seq of the export.
        last: Option<u64>,
        number: u64,
        seq: u64,
        time: OffsetDateTime,
    },
    #[error("checkpoint {number} held by a peer (for seq {seq}) is not signed by this node's key")]
    HeldSignature { number: u64, seq: u64 },
    #[error(
        "fork: the node signed checkpoint {number} for seq {seq} and another checkpoint that contradicts it; the peer checkpoints disagree among themselves"
    )]
    HeldFork { number: u64, seq: u64 },
    #[error("reading line {line} of the export failed: {source}")]
    Read {
        line: usize,
        #[source]
        source: io::Error,
    },
    #[error("line {line}{}: {reason}", seq.map(|s| format!(" (seq {s})")).unwrap_or_default())]
    Broken {
        /// 1-based line number.
        line: usize,
        /// The seq the line claims, when it parses.
        seq: Option<u64>,
        reason: Broken,
    },
}

/// Why a line does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Broken {
    #[error("the line is longer than {MAX_LINE_BYTES} bytes")]
    TooLong,
    #[error("the last line does not end with a newline")]
    Unterminated,
    #[error("not an audit record: {0}")]
    Parse(String),
    #[error("the record is not written in canonical form")]
    NotCanonical,
    #[error("expected entry {expected}, found entry {found}")]
    Sequence { expected: u64, found: u64 },
    #[error("prev is {found}, but the entry before has digest {expected}")]
    Prev { expected: Digest, found: Digest },
    #[error("digest is {found}, but the entry hashes to {computed}")]
    Digest { computed: Digest, found: Digest },
    #[error("a checkpoint comes before any entry")]
    CheckpointBeforeEntries,
    #[error("expected checkpoint number {expected}, found {found}")]
    CheckpointNumber { expected: u64, found: u64 },
    #[error("the checkpoint is for entry {found}, but the entry before it is {last}")]
    CheckpointSeq { last: u64, found: u64 },
    #[error("the checkpoint's digest is not the digest of entry {seq}")]
    CheckpointDigest { seq: u64 },
    #[error("the checkpoint signature does not verify with the given key")]
    Signature,
    #[error(
        "fork: a peer holds checkpoint {number}, which gives entry {seq} another digest; this is not the log the node signed then"
    )]
    Fork { number: u64, seq: u64 },
    #[error(
        "fork: a peer holds checkpoint {number} for seq {held_seq}, but this log's checkpoint {number} is for seq {seq}"
    )]
    CheckpointFork {
        number: u64,
        seq: u64,
        held_seq: u64,
    },
}

/// Verify an export written by [`super::AuditLog::export`] against the
/// node's public key, reading one bounded line at a time. Stops at the first
/// line that is wrong and names it.
pub fn verify_export<R: BufRead>(
    reader: R,
    key: &VerifyingKey,
) -> Result<VerifyReport, VerifyError> {
    verify_export_against(reader, key, &[])
}

/// [`verify_export`], and also against checkpoints of this log that peers
/// hold (`held`, e.g. read by [`super::read_held`]): each must be signed by
/// `key`, its seq must be in the export, and the entry there must have its
/// digest. A log cut short of a held checkpoint is [`VerifyError::Truncated`];
/// one that disagrees with it is a fork ([`Broken::Fork`]).
pub fn verify_export_against<R: BufRead>(
    mut reader: R,
    key: &VerifyingKey,
    held: &[Checkpoint],
) -> Result<VerifyReport, VerifyError> {
    let mut witness = Witness::default();
    for c in held {
        if !c.is_signed_by(key) {
            return Err(VerifyError::HeldSignature {
                number: c.number,
                seq: c.seq,
            });
        }
        let by_seq = *witness.by_seq.entry(c.seq).or_insert(c);
        let by_number = *witness.by_number.entry(c.number).or_insert(c);
        if by_seq.digest != c.digest || by_number.seq != c.seq {
            return Err(VerifyError::HeldFork {
                number: c.number,
                seq: c.seq,
            });
        }
    }
    let mut report = VerifyReport::default();
    let mut buf = Vec::with_capacity(1024);
    let mut line = 0;
    loop {
        buf.clear();
        let read = reader
            .by_ref()
            .take(MAX_LINE_BYTES as u64)
            .read_until(b'\n', &mut buf)
            .map_err(|source| VerifyError::Read {
                line: line + 1,
                source,
            })?;
        if read == 0 {
            break;
        }
        line += 1;
        check_line(&buf, key, &mut report, &witness)
            .map_err(|(seq, reason)| VerifyError::Broken { line, seq, reason })?;
    }
    let last = report.last.map(|(seq, _)| seq);
    if let Some((_, c)) = witness.by_seq.last_key_value()
        && last.is_none_or(|l| l < c.seq)
    {
        return Err(VerifyError::Truncated {
            last,
            number: c.number,
            seq: c.seq,
            time: c.time,
        });
    }
    report.witnessed_through = witness.by_seq.last_key_value().map(|(seq, _)| *seq);
    Ok(report)
}

/// Checkpoints held by peers, by the seq and by the number they are for.
#[derive(Default)]
struct Witness<'a> {
    by_seq: BTreeMap<u64, &'a Checkpoint>,
    by_number: BTreeMap<u64, &'a Checkpoint>,
}

fn check_line(
    buf: &[u8],
    key: &VerifyingKey,
    report: &mut VerifyReport,
    witness: &Witness<'_>,
) -> Result<(), (Option<u64>, Broken)> {
    let Some(body) = buf.strip_suffix(b"\n") else {
        let reason = if buf.len() >= MAX_LINE_BYTES {
            Broken::TooLong
        } else {
            Broken::Unterminated
        };
        return Err((None, reason));
    };
    let record: AuditRecord =
        serde_json::from_slice(body).map_err(|e| (None, Broken::Parse(e.to_string())))?;
    let seq = match &record {
        AuditRecord::Entry(e) => e.seq,
        AuditRecord::Checkpoint(c) => c.seq,
    };
    let broken = |reason| (Some(seq), reason);
    // With one encoding per record, any edit that parses changes the value
    // and so the digest or signature.
    if canonical_bytes(&record).ok().as_deref() != Some(body) {
        return Err(broken(Broken::NotCanonical));
    }
    match record {
        AuditRecord::Entry(entry) => {
            let (expected_seq, expected_prev) = match report.last {
                Some((seq, digest)) => (seq + 1, digest),
                None => (1, Digest::ZERO),
            };
            if entry.seq != expected_seq {
                return Err(broken(Broken::Sequence {
                    expected: expected_seq,
                    found: entry.seq,
                }));
            }
            if entry.prev != expected_prev {
                return Err(broken(Broken::Prev {
                    expected: expected_prev,
                    found: entry.prev,
                }));
            }
            let computed = entry
                .compute_digest()
                .map_err(|_| broken(Broken::NotCanonical))?;
            if computed != entry.digest {
                return Err(broken(Broken::Digest {
                    computed,
                    found: entry.digest,
                }));
            }
            if let Some(held) = witness.by_seq.get(&entry.seq)
                && held.digest != entry.digest
            {
                return Err(broken(Broken::Fork {
                    number: held.number,
                    seq: entry.seq,
                }));
            }
            report.entries += 1;
            report.last = Some((entry.seq, entry.digest));
        }
        AuditRecord::Checkpoint(checkpoint) => {
            let Some((last_seq, last_digest)) = report.last else {
                return Err(broken(Broken::CheckpointBeforeEntries));
            };
            if checkpoint.number != report.checkpoints + 1 {
                return Err(broken(Broken::CheckpointNumber {
                    expected: report.checkpoints + 1,
                    found: checkpoint.number,
                }));
            }
            if checkpoint.seq != last_seq {
                return Err(broken(Broken::CheckpointSeq {
                    last: last_seq,
                    found: checkpoint.seq,
                }));
            }
            if checkpoint.digest != last_digest {
                return Err(broken(Broken::CheckpointDigest { seq: last_seq }));
            }
            let signed = checkpoint
                .signed_bytes()
                .map_err(|_| broken(Broken::NotCanonical))?;
            let signature = Signature::from_bytes(&checkpoint.signature);
            verify(key, SigningContext::AuditCheckpoint, &signed, &signature)
                .map_err(|_| broken(Broken::Signature))?;
            if let Some(held) = witness.by_number.get(&checkpoint.number)
                && held.seq != checkpoint.seq
            {
                return Err(broken(Broken::CheckpointFork {
                    number: checkpoint.number,
                    seq: checkpoint.seq,
                    held_seq: held.seq,
                }));
            }
            report.checkpoints += 1;
            report.signed_through = Some(checkpoint.seq);
            report.last_checkpoint = Some(CheckpointSummary {
                number: checkpoint.number,
                seq: checkpoint.seq,
                time: checkpoint.time,
            });
        }
    }
    Ok(())
}
