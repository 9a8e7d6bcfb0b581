//! Evaluation of a policy against one request at one moment.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::{Date, OffsetDateTime};

use super::model::{Action, Constraint, Policy, Purpose, RegionSet, fmt_instant, write_list};
use crate::region::Region;

/// What a request looks like at the moment it is decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestContext {
    pub action: Action,
    pub purpose: Purpose,
    /// Where the direct recipient (the consumer named in the agreement) is.
    pub recipient_region: Region,
    /// The moment of the decision; passed in because this crate reads no
    /// clock.
    pub now: OffsetDateTime,
    /// Releases already made under the agreement, not counting this one.
    pub uses_so_far: u64,
    /// For [`Action::Distribute`]: where the third party receiving the data
    /// onward is. Ignored for [`Action::Use`].
    pub onward_recipient: Option<Region>,
}

/// The outcome of [`evaluate`]: allowed, or every reason it is not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub allowed: bool,
    pub reasons: Vec<Refusal>,
}

impl Decision {
    fn from_reasons(reasons: Vec<Refusal>) -> Decision {
        Decision {
            allowed: reasons.is_empty(),
            reasons,
        }
    }
}

/// One reason a request is refused. The messages reach researchers, so each
/// names the value the request had and what the policy allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "kebab-case", tag = "reason")]
pub enum Refusal {
    #[error(
        "the purpose `{purpose}` is not allowed; allowed purposes: {}",
        List(allowed)
    )]
    PurposeNotAllowed {
        purpose: Purpose,
        allowed: Vec<Purpose>,
    },
    #[error("recipients in `{region}` are not allowed; allowed: {allowed}")]
    RegionNotAllowed { region: Region, allowed: RegionSet },
    #[error("the policy does not allow this before {}", fmt_instant(not_before))]
    NotYetValid {
        #[serde(with = "time::serde::rfc3339")]
        not_before: OffsetDateTime,
    },
    #[error(
        "the policy allowed this only until {}, and that time has passed",
        fmt_instant(not_after)
    )]
    Expired {
        #[serde(with = "time::serde::rfc3339")]
        not_after: OffsetDateTime,
    },
    #[error("all {limit} releases the policy allows have been made")]
    UseLimitReached { limit: u64 },
    #[error(
        "the retention period ended with {delete_by} (GBA time, UTC+8): the data had to be deleted by then and may no longer be used"
    )]
    RetentionPassed { delete_by: Date },
    #[error(
        "onward transfer to `{recipient}` is prohibited: onward recipients must be in the GBA (its nine Mainland cities, hk or macao)"
    )]
    OnwardTransferOutsideGba { recipient: Region },
    #[error(
        "onward transfer is allowed only within the GBA, and the request does not say where the onward recipient is"
    )]
    OnwardRecipientUnknown,
    #[error("`{action}` is prohibited{}", When(conditions))]
    Prohibited {
        action: Action,
        /// The conditions under which the prohibition applies (all of them
        /// held); empty for an unconditional prohibition.
        conditions: Vec<Constraint>,
    },
    #[error("the policy grants no permission to `{action}`")]
    NoPermission { action: Action },
}

struct List<'a, T>(&'a [T]);

impl<T: fmt::Display> fmt::Display for List<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_list(f, self.0)
    }
}

struct When<'a>(&'a [Constraint]);

