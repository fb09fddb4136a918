"""The JSON metrics snapshot of the caches (and of their shared tier, when there is one)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Protocol

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
)

from pgcache._core import CacheMetrics
from pgcache.caching.budget import ByteBudgetMetrics
from pgcache.caching.tier_stats import SharedTierStatus, TierMetrics

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


def tier_metrics_of(source: object) -> Mapping[str, TierMetrics] | None:
    """The per-cache shared-tier metrics of a manager (``CacheManager.tier_metrics``); None
    for a manager without a shared tier, or a source that has none."""
    read = getattr(source, "tier_metrics", None)
    return read() if callable(read) else None


def byte_metrics_of(source: object) -> Mapping[str, ByteBudgetMetrics] | None:
    """The per-cache byte budgets of a manager (``CacheManager.byte_metrics``), or None."""
    read = getattr(source, "byte_metrics", None)
    return read() if callable(read) else None


def shared_tier_status_of(source: object) -> SharedTierStatus | None:
    """The shared tier's status of a manager (``CacheManager.shared_tier_status``), or None."""
    read = getattr(source, "shared_tier_status", None)
    return read() if callable(read) else None


class L2Metrics(BaseModel):
    """What one cache's second tier (Redis) did: present only when there is one."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    hits: int = Field(ge=0, description="L1 misses found in Redis")
    misses: int = Field(ge=0, description="L1 misses not in Redis either")
    errors: int = Field(ge=0, description="Redis operations that failed or timed out")
    undecodable: int = Field(ge=0, description="entries in Redis that were not pgcache values")
    unencodable: int = Field(ge=0, description="values kept in L1 only (no faithful form)")
    bypassed: int = Field(ge=0, description="operations skipped: circuit breaker open")
    loads: int = Field(ge=0, description="loader calls (a miss in both tiers)")
    lock_waits: int = Field(ge=0, description="loads left to another instance's lock")
    lock_timeouts: int = Field(ge=0, description="waits for another instance that ran out")
    operations: int = Field(ge=0, description="Redis round trips completed")
    latency_seconds_sum: float = Field(ge=0, description="their total time")
    hit_rate: float = Field(ge=0, le=100, description="100 * hits / (hits + misses); 0 if none")

    @classmethod
    def from_tier_metrics(cls, metrics: TierMetrics) -> L2Metrics:
        """The JSON form of :class:`pgcache.caching.tier_stats.TierMetrics`."""
        return cls(
            hits=metrics.l2_hits,
            misses=metrics.l2_misses,
            errors=metrics.l2_errors,
            undecodable=metrics.undecodable,
            unencodable=metrics.unencodable,
            bypassed=metrics.bypassed,
            loads=metrics.loads,
            lock_waits=metrics.lock_waits,
            lock_timeouts=metrics.lock_timeouts,
            operations=metrics.l2_operations,
            latency_seconds_sum=metrics.l2_latency_seconds_sum,
            hit_rate=hit_rate(metrics.l2_hits, metrics.l2_misses),
        )


class SharedTierMetrics(BaseModel):
    """The Redis connection shared by the caches: present only when ``REDIS_URL`` is set."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    redis: str = Field(description="ok, or degraded: answering from L1 and loaders only")
    url: str = Field(description="REDIS_URL, password masked")
    cluster: bool
    breaker: str = Field(description="closed, open or half_open")
    breaker_opened: int = Field(ge=0, description="times the circuit breaker opened")
    subscribed: bool = Field(description="whether invalidations from other instances arrive")
    subscription_losses: int = Field(ge=0)
    l1_flushes: int = Field(ge=0, description="times L1 was emptied after a lost subscription")
    invalidations_sent: int = Field(ge=0)
    invalidations_received: int = Field(ge=0)
    invalidation_errors: int = Field(ge=0)
    invalidations_pending: int = Field(
        ge=0, description="changes Redis has not taken yet, replayed once it answers"
    )
    invalidations_dropped: int = Field(ge=0, description="changes lost: too many pending")

    @classmethod
    def from_status(cls, status: SharedTierStatus) -> SharedTierMetrics:
        """The JSON form of :class:`pgcache.caching.tier_stats.SharedTierStatus`."""
        return cls(
            redis="degraded" if status.degraded else "ok",
            url=status.url,
            cluster=status.cluster,
            breaker=status.breaker,
            breaker_opened=status.breaker_opened,
            subscribed=status.subscribed,
            subscription_losses=status.subscription_losses,
            l1_flushes=status.l1_flushes,
            invalidations_sent=status.invalidations_sent,
            invalidations_received=status.invalidations_received,
            invalidation_errors=status.invalidation_errors,
            invalidations_pending=status.invalidations_pending,
            invalidations_dropped=status.invalidations_dropped,
        )


