//! The login-token signing key rotated with `mtlsgate keys rotate-login` while the control
//! plane runs: new tokens carry the new key id once it takes over, tokens of the old key
//! stay accepted by the gateway and the API, and a rotation for a compromised key makes them
//! refused — all without a restart.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Options, Stack};
use crate::upstream::Target;

const ACCOUNT: &str = "8701";

/// The key id in a token's JOSE header.
fn kid(token: &str) -> String {
    use base64::Engine;
    let header = token.split('.').next().expect("header");
    let json: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .expect("base64url"),
    )
    .expect("json");
    json["kid"].as_str().expect("kid").to_owned()
}

/// Runs `mtlsgate keys rotate-login` against the stack's OpenBao; answers the new key id.
fn rotate(stack: &Stack, extra: &[&str]) -> String {
    let out = Command::new(&stack.mtlsgate_bin)
        .args(["keys", "rotate-login", "--vault-addr", &stack.vault.0])
        .args(extra)
        .env("VAULT_TOKEN", &stack.vault.1)
        .output()
        .expect("mtlsgate keys rotate-login");
    assert!(out.status.success(), "rotate-login: {out:?}");
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!said.contains("privateKey"), "{said}");
    said.split_whitespace()
        .nth(3)
        .expect("the new key id")
        .to_owned()
}

/// (gateway status, API status) for a request with `bearer`: a forward of the mapped URL,
/// and the account's user list.
async fn statuses(stack: &Stack, url: &str, bearer: &str) -> (u16, u16) {
    let auth = format!("Bearer {bearer}");
    let r = stack
        .forward(
            ACCOUNT,
            "GET",
            url,
            "IDP",
            &[("authorization", auth.as_str())],
            None,
        )
        .await;
    let gateway = r.status().as_u16();
    if gateway != 200 {
        eprintln!(
            "gateway answered {gateway}: {}",
            r.text().await.unwrap_or_default()
        );
    }
    let api = stack
        .client
        .get(format!("{}/api/account/{ACCOUNT}/users", stack.api))
        .bearer_auth(bearer)
        .send()
        .await
        .expect("users")
        .status()
        .as_u16();
    (gateway, api)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_login_key_signs_new_tokens_and_old_tokens_stay_valid_until_it_is_retired() {
    let stack = Stack::start_with(Options {
        vault_watch_seconds: 1,
        ..Options::default()
    })
    .await;
    let target = Target::start().await;
    let client = target.client_ca.client("login-keys");
    let cert = stack
        .upload_ok(
            ACCOUNT,
            "login-keys",
            client.p12(&target.client_ca, "pw"),
            "pw",
        )
        .await;
    let url = target.upstream.url("/login-keys");
    stack
        .map_ok(
            ACCOUNT,
            cert,
            "1",
            &url,
            "login-keys",
            &target.server_ca.cert_pem,
        )
        .await;
    stack.forward_when_mapped(ACCOUNT, &url, "IDP").await;
    stack.add_user(ACCOUNT, "kim", "kim-password-1", true);
    let old = stack.login(ACCOUNT, "kim", "kim-password-1").await;
    assert_eq!(statuses(&stack, &url, &old).await, (200, 200));

    // Rotate: the new key takes over 2 s from now (the control plane polls every second).
    let new_kid = rotate(&stack, &["--activate-in-seconds", "2"]);
    assert_ne!(new_kid, kid(&old));
    let deadline = Instant::now() + Duration::from_secs(10);
    let new = loop {
        let token = stack.login(ACCOUNT, "kim", "kim-password-1").await;
        // Every token handed out meanwhile is accepted by the gateway and the API.
        assert_eq!(statuses(&stack, &url, &token).await, (200, 200));
        if kid(&token) == new_kid {
            break token;
        }
        assert_eq!(kid(&token), kid(&old), "a token of neither key");
        assert!(
            Instant::now() < deadline,
            "new tokens never carried the new key id"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    // The old token still works through the gateway and on the API; so does the new one.
    assert_eq!(statuses(&stack, &url, &old).await, (200, 200));
    assert_eq!(statuses(&stack, &url, &new).await, (200, 200));

    // A compromised key: the old keys go at once, so their tokens are refused on both
    // paths within a poll, and the newest key signs at once.
    let newest_kid = rotate(&stack, &["--compromised"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while statuses(&stack, &url, &old).await != (401, 401)
        || statuses(&stack, &url, &new).await != (401, 401)
    {
        assert!(
            Instant::now() < deadline,
            "tokens of removed keys still accepted"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let newest = stack.login(ACCOUNT, "kim", "kim-password-1").await;
    assert_eq!(kid(&newest), newest_kid);
    assert_eq!(statuses(&stack, &url, &newest).await, (200, 200));
    // No key material in the control plane's log.
    let logs = stack.logs();
    assert!(!logs.contains("privateKey"));
}