impl fmt::Display for When<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.0.iter().enumerate() {
            f.write_str(if i == 0 { " when " } else { " and " })?;
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

/// Decides one request. See the [module documentation](super) for the
/// semantics.
pub fn evaluate(policy: &Policy, ctx: &RequestContext) -> Decision {
    let mut reasons = Vec::new();

    let candidates: Vec<_> = policy
        .permissions
        .iter()
        .filter(|p| p.action == ctx.action)
        .collect();
    if candidates.is_empty() {
        reasons.push(Refusal::NoPermission { action: ctx.action });
    } else {
        let failures: Vec<Vec<Refusal>> = candidates
            .iter()
            .map(|p| {
                p.constraints
                    .iter()
                    .filter(|c| !matches!(c, Constraint::Retention { .. }))
                    .filter_map(|c| check(c, ctx))
                    .collect()
            })
            .collect();
        if failures.iter().all(|f| !f.is_empty()) {
            for refusal in failures.into_iter().flatten() {
                push_unique(&mut reasons, refusal);
            }
        }
    }

    for delete_by in policy.retention_dates() {
        if let Some(refusal) = check_retention(delete_by, ctx.now) {
            push_unique(&mut reasons, refusal);
        }
    }

    for prohibition in policy
        .prohibitions
        .iter()
        .filter(|p| p.action == ctx.action)
    {
        if prohibition
            .constraints
            .iter()
            .all(|c| check(c, ctx).is_none())
        {
            push_unique(
                &mut reasons,
                Refusal::Prohibited {
                    action: ctx.action,
                    conditions: prohibition.constraints.clone(),
                },
            );
        }
    }

    Decision::from_reasons(reasons)
}

fn push_unique(reasons: &mut Vec<Refusal>, refusal: Refusal) {
    if !reasons.contains(&refusal) {
        reasons.push(refusal);
    }
}

/// `None` when the constraint holds for this request.
fn check(constraint: &Constraint, ctx: &RequestContext) -> Option<Refusal> {
    match constraint {
        Constraint::Purpose { is_any_of } => {
            (!is_any_of.contains(&ctx.purpose)).then(|| Refusal::PurposeNotAllowed {
                purpose: ctx.purpose.clone(),
                allowed: is_any_of.clone(),
            })
        }
        Constraint::RecipientRegion { allowed } => {
            (!allowed.contains(&ctx.recipient_region)).then(|| Refusal::RegionNotAllowed {
                region: ctx.recipient_region,
                allowed: allowed.clone(),
            })
        }
        Constraint::DateTime {
            not_before,
            not_after,
        } => match (not_before, not_after) {
            (Some(start), _) if ctx.now < *start => {
                Some(Refusal::NotYetValid { not_before: *start })
            }
            (_, Some(end)) if ctx.now > *end => Some(Refusal::Expired { not_after: *end }),
            _ => None,
        },
        Constraint::Count { lteq } => {
            (ctx.uses_so_far >= *lteq).then_some(Refusal::UseLimitReached { limit: *lteq })
        }
        Constraint::Retention { delete_by } => check_retention(*delete_by, ctx.now),
        Constraint::OnwardTransferOutsideGbaProhibited => {
            match (ctx.action, ctx.onward_recipient) {
                (Action::Use, _) => None,
                (Action::Distribute, None) => Some(Refusal::OnwardRecipientUnknown),
                (Action::Distribute, Some(r)) => {
                    (!r.is_in_gba()).then_some(Refusal::OnwardTransferOutsideGba { recipient: r })
                }
            }
        }
    }
}

/// The data may be used through the whole of `delete_by`, as a calendar day
/// in the GBA, where every member keeps UTC+8.
fn check_retention(delete_by: Date, now: OffsetDateTime) -> Option<Refusal> {
    (now.to_offset(crate::region::GBA_UTC_OFFSET).date() > delete_by)
        .then_some(Refusal::RetentionPassed { delete_by })
}

#[cfg(test)]
mod tests {
    use time::macros::{date, datetime};

    use super::*;
    use crate::policy::{Duty, DutyAction, Permission, Prohibition};

    fn purpose(s: &str) -> Purpose {
        s.parse().unwrap()
    }

    fn region(s: &str) -> Region {
        s.parse().unwrap()
    }

    fn ctx() -> RequestContext {
        RequestContext {
            action: Action::Use,
            purpose: purpose("academic-research"),
            recipient_region: Region::HongKong,
            now: datetime!(2026-03-01 12:00 UTC),
            uses_so_far: 0,
            onward_recipient: None,
        }
    }

    fn permit(action: Action, constraints: Vec<Constraint>) -> Policy {
        Policy {
            permissions: vec![Permission {
                action,
                constraints,
                duties: vec![],
            }],
            ..Policy::default()
        }
    }

    fn use_with(c: Constraint) -> Policy {
        permit(Action::Use, vec![c])
    }

    fn refused_with(policy: &Policy, ctx: &RequestContext) -> Vec<Refusal> {
        let d = evaluate(policy, ctx);
        assert!(!d.allowed, "expected a refusal, got {d:?}");
        d.reasons
    }

    fn assert_allowed(policy: &Policy, ctx: &RequestContext) {
        let d = evaluate(policy, ctx);
        assert!(d.allowed && d.reasons.is_empty(), "{d:?}");
    }

