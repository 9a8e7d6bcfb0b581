use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use bayspace_contracts::descriptor::DescriptorError;
use bayspace_contracts::dsp::DataService;
use time::macros::datetime;

use super::*;
use crate::identity::NodeKey;
use crate::store::SledStore;

const NOW: OffsetDateTime = datetime!(2026-03-01 09:00 +8);

struct Node {
    key: NodeKey,
    institution: Institution,
}

use bayspace_contracts::descriptor::{ApprovalMode, Institution};
use bayspace_contracts::policy::RegionSet;

fn node(seed: u8, name: &str, region: &str) -> Node {
    let key = NodeKey::from_seed([seed; 32]).unwrap();
    let institution = Institution {
        name: name.into(),
        region: region.parse().unwrap(),
        peer_id: key.peer_id().to_string(),
        key: PublicKey::from(&key.verifying_key()),
    };
    Node { key, institution }
}

fn catalog() -> Catalog {
    Catalog::open(Arc::new(SledStore::temporary().unwrap())).unwrap()
}

fn data_file(dir: &Path, content: &[u8]) -> PathBuf {
    let path = dir.join(format!("data-{}.csv", content.len()));
    std::fs::File::create(&path)
        .unwrap()
        .write_all(content)
        .unwrap();
    path
}

fn new_dataset(path: &Path, title: &str) -> NewDataset {
    NewDataset {
        path: path.to_owned(),
        title: title.into(),
        description: "Anonymised records".into(),
        keywords: vec!["health".into()],
        region: None,
        level: DataLevel::General,
        personal_individuals: 0,
        sensitive_individuals: 0,
        categories: vec![],
        collected_abroad: false,
        purposes: vec!["academic-research".parse().unwrap()],
        recipient_regions: RegionSet::GbaOnly,
        approval: ApprovalMode::Manual,
        valid_days: Some(365),
        valid_until: None,
        use_limit: None,
        delete_by: None,
        replaces: None,
    }
}

fn publish(c: &Catalog, n: &Node, new: NewDataset, random: u8) -> SignedDescriptor {
    c.publish(new, &n.key, n.institution.clone(), NOW, [random; 16])
        .unwrap()
}

fn all(_: &str) -> bool {
    true
}

fn titles(page: &SearchPage) -> Vec<&str> {
    page.items
        .iter()
        .map(|s| s.descriptor.title.as_str())
        .collect()
}

fn text(t: &str) -> SearchQuery {
    SearchQuery {
        text: Some(t.into()),
        ..SearchQuery::default()
    }
}

