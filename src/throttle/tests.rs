use std::collections::HashMap;

use wasm_bindgen_test::wasm_bindgen_test;

use super::*;

const T0: u64 = 1_700_000_000_000;

/// Sends `n` requests at `now_ms`, storing the bucket as the glue would; returns how many
/// were allowed.
fn burst_at(stored: &mut Option<Bucket>, now_ms: u64, n: u32, rate: u32, burst: u32) -> u32 {
    let mut allowed = 0;
    for _ in 0..n {
        let d = take(*stored, now_ms, rate, burst);
        *stored = Some(d.bucket);
        allowed += u32::from(d.allowed);
    }
    allowed
}

#[wasm_bindgen_test(unsupported = test)]
fn exactly_burst_requests_pass_at_once() {
    for (rate, burst) in [(150, 150), (10, 25), (1, 1), (1000, 3)] {
        let mut b = None;
        assert_eq!(burst_at(&mut b, T0, burst, rate, burst), burst);
        let d = take(b, T0, rate, burst);
        assert!(!d.allowed, "rate {rate} burst {burst}");
        assert_eq!(d.bucket.tokens(), 0);
        assert_eq!(burst_at(&mut b, T0, 100, rate, burst), 0);
    }
    let d = Limits::default().take(None, T0);
    assert!(d.allowed);
    assert_eq!(d.bucket.tokens(), 149);
}

#[wasm_bindgen_test(unsupported = test)]
fn refill_follows_the_rate_exactly() {
    // 150/s: one token every 6.67 ms, so 20 ms refill 3 tokens (3000 of 3000 milli-tokens).
    let mut b = None;
    assert_eq!(burst_at(&mut b, T0, 150, 150, 150), 150);
    assert_eq!(burst_at(&mut b, T0 + 6, 10, 150, 150), 0);
    assert_eq!(burst_at(&mut b, T0 + 7, 10, 150, 150), 1);
    assert_eq!(burst_at(&mut b, T0 + 20, 10, 150, 150), 2);
    // A full second later: 150 again, never more than the burst.
    assert_eq!(burst_at(&mut b, T0 + 1_020, 1_000, 150, 150), 150);
    assert_eq!(burst_at(&mut b, T0 + 1_000_000, 1_000, 150, 150), 150);

    // Sustained: one request per 100 ms at 10/s with burst 1 always passes, and a second
    // request in the same 100 ms never does.
    let mut b = None;
    for i in 0..100 {
        assert_eq!(burst_at(&mut b, T0 + i * 100, 2, 10, 1), 1, "step {i}");
    }
    // Over 10 s at 150/s with burst 150, at most 150 + 10 * 150 pass.
    let mut b = None;
    let mut allowed = 0;
    for ms in (0..10_000).step_by(5) {
        allowed += burst_at(&mut b, T0 + ms, 2, 150, 150);
    }
    assert_eq!(allowed, 150 + 1_499);
}

#[wasm_bindgen_test(unsupported = test)]
fn retry_after_is_the_wait_for_one_token_rounded_up() {
    // Burst exhausted at 150/s: the next token is 7 ms away; Retry-After says 1 s.
    let mut b = None;
    burst_at(&mut b, T0, 150, 150, 150);
    let d = take(b, T0, 150, 150);
    assert_eq!((d.allowed, d.retry_after_secs), (false, 1));
    // 1/s, just used: 1 s. 999 ms later: still 1 (1 ms, rounded up).
    let d = take(None, T0, 1, 1);
    assert_eq!((d.allowed, d.retry_after_secs), (true, 0));
    let d = take(Some(d.bucket), T0 + 999, 1, 1);
    assert_eq!((d.allowed, d.retry_after_secs), (false, 1));
    let d = take(Some(d.bucket), T0 + 1_000, 1, 1);
    assert_eq!((d.allowed, d.retry_after_secs), (true, 0));
}

#[wasm_bindgen_test(unsupported = test)]
fn a_refused_request_costs_nothing() {
    let mut b = None;
    burst_at(&mut b, T0, 1, 1, 1);
    // Hammering while empty does not push the next token further away.
    assert_eq!(burst_at(&mut b, T0 + 500, 1_000, 1, 1), 0);
    assert_eq!(burst_at(&mut b, T0 + 1_000, 1, 1, 1), 1);
}