def _without_absent(
    model: BaseModel, handler: SerializerFunctionWrapHandler, field: str
) -> dict[str, Any]:
    """The model's dict without ``field`` when it is None (single tier: the original shape)."""
    data: dict[str, Any] = handler(model)
    if getattr(model, field) is None:
        data.pop(field, None)
    return data


class CacheDetailedMetrics(BaseModel):
    """One cache's counters and configuration, as the original's JSON reports them; with a
    shared tier, ``l2`` too (absent otherwise)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    hits: int = Field(ge=0, description="lookups that found a live entry")
    misses: int = Field(ge=0, description="lookups that found nothing or an expired entry")
    evictions: int = Field(
        ge=0, description="entries given up to make room (LRU's oldest, or W-TinyLFU's victim)"
    )
    rejections: int = Field(
        ge=0,
        description="new entries W-TinyLFU gave up: less frequent than the one they would replace",
    )
    expirations: int = Field(ge=0, description="entries removed because their TTL passed")
    hit_rate: float = Field(ge=0, le=100, description="100 * hits / (hits + misses); 0 if none")
    size: int = Field(ge=0, description="live entries now")
    max_size: int | None = Field(ge=1, description="entry limit (null: unbounded)")
    ttl_seconds: float | None = Field(gt=0, description="default TTL; None: entries never expire")
    bytes: int | None = Field(
        default=None, ge=0, description="bytes of values held (their JSON size); null: no budget"
    )
    max_bytes: int | None = Field(default=None, ge=1, description="byte budget (null: none)")
    byte_evictions: int | None = Field(
        default=None, ge=0, description="entries removed to stay within max_bytes"
    )
    oversized: int | None = Field(
        default=None, ge=0, description="values not kept: larger than the whole max_bytes"
    )
    l2: L2Metrics | None = Field(default=None, description="the shared tier (Redis) of this cache")

    @model_serializer(mode="wrap")
    def _drop_absent_l2(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _without_absent(self, handler, "l2")

    @classmethod
    def from_cache(
        cls,
        cache: _CacheLike,
        tier: TierMetrics | None = None,
        budget: ByteBudgetMetrics | None = None,
    ) -> CacheDetailedMetrics:
        """The metrics of ``cache`` now (``tier``: its shared tier's, if it has one;
        ``budget``: its byte budget's)."""
        metrics = cache.metrics()
        return cls(
            hits=metrics.hits,
            misses=metrics.misses,
            evictions=metrics.evictions,
            rejections=metrics.rejections,
            expirations=metrics.expirations,
            hit_rate=metrics.hit_rate,
            size=metrics.size,
            max_size=metrics.max_size,
            ttl_seconds=cache.ttl,
            bytes=None if budget is None else budget.bytes,
            max_bytes=None if budget is None else budget.max_bytes,
            byte_evictions=None if budget is None else budget.evictions,
            oversized=None if budget is None else budget.oversized,
            l2=None if tier is None else L2Metrics.from_tier_metrics(tier),
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
    shared_tier: SharedTierMetrics | None = Field(
        default=None, description="the Redis tier shared by the caches (absent without one)"
    )

    @model_serializer(mode="wrap")
    def _drop_absent_shared_tier(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _without_absent(self, handler, "shared_tier")


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
    the mean of the five rates: a busy cache weighs more than an idle one), in L1. With a
    shared tier, each cache also reports ``l2`` and the snapshot ``shared_tier``.
    """
    tiers = tier_metrics_of(manager) or {}
    budgets = byte_metrics_of(manager) or {}
    status = shared_tier_status_of(manager)
    per_cache = {
        _SNAPSHOT_FIELDS[name]: CacheDetailedMetrics.from_cache(
            cache, tiers.get(name), budgets.get(name)
        )
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
        shared_tier=None if status is None else SharedTierMetrics.from_status(status),
    )


# psycopg_pool's get_stats() keys -> (metric name, help, unit divisor). Counters that have not
# happened yet are absent from get_stats(); they are exported as 0 so every series always exists.
