"""The Prometheus collector: caches (and their shared Redis tier), database pool, ML client."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Final

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from pgcache.observability.snapshot import (
    ConnectionPoolLike,
    MetricsSource,
    MLClientLike,
    caches_by_name,
    hit_rate,
    shared_tier_status_of,
    tier_metrics_of,
)

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
    ``pgcache_evictions_total``, ``pgcache_rejections_total`` (new entries W-TinyLFU gave up),
    ``pgcache_expirations_total``; gauges ``pgcache_size``,
    ``pgcache_max_size``, ``pgcache_hit_ratio`` (0 to 1) and ``pgcache_ttl_seconds``
    (absent for a cache without TTL). Gauge ``pgcache_enabled`` (1 or 0). With a pool
    (label ``pool``: its name): the ``pgcache_db_pool_*`` gauges and counters of
    ``pool.get_stats()``, times in seconds. With an ML client: counters
    ``pgcache_ml_calls_total``, ``pgcache_ml_requests_total`` (HTTP attempts),
    ``pgcache_ml_retries_total``, ``pgcache_ml_failures_total``,
    ``pgcache_ml_circuit_rejections_total`` and the histogram
    ``pgcache_ml_call_duration_seconds`` (per call, retries included). With a shared tier
    (``REDIS_URL``), per cache: counters ``pgcache_l2_hits_total``, ``pgcache_l2_misses_total``,
    ``pgcache_l2_errors_total``, ``pgcache_l2_undecodable_total``,
    ``pgcache_l2_unencodable_total``, ``pgcache_l2_bypassed_total``, ``pgcache_loads_total``,
    ``pgcache_l2_lock_waits_total``, ``pgcache_l2_lock_timeouts_total`` and the histogram
    ``pgcache_l2_latency_seconds``; for the connection: gauges ``pgcache_redis_degraded``,
    ``pgcache_redis_subscribed``, ``pgcache_redis_breaker_state`` (label ``state``) and the
    counters ``pgcache_redis_breaker_opened_total``,
    ``pgcache_redis_subscription_losses_total``, ``pgcache_l1_flushes_total``,
    ``pgcache_invalidations_sent_total``, ``pgcache_invalidations_received_total``,
    ``pgcache_invalidation_errors_total``, ``pgcache_invalidations_dropped_total`` and the gauge
    ``pgcache_invalidations_pending``. Everything is read at scrape time.
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
        if getattr(self._manager, "shared_tier", None) is not None:
            yield from self._tier_families(with_samples=with_samples)
        if self._pool is not None:
            yield from self._pool_families(self._pool, with_samples=with_samples)
        if self._ml_client is not None:
            yield from self._ml_families(self._ml_client, with_samples=with_samples)

    def _cache_families(self, *, with_samples: bool) -> Iterator[Metric]:
        labels = ["cache"]
        hits = CounterMetricFamily("pgcache_hits", "Cache lookups that hit.", labels=labels)
        misses = CounterMetricFamily("pgcache_misses", "Cache lookups that missed.", labels=labels)
        evictions = CounterMetricFamily(
            "pgcache_evictions", "Entries given up to make room for new ones.", labels=labels
        )
        rejections = CounterMetricFamily(
            "pgcache_rejections",
            "New entries given up by W-TinyLFU: less frequent than the entry they would replace.",
            labels=labels,
        )
        expirations = CounterMetricFamily(
            "pgcache_expirations", "Entries removed because their TTL passed.", labels=labels
        )
        size = GaugeMetricFamily("pgcache_size", "Live entries in the cache.", labels=labels)
        max_size = GaugeMetricFamily(
            "pgcache_max_size", "Entry limit of the cache (+Inf: unbounded).", labels=labels
        )
        hit_ratio = GaugeMetricFamily(
            "pgcache_hit_ratio", "Hits / lookups since start (0 to 1; 0 if none).", labels=labels
        )
        ttl = GaugeMetricFamily(
            "pgcache_ttl_seconds", "Default time to live of the cache's entries.", labels=labels
        )
        enabled = GaugeMetricFamily("pgcache_enabled", "1 if caching is enabled, else 0.")
        if with_samples:
            enabled.add_metric([], 1.0 if self._manager.enabled else 0.0)
            for name, cache in caches_by_name(self._manager).items():
                metrics = cache.metrics()
                hits.add_metric([name], metrics.hits)
                misses.add_metric([name], metrics.misses)
                evictions.add_metric([name], metrics.evictions)
                rejections.add_metric([name], metrics.rejections)
                expirations.add_metric([name], metrics.expirations)
                size.add_metric([name], metrics.size)
                max_size.add_metric(
                    [name], math.inf if metrics.max_size is None else metrics.max_size
                )
                hit_ratio.add_metric([name], hit_rate(metrics.hits, metrics.misses) / 100.0)
                if cache.ttl is not None:
                    ttl.add_metric([name], cache.ttl)
        yield from (
            hits,
            misses,
            evictions,
            rejections,
            expirations,
            size,
            max_size,
            hit_ratio,
            ttl,
            enabled,
        )

    def _tier_families(self, *, with_samples: bool) -> Iterator[Metric]:
        tiers = (tier_metrics_of(self._manager) or {}) if with_samples else {}
        labels = ["cache"]
        for field, name, help_text in _TIER_COUNTERS:
            counter = CounterMetricFamily(name, help_text, labels=labels)
            for cache, metrics in tiers.items():
                counter.add_metric([cache], getattr(metrics, field))
            yield counter
        latency = HistogramMetricFamily(
            "pgcache_l2_latency_seconds", "Duration of Redis round trips.", labels=labels
        )
        for cache, metrics in tiers.items():
            latency.add_metric(
                [cache],
                buckets=[(_bucket_bound(b), count) for b, count in metrics.l2_latency_buckets],
                sum_value=metrics.l2_latency_seconds_sum,
            )
        yield latency
        status = shared_tier_status_of(self._manager) if with_samples else None
        degraded = GaugeMetricFamily(
            "pgcache_redis_degraded", "1 while the caches answer without Redis, else 0."
        )
        subscribed = GaugeMetricFamily(
            "pgcache_redis_subscribed", "1 while invalidations from other instances arrive."
        )
        breaker = GaugeMetricFamily(
            "pgcache_redis_breaker_state", "1 for the breaker's state now.", labels=["state"]
        )
        pending = GaugeMetricFamily(
            "pgcache_invalidations_pending", "Changes Redis has not taken yet (replayed later)."
        )
        if status is not None:
            pending.add_metric([], status.invalidations_pending)
            degraded.add_metric([], 1.0 if status.degraded else 0.0)
            subscribed.add_metric([], 1.0 if status.subscribed else 0.0)
            for state in ("closed", "open", "half_open"):
                breaker.add_metric([state], 1.0 if status.breaker == state else 0.0)
        yield from (degraded, subscribed, breaker, pending)
        for field, name, help_text in _REDIS_COUNTERS:
            counter = CounterMetricFamily(name, help_text)
            if status is not None:
                counter.add_metric([], getattr(status, field))
            yield counter

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


_TIER_COUNTERS: Final = (
    ("l2_hits", "pgcache_l2_hits", "L1 misses found in Redis."),
    ("l2_misses", "pgcache_l2_misses", "L1 misses not found in Redis either."),
    ("l2_errors", "pgcache_l2_errors", "Redis operations that failed or timed out."),
    ("undecodable", "pgcache_l2_undecodable", "Entries in Redis that were not pgcache values."),
    ("unencodable", "pgcache_l2_unencodable", "Values kept in L1 only (no faithful form)."),
    ("bypassed", "pgcache_l2_bypassed", "Redis operations skipped: circuit breaker open."),
    ("loads", "pgcache_loads", "Loader calls: misses in both tiers."),
    ("lock_waits", "pgcache_l2_lock_waits", "Loads left to another instance's lock."),
    ("lock_timeouts", "pgcache_l2_lock_timeouts", "Waits for another instance that ran out."),
)
_REDIS_COUNTERS: Final = (
    ("breaker_opened", "pgcache_redis_breaker_opened", "Times the Redis breaker opened."),
    (
        "subscription_losses",
        "pgcache_redis_subscription_losses",
        "Lost invalidation subscriptions.",
    ),
    ("l1_flushes", "pgcache_l1_flushes", "Times L1 was emptied: invalidations may be missed."),
    ("invalidations_sent", "pgcache_invalidations_sent", "Invalidations sent to the others."),
    (
        "invalidations_received",
        "pgcache_invalidations_received",
        "Invalidations from other instances applied.",
    ),
    ("invalidation_errors", "pgcache_invalidation_errors", "Unreadable invalidation messages."),
    ("invalidations_dropped", "pgcache_invalidations_dropped", "Changes lost: too many pending."),
)


def _bucket_bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)
