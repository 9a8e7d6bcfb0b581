//! The provider's decision at the moment of release, in two parts: the
//! facts are gathered from the stores and the swarm ([`Transfers::release_facts`]),
//! then judged without any I/O and with `now` given ([`judge`]), so that
//! every refusal can be tested with chosen facts and a chosen clock.

use std::fmt;
use std::path::Path;

use bayspace_contracts::agreement::{AgreementId, Certificate};
use bayspace_contracts::compliance::{Assessment, Blocker, Route};
use bayspace_contracts::descriptor::{DatasetId, SignedDescriptor};
use bayspace_contracts::negotiation::Role;
use bayspace_contracts::policy::{Action, Refusal, RequestContext, evaluate};
use bayspace_contracts::region::GBA_UTC_OFFSET;
use ed25519_dalek::VerifyingKey;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime};

use super::wire::{ReleaseId, TransferRequest};
use super::{Release, Transfers};
use crate::catalog::LocalFile;
use crate::identity::{
    MembershipCredential, ResearcherChecks, ResearcherCredential, RevocationList,
};
use crate::negotiator::{AgreementRecord, NegotiationRecord, ReleaseStart};

/// Why the provider refuses a release. The message is the reason sent in
/// the TransferTerminationMessage and shown to the researcher;
/// [`code`](Self::code) names the check in the audit log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReleaseRefusal {
    #[error("no agreement {0} here")]
    UnknownAgreement(AgreementId),
    #[error("agreement {0} was not made by this node as provider")]
    NotProvider(AgreementId),
    #[error("agreement {id} does not verify: {reason}")]
    BadSignature { id: AgreementId, reason: String },
    #[error("agreement {id} was revoked: {reason}")]
    Revoked { id: AgreementId, reason: String },
    #[error("agreement {id} is not valid before {}", Instant(not_before))]
    NotYetValid {
        id: AgreementId,
        not_before: OffsetDateTime,
    },
    #[error("agreement {id} expired at {}", Instant(not_after))]
    Expired {
        id: AgreementId,
        not_after: OffsetDateTime,
    },
    #[error("agreement {id} allows {limit} release(s); all are used")]
    UsesExhausted { id: AgreementId, limit: u64 },
    #[error("release {release} belongs to another agreement, not {id}")]
    ForeignRelease { id: AgreementId, release: ReleaseId },
    #[error("agreement {id} names {expected} as the consumer, not {peer}")]
    WrongPeer {
        id: AgreementId,
        expected: String,
        peer: String,
    },
    #[error("{peer} is not an admitted member now")]
    NotAdmitted { peer: String },
    #[error("{peer} connects from {remote}, outside its institution's prefixes")]
    OutsidePrefixes { peer: String, remote: Multiaddr },
    #[error("agreement {id} is for researcher {expected}, not {requested}")]
    WrongResearcher {
        id: AgreementId,
        expected: String,
        requested: String,
    },
    #[error("the researcher credential of agreement {id} is not valid now: {reason}")]
    ResearcherCredential { id: AgreementId, reason: String },
    #[error("the usage policy refuses the release now: {}", Joined(reasons, "; "))]
    PolicyRefuses { reasons: Vec<Refusal> },
    #[error("dataset {0} is no longer published here")]
    DatasetGone(DatasetId),
    #[error(
        "dataset {dataset} is now at version {version}{}; the agreement is for version {agreed}",
        if *withdrawn { " (withdrawn)" } else { "" }
    )]
    DatasetChanged {
        dataset: DatasetId,
        version: u64,
        withdrawn: bool,
        agreed: u64,
    },
    #[error("the file of dataset {0} is not on this node")]
    FileMissing(DatasetId),
    #[error(
        "the compliance assessment blocks the release now: route {route}, blockers: {}",
        if blockers.is_empty() { "none".to_owned() } else { Joined(blockers, ", ").to_string() }
    )]
    Blocked {
        route: Route,
        blockers: Vec<Blocker>,
    },
    #[error(
        "agreement {id} relies on {}, but the assessment today gives route {route} (blockers: {}); a new agreement is needed",
        Lapse(certificate.as_ref(), *today),
        if blockers.is_empty() { "none".to_owned() } else { Joined(blockers, ", ").to_string() }
    )]
    CertificationLapsed {
        id: AgreementId,
        certificate: Option<Certificate>,
        /// The GBA civil date of the release request.
        today: Date,
        route: Route,
        blockers: Vec<Blocker>,
    },
    #[error("the provider cannot check the release now: {0}")]
    Internal(String),
}

impl ReleaseRefusal {
    /// The check that refused, kebab-case, for the audit entry.
    pub fn code(&self) -> &'static str {
        match self {
            ReleaseRefusal::UnknownAgreement(_) => "unknown-agreement",
            ReleaseRefusal::NotProvider(_) => "not-provider",
            ReleaseRefusal::BadSignature { .. } => "bad-signature",
            ReleaseRefusal::Revoked { .. } => "revoked",
            ReleaseRefusal::NotYetValid { .. } => "not-yet-valid",
            ReleaseRefusal::Expired { .. } => "expired",
            ReleaseRefusal::UsesExhausted { .. } => "uses-exhausted",
            ReleaseRefusal::ForeignRelease { .. } => "foreign-release",
            ReleaseRefusal::WrongPeer { .. } => "wrong-peer",
            ReleaseRefusal::NotAdmitted { .. } => "not-admitted",
            ReleaseRefusal::OutsidePrefixes { .. } => "outside-prefixes",
            ReleaseRefusal::WrongResearcher { .. } => "wrong-researcher",
            ReleaseRefusal::ResearcherCredential { .. } => "researcher-credential",
            ReleaseRefusal::PolicyRefuses { .. } => "policy-refuses",
            ReleaseRefusal::DatasetGone(_) => "dataset-gone",
            ReleaseRefusal::DatasetChanged { .. } => "dataset-changed",
            ReleaseRefusal::FileMissing(_) => "file-missing",
            ReleaseRefusal::Blocked { .. } => "blocked",
            ReleaseRefusal::CertificationLapsed { .. } => "certification-lapsed",
            ReleaseRefusal::Internal(_) => "internal",
        }
    }

    fn internal(e: &dyn fmt::Display) -> ReleaseRefusal {
        ReleaseRefusal::Internal(e.to_string())
    }
}

