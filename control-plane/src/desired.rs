//! The desired state of every Envoy: clusters, client-certificate secrets, and the mappings
//! that route to them. Rebuilt by [`crate::reconciler`] whenever the store or Vault changes, and
//! published to the xDS server and the runtime feed.
//!
//! A cluster exists per distinct (certificate, host, port, trust): mappings that share all
//! four share one cluster and one connection pool. Hosts of the egress allowlist get one
//! plain-TLS cluster per distinct (host, port), shared by every account that allows it.
//!
//! The desired state also carries the caller credentials the gateway checks (token keys,
//! AppKeys, live users): they are part of the runtime snapshot, and keeping them here means
//! one rebuild and one change signal wake every waiting snapshot poll, whatever changed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use mtlsgate_filter::snapshot::{
    AppKeyEntry, FallbackEntry, MappingEntry, TokenKey, Unavailable, UserRef,
};
use mtlsgate_filter::target::Target;
use sha2::{Digest, Sha256};

use crate::p12::Material;
use crate::rejections::{Kind, Rejected};
use crate::store::{CertificateRow, EgressRow, MappingRow};
use crate::tls_versions::TlsRange;

/// How an upstream's server certificate is verified.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Trust {
    /// The operating system's trust store (`--system-trust-bundle` on the Envoy host).
    System,
    /// The mapping's own PEM bundle.
    Bundle(String),
}

/// What a target's host resolved to, as `guarded_dns` answered: Envoy connects only to
/// these addresses (static endpoints), never resolving the name itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Every address allowed, sorted.
    Addresses(Vec<SocketAddr>),
    /// The host is, or resolves to, an address tenants may not reach.
    NotAllowed,
    /// No address (yet).
    Unresolved,
}

/// (lower-case host, port) → its resolution.
pub type Resolutions = HashMap<(String, u16), Resolution>;

/// Every (lower-case host, port) the gateway connects to for these mappings and allowlist
/// hosts: what must be resolved before a build.
pub fn target_hosts(mappings: &[MappingRow], egress: &[EgressRow]) -> BTreeSet<(String, u16)> {
    let mut out: BTreeSet<(String, u16)> = mappings
        .iter()
        .filter(|m| m.enabled && !m.deleted)
        .filter_map(|m| Target::parse(&m.url).ok().map(|t| host_key(&t)))
        .collect();
    out.extend(
        egress
            .iter()
            .map(|e| (e.host.host.to_ascii_lowercase(), e.host.port)),
    );
    out
}

fn host_key(t: &Target<'_>) -> (String, u16) {
    (t.host().to_ascii_lowercase(), t.port())
}

/// The resolution of a host, `Unresolved` when it was not looked up.
fn resolution<'a>(resolutions: &'a Resolutions, key: &(String, u16)) -> &'a Resolution {
    resolutions.get(key).unwrap_or(&Resolution::Unresolved)
}

/// One upstream cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSpec {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub host_is_ip: bool,
    /// The checked addresses Envoy connects to.
    pub endpoints: Vec<SocketAddr>,
    /// Name of the SDS secret with the client certificate; `None` for a plain-TLS cluster
    /// (egress allowlist), which presents no client certificate.
    pub secret: Option<String>,
    pub trust: Trust,
    pub tls: TlsRange,
}

/// A Mutual Authentication credential, opened: the key and chain it presents, the trust
/// certificate it verifies the server with, and the versions it speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialTls {
    pub material: Arc<Material>,
    pub trust: Option<String>,
    pub tls: TlsRange,
    /// Serial number of its leaf certificate (for the audit log).
    pub serial: String,
}

/// What the credentials attached to mappings bring: a header to send, or the TLS identity
/// of the mapping's cluster. A mapping whose credential is in neither is not served.
#[derive(Debug, Clone, Default)]
pub struct Attachments {
    /// Credential id -> `Authorization` header.
    pub headers: HashMap<i64, String>,
    /// Credential id -> Mutual Authentication identity.
    pub tls: HashMap<i64, Arc<CredentialTls>>,
    /// Accounts whose callers' `LP-authorization-override` replaces an attached header.
    pub override_accounts: std::collections::HashSet<String>,
}

/// A client certificate as served over SDS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSpec {
    pub material: Arc<Material>,
    /// The Vault KV version it came from: changes on every rotation.
    pub vault_version: u64,
}

