//! One contract, two stores: the same assertions against [`MemoryStore`] and against a real
//! OpenBao (`bao server -dev`, started here on loopback), so the in-memory store the
//! handler tests use behaves as production does.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::*;

pub(super) fn map(v: serde_json::Value) -> JsonMap {
    match v {
        serde_json::Value::Object(m) => m,
        _ => JsonMap::new(),
    }
}

/// What every [`SecretStore`] must do.
pub(super) async fn contract(store: Arc<dyn SecretStore>) {
    let path = "accounts/a/certificates/1";
    // Absent: nothing to read, no version, destroying is fine.
    assert_eq!(store.read(path, None).await.unwrap(), None);
    assert_eq!(store.current_version(path).await.unwrap(), None);
    store.destroy(path).await.unwrap();
    store.check().await.unwrap();

    // Versions count up from 1; old versions stay readable.
    let v1 = store.write(path, &map(json!({"k": "one"}))).await.unwrap();
    let v2 = store.write(path, &map(json!({"k": "two"}))).await.unwrap();
    assert_eq!((v1, v2), (1, 2));
    assert_eq!(store.current_version(path).await.unwrap(), Some(2));
    assert_eq!(
        store.read(path, None).await.unwrap(),
        Some(map(json!({"k": "two"})))
    );
    assert_eq!(
        store.read(path, Some(1)).await.unwrap(),
        Some(map(json!({"k": "one"})))
    );
    assert_eq!(store.read(path, Some(9)).await.unwrap(), None);

    // Paths are apart: another account's entry of the same id is another entry.
    let other = "accounts/b/certificates/1";
    assert_eq!(store.read(other, None).await.unwrap(), None);
    assert_eq!(
        store.write(other, &map(json!({"k": "b"}))).await.unwrap(),
        1
    );

    // Destroy removes every version, and the next write starts again at 1.
    store.destroy(path).await.unwrap();
    assert_eq!(store.read(path, None).await.unwrap(), None);
    assert_eq!(store.read(path, Some(1)).await.unwrap(), None);
    assert_eq!(store.current_version(path).await.unwrap(), None);
    assert_eq!(store.write(path, &map(json!({"k": "x"}))).await.unwrap(), 1);
    assert_eq!(
        store.read(other, None).await.unwrap(),
        Some(map(json!({"k": "b"})))
    );

    // The typed facade round-trips through the same store.
    let secrets = Secrets::new(store.clone());
    let material = Material {
        chain_pem: "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n".into(),
        key_pem: Secret::new("-----BEGIN PRIVATE KEY-----\ny\n-----END PRIVATE KEY-----\n"),
    };
    let mark = WriteId::new();
    let v = secrets
        .put_certificate("c", 7, &material, &mark)
        .await
        .unwrap();
    assert_eq!(secrets.certificate_version("c", 7).await.unwrap(), Some(v));
    let back = secrets.get_certificate("c", 7, v).await.unwrap().unwrap();
    assert_eq!(back.material.chain_pem, material.chain_pem);
    assert_eq!(back.material.key_pem.expose(), material.key_pem.expose());
    assert_eq!(
        back.write_id,
        Some(mark),
        "the API's writes carry their mark"
    );
    // An operator's version (the two fields only) reads with no mark.
    let operator = map(json!({"certificateChain": "c", "privateKey": "k"}));
    let v2 = store
        .write("accounts/c/certificates/7", &operator)
        .await
        .unwrap();
    let back = secrets.get_certificate("c", 7, v2).await.unwrap().unwrap();
    assert_eq!(back.write_id, None);

    // Destroying one version (an undone write) leaves the others; the newest live one is
    // the entry's version again, and the next write still counts on.
    let v3 = secrets
        .put_certificate("c", 7, &material, &WriteId::new())
        .await
        .unwrap();
    assert_eq!(v3, v2 + 1);
    secrets
        .destroy_certificate_version("c", 7, v3)
        .await
        .unwrap();
    assert!(secrets.get_certificate("c", 7, v3).await.unwrap().is_none());
    assert!(secrets.get_certificate("c", 7, v2).await.unwrap().is_some());
    assert_eq!(secrets.certificate_version("c", 7).await.unwrap(), Some(v2));
    assert_eq!(
        secrets
            .put_certificate("c", 7, &material, &WriteId::new())
            .await
            .unwrap(),
        v3 + 1
    );
    // Destroying versions of an entry that does not exist is fine.
    store
        .destroy_versions("accounts/none/certificates/1", &[1, 2])
        .await
        .unwrap();
    secrets
        .put_appkey("c", 3, &Secret::new("cs"), &Secret::new("ts"))
        .await
        .unwrap();
    let (cs, ts) = secrets.get_appkey("c", 3).await.unwrap().unwrap();
    assert_eq!((cs.expose(), ts.expose()), ("cs", "ts"));
    let c1 = secrets
        .put_credential("c", 4, &map(json!({"password": "p"})))
        .await
        .unwrap();
    let c2 = secrets
        .put_credential("c", 4, &map(json!({"password": "q"})))
        .await
        .unwrap();
    assert_eq!((c1, c2), (1, 2));
    assert_eq!(
        secrets.get_credential("c", 4, c1).await.unwrap(),
        Some(map(json!({"password": "p"}))),
        "a pinned version reads as written, whatever came after"
    );
    assert_eq!(
        secrets.get_credential("c", 4, 0).await.unwrap(),
        Some(map(json!({"password": "q"}))),
        "0 reads the newest"
    );
    secrets
        .destroy_credential_version("c", 4, c2)
        .await
        .unwrap();
    assert_eq!(secrets.credential_version("c", 4).await.unwrap(), Some(c1));
    secrets
        .put_credential_tokens("c", 4, &map(json!({"accessToken": "t"})))
        .await
        .unwrap();
    secrets.delete_credential("c", 4).await.unwrap();
    assert_eq!(secrets.get_credential("c", 4, c1).await.unwrap(), None);
    assert_eq!(secrets.get_credential_tokens("c", 4).await.unwrap(), None);
    // Something that is not a certificate entry is refused as malformed, not half-read.
    store
        .write("accounts/c/certificates/8", &map(json!({"nope": 1})))
        .await
        .unwrap();
    assert_eq!(
        secrets.get_certificate("c", 8, 1).await.err(),
        Some(SecretStoreError::Malformed)
    );
}

