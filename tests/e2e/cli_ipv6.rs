#![allow(clippy::unwrap_used, clippy::expect_used)]
//! End to end: `bayspace ipv6 check` and `bayspace ipv6 nft` on plan files.

use std::process::{Command, Output};

use bayspace_tests::bin;

const GOOD: &str = r#"name = "gba-research"

[[institution]]
name = "Shenzhen University"
region = "mainland:shenzhen"
prefixes = ["fd00:5a::/48"]
p2p_port = 4711

[[institution]]
name = "HKU"
region = "hk"
prefixes = ["2001:db8:6b::/48"]
"#;

const BAD: &str = r#"name = "gba-research"

[[institution]]
name = "Shenzhen University"
region = "mainland:shenzen"
prefixes = ["fd00:5a::/8", "10.0.0.0/8"]

[[institution]]
name = "Shenzhen University"
region = "hk"
prefixes = ["fd00:5a::/48"]
"#;

fn bayspace(args: &[&str], plan: &str) -> (Output, tempfile::NamedTempFile) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), plan).unwrap();
    let out = Command::new(bin())
        .arg("ipv6")
        .args(&args[..1])
        .arg(file.path())
        .args(&args[1..])
        .output()
        .unwrap();
    (out, file)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn check_accepts_a_valid_plan_with_a_summary() {
    let (out, _f) = bayspace(&["check"], GOOD);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stdout.contains("plan `gba-research` is valid: 2 institutions, 2 prefixes"),
        "{stdout}"
    );
    assert!(out.stderr.is_empty());
}

#[test]
fn check_reports_every_problem_and_exits_2() {
    let (out, _f) = bayspace(&["check"], BAD);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let stderr = text(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 4, "{stderr}");
    for expected in [
        "line 5 (Shenzhen University): region: unknown Mainland city `shenzen`",
        "line 6 (Shenzhen University): prefix fd00:5a::/8 is shorter than /16",
        "line 6 (Shenzhen University): prefix 10.0.0.0/8 is IPv4",
        "line 9 (Shenzhen University): institution name `Shenzhen University` is already used on line 4",
    ] {
        assert!(stderr.contains(expected), "missing {expected}:\n{stderr}");
    }
}

#[test]
fn nft_prints_the_rule_set() {
    let (out, _f) = bayspace(
        &[
            "nft",
            "--institution",
            "Shenzhen University",
            "--grpc-client-prefix",
            "fd00:5a:0:9::/64",
        ],
        GOOD,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let rules = text(&out.stdout);
    assert!(rules.contains("table inet bayspace {"), "{rules}");
    assert!(
        rules.contains("elements = { 2001:db8:6b::/48, fd00:5a::/48 }"),
        "{rules}"
    );
    assert!(
        rules.contains("tcp dport 4711 ip6 saddr @members6 accept"),
        "{rules}"
    );
    assert!(
        rules.contains("tcp dport 7410 ip6 saddr @grpc_clients6 accept"),
        "{rules}"
    );
    assert!(rules.contains("elements = { fd00:5a:0:9::/64 }"), "{rules}");
}

#[test]
fn nft_refuses_an_unknown_institution_or_a_bad_plan() {
    let (out, _f) = bayspace(&["nft", "--institution", "CUHK"], GOOD);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(text(&out.stderr).contains("institution `CUHK` is not in plan `gba-research`"));

    let (out, _f) = bayspace(&["nft", "--institution", "Shenzhen University"], BAD);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert_eq!(text(&out.stderr).lines().count(), 4);
}
