//! The policies nodes publish in their offers, built from what an
//! administrator types (`bayspace dataset publish --purpose P…
//! --recipient-region R… --valid-days N`).

use time::{Date, Duration, OffsetDateTime};

use super::model::{Action, Constraint, Duty, DutyAction, Permission, Policy, Purpose, RegionSet};
use super::validate::PolicyError;

/// Builds an offer policy. Start with [`Policy::offer`].
///
/// The policy it builds has one `use` permission carrying every constraint
/// given; with [`allow_onward_within_gba`](Self::allow_onward_within_gba) a
/// `distribute` permission with the same purpose, recipient and window
/// constraints plus the onward-transfer-outside-GBA constraint; and, with
/// [`delete_by`](Self::delete_by), a delete duty as a policy-wide
/// obligation. Without a `distribute` permission, onward transfer is refused
/// altogether.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct OfferPolicyBuilder {
    purposes: Vec<Purpose>,
    recipients: Option<RegionSet>,
    not_before: Option<OffsetDateTime>,
    not_after: Option<OffsetDateTime>,
    use_limit: Option<u64>,
    delete_by: Option<Date>,
    onward_within_gba: bool,
    /// An error found while setting a field, reported by `build`, so that
    /// every setter can chain.
    pending: Option<PolicyError>,
}

impl Policy {
    /// Starts an offer that allows use for these purposes only.
    pub fn offer(purposes: Vec<Purpose>) -> OfferPolicyBuilder {
        OfferPolicyBuilder {
            purposes,
            recipients: None,
            not_before: None,
            not_after: None,
            use_limit: None,
            delete_by: None,
            onward_within_gba: false,
            pending: None,
        }
    }
}

impl OfferPolicyBuilder {
    /// Restricts where recipients may be. Without it, recipients anywhere
    /// may ask (the compliance assessment still applies).
    pub fn recipients(mut self, allowed: RegionSet) -> Self {
        self.recipients = Some(allowed);
        self
    }

    pub fn valid_from(mut self, not_before: OffsetDateTime) -> Self {
        self.not_before = Some(not_before);
        self
    }

    pub fn valid_until(mut self, not_after: OffsetDateTime) -> Self {
        self.not_after = Some(not_after);
        self
    }

    /// Valid from `now` for `days` whole days (`--valid-days N`).
    pub fn valid_for_days(mut self, now: OffsetDateTime, days: u32) -> Self {
        if days == 0 {
            self.pending.get_or_insert(PolicyError::ZeroValidity);
            return self;
        }
        match now.checked_add(Duration::days(i64::from(days))) {
            Some(end) => {
                self.not_before = Some(now);
                self.not_after = Some(end);
            }
            None => {
                self.pending
                    .get_or_insert(PolicyError::ValidityTooLong { from: now, days });
            }
        }
        self
    }

    /// At most `releases` releases under one agreement.
    pub fn use_limit(mut self, releases: u64) -> Self {
        self.use_limit = Some(releases);
        self
    }

    /// The data must be deleted by the end of this UTC day.
    pub fn delete_by(mut self, date: Date) -> Self {
        self.delete_by = Some(date);
        self
    }

    /// Lets the recipient pass the data on, but only to recipients in the
    /// GBA.
    pub fn allow_onward_within_gba(mut self) -> Self {
        self.onward_within_gba = true;
        self
    }

    /// The policy, validated.
    pub fn build(self) -> Result<Policy, PolicyError> {
        if let Some(e) = self.pending {
            return Err(e);
        }
        let mut shared = vec![Constraint::Purpose {
            is_any_of: self.purposes,
        }];
        if let Some(allowed) = self.recipients {
            shared.push(Constraint::RecipientRegion { allowed });
        }
        if self.not_before.is_some() || self.not_after.is_some() {
            shared.push(Constraint::DateTime {
                not_before: self.not_before,
                not_after: self.not_after,
            });
        }
        let mut use_constraints = shared.clone();
        if let Some(lteq) = self.use_limit {
            use_constraints.push(Constraint::Count { lteq });
        }
        let mut permissions = vec![Permission {
            action: Action::Use,
            constraints: use_constraints,
            duties: vec![],
        }];
        if self.onward_within_gba {
            shared.push(Constraint::OnwardTransferOutsideGbaProhibited);
            permissions.push(Permission {
                action: Action::Distribute,
                constraints: shared,
                duties: vec![],
            });
        }
        let obligations = self
            .delete_by
            .map(|delete_by| Duty {
                action: DutyAction::Delete,
                constraints: vec![Constraint::Retention { delete_by }],
            })
            .into_iter()
            .collect();
        let policy = Policy {
            permissions,
            prohibitions: vec![],
            obligations,
        };
        policy.validate()?;
        Ok(policy)
    }
}

