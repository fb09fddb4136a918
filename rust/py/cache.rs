//! `pgcache.Cache`: the core cache instantiated for Python keys and values.
//!
//! Rules kept here (see DESIGN.md): the key is hashed before locking; the
//! lock is never waited for while attached to the interpreter (see
//! `shared.rs`); no Python object is created or released under the lock
//! (values that leave the cache are dropped after it is released, since
//! `__del__` may run any code), on error paths too; the only Python code
//! under the lock is a key's `__eq__`, and re-entering the cache from there
//! raises `RuntimeError` instead of deadlocking. Batches check every key
//! before they change anything.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use hashbrown::HashTable;
use pyo3::exceptions::{PyKeyError, PyRuntimeError, PyTypeError};
use pyo3::ffi;
use pyo3::gc::{PyTraverseError, PyVisit};
use pyo3::panic::PanicException;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple, PyType};

use super::args::{self, optional_ttl_ns, seconds};
use super::clock::ManualClock;
use super::expiry;
use super::metrics::CacheMetrics;
use super::shared::{
    release, same_object, table_hash, thread_token, Key, Load, Probe, PyReleased, PyStore, Shared,
    StoreFailed, Value,
};
use crate::core::{self, Clock, Garbage, Lookup, PolicyKind, Released, Removed, NEVER};

const DEFAULT_MAX_SIZE: usize = 10_000;
const DEFAULT_CLEANUP_INTERVAL: f64 = 1.0;

/// Why `pickle` and `copy` refuse a cache: what it holds cannot be duplicated
/// meaningfully, while its entries can, explicitly.
fn not_copyable(verb: &str) -> PyErr {
    PyTypeError::new_err(format!(
        "a pgcache.Cache cannot be {verb}: it holds live Python objects, a lock and a \
         registration with the shared expiry thread; to copy its entries, build a new \
         Cache and call new.set_many(cache.items())"
    ))
}

/// A thread-safe TTL cache with a bounded size.
///
/// `ttl`: seconds (or a `timedelta`) an entry lives after it was last set;
/// None: entries never expire unless `set` gives them a TTL. `max_size`: the
/// entry limit, 10,000 by default; a new key into a full cache makes room by
/// the `policy`: `"tinylfu"` (the default: adaptive W-TinyLFU, which gives up
/// the entry it predicts least useful from recency and frequency) or `"lru"`
/// (the least recently used entry). A new entry is always stored and readable
/// at once. `max_size=None` means unbounded (as
/// `functools.lru_cache(maxsize=None)`): nothing is evicted, and a new key
/// beyond the 4,294,966,972 entries its 32-bit index holds raises OverflowError.
/// `cleanup_interval`: how often the shared background thread removes expired
/// entries. `clock`: a `ManualClock` for tests. `name`: for metrics and repr.
///
/// A cache can be weakly referenced; it cannot be pickled or copied.
#[pyclass(frozen, weakref, module = "pgcache._core", name = "Cache")]
pub struct Cache {
    shared: Arc<Shared>,
    ttl: Option<f64>,
    cleanup_interval: f64,
    name: Option<String>,
    policy: PolicyKind,
}

impl Cache {
    /// One store operation on `key`: hashed before locking, run under the lock, whatever
    /// left the store released after it; a failing `__eq__` becomes its Python error.
    #[inline(always)]
    fn with_key<T>(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        op: impl FnOnce(&mut PyStore, u64, &Probe<'_, '_>, &mut PyReleased) -> Result<T, StoreFailed>,
    ) -> PyResult<T> {
        self.with_hashed_key(py, key, table_hash(key)?, op)
    }

    /// `with_key` for a key whose `table_hash` the caller computed.
    #[inline(always)]
    fn with_hashed_key<T>(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        hash: u64,
        op: impl FnOnce(&mut PyStore, u64, &Probe<'_, '_>, &mut PyReleased) -> Result<T, StoreFailed>,
    ) -> PyResult<T> {
        let mut released = Released::new();
        let probe = Probe::new(&self.shared, key);
        let outcome = {
            let mut store = self.shared.lock(py)?;
            op(&mut store, hash, &probe, &mut released)
        };
        release(py, released);
        outcome.map_err(StoreFailed::into_err)
    }

