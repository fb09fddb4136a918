//! The thread-safe generic cache: a [`Store`] behind a mutex, the counters
//! beside it (readable without the lock) and the clock that dates entries.
//!
//! The lock is exposed (`lock`, `try_lock`, `try_lock_for`, `mutex`) rather
//! than wrapped so a binding can choose how to wait for it: the Python layer
//! must never block on it while attached to the interpreter, and waits in
//! slices so that signals are seen. It is a `parking_lot` mutex: a timed wait,
//! no poisoning (a panic while it was held leaves the store consistent between
//! operations), and an explicit unlock for holding it across `fork()`.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, MutexGuard};

use super::clock::Clock;
use super::metrics::{Metrics, MetricsSnapshot};
use super::policy::PolicyKind;
use super::store::{Store, NEVER};

pub struct Cache<K, V, F = ()> {
    store: Mutex<Store<K, V, F>>,
    metrics: Arc<Metrics>,
    clock: Clock,
    default_ttl_ns: Option<u64>,
    max_size: Option<usize>,
}

impl<K, V, F> Cache<K, V, F> {
    /// `max_size` must be in `1..=MAX_CAPACITY`, or `None` for unbounded (up
    /// to `MAX_CAPACITY`); `default_ttl_ns` of `None` means entries never
    /// expire unless given a TTL of their own; `policy` decides which entry a
    /// full cache gives up.
    pub fn new(
        max_size: Option<usize>,
        default_ttl_ns: Option<u64>,
        clock: Clock,
        policy: PolicyKind,
    ) -> Self {
        let metrics = Arc::new(Metrics::default());
        let store = Store::new(max_size, policy, Arc::clone(&metrics), clock.now_ns());
        Cache {
            store: Mutex::new(store),
            metrics,
            clock,
            default_ttl_ns,
            max_size,
        }
    }

    /// Blocks until the store is ours.
    pub fn lock(&self) -> MutexGuard<'_, Store<K, V, F>> {
        self.store.lock()
    }

    /// Lets go of the lock in a child process right after `fork()`, for the
    /// thread that held it across the fork with its guard forgotten. Threads
    /// that were waiting for it in the parent are still queued for it in
    /// `parking_lot`'s table but do not exist here: they are removed first,
    /// since a fair unlock would hand the lock to one of them and lose it.
    ///
    /// # Safety
    /// Only in a forked child, whose only thread holds the lock (guard forgotten).
    pub unsafe fn unlock_in_forked_child(&self) {
        // SAFETY: `raw` is only used for its address: the key under which
        // `parking_lot`'s RawMutex parks its waiters.
        let key = unsafe { self.store.raw() } as *const _ as usize;
        // SAFETY: waking threads that do not exist only writes to their copied
        // (unused) parking slots; the caller guarantees the rest.
        unsafe {
            parking_lot_core::unpark_all(key, parking_lot_core::DEFAULT_UNPARK_TOKEN);
            self.store.force_unlock();
        }
    }

    /// The lock itself, for bindings that wait for it in their own way.
    pub fn mutex(&self) -> &Mutex<Store<K, V, F>> {
        &self.store
    }

    #[inline(always)]
    pub fn try_lock(&self) -> Option<MutexGuard<'_, Store<K, V, F>>> {
        self.store.try_lock()
    }

    /// Waits at most `timeout` for the store.
    pub fn try_lock_for(&self, timeout: Duration) -> Option<MutexGuard<'_, Store<K, V, F>>> {
        self.store.try_lock_for(timeout)
    }

    #[inline]
    pub fn now(&self) -> u64 {
        self.clock.now_ns()
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The deadline of an entry stored at `now` with an optional TTL override.
    #[inline]
    pub fn expires_at(&self, now: u64, ttl_ns: Option<u64>) -> u64 {
        match ttl_ns.or(self.default_ttl_ns) {
            Some(ttl) => now.saturating_add(ttl),
            None => NEVER,
        }
    }

    pub fn default_ttl_ns(&self) -> Option<u64> {
        self.default_ttl_ns
    }

    /// `None` for an unbounded cache.
    pub fn max_size(&self) -> Option<usize> {
        self.max_size
    }

    /// Counters, read without the lock.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::super::clock::ManualClock;
    use super::super::store::{Full, Released};
    use super::*;
    use std::thread;

    #[test]
    fn threads_share_one_cache_without_losing_entries() {
        let cache: Arc<Cache<u64, u64>> = Arc::new(Cache::new(
            Some(1000),
            None,
            Clock::Monotonic,
            PolicyKind::TinyLfu,
        ));
        let workers: Vec<_> = (0..8u64)
            .map(|t| {
                let cache = Arc::clone(&cache);
                thread::spawn(move || {
                    for i in 0..10_000u64 {
                        let key = (t * 7 + i) % 500;
                        let mut eq = |k: &u64, _| Ok::<_, Full>(*k == key);
                        let mut released = Released::new();
                        let mut store = cache.lock();
                        let now = cache.now();
                        let got = store
                            .get(key, &mut eq, || now, &mut released)
                            .unwrap()
                            .copied();
                        if let Some(value) = got {
                            assert_eq!(value, key * 10, "corrupt value for {key}");
                        } else {
                            let at = cache.expires_at(now, None);
                            store
                                .insert(key, || key, key * 10, at, &mut eq, || now, &mut released)
                                .unwrap();
                        }
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
        let m = cache.metrics();
        assert_eq!(m.hits + m.misses, 80_000);
        assert_eq!(m.size, 500);
        assert_eq!(m.evictions, 0);
    }

    #[test]
    fn default_ttl_and_override_set_the_deadline() {
        let clock = ManualClock::new(1000);
        let cache: Cache<u64, u64> = Cache::new(
            Some(10),
            Some(50),
            Clock::Manual(clock.clone()),
            PolicyKind::Lru,
        );
        assert_eq!(cache.expires_at(cache.now(), None), 1050);
        assert_eq!(cache.expires_at(cache.now(), Some(5)), 1005);
        let forever: Cache<u64, u64> =
            Cache::new(Some(10), None, Clock::Manual(clock), PolicyKind::Lru);
        assert_eq!(forever.expires_at(0, None), NEVER);
        assert_eq!(forever.expires_at(u64::MAX - 1, Some(10)), u64::MAX);
    }

    #[test]
    fn try_lock_fails_while_held() {
        let cache: Cache<u64, u64> = Cache::new(Some(10), None, Clock::Monotonic, PolicyKind::Lru);
        let held = cache.lock();
        assert!(cache.try_lock().is_none());
        assert!(cache.try_lock_for(Duration::from_millis(1)).is_none());
        drop(held);
        assert!(cache.try_lock().is_some());
        assert!(cache.try_lock_for(Duration::from_millis(1)).is_some());
    }
}
