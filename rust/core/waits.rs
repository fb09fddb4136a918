//! Who waits for whom: the threads that wait (for a cache's lock, or for a
//! load another thread runs) and the check for a circle among them.
//!
//! The circle: thread A holds cache X's lock while code it runs (a key's
//! `__eq__`) waits for cache Y, whose lock thread B holds while its own code
//! waits for X; or a load waits for a key that the other thread's load is
//! loading. Neither can ever move. A waiter that sees the circle twice in a
//! row (its checks some time apart, so that a passing state is not mistaken
//! for one) is told to give up. Threads are opaque non-zero numbers; only the
//! slow path of a wait registers here, the fast path never touches it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// What a thread waits for, and so who it waits for.
#[derive(Clone, Copy)]
pub enum Blocker {
    /// A lock, through its owner slot: the thread that holds it while it may
    /// itself wait (0: none, or a holder that lets go on its own). The slot
    /// must outlive the registration.
    Lock(*const AtomicUsize),
    /// A load in progress, run by this thread.
    Thread(usize),
}

struct Waiter {
    thread: usize,
    blocker: Blocker,
}

/// The waiting threads. A `Lock` pointer stays valid while its entry is
/// here: the waiter holds a reference to its cache until it unregisters.
struct Waiters(Vec<Waiter>);

// SAFETY: the raw pointers are only read under the mutex, while valid (see above).
unsafe impl Send for Waiters {}

static WAITERS: Mutex<Waiters> = Mutex::new(Waiters(Vec::new()));

/// Held briefly, by code that waits for nothing while holding it.
fn waiters() -> MutexGuard<'static, Waiters> {
    WAITERS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A thread's registration as a waiter; unregistered when dropped.
pub struct Waiting {
    thread: usize,
    blocker: Blocker,
    circle_seen: bool,
}

impl Waiting {
    /// Registers `thread` (non-zero, unique among live threads) as waiting.
    pub fn new(thread: usize, blocker: Blocker) -> Self {
        waiters().0.push(Waiter { thread, blocker });
        Waiting {
            thread,
            blocker,
            circle_seen: false,
        }
    }

    /// Whether this wait closes a circle, seen by this check and the one before.
    pub fn is_deadlocked(&mut self) -> bool {
        let circle = closes_a_circle(&waiters().0, self.thread, self.blocker);
        let deadlocked = circle && self.circle_seen;
        self.circle_seen = circle;
        deadlocked
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut waiters = waiters();
        if let Some(position) = waiters.0.iter().position(|w| w.thread == self.thread) {
            waiters.0.swap_remove(position);
        }
    }
}

/// Follows "waits for" from `blocker` through the registered waiters.
fn closes_a_circle(waiters: &[Waiter], me: usize, blocker: Blocker) -> bool {
    let mut next = blocker;
    for _ in 0..=waiters.len() {
        let holder = match next {
            // SAFETY: `me`'s own slot, or a registered waiter's (see `Waiters`).
            Blocker::Lock(owner) => unsafe { &*owner }.load(Ordering::Acquire),
            Blocker::Thread(thread) => thread,
        };
        if holder == 0 {
            return false;
        }
        if holder == me {
            return true;
        }
        match waiters.iter().find(|w| w.thread == holder) {
            Some(waiter) => next = waiter.blocker,
            None => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter(thread: usize, blocker: Blocker) -> Waiter {
        Waiter { thread, blocker }
    }

    #[test]
    fn two_threads_holding_what_the_other_waits_for_close_a_circle() {
        let (x_owner, y_owner) = (AtomicUsize::new(2), AtomicUsize::new(1));
        let waiting = [
            waiter(1, Blocker::Lock(&x_owner)),
            waiter(2, Blocker::Lock(&y_owner)),
        ];
        assert!(closes_a_circle(&waiting, 1, Blocker::Lock(&x_owner)));
        assert!(closes_a_circle(&waiting, 2, Blocker::Lock(&y_owner)));
    }

    #[test]
    fn a_holder_that_waits_for_nothing_is_no_circle() {
        let (x_owner, y_owner) = (AtomicUsize::new(2), AtomicUsize::new(3));
        let waiting = [
            waiter(1, Blocker::Lock(&x_owner)),
            waiter(2, Blocker::Lock(&y_owner)),
        ];
        assert!(!closes_a_circle(&waiting, 1, Blocker::Lock(&x_owner)));
        let unowned = AtomicUsize::new(0);
        assert!(!closes_a_circle(&waiting, 1, Blocker::Lock(&unowned)));
    }

    #[test]
    fn loads_and_locks_chain_into_one_circle() {
        let x_owner = AtomicUsize::new(1);
        let waiting = [
            waiter(1, Blocker::Thread(2)),
            waiter(2, Blocker::Lock(&x_owner)),
        ];
        assert!(closes_a_circle(&waiting, 1, Blocker::Thread(2)));
    }

    #[test]
    fn a_registered_circle_is_reported_on_the_second_check() {
        let (x_owner, y_owner) = (AtomicUsize::new(102), AtomicUsize::new(101));
        let mut first = Waiting::new(101, Blocker::Lock(&x_owner));
        assert!(
            !first.is_deadlocked(),
            "the other thread is not waiting yet"
        );
        let mut second = Waiting::new(102, Blocker::Lock(&y_owner));
        assert!(!first.is_deadlocked(), "seen once");
        assert!(first.is_deadlocked(), "seen twice");
        drop(first);
        assert!(!second.is_deadlocked());
        assert!(!second.is_deadlocked(), "thread 101 no longer waits");
    }

    #[test]
    fn a_circle_among_others_is_not_mine() {
        let waiting = [waiter(2, Blocker::Thread(3)), waiter(3, Blocker::Thread(2))];
        assert!(!closes_a_circle(&waiting, 1, Blocker::Thread(2)));
    }
}
