//! Deployment-wide actions, for the operator's credential only (`--operator-token-file`):
//! never a tenant admin's, never the development token's.

use axum::extract::{Path, State};
use serde_json::{json, Value};

use super::auth::Principal;
use super::error::ApiError;
use super::{check_account, AppState};
use axum::Json as JsonOut;

/// `DELETE /api/operator/accounts/{account}`: offboards an account. Every row is marked
/// deleted (AppKeys revoked), its egress list, settings and waiting authorizations dropped,
/// in one transaction; then every version of each of its secrets is destroyed in the secret
/// store. Answers what was removed, and the secret entries that could not be destroyed (call
/// again: it is idempotent).
pub async fn offboard(
    State(state): State<AppState>,
    Path(account): Path<String>,
    principal: Principal,
) -> Result<JsonOut<Value>, ApiError> {
    principal.require_operator()?;
    check_account(&account)?;
    // Detached: a dropped request must not leave the rows gone and the secrets behind.
    let answer = super::detached(offboard_detached(state, account.clone())).await?;
    tracing::warn!(account, by = %principal.describe(), "account offboarded");
    Ok(JsonOut(answer))
}

async fn offboard_detached(state: AppState, account: String) -> Result<Value, ApiError> {
    let removed = {
        let _w = state.store.write_lock().await;
        let removed = state.store.offboard_account(&account).await?;
        state.appkeys.remove_account(&account);
        removed
    };
    for id in &removed.certificate_ids {
        state.reconciler.forget(*id).await;
    }
    for id in &removed.credential_ids {
        state.credential_tokens.forget(&account, *id).await;
        state.reconciler.forget_credential(*id).await;
    }
    state.reconciler.kick();
    let (destroyed, failed) = state
        .secrets
        .destroy_account(
            &account,
            &removed.certificate_ids,
            &removed.credential_ids,
            &removed.app_key_ids,
        )
        .await;
    Ok(json!({
        "account": account,
        "removed": {
            "certificates": removed.certificates,
            "mappings": removed.mappings,
            "credentials": removed.credentials,
            "users": removed.users,
            "appKeys": removed.app_keys,
            "egressHosts": removed.egress_hosts,
        },
        "secretsDestroyed": destroyed,
        "secretsNotDestroyed": failed,
    }))
}
