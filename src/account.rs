//! Account ids: the one rule the filter and the control plane both apply to the id in a path
//! (`/mtls/account/{accountId}`), so an id one accepts the other never refuses.

/// The longest account id, in bytes.
pub const MAX_LEN: usize = 64;

/// Whether `id` is a well-formed account id: 1 to [`MAX_LEN`] ASCII letters, digits, `-` or
/// `_`.
///
/// why: an account id travels in URL paths, cluster names, Vault paths and the audit log; a
/// narrow alphabet keeps it from needing escaping in any of them.
pub fn is_valid(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[wasm_bindgen_test::wasm_bindgen_test(unsupported = test)]
    fn letters_digits_dash_and_underscore_up_to_the_limit() {
        for ok in ["1", "52653865", "le-Account_9", &"a".repeat(MAX_LEN)] {
            assert!(is_valid(ok), "{ok:?} must be valid");
        }
        for bad in [
            "",
            &"a".repeat(MAX_LEN + 1),
            "a/b",
            "a b",
            "a.b",
            "a%2Fb",
            "..",
            "é",
            "a\0",
            "a\n",
        ] {
            assert!(!is_valid(bad), "{bad:?} must be invalid");
        }
    }
}
