//! The snapshot poller: one per Envoy (a singleton service on the main thread).

use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType};
use serde::Deserialize;

use super::{log, SNAPSHOT_KEY, VERSION_KEY};
use crate::snapshot::Snapshot;

const TICK: Duration = Duration::from_millis(100);
/// Longest pause between attempts after failures, in ticks.
const MAX_BACKOFF_TICKS: u32 = 50;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct PollerConfig {
    /// The static cluster that reaches the control plane's runtime feed: mutual TLS with this
    /// gateway's certificate, which is what proves the node (no token in the configuration,
    /// so none in Envoy's `/config_dump` either).
    cluster: String,
    /// `:authority` for the callout; Envoy requires one.
    #[serde(default = "default_authority")]
    authority: String,
    /// This Envoy's node id, as it presents itself over ADS: the control plane gates the
    /// snapshot on what this node has acknowledged.
    node: String,
    #[serde(default = "default_path")]
    path: String,
    /// How long the control plane may hold a poll open when nothing changed.
    #[serde(default = "default_wait")]
    wait_seconds: u64,
}

fn default_authority() -> String {
    "mtlsgate-control".into()
}
fn default_path() -> String {
    "/v1/runtime/snapshot".into()
}
fn default_wait() -> u64 {
    30
}

pub(crate) struct Poller {
    cfg: PollerConfig,
    in_flight: Option<u32>,
    version: String,
    failures: u32,
    wait_ticks: u32,
}

impl Poller {
    pub(crate) fn new(cfg: PollerConfig) -> Result<Self, String> {
        if cfg.cluster.is_empty() || cfg.node.is_empty() {
            return Err("cluster and node must not be empty".into());
        }
        if !(1..=300).contains(&cfg.wait_seconds) {
            return Err("waitSeconds must be from 1 to 300".into());
        }
        if let Err(e) = hostcalls::set_tick_period(TICK) {
            return Err(format!("cannot set tick period: {e:?}"));
        }
        // why: the poller is the one singleton per Envoy, so it alone makes the nonce
        // hashing key every worker must share (shared data has no create-if-absent).
        super::shared::ensure_nonce_key()?;
        Ok(Poller {
            cfg,
            in_flight: None,
            version: String::new(),
            failures: 0,
            wait_ticks: 0,
        })
    }

    pub(crate) fn on_tick(&mut self) {
        if self.in_flight.is_some() {
            return;
        }
        if self.wait_ticks > 0 {
            self.wait_ticks -= 1;
            return;
        }
        let path = format!(
            "{}?node={}&version={}&waitSeconds={}",
            self.cfg.path,
            encode(&self.cfg.node),
            encode(&self.version),
            self.cfg.wait_seconds
        );
        let headers = vec![
            (":method", "GET"),
            (":path", path.as_str()),
            (":authority", self.cfg.authority.as_str()),
        ];

        let timeout = Duration::from_secs(self.cfg.wait_seconds + 10);
        match hostcalls::dispatch_http_call(&self.cfg.cluster, headers, None, vec![], timeout) {
            Ok(token) => self.in_flight = Some(token),
            Err(e) => {
                log(LogLevel::Warn, &format!("snapshot poll not sent: {e:?}"));
                self.back_off();
            }
        }
    }

    pub(crate) fn on_response(&mut self, token: u32, _num_headers: usize, body_size: usize) {
        if self.in_flight != Some(token) {
            return;
        }
        self.in_flight = None;
        let status = hostcalls::get_map_value(MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten();
        match status.as_deref() {
            Some("200") => {}
            // Held open until the wait ran out with nothing new: poll again at once.
            Some("304") => {
                self.failures = 0;
                self.on_tick();
                return;
            }
            other => {
                log(
                    LogLevel::Warn,
                    &format!("snapshot poll failed: status {other:?}"),
                );
                self.back_off();
                return;
            }
        }
        let body = match hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size) {
            Ok(Some(b)) => b,
            _ => {
                log(LogLevel::Warn, "snapshot poll answered without a body");
                self.back_off();
                return;
            }
        };
        // Validate before publishing: a snapshot the workers cannot read must never replace
        // the last good one.
        let snapshot: Snapshot = match serde_json::from_slice(&body) {
            Ok(s) => s,
            Err(e) => {
                log(
                    LogLevel::Error,
                    &format!("snapshot rejected, keeping the last good one: {e}"),
                );
                self.back_off();
                return;
            }
        };
        let published =
            hostcalls::set_shared_data(SNAPSHOT_KEY, Some(&body), None).and_then(|_| {
                hostcalls::set_shared_data(VERSION_KEY, Some(snapshot.version.as_bytes()), None)
            });
        match published {
            Ok(()) => {
                log(
                    LogLevel::Info,
                    &format!(
                        "snapshot {} loaded: {} mappings",
                        snapshot.version,
                        snapshot.mappings.len()
                    ),
                );
                self.version = snapshot.version;
                self.failures = 0;
                // why: poll again at once; waiting for the next tick delays a change made
                // right after this one by up to a tick (docs/benchmarks.md). The poll carries
                // the version just published to the workers, which the control plane takes as
                // proof that this gateway enforces it (`Prefer: wait`): publish, then poll.
                self.on_tick();
            }
            Err(e) => {
                log(LogLevel::Error, &format!("cannot publish snapshot: {e:?}"));
                self.back_off();
            }
        }
    }

    fn back_off(&mut self) {
        self.failures = self.failures.saturating_add(1);
        self.wait_ticks = 2u32
            .saturating_pow(self.failures.min(6))
            .min(MAX_BACKOFF_TICKS);
    }
}

/// Percent-encodes a query value (everything but RFC 3986 unreserved characters).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
