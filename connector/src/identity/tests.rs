//! Tests across the identity module: issue, serialise, tamper, verify.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;

use ed25519_dalek::SigningKey;
use serde_json::{Value, json};
use time::Duration;
use time::macros::datetime;

use super::*;

const NOW: time::OffsetDateTime = datetime!(2025-06-01 00:00:00 UTC);

fn anchor() -> SigningKey {
    SigningKey::from_bytes(&[1; 32])
}

fn node() -> NodeKey {
    NodeKey::from_seed([2; 32]).unwrap()
}

fn body(node: &NodeKey) -> MembershipBody {
    MembershipBody {
        serial: 7,
        institution: "Example University".into(),
        region: "hk".parse().unwrap(),
        peer_id: node.peer_id(),
        prefixes: vec![parse_prefix("2001:db8:10::/48").unwrap()],
        roles: BTreeSet::from([MemberRole::Provider]),
        not_before: datetime!(2025-01-01 00:00:00 UTC),
        not_after: datetime!(2025-12-31 23:59:59 UTC),
    }
}

fn membership() -> MembershipCredential {
    MembershipCredential::sign(body(&node()), &anchor()).unwrap()
}

fn revocations(seq: u64, revoked: &[u64], key: &SigningKey) -> RevocationList {
    RevocationList::sign(
        RevocationBody {
            seq,
            issued_at: NOW,
            revoked: revoked.iter().copied().collect(),
        },
        key,
    )
    .unwrap()
}

fn anchors() -> Vec<ed25519_dalek::VerifyingKey> {
    vec![
        SigningKey::from_bytes(&[9; 32]).verifying_key(),
        anchor().verifying_key(),
    ]
}

fn verify(c: &MembershipCredential, checks: &Checks<'_>) -> Result<MembershipBody, VerifyError> {
    c.verify(&anchors(), NOW, checks).cloned()
}

#[test]
fn a_valid_credential_verifies_with_every_check() {
    let c = membership();
    let list = revocations(1, &[3, 8], &anchor());
    let checks = Checks {
        peer_id: Some(node().peer_id()),
        addr: Some("2001:db8:10:ffff::1".parse().unwrap()),
        revocations: Some(&list),
        role: Some(MemberRole::Provider),
    };
    assert_eq!(verify(&c, &checks).unwrap().serial, 7);
}

#[test]
fn unknown_issuer() {
    let stranger = SigningKey::from_bytes(&[3; 32]);
    let c = MembershipCredential::sign(body(&node()), &stranger).unwrap();
    assert!(matches!(
        verify(&c, &Checks::default()),
        Err(VerifyError::UnknownIssuer { .. })
    ));
}

#[test]
fn bad_signature_for_every_tampered_field() {
    let c = membership();
    let original: Value = serde_json::from_str(&c.to_json()).unwrap();
    let other_peer = NodeKey::from_seed([4; 32]).unwrap().peer_id().to_string();
    let replacements = json!({
        "serial": 8,
        "institution": "Example Universitx",
        "region": "macao",
        "peer_id": other_peer,
        "prefixes": ["2001:db8:11::/48"],
        "roles": ["consumer", "provider"],
        "not_before": "2024-01-01T00:00:00Z",
        "not_after": "2026-12-31T23:59:59Z",
    });
    let fields: BTreeSet<&String> = original["body"].as_object().unwrap().keys().collect();
    let replaced: BTreeSet<&String> = replacements.as_object().unwrap().keys().collect();
    assert_eq!(fields, replaced, "every signed field is tampered with");
    for (field, value) in replacements.as_object().unwrap() {
        let mut doc = original.clone();
        doc["body"][field] = value.clone();
        let tampered =
            MembershipCredential::from_json(&doc.to_string(), Path::new("t.cred")).unwrap();
        assert_eq!(
            verify(&tampered, &Checks::default()),
            Err(VerifyError::BadSignature {
                context: bayspace_contracts::signing::SigningContext::MembershipCredential
            }),
            "tampered {field} accepted"
        );
    }
    // Swapping in another anchor's key as signer is refused too.
    let mut doc = original.clone();
    doc["signer"] = json!(bayspace_contracts::signing::b64::encode(
        SigningKey::from_bytes(&[9; 32]).verifying_key().as_bytes()
    ));
    let swapped = MembershipCredential::from_json(&doc.to_string(), Path::new("t")).unwrap();
    assert!(matches!(
        verify(&swapped, &Checks::default()),
        Err(VerifyError::BadSignature { .. })
    ));
}

