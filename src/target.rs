//! The target of a forward: the `LP-forward-url` a caller names, or the `url` of a mapping.
//!
//! One parser serves both halves: the control plane validates a mapping's URL with it and
//! derives the upstream cluster's host and port from it; the filter parses the caller's header
//! with it. A URL that one side accepts, the other reads the same way.
//!
//! The URL is matched against mappings as a whole, byte for byte (LivePerson's mTLS API "Overview": "the entire URL
//! will be checked"), so nothing here normalises it; it only refuses what must never reach an
//! upstream and splits out what Envoy needs (authority, host, port, path).

use std::fmt;

/// The longest URL accepted. Envoy's default request-header limit is 60 KiB in total; a
/// mapping key has no business being anywhere near that.
pub const MAX_URL_LEN: usize = 8 * 1024;

/// A validated absolute `https://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target<'a> {
    raw: &'a str,
    host: &'a str,
    port: u16,
    authority: &'a str,
    path_and_query: &'a str,
}

/// Why a URL was refused. Each variant is a distinct client mistake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("the URL is empty")]
    Empty,
    #[error("the URL is longer than {MAX_URL_LEN} bytes")]
    TooLong,
    #[error("the URL contains a space, control character or non-ASCII byte")]
    ForbiddenCharacter,
    #[error("the URL must be absolute and start with https://")]
    NotHttps,
    #[error("the URL must not contain user information")]
    UserInfo,
    #[error("the URL must not contain a fragment")]
    Fragment,
    #[error("the URL has no host")]
    MissingHost,
    #[error("the URL's host is not a valid host name or IP address")]
    InvalidHost,
    #[error("the URL's port is not a number from 1 to 65535")]
    InvalidPort,
}

impl<'a> Target<'a> {
    /// Parses and validates `raw`.
    pub fn parse(raw: &'a str) -> Result<Self, TargetError> {
        if raw.is_empty() {
            return Err(TargetError::Empty);
        }
        if raw.len() > MAX_URL_LEN {
            return Err(TargetError::TooLong);
        }
        // why: CR/LF or NUL in a header value is request smuggling; a space or non-ASCII byte
        // would be re-encoded differently by different hops. Refuse rather than guess.
        if raw.bytes().any(|b| !(0x21..0x7f).contains(&b)) {
            return Err(TargetError::ForbiddenCharacter);
        }
        let rest = match raw.get(..8) {
            Some(scheme) if scheme.eq_ignore_ascii_case("https://") => &raw[8..],
            _ => return Err(TargetError::NotHttps),
        };
        if raw.contains('#') {
            return Err(TargetError::Fragment);
        }
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        let path_and_query = &rest[authority_end..];
        if authority.contains('@') {
            return Err(TargetError::UserInfo);
        }
        if authority.is_empty() {
            return Err(TargetError::MissingHost);
        }
        let (host, port) = split_host_port(authority)?;
        validate_host(host)?;
        Ok(Target {
            raw,
            host,
            port,
            authority,
            path_and_query,
        })
    }

    /// The URL exactly as given: the mapping key.
    pub fn as_str(&self) -> &'a str {
        self.raw
    }

    /// The host, without brackets for IPv6 literals.
    pub fn host(&self) -> &'a str {
        self.host
    }

    /// The port, 443 when the URL names none.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `host[:port]` as written in the URL: what the upstream sees as `:authority`.
    pub fn authority(&self) -> &'a str {
        self.authority
    }

    /// The `:path` to send upstream: path and query, `/` when the URL has neither.
    pub fn path(&self) -> &'a str {
        if self.path_and_query.is_empty() {
            "/"
        } else {
            self.path_and_query
        }
    }

    /// Whether the host is an IP literal (no SNI can be sent for it).
    pub fn host_is_ip(&self) -> bool {
        self.host.parse::<std::net::IpAddr>().is_ok()
    }
}

impl fmt::Display for Target<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.raw)
    }
}

