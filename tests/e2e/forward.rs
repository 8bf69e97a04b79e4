//! The whole path: upload a P12, map it, forward over mTLS through real Envoy.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{error_code, Stack};
use crate::upstream::Target;

const ACCOUNT: &str = "52653865";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn happy_flow_get_and_post_reach_the_upstream_with_the_mapped_certificate() {
    let stack = Stack::start().await;
    let target = Target::start().await;
    let client = target.client_ca.client("brand-client-1");
    let cert = stack
        .upload_ok(
            ACCOUNT,
            "brand-cert",
            client.p12(&target.client_ca, "s3cret"),
            "s3cret",
        )
        .await;
    let url = target.upstream.url("/oauth/token?grant=1");
    stack
        .map_ok(
            ACCOUNT,
            cert,
            "1",
            &url,
            "idp-token",
            &target.server_ca.cert_pem,
        )
        .await;

    let r = stack.forward_when_mapped(ACCOUNT, &url, "IDP").await;
    let seen: Value = r.json().await.expect("json");
    assert_eq!(seen["method"], "GET");
    assert_eq!(seen["path"], "/oauth/token?grant=1");
    assert_eq!(
        seen["clientCertSha256"],
        client.fingerprint(),
        "upstream saw another certificate"
    );
    assert_eq!(
        seen["headers"]["host"][0],
        format!("localhost:{}", target.upstream.addr.port())
    );

    // POST with a body, service named by id: the body arrives as sent.
    let body = r#"{"grant_type":"client_credentials","x":[1,2,3]}"#;
    let r = stack
        .forward(
            ACCOUNT,
            "POST",
            &url,
            "1",
            &[("content-type", "application/json")],
            Some(body),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["x-upstream"],
        "yes",
        "the answer comes back as the target sent it"
    );
    let seen: Value = r.json().await.expect("json");
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["body"], body);
    assert_eq!(seen["headers"]["content-type"][0], "application/json");
    assert_eq!(seen["clientCertSha256"], client.fingerprint());

    for method in ["PUT", "DELETE"] {
        let r = stack
            .forward(ACCOUNT, method, &url, "IDP", &[], Some("x"))
            .await;
        assert_eq!(r.status(), 200, "{method}");
        let seen: Value = r.json().await.expect("json");
        assert_eq!(seen["method"], method);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_exact_triplet_is_forwarded() {
    let stack = Stack::start().await;
    let target = Target::start().await;
    let client = target.client_ca.client("c");
    let cert = stack
        .upload_ok(ACCOUNT, "c", client.p12(&target.client_ca, "pw"), "pw")
        .await;
    let url = target.upstream.url("/hook?a=1");
    stack
        .map_ok(ACCOUNT, cert, "2", &url, "hook", &target.server_ca.cert_pem)
        .await;
    stack.forward_when_mapped(ACCOUNT, &url, "WEBHOOKS").await;

    let other_query = target.upstream.url("/hook?a=2");
    let no_query = target.upstream.url("/hook");
    for (account, url, service) in [
        (ACCOUNT, url.as_str(), "IDP"),
        (ACCOUNT, url.as_str(), "TEST_SERVICE"),
        (ACCOUNT, other_query.as_str(), "WEBHOOKS"),
        (ACCOUNT, no_query.as_str(), "WEBHOOKS"),
        ("99999", url.as_str(), "WEBHOOKS"),
    ] {
        let r = stack.forward(account, "GET", url, service, &[], None).await;
        assert_eq!(
            error_code(r).await,
            (400, "no_mtls_mapping".into()),
            "{account} {service} {url}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_mapping_is_served_as_soon_as_it_is_created() {
    let stack = Stack::start().await;
    let target = Target::start().await;
    let client = target.client_ca.client("late");
    let cert = stack
        .upload_ok(ACCOUNT, "late", client.p12(&target.client_ca, "pw"), "pw")
        .await;
    let url = target.upstream.url("/late");

    let r = stack.forward(ACCOUNT, "GET", &url, "IDP", &[], None).await;
    assert_eq!(error_code(r).await, (400, "no_mtls_mapping".into()));

    stack
        .map_ok(ACCOUNT, cert, "1", &url, "late", &target.server_ca.cert_pem)
        .await;
    let r = stack.forward_when_mapped(ACCOUNT, &url, "IDP").await;
    let seen: Value = r.json().await.expect("json");
    assert_eq!(seen["clientCertSha256"], client.fingerprint());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_certificate_switches_new_requests_without_a_failure() {
    let mut stack = Stack::start().await;
    let target = Target::start().await;
    let old = target.client_ca.client("old");
    let new = target.client_ca.client("new");
    let cert = stack
        .upload_ok(ACCOUNT, "rotating", old.p12(&target.client_ca, "pw"), "pw")
        .await;
    let url = target.upstream.url("/rotate");
    stack
        .map_ok(
            ACCOUNT,
            cert,
            "1",
            &url,
            "rotating",
            &target.server_ca.cert_pem,
        )
        .await;
    let r = stack.forward_when_mapped(ACCOUNT, &url, "IDP").await;
    assert_eq!(
        r.json::<Value>().await.expect("json")["clientCertSha256"],
        old.fingerprint()
    );

    let r = stack
        .rotate(
            ACCOUNT,
            cert,
            "rotating",
            new.p12(&target.client_ca, "pw2"),
            "pw2",
        )
        .await;
    assert_eq!(
        r.status(),
        200,
        "rotate: {}",
        r.text().await.unwrap_or_default()
    );

    // Keep forwarding: every request must succeed, and soon they present the new certificate.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut sent = 0;
    loop {
        let r = stack.forward(ACCOUNT, "GET", &url, "IDP", &[], None).await;
        assert_eq!(r.status(), 200, "request {sent} after the rotation failed");
        sent += 1;
        let seen: Value = r.json().await.expect("json");
        if seen["clientCertSha256"] == new.fingerprint() {
            break;
        }
        assert_eq!(seen["clientCertSha256"], old.fingerprint());
        assert!(
            Instant::now() < deadline,
            "the new certificate was never presented"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // From then on, only the new one.
    for _ in 0..20 {
        let r = stack.forward(ACCOUNT, "GET", &url, "IDP", &[], None).await;
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.json::<Value>().await.expect("json")["clientCertSha256"],
            new.fingerprint()
        );
    }
    assert!(stack.all_alive());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_headers_never_reach_the_upstream() {
    let stack = Stack::start().await;
    let target = Target::start().await;
    let client = target.client_ca.client("h");
    let cert = stack
        .upload_ok(ACCOUNT, "h", client.p12(&target.client_ca, "pw"), "pw")
        .await;
    let url = target.upstream.url("/headers");
    stack
        .map_ok(ACCOUNT, cert, "1", &url, "h", &target.server_ca.cert_pem)
        .await;
    stack.forward_when_mapped(ACCOUNT, &url, "IDP").await;

    let caller_token = format!("Bearer {}", stack.token_for(ACCOUNT).await);
    let r = stack
        .forward(
            ACCOUNT,
            "GET",
            &url,
            "IDP",
            &[
                ("authorization", &caller_token),
                ("lp-authorization-override", "Basic dXBzdHJlYW06cHc="),
                ("lp-stop-if-certificate-not-found", "true"),
                ("lp-something-else", "x"),
                ("x-mtlsgate-cluster", "mtlsgate_control"),
                ("x-forwarded-for", "10.1.2.3"),
                ("x-custom", "kept"),
                ("x-request-id", "req-123"),
            ],
            None,
        )
        .await;
    assert_eq!(r.status(), 200);
    let seen: Value = r.json().await.expect("json");
    let headers = seen["headers"].as_object().expect("headers");
    assert_eq!(
        headers["authorization"],
        serde_json::json!(["Basic dXBzdHJlYW06cHc="]),
        "override becomes Authorization"
    );
    for name in headers.keys() {
        assert!(!name.starts_with("lp-"), "{name} reached the upstream");
        assert!(
            !name.starts_with("x-mtlsgate"),
            "{name} reached the upstream"
        );
        assert!(!name.starts_with("x-envoy"), "{name} reached the upstream");
        assert!(
            !name.starts_with("x-forwarded"),
            "{name} reached the upstream"
        );
    }
    assert!(!seen.to_string().contains(&caller_token[7..]));
    assert_eq!(headers["x-custom"], serde_json::json!(["kept"]));
    assert_eq!(headers["x-request-id"], serde_json::json!(["req-123"]));

    // Without an override, no Authorization at all.
    let r = stack.forward(ACCOUNT, "GET", &url, "IDP", &[], None).await;
    let seen: Value = r.json().await.expect("json");
    assert!(seen["headers"].get("authorization").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_forward_requests_get_json_errors() {
    let stack = Stack::start().await;
    for (url, service, want) in [
        ("http://example.com/", "IDP", "invalid_forward_url"),
        ("https://user:pw@example.com/", "IDP", "invalid_forward_url"),
        ("https://example.com/#frag", "IDP", "invalid_forward_url"),
        ("https://example.com/", "NOPE", "invalid_service_name"),
    ] {
        let r = stack.forward(ACCOUNT, "GET", url, service, &[], None).await;
        assert_eq!(error_code(r).await, (400, want.into()), "{url} {service}");
    }
    let r = stack
        .client
        .get(format!("{}/mtls/account/{ACCOUNT}", stack.gateway))
        .bearer_auth(stack.token_for(ACCOUNT).await)
        .header("LP-service-name", "IDP")
        .send()
        .await
        .expect("send");
    assert_eq!(error_code(r).await, (400, "missing_forward_url".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_target_server_certificate_is_verified() {
    let stack = Stack::start().await;
    let target = Target::start().await;
    let client = target.client_ca.client("v");
    let cert = stack
        .upload_ok(ACCOUNT, "v", client.p12(&target.client_ca, "pw"), "pw")
        .await;

    // Trusting another CA than the one that signed the server's certificate: refused.
    let stranger = crate::pki::Ca::new("stranger");
    let url = target.upstream.url("/wrong-ca");
    stack
        .map_ok(ACCOUNT, cert, "1", &url, "wrong-ca", &stranger.cert_pem)
        .await;
    // Naming the server by IP while its certificate only names `localhost`: refused.
    let by_ip = format!("https://127.0.0.1:{}/by-ip", target.upstream.addr.port());
    stack
        .map_ok(
            ACCOUNT,
            cert,
            "1",
            &by_ip,
            "by-ip",
            &target.server_ca.cert_pem,
        )
        .await;
    // Without caCertificates the system trust store is used, which knows nothing of the
    // test CA: refused too.
    let system = target.upstream.url("/system-roots");
    let r = stack
        .map(
            ACCOUNT,
            serde_json::json!([{"certificationId": cert.to_string(), "serviceId": "1", "url": system,
                                "siteId": ACCOUNT, "name": "system", "enable": true, "deleted": false}]),
        )
        .await;
    assert_eq!(r.status(), 201);

    for url in [&url, &by_ip, &system] {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = stack.forward(ACCOUNT, "GET", url, "IDP", &[], None).await;
            let (status, code) = error_code(r).await;
            if code == "no_mtls_mapping" {
                assert!(Instant::now() < deadline, "mapping never arrived");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            assert_eq!(
                (status, code.as_str()),
                (503, "upstream_unavailable"),
                "{url}"
            );
            break;
        }
    }
}