#[test]
fn publish_records_the_file_and_search_finds_by_every_criterion() {
    let dir = tempfile::tempdir().unwrap();
    let file = data_file(dir.path(), b"a,b\n1,2\n");
    let a = node(1, "Shenzhen Bay Lab", "mainland:shenzhen");
    let b = node(2, "HKU Medicine", "hk");
    let ours = catalog();
    let theirs = catalog();

    let mut cohort = new_dataset(&file, "Diabetes cohort 2024");
    cohort.categories = vec!["health".parse().unwrap()];
    cohort.keywords = vec!["糖尿病".into(), "cohort".into()];
    let s1 = publish(&ours, &a, cohort, 1);
    let mut genome = new_dataset(&file, "Genome panel");
    genome.level = DataLevel::Important;
    genome.categories = vec!["genomic".parse().unwrap()];
    genome.region = Some("mainland:guangzhou".parse().unwrap());
    publish(&ours, &a, genome, 2);
    let remote = publish(&theirs, &b, new_dataset(&file, "Air quality HK"), 3);
    assert_eq!(
        ours.ingest(remote, all, NOW).unwrap(),
        IngestOutcome::Stored
    );
    assert_eq!(ours.len(), 3);

    let local = ours.local_file(&s1.descriptor.id).unwrap().unwrap();
    assert_eq!(local.path, file.canonicalize().unwrap());
    assert_eq!(local.size, 8);
    assert_eq!(local.content_hash, Digest::of(b"a,b\n1,2\n"));
    assert_eq!(s1.descriptor.content_hash, local.content_hash);
    assert_eq!(s1.descriptor.size, 8);
    assert_eq!(s1.descriptor.version, 1);
    s1.verify(Some(&a.institution.key)).unwrap();

    let search = |q: SearchQuery| {
        let mut t: Vec<String> = titles(&ours.search(&q).unwrap())
            .into_iter()
            .map(String::from)
            .collect();
        t.sort();
        t
    };
    assert_eq!(search(text("COHORT diab")), ["Diabetes cohort 2024"]);
    assert_eq!(search(text("糖尿")), ["Diabetes cohort 2024"]);
    assert_eq!(search(text("cohort genome")), Vec::<String>::new());
    assert_eq!(search(text("records")).len(), 3);
    let by = |p: &str| SearchQuery {
        publisher: Some(p.into()),
        ..SearchQuery::default()
    };
    assert_eq!(search(by("hku medicine")), ["Air quality HK"]);
    assert_eq!(search(by(&a.institution.peer_id)).len(), 2);
    assert_eq!(search(by("nobody")).len(), 0);
    let region = SearchQuery {
        region: Some("mainland:guangzhou".parse().unwrap()),
        ..SearchQuery::default()
    };
    assert_eq!(search(region), ["Genome panel"]);
    let hk = SearchQuery {
        region: Some("hk".parse().unwrap()),
        ..SearchQuery::default()
    };
    assert_eq!(search(hk), ["Air quality HK"]);
    let category = SearchQuery {
        category: Some("health".parse().unwrap()),
        ..SearchQuery::default()
    };
    assert_eq!(search(category), ["Diabetes cohort 2024"]);
    let level = SearchQuery {
        level: Some(DataLevel::Important),
        text: Some("panel".into()),
        ..SearchQuery::default()
    };
    assert_eq!(search(level), ["Genome panel"]);
}

#[test]
fn a_newer_version_supersedes_and_an_older_never_replaces() {
    let dir = tempfile::tempdir().unwrap();
    let file = data_file(dir.path(), b"v1");
    let b = node(2, "HKU", "hk");
    let theirs = catalog();
    let ours = catalog();
    let v1 = publish(&theirs, &b, new_dataset(&file, "First title"), 1);
    let mut again = new_dataset(&data_file(dir.path(), b"v2 data"), "Second title");
    again.replaces = Some(v1.descriptor.id.clone());
    let v2 = publish(&theirs, &b, again, 2);
    assert_eq!(v2.descriptor.id, v1.descriptor.id);
    assert_eq!(v2.descriptor.version, 2);
    assert_eq!(theirs.len(), 1);

    assert_eq!(
        ours.ingest(v1.clone(), all, NOW).unwrap(),
        IngestOutcome::Stored
    );
    assert_eq!(
        ours.ingest(v2.clone(), all, NOW).unwrap(),
        IngestOutcome::Stored
    );
    assert_eq!(
        ours.ingest(v2.clone(), all, NOW).unwrap(),
        IngestOutcome::Unchanged
    );
    assert_eq!(ours.ingest(v1, all, NOW).unwrap(), IngestOutcome::Stale);
    assert_eq!(ours.get(&v2.descriptor.id).unwrap(), Some(v2));
    assert_eq!(
        titles(&ours.search(&text("title")).unwrap()),
        ["Second title"]
    );

    // Only the publisher may re-publish or withdraw.
    let a = node(1, "Lab", "macao");
    let mut steal = new_dataset(&file, "Stolen");
    steal.replaces = Some(v1_id(&theirs));
    let e = ours
        .publish(steal, &a.key, a.institution.clone(), NOW, [9; 16])
        .unwrap_err();
    assert!(matches!(e, CatalogError::NotOurs { .. }), "{e}");
    let e = ours.withdraw(&v1_id(&theirs), &a.key, NOW).unwrap_err();
    assert!(matches!(e, CatalogError::NotOurs { .. }), "{e}");
}

fn v1_id(c: &Catalog) -> DatasetId {
    c.search(&SearchQuery::default()).unwrap().items[0]
        .descriptor
        .id
        .clone()
}

