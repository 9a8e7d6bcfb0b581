//! Keeps a protocol silent on a connection until the event loop has admitted
//! the peer on it.
//!
//! Gossipsub and Kademlia start serving a peer as soon as its connection is
//! up: gossipsub learns the peer's subscriptions from its handler and forwards
//! to it, Kademlia answers its lookups from the local store, and the data
//! protocol's streams reach the release service. Admission takes a round trip
//! longer, and is judged per connection, since a credential binds a member to
//! its prefixes and a second connection may come from elsewhere. [`Gated`]
//! wraps such a behaviour so that, per connection, the inner handler is not
//! polled until the event loop calls [`Gated::open`] for that connection: it
//! opens no stream, reads nothing and sends nothing.
//!
//! The inner protocols are still advertised, so a remote that admitted us
//! first negotiates its streams successfully (a refused negotiation would make
//! its gossipsub handler give up on the connection for good). Streams it
//! opens, and what our behaviour sends to the handler meanwhile, are held in
//! bounded buffers and handed over on opening; a peer that overflows them is
//! disconnected.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ops::{Deref, DerefMut};
use std::task::{Context, Poll, Waker};

use libp2p::PeerId;
use libp2p::core::transport::PortUse;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::swarm::handler::{ConnectionEvent, FullyNegotiatedInbound};
use libp2p::swarm::{
    CloseConnection, ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId,
    FromSwarm, NetworkBehaviour, NotifyHandler, SubstreamProtocol, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};

/// Inbound streams held per connection before opening. A member opens one
/// gossipsub stream and at most one Kademlia stream per query in flight.
pub(crate) const MAX_HELD_STREAMS: usize = 16;
/// Behaviour events held per connection before opening. Towards a peer that
/// is not in the routing table nor known as a subscriber, only mode changes
/// and mesh notices are ever sent.
pub(crate) const MAX_HELD_EVENTS: usize = 32;

/// A behaviour whose handlers stay shut until [`Gated::open`] names their
/// connection.
pub(crate) struct Gated<B> {
    inner: B,
    connections: HashMap<PeerId, HashSet<ConnectionId>>,
    /// Connections opened, each after admission judged it on its own
    /// address. A later connection of an admitted peer starts shut too.
    opened: HashSet<ConnectionId>,
    /// Bounded by the connections: at most one notice per connection, and
    /// one close per overflowing connection.
    actions: VecDeque<Action>,
    waker: Option<Waker>,
}

enum Action {
    Open(PeerId, ConnectionId),
    Close(PeerId, ConnectionId),
}

impl<B> Gated<B> {
    pub(crate) fn new(inner: B) -> Self {
        Gated {
            inner,
            connections: HashMap::new(),
            opened: HashSet::new(),
            actions: VecDeque::new(),
            waker: None,
        }
    }

    /// Lets the inner protocol serve `peer` on `connections`, those of them
    /// that are still up. Opening one twice does nothing.
    pub(crate) fn open(&mut self, peer: &PeerId, connections: &[ConnectionId]) {
        let Some(live) = self.connections.get(peer) else {
            return;
        };
        for c in connections {
            if live.contains(c) && self.opened.insert(*c) {
                self.actions.push_back(Action::Open(*peer, *c));
            }
        }
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

impl<B> Deref for Gated<B> {
    type Target = B;

    fn deref(&self) -> &B {
        &self.inner
    }
}

impl<B> DerefMut for Gated<B> {
    fn deref_mut(&mut self) -> &mut B {
        &mut self.inner
    }
}

impl<B: NetworkBehaviour> NetworkBehaviour for Gated<B> {
    type ConnectionHandler = GateHandler<THandler<B>>;
    type ToSwarm = B::ToSwarm;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.inner
            .handle_pending_inbound_connection(connection_id, local_addr, remote_addr)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        let inner = self.inner.handle_established_inbound_connection(
            connection_id,
            peer,
            local_addr,
            remote_addr,
        )?;
        Ok(GateHandler::new(inner))
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.inner.handle_pending_outbound_connection(
            connection_id,
            maybe_peer,
            addresses,
            effective_role,
        )
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        let inner = self.inner.handle_established_outbound_connection(
            connection_id,
            peer,
            addr,
            role_override,
            port_use,
        )?;
        Ok(GateHandler::new(inner))
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(e) => {
                self.connections
                    .entry(e.peer_id)
                    .or_default()
                    .insert(e.connection_id);
            }
            FromSwarm::ConnectionClosed(e) => {
                self.opened.remove(&e.connection_id);
                if let Some(connections) = self.connections.get_mut(&e.peer_id) {
                    connections.remove(&e.connection_id);
                    if connections.is_empty() {
                        self.connections.remove(&e.peer_id);
                    }
                }
            }
            _ => {}
        }
        self.inner.on_swarm_event(event);
    }

