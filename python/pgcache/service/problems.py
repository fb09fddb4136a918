"""JSON error answers: the problem exception, its mapping from library errors, the handlers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

import psycopg
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from pgcache.errors import (
    MLServiceError,
    MLServiceUnavailable,
    PgStatStatementsUnavailableError,
    QueryNotFoundError,
)
from pgcache.service.request_ids import current_request_id

# --- errors ----------------------------------------------------------------------------------


def error_response(
    status: int, error: str, detail: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body = {"error": error, "detail": detail, "request_id": current_request_id()}
    return JSONResponse(body, status_code=status, headers=headers)


class ProblemError(Exception):
    """A client-visible error raised inside a handler; :func:`json_endpoint` turns it into JSON
    (with ``headers``, e.g. ``WWW-Authenticate`` or ``Retry-After``)."""

    def __init__(
        self, status: int, error: str, detail: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = dict(headers or {})

    def response(self) -> JSONResponse:
        """This problem as its JSON answer."""
        return error_response(self.status, self.error, self.detail, self.headers)


def problem_of(exc: Exception) -> ProblemError | None:
    """The HTTP meaning of a known error; ``None`` for a bug (left to the catch-all: 500)."""
    if isinstance(exc, ProblemError):
        return exc
    if isinstance(exc, QueryNotFoundError):
        return ProblemError(404, "query_not_found", str(exc))
    if isinstance(exc, PgStatStatementsUnavailableError):
        return ProblemError(503, "pg_stat_statements_unavailable", str(exc))
    if isinstance(exc, psycopg.errors.QueryCanceled):  # statement_timeout, or no answer at all
        return ProblemError(504, "database_timeout", f"the database did not answer in time: {exc}")
    if isinstance(exc, psycopg.OperationalError):  # includes PoolTimeout and PoolClosed
        return ProblemError(503, "database_unavailable", f"the database did not answer: {exc}")
    if isinstance(exc, MLServiceUnavailable):  # includes CircuitOpenError
        return ProblemError(503, "ml_service_unavailable", str(exc))
    if isinstance(exc, MLServiceError):
        return ProblemError(502, "ml_service_error", str(exc))
    return None


def problem_response(exc: Exception) -> Response:
    """The JSON answer of a known error; ``exc`` raised again for a bug (left to the
    catch-all: 500)."""
    problem = problem_of(exc)
    if problem is None:
        raise exc
    return problem.response()


Handler = Callable[[Request], Awaitable[Response]]


def json_endpoint(handler: Handler) -> Handler:
    """Map the known errors of ``handler`` to JSON answers (without needing app handlers)."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except Exception as exc:
            return problem_response(exc)

    endpoint.__name__ = handler.__name__
    endpoint.__doc__ = handler.__doc__
    return endpoint


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 (no such route, wrong method) as JSON."""
    assert isinstance(exc, HTTPException)
    names = {404: "not_found", 405: "method_not_allowed"}
    return error_response(
        exc.status_code, names.get(exc.status_code, "http_error"), exc.detail, exc.headers
    )
