//! Rate limiting per key by GCRA (the generic cell rate algorithm): a token bucket kept as one
//! timestamp per key, the *theoretical arrival time* (TAT) of the next request.
//!
//! A limit is a rate (one request every `interval_ns`) and a burst (how many requests a key that
//! has been quiet may make at once). A request at `now` is allowed when
//! `max(tat, now) + interval - now <= burst * interval`; the key's TAT then moves on by one
//! interval. A denied request changes nothing, and learns how long to wait. A key whose TAT is
//! in the past has a full bucket: it carries no information and may be forgotten at no cost.
//!
//! The key table is bounded (`max_keys`): a new key in a full table replaces, among a few keys
//! sampled at random, the one nearest to a full bucket, so a flood of new keys costs O(1) per
//! request and forgets first the keys that matter least. Keys are strings hashed by the caller,
//! before the lock is taken; nothing runs under the lock but this module's arithmetic.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hashbrown::HashTable;
use parking_lot::{Mutex, MutexGuard};

use super::clock::Clock;

/// The default bound of the key table.
pub const DEFAULT_MAX_KEYS: usize = 100_000;
/// The largest key table (its index is 32-bit).
pub const MAX_KEYS: usize = u32::MAX as usize;
/// How many keys a full table samples to choose the one it forgets.
const EVICTION_SAMPLE: usize = 16;

/// The answer to one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Nanoseconds until the same request would be allowed (0 when allowed).
    pub wait_ns: u64,
    /// Requests the key may still make at once, after this one.
    pub remaining: u64,
    /// Nanoseconds until the key's bucket is full again.
    pub reset_ns: u64,
}

/// One limit: a request every `interval_ns`, at most `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gcra {
    interval_ns: u64,
    burst: u64,
    tolerance_ns: u64,
}

impl Gcra {
    /// `interval_ns` and `burst` of at least 1 (smaller values are raised to 1).
    pub fn new(interval_ns: u64, burst: u64) -> Self {
        let interval_ns = interval_ns.max(1);
        let burst = burst.max(1);
        Gcra {
            interval_ns,
            burst,
            tolerance_ns: interval_ns.saturating_mul(burst),
        }
    }

    pub fn interval_ns(&self) -> u64 {
        self.interval_ns
    }

    pub fn burst(&self) -> u64 {
        self.burst
    }

    /// The decision for a request at `now` of a key whose TAT is `tat` (`now` or earlier for a
    /// key not seen), and the key's new TAT when the request is allowed.
    #[inline]
    pub fn decide(&self, tat: u64, now: u64) -> (Decision, Option<u64>) {
        let start = tat.max(now);
        let next = start.saturating_add(self.interval_ns);
        let debt = next - now;
        if debt <= self.tolerance_ns {
            let decision = Decision {
                allowed: true,
                wait_ns: 0,
                remaining: (self.tolerance_ns - debt) / self.interval_ns,
                reset_ns: debt,
            };
            (decision, Some(next))
        } else {
            let decision = Decision {
                allowed: false,
                wait_ns: debt - self.tolerance_ns,
                remaining: 0,
                reset_ns: start - now,
            };
            (decision, None)
        }
    }
}

struct Entry {
    hash: u64,
    tat: u64,
    key: Box<str>,
}

/// The keys seen recently and their TATs: a vector of entries indexed by a hash table of
/// positions, so that a random entry can be sampled in O(1).
pub struct KeyTable {
    entries: Vec<Entry>,
    index: HashTable<u32>,
    max_keys: usize,
    rng: u64,
}

impl KeyTable {
    fn new(max_keys: usize) -> Self {
        KeyTable {
            entries: Vec::new(),
            index: HashTable::new(),
            max_keys: max_keys.clamp(1, MAX_KEYS),
            rng: 0x2545_F491_4F6C_DD1D,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// Forgets every key (every bucket is full again).
    pub fn clear(&mut self) {
        self.entries = Vec::new();
        self.index = HashTable::new();
    }

    fn find(&self, hash: u64, key: &str) -> Option<usize> {
        let entries = &self.entries;
        self.index
            .find(hash, |&i| {
                let entry = &entries[i as usize];
                entry.hash == hash && &*entry.key == key
            })
            .map(|&i| i as usize)
    }

    /// Adds a key; in a full table, forgets one first. Returns whether one was forgotten.
    fn insert(&mut self, hash: u64, key: &str, tat: u64) -> bool {
        let evicted = self.entries.len() >= self.max_keys;
        if evicted {
            let victim = self.eviction_victim();
            self.remove_at(victim);
        }
        let position = self.entries.len() as u32;
        self.entries.push(Entry {
            hash,
            tat,
            key: key.into(),
        });
        let entries = &self.entries;
        self.index
            .insert_unique(hash, position, |&i| entries[i as usize].hash);
        evicted
    }

    /// Among a few entries sampled at random, the one with the earliest TAT.
    fn eviction_victim(&mut self) -> usize {
        let len = self.entries.len();
        let mut victim = self.next_random() as usize % len;
        for _ in 1..EVICTION_SAMPLE.min(len) {
            let candidate = self.next_random() as usize % len;
            if self.entries[candidate].tat < self.entries[victim].tat {
                victim = candidate;
            }
        }
        victim
    }

    /// Removes the entry at `position`; the last entry takes its place.
    fn remove_at(&mut self, position: usize) {
        let hash = self.entries[position].hash;
        let target = position as u32;
        if let Ok(found) = self.index.find_entry(hash, |&i| i == target) {
            found.remove();
        }
        let last = (self.entries.len() - 1) as u32;
        self.entries.swap_remove(position);
        if target != last {
            let moved_hash = self.entries[position].hash;
            if let Some(slot) = self.index.find_mut(moved_hash, |&i| i == last) {
                *slot = target;
            }
        }
    }

    /// xorshift64*: enough to sample victims, not for anything secret.
    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32
    }
}

/// Counters of decisions, readable without the lock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateLimitCounts {
    pub allowed: u64,
    pub limited: u64,
    /// Keys forgotten to make room for new ones.
    pub evicted: u64,
}

