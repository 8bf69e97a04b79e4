//! Name lookups for connections made on a tenant's behalf, checked against the
//! [`AddressPolicy`] before anything connects.
//!
//! why: checking a name once and letting the connecting party resolve it again is how DNS
//! rebinding gets in (public at the check, internal at the connect). So whoever connects is
//! handed the addresses checked here and never resolves the name itself: Envoy gets static
//! endpoints (`desired`), the token client pins the name to them (`oauth2`).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::address_policy::{AddressPolicy, Forbidden};

/// Why a name gave no usable address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// An address it resolves to is refused: the whole name is refused, not the rest of its
    /// addresses, since whoever controls its records chose to include that one.
    #[error("{0}")]
    NotAllowed(Forbidden),
    #[error("the host name does not resolve")]
    NoAddress,
    #[error("the host name lookup timed out")]
    Timeout,
}

/// Resolves and checks.
#[derive(Debug, Clone)]
pub struct GuardedDns {
    policy: Arc<AddressPolicy>,
    timeout: Duration,
}

impl GuardedDns {
    pub fn new(policy: Arc<AddressPolicy>, timeout: Duration) -> GuardedDns {
        GuardedDns { policy, timeout }
    }

    pub fn policy(&self) -> &AddressPolicy {
        &self.policy
    }

    /// The addresses `host` (a name or an IP literal, IPv6 with or without brackets) has for
    /// `port`, sorted, every one allowed; or why there are none.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, LookupError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            let addr = SocketAddr::new(ip, port);
            self.policy.check(addr).map_err(LookupError::NotAllowed)?;
            return Ok(vec![addr]);
        }
        // Checked by name first: `localhost` never needs a lookup to be refused.
        self.policy
            .check_written(bare, port)
            .map_err(LookupError::NotAllowed)?;
        let found = tokio::time::timeout(self.timeout, tokio::net::lookup_host((bare, port)))
            .await
            .map_err(|_| LookupError::Timeout)?
            .map_err(|_| LookupError::NoAddress)?;
        let mut addrs: Vec<SocketAddr> = found.collect();
        addrs.sort();
        addrs.dedup();
        if addrs.is_empty() {
            return Err(LookupError::NoAddress);
        }
        for a in &addrs {
            self.policy.check(*a).map_err(LookupError::NotAllowed)?;
        }
        // IPv4 preferred, as Envoy's own DNS clusters default to: a name with both kinds
        // (`localhost` is 127.0.0.1 and ::1) connects over IPv4, and a server listening on
        // one family only is not tried on the other. Every address was checked above.
        if addrs.iter().any(SocketAddr::is_ipv4) {
            addrs.retain(SocketAddr::is_ipv4);
        }
        Ok(addrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address_policy::{parse_range, Internal};

    fn dns(allow: &[&str]) -> GuardedDns {
        GuardedDns::new(
            Arc::new(AddressPolicy::new(
                allow.iter().map(|r| parse_range(r).unwrap()).collect(),
                vec![],
                vec![],
            )),
            Duration::from_secs(5),
        )
    }

    #[tokio::test]
    async fn names_and_literals_resolve_only_to_allowed_addresses() {
        let strict = dns(&[]);
        assert_eq!(
            strict.resolve("localhost", 443).await,
            Err(LookupError::NotAllowed(Forbidden::Internal(
                Internal::Loopback
            )))
        );
        assert_eq!(
            strict.resolve("127.0.0.1", 9901).await,
            Err(LookupError::NotAllowed(Forbidden::Internal(
                Internal::Loopback
            )))
        );
        assert_eq!(
            strict.resolve("[::1]", 9901).await,
            Err(LookupError::NotAllowed(Forbidden::Internal(
                Internal::Loopback
            )))
        );
        assert_eq!(
            strict.resolve("8.8.8.8", 443).await,
            Ok(vec!["8.8.8.8:443".parse().unwrap()])
        );
        // An invalid name never resolves (RFC 6761 `.invalid`), with or without a network.
        assert_eq!(
            strict.resolve("nothing.invalid", 443).await,
            Err(LookupError::NoAddress)
        );
        let loopback = dns(&["127.0.0.0/8", "::1"]);
        let addrs = loopback.resolve("localhost", 8443).await.unwrap();
        assert!(!addrs.is_empty());
        assert!(addrs
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == 8443));
    }
}
