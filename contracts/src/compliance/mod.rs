//! The cross-border rulebook and the decision procedure of COMPLIANCE.md.
//!
//! ```
//! use bayspace_contracts::compliance::{assess, Route, Scenario};
//!
//! let scenario: Scenario = serde_json::from_str(r#"{
//!     "date": "2026-11-23",
//!     "exporter": { "region": "mainland:shenzhen" },
//!     "recipient": { "region": "hk" },
//!     "data": { "level": "general", "personal_individuals": 200000 },
//!     "records": { "pipia": true, "consent": true }
//! }"#)?;
//! let assessment = assess(&scenario);
//! assert_eq!(assessment.route, Route::GbaStandardContract);
//! assert!(assessment.allowed_now);
//! # Ok::<(), serde_json::Error>(())
//! ```

mod outcome;
mod procedure;
mod rulebook;
mod scenario;

pub use outcome::{Basis, Blocker, Exemption, GbaVariant, Obligation, Route};
pub use procedure::{Assessment, assess, assess_with};
pub use rulebook::{Rule, Rulebook, RulebookError, Thresholds, Validity};
pub use scenario::{
    Exporter, ExporterRegion, Ftz, Recipient, Records, Scenario, ScenarioError, YearToDate,
};
