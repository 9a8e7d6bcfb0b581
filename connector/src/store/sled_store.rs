//! The sled backend.
//!
//! All trees of a node live in one sled database, so they share one log: one
//! [`sled::Db::flush`] makes every tree durable, and a multi-tree transaction
//! is recovered atomically after a crash.

use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, OnceLock, RwLock};

use sled::Transactional as _;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::{
    Entry, Op, Snapshot, SnapshotTree, Store, StoreError, Tree, TreeName, WriteSet, describe_key,
    scan_start,
};

/// A [`Store`] in a sled database directory.
#[derive(Debug, Clone)]
pub struct SledStore {
    db: sled::Db,
    /// Writes hold it shared; [`Store::snapshot`] holds it exclusively, so
    /// a snapshot sees every write whole or not at all. sled has no
    /// snapshot of its own across trees.
    gate: Arc<RwLock<()>>,
    /// The first I/O failure sled reported. sled 0.34 keeps its first
    /// failed log write as a "global error" and fails every later
    /// operation with it until the database is opened again.
    failed: Arc<OnceLock<String>>,
}

/// sled's own tree, which the store never uses.
const SLED_DEFAULT_TREE: &[u8] = b"__sled__default";

impl SledStore {
    /// Open (creating if needed) the database in the directory `path`. sled
    /// locks the directory: a second open of the same path in any process
    /// fails until the first store is dropped.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .open()
            .map_err(|e| StoreError::Open {
                path: path.display().to_string(),
                source: Box::new(e),
            })?;
        Ok(SledStore {
            db,
            gate: Arc::default(),
            failed: Arc::default(),
        })
    }

    /// Creates a store in `path`, which must not hold one yet, with the
    /// content of `snapshot`, flushed.
    pub fn create_from(path: &Path, snapshot: &Snapshot) -> Result<Self, StoreError> {
        if path.join("conf").exists() || path.join("db").exists() {
            return Err(StoreError::Open {
                path: path.display().to_string(),
                source: "a store already exists there".into(),
            });
        }
        let store = Self::open(path)?;
        for t in &snapshot.trees {
            let tree = store
                .db
                .open_tree(t.name.as_bytes())
                .map_err(|e| backend(&store.failed, format!("creating tree `{}`", t.name), e))?;
            let mut batch = sled::Batch::default();
            for (k, v) in &t.entries {
                batch.insert(k.as_slice(), v.as_slice());
            }
            tree.apply_batch(batch)
                .map_err(|e| backend(&store.failed, format!("filling tree `{}`", t.name), e))?;
        }
        store.flush()?;
        Ok(store)
    }

    /// A database removed when dropped, for tests and dry runs.
    pub fn temporary() -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .temporary(true)
            .open()
            .map_err(|e| StoreError::Open {
                path: "(temporary)".to_owned(),
                source: Box::new(e),
            })?;
        Ok(SledStore {
            db,
            gate: Arc::default(),
            failed: Arc::default(),
        })
    }
}

fn backend(failed: &OnceLock<String>, operation: String, e: sled::Error) -> StoreError {
    if matches!(
        e,
        sled::Error::Io(_) | sled::Error::Corruption { .. } | sled::Error::ReportableBug(_)
    ) {
        let _ = failed.set(format!("{operation}: {e}"));
    }
    StoreError::Backend {
        operation,
        source: Box::new(e),
    }
}

impl Store for SledStore {
    fn tree(&self, name: TreeName) -> Result<Arc<dyn Tree>, StoreError> {
        let tree = self
            .db
            .open_tree(name.as_str())
            .map_err(|e| backend(&self.failed, format!("opening tree `{name}`"), e))?;
        Ok(Arc::new(SledTree {
            name,
            tree,
            gate: self.gate.clone(),
            failed: self.failed.clone(),
        }))
    }