/// A [`Gcra`] limit per key, thread-safe, with a bounded key table and an injectable clock.
///
/// The lock is exposed (`try_lock`, `lock`, `decide_locked`) so that a binding can choose how
/// to wait for it; [`RateLimiter::decide`] simply blocks.
pub struct RateLimiter {
    gcra: Gcra,
    clock: Clock,
    table: Mutex<KeyTable>,
    allowed: AtomicU64,
    limited: AtomicU64,
    evicted: AtomicU64,
}

impl RateLimiter {
    pub fn new(gcra: Gcra, max_keys: usize, clock: Clock) -> Self {
        RateLimiter {
            gcra,
            clock,
            table: Mutex::new(KeyTable::new(max_keys)),
            allowed: AtomicU64::new(0),
            limited: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
        }
    }

    pub fn gcra(&self) -> Gcra {
        self.gcra
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub fn try_lock(&self) -> Option<MutexGuard<'_, KeyTable>> {
        self.table.try_lock()
    }

    pub fn lock(&self) -> MutexGuard<'_, KeyTable> {
        self.table.lock()
    }

    pub fn lock_for(&self, timeout: Duration) -> Option<MutexGuard<'_, KeyTable>> {
        self.table.try_lock_for(timeout)
    }

    /// The decision for one request of `key` (whose hash is `hash`), under the lock.
    #[inline]
    pub fn decide_locked(&self, table: &mut KeyTable, hash: u64, key: &str) -> Decision {
        let now = self.clock.now_ns();
        let found = table.find(hash, key);
        let tat = found.map_or(now, |i| table.entries[i].tat);
        let (decision, next) = self.gcra.decide(tat, now);
        match (next, found) {
            (Some(next), Some(i)) => table.entries[i].tat = next,
            (Some(next), None) => {
                if table.insert(hash, key, next) {
                    bump(&self.evicted);
                }
            }
            (None, _) => {}
        }
        bump(if decision.allowed {
            &self.allowed
        } else {
            &self.limited
        });
        decision
    }

    /// The decision for one request of `key` (whose hash is `hash`); blocks for the lock.
    pub fn decide(&self, hash: u64, key: &str) -> Decision {
        let mut table = self.lock();
        self.decide_locked(&mut table, hash, key)
    }

    pub fn counts(&self) -> RateLimitCounts {
        RateLimitCounts {
            allowed: self.allowed.load(Ordering::Relaxed),
            limited: self.limited.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
        }
    }
}

