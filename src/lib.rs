//! mtlsgate's proxy-wasm filter and the policy core it is built around.
//!
//! The core (every module but `glue`) is plain Rust with no host dependency: it compiles
//! natively, so the control plane shares its types (the [`snapshot`] is the contract between
//! the two halves) and the tests run without Envoy. Only `glue` talks to the proxy-wasm host,
//! and it only translates: read the request and the host's state, ask
//! `forward::on_request_headers`, apply the answer.
//!
//! Public are only the modules the control plane uses ([`account`], [`oauth1`], [`privilege`],
//! [`service`], [`snapshot`], [`target`], [`token`]); the rest is `pub(crate)`, for the glue.

pub mod account;
pub mod oauth1;
pub mod privilege;
pub mod service;
pub mod snapshot;
pub mod target;
pub mod token;

// why: these serve only the glue, which is compiled for wasm32-wasip1 alone; natively (the
// control plane's build, the native tests) most of them look unused. Dead code is still found:
// the wasm32-wasip1 build (`cargo clippy --target wasm32-wasip1 -- -D warnings`) has the glue.
#[cfg_attr(not(all(target_arch = "wasm32", target_os = "wasi")), allow(dead_code))]
pub(crate) mod audit;
#[cfg_attr(not(all(target_arch = "wasm32", target_os = "wasi")), allow(dead_code))]
pub(crate) mod auth;
#[cfg_attr(not(all(target_arch = "wasm32", target_os = "wasi")), allow(dead_code))]
pub(crate) mod check_mapping;
#[cfg_attr(not(all(target_arch = "wasm32", target_os = "wasi")), allow(dead_code))]
pub(crate) mod client_ip;
#[cfg_attr(not(all(target_arch = "wasm32", target_os = "wasi")), allow(dead_code))]
pub(crate) mod config;
#[cfg_attr(not(all(target_arch = "wasm32", target_os = "wasi")), allow(dead_code))]
pub(crate) mod forward;
#[cfg_attr(not(all(target_arch = "wasm32", target_os = "wasi")), allow(dead_code))]
pub(crate) mod nonce;
#[cfg_attr(not(all(target_arch = "wasm32", target_os = "wasi")), allow(dead_code))]
pub(crate) mod refusal;
#[cfg_attr(not(all(target_arch = "wasm32", target_os = "wasi")), allow(dead_code))]
pub(crate) mod throttle;

/// Headers the filter owns. A caller can never set them: the filter strips them from every
/// request before it decides anything.
#[cfg_attr(not(all(target_arch = "wasm32", target_os = "wasi")), allow(dead_code))]
pub(crate) mod headers {
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

/// The fuzz targets' entry points (`fuzz/`) and their corpus replay; not an API, and not in
/// the `.wasm`.
#[doc(hidden)]
#[cfg(not(target_arch = "wasm32"))]
pub mod fuzzing;
