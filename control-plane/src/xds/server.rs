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
use crate::desired::Desired;

/// The ADS service.
#[derive(Clone)]
pub struct Ads {
    desired: watch::Receiver<Arc<Desired>>,
    acks: Arc<Acks>,
    opts: ResourceOptions,
}

impl Ads {
    pub fn new(
        desired: watch::Receiver<Arc<Desired>>,
        acks: Arc<Acks>,
        opts: ResourceOptions,
    ) -> Self {
        Ads {
            desired,
            acks,
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
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(serve_stream(
            inbound,
            tx,
            self.desired.clone(),
            self.acks.clone(),
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

async fn serve_stream(
    mut inbound: Streaming<DiscoveryRequest>,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
    mut desired: watch::Receiver<Arc<Desired>>,
    acks: Arc<Acks>,
    mut conn: Connection,
) {
    let mut node: Option<String> = None;
    'stream: loop {
        let responses = tokio::select! {
            msg = inbound.message() => match msg {
                Ok(Some(req)) => {
                    let current = desired.borrow_and_update().clone();
                    let out = conn.handle_request(req, &current);
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
                conn.handle_update(&current)
            }
        };
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
