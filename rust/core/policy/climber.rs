//! The climber that sizes W-TinyLFU's admission window.
//!
//! A larger window favours recency (a new key is kept longer before the
//! frequency filter judges it), a smaller one favours frequency.
//!
//! Caches of at most `REACTIVE_MAX` entries climb on the hit rate (Caffeine's
//! law for its small caches, and theine's): see `Reactive`. Their regions hold
//! too few entries for the densities below to be measured: on the LIRS cs
//! trace at 176 entries they drove the window to half the cache and 5.6 %
//! hits, where the hit rate's climber keeps it at a few entries and 8.8 %
//! (`simulate.rs`, 3 seeds). The bound, 400, is fitted to the recorded
//! traces: it takes in ps @ 385 (0.535 with densities, 0.548 here; gli @ 316
//! and multi1 @ 325 move by about 0.1 point), while at 500 entries the hit
//! rate's climber loses multi2 and sprite 1.1 and 2.6 points. Returning
//! rejects (2. below) grow their window too: where keys are reused only
//! further apart than the window, the hit rate stays flat until the window
//! is large enough, and the hit rate's climber never got there (200 entries,
//! reuses 120 requests apart: window 84 of 200 and 0.064 hits, LRU 0.750;
//! with the rejects, 0.729, `simulate.rs`). On the recorded traces this moved
//! no row.
//!
//! Larger caches, every sample of `SAMPLE_FACTOR` requests per entry of
//! capacity once the cache is full, weigh two measurements taken within that
//! sample:
//!
//! 1. Densities (Caffeine's law for its large caches): the hits per entry
//!    earned by the window and by probation, the main region's least valuable
//!    segment (its entries are the next victims, so its hits per entry are
//!    what the main region loses per entry of capacity it gives up). Capacity
//!    moves towards the denser region by a step proportional to the logarithm
//!    of their ratio, at most 30 % of the capacity.
//! 2. Returning rejects: a ghost list remembers the candidates the window
//!    recently lost (their hash and when). A rejected key that is requested
//!    again `age` window departures later would have been a hit had the window
//!    been `age` entries larger. If, for some growth `x`, those hits exceed
//!    `LOSS_WEIGHT` times what the main region would lose by giving up `x`
//!    entries (`x` times probation's density), the window grows by `x`. This
//!    sees what densities cannot: a window too small to earn any hit at all
//!    while new keys are reused a little later than it can hold them.
//!
//! A ceiling, `WINDOW_MAX` (45 % of the cache): densities never grow the
//! window past it, and returning rejects only when they outweigh the main
//! region's *average* density (`CEILING_LOSS` times `LOSS_WEIGHT` times it),
//! not only its margin. The window's density is an average over all its
//! entries while probation's is the main region's margin (its next victims),
//! so that comparison favours the window: on cache2k orm-night @ 2,000 it
//! drove the window to the largest it can be (80 %) and 0.713 hits, where a
//! fixed window of 10 % to 30 % gets 0.756 and the ceiling 0.738; orm-night's
//! larger caches gain 0.1 to 0.2 points, and sprite, where LRU is best, loses
//! 0.2 to 0.5 (`simulate.rs`, 3 seeds). A hard ceiling would cost far more
//! where keys are reused once, further apart than the ceiling: hits fall from
//! 0.73 to 0.06 (LRU: 0.75) in `simulate.rs`'s recency test, whose main region
//! earns nothing, so there the rejects still take the window past it. Past
//! the ceiling, the window shrinks back towards it whenever its density falls
//! below `CEILING_LOSS` times the main region's average. It used to stay there
//! while it earned more than probation: on orm-night @ 2,000 a phase in which
//! the main region earned nothing took the window to 75 %, where it stayed
//! for over two hundred samples; with the rule, 0.737 -> 0.744, and no other
//! row moves (`simulate.rs`, 3 seeds).
//! Reverting any step after which the sample's hit rate fell (Caffeine's
//! check) did not help orm-night (its hit rate moves by 10 to 40 points between
//! samples with the workload), nor did weighing the window against the main
//! region's average density instead of probation's.
//!
//! The ghost list holds at most `GHOST_MAX` keys: a large cache remembers a
//! sample of its rejects (keys whose hash falls in one of `2^k` classes) and
//! scales what it counts.
//!
//! Why not the classic hill climber, which compares each sample's hit rate
//! with the previous one's and keeps or reverses its direction: on recorded
//! traces the hit rate moves more between samples with the workload than with
//! the window, and it wandered. Both measurements here compare alternatives
//! within one sample, so workload phases do not mislead them.
//!
//! It only decides how much to move the window; `TinyLfu` moves the entries.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};

