//! Where an institution or a recipient is, in the terms the cross-border
//! rules care about.
//!
//! The textual forms are `mainland:<city>` (one of the nine GBA cities, or
//! `other` for the Mainland outside the GBA), `hk`, `macao` and
//! `foreign:<iso-3166 alpha-2>`. Parsing is strict on purpose: a misspelt
//! city must be an error, never a silent "Mainland outside the GBA".

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The civil time of every GBA jurisdiction: Mainland China (Asia/Shanghai),
/// Hong Kong and Macao all keep UTC+8 with no daylight saving, so calendar
/// days in rules (retention, year to date, filing deadlines) use this offset.
pub const GBA_UTC_OFFSET: time::UtcOffset = time::macros::offset!(+8);

/// The nine Mainland cities of the Greater Bay Area.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GbaCity {
    Guangzhou,
    Shenzhen,
    Zhuhai,
    Foshan,
    Huizhou,
    Dongguan,
    Zhongshan,
    Jiangmen,
    Zhaoqing,
}

impl GbaCity {
    /// All nine, in the order the GBA outline plan lists them.
    pub const ALL: [GbaCity; 9] = [
        GbaCity::Guangzhou,
        GbaCity::Shenzhen,
        GbaCity::Zhuhai,
        GbaCity::Foshan,
        GbaCity::Huizhou,
        GbaCity::Dongguan,
        GbaCity::Zhongshan,
        GbaCity::Jiangmen,
        GbaCity::Zhaoqing,
    ];

    /// The lower-case name used in region strings.
    pub fn as_str(self) -> &'static str {
        match self {
            GbaCity::Guangzhou => "guangzhou",
            GbaCity::Shenzhen => "shenzhen",
            GbaCity::Zhuhai => "zhuhai",
            GbaCity::Foshan => "foshan",
            GbaCity::Huizhou => "huizhou",
            GbaCity::Dongguan => "dongguan",
            GbaCity::Zhongshan => "zhongshan",
            GbaCity::Jiangmen => "jiangmen",
            GbaCity::Zhaoqing => "zhaoqing",
        }
    }
}

impl fmt::Display for GbaCity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A place in the Mainland: one of the GBA cities, or anywhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MainlandCity {
    Gba(GbaCity),
    /// The Mainland outside the nine GBA cities.
    Other,
}

/// An ISO 3166-1 alpha-2 code, stored lower-case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CountryCode([u8; 2]);

impl CountryCode {
    pub fn as_str(&self) -> &str {
        // Invariant: both bytes are checked to be ASCII lower-case letters on
        // construction, so they are valid UTF-8.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

/// A region as the rules see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Region {
    Mainland(MainlandCity),
    HongKong,
    Macao,
    Foreign(CountryCode),
}

impl Region {
    pub fn is_mainland(&self) -> bool {
        matches!(self, Region::Mainland(_))
    }

    /// The GBA city, when this is one of the nine Mainland GBA cities.
    pub fn gba_city(&self) -> Option<GbaCity> {
        match self {
            Region::Mainland(MainlandCity::Gba(c)) => Some(*c),
            _ => None,
        }
    }

    /// True for the nine Mainland cities, Hong Kong and Macao.
    pub fn is_in_gba(&self) -> bool {
        matches!(
            self,
            Region::Mainland(MainlandCity::Gba(_)) | Region::HongKong | Region::Macao
        )
    }

    /// Whether a node can belong here: foreign regions are recipients only.
    pub fn can_export(&self) -> bool {
        !matches!(self, Region::Foreign(_))
    }
}

/// Why a region string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegionError {
    #[error(
        "unknown region `{0}`: expected mainland:<city>, hk, macao or foreign:<iso-3166 alpha-2>"
    )]
    UnknownForm(String),
    #[error(
        "unknown Mainland city `{0}`: expected one of guangzhou, shenzhen, zhuhai, foshan, huizhou, dongguan, zhongshan, jiangmen, zhaoqing, or `other`"
    )]
    UnknownCity(String),
    #[error("bad country code `{0}`: expected two lower-case letters (ISO 3166-1 alpha-2)")]
    BadCountryCode(String),
    #[error("`foreign:{0}` is not foreign: use {1}")]
    NotForeign(String, &'static str),
}

