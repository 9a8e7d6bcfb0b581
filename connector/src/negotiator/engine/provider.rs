//! The provider side: a request arrives and is checked, assessed and put
//! before the administrator, who approves, rejects, updates the dataset's
//! records or revokes; the consumer's countersignature finalizes.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use bayspace_contracts::agreement::{
    Agreement, AgreementId, Certificate, NegotiationId, Orcid as AgreementOrcid, Researcher,
    SignedAgreement,
};
use bayspace_contracts::compliance::{
    Exporter, ExporterRegion, Recipient, Route, Scenario, assess,
};
use bayspace_contracts::descriptor::{
    ApprovalMode, DatasetDescriptor, DatasetId, Institution, Offer,
};
use bayspace_contracts::filing::FilingDue;
use bayspace_contracts::negotiation::{Event, Role, State};
use bayspace_contracts::policy::{Action, RequestContext, evaluate};
use bayspace_contracts::region::{GBA_UTC_OFFSET, Region};
use libp2p::PeerId;
use serde_json::json;
use time::{Date, OffsetDateTime};

use crate::audit::{Actor, AuditEvent};
use crate::identity::{ResearcherChecks, ResearcherCredential, timestamp};
use crate::negotiator::engine::inbound::{Handled, answer, parse_peer};
use crate::negotiator::engine::{Assessed, check_text, offers_of, public_key_of, random_id};
use crate::negotiator::wire::{ContractRequest, Message};
use crate::negotiator::{
    AgreementRecord, Counterparty, DatasetRecords, NegotiationRecord, Negotiator, NegotiatorError,
    RecordsUpdate, Requester, Revocation,
};
use crate::store::WriteSet;

/// The outcome of the provider's checks of a new request.
pub(super) struct Checked {
    requester: Requester,
    descriptor: Option<DatasetDescriptor>,
    offer: Option<Offer>,
    assessment: Option<Assessed>,
    refusals: Vec<String>,
}

impl Negotiator {
    /// Approve a pending request. The policy and the assessment are run
    /// again with today's records and ledger; any blocker refuses the
    /// approval and names itself.
    pub async fn approve(
        self: &Arc<Self>,
        id: &NegotiationId,
        note: Option<String>,
    ) -> Result<NegotiationRecord, NegotiatorError> {
        if let Some(n) = &note {
            check_text("note", n)?;
        }
        let key = {
            let _w = self.lock()?;
            let mut r = self.pending_record(id, "approved")?;
            let now = timestamp::whole_seconds(OffsetDateTime::now_utc());
            let mut w = WriteSet::new();
            let m = self.approve_locked(&mut w, &mut r, Actor::Admin, note, now)?;
            let key = self.stage_send(&mut w, &r, m, now)?;
            self.stage_record(&mut w, &r)?;
            self.commit(&w, &r)?;
            key
        };
        self.deliver(key).await;
        self.get(id)?
            .ok_or_else(|| NegotiatorError::UnknownNegotiation(id.clone()))
    }

    pub async fn reject(
        self: &Arc<Self>,
        id: &NegotiationId,
        reason: String,
    ) -> Result<NegotiationRecord, NegotiatorError> {
        check_text("reason", &reason)?;
        let key = {
            let _w = self.lock()?;
            let mut r = self.pending_record(id, "rejected")?;
            let now = timestamp::whole_seconds(OffsetDateTime::now_utc());
            let reasons = vec![format!(
                "rejected by the provider's administrator: {reason}"
            )];
            let mut w = WriteSet::new();
            let key = match self.terminate_locked(&mut r, Actor::Admin, reasons, now)? {
                Some(m) => Some(self.stage_send(&mut w, &r, m, now)?),
                None => None,
            };
            self.stage_record(&mut w, &r)?;
            self.commit(&w, &r)?;
            key
        };
        if let Some(key) = key {
            self.deliver(key).await;
        }
        self.get(id)?
            .ok_or_else(|| NegotiatorError::UnknownNegotiation(id.clone()))
    }

