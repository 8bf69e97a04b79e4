//! `/api/account/{account}/credentials`: credentials attached to mappings. Secrets go to Vault
//! and come back masked, never in clear.

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::Json as JsonOut;
use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::extract::{Json, Path};
use super::{check_account, views, AppState, Principal};
use crate::credential_tokens::{AuthorizeError, CallbackError};
use crate::credentials::{Input, Validated};
use crate::store::{Counted, CredentialRow, Store};

const MASK: &str = "********";

/// The longest value of one callback parameter (`state`, `code`, `error`, ...), characters.
const CALLBACK_PARAMETER_MAX: usize = 4096;

fn view(state: &AppState, row: &CredentialRow, secret_fields: &[String]) -> Value {
    let mut v = Map::new();
    v.insert("id".into(), json!(row.id));
    v.insert("name".into(), json!(row.name));
    v.insert("type".into(), json!(row.kind().as_str()));
    v.insert("siteId".into(), json!(row.account));
    v.extend(row.settings.to_json());
    for k in secret_fields {
        v.insert(k.clone(), json!(MASK));
    }
    v.insert("attachable".into(), json!(row.kind().attachable()));
    if row.kind().needs_tokens() {
        v.extend(state.credential_tokens.describe(row));
    }
    if row.kind().authorized_by_user() {
        // What the user registers at the authorization server.
        v.insert(
            "redirectUri".into(),
            json!(state.credential_tokens.redirect_uri()),
        );
    }
    v.insert("createdAt".into(), json!(views::rfc3339(row.created_at)));
    v.insert("updatedAt".into(), json!(views::rfc3339(row.updated_at)));
    Value::Object(v)
}

/// Splits `{"name": …, "type": …, …}` and validates the rest by type.
pub(crate) fn parse(
    body: Value,
    policy: crate::address_policy::AddressPolicy,
) -> Result<(String, Validated), ApiError> {
    let Value::Object(mut obj) = body else {
        return Err(ApiError::bad_request(
            "invalid_body",
            "the body must be a JSON object",
        ));
    };
    let name = match obj.remove("name") {
        Some(Value::String(n)) => n,
        _ => return Err(ApiError::bad_request("invalid_body", "name is required")),
    };
    if name.trim().is_empty() || name.chars().count() > 128 || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_name",
            "a name must be 1-128 characters with no control characters",
        ));
    }
    obj.remove("id");
    let input: Input = serde_json::from_value(Value::Object(obj))
        .map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))?;
    let validated = input.validate(&policy).map_err(|e| {
        let status = if e.code.starts_with("p12_") || e.code.starts_with("keystore_") {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError::new(status, e.code, e.message)
    })?;
    Ok((name, validated))
}

fn names(v: &Validated) -> Vec<String> {
    v.secrets.field_names()
}

