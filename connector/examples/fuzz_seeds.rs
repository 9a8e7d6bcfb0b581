//! Writes the seed inputs of the fuzz targets: real encodings, made by the
//! code that makes them in a node, with the keys and clock of
//! `bayspace_connector::fuzzing` so that they get past the signature and
//! validity checks. The fuzzer mutates from there.
//!
//! `cargo run -p bayspace-connector --example fuzz_seeds -- fuzz/corpus`
//! (re)writes `seed-*` files in each target's directory and leaves every
//! other corpus file alone.

use std::collections::BTreeSet;
use std::error::Error;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bayspace_connector::audit::{Actor, AuditEvent, AuditLog};
use bayspace_connector::catalog::{self, Catalog, NewDataset};
use bayspace_connector::config::{AdminToken, NodeConfig};
use bayspace_connector::crypto::{DataKey, SegmentCipher};
use bayspace_connector::fuzzing::{self, NOW};
use bayspace_connector::identity::{
    Anchor, NodeKey, Overwrite, ResearcherBody, ResearcherCredential, ResearcherRole,
    RevocationBody, RevocationList,
};
use bayspace_connector::negotiator::wire::{ContractRequest, Message};
use bayspace_connector::store::SledStore;
use bayspace_connector::transfers::wire::{
    Frame, ReleaseId, TransferRequest, TransferStart, write_frame, write_segment,
};
use bayspace_contracts::agreement::{Agreement, NegotiationId, Researcher, SignedAgreement};
use bayspace_contracts::classification::DataLevel;
use bayspace_contracts::compliance::{GbaVariant, Obligation, Route};
use bayspace_contracts::descriptor::{
    ApprovalMode, Digest, Institution, PublicKey, SignedDescriptor,
};
use bayspace_contracts::negotiation::State;
use bayspace_contracts::policy::RegionSet;
use zeroize::Zeroizing;

type Res<T> = Result<T, Box<dyn Error>>;

fn institution(key: &NodeKey, name: &str, region: &str) -> Res<Institution> {
    Ok(Institution {
        name: name.into(),
        region: region.parse()?,
        peer_id: key.peer_id().to_string(),
        key: PublicKey::from(&key.verifying_key()),
    })
}

fn descriptor(member: &NodeKey, dir: &Path) -> Res<SignedDescriptor> {
    let file = dir.join("cohort.csv");
    std::fs::write(&file, b"id,age\n1,42\n2,37\n")?;
    let catalog = Catalog::open(Arc::new(SledStore::temporary()?))?;
    let new = NewDataset {
        path: file,
        title: "Diabetes cohort 2024".into(),
        description: "Anonymised records".into(),
        keywords: vec!["health".into(), "糖尿病".into()],
        region: None,
        level: DataLevel::General,
        personal_individuals: 0,
        sensitive_individuals: 0,
        categories: vec![],
        collected_abroad: false,
        purposes: vec!["academic-research".parse()?],
        recipient_regions: RegionSet::GbaOnly,
        approval: ApprovalMode::Manual,
        valid_days: Some(365),
        valid_until: None,
        use_limit: Some(3),
        delete_by: None,
        replaces: None,
    };
    let publisher = institution(member, "Shenzhen Bay Laboratory", "mainland:shenzhen")?;
    Ok(catalog.publish(new, member, publisher, NOW, [3; 16])?)
}

fn agreement(d: &SignedDescriptor, member: &NodeKey, consumer: &NodeKey) -> Res<SignedAgreement> {
    let d = &d.descriptor;
    let offer = d.offers.first().ok_or("the descriptor has no offer")?;
    let a = Agreement {
        id: fuzzing::agreement_id(),
        negotiation: NegotiationId::from_random([4; 16]),
        dataset: d.id.clone(),
        dataset_version: d.version,
        offer: offer.id.clone(),
        provider: d.publisher.clone(),
        consumer: institution(consumer, "University of Hong Kong", "hk")?,
        researcher: Researcher {
            id: "r-0a1b2c3d".into(),
            name: "Dr Chan".into(),
            orcid: None,
        },
        purpose: "academic-research".parse()?,
        constraints: offer.policy.clone(),
        not_before: NOW,
        not_after: NOW + time::Duration::days(30),
        route: Route::GbaStandardContract,
        variant: Some(GbaVariant::MainlandHk),
        obligations: vec![Obligation::Filing10WorkingDays],
        certificate: None,
        created: NOW,
    };
    Ok(SignedAgreement::sign_as_provider(a, member.signing_key())?
        .countersign(consumer.signing_key(), None)?)
}

