//! The peer-to-peer engine: one task owns the libp2p swarm; cloneable
//! [`Client`] handles send it commands over a bounded channel and get replies
//! on oneshot channels; what the network brings in reaches the node as
//! [`P2pEvent`]s on a bounded channel.
//!
//! Nothing but the admission protocol is served to a peer before it is
//! admitted; see `docs/PROTOCOL.md` for the wire format and the bounds.

mod admission;
mod behaviour;
mod event_loop;
mod gate;
pub mod protocol;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use libp2p::gossipsub::{MessageAcceptance, MessageId};
use libp2p::identity::Keypair;
use libp2p::request_response::ResponseChannel;
use libp2p::{Multiaddr, PeerId, noise, tcp, tls, yamux};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub use admission::{Admission, AdmissionRefusal, AdmittedPeer};
pub use behaviour::BehaviourError;
pub use protocol::{CatalogRequest, CatalogResponse, ControlRequest, ControlResponse, Topic};

use behaviour::Behaviour;
use event_loop::{Command, EventLoop};

/// Bounds and timeouts of the engine. Every queue and table has a limit here
/// or in [`protocol`].
#[derive(Debug, Clone)]
pub struct P2pConfig {
    /// Commands queued from all clients before `Client` calls wait.
    pub command_buffer: usize,
    /// Events queued for the node; when full, new events are dropped (and
    /// counted) rather than stalling the swarm.
    pub event_buffer: usize,
    /// How long a connection with no open stream is kept.
    pub idle_timeout: Duration,
    /// How long a peer has to present an acceptable credential.
    pub admission_timeout: Duration,
    /// Timeout of one request-response exchange or Kademlia query.
    pub request_timeout: Duration,
    /// How often pending admissions and credential expiries are checked.
    pub sweep_interval: Duration,
    pub max_connections: u32,
    pub max_connections_per_peer: u32,
    pub max_pending_incoming: u32,
    pub max_pending_outgoing: u32,
    /// Requests in flight with one peer, per direction and protocol.
    pub max_pending_requests_per_peer: usize,
    /// Kademlia records kept for the data space: at most
    /// `max_records` × `MAX_RECORD_BYTES` (64 KiB) in memory, 256 MiB with
    /// the default; a descriptor is typically 2–4 KiB.
    pub max_records: usize,
    /// The security upgrades TCP connections offer, in order.
    pub tcp_security: TcpSecurity,
}

/// Which security upgrades a node's TCP connections offer (QUIC always
/// runs TLS 1.3).
///
/// TLS 1.3 (`libp2p-tls`, rustls with aws-lc) is offered first: its AEAD runs
/// on aws-lc's assembly, where Noise runs the RustCrypto ChaCha20-Poly1305,
/// and every byte a release sends is sealed once more by the transport.
/// Noise stays as the fallback, so members on nodes that offer only Noise
/// still connect. Admission, the gates and the prefix checks are above the
/// transport and the same under either upgrade.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TcpSecurity {
    /// TLS 1.3 when the peer speaks it, else Noise.
    #[default]
    TlsFirst,
    /// TLS 1.3 only: peers that offer only Noise cannot connect.
    Tls,
    /// Noise only, as nodes before TLS did.
    Noise,
}

impl TcpSecurity {
    /// The config file's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TcpSecurity::TlsFirst => "tls-first",
            TcpSecurity::Tls => "tls",
            TcpSecurity::Noise => "noise",
        }
    }
}

impl Default for P2pConfig {
    fn default() -> Self {
        P2pConfig {
            command_buffer: 64,
            event_buffer: 256,
            idle_timeout: Duration::from_secs(60),
            admission_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            sweep_interval: Duration::from_secs(1),
            max_connections: 256,
            max_connections_per_peer: 2,
            max_pending_incoming: 32,
            max_pending_outgoing: 32,
            max_pending_requests_per_peer: 16,
            max_records: 4 * 1024,
            tcp_security: TcpSecurity::default(),
        }
    }
}

/// What the network brings to the node.
#[derive(Debug)]
pub enum P2pEvent {
    PeerAdmitted(AdmittedPeer),
    /// Also sent when a recheck or an expiry revokes an earlier admission.
    PeerRefused {
        peer: PeerId,
        reason: AdmissionRefusal,
    },
    /// Gossip relayed by an admitted peer. It is neither forwarded nor
    /// dropped until the node reports its verdict with [`Client::report_gossip`].
    Gossip {
        topic: Topic,
        from: PeerId,
        /// The signing author, when it is not the relaying peer itself.
        author: Option<PeerId>,
        data: Vec<u8>,
        id: GossipId,
    },
    InboundRequest {
        peer: PeerId,
        request: CatalogRequest,
        channel: CatalogChannel,
    },
    InboundControl {
        peer: PeerId,
        request: ControlRequest,
        channel: ControlChannel,
    },
}

