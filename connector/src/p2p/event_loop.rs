//! The task that owns the swarm: executes client commands, runs admission and
//! routes what admitted peers send to the node.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use futures::StreamExt;
use libp2p::core::ConnectedPoint;
use libp2p::kad::store::RecordStore;
use libp2p::kad::{self, GetRecordOk, QueryId, QueryResult, Quorum, Record, RecordKey};
use libp2p::request_response::{self, InboundRequestId, Message, OutboundRequestId};
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, core::transport::ListenerId, gossipsub, identify};
use tokio::sync::{mpsc, oneshot};

use super::admission::{
    Admission, AdmissionRefusal, AdmittedPeer, Connected, PeerTable, Recheck, Verdict,
};
use super::behaviour::{Behaviour, BehaviourEvent};
use super::protocol::{
    AdmitMessage, CatalogRequest, CatalogResponse, ControlRequest, ControlResponse, Topic,
};
use super::{
    CatalogChannel, ControlChannel, GossipId, GossipVerdict, P2pConfig, P2pError, P2pEvent,
    P2pStats,
};

/// Addresses remembered per connected peer (dialed and identify-announced).
const MAX_ADDRS_PER_PEER: usize = 8;

type Reply<T> = oneshot::Sender<Result<T, P2pError>>;

pub(crate) enum Command {
    Listen {
        addr: Multiaddr,
        reply: Reply<Multiaddr>,
    },
    Dial {
        addr: Multiaddr,
        reply: Reply<PeerId>,
    },
    ListenAddrs {
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    Stats {
        reply: oneshot::Sender<P2pStats>,
    },
    AdmittedFrom {
        peer: PeerId,
        reply: oneshot::Sender<Option<Multiaddr>>,
    },
    Publish {
        topic: Topic,
        data: Vec<u8>,
        reply: Reply<()>,
    },
    ReportGossip {
        id: GossipId,
        verdict: GossipVerdict,
        reply: oneshot::Sender<()>,
    },
    PutRecord {
        key: Vec<u8>,
        value: Vec<u8>,
        reply: Reply<()>,
    },
    GetRecord {
        key: Vec<u8>,
        reply: Reply<Vec<u8>>,
    },
    Catalog {
        peer: PeerId,
        request: CatalogRequest,
        reply: Reply<CatalogResponse>,
    },
    RespondCatalog {
        channel: CatalogChannel,
        response: CatalogResponse,
        reply: Reply<()>,
    },
    Control {
        peer: PeerId,
        request: ControlRequest,
        reply: Reply<ControlResponse>,
    },
    RespondControl {
        channel: ControlChannel,
        response: ControlResponse,
        reply: Reply<()>,
    },
    RecheckAll {
        reply: oneshot::Sender<usize>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// Requests in flight on one request-response protocol, bounded per peer.
struct InFlight<T> {
    outbound: HashMap<OutboundRequestId, (PeerId, Reply<T>)>,
    outbound_per_peer: HashMap<PeerId, usize>,
    inbound: HashMap<PeerId, HashSet<InboundRequestId>>,
}

impl<T> Default for InFlight<T> {
    fn default() -> Self {
        InFlight {
            outbound: HashMap::new(),
            outbound_per_peer: HashMap::new(),
            inbound: HashMap::new(),
        }
    }
}

impl<T> InFlight<T> {
    fn outbound_count(&self, peer: &PeerId) -> usize {
        self.outbound_per_peer.get(peer).copied().unwrap_or(0)
    }

    fn inbound_count(&self, peer: &PeerId) -> usize {
        self.inbound.get(peer).map_or(0, HashSet::len)
    }

    fn start_outbound(&mut self, id: OutboundRequestId, peer: PeerId, reply: Reply<T>) {
        *self.outbound_per_peer.entry(peer).or_default() += 1;
        self.outbound.insert(id, (peer, reply));
    }

    fn finish_outbound(&mut self, id: &OutboundRequestId, result: Result<T, P2pError>) {
        if let Some((peer, reply)) = self.outbound.remove(id) {
            if let Some(n) = self.outbound_per_peer.get_mut(&peer) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.outbound_per_peer.remove(&peer);
                }
            }
            let _ = reply.send(result);
        }
    }

    fn start_inbound(&mut self, peer: PeerId, id: InboundRequestId) {
        self.inbound.entry(peer).or_default().insert(id);
    }

    fn finish_inbound(&mut self, peer: &PeerId, id: &InboundRequestId) {
        if let Some(ids) = self.inbound.get_mut(peer) {
            ids.remove(id);
            if ids.is_empty() {
                self.inbound.remove(peer);
            }
        }
    }
}

pub(crate) struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<P2pEvent>,
    admission: Arc<dyn Admission>,
    config: P2pConfig,
    peers: PeerTable,
    addrs: HashMap<PeerId, Vec<Multiaddr>>,
    pending_listen: HashMap<ListenerId, (Multiaddr, Reply<Multiaddr>)>,
    pending_dial: HashMap<ConnectionId, (Multiaddr, Reply<PeerId>)>,
    pending_put: HashMap<QueryId, (Vec<u8>, Reply<()>)>,
    pending_get: HashMap<QueryId, (Vec<u8>, Reply<Vec<u8>>)>,
    catalog: InFlight<CatalogResponse>,
    control: InFlight<ControlResponse>,
    refused_messages: u64,
    dropped_events: u64,
}

