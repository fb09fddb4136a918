"""How stale can another instance be? The delay from an invalidation returning on one instance
to another instance no longer serving the old value, measured on two live managers.

:func:`invalidation_delays` is what the demo prints and the benchmarks report (p50, p99). It
writes, reads and invalidates its own entries (in the ``anomalies`` cache, under query hashes no
``pg_stat_statements`` entry has) and changes nothing else; it only measures, it does not wait
for anything to become consistent.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from pgcache.caching.manager import CacheManager

_PROBE_BASE: Final = -(2**62) - 7_919  # far from any real queryid; one per sample below it
_CACHE: Final = "anomalies"


def _received(manager: CacheManager) -> int:
    status = manager.shared_tier_status()
    if status is None:
        raise ValueError(f"{manager!r} has no shared tier: there is nothing to propagate")
    return status.invalidations_received


def _wait_for_message(receiver: CacheManager, seen: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _received(receiver) <= seen:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the write's announcement did not arrive within {timeout} s")
        time.sleep(0.0005)


def invalidation_delays(
    sender: CacheManager, receiver: CacheManager, samples: int = 100, *, timeout: float = 5.0
) -> list[float]:
    """Seconds, per sample, from ``sender.invalidate_query`` returning to ``receiver``'s L1 no
    longer holding the entry it had read before (``receiver`` then misses and reads Redis).

    Both managers must share one Redis namespace (two instances). ``TimeoutError`` when a
    message takes longer than ``timeout`` seconds; ``ValueError`` without a shared tier.
    """
    if samples < 1:
        raise ValueError(f"samples={samples!r}: expected at least 1")
    l1 = receiver.cache(_CACHE)
    delays: list[float] = []
    for sample in range(samples):
        query_hash = _PROBE_BASE - sample
        before = _received(receiver)
        sender.set_anomaly(query_hash, {"probe": sample})
        # The write announces itself; once the receiver has applied that, what it reads stays.
        _wait_for_message(receiver, before, timeout)
        if receiver.get_anomaly(query_hash) is None:
            raise RuntimeError("the receiver does not read what the sender wrote: two namespaces?")
        sender.invalidate_query(query_hash)
        returned = time.perf_counter()
        while query_hash in l1:
            if time.perf_counter() - returned > timeout:
                raise TimeoutError(f"the invalidation did not arrive within {timeout} s")
        delays.append(time.perf_counter() - returned)
    return delays
