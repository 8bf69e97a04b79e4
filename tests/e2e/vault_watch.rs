//! Certificates changed behind mtlsgate's back, directly in Vault (OpenBao): a rotation is
//! picked up by the periodic watch and presented upstream; a deletion takes the mapping out
//! of service. And a watch that finds nothing changed changes nothing.

use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use crate::harness::{error_code, Options, Stack, TOKEN};
use crate::upstream::Target;

const A: &str = "9119";

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

fn kv(stack: &Stack, kind: &str, id: i64) -> String {
    format!(
        "{}/v1/secret/{kind}/mtlsgate/accounts/{A}/certificates/{id}",
        stack.vault.0
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_and_deletion_made_directly_in_vault_reach_the_gateway() {
    let stack = Stack::start_with(Options {
        vault_watch_seconds: 1,
        ..Options::default()
    })
    .await;
    let target = Target::start().await;
    let first = target.client_ca.client("first");
    let id = stack
        .upload_ok(
            A,
            "behind-the-back",
            first.p12(&target.client_ca, "pw"),
            "pw",
        )
        .await;
    let url = target.upstream.url("/watched");
    stack
        .map_ok(A, id, "1", &url, "watched", &target.server_ca.cert_pem)
        .await;
    let seen: Value = stack
        .forward_when_mapped(A, &url, "IDP")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(seen["clientCertSha256"], first.fingerprint());

    // An operator rotates the certificate with the Vault CLI/API, not through mtlsgate.
    let second = target.client_ca.client("second");
    let r = stack
        .client
        .post(kv(&stack, "data", id))
        .header("X-Vault-Token", &stack.vault.1)
        .json(&json!({"data": {
            "certificateChain": format!("{}{}", pem("CERTIFICATE", &second.cert_der), target.client_ca.cert_pem),
            "privateKey": pem("PRIVATE KEY", &second.key_der),
        }}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = stack.forward(A, "GET", &url, "IDP", &[], None).await;
        assert_eq!(r.status(), 200, "a forward failed during the rotation");
        let seen: Value = r.json().await.unwrap();
        if seen["clientCertSha256"] == second.fingerprint() {
            break;
        }
        assert_eq!(seen["clientCertSha256"], first.fingerprint());
        assert!(
            Instant::now() < deadline,
            "the rotation in Vault was never picked up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // And deletes it there: the mapping is no longer served, and is refused as mapped but
    // unavailable (not as unmapped); the certificate says so.
    let r = stack
        .client
        .delete(kv(&stack, "metadata", id))
        .header("X-Vault-Token", &stack.vault.1)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = stack.forward(A, "GET", &url, "IDP", &[], None).await;
        if r.status() != 200 {
            assert_eq!(error_code(r).await, (503, "certificate_unavailable".into()));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still served after its deletion from Vault"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cert: Value = stack
        .client
        .get(format!("{}/mtls/account/{A}/certificates/{id}", stack.api))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cert["status"], "UnAvailable", "{cert}");
}
