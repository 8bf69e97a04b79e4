use super::*;
use crate::certinfo::CertInfo;
use crate::egress::EgressHost;
use crate::rejections::{Rejection, Rejections};
use crate::secret::Secret;
use crate::store::EgressRow;
use mtlsgate_filter::service::Service;
use std::time::Duration;

fn cert(id: i64) -> CertificateRow {
    CertificateRow {
        id,
        account: "a".into(),
        name: format!("c{id}"),
        display_name: format!("c{id}"),
        deleted: false,
        info: CertInfo {
            subject: "CN=x".into(),
            issuer: "CN=ca".into(),
            serial_number: "01".into(),
            not_before: 0,
            not_after: i64::MAX,
            sha256_fingerprint: String::new(),
            key_algorithm: "EC".into(),
            key_size: 256,
        },
        vault_version: 1,
        created_at: 0,
        updated_at: 0,
    }
}

fn mapping(id: i64, cert: i64, service: Service, url: &str, ca: Option<&str>) -> MappingRow {
    MappingRow {
        id,
        account: "a".into(),
        name: format!("m{id}"),
        service,
        url: url.into(),
        certificate_id: cert,
        enabled: true,
        deleted: false,
        ca_certificates: ca.map(Into::into),
        credential_id: None,
        created_at: 0,
        updated_at: 0,
    }
}

fn materials(ids: &[i64]) -> HashMap<i64, (u64, Arc<Material>)> {
    ids.iter()
        .map(|&id| {
            let m = Material {
                chain_pem: format!("chain{id}"),
                key_pem: Secret::new("k"),
            };
            (id, (1, Arc::new(m)))
        })
        .collect()
}

/// Every host of these mappings and hosts resolved to one public address.
pub(crate) fn resolve_all(maps: &[MappingRow], egress: &[EgressRow]) -> Resolutions {
    target_hosts(maps, egress)
        .into_iter()
        .map(|(host, port)| {
            let ip = host
                .parse::<std::net::IpAddr>()
                .unwrap_or(std::net::IpAddr::from([8, 8, 8, 8]));
            let addr = SocketAddr::new(ip, port);
            ((host, port), Resolution::Addresses(vec![addr]))
        })
        .collect()
}

fn build(
    certs: &[CertificateRow],
    maps: &[MappingRow],
    materials: &HashMap<i64, (u64, Arc<Material>)>,
    attachments: &Attachments,
) -> Desired {
    Desired::build(
        certs,
        maps,
        materials,
        attachments,
        &resolve_all(maps, &[]),
        &Rejected::default(),
    )
}

impl Desired {
    pub(crate) fn with_egress_resolved(self, hosts: &[EgressRow]) -> Desired {
        let r = resolve_all(&[], hosts);
        self.with_egress(hosts, &r, &Rejected::default())
    }
}

#[test]
fn mappings_share_a_cluster_only_when_certificate_host_port_and_trust_match() {
    let certs = [cert(1), cert(2)];
    let maps = [
        mapping(10, 1, Service::Idp, "https://a.example/x?q=1", None),
        mapping(11, 1, Service::Webhooks, "https://a.example/y", None),
        mapping(12, 1, Service::Idp, "https://a.example:8443/x", None),
        mapping(13, 2, Service::Idp, "https://a.example/z", None),
        mapping(14, 1, Service::Idp, "https://a.example/w", Some("PEM")),
    ];
    let d = build(&certs, &maps, &materials(&[1, 2]), &Attachments::default());
    assert_eq!(d.mappings.len(), 5);
    let cluster_of = |id: u64| {
        d.mappings
            .iter()
            .find(|r| r.entry.id == id)
            .unwrap()
            .entry
            .cluster
            .clone()
    };
    assert_eq!(cluster_of(10), cluster_of(11));
    assert_ne!(cluster_of(10), cluster_of(12));
    assert_ne!(cluster_of(10), cluster_of(13));
    assert_ne!(cluster_of(10), cluster_of(14));
    assert_eq!(d.clusters.len(), 4);
    assert_eq!(d.secrets.len(), 2);
    assert_eq!(d.clusters[&cluster_of(12)].port, 8443);
    assert_eq!(
        d.clusters[&cluster_of(14)].trust,
        Trust::Bundle("PEM".into())
    );
}

