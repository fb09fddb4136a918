//! Time for TTL decisions, in nanoseconds on a monotonic scale.
//!
//! Production caches on Linux read `CLOCK_MONOTONIC_COARSE`: a few nanoseconds
//! per read (vDSO, no syscall) at the cost of resolution (the kernel tick, 1 to
//! 4 ms), which is ample for TTLs of seconds to minutes; other systems use
//! `std::time::Instant`. Tests inject a [`ManualClock`]
//! that moves only when told to, so TTL behaviour is tested without sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A clock that moves only when advanced; cheap to clone and share between caches.
#[derive(Clone, Debug, Default)]
pub struct ManualClock {
    now_ns: Arc<AtomicU64>,
}

impl ManualClock {
    pub fn new(start_ns: u64) -> Self {
        Self {
            now_ns: Arc::new(AtomicU64::new(start_ns)),
        }
    }

    pub fn now_ns(&self) -> u64 {
        self.now_ns.load(Ordering::Acquire)
    }

    /// Moves the clock forward; saturates instead of wrapping.
    pub fn advance_ns(&self, delta_ns: u64) {
        let mut current = self.now_ns.load(Ordering::Acquire);
        loop {
            let next = current.saturating_add(delta_ns);
            match self.now_ns.compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(seen) => current = seen,
            }
        }
    }
}

/// The clock a cache reads; chosen once at construction.
#[derive(Clone, Debug, Default)]
pub enum Clock {
    /// `CLOCK_MONOTONIC_COARSE`: millisecond-ish resolution, ~3 ns per read.
    #[default]
    Monotonic,
    Manual(ManualClock),
}

impl Clock {
    #[inline]
    pub fn now_ns(&self) -> u64 {
        match self {
            Clock::Monotonic => monotonic_coarse_ns(),
            Clock::Manual(clock) => clock.now_ns(),
        }
    }

    /// The resolution of readings in nanoseconds (1 for a manual clock).
    pub fn resolution_ns(&self) -> u64 {
        match self {
            Clock::Monotonic => monotonic_resolution_ns(),
            Clock::Manual(_) => 1,
        }
    }
}

/// Nanoseconds of a monotonic reading: seconds since boot times 10^9 overflows a `u64` only
/// after 584 years of uptime, so plain arithmetic (no saturation checks on every lookup).
#[cfg(target_os = "linux")]
#[inline(always)]
fn timespec_ns(ts: &libc::timespec) -> u64 {
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

#[cfg(target_os = "linux")]
#[inline(always)]
fn monotonic_coarse_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC_COARSE exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    timespec_ns(&ts)
}

#[cfg(target_os = "linux")]
fn monotonic_resolution_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    timespec_ns(&ts).max(1)
}

/// Elsewhere there is no coarse clock: `Instant` (full resolution) since first use.
#[cfg(not(target_os = "linux"))]
fn monotonic_coarse_ns() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    EPOCH
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_nanos() as u64
}

#[cfg(not(target_os = "linux"))]
fn monotonic_resolution_ns() -> u64 {
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced() {
        let clock = Clock::Manual(ManualClock::new(5));
        assert_eq!(clock.now_ns(), 5);
        if let Clock::Manual(manual) = &clock {
            manual.advance_ns(10);
        }
        assert_eq!(clock.now_ns(), 15);
        assert_eq!(clock.resolution_ns(), 1);
    }

    #[test]
    fn manual_clock_saturates() {
        let manual = ManualClock::new(u64::MAX - 1);
        manual.advance_ns(10);
        assert_eq!(manual.now_ns(), u64::MAX);
    }

    #[test]
    fn monotonic_clock_never_goes_back() {
        let clock = Clock::Monotonic;
        let first = clock.now_ns();
        let second = clock.now_ns();
        assert!(second >= first);
        assert!(
            clock.resolution_ns() <= 20_000_000,
            "coarse clock resolution above 20 ms"
        );
    }
}
