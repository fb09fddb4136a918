"""The API routes: request parsing, HTTP caching, endpoints."""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import Awaitable
from typing import Any, Final, TypeVar

import psycopg
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pgcache._validate import INT64_MAX, INT64_MIN, validation_text
from pgcache.errors import MLServiceError, QueryNotFoundError
from pgcache.keys import CACHE_NAMES
from pgcache.ml.predictor import AsyncCachedPredictor
from pgcache.observability.snapshot import CacheStatusResponse, calculate_metrics_snapshot
from pgcache.postgres.cached_features import AsyncCachedFeatureExtractor
from pgcache.service.auth import require_admin
from pgcache.service.http_caching import cacheable_json, encode, etag_of, max_age
from pgcache.service.lifespan import PgCacheState, pgcache_state
from pgcache.service.limits import check_identifier, parse_json, read_body
from pgcache.service.openapi import InvalidateRequest, PredictRequest
from pgcache.service.problems import ProblemError, json_endpoint, problem_response

_QUERY_HASH_RE: Final = re.compile(r"-?[0-9]{1,20}")
# Printable ASCII without spaces, bounded: an id from outside must not forge log lines.
_READY_TIMEOUT: Final = 2.0
_STATUS_MESSAGE: Final = "Cache performance metrics"
_DEFAULT_SCENARIO: Final = "current"

_T = TypeVar("_T")
_M = TypeVar("_M", bound=BaseModel)

# --- request parsing -------------------------------------------------------------------------


def _query_hash(request: Request) -> int:
    text: str = request.path_params["query_hash"]
    if _QUERY_HASH_RE.fullmatch(text):
        value = int(text)
        if INT64_MIN <= value <= INT64_MAX:
            return value
    raise ProblemError(
        422,
        "invalid_query_hash",
        f"query_hash={text!r}: expected a pg_stat_statements queryid, a signed 64-bit integer "
        f"in [{INT64_MIN}, {INT64_MAX}]",
    )


async def _json_body(
    request: Request, state: PgCacheState, model: type[_M], *, empty_ok: bool
) -> _M:
    """The body as ``model``: at most ``MAX_BODY_BYTES`` (413), nested at most
    :data:`pgcache.service.limits.MAX_JSON_DEPTH` deep, valid (422 otherwise)."""
    raw = await read_body(request, state.settings.max_body_bytes)
    data: Any = {} if empty_ok and not raw.strip() else parse_json(raw)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ProblemError(422, "invalid_body", validation_text(exc)) from None


def _refuse_unknown(state: PgCacheState, query_hash: int, lookup: Awaitable[object]) -> None:
    """404 from memory (``lookup`` closed unawaited) when ``query_hash`` was found unknown less
    than ``NEGATIVE_CACHE_TTL`` ago: a flood of unknown hashes costs one database read per hash
    per interval."""
    unknown = state.unknown_queries
    if unknown is not None and query_hash in unknown:
        if inspect.iscoroutine(lookup):
            lookup.close()
        raise QueryNotFoundError(query_hash)


def _note_unknown(state: PgCacheState, query_hash: int) -> None:
    if state.unknown_queries is not None:
        state.unknown_queries[query_hash] = True


async def _unless_unknown(state: PgCacheState, query_hash: int, lookup: Awaitable[_T]) -> _T:
    """``lookup``'s answer, unless ``query_hash`` is known unknown (:func:`_refuse_unknown`)."""
    _refuse_unknown(state, query_hash, lookup)
    try:
        return await lookup
    except QueryNotFoundError:
        _note_unknown(state, query_hash)
        raise


def _require_database(
    state: PgCacheState,
) -> tuple[AsyncCachedFeatureExtractor, AsyncCachedPredictor]:
    if state.features is None or state.predictor is None:
        raise ProblemError(
            503,
            "database_not_configured",
            "DATABASE_URL is not set: this service has no database to read pg_stat_statements from",
        )
    return state.features, state.predictor


# --- HTTP caching ----------------------------------------------------------------------------


