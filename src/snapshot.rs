//! The runtime snapshot: everything the filter needs to decide a request, pushed by the
//! control plane. This module is the contract between the two halves; both compile it.
//!
//! The wire form ([`Snapshot`]) is JSON. The filter compiles it once per version into an
//! [`Index`] whose lookups cost one hash of the account and one of the URL, whatever the
//! number of mappings.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::service::Service;

/// The snapshot as it travels from the control plane to the filter.
///
/// It carries AppKey secrets (the filter checks HMAC signatures itself), so the control plane
/// serves it only to callers holding the runtime token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Snapshot {
    /// Opaque; changes whenever the content does. The filter re-parses only on change.
    pub version: String,
    /// Mappings this Envoy node can serve right now: their cluster and client certificate
    /// have been acknowledged by the node, so a forward never races cluster creation.
    pub mappings: Vec<MappingEntry>,
    /// Public keys that sign login tokens.
    #[serde(default)]
    pub token_keys: Vec<TokenKey>,
    /// Live AppKeys with their secrets.
    #[serde(default)]
    pub app_keys: Vec<AppKeyEntry>,
    /// Live users: a token of a user not listed here is refused even before it expires.
    #[serde(default)]
    pub users: Vec<UserRef>,
    /// Hosts an account allows plain-TLS forwarding to when a URL has no mapping (acknowledged
    /// by the node, like mappings).
    #[serde(default)]
    pub fallback: Vec<FallbackEntry>,
}

/// A token signing key, public half.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenKey {
    pub kid: String,
    /// The 32-byte Ed25519 public key, base64url without padding.
    pub public_key: String,
}

/// An AppKey as the filter needs it to check OAuth1 signatures.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppKeyEntry {
    pub id: u64,
    pub account: String,
    pub consumer_key: String,
    pub access_token: String,
    pub consumer_secret: String,
    pub access_token_secret: String,
    pub privileges: Vec<String>,
}

impl std::fmt::Debug for AppKeyEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppKeyEntry")
            .field("id", &self.id)
            .field("account", &self.account)
            .field("consumer_key", &self.consumer_key)
            .finish_non_exhaustive()
    }
}

/// A live user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserRef {
    pub account: String,
    pub id: u64,
}

/// A host an account may reach over plain TLS (server verified, no client certificate).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FallbackEntry {
    pub account: String,
    /// Lower-case host name or IP literal, as `Target::host` gives it.
    pub host: String,
    pub port: u16,
    /// The plain-TLS cluster for that host and port (empty when unavailable).
    pub cluster: String,
    /// Why the host cannot be reached now (its address is refused or unknown), if it cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<Unavailable>,
}

/// One enabled mapping: the triplet and where it goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MappingEntry {
    pub id: u64,
    pub account: String,
    pub service: Service,
    /// The complete URL, matched byte for byte.
    pub url: String,
    /// The Envoy cluster that carries the client certificate for this mapping.
    pub cluster: String,
    pub certificate_id: u64,
    /// Hex serial number of the certificate, for the audit log.
    #[serde(default)]
    pub certificate_serial: String,
    /// The `Authorization` header of the credential attached to the mapping, sent upstream
    /// on every forward. A secret: never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<String>,
    /// The account lets a caller's `LP-authorization-override` replace the attached
    /// credential (by default the credential wins).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub override_allowed: bool,
    /// Why the mapping cannot be served now, if it cannot: forwards are refused with that
    /// reason's code rather than sent without what they need, or reported as unmapped.
    /// `cluster` is empty then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<Unavailable>,
}

/// Why a mapping that exists cannot be served right now. "Mapped but refused" must never
/// look like "not mapped": each reason has its own refusal code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Unavailable {
    /// The attached credential cannot be applied (no valid token, secrets unreadable).
    Credential,
    /// The certificate's key and chain are not loaded from the secret store (missing there,
    /// unreadable, or not opened yet).
    Certificate,
    /// The target's host is, or resolves to, an address the operator does not let tenants
    /// reach (internal, denied, or the deployment's own).
    TargetNotAllowed,
    /// The target's host name does not resolve (and never did since it was mapped).
    TargetUnresolved,
    /// A gateway's Envoy refused what serving it needs (its key and chain, or its cluster:
    /// the CA bundle, say); withheld so it blocks no one else's configuration.
    MaterialRejected,
}

