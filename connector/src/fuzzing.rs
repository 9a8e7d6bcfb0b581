//! The entry points the fuzz targets (`fuzz/`) and the corpus replay test
//! (`connector/tests/fuzz_corpus.rs`) share, so that a corpus file replays
//! through exactly the code the fuzzer ran. Not an API.
//!
//! Each function takes untrusted bytes, runs the decoder a peer, a file or
//! a caller reaches, and, when the bytes decode, the checks that come next
//! (signatures, chains, bounds). It returns whether the input was accepted
//! all the way; a bad input is an `Err` inside and `false` here, never a
//! panic. The keys and the clock are fixed so that the committed seeds,
//! signed with the same keys (see `examples/fuzz_seeds.rs`), reach past the
//! signature checks.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use bayspace_contracts::agreement::{AgreementId, SignedAgreement};
use bayspace_contracts::compliance::{Scenario, assess};
use ed25519_dalek::{SigningKey, VerifyingKey};
use futures::io::Cursor;
use time::OffsetDateTime;
use time::macros::datetime;

use crate::audit::verify_export;
use crate::catalog::{Catalog, IngestOutcome};
use crate::config::NodeConfig;
use crate::crypto::{DataKey, KEY_SIZE, SegmentBuf, SegmentCipher};
use crate::identity::{
    Anchor, Checks, MemberRole, MembershipBody, MembershipCredential, NodeKey, ResearcherChecks,
    ResearcherCredential, RevocationList, parse_prefix,
};
use crate::negotiator::wire::Message;
use crate::store::SledStore;
use crate::transfers::wire::{Frame, Incoming, read_incoming};

/// The trust anchor's key seed.
pub const ANCHOR_SEED: [u8; 32] = [0xa1; 32];
/// The member node's key seed: it publishes, provides, signs its
/// researchers' credentials and its audit checkpoints.
pub const MEMBER_SEED: [u8; 32] = [0xb2; 32];
/// The consumer node's key seed: it countersigns agreements.
pub const CONSUMER_SEED: [u8; 32] = [0xc3; 32];
/// The clock every check runs at.
pub const NOW: OffsetDateTime = datetime!(2026-03-01 09:00 UTC);
/// The agreement a transfer's segments are bound to.
pub const AGREEMENT: [u8; 16] = [0x5e; 16];

pub fn anchor_key() -> SigningKey {
    SigningKey::from_bytes(&ANCHOR_SEED)
}

pub fn anchors() -> Vec<VerifyingKey> {
    vec![anchor_key().verifying_key()]
}

pub fn member_key() -> Option<NodeKey> {
    NodeKey::from_seed(MEMBER_SEED).ok()
}

pub fn agreement_id() -> AgreementId {
    AgreementId::from_random(AGREEMENT)
}

/// The member's credential, which a researcher credential verifies
/// against.
pub fn membership() -> Option<MembershipCredential> {
    let key = member_key()?;
    let body = MembershipBody {
        serial: 1,
        institution: "Shenzhen Bay Laboratory".into(),
        region: "mainland:shenzhen".parse().ok()?,
        peer_id: key.peer_id(),
        prefixes: vec![parse_prefix("2001:db8:5a::/48").ok()?],
        roles: BTreeSet::from([MemberRole::Provider, MemberRole::Consumer]),
        not_before: datetime!(2026-01-01 00:00 UTC),
        not_after: datetime!(2026-12-31 23:59:59 UTC),
    };
    MembershipCredential::sign(body, &anchor_key()).ok()
}

fn text(bytes: &[u8]) -> Option<&str> {
    std::str::from_utf8(bytes).ok()
}

/// A negotiation message as `/bayspace/negotiation/1` carries it, with the
/// agreement and researcher credential inside checked as the negotiator
/// would.
pub fn negotiation_message(bytes: &[u8]) -> bool {
    let Ok(message) = Message::decode(bytes) else {
        return false;
    };
    match &message {
        Message::ContractRequest(r) => {
            let _ = credential(r.credential.as_bytes());
        }
        Message::ContractAgreement { agreement, .. } => {
            let _ = agreement.verify_provider(None);
        }
        Message::AgreementVerification { agreement, .. } => {
            let _ = agreement.verify(None, None);
        }
        _ => {}
    }
    // The digest re-encodes what was decoded: it must not fail on anything
    // `decode` let through.
    message.digest().is_ok()
}

