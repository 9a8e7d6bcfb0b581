//! The data profile of a dataset or of one transfer: what the cross-border
//! rules need to know about the data itself.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The level of GB/T 43697-2024. Data is `important` only once an authority
/// has notified or published it as such.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataLevel {
    General,
    Important,
    Core,
}

impl DataLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            DataLevel::General => "general",
            DataLevel::Important => "important",
            DataLevel::Core => "core",
        }
    }
}

impl fmt::Display for DataLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DataLevel {
    type Err = ClassificationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "general" => Ok(DataLevel::General),
            "important" => Ok(DataLevel::Important),
            "core" => Ok(DataLevel::Core),
            _ => Err(ClassificationError::UnknownLevel(s.to_owned())),
        }
    }
}

/// The sector tags the rule engine acts on. Other tags are carried along.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KnownCategory {
    /// Human genetic resource information.
    Genomic,
    Health,
    Vehicle,
    RemoteSensing,
}

/// Whether `s` is a vocabulary term: 1 to `max` bytes of lower-case ASCII
/// letters, digits and inner `-`. Tags and purposes share this shape so
/// they compare byte for byte across members and never need normalising.
pub(crate) fn is_term(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A sector tag: lower-case ASCII letters, digits and `-`, 1 to 64 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Category(String);

impl Category {
    pub const MAX_LEN: usize = 64;

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The engine's meaning of this tag, if it has one.
    pub fn known(&self) -> Option<KnownCategory> {
        match self.0.as_str() {
            "genomic" => Some(KnownCategory::Genomic),
            "health" => Some(KnownCategory::Health),
            "vehicle" => Some(KnownCategory::Vehicle),
            "remote-sensing" => Some(KnownCategory::RemoteSensing),
            _ => None,
        }
    }
}

impl FromStr for Category {
    type Err = ClassificationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if is_term(s, Self::MAX_LEN) {
            Ok(Category(s.to_owned()))
        } else {
            Err(ClassificationError::BadCategory(s.to_owned()))
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Category {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Category {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What the rules need to know about the data in a transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataProfile {
    pub level: DataLevel,
    /// Individuals whose non-sensitive personal information is included.
    #[serde(default)]
    pub personal_individuals: u64,
    /// Individuals whose sensitive personal information is included.
    #[serde(default)]
    pub sensitive_individuals: u64,
    #[serde(default)]
    pub categories: Vec<Category>,
    /// Collected or generated outside the Mainland, with no domestic personal
    /// or important data added.
    #[serde(default)]
    pub collected_abroad: bool,
}

impl DataProfile {
    /// True when any personal information is included.
    pub fn has_personal_information(&self) -> bool {
        self.personal_individuals > 0 || self.sensitive_individuals > 0
    }

    /// Individuals of either kind, saturating rather than wrapping.
    pub fn total_individuals(&self) -> u64 {
        self.personal_individuals
            .saturating_add(self.sensitive_individuals)
    }

    pub fn has_category(&self, known: KnownCategory) -> bool {
        self.categories.iter().any(|c| c.known() == Some(known))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClassificationError {
    #[error("unknown data level `{0}`: expected general, important or core")]
    UnknownLevel(String),
    #[error("bad category `{0}`: expected 1 to 64 lower-case letters, digits or inner `-`")]
    BadCategory(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_strictly() {
        assert_eq!("core".parse::<DataLevel>().unwrap(), DataLevel::Core);
        let e = "Important".parse::<DataLevel>().unwrap_err();
        assert!(e.to_string().contains("`Important`"));
    }

    #[test]
    fn categories() {
        let g: Category = "genomic".parse().unwrap();
        assert_eq!(g.known(), Some(KnownCategory::Genomic));
        let x: Category = "marine-biology".parse().unwrap();
        assert_eq!(x.known(), None);
        for bad in ["", "Health", "-x", "x-", "a b", &"a".repeat(65)] {
            assert!(bad.parse::<Category>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn profile_refuses_negative_counts_and_unknown_fields() {
        let e =
            serde_json::from_str::<DataProfile>(r#"{"level":"general","personal_individuals":-1}"#)
                .unwrap_err();
        assert!(e.to_string().contains("-1"));
        assert!(serde_json::from_str::<DataProfile>(r#"{"level":"general","x":1}"#).is_err());
        let p: DataProfile = serde_json::from_str(r#"{"level":"general"}"#).unwrap();
        assert!(!p.has_personal_information());
    }

    #[test]
    fn totals_saturate() {
        let p = DataProfile {
            level: DataLevel::General,
            personal_individuals: u64::MAX,
            sensitive_individuals: 1,
            categories: vec![],
            collected_abroad: false,
        };
        assert_eq!(p.total_individuals(), u64::MAX);
    }
}