#[test]
fn withdrawn_datasets_are_hidden_but_still_synced() {
    let dir = tempfile::tempdir().unwrap();
    let file = data_file(dir.path(), b"x");
    let a = node(1, "Lab", "macao");
    let c = catalog();
    let s = publish(&c, &a, new_dataset(&file, "Going away"), 1);
    publish(&c, &a, new_dataset(&file, "Staying"), 2);
    let w = c.withdraw(&s.descriptor.id, &a.key, NOW).unwrap();
    assert!(w.descriptor.withdrawn && w.supersedes(&s));
    assert_eq!(c.withdraw(&s.descriptor.id, &a.key, NOW).unwrap(), w);
    assert_eq!(
        titles(&c.search(&SearchQuery::default()).unwrap()),
        ["Staying"]
    );
    assert_eq!(c.get(&s.descriptor.id).unwrap(), Some(w.clone()));
    assert_eq!(c.len(), 2);
    assert_eq!(c.page(None, 10).unwrap().items.len(), 2);
    let svc = DataService {
        id: "urn:bayspace:service:x".into(),
        endpoint_url: "/ip6/::1/tcp/4001".into(),
    };
    let dsp = c
        .export_dsp("urn:bayspace:catalog:x", "peer", &svc)
        .unwrap();
    let ds = dsp["dataset"].as_array().unwrap();
    assert_eq!(ds.len(), 1);
    assert_eq!(ds[0]["dct:title"], "Staying");

    // Another node learns of the withdrawal and hides the dataset too.
    let other = catalog();
    other.ingest(s, all, NOW).unwrap();
    other.ingest(w, all, NOW).unwrap();
    assert!(
        other
            .search(&SearchQuery::default())
            .unwrap()
            .items
            .is_empty()
    );
}

#[test]
fn forged_and_unadmitted_descriptors_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = data_file(dir.path(), b"x");
    let b = node(2, "HKU", "hk");
    let s = publish(&catalog(), &b, new_dataset(&file, "Real"), 1);
    let c = catalog();

    let mut tampered = s.clone();
    tampered.descriptor.title = "Fake".into();
    let e = c.ingest(tampered, all, NOW).unwrap_err();
    assert!(
        matches!(
            e,
            CatalogError::Descriptor(DescriptorError::Tampered { .. })
        ),
        "{e}"
    );

    let e = c.ingest(s.clone(), |_| false, NOW).unwrap_err();
    assert!(matches!(e, CatalogError::NotAdmitted { .. }), "{e}");
    let admitted = b.institution.peer_id.clone();
    let only_b = |p: &str| p == admitted;
    assert_eq!(
        c.ingest(s.clone(), only_b, NOW).unwrap(),
        IngestOutcome::Stored
    );

    // An outsider signing with its own key but naming an admitted peer id.
    let mallory = node(7, "Mallory", "hk");
    let mut d = s.descriptor.clone();
    d.publisher.key = mallory.institution.key;
    d.id = DatasetId::derive(&d.publisher.key, &d.name);
    let forged = SignedDescriptor::sign(d, mallory.key.signing_key()).unwrap();
    let e = c.ingest(forged, only_b, NOW).unwrap_err();
    assert!(matches!(e, CatalogError::PeerIdMismatch { .. }), "{e}");

    // Issued in the future.
    let mut d = s.descriptor.clone();
    d.version = 2;
    d.issued = NOW + Duration::hours(1);
    let future = SignedDescriptor::sign(d, b.key.signing_key()).unwrap();
    let e = c.ingest(future, all, NOW).unwrap_err();
    assert!(matches!(e, CatalogError::IssuedInFuture { .. }), "{e}");

    assert_eq!(c.len(), 1);
    assert_eq!(c.get(&s.descriptor.id).unwrap(), Some(s));
}

