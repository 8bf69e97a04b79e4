//! The control plane's side of the runtime, through real HTTP with real OpenBao and Envoy:
//! the egress allowlist API, and the runtime snapshot — refused without the runtime token,
//! carrying AppKeys, token keys, live users and (once Envoy acknowledged the cluster) the
//! plain-TLS fallback hosts, and waking a waiting long poll as soon as something changes.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{error_code, Stack, TOKEN};

const A: &str = "7007";
const B: &str = "8008";

fn egress_url(stack: &Stack, account: &str) -> String {
    format!("{}/api/account/{account}/egress", stack.api)
}

async fn get_egress(stack: &Stack, account: &str, bearer: &str) -> reqwest::Response {
    stack
        .client
        .get(egress_url(stack, account))
        .bearer_auth(bearer)
        .send()
        .await
        .expect("get egress")
}

async fn put_egress(stack: &Stack, account: &str, bearer: &str, body: Value) -> reqwest::Response {
    stack
        .client
        .put(egress_url(stack, account))
        .bearer_auth(bearer)
        .json(&body)
        .send()
        .await
        .expect("put egress")
}

async fn hosts(stack: &Stack, account: &str) -> Value {
    let r = get_egress(stack, account, TOKEN).await;
    assert_eq!(r.status(), 200);
    r.json().await.expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_allowlist_is_validated_stored_and_kept_per_account() {
    let stack = Stack::start().await;
    assert_eq!(hosts(&stack, A).await, json!({"plainTlsHosts": []}));

    // Stored canonical: lower case, default port dropped, duplicates once.
    let r = put_egress(
        &stack,
        A,
        TOKEN,
        json!({"plainTlsHosts": ["API.Example.com", "other.example:8443", "api.example.com:443"]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let want = json!({"plainTlsHosts": ["api.example.com", "other.example:8443"]});
    assert_eq!(r.json::<Value>().await.expect("json"), want);
    assert_eq!(hosts(&stack, A).await, want);
    assert_eq!(hosts(&stack, B).await, json!({"plainTlsHosts": []}));

    // Any bad entry: 400 naming it, nothing stored.
    for (list, index) in [
        (json!(["ok.example", "*.wild.example"]), 1),
        (json!(["https://x.example/"]), 0),
        (json!(["user@x.example"]), 0),
        (json!(["fine.example", "x.example/path"]), 1),
        (json!(["x.example:0"]), 0),
        (json!(["bad host.example"]), 0),
        (json!([""]), 0),
    ] {
        let r = put_egress(&stack, A, TOKEN, json!({ "plainTlsHosts": list })).await;
        let status = r.status();
        let v: Value = r.json().await.expect("json");
        assert_eq!(
            (status.as_u16(), v["code"].as_str()),
            (400, Some("invalid_host")),
            "{list}: {v}"
        );
        assert_eq!(v["index"], index, "{list}");
    }
    let many: Vec<String> = (0..1001).map(|i| format!("h{i}.example")).collect();
    let r = put_egress(&stack, A, TOKEN, json!({ "plainTlsHosts": many })).await;
    assert_eq!(error_code(r).await, (400, "too_many_hosts".into()));
    let r = put_egress(&stack, A, TOKEN, json!({"hosts": ["x.example"]})).await;
    assert_eq!(error_code(r).await, (400, "invalid_body".into()));
    assert_eq!(hosts(&stack, A).await, want, "refusals stored nothing");

    // Credentials: none is 401; another account's admin is 403; a user without
    // MTLS_MANAGE is 403; one with it may.
    let r = stack
        .client
        .get(egress_url(&stack, A))
        .send()
        .await
        .expect("get");
    assert_eq!(error_code(r).await, (401, "unauthorized".into()));
    stack.add_user(B, "admin-b", "admin-b-password", true);
    let b_admin = stack.login(B, "admin-b", "admin-b-password").await;
    assert_eq!(
        error_code(get_egress(&stack, A, &b_admin).await).await,
        (403, "forbidden_account".into())
    );
    let r = put_egress(
        &stack,
        A,
        &b_admin,
        json!({"plainTlsHosts": ["evil.example"]}),
    )
    .await;
    assert_eq!(error_code(r).await, (403, "forbidden_account".into()));
    for (name, privileges) in [
        ("runtime-only", json!(["MTLS_FORWARD"])),
        ("manager", json!(["MTLS_MANAGE"])),
    ] {
        let r = stack
            .client
            .post(format!("{}/api/account/{A}/users", stack.api))
            .bearer_auth(TOKEN)
            .json(
                &json!({"username": name, "password": "a-long-password", "privileges": privileges}),
            )
            .send()
            .await
            .expect("user");
        assert_eq!(r.status(), 201);
    }
    let runtime_only = stack.login(A, "runtime-only", "a-long-password").await;
    let r = put_egress(&stack, A, &runtime_only, json!({"plainTlsHosts": []})).await;
    assert_eq!(error_code(r).await, (403, "forbidden".into()));
    assert_eq!(hosts(&stack, A).await, want);
    let manager = stack.login(A, "manager", "a-long-password").await;
    let r = put_egress(&stack, A, &manager, json!({"plainTlsHosts": []})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(hosts(&stack, A).await, json!({"plainTlsHosts": []}));
}

fn snapshot_url(stack: &Stack, node: &str, version: &str, wait: u64) -> String {
    format!(
        "{}/v1/runtime/snapshot?node={node}&version={version}&waitSeconds={wait}",
        stack.feed
    )
}

/// The node's snapshot, read with the node's own gateway certificate.
async fn snapshot(stack: &Stack, node: &str, version: &str, wait: u64) -> reqwest::Response {
    stack
        .link_client(Some(stack.gateway_identity(node)))
        .get(snapshot_url(stack, node, version, wait))
        .send()
        .await
        .expect("snapshot")
}

/// Polls until the node's snapshot satisfies `done` (10 s at most) and answers it.
async fn snapshot_until(stack: &Stack, node: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = snapshot(stack, node, "", 0).await;
        assert_eq!(r.status(), 200, "the node's snapshot is served");
        let v: Value = r.json().await.expect("snapshot is JSON");
        if done(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "the snapshot never got there: {}",
            redact(&v)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A snapshot for a failure message: secrets removed.
fn redact(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(keys) = v["appKeys"].as_array_mut() {
        for k in keys {
            k["consumerSecret"] = json!("***");
            k["accessTokenSecret"] = json!("***");
        }
    }
    v
}

fn has(list: &Value, entry: &Value) -> bool {
    list.as_array().is_some_and(|l| {
        l.iter().any(|e| {
            entry
                .as_object()
                .is_some_and(|o| o.iter().all(|(k, x)| &e[k] == x))
        })
    })
}

/// base64url without padding, as JWTs use it.
fn b64url(s: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        b'_' => 63,
        _ => panic!("not base64url: {c}"),
    };
    let (mut out, mut acc, mut bits) = (Vec::new(), 0u32, 0);
    for c in s.bytes() {
        acc = (acc << 6) | u32::from(value(c));
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_snapshot_needs_the_nodes_certificate_and_carries_what_the_gateway_checks() {
    // The allowlisted hosts resolve (to public addresses) in the control plane's own view of
    // /etc/hosts: a host that does not resolve gets no cluster (`target_unresolved`).
    let hosts =
        std::env::temp_dir().join(format!("mtlsgate-hosts-runtime-api-{}", std::process::id()));
    std::fs::write(
        &hosts,
        "127.0.0.1 localhost\n93.184.216.34 fallback.example\n93.184.216.35 other.example\n",
    )
    .expect("hosts file");
    let stack = Stack::start_with(crate::harness::Options {
        hosts_file: Some(hosts),
        ..Default::default()
    })
    .await;
    let node = stack.envoy_node_id().await;
    let url = snapshot_url(&stack, &node, "", 0);

    // No certificate, or one of another CA: the handshake fails, nothing is answered.
    let r = stack.link_client(None).get(&url).send().await;
    assert!(r.is_err(), "served without a certificate: {r:?}");
    let r = stack
        .link_client(Some(stack.foreign_identity(&node)))
        .get(&url)
        .send()
        .await;
    assert!(r.is_err(), "served to another CA's certificate: {r:?}");
    // Gateway A's certificate asking for this node: 403, and nothing of the snapshot.
    let intruder = stack.link_client(Some(stack.gateway_identity("gateway-a")));
    let r = intruder.get(&url).send().await.expect("intruder");
    assert_eq!(error_code(r).await, (403, "forbidden_node".into()));
    // The management API does not serve the snapshot at all, whatever the token.
    let api_url = url.replace(&stack.feed, &stack.api);
    let r = stack
        .client
        .get(&api_url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("api");
    assert_eq!(r.status(), 404);

    // What the gateway checks: an AppKey, a user, the key that signs tokens.
    let key = create_appkey(&stack, A).await;
    let r = stack
        .client
        .post(format!("{}/api/account/{A}/users", stack.api))
        .bearer_auth(TOKEN)
        .json(&json!({"username": "carol", "password": "carol-password-1"}))
        .send()
        .await
        .expect("user");
    assert_eq!(r.status(), 201);
    let user_id = r.json::<Value>().await.expect("json")["id"]
        .as_u64()
        .expect("id");
    let bearer = stack.login(A, "carol", "carol-password-1").await;
    let header: Value =
        serde_json::from_slice(&b64url(bearer.split('.').next().expect("jwt header")))
            .expect("jwt header is JSON");
    let kid = header["kid"].as_str().expect("kid").to_owned();
    // And a host the account allows over plain TLS.
    let r = put_egress(
        &stack,
        A,
        TOKEN,
        json!({"plainTlsHosts": ["fallback.example", "Other.Example:8443"]}),
    )
    .await;
    assert_eq!(r.status(), 200);

    let fallback = json!({"account": A, "host": "fallback.example", "port": 443, "cluster": "tls_fallback.example_443"});
    let other = json!({"account": A, "host": "other.example", "port": 8443, "cluster": "tls_other.example_8443"});
    let snap = snapshot_until(&stack, &node, |v| {
        has(&v["fallback"], &fallback) && has(&v["fallback"], &other)
    })
    .await;
    // A fallback host is served only once Envoy acknowledged its cluster: Envoy has it.
    let clusters = stack.envoy_clusters().await;
    assert!(
        clusters.contains("tls_fallback.example_443::"),
        "{clusters}"
    );
    assert!(clusters.contains("tls_other.example_8443::"), "{clusters}");

    assert!(snap["version"].as_str().is_some_and(|v| !v.is_empty()));
    assert!(
        has(
            &snap["appKeys"],
            &json!({
                "id": key["id"], "account": A,
                "consumerKey": key["consumerKey"], "accessToken": key["accessToken"],
                "consumerSecret": key["consumerSecret"], "accessTokenSecret": key["accessTokenSecret"],
                "privileges": key["privileges"],
            })
        ),
        "the AppKey with its secrets: {}",
        redact(&snap)
    );
    assert!(
        has(&snap["users"], &json!({"account": A, "id": user_id})),
        "{}",
        redact(&snap)
    );
    let token_key = snap["tokenKeys"]
        .as_array()
        .expect("tokenKeys")
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap_or_else(|| panic!("no token key {kid} in {}", redact(&snap)));
    assert_eq!(
        b64url(token_key["publicKey"].as_str().expect("publicKey")).len(),
        32,
        "an Ed25519 public key"
    );
    assert!(snap["fallback"]
        .as_array()
        .expect("fallback")
        .iter()
        .all(|f| f["account"] == A));

    // Unchanged content: the poll is held, then 304.
    let version = snap["version"].as_str().expect("version");
    let r = snapshot(&stack, &node, version, 1).await;
    assert_eq!(r.status(), 304);

    // A deleted user leaves the snapshot.
    let r = stack
        .client
        .delete(format!("{}/api/account/{A}/users/{user_id}", stack.api))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("delete user");
    assert_eq!(r.status(), 200);
    snapshot_until(&stack, &node, |v| {
        !has(&v["users"], &json!({"account": A, "id": user_id}))
    })
    .await;

    // Secrets never reach a log.
    let logs = stack.logs();
    for secret in [&key["consumerSecret"], &key["accessTokenSecret"]] {
        let secret = secret.as_str().expect("secret");
        assert!(!logs.contains(secret), "a secret reached the logs");
    }
    let (_, gateway_key) = stack.gateway_identity(&node);
    let key_body = gateway_key.lines().nth(1).expect("key body");
    assert!(
        !logs.contains(key_body),
        "the gateway's private key reached the logs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_long_poll_is_woken_by_an_appkey_revocation() {
    let stack = Stack::start().await;
    let node = stack.envoy_node_id().await;
    let key = create_appkey(&stack, A).await;
    let ck = key["consumerKey"].clone();
    let snap = snapshot_until(&stack, &node, |v| {
        has(&v["appKeys"], &json!({"consumerKey": ck}))
    })
    .await;
    let version = snap["version"].as_str().expect("version").to_owned();

    let poll = tokio::spawn({
        let client = stack.link_client(Some(stack.gateway_identity(&node)));
        let url = snapshot_url(&stack, &node, &version, 30);
        async move {
            let r = client.get(url).send().await.expect("poll");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !poll.is_finished(),
        "the poll is held while nothing changes"
    );

    let r = stack
        .client
        .delete(format!(
            "{}/api/account/{A}/appkeys/{}",
            stack.api, key["id"]
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("revoke");
    assert_eq!(r.status(), 200);
    let revoked = Instant::now();
    let (status, v) = tokio::time::timeout(Duration::from_secs(2), poll)
        .await
        .expect("the poll is answered within 2 s of the revocation")
        .expect("poll task");
    assert_eq!(status, 200, "{}", redact(&v));
    assert!(revoked.elapsed() < Duration::from_secs(2));
    assert_ne!(v["version"].as_str(), Some(version.as_str()));
    assert!(
        !has(&v["appKeys"], &json!({"consumerKey": key["consumerKey"]})),
        "the revoked AppKey is gone: {}",
        redact(&v)
    );
}
