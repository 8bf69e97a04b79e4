use std::sync::Arc;

use super::*;

fn headers(values: &[&str]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for v in values {
        h.append("prefer", HeaderValue::from_str(v).unwrap());
    }
    h
}

fn wait_of(values: &[&str]) -> Result<Option<u64>, PreferError> {
    parse(&headers(values))
}

#[test]
fn a_valid_wait_is_read() {
    assert_eq!(wait_of(&["wait=10"]), Ok(Some(10)));
    assert_eq!(wait_of(&["wait=0"]), Ok(Some(0)));
    assert_eq!(wait_of(&["WAIT=3"]), Ok(Some(3)));
    assert_eq!(wait_of(&["wait = 4"]), Ok(Some(4)));
    assert_eq!(wait_of(&["wait=\"7\""]), Ok(Some(7)));
    assert_eq!(wait_of(&["  wait=8  "]), Ok(Some(8)));
}

#[test]
fn no_header_or_no_wait_means_no_wait() {
    assert_eq!(wait_of(&[]), Ok(None));
    assert_eq!(wait_of(&["return=minimal"]), Ok(None));
    assert_eq!(wait_of(&["respond-async, handling=strict"]), Ok(None));
    // RFC 7240 §2: an empty value is no value.
    assert_eq!(wait_of(&["wait="]), Ok(None));
    assert_eq!(wait_of(&["wait"]), Ok(None));
    assert_eq!(wait_of(&[""]), Ok(None));
}

#[test]
fn a_malformed_wait_is_refused() {
    for bad in [
        "wait=abc",
        "wait=-1",
        "wait=1.5",
        "wait=+3",
        "wait=1 2",
        "wait=0x10",
        "wait=\"12",
    ] {
        assert!(
            matches!(
                wait_of(&[bad]),
                Err(PreferError::InvalidWait(_) | PreferError::Unterminated)
            ),
            "{bad:?} gave {:?}",
            wait_of(&[bad])
        );
    }
}

#[test]
fn a_non_utf8_wait_is_refused_not_a_panic() {
    let mut h = HeaderMap::new();
    h.append("prefer", HeaderValue::from_bytes(b"wait=\xff1").unwrap());
    assert!(matches!(parse(&h), Err(PreferError::InvalidWait(_))));
    // …but only a `wait` is looked at.
    let mut h = HeaderMap::new();
    h.append(
        "prefer",
        HeaderValue::from_bytes(b"x=\xff, wait=2").unwrap(),
    );
    assert_eq!(parse(&h), Ok(Some(2)));
}

#[test]
fn a_huge_wait_is_capped() {
    assert_eq!(wait_of(&["wait=60"]), Ok(Some(60)));
    assert_eq!(wait_of(&["wait=61"]), Ok(Some(MAX_WAIT_SECS)));
    assert_eq!(
        wait_of(&["wait=99999999999999999999999999999999"]),
        Ok(Some(MAX_WAIT_SECS))
    );
    let long = format!("wait={}", "9".repeat(4000));
    assert_eq!(wait_of(&[&long]), Ok(Some(MAX_WAIT_SECS)));
    // The message quotes a bad value only in part.
    let long = format!("wait={}", "x".repeat(4000));
    let Err(PreferError::InvalidWait(v)) = wait_of(&[&long]) else {
        panic!("refused")
    };
    assert!(v.len() <= 32);
}

#[test]
fn only_the_first_wait_counts() {
    assert_eq!(wait_of(&["wait=3, wait=50"]), Ok(Some(3)));
    assert_eq!(wait_of(&["wait=3", "wait=50"]), Ok(Some(3)));
    // RFC 7240 §2: later occurrences are ignored without error, even malformed ones.
    assert_eq!(wait_of(&["wait=3, wait=junk"]), Ok(Some(3)));
    assert_eq!(wait_of(&["wait=, wait=5"]), Ok(None));
}

