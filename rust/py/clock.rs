//! `ManualClock`: the injectable clock for tests (see `core::clock`).

use pyo3::prelude::*;
use pyo3::types::PyType;

use super::args::non_negative_ns;
use crate::core::clock;

#[pyclass(frozen, module = "pgcache._core", name = "ManualClock")]
pub struct ManualClock {
    pub(crate) clock: clock::ManualClock,
}

#[pymethods]
impl ManualClock {
    #[new]
    #[pyo3(signature = (start = None), text_signature = "(start=0.0)")]
    fn new(start: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let start_ns = match start {
            Some(s) => non_negative_ns(s, "start")?,
            None => 0,
        };
        Ok(ManualClock {
            clock: clock::ManualClock::new(start_ns),
        })
    }

    /// The clock's time in seconds.
    fn now(&self) -> f64 {
        self.clock.now_ns() as f64 / 1e9
    }

    /// Moves the clock forward by `seconds` (a number or a timedelta, >= 0).
    fn advance(&self, seconds: &Bound<'_, PyAny>) -> PyResult<()> {
        self.clock.advance_ns(non_negative_ns(seconds, "seconds")?);
        Ok(())
    }

    /// Pickled, copied or deep-copied: an independent clock at the same reading.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> (Bound<'py, PyType>, (f64,)) {
        (slf.get_type(), (slf.get().now(),))
    }

    fn __repr__(&self) -> String {
        format!("ManualClock(now={})", self.now())
    }
}
