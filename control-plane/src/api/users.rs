//! Users of an account and the login method.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json as JsonOut;
use mtlsgate_filter::privilege;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::extract::{ClientAddr, Json, Path};
use super::{check_account, views, AppState, Principal};
use crate::identity::{self, LoginPolicy};
use crate::secret::Secret;
use crate::store::{UserDeletion, UserRow};

/// A user as shown: never the password or its hash.
fn user_view(u: &UserRow) -> Value {
    json!({
        "id": u.id,
        "username": u.username,
        "isAdmin": u.is_admin,
        "privileges": u.privileges,
        "siteId": u.account,
        "createdAt": views::rfc3339(u.created_at),
    })
}

/// Checks a user name (the rule is [`identity::check_username`]).
pub fn check_username(name: &str) -> Result<(), ApiError> {
    crate::identity::check_username(name)
        .map_err(|e| ApiError::bad_request(e.code(), e.to_string()))
}

/// Checks a new password (the rule is [`identity::check_password`]).
pub fn check_password(password: &Secret) -> Result<(), ApiError> {
    crate::identity::check_password(password)
        .map_err(|e| ApiError::bad_request(e.code(), e.to_string()))
}

/// Privilege names from a request: each must be known.
pub fn check_privileges(
    names: Option<Vec<String>>,
    default: &[&str],
) -> Result<Vec<String>, ApiError> {
    let names = names.unwrap_or_else(|| default.iter().map(|s| s.to_string()).collect());
    if let Some(bad) = names.iter().find(|n| !privilege::is_known(n)) {
        return Err(ApiError::bad_request(
            "invalid_privilege",
            format!(
                "unknown privilege {bad:?}; known: {}",
                privilege::ALL.join(", ")
            ),
        ));
    }
    let mut names = names;
    names.sort();
    names.dedup();
    Ok(names)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewUser {
    username: String,
    password: Secret,
    #[serde(default)]
    is_admin: bool,
    #[serde(default)]
    privileges: Option<Vec<String>>,
}

/// One of the bounded slots every password hash (login, user creation) runs in: waits up to
/// two seconds for one, then answers 503 `code` with `Retry-After: 1`.
async fn hashing_slot(
    state: &AppState,
    code: &'static str,
    why: &'static str,
) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    match tokio::time::timeout(
        std::time::Duration::from_secs(2),
        state.hashing.clone().acquire_owned(),
    )
    .await
    {
        Ok(Ok(permit)) => Ok(permit),
        _ => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            code,
            format!("{why}; try again shortly"),
        )
        .retry_after(1)),
    }
}

fn duplicate_username(name: &str) -> ApiError {
    ApiError::conflict(
        "duplicate_username",
        format!("a user named {name:?} already exists"),
    )
}

/// `POST /api/account/{account}/users` (admins only).
pub async fn create(
    State(state): State<AppState>,
    Path(account): Path<String>,
    principal: Principal,
    Json(input): Json<NewUser>,
) -> Result<(StatusCode, JsonOut<Value>), ApiError> {
    check_account(&account)?;
    principal.require_admin(&account)?;
    check_username(&input.username)?;
    check_password(&input.password)?;
    let privileges = check_privileges(input.privileges, &privilege::RUNTIME)?;
    // A name already taken is refused before any hashing: a loop of duplicates costs nothing.
    if state
        .store
        .user_named(&account, &input.username)
        .await?
        .is_some()
    {
        return Err(duplicate_username(&input.username));
    }
    // why: an Argon2id hash takes tens of milliseconds and 19 MiB; unbounded, a flood of
    // creations (one admin is enough) would take every core and the memory with it. The
    // slots are the ones logins use, and creations hold at most one of them at a time, so no
    // admin's flood leaves logins without a slot.
    let Ok(_creation) = state.user_creations.clone().try_acquire_owned() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "hashing_busy",
            "another user is being created; try again shortly",
        )
        .retry_after(1));
    };
    let permit = hashing_slot(
        &state,
        "hashing_busy",
        "too many passwords being hashed at once",
    )
    .await?;
    let password = input.password;
    let hash = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        identity::hash_password(&password)
    })
    .await
    .map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    })?
    .map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    })?;
    let user = state
        .store
        .insert_user(
            &account,
            &input.username,
            &hash,
            input.is_admin,
            &privileges,
        )
        .await?
        .ok_or_else(|| duplicate_username(&input.username))?;
    // The gateway's snapshot lists live users.
    state.reconciler.kick();
    tracing::info!(account, user = user.id, by = %principal.describe(), "user created");
    Ok((StatusCode::CREATED, JsonOut(user_view(&user))))
}

/// `GET /api/account/{account}/users` (admins only).
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
            .users(&account)
            .await?
            .iter()
            .map(user_view)
            .collect(),
    )))
}

