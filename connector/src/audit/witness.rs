//! Checkpoints of other members' audit logs, kept as witnesses.
//!
//! A node's log and its checkpoint key sit on the same host, so whoever
//! controls the host can cut entries (checkpoints included) off the end of
//! the log and the export still verifies. Each node therefore sends its
//! signed checkpoints to the other members ([`Announcement`]), and keeps
//! theirs ([`PeerCheckpoints`]). An export verified against the checkpoints a
//! peer holds ([`super::verify_export_against`]) shows a log cut short of, or
//! disagreeing with, a checkpoint the node once signed.
//!
//! What a peer may make us store is bounded: only checkpoints signed by the
//! key of an admitted member, announced by that member, at most
//! [`KEEP_PER_PEER`] per member (the latest), for at most [`MAX_PEERS`]
//! members, and never one that goes back behind a checkpoint already held.
//! Refusals are audited, at most one per relaying peer per
//! [`REFUSAL_AUDIT_INTERVAL`] and [`MAX_REFUSAL_AUDITS`] per interval in all.

use std::collections::HashMap;
use std::io::{self, BufRead, Read as _};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bayspace_contracts::signing::{CanonicalError, canonical_bytes};
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;

use super::{Actor, AuditEvent, AuditLog, Checkpoint};
use crate::identity::{PeerId, key_of_peer_id};
use crate::store::{Store, StoreError, TreeName, TypedTree, WriteSet};

/// Checkpoints held for peers, keyed `<peer id>/<number, 20 digits>` so that
/// one peer's sort by number.
pub const PEER_CHECKPOINTS_TREE: TreeName = TreeName::new("peer-checkpoints");
/// Checkpoints kept per peer; older ones are dropped. The latest is the one
/// that matters for truncation; a few more survive a lost export.
pub const KEEP_PER_PEER: usize = 16;
/// Peers whose checkpoints are kept. Only admitted members get here, so this
/// is far above any real data space; it bounds the disk all the same.
pub const MAX_PEERS: usize = 1024;
/// The largest announcement accepted; a real one is about 400 bytes.
pub const MAX_ANNOUNCEMENT_BYTES: usize = 2048;
/// The largest line of a PEER_CHECKPOINTS file.
pub const MAX_HELD_LINE_BYTES: usize = 2048;
/// The most lines read from a PEER_CHECKPOINTS file (several witnesses'
/// exports may be concatenated).
pub const MAX_HELD_LINES: usize = 4096;
/// At most one audited refusal per relaying peer in this interval.
pub const REFUSAL_AUDIT_INTERVAL: Duration = Duration::from_secs(60);
/// At most this many audited refusals in all per interval.
pub const MAX_REFUSAL_AUDITS: u32 = 16;

#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    #[error("checkpoint announcement of {size} bytes; the limit is {MAX_ANNOUNCEMENT_BYTES}")]
    TooLarge { size: usize },
    #[error("not a checkpoint announcement: {0}")]
    Malformed(String),
    #[error("`{peer}` is not a member's PeerId: {reason}")]
    BadPeer { peer: String, reason: String },
    #[error("announced by {author}, but the checkpoint is of {peer}'s log")]
    NotAuthor { peer: String, author: PeerId },
    #[error("{0} is not admitted; its checkpoints are not kept")]
    NotAdmitted(String),
    #[error("checkpoint {number} (seq {seq}) is not signed by {peer}")]
    Signature { peer: String, number: u64, seq: u64 },
    #[error(
        "rollback: checkpoint {number} of {peer} is for seq {seq}, but checkpoint {held_number} for seq {held_seq} is already held"
    )]
    Rollback {
        peer: String,
        number: u64,
        seq: u64,
        held_number: u64,
        held_seq: u64,
    },
    #[error(
        "fork: checkpoint {number} of {peer} (seq {seq}) contradicts one already held (for seq {held_seq}); the peer signed two different histories"
    )]
    Fork {
        peer: String,
        number: u64,
        seq: u64,
        held_seq: u64,
    },
    #[error("checkpoints of {MAX_PEERS} peers are already kept; those of {0} are not")]
    TooManyPeers(String),
    #[error("line {line}: {reason}")]
    HeldLine { line: usize, reason: String },
    #[error("reading line {line} failed: {source}")]
    HeldRead {
        line: usize,
        #[source]
        source: io::Error,
    },
    #[error("more than {MAX_HELD_LINES} peer checkpoints")]
    TooManyHeld,
    #[error("peer checkpoint storage: {0}")]
    Store(#[from] StoreError),
    #[error("checkpoint cannot be encoded canonically: {0}")]
    Canonical(#[from] CanonicalError),
    #[error("the peer checkpoint store is unusable after an earlier panic")]
    Poisoned,
}

impl WitnessError {
    /// Whether the message itself is bad (so the peer that relayed it
    /// misbehaved), rather than genuine but not wanted here.
    pub fn is_invalid(&self) -> bool {
        matches!(
            self,
            WitnessError::TooLarge { .. }
                | WitnessError::Malformed(_)
                | WitnessError::BadPeer { .. }
                | WitnessError::NotAuthor { .. }
                | WitnessError::Signature { .. }
        )
    }

    /// Whether this is a refusal of what a peer sent, rather than a local
    /// failure.
    fn is_refusal(&self) -> bool {
        !matches!(
            self,
            WitnessError::Store(_) | WitnessError::Canonical(_) | WitnessError::Poisoned
        )
    }
}

/// What a node sends its peers: one checkpoint of its own log, as canonical
/// JSON, on the gossip topic `bayspace/audit-checkpoints/1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Announcement {
    /// The PeerId of the node whose log it is; its key verifies `checkpoint`.
    pub peer: String,
    pub checkpoint: Checkpoint,
}

