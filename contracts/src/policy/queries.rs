//! What the rest of the system asks of a policy without evaluating a
//! request: when the data must go, how often it may be released, and whether
//! it may leave the GBA.

use time::{Date, OffsetDateTime};

use super::model::{Action, Constraint, Permission, Policy, RegionSet};
use crate::region::Region;

impl Policy {
    /// Every retention date the policy states, wherever it states it
    /// (permission constraints, permission duties, obligations). Prohibitions
    /// are left out: a retention there is refused by [`Policy::validate`].
    pub(crate) fn retention_dates(&self) -> impl Iterator<Item = Date> + '_ {
        let in_permissions = self.permissions.iter().flat_map(|p| {
            p.constraints
                .iter()
                .chain(p.duties.iter().flat_map(|d| &d.constraints))
        });
        let in_obligations = self.obligations.iter().flat_map(|d| &d.constraints);
        in_permissions
            .chain(in_obligations)
            .filter_map(|c| match c {
                Constraint::Retention { delete_by } => Some(*delete_by),
                _ => None,
            })
    }

    /// The last day the data may be kept, as a calendar day in the GBA
    /// (UTC+8): the earliest retention date the policy states anywhere,
    /// because a duty to delete binds the holder whatever else the policy
    /// allows. `None` when no retention is stated.
    pub fn retention_end(&self) -> Option<Date> {
        self.retention_dates().min()
    }

    /// The moment the data must be gone: the first instant after
    /// [`retention_end`](Self::retention_end), midnight at UTC+8, which is
    /// also when [`evaluate`](super::evaluate) starts refusing use. `None`
    /// when no retention is stated, or for a date at the end of the calendar.
    pub fn retention_deadline(&self) -> Option<OffsetDateTime> {
        let next_day = self.retention_end()?.next_day()?;
        Some(
            next_day
                .midnight()
                .assume_offset(crate::region::GBA_UTC_OFFSET),
        )
    }

    /// The latest moment any [`Action::Use`] permission can still allow a
    /// use: the most generous of the `use` permissions, each ending at its
    /// earliest date-time bound. `None` when some `use` permission has no
    /// end; an agreement made under the policy ends no later than this.
    pub fn use_window_end(&self) -> Option<OffsetDateTime> {
        let mut latest: Option<OffsetDateTime> = None;
        for p in self.permissions.iter().filter(|p| p.action == Action::Use) {
            let earliest = p
                .constraints
                .iter()
                .filter_map(|c| match c {
                    Constraint::DateTime { not_after, .. } => *not_after,
                    _ => None,
                })
                .min()?;
            latest = Some(latest.map_or(earliest, |l| l.max(earliest)));
        }
        latest
    }

    /// How many releases for [`Action::Use`] the policy can allow in all:
    /// the most generous of the `use` permissions, each limited by its
    /// strictest count. `None` when some `use` permission has no count, and
    /// `Some(0)` when the policy grants no `use` at all. Other constraints
    /// (time, purpose) are not considered; [`evaluate`](super::evaluate)
    /// decides each request.
    pub fn use_limit(&self) -> Option<u64> {
        let mut most: u64 = 0;
        for p in self.permissions.iter().filter(|p| p.action == Action::Use) {
            let strictest = p
                .constraints
                .iter()
                .filter_map(|c| match c {
                    Constraint::Count { lteq } => Some(*lteq),
                    _ => None,
                })
                .min()?;
            most = most.max(strictest);
        }
        Some(most)
    }

    /// True when no onward transfer to a recipient outside the GBA can be
    /// allowed: every `distribute` permission carries the
    /// onward-transfer-outside-GBA constraint, or there is none, or
    /// `distribute` is prohibited outright. The answer errs on the side of
    /// "forbidden" only in that it ignores the other constraints.
    pub fn forbids_onward_outside_gba(&self) -> bool {
        let prohibited_outright = self
            .prohibitions
            .iter()
            .any(|p| p.action == Action::Distribute && p.constraints.is_empty());
        prohibited_outright
            || self
                .permissions
                .iter()
                .filter(|p| p.action == Action::Distribute)
                .all(|p| {
                    p.constraints
                        .contains(&Constraint::OnwardTransferOutsideGbaProhibited)
                })
    }

    /// True when some permission (for any action) can admit a direct
    /// recipient outside the GBA: it has no recipient-region constraint, or
    /// its recipient-region constraints together admit a non-GBA region.
    /// Prohibitions and non-region constraints are not considered, so the
    /// answer errs on the side of "yes", which is the safe side when it is
    /// used to refuse offering GBA-restricted data to the world.
    pub fn allows_recipients_outside_gba(&self) -> bool {
        self.permissions.iter().any(admits_outside_gba)
    }
}