    fn apply(&self, writes: &WriteSet) -> Result<(), StoreError> {
        if writes.is_empty() {
            // sled's multi-tree transaction needs at least one tree.
            return Ok(());
        }
        let _writing = shared(&self.gate);
        let mut names: Vec<TreeName> = Vec::new();
        let mut ops: Vec<(usize, &Op)> = Vec::with_capacity(writes.ops().len());
        for (name, op) in writes.ops() {
            let index = match names.iter().position(|n| n == name) {
                Some(i) => i,
                None => {
                    names.push(*name);
                    names.len() - 1
                }
            };
            ops.push((index, op));
        }
        let trees = names
            .iter()
            .map(|name| {
                self.db
                    .open_tree(name.as_str())
                    .map_err(|e| backend(&self.failed, format!("opening tree `{name}`"), e))
            })
            .collect::<Result<Vec<sled::Tree>, StoreError>>()?;

        let outcome = trees.as_slice().transaction(|views| {
            for &(index, op) in &ops {
                let view = &views[index];
                match op {
                    Op::Insert { key, value } => {
                        view.insert(key.as_slice(), value.as_slice())?;
                    }
                    Op::Remove { key } => {
                        view.remove(key.as_slice())?;
                    }
                    Op::Expect { key, value } => {
                        let current = view.get(key.as_slice())?;
                        if current.as_deref() != value.as_deref() {
                            return Err(ConflictableTransactionError::Abort((index, key)));
                        }
                    }
                }
            }
            Ok(())
        });
        match outcome {
            Ok(()) => Ok(()),
            Err(TransactionError::Abort((index, key))) => Err(StoreError::Conflict {
                tree: names[index],
                key: describe_key(key),
            }),
            Err(TransactionError::Storage(e)) => Err(backend(
                &self.failed,
                format!(
                    "a transaction over trees {}",
                    names
                        .iter()
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                e,
            )),
        }
    }

    fn failure(&self) -> Option<String> {
        self.failed.get().cloned()
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db
            .flush()
            .map(drop)
            .map_err(|e| backend(&self.failed, "flush".to_owned(), e))
    }

    fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let _alone = match self.gate.write() {
            Ok(g) => g,
            // The lock guards no data; a panicked writer leaves nothing
            // half-done in it.
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut trees = Vec::new();
        for name in self.db.tree_names() {
            if name.as_ref() == SLED_DEFAULT_TREE {
                continue;
            }
            let shown = String::from_utf8_lossy(&name).into_owned();
            let tree = self
                .db
                .open_tree(&name)
                .map_err(|e| backend(&self.failed, format!("opening tree `{shown}`"), e))?;
            let mut entries = Vec::new();
            for item in tree.iter() {
                let (k, v) =
                    item.map_err(|e| backend(&self.failed, format!("reading tree `{shown}`"), e))?;
                entries.push((
                    serde_bytes::ByteBuf::from(k.to_vec()),
                    serde_bytes::ByteBuf::from(v.to_vec()),
                ));
            }
            trees.push(SnapshotTree {
                name: shown,
                entries,
            });
        }
        trees.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Snapshot { trees })
    }
}

/// Shared hold of the write gate; see [`SledStore::gate`].
fn shared(gate: &RwLock<()>) -> std::sync::RwLockReadGuard<'_, ()> {
    match gate.read() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

struct SledTree {
    name: TreeName,
    tree: sled::Tree,
    gate: Arc<RwLock<()>>,
    failed: Arc<OnceLock<String>>,
}

impl SledTree {
    fn fail(&self, what: &str, key: &[u8]) -> impl FnOnce(sled::Error) -> StoreError {
        let operation = format!("{what} on tree `{}`, key {}", self.name, describe_key(key));
        let failed = self.failed.clone();
        move |e| backend(&failed, operation, e)
    }
}

impl Tree for SledTree {
    fn name(&self) -> TreeName {
        self.name
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let v = self.tree.get(key).map_err(self.fail("get", key))?;
        Ok(v.map(|v| v.to_vec()))
    }

    fn insert(&self, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let _writing = shared(&self.gate);
        let old = self
            .tree
            .insert(key, value)
            .map_err(self.fail("insert", key))?;
        Ok(old.map(|v| v.to_vec()))
    }

    fn remove(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let _writing = shared(&self.gate);
        let old = self.tree.remove(key).map_err(self.fail("remove", key))?;
        Ok(old.map(|v| v.to_vec()))
    }

    fn compare_and_swap(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        let _writing = shared(&self.gate);
        self.tree
            .compare_and_swap(key, expected, new)
            .map_err(self.fail("compare-and-swap", key))?
            .map_err(|_| StoreError::Conflict {
                tree: self.name,
                key: describe_key(key),
            })
    }

    fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let start = scan_start(prefix, after);
        let mut out = Vec::new();
        for item in self.tree.range::<&[u8], _>((start, Bound::Unbounded)) {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item.map_err(self.fail("scan", prefix))?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    fn last(&self) -> Result<Option<Entry>, StoreError> {
        let last = self.tree.last().map_err(self.fail("last", &[]))?;
        Ok(last.map(|(k, v)| (k.to_vec(), v.to_vec())))
    }

    fn len(&self) -> usize {
        self.tree.len()
    }
}

/// What only a backend on disk can show; the shared behaviour is in
/// `store::suite`.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::TypedTree;

    const A: TreeName = TreeName::new("a");
    const B: TreeName = TreeName::new("b");

