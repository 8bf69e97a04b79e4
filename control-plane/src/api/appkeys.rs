//! AppKeys (OAuth1 credentials) of an account. Secrets are shown once, at creation, and kept
//! in Vault; the database holds only the public identifiers.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json as JsonOut;
use base64::Engine;
use mtlsgate_filter::privilege;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::extract::{parse_json, Path};
use super::users::check_privileges;
use super::{check_account, views, AppState, Principal};
use crate::appkeys::AppKey;
use crate::random;
use crate::secret::Secret;
use crate::store::{AppKeyRow, Counted, Store};

fn view(row: &AppKeyRow) -> Value {
    json!({
        "id": row.id,
        "consumerKey": row.consumer_key,
        "accessToken": row.access_token,
        "privileges": row.privileges,
        "createdBy": row.created_by,
        "createdAt": views::rfc3339(row.created_at),
    })
}

fn token(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewAppKey {
    #[serde(default)]
    privileges: Option<Vec<String>>,
}

/// `POST /api/account/{account}/appkeys` (admins only): the answer is the only time the
/// secrets are shown.
pub async fn create(
    State(state): State<AppState>,
    Path(account): Path<String>,
    principal: Principal,
    body: axum::body::Bytes,
) -> Result<(StatusCode, JsonOut<Value>), ApiError> {
    check_account(&account)?;
    principal.require_admin(&account)?;
    // The body is optional: no body means the default privileges.
    let input: NewAppKey = if body.iter().all(u8::is_ascii_whitespace) {
        NewAppKey::default()
    } else {
        parse_json(&body)?
    };
    let privileges = check_privileges(input.privileges, &privilege::RUNTIME)?;
    let consumer_key = hex::encode(random::bytes::<16>());
    let access_token = format!("{}-{}", account, hex::encode(random::bytes::<16>()));
    let consumer_secret = Secret::new(token(&random::bytes::<32>()));
    let token_secret = Secret::new(token(&random::bytes::<32>()));
    // The write runs to its end in a task of its own (`detached`): a request dropped between
    // the secret store and the commit still commits or undoes, and the gateway's view
    // (`state.appkeys`) always follows what was committed.
    let row = super::detached({
        let state = state.clone();
        let account = account.clone();
        let by = principal.describe();
        let (consumer_secret, token_secret) = (consumer_secret.clone(), token_secret.clone());
        async move {
            let row = {
                let _w = state.store.write_lock().await;
                let mut tx = state.store.begin_write(&account).await?;
                state
                    .quotas
                    .check(&mut tx, &account, Counted::AppKeys, 1)
                    .await?;
                let row = Store::insert_appkey(
                    &mut tx,
                    &account,
                    &consumer_key,
                    &access_token,
                    &privileges,
                    &by,
                )
                .await?;
                state
                    .secrets
                    .put_appkey(&account, row.id, &consumer_secret, &token_secret)
                    .await?;
                Store::commit_or_undo(tx, || state.secrets.delete_appkey(&account, row.id)).await?;
                // Still under the write lock: a revocation of this id (which takes the lock)
                // cannot remove it from the view before it is added.
                state.appkeys.insert(AppKey {
                    row: row.clone(),
                    consumer_secret,
                    token_secret,
                });
                row
            };
            state.reconciler.kick();
            Ok(row)
        }
    })
    .await?;
    tracing::info!(account, appkey = row.id, by = %principal.describe(), "AppKey created");
    let mut v = view(&row);
    if let Some(o) = v.as_object_mut() {
        o.insert("consumerSecret".into(), json!(consumer_secret.expose()));
        o.insert("accessTokenSecret".into(), json!(token_secret.expose()));
    }
    Ok((StatusCode::CREATED, JsonOut(v)))
}

/// `GET /api/account/{account}/appkeys` (admins only): without secrets.
pub async fn list(
    State(state): State<AppState>,
    Path(account): Path<String>,
    principal: Principal,
) -> Result<JsonOut<Value>, ApiError> {
    check_account(&account)?;
    principal.require_admin(&account)?;
    Ok(JsonOut(Value::Array(
        state
            .store
            .appkeys(&account)
            .await?
            .iter()
            .map(view)
            .collect(),
    )))
}

/// `DELETE /api/account/{account}/appkeys/{id}` (admins only): revokes at once.
pub async fn revoke(
    State(state): State<AppState>,
    Path((account, id)): Path<(String, i64)>,
    principal: Principal,
) -> Result<JsonOut<Value>, ApiError> {
    check_account(&account)?;
    principal.require_admin(&account)?;
    // Detached: once the revocation is committed, the gateway's view loses the key whatever
    // happens to the request.
    super::detached({
        let state = state.clone();
        let account = account.clone();
        async move {
            {
                let _w = state.store.write_lock().await;
                let mut tx = state.store.begin_write(&account).await?;
                if !Store::revoke_appkey(&mut tx, &account, id).await? {
                    return Err(ApiError::not_found(format!(
                        "no AppKey {id} in this account"
                    )));
                }
                tx.commit().await?;
                // Revoked in the store and in memory, under the write lock; a Vault failure
                // below only leaves unused secrets.
                state.appkeys.remove(&account, id);
            }
            state.reconciler.kick();
            if let Err(e) = state.secrets.delete_appkey(&account, id).await {
                tracing::warn!(appkey = id, error = %e, "revoked, but its secrets could not be removed from Vault");
            }
            Ok(())
        }
    })
    .await?;
    tracing::info!(account, appkey = id, by = %principal.describe(), "AppKey revoked");
    Ok(JsonOut(json!({"id": id, "revoked": true})))
}