def _features_cache_control(state: PgCacheState, collected_at: float) -> str:
    """Fresh for what is left of the features cache TTL (counted from the extraction)."""
    ttl = state.manager.cache("features").ttl
    if not state.manager.enabled or ttl is None:
        return "no-cache"
    return f"public, max-age={max_age(ttl, collected_at)}"


_NO_STORE: Final = {"Cache-Control": "no-store"}


# --- endpoints -------------------------------------------------------------------------------


async def _cache_status(request: Request) -> Response:
    """GET /api/v1/metrics/cache: the original's CacheStatusResponse."""
    manager = pgcache_state(request).manager
    status = CacheStatusResponse(
        enabled=manager.enabled,
        max_size=manager.max_size,
        metrics=calculate_metrics_snapshot(manager),
        message=_STATUS_MESSAGE,
    )
    body = status.model_dump_json().encode()
    return cacheable_json(request, body, etag_of(body), "no-cache")


async def _prometheus(request: Request) -> Response:
    """GET /metrics: the Prometheus text exposition of the pgcache collector."""
    body = generate_latest(pgcache_state(request).registry)
    return Response(body, headers={"Content-Type": CONTENT_TYPE_LATEST, **_NO_STORE})


async def _healthz(request: Request) -> Response:
    """GET /healthz: the process is up (nothing else is checked)."""
    return JSONResponse({"status": "ok"}, headers=_NO_STORE)


async def _check_database(state: PgCacheState) -> str:
    if state.pool is None:
        return "DATABASE_URL is not set"
    try:
        async with state.pool.connection(timeout=min(state.db_timeout, _READY_TIMEOUT)) as conn:
            await conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"unreachable: {type(exc).__name__}: {exc}"
    return "ok"


async def _check_ml_service(state: PgCacheState) -> str:
    try:
        await state.ml_client.health(deadline=_READY_TIMEOUT)
    except MLServiceError as exc:
        return f"unreachable: {exc}"
    return "ok"


async def _check_redis(state: PgCacheState) -> str | None:
    """None without a shared tier; else ``ok`` or ``degraded: ...`` (never "not ready": the
    caches answer from L1 and the loaders while Redis is away)."""
    tier = state.manager.shared_tier
    if tier is None:
        return None
    answers = await tier.aping()
    status = tier.status()
    if answers and not status.degraded:
        return "ok"
    reasons = [] if answers else ["unreachable or slow"]
    if status.breaker != "closed":
        reasons.append(f"circuit breaker {status.breaker}")
    if not status.subscribed:
        reasons.append("invalidations not subscribed")
    if status.invalidations_pending:
        reasons.append(f"{status.invalidations_pending} invalidations waiting for Redis")
    return f"degraded: {', '.join(reasons)}; answering from L1 and the loaders"


async def _readyz(request: Request) -> Response:
    """GET /readyz: 200 when the database and the ML service answer, else 503 naming which.

    With ``REDIS_URL``, ``checks.redis`` says ``ok`` or why it is degraded; Redis never makes
    the service not ready (it is an optimisation)."""
    state = pgcache_state(request)
    database, ml_service, redis = await asyncio.gather(
        _check_database(state), _check_ml_service(state), _check_redis(state)
    )
    checks = {"database": database, "ml_service": ml_service}
    ready = all(result == "ok" for result in checks.values())
    if redis is not None:
        checks["redis"] = redis
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status_code=200 if ready else 503,
        headers=_NO_STORE,
    )


async def _features(request: Request) -> Response:
    """GET /api/v1/queries/{query_hash}/features?scenario=current: cached features.

    The busiest route maps its own errors (as :func:`json_endpoint` does for the others) and
    awaits the extractor itself: two coroutines fewer per request."""
    try:
        state = pgcache_state(request)
        query_hash = _query_hash(request)
        scenario = (
            check_identifier("scenario", request.query_params.get("scenario", _DEFAULT_SCENARIO))
            if request.scope["query_string"]
            else _DEFAULT_SCENARIO
        )
        extractor, _ = _require_database(state)
        lookup = extractor.extract_query_features(query_hash, scenario)
        _refuse_unknown(state, query_hash, lookup)
        try:
            features = await lookup
        except QueryNotFoundError:
            _note_unknown(state, query_hash)
            raise
        if state.encoded is not None and state.manager.enabled:
            encoded = state.encoded(features)
        else:  # nothing is cached: a value is served once
            encoded = encode(features)
        cache_control = _features_cache_control(state, encoded.collected_at)
        return cacheable_json(request, encoded.body, encoded.etag, cache_control)
    except Exception as exc:
        return problem_response(exc)


