//! Fuzz target: see `diskferry_core::fuzzing::journal` for the property.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| diskferry_core::fuzzing::journal(data));
