//! Acknowledgements shared between control planes through the database: a gateway's ADS
//! stream and its snapshot poll may reach two replicas, and the snapshot shows a mapping only
//! once the node acknowledged its cluster and secret. Each control plane writes what its own
//! streams acknowledged and reads what the others' did, every `every`; a poll never waits on
//! another replica, it answers from the last rows read.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use super::acks::{Acks, NodeAcks};
use crate::store::Store;

/// What this control plane last wrote for a node: (clusters, secrets, live).
type Written = (Arc<HashSet<String>>, Arc<HashSet<String>>, bool);

/// Shares this control plane's acknowledgements (as `me`) and reads the others', until the
/// process ends.
pub(crate) async fn share(acks: Arc<Acks>, store: Store, me: String, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut written: HashMap<String, Written> = HashMap::new();
    loop {
        tick.tick().await;
        for (node, n) in acks.local() {
            let live = n.ready && n.streams > 0;
            let now: Written = (n.clusters.clone(), n.secrets.clone(), live);
            if written.get(&node) == Some(&now) {
                continue;
            }
            let result = if live {
                store
                    .put_node_acks(&node, &n.clusters, &n.secrets, &me, true)
                    .await
            } else {
                store.node_acks_closed(&node, &me).await
            };
            match result {
                Ok(()) => {
                    written.insert(node, now);
                }
                Err(e) => {
                    tracing::debug!(node, error = %e, "cannot share a node's acknowledgements; next tick")
                }
            }
        }
        match store.others_node_acks(&me).await {
            Ok(rows) => acks.set_remote(
                rows.into_iter()
                    .map(|r| {
                        let n = NodeAcks {
                            clusters: Arc::new(r.clusters),
                            secrets: Arc::new(r.secrets),
                            streams: usize::from(r.live),
                            ready: r.live,
                            known: true,
                            ..NodeAcks::default()
                        };
                        (r.node, n)
                    })
                    .collect(),
            ),
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the other control planes' acknowledgements; next tick")
            }
        }
    }
}
