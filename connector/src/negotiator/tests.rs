//! Two negotiators with real sled stores, audit logs and catalogs, their
//! messages carried by hand instead of by the swarm, so each test chooses
//! what arrives, twice, late or altered. The end-to-end path over libp2p is
//! tested with node processes in `tests/e2e/negotiation.rs`.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::SystemTime;

use bayspace_contracts::classification::DataLevel;
use bayspace_contracts::compliance::Blocker;
use bayspace_contracts::descriptor::{ApprovalMode, DatasetId, Institution, PublicKey};
use bayspace_contracts::negotiation::{Role, State};
use bayspace_contracts::policy::RegionSet;
use libp2p::PeerId;
use time::OffsetDateTime;

use super::model::Received;
use super::*;
use crate::admission::MembershipAdmission;
use crate::audit::{AuditEvent, AuditLog};
use crate::catalog::{Catalog, NewDataset};
use crate::identity::{AuthorityKey, MemberRole, MembershipBody, MembershipCredential, NodeKey};
use crate::ledger::LedgerStore;
use crate::p2p::{self, Admission, P2pConfig};
use crate::store::SledStore;

pub(crate) struct Side {
    pub(crate) n: Arc<Negotiator>,
    pub(crate) peer: PeerId,
    pub(crate) audit: Arc<AuditLog>,
    pub(crate) catalog: Arc<Catalog>,
    pub(crate) admission: Arc<MembershipAdmission>,
    pub(crate) key: Arc<NodeKey>,
    pub(crate) me: Institution,
    /// What [`Side::restart`] opens again.
    store: Arc<dyn Store>,
    store_path: Option<std::path::PathBuf>,
    own: MembershipCredential,
    other: (PeerId, String, MembershipCredential),
    anchor: ed25519_dalek::VerifyingKey,
    settings: Settings,
    p2p: tokio::task::JoinHandle<()>,
}

impl Side {
    /// Stop everything of this side and open it again from its store, as a
    /// node restarting does: a store opened at a path is closed and opened
    /// again from disk.
    async fn restart(self) -> Side {
        let Side {
            n,
            audit,
            catalog,
            admission,
            key,
            store,
            store_path,
            own,
            other,
            anchor,
            settings,
            p2p,
            ..
        } = self;
        p2p.abort();
        let _ = p2p.await;
        // Every holder of the store goes, so that sled lets it open again.
        drop((n, audit, catalog, admission));
        let store: Arc<dyn Store> = match &store_path {
            Some(path) => {
                drop(store);
                Arc::new(SledStore::open(path).unwrap())
            }
            None => store,
        };
        let other = (&other.0, other.1.as_str(), &other.2);
        side_on(
            store,
            store_path.clone(),
            key,
            &own,
            other,
            anchor,
            settings,
        )
    }
}

/// A provider in Shenzhen (`fd00:5a::/48`) and a consumer in Hong Kong
/// (`fd00:852::/48`), each admitting the other.
pub(crate) struct Pair {
    pub(crate) provider: Side,
    pub(crate) consumer: Side,
    pub(crate) _dir: tempfile::TempDir,
}

fn membership(
    anchor: &AuthorityKey,
    serial: u64,
    key: &NodeKey,
    institution: &str,
    region: &str,
    prefix: &str,
) -> MembershipCredential {
    let now = OffsetDateTime::now_utc();
    MembershipCredential::sign(
        MembershipBody {
            serial,
            institution: institution.into(),
            region: region.parse().unwrap(),
            peer_id: key.peer_id(),
            prefixes: vec![prefix.parse().unwrap()],
            roles: BTreeSet::from([MemberRole::Provider, MemberRole::Consumer]),
            not_before: crate::identity::timestamp::whole_seconds(now - time::Duration::hours(1)),
            not_after: crate::identity::timestamp::whole_seconds(now + time::Duration::days(30)),
        },
        anchor.signing_key(),
    )
    .unwrap()
}

fn side(
    key: NodeKey,
    own: &MembershipCredential,
    other: (&PeerId, &str, &MembershipCredential),
    anchor: &AuthorityKey,
    settings: Settings,
) -> Side {
    let store: Arc<dyn Store> = Arc::new(SledStore::temporary().unwrap());
    side_on(
        store,
        None,
        Arc::new(key),
        own,
        other,
        anchor.verifying_key(),
        settings,
    )
}

