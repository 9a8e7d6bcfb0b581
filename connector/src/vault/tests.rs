use std::num::NonZeroU64;

use bayspace_contracts::agreement::{NegotiationId, Researcher};
use bayspace_contracts::compliance::Route;
use bayspace_contracts::descriptor::{Institution, OfferId, PublicKey};
use bayspace_contracts::policy::Policy;
use time::macros::{date, datetime};

use super::*;
use crate::audit::{AuditEntry, AuditRecord};
use crate::identity::NodeKey;
use crate::store::SledStore;

const NOW: OffsetDateTime = datetime!(2026-11-23 10:00 UTC);

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    vault: Arc<Vault>,
    audit: Arc<AuditLog>,
    store: Arc<dyn Store>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(&root.join("db")).unwrap());
    let key = NodeKey::generate().unwrap();
    let audit = Arc::new(
        AuditLog::open(
            store.clone(),
            key.signing_key().clone(),
            NonZeroU64::new(64).unwrap(),
        )
        .unwrap(),
    );
    let storage = crypto::storage_key_from_seed(&key.signing_key().to_bytes());
    let vault = Vault::open(root.join("sealed"), storage, store.clone(), audit.clone()).unwrap();
    Fixture {
        _dir: dir,
        root,
        vault,
        audit,
        store,
    }
}

fn institution(name: &str, region: &str) -> Institution {
    let key = NodeKey::generate().unwrap();
    Institution {
        name: name.into(),
        region: region.parse().unwrap(),
        peer_id: key.peer_id().to_string(),
        key: PublicKey::from(&key.verifying_key()),
    }
}

fn agreement(delete_by: Option<time::Date>) -> Agreement {
    let mut policy = Policy::offer(vec!["academic-research".parse().unwrap()]);
    if let Some(d) = delete_by {
        policy = policy.delete_by(d);
    }
    let mut random = [0u8; 16];
    getrandom::fill(&mut random).unwrap();
    let provider = institution("Shenzhen University", "mainland:shenzhen");
    Agreement {
        id: AgreementId::from_random(random),
        negotiation: NegotiationId::from_random(random),
        dataset: DatasetId::derive(&provider.key, "cohort"),
        dataset_version: 2,
        offer: OfferId::from_random(random),
        provider,
        consumer: institution("The University of Hong Kong", "hk"),
        researcher: Researcher {
            id: "r-chan".into(),
            name: "Dr Chan".into(),
            orcid: None,
        },
        purpose: "academic-research".parse().unwrap(),
        constraints: policy.build().unwrap(),
        not_before: NOW,
        not_after: NOW + time::Duration::days(30),
        route: Route::Exempt,
        variant: None,
        obligations: vec![],
        created: NOW,
        certificate: None,
    }
}

/// Receives `data` into a sealed copy, as a keep-sealed fetch does.
fn receive(v: &Vault, ag: &Agreement, data: &[u8]) -> Result<SealedRecord> {
    let mut sink = v.begin(ag, NOW)?;
    let count = crypto::segment_count(data.len() as u64).unwrap();
    for i in sink.next..count {
        let (off, len) = crypto::segment_range(i, data.len() as u64).unwrap();
        let off = off as usize;
        sink.writer
            .write_segment(i, i + 1 == count, &data[off..off + len])
            .unwrap();
    }
    let hash = Digest(*blake3::hash(data).as_bytes());
    v.complete(sink, &hash, data.len() as u64)
}

fn data(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    getrandom::fill(&mut v).unwrap();
    v
}

fn entries(audit: &AuditLog) -> Vec<AuditEntry> {
    let mut out = Vec::new();
    audit.export(&mut out).unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .filter_map(|l| match serde_json::from_str(l).unwrap() {
            AuditRecord::Entry(e) => Some(e),
            AuditRecord::Checkpoint(_) => None,
        })
        .collect()
}

fn events(audit: &AuditLog) -> Vec<(AuditEvent, Actor)> {
    entries(audit)
        .into_iter()
        .map(|e| (e.event, e.actor))
        .collect()
}

