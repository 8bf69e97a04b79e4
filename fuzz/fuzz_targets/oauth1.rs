//! `cargo fuzz run oauth1`: see `mtlsgate_filter::fuzzing::oauth1`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mtlsgate_filter::fuzzing::oauth1(data));
