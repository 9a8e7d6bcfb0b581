//! Misbehaving peers, driven from a test: a real member's identity with a
//! hand-made data stream (the [`Forger`]), and a bare libp2p peer that
//! never presents a credential at all ([`Stranger`]).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bayspace_connector::crypto::{DataKey, SegmentBuf, SegmentCipher};
use bayspace_connector::p2p::protocol::DATA_PROTOCOL;
use bayspace_connector::transfers::wire::{
    Frame, Incoming, ReleaseId, TransferRequest, TransferStart, read_frame, read_incoming,
    write_frame,
};
use futures::StreamExt;
use libp2p::{Multiaddr, PeerId, Stream, noise, tcp, yamux};

use super::{DEADLINE, Space};

/// A libp2p client in this process with the node key and membership
/// credential of the member whose node directory is `dir`, connected and
/// admitted to `provider` at `addr`.
pub struct Forger {
    pub client: bayspace_connector::p2p::Client,
    _task: tokio::task::JoinHandle<()>,
}

/// What a forged release request got: the start message and every
/// segment, decrypted with the key it carried.
pub struct Taken {
    pub start: TransferStart,
    pub plaintext: Vec<u8>,
}

impl Forger {
    pub async fn connect(space: &Space, dir: &Path, provider: &str, addr: &str) -> Forger {
        use bayspace_connector::admission::MembershipAdmission;
        use bayspace_connector::identity::{Anchor, MembershipCredential, NodeKey};
        use bayspace_connector::store::SledStore;

        let config = std::fs::read_to_string(dir.join("config.toml")).unwrap();
        let key_file = config
            .lines()
            .find_map(|l| l.strip_prefix("node-key = "))
            .unwrap()
            .trim_matches('"');
        let key = NodeKey::load(&dir.join(key_file)).unwrap();
        let credential = MembershipCredential::read(&dir.join("membership.cred")).unwrap();
        let anchor = Anchor::load(&space.authority().join("authority.pub")).unwrap();
        let admission = MembershipAdmission::open(
            &credential,
            vec![anchor.key],
            Arc::new(SledStore::temporary().unwrap()),
        )
        .unwrap();
        let (client, _events, task) = bayspace_connector::p2p::spawn(
            key.libp2p_keypair(),
            Arc::new(admission),
            bayspace_connector::p2p::P2pConfig::default(),
        )
        .unwrap();
        client.dial(addr.parse().unwrap()).await.unwrap();
        let peer = provider.parse().unwrap();
        let start = Instant::now();
        while client.admitted_from(peer).await.unwrap().is_none() {
            assert!(start.elapsed() < DEADLINE, "{provider} never admitted us");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Forger {
            client,
            _task: task,
        }
    }

    pub async fn open(&self, provider: &str) -> Stream {
        self.client
            .stream_control()
            .open_stream(provider.parse().unwrap(), DATA_PROTOCOL)
            .await
            .unwrap()
    }

    /// Sends a TransferRequestMessage and returns the provider's answer.
    pub async fn ask(&self, provider: &str, agreement: &str, researcher: &str) -> Frame {
        let mut stream = self.open(provider).await;
        write_frame(&mut stream, &request(agreement, researcher))
            .await
            .unwrap();
        read_frame(&mut stream).await.unwrap()
    }

    /// Asks for a release and reads the key and every segment, but never
    /// confirms with a TransferCompletionMessage: the stream is dropped.
    /// `Err` carries the provider's answer when it was not a start.
    pub async fn take(
        &self,
        provider: &str,
        agreement: &str,
        researcher: &str,
    ) -> Result<Taken, Frame> {
        self.take_release(provider, agreement, researcher, None)
            .await
    }

    /// [`take`](Self::take), the request naming release id `release`.
    pub async fn take_release(
        &self,
        provider: &str,
        agreement: &str,
        researcher: &str,
        release: Option<ReleaseId>,
    ) -> Result<Taken, Frame> {
        let mut stream = self.open(provider).await;
        let mut req = request(agreement, researcher);
        if let Frame::Request(r) = &mut req {
            r.release = release;
        }
        if let Err(e) = write_frame(&mut stream, &req).await {
            return Err(Frame::terminate("no-answer", e.to_string()));
        }
        let start = match read_frame(&mut stream).await {
            Ok(Frame::Start(s)) => s,
            Ok(other) => return Err(other),
            // What a test asserts on: the provider said nothing.
            Err(e) => return Err(Frame::terminate("no-answer", e.to_string())),
        };
        let key = DataKey::from_bytes(start.key.as_slice().try_into().unwrap());
        let cipher = SegmentCipher::new(&key, agreement, start.dataset_version);
        let mut plaintext = Vec::new();
        let mut buf = SegmentBuf::new();
        for expected in start.from_segment..start.segments {
            match read_incoming(&mut stream, Some(&mut buf)).await.unwrap() {
                Incoming::Segment { index, last } => {
                    assert_eq!(index, expected);
                    cipher.open_in_place(index, last, &mut buf).unwrap();
                    plaintext.extend_from_slice(buf.as_ref());
                }
                Incoming::Message(m) => panic!("a {} instead of a segment", m.kind()),
            }
        }
        Ok(Taken { start, plaintext })
    }
}

pub fn request(agreement: &str, researcher: &str) -> Frame {
    Frame::Request(TransferRequest {
        agreement: agreement.parse().unwrap(),
        researcher: researcher.into(),
        from_segment: 0,
        release: None,
    })
}

/// A bare libp2p peer: TCP, Noise, Yamux and the stream protocol only. It
/// never speaks the admission protocol, so it never presents a credential.
pub struct Stranger {
    pub control: libp2p_stream::Control,
    pub peer: PeerId,
    _task: tokio::task::JoinHandle<()>,
}

impl Stranger {
    pub async fn connect(addr: &str) -> Stranger {
        let mut swarm = libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                tcp::Config::default(),
                noise::Config::new,
                yamux::Config::default,
            )
            .unwrap()
            .with_behaviour(|_| libp2p_stream::Behaviour::new())
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        let peer = *swarm.local_peer_id();
        let control = swarm.behaviour().new_control();
        let addr: Multiaddr = addr.parse().unwrap();
        swarm.dial(addr).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut tx = Some(tx);
        let task = tokio::spawn(async move {
            loop {
                if let libp2p::swarm::SwarmEvent::ConnectionEstablished { .. } =
                    swarm.select_next_some().await
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(());
                }
            }
        });
        tokio::time::timeout(DEADLINE, rx).await.unwrap().unwrap();
        Stranger {
            control,
            peer,
            _task: task,
        }
    }

    pub async fn open(&self, provider: &str) -> Result<Stream, libp2p_stream::OpenStreamError> {
        self.control
            .clone()
            .open_stream(provider.parse().unwrap(), DATA_PROTOCOL)
            .await
    }
}

/// The reason of a TransferTerminationMessage, checking its code.
pub fn termination(frame: Frame, expected_code: &str) -> String {
    match frame {
        Frame::Termination { code, reason } => {
            assert_eq!(code.as_deref(), Some(expected_code), "{reason}");
            reason
        }
        other => panic!("expected a termination, got {}", other.kind()),
    }
}
