//! The one background thread that removes expired entries from every live cache.
//!
//! It holds only weak references, so it never keeps a cache alive; it ends
//! when no cache is left (and starts again with the next one). It locks a
//! cache without the interpreter, and attaches only afterwards, to drop the
//! values it removed. An `atexit` hook stops it before the interpreter
//! finalizes, so it never attaches to a dying interpreter nor delays exit.
//! Across `os.fork()` it is stopped (`pause`) and started again in the parent
//! and in the child (`resume`), so a child never inherits a sweep half done.

use std::sync::{Arc, Condvar, Mutex, PoisonError, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use pyo3::prelude::*;

use super::shared::{release, Shared};

/// A cache the thread sweeps, every `interval`, next at `due`.
struct Entry {
    cache: Weak<Shared>,
    interval: Duration,
    due: Instant,
}

struct Registry {
    caches: Vec<Entry>,
    thread: Option<JoinHandle<()>>,
    running: bool,
    shut_down: bool,
    /// Forks in progress (each pauses the thread until it resumes it).
    paused: usize,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    caches: Vec::new(),
    thread: None,
    running: false,
    shut_down: false,
    paused: 0,
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
    reg.caches.push(Entry {
        cache: Arc::downgrade(cache),
        interval,
        due: Instant::now() + interval,
    });
    start(&mut reg);
    WAKE.notify_all();
}

/// Starts the thread if it should run and does not.
fn start(reg: &mut Registry) {
    if reg.running || reg.shut_down || reg.paused > 0 || reg.caches.is_empty() {
        return;
    }
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

/// Stops the thread before a fork and returns the live caches. Waits with the
/// interpreter released: a sweep in progress may need it to drop values.
pub(crate) fn pause(py: Python<'_>) -> Vec<Arc<Shared>> {
    let handle = {
        let mut reg = registry();
        reg.paused += 1;
        reg.thread.take()
    };
    WAKE.notify_all();
    if let Some(handle) = handle {
        py.detach(|| {
            let _ = handle.join();
        });
    }
    let reg = registry();
    reg.caches
        .iter()
        .filter_map(|entry| entry.cache.upgrade())
        .filter(|cache| !cache.is_closed())
        .collect()
}

/// Starts the thread again after a fork. In the child the forking thread is
/// the only one, and no other fork can be in progress.
pub(crate) fn resume(in_child: bool) {
    let mut reg = registry();
    reg.paused = if in_child {
        0
    } else {
        reg.paused.saturating_sub(1)
    };
    start(&mut reg);
}

/// Wakes the thread so it notices closed caches now rather than at its next tick.
pub(crate) fn nudge() {
    WAKE.notify_all();
}

/// Each cache is swept on its own interval; the thread sleeps until the
/// earliest due one (so it wakes at the smallest interval among them).
fn run() {
    let mut reg = registry();
    loop {
        reg.caches
            .retain(|entry| entry.cache.upgrade().is_some_and(|c| !c.is_closed()));
        if reg.shut_down || reg.paused > 0 || reg.caches.is_empty() {
            reg.running = false;
            return;
        }
        let now = Instant::now();
        let next = reg.caches.iter().map(|e| e.due).min().unwrap_or(now);
        if next > now {
            reg = WAKE
                .wait_timeout(reg, next - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            continue; // woken early (new cache, close, shutdown) or on time: re-check
        }
        let mut due = Vec::new();
        for entry in reg.caches.iter_mut().filter(|e| e.due <= now) {
            entry.due = now + entry.interval;
            due.push(entry.cache.clone());
        }
        drop(reg);
        for cache in due {
            let Some(cache) = cache.upgrade() else {
                continue;
            };
            let released = cache.sweep();
            drop(cache);
            if !released.is_empty() {
                // Dropped attached and outside any cache lock; leaked if the
                // interpreter is already gone (harmless at that point).
                let mut released = Some(released);
                let attached = Python::try_attach(|py| {
                    if let Some(released) = released.take() {
                        release(py, released);
                    }
                });
                if attached.is_none() {
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
