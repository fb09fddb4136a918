//! What left the store during one operation, held for the caller to drop after it releases the
//! lock. Most operations release nothing, an overwrite or an insert into a full store one item:
//! the first item is a plain field, so the hot paths neither allocate nor go through a generic
//! small vector's push and pop; more items (a sweep, an expired entry beside an eviction) go to
//! a `Vec`.

use super::Garbage;

/// The items after the first, if any.
pub type More<K, V> = Option<Vec<Garbage<K, V>>>;

pub struct Released<K, V> {
    first: Option<Garbage<K, V>>,
    /// Only ever holds items when `first` does.
    more: More<K, V>,
}

impl<K, V> Default for Released<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K, V> Released<K, V> {
    #[inline(always)]
    pub const fn new() -> Self {
        Released {
            first: None,
            more: None,
        }
    }

    #[inline(always)]
    pub fn push(&mut self, garbage: Garbage<K, V>) {
        if self.first.is_none() {
            self.first = Some(garbage);
        } else {
            self.push_more(garbage);
        }
    }

    #[cold]
    #[inline(never)]
    fn push_more(&mut self, garbage: Garbage<K, V>) {
        self.more.get_or_insert_with(Vec::new).push(garbage);
    }

    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    /// The first item and, if there were more, the others.
    #[inline(always)]
    pub fn split(self) -> (Option<Garbage<K, V>>, More<K, V>) {
        (self.first, self.more)
    }

    /// Every item, in the order they left.
    pub fn into_vec(self) -> Vec<Garbage<K, V>> {
        let (first, rest) = self.split();
        first
            .into_iter()
            .chain(rest.into_iter().flatten())
            .collect()
    }
}

impl<K, V> Extend<Garbage<K, V>> for Released<K, V> {
    fn extend<I: IntoIterator<Item = Garbage<K, V>>>(&mut self, items: I) {
        for garbage in items {
            self.push(garbage);
        }
    }
}