#[wasm_bindgen_test(unsupported = test)]
fn keys_are_independent() {
    let mut buckets: HashMap<&str, Bucket> = HashMap::new();
    let mut hit = |ip: &'static str, now: u64| {
        let d = take(buckets.get(ip).copied(), now, 2, 2);
        buckets.insert(ip, d.bucket);
        d.allowed
    };
    assert!(hit("192.0.2.1", T0));
    assert!(hit("192.0.2.1", T0));
    assert!(!hit("192.0.2.1", T0));
    assert!(hit("2001:db8::1", T0));
    assert!(hit("2001:db8::1", T0));
    assert!(!hit("2001:db8::1", T0));
    assert!(!hit("192.0.2.1", T0 + 499));
    assert!(hit("192.0.2.1", T0 + 500));
    assert!(!hit("2001:db8::1", T0 + 499));
}

#[wasm_bindgen_test(unsupported = test)]
fn a_clock_going_back_grants_nothing_and_never_panics() {
    // Jitter: another worker stored a slightly later time.
    let mut b = None;
    burst_at(&mut b, T0 + 10, 5, 1, 5);
    assert_eq!(burst_at(&mut b, T0, 5, 1, 5), 0);
    let stored = b.map(|b| b.to_bytes());
    // Back at the stored time, then one refill second later: exactly one token.
    assert_eq!(burst_at(&mut b, T0 + 10, 5, 1, 5), 0);
    assert_eq!(burst_at(&mut b, T0 + 1_009, 5, 1, 5), 0);
    assert_eq!(burst_at(&mut b, T0 + 1_010, 5, 1, 5), 1);
    assert_eq!(
        stored.and_then(|s| Bucket::from_bytes(&s)),
        Some(Bucket {
            tokens_milli: 0,
            last_ms: T0 + 10,
        })
    );

    // A reset: the clock jumps back an hour. Nothing is granted, and the bucket refills at
    // the normal rate from the new time instead of freezing for an hour.
    let mut b = None;
    burst_at(&mut b, T0, 5, 1, 5);
    let back = T0 - 3_600_000;
    assert_eq!(burst_at(&mut b, back, 5, 1, 5), 0);
    assert_eq!(burst_at(&mut b, back + 999, 5, 1, 5), 0);
    assert_eq!(burst_at(&mut b, back + 1_000, 5, 1, 5), 1);
    // And when the clock comes forward again, the real elapsed time counts, no more.
    assert_eq!(burst_at(&mut b, back + 2_000, 5, 1, 5), 1);

    // Extremes.
    for now in [0, 1, u64::MAX - 1, u64::MAX] {
        for stored in [
            None,
            Some(Bucket {
                tokens_milli: u64::MAX,
                last_ms: 0,
            }),
            Some(Bucket {
                tokens_milli: u64::MAX,
                last_ms: u64::MAX,
            }),
            Some(Bucket {
                tokens_milli: 0,
                last_ms: u64::MAX,
            }),
        ] {
            for (rate, burst) in [(0, 0), (1, 1), (u32::MAX, u32::MAX)] {
                let d = take(stored, now, rate, burst);
                assert!(d.bucket.tokens_milli <= u64::from(burst.clamp(1, MAX_BURST)) * 1_000);
                let _ = d.bucket.is_idle(now, rate, burst);
            }
        }
    }
}

#[wasm_bindgen_test(unsupported = test)]
fn a_stored_bucket_larger_than_the_burst_is_clamped() {
    // The burst was lowered since the bucket was stored.
    let mut b = Some(take(None, T0, 100, 100).bucket);
    assert_eq!(burst_at(&mut b, T0, 100, 100, 5), 5);
}

