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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Snapshot {
    /// Opaque; changes whenever the content does. The filter re-parses only on change.
    pub version: String,
    /// Mappings this Envoy node can serve right now: their cluster and client certificate
    /// have been acknowledged by the node, so a forward never races cluster creation.
    pub mappings: Vec<MappingEntry>,
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
}

/// Where a matched request goes, and what the audit records about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub mapping_id: u64,
    pub certificate_id: u64,
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
}

impl Index {
    /// Compiles a snapshot. A triplet that appears twice keeps its first mapping; the
    /// control plane's store makes triplets unique, so this only guards against a bug there.
    pub fn new(snapshot: Snapshot) -> Self {
        let mut accounts: HashMap<String, [HashMap<String, Route>; 3]> = HashMap::new();
        let mut len = 0;
        for m in snapshot.mappings {
            let per_service = accounts.entry(m.account).or_default();
            let urls = &mut per_service[usize::from(m.service.id())];
            if let std::collections::hash_map::Entry::Vacant(slot) = urls.entry(m.url) {
                slot.insert(Route {
                    mapping_id: m.id,
                    certificate_id: m.certificate_id,
                    cluster: m.cluster,
                });
                len += 1;
            }
        }
        Index {
            version: snapshot.version,
            accounts,
            len,
        }
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
        }
    }

    #[test]
    fn lookup_is_exact_on_every_part_of_the_triplet() {
        let idx = Index::new(Snapshot {
            version: "v1".into(),
            mappings: vec![
                entry(1, "acc1", Service::Idp, "https://a.example/x?q=1"),
                entry(2, "acc1", Service::Webhooks, "https://a.example/x?q=1"),
                entry(3, "acc2", Service::Idp, "https://a.example/x?q=1"),
            ],
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

    #[test]
    fn wire_form_round_trips_and_rejects_unknown_fields() {
        let snap = Snapshot {
            version: "abc".into(),
            mappings: vec![entry(7, "a", Service::TestService, "https://h/")],
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
