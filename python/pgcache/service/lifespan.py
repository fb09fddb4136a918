"""What the service holds while it runs: the cache manager (on the shared Redis tier when
``REDIS_URL`` is set), the database pool and the ML client, opened by :func:`pgcache_lifespan`
and put on ``app.state.pgcache`` (a :class:`PgCacheState`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

from prometheus_client import CollectorRegistry
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.requests import Request

from pgcache._core import Cache
from pgcache._validate import check_seconds
from pgcache.caching.manager import CacheManager
from pgcache.config import Settings
from pgcache.ml.client import AsyncMLClient
from pgcache.ml.predictor import AsyncCachedPredictor
from pgcache.observability.prometheus import PgCacheCollector
from pgcache.observability.requests import RequestMetrics
from pgcache.postgres.cached_features import AsyncCachedFeatureExtractor
from pgcache.postgres.features import AsyncPgStatStatementsExtractor
from pgcache.postgres.pools import PoolSettings, make_async_pool
from pgcache.service.http_caching import EncodedBodies
from pgcache.service.metrics_stream import MetricsStream, StreamSources
from pgcache.service.ratelimit import LimitsCollector, RequestLimiter

DEFAULT_DB_TIMEOUT: Final = 5.0
"""Seconds a request waits for a database connection before answering 503."""


INT64_MIN: Final = -(2**63)
# --- state and lifespan ----------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PgCacheState:
    """What :func:`pgcache_lifespan` opens, on ``app.state.pgcache`` while the app runs.

    ``pool``, ``features`` and ``predictor`` are ``None`` when ``DATABASE_URL`` is not set.
    ``registry`` holds only the :class:`pgcache.PgCacheCollector` (caches, pool, ML client).
    ``requests``: the per-endpoint request metrics (None when the app records none);
    ``metrics_stream``: the dashboard's live metrics (None with ``DASHBOARD=false``).
    ``unknown_queries``: query hashes found unknown, kept ``NEGATIVE_CACHE_TTL``;
    ``rate_limiter``: the ``RATE_LIMIT`` of :class:`pgcache.service.ratelimit.RateLimitMiddleware`
    (None: no limit), shared through Redis with ``REDIS_URL``; ``encoded``: the JSON body and
    ETag of each cached features value, encoded once (None: encoded on every request).
    """

    settings: Settings
    manager: CacheManager
    ml_client: AsyncMLClient
    registry: CollectorRegistry
    pool: AsyncConnectionPool[Any] | None
    features: AsyncCachedFeatureExtractor | None
    predictor: AsyncCachedPredictor | None
    db_timeout: float
    requests: RequestMetrics | None = None
    metrics_stream: MetricsStream | None = None
    unknown_queries: Cache[int, bool] | None = None
    rate_limiter: RequestLimiter | None = None
    encoded: EncodedBodies | None = None


async def open_pool(settings: Settings, db_timeout: float) -> AsyncConnectionPool[Any]:
    """The pool of ``settings``, open at once whether or not the database answers yet.

    It opens with no connection required, then asks for ``MAX_IDLE_DATABASE_CONNS`` of them in
    the background: a service must come up (and say it is not ready) while its database is down.
    """
    wanted = PoolSettings.from_settings(settings)
    pool = await make_async_pool(
        wanted.model_copy(update={"min_size": 0, "timeout": timedelta(seconds=db_timeout)}),
        name="pgcache",
    )
    await pool.resize(wanted.min_size, wanted.max_size)
    return pool


@asynccontextmanager
async def pgcache_lifespan(
    app: Starlette,
    settings: Settings | None = None,
    *,
    db_timeout: float = DEFAULT_DB_TIMEOUT,
    request_metrics: RequestMetrics | None = None,
) -> AsyncIterator[None]:
    """Open the cache manager, the DB pool and the ML client on ``app.state.pgcache``; close all.

    ``settings`` defaults to ``Settings.load()`` (the environment; a bad variable raises
    :class:`pgcache.ConfigError` naming it). ``db_timeout``: seconds a request waits for a
    database connection. ``request_metrics``: what the app's
    :class:`pgcache.observability.requests.RequestMetricsMiddleware` records, for the dashboard.
    Use it as ``Starlette(lifespan=partial(pgcache_lifespan,
    settings=...))`` or inside your own lifespan (``async with pgcache_lifespan(app): ...``).
    """
    settings = Settings.load() if settings is None else settings
    db_timeout = check_seconds("db_timeout", db_timeout)
    async with AsyncExitStack() as stack:
        # With REDIS_URL, building the manager waits (up to REDIS_CONNECT_TIMEOUT) for its
        # invalidation subscription: in a worker thread, not on the event loop.
        manager = await asyncio.to_thread(CacheManager.from_settings, settings)
        stack.push_async_callback(manager.aclose)
        ml_client = AsyncMLClient(settings)
        stack.push_async_callback(ml_client.aclose)
        pool: AsyncConnectionPool[Any] | None = None
        features: AsyncCachedFeatureExtractor | None = None
        predictor: AsyncCachedPredictor | None = None
        if settings.database_url:
            pool = await open_pool(settings, db_timeout)
            stack.push_async_callback(pool.close)
            extractor = AsyncPgStatStatementsExtractor(
                pool, statement_timeout=settings.database_statement_timeout
            )
            features = AsyncCachedFeatureExtractor(extractor, manager)
            predictor = AsyncCachedPredictor(features, ml_client, manager)
        unknown_queries: Cache[int, bool] = Cache(
            ttl=settings.negative_cache_ttl,
            max_size=settings.cache_max_size,
            name="unknown_queries",
        )
        stack.callback(unknown_queries.close)
        encoded = EncodedBodies(settings.cache_max_size, manager.cache("features").ttl)
        stack.callback(encoded.close)
        shared = manager.shared_tier
        rate_limiter = RequestLimiter.from_settings(
            settings, shared=None if shared is None else shared.connection
        )
        registry = CollectorRegistry(auto_describe=True)
        registry.register(PgCacheCollector(manager, pool, ml_client))
        registry.register(LimitsCollector(rate_limiter))
        metrics_stream: MetricsStream | None = None
        if settings.dashboard:
            metrics_stream = MetricsStream(
                StreamSources(manager, pool=pool, ml_client=ml_client, requests=request_metrics)
            )
            metrics_stream.start()
            stack.push_async_callback(metrics_stream.aclose)
        app.state.pgcache = PgCacheState(
            settings=settings,
            manager=manager,
            ml_client=ml_client,
            registry=registry,
            pool=pool,
            features=features,
            predictor=predictor,
            db_timeout=db_timeout,
            requests=request_metrics,
            metrics_stream=metrics_stream,
            unknown_queries=unknown_queries,
            rate_limiter=rate_limiter,
            encoded=encoded,
        )
        try:
            yield
        finally:
            del app.state.pgcache


def pgcache_state(request: Request) -> PgCacheState:
    state = getattr(request.app.state, "pgcache", None)
    if not isinstance(state, PgCacheState):
        raise RuntimeError(
            "app.state.pgcache is not set: run pgcache.web.pgcache_lifespan in the "
            "application's lifespan (create_app() does)"
        )
    return state
