use wasm_bindgen_test::wasm_bindgen_test;

use super::*;

const NOW: u64 = 1_700_000_000;
/// The default: twice the 300 s skew.
const WINDOW: u64 = 600;
const SKEW: u64 = 300;

fn key(byte: u8) -> NonceKey {
    NonceKey::from_bytes(&[byte; KEY_LEN]).unwrap()
}

fn verified(consumer: &str, nonce: &str, timestamp: u64) -> Verified {
    Verified {
        consumer_key: consumer.into(),
        token: Some(format!("{consumer}-token")),
        nonce: nonce.into(),
        timestamp,
    }
}

/// Shared data as the glue keeps it: shard key → value.
#[derive(Default)]
struct Shared(std::collections::HashMap<String, Vec<u8>>);

impl Shared {
    /// What `first_use` answers for `v` at `now`.
    fn first_use(&mut self, key: &NonceKey, v: &Verified, now: u64) -> bool {
        let p = key.place(v, now);
        let stored = self.0.get(&p.shard).map(Vec::as_slice);
        let (value, fresh) = record(stored, p.entry, now, WINDOW);
        self.0.insert(p.shard, value);
        fresh
    }
}

#[wasm_bindgen_test(unsupported = test)]
fn a_nonce_is_fresh_once_then_a_replay() {
    let (k, mut shared) = (key(1), Shared::default());
    let b = verified("appkey-b", "n-1", NOW);
    assert!(shared.first_use(&k, &b, NOW));
    assert!(!shared.first_use(&k, &b, NOW + 1));
    // The same nonce with another timestamp is another request (RFC 5849 §3.3).
    assert!(shared.first_use(&k, &verified("appkey-b", "n-1", NOW + 1), NOW + 1));
    // Forgotten only after the window, when the timestamp check refuses it anyway.
    assert!(!shared.first_use(&k, &b, NOW + WINDOW));
}

#[wasm_bindgen_test(unsupported = test)]
fn one_appkeys_flood_with_future_timestamps_never_refuses_another_appkey() {
    let (k, mut shared) = (key(2), Shared::default());
    let b = verified("appkey-b", "b-before", NOW - 10);
    assert!(shared.first_use(&k, &b, NOW));
    // A floods: far more nonces than its group holds, all timestamped as far in the future
    // as the signature check allows, then some more from the past of the window.
    let group_capacity = (SHARDS_PER_GROUP as usize) * PER_SHARD;
    let mut accepted = 0;
    for i in 0..group_capacity * 3 {
        let ts = if i % 2 == 0 { NOW + SKEW } else { NOW - SKEW };
        accepted +=
            usize::from(shared.first_use(&k, &verified("appkey-a", &format!("a-{i}"), ts), NOW));
    }
    // A's future-stamped nonces keep being accepted (stored as now, above A's own floor);
    // its past-stamped ones are refused once its own floor passes them.
    assert!(accepted >= group_capacity * 3 / 2, "{accepted}");
    // B's fresh request is accepted, its replay still refused, whatever shard they share.
    assert!(shared.first_use(&k, &verified("appkey-b", "b-after", NOW), NOW));
    assert!(!shared.first_use(&k, &b, NOW));
    // Other AppKeys too, even ones whose nonces sit in A's group.
    let same_group: Vec<String> = (0..2000)
        .map(|i| format!("appkey-{i}"))
        .filter(|c| {
            k.hash(&[b"appkey", c.as_bytes()]) % GROUPS
                == k.hash(&[b"appkey", b"appkey-a"]) % GROUPS
        })
        .take(5)
        .collect();
    assert!(!same_group.is_empty());
    for c in &same_group {
        let v = verified(c, "fresh", NOW - 1);
        assert!(shared.first_use(&k, &v, NOW), "{c} refused after A's flood");
        assert!(!shared.first_use(&k, &v, NOW));
    }
    // No floor anywhere rose above the present.
    for value in shared.0.values() {
        let s = Shard::decode(value);
        assert!(s.common_floor <= NOW);
        assert!(s.floors.iter().all(|(_, f)| *f <= NOW));
        assert!(s.entries.len() <= PER_SHARD);
        assert!(s.floors.len() <= FLOORS_PER_SHARD);
    }
    // A dropped nonce of A's stays refused (its floor), never replayable.
    assert!(!shared.first_use(&k, &verified("appkey-a", "a-1", NOW - SKEW), NOW));
}

