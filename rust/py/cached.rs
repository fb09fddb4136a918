//! `CachedCall`: the native base of `pgcache.cached`'s function objects. CPython calls it
//! through the vector protocol (`vectorcall`: no argument tuple, no PyO3 argument parsing).
//! A call whose arguments have a common shape (exact int, float, complex, str, bytes, bool
//! and None, exact tuples of them, as positional or keyword arguments) gets its default key
//! built here, exactly as `callkeys.make_key` builds it, and is answered from the cache
//! without running Python code on a hit (an async hit returns a finished coroutine); a hit
//! with positional arguments allocates nothing (its key tuples are kept for the next call).
//! A miss loads through the Python layer's hooks; any other shape, a `key=` function or a key
//! that includes a bound instance goes to the Python layer's `_call` whole.
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
use pyo3::Borrowed;

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
    /// The positional part of a vectorcall's key, kept the same way: a tuple this object
    /// created (never seen by Python code: untracked by the GC), its items null while spare.
    spare_args: AtomicPtr<ffi::PyObject>,
}

impl Drop for State {
    fn drop(&mut self) {
        for spare in [*self.spare.get_mut(), *self.spare_args.get_mut()] {
            if !spare.is_null() {
                // SAFETY: a spare holds one strong reference (a tuple deallocates null items),
                // and a pyclass is dropped attached.
                Python::attach(|py| drop(unsafe { Bound::from_owned_ptr(py, spare) }));
            }
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
        // with one reference it is ours to refill: its item 1 is a strong reference to None,
        // replaced by the positional part's. A new pair is untracked by the GC, so that
        // `gc.get_objects()` never reaches a spare (nor can a key be part of a cycle: its
        // items are the tag and plain values).
        if spare.is_null() || unsafe { ffi::Py_REFCNT(spare) } != 1 {
            if !spare.is_null() {
                drop(unsafe { Bound::from_owned_ptr(py, spare) });
            }
            let tag = self.tag.bind(py).clone();
            let pair = PyTuple::new(py, [tag, positional])?;
            unsafe { ffi::PyObject_GC_UnTrack(pair.as_ptr().cast()) };
            return Ok(pair.into_any());
        }
        unsafe {
            let none = ffi::PyTuple_GET_ITEM(spare, 1);
            ffi::PyTuple_SET_ITEM(spare, 1, positional.into_ptr());
            ffi::Py_DECREF(none);
            Ok(Bound::from_owned_ptr(py, spare))
        }
    }

    /// The positional part of a vectorcall's key (typed: of `(type, value)` pairs): the spare
    /// refilled when its length fits, or a new tuple, untracked by the GC (as its pairs) so
    /// that no Python code ever reaches it (its items are scalars: it cannot be in a cycle).
    #[inline(always)]
    fn positional<'py>(
        &self,
        py: Python<'py>,
        items: &[*mut ffi::PyObject],
    ) -> PyResult<Bound<'py, PyTuple>> {
        if items.is_empty() {
            return Ok(PyTuple::empty(py));
        }
        let length = items.len() as ffi::Py_ssize_t;
        let spare = self.spare_args.swap(ptr::null_mut(), Ordering::Acquire);
        // SAFETY: a non-null spare is a strong reference to a tuple with null items, or typed
        // with emptied pairs of one reference (see `give_back`); a new tuple has null items:
        // each empty slot gets a strong reference.
        unsafe {
            let tuple = if !spare.is_null() && ffi::PyTuple_GET_SIZE(spare) == length {
                spare
            } else {
                if !spare.is_null() {
                    ffi::Py_DECREF(spare);
                }
                let tuple = ffi::PyTuple_New(length);
                if tuple.is_null() {
                    return Err(PyErr::fetch(py));
                }
                ffi::PyObject_GC_UnTrack(tuple.cast());
                tuple
            };
            let positional = Bound::from_owned_ptr(py, tuple).cast_into_unchecked();
            for (i, &item) in items.iter().enumerate() {
                let i = i as ffi::Py_ssize_t;
                if !self.typed {
                    ffi::PyTuple_SET_ITEM(tuple, i, ffi::Py_NewRef(item));
                    continue;
                }
                // `(type(item), item)`: the pair a spare kept (emptied), or a new one.
                let mut pair = ffi::PyTuple_GET_ITEM(tuple, i);
                if pair.is_null() {
                    pair = ffi::PyTuple_New(2);
                    if pair.is_null() {
                        return Err(PyErr::fetch(py));
                    }
                    ffi::PyObject_GC_UnTrack(pair.cast());
                    ffi::PyTuple_SET_ITEM(tuple, i, pair);
                }
                let kind = ffi::Py_TYPE(item).cast::<ffi::PyObject>();
                ffi::PyTuple_SET_ITEM(pair, 0, ffi::Py_NewRef(kind));
                ffi::PyTuple_SET_ITEM(pair, 1, ffi::Py_NewRef(item));
            }
            Ok(positional)
        }
    }

    /// Keeps `key` as the spare when no one else references it, emptied of the call's part;
    /// with `positional_too` (a vectorcall's key on a hit), that part as the spare positional
    /// tuple when no one else references it either.
    #[inline(always)]
    fn give_back(&self, key: Bound<'_, PyAny>, positional_too: bool) {
        // SAFETY: a key with one reference is ours alone: a tuple built by `key_pair`, whose
        // item 1, with one reference too and `positional_too`, was built by `positional`.
        unsafe {
            if ffi::Py_REFCNT(key.as_ptr()) != 1 {
                return;
            }
            let pair = key.into_ptr();
            let positional = ffi::PyTuple_GET_ITEM(pair, 1);
            ffi::PyTuple_SET_ITEM(pair, 1, ffi::Py_NewRef(ffi::Py_None()));
            keep(&self.spare, pair, |_| ());
            if !positional_too || ffi::Py_REFCNT(positional) != 1 {
                ffi::Py_DECREF(positional);
                return;
            }
            keep(&self.spare_args, positional, |tuple| {
                if !self.typed {
                    return empty_slots(tuple);
                }
                for i in 0..ffi::PyTuple_GET_SIZE(tuple) {
                    let pair = ffi::PyTuple_GET_ITEM(tuple, i);
                    if ffi::Py_REFCNT(pair) == 1 {
                        empty_slots(pair); // kept in place for the next call
                    } else {
                        ffi::PyTuple_SET_ITEM(tuple, i, ptr::null_mut());
                        ffi::Py_DECREF(pair);
                    }
                }
            });
        }
    }
}

