//! Envoy resources built from the desired state.

use std::collections::HashMap;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::config::core::v3::Address;
use envoy_types::pb::envoy::config::core::v3::{
    address, config_source, socket_address, transport_socket, AggregatedConfigSource, ApiVersion,
    ConfigSource, DataSource, Http1ProtocolOptions, HttpProtocolOptions as CoreHttpOptions,
    SocketAddress, TransportSocket,
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
