//! The desired state of every Envoy: clusters, client-certificate secrets, and the mappings
//! that route to them. Rebuilt by [`crate::sync`] whenever the store or Vault changes, and
//! published to the xDS server and the runtime feed.
//!
//! A cluster exists per distinct (certificate, host, port, trust): mappings that share all
//! four share one cluster and one connection pool.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use mtlsgate_filter::snapshot::MappingEntry;
use mtlsgate_filter::target::Target;
use sha2::{Digest, Sha256};

use crate::p12::Material;
use crate::store::{CertificateRow, MappingRow};

/// How an upstream's server certificate is verified.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Trust {
    /// The operating system's trust store (`--system-trust-bundle` on the Envoy host).
    System,
    /// The mapping's own PEM bundle.
    Bundle(String),
}

/// One upstream cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSpec {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub host_is_ip: bool,
    /// Name of the SDS secret with the client certificate.
    pub secret: String,
    pub trust: Trust,
}

/// A client certificate as served over SDS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSpec {
    pub material: Arc<Material>,
    /// The Vault KV version it came from: changes on every rotation.
    pub vault_version: u64,
}

/// A mapping the gateway can serve, with the names of what it needs acknowledged first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    pub entry: MappingEntry,
    pub secret: String,
}

/// Everything every Envoy should have.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    pub clusters: BTreeMap<String, ClusterSpec>,
    pub secrets: BTreeMap<String, SecretSpec>,
    pub mappings: Vec<Routed>,
    /// Changes whenever any cluster does.
    pub cds_version: String,
}

/// The SDS resource name of a certificate.
pub fn secret_name(certificate_id: i64) -> String {
    format!("cert-{certificate_id}")
}

impl Desired {
    /// Builds the desired state. Mappings whose certificate is deleted or has no material in
    /// Vault are left out: the gateway cannot serve them, and refuses them as unmapped.
    pub fn build(
        certificates: &[CertificateRow],
        mappings: &[MappingRow],
        materials: &HashMap<i64, (u64, Arc<Material>)>,
    ) -> Desired {
        let live: HashMap<i64, &CertificateRow> = certificates.iter().map(|c| (c.id, c)).collect();
        let mut out = Desired::default();
        for m in mappings.iter().filter(|m| m.enabled && !m.deleted) {
            let (Some(_), Some((version, material))) = (
                live.get(&m.certificate_id),
                materials.get(&m.certificate_id),
            ) else {
                continue;
            };
            let Ok(target) = Target::parse(&m.url) else {
                // The API validates URLs before storing them; a row that fails here was
                // written by something else and is not served.
                tracing::warn!(
                    mapping = m.id,
                    "stored mapping has an invalid url; not served"
                );
                continue;
            };
            let trust = match &m.ca_certificates {
                Some(pem) if !pem.trim().is_empty() => Trust::Bundle(pem.clone()),
                _ => Trust::System,
            };
            let name = cluster_name(m.certificate_id, &target, &trust);
            let secret = secret_name(m.certificate_id);
            out.clusters
                .entry(name.clone())
                .or_insert_with(|| ClusterSpec {
                    name: name.clone(),
                    host: target.host().to_owned(),
                    port: target.port(),
                    host_is_ip: target.host_is_ip(),
                    secret: secret.clone(),
                    trust,
                });
            out.secrets
                .entry(secret.clone())
                .or_insert_with(|| SecretSpec {
                    material: material.clone(),
                    vault_version: *version,
                });
            out.mappings.push(Routed {
                entry: MappingEntry {
                    id: m.id as u64,
                    account: m.account.clone(),
                    service: m.service,
                    url: m.url.clone(),
                    cluster: name,
                    certificate_id: m.certificate_id as u64,
                    certificate_serial: live
                        .get(&m.certificate_id)
                        .map(|c| c.info.serial_number.clone())
                        .unwrap_or_default(),
                },
                secret,
            });
        }
        let mut h = Sha256::new();
        for c in out.clusters.values() {
            h.update(c.name.as_bytes());
            h.update([0]);
        }
        out.cds_version = short_hash(h);
        out
    }

    /// The version of the secrets named, as SDS reports it.
    pub fn sds_version(&self, names: &[String]) -> String {
        let mut h = Sha256::new();
        for n in names {
            h.update(n.as_bytes());
            h.update([0]);
            if let Some(s) = self.secrets.get(n) {
                h.update(s.vault_version.to_be_bytes());
                h.update(s.material.chain_pem.as_bytes());
            }
        }
        short_hash(h)
    }
}

/// `mtls_<certificate>_<host>_<port>[_<trust hash>]`: readable in Envoy's stats and admin
/// pages, and different whenever anything the cluster is built from differs.
fn cluster_name(certificate_id: i64, target: &Target<'_>, trust: &Trust) -> String {
    let host: String = target
        .host()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let mut name = format!("mtls_{certificate_id}_{host}_{}", target.port());
    if let Trust::Bundle(pem) = trust {
        let mut h = Sha256::new();
        h.update(pem.as_bytes());
        name.push('_');
        name.push_str(&short_hash(h)[..8]);
    }
    name
}

pub(crate) fn short_hash(h: Sha256) -> String {
    hex::encode(&h.finalize()[..8])
}

#[cfg(test)]
mod tests;
