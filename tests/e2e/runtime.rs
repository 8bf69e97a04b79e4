//! The runtime in the filter, through real Envoy: AppKey signatures made by an outside OAuth1
//! library, replays, skewed clocks, cross-account and revoked credentials, per-IP throttling
//! from two loopback addresses, check mapping v1/v2, plain-TLS fallback, the audit log, and
//! failing closed.

use std::net::IpAddr;
use std::num::NonZeroU64;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use oauth1_request as oauth;
use serde_json::{json, Value};

use crate::harness::{error_code, Options, Stack, TOKEN};
use crate::management::oauth_header;
use crate::upstream::{Target, Upstream};

const A: &str = "5005";
const B: &str = "6006";

async fn create_appkey(stack: &Stack, account: &str) -> Value {
    let r = stack
        .client
        .post(format!("{}/api/account/{account}/appkeys", stack.api))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("appkey");
    assert_eq!(r.status(), 201);
    r.json().await.expect("json")
}

fn forward_url(stack: &Stack, account: &str) -> String {
    format!("{}/mtls/account/{account}", stack.gateway)
}

/// A forward signed by `key` (fresh nonce and timestamp each time).
async fn signed_forward(stack: &Stack, account: &str, url: &str, key: &Value) -> reqwest::Response {
    let target = forward_url(stack, account);
    stack
        .client
        .get(&target)
        .header("authorization", oauth_header("GET", &target, &[], key))
        .header("LP-forward-url", url)
        .header("LP-service-name", "IDP")
        .send()
        .await
        .expect("forward")
}

