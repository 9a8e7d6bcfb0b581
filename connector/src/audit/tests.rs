use std::io::Cursor;
use std::num::NonZeroU64;
use std::sync::Arc;

use ed25519_dalek::SigningKey;
use serde_json::json;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use super::*;
use crate::store::SledStore;

fn key() -> SigningKey {
    SigningKey::from_bytes(&[42; 32])
}

fn every(n: u64) -> NonZeroU64 {
    NonZeroU64::new(n).unwrap()
}

fn t(n: i64) -> OffsetDateTime {
    datetime!(2025-03-01 09:00:00 UTC) + Duration::seconds(n) + Duration::nanoseconds(1_500 * n)
}

fn temp_log(checkpoint_every: u64) -> AuditLog {
    let store: Arc<dyn Store> = Arc::new(SledStore::temporary().unwrap());
    AuditLog::open(store, key(), every(checkpoint_every)).unwrap()
}

/// Append entries `from..=to` with varied actors, events and details.
fn fill(log: &AuditLog, from: u64, to: u64) {
    let actors = [
        Actor::Admin,
        Actor::Researcher("r-深圳-7".to_owned()),
        Actor::Peer("12D3KooWPeer".to_owned()),
        Actor::Node,
    ];
    let events = [
        AuditEvent::ContractRequested,
        AuditEvent::Assessment,
        AuditEvent::Approval,
        AuditEvent::KeyReleased,
        AuditEvent::TransferCompleted,
    ];
    for n in from..=to {
        let i = n as usize;
        let entry = log
            .append(
                actors[i % actors.len()].clone(),
                events[i % events.len()],
                vec![format!("dataset:{n}"), format!("agreement:{}", n * 7)],
                json!({"n": n, "reason": "route \"gba-standard-contract\"\n", "ok": n % 2 == 0}),
                t(n as i64),
            )
            .unwrap();
        assert_eq!(entry.seq, n);
    }
}

fn export(log: &AuditLog) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let n = log.export(&mut out).unwrap();
    let lines: Vec<Vec<u8>> = out
        .split_inclusive(|b| *b == b'\n')
        .map(|l| l.to_vec())
        .collect();
    assert_eq!(lines.len() as u64, n);
    lines
}

fn check(lines: &[Vec<u8>]) -> Result<VerifyReport, VerifyError> {
    verify_export(Cursor::new(lines.concat()), &key().verifying_key())
}

fn broken_line(result: Result<VerifyReport, VerifyError>) -> (usize, Option<u64>, Broken) {
    match result {
        Err(VerifyError::Broken { line, seq, reason }) => (line, seq, reason),
        other => panic!("expected a broken line, got {other:?}"),
    }
}

/// 7 entries, checkpoints after 3 and 6, and one on demand after 7.
fn sample() -> (AuditLog, Vec<Vec<u8>>) {
    let log = temp_log(3);
    fill(&log, 1, 7);
    assert!(log.checkpoint(t(100)).unwrap().is_some());
    let lines = export(&log);
    assert_eq!(lines.len(), 10);
    (log, lines)
}

