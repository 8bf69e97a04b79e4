//! Per-client-IP throttling: a token bucket per IP address.
//!
//! Envoy runs the filter once per worker thread, and a client's requests land on any worker,
//! so the buckets live in proxy-wasm shared data: the glue reads an IP's [`Bucket`] as bytes,
//! calls [`take`], and writes the new bucket back with compare-and-swap (retrying on a
//! conflict). Everything here is therefore a pure function of the stored bytes, the time and
//! the limits.
//!
//! A shared-data round trip per request is the throttle's whole cost, so a worker may take a
//! few tokens ahead, a *lease* ([`Limits::take_leasing`], [`Leases`]): at most 1/32 of what is
//! left, valid [`LEASE_MS`]. The tokens leased are *reserved* beside the bucket until then, and
//! the bucket refills only up to the burst minus the reservation, so the tokens in the bucket
//! plus the tokens in valid leases never exceed the burst, and the refill rate is unchanged:
//! no client ever gets more than [`take`] would give it. A lease that runs out unused only
//! loses its tokens (a client may be refused up to 1/32 of its burst early, never late).
//!
//! Arithmetic is in integer milli-tokens and milliseconds: a rate of `r` tokens per second is
//! exactly `r` milli-tokens per millisecond. No floats, so the native tests and the wasm
//! filter compute the very same answers.

/// Requests per second per IP when nothing else is configured.
pub const DEFAULT_RATE_PER_SEC: u32 = 150;
/// Requests an idle IP may send at once when nothing else is configured: one second's worth.
pub const DEFAULT_BURST: u32 = 150;
/// The highest rate accepted. Far above what one IP should ever get; keeps arithmetic small.
pub const MAX_RATE_PER_SEC: u32 = 1_000_000;
/// The largest burst accepted.
pub const MAX_BURST: u32 = 1_000_000;

/// A clock that goes back by more than this is taken to have been reset (an NTP step), and
/// the bucket re-anchors to it; a smaller step back is jitter between workers' clock reads.
/// Neither grants a token.
pub const CLOCK_STEP_BACK_MS: u64 = 1_000;

const MILLI: u64 = 1_000;
const BUCKET_VERSION: u8 = 1;

/// The length of [`Bucket::to_bytes`].
pub const BUCKET_LEN: usize = 17;

/// Validated throttling limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    rate_per_sec: u32,
    burst: u32,
}

/// Why limits were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    #[error("the rate must be from 1 to {MAX_RATE_PER_SEC} requests per second")]
    Rate,
    #[error("the burst must be from 1 to {MAX_BURST} requests")]
    Burst,
}

impl Limits {
    pub fn new(rate_per_sec: u32, burst: u32) -> Result<Self, LimitsError> {
        if !(1..=MAX_RATE_PER_SEC).contains(&rate_per_sec) {
            return Err(LimitsError::Rate);
        }
        if !(1..=MAX_BURST).contains(&burst) {
            return Err(LimitsError::Burst);
        }
        Ok(Limits {
            rate_per_sec,
            burst,
        })
    }

    #[cfg(test)]
    pub fn rate_per_sec(&self) -> u32 {
        self.rate_per_sec
    }

    #[cfg(test)]
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// [`take`] with these limits.
    pub fn take(&self, bucket: Option<Bucket>, now_ms: u64) -> Decision {
        take(bucket, now_ms, self.rate_per_sec, self.burst)
    }

    /// [`Bucket::is_idle`] with these limits.
    pub fn is_idle(&self, bucket: &Bucket, now_ms: u64) -> bool {
        bucket.is_idle(now_ms, self.rate_per_sec, self.burst)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            rate_per_sec: DEFAULT_RATE_PER_SEC,
            burst: DEFAULT_BURST,
        }
    }
}

/// One IP's bucket: how many milli-tokens it held at `last_ms`, its last refill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    tokens_milli: u64,
    last_ms: u64,
}

/// The answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The bucket to store, whether or not the request was allowed.
    pub bucket: Bucket,
    /// For `Retry-After`: whole seconds until a request would be allowed, rounded up; 0 when
    /// allowed.
    pub retry_after_secs: u32,
}

impl Decision {
    /// This answer as a [`Throttle`] gives it: the bucket to store is the throttle's business.
    pub fn into_result(self) -> Result<(), Throttled> {
        if self.allowed {
            Ok(())
        } else {
            Err(Throttled {
                retry_after_secs: self.retry_after_secs,
            })
        }
    }
}

/// Where the buckets live, as [`crate::forward::on_request_headers`] sees them: in Envoy, in
/// proxy-wasm shared data across workers (the glue's `SharedThrottle`); in tests, a fake.
pub trait Throttle {
    /// Takes one token for `ip` at `now_ms` (Unix milliseconds) under `limits`; `Err` when
    /// the IP has none left.
    fn take(&mut self, ip: &str, limits: &Limits, now_ms: u64) -> Result<(), Throttled>;
}

