//! Tenant isolation and hostile inputs, each a finding of the security review reproduced as a
//! hostile tenant (or a hostile token endpoint) would, against the release control plane.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{error_code, Stack, TOKEN};
use crate::upstream::Target;

/// A token endpoint that answers every request with `body` (HTTP/1.1, 200, JSON), on loopback.
async fn fixed_token_endpoint(body: &'static str) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                // One request per connection is all the client sends before reading.
                let _ = conn.read(&mut buf).await;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(answer.as_bytes()).await;
            });
        }
    });
    port
}

/// Finding 4: `expires_in` of 2^64-1 used to overflow the token keeper's time arithmetic and
/// abort the process (and again at every start). The release binary must take the token,
/// stay up, and keep answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_token_lifetime_does_not_stop_the_control_plane() {
    let mut stack = Stack::start().await;
    let port = fixed_token_endpoint(
        r#"{"access_token":"hostile-token","token_type":"Bearer","expires_in":18446744073709551615}"#,
    )
    .await;
    let r = stack
        .client
        .post(format!("{}/api/account/8101/credentials", stack.api))
        .bearer_auth(TOKEN)
        .json(
            &json!({"name": "hostile", "type": "oauth2ClientCredentials", "clientId": "c",
                      "clientSecret": "s", "tokenUrl": format!("http://127.0.0.1:{port}/token")}),
        )
        .send()
        .await
        .expect("create");
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.expect("json")["id"]
        .as_i64()
        .expect("id");
    let url = format!("{}/api/account/8101/credentials/{id}", stack.api);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let v: Value = stack
            .client
            .get(&url)
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("control plane answers")
            .json()
            .await
            .expect("json");
        if v["status"] != "pending" {
            break v;
        }
        assert!(Instant::now() < deadline, "the token was never taken: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status["status"], "active", "{status}");
    // A year at most is believed.
    let expires: &str = status["expiresAt"].as_str().expect("expiresAt");
    assert!(expires.get(..4).is_some_and(|y| y < "2100"), "{expires}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(stack.control_plane_alive(), "the control plane died");
    let r = stack
        .client
        .get(format!("{}/healthz", stack.api))
        .send()
        .await
        .expect("health");
    assert_eq!(r.status(), 200);
}

/// Finding 5: deleting another account's certificate id from one's own account used to
/// answer 409 listing the owner's mappings (URLs, names, CA bundles). It is 404 on every
/// path now, and the owner's certificate and mapping stay untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_accounts_certificate_is_not_found_and_leaks_nothing() {
    let stack = Stack::start().await;
    let target = Target::start().await;
    let owner = "8201";
    let attacker = "8202";
    let client = target.client_ca.client("owner-cert");
    let cert = stack
        .upload_ok(
            owner,
            "owner-cert",
            client.p12(&target.client_ca, "pw"),
            "pw",
        )
        .await;
    let secret_url = target.upstream.url("/owner-secret-path");
    stack
        .map_ok(
            owner,
            cert,
            "1",
            &secret_url,
            "owner-mapping-name",
            &target.server_ca.cert_pem,
        )
        .await;
    let attacker_token = stack.token_for(attacker).await;
    let paths = [
        format!("{}/mtls/account/{attacker}/certificates/{cert}", stack.api),
        format!(
            "{}/mtls/account/{attacker}/certificates/{cert}",
            stack.gateway
        ),
    ];
    for url in &paths {
        for method in [reqwest::Method::DELETE, reqwest::Method::GET] {
            let r = stack
                .client
                .request(method.clone(), url)
                .bearer_auth(&attacker_token)
                .send()
                .await
                .expect("request");
            let status = r.status().as_u16();
            let text = r.text().await.expect("text");
            assert_eq!(status, 404, "{method} {url}: {text}");
            for leak in [
                "owner-mapping-name",
                "owner-secret-path",
                "BEGIN CERTIFICATE",
            ] {
                assert!(!text.contains(leak), "{method} {url} leaked {leak}: {text}");
            }
        }
    }
    // The owner's own path, with the attacker's token: refused before anything is read.
    let r = stack
        .client
        .delete(format!(
            "{}/mtls/account/{owner}/certificates/{cert}",
            stack.api
        ))
        .bearer_auth(&attacker_token)
        .send()
        .await
        .expect("delete");
    assert_eq!(error_code(r).await.0, 403);
    // Untouched: the owner's mapping still forwards with its certificate.
    let r = stack.forward_when_mapped(owner, &secret_url, "IDP").await;
    assert_eq!(r.status(), 200);
    // And the owner still gets the 409 that names its own mappings.
    let r = stack
        .client
        .delete(format!(
            "{}/mtls/account/{owner}/certificates/{cert}",
            stack.api
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 409);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["code"], "certificate_in_use");
    assert_eq!(v["mappings"][0]["name"], "owner-mapping-name");
}