impl SecretSpec {
    /// Identifies the content: a NACK of this secret holds for this content only, so new
    /// material is offered again at once. A hash, so the key itself is never compared or
    /// kept outside the material.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.vault_version.to_be_bytes());
        h.update(self.material.chain_pem.as_bytes());
        h.update([0]);
        h.update(self.material.key_pem.expose().as_bytes());
        short_hash(h)
    }
}

/// A cluster's content, as far as a refusal of it goes: its name, which encodes everything
/// Envoy could refuse it for (certificate, host, port, trust bundle, TLS versions).
pub const CLUSTER_FINGERPRINT: &str = "";

/// A mapping the gateway can serve, with the names of what it needs acknowledged first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    pub entry: MappingEntry,
    pub secret: String,
}

impl Routed {
    /// A mapping that exists but cannot be served now: no cluster, no secret, so nothing to
    /// acknowledge first; the gateway refuses its forwards with `why`'s code, never as
    /// unmapped and never without what it needs.
    fn unavailable(m: &MappingRow, why: Unavailable) -> Routed {
        Routed {
            entry: MappingEntry {
                id: m.id as u64,
                account: m.account.clone(),
                service: m.service,
                url: m.url.clone(),
                cluster: String::new(),
                certificate_id: m.certificate_id as u64,
                certificate_serial: String::new(),
                authorization: None,
                override_allowed: false,
                unavailable: Some(why),
            },
            secret: String::new(),
        }
    }
}

/// Who may call the gateway: served to every node as is (nothing to acknowledge first).
/// Each list is sorted, so equal content compares and hashes equal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Callers {
    pub token_keys: Vec<TokenKey>,
    /// With their secrets: the filter checks OAuth1 signatures itself.
    pub app_keys: Vec<AppKeyEntry>,
    pub users: Vec<UserRef>,
}

impl Callers {
    /// Puts each list in a stable order (the AppKey directory is a hash map).
    pub fn sorted(mut self) -> Callers {
        self.token_keys.sort_by(|a, b| a.kid.cmp(&b.kid));
        self.app_keys.sort_by_key(|k| k.id);
        self.users
            .sort_by(|a, b| (a.account.as_str(), a.id).cmp(&(b.account.as_str(), b.id)));
        self
    }
}

/// Everything every Envoy should have.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    pub clusters: BTreeMap<String, ClusterSpec>,
    pub secrets: BTreeMap<String, SecretSpec>,
    pub mappings: Vec<Routed>,
    /// Plain-TLS fallback hosts of every account, each naming its cluster in `clusters`;
    /// by account, in the account's order.
    pub fallback: Vec<FallbackEntry>,
    pub callers: Callers,
    /// Changes whenever any cluster does.
    pub cds_version: String,
}

/// The SDS resource name of a certificate.
pub fn secret_name(certificate_id: i64) -> String {
    format!("cert-{certificate_id}")
}

/// The SDS resource name of a Mutual Authentication credential's key.
pub fn credential_secret_name(credential_id: i64) -> String {
    format!("cred-{credential_id}")
}

