#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The store's format version with real node processes: a store of the
//! previous format (no version key) is backed up and migrated at start; a
//! store of a newer format is refused with a clear message.

use std::path::Path;

use bayspace_connector::store::version::{CURRENT, META_TREE, VERSION_KEY};
use bayspace_connector::store::{SledStore, Store};
use bayspace_tests::*;

/// Opens a stopped node's store in this process. The lock of the store
/// this test opened a moment before can outlive its drop briefly (sled's
/// background threads still hold the file), longer when the other tests
/// in this process keep the machine busy: try again until the deadline.
fn open(data: &Path) -> SledStore {
    let start = std::time::Instant::now();
    loop {
        match SledStore::open(data) {
            Ok(store) => return store,
            Err(e)
                if start.elapsed() < DEADLINE
                    && format!("{e:?}").contains("could not acquire lock") =>
            {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) => panic!("{}: {e}", data.display()),
        }
    }
}

/// Rewrites (or removes) the version key of a stopped node's store.
fn set_version(data: &Path, value: Option<&[u8]>) {
    let store = open(data);
    let meta = store.tree(META_TREE).unwrap();
    match value {
        Some(v) => {
            meta.insert(VERSION_KEY, v).unwrap();
        }
        None => {
            meta.remove(VERSION_KEY).unwrap();
        }
    }
    store.flush().unwrap();
}

fn version_of(data: &Path) -> Option<Vec<u8>> {
    let store = open(data);
    store.tree(META_TREE).unwrap().get(VERSION_KEY).unwrap()
}

#[test]
fn an_older_store_is_backed_up_and_migrated_and_a_newer_one_refused() {
    let space = Space::new();
    let (dir, _peer, _) = space.member("Lingnan University", None);
    let data = dir.join("data");
    let node = Node::start(&dir);
    node.wait_for("start", |_| true);
    let file = space.tmp.path().join("d.csv");
    std::fs::write(&file, "a,b\n1,2\n").unwrap();
    let published = ok(&[
        "dataset",
        "publish",
        &s(&file),
        "--title",
        "Kept cohort",
        "--level",
        "general",
        "--personal",
        "0",
        "--sensitive",
        "0",
        "--purpose",
        "academic-research",
        "--json",
        "--dir",
        &s(&dir),
    ]);
    let id = serde_json::from_str::<serde_json::Value>(&published).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(node.terminate().success());
    assert_eq!(
        version_of(&data).as_deref(),
        Some(CURRENT.to_string().as_bytes()),
        "a new store records the version"
    );

    // The previous format: the same data, no version key.
    set_version(&data, None);
    let node = Node::start(&dir);
    node.wait_for("start after migration", |_| true);
    node.wait_log(&format!(
        "store migrated from format version 1 to {CURRENT}"
    ));
    let backups: Vec<_> = std::fs::read_dir(dir.join("backups"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(backups.len(), 1, "{backups:?}");
    let found = ok(&["catalog", "search", "--json", "--dir", &s(&dir)]);
    assert!(
        found.contains(&id),
        "the data survives the migration: {found}"
    );
    assert!(node.terminate().success());
    assert_eq!(
        version_of(&data).as_deref(),
        Some(CURRENT.to_string().as_bytes())
    );
    // The automatic backup restores, as the old store it was.
    let restored = space.tmp.path().join("restored");
    let o = bayspace(&["restore", &s(&backups[0]), "--dir", &s(&restored)]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(version_of(&restored.join("data")), None);

    // A newer format is refused before anything listens.
    set_version(&data, Some(b"99"));
    let o = bayspace(&["run", "--dir", &s(&dir)]);
    assert!(!o.status.success());
    let msg = text(&o);
    assert!(
        msg.contains("store format version 99") && msg.contains("newer Bayspace"),
        "{msg}"
    );
    assert_eq!(
        version_of(&data).as_deref(),
        Some(&b"99"[..]),
        "left as it was"
    );
}