async fn stored_secret_names(state: &AppState, row: &CredentialRow) -> Vec<String> {
    match state
        .secrets
        .get_credential(&row.account, row.id, row.secret_version)
        .await
    {
        Ok(Some(m)) => m.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// A credential the principal may manage, or why not (bad account, no privilege, 404).
async fn managed(
    state: &AppState,
    principal: &Principal,
    account: &str,
    id: i64,
) -> Result<CredentialRow, ApiError> {
    check_account(account)?;
    principal.require_manage(account)?;
    state
        .store
        .credential(account, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no credential {id} in this account")))
}

/// `POST /api/account/{account}/credentials`
pub async fn create(
    State(state): State<AppState>,
    Path(account): Path<String>,
    principal: Principal,
    Json(body): Json<Value>,
) -> Result<(StatusCode, JsonOut<Value>), ApiError> {
    check_account(&account)?;
    principal.require_manage(&account)?;
    // why: a Mutual Authentication credential carries key stores to open (key derivations
    // within the key-store budget): on the CPU pool, off the async threads.
    let policy = state.dns.policy().clone();
    let (name, v) = super::on_cpu_pool(&state, move || parse(body, policy)).await??;
    let secret_names = names(&v);
    let row = super::detached(create_detached(state.clone(), account.clone(), name, v)).await?;
    tracing::info!(account, credential = row.id, kind = %row.kind(), by = %principal.describe(), "credential created");
    Ok((
        StatusCode::CREATED,
        JsonOut(view(&state, &row, &secret_names)),
    ))
}

/// [`create`]'s write, in a task of its own (so a request dropped by its deadline cannot
/// stop it between Vault and the commit): row inserted (for its id), secrets written, row
/// pinned to their version, commit; any failure after the secrets were written destroys
/// them again.
async fn create_detached(
    state: AppState,
    account: String,
    name: String,
    v: Validated,
) -> Result<CredentialRow, ApiError> {
    let account = account.as_str();
    let _w = state.store.write_lock().await;
    let mut tx = state.store.begin_write(account).await?;
    state
        .quotas
        .check(&mut tx, account, Counted::Credentials, 1)
        .await?;
    if let Some((existing, code)) =
        Store::credential_clash(&mut tx, account, &name, v.kind(), None).await?
    {
        return Err(ApiError::conflict(
            code,
            "a credential of this name, or the account's only Consumer Pre-Authentication, exists",
        )
        .with("existingCredentialId", json!(existing)));
    }
    let id = Store::insert_credential(&mut tx, account, &name, &v.settings).await?;
    let version = state
        .secrets
        .put_credential(account, id, &v.secrets.to_map())
        .await?;
    let undo = || async {
        if let Err(e) = state.secrets.delete_credential(account, id).await {
            tracing::warn!(account, credential = id, error = %e, "a credential whose commit failed left its secrets behind; no row names them, so they are never used");
        }
    };
    if let Err(e) = Store::set_credential_secret_version(&mut tx, account, id, version).await {
        drop(tx);
        undo().await;
        return Err(e.into());
    }
    Store::commit_or_undo(tx, undo).await?;
    state.credential_tokens.forget(account, id).await;
    state
        .store
        .credential(account, id)
        .await?
        .ok_or_else(|| ApiError::not_found("credential vanished"))
}

/// `GET /api/account/{account}/credentials`
pub async fn list(
    State(state): State<AppState>,
    Path(account): Path<String>,
    principal: Principal,
) -> Result<JsonOut<Value>, ApiError> {
    check_account(&account)?;
    principal.require_manage(&account)?;
    let mut out = Vec::new();
    for row in state.store.credentials(&account).await? {
        let secret_names = stored_secret_names(&state, &row).await;
        out.push(view(&state, &row, &secret_names));
    }
    Ok(JsonOut(Value::Array(out)))
}

/// `GET /api/account/{account}/credentials/{id}`
pub async fn get_one(
    State(state): State<AppState>,
    Path((account, id)): Path<(String, i64)>,
    principal: Principal,
) -> Result<JsonOut<Value>, ApiError> {
    let row = managed(&state, &principal, &account, id).await?;
    let secret_names = stored_secret_names(&state, &row).await;
    Ok(JsonOut(view(&state, &row, &secret_names)))
}

/// `PUT /api/account/{account}/credentials/{id}`: replaces the credential (secrets included).
pub async fn update(
    State(state): State<AppState>,
    Path((account, id)): Path<(String, i64)>,
    principal: Principal,
    Json(body): Json<Value>,
) -> Result<JsonOut<Value>, ApiError> {
    check_account(&account)?;
    principal.require_manage(&account)?;
    let policy = state.dns.policy().clone();
    let (name, v) = super::on_cpu_pool(&state, move || parse(body, policy)).await??;
    let secret_names = names(&v);
    let row = super::detached(update_detached(state.clone(), account.clone(), id, name, v)).await?;
    tracing::info!(account, credential = id, by = %principal.describe(), "credential updated");
    Ok(JsonOut(view(&state, &row, &secret_names)))
}

/// [`update`]'s write, in a task of its own.
///
/// The new secrets are a new version in the secret store; the row is re-pinned to it in the
/// transaction that commits the new settings. Until that commit the row names the old
/// version, which nothing overwrites, so the gateway keeps using the old secrets; if the
/// commit fails, the new version is destroyed (and if that fails too, no row names it, so
/// it is never used).
async fn update_detached(
    state: AppState,
    account: String,
    id: i64,
    name: String,
    v: Validated,
) -> Result<CredentialRow, ApiError> {
    let account = account.as_str();
    let _w = state.store.write_lock().await;
    let current = state
        .store
        .credential(account, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no credential {id} in this account")))?;
    if current.secret_version == 0 {
        // why: a row from before rows pinned their version reads the newest one, which the
        // write below is about to make; pin it to what it reads now (committed on its own,
        // before that write), so a failed update leaves it reading the same secrets.
        if let Some(live) = state.secrets.credential_version(account, id).await? {
            state.store.pin_legacy_credential(account, id, live).await?;
        }
    }
    let mut tx = state.store.begin_write(account).await?;
    // Read again under the account's lock: another control plane may have changed or
    // deleted it since.
    let current = state
        .store
        .credential(account, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no credential {id} in this account")))?;
    if current.kind() != v.kind()
        && !Store::mappings_using_credential(&mut tx, account, id)
            .await?
            .is_empty()
        && !v.kind().attachable()
    {
        return Err(ApiError::conflict(
            "credential_in_use",
            "mappings use this credential; its new type cannot be attached",
        ));
    }
    if let Some((existing, code)) =
        Store::credential_clash(&mut tx, account, &name, v.kind(), Some(id)).await?
    {
        return Err(ApiError::conflict(
            code,
            "a credential of this name, or the account's only Consumer Pre-Authentication, exists",
        )
        .with("existingCredentialId", json!(existing)));
    }
    if !Store::update_credential(&mut tx, account, id, &name, &v.settings).await? {
        return Err(ApiError::not_found(format!(
            "no credential {id} in this account"
        )));
    }
    let version = state
        .secrets
        .put_credential(account, id, &v.secrets.to_map())
        .await?;
    let undo = || async {
        if let Err(e) = state
            .secrets
            .destroy_credential_version(account, id, version)
            .await
        {
            tracing::warn!(account, credential = id, version, error = %e, "a credential update whose commit failed left its new secrets behind; no row names that version, so it is never used");
        }
    };
    if let Err(e) = Store::set_credential_secret_version(&mut tx, account, id, version).await {
        drop(tx);
        undo().await;
        return Err(e.into());
    }
    Store::commit_or_undo(tx, undo).await?;
    // New settings or secrets: tokens obtained with the old ones go (an authorization-code
    // credential must be authorized again).
    state.credential_tokens.forget(account, id).await;
    state.reconciler.forget_credential(id).await;
    state
        .store
        .credential(account, id)
        .await?
        .ok_or_else(|| ApiError::not_found("credential vanished"))
}

/// `DELETE /api/account/{account}/credentials/{id}`: refused while a mapping uses it.
pub async fn delete(
    State(state): State<AppState>,
    Path((account, id)): Path<(String, i64)>,
    principal: Principal,
) -> Result<JsonOut<Value>, ApiError> {
    // why: before looking at which mappings use it, or a 409 would list another account's
    // mapping names.
    managed(&state, &principal, &account, id).await?;
    super::detached(delete_detached(state.clone(), account.clone(), id)).await?;
    tracing::info!(account, credential = id, by = %principal.describe(), "credential deleted");
    Ok(JsonOut(json!({"id": id, "deleted": true})))
}

/// [`delete`]'s write, in a task of its own: the row marked deleted and committed, then the
/// secrets destroyed — never before, so a failed delete leaves the credential whole — and a
/// request dropped in between does not skip that.
async fn delete_detached(state: AppState, account: String, id: i64) -> Result<(), ApiError> {
    let account = account.as_str();
    let _w = state.store.write_lock().await;
    let mut tx = state.store.begin_write(account).await?;
    let users = Store::mappings_using_credential(&mut tx, account, id).await?;
    if !users.is_empty() {
        return Err(ApiError::conflict(
            "credential_in_use",
            format!("{} mapping(s) use this credential", users.len()),
        )
        .with(
            "mappings",
            Value::Array(
                users
                    .iter()
                    .map(|(i, n)| json!({"id": i, "name": n}))
                    .collect(),
            ),
        ));
    }
    if !Store::delete_credential(&mut tx, account, id).await? {
        return Err(ApiError::not_found(format!(
            "no credential {id} in this account"
        )));
    }
    Store::commit_or_undo(tx, || async {}).await?;
    state.credential_tokens.forget(account, id).await;
    state.reconciler.forget_credential(id).await;
    if let Err(e) = state.secrets.delete_credential(account, id).await {
        tracing::warn!(account, credential = id, error = %e, "credential deleted, but its secrets could not be destroyed; destroy them in the secret store");
    }
    Ok(())
}

/// `POST /api/account/{account}/credentials/{id}/authorize`: the URL to send the user to,
/// for an authorization-code credential. May be called again at any time (re-authorize).
pub async fn authorize(
    State(state): State<AppState>,
    Path((account, id)): Path<(String, i64)>,
    principal: Principal,
) -> Result<JsonOut<Value>, ApiError> {
    let row = managed(&state, &principal, &account, id).await?;
    let a = state
        .credential_tokens
        .authorize(&row)
        .await
        .map_err(|e| match e {
            AuthorizeError::NotAuthorizable => {
                ApiError::conflict("credential_not_authorizable", e.to_string())
            }
            AuthorizeError::TooManyPending => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_pending_authorizations",
                e.to_string(),
            )
            .retry_after(60),
            AuthorizeError::Unavailable => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "secret_store_unavailable",
                e.to_string(),
            ),
        })?;
    tracing::info!(account, credential = id, by = %principal.describe(), "authorization started");
    Ok(JsonOut(json!({
        "authorizationUrl": a.url,
        "state": a.state,
        "redirectUri": a.redirect_uri,
        "expiresIn": a.expires_in.as_secs(),
    })))
}

/// `GET /api/oauth2/callback?state=…&code=…` (or `&error=…`): where the authorization server
/// sends the user back. Unauthenticated by nature; `state` (single use, 10 minutes) is what
/// ties the answer to the request an account manager started.
pub async fn callback(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<JsonOut<Value>, ApiError> {
    let query = query.unwrap_or_default();
    if query.len() > 16 * 1024 {
        return Err(ApiError::bad_request(
            "invalid_callback",
            "the callback's query is too long",
        ));
    }
    let mut params = std::collections::HashMap::new();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        if v.chars().count() > CALLBACK_PARAMETER_MAX {
            return Err(ApiError::bad_request(
                "invalid_callback",
                format!("a callback parameter is over {CALLBACK_PARAMETER_MAX} characters"),
            ));
        }
        if params.insert(k.into_owned(), v.into_owned()).is_some() {
            return Err(ApiError::bad_request(
                "invalid_callback",
                "a callback parameter appears twice",
            ));
        }
    }
    let Some(st) = params.get("state").filter(|s| !s.is_empty()) else {
        return Err(ApiError::bad_request(
            "invalid_callback",
            "the callback has no state",
        ));
    };
    let outcome = match (params.get("code"), params.get("error")) {
        (_, Some(error)) => Err(format!(
            "{}{}",
            clean(error),
            params
                .get("error_description")
                .map(|d| format!(": {}", clean(d)))
                .unwrap_or_default()
        )),
        (Some(code), None) if !code.is_empty() => Ok(code.as_str()),
        _ => {
            return Err(ApiError::bad_request(
                "invalid_callback",
                "the callback has neither code nor error",
            ))
        }
    };
    match state.credential_tokens.callback(st, outcome).await {
        Ok((account, id)) => Ok(JsonOut(json!({
            "authorized": true,
            "siteId": account,
            "credentialId": id,
            "message": "authorization passed; the token is kept and refreshed by mtlsgate",
        }))),
        Err(e @ CallbackError::UnknownState) => {
            Err(ApiError::bad_request("invalid_state", e.to_string()))
        }
        Err(e @ CallbackError::CredentialGone) => Err(ApiError::not_found(e.to_string())),
        Err(e @ CallbackError::Denied(_)) => {
            Err(ApiError::bad_request("authorization_denied", e.to_string()))
        }
        Err(e @ CallbackError::Vault) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "secret_store_unavailable",
            e.to_string(),
        )),
        Err(e @ CallbackError::Exchange(_)) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "token_exchange_failed",
            e.to_string(),
        )),
    }
}

/// Text from the authorization server, bounded and printable, for an answer.
fn clean(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(200).collect()
}
