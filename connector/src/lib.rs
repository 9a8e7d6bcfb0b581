//! The Bayspace engine: everything that touches a disk, a key or the network.
//!
//! The domain rules live in `bayspace-contracts`; this crate holds the
//! node's identity and credentials, persists what was decided, proves it in
//! the audit log, and talks to the other members.

pub mod admission;
pub mod api_tls;
pub mod audit;
pub mod backup;
pub mod catalog;
pub mod config;
pub mod crypto;
pub mod download;
pub mod export;
#[doc(hidden)]
pub mod fuzzing;
pub mod identity;
pub mod ledger;
pub mod limits;
pub mod metrics;
pub mod negotiator;
pub mod p2p;
pub mod store;
pub mod transfers;
pub mod vault;