    pub(super) fn pending_record(
        &self,
        id: &NegotiationId,
        action: &'static str,
    ) -> Result<NegotiationRecord, NegotiatorError> {
        let r = self
            .negotiations
            .get(&id.to_string())?
            .ok_or_else(|| NegotiatorError::UnknownNegotiation(id.clone()))?;
        if r.role != Role::Provider {
            return Err(NegotiatorError::WrongRole {
                id: id.to_string(),
                role: r.role,
                needed: Role::Provider,
                action,
            });
        }
        if r.state != State::Requested {
            return Err(NegotiatorError::NotPending {
                id: id.clone(),
                state: r.state,
                action,
            });
        }
        Ok(r)
    }

    /// Update a dataset's records, then re-assess every request for it that
    /// waits for approval; an auto offer whose blockers are now gone is
    /// approved by the node.
    pub async fn set_records(
        self: &Arc<Self>,
        dataset: &DatasetId,
        update: RecordsUpdate,
    ) -> Result<(DatasetRecords, Vec<NegotiationRecord>), NegotiatorError> {
        if let Some(p) = &update.pipia_reference {
            check_text("pipia_reference", p)?;
        }
        if let Some(c) = &update.certification_reference {
            // Checked as an agreement will check it, so a certificate on
            // record can always be signed into one.
            Certificate::check_reference("certification_reference", c).map_err(|e| {
                NegotiatorError::BadInput {
                    field: "certification_reference",
                    reason: e.reason,
                }
            })?;
        }
        self.own_dataset(dataset)?;
        let now = timestamp::whole_seconds(OffsetDateTime::now_utc());
        let mut keys = Vec::new();
        let mut touched = Vec::new();
        let records = {
            let _w = self.lock()?;
            let mut records = self.records.get(&dataset.to_string())?.unwrap_or_default();
            update.apply(&mut records);
            check_certificate(&records)?;
            records.updated_at = Some(now);
            self.audit.append_unflushed(
                Actor::Admin,
                AuditEvent::Assessment,
                vec![dataset.to_string()],
                json!({ "records": records }),
                now,
            )?;
            self.records.insert(&dataset.to_string(), &records)?;
            self.store.flush()?;
            for mut r in self.pending()? {
                if r.dataset != *dataset {
                    continue;
                }
                let Some(reassessed) = self.reassess(&r, now)? else {
                    continue;
                };
                let auto = self.offer_of(&r)?.map(|o| o.approval) == Some(ApprovalMode::Auto);
                let mut w = WriteSet::new();
                if auto
                    && reassessed.assessment.allowed_now
                    && self.policy_refusals(&r, now)?.is_empty()
                {
                    let m = self.approve_locked(&mut w, &mut r, Actor::Node, None, now)?;
                    keys.push(self.stage_send(&mut w, &r, m, now)?);
                } else {
                    r.assessment = Some(reassessed.assessment);
                    r.certificate = reassessed.certificate;
                    r.updated_at = now;
                }
                self.stage_record(&mut w, &r)?;
                self.commit(&w, &r)?;
                touched.push(r);
            }
            records
        };
        for key in keys {
            self.deliver(key).await;
        }
        Ok((records, touched))
    }

