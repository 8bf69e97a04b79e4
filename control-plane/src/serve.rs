//! `mtlsgate serve`: opens the store and the secret store, builds the application state
//! (which starts the reconciler and the token keeper), starts the xDS server and the
//! HTTP API, and stops them all on Ctrl-C or SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use crate::api::{self, AppState, StartError};
use crate::config::ServeConfig;
use crate::secret::Secret;
use crate::secret_store::Secrets;
use crate::xds::{Ads, ResourceOptions};

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("secret store: {0}")]
    Secrets(#[from] crate::secret_store::SecretStoreError),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("cannot listen on {0}: {1}")]
    Bind(std::net::SocketAddr, std::io::Error),
    #[error("server failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("xDS server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("cannot read --token-endpoint-ca-file {0}: {1}")]
    TokenRoots(String, std::io::Error),
    #[error("OAuth 2.0 client: {0}")]
    OAuthClient(#[from] crate::oauth2::ClientError),
    #[error("TLS: {0}")]
    Tls(#[from] crate::server_tls::ServerTlsError),
    #[error("--operator-token-file {0}: {1}")]
    OperatorToken(String, String),
    #[error("--http-addr {0} is not a loopback address: give --tls-cert and --tls-key (the API carries passwords, tokens and P12 files; plain HTTP is for loopback only)")]
    PlaintextApi(std::net::SocketAddr),
}

/// The deployment's own endpoints a tenant's URL must never reach, whatever range the
/// operator allows: this process's listeners and its secret store.
async fn own_endpoints(cfg: &ServeConfig) -> Vec<std::net::SocketAddr> {
    let mut own = vec![cfg.http_addr, cfg.xds_addr, cfg.feed_addr];
    // (Every node of a cluster.)
    for addr in cfg.vault.vault_addr.split(',').map(str::trim) {
        let Ok(url) = url::Url::parse(addr) else {
            continue;
        };
        if let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            match tokio::net::lookup_host((host, port)).await {
                Ok(addrs) => own.extend(addrs),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot resolve the secret store's address; add it to --egress-deny")
                }
            }
        }
    }
    own
}

/// The operator's token from its file: the first line, at least 32 characters, not the
/// development token.
fn operator_token(cfg: &ServeConfig) -> Result<Option<Secret>, ServeError> {
    let Some(path) = &cfg.operator_token_file else {
        return Ok(None);
    };
    let bad = |why: &str| ServeError::OperatorToken(path.display().to_string(), why.to_owned());
    let text = std::fs::read_to_string(path).map_err(|e| bad(&e.to_string()))?;
    let token = text.lines().next().unwrap_or("").trim();
    if token.chars().count() < 32 {
        return Err(bad("the token must be at least 32 characters"));
    }
    if cfg
        .dev_admin_token
        .as_ref()
        .is_some_and(|d| d.matches(token.as_bytes()))
    {
        return Err(bad(
            "the operator's token must not be the development token",
        ));
    }
    Ok(Some(Secret::new(token)))
}

