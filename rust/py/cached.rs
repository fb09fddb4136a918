//! `CachedCall`: the native base of `pgcache.cached`'s function objects. A call
//! whose arguments have a common shape (exact int, float, complex, str, bytes,
//! bool and None, exact tuples of them, as positional or keyword arguments)
//! gets its default key built here, exactly as `callkeys.make_key` builds it,
//! and is answered from the cache without running Python code on a hit (an
//! async hit returns a finished coroutine). A miss loads through the Python
//! layer's hooks; any other shape, a `key=` function or a key that includes a
//! bound instance goes to the Python layer's `_call` whole.
//!
//! What it deliberately does not do: decide anything the Python layer decides
//! (single flight for asyncio, `condition`, what the function is called with).

use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::OnceLock;

use pyo3::exceptions::{PyAttributeError, PyRuntimeError};
use pyo3::ffi;
use pyo3::gc::{PyTraverseError, PyVisit};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyBytes, PyComplex, PyDict, PyFloat, PyFrozenSet, PyInt, PyString, PyTuple, PyType,
};

use super::args::optional_ttl_ns;
use super::cache::Cache;
use super::shared::spread_hash;

/// Deeper tuples than this are left to the Python key builder.
const MAX_DEPTH: u32 = 8;

/// How many times a cached function was called: bumped by every call, read by `cache_info()`.
#[pyclass(frozen, module = "pgcache._core", name = "CallCounter")]
#[derive(Default)]
pub struct CallCounter(AtomicU64);

#[pymethods]
impl CallCounter {
    #[new]
    fn new() -> Self {
        Self::default()
    }

    /// The calls counted so far.
    #[getter]
    fn value(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// What a configured `CachedCall` knows: set once, by `_configure`.
struct State {
    /// None: no cache of its own (a per-instance method before it is bound).
    cache: Option<Py<Cache>>,
    /// Leads every default key of the function (`callkeys.FunctionTag`), and its hash.
    tag: Py<PyAny>,
    tag_hash: u64,
    ttl_ns: Option<u64>,
    typed: bool,
    /// The key is `(tag, make_key(args, kwargs, typed))`: built here when the shape allows.
    native_keys: bool,
    calls: Py<CallCounter>,
    /// Carries a result `condition` rejected out of a load (`cached._Unstored`).
    unstored: Py<PyType>,
    /// Async functions: wraps a hit in a finished coroutine. None: a sync function.
    ready: Option<Py<PyAny>>,
    /// Separates positional from keyword arguments in a key (`callkeys._KWARGS`).
    kwargs_marker: Py<PyAny>,
    /// A `(tag, None)` tuple that only this object holds, refilled for the next key: a hit
    /// allocates no key. Null while a call uses it. A key that left native code (stored on a
    /// miss, handed to Python) is never taken back, so CPython never hashed a reused tuple.
    spare: AtomicPtr<ffi::PyObject>,
}

impl Drop for State {
    fn drop(&mut self) {
        let spare = *self.spare.get_mut();
        if !spare.is_null() {
            // SAFETY: the spare holds one strong reference, and a pyclass is dropped attached.
            Python::attach(|py| drop(unsafe { Bound::from_owned_ptr(py, spare) }));
        }
    }
}

impl State {
    /// `(tag, positional)`: the spare tuple refilled, or a new tuple.
    #[inline(always)]
    fn key_pair<'py>(
        &self,
        py: Python<'py>,
        positional: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let spare = self.spare.swap(ptr::null_mut(), Ordering::Acquire);
        // SAFETY: a non-null spare is a strong reference to a tuple of two (see `give_back`);
        // with one reference (not even `gc.get_objects()` reached it) it is ours to refill:
        // its item 1 is a strong reference to None, replaced by the positional part's.
        if spare.is_null() || unsafe { ffi::Py_REFCNT(spare) } != 1 {
            if !spare.is_null() {
                drop(unsafe { Bound::from_owned_ptr(py, spare) });
            }
            let tag = self.tag.bind(py).clone();
            return Ok(PyTuple::new(py, [tag, positional])?.into_any());
        }
        unsafe {
            let none = ffi::PyTuple_GET_ITEM(spare, 1);
            ffi::PyTuple_SET_ITEM(spare, 1, positional.into_ptr());
            ffi::Py_DECREF(none);
            Ok(Bound::from_owned_ptr(py, spare))
        }
    }

    /// Keeps `key` as the spare when no one else references it, emptied of the call's part.
    #[inline(always)]
    fn give_back(&self, key: Bound<'_, PyAny>) {
        // SAFETY: a key with one reference is ours alone: a tuple built by `key_pair`.
        unsafe {
            if ffi::Py_REFCNT(key.as_ptr()) != 1 || !self.spare.load(Ordering::Relaxed).is_null() {
                return;
            }
            let pair = key.into_ptr();
            let positional = ffi::PyTuple_GET_ITEM(pair, 1);
            ffi::PyTuple_SET_ITEM(pair, 1, ffi::Py_NewRef(ffi::Py_None()));
            ffi::Py_DECREF(positional);
            let kept = self.spare.compare_exchange(
                ptr::null_mut(),
                pair,
                Ordering::Release,
                Ordering::Relaxed,
            );
            if kept.is_err() {
                ffi::Py_DECREF(pair);
            }
        }
    }
}

/// The native base of `CachedFunction` and `AsyncCachedFunction`: see the module docs.
#[pyclass(subclass, frozen, module = "pgcache._core", name = "CachedCall")]
pub struct CachedCall {
    state: OnceLock<State>,
}

impl CachedCall {
    #[inline]
    fn state(&self) -> PyResult<&State> {
        self.state.get().ok_or_else(|| {
            PyRuntimeError::new_err("this cached function was not configured (_configure)")
        })
    }
}

/// The Python layer's handling of one call (a shape or option not handled here).
#[cold]
#[inline(never)]
fn call_python<'py>(
    slf: &Bound<'py, CachedCall>,
    args: &Bound<'py, PyTuple>,
    kwargs: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = slf.py();
    let kwargs = kwargs.cloned().unwrap_or_else(|| PyDict::new(py));
    slf.call_method1(intern!(py, "_call"), (args, kwargs))
}

