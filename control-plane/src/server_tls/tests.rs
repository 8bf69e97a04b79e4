//! Real handshakes against [`incoming`] while the files change under it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rustls::pki_types::{CertificateDer, ServerName};

use super::*;

fn scratch() -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "mtlsgate-server-tls-test-{}",
        hex::encode(crate::random::bytes::<8>())
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn der_of(pem_file: &Path) -> Vec<u8> {
    certificates(pem_file).unwrap()[0].to_vec()
}

/// Serves `tls` on a loopback port: each connection echoes one byte.
async fn serve(tls: Arc<Reloading>) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut streams = incoming(listener, tls);
    tokio::spawn(async move {
        while let Some(Ok(mut s)) = streams.next().await {
            tokio::spawn(async move {
                let mut b = [0u8; 1];
                if s.read_exact(&mut b).await.is_ok() {
                    let _ = s.write_all(&b).await;
                    let _ = s.flush().await;
                }
            });
        }
    });
    addr
}

/// Connects trusting `ca_pem`, presenting `identity` (certificate and key files) if given;
/// answers the server's certificate, or the handshake's error.
async fn handshake(
    addr: std::net::SocketAddr,
    ca_pem: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<Vec<u8>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certificates(ca_pem).unwrap() {
        roots.add(c).unwrap();
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(certificates(cert).unwrap(), private_key(key).unwrap())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    // TLS 1.3 sends the verdict on a client certificate after the client's handshake ends:
    // a refused client learns it at its first read.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tls.write_all(b"x").await.map_err(|e| e.to_string())?;
    tls.flush().await.map_err(|e| e.to_string())?;
    let mut buf = [0u8; 1];
    match tokio::time::timeout(Duration::from_secs(5), tls.read_exact(&mut buf)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err("no echo".into()),
    }
    let (_, conn) = tls.get_ref();
    let certs: &[CertificateDer] = conn.peer_certificates().unwrap_or_default();
    Ok(certs.first().map(|c| c.to_vec()).unwrap_or_default())
}

#[tokio::test]
async fn a_rotated_certificate_reaches_the_next_connection_and_half_written_files_are_not_taken() {
    let dir = scratch();
    crate::pki::init(&dir, &[]).unwrap();
    let (cert, key) = (dir.join("control-plane.pem"), dir.join("control-plane.key"));
    let tls = {
        let (cert, key) = (cert.clone(), key.clone());
        Reloading::new("test", vec![cert.clone(), key.clone()], move || {
            plain_server_config(&cert, &key)
        })
        .unwrap()
    };
    let addr = serve(tls.clone()).await;
    let ca = dir.join("ca.pem");
    let first = der_of(&cert);
    assert_eq!(handshake(addr, &ca, None).await.unwrap(), first);
    assert!(!tls.reload_if_changed(), "nothing changed yet");

    // Rotated in place: the next connection gets the new certificate.
    crate::pki::issue_control_plane(&dir, &[]).unwrap();
    let second = der_of(&cert);
    assert_ne!(first, second);
    assert!(tls.reload_if_changed());
    assert_eq!(handshake(addr, &ca, None).await.unwrap(), second);

    // A rotation caught halfway (a new key, the old certificate): not taken, the current
    // configuration stays; once both files are written it is.
    let old_cert = std::fs::read(&cert).unwrap();
    crate::pki::issue_control_plane(&dir, &[]).unwrap();
    let third = der_of(&cert);
    std::fs::write(&cert, &old_cert).unwrap();
    assert!(
        !tls.reload_if_changed(),
        "a key that is not the certificate's was taken"
    );
    assert_eq!(handshake(addr, &ca, None).await.unwrap(), second);
    std::fs::write(&key, b"-----BEGIN PRIVATE KEY-----\ngarbage\n").unwrap();
    assert!(!tls.reload_if_changed(), "an unreadable key was taken");
    assert_eq!(handshake(addr, &ca, None).await.unwrap(), second);

    // The watch finds a finished rotation by itself.
    let watch = tls.watch();
    crate::pki::issue_control_plane(&dir, &[]).unwrap();
    let fourth = der_of(&cert);
    assert_ne!(third, fourth);
    let deadline = Instant::now() + Duration::from_secs(10);
    while handshake(addr, &ca, None).await.unwrap() != fourth {
        assert!(
            Instant::now() < deadline,
            "the watch never took the new files"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    watch.abort();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_replaced_link_ca_admits_its_gateways_and_refuses_the_old_ones() {
    let (old, new) = (scratch(), scratch());
    crate::pki::init(&old, &[]).unwrap();
    crate::pki::init(&new, &[]).unwrap();
    let old_gw = crate::pki::issue_gateway(&old, "gw-1").unwrap();
    let new_gw = crate::pki::issue_gateway(&new, "gw-1").unwrap();
    let client_ca = old.join("client-ca.pem");
    std::fs::copy(old.join("ca.pem"), &client_ca).unwrap();
    let tls = crate::link_tls::reloading(crate::link_tls::LinkFiles {
        cert: old.join("control-plane.pem"),
        key: old.join("control-plane.key"),
        client_ca: client_ca.clone(),
        crl: None,
    })
    .unwrap()
    .tls;
    let addr = serve(tls.clone()).await;
    let ca = old.join("ca.pem");
    let id = |d: &Path| (d.join("gateway.pem"), d.join("gateway.key"));
    let (old_cert, old_key) = id(&old_gw);
    let (new_cert, new_key) = id(&new_gw);
    assert!(handshake(addr, &ca, Some((&old_cert, &old_key)))
        .await
        .is_ok());
    assert!(handshake(addr, &ca, Some((&new_cert, &new_key)))
        .await
        .is_err());
    assert!(
        handshake(addr, &ca, None).await.is_err(),
        "no client certificate"
    );

    std::fs::copy(new.join("ca.pem"), &client_ca).unwrap();
    assert!(tls.reload_if_changed());
    assert!(handshake(addr, &ca, Some((&new_cert, &new_key)))
        .await
        .is_ok());
    assert!(
        handshake(addr, &ca, Some((&old_cert, &old_key)))
            .await
            .is_err(),
        "a gateway of the replaced CA still got in"
    );
    let _ = std::fs::remove_dir_all(&old);
    let _ = std::fs::remove_dir_all(&new);
}
