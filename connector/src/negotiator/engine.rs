//! The negotiation steps on both sides. Each step runs under the write
//! lock: check, audit, stage the state change (and the outbox entry that
//! announces it) in one write set, apply, flush. Only then does anything
//! leave the node.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use bayspace_contracts::agreement::{
    Agreement, AgreementId, Certificate, NegotiationId, Orcid as AgreementOrcid, Researcher,
    SignedAgreement,
};
use bayspace_contracts::compliance::{
    Assessment, Exporter, ExporterRegion, Recipient, Route, Scenario, assess,
};
use bayspace_contracts::descriptor::{
    ApprovalMode, DatasetDescriptor, DatasetId, Institution, Offer, PublicKey,
};
use bayspace_contracts::filing::FilingDue;
use bayspace_contracts::negotiation::{Event, Role, State, transition};
use bayspace_contracts::policy::{Action, RequestContext, evaluate};
use bayspace_contracts::region::{GBA_UTC_OFFSET, Region};
use libp2p::PeerId;
use serde_json::json;
use time::{Date, OffsetDateTime};

use super::outbox::Outgoing;
use super::wire::{self, ContractRequest, Message};
use super::*;
use crate::audit::{Actor, AuditEvent};
use crate::identity::{
    Orcid, ResearcherBody, ResearcherChecks, ResearcherCredential, ResearcherRole, key_of_peer_id,
    timestamp,
};
use crate::store::WriteSet;