fn side_on(
    store: Arc<dyn Store>,
    store_path: Option<std::path::PathBuf>,
    key: Arc<NodeKey>,
    own: &MembershipCredential,
    other: (&PeerId, &str, &MembershipCredential),
    anchor: ed25519_dalek::VerifyingKey,
    settings: Settings,
) -> Side {
    let admission = Arc::new(MembershipAdmission::open(own, vec![anchor], store.clone()).unwrap());
    let addr: IpAddr = other.1.parse().unwrap();
    admission
        .check(
            other.0,
            addr,
            other.2.to_json().as_bytes(),
            SystemTime::now(),
        )
        .unwrap();
    let audit = Arc::new(
        AuditLog::open(
            store.clone(),
            key.signing_key().clone(),
            NonZeroU64::new(64).unwrap(),
        )
        .unwrap(),
    );
    let catalog = Arc::new(Catalog::open(store.clone()).unwrap());
    let ledger = Arc::new(LedgerStore::open(store.clone()).unwrap());
    let (client, _events, task) = p2p::spawn(
        key.libp2p_keypair(),
        admission.clone(),
        P2pConfig::default(),
    )
    .unwrap();
    let body = own.body();
    let me = Institution {
        name: body.institution.clone(),
        region: body.region,
        peer_id: key.peer_id().to_string(),
        key: PublicKey::from(&key.verifying_key()),
    };
    let n = Negotiator::open(Deps {
        store: store.clone(),
        audit: audit.clone(),
        catalog: catalog.clone(),
        admission: admission.clone(),
        ledger,
        key: key.clone(),
        me: me.clone(),
        client,
        settings: settings.clone(),
    })
    .unwrap();
    Side {
        n,
        peer: key.peer_id(),
        audit,
        catalog,
        admission,
        key,
        me,
        store,
        store_path,
        own: own.clone(),
        other: (*other.0, other.1.to_owned(), other.2.clone()),
        anchor,
        settings,
        p2p: task,
    }
}

pub(crate) fn pair() -> Pair {
    pair_with(Settings::default())
}

/// [`pair`], the provider running with `settings`.
pub(crate) fn pair_with(settings: Settings) -> Pair {
    let dir = tempfile::tempdir().unwrap();
    let anchor = AuthorityKey::init(dir.path(), None).unwrap();
    let pk = NodeKey::generate().unwrap();
    let ck = NodeKey::generate().unwrap();
    let pc = membership(
        &anchor,
        1,
        &pk,
        "Shenzhen University",
        "mainland:shenzhen",
        "fd00:5a::/48",
    );
    let cc = membership(
        &anchor,
        2,
        &ck,
        "University of Hong Kong",
        "hk",
        "fd00:852::/48",
    );
    let (pp, cp) = (pk.peer_id(), ck.peer_id());
    Pair {
        provider: side(pk, &pc, (&cp, "fd00:852::1", &cc), &anchor, settings),
        consumer: side(
            ck,
            &cc,
            (&pp, "fd00:5a::1", &pc),
            &anchor,
            Settings::default(),
        ),
        _dir: dir,
    }
}

/// Publish on the provider, copy the descriptor into the consumer's catalog.
pub(crate) fn publish(
    p: &Pair,
    personal: u64,
    approval: ApprovalMode,
    regions: &[&str],
) -> DatasetId {
    publish_with(p, personal, approval, regions, |_| {})
}

/// [`publish`], with `terms` changing the dataset first.
pub(crate) fn publish_with(
    p: &Pair,
    personal: u64,
    approval: ApprovalMode,
    regions: &[&str],
    terms: impl FnOnce(&mut NewDataset),
) -> DatasetId {
    let file = p
        ._dir
        .path()
        .join(format!("data-{personal}-{approval:?}.csv"));
    std::fs::write(&file, b"id,value\n1,2\n").unwrap();
    let now = OffsetDateTime::now_utc();
    let regions: Vec<String> = regions.iter().map(|s| s.to_string()).collect();
    let mut new = NewDataset {
        path: file,
        title: "Cohort".into(),
        description: "A cohort".into(),
        keywords: vec![],
        region: None,
        level: DataLevel::General,
        personal_individuals: personal,
        sensitive_individuals: 0,
        categories: vec![],
        collected_abroad: false,
        purposes: vec!["academic-research".parse().unwrap()],
        recipient_regions: RegionSet::from_args(&regions).unwrap(),
        approval,
        valid_days: None,
        valid_until: None,
        use_limit: None,
        delete_by: None,
        replaces: None,
    };
    terms(&mut new);
    let signed = p
        .provider
        .catalog
        .publish(new, &p.provider.key, p.provider.me.clone(), now, rand16())
        .unwrap();
    p.consumer
        .catalog
        .ingest(signed.clone(), |_| true, now)
        .unwrap();
    signed.descriptor.id
}

fn rand16() -> [u8; 16] {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).unwrap();
    b
}

pub(crate) fn request(purpose: &str, dataset: &DatasetId) -> NewRequest {
    NewRequest {
        dataset: dataset.clone(),
        offer: None,
        purpose: purpose.parse().unwrap(),
        requester: Requester {
            id: "r-1".into(),
            name: "Dr Chan".into(),
            orcid: None,
        },
        as_admin: false,
    }
}

/// The consumer's researcher asks for `ds` for academic research, and the
/// exchange runs until it rests.
pub(crate) async fn ask(p: &Pair, ds: &DatasetId) -> NegotiationRecord {
    let r = p
        .consumer
        .n
        .request(request("academic-research", ds))
        .await
        .unwrap();
    pump(&p.consumer, &p.provider);
    r
}

