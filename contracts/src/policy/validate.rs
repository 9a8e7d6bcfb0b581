//! Refusing policies that cannot mean what their author meant.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::model::{Action, Constraint, Policy, RegionSet, fmt_instant};

/// Why a policy was refused. `at` is the path of the offending part, such as
/// `permissions[0].constraints[1]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("the policy has no permissions, so it would allow nothing")]
    NoPermissions,
    #[error("{at}: the {operand} isAnyOf list is empty, so nothing could match it")]
    EmptyList { at: String, operand: &'static str },
    #[error("{at}: `{value}` is listed twice")]
    Duplicate { at: String, value: String },
    #[error("{at}: the date-time window has neither a start nor an end")]
    EmptyWindow { at: String },
    #[error(
        "{at}: the date-time window ends ({}) before it starts ({})",
        fmt_instant(not_after),
        fmt_instant(not_before)
    )]
    WindowEndsBeforeStart {
        at: String,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    },
    #[error(
        "{at}: {} cannot be written in RFC 3339 (years 0000 to 9999, offsets in whole minutes)",
        fmt_instant(value)
    )]
    NotRfc3339 { at: String, value: OffsetDateTime },
    #[error("{at}: a count limit of 0 would never allow a release")]
    ZeroCount { at: String },
    #[error("{at}: a {kind} constraint does not belong in {place}: {why}")]
    Misplaced {
        at: String,
        kind: &'static str,
        place: &'static str,
        why: &'static str,
    },
    #[error("{at}: a delete duty needs exactly one retention constraint, found {found}")]
    DutyNeedsOneRetention { at: String, found: usize },
    #[error(
        "the offer is valid for {days} days from {}, which is past the year 9999",
        fmt_instant(from)
    )]
    ValidityTooLong { from: OffsetDateTime, days: u32 },
    #[error("the offer is valid for 0 days, so it would allow nothing")]
    ZeroValidity,
}

impl Policy {
    /// Checks the policy for parts that are contradictory or cannot match,
    /// and names the first one found. [`evaluate`](super::evaluate) is total
    /// on any policy; validation is what keeps nonsense out of offers and
    /// agreements in the first place.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.permissions.is_empty() {
            return Err(PolicyError::NoPermissions);
        }
        for (i, p) in self.permissions.iter().enumerate() {
            for (j, c) in p.constraints.iter().enumerate() {
                let at = format!("permissions[{i}].constraints[{j}]");
                if p.action == Action::Use && *c == Constraint::OnwardTransferOutsideGbaProhibited {
                    return Err(misplaced(
                        at,
                        c,
                        "a use permission",
                        "it only governs distribute permissions",
                    ));
                }
                check_constraint(c, at)?;
            }
            for (j, d) in p.duties.iter().enumerate() {
                check_duty(&d.constraints, &format!("permissions[{i}].duties[{j}]"))?;
            }
        }
        for (i, p) in self.prohibitions.iter().enumerate() {
            for (j, c) in p.constraints.iter().enumerate() {
                let at = format!("prohibitions[{i}].constraints[{j}]");
                let why = match c {
                    Constraint::Count { .. } => Some("limit releases with a count on a permission"),
                    Constraint::Retention { .. } => {
                        Some("state retention as a delete duty or on a permission")
                    }
                    Constraint::OnwardTransferOutsideGbaProhibited => {
                        Some("it is itself a prohibition; put it on a distribute permission")
                    }
                    _ => None,
                };
                if let Some(why) = why {
                    return Err(misplaced(at, c, "a prohibition", why));
                }
                check_constraint(c, at)?;
            }
        }
        for (i, d) in self.obligations.iter().enumerate() {
            check_duty(&d.constraints, &format!("obligations[{i}]"))?;
        }
        Ok(())
    }
}

fn misplaced(at: String, c: &Constraint, place: &'static str, why: &'static str) -> PolicyError {
    PolicyError::Misplaced {
        at,
        kind: c.kind(),
        place,
        why,
    }
}

fn check_duty(constraints: &[Constraint], at: &str) -> Result<(), PolicyError> {
    for (j, c) in constraints.iter().enumerate() {
        let at = format!("{at}.constraints[{j}]");
        if !matches!(c, Constraint::Retention { .. }) {
            return Err(misplaced(
                at,
                c,
                "a delete duty",
                "a duty to delete only takes the date to delete by",
            ));
        }
        check_constraint(c, at)?;
    }
    match constraints.len() {
        1 => Ok(()),
        found => Err(PolicyError::DutyNeedsOneRetention {
            at: at.to_owned(),
            found,
        }),
    }
}

fn check_constraint(c: &Constraint, at: String) -> Result<(), PolicyError> {
    match c {
        Constraint::Purpose { is_any_of } => check_list(is_any_of, at, "purpose"),
        Constraint::RecipientRegion {
            allowed: RegionSet::AnyOf(list),
        } => check_list(list, at, "recipient-region"),
        Constraint::DateTime {
            not_before,
            not_after,
        } => {
            for t in [not_before, not_after].into_iter().flatten() {
                if t.format(&Rfc3339).is_err() {
                    return Err(PolicyError::NotRfc3339 { at, value: *t });
                }
            }
            match (not_before, not_after) {
                (None, None) => Err(PolicyError::EmptyWindow { at }),
                (Some(a), Some(b)) if b < a => Err(PolicyError::WindowEndsBeforeStart {
                    at,
                    not_before: *a,
                    not_after: *b,
                }),
                _ => Ok(()),
            }
        }
        Constraint::Count { lteq: 0 } => Err(PolicyError::ZeroCount { at }),
        Constraint::RecipientRegion {
            allowed: RegionSet::GbaOnly,
        }
        | Constraint::Count { .. }
        | Constraint::Retention { .. }
        | Constraint::OnwardTransferOutsideGbaProhibited => Ok(()),
    }
}

