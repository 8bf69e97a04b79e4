//! Real handshakes and open connections against [`LinkTls::incoming`] while the CRL changes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::pki::{crl_path, issue_gateway, revoke, RevokeTarget};

fn scratch() -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "mtlsgate-link-tls-test-{}",
        hex::encode(crate::random::bytes::<8>())
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A PKI with gateways `gw-1` and `gw-2`, and the link files that follow its CRL.
fn pki() -> (PathBuf, LinkFiles) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = scratch();
    crate::pki::init(&dir, &[]).unwrap();
    issue_gateway(&dir, "gw-1").unwrap();
    issue_gateway(&dir, "gw-2").unwrap();
    let files = LinkFiles {
        cert: dir.join("control-plane.pem"),
        key: dir.join("control-plane.key"),
        client_ca: dir.join("ca.pem"),
        crl: Some(crl_path(&dir)),
    };
    (dir, files)
}

/// Serves `link` on a loopback port: each connection echoes every byte until it ends.
async fn serve(link: &LinkTls) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut streams = link.incoming(listener);
    tokio::spawn(async move {
        while let Some(Ok(mut s)) = streams.next().await {
            tokio::spawn(async move {
                let mut b = [0u8; 1];
                while let Ok(1..) = s.read(&mut b).await {
                    if s.write_all(&b).await.is_err() || s.flush().await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

type Client = tokio_rustls::client::TlsStream<TcpStream>;

/// Connects as gateway `node` of `dir` and has one byte echoed: the connection, or why
/// there is none.
async fn connect(addr: std::net::SocketAddr, dir: &Path, node: &str) -> Result<Client, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certificates(&dir.join("ca.pem")).unwrap() {
        roots.add(c).unwrap();
    }
    let gw = dir.join("gateways").join(node);
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            certificates(&gw.join("gateway.pem")).unwrap(),
            private_key(&gw.join("gateway.key")).unwrap(),
        )
        .unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    echo(&mut tls).await?;
    Ok(tls)
}

/// Sends a byte and reads it back (TLS 1.3 tells a refused client at its first read).
async fn echo(tls: &mut Client) -> Result<(), String> {
    tls.write_all(b"x").await.map_err(|e| e.to_string())?;
    tls.flush().await.map_err(|e| e.to_string())?;
    let mut b = [0u8; 1];
    match tokio::time::timeout(Duration::from_secs(5), tls.read(&mut b)).await {
        Ok(Ok(1)) => Ok(()),
        Ok(Ok(_)) => Err("closed".into()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no echo".into()),
    }
}

/// Waits, without sending anything, until the server ends the connection: how long that
/// took, or `None` if it stayed open for `limit`.
async fn closed_within(tls: &mut Client, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut b = [0u8; 1];
    match tokio::time::timeout(limit, tls.read(&mut b)).await {
        Ok(Ok(0)) | Ok(Err(_)) => Some(start.elapsed()),
        Ok(Ok(_)) | Err(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_gateways_open_connection_is_closed_and_its_next_handshake_refused() {
    let (dir, files) = pki();
    let link = reloading(files).unwrap();
    let addr = serve(&link).await;
    let mut revoked = connect(addr, &dir, "gw-1").await.unwrap();
    let mut other = connect(addr, &dir, "gw-2").await.unwrap();

    revoke(&dir, &RevokeTarget::Node("gw-1".into())).unwrap();
    assert!(link.tls.reload_if_changed(), "the new CRL is taken");
    // The idle connection of the revoked certificate is closed by the server at once.
    let took = closed_within(&mut revoked, Duration::from_secs(2)).await;
    assert!(
        took.is_some(),
        "the revoked gateway's connection stayed open"
    );
    // Its next handshake fails; the other gateway's open connection and new ones work.
    assert!(connect(addr, &dir, "gw-1").await.is_err());
    echo(&mut other).await.unwrap();
    assert!(connect(addr, &dir, "gw-2").await.is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_crl_stops_the_start_and_on_reload_leaves_the_last_good_list_in_force() {
    let (dir, files) = pki();
    let crl = crl_path(&dir);
    let good = std::fs::read(&crl).unwrap();
    let garbage = b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n".to_vec();
    let other = scratch();
    crate::pki::init(&other, &[]).unwrap();
    let foreign = std::fs::read(crl_path(&other)).unwrap();
    // At start: malformed, empty, another CA's, missing: no configuration.
    for (what, bytes) in [
        ("malformed", Some(garbage.clone())),
        ("empty", Some(Vec::new())),
        ("another CA's", Some(foreign.clone())),
        ("missing", None),
    ] {
        match &bytes {
            Some(b) => std::fs::write(&crl, b).unwrap(),
            None => std::fs::remove_file(&crl).unwrap(),
        }
        assert!(reloading(files.clone()).is_err(), "{what} CRL accepted");
    }
    std::fs::write(&crl, &good).unwrap();
    let link = reloading(files).unwrap();
    let addr = serve(&link).await;

    // A valid revocation of gw-1 applies; then broken or missing files leave it in force.
    revoke(&dir, &RevokeTarget::Node("gw-1".into())).unwrap();
    assert!(link.tls.reload_if_changed());
    for bytes in [Some(garbage), Some(foreign), None] {
        match &bytes {
            Some(b) => std::fs::write(&crl, b).unwrap(),
            None => std::fs::remove_file(&crl).unwrap(),
        }
        assert!(!link.tls.reload_if_changed(), "a bad CRL was taken");
        assert!(connect(addr, &dir, "gw-1").await.is_err());
        assert!(connect(addr, &dir, "gw-2").await.is_ok());
    }
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&other).unwrap();
}
