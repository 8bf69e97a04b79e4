//! `mtlsgate check` against a real stack: silent while the database and OpenBao agree; after
//! the secret store goes out of step with the database (as restoring backups taken apart
//! leaves it: one certificate's secrets missing, another with a version the database does not
//! know), it names exactly those certificates and exits 3.

use std::process::Command;

use serde_json::{json, Value};

use crate::harness::{Options, Stack};
use crate::upstream::Target;

const A: &str = "71717171";

fn check(stack: &Stack) -> (i32, Value) {
    let mut cmd = Command::new(&stack.mtlsgate_bin);
    cmd.arg("check")
        .args(["--vault-addr", &stack.vault.0])
        .env("VAULT_TOKEN", &stack.vault.1);
    stack.with_database(&mut cmd);
    let out = cmd.output().expect("mtlsgate check runs");
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "not a JSON report: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_the_certificates_whose_rows_and_secrets_differ() {
    let stack = Stack::start_with(Options {
        // The watch would adopt or discard what the test does behind mtlsgate's back.
        vault_watch_seconds: 3600,
        ..Options::default()
    })
    .await;
    let target = Target::start().await;
    let kept = stack
        .upload_ok(
            A,
            "kept",
            target.client_ca.client("kept").p12(&target.client_ca, "pw"),
            "pw",
        )
        .await;
    let lost = stack
        .upload_ok(
            A,
            "lost",
            target.client_ca.client("lost").p12(&target.client_ca, "pw"),
            "pw",
        )
        .await;
    let (code, report) = check(&stack);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["certificates"], 2);
    assert_eq!(report["differences"], json!([]));

    let kv = |kind: &str, id: i64| {
        format!(
            "{}/v1/secret/{kind}/mtlsgate/accounts/{A}/certificates/{id}",
            stack.vault.0
        )
    };
    // One certificate's secrets gone, every version (an older backup of the secret store)...
    let r = stack
        .client
        .delete(kv("metadata", lost))
        .header("X-Vault-Token", &stack.vault.1)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    // ...and another with a version the database does not pin (a newer one).
    let r = stack
        .client
        .post(kv("data", kept))
        .header("X-Vault-Token", &stack.vault.1)
        .json(&json!({"data": {"certificateChain": "x", "privateKey": "y"}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());

    let (code, report) = check(&stack);
    assert_eq!(code, 3, "{report}");
    let named: Vec<(i64, &str)> = report["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["id"].as_i64().unwrap(), d["name"].as_str().unwrap()))
        .collect();
    assert_eq!(named, [(kept, "kept"), (lost, "lost")], "{report}");
    // The report carries no secret.
    assert!(!report.to_string().contains("PRIVATE KEY"));
}
