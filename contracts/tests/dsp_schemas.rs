//! Every DSP rendering checked against the Dataspace Protocol 2025-1 JSON
//! schemas, by the shared validator beside the project checkout
//! (`<checkout>/../shared`), or under `$BAYSPACE_SHARED` when that is set
//! (a git worktree elsewhere).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use bayspace_contracts::agreement::{
    Agreement, AgreementId, Certificate, NegotiationId, Researcher,
};
use bayspace_contracts::classification::{DataLevel, DataProfile};
use bayspace_contracts::compliance::{GbaVariant, Obligation, Route};
use bayspace_contracts::descriptor::{
    ApprovalMode, DatasetDescriptor, DatasetId, Digest, Institution, Offer, PublicKey,
};
use bayspace_contracts::dsp::{self, DataAddress, DataService, RequestStep};
use bayspace_contracts::policy::{
    Action, Constraint, Duty, DutyAction, Permission, Policy, Prohibition, RegionSet,
};
use ed25519_dalek::SigningKey;
use serde_json::Value;
use time::macros::{date, datetime};

/// The shared directory, when it holds the schemas and the validator.
fn shared() -> Option<PathBuf> {
    let dir = std::env::var_os("BAYSPACE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    let found = dir.join("dsp-2025-1").is_dir() && validator(&dir).is_file();
    if !found {
        skip_or_fail(&format!(
            "{}/dsp-2025-1 or tools/dsp-validate not found (set BAYSPACE_SHARED)",
            dir.display()
        ));
    }
    found.then_some(dir)
}

/// A check that cannot run here: said, and skipped; with
/// `BAYSPACE_REQUIRE_ALL=1` (set by CI), a failure instead.
fn skip_or_fail(reason: &str) {
    if std::env::var("BAYSPACE_REQUIRE_ALL").is_ok_and(|v| v == "1") {
        panic!("BAYSPACE_REQUIRE_ALL=1, but this check cannot run: {reason}");
    }
    println!("skipped: {reason}");
}

fn validator(shared: &Path) -> PathBuf {
    shared.join("tools/dsp-validate")
}

fn institution(seed: u8, name: &str, region: &str) -> Institution {
    Institution {
        name: name.into(),
        region: region.parse().unwrap(),
        peer_id: format!("12D3KooWPeer{seed}"),
        key: PublicKey::from(&SigningKey::from_bytes(&[seed; 32]).verifying_key()),
    }
}

/// A policy that uses every constraint and rule kind.
fn policy() -> Policy {
    Policy {
        permissions: vec![Permission {
            action: Action::Use,
            constraints: vec![
                Constraint::Purpose {
                    is_any_of: vec!["academic-research".parse().unwrap()],
                },
                Constraint::RecipientRegion {
                    allowed: RegionSet::AnyOf(vec![
                        "hk".parse().unwrap(),
                        "mainland:guangzhou".parse().unwrap(),
                    ]),
                },
                Constraint::DateTime {
                    not_before: None,
                    not_after: Some(datetime!(2026-12-31 23:59:59 +8)),
                },
                Constraint::Count { lteq: 5 },
            ],
            duties: vec![Duty {
                action: DutyAction::Delete,
                constraints: vec![Constraint::Retention {
                    delete_by: date!(2027 - 06 - 30),
                }],
            }],
        }],
        prohibitions: vec![Prohibition {
            action: Action::Distribute,
            constraints: vec![Constraint::OnwardTransferOutsideGbaProhibited],
        }],
        obligations: vec![Duty {
            action: DutyAction::Delete,
            constraints: vec![Constraint::RecipientRegion {
                allowed: RegionSet::GbaOnly,
            }],
        }],
    }
}

fn descriptor(name: &str) -> DatasetDescriptor {
    let publisher = institution(1, "Shenzhen Bay Lab", "mainland:shenzhen");
    DatasetDescriptor {
        id: DatasetId::derive(&publisher.key, name),
        name: name.into(),
        version: 2,
        title: format!("Dataset {name}"),
        description: "Test data".into(),
        keywords: vec!["cohort".into()],
        publisher,
        region: "mainland:shenzhen".parse().unwrap(),
        profile: DataProfile {
            level: DataLevel::General,
            personal_individuals: 0,
            sensitive_individuals: 0,
            categories: vec![],
            collected_abroad: false,
        },
        content_hash: Digest::of(name.as_bytes()),
        size: 1024,
        offers: vec![
            Offer {
                id: "urn:bayspace:offer:a".parse().unwrap(),
                policy: policy(),
                approval: ApprovalMode::Manual,
            },
            Offer {
                id: "urn:bayspace:offer:b".parse().unwrap(),
                policy: Policy {
                    permissions: vec![Permission {
                        action: Action::Use,
                        constraints: vec![],
                        duties: vec![],
                    }],
                    ..Policy::default()
                },
                approval: ApprovalMode::Auto,
            },
        ],
        issued: datetime!(2025-03-01 8:00 +8),
        withdrawn: false,
    }
}

fn agreement(d: &DatasetDescriptor) -> Agreement {
    Agreement {
        id: AgreementId::from_random([1; 16]),
        negotiation: NegotiationId::from_random([2; 16]),
        dataset: d.id.clone(),
        dataset_version: d.version,
        offer: d.offers[0].id.clone(),
        provider: d.publisher.clone(),
        consumer: institution(2, "University of Macau", "macao"),
        researcher: Researcher {
            name: "Dr Leong".into(),
            orcid: None,
            id: "r-0a1b2c3d".into(),
        },
        purpose: "academic-research".parse().unwrap(),
        constraints: policy(),
        not_before: datetime!(2025-04-01 0:00 UTC),
        not_after: datetime!(2025-12-31 23:59:59.5 UTC),
        route: Route::GbaStandardContract,
        variant: Some(GbaVariant::MainlandMacao),
        obligations: vec![Obligation::Filing10WorkingDays],
        created: datetime!(2025-03-15 10:30 +8),
        certificate: None,
    }
}

fn renderings() -> Vec<(&'static str, &'static str, Value)> {
    let service = DataService {
        id: "urn:bayspace:service:12D3KooWPeer1".into(),
        endpoint_url: "/ip6/2001:db8::1/udp/4001/quic-v1".into(),
    };
    let d = descriptor("cohort");
    let mut withdrawn = descriptor("old");
    withdrawn.withdrawn = true;
    let a = agreement(&d);
    let mut certified = agreement(&d);
    certified.route = Route::Certification;
    certified.variant = None;
    certified.obligations = vec![Obligation::CertificationRenewal];
    certified.certificate = Some(Certificate {
        reference: "CQC-PI-2026-0042".into(),
        valid_until: date!(2028 - 08 - 31),
    });
    let o = &d.offers[0];
    vec![
        (
            "catalog",
            "catalog",
            dsp::catalog(
                "urn:bayspace:catalog:12D3KooWPeer1",
                "12D3KooWPeer1",
                &service,
                &[d.clone(), descriptor("other"), withdrawn],
            )
            .unwrap(),
        ),
        (
            "catalog-empty",
            "catalog",
            dsp::catalog("urn:bayspace:catalog:x", "12D3KooWPeer1", &service, &[]).unwrap(),
        ),
        (
            "contract-request-initial",
            "contract-request",
            dsp::contract_request(
                "urn:uuid:c1",
                RequestStep::Initial {
                    callback_address: "/ip6/2001:db8::2/tcp/4001",
                },
                &o.id,
                &d.id,
                &o.policy,
            )
            .unwrap(),
        ),
        (
            "contract-request-counter",
            "contract-request",
            dsp::contract_request(
                "urn:uuid:c1",
                RequestStep::Counter {
                    provider_pid: "urn:uuid:p1",
                },
                &d.offers[1].id,
                &d.id,
                &d.offers[1].policy,
            )
            .unwrap(),
        ),
        (
            "contract-agreement",
            "contract-agreement",
            dsp::contract_agreement("urn:uuid:p1", "urn:uuid:c1", &a).unwrap(),
        ),
        (
            "contract-agreement-certification",
            "contract-agreement",
            dsp::contract_agreement("urn:uuid:p1", "urn:uuid:c1", &certified).unwrap(),
        ),
        (
            "transfer-request",
            "transfer-request",
            dsp::transfer_request("urn:uuid:c2", &a.id, "/ip6/2001:db8::2/tcp/4001"),
        ),
        (
            "transfer-start",
            "transfer-start",
            dsp::transfer_start(
                "urn:uuid:p2",
                "urn:uuid:c2",
                Some(&DataAddress {
                    endpoint: "/ip6/2001:db8::1/udp/4001/quic-v1".into(),
                    properties: vec![("peerId".into(), "12D3KooWPeer1".into())],
                }),
            ),
        ),
        (
            "transfer-start-bare",
            "transfer-start",
            dsp::transfer_start("urn:uuid:p2", "urn:uuid:c2", None),
        ),
    ]
}

fn validate(shared: &Path, kind: &str, files: &[PathBuf]) -> (bool, String) {
    let out = Command::new(validator(shared))
        .arg(kind)
        .args(files)
        .output()
        .expect("run dsp-validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn renderings_match_the_dsp_2025_1_schemas() {
    let Some(shared) = shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let all = renderings();
    let mut kinds: Vec<&str> = all.iter().map(|(_, kind, _)| *kind).collect();
    kinds.sort_unstable();
    kinds.dedup();
    let mut failures = vec![];
    // One validator run per kind, with every file of that kind.
    for kind in kinds {
        let files: Vec<PathBuf> = all
            .iter()
            .filter(|(_, k, _)| *k == kind)
            .map(|(name, _, value)| {
                let file = dir.path().join(format!("{name}.json"));
                std::fs::write(&file, serde_json::to_vec_pretty(value).unwrap()).unwrap();
                file
            })
            .collect();
        let (ok, text) = validate(&shared, kind, &files);
        if !ok {
            failures.push(format!("{kind}:\n{text}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The validator must be able to fail, or the test above proves nothing.
#[test]
fn the_validator_refuses_a_broken_message() {
    let Some(shared) = shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut m = dsp::transfer_request(
        "urn:uuid:c2",
        &AgreementId::from_random([1; 16]),
        "/ip6/2001:db8::2/tcp/4001",
    );
    m.as_object_mut().unwrap().remove("agreementId");
    let file = dir.path().join("broken.json");
    std::fs::write(&file, serde_json::to_vec(&m).unwrap()).unwrap();
    let (ok, text) = validate(&shared, "transfer-request", &[file]);
    assert!(!ok, "{text}");
    // Refused for the field removed, and for nothing else.
    let reasons: Vec<&str> = text
        .lines()
        .filter(|l| l.trim().starts_with("at "))
        .collect();
    assert_eq!(
        reasons,
        ["  at /: 'agreementId' is a required property"],
        "{text}"
    );
}