struct Instant<'a>(&'a OffsetDateTime);

impl fmt::Display for Instant<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.format(&Rfc3339) {
            Ok(s) => f.write_str(&s),
            Err(_) => write!(f, "{}", self.0),
        }
    }
}

/// The certificate an agreement relied on, and whether it has expired.
struct Lapse<'a>(Option<&'a Certificate>, Date);

impl fmt::Display for Lapse<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("a certification"),
            Some(c) if c.valid_until < self.1 => write!(
                f,
                "certificate {}, which expired after {}",
                c.reference, c.valid_until
            ),
            Some(c) => write!(f, "certification under certificate {c}"),
        }
    }
}

struct Joined<'a, T>(&'a [T], &'a str);

impl<T: fmt::Display> fmt::Display for Joined<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, x) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(self.1)?;
            }
            write!(f, "{x}")?;
        }
        Ok(())
    }
}

/// What the provider knows at the moment of a release request.
#[derive(Debug, Clone)]
pub(super) struct ReleaseFacts {
    pub agreement: AgreementRecord,
    pub negotiation: Option<NegotiationRecord>,
    /// The address the peer is admitted from now; `None`: not admitted.
    pub remote: Option<Multiaddr>,
    /// The peer's membership credential on record.
    pub membership: Option<MembershipCredential>,
    pub revocations: Option<RevocationList>,
    /// The latest descriptor of the agreed dataset.
    pub dataset: Option<SignedDescriptor>,
    pub file: Option<LocalFile>,
    /// The assessment of a release of `dataset` now, with today's records
    /// and ledger; `None` without a dataset.
    pub assessment: Option<Assessment>,
    /// No other attempt of this agreement's release is being served now,
    /// so a request from segment 0 may continue a release that was cut.
    pub restart_allowed: bool,
    /// The agreement the request's release id was first used under.
    pub release_owner: Option<AgreementId>,
}

impl ReleaseFacts {
    /// How `req` starts, for the use count.
    pub(super) fn start_of(&self, req: &TransferRequest) -> ReleaseStart {
        if req.from_segment > 0 {
            ReleaseStart::Resume
        } else if self.restart_allowed || req.release.is_some() {
            // A request naming its release says which one it continues;
            // only one without needs the other attempts to be over.
            ReleaseStart::Restart
        } else {
            ReleaseStart::New
        }
    }
}

impl Transfers {
    /// Everything [`judge`] needs, read now. Fails only for an unknown
    /// agreement or a store that cannot be read.
    pub(super) async fn release_facts(
        &self,
        peer: &PeerId,
        req: &TransferRequest,
        now: OffsetDateTime,
    ) -> Result<ReleaseFacts, ReleaseRefusal> {
        let internal = |e: &dyn fmt::Display| ReleaseRefusal::internal(e);
        let (agreement, negotiation) = self
            .negotiator
            .release_context(&req.agreement)
            .map_err(|e| internal(&e))?
            .ok_or_else(|| ReleaseRefusal::UnknownAgreement(req.agreement.clone()))?;
        let ag = &agreement.signed.agreement;
        let release_owner = match &req.release {
            Some(r) => self.negotiator.release_owner(r).map_err(|e| internal(&e))?,
            None => None,
        };
        let remote = self
            .client
            .admitted_from(*peer)
            .await
            .map_err(|e| internal(&e))?;
        let dataset = self.catalog.get(&ag.dataset).map_err(|e| internal(&e))?;
        let file = self
            .catalog
            .local_file(&ag.dataset)
            .map_err(|e| internal(&e))?;
        let assessment = dataset
            .as_ref()
            .map(|d| {
                self.negotiator
                    .assess_release(&d.descriptor, ag.consumer.region, now)
            })
            .transpose()
            .map_err(|e| internal(&e))?;
        Ok(ReleaseFacts {
            membership: self.admission.credential_of(peer),
            revocations: self.admission.revocations().map_err(|e| internal(&e))?,
            agreement,
            negotiation,
            remote,
            dataset,
            file,
            assessment,
            restart_allowed: false,
            release_owner,
        })
    }
}

