//! Per-account quotas: how many mappings, certificates, credentials and AppKeys one account
//! may hold.
//!
//! why: every tenant shares the gateway. Each mapping and certificate becomes a cluster and a
//! secret on every Envoy (memory, a circuit breaker's share, CDS and SDS work on every
//! change); without a bound one account can grow everyone's configuration, and everyone's
//! delivery time, without limit. Checked in the writer's transaction under the store's write
//! lock, so concurrent creations cannot overshoot.

use crate::store::Tx;
use axum::http::StatusCode;
use serde_json::json;

use super::error::ApiError;
use crate::store::{Counted, Store};

/// The limits, per account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    pub mappings: u64,
    pub certificates: u64,
    pub credentials: u64,
    pub appkeys: u64,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            mappings: 10_000,
            certificates: 1_000,
            credentials: 1_000,
            appkeys: 100,
        }
    }
}

impl Quotas {
    fn limit(&self, what: Counted) -> u64 {
        match what {
            Counted::Mappings => self.mappings,
            Counted::Certificates => self.certificates,
            Counted::Credentials => self.credentials,
            Counted::AppKeys => self.appkeys,
        }
    }

    /// Refuses, with 422 `quota_exceeded`, adding `adding` rows of `what` to `account` when
    /// that would take it over its limit.
    pub async fn check(
        &self,
        tx: &mut Tx,
        account: &str,
        what: Counted,
        adding: u64,
    ) -> Result<(), ApiError> {
        let limit = self.limit(what);
        let held = Store::live_count(tx, account, what).await?;
        if held.saturating_add(adding) <= limit {
            return Ok(());
        }
        let kind = name(what);
        Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "quota_exceeded",
            format!("this account may hold at most {limit} {kind}; it holds {held}; delete some first or ask the operator for a higher quota"),
        )
        .with("quota", json!(kind))
        .with("limit", json!(limit)))
    }
}

fn name(what: Counted) -> &'static str {
    match what {
        Counted::Mappings => "mappings",
        Counted::Certificates => "certificates",
        Counted::Credentials => "credentials",
        Counted::AppKeys => "appkeys",
    }
}
