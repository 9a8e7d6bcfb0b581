#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Two or three real nodes on [::1], with a test admission policy that admits
//! credentials of the form `member:<name>`.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use bayspace_connector::p2p::protocol::{ADMIT_PROTOCOL, AdmitMessage, KAD_PROTOCOL};
use bayspace_connector::p2p::{
    Admission, AdmissionRefusal, AdmittedPeer, CatalogRequest, CatalogResponse, Client,
    GossipVerdict, P2pConfig, P2pError, P2pEvent, TcpSecurity, Topic, spawn,
};
use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::kad::{GetRecordOk, QueryResult, RecordKey};
use libp2p::request_response::{self, ProtocolSupport, cbor};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, gossipsub, kad, noise, tcp, tls, yamux};
use tokio::sync::mpsc::Receiver;
use tokio::time::{Instant, timeout};

const WAIT: Duration = Duration::from_secs(5);

struct TestAdmission {
    own: Vec<u8>,
    refuse_all: AtomicBool,
}

impl Admission for TestAdmission {
    fn check(
        &self,
        peer: &PeerId,
        _remote: IpAddr,
        credential: &[u8],
        now: SystemTime,
    ) -> Result<AdmittedPeer, AdmissionRefusal> {
        if self.refuse_all.load(Ordering::SeqCst) {
            return Err(AdmissionRefusal::Revoked("test revocation".into()));
        }
        let name = credential
            .strip_prefix(b"member:")
            .ok_or_else(|| AdmissionRefusal::Malformed("no member: prefix".into()))?;
        Ok(AdmittedPeer {
            peer_id: *peer,
            institution: String::from_utf8_lossy(name).into_owned(),
            expires_at: now + Duration::from_secs(3600),
        })
    }

    fn own_credential(&self) -> Vec<u8> {
        self.own.clone()
    }
}

struct Node {
    client: Client,
    events: Receiver<P2pEvent>,
    peer: PeerId,
    admission: Arc<TestAdmission>,
}

async fn node(credential: &str, listen: &str) -> (Node, Multiaddr) {
    node_with(credential, listen, TcpSecurity::default()).await
}

async fn node_with(credential: &str, listen: &str, security: TcpSecurity) -> (Node, Multiaddr) {
    let key = Keypair::generate_ed25519();
    let peer = key.public().to_peer_id();
    let admission = Arc::new(TestAdmission {
        own: credential.as_bytes().to_vec(),
        refuse_all: AtomicBool::new(false),
    });
    let config = P2pConfig {
        tcp_security: security,
        ..P2pConfig::default()
    };
    let (client, events, _handle) = spawn(key, admission.clone(), config).unwrap();
    let addr = timeout(WAIT, client.listen_on(listen.parse().unwrap()))
        .await
        .unwrap()
        .unwrap();
    (
        Node {
            client,
            events,
            peer,
            admission,
        },
        addr,
    )
}

/// Waits for the first event matching `pick`, skipping others.
async fn next<T>(
    events: &mut Receiver<P2pEvent>,
    mut pick: impl FnMut(P2pEvent) -> Option<T>,
) -> T {
    timeout(WAIT, async {
        loop {
            if let Some(t) = pick(events.recv().await.expect("event channel closed")) {
                return t;
            }
        }
    })
    .await
    .expect("timed out waiting for an event")
}

async fn admitted(events: &mut Receiver<P2pEvent>, peer: PeerId) -> AdmittedPeer {
    next(events, |e| match e {
        P2pEvent::PeerAdmitted(p) if p.peer_id == peer => Some(p),
        _ => None,
    })
    .await
}

/// Two members, `a` dialing `b`, each having admitted the other.
async fn pair(transport: &str) -> (Node, Node) {
    pair_with(transport, TcpSecurity::default(), TcpSecurity::default()).await
}

/// [`pair`], each side offering the security upgrades given.
async fn pair_with(transport: &str, a_sec: TcpSecurity, b_sec: TcpSecurity) -> (Node, Node) {
    let (mut a, _) = node_with("member:alpha", transport, a_sec).await;
    let (mut b, b_addr) = node_with("member:beta", transport, b_sec).await;
    let dialed = timeout(WAIT, a.client.dial(b_addr)).await.unwrap().unwrap();
    assert_eq!(dialed, b.peer);
    assert_eq!(admitted(&mut a.events, b.peer).await.institution, "beta");
    assert_eq!(admitted(&mut b.events, a.peer).await.institution, "alpha");
    (a, b)
}

