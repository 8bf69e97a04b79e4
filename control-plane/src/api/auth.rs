//! Who is calling the management API.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};

use super::error::ApiError;
use super::AppState;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The development admin token: admin of every account.
    DevAdmin,
}

impl Principal {
    /// Like [`Self::require_admin`], for the methods the seeds open to Bearer tokens only
    /// (by-file uploads, the P12 tester).
    pub fn require_bearer_admin(&self, account: &str) -> Result<(), ApiError> {
        self.require_admin(account)
    }

    /// Refuses with 403 unless the caller may administer `account`.
    pub fn require_admin(&self, account: &str) -> Result<(), ApiError> {
        match self {
            Principal::DevAdmin => {
                let _ = account;
                Ok(())
            }
        }
    }
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| unauthorized("an Authorization header is required"))?;
        let token = value
            .as_bytes()
            .strip_prefix(b"Bearer ")
            .ok_or_else(|| unauthorized("expected a Bearer token"))?;
        if let Some(dev) = &state.dev_admin_token {
            if dev.matches(token) {
                return Ok(Principal::DevAdmin);
            }
        }
        Err(unauthorized("the token is not valid"))
    }
}
