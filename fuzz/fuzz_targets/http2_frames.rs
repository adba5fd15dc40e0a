//! Fuzz target: see `cmdop::fuzzing::http2_frames`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cmdop::fuzzing::http2_frames(data));