/// Every check of a release of `req` to `peer` at `now`, in the order of
/// docs/TRANSFER.md; the first failure refuses. `anchors` are the trust
/// anchors the researcher credential must chain to.
pub(super) fn judge(
    facts: ReleaseFacts,
    peer: &PeerId,
    req: &TransferRequest,
    anchors: &[VerifyingKey],
    now: OffsetDateTime,
) -> Result<Release, ReleaseRefusal> {
    let start = facts.start_of(req);
    let ReleaseFacts {
        agreement,
        negotiation,
        remote,
        membership,
        revocations,
        dataset,
        file,
        assessment,
        restart_allowed: _,
        release_owner,
    } = facts;
    let ag = &agreement.signed.agreement;
    let id = || ag.id.clone();
    // 1. The agreement: ours, both signatures, in force, uses left.
    if agreement.role != Role::Provider {
        return Err(ReleaseRefusal::NotProvider(id()));
    }
    agreement
        .signed
        .verify(Some(&ag.provider.key), Some(&ag.consumer.key))
        .map_err(|e| ReleaseRefusal::BadSignature {
            id: id(),
            reason: e.to_string(),
        })?;
    if let Some(r) = &agreement.revoked {
        return Err(ReleaseRefusal::Revoked {
            id: id(),
            reason: r.reason.clone(),
        });
    }
    if now < ag.not_before {
        return Err(ReleaseRefusal::NotYetValid {
            id: id(),
            not_before: ag.not_before,
        });
    }
    if now > ag.not_after {
        return Err(ReleaseRefusal::Expired {
            id: id(),
            not_after: ag.not_after,
        });
    }
    // A release id belongs to the agreement it was first used under.
    if let (Some(release), Some(owner)) = (&req.release, &release_owner)
        && owner != &ag.id
    {
        return Err(ReleaseRefusal::ForeignRelease {
            id: id(),
            release: *release,
        });
    }
    // A request continuing the release still open continues its use;
    // anything else needs one left. (The count is taken again, under the
    // negotiator's lock, when the key is about to leave.)
    let resuming = agreement
        .open_release
        .as_ref()
        .is_some_and(|o| o.continued_by(start, req.release.as_ref()));
    let uses_before = if resuming {
        agreement.uses.saturating_sub(1)
    } else {
        agreement.uses
    };
    if let Some(limit) = ag.constraints.use_limit()
        && uses_before >= limit
    {
        return Err(ReleaseRefusal::UsesExhausted { id: id(), limit });
    }
    // 2. The peer is the assignee and admitted now, 3. from its prefixes.
    if ag.consumer.peer_id != peer.to_string() {
        return Err(ReleaseRefusal::WrongPeer {
            id: id(),
            expected: ag.consumer.peer_id.clone(),
            peer: peer.to_string(),
        });
    }
    let (Some(remote), Some(membership)) = (remote, membership) else {
        return Err(ReleaseRefusal::NotAdmitted {
            peer: peer.to_string(),
        });
    };
    let inside = remote.iter().any(|p| match p {
        Protocol::Ip6(ip) => membership.body().prefixes.iter().any(|n| n.contains(&ip)),
        _ => false,
    });
    if !inside {
        return Err(ReleaseRefusal::OutsidePrefixes {
            peer: peer.to_string(),
            remote,
        });
    }
    // 4. The researcher: the one agreed, with a credential valid now.
    if req.researcher != ag.researcher.id {
        return Err(ReleaseRefusal::WrongResearcher {
            id: id(),
            expected: ag.researcher.id.clone(),
            requested: req.researcher.clone(),
        });
    }
    let credential_refused =
        |reason: String| ReleaseRefusal::ResearcherCredential { id: id(), reason };
    let credential = negotiation
        .and_then(|n| n.credential)
        .ok_or_else(|| credential_refused("none is on record".into()))?;
    ResearcherCredential::from_json(&credential, Path::new("<researcher credential>"))
        .map_err(|e| credential_refused(e.to_string()))?
        .verify(
            &membership,
            anchors,
            now,
            &ResearcherChecks {
                revocations: revocations.as_ref(),
                role: None,
            },
        )
        .map_err(|e| credential_refused(e.to_string()))?;
    // 5. The usage policy, now.
    let decision = evaluate(
        &ag.constraints,
        &RequestContext {
            action: Action::Use,
            purpose: ag.purpose.clone(),
            recipient_region: ag.consumer.region,
            now,
            uses_so_far: uses_before,
            onward_recipient: None,
        },
    );
    if !decision.allowed {
        return Err(ReleaseRefusal::PolicyRefuses {
            reasons: decision.reasons,
        });
    }
    // The data: the agreed version, still here.
    let signed = dataset.ok_or_else(|| ReleaseRefusal::DatasetGone(ag.dataset.clone()))?;
    let d = &signed.descriptor;
    if d.version != ag.dataset_version || d.withdrawn {
        return Err(ReleaseRefusal::DatasetChanged {
            dataset: ag.dataset.clone(),
            version: d.version,
            withdrawn: d.withdrawn,
            agreed: ag.dataset_version,
        });
    }
    let file = file.ok_or_else(|| ReleaseRefusal::FileMissing(ag.dataset.clone()))?;
    // 6. The assessment with today's records and ledger.
    let assessment = assessment.ok_or_else(|| {
        ReleaseRefusal::Internal(format!("no assessment of dataset {}", ag.dataset))
    })?;
    // An agreement on the certification route fixed no contract, no filing
    // and none of the recipient duties another route brings, so once the
    // route has moved (the certificate lapsed, or the year's count left
    // the band) it no longer covers the release.
    if ag.route == Route::Certification && assessment.route != Route::Certification {
        return Err(ReleaseRefusal::CertificationLapsed {
            id: id(),
            certificate: ag.certificate.clone(),
            today: now.to_offset(GBA_UTC_OFFSET).date(),
            route: assessment.route,
            blockers: assessment.blockers,
        });
    }
    if assessment.route == Route::Prohibited || !assessment.allowed_now {
        return Err(ReleaseRefusal::Blocked {
            route: assessment.route,
            blockers: assessment.blockers,
        });
    }
    Ok(Release {
        path: file.path,
        size: file.size,
        content_hash: file.content_hash,
        personal: d.profile.personal_individuals,
        sensitive: d.profile.sensitive_individuals,
        assessment,
        agreement,
        start,
    })
}

#[cfg(test)]
mod tests {
    use bayspace_contracts::descriptor::ApprovalMode;
    use serde_json::json;
    use time::{Duration, Time};

    use super::*;
    use crate::audit::Actor;
    use crate::catalog::NewDataset;
    use crate::identity::NodeKey;
    use crate::negotiator::RecordsUpdate;
    use crate::negotiator::tests::{
        Pair, agreement_of, ask, events, pair, publish, publish_with, pump,
    };

    /// A pair and the agreement the provider signs when the consumer asks
    /// for an auto offer published with `terms`.
    async fn agreed(terms: impl FnOnce(&mut NewDataset)) -> (Pair, AgreementId) {
        let p = pair();
        let ds = publish_with(&p, 0, ApprovalMode::Auto, &["hk"], terms);
        let r = ask(&p, &ds).await;
        let id = agreement_of(&p.provider, &r.id);
        (p, id)
    }

