//! Finding 12: per-account quotas. One account at its limit is refused with 422
//! `quota_exceeded` naming the quota, nothing is written, and another account is unaffected.

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use super::quotas::Quotas;
use super::tests::{call, env, DEV};
use super::AppState;

async fn live(s: &AppState, table: &str, account: &str) -> i64 {
    sqlx::query_scalar(
        s.store
            .sql(&format!("SELECT COUNT(*) FROM {table} WHERE account = ?")),
    )
    .bind(account)
    .fetch_one(s.store.pool())
    .await
    .unwrap()
}

fn refused(st: StatusCode, body: &Value, quota: &str, limit: u64) {
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "quota_exceeded", "{body}");
    assert_eq!(body["quota"], quota);
    assert_eq!(body["limit"], limit);
    assert!(body["requestId"].is_string());
}

#[tokio::test]
async fn an_account_at_its_quota_is_refused_and_others_are_not() {
    let env = env().await;
    let mut s = env.state.clone();
    s.max_upload_bytes = 64 * 1024;
    s.quotas = Quotas {
        mappings: 2,
        certificates: 2,
        credentials: 1,
        appkeys: 2,
    };

    // AppKeys: two, then refused; a revoked one frees its place.
    let keys = "/api/account/a/appkeys";
    let (st, first) = call(&s, Method::POST, keys, Some(DEV), None).await;
    assert_eq!(st, StatusCode::CREATED);
    let (st, _) = call(&s, Method::POST, keys, Some(DEV), None).await;
    assert_eq!(st, StatusCode::CREATED);
    let (st, body) = call(&s, Method::POST, keys, Some(DEV), None).await;
    refused(st, &body, "appkeys", 2);
    assert_eq!(live(&s, "appkeys", "a").await, 2, "nothing written");
    let (st, _) = call(&s, Method::POST, "/api/account/b/appkeys", Some(DEV), None).await;
    assert_eq!(st, StatusCode::CREATED, "another account is not affected");
    let id = first["id"].as_i64().unwrap();
    let (st, _) = call(&s, Method::DELETE, &format!("{keys}/{id}"), Some(DEV), None).await;
    assert!(st.is_success());
    let (st, _) = call(&s, Method::POST, keys, Some(DEV), None).await;
    assert_eq!(st, StatusCode::CREATED, "a revoked AppKey does not count");

    // Credentials: one, then refused.
    let creds = "/api/account/a/credentials";
    let basic = |name: &str| json!({"name": name, "type": "basicAuthentication", "username": "svc", "password": "Quota-Pass-1"});
    let (st, _) = call(&s, Method::POST, creds, Some(DEV), Some(basic("one"))).await;
    assert_eq!(st, StatusCode::CREATED);
    let (st, body) = call(&s, Method::POST, creds, Some(DEV), Some(basic("two"))).await;
    refused(st, &body, "credentials", 1);
    assert_eq!(live(&s, "credentials", "a").await, 1);

    // Mappings: a batch that would overshoot is refused whole.
    let (st, cert) = call(
        &s,
        Method::POST,
        "/mtls/account/a/certificates",
        Some(DEV),
        Some(json!([super::handler_tests::json_certificate("q")])),
    )
    .await;
    assert!(st.is_success(), "{cert}");
    let cert_id = cert["successfulySavedCertificates"][0]["id"]
        .as_i64()
        .unwrap();
    let mapping = |i: usize| {
        json!({"certificationId": cert_id.to_string(), "serviceId": "1", "enable": true,
               "url": format!("https://93.184.216.{i}/x"), "siteId": "a", "name": format!("m{i}"),
               "deleted": false})
    };
    let maps = "/api/account/a/configuration/ac-common/mtls?v=3.0";
    let (st, body) = call(
        &s,
        Method::POST,
        maps,
        Some(DEV),
        Some(json!([mapping(1), mapping(2), mapping(3)])),
    )
    .await;
    refused(st, &body, "mappings", 2);
    assert_eq!(live(&s, "mappings", "a").await, 0, "all or nothing");
    let (st, body) = call(
        &s,
        Method::POST,
        maps,
        Some(DEV),
        Some(json!([mapping(1), mapping(2)])),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{body}");

    // Certificates: the second fits, the third is refused.
    let certs = "/mtls/account/a/certificates";
    let item = |n: &str| Some(json!([super::handler_tests::json_certificate(n)]));
    let (st, _) = call(&s, Method::POST, certs, Some(DEV), item("q2")).await;
    assert!(st.is_success());
    let (st, body) = call(&s, Method::POST, certs, Some(DEV), item("q3")).await;
    refused(st, &body, "certificates", 2);
    assert_eq!(live(&s, "certificates", "a").await, 2);
}