#[test]
fn other_preferences_and_parameters_are_ignored() {
    assert_eq!(wait_of(&["return=representation, wait=5"]), Ok(Some(5)));
    assert_eq!(wait_of(&["respond-async", "wait=5"]), Ok(Some(5)));
    assert_eq!(wait_of(&["wait=5; foo=bar; baz"]), Ok(Some(5)));
    assert_eq!(
        wait_of(&["handling=lenient; x=\"a,b\", wait=6"]),
        Ok(Some(6))
    );
    // A comma or `wait=` inside another preference's quoted value is not a preference.
    assert_eq!(wait_of(&["foo=\"a, wait=9\", wait=2"]), Ok(Some(2)));
    assert_eq!(wait_of(&["foo=\"a \\\" , wait=9\", wait=2"]), Ok(Some(2)));
    assert_eq!(wait_of(&["waiting=9, await=8"]), Ok(None));
}

fn published(epoch: u64, covers: u64) -> Published {
    Published {
        desired: Arc::default(),
        epoch,
        covers,
    }
}

/// A node on ADS and the feed that enforces `epoch`.
fn enforcing(acks: &Arc<Acks>, node: &str, epoch: u64) -> crate::xds::acks::FeedPoll {
    acks.connected(node);
    acks.synced(node, epoch);
    acks.fed(node, epoch);
    acks.poll(node)
}

#[tokio::test]
async fn with_no_gateway_it_answers_once_rebuilt() {
    let acks = Arc::new(Acks::default());
    let (tx, rx) = watch::channel(published(1, 0));
    let deadline = Instant::now() + Duration::from_secs(5);
    let waiter = tokio::spawn({
        let acks = acks.clone();
        async move { enforced(rx, &acks, 1, deadline).await }
    });
    tx.send_modify(|p| p.covers = 1);
    assert_eq!(waiter.await.unwrap(), Ok(()));
}

#[tokio::test]
async fn it_waits_for_every_connected_node_to_enforce_the_covering_epoch() {
    let acks = Arc::new(Acks::default());
    let _a = enforcing(&acks, "gw-a", 4);
    let _b = enforcing(&acks, "gw-b", 4);
    let (tx, rx) = watch::channel(published(4, 2));
    let deadline = Instant::now() + Duration::from_secs(10);
    let waiter = tokio::spawn({
        let acks = acks.clone();
        async move { enforced(rx, &acks, 3, deadline).await }
    });
    // The rebuild that covers ticket 3 makes epoch 5.
    tx.send_modify(|p| {
        p.epoch = 5;
        p.covers = 3;
    });
    tokio::task::yield_now().await;
    // gw-a: Envoy acked epoch 5, filter not yet; gw-b: the reverse.
    acks.synced("gw-a", 5);
    acks.fed("gw-b", 5);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiter.is_finished(), "neither node enforces epoch 5 yet");
    acks.fed("gw-a", 5);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiter.is_finished(), "gw-b's Envoy has not acknowledged");
    acks.synced("gw-b", 6);
    let answer = tokio::time::timeout(Duration::from_secs(1), waiter)
        .await
        .expect("answers as soon as the last node enforces")
        .unwrap();
    assert_eq!(answer, Ok(()));
}

#[tokio::test]
async fn a_node_that_does_not_enforce_in_time_is_named() {
    let acks = Arc::new(Acks::default());
    let _a = enforcing(&acks, "gw-a", 7);
    let _b = enforcing(&acks, "gw-b", 6);
    let (_tx, rx) = watch::channel(published(7, 1));
    let started = Instant::now();
    let answer = enforced(rx, &acks, 1, started + Duration::from_millis(300)).await;
    assert_eq!(answer, Err(vec!["gw-b".to_owned()]));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_secs(2),
        "{took:?}"
    );
}

#[tokio::test]
async fn a_node_without_an_ads_stream_is_not_proven_to_enforce() {
    let acks = Arc::new(Acks::default());
    let _a = enforcing(&acks, "gw-a", 3);
    acks.disconnected("gw-a");
    let (_tx, rx) = watch::channel(published(3, 1));
    let answer = enforced(rx, &acks, 1, Instant::now() + Duration::from_millis(100)).await;
    assert_eq!(
        answer,
        Err(vec!["gw-a".to_owned()]),
        "still polling the feed"
    );
}

