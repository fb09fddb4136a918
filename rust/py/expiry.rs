//! The one background thread that removes expired entries from every live cache.
//!
//! It holds only weak references, so it never keeps a cache alive; it ends
//! when no cache is left (and starts again with the next one). It locks a
//! cache without the interpreter, and attaches only afterwards, to drop the
//! values it removed. An `atexit` hook stops it before the interpreter
//! finalizes, so it never attaches to a dying interpreter nor delays exit.

use std::sync::{Arc, Condvar, Mutex, PoisonError, Weak};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use pyo3::prelude::*;

use super::cache::Shared;

struct Registry {
    caches: Vec<(Weak<Shared>, Duration)>,
    thread: Option<JoinHandle<()>>,
    running: bool,
    shut_down: bool,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    caches: Vec::new(),
    thread: None,
    running: false,
    shut_down: false,
});
static WAKE: Condvar = Condvar::new();

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Adds a cache to the sweep; starts the thread if it is not running.
pub(crate) fn register(cache: &Arc<Shared>, interval: Duration) {
    let mut reg = registry();
    if reg.shut_down {
        return; // interpreter exit: lookups still expire lazily
    }
    reg.caches.push((Arc::downgrade(cache), interval));
    if !reg.running {
        reg.running = true;
        if let Some(old) = reg.thread.take() {
            // The previous thread has returned (it cleared `running` first).
            let _ = old.join();
        }
        reg.thread = Some(
            thread::Builder::new()
                .name("pgcache-expiry".into())
                .spawn(run)
                .expect("spawn the pgcache expiry thread"),
        );
    }
    WAKE.notify_all();
}

/// Wakes the thread so it notices closed caches now rather than at its next tick.
pub(crate) fn nudge() {
    WAKE.notify_all();
}

fn run() {
    let mut reg = registry();
    loop {
        reg.caches
            .retain(|(cache, _)| cache.upgrade().is_some_and(|c| !c.is_closed()));
        if reg.shut_down || reg.caches.is_empty() {
            reg.running = false;
            return;
        }
        let interval = reg.caches.iter().map(|(_, i)| *i).min().unwrap_or_default();
        reg = WAKE
            .wait_timeout(reg, interval)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
        if reg.shut_down {
            reg.running = false;
            return;
        }
        let caches: Vec<Weak<Shared>> = reg.caches.iter().map(|(c, _)| c.clone()).collect();
        drop(reg);
        for cache in caches {
            let Some(cache) = cache.upgrade() else {
                continue;
            };
            let released = cache.sweep();
            drop(cache);
            if !released.is_empty() {
                // Dropped attached and outside any cache lock; leaked if the
                // interpreter is already gone (harmless at that point).
                let mut released = Some(released);
                if Python::try_attach(|_py| drop(released.take())).is_none() {
                    std::mem::forget(released.take());
                }
            }
        }
        reg = registry();
    }
}

/// Stops the thread (registered with `atexit`): the interpreter is released
/// while waiting, so a sweep that is dropping values can finish.
#[pyfunction]
pub(crate) fn _shutdown_expiry_thread(py: Python<'_>) {
    let handle = {
        let mut reg = registry();
        reg.shut_down = true;
        reg.thread.take()
    };
    WAKE.notify_all();
    if let Some(handle) = handle {
        py.detach(|| {
            let _ = handle.join();
        });
    }
}