/// The agreement `s` holds for negotiation `id`.
pub(crate) fn agreement_of(
    s: &Side,
    id: &bayspace_contracts::agreement::NegotiationId,
) -> bayspace_contracts::agreement::AgreementId {
    s.n.get(id)
        .unwrap()
        .unwrap()
        .agreement_id
        .expect("an agreement was signed")
}

/// The single outbox entry of `from`, as (key, message).
fn outbox_of(from: &Side) -> Vec<(String, Message)> {
    from.n
        .outbox_entries()
        .unwrap()
        .into_iter()
        .map(|(k, e)| (k, e.message))
        .collect()
}

/// Carry `from`'s outbox entry to `to` and the answer back, until the
/// exchange rests. Returns how many round trips it took.
pub(crate) fn pump(from: &Side, to: &Side) -> usize {
    let mut trips = 0;
    let (mut a, mut b) = (from, to);
    loop {
        let mut entries = outbox_of(a);
        if entries.is_empty() {
            std::mem::swap(&mut a, &mut b);
            entries = outbox_of(a);
            if entries.is_empty() {
                return trips;
            }
        }
        let (key, sent) = entries.remove(0);
        trips += 1;
        assert!(trips < 20, "the exchange does not rest");
        let (received, _) = b.n.receive(&a.peer, sent.clone(), None).unwrap();
        let reply = match received {
            Received::Fresh(Some(m)) | Received::Duplicate(Some(m)) => m,
            Received::Fresh(None) | Received::Duplicate(None) => b.n.ack(sent.negotiation()),
            Received::Refused(reason) => Message::Refused { reason },
        };
        match reply {
            Message::Ack { .. } => a.n.remove_entry(&key).unwrap(),
            Message::Refused { reason } => a.n.refused(&key, &sent, &reason).unwrap(),
            other => {
                a.n.receive(&b.peer, other, Some((&key, &sent))).unwrap();
            }
        }
    }
}

