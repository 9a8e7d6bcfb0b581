#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The audit log off a live node: `audit export` through gRPC, `audit
//! verify` offline against the PeerId, and one edited byte caught at its
//! entry.

use bayspace_tests::*;

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
    // The entries chain; it is the checkpoint after them that is refused.
    assert!(
        text(&o).contains(
            "line 4 (seq 3): the checkpoint signature does not verify with the given key"
        ),
        "{}",
        text(&o)
    );

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

/// Member A (HKU) signs checkpoints; member B (Shenzhen) keeps them. An
/// export of A's log with its last entry and checkpoint cut off still
/// verifies on its own, but not against the checkpoints B holds.
#[test]
fn a_log_cut_short_of_a_checkpoint_a_peer_holds_is_refused() {
    let pair = pair::Pair::start(false);
    let (a, a_peer, b) = (&pair.hk, &pair.hk_peer, &pair.sz);
    let data = pair.space.tmp.path().join("w.csv");
    std::fs::write(&data, "x\n").unwrap();
    let publish = |title: &str| {
        pair::admin_ok(
            a,
            &[
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
            ],
        );
    };
    publish("First survey");
    let first = space_path(&pair, "first.jsonl");
    pair::admin_ok(a, &["audit", "export", "--out", &s(&first)]);
    publish("Second survey");
    let full = space_path(&pair, "full.jsonl");
    pair::admin_ok(a, &["audit", "export", "--out", &s(&full)]);

    // The attack: the last entry and the checkpoint after it are cut off.
    let text_full = std::fs::read_to_string(&full).unwrap();
    let lines: Vec<&str> = text_full.lines().collect();
    let n = lines.len();
    assert!(
        lines[n - 1].contains(r#""kind":"checkpoint""#),
        "{text_full}"
    );
    assert!(lines[n - 2].contains("Second survey"), "{text_full}");
    let last_seq = seq_of(lines[n - 1]);
    let truncated = space_path(&pair, "truncated.jsonl");
    std::fs::write(&truncated, format!("{}\n", lines[..n - 2].join("\n"))).unwrap();
    // On its own the cut export verifies: only the report shows where it
    // ends, so the operator can compare.
    let out = ok(&["audit", "verify", &s(&truncated), "--peer-id", a_peer]);
    assert!(out.starts_with("ok: "), "{out}");
    let kept = lines[..n - 2]
        .iter()
        .rev()
        .find(|l| l.contains(r#""kind":"checkpoint""#))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(kept).unwrap();
    assert!(
        out.contains(&format!(
            "last checkpoint: number {} for seq {}, signed {}",
            v["number"],
            v["seq"],
            v["time"].as_str().unwrap()
        )),
        "{out}"
    );

    // B holds A's latest checkpoint.
    let held = space_path(&pair, "held.jsonl");
    pair::poll(b, "A's checkpoint 2 held by B", || {
        let o = pair::admin(b, &["audit", "checkpoints", "--peer", a_peer]);
        assert!(o.status.success(), "{}", text(&o));
        let stdout = String::from_utf8(o.stdout).unwrap();
        std::fs::write(&held, &stdout).unwrap();
        stdout.contains(r#""number":2,"#)
    });
    let o = bayspace(&[
        "audit",
        "verify",
        &s(&truncated),
        "--peer-id",
        a_peer,
        "--against",
        &s(&held),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let msg = text(&o);
    assert!(
        msg.contains("cut short") && msg.contains(&format!("checkpoint 2 for seq {last_seq}")),
        "{msg}"
    );

    // The whole export agrees with what B holds.
    let out = ok(&[
        "audit",
        "verify",
        &s(&full),
        "--peer-id",
        a_peer,
        "--against",
        &s(&held),
    ]);
    assert!(out.contains("peer checkpoints agree"), "{out}");
    assert!(
        out.contains(&format!("the latest for seq {last_seq}")),
        "{out}"
    );

    // B's checkpoints of A are no use for another node's log.
    let o = bayspace(&[
        "audit",
        "verify",
        &s(&full),
        "--peer-id",
        &pair.sz_peer,
        "--against",
        &s(&held),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("line 1"), "{}", text(&o));
}

fn space_path(pair: &pair::Pair, name: &str) -> std::path::PathBuf {
    pair.space.tmp.path().join(name)
}

fn seq_of(line: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    v["seq"].as_u64().unwrap()
}
