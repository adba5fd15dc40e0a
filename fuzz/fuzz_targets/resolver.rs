//! Fuzz target: see `cmdop::fuzzing::resolver`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cmdop::fuzzing::resolver(data));
