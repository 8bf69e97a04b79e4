//! `cargo fuzz run request`: see `mtlsgate_filter::fuzzing::request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mtlsgate_filter::fuzzing::request(data));