#[test]
fn kept_sealed_opens_for_its_researcher_only_and_holds_no_plaintext() {
    let f = fixture();
    let ag = agreement(None);
    let bytes = data(crypto::SEGMENT_SIZE + 1234);
    let rec = receive(&f.vault, &ag, &bytes).unwrap();
    assert_eq!(rec.state, SealedState::Sealed);
    assert_eq!(rec.size, Some(bytes.len() as u64));
    let stored = fs::read(f.vault.sealed_path(&ag.id)).unwrap();
    assert!(!stored.windows(32).any(|w| w == &bytes[1000..1032]));

    let out = f.root.join("open.bin");
    let e = f
        .vault
        .open_to(&ag.id, Some("r-other"), &out, NOW)
        .unwrap_err();
    assert!(matches!(e, VaultError::WrongResearcher { .. }), "{e}");
    assert!(!out.exists());
    f.vault.open_to(&ag.id, Some("r-chan"), &out, NOW).unwrap();
    assert_eq!(fs::read(&out).unwrap(), bytes);
    assert_eq!(
        events(&f.audit),
        vec![(AuditEvent::DataOpened, Actor::Researcher("r-chan".into()))]
    );
    let again = receive(&f.vault, &ag, &bytes).unwrap_err();
    assert!(matches!(again, VaultError::AlreadySealed(_)), "{again}");
}

