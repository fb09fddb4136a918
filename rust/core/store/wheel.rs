//! The expiry index: a hierarchical timer wheel threaded through the store's
//! nodes (the design of Varghese & Lauck, as used by Caffeine and moka).
//!
//! Level `l` has 64 buckets of `2^SHIFTS[l]` ns: about 1 ms, 67 ms, 4.3 s,
//! 4.6 min and 4.9 h; one overflow bucket holds deadlines beyond ~13 days.
//! An entry sits in the finest level whose span covers its remaining time;
//! as time passes, buckets whose tick has come are emptied: each entry is
//! either due (returned) or re-filed to a finer level. Advancing therefore
//! costs what expired plus what cascades, never the size of the cache. The
//! current finest bucket is scanned on every advance, so `expire(now)` is
//! exact: no entry with `expires_at <= now` survives it.

use super::{Link, Store, NEVER, NIL, UNLINKED};

const LEVELS: usize = 5;
const BUCKET_BITS: u32 = 6;
const BUCKETS: usize = 1 << BUCKET_BITS;
const SHIFTS: [u32; LEVELS] = [20, 26, 32, 38, 44];
const OVERFLOW_SHIFT: u32 = SHIFTS[LEVELS - 1] + BUCKET_BITS;
const OVERFLOW: usize = LEVELS * BUCKETS;
/// Bucket sentinels, stored in the node slab right after the LRU sentinel.
pub(super) const SENTINELS: usize = LEVELS * BUCKETS + 1;

/// The wheel's own state: the time it was last advanced to.
pub(super) struct Wheel {
    time: u64,
}

impl Wheel {
    pub(super) fn new(now: u64) -> Self {
        Wheel { time: now }
    }
}

#[inline]
fn sentinel(bucket: usize) -> u32 {
    1 + bucket as u32
}

/// The bucket for a deadline, seen from the wheel's time.
#[inline]
fn bucket_for(time: u64, expires_at: u64) -> usize {
    // A deadline already passed goes to the current finest bucket, which the
    // next advance always scans.
    let at = expires_at.max(time);
    let delta = at - time;
    for (level, shift) in SHIFTS.iter().enumerate() {
        if delta < 1u64 << (shift + BUCKET_BITS) {
            return level * BUCKETS + ((at >> shift) as usize & (BUCKETS - 1));
        }
    }
    OVERFLOW
}

impl<K, V, F> Store<K, V, F> {
    /// Files a node by its `expires_at`; entries that never expire stay off the wheel.
    #[inline]
    pub(super) fn wheel_schedule(&mut self, index: u32) {
        let expires_at = self.nodes[index as usize].expires_at;
        if expires_at == NEVER {
            self.nodes[index as usize].timer = UNLINKED;
            return;
        }
        let head = sentinel(bucket_for(self.wheel.time, expires_at));
        let last = self.nodes[head as usize].timer.prev;
        self.nodes[index as usize].timer = Link {
            prev: last,
            next: head,
        };
        self.nodes[last as usize].timer.next = index;
        self.nodes[head as usize].timer.prev = index;
    }

    #[inline]
    pub(super) fn wheel_unschedule(&mut self, index: u32) {
        let Link { prev, next } = self.nodes[index as usize].timer;
        if prev == NIL {
            return;
        }
        self.nodes[prev as usize].timer.next = next;
        self.nodes[next as usize].timer.prev = prev;
        self.nodes[index as usize].timer = UNLINKED;
    }

    /// Moves the wheel to `now`; returns the nodes that are due, already off
    /// the wheel but still in the index and the LRU list.
    pub(super) fn wheel_advance(&mut self, now: u64) -> Vec<u32> {
        let previous = self.wheel.time;
        let now = now.max(previous);
        self.wheel.time = now;
        let mut due = Vec::new();
        for (level, shift) in SHIFTS.iter().enumerate() {
            let (from, to) = (previous >> shift, now >> shift);
            if level > 0 && from == to {
                break; // coarser levels have not ticked either
            }
            let ticks = (to - from + 1).min(BUCKETS as u64);
            for tick in from..from + ticks {
                let bucket = level * BUCKETS + (tick as usize & (BUCKETS - 1));
                self.wheel_process(bucket, now, &mut due);
            }
        }
        if previous >> OVERFLOW_SHIFT != now >> OVERFLOW_SHIFT {
            self.wheel_process(OVERFLOW, now, &mut due);
        }
        due
    }

    /// Empties one bucket: due nodes go to `due`, the others are re-filed.
    fn wheel_process(&mut self, bucket: usize, now: u64, due: &mut Vec<u32>) {
        let head = sentinel(bucket);
        let mut index = self.nodes[head as usize].timer.next;
        if index == head {
            return;
        }
        self.nodes[head as usize].timer = Link {
            prev: head,
            next: head,
        };
        while index != head {
            let node = &mut self.nodes[index as usize];
            let next = node.timer.next;
            node.timer = UNLINKED;
            if node.expires_at <= now {
                due.push(index);
            } else {
                self.wheel_schedule(index);
            }
            index = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_deadlines_use_the_finest_level() {
        assert_eq!(bucket_for(0, 1), 0);
        assert_eq!(bucket_for(0, 1 << 20), 1);
        assert!(bucket_for(0, 1 << 27) >= BUCKETS);
        assert!(bucket_for(0, 1 << 27) < 2 * BUCKETS);
    }

    #[test]
    fn far_deadlines_overflow() {
        assert_eq!(bucket_for(0, 1 << 62), OVERFLOW);
    }

    #[test]
    fn past_deadlines_go_to_the_current_bucket() {
        let now = 5 << 20;
        assert_eq!(bucket_for(now, 3), 5);
    }
}