/// Maps a fresh upstream for account `A` and answers (target, url, client fingerprint).
async fn mapped(stack: &Stack, path: &str) -> (Target, String, String) {
    let target = Target::start().await;
    let client = target.client_ca.client("runtime");
    let cert = stack
        .upload_ok(
            A,
            &format!("c{path}"),
            client.p12(&target.client_ca, "pw"),
            "pw",
        )
        .await;
    let url = target.upstream.url(path);
    stack
        .map_ok(
            A,
            cert,
            "1",
            &url,
            &format!("m{path}"),
            &target.server_ca.cert_pem,
        )
        .await;
    (target, url, client.fingerprint())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appkey_signatures_replays_skew_cross_account_and_revocation() {
    let stack = Stack::start().await;
    let (_target, url, fingerprint) = mapped(&stack, "/signed").await;
    let key = create_appkey(&stack, A).await;

    // Wait for the mapping and the AppKey to reach the gateway (well under a second).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = signed_forward(&stack, A, &url, &key).await;
        if r.status() == 200 {
            let seen: Value = r.json().await.expect("json");
            assert_eq!(seen["clientCertSha256"], fingerprint);
            assert!(
                seen["headers"].get("authorization").is_none(),
                "the caller's signature went upstream"
            );
            break;
        }
        let (_, code) = error_code(r).await;
        assert!(
            ["no_mtls_mapping", "unknown_appkey"].contains(&code.as_str()),
            "{code}"
        );
        assert!(Instant::now() < deadline, "never forwarded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The same signed request twice: the second is a replay (on whichever worker).
    let target = forward_url(&stack, A);
    let header = oauth_header("GET", &target, &[], &key);
    let send = |h: String| {
        let client = stack.client.clone();
        let (target, url) = (target.clone(), url.clone());
        async move {
            client
                .get(target)
                .header("authorization", h)
                .header("LP-forward-url", url)
                .header("LP-service-name", "IDP")
                .send()
                .await
                .expect("send")
        }
    };
    assert_eq!(send(header.clone()).await.status(), 200);
    assert_eq!(
        error_code(send(header).await).await,
        (401, "replayed_nonce".into())
    );

    // A clock an hour off.
    let token = oauth::Token::from_parts(
        key["consumerKey"].as_str().expect("ck"),
        key["consumerSecret"].as_str().expect("cs"),
        key["accessToken"].as_str().expect("at"),
        key["accessTokenSecret"].as_str().expect("ats"),
    );
    let hour_ago = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("time")
        .as_secs()
        - 3600;
    let skewed = oauth::Builder::with_token(token, oauth::HMAC_SHA1)
        .timestamp(NonZeroU64::new(hour_ago))
        .authorize("GET", &target, &());
    let r = send(skewed).await;
    let (status, code) = error_code(r).await;
    assert_eq!(status, 401);
    assert_eq!(code, "timestamp_out_of_window");

    // A tampered signature, and another account's key.
    let tampered = oauth_header("GET", &target, &[], &key)
        .replace("oauth_signature=\"", "oauth_signature=\"AA");
    assert_eq!(error_code(send(tampered).await).await.0, 401);
    let other = create_appkey(&stack, B).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = signed_forward(&stack, A, &url, &other).await;
    assert_eq!(error_code(r).await, (403, "forbidden_account".into()));
    // A Bearer token of account B on account A.
    let b_token = stack.token_for(B).await;
    let r = stack
        .forward(
            A,
            "GET",
            &url,
            "IDP",
            &[("authorization", &format!("Bearer {b_token}"))],
            None,
        )
        .await;
    assert_eq!(error_code(r).await, (403, "forbidden_account".into()));

    // Revocation reaches the gateway within a second.
    let id = key["id"].as_i64().expect("id");
    let r = stack
        .client
        .delete(format!("{}/api/account/{A}/appkeys/{id}", stack.api))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("revoke");
    assert_eq!(r.status(), 200);
    let revoked_at = Instant::now();
    loop {
        let r = signed_forward(&stack, A, &url, &key).await;
        if r.status() == 401 {
            assert_eq!(error_code(r).await.1, "unknown_appkey");
            break;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(5),
            "a revoked AppKey still forwards"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<IpAddr>().expect("ip"))
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_per_client_ip() {
    let stack = Stack::start_with(Options {
        throttle: (5, 5),
        ..Options::default()
    })
    .await;
    let noisy = client_from("127.0.0.2");
    let quiet = client_from("127.0.0.3");
    let probe = format!("{}/nothing-here", stack.gateway);
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for i in 0..20 {
        // A caller cannot pick its bucket (nor its logged address) with X-Forwarded-For:
        // Envoy uses the peer's address, the shipped bootstrap trusting no proxy.
        let r = noisy
            .get(&probe)
            .header("x-forwarded-for", format!("203.0.113.{i}"))
            .send()
            .await
            .expect("send");
        let status = r.status().as_u16();
        if status == 429 {
            retry_after = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().expect("text").to_owned());
            let v: Value = r.json().await.expect("json");
            assert_eq!(v["code"], "throttled");
        }
        statuses.push(status);
    }
    // A burst of 5 passes (the catch-all answers 404), then the address is throttled.
    assert_eq!(&statuses[..5], &[404; 5], "{statuses:?}");
    assert!(
        statuses.iter().filter(|s| **s == 429).count() >= 10,
        "{statuses:?}"
    );

    assert!(retry_after.is_some_and(|v| v.parse::<u32>().is_ok_and(|s| s >= 1)));
    // Another address is not.
    let r = quiet.get(&probe).send().await.expect("send");
    assert_eq!(r.status(), 404, "another client IP shares no bucket");
    // And the noisy one recovers after a second.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(noisy.get(&probe).send().await.expect("send").status(), 404);
    let lines = stack
        .audit_lines_when(|l| l.iter().any(|x| x["decision"] == "throttled"))
        .await;
    assert!(
        lines
            .iter()
            .any(|l| l["decision"] == "throttled" && l["clientIp"] == "127.0.0.2"),
        "throttled requests are audited with their IP"
    );
    assert!(
        lines.iter().all(|l| !l["clientIp"]
            .as_str()
            .unwrap_or_default()
            .starts_with("203.0.113.")),
        "a caller's X-Forwarded-For was taken as its address"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_mapping_answers_v1_and_v2_and_big_batches() {
    let stack = Stack::start().await;
    let (_target, url, _) = mapped(&stack, "/check").await;
    let bearer = stack.token_for(A).await;
    let post = |v: &str, body: Value| {
        let client = stack.client.clone();
        let url = format!("{}/mtls/mapping?v={v}", stack.gateway);
        let bearer = bearer.clone();
        async move {
            client
                .post(url)
                .bearer_auth(bearer)
                .json(&body)
                .send()
                .await
                .expect("check")
        }
    };
    let body = json!([
        {"serviceName": "IDP", "accountId": A, "url": url},
        {"serviceName": "WEBHOOKS", "accountId": A, "url": url},
    ]);
    // Wait for the mapping to arrive.
    let deadline = Instant::now() + Duration::from_secs(10);
    let v1: Value = loop {
        let v: Value = post("1", body.clone()).await.json().await.expect("json");
        if v.as_object().is_some_and(|o| o.values().any(|b| b == true)) {
            break v;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        v1[format!(
            "CertificateMappingParamters{{serviceName='IDP', accountId='{A}', url='{url}'}}"
        )],
        true
    );
    assert_eq!(
        v1[format!(
            "CertificateMappingParamters{{serviceName='WEBHOOKS', accountId='{A}', url='{url}'}}"
        )],
        false
    );
    let v2: Value = post("2", body).await.json().await.expect("json");
    assert_eq!(
        v2,
        json!([
            {"serviceName": "IDP", "accountId": A, "url": url, "doExist": true},
            {"serviceName": "WEBHOOKS", "accountId": A, "url": url, "doExist": false},
        ])
    );

    // 10,000 triplets: the mapped ones (every 1000th) true, the rest false.
    let big: Vec<Value> = (0..10_000)
        .map(|i| {
            let u = if i % 1000 == 0 {
                url.clone()
            } else {
                format!("{url}?n={i}")
            };
            json!({"serviceName": "IDP", "accountId": A, "url": u})
        })
        .collect();
    let r = post("2", Value::Array(big)).await;
    assert_eq!(r.status(), 200);
    let answers: Vec<Value> = r.json().await.expect("json");
    assert_eq!(answers.len(), 10_000);
    assert_eq!(answers.iter().filter(|a| a["doExist"] == true).count(), 10);

    // Malformed bodies, other accounts, and an AppKey signature.
    let r = stack
        .client
        .post(format!("{}/mtls/mapping", stack.gateway))
        .bearer_auth(&bearer)
        .body("{not json")
        .send()
        .await
        .expect("bad");
    assert_eq!(error_code(r).await, (400, "invalid_body".into()));
    let r = post(
        "2",
        json!([{"serviceName": "IDP", "accountId": B, "url": url}]),
    )
    .await;
    assert_eq!(error_code(r).await, (403, "forbidden_account".into()));
    let key = create_appkey(&stack, A).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let check = format!("{}/mtls/mapping", stack.gateway);
    let r = stack
        .client
        .post(format!("{check}?v=2"))
        .header(
            "authorization",
            oauth_header("POST", &check, &[("v", "2")], &key),
        )
        .json(&json!([{"serviceName": "IDP", "accountId": A, "url": url}]))
        .send()
        .await
        .expect("signed check");
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.expect("json")[0]["doExist"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_has_one_line_per_decision_and_no_secret() {
    let stack = Stack::start().await;
    let (_target, url, _) = mapped(&stack, "/audited?secret-query=s3").await;
    let bearer = stack.token_for(A).await;
    stack.forward_when_mapped(A, &url, "IDP").await;
    let r = stack
        .forward(A, "GET", &format!("{url}&other"), "IDP", &[], None)
        .await;
    assert_eq!(r.status(), 400);
    let lines = stack
        .audit_lines_when(|l| {
            l.iter().any(|x| x["decision"] == "forwarded")
                && l.iter()
                    .any(|x| x["decision"] == "refused" && x["code"] == "no_mtls_mapping")
        })
        .await;
    let forwarded = lines
        .iter()
        .find(|l| l["decision"] == "forwarded")
        .expect("a forwarded line");
    assert_eq!(forwarded["account"], A);
    assert_eq!(forwarded["service"], "IDP");
    assert!(forwarded["caller"]
        .as_str()
        .expect("caller")
        .starts_with("user:"));
    assert_eq!(forwarded["targetHost"], "localhost");
    assert_eq!(forwarded["targetPath"], "/audited?<redacted>");
    assert!(forwarded["mappingId"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));
    assert!(forwarded["certificateSerial"]
        .as_str()
        .is_some_and(|s| s.len() > 4));
    assert_eq!(forwarded["status"], 200);
    assert!(
        forwarded["requestId"].is_string()
            && forwarded["time"].is_string()
            && forwarded["durationMs"].is_number()
    );
    let refused = lines
        .iter()
        .find(|l| l["decision"] == "refused" && l["code"] == "no_mtls_mapping")
        .expect("a refused line");
    assert_eq!(
        (refused["account"].as_str(), refused["service"].as_str()),
        (Some(A), Some("IDP"))
    );
    let all = std::fs::read_to_string(stack.audit_path()).expect("log");
    for secret in [bearer.as_str(), "s3", TOKEN] {
        assert!(!all.contains(secret), "{secret:?} in the audit log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_filter_configuration_refuses_everything() {
    let stack = Stack::start_with(Options {
        filter_config: Some(r#"{"role":"filter","throttle":{"ratePerSecond":0,"burst":1}}"#.into()),
        ..Options::default()
    })
    .await;
    for _ in 0..3 {
        let r = stack
            .forward(
                A,
                "GET",
                "https://localhost:1/",
                "IDP",
                &[("authorization", "Bearer x")],
                None,
            )
            .await;
        assert_eq!(error_code(r).await, (503, "filter_misconfigured".into()));
        let r = stack
            .client
            .get(format!("{}/mtls/account/{A}/certificates", stack.gateway))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("send");
        assert_eq!(error_code(r).await, (503, "filter_misconfigured".into()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_good_snapshot_keeps_serving_while_the_control_plane_is_down() {
    let mut stack = Stack::start().await;
    let (_target, url, _) = mapped(&stack, "/resilient").await;
    stack.forward_when_mapped(A, &url, "IDP").await;
    stack.stop_control_plane();
    for _ in 0..10 {
        assert_eq!(
            stack
                .forward(A, "GET", &url, "IDP", &[], None)
                .await
                .status(),
            200
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_are_refused() {
    let stack = Stack::start().await;
    let big = "x".repeat(70 * 1024);
    let r = stack
        .client
        .get(format!("{}/mtls/account/{A}", stack.gateway))
        .header("x-big", big)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 431);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_tls_fallback_only_to_allowed_hosts() {
    let server_ca = crate::pki::Ca::new("public-ish CA");
    let stack = Stack::start_with(Options {
        system_trust_pem: Some(server_ca.cert_pem.clone()),
        ..Options::default()
    })
    .await;
    let upstream = Upstream::start_with(&server_ca.server(), &[], false).await;
    let url = upstream.url("/plain");
    let r = stack.forward(A, "GET", &url, "IDP", &[], None).await;
    assert_eq!(error_code(r).await, (400, "no_mtls_mapping".into()));

    let r = stack
        .client
        .put(format!("{}/api/account/{A}/egress", stack.api))
        .bearer_auth(TOKEN)
        .json(&json!({"plainTlsHosts": [format!("localhost:{}", upstream.addr.port())]}))
        .send()
        .await
        .expect("egress");
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    let seen: Value = stack
        .forward_when_mapped(A, &url, "IDP")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        seen["clientCertSha256"], "",
        "plain TLS presents no client certificate"
    );
    // The caller can insist on mTLS; another account is not allowed the host.
    let r = stack
        .forward(
            A,
            "GET",
            &url,
            "IDP",
            &[("lp-stop-if-certificate-not-found", "true")],
            None,
        )
        .await;
    assert_eq!(error_code(r).await, (400, "no_mtls_mapping".into()));
    let r = stack.forward(B, "GET", &url, "IDP", &[], None).await;
    assert_eq!(error_code(r).await, (400, "no_mtls_mapping".into()));
    stack
        .audit_lines_when(|l| l.iter().any(|x| x["decision"] == "forwarded_plain_tls"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_tls_load_balancer_appkey_signatures_cover_https() {
    let stack = Stack::start_with(Options {
        filter_config: Some(
            r#"{"role":"filter","throttle":{"ratePerSecond":10000,"burst":10000},"publicScheme":"https"}"#
                .into(),
        ),
        ..Options::default()
    })
    .await;
    let key = create_appkey(&stack, A).await;
    let target = forward_url(&stack, A);
    // What the client called: the load balancer's https URL (same host and port here).
    let called = target.replacen("http://", "https://", 1);
    let send = |signed_for: String| {
        let stack = &stack;
        let target = target.clone();
        let key = key.clone();
        async move {
            stack
                .client
                .get(&target)
                .header("authorization", oauth_header("GET", &signed_for, &[], &key))
                .header("LP-forward-url", "https://localhost:1/unmapped")
                .header("LP-service-name", "IDP")
                .send()
                .await
                .expect("forward")
        }
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    let (status, code) = loop {
        let (status, code) = error_code(send(called.clone()).await).await;
        // Until the snapshot (with the new AppKey) has loaded.
        if status != 503 && code != "unknown_appkey" {
            break (status, code);
        }
        assert!(Instant::now() < deadline, "{status} {code}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Authenticated: refused only because nothing is mapped there.
    assert_eq!((status, code.as_str()), (400, "no_mtls_mapping"));
    // The same request signed for plain http does not match what the gateway checks.
    assert_eq!(
        error_code(send(target.clone()).await).await,
        (401, "invalid_signature".into())
    );
}

/// Finding 8: one AppKey holder flooding the gateway with fresh nonces and timestamps at the
/// far edge of the window makes no other tenant's signed request a replay. Nonces are kept
/// per AppKey (keyed hash), and one caller's future timestamps raise no floor but its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nonce_flood_by_one_appkey_makes_no_other_tenants_request_a_replay() {
    let stack = Stack::start().await;
    let attacker = create_appkey(&stack, A).await;
    let victim = create_appkey(&stack, B).await;
    // Unmapped targets: a request that passes authentication is refused for its target
    // (400 no_mtls_mapping), one taken for a replay with 401 replayed_nonce.
    let url = "https://partner.example/x";
    let future = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("time")
        .as_secs()
        + 240;
    let token = oauth::Token::from_parts(
        attacker["consumerKey"].as_str().expect("ck").to_owned(),
        attacker["consumerSecret"].as_str().expect("cs").to_owned(),
        attacker["accessToken"].as_str().expect("at").to_owned(),
        attacker["accessTokenSecret"]
            .as_str()
            .expect("ats")
            .to_owned(),
    );
    let target = forward_url(&stack, A);
    let flood = {
        let client = stack.client.clone();
        async move {
            let mut accepted = 0;
            for i in 0..400u64 {
                let header = oauth::Builder::with_token(token.as_ref(), oauth::HMAC_SHA1)
                    .timestamp(NonZeroU64::new(future + i % 50))
                    .authorize("GET", &target, &());
                let r = client
                    .get(&target)
                    .header("authorization", header)
                    .header("LP-forward-url", url)
                    .header("LP-service-name", "IDP")
                    .send()
                    .await
                    .expect("flood");
                if r.status() == 400 {
                    accepted += 1;
                }
            }
            accepted
        }
    };
    let victims = async {
        let mut answers = Vec::new();
        for _ in 0..60 {
            let r = signed_forward(&stack, B, url, &victim).await;
            answers.push(error_code(r).await);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        answers
    };
    // Both keys are known to the gateway (its snapshot carries new AppKeys within moments).
    for (account, key) in [(A, &attacker), (B, &victim)] {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = signed_forward(&stack, account, url, key).await;
            let answer = error_code(r).await;
            if answer != (401, "unknown_appkey".to_owned()) {
                assert_eq!(answer, (400, "no_mtls_mapping".to_owned()));
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the gateway never learnt the AppKey"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let (accepted, answers) = tokio::join!(flood, victims);
    assert!(
        accepted > 0,
        "the flood's requests were not even authenticated"
    );
    for a in &answers {
        assert_eq!(
            a,
            &(400, "no_mtls_mapping".to_owned()),
            "a victim's fresh request was refused"
        );
    }
}
