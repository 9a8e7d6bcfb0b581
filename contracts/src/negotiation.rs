//! The contract negotiation state machine of the Dataspace Protocol 2025-1,
//! plus the administrator approval step Bayspace adds on the provider side.
//!
//! A negotiation moves only when a message is acknowledged, and both parties
//! must hold the same state afterwards. That is why [`transition`] takes the
//! role of the message's *sender*, not the role of the party applying it: the
//! provider applying a `ContractAgreementMessage` it sent and the consumer
//! applying the same message it received make the same call and reach the
//! same state.
//!
//! # Transitions
//!
//! `C` is the consumer, `P` the provider; "start" means no process exists yet
//! (see [`start`]).
//!
//! | from | event (DSP message) | sender | to |
//! |---|---|---|---|
//! | start | `ContractRequestMessage` | C | REQUESTED |
//! | start | `ContractOfferMessage` | P | OFFERED |
//! | REQUESTED | `ContractOfferMessage` (counter-offer) | P | OFFERED |
//! | REQUESTED | `ContractAgreementMessage` | P | AGREED |
//! | REQUESTED | administrator approves (local) | P | AGREED |
//! | REQUESTED | administrator rejects (local) | P | TERMINATED |
//! | OFFERED | `ContractRequestMessage` (counter-request) | C | REQUESTED |
//! | OFFERED | `ContractNegotiationEventMessage` `ACCEPTED` | C | ACCEPTED |
//! | ACCEPTED | `ContractAgreementMessage` | P | AGREED |
//! | AGREED | `ContractAgreementVerificationMessage` | C | VERIFIED |
//! | VERIFIED | `ContractNegotiationEventMessage` `FINALIZED` | P | FINALIZED |
//! | any non-terminal | `ContractNegotiationTerminationMessage` | C or P | TERMINATED |
//! | FINALIZED, TERMINATED | anything | anyone | unchanged |
//!
//! Repeats are accepted without effect, because the network layer retries
//! messages whose acknowledgement it did not see: in REQUESTED a
//! `ContractRequestMessage`, in OFFERED a `ContractOfferMessage`, in ACCEPTED
//! an `ACCEPTED` event, in AGREED a `ContractAgreementMessage` or an
//! administrator approval, in VERIFIED a verification each return the state
//! unchanged. Only the immediate repeat can be recognised here; a stale retry
//! that arrives after the negotiation moved on (say an old request after a
//! counter-offer) looks like a new message, and the node must drop it by
//! message identity.
//!
//! Terminal states absorb every event, from either sender, and return
//! themselves. DSP calls an event after a terminal state an error; the node
//! answers such a message with an error by checking [`State::is_terminal`]
//! first, while the stored state never leaves its terminal value.
//!
//! # Reading of the specification
//!
//! - Termination: the 2025-1 diagram labels the termination edges out of
//!   ACCEPTED and VERIFIED with `P` only and out of AGREED with `C` only,
//!   while the termination message's own section says either party may send
//!   it "at any state" and that the sender may ignore an error reply. A
//!   sender that ignores the refusal would then hold TERMINATED while the
//!   refusing peer does not, so refusing gains nothing and splits the
//!   replicas. This module accepts a termination from either party in every
//!   non-terminal state.
//! - Administrator approval: DSP lets a provider answer a request with an
//!   agreement at once. Bayspace holds the request in REQUESTED until an
//!   administrator decides. Approval moves the provider to AGREED and must be
//!   announced with a `ContractAgreementMessage`; rejection moves it to
//!   TERMINATED and must be announced with a termination message
//!   ([`Event::announcement`] gives the message). The consumer applies the
//!   announcement and reaches the same state.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A party of a negotiation or transfer process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Provider,
    Consumer,
}

