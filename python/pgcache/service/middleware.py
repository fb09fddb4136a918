"""The service's middleware: an X-Request-ID on every request and response, one log line per
request, a JSON 500 for any exception a handler lets escape (a client gone mid-request is one
line), and, in the one layer :func:`pgcache.service.app.create_app` uses, the rate limit and the
request metrics too."""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Collection
from typing import Final

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pgcache.observability.requests import RequestMetrics, endpoint_name
from pgcache.service.problems import error_response
from pgcache.service.ratelimit import RateLimitMiddleware
from pgcache.service.request_ids import REQUEST_ID, RequestIdLogFilter

_REQUEST_ID_RE: Final = re.compile(r"[\x21-\x7e]{1,128}")
_logger = logging.getLogger("pgcache.service")
_logger.addFilter(RequestIdLogFilter())


def new_request_id() -> str:
    """32 random hex digits: 128 random bits (a UUID4 has 122) at a fraction of ``uuid4``'s
    cost. The ids name requests in logs, they are no secrets; ``random`` reseeds in a fork."""
    return f"{random.getrandbits(128):032x}"


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _REQUEST_ID_RE.fullmatch(text) else None
    return None


class ServiceMiddleware:
    """The service's middleware, one pure ASGI layer (one wrapped ``send``) for what would
    otherwise be three: ``X-Request-ID`` on every response and one log line per request; a
    500 JSON answer (traceback logged, never sent) for any exception a handler lets escape;
    with ``rate_limit``, the rate limit of :class:`pgcache.service.ratelimit.RateLimitMiddleware`
    (the lifespan's limiter: its headers, or a 429 answer); with ``metrics``, every request
    recorded as :class:`pgcache.observability.requests.RequestMetricsMiddleware` does (paths
    in ``exclude`` left out)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: RequestMetrics | None = None,
        exclude: Collection[str] = (),
        rate_limit: bool = False,
    ) -> None:
        self.app = app
        self._metrics = metrics
        self._exclude = frozenset(exclude)
        self._limit = RateLimitMiddleware(app) if rate_limit else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _incoming_request_id(scope) or new_request_id()
        extra = [(b"x-request-id", request_id.encode("latin-1"))]
        token = REQUEST_ID.set(request_id)
        status = 0
        disconnected = False

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        try:
            rejected = None
            if self._limit is not None:
                limit_headers, rejected = await self._limit.admit(scope)
                extra[:0] = limit_headers  # before the id, as the layers they replace sent them
            if rejected is None:
                await self.app(scope, receive, send_with_id)
            else:
                await rejected(scope, receive, send_with_id)
        except ClientDisconnect:  # nobody is left to answer: one line, no traceback
            disconnected = True
        except Exception:
            _logger.exception(
                "unhandled error in %s %s (request_id=%s)",
                scope.get("method"),
                scope.get("path"),
                request_id,
            )
            if status:  # the response has begun: nothing sensible can be sent any more
                raise
            response = error_response(
                500,
                "internal_error",
                "the server failed to answer this request; its log has the details under "
                "this request id",
            )
            await response(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            if _logger.isEnabledFor(logging.INFO):
                _logger.info(
                    "%s %s -> %s in %.1f ms (request_id=%s)",
                    scope.get("method"),
                    scope.get("path"),
                    "the client disconnected" if disconnected else status,
                    elapsed * 1000,
                    request_id,
                )
            REQUEST_ID.reset(token)
            if self._metrics is not None:
                name = endpoint_name(scope)
                if name.partition(" ")[2] not in self._exclude:
                    self._metrics.record(name, status, elapsed)


class RequestIdMiddleware(ServiceMiddleware):
    """Pure ASGI middleware: ``X-Request-ID`` on every response, one log line per request, and
    a 500 JSON answer (traceback logged, never sent) for any exception a handler lets escape
    (:class:`ServiceMiddleware` without rate limit or metrics)."""

    def __init__(self, app: ASGIApp) -> None:
        super().__init__(app)
