//! Fuzz target: see `cmdop::fuzzing::duration`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cmdop::fuzzing::duration(data));
