//! Signed dataset descriptors: what a publisher announces about a dataset,
//! and the envelope that lets any member check who announced it and that it
//! is unchanged.
//!
//! A descriptor arrives from the network, so [`DatasetDescriptor::validate`]
//! bounds every field before anything else looks at it. The envelope
//! ([`SignedDescriptor`]) carries the BLAKE3 digest of the canonical bytes
//! beside the signature, so verification can say *"the record was changed
//! after signing"* apart from *"this signature is not the publisher's"*. See
//! `docs/SIGNED-RECORDS.md`.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;

use crate::classification::DataProfile;
use crate::policy::{Constraint, Policy, RegionSet};
use crate::region::Region;
use crate::signing::{self, SigningContext, b64};

/// A field of an untrusted record that is out of bounds, named by its path
/// (`offers[1].policy.permissions[0]`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}` is invalid: {reason}")]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub(crate) fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// An ed25519 public key as it appears in records (standard base64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PublicKey(#[serde(with = "b64")] pub [u8; 32]);

impl PublicKey {
    /// The key as a verifier; fails for byte strings that are not a curve
    /// point, which a record from the network may well contain.
    pub fn verifying_key(&self) -> Result<VerifyingKey, FieldError> {
        VerifyingKey::from_bytes(&self.0)
            .map_err(|_| FieldError::new("key", format!("{self} is not an ed25519 public key")))
    }
}

impl From<&VerifyingKey> for PublicKey {
    fn from(k: &VerifyingKey) -> Self {
        PublicKey(k.to_bytes())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&b64::encode(&self.0))
    }
}

/// A BLAKE3 hash, written as 64 lower-case hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    pub fn of(bytes: &[u8]) -> Self {
        Digest(*blake3::hash(bytes).as_bytes())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(blake3::Hash::from_bytes(self.0).to_hex().as_str())
    }
}

impl FromStr for Digest {
    type Err = FieldError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // blake3 also accepts upper case; one spelling per value keeps the
        // canonical bytes unique.
        if s.len() != 64
            || !s
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(FieldError::new(
                "digest",
                format!("`{s}` is not 64 lower-case hex digits"),
            ));
        }
        blake3::Hash::from_hex(s)
            .map(|h| Digest(*h.as_bytes()))
            .map_err(|e| FieldError::new("digest", format!("`{s}`: {e}")))
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// An ed25519 signature as it appears in envelopes (standard base64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RecordSignature(#[serde(with = "b64")] pub [u8; 64]);

impl RecordSignature {
    pub(crate) fn to_signature(self) -> Signature {
        Signature::from_bytes(&self.0)
    }
}

impl From<Signature> for RecordSignature {
    fn from(s: Signature) -> Self {
        RecordSignature(s.to_bytes())
    }
}

/// A member institution as records name it. The key is the one its
/// signatures verify against; the connector checks that `peer_id` is the
/// libp2p identity of a connection from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Institution {
    pub name: String,
    pub region: Region,
    /// The libp2p peer id in its text form.
    pub peer_id: String,
    pub key: PublicKey,
}

impl Institution {
    pub const MAX_NAME: usize = 256;
    pub const MAX_PEER_ID: usize = 128;

    pub(crate) fn validate(&self, at: &str) -> Result<(), FieldError> {
        line(&format!("{at}.name"), &self.name, 1, Self::MAX_NAME)?;
        let p = &self.peer_id;
        if p.is_empty()
            || p.len() > Self::MAX_PEER_ID
            || !p.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(FieldError::new(
                format!("{at}.peer_id"),
                format!(
                    "expected 1 to {} ASCII letters or digits",
                    Self::MAX_PEER_ID
                ),
            ));
        }
        self.key
            .verifying_key()
            .map(|_| ())
            .map_err(|e| FieldError::new(format!("{at}.key"), e.reason))
    }
}

/// A dataset's identity: `urn:bayspace:dataset:<64 hex>`, the hex being the
/// BLAKE3 key derivation (context `bayspace/v1 dataset-id`) over the
/// publisher's public key and the dataset's local name.
///
/// Deriving the id from the key, rather than taking random bytes, binds a
/// dataset to its publisher: a descriptor whose id does not match its
/// publisher key is refused, so no member can announce a "newer version" of
/// another member's dataset. The crate draws no randomness; the local name
/// is the publisher's choice.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DatasetId(Digest);

