"""The X-Request-ID middleware: an id on every request and response, one log line per request,
and a JSON 500 for any exception a handler lets escape (a client gone mid-request is one line)."""

from __future__ import annotations

import logging
import random
import re
import time
from typing import Final

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pgcache.service.problems import error_response
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


class RequestIdMiddleware:
    """Pure ASGI middleware: ``X-Request-ID`` on every response, one log line per request, and
    a 500 JSON answer (traceback logged, never sent) for any exception a handler lets escape."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope) or new_request_id()
        header = (b"x-request-id", request_id.encode("latin-1"))
        token = REQUEST_ID.set(request_id)
        started = time.perf_counter()
        status = 0
        disconnected = False

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
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
            if _logger.isEnabledFor(logging.INFO):
                _logger.info(
                    "%s %s -> %s in %.1f ms (request_id=%s)",
                    scope.get("method"),
                    scope.get("path"),
                    "the client disconnected" if disconnected else status,
                    (time.perf_counter() - started) * 1000,
                    request_id,
                )
            REQUEST_ID.reset(token)