    /// One counted lookup: the live value (made most recently used) or None.
    #[inline(always)]
    fn lookup(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<Option<Value>> {
        self.lookup_hashed(py, key, table_hash(key)?)
    }

    /// `lookup` of a key whose `table_hash` the caller computed (the cached-function object).
    #[inline(always)]
    pub(crate) fn lookup_hashed(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        hash: u64,
    ) -> PyResult<Option<Value>> {
        // `with_hashed_key` without a `Released`: a lookup releases at most the expired entry
        // it found, handed back here and dropped after the lock.
        let probe = Probe::new(&self.shared, key);
        let found = {
            let mut store = self.shared.lock(py)?;
            let now = || self.shared.core.now();
            match store.lookup(hash, &mut probe.eq(), now) {
                Ok(Lookup::Live(value)) => Ok(Some(value.clone_ref(py))),
                Ok(Lookup::Absent) => Ok(None),
                Ok(Lookup::Expired(key, value)) => Err((key, value)), // a miss, to release
                Err(failed) => return Err(failed.into_err()),
            }
        };
        Ok(found.unwrap_or_else(|(key, value)| {
            key.drop_ref(py);
            value.drop_ref(py);
            None
        }))
    }

    /// `set`: the clock is read only if a TTL applies or an entry with a
    /// deadline is in the way (see `Store::insert`).
    #[inline(always)]
    fn store_one(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
        ttl_ns: Option<u64>,
    ) -> PyResult<()> {
        self.with_key(
            py,
            key,
            #[inline(always)]
            |store, hash, probe, released| {
                let core = &self.shared.core;
                let (expires_at, read) = deadline(core, ttl_ns);
                store.insert(
                    hash,
                    || key.clone().unbind(),
                    value.clone().unbind(),
                    expires_at,
                    &mut probe.eq(),
                    || read.unwrap_or_else(|| core.now()),
                    released,
                )
            },
        )
    }

    /// Live entries in the policy's order (see `keys`), cloned under the lock.
    fn snapshot(&self, py: Python<'_>) -> PyResult<Vec<(Key, Value)>> {
        let store = self.shared.lock(py)?;
        let now = self.shared.core.now();
        Ok(store
            .iter_live(now)
            .map(|(k, v)| (k.clone_ref(py), v.clone_ref(py)))
            .collect())
    }

    fn remove(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<Option<Value>> {
        let removed = self.with_key(py, key, |store, hash, probe, released| {
            store.remove(hash, &mut probe.eq(), self.shared.core.now(), released)
        })?;
        Ok(match removed {
            Removed::Live(_key, value) => Some(value),
            Removed::Expired | Removed::Absent => None,
        })
    }

    /// `get_or_set` with the key already hashed, the TTL parsed and the factory a Rust closure:
    /// what the cached-function object (`cached.rs`) calls, so that its hit counts once.
    pub(crate) fn get_or_load(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        hash: u64,
        ttl_ns: Option<u64>,
        factory: impl FnOnce() -> PyResult<Value>,
    ) -> PyResult<Value> {
        let me = thread_token(py);
        let mut released = Released::new();
        let probe = Probe::new(&self.shared, key);
        let mut replaced = None;
        let load = {
            let mut store = self.shared.lock(py)?;
            let found = store
                .get(
                    hash,
                    &mut probe.eq(),
                    || self.shared.core.now(),
                    &mut released,
                )
                .map_err(StoreFailed::into_err)?;
            if let Some(value) = found {
                return Ok(value.clone_ref(py));
            }
            let running = store
                .find_load(hash, &mut probe.eq())
                .map_err(StoreFailed::into_err)?
                .cloned();
            match running {
                // A load that finished without unregistering (its thread could not
                // take the lock again, e.g. interrupted by a signal) is replaced.
                Some(stale) if stale.is_finished() => {
                    let stale_key = store.end_load(|l| Arc::ptr_eq(l, &stale));
                    released.extend(stale_key.map(Garbage::Key));
                    replaced = Some(stale); // holds its outcome: dropped after the lock
                    let load = Arc::new(Load::new(me));
                    store.begin_load(hash, key.clone().unbind(), Arc::clone(&load));
                    Ok(load)
                }
                Some(load) if load.owner == me => {
                    return Err(PyRuntimeError::new_err(
                        "get_or_set: the factory for this key asked for the same key again",
                    ));
                }
                Some(load) => Err(load),
                None => {
                    let load = Arc::new(Load::new(me));
                    store.begin_load(hash, key.clone().unbind(), Arc::clone(&load));
                    Ok(load)
                }
            }
        };
        release(py, released);
        drop(replaced);
        let load = match load {
            Ok(mine) => mine,
            Err(theirs) => return theirs.wait(py),
        };

        let outcome = factory();
        let mut released = Released::new();
        let stored = (|| {
            let mut store = self.shared.lock(py)?;
            if let Some(loading_key) = store.end_load(|l| Arc::ptr_eq(l, &load)) {
                released.push(Garbage::Key(loading_key));
            }
            if let Ok(value) = &outcome {
                let now = self.shared.core.now();
                let expires_at = self.shared.core.expires_at(now, ttl_ns);
                let probe = Probe::new(&self.shared, key);
                store
                    .insert(
                        hash,
                        || key.clone().unbind(),
                        value.clone_ref(py),
                        expires_at,
                        &mut probe.eq(),
                        || now,
                        &mut released,
                    )
                    .map_err(StoreFailed::into_err)?;
            }
            Ok(())
        })();
        release(py, released);
        let outcome = stored.and(outcome);
        let shared_outcome = match &outcome {
            Ok(value) => Ok(value.clone_ref(py)),
            Err(error) => Err(error.clone_ref(py)),
        };
        load.finish(py, shared_outcome);
        outcome
    }
}

#[pymethods]
impl Cache {
    #[new]
    #[pyo3(
        signature = (ttl = None, max_size = Some(DEFAULT_MAX_SIZE), cleanup_interval = None, clock = None, name = None, policy = None),
        text_signature = "(ttl=None, max_size=10000, cleanup_interval=1.0, clock=None, name=None, policy='tinylfu')"
    )]
    fn new(
        ttl: Option<&Bound<'_, PyAny>>,
        #[pyo3(from_py_with = args::max_size)] max_size: Option<usize>,
        cleanup_interval: Option<&Bound<'_, PyAny>>,
        clock: Option<&Bound<'_, PyAny>>,
        name: Option<&Bound<'_, PyAny>>,
        policy: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let policy = policy.map_or(Ok(PolicyKind::default()), args::policy)?;
        let ttl_ns = optional_ttl_ns(ttl)?;
        let ttl_secs = match ttl {
            Some(t) if ttl_ns.is_some() => Some(seconds(t, "ttl")?),
            _ => None,
        };
        let (cleanup_interval, interval) = match cleanup_interval {
            Some(c) => args::cleanup_interval(c)?,
            None => (
                DEFAULT_CLEANUP_INTERVAL,
                Duration::from_secs_f64(DEFAULT_CLEANUP_INTERVAL),
            ),
        };
        let clock = match clock {
            None => Clock::Monotonic,
            Some(c) if c.is_none() => Clock::Monotonic,
            Some(c) => match c.cast::<ManualClock>() {
                Ok(manual) => Clock::Manual(manual.get().clock.clone()),
                Err(_) => {
                    return Err(PyTypeError::new_err(format!(
                        "clock must be a pgcache.ManualClock or None, not {}",
                        c.get_type().name()?
                    )))
                }
            },
        };
        let name = match name {
            Some(n) if !n.is_none() => Some(n.extract::<String>().map_err(|_| {
                PyTypeError::new_err(format!(
                    "name must be a str or None, not {}",
                    n.get_type()
                        .name()
                        .map_or_else(|_| "?".into(), |t| t.to_string())
                ))
            })?),
            _ => None,
        };
        let core = core::Cache::new(max_size, ttl_ns, clock, policy);
        let shared = Arc::new(Shared::new(core));
        expiry::register(&shared, interval);
        Ok(Cache {
            shared,
            ttl: ttl_secs,
            cleanup_interval,
            name,
            policy,
        })
    }

