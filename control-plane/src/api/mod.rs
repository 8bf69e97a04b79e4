//! The HTTP API: management (certificates, mappings, users, AppKeys, egress allowlist), the
//! runtime snapshot feed, health.

mod appkeys;
mod auth;
mod certificates;
mod credentials;
pub mod csds;
mod egress;
pub mod error;
mod extract;
mod mappings;
pub mod openapi;
pub mod p12test;
mod runtime;
mod settings;
mod users;
mod views;

pub use views::rfc3339;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::appkeys::Directory;
use crate::identity::Tokens;
use crate::secret::Secret;
use crate::store::Store;
use crate::sync::Sync;
use crate::vault::Vault;
use crate::xds::Acks;
pub use auth::Principal;
use error::{ApiError, REQUEST_ID};
use mtlsgate_filter::oauth1::NonceCache;
pub use users::{check_password, check_username};

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub vault: Arc<Vault>,
    pub sync: Arc<Sync>,
    pub acks: Arc<Acks>,
    pub dev_admin_token: Option<Secret>,
    /// The gateway's credential for the runtime snapshot; `None`: the snapshot is not served.
    pub runtime_token: Option<Secret>,
    pub domains: csds::Domains,
    pub tokens: Arc<Tokens>,
    /// Access tokens of OAuth 2.0 and Transfer to Messaging credentials.
    pub access_tokens: Arc<crate::access_tokens::AccessTokens>,
    pub appkeys: Arc<Directory>,
    /// OAuth1 nonces seen within the timestamp window.
    pub nonces: Arc<std::sync::Mutex<NonceCache>>,
    /// The JDK's keytool, for the P12 tester's Java check (`None`: not checked).
    pub keytool: Option<std::path::PathBuf>,
    /// Largest P12 file accepted, in bytes.
    pub max_upload_bytes: usize,
    /// The runtime snapshot, encoded once per node and change.
    pub feed: Arc<runtime::FeedCache>,
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
        .layer(middleware::from_fn_with_state(
            JSON_BODY_LIMIT,
            refuse_oversized,
        ))
        .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT))
        .merge(certificates_json)
        .merge(by_file)
        .layer(middleware::from_fn(deadline));
    Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/openapi.json", get(openapi::serve))
        // The long poll bounds its own wait.
        .route("/v1/runtime/snapshot", get(runtime::snapshot))
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

/// Account ids in paths: 1-64 letters, digits, `-` or `_` (the filter applies the same rule).
pub fn check_account(account: &str) -> Result<(), ApiError> {
    let ok = !account.is_empty()
        && account.len() <= 64
        && account
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_account",
            "the account id must be 1-64 letters, digits, '-' or '_'",
        ))
    }
}

#[cfg(test)]
mod tests;
