//! The usage policy data model: a subset of ODRL 2.2 with the constraints
//! the data space needs.

use serde::{Deserialize, Serialize};
use time::{Date, OffsetDateTime};

use crate::region::Region;

/// A usage policy attached to an offer and, once agreed, to an agreement.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default)]
    pub permissions: Vec<Permission>,
    #[serde(default)]
    pub prohibitions: Vec<Prohibition>,
    /// Duties that bind the assignee whatever it does with the data.
    #[serde(default)]
    pub obligations: Vec<Duty>,
}

/// What a rule is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Use the data (ODRL `use`).
    Use,
    /// Pass the data on to a third party (ODRL `distribute`).
    Distribute,
}

/// What a duty requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DutyAction {
    /// Delete the data (ODRL `delete`), by the date a retention constraint
    /// gives.
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Permission {
    pub action: Action,
    #[serde(default)]
    pub constraints: Vec<Constraint>,
    #[serde(default)]
    pub duties: Vec<Duty>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prohibition {
    pub action: Action,
    #[serde(default)]
    pub constraints: Vec<Constraint>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Duty {
    pub action: DutyAction,
    #[serde(default)]
    pub constraints: Vec<Constraint>,
}

/// Which recipient regions a constraint allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RegionSet {
    /// Any of these regions.
    AnyOf(Vec<Region>),
    /// The nine Mainland GBA cities, Hong Kong and Macao.
    GbaOnly,
}

/// A purpose term, such as `academic-research`: lower-case ASCII letters,
/// digits and inner `-`, 1 to 64 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Purpose(String);

impl Purpose {
    pub const MAX_LEN: usize = 64;

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Purpose {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        let ok = !s.is_empty()
            && s.len() <= Self::MAX_LEN
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-');
        if ok {
            Ok(Purpose(s))
        } else {
            Err(format!(
                "bad purpose `{s}`: expected 1 to 64 lower-case letters, digits or inner `-`"
            ))
        }
    }
}

impl std::str::FromStr for Purpose {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Purpose::try_from(s.to_owned())
    }
}

impl From<Purpose> for String {
    fn from(p: Purpose) -> String {
        p.0
    }
}

impl std::fmt::Display for Purpose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One constraint on a rule. ODRL's left operands and operators, fixed to
/// the forms the data space uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "left-operand")]
pub enum Constraint {
    /// `purpose isAnyOf [...]`.
    Purpose { is_any_of: Vec<Purpose> },
    /// `recipient region isAnyOf [...]`, or the GBA-only shorthand.
    RecipientRegion { allowed: RegionSet },
    /// `dateTime` within a window; either end may be open.
    DateTime {
        #[serde(default, with = "time::serde::rfc3339::option")]
        not_before: Option<OffsetDateTime>,
        #[serde(default, with = "time::serde::rfc3339::option")]
        not_after: Option<OffsetDateTime>,
    },
    /// `count lteq N`: how many times the data may be released.
    Count { lteq: u64 },
    /// Retention: the data must be deleted by this date (inclusive).
    Retention { delete_by: Date },
    /// Onward transfer to a recipient outside the GBA is prohibited.
    OnwardTransferOutsideGbaProhibited,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constraints_have_a_readable_serde_form() {
        let c = Constraint::Retention {
            delete_by: time::macros::date!(2027 - 06 - 30),
        };
        let s = serde_json::to_string(&c).unwrap();
        assert_eq!(
            s,
            r#"{"left-operand":"retention","delete_by":"2027-06-30"}"#
        );
        let back: Constraint = serde_json::from_str(&s).unwrap();
        assert_eq!(back, c);
        assert!(serde_json::from_str::<Purpose>("\"Research\"").is_err());
    }
}
