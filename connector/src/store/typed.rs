//! Trees of typed keys and values.
//!
//! Keys are encoded so that byte order is the natural order (big-endian
//! integers, UTF-8 strings); values are JSON, which keeps the database
//! readable with generic tools and lets a record gain optional fields
//! without a migration.

use std::collections::VecDeque;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Entry, Store, StoreError, Tree, TreeName, WriteSet, describe_key};

/// A key type with an order-preserving byte encoding.
pub trait Key: Sized + fmt::Debug {
    /// What a valid encoding looks like, for error messages.
    const KIND: &'static str;

    fn to_bytes(&self) -> Vec<u8>;

    fn from_bytes(bytes: &[u8]) -> Option<Self>;
}

impl Key for u64 {
    const KIND: &'static str = "u64 (8 bytes, big-endian)";

    fn to_bytes(&self) -> Vec<u8> {
        self.to_be_bytes().to_vec()
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        <[u8; 8]>::try_from(bytes).ok().map(u64::from_be_bytes)
    }
}

impl Key for String {
    const KIND: &'static str = "UTF-8 string";

    fn to_bytes(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        String::from_utf8(bytes.to_vec()).ok()
    }
}

/// A [`Tree`] holding values of type `V` under keys of type `K`.
pub struct TypedTree<K, V> {
    tree: Arc<dyn Tree>,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Clone for TypedTree<K, V> {
    fn clone(&self) -> Self {
        TypedTree {
            tree: Arc::clone(&self.tree),
            _types: PhantomData,
        }
    }
}

impl<K: Key, V: Serialize + DeserializeOwned> TypedTree<K, V> {
    pub fn open<S: Store + ?Sized>(store: &S, name: TreeName) -> Result<Self, StoreError> {
        Ok(TypedTree {
            tree: store.tree(name)?,
            _types: PhantomData,
        })
    }

    pub fn name(&self) -> TreeName {
        self.tree.name()
    }

    pub fn get(&self, key: &K) -> Result<Option<V>, StoreError> {
        let k = key.to_bytes();
        self.tree
            .get(&k)?
            .map(|v| self.decode_value(&k, &v))
            .transpose()
    }

    pub fn insert(&self, key: &K, value: &V) -> Result<(), StoreError> {
        let v = self.encode_value(key, value)?;
        self.tree.insert(&key.to_bytes(), &v)?;
        Ok(())
    }

    /// Remove `key`; whether it was present.
    pub fn remove(&self, key: &K) -> Result<bool, StoreError> {
        Ok(self.tree.remove(&key.to_bytes())?.is_some())
    }

    /// See [`Tree::scan`]; `prefix` is on the encoded key (empty for all).
    pub fn scan(
        &self,
        prefix: &[u8],
        after: Option<&K>,
        limit: usize,
    ) -> Result<Vec<(K, V)>, StoreError> {
        let after = after.map(Key::to_bytes);
        self.tree
            .scan(prefix, after.as_deref(), limit)?
            .into_iter()
            .map(|(k, v)| self.decode_entry(&k, &v))
            .collect()
    }

    /// Every entry whose encoded key starts with `prefix`, in key order,
    /// read a page at a time so a large tree is never held in memory at
    /// once. Entries written while iterating may or may not be seen; none
    /// is seen twice. The iterator ends after the first error it yields.
    pub fn iter(&self, prefix: &[u8]) -> Iter<K, V> {
        Iter {
            tree: self.clone(),
            prefix: prefix.to_vec(),
            after: None,
            page: VecDeque::new(),
            done: false,
        }
    }

    /// Every value whose encoded key starts with `prefix`, in key order.
    pub fn values(&self, prefix: &[u8]) -> Result<Vec<V>, StoreError> {
        self.iter(prefix).map(|e| e.map(|(_, v)| v)).collect()
    }

    pub fn last(&self) -> Result<Option<(K, V)>, StoreError> {
        self.tree
            .last()?
            .map(|(k, v)| self.decode_entry(&k, &v))
            .transpose()
    }

    pub fn len(&self) -> usize {
        self.tree.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// Add an insert of this pair to `writes`, for [`Store::apply`].
    pub fn stage_insert(
        &self,
        writes: &mut WriteSet,
        key: &K,
        value: &V,
    ) -> Result<(), StoreError> {
        let v = self.encode_value(key, value)?;
        writes.insert(self.name(), key.to_bytes(), v);
        Ok(())
    }

    pub fn stage_remove(&self, writes: &mut WriteSet, key: &K) {
        writes.remove(self.name(), key.to_bytes());
    }

    /// Add the precondition "`key` holds `value`" (absent when `None`) to
    /// `writes`. The comparison is on the encoded bytes, so `V` must encode
    /// deterministically (structs and `BTreeMap`s do; `HashMap`s do not).
    pub fn stage_expect(
        &self,
        writes: &mut WriteSet,
        key: &K,
        value: Option<&V>,
    ) -> Result<(), StoreError> {
        let v = value.map(|v| self.encode_value(key, v)).transpose()?;
        writes.expect(self.name(), key.to_bytes(), v);
        Ok(())
    }

    fn encode_value(&self, key: &K, value: &V) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(value).map_err(|source| StoreError::Encode {
            tree: self.name(),
            key: format!("{key:?}"),
            source,
        })
    }

    fn decode_value(&self, key: &[u8], value: &[u8]) -> Result<V, StoreError> {
        serde_json::from_slice(value).map_err(|source| StoreError::Decode {
            tree: self.name(),
            key: K::from_bytes(key).map_or_else(|| describe_key(key), |k| format!("{k:?}")),
            source,
        })
    }

    fn decode_entry(&self, key: &[u8], value: &[u8]) -> Result<(K, V), StoreError> {
        let k = K::from_bytes(key).ok_or_else(|| StoreError::BadKey {
            tree: self.name(),
            key: describe_key(key),
            expected: K::KIND,
        })?;
        Ok((k, self.decode_value(key, value)?))
    }
}

/// Entries read from a tree page by page: see [`TypedTree::iter`].
pub struct Iter<K, V> {
    tree: TypedTree<K, V>,
    prefix: Vec<u8>,
    after: Option<Vec<u8>>,
    page: VecDeque<Entry>,
    done: bool,
}

impl<K, V> Iter<K, V> {
    /// Large enough that paging costs little next to decoding, small
    /// enough that a page of records stays a few hundred KiB.
    const PAGE: usize = 256;
}

impl<K: Key, V: Serialize + DeserializeOwned> Iterator for Iter<K, V> {
    type Item = Result<(K, V), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.page.is_empty() {
            match self
                .tree
                .tree
                .scan(&self.prefix, self.after.as_deref(), Self::PAGE)
            {
                Ok(page) => self.page = page.into(),
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        let Some((k, v)) = self.page.pop_front() else {
            self.done = true;
            return None;
        };
        let item = self.tree.decode_entry(&k, &v);
        self.done = item.is_err();
        self.after = Some(k);
        Some(item)
    }
}
