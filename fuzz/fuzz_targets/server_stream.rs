//! `cargo fuzz run server_stream`: see `checks::server_stream` (one copy, shared with the corpus replay test).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../crates/proto/tests/fuzz_checks/mod.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::server_stream(data));
