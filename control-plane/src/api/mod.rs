//! The HTTP API: management (certificates, mappings, users, AppKeys, egress allowlist), the
//! runtime snapshot feed, health.

mod appkeys;
pub(crate) mod auth;
pub(crate) mod certificates;
pub(crate) mod credentials;
pub mod csds;
mod egress;
pub mod error;
pub(crate) mod extract;
mod mappings;
pub mod openapi;
mod operator;
pub mod p12test;
pub(crate) mod prefer;
pub(crate) mod quotas;
mod runtime;
mod schemas;
mod settings;
mod users;
mod views;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::appkeys::Directory;
use crate::cpu_pool::{CpuPool, PoolError};
use crate::identity::LoginTokens;
use crate::reconciler::Reconciler;
use crate::secret::Secret;
use crate::secret_store::Secrets;
use crate::store::Store;
use crate::xds::Acks;
pub use auth::Principal;
use error::{ApiError, REQUEST_ID};
use mtlsgate_filter::oauth1::NonceCache;
pub use runtime::PeerNode;

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub secrets: Secrets,
    pub reconciler: Arc<Reconciler>,
    pub acks: Arc<Acks>,
    pub dev_admin_token: Option<Secret>,
    /// The operator's credential (`--operator-token-file`).
    pub operator_token: Option<Secret>,
    /// The scheme callers reach this API with directly (what they sign OAuth1 requests for).
    pub api_scheme: auth::Scheme,
    /// How many mappings, certificates, credentials and AppKeys one account may hold.
    pub quotas: quotas::Quotas,
    pub domains: csds::Domains,
    pub login_tokens: Arc<LoginTokens>,
    /// Access tokens of OAuth 2.0 and Transfer to Messaging credentials.
    pub credential_tokens: Arc<crate::credential_tokens::CredentialTokens>,
    pub appkeys: Arc<Directory>,
    /// OAuth1 nonces seen within the timestamp window.
    pub nonces: Arc<std::sync::Mutex<NonceCache>>,
    /// The JDK's keytool, for the P12 tester's Java check (`None`: not checked).
    pub keytool: Option<std::path::PathBuf>,
    /// Largest P12 file accepted, in bytes.
    pub max_upload_bytes: usize,
    /// The runtime snapshot, encoded once per node and change.
    pub feed: Arc<runtime::FeedCache>,
    /// Password hashes computed at once (Argon2id is made to be slow and big): a flood of
    /// logins waits here, briefly, then gets 503, instead of exhausting the blocking pool.
    pub hashing: Arc<tokio::sync::Semaphore>,
    /// User creations under way (one at a time): they take at most one of `hashing`'s slots.
    pub user_creations: Arc<tokio::sync::Semaphore>,
    /// Which addresses tenants' targets and token endpoints may have.
    pub dns: crate::guarded_dns::GuardedDns,
    /// Where key stores are opened (their key derivations) and the P12 tester runs: a few
    /// threads, never the async workers the API, ADS and the feed share.
    pub cpu: CpuPool,
}

/// What [`AppState::start`] needs besides the store and the secret store.
pub struct Settings {
    pub dev_admin_token: Option<Secret>,
    pub operator_token: Option<Secret>,
    /// `https` when the API is served behind TLS (`--public-api-url https://…`).
    pub api_scheme: auth::Scheme,
    pub quotas: quotas::Quotas,
    pub domains: csds::Domains,
    pub keytool: Option<std::path::PathBuf>,
    pub max_upload_bytes: usize,
    /// Lifetime of a login token.
    pub session_ttl_secs: u64,
    /// How often the reconciler looks for certificates changed directly in the secret store.
    pub watch_period: Duration,
    /// How often the database's generation is polled for changes other processes made.
    pub change_poll: Duration,
    /// The client credential tokens are obtained with, and where users are sent back to.
    pub oauth2_client: crate::oauth2::Client,
    pub credential_tokens: crate::credential_tokens::Settings,
    /// Looks up and checks the hosts the gateway connects to for tenants.
    pub dns: crate::guarded_dns::GuardedDns,
    /// How often target hosts are looked up again.
    pub dns_refresh: Duration,
}

