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

/// Points the node in `dir` at the tmpfs under `dir/disk` for its store
/// and sealed copies, with a reserve of `reserve_mib`.
fn put_on_disk(dir: &Path, reserve_mib: u64) {
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
                format!("disk-reserve-mib = {reserve_mib}")
            } else {
                l.to_owned()
            }
        })
        .map(|l| l + "\n")
        .collect();
    assert!(
        text.contains(&format!("disk-reserve-mib = {reserve_mib}\n")),
        "{text}"
    );
    std::fs::write(&config, text).unwrap();
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
        put_on_disk(dir, RESERVE_MIB);
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

/// Without a reserve (`disk-reserve-mib = 0`) a full disk reaches sled: its
/// log write fails and sled refuses every later write until it is opened
/// again. The node must not go on answering as if it were whole: it exits
/// with an error naming the store, so that the service manager restarts it.
/// Started again once there is space, it holds every change acknowledged
/// before, takes new ones, and its audit log verifies.
#[test]
fn a_store_that_failed_for_good_stops_the_node_and_a_restart_recovers() {
    if !can_mount() {
        return;
    }
    let space = Space::new();
    let (dir, peer, _) = space.member("Lingnan Lab", None);
    let _mount = mount_tmpfs(&dir.join(DISK)).unwrap();
    put_on_disk(&dir, 0);
    let mut node = Node::start(&dir);
    node.wait_for("the node to answer", |_| true);
    let add = |name: &str| bayspace(&["researcher", "add", name, "--dir", &s(&dir)]);
    let o = add("Before the fill");
    assert!(o.status.success(), "{}", text(&o));

    // Take every free byte, then write until sled's log needs a page the
    // disk does not have.
    let filler = dir.join(DISK).join("filler");
    {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0x5au8; 64 << 10];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }
    let mut acknowledged = Vec::new();
    let refused = (0..400).find_map(|i| {
        let name = format!("Researcher {i}");
        let o = add(&name);
        if o.status.success() {
            acknowledged.push(name);
            None
        } else {
            Some(text(&o))
        }
    });
    let refused = refused.expect("sled never failed on a full disk without a reserve");
    println!(
        "store failure: {} researcher(s) acknowledged on the full disk, then: {}",
        acknowledged.len(),
        refused.trim()
    );

    // The node notices and exits with an error.
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(st) = node.child.as_mut().unwrap().try_wait().unwrap() {
            break st;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the node kept running on a failed store; log:\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let log = node.log();
    println!(
        "store failure: the node exited ({status}) after {:?}",
        start.elapsed()
    );
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("failed and cannot be written until it is opened again")
            && log.contains(&dir.join(DISK).join("data").display().to_string()),
        "{log}"
    );
    node.child = None;

    // With space again, a restart (what systemd does) brings it back whole.
    std::fs::remove_file(&filler).unwrap();
    let node = Node::start(&dir);
    node.wait_for("the restarted node to answer", |_| true);
    let listed = ok(&["researcher", "list", "--dir", &s(&dir)]);
    for name in std::iter::once("Before the fill").chain(acknowledged.iter().map(String::as_str)) {
        assert!(
            listed.contains(name),
            "{name} was acknowledged and lost: {listed}"
        );
    }
    let o = add("After the restart");
    assert!(o.status.success(), "{}", text(&o));
    let export = space.tmp.path().join("lingnan-audit.jsonl");
    ok(&["audit", "export", "--out", &s(&export), "--dir", &s(&dir)]);
    ok(&["audit", "verify", &s(&export), "--peer-id", &peer]);
}
