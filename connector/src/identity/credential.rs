//! Membership credentials (the trust anchor admits an institution's node)
//! and researcher credentials (an institution vouches for a person).

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use bayspace_contracts::region::Region;
use bayspace_contracts::signing::SigningContext;
use ipnet::Ipv6Net;
use libp2p_identity::PeerId;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;

use super::forms;
use super::key::NodeKey;
use super::signed::{InvalidBody, RecordBody, SignError, Signed};

pub const MEMBERSHIP_FORMAT: &str = "bayspace/membership-credential/1";
pub const RESEARCHER_FORMAT: &str = "bayspace/researcher-credential/1";

/// A membership credential: the trust anchor admits one node of an
/// institution, bound to its PeerId and its IPv6 prefixes.
pub type MembershipCredential = Signed<MembershipBody>;

/// A researcher credential: an institution's node vouches for a person.
pub type ResearcherCredential = Signed<ResearcherBody>;

/// Parse error for a role name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role `{found}`: expected one of {expected}")]
pub struct RoleError {
    pub found: String,
    pub expected: &'static str,
}

/// Variants are declared in alphabetical order, so a role set (a
/// `BTreeSet`) serialises sorted by name, as the canonical form requires.
macro_rules! role_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = RoleError;
            fn from_str(s: &str) -> Result<Self, RoleError> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(RoleError {
                        found: s.to_owned(),
                        expected: concat!($($text, " "),+),
                    }),
                }
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

role_enum!(
    /// What a member node may do in the data space.
    MemberRole {
        Consumer => "consumer",
        Provider => "provider",
    }
);

role_enum!(
    /// What a person may do at their institution's node.
    ResearcherRole {
        Administrator => "administrator",
        Researcher => "researcher",
    }
);

/// The signed content of a membership credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MembershipBody {
    /// Unique per trust anchor; revocation lists name credentials by it.
    pub serial: u64,
    pub institution: String,
    pub region: Region,
    #[serde(with = "forms::peer_id")]
    pub peer_id: PeerId,
    /// The only networks the node may connect from.
    #[serde(with = "forms::prefixes")]
    pub prefixes: Vec<Ipv6Net>,
    pub roles: BTreeSet<MemberRole>,
    #[serde(with = "forms::timestamp")]
    pub not_before: OffsetDateTime,
    #[serde(with = "forms::timestamp")]
    pub not_after: OffsetDateTime,
}

/// The signed content of a researcher credential.
///
/// It names a person, not a key: researchers reach the data space through
/// their institution's node, which authenticates them and acts for them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResearcherBody {
    /// Stable identifier assigned by the institution (e.g. a staff number);
    /// agreements and the audit log name the researcher by it.
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orcid: Option<Orcid>,
    pub roles: BTreeSet<ResearcherRole>,
    /// The institution's node, whose key signs the credential.
    #[serde(with = "forms::peer_id")]
    pub issuer: PeerId,
    #[serde(with = "forms::timestamp")]
    pub not_before: OffsetDateTime,
    #[serde(with = "forms::timestamp")]
    pub not_after: OffsetDateTime,
}

fn check_text(field: &'static str, value: &str, max: usize) -> Result<(), InvalidBody> {
    let reason = if value.trim().is_empty() {
        "must not be empty"
    } else if value.trim() != value {
        "must not start or end with white space"
    } else if value.chars().count() > max {
        "is too long"
    } else if value.chars().any(char::is_control) {
        "must not contain control characters"
    } else {
        return Ok(());
    };
    Err(InvalidBody {
        field,
        reason: format!("{reason} (max {max} characters)"),
    })
}

fn check_window(nb: &OffsetDateTime, na: &OffsetDateTime) -> Result<(), InvalidBody> {
    if nb > na {
        return Err(InvalidBody {
            field: "not_after",
            reason: format!(
                "{} is before not_before {}",
                forms::timestamp::display(na),
                forms::timestamp::display(nb)
            ),
        });
    }
    Ok(())
}

fn check_nonempty<T>(field: &'static str, set: &[T]) -> Result<(), InvalidBody> {
    if set.is_empty() {
        return Err(InvalidBody {
            field,
            reason: "must not be empty".into(),
        });
    }
    Ok(())
}

impl RecordBody for MembershipBody {
    const FORMAT: &'static str = MEMBERSHIP_FORMAT;
    const CONTEXT: SigningContext = SigningContext::MembershipCredential;

    fn validate(&self) -> Result<(), InvalidBody> {
        check_text("institution", &self.institution, 200)?;
        if !self.region.can_export() {
            return Err(InvalidBody {
                field: "region",
                reason: format!(
                    "{} is a recipient region; a member node cannot be there",
                    self.region
                ),
            });
        }
        check_nonempty("prefixes", &self.prefixes)?;
        if self.roles.is_empty() {
            return Err(InvalidBody {
                field: "roles",
                reason: "must not be empty".into(),
            });
        }
        check_window(&self.not_before, &self.not_after)
    }
}

