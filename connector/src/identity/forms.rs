//! The text forms of field types in signed records.
//!
//! Each form has exactly one spelling, and parsing refuses every other
//! spelling: a record is signed over its re-serialised body, so a value that
//! could be written two ways would make a valid signature fail (or worse,
//! make two different texts mean one signed record).

/// Timestamps: RFC 3339 in UTC with whole seconds, `2025-01-31T08:00:00Z`.
pub mod timestamp {
    use serde::{Deserialize, Deserializer, Serializer, de, ser};
    use time::format_description::BorrowedFormatItem;
    use time::macros::format_description;
    use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

    const FORMAT: &[BorrowedFormatItem<'static>] =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");

    /// `t` in UTC with the fraction of a second dropped: the only instants a
    /// record can hold.
    pub fn whole_seconds(t: OffsetDateTime) -> OffsetDateTime {
        let t = t.to_offset(UtcOffset::UTC);
        t.replace_nanosecond(0).unwrap_or(t)
    }

    /// The record form of `t`, or `None` if `t` is not UTC whole seconds.
    pub fn format(t: &OffsetDateTime) -> Option<String> {
        if t.offset() != UtcOffset::UTC || t.nanosecond() != 0 {
            return None;
        }
        t.format(FORMAT).ok()
    }

    /// For messages: the record form, or the debug form if `t` has none.
    pub fn display(t: &OffsetDateTime) -> String {
        format(t).unwrap_or_else(|| t.to_string())
    }

    pub fn parse(s: &str) -> Result<OffsetDateTime, String> {
        PrimitiveDateTime::parse(s, FORMAT)
            .map(PrimitiveDateTime::assume_utc)
            .map_err(|_| {
                format!("`{s}` is not an RFC 3339 UTC timestamp in whole seconds, like 2025-01-31T08:00:00Z")
            })
    }

    pub fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        let text = format(t).ok_or_else(|| {
            ser::Error::custom(format!("timestamp {t} must be UTC with whole seconds"))
        })?;
        s.serialize_str(&text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map_err(de::Error::custom)
    }
}

/// PeerIds in their base58 form.
pub mod peer_id {
    use libp2p_identity::PeerId;
    use serde::{Deserialize, Deserializer, Serializer, de};

    pub fn serialize<S: Serializer>(p: &PeerId, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(p)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PeerId, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|e| de::Error::custom(format!("`{s}` is not a PeerId: {e}")))
    }
}

/// IPv6 prefixes as `2001:db8:1::/48`, host bits zero.
pub mod prefixes {
    use ipnet::Ipv6Net;
    use serde::{Deserialize, Deserializer, Serializer, de};

    /// Parse one prefix, refusing host bits so each prefix has one spelling.
    pub fn parse(s: &str) -> Result<Ipv6Net, String> {
        let net: Ipv6Net = s
            .parse()
            .map_err(|_| format!("`{s}` is not an IPv6 prefix like 2001:db8:1::/48"))?;
        if net.trunc() != net {
            return Err(format!(
                "prefix `{s}` has host bits set; write {}",
                net.trunc()
            ));
        }
        Ok(net)
    }

    pub fn serialize<S: Serializer>(nets: &[Ipv6Net], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(nets.iter().map(ToString::to_string))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Ipv6Net>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| parse(s).map_err(de::Error::custom))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn timestamps_have_one_spelling() {
        let t = datetime!(2025-01-31 08:00:00 UTC);
        assert_eq!(timestamp::format(&t).unwrap(), "2025-01-31T08:00:00Z");
        assert_eq!(timestamp::parse("2025-01-31T08:00:00Z").unwrap(), t);
        for other in [
            "2025-01-31T16:00:00+08:00",
            "2025-01-31T08:00:00.5Z",
            "2025-01-31T08:00:00z",
            "2025-01-31 08:00:00Z",
        ] {
            assert!(timestamp::parse(other).is_err(), "{other} accepted");
        }
        assert!(timestamp::format(&datetime!(2025-01-31 08:00:00.1 UTC)).is_none());
        assert_eq!(
            timestamp::whole_seconds(datetime!(2025-01-31 16:00:00.9 +8)),
            t
        );
    }

    #[test]
    fn prefixes_refuse_host_bits() {
        assert!(prefixes::parse("2001:db8:1::/48").is_ok());
        let e = prefixes::parse("2001:db8:1::1/48").unwrap_err();
        assert!(e.contains("2001:db8:1::/48"), "{e}");
        assert!(prefixes::parse("10.0.0.0/8").is_err());
    }
}
