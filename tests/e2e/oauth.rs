//! Credentials that need tokens (OAuth 2.0 client credentials and authorization code, Transfer
//! to Messaging) against a real authorization server this project did not write (npm
//! `oidc-provider`, see tests/oauth-server/), and Mutual Authentication with a JKS key store
//! and a separate trust certificate.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use crate::harness::{error_code, free_port, root, Options, Stack, TOKEN};
use crate::pki::{Ca, Issued};
use crate::upstream::Target;

const A: &str = "8118";

/// The authorization server, on HTTPS with a certificate from its own CA.
struct AuthServer {
    port: u16,
    child: Child,
    dir: std::path::PathBuf,
    log: std::path::PathBuf,
}

impl AuthServer {
    fn start(ca: &Ca, cert: &Issued, port: u16, clients: &Value, ttl: u64) -> AuthServer {
        let script = root().join("tests/oauth-server/server.mjs");
        assert!(
            root()
                .join("tests/oauth-server/node_modules/oidc-provider")
                .exists(),
            "oidc-provider is not installed; run scripts/test (or scripts/setup)"
        );
        let dir =
            std::env::temp_dir().join(format!("mtlsgate-oauth-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let chain = format!("{}{}", pem("CERTIFICATE", &cert.cert_der), ca.cert_pem);
        std::fs::write(dir.join("cert.pem"), chain).unwrap();
        std::fs::write(dir.join("key.pem"), pem("PRIVATE KEY", &cert.key_der)).unwrap();
        let log = dir.join("oauth.log");
        let mut child = Command::new("node")
            .arg(script)
            .env("OAUTH_PORT", port.to_string())
            .env("OAUTH_CERT", dir.join("cert.pem"))
            .env("OAUTH_KEY", dir.join("key.pem"))
            .env("OAUTH_CLIENTS", clients.to_string())
            .env("OAUTH_ACCESS_TTL", ttl.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .expect("node (part of the base toolchain)");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        assert!(
            line.starts_with("READY"),
            "the OAuth server did not start: {line} {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        AuthServer {
            port,
            child,
            dir,
            log,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- OAuth server log ----\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

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

/// A client that trusts the authorization server's CA and follows redirects (a browser).
fn browser(ca: &Ca) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.cert_pem.as_bytes()).unwrap()])
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// A stack whose control plane trusts `ca` for token endpoints.
async fn stack_trusting(ca: &Ca) -> Stack {
    Stack::start_with(Options {
        token_endpoint_ca_pem: Some(ca.cert_pem.clone()),
        ..Options::default()
    })
    .await
}

/// An mTLS upstream, and an uploaded certificate it trusts (for the mappings).
async fn target_with_cert(stack: &Stack, name: &str) -> (Target, i64) {
    let target = Target::start().await;
    let cert = stack
        .upload_ok(
            A,
            &format!("{name}-cert"),
            target.client_ca.client(name).p12(&target.client_ca, "pw"),
            "pw",
        )
        .await;
    (target, cert)
}

/// Whether the authorization server itself considers a token valid.
async fn active(browser: &reqwest::Client, server: &AuthServer, token: &str) -> bool {
    let mut url = reqwest::Url::parse(&server.url("/test/valid")).unwrap();
    url.query_pairs_mut().append_pair("token", token);
    let v: Value = browser.get(url).send().await.unwrap().json().await.unwrap();
    v["active"] == true
}

async fn api(
    stack: &Stack,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut req = stack
        .client
        .request(method, format!("{}/api/account/{A}{path}", stack.api))
        .bearer_auth(TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap()
}

async fn credential(stack: &Stack, id: i64) -> Value {
    api(
        stack,
        reqwest::Method::GET,
        &format!("/credentials/{id}"),
        None,
    )
    .await
    .json()
    .await
    .unwrap()
}

/// Waits until the credential's `status` is `want`; answers the credential.
async fn status_becomes(stack: &Stack, id: i64, want: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let c = credential(stack, id).await;
        if c["status"] == want {
            return c;
        }
        assert!(Instant::now() < deadline, "status never became {want}: {c}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn map(stack: &Stack, cert: i64, target: &Target, name: &str, credential: i64) -> String {
    let url = target.upstream.url(&format!("/{name}"));
    let r = stack
        .map(A, json!([{"certificationId": cert.to_string(), "serviceId": "1", "url": url, "siteId": A, "name": name,
                       "enable": true, "deleted": false, "caCertificates": target.server_ca.cert_pem,
                       "credentialId": credential.to_string()}]))
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    url
}

/// The first forward once the mapping reached the gateway: what the upstream saw.
async fn first_forward(stack: &Stack, url: &str) -> Value {
    stack
        .forward_when_mapped(A, url, "IDP")
        .await
        .json()
        .await
        .unwrap()
}

fn bearer(seen: &Value) -> String {
    let h = seen["headers"]["authorization"][0]
        .as_str()
        .unwrap_or_default();
    h.strip_prefix("Bearer ")
        .unwrap_or_else(|| panic!("not a Bearer header: {h}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_tokens_are_refreshed_without_a_failed_forward_and_a_revoked_secret_shows(
) {
    let ca = Ca::new("authorization server CA");
    let cert = ca.server_ip();
    let port = free_port();
    let clients = |secret: &str| {
        json!([
            {"client_id": "cc-client", "client_secret": secret, "grant_types": ["client_credentials"]},
            {"client_id": "c2m-client", "client_secret": "c2m-secret-77", "grant_types": ["client_credentials"], "token_endpoint_auth_method": "client_secret_post"}
        ])
    };
    let ttl = 4;
    let mut server = AuthServer::start(&ca, &cert, port, &clients("cc-secret-1"), ttl);
    let stack = stack_trusting(&ca).await;
    let browser = browser(&ca);
    let (target, cert_id) = target_with_cert(&stack, "cc").await;

    let r = api(&stack, reqwest::Method::POST, "/credentials", Some(json!({
        "name": "cc", "type": "oauth2ClientCredentials", "clientId": "cc-client", "clientSecret": "cc-secret-1",
        "scope": "api", "tokenUrl": server.url("/token")}))).await;
    assert_eq!(r.status(), 201);
    let cc: Value = r.json().await.unwrap();
    assert_eq!(cc["clientSecret"], "********");
    let cc = cc["id"].as_i64().unwrap();
    let r = api(&stack, reqwest::Method::POST, "/credentials", Some(json!({
        "name": "c2m", "type": "transferToMessaging", "clientId": "c2m-client", "clientSecret": "c2m-secret-77",
        "tokenUrl": server.url("/token"), "clientAuthentication": "clientSecretPost"}))).await;
    assert_eq!(r.status(), 201);
    let c2m = r.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    let r = api(
        &stack,
        reqwest::Method::POST,
        "/credentials",
        Some(json!({
        "name": "basic", "type": "basicAuthentication", "username": "u", "password": "p"})),
    )
    .await;
    let basic = r.json::<Value>().await.unwrap()["id"].as_i64().unwrap();

    let active_cc = status_becomes(&stack, cc, "active", Duration::from_secs(15)).await;
    assert!(active_cc["expiresAt"].is_string(), "{active_cc}");
    assert_eq!(active_cc["lastError"], Value::Null);
    status_becomes(&stack, c2m, "active", Duration::from_secs(15)).await;

    let cc_url = map(&stack, cert_id, &target, "cc", cc).await;
    let c2m_url = map(&stack, cert_id, &target, "c2m", c2m).await;
    let basic_url = map(&stack, cert_id, &target, "basic", basic).await;
    for url in [&cc_url, &c2m_url, &basic_url] {
        first_forward(&stack, url).await;
    }

    // Three token lifetimes of steady forwarding: every forward succeeds, every token the
    // upstream sees is one the server still honours, and the token changes (refreshed before
    // it expired).
    let mut seen_tokens = std::collections::BTreeSet::new();
    let until = Instant::now() + Duration::from_secs(3 * ttl);
    let mut forwards = 0;
    while Instant::now() < until {
        for url in [&cc_url, &c2m_url] {
            let r = stack.forward(A, "GET", url, "IDP", &[], None).await;
            assert_eq!(r.status(), 200, "a forward failed during refresh");
            let token = bearer(&r.json().await.unwrap());
            assert!(
                active(&browser, &server, &token).await,
                "the upstream got an expired token"
            );
            seen_tokens.insert(token);
            forwards += 1;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(forwards > 20, "{forwards}");
    assert!(
        seen_tokens.len() >= 4,
        "tokens were not refreshed: {}",
        seen_tokens.len()
    );

    // The secret is revoked (the client re-registered with another one): refreshing fails,
    // the credential shows why, and other traffic goes on.
    drop(server);
    server = AuthServer::start(&ca, &cert, port, &clients("cc-secret-2"), ttl);
    let failing = status_becomes(&stack, cc, "error", Duration::from_secs(15)).await;
    let last_error = failing["lastError"].as_str().unwrap_or_default();
    assert!(last_error.contains("invalid_client"), "{last_error}");
    let r = stack.forward(A, "GET", &basic_url, "IDP", &[], None).await;
    assert_eq!(
        r.status(),
        200,
        "the failing token endpoint stopped other traffic"
    );
    // After the token expires the mapping is no longer served with a stale token.
    tokio::time::sleep(Duration::from_secs(ttl + 1)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = stack.forward(A, "GET", &cc_url, "IDP", &[], None).await;
        assert_ne!(r.status(), 200, "forwarded without a valid token");
        let (status, code) = error_code(r).await;
        if (status, code.as_str()) == (503, "credential_unavailable") {
            break;
        }
        assert!(Instant::now() < deadline, "{status} {code}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The account manager puts the new secret in: back to work.
    let r = api(&stack, reqwest::Method::PUT, &format!("/credentials/{cc}"), Some(json!({
        "name": "cc", "type": "oauth2ClientCredentials", "clientId": "cc-client", "clientSecret": "cc-secret-2",
        "scope": "api", "tokenUrl": server.url("/token")}))).await;
    assert_eq!(r.status(), 200);
    status_becomes(&stack, cc, "active", Duration::from_secs(15)).await;
    // why: the credential is active as soon as its token is in; the gateway learns of it one
    // rebuild and one snapshot later, and until then still refuses as unavailable.
    let seen: Value = stack
        .forward_when_served(A, &cc_url, "IDP", &[(503, "credential_unavailable")])
        .await
        .json()
        .await
        .unwrap();
    let token = bearer(&seen);
    assert!(active(&browser, &server, &token).await);

    let logs = stack.logs();
    for secret in [
        "cc-secret-1",
        "cc-secret-2",
        "c2m-secret-77",
        token.as_str(),
    ] {
        assert!(!logs.contains(secret), "a secret in a log line");
    }
    let listed = api(&stack, reqwest::Method::GET, "/credentials", None)
        .await
        .text()
        .await
        .unwrap();
    for secret in ["cc-secret-2", "c2m-secret-77", token.as_str()] {
        assert!(!listed.contains(secret), "a secret in an answer");
    }
}

/// Follows the authorization URL like a browser, stopping at the redirect to mtlsgate's
/// callback: answers that callback URL (which carries the code).
async fn authorize_until_callback(ca: &Ca, url: &str, redirect_uri: &str) -> String {
    let no_follow = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.cert_pem.as_bytes()).unwrap()])
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut next = url.to_owned();
    for _ in 0..10 {
        let r = no_follow.get(&next).send().await.unwrap();
        assert!(
            r.status().is_redirection(),
            "{}: {}",
            r.status(),
            r.text().await.unwrap_or_default()
        );
        let location = r.headers()["location"].to_str().unwrap().to_owned();
        let resolved = r.url().join(&location).unwrap().to_string();
        if resolved.starts_with(redirect_uri) {
            return resolved;
        }
        next = resolved;
    }
    panic!("never redirected to the callback");
}

fn form(pairs: &[(&str, &str)]) -> String {
    let mut u = reqwest::Url::parse("http://form/").unwrap();
    u.query_pairs_mut().extend_pairs(pairs);
    u.query().unwrap_or_default().to_owned()
}

fn query_param(url: &str, name: &str) -> Option<String> {
    reqwest::Url::parse(url)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_code_with_and_without_pkce_through_the_callback() {
    let ca = Ca::new("authorization server CA");
    let cert = ca.server_ip();
    let stack = stack_trusting(&ca).await;
    let redirect_uri = format!("{}/api/oauth2/callback", stack.api);
    let ttl = 4;
    let server = AuthServer::start(
        &ca,
        &cert,
        free_port(),
        &json!([{"client_id": "web", "client_secret": "web-secret-9", "grant_types": ["authorization_code", "refresh_token"],
                 "redirect_uris": [redirect_uri], "response_types": ["code"]}]),
        ttl,
    );
    let browser = browser(&ca);
    let (target, cert_id) = target_with_cert(&stack, "ac").await;

    for pkce in [true, false] {
        let name = format!("ac-{pkce}");
        let r = api(&stack, reqwest::Method::POST, "/credentials", Some(json!({
            "name": name, "type": "oauth2AuthorizationCode", "clientId": "web", "clientSecret": "web-secret-9",
            "scope": "api", "authUrl": server.url("/auth"), "tokenUrl": server.url("/token"), "pkce": pkce}))).await;
        assert_eq!(r.status(), 201);
        let created: Value = r.json().await.unwrap();
        assert_eq!(created["redirectUri"], redirect_uri.as_str());
        let id = created["id"].as_i64().unwrap();
        status_becomes(&stack, id, "authorizationRequired", Duration::from_secs(10)).await;

        let r = api(
            &stack,
            reqwest::Method::POST,
            &format!("/credentials/{id}/authorize"),
            None,
        )
        .await;
        assert_eq!(r.status(), 200);
        let auth: Value = r.json().await.unwrap();
        let url = auth["authorizationUrl"].as_str().unwrap();
        assert_eq!(query_param(url, "state").as_deref(), auth["state"].as_str());
        assert_eq!(
            query_param(url, "redirect_uri").as_deref(),
            Some(redirect_uri.as_str())
        );
        assert_eq!(
            query_param(url, "code_challenge_method").is_some(),
            pkce,
            "{url}"
        );

        let callback = authorize_until_callback(&ca, url, &redirect_uri).await;
        let code = query_param(&callback, "code").unwrap();
        if pkce {
            // Someone who intercepted the code cannot redeem it without the verifier: the
            // server refuses a wrong one (and, the verifier being mtlsgate's secret, the
            // code stays good for mtlsgate).
            let r = browser
                .post(server.url("/token"))
                .basic_auth("web", Some("web-secret-9"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form(&[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("redirect_uri", &redirect_uri),
                    (
                        "code_verifier",
                        "a-wrong-verifier-a-wrong-verifier-a-wrong-verifier",
                    ),
                ]))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 400);
            assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant");
        }
        // The browser arrives at mtlsgate's callback: code + verifier exchanged.
        let r = stack.client.get(&callback).send().await.unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
        let done: Value = r.json().await.unwrap();
        assert_eq!(done["authorized"], true);
        assert_eq!(done["credentialId"], id);
        // The same callback again: its state is spent.
        let r = stack.client.get(&callback).send().await.unwrap();
        assert_eq!(error_code(r).await, (400, "invalid_state".into()));

        let c = status_becomes(&stack, id, "active", Duration::from_secs(10)).await;
        assert!(c["expiresAt"].is_string());
        let url = map(&stack, cert_id, &target, &name, id).await;
        let first = bearer(&first_forward(&stack, &url).await);
        assert!(active(&browser, &server, &first).await);
        // Refreshed with the refresh token before it expires, no failed forward.
        let until = Instant::now() + Duration::from_secs(2 * ttl);
        let mut tokens = std::collections::BTreeSet::from([first.clone()]);
        while Instant::now() < until {
            let r = stack.forward(A, "GET", &url, "IDP", &[], None).await;
            assert_eq!(r.status(), 200, "a forward failed during refresh");
            let t = bearer(&r.json().await.unwrap());
            assert!(active(&browser, &server, &t).await);
            tokens.insert(t);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert!(tokens.len() >= 2, "never refreshed");

        // Re-authorize at any time: new tokens.
        let r = api(
            &stack,
            reqwest::Method::POST,
            &format!("/credentials/{id}/authorize"),
            None,
        )
        .await;
        let again: Value = r.json().await.unwrap();
        let callback = authorize_until_callback(
            &ca,
            again["authorizationUrl"].as_str().unwrap(),
            &redirect_uri,
        )
        .await;
        assert_eq!(
            stack.client.get(&callback).send().await.unwrap().status(),
            200
        );
        status_becomes(&stack, id, "active", Duration::from_secs(10)).await;
    }

    // Hostile or stray callbacks.
    for (query, status, code) in [
        ("state=never-issued&code=x", 400, "invalid_state"),
        ("code=x", 400, "invalid_callback"),
        ("state=a&state=b&code=x", 400, "invalid_callback"),
        // Over the 4,096 characters a parameter may have (4,097 'é', percent-encoded).
        (
            &format!("state=x&code={}", "%C3%A9".repeat(4097)),
            400,
            "invalid_callback",
        ),
    ] {
        let r = stack
            .client
            .get(format!("{redirect_uri}?{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(error_code(r).await, (status, code.into()), "{query}");
    }
    // The user says no at the authorization server: the credential shows it.
    let r = api(&stack, reqwest::Method::POST, "/credentials", Some(json!({
        "name": "denied", "type": "oauth2AuthorizationCode", "clientId": "web", "clientSecret": "web-secret-9",
        "authUrl": server.url("/auth"), "tokenUrl": server.url("/token")}))).await;
    let id = r.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    let auth: Value = api(
        &stack,
        reqwest::Method::POST,
        &format!("/credentials/{id}/authorize"),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    let state = auth["state"].as_str().unwrap();
    let r = stack
        .client
        .get(format!(
            "{redirect_uri}?state={state}&error=access_denied&error_description=no"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (400, "authorization_denied".into()));
    let c = credential(&stack, id).await;
    assert_eq!(c["status"], "error");
    assert!(c["lastError"].as_str().unwrap().contains("access_denied"));
    // Another account's credential is not there, for reading or authorizing.
    for (method, path) in [
        (
            reqwest::Method::GET,
            format!("/api/account/4242/credentials/{id}"),
        ),
        (
            reqwest::Method::POST,
            format!("/api/account/4242/credentials/{id}/authorize"),
        ),
    ] {
        let r = stack
            .client
            .request(method, format!("{}{path}", stack.api))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(error_code(r).await, (404, "not_found".into()), "{path}");
    }
    // A type that is not authorized by a user says so.
    let r = api(
        &stack,
        reqwest::Method::POST,
        "/credentials",
        Some(json!({
        "name": "tok", "type": "accessToken", "token": "t", "tokenType": "Bearer"})),
    )
    .await;
    let tok = r.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    let r = api(
        &stack,
        reqwest::Method::POST,
        &format!("/credentials/{tok}/authorize"),
        None,
    )
    .await;
    assert_eq!(
        error_code(r).await,
        (409, "credential_not_authorizable".into())
    );

    let logs = stack.logs();
    assert!(
        !logs.contains("web-secret-9"),
        "client secret in a log line"
    );
}

/// `keytool -importkeystore` of a PKCS#12 into a JKS file: a key store as Java users have them.
fn jks(dir: &std::path::Path, p12: &[u8], password: &str) -> Vec<u8> {
    std::fs::write(dir.join("client.p12"), p12).unwrap();
    crate::tools::run(
        dir,
        "keytool",
        &[
            "-importkeystore",
            "-srckeystore",
            "client.p12",
            "-srcstoretype",
            "PKCS12",
            "-srcstorepass",
            password,
            "-destkeystore",
            "client.jks",
            "-deststoretype",
            "JKS",
            "-deststorepass",
            password,
            "-noprompt",
        ],
    );
    let bytes = crate::tools::read(dir, "client.jks");
    assert_eq!(&bytes[..4], &[0xfe, 0xed, 0xfe, 0xed], "not a JKS file");
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_authentication_with_a_jks_key_store_and_a_private_ca_trust_certificate() {
    let stack = Stack::start().await;
    let target = Target::start().await;
    let dir = std::env::temp_dir().join(format!(
        "mtlsgate-jks-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    // The key the credential brings (trusted by the upstream) ...
    let client = target.client_ca.client("jks-client");
    let store = jks(
        &dir,
        &client.p12(&target.client_ca, "storepass"),
        "storepass",
    );
    // ... and the mapping's own certificate, from a CA the upstream does not trust: the
    // forward only works if the credential's key is the one presented.
    let stranger = Ca::new("untrusted CA");
    let cert_id = stack
        .upload_ok(
            A,
            "unused-cert",
            stranger.client("mapping").p12(&stranger, "pw"),
            "pw",
        )
        .await;

    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let r = api(&stack, reqwest::Method::POST, "/credentials", Some(json!({
        "name": "ma", "type": "mutualAuthentication", "keyCertificate": b64(&store), "keyCertificatePassword": "storepass",
        "trustCertificate": target.server_ca.cert_pem, "protocols": ["TLSv1.2", "TLSv1.3"]}))).await;
    assert_eq!(r.status(), 201);
    let ma: Value = r.json().await.unwrap();
    assert_eq!(ma["keyStoreType"], "jks");
    assert_eq!(ma["keyCertificate"], "********");
    // The same, trusting a CA that did not sign the upstream's certificate.
    let other = Ca::new("some other CA");
    let r = api(
        &stack,
        reqwest::Method::POST,
        "/credentials",
        Some(json!({
        "name": "ma-wrong-trust", "type": "mutualAuthentication", "keyCertificate": b64(&store),
        "keyCertificatePassword": "storepass", "trustCertificate": b64(&other.cert_der)})),
    )
    .await;
    assert_eq!(r.status(), 201);
    let wrong = r.json::<Value>().await.unwrap();
    // The trust certificate as a Java trust store (keytool -importcert), with its password.
    std::fs::write(dir.join("server-ca.der"), &target.server_ca.cert_der).unwrap();
    crate::tools::run(
        &dir,
        "keytool",
        &[
            "-importcert",
            "-noprompt",
            "-alias",
            "server-ca",
            "-file",
            "server-ca.der",
            "-keystore",
            "trust.jks",
            "-storetype",
            "JKS",
            "-storepass",
            "trustpass",
        ],
    );
    let trust_store = crate::tools::read(&dir, "trust.jks");
    let r = api(
        &stack,
        reqwest::Method::POST,
        "/credentials",
        Some(json!({
        "name": "ma-trust-store", "type": "mutualAuthentication", "keyCertificate": b64(&store),
        "keyCertificatePassword": "storepass", "trustCertificate": b64(&trust_store),
        "trustCertificatePassword": "trustpass", "protocols": ["TLSv1.3"]})),
    )
    .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    let via_store = r.json::<Value>().await.unwrap();
    // No protocols named: TLS 1.2, the documented default.
    let r = api(
        &stack,
        reqwest::Method::POST,
        "/credentials",
        Some(json!({
        "name": "ma-default", "type": "mutualAuthentication", "keyCertificate": b64(&store),
        "keyCertificatePassword": "storepass", "trustCertificate": target.server_ca.cert_pem})),
    )
    .await;
    assert_eq!(r.status(), 201);
    let default_tls = r.json::<Value>().await.unwrap();
    assert_eq!(default_tls["protocols"], json!(["TLSv1.2"]));

    for (name, cred) in [
        ("ma", &ma),
        ("wrong", &wrong),
        ("store", &via_store),
        ("tls12", &default_tls),
    ] {
        // No caCertificates on the mapping: trust comes from the credential alone.
        let url = target.upstream.url(&format!("/{name}"));
        let r = stack
            .map(A, json!([{"certificationId": cert_id.to_string(), "serviceId": "1", "url": url, "siteId": A,
                           "name": name, "enable": true, "deleted": false, "credentialId": cred["id"].to_string()}]))
            .await;
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    }
    let seen = first_forward(&stack, &target.upstream.url("/ma")).await;
    assert_eq!(seen["clientCertSha256"], client.fingerprint(), "{seen}");
    // ["TLSv1.2", "TLSv1.3"]: the upstream (rustls) picks the highest.
    assert_eq!(seen["tlsVersion"], "TLSv1.3");
    let seen = first_forward(&stack, &target.upstream.url("/store")).await;
    assert_eq!(seen["clientCertSha256"], client.fingerprint(), "{seen}");
    assert_eq!(seen["tlsVersion"], "TLSv1.3");
    let seen = first_forward(&stack, &target.upstream.url("/tls12")).await;
    assert_eq!(seen["tlsVersion"], "TLSv1.2");

    // Mismatched trust: the upstream's certificate is refused, nothing is forwarded.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = stack
            .forward(A, "GET", &target.upstream.url("/wrong"), "IDP", &[], None)
            .await;
        let status = r.status().as_u16();
        assert_ne!(
            status, 200,
            "forwarded to a server the trust certificate does not vouch for"
        );
        if status == 503 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never reached the upstream: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Bad key stores and protocol lists are refused with stable codes, nothing stored.
    for (body, status, code) in [
        (
            json!({"name": "x", "type": "mutualAuthentication", "keyCertificate": b64(&store), "keyCertificatePassword": "wrong-pass"}),
            422,
            "p12_bad_password",
        ),
        (
            json!({"name": "x", "type": "mutualAuthentication", "keyCertificate": b64(&store[..store.len() / 2]), "keyCertificatePassword": "storepass"}),
            422,
            "p12_unreadable",
        ),
        (
            json!({"name": "x", "type": "mutualAuthentication", "keyCertificate": b64(&store), "keyCertificatePassword": "storepass", "protocols": ["TLSv1.0", "TLSv1.3"]}),
            400,
            "invalid_protocols",
        ),
        (
            json!({"name": "x", "type": "mutualAuthentication", "keyCertificate": b64(&store), "keyCertificatePassword": "storepass", "protocols": ["SSLv3"]}),
            400,
            "invalid_protocols",
        ),
        (
            json!({"name": "x", "type": "mutualAuthentication", "keyCertificate": b64(&store), "keyCertificatePassword": "storepass", "trustCertificate": "bm90IGEgY2VydA=="}),
            400,
            "invalid_trust_certificate",
        ),
    ] {
        let r = api(
            &stack,
            reqwest::Method::POST,
            "/credentials",
            Some(body.clone()),
        )
        .await;
        assert_eq!(error_code(r).await, (status, code.into()), "{body}");
    }
    let listed: Vec<Value> = api(&stack, reqwest::Method::GET, "/credentials", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed.len(), 4);
    let logs = stack.logs();
    assert!(!logs.contains("storepass") && !logs.contains("trustpass"));
    let _ = std::fs::remove_dir_all(&dir);
}
