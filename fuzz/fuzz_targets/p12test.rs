//! `cargo fuzz run p12test`: see `mtlsgate::fuzzing::p12test`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mtlsgate::fuzzing::p12test(data));
