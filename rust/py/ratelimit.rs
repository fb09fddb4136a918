//! `pgcache.RateLimiter`: the core's GCRA limiter (`core::ratelimit`) for `str` keys.
//!
//! Rules kept here (see DESIGN.md): the key is hashed before the lock is taken; the lock is
//! tried while attached and, when busy, waited for detached (its holders never need the
//! interpreter: a key is compared as UTF-8 bytes in Rust, no Python code runs under it).

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyString};

use super::clock::ManualClock;
use super::shared::{table_hash, WAIT_SLICE};
use crate::core::ratelimit::{self, Decision, Gcra, DEFAULT_MAX_KEYS, MAX_KEYS};
use crate::core::Clock;

const NS_PER_SECOND: f64 = 1e9;

/// What one request was told: allowed or not, how long to wait, what is left.
#[pyclass(frozen, module = "pgcache._core", name = "RateLimitDecision")]
pub struct RateLimitDecision {
    /// Whether the request may go ahead (it has been counted).
    #[pyo3(get)]
    allowed: bool,
    /// Seconds until the same request would be allowed (0.0 when allowed).
    #[pyo3(get)]
    wait: f64,
    /// Requests the key may still make at once, after this one.
    #[pyo3(get)]
    remaining: u64,
    /// Seconds until the key's bucket is full again.
    #[pyo3(get)]
    reset: f64,
}

#[pymethods]
impl RateLimitDecision {
    fn __repr__(&self) -> String {
        format!(
            "RateLimitDecision(allowed={}, wait={}, remaining={}, reset={})",
            if self.allowed { "True" } else { "False" },
            self.wait,
            self.remaining,
            self.reset
        )
    }
}

/// A token-bucket rate limit per key (GCRA): `rate` requests per second, at most `burst` at once.
///
/// `rate`: requests per second, a positive number (0.5 is one every two seconds). `burst`: how
/// many requests a quiet key may make at once; default one second's worth (`ceil(rate)`, at
/// least 1). `max_keys`: the most keys remembered (default 100,000); a new key in a full table
/// replaces, among 16 sampled at random, the key nearest to a full bucket. `clock`: a
/// `ManualClock` for tests. Keys are `str` (a client address, an API key). Thread-safe.
///
/// Time is read from the coarse monotonic clock (the kernel tick: 1 to 4 ms): the long-run rate
/// is exact, single decisions are as precise as the tick, and a wait is rounded up to it, so a
/// request retried after its `wait` is allowed.
#[pyclass(frozen, module = "pgcache._core", name = "RateLimiter")]
pub struct RateLimiter {
    core: ratelimit::RateLimiter,
    rate: f64,
    max_keys: usize,
    /// Added to every wait: the coarse clock's resolution (nothing for a manual clock).
    wait_margin_ns: u64,
}