    /// What the provider's stores say now, with the consumer admitted from
    /// an address inside its prefix.
    fn facts(p: &Pair, id: &AgreementId, now: OffsetDateTime) -> ReleaseFacts {
        let (agreement, negotiation) = p.provider.n.release_context(id).unwrap().unwrap();
        let ag = &agreement.signed.agreement;
        let dataset = p.provider.catalog.get(&ag.dataset).unwrap();
        let assessment = dataset.as_ref().map(|d| {
            p.provider
                .n
                .assess_release(&d.descriptor, ag.consumer.region, now)
                .unwrap()
        });
        ReleaseFacts {
            file: p.provider.catalog.local_file(&ag.dataset).unwrap(),
            remote: Some("/ip6/fd00:852::7/tcp/4001".parse().unwrap()),
            membership: p.provider.admission.credential_of(&p.consumer.peer),
            revocations: p.provider.admission.revocations().unwrap(),
            agreement,
            negotiation,
            dataset,
            assessment,
            restart_allowed: false,
            release_owner: None,
        }
    }

    fn transfer_request(id: &AgreementId, researcher: &str) -> TransferRequest {
        TransferRequest {
            agreement: id.clone(),
            researcher: researcher.into(),
            from_segment: 0,
            release: None,
        }
    }

    /// The consumer's own request, judged on `facts` at `now`.
    fn judged(
        p: &Pair,
        facts: ReleaseFacts,
        now: OffsetDateTime,
    ) -> Result<Release, ReleaseRefusal> {
        let id = facts.agreement.id().clone();
        let anchors = p.provider.admission.anchors();
        judge(
            facts,
            &p.consumer.peer,
            &transfer_request(&id, "r-1"),
            anchors,
            now,
        )
    }

    fn refused(r: Result<Release, ReleaseRefusal>) -> ReleaseRefusal {
        match r {
            Ok(_) => panic!("the release was allowed"),
            Err(e) => e,
        }
    }

    #[tokio::test]
    async fn a_valid_release_is_allowed_and_expiry_refuses_it() {
        let (p, id) = agreed(|_| {}).await;
        let now = OffsetDateTime::now_utc();
        let release = judged(&p, facts(&p, &id, now), now).unwrap();
        assert_eq!(release.agreement.id(), &id);
        assert_eq!(release.size, 13);

        let not_after = release.agreement.signed.agreement.not_after;
        let late = not_after + Duration::SECOND;
        let e = refused(judged(&p, facts(&p, &id, late), late));
        assert_eq!(e, ReleaseRefusal::Expired { id, not_after });
        assert_eq!(e.code(), "expired");
        assert!(e.to_string().contains("expired at"), "{e}");
    }

    /// Takes a use as the release path does when the key is about to leave.
    fn reserve(
        p: &Pair,
        id: &AgreementId,
        resume: bool,
    ) -> Result<AgreementRecord, crate::negotiator::NegotiatorError> {
        let now = OffsetDateTime::now_utc();
        let release = judged(p, facts(p, id, now), now).unwrap();
        let ledger = (release.assessment, 0, 0);
        let start = if resume {
            ReleaseStart::Resume
        } else {
            ReleaseStart::New
        };
        p.provider
            .n
            .reserve_release(id, Actor::Node, json!({}), ledger, start, None, now)
    }

    #[tokio::test]
    async fn an_exhausted_use_count_is_refused() {
        let (p, id) = agreed(|d| d.use_limit = Some(1)).await;
        reserve(&p, &id, false).unwrap();
        let now = OffsetDateTime::now_utc();
        let e = refused(judged(&p, facts(&p, &id, now), now));
        assert_eq!(e, ReleaseRefusal::UsesExhausted { id, limit: 1 });
        assert_eq!(e.code(), "uses-exhausted");
    }

    #[tokio::test]
    async fn a_use_is_taken_when_the_key_leaves_and_only_a_resume_continues_it() {
        let (p, id) = agreed(|d| d.use_limit = Some(1)).await;
        let now = OffsetDateTime::now_utc();
        // Two requests judged before either takes its use both pass the
        // checks; the reservation is what refuses the second.
        let first = judged(&p, facts(&p, &id, now), now).unwrap();
        let second = judged(&p, facts(&p, &id, now), now).unwrap();
        let take = |release: &Release, resume: bool| {
            let ledger = (release.assessment.clone(), 0, 0);
            let start = if resume {
                ReleaseStart::Resume
            } else {
                ReleaseStart::New
            };
            p.provider
                .n
                .reserve_release(&id, Actor::Node, json!({}), ledger, start, None, now)
        };
        let taken = take(&first, false).unwrap();
        assert_eq!(taken.uses, 1);
        assert!(taken.open_release.is_some());
        let err = take(&second, false).unwrap_err();
        assert!(
            matches!(
                err,
                crate::negotiator::NegotiatorError::UsesExhausted { limit: 1, .. }
            ),
            "{err}"
        );
        // A resume of the open release passes the checks and takes no use.
        let mut resume = transfer_request(&id, "r-1");
        resume.from_segment = 1;
        let anchors = p.provider.admission.anchors();
        let again = judge(facts(&p, &id, now), &p.consumer.peer, &resume, anchors, now).unwrap();
        let resumed = take(&again, true).unwrap();
        assert_eq!(resumed.uses, 1);
        assert_eq!(resumed.open_release.unwrap().resumes, 1);
        // Confirmed, the release closes: a "resume" now needs a new use.
        p.provider
            .n
            .complete_release(&id, Actor::Node, json!({}), now)
            .unwrap();
        let e = refused(judge(
            facts(&p, &id, now),
            &p.consumer.peer,
            &resume,
            anchors,
            now,
        ));
        assert_eq!(e.code(), "uses-exhausted");
        let keys = events(&p.provider)
            .iter()
            .filter(|e| **e == crate::audit::AuditEvent::KeyReleased)
            .count();
        assert_eq!(keys, 2, "every reservation is audited, the refused one not");
    }

