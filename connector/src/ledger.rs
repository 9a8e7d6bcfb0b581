//! The exporter's ledger on disk: individuals sent out on national routes,
//! by calendar year in GBA time (the "year to date" of COMPLIANCE.md).
//! The counting rules are `bayspace_contracts::ledger`'s; this module only
//! keeps the counts durable. Releases add to it, assessments read it.

use std::sync::{Arc, Mutex};

use bayspace_contracts::compliance::{Exemption, Route, YearToDate};
use bayspace_contracts::ledger::Ledger;
use time::OffsetDateTime;

use crate::store::{Store, StoreError, TreeName, TypedTree};

pub const LEDGER_TREE: TreeName = TreeName::new("ledger");
const KEY: &str = "exporter";

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger store: {0}")]
    Store(#[from] StoreError),
    #[error("the ledger lock is poisoned")]
    Poisoned,
}

/// The node's own ledger. Updates are serialised so two releases finishing
/// together both count.
pub struct LedgerStore {
    store: Arc<dyn Store>,
    tree: TypedTree<String, Ledger>,
    write: Mutex<()>,
}

impl LedgerStore {
    pub fn open(store: Arc<dyn Store>) -> Result<Self, LedgerError> {
        Ok(LedgerStore {
            tree: TypedTree::open(&*store, LEDGER_TREE)?,
            store,
            write: Mutex::new(()),
        })
    }

    pub fn ledger(&self) -> Result<Ledger, LedgerError> {
        Ok(self.tree.get(&KEY.to_owned())?.unwrap_or_default())
    }

    pub fn year_to_date(&self, at: OffsetDateTime) -> Result<YearToDate, LedgerError> {
        Ok(self.ledger()?.year_to_date(at))
    }

    /// Count a completed release, durably. Returns whether it counted
    /// toward the year to date (only some routes do).
    pub fn record(
        &self,
        at: OffsetDateTime,
        route: Route,
        exemption: Option<Exemption>,
        personal: u64,
        sensitive: u64,
    ) -> Result<bool, LedgerError> {
        let _guard = self.write.lock().map_err(|_| LedgerError::Poisoned)?;
        let mut ledger = self.ledger()?;
        if !ledger.record(at, route, exemption, personal, sensitive) {
            return Ok(false);
        }
        self.tree.insert(&KEY.to_owned(), &ledger)?;
        self.store.flush()?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledStore;
    use time::macros::datetime;

    #[test]
    fn counts_survive_a_reopen_and_reset_on_gba_new_year() {
        let dir = tempfile::tempdir().unwrap();
        let at = datetime!(2026-12-31 15:00 UTC); // 23:00 in the GBA
        {
            let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
            let l = LedgerStore::open(store).unwrap();
            assert!(l.record(at, Route::StandardContract, None, 900, 10).unwrap());
            assert!(!l.record(at, Route::GbaStandardContract, None, 5, 5).unwrap());
        }
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
        let l = LedgerStore::open(store).unwrap();
        assert_eq!(
            l.year_to_date(at).unwrap(),
            YearToDate {
                personal: 900,
                sensitive: 10
            }
        );
        // One hour later it is 1 January in Shanghai.
        assert_eq!(
            l.year_to_date(datetime!(2026-12-31 16:00 UTC)).unwrap(),
            YearToDate::default()
        );
    }
}
