"""The JSON metrics snapshot of the caches."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final, Protocol

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from pgcache._core import CacheMetrics

if TYPE_CHECKING:
    from pgcache.ml.stats import MLClientStats


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
    max_size: int | None = Field(ge=1, description="entry limit (null: unbounded)")
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


def hit_rate(hits: int, misses: int) -> float:
    lookups = hits + misses
    return 100.0 * hits / lookups if lookups else 0.0


def caches_by_name(manager: MetricsSource) -> dict[str, _CacheLike]:
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
        for name, cache in caches_by_name(manager).items()
    }
    hits = sum(metrics.hits for metrics in per_cache.values())
    misses = sum(metrics.misses for metrics in per_cache.values())
    return CacheMetricsSnapshot(
        **per_cache,
        total_cache_hits=hits,
        total_cache_misses=misses,
        overall_hit_rate=hit_rate(hits, misses),
        taken_at=datetime.now(UTC),
    )


# psycopg_pool's get_stats() keys -> (metric name, help, unit divisor). Counters that have not
# happened yet are absent from get_stats(); they are exported as 0 so every series always exists.
