//! The entry point the `address_plan` fuzz target and the corpus replay
//! test share, so that a corpus file replays through exactly the code the
//! fuzzer ran. Not an API.

use crate::nft;
use crate::plan::AddressPlan;

/// Parses `bytes` as an address plan and, when it parses, exercises what a
/// node derives from it. Returns whether the plan was accepted.
///
/// # Panics
///
/// When a plan that passed its checks still gives an address of one
/// institution's prefix to another institution: the checks promise that
/// prefixes never overlap, so this is a bug for the fuzzer to report.
pub fn address_plan(bytes: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return false;
    };
    let Ok(plan) = AddressPlan::parse(text) else {
        return false;
    };
    for inst in plan.institutions() {
        for prefix in &inst.prefixes {
            for addr in [prefix.network(), prefix.broadcast()] {
                let owner = plan.institution_for(addr).map(|i| i.name.as_str());
                assert_eq!(
                    owner,
                    Some(inst.name.as_str()),
                    "{addr} of {prefix} resolves to another institution"
                );
            }
        }
        // The rule set is rendered from every validated plan; only an
        // invalid client list may make it fail.
        let _ = nft::render(&plan, &inst.name, &[]);
    }
    true
}
