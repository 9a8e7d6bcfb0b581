#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A full disk under real node processes: each node's store and sealed
//! directory on a 48 MiB tmpfs of its own, with an 8 MiB reserve. The
//! consumer's disk fills with fetched data, then with a file beside it;
//! the provider's with a file. Every operation that cannot be written is
//! refused with RESOURCE_EXHAUSTED naming the disk, nothing partial is
//! stored, reads go on, and once space is freed work goes on in the same
//! processes and both audit logs verify.
//!
//! Mounting needs root (CAP_SYS_ADMIN). Where it is refused the test says
//! so and passes, unless `BAYSPACE_REQUIRE_ALL=1`, which makes it fail.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use bayspace_tests::pair::*;
use bayspace_tests::*;
use serde_json::Value;

const DISK: &str = "disk";
const RESERVE_MIB: u64 = 8;
/// Bigger than the reserve, so that three copies nearly fill the disk.
const BIG: usize = 12 << 20;

/// A tmpfs mounted for the test, unmounted when dropped.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount_tmpfs(dir: &Path) -> Result<Mount, String> {
    std::fs::create_dir_all(dir).unwrap();
    let o = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=48m", "tmpfs"])
        .arg(dir)
        .output()
        .map_err(|e| format!("cannot run mount: {e}"))?;
    if o.status.success() {
        Ok(Mount(dir.to_owned()))
    } else {
        Err(format!(
            "mount -t tmpfs refused: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ))
    }
}

/// Whether tmpfs can be mounted here; prints why not, and fails when every
/// test must run.
fn can_mount() -> bool {
    let probe = tempfile::tempdir().unwrap();
    match mount_tmpfs(&probe.path().join("probe")) {
        Ok(_) => true,
        Err(why) => {
            let required = std::env::var("BAYSPACE_REQUIRE_ALL").is_ok_and(|v| v == "1");
            assert!(!required, "BAYSPACE_REQUIRE_ALL=1 but {why}");
            println!("skipped: {why} (the full-disk test needs root to mount a tmpfs)");
            false
        }
    }
}

/// Bytes free to the node on the file system holding `dir`.
fn available(dir: &Path) -> u64 {
    let o = Command::new("stat")
        .args(["-f", "-c", "%a %S"])
        .arg(dir)
        .output()
        .unwrap();
    let out = String::from_utf8(o.stdout).unwrap();
    let mut it = out.split_whitespace().map(|n| n.parse::<u64>().unwrap());
    it.next().unwrap() * it.next().unwrap()
}

/// Writes `dir/filler` until less than half the reserve is free: below the
/// reserve, above zero, as when something beside the node fills the disk.
fn fill(dir: &Path) -> PathBuf {
    let filler = dir.join("filler");
    let target = (RESERVE_MIB << 20) / 2;
    let free = available(dir);
    assert!(free > target, "{free} bytes free already");
    std::fs::write(&filler, vec![0xa5u8; (free - target) as usize]).unwrap();
    assert!(available(dir) < RESERVE_MIB << 20);
    filler
}

/// Exit failed, RESOURCE_EXHAUSTED, naming the disk under `disk`.
fn assert_disk_full(o: &std::process::Output, disk: &Path, what: &str) {
    let said = text(o);
    println!("full disk: {what}: {}", said.trim());
    assert!(
        !o.status.success(),
        "{what} succeeded on a full disk: {said}"
    );
    assert!(
        said.contains("ResourceExhausted")
            && said.contains("is full")
            && said.contains(&disk.display().to_string()),
        "{what}: {said}"
    );
}

fn alive(node: &mut Node) -> bool {
    node.child
        .as_mut()
        .is_some_and(|c| c.try_wait().unwrap().is_none())
}

fn negotiation_count(node: &Node) -> usize {
    let v: Value = serde_json::from_str(&admin_ok(node, &["contract", "list", "--json"])).unwrap();
    v.as_array().unwrap().len()
}

fn verify_audit(p: &Pair, node: &Node, peer: &str, name: &str) {
    let export = p.space.tmp.path().join(format!("{name}-audit.jsonl"));
    admin_ok(node, &["audit", "export", "--out", &s(&export)]);
    ok(&["audit", "verify", &s(&export), "--peer-id", peer]);
}

#[test]
fn a_full_disk_refuses_writes_clearly_keeps_reads_and_recovers_without_a_restart() {
    if !can_mount() {
        return;
    }
    let mounted = Mutex::new(Vec::new());
    let mut p = Pair::start_with(false, |dir| {
        mounted
            .lock()
            .unwrap()
            .push(mount_tmpfs(&dir.join(DISK)).unwrap());
        let config = dir.join("config.toml");
        let text = std::fs::read_to_string(&config).unwrap();
        let text: String = text
            .lines()
            .map(|l| {
                if l.starts_with("data-dir = ") {
                    format!("data-dir = \"{DISK}/data\"")
                } else if l.starts_with("sealed-dir = ") {
                    format!("sealed-dir = \"{DISK}/sealed\"")
                } else if l.starts_with("disk-reserve-mib = ") {
                    format!("disk-reserve-mib = {RESERVE_MIB}")
                } else {
                    l.to_owned()
                }
            })
            .map(|l| l + "\n")
            .collect();
        assert!(text.contains("disk-reserve-mib = 8"), "{text}");
        std::fs::write(&config, text).unwrap();
    });
    // Declared after the pair, so unmounted before it is dropped (a panic
    // included): the pair's temporary directory is then removed whole.
    let _mounts = mounted.into_inner().unwrap();
    let (hk_disk, sz_disk) = (p.hk.dir.join(DISK), p.sz.dir.join(DISK));
    let small = p.publish("Heart study", &AUTO_TO_HK);
    let big_file = p.space.tmp.path().join("big.bin");
    std::fs::write(
        &big_file,
        (0..BIG)
            .map(|i| (i * 7 + i / 4099) as u8)
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    let big = p.publish_file(&big_file, "Scans", &AUTO_TO_HK);

    // 1. The consumer's disk fills with the data it fetches, kept sealed:
    // copies are fetched until the next would not fit beside the reserve.
    let agree = |dataset: &str| {
        let (id, _) = p.request(dataset, "academic-research");
        let (c, _) = p.wait_both(&id, "FINALIZED");
        c["agreement_id"].as_str().unwrap().to_owned()
    };
    let mut fetched = Vec::new();
    let refused = loop {
        assert!(
            fetched.len() < 4,
            "a 48 MiB disk took {} copies",
            fetched.len()
        );
        let agreement = agree(&big);
        let o = p.researcher(&["transfer", "fetch", &agreement, "--keep-sealed"]);
        if o.status.success() {
            fetched.push(agreement);
            continue;
        }
        assert_disk_full(&o, &hk_disk.join("sealed"), "the fetch that does not fit");
        break agreement;
    };
    println!(
        "full disk: {} copies of {} MiB fetched, the next refused with {} MiB free",
        fetched.len(),
        BIG >> 20,
        available(&hk_disk) >> 20
    );
    let parts: Vec<_> = std::fs::read_dir(hk_disk.join("sealed"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".part"))
        .collect();
    assert!(parts.is_empty(), "nothing partial: {parts:?}");

    // 2. Something beside the node fills the rest: no change is made, and
    // the researcher and the administrator are told why.
    let filler = fill(&hk_disk);
    let before = negotiation_count(&p.hk);
    let o = p.researcher(&[
        "contract",
        "request",
        &small,
        "--purpose",
        "academic-research",
    ]);
    assert_disk_full(&o, &hk_disk.join("data"), "a contract request");
    assert_eq!(negotiation_count(&p.hk), before, "nothing stored");
    let export = p.space.tmp.path().join("refused-audit.jsonl");
    let o = admin(&p.hk, &["audit", "export", "--out", &s(&export)]);
    assert_disk_full(&o, &hk_disk.join("data"), "an audit checkpoint");
    // Reads go on.
    for args in [
        &["status", "--json"][..],
        &["catalog", "search", "--json"],
        &["contract", "list", "--json"],
        &["data", "list", "--json"],
    ] {
        admin_ok(&p.hk, args);
    }
    admin_ok(&p.hk, &["agreement", "show", &refused, "--format", "json"]);

    // 3. Space is freed: the same process goes on.
    std::fs::remove_file(&filler).unwrap();
    for a in &fetched {
        admin_ok(&p.hk, &["data", "shred", a, "--reason", "disk space"]);
    }
    let o = p.researcher(&["transfer", "fetch", &refused, "--keep-sealed"]);
    assert!(o.status.success(), "{}", text(&o));
    agree(&small);
    assert!(alive(&mut p.hk), "no restart");

    // 4. The provider's disk fills: publishing is refused; a request
    // reaching it gets no decision (the consumer keeps it REQUESTED and
    // retries), and goes on by itself once space is freed.
    let filler = fill(&sz_disk);
    let data = p.space.tmp.path().join("more.csv");
    std::fs::write(&data, "id\n1\n").unwrap();
    let o = admin(
        &p.sz,
        &[
            "dataset",
            "publish",
            &s(&data),
            "--title",
            "More",
            "--level",
            "general",
            "--sensitive",
            "0",
            "--purpose",
            "academic-research",
            "--personal",
            "0",
        ],
    );
    assert_disk_full(&o, &sz_disk.join("data"), "publishing");
    admin_ok(&p.sz, &["catalog", "search", "--json"]);
    let (id, state) = p.request(&small, "academic-research");
    assert_eq!(state, "REQUESTED");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(p.consumer_view(&id).unwrap()["state"], "REQUESTED");
    assert!(
        admin_view(&p.sz, &id).is_none(),
        "nothing stored on the provider"
    );
    std::fs::remove_file(&filler).unwrap();
    p.wait_both(&id, "FINALIZED");
    p.publish_file(&data, "More", &AUTO_TO_HK);
    assert!(alive(&mut p.sz), "no restart");

    // 5. Both audit logs verify.
    verify_audit(&p, &p.hk, &p.hk_peer, "hku");
    verify_audit(&p, &p.sz, &p.sz_peer, "shenzhen");
}
