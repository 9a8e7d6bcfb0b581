//! What the negotiator keeps: one record per negotiation (on either side),
//! one per agreement, and the administrator's records on file per dataset.
//! All of them are stored as JSON in their own trees; the JSON form is also
//! what `--json` prints, so field names are part of the interface.

use bayspace_contracts::agreement::{
    AgreementId, Certificate, NegotiationId, Orcid, SignedAgreement,
};
use bayspace_contracts::compliance::{Assessment, Records};
use bayspace_contracts::descriptor::{DatasetId, OfferId};
use bayspace_contracts::negotiation::{Role, State};
use bayspace_contracts::policy::Purpose;
use bayspace_contracts::region::Region;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::wire::Message;

/// The member institution on the other side of a negotiation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counterparty {
    pub peer_id: String,
    pub institution: String,
    pub region: Region,
}

/// The person a negotiation is for, as the consumer's researcher credential
/// names them. `id` is `admin` when an administrator acted as a researcher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requester {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub orcid: Option<Orcid>,
}

/// One state change, kept so `contract show` can tell the story.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub state: State,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Who caused it: `researcher:<id>`, `admin`, `node` or `peer:<PeerId>`.
    pub by: String,
}

/// A negotiation as one side sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NegotiationRecord {
    pub id: NegotiationId,
    pub role: Role,
    pub state: State,
    pub dataset: DatasetId,
    pub dataset_title: String,
    pub dataset_version: u64,
    pub offer: OfferId,
    pub purpose: Purpose,
    pub counterparty: Counterparty,
    pub researcher: Requester,
    /// The provider's latest assessment; the consumer learns it with the
    /// agreement (route, variant, obligations) or the termination reasons.
    #[serde(default)]
    pub assessment: Option<Assessment>,
    /// The certificate the assessment's `certification` route relies on
    /// (the provider's records), or the one the agreement names (the
    /// consumer's side); `None` on every other route.
    #[serde(default)]
    pub certificate: Option<Certificate>,
    /// Why it ended in TERMINATED, one sentence each.
    #[serde(default)]
    pub reasons: Vec<String>,
    #[serde(default)]
    pub agreement_id: Option<AgreementId>,
    /// The administrator's note on approval.
    #[serde(default)]
    pub note: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub requested_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    pub history: Vec<Step>,
    /// The researcher credential the consumer presented (its JSON), kept by
    /// the provider for the release-time checks.
    #[serde(default)]
    pub credential: Option<String>,
    /// Digests of the messages received so far, by message kind: a repeat
    /// with the same digest is a duplicate, one with another digest a
    /// conflict.
    #[serde(default)]
    pub received: Vec<(String, String)>,
    /// The last message this side sent: a duplicate is answered with it, so
    /// a peer that lost our reply gets it again.
    #[serde(default)]
    pub last_sent: Option<Message>,
}

impl NegotiationRecord {
    /// A provider-side negotiation waiting for an administrator.
    pub fn is_pending_approval(&self) -> bool {
        self.role == Role::Provider && self.state == State::Requested
    }

    pub(crate) fn push(&mut self, state: State, at: OffsetDateTime, by: &str) {
        self.state = state;
        self.updated_at = at;
        self.history.push(Step {
            state,
            at,
            by: by.to_owned(),
        });
    }
}

/// The end of an agreement before its validity ran out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revocation {
    pub reason: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// A concluded agreement as one side keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgreementRecord {
    pub role: Role,
    pub signed: SignedAgreement,
    #[serde(default)]
    pub revoked: Option<Revocation>,
    /// Releases made under it so far. The provider counts a use when the
    /// key leaves (see [`Negotiator::reserve_release`]); the consumer
    /// when the data has verified.
    ///
    /// [`Negotiator::reserve_release`]: super::Negotiator::reserve_release
    #[serde(default)]
    pub uses: u64,
    /// On the provider: the release whose key has left and whose completion
    /// the consumer has not confirmed. A request that resumes it (from a
    /// segment after the first) continues that use instead of taking
    /// another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_release: Option<OpenRelease>,
}

/// A release in progress on the provider, counted as a use already.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenRelease {
    #[serde(with = "time::serde::rfc3339")]
    pub reserved_at: OffsetDateTime,
    /// How often the consumer has resumed it.
    #[serde(default)]
    pub resumes: u32,
    /// Every segment of it has left the provider. Until then a request
    /// from segment 0, with no attempt of it being served, continues it:
    /// the attempt was cut (a kill of either side, say) before the
    /// consumer had a segment to resume from.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delivered: bool,
    /// The consumer's id of this release; `None` for a request from a
    /// consumer older than release ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<ReleaseId>,
    /// How often it was served again from segment 0 after all of it had
    /// left (the consumer died before keeping any), at most
    /// [`MAX_REDELIVERIES`](super::MAX_REDELIVERIES).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub redeliveries: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The consumer's name for one release (one use) of an agreement: 16
/// random bytes it keeps durably before it first asks, and sends with
/// every request of that release, so that the provider can tell "the same
/// release again, after a crash" from "another release". Hex in JSON,
/// a byte string in CBOR.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReleaseId(pub [u8; 16]);

impl ReleaseId {
    pub fn generate() -> Result<ReleaseId, crate::random::RandomError> {
        crate::random::bytes().map(ReleaseId)
    }
}

impl std::fmt::Display for ReleaseId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for ReleaseId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReleaseId({self})")
    }
}

impl std::str::FromStr for ReleaseId {
    type Err = String;
    fn from_str(s: &str) -> Result<ReleaseId, String> {
        let bad = || format!("a release id is 32 hex digits, not {s:?}");
        if s.len() != 32 || !s.is_ascii() {
            return Err(bad());
        }
        let mut out = [0u8; 16];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(ReleaseId(out))
    }
}

