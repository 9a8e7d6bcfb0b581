#![allow(clippy::unwrap_used, clippy::expect_used)]
//! End to end through the binary: trust anchor, node init, issue, verify,
//! revoke, show.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use bayspace_tests::{bayspace, ok, text};

fn fails(args: &[&str], code: i32) -> String {
    let o = bayspace(args);
    assert_eq!(o.status.code(), Some(code), "{args:?}: {}", text(&o));
    text(&o)
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn anchor_init_issue_verify_revoke_show() {
    let tmp = tempfile::tempdir().unwrap();
    let auth = tmp.path().join("authority");
    let node = tmp.path().join("node");
    let s = |p: &Path| p.to_str().unwrap().to_owned();

    let out = ok(&[
        "authority",
        "init",
        "--dir",
        &s(&auth),
        "--name",
        "GBA test",
    ]);
    assert!(out.contains("authority-key:"), "{out}");
    assert_eq!(mode(&auth.join("authority.key")), 0o600);
    let anchor = s(&auth.join("authority.pub"));
    fails(&["authority", "init", "--dir", &s(&auth)], 1);

    let out = ok(&[
        "init",
        "--dir",
        &s(&node),
        "--institution",
        "Example University",
        "--region",
        "hk",
        "--anchor",
        &anchor,
    ]);
    let peer_id = out
        .lines()
        .find_map(|l| l.strip_prefix("peer-id: "))
        .expect("peer-id line")
        .to_owned();
    assert!(out.contains("bayspace run --dir"), "{out}");
    assert_eq!(mode(&node.join("node.key")), 0o600);
    assert_eq!(mode(&node.join("admin.token")), 0o600);
    let config = std::fs::read_to_string(node.join("config.toml")).unwrap();
    assert!(
        config.contains("credential = \"membership.cred\""),
        "{config}"
    );
    assert!(node.join("anchor.pub").exists());
    // A second init without --force refuses the non-empty directory.
    let e = fails(
        &[
            "init",
            "--dir",
            &s(&node),
            "--institution",
            "X",
            "--region",
            "hk",
        ],
        1,
    );
    assert!(e.contains("--force"), "{e}");

    let cred = s(&node.join("membership.cred"));
    let out = ok(&[
        "authority",
        "issue",
        "--dir",
        &s(&auth),
        "--institution",
        "Example University",
        "--region",
        "hk",
        "--peer-id",
        &peer_id,
        "--prefix",
        "2001:db8:10::/48",
        "--roles",
        "provider,consumer",
        "--valid-days",
        "30",
        "--out",
        &cred,
    ]);
    assert!(out.contains("serial 1"), "{out}");

    let node_anchor = s(&node.join("anchor.pub"));
    let out = ok(&[
        "credential",
        "verify",
        &cred,
        "--anchor",
        &node_anchor,
        "--peer-id",
        &peer_id,
        "--addr",
        "2001:db8:10::1",
    ]);
    assert!(
        out.starts_with("valid:") && out.lines().count() == 1,
        "{out}"
    );

    // Another node's PeerId.
    let other = tmp.path().join("other");
    let other_out = ok(&[
        "init",
        "--dir",
        &s(&other),
        "--institution",
        "Other",
        "--region",
        "macao",
    ]);
    let other_id = other_out
        .lines()
        .find_map(|l| l.strip_prefix("peer-id: "))
        .unwrap();
    let e = fails(
        &[
            "credential",
            "verify",
            &cred,
            "--anchor",
            &anchor,
            "--peer-id",
            other_id,
        ],
        1,
    );
    assert!(e.contains("PeerId") && e.contains(other_id), "{e}");

    // One bit outside 2001:db8:10::/48.
    let e = fails(
        &[
            "credential",
            "verify",
            &cred,
            "--anchor",
            &anchor,
            "--addr",
            "2001:db8:11::1",
        ],
        1,
    );
    assert!(
        e.contains("outside") && e.contains("2001:db8:10::/48"),
        "{e}"
    );

    // Revoke serial 1.
    let list = s(&tmp.path().join("revocations.json"));
    let out = ok(&[
        "authority",
        "revoke",
        "--dir",
        &s(&auth),
        "--serial",
        "1",
        "--out",
        &list,
    ]);
    assert!(out.contains("list 1"), "{out}");
    let e = fails(
        &[
            "credential",
            "verify",
            &cred,
            "--anchor",
            &anchor,
            "--revocations",
            &list,
        ],
        1,
    );
    assert!(e.contains("serial 1 is revoked"), "{e}");
    fails(
        &[
            "authority",
            "revoke",
            "--dir",
            &s(&auth),
            "--serial",
            "9",
            "--out",
            &list,
        ],
        1,
    );

    // Show.
    let out = ok(&["credential", "show", &cred, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["serial"], 1);
    assert_eq!(v["peer_id"], peer_id.as_str());
    assert_eq!(v["format"], "bayspace/membership-credential/1");

    // Unreadable and malformed input exit 2.
    fails(
        &[
            "credential",
            "verify",
            &s(&tmp.path().join("missing.cred")),
            "--anchor",
            &anchor,
        ],
        2,
    );
    let bad = tmp.path().join("bad.cred");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&cred)
            .unwrap()
            .replace("membership-credential/1", "membership-credential/9"),
    )
    .unwrap();
    let e = fails(&["credential", "verify", &s(&bad), "--anchor", &anchor], 2);
    assert!(
        e.contains("bad.cred") && e.contains("membership-credential/9"),
        "{e}"
    );

    // The node key must not be readable by others.
    std::fs::set_permissions(
        node.join("node.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let e = fails(
        &[
            "init",
            "--dir",
            &s(&node),
            "--institution",
            "Example University",
            "--region",
            "hk",
            "--force",
        ],
        1,
    );
    assert!(e.contains("chmod 600"), "{e}");
}
