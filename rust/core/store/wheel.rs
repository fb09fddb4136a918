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
//!
//! The wheel also keeps a lower bound of every deadline on it (`earliest`)
//! and which buckets may hold entries (a bit per bucket, cleared when the
//! bucket is emptied): an advance before `earliest` does nothing, so a cache
//! whose entries live for minutes does not touch the wheel on every insert
//! into a full cache, and an advance visits only occupied buckets.

use super::{Link, Store, NEVER, NIL, UNLINKED};

const LEVELS: usize = 5;
const BUCKET_BITS: u32 = 6;
const BUCKETS: usize = 1 << BUCKET_BITS;
const SHIFTS: [u32; LEVELS] = [20, 26, 32, 38, 44];
const OVERFLOW_SHIFT: u32 = SHIFTS[LEVELS - 1] + BUCKET_BITS;
const OVERFLOW: usize = LEVELS * BUCKETS;
/// Bucket sentinels, stored in the node slab right after the LRU sentinel.
pub(super) const SENTINELS: usize = LEVELS * BUCKETS + 1;

/// The wheel's own state.
pub(super) struct Wheel {
    /// The time it was last advanced to.
    time: u64,
    /// No entry on the wheel expires before this (`NEVER`: the wheel is empty).
    earliest: u64,
    /// Per level, the buckets that may hold entries (a superset: a bucket
    /// whose last entry left by `wheel_unschedule` keeps its bit until visited).
    occupied: [u64; LEVELS],
    overflow_occupied: bool,
}

impl Wheel {
    pub(super) fn new(now: u64) -> Self {
        Wheel {
            time: now,
            earliest: NEVER,
            occupied: [0; LEVELS],
            overflow_occupied: false,
        }
    }

    /// Whether any entry may be on the wheel.
    #[inline(always)]
    pub(super) fn is_occupied(&self) -> bool {
        self.earliest != NEVER
    }

    /// Whether an advance to `now` can find anything due.
    #[inline(always)]
    pub(super) fn may_expire(&self, now: u64) -> bool {
        now >= self.earliest
    }

    #[inline(always)]
    fn mark(&mut self, bucket: usize) {
        if bucket == OVERFLOW {
            self.overflow_occupied = true;
        } else {
            self.occupied[bucket / BUCKETS] |= 1 << (bucket % BUCKETS);
        }
    }

    #[inline(always)]
    fn is_marked(&self, bucket: usize) -> bool {
        if bucket == OVERFLOW {
            self.overflow_occupied
        } else {
            self.occupied[bucket / BUCKETS] & (1 << (bucket % BUCKETS)) != 0
        }
    }

    #[inline(always)]
    fn unmark(&mut self, bucket: usize) {
        if bucket == OVERFLOW {
            self.overflow_occupied = false;
        } else {
            self.occupied[bucket / BUCKETS] &= !(1 << (bucket % BUCKETS));
        }
    }

    /// A lower bound of every deadline on the wheel, from the occupied
    /// buckets, right after an advance to `self.time`. An entry on level `l`
    /// (`l >= 1`) lies 1 to 64 ticks of that level ahead of the wheel's time
    /// (it was filed there because its deadline was at least one tick of
    /// level `l` away, and every bucket whose tick has come was emptied); on
    /// level 0 it may also lie in the current tick, so its bound is `time + 1`.
    fn lower_bound(&self) -> u64 {
        let mut earliest = NEVER;
        for (level, (&shift, &occupied)) in SHIFTS.iter().zip(&self.occupied).enumerate() {
            if occupied == 0 {
                continue;
            }
            let tick = self.time >> shift;
            let current = (tick as u32) & (BUCKETS as u32 - 1);
            // Buckets in the order their ticks come, starting after the current one.
            let ahead = occupied.rotate_right(current).rotate_right(1);
            let distance = if level == 0 && occupied & (1 << current) != 0 {
                0
            } else {
                u64::from(ahead.trailing_zeros()) + 1
            };
            let bound = if distance == 0 {
                self.time.saturating_add(1)
            } else {
                (tick + distance).checked_shl(shift).unwrap_or(NEVER)
            };
            earliest = earliest.min(bound);
        }
        if self.overflow_occupied {
            let next = ((self.time >> OVERFLOW_SHIFT) + 1).checked_shl(OVERFLOW_SHIFT);
            earliest = earliest.min(next.unwrap_or(NEVER));
        }
        earliest
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
    // Level `l` spans deltas below 2^(SHIFTS[l] + BUCKET_BITS), SHIFTS[l] = 20 + 6 l:
    // the finest one that fits follows from the delta's bit length, without a loop.
    let finest_span = SHIFTS[0] + BUCKET_BITS;
    let bits = u64::BITS - delta.leading_zeros();
    let level = (bits.max(finest_span) - finest_span).div_ceil(BUCKET_BITS) as usize;
    if level >= LEVELS {
        return OVERFLOW;
    }
    let shift = SHIFTS[level];
    level * BUCKETS + ((at >> shift) as usize & (BUCKETS - 1))
}

impl<K, V, F> Store<K, V, F> {
    /// Files a node by its `expires_at`; entries that never expire stay off the wheel.
    #[inline(always)]
    pub(super) fn wheel_schedule(&mut self, index: u32) {
        let expires_at = self.node(index).expires_at;
        if expires_at == NEVER {
            self.node_mut(index).timer = UNLINKED;
            return;
        }
        let bucket = bucket_for(self.wheel.time, expires_at);
        self.wheel.mark(bucket);
        self.wheel.earliest = self.wheel.earliest.min(expires_at);
        let head = sentinel(bucket);
        let last = self.node(head).timer.prev;
        self.node_mut(index).timer = Link {
            prev: last,
            next: head,
        };
        self.node_mut(last).timer.next = index;
        self.node_mut(head).timer.prev = index;
    }

