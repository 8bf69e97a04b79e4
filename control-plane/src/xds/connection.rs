//! One ADS stream's protocol state: what was sent, what was acknowledged, what to send next.
//!
//! Synchronous: the server feeds it requests and desired-state updates and sends whatever it
//! returns. Rules (see Envoy's xDS protocol doc, "ACK and NACK semantics"):
//! - a request whose `response_nonce` is not the last one sent is stale and ignored;
//! - a request with the last nonce and no `error_detail` ACKs that response;
//! - with `error_detail` it NACKs it: the same content is not re-sent (Envoy keeps its last
//!   good config; re-sending would loop), and the resources to blame are reported (those the
//!   detail names; if it names none, those that changed since the last ACK) so the reconciler
//!   withholds them and everyone else's changes flow again (see [`crate::rejections`]);
//! - a response is sent when the content or the requested names differ from what was last
//!   sent. Envoy asks for all SDS names in one request, so every SDS response carries all of
//!   them.

use std::collections::HashMap;

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::util::pack_any;

use super::resources::{self, ResourceOptions};
use super::{CLUSTER_TYPE, SECRET_TYPE};
use crate::desired::{Desired, CLUSTER_FINGERPRINT};
use crate::rejections::{self, Kind, Rejection};

#[derive(Debug, Clone)]
struct Sent {
    nonce: String,
    version: String,
    /// Names of the resources in that response, with the fingerprint of each one's content.
    names: Vec<String>,
    fingerprints: Vec<String>,
    /// Names requested when it was sent.
    requested: Vec<String>,
    /// Epoch of the newest desired state this response's content is (it stays current
    /// while the desired state changes elsewhere).
    epoch: u64,
    /// Whether Envoy acknowledged it.
    acked: bool,
}

#[derive(Debug, Default)]
struct Subscription {
    requested: Vec<String>,
    sent: Option<Sent>,
    /// The version last NACKed: not sent again.
    rejected: Option<String>,
    /// What the last ACKed response held: name → fingerprint.
    acked: HashMap<String, String>,
    /// Epoch of the newest desired state whose resources of this type Envoy holds.
    synced: Option<u64>,
}

/// An acknowledgement to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub type_url: String,
    pub version: String,
    pub names: Vec<String>,
}

/// What handling a request produced.
#[derive(Debug, Default)]
pub struct Outcome {
    pub responses: Vec<DiscoveryResponse>,
    pub ack: Option<Ack>,
    /// What a NACK blamed.
    pub rejected: Vec<Rejection>,
}

/// The state of one stream.
pub struct Connection {
    node: Option<String>,
    subs: HashMap<String, Subscription>,
    next_nonce: u64,
    opts: ResourceOptions,
    /// Epoch of the desired state the next calls are given ([`Connection::set_epoch`]).
    epoch: u64,
}

impl Connection {
    pub fn new(opts: ResourceOptions) -> Self {
        Connection {
            node: None,
            subs: HashMap::new(),
            next_nonce: 0,
            opts,
            epoch: 0,
        }
    }

    /// Sets the epoch ([`crate::reconciler::Published`]) of the desired state the next
    /// [`Connection::handle_request`] and [`Connection::handle_update`] receive.
    pub fn set_epoch(&mut self, epoch: u64) {
        self.epoch = epoch;
    }

    /// Epoch of the newest desired state whose clusters and secrets Envoy has acknowledged,
    /// every subscription; `None` before each one has acknowledged something.
    ///
    /// why: proves what the gateway enforces for `Prefer: wait` — a new certificate is
    /// presented only once Envoy holds the secret that carries it.
    pub fn synced(&self) -> Option<u64> {
        let mut epochs = self.subs.values().map(|s| s.synced);
        let first = epochs.next()??;
        epochs.try_fold(first, |min, e| e.map(|e| min.min(e)))
    }

    /// The node id, once the first request named it.
    pub fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    pub fn handle_request(&mut self, req: DiscoveryRequest, desired: &Desired) -> Outcome {
        if self.node.is_none() {
            self.node = req
                .node
                .as_ref()
                .map(|n| n.id.clone())
                .filter(|id| !id.is_empty());
        }
        let type_url = req.type_url.clone();
        if type_url != CLUSTER_TYPE && type_url != SECRET_TYPE {
            tracing::debug!(%type_url, "ignoring request for a type this server does not serve");
            return Outcome::default();
        }
        let sub = self.subs.entry(type_url.clone()).or_default();
        let mut out = Outcome::default();
        if !req.response_nonce.is_empty() {
            let Some(sent) = sub.sent.as_ref().filter(|s| s.nonce == req.response_nonce) else {
                return out; // stale
            };
            if let Some(err) = &req.error_detail {
                tracing::warn!(
                    node = self.node.as_deref().unwrap_or("?"),
                    %type_url,
                    version = %sent.version,
                    error = %err.message,
                    "Envoy rejected a configuration (NACK); it keeps its last good one"
                );
                out.rejected = blame(&type_url, sent, &sub.acked, &err.message);
                sub.rejected = Some(sent.version.clone());
            } else {
                sub.acked = sent
                    .names
                    .iter()
                    .cloned()
                    .zip(sent.fingerprints.iter().cloned())
                    .collect();
                sub.synced = sub.synced.max(Some(sent.epoch));
                out.ack = Some(Ack {
                    type_url: type_url.clone(),
                    version: sent.version.clone(),
                    names: sent.names.clone(),
                });
                if let Some(s) = sub.sent.as_mut() {
                    s.acked = true;
                }
            }
        }
        let mut requested = req.resource_names;
        requested.sort();
        requested.dedup();
        sub.requested = requested;
        out.responses.extend(self.respond(&type_url, desired));
        out
    }

