//! Adaptive W-TinyLFU, after Caffeine: three LRU segments over the store's nodes.
//!
//! - The window (1 % of the capacity at first) admits every new entry, so a
//!   new entry is always stored and readable at once, and recency bursts hit.
//! - The main region is a segmented LRU: entries enter its probation segment;
//!   a hit there promotes to the protected segment (at most 80 % of main),
//!   whose overflow is demoted back to probation's front when the next new
//!   entry arrives (as Caffeine defers it to its maintenance), so a hit never
//!   demotes. Both segments are one list (protected's entries, then
//!   probation's) cut by a boundary, the first probation entry: a promotion
//!   is a move to the list's front, and a demotion only moves the boundary one
//!   entry up (protected's least recent entry is already where probation's
//!   most recent goes).
//! - Hits are counted in the sketch, but a probation hit is counted when its
//!   entry is demoted again rather than when it is promoted: an entry that
//!   goes back to probation (the only segment whose entries are victims)
//!   carries the same count, and the promotion, the hit of every read-once
//!   cyclic workload, does no sketch work. Not counting probation hits at all
//!   cost the LIRS loop traces 6 points (`simulate.rs`).
//! - When the cache is full, the window's least recent entry (the candidate)
//!   and probation's least recent entry (the victim) duel on their estimated
//!   frequencies: the more frequent one stays; on a tie the victim stays (the
//!   candidate is *rejected*). The sketch's hash is keyed by a random seed per
//!   cache, so an attacker cannot craft keys that share a victim's counters to
//!   pin it. As in Caffeine, a warm candidate (estimated `JITTER_MIN` or more)
//!   that would lose is admitted anyway one time in `JITTER_ODDS`, drawn from
//!   a xorshift stream seeded by the cache's seed: a second defence against
//!   pinned victims (a hot entry that stopped being asked for gives way a
//!   little sooner), which moved the simulated hit rates by less than half a
//!   point either way on the recorded traces.
//! - When a cache of more than 400 entries first fills, its window's entries
//!   move to probation (`flush_window`): through the fill they were the
//!   hottest keys, not the newest. While the window has room, a full cache
//!   evicts the main region's victim without a duel.
//! - Caches of more than 400 entries keep miniature copies of themselves with
//!   fixed windows over a sample of their keys (`shadow.rs`): the best of
//!   them bounds where the climber may take the window.
//! - The climber (`climber.rs`) moves capacity between the window and the
//!   protected segment (and probation, when the shadows' band asks for a
//!   window past the protected segment's room); entries move between lists at most `TRANSFER_LIMIT`
//!   per call, the rest of a step carried to the next call, so no single
//!   operation stalls.

use super::climber::Climber;
use super::shadow::Shadows;
use super::sketch::Sketch;
use super::{back, move_to_front, push_front, unlink, Link, Nodes, Region};

/// The window's share of the capacity at first.
const WINDOW_FRACTION: f64 = 0.01;
/// The protected segment's share of the main region.
const PROTECTED_FRACTION: f64 = 0.8;
/// At most this many entries change lists per call when the window is resized.
const TRANSFER_LIMIT: usize = 1000;
/// Caches up to this size size their sketch at once; larger ones when half full.
const EAGER_SKETCH: usize = 1024;
/// The smallest estimated frequency of a candidate the jitter may admit.
const JITTER_MIN: u32 = 6;
/// A warm candidate that would lose is admitted one time in this many.
const JITTER_ODDS: u64 = 128;

/// `TinyLfu::flush_left` before the cache first fills.
const UNFLUSHED: usize = usize::MAX;

/// The smallest cache with shadows (`shadow.rs`), when they are on.
const SHADOW_MIN: usize = super::climber::REACTIVE_MAX + 1;
/// How far (in standard deviations) a shadow must outscore the imposed one.
const SHADOW_MARGIN: f64 = 1.0;

/// Which entry a full cache gives up for a new one, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Eviction {
    /// The main region's victim lost (or the only entry to go): an eviction.
    Evicted(u32),
    /// The window's candidate lost to the victim: an admission rejected.
    Rejected(u32),
}

