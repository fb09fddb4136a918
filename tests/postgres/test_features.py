"""The pg_stat_statements extractors and QueryFeatures, against a real PostgreSQL.

The workload (tests/pg_server.py) runs a few dozen distinct queries; the extractors must report
what pg_stat_statements holds for them, in one round trip per call.
"""

from __future__ import annotations

import statistics
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from hypothesis import given, strategies as st
from psycopg_pool import AsyncConnectionPool, ConnectionPool
from pydantic import ValidationError
from tests.support.factories import make_features
from tests.support.postgres import (
    PgServer,
    Workload,
    extractor_statement_calls,
    stat_rows,
    unknown_queryid,
)

from pgcache import (
    AsyncFeatureExtractor,
    AsyncPgStatStatementsExtractor,
    FeatureExtractor,
    PgCacheError,
    PgStatStatementsExtractor,
    PgStatStatementsUnavailableError,
    QueryFeatures,
    QueryNotFoundError,
)
from pgcache.postgres.features import _combine, _statement_sql
from pgcache.postgres.pools import PoolSettings, make_async_pool, make_pool

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


@pytest.fixture
def extractor(pg_pool: ConnectionPool[psycopg.Connection[Any]]) -> PgStatStatementsExtractor:
    return PgStatStatementsExtractor(pg_pool)


@pytest.fixture
async def async_pool(
    postgres_url: str,
) -> AsyncIterator[AsyncConnectionPool[psycopg.AsyncConnection[Any]]]:
    pool = await make_async_pool(PoolSettings(conninfo=postgres_url, min_size=1, max_size=4))
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
def async_extractor(
    async_pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]],
) -> AsyncPgStatStatementsExtractor:
    return AsyncPgStatStatementsExtractor(async_pool)


# --- what the extractor reports ------------------------------------------------------------


def test_extracted_counters_match_pg_stat_statements(
    extractor: PgStatStatementsExtractor, pg_workload: Workload, postgres_url: str
) -> None:
    queryid = pg_workload.queryids["by_customer"]
    features = extractor.extract_query_features(queryid, "current")
    (entry,) = stat_rows(postgres_url, queryid)
    assert features.query_hash == queryid
    assert features.scenario == "current"
    assert features.calls == entry["calls"] == pg_workload.runs_per_shape
    assert features.total_exec_time_ms == pytest.approx(entry["total_exec_time"])
    assert features.mean_exec_time_ms == pytest.approx(entry["mean_exec_time"])
    assert features.min_exec_time_ms == pytest.approx(entry["min_exec_time"])
    assert features.max_exec_time_ms == pytest.approx(entry["max_exec_time"])
    assert features.stddev_exec_time_ms == pytest.approx(entry["stddev_exec_time"])
    assert features.rows == entry["rows"]
    assert features.shared_blks_hit == entry["shared_blks_hit"]
    assert features.shared_blks_read == entry["shared_blks_read"]
    assert features.temp_blks_written == entry["temp_blks_written"]
    assert features.blk_read_time_ms == pytest.approx(entry["blk_read_time"])


def test_derived_features_follow_their_definitions(
    extractor: PgStatStatementsExtractor, pg_workload: Workload
) -> None:
    features = extractor.extract_query_features(pg_workload.queryids["top_orders"], "current")
    assert features.rows_per_call == pytest.approx(features.rows / features.calls)
    hits, reads = features.shared_blks_hit, features.shared_blks_read
    assert features.shared_buffer_hit_ratio == pytest.approx(hits / (hits + reads))
    assert features.stats_window_seconds > 0
    assert features.calls_per_minute == pytest.approx(
        features.calls / (features.stats_window_seconds / 60)
    )
    assert features.execution_complexity == pytest.approx(
        min(features.stddev_exec_time_ms / features.mean_exec_time_ms, 1.0)
    )
    assert features.volume_impact == pytest.approx(
        features.mean_exec_time_ms * features.calls_per_minute
    )


def test_collected_at_is_now_in_utc(
    extractor: PgStatStatementsExtractor, pg_workload: Workload
) -> None:
    before = datetime.now(UTC)
    features = extractor.extract_query_features(pg_workload.queryids["count_all"], "current")
    assert features.collected_at.utcoffset() == timedelta(0)
    assert before <= features.collected_at <= datetime.now(UTC)


def test_wal_bytes_are_reported_for_a_writing_query(
    extractor: PgStatStatementsExtractor, pg_workload: Workload
) -> None:
    features = extractor.extract_query_features(pg_workload.queryids["insert_order"], "current")
    assert features.wal_bytes is not None
    assert features.wal_bytes > 0