/// Why the application state could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("secret store: {0}")]
    Secrets(#[from] crate::secret_store::SecretStoreError),
}

impl AppState {
    /// Builds the application state — the one way, for `serve` and for tests: loads the
    /// login token signing key and the live AppKeys, starts the credential token keeper and
    /// the reconciler (after a first full rebuild), and answers the state every handler
    /// reaches. The background tasks run on the current Tokio runtime until it ends.
    pub async fn start(
        store: Store,
        secrets: Secrets,
        settings: Settings,
    ) -> Result<AppState, StartError> {
        let login_tokens = Arc::new(LoginTokens::load(&secrets, settings.session_ttl_secs).await?);
        let token_keys = tokio::sync::watch::channel(crate::reconciler::CallerSources::token_keys(
            &login_tokens.public_keys(),
        ))
        .0;
        let appkeys = Arc::new(
            Directory::load(&store, &secrets)
                .await
                .map_err(|e| match e {
                    crate::appkeys::LoadError::Store(e) => StartError::Store(e),
                    crate::appkeys::LoadError::Secrets(e) => StartError::Secrets(e),
                })?,
        );
        let credential_tokens = crate::credential_tokens::CredentialTokens::new(
            store.clone(),
            secrets.clone(),
            settings.oauth2_client,
            settings.credential_tokens,
        );
        tokio::spawn(credential_tokens.clone().run());
        let reconciler = Reconciler::new(
            store.clone(),
            secrets.clone(),
            crate::reconciler::CallerSources {
                appkeys: appkeys.clone(),
                token_keys: token_keys.subscribe(),
            },
            credential_tokens.clone(),
            settings.dns.clone(),
        );
        reconciler.rebuild(true).await?;
        tokio::spawn(follow_login_keys(
            login_tokens.clone(),
            secrets.clone(),
            token_keys,
            reconciler.clone(),
            settings.watch_period,
        ));
        tokio::spawn(
            reconciler
                .clone()
                .run(settings.watch_period, settings.dns_refresh),
        );
        // Other control planes' streams' acknowledgements, and ours for them.
        let acks = Arc::new(Acks::default());
        tokio::spawn(crate::xds::shared::share(
            acks.clone(),
            store.clone(),
            hex::encode(crate::random::bytes::<12>()),
            settings.change_poll,
        ));
        tokio::spawn(crate::change_feed::follow(
            store.clone(),
            secrets.clone(),
            appkeys.clone(),
            reconciler.clone(),
            settings.change_poll,
        ));
        let nonces = Arc::new(std::sync::Mutex::new(NonceCache::new(
            mtlsgate_filter::oauth1::DEFAULT_MAX_SKEW_SECS * 2,
            mtlsgate_filter::oauth1::DEFAULT_NONCE_CAPACITY,
        )));
        Ok(AppState {
            store,
            secrets,
            reconciler,
            acks: acks.clone(),
            dev_admin_token: settings.dev_admin_token,
            operator_token: settings.operator_token,
            api_scheme: settings.api_scheme,
            quotas: settings.quotas,
            domains: settings.domains,
            login_tokens,
            credential_tokens,
            appkeys,
            nonces,
            keytool: settings.keytool,
            max_upload_bytes: settings.max_upload_bytes,
            feed: Default::default(),
            hashing: Arc::new(tokio::sync::Semaphore::new(HASHING_SLOTS)),
            user_creations: Arc::new(tokio::sync::Semaphore::new(1)),
            dns: settings.dns,
            cpu: CpuPool::per_core(CPU_POOL_WAIT),
        })
    }
}

/// Password hashes computed at once (each takes tens of milliseconds and 19 MiB).
const HASHING_SLOTS: usize = 4;

/// Keeps the login-token keys current: every `every`, reads the key set from the secret
/// store again (a rotation made by `mtlsgate keys rotate-login`, seen by every control plane
/// on the store) and drops retired keys whose time is up; when the accepted public keys
/// change, publishes them and kicks the reconciler so the gateways' snapshot follows.
async fn follow_login_keys(
    login_tokens: Arc<LoginTokens>,
    secrets: Secrets,
    published: tokio::sync::watch::Sender<Vec<mtlsgate_filter::snapshot::TokenKey>>,
    reconciler: Arc<Reconciler>,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = login_tokens.refresh(&secrets).await {
            tracing::warn!(error = %e, "cannot read the token signing keys; keeping those in memory");
        }
        let now = crate::reconciler::CallerSources::token_keys(&login_tokens.public_keys());
        if published.send_if_modified(|keys| {
            let changed = *keys != now;
            if changed {
                *keys = now;
            }
            changed
        }) {
            reconciler.kick();
        }
    }
}

