//! The vocabulary of a compliance decision: routes, exemptions, blockers and
//! obligations. The string forms are the ones COMPLIANCE.md and
//! `bayspace assess` use.

use serde::{Deserialize, Serialize};

/// The legal route a cross-border transfer must take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Route {
    Prohibited,
    SecurityAssessment,
    StandardContract,
    /// A personal information export certification held by the exporter.
    Certification,
    GbaStandardContract,
    MacaoAuthorisation,
    Exempt,
}

/// Which GBA Standard Contract applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GbaVariant {
    MainlandHk,
    MainlandMacao,
}

/// Why no approval route is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Exemption {
    NotCrossBorder,
    NoPersonalOrImportantData,
    CollectedAbroad,
    ContractNecessity,
    HrManagement,
    Emergency,
    FtzNotOnNegativeList,
    BelowThreshold,
    NoStatutoryRestriction,
}

/// What must be on record before any release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Blocker {
    CoreData,
    SecurityAssessmentApproval,
    MacaoAuthorisation,
    Pipia,
    Consent,
    HgrFiling,
    HgrSecurityReview,
}

impl Blocker {
    /// Every blocker, in the order an assessment lists them.
    pub const ALL: [Blocker; 7] = [
        Blocker::CoreData,
        Blocker::SecurityAssessmentApproval,
        Blocker::MacaoAuthorisation,
        Blocker::Pipia,
        Blocker::Consent,
        Blocker::HgrFiling,
        Blocker::HgrSecurityReview,
    ];

    /// Its rule id in the rulebook, as assessments cite it.
    pub fn rule_id(self) -> String {
        super::rulebook::blocker_rule_id(self)
    }
}

/// A duty that follows from the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Obligation {
    NoticeAndSeparateConsent,
    Pipia,
    #[serde(rename = "filing-10-working-days")]
    Filing10WorkingDays,
    CertificationRenewal,
    NoOnwardTransferOutsideGba,
    #[serde(rename = "recipient-records-3-years")]
    RecipientRecords3Years,
    SecurityAssessmentRenewal,
    PdpoNotice,
    SectorCatalogueCheck,
}

impl Obligation {
    /// Every obligation, in the order an assessment lists them.
    pub const ALL: [Obligation; 9] = [
        Obligation::NoticeAndSeparateConsent,
        Obligation::Pipia,
        Obligation::Filing10WorkingDays,
        Obligation::CertificationRenewal,
        Obligation::NoOnwardTransferOutsideGba,
        Obligation::RecipientRecords3Years,
        Obligation::SecurityAssessmentRenewal,
        Obligation::PdpoNotice,
        Obligation::SectorCatalogueCheck,
    ];

    /// Its rule id in the rulebook, as assessments cite it.
    pub fn rule_id(self) -> String {
        super::rulebook::obligation_rule_id(self)
    }
}

/// The legal basis the exporter relies on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Basis {
    #[default]
    Consent,
    ContractNecessity,
    HrManagement,
    Emergency,
}

macro_rules! display_via_serde {
    ($($t:ty),*) => {$(
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                // Invariant: every variant of these unit enums serialises to a
                // JSON string, so the value is always a string.
                match serde_json::to_value(self) {
                    Ok(serde_json::Value::String(s)) => f.write_str(&s),
                    _ => Err(std::fmt::Error),
                }
            }
        }
    )*};
}
display_via_serde!(Route, GbaVariant, Exemption, Blocker, Obligation, Basis);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_forms_match_compliance_md() {
        assert_eq!(
            Route::GbaStandardContract.to_string(),
            "gba-standard-contract"
        );
        assert_eq!(GbaVariant::MainlandMacao.to_string(), "mainland-macao");
        assert_eq!(
            Exemption::FtzNotOnNegativeList.to_string(),
            "ftz-not-on-negative-list"
        );
        assert_eq!(
            Blocker::HgrSecurityReview.to_string(),
            "hgr-security-review"
        );
        assert_eq!(
            Obligation::Filing10WorkingDays.to_string(),
            "filing-10-working-days"
        );
        assert_eq!(
            Obligation::RecipientRecords3Years.to_string(),
            "recipient-records-3-years"
        );
        assert_eq!(Basis::ContractNecessity.to_string(), "contract-necessity");
        assert_eq!(Route::Certification.to_string(), "certification");
        assert_eq!(
            Obligation::CertificationRenewal.to_string(),
            "certification-renewal"
        );
    }
}