fn admits_outside_gba(p: &Permission) -> bool {
    let sets: Vec<&RegionSet> = p
        .constraints
        .iter()
        .filter_map(|c| match c {
            Constraint::RecipientRegion { allowed } => Some(allowed),
            _ => None,
        })
        .collect();
    // With several region constraints a recipient must satisfy all of them,
    // so look for a non-GBA region that every one of them admits.
    let Some(first) = sets.first() else {
        return true;
    };
    let candidates: &[Region] = match first {
        RegionSet::AnyOf(list) => list,
        RegionSet::GbaOnly => return false,
    };
    candidates
        .iter()
        .filter(|r| !r.is_in_gba())
        .any(|r| sets.iter().all(|s| s.contains(r)))
}

#[cfg(test)]
mod tests {
    use time::macros::{date, datetime};

    use super::*;
    use crate::policy::{Duty, DutyAction, Prohibition};

    fn permission(action: Action, constraints: Vec<Constraint>) -> Permission {
        Permission {
            action,
            constraints,
            duties: vec![],
        }
    }

    fn policy(permissions: Vec<Permission>) -> Policy {
        Policy {
            permissions,
            ..Policy::default()
        }
    }

    fn regions(list: &[&str]) -> Constraint {
        Constraint::RecipientRegion {
            allowed: RegionSet::AnyOf(list.iter().map(|s| s.parse().unwrap()).collect()),
        }
    }

    #[test]
    fn use_window_end_is_the_most_generous_use_permission() {
        use time::macros::datetime;
        let until = |t| Constraint::DateTime {
            not_before: None,
            not_after: Some(t),
        };
        let a = datetime!(2026-01-01 0:00 UTC);
        let b = datetime!(2026-06-01 0:00 UTC);
        let p = policy(vec![
            permission(Action::Use, vec![until(b), until(a)]),
            permission(Action::Use, vec![until(a)]),
            permission(Action::Distribute, vec![]),
        ]);
        assert_eq!(
            p.use_window_end(),
            Some(a),
            "each permission ends at its earliest bound"
        );
        let open = policy(vec![
            permission(Action::Use, vec![until(a)]),
            permission(Action::Use, vec![]),
        ]);
        assert_eq!(open.use_window_end(), None, "an open-ended use permission");
    }

    #[test]
    fn retention_end_is_the_earliest_anywhere() {
        let mut p = policy(vec![Permission {
            action: Action::Use,
            constraints: vec![Constraint::Retention {
                delete_by: date!(2028 - 01 - 01),
            }],
            duties: vec![Duty {
                action: DutyAction::Delete,
                constraints: vec![Constraint::Retention {
                    delete_by: date!(2027 - 12 - 31),
                }],
            }],
        }]);
        assert_eq!(p.retention_end(), Some(date!(2027 - 12 - 31)));
        p.obligations.push(Duty {
            action: DutyAction::Delete,
            constraints: vec![Constraint::Retention {
                delete_by: date!(2027 - 01 - 31),
            }],
        });
        assert_eq!(p.retention_end(), Some(date!(2027 - 01 - 31)));
        assert_eq!(Policy::default().retention_end(), None);
    }