impl RateLimiter {
    /// One decision; the key hashed before locking, the lock waited for detached.
    fn decision(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<Decision> {
        let text = key.cast::<PyString>().map_err(|_| {
            PyTypeError::new_err(format!(
                "key must be a str, not {}",
                key.get_type()
                    .name()
                    .map_or_else(|_| "?".into(), |t| t.to_string())
            ))
        })?;
        let hash = table_hash(key)?;
        let key = text.to_str()?;
        if let Some(mut table) = self.core.try_lock() {
            return Ok(self.core.decide_locked(&mut table, hash, key));
        }
        // The holders never need the interpreter: wait for them detached, in slices so that
        // Ctrl-C is seen even if a holder was lost (a fork while it held the lock).
        loop {
            let decided = py.detach(|| {
                self.core
                    .lock_for(WAIT_SLICE)
                    .map(|mut table| self.core.decide_locked(&mut table, hash, key))
            });
            if let Some(decision) = decided {
                return Ok(decision);
            }
            py.check_signals()?;
        }
    }

    fn wait_seconds(&self, decision: &Decision) -> f64 {
        if decision.allowed {
            0.0
        } else {
            decision.wait_ns.saturating_add(self.wait_margin_ns) as f64 / NS_PER_SECOND
        }
    }
}

#[pymethods]
impl RateLimiter {
    #[new]
    #[pyo3(
        signature = (rate, burst = None, *, max_keys = None, clock = None),
        text_signature = "(rate, burst=None, *, max_keys=100000, clock=None)"
    )]
    fn new(
        rate: &Bound<'_, PyAny>,
        burst: Option<&Bound<'_, PyAny>>,
        max_keys: Option<&Bound<'_, PyAny>>,
        clock: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let rate = rate_arg(rate)?;
        let burst = match burst {
            Some(b) if !b.is_none() => positive_int(b, "burst", u64::MAX)?,
            // one second's worth; `as` saturates
            _ => (rate.ceil() as u64).max(1),
        };
        let max_keys = match max_keys {
            Some(m) if !m.is_none() => positive_int(m, "max_keys", MAX_KEYS as u64)? as usize,
            _ => DEFAULT_MAX_KEYS,
        };
        let clock = clock_arg(clock)?;
        let interval_ns = (NS_PER_SECOND / rate).round() as u64;
        let wait_margin_ns = match clock {
            Clock::Monotonic => clock.resolution_ns(),
            Clock::Manual(_) => 0,
        };
        Ok(RateLimiter {
            core: ratelimit::RateLimiter::new(Gcra::new(interval_ns, burst), max_keys, clock),
            rate,
            max_keys,
            wait_margin_ns,
        })
    }

    /// Requests per second.
    #[getter]
    fn rate(&self) -> f64 {
        self.rate
    }

    /// Requests a quiet key may make at once.
    #[getter]
    fn burst(&self) -> u64 {
        self.core.gcra().burst()
    }

    /// The most keys remembered.
    #[getter]
    fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// Counts one request of `key` if it is allowed; returns the seconds to wait before it would
    /// be (0.0: allowed now). A denied request is not counted against the key.
    fn allow(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<f64> {
        let decision = self.decision(py, key)?;
        Ok(self.wait_seconds(&decision))
    }

    /// :meth:`allow` with everything the answer's headers need: a `RateLimitDecision`.
    fn decide(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<RateLimitDecision> {
        let decision = self.decision(py, key)?;
        Ok(RateLimitDecision {
            allowed: decision.allowed,
            wait: self.wait_seconds(&decision),
            remaining: decision.remaining,
            reset: decision.reset_ns as f64 / NS_PER_SECOND,
        })
    }

    /// Forgets every key: every bucket is full again.
    fn clear(&self, py: Python<'_>) {
        py.detach(|| self.core.lock().clear());
    }

    /// Counters since creation: `allowed`, `limited` (requests), `evicted` (keys forgotten to
    /// make room), and `keys` (remembered now).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let counts = self.core.counts();
        let keys = self.__len__(py);
        let stats = PyDict::new(py);
        stats.set_item("allowed", counts.allowed)?;
        stats.set_item("limited", counts.limited)?;
        stats.set_item("evicted", counts.evicted)?;
        stats.set_item("keys", keys)?;
        Ok(stats)
    }

    /// The keys remembered now (a key with a full bucket may still be among them).
    fn __len__(&self, py: Python<'_>) -> usize {
        py.detach(|| self.core.lock().len())
    }

    fn __repr__(&self) -> String {
        format!(
            "RateLimiter(rate={:?}, burst={}, max_keys={})",
            self.rate,
            self.core.gcra().burst(),
            self.max_keys
        )
    }
}

/// `rate`: a positive, finite number of requests per second, at most one per nanosecond.
fn rate_arg(value: &Bound<'_, PyAny>) -> PyResult<f64> {
    if value.is_instance_of::<PyBool>()
        || !(value.is_instance_of::<PyFloat>() || value.is_instance_of::<PyInt>())
    {
        return Err(PyTypeError::new_err(format!(
            "rate must be a number of requests per second, not {}",
            value.get_type().name()?
        )));
    }
    let rate = value.extract::<f64>().unwrap_or(f64::INFINITY);
    if !(rate.is_finite() && rate > 0.0 && rate <= NS_PER_SECOND) {
        return Err(PyValueError::new_err(format!(
            "rate must be a positive number of requests per second up to 1e9, got {}",
            value.repr()?
        )));
    }
    Ok(rate)
}

/// A positive int up to `max`, named `arg` in errors.
fn positive_int(value: &Bound<'_, PyAny>, arg: &str, max: u64) -> PyResult<u64> {
    if value.is_instance_of::<PyBool>() || !value.is_instance_of::<PyInt>() {
        return Err(PyTypeError::new_err(format!(
            "{arg} must be an int, not {}",
            value.get_type().name()?
        )));
    }
    match value.extract::<i128>() {
        Ok(n) if n >= 1 && n <= i128::from(max) => Ok(n as u64),
        _ => Err(PyValueError::new_err(format!(
            "{arg} must be between 1 and {max}, got {}",
            value.repr()?
        ))),
    }
}

/// `clock`: a `ManualClock`, or None for the monotonic clock.
fn clock_arg(value: Option<&Bound<'_, PyAny>>) -> PyResult<Clock> {
    match value {
        Some(c) if !c.is_none() => match c.cast::<ManualClock>() {
            Ok(manual) => Ok(Clock::Manual(manual.get().clock.clone())),
            Err(_) => Err(PyTypeError::new_err(format!(
                "clock must be a pgcache.ManualClock or None, not {}",
                c.get_type().name()?
            ))),
        },
        _ => Ok(Clock::Monotonic),
    }
}