    #[test]
    fn purpose_is_any_of() {
        let p = use_with(Constraint::Purpose {
            is_any_of: vec![purpose("academic-research"), purpose("public-health")],
        });
        assert_allowed(&p, &ctx());
        let c = RequestContext {
            purpose: purpose("marketing"),
            ..ctx()
        };
        let reasons = refused_with(&p, &c);
        assert_eq!(
            reasons,
            vec![Refusal::PurposeNotAllowed {
                purpose: purpose("marketing"),
                allowed: vec![purpose("academic-research"), purpose("public-health")],
            }]
        );
        assert_eq!(
            reasons[0].to_string(),
            "the purpose `marketing` is not allowed; allowed purposes: academic-research, public-health"
        );
    }

    #[test]
    fn recipient_region_is_any_of() {
        let p = use_with(Constraint::RecipientRegion {
            allowed: RegionSet::AnyOf(vec![Region::HongKong, region("foreign:sg")]),
        });
        assert_allowed(&p, &ctx());
        assert_allowed(
            &p,
            &RequestContext {
                recipient_region: region("foreign:sg"),
                ..ctx()
            },
        );
        let reasons = refused_with(
            &p,
            &RequestContext {
                recipient_region: Region::Macao,
                ..ctx()
            },
        );
        assert_eq!(
            reasons[0].to_string(),
            "recipients in `macao` are not allowed; allowed: hk, foreign:sg"
        );
    }

    #[test]
    fn gba_only_shorthand() {
        let p = use_with(Constraint::RecipientRegion {
            allowed: RegionSet::GbaOnly,
        });
        for inside in ["mainland:shenzhen", "mainland:zhaoqing", "hk", "macao"] {
            assert_allowed(
                &p,
                &RequestContext {
                    recipient_region: region(inside),
                    ..ctx()
                },
            );
        }
        for outside in ["mainland:other", "foreign:us"] {
            let reasons = refused_with(
                &p,
                &RequestContext {
                    recipient_region: region(outside),
                    ..ctx()
                },
            );
            assert!(matches!(
                &reasons[..],
                [Refusal::RegionNotAllowed {
                    allowed: RegionSet::GbaOnly,
                    ..
                }]
            ));
            let msg = reasons[0].to_string();
            assert!(msg.contains(outside) && msg.contains("the GBA"), "{msg}");
        }
    }

    #[test]
    fn date_time_window_edges_to_the_second() {
        let start = datetime!(2026-01-01 00:00:00 UTC);
        let end = datetime!(2026-12-31 23:59:59 UTC);
        let p = use_with(Constraint::DateTime {
            not_before: Some(start),
            not_after: Some(end),
        });
        let at = |now| RequestContext { now, ..ctx() };
        assert_allowed(&p, &at(start));
        assert_allowed(&p, &at(end));
        assert_eq!(
            refused_with(&p, &at(datetime!(2025-12-31 23:59:59 UTC))),
            vec![Refusal::NotYetValid { not_before: start }]
        );
        let after = refused_with(&p, &at(datetime!(2027-01-01 00:00:00 UTC)));
        assert_eq!(after, vec![Refusal::Expired { not_after: end }]);
        assert!(after[0].to_string().contains("2026-12-31T23:59:59Z"));
        // The same instant in another offset is the same instant.
        assert_allowed(&p, &at(datetime!(2027-01-01 07:59:59 +8)));
        refused_with(&p, &at(datetime!(2027-01-01 08:00:00 +8)));
    }

    #[test]
    fn open_ended_windows() {
        let start = datetime!(2026-01-01 00:00 UTC);
        let from = use_with(Constraint::DateTime {
            not_before: Some(start),
            not_after: None,
        });
        assert_allowed(
            &from,
            &RequestContext {
                now: datetime!(2999-01-01 00:00 UTC),
                ..ctx()
            },
        );
        let until = use_with(Constraint::DateTime {
            not_before: None,
            not_after: Some(start),
        });
        assert_allowed(
            &until,
            &RequestContext {
                now: datetime!(1990-01-01 00:00 UTC),
                ..ctx()
            },
        );
    }

    #[test]
    fn count_at_limit_and_one_below() {
        let p = use_with(Constraint::Count { lteq: 3 });
        let uses = |n| RequestContext {
            uses_so_far: n,
            ..ctx()
        };
        assert_allowed(&p, &uses(2));
        assert_eq!(
            refused_with(&p, &uses(3)),
            vec![Refusal::UseLimitReached { limit: 3 }]
        );
        refused_with(&p, &uses(u64::MAX));
    }

