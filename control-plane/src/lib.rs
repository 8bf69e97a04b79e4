//! The mtlsgate control plane.
//!
//! - [`api`]: the management API (certificates, mappings) and the runtime snapshot feed.
//! - [`store`]: metadata in SQL (SQLite by default).
//! - [`vault`]: certificate material in Vault / OpenBao KV v2.
//! - [`desired`]: what Envoy should have, rebuilt from the store and Vault by [`sync`].
//! - [`egress`]: the per-account allowlist of plain-TLS fallback hosts.
//! - [`xds`]: ADS (CDS + SDS) to Envoy, tracking what each node acknowledged.
//! - [`serve`]: wires it all together.

pub mod access_tokens;
pub mod api;
pub mod appkeys;
pub mod certinfo;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod desired;
pub mod egress;
pub mod identity;
pub mod keystore;
pub mod oauth2;
pub mod p12;
pub mod p12test;
pub mod secret;
pub mod serve;
pub mod store;
pub mod sync;
pub mod vault;
pub mod xds;