#[test]
fn ingest_bytes_names_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let file = data_file(dir.path(), b"x");
    let b = node(2, "HKU", "hk");
    let s = publish(&catalog(), &b, new_dataset(&file, "Real"), 1);
    let c = catalog();

    let e = c
        .ingest_bytes(&vec![b' '; MAX_DESCRIPTOR_BYTES + 1], all, NOW)
        .unwrap_err();
    assert!(matches!(e, CatalogError::TooLarge { .. }), "{e}");

    let mut v = serde_json::to_value(&s).unwrap();
    v["descriptor"]["version"] = "two".into();
    let e = c
        .ingest_bytes(&serde_json::to_vec(&v).unwrap(), all, NOW)
        .unwrap_err();
    match &e {
        CatalogError::Malformed { path, .. } => assert_eq!(path, "descriptor.version"),
        other => panic!("{other}"),
    }

    let mut bytes = encode(&s).unwrap();
    bytes.extend_from_slice(b" {}");
    let e = c.ingest_bytes(&bytes, all, NOW).unwrap_err();
    assert!(matches!(e, CatalogError::Malformed { .. }), "{e}");
    assert!(c.is_empty());

    let good = encode(&s).unwrap();
    assert_eq!(
        c.ingest_bytes(&good, all, NOW).unwrap(),
        IngestOutcome::Stored
    );
    assert!(dht_key(&s.descriptor.id).ends_with(s.descriptor.id.to_string().as_bytes()));
}

#[test]
fn bad_publications_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let a = node(1, "Lab", "macao");
    let c = catalog();
    let pub_ = |new: NewDataset| c.publish(new, &a.key, a.institution.clone(), NOW, [1; 16]);

    let e = pub_(new_dataset(&dir.path().join("missing.csv"), "T")).unwrap_err();
    assert!(matches!(e, CatalogError::File { .. }), "{e}");
    assert!(e.to_string().contains("missing.csv"), "{e}");
    let e = pub_(new_dataset(dir.path(), "T")).unwrap_err();
    assert!(matches!(e, CatalogError::NotAFile { .. }), "{e}");

    let file = data_file(dir.path(), b"x");
    let e = pub_(new_dataset(&file, "")).unwrap_err();
    assert!(e.to_string().contains("`title`"), "{e}");
    let mut bad = new_dataset(&file, "T");
    bad.valid_days = Some(0);
    assert!(matches!(pub_(bad).unwrap_err(), CatalogError::Policy(_)));
    let mut bad = new_dataset(&file, "T");
    bad.purposes.clear();
    assert!(matches!(pub_(bad).unwrap_err(), CatalogError::Policy(_)));
    let mut bad = new_dataset(&file, "T");
    bad.replaces = Some(DatasetId::derive(&a.institution.key, "nope"));
    assert!(matches!(
        pub_(bad).unwrap_err(),
        CatalogError::UnknownDataset(_)
    ));
    let other = node(2, "Other", "hk");
    let e = c
        .publish(
            new_dataset(&file, "T"),
            &a.key,
            other.institution,
            NOW,
            [1; 16],
        )
        .unwrap_err();
    assert!(
        matches!(e, CatalogError::PublisherMismatch { field: "key", .. }),
        "{e}"
    );

    assert!(c.is_empty());
    assert!(c.local_files.is_empty() && c.descriptors.is_empty());
}

#[test]
fn paging_covers_every_item_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = data_file(dir.path(), b"x");
    let a = node(1, "Lab", "macao");
    let c = catalog();
    let mut ids = BTreeSet::new();
    for i in 0..23u8 {
        let s = publish(&c, &a, new_dataset(&file, &format!("Set {i}")), i);
        ids.insert(s.descriptor.id.to_string());
    }
    assert_eq!(ids.len(), 23);

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = c.page(after.as_deref(), 5).unwrap();
        assert!(page.items.len() <= 5);
        seen.extend(
            page.items
                .iter()
                .map(|b| decode(b).unwrap().descriptor.id.to_string()),
        );
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, ids.iter().cloned().collect::<Vec<_>>());
    assert_eq!(c.page(None, 0).unwrap().items.len(), 1);
    assert_eq!(c.page(None, 10_000).unwrap().items.len(), 23);

    let mut seen = Vec::new();
    let mut q = SearchQuery {
        limit: Some(4),
        ..SearchQuery::default()
    };
    loop {
        let page = c.search(&q).unwrap();
        seen.extend(page.items.iter().map(|s| s.descriptor.id.to_string()));
        match page.next {
            Some(n) => q.after = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, ids.iter().cloned().collect::<Vec<_>>());
    q.after = Some("not-an-id".into());
    assert!(matches!(
        c.search(&q).unwrap_err(),
        CatalogError::BadCursor { .. }
    ));
}