#[test]
fn append_export_verify_round_trip() {
    let (log, lines) = sample();
    let report = check(&lines).unwrap();
    assert_eq!(report.entries, 7);
    assert_eq!(report.checkpoints, 3);
    assert_eq!(report.last, log.last().unwrap());
    assert_eq!(report.signed_through, Some(7));
    assert!(report.fully_signed());

    let kinds: Vec<&str> = lines
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_slice(l).unwrap();
            if v["kind"] == "entry" { "e" } else { "c" }
        })
        .collect();
    assert_eq!(kinds, ["e", "e", "e", "c", "e", "e", "e", "c", "e", "c"]);

    let first: AuditRecord = serde_json::from_slice(&lines[0]).unwrap();
    let second: AuditRecord = serde_json::from_slice(&lines[1]).unwrap();
    let (AuditRecord::Entry(first), AuditRecord::Entry(second)) = (first, second) else {
        panic!("the first two lines are entries");
    };
    assert_eq!(first.prev, Digest::ZERO);
    assert_eq!(second.prev, first.digest);
    assert_eq!(first.time, t(1));
    assert_eq!(first.actor.to_string(), "researcher:r-深圳-7");
    let line = String::from_utf8(lines[0].clone()).unwrap();
    assert!(line.contains(r#""event":"assessment""#), "{line}");
    assert!(
        line.contains(r#""time":"2025-03-01T09:00:01.0000015Z""#),
        "{line}"
    );

    // Nothing new to sign.
    assert!(log.checkpoint(t(101)).unwrap().is_none());
}

#[test]
fn an_empty_log_exports_and_verifies_as_empty() {
    let log = temp_log(3);
    assert!(log.checkpoint(t(0)).unwrap().is_none());
    assert!(export(&log).is_empty());
    let report = check(&[]).unwrap();
    assert_eq!(report, VerifyReport::default());
}

#[test]
fn every_single_byte_edit_is_caught_on_its_own_line() {
    let (_log, lines) = sample();
    for (i, line) in lines.iter().enumerate() {
        for j in 0..line.len() - 1 {
            let mut edited = lines.clone();
            edited[i][j] ^= 0x01;
            let (at, _, reason) = broken_line(check(&edited));
            assert_eq!(at, i + 1, "byte {j} of line {} edited: {reason}", i + 1);
        }
    }
}

#[test]
fn a_changed_actor_or_time_breaks_the_digest_of_that_entry() {
    let (_log, lines) = sample();
    let mut edited = lines.clone();
    let text = String::from_utf8(edited[5].clone()).unwrap();
    edited[5] = text.replace("researcher:r-", "researcher:x-").into_bytes();
    assert_ne!(edited[5], lines[5]);
    let (line, seq, reason) = broken_line(check(&edited));
    assert_eq!((line, seq), (6, Some(5)));
    assert!(matches!(reason, Broken::Digest { .. }), "{reason}");

    let mut edited = lines.clone();
    let text = String::from_utf8(edited[1].clone()).unwrap();
    edited[1] = text.replace("T09:00:02", "T09:00:03").into_bytes();
    assert_ne!(edited[1], lines[1]);
    let (line, seq, reason) = broken_line(check(&edited));
    assert_eq!((line, seq), (2, Some(2)));
    assert!(matches!(reason, Broken::Digest { .. }), "{reason}");
}

#[test]
fn deleting_any_line_but_the_last_is_caught() {
    let (_log, lines) = sample();
    for i in 0..lines.len() - 1 {
        let mut edited = lines.clone();
        let removed = edited.remove(i);
        let (line, _, reason) = broken_line(check(&edited));
        if removed.starts_with(br#"{"actor""#) {
            // An entry: the very next line no longer follows.
            assert_eq!(line, i + 1, "deleting line {}: {reason}", i + 1);
        } else {
            // A checkpoint: the next checkpoint's number has a gap.
            assert!(line > i, "deleting line {}: {reason}", i + 1);
            assert!(
                matches!(reason, Broken::CheckpointNumber { .. }),
                "{reason}"
            );
        }
    }
    // Dropping the tail cannot be seen in the file itself, but the report
    // says how far the signatures reach.
    let report = check(&lines[..lines.len() - 1]).unwrap();
    assert!(!report.fully_signed());
    assert_eq!(report.signed_through, Some(6));
}

#[test]
fn reordering_is_caught() {
    let (_log, lines) = sample();
    for i in 0..lines.len() - 1 {
        let mut edited = lines.clone();
        edited.swap(i, i + 1);
        let (line, _, reason) = broken_line(check(&edited));
        assert!(
            line == i + 1 || line == i + 2,
            "swapping lines {} and {} failed at {line}: {reason}",
            i + 1,
            i + 2
        );
    }
}

#[test]
fn forged_checkpoints_are_caught() {
    let (_log, lines) = sample();

    // The wrong key: the first checkpoint fails.
    let other = SigningKey::from_bytes(&[9; 32]);
    let err = verify_export(Cursor::new(lines.concat()), &other.verifying_key());
    assert_eq!(broken_line(err), (4, Some(3), Broken::Signature));

    // A checkpoint re-signed by another key.
    let mut edited = lines.clone();
    let AuditRecord::Checkpoint(mut cp) = serde_json::from_slice(&lines[7]).unwrap() else {
        panic!("line 8 is a checkpoint");
    };
    let forged = sign(
        &other,
        SigningContext::AuditCheckpoint,
        &cp.signed_bytes().unwrap(),
    );
    cp.signature = forged.to_bytes();
    let mut line = canonical_bytes(&AuditRecord::Checkpoint(cp)).unwrap();
    line.push(b'\n');
    edited[7] = line;
    assert_eq!(broken_line(check(&edited)), (8, Some(6), Broken::Signature));

    // Rewriting an entry and rehashing the chain after it still fails at the
    // first checkpoint that covered it.
    let mut records: Vec<AuditRecord> = lines
        .iter()
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    let mut prev = Digest::ZERO;
    for record in &mut records {
        if let AuditRecord::Entry(e) = record {
            if e.seq == 2 {
                e.actor = Actor::Admin;
            }
            e.prev = prev;
            e.digest = e.compute_digest().unwrap();
            prev = e.digest;
        }
    }
    let rehashed: Vec<Vec<u8>> = records
        .iter()
        .map(|r| {
            let mut l = canonical_bytes(r).unwrap();
            l.push(b'\n');
            l
        })
        .collect();
    assert_eq!(
        broken_line(check(&rehashed)),
        (4, Some(3), Broken::CheckpointDigest { seq: 3 })
    );
}

#[test]
fn malformed_files_name_the_line() {
    let (_log, lines) = sample();
    let mut unterminated = lines.clone();
    unterminated[9].pop();
    assert_eq!(
        broken_line(check(&unterminated)),
        (10, None, Broken::Unterminated)
    );

    let mut long = lines[..2].to_vec();
    long.push(vec![b' '; MAX_LINE_BYTES + 10]);
    assert_eq!(broken_line(check(&long)), (3, None, Broken::TooLong));

    // Valid JSON, same values, other spelling.
    let mut spaced = lines.clone();
    let v: Value = serde_json::from_slice(&lines[0]).unwrap();
    let mut pretty = serde_json::to_vec_pretty(&v).unwrap();
    pretty.retain(|b| *b != b'\n');
    pretty.push(b'\n');
    spaced[0] = pretty;
    assert_eq!(
        broken_line(check(&spaced)),
        (1, Some(1), Broken::NotCanonical)
    );

    let mut extra = lines.clone();
    extra.insert(3, b"{\"kind\":\"note\"}\n".to_vec());
    let (line, seq, reason) = broken_line(check(&extra));
    assert_eq!((line, seq), (4, None));
    assert!(matches!(reason, Broken::Parse(_)), "{reason}");
}

#[test]
fn restart_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
        AuditLog::open(store, key(), every(3)).unwrap()
    };
    let head = {
        let log = open();
        fill(&log, 1, 4);
        log.last().unwrap()
    };
    let log = open();
    assert_eq!(log.last().unwrap(), head);
    fill(&log, 5, 6);
    let lines = export(&log);
    let AuditRecord::Entry(fifth) = serde_json::from_slice(&lines[5]).unwrap() else {
        panic!("line 6 is entry 5");
    };
    assert_eq!(Some((4, fifth.prev)), head);
    drop(log);

    // The log now ends in checkpoint 2; a restart must neither sign the
    // same head again nor restart the numbering.
    let log = open();
    assert!(log.checkpoint(t(50)).unwrap().is_none());
    fill(&log, 7, 9);
    let report = check(&export(&log)).unwrap();
    assert_eq!((report.entries, report.checkpoints), (9, 3));
    assert!(report.fully_signed());
}