pub struct TinyLfu {
    sketch: Sketch,
    climber: Climber,
    maximum: usize,
    window_len: usize,
    window_max: usize,
    protected_len: usize,
    protected_max: usize,
    /// The probation segment's size while the window has room to grow into
    /// the protected one: only a band of the shadows takes the window past
    /// it (`grow_window`).
    probation_min: usize,
    /// Window change decided by the climber and not yet made.
    pending: i64,
    /// Whether the sketch has its full size yet.
    sized: bool,
    /// A xorshift state for the admission jitter, from the cache's seed.
    random: u64,
    /// The main list's first probation entry (probation's most recent), or
    /// the list's sentinel when probation is empty.
    boundary: u32,
    /// The sketch's seed xored with a protected entry's region tag in its
    /// stored hash (`Nodes::PROTECTED_TAG`): a protected hit keys the sketch
    /// without masking the tag off.
    protected_seed: u64,
    /// A shadow's window never moves (`shadow.rs`).
    fixed: bool,
    /// The miniature caches that choose the window, if this cache has them.
    shadows: Option<Box<Shadows>>,
    /// The window's least and largest sizes the shadows imposed, if any.
    band: Option<(i64, i64)>,
    /// Entries of the window still to move to probation since the cache
    /// filled (`flush_window`), or `UNFLUSHED` until it fills.
    flush_left: usize,
}

impl TinyLfu {
    /// A policy for `maximum` entries (at least 1) with its own sketch seed,
    /// over nodes whose main list has the sentinel `main` (`Nodes::MAIN`)
    /// and whose protected entries' tag is `protected_tag`
    /// (`Nodes::PROTECTED_TAG`).
    pub fn new(maximum: usize, seed: u64, main: u32, protected_tag: u64) -> Self {
        let window_fraction = super::knob("WINDOW", WINDOW_FRACTION);
        let mut policy = Self::with_window(maximum, seed, main, window_fraction);
        policy.protected_seed = seed ^ protected_tag;
        policy.shadows = (super::knob("SHADOW", 1.0) > 0.0
            && policy.maximum as f64 >= super::knob("SHADOW_MIN", SHADOW_MIN as f64))
        .then(|| Box::new(Shadows::new(policy.maximum, seed.rotate_left(17))));
        policy
    }

    /// A shadow (`shadow.rs`): `maximum` entries and a window of `fraction`
    /// of them that never moves.
    pub(super) fn fixed(maximum: usize, seed: u64, main: u32, fraction: f64) -> Self {
        let mut policy = Self::with_window(maximum, seed, main, fraction);
        policy.climber = Climber::new(1, seed);
        policy.fixed = true;
        policy
    }

    /// The state both constructors share: a window of `window_fraction` of
    /// the (at least 1) entries, no shadows, untagged protected hashes.
    fn with_window(maximum: usize, seed: u64, main: u32, window_fraction: f64) -> Self {
        let maximum = maximum.max(1);
        let window_max = ((maximum as f64 * window_fraction) as usize).clamp(1, maximum);
        let protected_max = ((maximum - window_max) as f64 * PROTECTED_FRACTION) as usize;
        TinyLfu {
            sketch: Sketch::new(maximum.min(EAGER_SKETCH), seed),
            climber: Climber::new(maximum, seed.rotate_left(32)),
            maximum,
            window_len: 0,
            window_max,
            protected_len: 0,
            protected_max,
            probation_min: maximum - window_max - protected_max,
            pending: 0,
            sized: maximum <= EAGER_SKETCH,
            random: (seed ^ 0x9E37_79B9_7F4A_7C15) | 1,
            boundary: main,
            protected_seed: seed,
            fixed: false,
            shadows: None,
            band: None,
            flush_left: UNFLUSHED,
        }
    }

    /// The same policy with shadows (`shadow.rs`), whatever the knobs say.
    #[cfg(test)]
    pub(super) fn with_shadows(mut self, seed: u64) -> Self {
        self.shadows = Some(Box::new(Shadows::new(self.maximum, seed)));
        self
    }

    pub fn sketch(&self) -> &Sketch {
        &self.sketch
    }

    /// Entries per region and the window's and protected segment's limits.
    pub fn sizes(&self) -> (usize, usize, usize, usize) {
        (
            self.window_len,
            self.window_max,
            self.protected_len,
            self.protected_max,
        )
    }