/// The reason of a refusal; anything else fails the test.
fn refusal(got: Received) -> String {
    match got {
        Received::Refused(reason) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn state(s: &Side, id: &bayspace_contracts::agreement::NegotiationId) -> State {
    s.n.get(id).unwrap().unwrap().state
}

pub(crate) fn events(s: &Side) -> Vec<AuditEvent> {
    let mut out = Vec::new();
    s.audit.export(&mut out).unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| serde_json::from_value(v.get("event")?.clone()).ok())
        .collect()
}

#[tokio::test]
async fn auto_offer_without_blockers_finalizes_on_both_sides() {
    let p = pair();
    // No personal information: no blockers on any route.
    let ds = publish(&p, 0, ApprovalMode::Auto, &["hk"]);
    let r = p
        .consumer
        .n
        .request(request("academic-research", &ds))
        .await
        .unwrap();
    assert_eq!(
        r.state,
        State::Requested,
        "the peer is unreachable: still REQUESTED"
    );
    assert_eq!(r.role, Role::Consumer);
    pump(&p.consumer, &p.provider);
    assert_eq!(state(&p.consumer, &r.id), State::Finalized);
    assert_eq!(state(&p.provider, &r.id), State::Finalized);
    assert!(outbox_of(&p.consumer).is_empty() && outbox_of(&p.provider).is_empty());
    let c = p.consumer.n.get(&r.id).unwrap().unwrap();
    let a = p
        .consumer
        .n
        .agreement(c.agreement_id.as_ref().unwrap())
        .unwrap()
        .unwrap();
    a.signed
        .verify(Some(&p.provider.me.key), Some(&p.consumer.me.key))
        .unwrap();
    let on_provider = p.provider.n.agreement(a.id()).unwrap().unwrap();
    assert_eq!(
        on_provider.signed, a.signed,
        "both sides store the same agreement"
    );
    let pe = events(&p.provider);
    for e in [
        AuditEvent::ContractRequested,
        AuditEvent::Assessment,
        AuditEvent::Approval,
        AuditEvent::Agreement,
    ] {
        assert!(pe.contains(&e), "provider audit lacks {e:?}: {pe:?}");
    }
    assert!(events(&p.consumer).contains(&AuditEvent::Agreement));
}

#[tokio::test]
async fn manual_approval_waits_for_records_then_finalizes() {
    let p = pair();
    let ds = publish(&p, 150_000, ApprovalMode::Manual, &["hk"]);
    let r = p
        .consumer
        .n
        .request(request("academic-research", &ds))
        .await
        .unwrap();
    pump(&p.consumer, &p.provider);
    assert_eq!(state(&p.provider, &r.id), State::Requested);
    let pending = p.provider.n.pending().unwrap();
    assert_eq!(pending.len(), 1);
    let a = pending[0].assessment.as_ref().unwrap();
    assert_eq!(a.route.to_string(), "gba-standard-contract");
    assert!(a.blockers.contains(&Blocker::Pipia), "{:?}", a.blockers);

    let err = p.provider.n.approve(&r.id, None).await.unwrap_err();
    assert!(matches!(err, NegotiatorError::Blocked { .. }), "{err}");
    assert!(err.to_string().contains("pipia"), "{err}");
    assert_eq!(
        state(&p.provider, &r.id),
        State::Requested,
        "nothing changed"
    );

    let update = RecordsUpdate {
        pipia: Some(true),
        consent: Some(true),
        ..Default::default()
    };
    let (records, touched) = p.provider.n.set_records(&ds, update).await.unwrap();
    assert!(records.records.pipia);
    assert_eq!(touched.len(), 1, "the pending request was re-assessed");
    assert!(touched[0].assessment.as_ref().unwrap().allowed_now);
    assert_eq!(
        touched[0].state,
        State::Requested,
        "a manual offer still waits"
    );

    let approved = p
        .provider
        .n
        .approve(&r.id, Some("PIPIA-2026-7 on file".into()))
        .await
        .unwrap();
    assert_eq!(approved.state, State::Agreed);
    pump(&p.provider, &p.consumer);
    assert_eq!(state(&p.provider, &r.id), State::Finalized);
    assert_eq!(state(&p.consumer, &r.id), State::Finalized);
}

/// Today's GBA civil date plus `days`.
pub(crate) fn gba_today_plus(days: i64) -> time::Date {
    OffsetDateTime::now_utc()
        .to_offset(bayspace_contracts::region::GBA_UTC_OFFSET)
        .date()
        + time::Duration::days(days)
}

/// PIPIA, consent and a certificate valid until `until`.
pub(crate) fn certified(until: time::Date) -> RecordsUpdate {
    RecordsUpdate {
        pipia: Some(true),
        consent: Some(true),
        certification_reference: Some("CQC-PI-2026-0042".into()),
        certification_valid_until: Some(Some(until)),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_certificate_on_record_moves_a_pending_request_to_certification() {
    let p = pair();
    let ds = publish(&p, 150_000, ApprovalMode::Manual, &["hk"]);
    let r = ask(&p, &ds).await;
    let pending = &p.provider.n.pending().unwrap()[0];
    assert_eq!(
        pending.assessment.as_ref().unwrap().route.to_string(),
        "gba-standard-contract"
    );
    assert_eq!(pending.certificate, None);

    let until = gba_today_plus(400);
    let (records, touched) = p
        .provider
        .n
        .set_records(&ds, certified(until))
        .await
        .unwrap();
    assert_eq!(
        records.certification_reference.as_deref(),
        Some("CQC-PI-2026-0042")
    );
    assert_eq!(records.records.pi_certification_valid_until, Some(until));
    assert_eq!(touched.len(), 1, "the pending request was re-assessed");
    let a = touched[0].assessment.as_ref().unwrap();
    assert_eq!(
        a.route,
        bayspace_contracts::compliance::Route::Certification
    );
    assert!(a.allowed_now, "{:?}", a.blockers);
    let cert = touched[0].certificate.clone().unwrap();
    assert_eq!(
        (cert.reference.as_str(), cert.valid_until),
        ("CQC-PI-2026-0042", until)
    );

    p.provider.n.approve(&r.id, None).await.unwrap();
    pump(&p.provider, &p.consumer);
    assert_eq!(state(&p.consumer, &r.id), State::Finalized);
    for side in [&p.provider, &p.consumer] {
        let id = agreement_of(side, &r.id);
        let ag = side.n.agreement(&id).unwrap().unwrap().signed.agreement;
        assert_eq!(
            ag.route,
            bayspace_contracts::compliance::Route::Certification
        );
        assert_eq!(ag.certificate.as_ref(), Some(&cert));
        assert!(
            ag.obligations
                .contains(&bayspace_contracts::compliance::Obligation::CertificationRenewal)
        );
        assert_eq!(
            side.n.get(&r.id).unwrap().unwrap().certificate.as_ref(),
            Some(&cert)
        );
    }
    // The filing export owes no contract filing but the renewal.
    let id = agreement_of(&p.provider, &r.id);
    let due = p.provider.n.filing(&id, &Default::default()).unwrap();
    let bayspace_contracts::filing::FilingDue::Certification(renewal) = due else {
        panic!("expected the certificate's renewal, got {due:?}");
    };
    assert_eq!(renewal.certificate, cert);
    assert_eq!(
        renewal.reapply_by,
        bayspace_contracts::filing::months_before(until, 6).unwrap()
    );
}

#[tokio::test]
async fn an_expired_certificate_leaves_the_route_alone() {
    let p = pair();
    let ds = publish(&p, 150_000, ApprovalMode::Manual, &["hk"]);
    ask(&p, &ds).await;
    let (_, touched) = p
        .provider
        .n
        .set_records(&ds, certified(gba_today_plus(-1)))
        .await
        .unwrap();
    let a = touched[0].assessment.as_ref().unwrap();
    assert_eq!(a.route.to_string(), "gba-standard-contract");
    assert_eq!(touched[0].certificate, None);
    // Valid through today.
    let (_, touched) = p
        .provider
        .n
        .set_records(&ds, certified(gba_today_plus(0)))
        .await
        .unwrap();
    assert_eq!(
        touched[0].assessment.as_ref().unwrap().route.to_string(),
        "certification"
    );
}

#[tokio::test]
async fn a_certificate_needs_its_reference_and_its_date() {
    let p = pair();
    let ds = publish(&p, 150_000, ApprovalMode::Manual, &["hk"]);
    let date_only = RecordsUpdate {
        certification_valid_until: Some(Some(gba_today_plus(30))),
        ..Default::default()
    };
    let e = p.provider.n.set_records(&ds, date_only).await.unwrap_err();
    assert!(
        matches!(
            e,
            NegotiatorError::BadInput {
                field: "certification_reference",
                ..
            }
        ),
        "{e}"
    );
    let reference_only = RecordsUpdate {
        certification_reference: Some("CQC-1".into()),
        ..Default::default()
    };
    let e = p
        .provider
        .n
        .set_records(&ds, reference_only)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            NegotiatorError::BadInput {
                field: "certification_valid_until",
                ..
            }
        ),
        "{e}"
    );
    let blank = RecordsUpdate {
        certification_reference: Some(" ".into()),
        certification_valid_until: Some(Some(gba_today_plus(30))),
        ..Default::default()
    };
    let e = p.provider.n.set_records(&ds, blank).await.unwrap_err();
    assert!(e.to_string().starts_with("certification_reference:"), "{e}");
    let two_lines = RecordsUpdate {
        certification_reference: Some("CQC-1\nCQC-2".into()),
        certification_valid_until: Some(Some(gba_today_plus(30))),
        ..Default::default()
    };
    let e = p.provider.n.set_records(&ds, two_lines).await.unwrap_err();
    assert!(e.to_string().contains("control character"), "{e}");
    assert_eq!(
        p.provider.n.records(&ds).unwrap(),
        DatasetRecords::default(),
        "nothing stored"
    );

    p.provider
        .n
        .set_records(&ds, certified(gba_today_plus(30)))
        .await
        .unwrap();
    let clear = RecordsUpdate {
        certification_valid_until: Some(None),
        ..Default::default()
    };
    let (records, _) = p.provider.n.set_records(&ds, clear).await.unwrap();
    assert_eq!(records.certificate(), None);
    assert_eq!(
        records.certification_reference, None,
        "cleared with its date"
    );
}

#[test]
fn records_stored_before_certificates_still_load() {
    let old = r#"{"records":{"pipia":true,"consent":true,"security_assessment_valid_until":null,
                 "macao_authorisation":false,"hgr_filing":false,"hgr_security_review":false},
                 "pipia_reference":"PIPIA-1","updated_at":"2026-03-01T08:00:00Z"}"#;
    let r: DatasetRecords = serde_json::from_str(old).unwrap();
    assert!(r.records.pipia);
    assert_eq!(r.certificate(), None);
    assert_eq!(r.certification_reference, None);
}