    /// Retire a finalized agreement this node provided; the consumer is
    /// told, and no release follows.
    pub async fn revoke(
        self: &Arc<Self>,
        id: &AgreementId,
        reason: String,
    ) -> Result<AgreementRecord, NegotiatorError> {
        check_text("reason", &reason)?;
        let key = {
            let _w = self.lock()?;
            let mut a = self
                .agreements
                .get(&id.to_string())?
                .ok_or_else(|| NegotiatorError::UnknownAgreement(id.clone()))?;
            if a.role != Role::Provider {
                return Err(NegotiatorError::WrongRole {
                    id: id.to_string(),
                    role: a.role,
                    needed: Role::Provider,
                    action: "revoke an agreement",
                });
            }
            if a.revoked.is_some() {
                return Err(NegotiatorError::AlreadyRevoked(id.clone()));
            }
            let now = timestamp::whole_seconds(OffsetDateTime::now_utc());
            let ag = &a.signed.agreement;
            self.audit.append_unflushed(
                Actor::Admin,
                AuditEvent::AgreementRevoked,
                vec![
                    id.to_string(),
                    ag.negotiation.to_string(),
                    ag.dataset.to_string(),
                ],
                json!({ "reason": reason, "consumer": ag.consumer.peer_id }),
                now,
            )?;
            a.revoked = Some(Revocation {
                reason: reason.clone(),
                at: now,
            });
            let message = Message::AgreementRevoked {
                negotiation: ag.negotiation.clone(),
                agreement: id.clone(),
                reason,
            };
            let mut w = WriteSet::new();
            let key =
                self.stage_outgoing(&mut w, &ag.consumer.peer_id, &ag.negotiation, message, now)?;
            self.agreements.stage_insert(&mut w, &id.to_string(), &a)?;
            self.store.apply(&w)?;
            self.store.flush()?;
            key
        };
        self.deliver(key).await;
        self.agreement(id)?
            .ok_or_else(|| NegotiatorError::UnknownAgreement(id.clone()))
    }

    /// The filing package of an agreement on a route that needs one, or
    /// the certificate's renewal on the certification route.
    pub fn filing(
        &self,
        id: &AgreementId,
        holidays: &BTreeSet<Date>,
    ) -> Result<FilingDue, NegotiatorError> {
        let a = self
            .agreement(id)?
            .ok_or_else(|| NegotiatorError::UnknownAgreement(id.clone()))?;
        let ag = &a.signed.agreement;
        let profile = self
            .catalog
            .get(&ag.dataset)?
            .map(|s| s.descriptor.profile)
            .ok_or_else(|| NegotiatorError::UnknownDataset(ag.dataset.clone()))?;
        let pipia = match a.role {
            Role::Provider => self
                .records
                .get(&ag.dataset.to_string())?
                .and_then(|r| r.pipia_reference),
            Role::Consumer => None,
        };
        Ok(FilingDue::for_agreement(ag, &profile, pipia, holidays)?)
    }

    pub(crate) fn own_dataset(&self, dataset: &DatasetId) -> Result<(), NegotiatorError> {
        match self.catalog.get(dataset)? {
            Some(s) if s.descriptor.publisher.peer_id == self.me.peer_id => Ok(()),
            _ => Err(NegotiatorError::NotOurDataset(dataset.clone())),
        }
    }

