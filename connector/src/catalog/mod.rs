//! The local and federated catalog: every dataset descriptor this node
//! knows, its own and those announced by other members, and their search.
//!
//! # Storage
//! Two trees. [`DESCRIPTORS`] maps a dataset id (its `urn:` text form) to
//! the latest signed descriptor, stored as the very JSON that goes on the
//! wire, so a catalog page is served without re-encoding. [`LOCAL_FILES`]
//! maps the ids of datasets this node published to the file they were hashed
//! from; it is never sent anywhere, and a dataset present there is ours.
//!
//! # Trust
//! Everything that enters through [`Catalog::ingest`] is verified (bounds,
//! digest, signature), its publisher must be admitted and must be the holder
//! of the key it signed with, and it replaces the stored version only if it
//! [supersedes](SignedDescriptor::supersedes) it. Writes are serialised by
//! one lock, and each is one atomic [`WriteSet`], so a descriptor and its
//! index entry never disagree and nothing partial is stored.
//!
//! # Size
//! One bound, [`MAX_DESCRIPTOR_BYTES`], the Kademlia record limit, applies
//! to every descriptor stored; whatever the catalog holds can therefore be
//! gossiped, put in the DHT and served in a page.

mod index;
mod publish;
mod sync;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use bayspace_contracts::classification::{Category, DataLevel};
use bayspace_contracts::descriptor::{
    DatasetId, DescriptorError, Digest, FieldError, PublicKey, SignedDescriptor,
};
use bayspace_contracts::dsp::{self, DataService, DspError};
use bayspace_contracts::policy::PolicyError;
use bayspace_contracts::region::Region;
use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::identity::key_of_peer_id;
use crate::p2p::CatalogResponse;
use crate::p2p::protocol::{MAX_CATALOG_RESPONSE_BYTES, MAX_RECORD_BYTES};
use crate::store::{Store, StoreError, Tree, TreeName, TypedTree, WriteSet};

use index::{Entry, Filter, Index};
pub use publish::NewDataset;
pub use sync::{MAX_SYNC_PAGES, SyncError, SyncReport, sync_from};

/// Dataset id → latest signed descriptor (JSON).
pub const DESCRIPTORS: TreeName = TreeName::new("catalog-descriptors");
/// Dataset id → [`LocalFile`], for datasets this node published.
pub const LOCAL_FILES: TreeName = TreeName::new("catalog-local-files");

/// Largest signed descriptor, as JSON, the catalog stores or accepts.
pub const MAX_DESCRIPTOR_BYTES: usize = MAX_RECORD_BYTES;
/// Datasets of one other member this node keeps; past it, that member's
/// new datasets are refused (its updates of those held still pass).
pub const MAX_DATASETS_PER_PUBLISHER: usize = 10_000;
/// Most descriptors in one sync page.
pub const MAX_PAGE_ITEMS: u32 = 200;
pub const DEFAULT_SEARCH_LIMIT: u32 = 50;
pub const MAX_SEARCH_LIMIT: u32 = 500;
/// How far in the future a descriptor's `issued` may lie (clock skew
/// between members); beyond it the descriptor is refused, so that no
/// publisher can pre-empt its own later versions of equal number.
pub const MAX_CLOCK_SKEW: Duration = Duration::minutes(10);

/// The descriptor bytes of a page stay below the response limit with room
/// for the CBOR framing (a few bytes per item) and the cursor.
const PAGE_BYTE_BUDGET: usize = MAX_CATALOG_RESPONSE_BYTES as usize - 64 * 1024;

