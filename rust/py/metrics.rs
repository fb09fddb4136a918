//! `CacheMetrics`: one reading of a cache's counters, as a Python object.

use std::hash::{Hash, Hasher};

use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::core::MetricsSnapshot;

#[pyclass(frozen, module = "pgcache._core", name = "CacheMetrics")]
#[derive(PartialEq)]
pub struct CacheMetrics {
    #[pyo3(get)]
    hits: u64,
    #[pyo3(get)]
    misses: u64,
    #[pyo3(get)]
    evictions: u64,
    #[pyo3(get)]
    expirations: u64,
    #[pyo3(get)]
    size: u64,
    #[pyo3(get)]
    max_size: u64,
    /// Hits as a percentage of lookups (0.0 when there were none).
    #[pyo3(get)]
    hit_rate: f64,
}

impl CacheMetrics {
    pub(crate) fn new(snapshot: MetricsSnapshot, max_size: usize) -> Self {
        CacheMetrics {
            hits: snapshot.hits,
            misses: snapshot.misses,
            evictions: snapshot.evictions,
            expirations: snapshot.expirations,
            size: snapshot.size,
            max_size: max_size as u64,
            hit_rate: snapshot.hit_rate(),
        }
    }
}

#[pymethods]
impl CacheMetrics {
    /// The counters as a plain dict (for JSON).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        dict.set_item("hits", self.hits)?;
        dict.set_item("misses", self.misses)?;
        dict.set_item("evictions", self.evictions)?;
        dict.set_item("expirations", self.expirations)?;
        dict.set_item("size", self.size)?;
        dict.set_item("max_size", self.max_size)?;
        dict.set_item("hit_rate", self.hit_rate)?;
        Ok(dict)
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other
            .cast::<CacheMetrics>()
            .is_ok_and(|other| *other.get() == *self)
    }

    fn __hash__(&self) -> u64 {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (
            self.hits,
            self.misses,
            self.evictions,
            self.expirations,
            self.size,
            self.max_size,
            self.hit_rate.to_bits(),
        )
            .hash(&mut hasher);
        hasher.finish()
    }

    fn __repr__(&self) -> String {
        format!(
            "CacheMetrics(hits={}, misses={}, evictions={}, expirations={}, size={}, \
             max_size={}, hit_rate={:.2})",
            self.hits,
            self.misses,
            self.evictions,
            self.expirations,
            self.size,
            self.max_size,
            self.hit_rate
        )
    }
}