/// A sync miss: the function called through the Python layer's `_load` under
/// `get_or_set`'s single flight; a result `condition` rejected is returned unstored.
#[cold]
#[inline(never)]
fn load_sync<'py>(
    slf: &Bound<'py, CachedCall>,
    state: &State,
    cache: &Cache,
    key: &Bound<'py, PyAny>,
    hash: u64,
    args: &Bound<'py, PyTuple>,
    kwargs: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = slf.py();
    let load = || {
        let kwargs = kwargs.cloned().unwrap_or_else(|| PyDict::new(py));
        slf.call_method1(intern!(py, "_load"), (args, kwargs))
            .map(Bound::unbind)
    };
    match cache.get_or_load(py, key, hash, state.ttl_ns, load) {
        Ok(value) => Ok(value.into_bound(py)),
        Err(error) if error.is_instance(py, state.unstored.bind(py)) => {
            error.value(py).getattr(intern!(py, "args"))?.get_item(0)
        }
        Err(error) => Err(error),
    }
}

/// An async miss: the Python layer's `_miss` coroutine (single flight per event loop).
#[cold]
#[inline(never)]
fn miss_async<'py>(
    slf: &Bound<'py, CachedCall>,
    key: Bound<'py, PyAny>,
    args: &Bound<'py, PyTuple>,
    kwargs: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = slf.py();
    let kwargs = kwargs.cloned().unwrap_or_else(|| PyDict::new(py));
    slf.call_method1(intern!(py, "_miss"), (key, args, kwargs))
}

#[pymethods]
impl CachedCall {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> Self {
        CachedCall {
            state: OnceLock::new(),
        }
    }

