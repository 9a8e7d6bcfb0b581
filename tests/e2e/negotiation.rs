#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Contract negotiation between real node processes on `[::1]`: Shenzhen
//! University publishes, an HKU researcher asks. Manual and automatic
//! approval, rejection, policy refusals, blockers lifted by records, the
//! DSP agreement, the filing package, the audit log, revocation, and
//! recovery after either side is killed with SIGKILL.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bayspace_tests::pair::*;
use bayspace_tests::*;
use serde_json::Value;

/// SIGKILL in place; [`restart`] brings the same node back.
fn kill9_in_place(node: &mut Node) {
    let mut child = node.child.take().unwrap();
    child.kill().unwrap();
    assert!(!child.wait().unwrap().success());
}

/// Starts the node again from its directory and waits until it answers.
fn restart(node: &mut Node) {
    let dir = node.dir.clone();
    *node = Node::start(&dir);
    node.wait_for("the restarted node to answer", |_| true);
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn manual_approval_waits_for_records_then_signs_files_audits_and_revokes() {
    let p = Pair::start(false);
    let dataset = p.publish(
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

    // 1. The request waits for an administrator, with the assessment.
    let (id, state) = p.request(&dataset, "academic-research");
    assert_eq!(state, "REQUESTED");
    let pending = p.wait_pending(&id);
    assert_eq!(pending["dataset"], *dataset);
    assert_eq!(pending["institution"], HK);
    assert_eq!(pending["peer_id"], *p.hk_peer);
    assert_eq!(pending["researcher"], "Chan Tai Man");
    assert_eq!(pending["purpose"], "academic-research");
    assert_eq!(pending["route"], "gba-standard-contract");
    assert_eq!(pending["variant"], "mainland-hk");
    let blockers = strings(&pending["blockers"]);
    assert!(
        blockers.contains(&"pipia".to_owned()) && blockers.contains(&"consent".to_owned()),
        "{pending}"
    );
    assert_eq!(p.consumer_view(&id).unwrap()["state"], "REQUESTED");

    // Approval is refused while the PIPIA is missing, naming it.
    let o = admin(&p.sz, &["offers", "approve", &id]);
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("pipia"), "{err}");
    assert_eq!(admin_view(&p.sz, &id).unwrap()["state"], "REQUESTED");

    // With the records on file it goes through.
    admin_ok(
        &p.sz,
        &[
            "records",
            "set",
            &dataset,
            "--pipia",
            "--pipia-ref",
            "PIPIA-1",
            "--consent",
        ],
    );
    let pending = p.wait_pending(&id);
    assert_eq!(
        strings(&pending["blockers"]),
        Vec::<String>::new(),
        "{pending}"
    );
    admin_ok(
        &p.sz,
        &["offers", "approve", &id, "--note", "PIPIA-1 on file"],
    );
    let (prov, cons) = p.wait_both(&id, "FINALIZED");
    let aid = prov["agreement_id"].as_str().unwrap().to_owned();
    assert_eq!(cons["agreement_id"], *aid, "{cons}");
    assert_eq!(prov["counterparty"]["institution"], HK);
    assert_eq!(cons["counterparty"]["institution"], SZ);
    assert_eq!(cons["counterparty"]["peer_id"], *p.sz_peer);
    // Nothing waits any more.
    assert_eq!(admin_ok(&p.sz, &["offers", "list", "--json"]).trim(), "[]");

    // The DSP ContractAgreementMessage, from both sides, validates.
    let shared = shared();
    for (side, node) in [("provider", &p.sz), ("consumer", &p.hk)] {
        let dsp = admin_ok(node, &["agreement", "show", &aid, "--format", "dsp"]);
        let v: Value = serde_json::from_str(&dsp).unwrap();
        assert_eq!(v["@type"], "ContractAgreementMessage", "{side}: {v}");
        let file = p.space.tmp.path().join(format!("agreement-{side}.json"));
        std::fs::write(&file, &dsp).unwrap();
        if let Some(shared) = &shared {
            let o = Command::new(shared.join("tools/dsp-validate"))
                .arg("contract-agreement")
                .arg(&file)
                .output()
                .unwrap();
            assert!(o.status.success(), "{side}: {}\n{dsp}", text(&o));
        }
    }

    // The filing package names both parties, the purpose and a deadline.
    let out_dir = p.space.tmp.path().join("filing");
    let out = admin_ok(&p.sz, &["filing", "export", &aid, "--out", &s(&out_dir)]);
    let deadline = out
        .lines()
        .find_map(|l| l.strip_prefix("file by "))
        .unwrap()
        .to_owned();
    let files: Vec<PathBuf> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let with_ext = |ext: &str| {
        files
            .iter()
            .find(|f| f.extension().is_some_and(|e| e == ext))
            .unwrap_or_else(|| panic!("no .{ext} in {files:?}"))
    };
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(with_ext("json")).unwrap()).unwrap();
    assert!(record.is_object(), "{record}");
    let md = std::fs::read_to_string(with_ext("md")).unwrap();
    for needle in [SZ, HK, "academic-research", "PIPIA-1", deadline.as_str()] {
        assert!(md.contains(needle), "the filing lacks `{needle}`:\n{md}");
    }

    // 7. The provider's audit log holds the negotiation and verifies.
    let export = p.space.tmp.path().join("audit.jsonl");
    admin_ok(&p.sz, &["audit", "export", "--out", &s(&export)]);
    let out = ok(&["audit", "verify", &s(&export), "--peer-id", &p.sz_peer]);
    assert!(out.starts_with("ok: "), "{out}");
    let log = std::fs::read_to_string(&export).unwrap();
    let entries: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["kind"] == "entry")
        .collect();
    for event in ["contract-requested", "assessment", "approval", "agreement"] {
        assert!(
            entries
                .iter()
                .any(|e| e["event"] == event && e.to_string().contains(&id)),
            "no `{event}` entry about {id} in:\n{log}"
        );
    }
    // One byte edited in the approval entry: verification names its seq.
    let lines: Vec<&str> = log.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains("\"event\":\"approval\""))
        .unwrap();
    let seq = serde_json::from_str::<Value>(lines[at]).unwrap()["seq"]
        .as_u64()
        .unwrap();
    let line = lines[at];
    let digit = line.find(&id).unwrap() + id.len() - 1;
    let flipped = if &line[digit..=digit] == "0" {
        "1"
    } else {
        "0"
    };
    let edited_line = format!("{}{flipped}{}", &line[..digit], &line[digit + 1..]);
    let mut edited: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    edited[at] = edited_line;
    let tampered = p.space.tmp.path().join("tampered.jsonl");
    std::fs::write(&tampered, edited.join("\n") + "\n").unwrap();
    let o = bayspace(&["audit", "verify", &s(&tampered), "--peer-id", &p.sz_peer]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("line {} (seq {seq})", at + 1)),
        "{}",
        text(&o)
    );

    // 8. Revocation reaches the consumer.
    admin_ok(
        &p.sz,
        &["agreement", "revoke", &aid, "--reason", "consent withdrawn"],
    );
    poll(&p.hk, "the revocation on HKU", || {
        let a: Value = serde_json::from_str(&admin_ok(
            &p.hk,
            &["agreement", "show", &aid, "--format", "json"],
        ))
        .unwrap();
        a["revoked"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("consent withdrawn"))
    });
}

