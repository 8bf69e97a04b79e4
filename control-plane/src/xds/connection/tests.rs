use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::rpc::Status;
use mtlsgate_filter::service::Service;

use super::*;
use crate::certinfo::CertInfo;
use crate::p12::Material;
use crate::secret::Secret;
use crate::store::{CertificateRow, MappingRow};

fn opts() -> ResourceOptions {
    ResourceOptions {
        system_trust_bundle: "/etc/ssl/certs/ca-certificates.crt".into(),
        max_connection_duration: Duration::from_secs(60),
        connect_timeout: Duration::from_secs(5),
        limits: super::resources::UpstreamLimits::default(),
    }
}

fn desired(urls: &[(i64, &str)], material_version: u64) -> Desired {
    let certs: Vec<CertificateRow> = urls
        .iter()
        .map(|(id, _)| CertificateRow {
            id: *id,
            account: "a".into(),
            name: format!("c{id}"),
            display_name: String::new(),
            deleted: false,
            info: CertInfo {
                subject: String::new(),
                issuer: String::new(),
                serial_number: String::new(),
                not_before: 0,
                not_after: 0,
                sha256_fingerprint: String::new(),
                key_algorithm: String::new(),
                key_size: 0,
            },
            vault_version: 1,
            created_at: 0,
            updated_at: 0,
        })
        .collect();
    let maps: Vec<MappingRow> = urls
        .iter()
        .enumerate()
        .map(|(i, (cert, url))| MappingRow {
            id: i as i64 + 1,
            account: "a".into(),
            name: format!("m{i}"),
            service: Service::Idp,
            url: url.to_string(),
            certificate_id: *cert,
            enabled: true,
            deleted: false,
            ca_certificates: None,
            credential_id: None,
            created_at: 0,
            updated_at: 0,
        })
        .collect();
    let materials: HashMap<i64, (u64, Arc<Material>)> = urls
        .iter()
        .map(|(id, _)| {
            let m = Material {
                chain_pem: format!("chain{id}-{material_version}"),
                key_pem: Secret::new("k"),
            };
            (*id, (material_version, Arc::new(m)))
        })
        .collect();
    Desired::build(
        &certs,
        &maps,
        &materials,
        &Default::default(),
        &crate::desired::tests::resolve_all(&maps, &[]),
        &Default::default(),
    )
}

