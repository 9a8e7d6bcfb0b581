//! The store's format version, kept in the store itself.
//!
//! Version 1 is every store written before the version was recorded (it has
//! no version key). Version 2 records it, and adds the `filings-exported`
//! tree, which starts empty. Version 3 adds release ids: open releases and
//! fetch records gain a field (absent in older records, read as none) and
//! the `release-ids` tree starts empty; a version-2 binary would fail on
//! such a record, so it must refuse the store whole. A node refuses a store newer than it knows,
//! and migrates an older one forward; the daemon writes a backup first
//! (`bayspace run`, docs/OPERATIONS.md "Upgrading").

use super::{Store, StoreError, TreeName};

pub const META_TREE: TreeName = TreeName::new("store-meta");
pub const VERSION_KEY: &[u8] = b"format-version";
/// The format this build writes.
pub const CURRENT: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "the store was written by a newer Bayspace (store format version {found}); this bayspace {} reads versions up to {CURRENT}. Run the newer bayspace, or restore a backup made with this version",
        env!("CARGO_PKG_VERSION")
    )]
    TooNew { found: u32 },
    #[error("the store's format version is not a number: {value:?}")]
    Malformed { value: String },
}

/// What opening found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// At the current version.
    Current,
    /// An empty store, now marked with the current version.
    New,
    /// An older format: [`migrate`] it (after a backup).
    Older(u32),
}

/// Reads the version of `store`; marks an empty store as current.
pub fn check(store: &dyn Store) -> Result<Found, VersionError> {
    let meta = store.tree(META_TREE)?;
    match meta.get(VERSION_KEY)? {
        Some(raw) => {
            let text = String::from_utf8_lossy(&raw).into_owned();
            let found: u32 = text
                .trim()
                .parse()
                .map_err(|_| VersionError::Malformed { value: text })?;
            if found > CURRENT {
                Err(VersionError::TooNew { found })
            } else if found == CURRENT {
                Ok(Found::Current)
            } else {
                Ok(Found::Older(found))
            }
        }
        None => {
            let snapshot = store.snapshot()?;
            let holds_data = snapshot
                .trees
                .iter()
                .any(|t| t.name != META_TREE.as_str() && !t.entries.is_empty());
            if holds_data {
                Ok(Found::Older(1))
            } else {
                mark_current(store)?;
                Ok(Found::New)
            }
        }
    }
}

fn mark_current(store: &dyn Store) -> Result<(), StoreError> {
    store
        .tree(META_TREE)?
        .insert(VERSION_KEY, CURRENT.to_string().as_bytes())?;
    store.flush()
}

/// Brings a store at version `from` to [`CURRENT`], one step at a time,
/// each flushed.
pub fn migrate(store: &dyn Store, from: u32) -> Result<(), VersionError> {
    let mut at = from;
    while at < CURRENT {
        // 1 -> 2: nothing of version 1 changes form; the version is
        // recorded, and the `filings-exported` tree is made on first use.
        // 2 -> 3: the same; records without a release id stay valid, and
        // the `release-ids` tree is made on first use.
        at += 1;
        store
            .tree(META_TREE)?
            .insert(VERSION_KEY, at.to_string().as_bytes())?;
        store.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledStore;

    #[test]
    fn new_old_current_and_newer_stores() {
        let store = SledStore::temporary().unwrap();
        assert_eq!(check(&store).unwrap(), Found::New);
        assert_eq!(check(&store).unwrap(), Found::Current);

        // A version 1 store: data, no version key.
        let old = SledStore::temporary().unwrap();
        old.tree(TreeName::new("catalog"))
            .unwrap()
            .insert(b"d", b"x")
            .unwrap();
        assert_eq!(check(&old).unwrap(), Found::Older(1));
        migrate(&old, 1).unwrap();
        assert_eq!(check(&old).unwrap(), Found::Current);

        old.tree(META_TREE)
            .unwrap()
            .insert(VERSION_KEY, b"99")
            .unwrap();
        let err = check(&old).unwrap_err();
        assert!(matches!(err, VersionError::TooNew { found: 99 }));
        assert!(err.to_string().contains("newer Bayspace"), "{err}");
    }
}