/// Every writer holds the table lock: a load and a store, no read-modify-write.
#[inline]
fn bump(counter: &AtomicU64) {
    counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::clock::ManualClock;
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    use std::sync::Arc;

    const MS: u64 = 1_000_000;

    fn limiter(per_second: u64, burst: u64, max_keys: usize) -> (RateLimiter, ManualClock) {
        let clock = ManualClock::new(1_000 * MS);
        let gcra = Gcra::new(1_000 * MS / per_second, burst);
        let limiter = RateLimiter::new(gcra, max_keys, Clock::Manual(clock.clone()));
        (limiter, clock)
    }

    fn hash(key: &str) -> u64 {
        BuildHasherDefault::<DefaultHasher>::default().hash_one(key)
    }

    fn decide(limiter: &RateLimiter, key: &str) -> Decision {
        limiter.decide(hash(key), key)
    }

    #[test]
    fn a_quiet_key_may_use_its_whole_burst_at_once() {
        let (limiter, _) = limiter(10, 5, 100);
        let remaining: Vec<u64> = (0..5).map(|_| decide(&limiter, "a").remaining).collect();
        assert_eq!(remaining, [4, 3, 2, 1, 0]);
        let denied = decide(&limiter, "a");
        assert!(!denied.allowed);
        assert_eq!(denied.wait_ns, 100 * MS);
        assert_eq!(denied.reset_ns, 500 * MS);
    }

    #[test]
    fn one_request_per_interval_comes_back() {
        let (limiter, clock) = limiter(10, 1, 100);
        assert!(decide(&limiter, "a").allowed);
        assert!(!decide(&limiter, "a").allowed);
        clock.advance_ns(99 * MS);
        let early = decide(&limiter, "a");
        assert_eq!((early.allowed, early.wait_ns), (false, MS));
        clock.advance_ns(MS);
        assert!(decide(&limiter, "a").allowed);
    }

    #[test]
    fn denied_requests_cost_nothing() {
        let (limiter, clock) = limiter(10, 2, 100);
        assert!(decide(&limiter, "a").allowed);
        assert!(decide(&limiter, "a").allowed);
        for _ in 0..1_000 {
            assert!(!decide(&limiter, "a").allowed);
        }
        clock.advance_ns(100 * MS);
        assert!(decide(&limiter, "a").allowed);
    }

    #[test]
    fn the_long_run_rate_is_the_configured_rate() {
        let (limiter, clock) = limiter(100, 10, 100);
        let mut allowed = 0;
        for _ in 0..10_000 {
            // ten tries every millisecond for ten seconds
            for _ in 0..10 {
                allowed += u64::from(decide(&limiter, "a").allowed);
            }
            clock.advance_ns(MS);
        }
        // the burst at once, then one every 10 ms from 10 ms to 9,990 ms
        assert_eq!(allowed, 10 + 999);
    }

    #[test]
    fn keys_are_limited_separately() {
        let (limiter, _) = limiter(1, 1, 100);
        assert!(decide(&limiter, "a").allowed);
        assert!(!decide(&limiter, "a").allowed);
        assert!(decide(&limiter, "b").allowed);
        assert_eq!(
            limiter.counts(),
            RateLimitCounts {
                allowed: 2,
                limited: 1,
                evicted: 0
            }
        );
    }

    #[test]
    fn the_key_table_stays_within_max_keys() {
        let (limiter, _) = limiter(1, 1, 64);
        for n in 0..10_000 {
            assert!(decide(&limiter, &format!("key-{n}")).allowed);
        }
        assert_eq!(limiter.lock().len(), 64);
        assert_eq!(limiter.counts().evicted, 10_000 - 64);
    }

    #[test]
    fn a_full_table_forgets_keys_with_a_full_bucket_first() {
        let (limiter, clock) = limiter(1, 1, 16);
        for n in 0..15 {
            decide(&limiter, &format!("old-{n}"));
        }
        clock.advance_ns(10_000 * MS); // every old key's bucket is full again
        assert!(decide(&limiter, "limited").allowed);
        for n in 0..5 {
            decide(&limiter, &format!("new-{n}"));
        }
        // Five old keys with a full bucket were forgotten, not "limited", which still owes.
        assert!(!decide(&limiter, "limited").allowed);
        assert_eq!(limiter.counts().evicted, 5);
    }

    #[test]
    fn the_index_follows_entries_moved_by_removals() {
        let (limiter, _) = limiter(1, 2, 8);
        for round in 0..50 {
            for n in 0..8 {
                decide(&limiter, &format!("k{round}-{n}"));
            }
            let table = limiter.lock();
            for (i, entry) in table.entries.iter().enumerate() {
                assert_eq!(table.find(entry.hash, &entry.key), Some(i));
            }
        }
    }

    #[test]
    fn clear_fills_every_bucket() {
        let (limiter, _) = limiter(1, 1, 100);
        assert!(decide(&limiter, "a").allowed);
        assert!(!decide(&limiter, "a").allowed);
        limiter.lock().clear();
        assert!(decide(&limiter, "a").allowed);
    }

    #[test]
    fn absurd_limits_saturate_instead_of_overflowing() {
        let gcra = Gcra::new(u64::MAX, u64::MAX);
        let (decision, next) = gcra.decide(0, u64::MAX - 5);
        assert!(decision.allowed);
        assert_eq!(next, Some(u64::MAX));
        let tiny = Gcra::new(0, 0);
        assert_eq!((tiny.interval_ns(), tiny.burst()), (1, 1));
    }

    #[test]
    fn threads_share_one_budget() {
        let clock = ManualClock::new(0);
        let limiter = Arc::new(RateLimiter::new(
            Gcra::new(1_000 * MS, 1_000),
            100,
            Clock::Manual(clock),
        ));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let limiter = Arc::clone(&limiter);
                std::thread::spawn(move || {
                    (0..500)
                        .filter(|_| decide(&limiter, "shared").allowed)
                        .count()
                })
            })
            .collect();
        let allowed: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(allowed, 1_000);
        assert_eq!(limiter.counts().limited, 3_000);
    }
}
