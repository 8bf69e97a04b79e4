//! Login throttling (issue 11, finding 7), in-process: failures counted per (account, user
//! name) and per client address in the database, a lock before any hash is computed.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::tests::env;
use super::AppState;
use crate::identity::LoginPolicy;
use crate::secret::Secret;

/// Logs in from `from` (the TCP peer, as `serve` records it); answers the status, the JSON
/// body and `Retry-After`.
async fn login(
    state: &AppState,
    account: &str,
    user: &str,
    password: &str,
    from: &str,
) -> (StatusCode, Value, Option<String>) {
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("/api/account/{account}/login?v=1.3"))
        .header("content-type", "application/json")
        .extension(ConnectInfo(from.parse::<SocketAddr>().unwrap()))
        .body(Body::from(
            json!({"username": user, "password": password}).to_string(),
        ))
        .unwrap();
    let resp = super::router(state.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, v, retry)
}

async fn add_user(state: &AppState, account: &str, user: &str, password: &str) {
    let hash = crate::identity::hash_password(&Secret::new(password)).unwrap();
    state
        .store
        .insert_user(account, user, &hash, true, &[])
        .await
        .unwrap()
        .unwrap();
}

/// The `locked_until` the database holds for a scope (0: counted but not locked; `None`: no
/// failure counted).
async fn locked_until(state: &AppState, scope: &str) -> Option<i64> {
    sqlx::query_scalar(
        state
            .store
            .sql("SELECT locked_until FROM login_failures WHERE scope = ?"),
    )
    .bind(scope)
    .fetch_optional(state.store.pool())
    .await
    .unwrap()
}