/// Publishes until a subscriber is known (subscriptions travel after connecting).
async fn publish(client: &Client, topic: Topic, data: &[u8]) {
    timeout(WAIT, async {
        while client.publish(topic, data.to_vec()).await.is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("no subscriber appeared");
}

async fn wait_disconnected(client: &Client) {
    timeout(WAIT, async {
        while !client.admitted_peers().await.unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("peer stayed connected");
}

async fn members_gossip_and_answer_catalog(transport: &str, security: TcpSecurity) {
    let (a, mut b) = pair_with(transport, security, security).await;

    publish(&a.client, Topic::Descriptors, b"descriptor-1").await;
    let (from, data, id) = next(&mut b.events, |e| match e {
        P2pEvent::Gossip {
            topic: Topic::Descriptors,
            from,
            data,
            id,
            ..
        } => Some((from, data, id)),
        _ => None,
    })
    .await;
    assert_eq!((from, data.as_slice()), (a.peer, &b"descriptor-1"[..]));
    b.client
        .report_gossip(id, GossipVerdict::Accept)
        .await
        .unwrap();

    let request = CatalogRequest {
        after: None,
        limit: 10,
    };
    let answer = tokio::spawn({
        let client = a.client.clone();
        let peer = b.peer;
        async move { client.request(peer, request).await }
    });
    let (peer, got, channel) = next(&mut b.events, |e| match e {
        P2pEvent::InboundRequest {
            peer,
            request,
            channel,
        } => Some((peer, request, channel)),
        _ => None,
    })
    .await;
    assert_eq!(
        (peer, got),
        (
            a.peer,
            CatalogRequest {
                after: None,
                limit: 10
            }
        )
    );
    let page = CatalogResponse {
        items: vec![b"d1".to_vec(), vec![0xff; 300]],
        next: Some("d1".into()),
    };
    b.client.respond(channel, page.clone()).await.unwrap();
    assert_eq!(timeout(WAIT, answer).await.unwrap().unwrap().unwrap(), page);

    let stats = a.client.stats().await.unwrap();
    assert_eq!(stats.admitted.len(), 1);
    assert_eq!(stats.refusals, 0);
    a.client.shutdown().await.unwrap();
    b.client.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_gossip_and_answer_catalog_over_tcp_with_tls() {
    members_gossip_and_answer_catalog("/ip6/::1/tcp/0", TcpSecurity::Tls).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_gossip_and_answer_catalog_over_tcp_with_noise() {
    members_gossip_and_answer_catalog("/ip6/::1/tcp/0", TcpSecurity::Noise).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_gossip_and_answer_catalog_over_quic() {
    members_gossip_and_answer_catalog("/ip6/::1/udp/0/quic-v1", TcpSecurity::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intruder_is_refused_disconnected_and_unheard() {
    let (mut a, a_addr) = node("member:alpha", "/ip6/::1/tcp/0").await;
    let (intruder, _) = node("stranger", "/ip6/::1/tcp/0").await;
    timeout(WAIT, intruder.client.dial(a_addr))
        .await
        .unwrap()
        .unwrap();

    let reason = next(&mut a.events, |e| match e {
        P2pEvent::PeerRefused { peer, reason } if peer == intruder.peer => Some(reason),
        _ => None,
    })
    .await;
    assert!(matches!(reason, AdmissionRefusal::Malformed(_)), "{reason}");
    wait_disconnected(&intruder.client).await;

    // Whatever the intruder tries now fails on its side, and nothing reaches `a`.
    let published = intruder
        .client
        .publish(Topic::Descriptors, b"spam".to_vec())
        .await;
    assert!(
        matches!(
            &published,
            Err(P2pError::Publish {
                topic: Topic::Descriptors,
                ..
            })
        ),
        "{published:?}"
    );
    let request = CatalogRequest {
        after: None,
        limit: 1,
    };
    let asked = intruder.client.request(a.peer, request).await;
    assert!(
        matches!(&asked, Err(P2pError::NotAdmitted(p)) if *p == a.peer),
        "{asked:?}"
    );
    let stray = timeout(Duration::from_millis(300), async {
        loop {
            match a.events.recv().await {
                Some(P2pEvent::Gossip { .. } | P2pEvent::InboundRequest { .. }) | None => return,
                Some(_) => {}
            }
        }
    })
    .await;
    assert!(
        stray.is_err(),
        "a message from the intruder reached the node"
    );

    let stats = a.client.stats().await.unwrap();
    assert_eq!(stats.refusals, 1);
    assert!(stats.admitted.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_put_on_one_is_gettable_on_the_other() {
    let (a, b) = pair("/ip6/::1/tcp/0").await;
    timeout(
        WAIT,
        a.client
            .put_record(b"dataset/42".to_vec(), b"descriptor".to_vec()),
    )
    .await
    .unwrap()
    .unwrap();
    let value = timeout(WAIT, b.client.get_record(b"dataset/42".to_vec()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(value, b"descriptor");
    let missing = timeout(WAIT, b.client.get_record(b"dataset/none".to_vec()))
        .await
        .unwrap();
    assert!(
        matches!(&missing, Err(P2pError::RecordNotFound { key }) if key == b"dataset/none"),
        "{missing:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recheck_with_a_refusing_policy_disconnects() {
    let (mut a, b) = pair("/ip6/::1/tcp/0").await;
    a.admission.refuse_all.store(true, Ordering::SeqCst);
    assert_eq!(a.client.recheck_all().await.unwrap(), 1);
    let reason = next(&mut a.events, |e| match e {
        P2pEvent::PeerRefused { peer, reason } if peer == b.peer => Some(reason),
        _ => None,
    })
    .await;
    assert!(matches!(reason, AdmissionRefusal::Revoked(_)));
    wait_disconnected(&b.client).await;
    assert!(a.client.admitted_peers().await.unwrap().is_empty());
    let request = CatalogRequest {
        after: None,
        limit: 1,
    };
    assert!(matches!(
        a.client.request(b.peer, request).await,
        Err(bayspace_connector::p2p::P2pError::NotAdmitted(_))
    ));
}

/// A peer speaking the Bayspace protocols without the Bayspace engine: it
/// subscribes to the topics and queries the DHT, but never presents a
/// credential (nor answers the node's admit request).
#[derive(NetworkBehaviour)]
struct Raw {
    admit: cbor::Behaviour<AdmitMessage, AdmitMessage>,
    gossip: gossipsub::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
}

fn raw_swarm(security: TcpSecurity) -> Swarm<Raw> {
    let builder = libp2p::SwarmBuilder::with_new_identity().with_tokio();
    let tcp_config = tcp::Config::default().nodelay(true);
    let idle = |c: libp2p::swarm::Config| c.with_idle_connection_timeout(Duration::from_secs(60));
    match security {
        TcpSecurity::Noise => builder
            .with_tcp(tcp_config, noise::Config::new, yamux::Config::default)
            .unwrap()
            .with_behaviour(raw)
            .unwrap()
            .with_swarm_config(idle)
            .build(),
        TcpSecurity::Tls | TcpSecurity::TlsFirst => builder
            .with_tcp(tcp_config, tls::Config::new, yamux::Config::default)
            .unwrap()
            .with_behaviour(raw)
            .unwrap()
            .with_swarm_config(idle)
            .build(),
    }
}

fn raw(key: &Keypair) -> Raw {
    let peer = key.public().to_peer_id();
    let mut gossip = gossipsub::Behaviour::new(
        gossipsub::MessageAuthenticity::Signed(key.clone()),
        gossipsub::Config::default(),
    )
    .unwrap();
    for topic in Topic::ALL {
        gossip
            .subscribe(&gossipsub::IdentTopic::new(topic.name()))
            .unwrap();
    }
    let mut kad_config = kad::Config::new(KAD_PROTOCOL);
    kad_config.set_query_timeout(Duration::from_secs(3));
    Raw {
        admit: cbor::Behaviour::new(
            [(ADMIT_PROTOCOL, ProtocolSupport::Full)],
            request_response::Config::default(),
        ),
        gossip,
        kad: kad::Behaviour::with_config(peer, kad::store::MemoryStore::new(peer), kad_config),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_not_yet_admitted_gets_no_gossip_and_no_records_over_noise() {
    peer_not_yet_admitted_gets_no_gossip_and_no_records(TcpSecurity::Noise).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_not_yet_admitted_gets_no_gossip_and_no_records_over_tls() {
    peer_not_yet_admitted_gets_no_gossip_and_no_records(TcpSecurity::Tls).await
}

/// The gate holds whichever upgrade the peer chose: the node offers TLS
/// first and takes Noise from a peer that offers only that.
async fn peer_not_yet_admitted_gets_no_gossip_and_no_records(security: TcpSecurity) {
    const KEY: &[u8] = b"dataset/gated";
    let (a, a_addr) = node("member:alpha", "/ip6/::1/tcp/0").await;
    let mut raw = raw_swarm(security);
    raw.dial(a_addr.clone()).unwrap();
    timeout(WAIT, async {
        loop {
            if let SwarmEvent::ConnectionEstablished { peer_id, .. } = raw.select_next_some().await
                && peer_id == a.peer
            {
                return;
            }
        }
    })
    .await
    .expect("raw peer could not connect");

    // With no admitted peer the put misses its quorum, but the record is in
    // `a`'s own store, where an ungated Kademlia would answer from.
    let _ = timeout(
        WAIT,
        a.client.put_record(KEY.to_vec(), b"descriptor".to_vec()),
    )
    .await;
    let local = timeout(WAIT, a.client.get_record(KEY.to_vec())).await;
    assert_eq!(local.unwrap().unwrap(), b"descriptor");

    raw.behaviour_mut().kad.add_address(&a.peer, a_addr);
    let query = raw.behaviour_mut().kad.get_record(RecordKey::new(&KEY));

    // The raw peer's subscriptions reach an ungated node within milliseconds,
    // after which `a` floods its publications to it. Keep publishing for the
    // whole window (well inside the 10 s admission deadline) and until the
    // raw peer's DHT query has ended.
    let window_end = Instant::now() + Duration::from_secs(2);
    let deadline = Instant::now() + WAIT;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut held_admit_requests = Vec::new();
    let mut query_done = false;
    while !(query_done && Instant::now() >= window_end) {
        assert!(
            Instant::now() < deadline,
            "the raw peer's query never ended"
        );
        tokio::select! {
            event = raw.select_next_some() => match event {
                SwarmEvent::Behaviour(RawEvent::Gossip(gossipsub::Event::Message { message, .. })) => {
                    panic!("a peer that is not admitted received gossip: {message:?}");
                }
                SwarmEvent::Behaviour(RawEvent::Kad(kad::Event::OutboundQueryProgressed {
                    id,
                    result: QueryResult::GetRecord(result),
                    ..
                })) if id == query => {
                    assert!(
                        !matches!(result, Ok(GetRecordOk::FoundRecord(_))),
                        "a peer that is not admitted got a record from the DHT"
                    );
                    query_done = true;
                }
                SwarmEvent::Behaviour(RawEvent::Admit(request_response::Event::Message {
                    message: request_response::Message::Request { channel, .. },
                    ..
                })) => held_admit_requests.push(channel),
                SwarmEvent::ConnectionClosed { peer_id, .. } if peer_id == a.peer => {
                    panic!("the node closed the connection inside the admission window");
                }
                _ => {}
            },
            _ = tick.tick() => {
                let _ = a.client.publish(Topic::Descriptors, b"descriptor-1".to_vec()).await;
            }
        }
    }
    assert!(raw.is_connected(&a.peer));
    let stats = a.client.stats().await.unwrap();
    assert!(stats.admitted.is_empty());
    assert_eq!(stats.refusals, 0, "the raw peer must still be pending");

    // Positive control: a member connecting now gets both.
    let (mut b, _) = node("member:beta", "/ip6/::1/tcp/0").await;
    let a_addr = a.client.listen_addrs().await.unwrap().remove(0);
    timeout(WAIT, b.client.dial(a_addr)).await.unwrap().unwrap();
    admitted(&mut b.events, a.peer).await;
    publish(&a.client, Topic::Descriptors, b"descriptor-2").await;
    let data = next(&mut b.events, |e| match e {
        P2pEvent::Gossip {
            topic: Topic::Descriptors,
            data,
            ..
        } => Some(data),
        _ => None,
    })
    .await;
    assert_eq!(data, b"descriptor-2");
    let value = timeout(WAIT, b.client.get_record(KEY.to_vec())).await;
    assert_eq!(value.unwrap().unwrap(), b"descriptor");
    drop(held_admit_requests);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_first_nodes_fall_back_to_noise_for_members_that_offer_only_noise() {
    // Either side dialing.
    pair_with("/ip6/::1/tcp/0", TcpSecurity::TlsFirst, TcpSecurity::Noise).await;
    pair_with("/ip6/::1/tcp/0", TcpSecurity::Noise, TcpSecurity::TlsFirst).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_first_node_speaks_tls_with_a_tls_only_node_and_noise_never_meets_tls() {
    // A TLS-only node can only be admitted over TLS, so this pair ran TLS.
    pair_with("/ip6/::1/tcp/0", TcpSecurity::Tls, TcpSecurity::TlsFirst).await;
    pair_with("/ip6/::1/tcp/0", TcpSecurity::TlsFirst, TcpSecurity::Tls).await;
    // With no upgrade in common there is no connection at all.
    let (tls_only, _) = node_with("member:alpha", "/ip6/::1/tcp/0", TcpSecurity::Tls).await;
    let (_noise_only, addr) = node_with("member:beta", "/ip6/::1/tcp/0", TcpSecurity::Noise).await;
    let dialed = timeout(WAIT, tls_only.client.dial(addr)).await.unwrap();
    assert!(
        matches!(&dialed, Err(P2pError::Dial { .. })),
        "a TLS-only node connected to a Noise-only one: {dialed:?}"
    );
}
