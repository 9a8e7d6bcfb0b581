//! Signed usage agreements: what a provider and a consumer institution agreed
//! for one researcher, one dataset version and one purpose.
//!
//! The provider signs first ([`SigningContext::AgreementProvider`]) over the
//! canonical bytes of the [`Agreement`]. The consumer countersigns
//! ([`SigningContext::AgreementConsumer`]) over the same canonical bytes
//! followed by the 64 bytes of the provider's signature, so its signature
//! attests to the exact provider signature it accepted. An agreement binds
//! only once both signatures are present. See `docs/SIGNED-RECORDS.md`.

use std::fmt;

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use time::{Date, OffsetDateTime};

use crate::compliance::{GbaVariant, Obligation, Route};
use crate::descriptor::DescriptorError;
use crate::descriptor::{
    DatasetId, Digest, FieldError, Institution, OfferId, PublicKey, RecordSignature, canonical,
    line, urn_id, validate_policy,
};
use crate::policy::{Policy, Purpose};
use crate::signing::{self, SigningContext};

urn_id!(
    /// One agreement; chosen by the provider, usually `from_random`.
    AgreementId
);
urn_id!(
    /// The negotiation an agreement concluded.
    NegotiationId
);

/// An ORCID iD, `0000-0002-1825-0097`, with its ISO 7064 MOD 11-2 check
/// character verified so a typo is caught at the edge.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Orcid(String);

impl Orcid {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Orcid {
    type Error = FieldError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        let bad = |why: &str| FieldError::new("orcid", format!("`{s}`: {why}"));
        let b = s.as_bytes();
        let shape = b.len() == 19
            && b.iter().enumerate().all(|(i, c)| match i {
                4 | 9 | 14 => *c == b'-',
                18 => c.is_ascii_digit() || *c == b'X',
                _ => c.is_ascii_digit(),
            });
        if !shape {
            return Err(bad("expected dddd-dddd-dddd-dddX"));
        }
        let total = b[..18]
            .iter()
            .filter(|c| c.is_ascii_digit())
            .fold(0u32, |t, c| (t + u32::from(c - b'0')) * 2);
        let check = (12 - total % 11) % 11;
        let expected = if check == 10 {
            b'X'
        } else {
            b'0' + check as u8
        };
        if b[18] != expected {
            return Err(bad("the check digit does not match"));
        }
        Ok(Orcid(s))
    }
}

impl From<Orcid> for String {
    fn from(o: Orcid) -> String {
        o.0
    }
}

/// The researcher an agreement is for, as the researcher credential the
/// consumer institution issued names them. Researchers act through their
/// home node, so releases are bound to the consumer's PeerId and to this
/// credential id, not to a key of the researcher's own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Researcher {
    /// The credential's researcher id, unique within the consumer institution.
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub orcid: Option<Orcid>,
}

/// The exporter's personal information export certificate: what an
/// agreement on the `certification` route relies on instead of a contract
/// filing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    /// The certificate number the certification body issued.
    pub reference: String,
    /// The last day on which the certificate is valid (`YYYY-MM-DD`).
    pub valid_until: Date,
}

impl Certificate {
    pub const MAX_REFERENCE: usize = 128;

    /// Bounds of a certificate from an untrusted source; `at` is its field.
    pub fn validate(&self, at: &str) -> Result<(), FieldError> {
        Self::check_reference(&format!("{at}.reference"), &self.reference)
    }

    /// Bounds of a certificate reference, checked where it enters (the
    /// records on file) as well as in agreements; `field` names it.
    pub fn check_reference(field: &str, reference: &str) -> Result<(), FieldError> {
        line(field, reference, 1, Self::MAX_REFERENCE)?;
        if reference.trim().is_empty() {
            return Err(FieldError::new(field, "must not be blank"));
        }
        Ok(())
    }
}

impl fmt::Display for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (valid until {})", self.reference, self.valid_until)
    }
}