/// Sends `head` (request line and headers, without the blank line) and, `delay` later, the
/// body, over one raw HTTP/1.1 connection to the gateway; answers the status and body.
async fn slow_body_request(
    gateway: &str,
    head: &str,
    body: &str,
    delay: Duration,
) -> (u16, String) {
    let addr = gateway.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "{head}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.expect("head");
    tokio::time::sleep(delay).await;
    conn.write_all(body.as_bytes()).await.expect("body");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), conn.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (status, body)
}

/// Finding 1: on the check-mapping path the filter let the headers continue (to wait for the
/// body) without removing a caller's `x-mtlsgate-cluster`, and the route that matched on that
/// header sent the request to the named cluster, another account's, with its client
/// certificate. Now the header is stripped on every path and the route also needs the
/// filter's own forward record: the other account's partner sees no connection at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_set_cluster_header_never_reaches_another_accounts_partner() {
    let stack = Stack::start().await;
    let target = Target::start().await;
    let victim = "8301";
    let attacker = "8302";
    let client = target.client_ca.client("victim-cert");
    let cert = stack
        .upload_ok(victim, "victim", client.p12(&target.client_ca, "pw"), "pw")
        .await;
    let url = target.upstream.url("/victim");
    stack
        .map_ok(
            victim,
            cert,
            "1",
            &url,
            "victim",
            &target.server_ca.cert_pem,
        )
        .await;
    // The victim's cluster is live in Envoy (without anyone having used it yet).
    let port = target.upstream.addr.port();
    let prefix = format!("mtls_{cert}_localhost_{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let cluster = loop {
        let clusters = stack.envoy_clusters().await;
        if let Some(line) = clusters.lines().find(|l| l.starts_with(&prefix)) {
            break line.split("::").next().unwrap_or_default().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "the victim's cluster never arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let attacker_token = stack.token_for(attacker).await;
    let body = json!([{"serviceName": "IDP", "accountId": attacker, "url": "https://x.example/"}])
        .to_string();
    let head = format!(
        "POST /mtls/mapping?v=2 HTTP/1.1\r\nhost: gateway\r\nauthorization: Bearer {attacker_token}\r\n\
         content-type: application/json\r\nx-mtlsgate-cluster: {cluster}"
    );
    let (status, answer) =
        slow_body_request(&stack.gateway, &head, &body, Duration::from_secs(2)).await;
    assert_eq!(status, 200, "{answer}");
    let v: Value = serde_json::from_str(&answer).expect("the filter's own answer");
    assert_eq!(v[0]["doExist"], false, "{v}");
    // The same header on a path the control plane serves, and on a forward of its own.
    let r = stack
        .client
        .get(format!(
            "{}/mtls/account/{attacker}/certificates",
            stack.gateway
        ))
        .bearer_auth(&attacker_token)
        .header("x-mtlsgate-cluster", &cluster)
        .send()
        .await
        .expect("list");
    assert_eq!(r.status(), 200);
    let r = stack
        .forward(
            attacker,
            "GET",
            &url,
            "IDP",
            &[("x-mtlsgate-cluster", cluster.as_str())],
            None,
        )
        .await;
    assert_eq!(error_code(r).await, (400, "no_mtls_mapping".into()));
    assert_eq!(
        target
            .upstream
            .connections
            .load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the victim's partner saw a connection from an attacker's request"
    );
    // Positive control: the cluster was live, and the counter counts.
    let r = stack.forward_when_mapped(victim, &url, "IDP").await;
    assert_eq!(r.status(), 200);
    assert!(
        target
            .upstream
            .connections
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 1
    );
}

/// Opens an ADS stream to the stack's control plane presenting `identity` (or no
/// certificate), asks for clusters as `node`, and answers the first response or why none came.
async fn ads_as(
    stack: &Stack,
    identity: Option<(String, String)>,
    node: &str,
) -> Result<usize, String> {
    use envoy_types::pb::envoy::config::core::v3::Node;
    use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
    use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(stack.link_ca()))
        .domain_name("mtlsgate-control-plane");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let channel = Channel::from_shared(stack.xds.clone())
        .map_err(|e| e.to_string())?
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(DiscoveryRequest {
        node: Some(Node {
            id: node.into(),
            ..Default::default()
        }),
        type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
        ..Default::default()
    })
    .await
    .map_err(|e| e.to_string())?;
    let mut stream = client
        .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|s| format!("{:?}", s.code()))?
        .into_inner();
    match tokio::time::timeout(Duration::from_secs(10), stream.message()).await {
        Ok(Ok(Some(r))) => Ok(r.resources.len()),
        Ok(Ok(None)) => Err("stream ended".into()),
        Ok(Err(status)) => Err(format!("{:?}", status.code())),
        Err(_) => Err("no answer".into()),
    }
}