/// What a handler decided, before it is stored.
enum Handled {
    Refused(String),
    /// Seen before: answer with what was sent last.
    Duplicate(Option<Message>),
    /// A state change to write, and the message it produced for the peer.
    Change {
        w: WriteSet,
        r: Box<NegotiationRecord>,
        reply: Option<Message>,
    },
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

/// The outcome of the provider's checks of a new request.
struct Checked {
    requester: Requester,
    descriptor: Option<DatasetDescriptor>,
    offer: Option<Offer>,
    assessment: Option<Assessed>,
    refusals: Vec<String>,
}

/// An assessment with the certificate its route relies on: the one on
/// record for the dataset, exactly when the route is `certification`.
#[derive(Debug, Clone)]
pub(crate) struct Assessed {
    pub assessment: Assessment,
    pub certificate: Option<Certificate>,
}

fn random_id() -> Result<[u8; 16], NegotiatorError> {
    Ok(crate::random::bytes()?)
}

fn offers_of(d: &DatasetDescriptor) -> String {
    d.offers
        .iter()
        .map(|o| o.id.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn public_key_of(peer: &PeerId) -> Option<PublicKey> {
    key_of_peer_id(peer).ok().map(|k| PublicKey::from(&k))
}

fn check_text(field: &'static str, s: &str) -> Result<(), NegotiatorError> {
    let bad = |reason: &str| NegotiatorError::BadInput {
        field,
        reason: reason.to_owned(),
    };
    if s.trim().is_empty() {
        return Err(bad("must not be empty"));
    }
    if s.len() > wire::MAX_TEXT {
        return Err(bad(&format!("longer than {} bytes", wire::MAX_TEXT)));
    }
    if s.chars().any(|c| c.is_control() && c != '\n') {
        return Err(bad("must not contain control characters"));
    }
    Ok(())
}

impl Negotiator {
    // ----- consumer side -----

    /// The researcher's request: issue their credential, store REQUESTED
    /// with the ContractRequest in the outbox, and make the first delivery
    /// attempt before returning, so the answer usually shows the
    /// provider's decision.
    pub async fn request(
        self: &Arc<Self>,
        req: NewRequest,
    ) -> Result<NegotiationRecord, NegotiatorError> {
        let now = timestamp::whole_seconds(OffsetDateTime::now_utc());
        let signed = self
            .catalog
            .get(&req.dataset)?
            .ok_or_else(|| NegotiatorError::UnknownDataset(req.dataset.clone()))?;
        let d = &signed.descriptor;
        if d.withdrawn {
            return Err(NegotiatorError::Withdrawn(d.id.clone()));
        }
        if d.publisher.peer_id == self.me.peer_id {
            return Err(NegotiatorError::OwnDataset(d.id.clone()));
        }
        let offer = match &req.offer {
            Some(id) => d
                .offer(id)
                .ok_or_else(|| NegotiatorError::UnknownOffer {
                    dataset: d.id.clone(),
                    offer: id.clone(),
                    offers: offers_of(d),
                })?
                .id
                .clone(),
            None => match d.offers.as_slice() {
                [only] => only.id.clone(),
                _ => {
                    return Err(NegotiatorError::OfferNeeded {
                        dataset: d.id.clone(),
                        offers: offers_of(d),
                    });
                }
            },
        };
        // The publisher must be reachable as a peer.
        parse_peer(&d.publisher.peer_id)?;
        let credential = self.issue_credential(&req, now)?;
        let id = NegotiationId::from_random(random_id()?);
        let message = Message::ContractRequest(ContractRequest {
            negotiation: id.clone(),
            dataset: d.id.clone(),
            dataset_version: d.version,
            offer: offer.clone(),
            purpose: req.purpose.clone(),
            credential,
        });
        let actor = if req.as_admin {
            Actor::Admin
        } else {
            Actor::Researcher(req.requester.id.clone())
        };
        let mut record = NegotiationRecord {
            id: id.clone(),
            role: Role::Consumer,
            state: State::Requested,
            dataset: d.id.clone(),
            dataset_title: d.title.clone(),
            dataset_version: d.version,
            offer,
            purpose: req.purpose.clone(),
            counterparty: Counterparty {
                peer_id: d.publisher.peer_id.clone(),
                institution: d.publisher.name.clone(),
                region: d.publisher.region,
            },
            researcher: req.requester.clone(),
            assessment: None,
            certificate: None,
            reasons: Vec::new(),
            agreement_id: None,
            note: None,
            requested_at: now,
            updated_at: now,
            history: Vec::new(),
            credential: None,
            received: Vec::new(),
            last_sent: Some(message.clone()),
        };
        record.push(State::Requested, now, &actor.to_string());
        let key = {
            let _w = self.lock()?;
            self.audit.append_unflushed(
                actor,
                AuditEvent::ContractRequested,
                vec![id.to_string(), d.id.to_string()],
                json!({
                    "role": "consumer",
                    "provider": d.publisher.peer_id,
                    "offer": record.offer,
                    "purpose": record.purpose,
                    "researcher": record.researcher.id,
                }),
                now,
            )?;
            let mut w = WriteSet::new();
            let key = self.stage_send(&mut w, &record, message, now)?;
            self.stage_record(&mut w, &record)?;
            self.commit(&w, &record)?;
            key
        };
        self.deliver(key).await;
        Ok(self.get(&id)?.unwrap_or(record))
    }

    fn issue_credential(
        &self,
        req: &NewRequest,
        now: OffsetDateTime,
    ) -> Result<String, NegotiatorError> {
        let orcid = match &req.requester.orcid {
            Some(o) => Some(
                o.as_str()
                    .parse::<Orcid>()
                    .map_err(|e| NegotiatorError::Credential(e.to_string()))?,
            ),
            None => None,
        };
        let role = if req.as_admin {
            ResearcherRole::Administrator
        } else {
            ResearcherRole::Researcher
        };
        let body = ResearcherBody {
            id: req.requester.id.clone(),
            name: req.requester.name.clone(),
            orcid,
            roles: BTreeSet::from([role]),
            issuer: self.key.peer_id(),
            // A little slack for the provider's clock.
            not_before: now - time::Duration::minutes(5),
            not_after: now + time::Duration::days(i64::from(self.settings.credential_days)),
        };
        let cred = ResearcherCredential::issue(body, &self.key)
            .map_err(|e| NegotiatorError::Credential(e.to_string()))?;
        Ok(cred.to_json())
    }

    // ----- provider side: administrator actions -----

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

    fn pending_record(
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

    // ----- inbound messages -----

    /// An inbound `/bayspace/negotiation/1` request; returns the response
    /// bytes. Storage failures answer `Busy`-free: the peer gets no
    /// decision and retries, since its message stays in its outbox.
    pub async fn on_control(self: &Arc<Self>, peer: PeerId, request: &[u8]) -> Vec<u8> {
        let reply = match Message::decode(request) {
            Err(e) => Message::Refused {
                reason: wire::bounded(&e.to_string()),
            },
            Ok(m) => {
                let negotiation = m.negotiation().cloned();
                let kind = m.kind();
                let received = self
                    .off_runtime(move |n| n.receive(&peer, m, None))
                    .await
                    .and_then(|r| r);
                match received {
                    Ok((Received::Fresh(Some(next)) | Received::Duplicate(Some(next)), _)) => next,
                    Ok((Received::Fresh(None) | Received::Duplicate(None), _)) => {
                        self.ack(negotiation.as_ref())
                    }
                    Ok((Received::Refused(reason), _)) => {
                        tracing::warn!(%peer, kind, "negotiation message refused: {reason}");
                        Message::Refused {
                            reason: wire::bounded(&reason),
                        }
                    }
                    Err(e) => {
                        tracing::error!(%peer, kind, "cannot handle a negotiation message: {e}");
                        Message::Busy {
                            reason: wire::bounded(&e.to_string()),
                        }
                    }
                }
            }
        };
        reply.encode().unwrap_or_default()
    }

    pub(super) fn ack(&self, negotiation: Option<&NegotiationId>) -> Message {
        match negotiation.and_then(|id| self.get(id).ok().flatten()) {
            Some(r) => Message::Ack {
                negotiation: r.id,
                state: r.state,
            },
            None => Message::Refused {
                reason: "no such negotiation".into(),
            },
        }
    }

    /// Apply one message from `peer`: a request (`delivered` is `None`), or
    /// the reply to the outbox entry `delivered`. For a reply, the
    /// delivered entry leaves the outbox and the message the peer must get
    /// next enters it, in the same write as the state change; its key is
    /// returned.
    pub(super) fn receive(
        &self,
        peer: &PeerId,
        m: Message,
        delivered: Option<(&str, &Message)>,
    ) -> Result<(Received, Option<String>), NegotiatorError> {
        let now = timestamp::whole_seconds(OffsetDateTime::now_utc());
        let Some(id) = m.negotiation().cloned() else {
            return Ok((
                Received::Refused(format!("{} is not a request", m.kind())),
                None,
            ));
        };
        let seen = (m.kind().to_owned(), m.digest()?);
        let _w = self.lock()?;
        let handled = self.handle(peer, &id, m, seen, now)?;
        match handled {
            Handled::Refused(reason) => Ok((Received::Refused(reason), None)),
            Handled::Duplicate(last) => {
                let Some((key, sent)) = delivered else {
                    return Ok((Received::Duplicate(last), None));
                };
                // Our message was answered with one we had applied before
                // (we lost our own progress record of it): send again what
                // we answered then, unless that is what was just delivered.
                let mut w = WriteSet::new();
                self.outbox.stage_remove(&mut w, &key.to_owned());
                let next = match &last {
                    Some(n) if n.kind() != sent.kind() => {
                        Some(self.stage_outgoing(&mut w, &peer.to_string(), &id, n.clone(), now)?)
                    }
                    _ => None,
                };
                self.store.apply(&w)?;
                self.store.flush()?;
                Ok((Received::Duplicate(last), next))
            }
            Handled::Change { mut w, r, reply } => {
                let mut next = None;
                if let Some((key, _)) = delivered {
                    self.outbox.stage_remove(&mut w, &key.to_owned());
                    if let Some(n) = &reply {
                        next = Some(self.stage_send(&mut w, &r, n.clone(), now)?);
                    }
                }
                self.stage_record(&mut w, &r)?;
                self.commit(&w, &r)?;
                Ok((Received::Fresh(reply), next))
            }
        }
    }

    fn handle(
        &self,
        peer: &PeerId,
        id: &NegotiationId,
        m: Message,
        seen: (String, String),
        now: OffsetDateTime,
    ) -> Result<Handled, NegotiatorError> {
        let existing = self.negotiations.get(&id.to_string())?;
        if let Some(r) = &existing {
            if r.counterparty.peer_id != peer.to_string() {
                return Ok(Handled::Refused(format!(
                    "negotiation {id} is not one with {peer}"
                )));
            }
            if let Some((_, d)) = r.received.iter().find(|(k, _)| *k == seen.0) {
                return Ok(if *d == seen.1 {
                    Handled::Duplicate(r.last_sent.clone())
                } else {
                    Handled::Refused(format!(
                        "a different {} for negotiation {id} was received before",
                        seen.0
                    ))
                });
            }
        }
        match (m, existing) {
            (Message::ContractRequest(req), None) => self.on_request(peer, req, seen, now),
            (Message::ContractRequest(_), Some(_)) => Ok(Handled::Refused(format!(
                "negotiation {id} exists; counter-requests are not supported"
            ))),
            (m @ (Message::Ack { .. } | Message::Refused { .. } | Message::Busy { .. }), _) => {
                Ok(Handled::Refused(format!("{} is not a request", m.kind())))
            }
            (_, None) => Ok(Handled::Refused(format!("no negotiation {id}"))),
            (Message::ContractAgreement { agreement, .. }, Some(mut r)) => {
                r.received.push(seen);
                self.on_agreement(peer, r, *agreement, now)
            }
            (Message::AgreementVerification { agreement, .. }, Some(mut r)) => {
                r.received.push(seen);
                self.on_verification(peer, r, *agreement, now)
            }
            (Message::Finalized { .. }, Some(mut r)) => {
                r.received.push(seen);
                self.on_finalized(peer, r, now)
            }
            (Message::Termination { reasons, .. }, Some(mut r)) => {
                r.received.push(seen);
                self.on_termination(peer, r, reasons, now)
            }
            (
                Message::AgreementRevoked {
                    agreement, reason, ..
                },
                Some(mut r),
            ) => {
                r.received.push(seen);
                self.on_revoked(peer, r, &agreement, reason, now)
            }
        }
    }

    /// A new request to this node: identity, policy, assessment, then
    /// refused at once, pending, or approved by the node. The decision
    /// travels in the response.
    fn on_request(
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

    fn check_request(
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

    fn audit_assessment(
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

    fn offer_of(&self, r: &NegotiationRecord) -> Result<Option<Offer>, NegotiatorError> {
        Ok(self
            .catalog
            .get(&r.dataset)?
            .and_then(|s| s.descriptor.offer(&r.offer).cloned()))
    }

    fn policy_refusals(
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
    fn reassess(
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
    fn approve_locked(
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

    /// Move to TERMINATED with reasons, audited. Returns the termination
    /// message for the peer (also kept as the last message sent), or `None`
    /// when the negotiation had already ended.
    pub(super) fn terminate_locked(
        &self,
        r: &mut NegotiationRecord,
        actor: Actor,
        reasons: Vec<String>,
        now: OffsetDateTime,
    ) -> Result<Option<Message>, NegotiatorError> {
        if r.state.is_terminal() {
            return Ok(None);
        }
        let reasons: Vec<String> = reasons
            .iter()
            .take(wire::MAX_REASONS)
            .map(|s| wire::bounded(s))
            .collect();
        self.audit.append_unflushed(
            actor.clone(),
            AuditEvent::Rejection,
            vec![r.id.to_string(), r.dataset.to_string()],
            json!({ "reasons": reasons, "role": r.role.as_str() }),
            now,
        )?;
        r.reasons = reasons.clone();
        r.push(State::Terminated, now, &actor.to_string());
        let m = Message::Termination {
            negotiation: r.id.clone(),
            reasons,
        };
        r.last_sent = Some(m.clone());
        Ok(Some(m))
    }

    /// The consumer gets the provider-signed agreement: check it says what
    /// was asked, countersign, and answer with the verification.
    fn on_agreement(
        &self,
        peer: &PeerId,
        mut r: NegotiationRecord,
        signed: SignedAgreement,
        now: OffsetDateTime,
    ) -> Result<Handled, NegotiatorError> {
        if let Some(refused) = self.check_transition(&r, Role::Provider, &Event::ContractAgreement)
        {
            return Ok(refused);
        }
        let mut w = WriteSet::new();
        let reply = match self.accept_agreement(peer, &r, signed) {
            Err(reason) => {
                let reasons = vec![format!(
                    "the agreement from the provider was refused: {reason}"
                )];
                self.terminate_locked(&mut r, Actor::Node, reasons, now)?
            }
            Ok(countersigned) => {
                let ag = &countersigned.agreement;
                self.audit_agreement(Actor::Node, &r, ag, now)?;
                // The id is the provider's choice: it must not land on a
                // record already here (checked in `accept_agreement`, and
                // made a precondition of the write).
                self.agreements
                    .stage_expect(&mut w, &ag.id.to_string(), None)?;
                self.agreements.stage_insert(
                    &mut w,
                    &ag.id.to_string(),
                    &AgreementRecord {
                        role: Role::Consumer,
                        signed: countersigned.clone(),
                        revoked: None,
                        uses: 0,
                        open_release: None,
                    },
                )?;
                r.agreement_id = Some(ag.id.clone());
                r.certificate = ag.certificate.clone();
                let m = Message::AgreementVerification {
                    negotiation: r.id.clone(),
                    agreement: Box::new(countersigned),
                };
                Some(answer(&mut r, peer, State::Agreed, State::Verified, m, now))
            }
        };
        Ok(Handled::Change {
            w,
            r: Box::new(r),
            reply,
        })
    }

    fn accept_agreement(
        &self,
        peer: &PeerId,
        r: &NegotiationRecord,
        signed: SignedAgreement,
    ) -> Result<SignedAgreement, String> {
        let provider_key =
            public_key_of(peer).ok_or_else(|| format!("{peer} carries no ed25519 key"))?;
        signed
            .verify_provider(Some(&provider_key))
            .map_err(|e| e.to_string())?;
        let a = &signed.agreement;
        // The provider chooses the id; one that names an agreement this
        // node already keeps (as provider, or for another researcher) would
        // replace it.
        match self.agreements.get(&a.id.to_string()) {
            Ok(None) => {}
            Ok(Some(_)) => {
                return Err(format!(
                    "its agreement id {} is already in use on this node",
                    a.id
                ));
            }
            Err(e) => return Err(format!("cannot check its agreement id: {e}")),
        }
        let mismatch = |field: &str| format!("its {field} is not the one requested");
        if a.negotiation != r.id {
            return Err(mismatch("negotiation"));
        }
        if a.dataset != r.dataset {
            return Err(mismatch("dataset"));
        }
        if a.offer != r.offer {
            return Err(mismatch("offer"));
        }
        if a.purpose != r.purpose {
            return Err(mismatch("purpose"));
        }
        if a.researcher.id != r.researcher.id {
            return Err(mismatch("researcher"));
        }
        if a.provider.peer_id != peer.to_string() {
            return Err(mismatch("provider"));
        }
        if a.consumer.peer_id != self.me.peer_id || a.consumer.key != self.me.key {
            return Err("it does not name this institution as the consumer".into());
        }
        signed
            .countersign(self.key.signing_key(), Some(&provider_key))
            .map_err(|e| e.to_string())
    }

    /// The audit entry of an agreement both sides have signed, from this
    /// node's side of it.
    fn audit_agreement(
        &self,
        actor: Actor,
        r: &NegotiationRecord,
        ag: &Agreement,
        now: OffsetDateTime,
    ) -> Result<(), NegotiatorError> {
        let mut details = json!({
            "role": r.role.as_str(),
            "researcher": ag.researcher.id,
            "purpose": ag.purpose,
            "route": ag.route,
            "variant": ag.variant,
            "not_after": ag.not_after.unix_timestamp(),
        });
        match r.role {
            Role::Consumer => details["provider"] = ag.provider.peer_id.clone().into(),
            Role::Provider => details["consumer"] = ag.consumer.peer_id.clone().into(),
        }
        self.audit.append_unflushed(
            actor,
            AuditEvent::Agreement,
            vec![r.id.to_string(), ag.id.to_string(), ag.dataset.to_string()],
            details,
            now,
        )?;
        Ok(())
    }

    /// The provider gets the countersigned agreement: it must be exactly
    /// the one it signed, countersigned by the consumer's key.
    fn on_verification(
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

    fn on_termination(
        &self,
        peer: &PeerId,
        mut r: NegotiationRecord,
        reasons: Vec<String>,
        now: OffsetDateTime,
    ) -> Result<Handled, NegotiatorError> {
        let event = Event::Termination {
            code: None,
            reasons: reasons.clone(),
        };
        if let Some(refused) = self.check_transition(&r, r.role.counterpart(), &event) {
            return Ok(refused);
        }
        self.audit.append_unflushed(
            Actor::Peer(peer.to_string()),
            AuditEvent::Rejection,
            vec![r.id.to_string(), r.dataset.to_string()],
            json!({ "reasons": reasons, "role": r.role.as_str() }),
            now,
        )?;
        r.reasons = reasons;
        r.push(
            State::Terminated,
            now,
            &Actor::Peer(peer.to_string()).to_string(),
        );
        Ok(Handled::Change {
            w: WriteSet::new(),
            r: Box::new(r),
            reply: None,
        })
    }

    /// FINALIZED from the provider, on the consumer.
    fn on_finalized(
        &self,
        peer: &PeerId,
        mut r: NegotiationRecord,
        now: OffsetDateTime,
    ) -> Result<Handled, NegotiatorError> {
        if let Some(refused) = self.check_transition(&r, Role::Provider, &Event::Finalized) {
            return Ok(refused);
        }
        r.push(
            State::Finalized,
            now,
            &Actor::Peer(peer.to_string()).to_string(),
        );
        Ok(Handled::Change {
            w: WriteSet::new(),
            r: Box::new(r),
            reply: None,
        })
    }

    fn on_revoked(
        &self,
        peer: &PeerId,
        r: NegotiationRecord,
        agreement: &AgreementId,
        reason: String,
        now: OffsetDateTime,
    ) -> Result<Handled, NegotiatorError> {
        let Some(mut a) = self.agreements.get(&agreement.to_string())? else {
            return Ok(Handled::Refused(format!("no agreement {agreement}")));
        };
        if a.role != Role::Consumer
            || a.signed.agreement.provider.peer_id != peer.to_string()
            || a.signed.agreement.negotiation != r.id
        {
            return Ok(Handled::Refused(format!(
                "agreement {agreement} was not made with {peer} in negotiation {}",
                r.id
            )));
        }
        let mut w = WriteSet::new();
        if a.revoked.is_none() {
            self.audit.append_unflushed(
                Actor::Peer(peer.to_string()),
                AuditEvent::AgreementRevoked,
                vec![agreement.to_string(), r.id.to_string()],
                json!({ "reason": reason }),
                now,
            )?;
            a.revoked = Some(Revocation { reason, at: now });
            self.agreements
                .stage_insert(&mut w, &agreement.to_string(), &a)?;
        }
        Ok(Handled::Change {
            w,
            r: Box::new(r),
            reply: None,
        })
    }

    /// `Some` refusal when `event` from `sender` cannot apply to `r`; a
    /// message for a negotiation that already ended is answered (as a
    /// duplicate would be) without a change.
    fn check_transition(
        &self,
        r: &NegotiationRecord,
        sender: Role,
        event: &Event,
    ) -> Option<Handled> {
        if r.role != sender.counterpart() {
            return Some(Handled::Refused(format!(
                "{event} cannot come from the {sender} of negotiation {}",
                r.id
            )));
        }
        if r.state.is_terminal() {
            return Some(Handled::Duplicate(r.last_sent.clone()));
        }
        match transition(r.state, sender, event) {
            Ok(_) => None,
            Err(e) => Some(Handled::Refused(format!("negotiation {}: {e}", r.id))),
        }
    }

    // ----- storage -----

    pub(super) fn lock(&self) -> Result<std::sync::MutexGuard<'_, ()>, NegotiatorError> {
        self.write.lock().map_err(|_| NegotiatorError::Poisoned)
    }

    fn stage_record(&self, w: &mut WriteSet, r: &NegotiationRecord) -> Result<(), NegotiatorError> {
        self.negotiations.stage_insert(w, &r.id.to_string(), r)?;
        Ok(())
    }

    /// Apply, flush, tell the watchers.
    pub(super) fn commit(
        &self,
        w: &WriteSet,
        r: &NegotiationRecord,
    ) -> Result<(), NegotiatorError> {
        self.store.apply(w)?;
        self.store.flush()?;
        self.note_pending(r);
        self.announce(r);
        Ok(())
    }

    /// Keeps [`Negotiator::pending_by_peer`] in step with a stored record.
    fn note_pending(&self, r: &NegotiationRecord) {
        if r.role != Role::Provider {
            return;
        }
        let Ok(mut by_peer) = self.pending_by_peer.lock() else {
            return;
        };
        let peer = &r.counterparty.peer_id;
        if r.is_pending_approval() {
            by_peer
                .entry(peer.clone())
                .or_default()
                .insert(r.id.to_string());
        } else if let Some(ids) = by_peer.get_mut(peer) {
            ids.remove(r.id.as_str());
            if ids.is_empty() {
                by_peer.remove(peer);
            }
        }
    }

    /// Refuses a new request from `peer` past its quota of requests
    /// waiting for this node's administrator; the refusal is audited within
    /// the peer's budget of refusal entries.
    fn over_quota(
        &self,
        peer: &PeerId,
        req: &ContractRequest,
        now: OffsetDateTime,
    ) -> Result<Option<String>, NegotiatorError> {
        let waiting = self
            .pending_by_peer
            .lock()
            .map_err(|_| NegotiatorError::Poisoned)?
            .get(&peer.to_string())
            .map_or(0, |ids| ids.len());
        if waiting < self.settings.max_pending_per_peer {
            return Ok(None);
        }
        let reason = format!(
            "{peer} has {waiting} requests waiting for approval here, the most allowed; \
             ask again once some are decided"
        );
        let budget = self
            .refusal_budget
            .lock()
            .map_err(|_| NegotiatorError::Poisoned)?
            .take(peer, std::time::Instant::now());
        if let Some(suppressed) = budget {
            self.audit.append(
                Actor::Peer(peer.to_string()),
                AuditEvent::Rejection,
                vec![req.negotiation.to_string(), req.dataset.to_string()],
                json!({
                    "code": "quota",
                    "reasons": [reason],
                    "role": Role::Provider.as_str(),
                    "suppressed_before": suppressed,
                }),
                now,
            )?;
        }
        Ok(Some(reason))
    }

    /// Stage `message` in the outbox for the counterparty of `r`. Returns
    /// the outbox key.
    pub(super) fn stage_send(
        &self,
        w: &mut WriteSet,
        r: &NegotiationRecord,
        message: Message,
        now: OffsetDateTime,
    ) -> Result<String, NegotiatorError> {
        self.stage_outgoing(w, &r.counterparty.peer_id, &r.id, message, now)
    }

    pub(super) fn stage_outgoing(
        &self,
        w: &mut WriteSet,
        peer: &str,
        negotiation: &NegotiationId,
        message: Message,
        now: OffsetDateTime,
    ) -> Result<String, NegotiatorError> {
        let key = outbox::key(negotiation, &message);
        let entry = Outgoing {
            peer: peer.to_owned(),
            message,
            attempts: 0,
            next_at: now,
        };
        self.outbox.stage_insert(w, &key, &entry)?;
        Ok(key)
    }
}

/// The reasons the offer's policy refuses this use now; empty when allowed.
fn policy_refusals(
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
fn check_certificate(r: &DatasetRecords) -> Result<(), NegotiatorError> {
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

fn parse_peer(s: &str) -> Result<PeerId, NegotiatorError> {
    s.parse().map_err(|_| NegotiatorError::BadInput {
        field: "peer_id",
        reason: format!("`{s}` is not a PeerId"),
    })
}

/// Records `reached` (what the peer's message did) and `then` (this node's
/// answer to it), and makes `reply` the last message sent, so that a
/// duplicate of the peer's message gets the same answer.
fn answer(
    r: &mut NegotiationRecord,
    peer: &PeerId,
    reached: State,
    then: State,
    reply: Message,
    now: OffsetDateTime,
) -> Message {
    r.push(reached, now, &Actor::Peer(peer.to_string()).to_string());
    r.push(then, now, &Actor::Node.to_string());
    r.last_sent = Some(reply.clone());
    reply
}