impl Announcement {
    pub fn encode(&self) -> Result<Vec<u8>, WitnessError> {
        Ok(canonical_bytes(self)?)
    }

    /// Parses and checks the signature against the key of the PeerId it
    /// names, which it returns; whether that peer is admitted is the
    /// caller's to say.
    pub fn decode(bytes: &[u8]) -> Result<(PeerId, Announcement), WitnessError> {
        if bytes.len() > MAX_ANNOUNCEMENT_BYTES {
            return Err(WitnessError::TooLarge { size: bytes.len() });
        }
        let a: Announcement =
            serde_json::from_slice(bytes).map_err(|e| WitnessError::Malformed(e.to_string()))?;
        let peer = a.check_signature()?;
        Ok((peer, a))
    }

    fn check_signature(&self) -> Result<PeerId, WitnessError> {
        let bad = |reason: String| WitnessError::BadPeer {
            peer: self.peer.chars().take(80).collect(),
            reason,
        };
        let peer: PeerId = self.peer.parse().map_err(|e| bad(format!("{e}")))?;
        let key = key_of_peer_id(&peer).map_err(|e| bad(e.to_string()))?;
        if !self.checkpoint.is_signed_by(&key) {
            return Err(WitnessError::Signature {
                peer: self.peer.clone(),
                number: self.checkpoint.number,
                seq: self.checkpoint.seq,
            });
        }
        Ok(peer)
    }
}

/// A peer's checkpoint as this node keeps it: one line of a PEER_CHECKPOINTS
/// file (canonical JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeldCheckpoint {
    /// Whose log the checkpoint is of.
    pub peer: String,
    /// When this node received it.
    #[serde(with = "time::serde::rfc3339")]
    pub received: OffsetDateTime,
    pub checkpoint: Checkpoint,
}

/// What became of an offered checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    Stored,
    /// The same checkpoint is already held (a re-announcement).
    AlreadyHeld,
}

/// Refusals seen from one relaying peer since its last audited one.
#[derive(Debug, Clone, Copy)]
struct PeerRefusals {
    audited_at: Instant,
    suppressed: u64,
}

/// Which refusals are audited: see the module documentation.
#[derive(Debug)]
struct RefusalLimiter {
    per_peer: HashMap<PeerId, PeerRefusals>,
    window_start: Instant,
    in_window: u32,
    /// Refusals not audited because the global limit was reached.
    suppressed: u64,
}

impl RefusalLimiter {
    fn new(now: Instant) -> Self {
        RefusalLimiter {
            per_peer: HashMap::new(),
            window_start: now,
            in_window: 0,
            suppressed: 0,
        }
    }

