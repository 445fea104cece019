#![no_main]
//! Fuzz target: `spate::fuzzing::data_receiver` on arbitrary bytes.
libfuzzer_sys::fuzz_target!(|data: &[u8]| spate::fuzzing::data_receiver(data));
