use super::*;
use crate::snapshot::{MappingEntry, Snapshot};

const URL: &str = "https://api.brand.example/oauth/token?x=1";

fn index() -> Index {
    Index::new(Snapshot {
        version: "1".into(),
        mappings: vec![MappingEntry {
            id: 11,
            account: "52653865".into(),
            service: Service::Idp,
            url: URL.into(),
            cluster: "mtls_5_api.brand.example_443".into(),
            certificate_id: 5,
            certificate_serial: "0A".into(),
        }],

        ..Default::default()
    })
}

fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn decide_with(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    idx: Option<&Index>,
) -> Decision {
    let headers = h(headers);
    decide(
        &Request {
            method,
            path,
            headers: &headers,
        },
        idx,
    )
}

fn refusal(d: Decision) -> (u16, &'static str) {
    match d {
        Decision::Refuse(r) => (r.status, r.code),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn forwards_a_mapped_triplet_and_rewrites_the_request() {
    let idx = index();
    let d = decide_with(
        "POST",
        "/mtls/account/52653865",
        &[
            (":authority", "gateway:10000"),
            ("authorization", "Bearer caller-secret"),
            ("lp-forward-url", URL),
            ("lp-service-name", "IDP"),
            ("lp-authorization-override", "Basic dXBzdHJlYW0="),
            ("lp-stop-if-certificate-not-found", "true"),
            ("x-mtlsgate-cluster", "attacker-choice"),
            ("x-forwarded-for", "10.0.0.1"),
            ("content-type", "application/json"),
        ],
        Some(&idx),
    );
    let Decision::Forward(f) = d else {
        panic!("{d:?}")
    };
    assert_eq!(f.route.mapping_id, 11);
    assert_eq!(f.account, "52653865");
    for gone in [
        "authorization",
        "lp-forward-url",
        "lp-service-name",
        "lp-authorization-override",
        "lp-stop-if-certificate-not-found",
        "x-mtlsgate-cluster",
        "x-forwarded-for",
    ] {
        assert!(f.remove.iter().any(|r| r == gone), "{gone} must be removed");
    }
    assert!(!f.remove.iter().any(|r| r == "content-type"));
    let set: std::collections::HashMap<_, _> = f.set.iter().cloned().collect();
    assert_eq!(set[":authority"], "api.brand.example");
    assert_eq!(set[":path"], "/oauth/token?x=1");
    assert_eq!(set[":scheme"], "https");
    assert_eq!(set["x-mtlsgate-cluster"], "mtls_5_api.brand.example_443");
    assert_eq!(set["authorization"], "Basic dXBzdHJlYW0=");
}

#[test]
fn service_may_be_named_by_id() {
    let idx = index();
    let d = decide_with(
        "GET",
        "/mtls/account/52653865?ignored=1",
        &[("lp-forward-url", URL), ("lp-service-name", "1")],
        Some(&idx),
    );
    assert!(matches!(d, Decision::Forward(_)), "{d:?}");
}

#[test]
fn unmapped_triplets_are_refused_as_no_mtls_mapping() {
    let idx = index();
    for (account, service, url) in [
        ("52653865", "WEBHOOKS", URL),
        (
            "52653865",
            "IDP",
            "https://api.brand.example/oauth/token?x=2",
        ),
        ("52653865", "IDP", "https://api.brand.example/oauth/token"),
        ("other", "IDP", URL),
    ] {
        let d = decide_with(
            "GET",
            &format!("/mtls/account/{account}"),
            &[("lp-forward-url", url), ("lp-service-name", service)],
            Some(&idx),
        );
        assert_eq!(
            refusal(d),
            (400, "no_mtls_mapping"),
            "{account} {service} {url}"
        );
    }
}

#[test]
fn bad_headers_get_their_own_codes() {
    let idx = index();
    type Case<'a> = (&'a [(&'a str, &'a str)], (u16, &'a str));
    let cases: &[Case] = &[
        (&[("lp-service-name", "IDP")], (400, "missing_forward_url")),
        (
            &[("lp-forward-url", "http://x/"), ("lp-service-name", "IDP")],
            (400, "invalid_forward_url"),
        ),
        (
            &[
                ("lp-forward-url", "https://a@b/"),
                ("lp-service-name", "IDP"),
            ],
            (400, "invalid_forward_url"),
        ),
        (&[("lp-forward-url", URL)], (400, "missing_service_name")),
        (
            &[("lp-forward-url", URL), ("lp-service-name", "idp")],
            (400, "invalid_service_name"),
        ),
        (
            &[
                ("lp-forward-url", URL),
                ("lp-forward-url", "https://evil/"),
                ("lp-service-name", "IDP"),
            ],
            (400, "duplicate_header"),
        ),
    ];
    for (headers, want) in cases {
        let d = decide_with("GET", "/mtls/account/52653865", headers, Some(&idx));
        assert_eq!(refusal(d), *want, "{headers:?}");
    }
}

#[test]
fn other_methods_and_bad_accounts_are_refused() {
    let idx = index();
    let hs = [("lp-forward-url", URL), ("lp-service-name", "IDP")];
    assert_eq!(
        refusal(decide_with(
            "PATCH",
            "/mtls/account/52653865",
            &hs,
            Some(&idx)
        )),
        (405, "method_not_allowed")
    );
    assert_eq!(
        refusal(decide_with("GET", "/mtls/account/", &hs, Some(&idx))),
        (400, "invalid_account")
    );
    assert_eq!(
        refusal(decide_with("GET", "/mtls/account/a%2Fb", &hs, Some(&idx))),
        (400, "invalid_account")
    );
}

#[test]
fn no_snapshot_means_503_never_a_forward() {
    let d = decide_with(
        "GET",
        "/mtls/account/52653865",
        &[("lp-forward-url", URL), ("lp-service-name", "IDP")],
        None,
    );
    assert_eq!(refusal(d), (503, "snapshot_unavailable"));
}

#[test]
fn other_paths_pass_through_without_the_filters_own_headers() {
    let idx = index();
    let d = decide_with(
        "GET",
        "/mtls/account/52653865/certificates",
        &[("x-mtlsgate-cluster", "x"), ("authorization", "Bearer t")],
        Some(&idx),
    );
    assert_eq!(
        d,
        Decision::PassThrough {
            remove: vec!["x-mtlsgate-cluster".into()]
        }
    );
    let d = decide_with("GET", "/elsewhere", &[], Some(&idx));
    assert_eq!(d, Decision::PassThrough { remove: vec![] });
}

#[test]
fn connection_tokens_become_hop_by_hop() {
    let idx = index();
    let d = decide_with(
        "GET",
        "/mtls/account/52653865",
        &[
            ("lp-forward-url", URL),
            ("lp-service-name", "IDP"),
            ("connection", "x-secret-hop, keep-alive"),
        ],
        Some(&idx),
    );
    let Decision::Forward(f) = d else { panic!() };
    assert!(f.remove.iter().any(|r| r == "x-secret-hop"));
    assert!(f.remove.iter().any(|r| r == "connection"));
}