    #[test]
    fn retention_last_day_and_day_after() {
        let delete_by = date!(2027 - 06 - 30);
        let in_permission = use_with(Constraint::Retention { delete_by });
        let in_obligation = Policy {
            obligations: vec![Duty {
                action: DutyAction::Delete,
                constraints: vec![Constraint::Retention { delete_by }],
            }],
            ..permit(Action::Use, vec![])
        };
        let in_duty = Policy {
            permissions: vec![Permission {
                action: Action::Use,
                constraints: vec![],
                duties: in_obligation.obligations.clone(),
            }],
            ..Policy::default()
        };
        let at = |now| RequestContext { now, ..ctx() };
        for p in [&in_permission, &in_obligation, &in_duty] {
            assert_allowed(p, &at(datetime!(2027-06-30 00:00:00 +8)));
            assert_allowed(p, &at(datetime!(2027-06-30 23:59:59.999 +8)));
            let reasons = refused_with(p, &at(datetime!(2027-07-01 00:00:00 +8)));
            assert_eq!(reasons, vec![Refusal::RetentionPassed { delete_by }]);
            assert!(reasons[0].to_string().contains("2027-06-30"));
            // The day is a GBA (UTC+8) day, whatever offset `now` carries:
            // 16:00 UTC on 30 June is already 1 July in the GBA.
            assert_allowed(p, &at(datetime!(2027-06-30 15:59:59 UTC)));
            refused_with(p, &at(datetime!(2027-06-30 16:00:00 UTC)));
        }
    }

    #[test]
    fn onward_transfer_outside_gba() {
        let p = permit(
            Action::Distribute,
            vec![Constraint::OnwardTransferOutsideGbaProhibited],
        );
        let to = |r: Option<&str>| RequestContext {
            action: Action::Distribute,
            onward_recipient: r.map(region),
            ..ctx()
        };
        for inside in ["mainland:guangzhou", "hk", "macao"] {
            assert_allowed(&p, &to(Some(inside)));
        }
        for outside in ["mainland:other", "foreign:gb"] {
            assert_eq!(
                refused_with(&p, &to(Some(outside))),
                vec![Refusal::OnwardTransferOutsideGba {
                    recipient: region(outside)
                }]
            );
        }
        assert_eq!(
            refused_with(&p, &to(None)),
            vec![Refusal::OnwardRecipientUnknown]
        );
        // The constraint says nothing about plain use, but this policy grants
        // no use at all.
        assert_eq!(
            refused_with(&p, &ctx()),
            vec![Refusal::NoPermission {
                action: Action::Use
            }]
        );
    }

    #[test]
    fn every_failed_constraint_is_listed() {
        let p = permit(
            Action::Use,
            vec![
                Constraint::Purpose {
                    is_any_of: vec![purpose("public-health")],
                },
                Constraint::RecipientRegion {
                    allowed: RegionSet::GbaOnly,
                },
                Constraint::DateTime {
                    not_before: None,
                    not_after: Some(datetime!(2026-01-01 00:00 UTC)),
                },
                Constraint::Count { lteq: 1 },
                Constraint::Retention {
                    delete_by: date!(2026 - 02 - 01),
                },
            ],
        );
        let c = RequestContext {
            recipient_region: region("foreign:us"),
            uses_so_far: 1,
            ..ctx()
        };
        let reasons = refused_with(&p, &c);
        assert!(matches!(
            &reasons[..],
            [
                Refusal::PurposeNotAllowed { .. },
                Refusal::RegionNotAllowed { .. },
                Refusal::Expired { .. },
                Refusal::UseLimitReached { limit: 1 },
                Refusal::RetentionPassed { .. },
            ]
        ));
    }

    #[test]
    fn one_satisfied_permission_is_enough_and_failures_of_all_are_reported() {
        let research = Permission {
            action: Action::Use,
            constraints: vec![Constraint::Purpose {
                is_any_of: vec![purpose("academic-research")],
            }],
            duties: vec![],
        };
        let health_in_gba = Permission {
            action: Action::Use,
            constraints: vec![
                Constraint::Purpose {
                    is_any_of: vec![purpose("public-health")],
                },
                Constraint::RecipientRegion {
                    allowed: RegionSet::GbaOnly,
                },
            ],
            duties: vec![],
        };
        let p = Policy {
            permissions: vec![research, health_in_gba],
            ..Policy::default()
        };
        assert_allowed(&p, &ctx());
        assert_allowed(
            &p,
            &RequestContext {
                purpose: purpose("public-health"),
                ..ctx()
            },
        );
        let reasons = refused_with(
            &p,
            &RequestContext {
                purpose: purpose("public-health"),
                recipient_region: region("foreign:fr"),
                ..ctx()
            },
        );
        assert!(matches!(
            &reasons[..],
            [
                Refusal::PurposeNotAllowed { allowed, .. },
                Refusal::RegionNotAllowed { .. },
            ] if allowed == &vec![purpose("academic-research")]
        ));
        // The same failure in two permissions is reported once.
        let twice = Policy {
            permissions: vec![p.permissions[1].clone(), p.permissions[1].clone()],
            ..Policy::default()
        };
        assert_eq!(refused_with(&twice, &ctx()).len(), 1);
    }

