"""The pgcache HTTP endpoints: an ASGI application on Starlette, or routes to mount in your own.

Endpoints (errors are JSON ``{"error", "detail", "request_id"}``, never a traceback):

=============================================  =============================================
``GET /api/v1/metrics/cache``                  the original's ``CacheStatusResponse``
``GET /metrics``                               Prometheus text (caches, DB pool, ML client)
``GET /healthz``                               the process is up
``GET /readyz``                                database and ML service answer (else 503)
``GET /api/v1/queries/{hash}/features``        cached features (``?scenario=current``)
``POST /api/v1/queries/{hash}/predict``        cached prediction (``{scenario, model_id}``)
``POST /api/v1/cache/invalidate``              ``{"query_hash": n}`` or ``{"cache": name}``
``DELETE /api/v1/cache/{name}``                empties one cache
=============================================  =============================================

``query_hash`` is a ``pg_stat_statements`` queryid: a signed 64-bit integer (negative ones are
valid); anything else is 422. Unknown query: 404. Database unreachable (or no ``DATABASE_URL``):
503, while features already cached keep answering 200. ML service unreachable: 503; an invalid
answer from it: 502. Every response carries ``X-Request-ID`` (the request's own when it sent a
sensible one, else a new one), which is also on the log records of ``pgcache.web``
(``record.request_id``; add :class:`RequestIdLogFilter` to your handlers to get it on other
loggers' records too). The GET JSON answers carry ``Cache-Control`` and a strong ``ETag``;
``If-None-Match`` with a matching tag gives 304.

Two ways to run it:

* ``create_app(settings)``: a complete Starlette application (``uvicorn.run(create_app())``;
  :func:`serve_in_thread` runs it in a background thread, for tests and demos);
* inside an existing Starlette or FastAPI service::

      from contextlib import asynccontextmanager
      from pgcache.web import RequestIdMiddleware, pgcache_lifespan, pgcache_routes

      @asynccontextmanager
      async def lifespan(app):
          async with pgcache_lifespan(app, settings):
              yield

      app = Starlette(routes=[..., Mount("/", routes=pgcache_routes())],
                      middleware=[Middleware(RequestIdMiddleware)], lifespan=lifespan)

  (FastAPI: ``app.router.routes.extend(pgcache_routes())`` and the same lifespan.)
  :func:`pgcache_lifespan` opens the cache manager, the database pool and the ML client, puts
  them on ``app.state.pgcache`` (a :class:`PgCacheState`) and closes them at shutdown.
  :class:`RequestIdMiddleware` gives the request ids and the catch-all 500 JSON answer.

The service starts even when the database is down (psycopg_pool's "stay up the hardest it
can" mode: the pool connects in the background and ``/readyz`` says what is missing), so a
database restart never needs a service restart. A request waits at most ``db_timeout`` seconds
for a database connection before answering 503.

What it deliberately does not do: authentication (put it in front, or in your own middleware:
the operator endpoints clear caches), rate limiting, or serving anything but JSON and the
Prometheus text; it registers nothing in prometheus_client's global registry.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Final, TypeVar

import psycopg
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr, ValidationError
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pgcache._serving import check_port, serve_in_background
from pgcache.config import Settings
from pgcache.db import PoolSettings, make_async_pool
from pgcache.features import (
    AsyncCachedFeatureExtractor,
    AsyncPgStatStatementsExtractor,
    PgStatStatementsUnavailableError,
    QueryNotFoundError,
)
from pgcache.manager import CACHE_NAMES, CacheManager
from pgcache.metrics import CacheStatusResponse, PgCacheCollector, calculate_metrics_snapshot
from pgcache.ml import AsyncCachedPredictor, AsyncMLClient, MLServiceError, MLServiceUnavailable

__all__ = [
    "DEFAULT_DB_TIMEOUT",
    "PgCacheState",
    "RequestIdLogFilter",
    "RequestIdMiddleware",
    "ServiceHandle",
    "create_app",
    "current_request_id",
    "pgcache_lifespan",
    "pgcache_routes",
    "serve_in_thread",
]

DEFAULT_DB_TIMEOUT: Final = 5.0
"""Seconds a request waits for a database connection before answering 503."""

_READY_TIMEOUT: Final = 2.0
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_QUERY_HASH_RE: Final = re.compile(r"-?[0-9]{1,20}")
# Printable ASCII without spaces, bounded: an id from outside must not forge log lines.
_REQUEST_ID_RE: Final = re.compile(r"[\x21-\x7e]{1,128}")
_MAX_SCENARIO_LENGTH: Final = 100
_STATUS_MESSAGE: Final = "Cache performance metrics"

_logger = logging.getLogger("pgcache.web")
_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "pgcache_request_id", default=None
)

_T = TypeVar("_T")
_M = TypeVar("_M", bound=BaseModel)


# --- request ids -----------------------------------------------------------------------------


def current_request_id() -> str | None:
    """The ``X-Request-ID`` of the request being served in this context (``None`` outside one)."""
    return _request_id.get()


class RequestIdLogFilter(logging.Filter):
    """Sets ``record.request_id`` (``"-"`` outside a request) so formatters can show it.

    It is on the ``pgcache.web`` logger already; add it to your handlers
    (``handler.addFilter(RequestIdLogFilter())``) to get the id on every logger's records.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _request_id.get() or "-"
        return True


