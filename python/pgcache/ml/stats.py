"""Counters of one ML client (calls, attempts, retries, failures, latency histogram)."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from pgcache.errors import CircuitOpenError, MLServiceError
from pgcache.resilience.breaker import CircuitBreaker, CircuitState

if TYPE_CHECKING:
    pass


LATENCY_BUCKETS: Final[tuple[float, ...]] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

# --- statistics ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MLClientStats:
    """Counters of one client since it was created (what a metrics collector exports).

    ``calls``: client method calls; ``requests``: HTTP attempts sent (first tries and
    retries); ``retries``: attempts after a call's first; ``failures``: calls that raised an
    :class:`MLServiceError`; ``circuit_rejections``: calls refused by the open breaker (also
    counted in ``failures``); ``latency_buckets``: cumulative ``(upper bound in seconds,
    calls)`` pairs of the per-call latency (retries and waits included) in Prometheus'
    histogram form, ``latency_seconds_sum`` / ``latency_count`` its sum and count;
    ``circuit_state`` is ``None`` without a breaker.
    """

    calls: int
    requests: int
    retries: int
    failures: int
    circuit_rejections: int
    latency_seconds_sum: float
    latency_count: int
    latency_buckets: tuple[tuple[float, int], ...]
    circuit_state: CircuitState | None
    circuit_times_opened: int


class Stats:
    """The mutable counters behind :class:`MLClientStats` (one lock, held for a few adds)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls = 0
        self.requests = 0
        self.retries = 0
        self.failures = 0
        self.circuit_rejections = 0
        self.latency_sum = 0.0
        self.latency_count = 0
        self.bucket_counts = [0] * len(LATENCY_BUCKETS)

    def request_sent(self) -> None:
        with self._lock:
            self.requests += 1

    def call_done(self, attempts: int, seconds: float, error: BaseException | None) -> None:
        with self._lock:
            self.calls += 1
            self.retries += max(0, attempts - 1)
            if isinstance(error, MLServiceError):
                self.failures += 1
                if isinstance(error, CircuitOpenError):
                    self.circuit_rejections += 1
            self.latency_sum += seconds
            self.latency_count += 1
            for index, bound in enumerate(LATENCY_BUCKETS):
                if seconds <= bound:
                    self.bucket_counts[index] += 1
                    break

    def snapshot(self, breaker: CircuitBreaker | None) -> MLClientStats:
        with self._lock:
            cumulative, running = [], 0
            for bound, count in zip(LATENCY_BUCKETS, self.bucket_counts, strict=True):
                running += count
                cumulative.append((bound, running))
            cumulative.append((math.inf, self.latency_count))
            return MLClientStats(
                calls=self.calls,
                requests=self.requests,
                retries=self.retries,
                failures=self.failures,
                circuit_rejections=self.circuit_rejections,
                latency_seconds_sum=self.latency_sum,
                latency_count=self.latency_count,
                latency_buckets=tuple(cumulative),
                circuit_state=None if breaker is None else breaker.state,
                circuit_times_opened=0 if breaker is None else breaker.times_opened,
            )
