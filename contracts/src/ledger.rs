//! The exporter's "year to date" of COMPLIANCE.md: how many individuals'
//! personal information it has already sent out of the Mainland this
//! calendar year on national routes, the input of step M8.
//!
//! Years are calendar years in GBA civil time ([`GBA_UTC_OFFSET`]), so the
//! count resets at 00:00 on 1 January Asia/Shanghai time, which is 16:00 UTC
//! on 31 December.
//!
//! Which transfers count (see [`counts_toward_year_to_date`]):
//! - `security-assessment`, `standard-contract` and `certification`:
//!   national routes. A certification stands in for a standard contract
//!   inside the same Art. 8 band, so it counts towards leaving that band.
//! - `exempt` with `below-threshold`: the national route M8 chose because
//!   the running total was still small, so it must accumulate towards the
//!   100 000 and 1 000 000 thresholds. An `exempt` route with no exemption
//!   given is counted too, erring towards reaching a threshold early.
//! - Not counted: the other exemptions. The Cross-border Data Flow
//!   Provisions (Art. 8) leave transfers exempted under Arts. 3 to 6
//!   (no personal data, collected abroad, contract necessity, HR,
//!   emergency, free-trade-zone lists) out of the cumulative count, and
//!   `not-cross-border` / `no-statutory-restriction` send nothing out of the
//!   Mainland. Nor `gba-standard-contract` (not a national route, no volume
//!   limit), `macao-authorisation` (a Macao exporter's route) or
//!   `prohibited` (nothing may leave).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::compliance::{Exemption, Route, YearToDate};
use crate::region::GBA_UTC_OFFSET;

/// Individuals sent out in one calendar year.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct YearCounts {
    pub personal: u64,
    pub sensitive: u64,
}

/// One exporter's counts, by calendar year in GBA civil time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ledger {
    pub years: BTreeMap<i32, YearCounts>,
}

/// Whether a transfer on `route` (with `exemption` when the route is
/// `exempt`) adds to the exporter's year to date. The module documentation
/// gives the reading.
pub fn counts_toward_year_to_date(route: Route, exemption: Option<Exemption>) -> bool {
    match route {
        Route::SecurityAssessment | Route::StandardContract | Route::Certification => true,
        Route::Exempt => matches!(exemption, None | Some(Exemption::BelowThreshold)),
        Route::GbaStandardContract | Route::MacaoAuthorisation | Route::Prohibited => false,
    }
}

/// The calendar year `at` falls in, in GBA civil time.
fn gba_year(at: OffsetDateTime) -> i32 {
    at.to_offset(GBA_UTC_OFFSET).year()
}

impl Ledger {
    /// Record a transfer made at `at`. Returns whether it was counted.
    /// Counts saturate rather than wrap: a saturated count is already far
    /// past every threshold.
    pub fn record(
        &mut self,
        at: OffsetDateTime,
        route: Route,
        exemption: Option<Exemption>,
        personal: u64,
        sensitive: u64,
    ) -> bool {
        if !counts_toward_year_to_date(route, exemption) {
            return false;
        }
        let year = self.years.entry(gba_year(at)).or_default();
        year.personal = year.personal.saturating_add(personal);
        year.sensitive = year.sensitive.saturating_add(sensitive);
        true
    }

    /// The year to date at `at`, as step M8 reads it.
    pub fn year_to_date(&self, at: OffsetDateTime) -> YearToDate {
        let y = self.years.get(&gba_year(at)).copied().unwrap_or_default();
        YearToDate {
            personal: y.personal,
            sensitive: y.sensitive,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn ytd(personal: u64, sensitive: u64) -> YearToDate {
        YearToDate {
            personal,
            sensitive,
        }
    }

    #[test]
    fn the_year_resets_at_midnight_gba_time() {
        let mut l = Ledger::default();
        assert!(l.record(
            datetime!(2025-12-31 15:59:59 UTC),
            Route::StandardContract,
            None,
            100,
            2
        ));
        // 16:00 UTC on 31 December is 00:00 on 1 January in UTC+8.
        assert!(l.record(
            datetime!(2025-12-31 16:00 UTC),
            Route::StandardContract,
            None,
            7,
            1
        ));
        assert_eq!(
            l.year_to_date(datetime!(2025-12-31 15:59:59 UTC)),
            ytd(100, 2)
        );
        assert_eq!(l.year_to_date(datetime!(2025-12-31 16:00 UTC)), ytd(7, 1));
        assert_eq!(l.year_to_date(datetime!(2026-01-01 00:00 +8)), ytd(7, 1));
        assert_eq!(l.year_to_date(datetime!(2025-12-31 23:59 +8)), ytd(100, 2));
        assert_eq!(l.year_to_date(datetime!(2027-03-01 12:00 UTC)), ytd(0, 0));
        assert_eq!(l.years.keys().copied().collect::<Vec<_>>(), [2025, 2026]);
    }

    #[test]
    fn counts_accumulate_and_saturate() {
        let mut l = Ledger::default();
        let at = datetime!(2026-05-04 09:00 +8);
        l.record(at, Route::SecurityAssessment, None, 10, 0);
        l.record(at, Route::StandardContract, None, 5, 3);
        l.record(at, Route::Exempt, Some(Exemption::BelowThreshold), 40, 0);
        assert_eq!(l.year_to_date(at), ytd(55, 3));
        assert!(l.record(at, Route::Certification, None, 100_000, 2));
        assert_eq!(l.year_to_date(at), ytd(100_055, 5));
        l.record(at, Route::StandardContract, None, u64::MAX, u64::MAX);
        assert_eq!(l.year_to_date(at), ytd(u64::MAX, u64::MAX));
    }

    #[test]
    fn routes_that_do_not_leave_the_mainland_nationally_are_not_counted() {
        let mut l = Ledger::default();
        let at = datetime!(2026-05-04 09:00 +8);
        for (route, exemption) in [
            (Route::GbaStandardContract, None),
            (Route::Exempt, Some(Exemption::NotCrossBorder)),
            (Route::Exempt, Some(Exemption::NoStatutoryRestriction)),
            (Route::Exempt, Some(Exemption::ContractNecessity)),
            (Route::Exempt, Some(Exemption::Emergency)),
            (Route::Exempt, Some(Exemption::CollectedAbroad)),
            (Route::Exempt, Some(Exemption::FtzNotOnNegativeList)),
            (Route::MacaoAuthorisation, None),
            (Route::Prohibited, None),
        ] {
            assert!(!l.record(at, route, exemption, 1000, 10), "{route}");
        }
        assert_eq!(l, Ledger::default());
        assert!(l.record(at, Route::Exempt, None, 1, 0));
        assert_eq!(l.year_to_date(at), ytd(1, 0));
    }

    #[test]
    fn round_trips_through_json() {
        let mut l = Ledger::default();
        l.record(
            datetime!(2026-05-04 09:00 +8),
            Route::StandardContract,
            None,
            5,
            3,
        );
        let json = serde_json::to_string(&l).unwrap();
        assert_eq!(json, r#"{"years":{"2026":{"personal":5,"sensitive":3}}}"#);
        assert_eq!(serde_json::from_str::<Ledger>(&json).unwrap(), l);
    }
}
