//! The IPv6 address plan of a Bayspace data space and what a node derives
//! from it.
//!
//! - [`plan`]: which prefixes belong to which institution, checked as a
//!   whole, and "which member is this remote address".
//! - [`listen`]: the listen addresses a node may use (libp2p multiaddrs in
//!   their string form, gRPC socket addresses), with the address classes
//!   that make sense for a server.
//! - [`nft`]: the nftables rule set that opens a node's ports to member
//!   prefixes only.
//!
//! ```
//! use bayspace_ipv6::plan::AddressPlan;
//!
//! let plan = AddressPlan::parse(r#"
//! name = "gba-research"
//! [[institution]]
//! name = "Shenzhen University"
//! region = "mainland:shenzhen"
//! prefixes = ["fd00:5a::/48"]
//! "#)?;
//! assert!(plan.contains("Shenzhen University", "fd00:5a::7".parse()?));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#[doc(hidden)]
pub mod fuzzing;
pub mod listen;
pub mod nft;
pub mod plan;

/// Re-exported so that callers name prefixes with the same type the plan
/// uses, without a dependency of their own.
pub use ipnet::IpNet;
