//! The Bayspace engine: everything a node does on the network and on disk,
//! kept apart from the pure domain rules in `bayspace-contracts`.

pub mod p2p;