    #[tokio::test]
    async fn a_use_goes_back_only_through_the_providers_own_failure() {
        let (p, id) = agreed(|d| d.use_limit = Some(1)).await;
        reserve(&p, &id, false).unwrap();
        let back = p
            .provider
            .n
            .give_back_release(&id, "disk read failed", OffsetDateTime::now_utc())
            .unwrap();
        assert_eq!(back.uses, 0);
        assert!(back.open_release.is_none());
        reserve(&p, &id, false).unwrap();
    }

    #[tokio::test]
    async fn a_release_cut_before_its_data_left_continues_from_segment_0_without_a_new_use() {
        // Found by the kill -9 soak: the key left, then either side died
        // before the consumer had a segment; it asks again from 0.
        let (p, id) = agreed(|d| d.use_limit = Some(1)).await;
        let now = OffsetDateTime::now_utc();
        let anchors = p.provider.admission.anchors();
        let take = |facts: ReleaseFacts| {
            let req = transfer_request(&id, "r-1");
            let start = facts.start_of(&req);
            let release = judge(facts, &p.consumer.peer, &req, anchors, now)?;
            let ledger = (release.assessment.clone(), 0, 0);
            p.provider
                .n
                .reserve_release(&id, Actor::Node, json!({}), ledger, start, None, now)
                .map_err(|e| ReleaseRefusal::internal(&e))
        };
        let restart = || ReleaseFacts {
            restart_allowed: true,
            ..facts(&p, &id, now)
        };
        assert_eq!(take(restart()).unwrap().uses, 1);
        // Cut, asked again from segment 0 with no attempt being served:
        // the same use.
        let again = take(restart()).unwrap();
        assert_eq!(again.uses, 1);
        assert_eq!(again.open_release.unwrap().resumes, 1);
        // From segment 0 while another attempt is served: a new use,
        // which the limit refuses.
        let e = take(facts(&p, &id, now)).unwrap_err();
        assert_eq!(e.code(), "uses-exhausted");
        // Once every segment has left, asking from 0 again is a new use
        // (what stops a consumer that never confirms from taking it twice).
        p.provider.n.release_delivered(&id, None).unwrap();
        let e = take(restart()).unwrap_err();
        assert_eq!(e.code(), "uses-exhausted");
        let shown = p.provider.n.agreement(&id).unwrap().unwrap();
        assert_eq!(shown.uses, 1);
    }

    /// The consumer's request for release `release` of `id` from segment 0.
    fn release_request(id: &AgreementId, release: ReleaseId) -> TransferRequest {
        TransferRequest {
            release: Some(release),
            ..transfer_request(id, "r-1")
        }
    }

    /// Judges `req` as the provider does (`served`: another attempt of
    /// the agreement is being served now) and takes its use as the
    /// release path does when the key is about to leave.
    fn serve(
        p: &Pair,
        req: &TransferRequest,
        served: bool,
    ) -> Result<AgreementRecord, ReleaseRefusal> {
        let now = OffsetDateTime::now_utc();
        let facts = ReleaseFacts {
            restart_allowed: !served,
            release_owner: req
                .release
                .and_then(|r| p.provider.n.release_owner(&r).unwrap()),
            ..facts(p, &req.agreement, now)
        };
        let start = facts.start_of(req);
        let anchors = p.provider.admission.anchors();
        let release = judge(facts, &p.consumer.peer, req, anchors, now)?;
        let ledger = (release.assessment.clone(), 0, 0);
        p.provider
            .n
            .reserve_release(
                &req.agreement,
                Actor::Node,
                json!({}),
                ledger,
                start,
                req.release.as_ref(),
                now,
            )
            .map_err(|e| match e {
                crate::negotiator::NegotiatorError::UsesExhausted { id, limit } => {
                    ReleaseRefusal::UsesExhausted { id, limit }
                }
                crate::negotiator::NegotiatorError::ForeignRelease { id, release } => {
                    ReleaseRefusal::ForeignRelease { id, release }
                }
                other => ReleaseRefusal::internal(&other),
            })
    }

    fn uses(p: &Pair, id: &AgreementId) -> u64 {
        p.provider.n.agreement(id).unwrap().unwrap().uses
    }

    #[tokio::test]
    async fn a_release_delivered_whole_to_a_consumer_that_died_before_saving_it_is_counted_once() {
        // Found by the kill -9 soak: every segment left the provider, the
        // consumer was killed before any of it was durable, and its restart
        // asks for the same release from segment 0 again, perhaps before
        // the provider has noticed that the first attempt's stream died.
        let (p, id) = agreed(|_| {}).await;
        let release = ReleaseId::generate().unwrap();
        let req = release_request(&id, release);
        assert_eq!(serve(&p, &req, false).unwrap().uses, 1);
        p.provider.n.release_delivered(&id, None).unwrap();
        for served in [false, true] {
            let again = serve(&p, &req, served).unwrap();
            assert_eq!(again.uses, 1, "the release was counted twice");
        }
        let open = p
            .provider
            .n
            .agreement(&id)
            .unwrap()
            .unwrap()
            .open_release
            .unwrap();
        assert_eq!((open.resumes, open.redeliveries), (2, 2));
        assert_eq!(open.release, Some(release));
        // Every serving is audited as a key release of the same use.
        let mut log = Vec::new();
        p.provider.audit.export(&mut log).unwrap();
        let entries: Vec<serde_json::Value> = String::from_utf8(log)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .filter(|v: &serde_json::Value| v["event"] == "key-released")
            .collect();
        assert_eq!(entries.len(), 3);
        for (e, redelivery) in entries.iter().zip([false, true, true]) {
            assert_eq!(e["details"]["release"], release.to_string());
            assert_eq!(e["details"]["uses"], 1);
            assert_eq!(e["details"]["redelivery"] == true, redelivery, "{e}");
        }
    }

