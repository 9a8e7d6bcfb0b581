//! A free-space reserve in front of any [`Store`].
//!
//! sled 0.34 turns the first failed write of its log (ENOSPC included) into
//! a "global error" it keeps until the database is opened again: every
//! later write fails, though the space has long been freed. So the store
//! must never see a full disk. [`Reserved`] refuses every write while the
//! file system holding the store has less than the reserve free, before
//! anything reaches sled; reads and flushes of what was already accepted go
//! on (the reserve is what those flushes, and sled's own log maintenance,
//! may still write). Once space is freed, the next write passes: no
//! restart. docs/RELIABILITY.md "A full disk" says why this and not a
//! reopen or an exit.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Entry, Snapshot, Store, StoreError, Tree, TreeName, WriteSet};

/// Default reserve: far above what sled writes after the last accepted
/// change (an 8 MiB I/O buffer and its 512 KiB log segments), and nothing
/// on a disk of any size a node runs on.
pub const DEFAULT_RESERVE_BYTES: u64 = 64 << 20;

/// The file system holding `path` has less free than `needed` plus the
/// reserve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskFull {
    pub path: PathBuf,
    pub available: u64,
    /// What the refused operation would have written (0 for a store write,
    /// whose size is not known in advance).
    pub needed: u64,
    pub reserve: u64,
}

impl std::fmt::Display for DiskFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the disk holding {} is full: {} bytes free, ",
            self.path.display(),
            self.available
        )?;
        if self.needed > 0 {
            write!(f, "{} needed and ", self.needed)?;
        }
        write!(
            f,
            "{} kept in reserve; free space on it and try again",
            self.reserve
        )
    }
}

impl std::error::Error for DiskFull {}

/// Bytes free to an unprivileged writer on the file system holding `path`.
pub fn available(path: &Path) -> std::io::Result<u64> {
    fs2::available_space(path)
}

/// Refuses with [`DiskFull`] unless `needed` bytes plus `reserve` are free
/// on the file system holding `path`. A file system that cannot be asked
/// is let through: the write then fails, or not, on its own.
pub fn check_space(path: &Path, needed: u64, reserve: u64) -> Result<(), DiskFull> {
    match available(path) {
        Ok(available) if available < needed.saturating_add(reserve) => Err(DiskFull {
            path: path.to_owned(),
            available,
            needed,
            reserve,
        }),
        Ok(_) => Ok(()),
        Err(e) => {
            tracing::debug!(path = %path.display(), "cannot read the free space: {e}");
            Ok(())
        }
    }
}

/// The [`DiskFull`] behind an error, if any: it is the error itself or in
/// its `source()` chain (an `#[error(transparent)]` wrapper skips the
/// [`StoreError`] but keeps its source).
pub fn disk_full<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a DiskFull> {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(full) = e.downcast_ref::<DiskFull>() {
            return Some(full);
        }
        if let Some(StoreError::Full(full)) = e.downcast_ref::<StoreError>() {
            return Some(full);
        }
        next = e.source();
    }
    None
}

struct Guard {
    path: PathBuf,
    reserve: u64,
}

impl Guard {
    fn check(&self) -> Result<(), StoreError> {
        check_space(&self.path, 0, self.reserve).map_err(StoreError::Full)
    }
}

/// `inner`, refusing writes while the disk holding `path` is within
/// `reserve` bytes of full.
pub struct Reserved<S> {
    inner: S,
    guard: Arc<Guard>,
}

impl<S: Store> Reserved<S> {
    pub fn new(inner: S, path: &Path, reserve: u64) -> Self {
        Reserved {
            inner,
            guard: Arc::new(Guard {
                path: path.to_owned(),
                reserve,
            }),
        }
    }
}

impl<S: Store> Store for Reserved<S> {
    fn tree(&self, name: TreeName) -> Result<Arc<dyn Tree>, StoreError> {
        Ok(Arc::new(ReservedTree {
            inner: self.inner.tree(name)?,
            guard: self.guard.clone(),
        }))
    }

    fn apply(&self, writes: &WriteSet) -> Result<(), StoreError> {
        if !writes.is_empty() {
            self.guard.check()?;
        }
        self.inner.apply(writes)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush()
    }

    fn snapshot(&self) -> Result<Snapshot, StoreError> {
        // Reading: no space needed.
        self.inner.snapshot()
    }

    fn failure(&self) -> Option<String> {
        self.inner.failure()
    }
}

struct ReservedTree {
    inner: Arc<dyn Tree>,
    guard: Arc<Guard>,
}

impl Tree for ReservedTree {
    fn name(&self) -> TreeName {
        self.inner.name()
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(key)
    }

    fn insert(&self, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.guard.check()?;
        self.inner.insert(key, value)
    }

    fn remove(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.guard.check()?;
        self.inner.remove(key)
    }

    fn compare_and_swap(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        self.guard.check()?;
        self.inner.compare_and_swap(key, expected, new)
    }

    fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        self.inner.scan(prefix, after, limit)
    }

    fn last(&self) -> Result<Option<Entry>, StoreError> {
        self.inner.last()
    }

    fn len(&self) -> usize {
        self.inner.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledStore;

    const T: TreeName = TreeName::new("t");

    #[test]
    fn writes_are_refused_inside_the_reserve_and_reads_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let free = available(dir.path()).unwrap();
        let sled = SledStore::open(&dir.path().join("db")).unwrap();
        // A reserve the disk can hold: writes pass.
        let store = Reserved::new(sled.clone(), dir.path(), 0);
        let tree = store.tree(T).unwrap();
        tree.insert(b"a", b"1").unwrap();
        let mut w = WriteSet::new();
        w.insert(T, b"b".to_vec(), b"2".to_vec());
        store.apply(&w).unwrap();

        // A reserve larger than the free space: as on a full disk.
        let full = Reserved::new(sled, dir.path(), free.saturating_mul(4));
        let tree = full.tree(T).unwrap();
        let err = tree.insert(b"c", b"3").unwrap_err();
        let StoreError::Full(ref f) = err else {
            panic!("{err}")
        };
        assert_eq!(f.path, dir.path());
        assert!(err.to_string().contains("is full"), "{err}");
        assert!(matches!(tree.remove(b"a"), Err(StoreError::Full(_))));
        assert!(matches!(
            tree.compare_and_swap(b"a", Some(b"1"), None),
            Err(StoreError::Full(_))
        ));
        let mut w = WriteSet::new();
        w.insert(T, b"d".to_vec(), b"4".to_vec());
        assert!(matches!(full.apply(&w), Err(StoreError::Full(_))));
        // Nothing of the refused writes is stored; what was is readable.
        assert_eq!(tree.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(tree.get(b"c").unwrap(), None);
        assert_eq!(tree.get(b"d").unwrap(), None);
        assert_eq!(tree.len(), 2);
        full.flush().unwrap();
        assert!(disk_full(&err).is_some());
    }
}
