//! Cross-worker state in proxy-wasm shared data: per-IP throttle buckets and OAuth1 nonces.
//!
//! Shared data cannot be listed or expired by the host, so each kind of state is split into a
//! fixed number of shards, each one key holding a small list that is pruned on every write:
//! memory stays bounded whatever the traffic. Updates use compare-and-swap and retry.

use std::cell::RefCell;

use proxy_wasm::hostcalls;
use proxy_wasm::types::Status;

use crate::auth::NonceGuard;
use crate::oauth1::Verified;
use crate::throttle::{
    Bucket, Decision, Leases, Limits, Reserved, Throttle, Throttled, BUCKET_LEN,
};

const THROTTLE_SHARDS: u64 = 1024;
/// Client IPs remembered per shard; an idle bucket (full again) is dropped first.
const THROTTLE_PER_SHARD: usize = 64;
const NONCE_SHARDS: u64 = 256;
/// Nonces remembered per shard (×256 shards ≈ 130,000 within the window).
const NONCE_PER_SHARD: usize = 512;
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
pub struct SharedNonces {
    pub window_secs: u64,
}

impl NonceGuard for SharedNonces {
    fn first_use(&mut self, v: &Verified, now: u64) -> bool {
        let id = fnv(format!(
            "{}\0{}\0{}",
            v.consumer_key,
            v.token.as_deref().unwrap_or_default(),
            v.nonce
        )
        .as_bytes());
        let key = format!("mtlsgate.n.{}", id % NONCE_SHARDS);
        let window = self.window_secs;
        // Shard layout: floor (u64 LE), then (id u64, timestamp u64) pairs. A request at or
        // below the floor is refused: the floor rises when a full shard must drop live
        // entries, so a dropped nonce can never be replayed.
        cas_update(&key, |value| {
            let value = value.unwrap_or_default();
            let floor = value
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
                .unwrap_or(0);
            let mut entries: Vec<(u64, u64)> = value
                .get(8..)
                .unwrap_or_default()
                .chunks_exact(16)
                .filter_map(|c| {
                    Some((
                        u64::from_le_bytes(c[..8].try_into().ok()?),
                        u64::from_le_bytes(c[8..].try_into().ok()?),
                    ))
                })
                .filter(|(_, ts)| ts.saturating_add(window) >= now)
                .collect();
            let fresh = v.timestamp > floor
                && !entries.iter().any(|(i, ts)| *i == id && *ts == v.timestamp);
            let mut floor = floor;
            if fresh {
                entries.push((id, v.timestamp));
                if entries.len() > NONCE_PER_SHARD {
                    entries.sort_by_key(|(_, ts)| *ts);
                    let drop = entries.len() - NONCE_PER_SHARD;
                    floor = floor.max(entries[drop - 1].1);
                    entries.drain(..drop);
                }
            }
            let mut out = floor.to_le_bytes().to_vec();
            for (i, ts) in &entries {
                out.extend_from_slice(&i.to_le_bytes());
                out.extend_from_slice(&ts.to_le_bytes());
            }
            (out, fresh)
        })
        // If shared data fails, refuse: accepting could let a replay through.
        .unwrap_or(false)
    }
}