    /// A tmpfs of `mib` MiB on `dir`, unmounted when dropped.
    struct Tmpfs(std::path::PathBuf);

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }

    fn tmpfs(dir: &Path, mib: u32) -> Result<Tmpfs, String> {
        let out = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m"),
                "bayspace-test",
            ])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if out.status.success() {
            Ok(Tmpfs(dir.to_owned()))
        } else {
            Err(format!(
                "mount -t tmpfs refused: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// What sled does on a full disk, which `Reserved` and the node's exit
    /// are built on: the first failed log write fails every later write,
    /// even once space is free, and `failure` says so.
    #[test]
    fn a_failed_log_write_is_reported_as_a_failure_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let _mount = match tmpfs(dir.path(), 8) {
            Ok(m) => m,
            Err(why) => {
                assert!(
                    std::env::var_os("BAYSPACE_REQUIRE_ALL").is_none(),
                    "BAYSPACE_REQUIRE_ALL is set but {why}"
                );
                println!("skipped: {why} (this test needs root to mount a tmpfs)");
                return;
            }
        };
        let store = SledStore::open(&dir.path().join("store")).unwrap();
        let tree = store.tree(A).unwrap();
        tree.insert(b"before", b"kept").unwrap();
        store.flush().unwrap();
        assert_eq!(store.failure(), None);

        // Take every free byte.
        let filler_path = dir.path().join("filler");
        {
            use std::io::Write as _;
            let mut filler = std::fs::File::create(&filler_path).unwrap();
            let block = vec![0u8; 64 << 10];
            while filler.write_all(&block).is_ok() {}
            let _ = filler.sync_all();
        }
        let value = vec![7u8; 16 << 10];
        let mut failed = false;
        for i in 0u32..2048 {
            let wrote = tree
                .insert(&i.to_be_bytes(), &value)
                .and_then(|_| store.flush());
            if wrote.is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed, "sled never failed on a full disk");
        let reason = store.failure().expect("the failure is reported");
        assert!(
            reason.contains("No space left") || reason.contains("space"),
            "{reason}"
        );

        std::fs::remove_file(&filler_path).unwrap();
        let again = tree.insert(b"after", b"x").and_then(|_| store.flush());
        assert!(again.is_err(), "sled wrote again without being reopened");
        assert!(store.failure().is_some());
        drop(tree);
        drop(store);

        // Opened again, it holds what was flushed before the failure.
        let store = SledStore::open(&dir.path().join("store")).unwrap();
        assert_eq!(store.failure(), None);
        let tree = store.tree(A).unwrap();
        assert_eq!(tree.get(b"before").unwrap().as_deref(), Some(&b"kept"[..]));
        tree.insert(b"after", b"x").unwrap();
        store.flush().unwrap();
    }

    #[test]
    fn flushed_data_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            let t: TypedTree<u64, String> = TypedTree::open(&store, A).unwrap();
            let mut ws = WriteSet::new();
            t.stage_insert(&mut ws, &1, &"one".to_owned()).unwrap();
            store.apply(&ws).unwrap();
            store.flush().unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        let t: TypedTree<u64, String> = TypedTree::open(&store, A).unwrap();
        assert_eq!(t.get(&1).unwrap().as_deref(), Some("one"));
    }

    #[test]
    fn a_snapshot_recreates_the_store_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(&dir.path().join("a")).unwrap();
        let t: TypedTree<u64, String> = TypedTree::open(&store, A).unwrap();
        for n in 0..50u64 {
            t.insert(&n, &format!("r{n}")).unwrap();
        }
        store.tree(B).unwrap().insert(b"k", b"v").unwrap();
        let snap = store.snapshot().unwrap();
        assert_eq!(snap.tree(A).unwrap().entries.len(), 50);
        // Writes after the snapshot are not in it.
        t.insert(&99, &"late".to_owned()).unwrap();
        let copy = SledStore::create_from(&dir.path().join("b"), &snap).unwrap();
        let t2: TypedTree<u64, String> = TypedTree::open(&copy, A).unwrap();
        assert_eq!(t2.len(), 50);
        assert_eq!(t2.get(&7).unwrap(), Some("r7".to_owned()));
        assert_eq!(
            copy.tree(B).unwrap().get(b"k").unwrap(),
            Some(b"v".to_vec())
        );
        assert_eq!(copy.snapshot().unwrap(), snap);
        drop(copy);
        // Never over an existing store.
        assert!(SledStore::create_from(&dir.path().join("b"), &snap).is_err());
    }

    #[test]
    fn a_locked_directory_is_an_open_error() {
        let dir = tempfile::tempdir().unwrap();
        let _first = SledStore::open(dir.path()).unwrap();
        let err = SledStore::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Open { .. }));
        assert!(
            err.to_string().contains(&dir.path().display().to_string()),
            "{err}"
        );
    }
}