    /// `Cache[K, V]` for type annotations at runtime.
    #[classmethod]
    fn __class_getitem__(cls: &Bound<'_, PyType>, item: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let py = cls.py();
        let alias = py.import("types")?.getattr("GenericAlias")?;
        Ok(alias.call1((cls, item))?.unbind())
    }

    /// The default TTL in seconds (None: entries never expire by default).
    #[getter]
    fn ttl(&self) -> Option<f64> {
        self.ttl
    }

    /// The entry limit; None for an unbounded cache.
    #[getter]
    fn max_size(&self) -> Option<usize> {
        self.shared.core.max_size()
    }

    #[getter]
    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Which entry a full cache gives up: "tinylfu" or "lru" (an unbounded
    /// cache never evicts, whatever its policy).
    #[getter]
    fn policy(&self) -> &'static str {
        self.policy.name()
    }

    #[getter]
    fn cleanup_interval(&self) -> f64 {
        self.cleanup_interval
    }

    #[getter]
    fn closed(&self) -> bool {
        self.shared.is_closed()
    }

    /// `get(key, default=None, /)`: a C method of its own (see `get_fastcall`).
    /// Made while the class is initialised, which is also when `c[k]` and
    /// `c[k] = v` get their C entry points (see `install_mapping_slots`).
    #[classattr]
    fn get(py: Python<'_>) -> PyResult<Py<PyAny>> {
        // While its attributes are made, the class is already there (PyO3 hands
        // it out to the thread that is initialising it).
        let cls = py.get_type::<Cache>();
        install_mapping_slots(&cls);
        let def = Box::leak(Box::new(ffi::PyMethodDef {
            ml_name: c"get".as_ptr(),
            ml_meth: ffi::PyMethodDefPointer {
                PyCFunctionFast: get_fastcall,
            },
            ml_flags: ffi::METH_FASTCALL,
            ml_doc: c"get($self, key, default=None, /)\n--\n\nThe value for `key`, or `default` if it is absent or expired.".as_ptr(),
        }));
        // SAFETY: a method of this class, its definition alive for ever (leaked once per process).
        unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyDescr_NewMethod(cls.as_type_ptr(), def)) }
            .map(Bound::unbind)
    }

    fn __getitem__(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<Value> {
        self.lookup(py, key)?
            .ok_or_else(|| PyKeyError::new_err(key.clone().unbind()))
    }

    /// Stores `value` under `key`; `ttl` overrides the cache's default for this entry.
    #[pyo3(signature = (key, value, ttl = None))]
    fn set(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
        ttl: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.store_one(py, key, value, optional_ttl_ns(ttl)?)
    }

    fn __setitem__(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        self.store_one(py, key, value, None)
    }

    /// Removes `key`; True if a live entry was removed.
    fn delete(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(self.remove(py, key)?.is_some())
    }

    fn __delitem__(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<()> {
        match self.remove(py, key)? {
            Some(_) => Ok(()),
            None => Err(PyKeyError::new_err(key.clone().unbind())),
        }
    }

    /// Removes `key` and returns its value; `default` (if given) when absent, else KeyError.
    #[pyo3(signature = (key, *default), text_signature = "($self, key, default=..., /)")]
    fn pop(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        default: &Bound<'_, PyTuple>,
    ) -> PyResult<Value> {
        if default.len() > 1 {
            return Err(PyTypeError::new_err(format!(
                "pop expected at most 2 arguments, got {}",
                default.len() + 1
            )));
        }
        match self.remove(py, key)? {
            Some(value) => Ok(value),
            None => match default.len() {
                0 => Err(PyKeyError::new_err(key.clone().unbind())),
                _ => Ok(default.get_item(0)?.unbind()),
            },
        }
    }

    fn __contains__(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.with_key(py, key, |store, hash, probe, released| {
            store.contains(hash, &mut probe.eq(), || self.shared.core.now(), released)
        })
    }

    /// Stored entries; may include expired ones not yet swept (exact after `expire()`).
    fn __len__(&self) -> PyResult<usize> {
        self.shared.check_open()?;
        Ok(self.shared.core.metrics().size as usize)
    }

    /// The live values of the keys that are present (each key looked up once
    /// per occurrence). Every key is hashed, then compared under the lock,
    /// before anything changes: a key whose hash or `__eq__` raises leaves the
    /// cache (order and counters) as it was.
    fn get_many<'py>(
        &self,
        py: Python<'py>,
        keys: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let mut wanted = Vec::new();
        for key in keys.try_iter()? {
            let key = key?;
            wanted.push((table_hash(&key)?, key));
        }
        let mut hits = Vec::with_capacity(wanted.len());
        let mut released = Released::new();
        let outcome = (|| -> PyResult<()> {
            let mut store = self.shared.lock(py)?;
            let stored = stored_keys(&self.shared, &store, wanted.iter().map(|(h, k)| (*h, k)))?;
            let now = self.shared.core.now();
            for (index, ((hash, _), target)) in wanted.iter().zip(stored).enumerate() {
                let found = store.get(*hash, &mut same_object(target), || now, &mut released);
                if let Ok(Some(value)) = found {
                    hits.push((index, value.clone_ref(py)));
                }
            }
            Ok(())
        })();
        release(py, released);
        outcome?;
        let found = PyDict::new(py);
        for (index, value) in hits {
            found.set_item(&wanted[index].1, value)?;
        }
        Ok(found)
    }

    /// Stores every pair of a mapping (or an iterable of pairs), in order, as
    /// `set` one by one would. Every key is hashed and compared (with the
    /// others outside the lock, with the stored keys under it) before anything
    /// changes: a key whose hash or `__eq__` raises stores nothing.
    #[pyo3(signature = (items, ttl = None))]
    fn set_many(
        &self,
        py: Python<'_>,
        items: &Bound<'_, PyAny>,
        ttl: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let ttl_ns = optional_ttl_ns(ttl)?;
        let pairs = if let Ok(dict) = items.cast::<PyDict>() {
            dict.items().into_any()
        } else if items.hasattr("items")? {
            items.call_method0("items")?
        } else {
            items.clone()
        };
        let mut entries = Vec::new();
        for pair in pairs.try_iter()? {
            let (key, value): (Bound<'_, PyAny>, Bound<'_, PyAny>) = pair?.extract()?;
            entries.push((table_hash(&key)?, key, value));
        }
        let firsts = first_equal_keys(&entries)?;
        let mut released = Released::new();
        let outcome = (|| {
            let mut store = self.shared.lock(py)?;
            let keys = firsts.iter().map(|&i| (entries[i].0, &entries[i].1));
            // For each pair, the stored object of its key (null: none), kept up to date below.
            let mut stored = stored_keys(&self.shared, &store, keys)?;
            let now = self.shared.core.now();
            let new_keys = (firsts.iter().enumerate())
                .filter(|&(position, &first)| position == first && stored[position].is_null())
                .count();
            store
                .make_room(new_keys, now, &mut released)
                .map_err(|full| StoreFailed::from(full).into_err())?;
            let expires_at = self.shared.core.expires_at(now, ttl_ns);
            for (position, (hash, key, value)) in entries.iter().enumerate() {
                let first = firsts[position];
                let mut created = false;
                let inserted = store.insert(
                    *hash,
                    || {
                        created = true;
                        key.clone().unbind()
                    },
                    value.clone().unbind(),
                    expires_at,
                    &mut same_object(stored[first]),
                    || now,
                    &mut released,
                );
                debug_assert!(inserted.is_ok(), "room was made for every new key");
                if created {
                    stored[first] = key.as_ptr();
                }
            }
            Ok(())
        })();
        release(py, released);
        outcome
    }

    /// The cached value, or `factory()`'s result stored under `key`. Concurrent
    /// callers for the same missing key wait for the one running factory.
    #[pyo3(signature = (key, factory, ttl = None))]
    fn get_or_set(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        factory: &Bound<'_, PyAny>,
        ttl: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Value> {
        let hash = table_hash(key)?;
        let ttl_ns = optional_ttl_ns(ttl)?;
        self.get_or_load(py, key, hash, ttl_ns, || factory.call0().map(Bound::unbind))
    }

    /// Keys of live entries: most recently used first under "lru"; under
    /// "tinylfu", the window's (newest first), then the main region's
    /// protected and probation segments (each most recently used first).
    fn keys<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let entries = self.snapshot(py)?;
        PyList::new(py, entries.into_iter().map(|(k, _)| k))
    }

    fn values<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let entries = self.snapshot(py)?;
        PyList::new(py, entries.into_iter().map(|(_, v)| v))
    }

    fn items<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let entries = self.snapshot(py)?;
        let pairs = entries
            .into_iter()
            .map(|(k, v)| PyTuple::new(py, [k, v]))
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, pairs)
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.keys(py)?.try_iter().map(Bound::into_any)
    }

    /// Removes every expired entry now; returns how many.
    fn expire(&self, py: Python<'_>) -> PyResult<usize> {
        let mut released = Released::new();
        let count = {
            let mut store = self.shared.lock(py)?;
            let now = self.shared.core.now();
            store.expire(now, &mut released)
        };
        release(py, released);
        Ok(count)
    }

    /// Removes every entry; counters are kept.
    fn clear(&self, py: Python<'_>) -> PyResult<()> {
        let taken = {
            let mut store = self.shared.lock(py)?;
            let now = self.shared.core.now();
            store.clear(now)
        };
        drop(taken);
        Ok(())
    }

    fn metrics(&self) -> PyResult<CacheMetrics> {
        self.shared.check_open()?;
        Ok(CacheMetrics::new(
            self.shared.core.metrics(),
            self.shared.core.max_size(),
        ))
    }

    fn reset_metrics(&self, py: Python<'_>) -> PyResult<()> {
        self.shared.lock(py)?.reset_metrics();
        Ok(())
    }

    /// Drops every entry and stops background expiry; later use raises CacheClosedError.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let taken = {
            let mut store = match self.shared.lock(py) {
                Ok(store) => store,
                Err(e) if e.is_instance_of::<super::errors::CacheClosedError>(py) => return Ok(()),
                Err(e) => return Err(e),
            };
            self.shared.mark_closed();
            let now = self.shared.core.now();
            store.close(now)
        };
        drop(taken);
        expiry::nudge();
        Ok(())
    }

    /// Reports every cached key and value to the garbage collector, so that
    /// cycles through a cache (owner -> cache -> value -> owner) are collected.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        self.shared.traverse(&visit)
    }

    /// The collector found the cache unreachable: it is closed, which
    /// releases every entry.
    fn __clear__(&self, py: Python<'_>) {
        self.shared.close_now(py);
    }

    /// A cache cannot be pickled: see `not_copyable`.
    fn __reduce__(&self) -> PyResult<()> {
        Err(not_copyable("pickled"))
    }

    fn __copy__(&self) -> PyResult<()> {
        Err(not_copyable("copied"))
    }

    fn __deepcopy__(&self, _memo: &Bound<'_, PyAny>) -> PyResult<()> {
        Err(not_copyable("copied"))
    }

    fn __enter__(slf: Bound<'_, Self>) -> PyResult<Bound<'_, Self>> {
        slf.get().shared.check_open()?;
        Ok(slf)
    }

    #[pyo3(signature = (_exc_type, _exc_value, _traceback, /))]
    fn __exit__(
        &self,
        py: Python<'_>,
        _exc_type: Option<&Bound<'_, PyAny>>,
        _exc_value: Option<&Bound<'_, PyAny>>,
        _traceback: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.close(py)
    }

    fn __repr__(&self) -> String {
        let ttl = self
            .ttl
            .map_or_else(|| "None".to_string(), |t| t.to_string());
        let name = self
            .name
            .as_ref()
            .map_or_else(|| "None".to_string(), |n| format!("{n:?}"));
        let state = if self.shared.is_closed() {
            "closed".to_string()
        } else {
            format!("size={}", self.shared.core.metrics().size)
        };
        let max_size = self
            .shared
            .core
            .max_size()
            .map_or_else(|| "None".to_string(), |m| m.to_string());
        format!("Cache(name={name}, ttl={ttl}, max_size={max_size}, {state})")
    }
}

