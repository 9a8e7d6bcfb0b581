//! The cross-border rulebook and the decision procedure of COMPLIANCE.md.

mod outcome;

pub use outcome::{Basis, Blocker, Exemption, GbaVariant, Obligation, Route};