_logger.addFilter(RequestIdLogFilter())


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _REQUEST_ID_RE.fullmatch(text) else None
    return None


class RequestIdMiddleware:
    """Pure ASGI middleware: ``X-Request-ID`` on every response, one log line per request, and
    a 500 JSON answer (traceback logged, never sent) for any exception a handler lets escape."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope) or uuid.uuid4().hex
        token = _request_id.set(request_id)
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).append("X-Request-ID", request_id)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            _logger.exception(
                "unhandled error in %s %s (request_id=%s)",
                scope.get("method"),
                scope.get("path"),
                request_id,
            )
            if status:  # the response has begun: nothing sensible can be sent any more
                raise
            response = _error(
                500,
                "internal_error",
                "the server failed to answer this request; its log has the details under "
                "this request id",
            )
            await response(scope, receive, send_with_id)
        finally:
            if _logger.isEnabledFor(logging.INFO):
                _logger.info(
                    "%s %s -> %d in %.1f ms (request_id=%s)",
                    scope.get("method"),
                    scope.get("path"),
                    status,
                    (time.perf_counter() - started) * 1000,
                    request_id,
                )
            _request_id.reset(token)


# --- errors ----------------------------------------------------------------------------------


def _error(
    status: int, error: str, detail: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body = {"error": error, "detail": detail, "request_id": _request_id.get()}
    return JSONResponse(body, status_code=status, headers=headers)


class _ProblemError(Exception):
    """A client-visible error raised inside a handler; :func:`_endpoint` turns it into JSON."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail


def _problem_of(exc: Exception) -> _ProblemError | None:
    """The HTTP meaning of a known error; ``None`` for a bug (left to the catch-all: 500)."""
    if isinstance(exc, _ProblemError):
        return exc
    if isinstance(exc, QueryNotFoundError):
        return _ProblemError(404, "query_not_found", str(exc))
    if isinstance(exc, PgStatStatementsUnavailableError):
        return _ProblemError(503, "pg_stat_statements_unavailable", str(exc))
    if isinstance(exc, psycopg.OperationalError):  # includes PoolTimeout and PoolClosed
        return _ProblemError(503, "database_unavailable", f"the database did not answer: {exc}")
    if isinstance(exc, MLServiceUnavailable):  # includes CircuitOpenError
        return _ProblemError(503, "ml_service_unavailable", str(exc))
    if isinstance(exc, MLServiceError):
        return _ProblemError(502, "ml_service_error", str(exc))
    return None


_Handler = Callable[[Request], Awaitable[Response]]


def _endpoint(handler: _Handler) -> _Handler:
    """Map the known errors of ``handler`` to JSON answers (without needing app handlers)."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except Exception as exc:
            problem = _problem_of(exc)
            if problem is None:
                raise
            return _error(problem.status, problem.error, problem.detail)

    endpoint.__name__ = handler.__name__
    endpoint.__doc__ = handler.__doc__
    return endpoint


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 (no such route, wrong method) as JSON."""
    assert isinstance(exc, HTTPException)
    names = {404: "not_found", 405: "method_not_allowed"}
    return _error(
        exc.status_code, names.get(exc.status_code, "http_error"), exc.detail, exc.headers
    )


