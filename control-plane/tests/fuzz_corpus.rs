//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`, seeds and every input the
//! fuzzer kept, the ones that once crashed included) through the very functions the fuzz
//! targets call, as ordinary tests: no nightly toolchain, no fuzzer build. `scripts/fuzz`
//! grows the corpus; this keeps what it found fixed.

// why: a test crate; its helpers fail the test by panicking, like the `#[test]`s do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

/// Feeds every file of the target's corpus to `entry`; fails naming each input that panics.
fn replay(target: &str, entry: fn(&[u8])) {
    let dir = corpus(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: no corpus", dir.display());
    let failed: Vec<String> = files
        .iter()
        .filter(|f| {
            let data = std::fs::read(f).unwrap();
            catch_unwind(AssertUnwindSafe(|| entry(&data))).is_err()
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "{target}: {} of {} inputs panic: {failed:#?}",
        failed.len(),
        files.len()
    );
}

macro_rules! replay {
    ($($target:ident => $entry:path),* $(,)?) => {
        $(
            #[test]
            fn $target() {
                replay(stringify!($target), $entry);
            }
        )*

        /// Every target in `fuzz/fuzz_targets/` is replayed here, and nothing else.
        #[test]
        fn every_fuzz_target_is_replayed() {
            let mut replayed = vec![$(stringify!($target)),*];
            replayed.sort_unstable();
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/fuzz_targets");
            let mut targets: Vec<String> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter_map(|p| Some(p.file_stem()?.to_str()?.to_owned()))
                .collect();
            targets.sort_unstable();
            assert_eq!(targets, replayed);
        }
    };
}

replay! {
    // The filter: what callers send through Envoy, and the snapshot it polls.
    oauth1 => mtlsgate_filter::fuzzing::oauth1,
    bearer => mtlsgate_filter::fuzzing::bearer,
    forward_url => mtlsgate_filter::fuzzing::forward_url,
    check_mapping => mtlsgate_filter::fuzzing::check_mapping,
    snapshot => mtlsgate_filter::fuzzing::snapshot,
    request => mtlsgate_filter::fuzzing::request,
    // The control plane: what users upload.
    keystore => mtlsgate::fuzzing::keystore,
    trust_bundle => mtlsgate::fuzzing::trust_bundle,
    certinfo => mtlsgate::fuzzing::certinfo,
    p12test => mtlsgate::fuzzing::p12test,
    upload => mtlsgate::fuzzing::upload,
    certificates_json => mtlsgate::fuzzing::certificates_json,
    credential => mtlsgate::fuzzing::credential,
}
