//! What each Envoy node has acknowledged.
//!
//! The runtime snapshot shows a node a mapping only once that node has acknowledged the
//! mapping's cluster and client-certificate secret; otherwise the first forward would race
//! the cluster's creation and fail.
//!
//! It also remembers what each node is proven to *enforce* (for `Prefer: wait`, see
//! [`crate::api::prefer`]): the epoch of the desired state its Envoy has acknowledged over
//! ADS, and the epoch of the last complete snapshot its filter has applied — proven by its
//! next poll, which carries the version it published to its workers.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// Acknowledged resources of one node.
#[derive(Debug, Clone, Default)]
pub struct NodeAcks {
    pub clusters: Arc<HashSet<String>>,
    pub secrets: Arc<HashSet<String>>,
    /// Open ADS streams from this node.
    pub streams: usize,
    /// Whether the node has acknowledged clusters at least once since it connected.
    pub ready: bool,
    /// Whether it ever acknowledged clusters: its sets are what that Envoy holds, kept when
    /// its stream drops (Envoy keeps its clusters and secrets through an ADS outage).
    pub known: bool,
    /// What the node is proven to enforce.
    pub enforced: Enforced,
}

/// What one node is proven to enforce, and whether it is connected.
#[derive(Debug, Clone, Default)]
pub struct Enforced {
    /// Snapshot polls held open for this node now.
    pub polls: usize,
    /// When its last poll ended.
    pub last_poll: Option<Instant>,
    /// Epoch of the newest desired state whose complete snapshot (no mapping held back for
    /// an acknowledgement) its filter has applied.
    pub fed: Option<u64>,
    /// Epoch of the newest desired state whose clusters and secrets its Envoy has
    /// acknowledged, every subscription of its ADS stream.
    pub synced: Option<u64>,
}

/// How long after its last poll ended a node still counts as on the feed: the filter polls
/// again at once after an answer, and within a few hundred milliseconds after a failure.
pub const FEED_GRACE: Duration = Duration::from_secs(3);

impl NodeAcks {
    /// Whether the node has an ADS stream or a live (or just ended) snapshot poll.
    fn connected(&self, now: Instant) -> bool {
        self.streams > 0
            || self.enforced.polls > 0
            || self
                .enforced
                .last_poll
                .is_some_and(|t| now.saturating_duration_since(t) < FEED_GRACE)
    }

    /// Whether the node enforces every desired state up to `epoch`: its filter applied a
    /// complete snapshot of it (or later) and its Envoy, on a live ADS stream, acknowledged
    /// its clusters and secrets (or later ones).
    fn enforces(&self, epoch: u64) -> bool {
        self.streams > 0
            && self.enforced.fed.is_some_and(|e| e >= epoch)
            && self.enforced.synced.is_some_and(|e| e >= epoch)
    }
}

/// All nodes' acknowledgements, with a change signal.
pub struct Acks {
    nodes: Mutex<HashMap<String, NodeAcks>>,
    changed: watch::Sender<u64>,
    /// Changes whenever what a node enforces, or whether it is connected, does. Apart from
    /// `changed` so that polls and proofs do not wake every other node's held poll.
    enforcement: watch::Sender<u64>,
}

impl Default for Acks {
    fn default() -> Self {
        Acks {
            nodes: Mutex::default(),
            changed: watch::channel(0).0,
            enforcement: watch::channel(0).0,
        }
    }
}

