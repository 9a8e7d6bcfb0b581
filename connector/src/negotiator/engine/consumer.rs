//! The consumer side: a researcher's request leaves this node, and the
//! provider's agreement, finalization or revocation comes back.

use std::collections::BTreeSet;
use std::sync::Arc;

use bayspace_contracts::agreement::{AgreementId, NegotiationId, SignedAgreement};
use bayspace_contracts::negotiation::{Event, Role, State};
use libp2p::PeerId;
use serde_json::json;
use time::OffsetDateTime;

use crate::audit::{Actor, AuditEvent};
use crate::identity::{Orcid, ResearcherBody, ResearcherCredential, ResearcherRole, timestamp};
use crate::negotiator::engine::inbound::{Handled, answer, parse_peer};
use crate::negotiator::engine::{offers_of, public_key_of, random_id};
use crate::negotiator::wire::{ContractRequest, Message};
use crate::negotiator::{
    AgreementRecord, Counterparty, NegotiationRecord, Negotiator, NegotiatorError, NewRequest,
    Revocation,
};
use crate::store::WriteSet;

impl Negotiator {
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

    pub(super) fn issue_credential(
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

    /// The consumer gets the provider-signed agreement: check it says what
    /// was asked, countersign, and answer with the verification.
    pub(super) fn on_agreement(
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

    pub(super) fn accept_agreement(
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

    /// FINALIZED from the provider, on the consumer.
    pub(super) fn on_finalized(
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

    pub(super) fn on_revoked(
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
}
