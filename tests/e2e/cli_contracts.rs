#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The negotiation commands against one real node process: who may call
//! what, and the errors for ids the node does not know. The negotiation
//! flow between two nodes is tested in its own file.

use std::path::Path;
use std::process::Output;

use bayspace_tests::*;
use serde_json::Value;

const UNKNOWN_DATASET: &str =
    "urn:bayspace:dataset:0b6f2c1e5a7d4e2b9c1a7d3e8f0a1b2c0b6f2c1e5a7d4e2b9c1a7d3e8f0a1b2c";
const UNKNOWN_NEGOTIATION: &str = "urn:uuid:4f1d2e3c-6b5a-4c8d-9e7f-0a1b2c3d4e5f";

fn with(args: &[&str], dir: &Path, token: Option<&str>) -> Output {
    let d = s(dir);
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--dir", &d]);
    if let Some(t) = token {
        all.extend(["--token", t]);
    }
    bayspace(&all)
}

fn refused(o: &Output, code: &str) -> String {
    let t = text(o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains(code), "expected {code}: {t}");
    t
}

fn json_of(o: &Output) -> Value {
    assert!(o.status.success(), "{}", text(o));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn contract_commands_check_the_caller_and_name_unknown_ids() {
    let space = Space::new();
    let (dir, _peer, _) = space.member("Alpha University", None);
    let node = Node::start(&dir);
    node.wait_for("the node to answer", |_| true);

    let out = ok(&[
        "researcher",
        "add",
        "Chan Tai Man",
        "--orcid",
        "0000-0002-1825-0097",
        "--dir",
        &s(&dir),
    ]);
    let researcher = out
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .unwrap()
        .to_owned();

    // Administrator methods refuse a researcher, and everyone without a
    // valid token.
    for cmd in [
        &["offers", "list"][..],
        &["offers", "approve", UNKNOWN_NEGOTIATION],
        &["offers", "reject", UNKNOWN_NEGOTIATION, "--reason", "no"],
        &["records", "show", UNKNOWN_DATASET],
        &["records", "set", UNKNOWN_DATASET, "--pipia"],
        &["agreement", "revoke", UNKNOWN_NEGOTIATION, "--reason", "no"],
        &[
            "filing",
            "export",
            UNKNOWN_NEGOTIATION,
            "--out",
            "/nonexistent",
        ],
    ] {
        refused(&with(cmd, &dir, Some(&researcher)), "PermissionDenied");
        refused(&with(cmd, &dir, Some("")), "Unauthenticated");
        refused(&with(cmd, &dir, Some("not-a-token")), "Unauthenticated");
    }
    for cmd in [&["contract", "list"][..], &["agreement", "list"]] {
        refused(&with(cmd, &dir, Some("")), "Unauthenticated");
    }

    // Nothing yet, for either role.
    for token in [None, Some(researcher.as_str())] {
        assert_eq!(
            json_of(&with(&["contract", "list", "--json"], &dir, token)),
            Value::Array(vec![])
        );
        assert_eq!(
            json_of(&with(&["agreement", "list", "--json"], &dir, token)),
            Value::Array(vec![])
        );
    }
    assert_eq!(
        json_of(&with(&["offers", "list", "--json"], &dir, None)),
        Value::Array(vec![])
    );
    assert!(ok(&["offers", "list", "--dir", &s(&dir)]).contains("no pending requests"));

    // Unknown ids are named.
    for token in [None, Some(researcher.as_str())] {
        let t = refused(
            &with(&["contract", "show", UNKNOWN_NEGOTIATION], &dir, token),
            "NotFound",
        );
        assert!(t.contains(UNKNOWN_NEGOTIATION), "{t}");
        let t = refused(
            &with(&["agreement", "show", UNKNOWN_NEGOTIATION], &dir, token),
            "NotFound",
        );
        assert!(t.contains(UNKNOWN_NEGOTIATION), "{t}");
    }
    // Malformed input is caught before anything is decided.
    let t = refused(
        &with(
            &[
                "contract",
                "request",
                "not-a-urn",
                "--purpose",
                "academic-research",
            ],
            &dir,
            None,
        ),
        "InvalidArgument",
    );
    assert!(t.contains("dataset") && t.contains("not-a-urn"), "{t}");
    let t = refused(
        &with(
            &[
                "records",
                "set",
                UNKNOWN_DATASET,
                "--security-assessment-until",
                "30/06/2027",
            ],
            &dir,
            None,
        ),
        "InvalidArgument",
    );
    assert!(t.contains("security-assessment-until"), "{t}");
    let t = refused(
        &with(
            &["offers", "reject", UNKNOWN_NEGOTIATION, "--reason", " "],
            &dir,
            None,
        ),
        "InvalidArgument",
    );
    assert!(t.contains("reason"), "{t}");

    // A records change with nothing in it never reaches the node.
    let o = with(&["records", "set", UNKNOWN_DATASET], &dir, None);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("nothing to set"), "{}", text(&o));

    // These reach the negotiator's own checks.
    let t = refused(
        &with(&["offers", "approve", UNKNOWN_NEGOTIATION], &dir, None),
        "NotFound",
    );
    assert!(t.contains(UNKNOWN_NEGOTIATION), "{t}");
    let o = with(&["records", "show", UNKNOWN_DATASET], &dir, None);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains(UNKNOWN_DATASET) && (t.contains("NotFound") || t.contains("FailedPrecondition")),
        "{t}"
    );

    assert!(node.terminate().success());
}
