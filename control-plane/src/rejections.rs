//! Resources an Envoy refused (NACKed), withheld from every gateway until they change.
//!
//! why: Envoy applies the good clusters of a CDS update and refuses the bad ones, and an SDS
//! update with one secret it cannot load is refused whole (the good secrets beside it are not
//! applied either). A control plane that only remembers "this version was refused" leaves
//! every tenant's next change stuck behind one tenant's bad material. So the delivery reads
//! which resources a NACK names, records them here, and the reconciler rebuilds without them:
//! their mappings are served as unavailable (`material_rejected`) and everything else flows.
//!
//! A rejection holds for the content Envoy refused, identified by a fingerprint: new material
//! (a rotation, another CA bundle, which renames the cluster) is offered again at once. It
//! also expires after a while (the reconciler's `REJECTION_TTL`), so a refusal caused by the gateway host rather
//! than the resource (a trust bundle file missing on one Envoy host) heals once fixed.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// The kind of resource refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Kind {
    Cluster,
    Secret,
}

/// One refused resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rejection {
    pub(crate) kind: Kind,
    pub(crate) name: String,
    /// What was refused: a change of content lifts the rejection.
    pub(crate) fingerprint: String,
    /// Envoy's reason, shortened: for the operator's log, never a tenant's answer (it may
    /// name another tenant's resource refused in the same update).
    pub(crate) reason: String,
    /// Blamed with others by a refusal that named none of them (an SDS refusal names only
    /// the reason): any one of them may be innocent, so each is offered again alone in turn
    /// ([`Rejections::release_one_ambiguous`]); a refusal of it alone then proves it.
    pub(crate) ambiguous: bool,
}

/// Longest reason kept.
const REASON_MAX: usize = 512;

/// The current rejections, as the desired state is built from them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Rejected {
    entries: BTreeMap<(Kind, String), String>,
}