def test_entries_of_one_queryid_for_two_roles_are_combined(
    extractor: PgStatStatementsExtractor, pg_workload: Workload, postgres_url: str
) -> None:
    queryid = pg_workload.shared_queryid
    assert queryid is not None, "the workload could not run as a second role"
    entries = stat_rows(postgres_url, queryid)
    assert len({entry["userid"] for entry in entries}) == 2
    features = extractor.extract_query_features(queryid, "current")
    assert features.calls == sum(entry["calls"] for entry in entries)
    assert features.total_exec_time_ms == pytest.approx(
        sum(entry["total_exec_time"] for entry in entries)
    )
    assert features.mean_exec_time_ms == pytest.approx(features.total_exec_time_ms / features.calls)
    assert features.min_exec_time_ms == pytest.approx(min(e["min_exec_time"] for e in entries))
    assert features.max_exec_time_ms == pytest.approx(max(e["max_exec_time"] for e in entries))


def test_the_scenario_is_carried_into_the_features(
    extractor: PgStatStatementsExtractor, pg_workload: Workload
) -> None:
    features = extractor.extract_query_features(pg_workload.queryids["count_all"], "what-if")
    assert features.scenario == "what-if"


def test_the_extractors_satisfy_their_protocols(
    extractor: PgStatStatementsExtractor, async_extractor: AsyncPgStatStatementsExtractor
) -> None:
    assert isinstance(extractor, FeatureExtractor)
    assert isinstance(async_extractor, AsyncFeatureExtractor)


# --- batches -----------------------------------------------------------------------------


def test_a_batch_returns_every_known_query(
    extractor: PgStatStatementsExtractor, pg_workload: Workload
) -> None:
    hashes = list(pg_workload.queryids.values())
    batch = extractor.extract_batch_query_features(hashes, "current")
    assert set(batch) == set(hashes)
    assert all(batch[h].query_hash == h for h in hashes)


def test_a_batch_takes_one_round_trip(
    extractor: PgStatStatementsExtractor, pg_workload: Workload, postgres_url: str
) -> None:
    before = extractor_statement_calls(postgres_url)
    extractor.extract_batch_query_features(list(pg_workload.queryids.values()), "current")
    assert extractor_statement_calls(postgres_url) - before == 1


def test_a_batch_matches_single_extraction(
    extractor: PgStatStatementsExtractor, pg_workload: Workload
) -> None:
    queryid = pg_workload.queryids["sum_by_customer"]
    single = extractor.extract_query_features(queryid, "current")
    batch = extractor.extract_batch_query_features([queryid], "current")
    # Only the time-dependent fields (window, rates, collection time) may differ.
    moving = {"collected_at", "stats_window_seconds", "calls_per_minute", "volume_impact"}
    assert batch[queryid].model_dump(exclude=moving) == single.model_dump(exclude=moving)


def test_a_batch_leaves_out_unknown_hashes_and_counts_duplicates_once(
    extractor: PgStatStatementsExtractor, pg_workload: Workload
) -> None:
    known = pg_workload.queryids["count_all"]
    unknown = unknown_queryid(pg_workload, 1)
    batch = extractor.extract_batch_query_features([known, unknown, known], "current")
    assert list(batch) == [known]


def test_an_empty_batch_does_not_query(
    extractor: PgStatStatementsExtractor, postgres_url: str
) -> None:
    before = extractor_statement_calls(postgres_url)
    assert extractor.extract_batch_query_features([], "current") == {}
    assert extractor_statement_calls(postgres_url) == before


# --- unknown, negative and bad query hashes ------------------------------------------------


def test_an_unknown_hash_raises_query_not_found_naming_it(
    extractor: PgStatStatementsExtractor, pg_workload: Workload
) -> None:
    unknown = unknown_queryid(pg_workload, 1)
    with pytest.raises(QueryNotFoundError, match=str(unknown)) as caught:
        extractor.extract_query_features(unknown, "current")
    assert caught.value.query_hash == unknown
    assert isinstance(caught.value, PgCacheError)
    assert isinstance(caught.value, LookupError)


def test_a_negative_queryid_that_exists_is_extracted(
    extractor: PgStatStatementsExtractor, pg_workload: Workload
) -> None:
    negative = pg_workload.negative_ids[0]
    features = extractor.extract_query_features(negative, "current")
    assert features.query_hash == negative < 0
    assert features.calls >= pg_workload.runs_per_shape


