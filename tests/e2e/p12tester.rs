//! The P12 key tester through the gateway's mtlsGateway domain: findings for files made by
//! real tools, and nothing stored.

use serde_json::Value;

use crate::harness::{error_code, Stack, TOKEN};
use crate::tools;

const ACCOUNT: &str = "3003";

async fn test_file(
    stack: &Stack,
    file: Vec<u8>,
    password: &str,
    bearer: &str,
) -> reqwest::Response {
    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(file).file_name("key.p12"),
        )
        .text("password", password.to_owned());
    stack
        .client
        .post(format!(
            "{}/mtls/account/{ACCOUNT}/p12-test/multipart",
            stack.gateway
        ))
        .bearer_auth(bearer)
        .multipart(form)
        .send()
        .await
        .expect("p12 test")
}

fn codes(report: &Value) -> Vec<String> {
    report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| f["code"].as_str().expect("code").to_owned())
        .collect()
}

fn dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("mtlsgate-p12test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("dir");
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_on_files_from_real_tools_and_stores_nothing() {
    let stack = Stack::start().await;
    // Through the gateway, as tenants call it: with a tenant's login token (the development
    // admin token is refused there).
    let token = stack.token_for(ACCOUNT).await;

    let (keytool_p12, _) = tools::keytool_p12(&dir("keytool"), "changeit");
    let r = test_file(&stack, keytool_p12.clone(), "changeit", &token).await;
    assert_eq!(r.status(), 200);
    let report: Value = r.json().await.expect("json");
    assert_eq!(report["usable"], true);
    assert_eq!(report["passwordOpensFile"], true);
    assert_eq!(
        report["javaReadable"], true,
        "keytool's own file must read in Java"
    );
    assert_eq!(report["key"]["algorithm"], "RSA");
    assert_eq!(report["key"]["size"], 2048);
    assert_eq!(report["certificateMatchesKey"], true);
    assert_eq!(report["macAlgorithm"], "HMAC-SHA256");
    assert!(!report.to_string().contains("changeit"));

    let (legacy, _, _) = tools::openssl_p12(&dir("legacy"), "pw", true);
    let report: Value = test_file(&stack, legacy, "pw", &token)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(report["usable"], true);
    assert_eq!(report["macAlgorithm"], "HMAC-SHA1");

    // Wrong password, garbage, and a weak key: 422 with the finding and the error shape.
    let r = test_file(&stack, keytool_p12, "wrong", &token).await;
    assert_eq!(r.status(), 422);
    let report: Value = r.json().await.expect("json");
    assert_eq!(report["code"], "p12_not_usable");
    assert!(report["requestId"].is_string());
    assert!(
        codes(&report).contains(&"p12_bad_password".to_owned()),
        "{report}"
    );

    let report: Value = test_file(&stack, b"definitely not pkcs12".to_vec(), "x", &token)
        .await
        .json()
        .await
        .expect("json");
    assert!(
        codes(&report).contains(&"p12_corrupted".to_owned()),
        "{report}"
    );

    let d = dir("weak");
    tools::run(
        &d,
        "openssl",
        &[
            "req", "-x509", "-newkey", "rsa:1024", "-nodes", "-keyout", "k.pem", "-out", "c.pem",
            "-subj", "/CN=weak", "-days", "30",
        ],
    );
    tools::run(
        &d,
        "openssl",
        &[
            "pkcs12", "-export", "-in", "c.pem", "-inkey", "k.pem", "-out", "w.p12", "-passout",
            "pass:pw",
        ],
    );
    let r = test_file(&stack, tools::read(&d, "w.p12"), "pw", &token).await;
    assert_eq!(r.status(), 422);
    let report: Value = r.json().await.expect("json");
    assert!(
        codes(&report).contains(&"key_weak_rsa".to_owned()),
        "{report}"
    );
    let finding = &report["findings"].as_array().expect("findings")[0];
    assert!(finding["message"].is_string() && finding["severity"].is_string());

    // Unauthenticated: refused. Nothing was stored by any of it.
    let r = test_file(&stack, b"x".to_vec(), "x", "not-a-token").await;
    assert_eq!(error_code(r).await.0, 401);
    let listed: Vec<Value> = stack
        .client
        .get(format!("{}/mtls/account/{ACCOUNT}/certificates", stack.api))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert!(listed.is_empty());
}
