//! `cargo fuzz run trust_bundle`: see `mtlsgate::fuzzing::trust_bundle`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mtlsgate::fuzzing::trust_bundle(data));
