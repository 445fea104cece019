#![no_main]
//! Fuzz target: `spate::fuzzing::smtp_command` on arbitrary bytes.
libfuzzer_sys::fuzz_target!(|data: &[u8]| spate::fuzzing::smtp_command(data));
