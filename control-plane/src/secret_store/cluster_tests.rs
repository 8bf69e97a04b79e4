//! The store on an OpenBao cluster as production runs it: three nodes with integrated
//! storage, started by `scripts/bao-cluster` (so the recipe itself is tested), mtlsgate
//! logged in with AppRole under the script's least-privilege policy.
//!
//! One test, because a cluster costs ~20 s to start: the contract, the policy's limit, the
//! token renewed past twice its TTL, and `kill -9` of the leader under a stream of writes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::contract::{bao_bin, contract, map};
use super::*;

/// The token TTL the test's role gets: short, so renewal is seen within the test.
const TOKEN_TTL_SECS: u64 = 6;

/// A cluster from `scripts/bao-cluster start`, stopped (and its directory removed) when
/// dropped.
struct Cluster {
    dir: PathBuf,
    env: BTreeMap<String, String>,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/bao-cluster")
}

impl Cluster {
    fn start() -> Cluster {
        let dir = std::env::temp_dir().join(format!(
            "mtlsgate-bao-cluster-{}",
            hex::encode(crate::random::bytes::<8>())
        ));
        let out = Command::new(script())
            .args(["start", &dir.to_string_lossy(), "3"])
            .env("BAO_BIN", bao_bin())
            .env("BAO_CLUSTER_TOKEN_TTL", format!("{TOKEN_TTL_SECS}s"))
            .output()
            .unwrap();
        let mut cluster = Cluster {
            dir,
            env: BTreeMap::new(),
        };
        assert!(
            out.status.success(),
            "scripts/bao-cluster start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(cluster.dir.join("endpoints.env")).unwrap();
        for line in text.lines() {
            if let Some((k, v)) = line.split_once('=') {
                cluster
                    .env
                    .insert(k.to_owned(), v.trim_matches('"').to_owned());
            }
        }
        cluster
    }

    fn get(&self, key: &str) -> &str {
        self.env.get(key).map(String::as_str).unwrap_or_default()
    }

    fn approle(&self) -> Auth {
        Auth::AppRole(
            AppRole::from_files(
                "approle",
                Path::new(self.get("BAO_CLUSTER_ROLE_ID_FILE")),
                Path::new(self.get("BAO_CLUSTER_SECRET_ID_FILE")),
            )
            .unwrap(),
        )
    }

    /// The node that is the leader now (its index from 1), as `sys/leader` says.
    async fn leader(&self) -> usize {
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        for _ in 0..100 {
            for i in 1..=3 {
                let addr = self.get(&format!("BAO_CLUSTER_NODE_{i}_ADDR")).to_owned();
                let Ok(r) = client.get(format!("{addr}/v1/sys/leader")).send().await else {
                    continue;
                };
                let Ok(v) = r.bytes().await else { continue };
                let v: serde_json::Value = serde_json::from_slice(&v).unwrap_or_default();
                let leader = v["leader_address"].as_str().unwrap_or_default();
                if let Some(n) =
                    (1..=3).find(|n| self.get(&format!("BAO_CLUSTER_NODE_{n}_ADDR")) == leader)
                {
                    return n;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no node names a leader");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .args(["stop", &self.dir.to_string_lossy()])
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openbao_cluster_with_approle_keeps_the_contract_renews_and_survives_its_leader() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cluster = Cluster::start();
    // The addresses in reverse: the first one tried is not the one that was initialized.
    let addrs = cluster
        .get("BAO_CLUSTER_ADDRS")
        .split(',')
        .rev()
        .collect::<Vec<_>>()
        .join(",");
    let store = OpenBao::new(&addrs, cluster.approle(), "secret", "mtlsgate/", None).unwrap();
    let logged_in = Instant::now();
    store.check().await.unwrap();
    assert_eq!(store.auth_counts().0, 1, "one AppRole login");

    contract(Arc::new(store.clone())).await;

    // The policy: nothing outside mtlsgate's prefix, not even with a fresh login.
    let outside = OpenBao::new(&addrs, cluster.approle(), "secret", "elsewhere/", None).unwrap();
    assert_eq!(
        outside.write("p", &map(json!({"k": 1}))).await,
        Err(SecretStoreError::Refused(403))
    );
    assert_eq!(
        outside.auth_counts().0,
        2,
        "a refusal that reads like an expired token logs in again once, then fails"
    );

    // What was there before the leader dies.
    let kept = "accounts/kept/certificates/1";
    let kept_v = store
        .write(kept, &map(json!({"k": "before"})))
        .await
        .unwrap();

    // A stream of writes across `kill -9` of the leader, each to an entry of its own (KV
    // keeps 10 versions of an entry by default).
    let entry = |n: u64| format!("accounts/failover/certificates/{n}");
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            let (mut written, mut unanswered) = (Vec::new(), Vec::new());
            let mut back = None;
            let deadline = Instant::now() + Duration::from_secs(25);
            let mut n = 0u64;
            let mut after_outage = 0u32;
            while Instant::now() < deadline && after_outage < 5 {
                n += 1;
                match store.write(&entry(n), &map(json!({ "n": n }))).await {
                    Ok(v) => {
                        assert_eq!(v, 1);
                        written.push(n);
                        if !unanswered.is_empty() {
                            after_outage += 1;
                            back.get_or_insert_with(Instant::now);
                        }
                    }
                    Err(SecretStoreError::Unavailable(_)) => unanswered.push(n),
                    Err(e) => panic!("a write during the election: {e}"),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (written, unanswered, back)
        })
    };
    // And the API on the same store, creating AppKeys (secret first, row second) across it.
    let env = crate::api::tests::env_with(
        Arc::new(MemoryStore::new()),
        Secrets::new(Arc::new(store.clone())),
    )
    .await;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let api_writer = tokio::spawn({
        let done = done.clone();
        async move {
            let (mut created, mut refused) = (Vec::new(), 0u32);
            let deadline = Instant::now() + Duration::from_secs(25);
            // One more after the store's writes came back: it must succeed.
            let mut last = false;
            while !last {
                last = done.load(std::sync::atomic::Ordering::Relaxed) || Instant::now() > deadline;
                let (status, v) = crate::api::tests::call(
                    &env.state,
                    axum::http::Method::POST,
                    "/api/account/a/appkeys",
                    Some(crate::api::tests::DEV),
                    None,
                )
                .await;
                match status.as_u16() {
                    201 => created.push(v["id"].as_i64().unwrap_or_default()),
                    503 if !last => {
                        assert_eq!(v["code"], "secret_store_unavailable", "{v}");
                        refused += 1;
                    }
                    other => panic!("creating an AppKey during the election: {other} {v}"),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (env, created, refused)
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let leader = cluster.leader().await;
    let pid = cluster
        .get(&format!("BAO_CLUSTER_NODE_{leader}_PID"))
        .to_owned();
    let killed = Instant::now();
    assert!(Command::new("kill")
        .args(["-9", &pid])
        .status()
        .unwrap()
        .success());
    let (written, unanswered, back) = writer.await.unwrap();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let back = back.map(|t| t.saturating_duration_since(killed));
    eprintln!(
        "leader bao{leader} killed: {} write(s) answered Unavailable, writes back {back:?} \
         after the kill ({} written in all)",
        unanswered.len(),
        written.len()
    );
    if !unanswered.is_empty() {
        assert!(
            back.is_some_and(|b| b < Duration::from_secs(10)),
            "writes did not come back within 10 s of the kill"
        );
    }
    assert!(new_leader_differs(&cluster, leader).await);

    // Through the API: an AppKey answered 201 is listed and its secrets are in the store;
    // one answered 503 left no row.
    let (env, created, refused) = api_writer.await.unwrap();
    eprintln!(
        "API: {} AppKey(s) created, {refused} answered 503 secret_store_unavailable",
        created.len()
    );
    let (status, list) = crate::api::tests::call(
        &env.state,
        axum::http::Method::GET,
        "/api/account/a/appkeys",
        Some(crate::api::tests::DEV),
        None,
    )
    .await;
    assert_eq!(status.as_u16(), 200, "{list}");
    let mut listed = list
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|k| k["id"].as_i64())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    listed.sort_unstable();
    let mut answered = created.clone();
    answered.sort_unstable();
    assert_eq!(
        listed, answered,
        "rows exactly for the AppKeys answered 201"
    );
    let secrets = Secrets::new(Arc::new(store.clone()));
    for id in &created {
        assert!(
            secrets.get_appkey("a", *id).await.unwrap().is_some(),
            "{id}"
        );
    }
    drop(env);

    // Nothing half-written: every write that answered Ok reads back as sent; one that
    // answered Unavailable left nothing, or — its answer lost with the leader (sent, then the
    // connection died, yet Raft committed it) — a whole entry, which the API leaves alone
    // (its write mark is in no row).
    for n in &written {
        assert_eq!(
            store.read(&entry(*n), None).await.unwrap(),
            Some(map(json!({ "n": n }))),
            "write {n}"
        );
    }
    let mut committed_anyway = 0;
    for n in &unanswered {
        match store.read(&entry(*n), None).await.unwrap() {
            None => {}
            Some(m) => {
                assert_eq!(m, map(json!({ "n": n })), "write {n} is whole");
                committed_anyway += 1;
            }
        }
    }
    assert!(
        committed_anyway <= 1,
        "{committed_anyway} writes that answered Unavailable were carried out"
    );
    assert_eq!(
        store.read(kept, Some(kept_v)).await.unwrap(),
        Some(map(json!({"k": "before"})))
    );

    // Renewal: the token issued at the first login still works past twice its TTL, through
    // the new leader, with renewals and no second login.
    let past = Duration::from_secs(2 * TOKEN_TTL_SECS + 1);
    while logged_in.elapsed() < past {
        store.check().await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    store.read(kept, None).await.unwrap();
    let (logins, renewals) = store.auth_counts();
    assert_eq!(logins, 1, "renewed, not logged in again");
    assert!(renewals >= 2, "{renewals} renewal(s) in {past:?}");
}

/// Whether a node other than `old` is the leader now.
async fn new_leader_differs(cluster: &Cluster, old: usize) -> bool {
    for _ in 0..50 {
        if cluster.leader().await != old {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}
