//! The server side of the links gateways use — ADS and the runtime snapshot feed: TLS whose
//! client must present a certificate issued by mtlsgate's link CA ([`crate::pki`]). Anything
//! else (no certificate, another CA's, an expired one) fails the handshake and gets nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;

/// How long a client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes under way at once; more wait for their turn.
const MAX_HANDSHAKES: usize = 256;

/// Why the link TLS configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LinkTlsError {
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{0} holds no {1}")]
    Missing(PathBuf, &'static str),
    #[error("{0}: {1}")]
    Pem(PathBuf, String),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("client verifier: {0}")]
    Verifier(String),
}

/// The files of the control plane's side of the links.
#[derive(Debug, Clone)]
pub struct LinkFiles {
    /// The control plane's certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The CA that issues gateway certificates (PEM).
    pub client_ca: PathBuf,
}

fn read(path: &Path) -> Result<Vec<u8>, LinkTlsError> {
    std::fs::read(path).map_err(|e| LinkTlsError::Read(path.to_owned(), e))
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, LinkTlsError> {
    use rustls::pki_types::pem::PemObject;
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| LinkTlsError::Pem(path.to_owned(), e.to_string()))?;
    if certs.is_empty() {
        return Err(LinkTlsError::Missing(path.to_owned(), "certificate"));
    }
    Ok(certs)
}

/// The server configuration: our certificate, and a client certificate of the link CA
/// required from every peer. HTTP/2 and HTTP/1.1 are offered by ALPN (Envoy's gRPC and its
/// HTTP/2 cluster ask for `h2`).
pub fn server_config(files: &LinkFiles) -> Result<Arc<rustls::ServerConfig>, LinkTlsError> {
    use rustls::pki_types::pem::PemObject;
    let chain = certificates(&files.cert)?;
    let key = PrivateKeyDer::from_pem_slice(&read(&files.key)?)
        .map_err(|e| LinkTlsError::Pem(files.key.clone(), e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in certificates(&files.client_ca)? {
        roots
            .add(ca)
            .map_err(|e| LinkTlsError::Pem(files.client_ca.clone(), e.to_string()))?;
    }
    let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .map_err(|e| LinkTlsError::Verifier(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts connections on `listener` and completes their handshakes concurrently (each
/// bounded in time, a bounded number at once), yielding the TLS streams that succeeded.
/// A failed handshake is logged at debug level and dropped: the peer gets nothing.
pub fn incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> ReceiverStream<std::io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "link listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let (acceptor, out) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let _slot = slot;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = out.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "link handshake refused")
                    }
                    Err(_) => tracing::debug!(%peer, "link handshake timed out"),
                }
            });
            if tx.is_closed() {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}

/// The node id the peer's certificate names, if any.
pub fn peer_node(tls: &TlsStream<TcpStream>) -> Option<String> {
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| crate::pki::node_id_of(c))
}
