//! `cargo fuzz run forward_url`: see `mtlsgate_filter::fuzzing::forward_url`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mtlsgate_filter::fuzzing::forward_url(data));
