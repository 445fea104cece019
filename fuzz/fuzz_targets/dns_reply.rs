#![no_main]
//! Fuzz target: `spate::fuzzing::dns_reply` on arbitrary bytes.
libfuzzer_sys::fuzz_target!(|data: &[u8]| spate::fuzzing::dns_reply(data));
