//! OAuth1 nonces shared by every worker of one Envoy: which shard of shared data a nonce is
//! kept in, and how a shard is updated. The glue (`glue/shared.rs`) only reads a shard and
//! writes it back with compare-and-swap; every rule is here, tested natively.
//!
//! why (issue 11, finding 8): shards used to be chosen by an unkeyed hash, and a full shard
//! raised one floor for everyone in it, so one AppKey holder could aim nonces (with
//! timestamps up to the allowed skew in the future) at every shard and make all other
//! tenants' requests fail as replays. Now:
//! - the shard is chosen by a keyed hash (HMAC-SHA256 with a key random per Envoy start,
//!   made once by the poller and shared by every worker), first of the AppKey (its group of
//!   shards), then of the nonce inside the group: nobody can aim at a shard, and one
//!   AppKey's nonces stay in its own group;
//! - a shard keeps one floor per AppKey, and when full it drops the oldest nonce of the AppKey
//!   holding the most entries there, raising only that AppKey's floor: a flood makes only the
//!   flooder's own old nonces refused;
//! - a timestamp is stored as at most `now`: one in the future (within the skew the signature
//!   check allows) cannot lift any floor above the present.
//!
//! Memory stays bounded: `GROUPS × SHARDS_PER_GROUP` (256) shards of at most [`PER_SHARD`] entries and
//! [`FLOORS_PER_SHARD`] floors.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::oauth1::Verified;

#[cfg(test)]
mod tests;

/// Groups of shards; an AppKey's nonces all go to one group.
pub const GROUPS: u64 = 32;
/// Shards per group: an AppKey keeps up to `SHARDS_PER_GROUP × PER_SHARD` nonces in flight.
pub const SHARDS_PER_GROUP: u64 = 8;
/// Nonces remembered per shard.
pub const PER_SHARD: usize = 512;
/// AppKey floors remembered per shard; beyond, the lowest is folded into the shard's common
/// floor (see [`record`]).
pub const FLOORS_PER_SHARD: usize = 64;
/// Length of the hashing key.
pub const KEY_LEN: usize = 32;

/// Shared-data key of the hashing key (made by the poller, read by every worker).
pub const KEY_NAME: &str = "mtlsgate.nonce-key";

/// The key shard choices and nonce ids are hashed with: random per Envoy start, the same
/// for all its workers (they must all pick the same shard for a nonce).
#[derive(Clone)]
pub struct NonceKey([u8; KEY_LEN]);

impl std::fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NonceKey(..)")
    }
}

/// Where a request's nonce is kept and what is stored for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The shard's shared-data key.
    pub shard: String,
    pub entry: Entry,
}

/// One remembered nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Keyed hash of the AppKey (consumer key).
    pub appkey: u64,
    /// Keyed hash of (consumer key, token, nonce, timestamp).
    pub id: u64,
    /// The request's timestamp, at most the gateway's `now`.
    pub timestamp: u64,
}

impl NonceKey {
    /// From the shared-data value; `None` unless exactly [`KEY_LEN`] bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(NonceKey)
    }

    /// HMAC-SHA256 of the length-prefixed parts, truncated to 64 bits.
    fn hash(&self, parts: &[&[u8]]) -> u64 {
        let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0) else {
            return 0; // unreachable: HMAC takes any key length
        };
        for p in parts {
            mac.update(&(p.len() as u64).to_le_bytes());
            mac.update(p);
        }
        let out = mac.finalize().into_bytes();
        let mut first = [0u8; 8];
        first.copy_from_slice(&out[..8]);
        u64::from_le_bytes(first)
    }

    /// Where `v`'s nonce goes, and the entry to store, as of `now`.
    pub fn place(&self, v: &Verified, now: u64) -> Placement {
        let appkey = self.hash(&[b"appkey", v.consumer_key.as_bytes()]);
        let id = self.hash(&[
            b"nonce",
            v.consumer_key.as_bytes(),
            v.token.as_deref().unwrap_or_default().as_bytes(),
            v.nonce.as_bytes(),
            &v.timestamp.to_le_bytes(),
        ]);
        let group = appkey % GROUPS;
        let within = id % SHARDS_PER_GROUP;
        Placement {
            shard: format!("mtlsgate.n3.{}", group * SHARDS_PER_GROUP + within),
            entry: Entry {
                appkey,
                id,
                timestamp: v.timestamp.min(now),
            },
        }
    }
}

/// A shard, decoded.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Shard {
    /// Applies to AppKeys without a floor of their own (floors folded in when too many).
    common_floor: u64,
    /// (AppKey, floor): a nonce of that AppKey at or below it is refused.
    floors: Vec<(u64, u64)>,
    entries: Vec<Entry>,
}

const U64: usize = 8;
const ENTRY_LEN: usize = 3 * U64;
const FLOOR_LEN: usize = 2 * U64;

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    let b: [u8; U64] = bytes.get(at..at.checked_add(U64)?)?.try_into().ok()?;
    Some(u64::from_le_bytes(b))
}

