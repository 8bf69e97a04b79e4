//! Certificate uploads: files from real tools work end to end; bad files and an unreachable
//! Vault are refused and store nothing.

use reqwest::multipart::{Form, Part};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::harness::{error_code, Stack, TOKEN};
use crate::pki::Ca;
use crate::tools;
use crate::upstream::Upstream;

const ACCOUNT: &str = "777";

/// Uploads `p12`, maps it to a fresh upstream that trusts `trusted`, forwards, and checks the
/// upstream saw `client_der`.
async fn forwards_with(
    stack: &Stack,
    name: &str,
    p12: Vec<u8>,
    password: &str,
    trusted: &[u8],
    client_der: &[u8],
) {
    let server_ca = Ca::new("server CA");
    let upstream = Upstream::start(&server_ca.server(), &[trusted]).await;
    let cert = stack.upload_ok(ACCOUNT, name, p12, password).await;
    let url = upstream.url(&format!("/{name}"));
    stack
        .map_ok(ACCOUNT, cert, "0", &url, name, &server_ca.cert_pem)
        .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = stack
            .forward(ACCOUNT, "GET", &url, "TEST_SERVICE", &[], None)
            .await;
        if r.status() == 200 {
            let seen: Value = r.json().await.expect("json");
            assert_eq!(
                seen["clientCertSha256"],
                hex::encode(Sha256::digest(client_der)),
                "{name}"
            );
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name}: never forwarded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mtlsgate-tools-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p12_files_from_keytool_and_openssl_forward_end_to_end() {
    let stack = Stack::start().await;

    let dir = scratch("keytool");
    let (p12, der) = tools::keytool_p12(&dir, "changeit");
    forwards_with(&stack, "keytool", p12, "changeit", &der, &der).await;

    for legacy in [false, true] {
        let dir = scratch(if legacy { "openssl-legacy" } else { "openssl" });
        let (p12, ca, client) = tools::openssl_p12(&dir, "pw-ø", legacy);
        let name = if legacy { "openssl-legacy" } else { "openssl" };
        forwards_with(&stack, name, p12, "pw-ø", &ca, &client).await;
    }
}

async fn certificate_count(stack: &Stack) -> usize {
    let r = stack
        .client
        .get(format!("{}/mtls/account/{ACCOUNT}/certificates", stack.api))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("list");
    assert_eq!(r.status(), 200);
    r.json::<Vec<Value>>().await.expect("json").len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_are_refused_and_store_nothing() {
    let mut stack = Stack::start().await;
    let ca = Ca::new("ca");
    let good = ca.client("c").p12(&ca, "right");

    let r = stack
        .upload(ACCOUNT, "wrong-pw", good.clone(), "wrong")
        .await;
    assert_eq!(error_code(r).await, (422, "p12_bad_password".into()));

    let mut corrupt = good.clone();
    let mid = corrupt.len() / 2;
    corrupt.truncate(mid);
    let r = stack.upload(ACCOUNT, "corrupt", corrupt, "right").await;
    assert_eq!(error_code(r).await.0, 422);

    let r = stack
        .upload(ACCOUNT, "garbage", b"not a p12 at all".to_vec(), "right")
        .await;
    assert_eq!(error_code(r).await, (422, "p12_unreadable".into()));

    let r = stack.upload(ACCOUNT, "empty", Vec::new(), "right").await;
    assert_eq!(error_code(r).await, (422, "p12_empty".into()));

    // A field besides `file` and `certificate` (by file), or `file` and `password` (the
    // tester): refused, not ignored.
    let token = stack.token_for(ACCOUNT).await;
    for (path, form) in [
        (
            "certificates/by-file",
            Form::new()
                .part("file", Part::bytes(good.clone()).file_name("c.p12"))
                .text(
                    "certificate",
                    json!({"name": "extra", "password": "right"}).to_string(),
                )
                .text("displayName", "extra"),
        ),
        (
            "p12-test/multipart",
            Form::new()
                .part("file", Part::bytes(good.clone()).file_name("c.p12"))
                .text("password", "right")
                .text("passphrase", "right"),
        ),
    ] {
        let r = stack
            .client
            .post(format!("{}/mtls/account/{ACCOUNT}/{path}", stack.api))
            .bearer_auth(&token)
            .multipart(form)
            .send()
            .await
            .expect("send");
        assert_eq!(
            error_code(r).await,
            (400, "invalid_upload".into()),
            "{path}"
        );
    }

    // A body over the upload limit (1 MiB by default).
    let r = stack
        .upload(ACCOUNT, "huge", vec![0u8; 2 * 1024 * 1024], "right")
        .await;
    assert_eq!(error_code(r).await, (413, "payload_too_large".into()));

    // Without the dev token: refused.
    let r = stack
        .client
        .get(format!("{}/mtls/account/{ACCOUNT}/certificates", stack.api))
        .bearer_auth("not-the-token")
        .send()
        .await
        .expect("send");
    assert!(r.headers().contains_key("www-authenticate"));
    assert_eq!(error_code(r).await, (401, "invalid_token".into()));

    assert_eq!(
        certificate_count(&stack).await,
        0,
        "a refused upload left something behind"
    );

    // A duplicate name is a conflict that names the existing certificate.
    let first = stack.upload_ok(ACCOUNT, "dup", good.clone(), "right").await;
    let r = stack.upload(ACCOUNT, "dup", good.clone(), "right").await;
    assert_eq!(r.status(), 409);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["code"], "duplicate_certificate_name");
    assert_eq!(v["existingCertificateId"], first);
    assert_eq!(certificate_count(&stack).await, 1);

    // Vault down: 503, and no row remains.
    stack.stop_vault();
    let r = stack
        .upload(ACCOUNT, "while-vault-is-down", good, "right")
        .await;
    assert_eq!(
        error_code(r).await,
        (503, "secret_store_unavailable".into())
    );
    assert_eq!(certificate_count(&stack).await, 1);
    assert!(
        stack.control_plane_alive(),
        "the control plane must survive a Vault outage"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_answers_or_logs() {
    let stack = Stack::start().await;
    let ca = Ca::new("ca");
    let password = "pw-that-must-never-be-logged-42";
    let r = stack
        .upload(
            ACCOUNT,
            "secret-check",
            ca.client("c").p12(&ca, password),
            password,
        )
        .await;
    assert_eq!(r.status(), 201);
    let body = r.text().await.expect("body");
    assert!(!body.contains(password));
    assert!(!body.contains("PRIVATE KEY"));
    let r = stack
        .upload(
            ACCOUNT,
            "secret-check-2",
            ca.client("c").p12(&ca, password),
            "wrong-pw-also-secret",
        )
        .await;
    let body = r.text().await.expect("body");
    assert!(!body.contains("wrong-pw-also-secret"));
    let logs = stack.logs();
    for secret in [
        password,
        "wrong-pw-also-secret",
        "PRIVATE KEY",
        crate::harness::TOKEN,
    ] {
        assert!(!logs.contains(secret), "{secret:?} appears in a log");
    }
}