/// What both institutions agreed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agreement {
    pub id: AgreementId,
    pub negotiation: NegotiationId,
    pub dataset: DatasetId,
    pub dataset_version: u64,
    pub offer: OfferId,
    /// The assigner: the institution releasing the data.
    pub provider: Institution,
    /// The assignee: the researcher's home institution.
    pub consumer: Institution,
    pub researcher: Researcher,
    pub purpose: Purpose,
    pub constraints: Policy,
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// The compliance route the transfer was assessed under.
    pub route: Route,
    /// Which GBA Standard Contract, exactly when the route is one.
    pub variant: Option<GbaVariant>,
    pub obligations: Vec<Obligation>,
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    /// The certificate the route relies on, exactly when the route is
    /// `certification`. Left out of the canonical form when absent, so
    /// agreements signed before the field existed still verify.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<Certificate>,
}

impl Agreement {
    pub const MAX_OBLIGATIONS: usize = 16;
    pub const MAX_RESEARCHER_ID: usize = 128;

    /// Check every bound of an untrusted agreement.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.dataset_version == 0 {
            return Err(FieldError::new("dataset_version", "versions start at 1"));
        }
        self.provider.validate("provider")?;
        self.consumer.validate("consumer")?;
        if self.provider.key == self.consumer.key {
            return Err(FieldError::new(
                "consumer.key",
                "provider and consumer must be different institutions",
            ));
        }
        line(
            "researcher.name",
            &self.researcher.name,
            1,
            Institution::MAX_NAME,
        )?;
        line(
            "researcher.id",
            &self.researcher.id,
            1,
            Self::MAX_RESEARCHER_ID,
        )?;
        if self.researcher.id.chars().any(char::is_whitespace) {
            return Err(FieldError::new(
                "researcher.id",
                format!("`{}` must not contain white space", self.researcher.id),
            ));
        }
        validate_policy("constraints", &self.constraints)?;
        if self.not_before >= self.not_after {
            return Err(FieldError::new(
                "not_after",
                "the validity window must end after it starts",
            ));
        }
        match (self.route, self.variant) {
            (Route::Prohibited, _) => {
                return Err(FieldError::new(
                    "route",
                    "no agreement can be made on a prohibited route",
                ));
            }
            (Route::GbaStandardContract, None) => {
                return Err(FieldError::new(
                    "variant",
                    "the GBA Standard Contract route needs its variant",
                ));
            }
            (r, Some(v)) if r != Route::GbaStandardContract => {
                return Err(FieldError::new(
                    "variant",
                    format!("{v} given for route {r}"),
                ));
            }
            _ => {}
        }
        match (self.route, &self.certificate) {
            (Route::Certification, None) => {
                return Err(FieldError::new(
                    "certificate",
                    "the certification route needs the certificate it relies on",
                ));
            }
            (Route::Certification, Some(c)) => c.validate("certificate")?,
            (r, Some(c)) => {
                return Err(FieldError::new(
                    "certificate",
                    format!("certificate {} given for route {r}", c.reference),
                ));
            }
            (_, None) => {}
        }
        if self.obligations.len() > Self::MAX_OBLIGATIONS {
            return Err(FieldError::new(
                "obligations",
                format!("more than {}", Self::MAX_OBLIGATIONS),
            ));
        }
        for (i, o) in self.obligations.iter().enumerate() {
            if self.obligations[..i].contains(o) {
                return Err(FieldError::new(
                    format!("obligations[{i}]"),
                    format!("{o} is listed twice"),
                ));
            }
        }
        Ok(())
    }

    /// Whether the agreement holds at `now` (its window is inclusive).
    pub fn is_valid_at(&self, now: OffsetDateTime) -> bool {
        self.not_before <= now && now <= self.not_after
    }
}

/// Which party a signature belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Party {
    Provider,
    Consumer,
}

impl Party {
    fn context(self) -> SigningContext {
        match self {
            Party::Provider => SigningContext::AgreementProvider,
            Party::Consumer => SigningContext::AgreementConsumer,
        }
    }
}

impl fmt::Display for Party {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Party::Provider => "provider",
            Party::Consumer => "consumer",
        })
    }
}