impl DatasetId {
    pub const PREFIX: &'static str = "urn:bayspace:dataset:";

    pub fn derive(publisher: &PublicKey, local_name: &str) -> Self {
        let mut h = blake3::Hasher::new_derive_key("bayspace/v1 dataset-id");
        h.update(&publisher.0);
        h.update(local_name.as_bytes());
        DatasetId(Digest(*h.finalize().as_bytes()))
    }
}

impl fmt::Display for DatasetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", Self::PREFIX, self.0)
    }
}

impl FromStr for DatasetId {
    type Err = FieldError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex = s.strip_prefix(Self::PREFIX).ok_or_else(|| {
            FieldError::new(
                "id",
                format!("`{s}` does not start with `{}`", Self::PREFIX),
            )
        })?;
        hex.parse()
            .map(DatasetId)
            .map_err(|e: FieldError| FieldError::new("id", e.reason))
    }
}

impl Serialize for DatasetId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DatasetId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Defines a caller-chosen URN id: `urn:` followed by 1 to 124 printable
/// ASCII characters without spaces. `from_random` formats 16 random bytes
/// (drawn by the caller) as a version-4 `urn:uuid:`.
macro_rules! urn_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn from_random(bytes: [u8; 16]) -> Self {
                $name($crate::descriptor::uuid_urn(bytes))
            }
        }

        impl TryFrom<String> for $name {
            type Error = $crate::descriptor::FieldError;

            fn try_from(s: String) -> Result<Self, Self::Error> {
                $crate::descriptor::check_urn(stringify!($name), &s)?;
                Ok($name(s))
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::descriptor::FieldError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::try_from(s.to_owned())
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}
pub(crate) use urn_id;

pub(crate) fn check_urn(what: &str, s: &str) -> Result<(), FieldError> {
    let ok = s.len() > 4
        && s.len() <= 128
        && s.starts_with("urn:")
        && s.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            what,
            format!("`{s}` is not `urn:` followed by 1 to 124 printable ASCII characters"),
        ))
    }
}

pub(crate) fn uuid_urn(mut b: [u8; 16]) -> String {
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

urn_id!(
    /// One offer of a dataset.
    OfferId
);

/// Whether requests under an offer wait for an administrator. Requests whose
/// compliance route needs approval wait whatever this says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApprovalMode {
    Manual,
    Auto,
}

/// A usage policy a dataset is offered under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Offer {
    pub id: OfferId,
    pub policy: Policy,
    pub approval: ApprovalMode,
}

/// What a publisher announces about one version of a dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetDescriptor {
    /// Must equal `DatasetId::derive(publisher.key, name)`.
    pub id: DatasetId,
    /// The publisher's local name for the dataset, from which `id` derives.
    pub name: String,
    /// Starts at 1; each re-publication raises it.
    pub version: u64,
    pub title: String,
    pub description: String,
    pub keywords: Vec<String>,
    pub publisher: Institution,
    /// Where the data is held, which the cross-border rules read; it may
    /// differ from the publisher's seat (a campus in another city).
    pub region: Region,
    pub profile: DataProfile,
    /// BLAKE3 of the plaintext content.
    pub content_hash: Digest,
    /// Plaintext size in bytes.
    pub size: u64,
    pub offers: Vec<Offer>,
    #[serde(with = "time::serde::rfc3339")]
    pub issued: OffsetDateTime,
    /// A withdrawn dataset is announced as a new version with this set, so
    /// the withdrawal supersedes every earlier announcement.
    #[serde(default)]
    pub withdrawn: bool,
}

impl DatasetDescriptor {
    pub const MAX_NAME: usize = 64;
    pub const MAX_TITLE: usize = 256;
    pub const MAX_DESCRIPTION: usize = 4096;
    pub const MAX_KEYWORDS: usize = 32;
    pub const MAX_KEYWORD: usize = 64;
    pub const MAX_OFFERS: usize = 16;

