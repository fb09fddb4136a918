"""What the shared tier counts: per cache (:class:`TierMetrics`) and for the Redis connection as a
whole (:class:`SharedTierStatus`), as frozen snapshots that the metrics exporters read.

The L1 counters (hits, misses, evictions, expirations) stay those of each
:class:`pgcache.Cache`; this module holds only what the second tier adds. It imports no
third-party package and talks to nothing.
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass
from typing import Final

LATENCY_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
"""Upper bounds (seconds) of the L2 latency histogram; one more bucket, ``+Inf``, holds the rest."""


@dataclass(frozen=True, slots=True)
class TierMetrics:
    """What one tiered cache's second tier did since it was built.

    ``l2_hits`` / ``l2_misses``: L2 reads after an L1 miss that found / did not find the entry;
    ``l2_errors``: Redis operations that failed (connection, timeout, error reply);
    ``undecodable``: entries in Redis that were not a value pgcache wrote (read as misses);
    ``unencodable``: values kept in L1 only because they have no faithful form in Redis;
    ``bypassed``: operations not tried because the circuit breaker was open;
    ``loads``: calls of a loader (a miss in both tiers); ``lock_waits``: loads left to another
    instance that held the key's lock; ``lock_timeouts``: waits that ended without its value.
    ``l2_operations`` / ``l2_latency_seconds_sum`` / ``l2_latency_buckets``: the Redis round
    trips that completed, their total time and a cumulative histogram
    (``(upper bound, count)``, the last bound ``inf``).
    """

    l2_hits: int
    l2_misses: int
    l2_errors: int
    undecodable: int
    unencodable: int
    bypassed: int
    loads: int
    lock_waits: int
    lock_timeouts: int
    l2_operations: int
    l2_latency_seconds_sum: float
    l2_latency_buckets: tuple[tuple[float, int], ...]


class TierCounters:
    """The mutable counters behind :class:`TierMetrics` (thread-safe; one per tiered cache)."""

    __slots__ = (
        "_buckets",
        "_counts",
        "_latency_sum",
        "_lock",
        "_operations",
    )

    _FIELDS: Final = (
        "l2_hits",
        "l2_misses",
        "l2_errors",
        "undecodable",
        "unencodable",
        "bypassed",
        "loads",
        "lock_waits",
        "lock_timeouts",
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(self._FIELDS, 0)
        self._buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self._operations = 0
        self._latency_sum = 0.0

    def add(self, field: str, count: int = 1) -> None:
        """Add ``count`` to one of the :class:`TierMetrics` counters (``KeyError`` for others)."""
        with self._lock:
            self._counts[field] += count

    def observe(self, seconds: float) -> None:
        """One completed Redis round trip that took ``seconds``."""
        index = bisect.bisect_left(LATENCY_BUCKETS, seconds)
        with self._lock:
            self._operations += 1
            self._latency_sum += seconds
            self._buckets[index] += 1

    def snapshot(self) -> TierMetrics:
        """The counters now."""
        with self._lock:
            counts = dict(self._counts)
            buckets = list(self._buckets)
            operations, latency = self._operations, self._latency_sum
        cumulative: list[tuple[float, int]] = []
        running = 0
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), buckets, strict=True):
            running += count
            cumulative.append((bound, running))
        return TierMetrics(
            **counts,
            l2_operations=operations,
            l2_latency_seconds_sum=latency,
            l2_latency_buckets=tuple(cumulative),
        )


@dataclass(frozen=True, slots=True)
class SharedTierStatus:
    """The Redis connection of one process, as ``/readyz`` and the metrics report it.

    ``degraded`` is True while the circuit breaker is not closed or the invalidation
    subscription is down: the caches then answer from L1 and their loaders only.
    ``subscription_losses`` counts lost invalidation subscriptions, ``l1_flushes`` the times L1
    was emptied because of one; ``invalidations_sent`` / ``invalidations_received`` the messages
    this instance published / applied from other instances; ``invalidation_errors`` messages it
    could not read (each one also empties L1); ``invalidations_pending``: changes Redis has not
    taken yet (an outage), replayed once it answers; ``invalidations_dropped``: changes lost
    because more than 10,000 were pending (other instances keep those copies until their TTL).
    """

    url: str
    cluster: bool
    degraded: bool
    breaker: str
    breaker_opened: int
    subscribed: bool
    subscription_losses: int
    l1_flushes: int
    invalidations_sent: int
    invalidations_received: int
    invalidation_errors: int
    invalidations_pending: int = 0
    invalidations_dropped: int = 0