#[tokio::test]
async fn a_rejection_reaches_the_consumer_with_its_reason() {
    let p = pair();
    let ds = publish(&p, 0, ApprovalMode::Manual, &["hk"]);
    let r = p
        .consumer
        .n
        .request(request("academic-research", &ds))
        .await
        .unwrap();
    pump(&p.consumer, &p.provider);
    p.provider
        .n
        .reject(&r.id, "the cohort is being re-consented".into())
        .await
        .unwrap();
    pump(&p.provider, &p.consumer);
    let c = p.consumer.n.get(&r.id).unwrap().unwrap();
    assert_eq!(c.state, State::Terminated);
    assert!(c.reasons[0].contains("re-consented"), "{:?}", c.reasons);
    assert!(p.provider.n.pending().unwrap().is_empty());
}

#[tokio::test]
async fn policy_refusals_terminate_at_once_with_every_reason() {
    let p = pair();
    let ds = publish(
        &p,
        0,
        ApprovalMode::Manual,
        &["mainland:guangzhou", "macao"],
    );
    let r = p
        .consumer
        .n
        .request(request("marketing", &ds))
        .await
        .unwrap();
    pump(&p.consumer, &p.provider);
    let c = p.consumer.n.get(&r.id).unwrap().unwrap();
    assert_eq!(c.state, State::Terminated);
    assert_eq!(state(&p.provider, &r.id), State::Terminated);
    let all = c.reasons.join(" | ");
    assert!(all.contains("marketing"), "{all}");
    assert!(
        all.contains("recipients in `hk` are not allowed"),
        "the recipient region is named too: {all}"
    );
    assert!(events(&p.provider).contains(&AuditEvent::Rejection));
}

