//! The transfer process state machine of the Dataspace Protocol 2025-1.
//!
//! As for negotiations (see [`crate::negotiation`]), [`transition`] takes the
//! role of the message's *sender*, so the party that sent a message and the
//! party that received it make the same call and reach the same state.
//!
//! # Transitions
//!
//! `C` is the consumer, `P` the provider; "start" means no process exists yet
//! (see [`start`]).
//!
//! | from | event (DSP message) | sender | to |
//! |---|---|---|---|
//! | start | `TransferRequestMessage` | C | REQUESTED |
//! | REQUESTED | `TransferStartMessage` | P | STARTED |
//! | STARTED | `TransferSuspensionMessage` | C or P | SUSPENDED |
//! | STARTED | `TransferCompletionMessage` | C or P | COMPLETED |
//! | SUSPENDED | `TransferStartMessage` (resumption) | C or P | STARTED |
//! | REQUESTED, STARTED, SUSPENDED | `TransferTerminationMessage` | C or P | TERMINATED |
//! | COMPLETED, TERMINATED | anything | anyone | unchanged |
//!
//! Repeats are accepted without effect, because the network layer retries
//! messages whose acknowledgement it did not see: a request in REQUESTED, a
//! start in STARTED and a suspension in SUSPENDED return the state unchanged.
//! Terminal states absorb every event from either sender; the node answers a
//! message for a terminal process with an error by checking
//! [`State::is_terminal`] first.
//!
//! # Reading of the specification
//!
//! - Resumption: the 2025-1 state diagram lets either party move SUSPENDED
//!   back to STARTED with a `TransferStartMessage`, and the HTTPS binding
//!   gives the provider an endpoint to receive one, while the message's own
//!   table names only the provider as sender (an open question upstream).
//!   This module follows the diagram. The first start, out of REQUESTED,
//!   stays the provider's alone.
//! - Completion and suspension are only possible while STARTED; a suspended
//!   transfer must be resumed or terminated.

use std::fmt;

use serde::{Deserialize, Serialize};

pub use crate::negotiation::{Role, Termination};

/// A transfer process state. Serde and `Display` use the compact term 2025-1
/// messages carry in `state` (`"STARTED"`, not `"dspace:STARTED"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum State {
    Requested,
    Started,
    Suspended,
    Completed,
    Terminated,
}

impl State {
    pub const ALL: [State; 5] = [
        State::Requested,
        State::Started,
        State::Suspended,
        State::Completed,
        State::Terminated,
    ];

    /// The term DSP 2025-1 writes in a `TransferProcess`'s `state`.
    pub fn dsp_name(self) -> &'static str {
        match self {
            State::Requested => "REQUESTED",
            State::Started => "STARTED",
            State::Suspended => "SUSPENDED",
            State::Completed => "COMPLETED",
            State::Terminated => "TERMINATED",
        }
    }

    /// COMPLETED and TERMINATED: nothing moves the transfer any more.
    pub fn is_terminal(self) -> bool {
        matches!(self, State::Completed | State::Terminated)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.dsp_name())
    }
}

/// A transfer process message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Event {
    /// `TransferRequestMessage`.
    Request,
    /// `TransferStartMessage`: the first start or a resumption.
    Start,
    /// `TransferSuspensionMessage`.
    Suspension {
        code: Option<String>,
        reasons: Vec<String>,
    },
    /// `TransferCompletionMessage`.
    Completion,
    /// `TransferTerminationMessage`.
    Termination {
        code: Option<String>,
        reasons: Vec<String>,
    },
}

impl Event {
    /// The roles that may send this message in some state. A first start is
    /// the provider's only; [`transition`] enforces that.
    pub fn sender_roles(&self) -> &'static [Role] {
        match self {
            Event::Request => &[Role::Consumer],
            Event::Start
            | Event::Suspension { .. }
            | Event::Completion
            | Event::Termination { .. } => &Role::ALL,
        }
    }

    /// The DSP `@type` of the message.
    pub fn message_type(&self) -> &'static str {
        match self {
            Event::Request => "TransferRequestMessage",
            Event::Start => "TransferStartMessage",
            Event::Suspension { .. } => "TransferSuspensionMessage",
            Event::Completion => "TransferCompletionMessage",
            Event::Termination { .. } => "TransferTerminationMessage",
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message_type())
    }
}

