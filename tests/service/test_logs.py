"""The services' log lines (pgcache.service.logs): text and JSON formats with the request id,
psycopg_pool's reconnection warnings folded into one line per outage state change (against a
real PostgreSQL that is stopped and started again), and a client that goes away mid-request
logged without a traceback (against the real service)."""

from __future__ import annotations

import io
import json
import logging
import re
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from tests.support.caches import WaitUntil
from tests.support.postgres import PgServer

from pgcache.config import Settings
from pgcache.service.app import serve_in_thread
from pgcache.service.logs import (
    LOG_LEVELS,
    POOL_LOGGER,
    ClientDisconnectFilter,
    JsonFormatter,
    PoolOutageFilter,
    TextFormatter,
    logging_config,
)
from pgcache.service.request_ids import REQUEST_ID, RequestIdLogFilter

_TEXT_LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (?P<level>[A-Z]+) (?P<logger>\S+) "
    r"\[(?P<request_id>[^\]]+)\] (?P<message>.*)$"
)


def _record(
    message: str,
    *args: Any,
    name: str = "pgcache.service",
    level: int = logging.INFO,
    exc_info: Any = None,
) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, args, exc_info)


def _request_id_record(request_id: str | None, message: str = "hello") -> logging.LogRecord:
    record = _record(message)
    token = REQUEST_ID.set(request_id)
    try:
        RequestIdLogFilter().filter(record)
    finally:
        REQUEST_ID.reset(token)
    return record


