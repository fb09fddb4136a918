"""Shared fixtures for the pgcache test suite.

* ``clock``: a fresh :class:`pgcache.ManualClock` starting at 0.0.
* ``make_cache``: builds caches (by default on the ``clock`` fixture and with a
  cleanup interval of one hour, so the shared background expiry thread never
  interferes with deterministic tests) and closes every one of them at teardown.
* ``wait_until``: polls a predicate until it holds or a deadline passes (for
  behaviour of the background thread; tests never assert on elapsed time).
* ``postgres_server`` / ``postgres_url`` / ``restart_postgres``: PostgreSQL with
  pg_stat_statements (see the section at the end and tests/pg_server.py);
  ``pg_workload``: queries run on it, with their queryids; ``pg_pool``: a pool on it.
"""

from __future__ import annotations

import atexit
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from pg_server import PgServer, PostgresUnavailableError, Workload, database, run_workload
from pgcache import Cache, ManualClock
from pgcache.db import PoolSettings, make_pool

WaitUntil = Callable[..., bool]
MakeCache = Callable[..., "Cache[Any, Any]"]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def make_cache(clock: ManualClock) -> Iterator[MakeCache]:
    created: list[Cache[Any, Any]] = []

    def make(**kwargs: Any) -> Cache[Any, Any]:
        kwargs.setdefault("clock", clock)
        kwargs.setdefault("cleanup_interval", 3600.0)
        cache: Cache[Any, Any] = Cache(**kwargs)
        created.append(cache)
        return cache

    yield make
    for cache in created:
        cache.close()


def _wait_until(
    predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.005
) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return predicate()
        time.sleep(interval)


@pytest.fixture
def wait_until() -> WaitUntil:
    return _wait_until


# --- PostgreSQL (pg_stat_statements) for the feature extraction and pool tests -----------------
# ``postgres_url``: DATABASE_URL when set (pg_stat_statements checked), else a private server
# from tests/pg_server.py, started once per session and removed at the end (also on failure).
# ``restart_postgres``: restarts that private server (skips when DATABASE_URL points elsewhere:
# an external server is not ours to restart).

RestartPostgres = Callable[[], None]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PgServer | None]:
    try:
        with database(os.environ.get("DATABASE_URL")) as (_, server):
            if server is not None:
                atexit.register(server.stop)  # idempotent; covers an aborted session
            yield server
    except PostgresUnavailableError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PgServer | None) -> str:
    if postgres_server is None:
        return os.environ["DATABASE_URL"]
    return postgres_server.url


@pytest.fixture
def restart_postgres(postgres_server: PgServer | None) -> RestartPostgres:
    if postgres_server is None:
        pytest.skip("DATABASE_URL points to an external server, which the tests do not restart")
    return postgres_server.restart


@pytest.fixture(scope="session")
def pg_workload(postgres_url: str) -> Workload:
    """A few dozen distinct queries, each run a few times, with their queryids."""
    return run_workload(postgres_url)


@pytest.fixture(scope="session")
def pg_pool(postgres_url: str) -> Iterator[ConnectionPool[psycopg.Connection[Any]]]:
    """A small session-wide pool (built by pgcache.db.make_pool) on the test server."""
    pool = make_pool(PoolSettings(conninfo=postgres_url, min_size=1, max_size=8))
    try:
        yield pool
    finally:
        pool.close()