#[tokio::test]
async fn duplicates_change_nothing_and_conflicts_are_refused() {
    let p = pair();
    let ds = publish(&p, 0, ApprovalMode::Manual, &["hk"]);
    let r = p
        .consumer
        .n
        .request(request("academic-research", &ds))
        .await
        .unwrap();
    let (_, sent) = outbox_of(&p.consumer).remove(0);
    let first = p
        .provider
        .n
        .receive(&p.consumer.peer, sent.clone(), None)
        .unwrap();
    assert!(matches!(first.0, Received::Fresh(None)));
    let before = p.provider.n.get(&r.id).unwrap().unwrap();
    let again = p
        .provider
        .n
        .receive(&p.consumer.peer, sent.clone(), None)
        .unwrap();
    assert!(
        matches!(again.0, Received::Duplicate(None)),
        "{:?}",
        again.0
    );
    assert_eq!(
        p.provider.n.get(&r.id).unwrap().unwrap(),
        before,
        "a duplicate changes nothing"
    );
    assert_eq!(p.provider.n.pending().unwrap().len(), 1);

    // The same id with other content, or from another peer.
    let Message::ContractRequest(mut other) = sent.clone() else {
        panic!("not a request")
    };
    other.purpose = "public-health".parse().unwrap();
    let conflict = p
        .provider
        .n
        .receive(&p.consumer.peer, Message::ContractRequest(other), None)
        .unwrap();
    assert_eq!(
        refusal(conflict.0),
        format!(
            "a different contract-request for negotiation {} was received before",
            r.id
        )
    );
    let stranger = PeerId::random();
    let hijack = p.provider.n.receive(&stranger, sent, None).unwrap();
    assert_eq!(
        refusal(hijack.0),
        format!("negotiation {} is not one with {stranger}", r.id)
    );
    assert_eq!(p.provider.n.get(&r.id).unwrap().unwrap(), before);

    // Approve; the agreement arrives twice: the second gets the same
    // verification back.
    p.provider.n.approve(&r.id, None).await.unwrap();
    let (_, agreement) = outbox_of(&p.provider).remove(0);
    let v1 = p
        .consumer
        .n
        .receive(&p.provider.peer, agreement.clone(), None)
        .unwrap();
    let v2 = p
        .consumer
        .n
        .receive(&p.provider.peer, agreement, None)
        .unwrap();
    let (Received::Fresh(Some(a)), Received::Duplicate(Some(b))) = (v1.0, v2.0) else {
        panic!("expected a fresh then a duplicate answer");
    };
    assert_eq!(a, b);
    assert_eq!(state(&p.consumer, &r.id), State::Verified);
}

#[tokio::test]
async fn out_of_order_messages_are_refused_without_a_change() {
    let p = pair();
    let ds = publish(&p, 0, ApprovalMode::Manual, &["hk"]);
    let r = p
        .consumer
        .n
        .request(request("academic-research", &ds))
        .await
        .unwrap();
    pump(&p.consumer, &p.provider);
    // FINALIZED before any agreement.
    let early = Message::Finalized {
        negotiation: r.id.clone(),
    };
    let got = p.consumer.n.receive(&p.provider.peer, early, None).unwrap();
    let reason = refusal(got.0);
    assert!(
        reason.starts_with(&format!("negotiation {}: ", r.id)) && reason.contains("REQUESTED"),
        "{reason}"
    );
    assert_eq!(state(&p.consumer, &r.id), State::Requested);
    // A verification sent to the consumer comes from the wrong side.
    p.provider.n.approve(&r.id, None).await.unwrap();
    let (_, Message::ContractAgreement { agreement, .. }) = outbox_of(&p.provider).remove(0) else {
        panic!("expected the agreement in the outbox")
    };
    let wrong = Message::AgreementVerification {
        negotiation: r.id.clone(),
        agreement,
    };
    let got = p.consumer.n.receive(&p.provider.peer, wrong, None).unwrap();
    assert_eq!(
        refusal(got.0),
        format!(
            "ContractAgreementVerificationMessage cannot come from the consumer of negotiation {}",
            r.id
        )
    );
    assert_eq!(state(&p.consumer, &r.id), State::Requested);
    // The real exchange still completes.
    pump(&p.provider, &p.consumer);
    assert_eq!(state(&p.consumer, &r.id), State::Finalized);
}

#[tokio::test]
async fn a_tampered_agreement_signature_is_refused_and_both_terminate() {
    let p = pair();
    let ds = publish(&p, 0, ApprovalMode::Manual, &["hk"]);
    let r = p
        .consumer
        .n
        .request(request("academic-research", &ds))
        .await
        .unwrap();
    pump(&p.consumer, &p.provider);
    p.provider.n.approve(&r.id, None).await.unwrap();
    let (key, sent) = outbox_of(&p.provider).remove(0);
    let Message::ContractAgreement {
        negotiation,
        mut agreement,
    } = sent.clone()
    else {
        panic!("expected the agreement")
    };
    agreement.provider_signature.0[10] ^= 1;
    let forged = Message::ContractAgreement {
        negotiation,
        agreement,
    };
    let (got, _) = p
        .consumer
        .n
        .receive(&p.provider.peer, forged, None)
        .unwrap();
    let Received::Fresh(Some(reply @ Message::Termination { .. })) = got else {
        panic!("expected a termination, got {got:?}")
    };
    let c = p.consumer.n.get(&r.id).unwrap().unwrap();
    assert_eq!(c.state, State::Terminated);
    assert!(c.reasons[0].contains("signature"), "{:?}", c.reasons);
    assert!(c.agreement_id.is_none(), "no agreement is kept");
    assert!(p.consumer.n.agreements().unwrap().is_empty());
    p.provider
        .n
        .receive(&p.consumer.peer, reply, Some((&key, &sent)))
        .unwrap();
    assert_eq!(state(&p.provider, &r.id), State::Terminated);
}

