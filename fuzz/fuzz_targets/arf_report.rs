#![no_main]
//! Fuzz target: `spate::fuzzing::arf_report` on arbitrary bytes (a complaint report).
libfuzzer_sys::fuzz_target!(|data: &[u8]| spate::fuzzing::arf_report(data));