#[test]
fn reopening_rebuilds_the_index_and_revocation_drops_a_publisher() {
    let dir = tempfile::tempdir().unwrap();
    let file = data_file(dir.path(), b"x");
    let a = node(1, "Lab", "macao");
    let b = node(2, "HKU", "hk");
    let db = dir.path().join("db");
    let remote = publish(&catalog(), &b, new_dataset(&file, "Remote one"), 1);
    {
        let c = Catalog::open(Arc::new(SledStore::open(&db).unwrap())).unwrap();
        publish(&c, &a, new_dataset(&file, "Local one"), 2);
        c.ingest(remote.clone(), all, NOW).unwrap();
        c.store.flush().unwrap();
    }
    let c = Catalog::open(Arc::new(SledStore::open(&db).unwrap())).unwrap();
    assert_eq!(c.len(), 2);
    assert_eq!(titles(&c.search(&text("remote")).unwrap()), ["Remote one"]);

    assert_eq!(c.remove_publisher(&b.institution.peer_id).unwrap(), 1);
    assert_eq!(c.remove_publisher(&b.institution.peer_id).unwrap(), 0);
    assert_eq!(c.get(&remote.descriptor.id).unwrap(), None);
    assert_eq!(
        titles(&c.search(&SearchQuery::default()).unwrap()),
        ["Local one"]
    );
}

mod over_p2p {
    use std::net::IpAddr;
    use std::time::{Duration as StdDuration, SystemTime};

    use libp2p::PeerId;
    use tokio::time::timeout;

    use super::*;
    use crate::p2p::{Admission, AdmissionRefusal, AdmittedPeer, P2pConfig, P2pEvent, spawn};

    const WAIT: StdDuration = StdDuration::from_secs(10);

    struct Everyone;

    impl Admission for Everyone {
        fn check(
            &self,
            peer: &PeerId,
            _remote: IpAddr,
            _credential: &[u8],
            now: SystemTime,
        ) -> Result<AdmittedPeer, AdmissionRefusal> {
            Ok(AdmittedPeer {
                peer_id: *peer,
                institution: "member".into(),
                expires_at: now + StdDuration::from_secs(3600),
            })
        }

        fn own_credential(&self) -> Vec<u8> {
            b"member".to_vec()
        }
    }

    #[tokio::test]
    async fn sync_from_pulls_every_page_of_a_peer() {
        let dir = tempfile::tempdir().unwrap();
        let file = data_file(dir.path(), b"x");
        let a = node(1, "Lab", "macao");
        let b = node(2, "HKU", "hk");
        let served = Arc::new(catalog());
        for i in 0..5 {
            publish(&served, &b, new_dataset(&file, &format!("Set {i}")), i);
        }

        let config = || P2pConfig::default();
        let (a_client, mut a_events, _) =
            spawn(a.key.libp2p_keypair(), Arc::new(Everyone), config()).unwrap();
        let (b_client, mut b_events, _) =
            spawn(b.key.libp2p_keypair(), Arc::new(Everyone), config()).unwrap();
        let b_addr = b_client
            .listen_on("/ip6/::1/tcp/0".parse().unwrap())
            .await
            .unwrap();
        let b_peer = timeout(WAIT, a_client.dial(b_addr)).await.unwrap().unwrap();
        // Serve pages of two, so the sync has to follow the cursor.
        let (b_admitted, b_ready) = tokio::sync::oneshot::channel();
        let server = tokio::spawn({
            let (client, served) = (b_client.clone(), Arc::clone(&served));
            let mut b_admitted = Some(b_admitted);
            async move {
                while let Some(event) = b_events.recv().await {
                    match event {
                        P2pEvent::PeerAdmitted(_) => {
                            if let Some(tx) = b_admitted.take() {
                                let _ = tx.send(());
                            }
                        }
                        P2pEvent::InboundRequest {
                            request, channel, ..
                        } => {
                            let page = served
                                .page(request.after.as_deref(), request.limit.min(2))
                                .unwrap();
                            client.respond(channel, page).await.unwrap();
                        }
                        _ => {}
                    }
                }
            }
        });
        timeout(WAIT, b_ready).await.unwrap().unwrap();
        timeout(WAIT, async {
            while !matches!(
                a_events.recv().await,
                Some(P2pEvent::PeerAdmitted(_)) | None
            ) {}
        })
        .await
        .unwrap();

        let ours = catalog();
        let admitted = b.institution.peer_id.clone();
        let report = timeout(
            WAIT,
            sync_from(&a_client, b_peer, &ours, |p| p == admitted, NOW),
        )
        .await
        .unwrap()
        .unwrap();
        assert!(report.complete);
        assert_eq!((report.pages, report.stored, report.refused), (3, 5, 0));
        assert_eq!(ours.len(), 5);
        let again = sync_from(&a_client, b_peer, &ours, |_| true, NOW)
            .await
            .unwrap();
        assert_eq!((again.stored, again.unchanged), (0, 5));

        a_client.shutdown().await.unwrap();
        b_client.shutdown().await.unwrap();
        server.abort();
    }
}