fn split_host_port(authority: &str) -> Result<(&str, u16), TargetError> {
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let close = v6.find(']').ok_or(TargetError::InvalidHost)?;
        let host = &v6[..close];
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(TargetError::InvalidHost);
        }
        match &v6[close + 1..] {
            "" => (host, None),
            p => (
                host,
                Some(p.strip_prefix(':').ok_or(TargetError::InvalidHost)?),
            ),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        None => 443,
        Some(p) => parse_port(p)?,
    };
    if host.is_empty() {
        return Err(TargetError::MissingHost);
    }
    Ok((host, port))
}

fn parse_port(p: &str) -> Result<u16, TargetError> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TargetError::InvalidPort);
    }
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(TargetError::InvalidPort),
        Ok(n) => Ok(n),
    }
}

fn validate_host(host: &str) -> Result<(), TargetError> {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    // A DNS name: labels of letters, digits, '-' and '_' (seen in real service names),
    // not starting or ending with '-', at most 253 bytes.
    let valid = host.len() <= 253
        && host.split('.').enumerate().all(|(i, label)| {
            let last = i > 0 && label.is_empty() && host.ends_with('.');
            last || (!label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        });
    if valid {
        Ok(())
    } else {
        Err(TargetError::InvalidHost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[wasm_bindgen_test::wasm_bindgen_test(unsupported = test)]
    fn splits_a_full_url() {
        let t = Target::parse("https://api.brand.example:8443/oauth/token?x=1&y=2").unwrap();
        assert_eq!(t.host(), "api.brand.example");
        assert_eq!(t.port(), 8443);
        assert_eq!(t.authority(), "api.brand.example:8443");
        assert_eq!(t.path(), "/oauth/token?x=1&y=2");
        assert_eq!(
            t.as_str(),
            "https://api.brand.example:8443/oauth/token?x=1&y=2"
        );
        assert!(!t.host_is_ip());
    }

    #[wasm_bindgen_test::wasm_bindgen_test(unsupported = test)]
    fn defaults_port_and_path() {
        let t = Target::parse("https://example.com").unwrap();
        assert_eq!(
            (t.port(), t.path(), t.authority()),
            (443, "/", "example.com")
        );
        let t = Target::parse("https://example.com?q=1").unwrap();
        assert_eq!(t.path(), "?q=1");
    }

    #[wasm_bindgen_test::wasm_bindgen_test(unsupported = test)]
    fn ip_literals() {
        let t = Target::parse("https://127.0.0.1:9443/a").unwrap();
        assert!(t.host_is_ip());
        assert_eq!(t.host(), "127.0.0.1");
        let t = Target::parse("https://[::1]:9443/a").unwrap();
        assert_eq!(
            (t.host(), t.port(), t.authority()),
            ("::1", 9443, "[::1]:9443")
        );
        assert!(t.host_is_ip());
    }

    #[wasm_bindgen_test::wasm_bindgen_test(unsupported = test)]
    fn refuses_each_hostile_form_with_its_own_error() {
        use TargetError::*;
        let cases: &[(&str, TargetError)] = &[
            ("", Empty),
            ("http://example.com/", NotHttps),
            ("ftp://example.com/", NotHttps),
            ("//example.com/", NotHttps),
            ("/relative/path", NotHttps),
            ("https://user:pw@example.com/", UserInfo),
            ("https://example.com@evil.example/", UserInfo),
            ("https://example.com/#frag", Fragment),
            ("https://example.com/a\r\nHost: evil", ForbiddenCharacter),
            ("https://example.com/a b", ForbiddenCharacter),
            ("https://example.com/\u{e9}", ForbiddenCharacter),
            ("https://exa\0mple.com/", ForbiddenCharacter),
            ("https:///path", MissingHost),
            ("https://:443/path", MissingHost),
            ("https://example.com:0/", InvalidPort),
            ("https://example.com:65536/", InvalidPort),
            ("https://example.com:/", InvalidPort),
            ("https://example.com:+1/", InvalidPort),
            ("https://exa%41mple.com/", InvalidHost),
            ("https://-bad.example/", InvalidHost),
            ("https://[::1/", InvalidHost),
            ("https://[zz::1]/", InvalidHost),
            ("https://[::1]x/", InvalidHost),
        ];
        for (raw, want) in cases {
            assert_eq!(Target::parse(raw), Err(*want), "{raw:?}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(Target::parse(&long), Err(TooLong));
    }
}
