//! Replays the committed `address_plan` fuzz corpus through the function
//! the fuzz target calls, without cargo-fuzz. See docs/RELIABILITY.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

#[test]
fn every_address_plan_corpus_file_replays_without_a_panic() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/address_plan");
    let mut accepted = 0;
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        eprintln!("address_plan: {}", path.display());
        accepted += usize::from(bayspace_ipv6::fuzzing::address_plan(&bytes));
        seen += 1;
    }
    assert!(seen > 0, "no corpus in {}", dir.display());
    assert!(accepted > 0, "no address plan in the corpus is accepted");
}
