//! Fuzz target: see `cmdop::fuzzing::control_message`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cmdop::fuzzing::control_message(data));
