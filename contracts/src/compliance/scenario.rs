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
    #[serde(with = "ymd")]
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
    #[serde(default, with = "ymd::option")]
    pub security_assessment_valid_until: Option<Date>,
    #[serde(default)]
    pub macao_authorisation: bool,
    #[serde(default)]
    pub hgr_filing: bool,
    #[serde(default)]
    pub hgr_security_review: bool,
    /// The last day on which the exporter's personal information export
    /// certificate is valid; it covers this dataset and recipient (the
    /// steward records it only where its scope does).
    #[serde(default, with = "ymd::option")]
    pub pi_certification_valid_until: Option<Date>,
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

/// Dates as `YYYY-MM-DD`, with an error that says so.
mod ymd {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _, ser::Error as _};
    use time::Date;
    use time::format_description::BorrowedFormatItem;
    use time::macros::format_description;

    const FORMAT: &[BorrowedFormatItem<'static>] = format_description!("[year]-[month]-[day]");

    pub fn serialize<S: Serializer>(date: &Date, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&date.format(FORMAT).map_err(S::Error::custom)?)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Date, D::Error> {
        let text = String::deserialize(d)?;
        Date::parse(&text, FORMAT).map_err(|e| {
            D::Error::custom(format!(
                "expected a date as YYYY-MM-DD, found `{text}` ({e})"
            ))
        })
    }

    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(date: &Option<Date>, s: S) -> Result<S::Ok, S::Error> {
            match date {
                Some(d) => super::serialize(d, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Date>, D::Error> {
            #[derive(Deserialize)]
            struct Wrapped(#[serde(with = "super")] Date);
            Ok(Option::<Wrapped>::deserialize(d)?.map(|Wrapped(date)| date))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn minimal() -> Value {
        json!({
            "date": "2026-11-23",
            "exporter": { "region": "mainland:shenzhen" },
            "recipient": { "region": "hk" },
            "data": { "level": "general" }
        })
    }

    /// Parses the way `bayspace assess` does, returning the field path and
    /// the message of a failure.
    fn parse(text: &str) -> Result<Scenario, (String, String)> {
        let mut de = serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(&mut de)
            .map_err(|e| (e.path().to_string(), e.inner().to_string()))
    }

    fn parse_with(pointer: &str, value: Value) -> Result<Scenario, (String, String)> {
        let mut v = minimal();
        *v.pointer_mut(pointer).unwrap() = value;
        parse(&v.to_string())
    }

    #[test]
    fn documented_defaults() {
        let s = parse(&minimal().to_string()).unwrap();
        assert_eq!(s.date, time::macros::date!(2026 - 11 - 23));
        assert_eq!(
            s.exporter.region,
            ExporterRegion::Mainland(MainlandCity::Gba(crate::region::GbaCity::Shenzhen))
        );
        assert!(!s.exporter.ciio);
        assert_eq!(s.exporter.ftz, None);
        assert!(s.data.categories.is_empty() && !s.data.collected_abroad);
        assert_eq!(s.basis, Basis::Consent);
        assert_eq!(s.year_to_date, YearToDate::default());
        assert_eq!(s.records, Records::default());
        assert_eq!(s.records.security_assessment_valid_until, None);
        assert_eq!(s.records.pi_certification_valid_until, None);
    }

    #[test]
    fn date_is_required_and_strict() {
        let mut v = minimal();
        v.as_object_mut().unwrap().remove("date");
        let (_, msg) = parse(&v.to_string()).unwrap_err();
        assert!(msg.contains("missing field `date`"), "{msg}");
        for bad in [
            "2026-02-30",
            "23/11/2026",
            "2026-11-23T00:00:00Z",
            "2026-1-5",
        ] {
            let (path, msg) = parse_with("/date", json!(bad)).unwrap_err();
            assert_eq!(path, "date", "{bad}");
            assert!(msg.contains("expected a date as YYYY-MM-DD"), "{msg}");
        }
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("/extra", json!(1), "extra", "unknown field `extra`"),
            (
                "/exporter/cio",
                json!(true),
                "exporter.cio",
                "unknown field `cio`",
            ),
            (
                "/records",
                json!({"pipa": true}),
                "records.pipa",
                "unknown field `pipa`",
            ),
            (
                "/year_to_date",
                json!({"personal": 1, "x": 0}),
                "year_to_date.x",
                "unknown field `x`",
            ),
            (
                "/data/personal_individuals",
                json!(-1),
                "data.personal_individuals",
                "-1",
            ),
            (
                "/year_to_date",
                json!({"sensitive": -5}),
                "year_to_date.sensitive",
                "-5",
            ),
            (
                "/recipient/region",
                json!("mainland:shenzen"),
                "recipient.region",
                "shenzen",
            ),
            (
                "/recipient/region",
                json!("HK"),
                "recipient.region",
                "unknown region",
            ),
            (
                "/exporter/region",
                json!("foreign:de"),
                "exporter.region",
                "`foreign:de` cannot be the exporter's region",
            ),
            (
                "/exporter/region",
                json!("macau"),
                "exporter.region",
                "unknown region",
            ),
            ("/basis", json!("consentt"), "basis", "consentt"),
            ("/data/level", json!("secret"), "data.level", "secret"),
            (
                "/exporter/ftz",
                json!({"zone": "qianhai"}),
                "exporter.ftz",
                "on_negative_list",
            ),
            (
                "/records",
                json!({"security_assessment_valid_until": "soon"}),
                "records.security_assessment_valid_until",
                "",
            ),
            (
                "/records",
                json!({"pi_certification_valid_until": "2028-02-30"}),
                "records.pi_certification_valid_until",
                "expected a date as YYYY-MM-DD, found `2028-02-30`",
            ),
            (
                "/records",
                json!({"pi_certification_valid_until": "30/06/2028"}),
                "records.pi_certification_valid_until",
                "expected a date as YYYY-MM-DD",
            ),
            (
                "/records",
                json!({"pi_certification_valid_until": 20280630}),
                "records.pi_certification_valid_until",
                "",
            ),
        ];
        for (pointer, value, path, msg) in cases {
            let mut v = minimal();
            match v.pointer_mut(pointer) {
                Some(slot) => *slot = value,
                None => {
                    let (parent, key) = pointer.rsplit_once('/').unwrap();
                    let obj = if parent.is_empty() {
                        &mut v
                    } else {
                        v.pointer_mut(parent).unwrap()
                    };
                    obj.as_object_mut().unwrap().insert(key.to_owned(), value);
                }
            }
            let (got_path, got_msg) = parse(&v.to_string()).unwrap_err();
            assert_eq!(got_path, path, "{pointer}: {got_msg}");
            assert!(got_msg.contains(msg), "{pointer}: {got_msg}");
        }
    }

    #[test]
    fn exporter_region_refuses_foreign() {
        let e = "foreign:de".parse::<ExporterRegion>().unwrap_err();
        assert!(matches!(e, ScenarioError::ForeignExporter(_)));
        assert_eq!(e.field(), "exporter.region");
        assert!(matches!(
            "mainland:shenzen".parse::<ExporterRegion>(),
            Err(ScenarioError::Region(RegionError::UnknownCity(_)))
        ));
        for ok in ["mainland:other", "hk", "macao", "mainland:jiangmen"] {
            let r: ExporterRegion = ok.parse().unwrap();
            assert_eq!(r.to_string(), ok);
            assert_eq!(Region::from(r).to_string(), ok);
        }
    }

    #[test]
    fn round_trips_through_json() {
        let mut v = minimal();
        v["records"] = json!({"security_assessment_valid_until": "2027-01-31", "pipia": true,
                              "pi_certification_valid_until": "2028-06-30"});
        v["exporter"]["ftz"] = json!({"zone": "hengqin", "on_negative_list": true});
        let s = parse(&v.to_string()).unwrap();
        let out = serde_json::to_value(&s).unwrap();
        assert_eq!(out["date"], "2026-11-23");
        assert_eq!(
            out["records"]["security_assessment_valid_until"],
            "2027-01-31"
        );
        assert_eq!(out["records"]["pi_certification_valid_until"], "2028-06-30");
        assert_eq!(out["exporter"]["region"], "mainland:shenzhen");
        assert_eq!(serde_json::from_value::<Scenario>(out).unwrap(), s);
    }
}