#[test]
fn validity_boundaries_are_inclusive() {
    let c = membership();
    let b = c.body();
    let at = |t| c.verify(&anchors(), t, &Checks::default()).map(|_| ());
    assert_eq!(at(b.not_after), Ok(()));
    assert_eq!(at(b.not_before), Ok(()));
    assert_eq!(
        at(b.not_after + Duration::SECOND),
        Err(VerifyError::Expired {
            not_after: b.not_after
        })
    );
    assert_eq!(
        at(b.not_after + Duration::milliseconds(1)),
        Err(VerifyError::Expired {
            not_after: b.not_after
        })
    );
    assert_eq!(
        at(b.not_before - Duration::SECOND),
        Err(VerifyError::NotYetValid {
            not_before: b.not_before
        })
    );
    let e = at(b.not_after + Duration::SECOND).unwrap_err().to_string();
    assert!(e.contains("2025-12-31T23:59:59Z"), "{e}");
}

#[test]
fn revoked_serial() {
    let c = membership();
    let list = revocations(2, &[7], &anchor());
    let checks = Checks {
        revocations: Some(&list),
        ..Checks::default()
    };
    assert_eq!(verify(&c, &checks), Err(VerifyError::Revoked { serial: 7 }));
    // A list not signed by an anchor is not applied, and says so.
    let forged = revocations(3, &[], &SigningKey::from_bytes(&[3; 32]));
    let checks = Checks {
        revocations: Some(&forged),
        ..Checks::default()
    };
    assert!(matches!(
        verify(&c, &checks),
        Err(VerifyError::RevocationList(e)) if matches!(*e, VerifyError::UnknownIssuer { .. })
    ));
}

#[test]
fn peer_id_mismatch_names_both() {
    let other = NodeKey::from_seed([4; 32]).unwrap().peer_id();
    let checks = Checks {
        peer_id: Some(other),
        ..Checks::default()
    };
    let e = verify(&membership(), &checks).unwrap_err();
    assert_eq!(
        e,
        VerifyError::PeerIdMismatch {
            expected: Box::new(other),
            found: Box::new(node().peer_id())
        }
    );
    let msg = e.to_string();
    assert!(msg.contains(&other.to_string()) && msg.contains(&node().peer_id().to_string()));
}

#[test]
fn address_one_bit_outside_the_prefix() {
    let c = membership();
    let check = |a: &str| {
        let addr: IpAddr = a.parse().unwrap();
        verify(
            &c,
            &Checks {
                addr: Some(addr),
                ..Checks::default()
            },
        )
        .map(|_| ())
    };
    assert_eq!(check("2001:db8:10::1"), Ok(()));
    assert_eq!(check("2001:db8:10:ffff:ffff:ffff:ffff:ffff"), Ok(()));
    // 2001:db8:10::/48 ends at bit 48; flip bit 47 (the last prefix bit).
    let e = check("2001:db8:11::1").unwrap_err();
    assert!(
        matches!(e, VerifyError::AddressOutsidePrefixes { ref prefixes, .. } if prefixes.len() == 1),
        "{e}"
    );
    assert!(e.to_string().contains("2001:db8:10::/48"), "{e}");
    assert!(matches!(
        check("192.0.2.1"),
        Err(VerifyError::AddressOutsidePrefixes { .. })
    ));
}

#[test]
fn missing_role() {
    let checks = Checks {
        role: Some(MemberRole::Consumer),
        ..Checks::default()
    };
    assert_eq!(
        verify(&membership(), &checks),
        Err(VerifyError::MissingRole {
            role: "consumer".into()
        })
    );
}

#[test]
fn authenticity_is_checked_before_anything_else() {
    // An expired credential from an unknown issuer reports the issuer.
    let mut b = body(&node());
    b.not_after = datetime!(2025-01-02 00:00:00 UTC);
    let c = MembershipCredential::sign(b, &SigningKey::from_bytes(&[3; 32])).unwrap();
    assert!(matches!(
        verify(&c, &Checks::default()),
        Err(VerifyError::UnknownIssuer { .. })
    ));
}