/// Sets every item of `tuple` to null, releasing what they held.
///
/// # Safety
/// The caller is attached and the only holder of `tuple`.
#[inline(always)]
unsafe fn empty_slots(tuple: *mut ffi::PyObject) {
    unsafe {
        for i in 0..ffi::PyTuple_GET_SIZE(tuple) {
            let item = ffi::PyTuple_GET_ITEM(tuple, i);
            ffi::PyTuple_SET_ITEM(tuple, i, ptr::null_mut());
            ffi::Py_DECREF(item);
        }
    }
}

/// Puts `object` (a strong reference) in an empty `slot` after `empty` made it reusable, or
/// releases it when the slot is taken.
///
/// # Safety
/// The caller is attached and owns the reference.
#[inline(always)]
unsafe fn keep(
    slot: &AtomicPtr<ffi::PyObject>,
    object: *mut ffi::PyObject,
    empty: impl FnOnce(*mut ffi::PyObject),
) {
    if !slot.load(Ordering::Relaxed).is_null() {
        unsafe { ffi::Py_DECREF(object) };
        return;
    }
    empty(object);
    let kept = slot.compare_exchange(
        ptr::null_mut(),
        object,
        Ordering::Release,
        Ordering::Relaxed,
    );
    if kept.is_err() {
        unsafe { ffi::Py_DECREF(object) };
    }
}