impl Drop for Cache {
    /// Runs attached (tp_dealloc): entries are released here, with the
    /// interpreter, rather than by whichever thread drops the last `Arc`.
    fn drop(&mut self) {
        Python::attach(|py| self.shared.close_now(py));
    }
}

/// Runs the body of a C entry point of `Cache` called without PyO3's
/// trampoline (`get_fastcall`, `subscript`, `assign_subscript`): what the
/// trampoline would do is done here. A panic becomes a `PanicException`; an
/// error is raised and `failed` returned. PyO3 does not count such a call as
/// attached, so a `Py` dropped in it would have its reference released later:
/// the hot paths drop none (`release` releases attached), and an error is
/// raised inside `Python::attach`, which counts.
#[inline(always)]
fn c_entry<T>(failed: T, body: impl FnOnce(Python<'_>) -> PyResult<T>) -> T {
    // SAFETY: CPython calls C methods and slots attached.
    let py = unsafe { Python::assume_attached() };
    match std::panic::catch_unwind(AssertUnwindSafe(|| body(py))) {
        Ok(Ok(value)) => value,
        Ok(Err(error)) => {
            Python::attach(|py| error.restore(py));
            failed
        }
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|m| m.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "pgcache.Cache panicked".into());
            Python::attach(|py| PanicException::new_err(message).restore(py));
            failed
        }
    }
}