#[test]
fn auto_approval_rejection_and_policy_refusals_reach_the_researcher() {
    let p = Pair::start(false);

    // 2. Auto approval: no administrator step.
    let auto = p.publish("Air quality panel", &AUTO_TO_HK);
    let (id, _) = p.request(&auto, "academic-research");
    let (prov, cons) = p.wait_both(&id, "FINALIZED");
    assert_eq!(prov["agreement_id"], cons["agreement_id"]);
    assert!(prov["agreement_id"].is_string(), "{prov}");

    // 3. A rejection, with its reason, reaches the researcher.
    let manual = p.publish(
        "Clinic visits",
        &[
            "--personal",
            "0",
            "--recipient-region",
            "hk",
            "--approval",
            "manual",
        ],
    );
    let (id, state) = p.request(&manual, "academic-research");
    assert_eq!(state, "REQUESTED");
    p.wait_pending(&id);
    admin_ok(
        &p.sz,
        &[
            "offers",
            "reject",
            &id,
            "--reason",
            "the cohort is under embargo",
        ],
    );
    let reasons = p.wait_terminated(&id);
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("the cohort is under embargo")),
        "{reasons:?}"
    );
    assert_eq!(admin_view(&p.sz, &id).unwrap()["state"], "TERMINATED");

    // 4. A purpose the offer does not allow.
    let (id, _) = p.request(&auto, "marketing");
    let reasons = p.wait_terminated(&id);
    assert!(
        reasons.iter().any(|r| r.contains("`marketing`")),
        "{reasons:?}"
    );
    // The provider keeps the refused request, terminated, with its reason.
    let provider = admin_view(&p.sz, &id).expect("the provider keeps the request");
    assert_eq!(provider["state"], "TERMINATED", "{provider}");
    assert!(
        provider["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_str().unwrap().contains("`marketing`")),
        "{provider}"
    );

    // A recipient region the offer does not allow.
    let macao_only = p.publish(
        "Macao tourism survey",
        &[
            "--personal",
            "0",
            "--recipient-region",
            "macao",
            "--approval",
            "auto",
        ],
    );
    let (id, _) = p.request(&macao_only, "academic-research");
    let reasons = p.wait_terminated(&id);
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("recipients in `hk` are not allowed; allowed: macao")),
        "{reasons:?}"
    );
}

