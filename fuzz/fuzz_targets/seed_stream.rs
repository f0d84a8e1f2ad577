//! `cargo fuzz run seed_stream`: see `checks::seed_stream` (one copy, shared with the corpus replay test).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../crates/proto/tests/fuzz_checks/mod.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::seed_stream(data));
