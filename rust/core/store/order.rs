//! The store's side of the eviction policy: which list a node is in, how a
//! hit, a new entry and a departure move it, and which entry a full store
//! gives up. `lru` keeps one list (the LRU list in `lru.rs`); `tinylfu`
//! threads the same links through two lists, the window and the main region
//! (`policy/tinylfu.rs`), its region tag kept in two bits of the node's hash
//! (see `REGION_MASK`).

use super::{Link, Node, Store, LRU, MAIN, REGION_MASK, REGION_SHIFT, SAMPLED, SAMPLED_SHIFT};
use crate::core::policy::{Eviction, Nodes, PolicyKind, Region, TinyLfu};

/// The policy state of a store. Kept inline (no box): the hit path reads it,
/// and there is one per cache.
#[allow(clippy::large_enum_variant)]
pub(super) enum Policy {
    Lru,
    TinyLfu(TinyLfu),
}

impl Policy {
    /// The policy for a store of `max_size` entries (`None`: unbounded, where
    /// nothing is evicted and plain LRU order is kept whatever was asked).
    pub(super) fn new(kind: PolicyKind, max_size: Option<usize>, seed: u64) -> Self {
        match (kind, max_size) {
            (PolicyKind::TinyLfu, Some(maximum)) => {
                Policy::TinyLfu(TinyLfu::new(maximum, seed, MAIN, PROTECTED_TAG))
            }
            _ => Policy::Lru,
        }
    }

    pub(super) fn kind(&self) -> PolicyKind {
        match self {
            Policy::Lru => PolicyKind::Lru,
            Policy::TinyLfu(_) => PolicyKind::TinyLfu,
        }
    }
}

/// The slab as the policy sees it.
pub(super) struct Slab<'a, K, V>(pub(super) &'a mut [Node<K, V>]);

impl<K, V> Slab<'_, K, V> {
    #[inline(always)]
    fn node(&self, index: u32) -> &Node<K, V> {
        debug_assert!((index as usize) < self.0.len());
        // SAFETY: indices come from the hash index or the list links, which
        // only hold indices of nodes in the slab (see `Store::link`).
        unsafe { self.0.get_unchecked(index as usize) }
    }

    #[inline(always)]
    fn node_mut(&mut self, index: u32) -> &mut Node<K, V> {
        debug_assert!((index as usize) < self.0.len());
        // SAFETY: as in `node`.
        unsafe { self.0.get_unchecked_mut(index as usize) }
    }
}

/// A protected entry's region tag in its stored hash.
const PROTECTED_TAG: u64 = (Region::Protected as u64) << REGION_SHIFT;

/// Where a stored hash keeps its region's two bits: a sampled key's are
/// apart from the fast tests' (see `REGION_MASK`).
#[inline(always)]
fn region_shift(hash: u64) -> u32 {
    if hash & SAMPLED != 0 {
        SAMPLED_SHIFT
    } else {
        REGION_SHIFT
    }
}

impl<K, V> Nodes for Slab<'_, K, V> {
    const WINDOW: u32 = LRU;
    const MAIN: u32 = MAIN;

    #[inline(always)]
    fn link(&mut self, index: u32) -> &mut Link {
        &mut self.node_mut(index).lru
    }

    #[inline(always)]
    fn region(&self, index: u32) -> Region {
        let hash = self.node(index).hash;
        Region::from_bits((hash >> region_shift(hash)) as u8 & 3)
    }

    #[inline(always)]
    fn set_region(&mut self, index: u32, region: Region) {
        let node = self.node_mut(index);
        let shift = region_shift(node.hash);
        node.hash = (node.hash & !(3 << shift)) | (u64::from(region as u8) << shift);
    }

    #[inline(always)]
    fn is_sampled(&self, index: u32) -> bool {
        self.node(index).hash & SAMPLED != 0
    }

    #[inline(always)]
    fn mark_sampled(&mut self, index: u32) {
        let region = self.region(index) as u64;
        let node = self.node_mut(index);
        node.hash = (node.hash & !REGION_MASK) | SAMPLED | (region << SAMPLED_SHIFT);
    }

    #[inline(always)]
    fn hash(&self, index: u32) -> u64 {
        self.node(index).hash & !REGION_MASK
    }

    #[inline(always)]
    fn in_probation(&self, index: u32) -> bool {
        // Probation's tag is the only one with its low bit set (3 is never
        // written; a sampled key's tag is clear).
        const _: () = assert!(Region::Probation as u8 == 1 && Region::Protected as u8 & 1 == 0);
        self.node(index).hash & (1 << REGION_SHIFT) != 0
    }

    const PROTECTED_TAG: u64 = PROTECTED_TAG;

    #[inline(always)]
    fn tagged_hash(&self, index: u32) -> u64 {
        self.node(index).hash
    }

    #[inline(always)]
    fn in_protected(&self, index: u32) -> bool {
        const _: () = assert!(Region::Protected as u8 == 2 && Region::Probation as u8 & 2 == 0);
        self.node(index).hash & (2 << REGION_SHIFT) != 0
    }

    #[inline(always)]
    fn swap_segment(&mut self, index: u32) {
        // The segments' tags differ in both bits: flipping them swaps the two
        // (for a key out of the sample, as the trait asks).
        const _: () = assert!(Region::Probation as u8 ^ Region::Protected as u8 == 3);
        self.node_mut(index).hash ^= 3 << REGION_SHIFT;
    }
}

