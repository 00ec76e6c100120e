//! Fuzz target: see `diskferry_core::fuzzing::job_spec` for the property.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| diskferry_core::fuzzing::job_spec(data));
