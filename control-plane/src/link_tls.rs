//! The server side of the links gateways use — ADS and the runtime snapshot feed: TLS whose
//! client must present a certificate issued by mtlsgate's link CA ([`crate::pki`]) and not
//! revoked by its CRL (`--link-crl-file`). Anything else (no certificate, another CA's, an
//! expired or revoked one) fails the handshake and gets nothing.
//!
//! The files are followed ([`crate::server_tls::Reloading`]): a rotated control-plane
//! certificate, link CA or CRL applies to the next connection, without a restart. And to the
//! connections already open: each one ([`LinkStream`]) keeps the certificate chain its peer
//! presented and checks it again against every new configuration; one that no longer
//! passes (revoked, its CA replaced) is closed at once. why: a stolen gateway certificate
//! that holds an ADS stream or a long poll would otherwise keep reading private keys and
//! AppKey secrets for as long as it keeps the connection up.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::WatchStream;

use crate::server_tls::{certificates, private_key, read, Reloading, ServerTlsError};

/// The files of the control plane's side of the links.
#[derive(Debug, Clone)]
pub struct LinkFiles {
    /// The control plane's certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The CA that issues gateway certificates (PEM).
    pub client_ca: PathBuf,
    /// The link CA's revocation list(s) (PEM), one per CA of `client_ca`: with it, every
    /// gateway certificate's revocation status must be known (a gateway of a CA the file has
    /// no list of is refused).
    pub crl: Option<PathBuf>,
}

/// The CRLs of a PEM file: at least one, each signed by one of `cas` (a list of another CA
/// would make every gateway's status unknown, so every gateway refused: better to refuse
/// the file and keep what works).
fn crls(
    path: &Path,
    cas: &[CertificateDer<'static>],
) -> Result<Vec<CertificateRevocationListDer<'static>>, ServerTlsError> {
    use rustls::pki_types::pem::PemObject;
    let pem = read(path)?;
    let list = CertificateRevocationListDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ServerTlsError::Pem(path.to_owned(), e.to_string()))?;
    if list.is_empty() {
        return Err(ServerTlsError::Missing(path.to_owned(), "CRL"));
    }
    let keys = cas
        .iter()
        .filter_map(|ca| x509_parser::parse_x509_certificate(ca).ok())
        .collect::<Vec<_>>();
    for crl in &list {
        let (_, parsed) = x509_parser::parse_x509_crl(crl)
            .map_err(|e| ServerTlsError::Pem(path.to_owned(), e.to_string()))?;
        if !keys
            .iter()
            .any(|(_, ca)| parsed.verify_signature(ca.public_key()).is_ok())
        {
            return Err(ServerTlsError::Pem(
                path.to_owned(),
                "a CRL not signed by the link CA".into(),
            ));
        }
    }
    Ok(list)
}

/// What a link connection's peer is checked against.
pub(crate) type Verifier = Arc<dyn ClientCertVerifier>;

/// The server configuration: our certificate, and a client certificate of the link CA
/// (not revoked, when a CRL is given) required from every peer; and the verifier that
/// checks it. HTTP/2 and HTTP/1.1 are offered by ALPN (Envoy's gRPC and its HTTP/2 cluster
/// ask for `h2`).
pub fn server_config(
    files: &LinkFiles,
) -> Result<(Arc<rustls::ServerConfig>, Verifier), ServerTlsError> {
    let chain = certificates(&files.cert)?;
    let key = private_key(&files.key)?;
    let cas = certificates(&files.client_ca)?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in &cas {
        roots
            .add(ca.clone())
            .map_err(|e| ServerTlsError::Pem(files.client_ca.clone(), e.to_string()))?;
    }
    let mut builder = WebPkiClientVerifier::builder(Arc::new(roots));
    if let Some(path) = &files.crl {
        // why end entity only: gateway certificates are issued by the CA itself (a trust
        // anchor, which no CRL covers). `nextUpdate` is not enforced: a list that ages must
        // not lock out the fleet, and only the operator writes this file.
        builder = builder
            .with_crls(crls(path, &cas)?)
            .only_check_end_entity_revocation();
    }
    let verifier = builder
        .build()
        .map_err(|e| ServerTlsError::Verifier(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier.clone())
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((Arc::new(config), verifier))
}

/// The links' TLS: the configuration new connections get, and the verifier every open
/// connection is checked against again whenever it changes.
#[derive(Clone)]
pub struct LinkTls {
    /// The server configuration, made again whenever one of the files changes.
    pub tls: Arc<Reloading>,
    /// The verifier of the configuration [`LinkTls::tls`] holds now (`None` only before the
    /// first configuration was made).
    verifier: watch::Receiver<Option<Verifier>>,
}

/// [`server_config`], made again whenever one of the files changes; each configuration
/// taken publishes its verifier to the open connections.
pub fn reloading(files: LinkFiles) -> Result<LinkTls, ServerTlsError> {
    let mut paths = vec![
        files.cert.clone(),
        files.key.clone(),
        files.client_ca.clone(),
    ];
    paths.extend(files.crl.clone());
    let (publish, verifier) = watch::channel(None);
    // `Reloading` takes every configuration `make` answers, so publishing here keeps the
    // verifier and the configuration in step.
    let tls = Reloading::new("link", paths, move || {
        let (config, verifier) = server_config(&files)?;
        publish.send_replace(Some(verifier));
        Ok(config)
    })?;
    Ok(LinkTls { tls, verifier })
}

impl LinkTls {
    /// Polls the files (see [`Reloading::watch`]).
    pub fn watch(&self) -> tokio::task::JoinHandle<()> {
        self.tls.watch()
    }

    /// Accepts link connections on `listener` (handshakes as [`crate::server_tls::incoming`])
    /// and answers each as a [`LinkStream`] that closes itself once its certificate is no
    /// longer accepted.
    pub fn incoming(
        &self,
        listener: TcpListener,
    ) -> impl Stream<Item = io::Result<LinkStream>> + Send + Unpin + 'static {
        let verifier = self.verifier.clone();
        crate::server_tls::incoming(listener, self.tls.clone())
            .map(move |r| r.map(|tls| LinkStream::new(tls, verifier.clone())))
    }
}