/// Locks a scope for ten minutes, as many failures would (the real schedule starts at one
/// second, too short for a test to rely on whatever the machine's speed).
async fn lock_long(state: &AppState, scope: &str) {
    state
        .store
        .login_failed(scope, crate::clock::now(), LoginPolicy::WINDOW_SECS, |_| {
            600
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn a_user_is_locked_after_its_free_failures_even_for_the_right_password() {
    let env = env().await;
    let s = &env.state;
    add_user(s, "a", "alice", "alice-password-1").await;
    let scope = LoginPolicy::user_scope("a", "alice");
    for i in 0..LoginPolicy::USER_FREE {
        let (st, v, _) = login(s, "a", "alice", "wrong", "10.0.0.1:1000").await;
        assert_eq!(
            (st, v["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("invalid_credentials")),
            "try {i}"
        );
    }
    assert_eq!(
        locked_until(s, &scope).await,
        Some(0),
        "free tries lock nothing"
    );
    // The next failure locks the name.
    let (st, _, _) = login(s, "a", "alice", "wrong", "10.0.0.1:1000").await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert!(locked_until(s, &scope).await.unwrap() > 0);
    // While locked: refused before any hash, whatever the password and the address.
    lock_long(s, &scope).await;
    let (st, v, retry) = login(s, "a", "alice", "alice-password-1", "10.9.9.9:1000").await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("too_many_attempts"))
    );
    let retry: u64 = retry.unwrap().parse().unwrap();
    assert!((590..=600).contains(&retry), "{retry}");
    // Another user of the same account, and the same name in another account: unaffected.
    add_user(s, "a", "bob", "bob-password-12").await;
    add_user(s, "b", "alice", "alice-password-2").await;
    assert_eq!(
        login(s, "a", "bob", "bob-password-12", "10.0.0.1:1000")
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        login(s, "b", "alice", "alice-password-2", "10.0.0.1:1000")
            .await
            .0,
        StatusCode::OK
    );
    // Once the lock has passed, the right password works and clears the count.
    sqlx::query("UPDATE login_failures SET locked_until = 0")
        .execute(s.store.pool())
        .await
        .unwrap();
    assert_eq!(
        login(s, "a", "alice", "alice-password-1", "10.0.0.1:1000")
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(locked_until(s, &scope).await, None);
}

#[tokio::test]
async fn unknown_names_are_counted_like_real_ones() {
    let env = env().await;
    let s = &env.state;
    // A lock must not tell which names exist: a name nobody has locks the same way.
    for _ in 0..=LoginPolicy::USER_FREE {
        assert_eq!(
            login(s, "a", "nobody", "x", "10.0.0.2:1").await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    let scope = LoginPolicy::user_scope("a", "nobody");
    assert!(locked_until(s, &scope).await.unwrap() > 0);
    lock_long(s, &scope).await;
    let (st, v, _) = login(s, "a", "nobody", "x", "10.0.0.2:1").await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("too_many_attempts"))
    );
    // An absurdly long name is counted too, without being stored as typed.
    let long = "n".repeat(5000);
    assert_eq!(
        login(s, "a", &long, "x", "10.0.0.3:1").await.0,
        StatusCode::UNAUTHORIZED
    );
    let stored: Vec<String> = sqlx::query_scalar("SELECT scope FROM login_failures")
        .fetch_all(s.store.pool())
        .await
        .unwrap();
    assert!(stored.iter().all(|scope| scope.len() < 80), "{stored:?}");
    assert!(!stored
        .iter()
        .any(|scope| scope.contains("nobody") || scope.contains("nnn")));
}

#[tokio::test]
async fn an_address_is_locked_after_its_free_failures_across_user_names() {
    let env = env().await;
    let s = &env.state;
    add_user(s, "a", "carol", "carol-password-1").await;
    let address = LoginPolicy::address_scope("2001:db8:1:2::7".parse().unwrap());
    for i in 0..LoginPolicy::ADDRESS_FREE {
        // A different name each time: only the address counter grows.
        let (st, _, _) = login(s, "a", &format!("guess{i}"), "x", "[2001:db8:1:2::7]:443").await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(locked_until(s, &address).await, Some(0));
    // Another address of the same /64 counts for it: the 21st failure locks.
    let (st, _, _) = login(s, "a", "guess-last", "x", "[2001:db8:1:2::8]:443").await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert!(locked_until(s, &address).await.unwrap() > 0);
    lock_long(s, &address).await;
    let (st, v, _) = login(s, "a", "carol", "carol-password-1", "[2001:db8:1:2::99]:1").await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("too_many_attempts"))
    );
    // Another client: unaffected.
    assert_eq!(
        login(s, "a", "carol", "carol-password-1", "10.1.1.1:1")
            .await
            .0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn hashing_is_bounded_and_a_saturated_pool_answers_503() {
    let env = env().await;
    let s = &env.state;
    add_user(s, "a", "dave", "dave-password-1").await;
    // Hold every hashing slot: a login then waits its two seconds and gets 503.
    let all = super::HASHING_SLOTS as u32;
    let held = s.hashing.clone().acquire_many_owned(all).await.unwrap();
    let (st, v, retry) = login(s, "a", "dave", "dave-password-1", "10.2.2.2:1").await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("login_busy"))
    );
    assert_eq!(retry.as_deref(), Some("1"));
    drop(held);
    assert_eq!(
        login(s, "a", "dave", "dave-password-1", "10.2.2.2:1")
            .await
            .0,
        StatusCode::OK
    );
}

/// User creation hashes its password in the same bounded slots as logins: with every slot
/// taken, a creation waits its two seconds and gets 503 `hashing_busy`, and no user is made.
#[tokio::test]
async fn user_creation_hashes_in_the_bounded_slots() {
    let env = env().await;
    let s = &env.state;
    let create = || async {
        let body = json!({"username": "erin", "password": "erin-password-1"});
        super::tests::call(
            s,
            Method::POST,
            "/api/account/a/users",
            Some(super::tests::DEV),
            Some(body),
        )
        .await
    };
    let all = super::HASHING_SLOTS as u32;
    let held = s.hashing.clone().acquire_many_owned(all).await.unwrap();
    let (st, v) = create().await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("hashing_busy"))
    );
    assert!(s.store.user_named("a", "erin").await.unwrap().is_none());
    drop(held);
    assert_eq!(create().await.0, StatusCode::CREATED);
    assert!(s.store.user_named("a", "erin").await.unwrap().is_some());
    // A name already taken is refused before any hashing: with every slot held it is still
    // a 409, not a wait for a slot ending in 503.
    let held = s.hashing.clone().acquire_many_owned(all).await.unwrap();
    let (st, v) = create().await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::CONFLICT, Some("duplicate_username"))
    );
    drop(held);
}

/// Finding 12: the last-admin check raced with the delete. Two admins deleting each other at
/// the same moment: exactly one delete succeeds, the account keeps an admin.
#[tokio::test]
async fn two_admins_deleting_each_other_at_once_leave_one() {
    let env = env().await;
    let s = &env.state;
    add_user(s, "a", "admin1", "admin1-password").await;
    add_user(s, "a", "admin2", "admin2-password").await;
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM users WHERE account = 'a' ORDER BY id")
        .fetch_all(s.store.pool())
        .await
        .unwrap();
    let delete = |id: i64| async move {
        let uri = format!("/api/account/a/users/{id}");
        super::tests::call(s, Method::DELETE, &uri, Some(super::tests::DEV), None).await
    };
    let (first, second) = tokio::join!(delete(ids[0]), delete(ids[1]));
    let mut outcomes = [
        (first.0, first.1["code"].as_str().map(str::to_owned)),
        (second.0, second.1["code"].as_str().map(str::to_owned)),
    ];
    outcomes.sort();
    assert_eq!(
        outcomes,
        [
            (StatusCode::OK, None),
            (StatusCode::CONFLICT, Some("last_admin".to_owned()))
        ]
    );
    let admins: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM users WHERE account = 'a' AND is_admin = 1 AND deleted = 0",
    )
    .fetch_one(s.store.pool())
    .await
    .unwrap();
    assert_eq!(admins, 1);
}
