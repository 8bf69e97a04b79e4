//! The management API through real HTTP, a running control plane and real OpenBao: login,
//! users, AppKeys signed by an outside OAuth1 library, CSDS, certificates and mappings, and
//! a precise answer for every bad input with the store unchanged.

use oauth1_request as oauth;
use serde_json::{json, Value};

use crate::harness::{error_code, Stack, TOKEN};
use crate::pki::Ca;

const A: &str = "1001";
const B: &str = "2002";

async fn get(stack: &Stack, url: &str, bearer: &str) -> reqwest::Response {
    stack
        .client
        .get(url)
        .bearer_auth(bearer)
        .send()
        .await
        .expect("get")
}

fn cert_list(stack: &Stack, account: &str) -> String {
    format!("{}/mtls/account/{account}/certificates", stack.api)
}

fn mappings_url(stack: &Stack, account: &str) -> String {
    format!(
        "{}/api/account/{account}/configuration/ac-common/mtls",
        stack.api
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_tokens_and_cross_account_access() {
    let stack = Stack::start().await;
    stack.add_user(A, "alice", "alice-password-1", true);
    stack.add_user(B, "bob", "bob-password-12", true);

    let r = stack
        .client
        .post(format!("{}/api/account/{A}/login?v=1.3", stack.api))
        .json(&json!({"username": "alice", "password": "alice-password-1"}))
        .send()
        .await
        .expect("login");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    let bearer = v["bearer"].as_str().expect("bearer").to_owned();
    assert_eq!(v["sessionTTl"], "28800000");
    assert_eq!(v["config"]["loginName"], "alice");
    assert_eq!(v["config"]["isAdmin"], true);
    assert!(v["config"]["userId"].is_string());
    assert!(v["config"]["serverCurrentTime"].is_number());
    let services: Vec<&str> = v["csdsCollectionResponse"]["baseURIs"]
        .as_array()
        .expect("baseURIs")
        .iter()
        .filter_map(|e| e["service"].as_str())
        .collect();
    for s in ["mtlsGateway", "accountConfigReadWrite", "agentVep"] {
        assert!(services.contains(&s), "{s} missing from {services:?}");
    }
    assert!(!v.to_string().contains("alice-password-1"));

    // Wrong password, unknown user, wrong account: the same 401.
    for (account, user, pw) in [
        (A, "alice", "wrong-password"),
        (A, "nobody", "alice-password-1"),
        (B, "alice", "alice-password-1"),
    ] {
        let r = stack
            .client
            .post(format!("{}/api/account/{account}/login?v=1.3", stack.api))
            .json(&json!({"username": user, "password": pw}))
            .send()
            .await
            .expect("login");
        assert_eq!(
            error_code(r).await,
            (401, "invalid_credentials".into()),
            "{account} {user}"
        );
    }
    let r = stack
        .client
        .post(format!("{}/api/account/{A}/login?v=1.3", stack.api))
        .header("content-type", "application/json")
        .body("{\"username\": \"alice\"")
        .send()
        .await
        .expect("login");
    assert_eq!(error_code(r).await, (400, "malformed_json".into()));

    // The token works for its own account and nowhere else.
    assert_eq!(
        get(&stack, &cert_list(&stack, A), &bearer).await.status(),
        200
    );
    assert_eq!(
        error_code(get(&stack, &cert_list(&stack, B), &bearer).await).await,
        (403, "forbidden_account".into())
    );
    assert_eq!(
        error_code(get(&stack, &mappings_url(&stack, B), &bearer).await).await,
        (403, "forbidden_account".into())
    );

    // Tampered: flip a character of the payload.
    let mut parts: Vec<String> = bearer.split('.').map(str::to_owned).collect();
    let mid = parts[1].len() / 2;
    let flipped = if &parts[1][mid..=mid] == "A" {
        "B"
    } else {
        "A"
    };
    parts[1].replace_range(mid..=mid, flipped);
    let tampered = parts.join(".");
    assert_eq!(
        error_code(get(&stack, &cert_list(&stack, A), &tampered).await).await,
        (401, "invalid_token".into())
    );
    assert_eq!(
        error_code(get(&stack, &cert_list(&stack, A), "garbage").await).await,
        (401, "invalid_token".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_managed_by_admins_only() {
    let stack = Stack::start().await;
    stack.add_user(A, "admin", "admin-password-1", true);
    let admin = stack.login(A, "admin", "admin-password-1").await;
    let users = format!("{}/api/account/{A}/users", stack.api);

    let r = stack
        .client
        .post(&users)
        .bearer_auth(&admin)
        .json(&json!({"username": "carol", "password": "carol-password-1", "isAdmin": false}))
        .send()
        .await
        .expect("create");
    assert_eq!(r.status(), 201);
    let carol: Value = r.json().await.expect("json");
    assert!(!carol.to_string().contains("carol-password-1"));
    assert!(carol.get("password").is_none() && carol.get("passwordHash").is_none());

    let r = stack
        .client
        .post(&users)
        .bearer_auth(&admin)
        .json(&json!({"username": "carol", "password": "another-password"}))
        .send()
        .await
        .expect("dup");
    assert_eq!(error_code(r).await, (409, "duplicate_username".into()));
    let r = stack
        .client
        .post(&users)
        .bearer_auth(&admin)
        .json(&json!({"username": "dave", "password": "short"}))
        .send()
        .await
        .expect("short");
    assert_eq!(error_code(r).await, (400, "invalid_password".into()));

    // A non-admin may neither manage users nor certificates.
    let carol_token = stack.login(A, "carol", "carol-password-1").await;
    assert_eq!(
        error_code(get(&stack, &users, &carol_token).await).await,
        (403, "forbidden".into())
    );
    assert_eq!(
        error_code(get(&stack, &cert_list(&stack, A), &carol_token).await).await,
        (403, "forbidden".into())
    );

    // Deleting a user ends its tokens at once; the last admin cannot be deleted.
    let id = carol["id"].as_i64().expect("id");
    let r = stack
        .client
        .delete(format!("{users}/{id}"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 200);
    assert_eq!(
        error_code(get(&stack, &users, &carol_token).await).await,
        (401, "invalid_token".into())
    );
    let listed: Vec<Value> = get(&stack, &users, &admin)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(listed.len(), 1);
    let admin_id = listed[0]["id"].as_i64().expect("id");
    let r = stack
        .client
        .delete(format!("{users}/{admin_id}"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("delete");
    assert_eq!(error_code(r).await, (409, "last_admin".into()));
}

/// An `Authorization: OAuth …` header made by the `oauth1-request` crate (not ours).
pub(crate) fn oauth_header(
    method: &str,
    url_without_query: &str,
    query: &[(&str, &str)],
    key: &Value,
) -> String {
    let token = oauth::Token::from_parts(
        key["consumerKey"].as_str().expect("ck"),
        key["consumerSecret"].as_str().expect("cs"),
        key["accessToken"].as_str().expect("at"),
        key["accessTokenSecret"].as_str().expect("ats"),
    );
    let mut params: Vec<(&str, &str)> = query.to_vec();
    params.sort();
    let params = oauth::ParameterList::new(params);
    oauth::authorize(method, url_without_query, &params, &token, oauth::HMAC_SHA1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appkeys_sign_requests_and_revocation_is_immediate() {
    let stack = Stack::start().await;
    let keys = format!("{}/api/account/{A}/appkeys", stack.api);
    // Default privileges: the runtime only.
    let r = stack
        .client
        .post(&keys)
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("create");
    assert_eq!(r.status(), 201);
    let runtime_key: Value = r.json().await.expect("json");
    for f in [
        "id",
        "consumerKey",
        "consumerSecret",
        "accessToken",
        "accessTokenSecret",
        "privileges",
        "createdAt",
    ] {
        assert!(!runtime_key[f].is_null(), "{f} missing");
    }
    assert_eq!(
        runtime_key["privileges"],
        json!(["MTLS_CHECK_MAPPING", "MTLS_FORWARD"])
    );
    let r = stack
        .client
        .post(&keys)
        .bearer_auth(TOKEN)
        .json(&json!({"privileges": ["MTLS_MANAGE", "MTLS_FORWARD"]}))
        .send()
        .await
        .expect("create");
    let manage_key: Value = r.json().await.expect("json");

    // Listing never shows secrets.
    let listed = get(&stack, &keys, TOKEN).await.text().await.expect("text");
    for k in [&runtime_key, &manage_key] {
        assert!(!listed.contains(k["consumerSecret"].as_str().expect("cs")));
        assert!(!listed.contains(k["accessTokenSecret"].as_str().expect("ats")));
    }
    let r = stack
        .client
        .post(&keys)
        .bearer_auth(TOKEN)
        .json(&json!({"privileges": ["ROOT"]}))
        .send()
        .await
        .expect("bad");
    assert_eq!(error_code(r).await, (400, "invalid_privilege".into()));

    // Create a certificate to map, then create a mapping signed with the AppKey.
    let ca = Ca::new("ca");
    let cert = stack
        .upload_ok(A, "for-appkey", ca.client("c").p12(&ca, "pw"), "pw")
        .await;
    let url = mappings_url(&stack, A);
    let body = json!([{"certificationId": cert.to_string(), "serviceId": "1", "url": "https://a.example/x",
                       "siteId": A, "name": "signed", "enable": true, "deleted": false}]);
    let signed = |key: &Value| oauth_header("POST", &url, &[("v", "3.0")], key);

    let auth = signed(&manage_key);
    let send = |auth: String, body: Value| {
        let client = stack.client.clone();
        let url = format!("{url}?v=3.0");
        async move {
            client
                .post(url)
                .header("authorization", auth)
                .json(&body)
                .send()
                .await
                .expect("send")
        }
    };
    let r = send(auth.clone(), body.clone()).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    // The very same signed request again: a replay.
    let body2 = json!([{"certificationId": cert.to_string(), "serviceId": "1", "url": "https://a.example/y",
                        "siteId": A, "name": "signed-2", "enable": true, "deleted": false}]);
    assert_eq!(
        error_code(send(auth, body2.clone()).await).await,
        (401, "replayed_nonce".into())
    );
    // Without MTLS_MANAGE: forbidden.
    assert_eq!(
        error_code(send(signed(&runtime_key), body2.clone()).await).await,
        (403, "forbidden".into())
    );
    // Tampered signature.
    let bad = signed(&manage_key).replace("oauth_signature=\"", "oauth_signature=\"x");
    assert_eq!(error_code(send(bad, body2.clone()).await).await.0, 401);
    // Another account's AppKey on this account.
    let r = stack
        .client
        .post(format!("{}/api/account/{B}/appkeys", stack.api))
        .bearer_auth(TOKEN)
        .json(&json!({"privileges": ["MTLS_MANAGE"]}))
        .send()
        .await
        .expect("b key");
    let b_key: Value = r.json().await.expect("json");
    assert_eq!(
        error_code(send(signed(&b_key), body2.clone()).await).await,
        (403, "forbidden_account".into())
    );
    // By-file uploads accept Bearer only.
    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(ca.client("d").p12(&ca, "pw")).file_name("c.p12"),
        )
        .text(
            "certificate",
            json!({"name": "by-appkey", "password": "pw"}).to_string(),
        );
    let by_file = format!("{}/mtls/account/{A}/certificates/by-file", stack.api);
    let r = stack
        .client
        .post(&by_file)
        .header(
            "authorization",
            oauth_header("POST", &by_file, &[], &manage_key),
        )
        .multipart(form)
        .send()
        .await
        .expect("by-file");
    assert_eq!(error_code(r).await, (401, "bearer_required".into()));

    // Revoke: the next signed request is refused.
    let id = manage_key["id"].as_i64().expect("id");
    let r = stack
        .client
        .delete(format!("{keys}/{id}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("revoke");
    assert_eq!(r.status(), 200);
    assert_eq!(
        error_code(send(signed(&manage_key), body2).await).await,
        (401, "unknown_appkey".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csds_answers_both_forms() {
    let stack = Stack::start().await;
    let v: Value = stack
        .client
        .get(format!(
            "{}/api/account/{A}/service/baseURI.json?version=1.0",
            stack.api
        ))
        .send()
        .await
        .expect("csds")
        .json()
        .await
        .expect("json");
    let entries = v["baseURIs"].as_array().expect("array");
    let gateway = entries
        .iter()
        .find(|e| e["service"] == "mtlsGateway")
        .expect("gateway");
    assert_eq!(gateway["account"], A);
    assert_eq!(
        format!("http://{}", gateway["baseURI"].as_str().expect("uri")),
        stack.gateway
    );
    let api = entries
        .iter()
        .find(|e| e["service"] == "accountConfigReadWrite")
        .expect("acrw");
    assert_eq!(
        format!("http://{}", api["baseURI"].as_str().expect("uri")),
        stack.api
    );

    let one: Value = stack
        .client
        .get(format!(
            "{}/api/account/{A}/service/agentVep/baseURI.json?version=1.0",
            stack.api
        ))
        .send()
        .await
        .expect("one")
        .json()
        .await
        .expect("json");
    assert_eq!(one["service"], "agentVep");
    let r = stack
        .client
        .get(format!(
            "{}/api/account/{A}/service/mtlsgateway/baseURI.json?version=1.0",
            stack.api
        ))
        .send()
        .await
        .expect("case");
    assert_eq!(error_code(r).await, (404, "not_found".into()));
}

async fn mapping_count(stack: &Stack, account: &str) -> usize {
    let v: Vec<Value> = get(stack, &mappings_url(stack, account), TOKEN)
        .await
        .json()
        .await
        .expect("json");
    v.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mappings_validate_everything_and_honour_revisions() {
    let stack = Stack::start().await;
    let ca = Ca::new("ca");
    let cert = stack
        .upload_ok(A, "m", ca.client("c").p12(&ca, "pw"), "pw")
        .await;
    let other = stack
        .upload_ok(B, "other-account", ca.client("c").p12(&ca, "pw"), "pw")
        .await;
    let url = format!("{}?v=3.0", mappings_url(&stack, A));
    let post = |body: Value| {
        let client = stack.client.clone();
        let url = url.clone();
        async move {
            client
                .post(url)
                .bearer_auth(TOKEN)
                .json(&body)
                .send()
                .await
                .expect("post")
        }
    };
    let m = |name: &str, cert: i64, svc: Value, u: &str| {
        json!({"certificationId": cert.to_string(), "serviceId": svc, "enable": true, "url": u,
               "siteId": A, "name": name, "deleted": false})
    };

    let r = post(json!([
        m("one", cert, json!("1"), "https://t.example/a?x=1"),
        m("two", cert, json!(2), "https://t.example/a?x=1")
    ]))
    .await;
    assert_eq!(r.status(), 201);
    let rev1: i64 = r.headers()["ac-revision"]
        .to_str()
        .expect("rev")
        .parse()
        .expect("rev");
    let created: Vec<Value> = r.json().await.expect("json");
    let one_id = created[0]["id"].as_i64().expect("id");

    let cases: Vec<(Value, u16, &str)> = vec![
        (
            json!([m("x", 999_999, json!("1"), "https://t.example/b")]),
            400,
            "unknown_certificate",
        ),
        (
            json!([m("x", other, json!("1"), "https://t.example/b")]),
            400,
            "unknown_certificate",
        ),
        (
            json!([m("x", cert, json!("7"), "https://t.example/b")]),
            400,
            "invalid_service_id",
        ),
        (
            json!([m("x", cert, json!("1"), "http://t.example/b")]),
            400,
            "invalid_url",
        ),
        (
            json!([m("x", cert, json!("1"), "https://u:p@t.example/b")]),
            400,
            "invalid_url",
        ),
        (
            json!([m("x", cert, json!("1"), "https://t.example/b#f")]),
            400,
            "invalid_url",
        ),
        (
            json!([m("x", cert, json!("1"), "t.example/b")]),
            400,
            "invalid_url",
        ),
        (
            json!([{"certificationId": cert.to_string(), "serviceId": "1", "url": "https://t.example/b", "siteId": B, "name": "x"}]),
            400,
            "site_id_mismatch",
        ),
        (
            json!([m("one", cert, json!("1"), "https://t.example/new")]),
            409,
            "duplicate_mapping_name",
        ),
        (
            json!([m("x", cert, json!("1"), "https://t.example/a?x=1")]),
            409,
            "duplicate_mapping",
        ),
        (
            json!([
                m("y", cert, json!("1"), "https://t.example/c"),
                m("y", cert, json!("1"), "https://t.example/d")
            ]),
            409,
            "duplicate_mapping_name",
        ),
        // All or nothing: a valid first item is not stored when the second is invalid.
        (
            json!([
                m("ok", cert, json!("1"), "https://t.example/ok"),
                m("bad", cert, json!("1"), "ftp://t.example/")
            ]),
            400,
            "invalid_url",
        ),
        (json!([]), 400, "empty_body"),
        (json!({"not": "an array"}), 400, "invalid_body"),
        (
            json!([{"certificationId": "1", "serviceId": "1", "url": "https://x/", "name": "x", "surprise": true}]),
            400,
            "invalid_body",
        ),
    ];
    for (body, status, code) in cases {
        let r = post(body.clone()).await;
        assert_eq!(error_code(r).await, (status, code.into()), "{body}");
        assert_eq!(
            mapping_count(&stack, A).await,
            2,
            "a refused request changed the store: {body}"
        );
    }
    let r = post(json!([m("x", cert, json!("1"), "https://t.example/a?x=1")])).await;
    let v: Value = r.json().await.expect("json");
    assert_eq!(
        v["existingMapping"]["id"], one_id,
        "the conflict names the existing mapping"
    );

    // Read one, update with a stale and the current revision.
    let one_url = format!("{}/{one_id}", mappings_url(&stack, A));
    let r = get(&stack, &one_url, TOKEN).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["ac-revision"], rev1.to_string().as_str());
    let update = m("one-renamed", cert, json!("0"), "https://t.example/renamed");
    let r = stack
        .client
        .put(&one_url)
        .bearer_auth(TOKEN)
        .header("if-match", (rev1 - 1).to_string())
        .json(&update)
        .send()
        .await
        .expect("put");
    assert_eq!(error_code(r).await, (412, "revision_mismatch".into()));
    let r = stack
        .client
        .put(&one_url)
        .bearer_auth(TOKEN)
        .header("if-match", rev1.to_string())
        .json(&update)
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), 200);
    let rev2: i64 = r.headers()["ac-revision"]
        .to_str()
        .expect("rev")
        .parse()
        .expect("rev");
    assert!(rev2 > rev1);
    let v: Value = r.json().await.expect("json");
    assert_eq!(
        (v["name"].as_str(), v["serviceId"].as_str()),
        (Some("one-renamed"), Some("0"))
    );
    // Updating into another mapping's triplet is a conflict.
    let clash = m("one-renamed", cert, json!("2"), "https://t.example/a?x=1");
    let r = stack
        .client
        .put(&one_url)
        .bearer_auth(TOKEN)
        .json(&clash)
        .send()
        .await
        .expect("put");
    assert_eq!(error_code(r).await, (409, "duplicate_mapping".into()));

    // A certificate in use cannot be deleted; the answer lists the mappings.
    let cert_url = format!("{}/{cert}", cert_list(&stack, A));
    let r = stack
        .client
        .delete(&cert_url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("delete cert");
    assert_eq!(r.status(), 409);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["code"], "certificate_in_use");
    assert_eq!(v["mappings"].as_array().expect("mappings").len(), 2);

    // Delete the mappings (one with a stale revision first), then the certificate.
    let r = stack
        .client
        .delete(&one_url)
        .bearer_auth(TOKEN)
        .header("if-match", rev1.to_string())
        .send()
        .await
        .expect("del");
    assert_eq!(error_code(r).await, (412, "revision_mismatch".into()));
    let r = stack
        .client
        .delete(&one_url)
        .bearer_auth(TOKEN)
        .header("if-match", rev2.to_string())
        .send()
        .await
        .expect("del");
    assert_eq!(r.status(), 200);
    assert_eq!(
        error_code(get(&stack, &one_url, TOKEN).await).await,
        (404, "not_found".into())
    );
    let two_id = created[1]["id"].as_i64().expect("id");
    let r = stack
        .client
        .delete(format!("{}/{two_id}", mappings_url(&stack, A)))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("del");
    assert_eq!(r.status(), 200);
    let r = stack
        .client
        .delete(&cert_url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("delete cert");
    assert_eq!(r.status(), 200);
    assert_eq!(
        error_code(get(&stack, &cert_url, TOKEN).await).await,
        (404, "not_found".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_by_json_and_by_file_with_status() {
    let stack = Stack::start().await;
    let ca = Ca::new("ca");
    let p12 = ca.client("json-client").p12(&ca, "pw");
    // Bytes as LivePerson's mTLS API "Overview" shows them, and signed Java bytes.
    let as_numbers: Vec<i64> = p12.iter().map(|b| i64::from(*b)).collect();
    let as_java: Vec<i64> = p12.iter().map(|b| i64::from(*b as i8)).collect();
    let r = stack
        .client
        .post(cert_list(&stack, A))
        .bearer_auth(TOKEN)
        .json(&json!([{"name": "j1", "p12": as_numbers, "password": "pw"}, {"name": "j2", "p12": as_java, "password": "pw"}]))
        .send()
        .await
        .expect("create");
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.expect("json");
    let saved = v["successfulySavedCertificates"].as_array().expect("saved");
    assert_eq!(saved.len(), 2);
    assert_eq!(v["failedSaveToVaultCertificates"], json!([]));
    for c in saved {
        assert_eq!(c["status"], "Available");
        assert_eq!(c["siteId"], A);
        assert_eq!(c["deleted"], false);
        assert!(c["expirationDate"].is_number());
        assert!(c["subject"]
            .as_str()
            .expect("subject")
            .contains("json-client"));
        assert_eq!(c["keyAlgorithm"], "EC");
        assert!(c["sha256Fingerprint"].as_str().expect("fp").len() == 64);
    }
    let id = saved[0]["id"].as_i64().expect("id");

    // JSON update (rotation) of one of them.
    let rotated = ca.client("rotated").p12(&ca, "pw2");
    let r = stack
        .client
        .put(cert_list(&stack, A))
        .bearer_auth(TOKEN)
        .json(&json!([{"id": id, "name": "j1", "p12": rotated, "password": "pw2"}]))
        .send()
        .await
        .expect("update");
    assert_eq!(r.status(), 200);
    let v: Value = get(&stack, &format!("{}/{id}", cert_list(&stack, A)), TOKEN)
        .await
        .json()
        .await
        .expect("json");
    assert!(v["subject"].as_str().expect("subject").contains("rotated"));

    // A bad item refuses the whole request.
    let r = stack
        .client
        .post(cert_list(&stack, A))
        .bearer_auth(TOKEN)
        .json(&json!([{"name": "j3", "p12": ca.client("x").p12(&ca, "pw"), "password": "pw"}, {"name": "j4", "p12": [1, 2, 3], "password": "pw"}]))
        .send()
        .await
        .expect("bad");
    let (status, _) = error_code(r).await;
    assert_eq!(status, 422);
    let r = stack
        .client
        .post(cert_list(&stack, A))
        .bearer_auth(TOKEN)
        .json(&json!([{"name": "j5", "p12": [256], "password": "pw"}]))
        .send()
        .await
        .expect("bad");
    assert_eq!(error_code(r).await, (400, "invalid_body".into()));
    let r = stack
        .client
        .post(cert_list(&stack, A))
        .bearer_auth(TOKEN)
        .json(&json!([{"name": "j1", "p12": ca.client("x").p12(&ca, "pw"), "password": "pw"}]))
        .send()
        .await
        .expect("dup");
    assert_eq!(
        error_code(r).await,
        (409, "duplicate_certificate_name".into())
    );
    let listed: Vec<Value> = get(&stack, &cert_list(&stack, A), TOKEN)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(listed.len(), 2);
    // Another account sees none of them.
    let listed: Vec<Value> = get(&stack, &cert_list(&stack, B), TOKEN)
        .await
        .json()
        .await
        .expect("json");
    assert!(listed.is_empty());
    assert_eq!(
        error_code(get(&stack, &format!("{}/{id}", cert_list(&stack, B)), TOKEN).await).await,
        (404, "not_found".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bodies_and_paths_get_json_errors() {
    let stack = Stack::start().await;
    let url = format!("{}?v=3.0", mappings_url(&stack, A));
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    // Far over the 2 MiB limit: the client is still sending when the server has decided.
    let huge = format!("[{}]", vec!["{\"a\":1}"; 3_000_000].join(","));
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("application/json", deep, 400, "json_too_deep"),
        ("application/json", huge, 413, "payload_too_large"),
        ("application/json", "[{".into(), 400, "malformed_json"),
        ("text/plain", "[]".into(), 415, "unsupported_media_type"),
    ];
    for (ct, body, status, code) in cases {
        // The oversized body is read to its end before the 413, so the client always gets
        // the answer (and the connection stays usable for the next case).
        let r = stack
            .client
            .post(&url)
            .bearer_auth(TOKEN)
            .header("content-type", ct)
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{code}: {e}"));
        assert_eq!(error_code(r).await, (status, code.into()), "{code}");
    }
    let r = stack
        .client
        .get(format!("{}/no/such/path", stack.api))
        .send()
        .await
        .expect("404");
    assert_eq!(error_code(r).await, (404, "not_found".into()));
    let r = stack
        .client
        .patch(mappings_url(&stack, A))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("405");
    assert_eq!(error_code(r).await, (405, "method_not_allowed".into()));
    let r = stack
        .client
        .get(format!(
            "{}/mtls/account/bad%20account/certificates",
            stack.api
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("bad account");
    assert_eq!(error_code(r).await, (400, "invalid_account".into()));
    let r = stack
        .client
        .get(format!(
            "{}/mtls/account/{A}/certificates/not-a-number",
            stack.api
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("bad id");
    assert_eq!(error_code(r).await, (400, "invalid_path".into()));
    assert_eq!(mapping_count(&stack, A).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_answers_as_documented() {
    let stack = Stack::start().await;
    let doc: Value = stack
        .client
        .get(format!("{}/openapi.json", stack.api))
        .send()
        .await
        .expect("doc")
        .json()
        .await
        .expect("json");
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().expect("paths");
    let mut checked = 0;
    for (path, ops) in paths {
        for (method, op) in ops.as_object().expect("ops") {
            let documented: Vec<u16> = op["responses"]
                .as_object()
                .expect("responses")
                .keys()
                .map(|k| k.parse().expect("status"))
                .collect();
            let url = format!(
                "{}{}",
                stack.api,
                path.replace("{accountId}", "4004")
                    .replace("{id}", "1")
                    .replace("{serviceName}", "mtlsGateway")
            );
            let url = if path.ends_with("/snapshot") {
                format!("{url}?node=nobody&waitSeconds=1")
            } else {
                url
            };
            for bearer in [None, Some(TOKEN)] {
                let mut req = stack
                    .client
                    .request(method.to_uppercase().parse().expect("method"), &url);
                if let Some(b) = bearer {
                    req = req.bearer_auth(b);
                }
                if let Some(content) = op["requestBody"]["content"].as_object() {
                    if content.contains_key("application/json") {
                        req = req.header("content-type", "application/json").body("{}");
                    } else {
                        req = req.multipart(reqwest::multipart::Form::new().text("unrelated", "x"));
                    }
                }
                let status = req.send().await.expect("send").status().as_u16();
                assert!(
                    documented.contains(&status),
                    "{method} {path} answered {status}, documented {documented:?}"
                );
                checked += 1;
            }
            let security = op["security"].as_array().expect("security");
            if !security.is_empty() {
                assert!(
                    documented.contains(&401),
                    "{method} {path} needs credentials but documents no 401"
                );
            }
        }
    }
    assert!(
        checked >= 48,
        "only {checked} checks: operations missing from the document?"
    );
}

/// Finding 12: the development admin token (admin of every account) is honoured on the
/// control plane's API only, never through the public gateway listener, whatever header a
/// caller sends to pass for a direct call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dev_admin_token_is_refused_through_the_gateway() {
    let stack = Stack::start().await;
    let through_gateway = format!("{}/mtls/account/{A}/certificates", stack.gateway);
    for via in [None, Some("direct"), Some("")] {
        let mut req = stack.client.get(&through_gateway).bearer_auth(TOKEN);
        if let Some(v) = via {
            req = req.header("x-mtlsgate-via", v);
        }
        let r = req.send().await.expect("send");
        assert_eq!(
            error_code(r).await,
            (401, "dev_token_not_accepted".into()),
            "via header {via:?}"
        );
    }
    let r = get(
        &stack,
        &format!("{}/mtls/account/{A}/certificates", stack.api),
        TOKEN,
    )
    .await;
    assert_eq!(r.status(), 200, "the API itself still takes it");
    // A tenant's own login token works through the gateway.
    let token = stack.token_for(A).await;
    let r = get(&stack, &through_gateway, &token).await;
    assert_eq!(r.status(), 200);
}