#[test]
fn files_round_trip_and_parse_strictly() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("membership.cred");
    let c = membership();
    c.write(&p, Overwrite::Refuse).unwrap();
    assert_eq!(MembershipCredential::read(&p).unwrap(), c);
    let text = c.to_json();

    let v2 = text.replace(MEMBERSHIP_FORMAT, "bayspace/membership-credential/2");
    let e = MembershipCredential::from_json(&v2, &p).unwrap_err();
    assert!(matches!(e, FileError::UnknownFormat { .. }), "{e}");
    assert!(e.to_string().contains("membership.cred"), "{e}");

    // A researcher credential is not a membership credential.
    let other = text.replace(MEMBERSHIP_FORMAT, RESEARCHER_FORMAT);
    assert!(matches!(
        MembershipCredential::from_json(&other, &p),
        Err(FileError::UnknownFormat { .. })
    ));

    let mut doc: Value = serde_json::from_str(&text).unwrap();
    doc["body"]["comment"] = json!("hi");
    let e = MembershipCredential::from_json(&doc.to_string(), &p).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, FileError::Malformed { .. }), "{msg}");
    assert!(msg.contains("comment") && msg.contains("body"), "{msg}");

    let mut doc: Value = serde_json::from_str(&text).unwrap();
    doc["extra"] = json!(1);
    let e = MembershipCredential::from_json(&doc.to_string(), &p).unwrap_err();
    assert!(e.to_string().contains("extra"), "{e}");

    let mut doc: Value = serde_json::from_str(&text).unwrap();
    doc["body"]["not_after"] = json!("2025-12-31T23:59:59+08:00");
    let e = MembershipCredential::from_json(&doc.to_string(), &p).unwrap_err();
    assert!(e.to_string().contains("body.not_after"), "{e}");

    let mut doc: Value = serde_json::from_str(&text).unwrap();
    doc["body"]["roles"] = json!([]);
    let e = MembershipCredential::from_json(&doc.to_string(), &p).unwrap_err();
    assert!(e.to_string().contains("body.roles"), "{e}");
}

#[test]
fn issuing_refuses_bad_bodies() {
    let mut b = body(&node());
    b.not_after = b.not_before - Duration::SECOND;
    assert!(matches!(
        MembershipCredential::sign(b, &anchor()),
        Err(SignError::Invalid(InvalidBody {
            field: "not_after",
            ..
        }))
    ));
    let mut b = body(&node());
    b.region = "foreign:de".parse().unwrap();
    assert!(matches!(
        MembershipCredential::sign(b, &anchor()),
        Err(SignError::Invalid(InvalidBody {
            field: "region",
            ..
        }))
    ));
    let mut b = body(&node());
    b.not_before = NOW + Duration::milliseconds(5);
    assert!(matches!(
        MembershipCredential::sign(b, &anchor()),
        Err(SignError::Canonical(_))
    ));
}

#[test]
fn revocation_lists_only_move_forward() {
    let keys = anchors();
    let mut current = None;
    assert_eq!(
        RevocationList::accept_newer(&mut current, revocations(2, &[1], &anchor()), &keys),
        Ok(true)
    );
    // Older and equal lists do not replace it.
    assert_eq!(
        RevocationList::accept_newer(&mut current, revocations(1, &[], &anchor()), &keys),
        Ok(false)
    );
    assert_eq!(
        RevocationList::accept_newer(&mut current, revocations(2, &[1], &anchor()), &keys),
        Ok(false)
    );
    assert_eq!(
        RevocationList::accept_newer(&mut current, revocations(2, &[1, 5], &anchor()), &keys),
        Err(VerifyError::SequenceConflict { seq: 2 })
    );
    // Unsigned by an anchor: refused, current unchanged.
    assert!(matches!(
        RevocationList::accept_newer(
            &mut current,
            revocations(9, &[], &SigningKey::from_bytes(&[3; 32])),
            &keys
        ),
        Err(VerifyError::UnknownIssuer { .. })
    ));
    assert_eq!(current.as_ref().map(|l| l.body().seq), Some(2));
    assert_eq!(
        RevocationList::accept_newer(&mut current, revocations(3, &[1, 5], &anchor()), &keys),
        Ok(true)
    );
    assert!(current.as_ref().is_some_and(|l| l.is_revoked(5)));
}

