//! The egress allowlist: hosts an account lets the gateway reach over plain TLS (the server
//! verified against the system trust store, no client certificate) when a URL has no mapping.
//!
//! Entries are `host[:port]`. They are parsed with the same rules as a mapping's URL
//! ([`Target`]), so a host the allowlist accepts is a host the filter can match, and stored
//! in one canonical form (lower-case host, explicit port) so two spellings of one host are
//! one entry and one cluster.

use std::fmt;

use mtlsgate_filter::target::Target;

/// Most hosts one account may allow: each distinct host is an Envoy cluster.
pub const MAX_HOSTS: usize = 1000;

/// One allowed host, canonical.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EgressHost {
    /// Lower-case host name, or IP literal without brackets.
    pub host: String,
    pub port: u16,
}

/// Why an allowlist entry was refused. The text never echoes the entry: it may be anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("an entry is empty")]
    Empty,
    #[error("an entry is host[:port] only: no scheme, path, query, user information or wildcard")]
    NotHostPort,
    #[error("the host ends with a dot; name it without one")]
    TrailingDot,
    #[error("{0}")]
    Target(#[from] mtlsgate_filter::target::TargetError),
}

impl EgressHost {
    /// Parses `host[:port]` (`[v6]:port` for IPv6), port 443 when none is given.
    pub fn parse(raw: &str) -> Result<EgressHost, HostError> {
        if raw.is_empty() {
            return Err(HostError::Empty);
        }
        // why: Target would read `/` or `?` as the start of a path, and takes `*` only to
        // refuse it as an invalid host; an allowlist entry names exactly one host, so say so.
        if raw.contains(['/', '?', '#', '@', '*']) || raw.contains("://") {
            return Err(HostError::NotHostPort);
        }
        let url = format!("https://{raw}");
        let target = Target::parse(&url)?;
        if target.host().ends_with('.') {
            // A trailing dot would reach SNI and SAN checks as written; one spelling only.
            return Err(HostError::TrailingDot);
        }
        Ok(EgressHost {
            host: target.host().to_ascii_lowercase(),
            port: target.port(),
        })
    }

    /// Whether the host is an IP literal (no SNI, SAN checked as an IP address).
    pub fn is_ip(&self) -> bool {
        self.host.parse::<std::net::IpAddr>().is_ok()
    }
}

/// `host` when the port is 443, `host:port` otherwise; IPv6 literals in brackets. Parses
/// back to the same value.
impl fmt::Display for EgressHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        if self.port != 443 {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

/// Parses a whole list: canonical, duplicates dropped (first one kept), order kept. On the
/// first bad entry, its index and why.
pub fn parse_list(raw: &[String]) -> Result<Vec<EgressHost>, (usize, HostError)> {
    let mut out: Vec<EgressHost> = Vec::with_capacity(raw.len());
    for (i, entry) in raw.iter().enumerate() {
        let host = EgressHost::parse(entry).map_err(|e| (i, e))?;
        if !out.contains(&host) {
            out.push(host);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> (String, u16) {
        let h = EgressHost::parse(raw).unwrap();
        (h.host, h.port)
    }

    #[test]
    fn accepts_hosts_ports_and_ip_literals_in_canonical_form() {
        assert_eq!(ok("api.example.com"), ("api.example.com".into(), 443));
        assert_eq!(ok("API.Example.COM"), ("api.example.com".into(), 443));
        assert_eq!(ok("other.example:8443"), ("other.example".into(), 8443));
        assert_eq!(ok("10.0.0.1"), ("10.0.0.1".into(), 443));
        assert_eq!(ok("[::1]:9443"), ("::1".into(), 9443));
        assert_eq!(ok("svc_name.internal"), ("svc_name.internal".into(), 443));
        assert!(EgressHost::parse("[::1]").unwrap().is_ip());
        assert!(!EgressHost::parse("a.example").unwrap().is_ip());
    }

    #[test]
    fn display_parses_back_to_the_same_host() {
        for raw in [
            "a.example",
            "a.example:8443",
            "10.0.0.1:444",
            "[::1]",
            "[fe80::1]:8443",
        ] {
            let h = EgressHost::parse(raw).unwrap();
            assert_eq!(h.to_string(), raw);
            assert_eq!(EgressHost::parse(&h.to_string()).unwrap(), h);
        }
        assert_eq!(
            EgressHost::parse("A.example:443").unwrap().to_string(),
            "a.example"
        );
    }

    #[test]
    fn refuses_everything_that_is_not_one_host() {
        use mtlsgate_filter::target::TargetError;
        let cases: &[(&str, HostError)] = &[
            ("", HostError::Empty),
            ("*.example.com", HostError::NotHostPort),
            ("a*.example.com", HostError::NotHostPort),
            ("https://a.example", HostError::NotHostPort),
            ("a.example/path", HostError::NotHostPort),
            ("a.example?q", HostError::NotHostPort),
            ("a.example#f", HostError::NotHostPort),
            ("user@a.example", HostError::NotHostPort),
            ("a.example.", HostError::TrailingDot),
            ("a.example:0", HostError::Target(TargetError::InvalidPort)),
            (
                "a.example:65536",
                HostError::Target(TargetError::InvalidPort),
            ),
            ("a.example:", HostError::Target(TargetError::InvalidPort)),
            (
                "a example",
                HostError::Target(TargetError::ForbiddenCharacter),
            ),
            (
                "a.example\r\n",
                HostError::Target(TargetError::ForbiddenCharacter),
            ),
            ("-a.example", HostError::Target(TargetError::InvalidHost)),
            ("a%2e.example", HostError::Target(TargetError::InvalidHost)),
            ("[zz::1]", HostError::Target(TargetError::InvalidHost)),
            (":443", HostError::Target(TargetError::MissingHost)),
        ];
        for (raw, want) in cases {
            assert_eq!(EgressHost::parse(raw), Err(*want), "{raw:?}");
        }
    }

    #[test]
    fn lists_drop_duplicates_and_name_the_bad_index() {
        let list: Vec<String> = ["b.example", "A.example", "a.example:443", "b.example:8443"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let parsed = parse_list(&list).unwrap();
        let shown: Vec<String> = parsed.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["b.example", "a.example", "b.example:8443"]);
        let bad: Vec<String> = ["a.example", "b.example", "*.c.example"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(parse_list(&bad), Err((2, HostError::NotHostPort)));
    }
}
