//! Usage policies: an ODRL subset, and their evaluation with reasons.

mod model;

pub use model::{
    Action, Constraint, Duty, DutyAction, Permission, Policy, Prohibition, Purpose, RegionSet,
};