#[test]
fn a_provider_killed_while_a_request_waits_resumes_and_finalizes() {
    let mut p = Pair::start(true);
    let dataset = p.publish(
        "Heart study",
        &[
            "--personal",
            "0",
            "--recipient-region",
            "hk",
            "--approval",
            "manual",
        ],
    );
    let (id, _) = p.request(&dataset, "academic-research");
    p.wait_pending(&id);

    // Requests wait for administrators for hours; kill well after the
    // connection settled. (Within ~0.5 s of admission, kad's one automatic
    // bootstrap query would still re-dial Shenzhen by chance.)
    std::thread::sleep(Duration::from_secs(2));
    kill9_in_place(&mut p.sz);
    restart(&mut p.sz);
    // The request survived the crash.
    p.wait_pending(&id);
    admin_ok(&p.sz, &["offers", "approve", &id]);
    let (prov, cons) = p.wait_both(&id, "FINALIZED");
    assert_eq!(prov["agreement_id"], cons["agreement_id"]);
}

#[test]
fn a_consumer_killed_before_the_agreement_gets_it_after_restart() {
    let mut p = Pair::start(false);
    let dataset = p.publish(
        "Sleep study",
        &[
            "--personal",
            "0",
            "--recipient-region",
            "hk",
            "--approval",
            "manual",
        ],
    );
    let (id, _) = p.request(&dataset, "academic-research");
    p.wait_pending(&id);

    kill9_in_place(&mut p.hk);
    p.sz.wait_for("HKU's connection to close", |st| {
        !Node::admitted(st).contains(&p.hk_peer)
    });
    // The agreement cannot be delivered: it stays AGREED, queued.
    let out = admin_ok(&p.sz, &["offers", "approve", &id]);
    assert!(out.contains("AGREED"), "{out}");
    assert_eq!(admin_view(&p.sz, &id).unwrap()["state"], "AGREED");

    restart(&mut p.hk);
    let (prov, cons) = p.wait_both(&id, "FINALIZED");
    assert_eq!(prov["agreement_id"], cons["agreement_id"]);
}

