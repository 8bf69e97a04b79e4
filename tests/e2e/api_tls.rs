//! TLS on the caller-facing listeners, and certificates rotated in place: the management API
//! over HTTPS (`--tls-cert`, `--tls-key`), the gateway's listener over TLS with its route to
//! the API verifying the API's certificate, plain HTTP refused off loopback, and a
//! certificate rotated in place (`mtlsgate pki issue-control-plane`) presented by the API,
//! the gateway links and the gateway's listener on their next connections, without a restart.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{component, error_code, Options, Stack};
use crate::management::oauth_header;
use crate::pki::Ca;

/// The DER of the first certificate of a PEM file.
fn der_of_pem(pem: &str) -> Vec<u8> {
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE-----"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .expect("base64")
}

/// The certificate a fresh connection to `url` is shown (a new client: no pooled connection).
async fn served_certificate(
    ca_pem: &str,
    identity: Option<(String, String)>,
    url: &str,
) -> Vec<u8> {
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("CA");
    let mut b = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .tls_certs_only([ca])
        .tls_info(true);
    if let Some((cert, key)) = identity {
        b = b.identity(reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap());
    }
    let r = b.build().unwrap().get(url).send().await.expect("request");
    r.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|t| t.peer_certificate())
        .expect("the peer's certificate")
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_reach_the_api_and_the_gateway_over_tls_and_rotated_certificates_are_served_without_a_restart(
) {
    let mut stack = Stack::start_with(Options {
        tls: true,
        ..Options::default()
    })
    .await;
    assert!(stack.api.starts_with("https://"));
    let ca = stack.link_ca();
    let cert_file = stack.pki.join("control-plane.pem");
    let first = der_of_pem(&std::fs::read_to_string(&cert_file).unwrap());

    // HTTPS answers; plain HTTP on the same port gets no answer.
    let r = stack
        .client
        .get(format!("{}/healthz", stack.api))
        .send()
        .await
        .expect("https");
    assert_eq!(r.status(), 200);
    let plain = stack.api.replacen("https://", "http://", 1);
    assert!(
        reqwest::Client::new()
            .get(format!("{plain}/healthz"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .is_err(),
        "plain HTTP was answered"
    );
    let healthz = format!("{}/healthz", stack.api);
    assert_eq!(served_certificate(&ca, None, &healthz).await, first);
    // The feed (mutual TLS) shows the same certificate to a gateway.
    let node = stack.envoy_node_id().await;
    let gateway = stack.gateway_identity(&node);
    let feed = format!("{}/healthz", stack.feed);
    assert_eq!(
        served_certificate(&ca, Some(gateway.clone()), &feed).await,
        first
    );

    // The gateway's listener is TLS too, and a tenant's upload through it reaches the API over
    // TLS (the gateway's route verifies the API's certificate).
    assert!(stack.gateway.starts_with("https://"));
    let gateway_healthz = format!("{}/healthz", stack.gateway);
    assert_eq!(served_certificate(&ca, None, &gateway_healthz).await, first);
    let partner_ca = Ca::new("partner");
    let id = stack
        .upload_ok(
            "5005",
            "over-tls",
            partner_ca.client("c").p12(&partner_ca, "pw"),
            "pw",
        )
        .await;
    assert!(id > 0);

    // AppKeys sign for https, the scheme callers reach the gateway with: the filter (a
    // forward) and the control plane (a management request through the gateway) both check
    // the signature over https, and one made for http is refused.
    let r = stack
        .client
        .post(format!("{}/api/account/5005/appkeys", stack.api))
        .bearer_auth(crate::harness::TOKEN)
        .json(&serde_json::json!({"privileges": ["MTLS_FORWARD", "MTLS_MANAGE"]}))
        .send()
        .await
        .expect("appkey");
    assert_eq!(r.status(), 201);
    let key: serde_json::Value = r.json().await.expect("json");
    let certificates = format!("{}/mtls/account/5005/certificates", stack.gateway);
    let forward = format!("{}/mtls/account/5005", stack.gateway);
    let as_http = |u: &str| u.replacen("https://", "http://", 1);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = stack
            .client
            .get(&forward)
            .header("authorization", oauth_header("GET", &forward, &[], &key))
            .header("LP-forward-url", "https://partner.example/unmapped")
            .header("LP-service-name", "IDP")
            .send()
            .await
            .expect("forward");
        let (status, code) = error_code(r).await;
        // Until the gateway's snapshot has the new AppKey.
        if code != "unknown_appkey" && status != 503 {
            // Authenticated: refused only because nothing is mapped there.
            assert_eq!((status, code.as_str()), (400, "no_mtls_mapping"));
            break;
        }
        assert!(Instant::now() < deadline, "{status} {code}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = stack
        .client
        .get(&forward)
        .header(
            "authorization",
            oauth_header("GET", &as_http(&forward), &[], &key),
        )
        .header("LP-forward-url", "https://partner.example/unmapped")
        .header("LP-service-name", "IDP")
        .send()
        .await
        .expect("forward");
    assert_eq!(error_code(r).await, (401, "invalid_signature".into()));
    let r = stack
        .client
        .get(&certificates)
        .header(
            "authorization",
            oauth_header("GET", &certificates, &[], &key),
        )
        .send()
        .await
        .expect("certificates");
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    let r = stack
        .client
        .get(&certificates)
        .header(
            "authorization",
            oauth_header("GET", &as_http(&certificates), &[], &key),
        )
        .send()
        .await
        .expect("certificates");
    assert_eq!(r.status(), 401);

    // Rotated in place: the API, the links and the gateway's listener present the new one on
    // new connections.
    let out = Command::new(&stack.mtlsgate_bin)
        .args(["pki", "issue-control-plane", "--dir"])
        .arg(&stack.pki)
        .output()
        .expect("issue-control-plane");
    assert!(out.status.success(), "{out:?}");
    let second = der_of_pem(&std::fs::read_to_string(&cert_file).unwrap());
    assert_ne!(first, second);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let api = served_certificate(&ca, None, &healthz).await;
        let link = served_certificate(&ca, Some(gateway.clone()), &feed).await;
        let listener = served_certificate(&ca, None, &gateway_healthz).await;
        if api == second && link == second && listener == second {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rotated certificate was not served within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Over HTTPS the API still sees each client's address: twenty failed logins from one
    // address (each for another user name) are free, then the address is locked for 1 s,
    // 2 s, 4 s … and a login within the lock is refused before any hash. (Without the
    // address only the per-name counters would apply, and these names never repeat.) Last
    // in this test: it locks 127.0.0.1 out.
    let login = |user: String| {
        let client = stack.client.clone();
        let url = format!("{}/api/account/6006/login?v=1.3", stack.api);
        async move {
            client
                .post(url)
                .json(&serde_json::json!({"username": user, "password": "not-the-password"}))
                .send()
                .await
                .expect("login")
        }
    };
    for i in 0..20 {
        assert_eq!(login(format!("nobody-{i}")).await.status(), 401);
    }
    let mut locked = false;
    for i in 20..40 {
        let r = login(format!("nobody-{i}")).await;
        if r.status() == 429 {
            assert!(r.headers().contains_key("retry-after"));
            assert_eq!(error_code(r).await.1, "too_many_attempts");
            locked = true;
            break;
        }
        assert_eq!(r.status(), 401);
    }
    assert!(
        locked,
        "the client's address was never locked out over HTTPS"
    );

    assert!(stack.all_alive(), "a process of the stack stopped");
}

#[test]
fn plain_http_off_loopback_is_refused_at_start() {
    let bin = component("MTLSGATE_BIN", "target/release/mtlsgate");
    let pki = std::env::temp_dir().join(format!(
        "mtlsgate-api-tls-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    ));
    let _ = std::fs::remove_dir_all(&pki);
    let made = Command::new(&bin)
        .args(["pki", "init", "--dir"])
        .arg(&pki)
        .output()
        .expect("pki init");
    assert!(made.status.success(), "{made:?}");
    let log = pki.join("serve.log");
    let mut child = Command::new(&bin)
        .args(["serve", "--http-addr", "0.0.0.0:1"])
        .arg("--link-cert-file")
        .arg(pki.join("control-plane.pem"))
        .arg("--link-key-file")
        .arg(pki.join("control-plane.key"))
        .arg("--link-ca-file")
        .arg(pki.join("ca.pem"))
        .env("VAULT_TOKEN", "unused")
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(pki.join("serve.err")).unwrap())
        .spawn()
        .expect("mtlsgate serve");
    // It must stop by itself; one that starts serving is killed and fails the test.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("mtlsgate serve did not refuse plain HTTP off loopback");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = format!(
        "{}{}",
        std::fs::read_to_string(&log).unwrap_or_default(),
        std::fs::read_to_string(pki.join("serve.err")).unwrap_or_default()
    );
    let _ = std::fs::remove_dir_all(&pki);
    assert!(!status.success());
    assert!(
        text.contains("is not a loopback address"),
        "no clear refusal: {text}"
    );
}

/// A client that sends a request's headers slowly (or never finishes them) holds its
/// connection for the header-read timeout (10 s) at most, and the API answers others
/// meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stack = Stack::start().await;
    let addr = stack.api.trim_start_matches("http://").to_owned();
    let mut slow = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .expect("write");
    let r = stack
        .client
        .get(format!("{}/healthz", stack.api))
        .send()
        .await
        .expect("healthz");
    assert_eq!(r.status(), 200, "the API stopped answering others");
    let mut buf = [0u8; 512];
    let started = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match slow.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                // (A 408 answer before the close is fine too.)
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the half-sent request's connection was never closed"
    );
    // Not before the timeout: the server waited for the headers first.
    assert!(started.elapsed() >= Duration::from_secs(5));

    // The feed too, for a gateway that completed mutual TLS.
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let node = stack.envoy_node_id().await;
    let (cert, key) = stack.gateway_identity(&node);
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(stack.link_ca().as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
        )
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(stack.feed.trim_start_matches("https://"))
        .await
        .expect("connect feed");
    let mut slow = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(ServerName::try_from("mtlsgate-control-plane").unwrap(), tcp)
        .await
        .expect("handshake");
    slow.write_all(b"GET /v1/runtime/snapshot HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .expect("write");
    let closed = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match slow.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the feed kept a half-sent request's connection"
    );
}
