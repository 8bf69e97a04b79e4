//! Finding 3: tenants' URLs must not reach inside. A credential's token URL once stopped Envoy
//! (`/quitquitquit` on its admin port); a mapping could point the gateway, with a tenant's
//! certificate, at OpenBao or the control plane; a name public at write time could point
//! inside later. Each is tried here as a hostile tenant would, against a stack started with
//! the default policy (nothing internal allowed) and its own view of `/etc/hosts`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{error_code, Options, Stack, TOKEN};
use crate::upstream::Target;

/// A loopback listener that only counts the connections it accepts.
async fn counting_listener() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            drop(conn);
        }
    });
    (port, count)
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port")
}

async fn create_credential(stack: &Stack, account: &str, token_url: &str) -> reqwest::Response {
    stack
        .client
        .post(format!("{}/api/account/{account}/credentials", stack.api))
        .bearer_auth(TOKEN)
        .json(&json!({"name": format!("c{}", rand_suffix()),
                      "type": "oauth2ClientCredentials", "clientId": "c",
                      "clientSecret": "s", "tokenUrl": token_url}))
        .send()
        .await
        .expect("create credential")
}

async fn map(stack: &Stack, account: &str, cert: i64, url: &str, ca: &str) -> reqwest::Response {
    stack
        .map(
            account,
            json!([{
                "certificationId": cert.to_string(), "serviceId": "1", "enable": true,
                "url": url, "siteId": account, "name": format!("m{}", rand_suffix()),
                "deleted": false, "caCertificates": ca,
            }]),
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_urls_never_reach_internal_addresses_even_when_a_name_changes() {
    let hosts = std::env::temp_dir().join(format!(
        "mtlsgate-hosts-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::write(
        &hosts,
        "127.0.0.1 localhost\n127.0.0.1 sneaky.test\n8.8.8.8 partner.test\n",
    )
    .expect("hosts");
    let mut stack = Stack::start_with(Options {
        egress_allow: vec![],
        dns_refresh_seconds: 1,
        hosts_file: Some(hosts.clone()),
        ..Options::default()
    })
    .await;
    let account = "8401";
    let admin_port = port_of(&stack.admin);
    let api_port = port_of(&stack.api);

    // 1. Token URLs at internal addresses are refused when written...
    for url in [
        format!("http://127.0.0.1:{admin_port}/quitquitquit"),
        format!("http://localhost:{admin_port}/logging?level=debug"),
        "https://169.254.169.254/latest/meta-data/".to_owned(),
        format!("https://[::1]:{api_port}/api/account/1/users"),
    ] {
        let r = create_credential(&stack, account, &url).await;
        let (status, code) = error_code(r).await;
        assert_eq!(
            (status, code.as_str()),
            (400, "target_not_allowed"),
            "{url}"
        );
    }
    // ... and a name that resolves inside is refused when the token keeper looks it up:
    // nothing connects, and lastError names the rule, not what an internal server said.
    let (trap_port, trap) = counting_listener().await;
    let r = create_credential(
        &stack,
        account,
        &format!("https://sneaky.test:{trap_port}/token"),
    )
    .await;
    assert_eq!(r.status(), 201, "a name is judged when it is looked up");
    let id = r.json::<Value>().await.expect("json")["id"]
        .as_i64()
        .expect("id");
    let deadline = Instant::now() + Duration::from_secs(20);
    let credential = loop {
        let v: Value = stack
            .client
            .get(format!(
                "{}/api/account/{account}/credentials/{id}",
                stack.api
            ))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("get credential")
            .json()
            .await
            .expect("json");
        if v["lastError"].is_string() {
            break v;
        }
        assert!(Instant::now() < deadline, "no token attempt recorded: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let last_error = credential["lastError"].as_str().unwrap_or_default();
    assert!(last_error.contains("not allowed"), "{credential}");
    assert!(!last_error.contains("127.0.0.1"), "{credential}");
    assert_ne!(credential["status"], "active", "{credential}");
    assert_eq!(
        trap.load(Ordering::SeqCst),
        0,
        "the token keeper connected inside"
    );

    // 2. Mapping and plain-TLS targets at internal addresses are refused when written.
    let target = Target::start().await;
    let client = target.client_ca.client("tenant-cert");
    let cert = stack
        .upload_ok(account, "tenant", client.p12(&target.client_ca, "pw"), "pw")
        .await;
    for url in [
        format!("https://127.0.0.1:{admin_port}/x"),
        format!("https://localhost:{api_port}/x"),
        format!("https://[::ffff:127.0.0.1]:{}/x", port_of(&stack.vault.0)),
        format!("https://10.1.2.3:{api_port}/x"),
    ] {
        let r = map(&stack, account, cert, &url, &target.server_ca.cert_pem).await;
        assert_eq!(
            error_code(r).await,
            (400, "target_not_allowed".to_owned()),
            "{url}"
        );
    }
    let r = stack
        .client
        .put(format!("{}/api/account/{account}/egress", stack.api))
        .bearer_auth(TOKEN)
        .json(&json!({"plainTlsHosts": [format!("127.0.0.1:{admin_port}")]}))
        .send()
        .await
        .expect("egress");
    assert_eq!(error_code(r).await, (400, "target_not_allowed".to_owned()));

    // 3. DNS rebinding: a name that was public when mapped points inside later. Envoy never
    // resolves it itself; the control plane looks it up again, refuses the new address and
    // takes the endpoint away, and the gateway refuses the forward with the code.
    let partner_port = target.upstream.addr.port();
    let url = format!("https://partner.test:{partner_port}/x");
    let r = map(&stack, account, cert, &url, &target.server_ca.cert_pem).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    let prefix = format!("mtls_{cert}_partner.test_{partner_port}_");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let clusters = stack.envoy_clusters().await;
        let endpoints: Vec<&str> = clusters
            .lines()
            .filter(|l| l.starts_with(&prefix) && l.contains("::cx_active::"))
            .collect();
        if !endpoints.is_empty() {
            assert!(
                endpoints.iter().all(|l| l.contains("::8.8.8.8:")),
                "{endpoints:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "the public target never arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::fs::write(
        &hosts,
        "127.0.0.1 localhost\n127.0.0.1 sneaky.test\n127.0.0.1 partner.test\n",
    )
    .expect("rewrite hosts");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let clusters = stack.envoy_clusters().await;
        assert!(
            !clusters
                .lines()
                .any(|l| l.starts_with(&prefix) && l.contains("::127.0.0.1:")),
            "Envoy was given the internal address: {clusters}"
        );
        if !clusters.lines().any(|l| l.starts_with(&prefix)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rebound name kept its cluster"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = stack.forward(account, "GET", &url, "IDP", &[], None).await;
    assert_eq!(error_code(r).await, (403, "target_not_allowed".to_owned()));
    assert_eq!(
        target.upstream.connections.load(Ordering::SeqCst),
        0,
        "the internal partner saw a connection"
    );

    // Envoy was never stopped nor reconfigured by any of it.
    let r = stack
        .client
        .get(format!("{}/ready", stack.admin))
        .send()
        .await
        .expect("envoy ready");
    assert_eq!(r.status(), 200);
    assert!(stack.control_plane_alive());
    let _ = std::fs::remove_file(&hosts);
}

/// With loopback allowed (as every other test stack has it), the deployment's own endpoints
/// stay out of reach: the control plane's API and OpenBao by themselves, Envoy's admin port
/// because the stack denies it (`--egress-deny`, as `scripts/up` does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowing_loopback_never_allows_the_deployments_own_endpoints() {
    let stack = Stack::start().await;
    let account = "8402";
    let target = Target::start().await;
    let client = target.client_ca.client("tenant-cert");
    let cert = stack
        .upload_ok(account, "tenant", client.p12(&target.client_ca, "pw"), "pw")
        .await;
    for (url, why) in [
        (
            format!("https://127.0.0.1:{}/x", port_of(&stack.api)),
            "own endpoints",
        ),
        (
            format!("https://127.0.0.1:{}/x", port_of(&stack.vault.0)),
            "own endpoints",
        ),
        (
            format!("https://127.0.0.1:{}/x", port_of(&stack.admin)),
            "denied",
        ),
    ] {
        let r = map(&stack, account, cert, &url, &target.server_ca.cert_pem).await;
        assert_eq!(r.status(), 400, "{url}");
        let v: Value = r.json().await.expect("json");
        assert_eq!(v["code"], "target_not_allowed", "{url}: {v}");
        assert!(
            v["message"].as_str().unwrap_or_default().contains(why),
            "{v}"
        );
    }
    let r = create_credential(
        &stack,
        account,
        &format!("http://127.0.0.1:{}/quitquitquit", port_of(&stack.admin)),
    )
    .await;
    assert_eq!(error_code(r).await, (400, "target_not_allowed".to_owned()));
    // Positive control: the partner on loopback is reachable, as allowed.
    let url = target.upstream.url("/ok");
    map(&stack, account, cert, &url, &target.server_ca.cert_pem).await;
    let r = stack.forward_when_mapped(account, &url, "IDP").await;
    assert_eq!(r.status(), 200);
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_nanos()))
        .unwrap_or(0)
}