    /// Sets what calls need, once: the Python layer calls it from `__init__` and when it
    /// binds a copy to an instance.
    #[pyo3(signature = (*, cache, tag, ttl, typed, native_keys, calls, unstored, ready, kwargs_marker))]
    #[allow(clippy::too_many_arguments)]
    fn _configure(
        &self,
        py: Python<'_>,
        cache: Option<Py<Cache>>,
        tag: Py<PyAny>,
        ttl: Option<&Bound<'_, PyAny>>,
        typed: bool,
        native_keys: bool,
        calls: Py<CallCounter>,
        unstored: Py<PyType>,
        ready: Option<Py<PyAny>>,
        kwargs_marker: Py<PyAny>,
    ) -> PyResult<()> {
        let tag_hash = tag.bind(py).hash()? as u64;
        let state = State {
            cache,
            tag,
            tag_hash,
            ttl_ns: optional_ttl_ns(ttl)?,
            typed,
            native_keys,
            calls,
            unstored,
            ready,
            kwargs_marker,
            spare: AtomicPtr::new(ptr::null_mut()),
        };
        self.state
            .set(state)
            .map_err(|_| PyRuntimeError::new_err("this cached function is already configured"))
    }

    /// The cache the results are stored in.
    #[getter]
    fn cache<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, Cache>> {
        match self.state.get().and_then(|s| s.cache.as_ref()) {
            Some(cache) => Ok(cache.bind(py).clone()),
            None => Err(PyAttributeError::new_err(
                "a per-instance cached method has a cache only once bound to an instance",
            )),
        }
    }

    #[pyo3(signature = (*args, **kwargs))]
    fn __call__<'py>(
        slf: &Bound<'py, Self>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let state = slf.get().state()?;
        state.calls.get().0.fetch_add(1, Ordering::Relaxed);
        let cache = match &state.cache {
            Some(cache) if state.native_keys => cache.get(),
            _ => return call_python(slf, args, kwargs),
        };
        let Some((key, hash)) = default_key(py, state, args, kwargs)? else {
            return call_python(slf, args, kwargs);
        };
        match &state.ready {
            None => {
                let result = load_sync(slf, state, cache, &key, hash, args, kwargs);
                state.give_back(key);
                result
            }
            Some(ready) => match cache.lookup_hashed(py, &key, hash)? {
                Some(value) => {
                    state.give_back(key);
                    ready.bind(py).call1((value,))
                }
                None => miss_async(slf, key, args, kwargs),
            },
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(state) = self.state.get() {
            if let Some(cache) = &state.cache {
                visit.call(cache)?;
            }
            visit.call(&state.tag)?;
            visit.call(&state.calls)?;
            visit.call(&state.unstored)?;
            if let Some(ready) = &state.ready {
                visit.call(ready)?;
            }
            visit.call(&state.kwargs_marker)?;
        }
        Ok(())
    }
}

// CPython's tuple hash (xxHash-based, the same from 3.8 to 3.14) on 64 bits.
const XXPRIME_1: u64 = 11_400_714_785_074_694_791;
const XXPRIME_2: u64 = 14_029_467_366_897_019_727;
const XXPRIME_5: u64 = 2_870_177_450_012_600_261;

/// `hash((tag, positional))` from the two items' hashes, as `tuplehash` computes it: the
/// outer tuple is hashed here without a call through its type (the tests check, through the
/// Python key builder, that both hashes agree).
#[inline]
fn pair_hash(first: u64, second: u64) -> u64 {
    let mut acc = XXPRIME_5;
    for lane in [first, second] {
        acc = acc.wrapping_add(lane.wrapping_mul(XXPRIME_2));
        acc = acc.rotate_left(31);
        acc = acc.wrapping_mul(XXPRIME_1);
    }
    acc = acc.wrapping_add(2 ^ (XXPRIME_5 ^ 3_527_539));
    if acc == u64::MAX {
        1_546_275_796
    } else {
        acc
    }
}