/// A transfer event that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// The role never sends this message, whatever the state.
    #[error("{event} is never sent by the {sender}")]
    WrongSender { sender: Role, event: Event },
    /// The message is not allowed in this state from this sender.
    #[error("{event} from the {sender} is not allowed in transfer state {from}")]
    NotAllowed {
        from: State,
        sender: Role,
        event: Event,
    },
    /// The message cannot open a transfer process.
    #[error(
        "{event} from the {sender} cannot open a transfer process; only a \
         TransferRequestMessage from the consumer can"
    )]
    NotInitial { sender: Role, event: Event },
}

/// The state a transfer process opens in when `sender` sends `event` and no
/// process exists yet.
pub fn start(sender: Role, event: &Event) -> Result<State, TransitionError> {
    check_sender(sender, event)?;
    match event {
        Event::Request => Ok(State::Requested),
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
    let to = match (from, sender, event) {
        (_, _, Event::Termination { .. }) => Terminated,
        (Requested, _, Event::Request) => Requested,
        (Requested, Role::Provider, Event::Start) => Started,
        (Started | Suspended, _, Event::Start) => Started,
        (Started | Suspended, _, Event::Suspension { .. }) => Suspended,
        (Started, _, Event::Completion) => Completed,
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

/// A transfer process's state together with why it was terminated, if it
/// was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "StoredTransfer")]
pub struct TransferProcess {
    state: State,
    #[serde(skip_serializing_if = "Option::is_none")]
    termination: Option<Termination>,
}

impl TransferProcess {
    /// Opens a transfer process with its first message (see [`start`]).
    pub fn start(sender: Role, event: &Event) -> Result<Self, TransitionError> {
        Ok(TransferProcess {
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
    /// sender and reasons. A later termination is absorbed and keeps the
    /// first record. On error nothing changes.
    pub fn apply(&mut self, sender: Role, event: &Event) -> Result<State, TransitionError> {
        let to = transition(self.state, sender, event)?;
        if let (State::Terminated, false, Event::Termination { code, reasons }) =
            (to, self.state == State::Terminated, event)
        {
            self.termination = Some(Termination {
                by: sender,
                code: code.clone(),
                reasons: reasons.clone(),
            });
        }
        self.state = to;
        Ok(to)
    }
}

/// A stored transfer process whose termination record does not match its
/// state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "stored transfer process in state {state}: `termination` must be present exactly when \
     the state is TERMINATED"
)]
pub struct InconsistentTransfer {
    pub state: State,
}

#[derive(Deserialize)]
struct StoredTransfer {
    state: State,
    #[serde(default)]
    termination: Option<Termination>,
}

impl TryFrom<StoredTransfer> for TransferProcess {
    type Error = InconsistentTransfer;

    fn try_from(s: StoredTransfer) -> Result<Self, Self::Error> {
        if (s.state == State::Terminated) != s.termination.is_some() {
            return Err(InconsistentTransfer { state: s.state });
        }
        Ok(TransferProcess {
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

    fn suspend() -> Event {
        Event::Suspension {
            code: Some("99".into()),
            reasons: vec!["Policy violation".into()],
        }
    }

    fn term() -> Event {
        Event::Termination {
            code: None,
            reasons: vec!["agreement revoked".into()],
        }
    }

    fn every_event() -> Vec<Event> {
        vec![
            Event::Request,
            Event::Start,
            suspend(),
            Event::Completion,
            term(),
        ]
    }

    /// The edges, written out independently of `transition` from the DSP
    /// 2025-1 diagram. `None` is start.
    fn spec() -> Vec<(Option<State>, Role, Event, State)> {
        use State::*;
        let mut edges = vec![
            (None, C, Event::Request, Requested),
            (Some(Requested), P, Event::Start, Started),
            // Repeat.
            (Some(Requested), C, Event::Request, Requested),
        ];
        for sender in Role::ALL {
            edges.extend([
                (Some(Started), sender, suspend(), Suspended),
                (Some(Started), sender, Event::Completion, Completed),
                (Some(Suspended), sender, Event::Start, Started),
                // Repeats.
                (Some(Started), sender, Event::Start, Started),
                (Some(Suspended), sender, suspend(), Suspended),
            ]);
            for from in [Requested, Started, Suspended] {
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
                    Some(to) => assert_eq!(got, Ok(to)),
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
    fn request_start_suspend_resume_complete() {
        let mut t = TransferProcess::start(C, &Event::Request).unwrap();
        assert_eq!(t.apply(P, &Event::Start), Ok(State::Started));
        assert_eq!(t.apply(C, &suspend()), Ok(State::Suspended));
        assert_eq!(t.apply(C, &Event::Start), Ok(State::Started));
        assert_eq!(t.apply(P, &Event::Completion), Ok(State::Completed));
        assert_eq!(t.termination(), None);
    }

    #[test]
    fn termination_keeps_its_sender_and_reasons() {
        let mut t = TransferProcess::start(C, &Event::Request).unwrap();
        assert_eq!(t.apply(P, &term()), Ok(State::Terminated));
        assert_eq!(
            t.termination(),
            Some(&Termination {
                by: P,
                code: None,
                reasons: vec!["agreement revoked".into()]
            })
        );
        assert_eq!(t.apply(C, &term()), Ok(State::Terminated));
        assert_eq!(t.termination().map(|t| t.by), Some(P));
    }

    #[test]
    fn refusals_name_state_sender_and_event() {
        assert_eq!(
            transition(State::Requested, C, &Event::Start),
            Err(TransitionError::NotAllowed {
                from: State::Requested,
                sender: C,
                event: Event::Start
            })
        );
        assert_eq!(
            transition(State::Suspended, P, &Event::Completion),
            Err(TransitionError::NotAllowed {
                from: State::Suspended,
                sender: P,
                event: Event::Completion
            })
        );
        assert_eq!(
            transition(State::Started, P, &Event::Request),
            Err(TransitionError::WrongSender {
                sender: P,
                event: Event::Request
            })
        );
        assert_eq!(
            start(P, &Event::Start),
            Err(TransitionError::NotInitial {
                sender: P,
                event: Event::Start
            })
        );
        assert_eq!(
            transition(State::Requested, P, &Event::Completion)
                .unwrap_err()
                .to_string(),
            "TransferCompletionMessage from the provider is not allowed in transfer state \
             REQUESTED"
        );
    }

    #[test]
    fn states_use_the_dsp_2025_1_terms() {
        for (state, name) in State::ALL.into_iter().zip([
            "REQUESTED",
            "STARTED",
            "SUSPENDED",
            "COMPLETED",
            "TERMINATED",
        ]) {
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
    }

    #[test]
    fn stored_transfers_round_trip_and_must_be_consistent() {
        let mut t = TransferProcess::start(C, &Event::Request).unwrap();
        t.apply(C, &term()).unwrap();
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<TransferProcess>(&json).unwrap(), t);
        let e = serde_json::from_str::<TransferProcess>(r#"{"state":"TERMINATED"}"#).unwrap_err();
        assert!(e.to_string().contains("TERMINATED"), "{e}");
    }

    fn event_strategy() -> impl Strategy<Value = Event> {
        let text = "[a-z ]{0,12}";
        let reasons = (
            proptest::option::of(text),
            proptest::collection::vec(text, 0..3),
        );
        prop_oneof![
            Just(Event::Request),
            Just(Event::Start),
            reasons
                .clone()
                .prop_map(|(code, reasons)| Event::Suspension { code, reasons }),
            Just(Event::Completion),
            reasons.prop_map(|(code, reasons)| Event::Termination { code, reasons }),
        ]
    }

    fn step_strategy() -> impl Strategy<Value = (Role, Event)> {
        (prop::sample::select(Role::ALL.to_vec()), event_strategy())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn walks_only_take_the_spec_edges(
            steps in proptest::collection::vec(step_strategy(), 1..40)
        ) {
            let mut current: Option<TransferProcess> = None;
            let mut history: Vec<State> = Vec::new();
            for (sender, event) in &steps {
                let from = current.as_ref().map(TransferProcess::state);
                let result = match current.as_mut() {
                    None => TransferProcess::start(*sender, event).map(|t| {
                        let s = t.state();
                        current = Some(t);
                        s
                    }),
                    Some(t) => t.apply(*sender, event),
                };
                let Ok(to) = result else {
                    prop_assert_eq!(current.as_ref().map(TransferProcess::state), from);
                    continue;
                };
                let absorbed = from.is_some_and(State::is_terminal) && from == Some(to);
                prop_assert!(
                    absorbed || spec_target(from, *sender, event) == Some(to),
                    "{:?} --{} {}--> {} is not a spec edge", from, sender, event, to
                );
                if from != Some(to) {
                    match to {
                        State::Completed => prop_assert_eq!(from, Some(State::Started)),
                        State::Suspended => prop_assert_eq!(from, Some(State::Started)),
                        State::Started => {
                            prop_assert!(matches!(from, Some(State::Requested | State::Suspended)));
                            if from == Some(State::Requested) {
                                prop_assert_eq!(*sender, P);
                            }
                        }
                        State::Terminated => {
                            prop_assert!(from.is_some_and(|s| !s.is_terminal()));
                            let by = current.as_ref().and_then(|t| t.termination()).map(|t| t.by);
                            prop_assert_eq!(by, Some(*sender));
                        }
                        State::Requested => prop_assert_eq!(from, None),
                    }
                    history.push(to);
                }
                if let Some(t) = &current {
                    prop_assert_eq!(t.termination().is_some(), t.state() == State::Terminated);
                }
            }
            if history.contains(&State::Completed) {
                prop_assert!(history.contains(&State::Started));
            }
        }

        #[test]
        fn terminal_states_absorb_every_event(
            from in prop::sample::select(State::ALL.to_vec()),
            (sender, event) in step_strategy(),
        ) {
            if from.is_terminal() {
                prop_assert_eq!(transition(from, sender, &event), Ok(from));
            }
        }

        #[test]
        fn a_repeated_accepted_event_changes_nothing(
            from in prop::sample::select(State::ALL.to_vec()),
            (sender, event) in step_strategy(),
        ) {
            if let Ok(to) = transition(from, sender, &event) {
                prop_assert_eq!(transition(to, sender, &event), Ok(to));
            }
        }

        #[test]
        fn replicas_applying_acknowledged_messages_agree(
            steps in proptest::collection::vec((step_strategy(), any::<bool>()), 1..40)
        ) {
            let mut provider: Option<TransferProcess> = None;
            let mut consumer: Option<TransferProcess> = None;
            for ((sender, event), retried) in &steps {
                let (local, remote) = match sender {
                    Role::Provider => (&mut provider, &mut consumer),
                    Role::Consumer => (&mut consumer, &mut provider),
                };
                let sent = match local.as_mut() {
                    None => TransferProcess::start(*sender, event).map(|t| *local = Some(t)),
                    Some(t) => t.apply(*sender, event).map(|_| ()),
                };
                if sent.is_err() {
                    continue;
                }
                for _ in 0..if *retried { 2 } else { 1 } {
                    let received = match remote.as_mut() {
                        None => TransferProcess::start(*sender, event).map(|t| *remote = Some(t)),
                        Some(t) => t.apply(*sender, event).map(|_| ()),
                    };
                    prop_assert!(received.is_ok(), "{} refused {}: {:?}", sender.counterpart(), event, received);
                }
                prop_assert_eq!(&provider, &consumer);
            }
        }
    }
}
