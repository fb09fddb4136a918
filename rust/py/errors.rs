//! The exceptions pgcache raises on its own (argument checks live in `args.rs`).

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(
    pgcache._core,
    PgCacheError,
    PyException,
    "Base class of every error pgcache raises on its own."
);
create_exception!(
    pgcache._core,
    CacheClosedError,
    PgCacheError,
    "The cache was used after close()."
);

pub(crate) fn closed_error() -> PyErr {
    CacheClosedError::new_err("the cache is closed")
}