impl Acks {
    fn update(&self, node: &str, f: impl FnOnce(&mut NodeAcks)) {
        self.update_quietly(node, f);
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Updates a node and signals only `enforcement`.
    fn update_quietly(&self, node: &str, f: impl FnOnce(&mut NodeAcks)) {
        {
            let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
            f(nodes.entry(node.to_owned()).or_default());
        }
        self.enforcement.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Records that a snapshot poll of `node` is held open, until the answer is dropped.
    pub fn poll(self: &Arc<Self>, node: &str) -> FeedPoll {
        self.update_quietly(node, |n| {
            n.enforced.polls = n.enforced.polls.saturating_add(1)
        });
        FeedPoll {
            acks: self.clone(),
            node: node.to_owned(),
        }
    }

    /// Records that `node`'s filter runs a complete snapshot of the desired state of `epoch`.
    pub fn fed(&self, node: &str, epoch: u64) {
        self.raise(node, epoch, |n| &mut n.enforced.fed);
    }

    /// Records that `node`'s Envoy holds the clusters and secrets of the desired state of
    /// `epoch`.
    pub fn synced(&self, node: &str, epoch: u64) {
        self.raise(node, epoch, |n| &mut n.enforced.synced);
    }

    /// Raises one of a node's epochs to `epoch`; signals `enforcement` only if it moved
    /// (the feed reports on every evaluation of a held poll).
    fn raise(&self, node: &str, epoch: u64, field: impl FnOnce(&mut NodeAcks) -> &mut Option<u64>) {
        let moved = {
            let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
            let slot = field(nodes.entry(node.to_owned()).or_default());
            let moved = slot.is_none_or(|e| e < epoch);
            if moved {
                *slot = Some(epoch);
            }
            moved
        };
        if moved {
            self.enforcement.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// The connected nodes not proven to enforce the desired state of `epoch`, sorted.
    pub fn not_enforcing(&self, epoch: u64) -> Vec<String> {
        let now = Instant::now();
        let nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<String> = nodes
            .iter()
            .filter(|(_, n)| n.connected(now) && !n.enforces(epoch))
            .map(|(id, _)| id.clone())
            .collect();
        out.sort();
        out
    }

    /// Changes whenever what a node enforces, or whether it is connected, does.
    pub fn subscribe_enforcement(&self) -> watch::Receiver<u64> {
        self.enforcement.subscribe()
    }

    pub fn connected(&self, node: &str) {
        self.update(node, |n| n.streams += 1);
    }

    pub fn disconnected(&self, node: &str) {
        self.update(node, |n| {
            n.streams = n.streams.saturating_sub(1);
            if n.streams == 0 {
                n.ready = false;
            }
        });
    }

    /// Records an ACK: `names` are every resource of that type in the acknowledged response.
    pub fn acked(&self, node: &str, type_url: &str, names: &[String]) {
        let set = Arc::new(names.iter().cloned().collect::<HashSet<_>>());
        self.update(node, |n| match type_url {
            super::CLUSTER_TYPE => {
                n.clusters = set;
                n.ready = true;
                n.known = true;
            }
            super::SECRET_TYPE => n.secrets = set,
            _ => {}
        });
    }

    /// The node's acknowledgements, if it is connected and has acknowledged clusters.
    pub fn ready(&self, node: &str) -> Option<NodeAcks> {
        let nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        nodes
            .get(node)
            .filter(|n| n.ready && n.streams > 0)
            .cloned()
    }

    /// What the node last acknowledged, connected or not; `None` if it never acknowledged
    /// clusters here.
    ///
    /// why: revocations (a deleted user, a revoked AppKey) travel in the same snapshot as
    /// mappings, and must reach a gateway whose ADS stream is down. Its Envoy still holds
    /// what it acknowledged, so a snapshot gated on those sets is still true for it.
    pub fn last_known(&self, node: &str) -> Option<NodeAcks> {
        let nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        nodes.get(node).filter(|n| n.known).cloned()
    }

    /// Changes whenever any node's acknowledgements or connection do.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// A snapshot poll held open: the node counts as connected while it lives.
pub struct FeedPoll {
    acks: Arc<Acks>,
    node: String,
}

impl Drop for FeedPoll {
    fn drop(&mut self) {
        self.acks.update_quietly(&self.node, |n| {
            n.enforced.polls = n.enforced.polls.saturating_sub(1);
            n.enforced.last_poll = Some(Instant::now());
        });
    }
}
