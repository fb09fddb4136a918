//! Per-cache counters: atomics, so readers never take the cache lock.
//!
//! Every writer holds the cache's store lock, so a counter is bumped with a
//! relaxed load and store (no read-modify-write instruction on the hot path);
//! readers on other threads see each counter's latest value without locking.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Metrics {
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    rejections: AtomicU64,
    expirations: AtomicU64,
    size: AtomicU64,
}

/// One reading of all counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    pub hits: u64,
    pub misses: u64,
    /// Entries the policy gave up to make room: the least recently used one,
    /// or under W-TinyLFU the main region's victim.
    pub evictions: u64,
    /// W-TinyLFU only: new entries that left the window for a new key because
    /// they were judged less useful than the main region's victim.
    pub rejections: u64,
    pub expirations: u64,
    pub size: u64,
}

impl MetricsSnapshot {
    /// Hits as a percentage of lookups (0.0 when there were none).
    pub fn hit_rate(&self) -> f64 {
        let lookups = self.hits + self.misses;
        if lookups == 0 {
            0.0
        } else {
            self.hits as f64 * 100.0 / lookups as f64
        }
    }
}

#[inline]
fn bump(counter: &AtomicU64, by: u64) {
    // Writers are serialised by the store lock: a plain load + store is enough.
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(by),
        Ordering::Relaxed,
    );
}

impl Metrics {
    #[inline]
    pub(crate) fn hit(&self) {
        bump(&self.hits, 1);
    }
    #[inline]
    pub(crate) fn miss(&self) {
        bump(&self.misses, 1);
    }
    #[inline]
    pub(crate) fn evicted(&self) {
        bump(&self.evictions, 1);
    }
    #[inline]
    pub(crate) fn rejected(&self) {
        bump(&self.rejections, 1);
    }
    /// The running totals of hits and misses (for the policy's climber).
    #[inline]
    pub(crate) fn lookups(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }
    #[inline]
    pub(crate) fn expired(&self, count: u64) {
        if count > 0 {
            bump(&self.expirations, count);
        }
    }
    #[inline]
    pub(crate) fn set_size(&self, size: usize) {
        self.size.store(size as u64, Ordering::Relaxed);
    }

    /// Zeroes the event counters (not the size). Call with the store lock held.
    pub(crate) fn reset(&self) {
        for counter in [
            &self.hits,
            &self.misses,
            &self.evictions,
            &self.rejections,
            &self.expirations,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            rejections: self.rejections.load(Ordering::Relaxed),
            expirations: self.expirations.load(Ordering::Relaxed),
            size: self.size.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_rate_is_a_percentage_and_zero_without_lookups() {
        let metrics = Metrics::default();
        assert_eq!(metrics.snapshot().hit_rate(), 0.0);
        metrics.hit();
        metrics.hit();
        metrics.hit();
        metrics.miss();
        assert_eq!(metrics.snapshot().hit_rate(), 75.0);
    }

    #[test]
    fn reset_keeps_size() {
        let metrics = Metrics::default();
        metrics.evicted();
        metrics.expired(3);
        metrics.set_size(7);
        metrics.reset();
        let snap = metrics.snapshot();
        assert_eq!((snap.evictions, snap.expirations, snap.size), (0, 0, 7));
    }
}
