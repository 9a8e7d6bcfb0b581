#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Online backup and restore with real node processes: a backup taken
//! during a burst of negotiations restores into a node that starts, whose
//! audit log verifies and which has its agreements, negotiations and
//! sealed-data records; altered or truncated backups are refused with
//! nothing written.

use std::path::Path;
use std::process::{Command, Output};

use bayspace_tests::pair::*;
use bayspace_tests::*;
use serde_json::Value;

const PASSPHRASE: &str = "a long passphrase for the test";

fn run_with_passphrase(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env("BAYSPACE_BACKUP_PASSPHRASE", PASSPHRASE)
        .output()
        .unwrap()
}

fn agreement_ids(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x["signed"]["agreement"]["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Nothing of the target, and no staging directory beside it.
fn nothing_written(target: &Path) {
    assert!(!target.exists(), "{} was created", target.display());
    let parent = target.parent().unwrap();
    for e in std::fs::read_dir(parent).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.contains("restoring"), "left behind: {name}");
    }
}

#[test]
fn a_backup_during_a_negotiation_burst_restores_into_a_working_node() {
    let p = Pair::start(false);
    // A sealed copy on HKU, the node backed up.
    let agreement = p.agree_on("sealed-cohort", &[7u8; 50_000], &[]);
    let o = p.researcher(&["transfer", "fetch", &agreement, "--keep-sealed", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let dataset = p.publish("Burst cohort", &AUTO_TO_HK);

    let tmp = p.space.tmp.path().to_owned();
    let backup = tmp.join("hk.bsbackup");
    let hk_dir = s(&p.hk.dir);
    let (out, burst) = std::thread::scope(|scope| {
        let burst = scope.spawn(|| {
            (0..8)
                .map(|_| p.request(&dataset, "academic-research").0)
                .collect::<Vec<String>>()
        });
        std::thread::sleep(std::time::Duration::from_millis(300));
        let out = run_with_passphrase(&[
            "backup",
            "--dir",
            &hk_dir,
            "--out",
            &s(&backup),
            "--include-key",
        ]);
        (out, burst.join().unwrap())
    });
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("from the running node"),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains("audit log up to checkpoint"),
        "{}",
        text(&out)
    );
    assert_eq!(
        std::fs::metadata(&backup).unwrap().permissions().mode() & 0o777,
        0o600
    );
    for id in &burst {
        p.wait_both(id, "FINALIZED");
    }

    // Refused whole: a flipped byte, a truncated file, a wrong passphrase.
    let bytes = std::fs::read(&backup).unwrap();
    let target = tmp.join("restored-bad");
    let mut flipped = bytes.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    let bad = tmp.join("flipped.bsbackup");
    std::fs::write(&bad, &flipped).unwrap();
    let o = run_with_passphrase(&["restore", &s(&bad), "--dir", &s(&target)]);
    assert!(!o.status.success());
    assert!(text(&o).contains("altered"), "{}", text(&o));
    nothing_written(&target);

    let cut = tmp.join("cut.bsbackup");
    std::fs::write(&cut, &bytes[..bytes.len() - 1000]).unwrap();
    let o = run_with_passphrase(&["restore", &s(&cut), "--dir", &s(&target)]);
    assert!(!o.status.success());
    assert!(text(&o).contains("truncated"), "{}", text(&o));
    nothing_written(&target);

    let o = Command::new(bin())
        .args(["restore", &s(&backup), "--dir", &s(&target)])
        .env("BAYSPACE_BACKUP_PASSPHRASE", "not the passphrase")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(text(&o).contains("passphrase"), "{}", text(&o));
    nothing_written(&target);

    // What HKU had when the backup was taken, then HKU goes away.
    let agreements = agreement_ids(
        &serde_json::from_str(&admin_ok(&p.hk, &["agreement", "list", "--json"])).unwrap(),
    );
    let Pair { space, sz, hk, .. } = p;
    assert!(hk.terminate().success());

    let restored_dir = space.tmp.path().join("hk-restored");
    let o = run_with_passphrase(&["restore", &s(&backup), "--dir", &s(&restored_dir)]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        std::fs::metadata(restored_dir.join("node.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let restored = Node::start(&restored_dir);
    let st = restored.wait_for("the restored node", |_| true);
    assert_eq!(st["institution"], HK);

    // The audit log verifies against the node's PeerId.
    let export = space.tmp.path().join("restored-audit.jsonl");
    admin_ok(&restored, &["audit", "export", "--out", &s(&export)]);
    let peer = st["peer_id"].as_str().unwrap().to_owned();
    let v = bayspace(&["audit", "verify", &s(&export), "--peer-id", &peer]);
    assert!(v.status.success(), "{}", text(&v));

    let restored_agreements = agreement_ids(
        &serde_json::from_str(&admin_ok(&restored, &["agreement", "list", "--json"])).unwrap(),
    );
    assert!(restored_agreements.contains(&agreement));
    // Everything finalized before the backup began is there; the burst's
    // agreements are there up to the snapshot's moment.
    assert!(restored_agreements.iter().all(|a| agreements.contains(a)));
    let negotiations: Value =
        serde_json::from_str(&admin_ok(&restored, &["contract", "list", "--json"])).unwrap();
    assert!(!negotiations.as_array().unwrap().is_empty());
    let sealed: Value =
        serde_json::from_str(&admin_ok(&restored, &["data", "list", "--json"])).unwrap();
    assert!(
        sealed.to_string().contains(&agreement),
        "sealed-data record restored: {sealed}"
    );
    drop(sz);
}

use std::os::unix::fs::PermissionsExt as _;
