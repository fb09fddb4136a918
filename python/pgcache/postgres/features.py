"""Features of queries from pg_stat_statements: the model, the extractor protocols, the readers."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar, runtime_checkable

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from pgcache._pydantic import plain_attribute_reads
from pgcache._validate import (
    INT64_MAX,
    INT64_MIN,
    check_optional_seconds,
    check_query_hash,
    check_query_hashes,
    check_scenario,
)
from pgcache.errors import PgStatStatementsUnavailableError, QueryNotFoundError

if TYPE_CHECKING:
    pass

_T = TypeVar("_T")


class QueryFeatures(BaseModel):
    """The statistics of one query over the ``pg_stat_statements`` window, and derived features.

    ``query_hash`` is the ``queryid``: a signed 64-bit integer (negative ids are valid). Times
    are in milliseconds. When the same ``queryid`` appears for several users or databases, the
    rows are combined (sums, weighted means, min of mins, max of maxes, pooled deviation).
    ``collected_at`` must carry a time zone (the extractors use UTC).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    query_hash: int = Field(ge=INT64_MIN, le=INT64_MAX)
    scenario: str
    calls: int = Field(ge=0)
    total_exec_time_ms: float = Field(ge=0)
    mean_exec_time_ms: float = Field(ge=0)
    min_exec_time_ms: float = Field(ge=0)
    max_exec_time_ms: float = Field(ge=0)
    stddev_exec_time_ms: float = Field(ge=0)
    rows: int = Field(ge=0)
    rows_per_call: float = Field(ge=0)
    shared_blks_hit: int = Field(ge=0)
    shared_blks_read: int = Field(ge=0)
    shared_blks_dirtied: int = Field(ge=0)
    shared_blks_written: int = Field(ge=0)
    local_blks_read: int = Field(ge=0)
    local_blks_written: int = Field(ge=0)
    temp_blks_read: int = Field(ge=0)
    temp_blks_written: int = Field(ge=0)
    shared_buffer_hit_ratio: float = Field(ge=0, le=1)
    blk_read_time_ms: float = Field(ge=0)
    blk_write_time_ms: float = Field(ge=0)
    wal_bytes: int | None = Field(default=None, ge=0)
    stats_window_seconds: float = Field(ge=0)
    calls_per_minute: float = Field(ge=0)
    execution_complexity: float = Field(ge=0, le=1)
    volume_impact: float = Field(ge=0)
    collected_at: AwareDatetime


plain_attribute_reads(QueryFeatures)  # a cached hit reads its scenario: read it specialised

_ENABLE_HINT = (
    "enable it: add pg_stat_statements to shared_preload_libraries in postgresql.conf "
    "(e.g. shared_preload_libraries = 'pg_stat_statements'), restart PostgreSQL, then run "
    "CREATE EXTENSION pg_stat_statements; in this database "
    "(after a major upgrade: ALTER EXTENSION pg_stat_statements UPDATE;)"
)


@runtime_checkable
class FeatureExtractor(Protocol):
    """Extracts :class:`QueryFeatures` by query hash (``pg_stat_statements.queryid``)."""

    def extract_query_features(self, query_hash: int, scenario: str) -> QueryFeatures:
        """The features of one query; :class:`QueryNotFoundError` when it is unknown."""
        ...

    def extract_batch_query_features(
        self, hashes: Iterable[int], scenario: str
    ) -> dict[int, QueryFeatures]:
        """The features of every known query among ``hashes`` (unknown ones are left out)."""
        ...


@runtime_checkable
class AsyncFeatureExtractor(Protocol):
    """The asyncio twin of :class:`FeatureExtractor`."""

    async def extract_query_features(self, query_hash: int, scenario: str) -> QueryFeatures:
        """The features of one query; :class:`QueryNotFoundError` when it is unknown."""
        ...

    async def extract_batch_query_features(
        self, hashes: Iterable[int], scenario: str
    ) -> dict[int, QueryFeatures]:
        """The features of every known query among ``hashes`` (unknown ones are left out)."""
        ...


# --- reading pg_stat_statements ------------------------------------------------------------