/// `DELETE /api/account/{account}/users/{id}` (admins only; not the last admin).
pub async fn delete(
    State(state): State<AppState>,
    Path((account, id)): Path<(String, i64)>,
    principal: Principal,
) -> Result<JsonOut<Value>, ApiError> {
    check_account(&account)?;
    principal.require_admin(&account)?;
    match state
        .store
        .delete_user_keeping_an_admin(&account, id)
        .await?
    {
        UserDeletion::Deleted => {}
        UserDeletion::NotFound => {
            return Err(ApiError::not_found(format!("no user {id} in this account")))
        }
        UserDeletion::LastAdmin => {
            return Err(ApiError::conflict(
                "last_admin",
                "the last admin of an account cannot be deleted",
            ))
        }
    }
    // The gateway refuses a deleted user's tokens once its snapshot no longer lists them.
    state.reconciler.kick();
    tracing::info!(account, user = id, by = %principal.describe(), "user deleted");
    Ok(JsonOut(json!({"id": id, "deleted": true})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    username: String,
    password: Secret,
}

/// `POST /api/account/{account}/login?v=1.3`: the agentVep login. Wrong user, password or
/// account all answer the same 401, in the same time.
pub async fn login(
    State(state): State<AppState>,
    Path(account): Path<String>,
    ClientAddr(client): ClientAddr,
    Json(input): Json<Login>,
) -> Result<JsonOut<Value>, ApiError> {
    check_account(&account)?;
    // why: guessing is slowed per (account, user name) and per client address, with the
    // counters in the database so they hold across control planes; a locked scope is
    // refused before any hash is computed. Unknown names are counted like real ones, and
    // verified against a dummy hash, so neither the answer nor its timing tells them apart.
    let user_scope = LoginPolicy::user_scope(&account, &input.username);
    let mut scopes = vec![user_scope.clone()];
    if let Some(ip) = client {
        scopes.push(LoginPolicy::address_scope(ip));
    }
    let now = crate::clock::now();
    if let Some(until) = state.store.login_locked_until(&scopes, now).await? {
        let wait = u64::try_from(until.saturating_sub(now)).unwrap_or(1);
        tracing::info!(account, "login refused: too many failed attempts");
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_attempts",
            "too many failed logins for this user or from this address; try again later",
        )
        .retry_after(wait));
    }
    let user = if identity::check_username(&input.username).is_ok() {
        state.store.user_named(&account, &input.username).await?
    } else {
        None
    };
    let permit = hashing_slot(&state, "login_busy", "too many logins at once").await?;
    let password = input.password;
    let hash = user.as_ref().map(|u| u.password_hash.clone());
    let ok = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        identity::verify_password(&password, hash.as_deref())
    })
    .await
    .unwrap_or(false);
    let user = match (ok, user) {
        (true, Some(u)) => u,
        _ => {
            for (scope, lock) in scopes.iter().zip([
                LoginPolicy::user_lock as fn(i64) -> i64,
                LoginPolicy::address_lock,
            ]) {
                if let Err(e) = state
                    .store
                    .login_failed(scope, now, LoginPolicy::WINDOW_SECS, lock)
                    .await
                {
                    tracing::warn!(error = %e, "cannot count a failed login");
                }
            }
            tracing::info!(account, "login refused");
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
                "wrong user name, password or account",
            ));
        }
    };
    if let Err(e) = state.store.login_succeeded(&user_scope).await {
        tracing::warn!(error = %e, "cannot reset the failed-login counter");
    }
    // why: a user added with `mtlsgate user add` (another process) reaches the gateway's
    // snapshot only at the next rebuild; make sure it is published before handing out a token
    // the gateway would otherwise refuse. Bounded: a slow rebuild delays the login, no more.
    let (acc, uid) = (user.account.clone(), user.id as u64);
    let listed = move |d: &crate::desired::Desired| {
        d.callers
            .users
            .iter()
            .any(|u| u.id == uid && u.account == acc)
    };
    if !state
        .reconciler
        .kick_until(listed, std::time::Duration::from_secs(2))
        .await
    {
        tracing::warn!(
            account,
            user = user.id,
            "the gateway's snapshot does not list this user yet"
        );
    } else {
        // And until the connected gateways run that snapshot (bounded): a token used at once
        // would otherwise race the gateway's next poll. No rebuild is asked for: the state
        // published now already lists the user.
        let epoch = state.reconciler.published().borrow().epoch;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
        if let Err(nodes) = super::prefer::epoch_enforced(&state.acks, epoch, deadline).await {
            tracing::info!(account, user = user.id, nodes = %nodes.join(", "), "login answered before every gateway ran a snapshot listing the user");
        }
    }
    let bearer = state.login_tokens.issue(&user);
    tracing::info!(account, user = user.id, "login");
    let now_ms = crate::clock::now().saturating_mul(1000);
    let mut privileges = user.privileges.clone();
    if user.is_admin {
        privileges = privilege::ALL.iter().map(|s| s.to_string()).collect();
    }
    Ok(JsonOut(json!({
        "bearer": bearer,
        "sessionTTl": (state.login_tokens.ttl_secs() * 1000).to_string(),
        "config": {
            "loginName": user.username,
            "userId": user.id.to_string(),
            "isAdmin": user.is_admin,
            "userPrivileges": privileges,
            "serverCurrentTime": now_ms,
            "accountId": account,
        },
        "csdsCollectionResponse": state.domains.collection(&account),
    })))
}