impl Role {
    pub const ALL: [Role; 2] = [Role::Provider, Role::Consumer];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Provider => "provider",
            Role::Consumer => "consumer",
        }
    }

    /// The other party.
    pub fn counterpart(self) -> Role {
        match self {
            Role::Provider => Role::Consumer,
            Role::Consumer => Role::Provider,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a process ended in TERMINATED, kept because the state alone cannot
/// tell an administrator's rejection from a peer giving up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Termination {
    /// The party whose message (or local decision) ended the process.
    pub by: Role,
    /// The DSP `code`, implementation specific.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The DSP `reason` entries; DSP allows any JSON there, Bayspace keeps
    /// text.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

/// A negotiation state. Serde and `Display` use the compact term 2025-1
/// messages carry in `state` (`"REQUESTED"`, not `"dspace:REQUESTED"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum State {
    Requested,
    Offered,
    Accepted,
    Agreed,
    Verified,
    Finalized,
    Terminated,
}

impl State {
    pub const ALL: [State; 7] = [
        State::Requested,
        State::Offered,
        State::Accepted,
        State::Agreed,
        State::Verified,
        State::Finalized,
        State::Terminated,
    ];

    /// The term DSP 2025-1 writes in a `ContractNegotiation`'s `state`.
    pub fn dsp_name(self) -> &'static str {
        match self {
            State::Requested => "REQUESTED",
            State::Offered => "OFFERED",
            State::Accepted => "ACCEPTED",
            State::Agreed => "AGREED",
            State::Verified => "VERIFIED",
            State::Finalized => "FINALIZED",
            State::Terminated => "TERMINATED",
        }
    }

    /// FINALIZED and TERMINATED: nothing moves the negotiation any more.
    pub fn is_terminal(self) -> bool {
        matches!(self, State::Finalized | State::Terminated)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.dsp_name())
    }
}

/// What moves a negotiation: a DSP message, or a provider administrator's
/// decision that never goes on the wire itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Event {
    /// `ContractRequestMessage`: an initial request or a counter-request.
    ContractRequest,
    /// `ContractOfferMessage`: an initial offer or a counter-offer.
    ContractOffer,
    /// `ContractNegotiationEventMessage` with `eventType` `ACCEPTED`.
    Accepted,
    /// `ContractAgreementMessage`.
    ContractAgreement,
    /// `ContractAgreementVerificationMessage`.
    AgreementVerification,
    /// `ContractNegotiationEventMessage` with `eventType` `FINALIZED`.
    Finalized,
    /// `ContractNegotiationTerminationMessage`.
    Termination {
        code: Option<String>,
        reasons: Vec<String>,
    },
    /// The provider's administrator approves a pending request.
    AdminApprove,
    /// The provider's administrator rejects a pending request.
    AdminReject { reason: String },
}

impl Event {
    /// The roles that may send (or, for administrator decisions, make) this
    /// event.
    pub fn sender_roles(&self) -> &'static [Role] {
        match self {
            Event::ContractRequest | Event::Accepted | Event::AgreementVerification => {
                &[Role::Consumer]
            }
            Event::ContractOffer
            | Event::ContractAgreement
            | Event::Finalized
            | Event::AdminApprove
            | Event::AdminReject { .. } => &[Role::Provider],
            Event::Termination { .. } => &Role::ALL,
        }
    }

    /// The DSP `@type` of the message, or `None` for a local decision.
    pub fn message_type(&self) -> Option<&'static str> {
        match self {
            Event::ContractRequest => Some("ContractRequestMessage"),
            Event::ContractOffer => Some("ContractOfferMessage"),
            Event::Accepted | Event::Finalized => Some("ContractNegotiationEventMessage"),
            Event::ContractAgreement => Some("ContractAgreementMessage"),
            Event::AgreementVerification => Some("ContractAgreementVerificationMessage"),
            Event::Termination { .. } => Some("ContractNegotiationTerminationMessage"),
            Event::AdminApprove | Event::AdminReject { .. } => None,
        }
    }

    /// Whether the event is a provider-local decision rather than a message.
    pub fn is_local(&self) -> bool {
        self.message_type().is_none()
    }

    /// The message that tells the counterpart about this event: an
    /// administrator's approval is announced as a `ContractAgreementMessage`,
    /// a rejection as a termination carrying its reason; a message announces
    /// itself. Applying the announcement on the other side yields the state
    /// the event yielded here.
    pub fn announcement(&self) -> Event {
        match self {
            Event::AdminApprove => Event::ContractAgreement,
            Event::AdminReject { reason } => Event::Termination {
                code: None,
                reasons: vec![reason.clone()],
            },
            other => other.clone(),
        }
    }

    fn termination(&self, by: Role) -> Option<Termination> {
        match self {
            Event::Termination { code, reasons } => Some(Termination {
                by,
                code: code.clone(),
                reasons: reasons.clone(),
            }),
            Event::AdminReject { reason } => Some(Termination {
                by,
                code: None,
                reasons: vec![reason.clone()],
            }),
            _ => None,
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Accepted => f.write_str("ContractNegotiationEventMessage(ACCEPTED)"),
            Event::Finalized => f.write_str("ContractNegotiationEventMessage(FINALIZED)"),
            Event::AdminApprove => f.write_str("administrator approval"),
            Event::AdminReject { .. } => f.write_str("administrator rejection"),
            other => f.write_str(other.message_type().unwrap_or("local decision")),
        }
    }
}