pub async fn run(cfg: ServeConfig) -> Result<(), ServeError> {
    let operator_token = operator_token(&cfg)?;
    if cfg.dev_admin_token.is_some() {
        tracing::warn!(
            "DEVELOPMENT ADMIN TOKEN ENABLED: anyone with it administers every account. \
             Never use --dev-admin-token in production."
        );
    }
    // The links to gateways are mutual TLS or nothing: fail at start, not at the first
    // gateway, when the files are missing or wrong.
    let link_tls = crate::link_tls::reloading(cfg.link_files())?;
    let api_tls = match cfg.api_tls() {
        Some((cert, key)) => Some(crate::server_tls::Reloading::new(
            "api",
            vec![cert.clone(), key.clone()],
            move || crate::server_tls::plain_server_config(&cert, &key),
        )?),
        None if !cfg.http_addr.ip().is_loopback() => {
            return Err(ServeError::PlaintextApi(cfg.http_addr))
        }
        None => None,
    };
    let store = cfg.database.open().await?;
    let secrets = Secrets::new(Arc::new(cfg.vault.store()?));
    secrets.check().await?;
    let extra_roots = match &cfg.token_endpoint_ca_file {
        Some(path) => Some(
            std::fs::read(path)
                .map_err(|e| ServeError::TokenRoots(path.display().to_string(), e))?,
        ),
        None => None,
    };
    let dns = crate::guarded_dns::GuardedDns::new(
        Arc::new(crate::address_policy::AddressPolicy::new(
            cfg.egress_allow.clone(),
            cfg.egress_deny.clone(),
            own_endpoints(&cfg).await,
        )),
        Duration::from_secs(5),
    );
    let settings = api::Settings {
        dev_admin_token: cfg.dev_admin_token.clone(),
        operator_token,
        quotas: cfg.quotas(),
        api_scheme: if cfg
            .public_api_url
            .as_deref()
            .map_or(api_tls.is_some(), |u| {
                u.to_ascii_lowercase().starts_with("https://")
            }) {
            api::auth::Scheme::Https
        } else {
            api::auth::Scheme::Http
        },
        domains: crate::api::csds::Domains {
            gateway: cfg.public_gateway.clone(),
            api: cfg.public_api(),
        },
        keytool: crate::api::p12test::find_keytool(cfg.keytool.clone()),
        max_upload_bytes: cfg.max_upload_bytes(),
        session_ttl_secs: cfg.session_ttl_seconds,
        watch_period: Duration::from_secs(cfg.vault_watch_seconds),
        change_poll: Duration::from_millis(cfg.change_poll_millis),
        oauth2_client: crate::oauth2::Client::new(
            extra_roots.as_deref(),
            Duration::from_secs(10),
            dns.clone(),
        )?,
        credential_tokens: crate::credential_tokens::Settings {
            redirect_uri: cfg.oauth_redirect_uri(),
            messaging_token_url: cfg.messaging_token_url.clone(),
        },
        dns,
        dns_refresh: Duration::from_secs(cfg.dns_refresh_seconds),
    };
    let state = AppState::start(store, secrets, settings).await?;
    let opts = ResourceOptions {
        system_trust_bundle: cfg.system_trust_bundle.clone(),
        max_connection_duration: cfg.upstream_max_connection_duration(),
        connect_timeout: Duration::from_millis(cfg.upstream_connect_timeout_ms),
        limits: cfg.upstream_limits(),
    };
    let ads = Ads::new(
        state.reconciler.published(),
        state.acks.clone(),
        state.reconciler.rejections(),
        opts,
    );
    let feed_app = api::feed_router(state.clone());
    let app = api::router(state);
    let bind = |addr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| ServeError::Bind(addr, e))
    };
    let http = bind(cfg.http_addr).await?;
    let xds = bind(cfg.xds_addr).await?;
    let feed = bind(cfg.feed_addr).await?;
    tracing::info!(http = %cfg.http_addr, api_tls = api_tls.is_some(), xds = %cfg.xds_addr, feed = %cfg.feed_addr, database = %cfg.database.describe(), "mtlsgate control plane listening (xDS and feed: mutual TLS)");
    // The watches run as long as the process: a certificate rotated in place applies to the
    // next connection.
    let _link_watch = link_tls.watch();
    let feed_task = tokio::spawn(serve_feed(link_tls.incoming(feed), feed_app));

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let http_stop = stop_rx.clone();
    let mut xds_stop = stop_rx;
    let http_task = tokio::spawn(async move {
        use futures::StreamExt;
        match api_tls {
            Some(tls) => {
                let _api_watch = tls.watch();
                let incoming = crate::server_tls::incoming(http, tls).filter_map(|r| async move {
                    let tls = r.ok()?;
                    let peer = tls.get_ref().0.peer_addr().ok()?;
                    Some((tls, peer))
                });
                serve_api(incoming.boxed(), app, http_stop).await;
            }
            None => serve_api(plain_incoming(http).boxed(), app, http_stop).await,
        }
    });
    let xds_task = tokio::spawn(
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .add_service(ads.into_service())
            .serve_with_incoming_shutdown(link_tls.incoming(xds), async move {
                let _ = xds_stop.wait_for(|s| *s).await;
            }),
    );
    shutdown_signal().await;
    tracing::info!("shutting down");
    feed_task.abort();
    let _ = stop_tx.send(true);
    // why: ADS streams and long polls never end by themselves; give them a moment, then go.
    let grace = Duration::from_secs(3);
    let _ = tokio::time::timeout(grace, async {
        let _ = http_task.await;
        let _ = xds_task.await;
    })
    .await;
    Ok(())
}