#[tokio::test]
async fn gone_nodes_do_not_count_and_an_unbuilt_write_names_everyone() {
    let acks = Arc::new(Acks::default());
    // Polled once long ago, no stream: not connected.
    drop(acks.poll("gone"));
    // A connected node at an old epoch.
    let _a = enforcing(&acks, "gw-a", 1);
    let (_tx, rx) = watch::channel(published(9, 0));
    // The rebuild covering ticket 5 never comes.
    let answer = enforced(rx, &acks, 5, Instant::now() + Duration::from_millis(100)).await;
    let Err(named) = answer else {
        panic!("not rebuilt")
    };
    assert!(named.contains(&"gw-a".to_owned()));
    // "gone" ended its poll just now, so it is within its grace here; it is named too.
    assert!(named.contains(&"gone".to_owned()));
}

#[test]
fn a_node_whose_feed_grace_ended_stops_counting() {
    let acks = Arc::new(Acks::default());
    drop(acks.poll("gone"));
    assert_eq!(acks.not_enforcing(1), vec!["gone".to_owned()]);
    std::thread::sleep(FEED_GRACE + Duration::from_millis(50));
    assert!(acks.not_enforcing(1).is_empty());
}

mod in_process {
    //! The middleware on the real router and feed, with an in-memory secret store; the
    //! gateway is played by the test (its ADS acknowledgements and its filter's polls).
    //! Real Envoy is in the e2e suite (`tests/e2e/prefer_wait.rs`).

    use axum::body::Body;
    use axum::http::{Method, Request, StatusCode};
    use http_body_util::BodyExt;
    use serde_json::{json, Value};
    use tower::ServiceExt;

    use super::*;
    use crate::api::tests::{env, DEV};
    use crate::api::{feed_router, router, PeerNode};

    const NODE: &str = "node-1";

    async fn put_egress(
        s: &AppState,
        hosts: &[&str],
        prefer: &[&str],
    ) -> (StatusCode, HeaderMap, Value) {
        let mut req = Request::builder()
            .method(Method::PUT)
            .uri("/api/account/a/egress")
            .header("authorization", format!("Bearer {DEV}"))
            .header("content-type", "application/json");
        for p in prefer {
            req = req.header("prefer", *p);
        }
        let req = req
            .body(Body::from(json!({ "plainTlsHosts": hosts }).to_string()))
            .unwrap();
        let resp = router(s.clone()).oneshot(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (parts.status, parts.headers, v)
    }

    /// Plays a gateway's filter (polls the feed with the version it applied, as the poller
    /// does) and its Envoy (acknowledges every desired state as it is published).
    fn gateway(s: &AppState) -> tokio::task::JoinHandle<()> {
        let s = s.clone();
        tokio::spawn(async move {
            let envoy = {
                let s = s.clone();
                async move {
                    let mut published = s.reconciler.published();
                    loop {
                        let epoch = published.borrow_and_update().epoch;
                        s.acks.synced(NODE, epoch);
                        if published.changed().await.is_err() {
                            return;
                        }
                    }
                }
            };
            let filter = async move {
                let mut version = String::new();
                loop {
                    let req = Request::builder()
                        .uri(format!(
                            "/v1/runtime/snapshot?node={NODE}&version={version}&waitSeconds=30"
                        ))
                        .extension(PeerNode(Some(NODE.into())))
                        .body(Body::empty())
                        .unwrap();
                    let resp = feed_router(s.clone()).oneshot(req).await.unwrap();
                    if resp.status() == StatusCode::OK {
                        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
                        let v: Value = serde_json::from_slice(&bytes).unwrap();
                        version = v["version"].as_str().unwrap().to_owned();
                    }
                }
            };
            tokio::join!(envoy, filter);
        })
    }

    #[tokio::test]
    async fn a_malformed_wait_is_refused_before_anything_is_written() {
        let env = env().await;
        let s = &env.state;
        let (st, _, v) = put_egress(s, &["x.example"], &["wait=soon"]).await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        assert_eq!(v["code"], "invalid_preference");
        assert!(v["requestId"].is_string());
        let (st, _, _) = put_egress(s, &["x.example"], &["return=minimal, wait=5x"]).await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        let (st, _, v) = put_egress(s, &[], &["frobnicate=1"]).await;
        assert_eq!(st, StatusCode::OK, "unknown preferences are ignored: {v}");
        let req = Request::builder()
            .uri("/api/account/a/egress")
            .header("authorization", format!("Bearer {DEV}"))
            .body(Body::empty())
            .unwrap();
        let resp = router(s.clone()).oneshot(req).await.unwrap();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v, json!({"plainTlsHosts": []}), "nothing was written");
    }

