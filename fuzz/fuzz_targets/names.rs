//! `cargo fuzz run names`: see `checks::names` (one copy, shared with the corpus replay test).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../crates/proto/tests/fuzz_checks/mod.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::names(data));
