//! The HTTP filter: one context per request, on every worker.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::UNIX_EPOCH;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, LogLevel, MapType, Status};

use super::shared::{SharedNonces, SharedThrottle};
use super::{log, SNAPSHOT_KEY, VERSION_KEY};
use crate::audit::Audit;
use crate::check_mapping::{self, Reply};
use crate::config::Settings;
use crate::forward::{self, Decision, Env, Incoming};
use crate::headers;
use crate::refusal::Refusal;
use crate::snapshot::{Index, SnapshotSource};

/// This worker's compiled copy of the snapshot, shared by its HTTP contexts.
#[derive(Default)]
pub(crate) struct SnapshotCache {
    index: Option<Rc<Index>>,
}

impl SnapshotCache {
    /// Brings the compiled index up to the version in shared data. Cheap when nothing
    /// changed: one read of the small version key.
    fn refresh(&mut self) {
        let version = hostcalls::get_shared_data(VERSION_KEY)
            .ok()
            .and_then(|(v, _)| v);
        let current = self.index.as_ref().map(|i| i.version().as_bytes());
        if version.is_some() && version.as_deref() != current {
            if let Ok((Some(body), _)) = hostcalls::get_shared_data(SNAPSHOT_KEY) {
                match Index::from_json(&body) {
                    Ok(index) => self.index = Some(Rc::new(index)),
                    // why: the poller validated it; if this still fails, keep serving the
                    // last good index rather than dropping every mapping.
                    Err(e) => log(LogLevel::Error, &format!("snapshot unreadable: {e}")),
                }
            }
        }
    }
}

impl SnapshotSource for SnapshotCache {
    fn current(&mut self) -> Option<&Index> {
        self.refresh();
        self.index.as_deref()
    }
}

/// A check-mapping request waiting for its body.
struct PendingCheck {
    account: String,
    version: check_mapping::Version,
    audit: Audit,
}

pub(crate) struct Filter {
    settings: Rc<Settings>,
    cache: Rc<RefCell<SnapshotCache>>,
    request_id: String,
    pending: Option<PendingCheck>,
}

impl Filter {
    pub(crate) fn new(settings: Rc<Settings>, cache: Rc<RefCell<SnapshotCache>>) -> Self {
        Filter {
            settings,
            cache,
            request_id: String::new(),
            pending: None,
        }
    }

    fn refuse(&self, refusal: &Refusal, audit: Option<&Audit>) -> Action {
        if let Some(a) = audit {
            record(a);
        }
        let body = refusal.body(&self.request_id);
        let mut answer_headers: Vec<(&str, &str)> = vec![("content-type", "application/json")];
        answer_headers.extend(refusal.headers.iter().map(|(k, v)| (*k, v.as_str())));
        let sent =
            hostcalls::send_http_response(u32::from(refusal.status), answer_headers, Some(&body));
        if let Err(e) = sent {
            log(LogLevel::Error, &format!("cannot send refusal: {e:?}"));
            let _ = hostcalls::reset_http_request();
        }
        Action::Pause
    }

    fn answer_check(&mut self, body: &[u8]) -> Action {
        let Some(pending) = self.pending.take() else {
            return Action::Continue;
        };
        let index = self.cache.borrow().index.clone();
        let reply = check_mapping::reply(
            index.as_deref(),
            body,
            pending.version,
            &pending.account,
            pending.audit,
        );
        match reply {
            Reply::Answer { json, audit } => {
                record(&audit);
                let sent = hostcalls::send_http_response(
                    200,
                    vec![("content-type", "application/json")],
                    Some(&json),
                );
                if sent.is_err() {
                    let _ = hostcalls::reset_http_request();
                }
                Action::Pause
            }
            Reply::Refuse(r, audit) => self.refuse(&r, Some(&audit)),
        }
    }
}

/// Writes the audit record where the access log reads it
/// (`%FILTER_STATE(wasm.mtlsgate_audit:PLAIN)%`): one property, one host call.
fn record(audit: &Audit) {
    let _ = hostcalls::set_property(vec![AUDIT_PROPERTY], Some(audit.to_json().as_bytes()));
}