    /// The main list's first probation entry, or its sentinel.
    #[cfg(test)]
    pub(super) fn boundary(&self) -> u32 {
        self.boundary
    }

    /// One call's worth of a window change of `pending` entries (the
    /// climber's decision, made here by a test).
    #[cfg(test)]
    pub(super) fn resize_window<N: Nodes>(&mut self, nodes: &mut N, pending: i64) {
        self.pending = pending;
        if pending > 0 {
            self.grow_window(nodes);
        } else if pending < 0 {
            self.shrink_window(nodes);
        }
    }

    /// A hit (or an overwrite): made the most recently used of its segment.
    /// A window or protected hit is counted in the sketch; a probation hit is
    /// promoted, and counted when the entry is demoted (`demote`).
    #[inline(always)]
    pub fn on_hit<N: Nodes>(&mut self, nodes: &mut N, index: u32) {
        if nodes.in_protected(index) {
            // The most frequent case first. The stored hash keyed with the
            // tag's seed is the hash keyed with the sketch's seed.
            let keyed = nodes.tagged_hash(index) ^ self.protected_seed;
            self.sketch.increment_keyed(keyed);
            // Not `move_to_front`: relinking the list's first is harmless.
            unlink(nodes, index);
            push_front(nodes, N::MAIN, index);
        } else if nodes.in_probation(index) {
            self.climber.probation_hit();
            self.promote(nodes, index);
        } else if !nodes.is_sampled(index) {
            self.window_hit(nodes, index);
        } else {
            self.sampled_hit(nodes, index);
        }
    }

    #[inline(always)]
    fn window_hit<N: Nodes>(&mut self, nodes: &mut N, index: u32) {
        self.sketch.increment_hit(nodes.hash(index));
        self.climber.window_hit();
        move_to_front(nodes, N::WINDOW, index);
    }

    /// A hit on a key of the shadows' sample (`shadow.rs`), whatever its
    /// region: the tag tests of the other branches fail for these keys, so
    /// that the hits of all others never test for the sample. The hit is
    /// queued for the shadows, then handled as its region's.
    #[cold]
    #[inline(never)]
    fn sampled_hit<N: Nodes>(&mut self, nodes: &mut N, index: u32) {
        let hash = nodes.hash(index);
        if let Some(shadows) = self.shadows.as_mut() {
            shadows.queue(hash);
        }
        match nodes.region(index) {
            Region::Protected => {
                self.sketch.increment_hit(hash);
                unlink(nodes, index);
                push_front(nodes, N::MAIN, index);
            }
            Region::Probation => {
                self.climber.probation_hit();
                self.relink_promoted(nodes, index);
                nodes.set_region(index, Region::Protected);
            }
            Region::Window => self.window_hit(nodes, index),
        }
    }

    /// A probation entry moves to the protected segment's front (the main
    /// list's). The segment may pass its limit until the next new entry
    /// (`maintain`).
    #[inline(always)]
    fn promote<N: Nodes>(&mut self, nodes: &mut N, index: u32) {
        self.relink_promoted(nodes, index);
        nodes.swap_segment(index);
    }

    /// `promote`'s moves in the list and the counts, without the tag.
    #[inline(always)]
    fn relink_promoted<N: Nodes>(&mut self, nodes: &mut N, index: u32) {
        if index == self.boundary {
            self.boundary = nodes.link(index).next;
        }
        // Not `move_to_front`: a probation entry is seldom the list's first
        // (only when protected is empty), and relinking the first is harmless.
        unlink(nodes, index);
        push_front(nodes, N::MAIN, index);
        self.protected_len += 1;
    }

    /// Moves the protected segment's least recent entry to probation's front
    /// (the boundary moves up one entry), counting in the sketch the hit that
    /// promoted it.
    fn demote<N: Nodes>(&mut self, nodes: &mut N) {
        let last = nodes.link(self.boundary).prev;
        if last != N::MAIN {
            self.sketch.increment_hit(nodes.hash(last));
            if nodes.is_sampled(last) {
                nodes.set_region(last, Region::Probation);
            } else {
                nodes.swap_segment(last);
            }
            self.boundary = last;
            self.protected_len -= 1;
        }
    }

