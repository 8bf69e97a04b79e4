//! `mtlsgate serve`: opens the store and the secret store, builds the application state
//! (which starts the reconciler and the token keeper), starts the xDS server and the
//! HTTP API, and stops them all on Ctrl-C or SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use crate::api::{self, AppState, StartError};
use crate::config::ServeConfig;
use crate::secret_store::{OpenBao, Secrets};
use crate::store::Store;
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
}

pub async fn run(cfg: ServeConfig) -> Result<(), ServeError> {
    if cfg.dev_admin_token.is_some() {
        tracing::warn!(
            "DEVELOPMENT ADMIN TOKEN ENABLED: anyone with it administers every account. \
             Never use --dev-admin-token in production."
        );
    }
    let runtime_token = cfg.runtime_token.clone().filter(|t| !t.expose().is_empty());
    if runtime_token.is_none() {
        tracing::warn!(
            "no --runtime-token: the runtime snapshot is not served (it carries AppKey \
             secrets), so the gateway cannot load its configuration"
        );
    }
    let store = Store::open(&cfg.database).await?;
    let secrets = Secrets::new(Arc::new(OpenBao::new(
        &cfg.vault_addr,
        &cfg.vault_token,
        &cfg.vault_mount,
        &cfg.vault_prefix,
    )?));
    secrets.check().await?;
    let extra_roots = match &cfg.token_endpoint_ca_file {
        Some(path) => Some(
            std::fs::read(path)
                .map_err(|e| ServeError::TokenRoots(path.display().to_string(), e))?,
        ),
        None => None,
    };
    let settings = api::Settings {
        dev_admin_token: cfg.dev_admin_token.clone(),
        runtime_token,
        domains: crate::api::csds::Domains {
            gateway: cfg.public_gateway.clone(),
            api: cfg.public_api(),
        },
        keytool: crate::api::p12test::find_keytool(cfg.keytool.clone()),
        max_upload_bytes: cfg.max_upload_bytes(),
        session_ttl_secs: cfg.session_ttl_seconds,
        watch_period: Duration::from_secs(cfg.vault_watch_seconds),
        oauth2_client: crate::oauth2::Client::new(extra_roots.as_deref(), Duration::from_secs(10))?,
        credential_tokens: crate::credential_tokens::Settings {
            redirect_uri: cfg.oauth_redirect_uri(),
            messaging_token_url: cfg.messaging_token_url.clone(),
        },
    };
    let state = AppState::start(store, secrets, settings).await?;
    let opts = ResourceOptions {
        system_trust_bundle: cfg.system_trust_bundle.clone(),
        max_connection_duration: cfg.upstream_max_connection_duration(),
        connect_timeout: Duration::from_millis(cfg.upstream_connect_timeout_ms),
    };
    let ads = Ads::new(state.reconciler.subscribe(), state.acks.clone(), opts);
    let app = api::router(state);
    let http = tokio::net::TcpListener::bind(cfg.http_addr)
        .await
        .map_err(|e| ServeError::Bind(cfg.http_addr, e))?;
    let xds = tokio::net::TcpListener::bind(cfg.xds_addr)
        .await
        .map_err(|e| ServeError::Bind(cfg.xds_addr, e))?;
    tracing::info!(http = %cfg.http_addr, xds = %cfg.xds_addr, database = %cfg.database.display(), "mtlsgate control plane listening");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut http_stop = stop_rx.clone();
    let mut xds_stop = stop_rx;
    let http_task = tokio::spawn(async move {
        // why: without TCP_NODELAY small answers wait out Nagle against Envoy's delayed ACK
        // (~40 ms per change; docs/benchmarks.md).
        use axum::serve::ListenerExt;
        let http = http.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(http, app)
            .with_graceful_shutdown(async move {
                let _ = http_stop.wait_for(|s| *s).await;
            })
            .await
    });
    let xds_task = tokio::spawn(
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .add_service(ads.into_service())
            .serve_with_incoming_shutdown(
                futures::StreamExt::map(
                    tokio_stream::wrappers::TcpListenerStream::new(xds),
                    |conn| {
                        conn.inspect(|tcp| {
                            let _ = tcp.set_nodelay(true);
                        })
                    },
                ),
                async move {
                    let _ = xds_stop.wait_for(|s| *s).await;
                },
            ),
    );
    shutdown_signal().await;
    tracing::info!("shutting down");
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
