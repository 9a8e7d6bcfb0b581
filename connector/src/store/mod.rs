//! Persistent state behind a narrow trait.
//!
//! The rest of the connector sees only [`Store`], [`Tree`], [`WriteSet`] and
//! [`TypedTree`]. The sled backend ([`SledStore`]) is what a node runs on;
//! [`MemStore`] keeps everything in memory for tests of the logic above the
//! store. No sled type crosses this module's boundary, so the backend can be
//! replaced without touching the callers, and one suite of tests (`suite`)
//! holds every backend to the same behaviour.
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

mod mem_store;
mod reserve;
mod sled_store;
mod typed;
pub mod version;

use std::fmt;
use std::sync::Arc;

pub use mem_store::MemStore;
pub use reserve::{DEFAULT_RESERVE_BYTES, DiskFull, Reserved, available, check_space, disk_full};
pub use sled_store::SledStore;
pub use typed::{Iter, Key, TypedTree};

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
    /// Refused before anything was written: the disk is within its
    /// reserve of full (see [`Reserved`]).
    #[error("{0}")]
    Full(#[source] DiskFull),
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

    /// A failure the backend cannot recover from without being opened
    /// again, if one happened: every write since has failed and every
    /// later one will.
    fn failure(&self) -> Option<String> {
        None
    }
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

/// Where a [`Tree::scan`] starts: just after the cursor when it is inside
/// or past the prefix, else at the prefix itself.
pub(crate) fn scan_start<'a>(
    prefix: &'a [u8],
    after: Option<&'a [u8]>,
) -> std::ops::Bound<&'a [u8]> {
    match after {
        Some(after) if after >= prefix => std::ops::Bound::Excluded(after),
        _ => std::ops::Bound::Included(prefix),
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
mod suite;
