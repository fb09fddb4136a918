"""Specification of pgcache.metrics: the JSON snapshot models and the Prometheus collector.

The numbers are checked against the operations performed on a real ``pgcache.CacheManager``
(on a ManualClock, so expiry is deterministic). The pool statistics come from real
``psycopg_pool`` pools connected to the test suite's PostgreSQL (``postgres_url``). The
Prometheus output is checked by parsing ``generate_latest``'s text, as a scraper would.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg_pool
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError
from tests.support.factories import make_features

import pgcache
from pgcache import (
    Cache,
    CacheClosedError,
    CacheDetailedMetrics,
    CacheManager,
    CacheMetricsSnapshot,
    CacheStatusResponse,
    ManualClock,
    PgCacheCollector,
    calculate_metrics_snapshot,
)
from pgcache.caching.budget import DEFAULT_MAX_BYTES, ENTRY_OVERHEAD
from pgcache.config import Settings
from pgcache.ml.client import MLClient
from pgcache.ml.reference import serve_in_thread

CACHE_NAMES = ("features", "predictions", "fingerprints", "explain_plans", "anomalies")
SNAPSHOT_FIELDS = {
    "features": "feature_cache",
    "predictions": "prediction_cache",
    "fingerprints": "query_results_cache",
    "explain_plans": "explain_plan_cache",
    "anomalies": "anomaly_cache",
}
QUERY = -4_221_331_203_398_113  # pg_stat_statements query ids are signed


@pytest.fixture
def manager(clock: ManualClock) -> Iterator[CacheManager]:
    with CacheManager(max_size=100, clock=clock, cleanup_interval=3600.0) as manager:
        yield manager


def _lookups(cache: Cache[Any, Any], *, hits: int, misses: int) -> None:
    """Exactly ``hits`` hits and ``misses`` misses on ``cache``."""
    cache.set("present", "value")
    for _ in range(hits):
        assert cache.get("present") == "value"
    for _ in range(misses):
        assert cache.get("absent") is None


def _churn(manager: CacheManager) -> int:
    """Ten rounds over 20 fingerprints (a full cache of frequent entries), then 300 new ones
    seen once: W-TinyLFU turns most newcomers away. Returns how many entries left."""
    for _ in range(10):
        for query in range(20):
            if manager.get_fingerprint(query) is None:
                manager.set_fingerprint(query, f"q{query}")
    for query in range(100, 400):
        manager.set_fingerprint(query, f"q{query}")
    return 20 + 300 - 20


def _scrape(registry: CollectorRegistry) -> dict[str, dict[str, float]]:
    """Sample name -> {label value (cache or pool name, "" if none) -> value}, as scraped."""
    samples: dict[str, dict[str, float]] = {}
    text = generate_latest(registry).decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            label = sample.labels.get("cache", sample.labels.get("pool", ""))
            samples.setdefault(sample.name, {})[label] = sample.value
    return samples


def _types(registry: CollectorRegistry) -> dict[str, str]:
    text = generate_latest(registry).decode()
    return {family.name: family.type for family in text_string_to_metric_families(text)}


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


# --- JSON models: CacheDetailedMetrics, CacheMetricsSnapshot, CacheStatusResponse ---------------


def test_snapshot_counts_three_hits_and_one_miss(manager: CacheManager) -> None:
    manager.set_fingerprint(QUERY, "select-by-id")
    for _ in range(3):
        assert manager.get_fingerprint(QUERY) == "select-by-id"
    assert manager.get_fingerprint(QUERY + 1) is None

    fingerprints = calculate_metrics_snapshot(manager).query_results_cache
    assert fingerprints == CacheDetailedMetrics(
        hits=3,
        misses=1,
        evictions=0,
        rejections=0,
        expirations=0,
        hit_rate=75.0,
        size=1,
        max_size=100,
        ttl_seconds=600.0,
        bytes=len("select-by-id") + ENTRY_OVERHEAD,
        max_bytes=DEFAULT_MAX_BYTES,
        byte_evictions=0,
        oversized=0,
    )


def test_snapshot_reports_each_manager_cache_in_its_own_field(manager: CacheManager) -> None:
    for hits, name in enumerate(CACHE_NAMES, start=1):
        _lookups(manager.cache(name), hits=hits, misses=0)

    snapshot = calculate_metrics_snapshot(manager)
    reported = {name: getattr(snapshot, SNAPSHOT_FIELDS[name]).hits for name in CACHE_NAMES}
    assert reported == {
        "features": 1,
        "predictions": 2,
        "fingerprints": 3,
        "explain_plans": 4,
        "anomalies": 5,
    }


def test_typed_accessors_are_counted_in_their_caches(manager: CacheManager) -> None:
    manager.set_prediction(QUERY, "current", "model-a", 12.5)
    assert manager.get_prediction(QUERY, "current", "model-a") == 12.5
    manager.set_explain_plan(QUERY, {"Plan": {"Node Type": "Seq Scan"}})
    assert manager.get_explain_plan(QUERY) is not None
    assert manager.get_anomaly(QUERY) is None
    assert manager.get_features(QUERY) is None

    snapshot = calculate_metrics_snapshot(manager)
    assert (snapshot.prediction_cache.hits, snapshot.prediction_cache.misses) == (1, 0)
    assert (snapshot.explain_plan_cache.hits, snapshot.explain_plan_cache.size) == (1, 1)
    assert (snapshot.anomaly_cache.hits, snapshot.anomaly_cache.misses) == (0, 1)
    assert (snapshot.feature_cache.hits, snapshot.feature_cache.misses) == (0, 1)


def test_overall_hit_rate_weighs_every_lookup_not_every_cache(manager: CacheManager) -> None:
    _lookups(manager.cache("features"), hits=9, misses=1)  # 90 %
    _lookups(manager.cache("anomalies"), hits=0, misses=2)  # 0 %

    snapshot = calculate_metrics_snapshot(manager)
    assert (snapshot.total_cache_hits, snapshot.total_cache_misses) == (9, 3)
    assert snapshot.overall_hit_rate == 75.0  # 9 of 12, not the mean (45 %) of the rates


def test_hit_rates_are_zero_before_any_lookup(manager: CacheManager) -> None:
    snapshot = calculate_metrics_snapshot(manager)
    assert snapshot.overall_hit_rate == 0.0
    assert [getattr(snapshot, field).hit_rate for field in SNAPSHOT_FIELDS.values()] == [0.0] * 5


def test_snapshot_counts_evictions_and_expirations(clock: ManualClock) -> None:
    with CacheManager(max_size=2, clock=clock, cleanup_interval=3600.0, policy="lru") as manager:
        for query in (1, 2, 3):  # the third evicts the least recently used
            manager.set_anomaly(query, {"anomalous": False})
        clock.advance(timedelta(minutes=5, seconds=1))  # past the anomalies TTL
        assert manager.get_anomaly(3) is None

        anomalies = calculate_metrics_snapshot(manager).anomaly_cache
    assert (anomalies.evictions, anomalies.expirations, anomalies.misses) == (1, 1, 1)
    assert anomalies.size == 1  # entry 2 has expired too, but nothing has looked at it yet


def test_snapshot_counts_rejected_newcomers_apart_from_evictions(clock: ManualClock) -> None:
    with CacheManager(max_size=20, clock=clock, cleanup_interval=3600.0) as manager:
        left = _churn(manager)
        counters = manager.cache("fingerprints").metrics()
        snapshot = calculate_metrics_snapshot(manager)
    fingerprints = snapshot.query_results_cache
    assert fingerprints.rejections > 0
    assert (fingerprints.rejections, fingerprints.evictions) == (
        counters.rejections,
        counters.evictions,
    )
    assert fingerprints.evictions + fingerprints.rejections == left
    assert snapshot.feature_cache.rejections == 0


def test_snapshot_reports_the_ttls_of_the_settings() -> None:
    with CacheManager.from_settings(Settings(cache_max_size=500)) as manager:
        snapshot = calculate_metrics_snapshot(manager)
    ttls = {field: getattr(snapshot, field).ttl_seconds for field in SNAPSHOT_FIELDS.values()}
    assert ttls == {
        "feature_cache": 900.0,
        "prediction_cache": 300.0,
        "query_results_cache": 600.0,
        "explain_plan_cache": 1800.0,
        "anomaly_cache": 300.0,
    }
    assert snapshot.feature_cache.max_size == 500


def test_snapshot_is_taken_now_in_utc(manager: CacheManager) -> None:
    before = datetime.now(UTC)
    taken_at = calculate_metrics_snapshot(manager).taken_at
    after = datetime.now(UTC)
    assert taken_at.utcoffset() == timedelta(0)
    assert before <= taken_at <= after


def test_snapshot_json_has_the_original_field_names(manager: CacheManager) -> None:
    document = calculate_metrics_snapshot(manager).model_dump(mode="json")
    assert list(document) == [
        "feature_cache",
        "prediction_cache",
        "query_results_cache",
        "explain_plan_cache",
        "anomaly_cache",
        "total_cache_hits",
        "total_cache_misses",
        "overall_hit_rate",
        "taken_at",
    ]
    assert list(document["feature_cache"]) == [
        "hits",
        "misses",
        "evictions",
        "rejections",
        "expirations",
        "hit_rate",
        "size",
        "max_size",
        "ttl_seconds",
        "bytes",
        "max_bytes",
        "byte_evictions",
        "oversized",
    ]


def test_snapshot_round_trips_through_json(manager: CacheManager) -> None:
    _lookups(manager.cache("predictions"), hits=2, misses=1)
    snapshot = calculate_metrics_snapshot(manager)
    assert CacheMetricsSnapshot.model_validate_json(snapshot.model_dump_json()) == snapshot


def test_status_of_an_enabled_manager(manager: CacheManager) -> None:
    _lookups(manager.cache("features"), hits=1, misses=1)
    status = CacheStatusResponse.from_manager(manager)
    assert (status.enabled, status.max_size) == (True, 100)
    assert status.metrics.total_cache_hits == 1
    assert (
        status.message == "caching enabled: 5 caches of up to 100 entries, overall hit rate 50.0%"
    )


def test_status_of_a_disabled_manager_still_counts_misses(clock: ManualClock) -> None:
    with CacheManager(enabled=False, clock=clock, cleanup_interval=3600.0) as manager:
        manager.set_fingerprint(QUERY, "stored?")
        assert manager.get_fingerprint(QUERY) is None
        status = CacheStatusResponse.from_manager(manager)
    assert status.enabled is False
    assert (status.metrics.query_results_cache.misses, status.metrics.query_results_cache.size) == (
        1,
        0,
    )
    assert status.message == "caching disabled: nothing is stored and every lookup misses"


def test_status_response_json_shape(manager: CacheManager) -> None:
    document = CacheStatusResponse.from_manager(manager).model_dump(mode="json")
    assert list(document) == ["enabled", "max_size", "metrics", "message"]
    assert document["metrics"]["query_results_cache"]["max_size"] == 100


def test_detailed_metrics_reject_impossible_numbers() -> None:
    with pytest.raises(ValidationError, match="hits"):
        CacheDetailedMetrics(
            hits=-1,
            misses=0,
            evictions=0,
            rejections=0,
            expirations=0,
            hit_rate=0.0,
            size=0,
            max_size=10,
            ttl_seconds=1.0,
        )


@dataclass
class _StandInManager:
    """Only the attributes the metrics read: for pure-logic cases the real manager cannot build."""

    caches: Mapping[str, Cache[Any, Any]]
    enabled: bool = True
    max_size: int = 10


def test_a_manager_lacking_a_cache_is_an_error_naming_it(make_cache: Any) -> None:
    caches = {name: make_cache(ttl=60.0, max_size=10) for name in CACHE_NAMES[:-1]}
    with pytest.raises(ValueError, match=r"^manager\.caches lacks 'anomalies'; expected"):
        calculate_metrics_snapshot(_StandInManager(caches))


def test_cache_without_ttl_reports_ttl_seconds_none(make_cache: Any) -> None:
    caches = {name: make_cache(ttl=None, max_size=10) for name in CACHE_NAMES}
    snapshot = calculate_metrics_snapshot(_StandInManager(caches))
    assert snapshot.anomaly_cache.ttl_seconds is None


# --- Prometheus collector: per-cache families ----------------------------------------------------


def test_collector_exports_counters_per_cache(
    manager: CacheManager, registry: CollectorRegistry
) -> None:
    registry.register(PgCacheCollector(manager))
    manager.set_fingerprint(QUERY, "select-by-id")
    for _ in range(3):
        manager.get_fingerprint(QUERY)
    manager.get_fingerprint(QUERY + 1)

    samples = _scrape(registry)
    zero = dict.fromkeys(CACHE_NAMES, 0.0)
    assert samples["pgcache_hits_total"] == {**zero, "fingerprints": 3.0}
    assert samples["pgcache_misses_total"] == {**zero, "fingerprints": 1.0}
    assert samples["pgcache_evictions_total"] == zero
    assert samples["pgcache_rejections_total"] == zero
    assert samples["pgcache_expirations_total"] == zero


def test_collector_exports_gauges_per_cache(
    manager: CacheManager, registry: CollectorRegistry
) -> None:
    registry.register(PgCacheCollector(manager))
    _lookups(manager.cache("explain_plans"), hits=3, misses=1)

    samples = _scrape(registry)
    assert samples["pgcache_size"]["explain_plans"] == 1.0
    assert samples["pgcache_max_size"] == dict.fromkeys(CACHE_NAMES, 100.0)
    assert samples["pgcache_hit_ratio"]["explain_plans"] == 0.75
    assert samples["pgcache_hit_ratio"]["features"] == 0.0
    assert samples["pgcache_ttl_seconds"] == {
        "features": 900.0,
        "predictions": 300.0,
        "fingerprints": 600.0,
        "explain_plans": 1800.0,
        "anomalies": 300.0,
    }
    assert samples["pgcache_enabled"] == {"": 1.0}


def test_collector_counts_evictions_and_expirations(
    clock: ManualClock, registry: CollectorRegistry
) -> None:
    with CacheManager(max_size=2, clock=clock, cleanup_interval=3600.0, policy="lru") as manager:
        registry.register(PgCacheCollector(manager))
        for query in (1, 2, 3):
            manager.set_explain_plan(query, {"Plan": {}})
        clock.advance(timedelta(minutes=31))
        assert manager.cache("explain_plans").expire() == 2

        samples = _scrape(registry)
    assert samples["pgcache_evictions_total"]["explain_plans"] == 1.0
    assert samples["pgcache_expirations_total"]["explain_plans"] == 2.0
    assert samples["pgcache_size"]["explain_plans"] == 0.0


def test_collector_counts_rejections(clock: ManualClock, registry: CollectorRegistry) -> None:
    with CacheManager(max_size=20, clock=clock, cleanup_interval=3600.0) as manager:
        registry.register(PgCacheCollector(manager))
        left = _churn(manager)
        counters = manager.cache("fingerprints").metrics()
        samples = _scrape(registry)
    assert counters.rejections > 0
    assert samples["pgcache_rejections_total"]["fingerprints"] == float(counters.rejections)
    assert samples["pgcache_rejections_total"]["features"] == 0.0
    assert (
        samples["pgcache_evictions_total"]["fingerprints"]
        + samples["pgcache_rejections_total"]["fingerprints"]
        == left
    )


def test_collector_follows_prometheus_naming_and_types(
    manager: CacheManager, registry: CollectorRegistry
) -> None:
    registry.register(PgCacheCollector(manager))
    assert _types(registry) == {
        "pgcache_hits": "counter",
        "pgcache_misses": "counter",
        "pgcache_evictions": "counter",
        "pgcache_rejections": "counter",
        "pgcache_expirations": "counter",
        "pgcache_size": "gauge",
        "pgcache_max_size": "gauge",
        "pgcache_hit_ratio": "gauge",
        "pgcache_ttl_seconds": "gauge",
        "pgcache_enabled": "gauge",
    }
    text = generate_latest(registry).decode()
    assert "# TYPE pgcache_hits_total counter" in text
    assert 'pgcache_hits_total{cache="features"} 0.0' in text


def test_collector_reads_the_values_at_each_scrape(
    manager: CacheManager, registry: CollectorRegistry
) -> None:
    registry.register(PgCacheCollector(manager))
    assert _scrape(registry)["pgcache_misses_total"]["anomalies"] == 0.0
    manager.get_anomaly(QUERY)
    manager.get_anomaly(QUERY)
    assert _scrape(registry)["pgcache_misses_total"]["anomalies"] == 2.0


def test_collector_of_a_disabled_manager_reports_enabled_zero(
    clock: ManualClock, registry: CollectorRegistry
) -> None:
    with CacheManager(enabled=False, clock=clock, cleanup_interval=3600.0) as manager:
        registry.register(PgCacheCollector(manager))
        manager.get_features(QUERY)
        samples = _scrape(registry)
    assert samples["pgcache_enabled"] == {"": 0.0}
    assert samples["pgcache_misses_total"]["features"] == 1.0


def test_registering_the_collector_does_not_read_the_manager(
    clock: ManualClock, registry: CollectorRegistry
) -> None:
    manager = CacheManager(clock=clock, cleanup_interval=3600.0)
    manager.close()
    registry.register(PgCacheCollector(manager))  # would raise if it read the closed caches
    with pytest.raises(CacheClosedError):
        generate_latest(registry)


def test_collector_without_a_pool_exports_no_pool_metrics(
    manager: CacheManager, registry: CollectorRegistry
) -> None:
    registry.register(PgCacheCollector(manager))
    assert not [name for name in _scrape(registry) if name.startswith("pgcache_db_pool")]


def test_top_level_package_exports_the_metrics_names() -> None:
    assert {
        "CacheDetailedMetrics",
        "CacheMetricsSnapshot",
        "CacheStatusResponse",
        "PgCacheCollector",
        "calculate_metrics_snapshot",
    } <= set(pgcache.__all__)


# --- Prometheus collector: a real psycopg_pool pool ---------------------------------------------

POOL_GAUGES = {
    "pgcache_db_pool_min_size",
    "pgcache_db_pool_max_size",
    "pgcache_db_pool_size",
    "pgcache_db_pool_available",
    "pgcache_db_pool_requests_waiting",
}
POOL_COUNTERS = {
    "pgcache_db_pool_requests",
    "pgcache_db_pool_requests_queued",
    "pgcache_db_pool_requests_wait_seconds",
    "pgcache_db_pool_requests_errors",
    "pgcache_db_pool_usage_seconds",
    "pgcache_db_pool_returns_bad",
    "pgcache_db_pool_connections",
    "pgcache_db_pool_connections_seconds",
    "pgcache_db_pool_connections_errors",
    "pgcache_db_pool_connections_lost",
}


@pytest.fixture
def pool(postgres_url: str) -> Iterator[psycopg_pool.ConnectionPool]:
    with psycopg_pool.ConnectionPool(
        postgres_url, min_size=2, max_size=3, name="features-db", open=True
    ) as pool:
        pool.wait()
        yield pool


def test_collector_exports_the_pool_statistics(
    manager: CacheManager, registry: CollectorRegistry, pool: psycopg_pool.ConnectionPool
) -> None:
    registry.register(PgCacheCollector(manager, pool))
    for _ in range(3):
        with pool.connection() as connection:
            assert connection.execute("select 1").fetchone() == (1,)

    samples = _scrape(registry)
    assert samples["pgcache_db_pool_requests_total"] == {"features-db": 3.0}
    assert samples["pgcache_db_pool_min_size"] == {"features-db": 2.0}
    assert samples["pgcache_db_pool_max_size"] == {"features-db": 3.0}
    assert samples["pgcache_db_pool_size"] == {"features-db": 2.0}
    assert samples["pgcache_db_pool_available"] == {"features-db": 2.0}
    assert samples["pgcache_db_pool_requests_waiting"] == {"features-db": 0.0}
    assert samples["pgcache_db_pool_connections_total"] == {"features-db": 2.0}
    assert samples["pgcache_db_pool_connections_errors_total"] == {"features-db": 0.0}


def test_pool_metric_families_are_typed_and_always_present(
    manager: CacheManager, registry: CollectorRegistry, pool: psycopg_pool.ConnectionPool
) -> None:
    registry.register(PgCacheCollector(manager, pool))
    pool_types = {
        name: kind for name, kind in _types(registry).items() if name.startswith("pgcache_db")
    }
    assert pool_types == {
        **dict.fromkeys(POOL_GAUGES, "gauge"),
        **dict.fromkeys(POOL_COUNTERS, "counter"),
    }


def test_collector_counts_a_pool_request_that_timed_out(
    manager: CacheManager, registry: CollectorRegistry, postgres_url: str
) -> None:
    with psycopg_pool.ConnectionPool(
        postgres_url, min_size=1, max_size=1, name="tiny", open=True
    ) as pool:
        pool.wait()
        registry.register(PgCacheCollector(manager, pool))
        with pool.connection(), pytest.raises(psycopg_pool.PoolTimeout):
            pool.getconn(timeout=0.05)  # the only connection is lent out
        samples = _scrape(registry)
    assert samples["pgcache_db_pool_requests_errors_total"] == {"tiny": 1.0}
    assert samples["pgcache_db_pool_requests_queued_total"] == {"tiny": 1.0}
    assert samples["pgcache_db_pool_requests_total"] == {"tiny": 2.0}


async def test_collector_exports_the_statistics_of_an_async_pool(
    manager: CacheManager, registry: CollectorRegistry, postgres_url: str
) -> None:
    pool = psycopg_pool.AsyncConnectionPool(
        postgres_url, min_size=1, max_size=2, name="async-db", open=False
    )
    await pool.open(wait=True)
    try:
        registry.register(PgCacheCollector(manager, pool))
        for _ in range(4):
            async with pool.connection() as connection:
                cursor = await connection.execute("select 1")
                assert await cursor.fetchone() == (1,)
        samples = _scrape(registry)
    finally:
        await pool.close()
    assert samples["pgcache_db_pool_requests_total"] == {"async-db": 4.0}
    assert samples["pgcache_db_pool_max_size"] == {"async-db": 2.0}


# --- the ML client's counters, from real calls to the reference service ----------------------


def test_collector_exports_the_ml_clients_calls_requests_and_latency(
    manager: CacheManager, registry: CollectorRegistry
) -> None:
    with serve_in_thread() as service, MLClient(Settings(ml_service_url=service.url)) as client:
        client.predict(make_features())
        client.health()
        registry.register(PgCacheCollector(manager, ml_client=client))
        samples = _scrape(registry)
    assert samples["pgcache_ml_calls_total"][""] == 2
    assert samples["pgcache_ml_requests_total"][""] == 2
    assert samples["pgcache_ml_retries_total"][""] == 0
    assert samples["pgcache_ml_failures_total"][""] == 0
    assert samples["pgcache_ml_call_duration_seconds_count"][""] == 2
    assert samples["pgcache_ml_call_duration_seconds_sum"][""] > 0
    assert _types(registry)["pgcache_ml_call_duration_seconds"] == "histogram"


# --- the shared tier: L2 metrics per cache and the Redis connection ----------------------------


@pytest.fixture
def tiered_manager(redis_url: str, key_prefix: str) -> Iterator[CacheManager]:
    settings = Settings(redis_url=redis_url, redis_key_prefix=key_prefix, cache_max_size=100)
    with CacheManager.from_settings(settings) as manager:
        yield manager


def test_without_a_shared_tier_the_json_keeps_the_original_shape(manager: CacheManager) -> None:
    document = calculate_metrics_snapshot(manager).model_dump(mode="json")
    assert "shared_tier" not in document
    assert "l2" not in document["feature_cache"]


def test_the_snapshot_reports_l2_per_cache_and_the_redis_connection(
    tiered_manager: CacheManager,
) -> None:
    tiered_manager.set_explain_plan(QUERY, {"Plan": {}})
    tiered_manager.cache("explain_plans").clear()  # L1 forgets: the next read is an L2 hit
    assert tiered_manager.get_explain_plan(QUERY) == {"Plan": {}}
    assert tiered_manager.get_anomaly(QUERY) is None  # a miss in both tiers

    snapshot = calculate_metrics_snapshot(tiered_manager)
    assert snapshot.explain_plan_cache.l2 is not None
    assert snapshot.explain_plan_cache.l2.hits == 1
    assert snapshot.anomaly_cache.l2 is not None
    assert (snapshot.anomaly_cache.l2.misses, snapshot.anomaly_cache.l2.hits) == (1, 0)
    assert snapshot.shared_tier is not None
    assert (snapshot.shared_tier.redis, snapshot.shared_tier.subscribed) == ("ok", True)
    document = snapshot.model_dump(mode="json")
    assert list(document)[-1] == "shared_tier"
    assert list(document["explain_plan_cache"])[-1] == "l2"
    assert CacheMetricsSnapshot.model_validate_json(snapshot.model_dump_json()) == snapshot


def test_the_collector_exports_the_second_tier_only_when_there_is_one(
    manager: CacheManager, tiered_manager: CacheManager
) -> None:
    single, tiered = CollectorRegistry(), CollectorRegistry()
    single.register(PgCacheCollector(manager))
    tiered.register(PgCacheCollector(tiered_manager))
    assert not [name for name in _types(single) if "l2" in name or "redis" in name]
    types = _types(tiered)
    assert types["pgcache_l2_hits"] == "counter"
    assert types["pgcache_l2_latency_seconds"] == "histogram"
    assert types["pgcache_redis_degraded"] == "gauge"
    assert types["pgcache_invalidations_received"] == "counter"


def test_the_collector_counts_l2_hits_and_misses_per_cache(
    tiered_manager: CacheManager, registry: CollectorRegistry
) -> None:
    registry.register(PgCacheCollector(tiered_manager))
    tiered_manager.set_fingerprint(QUERY, "grouped")
    tiered_manager.cache("fingerprints").clear()
    tiered_manager.get_fingerprint(QUERY)
    tiered_manager.get_fingerprint(7)
    samples = _scrape(registry)
    assert samples["pgcache_l2_hits_total"]["fingerprints"] == 1.0
    assert samples["pgcache_l2_misses_total"]["fingerprints"] == 1.0
    assert samples["pgcache_l2_latency_seconds_count"]["fingerprints"] >= 3.0
    assert samples["pgcache_redis_degraded"] == {"": 0.0}
    text = generate_latest(registry).decode()
    assert 'pgcache_redis_breaker_state{state="closed"} 1.0' in text
    assert 'pgcache_redis_breaker_state{state="open"} 0.0' in text
