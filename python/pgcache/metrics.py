"""Metrics of the five caches: JSON models and a Prometheus collector.

* :class:`CacheDetailedMetrics`, :class:`CacheMetricsSnapshot` and
  :class:`CacheStatusResponse` are the pydantic models of the original's
  ``/api/v1/metrics/cache`` response; :func:`calculate_metrics_snapshot` fills
  them from a cache manager.
* :class:`PgCacheCollector` is a ``prometheus_client`` custom collector: per-cache
  counters and gauges with a ``cache`` label, and the statistics of a
  ``psycopg_pool`` pool with a ``pool`` label when one is given.

Both read the manager at the moment they are asked (nothing is sampled in the
background, nothing is stored). This module serves no HTTP itself (see
:mod:`pgcache.web`) and registers nothing in prometheus_client's global registry:
the caller chooses the registry.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final, Protocol

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from pgcache._core import CacheMetrics

if TYPE_CHECKING:
    from pgcache.ml import MLClientStats

__all__ = [
    "CacheDetailedMetrics",
    "CacheMetricsSnapshot",
    "CacheStatusResponse",
    "ConnectionPoolLike",
    "MetricsSource",
    "PgCacheCollector",
    "calculate_metrics_snapshot",
]

# The manager's cache names, in its order, and the snapshot field each one fills.
_SNAPSHOT_FIELDS: Final[dict[str, str]] = {
    "features": "feature_cache",
    "predictions": "prediction_cache",
    "fingerprints": "query_results_cache",
    "explain_plans": "explain_plan_cache",
    "anomalies": "anomaly_cache",
}


class _CacheLike(Protocol):
    """What the metrics read from one cache (``pgcache.Cache`` has it)."""

    @property
    def ttl(self) -> float | None: ...

    def metrics(self) -> CacheMetrics: ...


class MetricsSource(Protocol):
    """What the metrics read from a cache manager (``pgcache.CacheManager`` has it)."""

    @property
    def enabled(self) -> bool: ...

    @property
    def max_size(self) -> int: ...

    @property
    def caches(self) -> Mapping[str, _CacheLike]: ...


class ConnectionPoolLike(Protocol):
    """What the collector reads from a pool (``psycopg_pool``'s sync and async pools have it)."""

    @property
    def name(self) -> str: ...

    def get_stats(self) -> dict[str, int]: ...


class MLClientLike(Protocol):
    """What the collector reads from an ML client (``pgcache.ml.MLClient`` and its async twin)."""

    def stats(self) -> MLClientStats: ...


class CacheDetailedMetrics(BaseModel):
    """One cache's counters and configuration, as the original's JSON reports them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    hits: int = Field(ge=0, description="lookups that found a live entry")
    misses: int = Field(ge=0, description="lookups that found nothing or an expired entry")
    evictions: int = Field(ge=0, description="entries removed to make room (LRU)")
    expirations: int = Field(ge=0, description="entries removed because their TTL passed")
    hit_rate: float = Field(ge=0, le=100, description="100 * hits / (hits + misses); 0 if none")
    size: int = Field(ge=0, description="live entries now")
    max_size: int = Field(ge=1, description="entry limit")
    ttl_seconds: float | None = Field(gt=0, description="default TTL; None: entries never expire")

    @classmethod
    def from_cache(cls, cache: _CacheLike) -> CacheDetailedMetrics:
        """The metrics of ``cache`` now."""
        metrics = cache.metrics()
        return cls(
            hits=metrics.hits,
            misses=metrics.misses,
            evictions=metrics.evictions,
            expirations=metrics.expirations,
            hit_rate=metrics.hit_rate,
            size=metrics.size,
            max_size=metrics.max_size,
            ttl_seconds=cache.ttl,
        )


class CacheMetricsSnapshot(BaseModel):
    """The five caches' metrics and the totals over all of them, at one moment."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    feature_cache: CacheDetailedMetrics
    prediction_cache: CacheDetailedMetrics
    query_results_cache: CacheDetailedMetrics = Field(
        description="the fingerprints (query grouping / query results) cache"
    )
    explain_plan_cache: CacheDetailedMetrics
    anomaly_cache: CacheDetailedMetrics
    total_cache_hits: int = Field(ge=0)
    total_cache_misses: int = Field(ge=0)
    overall_hit_rate: float = Field(
        ge=0, le=100, description="100 * total hits / total lookups; 0 if none"
    )
    taken_at: AwareDatetime = Field(description="when the snapshot was taken (UTC)")


class CacheStatusResponse(BaseModel):
    """The body of ``/api/v1/metrics/cache``: whether caching is on, and the snapshot."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool
    max_size: int = Field(ge=1, description="entry limit of each cache")
    metrics: CacheMetricsSnapshot
    message: str

    @classmethod
    def from_manager(cls, manager: MetricsSource) -> CacheStatusResponse:
        """The status of ``manager`` now, with a one-line human message."""
        snapshot = calculate_metrics_snapshot(manager)
        if manager.enabled:
            message = (
                f"caching enabled: {len(_SNAPSHOT_FIELDS)} caches of up to {manager.max_size}"
                f" entries, overall hit rate {snapshot.overall_hit_rate:.1f}%"
            )
        else:
            message = "caching disabled: nothing is stored and every lookup misses"
        return cls(
            enabled=manager.enabled, max_size=manager.max_size, metrics=snapshot, message=message
        )


def _hit_rate(hits: int, misses: int) -> float:
    lookups = hits + misses
    return 100.0 * hits / lookups if lookups else 0.0


def _caches_by_name(manager: MetricsSource) -> dict[str, _CacheLike]:
    """The five caches of ``manager``; ``ValueError`` naming any that is missing."""
    caches = manager.caches
    missing = [name for name in _SNAPSHOT_FIELDS if name not in caches]
    if missing:
        raise ValueError(
            f"manager.caches lacks {', '.join(map(repr, missing))}; expected the caches"
            f" {', '.join(map(repr, _SNAPSHOT_FIELDS))}, got {', '.join(map(repr, caches))}"
        )
    return {name: caches[name] for name in _SNAPSHOT_FIELDS}


def calculate_metrics_snapshot(manager: MetricsSource) -> CacheMetricsSnapshot:
    """Every cache's metrics and the totals, read from ``manager`` now.

    ``overall_hit_rate`` is the hit rate over all lookups of all five caches (not
    the mean of the five rates: a busy cache weighs more than an idle one).
    """
    per_cache = {
        _SNAPSHOT_FIELDS[name]: CacheDetailedMetrics.from_cache(cache)
        for name, cache in _caches_by_name(manager).items()
    }
    hits = sum(metrics.hits for metrics in per_cache.values())
    misses = sum(metrics.misses for metrics in per_cache.values())
    return CacheMetricsSnapshot(
        **per_cache,
        total_cache_hits=hits,
        total_cache_misses=misses,
        overall_hit_rate=_hit_rate(hits, misses),
        taken_at=datetime.now(UTC),
    )


# psycopg_pool's get_stats() keys -> (metric name, help, unit divisor). Counters that have not
# happened yet are absent from get_stats(); they are exported as 0 so every series always exists.
_POOL_GAUGES: Final[tuple[tuple[str, str, str], ...]] = (
    ("pool_min", "pgcache_db_pool_min_size", "Connections the pool keeps open at least."),
    ("pool_max", "pgcache_db_pool_max_size", "Connections the pool opens at most."),
    ("pool_size", "pgcache_db_pool_size", "Connections managed by the pool now."),
    ("pool_available", "pgcache_db_pool_available", "Idle connections ready to be handed out."),
    ("requests_waiting", "pgcache_db_pool_requests_waiting", "Requests waiting for a connection."),
)
_POOL_COUNTERS: Final[tuple[tuple[str, str, str, float], ...]] = (
    ("requests_num", "pgcache_db_pool_requests", "Connection requests.", 1),
    ("requests_queued", "pgcache_db_pool_requests_queued", "Requests that had to wait.", 1),
    (
        "requests_wait_ms",
        "pgcache_db_pool_requests_wait_seconds",
        "Time spent waiting for a connection.",
        1000,
    ),
    ("requests_errors", "pgcache_db_pool_requests_errors", "Requests that failed (timeout).", 1),
    ("usage_ms", "pgcache_db_pool_usage_seconds", "Time connections were lent out.", 1000),
    ("returns_bad", "pgcache_db_pool_returns_bad", "Connections returned in a bad state.", 1),
    ("connections_num", "pgcache_db_pool_connections", "Connection attempts to the server.", 1),
    (
        "connections_ms",
        "pgcache_db_pool_connections_seconds",
        "Time spent establishing connections.",
        1000,
    ),
    (
        "connections_errors",
        "pgcache_db_pool_connections_errors",
        "Failed connection attempts.",
        1,
    ),
    ("connections_lost", "pgcache_db_pool_connections_lost", "Connections found broken.", 1),
)


class PgCacheCollector(Collector):
    """A ``prometheus_client`` collector for a cache manager and, optionally, its DB pool.

    Register it with a registry: ``registry.register(PgCacheCollector(manager, pool))``.
    Per cache (label ``cache``: features, predictions, fingerprints, explain_plans,
    anomalies): counters ``pgcache_hits_total``, ``pgcache_misses_total``,
    ``pgcache_evictions_total``, ``pgcache_expirations_total``; gauges ``pgcache_size``,
    ``pgcache_max_size``, ``pgcache_hit_ratio`` (0 to 1) and ``pgcache_ttl_seconds``
    (absent for a cache without TTL). Gauge ``pgcache_enabled`` (1 or 0). With a pool
    (label ``pool``: its name): the ``pgcache_db_pool_*`` gauges and counters of
    ``pool.get_stats()``, times in seconds. With an ML client: counters
    ``pgcache_ml_calls_total``, ``pgcache_ml_requests_total`` (HTTP attempts),
    ``pgcache_ml_retries_total``, ``pgcache_ml_failures_total``,
    ``pgcache_ml_circuit_rejections_total`` and the histogram
    ``pgcache_ml_call_duration_seconds`` (per call, retries included). Everything is read at
    scrape time.
    """

    def __init__(
        self,
        manager: MetricsSource,
        pool: ConnectionPoolLike | None = None,
        ml_client: MLClientLike | None = None,
    ) -> None:
        self._manager = manager
        self._pool = pool
        self._ml_client = ml_client

    def describe(self) -> list[Metric]:
        """The families without samples, so that registering reads neither manager nor pool."""
        return list(self._families(with_samples=False))

    def collect(self) -> Iterator[Metric]:
        """Every family with the values of now."""
        return self._families(with_samples=True)

    def _families(self, *, with_samples: bool) -> Iterator[Metric]:
        yield from self._cache_families(with_samples=with_samples)
        if self._pool is not None:
            yield from self._pool_families(self._pool, with_samples=with_samples)
        if self._ml_client is not None:
            yield from self._ml_families(self._ml_client, with_samples=with_samples)

    def _cache_families(self, *, with_samples: bool) -> Iterator[Metric]:
        labels = ["cache"]
        hits = CounterMetricFamily("pgcache_hits", "Cache lookups that hit.", labels=labels)
        misses = CounterMetricFamily("pgcache_misses", "Cache lookups that missed.", labels=labels)
        evictions = CounterMetricFamily(
            "pgcache_evictions", "Entries evicted to make room (LRU).", labels=labels
        )
        expirations = CounterMetricFamily(
            "pgcache_expirations", "Entries removed because their TTL passed.", labels=labels
        )
        size = GaugeMetricFamily("pgcache_size", "Live entries in the cache.", labels=labels)
        max_size = GaugeMetricFamily("pgcache_max_size", "Entry limit of the cache.", labels=labels)
        hit_ratio = GaugeMetricFamily(
            "pgcache_hit_ratio", "Hits / lookups since start (0 to 1; 0 if none).", labels=labels
        )
        ttl = GaugeMetricFamily(
            "pgcache_ttl_seconds", "Default time to live of the cache's entries.", labels=labels
        )
        enabled = GaugeMetricFamily("pgcache_enabled", "1 if caching is enabled, else 0.")
        if with_samples:
            enabled.add_metric([], 1.0 if self._manager.enabled else 0.0)
            for name, cache in _caches_by_name(self._manager).items():
                metrics = cache.metrics()
                hits.add_metric([name], metrics.hits)
                misses.add_metric([name], metrics.misses)
                evictions.add_metric([name], metrics.evictions)
                expirations.add_metric([name], metrics.expirations)
                size.add_metric([name], metrics.size)
                max_size.add_metric([name], metrics.max_size)
                hit_ratio.add_metric([name], _hit_rate(metrics.hits, metrics.misses) / 100.0)
                if cache.ttl is not None:
                    ttl.add_metric([name], cache.ttl)
        yield from (hits, misses, evictions, expirations, size, max_size, hit_ratio, ttl, enabled)

    @staticmethod
    def _ml_families(client: MLClientLike, *, with_samples: bool) -> Iterator[Metric]:
        stats = client.stats() if with_samples else None
        for field, help_text in _ML_COUNTERS:
            counter = CounterMetricFamily(f"pgcache_ml_{field}", help_text)
            if stats is not None:
                counter.add_metric([], getattr(stats, field))
            yield counter
        duration = HistogramMetricFamily(
            "pgcache_ml_call_duration_seconds",
            "Duration of ML service calls, retries and waits included.",
        )
        if stats is not None:
            duration.add_metric(
                [],
                buckets=[(_bucket_bound(bound), count) for bound, count in stats.latency_buckets],
                sum_value=stats.latency_seconds_sum,
            )
        yield duration

    @staticmethod
    def _pool_families(pool: ConnectionPoolLike, *, with_samples: bool) -> Iterator[Metric]:
        stats = pool.get_stats() if with_samples else {}
        labels = ["pool"]
        for key, name, help_text in _POOL_GAUGES:
            gauge = GaugeMetricFamily(name, help_text, labels=labels)
            if with_samples:
                gauge.add_metric([pool.name], stats.get(key, 0))
            yield gauge
        for key, name, help_text, divisor in _POOL_COUNTERS:
            counter = CounterMetricFamily(name, help_text, labels=labels)
            if with_samples:
                counter.add_metric([pool.name], stats.get(key, 0) / divisor)
            yield counter


_ML_COUNTERS: Final = (
    ("calls", "Calls of the ML client's methods."),
    ("requests", "HTTP requests sent to the ML service (first tries and retries)."),
    ("retries", "HTTP requests that retried a failed one."),
    ("failures", "ML client calls that raised an error."),
    ("circuit_rejections", "ML client calls refused by the open circuit breaker."),
)


def _bucket_bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)
