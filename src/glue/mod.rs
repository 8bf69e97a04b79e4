//! The proxy-wasm glue: the only code that talks to Envoy. It translates host callbacks into
//! calls to the policy core and applies the answers; there is no policy here.
//!
//! One `.wasm` plays two roles, chosen by its plugin configuration:
//! - `poller`, loaded once per Envoy as a singleton bootstrap service: long-polls the control
//!   plane for the runtime snapshot and publishes it in shared data (same `vm_id`);
//! - `filter`, the HTTP filter on every worker: reads the snapshot's small version key per
//!   request and re-compiles the snapshot only when the version changes.
//!
//! The SDK's trait helpers `unwrap()` every host call; this glue calls `hostcalls` directly and
//! fails closed on any host error.

mod filter;
mod poller;
mod shared;

use std::cell::RefCell;
use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType, LogLevel};
use serde::Deserialize;

use crate::config::{FilterConfig, Settings};

/// Shared-data key holding the snapshot JSON as the control plane sent it.
pub(crate) const SNAPSHOT_KEY: &str = "mtlsgate.snapshot";
/// Shared-data key holding only the snapshot's version: small, so reading it per request is
/// cheap (`get_shared_data` copies the value into the VM).
pub(crate) const VERSION_KEY: &str = "mtlsgate.snapshot.version";

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    std::panic::set_hook(Box::new(|info| {
        let _ = hostcalls::log(LogLevel::Critical, &format!("mtlsgate: panic: {info}"));
    }));
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

pub(crate) fn log(level: LogLevel, msg: &str) {
    let _ = hostcalls::log(level, &format!("mtlsgate: {msg}"));
}

/// The plugin configuration, one per role.
#[derive(Debug, Deserialize)]
#[serde(tag = "role", rename_all = "camelCase", deny_unknown_fields)]
enum Config {
    Filter(FilterConfig),
    Poller(poller::PollerConfig),
}

#[derive(Default)]
struct Root {
    role: Option<Role>,
}

enum Role {
    Filter(Rc<Settings>, Rc<RefCell<filter::SnapshotCache>>),
    Poller(poller::Poller),
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        if let Some(Role::Poller(p)) = &mut self.role {
            p.on_response(token_id, num_headers, body_size);
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, size: usize) -> bool {
        let raw = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, size) {
            Ok(Some(raw)) => raw,
            Ok(None) => b"{\"role\":\"filter\"}".to_vec(),
            Err(e) => {
                log(
                    LogLevel::Critical,
                    &format!("cannot read plugin configuration: {e:?}"),
                );
                return false;
            }
        };
        // why: an invalid filter configuration compiles into a filter that refuses every
        // request with 503 (fail closed, and visible), rather than one Envoy drops.
        let parsed = serde_json::from_slice::<Config>(&raw).map_err(|e| e.to_string());
        match parsed {
            Ok(Config::Filter(cfg)) => {
                let settings = Settings::try_from(cfg).unwrap_or_else(|e| {
                    log(
                        LogLevel::Critical,
                        &format!("invalid filter configuration, refusing every request: {e}"),
                    );
                    Settings::invalid()
                });
                self.role = Some(Role::Filter(Rc::new(settings), Rc::default()));
                true
            }
            Ok(Config::Poller(cfg)) => match poller::Poller::new(cfg) {
                Ok(p) => {
                    self.role = Some(Role::Poller(p));
                    true
                }
                Err(e) => {
                    log(
                        LogLevel::Critical,
                        &format!("invalid poller configuration: {e}"),
                    );
                    false
                }
            },
            Err(e) => {
                log(
                    LogLevel::Critical,
                    &format!("invalid plugin configuration, refusing every request: {e}"),
                );
                self.role = Some(Role::Filter(Rc::new(Settings::invalid()), Rc::default()));
                true
            }
        }
    }

    fn on_tick(&mut self) {
        if let Some(Role::Poller(p)) = &mut self.role {
            p.on_tick();
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        match &self.role {
            Some(Role::Filter(settings, cache)) => Some(Box::new(filter::Filter::new(
                settings.clone(),
                cache.clone(),
            ))),
            // A filter whose configuration failed never gets here (Envoy rejected it);
            // a poller is never asked for HTTP contexts.
            _ => None,
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
