//! `cargo fuzz run frame_decode`: see `checks::frame_decode` (one copy, shared with the corpus replay test).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../crates/proto/tests/fuzz_checks/mod.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::frame_decode(data));
