//! `cargo fuzz run keystore`: see `mtlsgate::fuzzing::keystore`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mtlsgate::fuzzing::keystore(data));
