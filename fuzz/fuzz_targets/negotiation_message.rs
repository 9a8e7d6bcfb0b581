#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Whether the input was accepted is for the corpus replay test; here
    // only a panic or a crash counts.
    let _ = bayspace_connector::fuzzing::negotiation_message(data);
});