impl<K, V, F> Store<K, V, F> {
    pub fn policy(&self) -> PolicyKind {
        self.policy.kind()
    }

    /// W-TinyLFU's entries per region and limits (window, window limit,
    /// protected, protected limit); `None` under LRU.
    pub fn regions(&self) -> Option<(usize, usize, usize, usize)> {
        match &self.policy {
            Policy::TinyLfu(p) => Some(p.sizes()),
            Policy::Lru => None,
        }
    }

    /// A hit or an overwrite.
    #[inline(always)]
    pub(super) fn on_access(&mut self, index: u32) {
        match &mut self.policy {
            Policy::Lru => self.lru_move_to_front(index),
            Policy::TinyLfu(p) => p.on_hit(&mut Slab(&mut self.nodes), index),
        }
    }

    /// A new entry, already counted in `len`.
    #[inline(always)]
    pub(super) fn on_new(&mut self, index: u32) {
        match &mut self.policy {
            Policy::Lru => self.lru_push_front(index),
            Policy::TinyLfu(p) => {
                let mut slab = Slab(&mut self.nodes);
                p.on_insert(&mut slab, index);
                let (hits, misses) = self.metrics.lookups();
                p.maintain(&mut slab, self.len, hits, misses);
            }
        }
    }

    /// An entry leaves its list.
    #[inline(always)]
    pub(super) fn on_leave(&mut self, index: u32) {
        match &mut self.policy {
            Policy::Lru => self.lru_unlink(index),
            Policy::TinyLfu(p) => p.on_remove(&mut Slab(&mut self.nodes), index),
        }
    }

    /// Every entry left; the lists were reset with the slab.
    pub(super) fn on_clear(&mut self) {
        if let Policy::TinyLfu(p) = &mut self.policy {
            p.on_clear::<Slab<'_, K, V>>();
        }
    }

    /// The entry a full store gives up for a new one, counted as an eviction
    /// or (a W-TinyLFU candidate that lost) a rejection.
    #[inline(always)]
    pub(super) fn victim(&mut self) -> u32 {
        match &mut self.policy {
            Policy::Lru => {
                self.metrics.evicted();
                self.nodes[LRU as usize].lru.prev
            }
            Policy::TinyLfu(p) => match p.evict(&mut Slab(&mut self.nodes)) {
                Some(Eviction::Evicted(index)) => {
                    self.metrics.evicted();
                    index
                }
                Some(Eviction::Rejected(index)) => {
                    self.metrics.rejected();
                    index
                }
                None => unreachable!("a full store holds entries"),
            },
        }
    }

    /// The heads of the lists, in the order `iter_live` reports them: the
    /// window (or the one LRU list), then the main region (the protected
    /// segment, then probation).
    pub(super) fn list_heads(&self) -> [u32; 2] {
        [LRU, MAIN]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tag_tests_and_the_segment_swap_agree_with_the_decoded_region() {
        let mut nodes: Vec<Node<(), ()>> = (0..2).map(Node::sentinel).collect();
        nodes[1].hash = 0x0123_4567_89AB_CDEF & !REGION_MASK;
        let mut slab = Slab(&mut nodes);
        for region in [Region::Window, Region::Probation, Region::Protected] {
            slab.set_region(1, region);
            assert_eq!(slab.region(1), region);
            assert_eq!(slab.in_probation(1), region == Region::Probation);
            assert_eq!(slab.in_window(1), region == Region::Window);
            assert_eq!(slab.in_protected(1), region == Region::Protected);
            assert_eq!(slab.hash(1), 0x0123_4567_89AB_CDEF & !REGION_MASK);
        }
        // A protected entry's stored hash, less its tag, is its hash.
        let tag = <Slab<(), ()> as Nodes>::PROTECTED_TAG;
        assert_eq!(slab.tagged_hash(1) ^ tag, slab.hash(1));
        slab.swap_segment(1);
        assert_eq!(slab.region(1), Region::Probation);
        slab.swap_segment(1);
        assert_eq!(slab.region(1), Region::Protected);
        assert_eq!(slab.hash(1), 0x0123_4567_89AB_CDEF & !REGION_MASK);
        assert!(!slab.is_sampled(1));
    }

    #[test]
    fn a_sampled_key_keeps_its_region_and_hash_and_fails_the_fast_tests() {
        let hash = 0x0123_4567_89AB_CDEF & !REGION_MASK;
        for region in [Region::Window, Region::Probation, Region::Protected] {
            let mut nodes: Vec<Node<(), ()>> = (0..2).map(Node::sentinel).collect();
            nodes[1].hash = hash;
            let mut slab = Slab(&mut nodes);
            slab.set_region(1, region);
            slab.mark_sampled(1);
            assert!(slab.is_sampled(1));
            assert_eq!(slab.region(1), region);
            assert_eq!(slab.hash(1), hash);
            for to in [Region::Window, Region::Probation, Region::Protected] {
                slab.set_region(1, to);
                assert_eq!(slab.region(1), to);
                assert!(!slab.in_probation(1) && !slab.in_protected(1));
                assert!(slab.is_sampled(1));
                assert_eq!(slab.hash(1), hash);
            }
        }
    }
}