    #[test]
    fn permissions_for_other_actions_do_not_count() {
        let p = permit(Action::Use, vec![]);
        assert_eq!(
            refused_with(
                &p,
                &RequestContext {
                    action: Action::Distribute,
                    onward_recipient: Some(Region::HongKong),
                    ..ctx()
                }
            ),
            vec![Refusal::NoPermission {
                action: Action::Distribute
            }]
        );
        assert_eq!(
            refused_with(&Policy::default(), &ctx())[0].to_string(),
            "the policy grants no permission to `use`"
        );
    }

    #[test]
    fn prohibitions() {
        let marketing = Prohibition {
            action: Action::Use,
            constraints: vec![Constraint::Purpose {
                is_any_of: vec![purpose("marketing")],
            }],
        };
        let p = Policy {
            prohibitions: vec![marketing.clone()],
            ..permit(Action::Use, vec![])
        };
        assert_allowed(&p, &ctx());
        let reasons = refused_with(
            &p,
            &RequestContext {
                purpose: purpose("marketing"),
                ..ctx()
            },
        );
        assert_eq!(
            reasons,
            vec![Refusal::Prohibited {
                action: Action::Use,
                conditions: marketing.constraints.clone(),
            }]
        );
        assert_eq!(
            reasons[0].to_string(),
            "`use` is prohibited when the purpose is one of marketing"
        );

        // Without constraints a prohibition always applies, and it is listed
        // beside the failed permission constraints.
        let always = Policy {
            prohibitions: vec![Prohibition {
                action: Action::Use,
                constraints: vec![],
            }],
            ..use_with(Constraint::Count { lteq: 1 })
        };
        let reasons = refused_with(
            &always,
            &RequestContext {
                uses_so_far: 1,
                ..ctx()
            },
        );
        assert_eq!(
            reasons,
            vec![
                Refusal::UseLimitReached { limit: 1 },
                Refusal::Prohibited {
                    action: Action::Use,
                    conditions: vec![],
                }
            ]
        );
        assert_eq!(reasons[1].to_string(), "`use` is prohibited");
        // A prohibition on another action does not apply.
        let other = Policy {
            prohibitions: vec![Prohibition {
                action: Action::Distribute,
                constraints: vec![],
            }],
            ..permit(Action::Use, vec![])
        };
        assert_allowed(&other, &ctx());
    }

