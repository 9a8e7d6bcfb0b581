#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Refusals at the moment of release, between real node processes: the
//! provider judges the release itself, not just the negotiation before it.
//! Each refusal reaches the researcher, is audited on the provider as
//! `transfer-refused` with its code, releases no key and leaves no file.
//! The wrong peer and the wrong researcher cannot be produced with the CLI
//! (the home node refuses first), so they are forged: an in-process libp2p
//! client with a real member's key and credential sends the
//! TransferRequestMessage itself. The other refusals are unit-tested with chosen facts and clocks in
//! `connector/src/transfers/release.rs`.

use std::path::Path;
use std::time::Duration;

use bayspace_tests::forger::{Forger, termination};
use bayspace_tests::pair::*;
use bayspace_tests::*;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The provider's audit entries, parsed.
fn entries(p: &Pair, name: &str) -> Vec<Value> {
    audit_events(&p.sz, &p.space.tmp.path().join(name))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &Value| v.get("event").is_some())
        .collect()
}

/// Publishes an auto offer with `terms` and returns the agreement HKU's
/// researcher gets for it.
fn agreed(p: &Pair, terms: &[&str]) -> String {
    let mut extra = AUTO_TO_HK.to_vec();
    extra.extend(terms);
    let dataset = p.publish("Air quality", &extra);
    let (id, _) = p.request(&dataset, "academic-research");
    let (consumer, _) = p.wait_both(&id, "FINALIZED");
    consumer["agreement_id"].as_str().unwrap().to_owned()
}

/// Fetches into `out`, expects a refusal naming `needle`, and returns the
/// provider's `transfer-refused` entry for it, checking that no key was
/// released after it was asked for and that nothing is at `out`.
fn refused(p: &Pair, agreement: &str, out: &Path, code: &str, needle: &str) -> Value {
    let keys_before = count(&entries(p, "before.jsonl"), "key-released");
    // A copy once shredded on the home node is fetched again only on an
    // explicit --keep-sealed; otherwise --out fetches and downloads.
    let shredded = String::from_utf8(p.researcher(&["data", "list", "--json"]).stdout)
        .unwrap()
        .contains("\"shredded\"");
    let o = if shredded {
        p.researcher(&["transfer", "fetch", agreement, "--keep-sealed"])
    } else {
        p.researcher(&["transfer", "fetch", agreement, "--out", &s(out)])
    };
    let said = text(&o);
    assert!(!o.status.success(), "the fetch succeeded: {said}");
    assert!(said.contains(needle), "the researcher is not told: {said}");
    assert!(!out.exists(), "a file appeared at {}", out.display());

    let log = entries(p, "after.jsonl");
    assert_eq!(
        count(&log, "key-released"),
        keys_before,
        "a key left the node"
    );
    let entry = log
        .iter()
        .rev()
        .find(|e| e["event"] == "transfer-refused")
        .unwrap_or_else(|| panic!("no transfer-refused entry: {log:?}"))
        .clone();
    assert_eq!(entry["details"]["code"], code, "{entry}");
    assert_eq!(entry["subjects"][0], agreement, "{entry}");
    let reason = entry["details"]["reason"].as_str().unwrap();
    assert!(reason.contains(needle), "{entry}");
    assert!(said.contains(reason), "the researcher sees {said}");
    // The consumer's node records the same refusal, code included.
    let home = audit_events(&p.hk, &p.space.tmp.path().join("home.jsonl"));
    let mirrored = home
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .rfind(|e| e["event"] == "transfer-refused")
        .unwrap_or_else(|| panic!("no transfer-refused entry at home: {home}"));
    assert_eq!(mirrored["details"]["code"], code, "{mirrored}");
    assert_eq!(mirrored["details"]["reason"], reason, "{mirrored}");
    entry
}

fn count(log: &[Value], event: &str) -> usize {
    log.iter().filter(|e| e["event"] == event).count()
}