    #[tokio::test]
    async fn attack_replaying_a_delivered_release_id_takes_no_use_and_is_bounded() {
        let (p, id) = agreed(|d| d.use_limit = Some(1)).await;
        let req = release_request(&id, ReleaseId::generate().unwrap());
        serve(&p, &req, false).unwrap();
        p.provider.n.release_delivered(&id, None).unwrap();
        // A consumer "crashing" again and again gets the bytes of the same
        // use again, a bounded number of times, and never a second use.
        for _ in 0..crate::negotiator::MAX_REDELIVERIES {
            assert_eq!(serve(&p, &req, false).unwrap().uses, 1);
        }
        let e = serve(&p, &req, false).unwrap_err();
        assert_eq!(e.code(), "uses-exhausted");
        assert_eq!(uses(&p, &id), 1);
        // Once it confirmed, the id no longer names an open release: a
        // replay is a new use, which the limit refuses.
        let (p, id) = agreed(|d| d.use_limit = Some(1)).await;
        let req = release_request(&id, ReleaseId::generate().unwrap());
        serve(&p, &req, false).unwrap();
        p.provider.n.release_delivered(&id, None).unwrap();
        p.provider
            .n
            .complete_release(&id, Actor::Node, json!({}), OffsetDateTime::now_utc())
            .unwrap();
        for served in [false, true] {
            let e = serve(&p, &req, served).unwrap_err();
            assert_eq!(e.code(), "uses-exhausted");
        }
        assert_eq!(uses(&p, &id), 1);
        // Leaving the id out falls back to the rule without ids, which
        // does not continue a delivered release either.
        let bare = transfer_request(&id, "r-1");
        assert_eq!(
            serve(&p, &bare, false).unwrap_err().code(),
            "uses-exhausted"
        );
        assert_eq!(uses(&p, &id), 1);
    }

    #[tokio::test]
    async fn attack_a_fresh_release_id_is_a_new_use_under_the_limit() {
        let (p, id) = agreed(|d| d.use_limit = Some(2)).await;
        let first = release_request(&id, ReleaseId::generate().unwrap());
        assert_eq!(serve(&p, &first, false).unwrap().uses, 1);
        // Another id, while the first release is open and before any of
        // it left: another use, not a continuation.
        let second = release_request(&id, ReleaseId::generate().unwrap());
        assert_eq!(serve(&p, &second, false).unwrap().uses, 2);
        let third = release_request(&id, ReleaseId::generate().unwrap());
        assert_eq!(
            serve(&p, &third, false).unwrap_err().code(),
            "uses-exhausted"
        );
        // A resume naming the first id no longer continues anything: the
        // open release is the second's.
        let mut resume = first.clone();
        resume.from_segment = 1;
        assert_eq!(
            serve(&p, &resume, false).unwrap_err().code(),
            "uses-exhausted"
        );
        assert_eq!(uses(&p, &id), 2);
    }

    #[tokio::test]
    async fn attack_a_release_id_of_another_agreement_is_refused() {
        let p = pair();
        let ds = publish(&p, 0, ApprovalMode::Auto, &["hk"]);
        let a = agreement_of(&p.provider, &ask(&p, &ds).await.id);
        let b = agreement_of(&p.provider, &ask(&p, &ds).await.id);
        assert_ne!(a, b);
        let release = ReleaseId::generate().unwrap();
        serve(&p, &release_request(&a, release), false).unwrap();
        p.provider.n.release_delivered(&a, None).unwrap();
        let e = serve(&p, &release_request(&b, release), false).unwrap_err();
        assert_eq!(
            e,
            ReleaseRefusal::ForeignRelease {
                id: b.clone(),
                release
            }
        );
        assert_eq!(e.code(), "foreign-release");
        // Also where two requests race past the checks: the reservation,
        // under the lock, refuses it.
        let now = OffsetDateTime::now_utc();
        let judged = judged(&p, facts(&p, &b, now), now).unwrap();
        let e = p
            .provider
            .n
            .reserve_release(
                &b,
                Actor::Node,
                json!({}),
                (judged.assessment, 0, 0),
                ReleaseStart::Restart,
                Some(&release),
                now,
            )
            .unwrap_err();
        assert!(
            matches!(e, crate::negotiator::NegotiatorError::ForeignRelease { .. }),
            "{e}"
        );
        assert_eq!(uses(&p, &b), 0);
        assert_eq!(uses(&p, &a), 1);
        // A's own release is still A's.
        assert_eq!(
            serve(&p, &release_request(&a, release), false)
                .unwrap()
                .uses,
            1
        );
    }

    #[tokio::test]
    async fn the_wrong_peer_or_researcher_or_address_is_refused() {
        let (p, id) = agreed(|_| {}).await;
        let now = OffsetDateTime::now_utc();
        let anchors = p.provider.admission.anchors();

        let stranger = NodeKey::generate().unwrap().peer_id();
        let e = refused(judge(
            facts(&p, &id, now),
            &stranger,
            &transfer_request(&id, "r-1"),
            anchors,
            now,
        ));
        assert!(
            matches!(&e, ReleaseRefusal::WrongPeer { peer, .. } if *peer == stranger.to_string()),
            "{e}"
        );
        assert_eq!(e.code(), "wrong-peer");

        let e = refused(judge(
            facts(&p, &id, now),
            &p.consumer.peer,
            &transfer_request(&id, "r-2"),
            anchors,
            now,
        ));
        assert_eq!(
            e,
            ReleaseRefusal::WrongResearcher {
                id: id.clone(),
                expected: "r-1".into(),
                requested: "r-2".into(),
            }
        );
        assert_eq!(e.code(), "wrong-researcher");

        for outside in ["/ip6/2001:db8::1/tcp/4001", "/ip4/10.0.0.1/tcp/4001"] {
            let mut f = facts(&p, &id, now);
            f.remote = Some(outside.parse().unwrap());
            let e = refused(judged(&p, f, now));
            assert!(
                matches!(e, ReleaseRefusal::OutsidePrefixes { .. }),
                "{outside}: {e}"
            );
            assert_eq!(e.code(), "outside-prefixes");
            assert!(e.to_string().contains(outside), "{e}");
        }

        let mut f = facts(&p, &id, now);
        f.remote = None;
        let e = refused(judged(&p, f, now));
        assert_eq!(e.code(), "not-admitted", "{e}");
    }