#[tokio::test]
async fn the_memory_store_keeps_the_contract() {
    contract(Arc::new(MemoryStore::new())).await;
}

#[tokio::test]
async fn the_memory_store_fails_whole_while_down() {
    let store = Arc::new(MemoryStore::new());
    store.write("p", &map(json!({"k": 1}))).await.unwrap();
    store.set_down(true);
    assert!(matches!(
        store.write("p", &map(json!({"k": 2}))).await,
        Err(SecretStoreError::Unavailable(_))
    ));
    assert!(store.read("p", None).await.is_err());
    assert!(store.destroy("p").await.is_err());
    assert!(store.check().await.is_err());
    store.set_down(false);
    // Nothing changed while down.
    assert_eq!(store.current_version("p").await.unwrap(), Some(1));
}

/// `bao server -dev` on a loopback port, killed (and its directory removed) when dropped.
struct DevServer {
    child: Child,
    /// With `-dev-tls`: the CA its certificate chains to.
    ca: Option<PathBuf>,
    dir: PathBuf,
    addr: String,
    token: String,
}

impl Drop for DevServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The real `bao`: `BAO_BIN`, else the one `scripts/setup` installs. Missing is a failure,
/// never a skip: this test is what keeps the memory store honest.
pub(super) fn bao_bin() -> PathBuf {
    let path = std::env::var_os("BAO_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/bao"));
    assert!(
        path.exists(),
        "BAO_BIN: {} does not exist; run scripts/setup to install OpenBao",
        path.display()
    );
    path
}

async fn dev_server() -> DevServer {
    dev_server_with(false).await
}

