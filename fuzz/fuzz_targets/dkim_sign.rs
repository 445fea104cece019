#![no_main]
//! Fuzz target: `spate::fuzzing::dkim_sign` on arbitrary messages.
libfuzzer_sys::fuzz_target!(|data: &[u8]| spate::fuzzing::dkim_sign(data));