impl Shard {
    /// Layout: common floor, number of floors (u64), floors (AppKey, floor), then entries
    /// (AppKey, id, timestamp); all u64 little-endian. A value that does not decode is an
    /// empty shard (only this code writes them).
    fn decode(bytes: &[u8]) -> Shard {
        let read = || -> Option<Shard> {
            let common_floor = u64_at(bytes, 0)?;
            let n = usize::try_from(u64_at(bytes, U64)?).ok()?;
            let floors_end = n.checked_mul(FLOOR_LEN)?.checked_add(2 * U64)?;
            let floors = bytes
                .get(2 * U64..floors_end)?
                .chunks_exact(FLOOR_LEN)
                .filter_map(|c| Some((u64_at(c, 0)?, u64_at(c, U64)?)))
                .collect();
            let entries = bytes
                .get(floors_end..)?
                .chunks_exact(ENTRY_LEN)
                .filter_map(|c| {
                    Some(Entry {
                        appkey: u64_at(c, 0)?,
                        id: u64_at(c, U64)?,
                        timestamp: u64_at(c, 2 * U64)?,
                    })
                })
                .collect();
            Some(Shard {
                common_floor,
                floors,
                entries,
            })
        };
        read().unwrap_or_default()
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            2 * U64 + self.floors.len() * FLOOR_LEN + self.entries.len() * ENTRY_LEN,
        );
        out.extend_from_slice(&self.common_floor.to_le_bytes());
        out.extend_from_slice(&(self.floors.len() as u64).to_le_bytes());
        for (k, f) in &self.floors {
            out.extend_from_slice(&k.to_le_bytes());
            out.extend_from_slice(&f.to_le_bytes());
        }
        for e in &self.entries {
            out.extend_from_slice(&e.appkey.to_le_bytes());
            out.extend_from_slice(&e.id.to_le_bytes());
            out.extend_from_slice(&e.timestamp.to_le_bytes());
        }
        out
    }

    fn floor_of(&self, appkey: u64) -> u64 {
        self.floors
            .iter()
            .find(|(k, _)| *k == appkey)
            .map_or(self.common_floor, |(_, f)| *f)
    }

    fn raise_floor(&mut self, appkey: u64, to: u64) {
        match self.floors.iter_mut().find(|(k, _)| *k == appkey) {
            Some((_, f)) => *f = (*f).max(to),
            None => {
                let f = self.common_floor.max(to);
                self.floors.push((appkey, f));
            }
        }
    }

    /// Drops the oldest entry of the AppKey holding the most entries (ties: the one whose
    /// oldest entry is older) and raises that AppKey's floor to it.
    fn evict_one(&mut self) {
        let mut counts: Vec<(u64, usize, u64)> = Vec::new(); // (AppKey, entries, oldest)
        for e in &self.entries {
            match counts.iter_mut().find(|(k, _, _)| *k == e.appkey) {
                Some((_, n, oldest)) => {
                    *n += 1;
                    *oldest = (*oldest).min(e.timestamp);
                }
                None => counts.push((e.appkey, 1, e.timestamp)),
            }
        }
        let Some(&(victim, _, _)) = counts
            .iter()
            .max_by(|a, b| a.1.cmp(&b.1).then(b.2.cmp(&a.2)))
        else {
            return;
        };
        let Some(at) = self
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.appkey == victim)
            .min_by_key(|(_, e)| e.timestamp)
            .map(|(i, _)| i)
        else {
            return;
        };
        let dropped = self.entries.remove(at);
        self.raise_floor(victim, dropped.timestamp);
    }
}

/// Applies a request to a shard's stored value (`None`: the shard is empty): answers the
/// value to store and whether the nonce is fresh (false: a replay, or at or below its
/// AppKey's floor). `window_secs` is how long a nonce must be remembered (at least the
/// timestamp skew the signature check allows, plus the same again for future timestamps).
pub fn record(stored: Option<&[u8]>, entry: Entry, now: u64, window_secs: u64) -> (Vec<u8>, bool) {
    let mut shard = stored.map(Shard::decode).unwrap_or_default();
    let live = |ts: u64| ts.saturating_add(window_secs) >= now;
    shard.entries.retain(|e| live(e.timestamp));
    // A floor older than the window refuses nothing the timestamp check lets through.
    shard.floors.retain(|(_, f)| live(*f));
    if !live(shard.common_floor) {
        shard.common_floor = 0;
    }
    let timestamp = entry.timestamp.min(now);
    let fresh = timestamp > shard.floor_of(entry.appkey)
        && !shard
            .entries
            .iter()
            .any(|e| e.appkey == entry.appkey && e.id == entry.id);
    if fresh {
        shard.entries.push(Entry { timestamp, ..entry });
        while shard.entries.len() > PER_SHARD {
            shard.evict_one();
        }
        // why: floors are bounded too. Folding the lowest into the common floor keeps every
        // dropped nonce refused (fail closed); it reaches other AppKeys only when more than
        // FLOORS_PER_SHARD AppKeys of this shard's group overflowed it within one window.
        while shard.floors.len() > FLOORS_PER_SHARD {
            let Some(lowest) = shard
                .floors
                .iter()
                .enumerate()
                .min_by_key(|(_, (_, f))| *f)
                .map(|(i, _)| i)
            else {
                break;
            };
            let (_, f) = shard.floors.remove(lowest);
            shard.common_floor = shard.common_floor.max(f);
        }
    }
    (shard.encode(), fresh)
}