/// Why a signed agreement was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgreementError {
    #[error("agreement field {0}")]
    Invalid(#[from] FieldError),
    #[error("agreement cannot be encoded canonically: {0}")]
    Canonical(String),
    #[error(
        "agreement {id} was changed after signing: its canonical digest is {actual}, the envelope says {expected}"
    )]
    Tampered {
        id: AgreementId,
        expected: Digest,
        actual: Digest,
    },
    #[error("agreement {id}: the {party} key is {named}, expected {expected}")]
    WrongSigner {
        id: AgreementId,
        party: Party,
        named: PublicKey,
        expected: PublicKey,
    },
    #[error("agreement {id}: the {party} signature does not verify against key {key}")]
    BadSignature {
        id: AgreementId,
        party: Party,
        key: PublicKey,
    },
    #[error("agreement {id} is not countersigned by the consumer")]
    MissingCountersignature { id: AgreementId },
}

impl From<DescriptorError> for AgreementError {
    fn from(e: DescriptorError) -> Self {
        AgreementError::Canonical(e.to_string())
    }
}

/// An agreement with the digest of its canonical bytes, the provider's
/// signature and, once accepted, the consumer's countersignature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedAgreement {
    pub agreement: Agreement,
    pub digest: Digest,
    pub provider_signature: RecordSignature,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_signature: Option<RecordSignature>,
}

impl SignedAgreement {
    /// The provider's half: validate and sign with the key the agreement
    /// names as the provider's.
    pub fn sign_as_provider(
        agreement: Agreement,
        key: &SigningKey,
    ) -> Result<Self, AgreementError> {
        agreement.validate()?;
        check_own_key(&agreement, Party::Provider, key)?;
        let canonical = canonical(&agreement)?;
        Ok(SignedAgreement {
            digest: Digest::of(&canonical),
            provider_signature: signing::sign(key, SigningContext::AgreementProvider, &canonical)
                .into(),
            consumer_signature: None,
            agreement,
        })
    }

    /// The consumer's half: verify the provider's signature (against
    /// `expected_provider` when the consumer knows the admitted key), then
    /// countersign with the key the agreement names as the consumer's.
    pub fn countersign(
        mut self,
        key: &SigningKey,
        expected_provider: Option<&PublicKey>,
    ) -> Result<Self, AgreementError> {
        let canonical = self.check_provider(expected_provider)?;
        check_own_key(&self.agreement, Party::Consumer, key)?;
        let message = consumer_message(&canonical, &self.provider_signature);
        self.consumer_signature =
            Some(signing::sign(key, SigningContext::AgreementConsumer, &message).into());
        Ok(self)
    }

    /// Verify the provider's half only: what a consumer checks before it
    /// countersigns.
    pub fn verify_provider(&self, expected: Option<&PublicKey>) -> Result<(), AgreementError> {
        self.check_provider(expected).map(|_| ())
    }

    /// Verify a complete agreement: bounds, integrity, both signers and both
    /// signatures. Fails with `MissingCountersignature` when the consumer has
    /// not signed.
    pub fn verify(
        &self,
        expected_provider: Option<&PublicKey>,
        expected_consumer: Option<&PublicKey>,
    ) -> Result<(), AgreementError> {
        let canonical = self.check_provider(expected_provider)?;
        let a = &self.agreement;
        let sig = self
            .consumer_signature
            .ok_or_else(|| AgreementError::MissingCountersignature { id: a.id.clone() })?;
        check_expected(a, Party::Consumer, expected_consumer)?;
        let message = consumer_message(&canonical, &self.provider_signature);
        check_signature(a, Party::Consumer, &message, sig)
    }

    pub fn is_countersigned(&self) -> bool {
        self.consumer_signature.is_some()
    }

    /// Validation, digest, provider key and signature; the canonical bytes
    /// on success.
    fn check_provider(&self, expected: Option<&PublicKey>) -> Result<Vec<u8>, AgreementError> {
        let a = &self.agreement;
        a.validate()?;
        let canonical = canonical(a)?;
        let actual = Digest::of(&canonical);
        if actual != self.digest {
            return Err(AgreementError::Tampered {
                id: a.id.clone(),
                expected: self.digest,
                actual,
            });
        }
        check_expected(a, Party::Provider, expected)?;
        check_signature(a, Party::Provider, &canonical, self.provider_signature)?;
        Ok(canonical)
    }
}

