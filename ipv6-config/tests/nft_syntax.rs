#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Checks rendered rule sets with nftables itself (`nft -c`), which parses
//! and resolves the whole file without loading it.

use std::process::Command;

use bayspace_ipv6::{IpNet, nft, plan::AddressPlan};

const PLAN: &str = r#"name = "gba-research"
allow_ipv4 = true

[[institution]]
name = "Shenzhen University"
region = "mainland:shenzhen"
prefixes = ["fd00:5a::/48", "fd00:5a:0:1::/64"]
p2p_port = 4711

[[institution]]
name = "HKU"
region = "hk"
prefixes = ["2001:db8:6b::/48", "10.6.0.0/16"]

[[institution]]
name = "University of Macau"
region = "macao"
prefixes = ["fd00:7c::/48"]
grpc_port = 7412
"#;

/// Runs `nft -c -f` on `rules`; `None` when nftables cannot check here.
fn nft_check(rules: &str) -> Option<(bool, String)> {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), rules).unwrap();
    let out = match Command::new("nft")
        .arg("-c")
        .arg("-f")
        .arg(file.path())
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            skip_or_fail("`nft` is not installed (apt-get install nftables)");
            return None;
        }
        Err(e) => panic!("running nft: {e}"),
    };
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    // Without CAP_NET_ADMIN, nft cannot read the kernel's ruleset cache it
    // checks against; that says nothing about the syntax.
    if !out.status.success()
        && stderr.contains("cache initialization failed: Operation not permitted")
    {
        skip_or_fail(&format!(
            "nft -c needs CAP_NET_ADMIN here: {}",
            stderr.trim()
        ));
        return None;
    }
    Some((out.status.success(), stderr))
}

/// A check that cannot run here: said, and skipped; with
/// `BAYSPACE_REQUIRE_ALL=1` (set by CI), a failure instead.
fn skip_or_fail(reason: &str) {
    if std::env::var("BAYSPACE_REQUIRE_ALL").is_ok_and(|v| v == "1") {
        panic!("BAYSPACE_REQUIRE_ALL=1, but this check cannot run: {reason}");
    }
    println!("skipped: {reason}");
}

#[test]
fn rendered_rule_sets_pass_nft_check() {
    let plan = AddressPlan::parse(PLAN).unwrap();
    let clients: Vec<IpNet> = vec![
        "fd00:5a:0:99::/64".parse().unwrap(),
        "127.0.0.0/8".parse().unwrap(),
    ];
    let cases = [
        ("Shenzhen University", Vec::new()),
        ("HKU", clients),
        ("University of Macau", Vec::new()),
    ];
    for (institution, clients) in cases {
        let rules = nft::render(&plan, institution, &clients).unwrap();
        let Some((ok, stderr)) = nft_check(&rules) else {
            return;
        };
        assert!(
            ok,
            "nft -c refused the rules for {institution}:\n{stderr}\n{rules}"
        );
    }
}

#[test]
fn nft_check_catches_a_broken_rule_set() {
    // Guards the test above against an nft that accepts anything.
    let plan = AddressPlan::parse(PLAN).unwrap();
    let rules = nft::render(&plan, "HKU", &[])
        .unwrap()
        .replace("saddr", "sadr");
    if let Some((ok, _)) = nft_check(&rules) {
        assert!(!ok, "nft -c accepted a broken rule set");
    }
}