impl Rejected {
    /// Whether this resource, with this content, was refused.
    pub(crate) fn contains(&self, kind: Kind, name: &str, fingerprint: &str) -> bool {
        self.entries
            .get(&(kind, name.to_owned()))
            .is_some_and(|f| f == fingerprint)
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

struct Entry {
    fingerprint: String,
    at: Instant,
    ambiguous: bool,
}

/// Every rejection, shared by the delivery (which records) and the reconciler (which builds
/// without them), with a change signal.
pub(crate) struct Rejections {
    entries: Mutex<BTreeMap<(Kind, String), Entry>>,
    changed: watch::Sender<u64>,
    ttl: Duration,
}

impl Rejections {
    pub(crate) fn new(ttl: Duration) -> Self {
        Rejections {
            entries: Mutex::default(),
            changed: watch::channel(0).0,
            ttl,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(Kind, String), Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records refused resources; signals a change when one is new.
    pub(crate) fn record(&self, node: &str, refused: &[Rejection]) {
        let mut fresh = false;
        {
            let mut entries = self.lock();
            for r in refused {
                let reason: String = r.reason.chars().take(REASON_MAX).collect();
                tracing::warn!(
                    node,
                    kind = ?r.kind,
                    resource = %r.name,
                    reason = %reason,
                    "Envoy refused a resource; withheld from every gateway until it changes"
                );
                let key = (r.kind, r.name.clone());
                let same = entries
                    .get(&key)
                    .is_some_and(|e| e.fingerprint == r.fingerprint);
                if !same {
                    fresh = true;
                }
                entries.insert(
                    key,
                    Entry {
                        fingerprint: r.fingerprint.clone(),
                        at: Instant::now(),
                        ambiguous: r.ambiguous,
                    },
                );
            }
        }
        if fresh {
            self.changed.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Drops rejections older than the TTL; answers whether any was dropped (the caller
    /// rebuilds, offering those resources again).
    pub(crate) fn expire(&self) -> bool {
        let ttl = self.ttl;
        let mut entries = self.lock();
        let before = entries.len();
        entries.retain(|_, e| e.at.elapsed() < ttl);
        before != entries.len()
    }

    /// Lifts one rejection an ambiguous refusal made, so its resource is offered again
    /// alone: refused again, it is blamed for sure; accepted, it was innocent. Answers
    /// whether one was lifted (the caller rebuilds).
    pub(crate) fn release_one_ambiguous(&self) -> bool {
        let mut entries = self.lock();
        let Some(key) = entries
            .iter()
            .find(|(_, e)| e.ambiguous)
            .map(|(k, _)| k.clone())
        else {
            return false;
        };
        tracing::info!(resource = %key.1, "offering a resource an ambiguous refusal blamed again, alone");
        entries.remove(&key);
        true
    }

    /// The rejections in force.
    pub(crate) fn current(&self) -> Rejected {
        Rejected {
            entries: self
                .lock()
                .iter()
                .map(|(k, e)| (k.clone(), e.fingerprint.clone()))
                .collect(),
        }
    }

    /// Changes whenever a new rejection is recorded.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// Whether `message` names `name` as a whole word: Envoy's NACK details name the clusters
/// they refuse (`Error adding/updating cluster(s) mtls_3_a.example_443: …`), and `cert-1`
/// must not be read in `cert-12`.
pub(crate) fn names(message: &str, name: &str) -> bool {
    if name.is_empty() {
        return false;
    }
    let part = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    message.match_indices(name).any(|(at, _)| {
        let before = message[..at].chars().next_back();
        let after = message[at + name.len()..].chars().next();
        // A trailing '.' ends a sentence, not a name.
        !before.is_some_and(part) && !after.is_some_and(|c| part(c) && c != '.')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejection(kind: Kind, name: &str, fp: &str) -> Rejection {
        Rejection {
            kind,
            name: name.into(),
            fingerprint: fp.into(),
            reason: "refused".into(),
            ambiguous: false,
        }
    }

    #[test]
    fn a_rejection_holds_for_the_refused_content_only() {
        let r = Rejections::new(Duration::from_secs(60));
        let mut seen = r.subscribe();
        r.record("gw", &[rejection(Kind::Secret, "cert-1", "v1")]);
        assert!(seen.has_changed().unwrap());
        seen.borrow_and_update();
        let cur = r.current();
        assert!(cur.contains(Kind::Secret, "cert-1", "v1"));
        assert!(
            !cur.contains(Kind::Secret, "cert-1", "v2"),
            "new content is offered"
        );
        assert!(
            !cur.contains(Kind::Cluster, "cert-1", "v1"),
            "kinds are apart"
        );
        // The same refusal again (another gateway) is no change.
        r.record("gw2", &[rejection(Kind::Secret, "cert-1", "v1")]);
        assert!(!seen.has_changed().unwrap());
        // New content refused again is a change.
        r.record("gw", &[rejection(Kind::Secret, "cert-1", "v2")]);
        assert!(seen.has_changed().unwrap());
    }

    #[test]
    fn rejections_expire() {
        let r = Rejections::new(Duration::ZERO);
        r.record("gw", &[rejection(Kind::Cluster, "mtls_1", "")]);
        assert!(r.expire());
        assert!(r.current().is_empty());
        assert!(!r.expire());
    }

    #[test]
    fn ambiguous_rejections_are_lifted_one_at_a_time() {
        let r = Rejections::new(Duration::from_secs(60));
        let suspect = |name: &str| Rejection {
            ambiguous: true,
            ..rejection(Kind::Secret, name, "f")
        };
        r.record("gw", &[suspect("cert-1"), suspect("cert-2")]);
        r.record("gw", &[rejection(Kind::Secret, "cert-3", "f")]);
        assert!(r.release_one_ambiguous());
        let cur = r.current();
        let held = ["cert-1", "cert-2"]
            .iter()
            .filter(|n| cur.contains(Kind::Secret, n, "f"))
            .count();
        assert_eq!(
            held, 1,
            "one suspect is offered again, the other still held"
        );
        assert!(r.release_one_ambiguous());
        assert!(
            !r.release_one_ambiguous(),
            "a proven refusal is never lifted early"
        );
        assert!(r.current().contains(Kind::Secret, "cert-3", "f"));
    }

    #[test]
    fn names_are_read_as_whole_words() {
        let msg =
            "Error adding/updating cluster(s) mtls_3_a.example_443: bad CA, mtls_12_b_443: x.";
        assert!(names(msg, "mtls_3_a.example_443"));
        assert!(names(msg, "mtls_12_b_443"));
        assert!(!names(msg, "mtls_1"));
        assert!(!names(msg, "mtls_3_a.example_44"));
        assert!(!names("secret cert-12 refused", "cert-1"));
        assert!(names("secret cert-1.", "cert-1"));
        assert!(!names("anything", ""));
    }
}
