#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Peers that break the rules of the data protocol, against a real provider
//! process: a consumer that takes the data and never confirms it, one that
//! asks many times at once, a peer that was never admitted, and a member
//! that holds streams open without a word. Each drives a modified peer
//! from the test (see `tests/src/forger.rs`).

use std::path::Path;

use bayspace_connector::transfers::wire::{Frame, read_frame, write_frame};
use bayspace_tests::forger::{Forger, Stranger, request, termination};
use bayspace_tests::pair::*;
use bayspace_tests::*;
use serde_json::Value;

/// The provider's audit entries, parsed.
fn entries(p: &Pair, name: &str) -> Vec<Value> {
    audit_events(&p.sz, &p.space.tmp.path().join(name))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &Value| v.get("event").is_some())
        .collect()
}

fn count(log: &[Value], event: &str) -> usize {
    log.iter().filter(|e| e["event"] == event).count()
}

/// The stored agreement on `node`, as `agreement show --format json`.
fn agreement_record(node: &Node, id: &str) -> Value {
    serde_json::from_str(&admin_ok(
        node,
        &["agreement", "show", id, "--format", "json"],
    ))
    .unwrap()
}

/// Stops HKU's daemon and connects a forger with its identity to Shenzhen.
async fn hku_forger(p: &mut Pair) -> Forger {
    let mut hk = p.hk.child.take().unwrap();
    hk.kill().unwrap();
    hk.wait().unwrap();
    Forger::connect(&p.space, &p.hk.dir.clone(), &p.sz_peer, &p.sz.tcp_addr()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_never_confirms_gets_no_more_releases_than_its_use_limit() {
    let mut p = Pair::start(false);
    let data = b"station,pm25\nA,12\nB,40\nC,33\n".repeat(1000);
    let agreement = p.agree_on("air", &data, &["--use-limit", "1"]);
    let researcher = agreement_record(&p.sz, &agreement)["signed"]["agreement"]["researcher"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let forger = hku_forger(&mut p).await;

    // Four requests at once, none of them ever confirmed: one release.
    // (libp2p-stream drops an inbound stream that arrives while the
    // provider's acceptor is busy with another, so some may go unanswered;
    // none may be a second release.)
    let takes = (0..4).map(|_| forger.take(&p.sz_peer, &agreement, &researcher));
    let results = futures::future::join_all(takes).await;
    let mut released = 0;
    for r in results {
        match r {
            Ok(taken) => {
                assert_eq!(taken.plaintext, data, "the forger decrypted the data");
                released += 1;
            }
            Err(Frame::Termination { code, .. }) if code.as_deref() == Some("no-answer") => {}
            Err(Frame::Termination { code, reason }) => {
                assert_eq!(code.as_deref(), Some("uses-exhausted"), "{reason}");
                assert!(reason.contains("allows 1 release(s)"), "{reason}");
            }
            Err(other) => panic!("a {} instead of a start", other.kind()),
        }
    }
    assert_eq!(
        released, 1,
        "a use-limit-1 agreement released {released} times"
    );

    // Asked again later, still unconfirmed: refused.
    let again = forger.take(&p.sz_peer, &agreement, &researcher).await;
    let Err(frame) = again else {
        panic!("a second release without a confirmation of the first");
    };
    termination(frame, "uses-exhausted");

    // The one release is on record, counted when the key left.
    let log = entries(&p, "provider.jsonl");
    assert_eq!(count(&log, "key-released"), 1, "{log:?}");
    assert_eq!(count(&log, "transfer-completed"), 0, "never confirmed");
    assert_eq!(agreement_record(&p.sz, &agreement)["uses"], 1);
}

/// Waits until the provider has marked the open release of `agreement`
/// as delivered (every segment left), which it does just after the last
/// segment is written.
fn wait_delivered(p: &Pair, agreement: &str) {
    let start = std::time::Instant::now();
    while agreement_record(&p.sz, agreement)["open_release"]["delivered"] != true {
        assert!(
            start.elapsed() < DEADLINE,
            "the release never became delivered"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_pretends_to_have_crashed_gets_no_second_use() {
    use bayspace_connector::transfers::wire::ReleaseId;
    let mut p = Pair::start(false);
    let data = b"station,pm25\nA,12\nB,40\nC,33\n".repeat(1000);
    let agreement = p.agree_on("air", &data, &["--use-limit", "1"]);
    let other = p.agree_on("air2", &data, &["--use-limit", "1"]);
    let researcher = agreement_record(&p.sz, &agreement)["signed"]["agreement"]["researcher"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let forger = hku_forger(&mut p).await;
    let sz = p.sz_peer.clone();
    let take = async |agreement: &str, release: ReleaseId| {
        forger
            .take_release(&sz, agreement, &researcher, Some(release))
            .await
    };

    // Takes everything, never confirms, then "crashed": the same id again.
    let release = ReleaseId([0x42; 16]);
    let first = take(&agreement, release).await.ok().unwrap();
    assert_eq!(first.plaintext, data);
    let mut again = 0;
    let refused = loop {
        wait_delivered(&p, &agreement);
        match take(&agreement, release).await {
            Ok(t) => {
                // The same bytes under a fresh key, nothing more.
                assert_eq!(t.plaintext, data);
                assert_ne!(t.start.key, first.start.key);
                again += 1;
            }
            Err(frame) => break frame,
        }
        assert!(again <= 8, "served again more than MAX_REDELIVERIES times");
    };
    assert_eq!(again, 8);
    termination(refused, "uses-exhausted");
    // A fresh id is a new use, which the limit refuses.
    termination(
        take(&agreement, ReleaseId([0x43; 16])).await.err().unwrap(),
        "uses-exhausted",
    );
    // The id carried over to another agreement is refused as such.
    let reason = termination(
        take(&other, release).await.err().unwrap(),
        "foreign-release",
    );
    assert!(reason.contains("another agreement"), "{reason}");

    assert_eq!(agreement_record(&p.sz, &agreement)["uses"], 1);
    assert_eq!(agreement_record(&p.sz, &other)["uses"], 0);
    let log = entries(&p, "provider.jsonl");
    let served: Vec<&Value> = log
        .iter()
        .filter(|e| e["event"] == "key-released")
        .collect();
    assert_eq!(served.len(), 9, "{log:?}");
    assert_eq!(
        served
            .iter()
            .filter(|e| e["details"]["redelivery"] == true)
            .count(),
        8
    );
    assert!(served.iter().all(|e| e["details"]["uses"] == 1));
    assert_eq!(count(&log, "transfer-completed"), 0, "never confirmed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_was_never_admitted_gets_no_data_stream_and_no_audit_entry() {
    let p = Pair::start(false);
    let stranger = Stranger::connect(&p.sz.tcp_addr()).await;
    // A request for an agreement nobody has, with a researcher name as
    // large as a message may be: before admission nothing may read it.
    let agreement = "urn:uuid:00000000-0000-4000-8000-000000000000";
    let huge = "x".repeat(60 * 1024);
    let answer = match stranger.open(&p.sz_peer).await {
        Ok(mut stream) => {
            let sent = write_frame(&mut stream, &request(agreement, &huge)).await;
            match sent {
                Ok(()) => tokio::time::timeout(DEADLINE, read_frame(&mut stream))
                    .await
                    .expect("the provider neither answered nor closed the stream")
                    .ok(),
                Err(_) => None,
            }
        }
        Err(_) => None,
    };
    assert!(
        answer.is_none(),
        "a peer that never presented a credential got an answer: {answer:?}"
    );
    let log = entries(&p, "stranger.jsonl");
    let actor = format!("peer:{}", stranger.peer);
    let by_stranger: Vec<&Value> = log
        .iter()
        .filter(|e| e["actor"] == actor.as_str() && e["event"] != "admission-refused")
        .collect();
    assert!(by_stranger.is_empty(), "{by_stranger:?}");
    assert!(
        !log.iter().any(|e| e.to_string().contains(&huge[..1024])),
        "the stranger's text reached the audit log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_flooding_bad_requests_is_capped_and_rate_limited_in_the_audit_log() {
    let p = Pair::start(false);
    let (macao, _, _) = p.space.member_in("UM", "macao", None);
    let um = Forger::connect(&p.space, &macao, &p.sz_peer, &p.sz.tcp_addr()).await;
    let before = entries(&p, "before.jsonl").len();

    // Researcher names past any credential id's length are refused as
    // malformed, without their text reaching the log.
    let huge = "y".repeat(60 * 1024);
    let agreement = "urn:uuid:00000000-0000-4000-8000-000000000000";
    let mut stream = um.open(&p.sz_peer).await;
    write_frame(&mut stream, &request(agreement, &huge))
        .await
        .unwrap();
    let answer = read_frame(&mut stream).await;
    if let Ok(frame) = answer {
        termination(frame, "malformed-request");
    }

    // Fifty requests for agreements that do not exist.
    for _ in 0..50 {
        let frame = um.ask(&p.sz_peer, agreement, "r-1").await;
        let code = match &frame {
            Frame::Termination { code, .. } => code.clone(),
            other => panic!("expected a termination, got {}", other.kind()),
        };
        assert_eq!(code.as_deref(), Some("unknown-agreement"));
    }
    let log = entries(&p, "after.jsonl");
    let added = &log[before..];
    assert!(
        !added.iter().any(|e| e.to_string().contains(&huge[..1024])),
        "the oversized researcher name reached the log"
    );
    let refused = count(added, "transfer-refused");
    assert!(
        (1..=12).contains(&refused),
        "{refused} refusal entries for one peer in a few seconds"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_streams_from_one_member_do_not_hold_up_another_members_release() {
    let p = Pair::start(false);
    let data = b"id,age\n1,34\n2,51\n".repeat(100);
    let agreement = p.agree_on("cohort", &data, &[]);
    let (macao, _, _) = p.space.member_in("UM", "macao", None);
    let um = Forger::connect(&p.space, &macao, &p.sz_peer, &p.sz.tcp_addr()).await;
    // More silent streams than the provider serves at once.
    let mut held = Vec::new();
    for _ in 0..16 {
        held.push(um.open(&p.sz_peer).await);
    }
    let out = p.space.tmp.path().join("cohort.csv");
    let fetch = {
        let (token, node, ca, out, agreement) = (
            p.token.clone(),
            grpc_url(&p.hk.dir),
            api_ca(&p.hk.dir),
            s(&out),
            agreement.clone(),
        );
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(bin())
                .args(["transfer", "fetch", &agreement, "--out", &out])
                .args(["--node", &node, "--ca", &ca])
                .env("BAYSPACE_TOKEN", &token)
                .output()
                .unwrap()
        })
    };
    let o = tokio::time::timeout(DEADLINE, fetch)
        .await
        .expect("HKU's fetch waited behind UM's silent streams")
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read(Path::new(&out)).unwrap(), data);
    drop(held);
}

/// A peer that never presents a credential and opens `dials` TCP
/// connections to the provider at once; what it holds open is read from
/// its own swarm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_holds_at_most_two_connections_and_loses_them_at_the_admission_deadline() {
    use futures::StreamExt;
    use libp2p::swarm::SwarmEvent;
    use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
    use std::time::{Duration, Instant};

    let p = Pair::start(false);
    let provider: libp2p::PeerId = p.sz_peer.parse().unwrap();
    let addr: libp2p::Multiaddr = p.sz.tcp_addr().parse().unwrap();
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default(),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| libp2p::swarm::dummy::Behaviour)
        .unwrap()
        // The stranger keeps whatever it gets; only the provider closes.
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build();
    let dials = 12;
    for _ in 0..dials {
        swarm
            .dial(
                DialOpts::peer_id(provider)
                    .addresses(vec![addr.clone()])
                    .condition(PeerCondition::Always)
                    .build(),
            )
            .unwrap();
    }
    let (mut established, mut open_at_3s, mut last_closed) = (0, None, None);
    let started = Instant::now();
    // The admission deadline is 10 s; give the sweep (1 s) and the close
    // some room.
    while started.elapsed() < Duration::from_secs(16) {
        let open = swarm.network_info().connection_counters().num_established();
        if open_at_3s.is_none() && started.elapsed() >= Duration::from_secs(3) {
            open_at_3s = Some(open);
        }
        if let Ok(Some(event)) =
            tokio::time::timeout(Duration::from_millis(200), swarm.next()).await
        {
            match event {
                SwarmEvent::ConnectionEstablished { .. } => established += 1,
                SwarmEvent::ConnectionClosed { .. } => last_closed = Some(started.elapsed()),
                _ => {}
            }
        }
    }
    let open_at_end = swarm.network_info().connection_counters().num_established();
    println!(
        "stranger: {dials} dials, {established} handshakes completed, {open_at_3s:?} open after 3 s, \
         {open_at_end} after 16 s (last closed at {last_closed:?})"
    );
    let open_at_3s = open_at_3s.unwrap();
    assert!(
        (1..=2).contains(&open_at_3s),
        "{open_at_3s} connections held by one peer; the limit is 2"
    );
    assert_eq!(open_at_end, 0, "the admission deadline closes them all");
    assert!(last_closed.is_some());
    // The provider still serves its members.
    p.publish("After the stranger", &AUTO_TO_HK);
}