/// `(tag, make_key(args, kwargs, typed))` and its table hash for the shapes built here; None
/// for any other.
fn default_key<'py>(
    py: Python<'py>,
    state: &State,
    args: &Bound<'py, PyTuple>,
    kwargs: Option<&Bound<'py, PyDict>>,
) -> PyResult<Option<(Bound<'py, PyAny>, u64)>> {
    let kwargs = kwargs.filter(|k| !k.is_empty());
    let positional = if !state.typed && kwargs.is_none() {
        // make_key's own fast path keeps the argument tuple; a tuple argument is rebuilt
        // with the same items, which is equal and of the same types: the tuple serves as is.
        if !args.iter_borrowed().all(|arg| plain(&arg, 0)) {
            return Ok(None);
        }
        args.clone().into_any()
    } else {
        let Some(frozen) = freeze_all(py, args, state.typed)? else {
            return Ok(None);
        };
        match kwargs {
            None => PyTuple::new(py, frozen)?.into_any(),
            Some(kwargs) => {
                let mut pairs = Vec::with_capacity(kwargs.len());
                for (name, value) in kwargs.iter() {
                    let Some(value) = freeze(py, &value, state.typed, 0)? else {
                        return Ok(None);
                    };
                    pairs.push(PyTuple::new(py, [name, value])?);
                }
                let mut items = frozen;
                items.push(state.kwargs_marker.bind(py).clone());
                items.push(PyFrozenSet::new(py, pairs)?.into_any());
                PyTuple::new(py, items)?.into_any()
            }
        }
    };
    let hash = pair_hash(state.tag_hash, positional.hash()? as u64);
    Ok(Some((state.key_pair(py, positional)?, spread_hash(hash))))
}

/// Exactly one of the scalar types whose values are their own key (`callkeys._SCALARS`).
#[inline(always)]
fn is_scalar(value: &Bound<'_, PyAny>) -> bool {
    value.is_exact_instance_of::<PyString>()
        || value.is_exact_instance_of::<PyInt>()
        || value.is_none()
        || value.is_exact_instance_of::<PyFloat>()
        || value.is_exact_instance_of::<PyBytes>()
        || value.is_exact_instance_of::<PyBool>()
        || value.is_exact_instance_of::<PyComplex>()
}

/// A scalar or an exact tuple of plain items: its own untyped key.
fn plain(value: &Bound<'_, PyAny>, depth: u32) -> bool {
    if is_scalar(value) {
        return true;
    }
    match value.cast_exact::<PyTuple>() {
        Ok(items) if depth < MAX_DEPTH => items.iter_borrowed().all(|item| plain(&item, depth + 1)),
        _ => false,
    }
}

fn freeze_all<'py>(
    py: Python<'py>,
    items: &Bound<'py, PyTuple>,
    typed: bool,
) -> PyResult<Option<Vec<Bound<'py, PyAny>>>> {
    let mut frozen = Vec::with_capacity(items.len());
    for item in items.iter_borrowed() {
        match freeze(py, &item, typed, 0)? {
            Some(item) => frozen.push(item),
            None => return Ok(None),
        }
    }
    Ok(Some(frozen))
}

/// `callkeys._freeze` for scalars and exact tuples of them; None for anything else.
fn freeze<'py>(
    py: Python<'py>,
    value: &Bound<'py, PyAny>,
    typed: bool,
    depth: u32,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    if is_scalar(value) {
        return Ok(Some(if typed {
            PyTuple::new(py, [value.get_type().into_any(), value.clone()])?.into_any()
        } else {
            value.clone()
        }));
    }
    match value.cast_exact::<PyTuple>() {
        Ok(items) if depth < MAX_DEPTH => {
            let mut frozen = Vec::with_capacity(items.len());
            for item in items.iter_borrowed() {
                match freeze(py, &item, typed, depth + 1)? {
                    Some(item) => frozen.push(item),
                    None => return Ok(None),
                }
            }
            Ok(Some(PyTuple::new(py, frozen)?.into_any()))
        }
        _ => Ok(None),
    }
}