# --- state and lifespan ----------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PgCacheState:
    """What :func:`pgcache_lifespan` opens, on ``app.state.pgcache`` while the app runs.

    ``pool``, ``features`` and ``predictor`` are ``None`` when ``DATABASE_URL`` is not set.
    ``registry`` holds only the :class:`pgcache.PgCacheCollector` (caches, pool, ML client).
    """

    settings: Settings
    manager: CacheManager
    ml_client: AsyncMLClient
    registry: CollectorRegistry
    pool: AsyncConnectionPool[Any] | None
    features: AsyncCachedFeatureExtractor | None
    predictor: AsyncCachedPredictor | None
    db_timeout: float


def _check_db_timeout(db_timeout: float) -> float:
    if (
        isinstance(db_timeout, bool)
        or not isinstance(db_timeout, int | float)
        or not db_timeout > 0
    ):
        raise ValueError(f"db_timeout={db_timeout!r}: expected a positive number of seconds")
    return float(db_timeout)


async def _open_pool(settings: Settings, db_timeout: float) -> AsyncConnectionPool[Any]:
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
) -> AsyncIterator[None]:
    """Open the cache manager, the DB pool and the ML client on ``app.state.pgcache``; close all.

    ``settings`` defaults to ``Settings.load()`` (the environment; a bad variable raises
    :class:`pgcache.ConfigError` naming it). ``db_timeout``: seconds a request waits for a
    database connection. Use it as ``Starlette(lifespan=partial(pgcache_lifespan,
    settings=...))`` or inside your own lifespan (``async with pgcache_lifespan(app): ...``).
    """
    settings = Settings.load() if settings is None else settings
    db_timeout = _check_db_timeout(db_timeout)
    async with AsyncExitStack() as stack:
        manager = CacheManager.from_settings(settings)
        stack.callback(manager.close)
        ml_client = AsyncMLClient(settings)
        stack.push_async_callback(ml_client.aclose)
        pool: AsyncConnectionPool[Any] | None = None
        features: AsyncCachedFeatureExtractor | None = None
        predictor: AsyncCachedPredictor | None = None
        if settings.database_url:
            pool = await _open_pool(settings, db_timeout)
            stack.push_async_callback(pool.close)
            features = AsyncCachedFeatureExtractor(AsyncPgStatStatementsExtractor(pool), manager)
            predictor = AsyncCachedPredictor(features, ml_client, manager)
        registry = CollectorRegistry(auto_describe=True)
        registry.register(PgCacheCollector(manager, pool, ml_client))
        app.state.pgcache = PgCacheState(
            settings=settings,
            manager=manager,
            ml_client=ml_client,
            registry=registry,
            pool=pool,
            features=features,
            predictor=predictor,
            db_timeout=db_timeout,
        )
        try:
            yield
        finally:
            del app.state.pgcache


def _state(request: Request) -> PgCacheState:
    state = getattr(request.app.state, "pgcache", None)
    if not isinstance(state, PgCacheState):
        raise RuntimeError(
            "app.state.pgcache is not set: run pgcache.web.pgcache_lifespan in the "
            "application's lifespan (create_app() does)"
        )
    return state


# --- request parsing -------------------------------------------------------------------------


def _query_hash(request: Request) -> int:
    text: str = request.path_params["query_hash"]
    if _QUERY_HASH_RE.fullmatch(text):
        value = int(text)
        if _INT64_MIN <= value <= _INT64_MAX:
            return value
    raise _ProblemError(
        422,
        "invalid_query_hash",
        f"query_hash={text!r}: expected a pg_stat_statements queryid, a signed 64-bit integer "
        f"in [{_INT64_MIN}, {_INT64_MAX}]",
    )


def _scenario(value: str) -> str:
    if not 0 < len(value) <= _MAX_SCENARIO_LENGTH or not value.isprintable():
        raise _ProblemError(
            422,
            "invalid_scenario",
            f"scenario={value[:_MAX_SCENARIO_LENGTH]!r}: expected 1 to {_MAX_SCENARIO_LENGTH} "
            "printable characters, e.g. current",
        )
    return value


