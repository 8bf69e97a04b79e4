//! Per-account settings: `GET`/`PUT /api/account/{account}/settings`.

use axum::extract::State;
use axum::Json as JsonOut;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::extract::{Json, Path};
use super::{check_account, AppState, Principal};

/// The body of both methods.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Settings {
    /// A caller's `LP-authorization-override` replaces the credential attached to a mapping.
    /// Off by default: the account's credential is what the target sees.
    allow_authorization_override: bool,
}

/// `GET /api/account/{account}/settings` (admins or `MTLS_MANAGE`).
pub async fn get(
    State(state): State<AppState>,
    Path(account): Path<String>,
    principal: Principal,
) -> Result<JsonOut<Settings>, ApiError> {
    check_account(&account)?;
    principal.require_manage(&account)?;
    Ok(JsonOut(Settings {
        allow_authorization_override: state.store.allows_authorization_override(&account).await?,
    }))
}

/// `PUT /api/account/{account}/settings` (admins or `MTLS_MANAGE`).
pub async fn put(
    State(state): State<AppState>,
    Path(account): Path<String>,
    principal: Principal,
    Json(input): Json<Settings>,
) -> Result<JsonOut<Settings>, ApiError> {
    check_account(&account)?;
    principal.require_manage(&account)?;
    state
        .store
        .set_authorization_override(&account, input.allow_authorization_override)
        .await?;
    state.reconciler.kick();
    tracing::info!(account, allow_authorization_override = input.allow_authorization_override, by = %principal.describe(), "account settings changed");
    Ok(JsonOut(input))
}
