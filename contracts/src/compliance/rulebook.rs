//! The rulebook: the parameters and citations of the decision procedure, kept
//! as data so that a change in the law is a reviewed edit of one TOML file
//! with a new edition id, not a hunt through code.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use serde::Deserialize;
use time::{Date, Month};

use super::outcome::{Blocker, Obligation};
use super::procedure::Step;
use crate::region::GbaCity;

const EMBEDDED_TOML: &str = include_str!("rulebook.toml");

static EMBEDDED: LazyLock<Result<Rulebook, RulebookError>> =
    LazyLock::new(|| Rulebook::parse(EMBEDDED_TOML));

/// One edition of the cross-border rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rulebook {
    id: String,
    effective: Date,
    gba_cities: Vec<GbaCity>,
    thresholds: Thresholds,
    validity: Validity,
    rules: BTreeMap<String, Rule>,
}

/// Counts of individuals at which the routes change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Cumulative non-sensitive count from which a standard contract is needed.
    pub standard_contract_personal: u64,
    /// Cumulative sensitive count from which a standard contract is needed.
    pub standard_contract_sensitive: u64,
    /// Cumulative non-sensitive count from which a security assessment is needed.
    pub security_assessment_personal: u64,
    /// Cumulative sensitive count from which a security assessment is needed.
    pub security_assessment_sensitive: u64,
    /// Individuals in one genomic transfer above which an HGR security review applies.
    pub hgr_security_review_above: u64,
}

/// Periods that the node tracks for the obligations an assessment lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Validity {
    pub security_assessment_years: u32,
    pub filing_working_days: u32,
    pub recipient_records_years: u32,
    pub renewal_working_days_before_expiry: u32,
    /// How long a personal information export certificate is valid.
    pub certification_years: u32,
    /// How long before the certificate's expiry the exporter re-applies.
    pub certification_reapply_months_before_expiry: u32,
}

/// A rule id's meaning and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub statement: String,
    /// The source's full name.
    pub source: String,
    /// The article or provision within the source.
    pub article: String,
}

impl Rule {
    /// The citation as an assessment lists it: source, then article.
    pub fn citation(&self) -> String {
        format!("{}, {}", self.source, self.article)
    }
}

