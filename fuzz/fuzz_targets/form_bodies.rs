//! Fuzz target: see `cmdop::fuzzing::form_bodies`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cmdop::fuzzing::form_bodies(data));
