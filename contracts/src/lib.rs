//! The Bayspace domain, free of I/O.
//!
//! Everything the data space decides is decided here, as pure functions over
//! typed values: which cross-border route a transfer needs, whether a usage
//! policy allows a request, which Dataspace Protocol messages may follow
//! which, and whether a signed record is intact. The connector and the node
//! feed these functions with what they read from disk and the network.
//!
//! ```
//! use bayspace_contracts::region::Region;
//!
//! let exporter: Region = "mainland:shenzhen".parse()?;
//! assert!(exporter.is_in_gba());
//! assert!("mainland:shenzen".parse::<Region>().is_err());
//! # Ok::<(), bayspace_contracts::region::RegionError>(())
//! ```

pub mod agreement;
pub mod classification;
pub mod compliance;
pub mod descriptor;
pub mod dsp;
pub mod filing;
pub mod ledger;
pub mod negotiation;
pub mod policy;
pub mod region;
pub mod signing;
pub mod transfer;
