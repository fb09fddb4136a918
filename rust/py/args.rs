//! Argument parsing: every check that turns bad input into one clear error
//! naming the argument, before anything changes.

use pyo3::exceptions::{PyOverflowError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDelta, PyDeltaAccess, PyFloat, PyInt, PyString};

use std::time::Duration;

use crate::core::{PolicyKind, MAX_CAPACITY};

/// Seconds from a number or a `datetime.timedelta`; `arg` names the argument in errors.
pub(crate) fn seconds(value: &Bound<'_, PyAny>, arg: &str) -> PyResult<f64> {
    if let Ok(delta) = value.cast::<PyDelta>() {
        return Ok(f64::from(delta.get_days()) * 86_400.0
            + f64::from(delta.get_seconds())
            + f64::from(delta.get_microseconds()) / 1e6);
    }
    if value.is_instance_of::<PyBool>()
        || !(value.is_instance_of::<PyFloat>() || value.is_instance_of::<PyInt>())
    {
        return Err(PyTypeError::new_err(format!(
            "{arg} must be a number of seconds or a datetime.timedelta, not {}",
            value.get_type().name()?
        )));
    }
    value.extract::<f64>().map_err(|_| {
        // Only an int too large for a float gets here (10**400).
        let bits = value
            .call_method0("bit_length")
            .and_then(|b| b.extract::<u64>())
            .unwrap_or(0);
        PyOverflowError::new_err(format!(
            "{arg} is too large to be a number of seconds (an int of {bits} bits)"
        ))
    })
}

/// A strictly positive, finite duration in nanoseconds (at least 1).
pub(crate) fn positive_duration_ns(value: &Bound<'_, PyAny>, arg: &str) -> PyResult<u64> {
    let secs = seconds(value, arg)?;
    if !secs.is_finite() || secs <= 0.0 {
        return Err(PyValueError::new_err(format!(
            "{arg} must be a positive, finite number of seconds, got {}",
            value.repr()?
        )));
    }
    // `as` saturates: absurdly long TTLs become "practically never".
    Ok(((secs * 1e9).round() as u64).max(1))
}

/// The shortest `cleanup_interval`: a sweep every millisecond is already more
/// than any TTL needs (the clock's resolution is about that), and shorter
/// ones would keep the expiry thread busy for nothing.
pub(crate) const MIN_CLEANUP_INTERVAL: f64 = 1e-3;

/// `Cache(cleanup_interval=...)`: seconds (as given) and the interval, at
/// least `MIN_CLEANUP_INTERVAL`.
pub(crate) fn cleanup_interval(value: &Bound<'_, PyAny>) -> PyResult<(f64, Duration)> {
    let ns = positive_duration_ns(value, "cleanup_interval")?;
    let secs = seconds(value, "cleanup_interval")?;
    if secs < MIN_CLEANUP_INTERVAL {
        return Err(PyValueError::new_err(format!(
            "cleanup_interval must be at least {MIN_CLEANUP_INTERVAL} seconds (1 ms), got {}",
            value.repr()?
        )));
    }
    Ok((secs, Duration::from_nanos(ns)))
}

/// An optional TTL argument: `None` means "the cache's default".
pub(crate) fn optional_ttl_ns(value: Option<&Bound<'_, PyAny>>) -> PyResult<Option<u64>> {
    match value {
        Some(v) if !v.is_none() => positive_duration_ns(v, "ttl").map(Some),
        _ => Ok(None),
    }
}

/// `Cache(max_size=...)`: a positive int up to `MAX_CAPACITY`, or `None` for
/// unbounded (as `functools.lru_cache(maxsize=None)`).
pub(crate) fn max_size(value: &Bound<'_, PyAny>) -> PyResult<Option<usize>> {
    if value.is_none() {
        return Ok(None);
    }
    if value.is_instance_of::<PyBool>() || !value.is_instance_of::<PyInt>() {
        return Err(PyTypeError::new_err(format!(
            "max_size must be an int or None (unbounded), not {}",
            value.get_type().name()?
        )));
    }
    match value.extract::<i128>() {
        Ok(n) if n >= 1 && n <= MAX_CAPACITY as i128 => Ok(Some(n as usize)),
        _ => Err(PyValueError::new_err(format!(
            "max_size must be between 1 and {MAX_CAPACITY}, or None (unbounded), got {}",
            value.repr()?
        ))),
    }
}

/// `Cache(policy=...)`: `"tinylfu"` or `"lru"`.
pub(crate) fn policy(value: &Bound<'_, PyAny>) -> PyResult<PolicyKind> {
    let name = value.cast::<PyString>().map_err(|_| {
        PyTypeError::new_err(format!(
            "policy must be a str ({}), not {}",
            quoted_policies(),
            value
                .get_type()
                .name()
                .map_or_else(|_| "?".into(), |t| t.to_string())
        ))
    })?;
    PolicyKind::parse(name.to_str()?).ok_or_else(|| {
        PyValueError::new_err(format!(
            "policy must be one of {}, got {}",
            quoted_policies(),
            value.repr().map_or_else(|_| "?".into(), |r| r.to_string())
        ))
    })
}

fn quoted_policies() -> String {
    PolicyKind::NAMES.map(|n| format!("{n:?}")).join(" or ")
}

/// A finite duration of at least zero, in nanoseconds (a clock's start or step).
pub(crate) fn non_negative_ns(value: &Bound<'_, PyAny>, arg: &str) -> PyResult<u64> {
    let secs = seconds(value, arg)?;
    if !secs.is_finite() || secs < 0.0 {
        return Err(PyValueError::new_err(format!(
            "{arg} must be a finite number of seconds >= 0 (the clock is monotonic), got {}",
            value.repr()?
        )));
    }
    Ok((secs * 1e9).round() as u64)
}