    /// Check every bound of an untrusted descriptor. Lengths are in bytes.
    pub fn validate(&self) -> Result<(), FieldError> {
        let n = &self.name;
        if n.is_empty()
            || n.len() > Self::MAX_NAME
            || !n.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
            })
        {
            return Err(FieldError::new(
                "name",
                format!(
                    "`{n}`: expected 1 to {} lower-case letters, digits, `-`, `_` or `.`",
                    Self::MAX_NAME
                ),
            ));
        }
        self.publisher.validate("publisher")?;
        if self.id != DatasetId::derive(&self.publisher.key, &self.name) {
            return Err(FieldError::new(
                "id",
                format!(
                    "{} is not derived from the publisher key and the name `{n}`",
                    self.id
                ),
            ));
        }
        if self.version == 0 {
            return Err(FieldError::new("version", "versions start at 1"));
        }
        line("title", &self.title, 1, Self::MAX_TITLE)?;
        if self.description.len() > Self::MAX_DESCRIPTION {
            return Err(FieldError::new(
                "description",
                format!("longer than {} bytes", Self::MAX_DESCRIPTION),
            ));
        }
        if self.keywords.len() > Self::MAX_KEYWORDS {
            return Err(FieldError::new(
                "keywords",
                format!("more than {} keywords", Self::MAX_KEYWORDS),
            ));
        }
        for (i, k) in self.keywords.iter().enumerate() {
            line(&format!("keywords[{i}]"), k, 1, Self::MAX_KEYWORD)?;
        }
        if self.offers.is_empty() || self.offers.len() > Self::MAX_OFFERS {
            return Err(FieldError::new(
                "offers",
                format!("expected 1 to {} offers", Self::MAX_OFFERS),
            ));
        }
        for (i, o) in self.offers.iter().enumerate() {
            if self.offers[..i].iter().any(|p| p.id == o.id) {
                return Err(FieldError::new(
                    format!("offers[{i}].id"),
                    format!("`{}` is used twice", o.id),
                ));
            }
            validate_policy(&format!("offers[{i}].policy"), &o.policy)?;
        }
        Ok(())
    }

    pub fn offer(&self, id: &OfferId) -> Option<&Offer> {
        self.offers.iter().find(|o| &o.id == id)
    }
}

/// A single line of text: `min..=max` bytes, no control characters.
pub(crate) fn line(field: &str, s: &str, min: usize, max: usize) -> Result<(), FieldError> {
    if s.len() < min || s.len() > max {
        return Err(FieldError::new(
            field,
            format!("expected {min} to {max} bytes, got {}", s.len()),
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(FieldError::new(field, "contains a control character"));
    }
    Ok(())
}

/// Bounds for a policy from the network. An offer or agreement must permit
/// something: a policy without permissions grants nothing and has no ODRL
/// rendering.
pub(crate) fn validate_policy(at: &str, p: &Policy) -> Result<(), FieldError> {
    const RULES: usize = 16;
    const CONSTRAINTS: usize = 16;
    const ITEMS: usize = 32;
    if p.permissions.is_empty() {
        return Err(FieldError::new(
            format!("{at}.permissions"),
            "a policy must permit at least one action",
        ));
    }
    let kinds = [
        ("permissions", p.permissions.len()),
        ("prohibitions", p.prohibitions.len()),
        ("obligations", p.obligations.len()),
    ];
    for (kind, n) in kinds {
        if n > RULES {
            return Err(FieldError::new(
                format!("{at}.{kind}"),
                format!("more than {RULES} rules"),
            ));
        }
    }
    let mut lists: Vec<(String, &[Constraint])> = Vec::new();
    for (i, r) in p.permissions.iter().enumerate() {
        lists.push((format!("{at}.permissions[{i}]"), &r.constraints));
        if r.duties.len() > RULES {
            return Err(FieldError::new(
                format!("{at}.permissions[{i}].duties"),
                format!("more than {RULES} duties"),
            ));
        }
        for (j, d) in r.duties.iter().enumerate() {
            lists.push((format!("{at}.permissions[{i}].duties[{j}]"), &d.constraints));
        }
    }
    for (i, r) in p.prohibitions.iter().enumerate() {
        lists.push((format!("{at}.prohibitions[{i}]"), &r.constraints));
    }
    for (i, d) in p.obligations.iter().enumerate() {
        lists.push((format!("{at}.obligations[{i}]"), &d.constraints));
    }
    for (rule, cs) in lists {
        if cs.len() > CONSTRAINTS {
            return Err(FieldError::new(
                format!("{rule}.constraints"),
                format!("more than {CONSTRAINTS} constraints"),
            ));
        }
        for (k, c) in cs.iter().enumerate() {
            let field = format!("{rule}.constraints[{k}]");
            let n = match c {
                Constraint::Purpose { is_any_of } => is_any_of.len(),
                Constraint::RecipientRegion {
                    allowed: RegionSet::AnyOf(rs),
                } => rs.len(),
                Constraint::DateTime {
                    not_before,
                    not_after,
                } => match (not_before, not_after) {
                    (None, None) => {
                        return Err(FieldError::new(field, "a date-time window needs an end"));
                    }
                    (Some(a), Some(b)) if a > b => {
                        return Err(FieldError::new(field, "not_before is after not_after"));
                    }
                    _ => 1,
                },
                _ => 1,
            };
            if n == 0 || n > ITEMS {
                return Err(FieldError::new(
                    field,
                    format!("expected 1 to {ITEMS} values"),
                ));
            }
        }
    }
    Ok(())
}

/// Why a signed descriptor was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DescriptorError {
    #[error("descriptor field {0}")]
    Invalid(#[from] FieldError),
    #[error("descriptor cannot be encoded canonically: {0}")]
    Canonical(String),
    #[error(
        "descriptor {id} was changed after signing: its canonical digest is {actual}, the envelope says {expected}"
    )]
    Tampered {
        id: DatasetId,
        expected: Digest,
        actual: Digest,
    },
    #[error("descriptor {id} names publisher key {named}, expected {expected}")]
    WrongSigner {
        id: DatasetId,
        named: PublicKey,
        expected: PublicKey,
    },
    #[error("descriptor {id}: the signature does not verify against publisher key {key}")]
    BadSignature { id: DatasetId, key: PublicKey },
}

