//! Usage policies: an ODRL subset, and their evaluation with reasons.
//!
//! A [`Policy`] is what a provider offers with a dataset and what both sides
//! sign into an agreement. [`evaluate`] decides one request against it at
//! one moment and, when it refuses, says every reason why.
//!
//! # Semantics
//!
//! - **Permissions.** A request for an action is allowed only if at least
//!   one permission for that action has all its constraints satisfied.
//!   Permissions for other actions do not count: `use` does not imply
//!   `distribute`. When no permission for the action is satisfied, the
//!   decision lists the failed constraints of *every* permission for the
//!   action (each distinct refusal once, in policy order), so a researcher
//!   sees every way the request could have succeeded. With no permission for
//!   the action at all, the reason is [`Refusal::NoPermission`].
//! - **Prohibitions.** A prohibition for the action applies when all its
//!   constraints hold for the request; a prohibition without constraints
//!   always applies. An applying prohibition refuses the request even when a
//!   permission is satisfied, and is listed beside any failed permission
//!   constraints.
//! - **Constraints.**
//!   - `purpose` and `recipient-region` are `isAnyOf`; the recipient region
//!     is the direct recipient's (the consumer in the agreement). `GbaOnly`
//!     is the nine Mainland GBA cities, Hong Kong and Macao; the Mainland
//!     outside the GBA and foreign regions are outside it.
//!   - `date-time` is a window whose ends are both inclusive, compared as
//!     instants (the offsets of the values do not matter).
//!   - `count lteq N` allows N releases in all: a request is refused once
//!     `uses_so_far >= N`.
//!   - `retention` is the lifetime of the data, not a condition of one
//!     rule: wherever the policy states it (a permission constraint, a
//!     permission's delete duty or a policy obligation), every request after
//!     it is refused with [`Refusal::RetentionPassed`]. The data may be used
//!     through the whole of the `delete_by` day in GBA civil time (UTC+8,
//!     [`GBA_UTC_OFFSET`](crate::region::GBA_UTC_OFFSET)), and no longer.
//!     Every member jurisdiction keeps UTC+8, so both parties reach the same
//!     answer from the date alone, and it is the day a steward means.
//!   - `onward-transfer-outside-gba-prohibited`, on a `distribute`
//!     permission, refuses passing the data to an onward recipient outside
//!     the GBA (see [`Region::is_in_gba`](crate::region::Region::is_in_gba)),
//!     and refuses a `distribute` request that does not say where the
//!     onward recipient is. It has no effect on `use`.
//! - **Duties.** A delete duty carries one retention constraint; it binds as
//!   described above. No other duty exists.
//! - `allowed == reasons.is_empty()` always. Adding a constraint to a
//!   permission, or adding a duty or a prohibition, never turns a refusal
//!   into an allowance. (Adding a constraint to a *prohibition* narrows
//!   when it applies, so that can.)
//!
//! [`Policy::validate`] refuses policies whose parts cannot match or
//! contradict themselves; [`evaluate`] is total and deterministic on any
//! policy, valid or not.
//!
//! ```
//! use bayspace_contracts::policy::{evaluate, Action, Policy, RegionSet, RequestContext};
//! use time::macros::datetime;
//!
//! let now = datetime!(2026-03-01 09:00 +8);
//! let offer = Policy::offer(vec!["academic-research".parse()?])
//!     .recipients(RegionSet::GbaOnly)
//!     .valid_for_days(now, 90)
//!     .build()?;
//! let request = RequestContext {
//!     action: Action::Use,
//!     purpose: "marketing".parse()?,
//!     recipient_region: "foreign:us".parse()?,
//!     now,
//!     uses_so_far: 0,
//!     onward_recipient: None,
//! };
//! let decision = evaluate(&offer, &request);
//! assert!(!decision.allowed);
//! assert_eq!(decision.reasons.len(), 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod evaluate;
mod model;
mod offer;
mod queries;
mod validate;

pub use evaluate::{Decision, Refusal, RequestContext, evaluate};
pub use model::{
    Action, Constraint, Duty, DutyAction, Permission, Policy, Prohibition, Purpose, PurposeError,
    RegionSet, RegionSetError,
};
pub use offer::OfferPolicyBuilder;
pub use validate::PolicyError;