def test_a_negative_queryid_that_does_not_exist_raises_query_not_found(
    extractor: PgStatStatementsExtractor, pg_workload: Workload
) -> None:
    unknown = unknown_queryid(pg_workload, -1)
    with pytest.raises(QueryNotFoundError, match=str(unknown)):
        extractor.extract_query_features(unknown, "current")


def test_the_int64_bounds_are_valid_query_hashes(
    extractor: PgStatStatementsExtractor,
) -> None:
    for bound in (INT64_MIN, INT64_MAX):
        with pytest.raises(QueryNotFoundError):
            extractor.extract_query_features(bound, "current")


@pytest.mark.parametrize(
    ("query_hash", "error", "message"),
    [
        ("123", TypeError, "query_hash='123': expected an int"),
        (1.5, TypeError, "query_hash=1.5: expected an int"),
        (True, TypeError, "query_hash=True: expected an int"),
        (2**63, ValueError, f"query_hash={2**63}: outside the signed 64-bit range"),
        (-(2**63) - 1, ValueError, "outside the signed 64-bit range"),
    ],
)
def test_a_bad_query_hash_is_rejected_naming_it(
    extractor: PgStatStatementsExtractor, query_hash: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        extractor.extract_query_features(query_hash, "current")


def test_a_bad_hash_in_a_batch_is_rejected_naming_its_position(
    extractor: PgStatStatementsExtractor,
) -> None:
    with pytest.raises(TypeError, match=r"hashes\[1\]='x'"):
        extractor.extract_batch_query_features([1, "x"], "current")  # type: ignore[list-item]


def test_a_string_is_not_a_batch_of_hashes(extractor: PgStatStatementsExtractor) -> None:
    with pytest.raises(TypeError, match="hashes='12'"):
        extractor.extract_batch_query_features("12", "current")  # type: ignore[arg-type]


def test_a_non_string_scenario_is_rejected(
    extractor: PgStatStatementsExtractor, pg_workload: Workload
) -> None:
    with pytest.raises(TypeError, match="scenario=7: expected a str"):
        extractor.extract_query_features(pg_workload.queryids["count_all"], 7)  # type: ignore[arg-type]


# --- QueryFeatures itself ----------------------------------------------------------------------


def test_a_negative_query_hash_round_trips_through_json() -> None:
    features = make_features(query_hash=INT64_MIN)
    assert QueryFeatures.model_validate_json(features.model_dump_json()) == features


def test_query_features_reject_a_hash_outside_int64() -> None:
    with pytest.raises(ValidationError, match="query_hash"):
        make_features(query_hash=INT64_MAX + 1)


def test_query_features_require_a_time_zone() -> None:
    with pytest.raises(ValidationError, match="collected_at"):
        make_features(collected_at=datetime(2025, 1, 1))


def test_query_features_reject_a_hit_ratio_above_one() -> None:
    with pytest.raises(ValidationError, match="shared_buffer_hit_ratio"):
        make_features(shared_buffer_hit_ratio=1.5)


def test_query_features_are_immutable() -> None:
    features = make_features()
    with pytest.raises(ValidationError, match="frozen"):
        features.calls = 11  # type: ignore[misc]


# --- combining entries (pure logic) -------------------------------------------------------------


def _entry(queryid: int, samples: list[float], read_at: datetime) -> tuple[Any, ...]:
    """A pg_stat_statements row (in the extractor's column order) for these execution times."""
    calls = len(samples)
    mean = statistics.fmean(samples) if samples else 0.0
    return (
        queryid, calls, sum(samples), min(samples, default=0.0), max(samples, default=0.0),
        mean, statistics.pstdev(samples) if samples else 0.0, calls, 1, 1, 0, 0, 0, 0, 0, 0,
        0.0, 0.0, 100, read_at - timedelta(minutes=1), read_at,
    )  # fmt: skip


@given(
    st.lists(st.lists(st.floats(0.001, 1000.0), min_size=0, max_size=20), min_size=1, max_size=4)
)
def test_combined_entries_have_the_statistics_of_all_their_executions(
    groups: list[list[float]],
) -> None:
    read_at = datetime(2025, 1, 1, tzinfo=UTC)
    rows = [_entry(7, group, read_at) for group in groups]
    features = _combine(7, "current", rows, read_at)
    everything = [sample for group in groups for sample in group]
    assert features.calls == len(everything)
    if everything:
        assert features.mean_exec_time_ms == pytest.approx(statistics.fmean(everything))
        assert features.stddev_exec_time_ms == pytest.approx(
            statistics.pstdev(everything), rel=1e-6, abs=1e-6
        )
        assert features.min_exec_time_ms == min(everything)
        assert features.max_exec_time_ms == max(everything)
    else:
        assert features.mean_exec_time_ms == features.execution_complexity == 0.0
    assert features.wal_bytes == 100 * len(groups)
    assert features.stats_window_seconds == 60.0


# --- server versions and servers without the extension ---------------------------------------


def test_postgres_17_uses_the_renamed_io_timing_columns() -> None:
    sql = _statement_sql(170004)
    assert "shared_blk_read_time, shared_blk_write_time" in sql
    assert " blk_read_time" not in sql
    assert "stats_since AS window_start" in sql


@pytest.mark.parametrize("version", [140000, 150020, 160008])
def test_postgres_14_to_16_use_the_stats_reset_window(version: int) -> None:
    sql = _statement_sql(version)
    assert "blk_read_time, blk_write_time" in sql
    assert "pg_stat_statements_info" in sql
    assert "total_exec_time" in sql


def test_postgres_13_uses_the_server_start_window() -> None:
    sql = _statement_sql(130015)
    assert "pg_postmaster_start_time()" in sql
    assert "total_exec_time" in sql


def test_postgres_12_is_refused_with_the_version() -> None:
    with pytest.raises(PgStatStatementsUnavailableError, match=r"120022.*13 or newer"):
        _statement_sql(120022)


def test_a_database_without_the_extension_says_how_to_enable_it(postgres_url: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS pgcache_no_extension")
        conn.execute("CREATE DATABASE pgcache_no_extension")
    other = psycopg.conninfo.make_conninfo(postgres_url, dbname="pgcache_no_extension")
    pool = make_pool(PoolSettings(conninfo=other, min_size=0, max_size=1))
    with pool, pytest.raises(PgStatStatementsUnavailableError) as caught:
        PgStatStatementsExtractor(pool).extract_query_features(1, "current")
    message = str(caught.value)
    assert "shared_preload_libraries" in message
    assert "CREATE EXTENSION pg_stat_statements" in message


@pytest.fixture(scope="module")
def server_without_preload(postgres_server: PgServer | None) -> Iterator[PgServer]:
    if postgres_server is None:
        pytest.skip("DATABASE_URL is external: no private server binaries to start another")
    server = PgServer(postgres_server.bindir, preload=False)
    try:
        server.start()
        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION pg_stat_statements")
        yield server
    finally:
        server.stop()


def test_an_extension_that_is_not_preloaded_says_how_to_enable_it(
    server_without_preload: PgServer,
) -> None:
    pool_settings = PoolSettings(conninfo=server_without_preload.url, min_size=0, max_size=1)
    pool = make_pool(pool_settings)
    with pool, pytest.raises(PgStatStatementsUnavailableError, match="shared_preload_libraries"):
        PgStatStatementsExtractor(pool).extract_query_features(1, "current")


# --- the async extractor ------------------------------------------------------------------------


async def test_the_async_extractor_reports_what_the_sync_one_does(
    async_extractor: AsyncPgStatStatementsExtractor,
    extractor: PgStatStatementsExtractor,
    pg_workload: Workload,
) -> None:
    queryid = pg_workload.queryids["avg_by_region"]
    features = await async_extractor.extract_query_features(queryid, "current")
    expected = extractor.extract_query_features(queryid, "current")
    assert features.calls == expected.calls
    assert features.total_exec_time_ms == pytest.approx(expected.total_exec_time_ms)
    assert features.shared_blks_hit == expected.shared_blks_hit


async def test_an_async_batch_takes_one_round_trip(
    async_extractor: AsyncPgStatStatementsExtractor, pg_workload: Workload, postgres_url: str
) -> None:
    hashes = list(pg_workload.queryids.values())
    before = extractor_statement_calls(postgres_url)
    batch = await async_extractor.extract_batch_query_features(hashes, "current")
    assert extractor_statement_calls(postgres_url) - before == 1
    assert set(batch) == set(hashes)


async def test_the_async_extractor_raises_query_not_found(
    async_extractor: AsyncPgStatStatementsExtractor, pg_workload: Workload
) -> None:
    unknown = unknown_queryid(pg_workload, -1)
    with pytest.raises(QueryNotFoundError, match=str(unknown)):
        await async_extractor.extract_query_features(unknown, "current")


async def test_the_async_extractor_extracts_a_negative_queryid(
    async_extractor: AsyncPgStatStatementsExtractor, pg_workload: Workload
) -> None:
    negative = pg_workload.negative_ids[-1]
    features = await async_extractor.extract_query_features(negative, "current")
    assert features.query_hash == negative
