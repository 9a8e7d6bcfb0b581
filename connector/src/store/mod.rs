//! Persistent state behind a narrow trait.
//!
//! The rest of the connector sees only [`Store`], [`Tree`], [`WriteSet`] and
//! [`TypedTree`]; the sled backend ([`SledStore`]) is the one implementation,
//! and no sled type crosses this module's boundary, so the backend can be
//! replaced without touching the callers.
//!
//! # Durability points
//! Writes become visible at once but reach the disk only when
//! [`Store::flush`] returns. A caller that is about to tell the outside world
//! that something happened — acknowledge a state change to a peer, release a
//! key, perform an audited action — flushes first. The audit log does this
//! itself on every append. Everything else may rely on sled's periodic
//! background flush and accept losing the last few hundred milliseconds on a
//! crash.
//!
//! # Atomicity
//! A [`WriteSet`] applied with [`Store::apply`] is all or nothing, across any
//! number of trees: its expectations are checked and its writes made in one
//! transaction, so "nothing partial is stored" holds even for records that
//! span several trees.

mod sled_store;
mod typed;
pub mod version;

use std::fmt;
use std::sync::Arc;

pub use sled_store::SledStore;
pub use typed::{Key, TypedTree};

/// The name of a tree. Each module that persists something declares its own
/// trees as constants, so every tree name in the node is greppable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TreeName(&'static str);

impl TreeName {
    pub const fn new(name: &'static str) -> Self {
        TreeName(name)
    }

    pub fn as_str(self) -> &'static str {
        self.0
    }
}

impl fmt::Display for TreeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// A key-value pair as stored.
pub type Entry = (Vec<u8>, Vec<u8>);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store at {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("storage backend failed during {operation}: {source}")]
    Backend {
        operation: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("tree `{tree}`, key {key}: the stored value is not the expected one")]
    Conflict { tree: TreeName, key: String },
    #[error("tree `{tree}`, key {key}: the stored value does not decode: {source}")]
    Decode {
        tree: TreeName,
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("tree `{tree}`: stored key {key} is not a valid {expected} key")]
    BadKey {
        tree: TreeName,
        key: String,
        expected: &'static str,
    },
    #[error("tree `{tree}`, key {key}: the value cannot be encoded: {source}")]
    Encode {
        tree: TreeName,
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

/// A database of named trees.
pub trait Store: Send + Sync + 'static {
    /// Open (creating if needed) the tree with this name.
    fn tree(&self, name: TreeName) -> Result<Arc<dyn Tree>, StoreError>;

    /// Apply every operation of `writes` atomically: either all expectations
    /// hold and all writes are made, or nothing changes and the first failed
    /// expectation is reported as [`StoreError::Conflict`].
    fn apply(&self, writes: &WriteSet) -> Result<(), StoreError>;

    /// Make every write made so far durable (fsync). This is the durability
    /// point: see the module documentation.
    fn flush(&self) -> Result<(), StoreError>;

    /// Every tree and entry as of one moment: writes wait while it is
    /// taken, so no write is half in it (a backup while the node runs).
    fn snapshot(&self) -> Result<Snapshot, StoreError>;
}

/// The whole content of a store at one moment: each tree's name and its
/// entries in key order.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    pub trees: Vec<SnapshotTree>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotTree {
    pub name: String,
    pub entries: Vec<(serde_bytes::ByteBuf, serde_bytes::ByteBuf)>,
}

impl Snapshot {
    pub fn tree(&self, name: TreeName) -> Option<&SnapshotTree> {
        self.trees.iter().find(|t| t.name == name.as_str())
    }
}

