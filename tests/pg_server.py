"""The private PostgreSQL and the workload for the test suite and the benchmarks.

Everything lives in :mod:`pgcache.devdb` (``pgcache demo`` uses it too); this module re-exports
it under the names the tests and benches import, and adds the few helpers only tests need
(:func:`stat_rows`, :func:`unknown_queryid`). Nothing here is skipped: missing server binaries
raise :class:`PostgresUnavailableError` saying which package to install.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from pgcache.devdb import (
    SECOND_ROLE,
    WORKLOAD_SCHEMA,
    PgServer,
    PostgresUnavailableError,
    Workload,
    database,
    extractor_statement_calls,
    find_bindir,
    prepare_external,
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