    fn on_connection_handler_event(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {
            GateOut::Inner(event) => {
                self.inner
                    .on_connection_handler_event(peer_id, connection_id, event);
            }
            GateOut::Overflow => {
                tracing::warn!(peer = %peer_id, "peer sent too much before admission; disconnecting");
                self.actions
                    .push_back(Action::Close(peer_id, connection_id));
            }
        }
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        if let Some(action) = self.actions.pop_front() {
            return Poll::Ready(match action {
                Action::Open(peer_id, connection) => ToSwarm::NotifyHandler {
                    peer_id,
                    handler: NotifyHandler::One(connection),
                    event: GateIn::Open,
                },
                Action::Close(peer_id, connection) => ToSwarm::CloseConnection {
                    peer_id,
                    connection: CloseConnection::One(connection),
                },
            });
        }
        self.waker = Some(cx.waker().clone());
        self.inner
            .poll(cx)
            .map(|action| action.map_in(GateIn::Inner))
    }
}

/// What the gate's behaviour tells a handler.
#[derive(Debug)]
pub(crate) enum GateIn<E> {
    /// The peer is admitted: hand over what was held and start the inner handler.
    Open,
    Inner(E),
}

/// What a gate handler tells its behaviour.
#[derive(Debug)]
pub(crate) enum GateOut<E> {
    Inner(E),
    /// A buffer overflowed before opening; the connection must close.
    Overflow,
}

enum State {
    Shut,
    Open,
    /// Overflowed: everything held was dropped and the connection is closing.
    Closing {
        reported: bool,
    },
}

/// Wraps one connection's handler of a [`Gated`] behaviour.
pub(crate) struct GateHandler<H: ConnectionHandler> {
    inner: H,
    state: State,
    held_streams: Vec<FullyNegotiatedInbound<H::InboundProtocol, H::InboundOpenInfo>>,
    held_events: Vec<H::FromBehaviour>,
    waker: Option<Waker>,
}

impl<H: ConnectionHandler> GateHandler<H> {
    fn new(inner: H) -> Self {
        GateHandler {
            inner,
            state: State::Shut,
            held_streams: Vec::new(),
            held_events: Vec::new(),
            waker: None,
        }
    }

    fn open(&mut self) {
        if !matches!(self.state, State::Shut) {
            return;
        }
        self.state = State::Open;
        for event in self.held_events.drain(..) {
            self.inner.on_behaviour_event(event);
        }
        for stream in self.held_streams.drain(..) {
            self.inner
                .on_connection_event(ConnectionEvent::FullyNegotiatedInbound(stream));
        }
        self.wake();
    }

    fn overflow(&mut self) {
        self.state = State::Closing { reported: false };
        self.held_streams.clear();
        self.held_events.clear();
        self.wake();
    }

