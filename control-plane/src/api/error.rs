//! The one error type of the HTTP API: every failure answers `{"code", "message",
//! "requestId"}` with a stable `code`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use crate::secret_store::SecretStoreError;
use crate::store::StoreError;

tokio::task_local! {
    /// The id of the request being served, for error bodies.
    pub static REQUEST_ID: String;
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Extra fields merged into the body (e.g. the conflicting mapping).
    pub details: Option<Map<String, Value>>,
    /// Seconds to send as `Retry-After` (429 and 503 answers).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    /// Tells the client when to try again (`Retry-After`, at least one second).
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs.max(1));
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn with(mut self, key: &str, value: Value) -> Self {
        self.details
            .get_or_insert_with(Map::new)
            .insert(key.to_owned(), value);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let request_id = REQUEST_ID.try_with(Clone::clone).unwrap_or_default();
        let mut body = self.details.unwrap_or_default();
        body.insert("code".into(), json!(self.code));
        body.insert("message".into(), json!(self.message));
        body.insert("requestId".into(), json!(request_id));
        let mut resp = (self.status, axum::Json(Value::Object(body))).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"mtlsgate\""),
            );
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            // Another writer (on this control plane or another) created the same name or
            // triplet between this request's check and its insert: the answer the check
            // would have given.
            StoreError::Conflict => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                "a resource with the same name or key was created at the same time; read it and try again",
            ),
            StoreError::Busy => {
                tracing::warn!("database busy: a lock was not had in time");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database_busy",
                    "the database is busy; try again",
                )
            }
            e => {
                tracing::error!(error = %e, "store failure");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error",
                )
            }
        }
    }
}

impl From<SecretStoreError> for ApiError {
    fn from(e: SecretStoreError) -> Self {
        tracing::error!(error = %e, "secret store failure");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "secret_store_unavailable",
            "the secret store is unavailable; nothing was saved",
        )
    }
}
