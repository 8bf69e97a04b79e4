//! The ADS gRPC service: one task per Envoy stream, moving messages between the stream and
//! its [`Connection`].

use std::pin::Pin;
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use futures::Stream;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::connection::Connection;
use super::{Acks, ResourceOptions};
use crate::reconciler::Published;
use crate::rejections::Rejections;

/// The ADS service.
#[derive(Clone)]
pub struct Ads {
    desired: watch::Receiver<Published>,
    acks: Arc<Acks>,
    rejections: Arc<Rejections>,
    opts: ResourceOptions,
}

impl Ads {
    pub fn new(
        desired: watch::Receiver<Published>,
        acks: Arc<Acks>,
        rejections: Arc<Rejections>,
        opts: ResourceOptions,
    ) -> Self {
        Ads {
            desired,
            acks,
            rejections,
            opts,
        }
    }

    pub fn into_service(self) -> AggregatedDiscoveryServiceServer<Self> {
        AggregatedDiscoveryServiceServer::new(self)
    }
}

type Out<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream = Out<DiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        // why: the stream carries private keys. Only a gateway certificate of mtlsgate's link
        // CA (checked in the TLS handshake) that names a node gets a stream, and only for
        // that node: a process that reaches the port, or gateway A asking as node B, gets
        // nothing, and cannot send ACKs in another node's name either.
        let peer = request
            .peer_certs()
            .and_then(|certs| certs.first().and_then(|c| crate::pki::node_id_of(c)))
            .ok_or_else(|| {
                Status::unauthenticated("a gateway certificate that names its node is required")
            })?;
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(serve_stream(
            peer,
            inbound,
            tx,
            self.desired.clone(),
            self.acks.clone(),
            self.rejections.clone(),
            Connection::new(self.opts.clone()),
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type DeltaAggregatedResourcesStream = Out<DeltaDiscoveryResponse>;

    async fn delta_aggregated_resources(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented(
            "mtlsgate serves state-of-the-world ADS (api_type: GRPC)",
        ))
    }
}

/// Whether a request may be served on a stream whose certificate names `peer`: a node id, when
/// the request carries one, must be that node; the first request must carry one.
fn node_allowed(peer: &str, req: &DiscoveryRequest, first: bool) -> Result<(), Status> {
    match req.node.as_ref().map(|n| n.id.as_str()) {
        Some(id) if id == peer => Ok(()),
        None if !first => Ok(()),
        Some(id) => Err(Status::permission_denied(format!(
            "this certificate is node {peer:?}'s, not {id:?}'s"
        ))),
        None => Err(Status::invalid_argument(
            "the first request must name its node",
        )),
    }
}

async fn serve_stream(
    peer: String,
    mut inbound: Streaming<DiscoveryRequest>,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
    mut desired: watch::Receiver<Published>,
    acks: Arc<Acks>,
    rejections: Arc<Rejections>,
    mut conn: Connection,
) {
    let mut node: Option<String> = None;
    'stream: loop {
        let responses = tokio::select! {
            msg = inbound.message() => match msg {
                Ok(Some(req)) => {
                    if let Err(denied) = node_allowed(&peer, &req, node.is_none()) {
                        tracing::warn!(node = %peer, error = %denied.message(), "ADS request refused");
                        let _ = tx.send(Err(denied)).await;
                        break;
                    }
                    let current = desired.borrow_and_update().clone();
                    conn.set_epoch(current.epoch);
                    let out = conn.handle_request(req, &current.desired);
                    if node.is_none() {
                        if let Some(id) = conn.node() {
                            tracing::info!(node = id, "Envoy connected");
                            acks.connected(id);
                            node = Some(id.to_owned());
                        }
                    }
                    if let (Some(ack), Some(id)) = (&out.ack, &node) {
                        tracing::debug!(node = %id, type_url = %ack.type_url, version = %ack.version, "ACK");
                        acks.acked(id, &ack.type_url, &ack.names);
                    }
                    if !out.rejected.is_empty() {
                        rejections.record(&peer, &out.rejected);
                    }
                    out.responses
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "ADS stream ended");
                    break;
                }
            },
            changed = desired.changed() => {
                if changed.is_err() {
                    break;
                }
                let current = desired.borrow_and_update().clone();
                conn.set_epoch(current.epoch);
                conn.handle_update(&current.desired)
            }
        };
        if let (Some(id), Some(epoch)) = (&node, conn.synced()) {
            acks.synced(id, epoch);
        }
        for r in responses {
            // A failed send means Envoy went away.
            if tx.send(Ok(r)).await.is_err() {
                break 'stream;
            }
        }
    }
    if let Some(id) = node {
        tracing::info!(node = %id, "Envoy disconnected");
        acks.disconnected(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::Node;

    fn req(node: Option<&str>) -> DiscoveryRequest {
        DiscoveryRequest {
            node: node.map(|id| Node {
                id: id.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_stream_serves_only_the_node_its_certificate_names() {
        assert!(node_allowed("gw-a", &req(Some("gw-a")), true).is_ok());
        assert!(node_allowed("gw-a", &req(None), false).is_ok());
        let e = node_allowed("gw-a", &req(Some("gw-b")), true).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        let e = node_allowed("gw-a", &req(Some("gw-b")), false).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        let e = node_allowed("gw-a", &req(None), true).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
    }
}
