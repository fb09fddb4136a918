//! The PyO3 layer: `pgcache._core`'s classes, argument parsing, exceptions and expiry thread.

mod args;
mod cache;
mod cached;
mod clock;
mod errors;
mod expiry;
mod fork;
mod getattr;
mod metrics;
mod ratelimit;
mod shared;

use pyo3::prelude::*;

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<cache::Cache>()?;
    m.add_class::<cached::CachedCall>()?;
    m.add_class::<cached::CallCounter>()?;
    m.add_class::<clock::ManualClock>()?;
    m.add_class::<metrics::CacheMetrics>()?;
    m.add_class::<ratelimit::RateLimiter>()?;
    m.add_class::<ratelimit::RateLimitDecision>()?;
    m.add("PgCacheError", py.get_type::<errors::PgCacheError>())?;
    m.add(
        "CacheClosedError",
        py.get_type::<errors::CacheClosedError>(),
    )?;
    let shutdown = wrap_pyfunction!(expiry::_shutdown_expiry_thread, m)?;
    py.import("atexit")?.call_method1("register", (shutdown,))?;
    m.add_function(wrap_pyfunction!(getattr::skip_getattr_hook, m)?)?;
    fork::register(m)?;
    Ok(())
}