fn request(type_url: &str, nonce: &str, names: &[&str], error: Option<&str>) -> DiscoveryRequest {
    DiscoveryRequest {
        node: Some(Node {
            id: "envoy-1".into(),
            ..Default::default()
        }),
        type_url: type_url.into(),
        response_nonce: nonce.into(),
        resource_names: names.iter().map(|s| s.to_string()).collect(),
        error_detail: error.map(|m| Status {
            code: 3,
            message: m.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn initial_request_gets_all_clusters_and_ack_is_reported_once() {
    let d = desired(&[(1, "https://a.example/"), (2, "https://b.example/")], 1);
    let mut c = Connection::new(opts());
    let out = c.handle_request(request(CLUSTER_TYPE, "", &[], None), &d);
    assert_eq!(c.node(), Some("envoy-1"));
    assert!(out.ack.is_none());
    assert_eq!(out.responses.len(), 1);
    let r = &out.responses[0];
    assert_eq!(r.resources.len(), 2);
    assert_eq!(r.version_info, d.cds_version);

    // ACK: recorded, nothing re-sent.
    let out = c.handle_request(request(CLUSTER_TYPE, &r.nonce, &[], None), &d);
    assert!(out.responses.is_empty());
    let ack = out.ack.unwrap();
    assert_eq!(ack.names, d.clusters.keys().cloned().collect::<Vec<_>>());
}

#[test]
fn stale_nonces_are_ignored() {
    let d = desired(&[(1, "https://a.example/")], 1);
    let mut c = Connection::new(opts());
    let first = c
        .handle_request(request(CLUSTER_TYPE, "", &[], None), &d)
        .responses
        .remove(0);
    let d2 = desired(&[(1, "https://a.example/"), (2, "https://b.example/")], 1);
    let second = c.handle_update(&d2).remove(0);
    assert_ne!(first.nonce, second.nonce);
    // An ACK of the first response arrives late: ignored, not recorded.
    let out = c.handle_request(request(CLUSTER_TYPE, &first.nonce, &[], None), &d2);
    assert!(out.ack.is_none() && out.responses.is_empty());
    let out = c.handle_request(request(CLUSTER_TYPE, &second.nonce, &[], None), &d2);
    assert_eq!(out.ack.unwrap().names.len(), 2);
}

#[test]
fn nack_is_not_resent_but_the_next_change_is() {
    let d = desired(&[(1, "https://a.example/")], 1);
    let mut c = Connection::new(opts());
    let r = c
        .handle_request(request(CLUSTER_TYPE, "", &[], None), &d)
        .responses
        .remove(0);
    let out = c.handle_request(
        request(CLUSTER_TYPE, &r.nonce, &[], Some("bad cluster")),
        &d,
    );
    assert!(out.ack.is_none());
    assert!(
        out.responses.is_empty(),
        "a NACKed version must not be re-sent"
    );
    assert!(c.handle_update(&d).is_empty());
    let d2 = desired(&[(1, "https://a.example/"), (2, "https://b.example/")], 1);
    assert_eq!(c.handle_update(&d2).len(), 1);
}

/// Finding 11: Envoy names the clusters it refuses; those (and only those) are blamed.
#[test]
fn a_nack_blames_the_clusters_its_detail_names() {
    let d = desired(&[(1, "https://a.example/"), (2, "https://b.example/")], 1);
    let mut c = Connection::new(opts());
    let r = c
        .handle_request(request(CLUSTER_TYPE, "", &[], None), &d)
        .responses
        .remove(0);
    let names: Vec<String> = d.clusters.keys().cloned().collect();
    let detail = format!(
        "Error adding/updating cluster(s) {}: Failed to load trusted CA certificates from <inline>",
        names[1]
    );
    let out = c.handle_request(request(CLUSTER_TYPE, &r.nonce, &[], Some(&detail)), &d);
    assert!(out.ack.is_none());
    assert_eq!(out.rejected.len(), 1);
    assert_eq!(out.rejected[0].kind, Kind::Cluster);
    assert_eq!(out.rejected[0].name, names[1]);
    assert_eq!(out.rejected[0].reason, detail);
}

/// An SDS refusal may not name its secret; what changed since the last ACK is blamed, never
/// what Envoy had accepted already.
#[test]
fn a_nack_that_names_nothing_blames_what_changed_since_the_last_ack() {
    let d = desired(&[(1, "https://a.example/"), (2, "https://b.example/")], 1);
    let mut c = Connection::new(opts());
    let names = ["cert-1", "cert-2"];
    let r = c
        .handle_request(request(SECRET_TYPE, "", &names, None), &d)
        .responses
        .remove(0);
    assert!(c
        .handle_request(request(SECRET_TYPE, &r.nonce, &names, None), &d)
        .ack
        .is_some());
    // cert-2 rotates, and Envoy refuses the update without naming it.
    let mut rotated = d.clone();
    let old = rotated.secrets.get("cert-2").unwrap().clone();
    rotated.secrets.insert(
        "cert-2".into(),
        crate::desired::SecretSpec {
            material: Arc::new(Material {
                chain_pem: "other chain".into(),
                key_pem: Secret::new("other key"),
            }),
            vault_version: old.vault_version + 1,
        },
    );
    let pushed = c.handle_update(&rotated).remove(0);
    let out = c.handle_request(
        request(
            SECRET_TYPE,
            &pushed.nonce,
            &names,
            Some("Failed to load private key from <inline>"),
        ),
        &rotated,
    );
    assert_eq!(out.rejected.len(), 1, "{:?}", out.rejected);
    assert_eq!(out.rejected[0].kind, Kind::Secret);
    assert_eq!(out.rejected[0].name, "cert-2");
    assert_eq!(
        out.rejected[0].fingerprint,
        rotated.secrets.get("cert-2").unwrap().fingerprint()
    );
    assert!(!out.rejected[0].ambiguous, "one suspect: proven");
}

/// Two secrets changed and the refusal names neither: both are blamed, as ambiguous (each
/// is offered again alone later), never the one Envoy had accepted before.
#[test]
fn an_unnamed_refusal_of_several_changes_is_ambiguous() {
    let d = desired(&[(1, "https://a.example/")], 1);
    let mut c = Connection::new(opts());
    let r = c
        .handle_request(request(SECRET_TYPE, "", &["cert-1"], None), &d)
        .responses
        .remove(0);
    assert!(c
        .handle_request(request(SECRET_TYPE, &r.nonce, &["cert-1"], None), &d)
        .ack
        .is_some());
    let three = desired(
        &[
            (1, "https://a.example/"),
            (2, "https://b.example/"),
            (3, "https://c.example/"),
        ],
        1,
    );
    let names = ["cert-1", "cert-2", "cert-3"];
    let r = c
        .handle_request(request(SECRET_TYPE, &r.nonce, &names, None), &three)
        .responses
        .remove(0);
    let out = c.handle_request(
        request(
            SECRET_TYPE,
            &r.nonce,
            &names,
            Some("Failed to load private key"),
        ),
        &three,
    );
    let mut blamed: Vec<_> = out.rejected.iter().map(|r| r.name.as_str()).collect();
    blamed.sort();
    assert_eq!(blamed, ["cert-2", "cert-3"]);
    assert!(out.rejected.iter().all(|r| r.ambiguous));
}

#[test]
fn sds_answers_every_requested_secret_that_exists_and_pushes_rotations() {
    let d = desired(&[(1, "https://a.example/"), (2, "https://b.example/")], 1);
    let mut c = Connection::new(opts());
    let r = c
        .handle_request(
            request(SECRET_TYPE, "", &["cert-2", "cert-1", "cert-9"], None),
            &d,
        )
        .responses
        .remove(0);
    assert_eq!(r.resources.len(), 2, "cert-9 does not exist");
    let ack = c
        .handle_request(
            request(SECRET_TYPE, &r.nonce, &["cert-1", "cert-2", "cert-9"], None),
            &d,
        )
        .ack
        .unwrap();
    assert_eq!(ack.names, vec!["cert-1".to_string(), "cert-2".to_string()]);

    // A rotation (new Vault version) changes the content: pushed.
    let rotated = desired(&[(1, "https://a.example/"), (2, "https://b.example/")], 2);
    let pushed = c.handle_update(&rotated);
    assert_eq!(pushed.len(), 1);
    assert_ne!(pushed[0].version_info, r.version_info);

    // A new name in the subscription gets an answer even with the last nonce.
    let out = c.handle_request(
        request(SECRET_TYPE, &pushed[0].nonce, &["cert-1"], None),
        &rotated,
    );
    assert!(out.ack.is_some());
    assert_eq!(out.responses.len(), 1);
    assert_eq!(out.responses[0].resources.len(), 1);
}

#[test]
fn unknown_types_are_ignored() {
    let d = desired(&[], 1);
    let mut c = Connection::new(opts());
    let out = c.handle_request(
        request(
            "type.googleapis.com/envoy.config.listener.v3.Listener",
            "",
            &[],
            None,
        ),
        &d,
    );
    assert!(out.responses.is_empty() && out.ack.is_none());
}

#[test]
fn allowlist_clusters_are_plain_tls_verified_against_the_system_store() {
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::core::v3::{data_source, transport_socket};
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
        common_tls_context::ValidationContextType, subject_alt_name_matcher::SanType,
        tls_parameters::TlsProtocol, UpstreamTlsContext,
    };
    use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
    use prost::Message;

    let host = crate::egress::EgressHost::parse("api.example.com:8443").unwrap();
    let d =
        desired(&[(1, "https://a.example/")], 1).with_egress_resolved(&[crate::store::EgressRow {
            account: "a".into(),
            host,
        }]);
    let mut c = Connection::new(opts());
    let r = c
        .handle_request(request(CLUSTER_TYPE, "", &[], None), &d)
        .responses
        .remove(0);
    assert_eq!(r.resources.len(), 2);
    let clusters: Vec<Cluster> = r
        .resources
        .iter()
        .map(|a| Cluster::decode(a.value.as_slice()).unwrap())
        .collect();
    let tls_of = |c: &Cluster| {
        let Some(transport_socket::ConfigType::TypedConfig(any)) =
            &c.transport_socket.as_ref().unwrap().config_type
        else {
            panic!("no typed config");
        };
        UpstreamTlsContext::decode(any.value.as_slice()).unwrap()
    };
    let plain = clusters
        .iter()
        .find(|c| c.name == "tls_api.example.com_8443")
        .unwrap();
    let tls = tls_of(plain);
    assert_eq!(tls.sni, "api.example.com");
    let common = tls.common_tls_context.unwrap();
    assert!(
        common.tls_certificate_sds_secret_configs.is_empty() && common.tls_certificates.is_empty(),
        "no client certificate"
    );
    let params = common.tls_params.unwrap();
    assert_eq!(
        params.tls_minimum_protocol_version,
        TlsProtocol::TlSv12 as i32
    );
    assert_eq!(
        params.tls_maximum_protocol_version,
        TlsProtocol::TlSv13 as i32
    );
    let Some(ValidationContextType::ValidationContext(v)) = common.validation_context_type else {
        panic!("no validation context");
    };
    assert_eq!(
        v.trusted_ca.unwrap().specifier,
        Some(data_source::Specifier::Filename(
            "/etc/ssl/certs/ca-certificates.crt".into()
        ))
    );
    let san = &v.match_typed_subject_alt_names[0];
    assert_eq!(san.san_type, SanType::Dns as i32);
    assert_eq!(
        san.matcher.as_ref().unwrap().match_pattern,
        Some(MatchPattern::Exact("api.example.com".into()))
    );
    assert!(plain
        .typed_extension_protocol_options
        .contains_key("envoy.extensions.upstreams.http.v3.HttpProtocolOptions"));

    // The mTLS cluster still asks SDS for its certificate.
    let mtls = clusters.iter().find(|c| c.name != plain.name).unwrap();
    let sds = tls_of(mtls)
        .common_tls_context
        .unwrap()
        .tls_certificate_sds_secret_configs;
    assert_eq!(sds.len(), 1);
    assert_eq!(sds[0].name, "cert-1");
}

#[test]
fn a_change_of_credentials_only_pushes_nothing_to_envoy() {
    let d = desired(&[(1, "https://a.example/")], 1);
    let mut c = Connection::new(opts());
    let r = c
        .handle_request(request(CLUSTER_TYPE, "", &[], None), &d)
        .responses
        .remove(0);
    c.handle_request(request(CLUSTER_TYPE, &r.nonce, &[], None), &d);
    let with_user = d.clone().with_callers(crate::desired::Callers {
        users: vec![mtlsgate_filter::snapshot::UserRef {
            account: "a".into(),
            id: 1,
        }],
        ..Default::default()
    });
    assert_ne!(d, with_user);
    assert!(c.handle_update(&with_user).is_empty());
}

#[test]
fn synced_is_the_epoch_envoy_acknowledged_on_every_subscription() {
    let d = desired(&[(1, "https://a.example/")], 1);
    let mut c = Connection::new(opts());
    c.set_epoch(3);
    let cds = c
        .handle_request(request(CLUSTER_TYPE, "", &[], None), &d)
        .responses
        .remove(0);
    assert_eq!(c.synced(), None, "sent, not acknowledged");
    c.handle_request(request(CLUSTER_TYPE, &cds.nonce, &[], None), &d);
    assert_eq!(c.synced(), Some(3));
    let sds = c
        .handle_request(request(SECRET_TYPE, "", &["cert-1"], None), &d)
        .responses
        .remove(0);
    assert_eq!(c.synced(), None, "the secrets are not acknowledged yet");
    c.handle_request(request(SECRET_TYPE, &sds.nonce, &["cert-1"], None), &d);
    assert_eq!(c.synced(), Some(3));

    // A desired state whose clusters and secrets are the same: Envoy holds it already.
    c.set_epoch(4);
    assert!(c.handle_update(&d).is_empty());
    assert_eq!(c.synced(), Some(4));

    // A rotated certificate: Envoy holds epoch 5 only once it acknowledges the new secret.
    let rotated = desired(&[(1, "https://a.example/")], 2);
    c.set_epoch(5);
    let pushed = c.handle_update(&rotated);
    assert_eq!(pushed.len(), 1);
    assert_eq!(c.synced(), Some(4));
    // A refusal proves nothing.
    c.handle_request(
        request(SECRET_TYPE, &pushed[0].nonce, &["cert-1"], Some("bad key")),
        &rotated,
    );
    assert_eq!(c.synced(), Some(4));
    // Offered again after the refusal (say the reconciler rebuilt), then acknowledged.
    let rotated_again = desired(&[(1, "https://a.example/")], 3);
    c.set_epoch(6);
    let pushed = c.handle_update(&rotated_again);
    assert_eq!(pushed.len(), 1);
    c.handle_request(
        request(SECRET_TYPE, &pushed[0].nonce, &["cert-1"], None),
        &rotated_again,
    );
    assert_eq!(c.synced(), Some(6));
}
