//! The runtime snapshot feed the filter long-polls.
//!
//! The snapshot carries AppKey secrets, so it is served only to a caller presenting the
//! runtime token (`--runtime-token`), and not at all when none is configured.
//!
//! A node sees a mapping only once it has acknowledged the mapping's cluster and client
//! certificate over ADS, and a fallback host only once it has acknowledged its plain-TLS
//! cluster; until the node is connected and has acknowledged its clusters at least once,
//! polls are held (the filter keeps its last good snapshot meanwhile). Credentials (token
//! keys, AppKeys, users) need nothing acknowledged and are served as they are.

use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use mtlsgate_filter::snapshot::Snapshot;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::AppState;
use crate::desired::{short_hash, Desired};
use crate::secret::Secret;
use crate::xds::acks::NodeAcks;

const MAX_WAIT: u64 = 120;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Poll {
    node: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    wait_seconds: u64,
}

/// The snapshot one node may use.
pub fn gated(desired: &Desired, acks: &NodeAcks) -> Snapshot {
    let mappings = desired
        .mappings
        .iter()
        .filter(|r| {
            r.entry.credential_unavailable
                || (acks.clusters.contains(&r.entry.cluster) && acks.secrets.contains(&r.secret))
        })
        .map(|r| r.entry.clone())
        .collect();
    let fallback = desired
        .fallback
        .iter()
        .filter(|f| acks.clusters.contains(&f.cluster))
        .cloned()
        .collect();
    let c = &desired.credentials;
    let mut snap = Snapshot {
        version: String::new(),
        mappings,
        token_keys: c.token_keys.clone(),
        app_keys: c.app_keys.clone(),
        users: c.users.clone(),
        fallback,
    };
    snap.version = version(&snap);
    snap
}

/// SHA-256 of the snapshot's whole content (its JSON form, version left empty), so the
/// version changes whenever anything the filter reads does: a mapping or its certificate
/// serial, a fallback host, a token key, a user, an AppKey's secrets or privileges. Hashing
/// the wire form rather than chosen fields keeps it right when the contract gains a field.
/// The version is a truncated hash: it names the content without revealing the secrets in it.
pub fn version(snapshot: &Snapshot) -> String {
    let mut h = Sha256::new();
    let unversioned = Snapshot {
        version: String::new(),
        ..snapshot.clone()
    };
    // why: serializing structs of strings, numbers and enums (no maps, no custom
    // serializers) cannot fail; were it to, the empty input still yields a version.
    h.update(serde_json::to_vec(&unversioned).unwrap_or_default());
    short_hash(h)
}

/// Checks `Authorization: Bearer <runtime token>`.
fn authorize(expected: Option<&Secret>, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = expected else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "runtime_token_not_configured",
            "the control plane has no runtime token (--runtime-token); the snapshot is not served",
        ));
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(token) if expected.matches(token.as_bytes()) => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the runtime snapshot needs the runtime token as a Bearer token",
        )),
    }
}

/// `GET /v1/runtime/snapshot?node=…&version=…&waitSeconds=…`: answers the node's snapshot
/// as soon as its version differs from `version`, or 304 after `waitSeconds`.
pub async fn snapshot(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<Poll>, QueryRejection>,
) -> Response {
    // Authenticate before reading anything else: an outsider learns nothing, not even
    // whether its query was well formed.
    if let Err(e) = authorize(state.runtime_token.as_ref(), &headers) {
        return e.into_response();
    }
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => {
            return ApiError::bad_request("invalid_query", e.body_text()).into_response();
        }
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(q.wait_seconds.min(MAX_WAIT));
    let mut desired = state.sync.subscribe();
    let mut acks = state.acks.subscribe();
    loop {
        desired.borrow_and_update();
        acks.borrow_and_update();
        if let Some(node) = state.acks.ready(&q.node) {
            let snap = gated(&desired.borrow().clone(), &node);
            if snap.version != q.version {
                return match serde_json::to_vec(&snap) {
                    Ok(body) => {
                        ([(header::CONTENT_TYPE, "application/json")], body).into_response()
                    }
                    Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                };
            }
        }
        tokio::select! {
            _ = desired.changed() => {}
            _ = acks.changed() => {}
            _ = tokio::time::sleep_until(deadline) => return StatusCode::NOT_MODIFIED.into_response(),
        }
    }
}

#[cfg(test)]
mod tests;