/// A negotiation event that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// The role never sends this event, whatever the state.
    #[error("{event} is never sent by the {sender}")]
    WrongSender { sender: Role, event: Event },
    /// The event is not allowed in this state.
    #[error("{event} from the {sender} is not allowed in negotiation state {from}")]
    NotAllowed {
        from: State,
        sender: Role,
        event: Event,
    },
    /// The event cannot open a negotiation.
    #[error(
        "{event} from the {sender} cannot open a negotiation; only a ContractRequestMessage \
         from the consumer or a ContractOfferMessage from the provider can"
    )]
    NotInitial { sender: Role, event: Event },
}

/// The state a negotiation opens in when `sender` sends `event` and no
/// process exists yet.
pub fn start(sender: Role, event: &Event) -> Result<State, TransitionError> {
    check_sender(sender, event)?;
    match event {
        Event::ContractRequest => Ok(State::Requested),
        Event::ContractOffer => Ok(State::Offered),
        _ => Err(TransitionError::NotInitial {
            sender,
            event: event.clone(),
        }),
    }
}

/// The state after `sender` sends `event` in state `from` (see the module
/// table). Terminal states absorb everything; repeats leave the state as it
/// is.
pub fn transition(from: State, sender: Role, event: &Event) -> Result<State, TransitionError> {
    use State::*;

    if from.is_terminal() {
        return Ok(from);
    }
    check_sender(sender, event)?;
    let to = match (from, event) {
        (_, Event::Termination { .. }) => Terminated,
        (Requested, Event::ContractRequest) => Requested,
        (Requested, Event::ContractOffer) => Offered,
        (Requested, Event::ContractAgreement | Event::AdminApprove) => Agreed,
        (Requested, Event::AdminReject { .. }) => Terminated,
        (Offered, Event::ContractOffer) => Offered,
        (Offered, Event::ContractRequest) => Requested,
        (Offered, Event::Accepted) => Accepted,
        (Accepted, Event::Accepted) => Accepted,
        (Accepted, Event::ContractAgreement) => Agreed,
        (Agreed, Event::ContractAgreement | Event::AdminApprove) => Agreed,
        (Agreed, Event::AgreementVerification) => Verified,
        (Verified, Event::AgreementVerification) => Verified,
        (Verified, Event::Finalized) => Finalized,
        _ => {
            return Err(TransitionError::NotAllowed {
                from,
                sender,
                event: event.clone(),
            });
        }
    };
    Ok(to)
}

fn check_sender(sender: Role, event: &Event) -> Result<(), TransitionError> {
    if event.sender_roles().contains(&sender) {
        Ok(())
    } else {
        Err(TransitionError::WrongSender {
            sender,
            event: event.clone(),
        })
    }
}

/// A negotiation's state together with why it was terminated, if it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "StoredNegotiation")]
pub struct Negotiation {
    state: State,
    #[serde(skip_serializing_if = "Option::is_none")]
    termination: Option<Termination>,
}

