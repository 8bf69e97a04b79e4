//! CSDS (domain discovery): where a client finds each service, as LivePerson's
//! `baseURI.json` answers it.

use axum::extract::State;
use axum::Json as JsonOut;
use serde_json::{json, Value};

use super::error::ApiError;
use super::extract::Path;
use super::{check_account, AppState};

/// The services mtlsgate answers for, and which configured address each is at.
#[derive(Debug, Clone)]
pub struct Domains {
    pub gateway: String,
    pub api: String,
}

impl Domains {
    fn entries(&self, account: &str) -> Vec<Value> {
        [
            ("mtlsGateway", &self.gateway),
            ("accountConfigReadWrite", &self.api),
            ("agentVep", &self.api),
        ]
        .into_iter()
        .map(|(service, uri)| json!({"service": service, "account": account, "baseURI": uri}))
        .collect()
    }

    /// `{"baseURIs": [...]}` for the account.
    pub fn collection(&self, account: &str) -> Value {
        json!({"baseURIs": self.entries(account)})
    }
}

/// `GET /api/account/{account}/service/baseURI.json?version=1.0` (public, as CSDS is).
pub async fn all(
    State(state): State<AppState>,
    Path(account): Path<String>,
) -> Result<JsonOut<Value>, ApiError> {
    check_account(&account)?;
    Ok(JsonOut(state.domains.collection(&account)))
}

/// `GET /api/account/{account}/service/{service}/baseURI.json?version=1.0`
pub async fn one(
    State(state): State<AppState>,
    Path((account, service)): Path<(String, String)>,
) -> Result<JsonOut<Value>, ApiError> {
    check_account(&account)?;
    state
        .domains
        .entries(&account)
        .into_iter()
        .find(|e| e["service"] == service.as_str())
        .map(JsonOut)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no service named {service:?} (names are case sensitive)"
            ))
        })
}
