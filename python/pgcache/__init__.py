"""pgcache: a thread-safe TTL cache in Rust for Python services that analyse PostgreSQL queries.

``from pgcache import Cache, cached, CacheManager`` needs no third-party package. Every other
public name is imported on first use from the subpackage that holds it (``_PUBLIC`` below, the
one table of public names); a name whose optional dependencies are missing raises an
``ImportError`` naming the extra to install (``pip install 'pgcache[service]'``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Final

from pgcache._core import (
    Cache as Cache,
    CacheClosedError as CacheClosedError,
    CacheMetrics as CacheMetrics,
    ManualClock as ManualClock,
    PgCacheError as PgCacheError,
    RateLimitDecision as RateLimitDecision,
    RateLimiter as RateLimiter,
    __version__ as __version__,
)

if TYPE_CHECKING:  # the same names as _PUBLIC (tests/test_layout.py checks it)
    from pgcache.caching.cached import (
        AsyncCachedFunction as AsyncCachedFunction,
        AsyncCachedMethod as AsyncCachedMethod,
        CachedFunction as CachedFunction,
        CachedMethod as CachedMethod,
        cached as cached,
        cached_method as cached_method,
    )
    from pgcache.caching.callcounts import CacheInfo as CacheInfo
    from pgcache.caching.callkeys import (
        make_key as make_key,
    )
    from pgcache.caching.manager import (
        CacheManager as CacheManager,
        prediction_cache_key as prediction_cache_key,
    )
    from pgcache.caching.redis_tier import RedisTier as RedisTier
    from pgcache.caching.tiered import TieredCache as TieredCache
    from pgcache.config import (
        Settings as Settings,
        parse_duration as parse_duration,
    )
    from pgcache.errors import (
        CircuitOpenError as CircuitOpenError,
        ConfigError as ConfigError,
        DatabaseNotConfiguredError as DatabaseNotConfiguredError,
        MLServiceError as MLServiceError,
        MLServiceResponseError as MLServiceResponseError,
        MLServiceUnavailable as MLServiceUnavailable,
        PgStatStatementsUnavailableError as PgStatStatementsUnavailableError,
        PostgresUnavailableError as PostgresUnavailableError,
        QueryNotFoundError as QueryNotFoundError,
    )
    from pgcache.keys import (
        CACHE_NAMES as CACHE_NAMES,
        PredictionKey as PredictionKey,
    )
    from pgcache.ml.client import (
        AsyncMLClient as AsyncMLClient,
        MLClient as MLClient,
    )
    from pgcache.ml.models import (
        Prediction as Prediction,
        PredictionValidation as PredictionValidation,
        ServiceHealth as ServiceHealth,
        TrainingJob as TrainingJob,
    )
    from pgcache.ml.predictor import (
        AsyncCachedPredictor as AsyncCachedPredictor,
        CachedPredictor as CachedPredictor,
    )
    from pgcache.ml.stats import (
        MLClientStats as MLClientStats,
    )
    from pgcache.observability.prometheus import (
        PgCacheCollector as PgCacheCollector,
    )
    from pgcache.observability.snapshot import (
        CacheDetailedMetrics as CacheDetailedMetrics,
        CacheMetricsSnapshot as CacheMetricsSnapshot,
        CacheStatusResponse as CacheStatusResponse,
        calculate_metrics_snapshot as calculate_metrics_snapshot,
    )
    from pgcache.postgres.cached_features import (
        AsyncCachedFeatureExtractor as AsyncCachedFeatureExtractor,
        CachedFeatureExtractor as CachedFeatureExtractor,
    )
    from pgcache.postgres.features import (
        AsyncFeatureExtractor as AsyncFeatureExtractor,
        AsyncPgStatStatementsExtractor as AsyncPgStatStatementsExtractor,
        FeatureExtractor as FeatureExtractor,
        PgStatStatementsExtractor as PgStatStatementsExtractor,
        QueryFeatures as QueryFeatures,
    )
    from pgcache.postgres.pools import (
        PoolSettings as PoolSettings,
        make_async_pool as make_async_pool,
        make_pool as make_pool,
    )
    from pgcache.resilience.breaker import (
        CircuitBreaker as CircuitBreaker,
        CircuitState as CircuitState,
    )
    from pgcache.service.app import (
        create_app as create_app,
    )
    from pgcache.service.lifespan import (
        PgCacheState as PgCacheState,
        pgcache_lifespan as pgcache_lifespan,
    )
    from pgcache.service.middleware import (
        RequestIdMiddleware as RequestIdMiddleware,
    )
    from pgcache.service.request_ids import (
        RequestIdLogFilter as RequestIdLogFilter,
    )
    from pgcache.service.routes import (
        pgcache_routes as pgcache_routes,
    )

_EAGER: Final = (
    "Cache",
    "CacheClosedError",
    "CacheMetrics",
    "ManualClock",
    "PgCacheError",
    "RateLimitDecision",
    "RateLimiter",
)

# Public name -> the module that defines it (imported on first use).
_PUBLIC: Final[dict[str, str]] = {
    "AsyncCachedFeatureExtractor": "pgcache.postgres.cached_features",
    "AsyncCachedFunction": "pgcache.caching.cached",
    "AsyncCachedMethod": "pgcache.caching.cached",
    "AsyncCachedPredictor": "pgcache.ml.predictor",
    "AsyncFeatureExtractor": "pgcache.postgres.features",
    "AsyncMLClient": "pgcache.ml.client",
    "AsyncPgStatStatementsExtractor": "pgcache.postgres.features",
    "CACHE_NAMES": "pgcache.keys",
    "CacheDetailedMetrics": "pgcache.observability.snapshot",
    "CacheManager": "pgcache.caching.manager",
    "CacheMetricsSnapshot": "pgcache.observability.snapshot",
    "CacheStatusResponse": "pgcache.observability.snapshot",
    "CachedFeatureExtractor": "pgcache.postgres.cached_features",
    "CacheInfo": "pgcache.caching.callcounts",
    "CachedFunction": "pgcache.caching.cached",
    "CachedMethod": "pgcache.caching.cached",
    "CachedPredictor": "pgcache.ml.predictor",
    "CircuitBreaker": "pgcache.resilience.breaker",
    "CircuitOpenError": "pgcache.errors",
    "CircuitState": "pgcache.resilience.breaker",
    "ConfigError": "pgcache.errors",
    "DatabaseNotConfiguredError": "pgcache.errors",
    "FeatureExtractor": "pgcache.postgres.features",
    "MLClient": "pgcache.ml.client",
    "MLClientStats": "pgcache.ml.stats",
    "MLServiceError": "pgcache.errors",
    "MLServiceResponseError": "pgcache.errors",
    "MLServiceUnavailable": "pgcache.errors",
    "PgCacheCollector": "pgcache.observability.prometheus",
    "PgCacheState": "pgcache.service.lifespan",
    "PgStatStatementsExtractor": "pgcache.postgres.features",
    "PgStatStatementsUnavailableError": "pgcache.errors",
    "PoolSettings": "pgcache.postgres.pools",
    "PostgresUnavailableError": "pgcache.errors",
    "Prediction": "pgcache.ml.models",
    "PredictionKey": "pgcache.keys",
    "PredictionValidation": "pgcache.ml.models",
    "QueryFeatures": "pgcache.postgres.features",
    "QueryNotFoundError": "pgcache.errors",
    "RedisTier": "pgcache.caching.redis_tier",
    "RequestIdMiddleware": "pgcache.service.middleware",
    "RequestIdLogFilter": "pgcache.service.request_ids",
    "ServiceHealth": "pgcache.ml.models",
    "Settings": "pgcache.config",
    "TieredCache": "pgcache.caching.tiered",
    "TrainingJob": "pgcache.ml.models",
    "cached": "pgcache.caching.cached",
    "cached_method": "pgcache.caching.cached",
    "calculate_metrics_snapshot": "pgcache.observability.snapshot",
    "create_app": "pgcache.service.app",
    "make_async_pool": "pgcache.postgres.pools",
    "make_key": "pgcache.caching.callkeys",
    "make_pool": "pgcache.postgres.pools",
    "parse_duration": "pgcache.config",
    "pgcache_lifespan": "pgcache.service.lifespan",
    "pgcache_routes": "pgcache.service.routes",
    "prediction_cache_key": "pgcache.caching.manager",
}

__all__ = sorted([*_EAGER, *_PUBLIC, "__version__"])


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'pgcache' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