impl Negotiation {
    /// Opens a negotiation with its first message (see [`start`]).
    pub fn start(sender: Role, event: &Event) -> Result<Self, TransitionError> {
        Ok(Negotiation {
            state: start(sender, event)?,
            termination: None,
        })
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Present exactly when the state is TERMINATED.
    pub fn termination(&self) -> Option<&Termination> {
        self.termination.as_ref()
    }

    /// Applies [`transition`] and, on entering TERMINATED, records the
    /// sender and reasons. A later termination of a terminated negotiation
    /// is absorbed and keeps the first record. On error nothing changes.
    pub fn apply(&mut self, sender: Role, event: &Event) -> Result<State, TransitionError> {
        let to = transition(self.state, sender, event)?;
        if to == State::Terminated && self.state != State::Terminated {
            self.termination = event.termination(sender);
        }
        self.state = to;
        Ok(to)
    }
}

/// A stored negotiation whose termination record does not match its state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "stored negotiation in state {state}: `termination` must be present exactly when the \
     state is TERMINATED"
)]
pub struct InconsistentNegotiation {
    pub state: State,
}

#[derive(Deserialize)]
struct StoredNegotiation {
    state: State,
    #[serde(default)]
    termination: Option<Termination>,
}

impl TryFrom<StoredNegotiation> for Negotiation {
    type Error = InconsistentNegotiation;

