//! Wire protocol of the Bayspace swarm: protocol ids, CBOR message types and
//! the size limits that every decoder enforces before allocating.

use libp2p::StreamProtocol;
use libp2p::gossipsub::{IdentTopic, TopicHash};
use serde::{Deserialize, Serialize};

/// Credential exchange run on every new connection before anything else is served.
pub const ADMIT_PROTOCOL: StreamProtocol = StreamProtocol::new("/bayspace/admit/1");
/// Paged catalog queries.
pub const CATALOG_PROTOCOL: StreamProtocol = StreamProtocol::new("/bayspace/catalog/1");
/// DSP control messages of negotiation and transfer (opaque at this layer).
pub const NEGOTIATION_PROTOCOL: StreamProtocol = StreamProtocol::new("/bayspace/negotiation/1");
/// Private Kademlia protocol name, so the DHT never merges with a public one.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/bayspace/kad/1.0.0");
/// Bulk ciphertext over raw streams (request-response holds whole messages in memory).
pub const DATA_PROTOCOL: StreamProtocol = StreamProtocol::new("/bayspace/data/1");
/// Identify protocol version string; peers announcing another one are still
/// identified, but only admitted peers are ever used.
pub const IDENTIFY_VERSION: &str = "/bayspace/id/1";

/// Largest membership credential accepted from a peer.
pub const MAX_CREDENTIAL_BYTES: usize = 64 * 1024;
/// Largest encoded admit message (credential plus CBOR framing).
pub const MAX_ADMIT_MESSAGE_BYTES: u64 = MAX_CREDENTIAL_BYTES as u64 + 1024;
/// Largest encoded catalog request (a cursor and a limit).
pub const MAX_CATALOG_REQUEST_BYTES: u64 = 4 * 1024;
/// Largest encoded catalog response (one page of signed descriptors).
pub const MAX_CATALOG_RESPONSE_BYTES: u64 = 4 * 1024 * 1024;
/// Largest encoded control request or response.
pub const MAX_CONTROL_MESSAGE_BYTES: u64 = 256 * 1024;
/// Largest gossip message (one descriptor announcement or revocation list).
pub const MAX_GOSSIP_BYTES: usize = 256 * 1024;
/// Largest Kademlia record value.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;
/// Largest Kademlia packet: one record plus its key and framing.
pub const MAX_KAD_PACKET_BYTES: usize = MAX_RECORD_BYTES + 8 * 1024;

/// The gossip topics of the data space; anything else is rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Signed dataset descriptor announcements.
    Descriptors,
    /// Signed revocation lists from the trust anchor.
    Revocations,
    /// Members' signed audit checkpoints, kept by the others as witnesses.
    Checkpoints,
}

impl Topic {
    pub const ALL: [Topic; 3] = [Topic::Descriptors, Topic::Revocations, Topic::Checkpoints];

    pub fn name(self) -> &'static str {
        match self {
            Topic::Descriptors => "bayspace/descriptors/1",
            Topic::Revocations => "bayspace/revocations/1",
            Topic::Checkpoints => "bayspace/audit-checkpoints/1",
        }
    }

    pub(crate) fn ident(self) -> IdentTopic {
        IdentTopic::new(self.name())
    }

    pub(crate) fn from_hash(hash: &TopicHash) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| t.ident().hash() == *hash)
    }
}

/// One side's membership credential, opaque to the p2p layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdmitMessage {
    #[serde(with = "serde_bytes")]
    pub credential: Vec<u8>,
}

/// A page request: items after the cursor `after`, at most `limit` of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogRequest {
    pub after: Option<String>,
    pub limit: u32,
}

/// One page of signed descriptors (opaque bytes) and the cursor of the next page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogResponse {
    #[serde(with = "byte_items")]
    pub items: Vec<Vec<u8>>,
    pub next: Option<String>,
}

/// A DSP control message, encoded by the negotiation and transfer modules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlRequest(#[serde(with = "serde_bytes")] pub Vec<u8>);

/// The reply to a [`ControlRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlResponse(#[serde(with = "serde_bytes")] pub Vec<u8>);

/// Encodes each item as a CBOR byte string rather than an array of integers,
/// which would nearly double the size of every descriptor on the wire.
mod byte_items {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_bytes::{ByteBuf, Bytes};

    pub fn serialize<S: Serializer>(items: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        let borrowed: Vec<&Bytes> = items.iter().map(|i| Bytes::new(i)).collect();
        borrowed.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        let bufs = Vec::<ByteBuf>::deserialize(d)?;
        Ok(bufs.into_iter().map(ByteBuf::into_vec).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_round_trip_through_their_hash() {
        for topic in Topic::ALL {
            assert_eq!(Topic::from_hash(&topic.ident().hash()), Some(topic));
        }
        assert_eq!(
            Topic::from_hash(&IdentTopic::new("bayspace/other/1").hash()),
            None
        );
    }

    #[test]
    fn protocol_ids_are_distinct() {
        let ids = [
            ADMIT_PROTOCOL,
            CATALOG_PROTOCOL,
            NEGOTIATION_PROTOCOL,
            KAD_PROTOCOL,
            DATA_PROTOCOL,
        ];
        for (i, a) in ids.iter().enumerate() {
            for b in &ids[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
