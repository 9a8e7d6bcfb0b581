//! The composition of protocols every Bayspace node runs, with their bounds.

use libp2p::identity::Keypair;
use libp2p::kad::store::{MemoryStore, MemoryStoreConfig};
use libp2p::request_response::{self, ProtocolSupport, cbor};
use libp2p::swarm::NetworkBehaviour;
use libp2p::{connection_limits, gossipsub, identify, kad};

use super::P2pConfig;
use super::gate::Gated;
use super::protocol::{
    ADMIT_PROTOCOL, AdmitMessage, CATALOG_PROTOCOL, CatalogRequest, CatalogResponse,
    ControlRequest, ControlResponse, IDENTIFY_VERSION, KAD_PROTOCOL, MAX_ADMIT_MESSAGE_BYTES,
    MAX_CATALOG_REQUEST_BYTES, MAX_CATALOG_RESPONSE_BYTES, MAX_CONTROL_MESSAGE_BYTES,
    MAX_GOSSIP_BYTES, MAX_KAD_PACKET_BYTES, MAX_RECORD_BYTES, NEGOTIATION_PROTOCOL,
};

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) limits: connection_limits::Behaviour,
    pub(crate) admit: cbor::Behaviour<AdmitMessage, AdmitMessage>,
    /// Gated: silent towards a peer until the event loop opens it on admission.
    pub(crate) gossip: Gated<gossipsub::Behaviour>,
    /// Gated like `gossip`, so the store is not served before admission.
    pub(crate) kad: Gated<kad::Behaviour<MemoryStore>>,
    pub(crate) catalog: cbor::Behaviour<CatalogRequest, CatalogResponse>,
    pub(crate) control: cbor::Behaviour<ControlRequest, ControlResponse>,
    pub(crate) identify: identify::Behaviour,
    /// Gated like `gossip`: a data stream reaches the release service only
    /// on a connection admission has judged, so the release is judged by
    /// the connection its stream arrived on.
    pub(crate) stream: Gated<libp2p_stream::Behaviour>,
}

/// Why the behaviour could not be built (only gossipsub's config can be invalid).
#[derive(Debug, thiserror::Error)]
#[error("invalid gossipsub configuration: {0}")]
pub struct BehaviourError(String);

impl Behaviour {
    pub(crate) fn new(
        key: &Keypair,
        config: &P2pConfig,
        stream: libp2p_stream::Behaviour,
    ) -> Result<Self, BehaviourError> {
        let peer_id = key.public().to_peer_id();
        let limits = connection_limits::ConnectionLimits::default()
            .with_max_pending_incoming(Some(config.max_pending_incoming))
            .with_max_pending_outgoing(Some(config.max_pending_outgoing))
            .with_max_established(Some(config.max_connections))
            .with_max_established_per_peer(Some(config.max_connections_per_peer));

        let rr = request_response::Config::default()
            .with_request_timeout(config.request_timeout)
            .with_max_concurrent_streams(config.max_pending_requests_per_peer);

        let gossip_config = gossipsub::ConfigBuilder::default()
            .validation_mode(gossipsub::ValidationMode::Strict)
            .validate_messages()
            .max_transmit_size(MAX_GOSSIP_BYTES)
            .build()
            .map_err(|e| BehaviourError(e.to_string()))?;
        let gossip = gossipsub::Behaviour::new(
            gossipsub::MessageAuthenticity::Signed(key.clone()),
            gossip_config,
        )
        .map_err(|e| BehaviourError(e.to_string()))?;

        let mut kad_config = kad::Config::new(KAD_PROTOCOL);
        kad_config
            .set_kbucket_inserts(kad::BucketInserts::Manual)
            .set_record_filtering(kad::StoreInserts::FilterBoth)
            .set_max_packet_size(MAX_KAD_PACKET_BYTES)
            .set_query_timeout(config.request_timeout);
        let store = MemoryStore::with_config(
            peer_id,
            MemoryStoreConfig {
                max_records: config.max_records,
                max_value_bytes: MAX_RECORD_BYTES,
                max_provided_keys: 0,
                max_providers_per_key: 0,
            },
        );
        let mut kad = kad::Behaviour::with_config(peer_id, store, kad_config);
        // Without confirmed external addresses kad would stay a client and
        // refuse to store records for its peers.
        kad.set_mode(Some(kad::Mode::Server));

        Ok(Behaviour {
            limits: connection_limits::Behaviour::new(limits),
            admit: cbor::Behaviour::with_codec(
                cbor::codec::Codec::default()
                    .set_request_size_maximum(MAX_ADMIT_MESSAGE_BYTES)
                    .set_response_size_maximum(MAX_ADMIT_MESSAGE_BYTES),
                [(ADMIT_PROTOCOL, ProtocolSupport::Full)],
                rr.clone(),
            ),
            gossip: Gated::new(gossip),
            kad: Gated::new(kad),
            catalog: cbor::Behaviour::with_codec(
                cbor::codec::Codec::default()
                    .set_request_size_maximum(MAX_CATALOG_REQUEST_BYTES)
                    .set_response_size_maximum(MAX_CATALOG_RESPONSE_BYTES),
                [(CATALOG_PROTOCOL, ProtocolSupport::Full)],
                rr.clone(),
            ),
            control: cbor::Behaviour::with_codec(
                cbor::codec::Codec::default()
                    .set_request_size_maximum(MAX_CONTROL_MESSAGE_BYTES)
                    .set_response_size_maximum(MAX_CONTROL_MESSAGE_BYTES),
                [(NEGOTIATION_PROTOCOL, ProtocolSupport::Full)],
                rr,
            ),
            identify: identify::Behaviour::new(identify::Config::new(
                IDENTIFY_VERSION.to_string(),
                key.public(),
            )),
            stream: Gated::new(stream),
        })
    }
}