/// The `Cache` behind a C entry point's `self`.
///
/// # Safety
/// `slf` is a `Cache` (CPython checks it for methods and for slots of this class).
#[inline(always)]
unsafe fn this<'a>(py: Python<'a>, slf: &'a *mut ffi::PyObject) -> &'a Cache {
    // SAFETY: see the function's contract.
    unsafe { Bound::ref_from_ptr(py, slf).cast_unchecked::<Cache>().get() }
}

/// `Cache.get(key, default=None, /)` as a `METH_FASTCALL` C method: the
/// hottest call of the API skips PyO3's generic argument parsing and its
/// trampoline (see `c_entry`).
///
/// # Safety
/// Called by CPython through the method descriptor made in `Cache::get`,
/// which checks that `slf` is a `Cache`; `args` holds `nargs` borrowed references.
unsafe extern "C" fn get_fastcall(
    slf: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    c_entry(std::ptr::null_mut(), |py| {
        if !(1..=2).contains(&nargs) {
            return Err(PyTypeError::new_err(format!(
                "get expected 1 or 2 arguments (key, default=None), got {nargs}"
            )));
        }
        // SAFETY: see the function's contract.
        let (cache, key) = unsafe { (this(py, &slf), Bound::ref_from_ptr(py, &*args)) };
        Ok(match cache.lookup(py, key)? {
            Some(value) => value.into_ptr(),
            // SAFETY: `args` holds `nargs` pointers.
            None if nargs == 2 => unsafe { Bound::ref_from_ptr(py, &*args.add(1)) }
                .clone()
                .into_ptr(),
            None => py.None().into_ptr(),
        })
    })
}

