//! Which entry leaves a full cache. Two policies share the store's slab of
//! nodes and its intrusive lists:
//!
//! - `lru`: one list in access order; the least recently used entry leaves.
//! - `tinylfu`: adaptive W-TinyLFU (`tinylfu.rs`): a small LRU admission
//!   window, a segmented-LRU main region (probation and protected), a
//!   frequency sketch (`sketch.rs`) deciding which of the window's oldest
//!   entry and the main region's victim stays, and a hill climber
//!   (`climber.rs`) resizing the window from the observed hit rate, within
//!   bounds that miniature simulations choose (`shadow.rs`).
//!
//! The policies do not own nodes: they move them between lists through the
//! [`Nodes`] trait, which the store implements over its slab. Every list is
//! circular through a sentinel node (front: most recently used), so linking
//! and unlinking never branch on "is this the head".

pub mod climber;
mod shadow;
#[cfg(test)]
mod simulate;
pub mod sketch;
mod tinylfu;

pub use tinylfu::{Eviction, TinyLfu};

use std::hash::{BuildHasher, Hasher};

/// The eviction policy a store is built with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PolicyKind {
    /// Exact least-recently-used eviction.
    Lru,
    /// Adaptive W-TinyLFU.
    #[default]
    TinyLfu,
}

impl PolicyKind {
    /// The names the binding accepts, in the order documented.
    pub const NAMES: [&'static str; 2] = ["tinylfu", "lru"];

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "lru" => Some(PolicyKind::Lru),
            "tinylfu" => Some(PolicyKind::TinyLfu),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            PolicyKind::Lru => "lru",
            PolicyKind::TinyLfu => "tinylfu",
        }
    }
}

/// Links of a node in one of the access-order lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    pub prev: u32,
    pub next: u32,
}

impl Link {
    pub const fn to_self(index: u32) -> Self {
        Link {
            prev: index,
            next: index,
        }
    }
}

/// The region of W-TinyLFU an entry is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Region {
    /// The admission window: every new entry starts here.
    Window = 0,
    /// The main region's entries seen once there: the next victims.
    Probation = 1,
    /// The main region's entries hit again after admission.
    Protected = 2,
}

impl Region {
    /// The region of each value of a two-bit tag (`region as u8` wrote it; 3
    /// is never written). A table: a `match` here compiled to six more
    /// instructions on every hit, to map 3.
    const OF_BITS: [Region; 4] = [
        Region::Window,
        Region::Probation,
        Region::Protected,
        Region::Window,
    ];

    #[inline(always)]
    pub fn from_bits(bits: u8) -> Self {
        Self::OF_BITS[usize::from(bits & 3)]
    }
}

/// The slab as a policy sees it: access-order links, a region tag and the
/// key's table hash per node, and the sentinels of the two lists (the
/// window's, and the main region's: protected then probation, see `tinylfu.rs`).
pub trait Nodes {
    const WINDOW: u32;
    const MAIN: u32;

    fn link(&mut self, index: u32) -> &mut Link;
    fn region(&self, index: u32) -> Region;
    fn set_region(&mut self, index: u32, region: Region);
    fn hash(&self, index: u32) -> u64;

    /// Whether the node's key is in the shadows' sample (`shadow.rs`):
    /// `in_probation` and `in_protected` are false for it, so that its hits
    /// take `TinyLfu`'s slow branch.
    #[inline(always)]
    fn is_sampled(&self, _index: u32) -> bool {
        false
    }

    /// Puts the node's key in the shadows' sample, in the same region.
    #[inline(always)]
    fn mark_sampled(&mut self, _index: u32) {}

    /// `region(index) == Region::Probation` for a key not in the sample,
    /// for the hit path (a store may test its tag's bits without decoding
    /// them).
    #[inline(always)]
    fn in_probation(&self, index: u32) -> bool {
        self.region(index) == Region::Probation && !self.is_sampled(index)
    }

    /// What to xor with `tagged_hash` of a protected entry to get `hash`.
    const PROTECTED_TAG: u64 = 0;

    /// The hash word as stored (`hash` with the region's tag, if the store
    /// keeps it there).
    #[inline(always)]
    fn tagged_hash(&self, index: u32) -> u64 {
        self.hash(index)
    }

    /// `region(index) == Region::Protected`, as `in_probation`.
    #[inline(always)]
    fn in_protected(&self, index: u32) -> bool {
        self.region(index) == Region::Protected && !self.is_sampled(index)
    }

    /// `region(index) == Region::Window`, as `in_probation`.
    #[inline(always)]
    fn in_window(&self, index: u32) -> bool {
        self.region(index) == Region::Window
    }

    /// Moves a main-region node's tag to the other segment (probation to
    /// protected or back); its place in the main list is the caller's. For
    /// a key not in the sample (others: `set_region`).
    #[inline(always)]
    fn swap_segment(&mut self, index: u32) {
        let other = match self.region(index) {
            Region::Probation => Region::Protected,
            _ => Region::Probation,
        };
        self.set_region(index, other);
    }
}

#[inline(always)]
pub fn unlink<N: Nodes>(nodes: &mut N, index: u32) {
    let Link { prev, next } = *nodes.link(index);
    nodes.link(prev).next = next;
    nodes.link(next).prev = prev;
}

#[inline(always)]
pub fn push_front<N: Nodes>(nodes: &mut N, head: u32, index: u32) {
    let first = nodes.link(head).next;
    *nodes.link(index) = Link {
        prev: head,
        next: first,
    };
    nodes.link(first).prev = index;
    nodes.link(head).next = index;
}

#[inline(always)]
pub fn move_to_front<N: Nodes>(nodes: &mut N, head: u32, index: u32) {
    if nodes.link(head).next != index {
        unlink(nodes, index);
        push_front(nodes, head, index);
    }
}

/// The least recently used node of a list, if it is not empty.
#[inline]
pub fn back<N: Nodes>(nodes: &mut N, head: u32) -> Option<u32> {
    let last = nodes.link(head).prev;
    (last != head).then_some(last)
}

/// A random seed for a new cache's sketch (std's per-process random keys,
/// advanced for every new `RandomState`): no two caches share one.
pub fn random_seed() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0x0070_6763_6163_6865); // "pgcache"
    hasher.finish()
}

/// A tuning constant, or in test builds its override from the environment
/// (`PGCACHE_KNOB_<NAME>`), for the trace simulator (see `simulate.rs`).
#[cfg(test)]
pub(crate) fn knob(name: &str, default: f64) -> f64 {
    std::env::var(format!("PGCACHE_KNOB_{name}")).map_or(default, |v| v.parse().expect("a number"))
}
/// A tuning constant (overridable in test builds only).
#[cfg(not(test))]
#[inline(always)]
pub(crate) fn knob(_name: &str, default: f64) -> f64 {
    default
}

#[cfg(test)]
mod tests {
    use super::Region;

    #[test]
    fn a_region_reads_back_from_the_tag_it_wrote() {
        for region in [Region::Window, Region::Probation, Region::Protected] {
            assert_eq!(Region::from_bits(region as u8), region);
        }
    }
}
