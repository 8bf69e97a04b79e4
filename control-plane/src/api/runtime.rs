//! The runtime snapshot feed the filter long-polls.
//!
//! The snapshot carries AppKey secrets, so it is served only on the feed's own listener, over
//! mutual TLS, to a gateway whose certificate (issued by the link CA) names the node it asks
//! for: a process that reaches the port gets nothing, and gateway A cannot read node B's.
//!
//! A node sees a mapping only once it has acknowledged the mapping's cluster and client
//! certificate over ADS, and a fallback host only once it has acknowledged its plain-TLS
//! cluster; until the node is connected and has acknowledged its clusters at least once,
//! polls are held (the filter keeps its last good snapshot meanwhile). Credentials (token
//! keys, AppKeys, users) need nothing acknowledged and are served as they are.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use mtlsgate_filter::snapshot::Snapshot;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::error::ApiError;
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

/// A node's snapshot as sent: its version and its JSON body.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub version: String,
    pub body: Bytes,
    /// Nothing of the desired state was held back for an acknowledgement the node has not
    /// sent yet: a filter running this snapshot enforces the whole desired state.
    pub complete: bool,
}

/// The snapshot one node may use, serialized once. Its version is the SHA-256 of the
/// snapshot's whole content (its JSON with the version left empty), spliced into that same
/// JSON: it changes whenever anything the filter reads does (a mapping or its certificate
/// serial, a fallback host, a token key, a user, an AppKey's secrets or privileges), and
/// hashing the wire form rather than chosen fields keeps it right when the contract gains a
/// field. Truncated, it names the content without revealing the secrets in it.
pub fn encode(desired: &Desired, acks: &NodeAcks) -> Encoded {
    let snap = unversioned(desired, acks);
    let complete = snap.mappings.len() == desired.mappings.len()
        && snap.fallback.len() == desired.fallback.len();
    // why: plain structs of strings, numbers and enums cannot fail to serialize.
    let json = serde_json::to_vec(&snap).unwrap_or_default();
    let version = short_hash(Sha256::new_with_prefix(&json));
    // `version` is the struct's first field, so the JSON starts with it, empty.
    const EMPTY: &[u8] = br#"{"version":"""#;
    let body = match json.strip_prefix(EMPTY) {
        Some(rest) => {
            let mut b = Vec::with_capacity(json.len() + version.len());
            b.extend_from_slice(br#"{"version":""#);
            b.extend_from_slice(version.as_bytes());
            b.push(b'"');
            b.extend_from_slice(rest);
            b
        }
        None => serde_json::to_vec(&Snapshot {
            version: version.clone(),
            ..snap
        })
        .unwrap_or_default(),
    };
    Encoded {
        version,
        body: Bytes::from(body),
        complete,
    }
}

/// The last snapshot encoded for each node, with what it was made from: polls woken by a
/// change that does not concern their node (another node's acknowledgement) answer from
/// here instead of filtering and serializing the whole state again.
#[derive(Default)]
pub struct FeedCache {
    nodes: Mutex<HashMap<String, Cached>>,
}

struct Cached {
    // Held, not just compared by address: an address is only unique while its value lives.
    desired: Arc<Desired>,
    clusters: Arc<HashSet<String>>,
    secrets: Arc<HashSet<String>>,
    encoded: Encoded,
}

/// Nodes remembered at most (one entry per Envoy; beyond, the cache starts over).
const MAX_CACHED_NODES: usize = 4096;

impl FeedCache {
    /// The node's snapshot for this desired state and these acknowledgements.
    pub fn get(&self, node: &str, desired: &Arc<Desired>, acks: &NodeAcks) -> Encoded {
        let hit = |c: &Cached| {
            Arc::ptr_eq(&c.desired, desired)
                && Arc::ptr_eq(&c.clusters, &acks.clusters)
                && Arc::ptr_eq(&c.secrets, &acks.secrets)
        };
        if let Some(c) = self.lock().get(node).filter(|c| hit(c)) {
            return c.encoded.clone();
        }
        let encoded = encode(desired, acks);
        let mut nodes = self.lock();
        if nodes.len() >= MAX_CACHED_NODES && !nodes.contains_key(node) {
            nodes.clear();
        }
        nodes.insert(
            node.to_owned(),
            Cached {
                desired: desired.clone(),
                clusters: acks.clusters.clone(),
                secrets: acks.secrets.clone(),
                encoded: encoded.clone(),
            },
        );
        encoded
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cached>> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The snapshot one node may use, its version left empty.
fn unversioned(desired: &Desired, acks: &NodeAcks) -> Snapshot {
    let mappings = desired
        .mappings
        .iter()
        .filter(|r| {
            r.entry.unavailable.is_some()
                || (acks.clusters.contains(&r.entry.cluster) && acks.secrets.contains(&r.secret))
        })
        .map(|r| r.entry.clone())
        .collect();
    let fallback = desired
        .fallback
        .iter()
        // A host refused or unresolved has no cluster to wait for: its refusal is served at
        // once, like an unavailable mapping's.
        .filter(|f| f.unavailable.is_some() || acks.clusters.contains(&f.cluster))
        .cloned()
        .collect();
    let c = &desired.callers;
    Snapshot {
        version: String::new(),
        mappings,
        token_keys: c.token_keys.clone(),
        app_keys: c.app_keys.clone(),
        users: c.users.clone(),
        fallback,
    }
}

/// The node the feed's TLS peer proved to be (its certificate's node id), set by the feed
/// listener on every request; `None` when the certificate names no node.
#[derive(Debug, Clone)]
pub struct PeerNode(pub Option<String>);

/// The node a request may read: the one its peer's certificate names, and only that one.
fn authorize<'a>(peer: Option<&'a PeerNode>, requested: Option<&str>) -> Result<&'a str, ApiError> {
    let Some(node) = peer.and_then(|p| p.0.as_deref()) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the runtime snapshot is served to gateways presenting a certificate that names their node",
        ));
    };
    match requested {
        Some(r) if r != node => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden_node",
            "this certificate is another node's",
        )),
        _ => Ok(node),
    }
}