    #[tokio::test]
    async fn a_policy_that_fails_at_release_time_is_refused() {
        let today = OffsetDateTime::now_utc().to_offset(GBA_UTC_OFFSET).date();
        let delete_by = today + Duration::days(2);
        let (p, id) = agreed(|d| d.delete_by = Some(delete_by)).await;
        // The last moment of the retention day, GBA time, is still inside.
        let last = delete_by
            .with_time(Time::from_hms(23, 59, 59).unwrap())
            .assume_offset(GBA_UTC_OFFSET);
        judged(&p, facts(&p, &id, last), last).unwrap();
        let after = last + Duration::SECOND;
        let e = refused(judged(&p, facts(&p, &id, after), after));
        assert_eq!(
            e,
            ReleaseRefusal::PolicyRefuses {
                reasons: vec![Refusal::RetentionPassed { delete_by }]
            }
        );
        assert_eq!(e.code(), "policy-refuses");
        assert!(e.to_string().contains("retention period ended"), "{e}");
    }

    #[tokio::test]
    async fn a_blocker_found_at_release_time_is_refused() {
        let p = pair();
        let ds = publish(&p, 150_000, ApprovalMode::Manual, &["hk"]);
        let r = ask(&p, &ds).await;
        let records = |pipia| RecordsUpdate {
            pipia: Some(pipia),
            consent: Some(true),
            ..Default::default()
        };
        p.provider.n.set_records(&ds, records(true)).await.unwrap();
        p.provider.n.approve(&r.id, None).await.unwrap();
        pump(&p.provider, &p.consumer);
        let id = agreement_of(&p.provider, &r.id);
        let now = OffsetDateTime::now_utc();
        judged(&p, facts(&p, &id, now), now).unwrap();

        // The PIPIA is withdrawn after the agreement was signed.
        p.provider.n.set_records(&ds, records(false)).await.unwrap();
        let e = refused(judged(&p, facts(&p, &id, now), now));
        let ReleaseRefusal::Blocked { blockers, .. } = &e else {
            panic!("expected a blocker, got {e}");
        };
        assert_eq!(blockers, &vec![Blocker::Pipia]);
        assert_eq!(e.code(), "blocked");
        assert!(e.to_string().contains("pipia"), "{e}");
    }

    #[tokio::test]
    async fn a_certificate_that_lapses_after_the_agreement_refuses_the_release() {
        use crate::negotiator::tests::{certified, gba_today_plus};
        let p = pair();
        let ds = publish(&p, 150_000, ApprovalMode::Manual, &["hk"]);
        let r = ask(&p, &ds).await;
        let until = gba_today_plus(10);
        p.provider
            .n
            .set_records(&ds, certified(until))
            .await
            .unwrap();
        p.provider.n.approve(&r.id, None).await.unwrap();
        pump(&p.provider, &p.consumer);
        let id = agreement_of(&p.provider, &r.id);
        let ag = p
            .provider
            .n
            .agreement(&id)
            .unwrap()
            .unwrap()
            .signed
            .agreement;
        assert_eq!(ag.route, Route::Certification);

        // On the certificate's last day (noon GBA time) the release goes ahead.
        let last_day = until
            .with_time(Time::from_hms(12, 0, 0).unwrap())
            .assume_offset(GBA_UTC_OFFSET);
        let release = judged(&p, facts(&p, &id, last_day), last_day).unwrap();
        assert_eq!(release.assessment.route, Route::Certification);

        // The day after, the route is the GBA contract: refused, naming why.
        let next_day = last_day + Duration::days(1);
        let e = refused(judged(&p, facts(&p, &id, next_day), next_day));
        assert_eq!(
            e,
            ReleaseRefusal::CertificationLapsed {
                id: id.clone(),
                certificate: ag.certificate.clone(),
                today: until + Duration::days(1),
                route: Route::GbaStandardContract,
                blockers: vec![],
            }
        );
        assert_eq!(e.code(), "certification-lapsed");
        let text = e.to_string();
        for needle in [
            "certificate CQC-PI-2026-0042, which expired after",
            "route gba-standard-contract",
            "a new agreement is needed",
        ] {
            assert!(text.contains(needle), "{needle:?} not in {text}");
        }

        // With the PIPIA withdrawn too, the blockers of the new route are named.
        let withdraw = RecordsUpdate {
            pipia: Some(false),
            ..Default::default()
        };
        p.provider.n.set_records(&ds, withdraw).await.unwrap();
        let e = refused(judged(&p, facts(&p, &id, next_day), next_day));
        assert!(e.to_string().contains("(blockers: pipia)"), "{e}");

        // A renewed certificate keeps the agreement releasable.
        p.provider
            .n
            .set_records(&ds, certified(until + Duration::days(1000)))
            .await
            .unwrap();
        judged(&p, facts(&p, &id, next_day), next_day).unwrap();
    }

    #[tokio::test]
    async fn an_agreement_this_node_did_not_provide_is_refused() {
        let (p, id) = agreed(|_| {}).await;
        let now = OffsetDateTime::now_utc();
        let mut f = facts(&p, &id, now);
        f.agreement.role = Role::Consumer;
        let e = refused(judged(&p, f, now));
        assert_eq!(e, ReleaseRefusal::NotProvider(id));
        assert_eq!(e.code(), "not-provider");
    }

