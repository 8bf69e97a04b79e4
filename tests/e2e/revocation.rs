//! A stolen gateway certificate, revoked: `mtlsgate pki revoke-gateway` adds it to the link
//! CA's CRL, which the control plane follows (`--link-crl-file`, as every stack here runs).
//! Within a second or two its next handshake is refused and the ADS stream and feed long
//! poll it holds open are closed, while another gateway's connections carry on.

use std::process::Command;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};

use crate::harness::Stack;

/// An ADS stream as gateway `node` with its certificate: the sender (kept, or the request
/// stream ends) and the response stream, once the control plane has accepted the stream.
async fn ads_stream(
    stack: &Stack,
    identity: (String, String),
    node: &str,
) -> Result<
    (
        tokio::sync::mpsc::Sender<DiscoveryRequest>,
        tonic::Streaming<DiscoveryResponse>,
    ),
    String,
> {
    use envoy_types::pb::envoy::config::core::v3::Node;
    use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
    use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(stack.link_ca()))
        .domain_name("mtlsgate-control-plane")
        .identity(Identity::from_pem(identity.0, identity.1));
    let channel = Channel::from_shared(stack.xds.clone())
        .map_err(|e| e.to_string())?
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(DiscoveryRequest {
        node: Some(Node {
            id: node.into(),
            ..Default::default()
        }),
        type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
        ..Default::default()
    })
    .await
    .map_err(|e| e.to_string())?;
    let stream = tokio::time::timeout(
        Duration::from_secs(10),
        AggregatedDiscoveryServiceClient::new(channel)
            .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
    .await
    .map_err(|_| "no answer".to_owned())?
    .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
    .into_inner();
    Ok((tx, stream))
}

/// Reads what the stream has to say now (its first responses) until it is quiet for half a
/// second, so that what it says later is news.
async fn drain(stream: &mut tonic::Streaming<DiscoveryResponse>) {
    while let Ok(next) = tokio::time::timeout(Duration::from_millis(500), stream.message()).await {
        assert!(
            matches!(next, Ok(Some(_))),
            "the stream ended early: {next:?}"
        );
    }
}

/// The snapshot URL of a node that has acknowledged nothing: a long poll held `wait` seconds.
fn held_poll_url(stack: &Stack, node: &str, wait: u64) -> String {
    format!(
        "{}/v1/runtime/snapshot?node={node}&version=&waitSeconds={wait}",
        stack.feed
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_gateway_certificate_is_refused_and_its_open_connections_are_closed() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let stack = Stack::start().await;
    let stolen = stack.gateway_identity("gw-stolen");
    let other = stack.gateway_identity("gw-other");

    // Each gateway holds an ADS stream and a feed long poll open.
    let (_stolen_tx, mut stolen_ads) = ads_stream(&stack, stolen.clone(), "gw-stolen")
        .await
        .expect("the stolen certificate's ADS stream, before the revocation");
    let (_other_tx, mut other_ads) = ads_stream(&stack, other.clone(), "gw-other")
        .await
        .expect("the other gateway's ADS stream");
    drain(&mut stolen_ads).await;
    drain(&mut other_ads).await;
    let poll = |identity: (String, String), node: &str| {
        let request = stack
            .link_client(Some(identity))
            .get(held_poll_url(&stack, node, 30));
        tokio::spawn(async move { request.send().await.map(|r| r.status().as_u16()) })
    };
    let stolen_poll = poll(stolen.clone(), "gw-stolen");
    let other_poll = poll(other.clone(), "gw-other");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!stolen_poll.is_finished() && !other_poll.is_finished());

    let out = Command::new(&stack.mtlsgate_bin)
        .args([
            "pki",
            "revoke-gateway",
            "--dir",
            &stack.pki.to_string_lossy(),
        ])
        .args(["--node-id", "gw-stolen"])
        .output()
        .expect("mtlsgate pki revoke-gateway");
    assert!(out.status.success(), "revoke-gateway: {out:?}");
    let revoked = Instant::now();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("revoked certificate") && said.contains("gw-stolen"),
        "{said}"
    );

    // (b) The open ADS stream and the held poll of the revoked certificate end, unanswered,
    // within 2 s of the CRL changing (the control plane compares its files every second).
    let deadline = tokio::time::Instant::from_std(revoked + Duration::from_secs(2));
    let ads_end = tokio::time::timeout_at(deadline, stolen_ads.message())
        .await
        .expect("the revoked certificate's ADS stream is closed within 2 s");
    assert!(
        !matches!(ads_end, Ok(Some(_))),
        "the revoked stream got a response: {ads_end:?}"
    );
    let poll_end = tokio::time::timeout_at(deadline, stolen_poll)
        .await
        .expect("the revoked certificate's long poll is closed within 2 s")
        .expect("poll task");
    assert!(
        poll_end.is_err(),
        "the revoked poll was answered: {poll_end:?}"
    );
    eprintln!("revoked connections closed after {:?}", revoked.elapsed());

    // (a) Its next handshake is refused, on both links.
    let again = ads_stream(&stack, stolen.clone(), "gw-stolen").await;
    assert!(
        again.is_err(),
        "a new ADS stream with the revoked certificate"
    );
    let feed = stack
        .link_client(Some(stolen))
        .get(held_poll_url(&stack, "gw-stolen", 0))
        .send()
        .await;
    assert!(
        feed.is_err(),
        "the feed answered the revoked certificate: {feed:?}"
    );

    // (c) The other gateway's stream and poll are still open, and it connects anew.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), other_ads.message())
            .await
            .is_err(),
        "the other gateway's ADS stream ended"
    );
    assert!(!other_poll.is_finished(), "the other gateway's poll ended");
    assert!(ads_stream(&stack, other.clone(), "gw-other").await.is_ok());
    let fresh = stack
        .link_client(Some(other))
        .get(held_poll_url(&stack, "gw-other", 0))
        .send()
        .await
        .expect("the other gateway's new poll");
    assert_eq!(fresh.status(), 304);
    // The stack's own Envoy (a third certificate) still gets its snapshot and forwards.
    let probe = stack
        .forward(
            "probe",
            "GET",
            "https://probe.invalid/",
            "IDP",
            &[("authorization", "Bearer none")],
            None,
        )
        .await;
    assert_ne!(probe.status(), 503, "the gateway lost its snapshot");
    assert!(stack
        .logs()
        .contains("link connection closed: its certificate is no longer accepted"));
}