fn check_list<T: PartialEq + std::fmt::Display>(
    list: &[T],
    at: String,
    operand: &'static str,
) -> Result<(), PolicyError> {
    if list.is_empty() {
        return Err(PolicyError::EmptyList { at, operand });
    }
    for (k, item) in list.iter().enumerate() {
        if list[..k].contains(item) {
            return Err(PolicyError::Duplicate {
                at,
                value: item.to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use time::macros::{date, datetime};

    use super::*;
    use crate::policy::{Duty, DutyAction, Permission, Prohibition};

    fn use_with(constraints: Vec<Constraint>) -> Policy {
        Policy {
            permissions: vec![Permission {
                action: Action::Use,
                constraints,
                duties: vec![],
            }],
            ..Policy::default()
        }
    }

    fn retention() -> Constraint {
        Constraint::Retention {
            delete_by: date!(2027 - 06 - 30),
        }
    }

    #[test]
    fn a_sensible_policy_passes() {
        let mut p = use_with(vec![
            Constraint::Purpose {
                is_any_of: vec!["academic-research".parse().unwrap()],
            },
            Constraint::RecipientRegion {
                allowed: RegionSet::GbaOnly,
            },
            Constraint::DateTime {
                not_before: Some(datetime!(2026-01-01 0:00 UTC)),
                not_after: Some(datetime!(2026-01-01 0:00 UTC)),
            },
            Constraint::Count { lteq: 1 },
            retention(),
        ]);
        p.permissions.push(Permission {
            action: Action::Distribute,
            constraints: vec![Constraint::OnwardTransferOutsideGbaProhibited],
            duties: vec![Duty {
                action: DutyAction::Delete,
                constraints: vec![retention()],
            }],
        });
        p.prohibitions.push(Prohibition {
            action: Action::Use,
            constraints: vec![Constraint::Purpose {
                is_any_of: vec!["marketing".parse().unwrap()],
            }],
        });
        p.obligations.push(Duty {
            action: DutyAction::Delete,
            constraints: vec![retention()],
        });
        assert_eq!(p.validate(), Ok(()));
    }

    #[test]
    fn errors_name_the_problem_and_where() {
        let hk = crate::region::Region::HongKong;
        let cases: Vec<(Policy, &str)> = vec![
            (Policy::default(), "the policy has no permissions"),
            (
                use_with(vec![
                    Constraint::Count { lteq: 1 },
                    Constraint::Purpose { is_any_of: vec![] },
                ]),
                "permissions[0].constraints[1]: the purpose isAnyOf list is empty",
            ),
            (
                use_with(vec![Constraint::RecipientRegion {
                    allowed: RegionSet::AnyOf(vec![]),
                }]),
                "permissions[0].constraints[0]: the recipient-region isAnyOf list is empty",
            ),
            (
                use_with(vec![Constraint::RecipientRegion {
                    allowed: RegionSet::AnyOf(vec![hk, crate::region::Region::Macao, hk]),
                }]),
                "permissions[0].constraints[0]: `hk` is listed twice",
            ),
            (
                use_with(vec![Constraint::DateTime {
                    not_before: Some(datetime!(2026-01-02 0:00 UTC)),
                    not_after: Some(datetime!(2026-01-01 23:59:59 UTC)),
                }]),
                "permissions[0].constraints[0]: the date-time window ends (2026-01-01T23:59:59Z) before it starts (2026-01-02T00:00:00Z)",
            ),
            (
                use_with(vec![Constraint::DateTime {
                    not_before: None,
                    not_after: None,
                }]),
                "permissions[0].constraints[0]: the date-time window has neither",
            ),
            (
                use_with(vec![Constraint::DateTime {
                    not_before: None,
                    not_after: Some(datetime!(2026-01-01 0:00:30 +0:00:30)),
                }]),
                "permissions[0].constraints[0]: 2026-01-01 0:00:30.0 +00:00:30 cannot be written in RFC 3339",
            ),
            (
                use_with(vec![Constraint::Count { lteq: 0 }]),
                "permissions[0].constraints[0]: a count limit of 0",
            ),
            (
                use_with(vec![Constraint::OnwardTransferOutsideGbaProhibited]),
                "permissions[0].constraints[0]: a onward-transfer-outside-gba-prohibited constraint does not belong in a use permission",
            ),
            (
                Policy {
                    prohibitions: vec![Prohibition {
                        action: Action::Use,
                        constraints: vec![retention()],
                    }],
                    ..use_with(vec![])
                },
                "prohibitions[0].constraints[0]: a retention constraint does not belong in a prohibition",
            ),
            (
                Policy {
                    obligations: vec![Duty {
                        action: DutyAction::Delete,
                        constraints: vec![],
                    }],
                    ..use_with(vec![])
                },
                "obligations[0]: a delete duty needs exactly one retention constraint, found 0",
            ),
            (
                Policy {
                    permissions: vec![Permission {
                        action: Action::Use,
                        constraints: vec![],
                        duties: vec![Duty {
                            action: DutyAction::Delete,
                            constraints: vec![Constraint::Count { lteq: 2 }],
                        }],
                    }],
                    ..Policy::default()
                },
                "permissions[0].duties[0].constraints[0]: a count constraint does not belong in a delete duty",
            ),
        ];
        for (policy, expected) in cases {
            let err = policy.validate().unwrap_err().to_string();
            assert!(err.starts_with(expected), "{err}\n  expected: {expected}");
        }
        assert!(matches!(
            use_with(vec![Constraint::Count { lteq: 0 }]).validate(),
            Err(PolicyError::ZeroCount { at }) if at == "permissions[0].constraints[0]"
        ));
    }
}