fn researcher(member: &NodeKey) -> Res<ResearcherCredential> {
    let body = ResearcherBody {
        id: "r-0a1b2c3d".into(),
        name: "Dr Chan".into(),
        orcid: None,
        roles: BTreeSet::from([ResearcherRole::Researcher]),
        issuer: member.peer_id(),
        not_before: NOW - time::Duration::days(1),
        not_after: NOW + time::Duration::days(90),
    };
    Ok(ResearcherCredential::sign(body, member.signing_key())?)
}

fn messages(
    d: &SignedDescriptor,
    signed: &SignedAgreement,
    credential: &ResearcherCredential,
) -> Res<Vec<Vec<u8>>> {
    let negotiation = signed.agreement.negotiation.clone();
    let half = SignedAgreement {
        consumer_signature: None,
        ..signed.clone()
    };
    let all = [
        Message::ContractRequest(ContractRequest {
            negotiation: negotiation.clone(),
            dataset: d.descriptor.id.clone(),
            dataset_version: d.descriptor.version,
            offer: signed.agreement.offer.clone(),
            purpose: "academic-research".parse()?,
            credential: credential.to_json(),
        }),
        Message::ContractAgreement {
            negotiation: negotiation.clone(),
            agreement: Box::new(half),
        },
        Message::AgreementVerification {
            negotiation: negotiation.clone(),
            agreement: Box::new(signed.clone()),
        },
        Message::Termination {
            negotiation: negotiation.clone(),
            reasons: vec!["the use limit is reached".into()],
        },
        Message::Ack {
            negotiation,
            state: State::Finalized,
        },
    ];
    Ok(all
        .iter()
        .map(Message::encode)
        .collect::<Result<Vec<_>, _>>()?)
}

/// A whole release as the consumer reads it, request to `Done`.
/// A whole transfer stream; `release`: the request names its release, as
/// consumers since release ids do.
fn transfer(release: bool) -> Res<Vec<u8>> {
    let key = [9u8; 32];
    let cipher = SegmentCipher::new(
        &DataKey::from_bytes(key),
        fuzzing::agreement_id().as_str(),
        1,
    );
    let parts: [&[u8]; 2] = [b"id,age\n1,42\n", b"2,37\n"];
    let content_hash = Digest::of(&parts.concat());
    let mut out = Vec::new();
    futures::executor::block_on(async {
        write_frame(
            &mut out,
            &Frame::Request(TransferRequest {
                agreement: fuzzing::agreement_id(),
                researcher: "r-0a1b2c3d".into(),
                from_segment: 0,
                release: release.then_some(ReleaseId([0x5c; 16])),
            }),
        )
        .await?;
        write_frame(
            &mut out,
            &Frame::Start(TransferStart {
                key: Zeroizing::new(key.to_vec()),
                dataset_version: 1,
                size: 17,
                segments: 2,
                content_hash,
                from_segment: 0,
            }),
        )
        .await?;
        for (i, part) in (0u32..).zip(parts) {
            let last = i == 1;
            let sealed = cipher.seal(i, last, part)?;
            write_segment(&mut out, i, last, &sealed).await?;
        }
        write_frame(&mut out, &Frame::Completion { hash: content_hash }).await?;
        write_frame(&mut out, &Frame::Done).await?;
        Ok::<_, Box<dyn Error>>(())
    })?;
    Ok(out)
}

fn audit_export(member: &NodeKey) -> Res<Vec<u8>> {
    let every = NonZeroU64::new(2).ok_or("zero")?;
    let log = AuditLog::open(
        Arc::new(SledStore::temporary()?),
        member.signing_key().clone(),
        every,
    )?;
    let events = [
        AuditEvent::ContractRequested,
        AuditEvent::Assessment,
        AuditEvent::Approval,
        AuditEvent::KeyReleased,
        AuditEvent::TransferCompleted,
    ];
    for (i, event) in (0i64..).zip(events) {
        log.append(
            Actor::Peer(member.peer_id().to_string()),
            event,
            vec![format!("subject-{i}")],
            serde_json::json!({ "n": i }),
            NOW + time::Duration::seconds(i),
        )?;
    }
    let mut out = Vec::new();
    log.export(&mut out)?;
    Ok(out)
}