/// Identifies a gossip message awaiting the node's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GossipId {
    message: MessageId,
    from: PeerId,
}

/// The node's verdict on a gossip message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GossipVerdict {
    /// Valid: deliver and forward to other members.
    Accept,
    /// Invalid (bad signature, malformed): drop and penalise the relaying peer.
    Reject,
    /// Not invalid but not wanted (stale, duplicate): drop without penalty.
    Ignore,
}

impl From<GossipVerdict> for MessageAcceptance {
    fn from(v: GossipVerdict) -> Self {
        match v {
            GossipVerdict::Accept => MessageAcceptance::Accept,
            GossipVerdict::Reject => MessageAcceptance::Reject,
            GossipVerdict::Ignore => MessageAcceptance::Ignore,
        }
    }
}

/// Where to send the answer to an inbound catalog request.
#[derive(Debug)]
pub struct CatalogChannel(ResponseChannel<CatalogResponse>);

/// Where to send the answer to an inbound control request.
#[derive(Debug)]
pub struct ControlChannel(ResponseChannel<ControlResponse>);

/// A snapshot of the engine's admission state and counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct P2pStats {
    pub admitted: Vec<AdmittedPeer>,
    /// Admission refusals since start (including revocations on recheck).
    pub refusals: u64,
    /// Requests and gossip refused because the sender was not admitted or
    /// had too many requests in flight.
    pub refused_messages: u64,
    /// Events dropped because the node's event channel was full.
    pub dropped_events: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum P2pError {
    #[error("cannot build the TCP transport: {0}")]
    Transport(String),
    #[error(transparent)]
    Behaviour(#[from] BehaviourError),
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: Multiaddr, reason: String },
    #[error("cannot dial {addr}: {reason}")]
    Dial { addr: Multiaddr, reason: String },
    #[error("the p2p event loop has stopped")]
    Stopped,
    #[error("peer {0} is not admitted")]
    NotAdmitted(PeerId),
    #[error("peer {peer} already has {limit} requests in flight")]
    TooManyPending { peer: PeerId, limit: usize },
    #[error("request to {peer} failed: {reason}")]
    Request { peer: PeerId, reason: String },
    #[error("the requester of this response is gone")]
    ResponseChannelClosed,
    #[error("cannot publish on {topic:?}: {reason}")]
    Publish { topic: Topic, reason: String },
    #[error("record {key:?} not found")]
    RecordNotFound { key: Vec<u8> },
    #[error("record operation on {key:?} failed: {reason}")]
    Record { key: Vec<u8>, reason: String },
}

/// A cloneable handle on the engine.
#[derive(Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    stream: libp2p_stream::Control,
}

fn transport(e: impl std::fmt::Display) -> P2pError {
    P2pError::Transport(e.to_string())
}

/// Builds the swarm for `keypair` and starts its event loop on the current
/// tokio runtime.
pub fn spawn(
    keypair: Keypair,
    admission: Arc<dyn Admission>,
    config: P2pConfig,
) -> Result<(Client, mpsc::Receiver<P2pEvent>, JoinHandle<()>), P2pError> {
    let stream = libp2p_stream::Behaviour::new();
    let control = stream.new_control();
    let behaviour = Behaviour::new(&keypair, &config, stream)?;
    let idle = config.idle_timeout;
    // One chain per choice of security upgrade: the builder's types differ,
    // the swarm it builds does not.
    let builder = libp2p::SwarmBuilder::with_existing_identity(keypair).with_tokio();
    let tcp_config = tcp::Config::default().nodelay(true);
    let behaviour = |_: &Keypair| behaviour;
    let swarm_config = |c: libp2p::swarm::Config| c.with_idle_connection_timeout(idle);
    let never = |never: Infallible| -> P2pError { match never {} };
    let swarm = match config.tcp_security {
        TcpSecurity::TlsFirst => builder
            .with_tcp(
                tcp_config,
                (tls::Config::new, noise::Config::new),
                yamux::Config::default,
            )
            .map_err(transport)?
            .with_quic()
            .with_behaviour(behaviour)
            .map_err(never)?
            .with_swarm_config(swarm_config)
            .build(),
        TcpSecurity::Tls => builder
            .with_tcp(tcp_config, tls::Config::new, yamux::Config::default)
            .map_err(transport)?
            .with_quic()
            .with_behaviour(behaviour)
            .map_err(never)?
            .with_swarm_config(swarm_config)
            .build(),
        TcpSecurity::Noise => builder
            .with_tcp(tcp_config, noise::Config::new, yamux::Config::default)
            .map_err(transport)?
            .with_quic()
            .with_behaviour(behaviour)
            .map_err(never)?
            .with_swarm_config(swarm_config)
            .build(),
    };

    let (command_tx, command_rx) = mpsc::channel(config.command_buffer.max(1));
    let (event_tx, event_rx) = mpsc::channel(config.event_buffer.max(1));
    let event_loop = EventLoop::new(swarm, command_rx, event_tx, admission, config);
    let handle = tokio::spawn(event_loop.run());
    Ok((
        Client {
            commands: command_tx,
            stream: control,
        },
        event_rx,
        handle,
    ))
}

