//! The HTTP filter: one context per request, on every worker.

use std::cell::RefCell;
use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel, MapType};

use super::{log, SNAPSHOT_KEY, VERSION_KEY};
use crate::forward::{self, Decision, Request};
use crate::headers;
use crate::refusal::Refusal;
use crate::snapshot::Index;

/// This worker's compiled copy of the snapshot, shared by its HTTP contexts.
#[derive(Default)]
pub(crate) struct SnapshotCache {
    index: Option<Rc<Index>>,
}

impl SnapshotCache {
    /// Brings the compiled index up to the version in shared data. Cheap when nothing
    /// changed: one read of the small version key.
    fn refresh(&mut self) -> Option<Rc<Index>> {
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
        self.index.clone()
    }
}

pub(crate) struct Filter {
    cache: Rc<RefCell<SnapshotCache>>,
}

impl Filter {
    pub(crate) fn new(cache: Rc<RefCell<SnapshotCache>>) -> Self {
        Filter { cache }
    }

    fn refuse(&self, refusal: &Refusal, request_id: &str) -> Action {
        let body = refusal.body(request_id);
        let sent = hostcalls::send_http_response(
            u32::from(refusal.status),
            vec![("content-type", "application/json")],
            Some(&body),
        );
        if let Err(e) = sent {
            log(LogLevel::Error, &format!("cannot send refusal: {e:?}"));
            let _ = hostcalls::reset_http_request();
        }
        Action::Pause
    }
}

impl Context for Filter {}

impl HttpContext for Filter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Ok(all) = hostcalls::get_map(MapType::HttpRequestHeaders) else {
            return self.refuse(&internal("cannot read request headers"), "");
        };
        let find = |name: &str| {
            all.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .unwrap_or_default()
        };
        let request_id = find(headers::REQUEST_ID).to_owned();
        let index = self.cache.borrow_mut().refresh();
        let req = Request {
            method: find(":method"),
            path: find(":path"),
            headers: &all,
        };
        match forward::decide(&req, index.as_deref()) {
            Decision::PassThrough { remove } => {
                if remove.is_empty() {
                    return Action::Continue;
                }
                let applied = remove
                    .iter()
                    .try_for_each(|name| {
                        hostcalls::remove_map_value(MapType::HttpRequestHeaders, name)
                    })
                    .and_then(|_| clear_route_cache());
                match applied {
                    Ok(()) => Action::Continue,
                    Err(_) => self.refuse(&internal("cannot rewrite request"), &request_id),
                }
            }
            Decision::Forward(f) => {
                let applied = f
                    .remove
                    .iter()
                    .try_for_each(|name| {
                        hostcalls::remove_map_value(MapType::HttpRequestHeaders, name)
                    })
                    .and_then(|_| {
                        f.set.iter().try_for_each(|(name, value)| {
                            hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value))
                        })
                    })
                    .and_then(|_| clear_route_cache());
                match applied {
                    Ok(()) => Action::Continue,
                    // Never let a half-rewritten request reach the router.
                    Err(_) => self.refuse(&internal("cannot rewrite request"), &request_id),
                }
            }
            Decision::Refuse(r) => self.refuse(&r, &request_id),
        }
    }
}

fn internal(message: &str) -> Refusal {
    Refusal::new(500, "internal", message)
}

/// Since Envoy 1.33 a header changed by wasm no longer re-selects the route by itself.
fn clear_route_cache() -> Result<(), proxy_wasm::types::Status> {
    hostcalls::call_foreign_function("clear_route_cache", None).map(|_| ())
}