#[cfg(test)]
mod tests {
    use time::macros::{date, datetime};

    use super::*;
    use crate::policy::{Refusal, RequestContext, evaluate};
    use crate::region::Region;

    fn purposes(list: &[&str]) -> Vec<Purpose> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn builds_what_the_publish_command_asks_for() {
        let now = datetime!(2026-03-01 09:00 +8);
        let policy = Policy::offer(purposes(&["academic-research"]))
            .recipients(RegionSet::from_args(["gba"]).unwrap())
            .valid_for_days(now, 30)
            .use_limit(5)
            .delete_by(date!(2026 - 12 - 31))
            .build()
            .unwrap();
        assert_eq!(policy.use_limit(), Some(5));
        assert_eq!(policy.retention_end(), Some(date!(2026 - 12 - 31)));
        assert!(policy.forbids_onward_outside_gba());
        assert!(!policy.allows_recipients_outside_gba());

        let ctx = RequestContext {
            action: Action::Use,
            purpose: "academic-research".parse().unwrap(),
            recipient_region: Region::Macao,
            now,
            uses_so_far: 0,
            onward_recipient: None,
        };
        assert!(evaluate(&policy, &ctx).allowed);
        let late = RequestContext {
            now: now + Duration::days(30) + Duration::seconds(1),
            ..ctx.clone()
        };
        assert!(matches!(
            &evaluate(&policy, &late).reasons[..],
            [Refusal::Expired { .. }]
        ));
        let onward = RequestContext {
            action: Action::Distribute,
            onward_recipient: Some(Region::HongKong),
            ..ctx
        };
        assert_eq!(
            evaluate(&policy, &onward).reasons,
            vec![Refusal::NoPermission {
                action: Action::Distribute
            }]
        );
    }

    #[test]
    fn onward_within_gba_adds_a_distribute_permission() {
        let policy = Policy::offer(purposes(&["public-health"]))
            .allow_onward_within_gba()
            .build()
            .unwrap();
        assert!(policy.forbids_onward_outside_gba());
        assert!(policy.allows_recipients_outside_gba());
        let ctx = |to: &str| RequestContext {
            action: Action::Distribute,
            purpose: "public-health".parse().unwrap(),
            recipient_region: "foreign:sg".parse().unwrap(),
            now: datetime!(2026-03-01 0:00 UTC),
            uses_so_far: 0,
            onward_recipient: Some(to.parse().unwrap()),
        };
        assert!(evaluate(&policy, &ctx("mainland:zhuhai")).allowed);
        assert!(!evaluate(&policy, &ctx("mainland:other")).allowed);
    }

    #[test]
    fn refuses_nonsense() {
        assert!(matches!(
            Policy::offer(vec![]).build(),
            Err(PolicyError::EmptyList {
                operand: "purpose",
                ..
            })
        ));
        let p = || Policy::offer(purposes(&["academic-research"]));
        let now = datetime!(2026-03-01 0:00 UTC);
        assert_eq!(
            p().valid_for_days(now, 0).build(),
            Err(PolicyError::ZeroValidity)
        );
        assert!(matches!(
            p().valid_for_days(datetime!(9999-12-01 0:00 UTC), 365)
                .build(),
            Err(PolicyError::ValidityTooLong { days: 365, .. })
        ));
        assert!(matches!(
            p().valid_from(now)
                .valid_until(now - Duration::SECOND)
                .build(),
            Err(PolicyError::WindowEndsBeforeStart { .. })
        ));
        assert!(matches!(
            p().use_limit(0).build(),
            Err(PolicyError::ZeroCount { .. })
        ));
    }

    #[test]
    fn region_args() {
        assert_eq!(RegionSet::from_args(["gba"]), Ok(RegionSet::GbaOnly));
        assert_eq!(
            RegionSet::from_args(["hk", "macao", "hk"]),
            Ok(RegionSet::AnyOf(vec![Region::HongKong, Region::Macao]))
        );
        let mixed = RegionSet::from_args(["foreign:sg", "gba", "hk"]).unwrap();
        let RegionSet::AnyOf(list) = &mixed else {
            panic!("{mixed:?}")
        };
        assert_eq!(list.len(), 12);
        assert!(mixed.contains(&"foreign:sg".parse().unwrap()));
        assert!(mixed.contains(&"mainland:jiangmen".parse().unwrap()));
        assert!(!mixed.contains(&"mainland:other".parse().unwrap()));
        assert_eq!(
            RegionSet::from_args(Vec::<String>::new()),
            Err(crate::policy::RegionSetError::Empty)
        );
        let err = RegionSet::from_args(["hk", "mainland:shenzen"]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("recipient region #2: unknown Mainland city `shenzen`")
        );
    }
}
