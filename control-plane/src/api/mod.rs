//! The HTTP API: management (certificates, mappings), the runtime snapshot feed, health.

mod auth;
mod certificates;
pub mod error;
mod extract;
mod mappings;
mod runtime;
mod views;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::Router;

use crate::secret::Secret;
use crate::store::Store;
use crate::sync::Sync;
use crate::vault::Vault;
use crate::xds::Acks;
pub use auth::Principal;
use error::{ApiError, REQUEST_ID};

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub vault: Arc<Vault>,
    pub sync: Arc<Sync>,
    pub acks: Arc<Acks>,
    pub dev_admin_token: Option<Secret>,
}

/// The API's routes, apart from any listener so tests can drive it in-process.
pub fn router(state: AppState, max_upload_bytes: usize) -> Router {
    let cert = "/mtls/account/{account}/certificates";
    Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/v1/runtime/snapshot", get(runtime::snapshot))
        .route(cert, get(certificates::list))
        .route(
            &format!("{cert}/by-file"),
            axum::routing::post(certificates::create_by_file).put(certificates::update_by_file),
        )
        .route(
            &format!("{cert}/{{id}}"),
            get(certificates::get_one).delete(certificates::delete),
        )
        .route(
            "/api/account/{account}/configuration/ac-common/mtls",
            get(mappings::list).post(mappings::create),
        )
        .fallback(|| async { ApiError::not_found("no such resource") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this resource",
            )
        })
        .layer(DefaultBodyLimit::max(max_upload_bytes))
        .layer(middleware::from_fn(request_id))
        .with_state(state)
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
pub(crate) fn check_account(account: &str) -> Result<(), ApiError> {
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
