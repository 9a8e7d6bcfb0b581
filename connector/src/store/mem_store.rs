//! The in-memory backend.
//!
//! Everything lives in ordered maps behind one lock, so [`Store::apply`] is
//! atomic by holding it, and `flush` has nothing to do. It exists so the
//! logic above the store can be tested without sled, and so every backend
//! can be held to the same suite (`store::suite`): a behaviour the callers
//! rely on that only sled happened to have would show up as a failure here.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{
    Entry, Op, Snapshot, SnapshotTree, Store, StoreError, Tree, TreeName, WriteSet, describe_key,
    scan_start,
};

type Trees = BTreeMap<TreeName, BTreeMap<Vec<u8>, Vec<u8>>>;

/// A [`Store`] that forgets everything when dropped.
#[derive(Debug, Clone, Default)]
pub struct MemStore {
    trees: Arc<Mutex<Trees>>,
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }
}

/// Every change to the maps is a single `insert` or `remove`, or a batch
/// checked in full before its first write, so a panic elsewhere while the
/// lock was held cannot have left them half-changed: a poisoned lock is
/// still a consistent one.
fn lock(trees: &Mutex<Trees>) -> MutexGuard<'_, Trees> {
    trees.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Store for MemStore {
    fn tree(&self, name: TreeName) -> Result<Arc<dyn Tree>, StoreError> {
        lock(&self.trees).entry(name).or_default();
        Ok(Arc::new(MemTree {
            name,
            trees: Arc::clone(&self.trees),
        }))
    }

    fn apply(&self, writes: &WriteSet) -> Result<(), StoreError> {
        let mut trees = lock(&self.trees);
        // Later operations see earlier writes of the same set, as inside a
        // transaction; nothing reaches the maps until every expectation held.
        let mut staged: HashMap<(TreeName, &[u8]), Option<&[u8]>> = HashMap::new();
        let mut order: Vec<(TreeName, &[u8])> = Vec::new();
        for (tree, op) in writes.ops() {
            match op {
                Op::Insert { key, value } => {
                    order.push((*tree, key));
                    staged.insert((*tree, key), Some(value));
                }
                Op::Remove { key } => {
                    order.push((*tree, key));
                    staged.insert((*tree, key), None);
                }
                Op::Expect { key, value } => {
                    let current = match staged.get(&(*tree, key.as_slice())) {
                        Some(v) => *v,
                        None => trees
                            .get(tree)
                            .and_then(|t| t.get(key.as_slice()))
                            .map(Vec::as_slice),
                    };
                    if current != value.as_deref() {
                        return Err(StoreError::Conflict {
                            tree: *tree,
                            key: describe_key(key),
                        });
                    }
                }
            }
        }
        for (tree, key) in order {
            let map = trees.entry(tree).or_default();
            match staged.get(&(tree, key)).copied().flatten() {
                Some(value) => map.insert(key.to_vec(), value.to_vec()),
                None => map.remove(key),
            };
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn snapshot(&self) -> Result<Snapshot, StoreError> {
        // One lock over every tree: the snapshot is of one moment.
        let trees = lock(&self.trees);
        Ok(Snapshot {
            trees: trees
                .iter()
                .map(|(name, entries)| SnapshotTree {
                    name: name.as_str().to_owned(),
                    entries: entries
                        .iter()
                        .map(|(k, v)| {
                            (
                                serde_bytes::ByteBuf::from(k.clone()),
                                serde_bytes::ByteBuf::from(v.clone()),
                            )
                        })
                        .collect(),
                })
                .collect(),
        })
    }
}

struct MemTree {
    name: TreeName,
    trees: Arc<Mutex<Trees>>,
}

impl MemTree {
    fn with<R>(&self, f: impl FnOnce(&mut BTreeMap<Vec<u8>, Vec<u8>>) -> R) -> R {
        f(lock(&self.trees).entry(self.name).or_default())
    }
}

impl Tree for MemTree {
    fn name(&self) -> TreeName {
        self.name
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.with(|t| t.get(key).cloned()))
    }

    fn insert(&self, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.with(|t| t.insert(key.to_vec(), value.to_vec())))
    }

    fn remove(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.with(|t| t.remove(key)))
    }

    fn compare_and_swap(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        self.with(|t| {
            if t.get(key).map(Vec::as_slice) != expected {
                return Err(StoreError::Conflict {
                    tree: self.name,
                    key: describe_key(key),
                });
            }
            match new {
                Some(v) => t.insert(key.to_vec(), v.to_vec()),
                None => t.remove(key),
            };
            Ok(())
        })
    }

    fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let start = scan_start(prefix, after);
        Ok(self.with(|t| {
            t.range::<[u8], _>((start, Bound::Unbounded))
                .take_while(|(k, _)| k.starts_with(prefix))
                .take(limit)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }))
    }

    fn last(&self) -> Result<Option<Entry>, StoreError> {
        Ok(self.with(|t| t.last_key_value().map(|(k, v)| (k.clone(), v.clone()))))
    }

    fn len(&self) -> usize {
        self.with(|t| t.len())
    }
}
