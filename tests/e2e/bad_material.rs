//! Finding 11: one tenant's bad material blocks no one else's provisioning.
//!
//! Material Envoy cannot load is refused at upload (an RSA-1024 key, a key that is not its
//! certificate's). Material that reaches the gateway anyway — written directly in OpenBao by
//! an operator, past the API's checks — is refused by Envoy (a NACK); the control plane
//! withholds exactly what the NACK blames, the mapping says why in the API and is refused at
//! the gateway with `material_rejected`, and every other tenant's changes keep flowing.

use std::time::{Duration, Instant};

use base64::Engine;
use p12_keystore::{Certificate, KeyStore, KeyStoreEntry, LocalKeyId, PrivateKey, PrivateKeyChain};
use serde_json::{json, Value};

use crate::harness::{error_code, Options, Stack, TOKEN};
use crate::tools;
use crate::upstream::Target;

const A: &str = "7101";
const B: &str = "7202";

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

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mtlsgate-bad-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

/// A self-signed RSA-1024 certificate in a P12, as `openssl` makes it.
fn rsa_1024_p12(password: &str) -> Vec<u8> {
    let dir = scratch("rsa1024");
    let pass = format!("pass:{password}");
    tools::run(
        &dir,
        "openssl",
        &[
            "req", "-x509", "-newkey", "rsa:1024", "-nodes", "-keyout", "k.pem", "-out", "c.pem",
            "-subj", "/CN=weak", "-days", "30",
        ],
    );
    tools::run(
        &dir,
        "openssl",
        &[
            "pkcs12", "-export", "-inkey", "k.pem", "-in", "c.pem", "-out", "w.p12", "-passout",
            &pass,
        ],
    );
    tools::read(&dir, "w.p12")
}

/// A P12 whose key is not its certificate's.
fn mismatched_p12(key_der: &[u8], cert_der: &[u8], password: &str) -> Vec<u8> {
    let chain = PrivateKeyChain::new(
        LocalKeyId(vec![9, 9]),
        PrivateKey::from_der(key_der).expect("key"),
        [Certificate::from_der(cert_der).expect("cert")],
    );
    let mut store = KeyStore::new();
    store.add_entry("client", KeyStoreEntry::PrivateKeyChain(chain));
    store.writer(password).write().expect("p12")
}

async fn mapping_status(stack: &Stack, account: &str, name: &str) -> Value {
    let all: Value = stack
        .client
        .get(format!(
            "{}/api/account/{account}/configuration/ac-common/mtls",
            stack.api
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    all.as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .map(|m| m["status"].clone())
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenants_bad_material_blocks_no_one_elses_mapping() {
    let mut stack = Stack::start_with(Options {
        vault_watch_seconds: 1,
        ..Options::default()
    })
    .await;
    let partner_a = Target::start().await;
    let partner_b = Target::start().await;

    // Refused at upload, with codes that say why.
    let r = stack.upload(A, "weak", rsa_1024_p12("pw"), "pw").await;
    assert_eq!(error_code(r).await, (422, "p12_weak_key".into()));
    let x = partner_a.client_ca.client("x");
    let y = partner_a.client_ca.client("y");
    let r = stack
        .upload(
            A,
            "mismatched",
            mismatched_p12(&x.key_der, &y.cert_der, "pw"),
            "pw",
        )
        .await;
    assert_eq!(error_code(r).await, (422, "p12_key_mismatch".into()));

    // Tenant A maps a good certificate; then an operator replaces its material directly in
    // OpenBao with a pair whose key is not the certificate's: past every API check.
    let good = partner_a.client_ca.client("good");
    let id_a = stack
        .upload_ok(A, "a-cert", good.p12(&partner_a.client_ca, "pw"), "pw")
        .await;
    let url_a = partner_a.upstream.url("/a");
    stack
        .map_ok(A, id_a, "1", &url_a, "a-map", &partner_a.server_ca.cert_pem)
        .await;
    assert_eq!(
        stack.forward_when_mapped(A, &url_a, "IDP").await.status(),
        200
    );
    let kv = format!(
        "{}/v1/secret/data/mtlsgate/accounts/{A}/certificates/{id_a}",
        stack.vault.0
    );
    let r = stack
        .client
        .post(&kv)
        .header("X-Vault-Token", &stack.vault.1)
        .json(&json!({"data": {
            "certificateChain": pem("CERTIFICATE", &y.cert_der),
            "privateKey": pem("PRIVATE KEY", &x.key_der),
        }}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());

    // The gateway refuses it; the control plane withholds it, and A's mapping says so in
    // the API and at the gateway.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = mapping_status(&stack, A, "a-map").await;
        if status["state"] == "unavailable" {
            assert_eq!(status["code"], "material_rejected", "{status}");
            break;
        }
        assert_eq!(status["state"], "active", "{status}");
        assert!(
            Instant::now() < deadline,
            "the refused material was never withheld:\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = stack.forward(A, "GET", &url_a, "IDP", &[], None).await;
        if r.status() != 200 {
            assert_eq!(error_code(r).await, (503, "material_rejected".into()));
            break;
        }
        assert!(Instant::now() < deadline, "A's mapping is still forwarded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Tenant B's new certificate and mapping are delivered and forward, with B's certificate.
    let b = partner_b.client_ca.client("b");
    let id_b = stack
        .upload_ok(B, "b-cert", b.p12(&partner_b.client_ca, "pw"), "pw")
        .await;
    let url_b = partner_b.upstream.url("/b");
    stack
        .map_ok(B, id_b, "1", &url_b, "b-map", &partner_b.server_ca.cert_pem)
        .await;
    let seen: Value = stack
        .forward_when_mapped(B, &url_b, "IDP")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(seen["clientCertSha256"], b.fingerprint());
    assert_eq!(mapping_status(&stack, B, "b-map").await["state"], "active");

    // A's own fix is picked up: a good rotation through the API lifts the refusal.
    let fixed = partner_a.client_ca.client("fixed");
    let r = stack
        .rotate(
            A,
            id_a,
            "a-cert",
            fixed.p12(&partner_a.client_ca, "pw"),
            "pw",
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    let seen: Value = stack
        // Until the gateway has acknowledged the new cluster, the mapping is not in its
        // snapshot (as for any new mapping).
        .forward_when_served(
            A,
            &url_a,
            "IDP",
            &[(503, "material_rejected"), (400, "no_mtls_mapping")],
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(seen["clientCertSha256"], fixed.fingerprint());
    // It was Envoy's own refusal (a NACK naming no secret, blamed on what had changed),
    // not a check of the control plane's, that withheld A's material.
    let logs = stack.logs();
    assert!(
        logs.lines().any(|l| l.contains("refused a resource")
            && l.contains(&format!("cert-{id_a}"))
            && l.contains("KEY_VALUES_MISMATCH")),
        "no NACK of A's secret in the logs:\n{logs}"
    );
    assert!(stack.all_alive(), "a process died:\n{}", stack.logs());
}