impl RecordBody for ResearcherBody {
    const FORMAT: &'static str = RESEARCHER_FORMAT;
    const CONTEXT: SigningContext = SigningContext::ResearcherCredential;

    fn validate(&self) -> Result<(), InvalidBody> {
        check_text("id", &self.id, 128)?;
        if self.id.chars().any(char::is_whitespace) {
            return Err(InvalidBody {
                field: "id",
                reason: format!("`{}` must not contain white space", self.id),
            });
        }
        check_text("name", &self.name, 200)?;
        if self.roles.is_empty() {
            return Err(InvalidBody {
                field: "roles",
                reason: "must not be empty".into(),
            });
        }
        check_window(&self.not_before, &self.not_after)
    }
}

impl Signed<ResearcherBody> {
    /// Sign as the institution's node, which must be the named issuer.
    pub fn issue(body: ResearcherBody, node: &NodeKey) -> Result<Self, SignError> {
        if body.issuer != node.peer_id() {
            return Err(InvalidBody {
                field: "issuer",
                reason: format!(
                    "{} is not this node's PeerId {}",
                    body.issuer,
                    node.peer_id()
                ),
            }
            .into());
        }
        Signed::sign(body, node.signing_key())
    }
}

/// An ORCID iD, `0000-0002-1825-0097`, with its ISO 7064 MOD 11-2 check
/// character verified.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Orcid(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrcidError {
    #[error("`{0}` is not an ORCID iD: expected 0000-0000-0000-000X (digits, last may be X)")]
    Form(String),
    #[error("`{0}` is not an ORCID iD: its check character should be {1}")]
    Checksum(String, char),
}

impl Orcid {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Orcid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Orcid {
    type Err = OrcidError;

    fn from_str(s: &str) -> Result<Self, OrcidError> {
        let form = || OrcidError::Form(s.to_owned());
        let bytes = s.as_bytes();
        if bytes.len() != 19 {
            return Err(form());
        }
        let mut digits = Vec::with_capacity(16);
        for (i, &b) in bytes.iter().enumerate() {
            match (i, b) {
                (4 | 9 | 14, b'-') => {}
                (4 | 9 | 14, _) => return Err(form()),
                (18, b'X') => digits.push(10),
                (_, b'0'..=b'9') => digits.push(u32::from(b - b'0')),
                _ => return Err(form()),
            }
        }
        let (body, check) = digits.split_at(15);
        let total = body.iter().fold(0u32, |t, d| ((t + d) * 2) % 11);
        let expected = (12 - total) % 11;
        if check != [expected] {
            let c = char::from_digit(expected, 10).unwrap_or('X');
            return Err(OrcidError::Checksum(s.to_owned(), c));
        }
        Ok(Orcid(s.to_owned()))
    }
}

impl Serialize for Orcid {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Orcid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orcid_checksum() {
        for ok in [
            "0000-0002-1825-0097",
            "0000-0001-5109-3700",
            "0000-0002-1694-233X",
        ] {
            assert_eq!(ok.parse::<Orcid>().unwrap().as_str(), ok);
        }
        assert_eq!(
            "0000-0002-1825-0098".parse::<Orcid>(),
            Err(OrcidError::Checksum("0000-0002-1825-0098".into(), '7'))
        );
        for bad in [
            "0000-0002-1825-009",
            "0000000218250097",
            "0000-0002-1825-00X7",
            "x000-0002-1825-0097",
            "0000-0002-1825-0097 ",
        ] {
            assert!(bad.parse::<Orcid>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn roles_parse_strictly() {
        assert_eq!("provider".parse::<MemberRole>(), Ok(MemberRole::Provider));
        let e = "Provider".parse::<MemberRole>().unwrap_err();
        assert!(e.to_string().contains("consumer provider"), "{e}");
        assert!("researcher".parse::<MemberRole>().is_err());
        assert_eq!(
            "administrator".parse::<ResearcherRole>(),
            Ok(ResearcherRole::Administrator)
        );
        let set: BTreeSet<MemberRole> = [MemberRole::Provider, MemberRole::Consumer].into();
        assert_eq!(
            serde_json::to_string(&set).unwrap(),
            r#"["consumer","provider"]"#
        );
        let set: BTreeSet<ResearcherRole> =
            [ResearcherRole::Researcher, ResearcherRole::Administrator].into();
        assert_eq!(
            serde_json::to_string(&set).unwrap(),
            r#"["administrator","researcher"]"#
        );
    }
}
