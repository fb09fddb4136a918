//! The single-threaded heart of the cache: a hash index over a slab of nodes,
//! intrusive access-order lists (`lru.rs`; `order.rs` dispatches between the
//! LRU and W-TinyLFU policies of `core::policy`) and an intrusive hierarchical
//! timer wheel (`wheel.rs`), all one type, [`Store`]. It knows nothing of
//! locks, Python or clocks: callers pass the current time and a key-equality
//! function that may fail. This file holds the types and the operations; the
//! lists live beside it.
//!
//! Layout: every node lives in one `Vec`; list links are `u32` indices into it.
//! Index 0 is the LRU list's sentinel (W-TinyLFU's window), the next
//! `wheel::SENTINELS` indices are the timer buckets' sentinels, then comes
//! W-TinyLFU's main region's sentinel (and one unused slot), so unlinking
//! never branches on "is this the head". A node costs 48 bytes plus about 10
//! bytes of hash index; W-TinyLFU's region tag lives in two bits of the
//! node's hash.

mod lru;
mod order;
mod released;
#[cfg(test)]
mod tests;
mod wheel;

use hashbrown::HashTable;

use super::metrics::Metrics;
use super::policy::{random_seed, Link, PolicyKind};
use order::Policy;
pub use released::Released;
use std::sync::Arc;
use wheel::Wheel;

/// "No index": a node that is not on the timer wheel, or the end of the free
/// list. Index 0, the LRU sentinel, is never free and never on the wheel, so it
/// can stand for "none" and every `u32` above it can index an entry.
const NIL: u32 = 0;
/// `expires_at` of an entry without a TTL.
pub const NEVER: u64 = u64::MAX;
/// The LRU list's sentinel: `next` is the most recently used node, `prev` the
/// least. Under W-TinyLFU, the window's.
const LRU: u32 = 0;
/// W-TinyLFU's main region's sentinel (its protected and probation segments
/// share one list).
const MAIN: u32 = 1 + wheel::SENTINELS as u32;
/// First index of a node that holds an entry. The slot after `MAIN` (once a
/// second segment's sentinel) stays unused, so that `MAX_CAPACITY`, which
/// `python/pgcache/_validate.py` states, does not move.
const FIRST_ENTRY: u32 = MAIN + 2;
/// Upper bound for `max_size`, and the most an unbounded store holds
/// (indices are `u32`, sentinels come first).
pub const MAX_CAPACITY: usize = (1 << 32) - FIRST_ENTRY as usize;
/// Bits of a node's hash that hold its W-TinyLFU region. Every hash is masked
/// when it enters the store, so these bits never distinguish keys (hashbrown
/// reads the low bits for the position and the top seven for its tags).
/// Two bits from `REGION_SHIFT` hold the region of a key out of the shadows'
/// sample (`policy/shadow.rs`); a sampled key has them clear, `SAMPLED` set
/// and its region in the two bits from `SAMPLED_SHIFT` (see `order.rs`).
const REGION_SHIFT: u32 = 55;
const SAMPLED: u64 = 1 << 54;
const SAMPLED_SHIFT: u32 = 52;
const REGION_MASK: u64 = (3 << REGION_SHIFT) | SAMPLED | (3 << SAMPLED_SHIFT);

/// A table hash as the store keeps it: without the region bits.
#[inline(always)]
fn key_hash(hash: u64) -> u64 {
    hash & !REGION_MASK
}

/// An unbounded store already holds `MAX_CAPACITY` live entries: a new key
/// cannot be added (a bounded store evicts instead).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Full;

/// The links of a node on no list.
const UNLINKED: Link = Link {
    prev: NIL,
    next: NIL,
};

pub struct Node<K, V> {
    /// `None` for sentinels and free slots.
    entry: Option<(K, V)>,
    /// The key's table hash, its bits `REGION_MASK` holding the W-TinyLFU region.
    hash: u64,
    expires_at: u64,
    lru: Link,
    /// Timer-wheel links; `UNLINKED` when the entry never expires. For a free
    /// slot, `timer.next` is the next free slot.
    timer: Link,
}

