//! The data steward's side: publishing, re-publishing and withdrawing this
//! node's own datasets.

use std::fs::File;
use std::path::{Path, PathBuf};

use bayspace_contracts::classification::{Category, DataLevel, DataProfile};
use bayspace_contracts::descriptor::{
    ApprovalMode, DatasetDescriptor, DatasetId, Digest, Institution, Offer, OfferId, PublicKey,
    SignedDescriptor,
};
use bayspace_contracts::policy::{Policy, Purpose, RegionSet};
use bayspace_contracts::region::GBA_UTC_OFFSET;
use bayspace_contracts::region::Region;
use time::{Date, OffsetDateTime};

use super::{Catalog, CatalogError, LocalFile, encode};
use crate::identity::NodeKey;
use crate::store::WriteSet;

/// What a steward says about a dataset to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDataset {
    /// The plaintext file; it is hashed, never copied.
    pub path: PathBuf,
    pub title: String,
    pub description: String,
    pub keywords: Vec<String>,
    /// Where the data is held; the publisher's seat when `None`.
    pub region: Option<Region>,
    pub level: DataLevel,
    pub personal_individuals: u64,
    pub sensitive_individuals: u64,
    pub categories: Vec<Category>,
    pub collected_abroad: bool,
    pub purposes: Vec<Purpose>,
    pub recipient_regions: RegionSet,
    pub approval: ApprovalMode,
    /// Offer validity from now; open-ended when `None`.
    pub valid_days: Option<u32>,
    /// The moment the offer ends, instead of `valid_days`.
    pub valid_until: Option<OffsetDateTime>,
    /// At most this many releases under one agreement.
    pub use_limit: Option<u64>,
    /// The retention end: the data is deleted by the end of this day, GBA
    /// time, wherever it went.
    pub delete_by: Option<Date>,
    /// Publish as the next version of this dataset of ours (same id).
    pub replaces: Option<DatasetId>,
}

