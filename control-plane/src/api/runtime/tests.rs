use std::collections::HashSet;
use std::sync::Arc;

use mtlsgate_filter::snapshot::{AppKeyEntry, TokenKey, UserRef};

use super::*;
use crate::desired::Callers;
use crate::egress::EgressHost;
use crate::store::EgressRow;

fn app_key(id: u64, secret: &str, privileges: &[&str]) -> AppKeyEntry {
    AppKeyEntry {
        id,
        account: "a".into(),
        consumer_key: format!("ck{id}"),
        access_token: format!("a-at{id}"),
        consumer_secret: secret.into(),
        access_token_secret: format!("ts{id}"),
        privileges: privileges.iter().map(|p| p.to_string()).collect(),
    }
}

fn credentials() -> Callers {
    Callers {
        token_keys: vec![TokenKey {
            kid: "k1".into(),
            public_key: "AAAA".into(),
        }],
        app_keys: vec![
            app_key(1, "cs1", &["MTLS_FORWARD"]),
            app_key(2, "cs2", &["MTLS_FORWARD"]),
        ],
        users: vec![UserRef {
            account: "a".into(),
            id: 7,
        }],
    }
}

fn egress(hosts: &[(&str, &str)]) -> Vec<EgressRow> {
    hosts
        .iter()
        .map(|(account, h)| EgressRow {
            account: account.to_string(),
            host: EgressHost::parse(h).unwrap(),
        })
        .collect()
}

fn desired(c: Callers, hosts: &[(&str, &str)]) -> Desired {
    Desired::build(
        &[],
        &[],
        &Default::default(),
        &Default::default(),
        &Default::default(),
        &Default::default(),
    )
    .with_egress_resolved(&egress(hosts))
    .with_callers(c)
}

/// A node that has acknowledged every cluster and secret of `d`.
fn acked_all(d: &Desired) -> NodeAcks {
    NodeAcks {
        clusters: Arc::new(d.clusters.keys().cloned().collect()),
        secrets: Arc::new(d.secrets.keys().cloned().collect()),
        streams: 1,
        ready: true,
        known: true,
        enforced: Default::default(),
    }
}

/// The snapshot as the filter receives it.
fn gated(d: &Desired, acks: &NodeAcks) -> Snapshot {
    let encoded = encode(d, acks);
    let snap: Snapshot = serde_json::from_slice(&encoded.body).unwrap();
    assert_eq!(snap.version, encoded.version);
    snap
}

fn version_of(d: &Desired) -> String {
    gated(d, &acked_all(d)).version
}

#[test]
fn the_version_is_the_hash_of_the_unversioned_json_and_the_body_is_made_once() {
    let d = desired(credentials(), &[("a", "plain.example:443")]);
    let acks = acked_all(&d);
    let encoded = encode(&d, &acks);
    let mut snap: Snapshot = serde_json::from_slice(&encoded.body).unwrap();
    assert!(!snap.version.is_empty());
    let version = std::mem::take(&mut snap.version);
    let expected = short_hash(Sha256::new_with_prefix(serde_json::to_vec(&snap).unwrap()));
    assert_eq!(version, expected);

    // The cache answers the same bytes for the same inputs, and new ones when they change.
    let cache = FeedCache::default();
    let d = Arc::new(d);
    let first = cache.get("n", &d, &acks);
    let again = cache.get("n", &d, &acks);
    assert_eq!(first.body.as_ptr(), again.body.as_ptr(), "encoded twice");
    let changed = Arc::new(desired(Callers::default(), &[]));
    let other = cache.get("n", &changed, &acked_all(&changed));
    assert_ne!(other.version, first.version);
}

#[test]
fn version_is_stable_for_equal_content_whatever_the_order() {
    let d1 = desired(credentials(), &[("a", "x.example")]);
    let mut reordered = credentials();
    reordered.app_keys.reverse();
    let d2 = desired(reordered, &[("a", "x.example")]);
    assert_eq!(version_of(&d1), version_of(&d2));
    assert_eq!(version_of(&d1), version_of(&d1.clone()));
    assert_eq!(version_of(&d1).len(), 16);
}