    /// Takes an entry out of its list and its segment's count.
    #[inline(always)]
    fn leave<N: Nodes>(&mut self, nodes: &mut N, index: u32) {
        if index == self.boundary {
            self.boundary = nodes.link(index).next;
        }
        unlink(nodes, index);
        match nodes.region(index) {
            Region::Window => self.window_len -= 1,
            Region::Protected => self.protected_len -= 1,
            Region::Probation => {}
        }
    }

    /// Puts an entry on no list at the front of the window, or of probation
    /// (before the boundary, which it becomes).
    fn enter<N: Nodes>(&mut self, nodes: &mut N, index: u32, to: Region) {
        match to {
            Region::Window => {
                push_front(nodes, N::WINDOW, index);
                self.window_len += 1;
            }
            Region::Probation => {
                let next = self.boundary;
                let prev = nodes.link(next).prev;
                *nodes.link(index) = Link { prev, next };
                nodes.link(prev).next = index;
                nodes.link(next).prev = index;
                self.boundary = index;
            }
            Region::Protected => unreachable!("entries reach protected by promotion only"),
        }
        nodes.set_region(index, to);
    }

    fn transfer<N: Nodes>(&mut self, nodes: &mut N, index: u32, to: Region) {
        self.leave(nodes, index);
        self.enter(nodes, index, to);
    }

    /// A new entry (already in the slab) enters the window's front; the
    /// window's overflow moves to probation.
    pub fn on_insert<N: Nodes>(&mut self, nodes: &mut N, index: u32) {
        let hash = nodes.hash(index);
        self.sketch.increment(hash);
        if !self.fixed {
            self.climber.inserted(hash);
        }
        self.enter(nodes, index, Region::Window);
        if let Some(shadows) = self.shadows.as_mut() {
            if shadows.sampled(hash) {
                nodes.mark_sampled(index);
                shadows.queue(hash);
            }
        }
        if self.window_len > self.window_max {
            if let Some(last) = back(nodes, N::WINDOW) {
                self.transfer(nodes, last, Region::Probation);
            }
        }
    }

    /// An entry leaves (removed, expired or evicted): out of its list.
    #[inline]
    pub fn on_remove<N: Nodes>(&mut self, nodes: &mut N, index: u32) {
        self.leave(nodes, index);
    }

    /// Every entry left (the store reset its lists); the history is kept.
    pub fn on_clear<N: Nodes>(&mut self) {
        self.window_len = 0;
        self.protected_len = 0;
        self.boundary = N::MAIN;
        self.flush_left = UNFLUSHED;
    }

    /// The entry a full cache gives up to make room for a new one. If the
    /// window is at its limit, the new entry pushes its oldest entry out:
    /// that candidate and the main region's victim duel. If the window has
    /// room (it was emptied when the cache filled, `flush_window`, or its
    /// entries left), the victim leaves and the window grows back. The
    /// caller removes the entry (through `on_remove`). `None` only if the
    /// cache is empty.
    pub fn evict<N: Nodes>(&mut self, nodes: &mut N) -> Option<Eviction> {
        let candidate = back(nodes, N::WINDOW);
        // Probation's least recent entry, or protected's if probation is empty.
        let victim = back(nodes, N::MAIN);
        match (candidate, victim) {
            (Some(candidate), Some(victim)) if self.window_len >= self.window_max => {
                let candidate_hash = nodes.hash(candidate);
                if self.admit(candidate_hash, nodes.hash(victim)) {
                    Some(Eviction::Evicted(victim))
                } else {
                    if !self.fixed {
                        self.climber.rejected(candidate_hash);
                    }
                    Some(Eviction::Rejected(candidate))
                }
            }
            (_, Some(only)) | (Some(only), None) => Some(Eviction::Evicted(only)),
            (None, None) => None,
        }
    }

    /// Whether the candidate should replace the victim: strictly more
    /// frequent, or warm and drawn by the jitter.
    fn admit(&mut self, candidate: u64, victim: u64) -> bool {
        let candidate = self.sketch.frequency(candidate);
        if candidate > self.sketch.frequency(victim) {
            return true;
        }
        let warm = f64::from(candidate) >= super::knob("JITTER_MIN", f64::from(JITTER_MIN));
        warm && self.draw() % super::knob("JITTER_ODDS", JITTER_ODDS as f64) as u64 == 0
    }

