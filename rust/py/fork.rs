//! `os.fork()` safety, through `os.register_at_fork`.
//!
//! Before the fork the expiry thread is stopped and every live cache's store
//! lock is taken, so the child copies stores that no operation is halfway
//! through. The locks are taken attached, each one at once or not at all:
//! when one is busy (its holder runs a key's `__eq__`, which may wait for a
//! cache already taken here), every lock taken so far is let go and the busy
//! one is waited for with the interpreter released; after `FORK_PATIENCE` the
//! fork goes ahead without the caches still busy. After the fork, parent and
//! child let go of the locks and start the expiry thread again. The child
//! also forgets the `get_or_set` loads of the threads that did not survive
//! the fork (a caller would wait for them forever), and marks the caches that
//! were still busy: using one raises `RuntimeError` instead of hanging.
//!
//! A forked child thus gets its own copy of every cache's entries, with
//! expiry working. Forks that do not go through `os.fork()` (a C library
//! calling `fork()`) run none of this; `subprocess` needs none (it execs).

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pyo3::prelude::*;

use super::expiry;
use super::shared::{thread_token, Shared, WAIT_SLICE};

/// How long a fork waits for a cache whose lock another thread holds.
const FORK_PATIENCE: Duration = Duration::from_secs(1);

/// The caches taken before the fork, and those given up on.
struct Fork {
    held: Vec<Arc<Shared>>,
    busy: Vec<Arc<Shared>>,
}

thread_local! {
    /// Set by the forking thread's `before` hook, taken by its `after` hook
    /// (the child's only thread is the one that forked).
    static FORK: RefCell<Option<Fork>> = const { RefCell::new(None) };
}

/// Registers the hooks (at module import).
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let kwargs = pyo3::types::PyDict::new(m.py());
    kwargs.set_item("before", wrap_pyfunction!(_pgcache_before_fork, m)?)?;
    kwargs.set_item(
        "after_in_parent",
        wrap_pyfunction!(_pgcache_after_fork_in_parent, m)?,
    )?;
    kwargs.set_item(
        "after_in_child",
        wrap_pyfunction!(_pgcache_after_fork_in_child, m)?,
    )?;
    m.py()
        .import("os")?
        .call_method("register_at_fork", (), Some(&kwargs))?;
    Ok(())
}

#[pyfunction]
fn _pgcache_before_fork(py: Python<'_>) {
    let me = thread_token(py);
    let mut busy: Vec<Arc<Shared>> = expiry::pause(py)
        .into_iter()
        // A fork from inside a key's __eq__: this thread holds that lock
        // already, and the child goes on with it.
        .filter(|cache| !cache.is_held_by(me))
        .collect();
    let mut held = Vec::with_capacity(busy.len());
    let deadline = Instant::now() + FORK_PATIENCE;
    loop {
        busy.retain(|cache| {
            let taken = cache.hold_for_fork();
            if taken {
                held.push(Arc::clone(cache));
            }
            !taken
        });
        let now = Instant::now();
        if busy.is_empty() || now >= deadline {
            break;
        }
        // The holder of a busy lock may be waiting for one held here.
        for cache in held.drain(..) {
            cache.release_after_fork(false);
            busy.push(cache);
        }
        busy[0].wait_until_unlocked(py, (deadline - now).min(WAIT_SLICE));
    }
    FORK.with(|fork| *fork.borrow_mut() = Some(Fork { held, busy }));
}

#[pyfunction]
fn _pgcache_after_fork_in_parent() {
    if let Some(fork) = FORK.with(|fork| fork.borrow_mut().take()) {
        for cache in &fork.held {
            cache.release_after_fork(false);
        }
    }
    expiry::resume(false);
}

#[pyfunction]
fn _pgcache_after_fork_in_child(py: Python<'_>) {
    let me = thread_token(py);
    let mut abandoned = Vec::new();
    if let Some(fork) = FORK.with(|fork| fork.borrow_mut().take()) {
        for cache in &fork.held {
            cache.with_held_store(|store| {
                abandoned.extend(store.abandon_loads(|load| load.owner == me));
            });
            cache.release_after_fork(true);
        }
        for cache in &fork.busy {
            cache.mark_orphaned();
        }
    }
    drop(abandoned); // keys of the abandoned loads, released after the locks
    expiry::resume(true);
}
