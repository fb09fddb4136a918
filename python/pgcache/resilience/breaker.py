"""A circuit breaker: fail fast after consecutive transient failures, probe once to recover.

The ML client fails fast with :class:`pgcache.CircuitOpenError` from
:meth:`CircuitBreaker.before_attempt`; the Redis tier asks :meth:`CircuitBreaker.allow_attempt`
and answers without Redis instead.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta
from enum import StrEnum

from pgcache._validate import check_seconds
from pgcache.errors import CircuitOpenError

# --- circuit breaker -------------------------------------------------------------------------


class CircuitState(StrEnum):
    """``closed``: calls go through; ``open``: calls fail fast; ``half_open``: one probe may go."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Fails fast after ``failure_threshold`` consecutive transient failures.

    The ML client counts as failures the attempts that ended in a retryable way (5xx
    500/502/503/504, 429, connection errors, timeouts, resets); a 4xx or any other answer proves
    the service is up and counts as a success; local problems (pool saturation, cancellation)
    count as neither. The Redis tier counts connection errors and timeouts as failures.
    When open, attempts are refused (:meth:`allow_attempt` is False, :meth:`before_attempt`
    raises :class:`CircuitOpenError`) until ``reset_timeout`` has passed;
    then exactly one probe attempt goes through (half-open): its success closes the breaker,
    its failure opens it for another ``reset_timeout``. Thread-safe; ``clock`` is injectable
    (e.g. ``pgcache.ManualClock().now``) so tests need not sleep.
    """

    def __init__(
        self,
        failure_threshold: int = 5,
        reset_timeout: float | timedelta = 30.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(failure_threshold, bool) or not isinstance(failure_threshold, int):
            raise TypeError(f"failure_threshold={failure_threshold!r}: expected an int >= 1")
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold={failure_threshold!r}: expected an int >= 1")
        self.failure_threshold = failure_threshold
        self.reset_timeout = check_seconds("reset_timeout", reset_timeout)
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CircuitState.CLOSED
        self._consecutive_failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False
        self._times_opened = 0

    @property
    def state(self) -> CircuitState:
        """The state now (``open`` reads as ``half_open`` once the cool-down has passed)."""
        with self._lock:
            if self._state is CircuitState.OPEN and self._cooled_down():
                return CircuitState.HALF_OPEN
            return self._state

    @property
    def consecutive_failures(self) -> int:
        """Transient failures since the last success."""
        return self._consecutive_failures

    @property
    def times_opened(self) -> int:
        """How often the breaker has opened (closed or half-open -> open)."""
        return self._times_opened

    def _cooled_down(self) -> bool:
        return self._clock() - self._opened_at >= self.reset_timeout

    def _seconds_until_probe(self) -> float:
        return max(0.0, self.reset_timeout - (self._clock() - self._opened_at))

    def allow_attempt(self) -> bool:
        """Whether an attempt may go now (closed, or the one probe of half-open); never raises.

        For callers that fall back instead of failing (the Redis tier skips Redis while open):
        a ``True`` must be followed by one of the ``record_*`` methods.
        """
        with self._lock:
            if self._state is CircuitState.CLOSED:
                return True
            if self._state is CircuitState.OPEN and self._cooled_down():
                self._state = CircuitState.HALF_OPEN
            if self._state is CircuitState.HALF_OPEN and not self._probe_in_flight:
                self._probe_in_flight = True
                return True
            return False

    def before_attempt(self, endpoint: str) -> None:
        """Let an attempt through, or raise :class:`CircuitOpenError`."""
        if self.allow_attempt():
            return
        with self._lock:
            wait = self._seconds_until_probe() if self._state is CircuitState.OPEN else 0.0
        raise CircuitOpenError(
            f"circuit breaker open after {self.failure_threshold} consecutive transient"
            f" failures; next probe in {wait:.3g} s",
            endpoint=endpoint,
            attempts=0,
        )

    def record_success(self) -> None:
        """The attempt reached the service: reset the count; a successful probe closes."""
        with self._lock:
            self._consecutive_failures = 0
            self._probe_in_flight = False
            self._state = CircuitState.CLOSED

    def record_failure(self) -> None:
        """A transient failure: count it; open at the threshold or when the probe failed."""
        with self._lock:
            self._consecutive_failures += 1
            probe_failed = self._state is CircuitState.HALF_OPEN
            self._probe_in_flight = False
            if probe_failed or (
                self._state is CircuitState.CLOSED
                and self._consecutive_failures >= self.failure_threshold
            ):
                self._state = CircuitState.OPEN
                self._opened_at = self._clock()
                self._times_opened += 1

    def record_neutral(self) -> None:
        """Neither success nor failure (local problem): only frees the probe slot."""
        with self._lock:
            self._probe_in_flight = False
