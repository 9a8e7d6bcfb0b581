//! The negotiation steps on both sides. Each step runs under the write
//! lock: check, audit, stage the state change (and the outbox entry that
//! announces it) in one write set, apply, flush. Only then does anything
//! leave the node.
//!
//! One file per concern: `consumer` (this node asks), `provider` (this node
//! decides), `inbound` (a peer's message arrives), `storage` (how a step is
//! written).

mod consumer;
mod inbound;
mod provider;
mod storage;

use bayspace_contracts::agreement::Certificate;
use bayspace_contracts::compliance::Assessment;
use bayspace_contracts::descriptor::{DatasetDescriptor, PublicKey};
use libp2p::PeerId;

use super::NegotiatorError;
use super::wire;
use crate::identity::key_of_peer_id;

/// An assessment with the certificate its route relies on: the one on
/// record for the dataset, exactly when the route is `certification`.
#[derive(Debug, Clone)]
pub(crate) struct Assessed {
    pub assessment: Assessment,
    pub certificate: Option<Certificate>,
}

pub(super) fn random_id() -> Result<[u8; 16], NegotiatorError> {
    Ok(crate::random::bytes()?)
}

pub(super) fn offers_of(d: &DatasetDescriptor) -> String {
    d.offers
        .iter()
        .map(|o| o.id.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn public_key_of(peer: &PeerId) -> Option<PublicKey> {
    key_of_peer_id(peer).ok().map(|k| PublicKey::from(&k))
}

pub(super) fn check_text(field: &'static str, s: &str) -> Result<(), NegotiatorError> {
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
