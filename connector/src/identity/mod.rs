//! Who is who in the data space.
//!
//! - A node is its ed25519 key ([`NodeKey`]); the libp2p PeerId comes from
//!   the same key.
//! - The trust anchor ([`AuthorityKey`]) admits an institution's node with a
//!   [`MembershipCredential`] bound to its PeerId and IPv6 prefixes, and
//!   withdraws admissions with a [`RevocationList`].
//! - An admitted node vouches for its researchers with a
//!   [`ResearcherCredential`], which verifies only together with the
//!   institution's membership credential.
//!
//! File formats, validity rules and the verification order are documented
//! in `docs/IDENTITY.md`.

mod credential;
pub mod files;
mod forms;
mod key;
mod revocation;
mod signed;
mod verify;

pub use credential::{
    MEMBERSHIP_FORMAT, MemberRole, MembershipBody, MembershipCredential, Orcid, OrcidError,
    RESEARCHER_FORMAT, ResearcherBody, ResearcherCredential, ResearcherRole, RoleError,
};
pub use files::{FileError, Overwrite};
pub use forms::prefixes::parse as parse_prefix;
pub use forms::timestamp;
pub use key::{
    AUTHORITY_KEY_FILE, AUTHORITY_PUB_FILE, Anchor, AuthorityKey, KeyError, NodeKey,
    PUBLIC_KEY_FORMAT, PeerKeyError, SECRET_KEY_FORMAT, key_of_peer_id,
};
pub use revocation::{REVOCATION_FORMAT, RevocationBody, RevocationList};
pub use signed::{InvalidBody, RecordBody, SignError, Signed};
pub use verify::{Checks, ResearcherChecks, VerifyError};

/// Re-exported so users of the identity API need not depend on libp2p.
pub use libp2p_identity::PeerId;

#[cfg(test)]
mod tests;
