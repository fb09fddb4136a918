//! How often a key was seen lately: TinyLFU's frequency filter. A count-min
//! sketch of 4-bit counters, a doorkeeper in front of it and periodic halving
//! (Einziger, Friedman and Manes, "TinyLFU: A Highly Efficient Cache Admission
//! Policy").
//!
//! Layout, chosen for the hit path: a key's four counters lie in one `u64`
//! word, one counter in each 16-bit lane, so an increment is one load, a few
//! bit operations that skip saturated counters, and one store. After
//! `sample_size` increments that raised a count (as Caffeine and theine count
//! them: a hot key's saturated counters do not shorten the history) the
//! counters are halved, so old popularity fades. The check runs when a key is
//! added, so the hit path only counts.
//!
//! The doorkeeper is a Bloom filter with two bits in one word: a key's first
//! sighting in a sample only sets its bits, so the many keys seen once never
//! reach the counters; it is emptied at each halving. It serves caches of at
//! least `DOORKEEPER_MIN` entries, where it keeps one-hit wonders from
//! crowding the counters. Smaller caches go without: emptied at every
//! halving, it forgets keys whose reuse distance is longer
//! than that, and on the small LIRS traces (126 to 1,541 entries) it cost up to
//! 7 points of hit rate (`benches/hitrate.py`, simulator in `simulate.rs`).
//!
//! The sketch is indexed by a keyed hash (a random seed per sketch): crafted
//! keys cannot be made to share counters with a victim they want to pin.
//!
//! Memory: 32 bytes of counters per entry of capacity up to `ROOMY_WORDS`
//! words (1 MiB, reached at 32,768 entries), never less than 4 bytes per
//! entry (from 262,144 entries on), plus half a byte of doorkeeper from
//! `DOORKEEPER_MIN` entries. A small cache's sketch is thus wide enough that
//! keys seldom share all their counters: on the LIRS traces (126 to 2,842
//! entries) 4 bytes per entry cost up to 2 points of hit rate against 16
//! (multi2, Zipf with scans), and 32 gain on 16 up to half a point (multi1 @
//! 325 0.503 -> 0.508, multi2 @ 710 0.532 -> 0.537, Zipf 0.8 and 1.0 @ 1,250
//! +0.3; 33 of the 38 rows met against 31, mean distance to the optimum
//! 0.0434 -> 0.0426; `simulate.rs`, 16 seeds). Only gli @ 1,264 prefers a
//! narrower, noisier table (0.530 -> 0.528); 48 and 64 bytes: multi1 @ 325
//! 0.506 and 0.502, gli @ 1,264 0.527. The per-entry budget, measured at a
//! million entries, is unchanged, and so is the largest table. The tables are sized when the cache first
//! fills to half its capacity, so a large, mostly empty cache does not pay;
//! the counts of the small table carry over, halved. Starting afresh there
//! cost up to 9 points where a loop's keys had to outlast a scan (LIRS ps @
//! 1,541: 0.631 against 0.705 carried, the optimum; multi1 @ 1,303 and multi2
//! @ 2,842 +1.3 and +1.4 points); carrying them unhalved cost web07 @ 10,000,
//! whose recency favours the extra aging, 0.6 points (`simulate.rs`, 3 seeds).

/// Every counter's three low bits: what survives a halving's shift.
const HALF: u64 = 0x7777_7777_7777_7777;
/// The smallest counter table, in words (4 KiB).
const MIN_WORDS: usize = 512;
/// Counter words per entry of capacity, up to `ROOMY_WORDS` words.
const ROOMY_WORDS_PER_ENTRY: usize = 4;
/// The largest table sized at `ROOMY_WORDS_PER_ENTRY` (1 MiB).
const ROOMY_WORDS: usize = 1 << 17;
/// The saturation value of a counter.
pub const MAX_COUNT: u32 = 15;
/// Doorkeeper bits per entry of capacity.
const DOOR_BITS: usize = 4;
/// The smallest capacity with a doorkeeper.
pub const DOORKEEPER_MIN: usize = 1 << 16;
/// Counting increments per entry of capacity between two halvings (TinyLFU's
/// sample size W = 10 C, as in Caffeine), for every cache. Caches of at most
/// `climber::REACTIVE_MAX` entries used twice as long a sample (for tables
/// wide for them): loop @ 126 and cs @ 176 gained 0.1 and 0.6 points, but cpp
/// @ 152 lost 0.4 and fell behind moka-py (0.813 against 0.817 to 0.821), which
/// the shorter sample meets (0.817; `simulate.rs`, 16 seeds). 15 per entry
/// for every cache cost loop @ 500 to @ 1,000 up to 3.8 points.
const SAMPLE_FACTOR: f64 = 10.0;
/// Bits 0, 4, 8, ... 60: the lowest bit of each counter.
const ONES: u64 = 0x1111_1111_1111_1111;