/// A transfer stream as a consumer reads it: frames until the bytes end,
/// the segments opened with the key of the `Start` frame before them.
pub fn transfer_frames(bytes: &[u8]) -> bool {
    futures::executor::block_on(async {
        let mut reader = Cursor::new(bytes);
        let mut segment = SegmentBuf::new();
        let mut cipher = None;
        let mut accepted = true;
        let mut frames = 0usize;
        loop {
            match read_incoming(&mut reader, Some(&mut segment)).await {
                Ok(Incoming::Message(Frame::Start(start))) => {
                    match <[u8; KEY_SIZE]>::try_from(start.key.as_slice()) {
                        Ok(raw) => {
                            let key = DataKey::from_bytes(raw);
                            cipher = Some(SegmentCipher::new(
                                &key,
                                agreement_id().as_str(),
                                start.dataset_version,
                            ));
                        }
                        Err(_) => accepted = false,
                    }
                }
                Ok(Incoming::Message(_)) => {}
                Ok(Incoming::Segment { index, last }) => match &cipher {
                    Some(c) => accepted &= c.open(index, last, segment.as_ref()).is_ok(),
                    None => accepted = false,
                },
                Err(_) => break,
            }
            frames += 1;
        }
        let consumed = usize::try_from(reader.position()).is_ok_and(|p| p == bytes.len());
        accepted && frames > 0 && consumed
    })
}

thread_local! {
    /// The node's own catalog, opened once per thread: a store per input
    /// would make the fuzzer measure sled rather than the decoder.
    static CATALOG: Option<Catalog> = SledStore::temporary()
        .ok()
        .and_then(|store| Catalog::open(Arc::new(store)).ok());
}

/// A descriptor as gossip and catalog pages carry it, ingested as from an
/// admitted member.
pub fn catalog_descriptor(bytes: &[u8]) -> bool {
    CATALOG.with(|catalog| {
        catalog.as_ref().is_some_and(|c| {
            matches!(
                c.ingest_bytes(bytes, |_| true, NOW),
                Ok(IngestOutcome::Stored | IngestOutcome::Unchanged | IngestOutcome::Stale)
            )
        })
    })
}

/// A credential file, a researcher credential from a contract request, a
/// revocation list or an anchor's public key file: whichever the text
/// parses as, verified against the fixed anchor.
pub fn credential(bytes: &[u8]) -> bool {
    let Some(text) = text(bytes) else {
        return false;
    };
    let path = Path::new("fuzz-input");
    let anchors = anchors();
    let mut accepted = false;
    if let Ok(list) = RevocationList::from_json(text, path) {
        let mut current = None;
        accepted |= RevocationList::accept_newer(&mut current, list, &anchors).is_ok();
    }
    if let Ok(c) = MembershipCredential::from_json(text, path) {
        accepted |= c.verify(&anchors, NOW, &Checks::default()).is_ok();
    }
    if let Ok(c) = ResearcherCredential::from_json(text, path)
        && let Some(m) = membership()
    {
        accepted |= c
            .verify(&m, &anchors, NOW, &ResearcherChecks::default())
            .is_ok();
    }
    accepted |= Anchor::parse(text, path).is_ok();
    accepted
}

/// A signed agreement, in the CBOR of the negotiation wire or in JSON,
/// verified with both signatures.
pub fn agreement(bytes: &[u8]) -> bool {
    let cbor = cbor4ii::serde::from_slice::<SignedAgreement>(bytes).ok();
    let json = serde_json::from_slice::<SignedAgreement>(bytes).ok();
    let mut accepted = false;
    for a in cbor.iter().chain(json.iter()) {
        accepted |= a.verify(None, None).is_ok();
    }
    accepted
}

/// An audit export (`bayspace audit export`), verified offline against the
/// member's key.
pub fn audit_export(bytes: &[u8]) -> bool {
    let Some(key) = member_key() else {
        return false;
    };
    verify_export(bytes, &key.verifying_key()).is_ok()
}

/// `config.toml`.
///
/// # Panics
///
/// When a configuration that parsed does not read back the same after
/// `render`: `bayspace init` writes what `render` gives, so that is a bug
/// for the fuzzer to report.
pub fn config(bytes: &[u8]) -> bool {
    let Some(text) = text(bytes) else {
        return false;
    };
    let path = Path::new("config.toml");
    let Ok(config) = NodeConfig::parse(text, path) else {
        return false;
    };
    let again = NodeConfig::parse(&config.render(), path).ok();
    assert_eq!(again.as_ref(), Some(&config), "render does not read back");
    true
}

/// The `bayspace assess` input: parsed the way the command parses it (the
/// command lives in the binary), then assessed and the result encoded.
pub fn assess_scenario(bytes: &[u8]) -> bool {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let Ok(scenario) = serde_path_to_error::deserialize::<_, Scenario>(&mut de) else {
        return false;
    };
    if de.end().is_err() {
        return false;
    }
    serde_json::to_string(&assess(&scenario)).is_ok()
}

/// A target's entry point: untrusted bytes in, whether they were accepted
/// out.
pub type Target = fn(&[u8]) -> bool;

/// Every target of this crate, by the name of its fuzz target and corpus
/// directory.
pub const TARGETS: &[(&str, Target)] = &[
    ("negotiation_message", negotiation_message),
    ("transfer_frames", transfer_frames),
    ("catalog_descriptor", catalog_descriptor),
    ("credential", credential),
    ("agreement", agreement),
    ("audit_export", audit_export),
    ("config", config),
    ("assess_scenario", assess_scenario),
];
