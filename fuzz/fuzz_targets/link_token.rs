//! Fuzz target: see `cmdop::fuzzing::link_token`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cmdop::fuzzing::link_token(data));
