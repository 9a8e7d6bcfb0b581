//! `bayspace assess` end to end: the real binary, the documented interface.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

use bayspace_tests::bin;
use serde_json::{Value, json};

fn run_stdin(input: &[u8]) -> Output {
    let mut child = Command::new(bin())
        .args(["assess", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn assess(scenario: &Value) -> Value {
    let out = run_stdin(scenario.to_string().as_bytes());
    assert!(
        out.status.success(),
        "exit {:?}, stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stderr.is_empty());
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A Mainland (Shenzhen) to Hong Kong scenario with everything on record;
/// tests override what they examine.
fn base() -> Value {
    json!({
        "date": "2026-11-23",
        "exporter": { "region": "mainland:shenzhen" },
        "recipient": { "region": "hk" },
        "data": { "level": "general", "personal_individuals": 0, "sensitive_individuals": 0 },
        "records": { "pipia": true, "consent": true }
    })
}

/// Set the value at a JSON pointer, creating the last key if it is absent.
fn with(mut v: Value, pointer: &str, new: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let parent = v
        .pointer_mut(parent)
        .unwrap_or_else(|| panic!("no {parent}"));
    parent.as_object_mut().unwrap().insert(key.to_owned(), new);
    v
}

fn data(personal: u64, sensitive: u64) -> Value {
    let v = with(base(), "/data/personal_individuals", json!(personal));
    with(v, "/data/sensitive_individuals", json!(sensitive))
}

fn route(a: &Value) -> (&str, Option<&str>, Option<&str>) {
    (
        a["route"].as_str().unwrap(),
        a["variant"].as_str(),
        a["exemption"].as_str(),
    )
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect()
}

#[test]
fn the_documented_example_and_output_shape() {
    let example = json!({
      "date": "2026-11-23",
      "exporter": { "region": "mainland:shenzhen", "ciio": false,
                    "ftz": { "zone": "qianhai", "on_negative_list": false } },
      "recipient": { "region": "hk" },
      "data": { "level": "general", "personal_individuals": 5000,
                "sensitive_individuals": 0, "categories": ["health"],
                "collected_abroad": false },
      "basis": "consent",
      "year_to_date": { "personal": 0, "sensitive": 0 },
      "records": { "pipia": true, "consent": true,
                   "security_assessment_valid_until": null,
                   "macao_authorisation": false,
                   "hgr_filing": false, "hgr_security_review": false,
                   "pi_certification_valid_until": null }
    });
    let a = assess(&example);
    // M7: the free-trade-zone data is not on the negative list.
    assert_eq!(
        route(&a),
        ("exempt", None, Some("ftz-not-on-negative-list"))
    );
    assert_eq!(a["allowed_now"], json!(true));
    assert_eq!(a["blockers"], json!([]));
    let obligations = strs(&a["obligations"]);
    for o in [
        "notice-and-separate-consent",
        "pipia",
        "sector-catalogue-check",
    ] {
        assert!(obligations.contains(&o), "{o} missing from {obligations:?}");
    }
    assert_eq!(a["rulebook"], json!("gba-2026.1"));
    assert!(!a["citations"].as_array().unwrap().is_empty());
    for key in [
        "route",
        "variant",
        "exemption",
        "allowed_now",
        "blockers",
        "obligations",
        "citations",
        "rulebook",
    ] {
        assert!(a.get(key).is_some(), "{key} missing");
    }

    // Without the FTZ, one sensitive individual puts it on the GBA contract.
    let mut no_ftz = example.clone();
    no_ftz["exporter"].as_object_mut().unwrap().remove("ftz");
    no_ftz["data"]["sensitive_individuals"] = json!(1);
    let a = assess(&no_ftz);
    assert_eq!(
        route(&a),
        ("gba-standard-contract", Some("mainland-hk"), None)
    );
    let obligations = strs(&a["obligations"]);
    for o in [
        "filing-10-working-days",
        "no-onward-transfer-outside-gba",
        "recipient-records-3-years",
    ] {
        assert!(obligations.contains(&o), "{o} missing from {obligations:?}");
    }
}

#[test]
fn national_thresholds_to_a_foreign_recipient() {
    let foreign = |p: u64, s: u64| with(data(p, s), "/recipient/region", json!("foreign:de"));
    let cases: &[(u64, u64, &str, Option<&str>)] = &[
        (99_999, 0, "exempt", Some("below-threshold")),
        (100_000, 0, "standard-contract", None),
        (999_999, 0, "standard-contract", None),
        (1_000_000, 0, "security-assessment", None),
        (0, 1, "standard-contract", None),
        (0, 9_999, "standard-contract", None),
        (0, 10_000, "security-assessment", None),
    ];
    for &(p, s, want, exemption) in cases {
        let a = assess(&foreign(p, s));
        assert_eq!(
            route(&a),
            (want, None, exemption),
            "personal {p}, sensitive {s}"
        );
    }
}

#[test]
fn year_to_date_accumulates() {
    let mut v = with(data(1, 0), "/recipient/region", json!("foreign:sg"));
    v["year_to_date"] = json!({ "personal": 99_999, "sensitive": 0 });
    assert_eq!(route(&assess(&v)).0, "standard-contract");
    v["year_to_date"] = json!({ "personal": 99_998, "sensitive": 0 });
    assert_eq!(
        route(&assess(&v)),
        ("exempt", None, Some("below-threshold"))
    );
    v["year_to_date"] = json!({ "personal": 0, "sensitive": 9_999 });
    v["data"]["sensitive_individuals"] = json!(1);
    assert_eq!(route(&assess(&v)).0, "security-assessment");
}

#[test]
fn gba_contract_replaces_both_national_routes() {
    let a = assess(&data(2_000_000, 50_000));
    assert_eq!(
        route(&a),
        ("gba-standard-contract", Some("mainland-hk"), None)
    );
    let macao = with(data(0, 1), "/recipient/region", json!("macao"));
    assert_eq!(
        route(&assess(&macao)),
        ("gba-standard-contract", Some("mainland-macao"), None)
    );
    // Outside the nine cities the national route stands.
    let other = with(data(0, 1), "/exporter/region", json!("mainland:other"));
    assert_eq!(route(&assess(&other)), ("standard-contract", None, None));
}

#[test]
fn security_assessment_validity_is_inclusive_of_the_last_day() {
    let v = with(data(0, 0), "/data/level", json!("important"));
    let on_last_day = with(
        v.clone(),
        "/records/security_assessment_valid_until",
        json!("2026-11-23"),
    );
    let a = assess(&on_last_day);
    assert_eq!(route(&a).0, "security-assessment");
    assert_eq!(a["allowed_now"], json!(true));
    let day_after = with(v, "/date", json!("2026-11-24"));
    let day_after = with(
        day_after,
        "/records/security_assessment_valid_until",
        json!("2026-11-23"),
    );
    let a = assess(&day_after);
    assert_eq!(a["allowed_now"], json!(false));
    assert_eq!(strs(&a["blockers"]), ["security-assessment-approval"]);
}

#[test]
fn a_certificate_on_record_is_the_route_in_the_band() {
    let certified = |p: u64, s: u64, until: &str| {
        with(
            data(p, s),
            "/records/pi_certification_valid_until",
            json!(until),
        )
    };
    // Valid on the assessment day itself: certification, not the GBA contract.
    let a = assess(&certified(150_000, 0, "2026-11-23"));
    assert_eq!(route(&a), ("certification", None, None));
    assert_eq!(a["allowed_now"], json!(true));
    let obligations = strs(&a["obligations"]);
    assert!(
        obligations.contains(&"certification-renewal"),
        "{obligations:?}"
    );
    assert!(
        !obligations.contains(&"filing-10-working-days"),
        "{obligations:?}"
    );
    assert_eq!(strs(&a["rules"])[..3], ["M8", "M8a", "M10"]);
    let cited = a["citations"][1].as_str().unwrap();
    assert!(
        cited.starts_with("M8a: Measures for the Certification of Personal Information Export (CAC and SAMR, Order No. 20, in force 1 Jan 2026)"),
        "{cited}"
    );
    // Expired the day before: the GBA contract again.
    assert_eq!(
        route(&assess(&certified(150_000, 0, "2026-11-22"))),
        ("gba-standard-contract", Some("mainland-hk"), None)
    );
    // Top of the band and above it.
    let foreign = |v: Value| with(v, "/recipient/region", json!("foreign:de"));
    assert_eq!(
        route(&assess(&foreign(certified(999_999, 0, "2029-01-01")))).0,
        "certification"
    );
    assert_eq!(
        route(&assess(&foreign(certified(1_000_000, 0, "2029-01-01")))).0,
        "security-assessment"
    );
    assert_eq!(
        route(&assess(&foreign(certified(0, 10_000, "2029-01-01")))).0,
        "security-assessment"
    );
    // Not for a CIIO, not for important data.
    let ciio = with(
        certified(150_000, 0, "2029-01-01"),
        "/exporter/ciio",
        json!(true),
    );
    assert_eq!(route(&assess(&ciio)).0, "security-assessment");
    let important = with(
        certified(150_000, 0, "2029-01-01"),
        "/data/level",
        json!("important"),
    );
    assert_eq!(route(&assess(&important)).0, "security-assessment");
}

#[test]
fn core_data_is_prohibited_but_still_exit_zero() {
    let a = assess(&with(base(), "/data/level", json!("core")));
    assert_eq!(route(&a).0, "prohibited");
    assert_eq!(strs(&a["blockers"]), ["core-data"]);
    assert_eq!(a["allowed_now"], json!(false));
}

#[test]
fn emergency_and_collected_abroad_waive_pipia_and_consent() {
    let missing = with(data(10, 0), "/records", json!({}));
    let a = assess(&missing);
    let blockers = strs(&a["blockers"]);
    assert!(
        blockers.contains(&"pipia") && blockers.contains(&"consent"),
        "{blockers:?}"
    );

    let emergency = with(missing.clone(), "/basis", json!("emergency"));
    let a = assess(&emergency);
    assert_eq!(route(&a), ("exempt", None, Some("emergency")));
    assert_eq!(a["blockers"], json!([]));

    let abroad = with(missing, "/data/collected_abroad", json!(true));
    let a = assess(&abroad);
    assert_eq!(route(&a), ("exempt", None, Some("collected-abroad")));
    assert_eq!(a["blockers"], json!([]));
}

#[test]
fn hong_kong_and_macao_exporters() {
    let hk = |recipient: &str| {
        let v = with(data(10, 0), "/exporter/region", json!("hk"));
        with(v, "/recipient/region", json!(recipient))
    };
    assert_eq!(
        route(&assess(&hk("hk"))),
        ("exempt", None, Some("not-cross-border"))
    );
    assert_eq!(
        route(&assess(&hk("mainland:guangzhou"))),
        ("gba-standard-contract", Some("mainland-hk"), None)
    );
    assert_eq!(
        route(&assess(&hk("foreign:us"))),
        ("exempt", None, Some("no-statutory-restriction"))
    );

    let mo = |recipient: &str| {
        let v = with(data(10, 0), "/exporter/region", json!("macao"));
        with(v, "/recipient/region", json!(recipient))
    };
    assert_eq!(
        route(&assess(&mo("mainland:zhuhai"))),
        ("gba-standard-contract", Some("mainland-macao"), None)
    );
    let a = assess(&mo("hk"));
    assert_eq!(route(&a).0, "macao-authorisation");
    assert_eq!(strs(&a["blockers"]), ["macao-authorisation"]);
}

fn assert_bad_input(input: &[u8], needle: &str) {
    let out = run_stdin(input);
    assert_eq!(
        out.status.code(),
        Some(2),
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(out.stdout.is_empty(), "stdout not empty");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "not one line: {err:?}");
    assert!(err.contains(needle), "{err:?} does not mention {needle:?}");
}

#[test]
fn bad_input_exits_2_with_one_line_naming_the_field() {
    assert_bad_input(b"{not json", "not a valid scenario");
    assert_bad_input(b"", "not a valid scenario");
    assert_bad_input(format!("{} trailing", base()).as_bytes(), "trailing");
    let wrong_type = with(base(), "/data/personal_individuals", json!("many"));
    assert_bad_input(
        wrong_type.to_string().as_bytes(),
        "data.personal_individuals",
    );
    let negative = with(base(), "/data/sensitive_individuals", json!(-1));
    assert_bad_input(
        negative.to_string().as_bytes(),
        "data.sensitive_individuals",
    );
    let typo = with(base(), "/recipient/region", json!("mainland:shenzen"));
    assert_bad_input(typo.to_string().as_bytes(), "shenzen");
    let unknown = with(base(), "/exporter/colour", json!("red"));
    assert_bad_input(unknown.to_string().as_bytes(), "colour");
    let foreign_exporter = with(base(), "/exporter/region", json!("foreign:de"));
    assert_bad_input(foreign_exporter.to_string().as_bytes(), "exporter.region");
    let mut no_date = base();
    no_date.as_object_mut().unwrap().remove("date");
    assert_bad_input(no_date.to_string().as_bytes(), "date");
    let bad_basis = with(base(), "/basis", json!("because"));
    assert_bad_input(bad_basis.to_string().as_bytes(), "basis");
    for bad in [
        json!("2028-02-30"),
        json!("30/06/2028"),
        json!("2028-6-30"),
        json!(20280630),
    ] {
        let bad_cert = with(base(), "/records/pi_certification_valid_until", bad.clone());
        assert_bad_input(
            bad_cert.to_string().as_bytes(),
            "records.pi_certification_valid_until",
        );
    }
    let misspelt = with(
        base(),
        "/records/pi_certification_valid",
        json!("2028-06-30"),
    );
    assert_bad_input(misspelt.to_string().as_bytes(), "pi_certification_valid");
}

#[test]
fn reads_a_file_argument() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    std::fs::write(&path, base().to_string()).unwrap();
    let out = Command::new(bin())
        .arg("assess")
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let a: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        route(&a),
        ("exempt", None, Some("no-personal-or-important-data"))
    );

    let missing = Command::new(bin())
        .args(["assess", "/nonexistent/s.json"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(missing.stdout.is_empty());
}