    /// A new request to this node: identity, policy, assessment, then
    /// refused at once, pending, or approved by the node. The decision
    /// travels in the response.
    pub(super) fn on_request(
        &self,
        peer: &PeerId,
        req: ContractRequest,
        seen: (String, String),
        now: OffsetDateTime,
    ) -> Result<Handled, NegotiatorError> {
        let Some(membership) = self.admission.credential_of(peer) else {
            return Ok(Handled::Refused(format!(
                "{peer} is not an admitted member"
            )));
        };
        if let Some(reason) = self.over_quota(peer, &req, now)? {
            return Ok(Handled::Refused(reason));
        }
        let member = membership.body();
        let checked = self.check_request(peer, &membership, &req, now)?;
        let descriptor = checked.descriptor.as_ref();
        let mut r = NegotiationRecord {
            id: req.negotiation.clone(),
            role: Role::Provider,
            state: State::Requested,
            dataset: req.dataset.clone(),
            dataset_title: descriptor.map(|d| d.title.clone()).unwrap_or_default(),
            dataset_version: descriptor.map_or(req.dataset_version, |d| d.version),
            offer: req.offer.clone(),
            purpose: req.purpose.clone(),
            counterparty: Counterparty {
                peer_id: peer.to_string(),
                institution: member.institution.clone(),
                region: member.region,
            },
            researcher: checked.requester.clone(),
            assessment: checked.assessment.as_ref().map(|a| a.assessment.clone()),
            certificate: checked
                .assessment
                .as_ref()
                .and_then(|a| a.certificate.clone()),
            reasons: Vec::new(),
            agreement_id: None,
            note: None,
            requested_at: now,
            updated_at: now,
            history: Vec::new(),
            credential: Some(req.credential.clone()),
            received: vec![seen],
            last_sent: None,
        };
        let peer_actor = Actor::Peer(peer.to_string());
        r.push(State::Requested, now, &peer_actor.to_string());
        self.audit.append_unflushed(
            peer_actor,
            AuditEvent::ContractRequested,
            vec![r.id.to_string(), r.dataset.to_string()],
            json!({
                "role": "provider",
                "consumer": member.institution,
                "consumer_region": member.region,
                "offer": r.offer,
                "purpose": r.purpose,
                "researcher": r.researcher,
            }),
            now,
        )?;
        if let Some(a) = &checked.assessment {
            self.audit_assessment(&r, a, now)?;
        }
        let mut w = WriteSet::new();
        let auto = checked.offer.as_ref().map(|o| o.approval) == Some(ApprovalMode::Auto);
        let allowed = checked
            .assessment
            .as_ref()
            .is_some_and(|a| a.assessment.allowed_now);
        let reply = if !checked.refusals.is_empty() {
            self.terminate_locked(&mut r, Actor::Node, checked.refusals, now)?
        } else if auto && allowed {
            Some(self.approve_locked(&mut w, &mut r, Actor::Node, None, now)?)
        } else {
            None
        };
        Ok(Handled::Change {
            w,
            r: Box::new(r),
            reply,
        })
    }

    pub(super) fn check_request(
        &self,
        peer: &PeerId,
        membership: &crate::identity::MembershipCredential,
        req: &ContractRequest,
        now: OffsetDateTime,
    ) -> Result<Checked, NegotiatorError> {
        let mut out = Checked {
            requester: Requester {
                id: "unknown".into(),
                name: "(no valid researcher credential)".into(),
                orcid: None,
            },
            descriptor: None,
            offer: None,
            assessment: None,
            refusals: Vec::new(),
        };
        // 1. Identity: the researcher credential chains to the member.
        let cred = match ResearcherCredential::from_json(
            &req.credential,
            Path::new("<researcher credential>"),
        ) {
            Ok(c) => c,
            Err(e) => {
                out.refusals.push(format!("researcher credential: {e}"));
                return Ok(out);
            }
        };
        let revocations = self
            .admission
            .revocations()
            .map_err(|e| NegotiatorError::Credential(e.to_string()))?;
        let checks = ResearcherChecks {
            revocations: revocations.as_ref(),
            role: None,
        };
        match cred.verify(membership, self.admission.anchors(), now, &checks) {
            Ok(body) => {
                out.requester = Requester {
                    id: body.id.clone(),
                    name: body.name.clone(),
                    orcid: body
                        .orcid
                        .as_ref()
                        .and_then(|o| AgreementOrcid::try_from(o.as_str().to_owned()).ok()),
                };
            }
            Err(e) => {
                out.refusals.push(format!(
                    "the researcher credential from {peer} is not valid: {e}"
                ));
                return Ok(out);
            }
        }
        // The dataset and the offer, as this node publishes them now.
        let descriptor = match self.catalog.get(&req.dataset)? {
            Some(s) if s.descriptor.publisher.peer_id == self.me.peer_id => s.descriptor,
            _ => {
                out.refusals.push(format!(
                    "dataset {} is not published by {}",
                    req.dataset, self.me.name
                ));
                return Ok(out);
            }
        };
        if descriptor.withdrawn {
            out.refusals
                .push(format!("dataset {} has been withdrawn", req.dataset));
            return Ok(out);
        }
        let Some(offer) = descriptor.offer(&req.offer).cloned() else {
            out.refusals.push(format!(
                "dataset {} has no offer {}; its offers: {}",
                req.dataset,
                req.offer,
                offers_of(&descriptor)
            ));
            return Ok(out);
        };
        let recipient = membership.body().region;
        // 2. The usage policy, at this moment.
        out.refusals
            .extend(policy_refusals(&offer, &req.purpose, recipient, now));
        // 3. The compliance assessment.
        let assessed = self.assess_for(&descriptor, recipient, now)?;
        let assessment = &assessed.assessment;
        if assessment.route == Route::Prohibited {
            out.refusals.push(format!(
                "the cross-border route is prohibited (rulebook {}: {})",
                assessment.rulebook,
                assessment.citations.join("; ")
            ));
        }
        out.assessment = Some(assessed);
        out.descriptor = Some(descriptor);
        out.offer = Some(offer);
        Ok(out)
    }