impl Serialize for ReleaseId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            s.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for ReleaseId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ReleaseId, D::Error> {
        use serde::de::Error;
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            s.parse().map_err(D::Error::custom)
        } else {
            let b = serde_bytes::ByteBuf::deserialize(d)?;
            <[u8; 16]>::try_from(b.as_slice())
                .map(ReleaseId)
                .map_err(|_| D::Error::invalid_length(b.len(), &"16 bytes"))
        }
    }
}

/// How a release request starts, as far as the use count is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseStart {
    /// From segment 0 while another attempt is being served, or with no
    /// release open: a new use.
    New,
    /// From a later segment: continues the open release.
    Resume,
    /// From segment 0 with no attempt being served, or naming a release:
    /// continues the open release on the terms of
    /// [`OpenRelease::continued_by`].
    Restart,
}

impl OpenRelease {
    /// Whether a request starting as `start`, for the consumer's release
    /// `release`, continues this release rather than taking a new use.
    ///
    /// A request naming a release continues this one only if it is this
    /// one: from a later segment, from segment 0 before all of it left,
    /// and from segment 0 after all of it left at most
    /// [`MAX_REDELIVERIES`](super::MAX_REDELIVERIES) times (the consumer
    /// died before keeping any of it; it gets the bytes it was already
    /// sent under this use, nothing more). A request naming none is judged
    /// as before release ids: a resume continues, a restart from 0 only
    /// while no other attempt is served and not all of it has left.
    pub fn continued_by(&self, start: ReleaseStart, release: Option<&ReleaseId>) -> bool {
        if self.resumes >= super::MAX_RESUMES {
            return false;
        }
        match release {
            Some(asked) => {
                self.release.as_ref() == Some(asked)
                    && match start {
                        ReleaseStart::New => false,
                        ReleaseStart::Resume => true,
                        ReleaseStart::Restart => {
                            !self.delivered || self.redeliveries < super::MAX_REDELIVERIES
                        }
                    }
            }
            None => match start {
                ReleaseStart::New => false,
                ReleaseStart::Resume => true,
                ReleaseStart::Restart => !self.delivered,
            },
        }
    }
}

impl AgreementRecord {
    pub fn id(&self) -> &AgreementId {
        &self.signed.agreement.id
    }
}

/// The records an administrator has on file for one dataset: the facts the
/// compliance assessment reads, plus the references a filing cites.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetRecords {
    pub records: Records,
    /// The identifier of the PIPIA report, cited in filings.
    #[serde(default)]
    pub pipia_reference: Option<String>,
    /// The number of the exporter's PI export certificate, whose last valid
    /// day is `records.pi_certification_valid_until`; both or neither are
    /// set. Named in agreements on the certification route.
    #[serde(default)]
    pub certification_reference: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub updated_at: Option<OffsetDateTime>,
}

impl DatasetRecords {
    /// The certificate on record, whatever its validity.
    pub fn certificate(&self) -> Option<Certificate> {
        match (
            &self.certification_reference,
            self.records.pi_certification_valid_until,
        ) {
            (Some(reference), Some(valid_until)) => Some(Certificate {
                reference: reference.clone(),
                valid_until,
            }),
            _ => None,
        }
    }
}

/// A change to a dataset's records: each `Some` replaces that fact.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordsUpdate {
    pub pipia: Option<bool>,
    pub pipia_reference: Option<String>,
    pub consent: Option<bool>,
    /// `Some(None)` clears the approval.
    pub security_assessment_valid_until: Option<Option<time::Date>>,
    pub hgr_filing: Option<bool>,
    pub hgr_security_review: Option<bool>,
    pub macao_authorisation: Option<bool>,
    pub certification_reference: Option<String>,
    /// `Some(None)` clears the certificate, its reference with it.
    pub certification_valid_until: Option<Option<time::Date>>,
}

impl RecordsUpdate {
    pub(crate) fn apply(&self, r: &mut DatasetRecords) {
        let set = |slot: &mut bool, v: Option<bool>| {
            if let Some(v) = v {
                *slot = v;
            }
        };
        set(&mut r.records.pipia, self.pipia);
        set(&mut r.records.consent, self.consent);
        set(&mut r.records.hgr_filing, self.hgr_filing);
        set(&mut r.records.hgr_security_review, self.hgr_security_review);
        set(&mut r.records.macao_authorisation, self.macao_authorisation);
        if let Some(d) = self.security_assessment_valid_until {
            r.records.security_assessment_valid_until = d;
        }
        if let Some(p) = &self.pipia_reference {
            r.pipia_reference = Some(p.clone());
        }
        if let Some(d) = self.certification_valid_until {
            r.records.pi_certification_valid_until = d;
            if d.is_none() {
                r.certification_reference = None;
            }
        }
        if let Some(c) = &self.certification_reference {
            r.certification_reference = Some(c.clone());
        }
    }
}

/// Who may see a negotiation: an administrator sees all, a researcher only
/// their own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Viewer {
    Admin,
    Researcher(String),
}

impl Viewer {
    pub fn may_see(&self, r: &NegotiationRecord) -> bool {
        match self {
            Viewer::Admin => true,
            Viewer::Researcher(id) => r.role == Role::Consumer && r.researcher.id == *id,
        }
    }
}

/// What handling one message produced.
#[derive(Debug)]
pub(super) enum Received {
    /// Applied; the message the peer must get next, if any.
    Fresh(Option<Message>),
    /// Seen before; the peer gets what this side last sent again.
    Duplicate(Option<Message>),
    /// Not acceptable; nothing changed.
    Refused(String),
}
