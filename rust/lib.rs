//! pgcache's Rust crate: the generic cache (`core`) and its Python binding (`py`).

pub mod core;

#[cfg(feature = "python")]
mod py;

#[cfg(feature = "python")]
use pyo3::prelude::*;

/// The `pgcache._core` extension module.
#[cfg(feature = "python")]
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    py::register(m)
}