fn config() -> Res<Vec<u8>> {
    let token = AdminToken::generate()?;
    let mut c = NodeConfig::new(
        "Shenzhen Bay Laboratory".into(),
        "mainland:shenzhen".parse()?,
        &token,
    );
    c.bootstrap = vec!["/ip6/2001:db8:6b::1/udp/4710/quic-v1".into()];
    Ok(c.render().into_bytes())
}

const SCENARIOS: [&str; 2] = [
    r#"{"date":"2026-11-23","exporter":{"region":"mainland:shenzhen"},"recipient":{"region":"hk"},"data":{"level":"general","personal_individuals":0,"sensitive_individuals":0},"records":{"pipia":true,"consent":true}}"#,
    r#"{"date":"2026-11-23","exporter":{"region":"hk"},"recipient":{"region":"mainland:guangzhou"},"data":{"level":"general","personal_individuals":120000,"sensitive_individuals":20000},"records":{"pipia":false,"consent":false}}"#,
];

const PLANS: [&str; 1] = [r#"name = "gba-research"
allow_ipv4 = false

[[institution]]
name = "Shenzhen Bay Laboratory"
region = "mainland:shenzhen"
prefixes = ["fd00:5a::/48", "2001:db8:5a::/48"]
p2p_port = 4710

[[institution]]
name = "University of Hong Kong"
region = "hk"
prefixes = ["2001:db8:6b::/48"]
grpc_port = 7411
"#];

fn write(root: &Path, target: &str, seeds: &[Vec<u8>]) -> Res<()> {
    let dir = root.join(target);
    std::fs::create_dir_all(&dir)?;
    for (i, seed) in seeds.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i}")), seed)?;
    }
    Ok(())
}

fn main() -> Res<()> {
    let root: PathBuf = std::env::args_os()
        .nth(1)
        .ok_or("usage: fuzz_seeds CORPUS_DIR")?
        .into();
    let dir = tempfile::tempdir()?;
    let member = fuzzing::member_key().ok_or("no member key")?;
    let consumer = NodeKey::from_seed(fuzzing::CONSUMER_SEED)?;
    let membership = fuzzing::membership().ok_or("no membership credential")?;
    let d = descriptor(&member, dir.path())?;
    let signed = agreement(&d, &member, &consumer)?;
    let credential = researcher(&member)?;
    let revocations = RevocationList::sign(
        RevocationBody {
            seq: 3,
            issued_at: NOW,
            revoked: BTreeSet::from([4, 9]),
        },
        &fuzzing::anchor_key(),
    )?;
    let anchor_file = dir.path().join("anchor.pub");
    Anchor {
        key: fuzzing::anchor_key().verifying_key(),
        name: Some("GBA research anchor".into()),
    }
    .write(&anchor_file, Overwrite::Refuse)?;

    write(
        &root,
        "negotiation_message",
        &messages(&d, &signed, &credential)?,
    )?;
    write(
        &root,
        "transfer_frames",
        &[transfer(false)?, transfer(true)?],
    )?;
    write(&root, "catalog_descriptor", &[catalog::encode(&d)?])?;
    write(
        &root,
        "credential",
        &[
            membership.to_json().into_bytes(),
            credential.to_json().into_bytes(),
            revocations.to_json().into_bytes(),
            std::fs::read(&anchor_file)?,
        ],
    )?;
    write(
        &root,
        "agreement",
        &[
            cbor4ii::serde::to_vec(Vec::new(), &signed)?,
            serde_json::to_vec_pretty(&signed)?,
        ],
    )?;
    write(&root, "audit_export", &[audit_export(&member)?])?;
    write(&root, "config", &[config()?])?;
    let scenarios: Vec<Vec<u8>> = SCENARIOS.iter().map(|s| s.as_bytes().to_vec()).collect();
    write(&root, "assess_scenario", &scenarios)?;
    let plans: Vec<Vec<u8>> = PLANS.iter().map(|s| s.as_bytes().to_vec()).collect();
    write(&root, "address_plan", &plans)?;
    Ok(())
}
