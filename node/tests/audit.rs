#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The audit log off a live node: `audit export` through gRPC, `audit
//! verify` offline against the PeerId, and one edited byte caught at its
//! entry.

mod common;

use common::*;

#[test]
fn an_export_verifies_and_one_edited_byte_is_caught_at_its_entry() {
    let space = Space::new();
    let (dir, peer, _) = space.member("alpha", None);
    let node = Node::start(&dir);
    node.wait_for("status", |_| true);
    let data = space.tmp.path().join("d.csv");
    std::fs::write(&data, "x\n").unwrap();
    for title in ["First survey", "Second survey", "Third survey"] {
        ok(&[
            "dataset",
            "publish",
            &s(&data),
            "--title",
            title,
            "--level",
            "general",
            "--personal",
            "0",
            "--sensitive",
            "0",
            "--purpose",
            "academic-research",
            "--dir",
            &s(&dir),
        ]);
    }
    let export = space.tmp.path().join("audit.jsonl");
    ok(&["audit", "export", "--out", &s(&export), "--dir", &s(&dir)]);
    let out = ok(&["audit", "verify", &s(&export), "--peer-id", &peer]);
    assert!(out.starts_with("ok: 3 entries, 1 checkpoints"), "{out}");
    assert!(!out.contains("warning"), "{out}");

    // Another node's PeerId does not verify the checkpoints.
    let (_, other, _) = space.member("beta", None);
    let o = bayspace(&["audit", "verify", &s(&export), "--peer-id", &other]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));

    // One byte edited in the second entry: verification names line 2.
    let original = std::fs::read_to_string(&export).unwrap();
    let lines: Vec<&str> = original.lines().collect();
    assert!(lines[1].contains("Second survey"));
    let edited = original.replacen("Second survey", "Second surfey", 1);
    let tampered = space.tmp.path().join("tampered.jsonl");
    std::fs::write(&tampered, edited).unwrap();
    let o = bayspace(&["audit", "verify", &s(&tampered), "--peer-id", &peer]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("line 2 (seq 2)"), "{}", text(&o));

    // Bad input is exit 2 with the reason.
    let o = bayspace(&["audit", "verify", &s(&tampered), "--peer-id", "not-a-peer"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = bayspace(&["audit", "verify", "/nonexistent", "--peer-id", &peer]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}