/// For each byte of hash, the 4 counters it selects in a word: one counter in
/// each 16-bit lane, two bits choosing which. Ones at each selected
/// counter's lowest bit.
const LANES: [u64; 256] = {
    let mut table = [0u64; 256];
    let mut byte = 0;
    while byte < 256 {
        let mut mask = 0u64;
        let mut lane = 0;
        while lane < 4 {
            let counter = (byte >> (2 * lane)) & 3;
            mask |= 1 << (16 * lane + 4 * counter);
            lane += 1;
        }
        table[byte] = mask;
        byte += 1;
    }
    table
};

/// `index * len / 2^32` for a 32-bit `index`: an index in `0..len` without a
/// division or a power-of-two size (Lemire's "fast range").
#[inline(always)]
fn reduce(index: u64, len: usize) -> usize {
    (((index & 0xFFFF_FFFF) * len as u64) >> 32) as usize
}

/// The counters of one key in a word: ones at the lowest bit of each.
#[inline(always)]
fn lanes(spread: u64) -> u64 {
    LANES[(spread & 0xFF) as usize]
}

/// The ones to add to `word` for the counters selected by `lanes`: one at each
/// selected counter's lowest bit, unless it is 15. Branch-free: a counter is 15
/// when its four bits are set, which two shifted ANDs fold into its lowest bit.
#[inline(always)]
fn increments(word: u64, lanes: u64) -> u64 {
    let pairs = word & (word >> 2);
    let full = pairs & (pairs >> 1);
    lanes & !full
}

/// Adds one to each counter selected by `lanes` that is below 15.
#[cfg(test)]
fn increment_word(word: u64, lanes: u64) -> u64 {
    word + increments(word, lanes)
}

/// The smallest of the counters selected by `lanes` (one in each lane):
/// unrolled, with no loop over the mask's bits.
#[inline(always)]
fn min_count(word: u64, lanes: u64) -> u32 {
    let mut min = u64::from(MAX_COUNT);
    for lane in 0..4 {
        let selected = (lanes >> (16 * lane)) & 0xFFFF;
        let shift = 16 * lane + u64::from(selected.trailing_zeros() & 15);
        min = min.min((word >> shift) & 0xF);
    }
    min as u32
}

/// A table of `words` counter words holding `old`'s counts: a key's word
/// index is `reduce` of the same 32 hash bits in both, so new word `j` takes
/// old word `j * old / words`, which is the key's old word except for keys
/// near a boundary of the old words (a fraction `old / words` of them).
fn carry(old: &[u64], words: usize) -> Vec<u64> {
    let (from, to) = (old.len() as u64, words as u64);
    (0..to).map(|j| old[(j * from / to) as usize]).collect()
}

/// A sketch of recent key frequencies, in `0..=MAX_COUNT + 1`.
pub struct Sketch {
    counters: Vec<u64>,
    doorkeeper: Vec<u64>,
    seed: u64,
    sample_size: u64,
    /// Increments that raised a count, since the last halving (less what the
    /// halving took away).
    additions: u64,
}

impl Sketch {
    /// A sketch sized for `capacity` entries, with its own hashing `seed`.
    pub fn new(capacity: usize, seed: u64) -> Self {
        let mut sketch = Sketch {
            counters: Vec::new(),
            doorkeeper: Vec::new(),
            seed,
            sample_size: 0,
            additions: 0,
        };
        sketch.resize(capacity);
        sketch
    }