/// `c[k]` (the `mp_subscript` slot), without PyO3's trampoline (see `c_entry`);
/// `Cache.__getitem__` stays PyO3's, with the same behaviour.
///
/// # Safety
/// Called by CPython with a `Cache` and a borrowed key.
unsafe extern "C" fn subscript(
    slf: *mut ffi::PyObject,
    key: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    c_entry(std::ptr::null_mut(), |py| {
        // SAFETY: see the function's contract.
        let (cache, key) = unsafe { (this(py, &slf), Bound::ref_from_ptr(py, &key)) };
        match cache.lookup(py, key)? {
            Some(value) => Ok(value.into_ptr()),
            None => Err(PyKeyError::new_err(key.clone().unbind())),
        }
    })
}

/// `c[k] = v` and `del c[k]` (the `mp_ass_subscript` slot; `value` is null
/// for a deletion), without PyO3's trampoline (see `c_entry`).
///
/// # Safety
/// Called by CPython with a `Cache`, a borrowed key and a borrowed value or null.
unsafe extern "C" fn assign_subscript(
    slf: *mut ffi::PyObject,
    key: *mut ffi::PyObject,
    value: *mut ffi::PyObject,
) -> std::os::raw::c_int {
    c_entry(-1, |py| {
        // SAFETY: see the function's contract.
        let (cache, key) = unsafe { (this(py, &slf), Bound::ref_from_ptr(py, &key)) };
        if value.is_null() {
            // A deletion drops the removed entry's objects: counted as attached.
            return Python::attach(|py| cache.__delitem__(py, key)).map(|()| 0);
        }
        // SAFETY: see the function's contract.
        let value = unsafe { Bound::ref_from_ptr(py, &value) };
        cache.store_one(py, key, value, None).map(|()| 0)
    })
}

