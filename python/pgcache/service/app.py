"""The pgcache application (:func:`create_app`), and running it in a background thread for
tests and demos (:func:`serve_in_thread`)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from functools import partial
from typing import Any, TypeVar

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware

from pgcache._validate import check_seconds
from pgcache.config import Settings
from pgcache.observability.requests import RequestMetrics
from pgcache.service.dashboard import STREAM_PATH, dashboard_routes
from pgcache.service.lifespan import DEFAULT_DB_TIMEOUT, PgCacheState, pgcache_lifespan
from pgcache.service.middleware import ServiceMiddleware
from pgcache.service.openapi import openapi_routes
from pgcache.service.problems import http_error
from pgcache.service.routes import pgcache_routes
from pgcache.service.serving import check_port, http_protocol, serve_in_background


def create_app(
    settings: Settings | None = None, *, db_timeout: float = DEFAULT_DB_TIMEOUT
) -> Starlette:
    """The pgcache service: :func:`pgcache_routes` and the dashboard's, the OpenAPI document
    (``/openapi.json``, ``/docs``), :func:`pgcache_lifespan`, request metrics per endpoint,
    request ids, the rate limit (``RATE_LIMIT``) and JSON errors. ``settings`` defaults to the
    environment, read at start-up."""
    db_timeout = check_seconds("db_timeout", db_timeout)
    request_metrics = RequestMetrics()
    return Starlette(
        routes=[*pgcache_routes(), *dashboard_routes(), *openapi_routes()],
        # One layer for request metrics, request ids, JSON 500s and the rate limit.
        middleware=[
            Middleware(
                ServiceMiddleware, metrics=request_metrics, exclude=[STREAM_PATH], rate_limit=True
            )
        ],
        exception_handlers={HTTPException: http_error},
        lifespan=partial(
            pgcache_lifespan,
            settings=settings,
            db_timeout=db_timeout,
            request_metrics=request_metrics,
        ),
    )


_T = TypeVar("_T")


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
        state = getattr(self.app.state, "pgcache", None)
        if isinstance(state, PgCacheState) and state.metrics_stream is not None:
            # Open dashboards would otherwise hold the graceful shutdown until its timeout.
            state.metrics_stream.close_soon()
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
        http=http_protocol("h11"),
        timeout_graceful_shutdown=5,
    )
    running = serve_in_background(
        config, name="pgcache-web", what="the pgcache service", timeout=timeout
    )
    return ServiceHandle(running.server, running.thread, running.url, app, running.loop)