    #[inline(always)]
    pub(super) fn wheel_unschedule(&mut self, index: u32) {
        let Link { prev, next } = self.node(index).timer;
        if prev == NIL {
            return;
        }
        self.node_mut(prev).timer.next = next;
        self.node_mut(next).timer.prev = prev;
        self.node_mut(index).timer = UNLINKED;
    }

    /// Moves the wheel to `now`; returns the nodes that are due, already off
    /// the wheel but still in the index and the LRU list. Before the earliest
    /// deadline on the wheel it does nothing (the wheel's time stays behind:
    /// the next advance covers every tick since).
    pub(super) fn wheel_advance(&mut self, now: u64) -> Vec<u32> {
        let mut due = Vec::new();
        if !self.wheel.may_expire(now) {
            return due;
        }
        let previous = self.wheel.time;
        let now = now.max(previous);
        self.wheel.time = now;
        for (level, shift) in SHIFTS.iter().enumerate() {
            let (from, to) = (previous >> shift, now >> shift);
            if level > 0 && from == to {
                break; // coarser levels have not ticked either
            }
            let ticks = (to - from + 1).min(BUCKETS as u64);
            for tick in from..from + ticks {
                let bucket = level * BUCKETS + (tick as usize & (BUCKETS - 1));
                if self.wheel.is_marked(bucket) {
                    self.wheel_process(bucket, now, &mut due);
                }
            }
        }
        if previous >> OVERFLOW_SHIFT != now >> OVERFLOW_SHIFT && self.wheel.is_marked(OVERFLOW) {
            self.wheel_process(OVERFLOW, now, &mut due);
        }
        self.wheel.earliest = self.wheel.lower_bound();
        due
    }

    /// Empties one bucket: due nodes go to `due`, the others are re-filed.
    fn wheel_process(&mut self, bucket: usize, now: u64, due: &mut Vec<u32>) {
        self.wheel.unmark(bucket);
        let head = sentinel(bucket);
        let mut index = self.node(head).timer.next;
        if index == head {
            return;
        }
        self.node_mut(head).timer = Link {
            prev: head,
            next: head,
        };
        while index != head {
            let node = self.node_mut(index);
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
    fn each_level_takes_the_deltas_below_its_span() {
        for (level, shift) in SHIFTS.iter().enumerate() {
            let span = 1u64 << (shift + BUCKET_BITS);
            assert_eq!(bucket_for(0, span - 1) / BUCKETS, level, "below {span}");
            let above = bucket_for(0, span);
            assert!(
                above == OVERFLOW || above / BUCKETS == level + 1,
                "at {span}"
            );
        }
        assert_eq!(bucket_for(0, 1 << OVERFLOW_SHIFT), OVERFLOW);
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

    type TestStore = Store<u64, (), ()>;

    fn store() -> TestStore {
        use crate::core::PolicyKind;
        Store::new(None, PolicyKind::Lru, std::sync::Arc::default(), 0)
    }

    fn schedule(s: &mut TestStore, key: u64, expires_at: u64) {
        let mut released = super::super::Released::new();
        let eq = &mut |k: &u64, _| Ok::<_, super::super::Full>(*k == key);
        s.insert(key, || key, (), expires_at, eq, || 0, &mut released)
            .unwrap();
    }

    #[test]
    fn an_empty_wheel_has_no_earliest_deadline() {
        let s = store();
        assert!(!s.wheel.is_occupied());
        assert!(!s.wheel.may_expire(u64::MAX - 1));
    }

    #[test]
    fn advancing_before_the_earliest_deadline_leaves_the_wheel_as_it_was() {
        let mut s = store();
        let minutes = 900_000_000_000; // 15 minutes, on level 3
        schedule(&mut s, 1, minutes);
        schedule(&mut s, 2, 2 * minutes);
        assert!(s.wheel.earliest <= minutes);
        let mut released = super::super::Released::new();
        assert_eq!(s.expire(minutes / 2, &mut released), 0);
        assert_eq!(
            s.wheel.time, 0,
            "nothing could be due: the wheel did not move"
        );
        assert_eq!(s.expire(minutes, &mut released), 1);
        assert_eq!(s.wheel.time, minutes);
        assert!(s.wheel.earliest > minutes && s.wheel.earliest <= 2 * minutes);
        assert_eq!(s.expire(2 * minutes, &mut released), 1);
        assert!(
            !s.wheel.is_occupied(),
            "an emptied wheel has no deadline left"
        );
    }

    #[test]
    fn the_earliest_deadline_is_a_lower_bound_after_every_advance() {
        let mut s = store();
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut deadlines = std::collections::HashMap::new();
        let mut now = 0u64;
        for key in 0..3000u64 {
            // Deadlines from a microsecond to two weeks ahead, on every level and the overflow.
            let expires_at = now + 1_000 + next() % (1u64 << (10 + next() % 41));
            schedule(&mut s, key, expires_at);
            deadlines.insert(key, expires_at);
            if key % 7 == 0 {
                now += next() % (1u64 << (next() % 44));
                let mut released = super::super::Released::new();
                s.expire(now, &mut released);
                deadlines.retain(|_, &mut d| d > now);
                assert_eq!(s.len(), deadlines.len(), "exact at {now}");
            }
            let earliest = deadlines.values().min().copied().unwrap_or(NEVER);
            assert!(s.wheel.earliest <= earliest, "a lower bound at {now}");
        }
    }
}