#[wasm_bindgen_test(unsupported = test)]
fn a_future_timestamp_is_stored_as_now_and_its_replay_is_still_refused() {
    let (k, mut shared) = (key(3), Shared::default());
    let v = verified("appkey-a", "future", NOW + SKEW);
    let p = k.place(&v, NOW);
    assert_eq!(p.entry.timestamp, NOW);
    assert!(shared.first_use(&k, &v, NOW));
    // The signature check accepts the replay until NOW + 2·SKEW: still remembered.
    assert!(!shared.first_use(&k, &v, NOW + 2 * SKEW));
}

#[wasm_bindgen_test(unsupported = test)]
fn a_full_shard_evicts_the_largest_holders_oldest_and_raises_only_its_floor() {
    let entry = |appkey: u64, id: u64, timestamp: u64| Entry {
        appkey,
        id,
        timestamp,
    };
    let value = std::cell::RefCell::new(None::<Vec<u8>>);
    let put = |e: Entry| {
        let (v, fresh) = record(value.borrow().as_deref(), e, NOW, WINDOW);
        *value.borrow_mut() = Some(v);
        fresh
    };
    // B holds ten old entries; A fills the rest and goes on.
    for i in 0..10 {
        assert!(put(entry(0xb, i, NOW - 500 + i)));
    }
    for i in 0..(PER_SHARD as u64) {
        assert!(put(entry(0xa, 1000 + i, NOW - 550 + i)));
    }
    let s = Shard::decode(value.borrow().as_deref().unwrap());
    assert_eq!(s.entries.len(), PER_SHARD);
    assert_eq!(s.entries.iter().filter(|e| e.appkey == 0xb).count(), 10);
    // Ten of A's went, the last at NOW - 541: A's floor, and only A's.
    assert_eq!(s.floors, vec![(0xa, NOW - 541)]);
    assert_eq!(s.common_floor, 0);
    // B's old nonces are still there (refused as replays), and B's floor is untouched.
    assert!(!put(entry(0xb, 3, NOW - 497)));
    assert!(put(entry(0xb, 99, NOW - 400)));
    // A is refused at or below its own floor.
    // (B's new entry pushed out A's next oldest, at NOW - 540.)
    assert!(!put(entry(0xa, 5000, NOW - 540)));
    assert!(put(entry(0xa, 5001, NOW - 539)));
}

#[wasm_bindgen_test(unsupported = test)]
fn floors_are_bounded_and_fold_into_the_common_floor() {
    let mut value: Option<Vec<u8>> = None;
    // Each of many AppKeys overflows the shard once.
    for k in 0..(FLOORS_PER_SHARD as u64 + 10) {
        for i in 0..(PER_SHARD as u64 + 1) {
            let e = Entry {
                appkey: 100 + k,
                id: i,
                timestamp: NOW - 300 + k,
            };
            value = Some(record(value.as_deref(), e, NOW, WINDOW).0);
        }
    }
    let s = Shard::decode(value.as_deref().unwrap());
    assert!(s.floors.len() <= FLOORS_PER_SHARD);
    assert!(s.common_floor > 0 && s.common_floor < NOW);
}

#[wasm_bindgen_test(unsupported = test)]
fn different_keys_choose_different_shards() {
    let (k1, k2) = (key(4), key(5));
    let differ = (0..64)
        .filter(|i| {
            let v = verified(&format!("appkey-{i}"), &format!("n-{i}"), NOW);
            k1.place(&v, NOW).shard != k2.place(&v, NOW).shard
        })
        .count();
    assert!(differ > 48, "{differ}");
    // The same key always chooses the same shard (every worker must agree).
    let v = verified("appkey-a", "n", NOW);
    assert_eq!(k1.place(&v, NOW), key(4).place(&v, NOW));
    // All of an AppKey's nonces stay in its group.
    let groups: std::collections::HashSet<u64> = (0..200)
        .map(|i| {
            let shard = k1
                .place(&verified("appkey-a", &format!("n-{i}"), NOW), NOW)
                .shard;
            shard.rsplit('.').next().unwrap().parse::<u64>().unwrap() / SHARDS_PER_GROUP
        })
        .collect();
    assert_eq!(groups.len(), 1);
    assert!(NonceKey::from_bytes(&[0; 31]).is_none());
}

#[wasm_bindgen_test(unsupported = test)]
fn a_shard_that_does_not_decode_is_empty() {
    assert_eq!(Shard::decode(b"garbage"), Shard::default());
    let (value, fresh) = record(
        Some(b"garbage"),
        Entry {
            appkey: 1,
            id: 2,
            timestamp: NOW,
        },
        NOW,
        WINDOW,
    );
    assert!(fresh);
    assert_eq!(Shard::decode(&value).entries.len(), 1);
}
