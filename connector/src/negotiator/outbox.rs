//! Messages waiting to reach a peer. An entry is written in the same write
//! as the state change that produced it and removed in the same write as
//! the change the peer's answer causes, so after a crash every entry still
//! in the outbox is exactly a message not yet answered. Undelivered
//! entries are retried with exponential back-off; a peer that is admitted
//! again gets its entries at once, with their back-off forgotten (it
//! measured the peer's absence, which has ended). The retry loop sends a
//! peer at most [`Settings::max_deliveries_per_peer`] at once, and a
//! message held back by the swarm's own bound on requests in flight is
//! retried soon without counting as an attempt: neither says anything
//! about the peer being away.
//!
//! [`Settings::max_deliveries_per_peer`]: super::Settings::max_deliveries_per_peer

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bayspace_contracts::agreement::NegotiationId;
use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::model::Received;
use super::wire::Message;
use super::{Negotiator, NegotiatorError};
use crate::audit::Actor;
use crate::p2p::{ControlRequest, P2pError};
use crate::store::WriteSet;

/// One message for one peer, and when to try it next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Outgoing {
    pub peer: String,
    pub message: Message,
    pub attempts: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub next_at: OffsetDateTime,
}

/// Why an attempt got no answer, which decides when the next one is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Miss {
    /// The peer is away, did not answer, was busy or answered nonsense.
    Failed,
    /// This node did not send it: the peer already has as many requests
    /// in flight as the swarm allows.
    Throttled,
}

impl Miss {
    fn of(e: &P2pError) -> Miss {
        match e {
            P2pError::TooManyPending { .. } => Miss::Throttled,
            _ => Miss::Failed,
        }
    }
}

/// `<negotiation> <kind>`: a negotiation has at most one message of each
/// kind in flight, and all of its entries share a prefix.
pub(crate) fn key(negotiation: &NegotiationId, m: &Message) -> String {
    format!("{negotiation} {}", m.kind())
}

impl Negotiator {
    /// Deliver the entry `key`, then whatever the answers put in the
    /// outbox after it, until the exchange rests or the peer is out of
    /// reach. Safe to call for a key being delivered elsewhere: it returns.
    pub(super) async fn deliver(self: &Arc<Self>, key: String) {
        let mut key = key;
        loop {
            if !self.claim(&key) {
                return;
            }
            let next = self.attempt(&key).await;
            self.unclaim(&key);
            match next {
                Some(k) => key = k,
                None => return,
            }
        }
    }

    fn claim(&self, key: &str) -> bool {
        self.delivering
            .lock()
            .map(|mut d| d.insert(key.to_owned()))
            .unwrap_or(false)
    }

    fn is_delivering(&self, key: &str) -> bool {
        self.delivering.lock().is_ok_and(|d| d.contains(key))
    }

    fn unclaim(&self, key: &str) {
        if let Ok(mut d) = self.delivering.lock() {
            d.remove(key);
        }
    }

