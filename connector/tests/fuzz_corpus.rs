//! Replays every committed fuzz corpus file through the function its fuzz
//! target calls, so that a crash the fuzzer found once stays fixed without
//! cargo-fuzz or a nightly compiler. See docs/RELIABILITY.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use bayspace_connector::fuzzing::TARGETS;

/// Targets whose decoder lives below this crate and is replayed by that
/// crate's own test.
const ELSEWHERE: &[&str] = &["address_plan"];

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

#[test]
fn every_corpus_file_replays_without_a_panic_and_every_seed_is_accepted() {
    for (name, decode) in TARGETS {
        let inputs = files(&corpus().join(name));
        assert!(!inputs.is_empty(), "no corpus for fuzz target {name}");
        let mut accepted = 0;
        for path in &inputs {
            let bytes = std::fs::read(path).unwrap();
            // A panic here names the file through the test's output.
            eprintln!("{name}: {}", path.display());
            let ok = decode(&bytes);
            let seed = path
                .file_name()
                .is_some_and(|f| f.to_string_lossy().starts_with("seed-"));
            // The seeds are real encodings (examples/fuzz_seeds.rs): one
            // refused means the format moved under the corpus.
            assert!(ok || !seed, "{} is a seed but is refused", path.display());
            accepted += usize::from(ok);
        }
        assert!(
            accepted > 0,
            "no input of {name} is accepted; rerun fuzz_seeds"
        );
    }
}

#[test]
fn every_corpus_directory_belongs_to_a_target() {
    for dir in files_and_dirs(&corpus()) {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            TARGETS.iter().any(|(t, _)| *t == name) || ELSEWHERE.contains(&name.as_str()),
            "corpus directory {name} has no target to replay it"
        );
    }
}

fn files_and_dirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.is_dir())
        .collect()
}
