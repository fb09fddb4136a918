//! Tests of W-TinyLFU on a slab of its own (no store, no TTL), and a trace
//! simulator: `cargo test --release --lib --no-default-features replay_traces
//! -- --ignored --nocapture` with `PGCACHE_TRACES` naming a folder of `*.u64`
//! files (little-endian 64-bit keys, as `benches/hitrate.py --export` writes)
//! prints each trace's hit rate at the capacities in `PGCACHE_CAPACITIES`
//! (`name:capacity,...`, only those traces; default: every trace at one eighth
//! and one half of its distinct keys): LRU's, and W-TinyLFU's mean and lowest
//! over `PGCACHE_SEEDS` sketch seeds (default 1) with each run's final window.
//! The whole LIRS and cache2k set replays in about a minute.
//!
//! For tuning, `PGCACHE_KNOB_<NAME>=<number>` overrides a constant in test
//! builds only (`knob` in `mod.rs`; release builds compile the constants in):
//! `WINDOW` (initial window fraction), `STATIC` (1: the window never moves),
//! `WINDOW_MAX` (the density climber's ceiling),
//! `REACTIVE_MAX`, `GAIN`, `LOSS` (the climber's), `SAMPLE` (the sketch's
//! sample per entry), `JITTER_MIN` and `JITTER_ODDS` (the admission jitter),
//! `SHADOW` (0: no shadows), `SHADOW_MIN` (the smallest cache with shadows),
//! `SHADOW_SIZE` (a shadow's entries at most), `SHADOW_LARGE` and
//! `SHADOW_LARGE_SIZE` (above which capacity, and how many, instead),
//! `SHADOW_RATE` (a fixed sampling rate instead), `SHADOW_PERIOD`,
//! `SHADOW_DECAY`, `SHADOW_MARGIN` and `SHADOW_TOP_LOW` (the floor of the
//! largest shadow's band) (`shadow.rs`).

use std::collections::HashMap;

use super::{back, move_to_front, push_front, unlink, Eviction, Link, Nodes, Region, TinyLfu};

mod segments;

struct SimNode {
    link: Link,
    region: Region,
    hash: u64,
    key: u64,
    /// In the shadows' sample (`shadow.rs`).
    sampled: bool,
}

/// A slab: sentinels 0, 1 (window, main region), then entries.
struct Slab(Vec<SimNode>);

impl Nodes for Slab {
    const WINDOW: u32 = 0;
    const MAIN: u32 = 1;

    fn link(&mut self, index: u32) -> &mut Link {
        &mut self.0[index as usize].link
    }
    fn region(&self, index: u32) -> Region {
        self.0[index as usize].region
    }
    fn set_region(&mut self, index: u32, region: Region) {
        self.0[index as usize].region = region;
    }
    fn hash(&self, index: u32) -> u64 {
        self.0[index as usize].hash
    }
    fn is_sampled(&self, index: u32) -> bool {
        self.0[index as usize].sampled
    }
    fn mark_sampled(&mut self, index: u32) {
        self.0[index as usize].sampled = true;
    }
}

/// The table hash the binding uses for an int key (Python's hash of a small
/// int is the int itself).
pub(super) fn table_hash(key: u64) -> u64 {
    let product = u128::from(key) * 0x9E37_79B9_7F4A_7C15;
    (product as u64) ^ ((product >> 64) as u64)
}

/// A cache of keys only, evicting by W-TinyLFU or by LRU.
struct Sim {
    slab: Slab,
    index: HashMap<u64, u32>,
    free: Vec<u32>,
    policy: Option<TinyLfu>,
    maximum: usize,
    hits: u64,
    misses: u64,
    evicted: u64,
    rejected: u64,
}

impl Sim {
    fn new(maximum: usize, tinylfu: bool) -> Self {
        Self::with_seed(maximum, tinylfu, 0x5EED)
    }