/// Why a catalog operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("descriptor is {size} bytes; at most {max} are accepted")]
    TooLarge { size: usize, max: usize },
    #[error("descriptor JSON is malformed at `{path}`: {reason}")]
    Malformed { path: String, reason: String },
    #[error(transparent)]
    Descriptor(#[from] DescriptorError),
    #[error("descriptor {id}: publisher peer id `{peer_id}` {reason}")]
    PeerIdMismatch {
        id: DatasetId,
        peer_id: String,
        reason: String,
    },
    #[error("descriptor {id}: publisher {peer_id} is not an admitted member")]
    NotAdmitted { id: DatasetId, peer_id: String },
    #[error("descriptor {id}: this node keeps {limit} datasets of {peer_id} already")]
    PublisherQuota {
        id: DatasetId,
        peer_id: String,
        limit: usize,
    },
    #[error("descriptor {id} is issued at {issued}, more than {MAX_CLOCK_SKEW} after now ({now})")]
    IssuedInFuture {
        id: DatasetId,
        issued: OffsetDateTime,
        now: OffsetDateTime,
    },
    #[error("cannot read dataset file {path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("dataset path {path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error("the offer policy is invalid: {0}")]
    Policy(#[from] PolicyError),
    #[error("valid-until and valid-days both end the offer; give only one of them")]
    ValidityTwice,
    #[error(
        "valid-until `{}` is not after now ({}): the offer would never stand",
        rfc3339(until),
        rfc3339(now)
    )]
    ValidUntilPast {
        until: OffsetDateTime,
        now: OffsetDateTime,
    },
    #[error("use-limit `0` would never allow a release; give at least 1")]
    ZeroUseLimit,
    #[error("delete-by `{date}` has already passed (today is {today}, GBA time)")]
    DeleteByPast { date: time::Date, today: time::Date },
    #[error("publisher {field} does not match the node key: it says {named}, the key is {actual}")]
    PublisherMismatch {
        field: &'static str,
        named: String,
        actual: String,
    },
    #[error("dataset {0} is not in the catalog")]
    UnknownDataset(DatasetId),
    #[error("dataset {id} was published by {publisher}, not by this node")]
    NotOurs { id: DatasetId, publisher: String },
    #[error("dataset {0} has reached the highest version number")]
    VersionOverflow(DatasetId),
    #[error("cursor `{cursor}` is not a dataset id: {source}")]
    BadCursor {
        cursor: String,
        #[source]
        source: FieldError,
    },
    #[error("descriptor cannot be encoded as JSON: {0}")]
    Encode(#[source] serde_json::Error),
    #[error(transparent)]
    Dsp(#[from] DspError),
}

fn rfc3339(t: &OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// Where a dataset this node published lives on disk. Local only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalFile {
    pub path: PathBuf,
    pub content_hash: Digest,
    pub size: u64,
}

/// What [`Catalog::ingest`] did with a valid descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestOutcome {
    /// New, or newer than the stored version.
    Stored,
    /// Exactly the stored version.
    Unchanged,
    /// Older than the stored version, or a different record claiming the
    /// same version and time (the first one seen stays).
    Stale,
}

/// A search. Every given criterion must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchQuery {
    /// Words that must all occur (as word prefixes, any case) in the title,
    /// description or keywords.
    pub text: Option<String>,
    /// An institution name (any case) or a peer id.
    pub publisher: Option<String>,
    /// Where the data is held.
    pub region: Option<Region>,
    pub category: Option<Category>,
    pub level: Option<DataLevel>,
    /// Page size: [`DEFAULT_SEARCH_LIMIT`] when `None`, at most
    /// [`MAX_SEARCH_LIMIT`].
    pub limit: Option<u32>,
    /// The `next` cursor of the previous page.
    pub after: Option<String>,
}

/// One page of results, ordered by dataset id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchPage {
    pub items: Vec<SignedDescriptor>,
    /// Present when more results may follow.
    pub next: Option<String>,
}

/// The catalog. Share it behind an `Arc`; every method takes `&self`.
pub struct Catalog {
    store: Arc<dyn Store>,
    raw: Arc<dyn Tree>,
    descriptors: TypedTree<String, SignedDescriptor>,
    local_files: TypedTree<String, LocalFile>,
    index: RwLock<Index>,
    /// Serialises writers, so that the read-compare-write of an ingest is
    /// not interleaved with another.
    writer: Mutex<()>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("datasets", &self.len())
            .finish_non_exhaustive()
    }
}

impl Catalog {
    /// Open the trees and rebuild the search index from them. Stored
    /// descriptors were verified when they came in and are not verified
    /// again.
    pub fn open(store: Arc<dyn Store>) -> Result<Catalog, CatalogError> {
        let raw = store.tree(DESCRIPTORS)?;
        let descriptors: TypedTree<String, SignedDescriptor> =
            TypedTree::open(&*store, DESCRIPTORS)?;
        let local_files = TypedTree::open(&*store, LOCAL_FILES)?;
        let mut index = Index::default();
        for entry in descriptors.iter(&[]) {
            let (_, s) = entry?;
            index.insert(s.descriptor.id.clone(), Entry::of(&s.descriptor));
        }
        Ok(Catalog {
            store,
            raw,
            descriptors,
            local_files,
            index: RwLock::new(index),
            writer: Mutex::new(()),
        })
    }

    /// Datasets held, withdrawn ones included.
    pub fn len(&self) -> usize {
        self.read_index().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, id: &DatasetId) -> Result<Option<SignedDescriptor>, CatalogError> {
        Ok(self.descriptors.get(&id.to_string())?)
    }

    /// The file behind a dataset this node published.
    pub fn local_file(&self, id: &DatasetId) -> Result<Option<LocalFile>, CatalogError> {
        Ok(self.local_files.get(&id.to_string())?)
    }

