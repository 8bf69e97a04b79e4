//! `cargo fuzz run bearer`: see `mtlsgate_filter::fuzzing::bearer`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mtlsgate_filter::fuzzing::bearer(data));
