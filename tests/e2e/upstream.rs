//! A real HTTPS server that requires a client certificate and answers, as JSON, what it
//! received: method, path, headers, body, and the SHA-256 of the client certificate.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::pki::{Ca, Issued};

pub struct Upstream {
    pub addr: SocketAddr,
    /// TCP connections accepted so far (handshakes refused included): what a test checks to
    /// prove nothing reached this partner at all.
    pub connections: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    /// Serves on a free loopback port with `server` as its certificate, accepting client
    /// certificates issued by any of `client_cas`.
    pub async fn start(server: &Issued, client_cas: &[&[u8]]) -> Upstream {
        Self::start_with(server, client_cas, true).await
    }

    /// Like `start`; with `require_client_cert: false` a client without a certificate is
    /// served too (and reported with an empty fingerprint).
    pub async fn start_with(
        server: &Issued,
        client_cas: &[&[u8]],
        require_client_cert: bool,
    ) -> Upstream {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut roots = RootCertStore::empty();
        for der in client_cas {
            roots
                .add(CertificateDer::from(der.to_vec()))
                .expect("client CA");
        }
        let config = rustls::ServerConfig::builder();
        let config = if require_client_cert {
            let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .expect("verifier");
            config.with_client_cert_verifier(verifier)
        } else {
            config.with_no_client_auth()
        };
        let config = config
            .with_single_cert(
                vec![CertificateDer::from(server.cert_der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server.key_der.clone())),
            )
            .expect("server config");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A refused handshake (no or wrong client certificate) just ends here.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let fingerprint = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| hex::encode(Sha256::digest(c.as_ref())))
                        .unwrap_or_default();
                    let version = match tls.get_ref().1.protocol_version() {
                        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
                        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
                        _ => "other",
                    };
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let fingerprint = fingerprint.clone();
                        async move { Ok::<_, Infallible>(echo(req, &fingerprint, version).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Upstream {
            addr,
            connections,
            task,
        }
    }

    /// `https://localhost:<port><path>`
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }
}

/// What the upstream saw, as it answers it.
/// Answers what the upstream saw: method, path, headers, body, the client certificate's
/// fingerprint and the TLS version of the connection.
pub async fn echo(
    req: Request<Incoming>,
    fingerprint: &str,
    tls_version: &str,
) -> Response<Full<Bytes>> {
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in req.headers() {
        headers
            .entry(k.as_str().to_owned())
            .or_default()
            .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let json = serde_json::json!({
        "method": method,
        "path": path,
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
        "clientCertSha256": fingerprint,
        "tlsVersion": tls_version,
    });
    Response::builder()
        .header("content-type", "application/json")
        .header("x-upstream", "yes")
        .body(Full::new(Bytes::from(json.to_string())))
        .expect("response")
}

/// A ready-made PKI for a test: a CA for clients, a server certificate for `localhost`
/// from its own CA, and an upstream that trusts the client CA.
pub struct Target {
    pub client_ca: Ca,
    pub server_ca: Ca,
    pub upstream: Upstream,
}

impl Target {
    pub async fn start() -> Target {
        let client_ca = Ca::new("client CA");
        let server_ca = Ca::new("server CA");
        let upstream = Upstream::start(&server_ca.server(), &[&client_ca.cert_der]).await;
        Target {
            client_ca,
            server_ca,
            upstream,
        }
    }
}
