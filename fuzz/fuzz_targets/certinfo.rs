//! `cargo fuzz run certinfo`: see `mtlsgate::fuzzing::certinfo`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mtlsgate::fuzzing::certinfo(data));
