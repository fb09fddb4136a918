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
    /// Entries given up to make room for new ones (LRU's least recently used;
    /// W-TinyLFU's main-region victims).
    #[pyo3(get)]
    evictions: u64,
    /// W-TinyLFU only: new entries turned away from the main region because
    /// they were predicted less useful than its victim.
    #[pyo3(get)]
    rejections: u64,
    #[pyo3(get)]
    expirations: u64,
    #[pyo3(get)]
    size: u64,
    /// None for an unbounded cache.
    #[pyo3(get)]
    max_size: Option<u64>,
    /// Hits as a percentage of lookups (0.0 when there were none).
    #[pyo3(get)]
    hit_rate: f64,
}

impl CacheMetrics {
    pub(crate) fn new(snapshot: MetricsSnapshot, max_size: Option<usize>) -> Self {
        CacheMetrics {
            hits: snapshot.hits,
            misses: snapshot.misses,
            evictions: snapshot.evictions,
            rejections: snapshot.rejections,
            expirations: snapshot.expirations,
            size: snapshot.size,
            max_size: max_size.map(|m| m as u64),
            hit_rate: snapshot.hit_rate(),
        }
    }
}

impl CacheMetrics {
    /// The integer counters by name, in display order (max_size and hit_rate come last).
    fn counters(&self) -> [(&'static str, u64); 6] {
        [
            ("hits", self.hits),
            ("misses", self.misses),
            ("evictions", self.evictions),
            ("rejections", self.rejections),
            ("expirations", self.expirations),
            ("size", self.size),
        ]
    }
}

#[pymethods]
impl CacheMetrics {
    /// The counters as a plain dict (for JSON).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for (name, value) in self.counters() {
            dict.set_item(name, value)?;
        }
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
        (self.counters(), self.max_size, self.hit_rate.to_bits()).hash(&mut hasher);
        hasher.finish()
    }

    fn __repr__(&self) -> String {
        let fields: Vec<String> = self
            .counters()
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        let max_size = self
            .max_size
            .map_or_else(|| "None".to_string(), |m| m.to_string());
        format!(
            "CacheMetrics({}, max_size={max_size}, hit_rate={:.2})",
            fields.join(", "),
            self.hit_rate
        )
    }
}