    /// Pushes what changed in `desired` to every subscription.
    pub fn handle_update(&mut self, desired: &Desired) -> Vec<DiscoveryResponse> {
        let types: Vec<String> = self.subs.keys().cloned().collect();
        types
            .iter()
            .filter_map(|t| self.respond(t, desired))
            .collect()
    }

    fn respond(&mut self, type_url: &str, desired: &Desired) -> Option<DiscoveryResponse> {
        let (version, names) = version_and_names(type_url, self.subs.get(type_url)?, desired);
        let sub = self.subs.get_mut(type_url)?;
        let unchanged = sub
            .sent
            .as_ref()
            .is_some_and(|s| s.version == version && s.requested == sub.requested);
        if unchanged {
            // The content Envoy has (or was sent) is still the desired state's: it is now
            // this epoch's too.
            if let Some(sent) = sub.sent.as_mut() {
                sent.epoch = sent.epoch.max(self.epoch);
                if sent.acked {
                    sub.synced = sub.synced.max(Some(sent.epoch));
                }
            }
            return None;
        }
        if sub.rejected.as_deref() == Some(version.as_str()) {
            return None;
        }
        // why: built only when sent. Most desired-state changes (an AppKey, a user) touch
        // neither clusters nor secrets, and packing every cluster for nothing adds up.
        let resources = build(type_url, &names, desired, &self.opts);
        let fingerprints = names
            .iter()
            .map(|n| fingerprint(type_url, n, desired))
            .collect();
        self.next_nonce += 1;
        let nonce = self.next_nonce.to_string();
        sub.sent = Some(Sent {
            nonce: nonce.clone(),
            version: version.clone(),
            names,
            fingerprints,
            requested: sub.requested.clone(),
            epoch: self.epoch,
            acked: false,
        });
        Some(DiscoveryResponse {
            version_info: version,
            resources,
            type_url: type_url.to_owned(),
            nonce,
            ..Default::default()
        })
    }
}

/// The version a response of this type would carry, and the names of its resources.
fn version_and_names(
    type_url: &str,
    sub: &Subscription,
    desired: &Desired,
) -> (String, Vec<String>) {
    if type_url == CLUSTER_TYPE {
        let names = desired.clusters.keys().cloned().collect();
        (desired.cds_version.clone(), names)
    } else {
        let names: Vec<String> = sub
            .requested
            .iter()
            .filter(|n| desired.secrets.contains_key(*n))
            .cloned()
            .collect();
        (desired.sds_version(&names), names)
    }
}

/// The fingerprint of a resource's content (see [`crate::rejections`]).
fn fingerprint(type_url: &str, name: &str, desired: &Desired) -> String {
    if type_url == CLUSTER_TYPE {
        CLUSTER_FINGERPRINT.to_owned()
    } else {
        desired
            .secrets
            .get(name)
            .map(|s| s.fingerprint())
            .unwrap_or_default()
    }
}

/// The resources a NACK of `sent` blames: those its detail names (Envoy names the clusters
/// it refuses), else those whose content changed since the last ACK (an SDS refusal may name
/// only the file or the reason, and what had been accepted before cannot be the cause).
/// Empty when neither points anywhere: the version is then only not re-sent.
fn blame(
    type_url: &str,
    sent: &Sent,
    acked: &HashMap<String, String>,
    message: &str,
) -> Vec<Rejection> {
    let kind = if type_url == CLUSTER_TYPE {
        Kind::Cluster
    } else {
        Kind::Secret
    };
    let pairs = || sent.names.iter().zip(sent.fingerprints.iter());
    let named: Vec<_> = pairs()
        .filter(|(n, _)| rejections::names(message, n))
        .collect();
    let unnamed = named.is_empty();
    let suspects: Vec<_> = if unnamed {
        pairs().filter(|(n, f)| acked.get(*n) != Some(*f)).collect()
    } else {
        named
    };
    // Several suspects and no name: each is offered again alone, in turn.
    let ambiguous = unnamed && suspects.len() > 1;
    suspects
        .into_iter()
        .map(|(name, fingerprint)| Rejection {
            kind,
            name: name.clone(),
            fingerprint: fingerprint.clone(),
            reason: message.to_owned(),
            ambiguous,
        })
        .collect()
}

/// The resources named, as Envoy takes them.
fn build(type_url: &str, names: &[String], desired: &Desired, opts: &ResourceOptions) -> Vec<Any> {
    if type_url == CLUSTER_TYPE {
        names
            .iter()
            .filter_map(|n| desired.clusters.get(n))
            .map(|c| pack_any(resources::cluster(c, opts)))
            .collect()
    } else {
        names
            .iter()
            .filter_map(|n| {
                desired
                    .secrets
                    .get(n)
                    .map(|s| pack_any(resources::secret(n, s)))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
