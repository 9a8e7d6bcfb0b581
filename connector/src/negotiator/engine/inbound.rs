//! Messages from a peer: decoded, matched to their negotiation, checked
//! against the state machine and answered, with duplicates answered again.

use std::sync::Arc;

use bayspace_contracts::agreement::{Agreement, NegotiationId};
use bayspace_contracts::negotiation::{Event, Role, State, transition};
use libp2p::PeerId;
use serde_json::json;
use time::OffsetDateTime;

use crate::audit::{Actor, AuditEvent};
use crate::identity::timestamp;
use crate::negotiator::model::Received;
use crate::negotiator::wire::{self, Message};
use crate::negotiator::{NegotiationRecord, Negotiator, NegotiatorError};
use crate::store::WriteSet;

/// What a handler decided, before it is stored.
pub(super) enum Handled {
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

impl Negotiator {
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

    pub(in crate::negotiator) fn ack(&self, negotiation: Option<&NegotiationId>) -> Message {
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
    pub(in crate::negotiator) fn receive(
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

    pub(super) fn handle(
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

    /// Move to TERMINATED with reasons, audited. Returns the termination
    /// message for the peer (also kept as the last message sent), or `None`
    /// when the negotiation had already ended.
    pub(in crate::negotiator) fn terminate_locked(
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

    /// The audit entry of an agreement both sides have signed, from this
    /// node's side of it.
    pub(super) fn audit_agreement(
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

    pub(super) fn on_termination(
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

    /// `Some` refusal when `event` from `sender` cannot apply to `r`; a
    /// message for a negotiation that already ended is answered (as a
    /// duplicate would be) without a change.
    pub(super) fn check_transition(
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
}

/// Records `reached` (what the peer's message did) and `then` (this node's
/// answer to it), and makes `reply` the last message sent, so that a
/// duplicate of the peer's message gets the same answer.
pub(super) fn answer(
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

pub(super) fn parse_peer(s: &str) -> Result<PeerId, NegotiatorError> {
    s.parse().map_err(|_| NegotiatorError::BadInput {
        field: "peer_id",
        reason: format!("`{s}` is not a PeerId"),
    })
}
