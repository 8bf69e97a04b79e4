//! `cargo fuzz run snapshot`: see `mtlsgate_filter::fuzzing::snapshot`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mtlsgate_filter::fuzzing::snapshot(data));