    /// The assessment of a transfer of `d` to `recipient` at `now`, with
    /// the dataset's records and this year's ledger. The date is `now`'s
    /// GBA civil date, so a certificate or approval that lapsed since an
    /// earlier assessment no longer counts.
    pub(crate) fn assess_for(
        &self,
        d: &DatasetDescriptor,
        recipient: Region,
        now: OffsetDateTime,
    ) -> Result<Assessed, NegotiatorError> {
        let exporter =
            ExporterRegion::try_from(d.region).map_err(|e| NegotiatorError::BadInput {
                field: "dataset.region",
                reason: e.to_string(),
            })?;
        let on_file = self.records.get(&d.id.to_string())?.unwrap_or_default();
        let records = on_file.records;
        let scenario = Scenario {
            date: now.to_offset(GBA_UTC_OFFSET).date(),
            exporter: Exporter {
                region: exporter,
                ciio: false,
                ftz: None,
            },
            recipient: Recipient { region: recipient },
            data: d.profile.clone(),
            basis: Default::default(),
            year_to_date: self.ledger.year_to_date(now)?,
            records,
        };
        let assessment = assess(&scenario);
        let certificate = if assessment.route == Route::Certification {
            on_file.certificate()
        } else {
            None
        };
        Ok(Assessed {
            assessment,
            certificate,
        })
    }

    pub(super) fn audit_assessment(
        &self,
        r: &NegotiationRecord,
        assessed: &Assessed,
        now: OffsetDateTime,
    ) -> Result<(), NegotiatorError> {
        let a = &assessed.assessment;
        self.audit.append_unflushed(
            Actor::Node,
            AuditEvent::Assessment,
            vec![r.id.to_string(), r.dataset.to_string()],
            json!({
                "route": a.route,
                "variant": a.variant,
                "exemption": a.exemption,
                "blockers": a.blockers,
                "obligations": a.obligations,
                "rulebook": a.rulebook,
                "rules": a.rules,
                "certificate": assessed.certificate,
            }),
            now,
        )?;
        Ok(())
    }

    pub(super) fn offer_of(&self, r: &NegotiationRecord) -> Result<Option<Offer>, NegotiatorError> {
        Ok(self
            .catalog
            .get(&r.dataset)?
            .and_then(|s| s.descriptor.offer(&r.offer).cloned()))
    }

    pub(super) fn policy_refusals(
        &self,
        r: &NegotiationRecord,
        now: OffsetDateTime,
    ) -> Result<Vec<String>, NegotiatorError> {
        Ok(match self.offer_of(r)? {
            Some(offer) => policy_refusals(&offer, &r.purpose, r.counterparty.region, now),
            None => vec![format!("offer {} is no longer published", r.offer)],
        })
    }

    /// The assessment with today's records and ledger; `None` when the
    /// dataset is gone.
    pub(super) fn reassess(
        &self,
        r: &NegotiationRecord,
        now: OffsetDateTime,
    ) -> Result<Option<Assessed>, NegotiatorError> {
        let Some(s) = self.catalog.get(&r.dataset)? else {
            return Ok(None);
        };
        let a = self.assess_for(&s.descriptor, r.counterparty.region, now)?;
        self.audit_assessment(r, &a, now)?;
        Ok(Some(a))
    }