#[test]
fn shredding_at_the_retention_deadline_destroys_the_key_and_is_audited() {
    let f = fixture();
    let keep = agreement(Some(date!(2026 - 12 - 31)));
    let other = agreement(Some(date!(2027 - 06 - 30)));
    let forever = agreement(None);
    for ag in [&keep, &other, &forever] {
        receive(&f.vault, ag, &data(100)).unwrap();
    }
    // Midnight after 31 December in the GBA is 16:00 UTC that day.
    let deadline = datetime!(2026-12-31 16:00 UTC);
    assert_eq!(f.vault.next_deadline().unwrap(), Some(deadline));
    assert!(
        f.vault
            .shred_due(deadline - time::Duration::SECOND)
            .unwrap()
            .is_empty()
    );
    let shredded = f.vault.shred_due(deadline).unwrap();
    assert_eq!(shredded.len(), 1);
    assert_eq!(shredded[0].agreement, keep.id);
    assert_eq!(shredded[0].shredded_at, Some(deadline));
    assert!(!f.vault.key_path(&keep.id).exists());
    assert!(!f.vault.sealed_path(&keep.id).exists());
    assert!(f.vault.key_path(&other.id).exists());
    assert_eq!(
        f.vault.next_deadline().unwrap(),
        Some(datetime!(2027-06-30 16:00 UTC))
    );
    let entries = entries(&f.audit);
    let shred = entries
        .iter()
        .find(|e| e.event == AuditEvent::DataShredded)
        .unwrap();
    assert_eq!(shred.actor, Actor::Node);
    assert_eq!(shred.subjects[0], keep.id.to_string());
    assert_eq!(shred.details["reason"], "retention end of the agreement");

    let out = f.root.join("late.bin");
    let e = f.vault.open_to(&keep.id, None, &out, deadline).unwrap_err();
    assert!(matches!(e, VaultError::Shredded { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("crypto-shredded") && msg.contains("retention end"),
        "{msg}"
    );
    assert!(!out.exists());
    // Nothing is shredded twice, and a new copy cannot begin after the end.
    assert!(f.vault.shred_due(deadline).unwrap().is_empty());
    let e = f.vault.begin(&keep, deadline).unwrap_err();
    assert!(matches!(e, VaultError::RetentionPassed { .. }), "{e}");
}

#[test]
fn even_with_the_ciphertext_restored_a_shredded_copy_does_not_open() {
    let f = fixture();
    let ag = agreement(None);
    let bytes = data(4096);
    receive(&f.vault, &ag, &bytes).unwrap();
    let sealed = fs::read(f.vault.sealed_path(&ag.id)).unwrap();
    f.vault
        .shred(&ag.id, Actor::Admin, "consent withdrawn", NOW)
        .unwrap();
    // A backup of the ciphertext comes back; the key does not.
    fs::write(f.vault.sealed_path(&ag.id), &sealed).unwrap();
    let e = f
        .vault
        .open_to(&ag.id, None, &f.root.join("x"), NOW)
        .unwrap_err();
    assert!(e.to_string().contains("consent withdrawn"), "{e}");
    assert!(matches!(
        f.vault.shred(&ag.id, Actor::Admin, "again", NOW),
        Err(VaultError::Shredded { .. })
    ));
    // A shredded copy may be fetched anew, under a new key.
    let rec = receive(&f.vault, &ag, &bytes).unwrap();
    assert_eq!(rec.state, SealedState::Sealed);
    let out = f.root.join("new.bin");
    f.vault.open_to(&ag.id, None, &out, NOW).unwrap();
    assert_eq!(fs::read(&out).unwrap(), bytes);
}

#[test]
fn an_interrupted_copy_resumes_and_one_shredded_meanwhile_is_discarded() {
    let f = fixture();
    let ag = agreement(None);
    let bytes = data(3 * crypto::SEGMENT_SIZE + 5);
    let mut sink = f.vault.begin(&ag, NOW).unwrap();
    sink.writer
        .write_segment(0, false, &bytes[..crypto::SEGMENT_SIZE])
        .unwrap();
    drop(sink);
    assert_eq!(
        f.vault.get(&ag.id).unwrap().unwrap().state,
        SealedState::Receiving
    );
    let e = f
        .vault
        .open_to(&ag.id, None, &f.root.join("x"), NOW)
        .unwrap_err();
    assert!(matches!(e, VaultError::Incomplete(_)), "{e}");
    let sink = f.vault.begin(&ag, NOW).unwrap();
    assert_eq!(sink.next, 1, "resumes after the verified segment");
    drop(sink);
    receive(&f.vault, &ag, &bytes).unwrap();

    let ag2 = agreement(None);
    let sink = f.vault.begin(&ag2, NOW).unwrap();
    f.vault
        .shred(&ag2.id, Actor::Admin, "revoked", NOW)
        .unwrap();
    let part = sink.writer.part_path().to_path_buf();
    let e = f
        .vault
        .complete(sink, &Digest(*blake3::hash(b"").as_bytes()), 0)
        .unwrap_err();
    assert!(matches!(e, VaultError::Shredded { .. }), "{e}");
    assert!(!part.exists() && !f.vault.sealed_path(&ag2.id).exists());
}

#[test]
fn a_wrong_storage_key_or_a_moved_key_file_opens_nothing() {
    let f = fixture();
    let a = agreement(None);
    let b = agreement(None);
    let bytes = data(10);
    receive(&f.vault, &a, &bytes).unwrap();
    receive(&f.vault, &b, &data(10)).unwrap();
    // The same directory and records under another node's storage key:
    // a's intact key file unwraps nothing.
    let stranger = Vault::open(
        f.root.join("sealed"),
        crypto::storage_key_from_seed(&[9; 32]),
        f.store.clone(),
        f.audit.clone(),
    )
    .unwrap();
    let out = f.root.join("wrong-key");
    let e = stranger.open_to(&a.id, None, &out, NOW).unwrap_err();
    assert!(
        matches!(e, VaultError::Crypto(CryptoError::Unwrap { .. })),
        "{e}"
    );
    assert!(!out.exists());
    // With the right key the same copy opens.
    let out = f.root.join("right-key");
    f.vault.open_to(&a.id, None, &out, NOW).unwrap();
    assert_eq!(fs::read(&out).unwrap(), bytes);

    // a's wrapped key under b's name: the context (agreement id) differs.
    fs::copy(f.vault.key_path(&a.id), f.vault.key_path(&b.id)).unwrap();
    let out = f.root.join("x");
    let e = f.vault.open_to(&b.id, None, &out, NOW).unwrap_err();
    assert!(
        matches!(e, VaultError::Crypto(CryptoError::Unwrap { .. })),
        "{e}"
    );
    assert!(!out.exists());
}

#[tokio::test]
async fn the_retention_watcher_shreds_when_the_deadline_comes() {
    let f = fixture();
    let ag = agreement(None);
    receive(&f.vault, &ag, &data(64)).unwrap();
    // A deadline a moment from now, as an agreement's would be on its day.
    let mut record = f.vault.get(&ag.id).unwrap().unwrap();
    let deadline = OffsetDateTime::now_utc() + time::Duration::milliseconds(800);
    record.retention_deadline = Some(deadline);
    f.vault.records.insert(&ag.id.to_string(), &record).unwrap();
    let watcher = tokio::spawn(f.vault.clone().run());
    let started = std::time::Instant::now();
    let shredded = loop {
        let r = f.vault.get(&ag.id).unwrap().unwrap();
        if r.state == SealedState::Shredded {
            break r;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not shredded in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    watcher.abort();
    assert!(
        shredded.shredded_at.unwrap() >= deadline,
        "not before its time"
    );
    assert!(!f.vault.key_path(&ag.id).exists());
    assert!(
        events(&f.audit).contains(&(AuditEvent::DataShredded, Actor::Node)),
        "audited"
    );
}

#[test]
fn a_copy_that_never_received_data_is_forgotten_and_one_with_data_is_kept() {
    let f = fixture();
    let refused = agreement(None);
    drop(f.vault.begin(&refused, NOW).unwrap());
    assert!(f.vault.key_path(&refused.id).exists());
    assert!(f.vault.abandon_if_empty(&refused.id).unwrap());
    assert_eq!(f.vault.get(&refused.id).unwrap(), None);
    assert!(!f.vault.key_path(&refused.id).exists());

    let partial = agreement(None);
    let mut sink = f.vault.begin(&partial, NOW).unwrap();
    sink.writer
        .write_segment(0, false, &data(crypto::SEGMENT_SIZE))
        .unwrap();
    drop(sink);
    assert!(!f.vault.abandon_if_empty(&partial.id).unwrap());
    assert_eq!(
        f.vault.get(&partial.id).unwrap().unwrap().state,
        SealedState::Receiving
    );
    let complete = agreement(None);
    receive(&f.vault, &complete, &data(10)).unwrap();
    assert!(!f.vault.abandon_if_empty(&complete.id).unwrap());
}

#[test]
fn a_wrong_storage_key_unwraps_no_data_key() {
    let f = fixture();
    let ag = agreement(None);
    receive(&f.vault, &ag, &data(100)).unwrap();
    // The same records and key files, under the storage key of another node
    // key: a copied sealed directory opens nothing elsewhere.
    let other = crypto::storage_key_from_seed(&[7; 32]);
    let stranger = Vault::open(
        f.root.join("sealed"),
        other,
        f.store.clone(),
        f.audit.clone(),
    )
    .unwrap();
    let out = f.root.join("x");
    let e = stranger.open_to(&ag.id, None, &out, NOW).unwrap_err();
    assert!(
        matches!(e, VaultError::Crypto(CryptoError::Unwrap { .. })),
        "{e}"
    );
    assert!(!out.exists());
}

#[test]
fn opening_at_or_after_the_retention_deadline_is_refused_before_the_shredder_runs() {
    let f = fixture();
    let ag = agreement(Some(date!(2026 - 12 - 31)));
    let bytes = data(1000);
    receive(&f.vault, &ag, &bytes).unwrap();
    // Midnight after 31 December in the GBA is 16:00 UTC that day.
    let deadline = datetime!(2026-12-31 16:00 UTC);
    let before = f.root.join("before.bin");
    f.vault
        .open_to(&ag.id, None, &before, deadline - time::Duration::SECOND)
        .unwrap();
    assert_eq!(fs::read(&before).unwrap(), bytes);
    // The retention watcher has not run: the copy is still "sealed", and
    // its key is still there. Opening is refused all the same.
    for at in [deadline, deadline + time::Duration::days(3)] {
        assert_eq!(
            f.vault.get(&ag.id).unwrap().unwrap().state,
            SealedState::Sealed
        );
        let out = f.root.join("late.bin");
        let e = f
            .vault
            .open_to(&ag.id, Some("r-chan"), &out, at)
            .unwrap_err();
        assert!(
            matches!(&e, VaultError::RetentionEnded { deadline: d, .. } if *d == deadline),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains("ended at 2027-01-01 0:00:00.0 +08:00:00"),
            "{e}"
        );
        assert!(!out.exists());
    }
    // Only the one open before the deadline is audited.
    assert_eq!(
        events(&f.audit),
        vec![(AuditEvent::DataOpened, Actor::Admin)]
    );
}

#[test]
fn a_shred_whose_key_destruction_fails_still_leaves_the_copy_unopenable() {
    let f = fixture();
    let ag = agreement(None);
    let bytes = data(2000);
    receive(&f.vault, &ag, &bytes).unwrap();
    let key_path = f.vault.key_path(&ag.id);
    let wrapped = fs::read(&key_path).unwrap();
    // A directory where the key file is: opening it for the overwrite fails
    // with EISDIR, root or not.
    fs::remove_file(&key_path).unwrap();
    fs::create_dir(&key_path).unwrap();
    fs::write(key_path.join("keep"), b"x").unwrap();
    let e = f
        .vault
        .shred(&ag.id, Actor::Admin, "consent withdrawn", NOW)
        .unwrap_err();
    assert!(
        e.to_string().contains(&key_path.display().to_string()),
        "{e}"
    );
    assert!(
        events(&f.audit).contains(&(AuditEvent::DataShredded, Actor::Admin)),
        "the shredding was audited before the key was touched"
    );
    // The key survived the failed destruction (as it would on a device
    // that refused the write): the copy must not open all the same.
    fs::remove_dir_all(&key_path).unwrap();
    fs::write(&key_path, &wrapped).unwrap();
    let out = f.root.join("after-shred.bin");
    let opened = f.vault.open_to(&ag.id, None, &out, NOW);
    assert!(
        !out.exists(),
        "the data was decrypted after its shredding was audited"
    );
    let e = opened.unwrap_err();
    assert!(matches!(e, VaultError::Shredded { .. }), "{e}");
    assert!(e.to_string().contains("consent withdrawn"), "{e}");
    // The retention watcher finishes the destruction of the leftover key,
    // without a second audit entry.
    assert!(f.vault.shred_due(NOW).unwrap().is_empty());
    assert!(!key_path.exists());
    let shreds = events(&f.audit)
        .into_iter()
        .filter(|(e, _)| *e == AuditEvent::DataShredded)
        .count();
    assert_eq!(shreds, 1);
}

#[test]
fn an_open_racing_a_shred_cannot_decrypt_after_the_shred_is_audited() {
    let f = fixture();
    let ag = agreement(None);
    // Large enough that decrypting takes far longer than a shred.
    let bytes = data(48 * 1024 * 1024);
    receive(&f.vault, &ag, &bytes).unwrap();
    drop(bytes);
    let out = f.root.join("race.bin");
    let opened_before = f.audit.last().unwrap();
    let opener = {
        let vault = f.vault.clone();
        let out = out.clone();
        std::thread::spawn(move || vault.open_to(&ag.id.clone(), None, &out, NOW))
    };
    // Shred as soon as the open is audited, i.e. while it decrypts.
    let started = std::time::Instant::now();
    while f.audit.last().unwrap() == opened_before {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "open never began"
        );
        std::thread::yield_now();
    }
    let id = f.vault.list(None).unwrap()[0].agreement.clone();
    f.vault
        .shred(&id, Actor::Admin, "consent withdrawn", NOW)
        .unwrap();
    // The shred is audited and done; nothing may be decrypted from here on.
    let decrypted_at_shred = out.exists();
    let opened = opener.join().unwrap();
    if opened.is_ok() {
        assert!(
            decrypted_at_shred,
            "the open went on decrypting after the shred was audited"
        );
    }
    let last = entries(&f.audit).pop().unwrap();
    assert_eq!(last.event, AuditEvent::DataShredded);
    let e = f
        .vault
        .open_to(&id, None, &f.root.join("again.bin"), NOW)
        .unwrap_err();
    assert!(matches!(e, VaultError::Shredded { .. }), "{e}");
}

/// Every chunk a download yields from `offset`, joined.
fn download_all(v: &Arc<Vault>, ag: &Agreement, offset: u64) -> Result<Vec<u8>> {
    let mut d = v.download(&ag.id, Some("r-chan"), "[2001:db8::7]:5000", offset, NOW)?;
    let (mut out, mut buf) = (Vec::new(), Vec::new());
    while d.next_chunk(&mut buf, NOW)? {
        assert!(buf.len() <= crypto::SEGMENT_SIZE);
        out.extend_from_slice(&buf);
    }
    Ok(out)
}

#[test]
fn a_download_streams_from_any_offset_is_audited_and_writes_nothing() {
    let f = fixture();
    let ag = agreement(None);
    let bytes = data(2 * crypto::SEGMENT_SIZE + 777);
    receive(&f.vault, &ag, &bytes).unwrap();
    let files = |root: &Path| {
        let mut n: Vec<_> = fs::read_dir(root.join("sealed"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        n.sort();
        n
    };
    let before = files(&f.root);
    let len = bytes.len() as u64;
    let seg = crypto::SEGMENT_SIZE as u64;
    for offset in [0, 1, seg - 1, seg, seg + 5, len - 1, len] {
        let got = download_all(&f.vault, &ag, offset).unwrap();
        assert!(got == bytes[offset as usize..], "offset {offset}");
    }
    assert_eq!(files(&f.root), before, "nothing written beside the copy");
    let d = f.vault.download(&ag.id, None, "[::1]:1", 0, NOW).unwrap();
    assert_eq!(d.size(), len);
    assert_eq!(d.hash(), &Digest(*blake3::hash(&bytes).as_bytes()));
    let last = entries(&f.audit).pop().unwrap();
    assert_eq!(last.event, AuditEvent::DataDownloaded);
    assert_eq!(last.actor, Actor::Admin);
    assert_eq!(last.details["client"], "[::1]:1");
    assert_eq!(last.details["size"], len);

    assert!(matches!(
        download_all(&f.vault, &ag, len + 1),
        Err(VaultError::OffsetPastEnd { .. })
    ));
    assert!(matches!(
        f.vault.download(&ag.id, Some("r-other"), "[::1]:1", 0, NOW),
        Err(VaultError::WrongResearcher { .. })
    ));
}

#[test]
fn a_shredding_or_the_retention_end_stops_a_download_at_the_next_segment() {
    let f = fixture();
    let ag = agreement(Some(date!(2026 - 12 - 01)));
    let bytes = data(3 * crypto::SEGMENT_SIZE);
    receive(&f.vault, &ag, &bytes).unwrap();
    let mut d = f
        .vault
        .download(&ag.id, Some("r-chan"), "[::1]:1", 0, NOW)
        .unwrap();
    let mut buf = Vec::new();
    assert!(d.next_chunk(&mut buf, NOW).unwrap());
    f.vault
        .shred(&ag.id, Actor::Admin, "consent withdrawn", NOW)
        .unwrap();
    let e = d.next_chunk(&mut buf, NOW).unwrap_err();
    assert!(
        matches!(&e, VaultError::Shredded { reason, .. } if reason == "consent withdrawn"),
        "{e}"
    );
    assert!(matches!(
        f.vault.download(&ag.id, Some("r-chan"), "[::1]:1", 0, NOW),
        Err(VaultError::Shredded { .. })
    ));

    let ag = agreement(Some(date!(2026 - 12 - 01)));
    receive(&f.vault, &ag, &bytes).unwrap();
    let mut d = f
        .vault
        .download(&ag.id, Some("r-chan"), "[::1]:1", 0, NOW)
        .unwrap();
    assert!(d.next_chunk(&mut buf, NOW).unwrap());
    let late = datetime!(2026-12-02 00:00 +8);
    assert!(matches!(
        d.next_chunk(&mut buf, late),
        Err(VaultError::RetentionEnded { .. })
    ));
}
