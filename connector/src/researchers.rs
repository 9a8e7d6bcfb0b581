//! The researchers allowed to use this node's API, each with a bearer token.
//!
//! Only the BLAKE3 hash of a token is stored. Two trees, written together
//! in one [`WriteSet`] so they never disagree: the records by id, and the
//! token hashes pointing at their record's id for the lookup on every call.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::identity::{Orcid, timestamp};
use crate::random::{self, RandomError};
use crate::store::{Store, StoreError, TreeName, TypedTree, WriteSet};

pub const RESEARCHERS_TREE: TreeName = TreeName::new("researchers");
pub const RESEARCHER_TOKENS_TREE: TreeName = TreeName::new("researcher-tokens");

/// Longest researcher name accepted.
pub const MAX_NAME: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum ResearcherError {
    #[error("name `{0}` must be 1 to {MAX_NAME} bytes without control characters")]
    BadName(String),
    #[error("researcher {id}: the stored token hash is not hex")]
    BadStoredHash { id: String },
    #[error("researcher registry: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Random(#[from] RandomError),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResearcherRecord {
    pub id: String,
    pub name: String,
    pub orcid: Option<Orcid>,
    /// BLAKE3 of the token's text, hex.
    pub token_blake3: String,
    #[serde(with = "timestamp")]
    pub added_at: OffsetDateTime,
}

/// The registry; cheap to clone.
#[derive(Clone)]
pub struct Researchers {
    store: Arc<dyn Store>,
    records: TypedTree<String, ResearcherRecord>,
    tokens: TypedTree<String, String>,
}

/// What is stored of a token, and what a presented one is compared with.
pub fn token_hash(token: &str) -> blake3::Hash {
    blake3::hash(token.as_bytes())
}

impl Researchers {
    pub fn open(store: Arc<dyn Store>) -> Result<Self, ResearcherError> {
        Ok(Researchers {
            records: TypedTree::open(&*store, RESEARCHERS_TREE)?,
            tokens: TypedTree::open(&*store, RESEARCHER_TOKENS_TREE)?,
            store,
        })
    }

    /// Adds a researcher and returns the record and the token, which is
    /// never shown again. Durable when it returns.
    pub fn add(
        &self,
        name: &str,
        orcid: Option<Orcid>,
        now: OffsetDateTime,
    ) -> Result<(ResearcherRecord, String), ResearcherError> {
        let name = name.trim();
        if name.is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
            return Err(ResearcherError::BadName(name.to_owned()));
        }
        let token = random::hex(32)?;
        let record = ResearcherRecord {
            id: format!("r-{}", random::hex(8)?),
            name: name.to_owned(),
            orcid,
            token_blake3: token_hash(&token).to_hex().to_string(),
            added_at: timestamp::whole_seconds(now),
        };
        let mut writes = WriteSet::new();
        self.records.stage_expect(&mut writes, &record.id, None)?;
        self.records
            .stage_insert(&mut writes, &record.id, &record)?;
        self.tokens
            .stage_expect(&mut writes, &record.token_blake3, None)?;
        self.tokens
            .stage_insert(&mut writes, &record.token_blake3, &record.id)?;
        self.store.apply(&writes)?;
        self.store.flush()?;
        Ok((record, token))
    }

    pub fn list(&self) -> Result<Vec<ResearcherRecord>, ResearcherError> {
        Ok(self.records.values(&[])?)
    }

    /// Removes a researcher and their token; false when the id is unknown.
    /// Their token stops working at once.
    pub fn remove(&self, id: &str) -> Result<bool, ResearcherError> {
        let id = id.to_owned();
        let Some(record) = self.records.get(&id)? else {
            return Ok(false);
        };
        let mut writes = WriteSet::new();
        self.records.stage_expect(&mut writes, &id, Some(&record))?;
        self.records.stage_remove(&mut writes, &id);
        self.tokens.stage_remove(&mut writes, &record.token_blake3);
        self.store.apply(&writes)?;
        self.store.flush()?;
        Ok(true)
    }

    /// The researcher holding `token`, if any.
    pub fn authenticate(&self, token: &str) -> Result<Option<ResearcherRecord>, ResearcherError> {
        let hash = token_hash(token);
        let Some(id) = self.tokens.get(&hash.to_hex().to_string())? else {
            return Ok(None);
        };
        let Some(record) = self.records.get(&id)? else {
            return Ok(None);
        };
        // `Hash` equality is constant time.
        let stored = blake3::Hash::from_hex(&record.token_blake3)
            .map_err(|_| ResearcherError::BadStoredHash { id: id.clone() })?;
        Ok((stored == hash).then_some(record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemStore;

    #[test]
    fn add_authenticate_list_remove() {
        let r = Researchers::open(Arc::new(MemStore::new())).unwrap();
        let now = OffsetDateTime::now_utc();
        let (a, ta) = r
            .add(
                "Ada Lovelace",
                Some("0000-0002-1825-0097".parse().unwrap()),
                now,
            )
            .unwrap();
        let (b, tb) = r.add("Grace Hopper", None, now).unwrap();
        assert_ne!(ta, tb);
        assert_ne!(a.token_blake3, ta, "only the hash is stored");
        assert_eq!(r.authenticate(&ta).unwrap().unwrap().id, a.id);
        assert_eq!(r.authenticate(&tb).unwrap().unwrap().name, "Grace Hopper");
        assert!(r.authenticate("nope").unwrap().is_none());
        let mut ids: Vec<String> = r.list().unwrap().into_iter().map(|x| x.id).collect();
        ids.sort();
        let mut want = vec![a.id.clone(), b.id.clone()];
        want.sort();
        assert_eq!(ids, want);
        assert!(r.remove(&a.id).unwrap());
        assert!(!r.remove(&a.id).unwrap());
        assert!(r.authenticate(&ta).unwrap().is_none());
        assert_eq!(r.list().unwrap().len(), 1);
    }

    #[test]
    fn bad_names_are_refused_and_nothing_is_stored() {
        let r = Researchers::open(Arc::new(MemStore::new())).unwrap();
        let now = OffsetDateTime::now_utc();
        for name in ["  ", "a\u{7}b", &"x".repeat(MAX_NAME + 1)] {
            assert!(matches!(
                r.add(name, None, now),
                Err(ResearcherError::BadName(_))
            ));
        }
        assert!(r.list().unwrap().is_empty());
    }
}
