#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Certification as the third path, between real node processes: Shenzhen
//! University holds a PI export certificate for its cohort, so an HKU
//! researcher's request in the standard-contract band goes on route
//! `certification` instead of the GBA contract, from the request to
//! FINALIZED and the release. The refusal once the certificate has lapsed
//! needs a chosen clock and is unit-tested in
//! `connector/src/transfers/release.rs`.

use std::process::Command;

use bayspace_tests::pair::*;
use bayspace_tests::*;
use serde_json::Value;

const CERT: &str = "CQC-PI-2026-0042";

/// Today's date in GBA civil time plus `days`, as `YYYY-MM-DD`.
fn gba_date_in(days: i64) -> String {
    let d = time::OffsetDateTime::now_utc()
        .to_offset(time::UtcOffset::from_hms(8, 0, 0).unwrap())
        .date()
        + time::Duration::days(days);
    d.to_string()
}

#[test]
fn a_certified_exporter_agrees_and_releases_on_route_certification() {
    let p = Pair::start(false);
    let bytes: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let data = p.space.tmp.path().join("cohort.bin");
    std::fs::write(&data, &bytes).unwrap();
    let dataset = p.publish_file(
        &data,
        "Diabetes cohort 2026",
        &[
            "--personal",
            "150000",
            "--recipient-region",
            "hk",
            "--approval",
            "manual",
        ],
    );

    // Without a certificate the band goes onto the GBA contract.
    let (id, state) = p.request(&dataset, "academic-research");
    assert_eq!(state, "REQUESTED");
    let pending = p.wait_pending(&id);
    assert_eq!(pending["route"], "gba-standard-contract", "{pending}");
    assert_eq!(pending["certificate"], Value::Null, "{pending}");

    // A malformed date or a certificate without its date is refused,
    // naming the field, and nothing changes.
    let o = admin(
        &p.sz,
        &[
            "records",
            "set",
            &dataset,
            "--certification-ref",
            CERT,
            "--certification-valid-until",
            "2028-02-30",
        ],
    );
    assert!(!o.status.success());
    assert!(
        text(&o).contains("certification-valid-until: `2028-02-30`"),
        "{}",
        text(&o)
    );
    let o = admin(
        &p.sz,
        &["records", "set", &dataset, "--certification-ref", CERT],
    );
    assert!(!o.status.success());
    assert!(
        text(&o).contains("--certification-valid-until"),
        "{}",
        text(&o)
    );
    let shown: Value =
        serde_json::from_str(&admin_ok(&p.sz, &["records", "show", &dataset, "--json"])).unwrap();
    assert_eq!(shown["certification_reference"], Value::Null, "{shown}");

    // The certificate goes on record; the pending request is re-assessed.
    let until = gba_date_in(400);
    let out = admin_ok(
        &p.sz,
        &[
            "records",
            "set",
            &dataset,
            "--pipia",
            "--pipia-ref",
            "PIPIA-C1",
            "--consent",
            "--certification-ref",
            CERT,
            "--certification-valid-until",
            &until,
        ],
    );
    assert!(
        out.contains(&format!("re-assessed {id} (REQUESTED): no blockers")),
        "{out}"
    );
    let shown = admin_ok(&p.sz, &["records", "show", &dataset]);
    assert!(
        shown.contains(&format!("{CERT} (valid until {until})")),
        "{shown}"
    );
    let shown: Value =
        serde_json::from_str(&admin_ok(&p.sz, &["records", "show", &dataset, "--json"])).unwrap();
    assert_eq!(shown["certification_reference"], CERT);
    assert_eq!(shown["certification_valid_until"], *until);

    // offers list shows the route and the certificate.
    let pending = p.wait_pending(&id);
    assert_eq!(pending["route"], "certification", "{pending}");
    assert_eq!(pending["variant"], Value::Null);
    assert_eq!(
        pending["certificate"],
        serde_json::json!({"reference": CERT, "valid_until": until})
    );
    assert_eq!(pending["blockers"], serde_json::json!([]));
    let obligations: Vec<&str> = pending["obligations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap())
        .collect();
    assert!(
        obligations.contains(&"certification-renewal")
            && !obligations.contains(&"filing-10-working-days"),
        "{pending}"
    );
    let listed = admin_ok(&p.sz, &["offers", "list"]);
    assert!(
        listed.contains(&format!(
            "route certification (certificate {CERT}, valid until {until}); blockers: none"
        )),
        "{listed}"
    );

    // Approved and FINALIZED on both sides, with the certificate.
    admin_ok(&p.sz, &["offers", "approve", &id]);
    let (prov, cons) = p.wait_both(&id, "FINALIZED");
    let aid = prov["agreement_id"].as_str().unwrap().to_owned();
    for (side, view) in [("provider", &prov), ("consumer", &cons)] {
        assert_eq!(view["certificate"]["reference"], CERT, "{side}: {view}");
    }
    for (side, node) in [("provider", &p.sz), ("consumer", &p.hk)] {
        let a: Value = serde_json::from_str(&admin_ok(
            node,
            &["agreement", "show", &aid, "--format", "json"],
        ))
        .unwrap();
        let ag = &a["signed"]["agreement"];
        assert_eq!(ag["route"], "certification", "{side}: {a}");
        assert_eq!(ag["variant"], Value::Null, "{side}");
        assert_eq!(
            ag["certificate"],
            serde_json::json!({"reference": CERT, "valid_until": until}),
            "{side}"
        );
        let human = admin_ok(node, &["agreement", "show", &aid]);
        assert!(
            human.contains(&format!(
                "route:       certification (certificate {CERT}, valid until {until})"
            )),
            "{side}: {human}"
        );
        assert!(
            human.contains("certification-renewal: re-apply by "),
            "{side}: {human}"
        );
    }

    // The DSP form carries the certificate as a duty, and validates.
    let dsp = admin_ok(&p.sz, &["agreement", "show", &aid, "--format", "dsp"]);
    let v: Value = serde_json::from_str(&dsp).unwrap();
    let duty = &v["agreement"]["obligation"][0];
    assert_eq!(
        duty["action"], "urn:bayspace:odrl:exportUnderCertification",
        "{v}"
    );
    assert_eq!(duty["constraint"][0]["rightOperand"], CERT, "{v}");
    assert_eq!(duty["constraint"][1]["rightOperand"], *until, "{v}");
    if let Some(shared) = shared() {
        let file = p.space.tmp.path().join("agreement-certification.json");
        std::fs::write(&file, &dsp).unwrap();
        let o = Command::new(shared.join("tools/dsp-validate"))
            .arg("contract-agreement")
            .arg(&file)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}\n{dsp}", text(&o));
    }

    // No contract filing: the command says so, names the certificate and
    // its renewal, and writes nothing.
    let out_dir = p.space.tmp.path().join("filing");
    let out = admin_ok(&p.sz, &["filing", "export", &aid, "--out", &s(&out_dir)]);
    assert!(
        out.contains("no contract filing is due") && out.contains("route certification"),
        "{out}"
    );
    assert!(
        out.contains(&format!("certificate {CERT} valid until {until}")),
        "{out}"
    );
    let reapply = out
        .lines()
        .find_map(|l| l.strip_prefix("certification-renewal: re-apply by "))
        .unwrap_or_else(|| panic!("no renewal date in {out}"));
    assert!(reapply < until.as_str(), "{reapply} before {until}");
    assert!(!out_dir.exists(), "nothing was written");

    // The release: the provider re-assesses today, still on certification.
    let fetched = p.space.tmp.path().join("fetched.bin");
    let o = p.researcher(&["transfer", "fetch", &aid, "--out", &s(&fetched), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read(&fetched).unwrap(), bytes, "identical content");
    let log = audit_events(&p.sz, &p.space.tmp.path().join("sz-audit.jsonl"));
    assert!(log.contains("\"key-released\""), "{log}");
    assert!(log.contains("\"transfer-completed\""), "{log}");
    assert!(log.contains(CERT), "the certificate is in the audit log");
}
