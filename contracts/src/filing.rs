//! The filing package for an agreement on a contract route: the
//! `filing-10-working-days` obligation of COMPLIANCE.md, prepared as data
//! (JSON) and as a readable document with the fields of the contract's annex.
//! An agreement on the `certification` route files nothing; what it tracks
//! instead is `certification-renewal`, the day to re-apply
//! ([`CertificationRenewal`]).
//!
//! The agreement takes effect on the GBA civil date of its `not_before`
//! (UTC+8, [`GBA_UTC_OFFSET`]); the filing is due a number of working days
//! after that (the rulebook's `filing_working_days`). Holidays are a
//! parameter because the official calendars are published year by year.

use std::collections::BTreeSet;
use std::fmt::{self, Write as _};

use serde::{Deserialize, Serialize};
use time::{Date, Month, Weekday};

use crate::agreement::{Agreement, AgreementId, Certificate};
use crate::classification::DataProfile;
use crate::compliance::{GbaVariant, Obligation, Route, Rulebook};
use crate::descriptor::Institution;
use crate::policy::Purpose;
use crate::region::{GBA_UTC_OFFSET, Region};

/// How the data moves, as the annex asks to state it.
pub const METHOD: &str = "encrypted transfer over the Bayspace data space";

/// The filing is due `working_days` working days after `effective`. Day 1
/// is the first working day strictly after the effective date, so an
/// agreement taking effect on a working day does not count that day. Working
/// days are Monday to Friday that are not in `holidays`; a holiday falling on
/// a weekend changes nothing. `working_days = 0` gives `effective` itself.
///
/// Make-up working days on weekends (the Mainland's adjusted working days)
/// are not modelled: such a Saturday or Sunday is skipped like any other.
/// `None` only when the deadline would pass the last representable date.
pub fn deadline(effective: Date, working_days: u32, holidays: &BTreeSet<Date>) -> Option<Date> {
    let mut day = effective;
    let mut counted = 0;
    while counted < working_days {
        day = day.next_day()?;
        let weekend = matches!(day.weekday(), Weekday::Saturday | Weekday::Sunday);
        if !weekend && !holidays.contains(&day) {
            counted += 1;
        }
    }
    Some(day)
}

/// Working days from `today` to `deadline`, counted as [`deadline`] counts
/// them: the days strictly after `today` up to and including `deadline`
/// that are Monday to Friday and not in `holidays`. Zero when due today;
/// negative when overdue (the working days since the deadline, negated).
pub fn working_days_left(today: Date, deadline: Date, holidays: &BTreeSet<Date>) -> i64 {
    let working = |d: Date| {
        !matches!(d.weekday(), Weekday::Saturday | Weekday::Sunday) && !holidays.contains(&d)
    };
    let (from, to, sign) = if deadline >= today {
        (today, deadline, 1)
    } else {
        (deadline, today, -1)
    };
    let mut n = 0i64;
    let mut day = from;
    while day < to {
        match day.next_day() {
            Some(next) => day = next,
            None => break,
        }
        if working(day) {
            n += 1;
        }
    }
    // Overdue from the first working day after the deadline.
    if sign < 0 { -n.max(1) } else { n }
}

/// The same calendar day `months` months before `date`, or the last day of
/// that month when it is shorter (31 August less 6 months is the end of
/// February). `None` only before the first representable year.
pub fn months_before(date: Date, months: u32) -> Option<Date> {
    let index = i64::from(date.year()) * 12 + i64::from(u8::from(date.month())) - 1;
    let target = index - i64::from(months);
    let year = i32::try_from(target.div_euclid(12)).ok()?;
    let month = Month::try_from(u8::try_from(target.rem_euclid(12) + 1).ok()?).ok()?;
    Date::from_calendar_date(year, month, date.day().min(month.length(year))).ok()
}

/// An office a contract is filed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Authority {
    /// The Cyberspace Administration of Guangdong Province, for the Mainland
    /// party to a GBA Standard Contract.
    GuangdongCac,
    /// The Hong Kong Digital Policy Office, for the Hong Kong party.
    HkDigitalPolicyOffice,
    /// Macao's Personal Data Protection Bureau (DSPDP), for the Macao party.
    MacaoDspdp,
    /// The provincial-level CAC where the exporter is located, for the
    /// national PIPL standard contract.
    ProvincialCac,
}

