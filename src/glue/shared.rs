//! Cross-worker state in proxy-wasm shared data: per-IP throttle buckets and OAuth1 nonces
//! (the nonces' shard choice and update rule live in the core, `crate::nonce`).
//!
//! Shared data cannot be listed or expired by the host, so each kind of state is split into a
//! fixed number of shards, each one key holding a small list that is pruned on every write:
//! memory stays bounded whatever the traffic. Updates use compare-and-swap and retry.

use std::cell::RefCell;

use proxy_wasm::hostcalls;
use proxy_wasm::types::Status;

use proxy_wasm::types::LogLevel;

use crate::auth::NonceGuard;
use crate::nonce::{self, NonceKey};
use crate::oauth1::Verified;
use crate::throttle::{
    Bucket, Decision, Leases, Limits, Reserved, Throttle, Throttled, BUCKET_LEN,
};

const THROTTLE_SHARDS: u64 = 1024;
/// Client IPs remembered per shard; an idle bucket (full again) is dropped first.
const THROTTLE_PER_SHARD: usize = 64;
const CAS_RETRIES: usize = 16;

/// FNV-1a, for shard selection (not security).
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Applies `update` to the value under `key` with compare-and-swap. `None` when the host kept
/// refusing (contention) or failed.
fn cas_update<T>(key: &str, mut update: impl FnMut(Option<&[u8]>) -> (Vec<u8>, T)) -> Option<T> {
    for _ in 0..CAS_RETRIES {
        let (value, cas) = hostcalls::get_shared_data(key).ok()?;
        let (new, result) = update(value.as_deref());
        match hostcalls::set_shared_data(key, Some(&new), cas) {
            Ok(()) => return Some(result),
            Err(Status::CasMismatch) => continue,
            Err(_) => return None,
        }
    }
    None
}

thread_local! {
    // why: a VM runs on one worker thread, so this is the worker's own state.
    static LEASES: RefCell<Leases> = RefCell::default();
}

/// The shared-data buckets, as the policy core's [`Throttle`].
pub(crate) struct SharedThrottle;

impl Throttle for SharedThrottle {
    fn take(&mut self, ip: &str, limits: &Limits, now_ms: u64) -> Result<(), Throttled> {
        throttle(ip, limits, now_ms).into_result()
    }
}

/// Takes a token for `ip`: from this worker's lease when it holds one (no shared-data round
/// trip), else from the IP's shared bucket, leasing a few more (see [`crate::throttle`]). When
/// shared data misbehaves the request is allowed: the throttle protects capacity, and refusing
/// everything would be worse.
fn throttle(ip: &str, limits: &Limits, now_ms: u64) -> Decision {
    if LEASES.with(|l| l.borrow_mut().spend(ip, now_ms)) {
        return Decision {
            allowed: true,
            bucket: limits.take(None, now_ms).bucket,
            retry_after_secs: 0,
        };
    }
    let key = format!("mtlsgate.t2.{}", fnv(ip.as_bytes()) % THROTTLE_SHARDS);
    let taken = cas_update(&key, |value| {
        let mut entries = decode_buckets(value.unwrap_or_default());
        let current = entries.iter().position(|(k, _, _)| k == ip);
        let (previous, reserved) = match current {
            Some(i) => (Some(entries[i].1), entries[i].2),
            None => (None, Reserved::default()),
        };
        let taken = limits.take_leasing(previous, reserved, now_ms);
        match current {
            Some(i) => {
                entries[i].1 = taken.decision.bucket;
                entries[i].2 = taken.reserved;
            }
            None => entries.push((ip.to_owned(), taken.decision.bucket, taken.reserved)),
        }
        entries.retain(|(k, b, r)| k == ip || !limits.is_forgettable(b, r, now_ms));
        while entries.len() > THROTTLE_PER_SHARD {
            // Still full of busy IPs: forget the first other one (its next request starts a
            // fresh, full bucket).
            match entries.iter().position(|(k, _, _)| k != ip) {
                Some(i) => {
                    entries.remove(i);
                }
                None => break,
            }
        }
        (encode_buckets(&entries), taken)
    });
    match taken {
        Some(taken) => {
            LEASES.with(|l| l.borrow_mut().grant(ip, taken.lease, now_ms));
            taken.decision
        }
        None => limits.take(None, now_ms),
    }
}