    #[test]
    fn decisions_serialise_for_the_audit_log() {
        let d = evaluate(
            &use_with(Constraint::DateTime {
                not_before: Some(datetime!(2030-01-01 00:00 UTC)),
                not_after: None,
            }),
            &ctx(),
        );
        let s = serde_json::to_string(&d).unwrap();
        assert_eq!(
            s,
            r#"{"allowed":false,"reasons":[{"reason":"not-yet-valid","not_before":"2030-01-01T00:00:00Z"}]}"#
        );
        assert_eq!(serde_json::from_str::<Decision>(&s).unwrap(), d);
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;
    use time::{Date, OffsetDateTime, UtcOffset};

    use super::*;
    use crate::policy::{Duty, DutyAction, Permission, Prohibition};

    const REGIONS: [&str; 6] = [
        "mainland:shenzhen",
        "mainland:other",
        "hk",
        "macao",
        "foreign:us",
        "foreign:sg",
    ];
    const PURPOSES: [&str; 3] = ["academic-research", "public-health", "marketing"];
    /// 2026-01-01T00:00:00Z; all generated times fall in the ten days after.
    const BASE: i64 = 1_767_225_600;

    fn region() -> impl Strategy<Value = Region> {
        prop::sample::select(&REGIONS[..]).prop_map(|s| s.parse().unwrap())
    }

    fn purpose() -> impl Strategy<Value = Purpose> {
        prop::sample::select(&PURPOSES[..]).prop_map(|s| s.parse().unwrap())
    }

    fn instant() -> impl Strategy<Value = OffsetDateTime> {
        (0i64..10 * 86_400, prop::bool::ANY).prop_map(|(s, east)| {
            let t = OffsetDateTime::from_unix_timestamp(BASE + s).unwrap();
            if east {
                t.to_offset(UtcOffset::from_hms(8, 0, 0).unwrap())
            } else {
                t
            }
        })
    }

    fn date() -> impl Strategy<Value = Date> {
        instant().prop_map(|t| t.date())
    }

    fn action() -> impl Strategy<Value = Action> {
        prop_oneof![Just(Action::Use), Just(Action::Distribute)]
    }

    fn constraint() -> impl Strategy<Value = Constraint> {
        prop_oneof![
            prop::collection::vec(purpose(), 0..3)
                .prop_map(|is_any_of| Constraint::Purpose { is_any_of }),
            prop::collection::vec(region(), 0..3).prop_map(|l| Constraint::RecipientRegion {
                allowed: RegionSet::AnyOf(l)
            }),
            Just(Constraint::RecipientRegion {
                allowed: RegionSet::GbaOnly
            }),
            (prop::option::of(instant()), prop::option::of(instant())).prop_map(
                |(not_before, not_after)| Constraint::DateTime {
                    not_before,
                    not_after
                }
            ),
            (0u64..5).prop_map(|lteq| Constraint::Count { lteq }),
            date().prop_map(|delete_by| Constraint::Retention { delete_by }),
            Just(Constraint::OnwardTransferOutsideGbaProhibited),
        ]
    }

    fn duty() -> impl Strategy<Value = Duty> {
        date().prop_map(|delete_by| Duty {
            action: DutyAction::Delete,
            constraints: vec![Constraint::Retention { delete_by }],
        })
    }

    fn policy() -> impl Strategy<Value = Policy> {
        let permission = (
            action(),
            prop::collection::vec(constraint(), 0..4),
            prop::collection::vec(duty(), 0..2),
        )
            .prop_map(|(action, constraints, duties)| Permission {
                action,
                constraints,
                duties,
            });
        let prohibition = (action(), prop::collection::vec(constraint(), 0..3)).prop_map(
            |(action, constraints)| Prohibition {
                action,
                constraints,
            },
        );
        (
            prop::collection::vec(permission, 0..4),
            prop::collection::vec(prohibition, 0..2),
            prop::collection::vec(duty(), 0..2),
        )
            .prop_map(|(permissions, prohibitions, obligations)| Policy {
                permissions,
                prohibitions,
                obligations,
            })
    }

    fn request() -> impl Strategy<Value = RequestContext> {
        (
            action(),
            purpose(),
            region(),
            instant(),
            0u64..6,
            prop::option::of(region()),
        )
            .prop_map(
                |(action, purpose, recipient_region, now, uses_so_far, onward_recipient)| {
                    RequestContext {
                        action,
                        purpose,
                        recipient_region,
                        now,
                        uses_so_far,
                        onward_recipient,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn deterministic_and_consistent(p in policy(), c in request()) {
            let d = evaluate(&p, &c);
            prop_assert_eq!(&d, &evaluate(&p.clone(), &c.clone()));
            prop_assert_eq!(d.allowed, d.reasons.is_empty());
        }

        #[test]
        fn adding_a_constraint_to_a_permission_never_allows_more(
            p in policy(),
            c in request(),
            extra in constraint(),
            pick in any::<prop::sample::Index>(),
        ) {
            prop_assume!(!p.permissions.is_empty());
            let mut stricter = p.clone();
            let i = pick.index(stricter.permissions.len());
            stricter.permissions[i].constraints.push(extra);
            if !evaluate(&p, &c).allowed {
                prop_assert!(!evaluate(&stricter, &c).allowed);
            }
        }

        #[test]
        fn adding_a_prohibition_or_duty_never_allows_more(
            p in policy(),
            c in request(),
            a in action(),
            when in prop::collection::vec(constraint(), 0..3),
            d in duty(),
        ) {
            if !evaluate(&p, &c).allowed {
                let mut prohibited = p.clone();
                prohibited.prohibitions.push(Prohibition { action: a, constraints: when });
                prop_assert!(!evaluate(&prohibited, &c).allowed);
                let mut bound = p.clone();
                bound.obligations.push(d);
                prop_assert!(!evaluate(&bound, &c).allowed);
            }
        }

        #[test]
        fn serde_round_trips_and_signs(p in policy()) {
            let json = serde_json::to_string(&p).unwrap();
            prop_assert_eq!(&serde_json::from_str::<Policy>(&json).unwrap(), &p);
            prop_assert!(crate::signing::canonical_bytes(&p).is_ok());
        }
    }
}
