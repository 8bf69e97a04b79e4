//! Which addresses mtlsgate may connect to on a tenant's behalf: the targets of mappings and
//! of the egress allowlist (Envoy connects), and credentials' token endpoints (the control
//! plane connects).
//!
//! why: every URL a tenant gives is assumed to point somewhere it should not — Envoy's admin
//! port (`/quitquitquit` stops the gateway), OpenBao, this API, a cloud metadata service, any
//! internal TLS service. So an address is refused when it is internal (loopback, private,
//! link-local, shared, multicast, reserved, documentation, or an IPv6 form embedding such an
//! IPv4 address) unless the operator allowed its range, and refused always when it is one of
//! the deployment's own endpoints or in a range the operator denied. The check is made on
//! every address a name resolves to, each time it resolves (see `guarded_dns`): a name that
//! is public when a mapping is written can point inside later.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Why an address is refused. The text names the rule, never the tenant's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Forbidden {
    /// An internal range the operator has not allowed (`--egress-allow`).
    #[error("the address is internal ({0}) and the operator has not allowed its range")]
    Internal(Internal),
    /// In a range or endpoint the operator denied (`--egress-deny`).
    #[error("the address is denied by the operator")]
    Denied,
    /// One of mtlsgate's own endpoints (its API, xDS, feed, or secret store).
    #[error("the address is one of the gateway's own endpoints")]
    OwnEndpoint,
}

/// The kind of internal address, for the refusal and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Internal {
    Unspecified,
    Loopback,
    Private,
    LinkLocal,
    SharedAddressSpace,
    Multicast,
    Reserved,
    Documentation,
}

impl fmt::Display for Internal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Internal::Unspecified => "unspecified",
            Internal::Loopback => "loopback",
            Internal::Private => "private",
            Internal::LinkLocal => "link-local",
            Internal::SharedAddressSpace => "shared address space",
            Internal::Multicast => "multicast",
            Internal::Reserved => "reserved",
            Internal::Documentation => "documentation",
        })
    }
}

/// An operator's `--egress-deny` entry: a range, or one endpoint (address and port).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyEntry {
    Range(IpNet),
    Endpoint(SocketAddr),
}

/// Why a `--egress-allow` / `--egress-deny` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an address range (a.b.c.d/n, x::/n) or, where allowed, address:port")]
pub struct ParseError(String);

/// Parses an allowed range: `10.0.0.0/8`, `fd00::/8`, or a single address.
pub fn parse_range(s: &str) -> Result<IpNet, ParseError> {
    let s = s.trim();
    IpNet::from_str(s)
        .map(|n| n.trunc())
        .or_else(|_| IpAddr::from_str(s).map(IpNet::from))
        .map_err(|_| ParseError(s.to_owned()))
}

impl FromStr for DenyEntry {
    type Err = ParseError;

    /// A range or address (as [`parse_range`]), or `address:port` (`[v6]:port`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        match SocketAddr::from_str(s) {
            Ok(endpoint) => Ok(DenyEntry::Endpoint(endpoint)),
            Err(_) => parse_range(s).map(DenyEntry::Range),
        }
    }
}

/// The rules, built once at start from the flags and the deployment's own endpoints.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    allow: Vec<IpNet>,
    deny: Vec<DenyEntry>,
    own: Vec<SocketAddr>,
}

impl AddressPolicy {
    /// `allow`: internal ranges the operator lets tenants reach. `deny`: ranges and
    /// endpoints refused whatever `allow` says. `own`: the deployment's own endpoints,
    /// refused always (an unspecified address such as `0.0.0.0:8080` stands for that port
    /// on every loopback address, the ones this process can be sure are its own).
    pub fn new(allow: Vec<IpNet>, deny: Vec<DenyEntry>, own: Vec<SocketAddr>) -> AddressPolicy {
        let mut own_expanded = Vec::new();
        for e in own {
            if e.ip().is_unspecified() {
                own_expanded.push(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), e.port()));
                own_expanded.push(SocketAddr::new(Ipv6Addr::LOCALHOST.into(), e.port()));
            } else {
                own_expanded.push(e);
            }
        }
        AddressPolicy {
            allow,
            deny,
            own: own_expanded,
        }
    }

    /// Whether mtlsgate may connect to `addr` for a tenant.
    pub fn check(&self, addr: SocketAddr) -> Result<(), Forbidden> {
        let ip = canonical(addr.ip());
        let port = addr.port();
        if self
            .own
            .iter()
            .any(|o| canonical(o.ip()) == ip && o.port() == port)
        {
            return Err(Forbidden::OwnEndpoint);
        }
        let denied = self.deny.iter().any(|d| match d {
            DenyEntry::Range(net) => net.contains(&ip),
            DenyEntry::Endpoint(e) => canonical(e.ip()) == ip && e.port() == port,
        });
        if denied {
            return Err(Forbidden::Denied);
        }
        match classify(ip) {
            Some(kind) if !self.allow.iter().any(|net| net.contains(&ip)) => {
                Err(Forbidden::Internal(kind))
            }
            _ => Ok(()),
        }
    }

    /// What can be told when a target is written, before any lookup: an IP literal is
    /// checked as it is; `localhost` and names under `.localhost` (RFC 6761: they always
    /// mean loopback) as the loopback addresses. Other names pass here and are checked each
    /// time they resolve.
    pub fn check_written(&self, host: &str, port: u16) -> Result<(), Forbidden> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return self.check(SocketAddr::new(ip, port));
        }
        let lower = bare.trim_end_matches('.').to_ascii_lowercase();
        if lower == "localhost" || lower.ends_with(".localhost") {
            self.check(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port))?;
            self.check(SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port))?;
        }
        Ok(())
    }
}

