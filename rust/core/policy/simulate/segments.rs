//! The main region's one list and its boundary (`tinylfu.rs`) against the
//! layout it replaced: three lists of keys, the protected and probation
//! segments apart, moved as the policy moved them before (`Reference`). The
//! tests drive the policy directly (no housekeeping, so no climber moves but
//! the ones a test asks for) and compare every segment, most recent first.
//! A promotion may take protected past its limit; the overflow is demoted
//! when the next new entry arrives (`Pair::insert`, as `maintain` does).

use std::collections::VecDeque;

use super::{Random, Sim, Slab};
use crate::core::policy::{Eviction, Nodes, Region, TinyLfu};

/// The three segments as separate lists of keys, most recent first.
#[derive(Default)]
struct Reference {
    window: VecDeque<u64>,
    probation: VecDeque<u64>,
    protected: VecDeque<u64>,
}

impl Reference {
    fn segment(&mut self, region: Region) -> &mut VecDeque<u64> {
        match region {
            Region::Window => &mut self.window,
            Region::Probation => &mut self.probation,
            Region::Protected => &mut self.protected,
        }
    }

    /// Takes `key` out of its segment; returns which it was in.
    fn take(&mut self, key: u64) -> Region {
        for region in [Region::Window, Region::Probation, Region::Protected] {
            let list = self.segment(region);
            if let Some(at) = list.iter().position(|&k| k == key) {
                list.remove(at);
                return region;
            }
        }
        panic!("{key} is in no segment");
    }

    fn demote(&mut self) {
        if let Some(last) = self.protected.pop_back() {
            self.probation.push_front(last);
        }
    }

    fn hit(&mut self, key: u64) {
        match self.take(key) {
            Region::Window => self.window.push_front(key),
            Region::Protected | Region::Probation => self.protected.push_front(key),
        }
    }

    /// Protected's entries past its limit go to probation.
    fn settle(&mut self, protected_max: usize) {
        while self.protected.len() > protected_max {
            self.demote();
        }
    }

    fn insert(&mut self, key: u64, window_max: usize) {
        self.window.push_front(key);
        if self.window.len() > window_max {
            let last = self.window.pop_back().expect("a window entry");
            self.probation.push_front(last);
        }
    }

    /// The window grew by `moved` entries taken from the main region's end,
    /// after protected's overflow (of its new limit) went to probation.
    fn grow(&mut self, moved: usize, protected_max: usize) {
        while self.protected.len() > protected_max {
            self.demote();
        }
        for _ in 0..moved {
            let last = (self.probation.pop_back())
                .or_else(|| self.protected.pop_back())
                .expect("a main entry");
            self.window.push_front(last);
        }
    }

    /// The window shrank by `moved` entries, its least recent to probation.
    fn shrink(&mut self, moved: usize) {
        for _ in 0..moved {
            let last = self.window.pop_back().expect("a window entry");
            self.probation.push_front(last);
        }
    }
}

/// A W-TinyLFU simulation beside its reference, driven step by step.
struct Pair {
    sim: Sim,
    reference: Reference,
}

impl Pair {
    fn new(maximum: usize) -> Self {
        Pair {
            sim: Sim::new(maximum, true),
            reference: Reference::default(),
        }
    }

    fn sizes(&self) -> (usize, usize, usize, usize) {
        self.sim.policy().sizes()
    }

    /// The policy and the slab it moves, borrowed together.
    fn parts(&mut self) -> (&mut TinyLfu, &mut Slab) {
        let sim = &mut self.sim;
        (sim.policy.as_mut().expect("W-TinyLFU"), &mut sim.slab)
    }

    fn index(&self, key: u64) -> u32 {
        self.sim.index[&key]
    }

    fn hit(&mut self, key: u64) {
        let index = self.index(key);
        let (policy, slab) = self.parts();
        policy.on_hit(slab, index);
        self.reference.hit(key);
    }

    /// What a new entry's housekeeping does first: protected's overflow
    /// demoted.
    fn settle(&mut self) {
        let (policy, slab) = self.parts();
        policy.demote_overflow(slab);
        let protected_max = self.sizes().3;
        self.reference.settle(protected_max);
    }

    /// A new key; a full cache first gives up the entry the policy picks,
    /// which must be the reference's candidate or victim.
    fn insert(&mut self, key: u64) {
        if self.sim.len() >= self.sim.maximum {
            let (policy, slab) = self.parts();
            let eviction = policy.evict(slab).expect("a full cache");
            let reference = &self.reference;
            let (index, expected) = match eviction {
                // The main region's victim, or the window's last if it is empty.
                Eviction::Evicted(index) => (
                    index,
                    (reference.probation.back())
                        .or(reference.protected.back())
                        .or(reference.window.back()),
                ),
                Eviction::Rejected(index) => (index, reference.window.back()),
            };
            let gone = self.sim.slab.0[index as usize].key;
            assert_eq!(Some(&gone), expected);
            self.remove(gone);
        }
        let index = self.sim.allocate(key);
        let (policy, slab) = self.parts();
        policy.on_insert(slab, index);
        let window_max = self.sizes().1;
        self.reference.insert(key, window_max);
        self.settle();
    }

    fn remove(&mut self, key: u64) {
        let index = self.index(key);
        let (policy, slab) = self.parts();
        policy.on_remove(slab, index);
        self.sim.release(index);
        self.reference.take(key);
    }

    /// One call of a window change decided by the climber (after the
    /// overflow's demotion, as in `maintain`).
    fn resize(&mut self, pending: i64) {
        self.settle();
        let before = self.sizes().1;
        let (policy, slab) = self.parts();
        policy.resize_window(slab, pending);
        let (_, after, _, protected_max) = self.sizes();
        if after >= before {
            self.reference.grow(after - before, protected_max);
        } else {
            self.reference.shrink(before - after);
        }
    }

