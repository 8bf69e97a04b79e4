//! Changes other processes make reach this one's gateways: another control plane on the same
//! database, or `mtlsgate user add`. Every change to what gateways are built from bumps the
//! database's `generation` row (triggers, in every backend), so polling that one row is enough
//! to notice; a cheap primary-key read, a few times a second.
//!
//! On every move, the AppKey directory (the only part of the gateway's view kept in memory
//! rather than read at each rebuild) catches up with the database — one query, and secret
//! reads only for AppKeys new to it — and the reconciler rebuilds unless it has built that
//! generation already with nothing new in the directory (this process's own writes kick the
//! reconciler themselves).

use std::sync::Arc;
use std::time::Duration;

use crate::appkeys::Directory;
use crate::reconciler::Reconciler;
use crate::secret_store::Secrets;
use crate::store::Store;

/// Polls the store's generation every `every` until the process ends.
pub(crate) async fn follow(
    store: Store,
    secrets: Secrets,
    appkeys: Arc<Directory>,
    reconciler: Arc<Reconciler>,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen: Option<i64> = None;
    loop {
        tick.tick().await;
        let generation = match store.generation().await {
            Ok(g) => g,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the store's generation; next poll");
                continue;
            }
        };
        if seen == Some(generation) {
            continue;
        }
        // why: the directory catches up at every move, even one the reconciler has built
        // already: a rebuild for another reason may have read the new generation before the
        // directory had the new AppKey.
        let synced = {
            // Held as the API holds it from an AppKey's commit to its directory update: a
            // revocation this process commits meanwhile cannot be undone by a read from just
            // before it.
            let _w = store.write_lock().await;
            appkeys.sync(&store, &secrets).await
        };
        match synced {
            Ok(changed) => {
                seen = Some(generation);
                if changed {
                    tracing::debug!(generation, "AppKeys changed elsewhere; directory updated");
                }
                if changed || reconciler.built_generation().await != Some(generation) {
                    reconciler.kick();
                }
            }
            // Not marked seen: the next poll tries again.
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the AppKeys changed elsewhere; next poll")
            }
        }
    }
}
