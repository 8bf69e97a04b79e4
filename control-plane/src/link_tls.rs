//! The server side of the links gateways use — ADS and the runtime snapshot feed: TLS whose
//! client must present a certificate issued by mtlsgate's link CA ([`crate::pki`]). Anything
//! else (no certificate, another CA's, an expired one) fails the handshake and gets nothing.
//! The files are followed ([`crate::server_tls::Reloading`]): a rotated control-plane
//! certificate or link CA applies to the next connection, without a restart.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::server_tls::{certificates, private_key, Reloading, ServerTlsError};

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

/// The server configuration: our certificate, and a client certificate of the link CA
/// required from every peer. HTTP/2 and HTTP/1.1 are offered by ALPN (Envoy's gRPC and its
/// HTTP/2 cluster ask for `h2`).
pub fn server_config(files: &LinkFiles) -> Result<Arc<rustls::ServerConfig>, ServerTlsError> {
    let chain = certificates(&files.cert)?;
    let key = private_key(&files.key)?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in certificates(&files.client_ca)? {
        roots
            .add(ca)
            .map_err(|e| ServerTlsError::Pem(files.client_ca.clone(), e.to_string()))?;
    }
    let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .map_err(|e| ServerTlsError::Verifier(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// [`server_config`], made again whenever one of the three files changes.
pub fn reloading(files: LinkFiles) -> Result<Arc<Reloading>, ServerTlsError> {
    let paths = vec![
        files.cert.clone(),
        files.key.clone(),
        files.client_ca.clone(),
    ];
    Reloading::new("link", paths, move || server_config(&files))
}

/// The node id the peer's certificate names, if any.
pub fn peer_node(tls: &TlsStream<TcpStream>) -> Option<String> {
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| crate::pki::node_id_of(c))
}
