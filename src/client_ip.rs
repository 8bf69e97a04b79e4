//! Which address a request comes from: what the throttle counts and the audit log records.
//!
//! With no proxy in front of Envoy it is the downstream peer. Behind `n` trusted proxies that
//! each append the address they saw to `X-Forwarded-For`, it is the `n`-th entry from the
//! right: the last `n` entries were written by those proxies, everything left of them by
//! whoever sent the request, and that may be anyone.

/// The client's IP for a request from `peer` (Envoy's `source.address`: `1.2.3.4:5678`,
/// `[::1]:5678`) carrying `headers` (lower-case names, repeated names as separate entries),
/// behind `trusted_hops` proxies.
///
/// When `X-Forwarded-For` holds fewer entries than `trusted_hops` (a request that did not
/// pass through all of them) the peer is used: never an entry the client could have written.
pub(crate) fn client_ip<'a>(
    peer: &'a str,
    headers: &'a [(String, String)],
    trusted_hops: u32,
) -> &'a str {
    if trusted_hops > 0 {
        // why: several `X-Forwarded-For` headers are one list, in order (RFC 9110 §5.3), and
        // Envoy hands them over as separate entries.
        let xff: Vec<&str> = headers
            .iter()
            .filter(|(name, _)| name == "x-forwarded-for")
            .flat_map(|(_, value)| value.split(','))
            .map(str::trim)
            .collect();
        if let Some(ip) = usize::try_from(trusted_hops)
            .ok()
            .and_then(|hops| xff.len().checked_sub(hops))
            .and_then(|i| xff.get(i).copied())
        {
            return ip;
        }
    }
    strip_port(peer)
}

/// `peer` without its port: `1.2.3.4:80` → `1.2.3.4`, `[::1]:80` → `::1`. An address without
/// a port, IPv6 included (`::1`), is returned as it is.
fn strip_port(peer: &str) -> &str {
    if let Some(v6) = peer.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6);
    }
    match peer.rsplit_once(':') {
        // why: more than one colon is a bare IPv6 address, whose last group is no port.
        Some((host, _)) if !host.contains(':') => host,
        _ => peer,
    }
}

#[cfg(test)]
mod tests {
    use wasm_bindgen_test::wasm_bindgen_test;

    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const PEER: &str = "10.0.0.9:43210";

    #[wasm_bindgen_test(unsupported = test)]
    fn with_no_trusted_proxy_the_header_is_ignored() {
        let hs = h(&[("x-forwarded-for", "6.6.6.6")]);
        assert_eq!(client_ip(PEER, &hs, 0), "10.0.0.9");
        assert_eq!(client_ip(PEER, &[], 0), "10.0.0.9");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn behind_n_proxies_the_nth_entry_from_the_right() {
        let hs = h(&[("x-forwarded-for", "6.6.6.6, 1.1.1.1, 2.2.2.2")]);
        assert_eq!(client_ip(PEER, &hs, 1), "2.2.2.2");
        assert_eq!(client_ip(PEER, &hs, 2), "1.1.1.1");
        assert_eq!(client_ip(PEER, &hs, 3), "6.6.6.6");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn too_few_entries_fall_back_to_the_peer() {
        let hs = h(&[("x-forwarded-for", "1.1.1.1, 2.2.2.2")]);
        assert_eq!(client_ip(PEER, &hs, 3), "10.0.0.9");
        assert_eq!(client_ip(PEER, &hs, 16), "10.0.0.9");
        assert_eq!(client_ip(PEER, &[], 1), "10.0.0.9");
        assert_eq!(
            client_ip(PEER, &h(&[("x-real-ip", "6.6.6.6")]), 1),
            "10.0.0.9"
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn several_headers_are_one_list_in_order() {
        let hs = h(&[
            ("x-forwarded-for", "6.6.6.6, 1.1.1.1"),
            ("content-type", "text/plain"),
            ("x-forwarded-for", "2.2.2.2"),
            ("x-forwarded-for", "3.3.3.3,4.4.4.4"),
        ]);
        assert_eq!(client_ip(PEER, &hs, 1), "4.4.4.4");
        assert_eq!(client_ip(PEER, &hs, 2), "3.3.3.3");
        assert_eq!(client_ip(PEER, &hs, 3), "2.2.2.2");
        assert_eq!(client_ip(PEER, &hs, 4), "1.1.1.1");
        assert_eq!(client_ip(PEER, &hs, 5), "6.6.6.6");
        assert_eq!(client_ip(PEER, &hs, 6), "10.0.0.9");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn entries_are_trimmed() {
        let hs = h(&[("x-forwarded-for", "  1.1.1.1 ,\t2001:db8::1  ")]);
        assert_eq!(client_ip(PEER, &hs, 1), "2001:db8::1");
        assert_eq!(client_ip(PEER, &hs, 2), "1.1.1.1");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn the_peer_loses_its_port_ipv4_and_ipv6() {
        assert_eq!(client_ip("192.0.2.7:80", &[], 0), "192.0.2.7");
        assert_eq!(client_ip("192.0.2.7", &[], 0), "192.0.2.7");
        assert_eq!(client_ip("[2001:db8::1]:443", &[], 0), "2001:db8::1");
        assert_eq!(client_ip("[::1]:8080", &[], 0), "::1");
        assert_eq!(client_ip("[::1]", &[], 0), "::1");
        // Without brackets an IPv6 address has no port: it is kept whole.
        assert_eq!(client_ip("2001:db8::1", &[], 0), "2001:db8::1");
        assert_eq!(client_ip("::1", &[], 0), "::1");
        assert_eq!(client_ip("::ffff:192.0.2.7", &[], 0), "::ffff:192.0.2.7");
        // The host could not say: nothing, rather than a guess.
        assert_eq!(client_ip("", &[], 0), "");
    }
}