fn researcher_body(issuer: libp2p_identity::PeerId) -> ResearcherBody {
    ResearcherBody {
        id: "staff-0042".into(),
        name: "Chan Tai Man".into(),
        orcid: Some("0000-0002-1825-0097".parse().unwrap()),
        roles: BTreeSet::from([ResearcherRole::Researcher]),
        issuer,
        not_before: datetime!(2025-03-01 00:00:00 UTC),
        not_after: datetime!(2025-09-01 00:00:00 UTC),
    }
}

#[test]
fn researcher_credential_chains_to_the_membership() {
    let n = node();
    let m = membership();
    let r = ResearcherCredential::issue(researcher_body(n.peer_id()), &n).unwrap();
    let keys = anchors();
    let ok = r
        .verify(&m, &keys, NOW, &ResearcherChecks::default())
        .unwrap();
    assert_eq!(ok.id, "staff-0042");

    // Round trip through the file format.
    let again = ResearcherCredential::from_json(&r.to_json(), Path::new("r.cred")).unwrap();
    assert_eq!(again, r);

    // Another institution's key, claiming this institution: refused.
    let other = NodeKey::from_seed([5; 32]).unwrap();
    let forged =
        ResearcherCredential::sign(researcher_body(n.peer_id()), other.signing_key()).unwrap();
    assert!(matches!(
        forged.verify(&m, &keys, NOW, &ResearcherChecks::default()),
        Err(VerifyError::UnknownIssuer { .. })
    ));
    // `issue` refuses to sign for another node.
    assert!(ResearcherCredential::issue(researcher_body(n.peer_id()), &other).is_err());

    // Issued by another node than the membership names.
    let elsewhere = ResearcherCredential::issue(researcher_body(other.peer_id()), &other).unwrap();
    assert_eq!(
        elsewhere.verify(&m, &keys, NOW, &ResearcherChecks::default()),
        Err(VerifyError::PeerIdMismatch {
            expected: Box::new(n.peer_id()),
            found: Box::new(other.peer_id())
        })
    );

    // A revoked institution takes its researchers with it.
    let list = revocations(1, &[7], &anchor());
    let checks = ResearcherChecks {
        revocations: Some(&list),
        role: None,
    };
    assert_eq!(
        r.verify(&m, &keys, NOW, &checks),
        Err(VerifyError::Membership(Box::new(VerifyError::Revoked {
            serial: 7
        })))
    );

    // Role and window.
    let checks = ResearcherChecks {
        revocations: None,
        role: Some(ResearcherRole::Administrator),
    };
    assert_eq!(
        r.verify(&m, &keys, NOW, &checks),
        Err(VerifyError::MissingRole {
            role: "administrator".into()
        })
    );
    let later = datetime!(2025-09-01 00:00:01 UTC);
    assert!(matches!(
        r.verify(&m, &keys, later, &ResearcherChecks::default()),
        Err(VerifyError::Expired { .. })
    ));
}

#[test]
fn researcher_fields_are_validated() {
    let n = node();
    let mut doc: Value = serde_json::from_str(
        &ResearcherCredential::issue(researcher_body(n.peer_id()), &n)
            .unwrap()
            .to_json(),
    )
    .unwrap();
    doc["body"]["orcid"] = json!("0000-0002-1825-0098");
    let e = ResearcherCredential::from_json(&doc.to_string(), Path::new("r.cred")).unwrap_err();
    assert!(e.to_string().contains("body.orcid"), "{e}");

    let mut b = researcher_body(n.peer_id());
    b.id = "staff 42".into();
    assert!(ResearcherCredential::issue(b, &n).is_err());
    let mut b = researcher_body(n.peer_id());
    b.orcid = None;
    let r = ResearcherCredential::issue(b, &n).unwrap();
    assert!(!r.to_json().contains("orcid"));
}