impl<K, V> Node<K, V> {
    /// The key and value a node held, if any (sentinels and free slots hold none).
    pub fn into_entry(self) -> Option<(K, V)> {
        self.entry
    }

    fn sentinel(index: u32) -> Self {
        Node {
            entry: None,
            hash: 0,
            expires_at: NEVER,
            lru: Link::to_self(index),
            timer: Link::to_self(index),
        }
    }
}

/// Something that left the store during one operation. It is handed to the
/// caller to drop after releasing the lock (a Python value's `__del__` may
/// run arbitrary code, including calls into this cache).
#[derive(Debug, PartialEq)]
pub enum Garbage<K, V> {
    Entry(K, V),
    Value(V),
    Key(K),
}

/// An object the store holds (see `Store::held`).
pub enum Held<'a, K, V> {
    Entry(&'a K, &'a V),
    Loading(&'a K),
}

/// What `lookup` found.
pub enum Lookup<'a, K, V> {
    Live(&'a V),
    /// Present but expired: removed and counted as an expiration and a miss.
    Expired(K, V),
    Absent,
}

/// What `remove` found.
pub enum Removed<K, V> {
    Live(K, V),
    /// Present but expired: removed and counted as an expiration.
    Expired,
    Absent,
}

/// The current time, read at most once and only when asked for.
struct LazyNow<F> {
    read: Option<F>,
    time: u64,
}

impl<F: FnOnce() -> u64> LazyNow<F> {
    #[inline(always)]
    fn new(read: F) -> Self {
        LazyNow {
            read: Some(read),
            time: 0,
        }
    }

    #[inline(always)]
    fn get(&mut self) -> u64 {
        if let Some(read) = self.read.take() {
            self.time = read();
        }
        self.time
    }
}

/// A get_or_set in progress: the key being loaded and the caller's handle to it.
struct Flight<K, F> {
    hash: u64,
    key: K,
    handle: F,
}

/// The store. `F` is the handle type of in-progress loads (see `begin_load`).
pub struct Store<K, V, F = ()> {
    table: HashTable<u32>,
    nodes: Vec<Node<K, V>>,
    free: u32,
    len: usize,
    /// How many entries fit: `max_size`, or `MAX_CAPACITY` when unbounded.
    limit: usize,
    /// Whether a new key into a full store evicts (bounded) or fails with `Full`.
    evicts: bool,
    wheel: Wheel,
    flights: Vec<Flight<K, F>>,
    metrics: Arc<Metrics>,
    closed: bool,
    policy: Policy,
}

/// The hash-table predicate for "this slot holds a key equal to the probe".
/// A failing comparison is parked in `error` and stops the probe.
#[inline(always)]
fn matcher<'a, K, V, E>(
    nodes: &'a [Node<K, V>],
    hash: u64,
    eq: &'a mut impl FnMut(&K, bool) -> Result<bool, E>,
    error: &'a mut Option<E>,
) -> impl FnMut(&u32) -> bool + 'a {
    move |&index| {
        debug_assert!((index as usize) < nodes.len());
        // SAFETY: the table holds only indices of nodes in the slab (see `lru.rs`'s `link`).
        let node = unsafe { nodes.get_unchecked(index as usize) };
        if key_hash(node.hash) != hash {
            return false;
        }
        let Some((key, _)) = &node.entry else {
            return false;
        };
        match eq(key, true) {
            Ok(equal) => equal,
            Err(e) => {
                *error = Some(e);
                true // stop probing
            }
        }
    }
}