#[wasm_bindgen_test(unsupported = test)]
fn bytes_round_trip() {
    let mut b = None;
    burst_at(&mut b, T0 + 3, 7, 150, 150);
    let b = take(b, T0 + 4, 150, 150).bucket;
    let bytes = b.to_bytes();
    assert_eq!(bytes.len(), BUCKET_LEN);
    assert_eq!(bytes[0], 1);
    assert_eq!(Bucket::from_bytes(&bytes), Some(b));
    assert_eq!(
        Bucket::from_bytes(&bytes).map(|b| take(Some(b), T0 + 5, 150, 150)),
        Some(take(Some(b), T0 + 5, 150, 150))
    );
    // Fixed little-endian layout, so every worker and build reads the same bucket.
    let known = Bucket {
        tokens_milli: 0x0102_0304_0506_0708,
        last_ms: 0x1112_1314_1516_1718,
    };
    assert_eq!(
        known.to_bytes(),
        [1, 8, 7, 6, 5, 4, 3, 2, 1, 0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11]
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn garbage_bytes_are_a_fresh_bucket() {
    let good = take(None, T0, 1, 1).bucket.to_bytes();
    let mut wrong_version = good;
    wrong_version[0] = 2;
    let too_long = [&good[..], &[0]].concat();
    for bytes in [
        &[][..],
        &[1][..],
        &good[..16],
        &too_long[..],
        &wrong_version[..],
        &b"not a bucket at all"[..],
        &[0xff; 17][..],
    ] {
        assert_eq!(Bucket::from_bytes(bytes), None, "{bytes:?}");
        // The glue passes the None on: the IP gets a fresh, full bucket.
        assert!(take(Bucket::from_bytes(bytes), T0, 1, 1).allowed);
    }
    // Right length and version, absurd contents: clamped, not trusted.
    let mut absurd = [0xffu8; 17];
    absurd[0] = 1;
    let b = Bucket::from_bytes(&absurd);
    assert!(b.is_some());
    let d = take(b, T0, 10, 10);
    assert!(d.allowed);
    assert_eq!(d.bucket.tokens(), 9);
}

#[wasm_bindgen_test(unsupported = test)]
fn idle_buckets_can_be_forgotten() {
    let limits = Limits::new(10, 5).unwrap();
    let b = limits.take(None, T0).bucket;
    // One token used at 10/s: full again 100 ms later.
    assert!(!limits.is_idle(&b, T0));
    assert!(!limits.is_idle(&b, T0 + 99));
    assert!(limits.is_idle(&b, T0 + 100));
    // Forgetting an idle bucket changes nothing: a fresh one decides the same.
    assert_eq!(
        limits.take(Some(b), T0 + 100).allowed,
        limits.take(None, T0 + 100).allowed
    );
    assert_eq!(
        limits.take(Some(b), T0 + 100).bucket,
        limits.take(None, T0 + 100).bucket
    );
    // Drained: full after burst / rate = 500 ms.
    let mut stored = None;
    burst_at(&mut stored, T0, 5, 10, 5);
    let drained = stored.unwrap();
    assert!(!limits.is_idle(&drained, T0 + 499));
    assert!(limits.is_idle(&drained, T0 + 500));
    // A bucket from the future (clock went back) is not idle until full.
    assert!(!limits.is_idle(&drained, T0 - 10_000));
}

#[wasm_bindgen_test(unsupported = test)]
fn limits_are_validated() {
    assert_eq!(Limits::new(0, 1), Err(LimitsError::Rate));
    assert_eq!(Limits::new(MAX_RATE_PER_SEC + 1, 1), Err(LimitsError::Rate));
    assert_eq!(Limits::new(1, 0), Err(LimitsError::Burst));
    assert_eq!(Limits::new(1, MAX_BURST + 1), Err(LimitsError::Burst));
    let l = Limits::new(MAX_RATE_PER_SEC, MAX_BURST).unwrap();
    assert_eq!((l.rate_per_sec(), l.burst()), (MAX_RATE_PER_SEC, MAX_BURST));
    let d = Limits::default();
    assert_eq!((d.rate_per_sec(), d.burst()), (150, 150));
    assert_eq!(Limits::new(150, 150), Ok(d));
}

/// `workers` workers sharing one stored bucket and reservation, each with its own leases,
/// as the glue runs them; `requests` are (time, worker). Returns how many were allowed.
fn leasing(requests: &[(u64, usize)], workers: usize, limits: Limits) -> u32 {
    let mut stored: (Option<Bucket>, Reserved) = (None, Reserved::default());
    let mut leases: Vec<Leases> = (0..workers).map(|_| Leases::default()).collect();
    let mut allowed = 0;
    for &(now, w) in requests {
        if leases[w].spend("ip", now) {
            allowed += 1;
            continue;
        }
        let d = limits.take_leasing(stored.0, stored.1, now);
        stored = (Some(d.decision.bucket), d.reserved);
        leases[w].grant("ip", d.lease, now);
        allowed += u32::from(d.decision.allowed);
    }
    allowed
}

fn exact(requests: &[(u64, usize)], limits: Limits) -> u32 {
    let mut b = None;
    let mut allowed = 0;
    for &(now, _) in requests {
        let d = limits.take(b, now);
        b = Some(d.bucket);
        allowed += u32::from(d.allowed);
    }
    allowed
}

/// A small deterministic generator (no dependency for tests).
fn lcg(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    *seed >> 33
}

#[wasm_bindgen_test(unsupported = test)]
fn leases_never_let_through_more_than_the_bucket() {
    let mut seed = 7;
    for (rate, burst) in [
        (150, 150),
        (5, 5),
        (1000, 3000),
        (10, 1),
        (100_000, 100_000),
    ] {
        let limits = Limits::new(rate, burst).unwrap();
        for workers in [1, 2, 4] {
            for pattern in 0..6 {
                // Bursts, idle gaps and steady load, spread over the workers.
                let mut now = T0;
                let mut requests = Vec::new();
                for _ in 0..3_000 {
                    now += match pattern {
                        0 => 0,
                        1 => lcg(&mut seed) % 3,
                        2 => lcg(&mut seed) % 20,
                        3 if lcg(&mut seed).is_multiple_of(100) => 1_000,
                        _ => lcg(&mut seed) % 2,
                    };
                    requests.push((now, (lcg(&mut seed) as usize) % workers));
                }
                let leased = leasing(&requests, workers, limits);
                let exact = exact(&requests, limits);
                // Greedy is the most a token bucket admits: leasing may only admit fewer, and
                // not many fewer.
                assert!(
                    leased <= exact,
                    "rate {rate} burst {burst} workers {workers} pattern {pattern}: {leased} > {exact}"
                );
                assert!(
                    u64::from(exact - leased) <= u64::from(exact) / 10 + 2,
                    "rate {rate} burst {burst} workers {workers} pattern {pattern}: {leased} << {exact}"
                );
            }
        }
    }
}

#[wasm_bindgen_test(unsupported = test)]
fn small_buckets_lease_nothing_and_a_lease_expires() {
    // Below 32 tokens left nothing is leased: every request takes the shared round trip.
    let limits = Limits::new(5, 5).unwrap();
    let d = limits.take_leasing(None, Reserved::default(), T0);
    assert!(d.decision.allowed);
    assert_eq!((d.lease, d.reserved), (0, Reserved::default()));
    // From a full bucket of 150: 149 left, 4 leased and reserved for LEASE_MS.
    let limits = Limits::default();
    let d = limits.take_leasing(None, Reserved::default(), T0);
    assert_eq!(d.lease, 4);
    assert_eq!(d.decision.bucket.tokens(), 145);
    assert_eq!(
        d.reserved,
        Reserved {
            tokens: 4,
            until_ms: T0 + LEASE_MS
        }
    );
    // While reserved the bucket refills to 146 at most, not 150.
    let later = limits.take_leasing(Some(d.decision.bucket), d.reserved, T0 + LEASE_MS - 1);
    assert_eq!(later.decision.bucket.tokens() + later.lease, 145);
    // Once the lease has expired, the whole burst again.
    let after = limits.take_leasing(Some(d.decision.bucket), d.reserved, T0 + 10_000);
    assert_eq!(after.decision.bucket.tokens() + after.lease, 149);
    assert!(limits.is_forgettable(&d.decision.bucket, &d.reserved, T0 + 10_000));
    assert!(!limits.is_forgettable(&d.decision.bucket, &d.reserved, T0 + 50));

    let mut leases = Leases::default();
    leases.grant("a", 2, T0);
    assert!(leases.spend("a", T0));
    assert!(!leases.spend("b", T0));
    assert!(!leases.spend("a", T0 + LEASE_MS), "expired");
    leases.grant("a", 2, T0);
    assert!(leases.spend("a", T0 + 1) && leases.spend("a", T0 + 2));
    assert!(!leases.spend("a", T0 + 3), "spent");
}

#[wasm_bindgen_test(unsupported = test)]
fn reservations_round_trip() {
    let r = Reserved {
        tokens: 0x0102,
        until_ms: 0x1112,
    };
    assert_eq!(Reserved::from_bytes(&r.to_bytes()), Some(r));
    assert_eq!(
        r.to_bytes(),
        [2, 1, 0, 0, 0, 0, 0, 0, 0x12, 0x11, 0, 0, 0, 0, 0, 0]
    );
    assert_eq!(Reserved::from_bytes(&[0; 15]), None);
    assert_eq!(Reserved::from_bytes(&[0; 17]), None);
}