#[tokio::test]
async fn revocation_reaches_the_consumer() {
    let p = pair();
    let ds = publish(&p, 0, ApprovalMode::Auto, &["hk"]);
    let r = p
        .consumer
        .n
        .request(request("academic-research", &ds))
        .await
        .unwrap();
    pump(&p.consumer, &p.provider);
    let id = agreement_of(&p.provider, &r.id);
    let err = p.consumer.n.revoke(&id, "no".into()).await.unwrap_err();
    assert!(matches!(err, NegotiatorError::WrongRole { .. }), "{err}");
    p.provider
        .n
        .revoke(&id, "consent withdrawn".into())
        .await
        .unwrap();
    assert!(matches!(
        p.provider.n.revoke(&id, "again".into()).await.unwrap_err(),
        NegotiatorError::AlreadyRevoked(_)
    ));
    pump(&p.provider, &p.consumer);
    let on_consumer = p.consumer.n.agreement(&id).unwrap().unwrap();
    assert_eq!(on_consumer.revoked.unwrap().reason, "consent withdrawn");
    assert!(events(&p.consumer).contains(&AuditEvent::AgreementRevoked));
}

#[tokio::test]
async fn a_restarted_consumer_still_holds_its_outbox() {
    // The outbox is in the store: a negotiator opened again on the same
    // store, after the store itself was closed and opened again from disk,
    // finds the undelivered request and delivers it.
    let mut p = pair();
    let dir = p._dir.path().join("consumer-store");
    p.consumer = Side {
        store: Arc::new(SledStore::open(&dir).unwrap()),
        store_path: Some(dir),
        ..p.consumer
    }
    .restart()
    .await;
    let ds = publish(&p, 0, ApprovalMode::Auto, &["hk"]);
    let r = p
        .consumer
        .n
        .request(request("academic-research", &ds))
        .await
        .unwrap();
    let before = outbox_of(&p.consumer);
    assert_eq!(before.len(), 1);
    assert!(before[0].0.starts_with(r.id.as_str()));
    assert!(matches!(before[0].1, Message::ContractRequest(_)));

    p.consumer = p.consumer.restart().await;
    assert_eq!(
        outbox_of(&p.consumer),
        before,
        "the reopened store holds the same entry"
    );
    assert_eq!(state(&p.consumer, &r.id), State::Requested);
    pump(&p.consumer, &p.provider);
    assert_eq!(state(&p.consumer, &r.id), State::Finalized);
    assert_eq!(state(&p.provider, &r.id), State::Finalized);
    assert!(outbox_of(&p.consumer).is_empty());
}

#[tokio::test]
async fn a_provider_cannot_overwrite_an_agreement_by_reusing_its_id() {
    // Dr Chan's agreement is in force on the consumer.
    let p = pair();
    let first = publish(&p, 0, ApprovalMode::Auto, &["hk"]);
    let r1 = ask(&p, &first).await;
    let kept = agreement_of(&p.consumer, &r1.id);
    let before = p.consumer.n.agreement(&kept).unwrap().unwrap();

    // Another researcher asks for another dataset; the provider signs an
    // agreement for it under the id of Dr Chan's.
    let second = publish_with(&p, 0, ApprovalMode::Manual, &["hk"], |d| {
        d.title = "Another".into()
    });
    let mut req = request("academic-research", &second);
    req.requester.id = "r-2".into();
    let r2 = p.consumer.n.request(req).await.unwrap();
    pump(&p.consumer, &p.provider);
    p.provider.n.approve(&r2.id, None).await.unwrap();
    let (_, sent) = outbox_of(&p.provider).remove(0);
    let Message::ContractAgreement {
        negotiation,
        agreement,
    } = sent
    else {
        panic!("expected the agreement")
    };
    let mut forged = agreement.agreement.clone();
    forged.id = kept.clone();
    let forged = bayspace_contracts::agreement::SignedAgreement::sign_as_provider(
        forged,
        p.provider.key.signing_key(),
    )
    .unwrap();
    let (got, _) = p
        .consumer
        .n
        .receive(
            &p.provider.peer,
            Message::ContractAgreement {
                negotiation,
                agreement: Box::new(forged),
            },
            None,
        )
        .unwrap();

    assert_eq!(
        p.consumer.n.agreement(&kept).unwrap().unwrap(),
        before,
        "the consumer's agreement was replaced"
    );
    let Received::Fresh(Some(Message::Termination { reasons, .. })) = got else {
        panic!("expected a termination, got {got:?}")
    };
    assert!(
        reasons[0].contains(&format!("agreement id {kept} is already in use")),
        "{reasons:?}"
    );
    let c = p.consumer.n.get(&r2.id).unwrap().unwrap();
    assert_eq!(c.state, State::Terminated);
    assert!(c.agreement_id.is_none());
}

