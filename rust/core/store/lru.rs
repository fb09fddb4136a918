//! The slab of nodes and the intrusive LRU list threaded through it: where an
//! entry's node comes from, how it leaves, and how it moves to the front.

use super::{key_hash, Link, Node, Store, LRU, NEVER, NIL, UNLINKED};

impl<K, V, F> Store<K, V, F> {
    #[inline(always)]
    pub(super) fn allocate(&mut self, hash: u64, key: K, value: V, expires_at: u64) -> u32 {
        let node = Node {
            entry: Some((key, value)),
            hash,
            expires_at,
            lru: UNLINKED,
            timer: UNLINKED,
        };
        if self.free != NIL {
            let index = self.free;
            self.free = self.node(index).timer.next;
            *self.node_mut(index) = node;
            index
        } else {
            self.nodes.push(node);
            (self.nodes.len() - 1) as u32
        }
    }

    /// Takes an entry out of the index, both lists and the slab.
    #[inline(always)]
    pub(super) fn unlink_entry(&mut self, index: u32) -> (K, V) {
        let hash = key_hash(self.node(index).hash);
        if let Ok(slot) = self.table.find_entry(hash, |&i| i == index) {
            slot.remove();
        }
        self.free_node(index)
    }

    /// Takes an entry already out of the index out of both lists and the slab.
    #[inline(always)]
    pub(super) fn free_node(&mut self, index: u32) -> (K, V) {
        self.on_leave(index);
        self.wheel_unschedule(index);
        let free = self.free;
        let node = self.node_mut(index);
        node.timer.next = free;
        node.expires_at = NEVER;
        let entry = node.entry.take().expect("an indexed node holds an entry");
        self.free = index;
        self.len -= 1;
        self.metrics.set_size(self.len);
        entry
    }

    /// A node by index without a bounds check, for the hot paths (the same
    /// contract as `link` below).
    #[inline(always)]
    pub(super) fn node(&self, index: u32) -> &Node<K, V> {
        debug_assert!((index as usize) < self.nodes.len());
        // SAFETY: see `link`.
        unsafe { self.nodes.get_unchecked(index as usize) }
    }

    #[inline(always)]
    pub(super) fn node_mut(&mut self, index: u32) -> &mut Node<K, V> {
        debug_assert!((index as usize) < self.nodes.len());
        // SAFETY: see `link`.
        unsafe { self.nodes.get_unchecked_mut(index as usize) }
    }

    /// A node's LRU links by index without a bounds check, for the hot LRU path.
    ///
    /// SAFETY (of the callers): indices come from the hash index or the list
    /// links, which only ever hold indices of nodes in `self.nodes`; the slab
    /// never shrinks except in `clear`, which resets the index and the lists.
    #[inline(always)]
    fn link(&mut self, index: u32) -> &mut Link {
        debug_assert!((index as usize) < self.nodes.len());
        // SAFETY: see above.
        unsafe { &mut self.nodes.get_unchecked_mut(index as usize).lru }
    }

    #[inline(always)]
    pub(super) fn lru_unlink(&mut self, index: u32) {
        let Link { prev, next } = *self.link(index);
        self.link(prev).next = next;
        self.link(next).prev = prev;
    }

    #[inline(always)]
    pub(super) fn lru_push_front(&mut self, index: u32) {
        let first = self.link(LRU).next;
        *self.link(index) = Link {
            prev: LRU,
            next: first,
        };
        self.link(first).prev = index;
        self.link(LRU).next = index;
    }

    #[inline(always)]
    pub(super) fn lru_move_to_front(&mut self, index: u32) {
        if self.link(LRU).next != index {
            self.lru_unlink(index);
            self.lru_push_front(index);
        }
    }
}
