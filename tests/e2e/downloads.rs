#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Data goes to the researcher's own machine: `DataService.Download`
//! streams what the home node keeps sealed, decrypted as it goes; the
//! client resumes from `PATH.part` and checks the BLAKE3; shredded data
//! cannot be downloaded.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use bayspace_tests::pair::*;
use bayspace_tests::*;
use serde_json::Value;

fn payload(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn part(out: &Path) -> PathBuf {
    PathBuf::from(format!("{}.part", out.display()))
}

fn open_cmd(p: &Pair, agreement: &str, out: &Path) -> Command {
    let mut c = Command::new(bin());
    c.args(["data", "open", agreement, "--out", &s(out), "--json"])
        .args(["--node", &grpc_url(&p.hk.dir), "--ca", &api_ca(&p.hk.dir)])
        .env("BAYSPACE_TOKEN", &p.token);
    c
}

#[test]
fn a_download_killed_half_way_resumes_to_identical_bytes() {
    let p = Pair::start(false);
    let bytes = payload(48 << 20);
    let agreement = p.agree_on("genomes", &bytes, &[]);
    let o = p.researcher(&["transfer", "fetch", &agreement, "--keep-sealed"]);
    assert!(o.status.success(), "{}", text(&o));

    let out = p.space.tmp.path().join("laptop").join("genomes.bin");
    std::fs::create_dir(out.parent().unwrap()).unwrap();
    let mut child = open_cmd(&p, &agreement, &out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed as soon as a few MiB are in: the rest is far from done.
    let start = std::time::Instant::now();
    while std::fs::metadata(part(&out)).map_or(0, |m| m.len()) < 2 << 20 {
        assert!(start.elapsed() < DEADLINE, "no download started");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the download ended early"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let held = std::fs::metadata(part(&out)).unwrap().len();
    assert!(!out.exists(), "no file at PATH until it verified");
    assert!(held < bytes.len() as u64, "killed half-way: {held}");

    let o = open_cmd(&p, &agreement, &out).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let summary: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["bytes"], bytes.len() as u64, "{summary}");
    assert_eq!(summary["agreement"], agreement.as_str());
    assert!(summary["seconds"].as_f64().is_some(), "{summary}");
    let resumed = summary["resumed_bytes"].as_u64().unwrap();
    assert!(resumed > 0 && resumed >= held.min(2 << 20), "{summary}");
    assert_eq!(
        summary["blake3"].as_str().unwrap(),
        blake3::hash(&bytes).to_hex().as_str()
    );
    assert!(std::fs::read(&out).unwrap() == bytes, "identical bytes");
    assert!(!part(&out).exists());

    // Each download is audited: who, which agreement, bytes, hash and the
    // client's address; the plaintext never touched the node's directory.
    let log = audit_events(&p.hk, &p.space.tmp.path().join("hk-audit.jsonl"));
    let downloads: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["event"] == "data-downloaded")
        .collect();
    assert_eq!(downloads.len(), 2, "{log}");
    let last = &downloads[1];
    assert!(
        last["actor"].as_str().unwrap().starts_with("researcher:"),
        "{last}"
    );
    assert_eq!(last["subjects"][0], agreement.as_str());
    assert_eq!(last["details"]["offset"], resumed, "{last}");
    assert_eq!(last["details"]["size"], bytes.len() as u64);
    assert_eq!(
        last["details"]["blake3"].as_str().unwrap(),
        blake3::hash(&bytes).to_hex().as_str()
    );
    assert!(
        last["details"]["client"].as_str().unwrap().contains("::1"),
        "{last}"
    );
    let needle = &bytes[(20 << 20)..(20 << 20) + 64];
    for entry in walk(&p.hk.dir) {
        if entry.is_file() && std::fs::metadata(&entry).unwrap().len() >= 64 {
            let content = std::fs::read(&entry).unwrap();
            assert!(
                !content.windows(64).any(|w| w == needle),
                "plaintext at rest on the node: {}",
                entry.display()
            );
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

#[test]
fn a_download_after_shredding_fails_with_the_reason() {
    let p = Pair::start(false);
    let bytes = payload(300_000);
    let agreement = p.agree_on("survey", &bytes, &[]);
    let out = p.space.tmp.path().join("survey.bin");
    let o = p.researcher(&["transfer", "fetch", &agreement, "--out", &s(&out), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let summary: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["resumed_bytes"], 0);
    assert_eq!(std::fs::read(&out).unwrap(), bytes);

    admin_ok(
        &p.hk,
        &["data", "shred", &agreement, "--reason", "consent withdrawn"],
    );
    let late = p.space.tmp.path().join("late.bin");
    for args in [
        vec!["data", "open", &agreement, "--out"],
        vec!["transfer", "fetch", &agreement, "--out"],
    ] {
        let mut args = args.clone();
        let target = s(&late);
        args.push(&target);
        let o = p.researcher(&args);
        assert!(!o.status.success(), "{args:?}");
        let said = text(&o);
        assert!(
            said.contains("FailedPrecondition")
                && said.contains("crypto-shredded")
                && said.contains("consent withdrawn"),
            "{args:?}: {said}"
        );
        assert!(!late.exists() && !part(&late).exists(), "{args:?}");
    }
}