/// Whether a peer's chain (end entity first) passes `verifier` now.
fn still_accepted(
    verifier: &dyn ClientCertVerifier,
    chain: &[CertificateDer<'static>],
) -> Result<(), rustls::Error> {
    let (end_entity, intermediates) = chain
        .split_first()
        .ok_or(rustls::Error::NoCertificatesPresented)?;
    verifier
        .verify_client_cert(end_entity, intermediates, UnixTime::now())
        .map(|_| ())
}

/// A link connection after its handshake: reads and writes go to the TLS stream until the
/// peer's certificate fails a check against a new configuration's verifier; from then on
/// every read and write fails, so the server serving it (tonic's ADS, hyper's feed) ends the
/// connection and drops the socket. The check runs when the connection is first polled too,
/// so a handshake that raced a reload is held to the newer configuration.
pub struct LinkStream {
    inner: TlsStream<TcpStream>,
    /// The peer's certificate chain as it presented it.
    chain: Vec<CertificateDer<'static>>,
    /// The node id the peer's certificate names.
    node: Option<String>,
    /// Verifiers as the files change; `None` once the reloading has stopped.
    verifiers: Option<WatchStream<Option<Verifier>>>,
    /// Set when the certificate failed a check: the connection is over.
    cut: bool,
}

impl LinkStream {
    fn new(inner: TlsStream<TcpStream>, verifier: watch::Receiver<Option<Verifier>>) -> Self {
        let chain = inner
            .get_ref()
            .1
            .peer_certificates()
            .map(<[_]>::to_vec)
            .unwrap_or_default();
        let node = chain.first().and_then(|c| crate::pki::node_id_of(c));
        LinkStream {
            inner,
            chain,
            node,
            verifiers: Some(WatchStream::new(verifier)),
            cut: false,
        }
    }

    /// The node id the peer's certificate names, if any.
    pub fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    fn revoked() -> io::Error {
        io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "the peer's certificate is no longer accepted",
        )
    }

    /// Checks the chain against every verifier published since the last poll, and registers
    /// this task to be woken by the next one.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        while !self.cut {
            let Some(verifiers) = self.verifiers.as_mut() else {
                break;
            };
            match verifiers.poll_next_unpin(cx) {
                Poll::Ready(Some(Some(verifier))) => {
                    if let Err(e) = still_accepted(verifier.as_ref(), &self.chain) {
                        tracing::warn!(node = ?self.node, error = %e, "link connection closed: its certificate is no longer accepted");
                        self.cut = true;
                    }
                }
                Poll::Ready(Some(None)) => {}
                Poll::Ready(None) => self.verifiers = None,
                Poll::Pending => break,
            }
        }
        if self.cut {
            Err(Self::revoked())
        } else {
            Ok(())
        }
    }
}

impl AsyncRead for LinkStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Err(e) = this.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for LinkStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Err(e) = this.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Err(e) = this.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.cut {
            // Nothing more is said to a peer that is no longer accepted.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for LinkStream {
    type ConnectInfo = <TlsStream<TcpStream> as tonic::transport::server::Connected>::ConnectInfo;

    /// The TLS stream's own (its peer certificates are what ADS reads the node from).
    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests;
