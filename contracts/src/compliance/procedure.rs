//! The decision procedure of COMPLIANCE.md: the first matching step picks the
//! route, then the blockers and obligations follow from the route and the
//! records. Every decision carries the rule ids behind it, so an audit entry
//! can be traced back to the rulebook edition and its citations.

use serde::{Deserialize, Serialize};

use super::outcome::{Basis, Blocker, Exemption, GbaVariant, Obligation, Route};
use super::rulebook::{Rulebook, blocker_rule_id, obligation_rule_id};
use super::scenario::{ExporterRegion, Scenario};
use crate::classification::{DataLevel, KnownCategory};
use crate::region::Region;

/// The result of assessing one scenario; its JSON form is the output of
/// `bayspace assess`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assessment {
    pub route: Route,
    pub variant: Option<GbaVariant>,
    pub exemption: Option<Exemption>,
    /// True exactly when `blockers` is empty.
    pub allowed_now: bool,
    pub blockers: Vec<Blocker>,
    pub obligations: Vec<Obligation>,
    /// One `rule id: source, article` line per entry of `rules`.
    pub citations: Vec<String>,
    /// The rulebook edition that decided.
    pub rulebook: String,
    /// The steps that decided the route, then the blocker and obligation rules.
    pub rules: Vec<String>,
}

impl Assessment {
    /// The citation line (`rule id: source, article`) this assessment gives
    /// for `rule`, e.g. `blocker:pipia`.
    pub fn citation(&self, rule: &str) -> Option<&str> {
        self.citations
            .iter()
            .find(|c| {
                c.strip_prefix(rule)
                    .is_some_and(|rest| rest.starts_with(':'))
            })
            .map(String::as_str)
    }
}

/// A step of the procedure; its id is the rule id in the rulebook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    M0,
    M1,
    M2,
    M3,
    M4,
    M5,
    M6,
    M7,
    M8,
    M8a,
    M9,
    M10,
    H0,
    H1,
    H2,
    H3,
    K0,
    K1,
    K2,
    K3,
}

impl Step {
    pub(super) const ALL: [Step; 20] = [
        Step::M0,
        Step::M1,
        Step::M2,
        Step::M3,
        Step::M4,
        Step::M5,
        Step::M6,
        Step::M7,
        Step::M8,
        Step::M8a,
        Step::M9,
        Step::M10,
        Step::H0,
        Step::H1,
        Step::H2,
        Step::H3,
        Step::K0,
        Step::K1,
        Step::K2,
        Step::K3,
    ];

    pub(super) fn id(self) -> &'static str {
        match self {
            Step::M0 => "M0",
            Step::M1 => "M1",
            Step::M2 => "M2",
            Step::M3 => "M3",
            Step::M4 => "M4",
            Step::M5 => "M5",
            Step::M6 => "M6",
            Step::M7 => "M7",
            Step::M8 => "M8",
            Step::M8a => "M8a",
            Step::M9 => "M9",
            Step::M10 => "M10",
            Step::H0 => "H0",
            Step::H1 => "H1",
            Step::H2 => "H2",
            Step::H3 => "H3",
            Step::K0 => "K0",
            Step::K1 => "K1",
            Step::K2 => "K2",
            Step::K3 => "K3",
        }
    }
}

/// The route part of a decision, with the steps that led to it. M9 and M10
/// list M8 first, since its count is what made them apply, and M8a between
/// them when a certification took the place of M8's standard contract.
struct Decision {
    steps: Vec<Step>,
    route: Route,
    variant: Option<GbaVariant>,
    exemption: Option<Exemption>,
}

impl Decision {
    fn route(step: Step, route: Route) -> Decision {
        Decision {
            steps: vec![step],
            route,
            variant: None,
            exemption: None,
        }
    }

    fn exempt(step: Step, why: Exemption) -> Decision {
        Decision {
            steps: vec![step],
            route: Route::Exempt,
            variant: None,
            exemption: Some(why),
        }
    }

    fn gba(step: Step, variant: GbaVariant) -> Decision {
        Decision {
            steps: vec![step],
            route: Route::GbaStandardContract,
            variant: Some(variant),
            exemption: None,
        }
    }
}

/// Assesses a scenario under the rulebook compiled into this build.
pub fn assess(scenario: &Scenario) -> Assessment {
    assess_with(Rulebook::embedded(), scenario)
}

/// Assesses a scenario under a given rulebook edition.
pub fn assess_with(rulebook: &Rulebook, scenario: &Scenario) -> Assessment {
    let decision = match scenario.exporter.region {
        ExporterRegion::Mainland(_) => mainland(rulebook, scenario),
        ExporterRegion::HongKong => hong_kong(rulebook, scenario),
        ExporterRegion::Macao => macao(rulebook, scenario),
    };
    let blockers: Vec<Blocker> = Blocker::ALL
        .into_iter()
        .filter(|b| blocks(rulebook, scenario, &decision, *b))
        .collect();
    let obligations: Vec<Obligation> = Obligation::ALL
        .into_iter()
        .filter(|o| binds(scenario, &decision, *o))
        .collect();

    let rules: Vec<String> = decision
        .steps
        .iter()
        .map(|s| s.id().to_owned())
        .chain(blockers.iter().map(|b| blocker_rule_id(*b)))
        .chain(obligations.iter().map(|o| obligation_rule_id(*o)))
        .collect();
    // Every id above is one the rulebook was checked to define on parsing.
    let citations = rules
        .iter()
        .filter_map(|id| rulebook.citation(id).map(|c| format!("{id}: {c}")))
        .collect();

    Assessment {
        route: decision.route,
        variant: decision.variant,
        exemption: decision.exemption,
        allowed_now: blockers.is_empty(),
        blockers,
        obligations,
        citations,
        rulebook: rulebook.id().to_owned(),
        rules,
    }
}

fn in_gba9(rulebook: &Rulebook, region: Region) -> bool {
    region
        .gba_city()
        .is_some_and(|c| rulebook.gba_cities().contains(&c))
}