#[test]
fn a_log_signed_by_another_key_is_not_resumed() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
        let log = AuditLog::open(store, key(), every(2)).unwrap();
        fill(&log, 1, 2);
    }
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
    let err = AuditLog::open(store, SigningKey::from_bytes(&[1; 32]), every(2)).err();
    assert!(
        matches!(err, Some(AuditError::Corrupt { position: 3, .. })),
        "{err:?}"
    );
}

#[test]
fn concurrent_appends_form_one_chain() {
    let log = Arc::new(temp_log(10));
    let threads: Vec<_> = (0..4)
        .map(|w| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for i in 0..20 {
                    log.append(
                        Actor::Node,
                        AuditEvent::Assessment,
                        vec![format!("w{w}-{i}")],
                        json!({}),
                        t(i),
                    )
                    .unwrap();
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    let report = check(&export(&log)).unwrap();
    assert_eq!((report.entries, report.checkpoints), (80, 8));
}

#[test]
fn refused_entries_leave_the_log_unchanged() {
    let log = temp_log(3);
    fill(&log, 1, 2);
    let head = log.last().unwrap();

    let big = "x".repeat(MAX_LINE_BYTES);
    let err = log
        .append(
            Actor::Admin,
            AuditEvent::Rejection,
            vec![],
            json!({ "note": big }),
            t(3),
        )
        .unwrap_err();
    assert!(matches!(err, AuditError::TooLarge { seq: 3, .. }), "{err}");

    let err = log
        .append(
            Actor::Admin,
            AuditEvent::Rejection,
            vec![],
            json!({ "score": 0.5 }),
            t(3),
        )
        .unwrap_err();
    assert!(matches!(err, AuditError::Canonical(_)), "{err}");
    assert!(err.to_string().contains("$.details.score"), "{err}");

    assert_eq!(log.last().unwrap(), head);
    fill(&log, 3, 3);
    assert_eq!(check(&export(&log)).unwrap().entries, 3);
}

#[test]
fn actors_parse_strictly() {
    for s in ["admin", "node", "researcher:r-1", "peer:12D3KooWAbc"] {
        assert_eq!(s.parse::<Actor>().unwrap().to_string(), s);
    }
    assert!(matches!(
        "root".parse::<Actor>(),
        Err(ActorError::Unknown(_))
    ));
    assert!(matches!(
        "researcher:".parse::<Actor>(),
        Err(ActorError::BadId(_))
    ));
    assert!(matches!(
        "peer:a b".parse::<Actor>(),
        Err(ActorError::BadId(_))
    ));
}

#[test]
fn digests_parse_strictly() {
    let d = Digest::of(b"x");
    assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
    assert!(d.to_string().to_uppercase().parse::<Digest>().is_err());
    assert!("00".parse::<Digest>().is_err());
}

/// The recipe in docs/AUDIT.md, followed with generic tools only: JSON,
/// canonical bytes, BLAKE3, plain ed25519.
#[test]
fn the_documented_recipe_verifies_an_export() {
    use ed25519_dalek::Verifier as _;

    let (_log, lines) = sample();
    let mut prev = "0".repeat(64);
    for line in &lines {
        let mut v: serde_json::Map<String, Value> = serde_json::from_slice(line).unwrap();
        let kind = v.remove("kind").unwrap();
        if kind == "entry" {
            let digest = v.remove("digest").unwrap();
            assert_eq!(v["prev"], Value::String(prev.clone()));
            let hash = blake3::hash(&canonical_bytes(&v).unwrap())
                .to_hex()
                .to_string();
            assert_eq!(digest, Value::String(hash.clone()));
            prev = hash;
        } else {
            assert_eq!(v["digest"], Value::String(prev.clone()));
            let signature = v.remove("signature").unwrap();
            let signature: [u8; 64] =
                bayspace_contracts::signing::b64::deserialize(signature).unwrap();
            let mut message = b"bayspace/v1/audit-checkpoint\0".to_vec();
            message.extend(canonical_bytes(&v).unwrap());
            key()
                .verifying_key()
                .verify(&message, &ed25519_dalek::Signature::from_bytes(&signature))
                .unwrap();
        }
    }
}

fn checkpoints_of(lines: &[Vec<u8>]) -> Vec<Checkpoint> {
    lines
        .iter()
        .filter_map(|l| match serde_json::from_slice(l).unwrap() {
            AuditRecord::Checkpoint(c) => Some(c),
            AuditRecord::Entry(_) => None,
        })
        .collect()
}

fn check_against(lines: &[Vec<u8>], held: &[Checkpoint]) -> Result<VerifyReport, VerifyError> {
    verify_export_against(Cursor::new(lines.concat()), &key().verifying_key(), held)
}

#[test]
fn the_report_names_the_last_checkpoint() {
    let (_log, lines) = sample();
    let report = check(&lines).unwrap();
    assert_eq!(
        report.last_checkpoint,
        Some(CheckpointSummary {
            number: 3,
            seq: 7,
            time: t(100)
        })
    );
    // Cut after checkpoint 2: still verifies, and says where it ends.
    let report = check(&lines[..8]).unwrap();
    assert_eq!(
        report.last_checkpoint,
        Some(CheckpointSummary {
            number: 2,
            seq: 6,
            time: t(6)
        })
    );
    assert!(report.fully_signed());
    assert_eq!(report.witnessed_through, None);
}

#[test]
fn a_log_cut_after_a_checkpoint_a_peer_holds_is_refused_naming_the_seq() {
    let (_log, lines) = sample();
    let held = checkpoints_of(&lines);
    // The last entry and its checkpoint are cut off; checkpoint 2 is now
    // the last, so the file alone looks whole and fully signed.
    let cut = &lines[..8];
    assert!(check(cut).unwrap().fully_signed());
    let e = check_against(cut, &held).unwrap_err();
    match &e {
        VerifyError::Truncated {
            last,
            number,
            seq,
            time,
        } => {
            assert_eq!((*last, *number, *seq, *time), (Some(6), 3, 7, t(100)));
        }
        other => panic!("expected a truncation, got {other:?}"),
    }
    let msg = e.to_string();
    assert!(
        msg.contains("ends at seq 6") && msg.contains("checkpoint 3 for seq 7"),
        "{msg}"
    );
    // Holding only the older checkpoint, the witness sees that cut further.
    let e = check_against(&lines[..4], &held[1..2]).unwrap_err();
    assert!(
        matches!(
            e,
            VerifyError::Truncated {
                seq: 6,
                number: 2,
                ..
            }
        ),
        "{e}"
    );
    // Everything cut: an empty file.
    let e = check_against(&[], &held[..1]).unwrap_err();
    assert!(
        matches!(
            e,
            VerifyError::Truncated {
                last: None,
                seq: 3,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn an_intact_log_verifies_against_the_checkpoints_a_peer_holds() {
    let (log, lines) = sample();
    let held = checkpoints_of(&lines);
    let report = check_against(&lines, &held).unwrap();
    assert_eq!(report.witnessed_through, Some(7));
    assert_eq!(report.entries, 7);
    // A log that went on after the witness's checkpoints is fine too.
    fill(&log, 8, 8);
    let longer = export(&log);
    let report = check_against(&longer, &held[..2]).unwrap();
    assert_eq!(report.witnessed_through, Some(6));
    assert_eq!(report.last.map(|(s, _)| s), Some(8));
}

#[test]
fn a_fork_from_a_held_checkpoint_is_refused() {
    let (_log, lines) = sample();
    let held = checkpoints_of(&lines);
    // The same key rewrites history from entry 5 on and signs it anew: the
    // file verifies on its own.
    let forked = temp_log(3);
    fill(&forked, 1, 4);
    forked
        .append(
            Actor::Admin,
            AuditEvent::Approval,
            vec!["dataset:5".into()],
            json!({"n": 5, "rewritten": true}),
            t(5),
        )
        .unwrap();
    fill(&forked, 6, 7);
    assert!(forked.checkpoint(t(100)).unwrap().is_some());
    let lines_f = export(&forked);
    assert!(check(&lines_f).unwrap().fully_signed());
    // Checkpoint 2 held by a peer covers seq 6, whose digest now differs.
    let (line, seq, reason) = broken_line(check_against(&lines_f, &held[1..2]));
    assert_eq!((line, seq), (7, Some(6)));
    assert_eq!(reason, Broken::Fork { number: 2, seq: 6 });
    // Checkpoint 1 (seq 3) still agrees: the fork is after it.
    assert!(check_against(&lines_f, &held[..1]).is_ok());
    // Checkpoints renumbered: a peer's checkpoint 3 is for seq 7, but this
    // log has checkpoint 3 for seq 6.
    let renumbered = temp_log(100);
    fill(&renumbered, 1, 3);
    renumbered.checkpoint(t(3)).unwrap();
    fill(&renumbered, 4, 5);
    renumbered.checkpoint(t(5)).unwrap();
    fill(&renumbered, 6, 6);
    renumbered.checkpoint(t(6)).unwrap();
    fill(&renumbered, 7, 7);
    let lines_r = export(&renumbered);
    let (_, _, reason) = broken_line(check_against(&lines_r, &held[2..]));
    assert_eq!(
        reason,
        Broken::CheckpointFork {
            number: 3,
            seq: 6,
            held_seq: 7
        }
    );
}

#[test]
fn held_checkpoints_must_be_signed_by_the_node_and_agree() {
    let (_log, lines) = sample();
    let held = checkpoints_of(&lines);
    let mut forged = held[2].clone();
    forged.signature = sign(
        &SigningKey::from_bytes(&[9; 32]),
        SigningContext::AuditCheckpoint,
        &forged.signed_bytes().unwrap(),
    )
    .to_bytes();
    let e = check_against(&lines, &[forged]).unwrap_err();
    assert!(
        matches!(e, VerifyError::HeldSignature { number: 3, seq: 7 }),
        "{e}"
    );
    // Two genuine checkpoints numbered 2 for different seqs: the node
    // itself signed two histories.
    let other = temp_log(2);
    fill(&other, 1, 4);
    let theirs = checkpoints_of(&export(&other));
    assert_eq!((theirs[1].number, theirs[1].seq), (2, 4));
    let e = check_against(&lines, &[held[1].clone(), theirs[1].clone()]).unwrap_err();
    assert!(matches!(e, VerifyError::HeldFork { number: 2, .. }), "{e}");
}

mod witness {
    use super::*;
    use crate::identity::{NodeKey, PeerId};

    /// A member whose log signs a checkpoint every 2 entries.
    struct Member {
        peer: PeerId,
        log: AuditLog,
    }

    impl Member {
        fn new() -> Member {
            let key = NodeKey::generate().unwrap();
            let store: Arc<dyn Store> = Arc::new(SledStore::temporary().unwrap());
            Member {
                peer: key.peer_id(),
                log: AuditLog::open(store, key.signing_key().clone(), every(2)).unwrap(),
            }
        }

        /// The next `n` checkpoints, as announcements.
        fn announce(&self, n: u64) -> Vec<Vec<u8>> {
            let start = self.log.last().unwrap().map_or(0, |(s, _)| s) + 1;
            fill(&self.log, start, start + 2 * n - 1);
            checkpoints_of(&export(&self.log))
                .into_iter()
                .rev()
                .take(n as usize)
                .rev()
                .map(|c| self.announcement(c))
                .collect()
        }

        fn announcement(&self, checkpoint: Checkpoint) -> Vec<u8> {
            Announcement {
                peer: self.peer.to_string(),
                checkpoint,
            }
            .encode()
            .unwrap()
        }
    }

    struct Witness {
        held: PeerCheckpoints,
        audit: Arc<AuditLog>,
    }

    fn witness() -> Witness {
        let store: Arc<dyn Store> = Arc::new(SledStore::temporary().unwrap());
        let audit = Arc::new(
            AuditLog::open(store.clone(), SigningKey::from_bytes(&[5; 32]), every(64)).unwrap(),
        );
        Witness {
            held: PeerCheckpoints::open(store, audit.clone()).unwrap(),
            audit,
        }
    }

    fn offer(w: &Witness, m: &Member, bytes: &[u8]) -> Result<Offered, WitnessError> {
        w.held
            .receive(bytes, m.peer, m.peer, |p| *p == m.peer, t(0))
    }

    fn refusals(w: &Witness) -> usize {
        let lines = export(&w.audit);
        lines
            .iter()
            .filter(|l| {
                matches!(serde_json::from_slice(l).unwrap(),
                    AuditRecord::Entry(e) if e.event == AuditEvent::CheckpointRefused)
            })
            .count()
    }

    #[test]
    fn a_witness_keeps_the_latest_checkpoints_of_each_member_and_no_more() {
        let w = witness();
        let m = Member::new();
        let all = m.announce(KEEP_PER_PEER as u64 + 4);
        for a in &all {
            assert_eq!(offer(&w, &m, a).unwrap(), Offered::Stored);
        }
        // A re-announcement is not stored twice, and not a refusal.
        assert_eq!(
            offer(&w, &m, all.last().unwrap()).unwrap(),
            Offered::AlreadyHeld
        );
        let held = w.held.held(&m.peer.to_string()).unwrap();
        assert_eq!(held.len(), KEEP_PER_PEER);
        let numbers: Vec<u64> = held.iter().map(|h| h.checkpoint.number).collect();
        let expected: Vec<u64> = (5..=KEEP_PER_PEER as u64 + 4).collect();
        assert_eq!(numbers, expected);
        assert_eq!(refusals(&w), 0);

        // The export reads back as the member's checkpoints, and verifies
        // the member's log.
        let file = w.held.export(&m.peer.to_string()).unwrap();
        let read = read_held(Cursor::new(&file), &m.peer.to_string()).unwrap();
        assert_eq!(read.len(), KEEP_PER_PEER);
        let report = verify_export_against(
            Cursor::new(export(&m.log).concat()),
            &m.log.verifying_key(),
            &read,
        )
        .unwrap();
        assert_eq!(
            report.witnessed_through,
            Some(2 * (KEEP_PER_PEER as u64 + 4))
        );
        // Someone else's checkpoints are refused, naming the line.
        let other = Member::new();
        let e = read_held(Cursor::new(&file), &other.peer.to_string()).unwrap_err();
        assert!(e.to_string().starts_with("line 1: a checkpoint of"), "{e}");
        let e = read_held(Cursor::new(b"{\"peer\":1}\n"), "x").unwrap_err();
        assert!(e.to_string().starts_with("line 1: not a held"), "{e}");
    }

    #[test]
    fn rollbacks_forks_forgeries_and_strangers_are_refused_and_audited_with_a_limit() {
        let w = witness();
        let m = Member::new();
        let first = m.announce(3);
        assert_eq!(offer(&w, &m, &first[2]).unwrap(), Offered::Stored);

        // Rollback: an older checkpoint after a newer one.
        let e = offer(&w, &m, &first[0]).unwrap_err();
        assert!(
            matches!(
                e,
                WitnessError::Rollback {
                    number: 1,
                    held_number: 3,
                    ..
                }
            ),
            "{e}"
        );
        assert!(!e.is_invalid());

        // Fork: the member's log is truncated and re-grown; its new
        // checkpoint 3 is for other entries.
        let twin = Member {
            peer: m.peer,
            log: {
                let store: Arc<dyn Store> = Arc::new(SledStore::temporary().unwrap());
                let key = m.log.key.clone();
                AuditLog::open(store, key, every(2)).unwrap()
            },
        };
        twin.log
            .append(Actor::Admin, AuditEvent::Rejection, vec![], json!({}), t(0))
            .unwrap();
        let forked = twin.announce(3);
        let e = offer(&w, &m, &forked[2]).unwrap_err();
        assert!(matches!(e, WitnessError::Fork { number: 3, .. }), "{e}");

        // A forged signature, and a member that is not admitted.
        let mut c: Announcement = serde_json::from_slice(&first[2]).unwrap();
        c.checkpoint.number += 10;
        let forged = c.encode().unwrap();
        let e = offer(&w, &m, &forged).unwrap_err();
        assert!(
            matches!(e, WitnessError::Signature { .. }) && e.is_invalid(),
            "{e}"
        );
        let stranger = Member::new();
        let theirs = stranger.announce(1);
        let e = w
            .held
            .receive(
                &theirs[0],
                stranger.peer,
                stranger.peer,
                |p| *p == m.peer,
                t(0),
            )
            .unwrap_err();
        assert!(matches!(e, WitnessError::NotAdmitted(_)), "{e}");
        // Announced by someone other than the member.
        let e = w
            .held
            .receive(&theirs[0], m.peer, m.peer, |_| true, t(0))
            .unwrap_err();
        assert!(
            matches!(e, WitnessError::NotAuthor { .. }) && e.is_invalid(),
            "{e}"
        );
        // Oversized and malformed.
        let e = offer(&w, &m, &[b' '; 4096]).unwrap_err();
        assert!(matches!(e, WitnessError::TooLarge { .. }), "{e}");
        let e = offer(&w, &m, b"{}").unwrap_err();
        assert!(matches!(e, WitnessError::Malformed(_)), "{e}");

        // Nothing refused was stored.
        let held = w.held.held(&m.peer.to_string()).unwrap();
        assert_eq!(held.len(), 1);
        assert!(w.held.held(&stranger.peer.to_string()).unwrap().is_empty());
        // Seven refusals: the one relaying peer's first is audited, the rest
        // within the interval are not; the stranger relayed one of them.
        assert_eq!(refusals(&w), 2);
    }
}