impl<K, V, F> Store<K, V, F> {
    /// `max_size` in `1..=MAX_CAPACITY`, or `None` for unbounded (which
    /// keeps LRU order whatever `policy` says: it never evicts). A W-TinyLFU
    /// store's sketch gets a random seed.
    pub fn new(
        max_size: Option<usize>,
        policy: PolicyKind,
        metrics: Arc<Metrics>,
        now: u64,
    ) -> Self {
        assert!(max_size.is_none_or(|m| (1..=MAX_CAPACITY).contains(&m)));
        let nodes = (0..FIRST_ENTRY).map(Node::sentinel).collect();
        Store {
            table: HashTable::new(),
            nodes,
            free: NIL,
            len: 0,
            limit: max_size.unwrap_or(MAX_CAPACITY),
            evicts: max_size.is_some(),
            wheel: Wheel::new(now),
            flights: Vec::new(),
            metrics,
            closed: false,
            policy: Policy::new(policy, max_size, random_seed()),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `None` for an unbounded store.
    pub fn max_size(&self) -> Option<usize> {
        self.evicts.then_some(self.limit)
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    // ---- lookups ----------------------------------------------------------

    /// The node holding an equal key. `eq` is given a stored key and whether
    /// that entry's full hash equals the probe's (a key whose hash differs is
    /// equal only if it is the stored object itself, as in a dict); it may
    /// fail, and the first error aborts the probe and is returned, so nothing
    /// is changed by a failing key.
    #[inline(always)]
    fn find<E>(
        &self,
        hash: u64,
        eq: &mut impl FnMut(&K, bool) -> Result<bool, E>,
    ) -> Result<Option<u32>, E> {
        // `iter_hash` (the buckets whose tag matches) is inlined into each
        // caller, where `RawTable::find` with a closure was a call of its own.
        let hash = key_hash(hash);
        for &index in self.table.iter_hash(hash) {
            // The full hashes are compared by `eq` only for a key that is not the very
            // object stored (as a dict does): a hit on the stored object skips it.
            let node = self.node(index);
            let (key, _) = Self::held_entry(node);
            if eq(key, key_hash(node.hash) == hash)? {
                return Ok(Some(index));
            }
        }
        Ok(None)
    }

    /// The entry of a node the hash index holds, without checking that it
    /// holds one (the probe and the hit path need not branch on it).
    #[inline(always)]
    fn held_entry(node: &Node<K, V>) -> &(K, V) {
        debug_assert!(node.entry.is_some());
        // SAFETY: the index holds the slab index of a node only while the
        // node holds an entry: `insert` indexes a node `allocate` just filled,
        // and every entry leaves the index before `free_node` takes it
        // (`unlink_entry`, `remove`); `clear` replaces the index and the slab.
        unsafe { node.entry.as_ref().unwrap_unchecked() }
    }

    /// The stored key equal to the probe, expired or not; nothing is
    /// counted, reordered or removed (a batch checks every key this way before
    /// changing anything).
    pub fn find_key<E>(
        &self,
        hash: u64,
        eq: &mut impl FnMut(&K, bool) -> Result<bool, E>,
    ) -> Result<Option<&K>, E> {
        Ok(self
            .find(hash, eq)?
            .and_then(|index| self.node(index).entry.as_ref())
            .map(|(key, _)| key))
    }

    /// Whether an entry has a deadline that `now()` has reached (the clock is
    /// not read for entries that never expire).
    #[inline(always)]
    fn expires_by(&self, index: u32, now: impl FnOnce() -> u64) -> bool {
        let expires_at = self.node(index).expires_at;
        expires_at != NEVER && now() >= expires_at
    }

    #[inline]
    fn is_expired(&self, index: u32, now: u64) -> bool {
        now >= self.node(index).expires_at
    }

    /// Finds a live entry; an expired one is removed (counted as an
    /// expiration) into `released`.
    #[inline(always)]
    fn find_live<E>(
        &mut self,
        hash: u64,
        eq: &mut impl FnMut(&K, bool) -> Result<bool, E>,
        now: impl FnOnce() -> u64,
        released: &mut Released<K, V>,
    ) -> Result<Option<u32>, E> {
        match self.find(hash, eq)? {
            Some(index) if self.expires_by(index, now) => {
                self.metrics.expired(1);
                {
                    let (k, v) = self.unlink_entry(index);
                    released.push(Garbage::Entry(k, v));
                }
                Ok(None)
            }
            found => Ok(found),
        }
    }

    /// A lookup: counts a hit or a miss; a hit becomes the most recently used.
    /// `now` is read only if an entry with a deadline is found.
    #[inline(always)]
    pub fn get<E>(
        &mut self,
        hash: u64,
        eq: &mut impl FnMut(&K, bool) -> Result<bool, E>,
        now: impl FnOnce() -> u64,
        released: &mut Released<K, V>,
    ) -> Result<Option<&V>, E> {
        match self.lookup(hash, eq, now)? {
            Lookup::Live(value) => Ok(Some(value)),
            Lookup::Expired(key, value) => {
                released.push(Garbage::Entry(key, value));
                Ok(None)
            }
            Lookup::Absent => Ok(None),
        }
    }

    /// `get` that hands an expired entry back instead of collecting it, so that a
    /// caller whose lookups release nothing keeps no `Released` around.
    #[inline(always)]
    pub fn lookup<E>(
        &mut self,
        hash: u64,
        eq: &mut impl FnMut(&K, bool) -> Result<bool, E>,
        now: impl FnOnce() -> u64,
    ) -> Result<Lookup<'_, K, V>, E> {
        let Some(index) = self.find(hash, eq)? else {
            self.metrics.miss();
            return Ok(Lookup::Absent);
        };
        if self.expires_by(index, now) {
            self.metrics.expired(1);
            self.metrics.miss();
            let (key, value) = self.unlink_entry(index);
            return Ok(Lookup::Expired(key, value));
        }
        self.metrics.hit();
        self.on_access(index);
        Ok(Lookup::Live(&Self::held_entry(self.node(index)).1))
    }

    /// Whether a live entry exists; neither counted nor reordered.
    pub fn contains<E>(
        &mut self,
        hash: u64,
        eq: &mut impl FnMut(&K, bool) -> Result<bool, E>,
        now: impl FnOnce() -> u64,
        released: &mut Released<K, V>,
    ) -> Result<bool, E> {
        Ok(self.find_live(hash, eq, now, released)?.is_some())
    }

    // ---- writes -----------------------------------------------------------

    /// Stores `value` under `key` as the most recently used entry (of the
    /// W-TinyLFU window, for a new key), expiring at `expires_at` (`NEVER` for
    /// none). An existing live key keeps its key object (the new one and the
    /// replaced value go to `released`); an expired one is removed (counted as
    /// an expiration) and replaced. A new key into a full store first removes
    /// every expired entry, then the entry the policy gives up: the least
    /// recently used one, or W-TinyLFU's duel loser (an eviction or a
    /// rejection); the new entry itself always stays (an unbounded store at
    /// `MAX_CAPACITY` fails with `Full` instead).
    /// `make_key` is called only when a new entry is created. On failure the
    /// store is unchanged and `value` is in `released`. `now` is read at most
    /// once, and only if an entry with a deadline is found or the timer wheel
    /// holds entries when the store is full.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub fn insert<E>(
        &mut self,
        hash: u64,
        make_key: impl FnOnce() -> K,
        value: V,
        expires_at: u64,
        eq: &mut impl FnMut(&K, bool) -> Result<bool, E>,
        now: impl FnOnce() -> u64,
        released: &mut Released<K, V>,
    ) -> Result<(), E>
    where
        E: From<Full>,
    {
        let hash = key_hash(hash);
        let mut found = match self.find(hash, eq) {
            Ok(found) => found,
            Err(e) => {
                released.push(Garbage::Value(value));
                return Err(e);
            }
        };
        let mut now = LazyNow::new(now);
        if let Some(index) = found.filter(|&i| self.expires_by(i, || now.get())) {
            // An expired entry is replaced by a new one (with the new key object).
            self.metrics.expired(1);
            let (k, v) = self.unlink_entry(index);
            released.push(Garbage::Entry(k, v));
            found = None;
        }
        if let Some(index) = found {
            let node = self.node_mut(index);
            if let Some((_, old)) = node.entry.as_mut() {
                released.push(Garbage::Value(std::mem::replace(old, value)));
            }
            let previous = std::mem::replace(&mut node.expires_at, expires_at);
            // A later deadline can stay in its earlier bucket: when that bucket
            // comes up, the entry is found alive and re-filed. Only an earlier
            // deadline must move now.
            if expires_at < previous {
                self.wheel_unschedule(index);
                self.wheel_schedule(index);
            }
            self.on_access(index);
            return Ok(());
        }
        // The clock is read, and the wheel advanced, only if something may be due.
        if self.len >= self.limit && self.wheel.is_occupied() {
            let now = now.get();
            if self.wheel.may_expire(now) {
                self.expire(now, released);
            }
        }
        if self.len >= self.limit {
            if !self.evicts {
                released.push(Garbage::Value(value));
                return Err(Full.into());
            }
            let victim = self.victim();
            let (k, v) = self.unlink_entry(victim);
            released.push(Garbage::Entry(k, v));
        }
        let index = self.allocate(hash, make_key(), value, expires_at);
        let nodes = &self.nodes;
        self.table
            .insert_unique(hash, index, |&i| key_hash(nodes[i as usize].hash));
        self.wheel_schedule(index);
        self.len += 1;
        self.on_new(index);
        self.metrics.set_size(self.len);
        Ok(())
    }

    /// Makes sure `new_keys` more entries fit: a bounded store always has room
    /// (it evicts); an unbounded one first removes expired entries, then fails
    /// with `Full` if it would exceed `MAX_CAPACITY`. Lets a batch fail before
    /// it changes anything.
    pub fn make_room(
        &mut self,
        new_keys: usize,
        now: u64,
        released: &mut Released<K, V>,
    ) -> Result<(), Full> {
        if self.evicts || self.len.saturating_add(new_keys) <= self.limit {
            return Ok(());
        }
        self.expire(now, released);
        if self.len.saturating_add(new_keys) <= self.limit {
            Ok(())
        } else {
            Err(Full)
        }
    }

    /// Removes a key. An expired entry is removed into `released`, counted as
    /// an expiration and reported as `Expired`.
    pub fn remove<E>(
        &mut self,
        hash: u64,
        eq: &mut impl FnMut(&K, bool) -> Result<bool, E>,
        now: u64,
        released: &mut Released<K, V>,
    ) -> Result<Removed<K, V>, E> {
        let hash = key_hash(hash);
        let mut error = None;
        let found = self
            .table
            .find_entry(hash, matcher(&self.nodes, hash, eq, &mut error));
        if let Some(e) = error {
            return Err(e);
        }
        let Ok(slot) = found else {
            return Ok(Removed::Absent);
        };
        let (index, _) = slot.remove();
        let expired = self.is_expired(index, now);
        let (key, value) = self.free_node(index);
        if expired {
            self.metrics.expired(1);
            released.push(Garbage::Entry(key, value));
            return Ok(Removed::Expired);
        }
        Ok(Removed::Live(key, value))
    }

    /// Removes every entry expired at `now` into `released`; returns how many.
    /// Cost: the expired entries, the entries due within the current wheel
    /// tick (about a millisecond) and those cascading to a finer wheel level.
    pub fn expire(&mut self, now: u64, released: &mut Released<K, V>) -> usize {
        if !self.wheel.may_expire(now) {
            return 0;
        }
        let due = self.wheel_advance(now);
        for &index in &due {
            {
                let (k, v) = self.unlink_entry(index);
                released.push(Garbage::Entry(k, v));
            }
        }
        self.metrics.expired(due.len() as u64);
        due.len()
    }

    /// Removes every entry (counters other than size are kept) and returns
    /// the nodes holding them, to be dropped by the caller after unlocking.
    pub fn clear(&mut self, now: u64) -> Vec<Node<K, V>> {
        let mut taken = std::mem::take(&mut self.nodes);
        taken.drain(..FIRST_ENTRY as usize);
        self.nodes = (0..FIRST_ENTRY).map(Node::sentinel).collect();
        self.table = HashTable::new();
        self.free = NIL;
        self.len = 0;
        self.wheel = Wheel::new(now);
        self.on_clear();
        self.metrics.set_size(0);
        taken
    }

    /// Clears and refuses every later operation (the caller checks `is_closed`).
    pub fn close(&mut self, now: u64) -> (Vec<Node<K, V>>, Vec<F>) {
        self.closed = true;
        let flights = self.flights.drain(..).map(|f| f.handle).collect();
        (self.clear(now), flights)
    }

    pub fn reset_metrics(&self) {
        self.metrics.reset();
    }

    /// Every object the store holds: each entry's key and value (expired or
    /// not) and the key of each load in progress. For a garbage collector.
    pub fn held(&self) -> impl Iterator<Item = Held<'_, K, V>> + '_ {
        let entries = self.nodes[FIRST_ENTRY as usize..]
            .iter()
            .filter_map(|node| node.entry.as_ref())
            .map(|(k, v)| Held::Entry(k, v));
        let loading = self.flights.iter().map(|f| Held::Loading(&f.key));
        entries.chain(loading)
    }

    /// Live entries, most recently used first (under W-TinyLFU: the window's,
    /// then the protected segment's, then probation's); expired ones are skipped.
    pub fn iter_live(&self, now: u64) -> impl Iterator<Item = (&K, &V)> + '_ {
        let nodes = &self.nodes;
        let heads = self.list_heads();
        let mut list = 0;
        let mut index = nodes[heads[0] as usize].lru.next;
        std::iter::from_fn(move || loop {
            if index == heads[list] {
                list += 1;
                if list == heads.len() {
                    return None;
                }
                index = nodes[heads[list] as usize].lru.next;
                continue;
            }
            let node = &nodes[index as usize];
            index = node.lru.next;
            if now < node.expires_at {
                if let Some((k, v)) = &node.entry {
                    return Some((k, v));
                }
            }
        })
    }

