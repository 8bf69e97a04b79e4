use base64::Engine;
use ed25519_dalek::SigningKey;

use super::*;
use crate::config::{FilterConfig, Settings};
use crate::oauth1::Verified;
use crate::snapshot::{
    AppKeyEntry, FallbackEntry, MappingEntry, Snapshot, TokenKey, Unavailable, UserRef,
};
use crate::throttle::{Limits, Throttled};
use crate::token::{self, Claims};

const URL: &str = "https://api.brand.example/oauth/token?x=1";
const ACC: &str = "52653865";
const NOW: u64 = 1_800_000_000;

fn key() -> SigningKey {
    SigningKey::from_bytes(&[7u8; 32])
}

fn index() -> Index {
    index_with(None, false)
}

/// The test snapshot, its mapping carrying an attached credential's header.
fn index_with(authorization: Option<&str>, override_allowed: bool) -> Index {
    index_of(authorization, override_allowed, None)
}

fn index_of(
    authorization: Option<&str>,
    override_allowed: bool,
    unavailable: Option<Unavailable>,
) -> Index {
    Index::new(Snapshot {
        version: "1".into(),
        mappings: vec![MappingEntry {
            id: 11,
            account: ACC.into(),
            service: Service::Idp,
            url: URL.into(),
            cluster: "mtls_5_api.brand.example_443".into(),
            certificate_id: 5,
            certificate_serial: "0A".into(),
            authorization: authorization.map(str::to_owned),
            override_allowed,
            unavailable,
        }],
        token_keys: vec![TokenKey {
            kid: "k1".into(),
            public_key: base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(key().verifying_key().as_bytes()),
        }],
        app_keys: vec![AppKeyEntry {
            id: 3,
            account: ACC.into(),
            consumer_key: "ck".into(),
            access_token: "at".into(),
            consumer_secret: "cs".into(),
            access_token_secret: "ts".into(),
            privileges: vec![crate::privilege::CHECK_MAPPING.into()],
        }],
        users: vec![
            UserRef {
                account: ACC.into(),
                id: 1,
            },
            UserRef {
                account: "other".into(),
                id: 2,
            },
        ],
        fallback: vec![
            FallbackEntry {
                account: ACC.into(),
                host: "plain.example".into(),
                port: 443,
                cluster: "tls_plain.example_443".into(),
                unavailable: None,
            },
            FallbackEntry {
                account: ACC.into(),
                host: "inside.example".into(),
                port: 443,
                cluster: String::new(),
                unavailable: Some(Unavailable::TargetNotAllowed),
            },
        ],
    })
}

fn bearer(account: &str, user: u64, privileges: &[&str], exp: u64) -> String {
    let claims = Claims {
        iss: token::ISSUER.into(),
        sub: user.to_string(),
        acc: account.into(),
        name: "alice".into(),
        adm: false,
        privileges: privileges.iter().map(|s| s.to_string()).collect(),
        iat: NOW - 10,
        exp,
        jti: "j".into(),
    };
    format!("Bearer {}", token::sign(&claims, "k1", &key()))
}

fn good() -> String {
    bearer(ACC, 1, &[crate::privilege::FORWARD], NOW + 100)
}

struct AllNew;
impl NonceGuard for AllNew {
    fn first_use(&mut self, _: &Verified, _: u64) -> bool {
        true
    }
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
    let mut nonces = AllNew;
    let mut ctx = Context {
        index: idx,
        now: NOW,
        max_skew_secs: 300,
        keep_query: false,
        public_scheme: "http",
        nonces: &mut nonces,
    };
    decide(
        &Request {
            method,
            path,
            authority: "gateway:10000",
            headers: &headers,
            client_ip: "127.0.0.2",
        },
        &mut ctx,
    )
}