    /// One attempt; the key of the next entry to deliver, if any.
    async fn attempt(self: &Arc<Self>, key: &str) -> Option<String> {
        let entry = match self.outbox.get(&key.to_owned()) {
            Ok(Some(e)) => e,
            Ok(None) => return None,
            Err(e) => {
                tracing::error!(key, "cannot read the negotiation outbox: {e}");
                return None;
            }
        };
        let Ok(peer) = entry.peer.parse::<PeerId>() else {
            tracing::error!(
                key,
                peer = entry.peer,
                "outbox entry names no PeerId; dropped"
            );
            self.drop_entry(key);
            return None;
        };
        let bytes = match entry.message.encode() {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(key, "cannot encode an outbox entry: {e}; dropped");
                self.drop_entry(key);
                return None;
            }
        };
        self.sending(&entry.peer, true);
        let response = self
            .client
            .control_request(peer, ControlRequest(bytes))
            .await;
        self.sending(&entry.peer, false);
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(key, %peer, "negotiation message not delivered: {e}");
                self.reschedule(key, entry, Miss::of(&e));
                return None;
            }
        };
        let reply = match Message::decode(&response.0) {
            Ok(Message::Busy { reason }) => {
                tracing::info!(key, %peer, "peer busy: {reason}; will retry");
                self.reschedule(key, entry, Miss::Failed);
                return None;
            }
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(key, %peer, "unreadable answer to a negotiation message: {e}");
                self.reschedule(key, entry, Miss::Failed);
                return None;
            }
        };
        let (owned_key, sent) = (key.to_owned(), entry.message.clone());
        let applied = self
            .off_runtime(move |n| n.on_reply(&peer, &owned_key, &sent, reply))
            .await
            .and_then(|r| r);
        match applied {
            Ok(next) => next,
            Err(e) => {
                tracing::error!(key, %peer, "cannot apply the answer to a negotiation message: {e}");
                self.reschedule(key, entry, Miss::Failed);
                None
            }
        }
    }

    fn on_reply(
        self: &Arc<Self>,
        peer: &PeerId,
        key: &str,
        sent: &Message,
        reply: Message,
    ) -> Result<Option<String>, NegotiatorError> {
        match reply {
            Message::Ack { .. } => {
                self.remove_entry(key)?;
                Ok(None)
            }
            Message::Refused { reason } => {
                tracing::warn!(key, %peer, "peer refused {}: {reason}", sent.kind());
                self.refused(key, sent, &reason)?;
                Ok(None)
            }
            other => match self.receive(peer, other, Some((key, sent)))? {
                (Received::Refused(reason), _) => {
                    tracing::warn!(key, %peer, "the answer to {} was refused: {reason}", sent.kind());
                    self.refused(key, sent, &reason)?;
                    Ok(None)
                }
                (_, next) => Ok(next),
            },
        }
    }

    /// The exchange cannot go on: end the negotiation here (its peer either
    /// never had it or cannot continue it), and stop sending.
    pub(super) fn refused(
        &self,
        key: &str,
        sent: &Message,
        reason: &str,
    ) -> Result<(), NegotiatorError> {
        let Some(id) = sent.negotiation() else {
            return self.remove_entry(key);
        };
        let now = OffsetDateTime::now_utc();
        let _w = self.lock()?;
        let mut w = WriteSet::new();
        self.outbox.stage_remove(&mut w, &key.to_owned());
        match self.get(id)? {
            Some(mut r)
                if !r.state.is_terminal() && !matches!(sent, Message::AgreementRevoked { .. }) =>
            {
                let reasons = vec![format!(
                    "{} refused our {}: {reason}",
                    r.counterparty.institution,
                    sent.kind()
                )];
                // Nothing more goes to a peer that refused: the
                // termination message is not queued.
                self.terminate_locked(&mut r, Actor::Node, reasons, now)?;
                self.negotiations
                    .stage_insert(&mut w, &r.id.to_string(), &r)?;
                self.commit(&w, &r)
            }
            _ => {
                self.store.apply(&w)?;
                self.store.flush()?;
                Ok(())
            }
        }
    }

    pub(super) fn remove_entry(&self, key: &str) -> Result<(), NegotiatorError> {
        let _w = self.lock()?;
        self.outbox.remove(&key.to_owned())?;
        self.store.flush()?;
        Ok(())
    }

    fn drop_entry(&self, key: &str) {
        if let Err(e) = self.remove_entry(key) {
            tracing::error!(key, "cannot drop an outbox entry: {e}");
        }
    }

    /// Counts a request to `peer` going out (`true`) or coming back, and
    /// lets the retry loop look again when a slot frees.
    fn sending(&self, peer: &str, out: bool) {
        if let Ok(mut m) = self.in_flight.lock() {
            if out {
                *m.entry(peer.to_owned()).or_default() += 1;
            } else if let Some(n) = m.get_mut(peer) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    m.remove(peer);
                }
            }
        }
        if !out {
            self.wake.notify_one();
        }
    }

    /// Whether the retry loop may start another delivery to `peer`, having
    /// just started `started` that may not be on the wire yet.
    fn has_slot_for(&self, peer: &str, started: usize) -> bool {
        self.in_flight.lock().map_or(true, |m| {
            m.get(peer).copied().unwrap_or(0) + started
                < self.settings.max_deliveries_per_peer.max(1)
        })
    }

    /// Try again later. A failed attempt doubles the delay up to the
    /// maximum; a message held back only by this node's own bound on
    /// requests in flight is due again after the first delay, with its
    /// attempts unchanged. The schedule is not flushed on its own: after a
    /// crash every entry is simply due.
    pub(super) fn reschedule(&self, key: &str, mut entry: Outgoing, miss: Miss) {
        let delay = match miss {
            Miss::Failed => {
                entry.attempts = entry.attempts.saturating_add(1);
                self.settings
                    .retry_initial
                    .saturating_mul(1u32 << entry.attempts.min(16))
                    .min(self.settings.retry_max)
            }
            Miss::Throttled => self.settings.retry_initial,
        };
        entry.next_at = OffsetDateTime::now_utc() + delay;
        let Ok(_w) = self.lock() else { return };
        // Only if the entry is still there: an answer may have removed it.
        match self.outbox.get(&key.to_owned()) {
            Ok(Some(current)) if current.message == entry.message => {
                if let Err(e) = self.outbox.insert(&key.to_owned(), &entry) {
                    tracing::error!(key, "cannot reschedule an outbox entry: {e}");
                }
            }
            _ => {}
        }
    }

    /// A peer was admitted (again): what waits for it is due now.
    pub fn peer_admitted(&self, peer: &PeerId) {
        let peer = peer.to_string();
        let Ok(entries) = self.outbox_entries() else {
            return;
        };
        let now = OffsetDateTime::now_utc();
        if let Ok(_w) = self.lock() {
            for (key, mut e) in entries {
                if e.peer == peer && (e.next_at > now || e.attempts > 0) {
                    e.next_at = now;
                    e.attempts = 0;
                    if let Err(err) = self.outbox.insert(&key, &e) {
                        tracing::error!(key, "cannot reschedule an outbox entry: {err}");
                    }
                }
            }
        }
        self.wake.notify_one();
    }

    pub(super) fn outbox_entries(&self) -> Result<Vec<(String, Outgoing)>, NegotiatorError> {
        Ok(self.outbox.iter(&[]).collect::<Result<_, _>>()?)
    }

    /// The retry loop: deliver every due entry (at most `max_deliveries`
    /// at once), then sleep until the next is due or a peer comes back.
    /// Spawn it once per node; it runs until the task is aborted.
    pub async fn run(self: Arc<Self>) {
        let limit = Arc::new(tokio::sync::Semaphore::new(
            self.settings.max_deliveries.max(1),
        ));
        loop {
            let now = OffsetDateTime::now_utc();
            let mut sleep = self.settings.retry_max;
            match self.outbox_entries() {
                Ok(entries) => {
                    let mut started: HashMap<String, usize> = HashMap::new();
                    for (key, e) in entries {
                        if e.next_at > now {
                            let wait = (e.next_at - now).unsigned_abs();
                            sleep = sleep.min(wait);
                            continue;
                        }
                        if self.is_delivering(&key) {
                            continue;
                        }
                        // Due, but its peer has all it may take at once: a
                        // finished delivery wakes the loop.
                        let n = started.entry(e.peer.clone()).or_default();
                        if !self.has_slot_for(&e.peer, *n) {
                            continue;
                        }
                        *n += 1;
                        let Ok(permit) = limit.clone().acquire_owned().await else {
                            return;
                        };
                        let this = self.clone();
                        tokio::spawn(async move {
                            this.deliver(key).await;
                            drop(permit);
                        });
                    }
                }
                Err(e) => tracing::error!("cannot read the negotiation outbox: {e}"),
            }
            let sleep = sleep.max(Duration::from_millis(50));
            tokio::select! {
                () = tokio::time::sleep(sleep) => {}
                () = self.wake.notified() => {}
            }
        }
    }

    /// Entries waiting, for status displays and tests.
    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }
}
