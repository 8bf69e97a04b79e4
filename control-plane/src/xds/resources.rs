//! Envoy resources built from the desired state.

use std::collections::HashMap;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::circuit_breakers::Thresholds;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::cluster::v3::{CircuitBreakers, Cluster};
use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::config::core::v3::Address;
use envoy_types::pb::envoy::config::core::v3::{
    address, config_source, socket_address, transport_socket, AggregatedConfigSource, ApiVersion,
    ConfigSource, DataSource, Http1ProtocolOptions, HttpProtocolOptions as CoreHttpOptions,
    RoutingPriority, SocketAddress, TransportSocket,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context::ValidationContextType, secret, subject_alt_name_matcher::SanType,
    tls_parameters::TlsProtocol, CertificateValidationContext, CommonTlsContext, SdsSecretConfig,
    Secret, SubjectAltNameMatcher, TlsCertificate, TlsParameters, UpstreamTlsContext,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::{
    explicit_http_config::ProtocolConfig, ExplicitHttpConfig, UpstreamProtocolOptions,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher::MatchPattern, StringMatcher};
use envoy_types::pb::google::protobuf::Duration as PbDuration;
use envoy_types::pb::google::protobuf::UInt32Value;
use envoy_types::util::pack_any;

use crate::desired::{ClusterSpec, SecretSpec, Trust};
use crate::tls_versions::TlsVersion;

/// Settings that apply to every upstream cluster.
#[derive(Debug, Clone)]
pub struct ResourceOptions {
    /// The PEM bundle of the operating system's trust store, as a path on the Envoy host.
    /// why: Envoy refuses SAN verification with `system_root_certs` alone ("without trusted
    /// CA is insecure"), so the system trust store is named as a file.
    pub system_trust_bundle: String,
    /// Pooled connections are closed after this long, so a rotated client certificate
    /// reaches every connection within it (Envoy applies a new secret to new connections
    /// only).
    pub max_connection_duration: Duration,
    pub connect_timeout: Duration,
    /// How much of the gateway one cluster may hold at once.
    pub limits: UpstreamLimits,
}

/// The circuit breaker of every upstream cluster: how many connections and requests one
/// cluster (one tenant's certificate towards one partner) may hold at once. why: a partner
/// that accepts connections and never answers would otherwise keep gathering the gateway's
/// connections and memory for as long as callers keep trying, at the expense of every other
/// tenant; with these bounds the excess is refused at once (503, `upstream_overloaded`,
/// Envoy's `UO` flag) and the stalled requests end at the route timeout.
/// Envoy counts them per cluster across all workers; the defaults are Envoy's own (1024,
/// as Envoy Gateway also sets), now stated and tunable.
/// <https://www.envoyproxy.io/docs/envoy/latest/intro/arch_overview/upstream/circuit_breaking>
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamLimits {
    /// Upstream connections (HTTP/1.1: one per request in flight).
    pub max_connections: u32,
    /// Requests waiting for a connection once `max_connections` are busy.
    pub max_pending_requests: u32,
    /// Requests in flight.
    pub max_requests: u32,
}

impl Default for UpstreamLimits {
    fn default() -> Self {
        UpstreamLimits {
            max_connections: 1024,
            max_pending_requests: 1024,
            max_requests: 1024,
        }
    }
}

impl UpstreamLimits {
    /// The cluster's `circuit_breakers`: one threshold at default priority (the gateway's
    /// routes use no other).
    fn circuit_breakers(&self) -> CircuitBreakers {
        let n = |value| Some(UInt32Value { value });
        CircuitBreakers {
            thresholds: vec![Thresholds {
                priority: RoutingPriority::Default as i32,
                max_connections: n(self.max_connections),
                max_pending_requests: n(self.max_pending_requests),
                max_requests: n(self.max_requests),
                // why: the gateway never retries (its routes have no retry policy, and a
                // forwarded POST must not reach a partner twice); 0 says so, where Envoy's
                // default would allow 3 retries in flight, and no retry budget is set.
                max_retries: n(0),
                // why: `remaining_cx`, `remaining_rq`... gauges in the cluster's stats show
                // operators how close each partner is to its bound.
                track_remaining: true,
                ..Default::default()
            }],
            ..Default::default()
        }
    }
}

fn pb_duration(d: Duration) -> PbDuration {
    PbDuration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// The upstream cluster of a mapping: mTLS with the client certificate from SDS, SNI set to
/// the host, the server verified against the host name, TLS 1.2 to 1.3. A cluster without a
/// secret (an egress allowlist host) is the same minus the client certificate.
pub fn cluster(spec: &ClusterSpec, opts: &ResourceOptions) -> Cluster {
    let san = SubjectAltNameMatcher {
        san_type: if spec.host_is_ip {
            SanType::IpAddress
        } else {
            SanType::Dns
        } as i32,
        matcher: Some(StringMatcher {
            match_pattern: Some(MatchPattern::Exact(spec.host.clone())),
            ignore_case: !spec.host_is_ip,
        }),
        ..Default::default()
    };
    let mut validation = CertificateValidationContext {
        match_typed_subject_alt_names: vec![san],
        ..Default::default()
    };
    match &spec.trust {
        Trust::System => {
            validation.trusted_ca = Some(DataSource {
                specifier: Some(Specifier::Filename(opts.system_trust_bundle.clone())),
                ..Default::default()
            })
        }
        Trust::Bundle(pem) => {
            validation.trusted_ca = Some(DataSource {
                specifier: Some(Specifier::InlineString(pem.clone())),
                ..Default::default()
            })
        }
    }
    let tls = UpstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_params: Some(TlsParameters {
                // why: Envoy's upstream default maximum is TLS 1.2; name both ends.
                tls_minimum_protocol_version: tls_protocol(spec.tls.min) as i32,
                tls_maximum_protocol_version: tls_protocol(spec.tls.max) as i32,
                ..Default::default()
            }),
            // A plain-TLS (allowlist) cluster has no secret: it presents no certificate.
            tls_certificate_sds_secret_configs: spec
                .secret
                .iter()
                .map(|name| SdsSecretConfig {
                    name: name.clone(),
                    sds_config: Some(ConfigSource {
                        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
                            AggregatedConfigSource {},
                        )),
                        resource_api_version: ApiVersion::V3 as i32,
                        ..Default::default()
                    }),
                })
                .collect(),
            validation_context_type: Some(ValidationContextType::ValidationContext(validation)),
            alpn_protocols: vec!["http/1.1".into()],
            ..Default::default()
        }),
        // No SNI for IP literals (RFC 6066 forbids it).
        sni: if spec.host_is_ip {
            String::new()
        } else {
            spec.host.clone()
        },
        ..Default::default()
    };
    let http = HttpProtocolOptions {
        common_http_protocol_options: Some(CoreHttpOptions {
            max_connection_duration: Some(pb_duration(opts.max_connection_duration)),
            ..Default::default()
        }),
        upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(
            ExplicitHttpConfig {
                protocol_config: Some(ProtocolConfig::HttpProtocolOptions(
                    Http1ProtocolOptions::default(),
                )),
            },
        )),
        ..Default::default()
    };
    // why: static endpoints, the addresses the control plane resolved and checked against
    // the address policy; Envoy never resolves a tenant's host name itself, so a name that
    // later points inside reaches nothing before the control plane has checked it again.
    let endpoints = spec
        .endpoints
        .iter()
        .map(|addr| LbEndpoint {
            host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(SocketAddress {
                        address: addr.ip().to_string(),
                        port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(
                            addr.port(),
                        ))),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            })),
            ..Default::default()
        })
        .collect();
    Cluster {
        name: spec.name.clone(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        connect_timeout: Some(pb_duration(opts.connect_timeout)),
        circuit_breakers: Some(opts.limits.circuit_breakers()),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: spec.name.clone(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: endpoints,
                ..Default::default()
            }],
            ..Default::default()
        }),
        transport_socket: Some(TransportSocket {
            name: "envoy.transport_sockets.tls".into(),
            config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(tls))),
        }),
        typed_extension_protocol_options: HashMap::from([(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_owned(),
            pack_any(http),
        )]),
        ..Default::default()
    }
}