# The marker comment lets an operator (and the tests) find the extractor's own statement in
# pg_stat_statements; comments do not change the queryid.
_SQL_MARKER = "/* pgcache.features */"

_MIN_SERVER_VERSION = 130000


def _statement_sql(server_version: int) -> str:
    """The one statement that reads the entries of many queryids, for this server version."""
    if server_version < _MIN_SERVER_VERSION:
        raise PgStatStatementsUnavailableError(
            f"PostgreSQL server_version_num={server_version} is not supported: "
            "pgcache reads pg_stat_statements of PostgreSQL 13 or newer"
        )
    if server_version >= 170000:
        # PostgreSQL 17 renamed the block I/O timings and added a per-entry stats_since.
        io_times = "shared_blk_read_time, shared_blk_write_time"
        window_start = "stats_since"
    elif server_version >= 140000:
        io_times = "blk_read_time, blk_write_time"
        window_start = "(SELECT stats_reset FROM pg_stat_statements_info)"
    else:
        io_times = "blk_read_time, blk_write_time"
        window_start = "pg_postmaster_start_time()"
    # pg_stat_statements(false): the view's query texts are never needed, and reading them
    # means reading a file on the server.
    return (
        f"{_SQL_MARKER} SELECT queryid, calls, total_exec_time, min_exec_time, max_exec_time, "
        "mean_exec_time, stddev_exec_time, rows, shared_blks_hit, shared_blks_read, "
        "shared_blks_dirtied, shared_blks_written, local_blks_read, local_blks_written, "
        f"temp_blks_read, temp_blks_written, {io_times}, wal_bytes, "
        f"{window_start} AS window_start, clock_timestamp() AS read_at "
        "FROM pg_stat_statements(false) WHERE queryid = ANY(%s::bigint[])"
    )


# One row of the statement above, in column order.
_Row = tuple[Any, ...]


def _unavailable(exc: psycopg.Error) -> PgStatStatementsUnavailableError:
    return PgStatStatementsUnavailableError(
        f"pg_stat_statements is not usable ({exc}); " + _ENABLE_HINT
    )


_UNAVAILABLE_ERRORS: tuple[type[psycopg.Error], ...] = (
    psycopg.errors.UndefinedFunction,
    psycopg.errors.UndefinedTable,
    psycopg.errors.ObjectNotInPrerequisiteState,
)


def _combine(
    query_hash: int, scenario: str, rows: list[_Row], collected_at: datetime
) -> QueryFeatures:
    """Combine the entries of one queryid (one per user, database and top-level flag).

    Counts and times add up; the mean is weighted by calls; the deviation is the exact
    population deviation of the union (Chan et al.'s parallel formula on each entry's calls,
    mean and population deviation, which is what pg_stat_statements reports).
    """
    calls = sum(int(row[1]) for row in rows)
    total_time = sum(float(row[2]) for row in rows)
    executed = [row for row in rows if int(row[1]) > 0]
    mean = total_time / calls if calls else 0.0
    if executed:
        min_time = min(float(row[3]) for row in executed)
        max_time = max(float(row[4]) for row in executed)
        sum_squares = sum(
            int(row[1]) * (float(row[6]) ** 2 + (float(row[5]) - mean) ** 2) for row in executed
        )
        stddev = math.sqrt(max(sum_squares / calls, 0.0))
    else:
        min_time = max_time = stddev = 0.0
    rows_returned = sum(int(row[7]) for row in rows)
    blocks = [sum(int(row[column]) for row in rows) for column in range(8, 16)]
    shared_hit, shared_read = blocks[0], blocks[1]
    touched = shared_hit + shared_read
    wal = [row[18] for row in rows if row[18] is not None]
    window_starts = [row[19] for row in rows if row[19] is not None]
    read_at: datetime = rows[0][20]
    window_seconds = (
        max((read_at - min(window_starts)).total_seconds(), 0.0) if window_starts else 0.0
    )
    calls_per_minute = calls / (window_seconds / 60.0) if window_seconds > 0 else 0.0
    return QueryFeatures(
        query_hash=query_hash,
        scenario=scenario,
        calls=calls,
        total_exec_time_ms=total_time,
        mean_exec_time_ms=mean,
        min_exec_time_ms=min_time,
        max_exec_time_ms=max_time,
        stddev_exec_time_ms=stddev,
        rows=rows_returned,
        rows_per_call=rows_returned / calls if calls else 0.0,
        shared_blks_hit=blocks[0],
        shared_blks_read=blocks[1],
        shared_blks_dirtied=blocks[2],
        shared_blks_written=blocks[3],
        local_blks_read=blocks[4],
        local_blks_written=blocks[5],
        temp_blks_read=blocks[6],
        temp_blks_written=blocks[7],
        # Nothing touched means nothing missed.
        shared_buffer_hit_ratio=shared_hit / touched if touched else 1.0,
        blk_read_time_ms=sum(float(row[16]) for row in rows),
        blk_write_time_ms=sum(float(row[17]) for row in rows),
        wal_bytes=sum(int(value) for value in wal) if wal else None,
        stats_window_seconds=window_seconds,
        calls_per_minute=calls_per_minute,
        execution_complexity=min(stddev / mean, 1.0) if mean > 0 else 0.0,
        volume_impact=mean * calls_per_minute,
        collected_at=collected_at,
    )


