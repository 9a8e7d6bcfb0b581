//! The Bayspace engine: everything that touches a disk, a key or the network.
//!
//! The domain rules (the cross-border assessment, usage policies, the DSP
//! state machines, signed records) live in `bayspace-contracts`, which is
//! pure. This crate holds the node's identity and credentials, persists
//! what was decided, proves it in the audit log, and talks to the other
//! members. The `bayspace` binary (`bayspace-node`) parses, serves and
//! prints; it decides nothing.
//!
//! # The pieces
//! - [`node`]: [`Node::open`](node::Node::open) builds a running node from
//!   its directory; the binary only serves it. Its event loop and
//!   [`Node::publish`](node::Node::publish) are where what arrives from the
//!   network and what this node announces are decided.
//! - [`store`]: the [`Store`](store::Store) trait with sled and in-memory
//!   backends; every other module persists through it.
//! - [`audit`]: the hash-chained log with signed checkpoints, written before
//!   any audited action, verifiable offline.
//! - [`identity`], [`admission`], [`researchers`]: the node key, membership
//!   and researcher credentials, revocation lists, who may talk to this
//!   node, and the researchers' API tokens.
//! - [`p2p`]: one task owns the libp2p swarm; everything else holds a
//!   cloneable [`p2p::Client`] that sends it commands over bounded channels.
//! - [`catalog`]: signed dataset descriptors, local and federated, and search.
//! - [`negotiator`]: contract negotiation on both sides, the administrator's
//!   approval, and the outbox that delivers every state change at least once.
//! - [`transfers`], [`crypto`], [`vault`], [`download`]: release of encrypted
//!   data under an agreement, resumable transfers, sealed copies.
//! - [`ledger`], [`limits`], [`config`], [`api_tls`], [`export`], [`durable`],
//!   [`random`]: the cross-border ledger, the bounds, the node's
//!   configuration, the API's certificate, export directories, atomic
//!   files and random bytes.
//!
//! `docs/ARCHITECTURE.md` in the repository shows how a request travels
//! from a researcher to a release, and where each rule lives.
//!
//! # Example
//! The audit log on an in-memory store: append, export, verify the export
//! offline against the node's public key, as a regulator would.
//!
//! ```
//! use std::num::NonZeroU64;
//! use std::sync::Arc;
//!
//! use bayspace_connector::audit::{Actor, AuditEvent, AuditLog, verify_export};
//! use bayspace_connector::identity::NodeKey;
//! use bayspace_connector::store::{MemStore, Store};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let key = NodeKey::generate()?;
//! let store: Arc<dyn Store> = Arc::new(MemStore::new());
//! let every = NonZeroU64::new(2).ok_or("zero")?;
//! let log = AuditLog::open(Arc::clone(&store), key.signing_key().clone(), every)?;
//! for subject in ["ds-1", "ds-2"] {
//!     log.append(
//!         Actor::Admin,
//!         AuditEvent::DatasetPublished,
//!         vec![subject.to_owned()],
//!         serde_json::json!({}),
//!         time::OffsetDateTime::now_utc(),
//!     )?;
//! }
//! let mut export = Vec::new();
//! log.export(&mut export)?;
//! let report = verify_export(export.as_slice(), &log.verifying_key())?;
//! assert_eq!(report.entries, 2);
//! assert_eq!(report.signed_through, Some(2));
//! # Ok(())
//! # }
//! ```

pub mod admission;
pub mod api_tls;
pub mod audit;
pub mod backup;
pub mod catalog;
pub mod config;
pub mod crypto;
pub mod download;
pub mod durable;
pub mod export;
#[doc(hidden)]
pub mod fuzzing;
pub mod identity;
pub mod ledger;
pub mod limits;
pub mod metrics;
pub mod negotiator;
pub mod node;
pub mod p2p;
pub mod random;
pub mod researchers;
pub mod store;
pub mod transfers;
pub mod vault;
