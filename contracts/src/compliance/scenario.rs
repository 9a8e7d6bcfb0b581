//! The facts of one proposed transfer, in the JSON shape `bayspace assess`
//! reads. Every level refuses unknown fields, so a misspelt record such as
//! `"pipa": true` is an error instead of a silently missing approval.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::Date;

use super::outcome::Basis;
use crate::classification::DataProfile;
use crate::region::{MainlandCity, Region, RegionError};

/// A proposed transfer, as of `date`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// The assessment date: approvals on record must be valid on it.
    pub date: Date,
    pub exporter: Exporter,
    pub recipient: Recipient,
    pub data: DataProfile,
    #[serde(default)]
    pub basis: Basis,
    #[serde(default)]
    pub year_to_date: YearToDate,
    #[serde(default)]
    pub records: Records,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exporter {
    pub region: ExporterRegion,
    /// Whether the exporter is a critical information infrastructure operator.
    #[serde(default)]
    pub ciio: bool,
    #[serde(default)]
    pub ftz: Option<Ftz>,
}

/// The free-trade zone the exporter is registered in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ftz {
    pub zone: String,
    /// Whether the data is on that zone's negative list.
    pub on_negative_list: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipient {
    pub region: Region,
}

/// Individuals this exporter has already sent out of the Mainland on national
/// routes since 1 January; the node keeps this ledger.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct YearToDate {
    #[serde(default)]
    pub personal: u64,
    #[serde(default)]
    pub sensitive: u64,
}

/// What is already on record for this transfer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Records {
    /// A personal information protection impact assessment.
    #[serde(default)]
    pub pipia: bool,
    /// Notice given and separate consent obtained.
    #[serde(default)]
    pub consent: bool,
    /// The last day on which the CAC security assessment approval is valid.
    #[serde(default)]
    pub security_assessment_valid_until: Option<Date>,
    #[serde(default)]
    pub macao_authorisation: bool,
    #[serde(default)]
    pub hgr_filing: bool,
    #[serde(default)]
    pub hgr_security_review: bool,
}

/// A region a node can export from: anywhere but `foreign:*`, since every
/// node belongs to a GBA institution. Holding this type instead of a plain
/// [`Region`] keeps the decision procedure total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "Region", into = "Region")]
pub enum ExporterRegion {
    Mainland(MainlandCity),
    HongKong,
    Macao,
}

impl ExporterRegion {
    pub fn region(self) -> Region {
        self.into()
    }
}

/// Why a scenario was refused beyond what its JSON shape already checks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScenarioError {
    #[error(
        "`{0}` cannot be the exporter's region: expected mainland:<city>, hk or macao, since a node belongs to a GBA institution"
    )]
    ForeignExporter(Region),
    #[error("bad exporter region: {0}")]
    Region(#[from] RegionError),
}

impl ScenarioError {
    /// The input field at fault, in the dotted form of the JSON interface.
    pub fn field(&self) -> &'static str {
        match self {
            ScenarioError::ForeignExporter(_) | ScenarioError::Region(_) => "exporter.region",
        }
    }
}

impl TryFrom<Region> for ExporterRegion {
    type Error = ScenarioError;

    fn try_from(region: Region) -> Result<Self, Self::Error> {
        match region {
            Region::Mainland(city) => Ok(ExporterRegion::Mainland(city)),
            Region::HongKong => Ok(ExporterRegion::HongKong),
            Region::Macao => Ok(ExporterRegion::Macao),
            Region::Foreign(_) => Err(ScenarioError::ForeignExporter(region)),
        }
    }
}

impl From<ExporterRegion> for Region {
    fn from(r: ExporterRegion) -> Region {
        match r {
            ExporterRegion::Mainland(city) => Region::Mainland(city),
            ExporterRegion::HongKong => Region::HongKong,
            ExporterRegion::Macao => Region::Macao,
        }
    }
}

impl FromStr for ExporterRegion {
    type Err = ScenarioError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<Region>()?.try_into()
    }
}

impl fmt::Display for ExporterRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.region().fmt(f)
    }
}