    // ---- in-progress loads (get_or_set) ------------------------------------

    /// The handle of the load in progress for this key, if any.
    pub fn find_load<E>(
        &self,
        hash: u64,
        eq: &mut impl FnMut(&K, bool) -> Result<bool, E>,
    ) -> Result<Option<&F>, E> {
        for flight in &self.flights {
            if flight.hash == hash && eq(&flight.key, true)? {
                return Ok(Some(&flight.handle));
            }
        }
        Ok(None)
    }

    /// Registers a load in progress (the caller checked `find_load` first).
    pub fn begin_load(&mut self, hash: u64, key: K, handle: F) {
        self.flights.push(Flight { hash, key, handle });
    }

    /// Unregisters every load whose handle fails `keep` (after `fork()`, the
    /// loads of threads that do not exist in the child); returns them.
    pub fn abandon_loads(&mut self, mut keep: impl FnMut(&F) -> bool) -> Vec<(K, F)> {
        let (kept, abandoned) = std::mem::take(&mut self.flights)
            .into_iter()
            .partition(|f| keep(&f.handle));
        self.flights = kept;
        abandoned.into_iter().map(|f| (f.key, f.handle)).collect()
    }

    /// Unregisters the load whose handle satisfies `is_mine`; returns its key.
    pub fn end_load(&mut self, mut is_mine: impl FnMut(&F) -> bool) -> Option<K> {
        let position = self.flights.iter().position(|f| is_mine(&f.handle))?;
        Some(self.flights.swap_remove(position).key)
    }
}