/// A TLS version as Envoy's enum names it.
fn tls_protocol(v: TlsVersion) -> TlsProtocol {
    match v {
        TlsVersion::V1_0 => TlsProtocol::TlSv10,
        TlsVersion::V1_1 => TlsProtocol::TlSv11,
        TlsVersion::V1_2 => TlsProtocol::TlSv12,
        TlsVersion::V1_3 => TlsProtocol::TlSv13,
    }
}

/// A client certificate secret.
pub fn secret(name: &str, spec: &SecretSpec) -> Secret {
    let inline = |s: &str| DataSource {
        specifier: Some(Specifier::InlineString(s.to_owned())),
        ..Default::default()
    };
    Secret {
        name: name.to_owned(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(inline(&spec.material.chain_pem)),
            private_key: Some(inline(spec.material.key_pem.expose())),
            ..Default::default()
        })),
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::cluster::v3::circuit_breakers::Thresholds;

    use super::*;
    use crate::tls_versions::TlsRange;

    fn opts(limits: UpstreamLimits) -> ResourceOptions {
        ResourceOptions {
            system_trust_bundle: "/etc/ssl/certs/ca-certificates.crt".into(),
            max_connection_duration: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
            limits,
        }
    }

    fn spec(secret: Option<&str>) -> ClusterSpec {
        ClusterSpec {
            name: "mtls_1_partner.example_443".into(),
            host: "partner.example".into(),
            port: 443,
            host_is_ip: false,
            endpoints: vec!["192.0.2.10:443".parse().unwrap()],
            secret: secret.map(str::to_owned),
            trust: Trust::System,
            tls: TlsRange::DEFAULT,
        }
    }

    fn thresholds(c: &Cluster) -> &[Thresholds] {
        &c.circuit_breakers
            .as_ref()
            .expect("every cluster has circuit breakers")
            .thresholds
    }

    #[test]
    fn every_cluster_carries_the_configured_circuit_breaker() {
        let limits = UpstreamLimits {
            max_connections: 7,
            max_pending_requests: 3,
            max_requests: 9,
        };
        // A mapping's mTLS cluster and a plain-TLS (allowlist) cluster alike.
        for secret in [Some("cert_1"), None] {
            let c = cluster(&spec(secret), &opts(limits));
            let t = thresholds(&c);
            assert_eq!(t.len(), 1, "{secret:?}");
            let t = &t[0];
            assert_eq!(t.priority, RoutingPriority::Default as i32);
            let v = |x: &Option<UInt32Value>| x.as_ref().map(|x| x.value);
            assert_eq!(v(&t.max_connections), Some(7));
            assert_eq!(v(&t.max_pending_requests), Some(3));
            assert_eq!(v(&t.max_requests), Some(9));
            assert_eq!(v(&t.max_retries), Some(0), "the gateway never retries");
            assert!(t.retry_budget.is_none());
            assert!(t.track_remaining);
        }
    }

    #[test]
    fn default_limits_are_envoys_own_stated() {
        let c = cluster(&spec(Some("cert_1")), &opts(UpstreamLimits::default()));
        let t = &thresholds(&c)[0];
        let v = |x: &Option<UInt32Value>| x.as_ref().map(|x| x.value);
        assert_eq!(
            (
                v(&t.max_connections),
                v(&t.max_pending_requests),
                v(&t.max_requests)
            ),
            (Some(1024), Some(1024), Some(1024))
        );
    }
}