class _PredictBody(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    scenario: StrictStr = "current"
    model_id: StrictStr | None = None


class _InvalidateBody(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    query_hash: StrictInt | None = None
    cache: StrictStr | None = None


def _validation_detail(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(map(str, item['loc'])) or 'body'}: {item['msg']}"
        for item in error.errors(include_url=False, include_input=False)
    )


async def _json_body(request: Request, model: type[_M], *, empty_ok: bool) -> _M:
    raw = await request.body()
    if not raw.strip() and empty_ok:
        data: Any = {}
    else:
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise _ProblemError(422, "invalid_body", f"the body is not valid JSON: {exc}") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _ProblemError(422, "invalid_body", _validation_detail(exc)) from None


def _require_database(
    state: PgCacheState,
) -> tuple[AsyncCachedFeatureExtractor, AsyncCachedPredictor]:
    if state.features is None or state.predictor is None:
        raise _ProblemError(
            503,
            "database_not_configured",
            "DATABASE_URL is not set: this service has no database to read pg_stat_statements from",
        )
    return state.features, state.predictor


# --- HTTP caching ----------------------------------------------------------------------------


def _etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 weak comparison, as ``If-None-Match`` asks for: ``W/"x"`` matches ``"x"``."""
    if if_none_match is None:
        return False
    if if_none_match.strip() == "*":
        return True
    tags = (tag.strip() for tag in if_none_match.split(","))
    return any(tag.removeprefix("W/") == etag for tag in tags)


def _cacheable_json(request: Request, body: bytes, cache_control: str) -> Response:
    etag = f'"{hashlib.blake2b(body, digest_size=16).hexdigest()}"'
    headers = {"ETag": etag, "Cache-Control": cache_control}
    if _etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


def _features_cache_control(state: PgCacheState, collected_at: datetime) -> str:
    """Fresh for what is left of the features cache TTL (counted from the extraction)."""
    ttl = state.manager.cache("features").ttl
    if not state.manager.enabled or ttl is None:
        return "no-cache"
    age = (datetime.now(UTC) - collected_at).total_seconds()
    return f"public, max-age={max(0, int(ttl - age))}"


_NO_STORE: Final = {"Cache-Control": "no-store"}


# --- endpoints -------------------------------------------------------------------------------


async def _cache_status(request: Request) -> Response:
    """GET /api/v1/metrics/cache: the original's CacheStatusResponse."""
    manager = _state(request).manager
    status = CacheStatusResponse(
        enabled=manager.enabled,
        max_size=manager.max_size,
        metrics=calculate_metrics_snapshot(manager),
        message=_STATUS_MESSAGE,
    )
    return _cacheable_json(request, status.model_dump_json().encode(), "no-cache")


async def _prometheus(request: Request) -> Response:
    """GET /metrics: the Prometheus text exposition of the pgcache collector."""
    body = generate_latest(_state(request).registry)
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


async def _readyz(request: Request) -> Response:
    """GET /readyz: 200 when the database and the ML service answer, else 503 naming which."""
    state = _state(request)
    database, ml_service = await asyncio.gather(_check_database(state), _check_ml_service(state))
    checks = {"database": database, "ml_service": ml_service}
    ready = all(result == "ok" for result in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status_code=200 if ready else 503,
        headers=_NO_STORE,
    )


async def _features(request: Request) -> Response:
    """GET /api/v1/queries/{query_hash}/features?scenario=current: cached features."""
    state = _state(request)
    query_hash = _query_hash(request)
    scenario = _scenario(request.query_params.get("scenario", "current"))
    extractor, _ = _require_database(state)
    features = await extractor.extract_query_features(query_hash, scenario)
    body = features.model_dump_json().encode()
    return _cacheable_json(request, body, _features_cache_control(state, features.collected_at))


async def _predict(request: Request) -> Response:
    """POST /api/v1/queries/{query_hash}/predict {scenario, model_id}: cached prediction."""
    state = _state(request)
    query_hash = _query_hash(request)
    body = await _json_body(request, _PredictBody, empty_ok=True)
    _, predictor = _require_database(state)
    prediction = await predictor.predict_query(
        query_hash, _scenario(body.scenario), model_id=body.model_id
    )
    return Response(prediction.model_dump_json(), media_type="application/json", headers=_NO_STORE)


def _clear_cache(state: PgCacheState, name: str) -> int:
    if name not in CACHE_NAMES:
        raise _ProblemError(
            404, "unknown_cache", f"cache={name!r}: expected one of {', '.join(CACHE_NAMES)}"
        )
    cache = state.manager.cache(name)
    removed = len(cache)
    cache.clear()
    return removed


async def _invalidate(request: Request) -> Response:
    """POST /api/v1/cache/invalidate {"query_hash": n} or {"cache": name}: how many removed."""
    state = _state(request)
    body = await _json_body(request, _InvalidateBody, empty_ok=False)
    if (body.query_hash is None) == (body.cache is None):
        raise _ProblemError(
            422,
            "invalid_body",
            'expected exactly one of {"query_hash": <queryid>} or {"cache": <name>}',
        )
    if body.query_hash is not None:
        if not _INT64_MIN <= body.query_hash <= _INT64_MAX:
            raise _ProblemError(
                422,
                "invalid_body",
                f"query_hash={body.query_hash}: outside the signed 64-bit range of a queryid",
            )
        removed = state.manager.invalidate_query(body.query_hash)
        return JSONResponse({"query_hash": body.query_hash, "removed": removed}, headers=_NO_STORE)
    assert body.cache is not None
    removed = _clear_cache(state, body.cache)
    return JSONResponse({"cache": body.cache, "removed": removed}, headers=_NO_STORE)


async def _delete_cache(request: Request) -> Response:
    """DELETE /api/v1/cache/{name}: empty one cache (its metrics are kept)."""
    name: str = request.path_params["name"]
    removed = _clear_cache(_state(request), name)
    return JSONResponse({"cache": name, "removed": removed}, headers=_NO_STORE)


def pgcache_routes() -> list[Route]:
    """The pgcache endpoints, to mount in any Starlette or FastAPI application.

    They read ``app.state.pgcache``: run :func:`pgcache_lifespan` in that application's lifespan.
    """
    return [
        Route("/api/v1/metrics/cache", _endpoint(_cache_status), methods=["GET"]),
        Route("/metrics", _endpoint(_prometheus), methods=["GET"]),
        Route("/healthz", _endpoint(_healthz), methods=["GET"]),
        Route("/readyz", _endpoint(_readyz), methods=["GET"]),
        Route("/api/v1/queries/{query_hash}/features", _endpoint(_features), methods=["GET"]),
        Route("/api/v1/queries/{query_hash}/predict", _endpoint(_predict), methods=["POST"]),
        Route("/api/v1/cache/invalidate", _endpoint(_invalidate), methods=["POST"]),
        Route("/api/v1/cache/{name}", _endpoint(_delete_cache), methods=["DELETE"]),
    ]


def create_app(
    settings: Settings | None = None, *, db_timeout: float = DEFAULT_DB_TIMEOUT
) -> Starlette:
    """The pgcache service: :func:`pgcache_routes`, :func:`pgcache_lifespan`, request ids and
    JSON errors. ``settings`` defaults to the environment, read at start-up."""
    db_timeout = _check_db_timeout(db_timeout)
    return Starlette(
        routes=pgcache_routes(),
        middleware=[Middleware(RequestIdMiddleware)],
        exception_handlers={HTTPException: _http_error},
        lifespan=partial(pgcache_lifespan, settings=settings, db_timeout=db_timeout),
    )


# --- running in a thread ---------------------------------------------------------------------


class ServiceHandle:
    """The service running in a background thread; :meth:`stop` ends it."""

    def __init__(
        self,
        server: uvicorn.Server,
        thread: threading.Thread,
        url: str,
        app: Starlette,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._server = server
        self._thread = thread
        self.url = url
        self.app = app
        self.loop = loop

    @property
    def running(self) -> bool:
        """Whether the server thread is still serving."""
        return self._thread.is_alive()

    @property
    def state(self) -> PgCacheState:
        """What the lifespan opened (while the service runs)."""
        state: PgCacheState = self.app.state.pgcache
        return state

    def run(self, coroutine: Coroutine[Any, Any, _T], timeout: float = 30.0) -> _T:
        """Run ``coroutine`` on the service's event loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop serving, run the lifespan's shutdown and wait for the thread (idempotent)."""
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError(f"the pgcache service at {self.url} did not stop in {timeout} s")

    def __enter__(self) -> ServiceHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def serve_in_thread(
    settings: Settings | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    app: Starlette | None = None,
    db_timeout: float = DEFAULT_DB_TIMEOUT,
    log_level: str = "warning",
    timeout: float = 30.0,
) -> ServiceHandle:
    """Start the service (``app``, default ``create_app(settings, db_timeout=...)``) with uvicorn
    on ``host:port`` (0: a free port) in a daemon thread; return once it accepts connections.

    Raises ``RuntimeError`` when it does not start (its lifespan failed: see the log).
    """
    check_port(port)
    app = create_app(settings, db_timeout=db_timeout) if app is None else app
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        lifespan="on",
        loop="asyncio",
        timeout_graceful_shutdown=5,
    )
    running = serve_in_background(
        config, name="pgcache-web", what="the pgcache service", timeout=timeout
    )
    return ServiceHandle(running.server, running.thread, running.url, app, running.loop)