impl Unavailable {
    /// The refusal code forwards through such a mapping get.
    pub fn code(self) -> &'static str {
        match self {
            Unavailable::Credential => "credential_unavailable",
            Unavailable::Certificate => "certificate_unavailable",
            Unavailable::TargetNotAllowed => "target_not_allowed",
            Unavailable::TargetUnresolved => "target_unresolved",
            Unavailable::MaterialRejected => "material_rejected",
        }
    }

    /// The HTTP status of that refusal: 403 for a target the gateway will not reach, 502
    /// for one it cannot find, 503 for what may come back by itself.
    pub fn status(self) -> u16 {
        match self {
            Unavailable::Credential | Unavailable::Certificate | Unavailable::MaterialRejected => {
                503
            }
            Unavailable::TargetNotAllowed => 403,
            Unavailable::TargetUnresolved => 502,
        }
    }

    /// The refusal message: what is wrong and where to look.
    pub fn message(self) -> &'static str {
        match self {
            Unavailable::Credential => {
                "the credential attached to this mapping cannot be used right now \
                 (no valid token, or its secrets are unreadable); its status says why"
            }
            Unavailable::Certificate => {
                "the certificate of this mapping is not available right now (its key and \
                 chain cannot be read from the secret store); its status says why"
            }
            Unavailable::TargetNotAllowed => {
                "the target's host is, or resolves to, an address this gateway does not reach \
                 for tenants (internal, or the gateway's own); its operator can allow a range"
            }
            Unavailable::TargetUnresolved => "the target's host name does not resolve",
            Unavailable::MaterialRejected => {
                "the gateway refused this mapping's certificate, key or CA bundle; upload a \
                 certificate (or caCertificates) it can load"
            }
        }
    }
}

/// Where a matched request goes, and what the audit records about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub mapping_id: u64,
    pub certificate_id: u64,
    pub certificate_serial: String,
    /// The attached credential's `Authorization` header, if any.
    pub authorization: Option<String>,
    /// Whether a caller's override replaces that header.
    pub override_allowed: bool,
    /// Why the mapping cannot be served now, if it cannot.
    pub unavailable: Option<Unavailable>,
    pub cluster: String,
}

/// A snapshot compiled for lookups.
#[derive(Debug, Default)]
pub struct Index {
    version: String,
    // account -> per service (by id) -> url -> route. Nested maps so lookups borrow `&str`
    // keys and allocate nothing on the request path.
    accounts: HashMap<String, [HashMap<String, Route>; 3]>,
    len: usize,
    token_keys: crate::token::KeySet,
    // (consumer key, access token) -> AppKey
    app_keys: HashMap<(String, String), AppKeyEntry>,
    users: std::collections::HashSet<(String, u64)>,
    // account -> (host, port) -> plain-TLS cluster
    fallback: HashMap<String, HashMap<(String, u16), FallbackRoute>>,
    // why: an Ed25519 verification costs ~160 µs in wasm, more than half the filter's time
    // per request (docs/benchmarks.md). Tokens verified against *this* snapshot's keys are
    // remembered; a new snapshot (key rotation) starts empty. Expiry and user liveness are
    // still checked on every request.
    verified: std::cell::RefCell<HashMap<String, crate::token::Claims>>,
}

/// Most verified tokens remembered per worker; the cache is emptied when full.
const VERIFIED_CAPACITY: usize = 10_000;

/// Where a request without a mapping may go instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FallbackRoute {
    pub cluster: String,
    pub unavailable: Option<Unavailable>,
}

/// Where the decision gets the current snapshot: in Envoy, the worker's compiled copy,
/// brought up to the version in shared data (the glue's `SnapshotCache`); in tests, a fake.
///
/// why: a trait rather than an `&Index` handed in, so the snapshot is looked at only once a
/// request got past the throttle, as before the decision moved out of the glue: a throttled
/// flood costs no shared-data read.
pub trait SnapshotSource {
    /// The current index; `None` until a first snapshot has loaded.
    fn current(&mut self) -> Option<&Index>;
}

impl Index {
    /// Compiles a snapshot. A triplet that appears twice keeps its first mapping; the
    /// control plane's store makes triplets unique, so this only guards against a bug there.
    pub fn new(snapshot: Snapshot) -> Self {
        use base64::Engine;
        let mut token_keys = crate::token::KeySet::new();
        for k in &snapshot.token_keys {
            let key = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(&k.public_key)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
                .and_then(|b| ed25519_dalek::VerifyingKey::from_bytes(&b).ok());
            // A key that does not decode verifies nothing: left out.
            if let Some(key) = key {
                token_keys.insert(k.kid.clone(), key);
            }
        }
        let app_keys = snapshot
            .app_keys
            .into_iter()
            .map(|k| ((k.consumer_key.clone(), k.access_token.clone()), k))
            .collect();
        let users = snapshot
            .users
            .into_iter()
            .map(|u| (u.account, u.id))
            .collect();
        let mut fallback: HashMap<String, HashMap<(String, u16), FallbackRoute>> = HashMap::new();
        for f in snapshot.fallback {
            fallback.entry(f.account).or_default().insert(
                (f.host, f.port),
                FallbackRoute {
                    cluster: f.cluster,
                    unavailable: f.unavailable,
                },
            );
        }
        let mut accounts: HashMap<String, [HashMap<String, Route>; 3]> = HashMap::new();
        let mut len = 0;
        for m in snapshot.mappings {
            let per_service = accounts.entry(m.account).or_default();
            let urls = &mut per_service[usize::from(m.service.id())];
            if let std::collections::hash_map::Entry::Vacant(slot) = urls.entry(m.url) {
                slot.insert(Route {
                    mapping_id: m.id,
                    certificate_id: m.certificate_id,
                    certificate_serial: m.certificate_serial,
                    authorization: m.authorization,
                    override_allowed: m.override_allowed,
                    unavailable: m.unavailable,
                    cluster: m.cluster,
                });
                len += 1;
            }
        }
        Index {
            version: snapshot.version,
            accounts,
            len,
            token_keys,
            app_keys,
            users,
            fallback,
            verified: Default::default(),
        }
    }

