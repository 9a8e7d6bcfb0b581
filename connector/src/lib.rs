//! The Bayspace engine: everything that touches a disk, a key or the network.
//!
//! The domain rules live in `bayspace-contracts`; this crate persists their
//! results, proves what was decided, and talks to the other members.

pub mod audit;
pub mod store;