/// Requests per sample, per entry of capacity.
const SAMPLE_FACTOR: u64 = 4;
/// Caches up to this size climb on the hit rate (see `Reactive`).
pub const REACTIVE_MAX: usize = 400;
/// The reactive climber's requests per sample, per entry of capacity.
const REACTIVE_SAMPLE_FACTOR: u64 = 10;
/// The reactive climber's first (and restart) step, as a fraction of the capacity.
const STEP_FRACTION: f64 = 0.0625;
/// The reactive climber's smallest restart step, in entries.
const MIN_STEP: f64 = 2.0;
/// Each sample's step is this fraction of the previous one's.
const STEP_DECAY: f64 = 0.98;
/// A change of hit rate between samples this large reads as a new workload.
const RESTART_THRESHOLD: f64 = 0.05;
/// Entries moved per unit of log density ratio, as a fraction of the capacity.
const GAIN: f64 = 0.03;
/// The largest step, as a fraction of the capacity.
const MAX_STEP: f64 = 0.3;
/// The ceiling of the window, as a fraction of the capacity (see the
/// module's documentation).
const WINDOW_MAX: f64 = 0.45;
/// Past the ceiling, returning rejects must outweigh `LOSS_WEIGHT` times this
/// times the main region's average density, and the window's own density must
/// stay above this times it.
const CEILING_LOSS: f64 = 2.0;
/// The smallest growth the ghost list judges, as a fraction of the capacity;
/// it also judges twice, four times ... this, up to the capacity.
const GROWTH_UNIT: f64 = 0.0625;
/// How much the returning rejects must outweigh the main region's estimated
/// loss: its density is an average, and growth should be worth its risk.
const LOSS_WEIGHT: f64 = 4.0;
/// The most keys the ghost list holds.
const GHOST_MAX: usize = 4096;
/// Growth steps judged: `GROWTH_UNIT` times 1, 2, 4, ... 2^(STEPS - 1).
const STEPS: usize = 24;

/// Hashes the ghost list's keys, which are already well-mixed 64-bit table
/// hashes, with one keyed multiply instead of std's SipHash (about 110
/// instructions per insert into a full cache). The per-cache seed keeps crafted
/// keys from piling into one bucket. The shadows' indexes use it too
/// (`shadow.rs`).
#[derive(Clone, Copy)]
pub(super) struct GhostHashing {
    pub(super) seed: u64,
}

impl BuildHasher for GhostHashing {
    type Hasher = GhostHasher;

    #[inline(always)]
    fn build_hasher(&self) -> GhostHasher {
        GhostHasher(self.seed)
    }
}

/// `GhostHashing`'s hasher: takes one `u64`.
pub(super) struct GhostHasher(u64);

