//! Per-client-IP throttling: a token bucket per IP address.
//!
//! Envoy runs the filter once per worker thread, and a client's requests land on any worker,
//! so the buckets live in proxy-wasm shared data: the glue reads an IP's [`Bucket`] as bytes,
//! calls [`take`], and writes the new bucket back with compare-and-swap (retrying on a
//! conflict). Everything here is therefore a pure function of the stored bytes, the time and
//! the limits.
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

    pub fn rate_per_sec(&self) -> u32 {
        self.rate_per_sec
    }

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

impl Bucket {
    /// Whole tokens left, as of the last [`take`].
    pub fn tokens(&self) -> u64 {
        self.tokens_milli / MILLI
    }

    /// The stored form: a version byte, then the milli-tokens and the time in little-endian.
    pub fn to_bytes(&self) -> [u8; BUCKET_LEN] {
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
