//! What a cache's Python object, the expiry thread and the fork hooks share,
//! and how a thread takes the store lock.
//!
//! Lock rules (see DESIGN.md), and the one they add up to:
//! - a Python thread takes the store lock only while attached, with
//!   `try_lock`; when it is busy, the thread waits detached, in slices (to see
//!   Ctrl-C and deadlocks between caches), and tries again once attached;
//! - the expiry thread takes it detached and never needs the interpreter
//!   while holding it;
//! - the only Python code run under it is a key's `__eq__`, with the thread
//!   marked in `owner`.
//!
//! So while a thread holds the interpreter, the store lock is either free,
//! held by the expiry thread (which lets go on its own), or held by a Python
//! thread that cannot move until it gets the interpreter back (marked in
//! `owner` or `held_for_fork`). A garbage collection therefore sees a stable
//! store: see `traverse`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use parking_lot::MutexGuard;
use pyo3::exceptions::{PyOverflowError, PyRuntimeError};
use pyo3::ffi;
use pyo3::gc::{PyTraverseError, PyVisit};
use pyo3::prelude::*;
use pyo3::sync::MutexExt;

use super::errors::closed_error;
use crate::core::waits::{Blocker, Waiting};
use crate::core::{self, Full, Garbage, Held, Released, Store, MAX_CAPACITY};

pub(crate) type Key = Py<PyAny>;
pub(crate) type Value = Py<PyAny>;
pub(crate) type PyStore = Store<Key, Value, Arc<Load>>;
pub(crate) type PyReleased = Released<Key, Value>;
pub(crate) type StoreGuard<'a> = MutexGuard<'a, PyStore>;

/// The longest a waiting thread stays detached before it runs signal
/// handlers (Ctrl-C) and looks for a deadlock between threads.
pub(crate) const WAIT_SLICE: Duration = Duration::from_millis(100);

/// How long a garbage collection waits for the expiry thread to finish a sweep
/// before it reports nothing for a cache (which only delays collecting it).
const TRAVERSE_PATIENCE: Duration = Duration::from_secs(5);

/// Identifies the calling (attached) thread: its interpreter thread state.
#[inline]
pub(crate) fn thread_token(_py: Python<'_>) -> usize {
    // SAFETY: the caller is attached, so the current thread state exists.
    unsafe { pyo3::ffi::PyThreadState_Get() as usize }
}

/// Drops what left the store, after the lock is released, attached: each
/// object's reference is released directly (`Py_DECREF`), without the generic
/// drop glue that asks whether the interpreter is attached. Most operations
/// release nothing; an overwrite releases one value.
#[inline(always)]
pub(crate) fn release(py: Python<'_>, released: PyReleased) {
    if released.is_empty() {
        return;
    }
    let (first, more) = released.split();
    if let Some(garbage) = first {
        release_one(py, garbage);
    }
    if let Some(more) = more {
        release_many(py, more);
    }
}

#[inline(always)]
fn release_one(py: Python<'_>, garbage: Garbage<Key, Value>) {
    match garbage {
        Garbage::Entry(key, value) => {
            key.drop_ref(py);
            value.drop_ref(py);
        }
        Garbage::Value(value) => value.drop_ref(py),
        Garbage::Key(key) => key.drop_ref(py),
    }
}

#[cold]
#[inline(never)]
fn release_many(py: Python<'_>, released: Vec<Garbage<Key, Value>>) {
    for garbage in released {
        release_one(py, garbage);
    }
}

/// Spreads Python's hash over 64 bits (ints hash to themselves). An exact
/// `str` whose hash is already computed (a str keeps it once hashed) is read
/// from the object, as a dict does, without calling `PyObject_Hash`.
#[inline(always)]
pub(crate) fn table_hash(key: &Bound<'_, PyAny>) -> PyResult<u64> {
    let object = key.as_ptr();
    // SAFETY: `key` is a live object, borrowed by the caller, which is attached;
    // an exact `str` is laid out as a `PyASCIIObject`, whose `hash` is -1 until computed.
    let known = unsafe {
        if ffi::Py_TYPE(object) == std::ptr::addr_of_mut!(ffi::PyUnicode_Type) {
            (*object.cast::<ffi::PyASCIIObject>()).hash
        } else {
            -1
        }
    };
    if known != -1 {
        return Ok(spread_hash(known as u64));
    }
    Ok(spread_hash(key.hash()? as u64))
}

