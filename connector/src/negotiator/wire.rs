//! The negotiation messages carried inside `/bayspace/negotiation/1`
//! control requests, CBOR-encoded.
//!
//! Each message is the typed form of a DSP 2025-1 negotiation message (the
//! process id is shared by both sides: the consumer picks it and the
//! provider keys it by the requesting peer as well), plus two Bayspace
//! additions: `AgreementRevoked`, and the replies `Ack` and `Refused`.
//! Every message is answered by another one: `Ack` when there is nothing to
//! say, the next message of the protocol when there is, or `Refused` when
//! the message was not acceptable (nothing changed on the receiving side).

use bayspace_contracts::agreement::{AgreementId, NegotiationId, SignedAgreement};
use bayspace_contracts::descriptor::{DatasetId, OfferId};
use bayspace_contracts::negotiation::State;
use bayspace_contracts::policy::Purpose;
use serde::{Deserialize, Serialize};

/// Most reasons a termination carries.
pub const MAX_REASONS: usize = 32;
/// Longest reason, note or refusal text, in bytes.
pub const MAX_TEXT: usize = 2048;
/// Largest researcher credential, in bytes of JSON.
pub const MAX_CREDENTIAL: usize = 16 * 1024;

/// DSP `ContractRequestMessage`: a researcher's request for one offer of a
/// dataset, with the researcher credential their institution issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContractRequest {
    pub negotiation: NegotiationId,
    pub dataset: DatasetId,
    /// The version the consumer saw in its catalog.
    pub dataset_version: u64,
    pub offer: OfferId,
    pub purpose: Purpose,
    /// A researcher credential (`Signed<ResearcherBody>` JSON) issued by the
    /// requesting node.
    pub credential: String,
}

/// One negotiation message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Message {
    ContractRequest(ContractRequest),
    /// DSP `ContractAgreementMessage`: the agreement signed by the provider.
    ContractAgreement {
        negotiation: NegotiationId,
        agreement: Box<SignedAgreement>,
    },
    /// DSP `ContractAgreementVerificationMessage`: the agreement with the
    /// consumer's countersignature.
    AgreementVerification {
        negotiation: NegotiationId,
        agreement: Box<SignedAgreement>,
    },
    /// DSP `ContractNegotiationEventMessage` with event type FINALIZED.
    Finalized { negotiation: NegotiationId },
    /// DSP `ContractNegotiationTerminationMessage`.
    Termination {
        negotiation: NegotiationId,
        reasons: Vec<String>,
    },
    /// The provider retired a finalized agreement; no release follows.
    AgreementRevoked {
        negotiation: NegotiationId,
        agreement: AgreementId,
        reason: String,
    },
    /// Received and in force; the receiver's state after it.
    Ack {
        negotiation: NegotiationId,
        state: State,
    },
    /// Not acceptable; nothing changed on the receiving side.
    Refused { reason: String },
}

/// Why bytes from a peer are not a negotiation message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("not a negotiation message: {0}")]
    Decode(String),
    #[error("negotiation message field {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("cannot encode a negotiation message: {0}")]
    Encode(String),
}