/// A request refused because its IP sent too many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    /// Whole seconds until a request would be allowed, rounded up.
    pub retry_after_secs: u32,
}

impl Bucket {
    /// Whole tokens left, as of the last [`take`].
    pub fn tokens(&self) -> u64 {
        self.tokens_milli / MILLI
    }

    /// The stored form: a version byte, then the milli-tokens and the time in little-endian.
    pub fn to_bytes(self) -> [u8; BUCKET_LEN] {
        let mut out = [0u8; BUCKET_LEN];
        out[0] = BUCKET_VERSION;
        out[1..9].copy_from_slice(&self.tokens_milli.to_le_bytes());
        out[9..17].copy_from_slice(&self.last_ms.to_le_bytes());
        out
    }

    /// The bucket `to_bytes` wrote, or `None` for anything else (another version, another
    /// length, nothing): treated as no bucket, that is a fresh one. Out-of-range contents are
    /// clamped by [`take`].
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let bytes: &[u8; BUCKET_LEN] = bytes.try_into().ok()?;
        if bytes[0] != BUCKET_VERSION {
            return None;
        }
        let mut tokens = [0u8; 8];
        tokens.copy_from_slice(&bytes[1..9]);
        let mut last = [0u8; 8];
        last.copy_from_slice(&bytes[9..17]);
        Some(Bucket {
            tokens_milli: u64::from_le_bytes(tokens),
            last_ms: u64::from_le_bytes(last),
        })
    }

    /// Whether the bucket would be full at `now_ms`. A full bucket is exactly what a missing
    /// one means, so it can be forgotten without changing any later decision: this keeps the
    /// state to the IPs seen in the last `burst / rate` seconds.
    pub fn is_idle(&self, now_ms: u64, rate_per_sec: u32, burst: u32) -> bool {
        let (rate, capacity) = clamp(rate_per_sec, burst);
        refill(
            self.tokens_milli,
            now_ms.saturating_sub(self.last_ms),
            rate,
            capacity,
        ) >= capacity
    }
}

/// Takes one token from `bucket` (`None`: an IP with no stored bucket, which starts full) at
/// `now_ms` (any clock in milliseconds, the same for every caller). Out-of-range limits are
/// clamped into 1..=[`MAX_RATE_PER_SEC`] and 1..=[`MAX_BURST`]; use [`Limits`] to refuse them.
///
/// A clock that went back grants nothing: the time since the last refill counts as zero.
pub fn take(bucket: Option<Bucket>, now_ms: u64, rate_per_sec: u32, burst: u32) -> Decision {
    let (rate, capacity) = clamp(rate_per_sec, burst);
    take_up_to(bucket, now_ms, rate, capacity)
}

/// [`take`] with the rate in milli-tokens per millisecond and the bucket's ceiling in
/// milli-tokens.
fn take_up_to(bucket: Option<Bucket>, now_ms: u64, rate: u64, capacity: u64) -> Decision {
    let (tokens, last_ms) = match bucket {
        Some(b) => (b.tokens_milli.min(capacity), b.last_ms),
        None => (capacity, now_ms),
    };
    let (tokens, last_ms) = if now_ms >= last_ms {
        (refill(tokens, now_ms - last_ms, rate, capacity), now_ms)
    } else if last_ms - now_ms > CLOCK_STEP_BACK_MS {
        // why: the clock was reset. Re-anchor, or the bucket would not refill until the
        // clock caught up again, refusing the IP all that time.
        (tokens, now_ms)
    } else {
        // why: another worker read the clock a moment later and stored that. Keep its time,
        // or the same milliseconds would be refilled twice.
        (tokens, last_ms)
    };
    if tokens >= MILLI {
        return Decision {
            allowed: true,
            bucket: Bucket {
                tokens_milli: tokens - MILLI,
                last_ms,
            },
            retry_after_secs: 0,
        };
    }
    let wait_ms = (MILLI - tokens).div_ceil(rate);
    Decision {
        allowed: false,
        bucket: Bucket {
            tokens_milli: tokens,
            last_ms,
        },
        retry_after_secs: u32::try_from(wait_ms.div_ceil(1_000).max(1)).unwrap_or(u32::MAX),
    }
}

/// How long a lease is valid, milliseconds.
pub const LEASE_MS: u64 = 100;
/// A lease takes at most this fraction of the tokens left (1/32), so leases shrink to nothing
/// as a bucket runs low and the last tokens are taken one request at a time.
pub const LEASE_FRACTION: u64 = 32;

/// Tokens taken ahead by leases that may still be valid, stored beside a bucket: the bucket
/// refills only up to the burst minus these until `until_ms`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reserved {
    pub tokens: u64,
    pub until_ms: u64,
}

impl Reserved {
    /// The length of [`Reserved::to_bytes`].
    pub const LEN: usize = 16;