    #[tokio::test]
    async fn an_agreement_whose_signatures_do_not_verify_is_refused() {
        let (p, id) = agreed(|_| {}).await;
        let now = OffsetDateTime::now_utc();
        // A term changed after both signed.
        let mut f = facts(&p, &id, now);
        f.agreement.signed.agreement.researcher.name = "Dr Mallory".into();
        let e = refused(judged(&p, f, now));
        let ReleaseRefusal::BadSignature { id: got, reason } = &e else {
            panic!("expected a bad signature, got {e}");
        };
        assert_eq!(got, &id);
        assert!(reason.contains("changed after signing"), "{reason}");
        assert_eq!(e.code(), "bad-signature");
        // The consumer's signature missing.
        let mut f = facts(&p, &id, now);
        f.agreement.signed.consumer_signature = None;
        let e = refused(judged(&p, f, now));
        assert!(
            matches!(&e, ReleaseRefusal::BadSignature { id: got, reason }
                if *got == id && reason.contains("not countersigned")),
            "{e}"
        );
    }

    #[tokio::test]
    async fn an_agreement_the_provider_revoked_is_refused_by_the_provider() {
        let (p, id) = agreed(|_| {}).await;
        p.provider
            .n
            .revoke(&id, "consent withdrawn".into())
            .await
            .unwrap();
        // The consumer never hears of it: the provider's own record refuses.
        let now = OffsetDateTime::now_utc();
        let e = refused(judged(&p, facts(&p, &id, now), now));
        assert_eq!(
            e,
            ReleaseRefusal::Revoked {
                id,
                reason: "consent withdrawn".into()
            }
        );
        assert_eq!(e.code(), "revoked");
    }

    #[tokio::test]
    async fn a_release_before_the_agreement_starts_is_refused() {
        let (p, id) = agreed(|_| {}).await;
        let now = OffsetDateTime::now_utc();
        let not_before = judged(&p, facts(&p, &id, now), now)
            .unwrap()
            .agreement
            .signed
            .agreement
            .not_before;
        judged(&p, facts(&p, &id, not_before), not_before).unwrap();
        let early = not_before - Duration::SECOND;
        let e = refused(judged(&p, facts(&p, &id, early), early));
        assert_eq!(e, ReleaseRefusal::NotYetValid { id, not_before });
        assert_eq!(e.code(), "not-yet-valid");
    }

    #[tokio::test]
    async fn a_missing_or_altered_researcher_credential_is_refused() {
        let (p, id) = agreed(|_| {}).await;
        let now = OffsetDateTime::now_utc();
        let mut f = facts(&p, &id, now);
        f.negotiation.as_mut().unwrap().credential = None;
        let e = refused(judged(&p, f, now));
        assert_eq!(
            e,
            ReleaseRefusal::ResearcherCredential {
                id: id.clone(),
                reason: "none is on record".into()
            }
        );
        assert_eq!(e.code(), "researcher-credential");

        // The researcher's name changed after the home node signed it.
        let mut f = facts(&p, &id, now);
        let n = f.negotiation.as_mut().unwrap();
        let credential = n.credential.take().unwrap();
        assert!(credential.contains("Dr Chan"), "{credential}");
        n.credential = Some(credential.replace("Dr Chan", "Dr Chen"));
        let e = refused(judged(&p, f, now));
        let ReleaseRefusal::ResearcherCredential { id: got, reason } = &e else {
            panic!("expected a credential refusal, got {e}");
        };
        assert_eq!(got, &id);
        assert_ne!(reason, "none is on record");
        assert_eq!(e.code(), "researcher-credential");
    }

    #[tokio::test]
    async fn a_dataset_gone_changed_or_without_its_file_is_refused() {
        let (p, id) = agreed(|_| {}).await;
        let now = OffsetDateTime::now_utc();
        let dataset = facts(&p, &id, now).agreement.signed.agreement.dataset;

        let mut f = facts(&p, &id, now);
        f.dataset = None;
        let e = refused(judged(&p, f, now));
        assert_eq!(e, ReleaseRefusal::DatasetGone(dataset.clone()));
        assert_eq!(e.code(), "dataset-gone");

        let mut f = facts(&p, &id, now);
        f.dataset.as_mut().unwrap().descriptor.version += 1;
        let agreed = f.agreement.signed.agreement.dataset_version;
        let e = refused(judged(&p, f, now));
        assert_eq!(
            e,
            ReleaseRefusal::DatasetChanged {
                dataset: dataset.clone(),
                version: agreed + 1,
                withdrawn: false,
                agreed,
            }
        );
        assert_eq!(e.code(), "dataset-changed");

        let mut f = facts(&p, &id, now);
        f.dataset.as_mut().unwrap().descriptor.withdrawn = true;
        let e = refused(judged(&p, f, now));
        assert_eq!(
            e,
            ReleaseRefusal::DatasetChanged {
                dataset: dataset.clone(),
                version: agreed,
                withdrawn: true,
                agreed,
            }
        );

        let mut f = facts(&p, &id, now);
        f.file = None;
        let e = refused(judged(&p, f, now));
        assert_eq!(e, ReleaseRefusal::FileMissing(dataset));
        assert_eq!(e.code(), "file-missing");
    }

    #[test]
    fn refusal_messages_name_what_failed() {
        let e = ReleaseRefusal::Blocked {
            route: Route::Prohibited,
            blockers: vec![],
        };
        assert!(e.to_string().ends_with("blockers: none"), "{e}");
        let e = ReleaseRefusal::DatasetChanged {
            dataset: DatasetId::derive(&bayspace_contracts::descriptor::PublicKey([1; 32]), "ds-1"),
            version: 3,
            withdrawn: true,
            agreed: 2,
        };
        assert!(
            e.to_string()
                .contains("version 3 (withdrawn); the agreement is for version 2"),
            "{e}"
        );
    }
}