impl EventLoop {
    pub(crate) fn new(
        swarm: Swarm<Behaviour>,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<P2pEvent>,
        admission: Arc<dyn Admission>,
        config: P2pConfig,
    ) -> Self {
        EventLoop {
            swarm,
            commands,
            events,
            admission,
            config,
            peers: PeerTable::default(),
            addrs: HashMap::new(),
            pending_listen: HashMap::new(),
            pending_dial: HashMap::new(),
            pending_put: HashMap::new(),
            pending_get: HashMap::new(),
            catalog: InFlight::default(),
            control: InFlight::default(),
            refused_messages: 0,
            dropped_events: 0,
        }
    }

    pub(crate) async fn run(mut self) {
        for topic in Topic::ALL {
            if let Err(e) = self.swarm.behaviour_mut().gossip.subscribe(&topic.ident()) {
                tracing::error!(topic = topic.name(), error = %e, "cannot subscribe; gossip on it is lost");
            }
        }
        let mut sweep = tokio::time::interval(self.config.sweep_interval);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = self.commands.recv() => match command {
                    None => break,
                    Some(Command::Shutdown { reply }) => {
                        let _ = reply.send(());
                        break;
                    }
                    Some(command) => self.on_command(command),
                },
                _ = sweep.tick() => self.sweep(),
            }
        }
        tracing::info!("p2p event loop stopped");
    }

    /// Hands an event to the node without ever blocking the swarm; a full
    /// channel means the node is behind, and the event is dropped and counted.
    fn emit(&mut self, event: P2pEvent) -> bool {
        match self.events.try_send(event) {
            Ok(()) => true,
            Err(e) => {
                self.dropped_events += 1;
                tracing::warn!(error = %e, "node event channel full or closed; event dropped");
                false
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Listen { addr, reply } => match self.swarm.listen_on(addr.clone()) {
                Ok(id) => {
                    self.pending_listen.insert(id, (addr, reply));
                }
                Err(e) => {
                    let _ = reply.send(Err(P2pError::Listen {
                        addr,
                        reason: e.to_string(),
                    }));
                }
            },
            Command::Dial { addr, reply } => {
                let opts = DialOpts::unknown_peer_id().address(addr.clone()).build();
                let id = opts.connection_id();
                match self.swarm.dial(opts) {
                    Ok(()) => {
                        self.pending_dial.insert(id, (addr, reply));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(P2pError::Dial {
                            addr,
                            reason: e.to_string(),
                        }));
                    }
                }
            }
            Command::ListenAddrs { reply } => {
                let _ = reply.send(self.swarm.listeners().cloned().collect());
            }
            Command::AdmittedFrom { peer, reply } => {
                let _ = reply.send(self.peers.admitted_from(&peer));
            }
            Command::Stats { reply } => {
                let _ = reply.send(P2pStats {
                    admitted: self.peers.admitted(),
                    refusals: self.peers.refusals(),
                    refused_messages: self.refused_messages,
                    dropped_events: self.dropped_events,
                });
            }
            Command::Publish { topic, data, reply } => {
                let result = self
                    .swarm
                    .behaviour_mut()
                    .gossip
                    .publish(topic.ident(), data)
                    .map(|_| ())
                    .map_err(|e| P2pError::Publish {
                        topic,
                        reason: e.to_string(),
                    });
                let _ = reply.send(result);
            }
            Command::ReportGossip { id, verdict, reply } => {
                self.swarm
                    .behaviour_mut()
                    .gossip
                    .report_message_validation_result(&id.message, &id.from, verdict.into());
                let _ = reply.send(());
            }
            Command::PutRecord { key, value, reply } => {
                let record = Record::new(RecordKey::new(&key), value);
                match self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .put_record(record, Quorum::One)
                {
                    Ok(id) => {
                        self.pending_put.insert(id, (key, reply));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(P2pError::Record {
                            key,
                            reason: e.to_string(),
                        }));
                    }
                }
            }
            Command::GetRecord { key, reply } => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .get_record(RecordKey::new(&key));
                self.pending_get.insert(id, (key, reply));
            }
            Command::Catalog {
                peer,
                request,
                reply,
            } => {
                if let Some(reply) =
                    self.check_outbound(&peer, self.catalog.outbound_count(&peer), reply)
                {
                    let id = self
                        .swarm
                        .behaviour_mut()
                        .catalog
                        .send_request(&peer, request);
                    self.catalog.start_outbound(id, peer, reply);
                }
            }
            Command::Control {
                peer,
                request,
                reply,
            } => {
                if let Some(reply) =
                    self.check_outbound(&peer, self.control.outbound_count(&peer), reply)
                {
                    let id = self
                        .swarm
                        .behaviour_mut()
                        .control
                        .send_request(&peer, request);
                    self.control.start_outbound(id, peer, reply);
                }
            }
            Command::RespondCatalog {
                channel,
                response,
                reply,
            } => {
                let result = self
                    .swarm
                    .behaviour_mut()
                    .catalog
                    .send_response(channel.0, response)
                    .map_err(|_| P2pError::ResponseChannelClosed);
                let _ = reply.send(result);
            }
            Command::RespondControl {
                channel,
                response,
                reply,
            } => {
                let result = self
                    .swarm
                    .behaviour_mut()
                    .control
                    .send_response(channel.0, response)
                    .map_err(|_| P2pError::ResponseChannelClosed);
                let _ = reply.send(result);
            }
            Command::RecheckAll { reply } => {
                let found = self
                    .peers
                    .recheck(self.admission.as_ref(), SystemTime::now(), false);
                let count = found.refused.len();
                self.on_recheck(found);
                let _ = reply.send(count);
            }
            Command::Shutdown { .. } => {}
        }
    }

    /// Only admitted peers are asked anything, and only so much at once.
    fn check_outbound<T>(
        &self,
        peer: &PeerId,
        in_flight: usize,
        reply: Reply<T>,
    ) -> Option<Reply<T>> {
        let limit = self.config.max_pending_requests_per_peer;
        let refusal = if !self.peers.is_admitted(peer) {
            P2pError::NotAdmitted(*peer)
        } else if in_flight >= limit {
            P2pError::TooManyPending { peer: *peer, limit }
        } else {
            return Some(reply);
        };
        let _ = reply.send(Err(refusal));
        None
    }

    fn sweep(&mut self) {
        for peer in self.peers.refuse_overdue(Instant::now()) {
            let reason = AdmissionRefusal::NoCredential(self.config.admission_timeout);
            self.on_refused(peer, reason);
        }
        let expired = self
            .peers
            .recheck(self.admission.as_ref(), SystemTime::now(), true);
        self.on_recheck(expired);
    }

    /// Lets every gated protocol serve `peer` on `connections`.
    fn open_gates(&mut self, peer: &PeerId, connections: &[ConnectionId]) {
        let behaviour = self.swarm.behaviour_mut();
        behaviour.gossip.open(peer, connections);
        behaviour.kad.open(peer, connections);
        behaviour.stream.open(peer, connections);
    }

    /// Closes one connection of a peer that stays admitted on its others.
    fn refuse_connection(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        reason: AdmissionRefusal,
    ) {
        tracing::warn!(%peer, %reason, "connection refused; closing it");
        crate::metrics::global().admission_refused(&reason);
        self.swarm.close_connection(connection);
        self.emit(P2pEvent::PeerRefused { peer, reason });
    }

    fn on_admitted(
        &mut self,
        info: AdmittedPeer,
        open: &[ConnectionId],
        close: Vec<(ConnectionId, AdmissionRefusal)>,
    ) {
        let peer = info.peer_id;
        tracing::info!(%peer, institution = %info.institution, "peer admitted");
        for (connection, reason) in close {
            self.refuse_connection(peer, connection, reason);
        }
        self.swarm
            .behaviour_mut()
            .gossip
            .remove_blacklisted_peer(&peer);
        self.open_gates(&peer, open);
        for addr in self.addrs.get(&peer).cloned().unwrap_or_default() {
            self.swarm.behaviour_mut().kad.add_address(&peer, addr);
        }
        self.emit(P2pEvent::PeerAdmitted(info));
    }

    fn on_recheck(&mut self, found: Recheck) {
        for (peer, connection, reason) in found.close {
            self.refuse_connection(peer, connection, reason);
        }
        for (peer, reason) in found.refused {
            self.on_refused(peer, reason);
        }
    }

    /// Acts on a refusal the table already counted.
    fn on_refused(&mut self, peer: PeerId, reason: AdmissionRefusal) {
        tracing::warn!(%peer, %reason, "peer refused admission; disconnecting");
        crate::metrics::global().admission_refused(&reason);
        let behaviour = self.swarm.behaviour_mut();
        behaviour.gossip.blacklist_peer(&peer);
        behaviour.kad.remove_peer(&peer);
        let _ = self.swarm.disconnect_peer_id(peer);
        self.emit(P2pEvent::PeerRefused { peer, reason });
    }

    fn judge(&mut self, peer: PeerId, credential: &[u8]) -> bool {
        match self
            .peers
            .judge(self.admission.as_ref(), peer, credential, SystemTime::now())
        {
            Verdict::Admitted { info, open, close } => {
                self.on_admitted(info, &open, close);
                true
            }
            Verdict::AlreadyAdmitted => true,
            Verdict::Refused(reason) => {
                self.on_refused(peer, reason);
                false
            }
            Verdict::AlreadyRefused | Verdict::Unknown => false,
        }
    }

    fn remember_addr(&mut self, peer: PeerId, addr: Multiaddr) {
        let addrs = self.addrs.entry(peer).or_default();
        if addrs.len() < MAX_ADDRS_PER_PEER && !addrs.contains(&addr) {
            addrs.push(addr.clone());
            if self.peers.is_admitted(&peer) {
                self.swarm.behaviour_mut().kad.add_address(&peer, addr);
            }
        }
    }

    fn refuse_message(&mut self, peer: &PeerId, what: &str) {
        self.refused_messages += 1;
        tracing::warn!(%peer, what, "message from a peer that is not admitted refused");
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                tracing::info!(%address, "listening");
                if let Some((_, reply)) = self.pending_listen.remove(&listener_id) {
                    let _ = reply.send(Ok(address));
                }
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                if let Some((addr, reply)) = self.pending_listen.remove(&listener_id) {
                    let reason = match reason {
                        Ok(()) => "listener closed".to_string(),
                        Err(e) => e.to_string(),
                    };
                    let _ = reply.send(Err(P2pError::Listen { addr, reason }));
                }
            }
            SwarmEvent::ListenerError { listener_id, error } => {
                if let Some((addr, reply)) = self.pending_listen.remove(&listener_id) {
                    let _ = reply.send(Err(P2pError::Listen {
                        addr,
                        reason: error.to_string(),
                    }));
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                if let Some((_, reply)) = self.pending_dial.remove(&connection_id) {
                    let _ = reply.send(Ok(peer_id));
                }
                if let ConnectedPoint::Dialer { address, .. } = &endpoint {
                    self.remember_addr(peer_id, address.clone());
                }
                let deadline = Instant::now() + self.config.admission_timeout;
                let remote = endpoint.get_remote_address().clone();
                let verdict = self.peers.connected(
                    self.admission.as_ref(),
                    peer_id,
                    connection_id,
                    remote.clone(),
                    deadline,
                    SystemTime::now(),
                );
                match verdict {
                    Connected::StartAdmission => {
                        let credential = AdmitMessage {
                            credential: self.admission.own_credential(),
                        };
                        self.swarm
                            .behaviour_mut()
                            .admit
                            .send_request(&peer_id, credential);
                    }
                    Connected::Admitted => self.open_gates(&peer_id, &[connection_id]),
                    Connected::Refused(reason) => {
                        self.refuse_connection(peer_id, connection_id, reason)
                    }
                    Connected::Pending | Connected::Ignore => {}
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                error,
                ..
            } => {
                if let Some((addr, reply)) = self.pending_dial.remove(&connection_id) {
                    let _ = reply.send(Err(P2pError::Dial {
                        addr,
                        reason: error.to_string(),
                    }));
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } if num_established > 0 => self.peers.connection_closed(&peer_id, connection_id),
            SwarmEvent::ConnectionClosed { peer_id, .. } => {
                self.peers.disconnected(&peer_id);
                self.addrs.remove(&peer_id);
                // A peer refused on this connection may come back with a valid credential.
                self.swarm
                    .behaviour_mut()
                    .gossip
                    .remove_blacklisted_peer(&peer_id);
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Admit(event) => self.on_admit(event),
            BehaviourEvent::Gossip(event) => self.on_gossip(event),
            BehaviourEvent::Kad(event) => self.on_kad(event),
            BehaviourEvent::Catalog(event) => self.on_catalog(event),
            BehaviourEvent::Control(event) => self.on_control(event),
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                for addr in info.listen_addrs {
                    self.remember_addr(peer_id, addr);
                }
            }
            BehaviourEvent::Identify(_) | BehaviourEvent::Stream(()) => {}
            BehaviourEvent::Limits(never) => match never {},
        }
    }

    fn on_admit(&mut self, event: request_response::Event<AdmitMessage, AdmitMessage>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                Message::Request {
                    request, channel, ..
                } => {
                    // A refused peer gets no answer, so never our credential.
                    if self.judge(peer, &request.credential) {
                        let own = AdmitMessage {
                            credential: self.admission.own_credential(),
                        };
                        if self
                            .swarm
                            .behaviour_mut()
                            .admit
                            .send_response(channel, own)
                            .is_err()
                        {
                            tracing::debug!(%peer, "admit requester left before our answer");
                        }
                    }
                }
                Message::Response { response, .. } => {
                    self.judge(peer, &response.credential);
                }
            },
            request_response::Event::OutboundFailure { peer, error, .. } => {
                // The peer may still admit through its own request; the sweep
                // refuses it if no credential arrives in time.
                tracing::debug!(%peer, %error, "credential exchange failed");
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "inbound credential exchange failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn on_gossip(&mut self, event: gossipsub::Event) {
        let gossipsub::Event::Message {
            propagation_source,
            message_id,
            message,
        } = event
        else {
            return;
        };
        let topic = Topic::from_hash(&message.topic);
        let acceptance = match topic {
            Some(topic) if self.peers.is_admitted(&propagation_source) => {
                let id = GossipId {
                    message: message_id.clone(),
                    from: propagation_source,
                };
                let author = message.source.filter(|a| *a != propagation_source);
                let delivered = self.emit(P2pEvent::Gossip {
                    topic,
                    from: propagation_source,
                    author,
                    data: message.data,
                    id,
                });
                if delivered {
                    return;
                }
                gossipsub::MessageAcceptance::Ignore
            }
            Some(_) => {
                self.refuse_message(&propagation_source, "gossip");
                gossipsub::MessageAcceptance::Reject
            }
            None => {
                tracing::warn!(peer = %propagation_source, topic = %message.topic, "gossip on an unknown topic rejected");
                gossipsub::MessageAcceptance::Reject
            }
        };
        self.swarm
            .behaviour_mut()
            .gossip
            .report_message_validation_result(&message_id, &propagation_source, acceptance);
    }

    fn on_kad(&mut self, event: kad::Event) {
        match event {
            kad::Event::InboundRequest {
                request:
                    kad::InboundRequest::PutRecord {
                        source,
                        record: Some(record),
                        ..
                    },
            } => {
                if !self.peers.is_admitted(&source) {
                    self.refuse_message(&source, "kademlia record");
                    return;
                }
                if let Err(e) = self.swarm.behaviour_mut().kad.store_mut().put(record) {
                    tracing::warn!(peer = %source, error = %e, "record from peer not stored");
                }
            }
            kad::Event::OutboundQueryProgressed { id, result, .. } => match result {
                QueryResult::GetRecord(Ok(GetRecordOk::FoundRecord(found))) => {
                    if let Some((_, reply)) = self.pending_get.remove(&id) {
                        let _ = reply.send(Ok(found.record.value));
                        if let Some(mut query) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                            query.finish();
                        }
                    }
                }
                QueryResult::GetRecord(Ok(GetRecordOk::FinishedWithNoAdditionalRecord {
                    ..
                })) => {
                    if let Some((key, reply)) = self.pending_get.remove(&id) {
                        let _ = reply.send(Err(P2pError::RecordNotFound { key }));
                    }
                }
                QueryResult::GetRecord(Err(e)) => {
                    if let Some((key, reply)) = self.pending_get.remove(&id) {
                        let error = match e {
                            kad::GetRecordError::NotFound { .. } => {
                                P2pError::RecordNotFound { key }
                            }
                            other => P2pError::Record {
                                key,
                                reason: other.to_string(),
                            },
                        };
                        let _ = reply.send(Err(error));
                    }
                }
                QueryResult::PutRecord(result) => {
                    if let Some((key, reply)) = self.pending_put.remove(&id) {
                        let result = result.map(|_| ()).map_err(|e| P2pError::Record {
                            key,
                            reason: e.to_string(),
                        });
                        let _ = reply.send(result);
                    }
                }
                _ => {}
            },
            _ => {}
        }
    }

    fn on_catalog(&mut self, event: request_response::Event<CatalogRequest, CatalogResponse>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                Message::Request {
                    request_id,
                    request,
                    channel,
                } => {
                    if self.admit_inbound(
                        &peer,
                        self.catalog.inbound_count(&peer),
                        "catalog request",
                    ) {
                        let channel = CatalogChannel(channel);
                        if self.emit(P2pEvent::InboundRequest {
                            peer,
                            request,
                            channel,
                        }) {
                            self.catalog.start_inbound(peer, request_id);
                        }
                    }
                }
                Message::Response {
                    request_id,
                    response,
                } => {
                    self.catalog.finish_outbound(&request_id, Ok(response));
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                let reason = error.to_string();
                self.catalog
                    .finish_outbound(&request_id, Err(P2pError::Request { peer, reason }));
            }
            request_response::Event::InboundFailure {
                peer, request_id, ..
            }
            | request_response::Event::ResponseSent {
                peer, request_id, ..
            } => {
                self.catalog.finish_inbound(&peer, &request_id);
            }
        }
    }

    fn on_control(&mut self, event: request_response::Event<ControlRequest, ControlResponse>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                Message::Request {
                    request_id,
                    request,
                    channel,
                } => {
                    if self.admit_inbound(
                        &peer,
                        self.control.inbound_count(&peer),
                        "control request",
                    ) {
                        let channel = ControlChannel(channel);
                        if self.emit(P2pEvent::InboundControl {
                            peer,
                            request,
                            channel,
                        }) {
                            self.control.start_inbound(peer, request_id);
                        }
                    }
                }
                Message::Response {
                    request_id,
                    response,
                } => {
                    self.control.finish_outbound(&request_id, Ok(response));
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                let reason = error.to_string();
                self.control
                    .finish_outbound(&request_id, Err(P2pError::Request { peer, reason }));
            }
            request_response::Event::InboundFailure {
                peer, request_id, ..
            }
            | request_response::Event::ResponseSent {
                peer, request_id, ..
            } => {
                self.control.finish_inbound(&peer, &request_id);
            }
        }
    }

    /// Whether an inbound request may reach the node; a refused request's
    /// channel is dropped, so the peer sees its request fail.
    fn admit_inbound(&mut self, peer: &PeerId, in_flight: usize, what: &str) -> bool {
        if !self.peers.is_admitted(peer) {
            self.refuse_message(peer, what);
            return false;
        }
        if in_flight >= self.config.max_pending_requests_per_peer {
            self.refused_messages += 1;
            tracing::warn!(%peer, what, in_flight, "too many requests in flight; refused");
            return false;
        }
        true
    }
}