/// Serves the runtime snapshot feed on the link streams of `incoming`, each request knowing
/// the node its peer's certificate names (or none).
async fn serve_feed(
    mut incoming: impl futures::Stream<Item = std::io::Result<crate::link_tls::LinkStream>> + Unpin,
    app: axum::Router,
) {
    use futures::StreamExt;
    let builder = Arc::new(http_builder());
    while let Some(Ok(tls)) = incoming.next().await {
        let node = tls.node().map(str::to_owned);
        let app = app.clone().layer(axum::Extension(api::PeerNode(node)));
        let builder = Arc::clone(&builder);
        tokio::spawn(async move {
            let service = hyper_util::service::TowerToHyperService::new(app);
            let _ = builder
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
        });
    }
}

/// The HTTP server settings of the API and the feed: a header-read timeout for HTTP/1.1,
/// keep-alive pings for HTTP/2.
fn http_builder() -> hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor> {
    use hyper_util::rt::{TokioExecutor, TokioTimer};
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)));
    builder
}

/// Connections the API keeps at once; more are closed as they arrive.
const MAX_API_CONNECTIONS: usize = 4096;
/// How long a client may take to send a request's headers: a slow sender holds a connection
/// and a task for this long at most, and never the listener.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The plain-HTTP API's connections (loopback only, see `run`), with their peers.
fn plain_incoming(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = (tokio::net::TcpStream, std::net::SocketAddr)> {
    futures::stream::unfold(listener, |listener| async move {
        loop {
            match listener.accept().await {
                Ok((tcp, peer)) => {
                    // why: without TCP_NODELAY small answers wait out Nagle against Envoy's
                    // delayed ACK (~40 ms per change; docs/benchmarks.md).
                    let _ = tcp.set_nodelay(true);
                    return Some(((tcp, peer), listener));
                }
                Err(e) => {
                    // Out of file descriptors, most often: wait instead of spinning.
                    tracing::warn!(error = %e, "API listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })
}

/// Serves the API on the connections of `incoming` (plain or TLS) until `stop`, each
/// request knowing its peer's address (login attempts are counted by it); then lets the
/// requests under way finish (`run` bounds how long). Every connection has a header-read
/// timeout, HTTP/2 keep-alive pings, and a place among [`MAX_API_CONNECTIONS`].
async fn serve_api<I>(
    mut incoming: futures::stream::BoxStream<'static, (I, std::net::SocketAddr)>,
    app: axum::Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use futures::StreamExt;
    use hyper_util::rt::TokioIo;
    let builder = http_builder();
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_API_CONNECTIONS));
    loop {
        let (io, peer) = tokio::select! {
            next = incoming.next() => match next {
                Some(c) => c,
                None => break,
            },
            _ = stop.wait_for(|s| *s) => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "API: too many connections; closing a new one");
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(
            app.clone()
                .layer(axum::Extension(axum::extract::ConnectInfo(peer))),
        );
        let conn = graceful.watch(
            builder
                .serve_connection_with_upgrades(TokioIo::new(io), service)
                .into_owned(),
        );
        tokio::spawn(async move {
            let _slot = slot;
            let _ = conn.await;
        });
    }
    graceful.shutdown().await;
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