#[test]
fn an_expired_agreement_releases_nothing() {
    let p = Pair::start(false);
    // Long enough to publish and agree on a loaded machine, short enough
    // to wait out.
    let until = OffsetDateTime::now_utc() + time::Duration::seconds(8);
    let agreement = agreed(&p, &["--valid-until", &until.format(&Rfc3339).unwrap()]);
    let left = until - OffsetDateTime::now_utc();
    assert!(left.is_positive(), "agreeing took too long to test expiry");
    std::thread::sleep(Duration::try_from(left).unwrap() + Duration::from_secs(1));

    let out = p.space.tmp.path().join("expired.csv");
    refused(&p, &agreement, &out, "expired", "expired at");

    // Refused while keeping it sealed: no empty sealed copy is left behind.
    let o = p.researcher(&["transfer", "fetch", &agreement, "--keep-sealed"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("expired at"), "{}", text(&o));
    let listed = p.researcher(&["data", "list", "--json"]);
    assert_eq!(String::from_utf8(listed.stdout).unwrap().trim(), "[]");
}

#[test]
fn an_exhausted_use_count_releases_nothing() {
    let p = Pair::start(false);
    let agreement = agreed(&p, &["--use-limit", "1"]);
    let first = p.space.tmp.path().join("first.csv");
    let o = p.researcher(&["transfer", "fetch", &agreement, "--out", &s(&first)]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(first.exists());

    // The home node holds the first release sealed, and downloads of it
    // are not releases; a second release needs that copy gone.
    let again = p.researcher(&["transfer", "fetch", &agreement, "--out", &s(&first)]);
    assert!(again.status.success(), "{}", text(&again));
    admin_ok(&p.hk, &["data", "shred", &agreement, "--reason", "test"]);
    let second = p.space.tmp.path().join("second.csv");
    let o = p.researcher(&["transfer", "fetch", &agreement, "--out", &s(&second)]);
    assert!(text(&o).contains("crypto-shredded"), "{}", text(&o));
    let entry = refused(
        &p,
        &agreement,
        &second,
        "uses-exhausted",
        "allows 1 release(s); all are used",
    );
    let log = entries(&p, "last.jsonl");
    let released = log
        .iter()
        .filter(|e| e["event"] == "key-released")
        .map(|e| e["seq"].as_u64().unwrap())
        .collect::<Vec<_>>();
    assert_eq!(released.len(), 1, "the first fetch only");
    assert!(released[0] < entry["seq"].as_u64().unwrap());
}

// ----- forged requests: a real member's identity, a hand-made request -----

/// The provider's last `transfer-refused` entry, checking that no key was
/// ever released.
fn refusal_entry(p: &Pair, name: &str) -> Value {
    let log = entries(p, name);
    assert_eq!(count(&log, "key-released"), 0, "a key left the node");
    log.iter()
        .rev()
        .find(|e| e["event"] == "transfer-refused")
        .unwrap_or_else(|| panic!("no transfer-refused entry: {log:?}"))
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_request_from_the_wrong_peer_or_for_the_wrong_researcher_releases_nothing() {
    let p = Pair::start(false);
    let agreement = agreed(&p, &[]);
    let sz_addr = p.sz.tcp_addr();

    // A third admitted member asks for HKU's agreement.
    let (macao, _, _) = p.space.member_in("UM", "macao", None);
    let third = Forger::connect(&p.space, &macao, &p.sz_peer, &sz_addr).await;
    let reason = termination(third.ask(&p.sz_peer, &agreement, "r-1").await, "wrong-peer");
    assert!(
        reason.contains(&format!("names {} as the consumer", p.hk_peer)),
        "{reason}"
    );
    let entry = refusal_entry(&p, "wrong-peer.jsonl");
    assert_eq!(entry["details"]["code"], "wrong-peer", "{entry}");
    assert_eq!(entry["details"]["reason"], reason.as_str());

    // HKU's own identity, its daemon stopped, naming another researcher.
    let mut p = p;
    let mut hk = p.hk.child.take().unwrap();
    hk.kill().unwrap();
    hk.wait().unwrap();
    let hk_dir = p.hk.dir.clone();
    let consumer = Forger::connect(&p.space, &hk_dir, &p.sz_peer, &sz_addr).await;
    let reason = termination(
        consumer.ask(&p.sz_peer, &agreement, "someone-else").await,
        "wrong-researcher",
    );
    assert!(reason.contains("not someone-else"), "{reason}");
    let entry = refusal_entry(&p, "wrong-researcher.jsonl");
    assert_eq!(entry["details"]["code"], "wrong-researcher", "{entry}");
    assert_eq!(entry["details"]["researcher"], "someone-else");
}
