//! Fuzz target: see `cmdop::fuzzing::agent_frames`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cmdop::fuzzing::agent_frames(data));