fn mainland(rulebook: &Rulebook, s: &Scenario) -> Decision {
    let pi = s.data.has_personal_information();
    if s.recipient.region.is_mainland() {
        return Decision::exempt(Step::M0, Exemption::NotCrossBorder);
    }
    match s.data.level {
        DataLevel::Core => return Decision::route(Step::M1, Route::Prohibited),
        DataLevel::Important => return Decision::route(Step::M2, Route::SecurityAssessment),
        DataLevel::General => {}
    }
    if s.exporter.ciio && pi {
        return Decision::route(Step::M3, Route::SecurityAssessment);
    }
    if !pi {
        return Decision::exempt(Step::M4, Exemption::NoPersonalOrImportantData);
    }
    if s.data.collected_abroad {
        return Decision::exempt(Step::M5, Exemption::CollectedAbroad);
    }
    match s.basis {
        Basis::ContractNecessity => {
            return Decision::exempt(Step::M6, Exemption::ContractNecessity);
        }
        Basis::HrManagement => return Decision::exempt(Step::M6, Exemption::HrManagement),
        Basis::Emergency => return Decision::exempt(Step::M6, Exemption::Emergency),
        Basis::Consent => {}
    }
    if s.exporter.ftz.as_ref().is_some_and(|f| !f.on_negative_list) {
        return Decision::exempt(Step::M7, Exemption::FtzNotOnNegativeList);
    }

    let t = rulebook.thresholds();
    let p = s
        .year_to_date
        .personal
        .saturating_add(s.data.personal_individuals);
    let sens = s
        .year_to_date
        .sensitive
        .saturating_add(s.data.sensitive_individuals);
    let mut national =
        if sens >= t.security_assessment_sensitive || p >= t.security_assessment_personal {
            Decision::route(Step::M10, Route::SecurityAssessment)
        } else if sens >= t.standard_contract_sensitive || p >= t.standard_contract_personal {
            Decision::route(Step::M10, Route::StandardContract)
        } else {
            Decision::exempt(Step::M10, Exemption::BelowThreshold)
        };
    let mut leading = vec![Step::M8];

    // M8a: inside the standard-contract band the law lets the exporter pick
    // a certification instead, and the data space prefers one on record
    // since it needs no filing per transfer. Above the band, and for CIIOs
    // and important data (already decided by M2 and M3), it does not help.
    let certified = s
        .records
        .pi_certification_valid_until
        .is_some_and(|until| until >= s.date);
    if national.route == Route::StandardContract && certified {
        national.route = Route::Certification;
        leading.push(Step::M8a);
    }

    let gba_variant = match s.recipient.region {
        Region::HongKong => Some(GbaVariant::MainlandHk),
        Region::Macao => Some(GbaVariant::MainlandMacao),
        _ => None,
    };
    // M9 replaces only the two contract-or-assessment routes: the GBA
    // contract has no volume limit, but a certification already needs no
    // per-transfer filing, so swapping it for a contract would add work.
    let replaceable = matches!(
        national.route,
        Route::StandardContract | Route::SecurityAssessment
    );
    let mut decision = match gba_variant {
        Some(v) if replaceable && in_gba9(rulebook, s.exporter.region.region()) => {
            Decision::gba(Step::M9, v)
        }
        _ => national,
    };
    decision.steps.splice(0..0, leading);
    decision
}

fn hong_kong(rulebook: &Rulebook, s: &Scenario) -> Decision {
    if s.recipient.region == Region::HongKong {
        Decision::exempt(Step::H0, Exemption::NotCrossBorder)
    } else if !s.data.has_personal_information() {
        Decision::exempt(Step::H1, Exemption::NoPersonalOrImportantData)
    } else if in_gba9(rulebook, s.recipient.region) {
        Decision::gba(Step::H2, GbaVariant::MainlandHk)
    } else {
        Decision::exempt(Step::H3, Exemption::NoStatutoryRestriction)
    }
}

fn macao(rulebook: &Rulebook, s: &Scenario) -> Decision {
    if s.recipient.region == Region::Macao {
        Decision::exempt(Step::K0, Exemption::NotCrossBorder)
    } else if !s.data.has_personal_information() {
        Decision::exempt(Step::K1, Exemption::NoPersonalOrImportantData)
    } else if in_gba9(rulebook, s.recipient.region) {
        Decision::gba(Step::K2, GbaVariant::MainlandMacao)
    } else {
        Decision::route(Step::K3, Route::MacaoAuthorisation)
    }
}

fn blocks(rulebook: &Rulebook, s: &Scenario, d: &Decision, blocker: Blocker) -> bool {
    let r = &s.records;
    let pi = s.data.has_personal_information();
    let mainland_exporter = s.exporter.region.region().is_mainland();
    // PIPL's duties before export hold on exempt routes too, except inside the
    // Mainland, in an emergency, and for data collected abroad.
    let export_duties = mainland_exporter
        && pi
        && d.exemption != Some(Exemption::NotCrossBorder)
        && s.basis != Basis::Emergency
        && d.exemption != Some(Exemption::CollectedAbroad);
    // Hong Kong and Macao count as outside the Mainland for genetic resources.
    let hgr = mainland_exporter
        && !s.recipient.region.is_mainland()
        && s.data.has_category(KnownCategory::Genomic)
        && pi;
    match blocker {
        Blocker::CoreData => d.route == Route::Prohibited,
        Blocker::SecurityAssessmentApproval => {
            d.route == Route::SecurityAssessment
                && r.security_assessment_valid_until
                    .is_none_or(|until| until < s.date)
        }
        Blocker::MacaoAuthorisation => {
            d.route == Route::MacaoAuthorisation && !r.macao_authorisation
        }
        Blocker::Pipia => {
            !r.pipia
                && (export_duties || (!mainland_exporter && d.route == Route::GbaStandardContract))
        }
        Blocker::Consent => !r.consent && export_duties,
        Blocker::HgrFiling => hgr && !r.hgr_filing,
        Blocker::HgrSecurityReview => {
            hgr && s.data.total_individuals() > rulebook.thresholds().hgr_security_review_above
                && !r.hgr_security_review
        }
    }
}