impl Message {
    /// The kind, as stored and logged.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::ContractRequest(_) => "contract-request",
            Message::ContractAgreement { .. } => "contract-agreement",
            Message::AgreementVerification { .. } => "agreement-verification",
            Message::Finalized { .. } => "finalized",
            Message::Termination { .. } => "termination",
            Message::AgreementRevoked { .. } => "agreement-revoked",
            Message::Ack { .. } => "ack",
            Message::Refused { .. } => "refused",
        }
    }

    /// The negotiation the message belongs to (`Refused` names none).
    pub fn negotiation(&self) -> Option<&NegotiationId> {
        match self {
            Message::ContractRequest(r) => Some(&r.negotiation),
            Message::ContractAgreement { negotiation, .. }
            | Message::AgreementVerification { negotiation, .. }
            | Message::Finalized { negotiation }
            | Message::Termination { negotiation, .. }
            | Message::AgreementRevoked { negotiation, .. }
            | Message::Ack { negotiation, .. } => Some(negotiation),
            Message::Refused { .. } => None,
        }
    }

    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        cbor4ii::serde::to_vec(Vec::new(), self).map_err(|e| WireError::Encode(e.to_string()))
    }

    /// Decode and check the bounds the types do not carry themselves. The
    /// agreement inside is checked in full by the negotiator, which knows
    /// whose signatures to expect.
    pub fn decode(bytes: &[u8]) -> Result<Message, WireError> {
        let m: Message =
            cbor4ii::serde::from_slice(bytes).map_err(|e| WireError::Decode(e.to_string()))?;
        m.check()?;
        Ok(m)
    }

    fn check(&self) -> Result<(), WireError> {
        let text = |field: &'static str, s: &str| {
            if s.len() > MAX_TEXT {
                return Err(WireError::Invalid {
                    field,
                    reason: format!("{} bytes, more than {MAX_TEXT}", s.len()),
                });
            }
            Ok(())
        };
        match self {
            Message::ContractRequest(r) => {
                if r.dataset_version == 0 {
                    return Err(WireError::Invalid {
                        field: "dataset_version",
                        reason: "versions start at 1".into(),
                    });
                }
                if r.credential.len() > MAX_CREDENTIAL {
                    return Err(WireError::Invalid {
                        field: "credential",
                        reason: format!(
                            "{} bytes, more than {MAX_CREDENTIAL}",
                            r.credential.len()
                        ),
                    });
                }
                Ok(())
            }
            Message::Termination { reasons, .. } => {
                if reasons.len() > MAX_REASONS {
                    return Err(WireError::Invalid {
                        field: "reasons",
                        reason: format!("{} reasons, more than {MAX_REASONS}", reasons.len()),
                    });
                }
                reasons.iter().try_for_each(|r| text("reasons", r))
            }
            Message::AgreementRevoked { reason, .. } => text("reason", reason),
            Message::Refused { reason } => text("reason", reason),
            Message::ContractAgreement { .. }
            | Message::AgreementVerification { .. }
            | Message::Finalized { .. }
            | Message::Ack { .. } => Ok(()),
        }
    }

    /// A stable digest of the message, to tell a duplicate from a conflict.
    pub fn digest(&self) -> Result<String, WireError> {
        Ok(blake3::hash(&self.encode()?).to_hex().to_string())
    }
}

/// Cut a text to the wire's bound at a character boundary.
pub fn bounded(s: &str) -> String {
    if s.len() <= MAX_TEXT {
        return s.to_owned();
    }
    let mut end = MAX_TEXT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> NegotiationId {
        NegotiationId::from_random([1; 16])
    }

    #[test]
    fn messages_round_trip() {
        let m = Message::Termination {
            negotiation: id(),
            reasons: vec!["the purpose `marketing` is not allowed".into()],
        };
        assert_eq!(Message::decode(&m.encode().unwrap()).unwrap(), m);
        let ack = Message::Ack {
            negotiation: id(),
            state: State::Requested,
        };
        assert_eq!(Message::decode(&ack.encode().unwrap()).unwrap(), ack);
    }

    #[test]
    fn bounds_are_enforced_on_decode() {
        let m = Message::Termination {
            negotiation: id(),
            reasons: vec!["x".into(); MAX_REASONS + 1],
        };
        let err = Message::decode(&m.encode().unwrap()).unwrap_err();
        assert!(matches!(err, WireError::Invalid { field: "reasons", .. }), "{err}");
        let m = Message::Refused {
            reason: "é".repeat(MAX_TEXT),
        };
        assert!(Message::decode(&m.encode().unwrap()).is_err());
        assert_eq!(bounded(&"é".repeat(MAX_TEXT)).len(), MAX_TEXT);
        assert!(Message::decode(b"\xff\x00garbage").is_err());
    }

    #[test]
    fn digests_tell_duplicates_from_conflicts() {
        let a = Message::Finalized { negotiation: id() };
        let b = Message::Finalized {
            negotiation: NegotiationId::from_random([2; 16]),
        };
        assert_eq!(a.digest().unwrap(), a.clone().digest().unwrap());
        assert_ne!(a.digest().unwrap(), b.digest().unwrap());
    }
}