#[test]
fn mappings_without_material_or_live_certificate_are_refused_as_certificate_unavailable() {
    let certs = [cert(1), cert(3)];
    let maps = [
        mapping(10, 1, Service::Idp, "https://a.example/", None),
        // Material loaded, but the certificate row is gone.
        mapping(11, 2, Service::Idp, "https://b.example/", None),
        // A live certificate whose material is not loaded.
        mapping(12, 3, Service::Idp, "https://c.example/", None),
    ];
    let d = build(&certs, &maps, &materials(&[1, 2]), &Attachments::default());
    let state: Vec<(u64, Option<Unavailable>, bool)> = d
        .mappings
        .iter()
        .map(|r| (r.entry.id, r.entry.unavailable, r.entry.cluster.is_empty()))
        .collect();
    assert_eq!(
        state,
        vec![
            (10, None, false),
            (11, Some(Unavailable::Certificate), true),
            (12, Some(Unavailable::Certificate), true),
        ]
    );
    // Nothing to deliver for the refused ones: one cluster, one secret.
    assert_eq!((d.clusters.len(), d.secrets.len()), (1, 1));
}

#[test]
fn versions_change_with_content() {
    let certs = [cert(1)];
    let maps = [mapping(10, 1, Service::Idp, "https://a.example/", None)];
    let d1 = build(&certs, &maps, &materials(&[1]), &Attachments::default());
    let mut rotated = materials(&[1]);
    rotated.insert(
        1,
        (
            2,
            Arc::new(Material {
                chain_pem: "new".into(),
                key_pem: Secret::new("k2"),
            }),
        ),
    );
    let d2 = build(&certs, &maps, &rotated, &Attachments::default());
    let names = vec![secret_name(1)];
    assert_eq!(d1.cds_version, d2.cds_version, "same clusters");
    assert_ne!(
        d1.sds_version(&names),
        d2.sds_version(&names),
        "rotated secret"
    );
    let maps2 = [mapping(10, 1, Service::Idp, "https://b.example/", None)];
    assert_ne!(
        d1.cds_version,
        build(&certs, &maps2, &materials(&[1]), &Attachments::default()).cds_version
    );
}

fn egress(rows: &[(&str, &str)]) -> Vec<EgressRow> {
    rows.iter()
        .map(|(account, host)| EgressRow {
            account: account.to_string(),
            host: crate::egress::EgressHost::parse(host).unwrap(),
        })
        .collect()
}

#[test]
fn allowlisted_hosts_get_one_plain_tls_cluster_per_host_and_port() {
    let d = Desired::default().with_egress_resolved(&egress(&[
        ("a", "x.example"),
        ("b", "x.example"),
        ("a", "x.example:8443"),
        ("a", "[::1]:9443"),
        ("a", "10.1.2.3"),
    ]));
    let names: Vec<&str> = d.clusters.keys().map(String::as_str).collect();
    assert_eq!(names.len(), 4, "{names:?}");
    assert!(names.contains(&"tls_x.example_443"));
    assert!(names.contains(&"tls_x.example_8443"));
    assert!(names.contains(&"tls_10.1.2.3_443"));
    let v6 = tls_cluster_name("::1", 9443);
    assert!(v6.starts_with("tls___1_9443_") && v6.len() == "tls___1_9443_".len() + 8);
    assert_ne!(v6, tls_cluster_name("__1", 9443));
    for c in d.clusters.values() {
        assert_eq!(
            c.secret, None,
            "{}: plain TLS has no client certificate",
            c.name
        );
        assert_eq!(c.trust, Trust::System);
    }
    assert!(d.clusters[&v6].host_is_ip && d.clusters[&v6].host == "::1");
    assert_eq!(d.fallback.len(), 5);
    assert!(d.secrets.is_empty() && d.mappings.is_empty());
    // Both accounts' x.example entries name the one shared cluster.
    let x: Vec<&str> = d
        .fallback
        .iter()
        .filter(|f| f.host == "x.example" && f.port == 443)
        .map(|f| f.cluster.as_str())
        .collect();
    assert_eq!(x, ["tls_x.example_443", "tls_x.example_443"]);
}

#[test]
fn the_cds_version_follows_the_allowlist_and_mtls_clusters_keep_their_secret() {
    let certs = [cert(1)];
    let maps = [mapping(10, 1, Service::Idp, "https://x.example/", None)];
    let base = build(&certs, &maps, &materials(&[1]), &Attachments::default());
    let with = base
        .clone()
        .with_egress_resolved(&egress(&[("a", "x.example")]));
    assert_ne!(base.cds_version, with.cds_version);
    assert_eq!(
        with.clusters.len(),
        2,
        "the mTLS and the plain-TLS cluster are apart"
    );
    let mtls = &with.clusters[&with.mappings[0].entry.cluster];
    assert_eq!(mtls.secret.as_deref(), Some("cert-1"));
    let again = base
        .clone()
        .with_egress_resolved(&egress(&[("b", "x.example")]));
    assert_eq!(
        with.cds_version, again.cds_version,
        "same clusters, whichever account allows the host"
    );
}

