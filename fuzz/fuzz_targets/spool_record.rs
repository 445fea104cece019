#![no_main]
//! Fuzz target: `spate::fuzzing::spool_record` on arbitrary bytes.
libfuzzer_sys::fuzz_target!(|data: &[u8]| spate::fuzzing::spool_record(data));