/// Finding 2: ADS handed any client every private key (any node id, any secret name, over
/// plaintext). Now it is mutual TLS with the link CA, and a certificate serves only the node
/// it names: no certificate, another CA's, and gateway A's asking as gateway B get nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ads_serves_only_the_node_a_link_certificate_names() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let stack = Stack::start().await;
    let target = Target::start().await;
    let client = target.client_ca.client("ads-cert");
    let cert = stack
        .upload_ok("8401", "ads", client.p12(&target.client_ca, "pw"), "pw")
        .await;
    let url = target.upstream.url("/ads");
    stack
        .map_ok("8401", cert, "1", &url, "ads", &target.server_ca.cert_pem)
        .await;
    stack.forward_when_mapped("8401", &url, "IDP").await;
    let victim = stack.envoy_node_id().await;

    // No certificate: the handshake fails.
    let e = ads_as(&stack, None, &victim).await;
    assert!(e.is_err(), "no certificate got {e:?}");
    // Another CA's certificate for the very node: the handshake fails.
    let e = ads_as(&stack, Some(stack.foreign_identity(&victim)), &victim).await;
    assert!(e.is_err(), "another CA's certificate got {e:?}");
    // Gateway A's certificate asking as the victim: refused, no resource.
    let a = stack.gateway_identity("gateway-a");
    assert_eq!(
        ads_as(&stack, Some(a.clone()), &victim).await,
        Err("PermissionDenied".into())
    );
    // Positive control: the same certificate asking as itself gets the clusters.
    let served = ads_as(&stack, Some(a), "gateway-a").await;
    assert!(matches!(served, Ok(n) if n >= 1), "{served:?}");
}

/// Finding 7: login had no rate limit. Against the real server (the client address comes
/// from the TCP peer): after the free failures the user name is locked (429 with
/// `Retry-After`, before any hash), and another user is unaffected. The lock doubles from one
/// second, so the test keeps failing until a 429 shows rather than assuming a speed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_lock_the_user_name_with_retry_after() {
    let stack = Stack::start().await;
    stack.add_user("8501", "erin", "erin-password-1", true);
    stack.add_user("8501", "frank", "frank-password-1", true);
    let url = format!("{}/api/account/8501/login?v=1.3", stack.api);
    let attempt = |user: &'static str, password: &'static str| {
        let (client, url) = (stack.client.clone(), url.clone());
        async move {
            let r = client
                .post(url)
                .json(&json!({"username": user, "password": password}))
                .send()
                .await
                .expect("login");
            let retry = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap_or_default().to_owned());
            (
                r.status().as_u16(),
                retry,
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    // The five free failures, then failures until the lock shows with at least two seconds
    // left: on a slow machine a one-second lock may be over before the next request.
    for _ in 0..5 {
        assert_eq!(attempt("erin", "wrong-password").await.0, 401);
    }
    // A locked name refuses before counting, so a short lock is waited out (the next failure
    // then doubles it).
    let mut locked = false;
    for _ in 0..12 {
        let (status, retry, _) = attempt("erin", "wrong-password").await;
        assert!(status == 401 || status == 429, "{status}");
        if status == 429 {
            let secs = retry.and_then(|r| r.parse::<u64>().ok()).unwrap_or(1);
            if secs >= 2 {
                locked = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(secs * 1000 + 100)).await;
        }
    }
    assert!(locked, "the user name was never locked");
    let (status, retry, body) = attempt("erin", "erin-password-1").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (429, Some("too_many_attempts"))
    );
    assert!(retry.is_some_and(|r| r.parse::<u64>().is_ok_and(|s| s >= 1)));
    assert_eq!(attempt("frank", "frank-password-1").await.0, 200);
    assert!(stack.logs().contains("too many failed attempts"));
}