async def _predict(request: Request) -> Response:
    """POST /api/v1/queries/{query_hash}/predict {scenario, model_id}: cached prediction."""
    state = pgcache_state(request)
    query_hash = _query_hash(request)
    body = await _json_body(request, state, PredictRequest, empty_ok=True)
    _, predictor = _require_database(state)
    prediction = await _unless_unknown(
        state,
        query_hash,
        predictor.predict_query(query_hash, body.scenario, model_id=body.model_id),
    )
    return Response(prediction.model_dump_json(), media_type="application/json", headers=_NO_STORE)


async def _clear_cache(state: PgCacheState, name: str) -> int:
    """Empty one cache in every tier and instance; how many entries this instance's L1 held."""
    if name not in CACHE_NAMES:
        raise ProblemError(
            404, "unknown_cache", f"cache={name!r}: expected one of {', '.join(CACHE_NAMES)}"
        )
    tiered = state.manager.tier(name)
    removed = len(tiered)
    await tiered.aclear()
    if name == "features" and state.encoded is not None:
        state.encoded.clear()
    return removed


async def _invalidate(request: Request) -> Response:
    """POST /api/v1/cache/invalidate {"query_hash": n} or {"cache": name}: how many removed."""
    state = pgcache_state(request)
    require_admin(request, state.settings.admin_token)
    body = await _json_body(request, state, InvalidateRequest, empty_ok=False)
    if (body.query_hash is None) == (body.cache is None):
        raise ProblemError(
            422,
            "invalid_body",
            'expected exactly one of {"query_hash": <queryid>} or {"cache": <name>}',
        )
    if body.query_hash is not None:
        if not INT64_MIN <= body.query_hash <= INT64_MAX:
            raise ProblemError(
                422,
                "invalid_body",
                f"query_hash={body.query_hash}: outside the signed 64-bit range of a queryid",
            )
        removed = await state.manager.ainvalidate_query(body.query_hash)
        if state.unknown_queries is not None:
            state.unknown_queries.pop(body.query_hash, None)
        return JSONResponse({"query_hash": body.query_hash, "removed": removed}, headers=_NO_STORE)
    assert body.cache is not None
    removed = await _clear_cache(state, body.cache)
    return JSONResponse({"cache": body.cache, "removed": removed}, headers=_NO_STORE)


async def _delete_cache(request: Request) -> Response:
    """DELETE /api/v1/cache/{name}: empty one cache (its metrics are kept)."""
    name: str = request.path_params["name"]
    state = pgcache_state(request)
    require_admin(request, state.settings.admin_token)
    removed = await _clear_cache(state, name)
    return JSONResponse({"cache": name, "removed": removed}, headers=_NO_STORE)


def pgcache_routes() -> list[Route]:
    """The pgcache endpoints, to mount in any Starlette or FastAPI application.

    They read ``app.state.pgcache``: run :func:`pgcache_lifespan` in that application's lifespan.
    """
    # The router tries routes in order: the busiest first (no other path overlaps it).
    return [
        Route("/api/v1/queries/{query_hash}/features", _features, methods=["GET"]),
        Route("/api/v1/metrics/cache", json_endpoint(_cache_status), methods=["GET"]),
        Route("/metrics", json_endpoint(_prometheus), methods=["GET"]),
        Route("/healthz", json_endpoint(_healthz), methods=["GET"]),
        Route("/readyz", json_endpoint(_readyz), methods=["GET"]),
        Route("/api/v1/queries/{query_hash}/predict", json_endpoint(_predict), methods=["POST"]),
        Route("/api/v1/cache/invalidate", json_endpoint(_invalidate), methods=["POST"]),
        Route("/api/v1/cache/{name}", json_endpoint(_delete_cache), methods=["DELETE"]),
    ]