#[tokio::test]
async fn a_member_cannot_queue_more_requests_than_its_quota() {
    let p = pair_with(Settings {
        max_pending_per_peer: 3,
        ..Settings::default()
    });
    let ds = publish(&p, 0, ApprovalMode::Manual, &["hk"]);
    let mut asked = Vec::new();
    for _ in 0..5 {
        asked.push(ask(&p, &ds).await);
    }
    for r in &asked[..3] {
        assert_eq!(state(&p.provider, &r.id), State::Requested);
    }
    for r in &asked[3..] {
        assert!(p.provider.n.get(&r.id).unwrap().is_none(), "nothing stored");
        let c = p.consumer.n.get(&r.id).unwrap().unwrap();
        assert_eq!(c.state, State::Terminated);
        assert!(
            c.reasons
                .iter()
                .any(|m| m.contains("3 requests waiting for approval")),
            "{:?}",
            c.reasons
        );
    }
    assert_eq!(p.provider.n.pending().unwrap().len(), 3);
    let quota_entries = events(&p.provider)
        .iter()
        .filter(|e| **e == AuditEvent::Rejection)
        .count();
    assert_eq!(quota_entries, 2, "each refusal is audited");

    // One decided, one more may wait.
    p.provider
        .n
        .reject(&asked[0].id, "no".into())
        .await
        .unwrap();
    let r = ask(&p, &ds).await;
    assert_eq!(state(&p.provider, &r.id), State::Requested);
}

/// The single outbox entry of `s`, with its schedule.
fn only_entry(s: &Side) -> (String, outbox::Outgoing) {
    let mut entries = s.n.outbox_entries().unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    entries.remove(0)
}

#[tokio::test]
async fn a_peer_admitted_again_gets_its_messages_at_once_with_the_back_off_forgotten() {
    // The swarms of the pair are not connected: every attempt fails as
    // while the provider was down, and the back-off grows.
    let p = pair();
    let ds = publish(&p, 0, ApprovalMode::Auto, &["hk"]);
    p.consumer
        .n
        .request(request("academic-research", &ds))
        .await
        .unwrap();
    let (key, _) = only_entry(&p.consumer);
    for _ in 0..8 {
        p.consumer.n.deliver(key.clone()).await;
    }
    let (_, before) = only_entry(&p.consumer);
    assert_eq!(before.attempts, 9);
    let now = OffsetDateTime::now_utc();
    assert!(before.next_at > now + time::Duration::seconds(20));

    // The provider is back. Were the attempts kept, the first miss after
    // it (a request timing out on a connection that died with the old
    // process, a busy answer) would wait the full 30 s again: what made
    // the last negotiations settle minutes after a restart.
    p.consumer.n.peer_admitted(&p.provider.peer);
    let (_, after) = only_entry(&p.consumer);
    assert_eq!(after.attempts, 0, "the back-off is forgotten");
    assert!(after.next_at <= OffsetDateTime::now_utc(), "due at once");
    assert_eq!(after.message, before.message);

    // One more miss now waits the first delay, not the maximum.
    p.consumer.n.deliver(key.clone()).await;
    let (_, again) = only_entry(&p.consumer);
    assert_eq!(again.attempts, 1);
    assert!(again.next_at < OffsetDateTime::now_utc() + time::Duration::seconds(2));
}

#[tokio::test]
async fn a_message_held_back_by_the_bound_on_requests_in_flight_is_not_an_attempt() {
    let p = pair();
    let ds = publish(&p, 0, ApprovalMode::Auto, &["hk"]);
    p.consumer
        .n
        .request(request("academic-research", &ds))
        .await
        .unwrap();
    let (key, entry) = only_entry(&p.consumer);
    assert_eq!(
        entry.attempts, 1,
        "the first delivery failed: not connected"
    );
    for _ in 0..10 {
        let (_, e) = only_entry(&p.consumer);
        p.consumer.n.reschedule(&key, e, outbox::Miss::Throttled);
    }
    let (_, held) = only_entry(&p.consumer);
    assert_eq!(held.attempts, 1, "held back ten times, still one attempt");
    assert!(held.next_at < OffsetDateTime::now_utc() + time::Duration::seconds(1));

    p.consumer.n.reschedule(&key, held, outbox::Miss::Failed);
    assert_eq!(only_entry(&p.consumer).1.attempts, 2);
}