/// One ordered map from byte keys to byte values. Keys sort by their bytes,
/// so big-endian integers sort numerically.
pub trait Tree: Send + Sync {
    fn name(&self) -> TreeName;

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Set `key` to `value`, returning the value it replaced.
    fn insert(&self, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Remove `key`, returning the value it held.
    fn remove(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Set `key` to `new` (or remove it when `None`) only if it currently
    /// holds `expected` (or is absent when `None`); otherwise
    /// [`StoreError::Conflict`].
    fn compare_and_swap(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<(), StoreError>;

    /// Up to `limit` entries whose key starts with `prefix` and, when `after`
    /// is given, sorts strictly after it, in key order. Paging is calling
    /// again with the last key returned as `after`.
    fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError>;

    /// The entry with the greatest key.
    fn last(&self) -> Result<Option<Entry>, StoreError>;

    /// The number of entries; this walks the tree, so it is for tests and
    /// metrics, not hot paths.
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One operation of a [`WriteSet`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Insert {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Remove {
        key: Vec<u8>,
    },
    /// A precondition: the key holds this value (or is absent when `None`)
    /// at this point of the transaction.
    Expect {
        key: Vec<u8>,
        value: Option<Vec<u8>>,
    },
}

/// Writes to several trees, applied in order and atomically by
/// [`Store::apply`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteSet {
    ops: Vec<(TreeName, Op)>,
}

impl WriteSet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, tree: TreeName, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push((
            tree,
            Op::Insert {
                key: key.into(),
                value: value.into(),
            },
        ));
    }

    pub fn remove(&mut self, tree: TreeName, key: impl Into<Vec<u8>>) {
        self.ops.push((tree, Op::Remove { key: key.into() }));
    }

    pub fn expect(&mut self, tree: TreeName, key: impl Into<Vec<u8>>, value: Option<Vec<u8>>) {
        self.ops.push((
            tree,
            Op::Expect {
                key: key.into(),
                value,
            },
        ));
    }

    pub fn ops(&self) -> &[(TreeName, Op)] {
        &self.ops
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// How a raw key appears in error messages: hex, shortened past 32 bytes.
pub(crate) fn describe_key(key: &[u8]) -> String {
    use fmt::Write as _;
    let shown = &key[..key.len().min(32)];
    let mut s = String::with_capacity(2 + 2 * shown.len() + 3);
    s.push_str("0x");
    for b in shown {
        let _ = write!(s, "{b:02x}");
    }
    if key.len() > shown.len() {
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    const A: TreeName = TreeName::new("a");
    const B: TreeName = TreeName::new("b");

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Rec {
        name: String,
        n: u64,
    }

    fn rec(name: &str, n: u64) -> Rec {
        Rec {
            name: name.to_owned(),
            n,
        }
    }

    #[test]
    fn raw_round_trip() {
        let store = SledStore::temporary().unwrap();
        let t = store.tree(A).unwrap();
        assert_eq!(t.name(), A);
        assert_eq!(t.get(b"k").unwrap(), None);
        assert_eq!(t.insert(b"k", b"v1").unwrap(), None);
        assert_eq!(t.insert(b"k", b"v2").unwrap(), Some(b"v1".to_vec()));
        assert_eq!(t.get(b"k").unwrap(), Some(b"v2".to_vec()));
        assert_eq!(t.len(), 1);
        assert_eq!(t.remove(b"k").unwrap(), Some(b"v2".to_vec()));
        assert!(t.is_empty());
        // Trees are separate namespaces.
        t.insert(b"k", b"in a").unwrap();
        assert_eq!(store.tree(B).unwrap().get(b"k").unwrap(), None);
    }

    #[test]
    fn typed_round_trip_and_order() {
        let store = SledStore::temporary().unwrap();
        let t: TypedTree<u64, Rec> = TypedTree::open(&store, A).unwrap();
        // Big-endian keys sort numerically, not lexically.
        for n in [300u64, 2, 70_000, 1] {
            t.insert(&n, &rec("x", n)).unwrap();
        }
        assert_eq!(t.get(&2).unwrap(), Some(rec("x", 2)));
        assert_eq!(t.get(&3).unwrap(), None);
        let keys: Vec<u64> = t
            .scan(&[], None, 10)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, [1, 2, 300, 70_000]);
        assert_eq!(t.last().unwrap().unwrap().0, 70_000);
        assert!(t.remove(&300).unwrap());
        assert!(!t.remove(&300).unwrap());
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn prefix_scan_is_bounded_and_stays_in_prefix() {
        let store = SledStore::temporary().unwrap();
        let t: TypedTree<String, u64> = TypedTree::open(&store, A).unwrap();
        for (i, k) in ["ds/1", "ds/2", "ds/3", "dt/1", "agr/1"].iter().enumerate() {
            t.insert(&(*k).to_owned(), &(i as u64)).unwrap();
        }
        let all: Vec<String> = t
            .scan(b"ds/", None, 100)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(all, ["ds/1", "ds/2", "ds/3"]);
        assert_eq!(t.scan(b"ds/", None, 2).unwrap().len(), 2);
        assert!(t.scan(b"zz", None, 10).unwrap().is_empty());
        assert_eq!(t.scan(b"ds/", None, 0).unwrap().len(), 0);
    }

    #[test]
    fn paging_visits_every_key_once() {
        let store = SledStore::temporary().unwrap();
        let t: TypedTree<String, u64> = TypedTree::open(&store, A).unwrap();
        for i in 0..23u64 {
            t.insert(&format!("p/{i:03}"), &i).unwrap();
        }
        t.insert(&"q/000".to_owned(), &99).unwrap();
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = t.scan(b"p/", after.as_ref(), 5).unwrap();
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= 5);
            after = page.last().map(|(k, _)| k.clone());
            seen.extend(page.into_iter().map(|(_, v)| v));
        }
        assert_eq!(seen, (0..23).collect::<Vec<u64>>());
        // A cursor before the prefix starts at the prefix.
        let raw = store.tree(A).unwrap();
        assert_eq!(raw.scan(b"q/", Some(b"a"), 10).unwrap().len(), 1);
    }

    #[test]
    fn write_set_spans_trees_atomically() {
        let store = SledStore::temporary().unwrap();
        let a: TypedTree<String, Rec> = TypedTree::open(&store, A).unwrap();
        let b: TypedTree<u64, Rec> = TypedTree::open(&store, B).unwrap();
        b.insert(&7, &rec("old", 7)).unwrap();

        let mut ok = WriteSet::new();
        a.stage_insert(&mut ok, &"x".to_owned(), &rec("x", 1))
            .unwrap();
        b.stage_expect(&mut ok, &7, Some(&rec("old", 7))).unwrap();
        b.stage_insert(&mut ok, &7, &rec("new", 7)).unwrap();
        b.stage_remove(&mut ok, &8);
        store.apply(&ok).unwrap();
        assert_eq!(a.get(&"x".to_owned()).unwrap(), Some(rec("x", 1)));
        assert_eq!(b.get(&7).unwrap(), Some(rec("new", 7)));

        // The failing expectation comes after writes to both trees: neither
        // write may survive.
        let mut bad = WriteSet::new();
        a.stage_insert(&mut bad, &"y".to_owned(), &rec("y", 2))
            .unwrap();
        b.stage_insert(&mut bad, &9, &rec("nine", 9)).unwrap();
        b.stage_expect(&mut bad, &7, Some(&rec("old", 7))).unwrap();
        let err = store.apply(&bad).unwrap_err();
        match &err {
            StoreError::Conflict { tree, key } => {
                assert_eq!(*tree, B);
                assert_eq!(key, "0x0000000000000007");
            }
            other => panic!("expected a conflict, got {other}"),
        }
        assert_eq!(a.get(&"y".to_owned()).unwrap(), None);
        assert_eq!(b.get(&9).unwrap(), None);
        assert_eq!(b.get(&7).unwrap(), Some(rec("new", 7)));

        // Expecting absence.
        let mut absent = WriteSet::new();
        b.stage_expect(&mut absent, &7, None).unwrap();
        assert!(matches!(
            store.apply(&absent),
            Err(StoreError::Conflict { .. })
        ));
        store.apply(&WriteSet::new()).unwrap();
    }

    #[test]
    fn compare_and_swap_refuses_a_stale_expectation() {
        let store = SledStore::temporary().unwrap();
        let t = store.tree(A).unwrap();
        t.compare_and_swap(b"k", None, Some(b"1")).unwrap();
        let err = t.compare_and_swap(b"k", None, Some(b"2")).unwrap_err();
        assert!(matches!(err, StoreError::Conflict { tree, .. } if tree == A));
        t.compare_and_swap(b"k", Some(b"1"), Some(b"2")).unwrap();
        t.compare_and_swap(b"k", Some(b"2"), None).unwrap();
        assert_eq!(t.get(b"k").unwrap(), None);
    }

    #[test]
    fn flushed_data_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            let t: TypedTree<u64, Rec> = TypedTree::open(&store, A).unwrap();
            let mut ws = WriteSet::new();
            t.stage_insert(&mut ws, &1, &rec("one", 1)).unwrap();
            store.apply(&ws).unwrap();
            store.flush().unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        let t: TypedTree<u64, Rec> = TypedTree::open(&store, A).unwrap();
        assert_eq!(t.get(&1).unwrap(), Some(rec("one", 1)));
    }

    #[test]
    fn a_snapshot_recreates_the_store_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(&dir.path().join("a")).unwrap();
        let t: TypedTree<u64, Rec> = TypedTree::open(&store, A).unwrap();
        for n in 0..50u64 {
            t.insert(&n, &rec("r", n)).unwrap();
        }
        store.tree(B).unwrap().insert(b"k", b"v").unwrap();
        let snap = store.snapshot().unwrap();
        assert_eq!(snap.tree(A).unwrap().entries.len(), 50);
        // Writes after the snapshot are not in it.
        t.insert(&99, &rec("late", 99)).unwrap();
        let copy = SledStore::create_from(&dir.path().join("b"), &snap).unwrap();
        let t2: TypedTree<u64, Rec> = TypedTree::open(&copy, A).unwrap();
        assert_eq!(t2.len(), 50);
        assert_eq!(t2.get(&7).unwrap(), Some(rec("r", 7)));
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

    #[test]
    fn decoding_errors_name_the_tree_and_key() {
        let store = SledStore::temporary().unwrap();
        let raw = store.tree(B).unwrap();
        raw.insert(&5u64.to_be_bytes(), b"{\"name\": 3}").unwrap();
        let t: TypedTree<u64, Rec> = TypedTree::open(&store, B).unwrap();
        let err = t.get(&5).unwrap_err();
        assert!(matches!(err, StoreError::Decode { tree, ref key, .. } if tree == B && key == "5"));
        let msg = err.to_string();
        assert!(msg.contains("tree `b`") && msg.contains("key 5"), "{msg}");

        raw.insert(b"abc", b"{}").unwrap();
        let err = t.last().unwrap_err();
        assert!(
            matches!(err, StoreError::BadKey { tree, ref key, .. } if tree == B && key == "0x616263"),
            "{err}"
        );
    }
}