/// `table_hash` of an object whose Python hash is `python_hash`.
#[inline]
pub(crate) fn spread_hash(python_hash: u64) -> u64 {
    let product = u128::from(python_hash) * 0x9E37_79B9_7F4A_7C15;
    (product as u64) ^ ((product >> 64) as u64)
}

/// A store operation that failed: a key comparison raised, or an unbounded
/// cache is at `MAX_CAPACITY`. Boxed so that a store result carrying it stays
/// two words wide on the (error-free) hot path.
pub(crate) struct StoreFailed(Box<PyErr>);

impl StoreFailed {
    /// The exception behind it.
    #[cold]
    pub(crate) fn into_err(self) -> PyErr {
        *self.0
    }
}

impl From<Full> for StoreFailed {
    #[cold]
    fn from(_: Full) -> Self {
        StoreFailed(Box::new(PyOverflowError::new_err(format!(
            "this unbounded pgcache.Cache (max_size=None) already holds {MAX_CAPACITY} entries, \
             the most it can index; give it a max_size to evict instead"
        ))))
    }
}

/// One key being looked up, with dict semantics: identity first, then
/// `stored == key`. Two exact `str`s are compared without running Python
/// code; any other `__eq__` runs with the calling thread marked as the
/// lock's owner, so that re-entry from it is reported instead of deadlocking.
pub(crate) struct Probe<'a, 'py> {
    shared: &'a Shared,
    key: &'a Bound<'py, PyAny>,
}

impl<'a, 'py> Probe<'a, 'py> {
    #[inline(always)]
    pub(crate) fn new(shared: &'a Shared, key: &'a Bound<'py, PyAny>) -> Self {
        Probe { shared, key }
    }

    #[inline(always)]
    pub(crate) fn eq(&self) -> impl FnMut(&Key, bool) -> Result<bool, StoreFailed> + '_ {
        #[inline(always)]
        move |stored, same_hash| {
            if stored.as_ptr() == self.key.as_ptr() {
                Ok(true)
            } else if same_hash {
                self.compare(stored)
            } else {
                Ok(false)
            }
        }
    }

    #[cold]
    #[inline(never)]
    fn compare(&self, stored: &Key) -> Result<bool, StoreFailed> {
        let py = self.key.py();
        let stored = stored.bind(py);
        if let Some(equal) = plain_equal(stored.as_ptr(), self.key.as_ptr(), 0) {
            return Ok(equal);
        }
        self.shared.owner.store(thread_token(py), Ordering::Release);
        let equal = stored.eq(self.key);
        self.shared.owner.store(0, Ordering::Release);
        equal.map_err(|error| StoreFailed(Box::new(error)))
    }
}

/// `a == b` when both are of one exact built-in type whose comparison runs no Python code
/// and creates no object (str, int, float, bytes, complex), or exact tuples of such items of
/// equal length (compared as a tuple does: identity first); None for anything else.
fn plain_equal(a: *mut ffi::PyObject, b: *mut ffi::PyObject, depth: u32) -> Option<bool> {
    if a == b {
        return Some(true);
    }
    // SAFETY: both are live objects, borrowed by the caller, which is attached.
    unsafe {
        let kind = ffi::Py_TYPE(a);
        if kind != ffi::Py_TYPE(b) {
            return None;
        }
        if kind == std::ptr::addr_of_mut!(ffi::PyTuple_Type) {
            let length = ffi::PyTuple_GET_SIZE(a);
            if depth >= 8 {
                return None;
            }
            if length != ffi::PyTuple_GET_SIZE(b) {
                return Some(false);
            }
            for i in 0..length {
                let (x, y) = (ffi::PyTuple_GET_ITEM(a, i), ffi::PyTuple_GET_ITEM(b, i));
                if x != y && !plain_equal(x, y, depth + 1)? {
                    return Some(false);
                }
            }
            return Some(true);
        }
        if kind == std::ptr::addr_of_mut!(ffi::PyUnicode_Type) {
            return Some(ffi::PyUnicode_Compare(a, b) == 0);
        }
        let scalar = kind == std::ptr::addr_of_mut!(ffi::PyLong_Type)
            || kind == std::ptr::addr_of_mut!(ffi::PyFloat_Type)
            || kind == std::ptr::addr_of_mut!(ffi::PyBytes_Type)
            || kind == std::ptr::addr_of_mut!(ffi::PyComplex_Type);
        if !scalar {
            return None;
        }
        match ffi::PyObject_RichCompareBool(a, b, ffi::Py_EQ) {
            -1 => {
                ffi::PyErr_Clear();
                None
            }
            equal => Some(equal == 1),
        }
    }
}