/// Why a rulebook text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RulebookError {
    #[error("rulebook is not valid: {0}")]
    Toml(String),
    #[error("rulebook `effective`: expected a plain date (YYYY-MM-DD), found `{0}`")]
    BadEffectiveDate(String),
    #[error("rulebook `gba_cities`: unknown city `{0}`")]
    UnknownCity(String),
    #[error("rulebook `gba_cities`: `{0}` is listed twice")]
    DuplicateCity(String),
    #[error(
        "rulebook `thresholds`: each standard-contract count must not exceed its security-assessment count"
    )]
    ThresholdsOutOfOrder,
    #[error("rulebook rule `{rule}`: unknown source `{key}`, expected a key of `[sources]`")]
    UnknownSource { rule: String, key: String },
    #[error("rulebook rule `{0}` is defined twice")]
    DuplicateRule(String),
    #[error("rulebook rule `{0}` is not a rule the engine decides with")]
    UnknownRule(String),
    #[error("rulebook has no rule `{0}`, which the engine decides with")]
    MissingRule(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRulebook {
    id: String,
    effective: toml::value::Datetime,
    gba_cities: Vec<String>,
    thresholds: Thresholds,
    validity: Validity,
    sources: BTreeMap<String, String>,
    rules: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: String,
    statement: String,
    source: String,
    article: String,
}

/// The rule ids the engine can put in an assessment: the rulebook must
/// define exactly these, so no decision is ever left without a citation.
pub(super) fn engine_rule_ids() -> BTreeSet<String> {
    Step::ALL
        .iter()
        .map(|s| s.id().to_owned())
        .chain(Blocker::ALL.iter().map(|b| blocker_rule_id(*b)))
        .chain(Obligation::ALL.iter().map(|o| obligation_rule_id(*o)))
        .collect()
}

pub(super) fn blocker_rule_id(b: Blocker) -> String {
    format!("blocker:{b}")
}

pub(super) fn obligation_rule_id(o: Obligation) -> String {
    format!("obligation:{o}")
}

impl Rulebook {
    /// The edition compiled into this build.
    ///
    /// # Panics
    ///
    /// Never in a tested build: the embedded file is a compile-time constant
    /// and the unit test `embedded_rulebook_parses` parses it. A panic here
    /// means the file was edited and the tests were not run.
    pub fn embedded() -> &'static Rulebook {
        #[allow(clippy::expect_used)]
        // Invariant: the embedded text never changes at run time and is parsed
        // by a unit test, so the parse cannot fail in a tested build.
        EMBEDDED
            .as_ref()
            .expect("the embedded rulebook.toml parses (checked by unit test)")
    }

    /// Parses and checks a rulebook text.
    pub fn parse(text: &str) -> Result<Rulebook, RulebookError> {
        let raw: RawRulebook =
            toml::from_str(text).map_err(|e| RulebookError::Toml(e.to_string()))?;

        let effective = plain_date(&raw.effective)
            .ok_or_else(|| RulebookError::BadEffectiveDate(raw.effective.to_string()))?;

        let mut gba_cities = Vec::with_capacity(raw.gba_cities.len());
        for name in &raw.gba_cities {
            let city = GbaCity::ALL
                .into_iter()
                .find(|c| c.as_str() == name)
                .ok_or_else(|| RulebookError::UnknownCity(name.clone()))?;
            if gba_cities.contains(&city) {
                return Err(RulebookError::DuplicateCity(name.clone()));
            }
            gba_cities.push(city);
        }

        let t = raw.thresholds;
        if t.standard_contract_personal > t.security_assessment_personal
            || t.standard_contract_sensitive > t.security_assessment_sensitive
        {
            return Err(RulebookError::ThresholdsOutOfOrder);
        }

        let wanted = engine_rule_ids();
        let mut rules = BTreeMap::new();
        for r in raw.rules {
            if !wanted.contains(&r.id) {
                return Err(RulebookError::UnknownRule(r.id));
            }
            let Some(source) = raw.sources.get(&r.source) else {
                return Err(RulebookError::UnknownSource {
                    rule: r.id,
                    key: r.source,
                });
            };
            let rule = Rule {
                statement: r.statement,
                source: source.clone(),
                article: r.article,
            };
            if rules.insert(r.id.clone(), rule).is_some() {
                return Err(RulebookError::DuplicateRule(r.id));
            }
        }
        if let Some(missing) = wanted.iter().find(|id| !rules.contains_key(*id)) {
            return Err(RulebookError::MissingRule(missing.clone()));
        }

        Ok(Rulebook {
            id: raw.id,
            effective,
            gba_cities,
            thresholds: t,
            validity: raw.validity,
            rules,
        })
    }

    /// The edition id every assessment records.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The date from which this edition applies.
    pub fn effective(&self) -> Date {
        self.effective
    }

    pub fn gba_cities(&self) -> &[GbaCity] {
        &self.gba_cities
    }

    pub fn thresholds(&self) -> &Thresholds {
        &self.thresholds
    }

    pub fn validity(&self) -> &Validity {
        &self.validity
    }

    pub fn rule(&self, rule_id: &str) -> Option<&Rule> {
        self.rules.get(rule_id)
    }

    /// The citation for a rule id, as `source, article`.
    pub fn citation(&self, rule_id: &str) -> Option<String> {
        self.rule(rule_id).map(Rule::citation)
    }

    /// Every rule id with its rule, ordered by id.
    pub fn rules(&self) -> impl Iterator<Item = (&str, &Rule)> {
        self.rules.iter().map(|(id, r)| (id.as_str(), r))
    }
}