#[test]
fn mapping_clusters_of_an_ipv6_literal_and_its_sanitised_twin_differ() {
    let certs = [cert(1)];
    let maps = [
        mapping(10, 1, Service::Idp, "https://[::1]:9443/x", None),
        mapping(11, 1, Service::Idp, "https://__1:9443/x", None),
    ];
    let d = build(&certs, &maps, &materials(&[1]), &Attachments::default());
    let names: Vec<&str> = d
        .mappings
        .iter()
        .map(|r| r.entry.cluster.as_str())
        .collect();
    assert_eq!(names.len(), 2);
    assert_ne!(names[0], names[1], "{names:?}");
    assert!(names[0].starts_with("mtls_1___1_9443_"), "{names:?}");
    assert_eq!(names[1], "mtls_1___1_9443");
    assert_eq!(d.clusters.len(), 2);
}

/// Finding 11: what a gateway refused is withheld from every gateway (no cluster, no secret)
/// and its mapping is refused with `material_rejected`; the others are untouched. A new
/// version of the material is offered again.
#[test]
fn a_refused_secret_or_cluster_is_withheld_and_its_mapping_says_so() {
    let certs = [cert(1), cert(2), cert(3)];
    let maps = [
        mapping(10, 1, Service::Idp, "https://a.example/", None),
        mapping(11, 2, Service::Idp, "https://b.example/", None),
        mapping(12, 3, Service::Idp, "https://c.example/", Some("PEM")),
    ];
    let mats = materials(&[1, 2, 3]);
    let clean = build(&certs, &maps, &mats, &Attachments::default());
    let bad_secret = clean.secrets.get("cert-1").unwrap().fingerprint();
    let bad_cluster = clean
        .mappings
        .iter()
        .find(|r| r.entry.id == 12)
        .unwrap()
        .entry
        .cluster
        .clone();
    let rejections = Rejections::new(Duration::from_secs(60));
    rejections.record(
        "gw",
        &[
            Rejection {
                kind: Kind::Secret,
                name: "cert-1".into(),
                fingerprint: bad_secret,
                reason: "KEY_VALUES_MISMATCH".into(),
                ambiguous: false,
            },
            Rejection {
                kind: Kind::Cluster,
                name: bad_cluster.clone(),
                fingerprint: CLUSTER_FINGERPRINT.into(),
                reason: "Failed to load trusted CA certificates".into(),
                ambiguous: false,
            },
        ],
    );
    let rejected = rejections.current();
    let d = Desired::build(
        &certs,
        &maps,
        &mats,
        &Attachments::default(),
        &resolve_all(&maps, &[]),
        &rejected,
    );
    let state = |id: u64| d.mappings.iter().find(|r| r.entry.id == id).unwrap();
    assert_eq!(
        state(10).entry.unavailable,
        Some(Unavailable::MaterialRejected)
    );
    assert_eq!(
        state(12).entry.unavailable,
        Some(Unavailable::MaterialRejected)
    );
    assert_eq!(state(11).entry.unavailable, None);
    assert!(!d.secrets.contains_key("cert-1") && !d.clusters.contains_key(&bad_cluster));
    assert!(d.secrets.contains_key("cert-2"));
    assert_eq!(d.clusters.len(), 1);

    // Rotated material (a new Vault version) is offered again.
    let mut rotated = mats.clone();
    let (v, m) = rotated.get(&1).unwrap().clone();
    rotated.insert(1, (v + 1, m));
    let d = Desired::build(
        &certs,
        &maps,
        &rotated,
        &Attachments::default(),
        &resolve_all(&maps, &[]),
        &rejected,
    );
    assert!(d.secrets.contains_key("cert-1"));
    assert_eq!(
        d.mappings
            .iter()
            .find(|r| r.entry.id == 10)
            .unwrap()
            .entry
            .unavailable,
        None
    );

    // An allowlisted host whose plain-TLS cluster was refused is refused with the code.
    let hosts = [EgressRow {
        account: "a".into(),
        host: EgressHost::parse("api.example.com").unwrap(),
    }];
    rejections.record(
        "gw",
        &[Rejection {
            kind: Kind::Cluster,
            name: tls_cluster_name("api.example.com", 443),
            fingerprint: CLUSTER_FINGERPRINT.into(),
            reason: "refused".into(),
            ambiguous: false,
        }],
    );
    let d =
        Desired::default().with_egress(&hosts, &resolve_all(&[], &hosts), &rejections.current());
    assert!(d.clusters.is_empty());
    assert_eq!(
        d.fallback[0].unavailable,
        Some(Unavailable::MaterialRejected)
    );
}