    /// Public keys that sign login tokens.
    pub fn token_keys(&self) -> &crate::token::KeySet {
        &self.token_keys
    }

    /// The AppKey with this consumer key and access token.
    pub fn app_key(&self, consumer_key: &str, access_token: &str) -> Option<&AppKeyEntry> {
        self.app_keys
            .get(&(consumer_key.to_owned(), access_token.to_owned()))
    }

    /// Claims of a token this index already verified.
    pub fn verified_claims(&self, token: &str) -> Option<crate::token::Claims> {
        self.verified.borrow().get(token).cloned()
    }

    /// Remembers a token this index verified.
    pub fn remember_verified(&self, token: &str, claims: &crate::token::Claims) {
        let mut cache = self.verified.borrow_mut();
        if cache.len() >= VERIFIED_CAPACITY {
            cache.clear();
        }
        cache.insert(token.to_owned(), claims.clone());
    }

    /// Whether the user still exists.
    pub fn user_is_live(&self, account: &str, id: u64) -> bool {
        self.users.contains(&(account.to_owned(), id))
    }

    /// The plain-TLS cluster for a host the account allows without a mapping.
    pub fn fallback(&self, account: &str, host: &str, port: u16) -> Option<FallbackRoute> {
        let host = host.to_ascii_lowercase();
        self.fallback.get(account)?.get(&(host, port)).cloned()
    }

    /// Parses the wire form and compiles it.
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice::<Snapshot>(bytes).map(Self::new)
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    /// Number of distinct triplets.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The route for an exact (account, service, url) triplet.
    pub fn lookup(&self, account: &str, service: Service, url: &str) -> Option<&Route> {
        self.accounts.get(account)?[usize::from(service.id())].get(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u64, account: &str, service: Service, url: &str) -> MappingEntry {
        MappingEntry {
            id,
            account: account.into(),
            service,
            url: url.into(),
            cluster: format!("c{id}"),
            certificate_id: id * 10,
            certificate_serial: String::new(),
            authorization: None,
            override_allowed: false,
            unavailable: None,
        }
    }

    #[wasm_bindgen_test::wasm_bindgen_test(unsupported = test)]
    fn lookup_is_exact_on_every_part_of_the_triplet() {
        let idx = Index::new(Snapshot {
            version: "v1".into(),
            mappings: vec![
                entry(1, "acc1", Service::Idp, "https://a.example/x?q=1"),
                entry(2, "acc1", Service::Webhooks, "https://a.example/x?q=1"),
                entry(3, "acc2", Service::Idp, "https://a.example/x?q=1"),
            ],

            ..Default::default()
        });
        assert_eq!(idx.len(), 3);
        let hit = |a, s, u| idx.lookup(a, s, u).map(|r| r.mapping_id);
        assert_eq!(
            hit("acc1", Service::Idp, "https://a.example/x?q=1"),
            Some(1)
        );
        assert_eq!(
            hit("acc1", Service::Webhooks, "https://a.example/x?q=1"),
            Some(2)
        );
        assert_eq!(
            hit("acc2", Service::Idp, "https://a.example/x?q=1"),
            Some(3)
        );
        assert_eq!(
            hit("acc1", Service::TestService, "https://a.example/x?q=1"),
            None
        );
        assert_eq!(hit("acc1", Service::Idp, "https://a.example/x?q=2"), None);
        assert_eq!(hit("acc1", Service::Idp, "https://a.example/x"), None);
        assert_eq!(hit("acc1", Service::Idp, "https://a.example/x?q=1&"), None);
        assert_eq!(hit("acc3", Service::Idp, "https://a.example/x?q=1"), None);
    }

    #[wasm_bindgen_test::wasm_bindgen_test(unsupported = test)]
    fn wire_form_round_trips_and_rejects_unknown_fields() {
        let snap = Snapshot {
            version: "abc".into(),
            mappings: vec![entry(7, "a", Service::TestService, "https://h/")],

            ..Default::default()
        };
        let json = serde_json::to_vec(&snap).unwrap();
        let idx = Index::from_json(&json).unwrap();
        assert_eq!(idx.version(), "abc");
        assert_eq!(
            idx.lookup("a", Service::TestService, "https://h/")
                .unwrap()
                .cluster,
            "c7"
        );
        assert!(Index::from_json(br#"{"version":"x","mappings":[],"extra":1}"#).is_err());
        assert!(Index::from_json(b"not json").is_err());
    }
}