impl Hasher for GhostHasher {
    #[inline(always)]
    fn write_u64(&mut self, key: u64) {
        let product = u128::from(key ^ self.0) * 0x9E37_79B9_7F4A_7C15;
        self.0 = (product as u64) ^ ((product >> 64) as u64);
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    #[inline(always)]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// Recently rejected candidates: for each, the departure count when it left.
struct Ghosts {
    left_at: HashMap<u64, u64, GhostHashing>,
    order: VecDeque<(u64, u64)>,
    /// Keys whose mixed hash has these bits clear are remembered.
    sample_mask: u64,
    /// How many window departures back the list reaches.
    reach: u64,
}

impl Ghosts {
    fn new(maximum: usize, seed: u64) -> Self {
        let classes = maximum.div_ceil(GHOST_MAX).next_power_of_two() as u64;
        Ghosts {
            left_at: HashMap::with_hasher(GhostHashing { seed }),
            order: VecDeque::new(),
            sample_mask: classes - 1,
            reach: maximum as u64,
        }
    }

    /// How many keys each remembered one stands for.
    fn scale(&self) -> f64 {
        (self.sample_mask + 1) as f64
    }

    #[inline]
    fn sampled(&self, hash: u64) -> bool {
        (hash.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) & self.sample_mask == 0
    }

    /// Inlined down to the sample's test, which most keys fail: out of line
    /// (once the shadows' `TinyLfu::evict` instances came) the call cost
    /// about 20 instructions per insert into a full cache.
    #[inline(always)]
    fn remember(&mut self, hash: u64, now: u64) {
        if self.sampled(hash) {
            self.remember_sampled(hash, now);
        }
    }

    #[inline(never)]
    fn remember_sampled(&mut self, hash: u64, now: u64) {
        self.left_at.insert(hash, now);
        self.order.push_back((hash, now));
        while let Some(&(oldest, at)) = self.order.front() {
            if now - at < self.reach && self.order.len() <= GHOST_MAX {
                break;
            }
            self.order.pop_front();
            if self.left_at.get(&oldest) == Some(&at) {
                self.left_at.remove(&oldest);
            }
        }
    }

    /// How many departures ago the key was rejected, if it is remembered.
    fn recall(&mut self, hash: u64, now: u64) -> Option<u64> {
        if !self.sampled(hash) {
            return None;
        }
        let at = self.left_at.remove(&hash)?;
        Some(now - at).filter(|&age| age < self.reach)
    }
}

/// The classic hill climber (Caffeine's for caches up to 4,096 entries,
/// theine's for all): each sample's hit rate is compared with the previous
/// one's; the window keeps moving the same way while the rate holds or
/// improves and turns back when it drops, by a step that decays by
/// `STEP_DECAY` each sample and restarts at its full size when the rate moves
/// by `RESTART_THRESHOLD` or more (the workload changed). It opens by
/// shrinking the window. Above `REACTIVE_MAX` entries the density climber did
/// better on the recorded traces (sprite, web07, Zipf with scans: up to 5
/// points), so only small caches use it.
///
/// Unlike Caffeine's and theine's, a step at most doubles the window or halves
/// it (by at least one entry), and the step that follows is measured from the
/// step taken: near the floor of one entry the climber moves by an entry or
/// two instead of 6.25 % of the capacity, its step decays below one entry and
/// the window then stays put until a restart (the hit rate moving by
/// `RESTART_THRESHOLD`). With full steps, a window of a few entries
/// probed 8 to 20 entries at a time and settled in one of two modes by seed
/// (LIRS cpp @ 152: window 1 or 19; loop @ 126: 0.110 hits on average over
/// 16 seeds, 0.083 at worst). Bounded, over 16 seeds (`simulate.rs`): loop @ 126 0.115 (0.110
/// before), multi1 @ 325 0.501 (0.499), cs @ 176 0.094 (0.093), cpp @ 152
/// 0.815 (0.818; its worst seed 0.796, 0.795 before).
struct Reactive {
    /// The next move, in entries, signed (positive: grow the window).
    step: f64,
    /// The full step, in entries.
    restart: f64,
    previous_rate: f64,
}

impl Reactive {
    fn new(maximum: usize) -> Self {
        let restart = (maximum as f64 * STEP_FRACTION).max(MIN_STEP);
        Reactive {
            step: -restart,
            restart,
            previous_rate: 0.0,
        }
    }

    /// The window grew on returning rejects after a sample with this hit
    /// rate: the next sample is compared with this one, and a rate that holds
    /// keeps the window growing.
    fn grown(&mut self, rate: f64) {
        self.previous_rate = rate;
        self.step = self.step.abs();
    }

    /// The window change after a sample with this hit rate, for a window of
    /// `window` entries: at most doubling it or halving it (see `Reactive`).
    fn climb(&mut self, rate: f64, window: usize) -> f64 {
        let change = rate - self.previous_rate;
        self.previous_rate = rate;
        let amount = if change >= 0.0 { self.step } else { -self.step };
        let window = window.max(1) as f64;
        let amount = amount.clamp(-(window / 2.0).max(1.0), window);
        self.step = if change.abs() >= RESTART_THRESHOLD {
            self.restart.copysign(amount)
        } else {
            amount * STEP_DECAY
        };
        amount
    }
}

pub struct Climber {
    /// Requests per sample.
    period: u64,
    /// Hits so far when the current sample began.
    start_hits: u64,
    /// `Some` for caches that climb on the hit rate.
    reactive: Option<Reactive>,
    maximum: usize,
    /// Running total of requests when the current sample began.
    start: u64,
    window_hits: u64,
    probation_hits: u64,
    ghosts: Ghosts,
    /// New entries so far: each one makes the window's oldest entry leave it.
    departures: u64,
    /// Returning rejects of this sample by age: `[k]` counts ages below
    /// `unit * 2^k` and at least half that (`[0]`: below `unit`).
    returns: [u64; STEPS],
    unit: u64,
}

impl Climber {
    /// A climber for a cache of `maximum` entries; `seed` keys its ghost
    /// list's hashing.
    pub fn new(maximum: usize, seed: u64) -> Self {
        let reactive_max = super::knob("REACTIVE_MAX", REACTIVE_MAX as f64);
        let reactive = (maximum as f64 <= reactive_max).then(|| Reactive::new(maximum));
        let factor = if reactive.is_some() {
            REACTIVE_SAMPLE_FACTOR
        } else {
            SAMPLE_FACTOR
        };
        Climber {
            period: (maximum as u64).saturating_mul(factor).max(1),
            start_hits: 0,
            reactive,
            maximum,
            start: 0,
            window_hits: 0,
            probation_hits: 0,
            ghosts: Ghosts::new(maximum, seed),
            departures: 0,
            returns: [0; STEPS],
            unit: ((maximum as f64 * GROWTH_UNIT) as u64).max(1),
        }
    }

    /// Whether it weighs densities and returning rejects (a cache of more
    /// than `REACTIVE_MAX` entries) rather than the hit rate (`Reactive`).
    pub fn climbs_on_densities(&self) -> bool {
        self.reactive.is_none()
    }

    #[inline(always)]
    pub fn window_hit(&mut self) {
        self.window_hits += 1;
    }

    #[inline(always)]
    pub fn probation_hit(&mut self) {
        self.probation_hits += 1;
    }

    /// The window's candidate (of this key hash) lost its duel and left.
    #[inline(always)]
    pub fn rejected(&mut self, hash: u64) {
        self.ghosts.remember(hash, self.departures);
    }

    /// A new key (of this hash) entered the window.
    pub fn inserted(&mut self, hash: u64) {
        self.departures += 1;
        if let Some(age) = self.ghosts.recall(hash, self.departures) {
            let step = (64 - (age / self.unit).leading_zeros()) as usize;
            self.returns[step.min(STEPS - 1)] += 1;
        }
    }

    /// Starts a new sample at `requests` (the running total of lookups).
    pub fn restart(&mut self, requests: u64, hits: u64) {
        self.start = requests;
        self.start_hits = hits;
        self.window_hits = 0;
        self.probation_hits = 0;
        self.returns = [0; STEPS];
    }

    /// Given the running total of lookups and the regions' current sizes, the
    /// window change (in entries, positive to grow it) when a sample has just
    /// completed, else 0. A total that went backwards (counters were reset)
    /// starts a new sample.
    #[inline(always)]
    pub fn adjustment(&mut self, requests: u64, hits: u64, window: usize, probation: usize) -> i64 {
        if requests >= self.start && hits >= self.start_hits && requests - self.start < self.period
        {
            return 0; // the sample is not complete: the common case, inline
        }
        self.sampled_adjustment(requests, hits, window, probation)
    }

    /// `adjustment` once the sample is complete (or the totals went back).
    #[inline(never)]
    fn sampled_adjustment(
        &mut self,
        requests: u64,
        hits: u64,
        window: usize,
        probation: usize,
    ) -> i64 {
        if requests < self.start || hits < self.start_hits {
            self.restart(requests, hits);
            return 0;
        }
        if super::knob("STATIC", 0.0) > 0.0 {
            return 0;
        }
        let probation_density = self.probation_hits as f64 / probation.max(1) as f64;
        let largest = (super::knob("WINDOW_MAX", WINDOW_MAX) * self.maximum as f64) as usize;
        let main_hits = (hits - self.start_hits).saturating_sub(self.window_hits);
        let main_density = main_hits as f64 / self.maximum.saturating_sub(window).max(1) as f64;
        let growth = self.growth(window, largest, probation_density, main_density);
        let maximum = self.maximum as f64;
        // One imagined hit keeps an idle region's density finite and nonzero.
        let window_density = (self.window_hits + 1) as f64 / window.max(1) as f64;
        let error = (window_density / (probation_density + 1.0 / probation.max(1) as f64)).ln();
        let rate = (hits - self.start_hits) as f64 / (requests - self.start) as f64;
        self.restart(requests, hits);
        if let Some(reactive) = self.reactive.as_mut() {
            if growth > 0 {
                // Returning rejects: grow, and climb on from here.
                reactive.grown(rate);
                return growth.min((MAX_STEP * maximum) as usize) as i64;
            }
            return reactive.climb(rate, window) as i64;
        }
        if growth > 0 {
            return growth.min((MAX_STEP * maximum) as usize) as i64;
        }
        let step = (error.abs() * super::knob("GAIN", GAIN) * maximum).min(MAX_STEP * maximum);
        if window > largest {
            // Past the ceiling (where returning rejects took it), the window
            // must also outearn the main region's average density, as its
            // growth there had to; else it shrinks back towards the ceiling.
            let ceiling_loss = super::knob("CEILING_LOSS", CEILING_LOSS);
            let main_entries = self.maximum.saturating_sub(window).max(1) as f64;
            let versus = (window_density / (ceiling_loss * main_density + 1.0 / main_entries)).ln();
            if versus < 0.0 {
                let step = (versus.abs() * super::knob("GAIN", GAIN) * maximum)
                    .min(MAX_STEP * maximum)
                    .min((window - largest) as f64)
                    .max(1.0);
                return -step as i64;
            }
        }
        if error > 0.0 {
            // Densities alone never take the window past the ceiling.
            step.min(largest.saturating_sub(window) as f64) as i64
        } else {
            -step as i64
        }
    }

    /// The window growth the returning rejects justify, or 0: what they
    /// justify best against probation's density, but past `largest` only what
    /// they justify against `CEILING_LOSS` times the main region's average
    /// density.
    fn growth(&self, window: usize, largest: usize, probation: f64, main: f64) -> usize {
        let loss = super::knob("LOSS", LOSS_WEIGHT);
        let growth = self.best_growth(window, loss * probation);
        if window + growth <= largest {
            return growth;
        }
        match self.best_growth(
            window,
            loss * super::knob("CEILING_LOSS", CEILING_LOSS) * main,
        ) {
            0 => growth.min(largest.saturating_sub(window)),
            strong => strong,
        }
    }

    /// The window growth whose returning rejects best outweigh `cost` per
    /// entry of growth, or 0.
    fn best_growth(&self, window: usize, cost: f64) -> usize {
        let room = self.maximum.saturating_sub(window) as u64;
        let mut returned = 0.0;
        let mut best = (0.0, 0);
        for (step, count) in self.returns.iter().enumerate() {
            let size = self.unit << step;
            if size > room {
                break;
            }
            returned += *count as f64 * self.ghosts.scale();
            let net = returned - cost * size as f64;
            if net > best.0 {
                best = (net, size as usize);
            }
        }
        best.1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One full sample with these hits; returns the adjustment.
    fn sample(
        c: &mut Climber,
        window_hits: u64,
        probation_hits: u64,
        sizes: (usize, usize),
    ) -> i64 {
        let start = c.start;
        for _ in 0..window_hits {
            c.window_hit();
        }
        for _ in 0..probation_hits {
            c.probation_hit();
        }
        c.adjustment(start + c.period, 0, sizes.0, sizes.1)
    }

    /// One full sample of a reactive climber with this many hits; returns the
    /// adjustment.
    fn reactive_sample(c: &mut Climber, hits: u64) -> i64 {
        reactive_sample_at(c, hits, 50)
    }

    /// The same with a window of `window` entries.
    fn reactive_sample_at(c: &mut Climber, hits: u64, window: usize) -> i64 {
        let (start, start_hits) = (c.start, c.start_hits);
        c.adjustment(start + c.period, start_hits + hits, window, 50)
    }

    fn step(c: &Climber) -> f64 {
        c.reactive.as_ref().expect("a reactive climber").step
    }

    #[test]
    fn only_small_caches_climb_on_the_hit_rate() {
        assert!(Climber::new(REACTIVE_MAX, 0).reactive.is_some());
        assert!(Climber::new(REACTIVE_MAX + 1, 0).reactive.is_none());
        assert_eq!(Climber::new(100, 7).period, 1000);
    }

    #[test]
    fn the_hit_rate_climber_keeps_going_while_the_rate_holds_and_turns_back_when_it_drops() {
        let mut c = Climber::new(100, 7); // full step 6.25 entries, samples of 1,000 requests
        assert_eq!(c.adjustment(999, 500, 5, 50), 0); // the sample is not complete
        assert_eq!(reactive_sample(&mut c, 500), -6); // opens by shrinking the window
        assert_eq!(step(&c), -6.25); // 0 -> 50 %: a new workload, the full step again
        assert_eq!(reactive_sample(&mut c, 520), -6); // better: the same way
        assert!((step(&c) + 6.25 * 0.98).abs() < 1e-9); // decayed
        assert_eq!(reactive_sample(&mut c, 500), 6); // worse: turns back
        assert_eq!(reactive_sample(&mut c, 500), 6); // level counts as holding: 6.0025
        assert!((step(&c) - 6.25 * 0.98 * 0.98 * 0.98).abs() < 1e-9);
    }

    #[test]
    fn the_hit_rate_climber_restarts_its_step_when_the_rate_jumps() {
        let mut c = Climber::new(100, 7);
        reactive_sample(&mut c, 500);
        for _ in 0..50 {
            reactive_sample(&mut c, 500); // level: the step decays towards nothing
        }
        assert!(step(&c).abs() < 3.0, "{}", step(&c));
        let before = step(&c);
        assert_eq!(reactive_sample(&mut c, 400), -before as i64); // down 10 points: turns back
        assert_eq!(step(&c), 6.25f64.copysign(-before)); // and the next step is full again
    }

    #[test]
    fn the_hit_rate_climber_at_most_halves_or_doubles_a_small_window() {
        let mut c = Climber::new(100, 7); // full step 6.25 entries
        assert_eq!(reactive_sample_at(&mut c, 500, 4), -2); // -6.25, at most half of 4
        assert_eq!(step(&c), -6.25); // 0 -> 50 %: a restart, the full step
        assert_eq!(reactive_sample_at(&mut c, 500, 2), -1); // level: on, at most half of 2
        assert!((step(&c) + 0.98).abs() < 1e-9); // decayed from the step taken
        assert_eq!(reactive_sample_at(&mut c, 500, 1), 0); // under one entry: the window stays
        assert_eq!(reactive_sample_at(&mut c, 400, 1), 0); // down 10 points: turns, restarts
        assert_eq!(step(&c), 6.25);
        assert_eq!(reactive_sample_at(&mut c, 400, 1), 1); // at most doubles a window of 1
        assert!((step(&c) - 0.98).abs() < 1e-9);
    }

    #[test]
    fn returning_rejects_grow_a_small_window_too() {
        let mut c = Climber::new(200, 7); // climbs on the hit rate
        rejects_return(&mut c, 0..100, 20); // back 121 departures after leaving
        assert_eq!(reactive_sample_at(&mut c, 50, 4), 60); // the cap of one step
        assert!(step(&c) > 0.0); // and the climber goes on growing while the rate holds
    }

    #[test]
    fn a_reactive_sample_measures_only_its_own_lookups() {
        let mut c = Climber::new(100, 7);
        c.restart(5000, 4000); // 80 % so far, from before this sample
        assert_eq!(c.adjustment(5999, 4100, 5, 50), 0);
        c.adjustment(6000, 4100, 5, 50); // 10 % in this sample
        assert!((c.reactive.as_ref().unwrap().previous_rate - 0.1).abs() < 1e-9);
        assert_eq!(c.adjustment(10, 10, 5, 50), 0); // the counters went backwards: a new sample
        assert_eq!((c.start, c.start_hits), (10, 10));
    }

    #[test]
    fn nothing_moves_before_a_sample_completes() {
        let mut c = Climber::new(1000, 7);
        for _ in 0..500 {
            c.window_hit();
        }
        assert_eq!(c.adjustment(c.period - 1, 0, 10, 200), 0);
        assert!(c.adjustment(c.period, 0, 10, 200) > 0);
    }

    #[test]
    fn a_window_earning_more_per_entry_grows() {
        let mut c = Climber::new(1000, 7);
        assert!(sample(&mut c, 500, 100, (10, 200)) > 0);
    }

    #[test]
    fn a_window_earning_nothing_shrinks() {
        let mut c = Climber::new(1000, 7);
        assert!(sample(&mut c, 0, 300, (100, 200)) < 0);
    }

    #[test]
    fn equal_densities_hold_still() {
        let mut c = Climber::new(1000, 7);
        assert_eq!(sample(&mut c, 99, 199, (100, 200)), 0);
    }

    #[test]
    fn the_step_grows_with_the_imbalance_up_to_a_cap() {
        let mut c = Climber::new(1000, 7);
        let mild = sample(&mut c, 200, 100, (100, 200));
        let strong = sample(&mut c, 2000, 100, (100, 200));
        let extreme = sample(&mut c, 1_000_000, 0, (1, 1000));
        assert!(0 < mild && mild < strong, "{mild} {strong}");
        assert_eq!(extreme, 300);
    }

    #[test]
    fn densities_never_grow_the_window_past_its_ceiling() {
        let mut c = Climber::new(1000, 7); // ceiling: 450 entries
        assert_eq!(sample(&mut c, 1_000_000, 0, (300, 700)), 150); // 300 wanted
        assert_eq!(sample(&mut c, 1_000_000, 0, (450, 550)), 0);
        assert!(sample(&mut c, 0, 300, (450, 550)) < 0); // shrinking is not held
    }

    /// One full sample after rejects returned, with a window of 440 entries,
    /// probation's 10 hits and the cache's `hits`; returns the adjustment.
    fn sample_with_returning_rejects(hits: u64) -> i64 {
        let mut c = Climber::new(1000, 7);
        rejects_return(&mut c, 0..300, 100); // back 401 departures after leaving
        for _ in 0..10 {
            c.probation_hit();
        }
        c.adjustment(c.period, hits, 440, 560)
    }

    #[test]
    fn returning_rejects_pass_the_ceiling_only_while_the_main_region_earns_little() {
        // 10 hits over 560 main entries: the rejects' 300 outweigh them.
        assert_eq!(sample_with_returning_rejects(10), 300); // the cap of one step
                                                            // 5,000 main hits: the rejects justify growth only up to the ceiling.
        assert_eq!(sample_with_returning_rejects(5000), 10);
    }

    #[test]
    fn past_the_ceiling_a_window_shrinks_back_unless_it_outearns_the_main_region() {
        // Ceiling 450 of 1,000; a window of 700 entries, probation earning nothing.
        let sample_at = |window_hits: u64, main_hits: u64| {
            let mut c = Climber::new(1000, 7);
            for _ in 0..window_hits {
                c.window_hit();
            }
            c.adjustment(c.period, window_hits + main_hits, 700, 100)
        };
        // Window 1 hit per entry, main 4: back towards the ceiling, at most to it.
        let back = sample_at(700, 1200);
        assert!((-250..0).contains(&back), "{back}");
        assert_eq!(sample_at(700, 10_000_000), -250); // a far denser main: to the ceiling at once
        assert_eq!(sample_at(7000, 1200), 0); // 10 per entry against 4: it stays
    }

    #[test]
    fn counts_start_over_with_each_sample_and_after_a_reset() {
        let mut c = Climber::new(1000, 7);
        assert!(sample(&mut c, 500, 0, (10, 200)) > 0);
        assert_eq!(c.window_hits, 0);
        c.window_hit();
        assert_eq!(c.adjustment(5, 0, 10, 200), 0); // went backwards: a new sample from 5
        assert_eq!((c.start, c.window_hits), (5, 0));
    }

    /// Rejects `keys`, then lets `later` other keys in, then brings `keys` back.
    fn rejects_return(c: &mut Climber, keys: std::ops::Range<u64>, later: u64) {
        for key in keys.clone() {
            c.rejected(key);
            c.inserted(1_000_000 + key);
        }
        for other in 0..later {
            c.inserted(2_000_000 + other);
        }
        for key in keys {
            c.inserted(key);
        }
    }

    #[test]
    fn rejects_that_return_soon_grow_a_window_that_earns_nothing() {
        let mut c = Climber::new(1000, 7);
        rejects_return(&mut c, 0..300, 100); // back 401 departures after leaving
        assert_eq!(sample(&mut c, 0, 10, (10, 500)), 300); // the cap of one step
    }

    #[test]
    fn rejects_are_not_worth_a_dense_main_region() {
        let mut c = Climber::new(1000, 7);
        rejects_return(&mut c, 0..300, 100);
        assert!(sample(&mut c, 0, 5000, (10, 500)) < 0);
    }

    #[test]
    fn rejects_beyond_the_capacity_are_forgotten() {
        let mut c = Climber::new(1000, 7);
        rejects_return(&mut c, 0..100, 2000);
        assert_eq!(c.returns.iter().sum::<u64>(), 0);
    }

    #[test]
    fn a_large_cache_remembers_a_bounded_sample_of_rejects() {
        let mut c = Climber::new(1_000_000, 7);
        for key in 0..1_000_000 {
            c.rejected(key);
            c.inserted(u64::MAX - key);
        }
        assert!(c.ghosts.left_at.len() <= GHOST_MAX);
        assert!(c.ghosts.order.len() <= GHOST_MAX);
        assert!(c.ghosts.left_at.len() > GHOST_MAX / 4);
        assert_eq!(c.ghosts.scale(), 256.0);
    }
}