// ----- release (the data of an agreement) -----

/// 3.5 segments of bytes that do not repeat.
fn dataset_bytes() -> Vec<u8> {
    let mut out = Vec::with_capacity(3 * (1 << 20) + (1 << 19));
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while out.len() < out.capacity() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

#[test]
fn an_agreed_dataset_is_released_encrypted_verified_and_accounted() {
    let p = Pair::start(false);
    let bytes = dataset_bytes();
    let agreement = p.agree_on("scans", &bytes, &[]);

    let out = p.space.tmp.path().join("fetched.bin");
    let o = p.researcher(&["transfer", "fetch", &agreement, "--out", &s(&out), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let summary: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["bytes"], bytes.len() as u64);
    assert_eq!(summary["agreement"], agreement.as_str());
    assert_eq!(
        summary["blake3"].as_str().unwrap(),
        blake3::hash(&bytes).to_hex().as_str()
    );
    assert_eq!(std::fs::read(&out).unwrap(), bytes, "identical content");
    assert!(!p.space.tmp.path().join("fetched.bin.part").exists());

    let provider_log = audit_events(&p.sz, &p.space.tmp.path().join("sz-audit.jsonl"));
    assert!(provider_log.contains("\"key-released\""), "{provider_log}");
    assert!(provider_log.contains("\"transfer-completed\""));
    let consumer_log = audit_events(&p.hk, &p.space.tmp.path().join("hk-audit.jsonl"));
    assert!(consumer_log.contains("\"transfer-completed\""));
    let shown: Value = serde_json::from_str(&admin_ok(
        &p.sz,
        &["agreement", "show", &agreement, "--format", "json"],
    ))
    .unwrap();
    assert_eq!(shown["uses"], 1, "the release counts against the agreement");

    // A researcher who is not the one agreed is refused by the home node.
    let (hk_dir, sz_dir) = (s(&p.hk.dir), s(&p.sz.dir));
    let other = ok(&["researcher", "add", "Lee Siu Ming", "--dir", &hk_dir]);
    let other_token = other
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .unwrap()
        .to_owned();
    let o = Command::new(bin())
        .args(["transfer", "fetch", &agreement, "--out", &s(&out)])
        .args(["--node", &grpc_url(&p.hk.dir)])
        .args(["--ca", &api_ca(&p.hk.dir)])
        .env("BAYSPACE_TOKEN", &other_token)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(text(&o).contains("PermissionDenied"), "{}", text(&o));

    // Onward: HKU cannot offer what it received to recipients outside the
    // GBA; inside the GBA it may.
    let republish = |regions: &[&str]| {
        let mut args = vec![
            "dataset",
            "publish",
            out.to_str().unwrap(),
            "--title",
            "Scans (copy)",
            "--level",
            "general",
            "--personal",
            "0",
            "--sensitive",
            "0",
            "--purpose",
            "academic-research",
        ];
        for r in regions {
            args.extend(["--recipient-region", r]);
        }
        admin(&p.hk, &args)
    };
    let o = republish(&["hk", "foreign:us"]);
    assert!(!o.status.success());
    let said = text(&o);
    assert!(
        said.contains(&agreement) && said.contains("no-onward-transfer-outside-gba"),
        "{said}"
    );
    let o = republish(&["gba"]);
    assert!(o.status.success(), "{}", text(&o));

    // Revoked: the consumer learns it and refuses; nothing is fetched.
    admin_ok(
        &p.sz,
        &[
            "agreement",
            "revoke",
            &agreement,
            "--reason",
            "consent withdrawn",
        ],
    );
    poll(&p.hk, "the revocation on HKU", || {
        let v: Value = serde_json::from_str(&admin_ok(
            &p.hk,
            &["agreement", "show", &agreement, "--format", "json"],
        ))
        .unwrap();
        !v["revoked"].is_null()
    });
    let again = p.space.tmp.path().join("again.bin");
    let o = p.researcher(&["transfer", "fetch", &agreement, "--out", &s(&again)]);
    assert!(!o.status.success());
    assert!(text(&o).contains("revoked"), "{}", text(&o));
    assert!(!again.exists());
    let _ = sz_dir;
}

#[test]
fn a_blocker_at_release_time_releases_no_key_and_is_audited() {
    let p = Pair::start(false);
    let dataset = p.publish(
        "Clinic visits",
        &[
            "--personal",
            "150000",
            "--recipient-region",
            "hk",
            "--approval",
            "manual",
        ],
    );
    let (id, _) = p.request(&dataset, "academic-research");
    p.wait_pending(&id);
    admin_ok(
        &p.sz,
        &[
            "records",
            "set",
            &dataset,
            "--pipia",
            "--pipia-ref",
            "PIPIA-9",
            "--consent",
        ],
    );
    admin_ok(&p.sz, &["offers", "approve", &id]);
    let (consumer, _) = p.wait_both(&id, "FINALIZED");
    let agreement = consumer["agreement_id"].as_str().unwrap().to_owned();
    // The PIPIA is withdrawn after the agreement: the release is judged now.
    admin_ok(&p.sz, &["records", "set", &dataset, "--no-pipia"]);

    let out = p.space.tmp.path().join("visits.csv");
    let o = p.researcher(&["transfer", "fetch", &agreement, "--out", &s(&out)]);
    assert!(!o.status.success());
    let said = text(&o);
    assert!(
        said.contains("blocks the release") && said.contains("pipia"),
        "{said}"
    );
    assert!(!out.exists());
    let log = audit_events(&p.sz, &p.space.tmp.path().join("sz-audit.jsonl"));
    assert!(log.contains("\"transfer-refused\""), "{log}");
    assert!(!log.contains("\"key-released\""), "no key left the node");
}

/// Starts `transfer fetch` as the researcher, in the background.
fn spawn_fetch(p: &Pair, agreement: &str, out: &Path) -> std::process::Child {
    Command::new(bin())
        .args(["transfer", "fetch", agreement, "--out", &s(out), "--json"])
        .args(["--node", &grpc_url(&p.hk.dir)])
        .args(["--ca", &api_ca(&p.hk.dir)])
        .env("BAYSPACE_TOKEN", &p.token)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// The `details` of the last `event` entry in the node's audit log.
fn last_audit_details(node: &Node, event: &str, out: &Path) -> Value {
    audit_events(node, out)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .rfind(|v| v["event"] == event)
        .map(|v| v["details"].clone())
        .unwrap_or(Value::Null)
}

/// Waits until the home node's sealed copy being received holds at least
/// `segments` whole segments.
fn wait_sealed_part(node: &Node, segments: u64) {
    poll(node, "a partly fetched sealed copy", || {
        std::fs::read_dir(node.dir.join("sealed")).is_ok_and(|rd| {
            rd.filter_map(Result::ok).any(|e| {
                e.path().to_string_lossy().ends_with(".sealed.part")
                    && e.metadata().is_ok_and(|m| m.len() >= segments << 20)
            })
        })
    });
}

fn sealed_state(p: &Pair, agreement: &str) -> String {
    let listed: Value = serde_json::from_slice(&p.researcher(&["data", "list", "--json"]).stdout)
        .unwrap_or(Value::Null);
    listed
        .as_array()
        .and_then(|a| a.iter().find(|d| d["agreement"] == agreement))
        .map(|d| d["state"].as_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[test]
fn kill_9_of_either_side_mid_transfer_resumes_to_identical_bytes() {
    let mut p = Pair::start(true);
    let mut bytes = dataset_bytes();
    bytes.extend(dataset_bytes().iter().rev());
    bytes.extend(dataset_bytes());
    let agreement = p.agree_on("imaging", &bytes, &[]);
    let out = p.space.tmp.path().join("imaging-fetched.bin");
    let hk_audit = p.space.tmp.path().join("hk-audit.jsonl");

    // The provider dies mid-transfer and comes back: the running command
    // carries on by itself from the verified segments.
    let fetch = spawn_fetch(&p, &agreement, &out);
    wait_sealed_part(&p.hk, 1);
    kill9_in_place(&mut p.sz);
    std::thread::sleep(Duration::from_millis(1500));
    let mut fetch = fetch;
    assert!(
        fetch.try_wait().unwrap().is_none(),
        "the fetch waits for its provider instead of failing"
    );
    assert!(!out.exists(), "no partial file at the target path");
    restart(&mut p.sz);
    let first = fetch.wait_with_output().unwrap();
    assert!(first.status.success(), "{}", text(&first));
    assert_eq!(std::fs::read(&out).unwrap(), bytes, "identical content");
    let done = last_audit_details(&p.hk, "transfer-completed", &hk_audit);
    assert!(
        done["resumed_bytes"].as_u64().unwrap() >= 1 << 20,
        "it resumed from the verified segments: {done}"
    );

    // The consumer's node dies mid-transfer: when it starts again it
    // resumes the fetch by itself, and the command run again downloads it.
    // (A shredded copy is fetched again only when asked to explicitly.)
    let out = p.space.tmp.path().join("imaging-again.bin");
    admin_ok(
        &p.hk,
        &["data", "shred", &agreement, "--reason", "fetch again"],
    );
    let fetch = Command::new(bin())
        .args(["transfer", "fetch", &agreement, "--keep-sealed"])
        .args(["--node", &grpc_url(&p.hk.dir)])
        .args(["--ca", &api_ca(&p.hk.dir)])
        .env("BAYSPACE_TOKEN", &p.token)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_sealed_part(&p.hk, 2);
    kill9_in_place(&mut p.hk);
    let second = fetch.wait_with_output().unwrap();
    assert!(!second.status.success(), "the command loses its node");
    assert!(!out.exists());
    restart(&mut p.hk);
    poll(&p.hk, "the fetch resumed by the restarted node", || {
        sealed_state(&p, &agreement) == "sealed"
    });
    let done = last_audit_details(&p.hk, "transfer-completed", &hk_audit);
    assert!(
        done["resumed_bytes"].as_u64().unwrap() >= 2 << 20,
        "resumed from the verified segments: {done}"
    );
    let third = spawn_fetch(&p, &agreement, &out)
        .wait_with_output()
        .unwrap();
    assert!(third.status.success(), "{}", text(&third));
    assert_eq!(std::fs::read(&out).unwrap(), bytes, "identical content");
}

// ----- data kept sealed -----

#[test]
fn data_kept_sealed_opens_on_demand_detects_tampering_and_is_shredded() {
    let mut p = Pair::start(false);
    let bytes = dataset_bytes();
    // The data must be gone by the end of a day a month ahead (GBA time).
    let day = (time::OffsetDateTime::now_utc() + time::Duration::days(30)).date();
    let ymd = |d: time::Date| format!("{}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day());
    let delete_by = ymd(day);
    let agreement = p.agree_on("scans", &bytes, &["--delete-by", &delete_by]);

    let both = p.researcher(&[
        "transfer",
        "fetch",
        &agreement,
        "--keep-sealed",
        "--out",
        "x",
    ]);
    assert!(!both.status.success());
    assert!(
        text(&both).contains("cannot be used with"),
        "{}",
        text(&both)
    );

    let o = p.researcher(&["transfer", "fetch", &agreement, "--keep-sealed", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let summary: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["sealed"], true);
    assert_eq!(summary["bytes"], bytes.len() as u64);
    let sealed = PathBuf::from(summary["path"].as_str().unwrap());
    assert!(sealed.starts_with(p.hk.dir.join("sealed")), "{sealed:?}");
    let stored = std::fs::read(&sealed).unwrap();
    assert_eq!(stored.len(), bytes.len() + 4 * 16, "four sealed segments");
    assert!(
        !stored.windows(64).any(|w| w == &bytes[5000..5064]),
        "no plaintext at rest"
    );

    let listed: Value =
        serde_json::from_slice(&p.researcher(&["data", "list", "--json"]).stdout).unwrap();
    let item = &listed.as_array().unwrap()[0];
    assert_eq!(item["state"], "sealed");
    assert_eq!(item["agreement"], agreement.as_str());
    // The key goes at midnight after that day, GBA time.
    assert_eq!(
        item["retention_deadline"].as_str().unwrap(),
        format!("{}T00:00:00+08:00", ymd(day.next_day().unwrap())),
        "{item}"
    );

    let opened = p.space.tmp.path().join("opened.bin");
    let o = p.researcher(&["data", "open", &agreement, "--out", &s(&opened), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read(&opened).unwrap(), bytes, "identical content");

    let other = ok(&["researcher", "add", "Lee Siu Ming", "--dir", &s(&p.hk.dir)]);
    let other_token = other
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .unwrap();
    let not_theirs = p.space.tmp.path().join("not-theirs.bin");
    let o = Command::new(bin())
        .args(["data", "open", &agreement, "--out", &s(&not_theirs)])
        .args(["--node", &grpc_url(&p.hk.dir)])
        .args(["--ca", &api_ca(&p.hk.dir)])
        .env("BAYSPACE_TOKEN", other_token)
        .output()
        .unwrap();
    assert!(text(&o).contains("PermissionDenied"), "{}", text(&o));
    assert!(!not_theirs.exists());

    // One flipped bit at rest is found and named; nothing is written.
    let mut tampered = stored.clone();
    tampered[2 * ((1 << 20) + 16) + 77] ^= 0x08;
    std::fs::write(&sealed, &tampered).unwrap();
    let spoiled = p.space.tmp.path().join("spoiled.bin");
    let o = p.researcher(&["data", "open", &agreement, "--out", &s(&spoiled)]);
    assert!(!o.status.success());
    assert!(text(&o).contains("segment 2"), "{}", text(&o));
    assert!(!spoiled.exists() && !p.space.tmp.path().join("spoiled.bin.part").exists());
    std::fs::write(&sealed, &stored).unwrap();

    let o = p.researcher(&["transfer", "fetch", &agreement, "--keep-sealed"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("already kept sealed"), "{}", text(&o));

    // Shredding: audited, the key is gone, and it stays gone after a restart.
    let o = p.researcher(&["data", "shred", &agreement]);
    assert!(
        text(&o).contains("PermissionDenied"),
        "researchers cannot shred"
    );
    admin_ok(
        &p.hk,
        &["data", "shred", &agreement, "--reason", "consent withdrawn"],
    );
    let keys: Vec<_> = std::fs::read_dir(p.hk.dir.join("sealed"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        keys.is_empty(),
        "neither key nor ciphertext is left: {keys:?}"
    );
    let log = audit_events(&p.hk, &p.space.tmp.path().join("hk-audit.jsonl"));
    let opened_at = log.find("\"data-downloaded\"").unwrap();
    let shredded_at = log.find("\"data-shredded\"").unwrap();
    assert!(opened_at < shredded_at, "{log}");

    kill9_in_place(&mut p.hk);
    restart(&mut p.hk);
    let late = p.space.tmp.path().join("late.bin");
    let o = admin(&p.hk, &["data", "open", &agreement, "--out", &s(&late)]);
    assert!(!o.status.success());
    let said = text(&o);
    assert!(
        said.contains("crypto-shredded") && said.contains("consent withdrawn"),
        "{said}"
    );
    assert!(!late.exists());
}

/// On a terminal, `transfer fetch` draws a progress bar with bytes, rate
/// and ETA; `script` gives it a pseudo-terminal as a user's shell would.
#[test]
fn fetch_on_a_terminal_draws_a_progress_bar() {
    if Command::new("script").arg("--version").output().is_err() {
        skip_or_fail("`script` (util-linux) is not installed, so there is no pseudo-terminal");
        return;
    }
    let p = Pair::start(false);
    let mut bytes = dataset_bytes();
    bytes.extend(dataset_bytes().iter().rev());
    let agreement = p.agree_on("scans", &bytes, &[]);
    let out = p.space.tmp.path().join("fetched.bin");
    let cmd = format!(
        "{} transfer fetch {agreement} --out {} --node {} --ca {}",
        bin(),
        out.display(),
        grpc_url(&p.hk.dir),
        api_ca(&p.hk.dir)
    );
    let o = Command::new("script")
        .args(["-qefc", &cmd, "/dev/null"])
        .env("BAYSPACE_TOKEN", &p.token)
        .output()
        .unwrap();
    let screen = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{screen}");
    assert!(
        screen.contains("B/s") && screen.contains("eta") && screen.contains("/7.00 MiB"),
        "a bar with bytes, rate and ETA: {screen:?}"
    );
    assert!(screen.contains("fetched 7340032 bytes"), "{screen:?}");
    assert_eq!(std::fs::read(&out).unwrap(), bytes);
}

/// `contract watch` follows a negotiation as it moves and ends by itself
/// at a terminal state.
#[test]
fn contract_watch_follows_the_negotiation_to_its_end() {
    let p = Pair::start(false);
    let dataset = p.publish(
        "Diet survey",
        &[
            "--personal",
            "0",
            "--recipient-region",
            "hk",
            "--approval",
            "manual",
        ],
    );
    let (id, _) = p.request(&dataset, "academic-research");
    p.wait_pending(&id);
    let watch = Command::new(bin())
        .args(["contract", "watch", &id, "--json"])
        .args(["--node", &grpc_url(&p.hk.dir)])
        .args(["--ca", &api_ca(&p.hk.dir)])
        .env("BAYSPACE_TOKEN", &p.token)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Let the watcher see the waiting state first.
    std::thread::sleep(Duration::from_millis(500));
    admin_ok(&p.sz, &["offers", "approve", &id]);
    let o = watch.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let states: Vec<String> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["id"], id.as_str(), "{v}");
            v["state"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        states.first().map(String::as_str),
        Some("REQUESTED"),
        "{states:?}"
    );
    assert_eq!(
        states.last().map(String::as_str),
        Some("FINALIZED"),
        "{states:?}"
    );
    let order = ["REQUESTED", "AGREED", "VERIFIED", "FINALIZED"];
    let ranks: Vec<usize> = states
        .iter()
        .map(|s| order.iter().position(|o| o == s).unwrap())
        .collect();
    assert!(ranks.windows(2).all(|w| w[0] < w[1]), "{states:?}");
}

#[test]
fn contract_list_reads_every_page_in_order() {
    let p = Pair::start(false);
    let dataset = p.publish("Paged", &AUTO_TO_HK);
    let asked: Vec<String> = (0..5)
        .map(|_| p.request(&dataset, "academic-research").0)
        .collect();
    let ids = |args: &[&str]| -> Vec<String> {
        let o = p.researcher(args);
        assert!(o.status.success(), "{}", text(&o));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let whole = ids(&["contract", "list", "--json"]);
    let mut sorted = whole.clone();
    sorted.sort();
    let mut expected = asked.clone();
    expected.sort();
    assert_eq!(sorted, expected);
    // Pages of one to all of them: the same list, in the same order.
    for size in ["1", "2", "4", "1000"] {
        assert_eq!(
            ids(&["contract", "list", "--json", "--page-size", size]),
            whole,
            "pages of {size}"
        );
    }
    for bad in ["0", "1001"] {
        let o = p.researcher(&["contract", "list", "--page-size", bad]);
        assert!(!o.status.success());
        assert!(text(&o).contains("--page-size"), "{}", text(&o));
    }
}