    /// Sizes the tables for `capacity` entries. A sketch that already counted
    /// (a cache that reached half its capacity) keeps its counts, halved: each
    /// new word copies the old word its keys mapped to, so a key's estimate
    /// carries over (see `carry`).
    pub fn resize(&mut self, capacity: usize) {
        let roomy = capacity
            .saturating_mul(ROOMY_WORDS_PER_ENTRY)
            .min(ROOMY_WORDS);
        let words = (capacity / 2)
            .max(roomy)
            .clamp(MIN_WORDS, u32::MAX as usize);
        if self.counters.is_empty() {
            self.counters = vec![0; words];
        } else {
            self.counters = carry(&self.counters, words);
            self.halve();
        }
        self.doorkeeper = if capacity >= DOORKEEPER_MIN {
            vec![0; (capacity * DOOR_BITS).div_ceil(64)]
        } else {
            Vec::new()
        };
        let factor = super::knob("SAMPLE", SAMPLE_FACTOR);
        self.sample_size = ((capacity.max(1) as f64 * factor) as u64).max(1);
    }

    pub fn has_doorkeeper(&self) -> bool {
        !self.doorkeeper.is_empty()
    }

    /// Bytes of heap memory the tables hold.
    pub fn heap_bytes(&self) -> usize {
        (self.counters.len() + self.doorkeeper.len()) * 8
    }

    /// The key's table hash mixed with this sketch's seed: a multiply folded
    /// to 64 bits, so every output bit depends on every input bit.
    #[inline(always)]
    fn spread(&self, hash: u64) -> u64 {
        self.spread_keyed(hash ^ self.seed)
    }

    #[inline(always)]
    fn spread_keyed(&self, keyed: u64) -> u64 {
        let product = u128::from(keyed) * 0x9E37_79B9_7F4A_7C15;
        (product as u64) ^ ((product >> 64) as u64)
    }

    /// The doorkeeper word and bits of a spread hash.
    #[inline(always)]
    fn door(&self, spread: u64) -> (usize, u64) {
        let word = reduce(spread >> 8, self.doorkeeper.len());
        let bits = (1u64 << ((spread >> 40) & 63)) | (1u64 << ((spread >> 46) & 63));
        (word, bits)
    }

    #[inline(always)]
    fn counter_word(&self, spread: u64) -> usize {
        reduce(spread >> 32, self.counters.len())
    }

    /// Records one access. With a doorkeeper, the first in a sample only marks it.
    #[inline(always)]
    pub fn increment(&mut self, hash: u64) {
        let spread = self.spread(hash);
        if self.admitted_by_doorkeeper(spread) {
            self.count(spread);
        }
    }

    /// Adds one to the key's counters that are below 15.
    #[inline(always)]
    fn count(&mut self, spread: u64) {
        let index = self.counter_word(spread);
        // SAFETY: `reduce` returns an index below the table's length.
        let word = unsafe { self.counters.get_unchecked_mut(index) };
        let added = increments(*word, lanes(spread));
        self.additions += u64::from(added != 0);
        *word += added;
    }

    /// Records a hit: as `increment`, without the doorkeeper (a key the
    /// cache holds was seen; its estimate counts it either way).
    #[inline(always)]
    pub fn increment_hit(&mut self, hash: u64) {
        self.increment_keyed(hash ^ self.seed);
    }

    /// `increment_hit` of a hash already xored with the sketch's seed.
    #[inline(always)]
    pub fn increment_keyed(&mut self, keyed: u64) {
        self.count(self.spread_keyed(keyed));
    }

    /// Halves every count once a sample of counting increments has passed.
    #[inline]
    pub fn age(&mut self) {
        if self.additions >= self.sample_size {
            self.halve();
        }
    }

    /// Whether an access reaches the counters: always without a doorkeeper;
    /// with one, if it already knew the key (it learns it either way).
    #[inline(always)]
    fn admitted_by_doorkeeper(&mut self, spread: u64) -> bool {
        if self.doorkeeper.is_empty() {
            return true;
        }
        let (door, bits) = self.door(spread);
        // SAFETY: `reduce` returns an index below the table's length.
        let seen = unsafe { self.doorkeeper.get_unchecked_mut(door) };
        let known = *seen & bits == bits;
        *seen |= bits;
        known
    }

    /// The key's estimated accesses in the recent past: its smallest counter,
    /// plus one if a doorkeeper has seen it.
    pub fn frequency(&self, hash: u64) -> u32 {
        let spread = self.spread(hash);
        let seen = if self.doorkeeper.is_empty() {
            0
        } else {
            let (door, bits) = self.door(spread);
            u32::from(self.doorkeeper[door] & bits == bits)
        };
        // SAFETY: `reduce` returns an index below the table's length.
        let word = unsafe { *self.counters.get_unchecked(self.counter_word(spread)) };
        min_count(word, lanes(spread)) + seen
    }

