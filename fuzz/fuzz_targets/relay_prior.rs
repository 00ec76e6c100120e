//! Fuzz target: see `diskferry_core::fuzzing::relay_prior` for the property.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| diskferry_core::fuzzing::relay_prior(data));