    /// Verify and keep a descriptor from the network. `publisher_admitted`
    /// answers whether a peer id is a currently admitted member; the node's
    /// own datasets are accepted without asking.
    pub fn ingest(
        &self,
        signed: SignedDescriptor,
        publisher_admitted: impl Fn(&str) -> bool,
        now: OffsetDateTime,
    ) -> Result<IngestOutcome, CatalogError> {
        signed.verify(None)?;
        let d = &signed.descriptor;
        check_peer_id(d.publisher.peer_id.as_str(), &d.publisher.key, &d.id)?;
        if d.issued > now + MAX_CLOCK_SKEW {
            return Err(CatalogError::IssuedInFuture {
                id: d.id.clone(),
                issued: d.issued,
                now,
            });
        }
        encode(&signed)?;
        let key = d.id.to_string();
        if !publisher_admitted(&d.publisher.peer_id) && self.local_files.get(&key)?.is_none() {
            return Err(CatalogError::NotAdmitted {
                id: d.id.clone(),
                peer_id: d.publisher.peer_id.clone(),
            });
        }
        let _writer = self.lock_writer();
        let current = self.descriptors.get(&key)?;
        if let Some(current) = &current {
            if *current == signed {
                return Ok(IngestOutcome::Unchanged);
            }
            if !signed.supersedes(current) {
                return Ok(IngestOutcome::Stale);
            }
        } else {
            // A new dataset: one member cannot fill this node's catalog.
            let publisher = d.publisher.peer_id.as_str();
            let held = self.read_index().held_by(publisher);
            if held >= MAX_DATASETS_PER_PUBLISHER {
                return Err(CatalogError::PublisherQuota {
                    id: d.id.clone(),
                    peer_id: publisher.to_owned(),
                    limit: MAX_DATASETS_PER_PUBLISHER,
                });
            }
        }
        let mut writes = WriteSet::new();
        self.stage_descriptor(&mut writes, &signed, current.as_ref())?;
        self.store.apply(&writes)?;
        self.index_insert(&signed);
        Ok(IngestOutcome::Stored)
    }

    /// [`ingest`](Self::ingest) for bytes from the network: bounded, then
    /// parsed with the failing JSON path named.
    pub fn ingest_bytes(
        &self,
        bytes: &[u8],
        publisher_admitted: impl Fn(&str) -> bool,
        now: OffsetDateTime,
    ) -> Result<IngestOutcome, CatalogError> {
        self.ingest(decode(bytes)?, publisher_admitted, now)
    }

    /// Drop every descriptor of a member whose admission was revoked.
    /// Returns how many were dropped.
    pub fn remove_publisher(&self, peer_id: &str) -> Result<usize, CatalogError> {
        let _writer = self.lock_writer();
        let ids: Vec<DatasetId> = self
            .read_index()
            .entries()
            .filter(|(_, e)| &*e.peer_id == peer_id)
            .map(|(id, _)| id.clone())
            .collect();
        if ids.is_empty() {
            return Ok(0);
        }
        let mut writes = WriteSet::new();
        for id in &ids {
            self.descriptors.stage_remove(&mut writes, &id.to_string());
        }
        self.store.apply(&writes)?;
        let mut index = self.write_index();
        for id in &ids {
            index.remove(id);
        }
        Ok(ids.len())
    }

    /// Search the datasets that are not withdrawn.
    pub fn search(&self, query: &SearchQuery) -> Result<SearchPage, CatalogError> {
        let limit = query
            .limit
            .unwrap_or(DEFAULT_SEARCH_LIMIT)
            .clamp(1, MAX_SEARCH_LIMIT) as usize;
        let after = query.after.as_deref().map(parse_cursor).transpose()?;
        let mut filter = Filter {
            publisher: query
                .publisher
                .as_ref()
                .map(|p| (p.clone(), p.to_lowercase())),
            region: query.region,
            category: query.category.clone(),
            level: query.level,
            ..Filter::default()
        };
        if let Some(text) = &query.text {
            index::tokenize(text, |w| filter.words.push(w));
        }
        let mut hits = self.read_index().search(&filter, after.as_ref(), limit + 1);
        let more = hits.len() > limit;
        hits.truncate(limit);
        let mut items = Vec::with_capacity(hits.len());
        for id in &hits {
            // A dataset removed since the index was read is simply skipped.
            if let Some(s) = self.get(id)? {
                items.push(s);
            }
        }
        Ok(SearchPage {
            next: more.then(|| hits.last().map(ToString::to_string)).flatten(),
            items,
        })
    }

