//! The mtlsgate control plane.
//!
//! # Module map, by layer
//! A module imports only from its own layer or the layers below it (`layering` tests this on
//! every module's `crate::` paths, and that no two modules import each other in a cycle).
//!
//! 1. **Process** — what the `mtlsgate` binary runs.
//!    - [`config`]: the flags and environment variables of `mtlsgate serve`.
//!    - [`serve`]: builds the application state, starts the reconciler, the token keeper,
//!      the xDS server and the HTTP API, and stops them on Ctrl-C or SIGTERM.
//!    - [`cli`]: commands against the database (`mtlsgate user add`).
//!    - `fuzzing` (hidden, not an API): the fuzz targets' entry points into the parsers
//!      that read users' bytes (`fuzz/`, replayed by `tests/fuzz_corpus.rs`).
//! 2. **HTTP API** — `api`: the management API (login, users, AppKeys, certificates,
//!    mappings, credentials, settings, egress, CSDS, the P12 tester), `/openapi.json`, and,
//!    on a listener of its own (mutual TLS), the runtime snapshot feed Envoy's filter
//!    long-polls (`api::runtime`).
//! 3. **Domain** — the rules of what may be stored.
//!    - `credentials`: a credential request body checked and turned into typed settings and
//!      secrets.
//!    - `identity`: passwords (argon2id), user names, and the login tokens
//!      ([`identity::LoginTokens`], Ed25519 JWTs the filter verifies).
//!    - `p12test`: the P12 key tester's analysis.
//! 4. **State and delivery** — what every gateway should have, and getting it there.
//!    - `desired`: the desired state: clusters, secrets, mappings, callers.
//!    - `reconciler`: rebuilds the desired state when the store or the secret store changes.
//!    - `appkeys`: the live AppKey directory (with secrets, for the snapshot).
//!    - `credential_tokens`: obtains and renews the access tokens of OAuth 2.0 and Transfer
//!      to Messaging credentials.
//!    - `xds`: ADS (CDS + SDS) to Envoy, and which node acknowledged what; what a node
//!      refuses (NACKs) it records in `rejections` (a leaf), and the reconciler rebuilds
//!      without it.
//! 5. **Storage**.
//!    - `store`: metadata in SQL (SQLite).
//!    - `secret_store`: secret material behind the `SecretStore` trait (OpenBao / Vault KV
//!      v2 in production, in memory in tests) and the typed `Secrets` facade over it.
//! 6. **Leaf helpers** — no `crate::` imports above this layer.
//!    - `credential_kind`: the eight credential kinds and their typed settings and secrets.
//!    - `tls_versions`, `egress` (allowlisted host values), `oauth2` (the token-endpoint
//!      client and PKCE), `p12` and `keystore` (opening PKCS#12 and JKS), `key_pairing`
//!      (whether a private key belongs to its certificate), `keystore_budget`
//!      (the one budget of work and entries an uploaded key store may cost), `cpu_pool` (the
//!      bounded pool CPU-heavy request work runs on, off the async threads), `certinfo`,
//!      `secret` (a string that never prints), `clock`, `random`.
//!    - `address_policy` (which addresses mtlsgate may connect to for a tenant: internal
//!      ranges only where the operator allowed them, its own endpoints never) and
//!      `guarded_dns` (name lookups checked against it; who connects gets the checked
//!      addresses, never the name).
//!    - `pki` (the link CA and the certificates of control planes and gateways),
//!      `link_tls` (the mutual-TLS listeners of ADS and the feed: a gateway certificate of
//!      the link CA required, its node id read from it) and `server_tls` (TLS server
//!      configurations that follow their files, so certificates rotate without a restart,
//!      and the accept loop that hands each connection the current one).
//!
//! # From a mapping write to the gateway's decision
//! 1. `api::mappings` validates the body (URL, certificate and credential in the same
//!    account) and writes the row through `store` in one transaction; then it kicks the
//!    `reconciler`.
//! 2. The `reconciler` reads certificates, mappings and attached credentials from `store`
//!    and their material from `secret_store` (cached), resolves each target host through
//!    `guarded_dns`, and `desired::Desired::build` makes one cluster per (certificate, host,
//!    port, trust, TLS range) with the checked addresses as static endpoints, and one SDS
//!    secret per certificate. A mapping whose certificate material is not loaded, whose
//!    credential cannot be applied, or whose target is refused or does not resolve gets no
//!    cluster and is marked unavailable (`certificate_unavailable`, `credential_unavailable`,
//!    `target_not_allowed`, `target_unresolved`), never dropped.
//! 3. `xds` sends the new clusters and secrets to every connected Envoy (over mutual TLS, each
//!    stream only the node its certificate names) and records its ACKs.
//! 4. `api::runtime` serves each node a snapshot holding only the mappings whose cluster and
//!    secret that node has acknowledged (unavailable ones need nothing acknowledged).
//! 5. The filter (the `mtlsgate-filter` crate) polls that snapshot into shared data, and per
//!    request looks the (account, service, URL) triplet up and forwards, or refuses with the
//!    mapping's unavailable code, or `no_mtls_mapping`.

pub mod cli;
pub mod config;
pub mod serve;

#[doc(hidden)]
pub mod fuzzing;

mod address_policy;
mod api;
mod appkeys;
mod certinfo;
mod change_feed;
mod clock;
mod consistency;
mod cpu_pool;
mod credential_kind;
mod credential_tokens;
mod credentials;
mod desired;
mod egress;
mod guarded_dns;
mod identity;
mod key_pairing;
mod keystore;
mod keystore_budget;
mod link_tls;
mod oauth2;
mod p12;
mod p12test;
mod pki;
mod random;
mod reconciler;
mod rejections;
mod secret;
mod secret_store;
mod server_tls;
mod store;
mod tls_versions;
mod xds;

#[cfg(test)]
mod layering;
