"""The log lines of the pgcache services: one line per record with its time, level, logger and
request id, as text or as JSON, on standard error.

:func:`logging_config` builds a :func:`logging.config.dictConfig` dictionary (what uvicorn's
``log_config`` takes, so that every worker process applies it too); :func:`configure_logging`
applies it in this process. Two filters keep the log readable: :class:`PoolOutageFilter` turns
psycopg_pool's warning per failed reconnection attempt into one line when the database goes away
and one when it is back, and :class:`ClientDisconnectFilter` logs a request whose client went
away in one line, without a traceback. Nothing here writes files, rotates or ships logs.
"""

from __future__ import annotations

import json
import logging
import logging.config
import threading
import time
from typing import Any, Final

from starlette.requests import ClientDisconnect

from pgcache.service.request_ids import RequestIdLogFilter

LOG_LEVELS: Final[dict[str, int]] = {
    "critical": logging.CRITICAL,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": 5,  # uvicorn's TRACE
}
LOG_FORMATS: Final = ("text", "json")
POOL_LOGGER: Final = "psycopg.pool"

# psycopg_pool's messages (pool_async.py and pool.py): a failed attempt, a slot given up after
# reconnect_timeout, and a new connection (which does not name its pool).
_CONNECT_FAILED: Final = frozenset(
    {
        "error connecting in %r: %s",
        "reconnection attempt in pool %r failed after %s sec",
    }
)
_CONNECTED: Final = "adding new connection to the pool"


def _timestamp(record: logging.LogRecord) -> str:
    """ISO 8601 in UTC with milliseconds: ``2026-05-10T12:00:00.123Z``."""
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


class TextFormatter(logging.Formatter):
    """``2026-05-10T12:00:00.123Z INFO pgcache.service [request id] message``; a traceback, if
    any, follows on its own lines. Line breaks inside the message are escaped (``\\n``), so a
    path or header from a client cannot forge a log line."""

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s",
            defaults={"request_id": "-"},
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return _timestamp(record)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802
        record.message = record.message.replace("\r", "\\r").replace("\n", "\\n")
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time``, ``level``, ``logger``, ``request_id`` (``null``
    outside a request), ``message``, and ``exc_info`` (the traceback text) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        request_id = getattr(record, "request_id", "-")
        entry: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "request_id": None if request_id == "-" else request_id,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class ClientDisconnectFilter(logging.Filter):
    """For a handler: an error whose exception is Starlette's ``ClientDisconnect`` (the client
    closed its connection before sending its whole request) is not a server error: it becomes
    one INFO line without a traceback, dropped when its logger does not log INFO."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info is None or not isinstance(record.exc_info[1], ClientDisconnect):
            return True
        record.msg = f"{record.getMessage()}: the client disconnected"
        record.args = None
        record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
        record.exc_info, record.exc_text = None, None
        return logging.getLogger(record.name).isEnabledFor(logging.INFO)


class PoolOutageFilter(logging.Filter):
    """For a handler, about the ``psycopg.pool`` logger's records: one WARNING when connecting
    starts to fail, one INFO line when a connection succeeds again, nothing for each retry.

    ``level`` is the level configured for the logger (WARNING unless debugging: psycopg_pool logs
    three INFO lines per borrowed connection). While connecting fails the filter lowers the
    logger to INFO, to see psycopg_pool's "adding new connection" record, and lets no other INFO
    record through; the outage is the process's, as that record does not name its pool.
    """

    def __init__(self, level: int = logging.WARNING) -> None:
        super().__init__()
        self._level = level
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._pool: object = None
        self._failures = 0

    @property
    def outage(self) -> bool:
        """Whether connecting has failed and not succeeded since."""
        return self._down_since is not None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != POOL_LOGGER:
            return True
        if record.msg in _CONNECT_FAILED:
            return self._failed(record)
        if record.msg == _CONNECTED:
            return self._connected(record)
        return record.levelno >= self._level

    def _failed(self, record: logging.LogRecord) -> bool:
        with self._lock:
            self._failures += 1
            if self._down_since is not None:
                return False
            self._down_since = time.monotonic()
            self._pool = record.args[0] if isinstance(record.args, tuple) else None
        logging.getLogger(POOL_LOGGER).setLevel(min(self._level, logging.INFO))
        if record.msg.startswith("error connecting"):
            record.msg = "pool %r cannot connect to the database (retrying until it can): %s"
        return True

    def _connected(self, record: logging.LogRecord) -> bool:
        with self._lock:
            if self._down_since is None:
                return record.levelno >= self._level
            seconds = time.monotonic() - self._down_since
            record.msg = (
                "pool %r connected to the database again after %d failed attempts in %.1f s"
            )
            record.args = (self._pool, self._failures, seconds)
            self._down_since, self._pool, self._failures = None, None, 0
        logging.getLogger(POOL_LOGGER).setLevel(self._level)
        return True


def logging_config(level: str = "info", log_format: str = "text") -> dict[str, Any]:
    """A ``dictConfig`` dictionary: one handler on standard error with the request-id filter and
    the ``log_format`` formatter; uvicorn's and pgcache's loggers at ``level``, every other
    logger (psycopg_pool's among them, with :class:`PoolOutageFilter`) at WARNING unless
    ``level`` is debug or trace, or above WARNING."""
    if level not in LOG_LEVELS:
        raise ValueError(f"level={level!r}: expected one of {', '.join(LOG_LEVELS)}")
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log_format={log_format!r}: expected one of {', '.join(LOG_FORMATS)}")
    chosen = LOG_LEVELS[level]
    others = chosen if chosen <= logging.DEBUG else max(chosen, logging.WARNING)
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "request_id": {"()": RequestIdLogFilter},
            "pool_outages": {"()": PoolOutageFilter, "level": others},
            "client_disconnects": {"()": ClientDisconnectFilter},
        },
        "formatters": {
            "text": {"()": TextFormatter},
            "json": {"()": JsonFormatter},
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": log_format,
                # On the handler, not on loggers: a second dictConfig replaces them.
                "filters": ["request_id", "client_disconnects", "pool_outages"],
            },
        },
        "loggers": {
            "uvicorn": {"level": chosen, "handlers": [], "propagate": True},
            "uvicorn.error": {"level": chosen, "handlers": [], "propagate": True},
            "uvicorn.access": {"level": chosen, "handlers": [], "propagate": True},
            "pgcache": {"level": chosen, "handlers": [], "propagate": True},
            POOL_LOGGER: {"level": others, "handlers": [], "propagate": True},
        },
        "root": {"level": others, "handlers": ["stderr"]},
    }


def configure_logging(level: str = "info", log_format: str = "text") -> None:
    """Apply :func:`logging_config` to this process."""
    logging.config.dictConfig(logging_config(level, log_format))