/// Points the class's `c[k]` and `c[k] = v` slots at `subscript` and
/// `assign_subscript`, in place of PyO3's trampolines around `__getitem__`,
/// `__setitem__` and `__delitem__` (whose descriptors, kept in the class,
/// behave the same). Called once, while the class is being initialised.
fn install_mapping_slots(cls: &Bound<'_, PyType>) {
    let ty = cls.as_type_ptr();
    // SAFETY: a heap type made by PyO3 with `__getitem__` and `__setitem__`, so
    // with a mapping-methods table of its own; `PyType_Modified` drops cached lookups.
    unsafe {
        let mapping = (*ty).tp_as_mapping;
        assert!(!mapping.is_null(), "pgcache.Cache has mapping slots");
        (*mapping).mp_subscript = Some(subscript);
        (*mapping).mp_ass_subscript = Some(assign_subscript);
        ffi::PyType_Modified(ty);
    }
}

/// The deadline of an entry stored now with an optional TTL override, and
/// the time read for it (`None`: no TTL applies and the clock was not read).
#[inline(always)]
fn deadline(core: &core::Cache<Key, Value, Arc<Load>>, ttl_ns: Option<u64>) -> (u64, Option<u64>) {
    match ttl_ns.or(core.default_ttl_ns()) {
        Some(ttl) => {
            let now = core.now();
            (now.saturating_add(ttl), Some(now))
        }
        None => (NEVER, None),
    }
}

