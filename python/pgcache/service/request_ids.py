"""The id of the request being served: a context variable, its reader, and a log filter that
puts it on log records. No dependency beyond the standard library."""

from __future__ import annotations

import contextvars
import logging

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "pgcache_request_id", default=None
)


def current_request_id() -> str | None:
    """The ``X-Request-ID`` of the request being served in this context (``None`` outside one)."""
    return REQUEST_ID.get()


class RequestIdLogFilter(logging.Filter):
    """Sets ``record.request_id`` (``"-"`` outside a request) so formatters can show it.

    It is on the ``pgcache.service`` logger already; add it to your handlers
    (``handler.addFilter(RequestIdLogFilter())``) to get the id on every logger's records.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get() or "-"
        return True