/// An IPv4 address written as IPv6 (`::ffff:a.b.c.d`) is that IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// The internal kind of `ip`, or `None` for a global unicast address.
pub fn classify(ip: IpAddr) -> Option<Internal> {
    match canonical(ip) {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> Ipv4Net {
    // A constant prefix length below 33 cannot fail; the fallback is never taken.
    Ipv4Net::new(Ipv4Addr::new(a, b, c, d), len).unwrap_or_default()
}

/// IANA's IPv4 special-purpose registry (RFC 6890 and its updates), all of it but the
/// globally reachable entries.
fn classify_v4(ip: Ipv4Addr) -> Option<Internal> {
    use Internal::*;
    let table: [(Ipv4Net, Internal); 16] = [
        (v4(0, 0, 0, 0, 8), Unspecified),
        (v4(10, 0, 0, 0, 8), Private),
        (v4(100, 64, 0, 0, 10), SharedAddressSpace),
        (v4(127, 0, 0, 0, 8), Loopback),
        (v4(169, 254, 0, 0, 16), LinkLocal),
        (v4(172, 16, 0, 0, 12), Private),
        (v4(192, 0, 0, 0, 24), Reserved),
        (v4(192, 0, 2, 0, 24), Documentation),
        (v4(192, 88, 99, 0, 24), Reserved),
        (v4(192, 168, 0, 0, 16), Private),
        (v4(198, 18, 0, 0, 15), Reserved),
        (v4(198, 51, 100, 0, 24), Documentation),
        (v4(203, 0, 113, 0, 24), Documentation),
        (v4(224, 0, 0, 0, 4), Multicast),
        (v4(240, 0, 0, 0, 4), Reserved),
        (v4(255, 255, 255, 255, 32), Reserved),
    ];
    table
        .iter()
        .find(|(net, _)| net.contains(&ip))
        .map(|(_, kind)| *kind)
}

fn v6(segments: [u16; 8], len: u8) -> Ipv6Net {
    Ipv6Net::new(Ipv6Addr::from(segments), len).unwrap_or_default()
}

/// IANA's IPv6 special-purpose registry; forms that embed an IPv4 address (NAT64, 6to4,
/// IPv4-compatible) are judged by that address, Teredo is refused outright (its embedded
/// address is obfuscated and the server's is another host).
fn classify_v6(ip: Ipv6Addr) -> Option<Internal> {
    use Internal::*;
    if ip.is_unspecified() {
        return Some(Unspecified);
    }
    if ip.is_loopback() {
        return Some(Loopback);
    }
    let s = ip.segments();
    let embedded = |hi: u16, lo: u16| {
        let [a, b] = hi.to_be_bytes();
        let [c, d] = lo.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    // NAT64's well-known prefix 64:ff9b::/96 reaches the IPv4 address in its last 32 bits.
    if v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96).contains(&ip) {
        return classify_v4(embedded(s[6], s[7]));
    }
    // IPv4-compatible ::/96 is deprecated (RFC 4291): never a partner's address.
    if v6([0, 0, 0, 0, 0, 0, 0, 0], 96).contains(&ip) {
        return Some(classify_v4(embedded(s[6], s[7])).unwrap_or(Reserved));
    }
    // 6to4 2002::/16: bits 16..48.
    if v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16).contains(&ip) {
        return classify_v4(embedded(s[1], s[2]));
    }
    let table: [(Ipv6Net, Internal); 9] = [
        (v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48), Private),
        (v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64), Reserved),
        (v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32), Reserved),
        (v6([0x2001, 0x2, 0, 0, 0, 0, 0, 0], 48), Reserved),
        (v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), Documentation),
        (v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20), Documentation),
        (v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7), Private),
        (v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), LinkLocal),
        (v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10), Private),
    ];
    if v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8).contains(&ip) {
        return Some(Multicast);
    }
    table
        .iter()
        .find(|(net, _)| net.contains(&ip))
        .map(|(_, kind)| *kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn internal_addresses_are_refused_by_default() {
        let p = AddressPolicy::default();
        for (addr, kind) in [
            ("127.0.0.1:9901", Internal::Loopback),
            ("127.255.0.7:443", Internal::Loopback),
            ("[::1]:443", Internal::Loopback),
            ("[::ffff:127.0.0.1]:9901", Internal::Loopback),
            ("0.0.0.0:443", Internal::Unspecified),
            ("[::]:443", Internal::Unspecified),
            ("10.1.2.3:443", Internal::Private),
            ("172.31.255.255:443", Internal::Private),
            ("192.168.0.1:443", Internal::Private),
            ("[fd12::1]:443", Internal::Private),
            ("169.254.169.254:80", Internal::LinkLocal),
            ("[fe80::1]:443", Internal::LinkLocal),
            ("100.100.100.200:80", Internal::SharedAddressSpace),
            ("224.0.0.1:443", Internal::Multicast),
            ("[ff02::1]:443", Internal::Multicast),
            ("255.255.255.255:443", Internal::Reserved),
            ("198.18.0.1:443", Internal::Reserved),
            ("192.0.2.1:443", Internal::Documentation),
            // IPv6 forms that carry an internal IPv4 address.
            ("[64:ff9b::7f00:1]:443", Internal::Loopback),
            ("[64:ff9b::a9fe:a9fe]:80", Internal::LinkLocal),
            ("[2002:7f00:1::1]:443", Internal::Loopback),
            ("[2002:c0a8:101::1]:443", Internal::Private),
            ("[::7f00:1]:443", Internal::Loopback),
            ("[::808:808]:443", Internal::Reserved),
            ("[2001::1]:443", Internal::Reserved),
        ] {
            assert_eq!(p.check(sa(addr)), Err(Forbidden::Internal(kind)), "{addr}");
        }
        for public in [
            "8.8.8.8:443",
            "1.1.1.1:8443",
            "172.32.0.1:443",
            "100.128.0.1:443",
            "[2606:4700::1111]:443",
            "[64:ff9b::808:808]:443",
            "[2002:808:808::1]:443",
        ] {
            assert_eq!(p.check(sa(public)), Ok(()), "{public}");
        }
    }

    #[test]
    fn the_operator_allows_ranges_but_never_the_deployments_own_endpoints_or_denied_ones() {
        let p = AddressPolicy::new(
            vec![
                parse_range("127.0.0.0/8").unwrap(),
                parse_range("10.0.0.0/8").unwrap(),
            ],
            vec![
                "127.0.0.1:9901".parse().unwrap(),
                "10.9.0.0/16".parse().unwrap(),
            ],
            vec![sa("127.0.0.1:8080"), sa("0.0.0.0:18000")],
        );
        assert_eq!(p.check(sa("127.0.0.1:8443")), Ok(()));
        assert_eq!(p.check(sa("10.1.2.3:443")), Ok(()));
        assert_eq!(p.check(sa("127.0.0.1:9901")), Err(Forbidden::Denied));
        assert_eq!(
            p.check(sa("[::ffff:127.0.0.1]:9901")),
            Err(Forbidden::Denied)
        );
        assert_eq!(p.check(sa("10.9.4.4:443")), Err(Forbidden::Denied));
        assert_eq!(p.check(sa("127.0.0.1:8080")), Err(Forbidden::OwnEndpoint));
        // Listening on every address: that port on loopback is ours.
        assert_eq!(p.check(sa("127.0.0.1:18000")), Err(Forbidden::OwnEndpoint));
        assert_eq!(p.check(sa("[::1]:18000")), Err(Forbidden::OwnEndpoint));
        // Allowing 127/8 does not allow other internal ranges.
        assert_eq!(
            p.check(sa("192.168.1.1:443")),
            Err(Forbidden::Internal(Internal::Private))
        );
        // A denied range wins over a public address too.
        let p = AddressPolicy::new(vec![], vec!["8.8.8.0/24".parse().unwrap()], vec![]);
        assert_eq!(p.check(sa("8.8.8.8:443")), Err(Forbidden::Denied));
    }

    #[test]
    fn written_targets_are_checked_when_they_are_literals_or_localhost() {
        let p = AddressPolicy::default();
        assert!(p.check_written("127.0.0.1", 9901).is_err());
        assert!(p.check_written("[::1]", 443).is_err());
        assert!(p.check_written("::1", 443).is_err());
        assert!(p.check_written("localhost", 443).is_err());
        assert!(p.check_written("Admin.LOCALHOST.", 443).is_err());
        assert!(p.check_written("partner.example", 443).is_ok());
        assert!(p.check_written("8.8.8.8", 443).is_ok());
        let allowed = AddressPolicy::new(
            vec![
                parse_range("127.0.0.1").unwrap(),
                parse_range("::1/128").unwrap(),
            ],
            vec![],
            vec![],
        );
        assert!(allowed.check_written("localhost", 8443).is_ok());
    }

    #[test]
    fn flag_values_parse_or_are_refused() {
        assert_eq!(
            parse_range("10.0.0.7/8").unwrap(),
            parse_range("10.0.0.0/8").unwrap()
        );
        assert!(parse_range("10.0.0.0/33").is_err());
        assert!(parse_range("example.com").is_err());
        assert!(parse_range("").is_err());
        assert_eq!(
            "[::1]:9901".parse::<DenyEntry>().unwrap(),
            DenyEntry::Endpoint(sa("[::1]:9901"))
        );
        assert!("127.0.0.1:99999".parse::<DenyEntry>().is_err());
    }
}