    /// Whole tokens still reserved at `now_ms`.
    pub fn at(&self, now_ms: u64) -> u64 {
        if now_ms < self.until_ms {
            self.tokens
        } else {
            0
        }
    }

    /// Little-endian tokens then time.
    pub fn to_bytes(self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[..8].copy_from_slice(&self.tokens.to_le_bytes());
        out[8..].copy_from_slice(&self.until_ms.to_le_bytes());
        out
    }

    /// What `to_bytes` wrote; `None` for another length.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let tokens = bytes.get(..8)?.try_into().ok().map(u64::from_le_bytes)?;
        let until_ms = bytes.get(8..16)?.try_into().ok().map(u64::from_le_bytes)?;
        (bytes.len() == Self::LEN).then_some(Reserved { tokens, until_ms })
    }
}

/// [`Limits::take_leasing`]'s answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeasingDecision {
    /// This request's answer and the bucket to store.
    pub decision: Decision,
    /// The reservation to store beside the bucket.
    pub reserved: Reserved,
    /// Whole tokens leased to the worker beyond this request's, valid until
    /// `now_ms + LEASE_MS` (0: none).
    pub lease: u64,
}

impl Limits {
    /// Takes a token like [`Limits::take`], with the bucket's ceiling lowered by what valid
    /// leases hold, and when allowed also leases up to 1/[`LEASE_FRACTION`] of the tokens
    /// left to the calling worker.
    pub fn take_leasing(
        &self,
        bucket: Option<Bucket>,
        reserved: Reserved,
        now_ms: u64,
    ) -> LeasingDecision {
        let (rate, capacity) = clamp(self.rate_per_sec, self.burst);
        let held = reserved.at(now_ms);
        let mut decision = take_up_to(
            bucket,
            now_ms,
            rate,
            capacity.saturating_sub(held.saturating_mul(MILLI)),
        );
        let mut reserved = Reserved {
            tokens: held,
            until_ms: if held > 0 { reserved.until_ms } else { 0 },
        };
        let lease = if decision.allowed {
            decision.bucket.tokens() / LEASE_FRACTION
        } else {
            0
        };
        if lease > 0 {
            decision.bucket.tokens_milli -= lease * MILLI;
            reserved = Reserved {
                tokens: held + lease,
                until_ms: reserved.until_ms.max(now_ms + LEASE_MS),
            };
        }
        LeasingDecision {
            decision,
            reserved,
            lease,
        }
    }

    /// Whether an IP's stored state can be forgotten without changing any later decision: a
    /// full bucket and no valid reservation.
    pub fn is_forgettable(&self, bucket: &Bucket, reserved: &Reserved, now_ms: u64) -> bool {
        reserved.at(now_ms) == 0 && self.is_idle(bucket, now_ms)
    }
}

/// One worker's leases: tokens it took ahead for an IP, spent without a shared-data round trip.
#[derive(Debug, Default)]
pub struct Leases {
    by_ip: std::collections::HashMap<String, (u64, u64)>,
}

/// IPs with a lease kept per worker; beyond, expired leases are dropped, then all of them
/// (dropping a lease only loses its tokens).
const LEASES_PER_WORKER: usize = 4096;

impl Leases {
    /// Spends one token of `ip`'s lease, if it holds a valid one.
    pub fn spend(&mut self, ip: &str, now_ms: u64) -> bool {
        match self.by_ip.get_mut(ip) {
            Some((tokens, until_ms)) if *tokens > 0 && now_ms < *until_ms => {
                *tokens -= 1;
                true
            }
            _ => false,
        }
    }

    /// Records a lease of `tokens` for `ip`, valid until `now_ms + LEASE_MS`.
    pub fn grant(&mut self, ip: &str, tokens: u64, now_ms: u64) {
        if tokens == 0 {
            self.by_ip.remove(ip);
            return;
        }
        if self.by_ip.len() >= LEASES_PER_WORKER && !self.by_ip.contains_key(ip) {
            self.by_ip
                .retain(|_, (left, until_ms)| *left > 0 && now_ms < *until_ms);
            if self.by_ip.len() >= LEASES_PER_WORKER {
                self.by_ip.clear();
            }
        }
        self.by_ip
            .insert(ip.to_owned(), (tokens, now_ms + LEASE_MS));
    }
}

/// The rate in milli-tokens per millisecond and the capacity in milli-tokens.
fn clamp(rate_per_sec: u32, burst: u32) -> (u64, u64) {
    (
        u64::from(rate_per_sec.clamp(1, MAX_RATE_PER_SEC)),
        u64::from(burst.clamp(1, MAX_BURST)) * MILLI,
    )
}

fn refill(tokens_milli: u64, elapsed_ms: u64, rate: u64, capacity: u64) -> u64 {
    tokens_milli
        .saturating_add(elapsed_ms.saturating_mul(rate))
        .min(capacity)
}

#[cfg(test)]
mod tests;
