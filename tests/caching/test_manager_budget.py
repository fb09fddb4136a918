"""The byte budget of each cache of a CacheManager: values from clients cannot grow memory past it.

The sizes are checked independently of the budget's own count: the JSON of every value the
cache still holds, measured after the flood.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from tests.support.caches import MakeManager
from tests.support.factories import make_features

from pgcache import Cache, CacheManager
from pgcache.caching.budget import DEFAULT_MAX_BYTES, ENTRY_OVERHEAD, ByteBudget, value_size
from pgcache.caching.tiered import TieredCache
from pgcache.keys import CACHE_NAMES

KIB = 1024
MIB = 1024 * KIB


def big_plan(query_hash: int, size: int) -> dict[str, Any]:
    """An EXPLAIN plan as a client could send it: ``size`` bytes of text in one field."""
    return {"Plan": {"Node Type": "Seq Scan", "Filter": "x" * size, "query": query_hash}}


def held_bytes(cache: Cache[Any, Any]) -> int:
    """What the cache holds now, measured without the budget: each value's JSON (a str: its
    length) + the overhead of an entry."""
    return sum(
        (len(value) if isinstance(value, str) else len(json.dumps(value, separators=(",", ":"))))
        + ENTRY_OVERHEAD
        for value in cache.values()
    )


def test_a_flood_of_large_values_stays_within_the_byte_budget(make_manager: MakeManager) -> None:
    manager = make_manager(max_size=10_000, max_bytes=MIB)
    for query_hash in range(200):
        manager.set_explain_plan(query_hash, big_plan(query_hash, 100 * KIB))
    plans = manager.cache("explain_plans")
    assert held_bytes(plans) <= MIB
    assert 5 <= len(plans) <= 10
    metrics = (manager.byte_metrics() or {})["explain_plans"]
    assert metrics.bytes == held_bytes(plans)
    assert metrics.evictions == 200 - len(plans)
    assert metrics.max_bytes == MIB


def test_the_oldest_stored_entries_go_first(make_manager: MakeManager) -> None:
    manager = make_manager(max_bytes=3 * (100 * KIB + 200))
    for query_hash in range(5):
        manager.set_anomaly(query_hash, "a" * (100 * KIB))
    assert sorted(manager.cache("anomalies").keys()) == [2, 3, 4]


def test_a_value_larger_than_the_whole_budget_is_not_kept_and_is_counted(
    make_manager: MakeManager,
) -> None:
    manager = make_manager(max_bytes=MIB)
    manager.set_fingerprint(7, "small, older value")
    manager.set_fingerprint(8, "kept")
    manager.set_fingerprint(7, "x" * (2 * MIB))
    assert manager.get_fingerprint(7) is None  # not the huge value, and not the older one
    assert manager.get_fingerprint(8) == "kept"
    metrics = (manager.byte_metrics() or {})["fingerprints"]
    assert (metrics.oversized, metrics.evictions) == (1, 0)
    assert metrics.bytes == value_size("kept")


def test_every_cache_has_the_budget_and_reports_its_bytes(make_manager: MakeManager) -> None:
    manager = make_manager(max_bytes=4 * MIB)
    manager.set_features(1, "current", make_features(1))
    manager.set_prediction(1, "current", "m1", {"ms": 1.5})
    metrics = manager.byte_metrics()
    assert metrics is not None
    assert list(metrics) == list(CACHE_NAMES)
    assert {name: m.max_bytes for name, m in metrics.items()} == dict.fromkeys(CACHE_NAMES, 4 * MIB)
    assert metrics["features"].bytes == len(make_features(1).model_dump_json()) + ENTRY_OVERHEAD
    assert metrics["predictions"].bytes == len('{"ms":1.5}') + ENTRY_OVERHEAD
    assert metrics["anomalies"].bytes == 0


def test_the_default_budget_is_64_mib_and_none_turns_it_off(make_manager: MakeManager) -> None:
    assert make_manager().max_bytes == DEFAULT_MAX_BYTES == 64 * MIB
    unbounded = make_manager(max_bytes=None)
    for query_hash in range(3):
        unbounded.set_anomaly(query_hash, "a" * MIB)
    assert unbounded.byte_metrics() is None
    assert len(unbounded.cache("anomalies")) == 3


@pytest.mark.parametrize(
    ("value", "error"),
    [(0, ValueError), (-1, ValueError), (1.5, TypeError), ("64MiB", TypeError), (True, TypeError)],
)
def test_a_bad_max_bytes_is_refused_naming_it(value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match=r"^max_bytes must be"):
        CacheManager(max_bytes=value)  # type: ignore[arg-type]


def test_clearing_and_invalidating_release_the_bytes(make_manager: MakeManager) -> None:
    manager = make_manager(max_bytes=MIB)
    manager.set_explain_plan(1, big_plan(1, KIB))
    manager.set_explain_plan(2, big_plan(2, KIB))
    manager.invalidate_query(1)
    assert (manager.byte_metrics() or {})["explain_plans"].bytes == value_size(big_plan(2, KIB))
    manager.clear()
    assert (manager.byte_metrics() or {})["explain_plans"].bytes == 0


def test_entries_the_cache_evicted_on_its_own_stop_counting(make_manager: MakeManager) -> None:
    manager = make_manager(max_size=10, max_bytes=MIB, policy="lru")
    for query_hash in range(1_000):
        manager.set_anomaly(query_hash, "a" * 100)
    counted = (manager.byte_metrics() or {})["anomalies"].bytes
    # At most twice max_size records are kept before the gone ones are looked for.
    assert held_bytes(manager.cache("anomalies")) <= counted <= 21 * value_size("a" * 100)


def test_values_loaded_through_a_tier_count_too(make_manager: MakeManager) -> None:
    manager = make_manager(max_bytes=MIB)
    tiered: TieredCache[Any, Any] = manager.tier("fingerprints")
    for query_hash in range(50):
        tiered.get_or_set(query_hash, lambda: "f" * (100 * KIB))
    assert held_bytes(manager.cache("fingerprints")) <= MIB
    assert (manager.byte_metrics() or {})["fingerprints"].evictions > 0


def test_threads_flooding_at_once_stay_within_the_budget(make_manager: MakeManager) -> None:
    manager = make_manager(max_bytes=MIB)
    start = threading.Barrier(8)

    def flood(thread: int) -> None:
        start.wait()
        for n in range(100):
            manager.set_explain_plan(thread * 1_000 + n, big_plan(n, 20 * KIB))

    workers = [threading.Thread(target=flood, args=(thread,)) for thread in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    plans = manager.cache("explain_plans")
    assert held_bytes(plans) <= MIB
    assert (manager.byte_metrics() or {})["explain_plans"].bytes == held_bytes(plans)


def test_a_value_without_json_form_counts_its_shallow_size() -> None:
    assert value_size({1, 2, 3}) > ENTRY_OVERHEAD
    assert value_size(b"abc") == 3 + ENTRY_OVERHEAD


def test_a_budget_of_a_plain_cache_needs_a_positive_int() -> None:
    with Cache(max_size=10) as cache, pytest.raises(ValueError, match="max_bytes must be at least"):
        ByteBudget(cache, 0)