/// Pass one of a batch, under the lock: the stored key (by identity; null when
/// absent) equal to each key, found without changing anything. A raising
/// `__eq__` ends it with the cache as it was.
fn stored_keys<'a, 'py: 'a>(
    shared: &Shared,
    store: &PyStore,
    keys: impl Iterator<Item = (u64, &'a Bound<'py, PyAny>)>,
) -> PyResult<Vec<*mut pyo3::ffi::PyObject>> {
    keys.map(|(hash, key)| {
        let probe = Probe::new(shared, key);
        let found = store.find_key(hash, &mut probe.eq());
        match found {
            Ok(found) => Ok(found.map_or(std::ptr::null_mut(), Key::as_ptr)),
            Err(failed) => Err(failed.into_err()),
        }
    })
    .collect()
}

/// For each pair of a batch, the index of the first pair whose key is equal
/// (dict semantics: identity, then `==`). Compared here, outside the lock, so
/// the only comparisons left under it are with stored keys.
fn first_equal_keys(pairs: &[(u64, Bound<'_, PyAny>, Bound<'_, PyAny>)]) -> PyResult<Vec<usize>> {
    let mut table: HashTable<usize> = HashTable::with_capacity(pairs.len());
    let mut firsts = Vec::with_capacity(pairs.len());
    for (position, (hash, key, _)) in pairs.iter().enumerate() {
        let mut error = None;
        let found = table
            .find(*hash, |&first| {
                let (first_hash, first_key, _) = &pairs[first];
                if first_hash != hash || error.is_some() {
                    return false;
                }
                if first_key.is(key) {
                    return true;
                }
                first_key.eq(key).unwrap_or_else(|e| {
                    error = Some(e);
                    true // stop probing
                })
            })
            .copied();
        if let Some(error) = error {
            return Err(error);
        }
        firsts.push(found.unwrap_or_else(|| {
            table.insert_unique(*hash, position, |&i| pairs[i].0);
            position
        }));
    }
    Ok(firsts)
}