fn binds(s: &Scenario, d: &Decision, obligation: Obligation) -> bool {
    let pi = s.data.has_personal_information();
    let exporter = s.exporter.region.region();
    match obligation {
        Obligation::NoticeAndSeparateConsent => exporter.is_mainland() && pi,
        Obligation::Pipia => pi,
        Obligation::Filing10WorkingDays | Obligation::RecipientRecords3Years => matches!(
            d.route,
            Route::StandardContract | Route::GbaStandardContract
        ),
        Obligation::CertificationRenewal => d.route == Route::Certification,
        Obligation::NoOnwardTransferOutsideGba => d.route == Route::GbaStandardContract,
        Obligation::SecurityAssessmentRenewal => d.route == Route::SecurityAssessment,
        Obligation::PdpoNotice => exporter == Region::HongKong && pi,
        Obligation::SectorCatalogueCheck => {
            s.data.level == DataLevel::General
                && [
                    KnownCategory::Vehicle,
                    KnownCategory::RemoteSensing,
                    KnownCategory::Health,
                ]
                .into_iter()
                .any(|c| s.data.has_category(c))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    const NC: &str = "notice-and-separate-consent";
    const PIPIA: &str = "pipia";
    const FILING: &str = "filing-10-working-days";
    const ONWARD: &str = "no-onward-transfer-outside-gba";
    const RECORDS: &str = "recipient-records-3-years";
    const RENEWAL: &str = "security-assessment-renewal";
    const PDPO: &str = "pdpo-notice";
    const SECTOR: &str = "sector-catalogue-check";
    const CERT_RENEWAL: &str = "certification-renewal";
    const CERT_DUTIES: [&str; 3] = [NC, PIPIA, CERT_RENEWAL];
    const GBA_DUTIES: [&str; 5] = [NC, PIPIA, FILING, ONWARD, RECORDS];

    /// Shenzhen to Hong Kong, 5 000 individuals, PIPIA and consent on record.
    fn base() -> Value {
        json!({
            "date": "2026-11-23",
            "exporter": { "region": "mainland:shenzhen" },
            "recipient": { "region": "hk" },
            "data": { "level": "general", "personal_individuals": 5000 },
            "records": { "pipia": true, "consent": true }
        })
    }

    fn merge(into: &mut Value, patch: Value) {
        match (into, patch) {
            (Value::Object(a), Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(Value::Null), v);
                }
            }
            (slot, v) => *slot = v,
        }
    }

    fn scenario(patch: Value) -> Scenario {
        let mut v = base();
        merge(&mut v, patch);
        serde_json::from_value(v).unwrap()
    }

    /// `route`, `route/variant` or `route/exemption`, as COMPLIANCE.md writes it.
    fn outcome(a: &Assessment) -> String {
        let detail = a
            .variant
            .map(|v| v.to_string())
            .or(a.exemption.map(|e| e.to_string()));
        match detail {
            Some(d) => format!("{}/{d}", a.route),
            None => a.route.to_string(),
        }
    }

    fn steps(a: &Assessment) -> String {
        a.rules
            .iter()
            .filter(|r| !r.contains(':'))
            .cloned()
            .collect::<Vec<_>>()
            .join(" ")
    }

    struct Row {
        name: &'static str,
        patch: Value,
        outcome: &'static str,
        steps: &'static str,
        blockers: &'static [&'static str],
        obligations: &'static [&'static str],
    }

    fn row(
        name: &'static str,
        patch: Value,
        outcome: &'static str,
        steps: &'static str,
        blockers: &'static [&'static str],
        obligations: &'static [&'static str],
    ) -> Row {
        Row {
            name,
            patch,
            outcome,
            steps,
            blockers,
            obligations,
        }
    }

    fn all_records() -> Value {
        json!({ "pipia": true, "consent": true, "security_assessment_valid_until": "2099-12-31",
                "macao_authorisation": true, "hgr_filing": true, "hgr_security_review": true,
                "pi_certification_valid_until": "2099-12-31" })
    }

    fn no_records() -> Value {
        json!({ "pipia": false, "consent": false })
    }

    fn to_de() -> Value {
        json!({ "region": "foreign:de" })
    }

    /// A certificate valid well past the base date (2026-11-23).
    fn certified() -> Value {
        json!({ "pi_certification_valid_until": "2028-06-30" })
    }

    /// `certified()` on top of PIPIA and consent, as a records patch.
    fn certified_with(mut records: Value) -> Value {
        merge(&mut records, certified());
        records
    }

    #[rustfmt::skip]
    fn table() -> Vec<Row> {
        const SA: &str = "security-assessment";
        const SC: &str = "standard-contract";
        const BELOW: &str = "exempt/below-threshold";
        const NO_PI: &str = "exempt/no-personal-or-important-data";
        const GBA_HK: &str = "gba-standard-contract/mainland-hk";
        const GBA_MO: &str = "gba-standard-contract/mainland-macao";
        const APPROVAL: &str = "security-assessment-approval";
        const CERT: &str = "certification";
        vec![
            // Mainland exporter: M0..M7.
            row("base: below threshold, so no GBA contract", json!({}), BELOW, "M8 M10", &[], &[NC, PIPIA]),
            row("M0 to a GBA city", json!({"recipient": {"region": "mainland:guangzhou"}}),
                "exempt/not-cross-border", "M0", &[], &[NC, PIPIA]),
            row("M0 needs no pipia or consent on record",
                json!({"recipient": {"region": "mainland:other"}, "records": no_records()}),
                "exempt/not-cross-border", "M0", &[], &[NC, PIPIA]),
            row("M0 before M1: core data staying in the Mainland",
                json!({"recipient": {"region": "mainland:other"}, "data": {"level": "core"}}),
                "exempt/not-cross-border", "M0", &[], &[NC, PIPIA]),
            row("M1 core data", json!({"data": {"level": "core"}}), "prohibited", "M1", &["core-data"], &[NC, PIPIA]),
            row("M1 blocks whatever is on record", json!({"data": {"level": "core"}, "records": all_records()}),
                "prohibited", "M1", &["core-data"], &[NC, PIPIA]),
            row("M2 important data", json!({"data": {"level": "important"}}), SA, "M2", &[APPROVAL], &[NC, PIPIA, RENEWAL]),
            row("M2 important data without PI", json!({"data": {"level": "important", "personal_individuals": 0}}),
                SA, "M2", &[APPROVAL], &[RENEWAL]),
            row("M2 before every exemption",
                json!({"data": {"level": "important", "collected_abroad": true}, "basis": "hr-management",
                       "exporter": {"ftz": {"zone": "qianhai", "on_negative_list": false}}}),
                SA, "M2", &[APPROVAL], &[NC, PIPIA, RENEWAL]),
            row("M2 with a valid approval", json!({"data": {"level": "important"}, "records": {"security_assessment_valid_until": "2029-01-01"}}),
                SA, "M2", &[], &[NC, PIPIA, RENEWAL]),
            row("M3 CIIO with PI", json!({"exporter": {"ciio": true}}), SA, "M3", &[APPROVAL], &[NC, PIPIA, RENEWAL]),
            row("M3 not for a CIIO without PI", json!({"exporter": {"ciio": true}, "data": {"personal_individuals": 0}}),
                NO_PI, "M4", &[], &[]),
            row("M3 before M5: no collected-abroad waiver",
                json!({"exporter": {"ciio": true}, "data": {"collected_abroad": true}, "records": no_records()}),
                SA, "M3", &[APPROVAL, "pipia", "consent"], &[NC, PIPIA, RENEWAL]),
            row("M4 no PI, nothing needed on record", json!({"data": {"personal_individuals": 0}, "records": no_records()}),
                NO_PI, "M4", &[], &[]),
            row("M5 collected abroad waives pipia and consent",
                json!({"data": {"collected_abroad": true, "personal_individuals": 5_000_000}, "records": no_records()}),
                "exempt/collected-abroad", "M5", &[], &[NC, PIPIA]),
            row("M6 contract necessity still needs pipia and consent",
                json!({"basis": "contract-necessity", "records": no_records()}),
                "exempt/contract-necessity", "M6", &["pipia", "consent"], &[NC, PIPIA]),
            row("M6 HR management", json!({"basis": "hr-management"}), "exempt/hr-management", "M6", &[], &[NC, PIPIA]),
            row("M6 emergency waives pipia and consent",
                json!({"basis": "emergency", "data": {"sensitive_individuals": 20_000}, "records": no_records()}),
                "exempt/emergency", "M6", &[], &[NC, PIPIA]),
            row("emergency waiver holds on a security-assessment route",
                json!({"basis": "emergency", "data": {"level": "important"}, "records": no_records()}),
                SA, "M2", &[APPROVAL], &[NC, PIPIA, RENEWAL]),
            row("M6 before M7",
                json!({"basis": "hr-management", "exporter": {"ftz": {"zone": "qianhai", "on_negative_list": false}}}),
                "exempt/hr-management", "M6", &[], &[NC, PIPIA]),
            row("M7 FTZ, data not on the negative list",
                json!({"exporter": {"ftz": {"zone": "qianhai", "on_negative_list": false}}, "data": {"personal_individuals": 2_000_000}}),
                "exempt/ftz-not-on-negative-list", "M7", &[], &[NC, PIPIA]),
            row("M7 not for data on the negative list",
                json!({"exporter": {"ftz": {"zone": "qianhai", "on_negative_list": true}}, "data": {"personal_individuals": 2_000_000}}),
                GBA_HK, "M8 M9", &[], &GBA_DUTIES),
            // M8 thresholds, seen through M10 with a foreign recipient.
            row("M8 99 999 non-sensitive", json!({"recipient": to_de(), "data": {"personal_individuals": 99_999}}),
                BELOW, "M8 M10", &[], &[NC, PIPIA]),
            row("M8 100 000 non-sensitive", json!({"recipient": to_de(), "data": {"personal_individuals": 100_000}}),
                SC, "M8 M10", &[], &[NC, PIPIA, FILING, RECORDS]),
            row("M8 999 999 non-sensitive", json!({"recipient": to_de(), "data": {"personal_individuals": 999_999}}),
                SC, "M8 M10", &[], &[NC, PIPIA, FILING, RECORDS]),
            row("M8 1 000 000 non-sensitive", json!({"recipient": to_de(), "data": {"personal_individuals": 1_000_000}}),
                SA, "M8 M10", &[APPROVAL], &[NC, PIPIA, RENEWAL]),
            row("M8 one sensitive", json!({"recipient": to_de(), "data": {"personal_individuals": 0, "sensitive_individuals": 1}}),
                SC, "M8 M10", &[], &[NC, PIPIA, FILING, RECORDS]),
            row("M8 9 999 sensitive", json!({"recipient": to_de(), "data": {"personal_individuals": 0, "sensitive_individuals": 9_999}}),
                SC, "M8 M10", &[], &[NC, PIPIA, FILING, RECORDS]),
            row("M8 10 000 sensitive", json!({"recipient": to_de(), "data": {"personal_individuals": 0, "sensitive_individuals": 10_000}}),
                SA, "M8 M10", &[APPROVAL], &[NC, PIPIA, RENEWAL]),
            row("M8 year to date 94 999 + 5 000", json!({"recipient": to_de(), "year_to_date": {"personal": 94_999}}),
                BELOW, "M8 M10", &[], &[NC, PIPIA]),
            row("M8 year to date 95 000 + 5 000", json!({"recipient": to_de(), "year_to_date": {"personal": 95_000}}),
                SC, "M8 M10", &[], &[NC, PIPIA, FILING, RECORDS]),
            row("M8 year to date 995 000 + 5 000", json!({"recipient": to_de(), "year_to_date": {"personal": 995_000}}),
                SA, "M8 M10", &[APPROVAL], &[NC, PIPIA, RENEWAL]),
            row("M8 year to date 9 990 + 10 sensitive",
                json!({"recipient": to_de(), "year_to_date": {"sensitive": 9_990}, "data": {"sensitive_individuals": 10}}),
                SA, "M8 M10", &[APPROVAL], &[NC, PIPIA, RENEWAL]),
            row("M8 year-to-date sensitive alone makes a contract", json!({"recipient": to_de(), "year_to_date": {"sensitive": 1}}),
                SC, "M8 M10", &[], &[NC, PIPIA, FILING, RECORDS]),
            row("M8 counts saturate", json!({"recipient": to_de(), "year_to_date": {"personal": u64::MAX}}),
                SA, "M8 M10", &[APPROVAL], &[NC, PIPIA, RENEWAL]),
            row("M8 security assessment with a valid approval",
                json!({"recipient": to_de(), "data": {"sensitive_individuals": 10_000}, "records": {"security_assessment_valid_until": "2026-11-23"}}),
                SA, "M8 M10", &[], &[NC, PIPIA, RENEWAL]),
            // M9 and M10.
            row("M9 Shenzhen to Hong Kong at 100 000", json!({"data": {"personal_individuals": 100_000}}),
                GBA_HK, "M8 M9", &[], &GBA_DUTIES),
            row("M9 has no volume limit", json!({"data": {"personal_individuals": 1_000_000, "sensitive_individuals": 50_000}}),
                GBA_HK, "M8 M9", &[], &GBA_DUTIES),
            row("M9 Zhaoqing to Macao, sensitive",
                json!({"exporter": {"region": "mainland:zhaoqing"}, "recipient": {"region": "macao"}, "data": {"sensitive_individuals": 10}}),
                GBA_MO, "M8 M9", &[], &GBA_DUTIES),
            row("M9 only when the national route is not exempt", json!({"data": {"personal_individuals": 99_999}}),
                BELOW, "M8 M10", &[], &[NC, PIPIA]),
            row("M9 year to date pushes onto the GBA contract", json!({"year_to_date": {"personal": 95_000}}),
                GBA_HK, "M8 M9", &[], &GBA_DUTIES),
            row("M9 still needs pipia and consent", json!({"data": {"personal_individuals": 100_000}, "records": no_records()}),
                GBA_HK, "M8 M9", &["pipia", "consent"], &GBA_DUTIES),
            row("M10 Mainland outside the GBA to Hong Kong",
                json!({"exporter": {"region": "mainland:other"}, "data": {"personal_individuals": 100_000}}),
                SC, "M8 M10", &[], &[NC, PIPIA, FILING, RECORDS]),
            // M8a: a certification in the standard-contract band, and M9 not replacing it.
            row("M8a Shenzhen to Hong Kong at 100 000, certified",
                json!({"data": {"personal_individuals": 100_000}, "records": certified()}),
                CERT, "M8 M8a M10", &[], &CERT_DUTIES),
            row("M8a certificate valid on the assessment day itself",
                json!({"data": {"personal_individuals": 100_000}, "records": {"pi_certification_valid_until": "2026-11-23"}}),
                CERT, "M8 M8a M10", &[], &CERT_DUTIES),
            row("M8a certificate expired the day before: back to the GBA contract",
                json!({"data": {"personal_individuals": 100_000}, "records": {"pi_certification_valid_until": "2026-11-22"}}),
                GBA_HK, "M8 M9", &[], &GBA_DUTIES),
            row("M8a expired, foreign recipient: back to the standard contract",
                json!({"recipient": to_de(), "data": {"personal_individuals": 100_000}, "records": {"pi_certification_valid_until": "2026-11-22"}}),
                SC, "M8 M10", &[], &[NC, PIPIA, FILING, RECORDS]),
            row("M8a bottom of the band, one sensitive", json!({"recipient": to_de(), "data": {"personal_individuals": 0, "sensitive_individuals": 1}, "records": certified()}),
                CERT, "M8 M8a M10", &[], &CERT_DUTIES),
            row("M8a bottom of the band, 100 000 non-sensitive", json!({"recipient": to_de(), "data": {"personal_individuals": 100_000}, "records": certified()}),
                CERT, "M8 M8a M10", &[], &CERT_DUTIES),
            row("M8a below the band the certificate changes nothing",
                json!({"recipient": to_de(), "data": {"personal_individuals": 99_999}, "records": certified()}),
                BELOW, "M8 M10", &[], &[NC, PIPIA]),
            row("M8a top of the band, 999 999 non-sensitive",
                json!({"recipient": to_de(), "data": {"personal_individuals": 999_999}, "records": certified()}),
                CERT, "M8 M8a M10", &[], &CERT_DUTIES),
            row("M8a top of the band, 9 999 sensitive",
                json!({"recipient": to_de(), "data": {"personal_individuals": 0, "sensitive_individuals": 9_999}, "records": certified()}),
                CERT, "M8 M8a M10", &[], &CERT_DUTIES),
            row("M8a above the band, 1 000 000 non-sensitive: security assessment",
                json!({"recipient": to_de(), "data": {"personal_individuals": 1_000_000}, "records": certified()}),
                SA, "M8 M10", &[APPROVAL], &[NC, PIPIA, RENEWAL]),
            row("M8a above the band, 10 000 sensitive: security assessment",
                json!({"recipient": to_de(), "data": {"personal_individuals": 0, "sensitive_individuals": 10_000}, "records": certified()}),
                SA, "M8 M10", &[APPROVAL], &[NC, PIPIA, RENEWAL]),
            row("M8a year to date leaves the band",
                json!({"recipient": to_de(), "year_to_date": {"personal": 995_000}, "records": certified()}),
                SA, "M8 M10", &[APPROVAL], &[NC, PIPIA, RENEWAL]),
            row("M8a year to date enters the band",
                json!({"recipient": to_de(), "year_to_date": {"personal": 95_000}, "records": certified()}),
                CERT, "M8 M8a M10", &[], &CERT_DUTIES),
            row("M8a not for a CIIO", json!({"exporter": {"ciio": true}, "records": certified()}),
                SA, "M3", &[APPROVAL], &[NC, PIPIA, RENEWAL]),
            row("M8a not for important data", json!({"data": {"level": "important"}, "records": certified()}),
                SA, "M2", &[APPROVAL], &[NC, PIPIA, RENEWAL]),
            row("M8a not for core data", json!({"data": {"level": "core"}, "records": certified()}),
                "prohibited", "M1", &["core-data"], &[NC, PIPIA]),
            row("M8a after the FTZ exemption",
                json!({"exporter": {"ftz": {"zone": "qianhai", "on_negative_list": false}}, "data": {"personal_individuals": 100_000}, "records": certified()}),
                "exempt/ftz-not-on-negative-list", "M7", &[], &[NC, PIPIA]),
            row("M8a FTZ data on the negative list",
                json!({"exporter": {"ftz": {"zone": "qianhai", "on_negative_list": true}}, "data": {"personal_individuals": 100_000}, "records": certified()}),
                CERT, "M8 M8a M10", &[], &CERT_DUTIES),
            row("M8a after the other exemptions",
                json!({"basis": "contract-necessity", "data": {"personal_individuals": 100_000}, "records": certified()}),
                "exempt/contract-necessity", "M6", &[], &[NC, PIPIA]),
            row("M8a still needs pipia and consent",
                json!({"data": {"personal_individuals": 100_000}, "records": certified_with(no_records())}),
                CERT, "M8 M8a M10", &["pipia", "consent"], &CERT_DUTIES),
            row("M8a genomic data still needs its HGR records",
                json!({"recipient": to_de(), "data": {"personal_individuals": 100_000, "categories": ["genomic"]}, "records": certified()}),
                CERT, "M8 M8a M10", &["hgr-filing", "hgr-security-review"], &CERT_DUTIES),
            row("M8a Mainland outside the GBA to Hong Kong",
                json!({"exporter": {"region": "mainland:other"}, "data": {"personal_individuals": 100_000}, "records": certified()}),
                CERT, "M8 M8a M10", &[], &CERT_DUTIES),
            row("M8a Zhaoqing to Macao", json!({"exporter": {"region": "mainland:zhaoqing"}, "recipient": {"region": "macao"},
                                                 "data": {"sensitive_individuals": 10}, "records": certified()}),
                CERT, "M8 M8a M10", &[], &CERT_DUTIES),
            row("M8a not within the Mainland",
                json!({"recipient": {"region": "mainland:guangzhou"}, "data": {"personal_individuals": 100_000}, "records": certified()}),
                "exempt/not-cross-border", "M0", &[], &[NC, PIPIA]),
            row("M9 replaces a security assessment above the band, certified or not",
                json!({"data": {"personal_individuals": 1_000_000}, "records": certified()}),
                GBA_HK, "M8 M9", &[], &GBA_DUTIES),
            row("M9 replaces a standard contract without a certificate", json!({"data": {"personal_individuals": 100_000}}),
                GBA_HK, "M8 M9", &[], &GBA_DUTIES),
            row("certificate no help to a Hong Kong exporter",
                json!({"exporter": {"region": "hk"}, "recipient": {"region": "mainland:dongguan"}, "records": certified()}),
                GBA_HK, "H2", &[], &[PIPIA, FILING, ONWARD, RECORDS, PDPO]),
            row("certificate no help to a Macao exporter",
                json!({"exporter": {"region": "macao"}, "records": certified()}),
                "macao-authorisation", "K3", &["macao-authorisation"], &[PIPIA]),
            // Hong Kong exporter.
            row("H0 Hong Kong to Hong Kong", json!({"exporter": {"region": "hk"}}),
                "exempt/not-cross-border", "H0", &[], &[PIPIA, PDPO]),
            row("H1 no PI", json!({"exporter": {"region": "hk"}, "recipient": to_de(), "data": {"personal_individuals": 0}}),
                NO_PI, "H1", &[], &[]),
            row("H2 Hong Kong to a GBA city",
                json!({"exporter": {"region": "hk"}, "recipient": {"region": "mainland:dongguan"}}),
                GBA_HK, "H2", &[], &[PIPIA, FILING, ONWARD, RECORDS, PDPO]),
            row("H2 needs a pipia, not consent",
                json!({"exporter": {"region": "hk"}, "recipient": {"region": "mainland:dongguan"}, "records": no_records()}),
                GBA_HK, "H2", &["pipia"], &[PIPIA, FILING, ONWARD, RECORDS, PDPO]),
            row("H3 Hong Kong to the Mainland outside the GBA",
                json!({"exporter": {"region": "hk"}, "recipient": {"region": "mainland:other"}, "records": no_records()}),
                "exempt/no-statutory-restriction", "H3", &[], &[PIPIA, PDPO]),
            row("H3 Hong Kong to Macao", json!({"exporter": {"region": "hk"}, "recipient": {"region": "macao"}}),
                "exempt/no-statutory-restriction", "H3", &[], &[PIPIA, PDPO]),
            row("H3 Hong Kong abroad", json!({"exporter": {"region": "hk"}, "recipient": {"region": "foreign:us"}}),
                "exempt/no-statutory-restriction", "H3", &[], &[PIPIA, PDPO]),
            // Macao exporter.
            row("K0 Macao to Macao", json!({"exporter": {"region": "macao"}, "recipient": {"region": "macao"}}),
                "exempt/not-cross-border", "K0", &[], &[PIPIA]),
            row("K1 no PI", json!({"exporter": {"region": "macao"}, "data": {"personal_individuals": 0}}),
                NO_PI, "K1", &[], &[]),
            row("K2 Macao to a GBA city",
                json!({"exporter": {"region": "macao"}, "recipient": {"region": "mainland:zhuhai"}}),
                GBA_MO, "K2", &[], &[PIPIA, FILING, ONWARD, RECORDS]),
            row("K2 needs a pipia",
                json!({"exporter": {"region": "macao"}, "recipient": {"region": "mainland:zhuhai"}, "records": no_records()}),
                GBA_MO, "K2", &["pipia"], &[PIPIA, FILING, ONWARD, RECORDS]),
            row("K3 Macao to Hong Kong", json!({"exporter": {"region": "macao"}}),
                "macao-authorisation", "K3", &["macao-authorisation"], &[PIPIA]),
            row("K3 with the authorisation on record",
                json!({"exporter": {"region": "macao"}, "recipient": {"region": "mainland:other"}, "records": {"macao_authorisation": true}}),
                "macao-authorisation", "K3", &[], &[PIPIA]),
            row("K3 abroad, no pipia blocker off the GBA contract",
                json!({"exporter": {"region": "macao"}, "recipient": {"region": "foreign:pt"}, "records": no_records()}),
                "macao-authorisation", "K3", &["macao-authorisation"], &[PIPIA]),
            // Human genetic resources.
            row("HGR filing at 500", json!({"data": {"personal_individuals": 500, "categories": ["genomic"]}}),
                BELOW, "M8 M10", &["hgr-filing"], &[NC, PIPIA]),
            row("HGR review above 500", json!({"data": {"personal_individuals": 501, "categories": ["genomic"]}}),
                BELOW, "M8 M10", &["hgr-filing", "hgr-security-review"], &[NC, PIPIA]),
            row("HGR review counts both kinds",
                json!({"data": {"personal_individuals": 300, "sensitive_individuals": 201, "categories": ["genomic"]}}),
                GBA_HK, "M8 M9", &["hgr-filing", "hgr-security-review"], &GBA_DUTIES),
            row("HGR review still needed after filing",
                json!({"data": {"personal_individuals": 501, "categories": ["genomic"]}, "records": {"hgr_filing": true}}),
                BELOW, "M8 M10", &["hgr-security-review"], &[NC, PIPIA]),
            row("HGR both on record", json!({"data": {"personal_individuals": 501, "categories": ["genomic"]}, "records": all_records()}),
                BELOW, "M8 M10", &[], &[NC, PIPIA]),
            row("HGR to Macao counts as leaving the Mainland",
                json!({"recipient": {"region": "macao"}, "data": {"personal_individuals": 10, "categories": ["genomic"]}}),
                BELOW, "M8 M10", &["hgr-filing"], &[NC, PIPIA]),
            row("HGR not within the Mainland",
                json!({"recipient": {"region": "mainland:other"}, "data": {"personal_individuals": 501, "categories": ["genomic"]}}),
                "exempt/not-cross-border", "M0", &[], &[NC, PIPIA]),
            row("HGR not without PI", json!({"data": {"personal_individuals": 0, "categories": ["genomic"]}}),
                NO_PI, "M4", &[], &[]),
            row("HGR not for a Hong Kong exporter",
                json!({"exporter": {"region": "hk"}, "recipient": {"region": "mainland:guangzhou"}, "data": {"personal_individuals": 501, "categories": ["genomic"]}}),
                GBA_HK, "H2", &[], &[PIPIA, FILING, ONWARD, RECORDS, PDPO]),
            // Sector catalogue check.
            row("sector: general health", json!({"data": {"categories": ["health"]}}), BELOW, "M8 M10", &[], &[NC, PIPIA, SECTOR]),
            row("sector: vehicle without PI", json!({"data": {"personal_individuals": 0, "categories": ["vehicle"]}}),
                NO_PI, "M4", &[], &[SECTOR]),
            row("sector: remote sensing among others", json!({"data": {"categories": ["marine-biology", "remote-sensing"]}}),
                BELOW, "M8 M10", &[], &[NC, PIPIA, SECTOR]),
            row("sector: not for important data", json!({"data": {"level": "important", "categories": ["vehicle"]}}),
                SA, "M2", &[APPROVAL], &[NC, PIPIA, RENEWAL]),
            row("sector: other tags carried without effect", json!({"data": {"categories": ["marine-biology"]}}),
                BELOW, "M8 M10", &[], &[NC, PIPIA]),
            row("sector: any exporter", json!({"exporter": {"region": "hk"}, "data": {"categories": ["health"]}}),
                "exempt/not-cross-border", "H0", &[], &[PIPIA, PDPO, SECTOR]),
            // Single missing records.
            row("pipia missing", json!({"records": {"pipia": false}}), BELOW, "M8 M10", &["pipia"], &[NC, PIPIA]),
            row("consent missing", json!({"records": {"consent": false}}), BELOW, "M8 M10", &["consent"], &[NC, PIPIA]),
            row("every blocker that can meet",
                json!({"data": {"level": "important", "personal_individuals": 600, "categories": ["genomic"]},
                       "records": {"pipia": false, "consent": false}}),
                SA, "M2", &[APPROVAL, "pipia", "consent", "hgr-filing", "hgr-security-review"], &[NC, PIPIA, RENEWAL]),
        ]
    }

    #[test]
    fn decision_table() {
        let mut failures = Vec::new();
        for r in table() {
            let a = assess(&scenario(r.patch));
            let got = (
                outcome(&a),
                steps(&a),
                a.blockers.iter().map(|b| b.to_string()).collect::<Vec<_>>(),
                a.obligations
                    .iter()
                    .map(|o| o.to_string())
                    .collect::<Vec<_>>(),
            );
            let want = (
                r.outcome.to_owned(),
                r.steps.to_owned(),
                r.blockers.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                r.obligations
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>(),
            );
            if got != want {
                failures.push(format!("{}:\n  got  {got:?}\n  want {want:?}", r.name));
            }
            assert_eq!(a.allowed_now, a.blockers.is_empty(), "{}", r.name);
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn table_reaches_every_rule() {
        let mut seen = std::collections::BTreeSet::new();
        for r in table() {
            seen.extend(assess(&scenario(r.patch)).rules);
        }
        assert_eq!(seen, super::super::rulebook::engine_rule_ids());
    }

    #[test]
    fn approval_valid_through_its_last_day() {
        let on = |date: &str| {
            assess(&scenario(json!({
                "date": date,
                "data": {"level": "important"},
                "records": {"security_assessment_valid_until": "2029-11-22"}
            })))
            .blockers
        };
        assert_eq!(on("2029-11-22"), vec![]);
        assert_eq!(on("2029-11-23"), vec![Blocker::SecurityAssessmentApproval]);
        assert_eq!(on("2028-02-29"), vec![]);
    }

    #[test]
    fn certificate_valid_through_its_last_day() {
        let route_on = |date: &str, until: &str| {
            assess(&scenario(json!({
                "date": date,
                "recipient": to_de(),
                "data": {"personal_individuals": 150_000},
                "records": {"pi_certification_valid_until": until}
            })))
            .route
        };
        assert_eq!(route_on("2028-06-30", "2028-06-30"), Route::Certification);
        assert_eq!(
            route_on("2028-07-01", "2028-06-30"),
            Route::StandardContract
        );
        assert_eq!(route_on("2028-02-29", "2028-02-29"), Route::Certification);
        assert_eq!(
            route_on("2028-03-01", "2028-02-29"),
            Route::StandardContract
        );
        assert_eq!(route_on("2026-01-01", "2028-06-30"), Route::Certification);
    }

    #[test]
    fn certification_output_cites_the_measures() {
        let a = assess(&scenario(json!({
            "data": {"personal_individuals": 200_000},
            "records": certified()
        })));
        // A rule's citation is found by its id, not by a longer id it
        // prefixes (M8 is not M8a).
        assert!(a.citation("M8").unwrap().starts_with("M8: "));
        assert!(a.citation("M8a").unwrap().starts_with("M8a: "));
        assert!(
            a.citation(&Obligation::CertificationRenewal.rule_id())
                .unwrap()
                .starts_with("obligation:certification-renewal: ")
        );
        assert_eq!(a.citation("M9"), None);
        let out = serde_json::to_value(&a).unwrap();
        assert_eq!(out["route"], "certification");
        assert_eq!(out["variant"], Value::Null);
        assert_eq!(out["exemption"], Value::Null);
        assert_eq!(out["allowed_now"], true);
        assert_eq!(out["obligations"], json!(CERT_DUTIES));
        assert_eq!(
            out["rules"],
            json!([
                "M8",
                "M8a",
                "M10",
                "obligation:notice-and-separate-consent",
                "obligation:pipia",
                "obligation:certification-renewal"
            ])
        );
        let measures = "Measures for the Certification of Personal Information Export (CAC and SAMR, Order No. 20, in force 1 Jan 2026)";
        assert!(
            out["citations"][1]
                .as_str()
                .unwrap()
                .starts_with(&format!("M8a: {measures}")),
            "{}",
            out["citations"][1]
        );
        assert!(
            out["citations"][5]
                .as_str()
                .unwrap()
                .starts_with(&format!("obligation:certification-renewal: {measures}")),
            "{}",
            out["citations"][5]
        );
        assert_eq!(out["rulebook"], "gba-2026.1");
    }

    #[test]
    fn compliance_md_example() {
        let input = r#"{
  "date": "2026-11-23",
  "exporter": { "region": "mainland:shenzhen", "ciio": false,
                "ftz": { "zone": "qianhai", "on_negative_list": false } },
  "recipient": { "region": "hk" },
  "data": { "level": "general", "personal_individuals": 5000,
            "sensitive_individuals": 0, "categories": ["health"],
            "collected_abroad": false },
  "basis": "consent",
  "year_to_date": { "personal": 0, "sensitive": 0 },
  "records": { "pipia": true, "consent": true,
               "security_assessment_valid_until": null,
               "macao_authorisation": false,
               "hgr_filing": false, "hgr_security_review": false,
               "pi_certification_valid_until": null }
}"#;
        let s: Scenario = serde_json::from_str(input).unwrap();
        let a = assess(&s);
        assert_eq!(outcome(&a), "exempt/ftz-not-on-negative-list");
        assert_eq!(
            a.obligations,
            [
                Obligation::NoticeAndSeparateConsent,
                Obligation::Pipia,
                Obligation::SectorCatalogueCheck
            ]
        );
        assert!(a.allowed_now);
        assert_eq!(
            a.rules,
            [
                "M7",
                "obligation:notice-and-separate-consent",
                "obligation:pipia",
                "obligation:sector-catalogue-check"
            ]
        );
        let out = serde_json::to_value(&a).unwrap();
        let keys: Vec<&str> = out
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut want = vec![
            "route",
            "variant",
            "exemption",
            "allowed_now",
            "blockers",
            "obligations",
            "citations",
            "rulebook",
            "rules",
        ];
        want.sort_unstable();
        assert_eq!(keys, want);
        assert_eq!(out["route"], "exempt");
        assert_eq!(out["variant"], Value::Null);
        assert_eq!(out["exemption"], "ftz-not-on-negative-list");
        assert_eq!(out["rulebook"], "gba-2026.1");
        assert_eq!(out["obligations"][2], "sector-catalogue-check");
        assert_eq!(
            out["citations"][0],
            "M7: Provisions on Promoting and Regulating Cross-border Data Flow (CAC, 22 Mar 2024), Art. 6"
        );
    }

    #[test]
    fn output_json_of_a_gba_decision() {
        let a = assess(&scenario(
            json!({"data": {"personal_individuals": 100_000}, "records": {"consent": false}}),
        ));
        let out = serde_json::to_value(&a).unwrap();
        assert_eq!(out["route"], "gba-standard-contract");
        assert_eq!(out["variant"], "mainland-hk");
        assert_eq!(out["exemption"], Value::Null);
        assert_eq!(out["allowed_now"], false);
        assert_eq!(out["blockers"], json!(["consent"]));
        assert_eq!(
            out["obligations"],
            json!([NC, PIPIA, FILING, ONWARD, RECORDS])
        );
        assert_eq!(out["rules"][0], "M8");
        assert_eq!(out["rules"][1], "M9");
        assert_eq!(out["rules"][2], "blocker:consent");
        let back: Assessment = serde_json::from_value(out).unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn custom_rulebook_moves_the_threshold() {
        let text = include_str!("rulebook.toml")
            .replacen("id = \"gba-2026.1\"", "id = \"test-1\"", 1)
            .replacen(
                "standard_contract_personal = 100_000",
                "standard_contract_personal = 50_000",
                1,
            );
        let rb = Rulebook::parse(&text).unwrap();
        let s = scenario(json!({"recipient": to_de(), "data": {"personal_individuals": 60_000}}));
        let a = assess_with(&rb, &s);
        assert_eq!(a.route, Route::StandardContract);
        assert_eq!(a.rulebook, "test-1");
        assert_eq!(assess(&s).route, Route::Exempt);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn region() -> impl Strategy<Value = &'static str> {
            prop::sample::select(vec![
                "mainland:shenzhen",
                "mainland:zhaoqing",
                "mainland:other",
                "hk",
                "macao",
                "foreign:de",
            ])
        }

        fn count() -> impl Strategy<Value = u64> {
            prop_oneof![
                Just(0u64),
                prop::sample::select(vec![
                    1u64, 500, 501, 9_999, 10_000, 99_999, 100_000, 999_999, 1_000_000
                ]),
                any::<u64>(),
            ]
        }

        prop_compose! {
            fn scenarios()(
                exporter in region().prop_filter("exporters are not foreign", |r| !r.starts_with("foreign")),
                recipient in region(),
                ciio in any::<bool>(),
                ftz in prop::option::of(any::<bool>()),
                level in prop::sample::select(vec!["general", "important", "core"]),
                counts in (count(), count(), count(), count()),
                categories in prop::sample::subsequence(vec!["genomic", "health", "vehicle", "remote-sensing", "other"], 0..3),
                collected_abroad in any::<bool>(),
                basis in prop::sample::select(vec!["consent", "contract-necessity", "hr-management", "emergency"]),
                records in prop::array::uniform5(any::<bool>()),
                (valid_until, certified_until) in (
                    prop::option::of(prop::sample::select(vec!["2026-11-22", "2026-11-23"])),
                    prop::option::of(prop::sample::select(vec!["2026-11-22", "2026-11-23"])),
                ),
            ) -> Scenario {
                serde_json::from_value(json!({
                    "date": "2026-11-23",
                    "exporter": { "region": exporter, "ciio": ciio,
                                  "ftz": ftz.map(|n| json!({"zone": "nansha", "on_negative_list": n})) },
                    "recipient": { "region": recipient },
                    "data": { "level": level, "personal_individuals": counts.0,
                              "sensitive_individuals": counts.1, "categories": categories,
                              "collected_abroad": collected_abroad },
                    "basis": basis,
                    "year_to_date": { "personal": counts.2, "sensitive": counts.3 },
                    "records": { "pipia": records[0], "consent": records[1],
                                 "security_assessment_valid_until": valid_until,
                                 "macao_authorisation": records[2], "hgr_filing": records[3],
                                 "hgr_security_review": records[4],
                                 "pi_certification_valid_until": certified_until }
                }))
                .unwrap()
            }
        }

        proptest! {
            #[test]
            fn assessments_are_consistent(s in scenarios()) {
                let a = assess(&s);
                prop_assert_eq!(&a, &assess(&s));
                prop_assert_eq!(a.allowed_now, a.blockers.is_empty());
                prop_assert!(!a.rules.is_empty() && !a.rules[0].contains(':'));
                prop_assert_eq!(a.citations.len(), a.rules.len());
                prop_assert_eq!(a.exemption.is_some(), a.route == Route::Exempt);
                prop_assert_eq!(a.variant.is_some(), a.route == Route::GbaStandardContract);
                prop_assert!(a.blockers.windows(2).all(|w| w[0] < w[1]));
                prop_assert!(a.obligations.windows(2).all(|w| w[0] < w[1]));
                prop_assert_eq!(
                    a.obligations.contains(&Obligation::Pipia),
                    s.data.has_personal_information()
                );
                prop_assert_eq!(a.rulebook.as_str(), "gba-2026.1");
                // A certification is only ever chosen by M8a, on a valid
                // certificate, and always carries its renewal duty.
                let cert = a.route == Route::Certification;
                prop_assert_eq!(cert, a.rules.iter().any(|r| r == "M8a"));
                prop_assert_eq!(cert, a.obligations.contains(&Obligation::CertificationRenewal));
                if cert {
                    prop_assert!(s.records.pi_certification_valid_until.is_some_and(|u| u >= s.date));
                    prop_assert!(!s.exporter.ciio && s.data.level == DataLevel::General);
                    prop_assert!(a.obligations.iter().all(|o| *o != Obligation::Filing10WorkingDays));
                }
                let json = serde_json::to_string(&s).unwrap();
                prop_assert_eq!(serde_json::from_str::<Scenario>(&json).unwrap(), s);
            }
        }
    }
}