    /// Build and sign the agreement, audit the approval and move to AGREED.
    /// Returns the ContractAgreement for the consumer (also kept as the
    /// last message sent).
    pub(super) fn approve_locked(
        &self,
        w: &mut WriteSet,
        r: &mut NegotiationRecord,
        actor: Actor,
        note: Option<String>,
        now: OffsetDateTime,
    ) -> Result<Message, NegotiatorError> {
        let refusals = self.policy_refusals(r, now)?;
        if !refusals.is_empty() {
            return Err(NegotiatorError::PolicyRefuses {
                id: r.id.clone(),
                reasons: refusals,
            });
        }
        let signed = self
            .catalog
            .get(&r.dataset)?
            .ok_or_else(|| NegotiatorError::UnknownDataset(r.dataset.clone()))?;
        let d = signed.descriptor;
        let offer = d
            .offer(&r.offer)
            .cloned()
            .ok_or_else(|| NegotiatorError::UnknownOffer {
                dataset: d.id.clone(),
                offer: r.offer.clone(),
                offers: offers_of(&d),
            })?;
        let Assessed {
            assessment: a,
            certificate,
        } = self.assess_for(&d, r.counterparty.region, now)?;
        if a.route == Route::Prohibited {
            return Err(NegotiatorError::PolicyRefuses {
                id: r.id.clone(),
                reasons: vec!["the cross-border route is prohibited".into()],
            });
        }
        if !a.allowed_now {
            return Err(NegotiatorError::Blocked {
                id: r.id.clone(),
                blockers: a.blockers,
            });
        }
        let peer = parse_peer(&r.counterparty.peer_id)?;
        let consumer_key = public_key_of(&peer).ok_or_else(|| NegotiatorError::BadInput {
            field: "counterparty.peer_id",
            reason: format!("{peer} carries no ed25519 key"),
        })?;
        let window_end = now + time::Duration::days(i64::from(self.settings.agreement_days));
        let not_after = offer
            .policy
            .use_window_end()
            .map_or(window_end, |end| end.min(window_end));
        let agreement = Agreement {
            id: AgreementId::from_random(random_id()?),
            negotiation: r.id.clone(),
            dataset: d.id.clone(),
            dataset_version: d.version,
            offer: offer.id.clone(),
            provider: self.me.clone(),
            consumer: Institution {
                name: r.counterparty.institution.clone(),
                region: r.counterparty.region,
                peer_id: r.counterparty.peer_id.clone(),
                key: consumer_key,
            },
            researcher: Researcher {
                id: r.researcher.id.clone(),
                name: r.researcher.name.clone(),
                orcid: r.researcher.orcid.clone(),
            },
            purpose: r.purpose.clone(),
            constraints: offer.policy.clone(),
            not_before: now,
            not_after,
            route: a.route,
            variant: a.variant,
            obligations: a.obligations.clone(),
            created: now,
            certificate: certificate.clone(),
        };
        let signed = SignedAgreement::sign_as_provider(agreement, self.key.signing_key())
            .map_err(|e| NegotiatorError::Sign(e.to_string()))?;
        let agreement_id = signed.agreement.id.clone();
        self.audit.append_unflushed(
            actor.clone(),
            AuditEvent::Approval,
            vec![
                r.id.to_string(),
                agreement_id.to_string(),
                r.dataset.to_string(),
            ],
            json!({
                "note": note,
                "route": a.route,
                "variant": a.variant,
                "obligations": a.obligations,
                "certificate": certificate,
                "not_after": signed.agreement.not_after.unix_timestamp(),
            }),
            now,
        )?;
        self.agreements.stage_insert(
            w,
            &agreement_id.to_string(),
            &AgreementRecord {
                role: Role::Provider,
                signed: signed.clone(),
                revoked: None,
                uses: 0,
                open_release: None,
            },
        )?;
        r.assessment = Some(a);
        r.certificate = certificate;
        r.agreement_id = Some(agreement_id);
        r.note = note;
        r.push(State::Agreed, now, &actor.to_string());
        let m = Message::ContractAgreement {
            negotiation: r.id.clone(),
            agreement: Box::new(signed),
        };
        r.last_sent = Some(m.clone());
        Ok(m)
    }