/// A dev server; with `tls`, over https with a CA of its own (`-dev-tls`).
async fn dev_server_with(tls: bool) -> DevServer {
    let dir = std::env::temp_dir().join(format!(
        "mtlsgate-bao-contract-{}",
        hex::encode(crate::random::bytes::<8>())
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let token = hex::encode(crate::random::bytes::<16>());
    // why: below the ephemeral range; dev mode also listens on port + 1 (cluster).
    let port = loop {
        let p = 20_000 + u16::from_le_bytes(crate::random::bytes::<2>()) % 12_000;
        if (p..p + 2).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            break p;
        }
    };
    let log = std::fs::File::create(dir.join("bao.log")).unwrap();
    let child = Command::new(bao_bin())
        // why: dev mode writes its token to $HOME/.vault-token; parallel tests would race.
        .env("HOME", &dir)
        .args([
            "server",
            "-dev",
            &format!("-dev-root-token-id={token}"),
            &format!("-dev-listen-address=127.0.0.1:{port}"),
        ])
        .args(if tls {
            vec![
                "-dev-tls".to_owned(),
                format!("-dev-tls-cert-dir={}", dir.display()),
            ]
        } else {
            vec![]
        })
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let server = DevServer {
        child,
        ca: tls.then(|| dir.join("vault-ca.pem")),
        dir,
        addr: format!("{}://127.0.0.1:{port}", if tls { "https" } else { "http" }),
        token,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            // (With -dev-tls the CA file appears once the server is up.)
            if let Ok(probe) = OpenBao::new(
                &server.addr,
                Auth::Token(Secret::new(&server.token)),
                "secret",
                "t/",
                server.ca.as_deref(),
            ) {
                if probe.check().await.is_ok() {
                    return server;
                }
            }
        }
        assert!(Instant::now() < deadline, "bao dev server did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn openbao_keeps_the_contract() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let server = dev_server().await;
    let store = OpenBao::new(
        &server.addr,
        Auth::Token(Secret::new(&server.token)),
        "secret",
        "mtlsgate-contract/",
        None,
    )
    .unwrap();
    contract(Arc::new(store)).await;
    // A token the store refuses is an error, not an empty answer.
    let wrong = OpenBao::new(
        &server.addr,
        Auth::Token(Secret::new("wrong")),
        "secret",
        "x/",
        None,
    )
    .unwrap();
    assert!(matches!(
        wrong.read("p", None).await,
        Err(SecretStoreError::Refused(403))
    ));
}

/// The link to the store is verified TLS, or plain only on loopback: an https store is
/// reached with its CA and refused without it; plain http to another host is refused before
/// anything is sent.
#[tokio::test]
async fn openbao_over_tls_is_verified_and_plain_http_stays_on_loopback() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let server = dev_server_with(true).await;
    let token = Secret::new(&server.token);
    let ca = server.ca.clone().unwrap();
    let store = OpenBao::new(
        &server.addr,
        Auth::Token(token.clone()),
        "secret",
        "tls/",
        Some(&ca),
    )
    .unwrap();
    store.check().await.unwrap();
    let mut entry = JsonMap::new();
    entry.insert("k".into(), serde_json::json!("v"));
    let v = store.write("p", &entry).await.unwrap();
    assert_eq!(store.read("p", Some(v)).await.unwrap(), Some(entry));

    // Without its CA (the system roots only): the handshake fails, nothing is read.
    let unverified = OpenBao::new(
        &server.addr,
        Auth::Token(token.clone()),
        "secret",
        "tls/",
        None,
    )
    .unwrap();
    assert!(matches!(
        unverified.check().await,
        Err(SecretStoreError::Unavailable(_))
    ));
    assert!(unverified.read("p", None).await.is_err());

    for addr in [
        "http://10.0.0.1:8200",
        "http://vault.example:8200",
        "http://localhost:8200",
        "http://127.0.0.1.vault.example:8200",
    ] {
        assert!(
            matches!(
                OpenBao::new(addr, Auth::Token(token.clone()), "secret", "x/", None),
                Err(SecretStoreError::Address(_))
            ),
            "{addr}"
        );
    }
    for addr in ["http://127.0.0.1:8200", "http://[::1]:8200"] {
        assert!(
            OpenBao::new(addr, Auth::Token(token.clone()), "secret", "x/", None).is_ok(),
            "{addr}"
        );
    }
}

/// AppRole on a real OpenBao: a token revoked behind the store's back (here: every token
/// AppRole issued) means one new login, with the secret id as its file holds it *now* — an
/// operator rotates the secret id by rewriting the file, no restart.
#[tokio::test]
async fn approle_logs_in_again_with_the_secret_id_the_file_holds_now() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let server = dev_server().await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let root = |method: reqwest::Method, path: &str, body: serde_json::Value| {
        let req = http
            .request(method, format!("{}/v1/{path}", server.addr))
            .header("X-Vault-Token", &server.token)
            .body(body.to_string());
        let path = path.to_owned();
        async move {
            let r = req.send().await.unwrap();
            let status = r.status();
            let text = r.text().await.unwrap();
            assert!(status.is_success(), "{path}: {status} {text}");
            serde_json::from_str::<serde_json::Value>(&text).unwrap_or_default()
        }
    };
    use reqwest::Method;
    root(Method::POST, "sys/auth/approle", json!({"type": "approle"})).await;
    root(
        Method::PUT,
        "sys/policies/acl/mtlsgate",
        json!({"policy": "path \"secret/data/ar/*\" { capabilities = [\"create\", \"read\", \"update\"] }\npath \"secret/metadata/ar/*\" { capabilities = [\"read\", \"list\", \"delete\"] }\npath \"secret/metadata/ar/\" { capabilities = [\"list\"] }"}),
    )
    .await;
    root(
        Method::POST,
        "auth/approle/role/m",
        json!({"token_policies": "mtlsgate", "token_ttl": "1h"}),
    )
    .await;
    let role_id = root(Method::GET, "auth/approle/role/m/role-id", json!({})).await["data"]
        ["role_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let new_secret_id = || root(Method::POST, "auth/approle/role/m/secret-id", json!({}));
    let first = new_secret_id().await["data"]["secret_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (role_file, secret_file) = (server.dir.join("role-id"), server.dir.join("secret-id"));
    std::fs::write(&role_file, &role_id).unwrap();
    std::fs::write(&secret_file, &first).unwrap();

    let store = OpenBao::new(
        &server.addr,
        Auth::AppRole(AppRole::from_files("approle", &role_file, &secret_file).unwrap()),
        "secret",
        "ar/",
        None,
    )
    .unwrap();
    let v = store.write("p", &map(json!({"k": 1}))).await.unwrap();
    assert_eq!(store.auth_counts(), (1, 0));

    // The operator rotates the secret id (the old one destroyed) and revokes every token
    // AppRole issued, mtlsgate's among them.
    let second = new_secret_id().await["data"]["secret_id"]
        .as_str()
        .unwrap()
        .to_owned();
    std::fs::write(&secret_file, format!("{second}\n")).unwrap();
    root(
        Method::POST,
        "auth/approle/role/m/secret-id/destroy",
        json!({ "secret_id": first }),
    )
    .await;
    root(
        Method::PUT,
        "sys/leases/revoke-prefix/auth/approle/login",
        json!({}),
    )
    .await;

    // The next request is refused with the revoked token, logs in again with the new
    // secret id, and is carried out.
    assert_eq!(
        store.read("p", Some(v)).await.unwrap(),
        Some(map(json!({"k": 1})))
    );
    assert_eq!(store.auth_counts().0, 2, "one new login");

    // With no valid secret id left, the login is refused: an error, once, not a loop.
    root(
        Method::POST,
        "auth/approle/role/m/secret-id/destroy",
        json!({ "secret_id": second }),
    )
    .await;
    root(
        Method::PUT,
        "sys/leases/revoke-prefix/auth/approle/login",
        json!({}),
    )
    .await;
    assert!(matches!(
        store.read("p", None).await,
        Err(SecretStoreError::Refused(_))
    ));
    assert_eq!(store.auth_counts().0, 2, "the refused login is not counted");
}
