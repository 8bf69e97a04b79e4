//! The runtime snapshot feed the filter long-polls.
//!
//! A node sees a mapping only once it has acknowledged the mapping's cluster and client
//! certificate over ADS; until the node is connected and has acknowledged its clusters at
//! least once, polls are held (the filter keeps its last good snapshot meanwhile).

use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use mtlsgate_filter::snapshot::Snapshot;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::AppState;
use crate::desired::{short_hash, Desired};
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
    let mappings: Vec<_> = desired
        .mappings
        .iter()
        .filter(|r| acks.clusters.contains(&r.entry.cluster) && acks.secrets.contains(&r.secret))
        .map(|r| r.entry.clone())
        .collect();
    let mut h = Sha256::new();
    for m in &mappings {
        h.update(m.id.to_be_bytes());
        h.update(m.cluster.as_bytes());
        h.update([0]);
    }
    Snapshot {
        version: short_hash(h),
        mappings,
        ..Default::default()
    }
}

/// `GET /v1/runtime/snapshot?node=…&version=…&waitSeconds=…`: answers the node's snapshot
/// as soon as its version differs from `version`, or 304 after `waitSeconds`.
pub async fn snapshot(State(state): State<AppState>, Query(q): Query<Poll>) -> Response {
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