fn party(a: &Agreement, p: Party) -> &Institution {
    match p {
        Party::Provider => &a.provider,
        Party::Consumer => &a.consumer,
    }
}

fn check_own_key(a: &Agreement, p: Party, key: &SigningKey) -> Result<(), AgreementError> {
    check_expected(a, p, Some(&PublicKey::from(&key.verifying_key())))
}

fn check_expected(
    a: &Agreement,
    p: Party,
    expected: Option<&PublicKey>,
) -> Result<(), AgreementError> {
    let named = party(a, p).key;
    match expected {
        Some(e) if *e != named => Err(AgreementError::WrongSigner {
            id: a.id.clone(),
            party: p,
            named,
            expected: *e,
        }),
        _ => Ok(()),
    }
}

fn check_signature(
    a: &Agreement,
    p: Party,
    message: &[u8],
    sig: RecordSignature,
) -> Result<(), AgreementError> {
    let key = party(a, p).key;
    let vk = key.verifying_key()?;
    signing::verify(&vk, p.context(), message, &sig.to_signature()).map_err(|_| {
        AgreementError::BadSignature {
            id: a.id.clone(),
            party: p,
            key,
        }
    })
}

/// The consumer signs the agreement and the provider signature it accepted.
fn consumer_message(canonical: &[u8], provider: &RecordSignature) -> Vec<u8> {
    let mut m = Vec::with_capacity(canonical.len() + 64);
    m.extend_from_slice(canonical);
    m.extend_from_slice(&provider.0);
    m
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::descriptor::tests::{institution, is_tag, key, policy, tamper_each};
    use time::macros::datetime;

    pub(crate) fn agreement() -> Agreement {
        let provider = institution(1, "Shenzhen Bay Lab", "mainland:shenzhen");
        Agreement {
            id: AgreementId::from_random([7; 16]),
            negotiation: NegotiationId::from_random([8; 16]),
            dataset: DatasetId::derive(&provider.key, "cohort-2024"),
            dataset_version: 1,
            offer: "urn:bayspace:offer:research".parse().unwrap(),
            provider,
            consumer: institution(2, "University of Hong Kong", "hk"),
            researcher: Researcher {
                name: "Dr Chan".into(),
                orcid: Some("0000-0002-1825-0097".to_owned().try_into().unwrap()),
                id: "r-0a1b2c3d".into(),
            },
            purpose: "academic-research".parse().unwrap(),
            constraints: policy(),
            not_before: datetime!(2025-04-01 0:00 UTC),
            not_after: datetime!(2025-12-31 23:59:59 UTC),
            route: Route::GbaStandardContract,
            variant: Some(GbaVariant::MainlandHk),
            obligations: vec![
                Obligation::Filing10WorkingDays,
                Obligation::NoOnwardTransferOutsideGba,
            ],
            created: datetime!(2025-03-15 10:30 +8),
            certificate: None,
        }
    }

    /// `agreement()` on the certification route.
    pub(crate) fn certified_agreement() -> Agreement {
        let mut a = agreement();
        a.route = Route::Certification;
        a.variant = None;
        a.obligations = vec![
            Obligation::NoticeAndSeparateConsent,
            Obligation::Pipia,
            Obligation::CertificationRenewal,
        ];
        a.certificate = Some(Certificate {
            reference: "CQC-PI-2026-0042".into(),
            valid_until: time::macros::date!(2028 - 08 - 31),
        });
        a
    }

    #[test]
    fn a_certified_agreement_signs_and_round_trips() {
        let signed = SignedAgreement::sign_as_provider(certified_agreement(), &key(1))
            .unwrap()
            .countersign(&key(2), None)
            .unwrap();
        signed.verify(None, None).unwrap();
        let json = serde_json::to_value(&signed).unwrap();
        assert_eq!(
            json["agreement"]["certificate"],
            serde_json::json!({"reference": "CQC-PI-2026-0042", "valid_until": "2028-08-31"})
        );
        let back: SignedAgreement = serde_json::from_value(json).unwrap();
        back.verify(None, None).unwrap();
        // Without a certificate the field is absent, as before it existed.
        let plain = serde_json::to_value(agreement()).unwrap();
        assert!(plain.get("certificate").is_none(), "{plain}");
    }

    fn complete() -> SignedAgreement {
        SignedAgreement::sign_as_provider(agreement(), &key(1))
            .unwrap()
            .countersign(&key(2), None)
            .unwrap()
    }

    #[test]
    fn both_halves_verify_and_round_trip() {
        let half = SignedAgreement::sign_as_provider(agreement(), &key(1)).unwrap();
        half.verify_provider(Some(&half.agreement.provider.key))
            .unwrap();
        assert!(!half.is_countersigned());
        let full = half.countersign(&key(2), None).unwrap();
        let (p, c) = (full.agreement.provider.key, full.agreement.consumer.key);
        full.verify(Some(&p), Some(&c)).unwrap();
        let back: SignedAgreement =
            serde_json::from_str(&serde_json::to_string(&full).unwrap()).unwrap();
        assert_eq!(back, full);
        back.verify(None, None).unwrap();
    }

    #[test]
    fn missing_countersignature_is_incomplete() {
        let half = SignedAgreement::sign_as_provider(agreement(), &key(1)).unwrap();
        assert!(matches!(
            half.verify(None, None),
            Err(AgreementError::MissingCountersignature { .. })
        ));
    }

    #[test]
    fn tampering_with_every_field_is_caught() {
        let v = serde_json::to_value(complete()).unwrap();
        let mut tampered = 0;
        let untouchable = tamper_each::<SignedAgreement>(&v, "/agreement", |p, t| {
            let e = t.verify(None, None).unwrap_err();
            assert!(
                matches!(
                    e,
                    AgreementError::Tampered { .. } | AgreementError::Invalid(_)
                ),
                "{p}: {e}"
            );
            tampered += 1;
        });
        assert!(untouchable.iter().all(|p| is_tag(p)), "{untouchable:?}");
        assert!(tampered >= 30, "only {tampered} fields tampered with");

        let mut t = complete();
        t.agreement.purpose = "commercial-use".parse().unwrap();
        t.digest = Digest::of(&canonical(&t.agreement).unwrap());
        assert!(matches!(
            t.verify(None, None),
            Err(AgreementError::BadSignature {
                party: Party::Provider,
                ..
            })
        ));
        let mut t = complete();
        t.provider_signature.0[5] ^= 1;
        assert!(matches!(
            t.verify(None, None),
            Err(AgreementError::BadSignature {
                party: Party::Provider,
                ..
            })
        ));
        let mut t = complete();
        if let Some(s) = t.consumer_signature.as_mut() {
            s.0[5] ^= 1;
        }
        assert!(matches!(
            t.verify(None, None),
            Err(AgreementError::BadSignature {
                party: Party::Consumer,
                ..
            })
        ));
    }

    #[test]
    fn wrong_signers_are_refused() {
        let e = SignedAgreement::sign_as_provider(agreement(), &key(2)).unwrap_err();
        assert!(
            matches!(
                e,
                AgreementError::WrongSigner {
                    party: Party::Provider,
                    ..
                }
            ),
            "{e}"
        );
        let half = SignedAgreement::sign_as_provider(agreement(), &key(1)).unwrap();
        let e = half.clone().countersign(&key(1), None).unwrap_err();
        assert!(
            matches!(
                e,
                AgreementError::WrongSigner {
                    party: Party::Consumer,
                    ..
                }
            ),
            "{e}"
        );
        let stranger = PublicKey::from(&key(9).verifying_key());
        let e = half
            .clone()
            .countersign(&key(2), Some(&stranger))
            .unwrap_err();
        assert!(
            matches!(
                e,
                AgreementError::WrongSigner {
                    party: Party::Provider,
                    ..
                }
            ),
            "{e}"
        );
        let full = half.countersign(&key(2), None).unwrap();
        assert!(matches!(
            full.verify(None, Some(&stranger)),
            Err(AgreementError::WrongSigner {
                party: Party::Consumer,
                ..
            })
        ));
    }

    #[test]
    fn signatures_do_not_cross_domains() {
        let a = agreement();
        let canonical = canonical(&a).unwrap();
        // A descriptor signature over the very same bytes by the same key.
        let replayed: RecordSignature =
            signing::sign(&key(1), SigningContext::Descriptor, &canonical).into();
        let forged = SignedAgreement {
            agreement: a,
            digest: Digest::of(&canonical),
            provider_signature: replayed,
            consumer_signature: None,
        };
        assert!(matches!(
            forged.verify_provider(None),
            Err(AgreementError::BadSignature {
                party: Party::Provider,
                ..
            })
        ));
        // A consumer signature made under the provider's context.
        let mut full = complete();
        let message = consumer_message(&canonical, &full.provider_signature);
        full.consumer_signature =
            Some(signing::sign(&key(2), SigningContext::AgreementProvider, &message).into());
        assert!(matches!(
            full.verify(None, None),
            Err(AgreementError::BadSignature {
                party: Party::Consumer,
                ..
            })
        ));
        // A countersignature over another provider signature does not carry over.
        let mut other = agreement();
        other.id = AgreementId::from_random([9; 16]);
        let other = SignedAgreement::sign_as_provider(other, &key(1))
            .unwrap()
            .countersign(&key(2), None)
            .unwrap();
        let mut mixed = complete();
        mixed.consumer_signature = other.consumer_signature;
        assert!(mixed.verify(None, None).is_err());
    }

    #[test]
    fn bounds_name_the_field() {
        type Edit = Box<dyn Fn(&mut Agreement)>;
        let cases: Vec<(&str, Edit)> = vec![
            ("dataset_version", Box::new(|a| a.dataset_version = 0)),
            (
                "consumer.key",
                Box::new(|a| a.consumer.key = a.provider.key),
            ),
            ("not_after", Box::new(|a| a.not_after = a.not_before)),
            ("variant", Box::new(|a| a.variant = None)),
            ("variant", Box::new(|a| a.route = Route::StandardContract)),
            ("route", Box::new(|a| a.route = Route::Prohibited)),
            (
                "certificate",
                Box::new(|a| {
                    *a = certified_agreement();
                    a.certificate = None;
                }),
            ),
            (
                "certificate",
                Box::new(|a| a.certificate = certified_agreement().certificate),
            ),
            (
                "certificate.reference",
                Box::new(|a| {
                    *a = certified_agreement();
                    if let Some(c) = &mut a.certificate {
                        c.reference = " ".into();
                    }
                }),
            ),
            (
                "certificate.reference",
                Box::new(|a| {
                    *a = certified_agreement();
                    if let Some(c) = &mut a.certificate {
                        c.reference = "x".repeat(Certificate::MAX_REFERENCE + 1);
                    }
                }),
            ),
            (
                "obligations[2]",
                Box::new(|a| a.obligations.push(a.obligations[0])),
            ),
            ("researcher.name", Box::new(|a| a.researcher.name.clear())),
            ("researcher.id", Box::new(|a| a.researcher.id.push(' '))),
            (
                "constraints.permissions",
                Box::new(|a| a.constraints.permissions.clear()),
            ),
        ];
        for (field, f) in cases {
            let mut a = agreement();
            f(&mut a);
            assert_eq!(a.validate().unwrap_err().field, field);
        }
    }

    #[test]
    fn orcid_checks_its_digit() {
        assert!(Orcid::try_from("0000-0002-1825-0097".to_owned()).is_ok());
        assert!(Orcid::try_from("0000-0002-1694-233X".to_owned()).is_ok());
        let e = Orcid::try_from("0000-0002-1825-0098".to_owned()).unwrap_err();
        assert!(e.to_string().contains("check digit"));
        assert!(Orcid::try_from("0000-0002-1825-009".to_owned()).is_err());
    }
}