/// A TOML local date (no time, no offset) as a calendar date.
fn plain_date(dt: &toml::value::Datetime) -> Option<Date> {
    match (dt.date, dt.time, dt.offset) {
        (Some(d), None, None) => {
            Date::from_calendar_date(i32::from(d.year), Month::try_from(d.month).ok()?, d.day).ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_rulebook_parses() {
        let rb = Rulebook::parse(EMBEDDED_TOML).unwrap();
        assert_eq!(rb.id(), "gba-2026.1");
        assert_eq!(rb.effective(), time::macros::date!(2026 - 01 - 01));
        assert_eq!(&rb, Rulebook::embedded());
    }

    #[test]
    fn gba_cities_are_the_nine() {
        assert_eq!(Rulebook::embedded().gba_cities(), GbaCity::ALL.as_slice());
    }

    #[test]
    fn parameters_match_compliance_md() {
        let rb = Rulebook::embedded();
        assert_eq!(
            *rb.thresholds(),
            Thresholds {
                standard_contract_personal: 100_000,
                standard_contract_sensitive: 1,
                security_assessment_personal: 1_000_000,
                security_assessment_sensitive: 10_000,
                hgr_security_review_above: 500,
            }
        );
        assert_eq!(
            *rb.validity(),
            Validity {
                security_assessment_years: 3,
                filing_working_days: 10,
                recipient_records_years: 3,
                renewal_working_days_before_expiry: 60,
                certification_years: 3,
                certification_reapply_months_before_expiry: 6,
            }
        );
    }

    #[test]
    fn every_engine_rule_is_cited() {
        let rb = Rulebook::embedded();
        let ids: BTreeSet<String> = rb.rules().map(|(id, _)| id.to_owned()).collect();
        assert_eq!(ids, engine_rule_ids());
        assert_eq!(ids.len(), 12 + 4 + 4 + 7 + 9);
        for (id, rule) in rb.rules() {
            assert!(!rule.statement.trim().is_empty(), "{id} has no statement");
            assert!(!rule.article.trim().is_empty(), "{id} has no article");
        }
        assert_eq!(
            rb.citation("M6").unwrap(),
            "Provisions on Promoting and Regulating Cross-border Data Flow (CAC, 22 Mar 2024), Art. 5"
        );
        assert_eq!(rb.citation("M11"), None);
        for id in ["M8a", "obligation:certification-renewal"] {
            let c = rb.citation(id).unwrap();
            assert!(
                c.starts_with("Measures for the Certification of Personal Information Export (CAC and SAMR, Order No. 20, in force 1 Jan 2026)"),
                "{id}: {c}"
            );
        }
    }

    fn edited(from: &str, to: &str) -> Result<Rulebook, RulebookError> {
        assert!(EMBEDDED_TOML.contains(from), "{from:?} not in rulebook");
        Rulebook::parse(&EMBEDDED_TOML.replacen(from, to, 1))
    }

    #[test]
    fn refuses_bad_rulebooks() {
        assert!(matches!(
            edited("id = \"gba-2026.1\"", "id = \"x\"\nextra = 1"),
            Err(RulebookError::Toml(_))
        ));
        assert!(matches!(
            edited("effective = 2026-01-01", "effective = 2026-01-01T00:00:00Z"),
            Err(RulebookError::BadEffectiveDate(_))
        ));
        assert_eq!(
            edited("\"shenzhen\"", "\"shenzen\""),
            Err(RulebookError::UnknownCity("shenzen".into()))
        );
        assert_eq!(
            edited("\"zhuhai\"", "\"shenzhen\""),
            Err(RulebookError::DuplicateCity("shenzhen".into()))
        );
        assert_eq!(
            edited(
                "standard_contract_personal = 100_000",
                "standard_contract_personal = 2_000_000"
            ),
            Err(RulebookError::ThresholdsOutOfOrder)
        );
        assert_eq!(
            edited("id = \"M0\"", "id = \"M11\""),
            Err(RulebookError::UnknownRule("M11".into()))
        );
        assert_eq!(
            edited("id = \"K3\"", "id = \"K2\""),
            Err(RulebookError::DuplicateRule("K2".into()))
        );
        assert!(matches!(
            edited("source = \"hgr\"", "source = \"nowhere\""),
            Err(RulebookError::UnknownSource { .. })
        ));
        let without_k3 = EMBEDDED_TOML
            .split("[[rules]]")
            .filter(|chunk| !chunk.contains("id = \"K3\""))
            .collect::<Vec<_>>()
            .join("[[rules]]");
        assert_eq!(
            Rulebook::parse(&without_k3),
            Err(RulebookError::MissingRule("K3".into()))
        );
    }
}