impl Client {
    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, P2pError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| P2pError::Stopped)?;
        rx.await.map_err(|_| P2pError::Stopped)
    }

    /// Starts listening and returns the address actually bound (port 0 resolved).
    pub async fn listen_on(&self, addr: Multiaddr) -> Result<Multiaddr, P2pError> {
        self.call(|reply| Command::Listen { addr, reply }).await?
    }

    /// Dials `addr` and returns the peer id once the connection is up.
    /// Admission then runs on its own; wait for [`P2pEvent::PeerAdmitted`].
    pub async fn dial(&self, addr: Multiaddr) -> Result<PeerId, P2pError> {
        self.call(|reply| Command::Dial { addr, reply }).await?
    }

    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, P2pError> {
        self.call(|reply| Command::ListenAddrs { reply }).await
    }

    /// Where an admitted peer connects from; `None` when it is not admitted
    /// now. The release path checks the address against the member's
    /// prefixes again at the moment of release.
    pub async fn admitted_from(&self, peer: PeerId) -> Result<Option<Multiaddr>, P2pError> {
        self.call(|reply| Command::AdmittedFrom { peer, reply })
            .await
    }

    pub async fn admitted_peers(&self) -> Result<Vec<AdmittedPeer>, P2pError> {
        Ok(self.stats().await?.admitted)
    }

    pub async fn stats(&self) -> Result<P2pStats, P2pError> {
        self.call(|reply| Command::Stats { reply }).await
    }

    pub async fn publish(&self, topic: Topic, data: Vec<u8>) -> Result<(), P2pError> {
        self.call(|reply| Command::Publish { topic, data, reply })
            .await?
    }

    pub async fn report_gossip(
        &self,
        id: GossipId,
        verdict: GossipVerdict,
    ) -> Result<(), P2pError> {
        self.call(|reply| Command::ReportGossip { id, verdict, reply })
            .await
    }

    /// Stores a record locally and on the closest admitted peers (quorum one).
    pub async fn put_record(&self, key: Vec<u8>, value: Vec<u8>) -> Result<(), P2pError> {
        self.call(|reply| Command::PutRecord { key, value, reply })
            .await?
    }

    pub async fn get_record(&self, key: Vec<u8>) -> Result<Vec<u8>, P2pError> {
        self.call(|reply| Command::GetRecord { key, reply }).await?
    }

    pub async fn request(
        &self,
        peer: PeerId,
        request: CatalogRequest,
    ) -> Result<CatalogResponse, P2pError> {
        self.call(|reply| Command::Catalog {
            peer,
            request,
            reply,
        })
        .await?
    }

    pub async fn respond(
        &self,
        channel: CatalogChannel,
        response: CatalogResponse,
    ) -> Result<(), P2pError> {
        self.call(|reply| Command::RespondCatalog {
            channel,
            response,
            reply,
        })
        .await?
    }

    pub async fn control_request(
        &self,
        peer: PeerId,
        request: ControlRequest,
    ) -> Result<ControlResponse, P2pError> {
        self.call(|reply| Command::Control {
            peer,
            request,
            reply,
        })
        .await?
    }

    pub async fn respond_control(
        &self,
        channel: ControlChannel,
        response: ControlResponse,
    ) -> Result<(), P2pError> {
        self.call(|reply| Command::RespondControl {
            channel,
            response,
            reply,
        })
        .await?
    }

    /// Re-checks every admitted peer against the node's [`Admission`] (after a
    /// revocation list arrives); returns how many were refused and disconnected.
    pub async fn recheck_all(&self) -> Result<usize, P2pError> {
        self.call(|reply| Command::RecheckAll { reply }).await
    }

    /// Opens and accepts raw streams for bulk data on
    /// [`protocol::DATA_PROTOCOL`]. The acceptor bounds concurrency: inbound
    /// streams arriving while it is not ready are dropped by libp2p-stream.
    /// Callers must check [`Client::admitted_peers`] before serving a stream.
    pub fn stream_control(&self) -> libp2p_stream::Control {
        self.stream.clone()
    }

    /// Stops the event loop; every connection is closed.
    pub async fn shutdown(&self) -> Result<(), P2pError> {
        self.call(|reply| Command::Shutdown { reply }).await
    }
}