    /// One page of the catalog for a peer's sync: signed descriptor JSON
    /// in id order, withdrawn ones included so that withdrawals spread.
    /// At most [`MAX_PAGE_ITEMS`] items and always under the response size
    /// limit; `next` is set when more may follow.
    pub fn page(&self, after: Option<&str>, limit: u32) -> Result<CatalogResponse, CatalogError> {
        let limit = limit.clamp(1, MAX_PAGE_ITEMS) as usize;
        let entries = self.raw.scan(&[], after.map(str::as_bytes), limit + 1)?;
        let mut more = entries.len() > limit;
        let mut items = Vec::with_capacity(entries.len().min(limit));
        let mut bytes = 0;
        let mut last_key = None;
        for (key, value) in entries.into_iter().take(limit) {
            if !items.is_empty() && bytes + value.len() > PAGE_BYTE_BUDGET {
                more = true;
                break;
            }
            bytes += value.len();
            items.push(value);
            last_key = Some(key);
        }
        let next = if more {
            last_key.map(|k| String::from_utf8_lossy(&k).into_owned())
        } else {
            None
        };
        Ok(CatalogResponse { items, next })
    }

    /// The DSP catalog of every dataset held that is not withdrawn.
    pub fn export_dsp(
        &self,
        catalog_id: &str,
        participant_id: &str,
        service: &DataService,
    ) -> Result<serde_json::Value, CatalogError> {
        let mut datasets = Vec::new();
        for entry in self.descriptors.iter(&[]) {
            let (_, s) = entry?;
            if !s.descriptor.withdrawn {
                datasets.push(s.descriptor);
            }
        }
        Ok(dsp::catalog(
            catalog_id,
            participant_id,
            service,
            &datasets,
        )?)
    }

    fn stage_descriptor(
        &self,
        writes: &mut WriteSet,
        signed: &SignedDescriptor,
        current: Option<&SignedDescriptor>,
    ) -> Result<(), CatalogError> {
        let key = signed.descriptor.id.to_string();
        self.descriptors.stage_expect(writes, &key, current)?;
        self.descriptors.stage_insert(writes, &key, signed)?;
        Ok(())
    }

    fn index_insert(&self, signed: &SignedDescriptor) {
        let d = &signed.descriptor;
        self.write_index().insert(d.id.clone(), Entry::of(d));
    }

    // A panic while one of these locks was held cannot leave the index
    // half-updated (each update is a single map operation), so a poisoned
    // lock is still safe to use.
    fn lock_writer(&self) -> MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn read_index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_index(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The bytes of a descriptor as gossiped, put in the DHT and paged:
/// its JSON, refused above [`MAX_DESCRIPTOR_BYTES`].
pub fn encode(signed: &SignedDescriptor) -> Result<Vec<u8>, CatalogError> {
    let bytes = serde_json::to_vec(signed).map_err(CatalogError::Encode)?;
    if bytes.len() > MAX_DESCRIPTOR_BYTES {
        return Err(CatalogError::TooLarge {
            size: bytes.len(),
            max: MAX_DESCRIPTOR_BYTES,
        });
    }
    Ok(bytes)
}

/// Parse untrusted descriptor bytes (not yet verified).
pub fn decode(bytes: &[u8]) -> Result<SignedDescriptor, CatalogError> {
    if bytes.len() > MAX_DESCRIPTOR_BYTES {
        return Err(CatalogError::TooLarge {
            size: bytes.len(),
            max: MAX_DESCRIPTOR_BYTES,
        });
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let signed: SignedDescriptor =
        serde_path_to_error::deserialize(&mut de).map_err(|e| CatalogError::Malformed {
            path: e.path().to_string(),
            reason: e.inner().to_string(),
        })?;
    de.end().map_err(|e| CatalogError::Malformed {
        path: ".".into(),
        reason: e.to_string(),
    })?;
    Ok(signed)
}

/// The Kademlia key under which a dataset's descriptor is stored; the value
/// is [`encode`]d and read back with [`Catalog::ingest_bytes`].
pub fn dht_key(id: &DatasetId) -> Vec<u8> {
    format!("/bayspace/descriptor/{id}").into_bytes()
}

fn parse_cursor(cursor: &str) -> Result<DatasetId, CatalogError> {
    DatasetId::from_str(cursor).map_err(|source| CatalogError::BadCursor {
        cursor: cursor.chars().take(128).collect(),
        source,
    })
}

/// The publisher's peer id must be the libp2p identity of the key that
/// signed, or an admitted member's peer id could be borrowed by anyone.
fn check_peer_id(peer_id: &str, key: &PublicKey, id: &DatasetId) -> Result<(), CatalogError> {
    let mismatch = |reason: String| CatalogError::PeerIdMismatch {
        id: id.clone(),
        peer_id: peer_id.to_owned(),
        reason,
    };
    let peer = PeerId::from_str(peer_id).map_err(|e| mismatch(format!("does not parse: {e}")))?;
    let embedded = key_of_peer_id(&peer).map_err(|e| mismatch(e.to_string()))?;
    if PublicKey::from(&embedded) != *key {
        return Err(mismatch(format!(
            "belongs to key {}, not to the publisher key {key}",
            PublicKey::from(&embedded)
        )));
    }
    Ok(())
}