/// Shard layout: per IP, its length (one byte), the IP, the bucket, the reservation.
fn encode_buckets(entries: &[(String, Bucket, Reserved)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * (BUCKET_LEN + Reserved::LEN + 48));
    for (ip, b, r) in entries {
        let ip = ip.as_bytes();
        out.push(ip.len().min(255) as u8);
        out.extend_from_slice(&ip[..ip.len().min(255)]);
        out.extend_from_slice(&b.to_bytes());
        out.extend_from_slice(&r.to_bytes());
    }
    out
}

fn decode_buckets(mut bytes: &[u8]) -> Vec<(String, Bucket, Reserved)> {
    const ENTRY: usize = BUCKET_LEN + Reserved::LEN;
    let mut out = Vec::new();
    while let Some((&len, rest)) = bytes.split_first() {
        let len = usize::from(len);
        if rest.len() < len + ENTRY {
            break;
        }
        let ip = String::from_utf8_lossy(&rest[..len]).into_owned();
        let bucket = Bucket::from_bytes(&rest[len..len + BUCKET_LEN]);
        let reserved = Reserved::from_bytes(&rest[len + BUCKET_LEN..len + ENTRY]);
        if let (Some(b), Some(r)) = (bucket, reserved) {
            out.push((ip, b, r));
        }
        bytes = &rest[len + ENTRY..];
    }
    out
}

/// OAuth1 nonces shared by every worker: a replay is refused whichever worker it reaches.
/// The shard choice and the update rule are the core's ([`crate::nonce`]); this only reads
/// and compare-and-swaps the shard.
pub struct SharedNonces {
    pub window_secs: u64,
}

thread_local! {
    // why: read once per VM; the poller writes it once per Envoy start, before any snapshot
    // (and so any request this filter accepts) exists.
    static NONCE_KEY: RefCell<Option<NonceKey>> = const { RefCell::new(None) };
}

/// The Envoy's nonce hashing key, from shared data; `None` until the poller has made it.
fn nonce_key() -> Option<NonceKey> {
    NONCE_KEY.with(|k| {
        let mut k = k.borrow_mut();
        if k.is_none() {
            *k = hostcalls::get_shared_data(nonce::KEY_NAME)
                .ok()
                .and_then(|(v, _)| v)
                .and_then(|v| NonceKey::from_bytes(&v));
        }
        k.clone()
    })
}

/// Makes the Envoy's nonce hashing key unless one is there: called by the poller, the one
/// singleton per Envoy, so a single writer makes it and every worker reads the same.
pub(crate) fn ensure_nonce_key() -> Result<(), String> {
    let present = hostcalls::get_shared_data(nonce::KEY_NAME)
        .ok()
        .and_then(|(v, _)| v)
        .and_then(|v| NonceKey::from_bytes(&v))
        .is_some();
    if present {
        return Ok(());
    }
    let mut key = [0u8; nonce::KEY_LEN];
    getrandom::fill(&mut key).map_err(|e| format!("no randomness for the nonce key: {e}"))?;
    hostcalls::set_shared_data(nonce::KEY_NAME, Some(&key), None)
        .map_err(|e| format!("cannot store the nonce key: {e:?}"))
}

impl NonceGuard for SharedNonces {
    fn first_use(&mut self, v: &Verified, now: u64) -> bool {
        // Without the key no shard can be chosen the way the other workers do: refuse.
        let Some(key) = nonce_key() else {
            super::log(
                LogLevel::Warn,
                "no nonce key in shared data; OAuth1 refused",
            );
            return false;
        };
        let placement = key.place(v, now);
        let window = self.window_secs;
        cas_update(&placement.shard, |value| {
            nonce::record(value, placement.entry, now, window)
        })
        // If shared data fails, refuse: accepting could let a replay through.
        .unwrap_or(false)
    }
}