impl Catalog {
    /// Hash the file, build, sign and store the descriptor, and record the
    /// file locally. Returns the descriptor for the caller to announce; it is
    /// flushed to disk first. `random` (16 fresh random bytes) makes the
    /// offer id and, for a new dataset, the local name: a random name keeps
    /// the file's path private and lets one file be offered twice.
    pub fn publish(
        &self,
        new: NewDataset,
        key: &NodeKey,
        publisher: Institution,
        now: OffsetDateTime,
        random: [u8; 16],
    ) -> Result<SignedDescriptor, CatalogError> {
        check_publisher(&publisher, key)?;
        check_terms(&new, now)?;
        let mut policy = Policy::offer(new.purposes).recipients(new.recipient_regions);
        if let Some(days) = new.valid_days {
            policy = policy.valid_for_days(now, days);
        }
        if let Some(until) = new.valid_until {
            policy = policy.valid_until(until);
        }
        if let Some(limit) = new.use_limit {
            policy = policy.use_limit(limit);
        }
        if let Some(date) = new.delete_by {
            policy = policy.delete_by(date);
        }
        let policy = policy.build()?;
        let name = format!(
            "ds-{}",
            &blake3::derive_key("bayspace/v1 dataset-name", &random)
                .iter()
                .take(16)
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        let mut d = DatasetDescriptor {
            id: DatasetId::derive(&publisher.key, &name),
            name,
            version: 1,
            title: new.title,
            description: new.description,
            keywords: new.keywords,
            region: new.region.unwrap_or(publisher.region),
            publisher,
            profile: DataProfile {
                level: new.level,
                personal_individuals: new.personal_individuals,
                sensitive_individuals: new.sensitive_individuals,
                categories: new.categories,
                collected_abroad: new.collected_abroad,
            },
            content_hash: Digest([0; 32]),
            size: 0,
            offers: vec![Offer {
                id: OfferId::from_random(random),
                policy,
                approval: new.approval,
            }],
            issued: now,
            withdrawn: false,
        };
        // Refuse bad fields before reading a possibly large file.
        d.validate()
            .map_err(bayspace_contracts::descriptor::DescriptorError::from)?;
        let path = std::fs::canonicalize(&new.path).map_err(|source| CatalogError::File {
            path: new.path.clone(),
            source,
        })?;
        let (content_hash, size) = hash_file(&path)?;
        d.content_hash = content_hash;
        d.size = size;

        let _writer = self.lock_writer();
        let previous = match &new.replaces {
            None => None,
            Some(id) => {
                let previous = self.own(id, key)?;
                d.name.clone_from(&previous.descriptor.name);
                d.id = id.clone();
                d.version = next_version(&previous)?;
                Some(previous)
            }
        };
        let signed = SignedDescriptor::sign(d, key.signing_key())?;
        encode(&signed)?;
        let mut writes = WriteSet::new();
        self.stage_descriptor(&mut writes, &signed, previous.as_ref())?;
        let file = LocalFile {
            path,
            content_hash,
            size,
        };
        self.local_files
            .stage_insert(&mut writes, &signed.descriptor.id.to_string(), &file)?;
        self.store.apply(&writes)?;
        self.store.flush()?;
        self.index_insert(&signed);
        Ok(signed)
    }

    /// Announce that a dataset of ours is no longer offered: a new version
    /// with `withdrawn` set, so it supersedes every earlier one everywhere.
    /// Withdrawing a withdrawn dataset returns it unchanged. The local file
    /// record stays, for agreements made before the withdrawal.
    pub fn withdraw(
        &self,
        id: &DatasetId,
        key: &NodeKey,
        now: OffsetDateTime,
    ) -> Result<SignedDescriptor, CatalogError> {
        let _writer = self.lock_writer();
        let previous = self.own(id, key)?;
        if previous.descriptor.withdrawn {
            return Ok(previous);
        }
        let mut d = previous.descriptor.clone();
        d.version = next_version(&previous)?;
        d.issued = now;
        d.withdrawn = true;
        let signed = SignedDescriptor::sign(d, key.signing_key())?;
        let mut writes = WriteSet::new();
        self.stage_descriptor(&mut writes, &signed, Some(&previous))?;
        self.store.apply(&writes)?;
        self.store.flush()?;
        self.index_insert(&signed);
        Ok(signed)
    }

    /// The stored descriptor of a dataset this key published.
    fn own(&self, id: &DatasetId, key: &NodeKey) -> Result<SignedDescriptor, CatalogError> {
        let s = self
            .get(id)?
            .ok_or_else(|| CatalogError::UnknownDataset(id.clone()))?;
        if s.descriptor.publisher.key != PublicKey::from(&key.verifying_key()) {
            return Err(CatalogError::NotOurs {
                id: id.clone(),
                publisher: s.descriptor.publisher.name.clone(),
            });
        }
        Ok(s)
    }
}

fn next_version(previous: &SignedDescriptor) -> Result<u64, CatalogError> {
    let d = &previous.descriptor;
    d.version
        .checked_add(1)
        .ok_or_else(|| CatalogError::VersionOverflow(d.id.clone()))
}

/// Offer terms that would make an offer nobody can ever use, refused with
/// the option named before anything is hashed or stored.
fn check_terms(new: &NewDataset, now: OffsetDateTime) -> Result<(), CatalogError> {
    if let Some(until) = new.valid_until {
        if new.valid_days.is_some() {
            return Err(CatalogError::ValidityTwice);
        }
        if until <= now {
            return Err(CatalogError::ValidUntilPast { until, now });
        }
    }
    if new.use_limit == Some(0) {
        return Err(CatalogError::ZeroUseLimit);
    }
    let today = now.to_offset(GBA_UTC_OFFSET).date();
    if let Some(date) = new.delete_by
        && date < today
    {
        return Err(CatalogError::DeleteByPast { date, today });
    }
    Ok(())
}

fn check_publisher(publisher: &Institution, key: &NodeKey) -> Result<(), CatalogError> {
    let own = PublicKey::from(&key.verifying_key());
    if publisher.key != own {
        return Err(CatalogError::PublisherMismatch {
            field: "key",
            named: publisher.key.to_string(),
            actual: own.to_string(),
        });
    }
    let peer = key.peer_id().to_string();
    if publisher.peer_id != peer {
        return Err(CatalogError::PublisherMismatch {
            field: "peer_id",
            named: publisher.peer_id.clone(),
            actual: peer,
        });
    }
    Ok(())
}

/// BLAKE3 and length of a regular file, read in a stream.
pub(super) fn hash_file(path: &Path) -> Result<(Digest, u64), CatalogError> {
    let io = |source| CatalogError::File {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(CatalogError::NotAFile {
            path: path.to_owned(),
        });
    }
    let mut file = File::open(path).map_err(io)?;
    let mut hasher = blake3::Hasher::new();
    let size = std::io::copy(&mut file, &mut hasher).map_err(io)?;
    Ok((Digest(*hasher.finalize().as_bytes()), size))
}
