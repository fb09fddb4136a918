"""pgcache: a thread-safe TTL + LRU cache in Rust for services that analyse PostgreSQL queries.

The cache itself lives in the compiled extension ``pgcache._core``; this package
re-exports its public names. Everything else (configuration, the five-cache
manager, metrics exposition, the ML client) is built on top in pure Python.
"""

import importlib
from typing import TYPE_CHECKING, Any

from pgcache._core import (
    Cache,
    CacheClosedError,
    CacheMetrics,
    ManualClock,
    PgCacheError,
)

if TYPE_CHECKING:
    from pgcache.config import ConfigError, Settings, parse_duration
    from pgcache.db import DatabaseNotConfiguredError, PoolSettings, make_async_pool, make_pool
    from pgcache.features import (
        AsyncCachedFeatureExtractor,
        AsyncFeatureExtractor,
        AsyncPgStatStatementsExtractor,
        CachedFeatureExtractor,
        FeatureExtractor,
        PgStatStatementsExtractor,
        PgStatStatementsUnavailableError,
        QueryFeatures,
        QueryNotFoundError,
    )
    from pgcache.manager import CACHE_NAMES, CacheManager, prediction_cache_key
    from pgcache.memoize import AsyncCachedFunction, CachedFunction, cached, make_key
    from pgcache.metrics import (
        CacheDetailedMetrics,
        CacheMetricsSnapshot,
        CacheStatusResponse,
        PgCacheCollector,
        calculate_metrics_snapshot,
    )
    from pgcache.ml import (
        AsyncCachedPredictor,
        AsyncMLClient,
        CachedPredictor,
        CircuitBreaker,
        CircuitOpenError,
        CircuitState,
        MLClient,
        MLClientStats,
        MLServiceError,
        MLServiceResponseError,
        MLServiceUnavailable,
        Prediction,
        PredictionValidation,
        ServiceHealth,
        TrainingJob,
    )
    from pgcache.web import (
        PgCacheState,
        RequestIdMiddleware,
        create_app,
        pgcache_lifespan,
        pgcache_routes,
    )

# Everything but the cache is imported on first use, so that `from pgcache import
# Cache` does not pay for pydantic, psycopg and prometheus_client.
_LAZY: dict[str, str] = {
    "AsyncCachedFeatureExtractor": "pgcache.features",
    "AsyncCachedFunction": "pgcache.memoize",
    "AsyncCachedPredictor": "pgcache.ml",
    "AsyncFeatureExtractor": "pgcache.features",
    "AsyncMLClient": "pgcache.ml",
    "AsyncPgStatStatementsExtractor": "pgcache.features",
    "CACHE_NAMES": "pgcache.manager",
    "CacheDetailedMetrics": "pgcache.metrics",
    "CacheManager": "pgcache.manager",
    "CacheMetricsSnapshot": "pgcache.metrics",
    "CacheStatusResponse": "pgcache.metrics",
    "CachedFeatureExtractor": "pgcache.features",
    "CachedFunction": "pgcache.memoize",
    "CachedPredictor": "pgcache.ml",
    "CircuitBreaker": "pgcache.ml",
    "CircuitOpenError": "pgcache.ml",
    "CircuitState": "pgcache.ml",
    "ConfigError": "pgcache.config",
    "DatabaseNotConfiguredError": "pgcache.db",
    "FeatureExtractor": "pgcache.features",
    "MLClient": "pgcache.ml",
    "MLClientStats": "pgcache.ml",
    "MLServiceError": "pgcache.ml",
    "MLServiceResponseError": "pgcache.ml",
    "MLServiceUnavailable": "pgcache.ml",
    "PgCacheCollector": "pgcache.metrics",
    "PgCacheState": "pgcache.web",
    "PgStatStatementsExtractor": "pgcache.features",
    "PgStatStatementsUnavailableError": "pgcache.features",
    "PoolSettings": "pgcache.db",
    "Prediction": "pgcache.ml",
    "PredictionValidation": "pgcache.ml",
    "QueryFeatures": "pgcache.features",
    "QueryNotFoundError": "pgcache.features",
    "RequestIdMiddleware": "pgcache.web",
    "ServiceHealth": "pgcache.ml",
    "Settings": "pgcache.config",
    "TrainingJob": "pgcache.ml",
    "cached": "pgcache.memoize",
    "calculate_metrics_snapshot": "pgcache.metrics",
    "create_app": "pgcache.web",
    "make_async_pool": "pgcache.db",
    "make_key": "pgcache.memoize",
    "make_pool": "pgcache.db",
    "parse_duration": "pgcache.config",
    "pgcache_lifespan": "pgcache.web",
    "pgcache_routes": "pgcache.web",
    "prediction_cache_key": "pgcache.manager",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pgcache' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "CACHE_NAMES",
    "AsyncCachedFeatureExtractor",
    "AsyncCachedFunction",
    "AsyncCachedPredictor",
    "AsyncFeatureExtractor",
    "AsyncMLClient",
    "AsyncPgStatStatementsExtractor",
    "Cache",
    "CacheClosedError",
    "CacheDetailedMetrics",
    "CacheManager",
    "CacheMetrics",
    "CacheMetricsSnapshot",
    "CacheStatusResponse",
    "CachedFeatureExtractor",
    "CachedFunction",
    "CachedPredictor",
    "CircuitBreaker",
    "CircuitOpenError",
    "CircuitState",
    "ConfigError",
    "DatabaseNotConfiguredError",
    "FeatureExtractor",
    "MLClient",
    "MLClientStats",
    "MLServiceError",
    "MLServiceResponseError",
    "MLServiceUnavailable",
    "ManualClock",
    "PgCacheCollector",
    "PgCacheError",
    "PgCacheState",
    "PgStatStatementsExtractor",
    "PgStatStatementsUnavailableError",
    "PoolSettings",
    "Prediction",
    "PredictionValidation",
    "QueryFeatures",
    "QueryNotFoundError",
    "RequestIdMiddleware",
    "ServiceHealth",
    "Settings",
    "TrainingJob",
    "cached",
    "calculate_metrics_snapshot",
    "create_app",
    "make_async_pool",
    "make_key",
    "make_pool",
    "parse_duration",
    "pgcache_lifespan",
    "pgcache_routes",
    "prediction_cache_key",
]