    /// Every segment as the reference has it, and the lists' invariants.
    fn check(&mut self) {
        self.sim.check();
        for region in [Region::Window, Region::Protected, Region::Probation] {
            let expected: Vec<u64> = self.reference.segment(region).iter().copied().collect();
            assert_eq!(self.sim.segment(region), expected, "{region:?}");
        }
    }

    fn probation_front(&self) -> Option<u64> {
        self.reference.probation.front().copied()
    }
}

/// A cache of 10 (window 1, protected at most 7) holding keys 0..10, the
/// main region's 9 all in probation.
fn filled() -> Pair {
    let mut pair = Pair::new(10);
    for key in 0..10 {
        pair.insert(key);
    }
    assert_eq!(pair.sizes(), (1, 1, 0, 7));
    assert_eq!(
        pair.sim.segment(Region::Probation),
        (0..9).rev().collect::<Vec<_>>()
    );
    pair.check();
    pair
}

#[test]
fn promoting_the_boundary_entry_moves_the_boundary_to_the_next() {
    let mut pair = filled();
    let boundary = pair.probation_front().expect("probation entries");
    assert_eq!(pair.sim.policy().boundary(), pair.index(boundary));
    pair.hit(boundary);
    pair.check();
    assert_eq!(pair.sim.segment(Region::Protected), vec![boundary]);
    assert_eq!(pair.sim.policy().boundary(), pair.index(7));
}

#[test]
fn a_full_segment_overflows_on_promotion_and_demotes_at_the_next_new_entry() {
    let mut pair = filled();
    for key in 0..7 {
        pair.hit(key); // protected fills with 6..0, probation keeps 8, 7
    }
    assert_eq!(pair.sizes().2, 7);
    pair.hit(8); // the boundary, promoted past the limit: nothing demoted yet
    pair.check();
    assert_eq!(pair.sizes().2, 8);
    assert_eq!(pair.sim.segment(Region::Probation), vec![7]);
    pair.settle(); // 0 (protected's last) demoted
    pair.check();
    assert_eq!(pair.sim.segment(Region::Probation), vec![0, 7]);
    assert_eq!(pair.sim.policy().boundary(), pair.index(0));
    pair.hit(0); // and back: 1 is demoted in its place
    pair.settle();
    pair.check();
    assert_eq!(pair.sizes().2, 7);
    assert_eq!(pair.sim.segment(Region::Probation), vec![1, 7]);
}

#[test]
fn promoting_the_only_probation_entry_leaves_the_boundary_at_the_sentinel() {
    let mut pair = Pair::new(3); // window 1, protected at most 1
    for key in 0..3 {
        pair.insert(key);
    }
    pair.hit(0);
    pair.hit(1);
    pair.settle(); // 0 demoted: probation holds 0 only
    pair.check();
    assert_eq!(pair.sim.segment(Region::Probation), vec![0]);
    pair.remove(1); // protected is empty, 0 the whole main list
    pair.hit(0);
    pair.check();
    assert_eq!(pair.sim.policy().boundary(), Slab::MAIN);
}

#[test]
fn removing_or_evicting_the_boundary_entry_moves_the_boundary_on() {
    let mut pair = filled();
    pair.hit(0);
    let boundary = pair.probation_front().expect("probation entries");
    pair.remove(boundary);
    pair.check();
    assert_eq!(pair.sim.policy().boundary(), pair.index(7));
    for key in 1..8 {
        if key != boundary {
            pair.remove(key);
        }
    }
    pair.check();
    assert!(pair.sim.segment(Region::Probation).is_empty());
    assert_eq!(pair.sim.policy().boundary(), Slab::MAIN);
    // With probation empty, the victim is protected's least recent entry.
    for key in 20..30 {
        pair.insert(key);
        pair.check();
    }
}

#[test]
fn the_climber_growing_the_window_takes_probation_then_protected() {
    let mut pair = filled();
    for key in 0..7 {
        pair.hit(key);
    }
    pair.resize(3); // protected's limit 7 -> 4: 3 demoted, 3 to the window
    pair.check();
    assert_eq!(pair.sizes(), (4, 4, 4, 4));
    // Protected's limit, 4, then probation's room (only the shadows' band
    // asks so much): protected's entries too.
    pair.resize(5);
    pair.check();
    assert_eq!(pair.sizes(), (9, 9, 0, 0));
    assert_eq!(pair.sim.segment(Region::Probation).len(), 1);
}

#[test]
fn the_climber_shrinking_the_window_fills_probation_at_the_boundary() {
    let mut pair = filled();
    pair.resize(4);
    pair.hit(8);
    pair.check();
    pair.resize(-3); // the window's three least recent to probation's front
    pair.check();
    let window_oldest = pair.sim.segment(Region::Probation)[0];
    assert_eq!(pair.sim.policy().boundary(), pair.index(window_oldest));
}

#[test]
fn one_list_and_a_boundary_move_entries_as_three_lists_did() {
    for (maximum, seed) in [(1, 3), (2, 5), (5, 7), (12, 11), (40, 13)] {
        let mut pair = Pair::new(maximum);
        let mut random = Random(seed);
        let keys = 3 * maximum as u64;
        for _ in 0..20_000 {
            let key = random.next() % keys;
            let present = pair.sim.contains(key);
            match random.next() % 20 {
                0..=10 if present => pair.hit(key),
                0..=10 => pair.insert(key),
                11..=13 if present => pair.remove(key),
                14 => pair.resize((random.next() % 11) as i64 - 5),
                _ => match pair.probation_front() {
                    Some(boundary) => pair.hit(boundary),
                    None if present => pair.hit(key),
                    None => pair.insert(key),
                },
            }
            pair.check();
        }
    }
}