/// The native base of `CachedFunction` and `AsyncCachedFunction`: see the module docs.
#[pyclass(subclass, frozen, module = "pgcache._core", name = "CachedCall")]
pub struct CachedCall {
    /// What CPython calls for `f(...)` once the type has `Py_TPFLAGS_HAVE_VECTORCALL` (set by
    /// `_configure`, see `enable_vectorcall`): read at the type's `tp_vectorcall_offset`.
    vectorcall: ffi::vectorcallfunc,
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

/// The arguments a miss calls the function with, built only then (from the call's key, or not).
type CallArgs<'py> = (Bound<'py, PyTuple>, Option<Bound<'py, PyDict>>);

/// The answer to a call whose key is built: the stored result; on a miss, sync: the function
/// called with `call_args(key)` through the Python layer's `_load` under `get_or_set`'s single
/// flight (a result `condition` rejected is returned unstored); async: the `_miss` coroutine.
/// The key is kept as the spare if the call did not load (`positional_too`: its positional
/// part too, a tuple `State::positional` built).
#[inline(always)]
fn answer<'py>(
    slf: &Bound<'py, CachedCall>,
    (state, cache): (&State, &Cache),
    (key, hash): (Bound<'py, PyAny>, u64),
    call_args: impl FnOnce(&Bound<'py, PyAny>) -> PyResult<CallArgs<'py>>,
    positional_too: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let py = slf.py();
    let Some(ready) = &state.ready else {
        let mut loaded = false;
        let load = || {
            loaded = true;
            let (args, kwargs) = call_args(&key)?;
            call_load(slf, &args, kwargs.as_ref())
        };
        let result = match cache.get_or_load(py, &key, hash, state.ttl_ns, load) {
            Ok(value) => Ok(value.into_bound(py)),
            Err(error) => unstored(py, state, error),
        };
        if !loaded {
            state.give_back(key, positional_too);
        }
        return result;
    };
    match cache.lookup_hashed(py, &key, hash)? {
        Some(value) => {
            state.give_back(key, positional_too);
            ready.bind(py).call1((value,))
        }
        None => {
            let (args, kwargs) = call_args(&key)?;
            miss_async(slf, key, &args, kwargs.as_ref())
        }
    }
}

#[cold]
#[inline(never)]
fn call_load(
    slf: &Bound<'_, CachedCall>,
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<Py<PyAny>> {
    let py = slf.py();
    let kwargs = kwargs.cloned().unwrap_or_else(|| PyDict::new(py));
    slf.call_method1(intern!(py, "_load"), (args, kwargs))
        .map(Bound::unbind)
}

/// The result carried by `_Unstored` out of a load, or the load's error.
#[cold]
#[inline(never)]
fn unstored<'py>(py: Python<'py>, state: &State, error: PyErr) -> PyResult<Bound<'py, PyAny>> {
    if error.is_instance(py, state.unstored.bind(py)) {
        error.value(py).getattr(intern!(py, "args"))?.get_item(0)
    } else {
        Err(error)
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

/// Makes CPython call `slf`'s type through `CachedCall::vectorcall` (no argument tuple, no
/// PyO3 argument parsing), unless the type has a `__call__` of its own. Heap subclasses do
/// not inherit the flag on 3.11, so each type gets it on its first configured instance.
fn enable_vectorcall(slf: &Bound<'_, CachedCall>) {
    let py = slf.py();
    // SAFETY: attached; `kind` is the live type of `slf`, a subtype of CachedCall whose
    // instances all have the `vectorcall` field at the same offset (a subclass only appends
    // to its base's layout). An instance whose field were unset is impossible: `new` sets it.
    unsafe {
        let kind = ffi::Py_TYPE(slf.as_ptr());
        if (*kind).tp_flags & ffi::Py_TPFLAGS_HAVE_VECTORCALL != 0 {
            return;
        }
        let base = <CachedCall as pyo3::PyTypeInfo>::type_object_raw(py);
        if (*kind).tp_call.map(|call| call as usize) != (*base).tp_call.map(|call| call as usize) {
            return;
        }
        let field = ptr::addr_of!(slf.get().vectorcall);
        (*kind).tp_vectorcall_offset = field as ffi::Py_ssize_t - slf.as_ptr() as ffi::Py_ssize_t;
        (*kind).tp_flags |= ffi::Py_TPFLAGS_HAVE_VECTORCALL;
    }
}

#[pymethods]
impl CachedCall {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> Self {
        CachedCall {
            vectorcall: vectorcall_entry,
            state: OnceLock::new(),
        }
    }

    /// Sets what calls need, once: the Python layer calls it from `__init__` and when it
    /// binds a copy to an instance.
    #[pyo3(signature = (*, cache, tag, ttl, typed, native_keys, calls, unstored, ready, kwargs_marker))]
    #[allow(clippy::too_many_arguments)]
    fn _configure(
        slf: &Bound<'_, Self>,
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
        let py = slf.py();
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
            spare_args: AtomicPtr::new(ptr::null_mut()),
        };
        slf.get()
            .state
            .set(state)
            .map_err(|_| PyRuntimeError::new_err("this cached function is already configured"))?;
        enable_vectorcall(slf);
        Ok(())
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
        let call_args = |_: &Bound<'py, PyAny>| Ok((args.clone(), kwargs.cloned()));
        answer(slf, (state, cache), (key, hash), call_args, false)
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

/// `CachedCall::vectorcall`: PyO3's trampoline (attachment count, panics become
/// `PanicException`) around `vectorcall`.
unsafe extern "C" fn vectorcall_entry(
    callable: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: usize,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // The flag bit of `nargsf` cleared here: the trampoline's count is signed.
    let nargs = unsafe { ffi::PyVectorcall_NARGS(nargsf) };
    let entry = pyo3::impl_::trampoline::get_trampoline_function!(
        fastcall_cfunction_with_keywords,
        vectorcall
    );
    // SAFETY: CPython calls a vectorcall function attached, with `nargs` arguments at `args`
    // followed by one per name in `kwnames` (null or a tuple of str).
    unsafe { entry(callable, args, nargs, kwnames) }
}

/// A call through the vector protocol: plain positional arguments (the common call) are
/// keyed and looked up here without a tuple of their own or PyO3's argument parsing; any
/// other call is packed as `tp_call` would pack it and goes to `__call__`.
///
/// # Safety
/// As for a `vectorcallfunc`; `callable` is an instance of CachedCall (the only type whose
/// instances carry `vectorcall_entry`).
unsafe fn vectorcall(
    py: Python<'_>,
    callable: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> PyResult<*mut ffi::PyObject> {
    // SAFETY: see the function's contract.
    let (slf, items, keywords) = unsafe {
        let slf = Borrowed::from_ptr(py, callable).cast_unchecked::<CachedCall>();
        let keywords = if kwnames.is_null() {
            0
        } else {
            ffi::PyTuple_GET_SIZE(kwnames)
        };
        let total = (nargs + keywords) as usize;
        let items = if total == 0 {
            &[][..]
        } else {
            std::slice::from_raw_parts(args, total)
        };
        (slf, items, keywords)
    };
    let state = slf.get().state()?;
    if keywords == 0 && state.native_keys {
        if let Some(cache) = &state.cache {
            let hash = if state.typed {
                typed_items_hash(py, items)?
            } else {
                plain_items_hash(py, items)?
            };
            if let Some(hash) = hash {
                state.calls.get().0.fetch_add(1, Ordering::Relaxed);
                return call_plain(&slf, state, cache.get(), items, hash).map(Bound::into_ptr);
            }
        }
    }
    let (positional, named) = items.split_at(nargs as usize);
    if !named.is_empty() && state.native_keys {
        if let Some(cache) = &state.cache {
            let parts = (state, cache.get());
            if let Some(result) = call_keywords(&slf, parts, positional, (kwnames, named))? {
                return Ok(result.into_ptr());
            }
        }
    }
    let packed = pack(py, positional)?;
    let kwargs = if named.is_empty() {
        None
    } else {
        let kwargs = PyDict::new(py);
        for (i, &value) in named.iter().enumerate() {
            // SAFETY: `kwnames` holds one name per keyword argument; both are live, borrowed.
            unsafe {
                let name = ffi::PyTuple_GET_ITEM(kwnames, i as ffi::Py_ssize_t);
                kwargs.set_item(Borrowed::from_ptr(py, name), Borrowed::from_ptr(py, value))?;
            }
        }
        Some(kwargs)
    };
    CachedCall::__call__(&slf, &packed, kwargs.as_ref()).map(Bound::into_ptr)
}

/// `hash(tuple(items))` when every item is plain (see `plain`), else None.
#[inline(always)]
fn plain_items_hash(py: Python<'_>, items: &[*mut ffi::PyObject]) -> PyResult<Option<u64>> {
    let mut hash = TupleHash::new();
    for &item in items {
        // SAFETY: a live argument, borrowed from the caller; a str's hash field is read as
        // `PyObject_Hash` would read it; a plain item's hash runs no Python code.
        let item_hash = unsafe {
            let kind = ffi::Py_TYPE(item);
            if kind == ptr::addr_of_mut!(ffi::PyUnicode_Type) {
                match (*item.cast::<ffi::PyASCIIObject>()).hash {
                    -1 => ffi::PyObject_Hash(item),
                    cached => cached,
                }
            } else if kind == ptr::addr_of_mut!(ffi::PyLong_Type)
                || plain(&Borrowed::from_ptr(py, item), 0)
            {
                ffi::PyObject_Hash(item)
            } else {
                return Ok(None);
            }
        };
        if item_hash == -1 {
            return Err(PyErr::fetch(py));
        }
        hash.add(item_hash as u64);
    }
    Ok(Some(hash.finish(items.len())))
}

/// `hash(tuple((type(item), item) for item in items))` when every item is a scalar (see
/// `is_scalar`), else None.
#[inline(always)]
fn typed_items_hash(py: Python<'_>, items: &[*mut ffi::PyObject]) -> PyResult<Option<u64>> {
    let mut hash = TupleHash::new();
    for &item in items {
        // SAFETY: a live argument, borrowed from the caller; the hash of a scalar and of its
        // built-in type runs no Python code.
        let (kind_hash, item_hash) = unsafe {
            if !is_scalar(&Borrowed::from_ptr(py, item)) {
                return Ok(None);
            }
            let kind = ffi::Py_TYPE(item).cast::<ffi::PyObject>();
            (ffi::PyObject_Hash(kind), ffi::PyObject_Hash(item))
        };
        if kind_hash == -1 || item_hash == -1 {
            return Err(PyErr::fetch(py));
        }
        hash.add(pair_hash(kind_hash as u64, item_hash as u64));
    }
    Ok(Some(hash.finish(items.len())))
}

/// A call with positional scalar arguments only (untyped): its key `(tag, args)` built from
/// the spare tuples, hashed without a call through their type, then looked up (sync: loaded
/// on a miss). On a hit both tuples are kept for the next call: nothing is allocated.
#[inline(always)]
fn call_plain<'py>(
    slf: &Bound<'py, CachedCall>,
    state: &State,
    cache: &Cache,
    items: &[*mut ffi::PyObject],
    items_hash: u64,
) -> PyResult<Bound<'py, PyAny>> {
    let py = slf.py();
    let positional = state.positional(py, items)?;
    let hash = spread_hash(pair_hash(state.tag_hash, items_hash));
    let key = state.key_pair(py, positional.into_any())?;
    // What the function is called with on a miss: untyped, the key's positional part itself.
    let call_args = |key: &Bound<'py, PyAny>| {
        let args = if state.typed {
            pack(py, items)?
        } else {
            key.get_item(1)?.cast_into::<PyTuple>()?
        };
        Ok((args, None))
    };
    answer(slf, (state, cache), (key, hash), call_args, true)
}

/// A call with keyword arguments, all of them and the positional ones of the shapes keyed
/// here: the key `(tag, (*args, KWARGS, frozenset(pairs)))` built straight from the argument
/// vector (no dict unless the function is called), the call counted; None for other shapes
/// (not counted: `__call__` takes them).
fn call_keywords<'py>(
    slf: &Bound<'py, CachedCall>,
    (state, cache): (&State, &Cache),
    positional: &[*mut ffi::PyObject],
    (kwnames, values): (*mut ffi::PyObject, &[*mut ffi::PyObject]),
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let py = slf.py();
    // SAFETY: the arguments are live, borrowed from the caller; `kwnames` is a tuple of one
    // name per value; each slot of a new tuple is filled once; a new frozenset is filled
    // before anyone else sees it.
    let (parts, call_args) = unsafe {
        let borrowed = |item: *mut ffi::PyObject| Borrowed::from_ptr(py, item);
        let length = positional.len() as ffi::Py_ssize_t;
        let parts = Bound::from_owned_ptr_or_err(py, ffi::PyTuple_New(length + 2))?;
        for (i, &item) in positional.iter().enumerate() {
            let Some(frozen) = freeze(py, &borrowed(item), state.typed, 0)? else {
                return Ok(None);
            };
            ffi::PyTuple_SET_ITEM(parts.as_ptr(), i as ffi::Py_ssize_t, frozen.into_ptr());
        }
        let marker = state.kwargs_marker.clone_ref(py).into_ptr();
        ffi::PyTuple_SET_ITEM(parts.as_ptr(), length, marker);
        // Filled while this is its only reference (PySet_Add's rule for a frozenset).
        let pairs = Bound::from_owned_ptr_or_err(py, ffi::PyFrozenSet_New(ptr::null_mut()))?;
        for (i, &value) in values.iter().enumerate() {
            let Some(frozen) = freeze(py, &borrowed(value), state.typed, 0)? else {
                return Ok(None);
            };
            let name = borrowed(ffi::PyTuple_GET_ITEM(kwnames, i as ffi::Py_ssize_t));
            let pair = PyTuple::new(py, [name.to_owned().into_any(), frozen])?;
            if ffi::PySet_Add(pairs.as_ptr(), pair.as_ptr()) == -1 {
                return Err(PyErr::fetch(py));
            }
        }
        ffi::PyTuple_SET_ITEM(parts.as_ptr(), length + 1, pairs.into_ptr());
        let call_args = move |_: &Bound<'py, PyAny>| -> PyResult<CallArgs<'py>> {
            let kwargs = PyDict::new(py);
            for (i, &value) in values.iter().enumerate() {
                let name = borrowed(ffi::PyTuple_GET_ITEM(kwnames, i as ffi::Py_ssize_t));
                kwargs.set_item(name, borrowed(value))?;
            }
            Ok((pack(py, positional)?, Some(kwargs)))
        };
        (parts, call_args)
    };
    state.calls.get().0.fetch_add(1, Ordering::Relaxed);
    let hash = spread_hash(pair_hash(state.tag_hash, parts.hash()? as u64));
    let key = state.key_pair(py, parts)?;
    answer(slf, (state, cache), (key, hash), call_args, false).map(Some)
}

/// The arguments `items` as a new tuple.
fn pack<'py>(py: Python<'py>, items: &[*mut ffi::PyObject]) -> PyResult<Bound<'py, PyTuple>> {
    // SAFETY: the items are live, borrowed from the caller; each slot is filled once.
    unsafe {
        let packed = ffi::PyTuple_New(items.len() as ffi::Py_ssize_t);
        if packed.is_null() {
            return Err(PyErr::fetch(py));
        }
        for (i, &item) in items.iter().enumerate() {
            ffi::PyTuple_SET_ITEM(packed, i as ffi::Py_ssize_t, ffi::Py_NewRef(item));
        }
        Ok(Bound::from_owned_ptr(py, packed).cast_into_unchecked())
    }
}