impl Desired {
    /// Builds the desired state. Mappings whose certificate is deleted or has no material in
    /// the secret store, or whose credential brings nothing usable, get no cluster: the
    /// gateway refuses them with `certificate_unavailable` or `credential_unavailable`,
    /// never as unmapped. So does a mapping whose target is refused by the address policy
    /// or does not resolve (`target_not_allowed`, `target_unresolved`), and one whose cluster
    /// or secret a gateway refused (`material_rejected`, see [`crate::rejections`]). A Mutual
    /// Authentication credential replaces the mapping's certificate, trust and TLS versions.
    pub fn build(
        certificates: &[CertificateRow],
        mappings: &[MappingRow],
        materials: &HashMap<i64, (u64, Arc<Material>)>,
        attachments: &Attachments,
        resolutions: &Resolutions,
        rejected: &Rejected,
    ) -> Desired {
        let live: HashMap<i64, &CertificateRow> = certificates.iter().map(|c| (c.id, c)).collect();
        let mut out = Desired::default();
        for m in mappings.iter().filter(|m| m.enabled && !m.deleted) {
            let Ok(target) = Target::parse(&m.url) else {
                // The API validates URLs before storing them; a row that fails here was
                // written by something else and is not served.
                tracing::warn!(
                    mapping = m.id,
                    "stored mapping has an invalid url; not served"
                );
                continue;
            };
            let endpoints = match resolution(resolutions, &host_key(&target)) {
                Resolution::Addresses(a) => a.clone(),
                Resolution::NotAllowed => {
                    out.mappings
                        .push(Routed::unavailable(m, Unavailable::TargetNotAllowed));
                    continue;
                }
                Resolution::Unresolved => {
                    out.mappings
                        .push(Routed::unavailable(m, Unavailable::TargetUnresolved));
                    continue;
                }
            };
            let mapping_trust = match &m.ca_certificates {
                Some(pem) if !pem.trim().is_empty() => Trust::Bundle(pem.clone()),
                _ => Trust::System,
            };
            let credential_tls = m
                .credential_id
                .and_then(|c| attachments.tls.get(&c).map(|t| (c, t)));
            let authorization = match m.credential_id {
                Some(c) if credential_tls.is_none() => match attachments.headers.get(&c) {
                    Some(h) => Some(h.clone()),
                    None => {
                        // Served as a refusal that names the cause, not as unmapped.
                        out.mappings
                            .push(Routed::unavailable(m, Unavailable::Credential));
                        continue;
                    }
                },
                _ => None,
            };
            let (key, secret, spec, trust, tls, serial) = match credential_tls {
                Some((c, t)) => (
                    format!("c{c}"),
                    credential_secret_name(c),
                    SecretSpec {
                        material: t.material.clone(),
                        vault_version: 0,
                    },
                    t.trust.clone().map_or(mapping_trust, Trust::Bundle),
                    t.tls,
                    t.serial.clone(),
                ),
                None => {
                    let (Some(row), Some((version, material))) = (
                        live.get(&m.certificate_id),
                        materials.get(&m.certificate_id),
                    ) else {
                        tracing::warn!(
                            mapping = m.id,
                            certificate = m.certificate_id,
                            "the mapping's certificate material is not loaded; its forwards \
                             are refused with certificate_unavailable"
                        );
                        out.mappings
                            .push(Routed::unavailable(m, Unavailable::Certificate));
                        continue;
                    };
                    (
                        m.certificate_id.to_string(),
                        secret_name(m.certificate_id),
                        SecretSpec {
                            material: material.clone(),
                            vault_version: *version,
                        },
                        mapping_trust,
                        TlsRange::DEFAULT,
                        row.info.serial_number.clone(),
                    )
                }
            };
            let name = cluster_name(&key, &target, &trust, tls);
            if rejected.contains(Kind::Cluster, &name, CLUSTER_FINGERPRINT)
                || rejected.contains(Kind::Secret, &secret, &spec.fingerprint())
            {
                // A gateway refused its cluster or its key and chain: withheld from every
                // gateway (so it blocks no one else's delivery), and refused with its code.
                out.mappings
                    .push(Routed::unavailable(m, Unavailable::MaterialRejected));
                continue;
            }
            out.clusters
                .entry(name.clone())
                .or_insert_with(|| ClusterSpec {
                    name: name.clone(),
                    host: target.host().to_owned(),
                    port: target.port(),
                    host_is_ip: target.host_is_ip(),
                    endpoints,
                    secret: Some(secret.clone()),
                    trust,
                    tls,
                });
            out.secrets.entry(secret.clone()).or_insert(spec);
            out.mappings.push(Routed {
                entry: MappingEntry {
                    id: m.id as u64,
                    account: m.account.clone(),
                    service: m.service,
                    url: m.url.clone(),
                    cluster: name,
                    certificate_id: m.certificate_id as u64,
                    certificate_serial: serial,
                    override_allowed: authorization.is_some()
                        && attachments.override_accounts.contains(&m.account),
                    authorization,
                    unavailable: None,
                },
                secret,
            });
        }
        out.seal();
        out
    }

