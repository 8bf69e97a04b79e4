//! Random bytes from the operating system, for ids, secrets, states and PKCE verifiers.

/// `N` random bytes.
pub(crate) fn bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // why: getrandom only fails when the OS has no entropy source at all, in which case
    // nothing secure can be made; falling back to zeros is NOT acceptable, so abort loudly.
    if getrandom::fill(&mut b).is_err() {
        tracing::error!("the operating system's random source failed");
        std::process::abort();
    }
    b
}
