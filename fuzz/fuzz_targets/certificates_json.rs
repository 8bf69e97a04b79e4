//! `cargo fuzz run certificates_json`: see `mtlsgate::fuzzing::certificates_json`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mtlsgate::fuzzing::certificates_json(data));