/// A descriptor with the digest of its canonical bytes and the publisher's
/// signature over them (context [`SigningContext::Descriptor`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedDescriptor {
    pub descriptor: DatasetDescriptor,
    pub digest: Digest,
    pub signature: RecordSignature,
}

impl SignedDescriptor {
    /// Validate and sign. The key must be the publisher key the descriptor
    /// names, so a node cannot produce an envelope nobody can verify.
    pub fn sign(descriptor: DatasetDescriptor, key: &SigningKey) -> Result<Self, DescriptorError> {
        descriptor.validate()?;
        let own = PublicKey::from(&key.verifying_key());
        if own != descriptor.publisher.key {
            return Err(DescriptorError::WrongSigner {
                id: descriptor.id.clone(),
                named: descriptor.publisher.key,
                expected: own,
            });
        }
        let canonical = canonical(&descriptor)?;
        let signature = signing::sign(key, SigningContext::Descriptor, &canonical).into();
        Ok(SignedDescriptor {
            digest: Digest::of(&canonical),
            descriptor,
            signature,
        })
    }

    /// Check bounds, integrity, signer and signature, in that order. With
    /// `expected`, the descriptor must name that publisher key (the one the
    /// trust anchor admitted for the sending institution).
    pub fn verify(&self, expected: Option<&PublicKey>) -> Result<(), DescriptorError> {
        let d = &self.descriptor;
        d.validate()?;
        let canonical = canonical(d)?;
        let actual = Digest::of(&canonical);
        if actual != self.digest {
            return Err(DescriptorError::Tampered {
                id: d.id.clone(),
                expected: self.digest,
                actual,
            });
        }
        if let Some(expected) = expected
            && *expected != d.publisher.key
        {
            return Err(DescriptorError::WrongSigner {
                id: d.id.clone(),
                named: d.publisher.key,
                expected: *expected,
            });
        }
        let key = d.publisher.key.verifying_key()?;
        signing::verify(
            &key,
            SigningContext::Descriptor,
            &canonical,
            &self.signature.to_signature(),
        )
        .map_err(|_| DescriptorError::BadSignature {
            id: d.id.clone(),
            key: d.publisher.key,
        })
    }

    /// Whether this announcement replaces `other`: the same dataset with a
    /// strictly greater (version, issued) pair. An older or equal one never
    /// replaces a newer one. Only meaningful between verified envelopes; the
    /// id binds both to the same publisher.
    pub fn supersedes(&self, other: &SignedDescriptor) -> bool {
        let (a, b) = (&self.descriptor, &other.descriptor);
        a.id == b.id && (a.version, a.issued) > (b.version, b.issued)
    }
}

