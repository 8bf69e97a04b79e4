//! Credentials attached to mappings: the gateway authenticates to the target, callers never
//! hold the target's secrets, and no answer or log shows them.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{error_code, Stack, TOKEN};
use crate::upstream::Target;

const A: &str = "7007";

async fn create(stack: &Stack, body: Value) -> reqwest::Response {
    stack
        .client
        .post(format!("{}/api/account/{A}/credentials", stack.api))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .expect("create credential")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_and_access_token_reach_the_upstream_exactly_as_specified() {
    let stack = Stack::start().await;
    let target = Target::start().await;
    let client = target.client_ca.client("with-credential");
    let cert = stack
        .upload_ok(A, "cred-cert", client.p12(&target.client_ca, "pw"), "pw")
        .await;

    let r = create(&stack, json!({"name": "basic", "type": "basicAuthentication", "username": "Aladdin", "password": "open sesame"})).await;
    assert_eq!(r.status(), 201);
    let basic: Value = r.json().await.expect("json");
    assert_eq!(basic["password"], "********");
    assert_eq!(basic["username"], "Aladdin");
    let r = create(&stack, json!({"name": "token", "type": "accessToken", "token": "tok-3f9a-secret", "tokenType": "Token"})).await;
    let token: Value = r.json().await.expect("json");
    assert_eq!(token["token"], "********");

    let mut urls = Vec::new();
    for (name, cred) in [("b", &basic), ("t", &token)] {
        let url = target.upstream.url(&format!("/{name}"));
        let r = stack
            .map(A, json!([{"certificationId": cert.to_string(), "serviceId": "1", "url": url, "siteId": A, "name": name,
                           "enable": true, "deleted": false, "caCertificates": target.server_ca.cert_pem,
                           "credentialId": cred["id"].to_string()}]))
            .await;
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
        urls.push(url);
    }
    let expected = [
        "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==",
        "Token tok-3f9a-secret",
    ];
    for (url, want) in urls.iter().zip(expected) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let seen: Value = loop {
            // The caller's own override does not replace an attached credential.
            let r = stack
                .forward(
                    A,
                    "GET",
                    url,
                    "IDP",
                    &[("lp-authorization-override", "Bearer caller-choice")],
                    None,
                )
                .await;
            if r.status() == 200 {
                break r.json().await.expect("json");
            }
            assert!(Instant::now() < deadline, "never forwarded");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(seen["headers"]["authorization"], json!([want]), "{url}");
    }

    // Listing masks every secret; a credential in use cannot be deleted.
    let listed = stack
        .client
        .get(format!("{}/api/account/{A}/credentials", stack.api))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("list")
        .text()
        .await
        .expect("text");
    assert!(!listed.contains("open sesame") && !listed.contains("tok-3f9a-secret"));
    let id = basic["id"].as_i64().expect("id");
    let r = stack
        .client
        .delete(format!("{}/api/account/{A}/credentials/{id}", stack.api))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 409);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["code"], "credential_in_use");
    assert_eq!(v["mappings"][0]["name"], "b");
    // From another account the credential is not there: no 409, no mapping names.
    let r = stack
        .client
        .delete(format!("{}/api/account/7008/credentials/{id}", stack.api))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("delete");
    assert_eq!(error_code(r).await, (404, "not_found".into()));

    // The account lets callers override: now the caller's header wins (settings are checked).
    let settings = format!("{}/api/account/{A}/settings", stack.api);
    let r = stack
        .client
        .put(&settings)
        .bearer_auth(TOKEN)
        .json(&json!({"allowAuthorizationOverride": "yes"}))
        .send()
        .await
        .expect("settings");
    assert_eq!(error_code(r).await.0, 400);
    let r = stack
        .client
        .put(&settings)
        .bearer_auth(TOKEN)
        .json(&json!({"allowAuthorizationOverride": true}))
        .send()
        .await
        .expect("settings");
    assert_eq!(r.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = stack
            .forward(
                A,
                "GET",
                &urls[0],
                "IDP",
                &[("lp-authorization-override", "Bearer caller-choice")],
                None,
            )
            .await;
        assert_eq!(r.status(), 200);
        let seen: Value = r.json().await.expect("json");
        if seen["headers"]["authorization"] == json!(["Bearer caller-choice"]) {
            break;
        }
        assert_eq!(seen["headers"]["authorization"], json!([expected[0]]));
        assert!(Instant::now() < deadline, "the override never won");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Without an override the credential is still sent.
    let r = stack.forward(A, "GET", &urls[0], "IDP", &[], None).await;
    let seen: Value = r.json().await.expect("json");
    assert_eq!(seen["headers"]["authorization"], json!([expected[0]]));
    let got: Value = stack
        .client
        .get(&settings)
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("settings")
        .json()
        .await
        .expect("json");
    assert_eq!(got, json!({"allowAuthorizationOverride": true}));

    let logs = stack.logs();
    for secret in [
        "open sesame",
        "tok-3f9a-secret",
        "QWxhZGRpbjpvcGVuIHNlc2FtZQ==",
    ] {
        assert!(!logs.contains(secret), "{secret} in a log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_is_stored_and_bad_ones_are_refused() {
    let stack = Stack::start().await;
    let ok = [
        json!({"name": "cc", "type": "oauth2ClientCredentials", "clientId": "id", "clientSecret": "cs-secret-1", "tokenUrl": "https://idp.example/token", "scope": "read"}),
        json!({"name": "ac", "type": "oauth2AuthorizationCode", "clientId": "id", "clientSecret": "cs-secret-2", "authUrl": "https://idp.example/auth", "tokenUrl": "https://idp.example/token", "pkce": true}),
        json!({"name": "ttm", "type": "transferToMessaging", "clientId": "id", "clientSecret": "cs-secret-3"}),
        json!({"name": "nlu", "type": "thirdPartyNlu", "provider": "dialogflow", "credentials": {"private_key": "nlu-secret-4"}}),
        json!({"name": "pre", "type": "consumerPreAuthentication"}),
    ];
    for body in ok {
        let r = create(&stack, body.clone()).await;
        assert_eq!(r.status(), 201, "{body}");
        let text = r.text().await.expect("text");
        for s in ["cs-secret", "nlu-secret"] {
            assert!(!text.contains(s), "secret answered: {text}");
        }
    }
    let bad = [
        (
            json!({"name": "pre2", "type": "consumerPreAuthentication"}),
            409,
            "consumer_pre_authentication_exists",
        ),
        (
            json!({"name": "cc", "type": "accessToken", "token": "t", "tokenType": "Bearer"}),
            409,
            "duplicate_credential_name",
        ),
        (
            json!({"name": "x", "type": "oauth2ClientCredentials", "clientId": "id", "clientSecret": "s", "tokenUrl": "http://plain/"}),
            400,
            "invalid_credential",
        ),
        (
            json!({"name": "x", "type": "mutualAuthentication", "keyCertificate": "AAAA", "protocols": ["TLSv1.2"]}),
            422,
            "p12_unreadable",
        ),
        (
            json!({"name": "x", "type": "basicAuthentication", "username": "a:b", "password": "p"}),
            400,
            "invalid_credential",
        ),
        (
            json!({"name": "x", "type": "whatever"}),
            400,
            "invalid_body",
        ),
        (
            json!({"type": "accessToken", "token": "t", "tokenType": "Bearer"}),
            400,
            "invalid_body",
        ),
    ];
    for (body, status, code) in bad {
        let r = create(&stack, body.clone()).await;
        assert_eq!(error_code(r).await, (status, code.into()), "{body}");
    }
    // A stored-only type cannot be attached, and says so.
    let listed: Vec<Value> = stack
        .client
        .get(format!("{}/api/account/{A}/credentials", stack.api))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(listed.len(), 5);
    let nlu = listed.iter().find(|c| c["name"] == "nlu").expect("nlu");
    assert_eq!(nlu["attachable"], false);
    assert_eq!(nlu["credentials"], "********");
}