    fn with_seed(maximum: usize, tinylfu: bool, seed: u64) -> Self {
        let sentinels = (0..2)
            .map(|i| SimNode {
                link: Link::to_self(i),
                region: Region::Window,
                hash: 0,
                key: u64::MAX,
                sampled: false,
            })
            .collect();
        Sim {
            slab: Slab(sentinels),
            index: HashMap::new(),
            free: Vec::new(),
            policy: tinylfu.then(|| TinyLfu::new(maximum, seed, Slab::MAIN, 0)),
            maximum,
            hits: 0,
            misses: 0,
            evicted: 0,
            rejected: 0,
        }
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    /// Looks `key` up; on a miss, stores it. Returns whether it hit.
    fn access(&mut self, key: u64) -> bool {
        if let Some(&index) = self.index.get(&key) {
            self.hits += 1;
            match &mut self.policy {
                Some(p) => p.on_hit(&mut self.slab, index),
                None => move_to_front(&mut self.slab, Slab::WINDOW, index),
            }
            return true;
        }
        self.misses += 1;
        if self.len() >= self.maximum {
            self.evict();
        }
        let index = self.allocate(key);
        match &mut self.policy {
            Some(p) => {
                p.on_insert(&mut self.slab, index);
                let len = self.index.len();
                p.maintain(&mut self.slab, len, self.hits, self.misses);
            }
            None => push_front(&mut self.slab, Slab::WINDOW, index),
        }
        false
    }

    /// A node for a new key, indexed and on no list yet.
    fn allocate(&mut self, key: u64) -> u32 {
        let node = SimNode {
            link: Link::to_self(0),
            region: Region::Window,
            hash: table_hash(key),
            key,
            sampled: false,
        };
        let index = match self.free.pop() {
            Some(i) => {
                self.slab.0[i as usize] = node;
                i
            }
            None => {
                self.slab.0.push(node);
                (self.slab.0.len() - 1) as u32
            }
        };
        self.index.insert(key, index);
        index
    }

    /// Drops a node the policy let go of from the index and the slab.
    fn release(&mut self, index: u32) {
        let key = self.slab.0[index as usize].key;
        self.index.remove(&key);
        self.free.push(index);
    }

    fn evict(&mut self) {
        let index = match &mut self.policy {
            Some(p) => {
                let index = match p.evict(&mut self.slab).expect("a full cache") {
                    Eviction::Evicted(i) => {
                        self.evicted += 1;
                        i
                    }
                    Eviction::Rejected(i) => {
                        self.rejected += 1;
                        i
                    }
                };
                p.on_remove(&mut self.slab, index);
                index
            }
            None => {
                let index = back(&mut self.slab, Slab::WINDOW).expect("a full cache");
                unlink(&mut self.slab, index);
                self.evicted += 1;
                index
            }
        };
        self.release(index);
    }

    fn contains(&self, key: u64) -> bool {
        self.index.contains_key(&key)
    }

    /// Keys of one list, most recent first.
    fn list(&self, head: u32) -> Vec<u64> {
        let mut keys = Vec::new();
        let mut at = self.slab.0[head as usize].link.next;
        while at != head {
            keys.push(self.slab.0[at as usize].key);
            at = self.slab.0[at as usize].link.next;
        }
        keys
    }

    /// Keys of one region, most recent first.
    fn segment(&self, region: Region) -> Vec<u64> {
        let head = if region == Region::Window {
            Slab::WINDOW
        } else {
            Slab::MAIN
        };
        (self.list(head).into_iter())
            .filter(|key| self.slab.0[self.index[key] as usize].region == region)
            .collect()
    }

    fn hit_rate(&self) -> f64 {
        self.hits as f64 / (self.hits + self.misses).max(1) as f64
    }

    fn policy(&self) -> &TinyLfu {
        self.policy.as_ref().expect("a W-TinyLFU simulation")
    }

    /// Checks the lists against the policy's counts, the region tags and
    /// the boundary: the window's entries are all tagged so, the main list
    /// holds protected's entries then probation's, the first of which (or
    /// the sentinel) is the boundary.
    fn check(&self) {
        let (window_len, _, protected_len, _) = self.policy().sizes();
        let region = |key: &u64| self.slab.0[self.index[key] as usize].region;
        let window = self.list(Slab::WINDOW);
        assert!(window.iter().all(|key| region(key) == Region::Window));
        assert_eq!(window.len(), window_len);
        let main = self.list(Slab::MAIN);
        let protected = main
            .iter()
            .take_while(|key| region(key) == Region::Protected);
        assert_eq!(protected.count(), protected_len);
        let probation = &main[protected_len..];
        assert!(probation.iter().all(|key| region(key) == Region::Probation));
        let boundary = probation.first().map_or(Slab::MAIN, |key| self.index[key]);
        assert_eq!(self.policy().boundary(), boundary);
        assert_eq!(window.len() + main.len(), self.len());
        assert!(self.len() <= self.maximum);
    }
}

/// A deterministic xorshift stream.
pub(super) struct Random(pub(super) u64);

impl Random {
    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A Zipf-like key in `0..n`: rank r drawn with probability ~ 1/r.
    pub(super) fn skewed(&mut self, n: u64) -> u64 {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        ((n as f64).powf(u) - 1.0) as u64
    }
}

#[test]
fn a_new_entry_enters_the_window_and_is_found_at_once() {
    let mut sim = Sim::new(100, true);
    assert!(!sim.access(1));
    assert_eq!(sim.list(Slab::WINDOW), vec![1]);
    assert!(sim.access(1));
    sim.check();
}

#[test]
fn window_overflow_moves_the_oldest_window_entry_to_probation() {
    let mut sim = Sim::new(100, true); // window of 1
    sim.access(1);
    sim.access(2);
    assert_eq!(sim.list(Slab::WINDOW), vec![2]);
    assert_eq!(sim.segment(Region::Probation), vec![1]);
    sim.check();
}

#[test]
fn a_probation_hit_is_promoted_to_protected() {
    let mut sim = Sim::new(100, true);
    sim.access(1);
    sim.access(2);
    sim.access(1);
    assert_eq!(sim.segment(Region::Protected), vec![1]);
    assert!(sim.segment(Region::Probation).is_empty());
    sim.check();
}

#[test]
fn a_frequent_victim_beats_a_new_candidate() {
    let mut sim = Sim::new(2, true);
    for _ in 0..5 {
        sim.access(1); // frequent, in main after the next key arrives
    }
    sim.access(2);
    assert_eq!(sim.list(Slab::WINDOW), vec![2]);
    sim.access(3); // candidate 2 (seen once) against victim 1 (seen 5 times)
    assert!(sim.contains(1) && sim.contains(3) && !sim.contains(2));
    assert_eq!((sim.evicted, sim.rejected), (0, 1));
    sim.check();
}

#[test]
fn a_more_frequent_candidate_replaces_the_victim() {
    let mut sim = Sim::new(2, true);
    sim.access(1);
    sim.access(2); // 1 moves to probation
    for _ in 0..5 {
        sim.access(2);
    }
    sim.access(3); // candidate 2 (6 times) against victim 1 (once)
    assert!(sim.contains(2) && sim.contains(3) && !sim.contains(1));
    assert_eq!((sim.evicted, sim.rejected), (1, 0));
    sim.check();
}

#[test]
fn protected_overflow_is_demoted_to_probation_at_the_next_new_entry() {
    let mut sim = Sim::new(10, true); // window 1, main 9, protected at most 7
    for key in 0..10 {
        sim.access(key);
    }
    for key in 0..9 {
        sim.access(key); // every main entry promoted in turn
    }
    let (_, _, protected_len, protected_max) = sim.policy().sizes();
    assert_eq!(protected_max, 7);
    assert_eq!(protected_len, 9); // hits do not demote
    assert!(sim.segment(Region::Probation).is_empty());
    sim.check();
    // A new key: the victim (protected's last, 0, as probation is empty)
    // beats the candidate (9) on a tie, then the overflow is demoted.
    sim.access(100);
    assert_eq!(sim.rejected, 1);
    assert_eq!(sim.policy().sizes().2, 7);
    assert_eq!(sim.segment(Region::Probation), vec![1, 0]);
    sim.check();
}

#[test]
fn a_probation_hit_is_counted_when_its_entry_is_demoted() {
    let mut sim = Sim::new(10, true); // window 1, protected at most 7
    let frequency = |sim: &Sim, key| sim.policy().sketch().frequency(table_hash(key));
    for key in 0..10 {
        sim.access(key);
    }
    assert_eq!(frequency(&sim, 9), 1);
    sim.access(9); // a window hit counts
    assert_eq!(frequency(&sim, 9), 2);
    sim.access(0); // a probation hit promotes without counting
    assert_eq!(sim.segment(Region::Protected), vec![0]);
    assert_eq!(frequency(&sim, 0), 1);
    sim.access(0); // a protected hit counts
    assert_eq!(frequency(&sim, 0), 2);
    for key in 1..9 {
        sim.access(key); // protected overflows by 2 (0 and 1 are its last)
    }
    assert_eq!((frequency(&sim, 1), frequency(&sim, 2)), (1, 1));
    sim.access(100); // the next new entry demotes 0 and 1, each counted
    assert_eq!(sim.segment(Region::Probation), vec![1, 0]);
    assert_eq!((frequency(&sim, 0), frequency(&sim, 1)), (3, 2));
    assert_eq!(frequency(&sim, 2), 1); // still protected, uncounted
    sim.check();
}

#[test]
fn lists_stay_consistent_under_a_random_workload() {
    let mut sim = Sim::new(64, true);
    let mut random = Random(7);
    for step in 0..50_000 {
        sim.access(random.skewed(1000));
        if step % 997 == 0 {
            sim.check();
        }
    }
    sim.check();
    assert_eq!(sim.hits + sim.misses, 50_000);
    assert_eq!(sim.misses - sim.len() as u64, sim.evicted + sim.rejected);
}

#[test]
fn a_loop_larger_than_the_cache_still_hits_under_tinylfu_but_never_under_lru() {
    let run = |tinylfu| {
        let mut sim = Sim::new(100, tinylfu);
        for _ in 0..200 {
            for key in 0..120 {
                sim.access(key);
            }
        }
        sim.hit_rate()
    };
    assert_eq!(run(false), 0.0);
    assert!(run(true) > 0.6, "{}", run(true));
}

/// Replays `requests` keys from `next` through W-TinyLFU and LRU: (window
/// limit at the end, tinylfu hit rate, lru hit rate).
fn window_after(
    maximum: usize,
    requests: usize,
    mut next: impl FnMut(usize) -> u64,
) -> (usize, f64, f64) {
    let keys: Vec<u64> = (0..requests).map(&mut next).collect();
    let mut tinylfu = Sim::new(maximum, true);
    let mut lru = Sim::new(maximum, false);
    for &key in &keys {
        tinylfu.access(key);
        lru.access(key);
    }
    tinylfu.check();
    (
        tinylfu.policy().sizes().1,
        tinylfu.hit_rate(),
        lru.hit_rate(),
    )
}

#[test]
fn the_climber_grows_the_window_under_a_recency_workload() {
    // Each key is reused three times, about 600 requests apart, then never
    // again: only recency predicts hits, so the window should take most of the
    // cache and the hit rate come close to LRU's.
    let maximum = 1000;
    let (window, tinylfu, lru) = window_after(maximum, 400_000, |step| {
        (step / 4 + (step % 4) * 150) as u64
    });
    assert!(window > maximum / 2, "window {window} of {maximum}");
    assert!(tinylfu > lru - 0.05, "tinylfu {tinylfu:.3}, lru {lru:.3}");
}

#[test]
fn a_small_cache_grows_its_window_under_a_recency_workload_too() {
    // The same at 200 entries, which climb on the hit rate: reuses 120
    // requests apart, so the window must hold 60 % of the cache before the
    // hit rate moves at all; the hit rate alone never found it (window 84,
    // 0.064 hits against LRU's 0.750), the returning rejects do.
    let maximum = 200;
    let (window, tinylfu, lru) =
        window_after(maximum, 200_000, |step| (step / 4 + (step % 4) * 30) as u64);
    assert!(window > maximum / 2, "window {window} of {maximum}");
    assert!(tinylfu > lru - 0.05, "tinylfu {tinylfu:.3}, lru {lru:.3}");
}

#[test]
fn the_climber_keeps_the_window_small_under_scans_over_a_frequent_set() {
    // A hot set that fits, interleaved with a scan of ever-new keys: only
    // frequency predicts hits, so the main region should keep most of the cache.
    let maximum = 1000;
    let mut random = Random(11);
    let (window, tinylfu, lru) = window_after(maximum, 400_000, |step| {
        if step % 2 == 0 {
            random.skewed(800)
        } else {
            1_000_000 + step as u64
        }
    });
    assert!(window < maximum / 2, "window {window} of {maximum}");
    assert!(tinylfu > lru + 0.05, "tinylfu {tinylfu:.3}, lru {lru:.3}");
}

/// Replays `requests` keys from `next` through W-TinyLFU with shadows
/// (`shadow.rs`): (window limit at the end, hit rate).
fn shadowed_window_after(
    maximum: usize,
    requests: usize,
    mut next: impl FnMut(usize) -> u64,
) -> (usize, f64) {
    let mut sim = Sim::new(maximum, true);
    sim.policy = sim.policy.map(|p| p.with_shadows(0x5EED));
    for step in 0..requests {
        sim.access(next(step));
    }
    sim.check();
    (sim.policy().sizes().1, sim.hit_rate())
}

#[test]
fn lists_stay_consistent_with_sampled_keys_under_a_random_workload() {
    // 1,000 entries: a quarter of the keys sampled, whose hits take the
    // sampled branch (promotions and demotions by `set_region`).
    let mut sim = Sim::new(1000, true);
    sim.policy = sim.policy.map(|p| p.with_shadows(0x5EED));
    let mut random = Random(5);
    for step in 0..200_000 {
        let key = if step % 3 == 0 {
            random.next() % 20_000
        } else {
            random.skewed(3000)
        };
        sim.access(key);
        if step % 9973 == 0 {
            sim.check();
        }
    }
    sim.check();
    let sampled = sim.slab.0.iter().filter(|node| node.sampled).count();
    assert!((150..400).contains(&sampled), "{sampled} sampled of 1,000");
    assert_eq!(sim.misses - sim.len() as u64, sim.evicted + sim.rejected);
}

#[test]
fn the_shadows_keep_the_window_in_their_band() {
    // The recency workload: the shadows impose 0.99, the largest, whose band
    // is 0.99 itself: the window takes probation's room too (the climber
    // alone never grows it past the protected segment's, 80 %).
    let (window, rate) =
        shadowed_window_after(1000, 400_000, |step| (step / 4 + (step % 4) * 150) as u64);
    assert!(window >= 900, "window {window}, hit rate {rate:.3}");
    // Scans over a frequent set: the shadows prefer 0.005 or 0.05 (`shadow.rs`)
    // and the window stays at most 10 %.
    let mut random = Random(11);
    let (window, rate) = shadowed_window_after(1000, 400_000, |step| {
        if step % 2 == 0 {
            random.skewed(800)
        } else {
            1_000_000 + step as u64
        }
    });
    assert!(window <= 100, "window {window}, hit rate {rate:.3}");
}

#[test]
fn probation_gets_its_room_back_when_the_window_shrinks_again() {
    // The recency workload takes the window to 99 % (probation gave room),
    // then scans over a frequent set bring it down: probation is refilled
    // to its size before the protected segment gets any room back.
    let mut sim = Sim::new(1000, true);
    sim.policy = sim.policy.map(|p| p.with_shadows(0x5EED));
    let (_, window, _, protected) = sim.policy().sizes();
    let probation = 1000 - window - protected;
    for step in 0..400_000 {
        sim.access((step / 4 + (step % 4) * 150) as u64);
    }
    let (_, window, _, protected) = sim.policy().sizes();
    assert!(
        window >= 900 && protected == 0,
        "window {window}, protected {protected}"
    );
    let mut random = Random(11);
    for step in 0..1_600_000 {
        sim.access(if step % 2 == 0 {
            random.skewed(800)
        } else {
            1_000_000 + step as u64
        });
    }
    sim.check();
    let (_, window, _, protected) = sim.policy().sizes();
    assert!(window <= 100, "window {window}");
    assert_eq!(1000 - window - protected, probation, "window {window}");
}

#[test]
fn the_window_is_emptied_into_probation_when_the_cache_fills() {
    let mut sim = Sim::new(1000, true);
    let mut key = 100;
    while sim.len() < 999 {
        sim.access(key);
        key += 1;
        for hot in 0..5 {
            sim.access(hot);
        }
    }
    let window = sim.list(Slab::WINDOW);
    assert!((0..5).all(|hot| window.contains(&hot)), "{window:?}");
    sim.access(key); // the cache is full
    assert_eq!(sim.list(Slab::WINDOW), Vec::<u64>::new());
    assert_eq!(sim.policy().sizes().1, 10, "the window keeps its limit");
    let probation = sim.segment(Region::Probation);
    assert_eq!(probation[0], key);
    assert_eq!(
        probation[1..=window.len()],
        window,
        "the window's order kept"
    );
    // The hot keys' next hits promote them.
    for hot in 0..5 {
        assert!(sim.access(hot));
    }
    let protected = sim.segment(Region::Protected);
    assert!((0..5).all(|hot| protected.contains(&hot)), "{protected:?}");
    // While the window has room, new keys take it and probation's victims
    // leave without a duel; then the window's oldest duels again (a tie:
    // the victim stays).
    let (evicted, rejected) = (sim.evicted, sim.rejected);
    for key in 20_000..20_010 {
        sim.access(key);
    }
    assert_eq!((sim.evicted, sim.rejected), (evicted + 10, rejected));
    assert_eq!(sim.list(Slab::WINDOW).len(), 10);
    sim.access(20_010);
    assert_eq!((sim.evicted, sim.rejected), (evicted + 10, rejected + 1));
    assert!(!sim.contains(20_000) && sim.contains(20_010));
    sim.check();
}

#[test]
fn a_large_window_is_emptied_a_bounded_number_of_entries_per_call() {
    // A window of 3,000 entries: 1,000 move per new entry.
    let mut sim = Sim::new(300_000, true);
    for key in 0..300_000 {
        sim.access(key);
    }
    let (window, ..) = sim.policy().sizes();
    assert_eq!(window, 2000);
    for key in 1_000_000..1_000_002 {
        sim.access(key);
    }
    assert_eq!(sim.list(Slab::WINDOW), vec![1_000_001, 1_000_000]);
    sim.check();
}

/// Keys of a trace file: little-endian 64-bit integers.
fn read_trace(path: &std::path::Path) -> Vec<u64> {
    let bytes = std::fs::read(path).expect("a readable trace");
    bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect()
}

#[test]
#[ignore = "a benchmark: needs PGCACHE_TRACES"]
fn replay_traces() {
    let Ok(folder) = std::env::var("PGCACHE_TRACES") else {
        panic!("PGCACHE_TRACES names a folder of *.u64 traces");
    };
    let wanted: HashMap<String, Vec<usize>> = std::env::var("PGCACHE_CAPACITIES")
        .unwrap_or_default()
        .split(',')
        .filter_map(|item| item.split_once(':'))
        .fold(HashMap::new(), |mut map, (name, capacity)| {
            map.entry(name.to_string())
                .or_default()
                .push(capacity.parse().expect("a capacity"));
            map
        });
    let seeds: u64 = std::env::var("PGCACHE_SEEDS").map_or(1, |s| s.parse().expect("a count"));
    let mut paths: Vec<_> = std::fs::read_dir(folder)
        .expect("a folder")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "u64"))
        .collect();
    paths.sort();
    for path in paths {
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        if !wanted.is_empty() && !wanted.contains_key(&name) {
            continue;
        }
        let keys = read_trace(&path);
        let distinct = keys.iter().collect::<std::collections::HashSet<_>>().len();
        let capacities = wanted
            .get(&name)
            .cloned()
            .unwrap_or_else(|| vec![distinct / 8, distinct / 2]);
        for capacity in capacities {
            let mut lru = Sim::new(capacity.max(1), false);
            for &key in &keys {
                lru.access(key);
            }
            let mut rates = Vec::new();
            let mut windows = Vec::new();
            for seed in 0..seeds {
                let mut sim = Sim::with_seed(capacity.max(1), true, 0x5EED + seed);
                for &key in &keys {
                    sim.access(key);
                }
                rates.push(sim.hit_rate());
                windows.push(sim.policy().sizes().1);
            }
            let mean = rates.iter().sum::<f64>() / rates.len() as f64;
            let low = rates.iter().copied().fold(f64::INFINITY, f64::min);
            eprintln!(
                "{name:>20} @ {capacity:>6}: lru {:.6}  tinylfu {mean:.6} (lowest {low:.6}, windows {windows:?})",
                lru.hit_rate()
            );
        }
    }
}
