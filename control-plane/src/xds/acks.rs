//! What each Envoy node has acknowledged.
//!
//! The runtime snapshot shows a node a mapping only once that node has acknowledged the
//! mapping's cluster and client-certificate secret; otherwise the first forward would race
//! the cluster's creation and fail.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

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
}

/// All nodes' acknowledgements, with a change signal.
pub struct Acks {
    nodes: Mutex<HashMap<String, NodeAcks>>,
    changed: watch::Sender<u64>,
}

impl Default for Acks {
    fn default() -> Self {
        Acks {
            nodes: Mutex::default(),
            changed: watch::channel(0).0,
        }
    }
}

impl Acks {
    fn update(&self, node: &str, f: impl FnOnce(&mut NodeAcks)) {
        {
            let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
            f(nodes.entry(node.to_owned()).or_default());
        }
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
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