def _features_by_hash(rows: list[_Row], scenario: str) -> dict[int, QueryFeatures]:
    grouped: dict[int, list[_Row]] = {}
    for row in rows:
        grouped.setdefault(int(row[0]), []).append(row)
    collected_at = datetime.now(UTC)
    return {
        query_hash: _combine(query_hash, scenario, entries, collected_at)
        for query_hash, entries in grouped.items()
    }


# The timeout is set for the feature query's own transaction only (SET LOCAL), so a pool shared
# with other code keeps its sessions' settings.
_SET_STATEMENT_TIMEOUT: Final = "SELECT set_config('statement_timeout', %s, true)"
# Tasks abandoned at their deadline, kept referenced until their cleanup ends.
_ABANDONED: set[asyncio.Task[Any]] = set()


def _timeout_ms(statement_timeout: float) -> str:
    return str(max(1, math.ceil(statement_timeout * 1000)))


def _forget(task: asyncio.Task[Any]) -> None:
    _ABANDONED.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: an abandoned read's failure is not news


async def _within(awaitable: Awaitable[_T], seconds: float, statement_timeout: float) -> _T:
    """``awaitable``'s result, or :class:`psycopg.errors.QueryCanceled` after ``seconds``.

    At the deadline the read is cancelled and left to finish its cleanup in the background
    (psycopg then tries to cancel the query on the server, which can take seconds when the
    server does not answer at all); the caller does not wait for it.
    """
    task = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
    except BaseException:
        task.cancel()
        raise
    if task in done:
        return task.result()
    task.cancel()
    _ABANDONED.add(task)
    task.add_done_callback(_forget)
    raise psycopg.errors.QueryCanceled(
        f"the feature query did not finish within {seconds:.3g} s (waiting for a connection "
        f"included; statement_timeout {statement_timeout:.3g} s): the database does not answer"
    )