    /// `Some(refusals not audited before this one)` when this refusal is to
    /// be audited.
    fn admit(&mut self, from: PeerId, now: Instant) -> Option<u64> {
        if now.duration_since(self.window_start) >= REFUSAL_AUDIT_INTERVAL {
            self.window_start = now;
            self.in_window = 0;
            self.per_peer
                .retain(|_, r| now.duration_since(r.audited_at) < REFUSAL_AUDIT_INTERVAL);
        }
        if let Some(r) = self.per_peer.get_mut(&from)
            && now.duration_since(r.audited_at) < REFUSAL_AUDIT_INTERVAL
        {
            r.suppressed += 1;
            return None;
        }
        // Entries live one interval, and at most MAX_REFUSAL_AUDITS are
        // added per interval, so the map stays small.
        if self.in_window >= MAX_REFUSAL_AUDITS {
            self.suppressed += 1;
            return None;
        }
        self.in_window += 1;
        let earlier = self.per_peer.remove(&from).map_or(0, |r| r.suppressed)
            + std::mem::take(&mut self.suppressed);
        self.per_peer.insert(
            from,
            PeerRefusals {
                audited_at: now,
                suppressed: 0,
            },
        );
        Some(earlier)
    }
}

/// The checkpoints this node keeps for its peers.
pub struct PeerCheckpoints {
    store: Arc<dyn Store>,
    held: TypedTree<String, HeldCheckpoint>,
    audit: Arc<AuditLog>,
    /// Serialises offers, so the checks and the write see the same state.
    lock: Mutex<()>,
    limiter: Mutex<RefusalLimiter>,
}

impl std::fmt::Debug for PeerCheckpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerCheckpoints").finish_non_exhaustive()
    }
}

fn held_key(peer: &str, number: u64) -> String {
    format!("{peer}/{number:020}")
}

fn prefix(peer: &str) -> Vec<u8> {
    format!("{peer}/").into_bytes()
}

impl PeerCheckpoints {
    pub fn open(store: Arc<dyn Store>, audit: Arc<AuditLog>) -> Result<Self, WitnessError> {
        let held = TypedTree::open(&*store, PEER_CHECKPOINTS_TREE)?;
        Ok(PeerCheckpoints {
            store,
            held,
            audit,
            lock: Mutex::new(()),
            limiter: Mutex::new(RefusalLimiter::new(Instant::now())),
        })
    }

    /// The checkpoints held for `peer`, oldest first.
    pub fn held(&self, peer: &str) -> Result<Vec<HeldCheckpoint>, WitnessError> {
        Ok(self
            .held
            .scan(&prefix(peer), None, KEEP_PER_PEER * 2)?
            .into_iter()
            .map(|(_, h)| h)
            .collect())
    }

    /// The held checkpoints of `peer` as a PEER_CHECKPOINTS file: one
    /// canonical [`HeldCheckpoint`] per line.
    pub fn export(&self, peer: &str) -> Result<Vec<u8>, WitnessError> {
        let mut out = Vec::new();
        for h in self.held(peer)? {
            out.extend(canonical_bytes(&h)?);
            out.push(b'\n');
        }
        Ok(out)
    }

    /// Takes an announcement relayed by `from`, gossip-signed by `author`.
    /// A refusal is audited (rate-limited) before it is returned.
    pub fn receive(
        &self,
        bytes: &[u8],
        from: PeerId,
        author: PeerId,
        is_admitted: impl Fn(&PeerId) -> bool,
        now: OffsetDateTime,
    ) -> Result<Offered, WitnessError> {
        let result = self.offer(bytes, author, is_admitted, now);
        if let Err(e) = &result
            && e.is_refusal()
        {
            self.audit_refusal(from, e, now);
        }
        result
    }

    fn offer(
        &self,
        bytes: &[u8],
        author: PeerId,
        is_admitted: impl Fn(&PeerId) -> bool,
        now: OffsetDateTime,
    ) -> Result<Offered, WitnessError> {
        let (peer, announcement) = Announcement::decode(bytes)?;
        // Only the member itself announces its checkpoints, so a member
        // cannot make us spend its neighbours' quota.
        if peer != author {
            return Err(WitnessError::NotAuthor {
                peer: announcement.peer,
                author,
            });
        }
        if !is_admitted(&peer) {
            return Err(WitnessError::NotAdmitted(announcement.peer));
        }
        let name = peer.to_string();
        let c = announcement.checkpoint;
        let _g = self.lock.lock().map_err(|_| WitnessError::Poisoned)?;
        let held = self.held(&name)?;
        if let Some(same) = held.iter().find(|h| h.checkpoint.number == c.number) {
            if same.checkpoint == c {
                return Ok(Offered::AlreadyHeld);
            }
            return Err(WitnessError::Fork {
                peer: name,
                number: c.number,
                seq: c.seq,
                held_seq: same.checkpoint.seq,
            });
        }
        if let Some(other) = held
            .iter()
            .find(|h| h.checkpoint.seq == c.seq && h.checkpoint.digest != c.digest)
        {
            return Err(WitnessError::Fork {
                peer: name,
                number: c.number,
                seq: c.seq,
                held_seq: other.checkpoint.seq,
            });
        }
        // Held checkpoints only ever go forward, so the last is the highest
        // in number and in seq.
        if let Some(latest) = held.last()
            && (latest.checkpoint.number > c.number || latest.checkpoint.seq > c.seq)
        {
            return Err(WitnessError::Rollback {
                peer: name,
                number: c.number,
                seq: c.seq,
                held_number: latest.checkpoint.number,
                held_seq: latest.checkpoint.seq,
            });
        }
        if held.is_empty() && self.peer_count()? >= MAX_PEERS {
            return Err(WitnessError::TooManyPeers(name));
        }
        let mut writes = WriteSet::new();
        let key = held_key(&name, c.number);
        self.held.stage_expect(&mut writes, &key, None)?;
        self.held.stage_insert(
            &mut writes,
            &key,
            &HeldCheckpoint {
                peer: name.clone(),
                received: now,
                checkpoint: c,
            },
        )?;
        let excess = (held.len() + 1).saturating_sub(KEEP_PER_PEER);
        for old in held.iter().take(excess) {
            self.held
                .stage_remove(&mut writes, &held_key(&name, old.checkpoint.number));
        }
        self.store.apply(&writes)?;
        self.store.flush()?;
        Ok(Offered::Stored)
    }

