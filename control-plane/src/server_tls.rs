//! TLS server configurations made from files, made again when the files change, and the
//! accept loop that hands each new connection the current one: the links to gateways (ADS
//! and the feed, mutual TLS) and the management API (`--tls-cert`/`--tls-key`).
//!
//! why reload: the control plane's own certificates expire and get rotated (a stolen one,
//! at once). Restarting every control plane to pick up a new file drops every gateway's ADS
//! stream and every long poll; here a connection made after the files changed gets the new
//! certificate (and the new client CA), and the ones already open keep theirs.
//!
//! The files are polled (their bytes compared every [`POLL`]) rather than watched with
//! inotify: one small read a second costs nothing, needs no new dependency, and sees every
//! kind of replacement — a rename over the file, a Kubernetes secret's `..data` symlink swap,
//! an edit in place. Half-written files fail to parse and leave the current configuration
//! in place until the next poll finds them whole.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;

/// How often the files are compared with what the current configuration was made from.
pub(crate) const POLL: Duration = Duration::from_secs(1);
/// How long a client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes under way at once; more wait for their turn.
const MAX_HANDSHAKES: usize = 256;

/// Why a TLS configuration could not be made from its files.
#[derive(Debug, thiserror::Error)]
pub enum ServerTlsError {
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

pub(crate) fn read(path: &Path) -> Result<Vec<u8>, ServerTlsError> {
    std::fs::read(path).map_err(|e| ServerTlsError::Read(path.to_owned(), e))
}

/// Every certificate of a PEM file (at least one).
pub(crate) fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, ServerTlsError> {
    use rustls::pki_types::pem::PemObject;
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ServerTlsError::Pem(path.to_owned(), e.to_string()))?;
    if certs.is_empty() {
        return Err(ServerTlsError::Missing(path.to_owned(), "certificate"));
    }
    Ok(certs)
}

/// The private key of a PEM file.
pub(crate) fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, ServerTlsError> {
    use rustls::pki_types::pem::PemObject;
    PrivateKeyDer::from_pem_slice(&read(path)?)
        .map_err(|e| ServerTlsError::Pem(path.to_owned(), e.to_string()))
}

/// A server certificate with no client authentication (the management API): HTTP/2 and
/// HTTP/1.1 by ALPN.
pub fn plain_server_config(
    cert: &Path,
    key: &Path,
) -> Result<Arc<rustls::ServerConfig>, ServerTlsError> {
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certificates(cert)?, private_key(key)?)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

type Make = dyn Fn() -> Result<Arc<rustls::ServerConfig>, ServerTlsError> + Send + Sync;

/// A server configuration that follows its files.
pub struct Reloading {
    /// What `make` reads, in order; their bytes are what a change is judged by.
    files: Vec<PathBuf>,
    make: Box<Make>,
    /// The configuration and the bytes of `files` it was made from.
    current: RwLock<(Arc<rustls::ServerConfig>, Vec<Vec<u8>>)>,
    /// What the log calls it ("link", "api").
    name: &'static str,
}

impl Reloading {
    /// Makes the first configuration (an error here stops the start: better than a listener
    /// that refuses every handshake).
    pub fn new(
        name: &'static str,
        files: Vec<PathBuf>,
        make: impl Fn() -> Result<Arc<rustls::ServerConfig>, ServerTlsError> + Send + Sync + 'static,
    ) -> Result<Arc<Self>, ServerTlsError> {
        let seen = Self::contents(&files);
        let config = make()?;
        Ok(Arc::new(Reloading {
            files,
            make: Box::new(make),
            current: RwLock::new((config, seen)),
            name,
        }))
    }

    fn contents(files: &[PathBuf]) -> Vec<Vec<u8>> {
        files
            .iter()
            .map(|f| std::fs::read(f).unwrap_or_default())
            .collect()
    }

    /// The configuration a new connection gets.
    pub fn current(&self) -> Arc<rustls::ServerConfig> {
        match self.current.read() {
            Ok(c) => c.0.clone(),
            Err(poisoned) => poisoned.into_inner().0.clone(),
        }
    }

    /// Compares the files with what the current configuration was made from and, when they
    /// changed and make a valid configuration, takes it. Answers whether it did.
    pub fn reload_if_changed(&self) -> bool {
        let seen = Self::contents(&self.files);
        let unchanged = match self.current.read() {
            Ok(c) => c.1 == seen,
            Err(poisoned) => poisoned.into_inner().1 == seen,
        };
        if unchanged {
            return false;
        }
        match (self.make)() {
            Ok(config) => {
                match self.current.write() {
                    Ok(mut c) => *c = (config, seen),
                    Err(poisoned) => *poisoned.into_inner() = (config, seen),
                }
                tracing::info!(
                    tls = self.name,
                    "TLS files changed: new connections get the new certificate"
                );
                true
            }
            Err(e) => {
                // Most often a rotation caught halfway (key written, certificate not yet):
                // the next poll sees the finished files.
                tracing::warn!(tls = self.name, error = %e, "TLS files changed but do not make a configuration; keeping the current one");
                false
            }
        }
    }

    /// Polls the files every [`POLL`] for as long as the returned task runs.
    pub fn watch(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let this = Arc::clone(&this);
                // File reads: off the async threads.
                let _ = tokio::task::spawn_blocking(move || this.reload_if_changed()).await;
            }
        })
    }
}

/// Accepts connections on `listener` and completes their handshakes concurrently (each
/// bounded in time, a bounded number at once) with the configuration current at accept time,
/// yielding the TLS streams that succeeded. A failed handshake is logged at debug level and
/// dropped: the peer gets nothing.
pub fn incoming(
    listener: TcpListener,
    tls: Arc<Reloading>,
) -> ReceiverStream<std::io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "TLS listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let (acceptor, out) = (TlsAcceptor::from(tls.current()), tx.clone());
            tokio::spawn(async move {
                let _slot = slot;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = out.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake refused"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
            if tx.is_closed() {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests;