/// How long a request waits for a free slot of [`AppState::cpu`] before 503 `busy`.
const CPU_POOL_WAIT: Duration = Duration::from_secs(2);

/// Runs CPU-heavy work (opening a key store) on [`AppState::cpu`]: 503 `busy` with
/// `Retry-After` when every slot stays taken.
pub(crate) async fn on_cpu_pool<T, F>(state: &AppState, job: F) -> Result<T, ApiError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    state.cpu.run(job).await.map_err(|e| match e {
        PoolError::Busy => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "too many key stores are being opened at once; try again shortly",
        )
        .retry_after(1),
        PoolError::Panicked => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        ),
    })
}

/// Runs a write that spans the secret store and the database — secret written, row
/// committed, or the secret undone — to its end in a task of its own, and answers its result.
///
/// why: the request deadline (and a client that hangs up) drops the handler's future at
/// whatever `.await` it is in. Dropped between the secret store write and the commit, a
/// write would leave a secret no row points at and skip its undo; dropped inside a batch, it
/// would leave half of it done. A spawned task is not dropped with the request: the write
/// finishes (or undoes itself) whatever happens to the answer.
pub(crate) async fn detached<T, F>(write: F) -> Result<T, ApiError>
where
    F: std::future::Future<Output = Result<T, ApiError>> + Send + 'static,
    T: Send + 'static,
{
    #[cfg(test)]
    let write = Store::carry_failing_commits(write);
    match tokio::spawn(write).await {
        Ok(answer) => answer,
        Err(e) => {
            // A panic in the write (a bug): its transaction was dropped, so rolled back.
            tracing::error!(error = %e, "a write task failed");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            ))
        }
    }
}

/// Longest time a management request may take before it is answered with 503.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Body limit of the JSON management endpoints.
const JSON_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// The API's routes, apart from any listener so tests can drive it in-process.
pub fn router(state: AppState) -> Router {
    let upload = state.max_upload_bytes;
    let cert = "/mtls/account/{account}/certificates";
    // A P12 as a JSON array of numbers takes up to ~5 bytes per byte.
    let certificates_json = Router::new()
        .route(
            cert,
            get(certificates::list)
                .post(certificates::create_json)
                .put(certificates::update_json),
        )
        .layer(middleware::from_fn_with_state(
            upload.saturating_mul(5).saturating_add(64 * 1024),
            refuse_oversized,
        ))
        .layer(DefaultBodyLimit::max(
            upload.saturating_mul(5).saturating_add(64 * 1024),
        ));
    let by_file = Router::new()
        .route(
            &format!("{cert}/by-file"),
            post(certificates::create_by_file).put(certificates::update_by_file),
        )
        .route(
            "/mtls/account/{account}/p12-test/multipart",
            post(p12test::test),
        )
        .layer(middleware::from_fn_with_state(
            upload.saturating_add(64 * 1024),
            refuse_oversized,
        ))
        .layer(DefaultBodyLimit::max(upload.saturating_add(64 * 1024)));
    let management = Router::new()
        .route("/api/account/{account}/login", post(users::login))
        .route(
            "/api/account/{account}/credentials",
            get(credentials::list).post(credentials::create),
        )
        .route(
            "/api/account/{account}/credentials/{id}",
            get(credentials::get_one)
                .put(credentials::update)
                .delete(credentials::delete),
        )
        .route(
            "/api/account/{account}/credentials/{id}/authorize",
            post(credentials::authorize),
        )
        .route("/api/oauth2/callback", get(credentials::callback))
        .route(
            "/api/account/{account}/users",
            get(users::list).post(users::create),
        )
        .route(
            "/api/account/{account}/users/{id}",
            axum::routing::delete(users::delete),
        )
        .route(
            "/api/account/{account}/appkeys",
            get(appkeys::list).post(appkeys::create),
        )
        .route(
            "/api/account/{account}/appkeys/{id}",
            axum::routing::delete(appkeys::revoke),
        )
        .route(
            "/api/account/{account}/egress",
            get(egress::get).put(egress::put),
        )
        .route(
            "/api/account/{account}/settings",
            get(settings::get).put(settings::put),
        )
        .route(
            "/api/account/{account}/service/baseURI.json",
            get(csds::all),
        )
        .route(
            "/api/account/{account}/service/{service}/baseURI.json",
            get(csds::one),
        )
        .route(
            &format!("{cert}/{{id}}"),
            get(certificates::get_one).delete(certificates::delete),
        )
        .route(
            "/api/account/{account}/configuration/ac-common/mtls",
            get(mappings::list).post(mappings::create),
        )
        .route(
            "/api/account/{account}/configuration/ac-common/mtls/{id}",
            get(mappings::get_one)
                .put(mappings::update)
                .delete(mappings::delete),
        )
        .route(
            "/api/operator/accounts/{account}",
            axum::routing::delete(operator::offboard),
        )
        .layer(middleware::from_fn_with_state(
            JSON_BODY_LIMIT,
            refuse_oversized,
        ))
        .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT))
        .merge(certificates_json)
        .merge(by_file)
        .layer(middleware::from_fn(deadline))
        // Outside the deadline: the wait follows a committed write (see `prefer`).
        .layer(middleware::from_fn_with_state(state.clone(), prefer::wait));
    Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/openapi.json", get(openapi::serve))
        .merge(management)
        .fallback(|| async { ApiError::not_found("no such resource") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this resource",
            )
        })
        .layer(middleware::from_fn(request_id))
        .with_state(state)
}

