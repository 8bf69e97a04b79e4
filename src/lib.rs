//! mtlsgate's proxy-wasm filter and the policy core it is built around.
//!
//! The core (every module but `glue`) is plain Rust with no host dependency: it compiles
//! natively, so the control plane shares its types (the [`snapshot`] is the contract between
//! the two halves) and the tests run without Envoy. Only `glue` talks to the proxy-wasm host,
//! and it only translates: read the request and the host's state, ask
//! [`forward::on_request_headers`], apply the answer.

pub mod account;
pub mod audit;
pub mod auth;
pub mod check_mapping;
pub(crate) mod client_ip;
pub mod config;
pub mod forward;

pub mod oauth1;
pub mod privilege;
pub mod refusal;
pub mod service;
pub mod snapshot;
pub mod target;
pub mod throttle;
pub mod token;

/// Headers the filter owns. A caller can never set them: the filter strips them from every
/// request before it decides anything.
pub mod headers {
    /// The route's `cluster_header`: names the per-mapping upstream cluster.
    pub const CLUSTER: &str = "x-mtlsgate-cluster";
    /// The complete target URL, as the caller names it.
    pub const FORWARD_URL: &str = "lp-forward-url";
    /// `TEST_SERVICE`, `IDP`, `WEBHOOKS` or their ids `0`, `1`, `2`.
    pub const SERVICE_NAME: &str = "lp-service-name";
    /// Sent upstream as `Authorization`.
    pub const AUTHORIZATION_OVERRIDE: &str = "lp-authorization-override";
    /// `true`: no mapping means an error, never a plain-TLS forward.
    pub const STOP_IF_NOT_FOUND: &str = "lp-stop-if-certificate-not-found";
    /// Set by Envoy (`generate_request_id`), echoed in every error body.
    pub const REQUEST_ID: &str = "x-request-id";
}

#[cfg(all(target_arch = "wasm32", target_os = "wasi"))]
mod glue;