    /// The provider gets the countersigned agreement: it must be exactly
    /// the one it signed, countersigned by the consumer's key.
    pub(super) fn on_verification(
        &self,
        peer: &PeerId,
        mut r: NegotiationRecord,
        signed: SignedAgreement,
        now: OffsetDateTime,
    ) -> Result<Handled, NegotiatorError> {
        if let Some(refused) =
            self.check_transition(&r, Role::Consumer, &Event::AgreementVerification)
        {
            return Ok(refused);
        }
        let stored = match &r.agreement_id {
            Some(id) => self.agreements.get(&id.to_string())?,
            None => None,
        };
        let Some(mut stored) = stored else {
            return Ok(Handled::Refused(format!(
                "negotiation {} has no agreement here",
                r.id
            )));
        };
        let consumer_key = public_key_of(peer);
        let check = if signed.agreement != stored.signed.agreement
            || signed.digest != stored.signed.digest
            || signed.provider_signature != stored.signed.provider_signature
        {
            Err("it is not the agreement this node signed".to_owned())
        } else {
            signed
                .verify(Some(&self.me.key), consumer_key.as_ref())
                .map_err(|e| e.to_string())
        };
        let mut w = WriteSet::new();
        let reply = match check {
            Err(reason) => {
                let reasons = vec![format!("the countersigned agreement was refused: {reason}")];
                self.terminate_locked(&mut r, Actor::Node, reasons, now)?
            }
            Ok(()) => {
                self.audit_agreement(Actor::Peer(peer.to_string()), &r, &signed.agreement, now)?;
                stored.signed = signed;
                self.agreements
                    .stage_insert(&mut w, &stored.id().to_string(), &stored)?;
                let m = Message::Finalized {
                    negotiation: r.id.clone(),
                };
                Some(answer(
                    &mut r,
                    peer,
                    State::Verified,
                    State::Finalized,
                    m,
                    now,
                ))
            }
        };
        Ok(Handled::Change {
            w,
            r: Box::new(r),
            reply,
        })
    }
}

/// The reasons the offer's policy refuses this use now; empty when allowed.
pub(super) fn policy_refusals(
    offer: &Offer,
    purpose: &bayspace_contracts::policy::Purpose,
    recipient: Region,
    now: OffsetDateTime,
) -> Vec<String> {
    let decision = evaluate(
        &offer.policy,
        &RequestContext {
            action: Action::Use,
            purpose: purpose.clone(),
            recipient_region: recipient,
            now,
            uses_so_far: 0,
            onward_recipient: None,
        },
    );
    decision.reasons.iter().map(ToString::to_string).collect()
}

/// A certificate on record needs both its reference and its last valid
/// day: a date alone could not be named in an agreement, a reference alone
/// would never change a route.
pub(super) fn check_certificate(r: &DatasetRecords) -> Result<(), NegotiatorError> {
    match (
        &r.certification_reference,
        r.records.pi_certification_valid_until,
    ) {
        (None, Some(until)) => Err(NegotiatorError::BadInput {
            field: "certification_reference",
            reason: format!(
                "a certificate valid until {until} needs its reference (--certification-ref)"
            ),
        }),
        (Some(reference), None) => Err(NegotiatorError::BadInput {
            field: "certification_valid_until",
            reason: format!(
                "certificate {reference} needs its last valid day (--certification-valid-until)"
            ),
        }),
        _ => Ok(()),
    }
}
