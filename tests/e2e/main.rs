//! End-to-end tests: every test starts its own OpenBao (dev), control plane and Envoy with the
//! filter, plus a real HTTPS upstream that requires a client certificate, all on free loopback
//! ports. Nothing is mocked. A missing component fails the test loudly (run `scripts/test`,
//! which installs and builds everything first).

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;
mod pki;
mod tools;
mod upstream;

mod api_tls;
mod bad_material;
mod consistency;
mod contract;
mod credentials;
mod egress_guard;
mod forward;
mod isolation;
mod login_keys;
mod management;
mod oauth;
mod p12tester;
mod prefer_wait;
mod revocation;
mod runtime;
mod runtime_api;
mod server_databases;
mod slow_partner;
mod uploads;
mod vault_watch;