    /// Distinct peers with checkpoints held; walks at most
    /// `MAX_PEERS * KEEP_PER_PEER` keys, and only when a new peer appears.
    fn peer_count(&self) -> Result<usize, WitnessError> {
        let mut peers = 0;
        let mut last_peer: Option<String> = None;
        for entry in self.held.iter(&[]) {
            let (_, h) = entry?;
            if last_peer.as_deref() != Some(h.peer.as_str()) {
                peers += 1;
                if peers >= MAX_PEERS {
                    break;
                }
                last_peer = Some(h.peer);
            }
        }
        Ok(peers)
    }

    fn audit_refusal(&self, from: PeerId, e: &WitnessError, now: OffsetDateTime) {
        let earlier = match self.limiter.lock() {
            Ok(mut l) => l.admit(from, Instant::now()),
            Err(_) => None,
        };
        let Some(earlier) = earlier else {
            tracing::debug!(%from, "peer checkpoint refused (not audited, rate limit): {e}");
            return;
        };
        tracing::warn!(%from, "peer checkpoint refused: {e}");
        if let Err(ae) = self.audit.append(
            Actor::Peer(from.to_string()),
            AuditEvent::CheckpointRefused,
            vec![from.to_string()],
            json!({ "reason": e.to_string(), "unaudited_before": earlier }),
            now,
        ) {
            tracing::error!(%from, "cannot audit a refused peer checkpoint: {ae}");
        }
    }
}

/// Reads a PEER_CHECKPOINTS file: the checkpoints of `peer`'s log that a
/// witness holds, for [`super::verify_export_against`]. Every line must be a
/// [`HeldCheckpoint`] of `peer`; signatures are checked by the verifier.
pub fn read_held<R: BufRead>(mut reader: R, peer: &str) -> Result<Vec<Checkpoint>, WitnessError> {
    let mut out = Vec::new();
    let mut buf = Vec::with_capacity(MAX_HELD_LINE_BYTES);
    let mut line = 0;
    loop {
        buf.clear();
        let read = reader
            .by_ref()
            .take(MAX_HELD_LINE_BYTES as u64)
            .read_until(b'\n', &mut buf)
            .map_err(|source| WitnessError::HeldRead {
                line: line + 1,
                source,
            })?;
        if read == 0 {
            return Ok(out);
        }
        line += 1;
        if out.len() >= MAX_HELD_LINES {
            return Err(WitnessError::TooManyHeld);
        }
        let bad = |reason: String| WitnessError::HeldLine { line, reason };
        let Some(body) = buf.strip_suffix(b"\n") else {
            return Err(bad(if buf.len() >= MAX_HELD_LINE_BYTES {
                format!("longer than {MAX_HELD_LINE_BYTES} bytes")
            } else {
                "the last line does not end with a newline".to_owned()
            }));
        };
        let held: HeldCheckpoint = serde_json::from_slice(body)
            .map_err(|e| bad(format!("not a held peer checkpoint: {e}")))?;
        if held.peer != peer {
            return Err(bad(format!(
                "a checkpoint of {}, not of {peer}",
                held.peer.chars().take(80).collect::<String>()
            )));
        }
        out.push(held.checkpoint);
    }
}