/// Matches a stored key by identity only: the second pass of a batch, after a
/// first pass found which stored object (if any) equals each key. Runs no
/// Python code, so it cannot fail.
#[inline]
pub(crate) fn same_object(
    target: *mut pyo3::ffi::PyObject,
) -> impl FnMut(&Key, bool) -> Result<bool, StoreFailed> {
    move |stored, _| Ok(stored.as_ptr() == target)
}

/// A `get_or_set` load in progress; other callers for the key wait on it.
pub(crate) struct Load {
    /// The thread running the factory.
    pub(crate) owner: usize,
    result: Mutex<Option<PyResult<Value>>>,
    done: Condvar,
    /// Set with the result; read under the store lock without `result`'s lock.
    finished: AtomicBool,
}

impl Load {
    pub(crate) fn new(owner: usize) -> Self {
        Load {
            owner,
            result: Mutex::new(None),
            done: Condvar::new(),
            finished: AtomicBool::new(false),
        }
    }

    /// Publishes the factory's outcome to every waiter.
    pub(crate) fn finish(&self, py: Python<'_>, outcome: PyResult<Value>) {
        *self
            .result
            .lock_py_attached(py)
            .unwrap_or_else(PoisonError::into_inner) = Some(outcome);
        self.finished.store(true, Ordering::Release);
        self.done.notify_all();
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }

    /// Waits for the outcome with the interpreter released, waking every
    /// `WAIT_SLICE` to see signals (a `KeyboardInterrupt` leaves the wait; the
    /// load goes on for the others) and loads that wait for each other.
    pub(crate) fn wait(&self, py: Python<'_>) -> PyResult<Value> {
        let mut waiting: Option<Waiting> = None;
        loop {
            let finished = py.detach(|| {
                let result = self.result.lock().unwrap_or_else(PoisonError::into_inner);
                if result.is_some() {
                    return true;
                }
                let (result, _) = self
                    .done
                    .wait_timeout(result, WAIT_SLICE)
                    .unwrap_or_else(PoisonError::into_inner);
                result.is_some()
            });
            if finished {
                break;
            }
            py.check_signals()?;
            let waiting = waiting
                .get_or_insert_with(|| Waiting::new(thread_token(py), Blocker::Thread(self.owner)));
            check_deadlock(waiting)?;
        }
        let result = self
            .result
            .lock_py_attached(py)
            .unwrap_or_else(PoisonError::into_inner);
        match result.as_ref() {
            Some(Ok(value)) => Ok(value.clone_ref(py)),
            Some(Err(error)) => Err(error.clone_ref(py)),
            None => unreachable!("woken before the load finished"),
        }
    }
}

/// What a cache's Python object and the expiry thread share.
pub(crate) struct Shared {
    pub(crate) core: core::Cache<Key, Value, Arc<Load>>,
    /// The thread holding the store lock while it runs a key's `__eq__` (0:
    /// none), so that re-entry is reported instead of deadlocking.
    owner: AtomicUsize,
    /// Mirrors the store's own flag (the authority, read under the lock) for
    /// the lock-free readers: `len`, `metrics`, `closed` and the expiry thread.
    closed: AtomicBool,
    /// The fork hooks hold the lock (see `fork.rs`).
    held_for_fork: AtomicBool,
    /// In a forked child: the lock was held at the fork by a thread that does
    /// not exist here, so it will never be released.
    orphaned: AtomicBool,
}

