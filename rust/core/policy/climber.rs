//! The hill climber that sizes W-TinyLFU's admission window from the hit
//! rate it observes ("Adaptive Software Cache Management", Einziger, Eytan,
//! Friedman and Manes, and Caffeine's reactive climber).
//!
//! Every sample of requests it compares the sample's hit rate with the
//! previous one: if it did not fall, the last step was good and is repeated;
//! otherwise the direction reverses. Steps decay geometrically, so the window
//! settles; a jump in the hit rate (a new workload) restarts them at full
//! size. A larger window favours recency (new keys are kept longer before the
//! frequency filter judges them), a smaller one favours frequency.
//!
//! It only decides how much to move the window; `TinyLfu` moves the entries.

/// A change of the hit rate this large between samples reads as a new workload.
const RESTART_THRESHOLD: f64 = 0.05;
/// A restarted step, as a fraction of the capacity.
const STEP_FRACTION: f64 = 0.0625;
/// Each step is this fraction of the previous one, so the window settles.
const STEP_DECAY: f64 = 0.98;
/// The smallest restarted step, so small caches can move at all.
const MIN_STEP: f64 = 2.0;
/// Caches up to this size start by growing their window of a few entries;
/// larger ones start by shrinking it.
const SMALL: usize = 512;

pub struct Climber {
    /// Requests per sample.
    period: u64,
    maximum: usize,
    /// The running totals of hits and misses when the current sample began.
    start: (u64, u64),
    previous_rate: f64,
    /// The next step, in entries: positive grows the window.
    step: f64,
}

impl Climber {
    /// A climber for a cache of `maximum` entries, sampling every `period` requests.
    pub fn new(maximum: usize, period: u64) -> Self {
        let magnitude = restart_magnitude(maximum);
        Climber {
            period: period.max(1),
            maximum,
            start: (0, 0),
            previous_rate: 0.0,
            step: if maximum <= SMALL { magnitude } else { -magnitude },
        }
    }

    /// Given the running totals of hits and misses, the window change (in
    /// entries, positive to grow it) when a sample has just completed, else 0.
    /// Totals that went backwards (counters were reset) start a new sample.
    pub fn adjustment(&mut self, hits: u64, misses: u64) -> i64 {
        let (start_hits, start_misses) = self.start;
        if hits < start_hits || misses < start_misses {
            self.start = (hits, misses);
            return 0;
        }
        let (sample_hits, sample_misses) = (hits - start_hits, misses - start_misses);
        let requests = sample_hits + sample_misses;
        if requests < self.period {
            return 0;
        }
        self.start = (hits, misses);
        let rate = sample_hits as f64 / requests as f64;
        let change = rate - self.previous_rate;
        self.previous_rate = rate;
        let amount = if change >= 0.0 { self.step } else { -self.step };
        self.step = if change.abs() >= RESTART_THRESHOLD {
            restart_magnitude(self.maximum).copysign(amount)
        } else {
            STEP_DECAY * amount
        };
        amount as i64
    }
}

fn restart_magnitude(maximum: usize) -> f64 {
    (STEP_FRACTION * maximum as f64).max(MIN_STEP)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `samples` samples of `period` requests at the given hit rates.
    fn run(climber: &mut Climber, totals: &mut (u64, u64), rates: &[f64]) -> Vec<i64> {
        rates
            .iter()
            .map(|rate| {
                let hits = (rate * climber.period as f64) as u64;
                totals.0 += hits;
                totals.1 += climber.period - hits;
                climber.adjustment(totals.0, totals.1)
            })
            .collect()
    }

    #[test]
    fn nothing_moves_before_a_sample_completes() {
        let mut c = Climber::new(10_000, 1000);
        assert_eq!(c.adjustment(500, 499), 0);
        assert_ne!(c.adjustment(500, 500), 0);
    }

    #[test]
    fn a_large_cache_first_shrinks_its_window_and_keeps_going_while_it_helps() {
        let mut c = Climber::new(10_000, 1000);
        let steps = run(&mut c, &mut (0, 0), &[0.5, 0.52, 0.53]);
        assert_eq!(steps[0], -625);
        assert!(steps[1] < 0 && steps[2] < 0);
    }

    #[test]
    fn a_falling_hit_rate_reverses_the_direction() {
        let mut c = Climber::new(10_000, 1000);
        let steps = run(&mut c, &mut (0, 0), &[0.5, 0.48]);
        assert!(steps[0] < 0);
        assert!(steps[1] > 0);
    }

    #[test]
    fn steps_decay_while_the_rate_is_steady() {
        let mut c = Climber::new(10_000, 1000);
        let steps = run(&mut c, &mut (0, 0), &[0.5, 0.5, 0.5, 0.5]);
        let sizes: Vec<i64> = steps.iter().map(|s| s.abs()).collect();
        assert!(sizes.windows(2).skip(1).all(|w| w[1] < w[0]), "{sizes:?}");
    }

    #[test]
    fn a_small_cache_first_grows_its_window() {
        let mut c = Climber::new(100, 1000);
        assert_eq!(run(&mut c, &mut (0, 0), &[0.3]), vec![6]);
    }

    #[test]
    fn reset_counters_start_a_new_sample() {
        let mut c = Climber::new(10_000, 1000);
        assert_eq!(c.adjustment(900, 0), 0);
        assert_eq!(c.adjustment(10, 5), 0); // went backwards: a new sample from here
        assert_eq!(c.adjustment(900, 5), 0);
        assert_ne!(c.adjustment(1010, 5), 0);
    }
}