/// `GET /v1/runtime/snapshot?node=…&version=…&waitSeconds=…`: answers the node's snapshot
/// as soon as its version differs from `version`, or 304 after `waitSeconds`.
pub async fn snapshot(
    State(state): State<AppState>,
    peer: Option<axum::Extension<PeerNode>>,
    query: Result<Query<Poll>, QueryRejection>,
) -> Response {
    // Authenticate before reading anything else: an outsider learns nothing, not even
    // whether its query was well formed.
    let peer = peer.map(|axum::Extension(p)| p);
    if let Err(e) = authorize(peer.as_ref(), None) {
        return e.into_response();
    }
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => {
            return ApiError::bad_request("invalid_query", e.body_text()).into_response();
        }
    };
    if let Err(e) = authorize(peer.as_ref(), Some(&q.node)) {
        return e.into_response();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(q.wait_seconds.min(MAX_WAIT));
    // The node counts as connected (for `Prefer: wait`) while this poll is held.
    let _poll = state.acks.poll(&q.node);
    let mut desired = state.reconciler.published();
    let mut acks = state.acks.subscribe();
    loop {
        desired.borrow_and_update();
        acks.borrow_and_update();
        // A node connected and acknowledging gets the snapshot gated on what it has. One
        // whose ADS stream is down, but whose filter already runs a snapshot (a version in
        // its poll: the same Envoy process), gets it gated on what it last acknowledged, so
        // revocations still reach it. A filter without a snapshot (a new Envoy) waits for
        // its node's first acknowledgement, or it would see mappings before their clusters.
        let view = state.acks.ready(&q.node).or_else(|| {
            (!q.version.is_empty())
                .then(|| state.acks.last_known(&q.node))
                .flatten()
        });
        if let Some(node) = view {
            let current = desired.borrow().clone();
            let encoded = state.feed.get(&q.node, &current.desired, &node);
            if encoded.version == q.version && encoded.complete {
                // why: the filter publishes a snapshot to its workers before it polls with
                // its version, so this poll proves the node enforces this state.
                state.acks.fed(&q.node, current.epoch);
            }
            if encoded.version != q.version {
                return ([(header::CONTENT_TYPE, "application/json")], encoded.body)
                    .into_response();
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