impl Shared {
    pub(crate) fn new(core: core::Cache<Key, Value, Arc<Load>>) -> Self {
        Shared {
            core,
            owner: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            held_for_fork: AtomicBool::new(false),
            orphaned: AtomicBool::new(false),
        }
    }

    /// Takes the store lock: at once if free, else waiting (see
    /// `lock_contended`). Fails if the cache is closed.
    #[inline(always)]
    pub(crate) fn lock(&self, py: Python<'_>) -> PyResult<StoreGuard<'_>> {
        // The fast path joins the slow one on the guard, not on the (wide) result.
        let store = match self.core.try_lock() {
            Some(store) => store,
            None => self.lock_contended(py)?,
        };
        if store.is_closed() {
            drop(store);
            return Err(closed_error());
        }
        Ok(store)
    }

    /// Waits for the lock in slices with the interpreter released, taking it
    /// only attached (open or not: `lock` checks). Raises instead of waiting
    /// forever: `RuntimeError` if this very thread holds it (a key's `__eq__`
    /// called back in), if it was lost in a fork, or if waiting closes a
    /// circle of threads that wait for each other (keys whose `__eq__` use
    /// each other's cache); `KeyboardInterrupt` (or whatever a signal handler
    /// raises) as soon as a signal arrives.
    #[cold]
    #[inline(never)]
    fn lock_contended(&self, py: Python<'_>) -> PyResult<StoreGuard<'_>> {
        if self.orphaned.load(Ordering::Acquire) {
            return Err(orphaned_error());
        }
        if self.owner.load(Ordering::Acquire) == thread_token(py) {
            return Err(PyRuntimeError::new_err(
                "pgcache.Cache was re-entered from a key's __eq__ (or code it triggered) \
                 while that key was being looked up; it cannot wait for itself",
            ));
        }
        let mut waiting: Option<Waiting> = None;
        loop {
            self.wait_until_unlocked(py, WAIT_SLICE);
            if let Some(store) = self.core.try_lock() {
                return Ok(store); // `lock` checks that it is open
            }
            py.check_signals()?;
            let waiting = waiting
                .get_or_insert_with(|| Waiting::new(thread_token(py), Blocker::Lock(&self.owner)));
            check_deadlock(waiting)?;
        }
    }

    /// The lock for `close()` on behalf of `Drop` and the garbage collector:
    /// waited for as long as it takes, with no signal to raise. `None` for a
    /// cache whose lock was lost in a fork.
    pub(crate) fn lock_to_close(&self, py: Python<'_>) -> Option<StoreGuard<'_>> {
        loop {
            if let Some(store) = self.core.try_lock() {
                return Some(store);
            }
            if self.orphaned.load(Ordering::Acquire) {
                return None;
            }
            self.wait_until_unlocked(py, WAIT_SLICE);
        }
    }

    /// Waits detached, at most `timeout`, for the lock to be free. It is taken
    /// and let go at once (the only way to wait for a `parking_lot` mutex): the
    /// caller takes it for real once attached.
    pub(crate) fn wait_until_unlocked(&self, py: Python<'_>, timeout: Duration) {
        py.detach(|| drop(self.core.try_lock_for(timeout)));
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Marks the cache closed for the lock-free readers (the caller closes the store).
    pub(crate) fn mark_closed(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Closes the cache whatever holds the lock now, releasing every entry
    /// after it (`Drop` and the garbage collector's `__clear__`).
    pub(crate) fn close_now(&self, py: Python<'_>) {
        let Some(mut store) = self.lock_to_close(py) else {
            return; // lost in a fork: leaked rather than waited for forever
        };
        self.mark_closed();
        let now = self.core.now();
        let closed = store.close(now);
        drop(store);
        drop(closed);
        super::expiry::nudge();
    }

    pub(crate) fn check_open(&self) -> PyResult<()> {
        if self.is_closed() {
            Err(closed_error())
        } else {
            Ok(())
        }
    }

    /// One background sweep (no interpreter needed): what expired, to be dropped attached.
    pub(crate) fn sweep(&self) -> PyReleased {
        let mut released = Released::new();
        let mut store = self.core.lock();
        if !store.is_closed() {
            let now = self.core.now();
            store.expire(now, &mut released);
        }
        released
    }

    /// Reports every object the store holds to the garbage collector, which
    /// runs with the interpreter held, so no Python thread can change the store
    /// meanwhile. The lock is never waited for if its holder is a Python thread
    /// (running a key's `__eq__`, or the fork hooks): that holder cannot move
    /// until the collection ends, so nothing is reported, the same in every
    /// pass of the collection (unreported references only keep objects
    /// alive). Any other holder (the expiry thread, or a thread that takes the
    /// lock detached only to see it free) lets go without the interpreter and
    /// is waited for: reporting less in a later pass than in an earlier one
    /// would let the collector free values that are still cached.
    pub(crate) fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        let store = match self.core.try_lock() {
            Some(store) => store,
            None if self.held_by_a_python_thread() => return Ok(()),
            None => match self.core.try_lock_for(TRAVERSE_PATIENCE) {
                Some(store) => store,
                None => return Ok(()),
            },
        };
        for held in store.held() {
            match held {
                Held::Entry(key, value) => {
                    visit.call(key)?;
                    visit.call(value)?;
                }
                Held::Loading(key) => visit.call(key)?,
            }
        }
        Ok(())
    }

    fn held_by_a_python_thread(&self) -> bool {
        self.owner.load(Ordering::Acquire) != 0
            || self.held_for_fork.load(Ordering::Acquire)
            || self.orphaned.load(Ordering::Acquire)
    }

    // ---- fork (see fork.rs) ------------------------------------------------

    /// Whether `thread` holds the lock in a key's `__eq__` (a fork from there).
    pub(crate) fn is_held_by(&self, thread: usize) -> bool {
        self.owner.load(Ordering::Acquire) == thread
    }

    /// Takes the lock, if free, to hold it across a fork (attached, so that a
    /// garbage collection never sees this change).
    pub(crate) fn hold_for_fork(&self) -> bool {
        match self.core.try_lock() {
            Some(store) => {
                std::mem::forget(store);
                self.held_for_fork.store(true, Ordering::Release);
                true
            }
            None => false,
        }
    }

    /// Runs `f` on the store held by `hold_for_fork` (in the forked child).
    pub(crate) fn with_held_store<T>(&self, f: impl FnOnce(&mut PyStore) -> T) -> T {
        debug_assert!(self.held_for_fork.load(Ordering::Acquire));
        // SAFETY: this thread took the lock in `hold_for_fork` and forgot its
        // guard; the guard made here is forgotten again, so the lock stays held.
        let mut store = unsafe { self.core.mutex().make_guard_unchecked() };
        let result = f(&mut store);
        std::mem::forget(store);
        result
    }

    /// Lets go of a lock taken by `hold_for_fork`, in the parent or in the
    /// forked child (where the parent's waiting threads are forgotten first).
    pub(crate) fn release_after_fork(&self, in_child: bool) {
        self.held_for_fork.store(false, Ordering::Release);
        // SAFETY: this thread took the lock in `hold_for_fork` (before the fork,
        // in this process or the parent whose memory the child copied) and
        // forgot the guard; nothing else can have released it. In the child it
        // is the only thread.
        unsafe {
            if in_child {
                self.core.unlock_in_forked_child();
            } else {
                self.core.mutex().force_unlock();
            }
        }
    }

    /// In a forked child: the lock was held by a thread that is gone.
    pub(crate) fn mark_orphaned(&self) {
        self.orphaned.store(true, Ordering::Release);
    }
}

/// `RuntimeError` when a wait closes a circle of threads that wait for each other.
fn check_deadlock(waiting: &mut Waiting) -> PyResult<()> {
    if waiting.is_deadlocked() {
        return Err(PyRuntimeError::new_err(
            "pgcache: deadlock between threads: this thread waits for a cache's lock or a \
             get_or_set load held by a thread that (directly or through others) waits for this \
             one; a key's __eq__ or a factory that uses another cache closed the circle",
        ));
    }
    Ok(())
}

#[cold]
fn orphaned_error() -> PyErr {
    PyRuntimeError::new_err(
        "this pgcache.Cache was locked by another thread (running a key's __eq__) when the \
         process forked; that thread does not exist in this child process, so the cache cannot \
         be used here: create a new Cache in the child",
    )
}