    fn wake(&mut self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

impl<H: ConnectionHandler> ConnectionHandler for GateHandler<H> {
    type FromBehaviour = GateIn<H::FromBehaviour>;
    type ToBehaviour = GateOut<H::ToBehaviour>;
    type InboundProtocol = H::InboundProtocol;
    type OutboundProtocol = H::OutboundProtocol;
    type InboundOpenInfo = H::InboundOpenInfo;
    type OutboundOpenInfo = H::OutboundOpenInfo;

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol, Self::InboundOpenInfo> {
        self.inner.listen_protocol()
    }

    /// A shut connection waits for admission; the event loop's admission
    /// deadline closes it if admission never comes.
    fn connection_keep_alive(&self) -> bool {
        match self.state {
            State::Shut => true,
            State::Open => self.inner.connection_keep_alive(),
            State::Closing { .. } => false,
        }
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<
        ConnectionHandlerEvent<Self::OutboundProtocol, Self::OutboundOpenInfo, Self::ToBehaviour>,
    > {
        match &mut self.state {
            State::Open => self
                .inner
                .poll(cx)
                .map(|event| event.map_custom(GateOut::Inner)),
            State::Closing { reported } if !*reported => {
                *reported = true;
                Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(GateOut::Overflow))
            }
            State::Shut | State::Closing { .. } => {
                self.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Option<Self::ToBehaviour>> {
        match self.state {
            State::Open => self
                .inner
                .poll_close(cx)
                .map(|event| event.map(GateOut::Inner)),
            State::Shut | State::Closing { .. } => Poll::Ready(None),
        }
    }

    fn on_behaviour_event(&mut self, event: Self::FromBehaviour) {
        let event = match event {
            GateIn::Open => return self.open(),
            GateIn::Inner(event) => event,
        };
        match self.state {
            State::Open => self.inner.on_behaviour_event(event),
            State::Shut if self.held_events.len() < MAX_HELD_EVENTS => {
                self.held_events.push(event);
            }
            State::Shut => self.overflow(),
            State::Closing { .. } => {}
        }
    }

    /// Only fully negotiated inbound streams are held. Outbound events cannot
    /// occur before opening (the inner handler asks for outbound streams only
    /// when polled); the others carry no stream, borrow from the connection
    /// (so cannot be held) and only update the inner handler's view of it.
    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<
            Self::InboundProtocol,
            Self::OutboundProtocol,
            Self::InboundOpenInfo,
            Self::OutboundOpenInfo,
        >,
    ) {
        let stream = match event {
            ConnectionEvent::FullyNegotiatedInbound(stream)
                if !matches!(self.state, State::Open) =>
            {
                stream
            }
            event => return self.inner.on_connection_event(event),
        };
        match self.state {
            State::Shut if self.held_streams.len() < MAX_HELD_STREAMS => {
                self.held_streams.push(stream);
            }
            State::Shut => self.overflow(),
            State::Open | State::Closing { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::iter;

    use futures::future::{Ready, ready};
    use libp2p::core::ConnectedPoint;
    use libp2p::core::upgrade::{DeniedUpgrade, InboundUpgrade, UpgradeInfo};
    use libp2p::swarm::behaviour::{ConnectionClosed, ConnectionEstablished};
    use libp2p::swarm::{Stream, StreamProtocol, dummy};

    use super::*;

    const PROBE_PROTOCOL: StreamProtocol = StreamProtocol::new("/bayspace/probe/1");

    /// An inbound upgrade whose output a test can make up without a connection.
    #[derive(Clone)]
    struct Numbered;

    impl UpgradeInfo for Numbered {
        type Info = StreamProtocol;
        type InfoIter = iter::Once<StreamProtocol>;

        fn protocol_info(&self) -> Self::InfoIter {
            iter::once(PROBE_PROTOCOL)
        }
    }

    impl InboundUpgrade<Stream> for Numbered {
        type Output = u32;
        type Error = Infallible;
        type Future = Ready<Result<u32, Infallible>>;

        fn upgrade_inbound(self, _: Stream, _: StreamProtocol) -> Self::Future {
            ready(Ok(0))
        }
    }

    /// Records what reaches it and counts how often it is polled.
    #[derive(Default)]
    struct Probe {
        polls: usize,
        events: Vec<u32>,
        streams: Vec<u32>,
    }

    impl ConnectionHandler for Probe {
        type FromBehaviour = u32;
        type ToBehaviour = u32;
        type InboundProtocol = Numbered;
        type OutboundProtocol = DeniedUpgrade;
        type InboundOpenInfo = ();
        type OutboundOpenInfo = ();

        fn listen_protocol(&self) -> SubstreamProtocol<Numbered> {
            SubstreamProtocol::new(Numbered, ())
        }

        fn poll(
            &mut self,
            _: &mut Context<'_>,
        ) -> Poll<ConnectionHandlerEvent<DeniedUpgrade, (), u32>> {
            self.polls += 1;
            Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(99))
        }

        fn on_behaviour_event(&mut self, event: u32) {
            self.events.push(event);
        }

        fn on_connection_event(&mut self, event: ConnectionEvent<Numbered, DeniedUpgrade>) {
            if let ConnectionEvent::FullyNegotiatedInbound(stream) = event {
                self.streams.push(stream.protocol);
            }
        }
    }

    fn inbound(n: u32) -> ConnectionEvent<'static, Numbered, DeniedUpgrade> {
        ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
            protocol: n,
            info: (),
        })
    }

    fn poll_handler(h: &mut GateHandler<Probe>) -> Poll<Option<GateOut<u32>>> {
        let mut cx = Context::from_waker(Waker::noop());
        h.poll(&mut cx).map(|event| match event {
            ConnectionHandlerEvent::NotifyBehaviour(e) => Some(e),
            _ => None,
        })
    }

    #[test]
    fn shut_handler_holds_streams_and_events_until_opened() {
        let mut h = GateHandler::new(Probe::default());
        h.on_behaviour_event(GateIn::Inner(1));
        h.on_connection_event(inbound(10));
        h.on_behaviour_event(GateIn::Inner(2));
        h.on_connection_event(inbound(11));

        assert!(poll_handler(&mut h).is_pending());
        assert_eq!(h.inner.polls, 0);
        assert!(h.inner.events.is_empty() && h.inner.streams.is_empty());
        assert!(
            h.connection_keep_alive(),
            "a shut connection waits for admission"
        );
        let advertised: Vec<_> = h.listen_protocol().upgrade().protocol_info().collect();
        assert_eq!(advertised, [PROBE_PROTOCOL]);

        h.on_behaviour_event(GateIn::Open);
        assert_eq!(h.inner.events, [1, 2]);
        assert_eq!(h.inner.streams, [10, 11]);
        assert!(matches!(
            poll_handler(&mut h),
            Poll::Ready(Some(GateOut::Inner(99)))
        ));
        assert_eq!(h.inner.polls, 1);

        h.on_behaviour_event(GateIn::Inner(3));
        h.on_connection_event(inbound(12));
        assert_eq!(h.inner.events, [1, 2, 3]);
        assert_eq!(h.inner.streams, [10, 11, 12]);
    }

    #[test]
    fn an_opened_handler_passes_through() {
        let mut h = GateHandler::new(Probe::default());
        h.on_behaviour_event(GateIn::Open);
        h.on_behaviour_event(GateIn::Inner(1));
        h.on_connection_event(inbound(10));
        assert_eq!(
            (h.inner.events.as_slice(), h.inner.streams.as_slice()),
            (&[1][..], &[10][..])
        );
        assert!(poll_handler(&mut h).is_ready());
    }

    fn assert_closing(mut h: GateHandler<Probe>) {
        assert!(matches!(
            poll_handler(&mut h),
            Poll::Ready(Some(GateOut::Overflow))
        ));
        assert!(
            poll_handler(&mut h).is_pending(),
            "overflow is reported once"
        );
        assert!(!h.connection_keep_alive());
        h.on_behaviour_event(GateIn::Open);
        h.on_connection_event(inbound(1));
        assert!(poll_handler(&mut h).is_pending());
        assert_eq!(h.inner.polls, 0);
        assert!(h.inner.events.is_empty() && h.inner.streams.is_empty());
        assert!(h.held_events.is_empty() && h.held_streams.is_empty());
    }

    #[test]
    fn too_many_held_events_close_the_connection() {
        let mut h = GateHandler::new(Probe::default());
        for n in 0..MAX_HELD_EVENTS {
            h.on_behaviour_event(GateIn::Inner(n as u32));
        }
        assert!(
            poll_handler(&mut h).is_pending(),
            "the bound itself is allowed"
        );
        h.on_behaviour_event(GateIn::Inner(0));
        assert_closing(h);
    }

    #[test]
    fn too_many_held_streams_close_the_connection() {
        let mut h = GateHandler::new(Probe::default());
        for n in 0..MAX_HELD_STREAMS {
            h.on_connection_event(inbound(n as u32));
        }
        assert!(
            poll_handler(&mut h).is_pending(),
            "the bound itself is allowed"
        );
        h.on_connection_event(inbound(0));
        assert_closing(h);
    }

    fn endpoint() -> ConnectedPoint {
        ConnectedPoint::Listener {
            local_addr: "/ip6/::1/tcp/1".parse().unwrap(),
            send_back_addr: "/ip6/::1/tcp/2".parse().unwrap(),
        }
    }

    fn establish(g: &mut Gated<dummy::Behaviour>, peer: PeerId, id: usize) -> bool {
        let endpoint = endpoint();
        let connection_id = ConnectionId::new_unchecked(id);
        g.on_swarm_event(FromSwarm::ConnectionEstablished(ConnectionEstablished {
            peer_id: peer,
            connection_id,
            endpoint: &endpoint,
            failed_addresses: &[],
            other_established: 0,
        }));
        let handler = g
            .handle_established_inbound_connection(
                connection_id,
                peer,
                endpoint.get_remote_address(),
                endpoint.get_remote_address(),
            )
            .unwrap();
        matches!(handler.state, State::Open)
    }

    fn close(g: &mut Gated<dummy::Behaviour>, peer: PeerId, id: usize, remaining: usize) {
        let endpoint = endpoint();
        g.on_swarm_event(FromSwarm::ConnectionClosed(ConnectionClosed {
            peer_id: peer,
            connection_id: ConnectionId::new_unchecked(id),
            endpoint: &endpoint,
            cause: None,
            remaining_established: remaining,
        }));
    }

    /// What the behaviour asks of the swarm, as (peer, connection, is it "open").
    fn drain(g: &mut Gated<dummy::Behaviour>) -> Vec<(PeerId, ConnectionId, bool)> {
        let mut cx = Context::from_waker(Waker::noop());
        let mut out = Vec::new();
        while let Poll::Ready(action) = g.poll(&mut cx) {
            match action {
                ToSwarm::NotifyHandler {
                    peer_id,
                    handler: NotifyHandler::One(c),
                    event: GateIn::Open,
                } => out.push((peer_id, c, true)),
                ToSwarm::CloseConnection {
                    peer_id,
                    connection: CloseConnection::One(c),
                } => out.push((peer_id, c, false)),
                _ => panic!("unexpected action"),
            }
        }
        out
    }

    #[test]
    fn open_reaches_the_named_connections_of_the_peer_once() {
        let mut g = Gated::new(dummy::Behaviour);
        let (peer, other) = (PeerId::random(), PeerId::random());
        assert!(!establish(&mut g, peer, 1));
        assert!(!establish(&mut g, peer, 2));
        assert!(!establish(&mut g, peer, 3));
        assert!(!establish(&mut g, other, 4));
        let c = ConnectionId::new_unchecked;

        g.open(&peer, &[c(1), c(2)]);
        g.open(&peer, &[c(1), c(2)]);
        g.open(&PeerId::random(), &[c(3)]);
        g.open(&peer, &[c(4)]);
        let mut opened = drain(&mut g);
        opened.sort_by_key(|(_, c, _)| format!("{c}"));
        assert_eq!(opened, [(peer, c(1), true), (peer, c(2), true)]);

        assert!(
            !establish(&mut g, peer, 5),
            "a later connection of an admitted peer starts shut until it is judged"
        );
        g.open(&peer, &[c(5)]);
        assert_eq!(drain(&mut g), [(peer, c(5), true)]);
    }

    #[test]
    fn a_closed_connection_is_forgotten() {
        let mut g = Gated::new(dummy::Behaviour);
        let peer = PeerId::random();
        let c = ConnectionId::new_unchecked;
        establish(&mut g, peer, 1);
        g.open(&peer, &[c(1)]);
        drain(&mut g);
        close(&mut g, peer, 1, 0);
        g.open(&peer, &[c(1)]);
        assert!(
            drain(&mut g).is_empty(),
            "a closed connection is not opened"
        );
        assert!(!establish(&mut g, peer, 2), "reconnecting starts over");
    }

    #[test]
    fn overflow_closes_only_that_connection() {
        // Two connections of one peer, both shut: the first is flooded past
        // its bound, the second holds a little.
        let (mut flooded, mut other) = (
            GateHandler::new(Probe::default()),
            GateHandler::new(Probe::default()),
        );
        for n in 0..=MAX_HELD_EVENTS {
            flooded.on_behaviour_event(GateIn::Inner(n as u32));
        }
        other.on_behaviour_event(GateIn::Inner(7));
        other.on_connection_event(inbound(70));
        assert!(matches!(
            poll_handler(&mut flooded),
            Poll::Ready(Some(GateOut::Overflow))
        ));
        assert!(!flooded.connection_keep_alive());
        assert!(poll_handler(&mut other).is_pending(), "the other waits");
        assert!(other.connection_keep_alive(), "the other stays open");

        // The behaviour closes the flooded connection and no other.
        let mut g = Gated::new(dummy::Behaviour);
        let (peer, stranger) = (PeerId::random(), PeerId::random());
        establish(&mut g, peer, 1);
        establish(&mut g, peer, 2);
        establish(&mut g, stranger, 3);
        let c = ConnectionId::new_unchecked;
        g.on_connection_handler_event(peer, c(1), GateOut::Overflow);
        assert_eq!(drain(&mut g), [(peer, c(1), false)]);
        g.open(&peer, &[c(2)]);
        g.open(&stranger, &[c(3)]);
        assert_eq!(
            drain(&mut g),
            [(peer, c(2), true), (stranger, c(3), true)],
            "the others are served"
        );

        // Opened, the other connection gets what it held and serves.
        other.on_behaviour_event(GateIn::Open);
        assert_eq!(
            (
                other.inner.events.as_slice(),
                other.inner.streams.as_slice()
            ),
            (&[7][..], &[70][..])
        );
        assert!(matches!(
            poll_handler(&mut other),
            Poll::Ready(Some(GateOut::Inner(99)))
        ));
        assert!(flooded.inner.events.is_empty() && flooded.inner.polls == 0);
    }
}
