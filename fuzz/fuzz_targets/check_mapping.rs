//! `cargo fuzz run check_mapping`: see `mtlsgate_filter::fuzzing::check_mapping`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mtlsgate_filter::fuzzing::check_mapping(data));