    /// The next number of the jitter's xorshift stream.
    fn draw(&mut self) -> u64 {
        self.random ^= self.random << 13;
        self.random ^= self.random >> 7;
        self.random ^= self.random << 17;
        self.random
    }

    /// Housekeeping after a new entry (`len` entries now; `hits` and `misses`:
    /// the cache's lookups so far): the protected segment's overflow is
    /// demoted; the sketch gets its full size when the cache is half full and
    /// ages every sample; once the cache is full, the climber's decisions move
    /// the window's boundary.
    pub fn maintain<N: Nodes>(&mut self, nodes: &mut N, len: usize, hits: u64, misses: u64) {
        let requests = hits + misses;
        if let Some(shadows) = self.shadows.as_mut() {
            shadows.drain();
        }
        if self.protected_len > self.protected_max {
            self.demote_overflow(nodes);
        }
        if !self.sized && len >= self.maximum / 2 {
            self.sketch.resize(self.maximum);
            self.sized = true;
        }
        self.sketch.age();
        if self.fixed {
            return;
        }
        if len < self.maximum {
            self.climber.restart(requests, hits);
            return;
        }
        if self.flush_left != 0 {
            self.flush_window(nodes);
        }
        let probation = len - self.window_len - self.protected_len;
        let adjustment = self.window_adjustment(requests, hits, probation);
        if adjustment != 0 {
            self.pending = adjustment;
        }
        if self.pending > 0 {
            self.grow_window(nodes);
        } else if self.pending < 0 {
            self.shrink_window(nodes);
        }
    }

    /// Once, when the cache first fills (again, after a clear), if its
    /// climber goes by densities (more than `REACTIVE_MAX` entries): the window's entries
    /// move to probation, the oldest first (at most `TRANSFER_LIMIT` per
    /// call, the rest at the next calls). While the cache fills nothing is
    /// evicted, so the window is left holding not the newest keys but the
    /// ones hit often enough to stay at its front: the hottest, seen first.
    /// Their hits made the window look far denser than probation in the
    /// climber's first sample (Zipf 1.0 with scans @ 5,000: the window went
    /// from 50 entries to 721 and stayed large for eight samples; 0.819 ->
    /// 0.822 without them, `simulate.rs`, 5 seeds). In probation their next
    /// hit promotes them. Until new keys fill the window again, a full
    /// cache evicts probation's victims without a duel (`evict`).
    #[cold]
    #[inline(never)]
    fn flush_window<N: Nodes>(&mut self, nodes: &mut N) {
        if self.flush_left == UNFLUSHED {
            self.flush_left = if self.climber.climbs_on_densities() {
                self.window_len
            } else {
                0
            };
        }
        let moves = self.flush_left.min(TRANSFER_LIMIT);
        self.window_to_probation(nodes, moves);
        self.flush_left -= moves;
    }

    /// Moves up to `count` of the window's least recent entries to
    /// probation's front, the oldest first; returns how many moved.
    fn window_to_probation<N: Nodes>(&mut self, nodes: &mut N, count: usize) -> usize {
        for moved in 0..count {
            let Some(entry) = back(nodes, N::WINDOW) else {
                return moved;
            };
            self.transfer(nodes, entry, Region::Probation);
        }
        count
    }

    /// The climber's window change, kept within the shadows' band
    /// (`shadow.rs`) if this cache has shadows and they imposed one.
    #[inline(always)]
    fn window_adjustment(&mut self, requests: u64, hits: u64, probation: usize) -> i64 {
        let climbed = self
            .climber
            .adjustment(requests, hits, self.window_max, probation);
        if self.shadows.as_ref().is_some_and(|s| s.decided()) {
            self.rebound();
        }
        match self.band {
            Some((low, high)) => {
                let window = self.window_max as i64;
                (window + climbed).clamp(low, high) - window
            }
            None => climbed,
        }
    }

    /// The band after the shadows' decision, in entries.
    #[cold]
    #[inline(never)]
    fn rebound(&mut self) {
        let Some(shadows) = self.shadows.as_mut() else {
            return;
        };
        let maximum = self.maximum as f64;
        let current = self.window_max as f64 / maximum;
        let margin = super::knob("SHADOW_MARGIN", SHADOW_MARGIN);
        let entries = |fraction: f64| ((maximum * fraction) as i64).max(1);
        self.band = shadows
            .band(current, margin)
            .map(|(low, high)| (entries(low), entries(high)));
    }

