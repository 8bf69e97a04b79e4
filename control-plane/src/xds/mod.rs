//! The xDS server: Aggregated Discovery Service (state of the world) serving CDS and SDS.
//!
//! [`connection`] is the protocol, a synchronous state machine tested without a network;
//! [`server`] only moves messages between it and the gRPC stream. [`acks`] remembers what
//! each Envoy node has acknowledged, which gates the runtime snapshot.

pub mod acks;
pub mod connection;
pub mod resources;
pub mod server;
pub(crate) mod shared;

pub use acks::Acks;
pub use resources::{ResourceOptions, UpstreamLimits};
pub use server::Ads;

/// `type_url` of clusters.
pub const CLUSTER_TYPE: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
/// `type_url` of TLS secrets.
pub const SECRET_TYPE: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