impl FromStr for Region {
    type Err = RegionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "hk" => return Ok(Region::HongKong),
            "macao" => return Ok(Region::Macao),
            _ => {}
        }
        if let Some(city) = s.strip_prefix("mainland:") {
            if city == "other" {
                return Ok(Region::Mainland(MainlandCity::Other));
            }
            return GbaCity::ALL
                .iter()
                .find(|c| c.as_str() == city)
                .map(|c| Region::Mainland(MainlandCity::Gba(*c)))
                .ok_or_else(|| RegionError::UnknownCity(city.to_owned()));
        }
        if let Some(cc) = s.strip_prefix("foreign:") {
            let bytes = cc.as_bytes();
            if bytes.len() != 2 || !bytes.iter().all(u8::is_ascii_lowercase) {
                return Err(RegionError::BadCountryCode(cc.to_owned()));
            }
            let hint = match cc {
                "cn" => Some("mainland:<city>"),
                "hk" => Some("hk"),
                "mo" => Some("macao"),
                _ => None,
            };
            if let Some(hint) = hint {
                return Err(RegionError::NotForeign(cc.to_owned(), hint));
            }
            return Ok(Region::Foreign(CountryCode([bytes[0], bytes[1]])));
        }
        Err(RegionError::UnknownForm(s.to_owned()))
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Region::Mainland(MainlandCity::Gba(c)) => write!(f, "mainland:{c}"),
            Region::Mainland(MainlandCity::Other) => f.write_str("mainland:other"),
            Region::HongKong => f.write_str("hk"),
            Region::Macao => f.write_str("macao"),
            Region::Foreign(cc) => write!(f, "foreign:{}", cc.as_str()),
        }
    }
}

impl Serialize for Region {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Region {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_form() {
        let mut all: Vec<String> = GbaCity::ALL
            .iter()
            .map(|c| format!("mainland:{c}"))
            .collect();
        all.extend(["mainland:other", "hk", "macao", "foreign:de"].map(String::from));
        for s in all {
            let r: Region = s.parse().unwrap();
            assert_eq!(r.to_string(), s);
        }
    }

    #[test]
    fn refuses_typos_and_names_them() {
        let e = "mainland:shenzen".parse::<Region>().unwrap_err();
        assert_eq!(e, RegionError::UnknownCity("shenzen".into()));
        assert!(e.to_string().contains("`shenzen`"));
        for bad in [
            "HK",
            "hongkong",
            "mainland",
            "mainland:",
            "foreign:DE",
            "foreign:deu",
            "",
        ] {
            assert!(bad.parse::<Region>().is_err(), "{bad} accepted");
        }
        assert!(matches!(
            "foreign:hk".parse::<Region>(),
            Err(RegionError::NotForeign(_, "hk"))
        ));
    }

    #[test]
    fn gba_membership() {
        let sz: Region = "mainland:shenzhen".parse().unwrap();
        let other: Region = "mainland:other".parse().unwrap();
        assert!(sz.is_in_gba() && Region::HongKong.is_in_gba() && Region::Macao.is_in_gba());
        assert!(!other.is_in_gba());
        assert!(!"foreign:de".parse::<Region>().unwrap().can_export());
    }

    #[test]
    fn serde_uses_the_string_form() {
        let r: Region = serde_json::from_str("\"macao\"").unwrap();
        assert_eq!(r, Region::Macao);
        assert_eq!(serde_json::to_string(&r).unwrap(), "\"macao\"");
        let e = serde_json::from_str::<Region>("\"mainland:shenzen\"").unwrap_err();
        assert!(e.to_string().contains("shenzen"));
    }
}
