//! The egress allowlist of an account: `GET`/`PUT /api/account/{account}/egress`.
//!
//! The list replaces the LivePerson service's unconditional plain-TLS forward: the gateway
//! forwards an unmapped URL over plain TLS only to hosts the account named here.

use axum::extract::State;
use axum::Json as JsonOut;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::extract::{Json, Path};
use super::{check_account, AppState, Principal};
use crate::egress::{parse_list, EgressHost, MAX_HOSTS};

/// The body of both methods.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Egress {
    plain_tls_hosts: Vec<String>,
}

fn view(hosts: &[EgressHost]) -> Egress {
    Egress {
        plain_tls_hosts: hosts.iter().map(ToString::to_string).collect(),
    }
}

/// `GET /api/account/{account}/egress` (admins or `MTLS_MANAGE`).
pub async fn get(
    State(state): State<AppState>,
    Path(account): Path<String>,
    principal: Principal,
) -> Result<JsonOut<Egress>, ApiError> {
    check_account(&account)?;
    principal.require_manage(&account)?;
    Ok(JsonOut(view(&state.store.egress_hosts(&account).await?)))
}

/// `PUT /api/account/{account}/egress` (admins or `MTLS_MANAGE`): replaces the whole list,
/// or changes nothing when any entry is refused. Answers the list as stored (canonical).
pub async fn put(
    State(state): State<AppState>,
    Path(account): Path<String>,
    principal: Principal,
    Json(input): Json<Egress>,
) -> Result<JsonOut<Egress>, ApiError> {
    check_account(&account)?;
    principal.require_manage(&account)?;
    if input.plain_tls_hosts.len() > MAX_HOSTS {
        return Err(ApiError::bad_request(
            "too_many_hosts",
            format!("at most {MAX_HOSTS} hosts per account"),
        ));
    }
    let hosts = parse_list(&input.plain_tls_hosts).map_err(|(index, e)| {
        ApiError::bad_request("invalid_host", format!("plainTlsHosts[{index}]: {e}"))
            .with("index", serde_json::json!(index))
    })?;
    for (index, h) in hosts.iter().enumerate() {
        state
            .dns
            .policy()
            .check_written(&h.host, h.port)
            .map_err(|why| {
                ApiError::bad_request(
                    "target_not_allowed",
                    format!("plainTlsHosts[{index}]: {why}"),
                )
                .with("index", serde_json::json!(index))
            })?;
    }
    state.store.replace_egress_hosts(&account, &hosts).await?;
    state.reconciler.kick();
    tracing::info!(account, hosts = hosts.len(), by = %principal.describe(), "egress allowlist replaced");
    Ok(JsonOut(view(&hosts)))
}