#[test]
fn version_changes_with_every_part_of_the_content() {
    let base = version_of(&desired(credentials(), &[("a", "x.example")]));
    let mut variants: Vec<(&str, Desired)> = Vec::new();

    let mut c = credentials();
    c.app_keys[0].consumer_secret = "other".into();
    variants.push(("consumer secret", desired(c, &[("a", "x.example")])));
    let mut c = credentials();
    c.app_keys[1].access_token_secret = "other".into();
    variants.push(("token secret", desired(c, &[("a", "x.example")])));
    let mut c = credentials();
    c.app_keys[0].privileges.push("MTLS_MANAGE".into());
    variants.push(("privileges", desired(c, &[("a", "x.example")])));
    let mut c = credentials();
    c.app_keys.pop();
    variants.push(("AppKey revoked", desired(c, &[("a", "x.example")])));
    let mut c = credentials();
    c.app_keys.push(app_key(3, "cs3", &[]));
    variants.push(("AppKey created", desired(c, &[("a", "x.example")])));
    let mut c = credentials();
    c.users.push(UserRef {
        account: "a".into(),
        id: 8,
    });
    variants.push(("user created", desired(c, &[("a", "x.example")])));
    let mut c = credentials();
    c.users.clear();
    variants.push(("user deleted", desired(c, &[("a", "x.example")])));
    let mut c = credentials();
    c.token_keys[0].public_key = "BBBB".into();
    variants.push(("token key", desired(c, &[("a", "x.example")])));
    variants.push((
        "host added",
        desired(credentials(), &[("a", "x.example"), ("a", "y.example")]),
    ));
    variants.push((
        "port changed",
        desired(credentials(), &[("a", "x.example:8443")]),
    ));
    variants.push((
        "host moved to another account",
        desired(credentials(), &[("b", "x.example")]),
    ));
    variants.push(("allowlist emptied", desired(credentials(), &[])));

    let mut seen = HashSet::from([base.clone()]);
    for (what, d) in &variants {
        let v = version_of(d);
        assert_ne!(v, base, "{what} must change the version");
        assert!(seen.insert(v), "{what} collides with another variant");
    }
}

#[test]
fn the_version_reveals_no_secret_and_debug_hides_them() {
    let d = desired(credentials(), &[]);
    let snap = gated(&d, &acked_all(&d));
    assert!(!snap.version.contains("cs1"));
    let debug = format!("{d:?} {snap:?}");
    assert!(!debug.contains("cs1") && !debug.contains("ts1"), "{debug}");
}

#[test]
fn fallback_entries_wait_for_their_cluster_to_be_acknowledged() {
    let d = desired(
        credentials(),
        &[
            ("a", "x.example"),
            ("b", "x.example"),
            ("a", "y.example:8443"),
        ],
    );
    // Two distinct (host, port): two clusters, x.example shared by both accounts.
    assert_eq!(d.clusters.len(), 2);
    assert_eq!(d.fallback.len(), 3);
    let x = crate::desired::tls_cluster_name("x.example", 443);

    let none = NodeAcks {
        streams: 1,
        ready: true,
        ..Default::default()
    };
    let snap = gated(&d, &none);
    assert!(snap.fallback.is_empty());
    // Callers need nothing acknowledged.
    assert_eq!(snap.app_keys.len(), 2);
    assert_eq!(snap.users.len(), 1);
    assert_eq!(snap.token_keys.len(), 1);

    let only_x = NodeAcks {
        clusters: Arc::new(HashSet::from([x.clone()])),
        ..none.clone()
    };
    let snap_x = gated(&d, &only_x);
    let got: Vec<(&str, &str, u16)> = snap_x
        .fallback
        .iter()
        .map(|f| (f.account.as_str(), f.host.as_str(), f.port))
        .collect();
    assert_eq!(got, [("a", "x.example", 443), ("b", "x.example", 443)]);
    assert!(snap_x.fallback.iter().all(|f| f.cluster == x));
    assert_ne!(
        snap.version, snap_x.version,
        "an ack changes what the node sees"
    );

    let all = gated(&d, &acked_all(&d));
    assert_eq!(all.fallback.len(), 3);
}

#[test]
fn a_peer_reads_only_the_node_its_certificate_names() {
    let code = |r: Result<&str, ApiError>| {
        r.map(str::to_owned)
            .map_err(|e| (e.status.as_u16(), e.code))
    };
    let gw = PeerNode(Some("gw-a".into()));
    assert_eq!(code(authorize(Some(&gw), Some("gw-a"))), Ok("gw-a".into()));
    assert_eq!(code(authorize(Some(&gw), None)), Ok("gw-a".into()));
    assert_eq!(
        code(authorize(Some(&gw), Some("gw-b"))),
        Err((403, "forbidden_node"))
    );
    for anonymous in [None, Some(&PeerNode(None))] {
        assert_eq!(
            code(authorize(anonymous, Some("gw-a"))),
            Err((401, "unauthorized"))
        );
    }
}
