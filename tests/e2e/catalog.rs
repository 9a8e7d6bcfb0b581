#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The federated catalog across real node processes on `[::1]`: publish on
//! one member, find it on the others; late joiners sync; outsiders see
//! nothing; versions and withdrawals spread.

use std::time::{Duration, Instant};

use bayspace_tests::*;
use serde_json::Value;

fn search(dir: &std::path::Path, query: &[&str]) -> Vec<Value> {
    let mut args = vec!["catalog", "search", "--json", "--dir"];
    let d = s(dir);
    args.push(&d);
    args.extend(query);
    serde_json::from_str::<Value>(&ok(&args))
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// Polls a search until `pred` holds on its result.
fn wait_search(
    node: &Node,
    query: &[&str],
    what: &str,
    pred: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let found = search(&node.dir, query);
        if pred(&found) {
            return found;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "timed out waiting for {what}; got {found:?}; log:\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn publish(dir: &std::path::Path, file: &std::path::Path, title: &str, extra: &[&str]) -> Value {
    let (d, f) = (s(dir), s(file));
    let mut args = vec![
        "dataset",
        "publish",
        &f,
        "--title",
        title,
        "--keyword",
        "cohort",
        "--level",
        "general",
        "--personal",
        "1200",
        "--sensitive",
        "300",
        "--category",
        "health",
        "--purpose",
        "academic-research",
        "--json",
        "--dir",
        &d,
    ];
    args.extend(extra);
    serde_json::from_str(&ok(&args)).unwrap()
}

#[test]
fn a_dataset_published_on_one_member_is_found_on_the_others() {
    let space = Space::new();
    let (sz_dir, sz_peer, _) = space.member_in("Shenzhen University", "mainland:shenzhen", None);
    let sz = Node::start(&sz_dir);
    let sz_addr = sz.tcp_addr();
    let (hk_dir, _, _) = space.member_in("HKU", "hk", Some(&sz_addr));
    let (mo_dir, _, _) = space.member_in("University of Macau", "macao", Some(&sz_addr));
    let hk = Node::start(&hk_dir);
    let mo = Node::start(&mo_dir);
    for n in [&hk, &mo] {
        n.wait_for("admission to Shenzhen", |st| {
            Node::admitted(st).contains(&sz_peer)
        });
    }

    // An empty result is an empty array.
    assert!(search(&hk_dir, &[]).is_empty());

    let data = space.tmp.path().join("cohort.csv");
    std::fs::write(&data, "id,age\n1,34\n2,51\n").unwrap();
    let published = publish(&sz_dir, &data, "Diabetes cohort 2026", &[]);
    let id = published["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("urn:bayspace:dataset:"), "{published}");

    for n in [&hk, &mo] {
        let found = wait_search(n, &["diabetes"], "the dataset", |f| f.len() == 1);
        let d = &found[0];
        assert_eq!(d["id"], Value::from(id.clone()));
        assert_eq!(d["title"], "Diabetes cohort 2026");
        assert_eq!(d["publisher"], "Shenzhen University");
        assert_eq!(d["region"], "mainland:shenzhen");
        assert_eq!(d["version"], 1);
    }
    // Filters: region and level match, a wrong publisher does not.
    assert_eq!(
        search(
            &hk_dir,
            &["--region", "mainland:shenzhen", "--level", "general"]
        )
        .len(),
        1
    );
    assert!(search(&hk_dir, &["--publisher", "HKU"]).is_empty());
    assert!(search(&hk_dir, &["genomics"]).is_empty());

    // A node whose credential does not cover the address it speaks from is
    // refused and sees an empty catalog.
    let (out_dir, out_peer) = space.init_in("Outsider", "hk", Some(&sz_addr));
    space.issue_in(&out_dir, &out_peer, "hk", "fd00:5a::/48");
    let outsider = Node::start(&out_dir);
    outsider.wait_for("status", |_| true);
    sz.wait_for("the outsider's refusal", |st| {
        st["admission_refusals"].as_u64().unwrap() >= 1 && !Node::admitted(st).contains(&out_peer)
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        search(&out_dir, &[]).is_empty(),
        "the outsider got a catalog"
    );
    drop(outsider);

    // A member that joins later syncs the catalog from its peers.
    let (late_dir, _, _) = space.member_in("Late Lab", "mainland:guangzhou", Some(&sz_addr));
    let late = Node::start(&late_dir);
    late.wait_for("admission to Shenzhen", |st| {
        Node::admitted(st).contains(&sz_peer)
    });
    wait_search(&late, &["cohort"], "the synced dataset", |f| f.len() == 1);

    // A new version replaces the old everywhere; a withdrawal hides it.
    let v2 = publish(
        &sz_dir,
        &data,
        "Diabetes cohort 2026 (revised)",
        &["--replaces", &id],
    );
    assert_eq!(v2["id"], Value::from(id.clone()));
    assert_eq!(v2["version"], 2);
    wait_search(&hk, &["revised"], "version 2", |f| {
        f.len() == 1 && f[0]["version"] == 2
    });
    ok(&["dataset", "withdraw", &id, "--dir", &s(&sz_dir)]);
    wait_search(&mo, &["cohort"], "the withdrawal", |f| f.is_empty());

    // The DSP export of a node is a Catalog document.
    let dsp: Value = serde_json::from_str(&ok(&[
        "catalog",
        "export",
        "--format",
        "dsp",
        "--dir",
        &s(&hk_dir),
    ]))
    .unwrap();
    assert_eq!(dsp["@type"], "Catalog");
    if let Some(shared) = shared() {
        let file = space.tmp.path().join("catalog.json");
        std::fs::write(&file, dsp.to_string()).unwrap();
        let o = std::process::Command::new(shared.join("tools/dsp-validate"))
            .arg("catalog")
            .arg(&file)
            .output()
            .unwrap();
        assert!(o.status.success(), "dsp-validate: {}", text(&o));
    }
}

#[test]
fn bad_publications_are_refused_and_store_nothing() {
    let space = Space::new();
    let (dir, _, _) = space.member("alpha", None);
    let node = Node::start(&dir);
    node.wait_for("status", |_| true);
    let d = s(&dir);
    let missing = space.tmp.path().join("nope.csv");
    // Every case but the missing file publishes a file that exists, so that
    // only the defect it names can be what refuses it.
    let data = space.tmp.path().join("data.csv");
    std::fs::write(&data, "id,value\n1,2\n").unwrap();
    let terms = |extra: &[&'static str]| {
        let mut v = vec!["--level", "general", "--personal", "1", "--sensitive", "0"];
        v.extend(extra);
        v
    };
    let (missing, data) = (s(&missing), s(&data));
    let mut cases: Vec<(&str, Vec<&str>, &str)> = vec![(
        &missing,
        vec!["--level", "general", "--personal", "1", "--sensitive", "0"],
        "nope.csv",
    )];
    let bad_terms: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--level", "secret", "--personal", "1", "--sensitive", "0"],
            "level",
        ),
        (
            vec!["--level", "general", "--personal", "-1", "--sensitive", "0"],
            "personal",
        ),
        (
            vec![
                "--level",
                "general",
                "--personal",
                "1",
                "--sensitive",
                "0",
                "--recipient-region",
                "mainland:shenzen",
            ],
            "shenzen",
        ),
        (
            terms(&["--valid-until", "tomorrow"]),
            "valid-until `tomorrow`",
        ),
        (
            terms(&["--valid-until", "2020-01-01T00:00:00Z"]),
            "valid-until `2020-01-01T00:00:00Z` is not after now",
        ),
        (
            terms(&["--valid-until", "2099-01-01T00:00:00Z", "--valid-days", "3"]),
            "--valid-days",
        ),
        (
            terms(&["--delete-by", "2026-13-01"]),
            "delete-by `2026-13-01`",
        ),
        (
            terms(&["--delete-by", "2020-01-01"]),
            "delete-by `2020-01-01` has already passed",
        ),
        (terms(&["--use-limit", "0"]), "use-limit `0`"),
        (terms(&["--use-limit", "many"]), "'many' for '--use-limit"),
    ];
    cases.extend(bad_terms.into_iter().map(|(t, n)| (data.as_str(), t, n)));
    let publish_args = |file, extra: &[&'static str]| {
        let mut args = vec![
            "dataset",
            "publish",
            file,
            "--title",
            "t",
            "--purpose",
            "academic-research",
            "--dir",
            &d,
        ];
        args.extend(extra);
        args
    };
    for (file, extra, needle) in cases {
        let args = publish_args(file, &extra);
        let o = bayspace(&args);
        assert!(!o.status.success(), "{args:?} accepted");
        assert!(text(&o).contains(needle), "{args:?}: {}", text(&o));
    }
    let st = node.wait_for("status", |_| true);
    assert_eq!(st["catalog_size"], 0);
    assert!(search(&dir, &[]).is_empty());

    // The same file and the same other terms, without a defect, publish.
    let o = bayspace(&publish_args(&data, &terms(&[])));
    assert!(o.status.success(), "{}", text(&o));
    let st = node.wait_for("status", |_| true);
    assert_eq!(st["catalog_size"], 1);
}

#[test]
fn a_revoked_members_datasets_leave_the_catalog() {
    let space = Space::new();
    let (a_dir, _, _) = space.member("alpha", None);
    let a = Node::start(&a_dir);
    let a_addr = a.tcp_addr();
    let (b_dir, b_peer, b_serial) = space.member("beta", Some(&a_addr));
    let b = Node::start(&b_dir);
    a.wait_for("beta admitted", |st| Node::admitted(st).contains(&b_peer));
    let data = space.tmp.path().join("b.csv");
    std::fs::write(&data, "x\n1\n").unwrap();
    publish(&b_dir, &data, "Beta survey", &[]);
    wait_search(&a, &["survey"], "beta's dataset", |f| f.len() == 1);

    let list = space.tmp.path().join("revocations.json");
    ok(&[
        "authority",
        "revoke",
        "--dir",
        &s(&space.authority()),
        "--serial",
        &b_serial.to_string(),
        "--out",
        &s(&list),
    ]);
    ok(&["revocations", "publish", &s(&list), "--dir", &s(&a_dir)]);
    wait_search(&a, &["survey"], "beta's dataset to go", |f| f.is_empty());
    drop(b);
}