    #[test]
    fn retention_deadline_is_midnight_after_the_last_day_in_the_gba() {
        use crate::policy::{RequestContext, evaluate};
        let p = policy(vec![Permission {
            action: Action::Use,
            constraints: vec![Constraint::Retention {
                delete_by: date!(2027 - 01 - 31),
            }],
            duties: vec![],
        }]);
        let deadline = p.retention_deadline().unwrap();
        assert_eq!(deadline, datetime!(2027-01-31 16:00 UTC));
        assert_eq!(Policy::default().retention_deadline(), None);
        // The deadline is exactly where evaluation starts refusing use.
        let at = |now| {
            evaluate(
                &p,
                &RequestContext {
                    action: Action::Use,
                    purpose: "academic-research".parse().unwrap(),
                    recipient_region: "hk".parse().unwrap(),
                    now,
                    uses_so_far: 0,
                    onward_recipient: None,
                },
            )
            .allowed
        };
        assert!(at(deadline - time::Duration::SECOND));
        assert!(!at(deadline));
    }

    #[test]
    fn use_limit_is_the_most_generous_use_permission() {
        let five = permission(
            Action::Use,
            vec![Constraint::Count { lteq: 9 }, Constraint::Count { lteq: 5 }],
        );
        let seven = permission(Action::Use, vec![Constraint::Count { lteq: 7 }]);
        let unlimited = permission(Action::Use, vec![]);
        let distribute_once = permission(Action::Distribute, vec![Constraint::Count { lteq: 1 }]);
        assert_eq!(policy(vec![five.clone()]).use_limit(), Some(5));
        assert_eq!(
            policy(vec![five.clone(), seven, distribute_once.clone()]).use_limit(),
            Some(7)
        );
        assert_eq!(policy(vec![five, unlimited]).use_limit(), None);
        assert_eq!(policy(vec![distribute_once]).use_limit(), Some(0));
    }

    #[test]
    fn onward_outside_gba() {
        let gba_only = permission(
            Action::Distribute,
            vec![Constraint::OnwardTransferOutsideGbaProhibited],
        );
        let free = permission(Action::Distribute, vec![]);
        let using = permission(Action::Use, vec![]);
        assert!(policy(vec![using.clone()]).forbids_onward_outside_gba());
        assert!(policy(vec![using.clone(), gba_only.clone()]).forbids_onward_outside_gba());
        assert!(!policy(vec![gba_only.clone(), free.clone()]).forbids_onward_outside_gba());
        let mut p = policy(vec![free]);
        assert!(!p.forbids_onward_outside_gba());
        p.prohibitions.push(Prohibition {
            action: Action::Distribute,
            constraints: vec![],
        });
        assert!(p.forbids_onward_outside_gba());
    }

    #[test]
    fn recipients_outside_gba() {
        let open = permission(Action::Use, vec![]);
        let gba = permission(
            Action::Use,
            vec![Constraint::RecipientRegion {
                allowed: RegionSet::GbaOnly,
            }],
        );
        let hk_macao = permission(Action::Use, vec![regions(&["hk", "macao"])]);
        let with_sg = permission(Action::Use, vec![regions(&["hk", "foreign:sg"])]);
        let narrowed = permission(
            Action::Use,
            vec![
                regions(&["hk", "foreign:sg"]),
                regions(&["hk", "foreign:de"]),
            ],
        );
        let narrowed_by_gba = permission(
            Action::Use,
            vec![
                regions(&["foreign:sg"]),
                Constraint::RecipientRegion {
                    allowed: RegionSet::GbaOnly,
                },
            ],
        );
        assert!(policy(vec![open]).allows_recipients_outside_gba());
        assert!(!policy(vec![gba.clone()]).allows_recipients_outside_gba());
        assert!(!policy(vec![hk_macao.clone()]).allows_recipients_outside_gba());
        assert!(!policy(vec![narrowed]).allows_recipients_outside_gba());
        assert!(!policy(vec![narrowed_by_gba]).allows_recipients_outside_gba());
        assert!(policy(vec![gba, hk_macao, with_sg]).allows_recipients_outside_gba());
        assert!(
            policy(vec![permission(
                Action::Use,
                vec![regions(&["mainland:other"])]
            )])
            .allows_recipients_outside_gba()
        );
        assert!(!Policy::default().allows_recipients_outside_gba());
    }
}