    /// Demotes the protected segment's entries past its limit (at most
    /// `TRANSFER_LIMIT` per call).
    #[cold]
    #[inline(never)]
    pub fn demote_overflow<N: Nodes>(&mut self, nodes: &mut N) {
        for _ in 0..TRANSFER_LIMIT {
            if self.protected_len <= self.protected_max {
                break;
            }
            self.demote(nodes);
        }
    }

    /// Moves `pending` entries of capacity from the protected segment (then,
    /// once it has none, from probation) to the window, with the main
    /// region's least recent entries.
    fn grow_window<N: Nodes>(&mut self, nodes: &mut N) {
        if self.window_max + 1 >= self.maximum {
            self.pending = 0;
            return;
        }
        // The protected segment gives its capacity first, then probation
        // (the main region keeps one entry).
        let mut quota = (self.pending as usize).min(self.maximum - 1 - self.window_max);
        let from_protected = quota.min(self.protected_max);
        let window_before = self.window_max;
        self.protected_max -= from_protected;
        self.window_max += quota;
        self.demote_overflow(nodes);
        for _ in 0..TRANSFER_LIMIT {
            if quota == 0 {
                break;
            }
            // Probation's least recent entry, or protected's if it is empty.
            let Some(entry) = back(nodes, N::MAIN) else {
                break;
            };
            self.transfer(nodes, entry, Region::Window);
            quota -= 1;
        }
        // What was not moved goes back, to the protected segment first.
        let used = self.window_max - window_before - quota;
        self.protected_max += from_protected.saturating_sub(used);
        self.window_max -= quota;
        self.pending = quota as i64;
    }

    /// `protected` entries for the protected segment, fewer if probation
    /// would be left below its size (`probation_min`).
    fn protected_cap(&self, protected: usize) -> usize {
        protected.min((self.maximum - self.window_max).saturating_sub(self.probation_min))
    }

    /// Moves `-pending` entries of capacity from the window to the protected
    /// segment, with the window's least recent entries (into probation).
    fn shrink_window<N: Nodes>(&mut self, nodes: &mut N) {
        if self.window_max <= 1 {
            self.pending = 0;
            return;
        }
        let mut quota = (self.pending.unsigned_abs() as usize).min(self.window_max - 1);
        self.window_max -= quota;
        self.protected_max = self.protected_cap(self.protected_max + quota);
        quota -= self.window_to_probation(nodes, quota.min(TRANSFER_LIMIT));
        self.window_max += quota;
        self.protected_max = self.protected_cap(self.protected_max);
        self.pending = -(quota as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A policy whose sketch saw `candidate` and `victim` that many times.
    fn counted(seed: u64, candidate: u32, victim: u32) -> TinyLfu {
        let mut policy = TinyLfu::new(100, seed, 0, 0);
        for _ in 0..candidate {
            policy.sketch.increment(1);
        }
        for _ in 0..victim {
            policy.sketch.increment(2);
        }
        policy
    }

    fn admitted(policy: &mut TinyLfu, duels: usize) -> Vec<usize> {
        (0..duels).filter(|_| policy.admit(1, 2)).collect()
    }

    #[test]
    fn a_more_frequent_candidate_is_always_admitted() {
        let mut policy = counted(7, 3, 2);
        assert_eq!(admitted(&mut policy, 1000).len(), 1000);
    }

    #[test]
    fn a_cold_candidate_that_would_lose_is_never_admitted() {
        let mut policy = counted(7, JITTER_MIN - 1, 15);
        assert!(admitted(&mut policy, 10_000).is_empty());
    }

    #[test]
    fn a_warm_candidate_that_would_lose_is_admitted_about_once_in_128() {
        let mut policy = counted(7, JITTER_MIN, 15);
        let wins = admitted(&mut policy, 128_000).len();
        assert!((700..1300).contains(&wins), "{wins} of 128,000");
    }

    #[test]
    fn the_jitter_is_drawn_from_the_cache_seed() {
        let draws = |seed| admitted(&mut counted(seed, 10, 15), 10_000);
        assert_eq!(draws(7), draws(7));
        assert_ne!(draws(7), draws(8));
    }
}