impl fmt::Display for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Authority::GuangdongCac => {
                "Cyberspace Administration of Guangdong Province (Mainland party)"
            }
            Authority::HkDigitalPolicyOffice => "Hong Kong Digital Policy Office (Hong Kong party)",
            Authority::MacaoDspdp => "Macao Personal Data Protection Bureau, DSPDP (Macao party)",
            Authority::ProvincialCac => {
                "provincial Cyberspace Administration where the exporter is located"
            }
        })
    }
}

/// Why no filing package could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilingError {
    #[error(
        "route {route} needs no contract filing (only standard-contract and gba-standard-contract do)"
    )]
    NoFiling { route: Route },
    #[error("route gba-standard-contract needs its variant to know where to file")]
    MissingVariant,
    #[error("the filing deadline from {effective} falls past the last representable date")]
    DeadlineOutOfRange { effective: Date },
    #[error("agreement {0} is on the certification route but names no certificate")]
    MissingCertificate(AgreementId),
    #[error(
        "the re-application date before {valid_until} falls before the first representable date"
    )]
    ReapplyOutOfRange { valid_until: Date },
}

/// The authorities to file with: each party to a GBA Standard Contract
/// files on its own side; a national standard contract goes to the
/// exporter's provincial CAC.
pub fn authorities(
    route: Route,
    variant: Option<GbaVariant>,
) -> Result<Vec<Authority>, FilingError> {
    match (route, variant) {
        (Route::GbaStandardContract, Some(GbaVariant::MainlandHk)) => Ok(vec![
            Authority::GuangdongCac,
            Authority::HkDigitalPolicyOffice,
        ]),
        (Route::GbaStandardContract, Some(GbaVariant::MainlandMacao)) => {
            Ok(vec![Authority::GuangdongCac, Authority::MacaoDspdp])
        }
        (Route::GbaStandardContract, None) => Err(FilingError::MissingVariant),
        (Route::StandardContract, _) => Ok(vec![Authority::ProvincialCac]),
        (route, _) => Err(FilingError::NoFiling { route }),
    }
}

/// What an agreement on the `certification` route tracks instead of a
/// filing: the certificate it relies on and the `certification-renewal`
/// date, the rulebook's months before the certificate's last valid day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificationRenewal {
    pub agreement_id: AgreementId,
    pub certificate: Certificate,
    /// Re-apply to the certification body by this day.
    pub reapply_by: Date,
}

impl CertificationRenewal {
    pub fn for_agreement(agreement: &Agreement) -> Result<CertificationRenewal, FilingError> {
        let certificate = agreement
            .certificate
            .clone()
            .ok_or_else(|| FilingError::MissingCertificate(agreement.id.clone()))?;
        let months = Rulebook::embedded()
            .validity()
            .certification_reapply_months_before_expiry;
        let reapply_by = months_before(certificate.valid_until, months).ok_or(
            FilingError::ReapplyOutOfRange {
                valid_until: certificate.valid_until,
            },
        )?;
        Ok(CertificationRenewal {
            agreement_id: agreement.id.clone(),
            certificate,
            reapply_by,
        })
    }

    /// What to tell the administrator, one line each.
    pub fn lines(&self) -> Vec<String> {
        vec![
            format!(
                "no contract filing is due for agreement {} on route {}",
                self.agreement_id,
                Route::Certification
            ),
            format!(
                "certificate {} valid until {}",
                self.certificate.reference, self.certificate.valid_until
            ),
            format!(
                "{}: re-apply by {}",
                Obligation::CertificationRenewal,
                self.reapply_by
            ),
        ]
    }
}

/// What an agreement owes the regulator after it is signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilingDue {
    /// A standard contract or GBA contract: the filing package.
    Contract(Box<Filing>),
    /// A certification: no filing, the certificate's renewal instead.
    Certification(CertificationRenewal),
}