/// The runtime snapshot feed, on its own listener (mutual TLS, see `serve`): the gateways'
/// filter long-polls it. Apart from the management API, so a caller's request proxied to the
/// control plane never arrives wearing a gateway's identity.
pub fn feed_router(state: AppState) -> Router {
    Router::new()
        // The long poll bounds its own wait.
        .route("/v1/runtime/snapshot", get(runtime::snapshot))
        .fallback(|| async { ApiError::not_found("no such resource") })
        .layer(middleware::from_fn(request_id))
        .with_state(state)
}

/// Longest body read only to be discarded, and for how long at most.
const DRAIN_MAX: u64 = 64 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// Refuses a body whose declared length is over `limit` with 413, after reading and
/// discarding it (up to [`DRAIN_MAX`], within [`DRAIN_TIME`]): a client still uploading
/// then reads the answer instead of finding its connection reset under it.
async fn refuse_oversized(State(limit): State<usize>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let Some(declared) = declared.filter(|n| *n > limit as u64) else {
        return next.run(req).await;
    };
    if declared <= DRAIN_MAX {
        use futures::StreamExt;
        let mut body = req.into_body().into_data_stream();
        let _ = tokio::time::timeout(DRAIN_TIME, async {
            while let Some(Ok(_)) = body.next().await {}
        })
        .await;
    }
    extract::too_large().into_response()
}

/// Answers 503 when a request takes longer than [`REQUEST_TIMEOUT`] (a stuck Vault, say),
/// rather than letting the caller hang.
async fn deadline(req: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "the request took too long; nothing may have been saved",
        )
        .into_response(),
    }
}

/// Gives every request an id (the caller's `X-Request-Id` when it is sane), echoes it in the
/// answer, and makes it available to error bodies.
async fn request_id(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| hex::encode(rand::random::<[u8; 16]>()));
    let mut resp = REQUEST_ID.scope(id.clone(), next.run(req)).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// Account ids in paths: the filter's rule (`mtlsgate_filter::account`), one function for
/// both halves, so the API never stores an account the gateway cannot route.
pub fn check_account(account: &str) -> Result<(), ApiError> {
    if mtlsgate_filter::account::is_valid(account) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_account",
            crate::identity::ACCOUNT_RULE,
        ))
    }
}

#[cfg(test)]
mod handler_tests;
#[cfg(test)]
mod login_tests;
#[cfg(test)]
mod quota_tests;
#[cfg(test)]
pub(crate) mod tests;