pub(crate) fn canonical<T: Serialize>(record: &T) -> Result<Vec<u8>, DescriptorError> {
    signing::canonical_bytes(record).map_err(|e| DescriptorError::Canonical(e.to_string()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::classification::DataLevel;
    use crate::policy::{Action, Duty, DutyAction, Permission, Prohibition, Purpose};
    use serde_json::Value;
    use time::macros::{date, datetime};

    pub(crate) fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    pub(crate) fn institution(seed: u8, name: &str, region: &str) -> Institution {
        Institution {
            name: name.into(),
            region: region.parse().unwrap(),
            peer_id: format!("12D3KooWPeer{seed}"),
            key: PublicKey::from(&key(seed).verifying_key()),
        }
    }

    pub(crate) fn policy() -> Policy {
        let purpose: Purpose = "academic-research".parse().unwrap();
        Policy {
            permissions: vec![Permission {
                action: Action::Use,
                constraints: vec![
                    Constraint::Purpose {
                        is_any_of: vec![purpose],
                    },
                    Constraint::RecipientRegion {
                        allowed: RegionSet::GbaOnly,
                    },
                    Constraint::DateTime {
                        not_before: Some(datetime!(2025-01-01 0:00 UTC)),
                        not_after: Some(datetime!(2026-12-31 23:59:59 UTC)),
                    },
                    Constraint::Count { lteq: 3 },
                ],
                duties: vec![Duty {
                    action: DutyAction::Delete,
                    constraints: vec![Constraint::Retention {
                        delete_by: date!(2027 - 06 - 30),
                    }],
                }],
            }],
            prohibitions: vec![Prohibition {
                action: Action::Distribute,
                constraints: vec![Constraint::OnwardTransferOutsideGbaProhibited],
            }],
            obligations: vec![],
        }
    }

    pub(crate) fn descriptor() -> DatasetDescriptor {
        let publisher = institution(1, "Shenzhen Bay Lab", "mainland:shenzhen");
        DatasetDescriptor {
            id: DatasetId::derive(&publisher.key, "cohort-2024"),
            name: "cohort-2024".into(),
            version: 1,
            title: "Cohort study 2024".into(),
            description: "Anonymised cohort\nwith two lines".into(),
            keywords: vec!["cohort".into(), "health".into()],
            publisher,
            region: "mainland:shenzhen".parse().unwrap(),
            profile: DataProfile {
                level: DataLevel::General,
                personal_individuals: 1200,
                sensitive_individuals: 0,
                categories: vec!["health".parse().unwrap()],
                collected_abroad: false,
            },
            content_hash: Digest::of(b"content"),
            size: 7,
            offers: vec![Offer {
                id: "urn:bayspace:offer:research".parse().unwrap(),
                policy: policy(),
                approval: ApprovalMode::Manual,
            }],
            issued: datetime!(2025-03-01 8:00 +8),
            withdrawn: false,
        }
    }

    /// Every leaf of a JSON value, by JSON pointer.
    pub(crate) fn leaves(v: &Value, at: String, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => m
                .iter()
                .for_each(|(k, c)| leaves(c, format!("{at}/{k}"), out)),
            Value::Array(a) if !a.is_empty() => a
                .iter()
                .enumerate()
                .for_each(|(i, c)| leaves(c, format!("{at}/{i}"), out)),
            _ => out.push(at),
        }
    }

    /// A changed value of the same JSON type, so that the record still
    /// parses (and the tamper check, not serde, has to catch it).
    pub(crate) fn mutate(v: &Value) -> Vec<Value> {
        match v {
            Value::Bool(b) => vec![Value::Bool(!b)],
            Value::Number(n) => vec![Value::from(n.as_u64().unwrap_or(0) + 1)],
            Value::String(s) => {
                let mut alts = vec![];
                // Same-shaped edits that stay parseable for typed strings.
                if let Some(last) = s.chars().last() {
                    let swap = match last {
                        '0'..='8' | 'a'..='e' => char::from(last as u8 + 1),
                        '9' => '0',
                        'f' => 'e',
                        _ => 'x',
                    };
                    alts.push(Value::String(format!(
                        "{}{swap}",
                        &s[..s.len() - last.len_utf8()]
                    )));
                }
                alts.push(Value::String(format!("{s}x")));
                alts.push(Value::String("macao".into()));
                alts.push(Value::String("2025-03-01T08:00:01+08:00".into()));
                alts.push(Value::String("A".repeat(43) + "="));
                alts.push(Value::String("auto".into()));
                // Other members of the closed vocabularies the records use.
                alts.extend(
                    [
                        "use",
                        "distribute",
                        "core",
                        "2027-01-01",
                        "mainland-macao",
                        "exempt",
                        "pipia",
                        "0000-0002-1694-233X",
                    ]
                    .map(|x| Value::String(x.into())),
                );
                alts
            }
            // An empty rule list gets a delete duty, the one rule any list
            // of this model accepts.
            Value::Array(a) if a.is_empty() => vec![serde_json::json!([{"action": "delete"}])],
            Value::Array(_) => vec![Value::Array(vec![])],
            Value::Null => vec![Value::from(1)],
            Value::Object(_) => vec![],
        }
    }

    /// For each leaf of the record inside `envelope` (at `record_ptr`),
    /// apply a type-preserving change that still deserialises and hand the
    /// result to `check`. Returns the leaves no such change exists for: enum
    /// tags, which the parser itself refuses to see changed.
    pub(crate) fn tamper_each<T: serde::de::DeserializeOwned>(
        envelope: &Value,
        record_ptr: &str,
        mut check: impl FnMut(&str, T),
    ) -> Vec<String> {
        let mut paths = vec![];
        let record = envelope.pointer(record_ptr).unwrap();
        leaves(record, record_ptr.into(), &mut paths);
        let mut untouchable = vec![];
        for p in &paths {
            let original = envelope.pointer(p).unwrap().clone();
            let parsed = mutate(&original).into_iter().find_map(|alt| {
                let mut changed = envelope.clone();
                *changed.pointer_mut(p).unwrap() = alt.clone();
                (alt != original)
                    .then(|| serde_json::from_value::<T>(changed).ok())
                    .flatten()
            });
            match parsed {
                Some(t) => check(p, t),
                None => untouchable.push(p.clone()),
            }
        }
        untouchable
    }

    /// The leaves that only an enum tag may occupy.
    pub(crate) fn is_tag(path: &str) -> bool {
        ["/left-operand", "/action", "/allowed"]
            .iter()
            .any(|t| path.ends_with(t))
    }

    #[test]
    fn sign_verify_and_json_round_trip() {
        let s = SignedDescriptor::sign(descriptor(), &key(1)).unwrap();
        s.verify(None).unwrap();
        s.verify(Some(&s.descriptor.publisher.key)).unwrap();
        let json = serde_json::to_string(&s).unwrap();
        let back: SignedDescriptor = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        back.verify(None).unwrap();
    }

    #[test]
    fn tampering_with_every_field_is_caught() {
        let s = SignedDescriptor::sign(descriptor(), &key(1)).unwrap();
        let v = serde_json::to_value(&s).unwrap();
        let mut tampered = 0;
        let untouchable = tamper_each::<SignedDescriptor>(&v, "/descriptor", |p, t| {
            let e = t.verify(None).unwrap_err();
            assert!(
                matches!(
                    e,
                    DescriptorError::Tampered { .. } | DescriptorError::Invalid(_)
                ),
                "{p}: {e}"
            );
            tampered += 1;
        });
        assert!(untouchable.iter().all(|p| is_tag(p)), "{untouchable:?}");
        assert!(tampered >= 25, "only {tampered} fields tampered with");
        // Tampering and re-digesting leaves a signature that fails.
        let mut t = s.clone();
        t.descriptor.title.push('!');
        t.digest = Digest::of(&canonical(&t.descriptor).unwrap());
        assert!(matches!(
            t.verify(None),
            Err(DescriptorError::BadSignature { .. })
        ));
        // The envelope's own fields too.
        let mut t = s.clone();
        t.signature.0[0] ^= 1;
        assert!(matches!(
            t.verify(None),
            Err(DescriptorError::BadSignature { .. })
        ));
        let mut t = s;
        t.digest.0[0] ^= 1;
        assert!(matches!(
            t.verify(None),
            Err(DescriptorError::Tampered { .. })
        ));
    }

    #[test]
    fn wrong_signer_is_refused() {
        let e = SignedDescriptor::sign(descriptor(), &key(2)).unwrap_err();
        assert!(matches!(e, DescriptorError::WrongSigner { .. }), "{e}");
        let s = SignedDescriptor::sign(descriptor(), &key(1)).unwrap();
        let other = PublicKey::from(&key(2).verifying_key());
        assert!(matches!(
            s.verify(Some(&other)),
            Err(DescriptorError::WrongSigner { .. })
        ));
        // A publisher swapping in its own key and re-signing breaks the id.
        let mut d = descriptor();
        d.publisher.key = other;
        let e = SignedDescriptor::sign(d, &key(2)).unwrap_err();
        assert!(e.to_string().contains("`id`"), "{e}");
    }

    #[test]
    fn supersedes_orders_by_version_then_time() {
        let v1 = SignedDescriptor::sign(descriptor(), &key(1)).unwrap();
        let mut d = descriptor();
        d.version = 2;
        d.issued = datetime!(2025-01-01 0:00 UTC);
        let v2 = SignedDescriptor::sign(d.clone(), &key(1)).unwrap();
        assert!(v2.supersedes(&v1) && !v1.supersedes(&v2));
        assert!(!v1.supersedes(&v1));
        d.issued = datetime!(2025-01-01 0:00:01 UTC);
        let v2_later = SignedDescriptor::sign(d, &key(1)).unwrap();
        assert!(v2_later.supersedes(&v2) && !v2.supersedes(&v2_later));
        let mut other = descriptor();
        other.name = "other".into();
        other.id = DatasetId::derive(&other.publisher.key, "other");
        other.version = 9;
        let other = SignedDescriptor::sign(other, &key(1)).unwrap();
        assert!(!other.supersedes(&v1));
    }

    #[test]
    fn bounds_name_the_field() {
        type Edit = Box<dyn Fn(&mut DatasetDescriptor)>;
        let cases: Vec<(&str, Edit)> = vec![
            ("title", Box::new(|d| d.title = "t".repeat(257))),
            ("title", Box::new(|d| d.title = String::new())),
            (
                "description",
                Box::new(|d| d.description = "d".repeat(4097)),
            ),
            ("keywords", Box::new(|d| d.keywords = vec!["k".into(); 33])),
            ("keywords[1]", Box::new(|d| d.keywords[1] = "k".repeat(65))),
            ("version", Box::new(|d| d.version = 0)),
            ("offers", Box::new(|d| d.offers.clear())),
            (
                "offers",
                Box::new(|d| d.offers = vec![d.offers[0].clone(); 17]),
            ),
            (
                "offers[1].id",
                Box::new(|d| d.offers.push(d.offers[0].clone())),
            ),
            (
                "offers[0].policy.permissions",
                Box::new(|d| d.offers[0].policy.permissions.clear()),
            ),
            (
                "offers[0].policy.permissions[0].constraints[0]",
                Box::new(|d| {
                    d.offers[0].policy.permissions[0].constraints[0] =
                        Constraint::Purpose { is_any_of: vec![] }
                }),
            ),
            (
                "publisher.peer_id",
                Box::new(|d| d.publisher.peer_id = "a b".into()),
            ),
            ("name", Box::new(|d| d.name = "Bad Name".into())),
        ];
        for (field, f) in cases {
            let mut d = descriptor();
            f(&mut d);
            let e = d.validate().unwrap_err();
            assert_eq!(e.field, field, "{e}");
        }
        descriptor().validate().unwrap();
    }

    #[test]
    fn ids_are_strict() {
        let d = descriptor();
        let s = d.id.to_string();
        assert_eq!(s.parse::<DatasetId>().unwrap(), d.id);
        assert!(s.to_uppercase().parse::<DatasetId>().is_err());
        assert!(s[..s.len() - 1].parse::<DatasetId>().is_err());
        let u = OfferId::from_random([0xff; 16]);
        assert_eq!(u.as_str(), "urn:uuid:ffffffff-ffff-4fff-bfff-ffffffffffff");
        assert!("offer-1".parse::<OfferId>().is_err());
        assert!("urn:a b".parse::<OfferId>().is_err());
    }
}
