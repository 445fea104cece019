#![no_main]
//! Fuzz target: `spate::fuzzing::inject_request` on arbitrary bytes (an injection request).
libfuzzer_sys::fuzz_target!(|data: &[u8]| spate::fuzzing::inject_request(data));