    #[tokio::test]
    async fn a_connected_gateway_that_does_not_enforce_the_write_is_named_after_the_wait() {
        let env = env().await;
        let s = &env.state;
        // `env` connected NODE over "ADS"; it never polls the feed nor acknowledges.
        let started = std::time::Instant::now();
        let (st, h, _) = put_egress(s, &["x.example"], &["wait=1"]).await;
        let took = started.elapsed();
        assert_eq!(st, StatusCode::OK, "the write is committed all the same");
        assert_eq!(h.get(NOT_ENFORCED_BY).unwrap(), NODE);
        assert!(h.get("preference-applied").is_none());
        assert!(
            took >= Duration::from_millis(950) && took < Duration::from_secs(3),
            "{took:?}"
        );
        // Without the header: answered at once, neither header.
        let started = std::time::Instant::now();
        let (st, h, _) = put_egress(s, &["y.example"], &[]).await;
        assert_eq!(st, StatusCode::OK);
        assert!(started.elapsed() < Duration::from_millis(900));
        assert!(h.get(NOT_ENFORCED_BY).is_none() && h.get("preference-applied").is_none());
        // A refused write does not wait.
        let started = std::time::Instant::now();
        let (st, h, _) = put_egress(s, &["https://x"], &["wait=5"]).await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        assert!(started.elapsed() < Duration::from_millis(900));
        assert!(h.get(NOT_ENFORCED_BY).is_none());
    }

    #[tokio::test]
    async fn a_write_answers_once_the_gateway_proves_it_enforces_it() {
        let env = env().await;
        let s = &env.state;
        let gw = gateway(s);
        for (i, hosts) in [["a.example"], ["b.example"], ["c.example"]]
            .iter()
            .enumerate()
        {
            let started = std::time::Instant::now();
            let (st, h, _) = put_egress(s, hosts, &["wait=10"]).await;
            assert_eq!(st, StatusCode::OK);
            assert_eq!(
                h.get("preference-applied").map(|v| v.to_str().unwrap()),
                Some("wait=10"),
                "write {i}: {h:?}"
            );
            assert!(h.get(NOT_ENFORCED_BY).is_none());
            assert!(started.elapsed() < Duration::from_secs(5), "write {i}");
            // What the node is proven to enforce holds the write.
            let epoch = s.reconciler.published().borrow().epoch;
            assert!(s.acks.not_enforcing(epoch).is_empty());
        }
        // A huge wait is applied as the cap.
        let (_, h, _) = put_egress(s, &["d.example"], &["wait=86400"]).await;
        assert_eq!(h.get("preference-applied").unwrap(), "wait=60");
        gw.abort();
    }
}

mod reconciler {
    use std::time::Duration;

    use crate::api::tests::env;

    #[tokio::test]
    async fn a_ticket_is_covered_by_the_next_rebuild_and_the_epoch_moves_only_with_the_state() {
        let env = env().await;
        let s = &env.state;
        let mut published = s.reconciler.published();
        let before = published.borrow().clone();

        // Nothing changed: the rebuild covers the ticket, the epoch stays.
        let t = s.reconciler.ticket();
        assert!(t > before.covers);
        let after = tokio::time::timeout(
            Duration::from_secs(5),
            published.wait_for(|p| p.covers >= t),
        )
        .await
        .expect("rebuilt at once, not at the next watch")
        .unwrap()
        .clone();
        assert_eq!(after.epoch, before.epoch);

        // A user added: the state that covers the next ticket is a new epoch.
        s.store
            .insert_user("a", "u", "hash", false, &[])
            .await
            .unwrap()
            .unwrap();
        let t = s.reconciler.ticket();
        let after = tokio::time::timeout(
            Duration::from_secs(5),
            published.wait_for(|p| p.covers >= t),
        )
        .await
        .unwrap()
        .unwrap()
        .clone();
        assert!(after.epoch > before.epoch);
        assert_eq!(after.desired.callers.users.len(), 1);
    }
}