    /// Ages every count: counters are halved, the doorkeeper emptied. The
    /// count of increments is halved too, less a quarter of the odd counters
    /// (the halves the shift dropped, four counters to an increment).
    #[cold]
    #[inline(never)]
    pub fn halve(&mut self) {
        let mut odd = 0u64;
        for word in &mut self.counters {
            odd += u64::from((*word & ONES).count_ones());
            *word = (*word >> 1) & HALF;
        }
        self.doorkeeper.fill(0);
        self.additions = self.additions.saturating_sub(odd / 4) / 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sketch() -> Sketch {
        Sketch::new(1000, 0x5EED)
    }

    fn with_doorkeeper() -> Sketch {
        Sketch::new(DOORKEEPER_MIN, 0x5EED)
    }

    #[test]
    fn each_lane_mask_selects_one_counter_per_lane() {
        for mask in LANES {
            assert_eq!(mask.count_ones(), 4);
            assert_eq!(mask & !ONES, 0);
            for lane in 0..4 {
                assert_eq!(((mask >> (16 * lane)) & 0xFFFF).count_ones(), 1);
            }
        }
    }

    #[test]
    fn increment_word_adds_one_to_each_selected_counter() {
        let lanes = LANES[0b11_10_01_00];
        let word = increment_word(0, lanes);
        assert_eq!(word, lanes);
        assert_eq!(min_count(word, lanes), 1);
        assert_eq!(min_count(increment_word(word, lanes), lanes), 2);
    }

    #[test]
    fn increments_add_one_below_15_and_nothing_at_15_in_every_position() {
        for position in 0..16 {
            let lanes = 1u64 << (4 * position);
            for count in 0..=15u64 {
                // The neighbours saturated: they must not leak into this counter.
                let word = (count << (4 * position)) | (!(0xFu64 << (4 * position)));
                let expected = if count < 15 { lanes } else { 0 };
                assert_eq!(increments(word, lanes), expected, "{position} {count}");
            }
        }
    }

    #[test]
    fn increment_word_saturates_each_counter_at_15_without_carrying() {
        let lanes = LANES[0];
        let mut word = 0;
        for _ in 0..40 {
            word = increment_word(word, lanes);
        }
        assert_eq!(word, lanes * 0xF);
        // A saturated counter does not stop the others in the word from counting.
        let full_first = 0xF;
        let next = increment_word(full_first, LANES[0b01_01_01_00]);
        assert_eq!(next, 0xF | (LANES[0b01_01_01_00] & !0xF));
    }

    #[test]
    fn frequency_counts_increments_up_to_15() {
        let mut s = sketch();
        assert_eq!(s.frequency(7), 0);
        for n in 1..=MAX_COUNT {
            s.increment(7);
            assert_eq!(s.frequency(7), n);
        }
        for _ in 0..10 {
            s.increment(7);
        }
        assert_eq!(s.frequency(7), MAX_COUNT);
    }

    #[test]
    fn halving_halves_every_counter() {
        let mut s = sketch();
        for _ in 0..11 {
            s.increment(7);
        }
        for _ in 0..4 {
            s.increment(8);
        }
        s.halve();
        assert_eq!((s.frequency(7), s.frequency(8)), (5, 2));
    }

    #[test]
    fn the_sample_is_ten_increments_per_entry_at_every_size() {
        for capacity in [1, 10, 400, 401, 1 << 20] {
            assert_eq!(Sketch::new(capacity, 1).sample_size, 10 * capacity as u64);
        }
    }

    #[test]
    fn a_sample_of_counting_increments_triggers_halving() {
        let mut s = Sketch::new(20, 1);
        assert_eq!(s.sample_size, 200);
        for _ in 0..215 {
            s.increment(3); // 15 count, the 200 others find the counters saturated
        }
        assert_eq!(s.additions, 15);
        s.age();
        assert_eq!(s.frequency(3), 15);
        for key in 1000..1185 {
            s.increment(key); // each raises a count: 185 more
        }
        assert_eq!(s.additions, 200);
        s.age();
        assert_eq!(s.frequency(3), 7);
        assert!(s.additions < 50, "{}", s.additions);
    }

    #[test]
    fn halving_takes_the_dropped_halves_off_the_count_of_increments() {
        let mut s = sketch();
        for _ in 0..3 {
            s.increment(7); // four counters at 3: four odd counters, one increment's worth
        }
        assert_eq!(s.additions, 3);
        s.halve();
        assert_eq!((s.frequency(7), s.additions), (1, 1)); // (3 - 1) / 2
    }

    #[test]
    fn growing_keeps_every_count_halved() {
        // 2,000 words to 131,072: keys near a boundary of the old words (about
        // 2,000 / 131,072 / 2 of them) may take a neighbour's count.
        let mut s = Sketch::new(500, 0x5EED);
        for key in 0..500u64 {
            for _ in 0..(key % 8) * 2 {
                s.increment(key);
            }
        }
        let before: Vec<u32> = (0..500u64).map(|k| s.frequency(k)).collect();
        s.resize(100_000);
        assert_eq!(s.heap_bytes(), (1 << 20) + 50_000);
        let kept = (0..500u64)
            .filter(|&k| s.frequency(k) == before[k as usize] / 2)
            .count();
        assert!(kept >= 495, "{kept} of 500 counts carried over");
    }

    #[test]
    fn only_large_sketches_have_a_doorkeeper() {
        assert!(!sketch().has_doorkeeper());
        assert!(with_doorkeeper().has_doorkeeper());
    }

    #[test]
    fn a_first_sighting_only_marks_the_doorkeeper() {
        let mut s = with_doorkeeper();
        assert_eq!(s.frequency(42), 0);
        s.increment(42);
        assert_eq!(s.frequency(42), 1);
        assert_eq!(
            min_count(
                s.counters[s.counter_word(s.spread(42))],
                lanes(s.spread(42))
            ),
            0
        );
        s.increment(42);
        assert_eq!(s.frequency(42), 2);
    }

    #[test]
    fn a_doorkeeper_adds_one_to_the_saturated_count() {
        let mut s = with_doorkeeper();
        for _ in 0..30 {
            s.increment(7);
        }
        assert_eq!(s.frequency(7), MAX_COUNT + 1);
    }

    #[test]
    fn halving_empties_the_doorkeeper() {
        let mut s = with_doorkeeper();
        for _ in 0..11 {
            s.increment(7); // doorkeeper + 10 counted
        }
        s.increment(9); // doorkeeper only
        assert_eq!((s.frequency(7), s.frequency(9)), (11, 1));
        s.halve();
        assert_eq!((s.frequency(7), s.frequency(9)), (5, 0));
        s.increment(7); // back through the doorkeeper first
        assert_eq!(s.frequency(7), 6);
    }

    #[test]
    fn distinct_keys_rarely_share_all_counters() {
        let mut s = Sketch::new(60_000, 99);
        for key in 0..30_000u64 {
            s.increment(key);
            s.increment(key);
        }
        let overcounted = (0..30_000u64).filter(|&k| s.frequency(k) > 2).count();
        assert!(
            overcounted < 3_000,
            "{overcounted} of 30,000 keys overcounted"
        );
    }

    #[test]
    fn the_seed_decides_which_keys_share_a_word() {
        let a = Sketch::new(100_000, 1);
        let b = Sketch::new(100_000, 2);
        let same = (0..1000u64)
            .filter(|&k| a.counter_word(a.spread(k)) == b.counter_word(b.spread(k)))
            .count();
        assert!(
            same < 10,
            "{same} of 1000 keys in the same word under two seeds"
        );
    }

    #[test]
    fn memory_is_32_bytes_per_entry_up_to_1_mib_then_4_and_half_a_byte_of_doorkeeper() {
        assert_eq!(Sketch::new(10, 0).heap_bytes(), MIN_WORDS * 8);
        assert_eq!(Sketch::new(10_000, 0).heap_bytes(), 320_000);
        assert_eq!(Sketch::new(32_768, 0).heap_bytes(), 1 << 20);
        assert_eq!(Sketch::new(50_000, 0).heap_bytes(), 1 << 20);
        assert_eq!(Sketch::new(100_000, 0).heap_bytes(), (1 << 20) + 50_000);
        assert_eq!(Sketch::new(1_000_000, 0).heap_bytes(), 4_000_000 + 500_000);
    }
}