impl FilingDue {
    /// The filing package, or the certificate's renewal on the
    /// certification route; refused on routes that owe neither.
    pub fn for_agreement(
        agreement: &Agreement,
        data: &DataProfile,
        pipia_reference: Option<String>,
        holidays: &BTreeSet<Date>,
    ) -> Result<FilingDue, FilingError> {
        if agreement.route == Route::Certification {
            return CertificationRenewal::for_agreement(agreement).map(FilingDue::Certification);
        }
        Filing::for_agreement(agreement, data, pipia_reference, holidays)
            .map(|f| FilingDue::Contract(Box::new(f)))
    }
}

/// A party as the annex names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilingParty {
    pub name: String,
    pub region: Region,
}

/// The filing package of one agreement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filing {
    pub agreement_id: AgreementId,
    pub route: Route,
    pub variant: Option<GbaVariant>,
    /// The exporter.
    pub provider: FilingParty,
    /// The overseas recipient.
    pub consumer: FilingParty,
    pub purpose: Purpose,
    pub method: String,
    /// The dataset's category tags, the closest the data space has to the
    /// annex's categories of personal information.
    pub pi_categories: Vec<String>,
    pub personal_individuals: u64,
    pub sensitive_individuals: u64,
    pub retention: String,
    /// The recipient keeps the data where it is: its own region.
    pub storage_location: Region,
    pub onward_transfer_limit: Option<String>,
    pub pipia_reference: Option<String>,
    pub effective: Date,
    pub deadline: Date,
    pub authorities: Vec<Authority>,
}

impl Filing {
    /// Prepare the package, or refuse when the agreement's route needs no
    /// filing. The onward-transfer limit is stated when the agreement
    /// carries the obligation or its policy forbids onward transfer outside
    /// the GBA.
    pub fn for_agreement(
        agreement: &Agreement,
        data: &DataProfile,
        pipia_reference: Option<String>,
        holidays: &BTreeSet<Date>,
    ) -> Result<Filing, FilingError> {
        let authorities = authorities(agreement.route, agreement.variant)?;
        let effective = agreement.not_before.to_offset(GBA_UTC_OFFSET).date();
        let days = Rulebook::embedded().validity().filing_working_days;
        let deadline = deadline(effective, days, holidays)
            .ok_or(FilingError::DeadlineOutOfRange { effective })?;
        let retention = match agreement.constraints.retention_end() {
            Some(d) => format!("until {d}, then deleted"),
            None => format!(
                "for the agreement's validity (until {})",
                agreement.not_after.to_offset(GBA_UTC_OFFSET).date()
            ),
        };
        let onward_limited = agreement
            .obligations
            .contains(&Obligation::NoOnwardTransferOutsideGba)
            || agreement.constraints.forbids_onward_outside_gba();
        let party = |i: &Institution| FilingParty {
            name: i.name.clone(),
            region: i.region,
        };
        Ok(Filing {
            agreement_id: agreement.id.clone(),
            route: agreement.route,
            variant: agreement.variant,
            provider: party(&agreement.provider),
            consumer: party(&agreement.consumer),
            purpose: agreement.purpose.clone(),
            method: METHOD.to_owned(),
            pi_categories: data.categories.iter().map(|c| c.to_string()).collect(),
            personal_individuals: data.personal_individuals,
            sensitive_individuals: data.sensitive_individuals,
            retention,
            storage_location: agreement.consumer.region,
            onward_transfer_limit: onward_limited
                .then(|| "no onward transfer outside the Greater Bay Area".to_owned()),
            pipia_reference,
            effective,
            deadline,
            authorities,
        })
    }

