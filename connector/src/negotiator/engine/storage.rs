//! How a negotiation step is stored: one write set with the record and the
//! outbox entry, applied and flushed under the lock, then announced.

use bayspace_contracts::agreement::NegotiationId;
use bayspace_contracts::negotiation::Role;
use libp2p::PeerId;
use serde_json::json;
use time::OffsetDateTime;

use crate::audit::{Actor, AuditEvent};
use crate::negotiator::outbox::{self, Outgoing};
use crate::negotiator::wire::{ContractRequest, Message};
use crate::negotiator::{NegotiationRecord, Negotiator, NegotiatorError};
use crate::store::WriteSet;

impl Negotiator {
    pub(in crate::negotiator) fn lock(
        &self,
    ) -> Result<std::sync::MutexGuard<'_, ()>, NegotiatorError> {
        self.write.lock().map_err(|_| NegotiatorError::Poisoned)
    }

    pub(super) fn stage_record(
        &self,
        w: &mut WriteSet,
        r: &NegotiationRecord,
    ) -> Result<(), NegotiatorError> {
        self.negotiations.stage_insert(w, &r.id.to_string(), r)?;
        Ok(())
    }

    /// Apply, flush, tell the watchers.
    pub(in crate::negotiator) fn commit(
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
    pub(super) fn note_pending(&self, r: &NegotiationRecord) {
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
    pub(super) fn over_quota(
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
    pub(in crate::negotiator) fn stage_send(
        &self,
        w: &mut WriteSet,
        r: &NegotiationRecord,
        message: Message,
        now: OffsetDateTime,
    ) -> Result<String, NegotiatorError> {
        self.stage_outgoing(w, &r.counterparty.peer_id, &r.id, message, now)
    }

    pub(in crate::negotiator) fn stage_outgoing(
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
