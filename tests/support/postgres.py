"""PostgreSQL for the tests and the benchmarks (a pytest plugin, loaded by tests/conftest.py).

``postgres_server`` / ``postgres_url`` / ``restart_postgres``: PostgreSQL with
pg_stat_statements; ``pg_workload``: queries run on it, with their queryids; ``pg_pool``: a pool
on it.

The server and workload live in :mod:`pgcache.postgres.devserver` and
:mod:`pgcache.postgres.workload` (``pgcache demo`` uses them too); this module re-exports them
under the names the tests and benches import, and adds the few helpers only tests need
(:func:`stat_rows`, :func:`unknown_queryid`). Nothing here is skipped: missing server binaries
raise :class:`PostgresUnavailableError` saying which package to install.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from pgcache.errors import PostgresUnavailableError
from pgcache.postgres.devserver import PgServer, database, find_bindir, prepare_external
from pgcache.postgres.pools import PoolSettings, make_pool
from pgcache.postgres.workload import (
    SECOND_ROLE,
    WORKLOAD_SCHEMA,
    Workload,
    extractor_statement_calls,
    queryid_of,
    run_workload,
)

__all__ = [
    "SECOND_ROLE",
    "WORKLOAD_SCHEMA",
    "PgServer",
    "PostgresUnavailableError",
    "Workload",
    "database",
    "extractor_statement_calls",
    "find_bindir",
    "prepare_external",
    "queryid_of",
    "run_workload",
    "stat_rows",
    "unknown_queryid",
]


def stat_rows(url: str, queryid: int) -> list[dict[str, Any]]:
    """The raw pg_stat_statements entries of one queryid (for checking the extractor)."""
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        return conn.execute(
            "SELECT * FROM pg_stat_statements WHERE queryid = %s", (queryid,)
        ).fetchall()


def unknown_queryid(workload: Workload, sign: int) -> int:
    """A queryid of the given sign that no workload statement has (not a real hash)."""
    candidate = sign * (2**62 + 12345)
    assert candidate not in workload.queryids.values()
    return candidate


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
