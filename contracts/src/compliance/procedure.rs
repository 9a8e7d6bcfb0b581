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
    pub(super) const ALL: [Step; 19] = [
        Step::M0,
        Step::M1,
        Step::M2,
        Step::M3,
        Step::M4,
        Step::M5,
        Step::M6,
        Step::M7,
        Step::M8,
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
/// list M8 first, since its count is what made them apply.
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
    let national = if sens >= t.security_assessment_sensitive || p >= t.security_assessment_personal
    {
        Decision::route(Step::M10, Route::SecurityAssessment)
    } else if sens >= t.standard_contract_sensitive || p >= t.standard_contract_personal {
        Decision::route(Step::M10, Route::StandardContract)
    } else {
        Decision::exempt(Step::M10, Exemption::BelowThreshold)
    };

    let gba_variant = match s.recipient.region {
        Region::HongKong => Some(GbaVariant::MainlandHk),
        Region::Macao => Some(GbaVariant::MainlandMacao),
        _ => None,
    };
    let mut decision = match gba_variant {
        Some(v)
            if national.route != Route::Exempt && in_gba9(rulebook, s.exporter.region.region()) =>
        {
            Decision::gba(Step::M9, v)
        }
        _ => national,
    };
    decision.steps.insert(0, Step::M8);
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
                && !r
                    .security_assessment_valid_until
                    .is_some_and(|until| until >= s.date)
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
