//! The Bayspace engine: identity and credentials, and (to come) the
//! peer-to-peer layer, storage, crypto and the protocol drivers that feed
//! the pure domain in `bayspace-contracts`.

pub mod config;
pub mod identity;