    /// The package as a readable Markdown document.
    pub fn to_markdown(&self) -> String {
        let mut m = String::new();
        let route = match self.variant {
            Some(v) => format!("{} ({v})", self.route),
            None => self.route.to_string(),
        };
        let categories = if self.pi_categories.is_empty() {
            "none stated".to_owned()
        } else {
            self.pi_categories.join(", ")
        };
        // Writing to a String cannot fail.
        let _ = writeln!(m, "# Contract filing: agreement {}\n", self.agreement_id);
        let _ = writeln!(m, "Route: {route}\n");
        let _ = writeln!(m, "## Parties\n");
        let _ = writeln!(
            m,
            "- Exporter (provider): {} ({})",
            self.provider.name, self.provider.region
        );
        let _ = writeln!(
            m,
            "- Recipient (consumer): {} ({})\n",
            self.consumer.name, self.consumer.region
        );
        let _ = writeln!(m, "## Transfer\n");
        let _ = writeln!(m, "- Purpose: {}", self.purpose);
        let _ = writeln!(m, "- Method: {}", self.method);
        let _ = writeln!(m, "- Categories of personal information: {categories}");
        let _ = writeln!(
            m,
            "- Individuals (non-sensitive personal information): {}",
            self.personal_individuals
        );
        let _ = writeln!(
            m,
            "- Individuals (sensitive personal information): {}",
            self.sensitive_individuals
        );
        let _ = writeln!(m, "- Retention period: {}", self.retention);
        let _ = writeln!(m, "- Storage location: {}", self.storage_location);
        let _ = writeln!(
            m,
            "- Onward-transfer limit: {}",
            self.onward_transfer_limit.as_deref().unwrap_or("none")
        );
        let _ = writeln!(
            m,
            "- PIPIA reference: {}\n",
            self.pipia_reference.as_deref().unwrap_or("not recorded")
        );
        let _ = writeln!(m, "## Filing\n");
        let _ = writeln!(m, "- Agreement effective: {}", self.effective);
        let _ = writeln!(m, "- File by: {}", self.deadline);
        for a in &self.authorities {
            let _ = writeln!(m, "- File with: {a}");
        }
        m
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn working_days_left_counts_like_the_deadline() {
        use time::macros::date;
        let holidays: BTreeSet<Date> = [date!(2026 - 10 - 01)].into();
        // Tuesday 29 September 2026; 1 October is a holiday.
        let today = date!(2026 - 09 - 29);
        let due = deadline(today, 10, &holidays).unwrap();
        assert_eq!(working_days_left(today, due, &holidays), 10);
        assert_eq!(working_days_left(due, due, &holidays), 0);
        // Friday to the next Monday is one working day.
        assert_eq!(
            working_days_left(date!(2026 - 10 - 02), date!(2026 - 10 - 05), &holidays),
            1
        );
        assert_eq!(
            working_days_left(date!(2026 - 10 - 05), date!(2026 - 10 - 02), &holidays),
            -1
        );
        assert_eq!(
            working_days_left(date!(2026 - 10 - 07), date!(2026 - 10 - 02), &holidays),
            -3
        );
    }

    use super::*;
    use crate::agreement::tests::agreement;
    use time::macros::{date, datetime};

    fn none() -> BTreeSet<Date> {
        BTreeSet::new()
    }

    #[test]
    fn deadline_skips_weekends() {
        // Wednesday 2025-04-02: day 1 is Thursday, day 10 is Wednesday 16th.
        assert_eq!(
            deadline(date!(2025 - 04 - 02), 10, &none()),
            Some(date!(2025 - 04 - 16))
        );
        // Thursday: days 1 and 2 are Friday and Monday.
        assert_eq!(
            deadline(date!(2025 - 04 - 03), 2, &none()),
            Some(date!(2025 - 04 - 07))
        );
        assert_eq!(
            deadline(date!(2025 - 04 - 03), 0, &none()),
            Some(date!(2025 - 04 - 03))
        );
    }

    #[test]
    fn deadline_from_a_friday_or_a_saturday() {
        // Friday 4 April and Saturday 5 April both start counting on Monday 7.
        assert_eq!(
            deadline(date!(2025 - 04 - 04), 1, &none()),
            Some(date!(2025 - 04 - 07))
        );
        assert_eq!(
            deadline(date!(2025 - 04 - 05), 1, &none()),
            Some(date!(2025 - 04 - 07))
        );
        assert_eq!(
            deadline(date!(2025 - 04 - 04), 10, &none()),
            Some(date!(2025 - 04 - 18))
        );
        assert_eq!(
            deadline(date!(2025 - 04 - 05), 10, &none()),
            Some(date!(2025 - 04 - 18))
        );
    }

    #[test]
    fn deadline_skips_listed_holidays_but_not_weekend_ones() {
        // Labour Day holidays, Thursday 1 and Friday 2 May 2025.
        let labour: BTreeSet<Date> = [date!(2025 - 05 - 01), date!(2025 - 05 - 02)].into();
        // From Wednesday 30 April: Mon 5 May is day 1.
        assert_eq!(
            deadline(date!(2025 - 04 - 30), 1, &labour),
            Some(date!(2025 - 05 - 05))
        );
        assert_eq!(
            deadline(date!(2025 - 04 - 30), 10, &labour),
            Some(date!(2025 - 05 - 16))
        );
        assert_eq!(
            deadline(date!(2025 - 04 - 30), 10, &none()),
            Some(date!(2025 - 05 - 14))
        );
        // A holiday on Saturday 3 May costs nothing more.
        let weekend: BTreeSet<Date> = [date!(2025 - 05 - 03)].into();
        assert_eq!(
            deadline(date!(2025 - 04 - 30), 10, &weekend),
            Some(date!(2025 - 05 - 14))
        );
    }

    #[test]
    fn authorities_follow_the_route_and_variant() {
        assert_eq!(
            authorities(Route::GbaStandardContract, Some(GbaVariant::MainlandHk)).unwrap(),
            [Authority::GuangdongCac, Authority::HkDigitalPolicyOffice]
        );
        assert_eq!(
            authorities(Route::GbaStandardContract, Some(GbaVariant::MainlandMacao)).unwrap(),
            [Authority::GuangdongCac, Authority::MacaoDspdp]
        );
        assert_eq!(
            authorities(Route::StandardContract, None).unwrap(),
            [Authority::ProvincialCac]
        );
        assert_eq!(
            authorities(Route::GbaStandardContract, None),
            Err(FilingError::MissingVariant)
        );
        for route in [
            Route::Exempt,
            Route::SecurityAssessment,
            Route::MacaoAuthorisation,
            Route::Certification,
        ] {
            assert_eq!(
                authorities(route, None),
                Err(FilingError::NoFiling { route })
            );
        }
    }

    fn profile() -> DataProfile {
        serde_json::from_value(serde_json::json!({
            "level": "general",
            "personal_individuals": 1200,
            "sensitive_individuals": 300,
            "categories": ["health", "cohort-study"],
        }))
        .unwrap()
    }

    #[test]
    fn a_gba_agreement_produces_both_forms() {
        let mut a = agreement();
        // 2025-04-01 18:00 UTC is Wednesday 2 April in GBA time.
        a.not_before = datetime!(2025-04-01 18:00 UTC);
        let holidays: BTreeSet<Date> = [date!(2025 - 04 - 04)].into(); // Qingming
        let f = Filing::for_agreement(&a, &profile(), Some("PIPIA-2025-017".into()), &holidays)
            .unwrap();
        assert_eq!(f.effective, date!(2025 - 04 - 02));
        assert_eq!(f.deadline, date!(2025 - 04 - 17));
        assert_eq!(
            f.authorities,
            [Authority::GuangdongCac, Authority::HkDigitalPolicyOffice]
        );
        assert_eq!(f.pi_categories, ["health", "cohort-study"]);
        assert_eq!(f.storage_location, "hk".parse::<Region>().unwrap());
        assert_eq!(f.retention, "until 2027-06-30, then deleted");
        assert!(f.onward_transfer_limit.is_some());
        assert_eq!(f.method, METHOD);

        let json = serde_json::to_value(&f).unwrap();
        assert_eq!(json["deadline"], "2025-04-17");
        assert_eq!(json["route"], "gba-standard-contract");
        assert_eq!(json["variant"], "mainland-hk");
        assert_eq!(json["provider"]["region"], "mainland:shenzhen");
        assert_eq!(json["authorities"][1], "hk-digital-policy-office");
        assert_eq!(serde_json::from_value::<Filing>(json).unwrap(), f);

        let md = f.to_markdown();
        for needle in [
            "Shenzhen Bay Lab (mainland:shenzhen)",
            "University of Hong Kong (hk)",
            "Purpose: academic-research",
            "Method: encrypted transfer over the Bayspace data space",
            "Categories of personal information: health, cohort-study",
            "(non-sensitive personal information): 1200",
            "(sensitive personal information): 300",
            "Retention period: until 2027-06-30",
            "Storage location: hk",
            "Onward-transfer limit: no onward transfer outside the Greater Bay Area",
            "PIPIA reference: PIPIA-2025-017",
            "File by: 2025-04-17",
            "Hong Kong Digital Policy Office",
            "Cyberspace Administration of Guangdong Province",
        ] {
            assert!(md.contains(needle), "missing {needle:?} in\n{md}");
        }
    }

    #[test]
    fn without_retention_or_onward_limit_the_defaults_are_stated() {
        let mut a = agreement();
        a.route = Route::StandardContract;
        a.variant = None;
        a.obligations.clear();
        a.constraints.permissions[0].duties.clear();
        a.constraints.prohibitions.clear();
        a.constraints.permissions.push(crate::policy::Permission {
            action: crate::policy::Action::Distribute,
            constraints: vec![],
            duties: vec![],
        });
        let f = Filing::for_agreement(&a, &profile(), None, &none()).unwrap();
        assert_eq!(
            f.retention,
            "for the agreement's validity (until 2026-01-01)"
        );
        assert_eq!(f.onward_transfer_limit, None);
        assert_eq!(f.authorities, [Authority::ProvincialCac]);
        let md = f.to_markdown();
        assert!(md.contains("Onward-transfer limit: none"), "{md}");
        assert!(md.contains("PIPIA reference: not recorded"), "{md}");
    }

    #[test]
    fn months_before_clamps_to_the_end_of_a_shorter_month() {
        assert_eq!(
            months_before(date!(2028 - 06 - 30), 6),
            Some(date!(2027 - 12 - 30))
        );
        assert_eq!(
            months_before(date!(2028 - 08 - 31), 6),
            Some(date!(2028 - 02 - 29))
        );
        assert_eq!(
            months_before(date!(2027 - 08 - 31), 6),
            Some(date!(2027 - 02 - 28))
        );
        assert_eq!(
            months_before(date!(2029 - 03 - 15), 6),
            Some(date!(2028 - 09 - 15))
        );
        assert_eq!(
            months_before(date!(2029 - 03 - 15), 0),
            Some(date!(2029 - 03 - 15))
        );
        assert_eq!(months_before(Date::MIN, 1), None);
    }

    #[test]
    fn a_certified_agreement_owes_no_filing_but_a_renewal() {
        let a = crate::agreement::tests::certified_agreement();
        assert_eq!(
            Filing::for_agreement(&a, &profile(), None, &none()),
            Err(FilingError::NoFiling {
                route: Route::Certification
            })
        );
        let FilingDue::Certification(r) =
            FilingDue::for_agreement(&a, &profile(), None, &none()).unwrap()
        else {
            panic!("expected a certification renewal");
        };
        assert_eq!(r.certificate.reference, "CQC-PI-2026-0042");
        assert_eq!(r.certificate.valid_until, date!(2028 - 08 - 31));
        assert_eq!(r.reapply_by, date!(2028 - 02 - 29));
        let lines = r.lines().join("\n");
        for needle in [
            "no contract filing is due",
            "on route certification",
            "certificate CQC-PI-2026-0042 valid until 2028-08-31",
            "certification-renewal: re-apply by 2028-02-29",
        ] {
            assert!(lines.contains(needle), "missing {needle:?} in\n{lines}");
        }
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["reapply_by"], "2028-02-29");
        assert_eq!(json["certificate"]["valid_until"], "2028-08-31");

        let mut broken = a.clone();
        broken.certificate = None;
        assert_eq!(
            FilingDue::for_agreement(&broken, &profile(), None, &none()),
            Err(FilingError::MissingCertificate(a.id.clone()))
        );
        // A contract route still gets its package.
        assert!(matches!(
            FilingDue::for_agreement(&agreement(), &profile(), None, &none()),
            Ok(FilingDue::Contract(_))
        ));
    }

    #[test]
    fn exempt_route_is_refused() {
        let mut a = agreement();
        a.route = Route::Exempt;
        a.variant = None;
        assert_eq!(
            Filing::for_agreement(&a, &profile(), None, &none()),
            Err(FilingError::NoFiling {
                route: Route::Exempt
            })
        );
    }
}
