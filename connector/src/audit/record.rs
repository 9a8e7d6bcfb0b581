//! The records of the audit log: entries and signed checkpoints.

use std::fmt;
use std::str::FromStr;

use bayspace_contracts::signing::{CanonicalError, SigningContext, canonical_bytes, verify};
use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use time::OffsetDateTime;

/// A BLAKE3 digest, written as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The `prev` of the first entry.
    pub const ZERO: Digest = Digest([0; 32]);

    pub fn of(bytes: &[u8]) -> Self {
        Digest(*blake3::hash(bytes).as_bytes())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a digest: expected 64 lowercase hex digits")]
pub struct DigestError(String);

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || DigestError(s.chars().take(80).collect());
        let bytes = s.as_bytes();
        if bytes.len() != 64 {
            return Err(bad());
        }
        let nibble = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            out[i] = (nibble(pair[0]).ok_or_else(bad)? << 4) | nibble(pair[1]).ok_or_else(bad)?;
        }
        Ok(Digest(out))
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Who caused an audited event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Actor {
    /// The node's administrator (gRPC admin API or CLI).
    Admin,
    /// The node itself: timers, automatic checks.
    Node,
    /// A researcher, by credential id.
    Researcher(String),
    /// Another member node, by libp2p peer id.
    Peer(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActorError {
    #[error(
        "`{0}` is not an actor: expected `admin`, `node`, `researcher:<id>` or `peer:<peer id>`"
    )]
    Unknown(String),
    #[error("actor `{0}` has an empty id or one with whitespace or control characters")]
    BadId(String),
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Admin => f.write_str("admin"),
            Actor::Node => f.write_str("node"),
            Actor::Researcher(id) => write!(f, "researcher:{id}"),
            Actor::Peer(id) => write!(f, "peer:{id}"),
        }
    }
}

impl FromStr for Actor {
    type Err = ActorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let id = |id: &str| {
            if id.is_empty() || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
                Err(ActorError::BadId(s.to_owned()))
            } else {
                Ok(id.to_owned())
            }
        };
        match s {
            "admin" => Ok(Actor::Admin),
            "node" => Ok(Actor::Node),
            _ => match s.split_once(':') {
                Some(("researcher", rest)) => Ok(Actor::Researcher(id(rest)?)),
                Some(("peer", rest)) => Ok(Actor::Peer(id(rest)?)),
                _ => Err(ActorError::Unknown(s.to_owned())),
            },
        }
    }
}

impl Serialize for Actor {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Actor {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What happened. The entry's `details` carry the event-specific facts
/// (reasons, routes, byte counts), so a new kind of fact needs no new
/// variant; a new kind of event does, and older verifiers refuse logs that
/// use it rather than skip it silently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuditEvent {
    AdmissionRefused,
    DatasetPublished,
    ContractRequested,
    Assessment,
    Approval,
    Rejection,
    Agreement,
    AgreementRevoked,
    KeyReleased,
    TransferCompleted,
    TransferRefused,
    /// Data kept sealed on this node was decrypted for a researcher.
    DataOpened,
    /// Data kept sealed on this node was decrypted and streamed to a
    /// researcher's own machine (`DataService.Download`).
    DataDownloaded,
    /// The key of data kept sealed was destroyed (crypto-shredding).
    DataShredded,
    /// A checkpoint of another member's log was not kept (bad signature,
    /// rollback, fork, not admitted); rate-limited.
    CheckpointRefused,
}

/// One audited event, chained to the one before it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    /// Position in the chain, from 1, without gaps.
    pub seq: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub actor: Actor,
    pub event: AuditEvent,
    /// Ids of what the event is about: datasets, agreements, transfers.
    pub subjects: Vec<String>,
    /// Event-specific facts; integers only, like every signed record.
    pub details: Value,
    /// The `digest` of the entry before, [`Digest::ZERO`] for the first.
    pub prev: Digest,
    /// BLAKE3 of the canonical bytes of this entry without `digest`.
    pub digest: Digest,
}

impl AuditEntry {
    /// The digest this entry should carry.
    pub fn compute_digest(&self) -> Result<Digest, CanonicalError> {
        Ok(Digest::of(&canonical_without(self, "digest")?))
    }
}

/// A node-signed statement "the chain up to `seq` ends in `digest`". Because
/// each digest covers every entry before it, one checkpoint authenticates
/// the whole log up to its seq.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Checkpoints are numbered from 1 without gaps, so removing one from
    /// an export is detected.
    pub number: u64,
    /// The seq of the entry just before this checkpoint.
    pub seq: u64,
    /// That entry's digest.
    pub digest: Digest,
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    /// ed25519 by the node key, context `audit-checkpoint`, over the
    /// canonical bytes of this checkpoint without `signature`.
    #[serde(with = "bayspace_contracts::signing::b64")]
    pub signature: [u8; 64],
}

impl Checkpoint {
    /// The bytes the signature is over.
    pub fn signed_bytes(&self) -> Result<Vec<u8>, CanonicalError> {
        canonical_without(self, "signature")
    }

    /// Whether `key` signed this checkpoint.
    pub fn is_signed_by(&self, key: &VerifyingKey) -> bool {
        let Ok(bytes) = self.signed_bytes() else {
            return false;
        };
        let signature = Signature::from_bytes(&self.signature);
        verify(key, SigningContext::AuditCheckpoint, &bytes, &signature).is_ok()
    }
}

/// One line of the log, as stored and as exported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum AuditRecord {
    Entry(AuditEntry),
    Checkpoint(Checkpoint),
}

/// Canonical bytes of `record`'s JSON object with the member `omit` left
/// out: how a record's own digest or signature is excluded from what it
/// covers.
fn canonical_without<T: Serialize>(record: &T, omit: &str) -> Result<Vec<u8>, CanonicalError> {
    let mut value = serde_json::to_value(record)?;
    if let Value::Object(map) = &mut value {
        map.remove(omit);
    }
    canonical_bytes(&value)
}