    fn try_from(s: StoredNegotiation) -> Result<Self, Self::Error> {
        if (s.state == State::Terminated) != s.termination.is_some() {
            return Err(InconsistentNegotiation { state: s.state });
        }
        Ok(Negotiation {
            state: s.state,
            termination: s.termination,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::mem::discriminant;

    use proptest::prelude::*;

    use super::*;

    const C: Role = Role::Consumer;
    const P: Role = Role::Provider;

    fn term() -> Event {
        Event::Termination {
            code: Some("99".into()),
            reasons: vec!["License model does not fit.".into()],
        }
    }

    fn reject() -> Event {
        Event::AdminReject {
            reason: "dataset not cleared for export".into(),
        }
    }

    /// One event of every kind.
    fn every_event() -> Vec<Event> {
        vec![
            Event::ContractRequest,
            Event::ContractOffer,
            Event::Accepted,
            Event::ContractAgreement,
            Event::AgreementVerification,
            Event::Finalized,
            term(),
            Event::AdminApprove,
            reject(),
        ]
    }

    /// The edges, written out independently of `transition` from the DSP
    /// 2025-1 diagram and the readings in the module docs. `None` is start.
    fn spec() -> Vec<(Option<State>, Role, Event, State)> {
        use State::*;
        let mut edges = vec![
            (None, C, Event::ContractRequest, Requested),
            (None, P, Event::ContractOffer, Offered),
            (Some(Requested), P, Event::ContractOffer, Offered),
            (Some(Requested), P, Event::ContractAgreement, Agreed),
            (Some(Requested), P, Event::AdminApprove, Agreed),
            (Some(Requested), P, reject(), Terminated),
            (Some(Offered), C, Event::ContractRequest, Requested),
            (Some(Offered), C, Event::Accepted, Accepted),
            (Some(Accepted), P, Event::ContractAgreement, Agreed),
            (Some(Agreed), C, Event::AgreementVerification, Verified),
            (Some(Verified), P, Event::Finalized, Finalized),
            // Repeats.
            (Some(Requested), C, Event::ContractRequest, Requested),
            (Some(Offered), P, Event::ContractOffer, Offered),
            (Some(Accepted), C, Event::Accepted, Accepted),
            (Some(Agreed), P, Event::ContractAgreement, Agreed),
            (Some(Agreed), P, Event::AdminApprove, Agreed),
            (Some(Verified), C, Event::AgreementVerification, Verified),
        ];
        for from in [Requested, Offered, Accepted, Agreed, Verified] {
            for sender in Role::ALL {
                edges.push((Some(from), sender, term(), Terminated));
            }
        }
        edges
    }

    fn spec_target(from: Option<State>, sender: Role, event: &Event) -> Option<State> {
        spec()
            .into_iter()
            .find(|(f, s, e, _)| {
                *f == from && *s == sender && discriminant(e) == discriminant(event)
            })
            .map(|(_, _, _, to)| to)
    }

    #[test]
    fn every_state_role_and_event_follows_the_table() {
        for event in every_event() {
            for sender in Role::ALL {
                let got = start(sender, &event);
                match spec_target(None, sender, &event) {
                    Some(to) => assert_eq!(got, Ok(to), "start {sender} {event}"),
                    None if !event.sender_roles().contains(&sender) => assert_eq!(
                        got,
                        Err(TransitionError::WrongSender {
                            sender,
                            event: event.clone()
                        })
                    ),
                    None => assert_eq!(
                        got,
                        Err(TransitionError::NotInitial {
                            sender,
                            event: event.clone()
                        })
                    ),
                }
                for from in State::ALL {
                    let got = transition(from, sender, &event);
                    let want = if from.is_terminal() {
                        Ok(from)
                    } else if let Some(to) = spec_target(Some(from), sender, &event) {
                        Ok(to)
                    } else if !event.sender_roles().contains(&sender) {
                        Err(TransitionError::WrongSender {
                            sender,
                            event: event.clone(),
                        })
                    } else {
                        Err(TransitionError::NotAllowed {
                            from,
                            sender,
                            event: event.clone(),
                        })
                    };
                    assert_eq!(got, want, "{from} {sender} {event}");
                }
            }
        }
    }

    #[test]
    fn the_consumer_initiated_happy_path_with_admin_approval() {
        let mut n = Negotiation::start(C, &Event::ContractRequest).unwrap();
        assert_eq!(n.state(), State::Requested);
        assert_eq!(n.apply(P, &Event::AdminApprove), Ok(State::Agreed));
        assert_eq!(
            n.apply(C, &Event::AgreementVerification),
            Ok(State::Verified)
        );
        assert_eq!(n.apply(P, &Event::Finalized), Ok(State::Finalized));
        assert_eq!(n.termination(), None);
    }

    #[test]
    fn the_provider_initiated_path_with_counter_request() {
        let mut n = Negotiation::start(P, &Event::ContractOffer).unwrap();
        assert_eq!(n.apply(C, &Event::ContractRequest), Ok(State::Requested));
        assert_eq!(n.apply(P, &Event::ContractOffer), Ok(State::Offered));
        assert_eq!(n.apply(C, &Event::Accepted), Ok(State::Accepted));
        assert_eq!(n.apply(P, &Event::ContractAgreement), Ok(State::Agreed));
        assert_eq!(
            n.apply(C, &Event::AgreementVerification),
            Ok(State::Verified)
        );
        assert_eq!(n.apply(P, &Event::Finalized), Ok(State::Finalized));
    }

    #[test]
    fn admin_rejection_terminates_with_its_reason() {
        let mut n = Negotiation::start(C, &Event::ContractRequest).unwrap();
        assert_eq!(n.apply(P, &reject()), Ok(State::Terminated));
        assert_eq!(
            n.termination(),
            Some(&Termination {
                by: P,
                code: None,
                reasons: vec!["dataset not cleared for export".into()],
            })
        );
        // A later termination is absorbed and does not replace the record.
        assert_eq!(n.apply(C, &term()), Ok(State::Terminated));
        assert_eq!(n.termination().map(|t| t.by), Some(P));
    }

    #[test]
    fn refusals_name_state_sender_and_event() {
        assert_eq!(
            transition(State::Offered, P, &Event::ContractAgreement),
            Err(TransitionError::NotAllowed {
                from: State::Offered,
                sender: P,
                event: Event::ContractAgreement
            })
        );
        assert_eq!(
            transition(State::Requested, C, &Event::Finalized),
            Err(TransitionError::WrongSender {
                sender: C,
                event: Event::Finalized
            })
        );
        assert_eq!(
            transition(State::Accepted, P, &Event::AdminApprove),
            Err(TransitionError::NotAllowed {
                from: State::Accepted,
                sender: P,
                event: Event::AdminApprove
            })
        );
        let e = transition(State::Agreed, P, &Event::Finalized).unwrap_err();
        assert_eq!(
            e.to_string(),
            "ContractNegotiationEventMessage(FINALIZED) from the provider is not allowed in \
             negotiation state AGREED"
        );
        let e = start(C, &Event::Accepted).unwrap_err();
        assert!(matches!(e, TransitionError::NotInitial { .. }), "{e}");
    }

    #[test]
    fn a_failed_apply_changes_nothing() {
        let mut n = Negotiation::start(C, &Event::ContractRequest).unwrap();
        let before = n.clone();
        assert!(n.apply(C, &Event::AgreementVerification).is_err());
        assert_eq!(n, before);
    }

    #[test]
    fn states_use_the_dsp_2025_1_terms() {
        // The enum of `state` in contract-negotiation-schema.json, in order.
        let schema = [
            "REQUESTED",
            "OFFERED",
            "ACCEPTED",
            "AGREED",
            "VERIFIED",
            "FINALIZED",
            "TERMINATED",
        ];
        for (state, name) in State::ALL.into_iter().zip(schema) {
            assert_eq!(state.dsp_name(), name);
            assert_eq!(state.to_string(), name);
            assert_eq!(
                serde_json::to_string(&state).unwrap(),
                format!("\"{name}\"")
            );
            assert_eq!(
                serde_json::from_str::<State>(&format!("\"{name}\"")).unwrap(),
                state
            );
        }
        assert!(serde_json::from_str::<State>("\"dspace:REQUESTED\"").is_err());
    }

    #[test]
    fn sender_roles_and_message_types() {
        assert_eq!(Event::Accepted.sender_roles(), &[C]);
        assert_eq!(Event::Finalized.sender_roles(), &[P]);
        assert_eq!(term().sender_roles(), &[P, C]);
        assert_eq!(
            Event::Accepted.message_type(),
            Some("ContractNegotiationEventMessage")
        );
        assert!(Event::AdminApprove.is_local());
        assert!(!Event::ContractOffer.is_local());
        assert_eq!(Event::AdminApprove.announcement(), Event::ContractAgreement);
        assert_eq!(
            reject().announcement(),
            Event::Termination {
                code: None,
                reasons: vec!["dataset not cleared for export".into()]
            }
        );
    }

    #[test]
    fn stored_negotiations_round_trip_and_must_be_consistent() {
        let mut n = Negotiation::start(C, &Event::ContractRequest).unwrap();
        let json = serde_json::to_string(&n).unwrap();
        assert_eq!(json, r#"{"state":"REQUESTED"}"#);
        assert_eq!(serde_json::from_str::<Negotiation>(&json).unwrap(), n);
        n.apply(C, &term()).unwrap();
        let json = serde_json::to_string(&n).unwrap();
        assert_eq!(serde_json::from_str::<Negotiation>(&json).unwrap(), n);

        let e = serde_json::from_str::<Negotiation>(r#"{"state":"TERMINATED"}"#).unwrap_err();
        assert!(e.to_string().contains("TERMINATED"), "{e}");
        let e = serde_json::from_str::<Negotiation>(
            r#"{"state":"AGREED","termination":{"by":"consumer"}}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("AGREED"), "{e}");
    }

    fn event_strategy() -> impl Strategy<Value = Event> {
        let text = "[a-z ]{0,12}";
        prop_oneof![
            Just(Event::ContractRequest),
            Just(Event::ContractOffer),
            Just(Event::Accepted),
            Just(Event::ContractAgreement),
            Just(Event::AgreementVerification),
            Just(Event::Finalized),
            (
                proptest::option::of(text),
                proptest::collection::vec(text, 0..3)
            )
                .prop_map(|(code, reasons)| Event::Termination { code, reasons }),
            Just(Event::AdminApprove),
            text.prop_map(|reason| Event::AdminReject { reason }),
        ]
    }

    /// Mostly the role that may send the event, so that walks get far.
    fn step_strategy() -> impl Strategy<Value = (Role, Event)> {
        (event_strategy(), prop::bool::weighted(0.2), any::<bool>()).prop_map(
            |(event, odd, pick)| {
                let roles = event.sender_roles();
                let natural = if pick {
                    roles[roles.len() - 1]
                } else {
                    roles[0]
                };
                let sender = if odd { natural.counterpart() } else { natural };
                (sender, event)
            },
        )
    }

    fn state_strategy() -> impl Strategy<Value = State> {
        prop::sample::select(State::ALL.to_vec())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn walks_only_take_the_spec_edges(
            steps in proptest::collection::vec(step_strategy(), 1..60)
        ) {
            let mut current: Option<Negotiation> = None;
            let mut history: Vec<State> = Vec::new();
            for (sender, event) in &steps {
                let from = current.as_ref().map(Negotiation::state);
                let result = match current.as_mut() {
                    None => Negotiation::start(*sender, event).map(|n| {
                        let s = n.state();
                        current = Some(n);
                        s
                    }),
                    Some(n) => n.apply(*sender, event),
                };
                let Ok(to) = result else {
                    prop_assert_eq!(current.as_ref().map(Negotiation::state), from);
                    continue;
                };
                let absorbed = from.is_some_and(State::is_terminal) && from == Some(to);
                prop_assert!(
                    absorbed || spec_target(from, *sender, event) == Some(to),
                    "{:?} --{} {}--> {} is not a spec edge", from, sender, event, to
                );
                if from != Some(to) {
                    match to {
                        State::Finalized => {
                            prop_assert_eq!(from, Some(State::Verified));
                            prop_assert!(history.contains(&State::Agreed));
                        }
                        State::Verified => prop_assert_eq!(from, Some(State::Agreed)),
                        State::Agreed => prop_assert!(matches!(
                            from,
                            Some(State::Requested | State::Accepted)
                        )),
                        State::Accepted => prop_assert_eq!(from, Some(State::Offered)),
                        State::Terminated => {
                            prop_assert!(from.is_some_and(|s| !s.is_terminal()));
                            let by = current.as_ref().and_then(|n| n.termination()).map(|t| t.by);
                            prop_assert_eq!(by, Some(*sender));
                        }
                        State::Requested | State::Offered => {}
                    }
                    history.push(to);
                }
                if let Some(n) = &current {
                    prop_assert_eq!(
                        n.termination().is_some(),
                        n.state() == State::Terminated
                    );
                }
            }
        }

        #[test]
        fn terminal_states_absorb_every_event(
            from in state_strategy(),
            sender in prop::sample::select(Role::ALL.to_vec()),
            event in event_strategy(),
        ) {
            if from.is_terminal() {
                prop_assert_eq!(transition(from, sender, &event), Ok(from));
            }
        }

        #[test]
        fn a_repeated_accepted_event_changes_nothing(
            from in state_strategy(),
            (sender, event) in step_strategy(),
        ) {
            if let Ok(to) = transition(from, sender, &event) {
                prop_assert_eq!(transition(to, sender, &event), Ok(to));
            }
        }

        #[test]
        fn replicas_applying_acknowledged_messages_agree(
            steps in proptest::collection::vec((step_strategy(), any::<bool>()), 1..60)
        ) {
            let mut provider: Option<Negotiation> = None;
            let mut consumer: Option<Negotiation> = None;
            for ((sender, event), retried) in &steps {
                let (local, remote) = match sender {
                    Role::Provider => (&mut provider, &mut consumer),
                    Role::Consumer => (&mut consumer, &mut provider),
                };
                // The sender checks the event against its own replica; only
                // then does the message go out and get acknowledged.
                let sent = match local.as_mut() {
                    None => Negotiation::start(*sender, event).map(|n| *local = Some(n)),
                    Some(n) => n.apply(*sender, event).map(|_| ()),
                };
                if sent.is_err() {
                    continue;
                }
                let message = event.announcement();
                let deliveries = if *retried { 2 } else { 1 };
                for _ in 0..deliveries {
                    let received = match remote.as_mut() {
                        None => Negotiation::start(*sender, &message).map(|n| *remote = Some(n)),
                        Some(n) => n.apply(*sender, &message).map(|_| ()),
                    };
                    prop_assert!(received.is_ok(), "{} refused {}: {:?}", sender.counterpart(), message, received);
                }
                prop_assert_eq!(&provider, &consumer);
            }
        }
    }
}
