//! The router in-process (no listener, no Vault traffic): the egress allowlist API and the
//! runtime snapshot's authentication, content and wake-ups.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use mtlsgate_filter::snapshot::Snapshot;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::*;
use crate::appkeys::AppKey;
use crate::secret_store::MemoryStore;
use crate::store::AppKeyRow;

pub(crate) const DEV: &str = "dev-admin";
/// The operator's credential of every test control plane.
pub(super) const OPERATOR: &str = "operator-token-of-the-tests-0123456789";
const NODE: &str = "node-1";

pub(crate) struct Env {
    pub(crate) state: AppState,
    dir: std::path::PathBuf,
    /// The secret store behind `state`, to look into or to take down.
    pub(super) memory: Arc<MemoryStore>,
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A control plane built as `serve` builds it, on an empty database and an in-memory
/// secret store, the reconciler running, and node `NODE` connected over "ADS".
/// The default address policy: nothing internal allowed.
pub(crate) fn dns() -> crate::guarded_dns::GuardedDns {
    crate::guarded_dns::GuardedDns::new(Default::default(), Duration::from_secs(1))
}

pub(super) async fn env() -> Env {
    let (dir, store) = new_database().await;
    env_on(dir, store, Arc::new(MemoryStore::new())).await
}

/// An empty database in a directory of its own.
async fn new_database() -> (std::path::PathBuf, crate::store::Store) {
    let dir = std::env::temp_dir().join(format!(
        "mtlsgate-api-test-{}",
        hex::encode(crate::random::bytes::<8>())
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let store = crate::store::contract::test_store(&dir).await;
    (dir, store)
}

/// [`env`] on another secret store (`memory` is then only a bystander).
pub(crate) async fn env_with(memory: Arc<MemoryStore>, secrets: Secrets) -> Env {
    let (dir, store) = new_database().await;
    env_on_secrets(dir, store, memory, secrets).await
}

/// [`env`] on a given database and secret store (two of them on one database and one secret
/// store are two control planes).
pub(super) async fn env_on(
    dir: std::path::PathBuf,
    store: crate::store::Store,
    memory: Arc<MemoryStore>,
) -> Env {
    let secrets = Secrets::new(memory.clone());
    env_on_secrets(dir, store, memory, secrets).await
}

async fn env_on_secrets(
    dir: std::path::PathBuf,
    store: crate::store::Store,
    memory: Arc<MemoryStore>,
    secrets: Secrets,
) -> Env {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("warn,mtlsgate=debug")
        .try_init();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let state = AppState::start(
        store,
        secrets,
        Settings {
            dev_admin_token: Some(Secret::new(DEV)),
            operator_token: Some(Secret::new(OPERATOR)),
            api_scheme: super::auth::Scheme::Http,
            quotas: super::quotas::Quotas::default(),
            domains: csds::Domains {
                gateway: "gw".into(),
                api: "api".into(),
            },
            keytool: None,
            max_upload_bytes: 1024,
            session_ttl_secs: 3600,
            watch_period: Duration::from_secs(3600),
            change_poll: Duration::from_millis(50),
            oauth2_client: crate::oauth2::Client::new(None, Duration::from_secs(1), dns()).unwrap(),
            credential_tokens: crate::credential_tokens::Settings {
                redirect_uri: "http://api/api/oauth2/callback".into(),
                messaging_token_url: None,
            },
            dns: dns(),
            dns_refresh: Duration::from_secs(3600),
        },
    )
    .await
    .unwrap();
    state.acks.connected(NODE);
    state.acks.acked(NODE, crate::xds::CLUSTER_TYPE, &[]);
    Env { state, dir, memory }
}

pub(crate) async fn call(
    state: &AppState,
    method: Method,
    uri: &str,
    bearer: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(b) = bearer {
        req = req.header("authorization", format!("Bearer {b}"));
    }
    let req = match body {
        Some(v) => req
            .header("content-type", "application/json")
            .body(Body::from(v.to_string())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    send(state, req).await
}

/// Sends a request through the router; answers its status and JSON body (`Null` if empty).
pub(super) async fn send(state: &AppState, req: Request<Body>) -> (StatusCode, Value) {
    answer(router(state.clone()), req).await
}

/// What `app` answers `req`: its status and JSON body (`Null` if empty).
async fn answer(app: Router, req: Request<Body>) -> (StatusCode, Value) {
    let resp = app.oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, v)
}

fn egress_uri(account: &str) -> String {
    format!("/api/account/{account}/egress")
}

/// A GET on the feed's router, as the feed listener hands it over: `peer` is what the TLS
/// client's certificate proved (`None`: no extension at all).
async fn feed(state: &AppState, uri: &str, peer: Option<Option<&str>>) -> (StatusCode, Value) {
    let mut req = Request::builder().method(Method::GET).uri(uri);
    if let Some(node) = peer {
        req = req.extension(PeerNode(node.map(str::to_owned)));
    }
    answer(feed_router(state.clone()), req.body(Body::empty()).unwrap()).await
}

async fn snapshot(state: &AppState, version: &str, wait: u64) -> (StatusCode, Value) {
    feed(
        state,
        &format!("/v1/runtime/snapshot?node={NODE}&version={version}&waitSeconds={wait}"),
        Some(Some(NODE)),
    )
    .await
}

#[tokio::test]
async fn egress_lists_are_validated_stored_and_replaced() {
    let env = env().await;
    let s = &env.state;
    let (st, v) = call(s, Method::GET, &egress_uri("a"), Some(DEV), None).await;
    assert_eq!((st, v), (StatusCode::OK, json!({"plainTlsHosts": []})));

    let body = json!({"plainTlsHosts": ["API.example.com", "other.example:8443", "api.example.com:443", "[2606:4700::1111]:9443"]});
    let (st, v) = call(s, Method::PUT, &egress_uri("a"), Some(DEV), Some(body)).await;
    let want = json!({"plainTlsHosts": ["api.example.com", "other.example:8443", "[2606:4700::1111]:9443"]});
    assert_eq!((st, &v), (StatusCode::OK, &want));
    let (_, v) = call(s, Method::GET, &egress_uri("a"), Some(DEV), None).await;
    assert_eq!(v, want);
    let (_, v) = call(s, Method::GET, &egress_uri("b"), Some(DEV), None).await;
    assert_eq!(v, json!({"plainTlsHosts": []}), "accounts are apart");

    // A bad entry anywhere: 400 with its index, nothing stored.
    for (bad, index) in [
        (json!(["ok.example", "*.example.com"]), 1),
        (json!(["https://x.example"]), 0),
        (json!(["a.example", "b.example", "x.example/path"]), 2),
        (json!(["user@x.example"]), 0),
        (json!([""]), 0),
    ] {
        let (st, v) = call(
            s,
            Method::PUT,
            &egress_uri("a"),
            Some(DEV),
            Some(json!({ "plainTlsHosts": bad })),
        )
        .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(v["code"], "invalid_host");
        assert_eq!(v["index"], index);
    }
    // An internal address: refused by the address policy, nothing stored.
    for (bad, index) in [
        (json!(["ok.example", "[::1]:9443"]), 1),
        (json!(["localhost:8200"]), 0),
        (json!(["169.254.169.254"]), 0),
    ] {
        let (st, v) = call(
            s,
            Method::PUT,
            &egress_uri("a"),
            Some(DEV),
            Some(json!({ "plainTlsHosts": bad })),
        )
        .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(v["code"], "target_not_allowed");
        assert_eq!(v["index"], index);
    }
    let too_many: Vec<String> = (0..=1000).map(|i| format!("h{i}.example")).collect();
    let (st, v) = call(
        s,
        Method::PUT,
        &egress_uri("a"),
        Some(DEV),
        Some(json!({ "plainTlsHosts": too_many })),
    )
    .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("too_many_hosts"))
    );
    let (st, v) = call(s, Method::PUT, &egress_uri("a"), Some(DEV), Some(json!({}))).await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_body"))
    );
    let (_, v) = call(s, Method::GET, &egress_uri("a"), Some(DEV), None).await;
    assert_eq!(v, want, "refusals stored nothing");

    // Credentials: none is 401; another account's token is 403.
    let (st, _) = call(s, Method::GET, &egress_uri("a"), None, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);

    // Replacing with an empty list clears it.
    let (st, v) = call(
        s,
        Method::PUT,
        &egress_uri("a"),
        Some(DEV),
        Some(json!({"plainTlsHosts": []})),
    )
    .await;
    assert_eq!((st, v), (StatusCode::OK, json!({"plainTlsHosts": []})));
}

#[tokio::test]
async fn egress_needs_manage_rights_in_the_same_account() {
    let env = env().await;
    let s = &env.state;
    let admin_b = s
        .store
        .insert_user("b", "admin", "hash", true, &[])
        .await
        .unwrap()
        .unwrap();
    let plain_a = s
        .store
        .insert_user("a", "plain", "hash", false, &["MTLS_FORWARD".into()])
        .await
        .unwrap()
        .unwrap();
    let manager_a = s
        .store
        .insert_user("a", "manager", "hash", false, &["MTLS_MANAGE".into()])
        .await
        .unwrap()
        .unwrap();
    let body = json!({"plainTlsHosts": ["x.example"]});
    let bearer = s.login_tokens.issue(&admin_b);
    for m in [Method::GET, Method::PUT] {
        let (st, v) = call(s, m, &egress_uri("a"), Some(&bearer), Some(body.clone())).await;
        assert_eq!(
            (st, v["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("forbidden_account"))
        );
    }
    let bearer = s.login_tokens.issue(&plain_a);
    let (st, v) = call(
        s,
        Method::PUT,
        &egress_uri("a"),
        Some(&bearer),
        Some(body.clone()),
    )
    .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    let bearer = s.login_tokens.issue(&manager_a);
    let (st, _) = call(
        s,
        Method::PUT,
        &egress_uri("a"),
        Some(&bearer),
        Some(body.clone()),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let (_, v) = call(s, Method::GET, &egress_uri("a"), Some(DEV), None).await;
    assert_eq!(v, body);
}

#[tokio::test]
async fn the_snapshot_is_served_only_to_the_node_its_certificate_names() {
    let env = env().await;
    let uri = format!("/v1/runtime/snapshot?node={NODE}&waitSeconds=0");
    // No certificate, or one that names no node: nothing, not even whether the query is good.
    for peer in [None, Some(None)] {
        let (st, v) = feed(&env.state, &uri, peer).await;
        assert_eq!(
            (st, v["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("unauthorized"))
        );
        let (st, _) = feed(&env.state, "/v1/runtime/snapshot", peer).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
    }
    // Another node's certificate.
    let (st, v) = feed(&env.state, &uri, Some(Some("node-2"))).await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden_node"))
    );
    // The node's own: served; a bad query is reported to it.
    let (st, _) = feed(&env.state, &uri, Some(Some(NODE))).await;
    assert_eq!(st, StatusCode::OK);
    let (st, v) = feed(&env.state, "/v1/runtime/snapshot", Some(Some(NODE))).await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_query"))
    );
    // The management API does not serve it at all, whatever the credential.
    for bearer in [None, Some(DEV)] {
        let (st, _) = call(&env.state, Method::GET, &uri, bearer, None).await;
        assert_eq!(st, StatusCode::NOT_FOUND);
    }
}

fn appkey(id: i64) -> AppKey {
    AppKey {
        row: AppKeyRow {
            id,
            account: "a".into(),
            consumer_key: format!("ck{id}"),
            access_token: format!("a-at{id}"),
            privileges: vec!["MTLS_FORWARD".into()],
            created_by: "test".into(),
            created_at: 0,
            revoked_at: None,
        },
        consumer_secret: Secret::new(format!("cs{id}")),
        token_secret: Secret::new(format!("ts{id}")),
    }
}

/// AppKey `id` of account `a` (the `id`th made in this database), made as the API makes it:
/// its row, its secrets, then the directory (the change feed keeps the directory in line
/// with the store, so one in the directory alone would be dropped).
async fn add_appkey(s: &AppState, id: i64) {
    let key = appkey(id);
    let _w = s.store.write_lock().await;
    let mut tx = s.store.begin_write("a").await.unwrap();
    let row = crate::store::Store::insert_appkey(
        &mut tx,
        "a",
        &key.row.consumer_key,
        &key.row.access_token,
        &key.row.privileges,
        "test",
    )
    .await
    .unwrap();
    assert_eq!(row.id, id);
    s.secrets
        .put_appkey("a", id, &key.consumer_secret, &key.token_secret)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    s.appkeys.insert(key);
}

/// Revokes AppKey `id` of account `a` as the API does.
async fn revoke_appkey(s: &AppState, id: i64) {
    let _w = s.store.write_lock().await;
    let mut tx = s.store.begin_write("a").await.unwrap();
    assert!(crate::store::Store::revoke_appkey(&mut tx, "a", id)
        .await
        .unwrap());
    tx.commit().await.unwrap();
    s.appkeys.remove("a", id);
}

/// Finding 9: the whole snapshot, revocations included, used to wait for the node's ADS
/// stream. A gateway whose stream is down but whose filter runs a snapshot gets revocations
/// at once (gated on what its Envoy last acknowledged); a new filter still waits for ADS.
#[tokio::test]
async fn revocations_reach_a_gateway_whose_ads_stream_is_down() {
    let env = env().await;
    let s = &env.state;
    add_appkey(s, 1).await;
    s.reconciler.rebuild(false).await.unwrap();
    let (st, v) = snapshot(s, "", 0).await;
    assert_eq!(st, StatusCode::OK);
    let first: Snapshot = serde_json::from_value(v).unwrap();
    assert_eq!(first.app_keys.len(), 1);

    s.acks.disconnected(NODE);
    assert!(s.acks.ready(NODE).is_none(), "the stream is down");
    let poll = tokio::spawn({
        let s = s.clone();
        let v = first.version.clone();
        async move { snapshot(&s, &v, 10).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    revoke_appkey(s, 1).await;
    s.reconciler.kick();
    let (st, v) = tokio::time::timeout(Duration::from_secs(2), poll)
        .await
        .expect("the revocation was held back while ADS was down")
        .unwrap();
    assert_eq!(st, StatusCode::OK);
    let revoked: Snapshot = serde_json::from_value(v).unwrap();
    assert!(revoked.app_keys.is_empty(), "the revoked AppKey is gone");

    // A filter that has no snapshot yet (a new Envoy with this node id) waits for its
    // node's stream: it would otherwise see mappings before their clusters.
    let (st, _) = snapshot(s, "", 1).await;
    assert_eq!(st, StatusCode::NOT_MODIFIED);
    // A node that never acknowledged anything gets nothing either.
    s.acks.disconnected("other");
    let (st, _) = feed(
        s,
        "/v1/runtime/snapshot?node=other&version=v1&waitSeconds=1",
        Some(Some("other")),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn the_snapshot_carries_credentials_and_long_polls_wake_on_every_change() {
    let env = env().await;
    let s = &env.state;
    add_appkey(s, 1).await;
    let user = s
        .store
        .insert_user("a", "u", "hash", false, &[])
        .await
        .unwrap()
        .unwrap();
    // Rebuilt here rather than kicked: the test then knows the state is published.
    s.reconciler.rebuild(false).await.unwrap();

    let (st, v) = snapshot(s, "", 0).await;
    assert_eq!(st, StatusCode::OK);
    let snap: Snapshot = serde_json::from_value(v).unwrap();
    assert_eq!(snap.app_keys.len(), 1);
    assert_eq!(snap.app_keys[0].consumer_key, "ck1");
    assert_eq!(snap.app_keys[0].consumer_secret, "cs1");
    assert_eq!(snap.app_keys[0].access_token_secret, "ts1");
    assert_eq!(snap.users.len(), 1);
    assert_eq!(snap.users[0].id, user.id as u64);
    let (kid, key) = &s.login_tokens.public_keys()[0];
    assert_eq!(snap.token_keys[0].kid, *kid);
    use base64::Engine;
    assert_eq!(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&snap.token_keys[0].public_key)
            .unwrap(),
        key.to_vec()
    );
    // Unchanged: the poll waits, then 304.
    let (st, _) = snapshot(s, &snap.version, 1).await;
    assert_eq!(st, StatusCode::NOT_MODIFIED);

    // Each kind of change wakes a waiting poll with a new version, within a second.
    let mut version = snap.version.clone();
    let changes = [
        "AppKey revoked",
        "AppKey created",
        "user created",
        "allowlist changed",
        "allowlist emptied",
    ];
    for what in changes {
        let poll = tokio::spawn({
            let s = s.clone();
            let v = version.clone();
            async move { snapshot(&s, &v, 10).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !poll.is_finished(),
            "{what}: the poll must wait for a change"
        );
        change(s, what).await;
        let (st, v) = tokio::time::timeout(Duration::from_secs(1), poll)
            .await
            .unwrap_or_else(|_| panic!("{what}: the poll was not woken within a second"))
            .unwrap();
        assert_eq!(st, StatusCode::OK, "{what}");
        let snap: Snapshot = serde_json::from_value(v).unwrap();
        assert_ne!(snap.version, version, "{what}");
        version = snap.version;
        match what {
            "AppKey revoked" => assert!(snap.app_keys.is_empty()),
            "AppKey created" => assert_eq!(snap.app_keys[0].consumer_key, "ck2"),
            "user created" => assert_eq!(snap.users.len(), 2),
            "allowlist changed" => {
                let got: Vec<_> = snap
                    .fallback
                    .iter()
                    .map(|f| (f.account.as_str(), f.host.as_str(), f.port))
                    .collect();
                assert_eq!(got, [("a", "93.184.216.34", 443)]);
            }
            // Withdrawn at once, whatever the node acknowledged.
            "allowlist emptied" => assert!(snap.fallback.is_empty()),
            _ => {}
        }
    }
}

/// Makes one change of the kind named, as the API (or Envoy) would.
async fn change(s: &AppState, what: &str) {
    match what {
        "AppKey revoked" => {
            revoke_appkey(s, 1).await;
            s.reconciler.kick();
        }
        "AppKey created" => {
            add_appkey(s, 2).await;
            s.reconciler.kick();
        }
        "user created" => {
            let body = json!({"username": "new", "password": "a-long-password"});
            let (st, _) = call(
                s,
                Method::POST,
                "/api/account/a/users",
                Some(DEV),
                Some(body),
            )
            .await;
            assert_eq!(st, StatusCode::CREATED);
        }
        "allowlist changed" => {
            // A public IP literal: no name lookup in a unit test.
            let body = json!({"plainTlsHosts": ["93.184.216.34"]});
            let (st, _) = call(s, Method::PUT, &egress_uri("a"), Some(DEV), Some(body)).await;
            assert_eq!(st, StatusCode::OK);
            // The node sees the host only once it has the cluster: ack it, as Envoy does
            // when CDS pushes it.
            let name = crate::desired::tls_cluster_name("93.184.216.34", 443);
            let mut rx = s.reconciler.subscribe();
            let pushed = rx
                .wait_for(|d| d.clusters.contains_key(&name))
                .await
                .map(|d| d.clone())
                .unwrap();
            assert!(
                pushed.clusters[&name].secret.is_none(),
                "plain TLS: no client certificate"
            );
            s.acks.acked(NODE, crate::xds::CLUSTER_TYPE, &[name]);
        }
        "allowlist emptied" => {
            let body = json!({"plainTlsHosts": []});
            let (st, _) = call(s, Method::PUT, &egress_uri("a"), Some(DEV), Some(body)).await;
            assert_eq!(st, StatusCode::OK);
        }
        other => panic!("unknown change {other}"),
    }
}

#[tokio::test]
async fn login_publishes_a_user_added_by_another_process_before_answering() {
    let env = env().await;
    let s = &env.state;
    let hash = crate::identity::hash_password(&Secret::new("a-long-password")).unwrap();
    // Written straight to the database, as `mtlsgate user add` does: nobody kicks.
    let user = s
        .store
        .insert_user("a", "cli", &hash, true, &[])
        .await
        .unwrap()
        .unwrap();
    let listed = |s: &AppState| {
        s.reconciler
            .subscribe()
            .borrow()
            .callers
            .users
            .iter()
            .any(|u| u.id == user.id as u64)
    };
    assert!(!listed(s));
    let (st, _) = call(
        s,
        Method::POST,
        "/api/account/a/login",
        None,
        Some(json!({"username": "cli", "password": "a-long-password"})),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert!(listed(s), "listed before the token was handed out");
}

/// Every documented operation answers one of its documented statuses, with and without
/// credentials (the e2e suite does the same against a real control plane).
#[tokio::test]
async fn every_operation_answers_a_documented_status() {
    let env = env().await;
    let mut checked = 0;
    for op in openapi::OPERATIONS {
        let path = openapi::full_path(op.path)
            .replace("{accountId}", "4004")
            .replace("{id}", "1")
            .replace("{serviceName}", "mtlsGateway");
        let uri = path;
        for bearer in [None, Some(DEV), Some("not-a-token")] {
            let mut req = Request::builder()
                .method(op.method)
                .uri(&uri)
                .header("host", "localhost");
            if let Some(b) = bearer {
                req = req.header("authorization", format!("Bearer {b}"));
            }
            let req = match op.body {
                openapi::Body::None => req.body(Body::empty()),
                openapi::Body::Json(_) | openapi::Body::OptionalJson(_) => req
                    .header("content-type", "application/json")
                    .body(Body::from("{}")),
                openapi::Body::Multipart(_) => req
                    .header("content-type", "multipart/form-data; boundary=b")
                    .body(Body::from(
                        "--b\r\nContent-Disposition: form-data; name=\"unrelated\"\r\n\r\nx\r\n--b--\r\n",
                    )),
            }
            .unwrap();
            let status = router(env.state.clone())
                .oneshot(req)
                .await
                .unwrap()
                .status()
                .as_u16();
            assert!(
                op.statuses.contains(&status),
                "{} {} ({bearer:?}) answered {status}, documented {:?}",
                op.method,
                op.path,
                op.statuses
            );
            checked += 1;
        }
        if op.auth != openapi::Auth::None {
            assert!(op.statuses.contains(&401), "{} {}", op.method, op.path);
        }
    }
    assert_eq!(checked, openapi::OPERATIONS.len() * 3);
}

// ---------------------------------------------------------------------------------------
// Two control planes on one database
// ---------------------------------------------------------------------------------------

/// Waits (at most `within`) until `b`'s gateway view satisfies `done`.
async fn view_of_b_until(
    b: &AppState,
    within: Duration,
    done: impl Fn(&crate::desired::Desired) -> bool,
) -> bool {
    let mut rx = b.reconciler.subscribe();
    tokio::time::timeout(within, async {
        loop {
            if done(&rx.borrow_and_update()) {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_one_control_plane_reaches_the_others_gateways_within_a_second() {
    let dir = std::env::temp_dir().join(format!(
        "mtlsgate-api-replicas-{}",
        hex::encode(crate::random::bytes::<8>())
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let (sa, sb) = crate::store::contract::test_store_pair(&dir).await;
    let memory = Arc::new(MemoryStore::new());
    let a = env_on(dir.clone(), sa, memory.clone()).await;
    let b = env_on(dir.clone(), sb, memory).await;

    // An AppKey created through A: B's gateways get it (with its secrets) within a second,
    // though nothing on B was called.
    let (st, created) = call(
        &a.state,
        Method::POST,
        "/api/account/a/appkeys",
        Some(DEV),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{created}");
    let id = created["id"].as_u64().unwrap();
    let secret = created["consumerSecret"].as_str().unwrap().to_owned();
    let has_key = |d: &crate::desired::Desired| {
        d.callers
            .app_keys
            .iter()
            .any(|k| k.id == id && k.consumer_secret == secret)
    };
    assert!(
        view_of_b_until(&b.state, Duration::from_secs(1), has_key).await,
        "B's gateways did not get A's new AppKey within a second"
    );
    // B checks its signatures too (its API's own directory).
    let key = b.state.appkeys.all();
    assert!(
        key.iter().any(|k| k.row.id as u64 == id),
        "not in B's directory"
    );

    // Revoked through A: gone from B's gateways within a second.
    let (st, v) = call(
        &a.state,
        Method::DELETE,
        &format!("/api/account/a/appkeys/{id}"),
        Some(DEV),
        None,
    )
    .await;
    assert!(st.is_success(), "{st} {v}");
    assert!(
        view_of_b_until(&b.state, Duration::from_secs(1), |d| !has_key(d)).await,
        "B's gateways still accept the AppKey A revoked"
    );
    assert!(b.state.appkeys.all().iter().all(|k| k.row.id as u64 != id));

    // Another kind of change (read at every rebuild, not kept in memory): an egress host.
    let body = json!({"plainTlsHosts": ["partner.example"]});
    let (st, v) = call(
        &a.state,
        Method::PUT,
        &egress_uri("a"),
        Some(DEV),
        Some(body),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(
        view_of_b_until(&b.state, Duration::from_secs(1), |d| d
            .fallback
            .iter()
            .any(|f| f.account == "a"))
        .await,
        "B's gateways did not get A's egress host within a second"
    );
}

/// A gateway's ADS stream on one control plane, its snapshot poll on another: the poll
/// answers from the acknowledgements the first recorded in the database, and only once
/// there are some (a mapping is never shown before its cluster).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_on_another_control_plane_than_the_ads_stream_sees_the_streams_acknowledgements() {
    let dir = std::env::temp_dir().join(format!(
        "mtlsgate-api-shared-acks-{}",
        hex::encode(crate::random::bytes::<8>())
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let (sa, sb) = crate::store::contract::test_store_pair(&dir).await;
    let memory = Arc::new(MemoryStore::new());
    let a = env_on(dir.clone(), sa, memory.clone()).await;
    let b = env_on(dir.clone(), sb, memory).await;
    const GW: &str = "gw-elsewhere";
    let poll = |s: &AppState, wait: u64| {
        let s = s.clone();
        async move {
            feed(
                &s,
                &format!("/v1/runtime/snapshot?node={GW}&version=&waitSeconds={wait}"),
                Some(Some(GW)),
            )
            .await
        }
    };
    // A public IP literal: no name lookup in a unit test.
    let body = json!({"plainTlsHosts": ["93.184.216.34"]});
    let (st, v) = call(
        &a.state,
        Method::PUT,
        &egress_uri("a"),
        Some(DEV),
        Some(body),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let name = crate::desired::tls_cluster_name("93.184.216.34", 443);
    let mut rx = b.state.reconciler.subscribe();
    tokio::time::timeout(
        Duration::from_secs(2),
        rx.wait_for(|d| d.clusters.contains_key(&name)),
    )
    .await
    .expect("B built the host's cluster")
    .unwrap();
    // Nobody acknowledged anything for the node: B's poll waits, and answers nothing.
    assert_eq!(poll(&b.state, 1).await.0, StatusCode::NOT_MODIFIED);

    // The node's ADS stream is on A and acknowledges the cluster: B's poll answers.
    a.state.acks.connected(GW);
    a.state
        .acks
        .acked(GW, crate::xds::CLUSTER_TYPE, std::slice::from_ref(&name));
    let started = std::time::Instant::now();
    let (st, v) = poll(&b.state, 5).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let snap: Snapshot = serde_json::from_value(v).unwrap();
    let hosts: Vec<&str> = snap.fallback.iter().map(|f| f.host.as_str()).collect();
    assert_eq!(hosts, ["93.184.216.34"]);

    // The stream closes: a new filter polling B waits again for a stream somewhere.
    a.state.acks.disconnected(GW);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(poll(&b.state, 1).await.0, StatusCode::NOT_MODIFIED);
}