    /// Adds the egress allowlist: one plain-TLS cluster per distinct (host, port), trusted
    /// through the system store, and one fallback entry per account and host (without a
    /// cluster, and refused with its code, when the host's address is refused or unknown).
    pub fn with_egress(
        mut self,
        hosts: &[EgressRow],
        resolutions: &Resolutions,
        rejected: &Rejected,
    ) -> Desired {
        for row in hosts {
            let key = (row.host.host.to_ascii_lowercase(), row.host.port);
            let endpoints = match resolution(resolutions, &key) {
                Resolution::Addresses(a) => a.clone(),
                other => {
                    self.fallback.push(FallbackEntry {
                        account: row.account.clone(),
                        host: row.host.host.clone(),
                        port: row.host.port,
                        cluster: String::new(),
                        unavailable: Some(if *other == Resolution::NotAllowed {
                            Unavailable::TargetNotAllowed
                        } else {
                            Unavailable::TargetUnresolved
                        }),
                    });
                    continue;
                }
            };
            let name = tls_cluster_name(&row.host.host, row.host.port);
            if rejected.contains(Kind::Cluster, &name, CLUSTER_FINGERPRINT) {
                self.fallback.push(FallbackEntry {
                    account: row.account.clone(),
                    host: row.host.host.clone(),
                    port: row.host.port,
                    cluster: String::new(),
                    unavailable: Some(Unavailable::MaterialRejected),
                });
                continue;
            }
            self.clusters
                .entry(name.clone())
                .or_insert_with(|| ClusterSpec {
                    name: name.clone(),
                    host: row.host.host.clone(),
                    port: row.host.port,
                    host_is_ip: row.host.is_ip(),
                    endpoints,
                    secret: None,
                    trust: Trust::System,
                    tls: TlsRange::DEFAULT,
                });
            self.fallback.push(FallbackEntry {
                account: row.account.clone(),
                host: row.host.host.clone(),
                port: row.host.port,
                cluster: name,
                unavailable: None,
            });
        }
        self.seal();
        self
    }

    /// Adds who may call the gateway.
    pub fn with_callers(mut self, callers: Callers) -> Desired {
        self.callers = callers.sorted();
        self
    }

    /// Recomputes the CDS version. Cluster names encode everything a cluster is built from
    /// (certificate, host, port, trust, and whether it is plain TLS) but its addresses, which
    /// change when its host resolves differently.
    fn seal(&mut self) {
        let mut h = Sha256::new();
        for c in self.clusters.values() {
            h.update(c.name.as_bytes());
            h.update([0]);
            for e in &c.endpoints {
                h.update(e.to_string().as_bytes());
                h.update([1]);
            }
        }
        self.cds_version = short_hash(h);
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

/// `mtls_<key>_<host>_<port>[_<trust hash>][_tls<min><max>]`, the key being a certificate
/// id or `c<credential id>`: readable in Envoy's stats and admin pages, and different
/// whenever anything the cluster is built from differs.
fn cluster_name(key: &str, target: &Target<'_>, trust: &Trust, tls: TlsRange) -> String {
    let mut name = format!(
        "mtls_{key}_{}_{}{}",
        sanitise(target.host()),
        target.port(),
        host_suffix(target.host())
    );
    if let Trust::Bundle(pem) = trust {
        let mut h = Sha256::new();
        h.update(pem.as_bytes());
        name.push('_');
        name.push_str(&short_hash(h)[..8]);
    }
    if tls != TlsRange::DEFAULT {
        name.push_str(&format!("_tls{}{}", tls.min.digit(), tls.max.digit()));
    }
    name
}

/// `tls_<host>_<port>`: the plain-TLS cluster of an allowlisted host. When sanitising
/// changed the host (an IPv6 literal's colons), a hash of the real host is appended, so
/// `::1` and a host literally named `__1` never share a cluster.
pub fn tls_cluster_name(host: &str, port: u16) -> String {
    format!("tls_{}_{port}{}", sanitise(host), host_suffix(host))
}

/// `_<hash of the host>` when sanitising changed the host (an IPv6 literal's colons), else
/// nothing: `[::1]` and a host literally named `__1` never share a cluster, and so never a
/// connection pool or a client certificate.
fn host_suffix(host: &str) -> String {
    if sanitise(host) == host {
        return String::new();
    }
    let mut h = Sha256::new();
    h.update(host.as_bytes());
    format!("_{}", &short_hash(h)[..8])
}

/// A host as it may appear in a cluster name (Envoy stats): lower-case letters, digits, `.`
/// and `-`; anything else becomes `_`.
fn sanitise(host: &str) -> String {
    host.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

pub(crate) fn short_hash(h: Sha256) -> String {
    hex::encode(&h.finalize()[..8])
}

#[cfg(test)]
pub(crate) mod tests;
