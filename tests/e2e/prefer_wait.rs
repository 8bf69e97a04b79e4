//! `Prefer: wait=N` through real Envoy: a write that asks answers only once the gateway
//! enforces it, so the first request that uses it succeeds; a gateway that cannot (its Envoy
//! stopped) is named when the wait runs out.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{error_code, Stack, TOKEN};
use crate::management::oauth_header;
use crate::upstream::Target;

const ACCOUNT: &str = "7117";

/// The header naming gateways that did not enforce a write in time.
const NOT_ENFORCED_BY: &str = "x-mtlsgate-not-enforced-by";

fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().expect("ascii header").to_owned())
}

/// A forward through the gateway signed by the AppKey `key`.
async fn signed_forward(stack: &Stack, url: &str, key: &Value) -> reqwest::Response {
    let target = format!("{}/mtls/account/{ACCOUNT}", stack.gateway);
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

async fn create_appkey(stack: &Stack, prefer: &str) -> reqwest::Response {
    stack
        .client
        .post(format!("{}/api/account/{ACCOUNT}/appkeys", stack.api))
        .bearer_auth(TOKEN)
        .header("prefer", prefer)
        .send()
        .await
        .expect("appkey")
}

/// Asserts the write answered after every gateway enforced it.
fn assert_enforced(r: &reqwest::Response, wait: u64) {
    assert_eq!(
        header(r, "preference-applied").as_deref(),
        Some(format!("wait={wait}").as_str()),
        "not enforced by {:?}",
        header(r, NOT_ENFORCED_BY)
    );
    assert_eq!(header(r, NOT_ENFORCED_BY), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_prefer_wait_new_mappings_and_appkeys_work_on_the_first_request() {
    let stack = Stack::start().await;
    let target = Target::start().await;
    // The Bearer token the mapping forwards use, known to the gateway before anything else.
    stack.token_for(ACCOUNT).await;

    // New mappings, each with a certificate of its own (a new cluster and a new secret for
    // Envoy to acknowledge): the first forward through each is served.
    for i in 0..4 {
        let client = target.client_ca.client(&format!("prefer-{i}"));
        let cert = stack
            .upload_ok(
                ACCOUNT,
                &format!("prefer-{i}"),
                client.p12(&target.client_ca, "pw"),
                "pw",
            )
            .await;
        let url = target.upstream.url(&format!("/first-{i}"));
        let r = stack
            .client
            .post(format!(
                "{}/api/account/{ACCOUNT}/configuration/ac-common/mtls?v=3.0",
                stack.api
            ))
            .bearer_auth(TOKEN)
            .header("prefer", "wait=10")
            .json(&json!([{
                "certificationId": cert.to_string(), "serviceId": "1", "enable": true,
                "url": url, "siteId": ACCOUNT, "name": format!("prefer-{i}"), "deleted": false,
                "caCertificates": target.server_ca.cert_pem,
            }]))
            .send()
            .await
            .expect("map");
        assert_eq!(r.status(), 201);
        assert_enforced(&r, 10);
        let r = stack.forward(ACCOUNT, "GET", &url, "IDP", &[], None).await;
        assert_eq!(
            r.status(),
            200,
            "mapping {i}: the first forward was refused"
        );
        let seen: Value = r.json().await.expect("json");
        assert_eq!(
            seen["clientCertSha256"],
            client.fingerprint(),
            "mapping {i}"
        );
    }

    // Fresh AppKeys: the first signed request with each is accepted. Without the wait the
    // gateway refuses a new AppKey for its first tens of milliseconds.
    let url = target.upstream.url("/first-0");
    for i in 0..20 {
        let r = create_appkey(&stack, "return=representation, wait=10").await;
        assert_eq!(r.status(), 201);
        assert_enforced(&r, 10);
        let key: Value = r.json().await.expect("json");
        let r = signed_forward(&stack, &url, &key).await;
        assert_eq!(r.status(), 200, "AppKey {i}: {:?}", error_code(r).await);

        // Revoked with a wait: the very next request with it is refused.
        if i % 5 == 0 {
            let id = key["id"].as_i64().expect("id");
            let r = stack
                .client
                .delete(format!("{}/api/account/{ACCOUNT}/appkeys/{id}", stack.api))
                .bearer_auth(TOKEN)
                .header("prefer", "wait=10")
                .send()
                .await
                .expect("revoke");
            assert_eq!(r.status(), 200);
            assert_enforced(&r, 10);
            let r = signed_forward(&stack, &url, &key).await;
            assert_eq!(
                error_code(r).await,
                (401, "unknown_appkey".into()),
                "AppKey {i}"
            );
        }
    }
}

/// Sends SIGCONT to a stopped process when dropped, so a failing test never leaves it stopped.
struct Stopped(u32);

impl Stopped {
    fn new(pid: u32) -> Stopped {
        signal("-STOP", pid);
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        signal("-CONT", self.0);
    }
}

fn signal(sig: &str, pid: u32) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill {sig} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_gateway_is_named_when_the_wait_runs_out() {
    let stack = Stack::start().await;
    let node = stack.envoy_node_id().await;

    // A `wait` that is not a number of seconds: refused, nothing written.
    let r = create_appkey(&stack, "wait=soon").await;
    assert_eq!(error_code(r).await, (400, "invalid_preference".into()));
    let listed: Value = stack
        .client
        .get(format!("{}/api/account/{ACCOUNT}/appkeys", stack.api))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(listed.as_array().map(Vec::len), Some(0), "{listed}");

    // Connected and enforcing: answered with the preference applied.
    let r = create_appkey(&stack, "wait=5").await;
    assert_eq!(r.status(), 201);
    assert_enforced(&r, 5);

    // Envoy stopped: its ADS stream and its poll stay open, but it enforces nothing new.
    let stopped = Stopped::new(stack.envoy_pid());
    let started = Instant::now();
    let r = create_appkey(&stack, "wait=1").await;
    let took = started.elapsed();
    assert_eq!(r.status(), 201, "the write is committed all the same");
    assert_eq!(header(&r, NOT_ENFORCED_BY).as_deref(), Some(node.as_str()));
    assert_eq!(header(&r, "preference-applied"), None);
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_millis(2500),
        "answered after {took:?}"
    );
    let key: Value = r.json().await.expect("json");
    assert!(key["consumerKey"].is_string());

    // Continued: it catches up, and the next write that waits is enforced.
    drop(stopped);
    let r = create_appkey(&stack, "wait=10").await;
    assert_eq!(r.status(), 201);
    assert_enforced(&r, 10);
}