@contextmanager
def _captured(logger_name: str, level: int, *filters: logging.Filter) -> Iterator[io.StringIO]:
    """The text lines of ``logger_name`` at ``level``, through a handler with ``filters``."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter())
    for log_filter in (RequestIdLogFilter(), *filters):
        handler.addFilter(log_filter)
    logger = logging.getLogger(logger_name)
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def _lines(stream: io.StringIO, containing: str = "") -> list[str]:
    return [line for line in stream.getvalue().splitlines() if containing in line]


# --- formats ------------------------------------------------------------------------------------


def test_text_line_has_time_level_logger_request_id_and_message() -> None:
    line = TextFormatter().format(_request_id_record("req-42", "GET /healthz -> 200"))
    match = _TEXT_LINE.match(line)
    assert match is not None, line
    assert match.group("level", "logger", "request_id", "message") == (
        "INFO",
        "pgcache.service",
        "req-42",
        "GET /healthz -> 200",
    )


def test_text_line_outside_a_request_shows_a_dash() -> None:
    match = _TEXT_LINE.match(TextFormatter().format(_request_id_record(None)))
    assert match is not None
    assert match["request_id"] == "-"


def test_text_line_without_the_request_id_filter_still_formats() -> None:
    match = _TEXT_LINE.match(TextFormatter().format(_record("no filter")))
    assert match is not None
    assert match["request_id"] == "-"


def test_text_message_with_line_breaks_stays_on_one_line() -> None:
    line = TextFormatter().format(_record("GET /a\nFAKE 2026 CRITICAL forged\r"))
    assert "\n" not in line
    assert "\r" not in line
    assert line.endswith("GET /a\\nFAKE 2026 CRITICAL forged\\r")


def test_json_line_is_one_object_with_the_request_id() -> None:
    line = JsonFormatter().format(_request_id_record("req-7", "line one\nline two"))
    assert "\n" not in line
    entry = json.loads(line)
    assert set(entry) == {"time", "level", "logger", "request_id", "message"}
    assert entry["request_id"] == "req-7"
    assert entry["level"] == "INFO"
    assert entry["logger"] == "pgcache.service"
    assert entry["message"] == "line one\nline two"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"])


def test_json_request_id_is_null_outside_a_request() -> None:
    assert json.loads(JsonFormatter().format(_request_id_record(None)))["request_id"] is None


def test_json_line_carries_the_traceback_as_text() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = _record("failed", level=logging.ERROR, exc_info=sys.exc_info())
    entry = json.loads(JsonFormatter().format(record))
    assert entry["exc_info"].startswith("Traceback")
    assert "ValueError: boom" in entry["exc_info"]


def test_config_rejects_an_unknown_level_or_format() -> None:
    with pytest.raises(ValueError, match="verbose"):
        logging_config("verbose")
    with pytest.raises(ValueError, match="xml"):
        logging_config("info", "xml")


@pytest.mark.parametrize("level", list(LOG_LEVELS))
def test_config_puts_uvicorn_and_pgcache_at_the_level_and_psycopg_pool_at_warning_or_below(
    level: str,
) -> None:
    loggers = logging_config(level)["loggers"]
    chosen = LOG_LEVELS[level]
    assert loggers["uvicorn"]["level"] == loggers["pgcache"]["level"] == chosen
    pool = loggers[POOL_LOGGER]["level"]
    assert pool == (chosen if chosen <= logging.DEBUG else max(chosen, logging.WARNING))


# --- psycopg_pool outages: the filter's states ----------------------------------------------------


def _pool_failure(attempt: int) -> logging.LogRecord:
    error = f"connection refused (attempt {attempt})"
    return _record(
        "error connecting in %r: %s", "pgcache", error, name=POOL_LOGGER, level=logging.WARNING
    )


def _pool_connected() -> logging.LogRecord:
    return _record("adding new connection to the pool", name=POOL_LOGGER)


@pytest.fixture
def outage_filter() -> Iterator[PoolOutageFilter]:
    logger = logging.getLogger(POOL_LOGGER)
    previous = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield PoolOutageFilter(logging.WARNING)
    finally:
        logger.setLevel(previous)


def test_first_failed_connection_passes_as_one_warning_naming_the_pool(
    outage_filter: PoolOutageFilter,
) -> None:
    record = _pool_failure(1)
    assert outage_filter.filter(record)
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith("pool 'pgcache' cannot connect to the database")
    assert "attempt 1" in record.getMessage()


def test_later_failed_connections_are_dropped(outage_filter: PoolOutageFilter) -> None:
    assert outage_filter.filter(_pool_failure(1))
    assert not any(outage_filter.filter(_pool_failure(n)) for n in range(2, 50))
    given_up = _record(
        "reconnection attempt in pool %r failed after %s sec",
        "pgcache",
        300.0,
        name=POOL_LOGGER,
        level=logging.WARNING,
    )
    assert not outage_filter.filter(given_up)


def test_a_new_connection_after_failures_is_one_info_line_with_the_count(
    outage_filter: PoolOutageFilter,
) -> None:
    for attempt in range(1, 6):
        outage_filter.filter(_pool_failure(attempt))
    record = _pool_connected()
    assert outage_filter.filter(record)
    assert record.levelno == logging.INFO
    assert re.match(
        r"pool 'pgcache' connected to the database again after 5 failed attempts in \d+\.\d s",
        record.getMessage(),
    )
    assert not outage_filter.outage


def test_a_new_connection_without_an_outage_is_routine_and_dropped(
    outage_filter: PoolOutageFilter,
) -> None:
    assert not outage_filter.filter(_pool_connected())


def test_while_down_the_pool_logger_listens_at_info_and_drops_routine_lines(
    outage_filter: PoolOutageFilter,
) -> None:
    logger = logging.getLogger(POOL_LOGGER)
    outage_filter.filter(_pool_failure(1))
    assert logger.level == logging.INFO
    assert not outage_filter.filter(
        _record("connection requested from %r", "pgcache", name=POOL_LOGGER)
    )
    outage_filter.filter(_pool_connected())
    assert logger.level == logging.WARNING


def test_a_second_outage_is_one_more_warning(outage_filter: PoolOutageFilter) -> None:
    assert outage_filter.filter(_pool_failure(1))
    assert outage_filter.filter(_pool_connected())
    assert outage_filter.filter(_pool_failure(2))
    assert not outage_filter.filter(_pool_failure(3))


def test_other_loggers_pass_untouched(outage_filter: PoolOutageFilter) -> None:
    record = _record("error connecting in %r: %s", "x", "y", name="someone.else")
    assert outage_filter.filter(record)
    assert record.msg == "error connecting in %r: %s"


# --- psycopg_pool outages: a real PostgreSQL stopped, then started -------------------------------


@pytest.fixture
def stopped_postgres() -> Iterator[PgServer]:
    """A private PostgreSQL, initialised, then stopped (start() brings it back)."""
    server = PgServer(preload=False)
    try:
        server.start()
        server.stop_server()
        yield server
    finally:
        server.stop()


def test_an_outage_of_the_database_is_two_lines_whatever_the_retries(
    stopped_postgres: PgServer, outage_filter: PoolOutageFilter, wait_until: WaitUntil
) -> None:
    settings = Settings.load(
        database_url=stopped_postgres.url, max_idle_database_conns=2, max_database_conns=4
    )
    with (
        _captured(POOL_LOGGER, logging.WARNING, outage_filter) as log,
        serve_in_thread(settings) as service,
    ):
        pool = service.state.pool
        assert pool is not None

        def failed_attempts() -> int:
            return int(pool.get_stats().get("connections_errors", 0))

        # Several retries of each of the two connections the pool keeps.
        assert wait_until(lambda: failed_attempts() >= 6, timeout=60), failed_attempts()
        assert len(_lines(log, "cannot connect to the database")) == 1, log.getvalue()

        stopped_postgres.start()
        assert wait_until(lambda: bool(_lines(log, "again")), timeout=60), log.getvalue()
        lines = _lines(log)
    assert len(lines) == 2, lines
    down, up = (_TEXT_LINE.match(line) for line in lines)
    assert down is not None
    assert up is not None
    assert down["level"] == "WARNING"
    assert down["message"].startswith("pool 'pgcache' cannot connect to the database")
    assert up["level"] == "INFO"
    assert re.match(
        r"pool 'pgcache' connected to the database again after \d+ failed", up["message"]
    )
    assert int(up["message"].split(" after ")[1].split()[0]) >= 6


# --- a client that goes away --------------------------------------------------------------------


def test_a_client_gone_mid_request_is_one_info_line_without_a_traceback(
    wait_until: WaitUntil,
) -> None:
    settings = Settings.load(database_url=None)
    with (
        _captured("pgcache.service", logging.INFO, ClientDisconnectFilter()) as log,
        serve_in_thread(settings) as service,
    ):
        host, port = service.url.removeprefix("http://").rsplit(":", 1)
        with socket.create_connection((host, int(port))) as client:
            client.sendall(
                b"POST /api/v1/queries/1/predict HTTP/1.1\r\nHost: pgcache\r\n"
                b"X-Request-ID: cut-off\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100\r\n\r\n{"
            )
        assert wait_until(lambda: bool(_lines(log, "the client disconnected")), timeout=30)
    disconnected = _lines(log, "the client disconnected")
    assert len(disconnected) == 1
    match = _TEXT_LINE.match(disconnected[0])
    assert match is not None
    assert match["level"] == "INFO"
    assert match["request_id"] == "cut-off"
    assert "Traceback" not in log.getvalue()
    assert "ClientDisconnect" not in log.getvalue()
