//! `cargo fuzz run upload`: see `mtlsgate::fuzzing::upload`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mtlsgate::fuzzing::upload(data));
