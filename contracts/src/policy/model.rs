//! The usage policy data model: a subset of ODRL 2.2 with the constraints
//! the data space needs.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime};

use crate::region::{GbaCity, MainlandCity, Region, RegionError};

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

/// Why a purpose term was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad purpose `{0}`: expected 1 to 64 lower-case letters, digits or inner `-`")]
pub struct PurposeError(pub String);

impl TryFrom<String> for Purpose {
    type Error = PurposeError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        if crate::classification::is_term(&s, Self::MAX_LEN) {
            Ok(Purpose(s))
        } else {
            Err(PurposeError(s))
        }
    }
}

impl std::str::FromStr for Purpose {
    type Err = PurposeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Purpose::try_from(s.to_owned())
    }
}

impl From<Purpose> for String {
    fn from(p: Purpose) -> String {
        p.0
    }
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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

impl Action {
    /// The ODRL name, as users write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Use => "use",
            Action::Distribute => "distribute",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for DutyAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DutyAction::Delete => f.write_str("delete"),
        }
    }
}

/// Why a list of recipient regions given on a command line was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegionSetError {
    #[error("no recipient region given: name at least one region, or `gba`")]
    Empty,
    #[error("recipient region #{position}: {source}")]
    BadRegion {
        /// 1-based, as the user counts the arguments.
        position: usize,
        source: RegionError,
    },
}

impl RegionSet {
    /// The keyword that stands for the whole GBA in [`RegionSet::from_args`].
    pub const GBA_KEYWORD: &'static str = "gba";

    pub fn contains(&self, region: &Region) -> bool {
        match self {
            RegionSet::AnyOf(list) => list.contains(region),
            RegionSet::GbaOnly => region.is_in_gba(),
        }
    }

    /// Parses recipient regions as a user lists them (`hk`,
    /// `mainland:shenzhen`, `foreign:de`, or `gba` for the whole GBA).
    ///
    /// `gba` alone becomes the [`RegionSet::GbaOnly`] shorthand; mixed with
    /// other regions it is spelt out as the eleven GBA regions, so that one
    /// list can say "the GBA and Singapore". Repeats are dropped.
    pub fn from_args<S: AsRef<str>>(
        args: impl IntoIterator<Item = S>,
    ) -> Result<RegionSet, RegionSetError> {
        let mut gba = false;
        let mut others: Vec<Region> = Vec::new();
        for (i, arg) in args.into_iter().enumerate() {
            let arg = arg.as_ref();
            if arg == Self::GBA_KEYWORD {
                gba = true;
                continue;
            }
            let region: Region = arg.parse().map_err(|source| RegionSetError::BadRegion {
                position: i + 1,
                source,
            })?;
            if !others.contains(&region) {
                others.push(region);
            }
        }
        match (gba, others.is_empty()) {
            (false, true) => Err(RegionSetError::Empty),
            (true, true) => Ok(RegionSet::GbaOnly),
            (false, false) => Ok(RegionSet::AnyOf(others)),
            (true, false) => {
                let mut all: Vec<Region> = GbaCity::ALL
                    .iter()
                    .map(|c| Region::Mainland(MainlandCity::Gba(*c)))
                    .chain([Region::HongKong, Region::Macao])
                    .collect();
                all.extend(others.into_iter().filter(|r| !r.is_in_gba()));
                Ok(RegionSet::AnyOf(all))
            }
        }
    }
}

impl fmt::Display for RegionSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegionSet::AnyOf(list) => write_list(f, list),
            RegionSet::GbaOnly => f.write_str("the GBA (its nine Mainland cities, hk and macao)"),
        }
    }
}

/// Writes `a, b, c`, or `(none)` for an empty list so a message never ends
/// in a dangling colon.
pub(crate) fn write_list<T: fmt::Display>(f: &mut fmt::Formatter<'_>, items: &[T]) -> fmt::Result {
    if items.is_empty() {
        return f.write_str("(none)");
    }
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{item}")?;
    }
    Ok(())
}

/// RFC 3339 when the instant has that form; `time`'s own rendering for the
/// instants RFC 3339 cannot express (years past 9999, second offsets).
pub(crate) fn fmt_instant(t: &OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

impl Constraint {
    /// The left operand's name, as in the serde form and error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Constraint::Purpose { .. } => "purpose",
            Constraint::RecipientRegion { .. } => "recipient-region",
            Constraint::DateTime { .. } => "date-time",
            Constraint::Count { .. } => "count",
            Constraint::Retention { .. } => "retention",
            Constraint::OnwardTransferOutsideGbaProhibited => {
                "onward-transfer-outside-gba-prohibited"
            }
        }
    }
}

/// A condition in words, for refusal messages ("`use` is prohibited when
/// ...") and for showing an offer to a researcher.
impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Constraint::Purpose { is_any_of } => {
                f.write_str("the purpose is one of ")?;
                write_list(f, is_any_of)
            }
            Constraint::RecipientRegion { allowed } => match allowed {
                RegionSet::AnyOf(list) => {
                    f.write_str("the recipient is in one of ")?;
                    write_list(f, list)
                }
                RegionSet::GbaOnly => write!(f, "the recipient is in {allowed}"),
            },
            Constraint::DateTime {
                not_before,
                not_after,
            } => match (not_before, not_after) {
                (Some(a), Some(b)) => write!(
                    f,
                    "the time is from {} to {}",
                    fmt_instant(a),
                    fmt_instant(b)
                ),
                (Some(a), None) => write!(f, "the time is from {} on", fmt_instant(a)),
                (None, Some(b)) => write!(f, "the time is up to {}", fmt_instant(b)),
                (None, None) => f.write_str("at any time"),
            },
            Constraint::Count { lteq } => write!(f, "at most {lteq} releases are made"),
            Constraint::Retention { delete_by } => {
                write!(f, "the data is deleted by the end of {delete_by} (UTC)")
            }
            Constraint::OnwardTransferOutsideGbaProhibited => {
                f.write_str("onward transfer stays within the GBA")
            }
        }
    }
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

    #[test]
    fn a_whole_policy_round_trips() {
        let policy = Policy::offer(vec!["academic-research".parse().unwrap()])
            .recipients(RegionSet::AnyOf(vec![
                Region::HongKong,
                "foreign:sg".parse().unwrap(),
            ]))
            .valid_from(time::macros::datetime!(2026-01-01 0:00 +8))
            .use_limit(3)
            .delete_by(time::macros::date!(2027 - 06 - 30))
            .allow_onward_within_gba()
            .build()
            .unwrap();
        let json = serde_json::to_string(&policy).unwrap();
        assert!(
            json.contains(r#""not_before":"2026-01-01T00:00:00+08:00""#),
            "{json}"
        );
        assert!(json.contains(r#"{"left-operand":"onward-transfer-outside-gba-prohibited"}"#));
        assert_eq!(serde_json::from_str::<Policy>(&json).unwrap(), policy);
        let gba: Constraint =
            serde_json::from_str(r#"{"left-operand":"recipient-region","allowed":"gba-only"}"#)
                .unwrap();
        assert_eq!(
            gba,
            Constraint::RecipientRegion {
                allowed: RegionSet::GbaOnly
            }
        );
        assert!(
            serde_json::from_str::<Policy>(r#"{"permissions":[],"extra":1}"#).is_err(),
            "unknown fields must be refused"
        );
    }
}