#[test]
fn offer_terms_reach_the_policy_and_bad_ones_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = data_file(dir.path(), b"terms");
    let n = node(3, "SZU", "mainland:shenzhen");
    let c = catalog();
    let until = NOW + Duration::days(10);
    let mut new = new_dataset(&file, "Terms");
    new.valid_days = None;
    new.valid_until = Some(until);
    new.use_limit = Some(2);
    new.delete_by = Some(time::macros::date!(2026 - 12 - 31));
    let signed = publish(&c, &n, new.clone(), 1);
    let policy = &signed.descriptor.offers[0].policy;
    assert_eq!(policy.use_limit(), Some(2));
    assert_eq!(
        policy.retention_end(),
        Some(time::macros::date!(2026 - 12 - 31))
    );
    let ask = |now| bayspace_contracts::policy::RequestContext {
        action: bayspace_contracts::policy::Action::Use,
        purpose: "academic-research".parse().unwrap(),
        recipient_region: Region::HongKong,
        now,
        uses_so_far: 0,
        onward_recipient: None,
    };
    assert!(bayspace_contracts::policy::evaluate(policy, &ask(until)).allowed);
    assert!(!bayspace_contracts::policy::evaluate(policy, &ask(until + Duration::SECOND)).allowed);

    let refused = |change: &dyn Fn(&mut NewDataset)| {
        let mut bad = new.clone();
        change(&mut bad);
        c.publish(bad, &n.key, n.institution.clone(), NOW, [7; 16])
            .unwrap_err()
    };
    let e = refused(&|d| d.valid_days = Some(30));
    assert!(matches!(e, CatalogError::ValidityTwice), "{e}");
    assert!(e.to_string().contains("valid-until"), "{e}");
    let e = refused(&|d| d.valid_until = Some(NOW - Duration::MINUTE));
    assert!(matches!(e, CatalogError::ValidUntilPast { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("valid-until `2026-03-01T08:59:00+08:00`"),
        "{e}"
    );
    let e = refused(&|d| d.use_limit = Some(0));
    assert!(matches!(e, CatalogError::ZeroUseLimit), "{e}");
    // NOW is 1 March in the GBA: 28 February has ended there.
    let e = refused(&|d| d.delete_by = Some(time::macros::date!(2026 - 02 - 28)));
    assert!(matches!(e, CatalogError::DeleteByPast { .. }), "{e}");
    assert!(e.to_string().contains("delete-by `2026-02-28`"), "{e}");
    assert_eq!(c.len(), 1, "nothing refused was stored");
    // The last day itself is still allowed.
    let mut today = new.clone();
    today.delete_by = Some(time::macros::date!(2026 - 03 - 01));
    publish(&c, &n, today, 2);
}