// CPython's tuple hash (xxHash-based, the same from 3.8 to 3.14) on 64 bits.
const XXPRIME_1: u64 = 11_400_714_785_074_694_791;
const XXPRIME_2: u64 = 14_029_467_366_897_019_727;
const XXPRIME_5: u64 = 2_870_177_450_012_600_261;

/// CPython's `tuplehash` fed with the items' hashes: a tuple's hash without a call through
/// its type (the tests check, through the Python key builder, that both hashes agree).
struct TupleHash(u64);

impl TupleHash {
    #[inline(always)]
    fn new() -> Self {
        TupleHash(XXPRIME_5)
    }

    #[inline(always)]
    fn add(&mut self, lane: u64) {
        self.0 = self.0.wrapping_add(lane.wrapping_mul(XXPRIME_2));
        self.0 = self.0.rotate_left(31);
        self.0 = self.0.wrapping_mul(XXPRIME_1);
    }

    #[inline(always)]
    fn finish(self, length: usize) -> u64 {
        let acc = self.0.wrapping_add(length as u64 ^ (XXPRIME_5 ^ 3_527_539));
        if acc == u64::MAX {
            1_546_275_796
        } else {
            acc
        }
    }
}

/// `hash((tag, positional))` from the two items' hashes.
#[inline]
fn pair_hash(first: u64, second: u64) -> u64 {
    let mut hash = TupleHash::new();
    hash.add(first);
    hash.add(second);
    hash.finish(2)
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
