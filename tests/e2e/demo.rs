#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `bayspace demo`, the README's main command, run as a user runs it.

use bayspace_tests::*;

#[test]
fn the_demo_runs_the_whole_story_and_cleans_up() {
    let before = demo_dirs();
    let o = bayspace(&["demo"]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    for needle in [
        "route gba-standard-contract (mainland-hk), blockers: pipia, consent",
        "approving now is refused",
        "FINALIZED on both sides",
        "BLAKE3 verified",
        "refused: the purpose `marketing` is not allowed",
        "Summary",
    ] {
        assert!(out.contains(needle), "`{needle}` missing from:\n{out}");
    }
    assert_eq!(demo_dirs(), before, "the temporary directory is removed");
}

fn demo_dirs() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("bayspace-demo-"))
        .collect();
    v.sort();
    v
}