fn refusal(d: Decision) -> (u16, &'static str) {
    match d {
        Decision::Refuse(r, audit) => {
            assert_eq!(audit.decision, "refused");
            assert_eq!(audit.code, r.code);
            (r.status, r.code)
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[wasm_bindgen_test::wasm_bindgen_test(unsupported = test)]
fn forwards_a_mapped_triplet_and_rewrites_the_request() {
    let idx = index();
    let auth = good();
    let d = decide_with(
        "POST",
        "/mtls/account/52653865",
        &[
            (":authority", "gateway:10000"),
            ("authorization", &auth),
            ("lp-forward-url", URL),
            ("lp-service-name", "IDP"),
            ("lp-authorization-override", "Basic dXBzdHJlYW0="),
            ("x-mtlsgate-cluster", "attacker-choice"),
            ("x-forwarded-for", "10.0.0.1"),
            ("content-type", "application/json"),
        ],
        Some(&idx),
    );
    let Decision::Forward(f) = d else {
        panic!("{d:?}")
    };
    assert_eq!(f.route.as_ref().map(|r| r.mapping_id), Some(11));
    for gone in [
        "authorization",
        "lp-forward-url",
        "lp-service-name",
        "lp-authorization-override",
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
    // The audit knows who, where, with which certificate; the query is redacted.
    assert_eq!(f.audit.decision, "forwarded");
    assert_eq!(f.audit.caller, "user:1:alice");
    assert_eq!(f.audit.account, ACC);
    assert_eq!(f.audit.service, "IDP");
    assert_eq!(
        (
            f.audit.mapping_id.as_str(),
            f.audit.certificate_id.as_str(),
            f.audit.certificate_serial.as_str()
        ),
        ("11", "5", "0A")
    );
    assert_eq!(f.audit.target_host, "api.brand.example");
    assert_eq!(f.audit.target_path, "/oauth/token?<redacted>");
    assert_eq!(f.audit.client_ip, "127.0.0.2");
}

#[wasm_bindgen_test::wasm_bindgen_test(unsupported = test)]
fn callers_are_authenticated_and_authorized() {
    let idx = index();
    let base = [("lp-forward-url", URL), ("lp-service-name", "IDP")];
    let with = |auth: &str| {
        let mut hs = base.to_vec();
        hs.push(("authorization", auth));
        refusal(decide_with(
            "GET",
            "/mtls/account/52653865",
            &hs,
            Some(&idx),
        ))
    };
    assert_eq!(
        refusal(decide_with(
            "GET",
            "/mtls/account/52653865",
            &base,
            Some(&idx)
        )),
        (401, "unauthorized")
    );
    assert_eq!(with("Basic abc"), (401, "unauthorized"));
    assert_eq!(with("Bearer not.a.token"), (401, "invalid_token"));
    assert_eq!(
        with(&bearer(ACC, 1, &["MTLS_FORWARD"], NOW - 1)),
        (401, "token_expired")
    );
    assert_eq!(
        with(&bearer(ACC, 9, &["MTLS_FORWARD"], NOW + 100)),
        (401, "invalid_token"),
        "deleted user"
    );
    assert_eq!(
        with(&bearer("other", 2, &["MTLS_FORWARD"], NOW + 100)),
        (403, "forbidden_account")
    );
    assert_eq!(
        with(&bearer(ACC, 1, &["MTLS_CHECK_MAPPING"], NOW + 100)),
        (403, "forbidden")
    );
    // The AppKey holds only MTLS_CHECK_MAPPING; its signature is checked before privileges.
    assert_eq!(with("OAuth oauth_consumer_key=\"ck\", oauth_token=\"at\", oauth_signature_method=\"HMAC-SHA1\", oauth_timestamp=\"1800000000\", oauth_nonce=\"n\", oauth_signature=\"AAAA\"").0, 401);
    // 401s carry a challenge.
    let d = decide_with("GET", "/mtls/account/52653865", &base, Some(&idx));
    let Decision::Refuse(r, _) = d else { panic!() };
    assert!(r.headers.iter().any(|(k, _)| *k == "www-authenticate"));
}

#[wasm_bindgen_test::wasm_bindgen_test(unsupported = test)]
fn unmapped_triplets_are_refused_unless_the_host_is_allowed_in_plain_tls() {
    let idx = index();
    let auth = good();
    for (service, url) in [
        ("WEBHOOKS", URL),
        ("IDP", "https://api.brand.example/oauth/token?x=2"),
        ("IDP", "https://api.brand.example/oauth/token"),
    ] {
        let d = decide_with(
            "GET",
            "/mtls/account/52653865",
            &[
                ("authorization", &auth),
                ("lp-forward-url", url),
                ("lp-service-name", service),
            ],
            Some(&idx),
        );
        assert_eq!(refusal(d), (400, "no_mtls_mapping"), "{service} {url}");
    }
    let plain = "https://plain.example/any/path";
    let d = decide_with(
        "GET",
        "/mtls/account/52653865",
        &[
            ("authorization", &auth),
            ("lp-forward-url", plain),
            ("lp-service-name", "IDP"),
        ],
        Some(&idx),
    );
    let Decision::Forward(f) = d else {
        panic!("{d:?}")
    };
    assert!(f.route.is_none());
    assert_eq!(f.audit.decision, "forwarded_plain_tls");
    assert!(f
        .set
        .contains(&("x-mtlsgate-cluster", "tls_plain.example_443".to_owned())));
    // An allowed host whose address the gateway will not reach is refused as such.
    let d = decide_with(
        "GET",
        "/mtls/account/52653865",
        &[
            ("authorization", &auth),
            ("lp-forward-url", "https://inside.example/x"),
            ("lp-service-name", "IDP"),
        ],
        Some(&idx),
    );
    assert_eq!(refusal(d), (403, "target_not_allowed"));
    // ... but not when the caller asks to stop, nor on another port.
    let d = decide_with(
        "GET",
        "/mtls/account/52653865",
        &[
            ("authorization", &auth),
            ("lp-forward-url", plain),
            ("lp-service-name", "IDP"),
            ("lp-stop-if-certificate-not-found", "true"),
        ],
        Some(&idx),
    );
    assert_eq!(refusal(d), (400, "no_mtls_mapping"));
    let d = decide_with(
        "GET",
        "/mtls/account/52653865",
        &[
            ("authorization", &auth),
            ("lp-forward-url", "https://plain.example:8443/"),
            ("lp-service-name", "IDP"),
        ],
        Some(&idx),
    );
    assert_eq!(refusal(d), (400, "no_mtls_mapping"));
}

#[wasm_bindgen_test::wasm_bindgen_test(unsupported = test)]
fn bad_headers_get_their_own_codes() {
    let idx = index();
    let auth = good();
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
        let mut hs = headers.to_vec();
        hs.push(("authorization", &auth));
        let d = decide_with("GET", "/mtls/account/52653865", &hs, Some(&idx));
        assert_eq!(refusal(d), *want, "{headers:?}");
    }
}

#[wasm_bindgen_test::wasm_bindgen_test(unsupported = test)]
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

#[wasm_bindgen_test::wasm_bindgen_test(unsupported = test)]
fn no_snapshot_means_503_never_a_forward() {
    let auth = good();
    let d = decide_with(
        "GET",
        "/mtls/account/52653865",
        &[
            ("authorization", &auth),
            ("lp-forward-url", URL),
            ("lp-service-name", "IDP"),
        ],
        None,
    );
    assert_eq!(refusal(d), (503, "snapshot_unavailable"));
    let d = decide_with("POST", "/mtls/mapping", &[("authorization", &auth)], None);
    assert_eq!(refusal(d), (503, "snapshot_unavailable"));
}

#[wasm_bindgen_test::wasm_bindgen_test(unsupported = test)]
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

#[wasm_bindgen_test::wasm_bindgen_test(unsupported = test)]
fn check_mapping_strips_a_caller_set_cluster_header() {
    // The request goes on through Envoy until its body is in: a cluster header the caller
    // set must not travel with it (it once chose another account's cluster there).
    let idx = index();
    let ok = bearer(ACC, 1, &["MTLS_CHECK_MAPPING"], NOW + 100);
    let d = decide_with(
        "POST",
        "/mtls/mapping?v=2",
        &[
            ("authorization", &ok),
            ("x-mtlsgate-cluster", "mtls_9_victim.example_443"),
            ("x-mtlsgate-anything", "x"),
        ],
        Some(&idx),
    );
    let Decision::CheckMapping { remove, .. } = d else {
        panic!("{d:?}")
    };
    assert_eq!(remove, ["x-mtlsgate-cluster", "x-mtlsgate-anything"]);
}

#[wasm_bindgen_test::wasm_bindgen_test(unsupported = test)]
fn check_mapping_needs_post_and_the_privilege() {
    let idx = index();
    let ok = bearer(ACC, 1, &["MTLS_CHECK_MAPPING"], NOW + 100);
    let d = decide_with(
        "POST",
        "/mtls/mapping?v=2",
        &[("authorization", &ok)],
        Some(&idx),
    );
    let Decision::CheckMapping {
        account, version, ..
    } = d
    else {
        panic!("{d:?}")
    };
    assert_eq!(
        (account.as_str(), version),
        (ACC, check_mapping::Version::V2)
    );
    assert_eq!(
        refusal(decide_with(
            "GET",
            "/mtls/mapping",
            &[("authorization", &ok)],
            Some(&idx)
        )),
        (405, "method_not_allowed")
    );
    assert_eq!(
        refusal(decide_with(
            "POST",
            "/mtls/mapping?v=3",
            &[("authorization", &ok)],
            Some(&idx)
        )),
        (400, "invalid_version")
    );
    assert_eq!(
        refusal(decide_with(
            "POST",
            "/mtls/mapping",
            &[("authorization", &good())],
            Some(&idx)
        )),
        (403, "forbidden")
    );
    assert_eq!(
        refusal(decide_with("POST", "/mtls/mapping", &[], Some(&idx))),
        (401, "unauthorized")
    );
}

#[wasm_bindgen_test::wasm_bindgen_test(unsupported = test)]
fn connection_tokens_become_hop_by_hop() {
    let idx = index();
    let auth = good();
    let d = decide_with(
        "GET",
        "/mtls/account/52653865",
        &[
            ("authorization", &auth),
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

#[wasm_bindgen_test::wasm_bindgen_test(unsupported = test)]
fn check_mapping_answers_both_documented_shapes() {
    let idx = index();
    let triplets = check_mapping::parse(
        br#"[{"serviceName":"IDP","accountId":"52653865","url":"https://api.brand.example/oauth/token?x=1"},
             {"serviceName":"WEBHOOKS","accountId":"52653865","url":"https://api.brand.example/oauth/token?x=1"},
             {"serviceName":"NOPE","accountId":"52653865","url":"x"}]"#,
    )
    .unwrap();
    let v1: serde_json::Value = serde_json::from_slice(
        &check_mapping::answer(&idx, &triplets, check_mapping::Version::V1, ACC).unwrap(),
    )
    .unwrap();
    assert_eq!(v1["CertificateMappingParamters{serviceName='IDP', accountId='52653865', url='https://api.brand.example/oauth/token?x=1'}"], true);
    assert_eq!(v1["CertificateMappingParamters{serviceName='WEBHOOKS', accountId='52653865', url='https://api.brand.example/oauth/token?x=1'}"], false);
    assert_eq!(v1.as_object().unwrap().len(), 3);
    let v2: serde_json::Value = serde_json::from_slice(
        &check_mapping::answer(&idx, &triplets, check_mapping::Version::V2, ACC).unwrap(),
    )
    .unwrap();
    assert_eq!(v2[0]["doExist"], true);
    assert_eq!(v2[0]["serviceName"], "IDP");
    assert_eq!(v2[1]["doExist"], false);
    assert_eq!(v2[2]["doExist"], false);
    assert_eq!(
        check_mapping::answer(&idx, &triplets, check_mapping::Version::V1, "other")
            .unwrap_err()
            .status,
        403
    );
    assert_eq!(
        check_mapping::parse(b"{}").unwrap_err().code,
        "invalid_body"
    );
}

#[wasm_bindgen_test::wasm_bindgen_test(unsupported = test)]
fn a_remembered_token_still_expires_and_still_needs_a_live_user() {
    let idx = index();
    let hs = |auth: String| {
        vec![
            ("authorization".to_string(), auth),
            ("lp-forward-url".into(), URL.into()),
            ("lp-service-name".into(), "IDP".into()),
        ]
    };
    let run = |auth: &str, now: u64| {
        let headers = hs(auth.to_owned());
        let mut nonces = AllNew;
        let mut ctx = Context {
            index: Some(&idx),
            now,
            max_skew_secs: 300,
            keep_query: false,
            public_scheme: "http",
            nonces: &mut nonces,
        };
        decide(
            &Request {
                method: "GET",
                path: "/mtls/account/52653865",
                authority: "g",
                headers: &headers,
                client_ip: "1",
            },
            &mut ctx,
        )
    };
    let auth = bearer(ACC, 1, &["MTLS_FORWARD"], NOW + 100);
    assert!(matches!(run(&auth, NOW), Decision::Forward(_)));
    // Second use comes from the cache, and still forwards.
    assert!(matches!(run(&auth, NOW + 1), Decision::Forward(_)));
    // Past its expiry the cached token is refused.
    assert_eq!(refusal(run(&auth, NOW + 100)), (401, "token_expired"));
    // A token that failed verification is never remembered as good.
    let mut tampered = auth.clone();
    tampered.push('x');
    assert_eq!(refusal(run(&tampered, NOW)), (401, "invalid_token"));
    assert_eq!(refusal(run(&tampered, NOW)), (401, "invalid_token"));
}

#[wasm_bindgen_test::wasm_bindgen_test(unsupported = test)]
fn an_attached_credential_wins_over_the_callers_override_unless_the_account_allows_it() {
    let auth = good();
    let upstream_auth = |idx: &Index, with_override: bool| {
        let mut hs = vec![
            (":authority", "gateway:10000"),
            ("authorization", auth.as_str()),
            ("lp-forward-url", URL),
            ("lp-service-name", "IDP"),
        ];
        if with_override {
            hs.push(("lp-authorization-override", "Bearer caller"));
        }
        match decide_with("GET", "/mtls/account/52653865", &hs, Some(idx)) {
            Decision::Forward(f) => f
                .set
                .iter()
                .find(|(k, _)| *k == "authorization")
                .map(|(_, v)| v.clone()),
            d => panic!("{d:?}"),
        }
    };
    let strict = index_with(Some("Basic Y3JlZA=="), false);
    assert_eq!(
        upstream_auth(&strict, true).as_deref(),
        Some("Basic Y3JlZA==")
    );
    assert_eq!(
        upstream_auth(&strict, false).as_deref(),
        Some("Basic Y3JlZA==")
    );
    let lenient = index_with(Some("Basic Y3JlZA=="), true);
    assert_eq!(
        upstream_auth(&lenient, true).as_deref(),
        Some("Bearer caller")
    );
    assert_eq!(
        upstream_auth(&lenient, false).as_deref(),
        Some("Basic Y3JlZA==")
    );
    let none = index();
    assert_eq!(upstream_auth(&none, true).as_deref(), Some("Bearer caller"));
    assert_eq!(upstream_auth(&none, false), None);
}

#[wasm_bindgen_test::wasm_bindgen_test(unsupported = test)]
fn a_mapping_that_cannot_be_served_is_refused_with_its_own_code_not_sent_bare() {
    for (why, status, code) in [
        (Unavailable::Credential, 503, "credential_unavailable"),
        (Unavailable::Certificate, 503, "certificate_unavailable"),
        (Unavailable::TargetNotAllowed, 403, "target_not_allowed"),
        (Unavailable::TargetUnresolved, 502, "target_unresolved"),
        (Unavailable::MaterialRejected, 503, "material_rejected"),
    ] {
        let idx = index_of(None, false, Some(why));
        let auth = good();
        let d = decide_with(
            "GET",
            "/mtls/account/52653865",
            &[
                (":authority", "gateway:10000"),
                ("authorization", &auth),
                ("lp-forward-url", URL),
                ("lp-service-name", "IDP"),
            ],
            Some(&idx),
        );
        match d {
            Decision::Refuse(r, audit) => {
                assert_eq!((r.status, r.code), (status, code));
                assert_eq!(audit.mapping_id, "11");
                assert_eq!(audit.decision, "refused");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}

/// An AppKey-signed `Authorization` for a POST to `/mtls/mapping`, signed as the client
/// reached the gateway with `scheme`.
fn appkey_header(scheme: &str) -> String {
    let unsigned = format!(
        "OAuth oauth_consumer_key=\"ck\", oauth_token=\"at\", oauth_signature_method=\"HMAC-SHA1\", \
         oauth_timestamp=\"{NOW}\", oauth_nonce=\"n-{scheme}\", oauth_version=\"1.0\""
    );
    let auth =
        crate::oauth1::Authorization::parse(&format!("{unsigned}, oauth_signature=\"x\"")).unwrap();
    let req = crate::oauth1::Request {
        method: "POST",
        scheme,
        authority: "gateway:10000",
        path: "/mtls/mapping",
        form_body: None,
    };
    let base = crate::oauth1::base_string(&req, &auth).unwrap();
    let sig = crate::oauth1::signature(&base, &crate::oauth1::Secrets::new("cs", "ts"))
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    format!("{unsigned}, oauth_signature=\"{sig}\"")
}

#[wasm_bindgen_test::wasm_bindgen_test(unsupported = test)]
fn oauth1_signatures_cover_the_scheme_clients_use() {
    let idx = index();
    let run = |signed_as: &str, public_scheme: &'static str| {
        let auth = appkey_header(signed_as);
        let headers = h(&[(":authority", "gateway:10000"), ("authorization", &auth)]);
        let mut nonces = AllNew;
        let mut ctx = Context {
            index: Some(&idx),
            now: NOW,
            max_skew_secs: 300,
            keep_query: false,
            public_scheme,
            nonces: &mut nonces,
        };
        decide(
            &Request {
                method: "POST",
                path: "/mtls/mapping",
                authority: "gateway:10000",
                headers: &headers,
                client_ip: "1",
            },
            &mut ctx,
        )
    };
    // Behind a TLS-terminating load balancer clients sign https://…: accepted once the
    // gateway is told so, refused (bad signature) while it assumes http, and the reverse.
    assert!(
        matches!(run("https", "https"), Decision::CheckMapping { .. }),
        "{:?}",
        run("https", "https")
    );
    assert!(matches!(run("http", "http"), Decision::CheckMapping { .. }));
    for (signed_as, public) in [("https", "http"), ("http", "https")] {
        match run(signed_as, public) {
            Decision::Refuse(r, _) => assert_eq!((r.status, r.code), (401, "invalid_signature")),
            d => panic!("{signed_as} signature accepted as {public}: {d:?}"),
        }
    }
}

// ---- on_request_headers: the branches before `decide`, with fake host state ----

/// A throttle that answers as told and remembers what it was asked.
struct FakeThrottle {
    answer: Result<(), Throttled>,
    asked: Vec<(String, Limits, u64)>,
}

impl FakeThrottle {
    fn allowing() -> Self {
        FakeThrottle {
            answer: Ok(()),
            asked: Vec::new(),
        }
    }

    fn refusing(retry_after_secs: u32) -> Self {
        FakeThrottle {
            answer: Err(Throttled { retry_after_secs }),
            asked: Vec::new(),
        }
    }
}

impl Throttle for FakeThrottle {
    fn take(&mut self, ip: &str, limits: &Limits, now_ms: u64) -> Result<(), Throttled> {
        self.asked.push((ip.to_owned(), *limits, now_ms));
        self.answer
    }
}

/// A snapshot source that counts how often it was looked at.
struct FakeSnapshots {
    index: Option<Index>,
    looked: usize,
}

impl SnapshotSource for FakeSnapshots {
    fn current(&mut self) -> Option<&Index> {
        self.looked += 1;
        self.index.as_ref()
    }
}

/// A nonce guard that has seen every nonce.
struct AllSeen;
impl NonceGuard for AllSeen {
    fn first_use(&mut self, _: &Verified, _: u64) -> bool {
        false
    }
}

fn settings(json: &str) -> Settings {
    Settings::try_from(serde_json::from_str::<FilterConfig>(json).unwrap()).unwrap()
}

const PEER: &str = "192.0.2.7:51000";

/// One request's headers through `on_request_headers`.
struct Run {
    settings: Settings,
    throttle: FakeThrottle,
    snapshots: FakeSnapshots,
    now_ms: u64,
    peer: &'static str,
}

impl Run {
    fn new(settings_json: &str) -> Self {
        Run {
            settings: settings(settings_json),
            throttle: FakeThrottle::allowing(),
            snapshots: FakeSnapshots {
                index: Some(index()),
                looked: 0,
            },
            now_ms: NOW * 1000,
            peer: PEER,
        }
    }

    fn headers(&mut self, method: &str, path: &str, headers: &[(&str, &str)]) -> Decision {
        self.with_nonces(method, path, headers, &mut AllNew)
    }

    fn with_nonces(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        nonces: &mut dyn NonceGuard,
    ) -> Decision {
        let headers = h(headers);
        on_request_headers(
            &Incoming {
                method,
                path,
                authority: "gateway:10000",
                headers: &headers,
                peer: self.peer,
            },
            &mut Env {
                settings: &self.settings,
                now_ms: self.now_ms,
                throttle: &mut self.throttle,
                snapshots: &mut self.snapshots,
                nonces,
            },
        )
    }

    /// A mapped forward with a good Bearer token, plus `extra` headers.
    fn forward(&mut self, extra: &[(&str, &str)]) -> Decision {
        let auth = good();
        let mut hs = vec![
            (":authority", "gateway:10000"),
            ("authorization", auth.as_str()),
            ("lp-forward-url", URL),
            ("lp-service-name", "IDP"),
        ];
        hs.extend_from_slice(extra);
        self.headers("GET", "/mtls/account/52653865", &hs)
    }
}

#[wasm_bindgen_test::wasm_bindgen_test(unsupported = test)]
fn a_misconfigured_filter_refuses_everything_unaudited_and_consults_nothing() {
    for path in [
        "/mtls/account/52653865",
        "/mtls/mapping",
        "/mtls/account/52653865/certificates",
        "/anything",
    ] {
        let mut run = Run::new("{}");
        run.settings = Settings::invalid();
        match run.forward(&[]) {
            Decision::RefuseUnaudited(r) => {
                assert_eq!(
                    r,
                    Refusal::new(
                        503,
                        "filter_misconfigured",
                        "the gateway's filter configuration is invalid"
                    )
                );
                assert_eq!(
                    String::from_utf8(r.body("rid")).unwrap(),
                    r#"{"code":"filter_misconfigured","message":"the gateway's filter configuration is invalid","requestId":"rid"}"#
                );
            }
            d => panic!("{path}: {d:?}"),
        }
        let d = run.headers("GET", path, &[]);
        assert!(matches!(d, Decision::RefuseUnaudited(_)), "{path}: {d:?}");
        assert!(run.throttle.asked.is_empty(), "{path}: throttled");
        assert_eq!(run.snapshots.looked, 0, "{path}: snapshot looked at");
    }
}

#[wasm_bindgen_test::wasm_bindgen_test(unsupported = test)]
fn a_throttled_ip_gets_429_with_retry_after_and_its_audit_record() {
    let mut run = Run::new("{}");
    run.throttle = FakeThrottle::refusing(7);
    let Decision::Refuse(r, audit) = run.forward(&[]) else {
        panic!("expected a refusal")
    };
    assert_eq!(
        r,
        Refusal::new(429, "throttled", "too many requests from this address")
            .with_header("retry-after", "7")
    );
    assert_eq!(
        *audit,
        Audit {
            decision: "throttled",
            code: "throttled",
            client_ip: "192.0.2.7".into(),
            ..Audit::default()
        }
    );
    assert_eq!(
        audit.to_json(),
        r#"{"decision":"throttled","code":"throttled","clientIp":"192.0.2.7"}"#
    );
    // Refused before the snapshot is looked at: a throttled flood costs no snapshot read.
    assert_eq!(run.snapshots.looked, 0);
}

#[wasm_bindgen_test::wasm_bindgen_test(unsupported = test)]
fn retry_after_is_at_least_one_second() {
    for (secs, header) in [(0, "1"), (1, "1"), (2, "2"), (u32::MAX, "4294967295")] {
        let mut run = Run::new("{}");
        run.throttle = FakeThrottle::refusing(secs);
        match run.headers("GET", "/anything", &[]) {
            Decision::Refuse(r, _) => {
                assert_eq!(r.headers, vec![("retry-after", header.to_owned())]);
            }
            d => panic!("{d:?}"),
        }
    }
}

#[wasm_bindgen_test::wasm_bindgen_test(unsupported = test)]
fn every_request_is_throttled_by_its_client_ip_under_the_configured_limits() {
    let mut run = Run::new(r#"{"throttle":{"ratePerSecond":5,"burst":9},"xffTrustedHops":1}"#);
    run.now_ms = NOW * 1000 + 123;
    let d = run.forward(&[("x-forwarded-for", "6.6.6.6, 203.0.113.5")]);
    let Decision::Forward(f) = d else {
        panic!("{d:?}")
    };
    assert_eq!(f.audit.client_ip, "203.0.113.5");
    // Paths the filter does not serve are throttled too.
    let d = run.headers("GET", "/mtls/account/52653865/certificates", &[]);
    assert!(matches!(d, Decision::PassThrough { .. }), "{d:?}");
    let limits = Limits::new(5, 9).unwrap();
    assert_eq!(
        run.throttle.asked,
        vec![
            ("203.0.113.5".to_owned(), limits, NOW * 1000 + 123),
            ("192.0.2.7".to_owned(), limits, NOW * 1000 + 123),
        ]
    );
}

#[wasm_bindgen_test::wasm_bindgen_test(unsupported = test)]
fn the_client_ip_follows_the_trusted_hops() {
    let xff = [("x-forwarded-for", "6.6.6.6, 203.0.113.5")];
    for (json, peer, ip) in [
        ("{}", PEER, "192.0.2.7"),
        (
            r#"{"xffTrustedHops":0}"#,
            "[2001:db8::7]:51000",
            "2001:db8::7",
        ),
        (r#"{"xffTrustedHops":1}"#, PEER, "203.0.113.5"),
        (r#"{"xffTrustedHops":2}"#, PEER, "6.6.6.6"),
        (r#"{"xffTrustedHops":3}"#, PEER, "192.0.2.7"),
    ] {
        let mut run = Run::new(json);
        run.peer = peer;
        run.throttle = FakeThrottle::refusing(1);
        match run.forward(&xff) {
            Decision::Refuse(_, audit) => assert_eq!(audit.client_ip, ip, "{json}"),
            d => panic!("{d:?}"),
        }
        assert_eq!(run.throttle.asked[0].0, ip, "{json}");
    }
}

#[wasm_bindgen_test::wasm_bindgen_test(unsupported = test)]
fn an_allowed_request_is_decided_against_the_current_snapshot() {
    let mut run = Run::new("{}");
    let Decision::Forward(f) = run.forward(&[]) else {
        panic!("expected a forward")
    };
    assert_eq!(f.audit.decision, "forwarded");
    assert_eq!(f.audit.client_ip, "192.0.2.7");
    assert_eq!(f.audit.target_path, "/oauth/token?<redacted>");
    assert_eq!(run.snapshots.looked, 1);
    // No snapshot yet: the decision says so.
    run.snapshots.index = None;
    assert_eq!(refusal(run.forward(&[])), (503, "snapshot_unavailable"));
    // Not a path the filter serves: passed through (its own headers removed) all the same.
    let d = run.headers("GET", "/healthz", &[("x-mtlsgate-cluster", "x")]);
    assert_eq!(
        d,
        Decision::PassThrough {
            remove: vec!["x-mtlsgate-cluster".into()]
        }
    );
}

#[wasm_bindgen_test::wasm_bindgen_test(unsupported = test)]
fn the_clock_is_read_in_milliseconds_and_decided_in_seconds() {
    let auth = bearer(ACC, 1, &[crate::privilege::FORWARD], NOW + 1);
    let hs = [
        ("authorization", auth.as_str()),
        ("lp-forward-url", URL),
        ("lp-service-name", "IDP"),
    ];
    let mut run = Run::new("{}");
    // The last millisecond of second NOW: the token (exp NOW + 1) still holds.
    run.now_ms = (NOW + 1) * 1000 - 1;
    let d = run.headers("GET", "/mtls/account/52653865", &hs);
    assert!(matches!(d, Decision::Forward(_)), "{d:?}");
    run.now_ms = (NOW + 1) * 1000;
    let d = run.headers("GET", "/mtls/account/52653865", &hs);
    assert_eq!(refusal(d), (401, "token_expired"));
}

#[wasm_bindgen_test::wasm_bindgen_test(unsupported = test)]
fn the_settings_reach_the_decision() {
    // logQuery: the target's query is logged as it is.
    let mut run = Run::new(r#"{"logQuery":true}"#);
    let Decision::Forward(f) = run.forward(&[]) else {
        panic!("expected a forward")
    };
    assert_eq!(f.audit.target_path, "/oauth/token?x=1");

    // publicScheme: OAuth1 signatures are checked against it.
    let signed_https = appkey_header("https");
    let check = |run: &mut Run| {
        run.headers(
            "POST",
            "/mtls/mapping",
            &[
                (":authority", "gateway:10000"),
                ("authorization", &signed_https),
            ],
        )
    };
    let d = check(&mut Run::new(r#"{"publicScheme":"https"}"#));
    assert!(matches!(d, Decision::CheckMapping { .. }), "{d:?}");
    assert_eq!(
        refusal(check(&mut Run::new("{}"))),
        (401, "invalid_signature")
    );

    // maxSkewSeconds: the signature's timestamp (NOW) must be that close to the clock.
    let mut narrow = Run::new(r#"{"publicScheme":"https","maxSkewSeconds":1}"#);
    narrow.now_ms = (NOW + 2) * 1000;
    assert_eq!(
        refusal(check(&mut narrow)),
        (401, "timestamp_out_of_window")
    );
    let mut wide = Run::new(r#"{"publicScheme":"https","maxSkewSeconds":2}"#);
    wide.now_ms = (NOW + 2) * 1000;
    let d = check(&mut wide);
    assert!(matches!(d, Decision::CheckMapping { .. }), "{d:?}");

    // The nonce guard the glue lends is the one asked.
    let mut run = Run::new(r#"{"publicScheme":"https"}"#);
    let d = run.with_nonces(
        "POST",
        "/mtls/mapping",
        &[
            (":authority", "gateway:10000"),
            ("authorization", &signed_https),
        ],
        &mut AllSeen,
    );
    assert_eq!(refusal(d), (401, "replayed_nonce"));
}
