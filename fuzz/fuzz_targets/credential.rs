//! `cargo fuzz run credential`: see `mtlsgate::fuzzing::credential`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mtlsgate::fuzzing::credential(data));