/// The filter-state property holding the audit record (`wasm.` + this, for the access log).
const AUDIT_PROPERTY: &str = "mtlsgate_audit";

/// The host's clock, Unix milliseconds.
fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

/// The downstream peer's address as Envoy reports it (`ip:port`, `[v6]:port`); empty when
/// the host cannot say.
fn peer_address() -> String {
    hostcalls::get_property(vec!["source", "address"])
        .ok()
        .flatten()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

impl Context for Filter {}

impl HttpContext for Filter {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Ok(all) = hostcalls::get_map(MapType::HttpRequestHeaders) else {
            return self.refuse(&internal("cannot read request headers"), None);
        };
        let find = |name: &str| {
            all.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .unwrap_or_default()
        };
        self.request_id = find(headers::REQUEST_ID).to_owned();
        let peer = peer_address();
        // why: the cache stays borrowed only inside this block; answering a check mapping
        // (below) reads it again.
        let decision = {
            let mut snapshots = self.cache.borrow_mut();
            let mut nonces = SharedNonces {
                window_secs: self.settings.nonce_window_secs(),
            };
            let req = Incoming {
                method: find(":method"),
                path: find(":path"),
                authority: find(":authority"),
                headers: &all,
                peer: &peer,
            };
            let mut env = Env {
                settings: &self.settings,
                now_ms: now_ms(),
                throttle: &mut SharedThrottle,
                snapshots: &mut *snapshots,
                nonces: &mut nonces,
            };
            forward::on_request_headers(&req, &mut env)
        };
        match decision {
            Decision::PassThrough { remove } if remove.is_empty() => Action::Continue,
            Decision::PassThrough { remove } => match rewrite(&remove, &[]) {
                Ok(()) => Action::Continue,
                Err(_) => self.refuse(&internal("cannot rewrite request"), None),
            },
            Decision::Forward(f) => {
                // why: recorded before the route is picked again: the forward route matches
                // on this record (`wasm.mtlsgate_audit` starting `{"decision":"forwarded`),
                // which only this filter can write; a caller's header alone never routes.
                record(&f.audit);
                match rewrite(&f.remove, &f.set) {
                    Ok(()) => Action::Continue,
                    // Never let a half-rewritten request reach the router.
                    Err(_) => self.refuse(
                        &internal("cannot rewrite request"),
                        Some(&f.audit.clone().refused("internal")),
                    ),
                }
            }
            Decision::CheckMapping {
                remove,
                account,
                version,
                audit,
            } => {
                if !remove.is_empty() && rewrite(&remove, &[]).is_err() {
                    return self.refuse(&internal("cannot rewrite request"), None);
                }
                self.pending = Some(PendingCheck {
                    account,
                    version,
                    audit: *audit,
                });
                if end_of_stream {
                    return self.answer_check(b"");
                }
                // why: a Pause here would become StopAll in the host (proxy-wasm turns
                // StopIteration into StopAllIterationAndWatermark), and the body callbacks would
                // never run. The headers go on to Envoy's buffer filter, enabled on this route
                // only, which holds them from the router until the whole body is in; by then
                // this filter has answered.
                Action::Continue
            }
            Decision::Refuse(r, audit) => self.refuse(&r, Some(&audit)),
            Decision::RefuseUnaudited(r) => self.refuse(&r, None),
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.pending.is_none() {
            return Action::Continue;
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let body = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default();
        self.answer_check(&body)
    }
}

fn internal(message: &str) -> Refusal {
    Refusal::new(500, "internal", message)
}

/// Rewrites the request headers: removes `remove`, then sets `set`, then has Envoy pick the
/// route again. Stops at the first host error.
fn rewrite(remove: &[String], set: &[(&str, String)]) -> Result<(), Status> {
    for name in remove {
        hostcalls::remove_map_value(MapType::HttpRequestHeaders, name)?;
    }
    for (name, value) in set {
        hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value))?;
    }
    clear_route_cache()
}

/// Since Envoy 1.33 a header changed by wasm no longer re-selects the route by itself.
fn clear_route_cache() -> Result<(), Status> {
    hostcalls::call_foreign_function("clear_route_cache", None).map(|_| ())
}