class PgStatStatementsExtractor:
    """Reads :class:`QueryFeatures` from ``pg_stat_statements`` through a psycopg pool.

    One query per call, single or batch. ``statement_timeout`` (seconds or a ``timedelta``;
    ``None``: the server's own setting) bounds that query on the server: it runs in a
    transaction of its own with ``SET LOCAL statement_timeout``, and a query cancelled by it
    raises :class:`psycopg.errors.QueryCanceled`. The column names follow the server's version
    (PostgreSQL 13 to 17), read from the connection (no extra query). Entries of one queryid
    for several users or databases are combined (see :class:`QueryFeatures`). The stats window
    starts at the entry's ``stats_since`` (PostgreSQL 17), the last
    ``pg_stat_statements_reset()`` (14 to 16) or the server start (13).
    """

    def __init__(
        self, pool: ConnectionPool[Any], *, statement_timeout: float | timedelta | None = None
    ) -> None:
        self.pool = pool
        self.statement_timeout = check_optional_seconds("statement_timeout", statement_timeout)

    def _read(self, hashes: list[int]) -> list[_Row]:
        try:
            with self.pool.connection() as conn:
                sql = _statement_sql(conn.info.server_version)
                if self.statement_timeout is None:
                    rows: list[_Row] = conn.execute(sql, (hashes,)).fetchall()
                    return rows
                with conn.transaction():
                    conn.execute(_SET_STATEMENT_TIMEOUT, (_timeout_ms(self.statement_timeout),))
                    rows = conn.execute(sql, (hashes,)).fetchall()
                return rows
        except _UNAVAILABLE_ERRORS as exc:
            raise _unavailable(exc) from exc

    def extract_query_features(self, query_hash: int, scenario: str) -> QueryFeatures:
        """The features of one query; :class:`QueryNotFoundError` when it is unknown."""
        query_hash = check_query_hash(query_hash)
        features = _features_by_hash(self._read([query_hash]), check_scenario(scenario))
        if query_hash not in features:
            raise QueryNotFoundError(query_hash)
        return features[query_hash]

    def extract_batch_query_features(
        self, hashes: Iterable[int], scenario: str
    ) -> dict[int, QueryFeatures]:
        """The features of every known query among ``hashes``, in one round trip.

        Unknown hashes are left out of the result; duplicates count once.
        """
        unique = check_query_hashes(hashes)
        scenario = check_scenario(scenario)
        if not unique:
            return {}
        return _features_by_hash(self._read(unique), scenario)


class AsyncPgStatStatementsExtractor:
    """The asyncio twin of :class:`PgStatStatementsExtractor`, on an ``AsyncConnectionPool``.

    With a ``statement_timeout`` the whole read is also bounded on this side, for a server that
    cannot enforce anything (stopped, or unreachable without a reset): after the pool's
    ``timeout`` plus ``statement_timeout`` the caller gets :class:`psycopg.errors.QueryCanceled`
    and the read is abandoned (its connection is cleaned up in the background).
    """

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        *,
        statement_timeout: float | timedelta | None = None,
    ) -> None:
        self.pool = pool
        self.statement_timeout = check_optional_seconds("statement_timeout", statement_timeout)

    async def _query(self, hashes: list[int], statement_timeout: float | None) -> list[_Row]:
        async with self.pool.connection() as conn:
            sql = _statement_sql(conn.info.server_version)
            if statement_timeout is None:
                cursor = await conn.execute(sql, (hashes,))
                rows: list[_Row] = await cursor.fetchall()
                return rows
            async with conn.transaction():
                await conn.execute(_SET_STATEMENT_TIMEOUT, (_timeout_ms(statement_timeout),))
                cursor = await conn.execute(sql, (hashes,))
                rows = await cursor.fetchall()
            return rows

    async def _read(self, hashes: list[int]) -> list[_Row]:
        statement_timeout = self.statement_timeout
        try:
            if statement_timeout is None:
                return await self._query(hashes, None)
            bound = self.pool.timeout + statement_timeout
            return await _within(self._query(hashes, statement_timeout), bound, statement_timeout)
        except _UNAVAILABLE_ERRORS as exc:
            raise _unavailable(exc) from exc

    async def extract_query_features(self, query_hash: int, scenario: str) -> QueryFeatures:
        """The features of one query; :class:`QueryNotFoundError` when it is unknown."""
        query_hash = check_query_hash(query_hash)
        scenario = check_scenario(scenario)
        features = _features_by_hash(await self._read([query_hash]), scenario)
        if query_hash not in features:
            raise QueryNotFoundError(query_hash)
        return features[query_hash]

    async def extract_batch_query_features(
        self, hashes: Iterable[int], scenario: str
    ) -> dict[int, QueryFeatures]:
        """The features of every known query among ``hashes``, in one round trip."""
        unique = check_query_hashes(hashes)
        scenario = check_scenario(scenario)
        if not unique:
            return {}
        return _features_by_hash(await self._read(unique), scenario)
